//! INT n and IRET carried out in translated code, as the monitor worked
//! them out for the current system state (see `InlineEvent`).
//!
//! Invariants of the emitted sequences:
//! * Three phases. First every read that can fault (through the
//!   supervisor view: the gate, descriptors, SS0, TSS.ESP0, the IRET
//!   frame), with values that must be compared spilled to
//!   `CpuState::spill`; then, with the guest's flags saved by PUSHFQ and
//!   no access that can fault, the comparisons against the values the
//!   monitor saw; then the frame stores, which can fault. Nothing of the
//!   guest state (registers, flags, the state block's guest fields, R15's
//!   counterpart `CpuState::window`) is written before the last access that
//!   can fault, and every instruction of the sequence carries
//!   `fixup::REDO_IN_MONITOR`: a host fault anywhere in it makes the
//!   monitor carry the instruction out instead, with every check.
//! * A comparison that fails leaves to the monitor the same way, with the
//!   guest's flags restored: the monitor raises what the SDM says.
//! * The outcome's segments, CPL and mode are the monitor's own result for
//!   the values compared; it applies them at the next exit (the
//!   `CpuState::transition` record), as for SYSENTER.

use super::{fixup, Ctx, InlineTransition};
use crate::emit::mem;
use crate::i2;
use crate::state::{off, Seg, LIVE_FLAGS};
use crate::TranslateError;
use iced_x86::{Code, Instruction, Register};

/// A guest-linear read the monitor made while working an event out, and
/// the value it read: emitted code reads it again (through the supervisor
/// view) and leaves to the monitor unless it is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCheck {
    /// Guest-linear address.
    pub lin: u32,
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    /// The value read (zero-extended).
    pub value: u64,
}

/// At most this many checks per event (the spill slots left).
pub const MAX_CHECKS: usize = 5;

/// A delivery through a 32-bit interrupt or trap gate to ring 0, as
/// translated code may carry it out: INT n, or the #GP(0) of an instruction
/// that always raises it outside ring 0 (HLT, MOV to or from a control
/// register, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineInt {
    /// The vector (INT n's immediate, or the exception's).
    pub vector: u8,
    /// INT n (else the exception of the unit's first instruction).
    pub software: bool,
    /// The error code pushed after the return EIP (exceptions with one).
    pub error_code: Option<u32>,
    /// The EIP pushed: after INT n, the faulting instruction's for an
    /// exception.
    pub return_eip: u32,
    /// Gate, code segment descriptor, SS0 and stack segment descriptor.
    pub checks: Vec<ReadCheck>,
    /// Where TSS.ESP0 is read (a stack switch from ring 3), or `None`
    /// (a gate to the current level: the frame goes on the current stack).
    pub esp0_at: Option<u32>,
    /// An interrupt gate (IF cleared), not a trap gate.
    pub clears_if: bool,
    /// The handler's EIP, segments, mode, tag and view.
    pub to: InlineTransition,
    /// `CpuState::tables_gen` when the monitor worked it out.
    pub tables_gen: u32,
    /// The `CpuState::transition` record of its outcome.
    pub record: u32,
    /// The supervisor view (an index of `CpuState::view_bases`).
    pub supervisor_view: u32,
}

/// Where a 32-bit IRET at CPL 0 may return inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IretTarget {
    /// The CS and SS selectors the frame must hold (SS only for a return
    /// to ring 3).
    pub selectors: [u16; 2],
    /// The segments, mode, tag and view it returns to (EIP comes from the
    /// frame).
    pub to: InlineTransition,
    /// The `CpuState::transition` record of its outcome.
    pub record: u32,
}

/// A 32-bit IRET at CPL 0 to ring 3 or to ring 0, as translated code may
/// carry it out: the popped CS picks the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineIret {
    /// The descriptors of the code and stack segments of both targets.
    pub checks: Vec<ReadCheck>,
    /// The return to ring 3 (ESP and SS popped too).
    pub outer: Option<IretTarget>,
    /// The return to ring 0.
    pub same: Option<IretTarget>,
    /// `CpuState::tables_gen` when the monitor worked it out.
    pub tables_gen: u32,
}

/// An INT n or IRET the monitor offers to translated code: only for the
/// first instruction of a unit (the translator starts a new unit at every
/// INT n and IRET when asked, see `UnitRequest::split_events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InlineEvent {
    /// INT n.
    Int(InlineInt),
    /// IRETD.
    Iret(InlineIret),
}

