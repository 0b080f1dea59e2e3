//! Delivery of interrupts and exceptions through the IDT, and IRET (Intel
//! SDM vol. 3, chapter 6: 6.10-6.13 and table 6-5; vol. 2, INT n/INTO/
//! INT3/INT1 and IRET).
//!
//! Invariants:
//!
//! - One attempt to deliver an event either completes or leaves the
//!   registers and the system state as they were, but for what the
//!   processor also keeps: CR2 loaded for a #PF, NMIs blocked by an NMI,
//!   accessed bits set, bytes written below the new stack pointer, and a
//!   task switch past its commit point (then the context holds the new
//!   task, see [`super::task`]). The exception an attempt raises is
//!   combined with the event as table 6-5 says ([`combine`]): it is
//!   delivered next, or a #DF is, or the processor shuts down
//!   ([`Fault::TripleFault`]).
//! - EXT (bit 0 of the error code) is set in exceptions raised while
//!   delivering anything but INT n, INT3 and INTO (6.13).
//! - The EIP saved for an exception raised while delivering an event is
//!   the event's `return_eip`, except for the software interrupts, whose
//!   delivery faults are faults of the instruction: when one is delivered,
//!   `ctx.eip()` must be the instruction's address (it is, while an
//!   instruction runs). After a task switch past its commit point it is
//!   the new task's EIP.
//! - EFLAGS is pushed as `ctx.eflags()`: a caller delivering a fault sets
//!   RF there first if it models RF (17.3.1.1). A successful delivery ends
//!   any interrupt shadow.
//! - Only protected mode is modelled: delivery or IRET in real-address
//!   mode, from virtual-8086 mode or into it is [`Fault::Unsupported`].
//! - IRET reads its whole frame and checks every selector before it changes
//!   anything, so a faulting IRET changes nothing but `nmi_blocked`: IRET
//!   unblocks NMIs even when it faults (6.7.1; VMX reports that case as
//!   "NMI unblocking due to IRET").

use super::context::{
    check_frame, read_stack, read_u16, read_u64, set_stack_pointer, stack_pointer, write_frame,
    CpuContext, Privilege, ESP,
};
use super::descriptor::{Descriptor, Selector, SystemKind};
use super::exception::{combine, idt_error, selector_error, Class, Combination, Exception, Fault};
use super::flags::{Cr0, Eflags};
use super::segment::{
    check_gate_target, check_return_code_segment, check_stack_segment, gp,
    invalidate_inner_segments, mark_accessed, ts,
};
use super::state::{Seg, SegmentRegister};
use super::task::{self, SwitchFault, TaskSwitchReason};

/// The instruction behind a software interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftwareKind {
    /// INT n (CD ib).
    IntN,
    /// INT3 (CC), vector 3.
    Int3,
    /// INTO (CE) with OF set, vector 4.
    Into,
    /// INT1/ICEBP (F1), vector 1: delivered like a hardware #DB, without
    /// the gate DPL check and with EXT set in delivery faults.
    Int1,
}

/// An event delivered through the IDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A processor exception (with its error code, if it has one).
    Exception(Exception),
    /// A software interrupt instruction.
    Software {
        /// The vector.
        vector: u8,
        /// The instruction.
        kind: SoftwareKind,
    },
    /// An external (maskable) interrupt with its vector.
    External(u8),
    /// A non-maskable interrupt (vector 2).
    Nmi,
}

impl Event {
    /// The IDT vector.
    pub fn vector(self) -> u8 {
        match self {
            Event::Exception(e) => e.vector(),
            Event::Software { vector, .. } | Event::External(vector) => vector,
            Event::Nmi => 2,
        }
    }

    /// The error code pushed with it (exceptions that have one only: INT n
    /// pushes none, whatever the vector).
    pub fn error_code(self) -> Option<u32> {
        match self {
            Event::Exception(e) => e.error_code(),
            _ => None,
        }
    }

    /// INT n, INT3 or INTO: the gate's DPL is checked against the CPL, and
    /// delivery faults have EXT clear (6.12.1.1, 6.13).
    pub fn is_software_interrupt(self) -> bool {
        matches!(
            self,
            Event::Software {
                kind: SoftwareKind::IntN | SoftwareKind::Int3 | SoftwareKind::Into,
                ..
            }
        )
    }

    /// Its class for double-fault detection (interrupts are benign).
    pub fn class(self) -> Class {
        match self {
            Event::Exception(e) => e.class(),
            _ => Class::Benign,
        }
    }
}

impl std::fmt::Display for Event {
    /// The event as a stop report names it ("guest exception #GP ...",
    /// "INT 0x80", "NMI").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Event::Exception(e) => write!(f, "guest exception {e} (vector {})", e.vector()),
            Event::Software {
                kind: SoftwareKind::Int3,
                ..
            } => f.write_str("INT3 (breakpoint, vector 3)"),
            Event::Software {
                kind: SoftwareKind::Into,
                ..
            } => f.write_str("INTO (overflow, vector 4)"),
            Event::Software {
                kind: SoftwareKind::Int1,
                ..
            } => f.write_str("INT1 (debug, vector 1)"),
            Event::Software { vector, .. } => write!(f, "INT {vector:#04x}"),
            Event::External(vector) => write!(f, "external interrupt, vector {vector:#04x}"),
            Event::Nmi => f.write_str("NMI"),
        }
    }
}

/// Delivers `event` through the IDT (6.12; vol. 2, INT n). `return_eip` is
/// the EIP pushed: the faulting instruction's for faults, the next
/// instruction's for traps, INT n, INT3, INTO and INT1, the interrupted
/// one's for interrupts. An exception raised while delivering it is
/// delivered in turn, as a #DF, or ends in [`Fault::TripleFault`] (table
/// 6-5); an NMI blocks further NMIs (`sys.nmi_blocked`), a #PF loads CR2.
pub fn deliver(
    ctx: &mut (impl CpuContext + ?Sized),
    event: Event,
    return_eip: u32,
) -> Result<(), Fault> {
    deliver_recording(ctx, event, return_eip, &mut Vec::new())
}

/// [`deliver`], appending each exception raised while delivering to
/// `raised`, in order (for a triple fault, the last one is the fault while
/// delivering the #DF).
pub fn deliver_recording(
    ctx: &mut (impl CpuContext + ?Sized),
    event: Event,
    return_eip: u32,
    raised: &mut Vec<Exception>,
) -> Result<(), Fault> {
    if !ctx.sys().cr0.contains(Cr0::PE) {
        return Err(Fault::Unsupported("real-address-mode interrupts"));
    }
    if ctx.eflags().contains(Eflags::VM) {
        return Err(Fault::Unsupported("virtual-8086 mode"));
    }
    let mut fault_eip = match event {
        Event::Software { .. } => ctx.eip(),
        _ => return_eip,
    };
    match event {
        Event::Exception(e) => load_cr2(ctx, e),
        Event::Nmi => ctx.sys_mut().nmi_blocked = true,
        _ => {}
    }
    let (mut event, mut eip) = (event, return_eip);
    loop {
        let second = match attempt(ctx, event, eip) {
            Ok(()) => {
                ctx.sys_mut().interrupt_shadow = false;
                return Ok(());
            }
            Err(SwitchFault {
                fault: Fault::Exception(e),
                committed,
            }) => {
                if committed {
                    fault_eip = ctx.eip();
                }
                e
            }
            Err(SwitchFault { fault, .. }) => return Err(fault),
        };
        raised.push(second);
        load_cr2(ctx, second);
        event = match combine(event.class(), second.class()) {
            Combination::Serially => Event::Exception(second),
            Combination::DoubleFault => Event::Exception(Exception::DoubleFault),
            Combination::Shutdown => return Err(Fault::TripleFault),
        };
        eip = fault_eip;
    }
}

