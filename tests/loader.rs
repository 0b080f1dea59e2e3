//! What a user sees when `nestmon run --kernel` is given a kernel the
//! Multiboot loader refuses: exit status 2 and a message naming the problem.
//!
//! The bad kernels are generated here, byte by byte, in a scratch directory.

use std::path::Path;
use std::process::{Command, Output};

const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
const KERNEL_AT: u32 = 0x10_0000;
/// `hlt; jmp $-1`: a kernel body that never gets to run in these tests.
const HALT: [u8; 3] = [0xf4, 0xeb, 0xfd];

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

fn multiboot_header(flags: u32) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
    [MULTIBOOT_MAGIC, flags, checksum]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// An ELF executable of `class` (1 = ELF32, 2 = ELF64 identity) with one
/// PT_LOAD segment holding `body` at `load_at`, and `header` after the
/// program header.
fn elf_kernel(class: u8, load_at: u32, header: Option<Vec<u8>>, body: &[u8]) -> Vec<u8> {
    let header = header.unwrap_or_default();
    let data_offset = (52 + 32 + header.len()) as u32;
    let mut image = vec![0x7f, b'E', b'L', b'F', class, 1, 1];
    image.resize(16, 0);
    let half = |v: u16| v.to_le_bytes();
    let word = |v: u32| v.to_le_bytes();
    image.extend(
        half(2)
            .into_iter()
            .chain(half(if class == 2 { 62 } else { 3 })),
    );
    for w in [1, load_at, 52, 0, 0] {
        image.extend(word(w));
    }
    for h in [52u16, 32, 1, 0, 0, 0] {
        image.extend(half(h));
    }
    let len = body.len() as u32;
    for w in [1, data_offset, load_at, load_at, len, len, 5, 0x1000] {
        image.extend(word(w));
    }
    image.extend(header);
    image.extend_from_slice(body);
    image
}

fn good_header() -> Option<Vec<u8>> {
    Some(multiboot_header(0x3))
}

fn nestmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .args(args)
        .output()
        .expect("run nestmon")
}

fn run_kernel(kernel: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--kernel", kernel.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    nestmon(&args)
}

/// Asserts exit status 2 and that stderr contains every one of `words`.
fn assert_refused(output: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "status; stderr:\n{stderr}");
    for word in words {
        assert!(
            stderr.contains(word),
            "stderr does not mention {word:?}:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "nestmon panicked:\n{stderr}");
}

#[test]
fn file_that_is_not_elf_is_refused() {
    let dir = Scratch::new("loader-not-elf");
    let kernel = dir.file("notes.txt", b"this is a text file, not a kernel\n");
    assert_refused(&run_kernel(&kernel, &[]), &["not an ELF file"]);
}

/// An ELF64 kernel is loaded as GRUB loads one, under hardware execution
/// (see tests/kvm_backend.rs); this one has ELF32-sized headers, so it is
/// refused: by the loader where a KVM can create a VM, by mode resolution
/// (no hardware execution for a 64-bit kernel) elsewhere.
#[test]
fn malformed_elf64_kernel_is_refused() {
    let dir = Scratch::new("loader-elf64");
    let kernel = dir.file("k64.elf", &elf_kernel(2, KERNEL_AT, good_header(), &HALT));
    assert_refused(&run_kernel(&kernel, &[]), &["ELF64"]);
}

#[test]
fn elf32_without_multiboot_header_is_refused() {
    let dir = Scratch::new("loader-no-header");
    let kernel = dir.file("plain.elf", &elf_kernel(1, KERNEL_AT, None, &HALT));
    assert_refused(&run_kernel(&kernel, &[]), &["no Multiboot header"]);
}

#[test]
fn multiboot_header_with_bad_checksum_is_refused() {
    let mut header = multiboot_header(0x3);
    header[8] ^= 0x40;
    let dir = Scratch::new("loader-checksum");
    let kernel = dir.file("badsum.elf", &elf_kernel(1, KERNEL_AT, Some(header), &HALT));
    assert_refused(&run_kernel(&kernel, &[]), &["bad checksum"]);
}

#[test]
fn video_mode_requirement_is_refused() {
    let dir = Scratch::new("loader-video");
    let kernel = dir.file(
        "vbe.elf",
        &elf_kernel(1, KERNEL_AT, Some(multiboot_header(0x7)), &HALT),
    );
    assert_refused(&run_kernel(&kernel, &[]), &["video mode"]);
}

#[test]
fn kernel_linked_beyond_guest_ram_is_refused() {
    // 4 MiB is the smallest --memsize the command line accepts.
    let dir = Scratch::new("loader-beyond-ram");
    let kernel = dir.file("high.elf", &elf_kernel(1, 16 << 20, good_header(), &HALT));
    let output = run_kernel(&kernel, &["--memsize", "4"]);
    assert_refused(
        &output,
        &["does not fit in guest RAM", "0x01000000", "--memsize"],
    );
}

#[test]
fn truncated_kernel_is_refused() {
    let dir = Scratch::new("loader-truncated");
    let image = elf_kernel(1, KERNEL_AT, good_header(), &[0x90; 64]);
    let kernel = dir.file("cut.elf", &image[..image.len() - 16]);
    assert_refused(&run_kernel(&kernel, &[]), &["truncated"]);
}

#[test]
fn missing_kernel_file_is_refused() {
    let dir = Scratch::new("loader-missing");
    let kernel = dir.0.join("does-not-exist.elf");
    let output = run_kernel(&kernel, &[]);
    assert_refused(&output, &["does-not-exist.elf"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not found") || stderr.contains("No such file"),
        "stderr does not say the file is missing:\n{stderr}"
    );
}
