//! Operands of decoded instructions: general and segment registers of any
//! width, and memory operands through their segment (16- or 32-bit
//! addressing, the address-size wrap applied by iced-x86).

use crate::cpu::context::{seg_read, seg_write, CpuContext};
use crate::cpu::{Fault, Seg};
use iced_x86::{Instruction, OpKind, Register};

fn gpr_index(r: Register) -> usize {
    r.full_register32().number()
}

fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

/// The value of a general register of any width, or a segment register's
/// selector.
pub fn reg_value(ctx: &(impl CpuContext + ?Sized), r: Register) -> u32 {
    if let Some(seg) = Seg::from_iced(r) {
        return u32::from(ctx.sys().segment(seg).selector.0);
    }
    let full = ctx.gpr(gpr_index(r));
    match r.size() {
        4 => full,
        2 => full & 0xffff,
        _ if is_high_byte(r) => (full >> 8) & 0xff,
        _ => full & 0xff,
    }
}

/// Writes a general register of any width (narrow writes keep the rest).
pub fn set_reg(ctx: &mut (impl CpuContext + ?Sized), r: Register, val: u32) {
    let n = gpr_index(r);
    let old = ctx.gpr(n);
    let new = match r.size() {
        4 => val,
        2 => (old & 0xffff_0000) | (val & 0xffff),
        _ if is_high_byte(r) => (old & !0xff00) | ((val & 0xff) << 8),
        _ => (old & !0xff) | (val & 0xff),
    };
    ctx.set_gpr(n, new);
}

/// The size in bytes of operand `n` when it is a register.
pub fn operand_register_size(i: &Instruction, n: u32) -> Option<usize> {
    (i.op_kind(n) == OpKind::Register).then(|| i.op_register(n).size())
}

/// The memory operand's segment and offset.
pub fn memory_operand(
    ctx: &(impl CpuContext + ?Sized),
    i: &Instruction,
) -> Result<(Seg, u32), Fault> {
    let operand = (0..i.op_count())
        .find(|&n| i.op_kind(n) == OpKind::Memory)
        .ok_or(Fault::Unsupported("this operand address form"))?;
    let offset = i
        .virtual_address(operand, 0, |r, _, _| {
            Some(if r.is_segment_register() {
                0
            } else {
                u64::from(reg_value(ctx, r))
            })
        })
        .ok_or(Fault::Unsupported("this operand address form"))? as u32;
    let seg = Seg::from_iced(i.memory_segment()).unwrap_or(Seg::Ds);
    Ok((seg, offset))
}

/// Reads the memory operand.
pub fn read_memory(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
    buf: &mut [u8],
) -> Result<(), Fault> {
    let (seg, offset) = memory_operand(ctx, i)?;
    seg_read(ctx, seg, offset, buf).map_err(Fault::from)
}

/// Writes the memory operand.
pub fn write_memory(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
    data: &[u8],
) -> Result<(), Fault> {
    let (seg, offset) = memory_operand(ctx, i)?;
    seg_write(ctx, seg, offset, data).map_err(Fault::from)
}

/// Reads operand `n` (register, memory or immediate) of `size` bytes.
pub fn read_operand(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
    n: u32,
    size: usize,
) -> Result<u32, Fault> {
    match i.op_kind(n) {
        OpKind::Register => Ok(reg_value(ctx, i.op_register(n))),
        OpKind::Memory => {
            let mut b = [0u8; 4];
            read_memory(ctx, i, &mut b[..size])?;
            Ok(u32::from_le_bytes(b))
        }
        _ => Ok(i.immediate(n) as u32),
    }
}

/// Writes operand `n` (register or memory) with `size` bytes of `val`.
pub fn write_operand(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
    n: u32,
    val: u32,
    size: usize,
) -> Result<(), Fault> {
    match i.op_kind(n) {
        OpKind::Register => {
            set_reg(ctx, i.op_register(n), val);
            Ok(())
        }
        _ => write_memory(ctx, i, &val.to_le_bytes()[..size]),
    }
}
