//! The Multiboot information structure and what it points at, all placed in
//! one contiguous "information area" in low memory.
//!
//! Layout, relative to the area's base (by default `0x9000`: the addresses
//! QEMU's `-kernel` uses for the map and the structure; the strings follow
//! the structure):
//!
//! | offset             | contents                                        |
//! |--------------------|-------------------------------------------------|
//! | `+0x000`           | memory map, 24-byte entries (`size` = 20 first) |
//! | `+0x500` (EBX)     | the 88-byte Multiboot information structure     |
//! | `+0x558`           | the command line, NUL-terminated                |
//! | after it           | the boot loader name `"nestmon"`, NUL-terminated|
//!
//! Where the area goes ([`InfoLayout::place`]): at [`MMAP_ADDR`] (QEMU's
//! address) when no loaded range overlaps it there, else at the lowest
//! 4 KiB boundary from [`AREA_SEARCH_START`] where it overlaps none. The
//! module list and the modules' strings are not part of the area: they
//! follow the modules, above the kernel (see `modules.rs`).
//!
//! Invariants: an area ends at or below [`LOW_MEMORY_END`] (the start of
//! the reserved EBDA) and starts at or above [`AREA_SEARCH_START`]; its
//! length depends only on the command line, whose longest accepted length
//! ([`InfoLayout::max_cmdline_len`]) is what fits at the default base; the
//! memory map always fits below the structure.

use super::LoadError;
use shadowmmu::{GuestPhys, GuestRam};
use std::ops::Range;

/// Guest-physical address of the memory map (the area's base) when the
/// area is at its default place, QEMU's address.
pub const MMAP_ADDR: u32 = 0x9000;
/// Offset of the information structure from the area's base.
pub const INFO_OFFSET: u32 = 0x500;
/// Guest-physical address of the information structure (the value of EBX)
/// when the area is at its default place.
pub const INFO_ADDR: u32 = MMAP_ADDR + INFO_OFFSET;
/// Size of the Multiboot v1 information structure.
pub const INFO_SIZE: u32 = 88;
/// Where the strings start when the area is at its default place.
pub const STRINGS_ADDR: u32 = INFO_ADDR + INFO_SIZE;
/// The lowest base the area may move to (page 0 holds the real-mode
/// interrupt table and the BIOS data area).
pub const AREA_SEARCH_START: u32 = 0x1000;
/// The boundary the bases tried after the default place are aligned to.
pub const AREA_ALIGN: u32 = 0x1000;
/// End of usable low memory: 639 KiB, where the reserved EBDA begins.
pub const LOW_MEMORY_END: u32 = 0x9_fc00;
/// The value of `mem_lower`, in KiB.
pub const MEM_LOWER_KIB: u32 = 640;
/// The name given in `boot_loader_name`.
pub const BOOT_LOADER_NAME: &str = "nestmon";
/// `boot_device`: the first BIOS hard disk, no partition (QEMU's value).
pub const BOOT_DEVICE: u32 = 0x8000_ffff;

/// Info flag: `mem_lower` and `mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Info flag: `boot_device` is valid.
pub const INFO_BOOT_DEVICE: u32 = 1 << 1;
/// Info flag: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Info flag: `mods_count` and `mods_addr` are valid.
pub const INFO_MODULES: u32 = 1 << 3;
/// Info flag: `mmap_length` and `mmap_addr` are valid.
pub const INFO_MEMORY_MAP: u32 = 1 << 6;
/// Info flag: `boot_loader_name` is valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;
/// The flags nestmon sets (the same set QEMU sets).
pub const INFO_FLAGS: u32 = INFO_MEMORY
    | INFO_BOOT_DEVICE
    | INFO_CMDLINE
    | INFO_MODULES
    | INFO_MEMORY_MAP
    | INFO_BOOT_LOADER_NAME;

/// Memory map entry type: RAM the kernel may use.
pub const MEMORY_AVAILABLE: u32 = 1;
/// Memory map entry type: reserved.
pub const MEMORY_RESERVED: u32 = 2;
/// Bytes of one memory map entry, counting its leading `size` field.
pub const MMAP_ENTRY_LEN: u32 = 24;
/// The value of each entry's `size` field (the bytes after it).
const MMAP_ENTRY_SIZE_FIELD: u32 = 20;
const ONE_MIB: u64 = 1 << 20;

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// [`MEMORY_AVAILABLE`] or [`MEMORY_RESERVED`].
    pub kind: u32,
}

