//! The arithmetic flags of the few ALU operations the monitor performs
//! itself (the comparisons of CMPS and SCAS, the BCD adjusts).

use crate::cpu::Eflags;

/// PF for the low byte of a result.
pub fn parity(b: u8) -> Eflags {
    if b.count_ones().is_multiple_of(2) {
        Eflags::PF
    } else {
        Eflags::empty()
    }
}

/// ZF, SF and PF of an 8-bit result.
pub fn szp8(b: u8) -> Eflags {
    let mut f = parity(b);
    f.set(Eflags::ZF, b == 0);
    f.set(Eflags::SF, b & 0x80 != 0);
    f
}

/// `flags` with CF, PF, AF, ZF, SF, OF as `x - y` on `size` bytes sets
/// them (SUB, CMP).
pub fn sub_flags(flags: Eflags, x: u32, y: u32, size: u32) -> Eflags {
    let bits = 8 * size;
    let mask = if size == 4 { u32::MAX } else { (1 << bits) - 1 };
    let (x, y) = (x & mask, y & mask);
    let r = x.wrapping_sub(y) & mask;
    let sign = 1 << (bits - 1);
    let mut f = flags - Eflags::ARITHMETIC;
    f.set(Eflags::CF, x < y);
    f |= parity(r as u8);
    f.set(Eflags::AF, (x ^ y ^ r) & 0x10 != 0);
    f.set(Eflags::ZF, r == 0);
    f.set(Eflags::SF, r & sign != 0);
    f.set(Eflags::OF, (x ^ y) & (x ^ r) & sign != 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_flags_match_the_processor() {
        let f = sub_flags(Eflags::FIXED, 1, 2, 1);
        assert!(f.contains(Eflags::CF | Eflags::SF | Eflags::AF));
        assert!(!f.contains(Eflags::ZF) && !f.contains(Eflags::OF));
        let f = sub_flags(Eflags::FIXED, 0x80, 1, 1);
        assert!(f.contains(Eflags::OF) && !f.contains(Eflags::CF));
        let f = sub_flags(Eflags::FIXED, 5, 5, 4);
        assert!(f.contains(Eflags::ZF | Eflags::PF));
    }
}
