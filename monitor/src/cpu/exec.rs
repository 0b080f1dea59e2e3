//! The instructions a monitor carries out itself, on the system model: it
//! decodes the instruction at CS:EIP and hands it to the model's
//! functions (`super::system`, `super::far`, `super::interrupt`,
//! `super::instr`, `super::segment`), or turns port I/O into a pending
//! access for the machine. Both vCPU backends use it: binary translation
//! for everything translated code leaves to the monitor, hardware
//! execution for what KVM's instruction emulator gives back.
//!
//! A backend is an [`Executor`]: the system model's [`CpuContext`] plus
//! what the instructions need of the machine around the CPU (the CPU
//! model's CPUID answers and features, which instructions the guest CPU
//! defines, the MSR file, the FXSAVE image) and the hooks that tell the
//! backend what changed (INVLPG, paging).
//!
//! Invariant: an instruction either completes (registers, memory and EIP
//! updated) or raises its fault with the state of its start, except where
//! the SDM itself leaves partial results (string I/O between elements).

use super::context::{
    pop, push, seg_read, seg_write, CpuContext, OperandSize, EAX, EBX, ECX, EDI, EDX, ESI, ESP,
};
use super::descriptor::Selector;
use super::exception::{Exception, Fault};
use super::flags::{Cr4, Eflags};
use super::instr::operand::{
    memory_operand, operand_register_size, read_memory, read_operand, reg_value, set_reg,
    write_operand,
};
use super::instr::{self, Completion};
use super::interrupt::{Event as CpuEvent, SoftwareKind};
use super::msr;
use super::state::Seg;
use super::system::{self, FpuKind};
use super::{far, interrupt, segment};
use super::{AccessKind, Privilege};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

/// The CPU model's features the executor asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFeature {
    /// SYSENTER/SYSEXIT (CPUID.1:EDX.SEP).
    Sep,
    /// RDMSR/WRMSR (CPUID.1:EDX.MSR).
    Msr,
}

/// A vCPU backend as the executor sees it.
///
/// Invariants every implementation keeps: [`Executor::read_msr`] and
/// [`Executor::write_msr`] check privilege and the MSR as RDMSR/WRMSR do
/// (#GP(0)) and change nothing when they fail; the FXSAVE image is the
/// guest's current x87/MMX/SSE state, and a change made through
/// [`Executor::fx_image_mut`] is what the guest sees next.
pub trait Executor: CpuContext {
    /// The CPU model's CPUID answer for `leaf`/`subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Whether the CPU model offers `feature`.
    fn offers(&self, feature: ModelFeature) -> bool;
    /// The CR4 bits a MOV to CR4 may set on this CPU model.
    fn cr4_writable(&self) -> Cr4;
    /// Whether the guest CPU does not define `i` (an extension it does not
    /// offer): the instruction raises #UD.
    fn undefined(&self, i: &Instruction) -> bool;
    /// The x87/MMX/SSE availability class of `i`, if it is one.
    fn fpu_kind(&self, i: &Instruction) -> Option<FpuKind>;
    /// Whether `port` is exempt from the I/O permission check (the
    /// VMware backdoor's, which VMware answers at any CPL).
    fn port_exempt(&self, port: u16) -> bool;
    /// INVLPG of the page of linear address `lin` (the guest's TLB entry
    /// for it goes).
    fn after_invlpg(&mut self, lin: u32);
    /// A MOV to a control register changed the address space or paging.
    fn after_paging_change(&mut self);
    /// RDMSR of `index` (at the CPL; #GP(0) for an MSR the CPU lacks).
    fn read_msr(&mut self, index: u32) -> Result<u64, Exception>;
    /// WRMSR of `value` to `index` (at the CPL; #GP(0) for an MSR the CPU
    /// lacks or a value it refuses).
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), Exception>;
    /// The guest's FXSAVE image (x87/MMX/SSE state), up to date.
    fn fx_image(&mut self) -> Result<[u8; 512], Fault>;
    /// The guest's FXSAVE image, to change it.
    fn fx_image_mut(&mut self) -> Result<&mut [u8; 512], Fault>;
}

