//! Why a kernel image was refused.
//!
//! Every variant's message is written for the person who passed `--kernel`:
//! it names the problem and, where there is one, the usual fix.

use super::header::FLAG_VIDEO_MODE;
use crate::input::FileKind;
use shadowmmu::RamError;
use std::path::PathBuf;

/// Why a kernel (Multiboot or Linux) or its initrd could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel file could not be read.
    #[error("cannot read the kernel file {}: {source}", path.display())]
    Unreadable {
        /// The file asked for.
        path: PathBuf,
        /// The host's error.
        source: std::io::Error,
    },
    /// The kernel path names a directory, FIFO, device or socket.
    #[error("{} is {kind}, not a kernel file", path.display())]
    NotAKernelFile {
        /// The path given.
        path: PathBuf,
        /// What it names.
        kind: FileKind,
    },
    /// The kernel file is larger than nestmon reads (or grew past that while read).
    #[error(
        "the kernel file {} is larger than {} MiB ({limit} bytes), the most nestmon reads as a \
         kernel",
        path.display(),
        limit >> 20
    )]
    KernelFileTooLarge {
        /// The file.
        path: PathBuf,
        /// The most that is read.
        limit: u64,
    },
    /// The image is neither a Linux bzImage, nor ELF, nor a flat image with
    /// Multiboot load addresses.
    #[error(
        "the kernel is not an ELF file (it does not begin with the bytes 7f 45 4c 46) nor a \
         Linux bzImage (no \"HdrS\" at offset 0x202); nestmon boots Linux bzImages, ELF32 \
         Multiboot kernels, or flat images whose Multiboot header sets flag bit 16 and gives \
         load addresses"
    )]
    NotElf,
    /// A Linux kernel whose boot protocol predates the 32-bit entry
    /// nestmon uses.
    #[error(
        "the kernel is a Linux kernel of boot protocol {}.{:02}; nestmon enters Linux through \
         the 32-bit boot protocol, which needs protocol 2.04 or later (Linux 2.6.14 and newer)",
        version >> 8,
        version & 0xff
    )]
    LinuxProtocolTooOld {
        /// The boot protocol version (0x0203 for 2.03).
        version: u16,
    },
    /// A Linux zImage: its protected-mode part belongs at 0x10000.
    #[error(
        "the kernel is a Linux zImage (boot protocol {}.{:02}, loadflags bit 0, LOADED_HIGH, is \
         clear): its protected-mode part must be loaded at 0x10000 and started in real mode; \
         nestmon boots bzImages (`make bzImage`)",
        version >> 8,
        version & 0xff
    )]
    LinuxNotBzImage {
        /// The boot protocol version.
        version: u16,
    },
    /// The real-mode setup of a bzImage reaches the end of the file.
    #[error(
        "the bzImage is truncated: its setup_sects ({setup_sects}) put the real-mode setup at \
         bytes 0..{setup_len:#x}, but the file has {file_len:#x} bytes, so the protected-mode \
         kernel that follows the setup is missing"
    )]
    LinuxSetupTruncated {
        /// `setup_sects` (4 when the header says 0).
        setup_sects: u8,
        /// Bytes of the boot sector and setup: `(setup_sects + 1) * 512`.
        setup_len: u64,
        /// Bytes in the file.
        file_len: usize,
    },
    /// The protected-mode kernel is shorter than the header's `syssize`.
    #[error(
        "the bzImage is truncated: its header (syssize) gives the protected-mode kernel {syssize} \
         bytes, but only {present} follow the setup"
    )]
    LinuxKernelTruncated {
        /// `syssize` in bytes.
        syssize: u64,
        /// Bytes of the file after the setup.
        present: u64,
    },
    /// The protected-mode kernel does not fit in RAM at its load address.
    #[error(
        "the protected-mode Linux kernel ({len} bytes) does not fit in guest RAM at code32_start \
         {start:#x}{}: guest RAM ends at {ram_size:#x} ({} MiB); give the guest more memory \
         (--memsize)",
        if *start < super::linux::KERNEL_ADDR { " (below 1 MiB)" } else { "" },
        ram_size >> 20
    )]
    LinuxKernelOutsideRam {
        /// `code32_start`.
        start: u32,
        /// Bytes of the protected-mode kernel.
        len: u64,
        /// The size of guest RAM in bytes.
        ram_size: u64,
    },
    /// The memory the kernel decompresses into does not fit in RAM.
    #[error(
        "the Linux kernel runs at {start:#x} and needs init_size {init_size:#x} bytes ({} MiB) from \
         there before it reads the memory map, up to {:#x}, but guest RAM above 1 MiB ends at \
         {ram_size:#x} ({} MiB){}",
        init_size >> 20,
        start.saturating_add(*init_size),
        ram_size >> 20,
        memsize_hint(start.saturating_add(*init_size))
    )]
    LinuxNeedsMoreRam {
        /// The kernel's run-time start (`pref_address` or the load address
        /// aligned to `kernel_alignment`).
        start: u64,
        /// `init_size`.
        init_size: u64,
        /// The size of guest RAM in bytes.
        ram_size: u64,
    },
    /// The command line is longer than the kernel's `cmdline_size`.
    #[error(
        "the kernel command line is {len} bytes long, but this kernel takes at most {max} \
         (cmdline_size)"
    )]
    LinuxCommandLineTooLong {
        /// Its length.
        len: usize,
        /// The most the kernel (and low memory) takes.
        max: usize,
    },
    /// More than one initrd, or arguments after its name, for Linux.
    #[error(
        "a Linux kernel takes one initrd file, but --initrd (nestmon.initrd) gives {count} \
         item(s){}; a comma-separated list and arguments after a file name are for Multiboot \
         modules",
        if *has_args { " with arguments" } else { "" }
    )]
    LinuxInitrdNotOneFile {
        /// How many items were given.
        count: usize,
        /// Whether an item had arguments.
        has_args: bool,
    },
    /// The initrd does not fit between the kernel and its highest address.
    #[error(
        "the initrd is {size} bytes ({} MiB), but only {} bytes fit between the end of the \
         kernel's memory ({lowest:#x}) and {limit:#x} (the lower of initrd_addr_max \
         {addr_max:#x} + 1 and the end of guest RAM); give the guest more memory (--memsize)",
        size >> 20,
        limit.saturating_sub(*lowest)
    )]
    InitrdTooLarge {
        /// Bytes of the initrd.
        size: u64,
        /// The lowest address it may take (page-aligned end of the kernel).
        lowest: u64,
        /// One past the highest byte it may take.
        limit: u64,
        /// The kernel's `initrd_addr_max`.
        addr_max: u32,
    },
    /// An initrd or module file that cannot be used.
    #[error("the initrd {} {}", path.display(), super::modules::describe_input_error(reason))]
    InitrdFile {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: crate::input::InputError,
    },
    /// Multiboot modules that do not fit in RAM above the kernel.
    #[error(
        "the {count} Multiboot module(s) and their list take guest memory from {start:#x} to \
         {end:#x}, past the end of guest RAM at {ram_size:#x} ({} MiB); give the guest more \
         memory (--memsize)",
        ram_size >> 20
    )]
    ModulesDoNotFit {
        /// How many modules.
        count: usize,
        /// Where the first module starts.
        start: u64,
        /// One past the last byte of the module list and strings.
        end: u64,
        /// The size of guest RAM in bytes.
        ram_size: u64,
    },
    /// A module's path or arguments contain a NUL byte.
    #[error("a Multiboot module's name or arguments contain a NUL byte")]
    ModuleStringHasNul,
    /// An ELF executable without a Multiboot header: a program, not a
    /// kernel.
    #[error(
        "the kernel is an ELF executable with no Multiboot header (the magic 0x1BADB002 at a \
         4-byte aligned offset within its first 8192 bytes): nestmon boots kernels, not \
         programs for an operating system; a static Linux program runs natively, or inside \
         a guest system"
    )]
    ProgramNotKernel,
    /// A 64-bit ELF image for another processor than x86-64.
    #[error(
        "the kernel is a 64-bit (ELF64) file for ELF machine {machine} ({}), not for x86-64 (62)",
        machine_name(*machine)
    )]
    Elf64NotX86_64 {
        /// The `e_machine` field.
        machine: u16,
    },
    /// A segment that does not lie below 4 GiB (ELF64 fields are wider
    /// than a Multiboot kernel's physical addresses).
    #[error(
        "program header {index} places {mem_size:#x} bytes at physical {paddr:#x}, which does \
         not end below 4 GiB; a Multiboot kernel (ELF64 included) is loaded below 4 GiB"
    )]
    SegmentAboveFourGib {
        /// The program header's index.
        index: usize,
        /// Its physical address.
        paddr: u64,
        /// Its size in memory.
        mem_size: u64,
    },
    /// An entry point at or above 4 GiB: a Multiboot kernel is entered in
    /// 32-bit protected mode.
    #[error(
        "the kernel's entry point {entry:#x} is not below 4 GiB; a Multiboot kernel (ELF64 \
         included) is entered in 32-bit protected mode, at a physical address below 4 GiB"
    )]
    EntryAboveFourGib {
        /// The entry point (physical, after the virtual-to-physical move).
        entry: u64,
    },
    /// An ELF class byte that is neither 32- nor 64-bit.
    #[error("the kernel's ELF header has an invalid class byte {0} (1 means ELF32)")]
    UnknownElfClass(u8),
    /// A big-endian (or unknown byte order) ELF image.
    #[error(
        "the kernel's ELF header declares byte order {0}; an i386 kernel is little-endian (1)"
    )]
    NotLittleEndian(u8),
    /// An ELF image for another processor.
    #[error("the kernel is built for ELF machine {machine} ({}), not for i386 (3)", machine_name(*machine))]
    NotI386 {
        /// The `e_machine` field.
        machine: u16,
    },
    /// An ELF file that is not a linked executable.
    #[error(
        "the kernel is an ELF file of type {e_type} ({}), not an executable (type 2); link it as \
         a static executable",
        elf_type_name(*e_type)
    )]
    NotExecutable {
        /// The `e_type` field.
        e_type: u16,
    },
    /// No Multiboot magic at any aligned offset in the first 8 KiB.
    #[error(
        "the kernel has no Multiboot header: the magic 0x1BADB002 does not appear at a 4-byte \
         aligned offset within its first 8192 bytes"
    )]
    NoMultibootHeader,
    /// A Multiboot magic whose checksum is wrong (and no valid header).
    #[error(
        "the Multiboot header at file offset {offset:#x} has a bad checksum: magic + flags + \
         checksum is {sum:#010x}, but must be 0"
    )]
    BadChecksum {
        /// File offset of the magic.
        offset: usize,
        /// The (wrapping) sum of the three header words.
        sum: u32,
    },
    /// The header requires something this loader cannot provide.
    #[error(
        "the kernel's Multiboot header (flags {flags:#010x}) requires what nestmon cannot \
         provide: {}",
        describe_unsupported(*unsupported)
    )]
    UnsupportedFlags {
        /// The header's flags word.
        flags: u32,
        /// The required bits (0-15) that cannot be honoured.
        unsupported: u32,
    },
    /// The header's address fields (flag bit 16) lie past the end of the
    /// file or past the searchable area.
    #[error(
        "the Multiboot header at file offset {offset:#x} sets flag bit 16, but its address \
         fields run past {}",
        if *file_ended { "the end of the file" } else { "the first 8192 bytes of the file" }
    )]
    HeaderTruncated {
        /// File offset of the magic.
        offset: usize,
        /// The file ends before the fields do (rather than the searched area).
        file_ended: bool,
    },
    /// The header's address fields contradict each other or the file.
    #[error("the Multiboot header's load addresses (flag bit 16) are inconsistent: {0}")]
    BadLoadAddresses(&'static str),
    /// The file ends before data the headers point at.
    #[error(
        "the kernel file is truncated: {what} needs bytes up to offset {needed:#x}, but the \
         file is only {len:#x} bytes long"
    )]
    Truncated {
        /// What lies past the end.
        what: String,
        /// The offset one past the last byte needed.
        needed: u64,
        /// The file's length.
        len: usize,
    },
    /// The ELF header's program-header description is unusable.
    #[error("the kernel's ELF header is malformed: {0}")]
    MalformedElf(String),
    /// Nothing to load.
    #[error("the kernel has no loadable (PT_LOAD) segment with a non-zero size")]
    NoLoadableSegments,
    /// A program header whose file size exceeds its memory size.
    #[error(
        "ELF program header {index} is malformed: its file size {file_size:#x} exceeds its \
         memory size {mem_size:#x}"
    )]
    SegmentFileLargerThanMemory {
        /// Index of the program header.
        index: usize,
        /// `p_filesz`.
        file_size: u64,
        /// `p_memsz`.
        mem_size: u64,
    },
    /// A segment that would reach past the end of guest RAM.
    #[error(
        "the kernel segment at guest-physical {start:#010x}..{end:#010x} does not fit in guest \
         RAM, which ends at {ram_size:#x} ({} MiB); give the guest more memory (--memsize) or \
         link the kernel lower",
        ram_size >> 20
    )]
    SegmentOutsideRam {
        /// First byte of the segment.
        start: u32,
        /// One past its last byte.
        end: u64,
        /// The size of guest RAM in bytes.
        ram_size: u64,
    },
    /// The segments leave no room in low memory for the information area.
    #[error(
        "the kernel's segments leave no room below {:#x} for the Multiboot information area \
         ({len} bytes: memory map, information structure, command line): neither QEMU's \
         address {:#x} nor any 4 KiB boundary from {:#x} is free; link the kernel elsewhere \
         (kernels usually load at 1 MiB)",
        super::info::LOW_MEMORY_END,
        super::info::MMAP_ADDR,
        super::info::AREA_SEARCH_START
    )]
    NoRoomForInfo {
        /// Bytes the area needs.
        len: u32,
    },
    /// Two segments that claim the same guest-physical bytes.
    #[error(
        "two kernel segments overlap in guest-physical memory: {first_start:#010x}..{first_end:#010x} \
         and {second_start:#010x}..{second_end:#010x}"
    )]
    SegmentsOverlap {
        /// Start of the lower segment.
        first_start: u32,
        /// End of the lower segment.
        first_end: u64,
        /// Start of the higher segment.
        second_start: u32,
        /// End of the higher segment.
        second_end: u64,
    },
    /// The entry point lies in none of the loaded segments.
    #[error("the kernel's entry point {entry:#010x} is not inside any loaded segment")]
    EntryOutsideImage {
        /// The (physical) entry point.
        entry: u32,
    },
    /// The command line cannot be passed as a C string.
    #[error("the kernel command line contains a NUL byte")]
    CommandLineHasNul,
    /// The command line does not fit below 640 KiB.
    #[error("the kernel command line is {len} bytes long; at most {max} bytes fit in low memory")]
    CommandLineTooLong {
        /// Its length, including the kernel's file name.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// Guest RAM refused a write the checks above should have made safe.
    #[error("writing the kernel into guest RAM failed: {0}")]
    Ram(#[from] RamError),
}

/// ", give the guest at least N MiB (--memsize N)" for memory up to `end`.
fn memsize_hint(end: u64) -> String {
    let mib = end.div_ceil(4 << 20) * 4;
    format!("; give the guest at least {mib} MiB (--memsize {mib})")
}

fn machine_name(machine: u16) -> &'static str {
    match machine {
        0 => "no machine",
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "unknown",
    }
}

