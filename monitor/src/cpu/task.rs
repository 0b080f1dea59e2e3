//! Task switches through TSS descriptors and task gates (Intel SDM vol. 3,
//! chapter 7, the steps of 7.3 and tables 7-1 and 7-2; vol. 2, the
//! SWITCH-TASKS parts of JMP, CALL, INT n and IRET).
//!
//! A switch is split at the SDM's commit point (7.3, between steps 11 and
//! 12):
//!
//! - Before it, every check on the new TSS descriptor is made, the new
//!   task's state is read, and the memory writes (the old task's state into
//!   its TSS, all or nothing; the back link; the busy bits) are made in an
//!   order that can be repeated. If one of them faults, the registers and
//!   the system state are as they were and the fault is the old task's: the
//!   instruction or event can be restarted ([`SwitchFault::committed`] is
//!   false).
//! - After it, EFLAGS, EIP, the general registers, TR, CR3, CR0.TS, the CPL
//!   and the segment selectors are the new task's; LDTR and the segment
//!   registers hold their new selectors with unusable caches until they are
//!   loaded and checked. The loads that can still fault (LDTR, CS, SS, ES,
//!   DS, FS, GS, the pushed error code, EIP against the CS limit) fault in
//!   the new task: its state is in the context, so `ctx.eip()` is the EIP
//!   to save for the fault (`committed` is true).
//!
//! What the callers do:
//!
//! - JMP and CALL check the privilege of the TSS descriptor or task gate
//!   (DPL against CPL and RPL) and the task gate itself; this module checks
//!   the TSS descriptor's table, type, busy bit, presence and limit, which
//!   every reason needs;
//! - CR3 is loaded from a 32-bit TSS when paging is on; a caller learns of
//!   a new address space by comparing `sys.cr3` (and CR0.PG) before and
//!   after, as after any instruction (no field records the load; a reload
//!   of the same value, which flushes the TLB's non-global entries, shows
//!   only as a change of `sys.tr`);
//! - a new TSS with its T bit set leaves
//!   [`SystemState::pending_debug_trap`](super::state::SystemState) set
//!   (and DR6.BT): whoever runs the guest delivers that #DB before the new
//!   task's first instruction.

use super::context::{push, read_u16, read_u32, AccessKind, CpuContext, Privilege};
use super::descriptor::{Descriptor, Selector};
use super::exception::{selector_error, Exception, Fault};
use super::flags::{Cr0, Dr6, Eflags};
use super::segment::{
    check_data_segment, check_return_code_segment, check_stack_segment, gp, mark_accessed,
    read_descriptor, ts, write_descriptor, CheckFault,
};
use super::state::{Seg, SegmentRegister};

/// What caused a task switch (it decides the busy bits, NT and the back
/// link, table 7-2).
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

impl TaskSwitchReason {
    /// What a bad TSS descriptor raises: #TS for IRET's back link, #GP for
    /// the others (vol. 2, IRET, JMP, CALL, INT n).
    fn descriptor_fault(self) -> CheckFault {
        if self == TaskSwitchReason::Iret {
            ts
        } else {
            gp
        }
    }

    /// The new task is nested in the old one: NT set in it, the back link
    /// written, the old task left busy (CALL, interrupts).
    fn nests(self) -> bool {
        matches!(self, TaskSwitchReason::Call | TaskSwitchReason::Interrupt)
    }

    /// The old task is left: its busy bit is cleared (JMP, IRET).
    fn leaves(self) -> bool {
        matches!(self, TaskSwitchReason::Jmp | TaskSwitchReason::Iret)
    }
}

/// The two TSS formats (7.2.1 and 7.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TssFormat {
    /// The 80286 TSS (types 1 and 3).
    Bits16,
    /// The 32-bit TSS (types 9 and 11).
    Bits32,
}

impl TssFormat {
    /// The format a TSS descriptor's (or TR's) type field names, if it
    /// names a TSS.
    pub fn from_type(type_field: u8) -> Option<TssFormat> {
        match type_field {
            1 | 3 => Some(TssFormat::Bits16),
            9 | 11 => Some(TssFormat::Bits32),
            _ => None,
        }
    }

    /// The smallest limit a TSS of this format may have (7.2.2).
    pub fn min_limit(self) -> u32 {
        match self {
            TssFormat::Bits16 => 0x2b,
            TssFormat::Bits32 => 0x67,
        }
    }

    /// The size of the words it holds and of the error code pushed in the
    /// new task.
    pub fn word(self) -> u32 {
        match self {
            TssFormat::Bits16 => 2,
            TssFormat::Bits32 => 4,
        }
    }
}

/// Field offsets of a 32-bit TSS (figure 7-2).
pub mod tss32 {
    /// The previous task link (back link).
    pub const LINK: u32 = 0x00;
    /// ESP0; ESPn is at `ESP0 + 8 * n`, SSn 4 bytes after it.
    pub const ESP0: u32 = 0x04;
    /// CR3 (PDBR).
    pub const CR3: u32 = 0x1c;
    /// EIP; the dynamic fields run from here to `LDT`.
    pub const EIP: u32 = 0x20;
    /// EFLAGS.
    pub const EFLAGS: u32 = 0x24;
    /// EAX; the general registers follow in encoding order, 4 bytes apart.
    pub const EAX: u32 = 0x28;
    /// ES; ES, CS, SS, DS, FS, GS follow 4 bytes apart (16-bit selectors).
    pub const ES: u32 = 0x48;
    /// The LDT selector.
    pub const LDT: u32 = 0x60;
    /// Bit 0: the debug trap (T) bit; bits 16-31: the I/O map base.
    pub const TRAP: u32 = 0x64;
}

