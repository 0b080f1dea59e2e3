//! The kernel loader: puts a 32-bit kernel, and the files given with it,
//! into guest RAM the way `qemu-system-i386 -kernel K -initrd F` does, and
//! says how to enter it. [`load_kernel`] tells the formats apart by content:
//!
//! - a Linux bzImage (the "HdrS" signature at offset 0x202, looked at first,
//!   as QEMU does) is loaded by the 32-bit boot protocol ([`linux`]), with
//!   at most one initrd;
//! - anything else must be a Multiboot v1 kernel:
//!   - ELF32 little-endian i386 executables, and ELF64 x86-64 ones (as
//!     GRUB loads them: below 4 GiB, entered in 32-bit protected mode;
//!     their switch to long mode needs hardware execution): every PT_LOAD
//!     segment with a non-zero memory size is copied to its `p_paddr` and
//!     zero-filled to `p_memsz`;
//!   - any image whose Multiboot header sets flag bit 16: the header's
//!     address fields say which file range goes where (this wins over ELF,
//!     as in QEMU);
//!
//!   with the files as Multiboot modules above the kernel ([`modules`]).
//!
//! The Multiboot information structure, its memory map and its strings are
//! written into one area of low memory described in [`info`], placed where
//! the kernel's segments are not.
//!
//! Invariants:
//! - Every check happens before the first byte is written: a refused image
//!   leaves guest RAM untouched.
//! - Loaded segments lie wholly inside guest RAM, do not overlap each other,
//!   and do not overlap the information area or the modules.
//! - The entry point lies inside a loaded segment.
//! - No header field is trusted: offsets and sizes are checked in `u64`
//!   against the image, and malformed input yields a [`LoadError`], never a
//!   panic.

mod elf;
mod error;
mod flat;
mod header;
pub mod info;
mod le;
pub mod linux;
pub mod modules;
#[cfg(test)]
mod testimage;

pub use elf::is_elf64;
pub use error::LoadError;
pub use header::{HEADER_MAGIC, SEARCH_LIMIT};
pub use linux::{LinuxEntry, LoadedLinux};
pub use modules::{read_boot_file, BootFile};

use crate::input::{read_regular_file, InputError};
use header::{find_header, HeaderSearch};
use shadowmmu::{GuestPhys, GuestRam};
use std::ops::Range;
use std::path::Path;

/// The value EAX holds when a Multiboot kernel is entered.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// The registers that differ from reset when entering a Multiboot kernel
/// (in 32-bit protected mode with flat segments, paging and interrupts off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    /// The kernel's (physical) entry point.
    pub eip: u32,
    /// [`BOOTLOADER_MAGIC`].
    pub eax: u32,
    /// Guest-physical address of the Multiboot information structure.
    pub ebx: u32,
}

/// Everything [`load_multiboot_kernel`] placed in guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// How to enter the kernel.
    pub boot: BootState,
    /// The guest-physical ranges of the loaded segments, in ascending order.
    pub segments: Vec<Range<u32>>,
    /// The guest-physical range of the information area (map, structure, strings).
    pub info_area: Range<u32>,
    /// The modules, in the order given.
    pub modules: Vec<Range<u32>>,
    /// The module list and the modules' strings, when there are modules.
    pub module_list: Option<Range<u32>>,
}

/// A loaded kernel of either format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadedGuest {
    /// A Multiboot kernel.
    Multiboot(LoadedKernel),
    /// A Linux bzImage.
    Linux(LoadedLinux),
}

/// Loads `image`, a Linux bzImage or a Multiboot kernel (told apart by
/// content), with `files` (`--initrd`: Linux's initrd, or Multiboot
/// modules) into `ram`.
///
/// A Multiboot kernel's command line is `"<image_name> <append>"`, as QEMU
/// builds it; Linux's is `append` alone.
pub fn load_kernel(
    ram: &GuestRam,
    image: &[u8],
    image_name: &str,
    append: &str,
    files: &[BootFile],
) -> Result<LoadedGuest, LoadError> {
    if linux::boot_protocol(image).is_some() {
        let initrd = match files {
            [] => None,
            [file] if file.args.is_none() => Some(file),
            _ => {
                return Err(LoadError::LinuxInitrdNotOneFile {
                    count: files.len(),
                    has_args: files.iter().any(|f| f.args.is_some()),
                })
            }
        };
        return linux::load(ram, image, append, initrd).map(LoadedGuest::Linux);
    }
    load_multiboot_with_modules(ram, image, image_name, append, files).map(LoadedGuest::Multiboot)
}

