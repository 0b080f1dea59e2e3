//! The CPL 0 rule of the privileged instructions, and the instructions
//! that read counters and MSRs (Intel SDM vol. 3, 5.9 "Privileged
//! Instructions"; vol. 2, RDMSR, WRMSR, RDTSC, RDPMC).

use crate::cpu::context::CpuContext;
use crate::cpu::exception::Exception;
use crate::cpu::flags::Cr4;
use crate::cpu::msr;

/// #GP(0) unless the CPL is 0: the check of every privileged instruction
/// (SDM vol. 3, 5.9): HLT, INVD, WBINVD, INVLPG, LGDT, LIDT, LLDT, LTR,
/// LMSW, CLTS, MOV to/from CR and DR, RDMSR, WRMSR. The vCPU calls it
/// for those that need nothing else (HLT, INVD, WBINVD, INVLPG); the
/// functions of this module for the others call it themselves.
pub fn require_cpl0(ctx: &(impl CpuContext + ?Sized)) -> Result<(), Exception> {
    if ctx.sys().cpl == 0 {
        Ok(())
    } else {
        Err(Exception::GeneralProtection(0))
    }
}

/// RDMSR of `msr` (ECX): its value (EDX:EAX), or #GP(0) at CPL > 0 or for
/// an MSR the model does not have.
pub fn rdmsr(ctx: &mut (impl CpuContext + ?Sized), msr: u32) -> Result<u64, Exception> {
    require_cpl0(ctx)?;
    let tsc = ctx.host_tsc();
    ctx.sys().msr.read(msr, tsc)
}

/// WRMSR of `value` (EDX:EAX) to `msr` (ECX): #GP(0) at CPL > 0, for an
/// MSR the model does not have or for reserved bits.
pub fn wrmsr(ctx: &mut (impl CpuContext + ?Sized), msr: u32, value: u64) -> Result<(), Exception> {
    require_cpl0(ctx)?;
    let tsc = ctx.host_tsc();
    ctx.sys_mut().msr.write(msr, value, tsc)
}

/// RDTSC: the guest's time-stamp counter; #GP(0) with CR4.TSD at CPL > 0
/// (SDM vol. 2, RDTSC).
pub fn rdtsc(ctx: &mut (impl CpuContext + ?Sized)) -> Result<u64, Exception> {
    if ctx.sys().cr4.contains(Cr4::TSD) && ctx.sys().cpl > 0 {
        return Err(Exception::GeneralProtection(0));
    }
    let tsc = ctx.host_tsc();
    ctx.sys().msr.read(msr::TSC, tsc)
}

/// The performance counters RDPMC may read (a P6-family part has two).
pub const PERFORMANCE_COUNTERS: u32 = 2;

/// RDPMC of `counter` (ECX): #GP(0) at CPL > 0 without CR4.PCE, or for a
/// counter the CPU does not have (SDM vol. 2, RDPMC). The model counts no
/// events: the counters read 0.
pub fn rdpmc(ctx: &(impl CpuContext + ?Sized), counter: u32) -> Result<u64, Exception> {
    let sys = ctx.sys();
    if (!sys.cr4.contains(Cr4::PCE) && sys.cpl > 0) || counter >= PERFORMANCE_COUNTERS {
        return Err(Exception::GeneralProtection(0));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;

    const GP0: Exception = Exception::GeneralProtection(0);

    #[test]
    fn hlt_invd_wbinvd_invlpg_at_ring3_are_gp0() {
        let mut cpu = TestCpu::new();
        assert_eq!(require_cpl0(&cpu), Ok(()));
        for cpl in 1..=3 {
            cpu.sys.cpl = cpl;
            assert_eq!(require_cpl0(&cpu), Err(GP0));
        }
    }

    #[test]
    fn rdmsr_and_wrmsr_at_ring0_use_the_msr_file() {
        let mut cpu = TestCpu::new();
        wrmsr(&mut cpu, msr::SYSENTER_CS, 0x10).unwrap();
        assert_eq!(rdmsr(&mut cpu, msr::SYSENTER_CS), Ok(0x10));
        assert_eq!(rdmsr(&mut cpu, 0x1234), Err(GP0), "no such MSR");
    }

    #[test]
    fn rdmsr_and_wrmsr_above_ring0_are_gp0_and_write_nothing() {
        let mut cpu = TestCpu::new();
        cpu.sys.cpl = 3;
        assert_eq!(rdmsr(&mut cpu, msr::SYSENTER_CS), Err(GP0));
        assert_eq!(wrmsr(&mut cpu, msr::SYSENTER_CS, 0x10), Err(GP0));
        assert_eq!(cpu.sys.msr.sysenter_cs, 0);
    }

    #[test]
    fn rdtsc_adds_the_tsc_offset_and_honours_cr4_tsd_above_ring0() {
        let mut cpu = TestCpu::new();
        cpu.tsc = 1000;
        wrmsr(&mut cpu, msr::TSC, 50).unwrap();
        cpu.tsc = 1100;
        assert_eq!(rdtsc(&mut cpu), Ok(150));
        cpu.sys.cpl = 3;
        assert_eq!(rdtsc(&mut cpu), Ok(150), "TSD clear");
        cpu.sys.cr4 |= Cr4::TSD;
        assert_eq!(rdtsc(&mut cpu), Err(GP0));
        cpu.sys.cpl = 0;
        assert_eq!(rdtsc(&mut cpu), Ok(150), "TSD does not apply at ring 0");
    }

    #[test]
    fn rdpmc_above_ring0_needs_cr4_pce_and_a_counter_that_exists() {
        let mut cpu = TestCpu::new();
        assert_eq!(rdpmc(&cpu, 1), Ok(0));
        assert_eq!(rdpmc(&cpu, 2), Err(GP0));
        cpu.sys.cpl = 3;
        assert_eq!(rdpmc(&cpu, 0), Err(GP0));
        cpu.sys.cr4 |= Cr4::PCE;
        assert_eq!(rdpmc(&cpu, 0), Ok(0));
    }
}
