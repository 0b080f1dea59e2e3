//! The guest's system state: segment registers with their hidden caches,
//! descriptor-table registers, control and debug registers, CPL, MSRs, and
//! the segment checks every access through a segment makes (Intel SDM vol.
//! 3, 3.4.3, 5.3-5.5).

use super::descriptor::{Descriptor, Selector};
use super::exception::Exception;
use super::flags::{Cr0, Cr4};
use super::msr::Msrs;

/// A segment register, by its encoding number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Seg {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

impl Seg {
    /// All six, in encoding order.
    pub const ALL: [Seg; 6] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs];

    /// The register's name.
    pub fn name(self) -> &'static str {
        ["ES", "CS", "SS", "DS", "FS", "GS"][self as usize]
    }

    /// From an iced-x86 segment register.
    pub fn from_iced(r: iced_x86::Register) -> Option<Seg> {
        Some(match r {
            iced_x86::Register::ES => Seg::Es,
            iced_x86::Register::CS => Seg::Cs,
            iced_x86::Register::SS => Seg::Ss,
            iced_x86::Register::DS => Seg::Ds,
            iced_x86::Register::FS => Seg::Fs,
            iced_x86::Register::GS => Seg::Gs,
            _ => return None,
        })
    }
}

/// A segment register: the visible selector and the hidden descriptor
/// cache the processor loaded with it.
///
/// `attr` holds the descriptor's access byte and flags as
/// [`Descriptor::attr`] gives them; a segment register loaded with a null
/// selector has `attr == 0` (unusable: every access through it is #GP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentRegister {
    /// The selector.
    pub selector: Selector,
    /// Linear base address.
    pub base: u32,
    /// Limit in bytes (granularity applied).
    pub limit: u32,
    /// Access byte and flags (0: unusable).
    pub attr: u16,
}

const ATTR_PRESENT: u16 = 0x80;
const ATTR_S: u16 = 0x10;
const ATTR_CODE: u16 = 0x08;
const ATTR_DB: u16 = 0x4000;

impl SegmentRegister {
    /// The register after loading `selector` with descriptor `d`.
    pub fn loaded(selector: Selector, d: Descriptor) -> SegmentRegister {
        SegmentRegister {
            selector,
            base: d.base(),
            limit: d.limit(),
            attr: d.attr(),
        }
    }

    /// A flat 4 GiB 32-bit segment: code (execute/read) or data
    /// (read/write), accessed, present, DPL `dpl`.
    pub fn flat(selector: u16, code: bool, dpl: u8) -> SegmentRegister {
        let ty: u16 = if code { 0xb } else { 0x3 };
        SegmentRegister {
            selector: Selector(selector),
            base: 0,
            limit: u32::MAX,
            attr: 0xc000 | ATTR_PRESENT | ATTR_S | u16::from(dpl & 3) << 5 | ty,
        }
    }

    /// The register after loading a null selector (DS, ES, FS, GS only).
    pub fn null(selector: Selector) -> SegmentRegister {
        SegmentRegister {
            selector,
            ..SegmentRegister::default()
        }
    }

    /// Loaded with a usable descriptor (not null).
    pub fn usable(self) -> bool {
        self.attr & ATTR_PRESENT != 0
    }

    /// D/B: 32-bit code, 32-bit stack pointer, 4 GiB expand-down bound.
    pub fn big(self) -> bool {
        self.attr & ATTR_DB != 0
    }

    /// The descriptor's DPL.
    pub fn dpl(self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }

    /// A code segment.
    pub fn is_code(self) -> bool {
        self.attr & (ATTR_S | ATTR_CODE) == ATTR_S | ATTR_CODE
    }

    /// Whether a return to privilege level `cpl` makes this DS, ES, FS or
    /// GS null: usable data or non-conforming code of DPL below `cpl`
    /// (SDM vol. 2, RET and IRET).
    pub fn nulled_by_return_to(self, cpl: u8) -> bool {
        let conforming_code = self.is_code() && self.attr & 4 != 0;
        self.usable() && !conforming_code && self.dpl() < cpl
    }

    /// Readable (data, or readable code).
    pub fn readable(self) -> bool {
        self.usable() && (!self.is_code() || self.attr & 2 != 0)
    }

    /// Writable (data with W set).
    pub fn writable(self) -> bool {
        self.usable() && !self.is_code() && self.attr & 2 != 0
    }

    /// Expand-down data segment.
    pub fn expand_down(self) -> bool {
        !self.is_code() && self.attr & 4 != 0
    }

    /// Base 0, limit 4 GiB, expand-up: addresses are offsets.
    pub fn is_flat(self) -> bool {
        self.base == 0 && self.limit == u32::MAX && !self.expand_down()
    }