/// What carrying out one instruction led to.
pub enum ExecOutcome {
    /// Done; EIP points at the next instruction to run.
    Done,
    /// A port access the machine must handle.
    Io(PendingIo),
    /// HLT.
    Halt,
    /// The instruction raises this (EIP at the instruction).
    Fault(Fault),
    /// INT n, INT3, INTO or INT1: deliver this event, pushing `return_eip`
    /// (EIP is still at the instruction, as faults during the delivery
    /// need it).
    Interrupt {
        /// The software event.
        event: CpuEvent,
        /// The EIP after the instruction.
        return_eip: u32,
    },
}

/// A port I/O instruction in progress.
#[derive(Clone, Debug)]
pub struct PendingIo {
    /// The port.
    pub port: u16,
    /// Bytes per access (1, 2, 4).
    pub size: u8,
    /// IN/INS rather than OUT/OUTS.
    pub input: bool,
    /// The value an OUT/OUTS element writes.
    pub out_value: u32,
    kind: IoKind,
    /// EIP after the instruction.
    next_eip: u32,
}

#[derive(Clone, Copy, Debug)]
enum IoKind {
    /// IN/OUT with AL/AX/EAX.
    Accumulator,
    /// INS/OUTS: one element per exit.
    String {
        /// REP prefix: ECX counts the elements left.
        rep: bool,
        /// OUTS's source segment (DS or an override).
        source: Seg,
    },
}

impl PendingIo {
    /// An INS or OUTS.
    pub fn is_string(&self) -> bool {
        matches!(self.kind, IoKind::String { .. })
    }
}

type Res<T> = Result<T, Fault>;

/// Carries out the instruction at CS:EIP; `decoded` is the instruction
/// there as the backend already decoded it (binary translation hands over
/// the translator's decoding), if it has it.
pub fn execute<C: Executor>(core: &mut C, decoded: Option<Instruction>) -> ExecOutcome {
    let insn = match decoded.filter(|i| fetched_as_is(core, i)) {
        Some(i) => i,
        None => match fetch(core) {
            Ok(i) => i,
            Err(f) => return ExecOutcome::Fault(f),
        },
    };
    match run(core, &insn) {
        Ok(Flow::Next) => {
            core.set_eip(insn.next_ip32());
            ExecOutcome::Done
        }
        Ok(Flow::Jumped) => ExecOutcome::Done,
        Ok(Flow::Io(io)) => ExecOutcome::Io(io),
        Ok(Flow::Halt) => {
            core.set_eip(insn.next_ip32());
            ExecOutcome::Halt
        }
        Ok(Flow::Interrupt(event)) => ExecOutcome::Interrupt {
            event,
            return_eip: insn.next_ip32(),
        },
        Err(f) => ExecOutcome::Fault(f),
    }
}

/// How an instruction left EIP.
enum Flow {
    /// Continue at the next instruction.
    Next,
    /// EIP was set by the instruction.
    Jumped,
    /// A port access is pending.
    Io(PendingIo),
    /// HLT: continue at the next instruction once woken.
    Halt,
    /// A software interrupt to deliver.
    Interrupt(CpuEvent),
}

/// Whether an already decoded instruction is the one at CS:EIP and its
/// fetch cannot fault: the backend vouches that its bytes are current (for
/// binary translation: they were read for a translation that is still
/// live, and a write to them kills it first), and they lie within the CS
/// limit (otherwise [`fetch`] raises the #GP).
fn fetched_as_is<C: Executor>(core: &C, i: &Instruction) -> bool {
    let eip = core.eip();
    let last = eip.checked_add(i.len() as u32 - 1);
    i.ip32() == eip && last.is_some_and(|last| last <= core.sys().segment(Seg::Cs).limit)
}

/// Decodes the instruction at CS:EIP (its fetch can fault).
pub fn fetch<C: Executor>(core: &mut C) -> Res<Instruction> {
    let eip = core.eip();
    let cs = core.sys().segment(Seg::Cs);
    let mut bytes = [0u8; 15];
    let mut avail = 0;
    // Fetch byte by byte up to the first byte that cannot be fetched; a
    // decode that needs it raises that fault.
    let mut first_fault = None;
    while avail < bytes.len() {
        let at = eip.wrapping_add(avail as u32);
        let lin = match cs.linear(Seg::Cs, at, 1) {
            Ok(lin) => lin,
            Err(e) => {
                first_fault = Some(e);
                break;
            }
        };
        let chunk = (bytes.len() - avail).min((0x1000 - (lin & 0xfff)) as usize);
        if let Err(e) = core.read_linear(
            lin,
            &mut bytes[avail..avail + chunk],
            AccessKind::Execute,
            Privilege::Current,
        ) {
            first_fault = Some(e);
            break;
        }
        avail += chunk;
    }
    let bitness = if core.sys().code32() { 32 } else { 16 };
    let insn = Decoder::with_ip(
        bitness,
        &bytes[..avail],
        u64::from(eip),
        DecoderOptions::NONE,
    )
    .decode();
    if insn.is_invalid() {
        return Err(match first_fault {
            Some(e) if avail < 15 && insn.len() == 0 => e.into(),
            _ => Exception::InvalidOpcode.into(),
        });
    }
    Ok(insn)
}

