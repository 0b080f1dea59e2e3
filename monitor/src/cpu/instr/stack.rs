//! Near stack instructions with the stack-pointer width SS.B gives and the
//! operand size the instruction has (SDM vol. 2, PUSH, POP, PUSHA, POPA,
//! CALL, RET, ENTER, LEAVE): the forms the translator leaves to the monitor
//! (16-bit stacks and code, ESP-based destinations, nesting levels).
//!
//! Invariant: every function checks and reads everything it needs before it
//! changes a register, so a fault leaves the instruction's start state
//! (memory below the stack pointer aside).

use super::operand::{read_operand, write_operand};
use super::Completion;
use crate::cpu::context::{
    check_frame, pop, push, read_stack, set_stack_pointer, stack_pointer, write_frame, CpuContext,
    ESP,
};
use crate::cpu::{Exception, Fault, Privilege, Seg};
use iced_x86::{Code, Instruction, OpKind};

/// EBP.
const EBP: usize = 5;

/// The bytes a PUSH or POP moves.
fn width(i: &Instruction) -> u32 {
    i.stack_pointer_increment().unsigned_abs()
}

/// PUSH of a register, immediate, memory operand or segment register.
pub fn push_operand(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
) -> Result<Completion, Fault> {
    let size = width(i);
    let value = match i.op0_kind() {
        OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate16
        | OpKind::Immediate32 => i.immediate(0) as u32,
        _ => read_operand(ctx, i, 0, size as usize)?,
    };
    push(ctx, value, size)?;
    Ok(Completion::Next)
}

/// POP to a general register or memory (memory through an ESP-based
/// address is computed after the increment, SDM vol. 2, POP; a fault on
/// the store leaves ESP as it was).
pub fn pop_operand(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
) -> Result<Completion, Fault> {
    let size = width(i);
    let esp = ctx.gpr(ESP);
    let value = read_stack(ctx, 0, size)?;
    let sp = stack_pointer(ctx);
    set_stack_pointer(ctx, sp.wrapping_add(size));
    if let Err(e) = write_operand(ctx, i, 0, value, size as usize) {
        ctx.set_gpr(ESP, esp);
        return Err(e);
    }
    Ok(Completion::Next)
}

/// PUSHA/PUSHAD: the eight general registers (ESP as it was), one frame.
pub fn pusha(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    let size = if i.code() == Code::Pushaw { 2 } else { 4 };
    let ss = ctx.sys().segment(Seg::Ss);
    let esp = ctx.gpr(ESP);
    let values: Vec<u32> = (0..8).map(|r| ctx.gpr(r)).collect();
    check_frame(ss, esp, 8, size, 0)?;
    let new = write_frame(ctx, ss, esp, size, &values, Privilege::Current)?;
    ctx.set_gpr(ESP, new);
    Ok(Completion::Next)
}

/// POPA/POPAD: the general registers but ESP (whose slot is skipped).
pub fn popa(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    let size = if i.code() == Code::Popaw { 2 } else { 4 };
    let mut values = [0u32; 8];
    for (n, v) in values.iter_mut().enumerate() {
        *v = read_stack(ctx, size * n as u32, size)?;
    }
    for (n, v) in values.iter().enumerate() {
        let reg = 7 - n;
        if reg == ESP {
            continue;
        }
        let old = ctx.gpr(reg);
        let new = if size == 2 {
            (old & 0xffff_0000) | (v & 0xffff)
        } else {
            *v
        };
        ctx.set_gpr(reg, new);
    }
    let sp = stack_pointer(ctx);
    set_stack_pointer(ctx, sp.wrapping_add(8 * size));
    Ok(Completion::Next)
}

/// The near target of a CALL or JMP through an operand, cut to the
/// operand size.
fn near_target(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
    size: u32,
) -> Result<u32, Fault> {
    match i.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 => Ok(i.near_branch_target() as u32),
        _ => read_operand(ctx, i, 0, size as usize).map(|t| if size == 2 { t & 0xffff } else { t }),
    }
}

/// A near target beyond the CS limit is #GP(0).
fn check_target(ctx: &(impl CpuContext + ?Sized), target: u32) -> Result<(), Fault> {
    if target > ctx.sys().segment(Seg::Cs).limit {
        Err(Exception::GeneralProtection(0).into())
    } else {
        Ok(())
    }
}

