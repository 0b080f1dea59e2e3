//! x87, MMX, SSE and SSE2 instructions KVM's emulator gives back, run one
//! at a time on the host's FPU with the guest's FPU state loaded
//! (`native`).
//!
//! An instruction is carried out as the CPU would: the availability
//! checks (CR0.EM/TS/MP, CR4.OSFXSR: #NM, #UD) and an extension the guest
//! CPU does not define (#UD); a pending unmasked x87 exception (#MF at a
//! waiting x87 instruction, FWAIT or an instruction using MMX registers,
//! before it runs); the memory operand's segment checks, 16-byte alignment
//! (#GP(0)) and page walk with the CPL's rights (#PF); then the
//! instruction itself, re-encoded for the host ([`redirect`]) with its
//! memory operand in the routine's buffer and the guest's general
//! registers in host registers, over the guest's FXSAVE image
//! (`KVM_GET_FPU`). SIMD floating-point exceptions are masked while it
//! runs: the flags it raised decide ([`simd_outcome`]) between completing
//! with those flags set and the #XM (CR4.OSXMMEXCPT) or #UD an unmasked
//! one raises, which leaves everything but MXCSR's flags as it was.
//!
//! Invariants:
//! - Nothing of the guest changes unless the instruction completes: a
//!   memory operand is written back through the guest's page tables only
//!   after the instruction ran, and a fault there (#PF, #GP) leaves the
//!   FPU state, the registers and memory as they were; the FXSAVE image,
//!   the general registers and the arithmetic flags change last.
//! - The host never runs an instruction that could fault or trap there
//!   (`native`'s invariants): a waiting instruction with an x87 exception
//!   pending is the guest's #MF and does not run; SIMD exceptions are
//!   masked; FXRSTOR of an MXCSR the host refuses is the guest's #GP(0);
//!   an instruction the host CPU lacks, or one using a general register
//!   it does not name, stops the guest as not modelled.
//! - The x87 instruction and data pointers the host records for the
//!   instruction (its own addresses) are replaced by the guest's EIP and
//!   operand offset: no host address reaches the guest.
//!
//! Differences from the CPU, all shared with binary translation, which
//! runs the same instructions natively: #MF is raised whatever CR0.NE
//! (no FERR#/IRQ 13); FCS and FDS read as the host stores them; 16-bit
//! FNSTENV/FNSAVE images are the protected-mode ones.

use super::context::KvmContext;
use super::native::{HostFpu, ARITHMETIC_FLAGS, HOST_GPR, MEM, MEM_LEN, SLOT_LEN};
use crate::cpu::context::{seg_read, seg_write};
use crate::cpu::exec::Executor;
use crate::cpu::instr::operand::memory_operand;
use crate::cpu::system::{self, FpuKind};
use crate::cpu::{CpuContext, Eflags, Exception, Fault, Seg};
use iced_x86::{
    CpuidFeature, Encoder, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind,
    Register,
};

/// Offsets in the FXSAVE64 image.
const FX_FCW: usize = 0;
const FX_FSW: usize = 2;
const FX_FIP: usize = 8;
const FX_FDP: usize = 16;
const FX_MXCSR: usize = 24;

/// FSW.ES: an unmasked x87 exception is pending.
const FSW_ES: u16 = 0x80;
/// The six x87 exception flags (FSW) and masks (FCW), bits 0-5.
const X87_EXCEPTIONS: u16 = 0x3f;
/// MXCSR's exception flags (IE, DE, ZE, OE, UE, PE), bits 0-5; the masks
/// are the same bits shifted by [`MXCSR_MASK_SHIFT`].
const MXCSR_FLAGS: u32 = 0x3f;
const MXCSR_MASK_SHIFT: u32 = 7;
/// The exceptions SSE detects before computing (IE, DE, ZE): when one of
/// them is unmasked, the post-computation flags are not set (SDM vol. 1,
/// 11.5.1).
const MXCSR_PRE_COMPUTATION: u32 = 0x7;

/// The guest's memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Operand {
    seg: Seg,
    offset: u32,
    len: usize,
    read: bool,
    write: bool,
}

