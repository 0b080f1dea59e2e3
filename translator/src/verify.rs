//! An independent check of emitted host code: every memory access and every
//! control transfer in a unit has one of the forms the register convention
//! allows. It decodes the host code again, so it does not trust the
//! translator's own bookkeeping.
//!
//! Allowed memory accesses (from iced-x86's used-memory information, so
//! implicit accesses count too):
//! - `[r15 + g + d]`: the guest window, where `g` is a guest register or a
//!   scratch register holding a 32-bit value and `|d| <= 64` or `d` in
//!   `translate::FOLDED_DISPLACEMENTS` (a folded guest displacement: the
//!   address stays within the guards around the window and clear of its
//!   software TLB); `[r15 + d]` with `0 <= d < 2^31` (a folded absolute
//!   guest address, inside the window); `[r15 + g*s + d]` with `s` 2, 4
//!   or 8 and `0 <= d < 2^31` (a folded `[index*s + disp]`: below 34 GiB
//!   past the base, inside the 32 GiB guard after the window), not by BT
//!   and its kind with a register bit offset;
//! - `[r14 + d]`: the vCPU state block;
//! - `[rsp + d]`: the host stack: reads near its top, writes only by
//!   PUSHFQ, PUSH r64 and CALL (see the host stack below);
//! - `[r12 + r11*8 + t]`, `[r12 + r11*8 + t + 8]`: the indirect-branch
//!   table of a mode, `t` a multiple of its size below `TAGS` tables,
//!   where on every path R12 was loaded from the state block's table-set
//!   pointer and R11 is twice a 16-bit value (`lea r11d, [r11 + r11]`);
//! - `[r13]`: the indirect-hit and unit-entry counters (when counting);
//! - `[r15 + r12*8 + t]`, loads only (`mov r64, [...]`), `t` the start of
//!   one of the four software-TLB tables (`shadowmmu::SOFT_READ_TAGS` ...),
//!   where R12 holds a value zero-extended from 16 bits (`movzx r12d,
//!   r16`) on every path to it; a frame table only where, on every path,
//!   that slot's tag in the same table (read or write) was found filled:
//!   the taken edge of `jrcxz` on `rcx = tag + r11 + 1` with R11 a 32-bit
//!   value, which is zero only for a tag `-(r11 + 1)`, never the empty 0;
//! - `[r12 + r11 + d]` of at most 16 bytes with `d >= 0` and `d` plus the
//!   size at most 32 (`SOFT_REACH`: PUSHAD's and POPAD's 32-byte frame,
//!   probed as one access), or FXSAVE's and FXRSTOR's 512 bytes at
//!   `[r12 + r11]` (`SOFT_WIDE_REACH`), not by BT/BTS/BTR/BTC with a register bit
//!   offset (which reach 256 MiB around it), where on every path R12 was
//!   last loaded from a software-TLB frame table (of a filled slot: a
//!   guest frame's host address minus at most 60 KiB, as the monitor
//!   writes a frame with every tag and only ever clears tags or whole
//!   tables) and R11 zero-extended from 16 bits: the access stays within
//!   60 KiB before and 4 KiB + 512 bytes after a guest frame, inside the
//!   guards around guest RAM (`RAM_GUARD`, 1 MiB).
//!
//! - `jmp [r15 + t]` and `call [r15 + t]`, `t` an entry of the view's
//!   chain table (`shadowmmu::CHAIN_TABLE_OFFSET`, 8-byte entries): a
//!   host address the monitor wrote, the branch's only effect (the call
//!   pushes onto the return-prediction stack as a direct one does);
//! - `mov r64, [r15 + r11*8 + t]` and `jmp [r15 + r11*8 + t]`, where R11
//!   is zero-extended from 8 bits (`movzx r11d, r8`) on every path and
//!   `t` to `t + 8 * 255` are entries of the chain table: a jump table's
//!   keys and branch entries (`translate::JUMP_TABLE_ENTRIES`);
//! - `[rsi]`/`[rdi]` of a string instruction of elements of at most 4
//!   bytes whose pointer was made on every path by `lea r, [r12 + r11]`
//!   from a frame value and a 16-bit value and whose RCX was masked to at
//!   most `SOFT_STRING_MAX_COUNT` (`and ecx, imm`): a software-TLB chunk,
//!   within 60 KiB + 32 KiB before and 64 KiB + 32 KiB after a guest frame
//!   for a filled slot, inside the guards around guest RAM (1 MiB); or to
//!   at most 65,535 (`movzx ecx, cx`: a copy within one page, whose count
//!   the translator found below 4,096), within 60 KiB + 256 KiB before
//!   and 64 KiB + 256 KiB after, inside them too.
//!
//! A jump into the middle of an instruction of the unit is refused (the
//! facts above follow the unit's own jumps from instruction to
//! instruction).
//! - `[rip + d]` naming the poll word;
//! - `[rsi]`/`[rdi]` of a string instruction, only between
//!   `lea rsi/rdi,[rsi/rdi + r15]` and the `mov esi/edi, esi/edi` that
//!   truncates it back.
//!
//! Allowed control transfers: direct `jmp`, `jcc` and `jrcxz` (to the
//! unit itself, the runtime stubs or, once chained, other translations),
//! the indirect-branch table's `jmp [r12 + r11*8 + 8]`, the chain table's
//! `jmp [r15 + t]` and `jmp [r15 + r11*8 + t]`, and the predicted
//! calls and returns of the return-prediction stack (`crate::rstack`):
//! `call rel32`, and `ret` right after `lea r10, [rip + d]` naming the
//! instruction after it.
//!
//! The host stack (`check_host_stack`): a unit pushes at most one value
//! (PUSHFQ or PUSH r64) and pops or drops it (`lea rsp, [rsp + 8]`) before
//! any host call or return, return-stack reset (`mov rsp, [r14 +
//! RSB_TOP]`), jump out of the unit or indirect jump, on every path; no
//! other instruction writes RSP, and no unit writes the state block's
//! host RSP fields. So what a `ret` pops was stored by a host `call` (its
//! continuation follows it in some unit) or is the sentinel, never a value
//! the guest chose.
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

/// Bytes a software-TLB access `[r12 + r11 + d]` may reach past `r12 +
/// r11` (`d` and the access's size together): PUSHAD's and POPAD's 32-byte
/// frame, which the translator probes as one access (the lookup hits only
/// if its last byte lies in the same page). Past the frame value plus a
/// 16-bit value that is 64 KiB + 32 bytes, well inside `RAM_GUARD` (1 MiB)
/// after guest RAM.
const SOFT_REACH: i64 = 32;

/// What FXSAVE's and FXRSTOR's `[r12 + r11]` (no displacement) reach: their
/// 512-byte area, probed as one access; 4 KiB + 512 bytes past a frame,
/// well inside `RAM_GUARD` too.
const SOFT_WIDE_REACH: i64 = 512;

/// Largest displacement allowed on a window access (PUSHAD/POPAD reach 28).
const MAX_WINDOW_DISP: i64 = 64;