/// The operand size of a near CALL/RET/JMP (2 or 4).
fn branch_size(i: &Instruction) -> u32 {
    match i.code() {
        Code::Call_rel16 | Code::Call_rm16 | Code::Retnw | Code::Retnw_imm16 | Code::Jmp_rm16 => 2,
        _ => 4,
    }
}

/// Near CALL (relative or through an operand): push the return IP/EIP,
/// jump.
pub fn call_near(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
    next_eip: u32,
) -> Result<Completion, Fault> {
    let size = branch_size(i);
    let target = near_target(ctx, i, size)?;
    check_target(ctx, target)?;
    let ret = if size == 2 {
        next_eip & 0xffff
    } else {
        next_eip
    };
    push(ctx, ret, size)?;
    ctx.set_eip(target);
    Ok(Completion::Jumped)
}

/// Near JMP through an operand of either size.
pub fn jmp_near(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
) -> Result<Completion, Fault> {
    let target = near_target(ctx, i, branch_size(i))?;
    check_target(ctx, target)?;
    ctx.set_eip(target);
    Ok(Completion::Jumped)
}

/// Near RET [imm16]: pop the return IP/EIP, release `imm16` bytes.
pub fn ret_near(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
) -> Result<Completion, Fault> {
    let size = branch_size(i);
    let target = read_stack(ctx, 0, size)?;
    check_target(ctx, target)?;
    let extra = if i.op_count() > 0 {
        u32::from(i.immediate16())
    } else {
        0
    };
    pop(ctx, size)?;
    let sp = stack_pointer(ctx);
    set_stack_pointer(ctx, sp.wrapping_add(extra));
    ctx.set_eip(target);
    Ok(Completion::Jumped)
}

/// ENTER size, level per the SDM's algorithm: push (E)BP, copy `level - 1`
/// frame pointers from the old frame, push the new frame pointer, then
/// (E)BP = frame, (E)SP -= size. Every read and write is made before any
/// register changes.
pub fn enter(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    let width = if i.code() == Code::Enterw_imm16_imm8 {
        2
    } else {
        4
    };
    let size = u32::from(i.immediate16());
    let level = u32::from(i.immediate8_2nd() & 0x1f);
    let ss = ctx.sys().segment(Seg::Ss);
    let stack_mask = if ss.big() { u32::MAX } else { 0xffff };
    let ebp = ctx.gpr(EBP);
    let mut values = vec![ebp];
    let frame = stack_pointer(ctx).wrapping_sub(width) & stack_mask;
    if level > 0 {
        let mut bp = ebp & stack_mask;
        for _ in 1..level {
            bp = bp.wrapping_sub(width) & stack_mask;
            let mut b = [0u8; 4];
            crate::cpu::context::seg_read(ctx, Seg::Ss, bp, &mut b[..width as usize])?;
            values.push(u32::from_le_bytes(b));
        }
        values.push(frame);
    }
    let esp = ctx.gpr(ESP);
    check_frame(ss, esp, values.len() as u32, width, 0)?;
    let after = write_frame(ctx, ss, esp, width, &values, Privilege::Current)?;
    let new_sp = (after & stack_mask).wrapping_sub(size) & stack_mask;
    let new_ebp = if width == 2 {
        (ebp & 0xffff_0000) | (frame & 0xffff)
    } else {
        frame
    };
    ctx.set_gpr(EBP, new_ebp);
    ctx.set_gpr(ESP, (esp & !stack_mask) | new_sp);
    Ok(Completion::Next)
}

