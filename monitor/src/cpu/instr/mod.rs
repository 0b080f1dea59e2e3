//! Instructions the monitor carries out on decoded iced-x86 instructions,
//! host-independent: the forms binary translation leaves to the monitor
//! (16-bit stacks and code, 16-bit addressing in string instructions, ESP-
//! based destinations, ENTER with a nesting level, BCD adjusts).
//!
//! - [`operand`]: register and memory operands;
//! - [`stack`]: PUSH, POP, PUSHA, POPA, near CALL/JMP/RET, ENTER, LEAVE;
//! - [`string`]: MOVS, STOS, LODS, CMPS, SCAS with REP prefixes;
//! - [`flow`]: LOOP, LOOPE, LOOPNE, JCXZ, JECXZ;
//! - [`data`]: MOV, MOVZX, MOVSX, XCHG with memory (device memory);
//! - [`bcd`]: DAA, DAS, AAA, AAS, AAM, AAD, SALC;
//! - [`alu`]: the flags these compute.
//!
//! Invariant: a function either completes its instruction (registers,
//! memory and, for [`Completion::Jumped`], EIP) or returns the fault with
//! the instruction's start state (for string instructions: the state after
//! the last completed iteration).

pub mod alu;
pub mod bcd;
pub mod data;
pub mod flow;
pub mod operand;
pub mod stack;
pub mod string;

/// How an instruction left EIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// EIP must move to the next instruction.
    Next,
    /// EIP was set by the instruction (or, for an unfinished REP string
    /// instruction, left at it).
    Jumped,
}
