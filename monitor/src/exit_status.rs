//! nestmon's process exit statuses: one number per way a run can end, so
//! that a script can tell them apart without reading standard error.
//!
//! Invariants:
//! * With the default convention ([`ExitConvention::Nestmon`]) a guest
//!   that reports success exits with 0 and one that reports failure with 1
//!   (its code goes to standard error); a guest that powers the machine
//!   off (ACPI S5) exits with 0 under both conventions, as under QEMU; no
//!   other way of ending produces 0 or 1.
//! * 2, 3, 4 and 5 mean the same under both conventions; so do the
//!   statuses above 128 (a signal, or the closed console as SIGPIPE).
//! * With [`ExitConvention::Qemu`] the guest's report is QEMU's
//!   isa-debug-exit status `(value << 1) | 1`, unchanged, for harnesses
//!   written for `qemu-system-i386`; it can collide with 3 (a guest writing
//!   1), as it does under QEMU, and with 5 (a guest writing 2).

/// The guest reported success (isa-debug-exit value 0).
pub const GUEST_SUCCESS: i32 = 0;
/// The guest reported failure (a non-zero isa-debug-exit value).
pub const GUEST_FAILURE: i32 = 1;
/// The input cannot be used: arguments, configuration, kernel, refused
/// modes, memory the host cannot give. Nothing ran.
pub const BAD_INPUT: i32 = 2;
/// The guest stopped in a state no CPU continues from: a triple fault, an
/// instruction nestmon does not carry out, HLT with nothing to wake it.
pub const GUEST_STOPPED: i32 = 3;
/// The host failed: an mmap or file write that failed, output that
/// standard output refused.
pub const HOST_FAILURE: i32 = 4;
/// The guest reset the machine (pulsed the reset line through the i8042
/// keyboard controller) under `--no-reboot` (`nestmon.noReboot`): the run
/// ends here, cleanly, with `--stats` and `--guestinfo-out` written.
/// Without it nestmon restarts the guest, as a PC's reset does, and the
/// run goes on.
pub const GUEST_RESET: i32 = 5;
/// The guest powered the machine off (ACPI: the `\_S5` sleep type and
/// SLP_EN written to PM1a_CNT, what Linux's `poweroff` does), under either
/// convention.
pub const GUEST_POWER_OFF: i32 = 0;
/// A stop signal ends the run with this plus the signal number (130, 143,
/// 129); a closed console with 128 + SIGPIPE (141).
pub const SIGNAL_BASE: i32 = 128;

/// The table `--help` and README.md show.
pub const TABLE: &str = "\
Exit statuses:
  0    the guest reported success (wrote 0 to port 0xf4, isa-debug-exit),
       or powered the machine off (ACPI S5, as Linux's poweroff does)
  1    the guest reported failure (wrote another value; stderr names it)
  2    bad input (arguments, .vmx file, kernel, modes, memory size); nothing ran
  3    the guest stopped in a state it cannot continue from (triple fault,
       unsupported instruction, HLT with nothing to wake it); registers on stderr
  4    host failure (the host refused memory, a file or standard output)
  5    the guest reset the machine (keyboard controller reset line) and
       --no-reboot was given; without it the guest restarts
  128+N  stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP)
  141  the console (COM1's output) was closed
With --exit-status qemu a guest report exits as under qemu-system-i386 with
isa-debug-exit: (value << 1) | 1.";

/// How a guest's report through isa-debug-exit becomes the exit status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExitConvention {
    /// 0 for a report of 0, 1 for any other value.
    #[default]
    Nestmon,
    /// QEMU's isa-debug-exit: `(value << 1) | 1` (never 0).
    Qemu,
}

impl ExitConvention {
    /// The process exit status for a guest that wrote `value` to
    /// isa-debug-exit.
    pub fn status_for_report(self, value: u32) -> i32 {
        match self {
            ExitConvention::Nestmon if value == 0 => GUEST_SUCCESS,
            ExitConvention::Nestmon => GUEST_FAILURE,
            // The `int` QEMU passes to exit(); the host keeps its low 8 bits.
            ExitConvention::Qemu => (value << 1 | 1) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nestmon_convention_separates_success_from_failure() {
        let c = ExitConvention::Nestmon;
        assert_eq!(c.status_for_report(0), GUEST_SUCCESS);
        assert_eq!(c.status_for_report(1), GUEST_FAILURE);
        assert_eq!(c.status_for_report(0x7f), GUEST_FAILURE);
        assert_eq!(c.status_for_report(0x8000_0000), GUEST_FAILURE);
    }

    #[test]
    fn qemu_convention_doubles_plus_one_as_qemu_does() {
        let c = ExitConvention::Qemu;
        assert_eq!(c.status_for_report(0), 1);
        assert_eq!(c.status_for_report(1), 3);
        assert_eq!(c.status_for_report(0x10), 0x21);
        assert_eq!(c.status_for_report(0x100), 0x201);
        assert_eq!(c.status_for_report(0x8000_0000), 1, "bit 31 is shifted out");
        assert_eq!(c.status_for_report(0x7fff_ffff), -1);
    }

    #[test]
    fn monitor_statuses_are_distinct_from_guest_reports() {
        let own = [
            BAD_INPUT,
            GUEST_STOPPED,
            HOST_FAILURE,
            GUEST_RESET,
            SIGNAL_BASE,
        ];
        for status in own {
            assert_ne!(status, GUEST_SUCCESS);
            assert_ne!(status, GUEST_FAILURE);
        }
        assert_eq!(crate::devices::CONSOLE_CLOSED_STATUS, SIGNAL_BASE + 13);
    }
}
