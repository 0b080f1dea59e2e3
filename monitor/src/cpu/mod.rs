//! The x86 system model: everything about the guest CPU that is not running
//! guest code itself, independent of how guest code runs (binary
//! translation or `/dev/kvm`).
//!
//! Modules work on a [`CpuContext`] (registers, the [`SystemState`], and
//! guest-linear memory with the guest's paging) and return what the SDM
//! says happens, as values: an [`Exception`] to deliver, a changed mode for
//! the backend to act on. Nothing here sees host code, signals, the code
//! cache or the shadow MMU's windows; every module is unit-tested on
//! [`testing::TestCpu`].
//!
//! - [`flags`]: EFLAGS, CR0, CR4, DR6, DR7 as bit fields;
//! - [`exception`]: exceptions, vectors, error codes, double-fault classes;
//! - [`descriptor`]: selectors and GDT/LDT/IDT descriptors;
//! - [`state`]: segment registers with their hidden caches, the system
//!   state, and the limit and type checks of segmented accesses;
//! - [`context`]: the backend interface and the stack and segmented-memory
//!   helpers built on it;
//! - [`msr`]: the MSR file;
//! - [`segment`]: descriptor-table access and segment-register loads;
//! - [`far`]: far JMP, CALL and RET (code segments, call gates, task gates,
//!   TSSs);
//! - [`system`]: the system instructions as functions on operand values
//!   (descriptor tables, LAR/LSL/VERR/VERW, control and debug registers, I/O
//!   permission, IOPL-sensitive and privileged instructions, SYSENTER and
//!   SYSEXIT, FPU availability).
//! - [`segment`]: descriptor-table access and segment-register loads.
//! - [`instr`]: the ordinary instructions the monitor carries out (stack,
//!   string, loop and BCD forms translation leaves to it);
//! - [`interrupt`] and [`task`]: event delivery through the IDT, IRET, and
//!   task switches;
//! - [`exec`]: the instructions a backend leaves to the monitor, decoded
//!   and dispatched to the modules above, over an [`exec::Executor`] (both
//!   vCPU backends use it).

pub mod context;
pub mod descriptor;
pub mod exception;
pub mod exec;
pub mod far;
pub mod flags;
pub mod instr;
pub mod interrupt;
pub mod msr;
pub mod segment;
pub mod state;
pub mod system;
pub mod task;
#[cfg(test)]
pub mod testing;

pub use context::{AccessKind, CpuContext, Privilege};
pub use descriptor::{Descriptor, Selector, SystemKind};
pub use exception::{Exception, Fault};
pub use flags::{Cr0, Cr4, Eflags};
pub use state::{Seg, SegmentRegister, SystemState, TableRegister};
