//! The power-on handshake with an outer VMware hypervisor.
//!
//! Invariants:
//! * The outer backdoor is RESTRICTed only when QUERY reported nesting
//!   control, and a [`NestingGuard`] that restricted it OPENs it exactly once
//!   (explicitly through [`NestingGuard::reopen`] or when dropped).
//! * Without nesting control the power-on is refused unless the embedder
//!   set `allow_nested`.

use super::detect::query_nesting;
use super::OuterTransport;
use crate::abi::{self, cmd, nesting};
use crate::Regs;

/// Why the inner guest may not power on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OuterError {
    /// The outer VMware backdoor answers but has no NESTING_CONTROL, so the
    /// inner guest's backdoor traffic could reach the outer hypervisor.
    #[error(
        "the outer VMware hypervisor does not support backdoor nesting control; \
         set vmx.allowNested = \"TRUE\" to power on anyway"
    )]
    NestingUnsupported,
}

/// Keeps the outer backdoor restricted while the inner guest runs.
#[derive(Debug)]
pub struct NestingGuard<T: OuterTransport> {
    transport: T,
    nesting_version: Option<u32>,
    restricted: bool,
}

/// QUERYs the outer NESTING_CONTROL; when supported, RESTRICTs the outer
/// backdoor and returns a guard that reopens it; when not, refuses unless
/// `allow_nested`.
pub fn power_on_handshake<T: OuterTransport>(
    mut transport: T,
    allow_nested: bool,
) -> Result<NestingGuard<T>, OuterError> {
    let nesting_version = query_nesting(&mut transport);
    if nesting_version.is_none() && !allow_nested {
        return Err(OuterError::NestingUnsupported);
    }
    let restricted =
        nesting_version.is_some() && nesting_call(&mut transport, nesting::RESTRICT_BACKDOOR);
    Ok(NestingGuard {
        transport,
        nesting_version,
        restricted,
    })
}

impl<T: OuterTransport> NestingGuard<T> {
    /// The outer NESTING_CONTROL version, if it has one.
    pub fn nesting_version(&self) -> Option<u32> {
        self.nesting_version
    }

    /// The transport the guard holds.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport the guard holds, for further calls while it lives.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// True while the outer backdoor is restricted by this guard.
    pub fn restricted(&self) -> bool {
        self.restricted
    }

    /// OPENs the outer backdoor now if this guard restricted it; returns
    /// whether the outer hypervisor accepted. Calling it again does nothing.
    pub fn reopen(&mut self) -> bool {
        if !self.restricted {
            return true;
        }
        self.restricted = false;
        nesting_call(&mut self.transport, nesting::OPEN_BACKDOOR)
    }
}

impl<T: OuterTransport> Drop for NestingGuard<T> {
    fn drop(&mut self) {
        self.reopen();
    }
}

/// One NESTING_CONTROL call; true unless the outer answered all ones.
fn nesting_call(transport: &mut dyn OuterTransport, subcommand: u16) -> bool {
    let reply = transport.low_bandwidth(Regs::backdoor_call(cmd::NESTING_CONTROL, subcommand, 0));
    reply.eax != abi::ALL_ONES
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outer host that records NESTING_CONTROL subcommands.
    #[derive(Debug)]
    struct Recorder {
        supports_nesting: bool,
        calls: Vec<u16>,
    }

    impl OuterTransport for Recorder {
        fn low_bandwidth(&mut self, mut regs: Regs) -> Regs {
            if regs.command() == cmd::NESTING_CONTROL {
                self.calls.push(regs.subcommand());
                regs.eax = if self.supports_nesting {
                    2
                } else {
                    abi::ALL_ONES
                };
            } else {
                regs.eax = abi::ALL_ONES;
            }
            regs
        }
    }

    fn recorder(supports_nesting: bool) -> Recorder {
        Recorder {
            supports_nesting,
            calls: Vec::new(),
        }
    }

    #[test]
    fn handshake_restricts_then_drop_opens() {
        let mut outer = recorder(true);
        {
            let guard = power_on_handshake(&mut outer, false).expect("power on");
            assert!(guard.restricted());
            assert_eq!(guard.nesting_version(), Some(2));
        }
        assert_eq!(
            outer.calls,
            [
                nesting::QUERY,
                nesting::RESTRICT_BACKDOOR,
                nesting::OPEN_BACKDOOR
            ]
        );
    }

    #[test]
    fn explicit_reopen_is_not_repeated_by_drop() {
        let mut outer = recorder(true);
        {
            let mut guard = power_on_handshake(&mut outer, false).expect("power on");
            assert!(guard.reopen());
            assert!(!guard.restricted());
            assert!(guard.reopen());
        }
        assert_eq!(
            outer.calls,
            [
                nesting::QUERY,
                nesting::RESTRICT_BACKDOOR,
                nesting::OPEN_BACKDOOR
            ]
        );
    }

    #[test]
    fn missing_nesting_control_refuses_power_on_naming_allow_nested() {
        let error = power_on_handshake(recorder(false), false).expect_err("refused");
        assert_eq!(error, OuterError::NestingUnsupported);
        assert!(error.to_string().contains("vmx.allowNested = \"TRUE\""));
    }

    #[test]
    fn allow_nested_powers_on_without_restricting() {
        let mut outer = recorder(false);
        {
            let guard = power_on_handshake(&mut outer, true).expect("allowed");
            assert!(!guard.restricted());
        }
        assert_eq!(outer.calls, [nesting::QUERY]);
    }

    #[test]
    fn guard_reopens_when_the_run_fails() {
        fn run_that_fails(outer: &mut Recorder) -> Result<(), &'static str> {
            let _guard = power_on_handshake(outer, false).map_err(|_| "refused")?;
            Err("guest died")
        }
        let mut outer = recorder(true);
        assert!(run_that_fails(&mut outer).is_err());
        assert_eq!(outer.calls.last(), Some(&nesting::OPEN_BACKDOOR));
    }
}