fn run<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    use Mnemonic::*;
    if let Some(kind) = core.fpu_kind(i) {
        system::fpu_available(core, kind)?;
    }
    match i.mnemonic() {
        In | Out => port_io(core, i),
        Insb | Insw | Insd | Outsb | Outsw | Outsd => string_io(core, i),
        Cpuid => {
            let [a, b, c, d] = core.cpuid(core.gpr(EAX), core.gpr(ECX));
            core.set_gpr(EAX, a);
            core.set_gpr(EBX, b);
            core.set_gpr(ECX, c);
            core.set_gpr(EDX, d);
            Ok(Flow::Next)
        }
        Hlt => {
            system::require_cpl0(core)?;
            Ok(Flow::Halt)
        }
        Lgdt | Lidt | Sgdt | Sidt => descriptor_table(core, i),
        Lldt | Ltr => {
            let sel = Selector(read_operand(core, i, 0, 2)? as u16);
            if i.mnemonic() == Lldt {
                system::lldt(core, sel)?;
            } else {
                system::ltr(core, sel)?;
            }
            Ok(Flow::Next)
        }
        Sldt | Str => {
            let sel = if i.mnemonic() == Str {
                system::str(core)
            } else {
                system::sldt(core)
            };
            store_selector(core, i, sel)
        }
        Lar | Lsl => access_rights(core, i),
        Verr | Verw => {
            let sel = Selector(read_operand(core, i, 0, 2)? as u16);
            let ok = if i.mnemonic() == Verr {
                system::verr(core, sel)?
            } else {
                system::verw(core, sel)?
            };
            set_zf(core, ok);
            Ok(Flow::Next)
        }
        Arpl => {
            let dest = read_operand(core, i, 0, 2)? as u16;
            let src = read_operand(core, i, 1, 2)? as u16;
            let (value, zf) = system::arpl(dest, src);
            if zf {
                write_operand(core, i, 0, u32::from(value), 2)?;
            }
            set_zf(core, zf);
            Ok(Flow::Next)
        }
        Smsw => {
            let val = system::smsw(core);
            let size = operand_register_size(i, 0).unwrap_or(2);
            write_operand(core, i, 0, val, size)?;
            Ok(Flow::Next)
        }
        Lmsw => {
            let val = read_operand(core, i, 0, 2)? as u16;
            system::lmsw(core, val)?;
            Ok(Flow::Next)
        }
        Clts => {
            system::clts(core)?;
            Ok(Flow::Next)
        }
        Mov if is_cr_or_dr(i) => control_register(core, i),
        Mov | Movzx | Movsx | Xchg if instr::data::handles(i) => {
            done(instr::data::execute(core, i))
        }
        Mov => mov_sreg(core, i),
        Pop if i.op0_kind() == OpKind::Register && i.op0_register().is_segment_register() => {
            pop_sreg(core, i)
        }
        Pop => done(instr::stack::pop_operand(core, i)),
        Push => done(instr::stack::push_operand(core, i)),
        Pusha | Pushad => done(instr::stack::pusha(core, i)),
        Popa | Popad => done(instr::stack::popa(core, i)),
        Call if is_near(i) => done(instr::stack::call_near(core, i, i.next_ip32())),
        Jmp if is_near(i) => done(instr::stack::jmp_near(core, i)),
        Ret => done(instr::stack::ret_near(core, i)),
        Loop | Loope | Loopne | Jcxz | Jecxz => done(instr::flow::loop_like(core, i)),
        Movsb | Movsw | Movsd | Stosb | Stosw | Stosd | Lodsb | Lodsw | Lodsd | Cmpsb | Cmpsw
        | Cmpsd | Scasb | Scasw | Scasd
            if i.is_string_instruction() =>
        {
            done(instr::string::execute(core, i))
        }
        Lds | Les | Lfs | Lgs | Lss => load_far_pointer(core, i),
        Jmp | Call => far_transfer(core, i),
        Retf => {
            let size = operand_size_of(i);
            let pop_bytes = if i.op_count() > 0 { i.immediate16() } else { 0 };
            far::far_ret(core, size, pop_bytes)?;
            Ok(Flow::Jumped)
        }
        Iret | Iretd => {
            let size = if i.code() == Code::Iretw { 2 } else { 4 };
            interrupt::iret(core, size, i.next_ip32())?;
            Ok(Flow::Jumped)
        }
        Int3 => Ok(software(3, SoftwareKind::Int3)),
        Int1 => Ok(software(1, SoftwareKind::Int1)),
        Int => Ok(software(i.immediate8(), SoftwareKind::IntN)),
        Into if core.eflags().contains(Eflags::OF) => Ok(software(4, SoftwareKind::Into)),
        Into => Ok(Flow::Next),
        Bound => bound(core, i),
        Cli => {
            system::cli(core)?;
            Ok(Flow::Next)
        }
        Sti => {
            system::sti(core)?;
            Ok(Flow::Next)
        }
        Pushf | Pushfd => {
            let size = operand_size_of(i);
            let image = system::pushf(core, size)?;
            push(core, image, size.bytes())?;
            Ok(Flow::Next)
        }
        Popf | Popfd => {
            let size = operand_size_of(i);
            let value = crate::cpu::context::read_stack(core, 0, size.bytes())?;
            system::popf(core, value, size)?;
            pop(core, size.bytes())?;
            Ok(Flow::Next)
        }
        Daa | Das | Aaa | Aas | Aam | Aad => done(instr::bcd::bcd(core, i)),
        Salc => done(Ok(instr::bcd::salc(core))),
        Wbinvd | Invd => {
            system::require_cpl0(core)?;
            Ok(Flow::Next)
        }
        Invlpg => {
            system::require_cpl0(core)?;
            let (seg, offset) = instr::operand::memory_operand(core, i)?;
            let lin = core.sys().segment(seg).base.wrapping_add(offset);
            core.after_invlpg(lin);
            Ok(Flow::Next)
        }
        Enter => done(instr::stack::enter(core, i)),
        Leave => done(instr::stack::leave(core, i)),
        Rdmsr | Wrmsr => msr_access(core, i),
        Rdtsc => {
            let tsc = system::rdtsc(core)?;
            core.set_gpr(EAX, tsc as u32);
            core.set_gpr(EDX, (tsc >> 32) as u32);
            Ok(Flow::Next)
        }
        Rdpmc => {
            let value = system::rdpmc(core, core.gpr(ECX))?;
            core.set_gpr(EAX, value as u32);
            core.set_gpr(EDX, (value >> 32) as u32);
            Ok(Flow::Next)
        }
        Sysenter | Sysexit if core.offers(ModelFeature::Sep) => {
            if i.mnemonic() == Sysenter {
                system::sysenter(core)?;
            } else {
                system::sysexit(core)?;
            }
            Ok(Flow::Jumped)
        }
        _ if core.undefined(i) => Err(Exception::InvalidOpcode.into()),
        Maskmovq | Maskmovdqu => mask_move(core, i),
        Ud0 | Ud1 | Ud2 | Sysenter | Sysexit | Syscall | Sysret | Rdtscp | Xgetbv | Monitor
        | Mwait | Rdpid => Err(Exception::InvalidOpcode.into()),
        // An FPU-class instruction that went to the monitor only because
        // of CR0/CR4 and passed the availability check above runs as
        // itself: the mode changes before it is translated again.
        _ if core.fpu_kind(i).is_some() => Err(Fault::Unsupported(
            "x87/SSE instructions carried out by the monitor",
        )),
        _ => Err(Fault::Unsupported(unsupported_name(i))),
    }
}

