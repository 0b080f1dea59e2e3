//! SYSENTER and SYSEXIT (Intel SDM vol. 2, their pages; vol. 3, 5.8.7).
//!
//! Both load flat 4 GiB segments whose descriptors are not read: CS and SS
//! come from IA32_SYSENTER_CS (CS, CS + 8 for SYSENTER at ring 0; CS + 16,
//! CS + 24 with RPL 3 for SYSEXIT), whatever the GDT holds there. Whether
//! the CPU has SEP (else #UD) is the vCPU's decision.

use crate::cpu::context::{CpuContext, ECX, EDX, ESP};
use crate::cpu::exception::Exception;
use crate::cpu::flags::Eflags;
use crate::cpu::state::{Seg, SegmentRegister, SystemState};

/// IA32_SYSENTER_CS with RPL cleared; #GP(0) if bits 15:2 are 0.
fn sysenter_cs(ctx: &(impl CpuContext + ?Sized)) -> Result<u16, Exception> {
    let cs = (ctx.sys().msr.sysenter_cs & 0xfffc) as u16;
    if cs == 0 {
        Err(Exception::GeneralProtection(0))
    } else {
        Ok(cs)
    }
}

/// Loads flat CS and SS of privilege `cpl` and makes it the CPL.
fn enter_flat(ctx: &mut (impl CpuContext + ?Sized), cs: u16, ss: u16, cpl: u8) {
    enter_flat_state(ctx.sys_mut(), cs, ss, cpl);
}

fn enter_flat_state(sys: &mut SystemState, cs: u16, ss: u16, cpl: u8) {
    sys.seg[Seg::Cs as usize] = SegmentRegister::flat(cs, true, cpl);
    sys.seg[Seg::Ss as usize] = SegmentRegister::flat(ss, false, cpl);
    sys.cpl = cpl;
}

/// What SYSENTER does to the system state (CPL, CS, SS), for a vCPU that
/// carries it out elsewhere; false (nothing changed) where it raises
/// #GP(0). EFLAGS, ESP and EIP are the caller's.
pub fn sysenter_system_state(sys: &mut SystemState) -> bool {
    let cs = (sys.msr.sysenter_cs & 0xfffc) as u16;
    if cs == 0 {
        return false;
    }
    enter_flat_state(sys, cs, cs.wrapping_add(8), 0);
    true
}

/// What SYSEXIT does to the system state (CPL, CS, SS), as
/// [`sysenter_system_state`]; false where IA32_SYSENTER_CS makes it raise
/// #GP(0). Whether the CPL allows it (CPL 0) is the caller's check: the
/// state it is applied to may predate an inline SYSENTER.
pub fn sysexit_system_state(sys: &mut SystemState) -> bool {
    let cs = (sys.msr.sysenter_cs & 0xfffc) as u16;
    if cs == 0 {
        return false;
    }
    enter_flat_state(sys, cs.wrapping_add(16) | 3, cs.wrapping_add(24) | 3, 3);
    true
}

/// SYSENTER: to ring 0 at IA32_SYSENTER_EIP with ESP =
/// IA32_SYSENTER_ESP, CS = IA32_SYSENTER_CS (RPL 0), SS = CS + 8; clears
/// VM, IF and RF. #GP(0) if IA32_SYSENTER_CS[15:2] is 0.
pub fn sysenter(ctx: &mut (impl CpuContext + ?Sized)) -> Result<(), Exception> {
    let cs = sysenter_cs(ctx)?;
    enter_flat(ctx, cs, cs.wrapping_add(8), 0);
    let msr = &ctx.sys().msr;
    let (esp, eip) = (msr.sysenter_esp, msr.sysenter_eip);
    ctx.set_gpr(ESP, esp);
    ctx.set_eip(eip);
    ctx.set_eflags(ctx.eflags() - Eflags::VM - Eflags::IF - Eflags::RF);
    Ok(())
}

