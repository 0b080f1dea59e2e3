//! The #UD and #GP intercept: how instructions KVM refuses outside ring 0
//! reach the monitor on a KVM that emulates 32-bit guests (`kvm_pvm`).
//!
//! At CPL 0 an instruction KVM's emulator cannot carry out comes back as
//! an emulation failure (`emulate`). At CPL 3 `kvm_pvm` raises #UD in the
//! guest instead (even with `KVM_CAP_EXIT_ON_EMULATION_FAILURE`), for INT
//! n, INT3, INTO and IRET among others, so a ring-3 system call would end
//! in the guest's #UD handler; and it raises #GP for port I/O to the
//! VMware backdoor without I/O privilege, which VMware answers at any
//! CPL. The monitor therefore keeps hardware breakpoints
//! (`KVM_SET_GUEST_DEBUG`) on the first instruction of the guest's #UD
//! handler (DR0) and, while the backdoor answers outside ring 0, of its
//! #GP handler (DR1). When KVM stops at one, the monitor reads the
//! interrupt frame the exception pushed, puts the vCPU back in the state
//! before it (EIP, CS, EFLAGS, and ESP/SS after a stack switch), and
//! carries the instruction at that EIP out with its system model
//! (`crate::cpu::exec`; x87, MMX and SSE instructions on the host's FPU,
//! `fpu`); a backdoor access becomes a port I/O exit to the
//! machine, completed by `exec::complete_io`. If the model raises #UD too
//! (UD2, an undefined opcode), or cannot carry the instruction out, or a
//! #GP is anything but port I/O to a backdoor port, the exception was the
//! guest's own: nothing is changed, and the handler's first instruction
//! runs under a single step without the breakpoint.
//!
//! Invariants:
//! - Only on a KVM that emulates (the host CPU shows no VT-x/AMD-V):
//!   with hardware virtualization INT and IRET run in hardware and the
//!   guest's debug registers stay the guest's.
//! - The breakpoints follow the IDT: before every `KVM_RUN` each handler's
//!   linear address is worked out again from IDTR, the gate and its code
//!   segment's descriptor; only a present 32-bit interrupt or trap gate
//!   to a present code segment is intercepted (a task gate, a 16-bit gate
//!   or an IDT too short for the vector is left alone).
//! - An event the monitor itself delivers into a watched handler (an
//!   emulated instruction's #UD, INT 6) is never mistaken for KVM's: when
//!   the vCPU is left at a handler's first instruction, that instruction
//!   is single-stepped past the breakpoint.
//! - A #GP is taken back only for IN/OUT/INS/OUTS that the model, with
//!   the backdoor's ports exempt from the I/O permission check, turns into
//!   a port access: `kvm_pvm`'s other #GPs (32-bit paging) are never
//!   papered over.
//! - While the intercept is on, the guest's own hardware breakpoints do
//!   not fire: KVM gives the debug registers to the monitor. (`kvm_pvm`'s
//!   emulator does not check data breakpoints at all, so little is lost;
//!   a guest whose ring-3 code needs both gets one or the other.)

use super::context::KvmContext;
use super::emulate;
use super::memory::{LinearMemory, Translation};
use super::{os_error, state, KvmCore, Step};
use crate::cpu::context::{read_u32, CpuContext, ESP};
use crate::cpu::descriptor::{Descriptor, Selector, SystemKind};
use crate::cpu::exec::{self, ExecOutcome, PendingIo};
use crate::cpu::segment::{gp, read_descriptor};
use crate::cpu::{Eflags, Exception, Fault, Privilege, Seg, SegmentRegister};
use crate::vcpu::StopReason;
use backdoor::GuestMemory;
use iced_x86::Instruction;
use kvm_bindings::{
    kvm_guest_debug, kvm_sregs, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP,
    KVM_GUESTDBG_USE_HW_BP,
};