/// Carries out the FPU-class instruction `i` (of availability class
/// `kind`) with `host`; on success EIP is still at `i` (the caller moves
/// it on).
pub(super) fn execute(
    ctx: &mut KvmContext<'_>,
    host: &mut HostFpu,
    i: &Instruction,
    kind: FpuKind,
) -> Result<(), Fault> {
    let fx = check_runnable(ctx, i, kind)?;
    let operand = operand_of(ctx, i)?;
    let mut mem = [0u8; MEM_LEN];
    if let Some(op) = operand {
        load_operand(ctx, host, i, op, &mut mem)?;
    }
    let mut out = run_on_host(ctx, host, i, kind, &fx, &mem)?;
    restore_pointers(&mut out, host, ctx.eip(), operand.map(|op| op.offset));
    if let Some(op) = operand.filter(|op| op.write) {
        let result = host.block().mem;
        seg_write(ctx, op.seg, op.offset, &result[..op.len])?;
    }
    *ctx.fx_image_mut()? = out;
    complete_registers(ctx, host);
    Ok(())
}

/// The checks before `i` runs, in the CPU's order: #UD/#NM for CR0 and
/// CR4, #UD for an extension the guest CPU lacks, #MF for a pending x87
/// exception at a waiting instruction. Returns the guest's FXSAVE image.
fn check_runnable(
    ctx: &mut KvmContext<'_>,
    i: &Instruction,
    kind: FpuKind,
) -> Result<[u8; 512], Fault> {
    system::fpu_available(ctx, kind)?;
    if ctx.undefined(i) {
        return Err(Exception::InvalidOpcode.into());
    }
    if !host_has(i) {
        return Err(Fault::Unsupported(
            "an x87/SSE instruction the host CPU does not have",
        ));
    }
    let fx = ctx.fx_image()?;
    if waits_for_x87(i, kind) && x87_pending(&fx) {
        return Err(Exception::FloatingPoint.into());
    }
    Ok(fx)
}

/// Checks the memory operand's alignment and reads it (if the
/// instruction reads it) into `mem`; #GP(0) for an FXRSTOR image whose
/// MXCSR sets a reserved bit.
fn load_operand(
    ctx: &mut KvmContext<'_>,
    host: &HostFpu,
    i: &Instruction,
    op: Operand,
    mem: &mut [u8; MEM_LEN],
) -> Result<(), Fault> {
    check_alignment(ctx, i, op)?;
    if op.read {
        seg_read(ctx, op.seg, op.offset, &mut mem[..op.len])?;
    }
    if i.mnemonic() == Mnemonic::Fxrstor && mxcsr(&mem[..]) & !host.mxcsr_mask() != 0 {
        return Err(Exception::GeneralProtection(0).into());
    }
    Ok(())
}

/// Runs `i` on the host over the guest's image `fx`, registers and
/// arithmetic flags, and `mem`: the FXSAVE image after it, or the #XM
/// (#UD) of an unmasked SIMD exception, with only MXCSR's flags changed
/// in the guest.
fn run_on_host(
    ctx: &mut KvmContext<'_>,
    host: &mut HostFpu,
    i: &Instruction,
    kind: FpuKind,
    fx: &[u8; 512],
    mem: &[u8; MEM_LEN],
) -> Result<[u8; 512], Fault> {
    let encoded = redirect(i, host.slot_address())?;
    let guest_mxcsr = mxcsr(fx);
    // FXSAVE stores MXCSR and FXRSTOR loads it; neither raises SIMD
    // exceptions.
    let simd = kind != FpuKind::Fxsr;
    let mask = host.mxcsr_mask();
    let block = host.block();
    block.fx = *fx;
    if simd {
        set_mxcsr(&mut block.fx, run_mxcsr(guest_mxcsr) & mask);
    }
    block.mem = *mem;
    block.gpr = std::array::from_fn(|n| ctx.gpr(n));
    host.set_flags(ctx.eflags().bits());
    // SAFETY: `encoded` is `i` with its memory operand in the block and
    // its general registers mapped (`redirect`); the host has it
    // (`host_has`); no x87 exception is pending for a waiting instruction
    // (`check_runnable`), SIMD exceptions are masked, and an FXRSTOR
    // image's MXCSR fits the host's mask (`load_operand`): it cannot
    // fault or trap.
    unsafe { host.run(&encoded) };
    let mut out = host.block().fx;
    if simd {
        let raised = mxcsr(&out) & MXCSR_FLAGS;
        match simd_outcome(guest_mxcsr, raised) {
            Ok(mxcsr) => set_mxcsr(&mut out, mxcsr),
            Err(mxcsr) => {
                set_mxcsr(&mut ctx.fx_image_mut()?[..], mxcsr);
                return Err(system::simd_exception(ctx).into());
            }
        }
    }
    Ok(out)
}

