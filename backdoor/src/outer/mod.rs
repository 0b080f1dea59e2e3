//! The outer level: nestmon itself running inside a VMware virtual machine.
//!
//! Three pieces:
//! * [`OuterTransport`]: how a backdoor call reaches the outer hypervisor
//!   ([`PortIoTransport`] does real port I/O; [`SimulatedOuter`] feeds the
//!   registers into this crate's own host side, for tests).
//! * [`detect_outer`]: which hypervisor (if any) runs us, and whether its
//!   backdoor answers and supports NESTING_CONTROL.
//! * [`power_on_handshake`]: QUERY the outer NESTING_CONTROL, RESTRICT the
//!   outer backdoor while the inner guest runs, OPEN it again when the
//!   returned [`NestingGuard`] is dropped (also on error paths).
//!
//! Invariants:
//! * The backdoor port is never touched unless CPUID leaf 0x4000_0000 names
//!   "VMwareVMware": on any other host an `in` from user mode faults.
//! * A guard that restricted the outer backdoor always reopens it exactly once.

mod detect;
mod handshake;
mod port_io;
mod simulated;

pub use detect::{detect_outer, hypervisor_vendor, probe_backdoor, BackdoorProbe, OuterDetection};
pub use handshake::{power_on_handshake, NestingGuard, OuterError};
pub use port_io::{reopen_outer_backdoor_signal_safe, PortAccessError, PortIoTransport};
pub use simulated::SimulatedOuter;

use crate::Regs;

/// A way to make a low-bandwidth backdoor call to the outer hypervisor.
pub trait OuterTransport {
    /// Performs `in eax, dx` with every register of `regs` loaded and returns
    /// the registers as the outer hypervisor left them.
    fn low_bandwidth(&mut self, regs: Regs) -> Regs;
}

impl<T: OuterTransport + ?Sized> OuterTransport for &mut T {
    fn low_bandwidth(&mut self, regs: Regs) -> Regs {
        (**self).low_bandwidth(regs)
    }
}

/// The CPUID vendor string VMware hypervisors report at leaf 0x4000_0000.
pub const VMWARE_VENDOR: &str = "VMwareVMware";
