//! The numbers of the VMware backdoor ABI: ports, magic, command and
//! subcommand numbers, GuestRPC message types and status bits.
//!
//! Invariant: every value here is the one published in open-vm-tools'
//! `lib/include/backdoor_def.h`, `lib/include/guest_msg_def.h` and
//! `lib/include/rpcout.h` / `rpcin.h`; nothing is invented. Values this crate
//! chooses itself (limits, replies with no public reference) live elsewhere.

/// The value a backdoor caller puts in EAX ("VMXh").
pub const BDOOR_MAGIC: u32 = 0x564D_5868;
/// The low-bandwidth port (`in`/`out` with the command in ECX).
pub const BDOOR_PORT: u16 = 0x5658;
/// The high-bandwidth port (`rep insb`/`rep outsb`).
pub const BDOORHB_PORT: u16 = 0x5659;

/// What the backdoor puts in EAX for an unknown command or a missing magic.
pub const ALL_ONES: u32 = 0xFFFF_FFFF;

/// Low-bandwidth command numbers (ECX bits 0..16).
pub mod cmd {
    /// Processor speed in MHz.
    pub const GETMHZ: u16 = 1;
    /// Backdoor version, magic and product type.
    pub const GETVERSION: u16 = 10;
    /// Virtual hardware version.
    pub const GETHWVERSION: u16 = 17;
    /// The VM's BIOS UUID.
    pub const GETUUID: u16 = 19;
    /// Guest memory size in MiB.
    pub const GETMEMSIZE: u16 = 20;
    /// Host time, 32-bit seconds (deprecated by GETTIMEFULL).
    pub const GETTIME: u16 = 23;
    /// Stop the guest's timer catch-up.
    pub const STOPCATCHUP: u16 = 24;
    /// GuestRPC message layer.
    pub const MESSAGE: u16 = 30;
    /// TSC and APIC bus frequency in Hz.
    pub const GETHZ: u16 = 45;
    /// Host time with 64-bit seconds.
    pub const GETTIMEFULL: u16 = 46;
    /// Host time with 64-bit seconds and the interrupt lag apart.
    pub const GETTIMEFULL_WITH_LAG: u16 = 55;
    /// Nested virtualization control.
    pub const NESTING_CONTROL: u16 = 63;
    /// Per-vCPU feature bits.
    pub const GET_VCPU_INFO: u16 = 68;
    /// The host product's build number.
    pub const GETBUILDNUM: u16 = 100;

    /// Commands `backdoor_def.h` marks "CPL0 only"; from user mode they are
    /// ignored.
    pub const CPL0_ONLY: &[u16] = &[
        2, 18, 28, 37, 48, 49, 50, 54, 62, 64, 65, 69, 70, 71, 73, 74, 75, 76, 77, 78, 79, 80, 85,
        91, 92, 93,
    ];
}

/// NESTING_CONTROL subcommands (ECX bits 16..32).
pub mod nesting {
    /// Stop serving backdoor accesses from the nested guest.
    pub const RESTRICT_BACKDOOR: u16 = 0;
    /// Serve them again.
    pub const OPEN_BACKDOOR: u16 = 1;
    /// Ask for the nesting-control version (EAX); must be at least 2.
    pub const QUERY: u16 = 2;
    /// The highest subcommand number.
    pub const MAX: u16 = 2;
}

/// GET_VCPU_INFO bit numbers.
pub mod vcpu_info {
    /// The virtual TSCs of all vCPUs are synchronized.
    pub const SYNC_VTSCS: u32 = 1;
    /// Legacy x2APIC use is fine.
    pub const LEGACY_X2APIC_OK: u32 = 3;
    /// MMIO honours the PAT.
    pub const MMIO_HONORS_PAT: u32 = 4;
    /// Set when the command is not supported.
    pub const RESERVED: u32 = 31;
}

/// High-bandwidth commands (EBX bits 0..16 on port 0x5659).
pub mod hb_cmd {
    /// Move a GuestRPC message payload.
    pub const MESSAGE: u16 = 0;
    /// Guest assertion report (not served here).
    pub const VASSERT: u16 = 1;
}

/// GuestRPC message types (ECX bits 16..32 of a MESSAGE call).
pub mod msg_type {
    /// Open a channel.
    pub const OPEN: u16 = 0;
    /// Announce the size of the message the guest sends.
    pub const SENDSIZE: u16 = 1;
    /// Send four bytes of the message.
    pub const SENDPAYLOAD: u16 = 2;
    /// Ask for the size of the host's reply.
    pub const RECVSIZE: u16 = 3;
    /// Fetch four bytes of the reply.
    pub const RECVPAYLOAD: u16 = 4;
    /// Acknowledge the reply.
    pub const RECVSTATUS: u16 = 5;
    /// Close the channel.
    pub const CLOSE: u16 = 6;
}

/// GuestRPC status bits (ECX bits 16..32 of a MESSAGE reply; EBX bits 16..32
/// on the high-bandwidth port).
pub mod status {
    /// The request succeeded.
    pub const SUCCESS: u16 = 0x0001;
    /// The host has a message for the guest.
    pub const DORECV: u16 = 0x0002;
    /// The channel has been closed.
    pub const CLOSED: u16 = 0x0004;
    /// The host dropped the message before the guest fetched it.
    pub const UNSENT: u16 = 0x0008;
    /// A checkpoint occurred; the guest retries.
    pub const CPT: u16 = 0x0010;
    /// A device is powering off.
    pub const POWEROFF: u16 = 0x0020;
    /// The host timed the channel out.
    pub const TIMEOUT: u16 = 0x0040;
    /// The high-bandwidth port can move this payload.
    pub const HB: u16 = 0x0080;
    /// The status bits a guest may report to the host.
    pub const GUEST_MASK: u16 = SUCCESS;
}

/// GuestRPC protocol numbers (EBX of OPEN, without the flags).
pub mod proto {
    /// Guest-to-host remote procedure calls ("RPCI").
    pub const RPCI: u32 = 0x4943_5052;
    /// Host-to-guest commands polled by the guest ("TCLO").
    pub const TCLO: u32 = 0x4F4C_4354;
    /// OPEN flag: the host hands out cookies that later calls must carry.
    pub const FLAG_COOKIE: u32 = 0x8000_0000;
}

/// The `GUESTMSG_MAX_CHANNEL` of `guest_msg_def.h`.
pub const MAX_CHANNELS: usize = 8;
/// The `GUESTMSG_MAX_IN_SIZE` of `guest_msg_def.h`: the largest guest message.
pub const MAX_MESSAGE_SIZE: u32 = 64 * 1024;

/// Product types GETVERSION reports in ECX (open-vm-tools' `vm_version.h`
/// `VMX_TYPE_*`).
pub mod product {
    /// Not set.
    pub const UNSET: u32 = 0;
    /// VMware Express.
    pub const EXPRESS: u32 = 1;
    /// ESX Server.
    pub const SCALABLE_SERVER: u32 = 2;
    /// GSX / Server.
    pub const WGS: u32 = 3;
    /// Workstation.
    pub const WORKSTATION: u32 = 4;
    /// Workstation Enterprise (ACE).
    pub const WORKSTATION_ENTERPRISE: u32 = 5;
}

/// The backdoor version GETVERSION reports in EAX.
pub const BDOOR_VERSION: u32 = 6;