fn elf_type_name(e_type: u16) -> &'static str {
    match e_type {
        0 => "no file type",
        1 => "relocatable object",
        2 => "executable",
        3 => "shared object or position-independent executable",
        4 => "core dump",
        _ => "unknown",
    }
}

/// Names the required Multiboot header bits in `bits`.
fn describe_unsupported(bits: u32) -> String {
    let names: Vec<String> = (0..16)
        .filter(|bit| bits & (1 << bit) != 0)
        .map(|bit| match 1u32 << bit {
            FLAG_VIDEO_MODE => "bit 2 (a video mode and its information)".to_string(),
            _ => {
                format!("bit {bit} (a requirement the Multiboot v1 specification does not define)")
            }
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_video_flag_is_named() {
        let e = LoadError::UnsupportedFlags {
            flags: 0x4,
            unsupported: 0x4,
        };
        assert!(e.to_string().contains("bit 2 (a video mode"), "{e}");
    }

    #[test]
    fn undefined_required_bits_are_listed_each() {
        let text = describe_unsupported((1 << 5) | (1 << 15));
        assert!(text.contains("bit 5") && text.contains("bit 15"), "{text}");
    }

    #[test]
    fn foreign_machine_is_named() {
        let e = LoadError::NotI386 { machine: 62 };
        assert!(e.to_string().contains("x86-64"), "{e}");
    }
}
