//! SIGTERM's soft power-off, as VMware's "Shut Down Guest": when the
//! guest's Tools service polls its TCLO channel, SIGTERM queues `OS_Halt`
//! for it (vmtoolsd's powerOps plugin runs its power-off script and then
//! `shutdown -h now`) and the run waits a bounded time for the guest to
//! power off (ACPI S5, exit status 0). The signal handler only records the
//! request ([`super::signals`]); the machine loop does the rest here.
//!
//! Invariants:
//! - SIGTERM is armed for a soft power-off exactly while the timeout is
//!   not zero, no request was taken yet, and the backdoor says the Tools
//!   service polls TCLO ([`SoftPowerOff::track_tools`] after every
//!   backdoor access and at the start of every boot).
//! - Once a request is taken, `deadline` is set and never cleared: the
//!   wait is bounded by the timeout from the moment the loop saw the
//!   request, across guest resets too.

use super::board::Board;
use super::signals;
use crate::console::diagnostic;
use backdoor::TcloCommand;
use std::time::{Duration, Instant};

/// What [`SoftPowerOff::poll`] tells the machine loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftPoll {
    /// Go on running the guest.
    Continue,
    /// Stop the guest as SIGTERM does without Tools (exit status 143).
    StopHard,
}

/// The soft power-off of one run.
#[derive(Debug)]
pub struct SoftPowerOff {
    timeout: Duration,
    /// When the wait for the guest's power-off ends, once asked.
    deadline: Option<Instant>,
}

impl SoftPowerOff {
    /// A run whose SIGTERM waits up to `timeout` for the guest (zero: no
    /// soft power-off, SIGTERM stops at once).
    pub fn new(timeout: Duration) -> SoftPowerOff {
        SoftPowerOff {
            timeout,
            deadline: None,
        }
    }

    /// Arms SIGTERM's soft power-off while the Tools service polls TCLO,
    /// and disarms it when it stops (its channel closed, a new boot).
    pub fn track_tools(&self, board: &Board) {
        if self.timeout.is_zero() || self.deadline.is_some() {
            return;
        }
        signals::set_soft_power_off_available(board.backdoor.tools_service_polling());
    }

    /// Whether the halted guest must wake the loop: a request not yet
    /// taken, or a wait that is over.
    pub fn needs_attention(&self) -> bool {
        match self.deadline {
            None => signals::soft_power_off_requested(),
            Some(deadline) => Instant::now() >= deadline,
        }
    }

    /// Takes a new request (queues `OS_Halt`, says so on stderr) or ends
    /// a wait that is over.
    pub fn poll(&mut self, board: &mut Board) -> SoftPoll {
        match self.deadline {
            None if signals::soft_power_off_requested() => self.ask_guest(board),
            None => SoftPoll::Continue,
            Some(deadline) if Instant::now() >= deadline => {
                diagnostic!(
                    "nestmon: the guest did not power off within {} of SIGTERM; stopping it",
                    seconds(self.timeout)
                );
                SoftPoll::StopHard
            }
            Some(_) => SoftPoll::Continue,
        }
    }

    fn ask_guest(&mut self, board: &mut Board) -> SoftPoll {
        if let Err(e) = board.backdoor.queue_tclo_for_service(TcloCommand::OsHalt) {
            diagnostic!("nestmon: SIGTERM: cannot ask the guest's Tools to shut down ({e}); stopping the guest");
            return SoftPoll::StopHard;
        }
        self.deadline = Some(Instant::now() + self.timeout);
        diagnostic!(
            "nestmon: SIGTERM: asked the guest's Tools to shut the guest down (OS_Halt); \
             waiting up to {} for it to power off (SIGINT or another SIGTERM stops it at once)",
            seconds(self.timeout)
        );
        SoftPoll::Continue
    }
}

/// `30 s`, `1 s`, `0.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_written_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