/// Whether `i` starts a unit of its own when the translator splits events
/// (see `UnitRequest::split_events`): INT n, IRETD, and outside ring 0 the
/// instructions that always raise #GP(0) there.
pub fn starts_own_unit(i: &Instruction, cpl0: bool) -> bool {
    matches!(i.code(), Code::Int_imm8 | Code::Iretd) || (!cpl0 && gp_outside_ring0(i))
}

/// Instructions without a memory operand or LOCK prefix that raise #GP(0)
/// at any CPL but 0 before anything else (SDM vol. 2: HLT, CLTS, INVD,
/// WBINVD, RDMSR, WRMSR, MOV to and from control and debug registers).
pub fn gp_outside_ring0(i: &Instruction) -> bool {
    !i.has_lock_prefix()
        && matches!(
            i.code(),
            Code::Hlt
                | Code::Clts
                | Code::Invd
                | Code::Wbinvd
                | Code::Rdmsr
                | Code::Wrmsr
                | Code::Mov_r32_cr
                | Code::Mov_cr_r32
                | Code::Mov_r32_dr
                | Code::Mov_dr_r32
        )
}

const EFLAGS_TF: u32 = 0x100;
const EFLAGS_IF: u32 = 0x200;
const EFLAGS_NT: u32 = 0x4000;
const EFLAGS_RF: u32 = 0x1_0000;
const EFLAGS_VM: u32 = 0x2_0000;
const EFLAGS_AC: u32 = 0x4_0000;
/// What IRET at CPL 0 with a 32-bit operand loads from the frame (all
/// but VM and the reserved bits).
const IRET_LOADS: u32 = 0x003d_7fd5;
/// The spill slot of the EFLAGS an inline INT leaves.
const EFLAGS_SLOT: usize = MAX_CHECKS;
/// The spill slot of the CS an inline IRET popped.
const CS_SLOT: usize = MAX_CHECKS;

/// The bytes a delivery pushes.
fn int_frame_size(x: &InlineInt) -> i64 {
    let stack_switch = if x.esp0_at.is_some() { 8 } else { 0 };
    let error_code = if x.error_code.is_some() { 4 } else { 0 };
    12 + stack_switch + error_code
}

