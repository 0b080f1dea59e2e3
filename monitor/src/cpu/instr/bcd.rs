//! The BCD adjusts (DAA, DAS, AAA, AAS, AAM, AAD) and SALC: instructions
//! 64-bit mode does not have, so the translator leaves them to the
//! monitor.

use super::alu::szp8;
use super::Completion;
use crate::cpu::context::{CpuContext, EAX};
use crate::cpu::{Eflags, Exception, Fault};
use iced_x86::{Instruction, Mnemonic};

/// SALC: AL = CF ? 0xff : 0.
pub fn salc(core: &mut (impl CpuContext + ?Sized)) -> Completion {
    let al = if core.eflags().contains(Eflags::CF) {
        0xff
    } else {
        0
    };
    core.set_gpr(EAX, (core.gpr(EAX) & !0xff) | al);
    Completion::Next
}

fn szp(b: u8) -> u32 {
    szp8(b).bits()
}

/// DAA, DAS, AAA, AAS, AAM, AAD (SDM vol. 2; AAM 0 is #DE).
pub fn bcd(core: &mut (impl CpuContext + ?Sized), i: &Instruction) -> Result<Completion, Fault> {
    const CF: u32 = Eflags::CF.bits();
    const AF: u32 = Eflags::AF.bits();
    const PF: u32 = Eflags::PF.bits();
    let flags = core.eflags().bits();
    let eax = core.gpr(EAX);
    let (al, ah) = ((eax & 0xff) as u8, ((eax >> 8) & 0xff) as u8);
    let (cf, af) = (flags & CF != 0, flags & AF != 0);
    let (new_ax, new_flags): (u16, u32) = match i.mnemonic() {
        Mnemonic::Daa | Mnemonic::Das => {
            let sub = i.mnemonic() == Mnemonic::Das;
            let (mut a, mut c, mut af2) = (al, false, false);
            if (al & 0xf) > 9 || af {
                let (r, carry) = if sub {
                    al.overflowing_sub(6)
                } else {
                    al.overflowing_add(6)
                };
                a = r;
                c = cf || carry;
                af2 = true;
            }
            if al > 0x99 || cf {
                a = if sub {
                    a.wrapping_sub(0x60)
                } else {
                    a.wrapping_add(0x60)
                };
                c = true;
            }
            (
                u16::from(ah) << 8 | u16::from(a),
                szp(a) | if c { CF } else { 0 } | if af2 { AF } else { 0 },
            )
        }
        Mnemonic::Aaa | Mnemonic::Aas => {
            let sub = i.mnemonic() == Mnemonic::Aas;
            if (al & 0xf) > 9 || af {
                let ax = (u16::from(ah) << 8) | u16::from(al);
                let ax = if sub {
                    ax.wrapping_sub(6).wrapping_sub(0x100)
                } else {
                    ax.wrapping_add(0x106)
                };
                (ax & 0xff0f, AF | CF | szp((ax & 0xff) as u8 & 0x0f) & PF)
            } else {
                (
                    (u16::from(ah) << 8) | u16::from(al & 0xf),
                    szp(al & 0x0f) & PF,
                )
            }
        }
        Mnemonic::Aam => {
            let base = i.immediate8();
            if base == 0 {
                return Err(Exception::DivideError.into());
            }
            let (q, r) = (al / base, al % base);
            ((u16::from(q) << 8) | u16::from(r), szp(r))
        }
        _ => {
            let base = i.immediate8();
            let r = al.wrapping_add(ah.wrapping_mul(base));
            (u16::from(r), szp(r))
        }
    };
    core.set_gpr(EAX, (eax & 0xffff_0000) | u32::from(new_ax));
    let defined = Eflags::ARITHMETIC.bits();
    core.set_eflags(Eflags::from_raw((flags & !defined) | new_flags));
    Ok(Completion::Next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::TestCpu;
    use iced_x86::{Decoder, DecoderOptions};

    fn run(cpu: &mut TestCpu, bytes: &[u8]) -> Result<Completion, Fault> {
        bcd(
            cpu,
            &Decoder::with_ip(32, bytes, 0x1000, DecoderOptions::NONE).decode(),
        )
    }

    #[test]
    fn daa_adjusts_a_packed_bcd_sum() {
        let mut cpu = TestCpu::new();
        cpu.gpr[0] = 0x79 + 0x35; // 0xae
        run(&mut cpu, &[0x27]).unwrap();
        assert_eq!(cpu.gpr[0] & 0xff, 0x14);
        assert!(cpu.eflags.contains(Eflags::CF));
    }

    #[test]
    fn aam_zero_is_a_divide_error() {
        let mut cpu = TestCpu::new();
        assert_eq!(
            run(&mut cpu, &[0xd4, 0x00]),
            Err(Exception::DivideError.into())
        );
    }

    #[test]
    fn aad_folds_ah_into_al() {
        let mut cpu = TestCpu::new();
        cpu.gpr[0] = 0x0207;
        run(&mut cpu, &[0xd5, 0x0a]).unwrap();
        assert_eq!(cpu.gpr[0] & 0xffff, 27);
    }
}
