//! Behaviour of the binary-translation vCPU that a user sees at the edges:
//! exceptions and states that cannot be continued are reported with the
//! exception, the guest EIP and the registers, and exit status 3, never a
//! host crash; registers in the report are those of the faulting
//! instruction's start (precise state).

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Builds an assembly guest whose `main` is `body` and runs it.
fn run_asm(name: &str, body: &str, extra: &[&str]) -> Run {
    let elf = asm_guest(name, body);
    run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .arg("run")
            .arg("--kernel")
            .arg(&elf)
            .args(extra),
        Duration::from_secs(60),
    )
}

/// The value of counter `name` in a `--stats` report.
fn stats_counter(r: &Run, name: &str) -> Option<u64> {
    r.stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// A guest that copies the runtime's GDT into a table of its own, adds
/// one descriptor after it (`make_entry` writes it, with EDI at the entry
/// and EDX its selector), loads that table, then runs `body` (EDX still
/// the new selector).
fn with_gdt_entry(make_entry: &str, body: &str) -> String {
    format!(
        "sgdt [gdtr]\nmov esi, [gdtr+2]\nmovzx ecx, word ptr [gdtr]\ninc ecx\n\
         mov edx, ecx\nlea edi, [newgdt]\ncld\nrep movsb\n{make_entry}\n\
         lea eax, [edx+7]\nmov word ptr [gdtr], ax\nmov dword ptr [gdtr+2], offset newgdt\n\
         lgdt [gdtr]\n{body}\n\
         .data\n.balign 8\ngdtr: .word 0\n.long 0\n.balign 8\nnewgdt: .fill 64, 8, 0\n.text"
    )
}

/// The `--stats` line naming the instruction forms the monitor carried
/// out ("" if there is none).
fn monitor_forms(r: &Run) -> &str {
    r.stderr
        .lines()
        .find(|l| l.contains("instructions carried out by the monitor"))
        .unwrap_or_default()
}

fn assert_died(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, Some(3), "want exit status 3, got {}", describe(r));
    for n in needles {
        assert!(r.stderr.contains(n), "stderr lacks {n:?}:\n{}", r.stderr);
    }
}

#[test]
fn divide_by_zero_reports_de_with_precise_registers() {
    let r = run_asm(
        "div0",
        "mov ebx, 0x12345678\nmov eax, 7\nxor ecx, ecx\ndiv ecx\nret",
        &[],
    );
    assert_died(&r, &["#DE", "EAX=00000007", "EBX=12345678", "ECX=00000000"]);
}

#[test]
fn divide_by_zero_in_memory_keeps_ecx_and_reports_de() {
    let r = run_asm(
        "div0_mem",
        "push 0\nmov ecx, 0x11223344\nmov eax, 9\ndiv dword ptr [esp]\nret",
        &[],
    );
    assert_died(&r, &["#DE", "EAX=00000009", "ECX=11223344"]);
}

#[test]
fn misaligned_movaps_is_the_guests_general_protection_fault() {
    let r = run_asm(
        "movaps",
        "mov ebx, 0x12345678\nsub esp, 64\nmovaps xmm0, [esp+1]\nret",
        &[],
    );
    assert_died(&r, &["#GP", "EBX=12345678"]);
    assert!(!r.stderr.contains("wrapped"), "{}", r.stderr);
}

#[test]
fn ldmxcsr_with_reserved_bits_is_the_guests_general_protection_fault() {
    let r = run_asm("ldmxcsr", "push 0xffff0000\nldmxcsr [esp]\nret", &[]);
    assert_died(&r, &["#GP"]);
}

#[test]
fn instruction_of_an_extension_the_cpu_lacks_is_invalid_opcode() {
    // vpgatherdd (AVX2) and clzero are never offered: #UD, as on a CPU
    // without them, whatever the host has.
    for (name, bytes) in [
        ("gather", ".byte 0xc4, 0xe2, 0x71, 0x90, 0x04, 0x90"),
        ("clzero", ".byte 0x0f, 0x01, 0xfc"),
    ] {
        let r = run_asm(name, &format!("mov ebx, 0x1234\n{bytes}\nret"), &[]);
        assert_died(&r, &["#UD", "EBX=00001234"]);
    }
}

#[test]
fn maskmovq_stores_only_the_selected_bytes_to_ds_edi() {
    let body = "sub esp, 16\nmov edi, esp\nmov dword ptr [edi], 0x11111111\n\
                mov eax, 0xaabbccdd\nmovd mm0, eax\nmov eax, 0x80008000\nmovd mm1, eax\n\
                maskmovq mm0, mm1\nmov ebx, [edi]\nud2";
    let r = run_asm("maskmovq", body, &[]);
    assert_died(&r, &["#UD", "EBX=aa11cc11"]);
}

#[test]
fn access_straddling_the_top_of_linear_space_is_a_general_protection_fault() {
    // Paging maps linear 0xfffff000 to RAM, so the 4-byte load at
    // 0xfffffffe reaches past 4 GiB: this CPU faults rather than wraps
    // (the SDM leaves the choice to the implementation).
    let body = "jmp 3f\n.data\n.align 4096\npd: .fill 1024, 4, 0\npt0: .fill 1024, 4, 0\n\
                ptop: .fill 1024, 4, 0\n.text\n3:\n\
                lea edi, [pt0]\nmov eax, 3\nmov ecx, 1024\n1: mov [edi], eax\nadd eax, 0x1000\n\
                add edi, 4\nloop 1b\n\
                lea eax, [pt0 + 3]\nmov [pd], eax\nlea eax, [ptop + 3]\nmov [pd + 4092], eax\n\
                lea eax, [pt0 + 3]\nmov [ptop + 4092], eax\n\
                lea eax, [pd]\nmov cr3, eax\nmov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\n\
                mov ebx, 0x12345678\nmov eax, [0xfffffffe]\nret";
    let r = run_asm("straddle", body, &[]);
    assert_died(&r, &["#GP", "EBX=12345678"]);
}

