//! ELF executables: identity checks and their PT_LOAD segments. ELF32
//! i386 kernels, and ELF64 x86-64 kernels as GRUB's Multiboot v1 loader
//! takes them: segments at physical addresses below 4 GiB, entered at
//! `e_entry` in 32-bit protected mode (the kernel switches to long mode
//! itself, which needs hardware execution: see `crate::mode`).
//!
//! Invariants: every header field is read through bounds-checked accessors;
//! offsets and sizes are added in `u64`, so no field value can overflow or
//! index outside the image. A returned [`LoadPlan`] borrows only bytes that
//! exist in the image, and every segment has `data.len() <= mem_size` and
//! lies below 4 GiB, as does the entry point.

use super::le::{bytes_at, u16_at, u32_at};
use super::{LoadError, LoadPlan, Segment};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const CLASS_32: u8 = 1;
const CLASS_64: u8 = 2;
const DATA_LITTLE_ENDIAN: u8 = 1;
const TYPE_EXECUTABLE: u16 = 2;
const MACHINE_I386: u16 = 3;
const MACHINE_X86_64: u16 = 62;
const HEADER_LEN: usize = 52;
const HEADER64_LEN: usize = 64;
const PROGRAM_HEADER_LEN: u16 = 32;
const PROGRAM_HEADER64_LEN: u16 = 56;
/// Physical addresses a Multiboot kernel may use: below 4 GiB.
const FOUR_GIB: u64 = 1 << 32;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

/// Whether `image` starts with the ELF signature.
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(&ELF_MAGIC)
}

/// Whether `image` is an ELF64 file (by its class byte alone).
pub fn is_elf64(image: &[u8]) -> bool {
    is_elf(image) && image.get(4) == Some(&CLASS_64)
}

/// Checks that `image` is a little-endian ELF32 i386 or ELF64 x86-64
/// executable.
pub fn check_identity(image: &[u8]) -> Result<(), LoadError> {
    if !is_elf(image) {
        return Err(LoadError::NotElf);
    }
    let truncated = || truncated_header(image);
    let (header_len, wanted_machine) = match *image.get(4).ok_or_else(truncated)? {
        CLASS_32 => (HEADER_LEN, MACHINE_I386),
        CLASS_64 => (HEADER64_LEN, MACHINE_X86_64),
        other => return Err(LoadError::UnknownElfClass(other)),
    };
    match *image.get(5).ok_or_else(truncated)? {
        DATA_LITTLE_ENDIAN => {}
        other => return Err(LoadError::NotLittleEndian(other)),
    }
    if image.len() < header_len {
        return Err(truncated());
    }
    let machine = u16_at(image, 18).ok_or_else(truncated)?;
    if machine != wanted_machine {
        return Err(if wanted_machine == MACHINE_I386 {
            LoadError::NotI386 { machine }
        } else {
            LoadError::Elf64NotX86_64 { machine }
        });
    }
    let e_type = u16_at(image, 16).ok_or_else(truncated)?;
    if e_type != TYPE_EXECUTABLE {
        return Err(LoadError::NotExecutable { e_type });
    }
    Ok(())
}

/// The segments and entry point of an ELF32 i386 or ELF64 x86-64
/// executable.
pub fn plan(image: &[u8]) -> Result<LoadPlan<'_>, LoadError> {
    check_identity(image)?;
    let table = if is_elf64(image) {
        ProgramHeaderTable::of_elf64(image)?
    } else {
        ProgramHeaderTable::of_elf32(image)?
    };
    let headers = table.headers(image)?;
    let segments = loadable_segments(image, &headers)?;
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegments);
    }
    let entry = physical_entry(table.virtual_entry, &headers);
    let entry = u32::try_from(entry).map_err(|_| LoadError::EntryAboveFourGib { entry })?;
    Ok(LoadPlan { segments, entry })
}

fn truncated_header(image: &[u8]) -> LoadError {
    let needed = if is_elf64(image) {
        HEADER64_LEN
    } else {
        HEADER_LEN
    };
    LoadError::Truncated {
        what: "the ELF header".into(),
        needed: needed as u64,
        len: image.len(),
    }
}

