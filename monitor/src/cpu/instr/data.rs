//! Data moves with a memory operand, carried out by the monitor when that
//! operand lies in device memory (the local APIC, the I/O APIC): MOV in
//! all its general forms (`r/m, reg`, `reg, r/m`, `r/m, imm`, the
//! `moffs` forms), MOVZX, MOVSX and XCHG with memory. These are the
//! instructions operating systems use on memory-mapped registers (Linux's
//! `readl`/`writel`, and XCHG for the local APIC writes of CPUs with the
//! 11AP erratum).
//!
//! Invariant: a move reads its source completely before it writes
//! anything; XCHG reads the memory operand, then writes it, then the
//! register, so a fault on the write leaves the register unchanged.

use super::operand::{read_operand, reg_value, set_reg, write_operand};
use super::Completion;
use crate::cpu::context::CpuContext;
use crate::cpu::Fault;
use iced_x86::{Instruction, Mnemonic, OpKind};

/// Whether [`execute`] carries out `i`: a MOV, MOVZX, MOVSX or XCHG with
/// a memory operand and no segment, control or debug register.
pub fn handles(i: &Instruction) -> bool {
    let has_memory = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
    let plain_registers =
        (0..i.op_count()).all(|n| i.op_kind(n) != OpKind::Register || i.op_register(n).is_gpr());
    has_memory
        && plain_registers
        && matches!(
            i.mnemonic(),
            Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Xchg
        )
}

/// Carries out a data move that [`handles`] accepts.
pub fn execute(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    if !handles(i) {
        return Err(Fault::Unsupported("this data move"));
    }
    match i.mnemonic() {
        Mnemonic::Mov => mov(ctx, i),
        Mnemonic::Movzx | Mnemonic::Movsx => extend(ctx, i),
        _ => xchg(ctx, i),
    }?;
    Ok(Completion::Next)
}

/// The size in bytes of operand `n`.
fn operand_size(i: &Instruction, n: u32) -> usize {
    match i.op_kind(n) {
        OpKind::Register => i.op_register(n).size(),
        OpKind::Memory => i.memory_size().size(),
        OpKind::Immediate8 => 1,
        OpKind::Immediate16 => 2,
        _ => 4,
    }
}

fn mov(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<(), Fault> {
    let size = operand_size(i, 0);
    let value = read_operand(ctx, i, 1, size)?;
    write_operand(ctx, i, 0, value, size)
}

fn extend(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<(), Fault> {
    let from = operand_size(i, 1);
    let value = read_operand(ctx, i, 1, from)?;
    let bits = from as u32 * 8;
    let extended = if i.mnemonic() == Mnemonic::Movsx {
        (((value << (32 - bits)) as i32) >> (32 - bits)) as u32
    } else {
        value
    };
    set_reg(ctx, i.op0_register(), extended);
    Ok(())
}

fn xchg(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<(), Fault> {
    let (mem, reg) = if i.op0_kind() == OpKind::Memory {
        (0, 1)
    } else {
        (1, 0)
    };
    let size = operand_size(i, mem);
    let register = i.op_register(reg);
    let old = read_operand(ctx, i, mem, size)?;
    write_operand(ctx, i, mem, reg_value(ctx, register), size)?;
    set_reg(ctx, register, old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(32, bytes, 0, DecoderOptions::NONE).decode()
    }

    fn cpu_with_word(addr: u32, value: u32) -> TestCpu {
        let mut cpu = TestCpu::new();
        cpu.poke(addr, &value.to_le_bytes());
        cpu
    }

    #[test]
    fn mov_loads_and_stores_through_memory() {
        let mut cpu = cpu_with_word(0x100, 0x1234_5678);
        cpu.set_gpr(3, 0x100);
        execute(&mut cpu, &decode(&[0x8b, 0x03])).unwrap(); // mov eax,[ebx]
        assert_eq!(cpu.gpr(0), 0x1234_5678);
        cpu.set_gpr(1, 0xaabb_ccdd);
        execute(&mut cpu, &decode(&[0x89, 0x4b, 0x04])).unwrap(); // mov [ebx+4],ecx
        assert_eq!(cpu.peek_u32(0x104), 0xaabb_ccdd);
        execute(&mut cpu, &decode(&[0xc7, 0x43, 0x08, 1, 0, 0, 0])).unwrap(); // mov dword [ebx+8],1
        assert_eq!(cpu.peek_u32(0x108), 1);
        execute(&mut cpu, &decode(&[0xa1, 0x04, 0x01, 0, 0])).unwrap(); // mov eax,[0x104]
        assert_eq!(cpu.gpr(0), 0xaabb_ccdd);
        execute(&mut cpu, &decode(&[0x88, 0x63, 0x0c])).unwrap(); // mov [ebx+12],ah
        assert_eq!(cpu.peek_u32(0x10c) & 0xff, 0xcc);
    }

    #[test]
    fn movzx_and_movsx_extend_narrow_loads() {
        let mut cpu = cpu_with_word(0x200, 0x0000_80f0);
        cpu.set_gpr(3, 0x200);
        execute(&mut cpu, &decode(&[0x0f, 0xb6, 0x03])).unwrap(); // movzx eax,byte [ebx]
        assert_eq!(cpu.gpr(0), 0xf0);
        execute(&mut cpu, &decode(&[0x0f, 0xbe, 0x03])).unwrap(); // movsx eax,byte [ebx]
        assert_eq!(cpu.gpr(0), 0xffff_fff0);
        execute(&mut cpu, &decode(&[0x0f, 0xbf, 0x0b])).unwrap(); // movsx ecx,word [ebx]
        assert_eq!(cpu.gpr(1), 0xffff_80f0);
    }

    #[test]
    fn xchg_swaps_register_and_memory() {
        let mut cpu = cpu_with_word(0x300, 7);
        cpu.set_gpr(3, 0x300);
        cpu.set_gpr(0, 9);
        execute(&mut cpu, &decode(&[0x87, 0x03])).unwrap(); // xchg [ebx],eax
        assert_eq!((cpu.gpr(0), cpu.peek_u32(0x300)), (7, 9));
    }

    #[test]
    fn xchg_whose_write_faults_leaves_the_register_unchanged() {
        let mut cpu = cpu_with_word(0x300, 7);
        cpu.read_only.push(0x300..0x304);
        cpu.set_gpr(3, 0x300);
        cpu.set_gpr(0, 9);
        assert!(execute(&mut cpu, &decode(&[0x87, 0x03])).is_err());
        assert_eq!((cpu.gpr(0), cpu.peek_u32(0x300)), (9, 7));
    }

    #[test]
    fn other_instructions_and_segment_moves_are_not_data_moves() {
        assert!(!handles(&decode(&[0x01, 0x03]))); // add [ebx],eax
        assert!(!handles(&decode(&[0x8e, 0x1b]))); // mov ds,[ebx]
        assert!(!handles(&decode(&[0x89, 0xd8]))); // mov eax,ebx
        assert!(handles(&decode(&[0x8b, 0x03])));
    }
}