/// One range of the image to place in guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment<'a> {
    /// Guest-physical address of the first byte.
    paddr: u32,
    /// Bytes copied from the image.
    data: &'a [u8],
    /// Bytes occupied in memory; those past `data` are zeroed.
    mem_size: u32,
}

/// What an image asks to be loaded, before it is checked against the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LoadPlan<'a> {
    segments: Vec<Segment<'a>>,
    entry: u32,
}

/// The largest kernel file nestmon reads: far more than any Multiboot
/// kernel, and not tied to the guest's RAM, since a file may carry debug
/// sections that are never loaded.
pub const MAX_KERNEL_FILE_BYTES: u64 = 256 << 20;

/// Reads a kernel file, with an error that names it. Never blocks and
/// never reads more than [`MAX_KERNEL_FILE_BYTES`] (see
/// [`crate::input::read_regular_file`]); a directory, FIFO, socket or
/// device is refused by name.
pub fn read_kernel(path: &Path) -> Result<Vec<u8>, LoadError> {
    let path_buf = || path.to_path_buf();
    read_regular_file(path, MAX_KERNEL_FILE_BYTES).map_err(|error| match error {
        InputError::Io(source) => LoadError::Unreadable {
            path: path_buf(),
            source,
        },
        InputError::NotRegular(kind) => LoadError::NotAKernelFile {
            path: path_buf(),
            kind,
        },
        InputError::TooLarge { limit } => LoadError::KernelFileTooLarge {
            path: path_buf(),
            limit,
        },
    })
}

/// Loads the Multiboot kernel `image` into `ram` and returns the entry state.
///
/// `image_name` (the kernel's file name as the user gave it) and `append`
/// form the command line `"<image_name> <append>"`, as QEMU builds it.
pub fn load_multiboot(
    ram: &GuestRam,
    image: &[u8],
    image_name: &str,
    append: &str,
) -> Result<BootState, LoadError> {
    load_multiboot_kernel(ram, image, image_name, append).map(|loaded| loaded.boot)
}

/// Like [`load_multiboot`], and also reports where everything was placed.
pub fn load_multiboot_kernel(
    ram: &GuestRam,
    image: &[u8],
    image_name: &str,
    append: &str,
) -> Result<LoadedKernel, LoadError> {
    load_multiboot_with_modules(ram, image, image_name, append, &[])
}

/// Like [`load_multiboot_kernel`], with `modules` placed above the kernel
/// and listed in the information structure.
pub fn load_multiboot_with_modules(
    ram: &GuestRam,
    image: &[u8],
    image_name: &str,
    append: &str,
    modules: &[BootFile],
) -> Result<LoadedKernel, LoadError> {
    let ram_size = ram.size() as u64;
    let plan = plan_load(image)?;
    let cmdline = kernel_command_line(image_name, append)?;
    let layout = info::InfoLayout::new(cmdline.len())?;
    let segments = check_placement(&plan, ram_size)?;
    let layout = layout
        .place(&segments)
        .ok_or(LoadError::NoRoomForInfo { len: layout.len() })?;
    let kernel_end = segments.iter().map(|r| u64::from(r.end)).max().unwrap_or(0);
    let placed_modules = modules::plan(modules, kernel_end, ram_size)?;
    copy_segments(ram, &plan.segments)?;
    let list = placed_modules
        .as_ref()
        .map(modules::ModulesPlan::list)
        .unwrap_or_default();
    info::write(ram, &layout, cmdline.as_bytes(), list)?;
    if let Some(placed) = &placed_modules {
        modules::write(ram, modules, placed)?;
    }
    Ok(LoadedKernel {
        boot: BootState {
            eip: plan.entry,
            eax: BOOTLOADER_MAGIC,
            ebx: layout.info_addr(),
        },
        segments,
        info_area: layout.range(),
        modules: placed_modules
            .as_ref()
            .map(|p| p.modules.clone())
            .unwrap_or_default(),
        module_list: placed_modules.map(|p| p.list),
    })
}

