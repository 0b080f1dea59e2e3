//! The hardware backend (`--accel kvm`, `monitor/src/vcpu/kvm/`) against
//! binary translation (`--accel bt`): the same guests must print the same
//! bytes and exit the same way under both.
//!
//! This machine's (and CI's) `/dev/kvm` is `kvm_pvm`, which runs 32-bit
//! guests through KVM's instruction emulator at a few million
//! instructions per second, so only small guests run here, each within
//! [`KVM_TIME_CAP`]. Tests that need a VM print why they are skipped when
//! the KVM device cannot create one; the refusal tests need no KVM at all:
//! they point `NESTMON_KVM_DEVICE` at a path that is not a usable device.

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::{asm_guest, describe, filter, first_diff, guest_dir, run, run_signalled, stat, Run};
use std::process::Command;
use std::time::Duration;

/// The longest a guest may run under `kvm_pvm` (binary translation runs
/// the same guests in well under a second).
const KVM_TIME_CAP: Duration = Duration::from_secs(90);

/// Guests small enough for `kvm_pvm`: the banner, the VMware backdoor
/// (low-bandwidth port, RPCI, the high-bandwidth port's `rep
/// insb`/`rep outsb`), and the protected-mode guests whose every line
/// `kvm_pvm` can reproduce with the monitor's help (it refuses INT n,
/// INT3, INTO, IRET and far transfers through gates in protected mode,
/// and the backdoor port at ring 3 without I/O privilege, which nestmon
/// carries out itself: see `vcpu/kvm/emulate.rs` and
/// `vcpu/kvm/intercept.rs`).
///
/// Not here, because of what `kvm_pvm` itself does (docs/ARCHITECTURE.md,
/// "The hardware backend"): `alu` (KVM's emulator computes flags the SDM
/// leaves undefined differently from the host CPU); `pm_paging`,
/// `pm_tasks`, `pm_exceptions`, `pm_events`, `pm_spaces` (32-bit paging:
/// `kvm_pvm` raises #GP on MOV to CR0 with PG outside long mode);
/// `pm_sysenter` (CPUID answers come from the host
/// CPU under `kvm_pvm`, so its MTRR section differs); `pm_limits` (KVM's
/// emulator skips some segment-limit checks); `pm_timer` (no interrupt
/// window between STI and CLI); `pm_debug` (no data breakpoints in KVM's
/// emulator).
const SMALL_GUESTS: &[&str] = &[
    "hello",
    "backdoor",
    "pm_backdoor",
    "pm_rings",
    "pm_segments",
];

/// Guests whose x87, MMX, SSE and SSE2 instructions KVM's emulator gives
/// back under `kvm_pvm`, and nestmon runs on the host's FPU with the
/// guest's state loaded (`vcpu/kvm/fpu.rs`): their output must be binary
/// translation's and the expected file's (QEMU's). `pm_fpu_user` runs them
/// at ring 3, where `kvm_pvm` refuses them with a #UD that nestmon's
/// intercept takes back.
const FPU_GUESTS: &[&str] = &["x87", "mmx", "sse2", "pm_fpu", "pm_fpu_user"];

/// Unmasked SIMD and x87 exceptions in instructions nestmon runs on the
/// host's FPU: DIVSS by zero with MXCSR.ZM clear raises #XM (CR4.OSXMMEXCPT)
/// before writing XMM0, with MXCSR.ZE set (the handler prints `X`, the
/// flags digit, `=` if XMM0 kept 1.0); then FDIV by zero with FCW.ZM clear
/// completes without a fault, leaving FSW.ES set (`p`), and the next FWAIT
/// raises #MF (`M`). A #UD prints `U` and fails. Expected: `SX4=pM`.
const FPU_EXCEPTION_GUEST: &str = "
    sub esp, 160
    mov edi, esp
    mov ecx, 40
    xor eax, eax
    cld
    rep stosd
    mov ebx, offset on_ud
    mov edi, 6
    call set_gate
    mov ebx, offset on_mf
    mov edi, 16
    call set_gate
    mov ebx, offset on_xm
    mov edi, 19
    call set_gate
    sub esp, 8
    mov word ptr [esp + 2], 159
    lea eax, [esp + 8]
    mov dword ptr [esp + 4], eax
    lidt [esp + 2]
    mov eax, cr4
    or eax, 0x600
    mov cr4, eax
    mov eax, cr0
    and eax, 0xfffffff3
    or eax, 0x22
    mov cr0, eax
    mov dx, 0x3f8
    mov al, 'S'
    out dx, al
    push 0x1d80
    ldmxcsr [esp]
    mov eax, 0x3f800000
    movd xmm0, eax
    xorps xmm1, xmm1
    divss xmm0, xmm1
    mov al, 'n'
    out dx, al
    jmp fail
