//! The control registers: MOV to and from CR0, CR2, CR3 and CR4, SMSW,
//! LMSW and CLTS (Intel SDM vol. 2, MOV—Move to/from Control Registers,
//! SMSW, LMSW, CLTS; vol. 3, 2.5 "Control Registers", 9.8.1).
//!
//! Invariants: CR0.ET reads 1 and CR0.PE stays 1 (real mode is not
//! modelled); CR4 holds only the bits the CPU has (the caller says which,
//! from its CPUID model); a load that faults changes nothing.

use super::privileged::require_cpl0;
use super::Changed;
use crate::cpu::context::CpuContext;
use crate::cpu::exception::{Exception, Fault};
use crate::cpu::flags::{Cr0, Cr4};

/// The CR4 bits of a P6-family processor with every feature this model
/// can offer (VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, OSFXSR,
/// OSXMMEXCPT). The vCPU passes the subset its CPUID announces (VME and
/// PVI with VME, DE, PSE, PAE, MCE, PGE with their bits, OSFXSR with FXSR,
/// OSXMMEXCPT with SSE); OSXSAVE is never one (no XSAVE).
pub const CR4_P6: Cr4 = Cr4::VME
    .union(Cr4::PVI)
    .union(Cr4::TSD)
    .union(Cr4::DE)
    .union(Cr4::PSE)
    .union(Cr4::PAE)
    .union(Cr4::MCE)
    .union(Cr4::PGE)
    .union(Cr4::PCE)
    .union(Cr4::OSFXSR)
    .union(Cr4::OSXMMEXCPT);

/// CR0 bits that change how addresses translate.
const CR0_PAGING: Cr0 = Cr0::PG.union(Cr0::WP);
/// CR0 bits of the FPU.
const CR0_FPU: Cr0 = Cr0::TS.union(Cr0::EM).union(Cr0::MP).union(Cr0::NE);
/// CR4 bits that change how page-table entries read.
const CR4_PAGING: Cr4 = Cr4::PSE.union(Cr4::PGE).union(Cr4::PAE);
/// CR4 bits of the FPU and SSE.
const CR4_FPU: Cr4 = Cr4::OSFXSR.union(Cr4::OSXMMEXCPT);

/// #UD for a control register other than CR0, CR2, CR3, CR4.
fn check_cr(cr: u8) -> Result<(), Exception> {
    if matches!(cr, 0 | 2 | 3 | 4) {
        Ok(())
    } else {
        Err(Exception::InvalidOpcode)
    }
}

/// MOV from CR`cr` (#UD for CR1, CR5-CR7; #GP(0) at CPL > 0).
pub fn mov_from_cr(ctx: &(impl CpuContext + ?Sized), cr: u8) -> Result<u32, Exception> {
    check_cr(cr)?;
    require_cpl0(ctx)?;
    let sys = ctx.sys();
    Ok(match cr {
        0 => sys.cr0.bits(),
        2 => sys.cr2,
        3 => sys.cr3,
        _ => sys.cr4.bits(),
    })
}

/// MOV `value` to CR`cr` (#UD for CR1, CR5-CR7; #GP(0) at CPL > 0; see
/// [`write_cr0`], [`write_cr3`], [`write_cr4`] for the rest). `cr4_bits`
/// are the CR4 bits this CPU has (e.g. [`CR4_P6`]).
pub fn mov_to_cr(
    ctx: &mut (impl CpuContext + ?Sized),
    cr: u8,
    value: u32,
    cr4_bits: Cr4,
) -> Result<Changed, Fault> {
    check_cr(cr)?;
    require_cpl0(ctx)?;
    match cr {
        0 => write_cr0(ctx, value),
        2 => {
            ctx.sys_mut().cr2 = value;
            Ok(Changed::empty())
        }
        3 => Ok(write_cr3(ctx, value)),
        _ => write_cr4(ctx, value, cr4_bits),
    }
}

/// What a change of CR0 from `old` to `new` asks of the vCPU.
fn cr0_changes(old: Cr0, new: Cr0) -> Changed {
    let diff = old ^ new;
    let paging = old.contains(Cr0::PG) || new.contains(Cr0::PG);
    let mut c = Changed::empty();
    c.set(
        Changed::PAGING,
        diff.contains(Cr0::PG) || (paging && diff.intersects(CR0_PAGING)),
    );
    c.set(Changed::FPU, diff.intersects(CR0_FPU));
    c.set(Changed::PROTECTION, diff.contains(Cr0::PE));
    c.set(Changed::ALIGNMENT, diff.contains(Cr0::AM));
    c.set(Changed::CACHE, diff.intersects(Cr0::CD | Cr0::NW));
    c
}

