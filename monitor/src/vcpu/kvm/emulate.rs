//! Instructions KVM's instruction emulator gives back as an emulation
//! failure, carried out by the monitor's own system model. Under
//! `kvm_pvm` every instruction of a 32-bit guest goes through that
//! emulator, which refuses INT n, INT3, INTO and IRET in protected mode,
//! far transfers through gates, task switches, LDMXCSR/STMXCSR and the
//! BCD adjusts, among others. The instruction is decoded at CS:EIP and
//! carried out by the executor binary translation uses
//! (`crate::cpu::exec`) over a [`KvmContext`]: interrupt and exception
//! delivery through the IDT (`crate::cpu::interrupt`), IRET, far
//! transfers and task switches, segment loads; LDMXCSR and STMXCSR,
//! which the executor leaves to the FPU, are carried out here on the
//! FXSAVE image, and the other x87, MMX and SSE instructions KVM gives
//! back run one at a time on the host's FPU with the guest's state
//! loaded (`fpu`, `native`).
//!
//! Invariants:
//! - The vCPU changes only through [`KvmContext::commit`], after the
//!   instruction and whatever it delivered completed: a stop leaves the
//!   registers of the instruction's start (and guest memory as far as the
//!   model wrote it, as on the CPU).
//! - An exception the instruction raises, and a single-step trap after it
//!   (EFLAGS.TF at its start), are delivered through the guest's IDT by
//!   the system model, never by KVM.
//! - Port I/O is KVM's: an I/O instruction given back stops the guest.
//! - PAE paging stops the guest (the model walks 32-bit paging only).

use super::context::KvmContext;
use super::native::HostFpu;
use super::{fpu, KvmCore, Step};
use crate::cpu::context::{seg_read, seg_write};
use crate::cpu::exec::{self, ExecOutcome, Executor};
use crate::cpu::instr::operand::memory_operand;
use crate::cpu::interrupt::{self, Event};
use crate::cpu::system::{self, FpuKind};
use crate::cpu::{CpuContext, Cr0, Cr4, Eflags, Exception, Fault};
use crate::vcpu::StopReason;
use iced_x86::{Instruction, Mnemonic};

/// MXCSR bits a write may set (MXCSR_MASK of the model's SSE2 CPUs).
const MXCSR_WRITABLE: u32 = 0xffff;
/// Offset of MXCSR in the FXSAVE image.
const FX_MXCSR: usize = 24;
/// DR6.BS: the #DB was a single-step trap.
const DR6_BS: u32 = 1 << 14;

impl KvmCore {
    /// Carries out the instruction at EIP that KVM could not emulate and
    /// writes the result back: `None` when the guest runs on, or what the
    /// machine must see (HLT, a stop saying why the guest cannot go on).
    pub(super) fn emulate_failed_instruction(&mut self) -> Option<Step> {
        match self.carry_out() {
            Ok(step) => {
                self.stats.monitor_instructions += 1;
                self.after_monitor_instruction();
                step
            }
            Err(reason) => Some(Step::Stop(reason)),
        }
    }

    /// Refuses PAE paging, which the system model does not walk.
    pub(super) fn refuse_pae(&self) -> Result<(), StopReason> {
        let sregs = self.sregs()?;
        let paging = Cr0::from_bits_retain(sregs.cr0 as u32).contains(Cr0::PG);
        if paging && Cr4::from_bits_retain(sregs.cr4 as u32).contains(Cr4::PAE) {
            return Err(StopReason::Unsupported(
                "KVM gave back an instruction under PAE paging, which nestmon's system model \
                 does not walk"
                    .into(),
            ));
        }
        Ok(())
    }

    fn carry_out(&self) -> Result<Option<Step>, StopReason> {
        self.refuse_pae()?;
        let mut ctx = KvmContext::load(self)?;
        let single_step = ctx.eflags().contains(Eflags::TF);
        let instruction = match exec::fetch(&mut ctx) {
            Ok(i) => i,
            Err(fault) => {
                deliver_fault(&mut ctx, fault, None)?;
                ctx.commit()?;
                return Ok(None);
            }
        };
        let outcome = execute(&mut ctx, instruction);
        finish(ctx, outcome, &instruction, single_step)
    }
}

/// Carries out `instruction` (the one at CS:EIP): LDMXCSR and STMXCSR on
/// the FXSAVE image, the other x87/MMX/SSE instructions but the masked
/// stores on the host's FPU (`fpu`), everything else with the executor.
pub(super) fn execute(ctx: &mut KvmContext<'_>, instruction: Instruction) -> ExecOutcome {
    let completed = |ctx: &mut KvmContext<'_>, result: Result<(), Fault>| match result {
        Ok(()) => {
            ctx.set_eip(instruction.next_ip32());
            ExecOutcome::Done
        }
        Err(fault) => ExecOutcome::Fault(fault),
    };
    match instruction.mnemonic() {
        Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr => {
            let result = mxcsr_access(ctx, &instruction);
            completed(ctx, result)
        }
        Mnemonic::Maskmovq | Mnemonic::Maskmovdqu => exec::execute(ctx, Some(instruction)),
        _ => match fpu::kind_of(ctx, &instruction) {
            Some(kind) => {
                let result = on_host_fpu(ctx, &instruction, kind);
                completed(ctx, result)
            }
            None => exec::execute(ctx, Some(instruction)),
        },
    }
}

