//! The options of docs/config.md, each checked by its effect on a real run
//! (`nestmon run`, never `--check`): a guest boots, and what it observes
//! or what the run does (exit status, diagnostics, files) is what the
//! option promises.
//!
//! The guests are assembled here with iced-x86 (no compiler needed): each
//! prints what it observes on COM1, as `label: word word …` lines of hex
//! words, and reports through isa-debug-exit. (The compiled guests of
//! guests/ cannot serve for everything: their runtime enables SSE at entry,
//! which a guest CPU without SSE refuses.)
//!
//! Parsing alone is tested in monitor/src/config and tests/config.rs; the
//! nesting handshake (`vmx.allowNested`) against a simulated outer VMware
//! hypervisor in monitor/src/machine/tests.rs.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{captured, finish_within, nestmon, Finished};
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/tiny_guest.rs"]
mod tiny_guest;

/// How long a run may take before the test calls it a hang.
const TIME_LIMIT: Duration = Duration::from_secs(60);

// Low memory the probe guests use: above the real-mode interrupt table
// and below the Multiboot information (0x9000), so never loaded over.
/// EBX at entry: the Multiboot information structure.
const INFO_POINTER: u32 = 0x500;
/// The RPCI channel number (in the high half, as EDX carries it).
const RPC_CHANNEL: u32 = 0x504;
/// The channel's cookies (ESI, EDI).
const RPC_COOKIE_HIGH: u32 = 0x508;
const RPC_COOKIE_LOW: u32 = 0x50c;
/// Reply bytes still to print.
const RPC_LENGTH: u32 = 0x510;
/// A flat GDT (null, code 0x08, data 0x10: the Multiboot selectors).
const GDT: u32 = 0x1000;
/// The GDTR image, then (at +8) the IDTR image.
const TABLE_REGISTERS: u32 = 0x1100;
const IDT: u32 = 0x2000;
const STACK_TOP: u32 = 0x8000;

const COM1: i32 = 0x3f8;
const DEBUG_EXIT: i32 = 0xf4;
const INVALID_OPCODE: u32 = 6;

// The VMware backdoor (open-vm-tools backdoor_def.h, guest_msg_def.h).
const BDOOR_MAGIC: u32 = 0x564d_5868;
const BDOOR_PORT: u32 = 0x5658;
const CMD_GETMEMSIZE: u32 = 20;
const CMD_GETUUID: u32 = 19;
const CMD_MESSAGE: u32 = 30;
const MSG_OPEN: u32 = 0;
const MSG_SENDSIZE: u32 = 1;
const MSG_SENDPAYLOAD: u32 = 2;
const MSG_RECVSIZE: u32 = 3;
const MSG_RECVPAYLOAD: u32 = 4;
const MSG_RECVSTATUS: u32 = 5;
const MSG_CLOSE: u32 = 6;
/// Message status SUCCESS, as it appears in ECX (high half).
const STATUS_SUCCESS: u32 = 1 << 16;
const PROTO_RPCI_WITH_COOKIE: u32 = 0x4943_5052 | 0x8000_0000;

type Asm = Result<(), IcedError>;

/// A guest under construction: 32-bit code loaded and entered at 1 MiB,
/// with a stack, a hex printer and (for RPCs) a failure path.
struct ProbeGuest {
    a: CodeAssembler,
    print_hex: CodeLabel,
    rpc_failed: CodeLabel,
    marks: Vec<CodeLabel>,
}

/// An assembled guest and the addresses of its marks.
struct Built {
    elf: Vec<u8>,
    marks: Vec<u32>,
}

/// Assembles a guest: `body` runs after the entry code (which keeps EBX,
/// the Multiboot information, at [`INFO_POINTER`] and sets up a stack).
fn probe_guest(body: impl FnOnce(&mut ProbeGuest) -> Asm) -> Built {
    let mut a = CodeAssembler::new(32).expect("32-bit assembler");
    let print_hex = a.create_label();
    let rpc_failed = a.create_label();
    let mut guest = ProbeGuest {
        a,
        print_hex,
        rpc_failed,
        marks: Vec::new(),
    };
    guest.entry().expect("entry code");
    body(&mut guest).expect("guest body");
    guest.finish().expect("assembled")
}

impl ProbeGuest {
    fn entry(&mut self) -> Asm {
        self.a.mov(dword_ptr(INFO_POINTER), ebx)?;
        self.a.mov(esp, STACK_TOP)
    }

    /// Prints `text` on COM1 (clobbers EAX and EDX).
    fn print(&mut self, text: &str) -> Asm {
        self.a.mov(dx, COM1)?;
        for byte in text.bytes() {
            self.a.mov(al, i32::from(byte))?;
            self.a.out(dx, al)?;
        }
        Ok(())
    }

