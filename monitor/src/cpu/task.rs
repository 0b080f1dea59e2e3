//! Task switches through TSS descriptors and task gates (Intel SDM vol. 3,
//! chapter 7).

use super::context::CpuContext;
use super::descriptor::Selector;
use super::exception::Fault;

/// What caused a task switch (it decides the busy bits, NT and the back
/// link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchReason {
    /// JMP to a TSS or task gate.
    Jmp,
    /// CALL to a TSS or task gate.
    Call,
    /// IRET with NT set (return to the back link).
    Iret,
    /// An interrupt or exception through a task gate.
    Interrupt,
}

/// Switches to the task whose TSS `selector` names. `next_eip` is the EIP
/// saved in the old task; `error_code` is pushed on the new task's stack
/// (exceptions with an error code delivered through a task gate).
pub fn task_switch(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    reason: TaskSwitchReason,
    next_eip: u32,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    let _ = (ctx, selector, reason, next_eip, error_code);
    Err(Fault::Unsupported("a task switch"))
}