/// A completed system-model instruction as a flow.
fn done(r: Result<Completion, Fault>) -> Res<Flow> {
    r.map(|c| match c {
        Completion::Next => Flow::Next,
        Completion::Jumped => Flow::Jumped,
    })
}

/// A near (not far) JMP or CALL.
fn is_near(i: &Instruction) -> bool {
    !matches!(
        i.code(),
        Code::Jmp_ptr1632
            | Code::Jmp_ptr1616
            | Code::Jmp_m1632
            | Code::Jmp_m1616
            | Code::Call_ptr1632
            | Code::Call_ptr1616
            | Code::Call_m1632
            | Code::Call_m1616
    )
}

fn software(vector: u8, kind: SoftwareKind) -> Flow {
    Flow::Interrupt(CpuEvent::Software { vector, kind })
}

/// The operand size of a far transfer, IRET, PUSHF/POPF from its code.
fn operand_size_of(i: &Instruction) -> OperandSize {
    let sixteen = matches!(
        i.code(),
        Code::Retfw
            | Code::Retfw_imm16
            | Code::Pushfw
            | Code::Popfw
            | Code::Jmp_ptr1616
            | Code::Jmp_m1616
            | Code::Call_ptr1616
            | Code::Call_m1616
    );
    if sixteen {
        OperandSize::Bits16
    } else {
        OperandSize::Bits32
    }
}