/// LEAVE: (E)SP = (E)BP (SS.B decides the width), then pop (E)BP.
pub fn leave(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    let width = if i.code() == Code::Leavew { 2 } else { 4 };
    let ss = ctx.sys().segment(Seg::Ss);
    let stack_mask = if ss.big() { u32::MAX } else { 0xffff };
    let ebp = ctx.gpr(EBP);
    let mut b = [0u8; 4];
    crate::cpu::context::seg_read(ctx, Seg::Ss, ebp & stack_mask, &mut b[..width as usize])?;
    let value = u32::from_le_bytes(b);
    let esp = ctx.gpr(ESP);
    ctx.set_gpr(
        ESP,
        (esp & !stack_mask) | ((ebp & stack_mask).wrapping_add(width) & stack_mask),
    );
    let new_ebp = if width == 2 {
        (ebp & 0xffff_0000) | (value & 0xffff)
    } else {
        value
    };
    ctx.set_gpr(EBP, new_ebp);
    Ok(Completion::Next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bitness: u32, bytes: &[u8]) -> Instruction {
        Decoder::with_ip(bitness, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    /// A CPU whose SS is 16-bit (B = 0) with limit 0xffff.
    fn stack16() -> TestCpu {
        let mut cpu = TestCpu::new();
        let mut ss = cpu.sys.segment(Seg::Ss);
        ss.attr &= !0x4000;
        ss.limit = 0xffff;
        cpu.set_segment(Seg::Ss, ss);
        cpu.gpr[ESP] = 0x1234_0200;
        cpu
    }

    #[test]
    fn pushw_on_a_16bit_stack_moves_sp_only() {
        let mut cpu = stack16();
        cpu.gpr[0] = 0x5678;
        push_operand(&mut cpu, &decode(16, &[0x50])).unwrap(); // push ax
        assert_eq!(cpu.gpr[ESP], 0x1234_01fe);
        assert_eq!(cpu.peek(0x1fe, 2), &[0x78, 0x56]);
    }

    #[test]
    fn call16_pushes_a_16bit_return_ip_and_ret16_pops_it() {
        let mut cpu = stack16();
        let call = decode(16, &[0xe8, 0x10, 0x00]); // call +0x10
        assert_eq!(call_near(&mut cpu, &call, 0x1003), Ok(Completion::Jumped));
        assert_eq!(cpu.eip, 0x1013);
        assert_eq!(cpu.peek(0x1fe, 2), &[0x03, 0x10]);
        assert_eq!(
            ret_near(&mut cpu, &decode(16, &[0xc3])),
            Ok(Completion::Jumped)
        );
        assert_eq!((cpu.eip, cpu.gpr[ESP]), (0x1003, 0x1234_0200));
    }

    #[test]
    fn pushaw_and_popaw_keep_the_upper_halves_and_skip_sp() {
        let mut cpu = stack16();
        cpu.gpr = [0xaaaa_0001, 2, 3, 4, 0x1234_0200, 6, 7, 8];
        pusha(&mut cpu, &decode(16, &[0x60])).unwrap();
        assert_eq!(cpu.gpr[ESP], 0x1234_01f0);
        cpu.gpr[0] = 0xbbbb_ffff;
        popa(&mut cpu, &decode(16, &[0x61])).unwrap();
        assert_eq!(cpu.gpr[0], 0xbbbb_0001);
        assert_eq!(cpu.gpr[ESP], 0x1234_0200);
    }

    #[test]
    fn ret_past_the_code_limit_is_gp_and_pops_nothing() {
        let mut cpu = TestCpu::new();
        let mut cs = cpu.sys.segment(Seg::Cs);
        cs.limit = 0xffff;
        cpu.set_segment(Seg::Cs, cs);
        cpu.gpr[ESP] = 0x8000;
        cpu.poke(0x8000, &0x2_0000u32.to_le_bytes());
        assert_eq!(
            ret_near(&mut cpu, &decode(32, &[0xc3])),
            Err(Exception::GeneralProtection(0).into())
        );
        assert_eq!(cpu.gpr[ESP], 0x8000);
    }

    #[test]
    fn pop_to_an_esp_based_destination_uses_the_incremented_esp() {
        let mut cpu = TestCpu::new();
        cpu.gpr[ESP] = 0x8000;
        cpu.poke(0x8000, &0x1122_3344u32.to_le_bytes());
        pop_operand(&mut cpu, &decode(32, &[0x8f, 0x04, 0x24])).unwrap(); // pop [esp]
        assert_eq!(cpu.gpr[ESP], 0x8004);
        assert_eq!(cpu.peek_u32(0x8004), 0x1122_3344);
    }

    #[test]
    fn enter_with_a_nesting_level_copies_frame_pointers() {
        let mut cpu = TestCpu::new();
        cpu.gpr[ESP] = 0x9000;
        cpu.gpr[EBP] = 0x9100;
        cpu.poke(0x90fc, &0x7777_7777u32.to_le_bytes());
        enter(&mut cpu, &decode(32, &[0xc8, 0x08, 0x00, 0x02])).unwrap();
        assert_eq!(cpu.peek_u32(0x8ffc), 0x9100, "old ebp");
        assert_eq!(cpu.peek_u32(0x8ff8), 0x7777_7777, "copied frame pointer");
        assert_eq!(cpu.peek_u32(0x8ff4), 0x8ffc, "new frame pointer");
        assert_eq!((cpu.gpr[EBP], cpu.gpr[ESP]), (0x8ffc, 0x8fec));
    }
}
