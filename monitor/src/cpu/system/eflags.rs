//! The IOPL-sensitive EFLAGS instructions: CLI, STI, POPF and PUSHF
//! (Intel SDM vol. 2, their pages; vol. 3, 16.7 for the protected-mode
//! virtual interrupts of CR4.PVI, 20.4 for virtual-8086 mode).
//!
//! Invariants: reserved EFLAGS bits stay as they are (bit 1 set); POPF
//! never changes VM, VIF or VIP; an instruction that faults changes no
//! flag.

use crate::cpu::context::{CpuContext, OperandSize};
use crate::cpu::exception::Exception;
use crate::cpu::flags::{Cr4, Eflags};

/// Where the IF of CLI/STI goes, or #GP(0).
enum InterruptFlag {
    /// EFLAGS.IF itself (CPL <= IOPL; IOPL = 3 in virtual-8086 mode).
    Real,
    /// EFLAGS.VIF (CR4.PVI at CPL 3, or CR4.VME in virtual-8086 mode).
    Virtual,
}

/// The SDM's CLI/STI decision table.
fn interrupt_flag(ctx: &(impl CpuContext + ?Sized)) -> Result<InterruptFlag, Exception> {
    let flags = ctx.eflags();
    let sys = ctx.sys();
    let iopl = flags.iopl();
    let (real, virt) = if flags.contains(Eflags::VM) {
        (iopl == 3, sys.cr4.contains(Cr4::VME))
    } else {
        (sys.cpl <= iopl, sys.cpl == 3 && sys.cr4.contains(Cr4::PVI))
    };
    match (real, virt) {
        (true, _) => Ok(InterruptFlag::Real),
        (false, true) => Ok(InterruptFlag::Virtual),
        (false, false) => Err(Exception::GeneralProtection(0)),
    }
}

/// CLI: clears IF if CPL <= IOPL (VIF with CR4.PVI at CPL 3), else
/// #GP(0).
pub fn cli(ctx: &mut (impl CpuContext + ?Sized)) -> Result<(), Exception> {
    let bit = match interrupt_flag(ctx)? {
        InterruptFlag::Real => Eflags::IF,
        InterruptFlag::Virtual => Eflags::VIF,
    };
    ctx.set_eflags(ctx.eflags() - bit);
    Ok(())
}

/// STI: sets IF if CPL <= IOPL, and blocks interrupts for one instruction
/// (`interrupt_shadow`) when IF was clear; with CR4.PVI at CPL 3 sets VIF
/// unless VIP is set; else #GP(0).
pub fn sti(ctx: &mut (impl CpuContext + ?Sized)) -> Result<(), Exception> {
    let flags = ctx.eflags();
    match interrupt_flag(ctx)? {
        InterruptFlag::Real => {
            if !flags.contains(Eflags::IF) {
                ctx.sys_mut().interrupt_shadow = true;
            }
            ctx.set_eflags(flags | Eflags::IF);
        }
        InterruptFlag::Virtual if flags.contains(Eflags::VIP) => {
            return Err(Exception::GeneralProtection(0));
        }
        InterruptFlag::Virtual => ctx.set_eflags(flags | Eflags::VIF),
    }
    Ok(())
}

/// #GP(0) in virtual-8086 mode with IOPL < 3 (PUSHF/POPF without VME).
fn check_v86_iopl(flags: Eflags) -> Result<(), Exception> {
    if flags.contains(Eflags::VM) && flags.iopl() < 3 {
        Err(Exception::GeneralProtection(0))
    } else {
        Ok(())
    }
}

/// The flags POPF may change at `cpl` with IOPL `iopl` (SDM vol. 2, POPF):
/// the arithmetic flags, TF, DF and NT always; AC and ID with a 32-bit
/// operand; IOPL only at CPL 0; IF only at CPL <= IOPL.
fn popf_writable(cpl: u8, iopl: u8, operand_size: OperandSize) -> Eflags {
    let mut w = Eflags::ARITHMETIC | Eflags::TF | Eflags::DF | Eflags::NT;
    if operand_size == OperandSize::Bits32 {
        w |= Eflags::AC | Eflags::ID;
    }
    if cpl == 0 {
        w |= Eflags::IOPL0 | Eflags::IOPL1;
    }
    if cpl <= iopl {
        w |= Eflags::IF;
    }
    w
}