/// Field offsets of a 16-bit TSS (figure 7-11).
pub mod tss16 {
    /// The previous task link (back link).
    pub const LINK: u32 = 0x00;
    /// SP0; SPn is at `SP0 + 4 * n`, SSn 2 bytes after it.
    pub const SP0: u32 = 0x02;
    /// IP; the dynamic fields run from here to `LDT`.
    pub const IP: u32 = 0x0e;
    /// FLAGS.
    pub const FLAGS: u32 = 0x10;
    /// AX; the general registers follow in encoding order, 2 bytes apart.
    pub const AX: u32 = 0x12;
    /// ES; ES, CS, SS, DS follow 2 bytes apart.
    pub const ES: u32 = 0x22;
    /// The LDT selector.
    pub const LDT: u32 = 0x2a;
}

/// The state of a task that is not running, as its TSS holds it. A task
/// switch reads all of it from the new TSS and writes the dynamic fields
/// (EIP, EFLAGS, the general registers and the segment selectors) into
/// the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TaskState {
    /// CR3 (0 in a 16-bit TSS, which has none).
    pub cr3: u32,
    /// EIP (IP).
    pub eip: u32,
    /// EFLAGS (FLAGS).
    pub eflags: u32,
    /// EAX..EDI (AX..DI).
    pub gpr: [u32; 8],
    /// ES, CS, SS, DS, FS, GS (FS and GS 0 in a 16-bit TSS).
    pub seg: [u16; 6],
    /// The LDT selector.
    pub ldt: u16,
    /// The T bit (a debug trap on entering the task; 32-bit TSS only).
    pub trap: bool,
}

