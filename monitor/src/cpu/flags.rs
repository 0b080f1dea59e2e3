//! Architectural bit fields: EFLAGS, CR0, CR4, DR6, DR7 (Intel SDM vol. 3,
//! 2.3, 2.5, 17.2).

use bitflags::bitflags;

bitflags! {
    /// EFLAGS.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Eflags: u32 {
        /// Carry.
        const CF = 1 << 0;
        /// Always 1.
        const FIXED = 1 << 1;
        /// Parity.
        const PF = 1 << 2;
        /// Auxiliary carry.
        const AF = 1 << 4;
        /// Zero.
        const ZF = 1 << 6;
        /// Sign.
        const SF = 1 << 7;
        /// Trap (single-step).
        const TF = 1 << 8;
        /// Interrupt enable.
        const IF = 1 << 9;
        /// Direction.
        const DF = 1 << 10;
        /// Overflow.
        const OF = 1 << 11;
        /// I/O privilege level, low bit.
        const IOPL0 = 1 << 12;
        /// I/O privilege level, high bit.
        const IOPL1 = 1 << 13;
        /// Nested task.
        const NT = 1 << 14;
        /// Resume (suppresses instruction breakpoints for one instruction).
        const RF = 1 << 16;
        /// Virtual-8086 mode.
        const VM = 1 << 17;
        /// Alignment check.
        const AC = 1 << 18;
        /// Virtual interrupt flag.
        const VIF = 1 << 19;
        /// Virtual interrupt pending.
        const VIP = 1 << 20;
        /// CPUID available (toggleable).
        const ID = 1 << 21;
    }
}

impl Eflags {
    /// The arithmetic flags.
    pub const ARITHMETIC: Eflags = Eflags::CF
        .union(Eflags::PF)
        .union(Eflags::AF)
        .union(Eflags::ZF)
        .union(Eflags::SF)
        .union(Eflags::OF);

    /// IOPL as a number.
    pub fn iopl(self) -> u8 {
        ((self.bits() >> 12) & 3) as u8
    }

    /// With IOPL set to `iopl`.
    pub fn with_iopl(self, iopl: u8) -> Eflags {
        Eflags::from_bits_retain((self.bits() & !0x3000) | (u32::from(iopl & 3) << 12))
    }

    /// From a raw value: bit 1 set, reserved bits (3, 5, 15, 22-31) clear.
    pub fn from_raw(raw: u32) -> Eflags {
        Eflags::from_bits_truncate(raw) | Eflags::FIXED
    }
}

bitflags! {
    /// CR0.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Cr0: u32 {
        /// Protection enable.
        const PE = 1 << 0;
        /// Monitor coprocessor (WAIT honours TS).
        const MP = 1 << 1;
        /// Emulation (x87 instructions raise #NM, SSE #UD).
        const EM = 1 << 2;
        /// Task switched (x87/SSE instructions raise #NM).
        const TS = 1 << 3;
        /// Extension type (always 1 on i486+).
        const ET = 1 << 4;
        /// Numeric error (x87 errors as #MF rather than FERR#).
        const NE = 1 << 5;
        /// Write protect (supervisor writes honour read-only pages).
        const WP = 1 << 16;
        /// Alignment mask (with EFLAGS.AC at CPL 3: #AC).
        const AM = 1 << 18;
        /// Not write-through.
        const NW = 1 << 29;
        /// Cache disable.
        const CD = 1 << 30;
        /// Paging.
        const PG = 1 << 31;
    }
}

bitflags! {
    /// CR4.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Cr4: u32 {
        /// Virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// RDTSC only at CPL 0.
        const TSD = 1 << 2;
        /// Debugging extensions (DR4/DR5 reserved, I/O breakpoints).
        const DE = 1 << 3;
        /// 4 MiB pages.
        const PSE = 1 << 4;
        /// Physical address extension.
        const PAE = 1 << 5;
        /// Machine-check enable.
        const MCE = 1 << 6;
        /// Global pages.
        const PGE = 1 << 7;
        /// RDPMC at any CPL.
        const PCE = 1 << 8;
        /// The OS supports FXSAVE/FXRSTOR (SSE enabled).
        const OSFXSR = 1 << 9;
        /// The OS handles #XM.
        const OSXMMEXCPT = 1 << 10;
        /// XSAVE and extended states enabled.
        const OSXSAVE = 1 << 18;
    }
}

bitflags! {
    /// DR6 status bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Dr6: u32 {
        /// Breakpoint 0 matched.
        const B0 = 1 << 0;
        /// Breakpoint 1 matched.
        const B1 = 1 << 1;
        /// Breakpoint 2 matched.
        const B2 = 1 << 2;
        /// Breakpoint 3 matched.
        const B3 = 1 << 3;
        /// Debug-register access detected (DR7.GD).
        const BD = 1 << 13;
        /// Single step.
        const BS = 1 << 14;
        /// Task switch (T bit of the new TSS).
        const BT = 1 << 15;
    }
}

impl Dr6 {
    /// The bits that read as 1 on a 32-bit processor (4-11, 16-31).
    pub const FIXED_ONES: u32 = 0xffff_0ff0;
}

/// DR7: the enable bits and the condition/length of breakpoint `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dr7(pub u32);

impl Dr7 {
    /// DR7.GD: general detect (a MOV to/from a debug register raises #DB).
    pub const GD: u32 = 1 << 13;

    /// Breakpoint `n` is enabled (locally or globally).
    pub fn enabled(self, n: usize) -> bool {
        self.0 >> (2 * n) & 3 != 0
    }

    /// The R/W field of breakpoint `n` (0 = instruction execution).
    pub fn condition(self, n: usize) -> u32 {
        self.0 >> (16 + 4 * n) & 3
    }

    /// The LEN field of breakpoint `n` (bytes: 1, 2, 8, 4).
    pub fn len(self, n: usize) -> u32 {
        match self.0 >> (18 + 4 * n) & 3 {
            0 => 1,
            1 => 2,
            2 => 8,
            _ => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_eflags_keep_bit_1_set_and_reserved_bits_clear() {
        let f = Eflags::from_raw(0xffff_ffff);
        assert!(f.contains(Eflags::FIXED));
        assert_eq!(f.bits() & 0xffc0_8028, 0);
        assert_eq!(Eflags::from_raw(0).bits(), 2);
    }

    #[test]
    fn iopl_round_trips() {
        let f = Eflags::FIXED.with_iopl(3);
        assert_eq!(f.iopl(), 3);
        assert_eq!(f.with_iopl(1).iopl(), 1);
    }

    #[test]
    fn dr7_decodes_enable_condition_and_length() {
        let d = Dr7(0b11 << 2 | 0b01 << 20 | 0b11 << 22);
        assert!(!d.enabled(0) && d.enabled(1));
        assert_eq!(d.condition(1), 1);
        assert_eq!(d.len(1), 4);
    }
}
