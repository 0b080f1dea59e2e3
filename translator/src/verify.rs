//! An independent check of emitted host code: every memory access and every
//! control transfer in a unit has one of the forms the register convention
//! allows. It decodes the host code again, so it does not trust the
//! translator's own bookkeeping.
//!
//! Allowed memory accesses (from iced-x86's used-memory information, so
//! implicit accesses count too):
//! - `[r15 + g + d]`: the guest window, where `g` is a guest register or a
//!   scratch register holding a 32-bit value and `|d| <= 64`;
//! - `[r14 + d]`: the vCPU state block;
//! - `[rsp + d]`: the monitor's stack (PUSHFQ/POPFQ sequences);
//! - `[r12 + r11*8 + t]`, `[r12 + r11*8 + t + 8]`: the indirect-branch
//!   table of a mode, `t` a multiple of its size below `TAGS` tables;
//! - `[r13]`: the indirect-hit and unit-entry counters (when counting);
//! - `[rip + d]` naming the poll word;
//! - `[rsi]`/`[rdi]` of a string instruction, only between
//!   `lea rsi/rdi,[rsi/rdi + r15]` and the `mov esi/edi, esi/edi` that
//!   truncates it back.
//!
//! Allowed control transfers: direct jumps and conditional jumps (to the
//! unit itself, the runtime stubs or, once chained, other translations) and
//! the indirect-branch table's `jmp [r12 + r11*8 + 8]`.
//!
//! Allowed instructions: those of extensions a guest may be offered
//! ([`crate::isa::GuestIsa::can_offer`]) and x86-64 itself, because iced-x86
//! does not report the memory access of every instruction (CLZERO's
//! `[rAX]`, MONITORX's).

use crate::state::CpuState;
use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    Register, UsedMemory,
};

/// A host instruction that breaks the register convention.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("host instruction at unit offset {offset:#x} breaks confinement: {what}")]
pub struct Violation {
    /// Offset of the host instruction in the unit.
    pub offset: usize,
    /// What is wrong.
    pub what: String,
}

/// Largest displacement allowed on a window access (PUSHAD/POPAD reach 28).
const MAX_WINDOW_DISP: i64 = 64;

/// Checks the host code of one unit that runs at `base`; `poll` is the
/// address of the poll word.
pub fn check_unit(code: &[u8], base: u64, poll: u64) -> Result<(), Violation> {
    let mut info = InstructionInfoFactory::new();
    let mut rebased: Vec<Register> = Vec::new();
    for i in Decoder::with_ip(64, code, base, DecoderOptions::NONE) {
        let offset = (i.ip() - base) as usize;
        let bad = |what: String| Violation { offset, what };
        if i.is_invalid() {
            return Err(bad("undecodable bytes".into()));
        }
        let used = info.info(&i);
        let written: Vec<Register> = used
            .used_registers()
            .iter()
            .filter(|r| {
                matches!(
                    r.access(),
                    OpAccess::Write
                        | OpAccess::ReadWrite
                        | OpAccess::CondWrite
                        | OpAccess::ReadCondWrite
                )
            })
            .map(|r| r.register().full_register())
            .collect();
        track_rebase(&i, &written, &mut rebased);
        for m in used.used_memory() {
            if m.access() == OpAccess::NoMemAccess {
                continue;
            }
            check_access(&i, m, poll, &rebased).map_err(bad)?;
        }
        check_flow(&i).map_err(bad)?;
        check_extensions(&i).map_err(bad)?;
    }
    Ok(())
}

/// Every host instruction belongs to an extension a guest may be offered
/// (or to x86-64 itself). This catches instructions whose memory access
/// iced-x86 does not report (CLZERO, MONITORX).
fn check_extensions(i: &Instruction) -> Result<(), String> {
    let unknown = i
        .cpuid_features()
        .iter()
        .find(|f| **f != iced_x86::CpuidFeature::X64 && !crate::isa::GuestIsa::can_offer(**f));
    match unknown {
        Some(f) => Err(format!("instruction of extension {f:?} ({:?})", i.code())),
        None => Ok(()),
    }
}