/// The u64 at `offset` of the image, or the truncated-header error.
fn field64(image: &[u8], offset: usize) -> Result<u64, LoadError> {
    let low = u32_at(image, offset).ok_or_else(|| truncated_header(image))?;
    let high = u32_at(image, offset + 4).ok_or_else(|| truncated_header(image))?;
    Ok(u64::from(high) << 32 | u64::from(low))
}

struct ProgramHeaderTable {
    /// `e_entry`.
    virtual_entry: u64,
    offset: u64,
    entry_len: u16,
    count: u16,
    /// ELF64 layout (56-byte headers with 64-bit fields).
    wide: bool,
}

/// One program header, as read from the file (ELF32 fields widened).
struct ProgramHeader {
    index: usize,
    kind: u32,
    file_offset: u64,
    vaddr: u64,
    paddr: u64,
    file_size: u64,
    mem_size: u64,
    flags: u32,
}

impl ProgramHeaderTable {
    fn of_elf32(image: &[u8]) -> Result<ProgramHeaderTable, LoadError> {
        let field32 = |offset| u32_at(image, offset).ok_or_else(|| truncated_header(image));
        let field16 = |offset| u16_at(image, offset).ok_or_else(|| truncated_header(image));
        Ok(ProgramHeaderTable {
            virtual_entry: u64::from(field32(24)?),
            offset: u64::from(field32(28)?),
            entry_len: field16(42)?,
            count: field16(44)?,
            wide: false,
        })
    }

    fn of_elf64(image: &[u8]) -> Result<ProgramHeaderTable, LoadError> {
        let field16 = |offset| u16_at(image, offset).ok_or_else(|| truncated_header(image));
        Ok(ProgramHeaderTable {
            virtual_entry: field64(image, 24)?,
            offset: field64(image, 32)?,
            entry_len: field16(54)?,
            count: field16(56)?,
            wide: true,
        })
    }

    fn headers(&self, image: &[u8]) -> Result<Vec<ProgramHeader>, LoadError> {
        if self.count == 0 {
            return Err(LoadError::NoLoadableSegments);
        }
        let (needed, class) = if self.wide {
            (PROGRAM_HEADER64_LEN, "ELF64")
        } else {
            (PROGRAM_HEADER_LEN, "ELF32")
        };
        if self.entry_len < needed {
            return Err(LoadError::MalformedElf(format!(
                "its program headers are {} bytes long, but an {class} program header takes \
                 {needed}",
                self.entry_len
            )));
        }
        let table_end = self
            .offset
            .saturating_add(u64::from(self.entry_len) * u64::from(self.count));
        if table_end > image.len() as u64 {
            return Err(LoadError::Truncated {
                what: "the program header table".into(),
                needed: table_end,
                len: image.len(),
            });
        }
        (0..usize::from(self.count))
            .map(|index| self.header(image, index))
            .collect()
    }

    fn header(&self, image: &[u8], index: usize) -> Result<ProgramHeader, LoadError> {
        // The table was checked to lie inside the image, so these reads
        // succeed; a failure would still be reported, not panic.
        let base = self.offset as usize + index * usize::from(self.entry_len);
        let field = |offset: usize| {
            u32_at(image, base + offset).ok_or_else(|| LoadError::Truncated {
                what: format!("program header {index}"),
                needed: (base + offset + 4) as u64,
                len: image.len(),
            })
        };
        let wide = |offset: usize| -> Result<u64, LoadError> {
            Ok(u64::from(field(offset + 4)?) << 32 | u64::from(field(offset)?))
        };
        if self.wide {
            return Ok(ProgramHeader {
                index,
                kind: field(0)?,
                flags: field(4)?,
                file_offset: wide(8)?,
                vaddr: wide(16)?,
                paddr: wide(24)?,
                file_size: wide(32)?,
                mem_size: wide(40)?,
            });
        }
        Ok(ProgramHeader {
            index,
            kind: field(0)?,
            file_offset: u64::from(field(4)?),
            vaddr: u64::from(field(8)?),
            paddr: u64::from(field(12)?),
            file_size: u64::from(field(16)?),
            mem_size: u64::from(field(20)?),
            flags: field(24)?,
        })
    }
}

fn loadable_segments<'a>(
    image: &'a [u8],
    headers: &[ProgramHeader],
) -> Result<Vec<Segment<'a>>, LoadError> {
    headers
        .iter()
        .filter(|h| h.kind == PT_LOAD && h.mem_size != 0)
        .map(|h| segment(image, h))
        .collect()
}

