//! System registers of the guest CPU that translated code never touches:
//! control and debug registers, descriptor-table registers, the hidden
//! parts of segment registers.

/// A cached segment descriptor (the hidden part of a segment register).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegCache {
    /// Limit in bytes minus one (granularity applied).
    pub limit: u32,
    /// Descriptor access byte and flags (bits 40..55 of the descriptor).
    pub attr: u16,
}

impl SegCache {
    /// A flat 4 GiB segment with the given access byte and D/B=1, G=1.
    pub fn flat(access: u8) -> SegCache {
        SegCache {
            limit: u32::MAX,
            attr: u16::from(access) | 0xc000,
        }
    }

    /// Whether a code segment has the default operand size 32 (D=1).
    pub fn is_32bit(self) -> bool {
        self.attr & 0x4000 != 0
    }
}

/// A descriptor-table register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableReg {
    /// Linear base address.
    pub base: u32,
    /// Limit in bytes minus one.
    pub limit: u16,
}

/// The guest's system registers.
#[derive(Clone, Debug, Default)]
pub struct SysRegs {
    /// CR0.
    pub cr0: u32,
    /// CR2.
    pub cr2: u32,
    /// CR3.
    pub cr3: u32,
    /// CR4.
    pub cr4: u32,
    /// DR0..DR7.
    pub dr: [u32; 8],
    /// GDTR.
    pub gdtr: TableReg,
    /// IDTR.
    pub idtr: TableReg,
    /// Task register selector.
    pub tr: u16,
    /// LDT selector.
    pub ldtr: u16,
    /// Hidden parts of ES, CS, SS, DS, FS, GS.
    pub seg: [SegCache; 6],
    /// Current privilege level.
    pub cpl: u8,
}

/// CR0.PE.
pub const CR0_PE: u32 = 1;
/// CR0.TS.
pub const CR0_TS: u32 = 1 << 3;
/// CR0.ET.
pub const CR0_ET: u32 = 1 << 4;
/// CR0.PG.
pub const CR0_PG: u32 = 1 << 31;

impl SysRegs {
    /// The state the Multiboot specification gives at kernel entry: flat
    /// 32-bit protected mode, paging off.
    pub fn multiboot_entry() -> SysRegs {
        let mut s = SysRegs {
            cr0: CR0_PE | CR0_ET,
            ..SysRegs::default()
        };
        for (i, c) in s.seg.iter_mut().enumerate() {
            *c = SegCache::flat(if i == 1 { 0x9b } else { 0x93 });
        }
        s
    }
}

/// A decoded GDT/LDT segment descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Base address.
    pub base: u32,
    /// Limit in bytes minus one.
    pub limit: u32,
    /// Access byte and flags.
    pub attr: u16,
}

impl Descriptor {
    /// Decodes the 8 bytes of a descriptor.
    pub fn parse(raw: u64) -> Descriptor {
        let base = ((raw >> 16) & 0xff_ffff) as u32 | (((raw >> 56) & 0xff) as u32) << 24;
        let mut limit = (raw & 0xffff) as u32 | (((raw >> 48) & 0xf) as u32) << 16;
        let attr = ((raw >> 40) & 0xf0ff) as u16;
        if attr & 0x8000 != 0 {
            limit = (limit << 12) | 0xfff;
        }
        Descriptor { base, limit, attr }
    }

    /// Present bit.
    pub fn present(self) -> bool {
        self.attr & 0x80 != 0
    }

    /// Code or data (S=1) segment.
    pub fn is_code_or_data(self) -> bool {
        self.attr & 0x10 != 0
    }

    /// Executable code segment.
    pub fn is_code(self) -> bool {
        self.is_code_or_data() && self.attr & 0x08 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_descriptor_parses_to_4gib_32bit() {
        let d = Descriptor::parse(0x00cf_9a00_0000_ffff);
        assert_eq!(d.base, 0);
        assert_eq!(d.limit, u32::MAX);
        assert!(d.is_code() && d.present());
        assert!(SegCache {
            limit: d.limit,
            attr: d.attr
        }
        .is_32bit());
    }

    #[test]
    fn descriptor_base_collects_all_three_fields() {
        let d = Descriptor::parse(0x1240_9234_5678_0fff);
        assert_eq!(d.base, 0x1234_5678);
        assert_eq!(d.limit, 0xfff);
        assert!(!d.is_code());
    }
}
