//! The shadow MMU as a guest sees it through `--stats`: what an INVLPG
//! drops and what it leaves. (Paging semantics themselves are checked by
//! the `pm_paging` guest against QEMU.)

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;

#[test]
fn invlpg_drops_one_page_not_the_translations_or_the_other_mappings() {
    // Identity-map the first 4 MiB with 4 KiB pages, turn paging on, then
    // 1000 times: rewrite the PTE of one data page, INVLPG it and read it.
    // Each rewrite clears the accessed bit the last read's walk set, so the
    // page must be walked (refilled) again after each INVLPG, but nothing
    // else: no flush of every translation and mapping.
    let body = format!(
        "{}
        lea eax, [page_dir]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 1000
    2:  mov eax, 0x300003
        mov [page_table + 0x200 * 4], eax
        invlpg [0x200000]
        mov eax, [0x200000]
        dec ebx
        jnz 2b
        {PAGING_OFF_AND_PASS}
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
        .text",
        identity_map(&["page_dir"])
    );
    let r = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--stats", "--kernel"])
            .arg(asm_guest("invlpg_loop", &body)),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert_eq!(stat(&r.stderr, "INVLPG (page invalidations)"), 1000);
    let flushes = stat(&r.stderr, "flushes");
    assert!(
        flushes <= 8,
        "{flushes} flushes for 1000 INVLPGs:\n{}",
        r.stderr
    );
    let fills = stat(&r.stderr, "hidden faults (shadow fills)");
    assert!(
        (1000..1100).contains(&fills),
        "one refill per INVLPG expected, got {fills}:\n{}",
        r.stderr
    );
}

/// Identity-maps the first 4 MiB through `page_table` from every page
/// directory named (asm fragment).
fn identity_map(dirs: &[&str]) -> String {
    let mut asm = String::from(
        "
        lea edi, [page_table]
        mov eax, 0x3
        mov ecx, 1024
    1:  mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop 1b
        lea eax, [page_table]
        or eax, 0x3
",
    );
    for d in dirs {
        asm.push_str(&format!("        mov [{d}], eax\n"));
    }
    asm
}

const PAGING_ON: &str = "
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
";

const PAGING_OFF_AND_PASS: &str = "
        mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        xor eax, eax
        ret
";

#[test]
fn cr3_switches_keep_every_space_and_every_translation() {
    // Two page directories sharing the kernel's page table; 1000 times:
    // switch to each and run the same code touching the same data. Each
    // space is filled once; no switch drops translations or mappings.
    let body = format!(
        "{}
        lea eax, [pd1]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 1000
    2:  lea eax, [pd2]
        mov cr3, eax
        call work
        lea eax, [pd1]
        mov cr3, eax
        call work
        dec ebx
        jnz 2b
        {PAGING_OFF_AND_PASS}
    work:
        mov eax, [counter]
        add eax, 1
        mov [counter], eax
        ret
        .bss
        .align 4096
    pd1: .skip 4096
    pd2: .skip 4096
    page_table: .skip 4096
    counter: .skip 4
        .text",
        identity_map(&["pd1", "pd2"])
    );
    let r = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--stats", "--kernel"])
            .arg(asm_guest("cr3_switches", &body)),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "MMU: address-space switches") >= 2000,
        "{}",
        r.stderr
    );
    assert_eq!(
        stat(&r.stderr, "MMU: address spaces made"),
        3,
        "pd1 at paging on, pd2, the unpaged one at paging off:\n{}",
        r.stderr
    );
    let translations = stat(&r.stderr, "translations");
    assert!(
        translations < 100,
        "{translations} translations for 2000 switches:\n{}",
        r.stderr
    );
    let fills = stat(&r.stderr, "hidden faults (shadow fills)");
    assert!(
        fills < 100,
        "{fills} fills for 2000 switches:\n{}",
        r.stderr
    );
}