/// The exceptions the intercept watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Watched {
    /// #UD: the instructions `kvm_pvm` refuses outside ring 0.
    InvalidOpcode,
    /// #GP: port I/O to the VMware backdoor's ports outside ring 0
    /// without I/O privilege, which VMware answers anyway.
    GeneralProtection,
}

impl Watched {
    fn vector(self) -> u32 {
        match self {
            Watched::InvalidOpcode => 6,
            Watched::GeneralProtection => 13,
        }
    }

    /// Whether the exception pushes an error code.
    fn error_code(self) -> bool {
        self == Watched::GeneralProtection
    }
}

/// DR7.L0 and DR7.L1: breakpoints 0 and 1 enabled (R/W = 00: instruction,
/// LEN = 00).
const DR7_L0: u64 = 1;
const DR7_L1: u64 = 1 << 2;

/// What `KVM_SET_GUEST_DEBUG` is set to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum DebugSetting {
    /// Guest debugging off.
    #[default]
    Off,
    /// Instruction breakpoints at the #UD handler (DR0) and the #GP
    /// handler (DR1), linear addresses.
    Breakpoints {
        /// The #UD handler's first instruction.
        ud: Option<u32>,
        /// The #GP handler's first instruction.
        gp: Option<u32>,
    },
    /// One instruction single-stepped, no breakpoint.
    SingleStep,
}

impl DebugSetting {
    /// The exception whose handler starts at `pc`, if a breakpoint is
    /// there.
    fn watched_at(self, pc: u64) -> Option<Watched> {
        let DebugSetting::Breakpoints { ud, gp } = self else {
            return None;
        };
        let at = |a: Option<u32>| a.is_some_and(|a| u64::from(a) == pc);
        if at(ud) {
            Some(Watched::InvalidOpcode)
        } else if at(gp) {
            Some(Watched::GeneralProtection)
        } else {
            None
        }
    }
}

/// The intercept's state.
#[derive(Debug, Default)]
pub(super) struct UdIntercept {
    /// On (a KVM that emulates 32-bit guests).
    pub(super) enabled: bool,
    /// What KVM was last told.
    setting: DebugSetting,
    /// The vCPU is at a watched handler's first instruction, which must
    /// run once without the breakpoint.
    step_past: bool,
    /// CS and SS (with their caches) before the last `KVM_RUN`: the
    /// caches of an interrupted CS and SS when the frame names the same
    /// selectors (a SYSEXIT, say, loads caches the GDT does not hold).
    before_run: Option<(SegmentRegister, SegmentRegister)>,
}

impl UdIntercept {
    /// On where the host CPU shows no VT-x/AMD-V (a `/dev/kvm` there
    /// emulates, as `kvm_pvm` does).
    pub(super) fn for_this_host() -> UdIntercept {
        UdIntercept {
            enabled: !crate::kvm::hardware_virtualization_visible(&crate::probe::host_cpuid),
            ..UdIntercept::default()
        }
    }
}

/// What the intercept found at the handler.
enum Found {
    /// The exception was the guest's own: let the handler run.
    GuestsOwn,
    /// The monitor carried the refused instruction out.
    CarriedOut(Option<Step>),
    /// A backdoor port access: the machine handles it.
    PortIo(PendingIo),
}

impl KvmCore {
    /// Before `KVM_RUN`: the breakpoints on the current #UD and #GP
    /// handlers (the latter only while the backdoor answers outside ring
    /// 0), or the single step past one.
    pub(super) fn arm_intercept(&mut self) -> Result<(), StopReason> {
        if !self.intercept.enabled {
            return Ok(());
        }
        let want = if self.intercept.step_past {
            DebugSetting::SingleStep
        } else {
            let sregs = self.sregs()?;
            self.intercept.before_run = Some((
                state::segment_register_of(&sregs.cs),
                state::segment_register_of(&sregs.ss),
            ));
            let ud = self.handler(&sregs, Watched::InvalidOpcode);
            let gp = if self.unprivileged_ports.is_empty() {
                None
            } else {
                self.handler(&sregs, Watched::GeneralProtection)
            };
            if ud.is_none() && gp.is_none() {
                DebugSetting::Off
            } else {
                DebugSetting::Breakpoints { ud, gp }
            }
        };
        if want != self.intercept.setting {
            self.set_guest_debug(want)?;
            self.intercept.setting = want;
        }
        Ok(())
    }