/// POPF of `value` (already popped by the vCPU): the writable flags take
/// `value`'s bits, the rest stay; a 32-bit POPF clears RF, a 16-bit one
/// leaves bits 16-31 alone. #GP(0) in virtual-8086 mode with IOPL < 3.
pub fn popf(
    ctx: &mut (impl CpuContext + ?Sized),
    value: u32,
    operand_size: OperandSize,
) -> Result<(), Exception> {
    let flags = ctx.eflags();
    check_v86_iopl(flags)?;
    let writable = popf_writable(ctx.sys().cpl, flags.iopl(), operand_size);
    let mut new = (flags - writable) | (Eflags::from_bits_retain(value) & writable);
    if operand_size == OperandSize::Bits32 {
        new -= Eflags::RF;
    }
    ctx.set_eflags(new | Eflags::FIXED);
    Ok(())
}

/// PUSHF: the image to push, VM and RF cleared (SDM vol. 2, PUSHF), cut
/// to 16 bits for a 16-bit operand size. #GP(0) in virtual-8086 mode with
/// IOPL < 3.
pub fn pushf(
    ctx: &(impl CpuContext + ?Sized),
    operand_size: OperandSize,
) -> Result<u32, Exception> {
    let flags = ctx.eflags();
    check_v86_iopl(flags)?;
    Ok(operand_size.truncate((flags - Eflags::VM - Eflags::RF).bits()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;

    const GP0: Exception = Exception::GeneralProtection(0);
    const B16: OperandSize = OperandSize::Bits16;
    const B32: OperandSize = OperandSize::Bits32;

    fn at(cpl: u8, iopl: u8, flags: Eflags) -> TestCpu {
        let mut cpu = TestCpu::new();
        cpu.sys.cpl = cpl;
        cpu.eflags = (Eflags::FIXED | flags).with_iopl(iopl);
        cpu
    }

    #[test]
    fn cli_and_sti_at_a_cpl_not_above_iopl_change_if() {
        let mut cpu = at(3, 3, Eflags::IF);
        cli(&mut cpu).unwrap();
        assert!(!cpu.eflags.contains(Eflags::IF));
        sti(&mut cpu).unwrap();
        assert!(cpu.eflags.contains(Eflags::IF));
    }

    #[test]
    fn cli_and_sti_at_a_cpl_above_iopl_are_gp0_and_change_nothing() {
        let mut cpu = at(3, 0, Eflags::IF);
        assert_eq!(cli(&mut cpu), Err(GP0));
        assert!(cpu.eflags.contains(Eflags::IF));
        let mut cpu = at(1, 0, Eflags::empty());
        assert_eq!(sti(&mut cpu), Err(GP0));
        assert!(!cpu.eflags.contains(Eflags::IF) && !cpu.sys.interrupt_shadow);
    }

    #[test]
    fn sti_blocks_interrupts_for_one_instruction_only_when_if_was_clear() {
        let mut cpu = at(0, 0, Eflags::empty());
        sti(&mut cpu).unwrap();
        assert!(cpu.sys.interrupt_shadow);
        cpu.sys.interrupt_shadow = false;
        sti(&mut cpu).unwrap();
        assert!(!cpu.sys.interrupt_shadow, "IF was already set");
    }

    #[test]
    fn cli_and_sti_with_cr4_pvi_at_ring3_change_vif_and_sti_with_vip_is_gp() {
        let mut cpu = at(3, 0, Eflags::IF | Eflags::VIF);
        cpu.sys.cr4 |= Cr4::PVI;
        cli(&mut cpu).unwrap();
        assert!(cpu.eflags.contains(Eflags::IF) && !cpu.eflags.contains(Eflags::VIF));
        sti(&mut cpu).unwrap();
        assert!(cpu.eflags.contains(Eflags::VIF));
        cpu.eflags -= Eflags::VIF;
        cpu.eflags |= Eflags::VIP;
        assert_eq!(sti(&mut cpu), Err(GP0));
        let mut ring1 = at(1, 0, Eflags::IF);
        ring1.sys.cr4 |= Cr4::PVI;
        assert_eq!(cli(&mut ring1), Err(GP0), "PVI is for CPL 3 only");
    }

    #[test]
    fn popf_at_ring0_changes_iopl_and_if() {
        let mut cpu = at(0, 0, Eflags::empty());
        popf(&mut cpu, 0x3202 | 0x1, B32).unwrap();
        assert_eq!(cpu.eflags.iopl(), 3);
        assert!(cpu.eflags.contains(Eflags::IF | Eflags::CF));
    }

    #[test]
    fn popf_at_ring3_does_not_change_iopl_or_if() {
        let mut cpu = at(3, 0, Eflags::IF);
        popf(&mut cpu, 0x3000 | 0x2 | 0x800, B32).unwrap();
        assert_eq!(cpu.eflags.iopl(), 0);
        assert!(cpu.eflags.contains(Eflags::IF), "IF kept, not cleared");
        assert!(cpu.eflags.contains(Eflags::OF));
    }

    #[test]
    fn popf_at_a_cpl_not_above_iopl_changes_if_but_not_iopl() {
        let mut cpu = at(1, 2, Eflags::IF);
        popf(&mut cpu, 0x0002, B32).unwrap();
        assert!(!cpu.eflags.contains(Eflags::IF));
        assert_eq!(cpu.eflags.iopl(), 2);
    }

    #[test]
    fn popf_never_changes_vm_vif_vip_and_a_32bit_popf_clears_rf() {
        let mut cpu = at(0, 0, Eflags::RF | Eflags::VIP);
        popf(
            &mut cpu,
            (Eflags::VM | Eflags::VIF | Eflags::RF | Eflags::AC | Eflags::ID).bits(),
            B32,
        )
        .unwrap();
        assert_eq!(
            cpu.eflags,
            Eflags::FIXED | Eflags::VIP | Eflags::AC | Eflags::ID
        );
    }

    #[test]
    fn popf_with_a_16bit_operand_size_changes_only_the_low_word() {
        let mut cpu = at(0, 0, Eflags::RF | Eflags::AC);
        popf(&mut cpu, 0xffff_0000 | 0x4a01, B16).unwrap();
        assert_eq!(
            cpu.eflags,
            Eflags::FIXED
                | Eflags::RF
                | Eflags::AC
                | Eflags::NT
                | Eflags::IF
                | Eflags::OF
                | Eflags::CF
        );
    }

    #[test]
    fn popf_keeps_bit_1_set_and_reserved_bits_clear() {
        let mut cpu = at(0, 0, Eflags::empty());
        popf(&mut cpu, 0xffff_ffff, B32).unwrap();
        assert_eq!(cpu.eflags.bits() & 0xffc0_8028, 0);
        assert!(cpu.eflags.contains(Eflags::FIXED));
        popf(&mut cpu, 0, B32).unwrap();
        assert_eq!(cpu.eflags, Eflags::FIXED);
    }

    #[test]
    fn pushf_clears_vm_and_rf_in_the_pushed_image() {
        let cpu = at(0, 3, Eflags::RF | Eflags::IF | Eflags::AC);
        assert_eq!(pushf(&cpu, B32), Ok(0x0004_3202));
        assert_eq!(pushf(&cpu, B16), Ok(0x3202));
    }

    #[test]
    fn pushf_and_popf_in_virtual_8086_mode_with_iopl_below_3_are_gp0() {
        let mut cpu = at(3, 2, Eflags::VM);
        assert_eq!(pushf(&cpu, B32), Err(GP0));
        assert_eq!(popf(&mut cpu, 0, B16), Err(GP0));
        let cpu = at(3, 3, Eflags::VM);
        assert_eq!(pushf(&cpu, B32), Ok(0x3002), "VM cleared in the image");
    }
}