/// The memory map for `ram_size` bytes of guest RAM: low RAM below the EBDA,
/// the EBDA and BIOS area reserved, and RAM from 1 MiB to the end.
pub fn memory_map(ram_size: u64) -> Vec<MemoryRegion> {
    let low_end = ram_size.min(u64::from(LOW_MEMORY_END));
    let candidates = [
        MemoryRegion {
            base: 0,
            len: low_end,
            kind: MEMORY_AVAILABLE,
        },
        MemoryRegion {
            base: u64::from(LOW_MEMORY_END),
            len: 0xa_0000 - u64::from(LOW_MEMORY_END),
            kind: MEMORY_RESERVED,
        },
        MemoryRegion {
            base: 0xf_0000,
            len: 0x1_0000,
            kind: MEMORY_RESERVED,
        },
        MemoryRegion {
            base: ONE_MIB,
            len: ram_size.saturating_sub(ONE_MIB),
            kind: MEMORY_AVAILABLE,
        },
    ];
    candidates.into_iter().filter(|r| r.len != 0).collect()
}

/// Where each part of the information area goes for a given command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoLayout {
    /// The first byte of the area: the memory map.
    pub base: u32,
    /// Address of the command line.
    pub cmdline_addr: u32,
    /// Address of the boot loader name.
    pub loader_name_addr: u32,
    /// One past the last byte of the area.
    pub end: u32,
}

impl InfoLayout {
    /// Lays out the area at its default place ([`MMAP_ADDR`]) for a command
    /// line of `cmdline_len` bytes (without NUL).
    pub fn new(cmdline_len: usize) -> Result<InfoLayout, LoadError> {
        let max = Self::max_cmdline_len();
        if cmdline_len > max {
            return Err(LoadError::CommandLineTooLong {
                len: cmdline_len,
                max,
            });
        }
        // Cannot overflow: cmdline_len is at most the space below LOW_MEMORY_END.
        let loader_name_addr = STRINGS_ADDR + cmdline_len as u32 + 1;
        let end = loader_name_addr + BOOT_LOADER_NAME.len() as u32 + 1;
        Ok(InfoLayout {
            base: MMAP_ADDR,
            cmdline_addr: STRINGS_ADDR,
            loader_name_addr,
            end,
        })
    }

    /// The longest command line that fits.
    pub fn max_cmdline_len() -> usize {
        (LOW_MEMORY_END - STRINGS_ADDR) as usize - BOOT_LOADER_NAME.len() - 2
    }

    /// The same area moved to start at `base`, if it then fits between
    /// [`AREA_SEARCH_START`] and [`LOW_MEMORY_END`].
    pub fn at(&self, base: u32) -> Option<InfoLayout> {
        let len = self.len();
        let end = base.checked_add(len).filter(|&end| end <= LOW_MEMORY_END)?;
        if base < AREA_SEARCH_START {
            return None;
        }
        Some(InfoLayout {
            base,
            cmdline_addr: base + (self.cmdline_addr - self.base),
            loader_name_addr: base + (self.loader_name_addr - self.base),
            end,
        })
    }

    /// The area at its default place if no range of `occupied` overlaps it
    /// there, else at the lowest [`AREA_ALIGN`]-aligned base from
    /// [`AREA_SEARCH_START`] where none does; `None` when no place is left.
    pub fn place(&self, occupied: &[Range<u32>]) -> Option<InfoLayout> {
        let clear = |layout: &InfoLayout| {
            occupied
                .iter()
                .all(|r| r.start >= layout.end || r.end <= layout.base || r.is_empty())
        };
        std::iter::once(MMAP_ADDR)
            .chain((AREA_SEARCH_START..LOW_MEMORY_END).step_by(AREA_ALIGN as usize))
            .filter_map(|base| self.at(base))
            .find(clear)
    }

    /// Bytes the area takes.
    pub fn len(&self) -> u32 {
        self.end - self.base
    }