fn set_zf<C: Executor>(core: &mut C, zf: bool) {
    let mut flags = core.eflags();
    flags.set(Eflags::ZF, zf);
    core.set_eflags(flags);
}

/// SLDT/STR: a register operand gets the selector zero-extended (32-bit
/// operand size) or in its low 16 bits; memory gets 16 bits.
fn store_selector<C: Executor>(core: &mut C, i: &Instruction, sel: u16) -> Res<Flow> {
    let size = operand_register_size(i, 0).unwrap_or(2);
    write_operand(core, i, 0, u32::from(sel), size)?;
    Ok(Flow::Next)
}

fn access_rights<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let sel = Selector(read_operand(core, i, 1, 2)? as u16);
    let size = i.op0_register().size();
    let opsize = if size == 2 {
        OperandSize::Bits16
    } else {
        OperandSize::Bits32
    };
    let value = if i.mnemonic() == Mnemonic::Lar {
        system::lar(core, sel, opsize)?
    } else {
        system::lsl(core, sel, opsize)?
    };
    if let Some(v) = value {
        set_reg(core, i.op0_register(), v);
    }
    set_zf(core, value.is_some());
    Ok(Flow::Next)
}

fn descriptor_table<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let (seg, offset) = memory_operand(core, i)?;
    let size = if matches!(i.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
        OperandSize::Bits16
    } else {
        OperandSize::Bits32
    };
    match i.mnemonic() {
        Mnemonic::Lgdt => system::lgdt(core, seg, offset, size)?,
        Mnemonic::Lidt => system::lidt(core, seg, offset, size)?,
        Mnemonic::Sgdt => system::sgdt(core, seg, offset)?,
        _ => system::sidt(core, seg, offset)?,
    }
    Ok(Flow::Next)
}

/// Far JMP and CALL (direct `ptr16:32` or through memory `m16:32`).
fn far_transfer<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let size = operand_size_of(i);
    let (sel, offset) = match i.code() {
        Code::Jmp_ptr1632 | Code::Call_ptr1632 | Code::Jmp_ptr1616 | Code::Call_ptr1616 => {
            (i.far_branch_selector(), i.far_branch32())
        }
        Code::Jmp_m1632 | Code::Call_m1632 | Code::Jmp_m1616 | Code::Call_m1616 => {
            let n = size.bytes() as usize;
            let mut b = [0u8; 6];
            read_memory(core, i, &mut b[..n + 2])?;
            let mut off = [0u8; 4];
            off[..n].copy_from_slice(&b[..n]);
            (
                u16::from_le_bytes([b[n], b[n + 1]]),
                u32::from_le_bytes(off),
            )
        }
        _ => return Err(Fault::Unsupported(unsupported_name(i))),
    };
    if i.mnemonic() == Mnemonic::Jmp {
        far::far_jmp(core, Selector(sel), offset, size, i.next_ip32())?;
    } else {
        far::far_call(core, Selector(sel), offset, size, i.next_ip32())?;
    }
    Ok(Flow::Jumped)
}

