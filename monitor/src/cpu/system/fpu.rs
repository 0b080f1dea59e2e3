//! When x87, MMX, SSE and FXSAVE/FXRSTOR instructions may run, by CR0.EM,
//! CR0.TS, CR0.MP and CR4.OSFXSR (Intel SDM vol. 3, 2.5, table 2-2
//! "Action Taken By x87 FPU Instructions for Different Combinations of EM,
//! MP, and TS", 13.1.3; vol. 2, WAIT, FXSAVE, FXRSTOR; vol. 1, 12.7 and
//! the MMX and SSE exception tables).
//!
//! The checks run before the instruction touches any state; a pending
//! x87 error (#MF) is the FPU's own business.

use crate::cpu::context::CpuContext;
use crate::cpu::exception::Exception;
use crate::cpu::flags::{Cr0, Cr4};

/// The class of an FPU or SIMD instruction, for its availability checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpuKind {
    /// An x87 instruction other than WAIT/FWAIT (FNSAVE, FRSTOR, ... too):
    /// #NM with EM or TS.
    X87,
    /// WAIT/FWAIT: #NM with TS and MP.
    Wait,
    /// An MMX instruction: #UD with EM, then #NM with TS.
    Mmx,
    /// An SSE/SSE2 instruction that uses XMM or MXCSR state (LDMXCSR and
    /// STMXCSR too): #UD with EM or without CR4.OSFXSR, then #NM with TS.
    Sse,
    /// FXSAVE/FXRSTOR: #NM with EM or TS (OSFXSR only decides whether the
    /// XMM state is included).
    Fxsr,
}

/// Whether an instruction of `kind` may run now: `Ok`, or the #UD or #NM
/// it raises instead.
pub fn fpu_available(ctx: &(impl CpuContext + ?Sized), kind: FpuKind) -> Result<(), Exception> {
    let sys = ctx.sys();
    let (em, ts, mp) = (
        sys.cr0.contains(Cr0::EM),
        sys.cr0.contains(Cr0::TS),
        sys.cr0.contains(Cr0::MP),
    );
    let (undefined, not_available) = match kind {
        FpuKind::X87 | FpuKind::Fxsr => (false, em || ts),
        FpuKind::Wait => (false, ts && mp),
        FpuKind::Mmx => (em, ts),
        FpuKind::Sse => (em || !sys.cr4.contains(Cr4::OSFXSR), ts),
    };
    if undefined {
        Err(Exception::InvalidOpcode)
    } else if not_available {
        Err(Exception::DeviceNotAvailable)
    } else {
        Ok(())
    }
}

/// The exception an unmasked SIMD floating-point error raises: #XM with
/// CR4.OSXMMEXCPT, else #UD (SDM vol. 3, 13.1.3).
pub fn simd_exception(ctx: &(impl CpuContext + ?Sized)) -> Exception {
    if ctx.sys().cr4.contains(Cr4::OSXMMEXCPT) {
        Exception::SimdFloatingPoint
    } else {
        Exception::InvalidOpcode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;

    const NM: Result<(), Exception> = Err(Exception::DeviceNotAvailable);
    const UD: Result<(), Exception> = Err(Exception::InvalidOpcode);

    fn with(cr0: Cr0, cr4: Cr4) -> TestCpu {
        let mut cpu = TestCpu::new();
        cpu.sys.cr0 |= cr0;
        cpu.sys.cr4 = cr4;
        cpu
    }

    #[test]
    fn every_kind_runs_with_em_and_ts_clear_and_osfxsr_set() {
        let cpu = with(Cr0::MP, Cr4::OSFXSR);
        for kind in [
            FpuKind::X87,
            FpuKind::Wait,
            FpuKind::Mmx,
            FpuKind::Sse,
            FpuKind::Fxsr,
        ] {
            assert_eq!(fpu_available(&cpu, kind), Ok(()), "{kind:?}");
        }
    }

    #[test]
    fn x87_with_em_or_ts_is_nm() {
        assert_eq!(
            fpu_available(&with(Cr0::EM, Cr4::empty()), FpuKind::X87),
            NM
        );
        assert_eq!(
            fpu_available(&with(Cr0::TS, Cr4::empty()), FpuKind::X87),
            NM
        );
    }

    #[test]
    fn wait_is_nm_only_with_ts_and_mp() {
        assert_eq!(
            fpu_available(&with(Cr0::TS, Cr4::empty()), FpuKind::Wait),
            Ok(())
        );
        assert_eq!(
            fpu_available(&with(Cr0::EM, Cr4::empty()), FpuKind::Wait),
            Ok(())
        );
        assert_eq!(
            fpu_available(&with(Cr0::TS | Cr0::MP, Cr4::empty()), FpuKind::Wait),
            NM
        );
    }

    #[test]
    fn mmx_with_em_is_ud_before_ts_is_nm() {
        assert_eq!(
            fpu_available(&with(Cr0::EM | Cr0::TS, Cr4::empty()), FpuKind::Mmx),
            UD
        );
        assert_eq!(
            fpu_available(&with(Cr0::TS, Cr4::empty()), FpuKind::Mmx),
            NM
        );
    }

    #[test]
    fn sse_without_osfxsr_or_with_em_is_ud_before_ts_is_nm() {
        assert_eq!(
            fpu_available(&with(Cr0::TS, Cr4::empty()), FpuKind::Sse),
            UD
        );
        assert_eq!(fpu_available(&with(Cr0::EM, Cr4::OSFXSR), FpuKind::Sse), UD);
        assert_eq!(fpu_available(&with(Cr0::TS, Cr4::OSFXSR), FpuKind::Sse), NM);
    }

    #[test]
    fn fxsave_and_fxrstor_with_em_or_ts_are_nm_whatever_osfxsr() {
        assert_eq!(
            fpu_available(&with(Cr0::EM, Cr4::OSFXSR), FpuKind::Fxsr),
            NM
        );
        assert_eq!(
            fpu_available(&with(Cr0::TS, Cr4::empty()), FpuKind::Fxsr),
            NM
        );
        assert_eq!(
            fpu_available(&with(Cr0::empty(), Cr4::empty()), FpuKind::Fxsr),
            Ok(())
        );
    }

    #[test]
    fn an_unmasked_simd_error_is_xm_only_with_osxmmexcpt() {
        assert_eq!(
            simd_exception(&with(Cr0::empty(), Cr4::OSFXSR)),
            Exception::InvalidOpcode
        );
        assert_eq!(
            simd_exception(&with(Cr0::empty(), Cr4::OSFXSR | Cr4::OSXMMEXCPT)),
            Exception::SimdFloatingPoint
        );
    }
}