/// The general registers and arithmetic flags the instruction left.
fn complete_registers(ctx: &mut KvmContext<'_>, host: &mut HostFpu) {
    let gpr = host.block().gpr;
    for (n, value) in gpr.into_iter().enumerate() {
        if value != ctx.gpr(n) {
            ctx.set_gpr(n, value);
        }
    }
    let eflags = ctx.eflags().bits() & !ARITHMETIC_FLAGS | host.flags();
    ctx.set_eflags(Eflags::from_bits_retain(eflags));
}

/// The x87/MMX/SSE availability class of `i`: the executor's, which
/// knows SSE instructions by their XMM or MMX registers, or for the SSE
/// conversions to a general register from memory (CVTSS2SI, CVTSD2SI and
/// their truncating forms), SSE, and for FISTTP (an SSE3 instruction on
/// the x87 stack), x87.
pub(super) fn kind_of(ctx: &KvmContext<'_>, i: &Instruction) -> Option<FpuKind> {
    use Mnemonic::*;
    ctx.fpu_kind(i).or(match i.mnemonic() {
        Cvtss2si | Cvttss2si | Cvtsd2si | Cvttsd2si => Some(FpuKind::Sse),
        Fisttp => Some(FpuKind::X87),
        _ => None,
    })
}

/// The MXCSR the instruction runs with: the guest's rounding, DAZ and FTZ,
/// every exception masked, no flag set (so that the flags afterwards are
/// the ones it raised).
fn run_mxcsr(guest: u32) -> u32 {
    (guest | MXCSR_FLAGS << MXCSR_MASK_SHIFT) & !MXCSR_FLAGS
}

/// What the SIMD exception flags `raised` by an instruction (run with
/// every exception masked) mean under the guest's MXCSR: `Ok` with the
/// MXCSR after it completed, or `Err` with the MXCSR of the #XM it raises
/// instead (an unmasked exception; only the pre-computation flags when
/// one of those is unmasked).
fn simd_outcome(guest: u32, raised: u32) -> Result<u32, u32> {
    let unmasked = raised & !(guest >> MXCSR_MASK_SHIFT) & MXCSR_FLAGS;
    if unmasked == 0 {
        return Ok(guest | raised);
    }
    let set = if unmasked & MXCSR_PRE_COMPUTATION != 0 {
        raised & MXCSR_PRE_COMPUTATION
    } else {
        raised
    };
    Err(guest | set)
}

/// Whether `i` checks for a pending x87 exception before it runs: FWAIT,
/// every x87 instruction but the non-waiting control ones (FNINIT,
/// FNCLEX, FNSTCW, FNSTSW, FNSTENV, FNSAVE), and every instruction using
/// MMX registers (SDM vol. 1, 8.6 and 12.5).
fn waits_for_x87(i: &Instruction, kind: FpuKind) -> bool {
    use Mnemonic::*;
    match kind {
        FpuKind::Wait | FpuKind::Mmx => true,
        FpuKind::X87 => !matches!(
            i.mnemonic(),
            Fninit | Fnclex | Fnstcw | Fnstsw | Fnstenv | Fnsave | Fneni | Fndisi | Fnsetpm
        ),
        FpuKind::Sse | FpuKind::Fxsr => {
            (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_mm())
        }
    }
}

/// Whether the FXSAVE image has an unmasked x87 exception pending (FSW.ES,
/// or a flag whose mask is clear).
fn x87_pending(fx: &[u8; 512]) -> bool {
    let fcw = u16::from_le_bytes([fx[FX_FCW], fx[FX_FCW + 1]]);
    let fsw = u16::from_le_bytes([fx[FX_FSW], fx[FX_FSW + 1]]);
    fsw & FSW_ES != 0 || fsw & !fcw & X87_EXCEPTIONS != 0
}

