//! The guest's instruction set: which instruction-set extensions the guest
//! CPU model offers, and what an instruction does on such a CPU.
//!
//! A guest instruction whose extension the model does not offer must behave
//! as on a real CPU without that extension, never as on the host: it raises
//! #UD, except where the architecture defines a fallback (the hint space
//! `0F 18`-`0F 1F` executes as a NOP, `LZCNT`/`TZCNT` execute as `BSR`/`BSF`
//! because their `F3` prefix is ignored).
//!
//! Invariant: an extension can only be offered if it is in
//! [`GuestIsa::TRANSLATABLE`], the extensions whose every instruction the
//! translator runs with its memory accesses confined to the guest's window
//! and whose register state the vCPU saves and restores (x87/MMX/SSE through
//! FXSAVE). Everything else (AVX and other XSAVE-managed state, MONITORX,
//! CLZERO, MOVDIR64B, WAITPKG, PKU, ...) is never offered, so its
//! instructions raise #UD.

use iced_x86::{Code, CpuidFeature, Instruction, OpCodeTableKind};

/// A set of iced-x86 [`CpuidFeature`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestIsa {
    bits: [u64; 4],
}

/// What an instruction does on the guest CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// It exists: run it as decoded.
    Native,
    /// It does not exist and the opcode is in the hint space: a NOP.
    Nop,
    /// It does not exist, and the CPU runs this other instruction instead.
    Substitute(Code),
    /// It does not exist: #UD.
    Undefined,
}

fn index(f: CpuidFeature) -> (usize, u64) {
    let n = f as usize;
    (n / 64, 1u64 << (n % 64))
}

impl GuestIsa {
    /// Extensions every 32-bit x86 CPU the monitor models has, whatever
    /// CPUID says: the 8086..486 integer instruction sets, CPUID itself,
    /// the P6 multi-byte NOP and PAUSE (a NOP on older CPUs).
    pub const BASELINE: &'static [CpuidFeature] = &[
        CpuidFeature::INTEL8086,
        CpuidFeature::INTEL186,
        CpuidFeature::INTEL286,
        CpuidFeature::INTEL386,
        CpuidFeature::INTEL486,
        CpuidFeature::CPUID,
        CpuidFeature::MULTIBYTENOP,
        CpuidFeature::PAUSE,
    ];

    /// Extensions the translator can run confined and with their state
    /// virtualized; only these may be offered to a guest.
    pub const TRANSLATABLE: &'static [CpuidFeature] = &[
        CpuidFeature::FPU,
        CpuidFeature::FPU287,
        CpuidFeature::FPU387,
        CpuidFeature::TSC,
        CpuidFeature::MSR,
        CpuidFeature::SEP,
        CpuidFeature::CX8,
        CpuidFeature::CMOV,
        CpuidFeature::CLFSH,
        CpuidFeature::MMX,
        CpuidFeature::FXSR,
        CpuidFeature::SSE,
        CpuidFeature::SSE2,
        CpuidFeature::SSE3,
        CpuidFeature::SSSE3,
        CpuidFeature::SSE4_1,
        CpuidFeature::SSE4_2,
        CpuidFeature::SSE4A,
        CpuidFeature::POPCNT,
        CpuidFeature::LZCNT,
        CpuidFeature::MOVBE,
        CpuidFeature::AES,
        CpuidFeature::PCLMULQDQ,
        CpuidFeature::RDRAND,
        CpuidFeature::PREFETCHW,
        CpuidFeature::CMPXCHG16B,
    ];

    /// Only the baseline.
    pub fn baseline() -> GuestIsa {
        let mut isa = GuestIsa { bits: [0; 4] };
        for f in Self::BASELINE {
            isa.insert(*f);
        }
        isa
    }

    /// The baseline plus `features`; `Err` names the first feature that
    /// cannot be offered.
    pub fn with(features: &[CpuidFeature]) -> Result<GuestIsa, CpuidFeature> {
        let mut isa = GuestIsa::baseline();
        for f in features {
            if !Self::can_offer(*f) {
                return Err(*f);
            }
            isa.insert(*f);
        }
        Ok(isa)
    }

    /// Whether `f` may be offered to a guest.
    pub fn can_offer(f: CpuidFeature) -> bool {
        Self::BASELINE.contains(&f) || Self::TRANSLATABLE.contains(&f)
    }

    fn insert(&mut self, f: CpuidFeature) {
        let (word, bit) = index(f);
        self.bits[word] |= bit;
    }

    /// Whether the guest CPU has `f`.
    pub fn offers(&self, f: CpuidFeature) -> bool {
        let (word, bit) = index(f);
        self.bits[word] & bit != 0
    }

    /// What `i` does on the guest CPU.
    pub fn availability(&self, i: &Instruction) -> Availability {
        if i.cpuid_features().iter().all(|f| self.offers(*f)) {
            return Availability::Native;
        }
        if let Some(code) = prefix_ignored_fallback(i.code()) {
            return Availability::Substitute(code);
        }
        if in_hint_space(i) {
            return Availability::Nop;
        }
        Availability::Undefined
    }
}