/// Loads CR0 with `value` at CPL 0 (SDM vol. 3, 2.5, 9.9): reserved bits
/// are ignored and ET reads 1; PG without PE or NW without CD is #GP(0);
/// clearing PE is [`Fault::Unsupported`] ("real mode"); paging with
/// CR4.PAE is [`Fault::Unsupported`] ("PAE paging").
pub fn write_cr0(ctx: &mut (impl CpuContext + ?Sized), value: u32) -> Result<Changed, Fault> {
    let new = Cr0::from_bits_truncate(value) | Cr0::ET;
    if (new.contains(Cr0::PG) && !new.contains(Cr0::PE))
        || (new.contains(Cr0::NW) && !new.contains(Cr0::CD))
    {
        return Err(Exception::GeneralProtection(0).into());
    }
    if !new.contains(Cr0::PE) {
        return Err(Fault::Unsupported("real mode"));
    }
    if new.contains(Cr0::PG) && ctx.sys().cr4.contains(Cr4::PAE) {
        return Err(Fault::Unsupported("PAE paging"));
    }
    let old = ctx.sys().cr0;
    ctx.sys_mut().cr0 = new;
    Ok(cr0_changes(old, new))
}

/// Loads CR3 with `value` (the page-directory base and PWT/PCD; the
/// ignored bits are kept as written). With paging on, translations are
/// flushed even if the value is the same.
pub fn write_cr3(ctx: &mut (impl CpuContext + ?Sized), value: u32) -> Changed {
    let sys = ctx.sys_mut();
    sys.cr3 = value;
    if sys.paging() {
        Changed::ADDRESS_SPACE
    } else {
        Changed::empty()
    }
}

/// Loads CR4 with `value` (SDM vol. 3, 2.5): a bit that is reserved or
/// not in `cr4_bits` (what this CPU has) is #GP(0); PAE with paging on is
/// [`Fault::Unsupported`] ("PAE paging").
pub fn write_cr4(
    ctx: &mut (impl CpuContext + ?Sized),
    value: u32,
    cr4_bits: Cr4,
) -> Result<Changed, Fault> {
    let new = Cr4::from_bits(value)
        .filter(|v| cr4_bits.contains(*v))
        .ok_or(Exception::GeneralProtection(0))?;
    let sys = ctx.sys_mut();
    if new.contains(Cr4::PAE) && sys.paging() {
        return Err(Fault::Unsupported("PAE paging"));
    }
    let diff = sys.cr4 ^ new;
    sys.cr4 = new;
    let mut c = Changed::empty();
    c.set(Changed::PAGING, sys.paging() && diff.intersects(CR4_PAGING));
    c.set(Changed::FPU, diff.intersects(CR4_FPU));
    c.set(Changed::CONTROLS, diff.intersects(!(CR4_PAGING | CR4_FPU)));
    Ok(c)
}

/// SMSW: CR0 (a 16-bit or memory destination keeps its low 16 bits; a
/// 32-bit register gets all of CR0, as P6-family processors give it). Not
/// privileged (UMIP is not modelled).
pub fn smsw(ctx: &(impl CpuContext + ?Sized)) -> u32 {
    ctx.sys().cr0.bits()
}

/// LMSW `value` (SDM vol. 2, LMSW): #GP(0) at CPL > 0; loads PE, MP, EM
/// and TS from the low 4 bits only, and cannot clear PE.
pub fn lmsw(ctx: &mut (impl CpuContext + ?Sized), value: u16) -> Result<Changed, Exception> {
    require_cpl0(ctx)?;
    let low = Cr0::PE | Cr0::MP | Cr0::EM | Cr0::TS;
    let old = ctx.sys().cr0;
    let new = (old - (low - Cr0::PE)) | (Cr0::from_bits_truncate(u32::from(value)) & low);
    ctx.sys_mut().cr0 = new;
    Ok(cr0_changes(old, new))
}