/// A page fault loads CR2 when it is raised, whether or not its delivery
/// succeeds (6.15, interrupt 14).
fn load_cr2(ctx: &mut (impl CpuContext + ?Sized), e: Exception) {
    if let Exception::PageFault { addr, .. } = e {
        ctx.sys_mut().cr2 = addr;
    }
}

/// One attempt to deliver `event`, with EXT added to what it raises unless
/// the event is a software interrupt.
fn attempt(
    ctx: &mut (impl CpuContext + ?Sized),
    event: Event,
    return_eip: u32,
) -> Result<(), SwitchFault> {
    let result = attempt_once(ctx, event, return_eip);
    if event.is_software_interrupt() {
        return result;
    }
    result.map_err(|f| SwitchFault {
        fault: match f.fault {
            Fault::Exception(e) => Fault::Exception(e.with_ext()),
            other => other,
        },
        ..f
    })
}

fn attempt_once(
    ctx: &mut (impl CpuContext + ?Sized),
    event: Event,
    return_eip: u32,
) -> Result<(), SwitchFault> {
    let before = |e: Exception| SwitchFault {
        fault: e.into(),
        committed: false,
    };
    let gate = read_gate(ctx, event).map_err(before)?;
    if gate.system_kind() == SystemKind::TaskGate {
        return task::switch_task(
            ctx,
            gate.gate_selector(),
            TaskSwitchReason::Interrupt,
            return_eip,
            event.error_code(),
        );
    }
    through_gate(ctx, event, gate, return_eip).map_err(before)
}

/// The IDT entry for `event` after the gate checks (6.11, 6.12.1.1; vol.
/// 2, INT n): inside the IDT limit and an interrupt, trap or task gate,
/// else #GP(IDT error code); for INT n, INT3 and INTO, gate DPL at least
/// the CPL, else #GP(IDT error code); present, else #NP(IDT error code).
fn read_gate(ctx: &mut (impl CpuContext + ?Sized), event: Event) -> Result<Descriptor, Exception> {
    let vector = event.vector();
    let error = idt_error(vector);
    let idtr = ctx.sys().idtr;
    let offset = u32::from(vector) * 8;
    if offset + 7 > u32::from(idtr.limit) {
        return Err(gp(error));
    }
    let gate = Descriptor(read_u64(
        ctx,
        idtr.base.wrapping_add(offset),
        Privilege::Supervisor,
    )?);
    let is_idt_gate = !gate.is_code_or_data()
        && matches!(
            gate.system_kind(),
            SystemKind::TaskGate
                | SystemKind::InterruptGate16
                | SystemKind::InterruptGate32
                | SystemKind::TrapGate16
                | SystemKind::TrapGate32
        );
    if !is_idt_gate {
        return Err(gp(error));
    }
    if event.is_software_interrupt() && gate.dpl() < ctx.sys().cpl {
        return Err(gp(error));
    }
    if !gate.present() {
        return Err(Exception::SegmentNotPresent(error));
    }
    Ok(gate)
}

/// The stack an interrupt or trap gate pushes its frame on.
struct Stack {
    /// SS as it will be after delivery.
    ss: SegmentRegister,
    /// ESP before the frame.
    esp: u32,
    /// The #SS error code if the frame does not fit.
    limit_error: u32,
    /// An inner stack to load: its selector and descriptor.
    inner: Option<(Selector, Descriptor)>,
}

impl Stack {
    /// The current stack (same-level delivery): a frame that does not fit
    /// is #SS(0) (+EXT).
    fn current(ctx: &(impl CpuContext + ?Sized)) -> Stack {
        Stack {
            ss: ctx.sys().segment(Seg::Ss),
            esp: ctx.gpr(ESP),
            limit_error: 0,
            inner: None,
        }
    }

    /// The TSS's stack for privilege level `dpl`, checked (vol. 2, INT n,
    /// INTER-PRIVILEGE-LEVEL-INTERRUPT): #TS for a bad SS, #SS(SS) if it is
    /// not present or the frame does not fit.
    fn inner(ctx: &mut (impl CpuContext + ?Sized), dpl: u8) -> Result<Stack, Exception> {
        let (selector, esp) = task::inner_stack(ctx, dpl)?;
        let d = check_stack_segment(ctx, selector, dpl, ts)?;
        Ok(Stack {
            ss: SegmentRegister::loaded(selector, d.with_accessed()),
            esp,
            limit_error: selector_error(selector.0),
            inner: Some((selector, d)),
        })
    }

    /// Sets the inner SS descriptor's accessed bit, as loading SS does.
    fn mark_accessed(&self, ctx: &mut (impl CpuContext + ?Sized)) -> Result<(), Exception> {
        if let Some((selector, d)) = self.inner {
            mark_accessed(ctx, selector, d, ts)?;
        }
        Ok(())
    }
}

/// The values an interrupt or trap gate pushes, in push order: SS and ESP
/// when the stack changes, EFLAGS, CS, EIP, and the error code (6.12.1,
/// figure 6-4).
fn frame(
    ctx: &(impl CpuContext + ?Sized),
    event: Event,
    return_eip: u32,
    stack_changes: bool,
) -> Frame {
    let sys = ctx.sys();
    let mut frame = Frame::default();
    if stack_changes {
        frame.push(u32::from(sys.segment(Seg::Ss).selector.0));
        frame.push(ctx.gpr(ESP));
    }
    frame.push(ctx.eflags().bits());
    frame.push(u32::from(sys.segment(Seg::Cs).selector.0));
    frame.push(return_eip);
    if let Some(code) = event.error_code() {
        frame.push(code);
    }
    frame
}

/// The at most six values of an interrupt frame, without allocating.
#[derive(Default)]
struct Frame {
    values: [u32; 6],
    len: usize,
}

impl Frame {
    fn push(&mut self, value: u32) {
        self.values[self.len] = value;
        self.len += 1;
    }

    fn as_slice(&self) -> &[u32] {
        &self.values[..self.len]
    }
}

/// Delivery through an interrupt or trap gate (6.12.1; vol. 2, INT n,
/// TRAP-OR-INTERRUPT-GATE and the two PRIVILEGE-LEVEL-INTERRUPT parts):
/// every check first, then the frame, then the registers.
fn through_gate(
    ctx: &mut (impl CpuContext + ?Sized),
    event: Event,
    gate: Descriptor,
    return_eip: u32,
) -> Result<(), Exception> {
    let target_selector = gate.gate_selector();
    let target = check_gate_target(ctx, target_selector)?;
    let cpl = ctx.sys().cpl;
    let new_cpl = if target.conforming() {
        cpl
    } else {
        target.dpl()
    };
    let stack_changes = new_cpl < cpl;
    let stack = if stack_changes {
        Stack::inner(ctx, new_cpl)?
    } else {
        Stack::current(ctx)
    };
    let kind = gate.system_kind();
    let size = if kind.is_32bit() { 4 } else { 2 };
    let frame = frame(ctx, event, return_eip, stack_changes);
    let values = frame.as_slice();
    check_frame(
        stack.ss,
        stack.esp,
        values.len() as u32,
        size,
        stack.limit_error,
    )?;
    let eip = gate.gate_offset();
    if eip > target.limit() {
        return Err(gp(0));
    }
    stack.mark_accessed(ctx)?;
    let target = mark_accessed(ctx, target_selector, target, gp)?;
    let privilege = if new_cpl == 3 {
        Privilege::Current
    } else {
        Privilege::Supervisor
    };
    let esp = write_frame(ctx, stack.ss, stack.esp, size, values, privilege)?;
    let cs = SegmentRegister::loaded(target_selector.with_rpl(new_cpl), target);
    let interrupt_gate = matches!(
        kind,
        SystemKind::InterruptGate16 | SystemKind::InterruptGate32
    );
    enter_handler(ctx, stack.ss, esp, cs, eip, interrupt_gate);
    Ok(())
}

