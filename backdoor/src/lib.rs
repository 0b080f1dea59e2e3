//! The VMware backdoor as a pure protocol crate.
//!
//! The host side ([`Backdoor`]) takes a guest register file, the kind of
//! access (low-bandwidth `in`/`out` on port 0x5658, `rep insb`/`rep outsb`
//! on port 0x5659 through a [`GuestMemory`]) and the guest CPL, and returns
//! the register file as VMware would leave it. The outer side
//! ([`outer`]) talks to the VMware hypervisor nestmon itself may run in.
//!
//! ```
//! use backdoor::{abi, Backdoor, HostFacts, Regs};
//!
//! let mut host = Backdoor::new(HostFacts::default(), [("guestinfo.role", "test")]);
//! let mut regs = Regs::backdoor_call(abi::cmd::GETVERSION, 0, 0);
//! assert!(host.port_in(&mut regs, 3));
//! assert_eq!((regs.eax, regs.ebx), (6, abi::BDOOR_MAGIC));
//! ```
//!
//! Invariants of the crate:
//! * No dependency on the CPU, monitor or translator crates.
//! * Hostile input never panics and never grows memory past the limits in
//!   [`Limits`]; [`Backdoor::buffered_bytes`] states the current total.
//! * Protocol numbers come from [`abi`], which only holds published values.

pub mod abi;
mod counters;
mod events;
mod facts;
mod guestinfo;
mod host;
mod limits;
mod memory;
pub mod outer;
mod regs;
mod rpc;

pub use counters::Counters;
pub use events::Event;
pub use facts::{FixedClock, HostFacts, HostTime, SystemClock, WallClock};
pub use guestinfo::{GuestInfo, GuestInfoError};
pub use host::{Backdoor, NESTING_CONTROL_DONE, NESTING_CONTROL_VERSION};
pub use limits::Limits;
pub use memory::{FlatMemory, GuestMemory, MemFault};
pub use regs::{high_half, join_halves, low_half, with_high_half, Regs};
pub use rpc::message_status;
pub use rpc::rpci::{NO_VALUE_FOUND, TWO_ARGUMENTS_EXPECTED, UNKNOWN_COMMAND};
pub use rpc::tclo::{app_of_reset_reply, TcloCommand, TcloQueueError, TOOLS_SERVICE_APP};
