//! Linux bzImages, loaded by the 32-bit boot protocol of
//! Documentation/arch/x86/boot.rst: the protected-mode kernel goes to
//! 1 MiB, a `struct boot_params` ("zero page") built from the image's
//! setup header describes the machine, and the kernel is entered in flat
//! 32-bit protected mode with ESI pointing at it. The real-mode setup code
//! is never run (nor loaded).
//!
//! The structures are linux-loader's (`bootparam::boot_params`,
//! `setup_header`, `boot_e820_entry`, generated from Linux's own
//! `bootparam.h`); they are filled here and written through [`GuestRam`].
//!
//! Low-memory layout (the addresses Firecracker uses):
//!
//! | address    | contents                                            |
//! |------------|-----------------------------------------------------|
//! | `0x500`    | the GDT: null, null, `__BOOT_CS` (0x10), `__BOOT_DS` (0x18) |
//! | `0x7000`   | `struct boot_params` (4 KiB), ESI at entry          |
//! | `0x20000`  | the command line, NUL-terminated                    |
//!
//! Invariants:
//! - Every check happens before the first byte is written: a refused image
//!   leaves guest RAM untouched.
//! - Header fields are read only when the image's protocol version defines
//!   them, from a header copy bounded by the file, the header's own length
//!   (`0x202` + the byte at `0x201`) and the room `boot_params` has for it.
//! - The protected-mode kernel, the memory it decompresses into
//!   (`init_size` bytes from its run-time start) and the initrd lie inside
//!   guest RAM, at or above 1 MiB, and do not overlap; the low structures
//!   lie below [`LOW_RAM_END`], clear of each other.

use super::modules::BootFile;
use super::LoadError;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use shadowmmu::{GuestPhys, GuestRam};
use std::ops::Range;
use vm_memory::ByteValued;

/// Offset of the setup header in the image and in `boot_params`.
pub const HEADER_OFFSET: usize = 0x1f1;
/// Offset of the "HdrS" signature.
pub const SIGNATURE_OFFSET: usize = 0x202;
/// The signature of a boot protocol 2.00+ header.
pub const SIGNATURE: &[u8; 4] = b"HdrS";
/// The oldest protocol nestmon boots: 2.04 has the 32-bit `syssize`.
pub const MIN_PROTOCOL: u16 = 0x0204;
/// Where `boot_params` ends its room for the setup header (the start of
/// `edd_mbr_sig_buffer`).
const HEADER_ROOM_END: usize = 0x290;
/// Bytes of a sector, the unit of `setup_sects`.
const SECTOR: u64 = 512;

/// Where the GDT is written.
pub const GDT_ADDR: u32 = 0x500;
/// The GDT's limit: four descriptors.
pub const GDT_LIMIT: u16 = 4 * 8 - 1;
/// Where `boot_params` (the zero page) is written; ESI at entry.
pub const BOOT_PARAMS_ADDR: u32 = 0x7000;
/// Where the command line is written.
pub const CMDLINE_ADDR: u32 = 0x2_0000;
/// ESP at entry: a small stack in free low memory (the protocol leaves
/// ESP undefined; Linux sets up its own).
pub const ENTRY_ESP: u32 = 0x8ff0;
/// Where the protected-mode kernel is loaded when `code32_start` cannot
/// be used (a relocatable kernel), and the lowest address it may use.
pub const KERNEL_ADDR: u32 = 0x10_0000;
/// The end of usable low memory in the e820 map; from here to 1 MiB is
/// reserved, as a PC BIOS leaves it (EBDA, video memory, ROMs).
pub const LOW_RAM_END: u32 = 0x9_f000;
/// `heap_end_ptr`: the end of the setup heap, relative to the real-mode
/// code, minus 0x200 (the sample configuration of boot.rst).
pub const HEAP_END_PTR: u16 = 0xe000 - 0x200;
/// `type_of_loader`: a boot loader without an assigned identifier.
pub const TYPE_OF_LOADER: u8 = 0xff;
/// The code selector at entry.
pub const BOOT_CS: u16 = 0x10;
/// The data selector at entry.
pub const BOOT_DS: u16 = 0x18;
/// `__BOOT_CS`: flat 4 GiB, 32-bit, execute/read, accessed, DPL 0.
pub const CODE_DESCRIPTOR: u64 = 0x00cf_9b00_0000_ffff;
/// `__BOOT_DS`: flat 4 GiB, 32-bit, read/write, accessed, DPL 0.
pub const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;
/// `loadflags` bit 0: the protected-mode code is loaded at 1 MiB (bzImage).
pub const LOADED_HIGH: u8 = 0x01;
/// `loadflags` bit 7: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// The longest command line before protocol 2.06 gave `cmdline_size`.
const OLD_CMDLINE_MAX: u32 = 255;
/// `initrd_addr_max` before protocol 2.03 gave it.
const OLD_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// Initrds start on a page boundary.
const PAGE: u64 = 0x1000;