    /// The linear address of an access of `size` bytes at `offset`, if the
    /// segment's limit allows it (no type check). `Err` carries the
    /// exception the SDM names: #SS(0) for SS, #GP(0) otherwise.
    pub fn linear(self, seg: Seg, offset: u32, size: u32) -> Result<u32, Exception> {
        let fault = || {
            if seg == Seg::Ss {
                Exception::StackFault(0)
            } else {
                Exception::GeneralProtection(0)
            }
        };
        if !self.usable() {
            return Err(fault());
        }
        let last = u64::from(offset) + u64::from(size.max(1)) - 1;
        let inside = if self.expand_down() {
            let upper = if self.big() {
                u64::from(u32::MAX)
            } else {
                0xffff
            };
            u64::from(offset) > u64::from(self.limit) && last <= upper
        } else {
            last <= u64::from(self.limit)
        };
        if inside {
            Ok(self.base.wrapping_add(offset))
        } else {
            Err(fault())
        }
    }

    /// The offsets the segment allows, as `[read_first, read_last,
    /// write_first, write_last]` (inclusive; an access of `n` bytes at `o`
    /// is allowed when `first <= o` and `o + n - 1 <= last`; `[1, 0]` is
    /// empty): what [`Self::check`] decides, in the form translated code
    /// checks it.
    pub fn offset_ranges(self) -> [u64; 4] {
        const EMPTY: [u64; 2] = [1, 0];
        let range = if !self.usable() {
            EMPTY
        } else if self.expand_down() {
            let upper = if self.big() { u32::MAX } else { 0xffff };
            [u64::from(self.limit) + 1, u64::from(upper)]
        } else {
            [0, u64::from(self.limit)]
        };
        let read = if self.readable() { range } else { EMPTY };
        let write = if self.writable() { range } else { EMPTY };
        [read[0], read[1], write[0], write[1]]
    }

    /// The [`Self::offset_ranges`] of a flat read/write data segment,
    /// which refuses no 32-bit offset.
    pub const UNRESTRICTED: [u64; 4] = [0, u32::MAX as u64, 0, u32::MAX as u64];

    /// Whether some access within 32-bit offsets is refused (by the limit,
    /// the expand-down bound, the type or a null selector).
    pub fn restricts_access(self) -> bool {
        self.offset_ranges() != Self::UNRESTRICTED
    }

