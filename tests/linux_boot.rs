//! Booting Linux kernels and Multiboot modules end to end under
//! `nestmon run`, as `qemu-system-i386 -kernel K -initrd F -append A` boots
//! them (docs/devices.md, "The Linux loader").
//!
//! The bzImages are synthesized here: their protected-mode "kernel" is a
//! checker assembled with iced-x86 that looks at the 32-bit boot protocol's
//! entry state, `boot_params`, the e820 map, the command line and the
//! initrd from inside the guest, prints on COM1, and ends the run through
//! isa-debug-exit: 0 when every check passed, else the number of the first
//! check that failed (nestmon's stderr names it).
//!
//! The last test boots Debian 12's real i386 kernel (`linux-image-686`)
//! when it is present: `NESTMON_LINUX_KERNEL`, or
//! `~/.cache/nestmon/debian-686/vmlinuz` where `.ci/setup` puts it. Under
//! CI (`CI=true`) a missing kernel fails that test; elsewhere it says
//! "skipped".

use iced_x86::code_asm::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{captured, Finished};
#[path = "support/bzimage.rs"]
mod bzimage;
use bzimage::BzImage;
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

const TIME_LIMIT: Duration = Duration::from_secs(60);
const MIB: u32 = 1 << 20;

// The documented layout of the Linux loader (docs/devices.md).
const BOOT_PARAMS: u32 = 0x7000;
const GDT: u32 = 0x500;
const CMDLINE: u32 = 0x2_0000;
const KERNEL_AT: u32 = 0x10_0000;
const CODE_DESCRIPTOR: u64 = 0x00cf_9b00_0000_ffff;
const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;

// Scratch memory of the checker guests (usable low RAM, clear of the
// loader's structures).
const STACK_TOP: u32 = 0x9_0000;
const SGDT_AT: u32 = 0x8_0000;

const COM1: i32 = 0x3f8;
const DEBUG_EXIT: i32 = 0xf4;

type Asm = Result<(), IcedError>;

fn run(args: &[&str]) -> Finished {
    captured(TIME_LIMIT, args)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// What a checker guest expects to find.
struct Expected {
    /// Guest RAM, for the e820 map.
    ram: u32,
    /// The command line.
    cmdline: String,
    /// The initrd's address and bytes, if one is passed.
    initrd: Option<(u32, Vec<u8>)>,
}

/// The order-sensitive checksum the guest computes over the initrd:
/// `sum = sum * 31 + byte`, wrapping.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |sum, &b| {
        sum.wrapping_mul(31).wrapping_add(u32::from(b))
    })
}

/// A guest under construction whose checks jump to numbered failures.
struct Checker {
    a: CodeAssembler,
    failures: Vec<(CodeLabel, u32)>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            a: CodeAssembler::new(32).expect("32-bit assembler"),
            failures: Vec::new(),
        }
    }

    /// A label that ends the run reporting `code`.
    fn fail(&mut self, code: u32) -> CodeLabel {
        let label = self.a.create_label();
        self.failures.push((label, code));
        label
    }

    /// Fails with `code` unless the flags say "equal".
    fn expect_equal(&mut self, code: u32) -> Asm {
        let fail = self.fail(code);
        self.a.jne(fail)
    }

    fn expect_dword(&mut self, at: AsmMemoryOperand, value: u32, code: u32) -> Asm {
        self.a.cmp(at, value as i32)?;
        self.expect_equal(code)
    }

    fn print(&mut self, text: &str) -> Asm {
        self.a.mov(dx, COM1)?;
        for byte in text.bytes() {
            self.a.mov(al, i32::from(byte))?;
            self.a.out(dx, al)?;
        }
        Ok(())
    }

    /// Prints the NUL-terminated string at EBX (clobbers EAX, EBX, EDX).
    fn print_string_at_ebx(&mut self) -> Asm {
        let mut next = self.a.create_label();
        let mut done = self.a.create_label();
        self.a.mov(dx, COM1)?;
        self.a.set_label(&mut next)?;
        self.a.mov(al, byte_ptr(ebx))?;
        self.a.test(al, al)?;
        self.a.jz(done)?;
        self.a.out(dx, al)?;
        self.a.inc(ebx)?;
        self.a.jmp(next)?;
        self.a.set_label(&mut done)?;
        Ok(())
    }

    fn report(&mut self, value: u32) -> Asm {
        self.a.mov(eax, value)?;
        self.a.out(DEBUG_EXIT, eax)?;
        self.a.hlt()
    }

    /// The code, assembled to run at `base`.
    fn finish(mut self, base: u32) -> Vec<u8> {
        for (mut label, code) in std::mem::take(&mut self.failures) {
            self.a.set_label(&mut label).expect("label");
            self.report(code).expect("failure path");
        }
        self.a.assemble(u64::from(base)).expect("assembled")
    }
}

