//! The host side of the backdoor: what nestmon answers its guest.
//!
//! Invariants:
//! * A low-bandwidth access without the magic, or with an unknown command,
//!   leaves EAX = 0xFFFF_FFFF and every other register unchanged.
//! * Commands `backdoor_def.h` marks "CPL0 only", and NESTING_CONTROL
//!   RESTRICT/OPEN, are ignored (answered like unknown commands) from CPL > 0.
//! * While NESTING_CONTROL has the backdoor restricted, accesses from
//!   CPL > 0 are not backdoor accesses at all (`false` / `None`): a guest
//!   hypervisor runs its own guests deprivileged and wants their port I/O.
//! * Nothing a guest does can panic or grow memory past [`Limits`].

use crate::abi::{self, cmd, hb_cmd, nesting, vcpu_info};
use crate::counters::Counters;
use crate::events::Event;
use crate::facts::{HostFacts, SystemClock, WallClock};
use crate::guestinfo::GuestInfo;
use crate::limits::Limits;
use crate::memory::GuestMemory;
use crate::regs::{low_half, Regs};
use crate::rpc::tclo::{TcloCommand, TcloQueueError};
use crate::rpc::{Rpc, Services};

/// The NESTING_CONTROL version this host reports to QUERY.
pub const NESTING_CONTROL_VERSION: u32 = 2;

/// What NESTING_CONTROL RESTRICT/OPEN return in EAX on success (no public
/// source specifies it; callers only compare against all ones).
pub const NESTING_CONTROL_DONE: u32 = 1;

/// The VMware backdoor as seen by one guest.
pub struct Backdoor {
    facts: HostFacts,
    clock: Box<dyn WallClock + Send>,
    rpc: Rpc,
    services: Services,
    restricted: bool,
}

impl std::fmt::Debug for Backdoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backdoor")
            .field("facts", &self.facts)
            .field("open_channels", &self.rpc.open_channels())
            .field("restricted", &self.restricted)
            .finish_non_exhaustive()
    }
}

impl Backdoor {
    /// A backdoor reporting `facts`, with the guestinfo store preloaded
    /// (keys with or without the `guestinfo.` prefix), the default
    /// [`Limits`] and the host's real clock.
    pub fn new<I, K, V>(facts: HostFacts, guestinfo: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        Backdoor::with_limits(facts, guestinfo, Limits::default())
    }