/// Keeps the set of string registers currently holding a window address:
/// `lea rsi/rdi,[rsi/rdi + r15]` adds one; any other write of the register
/// except a string instruction's own advance removes it.
fn track_rebase(i: &Instruction, written: &[Register], rebased: &mut Vec<Register>) {
    let rebase = i.code() == Code::Lea_r64_m
        && matches!(i.op0_register(), Register::RSI | Register::RDI)
        && i.memory_base() == i.op0_register()
        && i.memory_index() == Register::R15
        && i.memory_displacement64() == 0;
    if rebase {
        rebased.push(i.op0_register());
    } else if !i.is_string_instruction() {
        rebased.retain(|r| !written.contains(r));
    }
}

fn is_window_index(r: Register) -> bool {
    matches!(
        r,
        Register::RAX
            | Register::RCX
            | Register::RDX
            | Register::RBX
            | Register::RBP
            | Register::RSI
            | Register::RDI
            | Register::R8
            | Register::R9
            | Register::R10
            | Register::R11
            | Register::R13
    )
}

fn check_access(
    i: &Instruction,
    m: &UsedMemory,
    poll: u64,
    rebased: &[Register],
) -> Result<(), String> {
    let disp = m.displacement() as i64;
    let ok = match (m.base(), m.index()) {
        (Register::R15, idx) => {
            is_window_index(idx) && m.scale() == 1 && disp.abs() <= MAX_WINDOW_DISP
        }
        (Register::R14, Register::None) => {
            (0..std::mem::size_of::<CpuState>() as i64).contains(&disp)
        }
        (Register::RSP, Register::None) => disp.abs() <= 16,
        (Register::R12, Register::R11) => {
            let table = crate::ibtc::TABLE_BYTES as i64;
            m.scale() == 8
                && (disp % table == 0 || disp % table == 8)
                && (0..i64::from(crate::ibtc::TAGS) * table).contains(&disp)
        }
        (Register::R13, Register::None) => disp == 0,
        // iced-x86 reports RIP-relative operands as absolute addresses.
        (Register::RIP | Register::None, Register::None) => m.displacement() == poll,
        (Register::RSI | Register::RDI, Register::None) => {
            i.is_string_instruction() && disp == 0 && rebased.contains(&m.base())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "memory access [{:?} + {:?}*{} + {:#x}] ({:?})",
            m.base(),
            m.index(),
            m.scale(),
            m.displacement(),
            i.code()
        ))
    }
}

fn check_flow(i: &Instruction) -> Result<(), String> {
    match i.flow_control() {
        FlowControl::Next | FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => {
            Ok(())
        }
        FlowControl::IndirectBranch
            if i.code() == Code::Jmp_rm64
                && i.memory_base() == Register::R12
                && i.memory_index() == Register::R11 =>
        {
            Ok(())
        }
        other => Err(format!("control transfer {other:?} ({:?})", i.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x20_0000;
    const POLL: u64 = 0x1f_f000;

    fn assemble(f: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler)) -> Vec<u8> {
        let mut a = iced_x86::code_asm::CodeAssembler::new(64).unwrap();
        f(&mut a);
        a.assemble(BASE).unwrap()
    }

    #[test]
    fn window_and_state_accesses_pass() {
        use iced_x86::code_asm::*;
        let code = assemble(|a| {
            a.mov(eax, dword_ptr(r15 + r10)).unwrap();
            a.mov(dword_ptr(r14 + 0x20), 1u32).unwrap();
            a.lea(rdi, qword_ptr(rdi + r15)).unwrap();
            a.stosb().unwrap();
            a.mov(edi, edi).unwrap();
        });
        assert_eq!(check_unit(&code, BASE, POLL), Ok(()));
    }

    #[test]
    fn raw_guest_register_address_is_a_violation() {
        use iced_x86::code_asm::*;
        let code = assemble(|a| {
            a.maskmovdqu(xmm0, xmm1).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
        let code = assemble(|a| {
            a.mov(eax, dword_ptr(rbx)).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
        let code = assemble(|a| {
            a.clzero().unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn string_register_after_truncation_is_a_violation() {
        use iced_x86::code_asm::*;
        let code = assemble(|a| {
            a.lea(rdi, qword_ptr(rdi + r15)).unwrap();
            a.mov(edi, edi).unwrap();
            a.stosb().unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn host_calls_and_returns_are_violations() {
        use iced_x86::code_asm::*;
        for code in [
            assemble(|a| a.ret().unwrap()),
            assemble(|a| a.call(rax).unwrap()),
            assemble(|a| a.jmp(rax).unwrap()),
        ] {
            assert!(check_unit(&code, BASE, POLL).is_err());
        }
    }
}
