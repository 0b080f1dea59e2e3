//! Far control transfers in protected mode: JMP and CALL with a far
//! pointer (to a code segment, through a call gate, to a TSS or through a
//! task gate) and far RET (Intel SDM vol. 2, JMP, CALL, RET; vol. 3, 5.8
//! "Privilege Level Checking When Transferring Program Control Between Code
//! Segments", 7.3 "Task Switching").
//!
//! The caller decodes the instruction and passes its operands: the target
//! selector and offset, the operand size, the EIP of the next instruction
//! (the return address, and the EIP a task switch saves).
//!
//! Invariants:
//! - every check is made before any register changes: a transfer that
//!   fails leaves EIP, ESP, the segment registers and the CPL as they were
//!   (memory below a stack pointer may have been written; descriptors get
//!   their accessed bit only once every check has passed);
//! - CS is loaded with its RPL set to the new CPL;
//! - the 16-bit operand-size forms keep IP only (EIP AND 0000FFFFH) and
//!   push and pop words; a call gate's own size decides what it pushes;
//! - task switches are [`task_switch`]'s; this module makes the checks the
//!   JMP and CALL pages list before it, and the EIP limit check after it.

use super::context::{
    check_frame, read_stack, set_stack_pointer, stack_offset, stack_pointer, write_frame,
    CpuContext, OperandSize, Privilege,
};
use super::descriptor::{Descriptor, Selector, SystemKind};
use super::exception::{selector_error, Exception, Fault};
use super::segment::{
    check_stack_segment, gp, invalidate_inner_segments, mark_accessed, read_descriptor, ts,
};
use super::state::{Seg, SegmentRegister};
use super::task::{task_switch, TaskSwitchReason};

/// Where the selector of a far JMP or CALL leads.
enum Target {
    /// A conforming or non-conforming code segment.
    Code(Descriptor),
    /// A 16- or 32-bit call gate.
    CallGate(Descriptor),
    /// A task gate.
    TaskGate(Descriptor),
    /// A TSS descriptor (available or busy: the busy case is refused later
    /// with the privilege checks, as the SDM orders them).
    Tss(Descriptor),
}

/// #GP naming `selector`.
fn gp_sel(selector: Selector) -> Exception {
    gp(selector_error(selector.0))
}

/// #NP naming `selector`.
fn np_sel(selector: Selector) -> Exception {
    Exception::SegmentNotPresent(selector_error(selector.0))
}

/// Reads and classifies the target of a far JMP or CALL: a null selector
/// is #GP(0), one outside its table or naming anything but a code segment,
/// call gate, task gate or TSS is #GP(selector).
fn classify(ctx: &mut (impl CpuContext + ?Sized), selector: Selector) -> Result<Target, Exception> {
    if selector.is_null() {
        return Err(gp(0));
    }
    let d = read_descriptor(ctx, selector, gp)?;
    if d.is_code() {
        return Ok(Target::Code(d));
    }
    if d.is_code_or_data() {
        return Err(gp_sel(selector));
    }
    match d.system_kind() {
        SystemKind::CallGate16 | SystemKind::CallGate32 => Ok(Target::CallGate(d)),
        SystemKind::TaskGate => Ok(Target::TaskGate(d)),
        k if k.is_tss() => Ok(Target::Tss(d)),
        _ => Err(gp_sel(selector)),
    }
}

/// The privilege and presence checks of a direct transfer to a code
/// segment (SDM vol. 3, 5.8.2): conforming needs DPL <= CPL,
/// non-conforming RPL <= CPL and DPL = CPL.
fn check_direct_code(cpl: u8, selector: Selector, d: Descriptor) -> Result<(), Exception> {
    let allowed = if d.conforming() {
        d.dpl() <= cpl
    } else {
        selector.rpl() <= cpl && d.dpl() == cpl
    };
    if !allowed {
        return Err(gp_sel(selector));
    }
    check_present(selector, d)
}

/// #NP(selector) for a descriptor that is not present.
fn check_present(selector: Selector, d: Descriptor) -> Result<(), Exception> {
    if d.present() {
        Ok(())
    } else {
        Err(np_sel(selector))
    }
}

/// #GP(0) if `eip` is past the code segment's limit.
fn check_eip(d: Descriptor, eip: u32) -> Result<(), Exception> {
    if eip <= d.limit() {
        Ok(())
    } else {
        Err(gp(0))
    }
}

/// Loads CS (accessed bit set, RPL = `cpl`), the CPL and EIP: the last
/// step of every transfer.
fn enter_code_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    d: Descriptor,
    cpl: u8,
    eip: u32,
) -> Result<(), Exception> {
    let d = mark_accessed(ctx, selector, d, gp)?;
    let sys = ctx.sys_mut();
    sys.seg[Seg::Cs as usize] = SegmentRegister::loaded(selector.with_rpl(cpl), d);
    sys.cpl = cpl;
    ctx.set_eip(eip);
    Ok(())
}

/// The gate checks common to call and task gates: DPL >= CPL and DPL >=
/// RPL, else #GP(gate selector); not present is #NP(gate selector).
fn check_gate(cpl: u8, selector: Selector, gate: Descriptor) -> Result<(), Exception> {
    if gate.dpl() < cpl || gate.dpl() < selector.rpl() {
        return Err(gp_sel(selector));
    }
    check_present(selector, gate)
}

/// Reads the code segment a call gate names: a null selector is #GP(0);
/// one outside its table, or a descriptor that is not code or whose DPL is
/// above the CPL, is #GP(code selector). Presence is checked by the caller
/// (JMP makes one more privilege check first).
fn gate_code_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    gate: Descriptor,
) -> Result<(Selector, Descriptor), Exception> {
    let cs = gate.gate_selector();
    if cs.is_null() {
        return Err(gp(0));
    }
    let d = read_descriptor(ctx, cs, gp)?;
    if !d.is_code() || d.dpl() > ctx.sys().cpl {
        return Err(gp_sel(cs));
    }
    Ok((cs, d))
}

/// The size of what a call gate pushes.
fn gate_size(gate: Descriptor) -> OperandSize {
    if gate.system_kind().is_32bit() {
        OperandSize::Bits32
    } else {
        OperandSize::Bits16
    }
}

/// Far JMP to `selector:offset` in protected mode (SDM vol. 2, JMP).
///
/// `operand_size` truncates a direct target to IP; `next_eip` is the EIP
/// a task switch saves in the old TSS.
pub fn far_jmp(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    offset: u32,
    operand_size: OperandSize,
    next_eip: u32,
) -> Result<(), Fault> {
    match classify(ctx, selector)? {
        Target::Code(d) => {
            let cpl = ctx.sys().cpl;
            check_direct_code(cpl, selector, d)?;
            let eip = operand_size.truncate(offset);
            check_eip(d, eip)?;
            Ok(enter_code_segment(ctx, selector, d, cpl, eip)?)
        }
        Target::CallGate(gate) => jmp_call_gate(ctx, selector, gate),
        Target::TaskGate(gate) => {
            through_task_gate(ctx, selector, gate, TaskSwitchReason::Jmp, next_eip)
        }
        Target::Tss(d) => to_tss(ctx, selector, d, TaskSwitchReason::Jmp, next_eip),
    }
}

/// JMP through a call gate: only to the same privilege level (a
/// conforming code segment of DPL <= CPL, or a non-conforming one of DPL =
/// CPL); nothing is pushed (SDM vol. 2, JMP: CALL-GATE; vol. 3, 5.8.6).
fn jmp_call_gate(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    gate: Descriptor,
) -> Result<(), Fault> {
    let cpl = ctx.sys().cpl;
    check_gate(cpl, selector, gate)?;
    let (cs, d) = gate_code_segment(ctx, gate)?;
    if !d.conforming() && d.dpl() != cpl {
        return Err(gp_sel(cs).into());
    }
    check_present(cs, d)?;
    let eip = gate.gate_offset();
    check_eip(d, eip)?;
    Ok(enter_code_segment(ctx, cs, d, cpl, eip)?)
}

