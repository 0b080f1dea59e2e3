//! Port-I/O devices and the bus that routes `in`/`out` to them; the
//! memory-mapped devices and theirs ([`mmio::MmioBus`]).
//!
//! The run loop calls [`IoBus::read`] and [`IoBus::write`] for every guest
//! port access. The bus owns a set of [`PortDevice`]s, each claiming a fixed,
//! non-overlapping range of ports; everything else is "unclaimed": reads
//! return all ones and writes are dropped, and both are counted per port.
//!
//! Devices at the moment:
//! - COM1, a 16550A UART ([`Uart`], built on `vm_superio::Serial`) at
//!   `0x3f8..=0x3ff`, writing to the configured serial backend;
//! - QEMU's `isa-debug-exit` ([`DebugExit`]) at `0xf4..=0xf7`;
//! - the PC platform ([`IoBus::add_pc_platform`]): the MC146818 RTC and
//!   CMOS ([`Rtc`]) at `0x70..=0x71`, the i8042 keyboard controller
//!   ([`I8042`]) at `0x60` and `0x64`, PCI configuration mechanism #1 with
//!   a host bridge ([`PciHost`]) at `0xcf8..=0xcff`, QEMU's fw_cfg
//!   ([`FwCfg`]) at `0x510..=0x511`, and the ACPI fixed hardware
//!   ([`acpi_pm`]: PM1a event and control blocks at `0x600..=0x605`, the
//!   PM timer at `0x608..=0x60b`) that the ACPI tables ([`acpi`]) describe.
//! - the 8259A PIC pair ([`pic::Pic`]) at `0x20..=0x21`, `0xa0..=0xa1` and
//!   its ELCR at `0x4d0..=0x4d1`, and the 8254 PIT ([`pit::Pit`]) at
//!   `0x40..=0x43` and port B `0x61`; COM1's IRQ 4 and the PIT's IRQ 0
//!   reach the CPU through the PIC.
//! - on the MMIO bus, when the machine has APICs (`nestmon.apic`): the
//!   local APIC ([`lapic`], xAPIC registers where `IA32_APIC_BASE` puts
//!   them, 0xFEE00000 at reset) and the I/O APIC ([`ioapic`], 0xFEC00000),
//!   which the ISA lines reach as well as the PIC.
//!
//! Invariants:
//! - Devices are pure state machines over their registers and an output
//!   sink: nothing here touches guest memory or the vCPU, so each device is
//!   testable on its own.
//! - Port ranges never overlap and never wrap past port `0xffff`
//!   ([`IoBus::register`] refuses them).
//! - Access sizes are 1, 2 or 4 bytes; values passed to a device are masked
//!   to the access size, and reads are masked the same way on return.
//! - Devices never know the vCPU: a device that must stop the guest says so
//!   through its [`IoOutcome`] (`Exit`, `ConsoleClosed`, `Reset`, `PowerOff`), and the machine
//!   decides what that means.

pub mod acpi;
pub mod acpi_pm;
mod bus;
mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod mmio;
pub mod pci;
pub mod pic;
pub mod pit;
mod platform;
pub mod rtc;
mod sink;
mod uart;

#[cfg(test)]
mod test_support;

pub use bus::{
    IoBus, COM1_BASE, DEBUG_EXIT_BASE, I8042_COMMAND, I8042_DATA, PCI_CONFIG_BASE, RTC_BASE,
};
pub use debug_exit::DebugExit;
pub use fw_cfg::FwCfg;
pub use i8042::{I8042Port, I8042};
pub use pci::PciHost;
pub use platform::{PcPlatform, GUEST_CPUS};
pub use rtc::{Clock, CmosBattery, HostClock, NmiMask, Rtc};
pub use sink::{open_serial_sink, SharedSink};
pub use uart::{IrqLine, Uart, UartInput};

use crate::config::SerialBackend;
use std::path::PathBuf;

/// What the run loop should do after a port write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOutcome {
    /// Keep running the guest.
    Continue,
    /// The guest reported how it ended (isa-debug-exit): the run stops and
    /// the value becomes the process status (see `crate::exit_status`).
    GuestExit(u32),
    /// The console (COM1's output) can no longer be written: the reader of
    /// the pipe went away, the device is full, the socket peer closed. The
    /// run ends as a closed console would end it, with
    /// [`CONSOLE_CLOSED_STATUS`]; [`IoBus::console_error`] says why.
    ConsoleClosed,
    /// The guest pulsed the CPU's reset line (the i8042's command 0xFE, or
    /// its output port written with bit 0 clear): the machine ends the run
    /// (see `crate::exit_status::GUEST_RESET`).
    Reset,
    /// The guest powered the machine off (ACPI S5: SLP_EN with the `\_S5`
    /// sleep type in PM1a_CNT): the run ends with exit status 0 (see
    /// `crate::exit_status::GUEST_POWER_OFF`).
    PowerOff,
}

/// The exit status of a run whose console was closed: 128 + SIGPIPE, what
/// a shell shows for a program that a closed pipe killed.
pub const CONSOLE_CLOSED_STATUS: i32 = 128 + libc::SIGPIPE;