impl Default for GuestIsa {
    fn default() -> Self {
        GuestIsa::baseline()
    }
}

/// Which part of the floating-point and vector state an instruction uses,
/// as CR0.TS/EM/MP and CR4.OSFXSR decide its #NM and #UD (SDM vol. 3,
/// 2.5, 13.1; vol. 1, 13.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpuClass {
    /// None of it.
    None,
    /// An x87 instruction.
    X87,
    /// WAIT/FWAIT.
    Wait,
    /// An MMX instruction (including EMMS).
    Mmx,
    /// SSE and later vector instructions (and LDMXCSR/STMXCSR).
    Sse,
    /// FXSAVE/FXRSTOR.
    Fxsr,
}

/// The class of `i`, from the registers it names and its CPUID features:
/// fences, prefetches, CLFLUSH and MOVNTI are SSE-era but touch no SSE
/// state, so CR0.TS does not affect them.
pub fn fpu_class(i: &Instruction) -> FpuClass {
    use iced_x86::Mnemonic;
    use CpuidFeature as F;
    match i.mnemonic() {
        Mnemonic::Wait => return FpuClass::Wait,
        Mnemonic::Ldmxcsr | Mnemonic::Stmxcsr => return FpuClass::Sse,
        _ => {}
    }
    let features = i.cpuid_features();
    let has = |f: &[F]| features.iter().any(|x| f.contains(x));
    if has(&[F::FXSR]) {
        return FpuClass::Fxsr;
    }
    let any_register = |test: fn(iced_x86::Register) -> bool| {
        (0..i.op_count())
            .any(|n| i.op_kind(n) == iced_x86::OpKind::Register && test(i.op_register(n)))
    };
    if any_register(|r| r.is_xmm()) {
        FpuClass::Sse
    } else if any_register(|r| r.is_mm()) || has(&[F::MMX]) {
        FpuClass::Mmx
    } else if any_register(|r| r.is_st()) || has(&[F::FPU, F::FPU287, F::FPU387]) {
        FpuClass::X87
    } else {
        FpuClass::None
    }
}

/// `F3 0F BC/BD` on a CPU without BMI1/LZCNT: the prefix is ignored.
fn prefix_ignored_fallback(code: Code) -> Option<Code> {
    Some(match code {
        Code::Tzcnt_r16_rm16 => Code::Bsf_r16_rm16,
        Code::Tzcnt_r32_rm32 => Code::Bsf_r32_rm32,
        Code::Lzcnt_r16_rm16 => Code::Bsr_r16_rm16,
        Code::Lzcnt_r32_rm32 => Code::Bsr_r32_rm32,
        _ => return None,
    })
}