    /// Prints `label:` and the values of `registers` as hex words, one
    /// line (clobbers EAX and EDX).
    fn dump(&mut self, label: &str, registers: &[AsmRegister32]) -> Asm {
        for register in registers.iter().rev() {
            self.a.push(*register)?;
        }
        self.print(&format!("{label}:"))?;
        for _ in registers {
            self.print(" ")?;
            self.a.pop(eax)?;
            self.a.call(self.print_hex)?;
        }
        self.print("\n")
    }

    /// Prints `cpuid LEAF: eax ebx ecx edx` for `leaf` (subleaf 0).
    fn cpuid(&mut self, leaf: u32) -> Asm {
        self.a.mov(eax, leaf)?;
        self.a.xor(ecx, ecx)?;
        self.a.cpuid()?;
        self.dump(&format!("cpuid {leaf:08x}"), &[eax, ebx, ecx, edx])
    }

    /// A low-bandwidth backdoor call; the reply is left in the registers.
    fn backdoor(&mut self, command: u32, ebx_value: u32) -> Asm {
        self.a.mov(eax, BDOOR_MAGIC)?;
        self.a.mov(ebx, ebx_value)?;
        self.a.mov(ecx, command)?;
        self.a.mov(edx, BDOOR_PORT)?;
        self.a.in_(eax, dx)
    }

    /// One GuestRPC message on the open channel; a reply without the
    /// SUCCESS status ends the run through [`Self::rpc_failed`].
    fn message(&mut self, kind: u32, ebx_value: u32) -> Asm {
        self.a.mov(eax, BDOOR_MAGIC)?;
        self.a.mov(ebx, ebx_value)?;
        self.a.mov(ecx, CMD_MESSAGE | kind << 16)?;
        self.a.mov(edx, dword_ptr(RPC_CHANNEL))?;
        self.a.or(edx, BDOOR_PORT as i32)?;
        self.a.mov(esi, dword_ptr(RPC_COOKIE_HIGH))?;
        self.a.mov(edi, dword_ptr(RPC_COOKIE_LOW))?;
        self.a.in_(eax, dx)?;
        self.a.test(ecx, STATUS_SUCCESS)?;
        self.a.jz(self.rpc_failed)
    }