/// BOUND: #BR when the signed index lies outside [lower, upper].
fn bound<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let size = i.op0_register().size();
    let mut b = [0u8; 8];
    read_memory(core, i, &mut b[..2 * size])?;
    let index = reg_value(core, i.op0_register());
    let (value, lower, upper) = if size == 2 {
        (
            i32::from(index as u16 as i16),
            i32::from(i16::from_le_bytes([b[0], b[1]])),
            i32::from(i16::from_le_bytes([b[2], b[3]])),
        )
    } else {
        (
            index as i32,
            i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        )
    };
    if value < lower || value > upper {
        Err(Exception::BoundRange.into())
    } else {
        Ok(Flow::Next)
    }
}

/// A static description of an instruction the CPU model does not carry
/// out (names the mnemonic family).
fn unsupported_name(i: &Instruction) -> &'static str {
    match i.mnemonic() {
        Mnemonic::Retf => "far returns (RETF)",
        Mnemonic::Call => "far calls",
        Mnemonic::Iret | Mnemonic::Iretd => "IRET",
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw | Mnemonic::Arpl => {
            "LAR/LSL/VERR/VERW/ARPL"
        }
        Mnemonic::Enter => "ENTER with a nesting level",
        _ => "an instruction form the monitor does not carry out",
    }
}

// ----- port I/O -----------------------------------------------------------------

/// IOPL and the TSS I/O bitmap, except for the ports the board exempts
/// (the backdoor's: VMware answers them at any CPL).
fn io_permission<C: Executor>(core: &mut C, port: u16, size: u8) -> Res<()> {
    if core.port_exempt(port) {
        return Ok(());
    }
    system::io_allowed(core, port, u32::from(size))?;
    Ok(())
}

fn port_io<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let input = i.mnemonic() == Mnemonic::In;
    let (port_op, data_op) = if input { (1, 0) } else { (0, 1) };
    let port = if i.op_kind(port_op) == OpKind::Register {
        (core.gpr(EDX) & 0xffff) as u16
    } else {
        i.immediate8() as u16
    };
    let size = i.op_register(data_op).size() as u8;
    io_permission(core, port, size)?;
    Ok(Flow::Io(PendingIo {
        port,
        size,
        input,
        out_value: if input { 0 } else { core.gpr(EAX) },
        kind: IoKind::Accumulator,
        next_eip: i.next_ip32(),
    }))
}

fn string_io<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let size = match i.mnemonic() {
        Mnemonic::Insb | Mnemonic::Outsb => 1u8,
        Mnemonic::Insw | Mnemonic::Outsw => 2,
        _ => 4,
    };
    io_permission(core, (core.gpr(EDX) & 0xffff) as u16, size)?;
    let input = matches!(
        i.mnemonic(),
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd
    );
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    if rep && core.gpr(ECX) == 0 {
        return Ok(Flow::Next);
    }
    let source = Seg::from_iced(i.memory_segment()).unwrap_or(Seg::Ds);
    let mut io = PendingIo {
        port: (core.gpr(EDX) & 0xffff) as u16,
        size,
        input,
        out_value: 0,
        kind: IoKind::String { rep, source },
        next_eip: i.next_ip32(),
    };
    if !input {
        io.out_value = read_string_element(core, &io)?;
    }
    Ok(Flow::Io(io))
}

/// OUTS: the element at source:ESI.
fn read_string_element<C: Executor>(core: &mut C, io: &PendingIo) -> Result<u32, Exception> {
    let IoKind::String { source, .. } = io.kind else {
        return Ok(io.out_value);
    };
    let mut b = [0u8; 4];
    seg_read(core, source, core.gpr(ESI), &mut b[..io.size as usize])?;
    Ok(u32::from_le_bytes(b))
}

/// Completes one element of the port access `io` the machine handled
/// (`data` holds an IN's value): an IN's value goes to EAX, an INS
/// element to ES:EDI (ESI/EDI and ECX advance); returns whether another
/// element of a REP string instruction follows (then `io.out_value` is
/// the next OUTS element). `handler_done`: the machine's handler carried
/// out the whole string instruction itself (registers included), so only
/// EIP moves on. When no element follows, EIP is past the instruction.
pub fn complete_io<C: Executor>(
    core: &mut C,
    io: &mut PendingIo,
    data: &[u8; 4],
    handler_done: bool,
) -> Result<bool, Exception> {
    let value = u32::from_le_bytes(*data) & mask(io.size);
    match io.kind {
        IoKind::Accumulator => {
            if io.input {
                let eax = core.gpr(EAX);
                let merged = (eax & !mask(io.size)) | value;
                core.set_gpr(EAX, merged);
            }
            core.set_eip(io.next_eip);
            Ok(false)
        }
        IoKind::String { .. } if handler_done => {
            core.set_eip(io.next_eip);
            Ok(false)
        }
        IoKind::String { rep, .. } => finish_string_element(core, io, value, rep),
    }
}