/// A loop that points eight PTEs (of 0x3c0000-0x3c7fff, away from the
/// guest's own pages) at one of two frames in turn (without
/// INVLPG), reloads CR3 and checks what it reads through two of them;
/// fails (status 1) on a stale read.
fn pte_rewrite_loop() -> std::path::PathBuf {
    let body = format!(
        "{}
        mov dword ptr [0x300000], 0xaaaa
        mov dword ptr [0x301000], 0xbbbb
        lea eax, [pd1]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 500
    2:  mov eax, ebx
        and eax, 1
        shl eax, 12
        add eax, 0x300003
        lea edi, [page_table + 0x3c0 * 4]
        mov ecx, 8
    4:  mov [edi], eax
        add edi, 4
        loop 4b
        mov eax, cr3
        mov cr3, eax
        mov ecx, 0xaaaa
        mov edx, 0xbbbb
        test ebx, 1
        cmovnz ecx, edx
        cmp ecx, [0x3c0000]
        jne 3f
        cmp ecx, [0x3c1000]
        jne 3f
        dec ebx
        jnz 2b
        {PAGING_OFF_AND_PASS}
    3:  mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        mov eax, 1
        ret
        .bss
        .align 4096
    pd1: .skip 4096
    page_table: .skip 4096
        .text",
        identity_map(&["pd1"])
    );
    asm_guest("pte_rewrite_loop", &body)
}

#[test]
fn leaf_tables_go_out_of_sync_unless_the_option_turns_it_off() {
    let elf = pte_rewrite_loop();
    let run_with = |extra: &[&str]| {
        run(
            std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
                .args(["run", "--stats"])
                .args(extra)
                .arg("--kernel")
                .arg(&elf),
            std::time::Duration::from_secs(60),
        )
    };
    let oos = run_with(&[]);
    assert_eq!(
        oos.code,
        Some(0),
        "stale read with out-of-sync tables: {}\n{}",
        describe(&oos),
        oos.stderr
    );
    // Each flush (the CR3 reload) brings the table back in sync; the two
    // writes after it are traced and the other six are not.
    assert!(
        stat(&oos.stderr, "MMU: page tables gone out of sync") >= 500,
        "{}",
        oos.stderr
    );
    assert!(
        stat(&oos.stderr, "MMU: out-of-sync tables resynchronized") >= 499,
        "{}",
        oos.stderr
    );
    let traced = stat(&oos.stderr, "MMU: traced page-table writes");
    assert!(
        traced <= 1010,
        "{traced} traced writes for 4000 PTE writes:\n{}",
        oos.stderr
    );

    let sync = run_with(&["--set", "nestmon.mmu.outOfSync=FALSE"]);
    assert_eq!(
        sync.code,
        Some(0),
        "stale read with in-sync tables: {}\n{}",
        describe(&sync),
        sync.stderr
    );
    assert_eq!(
        stat(&sync.stderr, "MMU: page tables gone out of sync"),
        0,
        "{}",
        sync.stderr
    );
    assert!(
        stat(&sync.stderr, "MMU: traced page-table writes") >= 4000,
        "{}",
        sync.stderr
    );
}

#[test]
fn a_remapped_code_page_runs_its_new_code_though_no_data_access_filled_it() {
    // Linear 0x800000 (a 4 MiB region nothing reads or writes as data) is
    // mapped through its own page table to a frame holding `mov eax, 1;
    // ret` and called indirectly; then the PTE is pointed at a frame
    // holding `mov eax, 2; ret`, the page INVLPG'd and called again. The
    // indirect-branch entry of 0x800000 must not outlive the mapping it
    // was made for: the table a code fetch walked is watched too.
    let body = format!(
        "{}
        lea eax, [code_a]
        or eax, 1
        mov [table2], eax
        lea eax, [table2]
        or eax, 3
        mov [pd1 + 2 * 4], eax
        lea eax, [pd1]
        mov cr3, eax
        {PAGING_ON}
        mov esi, 0x800000
        mov ebx, 50
    2:  call esi
        cmp eax, 1
        jne 3f
        dec ebx
        jnz 2b
        lea eax, [code_b]
        or eax, 1
        mov [table2], eax
        invlpg [0x800000]
        call esi
        cmp eax, 2
        jne 3f
        {PAGING_OFF_AND_PASS}
    3:  mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        mov eax, 1
        ret
        .data
        .align 4096
    code_a:
        mov eax, 1
        ret
        .align 4096
    code_b:
        mov eax, 2
        ret
        .bss
        .align 4096
    pd1: .skip 4096
    page_table: .skip 4096
    table2: .skip 4096
        .text",
        identity_map(&["pd1"])
    );
    let r = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--kernel"])
            .arg(asm_guest("remapped_code_page", &body)),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(
        r.code,
        Some(0),
        "stale code after the remap: {}\n{}",
        describe(&r),
        r.stderr
    );
}