/// How to enter a loaded Linux kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxEntry {
    /// EIP: the protected-mode kernel's start (`code32_start`).
    pub eip: u32,
    /// ESI: the address of `boot_params`.
    pub esi: u32,
    /// ESP: [`ENTRY_ESP`].
    pub esp: u32,
    /// GDTR base: [`GDT_ADDR`].
    pub gdt_base: u32,
    /// GDTR limit: [`GDT_LIMIT`].
    pub gdt_limit: u16,
    /// CS: [`BOOT_CS`], loaded from [`CODE_DESCRIPTOR`].
    pub code_selector: u16,
    /// The descriptor CS is loaded from.
    pub code_descriptor: u64,
    /// DS, ES, SS (and FS, GS): [`BOOT_DS`], loaded from [`DATA_DESCRIPTOR`].
    pub data_selector: u16,
    /// The descriptor the data segments are loaded from.
    pub data_descriptor: u64,
}

/// Everything the Linux loader placed in guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedLinux {
    /// How to enter the kernel.
    pub entry: LinuxEntry,
    /// The boot protocol version (0x020f for 2.15).
    pub protocol: u16,
    /// The protected-mode kernel as copied from the file.
    pub kernel: Range<u32>,
    /// The memory the kernel needs before it reads the memory map: its
    /// run-time start and `init_size` bytes (the loaded image when the
    /// protocol does not say).
    pub runtime: Range<u32>,
    /// The initrd (`ramdisk_image`, `ramdisk_size`), if one was given.
    pub initrd: Option<Range<u32>>,
    /// The command line's address and length (without NUL).
    pub cmdline: Range<u32>,
}

/// The boot protocol version of a Linux image: the "HdrS" signature at
/// offset 0x202 of its real-mode header, the version at 0x206 (0 when the
/// file ends before it).
pub fn boot_protocol(image: &[u8]) -> Option<u16> {
    (image.get(SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4) == Some(SIGNATURE.as_slice())).then(|| {
        image
            .get(0x206..0x208)
            .map_or(0, |v| u16::from_le_bytes([v[0], v[1]]))
    })
}

/// The checked header of a bzImage, and where its parts are in the file.
struct Image<'a> {
    /// `boot_params` with the image's setup header copied in.
    params: boot_params,
    /// The protocol version.
    protocol: u16,
    /// The protected-mode kernel's bytes.
    kernel: &'a [u8],
}