/// Checks the host code of one unit that runs at `base`; `poll` is the
/// address of the poll word.
pub fn check_unit(code: &[u8], base: u64, poll: u64) -> Result<(), Violation> {
    let mut info = InstructionInfoFactory::new();
    let mut rebased: Vec<Register> = Vec::new();
    // Emitted instructions average well over 4 bytes: one allocation.
    let mut insns: Vec<Instruction> = Vec::with_capacity(code.len() / 4 + 1);
    insns.extend(Decoder::with_ip(64, code, base, DecoderOptions::NONE));
    let sources = branch_sources(&insns, base, code.len() as u64).map_err(|k| Violation {
        offset: (insns[k].ip() - base) as usize,
        what: "a jump into the middle of an instruction".into(),
    })?;
    let mut after: Vec<SoftFacts> = Vec::with_capacity(insns.len());
    let mut writes: Vec<Writes> = Vec::with_capacity(insns.len());
    // Reused for every instruction (no allocation each).
    let mut written: Vec<Register> = Vec::new();
    for (k, i) in insns.iter().enumerate() {
        let i = *i;
        let facts = facts_before(&insns, k, &after, &sources);
        let offset = (i.ip() - base) as usize;
        let bad = |what: String| Violation { offset, what };
        if i.is_invalid() {
            return Err(bad("undecodable bytes".into()));
        }
        let used = info.info(&i);
        written.clear();
        written.extend(
            used.used_registers()
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
                .map(|r| r.register().full_register()),
        );
        writes.push(Writes {
            rsp: written.contains(&Register::RSP),
            r10: written.contains(&Register::R10),
        });
        track_rebase(&i, &written, &mut rebased);
        for m in used.used_memory() {
            if m.access() == OpAccess::NoMemAccess {
                continue;
            }
            check_access(&i, m, poll, &rebased, facts).map_err(bad)?;
        }
        after.push(facts.after(&i, &written));
        check_flow(&i).map_err(bad)?;
        check_extensions(&i).map_err(bad)?;
    }
    check_ret_lookups(&insns, &writes, base, code.len() as u64).map_err(|k| Violation {
        offset: (insns[k].ip() - base) as usize,
        what: "jmp r10 where R10 may not be a ret's lookup".into(),
    })?;
    check_host_stack(&insns, &writes, base, code.len() as u64).map_err(|(k, what)| Violation {
        offset: (insns[k.min(insns.len() - 1)].ip() - base) as usize,
        what,
    })
}

/// Which registers of the host stack discipline an instruction writes.
#[derive(Clone, Copy)]
struct Writes {
    /// RSP (other than by the pushes, pops, calls and returns
    /// `check_host_stack` knows, which write it too).
    rsp: bool,
    /// R10 (which a continuation's `jmp r10` relies on).
    r10: bool,
}

/// Every host instruction belongs to an extension a guest may be offered
/// (or to x86-64 itself). This catches instructions whose memory access
/// iced-x86 does not report (CLZERO, MONITORX).
fn check_extensions(i: &Instruction) -> Result<(), String> {
    // The software-TLB probe's flag-free shift (BMI2, which the monitor
    // requires of the host before it asks for software-TLB accesses),
    // register operands only.
    if i.code() == Code::VEX_Shrx_r32_rm32_r32 && i.op1_kind() == iced_x86::OpKind::Register {
        return Ok(());
    }
    // The indirect-branch table's mixed index (BMI2 too, used only where
    // the host has it, see `crate::ibtc::mixed_index`).
    if i.code() == Code::VEX_Rorx_r32_rm32_imm8 && i.op1_kind() == iced_x86::OpKind::Register {
        return Ok(());
    }
    // An inline FS/GS load's descriptor compare and base (BMI2 too,
    // offered only where the host has it, see
    // `translate::InlineSegmentLoad::any_base`), register operands only.
    if i.code() == Code::VEX_Pext_r64_r64_rm64 && i.op2_kind() == iced_x86::OpKind::Register {
        return Ok(());
    }
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

/// What the verifier knows of one scratch register, for software-TLB
/// accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fact {
    /// Anything.
    Unknown,
    /// A value zero-extended from 16 bits.
    Low16,
    /// A value zero-extended from 8 bits (`movzx r11d, r8`): a jump
    /// table's entry number.
    Low8,
    /// A value zero-extended from 32 bits (written as a 32-bit register).
    Low32,
    /// A tag loaded from the software-TLB tag table (`true`: the write
    /// table) at the slot R12 names.
    Tag(bool),
    /// `tag + r + 1` of a `Tag` and a `Low32`/`Low16` R11: zero only if
    /// the slot's tag is `-(r + 1)`, never zero: the slot is filled.
    TagCheck(bool),
    /// A 16-bit slot index whose tag in table `.0` (`true`: write) was
    /// found filled on every path here (the taken edge of a JRCXZ on a
    /// `TagCheck`).
    Checked(bool),
    /// A value loaded from a software-TLB frame table at a `Checked` slot:
    /// the host address of a guest frame minus at most 60 KiB.
    SoftFrame,
    /// A frame value plus a 16-bit value (`lea r, [r12 + r11]` of a
    /// `SoftFrame` and a `Low16`): within 60 KiB before and 64 KiB after a
    /// guest frame's host address.
    SoftPointer,
    /// At most [`crate::translate::SOFT_STRING_MAX_COUNT`] (`and ecx, imm`).
    SmallCount,
    /// At most 65,535 (`movzx ecx, cx`).
    ShortCount,
    /// Twice a `Low16` (`lea r11d, [r11 + r11]`): an indirect-branch table
    /// index whose 16-byte entry lies inside one table.
    TableIndex,
    /// The address of an indirect-branch table set, loaded from the state
    /// block (`CpuState::ibtc` or `ibtc_shared`).
    TableSet,
}

/// What holds of R11, R12, RSI, RDI and RCX before an instruction on
/// every path to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SoftFacts {
    r11: Fact,
    r12: Fact,
    rsi: Fact,
    rdi: Fact,
    rcx: Fact,
}

impl SoftFacts {
    const UNKNOWN: SoftFacts = SoftFacts {
        r11: Fact::Unknown,
        r12: Fact::Unknown,
        rsi: Fact::Unknown,
        rdi: Fact::Unknown,
        rcx: Fact::Unknown,
    };

    fn meet(self, other: SoftFacts) -> SoftFacts {
        let one = |a: Fact, b: Fact| if a == b { a } else { Fact::Unknown };
        SoftFacts {
            r11: one(self.r11, other.r11),
            r12: one(self.r12, other.r12),
            rsi: one(self.rsi, other.rsi),
            rdi: one(self.rdi, other.rdi),
            rcx: one(self.rcx, other.rcx),
        }
    }

    /// The fact about string pointer register `r` (RSI or RDI).
    fn pointer(self, r: Register) -> Fact {
        if r == Register::RSI {
            self.rsi
        } else {
            self.rdi
        }
    }