fn u16_at(bytes: &[u8], at: u32) -> u16 {
    let at = at as usize;
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: u32) -> u32 {
    let at = at as usize;
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn put_u16(bytes: &mut [u8], at: u32, value: u16) {
    let at = at as usize;
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: u32, value: u32) {
    let at = at as usize;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

impl TaskState {
    /// Reads the state the TSS at linear `base` holds (supervisor reads).
    pub fn read(
        ctx: &mut (impl CpuContext + ?Sized),
        base: u32,
        format: TssFormat,
    ) -> Result<TaskState, Exception> {
        match format {
            TssFormat::Bits32 => {
                let mut b = [0u8; (tss32::TRAP + 4 - tss32::CR3) as usize];
                ctx.read_linear(
                    base.wrapping_add(tss32::CR3),
                    &mut b,
                    AccessKind::Read,
                    Privilege::Supervisor,
                )?;
                let at = |offset: u32| offset - tss32::CR3;
                Ok(TaskState {
                    cr3: u32_at(&b, at(tss32::CR3)),
                    eip: u32_at(&b, at(tss32::EIP)),
                    eflags: u32_at(&b, at(tss32::EFLAGS)),
                    gpr: std::array::from_fn(|r| u32_at(&b, at(tss32::EAX) + 4 * r as u32)),
                    seg: std::array::from_fn(|s| u16_at(&b, at(tss32::ES) + 4 * s as u32)),
                    ldt: u16_at(&b, at(tss32::LDT)),
                    trap: u16_at(&b, at(tss32::TRAP)) & 1 != 0,
                })
            }
            TssFormat::Bits16 => {
                let mut b = [0u8; (tss16::LDT + 2 - tss16::IP) as usize];
                ctx.read_linear(
                    base.wrapping_add(tss16::IP),
                    &mut b,
                    AccessKind::Read,
                    Privilege::Supervisor,
                )?;
                let at = |offset: u32| offset - tss16::IP;
                let mut seg = [0u16; 6];
                for (s, sel) in seg.iter_mut().take(4).enumerate() {
                    *sel = u16_at(&b, at(tss16::ES) + 2 * s as u32);
                }
                Ok(TaskState {
                    cr3: 0,
                    eip: u32::from(u16_at(&b, at(tss16::IP))),
                    eflags: u32::from(u16_at(&b, at(tss16::FLAGS))),
                    gpr: std::array::from_fn(|r| {
                        u32::from(u16_at(&b, at(tss16::AX) + 2 * r as u32))
                    }),
                    seg,
                    ldt: u16_at(&b, at(tss16::LDT)),
                    trap: false,
                })
            }
        }
    }

    /// Writes the dynamic fields (EIP, EFLAGS, general registers, segment
    /// selectors) into the TSS at linear `base`, all or nothing: a fault
    /// writes none of them. The reserved halves next to the 32-bit TSS's
    /// selectors keep their contents.
    pub fn save(
        &self,
        ctx: &mut (impl CpuContext + ?Sized),
        base: u32,
        format: TssFormat,
    ) -> Result<(), Exception> {
        match format {
            TssFormat::Bits32 => {
                let mut b = [0u8; (tss32::LDT - tss32::EIP) as usize];
                let start = base.wrapping_add(tss32::EIP);
                ctx.read_linear(start, &mut b, AccessKind::Read, Privilege::Supervisor)?;
                let at = |offset: u32| offset - tss32::EIP;
                put_u32(&mut b, at(tss32::EIP), self.eip);
                put_u32(&mut b, at(tss32::EFLAGS), self.eflags);
                for (r, value) in self.gpr.iter().enumerate() {
                    put_u32(&mut b, at(tss32::EAX) + 4 * r as u32, *value);
                }
                for (s, sel) in self.seg.iter().enumerate() {
                    put_u16(&mut b, at(tss32::ES) + 4 * s as u32, *sel);
                }
                ctx.write_linear(start, &b, Privilege::Supervisor)
            }
            TssFormat::Bits16 => {
                let mut b = [0u8; (tss16::LDT - tss16::IP) as usize];
                let at = |offset: u32| offset - tss16::IP;
                put_u16(&mut b, at(tss16::IP), self.eip as u16);
                put_u16(&mut b, at(tss16::FLAGS), self.eflags as u16);
                for (r, value) in self.gpr.iter().enumerate() {
                    put_u16(&mut b, at(tss16::AX) + 2 * r as u32, *value as u16);
                }
                for (s, sel) in self.seg.iter().take(4).enumerate() {
                    put_u16(&mut b, at(tss16::ES) + 2 * s as u32, *sel);
                }
                ctx.write_linear(base.wrapping_add(tss16::IP), &b, Privilege::Supervisor)
            }
        }
    }

    /// The running task's state as a task switch saves it: `next_eip` as
    /// EIP, EFLAGS with NT cleared if `clear_nt` (IRET).
    fn current(ctx: &(impl CpuContext + ?Sized), next_eip: u32, clear_nt: bool) -> TaskState {
        let mut eflags = ctx.eflags();
        if clear_nt {
            eflags.remove(Eflags::NT);
        }
        let sys = ctx.sys();
        TaskState {
            cr3: sys.cr3,
            eip: next_eip,
            eflags: eflags.bits(),
            gpr: std::array::from_fn(|r| ctx.gpr(r)),
            seg: Seg::ALL.map(|s| sys.segment(s).selector.0),
            ldt: sys.ldtr.selector.0,
            trap: false,
        }
    }
}

/// SSn and ESPn for privilege level `dpl` (0-2) from the current TSS, as an
/// interrupt or a call to an inner level loads them (6.12.1, 5.8.5; vol.
/// 2, INT n, INTER-PRIVILEGE-LEVEL-INTERRUPT). A TSS whose limit does not
/// cover them (or a TR that holds no TSS) is #TS(TR selector). The caller
/// checks SS (`segment::check_stack_segment` with `segment::ts`).
pub fn inner_stack(
    ctx: &mut (impl CpuContext + ?Sized),
    dpl: u8,
) -> Result<(Selector, u32), Exception> {
    let tr = ctx.sys().tr;
    let error = Exception::InvalidTss(selector_error(tr.selector.0));
    let format = TssFormat::from_type((tr.attr & 0xf) as u8).ok_or(error)?;
    let word = format.word();
    let offset = match format {
        TssFormat::Bits32 => tss32::ESP0 + 8 * u32::from(dpl),
        TssFormat::Bits16 => tss16::SP0 + 4 * u32::from(dpl),
    };
    if offset + word + 1 > tr.limit {
        return Err(error);
    }
    let at = tr.base.wrapping_add(offset);
    let esp = match format {
        TssFormat::Bits32 => read_u32(ctx, at, Privilege::Supervisor)?,
        TssFormat::Bits16 => u32::from(read_u16(ctx, at, Privilege::Supervisor)?),
    };
    let ss = read_u16(ctx, at.wrapping_add(word), Privilege::Supervisor)?;
    Ok((Selector(ss), esp))
}

/// A task switch that did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchFault {
    /// What stopped it.
    pub fault: Fault,
    /// It stopped after the commit point: the context holds the new task,
    /// and the fault is the new task's.
    pub committed: bool,
}

/// The new task, checked and read, before the commit point.
struct Incoming {
    selector: Selector,
    descriptor: Descriptor,
    format: TssFormat,
    state: TaskState,
}

/// DR7's local enables (L0-L3, LE), which a task switch clears (17.2.4).
const DR7_LOCAL_ENABLES: u32 = 0x155;

/// Switches to the task whose TSS `selector` names. `next_eip` is the EIP
/// saved in the old task; `error_code` is pushed on the new task's stack
/// (exceptions with an error code delivered through a task gate). On an
/// error, the context holds the old task if the switch stopped before its
/// commit point and the new one after (see the module documentation);
/// [`switch_task`] says which.
pub fn task_switch(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    reason: TaskSwitchReason,
    next_eip: u32,
    error_code: Option<u32>,
) -> Result<(), Fault> {
    switch_task(ctx, selector, reason, next_eip, error_code).map_err(|f| f.fault)
}

/// [`task_switch`], saying whether a fault is the old task's or the new
/// one's.
pub fn switch_task(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    reason: TaskSwitchReason,
    next_eip: u32,
    error_code: Option<u32>,
) -> Result<(), SwitchFault> {
    let incoming = prepare(ctx, selector, reason, next_eip).map_err(|fault| SwitchFault {
        fault,
        committed: false,
    })?;
    commit(ctx, &incoming, reason);
    finish(ctx, &incoming, error_code).map_err(|e| SwitchFault {
        fault: e.into(),
        committed: true,
    })
}

/// The checks on the new TSS descriptor (7.3 steps 2-4, table 7-1; vol. 2,
/// JMP, CALL, INT n and IRET): in the GDT and inside it, a TSS, available
/// (busy for IRET), else #GP(selector) (#TS for IRET); present, else
/// #NP(selector); a limit the format needs, else #TS(selector).
fn check_new_tss(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    reason: TaskSwitchReason,
) -> Result<(Descriptor, TssFormat), Exception> {
    let fault = reason.descriptor_fault();
    let error = selector_error(selector.0);
    if selector.in_ldt() {
        return Err(fault(error));
    }
    let d = read_descriptor(ctx, selector, fault)?;
    let format = if d.is_code_or_data() {
        None
    } else {
        TssFormat::from_type(d.type_field())
    }
    .ok_or(fault(error))?;
    let busy = d.type_field() & 2 != 0;
    if busy != (reason == TaskSwitchReason::Iret) {
        return Err(fault(error));
    }
    if !d.present() {
        return Err(Exception::SegmentNotPresent(error));
    }
    if d.limit() < format.min_limit() {
        return Err(ts(error));
    }
    Ok((d, format))
}

/// Everything before the commit point (7.3 steps 1-10): the checks, the
/// new task's state read, then [`record_switch`]. Restartable: the writes
/// are the same on a retry, and the registers are untouched.
fn prepare(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    reason: TaskSwitchReason,
    next_eip: u32,
) -> Result<Incoming, Fault> {
    let (descriptor, format) = check_new_tss(ctx, selector, reason)?;
    let state = TaskState::read(ctx, descriptor.base(), format)?;
    if format == TssFormat::Bits32 && state.eflags & Eflags::VM.bits() != 0 {
        return Err(Fault::Unsupported("virtual-8086 mode"));
    }
    let incoming = Incoming {
        selector,
        descriptor,
        format,
        state,
    };
    record_switch(ctx, &incoming, reason, next_eip)?;
    Ok(incoming)
}

/// The memory writes of a switch (7.3 steps 6-10, table 7-2): the old
/// task's state into its TSS (all or nothing; NT cleared for IRET), the
/// back link into the new TSS (CALL, interrupts), the old busy bit cleared
/// (JMP, IRET; not for a null TR, which names no descriptor) and the new
/// one set (all but IRET).
fn record_switch(
    ctx: &mut (impl CpuContext + ?Sized),
    incoming: &Incoming,
    reason: TaskSwitchReason,
    next_eip: u32,
) -> Result<(), Exception> {
    let tr = ctx.sys().tr;
    let old_format =
        TssFormat::from_type((tr.attr & 0xf) as u8).ok_or(ts(selector_error(tr.selector.0)))?;
    TaskState::current(ctx, next_eip, reason == TaskSwitchReason::Iret)
        .save(ctx, tr.base, old_format)?;
    let new_base = incoming.descriptor.base();
    if reason.nests() {
        let link = tr.selector.0.to_le_bytes();
        ctx.write_linear(
            new_base.wrapping_add(tss32::LINK),
            &link,
            Privilege::Supervisor,
        )?;
    }
    let fault = reason.descriptor_fault();
    if reason.leaves() && !tr.selector.is_null() {
        let old = read_descriptor(ctx, tr.selector, fault)?;
        write_descriptor(ctx, tr.selector, old.with_busy(false), fault)?;
    }
    if reason != TaskSwitchReason::Iret {
        let busy = incoming.descriptor.with_busy(true);
        write_descriptor(ctx, incoming.selector, busy, fault)?;
    }
    Ok(())
}

/// The commit point (7.3 steps 11-12): TR, CR0.TS, CR3, EFLAGS, EIP, the
/// general registers and the selectors become the new task's; LDTR and
/// the segment registers are unusable until [`finish`] loads them.
fn commit(ctx: &mut (impl CpuContext + ?Sized), incoming: &Incoming, reason: TaskSwitchReason) {
    let s = &incoming.state;
    let wide = incoming.format == TssFormat::Bits32;
    let mut eflags = Eflags::from_raw(if wide { s.eflags } else { s.eflags & 0xffff });
    if reason.nests() {
        eflags.insert(Eflags::NT);
    }
    ctx.set_eflags(eflags);
    ctx.set_eip(if wide { s.eip } else { s.eip & 0xffff });
    for (r, value) in s.gpr.iter().enumerate() {
        let value = if wide {
            *value
        } else {
            (ctx.gpr(r) & 0xffff_0000) | (value & 0xffff)
        };
        ctx.set_gpr(r, value);
    }
    let sys = ctx.sys_mut();
    sys.cr0.insert(Cr0::TS);
    if wide && sys.paging() {
        sys.cr3 = s.cr3;
    }
    sys.tr = SegmentRegister::loaded(incoming.selector, incoming.descriptor.with_busy(true));
    sys.ldtr = SegmentRegister::null(Selector(s.ldt));
    for seg in Seg::ALL {
        sys.seg[seg as usize] = SegmentRegister::null(Selector(s.seg[seg as usize]));
    }
    sys.cpl = Selector(s.seg[Seg::Cs as usize]).rpl();
    sys.dr[7] &= !DR7_LOCAL_ENABLES;
}

/// After the commit point (7.3 steps 13-14, table 7-1; vol. 2, INT n,
/// TASK-GATE): LDTR and the segment registers loaded and checked, the
/// error code pushed, EIP checked against the CS limit (#GP(0)), and the
/// T bit's debug trap made pending. Faults here are the new task's.
fn finish(
    ctx: &mut (impl CpuContext + ?Sized),
    incoming: &Incoming,
    error_code: Option<u32>,
) -> Result<(), Exception> {
    load_ldt(ctx, Selector(incoming.state.ldt))?;
    load_segments(ctx, &incoming.state.seg)?;
    if let Some(code) = error_code {
        push(ctx, code, incoming.format.word())?;
    }
    if ctx.eip() > ctx.sys().segment(Seg::Cs).limit {
        return Err(gp(0));
    }
    if incoming.state.trap {
        let sys = ctx.sys_mut();
        sys.dr[6] |= Dr6::BT.bits();
        sys.pending_debug_trap = true;
    }
    Ok(())
}

/// Loads LDTR from the new TSS: a null selector leaves it unusable; one in
/// an LDT, outside the GDT, naming anything but an LDT, or naming one that
/// is not present is #TS(selector) (table 7-1).
fn load_ldt(ctx: &mut (impl CpuContext + ?Sized), selector: Selector) -> Result<(), Exception> {
    if selector.is_null() {
        return Ok(());
    }
    let error = ts(selector_error(selector.0));
    if selector.in_ldt() {
        return Err(error);
    }
    let d = read_descriptor(ctx, selector, ts)?;
    let is_ldt = !d.is_code_or_data() && d.type_field() == 2;
    if !is_ldt || !d.present() {
        return Err(error);
    }
    ctx.sys_mut().ldtr = SegmentRegister::loaded(selector, d);
    Ok(())
}

/// Loads CS, SS, ES, DS, FS and GS from the new TSS with #TS (and #NP,
/// #SS) for bad selectors (table 7-1). CS comes first: its RPL is the new
/// CPL the others are checked against.
fn load_segments(
    ctx: &mut (impl CpuContext + ?Sized),
    selectors: &[u16; 6],
) -> Result<(), Exception> {
    let cs = Selector(selectors[Seg::Cs as usize]);
    let d = check_return_code_segment(ctx, cs, ts)?;
    load(ctx, Seg::Cs, cs, d)?;
    let ss = Selector(selectors[Seg::Ss as usize]);
    let d = check_stack_segment(ctx, ss, cs.rpl(), ts)?;
    load(ctx, Seg::Ss, ss, d)?;
    for seg in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
        let selector = Selector(selectors[seg as usize]);
        if let Some(d) = check_data_segment(ctx, selector, ts)? {
            load(ctx, seg, selector, d)?;
        }
    }
    Ok(())
}