    /// Like [`Backdoor::new`] with explicit limits.
    pub fn with_limits<I, K, V>(facts: HostFacts, guestinfo: I, limits: Limits) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        Backdoor {
            rpc: Rpc::new(&limits, facts.high_bandwidth, facts.cookie_seed),
            services: Services::new(guestinfo, &limits),
            facts,
            clock: Box::new(SystemClock),
            restricted: false,
        }
    }

    /// Replaces the wall clock GETTIME and friends read.
    pub fn with_clock(mut self, clock: impl WallClock + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// `in eax, dx` with DX = 0x5658. Returns false when this is not a
    /// backdoor access (another port, or restricted from CPL > 0); the
    /// caller then applies ordinary port semantics.
    pub fn port_in(&mut self, regs: &mut Regs, cpl: u8) -> bool {
        self.low_bandwidth(regs, cpl)
    }

    /// `out dx, eax` with DX = 0x5658: served exactly like [`Self::port_in`].
    pub fn port_out(&mut self, regs: &mut Regs, cpl: u8) -> bool {
        self.low_bandwidth(regs, cpl)
    }

    /// `rep outsb` with DX = 0x5659 (guest to host). Returns the bytes moved
    /// (0 on a failed transfer, with the status in EBX's high half), or
    /// `None` when this is not a backdoor access.
    pub fn hb_out(&mut self, regs: &mut Regs, cpl: u8, mem: &mut dyn GuestMemory) -> Option<u32> {
        if !self.is_high_bandwidth_access(regs, cpl) {
            return None;
        }
        self.services.counters.high_bandwidth_transfers += 1;
        if low_half(regs.ebx) != hb_cmd::MESSAGE {
            return Some(fail_high_bandwidth(regs));
        }
        Some(self.rpc.hb_send(regs, mem, &mut self.services))
    }

    /// `rep insb` with DX = 0x5659 (host to guest); see [`Self::hb_out`].
    pub fn hb_in(&mut self, regs: &mut Regs, cpl: u8, mem: &mut dyn GuestMemory) -> Option<u32> {
        if !self.is_high_bandwidth_access(regs, cpl) {
            return None;
        }
        self.services.counters.high_bandwidth_transfers += 1;
        if low_half(regs.ebx) != hb_cmd::MESSAGE {
            return Some(fail_high_bandwidth(regs));
        }
        Some(self.rpc.hb_receive(regs, mem))
    }

    /// Queues a TCLO command for the guest's Tools to poll.
    pub fn queue_tclo(&mut self, command: &str) -> Result<(), TcloQueueError> {
        self.services.tclo.push(command)
    }

    /// Queues one of the well-known TCLO commands.
    pub fn queue_tclo_command(&mut self, command: TcloCommand) -> Result<(), TcloQueueError> {
        self.queue_tclo(command.as_str())
    }

    /// Whether the Tools service's TCLO loop runs: an open TCLO channel
    /// answered `reset` with `OK ATR toolbox`
    /// ([`crate::TOOLS_SERVICE_APP`], vmtoolsd's `vmsvc`), so commands
    /// such as `OS_Halt` queued with [`Backdoor::queue_tclo_for_service`]
    /// reach it at its next poll.
    pub fn tools_service_polling(&self) -> bool {
        self.rpc
            .tclo_app_polling(crate::rpc::tclo::TOOLS_SERVICE_APP)
    }

    /// Queues `command` for the Tools service's TCLO loop only (a user
    /// session's loop, `toolbox-dnd`, never takes it), as VMware sends the
    /// power operations.
    pub fn queue_tclo_for_service(&mut self, command: TcloCommand) -> Result<(), TcloQueueError> {
        self.services
            .tclo
            .push_for(crate::rpc::tclo::TOOLS_SERVICE_APP, command.as_str())
    }

    /// Makes every TCLO channel the guest opens start with `commands`,
    /// ahead of anything queued, as VMware's VMX starts each with `reset`
    /// (Tools answer `OK ATR <app>` and announce themselves over RPCI) and
    /// then `Capabilities_Register` (Tools send their `tools.capability.*`
    /// and `tools.set.version`). Empty (the default): nothing is sent
    /// unless queued.
    pub fn greet_tclo_channels(&mut self, commands: &[TcloCommand]) {
        self.services.tclo_greeting = commands.to_vec();
    }

    /// How much the guest used the backdoor so far.
    pub fn counters(&self) -> Counters {
        self.services.counters
    }

    /// TCLO commands queued and not yet polled by the guest.
    pub fn pending_tclo(&self) -> usize {
        self.services.tclo.len()
    }

    /// Takes the events recorded since the last drain, oldest first.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.services.events.drain()
    }

    /// Events dropped because nobody drained them in time.
    pub fn dropped_events(&self) -> u64 {
        self.services.events.dropped()
    }

    /// The guestinfo namespace.
    pub fn guestinfo(&self) -> &GuestInfo {
        &self.services.guestinfo
    }

    /// The guestinfo namespace as a JSON object.
    pub fn guestinfo_json(&self) -> String {
        self.services.guestinfo.to_json()
    }

    /// True while NESTING_CONTROL has the backdoor restricted.
    pub fn restricted(&self) -> bool {
        self.restricted
    }

    /// GuestRPC channels currently open.
    pub fn open_channels(&self) -> usize {
        self.rpc.open_channels()
    }

    /// Bytes the backdoor holds for the guest: channel buffers, guestinfo,
    /// event text and queued TCLO commands.
    pub fn buffered_bytes(&self) -> usize {
        self.rpc.buffered_bytes() + self.services.buffered_bytes()
    }

    fn low_bandwidth(&mut self, regs: &mut Regs, cpl: u8) -> bool {
        if regs.port() != abi::BDOOR_PORT || (self.restricted && cpl > 0) {
            return false;
        }
        if regs.eax != abi::BDOOR_MAGIC {
            regs.eax = abi::ALL_ONES;
            return true;
        }
        self.services.counters.low_bandwidth_calls += 1;
        let command = regs.command();
        if cpl > 0 && abi::cmd::CPL0_ONLY.contains(&command) {
            regs.eax = abi::ALL_ONES;
            return true;
        }
        self.dispatch(command, regs, cpl);
        true
    }

    fn is_high_bandwidth_access(&self, regs: &Regs, cpl: u8) -> bool {
        regs.port() == abi::BDOORHB_PORT
            && regs.eax == abi::BDOOR_MAGIC
            && !(self.restricted && cpl > 0)
    }

    fn dispatch(&mut self, command: u16, regs: &mut Regs, cpl: u8) {
        match command {
            cmd::GETVERSION => self.get_version(regs),
            cmd::GETMHZ => regs.eax = saturate_u32(self.facts.tsc_hz / 1_000_000),
            cmd::GETHZ => self.get_hz(regs),
            cmd::GETUUID => self.get_uuid(regs),
            cmd::GETMEMSIZE => regs.eax = self.facts.mem_size_mib,
            cmd::GETTIME => self.get_time(regs),
            cmd::GETTIMEFULL => self.get_time_full(regs),
            cmd::GETTIMEFULL_WITH_LAG => {
                self.get_time_full(regs);
                regs.edi = self.facts.interrupt_lag_us;
            }
            cmd::STOPCATCHUP => self.services.events.push(Event::StopCatchup),
            cmd::GETHWVERSION => regs.eax = self.facts.hw_version,
            cmd::GET_VCPU_INFO => regs.eax = self.facts.vcpu_info & !(1 << vcpu_info::RESERVED),
            cmd::GETBUILDNUM => regs.eax = self.facts.build_number,
            cmd::MESSAGE => self.rpc.message(regs, &mut self.services),
            cmd::NESTING_CONTROL => self.nesting_control(regs, cpl),
            _ => regs.eax = abi::ALL_ONES,
        }
    }

    fn get_version(&self, regs: &mut Regs) {
        regs.eax = abi::BDOOR_VERSION;
        regs.ebx = abi::BDOOR_MAGIC;
        regs.ecx = self.facts.product_type;
    }

    fn get_hz(&self, regs: &mut Regs) {
        regs.eax = self.facts.tsc_hz as u32;
        regs.ebx = (self.facts.tsc_hz >> 32) as u32;
        regs.ecx = self.facts.bus_hz;
    }

    fn get_uuid(&self, regs: &mut Regs) {
        let word = |i: usize| {
            let bytes = &self.facts.uuid[i * 4..i * 4 + 4];
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
        };
        regs.eax = word(0);
        regs.ebx = word(1);
        regs.ecx = word(2);
        regs.edx = word(3);
    }

    /// GETTIME: EAX = seconds (all ones when they no longer fit), EBX =
    /// microseconds, ECX = max time lag, EDX = 0 (UTC offset).
    fn get_time(&mut self, regs: &mut Regs) {
        let now = self.clock.now();
        regs.eax = u32::try_from(now.secs)
            .ok()
            .filter(|secs| *secs != abi::ALL_ONES)
            .unwrap_or(abi::ALL_ONES);
        regs.ebx = now.micros;
        regs.ecx = self.facts.max_time_lag_us;
        regs.edx = 0;
    }

    /// GETTIMEFULL: EAX untouched (still the magic), ESI:EDX = seconds,
    /// EBX = microseconds, ECX = max time lag.
    fn get_time_full(&mut self, regs: &mut Regs) {
        let now = self.clock.now();
        regs.esi = (now.secs >> 32) as u32;
        regs.edx = now.secs as u32;
        regs.ebx = now.micros;
        regs.ecx = self.facts.max_time_lag_us;
    }

    fn nesting_control(&mut self, regs: &mut Regs, cpl: u8) {
        let subcommand = regs.subcommand();
        regs.eax = match subcommand {
            nesting::QUERY => NESTING_CONTROL_VERSION,
            nesting::RESTRICT_BACKDOOR | nesting::OPEN_BACKDOOR if cpl == 0 => {
                self.set_restricted(subcommand == nesting::RESTRICT_BACKDOOR);
                NESTING_CONTROL_DONE
            }
            _ => abi::ALL_ONES,
        };
    }

    fn set_restricted(&mut self, restricted: bool) {
        if self.restricted != restricted {
            self.restricted = restricted;
            self.services
                .events
                .push(Event::NestingRestricted(restricted));
        }
    }
}

fn fail_high_bandwidth(regs: &mut Regs) -> u32 {
    regs.ebx = crate::regs::with_high_half(regs.ebx, 0);
    0
}

fn saturate_u32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