    /// Sends `request` over a fresh RPCI channel, as VMware Tools do, and
    /// prints `REQUEST: REPLY`.
    fn rpc(&mut self, request: &str) -> Asm {
        self.a.xor(eax, eax)?;
        for slot in [RPC_CHANNEL, RPC_COOKIE_HIGH, RPC_COOKIE_LOW] {
            self.a.mov(dword_ptr(slot), eax)?;
        }
        self.message(MSG_OPEN, PROTO_RPCI_WITH_COOKIE)?;
        self.a.and(edx, 0xffff_0000u32 as i32)?;
        self.a.mov(dword_ptr(RPC_CHANNEL), edx)?;
        self.a.mov(dword_ptr(RPC_COOKIE_HIGH), esi)?;
        self.a.mov(dword_ptr(RPC_COOKIE_LOW), edi)?;
        self.message(MSG_SENDSIZE, request.len() as u32)?;
        for chunk in request.as_bytes().chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.message(MSG_SENDPAYLOAD, u32::from_le_bytes(word))?;
        }
        self.message(MSG_RECVSIZE, 0)?;
        self.a.cmp(ebx, 4096)?;
        self.a.ja(self.rpc_failed)?;
        self.a.mov(dword_ptr(RPC_LENGTH), ebx)?;
        self.print(&format!("{request}: "))?;
        // Each RECVPAYLOAD brings four bytes in EBX, lowest first.
        let mut next_word = self.a.create_label();
        let mut next_byte = self.a.create_label();
        let mut received = self.a.create_label();
        self.a.set_label(&mut next_word)?;
        self.a.cmp(dword_ptr(RPC_LENGTH), 0)?;
        self.a.je(received)?;
        self.message(MSG_RECVPAYLOAD, 1)?;
        self.a.mov(ecx, 4)?;
        self.a.mov(dx, COM1)?;
        self.a.set_label(&mut next_byte)?;
        self.a.cmp(dword_ptr(RPC_LENGTH), 0)?;
        self.a.je(next_word)?;
        self.a.mov(al, bl)?;
        self.a.out(dx, al)?;
        self.a.shr(ebx, 8)?;
        self.a.dec(dword_ptr(RPC_LENGTH))?;
        self.a.dec(ecx)?;
        self.a.jnz(next_byte)?;
        self.a.jmp(next_word)?;
        self.a.set_label(&mut received)?;
        self.message(MSG_RECVSTATUS, 1)?;
        self.message(MSG_CLOSE, 0)?;
        self.print("\n")
    }

    /// Loads a flat GDT and an IDT whose one gate, #UD, prints `#UD at:
    /// EIP` (the faulting instruction) and reports success.
    fn catch_invalid_opcode(&mut self) -> Asm {
        let descriptors = [0, 0, 0x0000_ffff, 0x00cf_9a00, 0x0000_ffff, 0x00cf_9200];
        for (index, word) in descriptors.into_iter().enumerate() {
            self.a.mov(dword_ptr(GDT + 4 * index as u32), word as u32)?;
        }
        self.a.mov(word_ptr(TABLE_REGISTERS), 3 * 8 - 1)?;
        self.a.mov(dword_ptr(TABLE_REGISTERS + 2), GDT)?;
        self.a.mov(
            word_ptr(TABLE_REGISTERS + 8),
            (INVALID_OPCODE as i32 + 1) * 8 - 1,
        )?;
        self.a.mov(dword_ptr(TABLE_REGISTERS + 10), IDT)?;
        self.a.lgdt(ptr(TABLE_REGISTERS))?;
        self.a.lidt(ptr(TABLE_REGISTERS + 8))?;
        // The handler follows the call: its address is what the call pushes.
        let mut install = self.a.create_label();
        self.a.call(install)?;
        self.print("#UD at: ")?;
        self.a.mov(eax, dword_ptr(esp))?;
        self.a.call(self.print_hex)?;
        self.print("\n")?;
        self.report(0)?;
        self.a.set_label(&mut install)?;
        self.a.pop(eax)?;
        let gate = IDT + INVALID_OPCODE * 8;
        self.a.mov(word_ptr(gate), ax)?;
        self.a.mov(word_ptr(gate + 2), 0x08)?;
        self.a.mov(word_ptr(gate + 4), 0x8e00)?; // present, DPL 0, 32-bit interrupt gate
        self.a.shr(eax, 16)?;
        self.a.mov(word_ptr(gate + 6), ax)
    }

    /// Lets the FPU and SSE run: CR0.EM and TS clear, MP set, and
    /// CR4.OSFXSR (which needs FXSR, not SSE) set.
    fn enable_fxsr(&mut self) -> Asm {
        self.a.mov(eax, cr0)?;
        self.a.and(eax, !0xc)?;
        self.a.or(eax, 0x2)?;
        self.a.mov(cr0, eax)?;
        self.a.mov(eax, cr4)?;
        self.a.or(eax, 0x200)?;
        self.a.mov(cr4, eax)
    }

    /// Labels the next instruction; its address is in [`Built::marks`].
    fn mark(&mut self) -> Asm {
        let mut label = self.a.create_label();
        self.a.set_label(&mut label)?;
        self.marks.push(label);
        Ok(())
    }

    /// Writes `value` to isa-debug-exit, which ends the run.
    fn report(&mut self, value: u32) -> Asm {
        self.a.mov(eax, value)?;
        self.a.out(DEBUG_EXIT, eax)?;
        self.a.hlt()
    }

    fn finish(mut self) -> Result<Built, IcedError> {
        self.emit_print_hex()?;
        self.a.set_label(&mut self.rpc_failed)?;
        self.print("RPC failed\n")?;
        self.report(0xbad)?;
        let result = self.a.assemble_options(
            u64::from(tiny_guest::LOAD_AT),
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )?;
        let marks = self
            .marks
            .iter()
            .map(|label| result.label_ip(label).map(|ip| ip as u32))
            .collect::<Result<_, _>>()?;
        Ok(Built {
            elf: tiny_guest::elf_guest(&result.inner.code_buffer),
            marks,
        })
    }

    /// The subroutine printing EAX as eight hex digits (keeps EBX, ECX, EDX).
    fn emit_print_hex(&mut self) -> Asm {
        let mut digit = self.a.create_label();
        let mut decimal = self.a.create_label();
        self.a.set_label(&mut self.print_hex)?;
        self.a.push(ebx)?;
        self.a.push(ecx)?;
        self.a.push(edx)?;
        self.a.mov(ebx, eax)?;
        self.a.mov(ecx, 8)?;
        self.a.mov(dx, COM1)?;
        self.a.set_label(&mut digit)?;
        self.a.rol(ebx, 4)?;
        self.a.mov(al, bl)?;
        self.a.and(al, 0xf)?;
        self.a.add(al, i32::from(b'0'))?;
        self.a.cmp(al, i32::from(b'9'))?;
        self.a.jbe(decimal)?;
        self.a.add(al, i32::from(b'a' - b'9' - 1))?;
        self.a.set_label(&mut decimal)?;
        self.a.out(dx, al)?;
        self.a.dec(ecx)?;
        self.a.jnz(digit)?;
        self.a.pop(edx)?;
        self.a.pop(ecx)?;
        self.a.pop(ebx)?;
        self.a.ret()
    }
}

