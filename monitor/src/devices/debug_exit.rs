//! QEMU's `isa-debug-exit` device, as configured by
//! `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
//!
//! Invariants: any write of 1, 2 or 4 bytes to any of its ports ends the
//! run with process status `(value << 1) | 1`, computed on the 32-bit value
//! written (exactly the `int` QEMU passes to `exit()`; the host then reports
//! the low 8 bits). A write can therefore never request status 0. Reads
//! return 0, as QEMU's do.

use super::{IoOutcome, PortDevice};

/// The debug-exit device; it has no state.
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugExit;

impl DebugExit {
    /// The process status for a written `value`.
    pub fn exit_status(value: u32) -> i32 {
        ((value << 1) | 1) as i32
    }
}

impl PortDevice for DebugExit {
    fn name(&self) -> &'static str {
        "isa-debug-exit"
    }

    fn read(&mut self, _offset: u16, _size: u8) -> u32 {
        0
    }

    fn write(&mut self, _offset: u16, _size: u8, value: u32) -> IoOutcome {
        IoOutcome::Exit(Self::exit_status(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_value_doubled_plus_one() {
        assert_eq!(DebugExit::exit_status(0), 1);
        assert_eq!(DebugExit::exit_status(1), 3);
        assert_eq!(DebugExit::exit_status(0x10), 0x21);
        assert_eq!(DebugExit::exit_status(0x7f), 0xff);
    }

    #[test]
    fn wide_values_keep_their_high_bits_as_in_qemu() {
        assert_eq!(DebugExit::exit_status(0x100), 0x201);
        assert_eq!(
            DebugExit::exit_status(0x8000_0000),
            1,
            "bit 31 is shifted out"
        );
        assert_eq!(DebugExit::exit_status(0x7fff_ffff), -1);
    }

    #[test]
    fn any_write_requests_an_exit() {
        let mut dev = DebugExit;
        assert_eq!(dev.write(0, 1, 2), IoOutcome::Exit(5));
        assert_eq!(dev.write(3, 2, 2), IoOutcome::Exit(5));
        assert_eq!(dev.write(0, 4, 0x1234), IoOutcome::Exit(0x2469));
    }

    #[test]
    fn reads_return_zero() {
        assert_eq!(DebugExit.read(0, 4), 0);
    }
}