fn segment<'a>(image: &'a [u8], header: &ProgramHeader) -> Result<Segment<'a>, LoadError> {
    if header.file_size > header.mem_size {
        return Err(LoadError::SegmentFileLargerThanMemory {
            index: header.index,
            file_size: header.file_size,
            mem_size: header.mem_size,
        });
    }
    let end = header.paddr.checked_add(header.mem_size);
    let (Ok(paddr), Ok(mem_size), true) = (
        u32::try_from(header.paddr),
        u32::try_from(header.mem_size),
        end.is_some_and(|end| end <= FOUR_GIB),
    ) else {
        return Err(LoadError::SegmentAboveFourGib {
            index: header.index,
            paddr: header.paddr,
            mem_size: header.mem_size,
        });
    };
    let offset = header.file_offset;
    let size = header.file_size;
    let data = bytes_at(image, offset, size).ok_or_else(|| LoadError::Truncated {
        what: format!("the data of program header {}", header.index),
        needed: offset + size,
        len: image.len(),
    })?;
    Ok(Segment {
        paddr,
        data,
        mem_size,
    })
}

/// `e_entry` is a virtual address; when an executable segment is linked at
/// a virtual address other than its physical one and holds the entry, the
/// entry is moved to the physical copy (what QEMU's ELF loader does).
fn physical_entry(virtual_entry: u64, headers: &[ProgramHeader]) -> u64 {
    headers
        .iter()
        .filter(|h| h.kind == PT_LOAD && h.flags & PF_X != 0 && h.vaddr != h.paddr)
        .find(|h| virtual_entry >= h.vaddr && virtual_entry - h.vaddr < h.file_size)
        .map_or(virtual_entry, |h| {
            h.paddr.wrapping_add(virtual_entry - h.vaddr)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::testimage::{ElfBuilder, TestSegment};

    fn kernel() -> ElfBuilder {
        ElfBuilder::new(0x10_0000).segment(TestSegment::code(0x10_0000, vec![0x90; 16]))
    }

    #[test]
    fn text_file_is_not_elf() {
        assert!(matches!(
            check_identity(b"hello, world\n"),
            Err(LoadError::NotElf)
        ));
        assert!(matches!(check_identity(b""), Err(LoadError::NotElf)));
    }

    #[test]
    fn elf64_class_with_the_elf32_layout_is_malformed() {
        let image = kernel().class(CLASS_64).machine(MACHINE_X86_64).build();
        assert!(plan(&image).is_err());
    }

    #[test]
    fn invalid_class_is_refused() {
        let image = kernel().class(7).build();
        assert!(matches!(plan(&image), Err(LoadError::UnknownElfClass(7))));
    }

    #[test]
    fn big_endian_image_is_refused() {
        let image = kernel().byte_order(2).build();
        assert!(matches!(plan(&image), Err(LoadError::NotLittleEndian(2))));
    }

    #[test]
    fn foreign_machine_is_refused() {
        let image = kernel().machine(62).build();
        assert!(matches!(
            plan(&image),
            Err(LoadError::NotI386 { machine: 62 })
        ));
    }

    #[test]
    fn relocatable_object_is_refused() {
        let image = kernel().elf_type(1).build();
        assert!(matches!(
            plan(&image),
            Err(LoadError::NotExecutable { e_type: 1 })
        ));
    }

    #[test]
    fn image_cut_inside_the_elf_header_is_truncated() {
        let image = kernel().build();
        assert!(matches!(
            plan(&image[..30]),
            Err(LoadError::Truncated { .. })
        ));
        assert!(matches!(
            plan(&image[..5]),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn program_header_table_past_the_end_is_truncated() {
        let mut image = kernel().build();
        image[28..32].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        match plan(&image) {
            Err(LoadError::Truncated { what, needed, .. }) => {
                assert_eq!(what, "the program header table");
                assert_eq!(needed, 0xffff_fff0 + 32);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_program_header_entries_are_malformed() {
        let mut image = kernel().build();
        image[42..44].copy_from_slice(&16u16.to_le_bytes());
        assert!(matches!(plan(&image), Err(LoadError::MalformedElf(_))));
    }

    #[test]
    fn zero_program_headers_mean_nothing_to_load() {
        let mut image = kernel().build();
        image[44..46].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(plan(&image), Err(LoadError::NoLoadableSegments)));
    }

    fn kernel64() -> Vec<u8> {
        kernel().elf64().build()
    }

    #[test]
    fn elf64_kernel_plans_its_segments_and_entry() {
        let image = kernel64();
        assert!(is_elf64(&image) && !is_elf64(&kernel().build()));
        let plan = plan(&image).unwrap();
        assert_eq!(plan.entry, 0x10_0000);
        assert_eq!(plan.segments[0].paddr, 0x10_0000);
        assert_eq!(plan.segments[0].data, &[0x90; 16][..]);
    }

    #[test]
    fn elf64_higher_half_entry_moves_to_its_physical_copy() {
        let mut image = kernel64();
        let high = 0xffff_ffff_8010_0000u64.to_le_bytes();
        image[24..32].copy_from_slice(&high); // e_entry
        image[64 + 16..64 + 24].copy_from_slice(&high); // p_vaddr
        assert_eq!(plan(&image).unwrap().entry, 0x10_0000);
    }

    #[test]
    fn elf64_segment_or_entry_at_4_gib_or_above_is_refused() {
        let mut image = kernel64();
        image[64 + 28..64 + 32].copy_from_slice(&1u32.to_le_bytes()); // p_paddr high
        assert!(matches!(
            plan(&image),
            Err(LoadError::SegmentAboveFourGib { index: 0, .. })
        ));
        let mut image = kernel64();
        image[28..32].copy_from_slice(&1u32.to_le_bytes()); // e_entry high
        assert!(matches!(
            plan(&image),
            Err(LoadError::EntryAboveFourGib {
                entry: 0x1_0010_0000
            })
        ));
    }

    #[test]
    fn segment_data_past_the_end_is_truncated() {
        let image = kernel().build();
        let cut = &image[..image.len() - 4];
        assert!(matches!(plan(cut), Err(LoadError::Truncated { .. })));
    }

    #[test]
    fn segment_with_huge_file_offset_is_truncated_not_a_panic() {
        let mut image = kernel().build();
        let ph = 52;
        image[ph + 4..ph + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(plan(&image), Err(LoadError::Truncated { .. })));
    }

    #[test]
    fn file_size_above_memory_size_is_refused() {
        let image = ElfBuilder::new(0x10_0000)
            .segment(TestSegment::code(0x10_0000, vec![0x90; 16]).mem_size(8))
            .build();
        assert!(matches!(
            plan(&image),
            Err(LoadError::SegmentFileLargerThanMemory {
                index: 0,
                file_size: 16,
                mem_size: 8
            })
        ));
    }

    #[test]
    fn empty_and_non_load_segments_are_skipped() {
        let image = kernel()
            .segment(TestSegment::code(0x20_0000, vec![]))
            .segment(TestSegment::code(0x30_0000, vec![1, 2]).kind(4))
            .build();
        let plan = plan(&image).unwrap();
        assert_eq!(plan.segments.len(), 1);
        assert_eq!(plan.segments[0].paddr, 0x10_0000);
    }

    #[test]
    fn bss_is_memory_size_beyond_file_size() {
        let image = ElfBuilder::new(0x10_0000)
            .segment(TestSegment::code(0x10_0000, vec![7; 10]).mem_size(0x1000))
            .build();
        let plan = plan(&image).unwrap();
        assert_eq!(plan.segments[0].data, &[7; 10]);
        assert_eq!(plan.segments[0].mem_size, 0x1000);
    }

    #[test]
    fn higher_half_entry_is_moved_to_its_physical_address() {
        let image = ElfBuilder::new(0xc010_0004)
            .segment(TestSegment::code(0x10_0000, vec![0x90; 16]).vaddr(0xc010_0000))
            .build();
        assert_eq!(plan(&image).unwrap().entry, 0x10_0004);
    }

    #[test]
    fn entry_in_a_non_executable_segment_is_not_translated() {
        let image = ElfBuilder::new(0xc010_0004)
            .segment(
                TestSegment::code(0x10_0000, vec![0x90; 16])
                    .vaddr(0xc010_0000)
                    .flags(4),
            )
            .build();
        assert_eq!(plan(&image).unwrap().entry, 0xc010_0004);
    }
}