    /// Like [`Self::linear`], also checking that the segment allows the
    /// access (writes need a writable data segment, reads a readable one).
    pub fn check(self, seg: Seg, offset: u32, size: u32, write: bool) -> Result<u32, Exception> {
        let allowed = if write {
            self.writable()
        } else {
            self.readable()
        };
        if !allowed {
            return Err(if seg == Seg::Ss {
                Exception::StackFault(0)
            } else {
                Exception::GeneralProtection(0)
            });
        }
        self.linear(seg, offset, size)
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TableRegister {
    /// Linear base address.
    pub base: u32,
    /// Limit in bytes (the last valid byte offset).
    pub limit: u16,
}

/// The guest's system state (everything but the general registers, EIP,
/// EFLAGS and the FPU/SSE data registers).
#[derive(Clone, Debug, Default)]
pub struct SystemState {
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [SegmentRegister; 6],
    /// LDTR (system segment; `attr` 0 when null).
    pub ldtr: SegmentRegister,
    /// TR.
    pub tr: SegmentRegister,
    /// GDTR.
    pub gdtr: TableRegister,
    /// IDTR.
    pub idtr: TableRegister,
    /// CR0.
    pub cr0: Cr0,
    /// CR2 (the last page-fault address).
    pub cr2: u32,
    /// CR3.
    pub cr3: u32,
    /// CR4.
    pub cr4: Cr4,
    /// DR0-DR7 (DR4/DR5 alias DR6/DR7 unless CR4.DE).
    pub dr: [u32; 8],
    /// Current privilege level.
    pub cpl: u8,
    /// Model-specific registers.
    pub msr: Msrs,
    /// Interrupts (and, after MOV SS/POP SS, debug traps) are inhibited
    /// until the next instruction completes: set by STI when IF was clear
    /// and by MOV SS/POP SS.
    pub interrupt_shadow: bool,
    /// An NMI handler is running (NMIs blocked until the next IRET).
    pub nmi_blocked: bool,
    /// A debug trap (#DB, a trap: the saved EIP is the next instruction's)
    /// is due before the next instruction: set by a task switch into a
    /// task whose TSS has the T bit (DR6.BT is set with it, SDM vol. 3,
    /// 7.2.1 and 17.3.1.5). Whoever runs the guest delivers the #DB and
    /// clears it.
    pub pending_debug_trap: bool,
}

impl SystemState {
    /// The state the Multiboot specification gives at kernel entry: flat
    /// 32-bit protected mode at CPL 0, paging off, CS 0x08, data 0x10, and
    /// an IDT of limit 0x3ff at 0 (as after reset).
    pub fn multiboot_entry() -> SystemState {
        let mut s = SystemState {
            cr0: Cr0::PE | Cr0::ET,
            idtr: TableRegister {
                base: 0,
                limit: 0x3ff,
            },
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            ..SystemState::default()
        };
        for seg in Seg::ALL {
            s.seg[seg as usize] =
                SegmentRegister::flat(if seg == Seg::Cs { 0x08 } else { 0x10 }, seg == Seg::Cs, 0);
        }
        s.tr.attr = 0x8b;
        s.tr.limit = 0xffff;
        s
    }

    /// A segment register.
    pub fn segment(&self, seg: Seg) -> SegmentRegister {
        self.seg[seg as usize]
    }

    /// The default operand and address size of the code segment is 32 bits.
    pub fn code32(&self) -> bool {
        self.seg[Seg::Cs as usize].big()
    }

    /// The stack pointer is ESP (SS.B), not SP.
    pub fn stack32(&self) -> bool {
        self.seg[Seg::Ss as usize].big()
    }

    /// CS, SS, DS and ES are flat (base 0, 4 GiB, expand-up), so offsets
    /// through them are linear addresses.
    pub fn flat(&self) -> bool {
        [Seg::Cs, Seg::Ss, Seg::Ds, Seg::Es]
            .iter()
            .all(|s| self.seg[*s as usize].is_flat())
    }

    /// Paging is on.
    pub fn paging(&self) -> bool {
        self.cr0.contains(Cr0::PG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(base: u32, limit: u32, attr: u16) -> SegmentRegister {
        SegmentRegister {
            selector: Selector(0x10),
            base,
            limit,
            attr,
        }
    }

    /// The ranges translated code checks decide exactly as `check` does.
    #[test]
    fn offset_ranges_agree_with_check() {
        let segments = [
            SegmentRegister::flat(0x10, false, 0),
            SegmentRegister::flat(0x08, true, 0),
            data(0x1000, 0xfff, 0x4093), // expand-up, 32-bit
            data(0, 0xfff, 0x4097),      // expand-down, B=1
            data(0, 0xfff, 0x0097),      // expand-down, B=0
            data(0, u32::MAX, 0x4091),   // read-only
            data(0, 0xffff, 0x009b),     // 16-bit code, execute/read
            data(0, 0xffff, 0x0099),     // execute-only code
            SegmentRegister::null(Selector(0)),
        ];
        let offsets = [0, 1, 0xffc, 0xffd, 0xfff, 0x1000, 0xfffc, 0xffff, 0x10000];
        let high = [u32::MAX - 3, u32::MAX - 2, u32::MAX];
        for seg in segments {
            let r = seg.offset_ranges();
            for offset in offsets.into_iter().chain(high) {
                for size in [1u32, 2, 4, 16] {
                    for write in [false, true] {
                        let (first, last) = if write { (r[2], r[3]) } else { (r[0], r[1]) };
                        let end = u64::from(offset) + u64::from(size) - 1;
                        let allowed = first <= u64::from(offset) && end <= last;
                        assert_eq!(
                            allowed,
                            seg.check(Seg::Ds, offset, size, write).is_ok(),
                            "{seg:?} offset {offset:#x} size {size} write {write}"
                        );
                    }
                }
            }
        }
        assert!(!SegmentRegister::flat(0x10, false, 0).restricts_access());
        assert!(SegmentRegister::flat(0x08, true, 0).restricts_access());
    }

    #[test]
    fn expand_up_segment_allows_offsets_up_to_the_limit() {
        let s = data(0x1000, 0xfff, 0x4093);
        assert_eq!(s.check(Seg::Ds, 0xffc, 4, true), Ok(0x1ffc));
        assert_eq!(
            s.check(Seg::Ds, 0xffd, 4, false),
            Err(Exception::GeneralProtection(0))
        );
    }

    #[test]
    fn expand_down_segment_allows_offsets_above_the_limit() {
        // Expand-down, writable, B=0: valid offsets limit+1 ..= 0xffff.
        let s = data(0, 0x0fff, 0x0097);
        assert!(s.check(Seg::Ss, 0x0fff, 1, true).is_err());
        assert_eq!(s.check(Seg::Ss, 0x1000, 2, true), Ok(0x1000));
        assert_eq!(
            s.check(Seg::Ss, 0xffff, 2, true),
            Err(Exception::StackFault(0))
        );
        let big = data(0, 0x0fff, 0x4097);
        assert_eq!(big.check(Seg::Ss, 0xffff, 2, true), Ok(0xffff));
    }

    #[test]
    fn writes_need_a_writable_data_segment() {
        let code = SegmentRegister::flat(0x08, true, 0);
        assert!(code.check(Seg::Cs, 0, 4, false).is_ok());
        assert_eq!(
            code.check(Seg::Ds, 0, 4, true),
            Err(Exception::GeneralProtection(0))
        );
        let null = SegmentRegister::null(Selector(0));
        assert!(null.check(Seg::Es, 0, 1, false).is_err());
    }

    #[test]
    fn multiboot_entry_is_flat_32bit_ring_0() {
        let s = SystemState::multiboot_entry();
        assert!(s.flat() && s.code32() && s.stack32());
        assert_eq!(s.cpl, 0);
        assert_eq!(s.segment(Seg::Cs).selector, Selector(0x08));
        assert!(s.segment(Seg::Cs).is_code());
    }
}
