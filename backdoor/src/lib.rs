//! The VMware backdoor as a pure protocol crate.
//!
//! The host side ([`Backdoor`]) takes a guest register file, the kind of
//! access (low-bandwidth `in`/`out` on port 0x5658, `rep insb`/`rep outsb`
//! on port 0x5659 through a [`GuestMemory`]) and the guest CPL, and returns
//! the register file as VMware would leave it. The outer side
//! ([`outer`]) talks to the VMware hypervisor nestmon itself may run in.
//!
//! Invariants of the crate:
//! * No dependency on the CPU, monitor or translator crates.
//! * Hostile input never panics and never grows memory past the limits in
//!   [`Limits`]; [`Backdoor::buffered_bytes`] states the current total.
//! * Protocol numbers come from [`abi`], which only holds published values.

pub mod abi;
pub mod outer;
mod regs;

pub use regs::{high_half, join_halves, low_half, with_high_half, Regs};