    /// The linear address of the handler of `watched`, if it is one the
    /// intercept handles (see the module invariants).
    fn handler(&self, sregs: &kvm_sregs, watched: Watched) -> Option<u32> {
        let vector = watched.vector();
        if u32::from(sregs.idt.limit) < vector * 8 + 7 {
            return None;
        }
        let mut memory = LinearMemory {
            ram: &self.ram,
            translation: Translation::from_control_registers(sregs.cr0, sregs.cr3, sregs.cr4),
            user: false,
        };
        let mut read = |linear: u64| -> Option<Descriptor> {
            let mut bytes = [0u8; 8];
            memory.read(linear as u32, &mut bytes).ok()?;
            Some(Descriptor(u64::from_le_bytes(bytes)))
        };
        let gate = read(sregs.idt.base + u64::from(vector) * 8)?;
        let gate_kinds = [SystemKind::InterruptGate32, SystemKind::TrapGate32];
        if !gate.present() || gate.is_code_or_data() || !gate_kinds.contains(&gate.system_kind()) {
            return None;
        }
        let selector = gate.gate_selector();
        let (base, limit, usable) = if selector.in_ldt() {
            (sregs.ldt.base, sregs.ldt.limit, sregs.ldt.unusable == 0)
        } else {
            (sregs.gdt.base, u32::from(sregs.gdt.limit), true)
        };
        if !usable || selector.offset() + 7 > limit {
            return None;
        }
        read(base + u64::from(selector.offset()))
            .filter(|d| d.present() && d.is_code())
            .map(|d| d.base().wrapping_add(gate.gate_offset()))
    }

    fn set_guest_debug(&self, setting: DebugSetting) -> Result<(), StopReason> {
        let mut debug = kvm_guest_debug::default();
        match setting {
            DebugSetting::Off => {}
            DebugSetting::Breakpoints { ud, gp } => {
                debug.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
                if let Some(at) = ud {
                    debug.arch.debugreg[0] = u64::from(at);
                    debug.arch.debugreg[7] |= DR7_L0;
                }
                if let Some(at) = gp {
                    debug.arch.debugreg[1] = u64::from(at);
                    debug.arch.debugreg[7] |= DR7_L1;
                }
            }
            DebugSetting::SingleStep => {
                debug.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
            }
        }
        self.vcpu.set_guest_debug(&debug).map_err(|e| {
            StopReason::Internal(format!("KVM_SET_GUEST_DEBUG failed: {}", os_error(e)))
        })
    }

    /// A `KVM_EXIT_DEBUG` at linear address `pc`.
    pub(super) fn debug_exit(&mut self, pc: u64) -> Option<Step> {
        if self.intercept.setting == DebugSetting::SingleStep {
            self.intercept.step_past = false;
            return None;
        }
        let Some(watched) = self.intercept.setting.watched_at(pc) else {
            return Some(Step::Stop(StopReason::Internal(format!(
                "KVM stopped for debugging at {pc:#010x}, where nestmon set no breakpoint"
            ))));
        };
        match self.examine_intercepted(watched) {
            Ok(Found::GuestsOwn) => {
                self.intercept.step_past = true;
                None
            }
            Ok(Found::CarriedOut(step)) => {
                self.stats.monitor_instructions += 1;
                self.stats.intercepted_ud += 1;
                self.carried_out = true;
                self.after_monitor_instruction();
                step
            }
            Ok(Found::PortIo(io)) => {
                self.stats.intercepted_gp += 1;
                self.carried_out = true;
                self.monitor_io = Some(io);
                Some(Step::MonitorIo)
            }
            Err(reason) => Some(Step::Stop(reason)),
        }
    }