fn mxcsr(image: &[u8]) -> u32 {
    u32::from_le_bytes([
        image[FX_MXCSR],
        image[FX_MXCSR + 1],
        image[FX_MXCSR + 2],
        image[FX_MXCSR + 3],
    ])
}

fn set_mxcsr(image: &mut [u8], value: u32) {
    image[FX_MXCSR..FX_MXCSR + 4].copy_from_slice(&value.to_le_bytes());
}

fn u64_at(image: &[u8; 512], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&image[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Replaces the x87 instruction and data pointers the host recorded for
/// the instruction (the slot's and the buffer's addresses) by the guest's
/// EIP and operand offset.
fn restore_pointers(out: &mut [u8; 512], host: &HostFpu, eip: u32, offset: Option<u32>) {
    if u64_at(out, FX_FIP) == host.slot_address() {
        out[FX_FIP..FX_FIP + 8].copy_from_slice(&u64::from(eip).to_le_bytes());
    }
    if u64_at(out, FX_FDP) == host.mem_address() {
        let dp = u64::from(offset.unwrap_or(0));
        out[FX_FDP..FX_FDP + 8].copy_from_slice(&dp.to_le_bytes());
    }
}

/// The memory operand of `i`, if it has one: where, how many bytes, and
/// whether the instruction reads and writes it.
fn operand_of(ctx: &KvmContext<'_>, i: &Instruction) -> Result<Option<Operand>, Fault> {
    if !(0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory) {
        return Ok(None);
    }
    let len = i.memory_size().size();
    if len == 0 || len > MEM_LEN {
        return Err(Fault::Unsupported("this x87/SSE memory operand"));
    }
    let (read, write) = memory_access(i);
    let (seg, offset) = memory_operand(ctx, i)?;
    Ok(Some(Operand {
        seg,
        offset,
        len,
        read,
        write,
    }))
}

/// Whether `i` reads and whether it writes its memory operand.
fn memory_access(i: &Instruction) -> (bool, bool) {
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(i);
    info.used_memory()
        .iter()
        .fold((false, false), |(r, w), m| match m.access() {
            OpAccess::Read | OpAccess::CondRead => (true, w),
            OpAccess::Write | OpAccess::CondWrite => (r, true),
            OpAccess::ReadWrite | OpAccess::ReadCondWrite => (true, true),
            _ => (r, w),
        })
}

/// #GP(0) for a 16-byte operand of a legacy SSE instruction, or
/// FXSAVE/FXRSTOR's image, that is not 16-byte aligned (MOVUPS, MOVUPD,
/// MOVDQU, LDDQU and the SSE4.2 string compares accept any address).
fn check_alignment(ctx: &KvmContext<'_>, i: &Instruction, op: Operand) -> Result<(), Exception> {
    let linear = ctx.sys().segment(op.seg).base.wrapping_add(op.offset);
    if needs_alignment(i, op.len) && !linear.is_multiple_of(16) {
        return Err(Exception::GeneralProtection(0));
    }
    Ok(())
}

fn needs_alignment(i: &Instruction, len: usize) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Fxsave | Fxrstor => true,
        Movups | Movupd | Movdqu | Lddqu | Pcmpestri | Pcmpestrm | Pcmpistri | Pcmpistrm => false,
        _ => len == 16,
    }
}

