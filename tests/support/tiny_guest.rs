//! Tiny Multiboot guests for integration tests, assembled here byte by
//! byte (no compiler needed): a few instructions of 32-bit code wrapped in
//! an ELF32 executable loaded at 1 MiB.

#![allow(dead_code)]

const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
/// Where the code is loaded and entered.
pub const LOAD_AT: u32 = 0x10_0000;

/// Hex bytes, one instruction a line with its assembly in a comment
/// (`"b0 10", // mov al, 0x10`), as machine code.
pub fn assemble(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|line| line.split_whitespace())
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex"))
        .collect()
}

/// A Multiboot v1 header (magic, flags, checksum).
pub fn multiboot_header(flags: u32) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
    [MULTIBOOT_MAGIC, flags, checksum]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// `code` as an ELF32 Multiboot executable loaded and entered at
/// [`LOAD_AT`], with 256 bytes of zeroed memory after it.
pub fn elf_guest(code: &[u8]) -> Vec<u8> {
    let header = multiboot_header(0x3);
    let data_offset = (52 + 32 + header.len()) as u32;
    let mut image = b"\x7fELF\x01\x01\x01".to_vec();
    image.resize(16, 0);
    image.extend(2u16.to_le_bytes().into_iter().chain(3u16.to_le_bytes()));
    for w in [1, LOAD_AT, 52, 0, 0] {
        image.extend(u32::to_le_bytes(w));
    }
    for h in [52u16, 32, 1, 0, 0, 0] {
        image.extend(h.to_le_bytes());
    }
    let len = code.len() as u32;
    for w in [
        1,
        data_offset,
        LOAD_AT,
        LOAD_AT,
        len,
        len + 0x100,
        5,
        0x1000,
    ] {
        image.extend(w.to_le_bytes());
    }
    image.extend(header);
    image.extend_from_slice(code);
    image
}

/// Prints `x` on COM1 forever, never waiting for the transmitter.
pub fn endless_printer() -> Vec<u8> {
    elf_guest(&assemble(&[
        "66 ba f8 03", // mov dx, 0x3f8
        "b0 78",       // mov al, 'x'
        "ee",          // again: out dx, al
        "eb fd",       // jmp again
    ]))
}

/// Ends the run at once through isa-debug-exit with the value 0x10 (exit
/// status 1 under nestmon's convention, 0x21 under QEMU's).
pub fn reports_failure_code_16() -> Vec<u8> {
    reports_dword(0x10)
}

/// Ends the run at once by writing the 32-bit `value` to isa-debug-exit.
pub fn reports_dword(value: u32) -> Vec<u8> {
    let mut code = vec![0xb8]; // mov eax, value
    code.extend(value.to_le_bytes());
    code.extend(assemble(&[
        "e7 f4", // out 0xf4, eax
        "f4",    // hlt
    ]));
    elf_guest(&code)
}

/// Executes UD2, which the monitor reports as a guest that died (status 3).
pub fn dies_of_ud2() -> Vec<u8> {
    elf_guest(&assemble(&[
        "0f 0b", // ud2
    ]))
}

/// Prints the Multiboot command line (the kernel's name, a space and the
/// `--append` / `nestmon.append` text) and a newline on COM1, then reports
/// success (value 0) through isa-debug-exit.
pub fn command_line_printer() -> Vec<u8> {
    elf_guest(&assemble(&[
        "66 ba f8 03", // mov dx, 0x3f8
        "8b 73 10",    // mov esi, [ebx + 16] (cmdline)
        "8a 06",       // next: mov al, [esi]
        "84 c0",       // test al, al
        "74 04",       // jz done
        "ee",          // out dx, al
        "46",          // inc esi
        "eb f6",       // jmp next
        "b0 0a",       // done: mov al, 10
        "ee",          // out dx, al
        "31 c0",       // xor eax, eax
        "e6 f4",       // out 0xf4, al
        "f4",          // hlt
    ]))
}
