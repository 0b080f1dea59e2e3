//! Selectors and the descriptors of the GDT, LDT and IDT (Intel SDM vol. 3,
//! 3.4, 3.5, 5.8, 6.11, 7.2).

/// A segment selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Selector(pub u16);

impl Selector {
    /// Requested privilege level.
    pub fn rpl(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// Table indicator: the LDT rather than the GDT.
    pub fn in_ldt(self) -> bool {
        self.0 & 4 != 0
    }

    /// Byte offset of the descriptor in its table.
    pub fn offset(self) -> u32 {
        u32::from(self.0 & !7)
    }

    /// A null selector (index 0 in the GDT, any RPL).
    pub fn is_null(self) -> bool {
        self.0 & !3 == 0
    }

    /// With RPL replaced by `rpl`.
    pub fn with_rpl(self, rpl: u8) -> Selector {
        Selector((self.0 & !3) | u16::from(rpl & 3))
    }
}

/// The kind of a system descriptor (S = 0), by its 4-bit type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemKind {
    /// 1: available 16-bit TSS.
    Tss16Available,
    /// 2: LDT.
    Ldt,
    /// 3: busy 16-bit TSS.
    Tss16Busy,
    /// 4: 16-bit call gate.
    CallGate16,
    /// 5: task gate.
    TaskGate,
    /// 6: 16-bit interrupt gate.
    InterruptGate16,
    /// 7: 16-bit trap gate.
    TrapGate16,
    /// 9: available 32-bit TSS.
    Tss32Available,
    /// 11: busy 32-bit TSS.
    Tss32Busy,
    /// 12: 32-bit call gate.
    CallGate32,
    /// 14: 32-bit interrupt gate.
    InterruptGate32,
    /// 15: 32-bit trap gate.
    TrapGate32,
    /// 0, 8, 10, 13: reserved.
    Reserved,
}

impl SystemKind {
    fn from_type(t: u8) -> SystemKind {
        match t {
            1 => SystemKind::Tss16Available,
            2 => SystemKind::Ldt,
            3 => SystemKind::Tss16Busy,
            4 => SystemKind::CallGate16,
            5 => SystemKind::TaskGate,
            6 => SystemKind::InterruptGate16,
            7 => SystemKind::TrapGate16,
            9 => SystemKind::Tss32Available,
            11 => SystemKind::Tss32Busy,
            12 => SystemKind::CallGate32,
            14 => SystemKind::InterruptGate32,
            15 => SystemKind::TrapGate32,
            _ => SystemKind::Reserved,
        }
    }

    /// A gate (call, task, interrupt or trap).
    pub fn is_gate(self) -> bool {
        matches!(
            self,
            SystemKind::CallGate16
                | SystemKind::CallGate32
                | SystemKind::TaskGate
                | SystemKind::InterruptGate16
                | SystemKind::InterruptGate32
                | SystemKind::TrapGate16
                | SystemKind::TrapGate32
        )
    }

    /// A TSS, available or busy, of either size.
    pub fn is_tss(self) -> bool {
        matches!(
            self,
            SystemKind::Tss16Available
                | SystemKind::Tss16Busy
                | SystemKind::Tss32Available
                | SystemKind::Tss32Busy
        )
    }

    /// A 32-bit gate or TSS (pushes 32-bit values).
    pub fn is_32bit(self) -> bool {
        matches!(
            self,
            SystemKind::Tss32Available
                | SystemKind::Tss32Busy
                | SystemKind::CallGate32
                | SystemKind::InterruptGate32
                | SystemKind::TrapGate32
        )
    }
}

/// The 8 bytes of a descriptor, with accessors for every field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Descriptor(pub u64);

impl Descriptor {
    /// The access byte and flags in the layout VMX and the segment cache
    /// use: bits 0-7 the access byte (type, S, DPL, P), bits 12-15 AVL, L,
    /// D/B, G.
    pub fn attr(self) -> u16 {
        ((self.0 >> 40) & 0xf0ff) as u16
    }

    /// The 4-bit type field.
    pub fn type_field(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }

    /// S: a code or data segment (rather than a system descriptor).
    pub fn is_code_or_data(self) -> bool {
        self.0 >> 44 & 1 == 1
    }

