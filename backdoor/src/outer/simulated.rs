//! An in-process "outer VMware host" built from this crate's host side.
//!
//! Invariant: every call goes through [`Backdoor::port_in`] with CPL 0: the
//! outer hypervisor sees nestmon as the guest-level hypervisor itself, not
//! as a deprivileged nested guest, exactly as a VT-x based outer VMware does.

use super::OuterTransport;
use crate::{Backdoor, Regs};

/// A transport whose "outer hypervisor" is a [`Backdoor`] in this process.
#[derive(Debug)]
pub struct SimulatedOuter {
    /// The simulated outer host.
    pub host: Backdoor,
}

impl SimulatedOuter {
    /// Wraps `host` as the outer hypervisor.
    pub fn new(host: Backdoor) -> Self {
        SimulatedOuter { host }
    }
}

impl OuterTransport for SimulatedOuter {
    fn low_bandwidth(&mut self, mut regs: Regs) -> Regs {
        if !self.host.port_in(&mut regs, 0) {
            regs.eax = crate::abi::ALL_ONES;
        }
        regs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outer::{power_on_handshake, probe_backdoor, BackdoorProbe, OuterError};
    use crate::{abi, Event, HostFacts};

    fn simulated() -> SimulatedOuter {
        SimulatedOuter::new(Backdoor::new(
            HostFacts::default(),
            Vec::<(&str, &str)>::new(),
        ))
    }

    #[test]
    fn probe_of_the_simulated_host_reports_nesting_version_two() {
        assert_eq!(
            probe_backdoor(&mut simulated()),
            BackdoorProbe::Answered {
                version: 6,
                product_type: abi::product::WORKSTATION,
                nesting_version: Some(2)
            }
        );
    }

    #[test]
    fn handshake_restricts_the_simulated_host_until_the_guard_drops() {
        let mut outer = simulated();
        {
            let guard = power_on_handshake(&mut outer, false).expect("power on");
            assert!(guard.restricted());
        }
        assert!(!outer.host.restricted());
        assert_eq!(
            outer.host.drain_events(),
            [
                Event::NestingRestricted(true),
                Event::NestingRestricted(false)
            ]
        );
    }

    #[test]
    fn simulated_host_refuses_user_mode_backdoor_while_the_guard_lives() {
        let mut guard = power_on_handshake(simulated(), false).expect("power on");
        let host = &mut guard.transport_mut().host;
        assert!(host.restricted());
        let mut from_nested_guest = Regs::backdoor_call(abi::cmd::GETVERSION, 0, 0);
        assert!(!host.port_in(&mut from_nested_guest, 3));
        assert_eq!(from_nested_guest.ebx, 0);
        assert!(guard.reopen());
        assert!(!guard.transport().host.restricted());
    }

    #[test]
    fn nesting_unsupported_error_is_not_raised_against_the_simulated_host() {
        let result = power_on_handshake(simulated(), false).map(|guard| guard.restricted());
        assert_eq!(result, Ok(true));
        assert_ne!(result, Err(OuterError::NestingUnsupported));
    }
}