    /// Whether the area is empty (never: it always holds the structure).
    pub fn is_empty(&self) -> bool {
        self.end == self.base
    }

    /// Address of the memory map.
    pub fn mmap_addr(&self) -> u32 {
        self.base
    }

    /// Address of the information structure (the value of EBX).
    pub fn info_addr(&self) -> u32 {
        self.base + INFO_OFFSET
    }

    /// The guest-physical range the area occupies.
    pub fn range(&self) -> Range<u32> {
        self.base..self.end
    }
}

/// The module list the structure points at (`mods_count`, `mods_addr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModuleList {
    /// Number of modules.
    pub count: u32,
    /// Guest-physical address of the first 16-byte module entry (0 when none).
    pub addr: u32,
}

/// Writes the memory map, the information structure and the strings.
pub fn write(
    ram: &GuestRam,
    layout: &InfoLayout,
    cmdline: &[u8],
    modules: ModuleList,
) -> Result<(), LoadError> {
    let map = memory_map(ram.size() as u64);
    ram.write(GuestPhys(layout.mmap_addr()), &encode_memory_map(&map))?;
    ram.write(
        GuestPhys(layout.info_addr()),
        &encode_info(ram.size() as u64, map.len(), layout, modules),
    )?;
    ram.write(GuestPhys(layout.cmdline_addr), &nul_terminated(cmdline))?;
    ram.write(
        GuestPhys(layout.loader_name_addr),
        &nul_terminated(BOOT_LOADER_NAME.as_bytes()),
    )?;
    Ok(())
}

fn nul_terminated(text: &[u8]) -> Vec<u8> {
    let mut bytes = text.to_vec();
    bytes.push(0);
    bytes
}

fn encode_memory_map(map: &[MemoryRegion]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(map.len() * MMAP_ENTRY_LEN as usize);
    for region in map {
        bytes.extend_from_slice(&MMAP_ENTRY_SIZE_FIELD.to_le_bytes());
        bytes.extend_from_slice(&region.base.to_le_bytes());
        bytes.extend_from_slice(&region.len.to_le_bytes());
        bytes.extend_from_slice(&region.kind.to_le_bytes());
    }
    bytes
}