set_gate:
    mov word ptr [esp + 4 + edi * 8], bx
    mov word ptr [esp + 4 + edi * 8 + 2], 0x08
    mov word ptr [esp + 4 + edi * 8 + 4], 0x8e00
    shr ebx, 16
    mov word ptr [esp + 4 + edi * 8 + 6], bx
    ret
on_xm:
    mov dx, 0x3f8
    mov al, 'X'
    out dx, al
    sub esp, 4
    stmxcsr [esp]
    mov eax, [esp]
    and al, 0x3f
    add al, '0'
    out dx, al
    movd eax, xmm0
    cmp eax, 0x3f800000
    mov al, '='
    je 1f
    mov al, '!'
1:  out dx, al
    fninit
    push 0x037b
    fldcw [esp]
    push 0
    fld1
    fdiv dword ptr [esp]
    fnstsw ax
    test al, 0x80
    mov al, 'p'
    jnz 2f
    mov al, '-'
2:  mov dx, 0x3f8
    out dx, al
    fwait
    mov al, 'n'
    out dx, al
    jmp fail
on_mf:
    mov dx, 0x3f8
    mov al, 'M'
    out dx, al
    fnclex
    mov al, 0
    out 0xf4, al
3:  hlt
    jmp 3b
on_ud:
    mov dx, 0x3f8
    mov al, 'U'
    out dx, al
fail:
    mov al, 1
    out 0xf4, al
4:  hlt
    jmp 4b
";

/// A guest that takes the PIT's IRQ0 through the PIC at vector 0x20
/// (`sti; hlt` waits for it); the handler prints `I` and ends the run.
const TIMER_INTERRUPT_GUEST: &str = "
    sub esp, 264
    mov edi, esp
    mov ecx, 66
    xor eax, eax
    cld
    rep stosd
    mov eax, offset irq0
    mov word ptr [esp + 0x100], ax
    mov word ptr [esp + 0x102], 0x08
    mov word ptr [esp + 0x104], 0x8e00
    shr eax, 16
    mov word ptr [esp + 0x106], ax
    sub esp, 8
    mov word ptr [esp + 2], 263
    lea eax, [esp + 8]
    mov dword ptr [esp + 4], eax
    lidt [esp + 2]
    mov al, 0x11
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x01
    out 0x21, al
    mov al, 0xfe
    out 0x21, al
    mov al, 0x34
    out 0x43, al
    mov al, 0xa9
    out 0x40, al
    mov al, 0x04
    out 0x40, al
    mov dx, 0x3f8
    mov al, 'W'
    out dx, al
    sti
2:  hlt
    jmp 2b
irq0:
    mov dx, 0x3f8
    mov al, 'I'
    out dx, al
    mov al, 0
    out 0xf4, al
3:  hlt
    jmp 3b
";

/// Whether this host can create a KVM VM; prints why not.
fn kvm_usable(test: &str) -> bool {
    match monitor::vcpu::kvm::open_vm() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped {test}: the hardware backend cannot run here: {e}");
            false
        }
    }
}

fn nestmon(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestmon"));
    command.args(args);
    command
}

fn run_guest(name: &str, accel: &str, extra: &[&str]) -> Run {
    let elf = guest_dir().join(format!("{name}.elf"));
    let mut args = vec!["run", "--accel", accel, "--kernel", elf.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&mut nestmon(&args), KVM_TIME_CAP)
}