    /// After the monitor carried an instruction out: if the vCPU now
    /// stands at a watched handler's first instruction (the monitor
    /// itself delivered into it), that instruction runs once past the
    /// breakpoint.
    pub(super) fn after_monitor_instruction(&mut self) {
        if !matches!(self.intercept.setting, DebugSetting::Breakpoints { .. }) {
            return;
        }
        if let (Ok(regs), Ok(sregs)) = (self.regs(), self.sregs()) {
            let pc = (sregs.cs.base as u32).wrapping_add(regs.rip as u32);
            if self.intercept.setting.watched_at(u64::from(pc)).is_some() {
                self.intercept.step_past = true;
            }
        }
    }

    /// KVM stopped at a watched handler: undoes the exception's delivery
    /// and carries the instruction out, unless the exception was the
    /// guest's own. For #GP only port I/O to a backdoor port is taken
    /// back (the rest of KVM's #GPs are the guest's, or `kvm_pvm`'s own
    /// refusals the model must not paper over, such as 32-bit paging).
    fn examine_intercepted(&self, watched: Watched) -> Result<Found, StopReason> {
        self.refuse_pae()?;
        let mut ctx = KvmContext::load(self)?;
        if !undo_delivery(&mut ctx, self.intercept.before_run, watched.error_code()) {
            return Ok(Found::GuestsOwn);
        }
        let single_step = ctx.eflags().contains(Eflags::TF);
        let Ok(instruction) = exec::fetch(&mut ctx) else {
            return Ok(Found::GuestsOwn);
        };
        if watched == Watched::GeneralProtection && !is_port_io(&instruction) {
            return Ok(Found::GuestsOwn);
        }
        match (watched, emulate::execute(&mut ctx, instruction)) {
            (Watched::GeneralProtection, ExecOutcome::Io(io)) => {
                ctx.commit()?;
                Ok(Found::PortIo(io))
            }
            (Watched::GeneralProtection, _)
            | (_, ExecOutcome::Fault(Fault::Exception(Exception::InvalidOpcode)))
            | (_, ExecOutcome::Fault(Fault::Unsupported(_)))
            | (_, ExecOutcome::Io(_)) => Ok(Found::GuestsOwn),
            (_, outcome) => {
                emulate::finish(ctx, outcome, &instruction, single_step).map(Found::CarriedOut)
            }
        }
    }

    /// Completes the port access the machine handled for the monitor
    /// (`data` holds an IN's value) and ends the instruction or hands out
    /// its next element.
    pub(super) fn finish_monitor_io(&mut self, data: &[u8; 4]) -> Option<Step> {
        let mut io = self.monitor_io.take()?;
        let handler_done = io.is_string() && std::mem::take(&mut self.monitor_io_done);
        let result = self.complete_monitor_io(&mut io, data, handler_done);
        self.carried_out = true;
        match result {
            Ok(true) => {
                self.monitor_io = Some(io);
                Some(Step::MonitorIo)
            }
            Ok(false) => {
                self.stats.monitor_instructions += 1;
                self.after_monitor_instruction();
                None
            }
            Err(reason) => Some(Step::Stop(reason)),
        }
    }

    fn complete_monitor_io(
        &self,
        io: &mut PendingIo,
        data: &[u8; 4],
        handler_done: bool,
    ) -> Result<bool, StopReason> {
        let mut ctx = KvmContext::load(self)?;
        match exec::complete_io(&mut ctx, io, data, handler_done) {
            Ok(more) => {
                ctx.commit()?;
                Ok(more)
            }
            Err(e) => {
                emulate::deliver_fault(&mut ctx, e.into(), None)?;
                ctx.commit()?;
                Ok(false)
            }
        }
    }
}