/// The registers after a delivery through an interrupt or trap gate (vol.
/// 2, INT n; 6.12.1.2): SS:ESP, CS:EIP and the CPL (CS's RPL) of the
/// handler; TF, NT, RF and VM clear, and IF too for an interrupt gate.
fn enter_handler(
    ctx: &mut (impl CpuContext + ?Sized),
    ss: SegmentRegister,
    esp: u32,
    cs: SegmentRegister,
    eip: u32,
    interrupt_gate: bool,
) {
    let sys = ctx.sys_mut();
    sys.seg[Seg::Ss as usize] = ss;
    sys.seg[Seg::Cs as usize] = cs;
    sys.cpl = cs.selector.rpl();
    ctx.set_gpr(ESP, esp);
    ctx.set_eip(eip);
    let mut eflags = ctx.eflags() - (Eflags::TF | Eflags::NT | Eflags::RF | Eflags::VM);
    if interrupt_gate {
        eflags.remove(Eflags::IF);
    }
    ctx.set_eflags(eflags);
}

/// IRET with an operand size of `operand_size` (2 or 4) bytes (vol. 2,
/// IRET; vol. 3, 6.12.1, 7.3): with NT set, a return to the task in the
/// back link; otherwise a return to the same or an outer privilege level.
/// `next_eip` is the EIP after the IRET, saved in the task a task return
/// leaves. NMIs are unblocked first, even if IRET then faults.
pub fn iret(
    ctx: &mut (impl CpuContext + ?Sized),
    operand_size: u32,
    next_eip: u32,
) -> Result<(), Fault> {
    debug_assert!(
        matches!(operand_size, 2 | 4),
        "IRET operand size {operand_size}"
    );
    if !ctx.sys().cr0.contains(Cr0::PE) {
        return Err(Fault::Unsupported("real-address-mode IRET"));
    }
    ctx.sys_mut().nmi_blocked = false;
    let eflags = ctx.eflags();
    if eflags.contains(Eflags::VM) {
        return Err(Fault::Unsupported("virtual-8086 mode"));
    }
    if eflags.contains(Eflags::NT) {
        return task_return(ctx, next_eip);
    }
    let frame = IretFrame::read(ctx, operand_size)?;
    let cpl = ctx.sys().cpl;
    if operand_size == 4 && frame.eflags & Eflags::VM.bits() != 0 && cpl == 0 {
        return Err(Fault::Unsupported("virtual-8086 mode"));
    }
    let cs = check_return_code_segment(ctx, frame.cs, gp)?;
    if frame.cs.rpl() > cpl {
        return_to_outer_level(ctx, &frame, cs)?;
    } else {
        return_to_same_level(ctx, &frame, cs)?;
    }
    Ok(())
}

/// IRET with NT set: a task switch to the TSS in the current TSS's back
/// link (vol. 2, IRET, TASK-RETURN; 7.4).
fn task_return(ctx: &mut (impl CpuContext + ?Sized), next_eip: u32) -> Result<(), Fault> {
    let base = ctx.sys().tr.base;
    let link = read_u16(
        ctx,
        base.wrapping_add(task::tss32::LINK),
        Privilege::Supervisor,
    )?;
    task::task_switch(ctx, Selector(link), TaskSwitchReason::Iret, next_eip, None)
}

/// What IRET pops: EIP, CS, EFLAGS (SS and ESP are read only for a return
/// to an outer level).
struct IretFrame {
    eip: u32,
    cs: Selector,
    eflags: u32,
    size: u32,
}

impl IretFrame {
    /// Reads the frame without popping it (#SS(0) if it is past the stack
    /// limit).
    fn read(ctx: &mut (impl CpuContext + ?Sized), size: u32) -> Result<IretFrame, Exception> {
        Ok(IretFrame {
            eip: read_stack(ctx, 0, size)?,
            cs: Selector(read_stack(ctx, size, size)? as u16),
            eflags: read_stack(ctx, 2 * size, size)?,
            size,
        })
    }
}

/// The EFLAGS IRET leaves when it pops `popped` at privilege level `cpl`
/// (the level it returns from) with `operand_size` (vol. 2, IRET): the
/// arithmetic flags, TF, DF and NT always; RF, AC and ID with a 32-bit
/// operand; IF only if CPL <= IOPL; IOPL only at CPL 0, and VIF and VIP
/// with it for a 32-bit operand. VM is never loaded here (returns to
/// virtual-8086 mode are refused before).
fn iret_eflags(current: Eflags, popped: u32, operand_size: u32, cpl: u8) -> Eflags {
    let mut changeable = Eflags::ARITHMETIC | Eflags::TF | Eflags::DF | Eflags::NT;
    if operand_size == 4 {
        changeable |= Eflags::RF | Eflags::AC | Eflags::ID;
    }
    if cpl <= current.iopl() {
        changeable |= Eflags::IF;
    }
    if cpl == 0 {
        changeable |= Eflags::IOPL0 | Eflags::IOPL1;
        if operand_size == 4 {
            changeable |= Eflags::VIF | Eflags::VIP;
        }
    }
    (current - changeable) | (Eflags::from_raw(popped) & changeable) | Eflags::FIXED
}

/// IRET to the same privilege level (vol. 2, IRET,
/// RETURN-TO-SAME-PRIVILEGE-LEVEL): EIP inside the new CS limit, else
/// #GP(0).
fn return_to_same_level(
    ctx: &mut (impl CpuContext + ?Sized),
    frame: &IretFrame,
    cs: Descriptor,
) -> Result<(), Exception> {
    if frame.eip > cs.limit() {
        return Err(gp(0));
    }
    let cs = mark_accessed(ctx, frame.cs, cs, gp)?;
    let eflags = iret_eflags(ctx.eflags(), frame.eflags, frame.size, ctx.sys().cpl);
    let sp = stack_pointer(ctx).wrapping_add(3 * frame.size);
    set_stack_pointer(ctx, sp);
    ctx.sys_mut().seg[Seg::Cs as usize] = SegmentRegister::loaded(frame.cs, cs);
    ctx.set_eip(frame.eip);
    ctx.set_eflags(eflags);
    Ok(())
}