/// SYSEXIT: to ring 3 at EDX with ESP = ECX, CS = IA32_SYSENTER_CS + 16
/// and SS = IA32_SYSENTER_CS + 24, both with RPL 3; EFLAGS unchanged.
/// #GP(0) at CPL > 0 or if IA32_SYSENTER_CS[15:2] is 0.
pub fn sysexit(ctx: &mut (impl CpuContext + ?Sized)) -> Result<(), Exception> {
    let cs = sysenter_cs(ctx)?;
    if ctx.sys().cpl != 0 {
        return Err(Exception::GeneralProtection(0));
    }
    enter_flat(ctx, cs.wrapping_add(16) | 3, cs.wrapping_add(24) | 3, 3);
    let (esp, eip) = (ctx.gpr(ECX), ctx.gpr(EDX));
    ctx.set_gpr(ESP, esp);
    ctx.set_eip(eip);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::descriptor::Selector;
    use crate::cpu::testing::TestCpu;

    const GP0: Exception = Exception::GeneralProtection(0);

    fn cpu() -> TestCpu {
        let mut cpu = TestCpu::new();
        cpu.sys.msr.sysenter_cs = 0x10;
        cpu.sys.msr.sysenter_esp = 0xc000_8000;
        cpu.sys.msr.sysenter_eip = 0xc010_0000;
        cpu
    }

    #[test]
    fn sysenter_loads_flat_ring0_segments_esp_and_eip_and_clears_if_vm_rf() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        cpu.eflags |= Eflags::IF | Eflags::RF | Eflags::CF;
        sysenter(&mut cpu).unwrap();
        assert_eq!(cpu.sys.cpl, 0);
        assert_eq!(
            cpu.sys.segment(Seg::Cs),
            SegmentRegister::flat(0x10, true, 0)
        );
        assert_eq!(
            cpu.sys.segment(Seg::Ss),
            SegmentRegister::flat(0x18, false, 0)
        );
        assert_eq!((cpu.gpr[ESP], cpu.eip), (0xc000_8000, 0xc010_0000));
        assert_eq!(cpu.eflags, Eflags::FIXED | Eflags::CF);
    }

    #[test]
    fn sysenter_forces_the_cs_rpl_to_0() {
        let mut cpu = cpu();
        cpu.sys.msr.sysenter_cs = 0x13;
        sysenter(&mut cpu).unwrap();
        assert_eq!(cpu.sys.segment(Seg::Cs).selector, Selector(0x10));
        assert_eq!(cpu.sys.segment(Seg::Ss).selector, Selector(0x18));
    }

    #[test]
    fn sysenter_with_a_null_sysenter_cs_is_gp0_and_changes_nothing() {
        let mut cpu = cpu();
        cpu.sys.msr.sysenter_cs = 3;
        cpu.sys.cpl = 3;
        assert_eq!(sysenter(&mut cpu), Err(GP0));
        assert_eq!(cpu.sys.cpl, 3);
        assert_eq!(cpu.eip, 0x10_0000);
    }

    #[test]
    fn sysexit_loads_flat_ring3_segments_from_sysenter_cs_plus_16_and_24() {
        let mut cpu = cpu();
        cpu.gpr[ECX] = 0xbfff_f000;
        cpu.gpr[EDX] = 0x0804_8000;
        cpu.eflags |= Eflags::IF;
        sysexit(&mut cpu).unwrap();
        assert_eq!(cpu.sys.cpl, 3);
        assert_eq!(
            cpu.sys.segment(Seg::Cs),
            SegmentRegister::flat(0x23, true, 3)
        );
        assert_eq!(
            cpu.sys.segment(Seg::Ss),
            SegmentRegister::flat(0x2b, false, 3)
        );
        assert_eq!((cpu.gpr[ESP], cpu.eip), (0xbfff_f000, 0x0804_8000));
        assert!(cpu.eflags.contains(Eflags::IF), "EFLAGS unchanged");
    }

    #[test]
    fn sysexit_above_ring0_or_with_a_null_sysenter_cs_is_gp0() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        assert_eq!(sysexit(&mut cpu), Err(GP0));
        let mut cpu = self::cpu();
        cpu.sys.msr.sysenter_cs = 0;
        assert_eq!(sysexit(&mut cpu), Err(GP0));
        assert_eq!(cpu.sys.cpl, 0);
    }
}