/// `i` re-encoded for the host's slot at `ip`: its memory operand becomes
/// `[rdi + MEM]` (the routine's buffer, no segment override), each
/// general register the one `native::HOST_GPR` maps it to. Refused (not
/// modelled) when it uses a general register it does not name, or does
/// not fit the slot.
fn redirect(i: &Instruction, ip: u64) -> Result<Vec<u8>, Fault> {
    let unsupported = Fault::Unsupported("this x87/SSE instruction form");
    if uses_implicit_gpr(i) {
        return Err(unsupported);
    }
    let mut r = *i;
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::Register if i.op_register(n).is_gpr() => {
                let host = host_register(i.op_register(n)).ok_or(unsupported)?;
                r.set_op_register(n, host);
            }
            OpKind::Memory => {
                r.set_memory_base(Register::RDI);
                r.set_memory_index(Register::None);
                r.set_memory_index_scale(1);
                r.set_memory_displacement64(MEM as u64);
                // 8: a displacement with 64-bit addressing (iced's convention).
                r.set_memory_displ_size(8);
                r.set_segment_prefix(Register::None);
            }
            _ => {}
        }
    }
    let mut encoder = Encoder::new(64);
    encoder.encode(&r, ip).map_err(|_| unsupported)?;
    let bytes = encoder.take_buffer();
    if bytes.len() > SLOT_LEN {
        return Err(unsupported);
    }
    Ok(bytes)
}

/// The host register for the guest's 32- or 16-bit general register `r`.
fn host_register(r: Register) -> Option<Register> {
    let n = r.number();
    let host32 = *HOST_GPR.get(n)?;
    if r.is_gpr32() {
        Some(host32)
    } else if r.is_gpr16() {
        Some(match host32 {
            Register::EAX => Register::AX,
            Register::R9D => Register::R9W,
            Register::R10D => Register::R10W,
            Register::R11D => Register::R11W,
            Register::R12D => Register::R12W,
            Register::R13D => Register::R13W,
            Register::R14D => Register::R14W,
            _ => Register::R15W,
        })
    } else {
        None
    }
}

/// Whether `i` uses a general register that is neither one of its
/// register operands nor part of its memory operand's address (MASKMOVQ's
/// EDI, say).
fn uses_implicit_gpr(i: &Instruction) -> bool {
    let named = |r: Register| {
        (0..i.op_count())
            .any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).full_register() == r)
            || i.memory_base().full_register() == r
            || i.memory_index().full_register() == r
    };
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(i);
    info.used_registers().iter().any(|u| {
        let r = u.register();
        r.is_gpr() && !named(r.full_register())
    })
}