/// Legacy `0F 18`-`0F 1F` with a ModRM byte: the reserved-NOP hint space
/// (prefetch hints, CLDEMOTE, MPX, CET markers), a NOP where the extension
/// is absent (Intel SDM vol. 2, NOP and "Reserved NOP").
fn in_hint_space(i: &Instruction) -> bool {
    let op = i.op_code();
    let first_byte = if op.op_code_len() == 2 {
        op.op_code() >> 8
    } else {
        op.op_code()
    };
    op.encoding() == iced_x86::EncodingKind::Legacy
        && op.table() == OpCodeTableKind::T0F
        && (0x18..=0x1f).contains(&first_byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::new(32, bytes, DecoderOptions::NONE).decode()
    }

    fn sse2() -> GuestIsa {
        GuestIsa::with(&[
            CpuidFeature::FPU,
            CpuidFeature::MMX,
            CpuidFeature::SSE,
            CpuidFeature::SSE2,
        ])
        .unwrap()
    }

    #[test]
    fn offered_extension_runs_natively() {
        assert_eq!(
            sse2().availability(&decode(&[0x66, 0x0f, 0xfe, 0xc1])), // paddd xmm0,xmm1
            Availability::Native
        );
    }

    #[test]
    fn absent_extension_is_undefined() {
        let isa = sse2();
        // clzero, vpgatherdd, movdir64b, rdpkru, pshufb (SSSE3)
        for bytes in [
            &[0x0f, 0x01, 0xfc][..],
            &[0xc4, 0xe2, 0x71, 0x90, 0x04, 0x90],
            &[0x66, 0x0f, 0x38, 0xf8, 0x03],
            &[0x0f, 0x01, 0xee],
            &[0x66, 0x0f, 0x38, 0x00, 0xc1],
        ] {
            assert_eq!(
                isa.availability(&decode(bytes)),
                Availability::Undefined,
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn absent_hint_space_extension_is_a_nop() {
        // cldemote [ebx], endbr32
        for bytes in [&[0x0f, 0x1c, 0x03][..], &[0xf3, 0x0f, 0x1e, 0xfb]] {
            assert_eq!(sse2().availability(&decode(bytes)), Availability::Nop);
        }
    }

    #[test]
    fn lzcnt_without_the_extension_is_bsr() {
        assert_eq!(
            sse2().availability(&decode(&[0xf3, 0x0f, 0xbd, 0xc3])),
            Availability::Substitute(Code::Bsr_r32_rm32)
        );
    }

    #[test]
    fn fpu_classes_follow_the_instruction_set() {
        assert_eq!(fpu_class(&decode(&[0xd9, 0xe8])), FpuClass::X87); // fld1
        assert_eq!(fpu_class(&decode(&[0x9b])), FpuClass::Wait);
        assert_eq!(fpu_class(&decode(&[0x0f, 0xfe, 0xc1])), FpuClass::Mmx); // paddd mm0,mm1
        assert_eq!(
            fpu_class(&decode(&[0x66, 0x0f, 0xfe, 0xc1])), // paddd xmm0,xmm1
            FpuClass::Sse
        );
        assert_eq!(fpu_class(&decode(&[0x0f, 0x70, 0xc1, 0])), FpuClass::Mmx); // pshufw
        assert_eq!(fpu_class(&decode(&[0x0f, 0xae, 0x03])), FpuClass::Fxsr); // fxsave
        assert_eq!(fpu_class(&decode(&[0xda, 0xc1])), FpuClass::X87); // fcmovb
        assert_eq!(fpu_class(&decode(&[0x01, 0xc3])), FpuClass::None); // add
        assert_eq!(fpu_class(&decode(&[0x0f, 0xae, 0xf8])), FpuClass::None); // sfence
        assert_eq!(fpu_class(&decode(&[0x0f, 0xae, 0x13])), FpuClass::Sse); // ldmxcsr [ebx]
        assert_eq!(fpu_class(&decode(&[0x0f, 0x77])), FpuClass::Mmx); // emms
    }

    #[test]
    fn xsave_managed_state_cannot_be_offered() {
        for f in [
            CpuidFeature::AVX,
            CpuidFeature::XSAVE,
            CpuidFeature::CLZERO,
            CpuidFeature::PKU,
        ] {
            assert_eq!(GuestIsa::with(&[f]), Err(f));
        }
    }
}