impl<'a> Image<'a> {
    fn parse(image: &'a [u8]) -> Result<Image<'a>, LoadError> {
        let protocol = boot_protocol(image).ok_or(LoadError::NotElf)?;
        let file_len = image.len();
        let truncated = |needed: usize| LoadError::Truncated {
            what: "the Linux setup header".into(),
            needed: needed as u64,
            len: file_len,
        };
        if file_len < 0x212 {
            return Err(truncated(0x212));
        }
        if protocol < MIN_PROTOCOL {
            return Err(LoadError::LinuxProtocolTooOld { version: protocol });
        }
        if image[0x211] & LOADED_HIGH == 0 {
            return Err(LoadError::LinuxNotBzImage { version: protocol });
        }
        // The header ends at 0x202 plus the jump's offset byte; never past
        // the room boot_params has for it, nor past the file.
        let header_end = (SIGNATURE_OFFSET + usize::from(image[0x201])).min(HEADER_ROOM_END);
        if header_end > file_len {
            return Err(truncated(header_end));
        }
        let mut params = boot_params::default();
        params.as_mut_slice()[HEADER_OFFSET..header_end]
            .copy_from_slice(&image[HEADER_OFFSET..header_end]);
        let hdr: setup_header = params.hdr;
        let setup_sects = match hdr.setup_sects {
            0 => 4,
            n => u64::from(n),
        };
        let setup_len = (setup_sects + 1) * SECTOR;
        if setup_len >= file_len as u64 {
            return Err(LoadError::LinuxSetupTruncated {
                setup_sects: setup_sects as u8,
                setup_len,
                file_len,
            });
        }
        // Below the file's length, so it fits in usize.
        let kernel = &image[setup_len as usize..];
        let syssize = u64::from(hdr.syssize) * 16;
        if (kernel.len() as u64).div_ceil(16) * 16 < syssize {
            return Err(LoadError::LinuxKernelTruncated {
                syssize,
                present: kernel.len() as u64,
            });
        }
        Ok(Image {
            params,
            protocol,
            kernel,
        })
    }

    fn hdr(&self) -> setup_header {
        self.params.hdr
    }

    fn relocatable(&self) -> bool {
        self.protocol >= 0x0205 && self.hdr().relocatable_kernel != 0
    }

    /// Where the protected-mode kernel goes: `code32_start`, or 1 MiB for
    /// a relocatable kernel that would not fit there.
    fn load_address(&self, ram_size: u64) -> Result<u32, LoadError> {
        let len = self.kernel.len() as u64;
        let code32_start = self.hdr().code32_start;
        let fits = |start: u32| {
            u64::from(start) >= u64::from(KERNEL_ADDR) && u64::from(start) + len <= ram_size
        };
        if fits(code32_start) {
            Ok(code32_start)
        } else if self.relocatable() && fits(KERNEL_ADDR) {
            Ok(KERNEL_ADDR)
        } else {
            Err(LoadError::LinuxKernelOutsideRam {
                start: code32_start,
                len,
                ram_size,
            })
        }
    }

    /// The memory the kernel needs from its run-time start: boot.rst's
    /// algorithm (a relocatable kernel runs at the load address aligned up
    /// to `kernel_alignment`, but never below `pref_address`, to which a
    /// non-relocatable one always moves), for `init_size` bytes.
    fn runtime(&self, load: u32) -> (u64, u64) {
        let hdr = self.hdr();
        let loaded = (u64::from(load), u64::from(load) + self.kernel.len() as u64);
        if self.protocol < 0x020a || hdr.init_size == 0 {
            return loaded;
        }
        let pref = hdr.pref_address;
        let start = if self.relocatable() {
            let align = u64::from(hdr.kernel_alignment).max(1);
            (u64::from(load).div_ceil(align) * align).max(pref)
        } else if pref != 0 {
            pref
        } else {
            u64::from(load)
        };
        (start, start.saturating_add(u64::from(hdr.init_size)))
    }

    fn cmdline_max(&self) -> u32 {
        if self.protocol >= 0x0206 {
            self.hdr().cmdline_size
        } else {
            OLD_CMDLINE_MAX
        }
    }

    fn initrd_addr_max(&self) -> u32 {
        if self.protocol >= 0x0203 {
            self.hdr().initrd_addr_max
        } else {
            OLD_INITRD_ADDR_MAX
        }
    }
}

/// The e820 map for `ram_size` bytes of RAM: usable RAM below
/// [`LOW_RAM_END`], the rest of the first MiB reserved, usable RAM from
/// 1 MiB to the end (entries of zero length left out).
pub fn e820_map(ram_size: u64) -> Vec<(u64, u64, u32)> {
    let one_mib = u64::from(KERNEL_ADDR);
    [
        (0, ram_size.min(u64::from(LOW_RAM_END)), E820_RAM),
        (
            u64::from(LOW_RAM_END),
            one_mib - u64::from(LOW_RAM_END),
            E820_RESERVED,
        ),
        (one_mib, ram_size.saturating_sub(one_mib), E820_RAM),
    ]
    .into_iter()
    .filter(|&(_, len, _)| len != 0)
    .collect()
}

/// Loads the bzImage `image` into `ram` with the command line `append`
/// and the initrd `initrd`.
pub fn load(
    ram: &GuestRam,
    image: &[u8],
    append: &str,
    initrd: Option<&BootFile>,
) -> Result<LoadedLinux, LoadError> {
    let parsed = Image::parse(image)?;
    let ram_size = ram.size() as u64;
    let load = parsed.load_address(ram_size)?;
    let kernel = (
        u64::from(load),
        u64::from(load) + parsed.kernel.len() as u64,
    );
    let runtime = parsed.runtime(load);
    if runtime.1 > ram_size || runtime.0 < u64::from(KERNEL_ADDR) {
        return Err(LoadError::LinuxNeedsMoreRam {
            start: runtime.0,
            init_size: runtime.1 - runtime.0,
            ram_size,
        });
    }
    let cmdline = check_cmdline(&parsed, append)?;
    let occupied_end = kernel.1.max(runtime.1);
    let initrd_range = match initrd {
        Some(file) => Some(place_initrd(&parsed, file, occupied_end, ram_size)?),
        None => None,
    };
    // Every check passed; from here on only writes. All ends are at most
    // ram_size, below 4 GiB.
    let narrow = |(start, end): (u64, u64)| start as u32..end as u32;
    let mut params = parsed.params;
    fill_params(&mut params, load, initrd_range, ram_size);
    ram.write(GuestPhys(GDT_ADDR), &gdt())?;
    ram.write(GuestPhys(BOOT_PARAMS_ADDR), params.as_slice())?;
    let mut text = cmdline.as_bytes().to_vec();
    text.push(0);
    ram.write(GuestPhys(CMDLINE_ADDR), &text)?;
    ram.write(GuestPhys(load), parsed.kernel)?;
    if let (Some(file), Some((start, _))) = (initrd, initrd_range) {
        ram.write(GuestPhys(start as u32), &file.data)?;
    }
    Ok(LoadedLinux {
        entry: LinuxEntry {
            eip: load,
            esi: BOOT_PARAMS_ADDR,
            esp: ENTRY_ESP,
            gdt_base: GDT_ADDR,
            gdt_limit: GDT_LIMIT,
            code_selector: BOOT_CS,
            code_descriptor: CODE_DESCRIPTOR,
            data_selector: BOOT_DS,
            data_descriptor: DATA_DESCRIPTOR,
        },
        protocol: parsed.protocol,
        kernel: narrow(kernel),
        runtime: narrow(runtime),
        initrd: initrd_range.map(narrow),
        cmdline: CMDLINE_ADDR..CMDLINE_ADDR + cmdline.len() as u32,
    })
}

/// The command line, if the kernel and low memory take it.
fn check_cmdline<'s>(image: &Image<'_>, append: &'s str) -> Result<&'s str, LoadError> {
    if append.contains('\0') {
        return Err(LoadError::CommandLineHasNul);
    }
    let room = (LOW_RAM_END - CMDLINE_ADDR - 1) as usize;
    let max = (image.cmdline_max() as usize).min(room);
    if append.len() > max {
        return Err(LoadError::LinuxCommandLineTooLong {
            len: append.len(),
            max,
        });
    }
    Ok(append)
}

/// The initrd's range: page-aligned, as high as `initrd_addr_max` and the
/// end of RAM allow, above everything the kernel occupies.
fn place_initrd(
    image: &Image<'_>,
    file: &BootFile,
    occupied_end: u64,
    ram_size: u64,
) -> Result<(u64, u64), LoadError> {
    let size = file.data.len() as u64;
    let addr_max = image.initrd_addr_max();
    let limit = (u64::from(addr_max) + 1).min(ram_size);
    let lowest = occupied_end.div_ceil(PAGE) * PAGE;
    let start = limit
        .checked_sub(size)
        .map(|top| top / PAGE * PAGE)
        .filter(|&start| start >= lowest)
        .ok_or(LoadError::InitrdTooLarge {
            size,
            lowest,
            limit,
            addr_max,
        })?;
    Ok((start, start + size))
}

/// Fills the fields a boot loader writes.
fn fill_params(params: &mut boot_params, load: u32, initrd: Option<(u64, u64)>, ram_size: u64) {
    let mut hdr = params.hdr;
    hdr.type_of_loader = TYPE_OF_LOADER;
    hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    hdr.heap_end_ptr = HEAP_END_PTR;
    hdr.cmd_line_ptr = CMDLINE_ADDR;
    hdr.code32_start = load;
    // Both below 4 GiB (inside RAM).
    let (image, size) = initrd.map_or((0, 0), |(start, end)| (start as u32, (end - start) as u32));
    hdr.ramdisk_image = image;
    hdr.ramdisk_size = size;
    params.hdr = hdr;
    let map = e820_map(ram_size);
    let mut table = params.e820_table;
    for (slot, &(addr, size, type_)) in table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr, size, type_ };
    }
    params.e820_table = table;
    params.e820_entries = map.len() as u8;
    params.alt_mem_k =
        u32::try_from(ram_size.saturating_sub(u64::from(KERNEL_ADDR)) / 1024).unwrap_or(u32::MAX);
}

/// The GDT's bytes: null, null, `__BOOT_CS`, `__BOOT_DS`.
fn gdt() -> Vec<u8> {
    [0, 0, CODE_DESCRIPTOR, DATA_DESCRIPTOR]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect()
}
