//! String instructions carried out by the monitor (MOVS, STOS, LODS, CMPS,
//! SCAS with 16-bit addressing, or wherever the translator leaves them),
//! with REP/REPE/REPNE, the direction flag and a source segment override
//! (SDM vol. 2, MOVS ... SCAS, REP).
//!
//! Invariant: iterations are committed one at a time (registers and memory
//! of the completed iterations stay when a later one faults, as on real
//! processors), and a REP instruction stops after [`MAX_ITERATIONS`]
//! iterations without finishing, so the vCPU stays responsive; it is
//! restarted with the registers as they are.

use super::alu::sub_flags;
use super::Completion;
use crate::cpu::context::{seg_read, seg_write, CpuContext};
use crate::cpu::{Eflags, Fault, Seg};
use iced_x86::{Instruction, Mnemonic, OpKind};

/// Iterations of a REP instruction per call at most.
pub const MAX_ITERATIONS: u32 = 4096;

/// EAX, ECX, ESI, EDI.
const EAX: usize = 0;
const ECX: usize = 1;
const ESI: usize = 6;
const EDI: usize = 7;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

fn op_and_size(i: &Instruction) -> Option<(Op, u32)> {
    use Mnemonic::*;
    Some(match i.mnemonic() {
        Movsb => (Op::Movs, 1),
        Movsw => (Op::Movs, 2),
        Movsd => (Op::Movs, 4),
        Stosb => (Op::Stos, 1),
        Stosw => (Op::Stos, 2),
        Stosd => (Op::Stos, 4),
        Lodsb => (Op::Lods, 1),
        Lodsw => (Op::Lods, 2),
        Lodsd => (Op::Lods, 4),
        Cmpsb => (Op::Cmps, 1),
        Cmpsw => (Op::Cmps, 2),
        Cmpsd => (Op::Cmps, 4),
        Scasb => (Op::Scas, 1),
        Scasw => (Op::Scas, 2),
        Scasd => (Op::Scas, 4),
        _ => return None,
    })
}

/// The instruction uses SI, DI and CX (16-bit addressing).
fn sixteen_bit(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| {
        matches!(
            i.op_kind(n),
            OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI
        )
    })
}

/// Register `r` as an address register of the instruction's width.
struct Addr {
    mask: u32,
}

impl Addr {
    fn get(&self, ctx: &(impl CpuContext + ?Sized), r: usize) -> u32 {
        ctx.gpr(r) & self.mask
    }

    fn set(&self, ctx: &mut (impl CpuContext + ?Sized), r: usize, v: u32) {
        let old = ctx.gpr(r);
        ctx.set_gpr(r, (old & !self.mask) | (v & self.mask));
    }
}

fn read(ctx: &mut (impl CpuContext + ?Sized), seg: Seg, at: u32, size: u32) -> Result<u32, Fault> {
    let mut b = [0u8; 4];
    seg_read(ctx, seg, at, &mut b[..size as usize])?;
    Ok(u32::from_le_bytes(b))
}