/// The hex words a guest printed on its `label:` line.
fn words(stdout: &str, label: &str) -> Vec<u32> {
    let prefix = format!("{label}:");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"));
    line.split_whitespace()
        .map(|word| u32::from_str_radix(word, 16).expect("a hex word"))
        .collect()
}

/// `[eax, ebx, ecx, edx]` of the guest's CPUID `leaf`.
fn cpuid(stdout: &str, leaf: u32) -> [u32; 4] {
    words(stdout, &format!("cpuid {leaf:08x}"))
        .try_into()
        .expect("four registers")
}

/// The 12-character signature of CPUID leaf 0x4000_0000 (EBX, ECX, EDX).
fn hypervisor_signature(leaf: [u32; 4]) -> String {
    leaf[1..]
        .iter()
        .flat_map(|register| register.to_le_bytes())
        .map(char::from)
        .collect()
}

/// A guest that prints `ran` and reports success.
fn passing_guest() -> Vec<u8> {
    probe_guest(|g| {
        g.print("ran\n")?;
        g.report(0)
    })
    .elf
}

/// A guest that dumps CPUID `leaves` and reports success.
fn cpuid_guest(leaves: &[u32]) -> Vec<u8> {
    probe_guest(|g| {
        for leaf in leaves {
            g.cpuid(*leaf)?;
        }
        g.report(0)
    })
    .elf
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `nestmon ARGS`, standard output and error captured.
fn run(args: &[&str]) -> Finished {
    captured(TIME_LIMIT, args)
}

/// `nestmon run --kernel KERNEL EXTRA…`.
fn run_kernel(kernel: &Path, extra: &[&str]) -> Finished {
    let mut args = vec!["run", "--kernel", text(kernel)];
    args.extend_from_slice(extra);
    run(&args)
}

/// Standard error without the lines of the nesting handshake, which only a
/// host whose hypervisor is VMware prints (the handshake is tested on its
/// own, below and in monitor/src/machine/tests.rs).
fn diagnostics(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| {
            !line.starts_with("nestmon: the outer hypervisor is VMware")
                && !line.contains(" outer VMware backdoor ")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Asserts the run ended with the guest's success report.
fn assert_passed(run: &Finished) {
    assert_eq!(
        run.status,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

// ---- nestmon.kernel, nestmon.append ----

#[test]
fn kernel_and_append_in_a_vmx_boot_the_kernel_beside_the_file_from_any_working_directory() {
    let dir = Scratch::new("options-vmx-kernel");
    std::fs::create_dir_all(dir.0.join("kernels")).expect("kernels/");
    let kernel = dir.file("kernels/cmdline.elf", &tiny_guest::command_line_printer());
    let vmx = dir.file(
        "machine.vmx",
        b"nestmon.kernel = \"kernels/cmdline.elf\"\n\
          nestmon.append = \"from the |22vmx|22 file\"\n",
    );
    let elsewhere = Scratch::new("options-vmx-kernel-cwd");
    let r = finish_within(
        TIME_LIMIT,
        nestmon(&["run", text(&vmx)]).current_dir(&elsewhere.0),
        Stdio::piped(),
        Stdio::piped(),
        false,
    );
    assert_passed(&r);
    assert_eq!(
        r.stdout,
        format!("{} from the \"vmx\" file\n", kernel.display()),
        "the Multiboot command line: the kernel beside the .vmx, then nestmon.append"
    );
}

// ---- memsize ----

/// A guest that prints Multiboot's `mem_upper` (KiB above 1 MiB) and the
/// backdoor's GETMEMSIZE (MiB), then reports success.
fn memory_guest() -> Vec<u8> {
    probe_guest(|g| {
        g.a.mov(eax, dword_ptr(INFO_POINTER))?;
        g.a.mov(eax, dword_ptr(eax + 8))?;
        g.dump("mem_upper", &[eax])?;
        g.backdoor(CMD_GETMEMSIZE, 0)?;
        g.dump("getmemsize", &[eax])?;
        g.report(0)
    })
    .elf
}

#[test]
fn guest_sees_the_configured_memsize_in_multiboot_mem_upper_and_backdoor_getmemsize() {
    let dir = Scratch::new("options-memsize");
    let kernel = dir.file("memory.elf", &memory_guest());
    let vmx = dir.file(
        "small.vmx",
        b"nestmon.kernel = \"memory.elf\"\nmemsize = \"64\"\n",
    );
    let from_file = run(&["run", text(&vmx)]);
    let from_set = run_kernel(&kernel, &["--set", "memsize=256"]);
    for (r, mib) in [(from_file, 64u32), (from_set, 256)] {
        assert_passed(&r);
        assert_eq!(
            words(&r.stdout, "mem_upper"),
            [(mib - 1) * 1024],
            "{mib} MiB"
        );
        assert_eq!(words(&r.stdout, "getmemsize"), [mib], "{mib} MiB");
    }
}

// ---- nestmon.mmu.maxMappings ----

#[test]
fn a_mapping_budget_beyond_what_the_host_allows_is_refused_with_the_largest_allowed() {
    let dir = Scratch::new("options-max-mappings");
    let kernel = dir.file("pass.elf", &passing_guest());
    let limit: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530);
    let too_many = format!("nestmon.mmu.maxMappings={}", limit + 1);
    let refused = run_kernel(&kernel, &["--set", &too_many]);
    assert_eq!(refused.status, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nestmon.mmu.maxMappings")
            && refused.stderr.contains("vm.max_map_count"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("ran"), "the guest must not run");
    let fine = run_kernel(&kernel, &["--set", "nestmon.mmu.maxMappings=2048"]);
    assert_passed(&fine);
}

// ---- numvcpus, cpuid.coresPerSocket ----

#[test]
fn numvcpus_above_one_runs_one_vcpu_with_one_warning_line_and_the_guest_sees_one_processor() {
    let dir = Scratch::new("options-numvcpus");
    let kernel = dir.file("cpuid.elf", &cpuid_guest(&[0, 1, 4]));
    let single = run_kernel(&kernel, &[]);
    let many = run_kernel(
        &kernel,
        &["--set", "numvcpus=4", "--set", "cpuid.coresPerSocket=2"],
    );
    assert_passed(&single);
    assert_passed(&many);
    assert_eq!(
        diagnostics(&many.stderr),
        "nestmon: warning: command line (--set): numvcpus = \"4\": nestmon runs one vCPU; \
         the guest sees a single processor\n",
        "one line, and nothing about cpuid.coresPerSocket"
    );
    assert_eq!(
        many.stdout, single.stdout,
        "the guest's CPUID is that of one processor"
    );
    let max_basic_leaf = cpuid(&many.stdout, 0)[0];
    let [_, features_b, _, features_d] = cpuid(&many.stdout, 1);
    let hyper_threading = features_d >> 28 & 1 == 1;
    let logical = if hyper_threading {
        features_b >> 16 & 0xff
    } else {
        1
    };
    let cores = if max_basic_leaf >= 4 {
        (cpuid(&many.stdout, 4)[0] >> 26) + 1
    } else {
        1
    };
    assert_eq!((logical, cores), (1, 1), "{}", many.stdout);
}

// ---- monitor.virtual_exec, monitor.virtual_mmu and the older spellings ----

/// Hardware requests revert where the host CPU offers no VT-x/AMD-V (a
/// `/dev/kvm` there, such as `kvm_pvm`, only emulates): the tests below
/// check that reverting, so they need such a host, as this project's
/// machines and CI are. On a host with VT-x/AMD-V the requests would be
/// honoured and these tests would have to check that instead.
fn assert_no_hardware_virtualization() {
    assert!(
        !monitor::kvm::hardware_virtualization_visible(&monitor::probe::host_cpuid),
        "this host offers VT-x/AMD-V: hardware requests are honoured here, not reverted"
    );
}

#[test]
fn hardware_exec_request_reverts_to_binary_translation_with_a_note_and_the_guest_passes() {
    assert_no_hardware_virtualization();
    let dir = Scratch::new("options-hardware-exec");
    let kernel = dir.file("pass.elf", &passing_guest());
    let r = run_kernel(&kernel, &["--set", "monitor.virtual_exec=hardware"]);
    assert_passed(&r);
    assert_eq!(r.stdout, "ran\n");
    let note = r
        .stderr
        .lines()
        .find(|line| {
            line.starts_with(
                "nestmon: note: monitor.virtual_exec = \"hardware\" was requested but ",
            )
        })
        .unwrap_or_else(|| panic!("no reverting note:\n{}", r.stderr));
    assert!(
        note.ends_with("; reverting to binary translation"),
        "{note}"
    );
}

#[test]
fn hardware_mmu_request_reverts_to_the_software_mmu_with_a_note_and_the_guest_passes() {
    assert_no_hardware_virtualization();
    let dir = Scratch::new("options-hardware-mmu");
    let kernel = dir.file("pass.elf", &passing_guest());
    let r = run_kernel(&kernel, &["--set", "monitor.virtual_mmu=hardware"]);
    assert_passed(&r);
    assert_eq!(r.stdout, "ran\n");
    assert!(
        r.stderr.contains(
            "nestmon: note: monitor.virtual_mmu = \"hardware\" was requested but the guest runs \
             under binary translation, which uses the software MMU; reverting to the software MMU"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn older_exec_spellings_print_their_note_on_a_real_run_and_the_guest_passes() {
    assert_no_hardware_virtualization();
    let dir = Scratch::new("options-older-spellings");
    let kernel = dir.file("pass.elf", &passing_guest());
    for key in ["monitor_control.vt32", "monitor_control.enable_svm"] {
        let on = run_kernel(&kernel, &["--set", &format!("{key}=TRUE")]);
        assert_passed(&on);
        assert_eq!(on.stdout, "ran\n");
        assert!(
            on.stderr.contains(&format!(
                "nestmon: note: command line (--set): {key} = \"TRUE\" is the older spelling of \
                 monitor.virtual_exec = \"hardware\"; using that"
            )),
            "{key}: {}",
            on.stderr
        );
        assert!(
            on.stderr.contains("; reverting to binary translation"),
            "{key}: the hardware request reverts too:\n{}",
            on.stderr
        );
        let off = run_kernel(&kernel, &["--set", &format!("{key}=FALSE")]);
        assert_passed(&off);
        assert_eq!(
            diagnostics(&off.stderr),
            format!(
                "nestmon: note: command line (--set): {key} = \"FALSE\" is the older spelling of \
                 monitor.virtual_exec = \"software\"; using that\n"
            )
        );
    }
}

// ---- hypervisor.cpuid.v0 ----

#[test]
fn hypervisor_cpuid_v0_false_hides_the_hypervisor_bit_and_the_vmware_leaves() {
    let dir = Scratch::new("options-hypervisor-false");
    let kernel = dir.file("cpuid.elf", &cpuid_guest(&[1, 0x4000_0000, 0x4000_0010]));
    let r = run_kernel(&kernel, &["--set", "hypervisor.cpuid.v0=FALSE"]);
    assert_passed(&r);
    assert_eq!(cpuid(&r.stdout, 1)[2] >> 31, 0, "leaf 1 ECX bit 31");
    for leaf in [0x4000_0000, 0x4000_0010] {
        let registers = cpuid(&r.stdout, leaf);
        assert!(
            !hypervisor_signature(registers).contains("VMware"),
            "{leaf:#x}: {registers:08x?}"
        );
        assert!(
            registers[0] < 0x4000_0000,
            "{leaf:#x} names no hypervisor leaves: {registers:08x?}"
        );
    }
}

#[test]
fn hypervisor_cpuid_v0_true_shows_vmwarevmware_at_0x40000000_and_is_the_default() {
    let dir = Scratch::new("options-hypervisor-true");
    let kernel = dir.file("cpuid.elf", &cpuid_guest(&[1, 0x4000_0000]));
    let explicit = run_kernel(&kernel, &["--set", "hypervisor.cpuid.v0=TRUE"]);
    let default = run_kernel(&kernel, &[]);
    for r in [explicit, default] {
        assert_passed(&r);
        assert_eq!(cpuid(&r.stdout, 1)[2] >> 31, 1, "leaf 1 ECX bit 31");
        let leaf = cpuid(&r.stdout, 0x4000_0000);
        assert_eq!(hypervisor_signature(leaf), "VMwareVMware");
        assert_eq!(leaf[0], 0x4000_0010, "the highest hypervisor leaf");
    }
}

// ---- cpuid.<leaf>.<reg> masks ----

/// A guest that prints CPUID leaf 1, then runs XORPS (SSE) with a #UD
/// handler in place: `xorps ran` if it ran, `#UD at: EIP` if it faulted.
/// Its one mark is the XORPS.
fn sse_guest() -> Built {
    probe_guest(|g| {
        g.catch_invalid_opcode()?;
        g.enable_fxsr()?;
        g.cpuid(1)?;
        g.mark()?;
        g.a.xorps(xmm0, xmm0)?;
        g.print("xorps ran\n")?;
        g.report(0)
    })
}

/// Leaf 1 EDX bit 25 (SSE) cleared, every other bit the model's, written
/// ungrouped and grouped.
const NO_SSE: &str = "------0-------------------------";
const NO_SSE_GROUPED: &str = "----:--0-:----:----:----:----:----:----";

#[test]
fn sse_instructions_run_when_the_cpu_model_offers_sse() {
    let dir = Scratch::new("options-sse-offered");
    let guest = sse_guest();
    let kernel = dir.file("sse.elf", &guest.elf);
    let r = run_kernel(&kernel, &[]);
    assert_passed(&r);
    assert_eq!(cpuid(&r.stdout, 1)[3] >> 25 & 1, 1, "SSE offered");
    assert!(r.stdout.ends_with("xorps ran\n"), "{}", r.stdout);
}

#[test]
fn cpuid_mask_clearing_sse_hides_the_bit_and_sse_instructions_raise_ud() {
    let dir = Scratch::new("options-sse-masked");
    let guest = sse_guest();
    let kernel = dir.file("sse.elf", &guest.elf);
    let xorps = guest.marks[0];
    // The leaf as VMware writes it, and with 0x (both are accepted).
    for setting in [
        format!("cpuid.1.edx={NO_SSE}"),
        format!("cpuid.0x1.edx={NO_SSE_GROUPED}"),
    ] {
        let r = run_kernel(&kernel, &["--set", &setting]);
        assert_passed(&r);
        let features = cpuid(&r.stdout, 1)[3];
        assert_eq!(features >> 25 & 1, 0, "{setting}: SSE hidden");
        assert_eq!(features >> 26 & 1, 1, "{setting}: SSE2 left as it was");
        assert_eq!(
            words(&r.stdout, "#UD at"),
            [xorps],
            "{setting}: the XORPS faulted:\n{}",
            r.stdout
        );
        assert!(!r.stdout.contains("xorps ran"), "{}", r.stdout);
    }
}

// ---- guestinfo.<name> ----

#[test]
fn guestinfo_values_reach_the_guest_through_rpci_info_get_and_guestinfo_out() {
    let dir = Scratch::new("options-guestinfo");
    dir.file(
        "guestinfo.elf",
        &probe_guest(|g| {
            g.rpc("info-get guestinfo.Color")?;
            g.rpc("info-get guestinfo.from.file")?;
            g.rpc("info-get guestinfo.unset")?;
            g.rpc("info-set guestinfo.seen yes")?;
            g.report(0)
        })
        .elf,
    );
    let vmx = dir.file(
        "info.vmx",
        b"nestmon.kernel = \"guestinfo.elf\"\nguestinfo.from.file = \"say |22hi|22\"\n",
    );
    let out = dir.0.join("guestinfo.json");
    let r = run(&[
        "run",
        text(&vmx),
        "--set",
        "guestinfo.Color=deep blue",
        "--guestinfo-out",
        text(&out),
    ]);
    assert_passed(&r);
    assert_eq!(
        r.stdout,
        "info-get guestinfo.Color: 1 deep blue\n\
         info-get guestinfo.from.file: 1 say \"hi\"\n\
         info-get guestinfo.unset: 0 No value found\n\
         info-set guestinfo.seen yes: 1 \n"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("--guestinfo-out written"))
            .expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({
            "guestinfo.Color": "deep blue",
            "guestinfo.from.file": "say \"hi\"",
            "guestinfo.seen": "yes",
        })
    );
}

// ---- uuid.bios ----

#[test]
fn uuid_bios_with_spaces_and_dashes_anywhere_reaches_getuuid() {
    let dir = Scratch::new("options-uuid");
    let kernel = dir.file(
        "uuid.elf",
        &probe_guest(|g| {
            g.backdoor(CMD_GETUUID, 0)?;
            g.dump("getuuid", &[eax, ebx, ecx, edx])?;
            g.report(0)
        })
        .elf,
    );
    for written in [
        "56 4d 01 23 45 67 89 ab-cd ef 01 23 45 67 89 ab",
        "564d0123-4567-89ab-cdef-0123456789ab",
        "564d 0123 4567 89ab cdef 0123 4567 89ab",
    ] {
        let r = run_kernel(&kernel, &["--set", &format!("uuid.bios={written}")]);
        assert_passed(&r);
        // Little-endian words of the 16 bytes.
        assert_eq!(
            words(&r.stdout, "getuuid"),
            [0x2301_4d56, 0xab89_6745, 0x2301_efcd, 0xab89_6745],
            "{written}"
        );
    }
}

// ---- serial0.* ----

/// A guest that prints `com1 text` and reports failure code 42 (exit
/// status 1, stderr names the code): the run's end shows it ran through.
fn printing_guest() -> Vec<u8> {
    probe_guest(|g| {
        g.print("com1 text\n")?;
        g.report(42)
    })
    .elf
}

fn assert_reported_42(r: &Finished) {
    assert_eq!(r.status, Some(1), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("nestmon: the guest reported failure: code 42 "),
        "stderr:\n{}",
        r.stderr
    );
}

#[test]
fn serial0_present_false_discards_com1_output_and_keeps_the_exit_status() {
    let dir = Scratch::new("options-serial-absent");
    let kernel = dir.file("print.elf", &printing_guest());
    let present = run_kernel(&kernel, &[]);
    assert_reported_42(&present);
    assert_eq!(present.stdout, "com1 text\n");
    let absent = run_kernel(&kernel, &["--set", "serial0.present=FALSE"]);
    assert_reported_42(&absent);
    assert_eq!(absent.stdout, "", "COM1 output discarded");
}

#[test]
fn serial0_file_type_file_appends_com1_output_to_the_file_named_beside_the_vmx() {
    let dir = Scratch::new("options-serial-file");
    dir.file("print.elf", &printing_guest());
    std::fs::create_dir_all(dir.0.join("logs")).expect("logs/");
    let log = dir.file("logs/com1.log", b"earlier run\n");
    let vmx = dir.file(
        "serial.vmx",
        b"nestmon.kernel = \"print.elf\"\nserial0.fileType = \"file\"\n\
          serial0.fileName = \"logs/com1.log\"\n",
    );
    let elsewhere = Scratch::new("options-serial-file-cwd");
    let r = finish_within(
        TIME_LIMIT,
        nestmon(&["run", text(&vmx)]).current_dir(&elsewhere.0),
        Stdio::piped(),
        Stdio::piped(),
        false,
    );
    assert_reported_42(&r);
    assert_eq!(r.stdout, "", "COM1 goes to the file, not to stdout");
    assert_eq!(
        std::fs::read_to_string(&log).expect("the log"),
        "earlier run\ncom1 text\n"
    );
}

// ---- vmx.allowNested ----

#[test]
fn allow_nested_decides_power_on_only_where_an_outer_vmware_backdoor_lacks_nesting_control() {
    use backdoor::outer::{detect_outer, BackdoorProbe};
    let dir = Scratch::new("options-allow-nested");
    let kernel = dir.file("pass.elf", &passing_guest());
    // What nestmon's handshake will meet on this host: its refusal needs
    // VMware's backdoor reachable (ioperm) and without nesting control.
    let outer = detect_outer();
    let refused = outer.is_vmware()
        && !matches!(outer.backdoor, BackdoorProbe::PortAccessDenied(_))
        && outer.nesting_version().is_none();
    let strict = run_kernel(&kernel, &["--set", "vmx.allowNested=FALSE"]);
    let allowing = run_kernel(&kernel, &["--set", "vmx.allowNested=TRUE"]);
    assert_passed(&allowing);
    assert_eq!(allowing.stdout, "ran\n");
    if refused {
        assert_eq!(strict.status, Some(2), "{outer}: {}", strict.stderr);
        assert!(
            strict.stderr.contains("vmx.allowNested = \"TRUE\""),
            "{}",
            strict.stderr
        );
        assert_eq!(strict.stdout, "", "the guest did not run");
    } else {
        assert_passed(&strict);
        assert_eq!(strict.stdout, "ran\n");
    }
    if !outer.is_vmware() {
        for r in [&strict, &allowing] {
            assert!(
                !r.stderr.contains("VMware"),
                "{outer}: no handshake on this host:\n{}",
                r.stderr
            );
        }
    }
}

// ---- VMware's non-mask cpuid keys ----

#[test]
fn cpuid_numsmt_is_accepted_quietly_and_the_guest_runs() {
    let dir = Scratch::new("options-numsmt");
    let kernel = dir.file("cpuid.elf", &cpuid_guest(&[1]));
    let plain = run_kernel(&kernel, &[]);
    let vmware = run_kernel(
        &kernel,
        &[
            "--set",
            "cpuid.numSMT=1",
            "--set",
            "cpuid.coresPerSocket.cookie=1",
        ],
    );
    assert_passed(&vmware);
    assert_eq!(diagnostics(&vmware.stderr), "", "quiet without --verbose");
    assert_eq!(
        vmware.stdout, plain.stdout,
        "no effect on the guest's CPUID"
    );
    let verbose = run_kernel(&kernel, &["--verbose", "--set", "cpuid.numSMT=2"]);
    assert_passed(&verbose);
    assert_eq!(
        diagnostics(&verbose.stderr),
        "nestmon: info: command line (--set): VMware key \"cpuid.numSMT\" has no effect in \
         nestmon\n"
    );
}