#[test]
fn ud2_reports_invalid_opcode() {
    let r = run_asm("ud2", "ud2", &[]);
    assert_died(&r, &["#UD", "EIP="]);
}

#[test]
fn int3_without_an_idt_is_a_triple_fault_reported_from_the_int3() {
    // IDTR is the reset value (base 0, limit 0x3ff): the real-mode vector
    // table read as gates gives #GP, then #DF, then shutdown, as on a PC.
    let r = run_asm("int3", "mov ebx, 0x1234\nint3", &[]);
    assert_died(&r, &["triple fault", "INT3", "EBX=00001234"]);
}

#[test]
fn load_outside_ram_is_reported_and_leaves_registers_unchanged() {
    let r = run_asm(
        "oob",
        "mov esi, 0x0badf00d\nmov eax, 0x11111111\nmov eax, [0xf0000000]\nret",
        &["--memsize", "16"],
    );
    assert_died(&r, &["outside guest RAM", "EAX=11111111", "ESI=0badf00d"]);
}

#[test]
fn device_memory_takes_data_moves_and_stops_at_any_other_instruction_named() {
    // The local APIC's version register (0x30) and task priority (0x80).
    let r = run_asm(
        "apic_moves",
        "mov ebx, 0xfee00000\nmov eax, [ebx+0x30]\nmovzx ecx, word ptr [ebx+0x30]\n\
         mov edx, 0x20\nxchg [ebx+0x80], edx\nmov esi, [ebx+0x80]\n\
         add dword ptr [ebx+0x80], 1\nret",
        &[],
    );
    assert_died(
        &r,
        &[
            "accesses device memory at physical 0xfee00080",
            "EAX=00050014",
            "ECX=00000014",
            "EDX=00000000",
            "ESI=00000020",
        ],
    );
}

#[test]
fn ia32_apic_base_moves_the_local_apic_and_clearing_its_enable_unmaps_it() {
    let r = run_asm(
        "apic_base",
        "mov ecx, 0x1b\nrdmsr\nmov esi, eax\nmov eax, 0xfed00900\nwrmsr\n\
         mov edi, [0xfed00030]\nmov eax, 0xfed00100\nwrmsr\nmov eax, [0xfed00030]\nret",
        &[],
    );
    assert_died(
        &r,
        &[
            "outside guest RAM",
            "physical 0xfed00030",
            "ESI=fee00900",
            "EDI=00050014",
        ],
    );
}

#[test]
fn without_nestmon_apic_the_local_apics_page_is_not_device_memory() {
    let r = run_asm(
        "no_apic",
        "mov eax, [0xfee00030]\nret",
        &["--set", "nestmon.apic=FALSE"],
    );
    assert_died(&r, &["outside guest RAM", "physical 0xfee00030"]);
}

#[test]
fn faulting_push_leaves_esp_unchanged() {
    let r = run_asm(
        "pushoob",
        "mov esp, 0xf0000000\npush 5\nret",
        &["--memsize", "16"],
    );
    assert_died(&r, &["outside guest RAM", "ESP=f0000000"]);
}

#[test]
fn hlt_with_interrupts_disabled_stops_cleanly() {
    let r = run_asm("clihlt", "cli\nhlt", &[]);
    assert_died(&r, &["HLT with interrupts disabled"]);
}

#[test]
fn page_fault_on_fetch_is_reported_with_cr2() {
    // An empty page directory: the fetch after enabling paging faults.
    let body = ".data\n.align 4096\npd: .fill 1024, 4, 0\n.text\nmain2:\n";
    let code =
        "lea eax, [pd]\nmov cr3, eax\nmov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\nnop\nret\n";
    let r = run_asm("pf", &format!("jmp main2\n{body}{code}"), &[]);
    assert_died(&r, &["#PF", "page fault", "at linear", "error code 0x0"]);
}