/// Whether the host CPU has every extension `i` needs.
fn host_has(i: &Instruction) -> bool {
    use CpuidFeature as F;
    i.cpuid_features().iter().all(|f| match f {
        F::INTEL8086
        | F::INTEL186
        | F::INTEL286
        | F::INTEL386
        | F::INTEL486
        | F::FPU
        | F::FPU287
        | F::FPU387
        | F::CMOV
        | F::FXSR
        | F::MMX
        | F::SSE
        | F::SSE2 => true,
        F::SSE3 => std::arch::is_x86_feature_detected!("sse3"),
        F::SSSE3 => std::arch::is_x86_feature_detected!("ssse3"),
        F::SSE4_1 => std::arch::is_x86_feature_detected!("sse4.1"),
        F::SSE4_2 => std::arch::is_x86_feature_detected!("sse4.2"),
        F::SSE4A => std::arch::is_x86_feature_detected!("sse4a"),
        F::PCLMULQDQ => std::arch::is_x86_feature_detected!("pclmulqdq"),
        F::AES => std::arch::is_x86_feature_detected!("aes"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions};

    fn decode(bitness: u32, bytes: &[u8]) -> Instruction {
        let i = Decoder::with_ip(bitness, bytes, 0x1000, DecoderOptions::NONE).decode();
        assert!(!i.is_invalid(), "{bytes:02x?}");
        i
    }

    /// `bytes` (32-bit code) redirected, decoded back as 64-bit code.
    fn redirected(bytes: &[u8]) -> Instruction {
        let ip = 0x7f00_1234_5000;
        let out = redirect(&decode(32, bytes), ip).unwrap();
        let i = Decoder::with_ip(64, &out, ip, DecoderOptions::NONE).decode();
        assert_eq!(i.len(), out.len(), "one instruction");
        i
    }

    fn assert_in_buffer(i: &Instruction) {
        assert_eq!(i.memory_base(), Register::RDI);
        assert_eq!(i.memory_index(), Register::None);
        assert_eq!(i.memory_displacement64(), MEM as u64);
        assert_eq!(i.segment_prefix(), Register::None);
    }

    #[test]
    fn a_scaled_index_operand_becomes_the_buffer() {
        // fld qword ptr [edi*8+0x1038a0]
        let i = redirected(&[0xdd, 0x04, 0xfd, 0xa0, 0x38, 0x10, 0x00]);
        assert_eq!(i.code(), Code::Fld_m64fp);
        assert_in_buffer(&i);
    }

    #[test]
    fn a_segment_override_and_16_bit_addressing_are_dropped() {
        // fs: addps xmm0, [ebx+esi+4]
        let i = redirected(&[0x64, 0x0f, 0x58, 0x44, 0x33, 0x04]);
        assert_eq!(i.code(), Code::Addps_xmm_xmmm128);
        assert_in_buffer(&i);
        // fld dword ptr [bx+si] (address-size prefix)
        let i = redirected(&[0x67, 0xd9, 0x00]);
        assert_eq!(i.code(), Code::Fld_m32fp);
        assert_in_buffer(&i);
    }

    #[test]
    fn general_registers_map_to_the_routines_registers() {
        // movd ebx, xmm0 -> r11d; cvtsi2sd xmm1, edi -> r15d
        let i = redirected(&[0x66, 0x0f, 0x7e, 0xc3]);
        assert_eq!(i.op0_register(), Register::R11D);
        assert_eq!(i.op1_register(), Register::XMM0);
        let i = redirected(&[0xf2, 0x0f, 0x2a, 0xcf]);
        assert_eq!(i.op1_register(), Register::R15D);
        // pextrw ecx, mm1, 3 -> r9d
        let i = redirected(&[0x0f, 0xc5, 0xc9, 0x03]);
        assert_eq!(i.op0_register(), Register::R9D);
        // fnstsw ax keeps AX
        let i = redirected(&[0xdf, 0xe0]);
        assert_eq!(i.code(), Code::Fnstsw_AX);
        // movd mm0, [esp+8]: ESP as an address goes with the operand
        let i = redirected(&[0x0f, 0x6e, 0x44, 0x24, 0x08]);
        assert_in_buffer(&i);
    }

    #[test]
    fn an_implicit_general_register_is_refused() {
        // maskmovq mm0, mm1 stores at DS:[EDI]
        let i = decode(32, &[0x0f, 0xf7, 0xc1]);
        assert!(matches!(redirect(&i, 0x1000), Err(Fault::Unsupported(_))));
    }

    #[test]
    fn the_operand_access_follows_the_instruction() {
        let access = |bytes: &[u8]| memory_access(&decode(32, bytes));
        assert_eq!(access(&[0xdd, 0x00]), (true, false), "fld m64");
        assert_eq!(access(&[0xdd, 0x18]), (false, true), "fstp m64");
        assert_eq!(
            access(&[0x0f, 0x29, 0x00]),
            (false, true),
            "movaps m128, xmm0"
        );
        assert_eq!(access(&[0x0f, 0xae, 0x08]), (true, false), "fxrstor");
    }

    #[test]
    fn only_aligned_forms_need_16_byte_alignment() {
        let needs = |bytes: &[u8]| {
            let i = decode(32, bytes);
            needs_alignment(&i, i.memory_size().size())
        };
        assert!(needs(&[0x0f, 0x58, 0x00]), "addps xmm0, m128");
        assert!(needs(&[0x0f, 0x28, 0x00]), "movaps");
        assert!(!needs(&[0x0f, 0x10, 0x00]), "movups");
        assert!(!needs(&[0xf3, 0x0f, 0x6f, 0x00]), "movdqu");
        assert!(!needs(&[0xf3, 0x0f, 0x58, 0x00]), "addss m32");
        assert!(!needs(&[0xdb, 0x28]), "fld m80");
        assert!(needs(&[0x0f, 0xae, 0x00]), "fxsave");
    }

    #[test]
    fn waiting_instructions_check_for_a_pending_x87_exception() {
        let waits = |bytes: &[u8], kind| waits_for_x87(&decode(32, bytes), kind);
        assert!(waits(&[0x9b], FpuKind::Wait), "fwait");
        assert!(waits(&[0xd9, 0xe8], FpuKind::X87), "fld1");
        assert!(waits(&[0xd9, 0xd0], FpuKind::X87), "fnop");
        assert!(!waits(&[0xdb, 0xe3], FpuKind::X87), "fninit");
        assert!(!waits(&[0xdf, 0xe0], FpuKind::X87), "fnstsw ax");
        assert!(!waits(&[0xd9, 0x38], FpuKind::X87), "fnstcw");
        assert!(
            waits(&[0x9b, 0xd9, 0x38], FpuKind::X87),
            "fstcw (WAIT; FNSTCW)"
        );
        assert!(waits(&[0x0f, 0xfc, 0xc1], FpuKind::Mmx), "paddb mm0, mm1");
        assert!(
            waits(&[0x0f, 0x2a, 0xc1], FpuKind::Sse),
            "cvtpi2ps xmm0, mm1"
        );
        assert!(!waits(&[0x0f, 0x58, 0xc1], FpuKind::Sse), "addps");
        assert!(!waits(&[0x0f, 0xae, 0x00], FpuKind::Fxsr), "fxsave");
    }

    fn image(fcw: u16, fsw: u16) -> [u8; 512] {
        let mut fx = [0u8; 512];
        fx[0..2].copy_from_slice(&fcw.to_le_bytes());
        fx[2..4].copy_from_slice(&fsw.to_le_bytes());
        fx
    }

    #[test]
    fn an_unmasked_x87_flag_or_es_is_a_pending_exception() {
        assert!(!x87_pending(&image(0x037f, 0x0000)), "clean");
        assert!(!x87_pending(&image(0x037f, 0x0004)), "ZE flagged, masked");
        assert!(x87_pending(&image(0x037b, 0x0084)), "ZE flagged, unmasked");
        assert!(
            x87_pending(&image(0x037b, 0x0004)),
            "unmasked flag without ES"
        );
        assert!(x87_pending(&image(0x037f, 0x0080)), "ES alone");
    }

    #[test]
    fn masked_simd_exceptions_only_set_flags() {
        // Default MXCSR (all masked): PE raised -> flag set, completes.
        assert_eq!(simd_outcome(0x1f80, 0x20), Ok(0x1fa0));
        assert_eq!(simd_outcome(0x1f80, 0), Ok(0x1f80));
    }

    #[test]
    fn an_unmasked_simd_exception_faults_with_its_flags() {
        // ZE unmasked (mask bit 9 clear), divide by zero raises ZE.
        assert_eq!(simd_outcome(0x1d80, 0x04), Err(0x1d84));
        // IE unmasked with PE also raised: only the pre-computation flag.
        assert_eq!(simd_outcome(0x1f00, 0x21), Err(0x1f01));
        // PE unmasked, DE masked: both flags.
        assert_eq!(simd_outcome(0x0f80, 0x22), Err(0x0fa2));
    }

    #[test]
    fn host_instruction_and_data_pointers_become_the_guests() {
        let host = HostFpu::new().unwrap();
        let mut out = [0u8; 512];
        out[FX_FIP..FX_FIP + 8].copy_from_slice(&host.slot_address().to_le_bytes());
        out[FX_FDP..FX_FDP + 8].copy_from_slice(&host.mem_address().to_le_bytes());
        restore_pointers(&mut out, &host, 0x0010_1238, Some(0x0010_38a0));
        assert_eq!(u64_at(&out, FX_FIP), 0x0010_1238);
        assert_eq!(u64_at(&out, FX_FDP), 0x0010_38a0);
        // Pointers the instruction did not set (a control instruction,
        // no memory operand) stay the guest's.
        let mut kept = [0u8; 512];
        kept[FX_FIP..FX_FIP + 8].copy_from_slice(&0x0010_0000u64.to_le_bytes());
        kept[FX_FDP..FX_FDP + 8].copy_from_slice(&0x0020_0000u64.to_le_bytes());
        let before = kept;
        restore_pointers(&mut kept, &host, 0x0010_1238, None);
        assert_eq!(kept, before);
    }

    #[test]
    fn the_run_mxcsr_masks_everything_and_keeps_rounding() {
        assert_eq!(run_mxcsr(0x6d25), (0x6d25 | 0x1f80) & !0x3f);
        assert_eq!(run_mxcsr(0x1f80), 0x1f80);
    }
}
