//! QEMU's `isa-debug-exit` device, as configured by
//! `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
//!
//! Invariants: any write of 1, 2 or 4 bytes to any of its ports ends the
//! run and hands the value written (zero-extended) to the machine, which
//! turns it into the process status by the chosen convention (see
//! `crate::exit_status`). Reads return 0, as QEMU's do.

use super::{IoOutcome, PortDevice};

/// The debug-exit device; it has no state.
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugExit;

impl PortDevice for DebugExit {
    fn name(&self) -> &'static str {
        "isa-debug-exit"
    }

    fn read(&mut self, _offset: u16, _size: u8) -> u32 {
        0
    }

    fn write(&mut self, _offset: u16, _size: u8, value: u32) -> IoOutcome {
        IoOutcome::GuestExit(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_write_reports_the_value_written() {
        let mut dev = DebugExit;
        assert_eq!(dev.write(0, 1, 2), IoOutcome::GuestExit(2));
        assert_eq!(dev.write(3, 2, 2), IoOutcome::GuestExit(2));
        assert_eq!(dev.write(0, 4, 0x1234), IoOutcome::GuestExit(0x1234));
        assert_eq!(dev.write(0, 1, 0), IoOutcome::GuestExit(0));
    }

    #[test]
    fn reads_return_zero() {
        assert_eq!(DebugExit.read(0, 4), 0);
    }
}