/// Carries out the string instruction `i` (at most [`MAX_ITERATIONS`] of a
/// REP): `Completion::Next` when it is done, `Completion::Jumped` (EIP
/// unchanged) when it must be run again.
pub fn execute(ctx: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    let (op, size) = op_and_size(i).ok_or(Fault::Unsupported("this string instruction"))?;
    let a = Addr {
        mask: if sixteen_bit(i) { 0xffff } else { u32::MAX },
    };
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    let source = Seg::from_iced(i.memory_segment()).unwrap_or(Seg::Ds);
    for _ in 0..MAX_ITERATIONS {
        if rep && a.get(ctx, ECX) == 0 {
            return Ok(Completion::Next);
        }
        let step = if ctx.eflags().contains(Eflags::DF) {
            size.wrapping_neg()
        } else {
            size
        };
        let mask = if size == 4 {
            u32::MAX
        } else {
            (1 << (8 * size)) - 1
        };
        match op {
            Op::Movs => {
                let v = read(ctx, source, a.get(ctx, ESI), size)?;
                seg_write(
                    ctx,
                    Seg::Es,
                    a.get(ctx, EDI),
                    &v.to_le_bytes()[..size as usize],
                )?;
                a.set(ctx, ESI, a.get(ctx, ESI).wrapping_add(step));
                a.set(ctx, EDI, a.get(ctx, EDI).wrapping_add(step));
            }
            Op::Stos => {
                let v = ctx.gpr(EAX);
                seg_write(
                    ctx,
                    Seg::Es,
                    a.get(ctx, EDI),
                    &v.to_le_bytes()[..size as usize],
                )?;
                a.set(ctx, EDI, a.get(ctx, EDI).wrapping_add(step));
            }
            Op::Lods => {
                let v = read(ctx, source, a.get(ctx, ESI), size)?;
                let eax = ctx.gpr(EAX);
                ctx.set_gpr(EAX, (eax & !mask) | v);
                a.set(ctx, ESI, a.get(ctx, ESI).wrapping_add(step));
            }
            Op::Cmps | Op::Scas => {
                let (x, y) = if op == Op::Cmps {
                    let x = read(ctx, source, a.get(ctx, ESI), size)?;
                    (x, read(ctx, Seg::Es, a.get(ctx, EDI), size)?)
                } else {
                    (
                        ctx.gpr(EAX) & mask,
                        read(ctx, Seg::Es, a.get(ctx, EDI), size)?,
                    )
                };
                let flags = ctx.eflags();
                ctx.set_eflags(sub_flags(flags, x, y, size));
                if op == Op::Cmps {
                    a.set(ctx, ESI, a.get(ctx, ESI).wrapping_add(step));
                }
                a.set(ctx, EDI, a.get(ctx, EDI).wrapping_add(step));
            }
        }
        if !rep {
            return Ok(Completion::Next);
        }
        a.set(ctx, ECX, a.get(ctx, ECX).wrapping_sub(1));
        if matches!(op, Op::Cmps | Op::Scas) {
            let zf = ctx.eflags().contains(Eflags::ZF);
            let stop = if i.has_repne_prefix() { zf } else { !zf };
            if stop {
                return Ok(Completion::Next);
            }
        }
    }
    Ok(Completion::Jumped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bitness: u32, bytes: &[u8]) -> Instruction {
        Decoder::with_ip(bitness, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn rep_movsb_with_16bit_addressing_wraps_si_and_di_and_keeps_upper_halves() {
        let mut cpu = TestCpu::new();
        cpu.poke(0xfffe, &[1, 2, 3, 4]);
        cpu.gpr[ESI] = 0xabcd_fffe;
        cpu.gpr[EDI] = 0x0000_2000;
        cpu.gpr[ECX] = 0x0001_0003;
        let done = execute(&mut cpu, &decode(16, &[0xf3, 0xa4])).unwrap();
        assert_eq!(done, Completion::Next);
        assert_eq!(
            cpu.peek(0x2000, 3),
            &[1, 2, 0],
            "SI wrapped to 0 after two bytes"
        );
        assert_eq!(cpu.gpr[ESI], 0xabcd_0001);
        assert_eq!(
            cpu.gpr[ECX], 0x0001_0000,
            "CX counted down, upper half kept"
        );
    }

    #[test]
    fn repne_scasb_stops_at_the_match() {
        let mut cpu = TestCpu::new();
        cpu.poke(0x3000, b"abcdef");
        cpu.gpr[EDI] = 0x3000;
        cpu.gpr[ECX] = 6;
        cpu.gpr[EAX] = u32::from(b'd');
        execute(&mut cpu, &decode(32, &[0xf2, 0xae])).unwrap();
        assert_eq!(cpu.gpr[EDI], 0x3004);
        assert_eq!(cpu.gpr[ECX], 2);
        assert!(cpu.eflags.contains(Eflags::ZF));
    }

    #[test]
    fn std_stosw_goes_down() {
        let mut cpu = TestCpu::new();
        cpu.eflags |= Eflags::DF;
        cpu.gpr[EDI] = 0x4004;
        cpu.gpr[EAX] = 0xbeef;
        cpu.gpr[ECX] = 2;
        execute(&mut cpu, &decode(32, &[0x66, 0xf3, 0xab])).unwrap();
        assert_eq!(cpu.peek(0x4002, 4), &[0xef, 0xbe, 0xef, 0xbe]);
        assert_eq!(cpu.gpr[EDI], 0x4000);
    }

    #[test]
    fn a_long_rep_returns_to_be_restarted() {
        let mut cpu = TestCpu::new();
        cpu.gpr[EDI] = 0x1_0000;
        cpu.gpr[ECX] = MAX_ITERATIONS + 5;
        let r = execute(&mut cpu, &decode(32, &[0xf3, 0xaa])).unwrap();
        assert_eq!(r, Completion::Jumped);
        assert_eq!(cpu.gpr[ECX], 5);
    }
}