    /// The facts after `i`, which writes the full registers `written`.
    fn after(self, i: &Instruction, written: &[Register]) -> SoftFacts {
        let low16 = |r: Register| {
            i.code() == Code::Movzx_r32_rm16
                && i.op0_register() == r
                && i.op1_kind() == iced_x86::OpKind::Register
        };
        let mut next = self;
        if written.contains(&Register::R11) {
            let doubled = i.code() == Code::Lea_r32_m
                && i.op0_register() == Register::R11D
                && i.memory_base() == Register::R11
                && i.memory_index() == Register::R11
                && i.memory_index_scale() == 1
                && i.memory_displacement64() == 0
                && self.r11 == Fact::Low16;
            let low8 = i.code() == Code::Movzx_r32_rm8
                && i.op0_register() == Register::R11D
                && i.op1_kind() == iced_x86::OpKind::Register;
            next.r11 = if low16(Register::R11D) {
                Fact::Low16
            } else if low8 {
                Fact::Low8
            } else if doubled {
                Fact::TableIndex
            } else if i.op0_kind() == iced_x86::OpKind::Register
                && i.op0_register() == Register::R11D
            {
                Fact::Low32
            } else {
                Fact::Unknown
            };
        }
        if written.contains(&Register::R12) {
            let frame_load = i.code() == Code::Mov_r64_rm64
                && i.op0_register() == Register::R12
                && soft_table(i.memory_base(), i.memory_index(), i.memory_index_scale()).is_some()
                && table_of(i.memory_displacement64() as i64)
                    .is_some_and(|(write, frames)| frames && self.r12 == Fact::Checked(write));
            let table_set = i.code() == Code::Mov_r64_rm64
                && i.op0_register() == Register::R12
                && i.memory_base() == Register::R14
                && i.memory_index() == Register::None
                && matches!(
                    i.memory_displacement64() as i64,
                    d if d == i64::from(crate::state::off::IBTC)
                        || d == i64::from(crate::state::off::IBTC_SHARED)
                );
            next.r12 = if low16(Register::R12D) {
                Fact::Low16
            } else if table_set {
                Fact::TableSet
            } else if frame_load {
                Fact::SoftFrame
            } else {
                Fact::Unknown
            };
        }
        let soft_pointer = |r: Register| {
            i.code() == Code::Lea_r64_m
                && i.op0_register() == r
                && i.memory_base() == Register::R12
                && i.memory_index() == Register::R11
                && i.memory_index_scale() == 1
                && i.memory_displacement64() == 0
                && self.r12 == Fact::SoftFrame
                && self.r11 == Fact::Low16
        };
        for (r, fact) in [
            (Register::RSI, &mut next.rsi),
            (Register::RDI, &mut next.rdi),
        ] {
            if written.contains(&r) {
                *fact = if soft_pointer(r) {
                    Fact::SoftPointer
                } else {
                    Fact::Unknown
                };
            }
        }
        if written.contains(&Register::RCX) {
            let small = i.code() == Code::And_rm32_imm32
                && i.op0_kind() == iced_x86::OpKind::Register
                && i.op0_register() == Register::ECX
                && i.immediate32() <= crate::translate::SOFT_STRING_MAX_COUNT;
            let tag_load = (i.code() == Code::Mov_r64_rm64
                && i.op0_register() == Register::RCX
                && soft_table(i.memory_base(), i.memory_index(), i.memory_index_scale()).is_some()
                && self.r12 == Fact::Low16)
                .then(|| table_of(i.memory_displacement64() as i64))
                .flatten()
                .filter(|(_, frames)| !frames);
            let tag_check = i.code() == Code::Lea_r64_m
                && i.op0_register() == Register::RCX
                && i.memory_base() == Register::RCX
                && i.memory_index() == Register::R11
                && i.memory_index_scale() == 1
                && i.memory_displacement64() == 1
                && matches!(self.r11, Fact::Low16 | Fact::Low32 | Fact::Low8);
            let short = i.code() == Code::Movzx_r32_rm16
                && i.op0_register() == Register::ECX
                && i.op1_kind() == iced_x86::OpKind::Register;
            next.rcx = match (small, tag_load, tag_check, self.rcx) {
                (true, _, _, _) => Fact::SmallCount,
                _ if short => Fact::ShortCount,
                (_, Some((write, _)), _, _) => Fact::Tag(write),
                (_, _, true, Fact::Tag(write)) => Fact::TagCheck(write),
                _ => Fact::Unknown,
            };
        }
        next
    }

    /// The facts along the taken edge of `i` (a branch): a JRCXZ taken
    /// on a `TagCheck` proves the slot R12 names filled.
    fn taken(self, i: &Instruction) -> SoftFacts {
        let mut next = self;
        if i.code() == Code::Jrcxz_rel8_64 {
            if let (Fact::TagCheck(write), Fact::Low16) = (self.rcx, self.r12) {
                next.r12 = Fact::Checked(write);
            }
        }
        next
    }
}

/// Which software-TLB table a displacement names: (write table, frames
/// rather than tags).
fn table_of(disp: i64) -> Option<(bool, bool)> {
    match disp {
        shadowmmu::SOFT_READ_TAGS => Some((false, false)),
        shadowmmu::SOFT_READ_FRAMES => Some((false, true)),
        shadowmmu::SOFT_WRITE_TAGS => Some((true, false)),
        shadowmmu::SOFT_WRITE_FRAMES => Some((true, true)),
        _ => None,
    }
}

/// `Some(())` when `[base + index*scale]` is the form of a software-TLB
/// table access.
fn soft_table(base: Register, index: Register, scale: u32) -> Option<()> {
    (base == Register::R15 && index == Register::R12 && scale == 8).then_some(())
}

/// For each instruction, the indices of the branches in the unit that
/// jump to it.
/// Refuses (with the branch's index) a jump into the middle of an
/// instruction.
fn branch_sources(insns: &[Instruction], base: u64, len: u64) -> Result<Vec<Vec<usize>>, usize> {
    let mut sources = vec![Vec::new(); insns.len()];
    for (k, i) in insns.iter().enumerate() {
        if !(is_direct_jump(i) || i.code() == Code::Call_rel32_64) {
            continue;
        }
        let target = i.near_branch_target();
        if target >= base && target < base + len {
            match index_at(insns, target) {
                Some(t) => sources[t].push(k),
                // Into the middle of an instruction: what would run from
                // there was never decoded, let alone checked.
                None => return Err(k),
            }
        }
    }
    Ok(sources)
}

/// The index of the instruction that starts at `ip` (the instructions
/// are in address order), if one does.
fn index_at(insns: &[Instruction], ip: u64) -> Option<usize> {
    insns.binary_search_by_key(&ip, |i| i.ip()).ok()
}

/// Whether `i` is a direct jump the emitter makes (jmp, jcc, jrcxz).
fn is_direct_jump(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
    ) && (i.is_jmp_short_or_near() || i.is_jcc_short_or_near() || is_jrcxz(i))
}

/// Bytes of one indirect-branch table entry (key, then host address).
const ENTRY_BYTES: i64 = std::mem::size_of::<crate::ibtc::Entry>() as i64;

/// Whether displacement `disp` from a table set stays within its tables.
fn in_table_set(disp: i64) -> bool {
    (0..i64::from(crate::ibtc::TAGS) * crate::ibtc::TABLE_BYTES as i64).contains(&disp)
}

fn is_jrcxz(i: &Instruction) -> bool {
    matches!(i.code(), Code::Jrcxz_rel8_64 | Code::Jecxz_rel8_64)
}

/// The facts before instruction `k`: what holds after every instruction
/// that can reach it (the one before it if it falls through, and every
/// branch to it; a branch from further on, whose facts are not known yet,
/// knows nothing).
fn facts_before(
    insns: &[Instruction],
    k: usize,
    after: &[SoftFacts],
    sources: &[Vec<usize>],
) -> SoftFacts {
    if k == 0 {
        return SoftFacts::UNKNOWN;
    }
    let falls_through = matches!(
        insns[k - 1].flow_control(),
        FlowControl::Next | FlowControl::ConditionalBranch
    );
    let mut facts: Option<SoftFacts> = falls_through.then(|| after[k - 1]);
    for &s in &sources[k] {
        let f = if s < k {
            after[s].taken(&insns[s])
        } else {
            SoftFacts::UNKNOWN
        };
        facts = Some(facts.map_or(f, |g| g.meet(f)));
    }
    facts.unwrap_or(SoftFacts::UNKNOWN)
}