/// Runs the x87/MMX/SSE `instruction` on the host's FPU, setting the
/// host routine up on first use.
fn on_host_fpu(
    ctx: &mut KvmContext<'_>,
    instruction: &Instruction,
    kind: FpuKind,
) -> Result<(), Fault> {
    let core = ctx.core();
    let mut slot = core.host_fpu.borrow_mut();
    if slot.is_none() {
        *slot = Some(HostFpu::new().map_err(|_| {
            Fault::Unsupported("x87/SSE instructions without executable memory for the host FPU")
        })?);
    }
    let host = slot.as_mut().ok_or(Fault::Unsupported(
        "x87/SSE instructions without the host FPU",
    ))?;
    fpu::execute(ctx, host, instruction, kind)
}

/// Completes what carrying out `instruction` (at `ctx`'s EIP when it
/// started) led to, and writes the result back: a debug trap after it,
/// the delivery of the exception or software interrupt it raised, HLT.
/// `single_step`: EFLAGS.TF was set when it started.
pub(super) fn finish(
    mut ctx: KvmContext<'_>,
    outcome: ExecOutcome,
    instruction: &Instruction,
    single_step: bool,
) -> Result<Option<Step>, StopReason> {
    let step = match outcome {
        ExecOutcome::Done => {
            after_instruction(&mut ctx, single_step)?;
            None
        }
        ExecOutcome::Halt => Some(if ctx.eflags().contains(Eflags::IF) {
            Step::Hlt
        } else {
            Step::Stop(StopReason::HaltedForever)
        }),
        ExecOutcome::Fault(fault) => {
            deliver_fault(&mut ctx, fault, Some(instruction))?;
            None
        }
        ExecOutcome::Interrupt { event, return_eip } => {
            deliver(&mut ctx, event, return_eip)?;
            None
        }
        ExecOutcome::Io(_) => {
            return Err(StopReason::Unsupported(format!(
                "KVM gave back the port I/O instruction `{instruction}` at EIP {:#010x}; \
                 nestmon's hardware backend leaves port I/O to KVM",
                instruction.ip32()
            )))
        }
    };
    ctx.commit()?;
    Ok(step)
}

/// What follows a completed instruction before the next one: a debug trap
/// a task switch left pending (the new TSS's T bit), then the single-step
/// trap of an instruction that started with TF set.
fn after_instruction(ctx: &mut KvmContext<'_>, single_step: bool) -> Result<(), StopReason> {
    let task_trap = std::mem::take(&mut ctx.sys_mut().pending_debug_trap);
    if single_step {
        ctx.sys_mut().dr[6] |= DR6_BS;
    }
    if task_trap || single_step {
        let eip = ctx.eip();
        deliver(ctx, Event::Exception(Exception::Debug), eip)?;
    }
    Ok(())
}

/// Delivers the exception an instruction raised (at its EIP), or says why
/// the guest stops.
pub(super) fn deliver_fault(
    ctx: &mut KvmContext<'_>,
    fault: Fault,
    instruction: Option<&Instruction>,
) -> Result<(), StopReason> {
    match fault {
        Fault::Exception(e) => {
            let eip = ctx.eip();
            deliver(ctx, Event::Exception(e), eip).map_err(|stop| match (stop, instruction) {
                (StopReason::TripleFault { first, chain }, Some(i)) => StopReason::TripleFault {
                    first: format!(
                        "{first}, raised by `{i}` at EIP {eip:#010x}, which nestmon carried out \
                         because KVM could not"
                    ),
                    chain,
                },
                (stop, _) => stop,
            })
        }
        Fault::TripleFault => Err(StopReason::TripleFault {
            first: "a fault nestmon's system model reported while carrying out an instruction \
                    KVM gave back"
                .into(),
            chain: Vec::new(),
        }),
        Fault::Unsupported(what) => Err(StopReason::Unsupported(match instruction {
            Some(i) => format!(
                "KVM could not emulate `{i}` at EIP {:#010x}, and nestmon's system model does \
                 not carry it out either (not modelled: {what})",
                ctx.eip()
            ),
            None => format!("the guest needs {what}, which this virtual CPU does not implement"),
        })),
    }
}

/// Delivers `event` through the guest's IDT with the system model.
fn deliver(ctx: &mut KvmContext<'_>, event: Event, return_eip: u32) -> Result<(), StopReason> {
    let mut chain = Vec::new();
    match interrupt::deliver_recording(ctx, event, return_eip, &mut chain) {
        Ok(()) => Ok(()),
        Err(Fault::TripleFault) => Err(StopReason::TripleFault {
            first: event.to_string(),
            chain,
        }),
        Err(Fault::Unsupported(what)) => Err(StopReason::Unsupported(format!(
            "delivering {event} needs {what}, which this virtual CPU does not implement"
        ))),
        Err(Fault::Exception(e)) => Err(StopReason::Exception(e)),
    }
}

/// LDMXCSR / STMXCSR m32 on the FXSAVE image: #UD without CR4.OSFXSR or
/// with CR0.EM, #NM with CR0.TS, the segment's checks and the page walk
/// for the operand, #GP(0) for reserved MXCSR bits.
fn mxcsr_access(ctx: &mut KvmContext<'_>, instruction: &Instruction) -> Result<(), Fault> {
    system::fpu_available(ctx, FpuKind::Sse)?;
    let (seg, offset) = memory_operand(ctx, instruction)?;
    let image = ctx.fx_image()?;
    let mut mxcsr = [0u8; 4];
    mxcsr.copy_from_slice(&image[FX_MXCSR..FX_MXCSR + 4]);
    if instruction.mnemonic() == Mnemonic::Stmxcsr {
        seg_write(ctx, seg, offset, &mxcsr)?;
        return Ok(());
    }
    seg_read(ctx, seg, offset, &mut mxcsr)?;
    if u32::from_le_bytes(mxcsr) & !MXCSR_WRITABLE != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    ctx.fx_image_mut()?[FX_MXCSR..FX_MXCSR + 4].copy_from_slice(&mxcsr);
    Ok(())
}
