//! Port-I/O devices and the bus that routes `in`/`out` to them.
//!
//! The run loop calls [`IoBus::read`] and [`IoBus::write`] for every guest
//! port access. The bus owns a set of [`PortDevice`]s, each claiming a fixed,
//! non-overlapping range of ports; everything else is "unclaimed": reads
//! return all ones and writes are dropped, and both are counted per port.
//!
//! Devices at the moment:
//! - COM1, a 16550A UART ([`Uart`], built on `vm_superio::Serial`) at
//!   `0x3f8..=0x3ff`, writing to the configured serial backend;
//! - QEMU's `isa-debug-exit` ([`DebugExit`]) at `0xf4..=0xf7`.
//!
//! Invariants:
//! - Devices are pure state machines over their registers and an output
//!   sink: nothing here touches guest memory or the vCPU, so each device is
//!   testable on its own.
//! - Port ranges never overlap and never wrap past port `0xffff`
//!   ([`IoBus::register`] refuses them).
//! - Access sizes are 1, 2 or 4 bytes; values passed to a device are masked
//!   to the access size, and reads are masked the same way on return.

mod bus;
mod debug_exit;
mod sink;
mod uart;

#[cfg(test)]
mod test_support;

pub use bus::{IoBus, COM1_BASE, DEBUG_EXIT_BASE};
pub use debug_exit::DebugExit;
pub use sink::open_serial_sink;
pub use uart::{IrqLine, Uart};

use std::path::PathBuf;

/// What the run loop should do after a port write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOutcome {
    /// Keep running the guest.
    Continue,
    /// Stop the guest and exit the monitor with this process status.
    Exit(i32),
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