/// Moves one INS element to memory, advances ESI/EDI and ECX; returns
/// whether another element follows.
fn finish_string_element<C: Executor>(
    core: &mut C,
    io: &mut PendingIo,
    value: u32,
    rep: bool,
) -> Result<bool, Exception> {
    let size = u32::from(io.size);
    let step = if core.eflags().contains(Eflags::DF) {
        size.wrapping_neg()
    } else {
        size
    };
    if io.input {
        seg_write(
            core,
            Seg::Es,
            core.gpr(EDI),
            &value.to_le_bytes()[..size as usize],
        )?;
        core.set_gpr(EDI, core.gpr(EDI).wrapping_add(step));
    } else {
        core.set_gpr(ESI, core.gpr(ESI).wrapping_add(step));
    }
    let more = rep && {
        let left = core.gpr(ECX).wrapping_sub(1);
        core.set_gpr(ECX, left);
        left != 0
    };
    if !more {
        core.set_eip(io.next_eip);
        return Ok(false);
    }
    if !io.input {
        io.out_value = read_string_element(core, io)?;
    }
    Ok(true)
}

fn mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

// ----- descriptor tables and segments ---------------------------------------------

fn mov_sreg<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    if i.op0_kind() == OpKind::Register && i.op0_register().is_segment_register() {
        let seg = Seg::from_iced(i.op0_register()).unwrap_or(Seg::Ds);
        if seg == Seg::Cs {
            return Err(Exception::InvalidOpcode.into());
        }
        let sel = Selector(read_operand(core, i, 1, 2)? as u16);
        segment::load_segment(core, seg, sel)?;
        if seg == Seg::Ss {
            core.sys_mut().interrupt_shadow = true;
        }
        return Ok(Flow::Next);
    }
    let sel = reg_value(core, i.op1_register());
    let size = operand_register_size(i, 0).unwrap_or(2);
    write_operand(core, i, 0, sel, size)?;
    Ok(Flow::Next)
}

fn pop_sreg<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let seg = Seg::from_iced(i.op0_register()).unwrap_or(Seg::Ds);
    let size = if i.code() == Code::Popw_DS
        || i.code() == Code::Popw_ES
        || i.code() == Code::Popw_SS
        || i.code() == Code::Popw_FS
        || i.code() == Code::Popw_GS
    {
        2
    } else {
        4
    };
    let esp = core.gpr(ESP);
    let mut b = [0u8; 2];
    seg_read(core, Seg::Ss, esp, &mut b)?;
    segment::load_segment(core, seg, Selector(u16::from_le_bytes(b)))?;
    // ESP advances only once the load succeeded.
    core.set_gpr(ESP, esp.wrapping_add(size));
    if seg == Seg::Ss {
        core.sys_mut().interrupt_shadow = true;
    }
    Ok(Flow::Next)
}

fn load_far_pointer<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let size = i.op0_register().size();
    let mut b = [0u8; 6];
    read_memory(core, i, &mut b[..size + 2])?;
    let seg = match i.mnemonic() {
        Mnemonic::Lds => Seg::Ds,
        Mnemonic::Les => Seg::Es,
        Mnemonic::Lfs => Seg::Fs,
        Mnemonic::Lgs => Seg::Gs,
        _ => Seg::Ss,
    };
    let sel = u16::from_le_bytes([b[size], b[size + 1]]);
    segment::load_segment(core, seg, Selector(sel))?;
    let offset = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    set_reg(core, i.op0_register(), offset);
    Ok(Flow::Next)
}

// ----- control and debug registers ------------------------------------------------

fn is_cr_or_dr(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| {
        i.op_kind(n) == OpKind::Register && (i.op_register(n).is_cr() || i.op_register(n).is_dr())
    })
}

