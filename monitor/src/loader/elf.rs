//! ELF32 i386 executables: identity checks and their PT_LOAD segments.
//!
//! Invariants: every header field is read through bounds-checked accessors;
//! offsets and sizes are added in `u64`, so no field value can overflow or
//! index outside the image. A returned [`LoadPlan`] borrows only bytes that
//! exist in the image, and every segment has `data.len() <= mem_size`.

use super::le::{bytes_at, u16_at, u32_at};
use super::{LoadError, LoadPlan, Segment};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const CLASS_32: u8 = 1;
const CLASS_64: u8 = 2;
const DATA_LITTLE_ENDIAN: u8 = 1;
const TYPE_EXECUTABLE: u16 = 2;
const MACHINE_I386: u16 = 3;
const HEADER_LEN: usize = 52;
const PROGRAM_HEADER_LEN: u16 = 32;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

/// Whether `image` starts with the ELF signature.
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(&ELF_MAGIC)
}

/// Checks that `image` is an ELF32 little-endian i386 executable.
pub fn check_identity(image: &[u8]) -> Result<(), LoadError> {
    if !is_elf(image) {
        return Err(LoadError::NotElf);
    }
    let truncated = || truncated_header(image);
    match *image.get(4).ok_or_else(truncated)? {
        CLASS_32 => {}
        CLASS_64 => return Err(LoadError::Elf64),
        other => return Err(LoadError::UnknownElfClass(other)),
    }
    match *image.get(5).ok_or_else(truncated)? {
        DATA_LITTLE_ENDIAN => {}
        other => return Err(LoadError::NotLittleEndian(other)),
    }
    if image.len() < HEADER_LEN {
        return Err(truncated());
    }
    let machine = u16_at(image, 18).ok_or_else(truncated)?;
    if machine != MACHINE_I386 {
        return Err(LoadError::NotI386 { machine });
    }
    let e_type = u16_at(image, 16).ok_or_else(truncated)?;
    if e_type != TYPE_EXECUTABLE {
        return Err(LoadError::NotExecutable { e_type });
    }
    Ok(())
}

/// The segments and entry point of an ELF32 i386 executable.
pub fn plan(image: &[u8]) -> Result<LoadPlan<'_>, LoadError> {
    check_identity(image)?;
    let field32 = |offset| u32_at(image, offset).ok_or_else(|| truncated_header(image));
    let field16 = |offset| u16_at(image, offset).ok_or_else(|| truncated_header(image));
    let virtual_entry = field32(24)?;
    let table = ProgramHeaderTable {
        offset: field32(28)?,
        entry_len: field16(42)?,
        count: field16(44)?,
    };
    let headers = table.headers(image)?;
    let segments = loadable_segments(image, &headers)?;
    if segments.is_empty() {
        return Err(LoadError::NoLoadableSegments);
    }
    Ok(LoadPlan {
        segments,
        entry: physical_entry(virtual_entry, &headers),
    })
}

fn truncated_header(image: &[u8]) -> LoadError {
    LoadError::Truncated {
        what: "the ELF header".into(),
        needed: HEADER_LEN as u64,
        len: image.len(),
    }
}

struct ProgramHeaderTable {
    offset: u32,
    entry_len: u16,
    count: u16,
}

/// One program header, as read from the file.
struct ProgramHeader {
    index: usize,
    kind: u32,
    file_offset: u32,
    vaddr: u32,
    paddr: u32,
    file_size: u32,
    mem_size: u32,
    flags: u32,
}

impl ProgramHeaderTable {
    fn headers(&self, image: &[u8]) -> Result<Vec<ProgramHeader>, LoadError> {
        if self.count == 0 {
            return Err(LoadError::NoLoadableSegments);
        }
        if self.entry_len < PROGRAM_HEADER_LEN {
            return Err(LoadError::MalformedElf(format!(
                "its program headers are {} bytes long, but an ELF32 program header takes {}",
                self.entry_len, PROGRAM_HEADER_LEN
            )));
        }
        let table_end = u64::from(self.offset) + u64::from(self.entry_len) * u64::from(self.count);
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
        Ok(ProgramHeader {
            index,
            kind: field(0)?,
            file_offset: field(4)?,
            vaddr: field(8)?,
            paddr: field(12)?,
            file_size: field(16)?,
            mem_size: field(20)?,
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
    let offset = u64::from(header.file_offset);
    let size = u64::from(header.file_size);
    let data = bytes_at(image, offset, size).ok_or_else(|| LoadError::Truncated {
        what: format!("the data of program header {}", header.index),
        needed: offset + size,
        len: image.len(),
    })?;
    Ok(Segment {
        paddr: header.paddr,
        data,
        mem_size: header.mem_size,
    })
}

/// `e_entry` is a virtual address; when an executable segment is linked at
/// a virtual address other than its physical one and holds the entry, the
/// entry is moved to the physical copy (what QEMU's ELF loader does).
fn physical_entry(virtual_entry: u32, headers: &[ProgramHeader]) -> u32 {
    headers
        .iter()
        .filter(|h| h.kind == PT_LOAD && h.flags & PF_X != 0 && h.vaddr != h.paddr)
        .find(|h| {
            let offset = u64::from(virtual_entry.wrapping_sub(h.vaddr));
            virtual_entry >= h.vaddr && offset < u64::from(h.file_size)
        })
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
    fn elf64_image_is_refused() {
        let image = kernel().class(CLASS_64).build();
        assert!(matches!(plan(&image), Err(LoadError::Elf64)));
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