/// Why the console (COM1's output) stopped taking bytes.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The reader of the monitor's standard output went away.
    #[error("the console (standard output) was closed")]
    StdoutClosed,
    /// The monitor's standard output refused a byte (e.g. a full device).
    #[error("cannot write to the console (standard output): {0}")]
    Stdout(std::io::Error),
    /// The serial output file refused a byte.
    #[error("cannot write to the serial output file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The host's error.
        source: std::io::Error,
    },
    /// The serial Unix socket refused a byte.
    #[error("cannot write to the serial Unix socket {}: {source}", path.display())]
    UnixSocket {
        /// The socket.
        path: PathBuf,
        /// The host's error.
        source: std::io::Error,
    },
    /// A writer handed to [`IoBus::with_serial_writer`] refused a byte.
    #[error("cannot write to the serial output: {0}")]
    Writer(std::io::Error),
}

impl ConsoleError {
    /// The error `backend` (`None`: a writer given by the embedder) gave.
    pub fn new(backend: Option<&SerialBackend>, error: std::io::Error) -> ConsoleError {
        match backend {
            Some(SerialBackend::Stdio) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                ConsoleError::StdoutClosed
            }
            Some(SerialBackend::Stdio) => ConsoleError::Stdout(error),
            Some(SerialBackend::File(path)) => ConsoleError::File {
                path: path.clone(),
                source: error,
            },
            Some(SerialBackend::UnixSocket(path)) => ConsoleError::UnixSocket {
                path: path.clone(),
                source: error,
            },
            Some(SerialBackend::None) | None => ConsoleError::Writer(error),
        }
    }
}

/// A device on the port-I/O bus.
///
/// `offset` is the accessed port minus the device's base port; `size` is 1,
/// 2 or 4 and never larger than [`PortDevice::max_access_size`] (the bus
/// splits wider accesses into single bytes at consecutive ports).
pub trait PortDevice: Send {
    /// A short name for diagnostics (`"com1"`).
    fn name(&self) -> &'static str;
    /// The widest access the device handles in one piece.
    fn max_access_size(&self) -> u8 {
        4
    }
    /// A guest `in` of `size` bytes at `offset`.
    fn read(&mut self, offset: u16, size: u8) -> u32;
    /// A guest `out` of `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u16, size: u8, value: u32) -> IoOutcome;
    /// The output error behind the last [`IoOutcome::ConsoleClosed`] this
    /// device returned, taken (devices without output have none).
    fn take_output_error(&mut self) -> Option<std::io::Error> {
        None
    }
}

/// Why the devices could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The serial output file could not be opened.
    #[error("cannot open the serial output file {}: {source}", path.display())]
    SerialFile {
        /// The file asked for.
        path: PathBuf,
        /// The host's error.
        source: std::io::Error,
    },
    /// The serial Unix socket could not be connected to.
    #[error(
        "cannot connect to the serial Unix socket {}: {source} (start the listener first)",
        path.display()
    )]
    SerialSocket {
        /// The socket asked for.
        path: PathBuf,
        /// The host's error.
        source: std::io::Error,
    },
    /// A device's port range is empty or runs past port 0xffff.
    #[error("device {name} cannot claim {len} ports from {base:#06x}: the range is empty or runs past port 0xffff")]
    BadPortRange {
        /// The device's name.
        name: &'static str,
        /// First port.
        base: u16,
        /// Number of ports.
        len: u32,
    },
    /// A device's port range overlaps one already on the bus.
    #[error("device {name} at ports {base:#06x}..{end:#06x} overlaps device {other}, which is already on the bus")]
    PortsInUse {
        /// The device being added.
        name: &'static str,
        /// Its first port.
        base: u16,
        /// One past its last port.
        end: u32,
        /// The device already there.
        other: &'static str,
    },
}

/// The mask for an access of `size` bytes (sizes above 4 count as 4).
pub(crate) fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn closed_console_status_is_what_a_shell_shows_for_sigpipe() {
        assert_eq!(CONSOLE_CLOSED_STATUS, 141);
    }

    #[test]
    fn broken_pipe_on_stdout_reads_as_a_closed_console() {
        let error = ConsoleError::new(Some(&SerialBackend::Stdio), ErrorKind::BrokenPipe.into());
        assert_eq!(
            error.to_string(),
            "the console (standard output) was closed"
        );
    }

    #[test]
    fn other_stdout_errors_are_named_with_the_hosts_reason() {
        let error = ConsoleError::new(
            Some(&SerialBackend::Stdio),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(
            error
                .to_string()
                .starts_with("cannot write to the console (standard output): No space left"),
            "{error}"
        );
    }

    #[test]
    fn file_and_socket_errors_name_their_path() {
        let file = ConsoleError::new(
            Some(&SerialBackend::File("com1.log".into())),
            ErrorKind::BrokenPipe.into(),
        );
        assert!(
            file.to_string()
                .starts_with("cannot write to the serial output file com1.log: "),
            "{file}"
        );
        let socket = ConsoleError::new(
            Some(&SerialBackend::UnixSocket("com1.sock".into())),
            ErrorKind::BrokenPipe.into(),
        );
        assert!(
            socket
                .to_string()
                .starts_with("cannot write to the serial Unix socket com1.sock: "),
            "{socket}"
        );
    }
}