#[test]
fn ring_0_reads_the_control_registers_inline_with_the_values_last_written() {
    // CR2 and CR3 written (each write an exit), then read back with the
    // other registers in the same unit: the reads must see the new values
    // and run inline (no MOV-from-CR among the monitor's instructions).
    let body = ".data\n.align 4096\npd: .fill 1024, 4, 0\n.text\nmain2:\n\
                mov eax, 0x12345678\nmov cr2, eax\nlea edx, [pd]\nmov cr3, edx\n\
                mov ebx, cr2\nmov esi, cr3\nmov edi, cr0\nmov ecx, cr4\n\
                cmp ebx, eax\njne 1f\ncmp esi, edx\njne 1f\n\
                test edi, 1\njz 1f\nxor eax, eax\nret\n1: mov eax, 1\nret";
    let r = run_asm("crread", &format!("jmp main2\n{body}"), &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let emulated = monitor_forms(&r);
    assert!(!emulated.contains("Mov_r32_cr"), "{emulated}");
    assert!(emulated.contains("Mov_cr_r32"), "{emulated}");
}

#[test]
fn ring_0_segment_loads_run_inline_and_see_a_descriptor_rewritten_in_memory() {
    // A descriptor appended to the runtime's GDT (base `data_a`), loaded
    // into FS once and FS made null once before the loop (the monitor
    // loads them and remembers the selectors), then in the loop's own
    // unit: FS <- it (MOV), a read through FS, FS <- null (POP; each load
    // a change of mode: a null FS restricts access). Halfway, the descriptor's base is
    // rewritten in memory (to `data_c`) without reloading GDTR: the loads
    // after it must see the new base.
    let body = with_gdt_entry(
        "mov [desc_at], edi\nlea eax, [data_a]\ncall make_desc",
        "mov fs, dx\nxor ebx, ebx\nmov fs, bx\n\
                call run_loop\ncmp eax, 0x5055\njne 9f\nxor eax, eax\nret\n\
                9: mov eax, 1\nret\n\
                make_desc: mov ecx, eax\nshl ecx, 16\nor ecx, 0xffff\nmov [edi], ecx\n\
                mov ecx, eax\nshr ecx, 16\nand ecx, 0xff\nmov esi, eax\nand esi, 0xff000000\n\
                or ecx, esi\nor ecx, 0x00cf9300\nmov [edi+4], ecx\nret\n\
                .p2align 12\n\
                run_loop: xor eax, eax\nmov ecx, 10\n\
                2: mov fs, dx\nadd eax, fs:[0]\npush ebx\npop fs\ncmp ecx, 6\njne 3f\n\
                push eax\npush ecx\nmov edi, [desc_at]\nlea eax, [data_c]\ncall make_desc\n\
                pop ecx\npop eax\n\
                3: dec ecx\njnz 2b\nret\n\
                .data\n.balign 8\ndata_a: .long 0x11\ndata_c: .long 0x1000\n\
                desc_at: .long 0\n.text",
    );
    let r = run_asm("inline_segment_loads", &body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let inline = stats_counter(&r, "segment registers loaded by translated code");
    assert!(inline.is_some_and(|n| n > 0), "{}", r.stderr);
}

#[test]
fn a_unit_translated_before_its_selectors_were_loaded_is_translated_again_and_loads_inline() {
    // The loop's unit is translated while FS has held neither its
    // descriptor nor null: the monitor carries out its first loads, then
    // the unit is translated again with them and loads inline.
    let body = with_gdt_entry(
        "mov dword ptr [edi], 0x0000ffff\nmov dword ptr [edi+4], 0x00cf9300",
        "xor ebx, ebx\nxor eax, eax\nmov ecx, 10\n\
                2: mov fs, dx\nadd eax, fs:[value]\npush ebx\npop fs\ndec ecx\njnz 2b\n\
                cmp eax, 70\njne 9f\nxor eax, eax\nret\n9: mov eax, 1\nret\n\
                .data\nvalue: .long 7\n.text",
    );
    let r = run_asm("segment_loads_retranslated", &body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let again = stats_counter(&r, "units translated again for their segment loads");
    assert!(again.is_some_and(|n| n > 0), "{}", r.stderr);
    let inline = stats_counter(&r, "segment registers loaded by translated code");
    assert!(inline.is_some_and(|n| n > 0), "{}", r.stderr);
}

#[test]
fn ring_0_verw_is_answered_inline_for_the_selector_seen_and_by_the_monitor_for_another() {
    // VERW of the selector in `sel` sets ZF alone (CF set before survives):
    // DS is writable (ZF = 1, three times, inline after the unit read the
    // selector when it was translated); CS is not (ZF = 0: another
    // selector than the unit's answer was worked out for, so the monitor
    // answers, once).
    let body = "mov ax, ds\nmov [sel], ax\nmov ecx, 3\n\
                1: call probe\ntest eax, 0x40\njz 9f\ntest eax, 1\njz 9f\ndec ecx\njnz 1b\n\
                mov ax, cs\nmov [sel], ax\ncall probe\ntest eax, 0x40\njnz 9f\ntest eax, 1\njz 9f\n\
                xor eax, eax\nret\n9: mov eax, 1\nret\n\
                probe: stc\nverw [sel]\npushfd\npop eax\nret\n\
                .data\nsel: .word 0\n.text";
    let r = run_asm("inline_verw", body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let emulated = monitor_forms(&r);
    assert!(
        emulated.contains("Verw_r32m16 1,") || emulated.ends_with("Verw_r32m16 1"),
        "{emulated}"
    );
}

#[test]
fn entering_long_mode_stops_with_a_clear_message() {
    let body = "mov ecx, 0xc0000080\nxor edx, edx\nmov eax, 0x100\nwrmsr\nret";
    let r = run_asm("longmode", body, &[]);
    assert_died(&r, &["64-bit guests need hardware virtualization"]);
}

#[test]
fn setting_cr4_pae_on_a_cpu_without_pae_is_a_general_protection_fault() {
    let body = "mov eax, cr4\nor eax, 0x20\nmov cr4, eax\nmov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\nret";
    let r = run_asm("pae", body, &[]);
    assert_died(&r, &["triple fault", "#GP"]);
}

#[test]
fn pushfd_and_popfd_carry_every_status_flag_and_df_and_keep_eax() {
    // POPFD of all status flags set, then of DF alone; PUSHFD after each
    // leaves the flags as they were (the conditional jumps) and pushes
    // them; a CMC between two PUSHFDs changes CF only; EAX, which the
    // translation borrows, comes through. Three rounds.
    let body = "mov esi, 0x12345678\nmov eax, esi\nmov ecx, 3\n\
                0: push 0x8d7\npopfd\npushfd\njno 9f\njnc 9f\njnz 9f\njns 9f\njnp 9f\n\
                pop ebx\nand ebx, 0xcd5\ncmp ebx, 0x8d5\njne 9f\n\
                push 0x402\npopfd\npushfd\njo 9f\njc 9f\njz 9f\njs 9f\njp 9f\n\
                pop ebx\ncld\nand ebx, 0xcd5\ncmp ebx, 0x400\njne 9f\n\
                push 0x8d7\npopfd\npushfd\npop edx\ncmc\npushfd\npop edi\nxor edx, edi\ncmp edx, 1\njne 9f\n\
                cmp eax, esi\njne 9f\nloop 0b\n\
                xor eax, eax\nret\n\
                9: cld\nmov eax, 1\nret";
    let r = run_asm("pushfd_popfd_flags", body, &[]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
}

#[test]
fn flags_survive_exits_and_indirect_branches() {
    // CF set by the caller must survive a CPUID exit and a RET lookup.
    let body = "stc\ncall 1f\njnc 2f\nmov eax, 0\ncpuid\njnc 2f\nxor eax, eax\nret\n1: ret\n2: mov eax, 1\nret";
    let r = run_asm("flags", body, &[]);
    // main returning 0 makes the runtime report success: exit status 0.
    assert_eq!(r.code, Some(0), "{}", describe(&r));
}

/// Both ways of translating calls and returns: predicted by the host's
/// return-stack buffer (the default) and through the indirect-branch
/// table only.
const RETURN_MODES: [&[&str]; 2] = [&[], &["--set", "nestmon.bt.returnStack=FALSE"]];

#[test]
fn recursion_deeper_than_the_return_prediction_stack_computes_the_same() {
    // 300,000 nested calls (the host stack holds 131,072): at the guard
    // the run loop stops before the call (`CallOverflow`), enters again
    // with the stack empty and the recursion goes on.
    let body = "mov esi, esp\nmov esp, 0x4000000\nmov ecx, 300000\nxor eax, eax\n\
                call 3f\nmov esp, esi\ncmp eax, 300000\njne 1f\nxor eax, eax\nret\n\
                1: mov eax, 1\nret\n\
                3: test ecx, ecx\njz 4f\ndec ecx\ncall 3b\ninc eax\n4: ret";
    for extra in RETURN_MODES {
        let r = run_asm("deep_recursion", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn returns_the_guest_redirects_go_where_the_guest_says() {
    // A get-PC call that pops its own return address, a return address
    // moved 5 bytes on, and a return past the frame of an inner call
    // (as longjmp does); EDI counts the paths taken.
    let body = "xor edi, edi\ncall 1f\n1: pop ebx\nadd edi, 1\n\
                call 2f\nmov edi, 0xdead\nadd edi, 2\njmp 5f\n\
                2: add dword ptr [esp], 5\nret\n\
                5: call 6f\nadd edi, 4\njmp 8f\n\
                6: call 7f\nud2\n\
                7: add esp, 4\nret\n\
                8: call 9f\nadd edi, 8\ncmp edi, 15\njne 10f\nxor eax, eax\nret\n\
                9: ret\n\
                10: mov eax, 1\nret";
    for extra in RETURN_MODES {
        let r = run_asm("redirected_returns", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn returns_after_long_code_and_around_a_long_instruction_go_where_the_guest_says() {
    // Calls returned to as called and redirected 6 bytes on (past an
    // ADD), followed by 30 instructions or by a POPFD, in three rounds: the
    // first runs before the calls are chained, the others return through
    // the continuations' checks, whose miss path borrows ECX. ECX and the
    // flags come through every path.
    let body = "xor edi, edi\nmov ecx, 0x1234\nmov esi, 3\n\
                0: call 1f\n.rept 30\nadd edi, 1\n.endr\n\
                call 2f\nadd edi, 0x100\n.rept 30\nadd edi, 1\n.endr\n\
                pushfd\ncall 2f\nadd edi, 0x100\npopfd\n\
                stc\npushfd\ncall 1f\npopfd\njnc 9f\n\
                dec esi\njnz 0b\n\
                cmp ecx, 0x1234\njne 9f\ncmp edi, 180\njne 9f\nxor eax, eax\nret\n\
                1: ret\n\
                2: add dword ptr [esp], 6\nret\n\
                9: mov eax, 1\nret";
    for extra in RETURN_MODES {
        let r = run_asm("long_continuations", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

/// Leaf callees in place (the default) and called (`nestmon.bt.
/// inlineLeaves=FALSE`), each with and without return prediction.
const LEAF_MODES: [&[&str]; 4] = [
    &[],
    &["--set", "nestmon.bt.returnStack=FALSE"],
    &["--set", "nestmon.bt.inlineLeaves=FALSE"],
    &[
        "--set",
        "nestmon.bt.inlineLeaves=FALSE",
        "--set",
        "nestmon.bt.returnStack=FALSE",
    ],
];

#[test]
fn leaf_callees_return_where_the_guest_says_with_its_stack_and_flags() {
    // 1,000 turns of leaves called directly and through a table: one that
    // reads its arguments, one with a frame, `ret 4`, one that returns
    // its result in CF, and four that change their return address (6
    // bytes on, past an ADD): through ESP, through EBP, by a push after a
    // pop, and by an XCHG. ECX, EDI and ESP come through every path.
    let body = "mov ecx, 0x1234\nxor edi, edi\nxor ebx, ebx\nmov esi, 1000\nmov ebp, esp\n\
                0: push 5\npush 7\ncall 1f\nadd esp, 8\nadd edi, eax\n\
                push 3\ncall 2f\nadd edi, eax\n\
                call 3f\njnc 9f\n\
                call 4f\nadd edi, 0x100\n\
                call 5f\nadd edi, 0x100\n\
                call 6f\nadd edi, 0x100\n\
                call 7f\nadd edi, 0x100\n\
                mov eax, ebx\nand eax, 3\ncall [table + eax*4]\nadd edi, 0x10000\ninc ebx\n\
                dec esi\njnz 0b\n\
                cmp esp, ebp\njne 9f\ncmp ecx, 0x1234\njne 9f\n\
                cmp edi, 3000 + 500 + 500 * 0x10000\njne 9f\nxor eax, eax\nret\n\
                1: mov eax, [esp+4]\nadd eax, [esp+8]\nsub eax, 10\nret\n\
                2: push ebp\nmov ebp, esp\nmov eax, [ebp+8]\nsub eax, 2\nleave\nret 4\n\
                3: stc\nret\n\
                4: add dword ptr [esp], 6\nret\n\
                5: push ebp\nmov ebp, esp\nadd dword ptr [ebp+4], 6\npop ebp\nret\n\
                6: pop eax\nadd eax, 6\npush eax\nret\n\
                7: mov eax, [esp]\nadd eax, 6\nxchg [esp], eax\nret\n\
                8: add edi, 1\nret\n\
                9: mov eax, 1\nret\n\
                10: add dword ptr [esp], 6\nret\n\
                .data\n.balign 4\ntable: .long 8b, 10b, 8b, 10b\n.text";
    for extra in LEAF_MODES {
        let r = run_asm("leaf_returns", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn leaf_callees_that_pop_sp_or_write_their_return_address_around_4_gib_return_where_the_guest_says()
{
    // POP SP points ESP at another return address; ESP moved by 2^32 in
    // two steps lands the store on the return address itself.
    let pop_sp = "push offset 2f\nmov eax, esp\ncall 1f\nmov eax, 1\nadd esp, 4\nret\n\
                  2: xor eax, eax\nret\n\
                  1: push ax\npop sp\nret";
    let wrapped = "call 1f\nmov eax, 1\nret\n\
                   2: xor eax, eax\nret\n\
                   1: sub esp, 0x80000000\nsub esp, 0x80000000\nmov dword ptr [esp], offset 2b\n\
                   add esp, 0x80000000\nadd esp, 0x80000000\nret";
    for (name, body) in [("leaf_pop_sp", pop_sp), ("leaf_wrapped_store", wrapped)] {
        for extra in LEAF_MODES {
            let r = run_asm(name, body, extra);
            assert_eq!(r.code, Some(0), "{name} {extra:?}: {}", describe(&r));
        }
    }
}

#[test]
fn a_full_inline_cache_of_leaves_and_called_targets_takes_a_ninth_target_through_the_table() {
    // One site calls eight targets 50 times each (a leaf and seven that
    // are not), filling its cache; a ninth, called from elsewhere first
    // (so the table holds it), then comes through the table's call and
    // must return to the site's continuation with ECX and ESP intact.
    let body = "mov ecx, 0x1234\nxor edi, edi\nmov ebp, esp\nmov esi, 3\n\
                0: mov eax, offset 19f\ncall eax\ndec esi\njnz 0b\n\
                mov esi, 50\n\
                1: xor ebx, ebx\n2: mov eax, [table + ebx*4]\ncall 5f\ninc ebx\ncmp ebx, 8\njb 2b\n\
                dec esi\njnz 1b\n\
                cmp edi, 3 * 0x1000000 + 50 * 36\njne 9f\n\
                mov eax, offset 19f\ncall 5f\n\
                cmp ecx, 0x1234\njne 9f\ncmp esp, ebp\njne 9f\n\
                cmp edi, 4 * 0x1000000 + 50 * 36\njne 9f\nxor eax, eax\nret\n\
                9: mov eax, 1\nret\n\
                5: call eax\nret\n\
                11: add edi, 1\nret\n\
                12: add edi, 2\njmp 3f\n\
                13: add edi, 3\njmp 3f\n\
                14: add edi, 4\njmp 3f\n\
                15: add edi, 5\njmp 3f\n\
                16: add edi, 6\njmp 3f\n\
                17: add edi, 7\njmp 3f\n\
                18: add edi, 8\njmp 3f\n\
                19: add edi, 0x1000000\njmp 3f\n\
                3: ret\n\
                .data\n.balign 4\ntable: .long 11b, 12b, 13b, 14b, 15b, 16b, 17b, 18b\n.text";
    for extra in LEAF_MODES {
        let r = run_asm("leaf_full_cache", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn a_fault_inside_a_leaf_callee_sees_the_return_address_on_the_stack() {
    // The 100th call divides by zero inside the callee: the #DE frame
    // names the DIV, and the interrupted ESP points at the call's return
    // address with the argument above it.
    let body = "mov eax, offset 8f\nmov word ptr [idt], ax\nmov dx, cs\n\
                mov word ptr [idt+2], dx\nmov word ptr [idt+4], 0x8e00\nshr eax, 16\n\
                mov word ptr [idt+6], ax\nlidt [idtr]\n\
                mov esi, 100\n\
                0: lea ecx, [esi-1]\npush ecx\ncall 2f\n1: add esp, 4\ndec esi\njnz 0b\n\
                mov eax, 2\nret\n\
                2: mov ecx, [esp+4]\nmov eax, 1000\nxor edx, edx\n3: div ecx\nret\n\
                8: cmp dword ptr [esp], offset 3b\njne 9f\n\
                cmp dword ptr [esp+12], offset 1b\njne 9f\n\
                cmp dword ptr [esp+16], 0\njne 9f\n\
                add esp, 20\nxor eax, eax\nret\n\
                9: mov eax, 1\nadd esp, 20\nret\n\
                .data\n.balign 8\nidt: .fill 256, 8, 0\nidtr: .word 2047\n.long idt\n.text";
    for extra in LEAF_MODES {
        let r = run_asm("leaf_fault", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn a_leaf_callee_rewritten_after_it_ran_in_place_runs_as_rewritten() {
    // The callee's immediate goes from 1 to 2 after 50 of 100 calls: 150.
    let body = "xor edi, edi\nmov esi, 100\n\
                0: call 2f\nadd edi, eax\ncmp esi, 51\njne 1f\nmov byte ptr [3f + 2], 2\n\
                1: dec esi\njnz 0b\ncmp edi, 150\njne 9f\nxor eax, eax\nret\n\
                2: xor eax, eax\n3: add eax, 1\nret\n\
                9: mov eax, 1\nret";
    for extra in LEAF_MODES {
        let r = run_asm("leaf_rewritten", body, extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn branches_out_of_the_middle_of_a_superblock_go_where_the_guest_says() {
    // Three forward branches per iteration, taken and not taken in every
    // combination (units go on past them by default), and the loop's back
    // edge: the sum is the same with units that end at every branch.
    let body = "xor eax, eax\nmov ecx, 1000\n\
                1: test ecx, 1\njz 2f\nadd eax, 3\n\
                2: test ecx, 2\njz 3f\nadd eax, 5\n\
                3: test ecx, 4\njnz 4f\nadd eax, 7\n\
                4: dec ecx\njnz 1b\n\
                cmp eax, 7500\njne 9f\nxor eax, eax\nret\n\
                9: mov eax, 1\nret";
    passes_with_counts_0_and_32("superblock_branches", body, "nestmon.bt.superblockBranches");
}

/// Runs the assembly guest `body` with the default settings and with
/// count setting `key` at 0 and at 32: it passes every time.
fn passes_with_counts_0_and_32(name: &str, body: &str, key: &str) {
    for count in [None, Some(0), Some(32)] {
        let setting = count.map(|n| format!("{key}={n}"));
        let extra: Vec<&str> = setting.iter().flat_map(|s| ["--set", s]).collect();
        let r = run_asm(name, body, &extra);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", describe(&r));
    }
}

#[test]
fn branches_a_unit_follows_back_and_forth_go_where_the_guest_says() {
    // The loop's entry jumps forward, its body jumps back before that
    // (code reached only so), then forward again, and a back edge and a
    // jump close it: units follow all of these by default. 1,000 turns
    // of +4, and +5 after each even count left but the last: 6,495.
    let body = "xor eax, eax\nmov ecx, 1000\njmp 2f\n\
                1: add eax, 3\ndec ecx\njz 3f\njmp 4f\n\
                2: add eax, 1\njmp 1b\n\
                4: test ecx, 1\njnz 2b\nadd eax, 5\njmp 2b\n\
                3: cmp eax, 6495\njne 9f\nxor eax, eax\nret\n\
                9: mov eax, 1\nret";
    passes_with_counts_0_and_32("followed_branches", body, "nestmon.bt.followedBranches");
}

#[test]
fn io_to_unclaimed_ports_runs_without_exits_and_stats_name_the_ports() {
    // Port 0x80 (the POST/delay port) has no device: OUT is dropped and IN
    // reads all ones, without leaving translated code.
    let body = "mov al, 1\nout 0x80, al\nin al, 0x80\ncmp al, 0xff\njne 1f\nxor eax, eax\nret\n1: mov eax, 1\nret";
    let r = run_asm("ignored_port", body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(
        r.stderr.contains("without an exit (not counted): 0x0080"),
        "{}",
        r.stderr
    );
}

#[test]
fn stats_name_the_instruction_forms_the_monitor_carried_out() {
    let r = run_asm(
        "emulated_forms",
        "mov eax, cr0\nmov cr0, eax\nmov cr0, eax\nmov cr0, eax\nxor eax, eax\nret",
        &["--stats"],
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let note = r
        .stderr
        .lines()
        .find(|l| l.contains("instructions carried out by the monitor"))
        .unwrap_or_else(|| panic!("no note: {}", r.stderr));
    let count: u64 = note
        .split("Mov_cr_r32 ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MOV to CR in {note}"));
    assert!(count >= 3, "{note}");
}

#[test]
fn translation_log_lists_guest_and_host_instructions() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cpu-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log.txt");
    let r = run_asm(
        "logged",
        "mov eax, 0x4242\nxor eax, eax\nret",
        &["--log-translations", log.to_str().unwrap()],
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("IN:") && text.contains("OUT:"), "{text}");
    assert!(
        text.contains("mov eax,4242h"),
        "guest instruction missing:\n{text}"
    );
}

#[test]
fn stats_report_translations_and_chains() {
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .arg("run")
            .arg("--kernel")
            .arg(guest_dir().join("recursion.elf"))
            .arg("--stats"),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    for key in [
        "translations",
        "guest instructions translated",
        "code cache bytes",
        "chains made",
        "indirect-branch hits",
        "exits: chain miss",
    ] {
        assert!(
            r.stderr.contains(key),
            "--stats lacks {key:?}:\n{}",
            r.stderr
        );
    }
    let hits = stat(&r.stderr, "indirect-branch hits");
    assert!(
        hits > 1000,
        "recursion returns should hit the indirect-branch table in emitted code, got {hits}"
    );
}

#[test]
fn default_guest_runs_without_arguments() {
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon")).arg("run"),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(r.stdout.contains("nestmon default guest"), "{}", r.stdout);
    assert!(r.stdout.contains("passed"), "{}", r.stdout);
}

#[test]
fn stats_json_holds_the_counters_totals_and_elapsed_time() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stats-json");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("stats.json");
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .arg("run")
            .arg("--kernel")
            .arg(guest_dir().join("recursion.elf"))
            .arg("--stats-json")
            .arg(&json),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let counters = value["counters"].as_object().expect("counters object");
    assert!(counters["translations"].as_u64().unwrap() > 0);
    let exits: u64 = counters
        .iter()
        .filter(|(name, _)| name.starts_with("exits: "))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(value["exits_total"].as_u64(), Some(exits));
    assert!(value["elapsed_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        r.stderr.is_empty() || !r.stderr.contains("nestmon statistics"),
        "--stats-json alone prints nothing"
    );
}

#[test]
fn stop_report_names_the_vm_from_display_name_and_guest_os() {
    let r = run_asm(
        "div0_named",
        "xor ecx, ecx\ndiv ecx\nret",
        &[
            "--set",
            "displayName=Build box",
            "--set",
            "guestOS=otherlinux",
        ],
    );
    assert_died(&r, &["#DE", "VM: \"Build box\" (guestOS otherlinux)"]);
}

#[test]
fn stats_estimate_guest_instructions_executed_from_units_entered() {
    // 3 instructions a pass (add, dec, jnz), 2^20 passes: the loop body is
    // one unit chained to itself, so the estimate is exact but for the few
    // instructions of the runtime around main.
    let body = "mov ecx, 0x100000\n1: add eax, 1\ndec ecx\njnz 1b\nxor eax, eax\nret";
    let r = run_asm("insn_count", body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let executed = stat(&r.stderr, "guest instructions executed (estimate)");
    let loop_insns = 3 * 0x10_0000;
    assert!(
        (loop_insns..loop_insns + 20_000).contains(&executed),
        "want about {loop_insns}, got {executed}:\n{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("guest instructions per second (estimate)"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_offset_that_wraps_around_4_gib_reaches_the_wrapped_address_and_stops_being_folded() {
    // [ecx + counter + 8] with ECX = 0xfffffff8 is `counter`, 1000 times a
    // load and a store. Folded into host addressing, each first reaches the
    // guard after the window, runs again alone and is made again unfolded:
    // two wraps in all. Without folding, none.
    let body = "
        mov ecx, 0xfffffff8
        mov edx, 1000
    1:  mov eax, [ecx + counter + 8]
        add eax, 3
        mov [ecx + counter + 8], eax
        dec edx
        jnz 1b
        cmp dword ptr [counter], 3000
        jne 2f
        xor eax, eax
        ret
    2:  mov eax, 3
        ret
        .bss
    counter: .skip 4
        .text";
    assert_wraps_when_folded_only("wrap", body, 2);
}

/// Runs the assembly guest `body` (which exits 0 when its sums are right)
/// with folded displacements and without: `folded` accesses wrapped
/// around 4 GiB and ran again unfolded in the first run, none in the
/// second.
fn assert_wraps_when_folded_only(name: &str, body: &str, folded: u64) {
    let wraps = "folded accesses that wrapped (run again unfolded)";
    let on = run_asm(&format!("{name}_fold"), body, &["--stats"]);
    assert_eq!(on.code, Some(0), "{}", describe(&on));
    assert_eq!(stat(&on.stderr, wraps), folded, "{}", on.stderr);
    let plain = run_asm(
        &format!("{name}_plain"),
        body,
        &["--stats", "--set", "nestmon.bt.foldDisplacements=FALSE"],
    );
    assert_eq!(plain.code, Some(0), "{}", describe(&plain));
    assert_eq!(stat(&plain.stderr, wraps), 0, "{}", plain.stderr);
}

#[test]
fn a_scaled_index_that_wraps_around_4_gib_reaches_the_wrapped_address_and_stops_being_folded() {
    // [ecx*4 + counter + 0x100] with ECX = 0x3fffffc0 (ECX*4 = 2^32 - 0x100)
    // and [edx*8 + counter + 8] with EDX = 0xffffffff (EDX*8 = 2^32 - 8, so
    // the host address lies 32 GiB past the window's base) are `counter`,
    // 1000 times a load and a store each. Folded as [r15 + index*scale +
    // disp], each first reaches the guard after the window, runs again
    // alone and is made again unfolded: four wraps in all. Without
    // folding, none; in both, the sum the guest expects.
    let body = "
        mov ecx, 0x3fffffc0
        mov edx, 0xffffffff
        mov esi, 1000
    1:  mov eax, [ecx*4 + counter + 0x100]
        add eax, 3
        mov [ecx*4 + counter + 0x100], eax
        mov eax, [edx*8 + counter + 8]
        add eax, 2
        mov [edx*8 + counter + 8], eax
        dec esi
        jnz 1b
        cmp dword ptr [counter], 5000
        jne 2f
        xor eax, eax
        ret
    2:  mov eax, 3
        ret
        .bss
    counter: .skip 4
        .text";
    assert_wraps_when_folded_only("wrap_scaled", body, 4);
}

#[test]
fn a_call_to_a_pc_thunk_runs_it_inline_and_follows_a_rewrite_of_its_bytes() {
    // `thunk` (mov ebx, [esp]; ret) is learned at the first call; `site`,
    // translated after, runs it inline: EBX = the return address, ESI
    // untouched. Then the thunk is rewritten to `mov esi, [esp]`: the same
    // site must see the new bytes (ESI = the return address, EBX kept).
    // Leaf callees in place are off: they would take in a thunk in the
    // caller's page before it is ever learned as one (the PC-thunk form
    // serves thunks in other pages, a shared library's).
    let body = "
        call thunk
        call site
        cmp ebx, offset back
        jne 2f
        cmp esi, 0
        jne 2f
        mov byte ptr [thunk + 1], 0x34
        call site
        cmp ebx, 0
        jne 2f
        cmp esi, offset back
        jne 2f
        xor eax, eax
        ret
    2:  mov eax, 3
        ret
    site:
        xor ebx, ebx
        xor esi, esi
        call thunk
    back:
        ret
    thunk:
        mov ebx, [esp]
        ret";
    let log = std::env::temp_dir().join(format!("pc-thunk-{}.log", std::process::id()));
    let log_arg = log.to_string_lossy().into_owned();
    let r = run_asm(
        "pc_thunk",
        body,
        &[
            "--log-translations",
            &log_arg,
            "--set",
            "nestmon.bt.inlineLeaves=FALSE",
        ],
    );
    let listing = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(
        // The inline form compares the thunk's bytes 8B 1C 24 C3.
        listing.contains("lea ecx,[rcx+3CDBE375h]"),
        "the call in `site` did not run the thunk inline:\n{listing}"
    );
}

#[test]
fn a_fault_in_a_run_of_pushes_reports_esp_after_the_pushes_before_it() {
    // Consecutive pushes update the host's ESP register once (the lag is
    // folded into their stores): the second push wraps below 0, and the
    // report names it with ESP as the first push left it.
    let r = run_asm(
        "push_run_fault",
        "mov esp, 4\nmov ebx, 7\npush ebx\n.globl second\nsecond: push ebx\nret",
        &["--memsize", "16"],
    );
    assert_died(&r, &["ESP=00000000"]);
}

#[test]
fn a_fault_in_a_run_of_pops_reports_esp_after_the_pops_before_it() {
    // The second pop reads past the top of 16 MiB of RAM.
    let r = run_asm(
        "pop_run_fault",
        "mov esp, 0xfffffc\npop ebx\npop esi\nret",
        &["--memsize", "16"],
    );
    assert_died(&r, &["outside guest RAM", "ESP=01000000"]);
}

#[test]
fn calls_after_pushes_stopped_by_exit_requests_keep_the_stack() {
    // Each iteration pushes twice and calls backwards: the call polls for
    // exit requests with the pushes' ESP not yet in the host register.
    // The PIT interrupts at 1 kHz (each interrupt asks for an exit, and
    // its delivery pushes a frame below ESP); the callee checks its
    // arguments and the loop checks ESP at the end.
    let body = "jmp 5f\n\
                1: mov eax, [esp+4]\nadd eax, [esp+8]\ncmp eax, ecx\njne 9f\nret\n\
                irq0: push eax\nmov al, 0x20\nout 0x20, al\npop eax\niret\n\
                5: mov eax, offset irq0\nmov word ptr [idt+64], ax\nmov dx, cs\n\
                mov word ptr [idt+66], dx\nmov word ptr [idt+68], 0x8e00\nshr eax, 16\n\
                mov word ptr [idt+70], ax\nlidt [idtr]\n\
                mov al, 0xfe\nout 0x21, al\n\
                mov al, 0x34\nout 0x43, al\nmov al, 0xa9\nout 0x40, al\nmov al, 0x04\nout 0x40, al\n\
                sti\nmov esi, esp\nmov ecx, 200000000\n\
                6: mov edx, ecx\nsub edx, 3\npush 3\npush edx\ncall 1b\npop edx\npop edx\n\
                dec ecx\njnz 6b\ncli\ncmp esi, esp\njne 9f\nxor eax, eax\nret\n\
                9: mov eax, 1\nret\n\
                .data\n.balign 8\nidt: .fill 256, 8, 0\nidtr: .word 2047\n.long idt\n.text";
    let r = run_asm("calls_after_pushes", body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let requests = stats_counter(&r, "exits: stop requests");
    assert!(requests.is_some_and(|n| n > 10), "{}", r.stderr);
}

#[test]
fn a_segment_base_access_that_wraps_past_4_gib_reads_what_the_guest_addresses() {
    // GS with base 0xfffff000 and a 4 GiB limit (a descriptor appended to
    // the runtime's GDT): gs:[value + 0x1000] and gs:[ebx + 0x1000] wrap
    // to `value`. Folded into host addressing, the absolute form's sum
    // lands past the window and the access runs again unfolded (named
    // once); the register form wraps in its 32-bit base + EBX already.
    // Both run twice.
    let body = with_gdt_entry(
        "mov dword ptr [edi], 0xf000ffff\nmov dword ptr [edi+4], 0xffcf92ff",
        "mov gs, dx\n\
                mov ecx, 2\n1: mov eax, gs:[value+0x1000]\ncmp eax, 0x5eed1234\njne 9f\n\
                mov ebx, offset value\nmov eax, gs:[ebx+0x1000]\ncmp eax, 0x5eed1234\njne 9f\n\
                dec ecx\njnz 1b\nxor eax, eax\nret\n\
                9: mov eax, 1\nret\n\
                .data\nvalue: .long 0x5eed1234\n.text",
    );
    let r = run_asm("segment_base_wrap", &body, &["--stats"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let wrapped = stats_counter(&r, "folded accesses that wrapped (run again unfolded)");
    assert_eq!(wrapped, Some(1), "{}", r.stderr);
}

#[test]
fn jump_tables_go_through_their_host_entries_and_follow_a_table_rewritten_or_indexed_past_255() {
    // guests/jump_tables.c: a table in writable data rewritten after its
    // jump ran hot, a 300-entry table indexed past 255, an ESI index, a
    // PIC table whose base register moves; call sites whose one target
    // changes, or that take four.
    let guest = guest_dir().join("jump_tables.elf");
    let with = |extra: &[&str]| {
        run(
            Command::new(env!("CARGO_BIN_EXE_nestmon"))
                .args(["run", "--stats"])
                .args(extra)
                .arg("--kernel")
                .arg(&guest),
            Duration::from_secs(60),
        )
    };
    let want = expected("jump_tables").expect("guests/expected/jump_tables.out");
    let on = with(&[]);
    assert_eq!(on.code, Some(0), "{}", describe(&on));
    assert_eq!(
        filter(&on.stdout),
        want,
        "{}",
        first_diff(&want, &on.stdout)
    );
    // The jumps reached their targets through the view's chain table:
    // each table's entries missed there before the monitor set them.
    let misses = stats_counter(&on, "exits: chain-table miss").unwrap_or(0);
    assert!(misses >= 6, "{}", on.stderr);
    // Off, the same output through the indirect-branch table alone.
    let off = with(&["--set", "nestmon.bt.jumpTables=FALSE"]);
    assert_eq!(off.code, Some(0), "{}", describe(&off));
    assert_eq!(filter(&off.stdout), want);
    let off_misses = stats_counter(&off, "exits: chain-table miss").unwrap_or(0);
    assert_eq!(off_misses, 0, "{}", off.stderr);
    // The call sites got inline caches (the one that takes four holds
    // them all); without them, none, and the same output.
    let caches = "inline caches made or given up";
    assert!(
        stats_counter(&on, caches).unwrap_or(0) >= 3,
        "{}",
        on.stderr
    );
    let uncached = with(&["--set", "nestmon.bt.inlineCaches=FALSE"]);
    assert_eq!(filter(&uncached.stdout), want);
    assert_eq!(
        stats_counter(&uncached, caches).unwrap_or(0),
        0,
        "{}",
        uncached.stderr
    );
}