/// IRET to an outer privilege level (vol. 2, IRET,
/// RETURN-TO-OUTER-PRIVILEGE-LEVEL): ESP and SS read from the frame (#SS(0)
/// past the stack limit), SS checked for the new level (#GP(0) null,
/// #GP(SS) bad, #SS(SS) not present), EIP inside the CS limit (#GP(0));
/// then DS, ES, FS and GS the new level may not use become null.
fn return_to_outer_level(
    ctx: &mut (impl CpuContext + ?Sized),
    frame: &IretFrame,
    cs: Descriptor,
) -> Result<(), Exception> {
    let size = frame.size;
    let esp = read_stack(ctx, 3 * size, size)?;
    let ss_selector = Selector(read_stack(ctx, 4 * size, size)? as u16);
    let new_cpl = frame.cs.rpl();
    let ss = check_stack_segment(ctx, ss_selector, new_cpl, gp)?;
    if frame.eip > cs.limit() {
        return Err(gp(0));
    }
    let cs = mark_accessed(ctx, frame.cs, cs, gp)?;
    let ss = mark_accessed(ctx, ss_selector, ss, gp)?;
    let eflags = iret_eflags(ctx.eflags(), frame.eflags, size, ctx.sys().cpl);
    let sys = ctx.sys_mut();
    sys.seg[Seg::Cs as usize] = SegmentRegister::loaded(frame.cs, cs);
    sys.seg[Seg::Ss as usize] = SegmentRegister::loaded(ss_selector, ss);
    sys.cpl = new_cpl;
    set_stack_pointer(ctx, esp);
    ctx.set_eip(frame.eip);
    ctx.set_eflags(eflags);
    invalidate_inner_segments(ctx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::context::ESP;
    use super::super::testing::world::*;
    use super::super::testing::{gate_descriptor, segment_descriptor, TestCpu};
    use super::*;

    /// The address of the instruction that raises the event.
    const AT: u32 = 0x5000;
    /// The address of the next instruction.
    const NEXT: u32 = 0x5002;

    fn ring0() -> TestCpu {
        let mut cpu = TestCpu::with_tasks();
        cpu.eip = AT;
        cpu.eflags = Eflags::FIXED | Eflags::IF;
        cpu
    }

    fn ring3() -> TestCpu {
        let mut cpu = ring0();
        cpu.enter_ring3();
        cpu
    }

    fn int(vector: u8) -> Event {
        Event::Software {
            vector,
            kind: SoftwareKind::IntN,
        }
    }

    /// One attempt, without combining: what the delivery itself raises.
    fn raw(cpu: &mut TestCpu, event: Event) -> Result<(), Fault> {
        attempt(cpu, event, NEXT).map_err(|f| f.fault)
    }

    fn gp(error: u32) -> Result<(), Fault> {
        Err(Fault::Exception(Exception::GeneralProtection(error)))
    }

    fn flags(f: Eflags) -> u32 {
        (Eflags::FIXED | f).bits()
    }

    /// The registers a failed delivery must leave alone.
    fn snapshot(cpu: &TestCpu) -> (u32, [u32; 8], Eflags, u8, [SegmentRegister; 6]) {
        (cpu.eip, cpu.gpr, cpu.eflags, cpu.sys.cpl, cpu.sys.seg)
    }

    #[test]
    fn external_interrupt_at_ring0_pushes_eflags_cs_eip_on_the_current_stack_and_clears_if() {
        let mut cpu = ring0();
        cpu.eflags |= Eflags::CF;
        deliver(&mut cpu, Event::External(0x20), AT).unwrap();
        assert_eq!(cpu.eip, handler(0x20));
        assert_eq!(cpu.gpr[ESP], RING0_ESP - 12);
        assert_eq!(
            cpu.stack_dwords(3),
            vec![AT, u32::from(CODE0), flags(Eflags::IF | Eflags::CF)]
        );
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::CF);
        assert_eq!(
            (cpu.sys.cpl, cpu.sys.segment(Seg::Cs).selector),
            (0, Selector(CODE0))
        );
    }

    #[test]
    fn trap_gate_leaves_if_set() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(CODE0, handler(0x21), 0x8f, 0));
        deliver(&mut cpu, int(0x21), NEXT).unwrap();
        assert_eq!(cpu.eip, handler(0x21));
        assert!(cpu.eflags.contains(Eflags::IF));
        assert_eq!(cpu.stack_dwords(1), vec![NEXT]);
    }

    #[test]
    fn exception_error_code_is_pushed_last() {
        let mut cpu = ring0();
        deliver(
            &mut cpu,
            Event::Exception(Exception::GeneralProtection(0x28)),
            AT,
        )
        .unwrap();
        assert_eq!(cpu.eip, handler(13));
        assert_eq!(
            cpu.stack_dwords(4),
            vec![0x28, AT, u32::from(CODE0), flags(Eflags::IF)]
        );
    }

    #[test]
    fn int_n_pushes_no_error_code_even_for_an_exception_vector() {
        let mut cpu = ring0();
        cpu.set_idt(13, gate_descriptor(CODE0, handler(13), 0xee, 0));
        deliver(&mut cpu, int(13), NEXT).unwrap();
        assert_eq!(cpu.gpr[ESP], RING0_ESP - 12);
        assert_eq!(cpu.stack_dwords(1), vec![NEXT]);
    }

    #[test]
    fn sixteen_bit_interrupt_gate_pushes_16bit_values_and_jumps_to_a_16bit_offset() {
        let mut cpu = ring0();
        cpu.set_idt(0x22, gate_descriptor(CODE16, 0x1234_5678, 0x86, 0));
        deliver(&mut cpu, Event::External(0x22), 0x0001_2345).unwrap();
        assert_eq!(cpu.eip, 0x5678);
        assert_eq!(cpu.gpr[ESP], RING0_ESP - 6);
        let words: Vec<u16> = (0..3)
            .map(|i| cpu.peek_u16(RING0_ESP - 6 + 2 * i))
            .collect();
        assert_eq!(words, vec![0x2345, CODE0, flags(Eflags::IF) as u16]);
        assert!(!cpu.sys.code32() && !cpu.eflags.contains(Eflags::IF));
    }

    #[test]
    fn vector_beyond_the_idt_limit_is_gp_with_the_idt_error_code_and_ext() {
        let mut cpu = ring0();
        cpu.sys.idtr.limit = 0x20 * 8 - 1;
        assert_eq!(raw(&mut cpu, Event::External(0x20)), gp(0x103));
        deliver(&mut cpu, Event::External(0x20), AT).unwrap();
        assert_eq!(cpu.eip, handler(13));
        assert_eq!(cpu.stack_dwords(2), vec![0x103, AT]);
    }

    #[test]
    fn int_n_beyond_the_idt_limit_has_no_ext_bit() {
        let mut cpu = ring0();
        cpu.sys.idtr.limit = 0x20 * 8 + 6;
        assert_eq!(raw(&mut cpu, int(0x20)), gp(0x102));
    }

    #[test]
    fn call_gates_reserved_types_and_segment_descriptors_in_the_idt_are_gp() {
        let mut cpu = ring0();
        for access in [0x8c, 0x8d, 0x84, 0x89] {
            cpu.set_idt(0x21, gate_descriptor(CODE0, 0, access, 0));
            assert_eq!(
                raw(&mut cpu, Event::External(0x21)),
                gp(0x10b),
                "{access:#x}"
            );
        }
        cpu.set_idt(0x21, segment_descriptor(0, 0xfffff, 0x9a, 0xc));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(0x10b));
    }

    #[test]
    fn int_n_from_ring3_through_dpl0_gate_is_gp_with_the_idt_error_code() {
        let mut cpu = ring3();
        assert_eq!(raw(&mut cpu, int(0x20)), gp(0x102));
        deliver(&mut cpu, int(0x20), NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.sys.cpl), (handler(13), 0));
        assert_eq!(
            cpu.stack_dwords(6),
            vec![
                0x102,
                AT,
                u32::from(CODE3),
                flags(Eflags::IF),
                STACK3,
                u32::from(DATA3)
            ],
            "the #GP is a fault of the INT instruction"
        );
    }

    #[test]
    fn int3_and_into_check_the_gate_dpl_but_int1_does_not() {
        let mut cpu = ring3();
        let soft = |vector, kind| Event::Software { vector, kind };
        assert_eq!(raw(&mut cpu, soft(3, SoftwareKind::Int3)), gp(0x1a));
        assert_eq!(raw(&mut cpu, soft(4, SoftwareKind::Into)), gp(0x22));
        deliver(&mut cpu, soft(1, SoftwareKind::Int1), NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.sys.cpl), (handler(1), 0));
        assert_eq!(cpu.stack_dwords(1), vec![NEXT]);
    }

    #[test]
    fn int_n_through_a_dpl3_gate_reaches_ring0() {
        let mut cpu = ring3();
        deliver(&mut cpu, int(SYSCALL), NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.sys.cpl), (handler(SYSCALL), 0));
        assert!(cpu.eflags.contains(Eflags::IF), "a trap gate");
    }

    #[test]
    fn external_interrupts_and_exceptions_ignore_the_gate_dpl() {
        let mut cpu = ring3();
        assert_eq!(raw(&mut cpu, Event::External(0x20)), Ok(()));
        let mut cpu = ring3();
        let ud = Event::Exception(Exception::InvalidOpcode);
        assert_eq!(raw(&mut cpu, ud), Ok(()));
        assert_eq!(cpu.eip, handler(6));
    }

    #[test]
    fn not_present_gate_is_np_with_the_idt_error_code() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(CODE0, handler(0x21), 0x0e, 0));
        let np = |e| Err(Fault::Exception(Exception::SegmentNotPresent(e)));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), np(0x10b));
        assert_eq!(raw(&mut cpu, int(0x21)), np(0x10a));
    }

    #[test]
    fn not_present_dpl0_gate_is_gp_for_int_n_from_ring3() {
        let mut cpu = ring3();
        cpu.set_idt(0x21, gate_descriptor(CODE0, handler(0x21), 0x0e, 0));
        assert_eq!(raw(&mut cpu, int(0x21)), gp(0x10a));
    }

    #[test]
    fn null_target_selector_is_gp_with_only_ext() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(0, handler(0x21), 0xee, 0));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(1));
        assert_eq!(raw(&mut cpu, int(0x21)), gp(0));
    }

    #[test]
    fn target_selector_past_the_gdt_limit_is_gp_with_the_selector() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(0x100, 0, 0x8e, 0));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(0x101));
    }

    #[test]
    fn target_that_is_data_or_less_privileged_than_the_cpl_is_gp_with_the_selector() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(DATA0, 0, 0x8e, 0));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(0x11));
        cpu.set_idt(0x21, gate_descriptor(CODE3, 0, 0x8e, 0));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(0x19));
    }

    #[test]
    fn target_not_present_is_np_with_the_selector() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(ABSENT_CODE, 0, 0x8e, 0));
        assert_eq!(
            raw(&mut cpu, Event::External(0x21)),
            Err(Fault::Exception(Exception::SegmentNotPresent(0x61)))
        );
    }

    #[test]
    fn interrupt_to_ring0_switches_to_the_tss_stack_and_pushes_ss_esp() {
        let mut cpu = ring3();
        deliver(&mut cpu, Event::External(0x20), AT).unwrap();
        assert_eq!(cpu.sys.cpl, 0);
        assert_eq!(cpu.sys.segment(Seg::Cs).selector, Selector(CODE0));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA0));
        assert_eq!(cpu.gpr[ESP], STACK0 - 20);
        assert_eq!(
            cpu.stack_dwords(5),
            vec![
                AT,
                u32::from(CODE3),
                flags(Eflags::IF),
                STACK3,
                u32::from(DATA3)
            ]
        );
        assert_eq!(
            cpu.sys.segment(Seg::Ds).selector,
            Selector(DATA3),
            "data segments stay"
        );
    }

    #[test]
    fn interrupt_to_a_dpl1_handler_uses_ss1_and_esp1() {
        let mut cpu = ring3();
        cpu.set_idt(0x21, gate_descriptor(CODE1 & !3, 0x1000, 0x8e, 0));
        deliver(&mut cpu, Event::External(0x21), AT).unwrap();
        assert_eq!(cpu.sys.cpl, 1);
        assert_eq!(cpu.sys.segment(Seg::Cs).selector, Selector(CODE1));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA1));
        assert_eq!(cpu.gpr[ESP], STACK1 - 20);
    }

    #[test]
    fn conforming_target_keeps_the_cpl_and_the_stack() {
        let mut cpu = ring3();
        cpu.set_idt(0x21, gate_descriptor(CONFORMING0, 0x1000, 0xee, 0));
        deliver(&mut cpu, int(0x21), NEXT).unwrap();
        assert_eq!(cpu.sys.cpl, 3);
        assert_eq!(cpu.sys.segment(Seg::Cs).selector, Selector(CONFORMING0 | 3));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA3));
        assert_eq!(cpu.gpr[ESP], STACK3 - 12);
        assert_eq!(cpu.stack_dwords(2), vec![NEXT, u32::from(CODE3)]);
    }

    #[test]
    fn null_ss0_is_ts_with_only_ext() {
        let mut cpu = ring3();
        cpu.poke_u16(TSS_A_BASE + 8, 0);
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::InvalidTss(1)))
        );
    }

    #[test]
    fn ss0_of_the_wrong_privilege_is_ts_with_the_selector() {
        let mut cpu = ring3();
        cpu.poke_u16(TSS_A_BASE + 8, DATA1);
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::InvalidTss(0x59)))
        );
        cpu.poke_u16(TSS_A_BASE + 8, DATA3 & !3);
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::InvalidTss(0x21))),
            "RPL 0 but DPL 3"
        );
        cpu.poke_u16(TSS_A_BASE + 8, READ_ONLY);
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::InvalidTss(0x99))),
            "not writable"
        );
    }

    #[test]
    fn ss0_not_present_is_ss_with_the_selector_and_changes_nothing() {
        let mut cpu = ring3();
        cpu.poke_u16(TSS_A_BASE + 8, ABSENT_DATA);
        let before = snapshot(&cpu);
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::StackFault(0x69)))
        );
        assert_eq!(snapshot(&cpu), before);
    }

    #[test]
    fn tss_too_short_for_the_inner_stack_is_ts_with_the_tr_selector() {
        let mut cpu = ring3();
        cpu.sys.tr.limit = 8;
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::InvalidTss(0x31)))
        );
        cpu.sys.tr.limit = 9;
        assert_eq!(raw(&mut cpu, Event::External(0x20)), Ok(()));
    }

    #[test]
    fn sixteen_bit_tss_supplies_sp0_and_ss0() {
        let mut cpu = ring3();
        cpu.sys.tr = SegmentRegister::loaded(Selector(TSS16), cpu.gdt(14).with_busy(true));
        cpu.poke_u16(TSS16_BASE + 2, 0x6000);
        cpu.poke_u16(TSS16_BASE + 4, DATA0);
        deliver(&mut cpu, Event::External(0x20), AT).unwrap();
        assert_eq!(cpu.gpr[ESP], 0x6000 - 20);
        assert_eq!(cpu.stack_dwords(5)[3..], [STACK3, u32::from(DATA3)]);
    }

    #[test]
    fn inner_frame_that_does_not_fit_is_ss_with_the_selector_and_writes_nothing() {
        let mut cpu = ring3();
        cpu.poke_u16(TSS_A_BASE + 8, SHORT_DATA);
        cpu.poke_u32(TSS_A_BASE + 4, 0x7008);
        let before = snapshot(&cpu);
        assert_eq!(
            raw(&mut cpu, Event::External(0x20)),
            Err(Fault::Exception(Exception::StackFault(0x89)))
        );
        assert_eq!(snapshot(&cpu), before);
        assert_eq!(cpu.peek(0x6ff0, 0x18), &[0u8; 0x18]);
    }

    #[test]
    fn same_level_frame_that_does_not_fit_is_ss_with_only_ext() {
        let mut cpu = ring0();
        cpu.load(Seg::Ss, SHORT_DATA);
        cpu.gpr[ESP] = 0x7008;
        let ss = |e| Err(Fault::Exception(Exception::StackFault(e)));
        assert_eq!(raw(&mut cpu, Event::External(0x20)), ss(1));
        cpu.set_idt(0x21, gate_descriptor(CODE0, 0, 0xee, 0));
        assert_eq!(raw(&mut cpu, int(0x21)), ss(0));
    }

    #[test]
    fn gate_offset_beyond_the_code_limit_is_gp_with_only_ext() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(SHORT_CODE, 0x2000, 0x8e, 0));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(1));
    }

    #[test]
    fn page_fault_while_pushing_the_frame_becomes_a_double_fault() {
        let mut cpu = ring3();
        cpu.set_idt(14, gate_descriptor(CONFORMING0, handler(14), 0x8e, 0));
        cpu.unmapped.push(STACK3 - 0x1000..STACK3);
        let pf = Exception::PageFault {
            addr: 0x1234,
            error: 4,
        };
        let mut raised = Vec::new();
        deliver_recording(&mut cpu, Event::Exception(pf), AT, &mut raised).unwrap();
        let push_fault = Exception::PageFault {
            addr: STACK3 - 4,
            error: 6,
        };
        assert_eq!(raised, vec![push_fault]);
        assert_eq!((cpu.eip, cpu.sys.cpl), (handler(8), 0));
        assert_eq!(
            cpu.stack_dwords(6),
            vec![
                0,
                AT,
                u32::from(CODE3),
                flags(Eflags::IF),
                STACK3,
                u32::from(DATA3)
            ]
        );
        assert_eq!(cpu.sys.cr2, STACK3 - 4, "CR2 holds the latest #PF");
    }

    #[test]
    fn fault_while_delivering_a_double_fault_is_a_triple_fault() {
        let mut cpu = ring0();
        cpu.unmapped.push(RING0_ESP - 0x1000..RING0_ESP);
        let before = snapshot(&cpu);
        let mut raised = Vec::new();
        let pf = Exception::PageFault { addr: 0, error: 0 };
        assert_eq!(
            deliver_recording(&mut cpu, Event::Exception(pf), AT, &mut raised),
            Err(Fault::TripleFault)
        );
        let push_fault = Exception::PageFault {
            addr: RING0_ESP - 4,
            error: 2,
        };
        assert_eq!(raised, vec![push_fault, push_fault]);
        assert_eq!(snapshot(&cpu), before);
    }

    #[test]
    fn gp_while_delivering_a_gp_is_a_double_fault() {
        let mut cpu = ring0();
        cpu.set_idt(13, gate_descriptor(CODE0, handler(13), 0x0e, 0));
        let mut raised = Vec::new();
        let first = Event::Exception(Exception::GeneralProtection(0));
        deliver_recording(&mut cpu, first, AT, &mut raised).unwrap();
        assert_eq!(raised, vec![Exception::SegmentNotPresent(0x6b)]);
        assert_eq!(cpu.eip, handler(8));
        assert_eq!(cpu.stack_dwords(2), vec![0, AT]);
    }

    #[test]
    fn page_fault_while_delivering_a_gp_is_delivered_as_a_page_fault() {
        let mut cpu = ring0();
        cpu.unmapped.push(IDT_ENTRY_13..IDT_ENTRY_13 + 8);
        deliver(
            &mut cpu,
            Event::Exception(Exception::GeneralProtection(0)),
            AT,
        )
        .unwrap();
        assert_eq!(cpu.eip, handler(14));
        assert_eq!(cpu.stack_dwords(2), vec![0, AT]);
        assert_eq!(cpu.sys.cr2, IDT_ENTRY_13);
    }

    const IDT_ENTRY_13: u32 = super::super::testing::IDT + 13 * 8;

    #[test]
    fn page_fault_while_delivering_a_page_fault_through_the_idt_is_a_double_fault() {
        let mut cpu = ring0();
        cpu.unmapped
            .push(super::super::testing::IDT + 14 * 8..super::super::testing::IDT + 15 * 8);
        let pf = Exception::PageFault { addr: 9, error: 0 };
        deliver(&mut cpu, Event::Exception(pf), AT).unwrap();
        assert_eq!(cpu.eip, handler(8));
    }

    #[test]
    fn fault_while_delivering_an_external_interrupt_is_delivered_with_ext() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(CODE0, handler(0x21), 0x0e, 0));
        deliver(&mut cpu, Event::External(0x21), 0x6000).unwrap();
        assert_eq!(cpu.eip, handler(11));
        assert_eq!(
            cpu.stack_dwords(2),
            vec![0x10b, 0x6000],
            "the interrupted EIP, not the current one"
        );
    }

    #[test]
    fn fault_during_int_n_saves_the_eip_of_the_int_instruction() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(CODE0, handler(0x21), 0x6e, 0));
        deliver(&mut cpu, int(0x21), NEXT).unwrap();
        assert_eq!(cpu.eip, handler(11));
        assert_eq!(cpu.stack_dwords(2), vec![0x10a, AT]);
    }

    #[test]
    fn page_fault_delivery_loads_cr2_and_pushes_the_error_code() {
        let mut cpu = ring0();
        let pf = Exception::PageFault {
            addr: 0xdead_b000,
            error: 2,
        };
        deliver(&mut cpu, Event::Exception(pf), AT).unwrap();
        assert_eq!(cpu.sys.cr2, 0xdead_b000);
        assert_eq!(cpu.stack_dwords(2), vec![2, AT]);
    }

    #[test]
    fn nmi_uses_vector_2_and_blocks_nmis() {
        let mut cpu = ring0();
        deliver(&mut cpu, Event::Nmi, AT).unwrap();
        assert_eq!(cpu.eip, handler(2));
        assert!(cpu.sys.nmi_blocked);
    }

    #[test]
    fn delivery_clears_tf_nt_and_rf_and_pushes_them() {
        let mut cpu = ring0();
        let kept = Eflags::AC | Eflags::DF | Eflags::OF;
        cpu.eflags |= Eflags::TF | Eflags::NT | Eflags::RF | kept;
        cpu.sys.interrupt_shadow = true;
        deliver(&mut cpu, Event::Exception(Exception::DivideError), AT).unwrap();
        assert_eq!(cpu.eflags, Eflags::FIXED | kept);
        assert_eq!(
            cpu.stack_dwords(3)[2],
            flags(Eflags::IF | Eflags::TF | Eflags::NT | Eflags::RF | kept)
        );
        assert!(!cpu.sys.interrupt_shadow);
    }

    #[test]
    fn delivery_sets_the_accessed_bits_of_the_new_cs_and_ss() {
        let mut cpu = ring3();
        assert_eq!(cpu.gdt(1).type_field() & 1, 0);
        deliver(&mut cpu, Event::External(0x20), AT).unwrap();
        assert_eq!(cpu.gdt(1).type_field() & 1, 1);
        assert_eq!(cpu.gdt(2).type_field() & 1, 1);
        assert_eq!(cpu.sys.segment(Seg::Cs).attr & 1, 1);
    }

    #[test]
    fn virtual_8086_and_real_mode_are_unsupported() {
        let mut cpu = ring0();
        cpu.eflags |= Eflags::VM;
        assert_eq!(
            deliver(&mut cpu, Event::External(0x20), AT),
            Err(Fault::Unsupported("virtual-8086 mode"))
        );
        let mut cpu = ring0();
        cpu.sys.cr0.remove(Cr0::PE);
        assert!(matches!(
            deliver(&mut cpu, Event::External(0x20), AT),
            Err(Fault::Unsupported(_))
        ));
    }

    #[test]
    fn sixteen_bit_trap_gate_from_ring3_pushes_16bit_ss_sp() {
        let mut cpu = ring3();
        cpu.set_idt(0x22, gate_descriptor(CODE16, 0x0100, 0xe7, 0));
        deliver(&mut cpu, int(0x22), NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.sys.cpl), (0x100, 0));
        assert_eq!(cpu.gpr[ESP], STACK0 - 10);
        assert_eq!(
            cpu.stack_words(5),
            vec![
                NEXT as u16,
                CODE3,
                flags(Eflags::IF) as u16,
                STACK3 as u16,
                DATA3
            ]
        );
        assert!(cpu.eflags.contains(Eflags::IF));
    }

    fn task_b(cpu: &mut TestCpu) {
        let state = task::TaskState {
            eip: 0x6000,
            eflags: flags(Eflags::empty()),
            gpr: [0, 0, 0, 0, 0x5800, 0, 0, 0],
            seg: [DATA0, CODE0, DATA0, DATA0, 0, 0],
            ..task::TaskState::default()
        };
        cpu.write_tss32(TSS_B_BASE, &state);
    }

    #[test]
    fn task_gate_switches_tasks_and_pushes_the_error_code() {
        let mut cpu = ring0();
        task_b(&mut cpu);
        cpu.set_idt(13, gate_descriptor(TSS_B, 0, 0x85, 0));
        deliver(
            &mut cpu,
            Event::Exception(Exception::GeneralProtection(0x28)),
            AT,
        )
        .unwrap();
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_B));
        assert_eq!((cpu.eip, cpu.gpr[ESP]), (0x6000, 0x57fc));
        assert_eq!(cpu.stack_dwords(1), vec![0x28]);
        assert!(cpu.eflags.contains(Eflags::NT));
        assert_eq!(cpu.peek_u16(TSS_B_BASE), TSS_A, "back link");
        assert_eq!(cpu.tss32(TSS_A_BASE).eip, AT);
        assert_eq!(cpu.gdt(6).type_field(), 0xb, "the old task stays busy");
        assert_eq!(cpu.gdt(7).type_field(), 0xb);
    }

    #[test]
    fn task_gate_to_a_busy_tss_is_gp_with_the_tss_selector_and_ext() {
        let mut cpu = ring0();
        cpu.set_idt(0x21, gate_descriptor(TSS_A, 0, 0x85, 0));
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(0x31));
        deliver(&mut cpu, Event::External(0x21), AT).unwrap();
        assert_eq!(cpu.stack_dwords(2), vec![0x31, AT]);
    }

    #[test]
    fn double_fault_through_a_task_gate_runs_the_double_fault_task() {
        let mut cpu = ring0();
        let state = task::TaskState {
            eip: 0x7777,
            eflags: flags(Eflags::empty()),
            gpr: [0, 0, 0, 0, 0xf000, 0, 0, 0],
            seg: [DATA0, CODE0, DATA0, DATA0, DATA0, DATA0],
            ..task::TaskState::default()
        };
        cpu.write_tss32(TSS_DF_BASE, &state);
        cpu.set_idt(8, gate_descriptor(TSS_DF, 0, 0x85, 0));
        cpu.unmapped.push(RING0_ESP - 0x1000..RING0_ESP);
        let pf = Exception::PageFault { addr: 0, error: 0 };
        deliver(&mut cpu, Event::Exception(pf), AT).unwrap();
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_DF));
        assert_eq!((cpu.eip, cpu.gpr[ESP]), (0x7777, 0xeffc));
        assert_eq!(cpu.stack_dwords(1), vec![0]);
        let saved = cpu.tss32(TSS_A_BASE);
        assert_eq!((saved.eip, saved.gpr[ESP]), (AT, RING0_ESP));
    }

    #[test]
    fn fault_after_a_task_gate_commit_is_delivered_in_the_new_task() {
        let mut cpu = ring0();
        task_b(&mut cpu);
        cpu.poke_u16(TSS_B_BASE + 0x54, 0x100);
        cpu.set_idt(0x21, gate_descriptor(TSS_B, 0, 0x85, 0));
        deliver(&mut cpu, Event::External(0x21), AT).unwrap();
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_B));
        assert_eq!(cpu.eip, handler(10));
        assert_eq!(
            cpu.stack_dwords(2),
            vec![0x101, 0x6000],
            "#TS(DS | EXT) at the new task's EIP"
        );
    }

    #[test]
    fn a_failed_attempt_changes_no_register() {
        let mut cpu = ring3();
        cpu.set_idt(0x21, gate_descriptor(SHORT_CODE, 0x2000, 0x8e, 0));
        let before = snapshot(&cpu);
        assert_eq!(raw(&mut cpu, Event::External(0x21)), gp(1));
        assert_eq!(snapshot(&cpu), before);
    }

    // IRET.

    /// Puts an IRET frame of dwords at `esp` and points ESP at it.
    fn frame32(cpu: &mut TestCpu, esp: u32, values: &[u32]) {
        for (i, v) in values.iter().enumerate() {
            cpu.poke_u32(esp + 4 * i as u32, *v);
        }
        cpu.gpr[ESP] = esp;
    }

    fn iret_err(e: Exception) -> Result<(), Fault> {
        Err(Fault::Exception(e))
    }

    #[test]
    fn iret_at_the_same_level_pops_eip_cs_and_eflags() {
        let mut cpu = ring0();
        frame32(
            &mut cpu,
            0x6000,
            &[0x1111, u32::from(CODE0), flags(Eflags::CF)],
        );
        iret(&mut cpu, 4, NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.gpr[ESP]), (0x1111, 0x600c));
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::CF);
        assert_eq!(cpu.sys.cpl, 0);
    }

    #[test]
    fn iret_to_ring3_nulls_ring0_data_segments() {
        let mut cpu = ring0();
        cpu.load(Seg::Es, DATA3);
        cpu.load(Seg::Gs, CONFORMING0);
        frame32(
            &mut cpu,
            0x6000,
            &[
                0x2222,
                u32::from(CODE3),
                flags(Eflags::IF),
                0x8800,
                u32::from(DATA3),
            ],
        );
        iret(&mut cpu, 4, NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.gpr[ESP], cpu.sys.cpl), (0x2222, 0x8800, 3));
        assert_eq!(cpu.sys.segment(Seg::Cs).selector, Selector(CODE3));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(DATA3));
        assert!(!cpu.sys.segment(Seg::Ds).usable());
        assert!(!cpu.sys.segment(Seg::Fs).usable());
        assert!(cpu.sys.segment(Seg::Es).usable(), "DPL 3 data stays");
        assert!(cpu.sys.segment(Seg::Gs).usable(), "conforming code stays");
    }

    #[test]
    fn iret_at_cpl3_cannot_change_iopl_or_if_when_cpl_is_above_iopl() {
        let mut cpu = ring3();
        let popped = flags(Eflags::CF) | 0x3000;
        frame32(&mut cpu, 0x7000, &[0x1000, u32::from(CODE3), popped]);
        iret(&mut cpu, 4, NEXT).unwrap();
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::IF | Eflags::CF);
    }

    #[test]
    fn iret_changes_if_but_not_iopl_when_cpl_is_at_most_iopl() {
        let mut cpu = ring3();
        cpu.eflags = cpu.eflags.with_iopl(3);
        frame32(
            &mut cpu,
            0x7000,
            &[0x1000, u32::from(CODE3), flags(Eflags::empty())],
        );
        iret(&mut cpu, 4, NEXT).unwrap();
        assert!(!cpu.eflags.contains(Eflags::IF));
        assert_eq!(cpu.eflags.iopl(), 3);
    }

    #[test]
    fn iret_at_cpl0_loads_iopl_if_ac_rf_id_vif_and_vip() {
        let mut cpu = ring0();
        let loaded = Eflags::AC | Eflags::RF | Eflags::ID | Eflags::VIF | Eflags::VIP;
        let popped = flags(loaded) | 0x2000;
        frame32(&mut cpu, 0x6000, &[0x1000, u32::from(CODE0), popped]);
        iret(&mut cpu, 4, NEXT).unwrap();
        assert_eq!(cpu.eflags, (Eflags::FIXED | loaded).with_iopl(2));
    }

    #[test]
    fn sixteen_bit_iret_pops_words_and_leaves_the_upper_eflags() {
        let mut cpu = ring0();
        cpu.eflags |= Eflags::AC | Eflags::RF;
        cpu.gpr[ESP] = 0x6000;
        for (i, w) in [0x1234u16, CODE0, flags(Eflags::ZF) as u16]
            .iter()
            .enumerate()
        {
            cpu.poke_u16(0x6000 + 2 * i as u32, *w);
        }
        iret(&mut cpu, 2, NEXT).unwrap();
        assert_eq!((cpu.eip, cpu.gpr[ESP]), (0x1234, 0x6006));
        assert_eq!(
            cpu.eflags,
            Eflags::FIXED | Eflags::ZF | Eflags::AC | Eflags::RF
        );
    }

    #[test]
    fn iret_to_a_more_privileged_level_is_gp_with_the_state_unchanged() {
        let mut cpu = ring3();
        frame32(
            &mut cpu,
            0x7000,
            &[0x1000, u32::from(CODE0), flags(Eflags::empty())],
        );
        let before = snapshot(&cpu);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::GeneralProtection(0x08))
        );
        assert_eq!(snapshot(&cpu), before);
    }

    #[test]
    fn iret_with_a_null_cs_is_gp0_and_a_data_cs_is_gp_with_the_selector() {
        let mut cpu = ring0();
        frame32(&mut cpu, 0x6000, &[0x1000, 0, flags(Eflags::empty())]);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::GeneralProtection(0))
        );
        frame32(&mut cpu, 0x6000, &[0x1000, u32::from(DATA0), 0]);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::GeneralProtection(0x10))
        );
    }

    #[test]
    fn iret_to_a_non_conforming_cs_whose_dpl_is_not_the_rpl_is_gp() {
        let mut cpu = ring0();
        frame32(&mut cpu, 0x6000, &[0x1000, u32::from(CODE0 | 3), 0]);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::GeneralProtection(0x08))
        );
    }

    #[test]
    fn iret_to_a_not_present_cs_is_np() {
        let mut cpu = ring0();
        frame32(&mut cpu, 0x6000, &[0x1000, u32::from(ABSENT_CODE), 0]);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::SegmentNotPresent(0x60))
        );
    }

    #[test]
    fn iret_to_ring3_with_a_bad_ss_is_gp_with_the_ss_selector_and_changes_nothing() {
        let mut cpu = ring0();
        let ss_cases = [
            (u32::from(DATA0), Exception::GeneralProtection(0x10)),
            (0, Exception::GeneralProtection(0)),
            (u32::from(CODE3), Exception::GeneralProtection(0x18)),
        ];
        for (ss, expected) in ss_cases {
            frame32(
                &mut cpu,
                0x6000,
                &[0x1000, u32::from(CODE3), flags(Eflags::empty()), 0x8000, ss],
            );
            let before = snapshot(&cpu);
            assert_eq!(iret(&mut cpu, 4, NEXT), iret_err(expected));
            assert_eq!(snapshot(&cpu), before);
        }
    }

    #[test]
    fn iret_to_ring3_with_a_not_present_ss_is_ss_with_the_selector() {
        let mut cpu = ring0();
        cpu.set_gdt(20, segment_descriptor(0, 0xfffff, 0x72, 0xc));
        frame32(
            &mut cpu,
            0x6000,
            &[0x1000, u32::from(CODE3), 0, 0x8000, 0xa3],
        );
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::StackFault(0xa0))
        );
    }

    #[test]
    fn iret_to_an_eip_beyond_the_cs_limit_is_gp0() {
        let mut cpu = ring0();
        frame32(&mut cpu, 0x6000, &[0x2000, u32::from(SHORT_CODE), 0]);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            iret_err(Exception::GeneralProtection(0))
        );
        assert_eq!(cpu.gpr[ESP], 0x6000);
    }

    #[test]
    fn iret_unblocks_nmis_even_when_it_faults() {
        let mut cpu = ring0();
        cpu.sys.nmi_blocked = true;
        frame32(&mut cpu, 0x6000, &[0x1000, 0, 0]);
        assert!(iret(&mut cpu, 4, NEXT).is_err());
        assert!(!cpu.sys.nmi_blocked);
    }

    #[test]
    fn iret_frame_past_the_stack_limit_is_ss0() {
        let mut cpu = ring0();
        cpu.load(Seg::Ss, SHORT_DATA);
        cpu.gpr[ESP] = 0x6ff8;
        assert_eq!(iret(&mut cpu, 4, NEXT), iret_err(Exception::StackFault(0)));
    }

    #[test]
    fn iret_into_virtual_8086_mode_is_unsupported_but_vm_is_ignored_above_cpl0() {
        let mut cpu = ring0();
        let vm = flags(Eflags::VM);
        frame32(&mut cpu, 0x6000, &[0x1000, u32::from(CODE0), vm]);
        assert_eq!(
            iret(&mut cpu, 4, NEXT),
            Err(Fault::Unsupported("virtual-8086 mode"))
        );
        let mut cpu = ring3();
        frame32(&mut cpu, 0x7000, &[0x1000, u32::from(CODE3), vm]);
        iret(&mut cpu, 4, NEXT).unwrap();
        assert!(!cpu.eflags.contains(Eflags::VM));
    }

    #[test]
    fn iret_to_a_16bit_stack_changes_only_sp() {
        let mut cpu = ring0();
        cpu.set_gdt(21, segment_descriptor(0, 0xffff, 0xf2, 0));
        frame32(
            &mut cpu,
            0xf_0000,
            &[0x1000, u32::from(CODE3), 0, 0xdead_1234, 0xab],
        );
        iret(&mut cpu, 4, NEXT).unwrap();
        assert_eq!(cpu.gpr[ESP], 0x000f_1234);
    }

    #[test]
    fn interrupt_from_ring3_and_iret_return_to_the_same_state() {
        let mut cpu = ring3();
        cpu.eflags |= Eflags::CF;
        let before = snapshot(&cpu);
        deliver(&mut cpu, Event::External(0x20), AT).unwrap();
        assert_eq!(cpu.sys.cpl, 0);
        iret(&mut cpu, 4, 0).unwrap();
        assert_eq!(snapshot(&cpu), before);
    }
}