/// Far CALL to `selector:offset` in protected mode (SDM vol. 2, CALL).
///
/// `operand_size` decides the return address pushed by a direct call (CS
/// and EIP as doublewords, or CS and IP as words) and truncates its
/// target; `next_eip` is the return address (and the EIP a task switch
/// saves).
pub fn far_call(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    offset: u32,
    operand_size: OperandSize,
    next_eip: u32,
) -> Result<(), Fault> {
    match classify(ctx, selector)? {
        Target::Code(d) => {
            let cpl = ctx.sys().cpl;
            check_direct_code(cpl, selector, d)?;
            let eip = operand_size.truncate(offset);
            call_same_level(ctx, selector, d, eip, operand_size, next_eip)
        }
        Target::CallGate(gate) => call_gate(ctx, selector, gate, next_eip),
        Target::TaskGate(gate) => {
            through_task_gate(ctx, selector, gate, TaskSwitchReason::Call, next_eip)
        }
        Target::Tss(d) => to_tss(ctx, selector, d, TaskSwitchReason::Call, next_eip),
    }
}

/// A CALL that stays at the CPL: room for the return address on the
/// current stack (#SS(0)), the target within the limit (#GP(0)), then CS
/// and the return EIP pushed as `size` values (a 32-bit push of CS is
/// zero-extended).
fn call_same_level(
    ctx: &mut (impl CpuContext + ?Sized),
    cs: Selector,
    d: Descriptor,
    eip: u32,
    size: OperandSize,
    next_eip: u32,
) -> Result<(), Fault> {
    let ss = ctx.sys().segment(Seg::Ss);
    let sp = stack_pointer(ctx);
    check_frame(ss, sp, 2, size.bytes(), 0)?;
    check_eip(d, eip)?;
    let old_cs = u32::from(ctx.sys().segment(Seg::Cs).selector.0);
    let values = [old_cs, size.truncate(next_eip)];
    let sp = write_frame(ctx, ss, sp, size.bytes(), &values, Privilege::Current)?;
    let cpl = ctx.sys().cpl;
    enter_code_segment(ctx, cs, d, cpl, eip)?;
    set_stack_pointer(ctx, sp);
    Ok(())
}

/// CALL through a call gate (SDM vol. 2, CALL: CALL-GATE; vol. 3, 5.8.4,
/// 5.8.5): to a non-conforming code segment of DPL < CPL with a stack
/// switch, else at the same level.
fn call_gate(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    gate: Descriptor,
    next_eip: u32,
) -> Result<(), Fault> {
    let cpl = ctx.sys().cpl;
    check_gate(cpl, selector, gate)?;
    let (cs, d) = gate_code_segment(ctx, gate)?;
    check_present(cs, d)?;
    let size = gate_size(gate);
    if !d.conforming() && d.dpl() < cpl {
        call_more_privileged(ctx, gate, cs, d, next_eip)
    } else {
        call_same_level(ctx, cs, d, gate.gate_offset(), size, next_eip)
    }
}

/// The inner stack a call to privilege level `dpl` switches to, from the
/// TSS, after its checks (#TS(TR) for a short TSS; #TS(0) for a null SS;
/// #TS(SS) for a bad one; #SS(SS) for one not present).
fn inner_stack(
    ctx: &mut (impl CpuContext + ?Sized),
    dpl: u8,
) -> Result<(Selector, Descriptor, u32), Exception> {
    let (ss, esp) = super::task::inner_stack(ctx, dpl)?;
    let d = check_stack_segment(ctx, ss, dpl, ts)?;
    let esp = if d.big() { esp } else { esp & 0xffff };
    Ok((ss, d, esp))
}

/// Reads the `count` parameters of `size` bytes a call gate copies, from
/// SS:(E)SP upwards (#SS(0) past the old stack's limit), in push order
/// (the deepest first).
fn gate_parameters(
    ctx: &mut (impl CpuContext + ?Sized),
    count: u32,
    size: u32,
) -> Result<Vec<u32>, Exception> {
    (0..count)
        .rev()
        .map(|i| read_stack(ctx, i * size, size))
        .collect()
}

/// MORE-PRIVILEGE: switch to the TSS stack for the code segment's DPL,
/// push the old SS:ESP, copy the gate's parameters and push the old
/// CS:EIP, in the gate's size.
fn call_more_privileged(
    ctx: &mut (impl CpuContext + ?Sized),
    gate: Descriptor,
    cs: Selector,
    d: Descriptor,
    next_eip: u32,
) -> Result<(), Fault> {
    let new_cpl = d.dpl();
    let (ss_sel, ss_d, esp) = inner_stack(ctx, new_cpl)?;
    let ss = SegmentRegister::loaded(ss_sel, ss_d.with_accessed());
    let size = gate_size(gate);
    let count = gate.gate_param_count();
    check_frame(ss, esp, 4 + count, size.bytes(), selector_error(ss_sel.0))?;
    let eip = gate.gate_offset();
    check_eip(d, eip)?;
    let old = ctx.sys();
    let mut values = vec![
        u32::from(old.segment(Seg::Ss).selector.0),
        stack_pointer(ctx),
    ];
    values.extend(gate_parameters(ctx, count, size.bytes())?);
    values.push(u32::from(ctx.sys().segment(Seg::Cs).selector.0));
    values.push(size.truncate(next_eip));
    let sp = write_frame(ctx, ss, esp, size.bytes(), &values, Privilege::Supervisor)?;
    let ss_d = mark_accessed(ctx, ss_sel, ss_d, ts)?;
    enter_code_segment(ctx, cs, d, new_cpl, eip)?;
    ctx.sys_mut().seg[Seg::Ss as usize] = SegmentRegister::loaded(ss_sel, ss_d);
    set_stack_pointer(ctx, sp);
    Ok(())
}

/// JMP or CALL through a task gate (SDM vol. 2, JMP/CALL: TASK-GATE; vol.
/// 3, 7.3): the gate's checks, then the TSS it names must be in the GDT,
/// a TSS, not busy (#GP(TSS selector)) and present (#NP(TSS selector)).
fn through_task_gate(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    gate: Descriptor,
    reason: TaskSwitchReason,
    next_eip: u32,
) -> Result<(), Fault> {
    check_gate(ctx.sys().cpl, selector, gate)?;
    let tss = gate.gate_selector();
    if tss.in_ldt() {
        return Err(gp_sel(tss).into());
    }
    let d = read_descriptor(ctx, tss, gp)?;
    if d.is_code_or_data() || !available_tss(d) {
        return Err(gp_sel(tss).into());
    }
    check_present(tss, d)?;
    switch_task(ctx, tss, reason, next_eip)
}

/// An available (not busy) 32- or 16-bit TSS descriptor.
fn available_tss(d: Descriptor) -> bool {
    matches!(
        d.system_kind(),
        SystemKind::Tss32Available | SystemKind::Tss16Available
    )
}

/// JMP or CALL to a TSS descriptor (SDM vol. 2, JMP/CALL:
/// TASK-STATE-SEGMENT; vol. 3, 7.2.2: a TSS descriptor is only valid in
/// the GDT): DPL >= CPL and RPL and the TSS available, else #GP(selector);
/// not present is #NP(selector).
fn to_tss(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    d: Descriptor,
    reason: TaskSwitchReason,
    next_eip: u32,
) -> Result<(), Fault> {
    let cpl = ctx.sys().cpl;
    if selector.in_ldt() || d.dpl() < cpl || d.dpl() < selector.rpl() || !available_tss(d) {
        return Err(gp_sel(selector).into());
    }
    check_present(selector, d)?;
    switch_task(ctx, selector, reason, next_eip)
}