/// The checker kernel of the Linux tests: every check of the 32-bit boot
/// protocol's entry state and of `boot_params` that `expected` implies.
fn linux_checker(expected: &Expected) -> Vec<u8> {
    let mut c = Checker::new();
    linux_checks(&mut c, expected).expect("checker code");
    c.finish(KERNEL_AT)
}

fn linux_checks(c: &mut Checker, expected: &Expected) -> Asm {
    // Entry registers, before anything changes them.
    c.a.cmp(esi, BOOT_PARAMS)?;
    c.expect_equal(1)?;
    for (register, code) in [(ebx, 2), (ebp, 3), (edi, 4)] {
        c.a.test(register, register)?;
        c.expect_equal(code)?;
    }
    c.a.mov(ebp, esi)?;
    for (segment, selector, code) in [(cs, 0x10, 5), (ds, 0x18, 6), (es, 0x18, 7), (ss, 0x18, 8)] {
        c.a.mov(ax, segment)?;
        c.a.cmp(ax, selector)?;
        c.expect_equal(code)?;
    }
    // Protected mode with paging off.
    c.a.mov(eax, cr0)?;
    c.a.and(eax, 0x8000_0001u32 as i32)?;
    c.a.cmp(eax, 1)?;
    c.expect_equal(9)?;
    c.a.mov(esp, STACK_TOP)?;
    c.a.pushfd()?;
    c.a.pop(eax)?;
    c.a.test(eax, 0x200)?;
    c.expect_equal(10)?;
    // The GDT: where GDTR says, with flat __BOOT_CS and __BOOT_DS.
    c.a.sgdt(ptr(SGDT_AT))?;
    c.a.cmp(word_ptr(SGDT_AT), 31)?;
    c.expect_equal(11)?;
    c.expect_dword(dword_ptr(SGDT_AT + 2), GDT, 12)?;
    for (offset, descriptor, code) in [(0x10, CODE_DESCRIPTOR, 13), (0x18, DATA_DESCRIPTOR, 14)] {
        c.expect_dword(dword_ptr(GDT + offset), descriptor as u32, code)?;
        c.expect_dword(dword_ptr(GDT + offset + 4), (descriptor >> 32) as u32, code)?;
    }
    // boot_params: the setup header and what the loader wrote.
    c.expect_dword(dword_ptr(ebp + 0x202), u32::from_le_bytes(*b"HdrS"), 20)?;
    c.a.cmp(byte_ptr(ebp + 0x210), 0xff)?;
    c.expect_equal(21)?;
    c.a.mov(al, byte_ptr(ebp + 0x211))?;
    c.a.and(al, 0x81)?;
    c.a.cmp(al, 0x81)?;
    c.expect_equal(22)?;
    c.a.cmp(word_ptr(ebp + 0x224), 0xde00)?;
    c.expect_equal(23)?;
    c.expect_dword(dword_ptr(ebp + 0x228), CMDLINE, 24)?;
    c.expect_dword(dword_ptr(ebp + 0x214), KERNEL_AT, 25)?;
    // The e820 map.
    c.a.cmp(byte_ptr(ebp + 0x1e8), 3)?;
    c.expect_equal(26)?;
    let map = [
        (0u32, 0x9_f000u32, 1u32),
        (0x9_f000, 0x6_1000, 2),
        (KERNEL_AT, expected.ram - KERNEL_AT, 1),
    ];
    for (index, (addr, size, kind)) in map.into_iter().enumerate() {
        let entry = 0x2d0 + 20 * index as u32;
        let code = 27 + index as u32;
        for (offset, value) in [(0, addr), (4, 0), (8, size), (12, 0), (16, kind)] {
            c.expect_dword(dword_ptr(ebp + entry + offset), value, code)?;
        }
    }
    // The initrd: where and how large the header says, with its bytes.
    let (initrd_at, initrd) = expected.initrd.clone().unwrap_or((0, Vec::new()));
    c.expect_dword(dword_ptr(ebp + 0x218), initrd_at, 30)?;
    c.expect_dword(dword_ptr(ebp + 0x21c), initrd.len() as u32, 31)?;
    if !initrd.is_empty() {
        let mut next = c.a.create_label();
        c.a.mov(ebx, dword_ptr(ebp + 0x218))?;
        c.a.mov(ecx, dword_ptr(ebp + 0x21c))?;
        c.a.xor(eax, eax)?;
        c.a.set_label(&mut next)?;
        c.a.imul_3(eax, eax, 31)?;
        c.a.movzx(edx, byte_ptr(ebx))?;
        c.a.add(eax, edx)?;
        c.a.inc(ebx)?;
        c.a.dec(ecx)?;
        c.a.jnz(next)?;
        c.a.cmp(eax, checksum(&initrd) as i32)?;
        c.expect_equal(32)?;
    }
    // The command line: printed, then compared byte for byte (with its NUL).
    c.print("cmdline: [")?;
    c.a.mov(ebx, dword_ptr(ebp + 0x228))?;
    c.print_string_at_ebx()?;
    c.print("]\n")?;
    // The expected text follows a call, which pushes its address.
    let mut after_text = c.a.create_label();
    c.a.call(after_text)?;
    let mut bytes = expected.cmdline.as_bytes().to_vec();
    bytes.push(0);
    c.a.db(&bytes)?;
    c.a.set_label(&mut after_text)?;
    c.a.pop(edi)?;
    c.a.mov(esi, dword_ptr(ebp + 0x228))?;
    c.a.mov(ecx, expected.cmdline.len() as u32 + 1)?;
    c.a.cld()?;
    c.a.repe().cmpsb()?;
    c.expect_equal(33)?;
    c.print("linux-boot: every check passed\n")?;
    c.report(0)
}