/// CLTS (SDM vol. 2, CLTS): #GP(0) at CPL > 0; clears CR0.TS.
pub fn clts(ctx: &mut (impl CpuContext + ?Sized)) -> Result<Changed, Exception> {
    require_cpl0(ctx)?;
    let old = ctx.sys().cr0;
    let new = old - Cr0::TS;
    ctx.sys_mut().cr0 = new;
    Ok(cr0_changes(old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;

    const GP0: Fault = Fault::Exception(Exception::GeneralProtection(0));
    const PE_ET: u32 = 0x11;

    fn cr0(cpu: &mut TestCpu, value: u32) -> Result<Changed, Fault> {
        mov_to_cr(cpu, 0, value, CR4_P6)
    }

    fn cr4(cpu: &mut TestCpu, value: u32) -> Result<Changed, Fault> {
        mov_to_cr(cpu, 4, value, CR4_P6)
    }

    #[test]
    fn mov_from_cr_reads_cr0_cr2_cr3_and_cr4() {
        let mut cpu = TestCpu::new();
        cpu.sys.cr2 = 0x1234;
        cpu.sys.cr3 = 0x5000;
        cpu.sys.cr4 = Cr4::PSE;
        assert_eq!(mov_from_cr(&cpu, 0), Ok(PE_ET));
        assert_eq!(mov_from_cr(&cpu, 2), Ok(0x1234));
        assert_eq!(mov_from_cr(&cpu, 3), Ok(0x5000));
        assert_eq!(mov_from_cr(&cpu, 4), Ok(0x10));
    }

    #[test]
    fn mov_to_or_from_cr1_and_cr5_to_cr7_is_ud_even_above_ring0() {
        let mut cpu = TestCpu::new();
        cpu.sys.cpl = 3;
        for cr in [1, 5, 6, 7, 8] {
            assert_eq!(mov_from_cr(&cpu, cr), Err(Exception::InvalidOpcode));
            assert_eq!(
                mov_to_cr(&mut cpu, cr, 0, CR4_P6),
                Err(Exception::InvalidOpcode.into())
            );
        }
    }

    #[test]
    fn mov_to_or_from_a_control_register_above_ring0_is_gp0() {
        let mut cpu = TestCpu::new();
        cpu.sys.cpl = 3;
        assert_eq!(mov_from_cr(&cpu, 0), Err(Exception::GeneralProtection(0)));
        assert_eq!(mov_to_cr(&mut cpu, 2, 5, CR4_P6), Err(GP0));
        assert_eq!(cpu.sys.cr2, 0);
    }

    #[test]
    fn mov_cr0_pg_without_pe_is_gp() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr0(&mut cpu, 0x8000_0010), Err(GP0));
        assert_eq!(cpu.sys.cr0, Cr0::PE | Cr0::ET);
    }

    #[test]
    fn mov_cr0_nw_without_cd_is_gp() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr0(&mut cpu, PE_ET | 1 << 29), Err(GP0));
        assert!(cr0(&mut cpu, PE_ET | 3 << 29).is_ok());
    }

    #[test]
    fn mov_cr0_clearing_pe_is_unsupported_real_mode() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr0(&mut cpu, 0x10), Err(Fault::Unsupported("real mode")));
        assert!(cpu.sys.cr0.contains(Cr0::PE));
    }

    #[test]
    fn mov_cr0_sets_et_and_ignores_reserved_bits() {
        let mut cpu = TestCpu::new();
        cr0(&mut cpu, 0x0000_ffe1).unwrap();
        assert_eq!(cpu.sys.cr0.bits(), 0x31, "PE and NE of 0xffe1, and ET");
    }

    #[test]
    fn mov_cr0_pg_reports_paging_and_wp_only_matters_with_paging() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr0(&mut cpu, PE_ET | 1 << 16), Ok(Changed::empty()));
        assert_eq!(
            cr0(&mut cpu, PE_ET | 1 << 16 | 1 << 31),
            Ok(Changed::PAGING)
        );
        assert_eq!(cr0(&mut cpu, PE_ET | 1 << 31), Ok(Changed::PAGING), "WP");
        assert_eq!(cr0(&mut cpu, PE_ET | 1 << 31), Ok(Changed::empty()));
    }

    #[test]
    fn mov_cr0_fpu_alignment_and_cache_bits_report_what_changed() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr0(&mut cpu, PE_ET | 0x2e), Ok(Changed::FPU));
        assert_eq!(
            cr0(&mut cpu, PE_ET | 0x2e | 1 << 18),
            Ok(Changed::ALIGNMENT)
        );
        assert_eq!(
            cr0(&mut cpu, PE_ET | 1 << 30),
            Ok(Changed::FPU | Changed::ALIGNMENT | Changed::CACHE)
        );
    }

    #[test]
    fn mov_cr0_pg_with_cr4_pae_is_unsupported_pae_paging() {
        let mut cpu = TestCpu::new();
        cr4(&mut cpu, 0x20).unwrap();
        assert_eq!(
            cr0(&mut cpu, PE_ET | 1 << 31),
            Err(Fault::Unsupported("PAE paging"))
        );
        assert!(!cpu.sys.paging());
    }

    #[test]
    fn mov_cr3_flushes_translations_only_with_paging_even_with_the_same_value() {
        let mut cpu = TestCpu::new();
        assert_eq!(mov_to_cr(&mut cpu, 3, 0x5018, CR4_P6), Ok(Changed::empty()));
        assert_eq!(cpu.sys.cr3, 0x5018);
        cr0(&mut cpu, PE_ET | 1 << 31).unwrap();
        assert_eq!(
            mov_to_cr(&mut cpu, 3, 0x5018, CR4_P6),
            Ok(Changed::ADDRESS_SPACE)
        );
    }

    #[test]
    fn mov_cr4_with_a_reserved_bit_or_osxsave_is_gp() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr4(&mut cpu, 1 << 11), Err(GP0));
        assert_eq!(cr4(&mut cpu, 1 << 18), Err(GP0), "OSXSAVE: no XSAVE");
        assert_eq!(cr4(&mut cpu, 1 << 13), Err(GP0), "VMXE");
        assert_eq!(cpu.sys.cr4, Cr4::empty());
    }

    #[test]
    fn mov_cr4_of_a_bit_this_cpu_does_not_have_is_gp() {
        let mut cpu = TestCpu::new();
        let without_pge = CR4_P6 - Cr4::PGE - Cr4::PAE;
        assert_eq!(mov_to_cr(&mut cpu, 4, 0x80, without_pge), Err(GP0));
        assert_eq!(mov_to_cr(&mut cpu, 4, 0x20, without_pge), Err(GP0));
        assert!(mov_to_cr(&mut cpu, 4, 0x10, without_pge).is_ok());
    }

    #[test]
    fn mov_cr4_pae_is_unsupported_with_paging_but_allowed_without() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr4(&mut cpu, 0x20), Ok(Changed::empty()));
        cr4(&mut cpu, 0).unwrap();
        cr0(&mut cpu, PE_ET | 1 << 31).unwrap();
        assert_eq!(cr4(&mut cpu, 0x20), Err(Fault::Unsupported("PAE paging")));
        assert_eq!(cpu.sys.cr4, Cr4::empty());
    }

    #[test]
    fn mov_cr4_reports_paging_fpu_and_control_bits() {
        let mut cpu = TestCpu::new();
        assert_eq!(cr4(&mut cpu, 0x10), Ok(Changed::empty()), "PSE, paging off");
        cr0(&mut cpu, PE_ET | 1 << 31).unwrap();
        assert_eq!(cr4(&mut cpu, 0x90), Ok(Changed::PAGING), "PGE");
        assert_eq!(cr4(&mut cpu, 0x690), Ok(Changed::FPU));
        assert_eq!(cr4(&mut cpu, 0x694), Ok(Changed::CONTROLS), "TSD");
    }

    #[test]
    fn lmsw_loads_only_the_low_four_bits_and_cannot_clear_pe() {
        let mut cpu = TestCpu::new();
        assert_eq!(lmsw(&mut cpu, 0xfffe), Ok(Changed::FPU));
        assert_eq!(cpu.sys.cr0, Cr0::PE | Cr0::ET | Cr0::MP | Cr0::EM | Cr0::TS);
        lmsw(&mut cpu, 0).unwrap();
        assert_eq!(cpu.sys.cr0, Cr0::PE | Cr0::ET);
    }

    #[test]
    fn lmsw_and_clts_above_ring0_are_gp0() {
        let mut cpu = TestCpu::new();
        cpu.sys.cr0 |= Cr0::TS;
        cpu.sys.cpl = 3;
        let gp = Err(Exception::GeneralProtection(0));
        assert_eq!(lmsw(&mut cpu, 0), gp);
        assert_eq!(clts(&mut cpu), gp);
        assert!(cpu.sys.cr0.contains(Cr0::TS));
    }

    #[test]
    fn clts_clears_ts_and_reports_the_fpu() {
        let mut cpu = TestCpu::new();
        cpu.sys.cr0 |= Cr0::TS;
        assert_eq!(clts(&mut cpu), Ok(Changed::FPU));
        assert!(!cpu.sys.cr0.contains(Cr0::TS));
        assert_eq!(clts(&mut cpu), Ok(Changed::empty()));
    }

    #[test]
    fn smsw_returns_cr0_at_any_cpl() {
        let mut cpu = TestCpu::new();
        cpu.sys.cr0 |= Cr0::PG | Cr0::TS;
        cpu.sys.cpl = 3;
        assert_eq!(smsw(&cpu), 0x8000_0019);
    }
}