/// Switches tasks, then checks the new task's EIP against its CS limit
/// (#GP(0), raised in the new task).
fn switch_task(
    ctx: &mut (impl CpuContext + ?Sized),
    tss: Selector,
    reason: TaskSwitchReason,
    next_eip: u32,
) -> Result<(), Fault> {
    task_switch(ctx, tss, reason, next_eip, None)?;
    if ctx.eip() > ctx.sys().segment(Seg::Cs).limit {
        return Err(gp(0).into());
    }
    Ok(())
}

/// Far RET (RETF) with `pop_bytes` bytes of parameters to release, in
/// protected mode (SDM vol. 2, RET; vol. 3, 5.8.6): to the same privilege
/// level, or to an outer one, popping SS:ESP too and nulling the data
/// segment registers the outer level may not use.
pub fn far_ret(
    ctx: &mut (impl CpuContext + ?Sized),
    operand_size: OperandSize,
    pop_bytes: u16,
) -> Result<(), Fault> {
    let n = operand_size.bytes();
    let eip = operand_size.truncate(read_stack(ctx, 0, n)?);
    let cs = Selector(read_stack(ctx, n, n)? as u16);
    let d = check_return_code_segment(ctx, cs)?;
    let released = 2 * n + u32::from(pop_bytes);
    if cs.rpl() > ctx.sys().cpl {
        ret_outer(ctx, cs, d, eip, operand_size, released, pop_bytes)
    } else {
        check_eip(d, eip)?;
        let cpl = ctx.sys().cpl;
        enter_code_segment(ctx, cs, d, cpl, eip)?;
        let sp = stack_offset(ctx, released);
        set_stack_pointer(ctx, sp);
        Ok(())
    }
}

/// The checks of the code segment a far RET returns to: null is #GP(0);
/// outside its table, not code, RPL < CPL, conforming with DPL > RPL or
/// non-conforming with DPL != RPL are #GP(selector); not present is
/// #NP(selector).
fn check_return_code_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    cs: Selector,
) -> Result<Descriptor, Exception> {
    if cs.is_null() {
        return Err(gp(0));
    }
    let d = read_descriptor(ctx, cs, gp)?;
    let rpl = cs.rpl();
    let dpl_ok = if d.conforming() {
        d.dpl() <= rpl
    } else {
        d.dpl() == rpl
    };
    if !d.is_code() || rpl < ctx.sys().cpl || !dpl_ok {
        return Err(gp_sel(cs));
    }
    check_present(cs, d)?;
    Ok(d)
}