/// IN, OUT, INS or OUTS.
fn is_port_io(i: &Instruction) -> bool {
    use iced_x86::Mnemonic::*;
    matches!(
        i.mnemonic(),
        In | Out | Insb | Insw | Insd | Outsb | Outsw | Outsd
    )
}

/// Puts `ctx` back in the state before the delivery of the exception
/// whose 32-bit interrupt frame (after its error code, if `error_code`)
/// is at SS:ESP: EIP, CS, EFLAGS, and ESP and SS
/// when the delivery switched stacks. A selector gets the cache of a
/// register that held it before the `KVM_RUN` (`before_run`: CS, SS) or
/// that SYSEXIT loads with it (flat ring-3 segments, whatever the GDT
/// holds), else its descriptor's. `false` (nothing changed) when the
/// frame does not describe a state the vCPU could have been in.
fn undo_delivery(
    ctx: &mut KvmContext<'_>,
    before_run: Option<(SegmentRegister, SegmentRegister)>,
    error_code: bool,
) -> bool {
    let (cs_before, ss_before) = before_run.unzip();
    let sysexit_cs = (ctx.sys().msr.sysenter_cs as u16 & !3).wrapping_add(16) | 3;
    let cs_known = [cs_before, Some(SegmentRegister::flat(sysexit_cs, true, 3))];
    let ss_known = [
        ss_before,
        Some(SegmentRegister::flat(sysexit_cs.wrapping_add(8), false, 3)),
    ];
    let cpl = ctx.sys().cpl;
    let ss = ctx.sys().segment(Seg::Ss);
    let esp = ctx.gpr(ESP);
    let skip = u32::from(error_code);
    let slot = |ctx: &mut KvmContext<'_>, n: u32| -> Option<u32> {
        let n = n + skip;
        let linear = ss.linear(Seg::Ss, esp.wrapping_add(4 * n), 4).ok()?;
        read_u32(ctx, linear, Privilege::Supervisor).ok()
    };
    let (Some(eip), Some(cs), Some(eflags)) = (slot(ctx, 0), slot(ctx, 1), slot(ctx, 2)) else {
        return false;
    };
    let cs = Selector(cs as u16);
    let Some(code) = segment_of(ctx, cs, &cs_known, |d| d.is_code()) else {
        return false;
    };
    let outer = cs.rpl() > cpl;
    let stack = if outer {
        let (Some(outer_esp), Some(outer_ss)) = (slot(ctx, 3), slot(ctx, 4)) else {
            return false;
        };
        let outer_ss = Selector(outer_ss as u16);
        let Some(stack) = segment_of(ctx, outer_ss, &ss_known, |d| d.writable()) else {
            return false;
        };
        Some((outer_esp, stack))
    } else {
        None
    };
    ctx.set_eip(eip);
    ctx.set_eflags(Eflags::from_bits_retain(eflags));
    let sys = ctx.sys_mut();
    sys.seg[Seg::Cs as usize] = code;
    sys.cpl = cs.rpl();
    match stack {
        Some((outer_esp, stack)) => {
            ctx.sys_mut().seg[Seg::Ss as usize] = stack;
            ctx.set_gpr(ESP, outer_esp);
        }
        None => ctx.set_gpr(ESP, esp.wrapping_add(12 + 4 * skip)),
    }
    true
}

/// The segment register `selector` names: the first of `known` that
/// holds it, else what loading it gives, if its descriptor is present
/// and `fits`.
fn segment_of(
    ctx: &mut KvmContext<'_>,
    selector: Selector,
    known: &[Option<SegmentRegister>],
    fits: impl Fn(Descriptor) -> bool,
) -> Option<SegmentRegister> {
    let cached = known
        .iter()
        .flatten()
        .find(|r| r.selector == selector && r.usable());
    if let Some(register) = cached {
        return Some(*register);
    }
    let descriptor = read_descriptor(ctx, selector, gp).ok()?;
    (descriptor.present() && fits(descriptor))
        .then(|| SegmentRegister::loaded(selector, descriptor.with_accessed()))
}