fn check_access(
    i: &Instruction,
    m: &UsedMemory,
    poll: u64,
    rebased: &[Register],
    facts: SoftFacts,
) -> Result<(), String> {
    let disp = m.displacement() as i64;
    let ok = match (m.base(), m.index()) {
        (Register::R15, Register::R12) => {
            // Loads only: the tables are the monitor's to write.
            i.code() == Code::Mov_r64_rm64
                && i.op0_kind() == iced_x86::OpKind::Register
                && m.access() == OpAccess::Read
                && soft_table(m.base(), m.index(), m.scale()).is_some()
                && match table_of(disp) {
                    // A tag: any 16-bit slot.
                    Some((_, false)) => facts.r12 == Fact::Low16,
                    // A frame: only of a slot whose tag was found filled.
                    Some((write, true)) => facts.r12 == Fact::Checked(write),
                    None => false,
                }
        }
        (Register::R12, Register::R11) if m.scale() == 1 && (0..SOFT_REACH).contains(&disp) => {
            let size = m.memory_size().size() as i64;
            !crate::translate::reaches_beyond_operand(i)
                && facts.r12 == Fact::SoftFrame
                && facts.r11 == Fact::Low16
                && ((1..=16).contains(&size) && disp + size <= SOFT_REACH
                    || crate::translate::wide_soft_access(i)
                        && disp == 0
                        && size == SOFT_WIDE_REACH)
        }
        (Register::R15, Register::None) => {
            (0..1 << 31).contains(&disp)
                || matches!(i.code(), Code::Jmp_rm64 | Code::Call_rm64)
                    && m.access() == OpAccess::Read
                    && chain_entry(disp)
        }
        // A jump table's key or branch entry (`Ctx::table_jump`): read
        // only, by `mov r64` or `jmp`, at an 8-bit entry number.
        (Register::R15, Register::R11) if m.scale() == 8 => {
            facts.r11 == Fact::Low8
                && m.access() == OpAccess::Read
                && matches!(i.code(), Code::Mov_r64_rm64 | Code::Jmp_rm64)
                && chain_entry(disp)
                && chain_entry(disp + 8 * (crate::translate::JUMP_TABLE_ENTRIES as i64 - 1))
        }
        (Register::R15, idx) => {
            is_window_index(idx)
                && (m.scale() == 1
                    && (disp.abs() <= MAX_WINDOW_DISP
                        || crate::translate::FOLDED_DISPLACEMENTS.contains(&disp))
                    || scaled_window_access(i, m.scale(), disp))
        }
        (Register::R14, Register::None) => {
            (0..std::mem::size_of::<CpuState>() as i64).contains(&disp)
                && !(m.access() != OpAccess::Read && monitor_field(disp))
        }
        // Reads near the top; writes only by the pushes and calls that
        // `check_host_stack` balances (what a host `ret` pops).
        (Register::RSP, Register::None) => {
            disp.abs() <= 16
                && (m.access() == OpAccess::Read
                    || matches!(
                        i.code(),
                        Code::Pushfq | Code::Push_r64 | Code::Call_rel32_64 | Code::Call_rm64
                    ))
        }
        (Register::R12, Register::R11) => {
            let table = crate::ibtc::TABLE_BYTES as i64;
            facts.r12 == Fact::TableSet
                && facts.r11 == Fact::TableIndex
                && m.scale() == 8
                && (disp % table == 0 || disp % table == 8)
                && in_table_set(disp)
        }
        // A constant target's own entry (`Ctx::indirect_constant`): its
        // key or its host address, read only.
        (Register::R12, Register::None) => {
            facts.r12 == Fact::TableSet
                && m.access() == OpAccess::Read
                && (disp % ENTRY_BYTES == 0 || disp % ENTRY_BYTES == 8)
                && in_table_set(disp)
        }
        (Register::R13, Register::None) => disp == 0,
        // iced-x86 reports RIP-relative operands as absolute addresses.
        (Register::RIP | Register::None, Register::None) => m.displacement() == poll,
        (Register::RSI | Register::RDI, Register::None) => {
            i.is_string_instruction()
                && disp == 0
                && (rebased.contains(&m.base())
                    || facts.pointer(m.base()) == Fact::SoftPointer
                        && matches!(facts.rcx, Fact::SmallCount | Fact::ShortCount)
                        // The element (with REP, iced-x86 gives the access
                        // no size).
                        && (1..=4).contains(&i.memory_size().size()))
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

/// Whether `[r15 + g*scale + disp]` of `i` is a folded `[index*scale +
/// disp]` (`Ctx::scaled_in_place`): scale 2, 4 or 8, `0 <= disp < 2 GiB`,
/// not a BT with a register bit offset. With `g` below 4 GiB it stays
/// below 34 GiB past the base, inside the guard after the window.
fn scaled_window_access(i: &Instruction, scale: u32, disp: i64) -> bool {
    const REACH: u64 = 8 * (1 << 32) + (1 << 31);
    const _: () = assert!(REACH <= (1 << 32) + shadowmmu::WINDOW_GUARD_AFTER as u64);
    matches!(scale, 2 | 4 | 8)
        && (0..1 << 31).contains(&disp)
        && !crate::translate::reaches_beyond_operand(i)
}

/// Whether `disp` (from the window's base) is an entry of the view's
/// chain table: host addresses only the monitor writes (a site's own exit
/// stub, or the translation of its target in that view; see
/// `shadowmmu::LinearWindow::set_chain_entry`).
fn chain_entry(disp: i64) -> bool {
    let table = shadowmmu::CHAIN_TABLE_OFFSET;
    let end = table + 8 * shadowmmu::CHAIN_SLOTS as i64;
    (table..end).contains(&disp) && (disp - table) % 8 == 0
}

/// Whether `i` is a host `call` translated code may make: direct, or
/// through a chain-table entry (see `check_flow`).
fn is_host_call(i: &Instruction) -> bool {
    matches!(i.code(), Code::Call_rel32_64 | Code::Call_rm64)
}

/// Whether `disp` in the state block falls on a field only the runtime
/// writes: the host RSP of the monitor and of an empty return-prediction
/// stack (a unit that wrote them would choose where a `ret` goes).
fn monitor_field(disp: i64) -> bool {
    use crate::state::off;
    [off::HOST_RSP, off::RSB_TOP]
        .iter()
        .any(|&f| (i64::from(f) - 7..i64::from(f) + 8).contains(&disp))
}

/// Whether `i` drops the unit's last host push: POPFQ, POP r64, or
/// `lea rsp, [rsp + 8]` (a saved RFLAGS given up without loading it).
fn is_pop_like(i: &Instruction) -> bool {
    matches!(i.code(), Code::Popfq | Code::Pop_r64)
        || i.code() == Code::Lea_r64_m
            && i.op0_register() == Register::RSP
            && i.memory_base() == Register::RSP
            && i.memory_index() == Register::None
            && i.memory_displacement64() == 8
}

/// Whether `i` is `mov rsp, [r14 + RSB_TOP]`: the return-prediction
/// stack started again from its top.
fn is_stack_reset(i: &Instruction) -> bool {
    i.code() == Code::Mov_r64_rm64
        && i.op0_register() == Register::RSP
        && i.memory_base() == Register::R14
        && i.memory_index() == Register::None
        && i.memory_displacement64() as i64 == i64::from(crate::state::off::RSB_TOP)
}

/// The host stack of a unit is balanced: its own pushes (PUSHFQ, PUSH
/// r64) are popped before it makes a host `call` or `ret`, resets the
/// return-prediction stack or leaves the unit, on every path, and nothing
/// else moves RSP. So the value a unit's `ret` pops was stored by a host
/// `call` (of this or another unit, whose continuation follows it) or is
/// the sentinel: never a value the guest chose. A `ret` is preceded by
/// `lea r10, [rip + d]` naming the instruction right after it, where the
/// sentinel continues. Returns the index of an offending instruction and
/// why.
fn check_host_stack(
    insns: &[Instruction],
    writes: &[Writes],
    base: u64,
    len: u64,
) -> Result<(), (usize, String)> {
    let inside = |target: u64| target >= base && target < base + len;
    let mut depth: Vec<Option<u32>> = vec![None; insns.len()];
    let mut work = vec![(0usize, 0u32)];
    while let Some((k, d)) = work.pop() {
        let Some(i) = insns.get(k) else {
            if d != 0 {
                return Err((k - 1, "the unit ends with host pushes not popped".into()));
            }
            continue;
        };
        match depth[k] {
            Some(seen) if seen == d => continue,
            Some(seen) => {
                return Err((
                    k,
                    format!("host stack depth {d} here on one path, {seen} on another"),
                ))
            }
            None => depth[k] = Some(d),
        }
        let must_be_empty = |why: &str| {
            if d == 0 {
                Ok(())
            } else {
                Err((k, format!("{why} with {d} host push(es) not popped")))
            }
        };
        match i.code() {
            // At most one: a push that faults on the return-prediction
            // stack's guard is then the unit's first, and the fault
            // handler may start the stack again under it.
            Code::Pushfq | Code::Push_r64 if d == 0 => work.push((k + 1, 1)),
            Code::Pushfq | Code::Push_r64 => {
                return Err((k, "a second host push before the first is popped".into()))
            }
            _ if is_pop_like(i) => {
                if d == 0 {
                    return Err((k, "a host pop of what the unit did not push".into()));
                }
                work.push((k + 1, d - 1));
            }
            Code::Call_rel32_64 => {
                must_be_empty("a host call")?;
                work.push((k + 1, 0));
                let target = i.near_branch_target();
                if inside(target) {
                    work.extend(index_at(insns, target).map(|t| (t, 0)));
                }
            }
            // Through a chain-table entry (`check_flow`): out of the unit.
            Code::Call_rm64 => {
                must_be_empty("a host call")?;
                work.push((k + 1, 0));
            }
            Code::Retnq => {
                must_be_empty("a host ret")?;
                let points_after = k > 0 && {
                    let lea = &insns[k - 1];
                    lea.code() == Code::Lea_r64_m
                        && lea.op0_register() == Register::R10
                        && lea.memory_base() == Register::RIP
                        && insns
                            .get(k + 1)
                            .is_some_and(|n| n.ip() == lea.memory_displacement64())
                };
                if !points_after {
                    return Err((
                        k,
                        "a host ret not preceded by lea r10 of what follows it".into(),
                    ));
                }
                work.push((k + 1, 0));
            }
            _ if is_stack_reset(i) => {
                must_be_empty("a return-stack reset")?;
                work.push((k + 1, 0));
            }
            _ => {
                if writes[k].rsp {
                    return Err((k, format!("RSP written ({i})")));
                }
                match i.flow_control() {
                    FlowControl::Next => work.push((k + 1, d)),
                    _ if is_direct_jump(i) => {
                        let target = i.near_branch_target();
                        if inside(target) {
                            work.extend(index_at(insns, target).map(|t| (t, d)));
                        } else {
                            must_be_empty("a jump out of the unit")?;
                        }
                        if i.flow_control() == FlowControl::ConditionalBranch {
                            work.push((k + 1, d));
                        }
                    }
                    _ => must_be_empty("an indirect jump")?,
                }
            }
        }
    }
    Ok(())
}

/// A `jmp r10` is a continuation's jump to the lookup of the `ret` that
/// returned to it: on every path to it within the unit, R10 is unchanged
/// since the instruction after a host `call` (which only a host `ret`
/// reaches, and every `ret` sets R10 to its lookup right before, see
/// `check_host_stack`). Returns the index of an offending jump.
fn check_ret_lookups(
    insns: &[Instruction],
    writes: &[Writes],
    base: u64,
    len: u64,
) -> Result<(), usize> {
    // Per instruction: R10 holds the lookup of the ret that returned here
    // (Some(true)), something else (Some(false)), not reached yet (None).
    let mut holds: Vec<Option<bool>> = vec![None; insns.len()];
    let mut work = vec![(0usize, false)];
    for (k, i) in insns.iter().enumerate() {
        if is_host_call(i) && k + 1 < insns.len() {
            work.push((k + 1, true));
        }
    }
    while let Some((k, lookup)) = work.pop() {
        let Some(i) = insns.get(k) else { continue };
        let merged = match holds[k] {
            Some(seen) if seen == (seen && lookup) => continue,
            Some(seen) => seen && lookup,
            None => lookup,
        };
        holds[k] = Some(merged);
        if i.code() == Code::Jmp_rm64 && i.op0_kind() == iced_x86::OpKind::Register && !merged {
            return Err(k);
        }
        let after = merged && !writes[k].r10;
        match i.flow_control() {
            FlowControl::Next => work.push((k + 1, after)),
            _ if is_direct_jump(i) => {
                let target = i.near_branch_target();
                if target >= base && target < base + len {
                    work.extend(index_at(insns, target).map(|t| (t, after)));
                }
                if i.flow_control() == FlowControl::ConditionalBranch {
                    work.push((k + 1, after));
                }
            }
            // A call's own return point was seeded above; its in-unit
            // target starts with nothing known.
            FlowControl::Call => {
                let target = i.near_branch_target();
                if target >= base && target < base + len {
                    work.extend(index_at(insns, target).map(|t| (t, false)));
                }
            }
            // What follows a ret is entered by the sentinel's jmp r10.
            FlowControl::Return => work.push((k + 1, false)),
            _ => {}
        }
    }
    Ok(())
}

fn check_flow(i: &Instruction) -> Result<(), String> {
    match i.flow_control() {
        FlowControl::Next => Ok(()),
        // The branches the emitter makes (LOOP and its kind are not among
        // them; `branch_sources` sees every one of these).
        FlowControl::UnconditionalBranch if i.is_jmp_short_or_near() => Ok(()),
        FlowControl::ConditionalBranch if i.is_jcc_short_or_near() || is_jrcxz(i) => Ok(()),
        // Through an indirect-branch table entry (`check_access` holds the
        // operand to the table set); a constant target's entry only
        // through its host-address half.
        FlowControl::IndirectBranch
            if i.code() == Code::Jmp_rm64
                && i.memory_base() == Register::R12
                && (i.memory_index() == Register::R11
                    || i.memory_index() == Register::None
                        && i.memory_displacement64() as i64 % ENTRY_BYTES == 8) =>
        {
            Ok(())
        }
        // Through the view's chain table (`check_access` holds the operand
        // to one of its entries, or to a jump table's in it).
        FlowControl::IndirectBranch
            if i.code() == Code::Jmp_rm64
                && i.memory_base() == Register::R15
                && (i.memory_index() == Register::None
                    || i.memory_index() == Register::R11 && i.memory_index_scale() == 8)
                && chain_entry(i.memory_displacement64() as i64) =>
        {
            Ok(())
        }
        // Predicted calls and returns (see `check_host_stack`), direct or
        // through the view's chain table, and a continuation's jump to its
        // ret's lookup (see `check_ret_lookups`).
        FlowControl::Call if i.code() == Code::Call_rel32_64 => Ok(()),
        FlowControl::IndirectCall
            if i.code() == Code::Call_rm64
                && i.memory_base() == Register::R15
                && i.memory_index() == Register::None
                && chain_entry(i.memory_displacement64() as i64) =>
        {
            Ok(())
        }
        // A predicted indirect call through an indirect-branch table
        // entry's host address (`check_access` holds the operand to the
        // table set).
        FlowControl::IndirectCall
            if i.code() == Code::Call_rm64
                && i.memory_base() == Register::R12
                && i.memory_index() == Register::R11 =>
        {
            Ok(())
        }
        FlowControl::IndirectBranch
            if i.code() == Code::Jmp_rm64
                && i.op0_kind() == iced_x86::OpKind::Register
                && i.op0_register() == Register::R10 =>
        {
            Ok(())
        }
        FlowControl::Return if i.code() == Code::Retnq => Ok(()),
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
    fn folded_displacements_pass_only_within_the_guards_and_clear_of_the_software_tlb() {
        use iced_x86::code_asm::*;
        let passes = |d: i32| {
            let code = assemble(|a| {
                a.mov(dword_ptr(r15 + rbp + d), edx).unwrap();
            });
            check_unit(&code, BASE, POLL).is_ok()
        };
        assert!(passes(-0x2c));
        assert!(passes(0x7fff_ffff));
        assert!(passes(-(1 << 29)));
        // Reaching towards the software TLB at 1 GiB below the window.
        assert!(!passes(-(1 << 29) - 1));
        assert!(!passes(-0x4000_0000));
        let absolute = |d: i32| {
            let code = assemble(|a| {
                a.mov(eax, dword_ptr(r15 + d)).unwrap();
            });
            check_unit(&code, BASE, POLL).is_ok()
        };
        assert!(absolute(0x0804_a000));
        assert!(!absolute(-4));
        let scaled = |scale: i32, d: i32| {
            let code = assemble(|a| {
                let index = match scale {
                    2 => rsi * 2,
                    4 => rsi * 4,
                    _ => rsi * 8,
                };
                a.mov(eax, dword_ptr(r15 + index + d)).unwrap();
            });
            check_unit(&code, BASE, POLL).is_ok()
        };
        assert!(scaled(8, 0x7fff_ffff));
        assert!(scaled(4, 0));
        assert!(scaled(2, 0x1000));
        // Below the window: a negative displacement is never scaled.
        assert!(!scaled(4, -4));
        // A BT with a register bit offset reaches 256 MiB around it.
        let code = assemble(|a| {
            a.bt(dword_ptr(r15 + rsi * 4 + 0x1000), eax).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn only_a_jump_or_call_through_an_entry_of_the_chain_table_passes() {
        use iced_x86::code_asm::*;
        let table = shadowmmu::CHAIN_TABLE_OFFSET as i32;
        let check = |f: &dyn Fn(&mut CodeAssembler)| {
            let code = assemble(|a| f(a));
            check_unit(&code, BASE, POLL).is_ok()
        };
        assert!(check(&|a| a.jmp(qword_ptr(r15 + table + 8 * 5)).unwrap()));
        assert!(check(&|a| a.call(qword_ptr(r15 + table + 8 * 5)).unwrap()));
        // Not an entry's start, past the table, or anything but the jump.
        assert!(!check(&|a| a
            .jmp(qword_ptr(r15 + table + 8 * 5 + 4))
            .unwrap()));
        let past = table + 8 * shadowmmu::CHAIN_SLOTS as i32;
        assert!(!check(&|a| a.jmp(qword_ptr(r15 + past)).unwrap()));
        assert!(!check(&|a| a.mov(rax, qword_ptr(r15 + table)).unwrap()));
        assert!(!check(&|a| a.mov(qword_ptr(r15 + table), rax).unwrap()));
        assert!(!check(&|a| a.call(qword_ptr(r15 + table + 4)).unwrap()));
        assert!(!check(&|a| a.call(qword_ptr(r15 + past)).unwrap()));
        assert!(!check(&|a| a.call(qword_ptr(r14 + table)).unwrap()));
        assert!(!check(&|a| a.jmp(qword_ptr(r14 + table)).unwrap()));
    }

    #[test]
    fn a_jump_table_reads_and_jumps_through_the_chain_table_only_at_an_8_bit_entry_number() {
        use iced_x86::code_asm::*;
        let table = shadowmmu::CHAIN_TABLE_OFFSET as i32;
        let last = table + 8 * (shadowmmu::CHAIN_SLOTS as i32 - 256);
        let check = |index: &dyn Fn(&mut CodeAssembler), at: i32, call: bool| {
            let code = assemble(|a| {
                index(a);
                a.mov(rcx, qword_ptr(r15 + r11 * 8 + at + 8 * 256)).unwrap();
                if call {
                    a.call(qword_ptr(r15 + r11 * 8 + at)).unwrap();
                } else {
                    a.jmp(qword_ptr(r15 + r11 * 8 + at)).unwrap();
                }
            });
            check_unit(&code, BASE, POLL).is_ok()
        };
        let low8 = |a: &mut CodeAssembler| a.movzx(r11d, cl).unwrap();
        assert!(check(&low8, table, false));
        assert!(check(
            &|a| a.movzx(r11d, sil).unwrap(),
            table + 8 * 40,
            false
        ));
        // The last 256 entries: the keys would lie past the table.
        assert!(!check(&low8, last, false));
        assert!(check(&low8, last - 8 * 256, false));
        // A 16-bit or a changed entry number, a call, a misaligned entry.
        assert!(!check(&|a| a.movzx(r11d, cx).unwrap(), table, false));
        let changed = |a: &mut CodeAssembler| {
            a.movzx(r11d, cl).unwrap();
            a.lea(r11d, ptr(r11 + 1)).unwrap();
        };
        assert!(!check(&changed, table, false));
        assert!(!check(&low8, table, true));
        assert!(!check(&low8, table + 4, false));
        // Never a write.
        let code = assemble(|a| {
            a.movzx(r11d, cl).unwrap();
            a.mov(qword_ptr(r15 + r11 * 8 + table), rcx).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
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
    fn host_calls_and_returns_other_than_predicted_ones_are_violations() {
        use iced_x86::code_asm::*;
        for code in [
            // A ret without the lea of its lookup.
            assemble(|a| a.ret().unwrap()),
            assemble(|a| a.call(rax).unwrap()),
            assemble(|a| a.jmp(rax).unwrap()),
        ] {
            assert!(check_unit(&code, BASE, POLL).is_err());
        }
    }

    #[test]
    fn a_predicted_call_and_ret_pass() {
        use iced_x86::code_asm::*;
        let code = assemble(|a| {
            let mut lookup = a.create_label();
            a.call(0x1000u64).unwrap();
            a.mov(r11, rcx).unwrap();
            a.lea(r10, qword_ptr(lookup)).unwrap();
            a.ret().unwrap();
            a.set_label(&mut lookup).unwrap();
            a.jmp(0x1000u64).unwrap();
        });
        assert_eq!(check_unit(&code, BASE, POLL), Ok(()));
    }

    #[test]
    fn a_ret_or_call_over_the_units_own_push_is_a_violation() {
        use iced_x86::code_asm::*;
        let ret_over_push = assemble(|a| {
            let mut lookup = a.create_label();
            a.pushfq().unwrap();
            a.lea(r10, qword_ptr(lookup)).unwrap();
            a.ret().unwrap();
            a.set_label(&mut lookup).unwrap();
            a.jmp(0x1000u64).unwrap();
        });
        let call_over_push = assemble(|a| {
            a.push(rax).unwrap();
            a.call(0x1000u64).unwrap();
        });
        let leave_with_push = assemble(|a| {
            a.pushfq().unwrap();
            a.jmp(0x1000u64).unwrap();
        });
        let two_pushes = assemble(|a| {
            a.pushfq().unwrap();
            a.pushfq().unwrap();
            a.popfq().unwrap();
            a.popfq().unwrap();
        });
        let unbalanced_paths = assemble(|a| {
            let mut join = a.create_label();
            a.jrcxz(join).unwrap();
            a.pushfq().unwrap();
            a.set_label(&mut join).unwrap();
            a.popfq().unwrap();
        });
        for code in [
            ret_over_push,
            call_over_push,
            leave_with_push,
            two_pushes,
            unbalanced_paths,
        ] {
            assert!(check_unit(&code, BASE, POLL).is_err());
        }
    }

    #[test]
    fn only_pushes_write_the_host_stack_and_only_they_move_rsp() {
        use iced_x86::code_asm::*;
        let balanced = assemble(|a| {
            a.pushfq().unwrap();
            a.test(byte_ptr(rsp + 1), 4).unwrap();
            a.lea(rsp, qword_ptr(rsp + 8)).unwrap();
            a.mov(rsp, qword_ptr(r14 + crate::state::off::RSB_TOP))
                .unwrap();
        });
        assert_eq!(check_unit(&balanced, BASE, POLL), Ok(()));
        for code in [
            assemble(|a| a.mov(qword_ptr(rsp), rax).unwrap()),
            assemble(|a| a.mov(rsp, rax).unwrap()),
            assemble(|a| a.add(rsp, 8).unwrap()),
            assemble(|a| {
                a.mov(qword_ptr(r14 + crate::state::off::RSB_TOP), rax)
                    .unwrap()
            }),
            assemble(|a| {
                a.mov(qword_ptr(r14 + crate::state::off::HOST_RSP), rax)
                    .unwrap()
            }),
        ] {
            assert!(check_unit(&code, BASE, POLL).is_err());
        }
    }

    /// The software-TLB probe as the translator emits it, then `tail`.
    fn soft_probe(
        a: &mut iced_x86::code_asm::CodeAssembler,
        tail: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler),
    ) {
        use iced_x86::code_asm::*;
        let tags = shadowmmu::SOFT_READ_TAGS as i32;
        let frames = shadowmmu::SOFT_READ_FRAMES as i32;
        let mut hit = a.create_label();
        a.mov(r9d, 12u32).unwrap();
        a.lea(r11d, dword_ptr(r10 + 3)).unwrap();
        a.shrx(r11d, r11d, r9d).unwrap();
        a.shrx(r9d, r10d, r9d).unwrap();
        a.movzx(r12d, r9w).unwrap();
        a.mov(r13, rcx).unwrap();
        a.mov(rcx, qword_ptr(r15 + r12 * 8 + tags)).unwrap();
        a.lea(rcx, qword_ptr(rcx + r11 + 1)).unwrap();
        a.jrcxz(hit).unwrap();
        a.mov(rcx, r13).unwrap();
        a.mov(dword_ptr(r14 + 0x20), 8u32).unwrap();
        a.jmp(0x1000u64).unwrap();
        a.set_label(&mut hit).unwrap();
        a.mov(rcx, r13).unwrap();
        a.mov(r12, qword_ptr(r15 + r12 * 8 + frames)).unwrap();
        a.movzx(r11d, r10w).unwrap();
        tail(a);
    }

    #[test]
    fn a_software_tlb_access_after_the_probe_passes() {
        use iced_x86::code_asm::*;
        let code = assemble(|a| {
            soft_probe(a, |a| {
                a.add(dword_ptr(r12 + r11), eax).unwrap();
            })
        });
        assert_eq!(check_unit(&code, BASE, POLL), Ok(()));
    }

    #[test]
    fn a_software_tlb_access_reaches_32_bytes_past_its_address_and_no_further() {
        use iced_x86::code_asm::*;
        let with = |tail: fn(&mut CodeAssembler)| assemble(|a| soft_probe(a, tail));
        // PUSHAD's and POPAD's frame: 28 + 4 bytes.
        assert_eq!(
            check_unit(
                &with(|a| a.mov(dword_ptr(r12 + r11 + 28), eax).unwrap()),
                BASE,
                POLL
            ),
            Ok(())
        );
        for tail in [
            (|a: &mut CodeAssembler| a.mov(dword_ptr(r12 + r11 + 29), eax).unwrap())
                as fn(&mut CodeAssembler),
            |a| a.mov(eax, dword_ptr(r12 + r11 + 32)).unwrap(),
            |a| a.mov(eax, dword_ptr(r12 + r11 - 4)).unwrap(),
        ] {
            assert!(check_unit(&with(tail), BASE, POLL).is_err());
        }
    }

    #[test]
    fn only_fxsave_and_fxrstor_reach_512_bytes_past_a_software_tlb_address() {
        use iced_x86::code_asm::*;
        let with = |tail: fn(&mut CodeAssembler)| assemble(|a| soft_probe(a, tail));
        for tail in [
            (|a: &mut CodeAssembler| a.fxsave(ptr(r12 + r11)).unwrap()) as fn(&mut CodeAssembler),
            |a| a.fxrstor(ptr(r12 + r11)).unwrap(),
        ] {
            assert_eq!(check_unit(&with(tail), BASE, POLL), Ok(()));
        }
        for tail in [
            // A displacement on top of the 512 bytes.
            (|a: &mut CodeAssembler| a.fxsave(ptr(r12 + r11 + 16)).unwrap())
                as fn(&mut CodeAssembler),
            // Other wide accesses: XSAVE's area has no fixed size.
            |a| a.xsave(ptr(r12 + r11)).unwrap(),
        ] {
            assert!(check_unit(&with(tail), BASE, POLL).is_err());
        }
        // Without the probe's facts, not even FXSAVE.
        let bare = assemble(|a| a.fxsave(ptr(r12 + r11)).unwrap());
        assert!(check_unit(&bare, BASE, POLL).is_err());
    }

    #[test]
    fn a_software_tlb_access_whose_registers_another_path_sets_is_a_violation() {
        use iced_x86::code_asm::*;
        // A jump past the probe's frame load, with R12 holding anything.
        let code = assemble(|a| {
            let mut access = a.create_label();
            a.mov(r12, rax).unwrap();
            a.movzx(r11d, r10w).unwrap();
            a.je(access).unwrap();
            soft_probe(a, |a| {
                a.set_label(&mut access).unwrap();
                a.mov(eax, dword_ptr(r12 + r11)).unwrap();
            })
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn a_software_tlb_access_with_a_wide_offset_or_out_of_the_tables_is_a_violation() {
        use iced_x86::code_asm::*;
        let code = assemble(|a| {
            soft_probe(a, |a| {
                a.mov(r11d, r10d).unwrap();
                a.mov(eax, dword_ptr(r12 + r11)).unwrap();
            })
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
        let code = assemble(|a| {
            a.movzx(r12d, r9w).unwrap();
            a.mov(rax, qword_ptr(r15 + r12 * 8 + 0x1000)).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
        let code = assemble(|a| {
            a.mov(r12, rax).unwrap();
            let tags = shadowmmu::SOFT_READ_TAGS as i32;
            a.mov(rax, qword_ptr(r15 + r12 * 8 + tags)).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn a_bit_string_access_through_the_software_tlb_is_a_violation() {
        use iced_x86::code_asm::*;
        // BTS with a register bit offset reaches 256 MiB around its operand.
        let code = assemble(|a| {
            soft_probe(a, |a| {
                a.bts(dword_ptr(r12 + r11), eax).unwrap();
            })
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
        // With an immediate offset it stays within its dword.
        let code = assemble(|a| {
            soft_probe(a, |a| {
                a.bts(dword_ptr(r12 + r11), 5).unwrap();
            })
        });
        assert_eq!(check_unit(&code, BASE, POLL), Ok(()));
    }

    #[test]
    fn a_store_into_the_software_tlb_is_a_violation() {
        use iced_x86::code_asm::*;
        let frames = shadowmmu::SOFT_READ_FRAMES as i32;
        let code = assemble(|a| {
            a.movzx(r12d, r9w).unwrap();
            a.mov(qword_ptr(r15 + r12 * 8 + frames), rax).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn a_jump_into_the_middle_of_an_instruction_is_a_violation() {
        // jmp +2 lands inside `mov r9d, imm32`, whose immediate decodes as
        // `mov eax, [rbx]`.
        let code = [0xeb, 0x02, 0x41, 0xb9, 0x8b, 0x03, 0x90, 0x90];
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn a_loop_instruction_is_a_violation() {
        let code = assemble(|a| {
            let mut top = a.create_label();
            a.set_label(&mut top).unwrap();
            a.nop().unwrap();
            a.loop_(top).unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn a_software_tlb_string_chunk_passes_and_an_unbounded_one_is_a_violation() {
        use iced_x86::code_asm::*;
        let chunk = |bound: bool| {
            assemble(|a| {
                soft_probe(a, |a| {
                    a.lea(rdi, qword_ptr(r12 + r11)).unwrap();
                    a.mov(ecx, r9d).unwrap();
                    if bound {
                        a.and(ecx, 0x1fff).unwrap();
                    }
                    a.rep().stosd().unwrap();
                })
            })
        };
        assert_eq!(check_unit(&chunk(true), BASE, POLL), Ok(()));
        assert!(check_unit(&chunk(false), BASE, POLL).is_err());
    }

    #[test]
    fn a_software_tlb_copy_bounded_to_16_bits_passes_and_one_bounded_otherwise_does_not() {
        use iced_x86::code_asm::*;
        // `movzx ecx, cx`: at most 65,535 elements of 4 bytes, 256 KiB,
        // inside the guards; a count written after it is unbounded again.
        let copy = |grown: bool| {
            assemble(|a| {
                soft_probe(a, |a| {
                    a.lea(rdi, qword_ptr(r12 + r11)).unwrap();
                    a.movzx(ecx, cx).unwrap();
                    if grown {
                        a.add(ecx, r9d).unwrap();
                    }
                    a.rep().stosd().unwrap();
                })
            })
        };
        assert_eq!(check_unit(&copy(false), BASE, POLL), Ok(()));
        assert!(check_unit(&copy(true), BASE, POLL).is_err());
    }

    #[test]
    fn a_frame_loaded_without_its_tag_found_filled_is_a_violation() {
        use iced_x86::code_asm::*;
        let tags = shadowmmu::SOFT_READ_TAGS as i32;
        let frames = shadowmmu::SOFT_READ_FRAMES as i32;
        let write_frames = shadowmmu::SOFT_WRITE_FRAMES as i32;
        let access = |a: &mut CodeAssembler| {
            a.movzx(r11d, r10w).unwrap();
            a.mov(eax, dword_ptr(r12 + r11)).unwrap();
        };
        // No tag check at all: an empty slot's frame value is 0.
        let code = assemble(|a| {
            a.movzx(r12d, r9w).unwrap();
            a.mov(r12, qword_ptr(r15 + r12 * 8 + frames)).unwrap();
            access(a);
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
        // The read tag checked against R11 (32 or 64 bits), then a frame.
        let checked = |wide_r11: bool, frame_table: i32| {
            assemble(|a| {
                let mut hit = a.create_label();
                if wide_r11 {
                    a.mov(r11, rax).unwrap();
                } else {
                    a.mov(r11d, r10d).unwrap();
                }
                a.movzx(r12d, r9w).unwrap();
                a.mov(rcx, qword_ptr(r15 + r12 * 8 + tags)).unwrap();
                a.lea(rcx, qword_ptr(rcx + r11 + 1)).unwrap();
                a.jrcxz(hit).unwrap();
                a.jmp(0x1000u64).unwrap();
                a.set_label(&mut hit).unwrap();
                a.mov(r12, qword_ptr(r15 + r12 * 8 + frame_table)).unwrap();
                access(a);
            })
        };
        assert_eq!(check_unit(&checked(false, frames), BASE, POLL), Ok(()));
        // The write table's frame after the read table's tag.
        assert!(check_unit(&checked(false, write_frames), BASE, POLL).is_err());
        // A 64-bit R11 (all ones matches an empty slot's tag of 0).
        assert!(check_unit(&checked(true, frames), BASE, POLL).is_err());
        // The fall-through edge of the check (a miss) proves nothing.
        let code = assemble(|a| {
            let mut miss = a.create_label();
            a.mov(r11d, r10d).unwrap();
            a.movzx(r12d, r9w).unwrap();
            a.mov(rcx, qword_ptr(r15 + r12 * 8 + tags)).unwrap();
            a.lea(rcx, qword_ptr(rcx + r11 + 1)).unwrap();
            a.jrcxz(miss).unwrap();
            a.mov(r12, qword_ptr(r15 + r12 * 8 + frames)).unwrap();
            access(a);
            a.set_label(&mut miss).unwrap();
            a.nop().unwrap();
        });
        assert!(check_unit(&code, BASE, POLL).is_err());
    }

    #[test]
    fn an_indirect_branch_or_call_through_the_table_needs_the_table_set_and_a_table_index() {
        use iced_x86::code_asm::*;
        let set = crate::state::off::IBTC;
        // A predicted indirect call goes through the entry the same way.
        let probe_then = |base_ok: bool, index_ok: bool, call: bool| {
            assemble(|a| {
                a.movzx(r11d, r9w).unwrap();
                if index_ok {
                    a.lea(r11d, dword_ptr(r11 + r11)).unwrap();
                } else {
                    a.mov(r11, rax).unwrap();
                }
                if base_ok {
                    a.mov(r12, qword_ptr(r14 + set)).unwrap();
                } else {
                    a.mov(r12, rax).unwrap();
                }
                a.mov(ecx, dword_ptr(r12 + r11 * 8)).unwrap();
                if call {
                    a.call(qword_ptr(r12 + r11 * 8 + 8)).unwrap();
                    a.jmp(0x1000u64).unwrap();
                } else {
                    a.jmp(qword_ptr(r12 + r11 * 8 + 8)).unwrap();
                }
            })
        };
        let probe = |base_ok: bool, index_ok: bool| probe_then(base_ok, index_ok, false);
        assert_eq!(check_unit(&probe(true, true), BASE, POLL), Ok(()));
        assert!(check_unit(&probe(false, true), BASE, POLL).is_err());
        assert!(check_unit(&probe(true, false), BASE, POLL).is_err());
        assert_eq!(
            check_unit(&probe_then(true, true, true), BASE, POLL),
            Ok(())
        );
        assert!(check_unit(&probe_then(false, true, true), BASE, POLL).is_err());
        assert!(check_unit(&probe_then(true, false, true), BASE, POLL).is_err());
    }

    #[test]
    fn a_constant_targets_entry_is_read_from_the_table_set_and_jumped_through_its_host_half() {
        use iced_x86::code_asm::*;
        let set = crate::state::off::IBTC;
        let entry = 0x1234 * 16 + crate::ibtc::TABLE_BYTES as i32;
        let probe = |base_ok: bool, jump_at: i32| {
            assemble(|a| {
                if base_ok {
                    a.mov(r12, qword_ptr(r14 + set)).unwrap();
                } else {
                    a.mov(r12, rax).unwrap();
                }
                a.mov(ecx, dword_ptr(r12 + entry)).unwrap();
                a.jmp(qword_ptr(r12 + jump_at)).unwrap();
            })
        };
        assert_eq!(check_unit(&probe(true, entry + 8), BASE, POLL), Ok(()));
        assert!(check_unit(&probe(false, entry + 8), BASE, POLL).is_err());
        assert!(
            check_unit(&probe(true, entry), BASE, POLL).is_err(),
            "a jump through the key half"
        );
        let past_the_set = crate::ibtc::TAGS as i32 * crate::ibtc::TABLE_BYTES as i32 + 8;
        assert!(check_unit(&probe(true, past_the_set), BASE, POLL).is_err());
    }
}