/// Where the loader puts an initrd of `len` bytes on a machine of `ram`
/// bytes whose kernel allows any address: page-aligned at the top of RAM.
fn top_of_ram(ram: u32, len: usize) -> u32 {
    (ram - len as u32) & !0xfff
}

fn initrd_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 256) as u8).collect()
}

/// Asserts a run in which the checker guest passed every check.
fn assert_checks_passed(run: &Finished, cmdline: &str) {
    assert_eq!(
        run.status,
        Some(0),
        "the checker failed (the code is the check's number in tests/linux_boot.rs)\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("cmdline: [{cmdline}]\n")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("every check passed"), "{}", run.stdout);
}

#[test]
fn bzimage_is_entered_by_the_32_bit_boot_protocol_with_boot_params_e820_cmdline_and_initrd() {
    let dir = Scratch::new("linux-boot-flags");
    let ram = 16 * MIB;
    let cmdline = "console=ttyS0 nestmon.test=1 quiet";
    let initrd = initrd_bytes(0x3456);
    let expected = Expected {
        ram,
        cmdline: cmdline.to_string(),
        initrd: Some((top_of_ram(ram, initrd.len()), initrd.clone())),
    };
    let kernel = dir.file("bzImage", &BzImage::new(linux_checker(&expected)).build());
    let initrd_path = dir.file("initrd.gz", &initrd);
    let run = run(&[
        "run",
        "--kernel",
        path_str(&kernel),
        "--initrd",
        path_str(&initrd_path),
        "--append",
        cmdline,
        "--memsize",
        "16",
    ]);
    assert_checks_passed(&run, cmdline);
}

#[test]
fn vmx_keys_boot_a_bzimage_with_its_initrd_and_command_line() {
    let dir = Scratch::new("linux-boot-vmx");
    let ram = 24 * MIB;
    let cmdline = "root=/dev/ram0 console=ttyS0,115200";
    let initrd = initrd_bytes(0x1_0001);
    let expected = Expected {
        ram,
        cmdline: cmdline.to_string(),
        initrd: Some((top_of_ram(ram, initrd.len()), initrd.clone())),
    };
    dir.file("bzImage", &BzImage::new(linux_checker(&expected)).build());
    dir.file("initrd.img", &initrd);
    let vmx = dir.file(
        "linux.vmx",
        format!(
            ".encoding = \"UTF-8\"\nmemsize = \"24\"\nnestmon.kernel = \"bzImage\"\n\
             nestmon.initrd = \"initrd.img\"\nnestmon.append = \"{cmdline}\"\n"
        )
        .as_bytes(),
    );
    let run = run(&["run", path_str(&vmx)]);
    assert_checks_passed(&run, cmdline);
}

#[test]
fn bzimage_without_initrd_or_append_gets_an_empty_command_line_and_no_ramdisk() {
    let dir = Scratch::new("linux-boot-bare");
    let expected = Expected {
        ram: 8 * MIB,
        cmdline: String::new(),
        initrd: None,
    };
    let mut image = BzImage::new(linux_checker(&expected));
    image.setup_sects = 0; // 0 means 4
    let kernel = dir.file("bzImage", &image.build());
    let run = run(&["run", "--kernel", path_str(&kernel), "--memsize", "8"]);
    assert_checks_passed(&run, "");
}

/// A bzImage whose kernel only reports success (it is never run in the
/// refusal tests).
fn idle_bzimage() -> BzImage {
    let mut c = Checker::new();
    c.report(0).expect("report");
    BzImage::new(c.finish(KERNEL_AT))
}

/// Asserts exit status 2 and that stderr contains every one of `words`.
fn assert_refused(run: &Finished, words: &[&str]) {
    assert_eq!(run.status, Some(2), "status; stderr:\n{}", run.stderr);
    for word in words {
        assert!(
            run.stderr.contains(word),
            "stderr does not mention {word:?}:\n{}",
            run.stderr
        );
    }
    assert!(run.stdout.is_empty(), "the guest ran: {}", run.stdout);
}

fn run_bzimage(dir: &Scratch, image: &[u8], extra: &[&str]) -> Finished {
    let kernel = dir.file("bzImage", image);
    let mut args = vec!["run", "--kernel", path_str(&kernel)];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn each_inconsistent_bzimage_is_refused_with_status_2_and_its_reason() {
    let dir = Scratch::new("linux-boot-refusals");
    let mut old = idle_bzimage();
    old.protocol = 0x0203;
    assert_refused(
        &run_bzimage(&dir, &old.build(), &[]),
        &["boot protocol 2.03", "2.04 or later"],
    );

    let mut zimage = idle_bzimage();
    zimage.loadflags = 0;
    assert_refused(&run_bzimage(&dir, &zimage.build(), &[]), &["zImage"]);

    let mut cut = idle_bzimage().build();
    cut.truncate(0x400);
    assert_refused(
        &run_bzimage(&dir, &cut, &[]),
        &["truncated", "setup_sects (4)", "0xa00", "missing"],
    );

    let mut header_says_more = idle_bzimage();
    header_says_more.kernel.extend_from_slice(&[0x90; 0x200]);
    let mut image = header_says_more.build();
    image.truncate(image.len() - 0x100);
    assert_refused(&run_bzimage(&dir, &image, &[]), &["truncated", "(syssize)"]);

    let mut high = idle_bzimage();
    high.relocatable = 0;
    high.code32_start = 0x80_0000;
    assert_refused(
        &run_bzimage(&dir, &high.build(), &["--memsize", "8"]),
        &[
            "does not fit in guest RAM at code32_start 0x800000",
            "8 MiB",
        ],
    );

    let mut hungry = idle_bzimage();
    hungry.pref_address = 0x100_0000;
    hungry.kernel_alignment = 0x100_0000;
    hungry.init_size = 0x100_c000;
    assert_refused(
        &run_bzimage(&dir, &hungry.build(), &["--memsize", "16"]),
        &["runs at 0x1000000", "init_size 0x100c000", "--memsize 36"],
    );

    let mut small_cmdline = idle_bzimage();
    small_cmdline.cmdline_size = 16;
    assert_refused(
        &run_bzimage(
            &dir,
            &small_cmdline.build(),
            &["--append", "console=ttyS0 quiet"],
        ),
        &["19 bytes long", "at most 16 (cmdline_size)"],
    );

    let big = dir.file("big-initrd", &vec![0x55; 7 * MIB as usize]);
    assert_refused(
        &run_bzimage(
            &dir,
            &idle_bzimage().build(),
            &["--memsize", "8", "--initrd", path_str(&big)],
        ),
        &["the initrd is 7340032 bytes", "initrd_addr_max"],
    );

    let two = format!("{},{}", path_str(&big), path_str(&big));
    assert_refused(
        &run_bzimage(&dir, &idle_bzimage().build(), &["--initrd", &two]),
        &["one initrd file", "2 item(s)"],
    );
}

/// An ELF32 Multiboot kernel of `code`, loaded and entered at `load_at`,
/// occupying `mem_size` bytes.
fn multiboot_elf(load_at: u32, code: &[u8], mem_size: u32) -> Vec<u8> {
    let magic = 0x1BAD_B002u32;
    let flags = 0x3u32;
    let header = [magic, flags, 0u32.wrapping_sub(magic).wrapping_sub(flags)];
    let data_offset = 52 + 32 + 12;
    let mut image = b"\x7fELF\x01\x01\x01".to_vec();
    image.resize(16, 0);
    image.extend(2u16.to_le_bytes().into_iter().chain(3u16.to_le_bytes()));
    for w in [1, load_at, 52, 0, 0] {
        image.extend(u32::to_le_bytes(w));
    }
    for h in [52u16, 32, 1, 0, 0, 0] {
        image.extend(h.to_le_bytes());
    }
    let len = code.len() as u32;
    for w in [1, data_offset, load_at, load_at, len, mem_size, 7, 0x1000] {
        image.extend(w.to_le_bytes());
    }
    image.extend(header.iter().flat_map(|w| w.to_le_bytes()));
    image.extend_from_slice(code);
    image
}

/// A Multiboot guest that prints `ebx: <hex>`, `cmdline: [..]` and, for
/// each module, `module: [string] <first byte> <length>`, then reports 0.
fn multiboot_printer(base: u32) -> Vec<u8> {
    let mut c = Checker::new();
    let build = |c: &mut Checker| -> Asm {
        let mut print_hex = c.a.create_label();
        let mut next_module = c.a.create_label();
        let mut modules_done = c.a.create_label();
        c.a.mov(esp, STACK_TOP)?;
        c.a.mov(ebp, ebx)?;
        c.print("ebx: ")?;
        c.a.mov(eax, ebp)?;
        c.a.call(print_hex)?;
        c.print("\ncmdline: [")?;
        c.a.mov(ebx, dword_ptr(ebp + 16))?;
        c.print_string_at_ebx()?;
        c.print("]\n")?;
        c.a.mov(esi, dword_ptr(ebp + 24))?; // mods_addr
        c.a.mov(edi, dword_ptr(ebp + 20))?; // mods_count
        c.a.set_label(&mut next_module)?;
        c.a.test(edi, edi)?;
        c.a.jz(modules_done)?;
        c.print("module: [")?;
        c.a.mov(ebx, dword_ptr(esi + 8))?;
        c.print_string_at_ebx()?;
        c.print("] ")?;
        c.a.mov(ebx, dword_ptr(esi))?;
        c.a.movzx(eax, byte_ptr(ebx))?;
        c.a.call(print_hex)?;
        c.print(" ")?;
        c.a.mov(eax, dword_ptr(esi + 4))?;
        c.a.sub(eax, dword_ptr(esi))?;
        c.a.call(print_hex)?;
        c.print(" ")?;
        c.a.mov(eax, dword_ptr(esi))?;
        c.a.call(print_hex)?;
        c.print("\n")?;
        c.a.add(esi, 16)?;
        c.a.dec(edi)?;
        c.a.jmp(next_module)?;
        c.a.set_label(&mut modules_done)?;
        c.report(0)?;
        // EAX as eight hex digits.
        let mut digit = c.a.create_label();
        let mut decimal = c.a.create_label();
        c.a.set_label(&mut print_hex)?;
        c.a.mov(ebx, eax)?;
        c.a.mov(ecx, 8)?;
        c.a.mov(dx, COM1)?;
        c.a.set_label(&mut digit)?;
        c.a.rol(ebx, 4)?;
        c.a.mov(al, bl)?;
        c.a.and(al, 0xf)?;
        c.a.add(al, i32::from(b'0'))?;
        c.a.cmp(al, i32::from(b'9'))?;
        c.a.jbe(decimal)?;
        c.a.add(al, i32::from(b'a' - b'9' - 1))?;
        c.a.set_label(&mut decimal)?;
        c.a.out(dx, al)?;
        c.a.dec(ecx)?;
        c.a.jnz(digit)?;
        c.a.ret()
    };
    build(&mut c).expect("printer code");
    c.finish(base)
}

#[test]
fn initrd_list_becomes_multiboot_modules_above_the_kernel_with_their_strings() {
    let dir = Scratch::new("multiboot-modules");
    let kernel = dir.file(
        "mb.elf",
        &multiboot_elf(KERNEL_AT, &multiboot_printer(KERNEL_AT), 0x2000),
    );
    let first = dir.file("first.bin", &[0xa1; 0x1234]);
    let second = dir.file("second,part.bin", &[0xb2; 7]);
    let second_escaped = path_str(&second).replace(',', ",,");
    let initrd = format!("{} mode=fast verbose,{second_escaped}", path_str(&first));
    let run = run(&[
        "run",
        "--kernel",
        path_str(&kernel),
        "--initrd",
        &initrd,
        "--append",
        "hello",
    ]);
    assert_eq!(run.status, Some(0), "stderr:\n{}", run.stderr);
    let expected = format!(
        "ebx: 00009500\ncmdline: [{} hello]\n\
         module: [{} mode=fast verbose] 000000a1 00001234 00102000\n\
         module: [{}] 000000b2 00000007 00104000\n",
        path_str(&kernel),
        path_str(&first),
        path_str(&second),
    );
    assert_eq!(run.stdout, expected);
}

#[test]
fn multiboot_kernel_loaded_at_0x8000_gets_its_information_elsewhere() {
    let dir = Scratch::new("multiboot-low");
    // Code at 0x8000, and memory up to 0xb000: over QEMU's 0x9000.
    let kernel = dir.file(
        "low.elf",
        &multiboot_elf(0x8000, &multiboot_printer(0x8000), 0x3000),
    );
    let module = dir.file("m", b"\x42");
    let run = run(&[
        "run",
        "--kernel",
        path_str(&kernel),
        "--initrd",
        path_str(&module),
    ]);
    assert_eq!(run.status, Some(0), "stderr:\n{}", run.stderr);
    let expected = format!(
        "ebx: 00001500\ncmdline: [{} ]\nmodule: [{}] 00000042 00000001 00100000\n",
        path_str(&kernel),
        path_str(&module),
    );
    assert_eq!(run.stdout, expected);
}

/// The lines of `text` that a newline ends (a run stopped by a signal may
/// leave its last line half printed), without their line ends (a serial
/// console ends lines with CR LF).
fn complete_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    lines.pop();
    lines
}

/// Debian 12's i386 kernel, when it is present.
fn debian_kernel() -> Option<PathBuf> {
    let path = match std::env::var_os("NESTMON_LINUX_KERNEL") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/nestmon/debian-686/vmlinuz"),
    };
    path.is_file().then_some(path)
}