/// The guest's output with what legitimately differs between runs masked:
/// informational `#` lines, and the digits of the backdoor's clock line
/// (a measured TSC frequency and elapsed time).
fn comparable(stdout: &str) -> String {
    filter(stdout)
        .lines()
        .map(|line| {
            if line.starts_with("clock: ok") {
                line.chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .collect()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn small_guests_print_the_same_under_kvm_and_binary_translation() {
    if !kvm_usable("small_guests_print_the_same_under_kvm_and_binary_translation") {
        return;
    }
    let mut failures = Vec::new();
    for name in SMALL_GUESTS {
        let bt = run_guest(name, "bt", &[]);
        let kvm = run_guest(name, "kvm", &[]);
        eprintln!("{name}: bt {:.2?}, kvm {:.2?}", bt.elapsed, kvm.elapsed);
        if bt.code != Some(0) {
            failures.push(format!("{name} under bt: {}", describe(&bt)));
        }
        if kvm.code != bt.code {
            failures.push(format!("{name} under kvm: {}", describe(&kvm)));
            continue;
        }
        let (want, got) = (comparable(&bt.stdout), comparable(&kvm.stdout));
        if want != got {
            failures.push(format!(
                "{name}: kvm differs from bt: {}",
                first_diff(&want, &got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fpu_guests_print_under_kvm_what_they_print_under_binary_translation_and_qemu() {
    if !kvm_usable("fpu_guests_print_under_kvm_what_they_print_under_binary_translation_and_qemu") {
        return;
    }
    let emulating = !monitor::kvm::hardware_virtualization_visible(&monitor::probe::host_cpuid);
    let mut failures = Vec::new();
    for name in FPU_GUESTS {
        let bt = run_guest(name, "bt", &[]);
        let kvm = run_guest(name, "kvm", &["--stats"]);
        eprintln!("{name}: bt {:.2?}, kvm {:.2?}", bt.elapsed, kvm.elapsed);
        if kvm.code != Some(0) || bt.code != Some(0) {
            failures.push(format!(
                "{name}: bt {}; kvm {}",
                describe(&bt),
                describe(&kvm)
            ));
            continue;
        }
        let got = filter(&kvm.stdout);
        if got != filter(&bt.stdout) {
            let diff = first_diff(&filter(&bt.stdout), &got);
            failures.push(format!("{name}: kvm differs from bt: {diff}"));
        }
        match guestkit::expected(name) {
            Some(want) if want != got => failures.push(format!(
                "{name}: kvm differs from expected/{name}.out: {}",
                first_diff(&want, &got)
            )),
            Some(_) => {}
            None => failures.push(format!("{name}: no expected/{name}.out")),
        }
        // Under an emulating KVM the FPU instructions reach the monitor.
        if emulating && stat(&kvm.stderr, "instructions carried out by nestmon") == 0 {
            failures.push(format!(
                "{name}: nestmon carried nothing out:\n{}",
                kvm.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unmasked_simd_and_x87_exceptions_reach_the_guest_as_xm_and_mf_under_both_backends() {
    if !kvm_usable(
        "unmasked_simd_and_x87_exceptions_reach_the_guest_as_xm_and_mf_under_both_backends",
    ) {
        return;
    }
    let elf = asm_guest("kvm_fpu_exceptions", FPU_EXCEPTION_GUEST);
    for accel in ["bt", "kvm"] {
        let r = run(
            &mut nestmon(&["run", "--accel", accel, "--kernel", elf.to_str().unwrap()]),
            KVM_TIME_CAP,
        );
        assert_eq!(r.code, Some(0), "{accel}: {}", describe(&r));
        assert_eq!(r.stdout, "SX4=pM", "{accel}");
    }
}

#[test]
fn a_timer_interrupt_reaches_the_guest_through_the_pic_under_both_backends() {
    if !kvm_usable("a_timer_interrupt_reaches_the_guest_through_the_pic_under_both_backends") {
        return;
    }
    let elf = asm_guest("kvm_irq0", TIMER_INTERRUPT_GUEST);
    for accel in ["bt", "kvm"] {
        let r = run(
            &mut nestmon(&[
                "run",
                "--accel",
                accel,
                "--stats",
                "--kernel",
                elf.to_str().unwrap(),
            ]),
            KVM_TIME_CAP,
        );
        assert_eq!(r.code, Some(0), "{accel}: {}", describe(&r));
        assert_eq!(r.stdout, "WI", "{accel}");
        assert_eq!(
            stat(&r.stderr, "external interrupts"),
            1,
            "{accel}: {}",
            r.stderr
        );
    }
}

#[test]
fn accel_kvm_where_the_device_is_missing_is_refused_with_status_2() {
    let elf = guest_dir().join("hello.elf");
    let r = run(
        nestmon(&["run", "--accel", "kvm", "--kernel", elf.to_str().unwrap()])
            .env("NESTMON_KVM_DEVICE", "/nonexistent/kvm"),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert_eq!(r.stdout, "", "nothing ran");
    assert!(
        r.stderr.contains(
            "nestmon: --accel kvm: hardware execution is not possible: cannot open /nonexistent/kvm"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn accel_kvm_where_the_device_cannot_create_a_vm_is_refused_with_status_2() {
    let elf = guest_dir().join("hello.elf");
    let r = run(
        nestmon(&["run", "--accel", "kvm", "--kernel", elf.to_str().unwrap()])
            .env("NESTMON_KVM_DEVICE", "/dev/null"),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert_eq!(r.stdout, "", "nothing ran");
    assert!(
        r.stderr
            .contains("/dev/null cannot create a VM (KVM_CREATE_VM)"),
        "{}",
        r.stderr
    );
}

#[test]
fn accel_bt_runs_the_binary_translator_whatever_the_configuration_asks() {
    let r = run_guest(
        "hello",
        "bt",
        &["--stats", "--set", "monitor.virtual_exec=hardware"],
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(stat(&r.stderr, "translations") > 0, "{}", r.stderr);
    assert!(
        !r.stderr.contains("reverting"),
        "--accel bt is not a reverted request:\n{}",
        r.stderr
    );
}

#[test]
fn stats_under_kvm_count_exits_by_reason_in_the_usual_format() {
    if !kvm_usable("stats_under_kvm_count_exits_by_reason_in_the_usual_format") {
        return;
    }
    let r = run_guest("hello", "kvm", &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let io = stat(&r.stderr, "exits: port I/O");
    // One OUT per character on COM1, at least.
    assert!(io as usize >= r.stdout.len(), "{}", r.stderr);
    let total = stat(&r.stderr, "exits: total");
    assert!(total >= io, "{}", r.stderr);
    assert!(
        r.stderr.contains("nestmon statistics:\n  elapsed (s)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("\n  exits per second "), "{}", r.stderr);
}

#[test]
fn a_triple_fault_under_kvm_stops_with_the_registers_and_status_3() {
    if !kvm_usable("a_triple_fault_under_kvm_stops_with_the_registers_and_status_3") {
        return;
    }
    // An empty IDT: UD2 raises #UD, whose delivery raises #GP, then #DF,
    // then the CPU shuts down.
    let elf = asm_guest(
        "kvm_triple",
        "push 0\npush 0\nlidt [esp+2]\nmov ebx, 0x1234abcd\nud2\nret",
    );
    let r = run(
        &mut nestmon(&["run", "--accel", "kvm", "--kernel", elf.to_str().unwrap()]),
        KVM_TIME_CAP,
    );
    assert_eq!(r.code, Some(3), "{}", describe(&r));
    assert!(r.stderr.contains("triple fault"), "{}", r.stderr);
    assert!(r.stderr.contains("EBX=1234abcd"), "{}", r.stderr);
}

#[test]
fn sigint_stops_a_spinning_guest_under_kvm() {
    if !kvm_usable("sigint_stops_a_spinning_guest_under_kvm") {
        return;
    }
    let elf = asm_guest(
        "kvm_spin",
        "mov dx, 0x3f8\nmov al, 'x'\nout dx, al\n1: jmp 1b",
    );
    let r = run_signalled(
        &mut nestmon(&["run", "--accel", "kvm", "--kernel", elf.to_str().unwrap()]),
        KVM_TIME_CAP,
        Some((Duration::from_millis(200), libc::SIGINT)),
    );
    assert_eq!(r.code, Some(130), "{}", describe(&r));
    assert_eq!(r.stdout, "x");
    assert!(r.stderr.contains("guest stopped by SIGINT"), "{}", r.stderr);
}

/// A 64-bit Multiboot kernel (ELF64, entered in 32-bit protected mode as
/// GRUB enters one): prints "32", builds identity page tables for the
/// first GiB, enables PAE, EFER.LME and paging, far-jumps to a 64-bit code
/// segment, prints "64" and reports success.
const LONG_MODE_GUEST: &str = r#"
    .section .text
    .code32
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002
    .globl _start
_start:
    mov $0x3f8, %dx
    mov $'3', %al
    out %al, %dx
    mov $'2', %al
    out %al, %dx
    mov $0x200000, %edi
    xor %eax, %eax
    mov $0xc00, %ecx
    rep stosl
    movl $0x201003, 0x200000
    movl $0x202003, 0x201000
    mov $0x202000, %edi
    mov $0x83, %eax
    mov $512, %ecx
1:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b
    lgdt gdt_ptr
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0x200000, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax
    mov %eax, %cr0
    ljmp $0x18, $long64
    .code64
long64:
    mov $0x3f8, %dx
    mov $'6', %al
    out %al, %dx
    mov $'4', %al
    out %al, %dx
    xor %eax, %eax
    out %al, $0xf4
2:  hlt
    jmp 2b
    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt
"#;

/// Builds [`LONG_MODE_GUEST`] with the host's gcc (x86-64).
fn long_mode_guest() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("long-mode-guest");
    std::fs::create_dir_all(&dir).unwrap();
    let (src, elf) = (dir.join("k64.S"), dir.join("k64.elf"));
    std::fs::write(&src, LONG_MODE_GUEST).unwrap();
    let built = Command::new("gcc")
        .args([
            "-m64",
            "-nostdlib",
            "-static",
            "-no-pie",
            "-Wl,-Ttext=0x100000",
        ])
        .args(["-Wl,--build-id=none", "-Wl,-z,noexecstack", "-o"])
        .arg(&elf)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        built.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    elf
}

fn run_kernel(kernel: &std::path::Path, extra: &[&str], device: Option<&str>) -> Run {
    let mut args = vec!["run", "--kernel", kernel.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut command = nestmon(&args);
    if let Some(device) = device {
        command.env("NESTMON_KVM_DEVICE", device);
    }
    run(&mut command, KVM_TIME_CAP)
}

#[test]
fn a_64bit_kernel_goes_to_hardware_execution_and_reaches_long_mode() {
    if !kvm_usable("a_64bit_kernel_goes_to_hardware_execution_and_reaches_long_mode") {
        return;
    }
    let kernel = long_mode_guest();
    for extra in [&[][..], &["--set", "monitor.virtual_exec=software"][..]] {
        let r = run_kernel(&kernel, extra, None);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
        assert_eq!(r.stdout, "3264", "{extra:?}");
        assert!(
            r.stderr.contains(
                "the kernel is a 64-bit (ELF64) kernel, which binary translation cannot run"
            ),
            "{extra:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn a_64bit_kernel_without_a_kvm_that_can_create_a_vm_is_refused_with_status_2() {
    let r = run_kernel(&long_mode_guest(), &[], Some("/dev/null"));
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert_eq!(r.stdout, "", "nothing ran");
    assert!(
        r.stderr.contains("/dev/null cannot create a VM"),
        "{}",
        r.stderr
    );
    if !monitor::kvm::hardware_virtualization_visible(&monitor::probe::host_cpuid) {
        assert!(
            r.stderr.contains(
                "nestmon: the kernel is a 64-bit (ELF64) kernel: it switches to long mode, which \
                 needs hardware execution"
            ),
            "{}",
            r.stderr
        );
        assert!(r
            .stderr
            .contains("binary translation runs 32-bit guests only"));
    }
}

#[test]
fn a_64bit_kernel_forced_under_binary_translation_stops_cleanly_before_long_mode() {
    let r = run_kernel(&long_mode_guest(), &["--accel", "bt"], None);
    assert_eq!(r.code, Some(3), "{}", describe(&r));
    assert_eq!(r.stdout, "32", "its 32-bit start ran");
    assert!(
        r.stderr.contains(
            "nestmon: note: the kernel is a 64-bit (ELF64) kernel and --accel bt forces binary \
             translation, which runs it only until it enables long mode"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn nestmon_accel_in_a_vmx_file_forces_the_backend_and_is_named_when_refused() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("accel-vmx");
    std::fs::create_dir_all(&dir).unwrap();
    let hello = guest_dir().join("hello.elf");
    let vmx = |name: &str, accel: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "nestmon.kernel = \"{}\"\nmonitor.virtual_exec = \"hardware\"\nnestmon.accel = \"{accel}\"\n",
                hello.display()
            ),
        )
        .unwrap();
        path
    };
    let bt = vmx("bt.vmx", "bt");
    let r = run(
        &mut nestmon(&["run", bt.to_str().unwrap(), "--stats"]),
        KVM_TIME_CAP,
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(stat(&r.stderr, "translations") > 0, "{}", r.stderr);
    assert!(!r.stderr.contains("reverting"), "{}", r.stderr);
    let kvm = vmx("kvm.vmx", "kvm");
    let r = run(
        nestmon(&["run", kvm.to_str().unwrap()]).env("NESTMON_KVM_DEVICE", "/dev/null"),
        KVM_TIME_CAP,
    );
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert!(
        r.stderr.contains(&format!(
            "nestmon: nestmon.accel = \"kvm\" ({}:3): hardware execution is not possible: \
             /dev/null cannot create a VM",
            kvm.display()
        )),
        "{}",
        r.stderr
    );
    // --accel on the command line wins over the file.
    let r = run(
        nestmon(&["run", kvm.to_str().unwrap(), "--accel", "bt"])
            .env("NESTMON_KVM_DEVICE", "/dev/null"),
        KVM_TIME_CAP,
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
}