    /// Descriptor privilege level.
    pub fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }

    /// Present.
    pub fn present(self) -> bool {
        self.0 >> 47 & 1 == 1
    }

    /// Segment base (segment and TSS/LDT descriptors).
    pub fn base(self) -> u32 {
        ((self.0 >> 16) & 0xff_ffff) as u32 | (((self.0 >> 56) & 0xff) as u32) << 24
    }

    /// Segment limit in bytes, granularity applied.
    pub fn limit(self) -> u32 {
        let raw = (self.0 & 0xffff) as u32 | (((self.0 >> 48) & 0xf) as u32) << 16;
        if self.0 >> 55 & 1 == 1 {
            raw << 12 | 0xfff
        } else {
            raw
        }
    }

    /// Code segment (S = 1 and type bit 3).
    pub fn is_code(self) -> bool {
        self.is_code_or_data() && self.type_field() & 8 != 0
    }

    /// Data segment (S = 1, type bit 3 clear).
    pub fn is_data(self) -> bool {
        self.is_code_or_data() && self.type_field() & 8 == 0
    }

    /// Code: conforming.
    pub fn conforming(self) -> bool {
        self.is_code() && self.type_field() & 4 != 0
    }

    /// Code: readable; data: always.
    pub fn readable(self) -> bool {
        self.is_data() || (self.is_code() && self.type_field() & 2 != 0)
    }

    /// Data: writable.
    pub fn writable(self) -> bool {
        self.is_data() && self.type_field() & 2 != 0
    }

    /// Data: expand-down.
    pub fn expand_down(self) -> bool {
        self.is_data() && self.type_field() & 4 != 0
    }

    /// D/B: 32-bit default size (code), 32-bit stack pointer and upper
    /// bound (data).
    pub fn big(self) -> bool {
        self.0 >> 54 & 1 == 1
    }

    /// The kind of a system descriptor (meaningless for code/data).
    pub fn system_kind(self) -> SystemKind {
        SystemKind::from_type(self.type_field())
    }

    /// Gates: the target selector.
    pub fn gate_selector(self) -> Selector {
        Selector(((self.0 >> 16) & 0xffff) as u16)
    }

    /// Gates: the target offset (16-bit gates use the low half only).
    pub fn gate_offset(self) -> u32 {
        let low = (self.0 & 0xffff) as u32;
        if self.system_kind().is_32bit() {
            low | ((self.0 >> 48) as u32) << 16
        } else {
            low
        }
    }

    /// Call gates: the number of stack parameters to copy.
    pub fn gate_param_count(self) -> u32 {
        ((self.0 >> 32) & 0x1f) as u32
    }

    /// The same descriptor with the accessed bit (type bit 0) set.
    pub fn with_accessed(self) -> Descriptor {
        Descriptor(self.0 | 1 << 40)
    }

    /// The same TSS descriptor with the busy bit (type bit 1) set or clear.
    pub fn with_busy(self, busy: bool) -> Descriptor {
        if busy {
            Descriptor(self.0 | 1 << 41)
        } else {
            Descriptor(self.0 & !(1 << 41))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code_descriptor_is_a_readable_32bit_code_segment() {
        let d = Descriptor(0x00cf_9a00_0000_ffff);
        assert_eq!((d.base(), d.limit()), (0, u32::MAX));
        assert!(d.is_code() && d.readable() && d.present() && d.big());
        assert!(!d.conforming() && !d.writable());
        assert_eq!(d.dpl(), 0);
        assert_eq!(d.attr(), 0xc09a);
    }

    #[test]
    fn byte_granular_data_descriptor_collects_base_and_limit() {
        let d = Descriptor(0x1240_f234_5678_0fff);
        assert_eq!(d.base(), 0x1234_5678);
        assert_eq!(d.limit(), 0x0fff);
        assert!(d.is_data() && d.writable() && !d.expand_down());
        assert_eq!(d.dpl(), 3);
    }

    #[test]
    fn interrupt_gate_decodes_selector_offset_and_kind() {
        // 32-bit interrupt gate, DPL 3, selector 0x08, offset 0x12345678.
        let d = Descriptor(0x1234_ee00_0008_5678);
        assert_eq!(d.system_kind(), SystemKind::InterruptGate32);
        assert_eq!(d.gate_selector(), Selector(0x08));
        assert_eq!(d.gate_offset(), 0x1234_5678);
        assert_eq!(d.dpl(), 3);
        assert!(d.present() && !d.is_code_or_data());
    }

    #[test]
    fn call_gate_counts_parameters_and_16bit_gates_use_16bit_offsets() {
        let d = Descriptor(0x1234_8403_0010_5678);
        assert_eq!(d.system_kind(), SystemKind::CallGate16);
        assert_eq!(d.gate_param_count(), 3);
        assert_eq!(d.gate_offset(), 0x5678);
    }

    #[test]
    fn tss_busy_bit_toggles() {
        let d = Descriptor(0x0000_8900_0000_0067);
        assert_eq!(d.system_kind(), SystemKind::Tss32Available);
        assert_eq!(d.with_busy(true).system_kind(), SystemKind::Tss32Busy);
        assert_eq!(d.with_busy(true).with_busy(false), d);
    }

    #[test]
    fn selector_fields() {
        let s = Selector(0x2f);
        assert_eq!((s.rpl(), s.in_ldt(), s.offset()), (3, true, 0x28));
        assert!(Selector(3).is_null() && !Selector(4).is_null());
        assert_eq!(s.with_rpl(0), Selector(0x2c));
    }
}