/// The 88-byte structure; fields not listed stay zero.
fn encode_info(
    ram_size: u64,
    map_entries: usize,
    layout: &InfoLayout,
    modules: ModuleList,
) -> [u8; INFO_SIZE as usize] {
    let mem_upper_kib = u32::try_from(ram_size.saturating_sub(ONE_MIB) / 1024).unwrap_or(u32::MAX);
    let fields: [(usize, u32); 10] = [
        (0, INFO_FLAGS),
        (4, MEM_LOWER_KIB),
        (8, mem_upper_kib),
        (12, BOOT_DEVICE),
        (16, layout.cmdline_addr),
        (20, modules.count),
        (24, modules.addr),
        (44, map_entries as u32 * MMAP_ENTRY_LEN),
        (48, layout.mmap_addr()),
        (64, layout.loader_name_addr),
    ];
    let mut info = [0u8; INFO_SIZE as usize];
    for (offset, value) in fields {
        info[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_has_the_four_pc_regions() {
        let map = memory_map(32 << 20);
        let expected = [
            (0, 0x9_fc00, MEMORY_AVAILABLE),
            (0x9_fc00, 0x400, MEMORY_RESERVED),
            (0xf_0000, 0x1_0000, MEMORY_RESERVED),
            (0x10_0000, (31 << 20), MEMORY_AVAILABLE),
        ];
        let got: Vec<_> = map.iter().map(|r| (r.base, r.len, r.kind)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn memory_map_of_one_mib_has_no_high_region() {
        let map = memory_map(1 << 20);
        assert_eq!(map.len(), 3);
        assert!(map.iter().all(|r| r.base < 1 << 20));
    }

    #[test]
    fn memory_map_always_fits_below_the_structure() {
        let most = memory_map(3584 << 20).len() as u32;
        assert!(MMAP_ADDR + most * MMAP_ENTRY_LEN <= INFO_ADDR);
    }

    #[test]
    fn layout_places_strings_after_the_structure() {
        let layout = InfoLayout::new(10).unwrap();
        assert_eq!(layout.base, 0x9000);
        assert_eq!(layout.cmdline_addr, 0x9558);
        assert_eq!(layout.loader_name_addr, 0x9558 + 11);
        assert_eq!(layout.end, 0x9558 + 11 + 8);
        assert_eq!(layout.range(), 0x9000..layout.end);
    }

    #[test]
    fn longest_command_line_ends_at_the_ebda() {
        let max = InfoLayout::max_cmdline_len();
        assert_eq!(InfoLayout::new(max).unwrap().end, LOW_MEMORY_END);
        assert!(matches!(
            InfoLayout::new(max + 1),
            Err(LoadError::CommandLineTooLong { .. })
        ));
    }

    #[test]
    fn structure_fields_are_at_their_specified_offsets() {
        let layout = InfoLayout::new(4).unwrap();
        let info = encode_info(64 << 20, 4, &layout, ModuleList::default());
        let word = |o: usize| u32::from_le_bytes(info[o..o + 4].try_into().unwrap());
        assert_eq!(word(0), 0x24f);
        assert_eq!(word(4), 640);
        assert_eq!(word(8), 63 * 1024);
        assert_eq!(word(12), 0x8000_ffff);
        assert_eq!(word(16), 0x9558);
        assert_eq!(word(20), 0);
        assert_eq!(word(24), 0);
        assert_eq!(word(44), 96);
        assert_eq!(word(48), 0x9000);
        assert_eq!(word(64), 0x9558 + 5);
        let untouched = [28, 32, 36, 40, 52, 56, 60, 68, 72, 76, 80, 84];
        assert!(untouched.iter().all(|&o| word(o) == 0));
    }

    #[test]
    fn module_list_is_given_by_count_and_address() {
        let layout = InfoLayout::new(4).unwrap();
        let list = ModuleList {
            count: 2,
            addr: 0x20_3000,
        };
        let info = encode_info(64 << 20, 4, &layout, list);
        let word = |o: usize| u32::from_le_bytes(info[o..o + 4].try_into().unwrap());
        assert_eq!((word(20), word(24)), (2, 0x20_3000));
    }

    #[test]
    fn area_stays_at_qemus_address_when_it_is_free() {
        let layout = InfoLayout::new(10).unwrap();
        let kernel = 0x10_0000..0x10_8000;
        assert_eq!(layout.place(&[kernel, 0x1000..0x9000]), Some(layout));
    }

    #[test]
    fn area_moves_to_the_lowest_free_page_when_a_segment_covers_qemus_address() {
        let layout = InfoLayout::new(10).unwrap();
        let placed = layout
            .place(std::slice::from_ref(&(0x8000..0xa000)))
            .unwrap();
        assert_eq!(placed.range(), 0x1000..0x1000 + layout.len());
        assert_eq!(placed.info_addr(), 0x1500);
        assert_eq!(placed.cmdline_addr, 0x1558);
        let placed = layout.place(&[0x1000..0x2001, 0x9000..0x9001]).unwrap();
        assert_eq!(placed.base, 0x3000);
    }

    #[test]
    fn area_that_fits_nowhere_below_the_ebda_has_no_place() {
        let layout = InfoLayout::new(10).unwrap();
        assert_eq!(
            layout.place(std::slice::from_ref(&(0x1000..0x9_fc00))),
            None
        );
        let longest = InfoLayout::new(InfoLayout::max_cmdline_len()).unwrap();
        assert_eq!(longest.place(std::slice::from_ref(&(0x9000..0x9001))), None);
        assert_eq!(
            longest.place(std::slice::from_ref(&(0x8000..0x9000))),
            Some(longest)
        );
    }

    #[test]
    fn memory_map_entries_are_encoded_with_size_first() {
        let bytes = encode_memory_map(&[MemoryRegion {
            base: 0x10_0000,
            len: 0x20_0000,
            kind: MEMORY_AVAILABLE,
        }]);
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[0..4], &20u32.to_le_bytes());
        assert_eq!(&bytes[4..12], &0x10_0000u64.to_le_bytes());
        assert_eq!(&bytes[12..20], &0x20_0000u64.to_le_bytes());
        assert_eq!(&bytes[20..24], &1u32.to_le_bytes());
    }
}