/// RETURN-TO-OUTER-PRIVILEGE-LEVEL: ESP and SS are read from above the
/// released parameters (#SS(0) past the limit), SS is checked for the new
/// CPL (#GP(0) null; #GP(selector) bad; #SS(selector) not present), then
/// CS:EIP and SS:ESP + `pop_bytes` are loaded and DS, ES, FS and GS that
/// the outer level may not use are nulled.
fn ret_outer(
    ctx: &mut (impl CpuContext + ?Sized),
    cs: Selector,
    d: Descriptor,
    eip: u32,
    size: OperandSize,
    released: u32,
    pop_bytes: u16,
) -> Result<(), Fault> {
    let n = size.bytes();
    let esp = read_stack(ctx, released, n)?;
    let ss = Selector(read_stack(ctx, released + n, n)? as u16);
    let new_cpl = cs.rpl();
    let ss_d = check_stack_segment(ctx, ss, new_cpl, gp)?;
    check_eip(d, eip)?;
    let ss_d = mark_accessed(ctx, ss, ss_d, gp)?;
    enter_code_segment(ctx, cs, d, new_cpl, eip)?;
    ctx.sys_mut().seg[Seg::Ss as usize] = SegmentRegister::loaded(ss, ss_d);
    set_stack_pointer(ctx, esp.wrapping_add(u32::from(pop_bytes)));
    invalidate_inner_segments(ctx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::context::ESP;
    use super::super::testing::{gate_descriptor, segment_descriptor, TestCpu};
    use super::*;

    const CODE0: u16 = 0x08;
    const DATA0: u16 = 0x10;
    const CODE3: u16 = 0x18;
    const DATA3: u16 = 0x20;
    const CONFORMING0: u16 = 0x28;
    const SMALL_CODE0: u16 = 0x30;
    const CODE16: u16 = 0x38;
    const GATE32: u16 = 0x40;
    const GATE16: u16 = 0x48;
    const ABSENT_CODE: u16 = 0x50;
    const TSS_AVAILABLE: u16 = 0x58;
    const TASK_GATE: u16 = 0x60;
    const CODE1: u16 = 0x68;
    const DATA1: u16 = 0x70;
    const STACK16: u16 = 0x78;
    const TSS16_AVAILABLE: u16 = 0x80;
    const READ_ONLY0: u16 = 0x90;
    const INTERRUPT_GATE: u16 = 0x98;
    const CURRENT_TSS: u16 = 0xa0;
    const GATE_TO_RING1: u16 = 0xa8;
    const CONFORMING3: u16 = 0xb0;
    const GATE_SAME_LEVEL: u16 = 0xb8;
    const GATE_DPL0: u16 = 0xc0;
    const BUSY_TSS: u16 = 0xc8;
    const TASK_GATE_BUSY: u16 = 0xd0;
    const ABSENT_STACK0: u16 = 0xd8;
    const SMALL_STACK0: u16 = 0xe0;
    const ABSENT_STACK3: u16 = 0xe8;
    const ABSENT_GATE: u16 = 0xf0;
    const GATE_TO_DATA: u16 = 0xf8;

    /// The current TSS (TR) at 0x3000: SS0:ESP0 = 0x10:0x9000, SS1:ESP1 =
    /// 0x71:0xa000.
    const TSS_BASE: u32 = 0x3000;
    const ESP0: u32 = 0x9000;
    const ESP1: u32 = 0xa000;
    const NEXT_EIP: u32 = 0x0010_0123;

    fn gdt(cpu: &mut TestCpu) {
        let seg = segment_descriptor;
        let entries = [
            (CODE0, seg(0, 0xfffff, 0x9a, 0xc)),
            (DATA0, seg(0, 0xfffff, 0x92, 0xc)),
            (CODE3, seg(0, 0xfffff, 0xfa, 0xc)),
            (DATA3, seg(0, 0xfffff, 0xf2, 0xc)),
            (CONFORMING0, seg(0, 0xfffff, 0x9e, 0xc)),
            (SMALL_CODE0, seg(0, 0xfff, 0x9a, 0x4)),
            (CODE16, seg(0, 0xffff, 0x9a, 0x0)),
            (GATE32, gate_descriptor(CODE0, 0x2000, 0xec, 2)),
            (GATE16, gate_descriptor(CODE16, 0x1234, 0xe4, 1)),
            (ABSENT_CODE, seg(0, 0xfffff, 0x1a, 0xc)),
            (TSS_AVAILABLE, seg(0x3800, 0x67, 0x89, 0)),
            (TASK_GATE, gate_descriptor(TSS_AVAILABLE, 0, 0xe5, 0)),
            (CODE1, seg(0, 0xfffff, 0xba, 0xc)),
            (DATA1, seg(0, 0xfffff, 0xb2, 0xc)),
            (STACK16, seg(0, 0xffff, 0x92, 0x0)),
            (TSS16_AVAILABLE, seg(0x3900, 0x2b, 0x81, 0)),
            (READ_ONLY0, seg(0, 0xfffff, 0x90, 0xc)),
            (INTERRUPT_GATE, gate_descriptor(CODE0, 0x1000, 0xee, 0)),
            (CURRENT_TSS, seg(TSS_BASE, 0x67, 0x8b, 0)),
            (GATE_TO_RING1, gate_descriptor(CODE1, 0x3000, 0xec, 0)),
            (CONFORMING3, seg(0, 0xfffff, 0xfe, 0xc)),
            (GATE_SAME_LEVEL, gate_descriptor(CODE3, 0x4444, 0xec, 3)),
            (GATE_DPL0, gate_descriptor(CODE0, 0x2000, 0x8c, 0)),
            (BUSY_TSS, seg(0x3a00, 0x67, 0x8b, 0)),
            (TASK_GATE_BUSY, gate_descriptor(BUSY_TSS, 0, 0xe5, 0)),
            (ABSENT_STACK0, seg(0, 0xfffff, 0x12, 0xc)),
            (SMALL_STACK0, seg(0, 0xffff, 0x92, 0x4)),
            (ABSENT_STACK3, seg(0, 0xfffff, 0x72, 0xc)),
            (ABSENT_GATE, gate_descriptor(CODE0, 0x2000, 0x6c, 0)),
            (GATE_TO_DATA, gate_descriptor(DATA0, 0x2000, 0xec, 0)),
        ];
        for (sel, d) in entries {
            cpu.set_gdt(sel >> 3, d);
        }
    }

    /// Ring 0, flat, TR loaded with [`CURRENT_TSS`], ESP 0x8800.
    fn cpu() -> TestCpu {
        let mut cpu = TestCpu::new();
        gdt(&mut cpu);
        cpu.sys.tr = SegmentRegister::loaded(Selector(CURRENT_TSS), cpu.gdt(CURRENT_TSS >> 3));
        cpu.poke(TSS_BASE + 4, &ESP0.to_le_bytes());
        cpu.poke(TSS_BASE + 8, &DATA0.to_le_bytes());
        cpu.poke(TSS_BASE + 12, &ESP1.to_le_bytes());
        cpu.poke(TSS_BASE + 16, &(DATA1 | 1).to_le_bytes());
        cpu.gpr[ESP] = 0x8800;
        cpu
    }

    fn loaded(cpu: &TestCpu, selector: u16) -> SegmentRegister {
        SegmentRegister::loaded(Selector(selector), cpu.gdt(selector >> 3).with_accessed())
    }

    /// Ring 3: CS 0x1b, SS and DS 0x23, ES still the ring-0 data segment,
    /// ESP 0x8000.
    fn ring3() -> TestCpu {
        let mut cpu = cpu();
        cpu.set_segment(Seg::Cs, loaded(&cpu, CODE3 | 3));
        cpu.set_segment(Seg::Ss, loaded(&cpu, DATA3 | 3));
        cpu.set_segment(Seg::Ds, loaded(&cpu, DATA3 | 3));
        cpu.set_segment(Seg::Es, loaded(&cpu, DATA0));
        cpu.sys.cpl = 3;
        cpu.gpr[ESP] = 0x8000;
        cpu
    }

    /// The registers a failed transfer must leave alone.
    fn registers(cpu: &TestCpu) -> (u32, [u32; 8], [SegmentRegister; 6], u8) {
        (cpu.eip, cpu.gpr, cpu.sys.seg, cpu.sys.cpl)
    }

    fn cs(cpu: &TestCpu) -> SegmentRegister {
        cpu.sys.segment(Seg::Cs)
    }

    fn gp_err(e: u32) -> Result<(), Fault> {
        Err(Fault::Exception(Exception::GeneralProtection(e)))
    }

    fn np_err(e: u32) -> Result<(), Fault> {
        Err(Fault::Exception(Exception::SegmentNotPresent(e)))
    }

    fn ss_err(e: u32) -> Result<(), Fault> {
        Err(Fault::Exception(Exception::StackFault(e)))
    }

    fn ts_err(e: u32) -> Result<(), Fault> {
        Err(Fault::Exception(Exception::InvalidTss(e)))
    }

    fn jmp(cpu: &mut TestCpu, sel: u16, offset: u32) -> Result<(), Fault> {
        far_jmp(cpu, Selector(sel), offset, OperandSize::Bits32, NEXT_EIP)
    }

    fn call(cpu: &mut TestCpu, sel: u16, offset: u32) -> Result<(), Fault> {
        far_call(cpu, Selector(sel), offset, OperandSize::Bits32, NEXT_EIP)
    }

    /// Writes `values` from SS:ESP upwards (the first at the top).
    fn stack(cpu: &mut TestCpu, esp: u32, values: &[u32]) {
        cpu.gpr[ESP] = esp;
        for (i, v) in values.iter().enumerate() {
            cpu.poke(esp + 4 * i as u32, &v.to_le_bytes());
        }
    }

    fn stack_words(cpu: &TestCpu, at: u32, n: u32) -> Vec<u32> {
        (0..n).map(|i| cpu.peek_u32(at + 4 * i)).collect()
    }

    // ----- JMP ------------------------------------------------------------

    #[test]
    fn jmp_to_a_nonconforming_code_segment_at_the_cpl_loads_cs_and_eip() {
        let mut cpu = cpu();
        jmp(&mut cpu, CODE16, 0x1234).unwrap();
        assert_eq!(cpu.eip, 0x1234);
        assert_eq!(cs(&cpu), loaded(&cpu, CODE16));
        assert!(!cs(&cpu).big(), "a 16-bit code segment");
        assert_eq!(cpu.gpr[ESP], 0x8800, "nothing pushed");
    }

    #[test]
    fn jmp_sets_the_accessed_bit_of_the_target_descriptor() {
        let mut cpu = cpu();
        assert_eq!(cpu.gdt(CODE16 >> 3).type_field() & 1, 0);
        jmp(&mut cpu, CODE16, 0).unwrap();
        assert_eq!(cpu.gdt(CODE16 >> 3).type_field() & 1, 1);
    }

    #[test]
    fn jmp_to_a_nonconforming_code_segment_of_another_dpl_is_gp_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(jmp(&mut cpu, CODE3 | 3, 0), gp_err(u32::from(CODE3)));
        let mut cpu = ring3();
        let before = registers(&cpu);
        assert_eq!(jmp(&mut cpu, CODE0, 0), gp_err(u32::from(CODE0)));
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn jmp_with_rpl_above_the_cpl_to_nonconforming_code_is_gp() {
        let mut cpu = cpu();
        assert_eq!(jmp(&mut cpu, CODE0 | 2, 0), gp_err(u32::from(CODE0)));
    }

    #[test]
    fn jmp_to_a_conforming_segment_keeps_the_cpl_and_sets_cs_rpl_to_it() {
        let mut cpu = ring3();
        jmp(&mut cpu, CONFORMING0, 0x500).unwrap();
        assert_eq!(cpu.sys.cpl, 3);
        assert_eq!(cs(&cpu).selector, Selector(CONFORMING0 | 3));
        assert_eq!(cpu.eip, 0x500);
    }

    #[test]
    fn jmp_to_a_conforming_segment_of_higher_dpl_is_gp() {
        let mut cpu = cpu();
        assert_eq!(
            jmp(&mut cpu, CONFORMING3, 0),
            gp_err(u32::from(CONFORMING3))
        );
    }

    #[test]
    fn jmp_to_a_null_selector_is_gp0() {
        let mut cpu = cpu();
        assert_eq!(jmp(&mut cpu, 3, 0), gp_err(0));
    }

    #[test]
    fn jmp_past_the_gdt_limit_or_to_an_absent_ldt_is_gp_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(jmp(&mut cpu, 0x100, 0), gp_err(0x100));
        assert_eq!(jmp(&mut cpu, 0x0c, 0), gp_err(0x0c));
    }

    #[test]
    fn jmp_to_a_data_segment_an_interrupt_gate_or_an_ldt_is_gp_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(jmp(&mut cpu, DATA0, 0), gp_err(u32::from(DATA0)));
        assert_eq!(
            jmp(&mut cpu, INTERRUPT_GATE, 0),
            gp_err(u32::from(INTERRUPT_GATE))
        );
        cpu.set_gdt(31, segment_descriptor(0x4000, 0x3f, 0x82, 0));
        assert_eq!(jmp(&mut cpu, 0xf8, 0), gp_err(0xf8));
    }

    #[test]
    fn jmp_to_a_not_present_code_segment_is_np_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(
            jmp(&mut cpu, ABSENT_CODE, 0),
            np_err(u32::from(ABSENT_CODE))
        );
    }

    #[test]
    fn jmp_past_the_code_segment_limit_is_gp0_and_changes_nothing() {
        let mut cpu = cpu();
        let before = registers(&cpu);
        assert_eq!(jmp(&mut cpu, SMALL_CODE0, 0x1000), gp_err(0));
        assert_eq!(registers(&cpu), before);
        assert_eq!(
            cpu.gdt(SMALL_CODE0 >> 3).type_field() & 1,
            0,
            "not accessed"
        );
        jmp(&mut cpu, SMALL_CODE0, 0xfff).unwrap();
    }

    #[test]
    fn jmp_with_a_16bit_operand_size_truncates_eip() {
        let mut cpu = cpu();
        far_jmp(
            &mut cpu,
            Selector(SMALL_CODE0),
            0x0012_0345,
            OperandSize::Bits16,
            0,
        )
        .unwrap();
        assert_eq!(cpu.eip, 0x0345);
    }

    #[test]
    fn jmp_through_a_call_gate_to_the_same_level_pushes_nothing() {
        let mut cpu = ring3();
        jmp(&mut cpu, GATE_SAME_LEVEL | 3, 0xdead).unwrap();
        assert_eq!(cpu.eip, 0x4444, "the gate's offset, not the operand's");
        assert_eq!(cs(&cpu).selector, Selector(CODE3 | 3));
        assert_eq!((cpu.sys.cpl, cpu.gpr[ESP]), (3, 0x8000));
    }

    #[test]
    fn jmp_through_a_call_gate_to_a_more_privileged_level_is_gp() {
        let mut cpu = ring3();
        let before = registers(&cpu);
        assert_eq!(jmp(&mut cpu, GATE32 | 3, 0), gp_err(u32::from(CODE0)));
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn jmp_through_a_call_gate_to_a_conforming_segment_keeps_the_cpl() {
        let mut cpu = ring3();
        cpu.set_gdt(31, gate_descriptor(CONFORMING0, 0x777, 0xec, 0));
        jmp(&mut cpu, 0xfb, 0).unwrap();
        assert_eq!((cpu.sys.cpl, cpu.eip), (3, 0x777));
        assert_eq!(cs(&cpu).selector, Selector(CONFORMING0 | 3));
    }

    // ----- CALL to code segments --------------------------------------------

    #[test]
    fn call_to_a_code_segment_pushes_cs_and_eip() {
        let mut cpu = cpu();
        call(&mut cpu, CODE16, 0x4000).unwrap();
        assert_eq!(cpu.gpr[ESP], 0x87f8);
        assert_eq!(stack_words(&cpu, 0x87f8, 2), [NEXT_EIP, u32::from(CODE0)]);
        assert_eq!((cpu.eip, cs(&cpu).selector), (0x4000, Selector(CODE16)));
    }

    #[test]
    fn call_with_a_16bit_operand_size_pushes_cs_and_ip_as_words() {
        let mut cpu = cpu();
        far_call(
            &mut cpu,
            Selector(CODE16),
            0x0001_4000,
            OperandSize::Bits16,
            0x0002_5678,
        )
        .unwrap();
        assert_eq!(cpu.gpr[ESP], 0x87fc);
        assert_eq!(cpu.peek(0x87fc, 4), [0x78, 0x56, 0x08, 0x00]);
        assert_eq!(cpu.eip, 0x4000);
    }

    #[test]
    fn call_to_a_conforming_segment_from_ring3_stays_at_ring3() {
        let mut cpu = ring3();
        call(&mut cpu, CONFORMING0, 0x10).unwrap();
        assert_eq!(cpu.sys.cpl, 3);
        assert_eq!(cs(&cpu).selector, Selector(CONFORMING0 | 3));
        assert_eq!(cpu.gpr[ESP], 0x7ff8);
        assert_eq!(
            stack_words(&cpu, 0x7ff8, 2),
            [NEXT_EIP, u32::from(CODE3 | 3)]
        );
    }

    #[test]
    fn call_without_room_for_the_return_address_is_ss0_and_changes_nothing() {
        let mut cpu = cpu();
        cpu.set_segment(Seg::Ss, loaded(&cpu, SMALL_STACK0));
        cpu.gpr[ESP] = 4;
        let before = registers(&cpu);
        assert_eq!(call(&mut cpu, CODE0, 0), ss_err(0));
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn call_past_the_code_segment_limit_is_gp0_and_pushes_nothing() {
        let mut cpu = cpu();
        let before = registers(&cpu);
        assert_eq!(call(&mut cpu, SMALL_CODE0, 0x2000), gp_err(0));
        assert_eq!(registers(&cpu), before);
        assert_eq!(cpu.peek_u32(0x87fc), 0);
    }

    #[test]
    fn call_with_a_page_fault_on_the_stack_changes_no_register() {
        let mut cpu = cpu();
        cpu.unmapped.push(0x8000..0x8800);
        let before = registers(&cpu);
        assert_eq!(
            call(&mut cpu, CODE0, 0),
            Err(Fault::Exception(Exception::PageFault {
                // CS is pushed first: the first write that faults.
                addr: 0x87fc,
                error: 2
            }))
        );
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn call_on_a_16bit_stack_wraps_sp_below_zero() {
        let mut cpu = cpu();
        cpu.set_segment(Seg::Ss, loaded(&cpu, STACK16));
        cpu.gpr[ESP] = 0x1234_0002;
        far_call(
            &mut cpu,
            Selector(CODE16),
            0x40,
            OperandSize::Bits16,
            0x5678,
        )
        .unwrap();
        assert_eq!(cpu.gpr[ESP], 0x1234_fffe, "the top of ESP is kept");
        assert_eq!(cpu.peek(0, 2), [0x08, 0x00], "CS at SP 0");
        assert_eq!(cpu.peek(0xfffe, 2), [0x78, 0x56], "IP at SP 0xfffe");
    }

    #[test]
    fn jmp_and_call_reach_code_segments_in_the_ldt() {
        let mut cpu = cpu();
        cpu.set_gdt(31, segment_descriptor(0x4000, 0x3f, 0x82, 0));
        cpu.sys.ldtr = SegmentRegister::loaded(Selector(0xf8), cpu.gdt(31));
        cpu.poke(
            0x4010,
            &segment_descriptor(0, 0xfff, 0x9a, 0x4).0.to_le_bytes(),
        );
        jmp(&mut cpu, 0x14, 0x10).unwrap();
        assert_eq!(cs(&cpu).selector, Selector(0x14));
        assert_eq!(cs(&cpu).limit, 0xfff);
        cpu.set_gdt(30, gate_descriptor(0x14, 0x20, 0x8c, 0));
        call(&mut cpu, 0xf0, 0).unwrap();
        assert_eq!((cs(&cpu).selector, cpu.eip), (Selector(0x14), 0x20));
    }

    // ----- CALL through call gates ------------------------------------------

    #[test]
    fn call_through_a_call_gate_to_ring0_switches_stacks_and_copies_parameters() {
        let mut cpu = ring3();
        stack(&mut cpu, 0x8000, &[0x1111, 0x2222, 0x3333]);
        call(&mut cpu, GATE32 | 3, 0).unwrap();
        assert_eq!((cpu.sys.cpl, cpu.eip), (0, 0x2000));
        assert_eq!(cs(&cpu), loaded(&cpu, CODE0));
        assert_eq!(cpu.sys.segment(Seg::Ss), loaded(&cpu, DATA0));
        assert_eq!(cpu.gpr[ESP], ESP0 - 24);
        assert_eq!(
            stack_words(&cpu, ESP0 - 24, 6),
            [
                NEXT_EIP,
                u32::from(CODE3 | 3),
                0x1111,
                0x2222,
                0x8000,
                u32::from(DATA3 | 3)
            ]
        );
        assert_eq!(cpu.sys.segment(Seg::Ds).selector, Selector(DATA3 | 3));
    }

    #[test]
    fn call_through_a_16bit_call_gate_pushes_words_and_uses_the_gates_16bit_offset() {
        let mut cpu = ring3();
        stack(&mut cpu, 0x8000, &[0xaaaa_bbbb]);
        far_call(
            &mut cpu,
            Selector(GATE16 | 3),
            0,
            OperandSize::Bits32,
            0x0001_5678,
        )
        .unwrap();
        assert_eq!((cpu.eip, cs(&cpu).selector), (0x1234, Selector(CODE16)));
        assert_eq!(cpu.gpr[ESP], ESP0 - 10);
        let words: Vec<u16> = cpu
            .peek(ESP0 - 10, 10)
            .chunks(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect();
        assert_eq!(words, [0x5678, CODE3 | 3, 0xbbbb, 0x8000, DATA3 | 3]);
    }

    #[test]
    fn call_through_a_call_gate_with_a_16bit_tss_takes_ss0_sp0_from_it() {
        let mut cpu = ring3();
        cpu.sys.tr = SegmentRegister::loaded(
            Selector(TSS16_AVAILABLE),
            cpu.gdt(TSS16_AVAILABLE >> 3).with_busy(true),
        );
        cpu.poke(0x3902, &0x6000u16.to_le_bytes());
        cpu.poke(0x3904, &STACK16.to_le_bytes());
        cpu.gpr[ESP] = 0x1234_8000;
        cpu.set_segment(Seg::Ss, {
            let mut ss = loaded(&cpu, DATA3 | 3);
            ss.limit = u32::MAX;
            ss
        });
        cpu.gpr[ESP] = 0x0000_8000;
        call(&mut cpu, GATE32 | 3, 0).unwrap();
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(STACK16));
        assert!(!cpu.sys.stack32());
        assert_eq!(cpu.gpr[ESP], 0x6000 - 24);
        assert_eq!(cpu.peek_u32(0x6000 - 8), 0x8000, "old ESP");
    }

    #[test]
    fn call_through_a_call_gate_to_ring1_uses_ss1_and_esp1() {
        let mut cpu = ring3();
        call(&mut cpu, GATE_TO_RING1 | 3, 0).unwrap();
        assert_eq!(cpu.sys.cpl, 1);
        assert_eq!(cs(&cpu).selector, Selector(CODE1 | 1));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA1 | 1));
        assert_eq!(cpu.gpr[ESP], ESP1 - 16);
        assert_eq!(cpu.eip, 0x3000);
    }

    #[test]
    fn call_through_a_call_gate_to_the_same_level_pushes_only_the_return_address() {
        let mut cpu = ring3();
        call(&mut cpu, GATE_SAME_LEVEL | 3, 0).unwrap();
        assert_eq!((cpu.sys.cpl, cpu.eip), (3, 0x4444));
        assert_eq!(cpu.gpr[ESP], 0x7ff8, "no parameters copied");
        assert_eq!(
            stack_words(&cpu, 0x7ff8, 2),
            [NEXT_EIP, u32::from(CODE3 | 3)]
        );
    }

    #[test]
    fn call_gate_with_dpl_below_the_cpl_is_gp_with_the_gate_selector() {
        let mut cpu = ring3();
        assert_eq!(
            call(&mut cpu, GATE_DPL0 | 3, 0),
            gp_err(u32::from(GATE_DPL0))
        );
    }

    #[test]
    fn call_gate_with_rpl_above_its_dpl_is_gp_with_the_gate_selector() {
        let mut cpu = cpu();
        assert_eq!(
            call(&mut cpu, GATE_DPL0 | 1, 0),
            gp_err(u32::from(GATE_DPL0))
        );
    }

    #[test]
    fn call_gate_not_present_is_np_with_the_gate_selector() {
        let mut cpu = ring3();
        assert_eq!(
            call(&mut cpu, ABSENT_GATE | 3, 0),
            np_err(u32::from(ABSENT_GATE))
        );
    }

    #[test]
    fn call_gate_to_a_null_code_selector_is_gp0() {
        let mut cpu = ring3();
        cpu.set_gdt(31, gate_descriptor(0, 0x2000, 0xec, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), gp_err(0));
    }

    #[test]
    fn call_gate_to_a_data_segment_or_outer_code_is_gp_with_the_code_selector() {
        let mut cpu = ring3();
        assert_eq!(
            call(&mut cpu, GATE_TO_DATA | 3, 0),
            gp_err(u32::from(DATA0))
        );
        let mut cpu = self::cpu();
        cpu.set_gdt(31, gate_descriptor(CODE3, 0x2000, 0xec, 0));
        assert_eq!(call(&mut cpu, 0xf8, 0), gp_err(u32::from(CODE3)));
    }

    #[test]
    fn call_gate_to_a_not_present_code_segment_is_np_with_the_code_selector() {
        let mut cpu = ring3();
        cpu.set_gdt(31, gate_descriptor(ABSENT_CODE, 0x2000, 0xec, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), np_err(u32::from(ABSENT_CODE)));
    }

    #[test]
    fn call_gate_with_a_null_tss_stack_selector_is_ts0() {
        let mut cpu = ring3();
        cpu.poke(TSS_BASE + 8, &[0, 0]);
        let before = registers(&cpu);
        assert_eq!(call(&mut cpu, GATE32 | 3, 0), ts_err(0));
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn call_gate_with_a_tss_stack_of_the_wrong_privilege_is_ts_with_its_selector() {
        let mut cpu = ring3();
        cpu.poke(TSS_BASE + 8, &DATA3.to_le_bytes());
        assert_eq!(call(&mut cpu, GATE32 | 3, 0), ts_err(u32::from(DATA3)));
        cpu.poke(TSS_BASE + 8, &(DATA0 | 3).to_le_bytes());
        assert_eq!(call(&mut cpu, GATE32 | 3, 0), ts_err(u32::from(DATA0)));
        cpu.poke(TSS_BASE + 8, &READ_ONLY0.to_le_bytes());
        assert_eq!(call(&mut cpu, GATE32 | 3, 0), ts_err(u32::from(READ_ONLY0)));
    }

    #[test]
    fn call_gate_with_a_not_present_tss_stack_is_ss_with_its_selector() {
        let mut cpu = ring3();
        cpu.poke(TSS_BASE + 8, &ABSENT_STACK0.to_le_bytes());
        assert_eq!(
            call(&mut cpu, GATE32 | 3, 0),
            ss_err(u32::from(ABSENT_STACK0))
        );
    }

    #[test]
    fn call_gate_with_a_tss_too_short_for_the_stack_is_ts_with_the_tr_selector() {
        let mut cpu = ring3();
        cpu.sys.tr.limit = 8;
        assert_eq!(
            call(&mut cpu, GATE32 | 3, 0),
            ts_err(u32::from(CURRENT_TSS))
        );
    }

    #[test]
    fn call_gate_without_room_on_the_new_stack_is_ss_with_its_selector() {
        let mut cpu = ring3();
        cpu.poke(TSS_BASE + 8, &SMALL_STACK0.to_le_bytes());
        cpu.poke(TSS_BASE + 4, &0x10u32.to_le_bytes());
        let before = registers(&cpu);
        assert_eq!(
            call(&mut cpu, GATE32 | 3, 0),
            ss_err(u32::from(SMALL_STACK0))
        );
        assert_eq!(registers(&cpu), before);
        cpu.poke(TSS_BASE + 4, &0x18u32.to_le_bytes());
        call(&mut cpu, GATE32 | 3, 0).unwrap();
        assert_eq!(cpu.gpr[ESP], 0);
    }

    #[test]
    fn call_gate_target_past_the_code_limit_is_gp0_after_the_stack_checks() {
        let mut cpu = ring3();
        cpu.set_gdt(31, gate_descriptor(SMALL_CODE0, 0x2000, 0xec, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), gp_err(0));
        cpu.poke(TSS_BASE + 8, &[0, 0]);
        assert_eq!(call(&mut cpu, 0xfb, 0), ts_err(0));
    }

    #[test]
    fn call_gate_with_a_page_fault_on_the_new_stack_changes_no_register() {
        let mut cpu = ring3();
        cpu.unmapped.push(ESP0 - 0x100..ESP0);
        let before = registers(&cpu);
        assert!(matches!(
            call(&mut cpu, GATE32 | 3, 0),
            Err(Fault::Exception(Exception::PageFault { .. }))
        ));
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn call_gate_parameters_past_the_old_stack_limit_are_ss0() {
        let mut cpu = ring3();
        let mut ss = cpu.sys.segment(Seg::Ss);
        ss.limit = 0x8003;
        cpu.set_segment(Seg::Ss, ss);
        assert_eq!(call(&mut cpu, GATE32 | 3, 0), ss_err(0));
    }

    // ----- task switches ----------------------------------------------------

    /// Fills the TSSes at 0x3800 (32-bit) and 0x3900 (16-bit) with a ring-0
    /// task at EIP 0x5000 on the flat segments.
    fn with_target_tasks(mut cpu: TestCpu) -> TestCpu {
        let task = crate::cpu::task::TaskState {
            cr3: 0,
            eip: 0x5000,
            eflags: 2,
            gpr: [0, 0, 0, 0, 0x7000, 0, 0, 0],
            seg: [DATA0, CODE0, DATA0, DATA0, DATA0, DATA0],
            ldt: 0,
            trap: false,
        };
        cpu.write_tss32(0x3800, &task);
        cpu.write_tss16(0x3900, &task);
        cpu
    }

    /// The transfer switched to the task whose TSS is `tss`.
    fn switched_to(r: Result<(), Fault>, cpu: &TestCpu, tss: u16) -> bool {
        r.is_ok() && cpu.sys.tr.selector.0 & !3 == tss && cpu.eip == 0x5000
    }

    #[test]
    fn jmp_and_call_to_an_available_tss_switch_tasks() {
        let mut cpu = with_target_tasks(cpu());
        let r = jmp(&mut cpu, TSS_AVAILABLE, 0);
        assert!(switched_to(r, &cpu, TSS_AVAILABLE), "{r:?}");
        let mut cpu = with_target_tasks(self::cpu());
        let r = call(&mut cpu, TSS16_AVAILABLE, 0);
        assert!(switched_to(r, &cpu, TSS16_AVAILABLE), "{r:?}");
    }

    #[test]
    fn jmp_through_a_task_gate_switches_tasks() {
        let mut cpu = with_target_tasks(ring3());
        let r = jmp(&mut cpu, TASK_GATE | 3, 0);
        assert!(switched_to(r, &cpu, TSS_AVAILABLE), "{r:?}");
    }

    #[test]
    fn jmp_to_a_busy_tss_is_gp_with_its_selector() {
        let mut cpu = cpu();
        assert_eq!(jmp(&mut cpu, BUSY_TSS, 0), gp_err(u32::from(BUSY_TSS)));
    }

    #[test]
    fn call_to_a_tss_of_dpl_below_the_cpl_or_rpl_is_gp() {
        let mut cpu = ring3();
        assert_eq!(
            call(&mut cpu, TSS_AVAILABLE, 0),
            gp_err(u32::from(TSS_AVAILABLE))
        );
        let mut cpu = self::cpu();
        assert_eq!(
            call(&mut cpu, TSS_AVAILABLE | 1, 0),
            gp_err(u32::from(TSS_AVAILABLE))
        );
    }

    #[test]
    fn jmp_to_a_not_present_tss_is_np_with_its_selector() {
        let mut cpu = cpu();
        cpu.set_gdt(31, segment_descriptor(0x3800, 0x67, 0x09, 0));
        assert_eq!(jmp(&mut cpu, 0xf8, 0), np_err(0xf8));
    }

    #[test]
    fn a_tss_descriptor_in_the_ldt_is_gp_with_its_selector() {
        let mut cpu = cpu();
        cpu.set_gdt(31, segment_descriptor(0x4000, 0x3f, 0x82, 0));
        cpu.sys.ldtr = SegmentRegister::loaded(Selector(0xf8), cpu.gdt(31));
        cpu.poke(0x4008, &cpu.gdt(TSS_AVAILABLE >> 3).0.to_le_bytes());
        assert_eq!(jmp(&mut cpu, 0x0c, 0), gp_err(0x0c));
        cpu.set_gdt(30, gate_descriptor(0x0c, 0, 0xe5, 0));
        assert_eq!(jmp(&mut cpu, 0xf0, 0), gp_err(0x0c), "through a task gate");
    }

    #[test]
    fn task_gate_checks_its_privilege_and_presence() {
        let mut cpu = ring3();
        cpu.set_gdt(31, gate_descriptor(TSS_AVAILABLE, 0, 0x85, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), gp_err(0xf8));
        cpu.set_gdt(31, gate_descriptor(TSS_AVAILABLE, 0, 0x65, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), np_err(0xf8));
    }

    #[test]
    fn task_gate_naming_a_busy_tss_or_a_non_tss_is_gp_with_the_tss_selector() {
        let mut cpu = ring3();
        assert_eq!(
            call(&mut cpu, TASK_GATE_BUSY | 3, 0),
            gp_err(u32::from(BUSY_TSS))
        );
        cpu.set_gdt(31, gate_descriptor(DATA0, 0, 0xe5, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), gp_err(u32::from(DATA0)));
    }

    #[test]
    fn task_gate_naming_a_not_present_tss_is_np_with_the_tss_selector() {
        let mut cpu = ring3();
        cpu.set_gdt(30, segment_descriptor(0x3800, 0x67, 0x09, 0));
        cpu.set_gdt(31, gate_descriptor(0xf0, 0, 0xe5, 0));
        assert_eq!(call(&mut cpu, 0xfb, 0), np_err(0xf0));
    }

    // ----- RETF -------------------------------------------------------------

    #[test]
    fn retf_to_the_same_level_pops_cs_eip_and_releases_parameters() {
        let mut cpu = cpu();
        stack(&mut cpu, 0x8ff0, &[0x4000, u32::from(CODE16), 1, 2]);
        far_ret(&mut cpu, OperandSize::Bits32, 8).unwrap();
        assert_eq!((cpu.eip, cs(&cpu).selector), (0x4000, Selector(CODE16)));
        assert_eq!(cpu.gpr[ESP], 0x9000);
        assert_eq!(cpu.sys.cpl, 0);
    }

    #[test]
    fn retf_with_a_16bit_operand_size_pops_words() {
        let mut cpu = cpu();
        cpu.gpr[ESP] = 0x8ffc;
        cpu.poke(0x8ffc, &[0x21, 0x43, 0x38, 0x00]);
        far_ret(&mut cpu, OperandSize::Bits16, 2).unwrap();
        assert_eq!((cpu.eip, cs(&cpu).selector), (0x4321, Selector(CODE16)));
        assert_eq!(cpu.gpr[ESP], 0x9002);
    }

    #[test]
    fn retf_to_ring3_pops_ss_esp_and_nulls_ring0_data_segments() {
        let mut cpu = cpu();
        cpu.set_segment(Seg::Fs, loaded(&cpu, CONFORMING0));
        cpu.set_segment(Seg::Gs, loaded(&cpu, DATA3 | 3));
        stack(
            &mut cpu,
            0x8ff0,
            &[0x5000, u32::from(CODE3 | 3), 0x7000, u32::from(DATA3 | 3)],
        );
        far_ret(&mut cpu, OperandSize::Bits32, 0).unwrap();
        assert_eq!((cpu.sys.cpl, cpu.eip), (3, 0x5000));
        assert_eq!(cs(&cpu), loaded(&cpu, CODE3 | 3));
        assert_eq!(cpu.sys.segment(Seg::Ss), loaded(&cpu, DATA3 | 3));
        assert_eq!(cpu.gpr[ESP], 0x7000);
        assert!(!cpu.sys.segment(Seg::Ds).usable());
        assert!(!cpu.sys.segment(Seg::Es).usable());
        assert!(cpu.sys.segment(Seg::Fs).usable(), "conforming code stays");
        assert!(cpu.sys.segment(Seg::Gs).usable(), "DPL 3 data stays");
    }

    #[test]
    fn retf_to_an_outer_level_releases_parameters_on_both_stacks() {
        let mut cpu = cpu();
        stack(
            &mut cpu,
            0x8fe8,
            &[
                0x5000,
                u32::from(CODE3 | 3),
                9,
                9,
                0x7000,
                u32::from(DATA3 | 3),
            ],
        );
        far_ret(&mut cpu, OperandSize::Bits32, 8).unwrap();
        assert_eq!(cpu.gpr[ESP], 0x7008);
    }

    #[test]
    fn retf_to_an_outer_level_with_a_16bit_operand_size_pops_words() {
        let mut cpu = cpu();
        cpu.gpr[ESP] = 0x8ff8;
        let words: [u16; 4] = [0x5000, CODE3 | 3, 0x7000, DATA3 | 3];
        for (i, w) in words.iter().enumerate() {
            cpu.poke(0x8ff8 + 2 * i as u32, &w.to_le_bytes());
        }
        far_ret(&mut cpu, OperandSize::Bits16, 0).unwrap();
        assert_eq!((cpu.sys.cpl, cpu.eip, cpu.gpr[ESP]), (3, 0x5000, 0x7000));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA3 | 3));
    }

    #[test]
    fn call_through_a_gate_and_retf_with_the_parameter_count_round_trips() {
        let mut cpu = ring3();
        stack(&mut cpu, 0x8000, &[0x1111, 0x2222]);
        call(&mut cpu, GATE32 | 3, 0).unwrap();
        far_ret(&mut cpu, OperandSize::Bits32, 8).unwrap();
        assert_eq!((cpu.sys.cpl, cpu.eip, cpu.gpr[ESP]), (3, NEXT_EIP, 0x8008));
        assert_eq!(cs(&cpu).selector, Selector(CODE3 | 3));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA3 | 3));
        assert!(!cpu.sys.segment(Seg::Es).usable(), "ring-0 ES nulled");
    }

    #[test]
    fn retf_to_an_inner_level_is_gp_with_the_selector() {
        let mut cpu = ring3();
        stack(&mut cpu, 0x7000, &[0x1000, u32::from(CODE0)]);
        let before = registers(&cpu);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            gp_err(u32::from(CODE0))
        );
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn retf_to_a_null_cs_is_gp0() {
        let mut cpu = cpu();
        stack(&mut cpu, 0x7000, &[0x1000, 3]);
        assert_eq!(far_ret(&mut cpu, OperandSize::Bits32, 0), gp_err(0));
    }

    #[test]
    fn retf_to_a_data_segment_or_a_dpl_other_than_the_rpl_is_gp() {
        let mut cpu = cpu();
        stack(&mut cpu, 0x7000, &[0x1000, u32::from(DATA0)]);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            gp_err(u32::from(DATA0))
        );
        stack(&mut cpu, 0x7000, &[0x1000, u32::from(CODE3 | 1)]);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            gp_err(u32::from(CODE3))
        );
        stack(&mut cpu, 0x7000, &[0x1000, u32::from(CONFORMING3 | 1)]);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            gp_err(u32::from(CONFORMING3)),
            "conforming with DPL > RPL"
        );
    }

    #[test]
    fn retf_to_a_not_present_code_segment_is_np() {
        let mut cpu = cpu();
        stack(&mut cpu, 0x7000, &[0x1000, u32::from(ABSENT_CODE)]);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            np_err(u32::from(ABSENT_CODE))
        );
    }

    #[test]
    fn retf_to_an_outer_level_checks_the_popped_ss() {
        let mut cpu = cpu();
        let code = u32::from(CODE3 | 3);
        stack(&mut cpu, 0x7000, &[0x1000, code, 0x100, 3]);
        assert_eq!(far_ret(&mut cpu, OperandSize::Bits32, 0), gp_err(0));
        stack(
            &mut cpu,
            0x7000,
            &[0x1000, code, 0x100, u32::from(DATA0 | 3)],
        );
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            gp_err(u32::from(DATA0))
        );
        stack(
            &mut cpu,
            0x7000,
            &[0x1000, code, 0x100, u32::from(DATA3 | 2)],
        );
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            gp_err(u32::from(DATA3))
        );
        stack(
            &mut cpu,
            0x7000,
            &[0x1000, code, 0x100, u32::from(ABSENT_STACK3 | 3)],
        );
        let before = registers(&cpu);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            ss_err(u32::from(ABSENT_STACK3))
        );
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn retf_past_the_stack_limit_is_ss0() {
        let mut cpu = cpu();
        cpu.set_segment(Seg::Ss, loaded(&cpu, SMALL_STACK0));
        cpu.gpr[ESP] = 0xfffc;
        assert_eq!(far_ret(&mut cpu, OperandSize::Bits32, 0), ss_err(0));
        stack(&mut cpu, 0xfff8, &[0x1000, u32::from(CODE3 | 3)]);
        assert_eq!(
            far_ret(&mut cpu, OperandSize::Bits32, 0),
            ss_err(0),
            "SS:ESP of an outer return past the limit"
        );
    }

    #[test]
    fn retf_past_the_code_segment_limit_is_gp0_and_changes_nothing() {
        let mut cpu = cpu();
        stack(&mut cpu, 0x7000, &[0x2000, u32::from(SMALL_CODE0)]);
        let before = registers(&cpu);
        assert_eq!(far_ret(&mut cpu, OperandSize::Bits32, 0), gp_err(0));
        assert_eq!(registers(&cpu), before);
    }

    #[test]
    fn retf_on_a_16bit_stack_wraps_sp_and_keeps_the_top_of_esp() {
        let mut cpu = cpu();
        cpu.set_segment(Seg::Ss, loaded(&cpu, STACK16));
        cpu.gpr[ESP] = 0xabcd_fffc;
        cpu.poke(0xfffc, &[0x00, 0x10, 0x08, 0x00]);
        far_ret(&mut cpu, OperandSize::Bits16, 4).unwrap();
        assert_eq!(cpu.gpr[ESP], 0xabcd_0004);
        assert_eq!(cpu.eip, 0x1000);
    }
}