/// How long the real kernel may run before it is stopped: it decompresses
/// itself in one to three seconds, then prints its banner, the e820 map and
/// its command line within a few more.
const REAL_KERNEL_BUDGET: Duration = Duration::from_secs(8);
/// The command line the real kernel is given.
const REAL_KERNEL_APPEND: &str = "console=ttyS0 earlyprintk=serial";

#[test]
fn debian_i386_kernel_is_accepted_loaded_and_starts_executing() {
    let Some(kernel) = debian_kernel() else {
        assert!(
            std::env::var("CI").is_err(),
            "Debian's i386 kernel is missing under CI: .ci/setup fetches it to \
             ~/.cache/nestmon/debian-686/vmlinuz (or set NESTMON_LINUX_KERNEL)"
        );
        eprintln!("skipped: no Debian i386 kernel (run .ci/setup, or set NESTMON_LINUX_KERNEL)");
        return;
    };
    let dir = Scratch::new("debian-kernel");
    let console = dir.0.join("console.txt");
    let stats = dir.0.join("stats.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .args(["run", "--kernel"])
        .arg(&kernel)
        .args([
            "--memsize",
            "128",
            "--append",
            REAL_KERNEL_APPEND,
            "--stats-json",
        ])
        .arg(&stats)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console).expect("console file"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nestmon");
    let started = Instant::now();
    let banner = |text: &str| text.contains("Linux version");
    let command_line = |text: &str| {
        complete_lines(text)
            .iter()
            .any(|line| line.contains("Kernel command line:"))
    };
    while started.elapsed() < REAL_KERNEL_BUDGET
        && child.try_wait().expect("wait").is_none()
        && !command_line(&std::fs::read_to_string(&console).unwrap_or_default())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().expect("wait").is_none() {
        // SAFETY: kill(2) on the pid of the child this test spawned and
        // has not reaped yet, so the pid cannot have been reused.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(10) {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("nestmon did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("stderr");
    }
    let output = std::fs::read_to_string(&console).unwrap_or_default();
    // Stopped by SIGTERM (143), or stopped by itself where the machine
    // does not carry it further yet (3); never refused (2).
    assert!(
        matches!(status.code(), Some(143) | Some(3)),
        "the kernel was not loaded and run ({status:?}):\nstderr:\n{stderr}\nconsole:\n{output}"
    );
    let eip = stderr
        .split("EIP=")
        .nth(1)
        .and_then(|rest| u32::from_str_radix(&rest[..8], 16).ok())
        .unwrap_or_else(|| panic!("no stop report with EIP:\n{stderr}"));
    assert_ne!(eip, 0x10_0000, "the kernel never left code32_start");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats JSON"))
            .expect("stats JSON parses");
    let translated = report["counters"]["guest instructions translated"]
        .as_u64()
        .unwrap_or_else(|| panic!("no translation count in {report}"));
    assert!(
        translated > 1000,
        "only {translated} instructions translated"
    );
    // However far it got in the time it had, what it printed of what the
    // loader gave it must be what the loader gave it.
    let map = [
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009efff] usable",
        "BIOS-e820: [mem 0x000000000009f000-0x00000000000fffff] reserved",
        "BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable",
    ];
    let given = format!("Kernel command line: {REAL_KERNEL_APPEND}");
    for line in complete_lines(&output) {
        if let Some(at) = line.find("BIOS-e820:") {
            assert!(
                map.contains(&&line[at..]),
                "unexpected {line:?} in:\n{output}"
            );
        }
        if let Some(at) = line.find("Kernel command line:") {
            assert_eq!(&line[at..], given, "in:\n{output}");
        }
    }
    eprintln!(
        "Debian kernel: stopped at EIP {eip:#010x} after {:?}, {translated} instructions \
         translated, banner {}, command line {}",
        started.elapsed(),
        if banner(&output) {
            "printed"
        } else {
            "not yet printed"
        },
        if command_line(&output) {
            "printed"
        } else {
            "not yet printed"
        }
    );
}
