//! The debug registers: MOV to and from DR0-DR7 (Intel SDM vol. 2,
//! MOV—Move to/from Debug Registers; vol. 3, 17.2).
//!
//! Invariants: DR4 and DR5 are never stored (they alias DR6 and DR7
//! without CR4.DE, and are #UD with it); DR6 and DR7 always hold their
//! fixed bits (DR6 bits 4-11 and 16-31 read 1, bit 12 reads 0; DR7 bit 10
//! reads 1, bits 11, 12, 14, 15 read 0).

use super::privileged::require_cpl0;
use super::Changed;
use crate::cpu::context::CpuContext;
use crate::cpu::exception::Exception;
use crate::cpu::flags::{Cr4, Dr6, Dr7};

/// DR6 bits a MOV can set: B0-B3, BD, BS, BT.
const DR6_WRITABLE: u32 = 0xe00f;
/// DR7 bits a MOV can set: L0-G3, LE, GE, GD, R/W0-LEN3.
const DR7_WRITABLE: u32 = 0xffff_23ff;
/// DR7 bit 10, which reads 1.
const DR7_FIXED_ONES: u32 = 1 << 10;

/// The checks of every MOV to or from DR`dr`, in Bochs's order: #UD for a
/// register past DR7, #GP(0) at CPL > 0, #DB with DR7.GD (general detect:
/// DR6.BD is set and DR7.GD cleared, as the processor does on entering
/// the handler; SDM vol. 3, 17.2.4), #UD for DR4/DR5 with CR4.DE. Returns
/// the register actually meant (DR4/DR5 alias DR6/DR7).
fn debug_register(ctx: &mut (impl CpuContext + ?Sized), dr: u8) -> Result<usize, Exception> {
    if dr > 7 {
        return Err(Exception::InvalidOpcode);
    }
    require_cpl0(ctx)?;
    let sys = ctx.sys_mut();
    if sys.dr[7] & Dr7::GD != 0 {
        sys.dr[6] |= Dr6::BD.bits();
        sys.dr[7] &= !Dr7::GD;
        return Err(Exception::Debug);
    }
    match dr {
        4 | 5 if sys.cr4.contains(Cr4::DE) => Err(Exception::InvalidOpcode),
        4 | 5 => Ok(usize::from(dr) + 2),
        _ => Ok(usize::from(dr)),
    }
}

/// MOV from DR`dr`.
pub fn mov_from_dr(ctx: &mut (impl CpuContext + ?Sized), dr: u8) -> Result<u32, Exception> {
    let n = debug_register(ctx, dr)?;
    Ok(ctx.sys().dr[n])
}

/// MOV `value` to DR`dr`, with DR6's and DR7's fixed bits applied;
/// [`Changed::BREAKPOINTS`] for DR0-DR3 and DR7.
pub fn mov_to_dr(
    ctx: &mut (impl CpuContext + ?Sized),
    dr: u8,
    value: u32,
) -> Result<Changed, Exception> {
    let n = debug_register(ctx, dr)?;
    let (stored, changed) = match n {
        6 => ((value & DR6_WRITABLE) | Dr6::FIXED_ONES, Changed::empty()),
        7 => (
            (value & DR7_WRITABLE) | DR7_FIXED_ONES,
            Changed::BREAKPOINTS,
        ),
        _ => (value, Changed::BREAKPOINTS),
    };
    ctx.sys_mut().dr[n] = stored;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;

    #[test]
    fn mov_to_dr0_to_dr3_stores_any_address_and_reports_breakpoints() {
        let mut cpu = TestCpu::new();
        for dr in 0..4 {
            let a = 0xc000_0000 + u32::from(dr);
            assert_eq!(mov_to_dr(&mut cpu, dr, a), Ok(Changed::BREAKPOINTS));
            assert_eq!(mov_from_dr(&mut cpu, dr), Ok(a));
        }
    }

    #[test]
    fn dr4_and_dr5_alias_dr6_and_dr7_without_cr4_de() {
        let mut cpu = TestCpu::new();
        mov_to_dr(&mut cpu, 5, 0x3).unwrap();
        assert_eq!(cpu.sys.dr[7], 0x403);
        assert_eq!(mov_from_dr(&mut cpu, 4), Ok(0xffff_0ff0));
        assert_eq!(cpu.sys.dr[4], 0, "never stored");
    }

    #[test]
    fn dr4_and_dr5_with_cr4_de_are_ud() {
        let mut cpu = TestCpu::new();
        cpu.sys.cr4 |= Cr4::DE;
        assert_eq!(mov_from_dr(&mut cpu, 4), Err(Exception::InvalidOpcode));
        assert_eq!(mov_to_dr(&mut cpu, 5, 0), Err(Exception::InvalidOpcode));
        assert_eq!(mov_from_dr(&mut cpu, 6), Ok(0xffff_0ff0));
    }

    #[test]
    fn mov_to_or_from_a_debug_register_above_ring0_is_gp0() {
        let mut cpu = TestCpu::new();
        cpu.sys.cpl = 3;
        let gp = Err(Exception::GeneralProtection(0));
        assert_eq!(mov_from_dr(&mut cpu, 7), gp);
        assert_eq!(mov_to_dr(&mut cpu, 0, 1), gp.map(|_: u32| Changed::empty()));
        assert_eq!(cpu.sys.dr[0], 0);
    }

    #[test]
    fn dr7_gd_makes_a_debug_register_access_a_db_with_dr6_bd_and_clears_gd() {
        let mut cpu = TestCpu::new();
        mov_to_dr(&mut cpu, 7, Dr7::GD | 1).unwrap();
        assert_eq!(mov_to_dr(&mut cpu, 0, 0x1234), Err(Exception::Debug));
        assert_eq!(cpu.sys.dr[0], 0, "the access did not happen");
        assert_eq!(cpu.sys.dr[6] & Dr6::BD.bits(), Dr6::BD.bits());
        assert_eq!(cpu.sys.dr[7], 0x401, "GD cleared for the handler");
        assert_eq!(mov_from_dr(&mut cpu, 6), Ok(0xffff_2ff0));
    }

    #[test]
    fn dr6_keeps_its_fixed_ones_and_bit_12_clear() {
        let mut cpu = TestCpu::new();
        assert_eq!(mov_to_dr(&mut cpu, 6, 0), Ok(Changed::empty()));
        assert_eq!(cpu.sys.dr[6], 0xffff_0ff0);
        mov_to_dr(&mut cpu, 6, u32::MAX).unwrap();
        assert_eq!(cpu.sys.dr[6], 0xffff_eff0 | 0xf);
    }

    #[test]
    fn dr7_keeps_bit_10_set_and_its_reserved_bits_clear() {
        let mut cpu = TestCpu::new();
        mov_to_dr(&mut cpu, 7, 0).unwrap();
        assert_eq!(cpu.sys.dr[7], 0x400);
        mov_to_dr(&mut cpu, 7, !Dr7::GD).unwrap();
        assert_eq!(cpu.sys.dr[7], 0xffff_07ff);
    }

    #[test]
    fn a_debug_register_past_dr7_is_ud() {
        let mut cpu = TestCpu::new();
        assert_eq!(mov_from_dr(&mut cpu, 8), Err(Exception::InvalidOpcode));
    }
}
