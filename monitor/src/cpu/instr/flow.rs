//! LOOP, LOOPE, LOOPNE, JCXZ and JECXZ with CX or ECX as the count (the
//! address size decides), for the forms the translator leaves to the
//! monitor (SDM vol. 2, LOOPcc, Jcc).

use super::Completion;
use crate::cpu::context::CpuContext;
use crate::cpu::{Eflags, Exception, Fault, Seg};
use iced_x86::{Code, Instruction, Mnemonic};

/// ECX.
const ECX: usize = 1;

/// Carries out the loop-family instruction `i`.
pub fn loop_like(
    ctx: &mut (impl CpuContext + ?Sized),
    i: &Instruction,
) -> Result<Completion, Fault> {
    let sixteen = matches!(
        i.code(),
        Code::Jcxz_rel8_16
            | Code::Jcxz_rel8_32
            | Code::Loop_rel8_16_CX
            | Code::Loop_rel8_32_CX
            | Code::Loope_rel8_16_CX
            | Code::Loope_rel8_32_CX
            | Code::Loopne_rel8_16_CX
            | Code::Loopne_rel8_32_CX
    );
    let mask = if sixteen { 0xffff } else { u32::MAX };
    let ecx = ctx.gpr(ECX);
    let zf = ctx.eflags().contains(Eflags::ZF);
    let (count, taken) = match i.mnemonic() {
        Mnemonic::Jcxz | Mnemonic::Jecxz => (ecx & mask, ecx & mask == 0),
        m => {
            let count = (ecx & mask).wrapping_sub(1) & mask;
            let cond = match m {
                Mnemonic::Loope => zf,
                Mnemonic::Loopne => !zf,
                _ => true,
            };
            (count, count != 0 && cond)
        }
    };
    let target = i.near_branch_target() as u32;
    if taken && target > ctx.sys().segment(Seg::Cs).limit {
        return Err(Exception::GeneralProtection(0).into());
    }
    ctx.set_gpr(ECX, (ecx & !mask) | count);
    if taken {
        ctx.set_eip(target);
        Ok(Completion::Jumped)
    } else {
        Ok(Completion::Next)
    }
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
    fn loop_with_cx_counts_only_the_low_half() {
        let mut cpu = TestCpu::new();
        cpu.gpr[ECX] = 0x1234_0001;
        let r = loop_like(&mut cpu, &decode(16, &[0xe2, 0xfe])).unwrap();
        assert_eq!(r, Completion::Next, "CX reached 0");
        assert_eq!(cpu.gpr[ECX], 0x1234_0000);
        cpu.gpr[ECX] = 0x0000_0000;
        let r = loop_like(&mut cpu, &decode(16, &[0xe2, 0xfe])).unwrap();
        assert_eq!(r, Completion::Jumped, "0 - 1 = 0xffff loops");
        assert_eq!(cpu.gpr[ECX], 0x0000_ffff);
    }

    #[test]
    fn jcxz_jumps_on_zero_cx_whatever_the_upper_half() {
        let mut cpu = TestCpu::new();
        cpu.gpr[ECX] = 0x0001_0000;
        let r = loop_like(&mut cpu, &decode(16, &[0xe3, 0x10])).unwrap();
        assert_eq!(r, Completion::Jumped);
        assert_eq!(cpu.eip, 0x1012);
    }

    #[test]
    fn loope_stops_when_zf_is_clear() {
        let mut cpu = TestCpu::new();
        cpu.gpr[ECX] = 5;
        let r = loop_like(&mut cpu, &decode(32, &[0xe1, 0xfe])).unwrap();
        assert_eq!(r, Completion::Next);
        assert_eq!(cpu.gpr[ECX], 4);
    }
}