fn load(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    selector: Selector,
    d: Descriptor,
) -> Result<(), Exception> {
    let d = mark_accessed(ctx, selector, d, ts)?;
    ctx.sys_mut().seg[seg as usize] = SegmentRegister::loaded(selector, d);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::context::ESP;
    use super::super::interrupt::iret;
    use super::super::testing::world::*;
    use super::super::testing::{segment_descriptor, system_descriptor, TestCpu};
    use super::*;

    /// Where task A is when it switches.
    const AT: u32 = 0x5000;
    /// The EIP task A resumes at.
    const NEXT: u32 = 0x5005;
    const A_GPR: [u32; 8] = [10, 11, 12, 13, RING0_ESP, 15, 16, 17];
    const B_GPR: [u32; 8] = [1, 2, 3, 4, 0x5800, 6, 7, 8];

    fn flags(f: Eflags) -> u32 {
        (Eflags::FIXED | f).bits()
    }

    fn task_b() -> TaskState {
        TaskState {
            cr3: 0x0004_0000,
            eip: 0x6000,
            eflags: flags(Eflags::IF),
            gpr: B_GPR,
            seg: [DATA0, CODE0, DATA0, DATA0, 0, DATA0],
            ldt: 0,
            trap: false,
        }
    }

    /// Task A running at [`AT`], task B's TSS filled in (`edit` changes it).
    fn cpu_with(edit: impl FnOnce(&mut TaskState)) -> TestCpu {
        let mut cpu = TestCpu::with_tasks();
        cpu.gpr = A_GPR;
        cpu.eip = AT;
        cpu.eflags = Eflags::FIXED | Eflags::CF;
        let mut b = task_b();
        edit(&mut b);
        cpu.write_tss32(TSS_B_BASE, &b);
        cpu
    }

    fn task_a() -> TestCpu {
        cpu_with(|_| {})
    }

    fn switch(cpu: &mut TestCpu, selector: u16, reason: TaskSwitchReason) -> Result<(), Fault> {
        task_switch(cpu, Selector(selector), reason, NEXT, None)
    }

    fn fault(e: Exception) -> Result<(), Fault> {
        Err(Fault::Exception(e))
    }

    /// What a switch that stops before its commit point must not change.
    fn snapshot(
        cpu: &TestCpu,
    ) -> (
        u32,
        [u32; 8],
        Eflags,
        u8,
        [SegmentRegister; 6],
        Selector,
        Cr0,
    ) {
        (
            cpu.eip,
            cpu.gpr,
            cpu.eflags,
            cpu.sys.cpl,
            cpu.sys.seg,
            cpu.sys.tr.selector,
            cpu.sys.cr0,
        )
    }

    fn busy(cpu: &TestCpu, gdt_index: u16) -> bool {
        cpu.gdt(gdt_index).type_field() & 2 != 0
    }

    #[test]
    fn jmp_to_an_available_tss_saves_the_old_task_and_loads_the_new_one() {
        let mut cpu = task_a();
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        let saved = cpu.tss32(TSS_A_BASE);
        assert_eq!(saved.eip, NEXT);
        assert_eq!(saved.eflags, flags(Eflags::CF));
        assert_eq!(saved.gpr, A_GPR);
        assert_eq!(saved.seg, [DATA0, CODE0, DATA0, DATA0, DATA0, DATA0]);
        assert_eq!((cpu.eip, cpu.gpr), (0x6000, B_GPR));
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::IF);
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_B));
        assert_eq!(cpu.sys.tr.base, TSS_B_BASE);
        assert_eq!(cpu.sys.cpl, 0);
        assert!(cpu.sys.segment(Seg::Ds).usable() && cpu.sys.segment(Seg::Gs).usable());
        assert!(!cpu.sys.segment(Seg::Fs).usable(), "a null selector");
        assert!(cpu.sys.segment(Seg::Cs).is_code());
    }

    #[test]
    fn jmp_clears_the_old_busy_bit_sets_the_new_and_leaves_nt_and_the_link_alone() {
        let mut cpu = task_a();
        cpu.eflags |= Eflags::NT;
        cpu.poke_u16(TSS_B_BASE, 0x1234);
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert!(!busy(&cpu, 6) && busy(&cpu, 7));
        assert_eq!(cpu.tss32(TSS_A_BASE).eflags, flags(Eflags::CF | Eflags::NT));
        assert!(!cpu.eflags.contains(Eflags::NT), "NT from the new TSS");
        assert_eq!(cpu.peek_u16(TSS_B_BASE), 0x1234);
        assert_eq!(cpu.sys.tr.attr & 0xf, 0xb, "TR caches a busy TSS");
    }

    #[test]
    fn call_to_tss_sets_nt_and_the_back_link_and_iret_returns() {
        let mut cpu = task_a();
        switch(&mut cpu, TSS_B, TaskSwitchReason::Call).unwrap();
        assert_eq!(cpu.peek_u16(TSS_B_BASE), TSS_A);
        assert!(cpu.eflags.contains(Eflags::NT));
        assert!(busy(&cpu, 6) && busy(&cpu, 7));
        cpu.gpr[0] = 0x99;
        iret(&mut cpu, 4, 0x6010).unwrap();
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_A));
        assert_eq!((cpu.eip, cpu.gpr), (NEXT, A_GPR));
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::CF);
        assert!(busy(&cpu, 6) && !busy(&cpu, 7));
        let saved = cpu.tss32(TSS_B_BASE);
        assert_eq!((saved.eip, saved.gpr[0]), (0x6010, 0x99));
        assert_eq!(
            saved.eflags,
            flags(Eflags::IF),
            "NT cleared in the left task"
        );
    }

    #[test]
    fn switch_to_a_busy_tss_is_gp_with_the_selector_before_the_commit_point() {
        let mut cpu = task_a();
        let before = snapshot(&cpu);
        for reason in [TaskSwitchReason::Jmp, TaskSwitchReason::Call] {
            assert_eq!(
                switch_task(&mut cpu, Selector(TSS_A), reason, NEXT, None),
                Err(SwitchFault {
                    fault: Fault::Exception(Exception::GeneralProtection(0x30)),
                    committed: false
                })
            );
        }
        assert_eq!(snapshot(&cpu), before);
    }

    #[test]
    fn iret_to_a_task_that_is_not_busy_is_ts_with_the_link() {
        let mut cpu = task_a();
        cpu.poke_u16(TSS_A_BASE, TSS_B);
        cpu.eflags |= Eflags::NT;
        assert_eq!(iret(&mut cpu, 4, NEXT), fault(Exception::InvalidTss(0x38)));
        cpu.poke_u16(TSS_A_BASE, CODE0);
        assert_eq!(iret(&mut cpu, 4, NEXT), fault(Exception::InvalidTss(0x08)));
        cpu.poke_u16(TSS_A_BASE, TSS_B | 4);
        assert_eq!(iret(&mut cpu, 4, NEXT), fault(Exception::InvalidTss(0x3c)));
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_A));
    }

    #[test]
    fn tss_limit_below_the_minimum_is_ts_with_the_selector() {
        let mut cpu = task_a();
        cpu.set_gdt(7, system_descriptor(TSS_B_BASE, 0x66, 0x89));
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            fault(Exception::InvalidTss(0x38))
        );
        cpu.set_gdt(14, system_descriptor(TSS16_BASE, 0x2a, 0x81));
        assert_eq!(
            switch(&mut cpu, TSS16, TaskSwitchReason::Jmp),
            fault(Exception::InvalidTss(0x70))
        );
    }

    #[test]
    fn not_present_tss_is_np_with_the_selector() {
        let mut cpu = task_a();
        cpu.set_gdt(7, system_descriptor(TSS_B_BASE, 0x67, 0x09));
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Call),
            fault(Exception::SegmentNotPresent(0x38))
        );
    }

    #[test]
    fn tss_selector_that_is_null_in_the_ldt_or_past_the_gdt_is_gp() {
        let mut cpu = task_a();
        for (selector, error) in [(0, 0), (TSS_B | 4, 0x3c), (0x100, 0x100)] {
            assert_eq!(
                switch(&mut cpu, selector, TaskSwitchReason::Jmp),
                fault(Exception::GeneralProtection(error)),
                "{selector:#x}"
            );
        }
    }

    #[test]
    fn descriptor_that_is_not_a_tss_is_gp() {
        let mut cpu = task_a();
        for selector in [CODE0, LDT] {
            assert_eq!(
                switch(&mut cpu, selector, TaskSwitchReason::Interrupt),
                fault(Exception::GeneralProtection(u32::from(selector)))
            );
        }
    }

    #[test]
    fn task_switch_sets_cr0_ts_and_loads_cr3_only_with_paging() {
        let mut cpu = task_a();
        cpu.sys.cr3 = 0x1000;
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert!(cpu.sys.cr0.contains(Cr0::TS));
        assert_eq!(cpu.sys.cr3, 0x1000, "no paging: CR3 is not loaded");
        let mut cpu = task_a();
        cpu.sys.cr0 |= Cr0::PG;
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert_eq!(cpu.sys.cr3, 0x0004_0000);
    }

    #[test]
    fn bad_data_selector_in_the_new_tss_is_ts_in_the_new_task() {
        let mut cpu = cpu_with(|b| b.seg[Seg::Ds as usize] = 0x100);
        assert_eq!(
            switch_task(&mut cpu, Selector(TSS_B), TaskSwitchReason::Jmp, NEXT, None),
            Err(SwitchFault {
                fault: Fault::Exception(Exception::InvalidTss(0x100)),
                committed: true
            })
        );
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_B));
        assert_eq!((cpu.eip, cpu.gpr), (0x6000, B_GPR));
        let ds = cpu.sys.segment(Seg::Ds);
        assert_eq!((ds.selector, ds.usable()), (Selector(0x100), false));
        assert!(cpu.sys.segment(Seg::Ss).usable(), "loaded before DS");
        assert_eq!(cpu.tss32(TSS_A_BASE).eip, NEXT, "the old task was saved");
    }

    #[test]
    fn data_segment_checks_use_the_new_cpl() {
        let mut cpu = cpu_with(|b| {
            b.seg = [DATA3, CODE3, DATA3, DATA0, 0, 0];
        });
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            fault(Exception::InvalidTss(0x10))
        );
        assert_eq!(cpu.sys.cpl, 3);
    }

    #[test]
    fn not_present_segments_in_the_new_tss_are_np_for_data_and_ss_for_the_stack() {
        let mut cpu = cpu_with(|b| b.seg[Seg::Es as usize] = ABSENT_DATA);
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            fault(Exception::SegmentNotPresent(0x68))
        );
        let mut cpu = cpu_with(|b| b.seg[Seg::Ss as usize] = ABSENT_DATA);
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            fault(Exception::StackFault(0x68))
        );
        let mut cpu = cpu_with(|b| b.seg[Seg::Cs as usize] = ABSENT_CODE);
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            fault(Exception::SegmentNotPresent(0x60))
        );
    }

    #[test]
    fn bad_code_or_stack_selectors_in_the_new_tss_are_ts() {
        let cases = [
            (Seg::Cs, CODE0 | 1, 0x08),
            (Seg::Cs, DATA0, 0x10),
            (Seg::Cs, 0, 0),
            (Seg::Ss, 0, 0),
            (Seg::Ss, DATA1, 0x58),
            (Seg::Ss, READ_ONLY, 0x98),
        ];
        for (seg, selector, error) in cases {
            let mut cpu = cpu_with(|b| b.seg[seg as usize] = selector);
            assert_eq!(
                switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
                fault(Exception::InvalidTss(error)),
                "{} = {selector:#x}",
                seg.name()
            );
        }
    }

    #[test]
    fn conforming_code_in_the_new_tss_may_have_a_dpl_below_the_rpl() {
        let mut cpu = cpu_with(|b| b.seg = [DATA3, CONFORMING0 | 3, DATA3, DATA3, 0, 0]);
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert_eq!(cpu.sys.cpl, 3);
    }

    #[test]
    fn fault_before_the_commit_point_leaves_the_old_task_untouched() {
        let mut cpu = task_a();
        cpu.read_only.push(TSS_A_BASE..TSS_A_BASE + 0x68);
        let before = snapshot(&cpu);
        assert_eq!(
            switch_task(
                &mut cpu,
                Selector(TSS_B),
                TaskSwitchReason::Call,
                NEXT,
                None
            ),
            Err(SwitchFault {
                fault: Fault::Exception(Exception::PageFault {
                    addr: TSS_A_BASE + 0x20,
                    error: 3
                }),
                committed: false
            })
        );
        assert_eq!(snapshot(&cpu), before);
        assert!(busy(&cpu, 6) && !busy(&cpu, 7));
        assert_eq!(cpu.peek_u16(TSS_B_BASE), 0, "no back link written");
        assert_eq!(cpu.tss32(TSS_A_BASE).eip, 0, "nothing saved");
    }

    #[test]
    fn unreadable_new_tss_is_a_page_fault_in_the_old_task() {
        let mut cpu = task_a();
        cpu.unmapped.push(TSS_B_BASE..TSS_B_BASE + 0x68);
        let before = snapshot(&cpu);
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            fault(Exception::PageFault {
                addr: TSS_B_BASE + 0x1c,
                error: 0
            })
        );
        assert_eq!(snapshot(&cpu), before);
    }

    #[test]
    fn ldt_is_loaded_from_the_new_tss_before_the_segments() {
        let mut cpu = cpu_with(|b| {
            b.ldt = LDT;
            b.seg[Seg::Ds as usize] = 0x0c;
        });
        cpu.poke(
            LDT_BASE + 8,
            &segment_descriptor(0x2_0000, 0xfff, 0x92, 0x4)
                .0
                .to_le_bytes(),
        );
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert_eq!(
            (cpu.sys.ldtr.selector, cpu.sys.ldtr.base, cpu.sys.ldtr.limit),
            (Selector(LDT), LDT_BASE, 0x17)
        );
        assert_eq!(cpu.sys.segment(Seg::Ds).base, 0x2_0000);
    }

    #[test]
    fn ldt_selector_that_names_no_present_ldt_is_ts() {
        let absent_ldt = system_descriptor(LDT_BASE, 0x17, 0x02);
        for (ldt, error) in [
            (DATA0, 0x10),
            (LDT | 4, 0x7c),
            (0x100, 0x100),
            (0x08 * 20, 0xa0),
        ] {
            let mut cpu = cpu_with(|b| b.ldt = ldt);
            cpu.set_gdt(20, absent_ldt);
            assert_eq!(
                switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
                fault(Exception::InvalidTss(error)),
                "LDT {ldt:#x}"
            );
        }
    }

    #[test]
    fn t_bit_sets_dr6_bt_and_a_pending_debug_trap() {
        let mut cpu = cpu_with(|b| b.trap = true);
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert!(cpu.sys.pending_debug_trap);
        assert_ne!(cpu.sys.dr[6] & Dr6::BT.bits(), 0);
        let mut cpu = task_a();
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert!(!cpu.sys.pending_debug_trap);
    }

    #[test]
    fn task_switch_clears_the_local_breakpoint_enables() {
        let mut cpu = task_a();
        cpu.sys.dr[7] = 0x7ff;
        switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp).unwrap();
        assert_eq!(cpu.sys.dr[7], 0x6aa);
    }

    #[test]
    fn new_task_eip_beyond_the_cs_limit_is_gp0_in_the_new_task() {
        let mut cpu = cpu_with(|b| b.seg[Seg::Cs as usize] = SHORT_CODE);
        assert_eq!(
            switch_task(&mut cpu, Selector(TSS_B), TaskSwitchReason::Jmp, NEXT, None),
            Err(SwitchFault {
                fault: Fault::Exception(Exception::GeneralProtection(0)),
                committed: true
            })
        );
        assert_eq!(cpu.eip, 0x6000);
    }

    #[test]
    fn virtual_8086_task_is_unsupported_before_the_commit_point() {
        let mut cpu = cpu_with(|b| b.eflags |= Eflags::VM.bits());
        let before = snapshot(&cpu);
        assert_eq!(
            switch(&mut cpu, TSS_B, TaskSwitchReason::Jmp),
            Err(Fault::Unsupported("virtual-8086 mode"))
        );
        assert_eq!(snapshot(&cpu), before);
    }

    #[test]
    fn error_code_is_pushed_on_the_new_task_stack_in_the_tss_word_size() {
        let mut cpu = task_a();
        task_switch(
            &mut cpu,
            Selector(TSS_B),
            TaskSwitchReason::Interrupt,
            AT,
            Some(0xabcd_0010),
        )
        .unwrap();
        assert_eq!((cpu.gpr[ESP], cpu.peek_u32(0x57fc)), (0x57fc, 0xabcd_0010));
        assert!(cpu.eflags.contains(Eflags::NT));
        assert_eq!(cpu.peek_u16(TSS_B_BASE), TSS_A);
    }

    fn task_16() -> TaskState {
        TaskState {
            eip: 0x1234,
            eflags: flags(Eflags::IF),
            gpr: [
                0x1111, 0x2222, 0x3333, 0x4444, 0x0f00, 0x6666, 0x7777, 0x8888,
            ],
            seg: [DATA16, CODE16, DATA16, DATA16, 0, 0],
            ..TaskState::default()
        }
    }

    #[test]
    fn switch_to_a_16bit_tss_loads_words_and_keeps_the_upper_register_halves() {
        let mut cpu = task_a();
        cpu.write_tss16(TSS16_BASE, &task_16());
        cpu.gpr = [0xabcd_0000; 8];
        cpu.sys.cr0 |= Cr0::PG;
        cpu.sys.cr3 = 0x1000;
        cpu.load(Seg::Fs, DATA0);
        switch(&mut cpu, TSS16, TaskSwitchReason::Jmp).unwrap();
        assert_eq!(cpu.eip, 0x1234);
        assert_eq!(cpu.gpr[0], 0xabcd_1111);
        assert_eq!(cpu.gpr[ESP], 0xabcd_0f00);
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::IF);
        assert!(!cpu.sys.code32());
        assert!(!cpu.sys.segment(Seg::Fs).usable(), "no FS in a 16-bit TSS");
        assert_eq!(cpu.sys.cr3, 0x1000, "no CR3 in a 16-bit TSS");
        assert_eq!(cpu.sys.tr.attr & 0xf, 3);
    }

    #[test]
    fn switch_from_a_16bit_tss_saves_words() {
        let mut cpu = task_a();
        cpu.write_tss16(TSS16_BASE, &task_16());
        switch(&mut cpu, TSS16, TaskSwitchReason::Jmp).unwrap();
        cpu.gpr[1] = 0x5_5555;
        task_switch(
            &mut cpu,
            Selector(TSS_A),
            TaskSwitchReason::Jmp,
            0x1240,
            None,
        )
        .unwrap();
        assert_eq!(cpu.sys.tr.selector, Selector(TSS_A));
        assert_eq!(cpu.peek_u16(TSS16_BASE + 0x0e), 0x1240);
        assert_eq!(cpu.peek_u16(TSS16_BASE + 0x14), 0x5555);
        assert_eq!(cpu.peek_u16(TSS16_BASE + 0x24), CODE16);
        assert!(!busy(&cpu, 14) && busy(&cpu, 6));
    }

    #[test]
    fn error_code_pushed_into_a_16bit_task_is_a_word() {
        let mut cpu = task_a();
        cpu.write_tss16(TSS16_BASE, &task_16());
        task_switch(
            &mut cpu,
            Selector(TSS16),
            TaskSwitchReason::Interrupt,
            AT,
            Some(0x18),
        )
        .unwrap();
        assert_eq!(cpu.gpr[ESP], 0x0efe);
        assert_eq!(cpu.peek_u16(0x0efe), 0x18);
    }

    #[test]
    fn inner_stack_comes_from_the_current_tss_in_its_format() {
        let mut cpu = task_a();
        assert_eq!(inner_stack(&mut cpu, 0), Ok((Selector(DATA0), STACK0)));
        assert_eq!(inner_stack(&mut cpu, 1), Ok((Selector(DATA1), STACK1)));
        cpu.sys.tr.limit = 0x10;
        assert_eq!(inner_stack(&mut cpu, 1), Err(Exception::InvalidTss(0x30)));
        cpu.sys.tr = SegmentRegister::loaded(Selector(TSS16), cpu.gdt(14).with_busy(true));
        cpu.poke_u16(TSS16_BASE + 6, 0x1234);
        cpu.poke_u16(TSS16_BASE + 8, DATA1);
        assert_eq!(inner_stack(&mut cpu, 1), Ok((Selector(DATA1), 0x1234)));
    }

    #[test]
    fn task_state_round_trips_through_both_formats() {
        let mut cpu = task_a();
        let state = task_b();
        state.save(&mut cpu, 0x4000, TssFormat::Bits32).unwrap();
        let read = TaskState::read(&mut cpu, 0x4000, TssFormat::Bits32).unwrap();
        assert_eq!(
            (read.eip, read.eflags, read.gpr, read.seg),
            (state.eip, state.eflags, state.gpr, state.seg)
        );
        let small = task_16();
        small.save(&mut cpu, 0x4200, TssFormat::Bits16).unwrap();
        assert_eq!(
            TaskState::read(&mut cpu, 0x4200, TssFormat::Bits16),
            Ok(small)
        );
    }
}