fn control_register<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let (dst, src) = (i.op0_register(), i.op1_register());
    if src.is_cr() || src.is_dr() {
        let n = src.number() as u8;
        let val = if src.is_cr() {
            system::mov_from_cr(core, n)?
        } else {
            system::mov_from_dr(core, n)?
        };
        set_reg(core, dst, val);
        return Ok(Flow::Next);
    }
    let val = reg_value(core, src);
    let n = dst.number() as u8;
    let changed = if dst.is_dr() {
        system::mov_to_dr(core, n, val)?
    } else {
        let cr4_bits = core.cr4_writable();
        system::mov_to_cr(core, n, val, cr4_bits)?
    };
    if changed.intersects(system::Changed::ADDRESS_SPACE | system::Changed::PAGING) {
        core.after_paging_change();
    }
    Ok(Flow::Next)
}

// ----- MSRs -------------------------------------------------------------------------

/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;

fn msr_access<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    if !core.offers(ModelFeature::Msr) {
        return Err(Exception::InvalidOpcode.into());
    }
    let index = core.gpr(ECX);
    if i.mnemonic() == Mnemonic::Rdmsr {
        let value = core.read_msr(index)?;
        core.set_gpr(EAX, value as u32);
        core.set_gpr(EDX, (value >> 32) as u32);
    } else {
        let value = u64::from(core.gpr(EDX)) << 32 | u64::from(core.gpr(EAX));
        if index == msr::EFER && value & EFER_LME != 0 && core.sys().cpl == 0 {
            return Err(Fault::Unsupported(
                "long mode (EFER.LME): 64-bit guests need hardware virtualization \
                 (monitor.virtual_exec = \"hardware\" on a host that provides it); \
                 binary translation runs 32-bit guests only",
            ));
        }
        core.write_msr(index, value)?;
    }
    Ok(Flow::Next)
}

// ----- MASKMOVQ / MASKMOVDQU -----------------------------------------------------------

/// Offset of MM0 (ST0) in the FXSAVE image; each register takes 16 bytes.
const FX_MM0: usize = 32;
/// Offset of XMM0 in the FXSAVE image.
const FX_XMM0: usize = 160;

/// MASKMOVQ/MASKMOVDQU: stores the bytes of the first register whose mask
/// byte (second register) has its top bit set to DS:[EDI]. Carried out by
/// the monitor because the store address is held in a register, which the
/// translator cannot rebase by re-encoding (see `translator::confine`).
fn mask_move<C: Executor>(core: &mut C, i: &Instruction) -> Res<Flow> {
    let (base, width) = match i.code() {
        Code::Maskmovq_rDI_mm_mm => (FX_MM0, 8),
        Code::Maskmovdqu_rDI_xmm_xmm => (FX_XMM0, 16),
        _ => return Err(Fault::Unsupported("this masked store form")),
    };
    let fx = core.fx_image()?;
    let reg = |n: u32| {
        let at = base + 16 * i.op_register(n).number();
        let mut bytes = [0u8; 16];
        bytes[..width].copy_from_slice(&fx[at..at + width]);
        bytes
    };
    let (data, mask) = (reg(1), reg(2));
    let seg = Seg::from_iced(i.memory_segment()).unwrap_or(Seg::Ds);
    let edi = core.gpr(EDI);
    let selected: Vec<usize> = (0..width).filter(|&n| mask[n] & 0x80 != 0).collect();
    if let (Some(&first), Some(&last)) = (selected.first(), selected.last()) {
        // Check the whole range first: a fault leaves memory untouched.
        let start = edi.wrapping_add(first as u32);
        let lin = core
            .sys()
            .segment(seg)
            .check(seg, start, (last - first + 1) as u32, true)?;
        let mut probe = vec![0u8; last - first + 1];
        core.read_linear(lin, &mut probe, AccessKind::Write, Privilege::Current)?;
        for n in first..=last {
            if mask[n] & 0x80 != 0 {
                probe[n - first] = data[n];
            }
        }
        core.write_linear(lin, &probe, Privilege::Current)?;
    }
    if i.code() == Code::Maskmovq_rDI_mm_mm {
        enter_mmx_state(core)?;
    }
    Ok(Flow::Next)
}

/// What every MMX instruction but EMMS does to the x87 state: all tags
/// valid (abridged tag byte 0xff) and TOP = 0.
fn enter_mmx_state<C: Executor>(core: &mut C) -> Res<()> {
    let fx = core.fx_image_mut()?;
    fx[4] = 0xff;
    let fsw = u16::from_le_bytes([fx[2], fx[3]]) & !0x3800;
    fx[2..4].copy_from_slice(&fsw.to_le_bytes());
    Ok(())
}