/// Finds the header and decides how the image is laid out.
///
/// Without a valid header, a problem with the ELF identity is reported
/// first: it says more about a wrong file than "no Multiboot header" does.
/// Not so when the header sets flag bit 16: the image is then loaded by the
/// header whatever its format, so the header's own problem is the one.
fn plan_load(image: &[u8]) -> Result<LoadPlan<'_>, LoadError> {
    let header = match find_header(image) {
        HeaderSearch::Found(header) => header,
        HeaderSearch::Refused(why) => {
            if !matches!(why, LoadError::BadChecksum { .. }) && !asks_for_flat_loading(&why) {
                elf::check_identity(image)?;
                if matches!(why, LoadError::NoMultibootHeader) {
                    return Err(LoadError::ProgramNotKernel);
                }
            }
            return Err(why);
        }
    };
    match header.addresses {
        Some(addresses) => flat::plan(image, header.offset, &addresses),
        None => elf::plan(image),
    }
}

/// Whether a refused header set flag bit 16 (load by the header's addresses).
fn asks_for_flat_loading(why: &LoadError) -> bool {
    match why {
        LoadError::HeaderTruncated { .. } => true,
        LoadError::UnsupportedFlags { flags, .. } => flags & header::FLAG_LOAD_ADDRESSES != 0,
        _ => false,
    }
}

/// QEMU's command line: the kernel's name, a space, then the appended text.
fn kernel_command_line(image_name: &str, append: &str) -> Result<String, LoadError> {
    let cmdline = format!("{image_name} {append}");
    if cmdline.contains('\0') {
        return Err(LoadError::CommandLineHasNul);
    }
    Ok(cmdline)
}

/// Checks the plan against RAM; returns the sorted ranges.
fn check_placement(plan: &LoadPlan<'_>, ram_size: u64) -> Result<Vec<Range<u32>>, LoadError> {
    let mut spans: Vec<(u32, u64)> = Vec::with_capacity(plan.segments.len());
    for segment in &plan.segments {
        let (start, end) = (
            segment.paddr,
            u64::from(segment.paddr) + u64::from(segment.mem_size),
        );
        if end > ram_size {
            return Err(LoadError::SegmentOutsideRam {
                start,
                end,
                ram_size,
            });
        }
        spans.push((start, end));
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let ((first_start, first_end), (second_start, second_end)) = (pair[0], pair[1]);
        if u64::from(second_start) < first_end {
            return Err(LoadError::SegmentsOverlap {
                first_start,
                first_end,
                second_start,
                second_end,
            });
        }
    }
    if !spans
        .iter()
        .any(|&(start, end)| plan.entry >= start && u64::from(plan.entry) < end)
    {
        return Err(LoadError::EntryOutsideImage { entry: plan.entry });
    }
    // Every end is at most the RAM size, which fits in u32 (see MAX_GUEST_RAM).
    spans
        .into_iter()
        .map(|(start, end)| {
            u32::try_from(end)
                .map(|end| start..end)
                .map_err(|_| LoadError::SegmentOutsideRam {
                    start,
                    end,
                    ram_size,
                })
        })
        .collect()
}

fn copy_segments(ram: &GuestRam, segments: &[Segment<'_>]) -> Result<(), LoadError> {
    // check_placement proved paddr + mem_size <= RAM size (< 4 GiB), and
    // every plan keeps data.len() <= mem_size: neither sum below can wrap.
    for segment in segments {
        ram.write(GuestPhys(segment.paddr), segment.data)?;
        let bss_start = segment.paddr + segment.data.len() as u32;
        let bss_len = (segment.mem_size as usize) - segment.data.len();
        ram.zero(GuestPhys(bss_start), bss_len)?;
    }
    Ok(())
}

#[cfg(test)]
mod linux_tests;
#[cfg(test)]
mod tests;