impl Ctx<'_> {
    /// The event the monitor offered for `i`, carried out inline:
    /// `Some(ends_unit)` if it was.
    pub(super) fn inline_event(&mut self, i: &Instruction) -> Result<Option<bool>, TranslateError> {
        let Some(event) = self.req.event else {
            return Ok(None);
        };
        if i.ip32() != self.req.eip || self.req.max_insns == 1 {
            return Ok(None);
        }
        match (event, i.code()) {
            (InlineEvent::Int(x), Code::Int_imm8) if x.software && i.immediate8() == x.vector => {
                self.fixup = fixup::REDO_IN_MONITOR;
                self.poll()?;
                self.inline_int(x, i, x.return_eip).map(Some)
            }
            (InlineEvent::Int(x), _)
                if !x.software && !self.req.mode.cpl0 && gp_outside_ring0(i) =>
            {
                self.fixup = fixup::REDO_IN_MONITOR;
                self.poll()?;
                self.inline_int(x, i, i.ip32()).map(Some)
            }
            (InlineEvent::Iret(x), Code::Iretd) if self.req.mode.cpl0 => {
                self.inline_iret(x, i).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The delivery `x` for instruction `i`, pushing `return_eip` (the
    /// caller polls first: the chained jump to the handler is a direct
    /// branch that may close a cycle of units, and the privilege change
    /// empties the return-prediction stack, whose overflow bounds cycles
    /// through calls; a poll fault stops before the event); a host
    /// fault in it must be mapped to `fixup::REDO_IN_MONITOR` (or, for
    /// #DE, `fixup::DIVIDE_ERROR_IN_MONITOR`) by the caller. A failed check
    /// hands the instruction to the monitor, or for an exception the
    /// monitor does not carry out by running the instruction (#DE), raises
    /// it through a `Raise` exit.
    pub(super) fn inline_int(
        &mut self,
        x: &InlineInt,
        i: &Instruction,
        return_eip: u32,
    ) -> Result<bool, TranslateError> {
        let bail = self.e.label();
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R15,
            state(off::VIEW_BASES + 8 * x.supervisor_view as i32)
        )?)?;
        self.load_checks(&x.checks)?;
        let frame_top = if let Some(at) = x.esp0_at {
            self.ins(i2!(Code::Mov_r32_imm32, Register::R10D, at)?)?;
            self.ins(i2!(
                Code::Mov_r32_rm32,
                Register::R10D,
                window(Register::R10, 0)
            )?)?;
            Register::R10
        } else {
            Register::R8
        };
        self.ins(Instruction::with(Code::Pushfq))?;
        self.compare_tables_gen(x.tables_gen, bail)?;
        self.compare_checks(&x.checks, Register::R11, bail)?;
        self.eflags_image_into_r11()?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, state(off::EFLAGS))?)?;
        self.ins(i2!(
            Code::And_rm32_imm32,
            Register::R9D,
            !(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
        )?)?;
        self.ins(i2!(
            Code::Mov_rm64_r64,
            state(off::SPILL + 8 * EFLAGS_SLOT as i32),
            Register::R9
        )?)?;
        self.ins(Instruction::with(Code::Popfq))?;
        self.push_int_frame(x, frame_top, return_eip)?;
        // Committed: nothing below can fault.
        let size = int_frame_size(x);
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R8D,
            mem(frame_top, Register::None, -size)
        )?)?;
        if x.clears_if {
            self.ins(i2!(Code::Mov_rm32_imm32, state(off::VIF), 0u32)?)?;
        }
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R9,
            state(off::SPILL + 8 * EFLAGS_SLOT as i32)
        )?)?;
        self.ins(i2!(Code::Mov_rm32_r32, state(off::EFLAGS), Register::R9D)?)?;
        self.privilege_change(&x.to, x.record)?;
        self.chain_exit_to_mode(x.to.eip, x.to.mode, x.to.tag)?;
        if !x.software && x.vector == 0 {
            self.e.bind(bail);
            self.mark_bail()?;
            self.ins(Instruction::with(Code::Popfq))?;
            self.ins(i2!(Code::Mov_r64_rm64, Register::R15, state(off::WINDOW))?)?;
            self.raise_exit(i, 0)?;
            return Ok(true);
        }
        let quiet = self.e.label();
        self.leave_to_monitor(bail, quiet, i, true)
    }

    /// Tells the monitor that an inline event's checks failed (it
    /// retranslates a site that keeps failing them).
    fn mark_bail(&mut self) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Mov_rm32_imm32, state(off::EVENT_BAIL), 1u32)?)
    }

    /// The frame of a delivery: SS and ESP (from ring 3), EFLAGS (in R11),
    /// CS, the return EIP and the error code, below `top`.
    fn push_int_frame(
        &mut self,
        x: &InlineInt,
        top: Register,
        return_eip: u32,
    ) -> Result<(), TranslateError> {
        let mut at = 0i64;
        let slot = |at: &mut i64| {
            *at -= 4;
            window(top, *at)
        };
        if x.esp0_at.is_some() {
            self.selector_into_r9(Seg::Ss)?;
            let m = slot(&mut at);
            self.ins(i2!(Code::Mov_rm32_r32, m, Register::R9D)?)?;
            let m = slot(&mut at);
            self.ins(i2!(Code::Mov_rm32_r32, m, Register::R8D)?)?;
        }
        let m = slot(&mut at);
        self.ins(i2!(Code::Mov_rm32_r32, m, Register::R11D)?)?;
        self.selector_into_r9(Seg::Cs)?;
        let m = slot(&mut at);
        self.ins(i2!(Code::Mov_rm32_r32, m, Register::R9D)?)?;
        let m = slot(&mut at);
        self.ins(i2!(Code::Mov_rm32_imm32, m, return_eip)?)?;
        if let Some(code) = x.error_code {
            let m = slot(&mut at);
            self.ins(i2!(Code::Mov_rm32_imm32, m, code)?)?;
        }
        Ok(())
    }

    fn selector_into_r9(&mut self, seg: Seg) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Movzx_r32_rm16,
            Register::R9D,
            state(off::SEG_SEL + 2 * seg as i32)
        )?)
    }

    /// R11 = the guest's EFLAGS: the live flags saved at `[rsp]` by PUSHFQ,
    /// the rest from the state block, IF from the virtual IF.
    fn eflags_image_into_r11(&mut self) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_r32_rm32,
            Register::R11D,
            mem(Register::RSP, Register::None, 0)
        )?)?;
        self.ins(i2!(Code::And_rm32_imm32, Register::R11D, LIVE_FLAGS)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, state(off::EFLAGS))?)?;
        self.ins(i2!(
            Code::And_rm32_imm32,
            Register::R9D,
            !(LIVE_FLAGS | EFLAGS_IF)
        )?)?;
        self.ins(i2!(Code::Or_r32_rm32, Register::R11D, Register::R9D)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, state(off::VIF))?)?;
        self.ins(i2!(Code::Shl_rm32_imm8, Register::R9D, 9u32)?)?;
        self.ins(i2!(Code::Or_r32_rm32, Register::R11D, Register::R9D)?)
    }

    fn inline_iret(&mut self, x: &InlineIret, i: &Instruction) -> Result<bool, TranslateError> {
        self.fixup = fixup::REDO_IN_MONITOR;
        // `bail`: what the monitor worked out no longer holds; `quiet`:
        // this IRET needs the monitor (TF, NT, a wanted window, ...).
        let bail = self.e.label();
        let quiet = self.e.label();
        self.load_checks(&x.checks)?;
        let frame = [
            Register::R9D,
            Register::R10D,
            Register::R11D,
            Register::R12D,
            Register::R13D,
        ];
        let popped = if x.outer.is_some() { 5 } else { 3 };
        for (k, reg) in frame.iter().take(popped).enumerate() {
            self.ins(i2!(
                Code::Mov_r32_rm32,
                *reg,
                window(Register::R8, 4 * k as i64)
            )?)?;
        }
        self.ins(Instruction::with(Code::Pushfq))?;
        // The popped CS waits in a spill slot, so R10 can hold constants.
        self.ins(i2!(
            Code::Mov_rm64_r64,
            state(off::SPILL + 8 * CS_SLOT as i32),
            Register::R10
        )?)?;
        self.compare_tables_gen(x.tables_gen, bail)?;
        self.compare_checks(&x.checks, Register::R10, bail)?;
        self.ins(i2!(
            Code::Test_rm32_imm32,
            Register::R11D,
            EFLAGS_TF | EFLAGS_VM | EFLAGS_RF | EFLAGS_AC
        )?)?;
        self.e.jcc_label(5, quiet);
        self.ins(i2!(Code::Test_rm32_imm32, state(off::EFLAGS), EFLAGS_NT)?)?;
        self.e.jcc_label(5, quiet);
        self.ins(i2!(Code::Cmp_rm32_imm32, state(off::WINDOW_WANTED), 0u32)?)?;
        self.e.jcc_label(5, quiet);
        if let Some(target) = &x.outer {
            let next = self.e.label();
            self.compare_popped_cs(target, next)?;
            self.ins(i2!(
                Code::Cmp_rm16_imm16,
                Register::R13W,
                u32::from(target.selectors[1])
            )?)?;
            self.e.jcc_label(5, bail);
            self.iret_commit(target, true, quiet)?;
            self.e.bind(next);
        }
        if let Some(target) = &x.same {
            self.compare_popped_cs(target, bail)?;
            self.iret_commit(target, false, quiet)?;
        } else {
            self.e.jmp_label(bail);
        }
        self.leave_to_monitor(bail, quiet, i, false)
    }

    /// Jumps to `otherwise` unless the popped CS is `target`'s.
    fn compare_popped_cs(
        &mut self,
        target: &IretTarget,
        otherwise: crate::emit::Label,
    ) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Cmp_rm16_imm16,
            state(off::SPILL + 8 * CS_SLOT as i32),
            u32::from(target.selectors[0])
        )?)?;
        self.e.jcc_label(5, otherwise);
        Ok(())
    }

    /// The rest of an IRET to `target` once its frame matched: leaves to
    /// the monitor if NMIs are blocked or (`outer`, a return to ring 3) a
    /// data segment would become null, else the popped
    /// EFLAGS (R11) become the guest's, ESP moves (to R12 from ring 3),
    /// the segments change and the popped EIP (R9) is looked up.
    fn iret_commit(
        &mut self,
        target: &IretTarget,
        outer: bool,
        bail: crate::emit::Label,
    ) -> Result<(), TranslateError> {
        if outer {
            // NMIs blocked, or a data segment the return would make null.
            self.ins(i2!(
                Code::Test_rm64_imm32,
                state(off::IRET_BLOCKERS),
                crate::state::IRET_BLOCKED_OUTER
            )?)?;
        } else {
            self.ins(i2!(
                Code::Test_rm32_imm32,
                state(off::IRET_BLOCKERS),
                crate::state::IRET_BLOCKED_NMI
            )?)?;
        }
        self.e.jcc_label(5, bail);
        // Committed: the guest's old flags are dropped, the popped ones
        // become EFLAGS.
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RSP,
            mem(Register::RSP, Register::None, 8)
        )?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::R11D)?)?;
        self.ins(i2!(Code::And_rm32_imm32, Register::R10D, IRET_LOADS)?)?;
        self.ins(i2!(Code::Or_rm32_imm32, Register::R10D, 2u32)?)?;
        self.ins(i2!(Code::Mov_rm32_r32, state(off::EFLAGS), Register::R10D)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::R11D)?)?;
        self.ins(i2!(Code::Shr_rm32_imm8, Register::R10D, 9u32)?)?;
        self.ins(i2!(Code::And_rm32_imm32, Register::R10D, 1u32)?)?;
        self.ins(i2!(Code::Mov_rm32_r32, state(off::VIF), Register::R10D)?)?;
        self.ins(i2!(Code::And_rm32_imm32, Register::R11D, LIVE_FLAGS | 2)?)?;
        self.ins(Instruction::with1(Code::Push_r64, Register::R11).map_err(encode)?)?;
        self.ins(Instruction::with(Code::Popfq))?;
        if outer {
            self.ins(i2!(Code::Mov_r32_rm32, Register::R8D, Register::R12D)?)?;
        } else {
            self.ins(i2!(
                Code::Lea_r32_m,
                Register::R8D,
                mem(Register::R8, Register::None, 12)
            )?)?;
        }
        self.privilege_change(&target.to, target.record)?;
        self.indirect_in(target.to.tag)
    }

    /// Reads every check's bytes through the window register into a spill
    /// slot (these reads can fault).
    fn load_checks(&mut self, checks: &[ReadCheck]) -> Result<(), TranslateError> {
        if checks.len() > MAX_CHECKS {
            return Err(TranslateError::Unsupported("too many inline event checks"));
        }
        for (k, c) in checks.iter().enumerate() {
            self.ins(i2!(Code::Mov_r32_imm32, Register::R10D, c.lin)?)?;
            let from = window(Register::R10, 0);
            let load = match c.size {
                1 => i2!(Code::Movzx_r32_rm8, Register::R11D, from)?,
                2 => i2!(Code::Movzx_r32_rm16, Register::R11D, from)?,
                4 => i2!(Code::Mov_r32_rm32, Register::R11D, from)?,
                _ => i2!(Code::Mov_r64_rm64, Register::R11, from)?,
            };
            self.ins(load)?;
            self.ins(i2!(
                Code::Mov_rm64_r64,
                state(off::SPILL + 8 * k as i32),
                Register::R11
            )?)?;
        }
        Ok(())
    }

    /// Inside the PUSHFQ bracket: every spilled value against what the
    /// monitor read (`scratch` holds the constant), else `bail`.
    fn compare_checks(
        &mut self,
        checks: &[ReadCheck],
        scratch: Register,
        bail: crate::emit::Label,
    ) -> Result<(), TranslateError> {
        for (k, c) in checks.iter().enumerate() {
            self.ins(i2!(Code::Mov_r64_imm64, scratch, c.value)?)?;
            self.ins(i2!(
                Code::Cmp_rm64_r64,
                state(off::SPILL + 8 * k as i32),
                scratch
            )?)?;
            self.e.jcc_label(5, bail);
        }
        Ok(())
    }

    fn compare_tables_gen(
        &mut self,
        gen: u32,
        bail: crate::emit::Label,
    ) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Cmp_rm32_imm32, state(off::TABLES_GEN), gen)?)?;
        self.e.jcc_label(5, bail);
        Ok(())
    }

    /// The paths to the monitor, inside the PUSHFQ bracket: `bail` (a
    /// comparison with what the monitor worked out failed, which it
    /// counts) and `quiet` (the instruction needs the monitor this time);
    /// then the guest's flags back, the current view's window register
    /// back, and the instruction handed to the monitor.
    fn leave_to_monitor(
        &mut self,
        bail: crate::emit::Label,
        quiet: crate::emit::Label,
        i: &Instruction,
        view_switched: bool,
    ) -> Result<bool, TranslateError> {
        self.e.bind(bail);
        self.mark_bail()?;
        self.e.bind(quiet);
        self.ins(Instruction::with(Code::Popfq))?;
        if view_switched {
            self.ins(i2!(Code::Mov_r64_rm64, Register::R15, state(off::WINDOW))?)?;
        }
        self.emulate_exit(i.ip32())
    }
}

/// `[r14 + offset]`: a field of the state block.
fn state(offset: i32) -> iced_x86::MemoryOperand {
    mem(Register::R14, Register::None, offset.into())
}

/// `[r15 + reg + disp]`: guest-linear `reg + disp` in the current view.
fn window(reg: Register, disp: i64) -> iced_x86::MemoryOperand {
    mem(Register::R15, reg, disp)
}

fn encode(e: iced_x86::IcedError) -> TranslateError {
    TranslateError::Encode(e.to_string())
}
