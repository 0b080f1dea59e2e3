//! Why a kernel image was refused.
//!
//! Every variant's message is written for the person who passed `--kernel`:
//! it names the problem and, where there is one, the usual fix.

use super::header::FLAG_VIDEO_MODE;
use crate::input::FileKind;
use shadowmmu::RamError;
use std::path::PathBuf;

/// Why a Multiboot kernel could not be loaded.
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
    /// The image is neither ELF nor a flat image with Multiboot load addresses.
    #[error(
        "the kernel is not an ELF file (it does not begin with the bytes 7f 45 4c 46); nestmon \
         boots ELF32 Multiboot kernels, or flat images whose Multiboot header sets flag bit 16 \
         and gives load addresses"
    )]
    NotElf,
    /// A Linux kernel in its own boot format (bzImage), without a
    /// Multiboot header.
    #[error(
        "the kernel is a Linux bzImage (boot protocol {}.{:02}), not a Multiboot kernel: nestmon \
         boots Multiboot v1 kernels (as `qemu-system-i386 -kernel` boots them); Linux's own \
         boot protocol is not supported yet (README.md, \"What runs today\")",
        version >> 8,
        version & 0xff
    )]
    LinuxBzImage {
        /// The boot protocol version (0x020f for 2.15).
        version: u16,
    },
    /// An ELF executable without a Multiboot header: a program, not a
    /// kernel.
    #[error(
        "the kernel is an ELF executable with no Multiboot header (the magic 0x1BADB002 at a \
         4-byte aligned offset within its first 8192 bytes): nestmon boots kernels, not \
         programs for an operating system; a static Linux program runs natively, or inside \
         a guest system"
    )]
    ProgramNotKernel,
    /// A 64-bit ELF image.
    #[error(
        "the kernel is a 64-bit (ELF64) file; Multiboot v1 boots only 32-bit (ELF32) i386 kernels"
    )]
    Elf64,
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
        file_size: u32,
        /// `p_memsz`.
        mem_size: u32,
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
    /// A segment that would overwrite the Multiboot information area.
    #[error(
        "the kernel segment at guest-physical {start:#010x}..{end:#010x} overlaps the Multiboot \
         information area at {info_start:#x}..{info_end:#x}; link the kernel elsewhere (kernels \
         usually load at 1 MiB)"
    )]
    SegmentOverlapsInfo {
        /// First byte of the segment.
        start: u32,
        /// One past its last byte.
        end: u64,
        /// First byte of the information area.
        info_start: u32,
        /// One past its last byte.
        info_end: u32,
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
