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
    let r = run_with_stats(&invlpg_loop_guest(), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert_eq!(stat(&r.stderr, "INVLPG (page invalidations)"), 1000);
    let flushes = stat(&r.stderr, "flushes");
    assert!(
        flushes <= 8,
        "{flushes} flushes for 1000 INVLPGs:\n{}",
        r.stderr
    );
    // One refill per INVLPG: a shadow fill through a host fault, or, once
    // the read has faulted a few times and become adaptive, a
    // software-TLB fill after a plain exit.
    let fills = stat(&r.stderr, "hidden faults (shadow fills)")
        + stat(&r.stderr, "MMU: software-TLB fills");
    assert!(
        (1000..1100).contains(&fills),
        "one refill per INVLPG expected, got {fills}:\n{}",
        r.stderr
    );
    assert!(
        stat(&r.stderr, "MMU: instructions made adaptive") >= 1,
        "the read kept faulting but was not made adaptive:\n{}",
        r.stderr
    );
    assert!(
        stat(&r.stderr, "hidden faults (shadow fills)") < 100,
        "the adaptive read still takes host faults:\n{}",
        r.stderr
    );
}

/// A guest that rewrites one PTE, INVLPGs its page and reads the page,
/// 1000 times.
fn invlpg_loop_guest() -> std::path::PathBuf {
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
    asm_guest("invlpg_loop", &body)
}

#[test]
fn with_adaptive_access_off_every_refill_is_a_host_fault() {
    let r = run_with_stats(
        &invlpg_loop_guest(),
        &["--set", "nestmon.mmu.adaptive=FALSE"],
    );
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert_eq!(stat(&r.stderr, "MMU: instructions made adaptive"), 0);
    assert_eq!(stat(&r.stderr, "MMU: software-TLB fills"), 0);
    let fills = stat(&r.stderr, "hidden faults (shadow fills)");
    assert!(
        (1000..1100).contains(&fills),
        "one host fault per INVLPG expected, got {fills}:\n{}",
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

/// Paging off and exit status 3: a check of the guest failed.
const PAGING_OFF_AND_FAIL: &str = "
        mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        mov eax, 3
        ret
";

/// Linear 0x800000 mapped through its own page table (`table2`, PDE 2 of
/// `pd1`) to the page `code_a` (`mov eax, 1; ret`), and CR3 = `pd1`;
/// `code_b` (`mov eax, 2; ret`) is the other page (see
/// [`CODE_PAGES_AT_8_MIB`]).
const CODE_A_AT_8_MIB: &str = "
        lea eax, [code_a]
        or eax, 1
        mov [table2], eax
        lea eax, [table2]
        or eax, 3
        mov [pd1 + 2 * 4], eax
        lea eax, [pd1]
        mov cr3, eax
";

/// The pages [`CODE_A_AT_8_MIB`] names, and `pd1`, its `page_table` and
/// `table2`; back in `.text` after it.
const CODE_PAGES_AT_8_MIB: &str = "
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
        .text
";

/// Paging off and exit status 1: a check of the guest failed.
const PAGING_OFF_AND_FAIL_1: &str = "
        mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        mov eax, 1
        ret
";

/// Runs the asm guest `name` made of `body` with `--stats`: it passes,
/// and `what` kept faulting and became adaptive.
fn run_made_adaptive(name: &str, body: &str, what: &str) -> Run {
    let r = run_with_stats(&asm_guest(name, body), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "MMU: instructions made adaptive") >= 1,
        "{what} kept faulting but was not made adaptive:\n{}",
        r.stderr
    );
    r
}

/// `nestmon run --stats EXTRA --kernel GUEST`, a minute at most.
fn run_with_stats(guest: &std::path::Path, extra: &[&str]) -> Run {
    run(
        std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--stats"])
            .args(extra)
            .arg("--kernel")
            .arg(guest),
        std::time::Duration::from_secs(60),
    )
}

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
    let r = run_with_stats(&asm_guest("cr3_switches", &body), &[]);
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
    assert_stat_below(&r.stderr, "translations", 100, "2000 switches");
    assert_stat_below(
        &r.stderr,
        "hidden faults (shadow fills)",
        100,
        "2000 switches",
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
    3:  {PAGING_OFF_AND_FAIL_1}
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
    let oos = run_with_stats(&elf, &[]);
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

    let sync = run_with_stats(&elf, &["--set", "nestmon.mmu.outOfSync=FALSE"]);
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
        {CODE_A_AT_8_MIB}
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
    3:  {PAGING_OFF_AND_FAIL_1}
        {CODE_PAGES_AT_8_MIB}",
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

#[test]
fn a_store_made_adaptive_cannot_write_code_unseen_through_its_software_tlb_entry() {
    // `store` writes linear 0x200000, whose PTE keeps changing (frames
    // 0x300000 and 0x301000, each change INVLPGed), so it faults again
    // and again and becomes adaptive: it then writes through the software
    // TLB. Its last run leaves a write entry for frame 0x300000. Then
    // code is put in that frame (through its identity mapping) and run,
    // which makes the frame hold translations; `store` then overwrites the
    // code's immediate through its entry: the old translation must die,
    // so the code returns the new value.
    let body = format!(
        "{}
        lea eax, [page_dir]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 16
    2:  mov eax, 0x301003
        test ebx, 1
        jz 3f
        mov eax, 0x300003
    3:  mov [page_table + 0x200 * 4], eax
        invlpg [0x200000]
        mov ecx, ebx
        call store
        dec ebx
        jnz 2b
        mov dword ptr [0x300000], 0x000001b8
        mov dword ptr [0x300004], 0x9090c300
        mov eax, 0x300000
        call eax
        cmp eax, 1
        jne 4f
        mov ecx, 0x000002b8
        call store
        mov eax, 0x300000
        call eax
        cmp eax, 2
        jne 4f
        {PAGING_OFF_AND_PASS}
    4:  {PAGING_OFF_AND_FAIL}
    store:
        mov [0x200000], ecx
        ret
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
        .text",
        identity_map(&["page_dir"])
    );
    let r = run_made_adaptive("adaptive_store_over_code", &body, "the store");
    assert!(
        stat(&r.stderr, "MMU: software-TLB fills") >= 8,
        "the adaptive store did not write through the software TLB:\n{}",
        r.stderr
    );
}

#[test]
fn an_adaptive_read_raises_the_guests_page_fault_without_a_host_fault() {
    // A read of a page that is not present, 64 times: the #PF handler
    // counts, makes the page present for the retry, and the loop makes it
    // absent again. After a few host faults the read is adaptive and its
    // misses raise the #PF themselves.
    let body = format!(
        "{}
        lea eax, [page_dir]
        mov cr3, eax
        lea eax, [idt]
        mov [idtr + 2], eax
        lidt [idtr]
        lea eax, [pf_handler]
        mov [idt + 14 * 8], ax
        mov word ptr [idt + 14 * 8 + 2], cs
        mov word ptr [idt + 14 * 8 + 4], 0x8e00
        shr eax, 16
        mov [idt + 14 * 8 + 6], ax
        {PAGING_ON}
        mov ebx, 64
    2:  mov dword ptr [page_table + 0x200 * 4], 0x300002
        invlpg [0x200000]
        mov eax, [0x200000]
        dec ebx
        jnz 2b
        cmp dword ptr [faults], 64
        jne 4f
        {PAGING_OFF_AND_PASS}
    4:  {PAGING_OFF_AND_FAIL}
    pf_handler:
        add dword ptr [faults], 1
        mov dword ptr [page_table + 0x200 * 4], 0x300003
        invlpg [0x200000]
        add esp, 4
        iretd
        .data
    idtr: .word 256 * 8 - 1
        .long 0
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
    idt: .skip 256 * 8
    faults: .skip 4
        .text",
        identity_map(&["page_dir"])
    );
    let r = run_with_stats(&asm_guest("adaptive_read_page_fault", &body), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "MMU: software-TLB misses raising a guest #PF") >= 32,
        "the adaptive read's page faults did not come from its misses:\n{}",
        r.stderr
    );
}

#[test]
fn a_bit_string_instruction_that_keeps_faulting_still_finds_its_bit_through_the_page_tables() {
    // `flip` = bts [0x200000], ecx keeps faulting (the PTE of 0x200000,
    // pointing at frame 0x300000, is rewritten and INVLPGed each round).
    // Then it flips bit 8 * 0x80000: linear 0x280000, which the identity
    // mapping sends to physical 0x280000, not to 0x380000 (the frame plus
    // the offset, which an access relative to the frame would change).
    let body = format!(
        "{}
        lea eax, [page_dir]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 64
    2:  mov dword ptr [page_table + 0x200 * 4], 0x300003
        invlpg [0x200000]
        xor ecx, ecx
        call flip
        dec ebx
        jnz 2b
        mov dword ptr [0x280000], 0
        mov dword ptr [0x380000], 0
        mov ecx, 0x400000
        call flip
        cmp dword ptr [0x280000], 1
        jne 4f
        cmp dword ptr [0x380000], 0
        jne 4f
        {PAGING_OFF_AND_PASS}
    4:  {PAGING_OFF_AND_FAIL}
    flip:
        bts dword ptr [0x200000], ecx
        ret
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
        .text",
        identity_map(&["page_dir"])
    );
    let r = run_with_stats(&asm_guest("adaptive_bts", &body), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
}

#[test]
fn adaptive_rep_stos_and_movs_write_across_pages_through_the_page_tables() {
    // Linear 0x240000-0x242fff maps frames 0x300000.. or 0x310000..
    // (alternating each round), linear 0x246000-0x247fff frames 0x320000..
    // or 0x330000..; every round rewrites the PTEs and INVLPGs the pages,
    // so `fill` (rep stosd of 0x800 dwords from 0x240800) and `copy` (rep
    // movsd of them to 0x246000) keep faulting and become adaptive. Each
    // round's words must land in the frames that round maps, up to the
    // last dword and not one further; a last round with DF set (the
    // window path) fills backwards.
    let body = format!(
        "{}
        lea eax, [page_dir]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 1
    2:  mov eax, 0x300003
        mov edx, 0x320003
        test ebx, 1
        jz 3f
        mov eax, 0x310003
        mov edx, 0x330003
    3:  mov [page_table + 0x240 * 4], eax
        add eax, 0x1000
        mov [page_table + 0x241 * 4], eax
        add eax, 0x1000
        mov [page_table + 0x242 * 4], eax
        mov [page_table + 0x246 * 4], edx
        add edx, 0x1000
        mov [page_table + 0x247 * 4], edx
        invlpg [0x240000]
        invlpg [0x241000]
        invlpg [0x242000]
        invlpg [0x246000]
        invlpg [0x247000]
        mov eax, ebx
        call fill
        call copy
        // the frames of this round, through the identity map
        mov esi, 0x300000
        mov edi, 0x320000
        test ebx, 1
        jz 5f
        mov esi, 0x310000
        mov edi, 0x330000
    5:  cmp [esi + 0x800], ebx
        jne 9f
        cmp [esi + 0x1010], ebx
        jne 9f
        cmp [esi + 0x27fc], ebx
        jne 9f
        cmp dword ptr [esi + 0x2800], 0
        jne 9f
        cmp [edi], ebx
        jne 9f
        cmp [edi + 0x1ffc], ebx
        jne 9f
        inc ebx
        cmp ebx, 24
        jne 2b
        // DF set: the window path, backwards from the last dword
        mov eax, 0x55
        std
        mov edi, 0x2427fc
        mov ecx, 0x800
        call fill_down
        cld
        cmp dword ptr [esi + 0x800], 0x55
        jne 9f
        cmp dword ptr [esi + 0x27fc], 0x55
        jne 9f
        {PAGING_OFF_AND_PASS}
    9:  cld
        {PAGING_OFF_AND_FAIL}
    fill:
        mov edi, 0x240800
        mov ecx, 0x800
    fill_down:
        rep stosd
        ret
    copy:
        mov esi, 0x240800
        mov edi, 0x246000
        mov ecx, 0x800
        rep movsd
        ret
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
        .text",
        identity_map(&["page_dir"])
    );
    let r = run_with_stats(
        &asm_guest("adaptive_strings", &body),
        &["--set", "nestmon.mmu.adaptiveStrings=TRUE"],
    );
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "MMU: instructions made adaptive") >= 2,
        "the string instructions kept faulting but were not made adaptive:\n{}",
        r.stderr
    );
    assert!(
        stat(&r.stderr, "MMU: software-TLB fills") >= 40,
        "the adaptive string instructions did not go through the software TLB:\n{}",
        r.stderr
    );
}

#[test]
fn a_kernel_style_copy_through_a_4_mib_page_takes_one_software_tlb_miss_per_4_mib() {
    // The region at 4 MiB is a 4 MiB page (PSE), switched between the
    // frames at 8 and 12 MiB each round (PDE write, INVLPG: the window
    // drops it), as Linux's direct map is one 4 MiB page per region. One
    // `rep movsd` copies first 5 dwords within one page (the short copy),
    // then 64 KiB (16 pages read, 16 written); its window fault per round
    // makes it adaptive. A miss in the 4 MiB page then fills the software
    // TLB for the whole of it, as the window maps it whole: about one miss
    // a round instead of 32. What each copy wrote is checked, up to its
    // last dword and not one further.
    let body = format!(
        "{}
        // Markers in both frames, paging off (linear = physical).
        mov ecx, 5
    1:  lea eax, [ecx + 0x0fff]
        mov [0x801010 + ecx * 4 - 4], eax
        lea eax, [ecx + 0x1fff]
        mov [0xc01010 + ecx * 4 - 4], eax
        loop 1b
        mov dword ptr [0x80fffc], 0x1111
        mov dword ptr [0xc0fffc], 0x2222
        mov eax, cr4
        or eax, 0x10
        mov cr4, eax
        lea eax, [page_dir]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 1
    2:  mov eax, 0x800083
        mov edx, 0x1000
        test ebx, 1
        jnz 3f
        mov eax, 0xc00083
        mov edx, 0x2000
    3:  mov [page_dir + 4], eax
        invlpg [0x400000]
        mov esi, 0x401010
        mov edi, 0x4c1020
        mov ecx, 5
        call copy
        cmp [0x4c1020], edx
        jne 9f
        lea eax, [edx + 4]
        cmp [0x4c1030], eax
        jne 9f
        cmp dword ptr [0x4c1034], 0
        jne 9f
        mov esi, 0x400000
        mov edi, 0x480000
        mov ecx, 0x4000
        call copy
        cmp [0x481010], edx
        jne 9f
        mov eax, 0x1111
        test ebx, 1
        jnz 4f
        mov eax, 0x2222
    4:  cmp [0x48fffc], eax
        jne 9f
        cmp dword ptr [0x490000], 0
        jne 9f
        inc ebx
        cmp ebx, 24
        jne 2b
        {PAGING_OFF_AND_PASS}
    9:  {PAGING_OFF_AND_FAIL}
    copy:
        rep movsd
        ret
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
        .text",
        identity_map(&["page_dir"])
    );
    let r = run_made_adaptive("soft_large_copy", &body, "the copy");
    assert!(
        stat(&r.stderr, "MMU: software-TLB fills of a whole 4 MiB page") >= 10,
        "no whole 4 MiB page went into the software TLB:\n{}",
        r.stderr
    );
    assert_stat_below(
        &r.stderr,
        "MMU: software-TLB misses",
        100,
        "a miss per 4 KiB page copied: about 600",
    );
}

#[test]
fn an_adaptive_store_found_hot_without_misses_goes_back_to_the_window() {
    // guests/pm_adaptive.c: one store touches 64 fresh pages (it becomes
    // adaptive), then runs for 1.5 s over one mapped page while the PIT
    // interrupts at 1 kHz; the exit requests of those interrupts find it
    // in hot code, missing no more, and an epoch later it goes back.
    assert_made_adaptive_and_sent_back("pm_adaptive.elf");
    // Turned off, nothing becomes adaptive and nothing goes back.
    let off = run_with_stats(
        &guest_dir().join("pm_adaptive.elf"),
        &["--set", "nestmon.mmu.adaptive=FALSE"],
    );
    assert_eq!(off.code, Some(0), "{}", describe(&off));
    assert_eq!(stat(&off.stderr, "MMU: instructions made adaptive"), 0);
    assert_eq!(
        stat(&off.stderr, "MMU: adaptive instructions back to the window"),
        0
    );
}

#[test]
fn an_adaptive_store_in_a_called_function_is_found_hot_by_time_samples_and_goes_back() {
    // guests/pm_adaptive_call.c: as pm_adaptive, but the store is alone in
    // a function the loop calls. Its unit is entered by a predicted call
    // and left by a predicted return, so no exit request ever finds it
    // about to run; the time samples of the vCPU thread find it hot.
    assert_made_adaptive_and_sent_back("pm_adaptive_call.elf");
}

#[test]
fn a_user_rep_string_that_keeps_faulting_becomes_adaptive_after_sixteen_faults() {
    // guests/pm_user_strings.c: a ring-3 `rep stosl` over 64 fresh pages,
    // then a ring-3 `rep movsl` of them to 64 more. Each string takes a
    // host fault per fresh page until its 16th (a user REP string needs
    // more faults than other instructions' 4: a hot short copy faulting a
    // few times per process stays in the window), then goes through the
    // software TLB: 2 x 48 host faults fewer than with adaptive strings
    // off; with 4 faults it would be 2 x 60.
    let guest = guest_dir().join("pm_user_strings.elf");
    let on = run_with_stats(&guest, &[]);
    assert_eq!(on.code, Some(0), "{}", describe(&on));
    let off = run_with_stats(&guest, &["--set", "nestmon.mmu.adaptiveStrings=FALSE"]);
    assert_eq!(off.code, Some(0), "{}", describe(&off));
    let faults = |r: &Run| stat(&r.stderr, "exits: host fault");
    let spared = faults(&off).saturating_sub(faults(&on));
    assert!(
        (2 * 40..=2 * 50).contains(&spared),
        "host faults: {} with adaptive strings, {} without (spared {spared}, want about 96)\n{}",
        faults(&on),
        faults(&off),
        on.stderr
    );
}

#[test]
fn an_adaptive_fxsave_still_faults_when_misaligned_and_works_across_pages() {
    // guests/pm_fxsave_pages.c: one FXSAVE over 64 fresh pages becomes
    // adaptive (about 84 host faults with it in the window, 28 without);
    // then the same instruction raises #GP(0) for an area 8 bytes off 16
    // and saves into an area that crosses a page (its probe misses and
    // the monitor runs it through the window); FXRSTOR likewise. The
    // guest checks what it reads back; output as under QEMU (guests.rs).
    let r = run_with_stats(&guest_dir().join("pm_fxsave_pages.elf"), &[]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(
        stat(&r.stderr, "MMU: instructions made adaptive") >= 2,
        "{}",
        r.stderr
    );
    assert_stat_below(
        &r.stderr,
        "exits: host fault",
        50,
        "64 fresh pages: about 84 with FXSAVE in the window",
    );
}

/// Runs guest `elf` with `--stats`: it passes, at least one instruction
/// became adaptive and at least one went back to the window.
fn assert_made_adaptive_and_sent_back(elf: &str) {
    let r = run_with_stats(&guest_dir().join(elf), &[]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    for counter in [
        "MMU: instructions made adaptive",
        "MMU: adaptive instructions back to the window",
    ] {
        assert!(stat(&r.stderr, counter) >= 1, "{counter}:\n{}", r.stderr);
    }
}

#[test]
fn a_direct_call_into_another_page_follows_a_remap_and_a_rewrite_of_its_target() {
    // A direct call from the guest's code into linear 0x800000 (its own
    // page table), 50 times per step: first to a frame holding `mov eax,
    // 1; ret`; then, the PTE pointed at another frame (`mov eax, 2`) and
    // the page INVLPG'd; then that frame's immediate rewritten to 3. The
    // call goes through the view's chain table: its entry must follow the
    // mapping and the code, with chain tables on and off alike.
    // One call site for every step (`calls`: EDI the value wanted), so
    // that its entry, set at the first step, must follow the changes.
    let step = |want: u32| format!("mov edi, {want}\n        call calls\n        jne 3f");
    let body = format!(
        "{}
        {CODE_A_AT_8_MIB}
        {PAGING_ON}
        {}
        lea eax, [code_b]
        or eax, 1
        mov [table2], eax
        invlpg [0x800000]
        {}
        mov dword ptr [code_b + 1], 3
        {}
        {PAGING_OFF_AND_PASS}
    3:  {PAGING_OFF_AND_FAIL_1}
    calls:
        mov ebx, 50
    4:  call 0x800000
        cmp eax, edi
        jne 5f
        dec ebx
        jnz 4b
    5:  ret
        {CODE_PAGES_AT_8_MIB}",
        identity_map(&["pd1"]),
        step(1),
        step(2),
        step(3)
    );
    let elf = asm_guest("chained_call_remap", &body);
    let on = run_with_stats(&elf, &[]);
    assert_eq!(
        on.code,
        Some(0),
        "stale code: {}\n{}",
        describe(&on),
        on.stderr
    );
    assert!(
        stat(&on.stderr, "exits: chain-table miss") >= 3,
        "the call went through the chain table once per step:\n{}",
        on.stderr
    );
    let off = run_with_stats(&elf, &["--set", "nestmon.bt.chainTables=FALSE"]);
    assert_eq!(off.code, Some(0), "{}", describe(&off));
    assert_eq!(stat(&off.stderr, "exits: chain-table miss"), 0);
}

#[test]
fn code_differing_per_address_space_runs_right_through_the_chain_tables() {
    // guests/pm_spaces.c (checked against QEMU by tests/guests.rs) calls
    // and jumps directly from shared pages into per-space pages: with
    // chain tables those branches go through each view's own entries.
    let r = run_with_stats(&guest_dir().join("pm_spaces.elf"), &[]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(
        stat(&r.stderr, "exits: chain-table miss") > 0,
        "{}",
        r.stderr
    );
    assert!(
        stat(&r.stderr, "chain-table entries set") > 0,
        "{}",
        r.stderr
    );
}

#[test]
fn a_retired_space_keeps_a_shared_page_tables_region_coherent_for_the_next_directory() {
    // pd1, pd2 and pd3 share the page table of the first 4 MiB (a
    // kernel's, in Linux). V = 0x3c0000 is read through pd1 and pd2, then
    // pd1 dies: written while idle, then used by pd2 as a page table, so
    // its space retires, keeping the shared table's region. V is remapped
    // (shared table, INVLPG in pd2), and pd3, a new directory with the
    // same entry, takes the retired space over: V must read the new frame.
    let body = format!(
        "{}
        lea eax, [frame_a]
        or eax, 3
        mov [page_table + 0x3c0 * 4], eax
        mov dword ptr [frame_a], 0xaaaa
        mov dword ptr [frame_b], 0xbbbb
        lea eax, [pd1]
        mov cr3, eax
        {PAGING_ON}
        cmp dword ptr [0x3c0000], 0xaaaa
        jne 3f
        lea eax, [pd2]
        mov cr3, eax
        cmp dword ptr [0x3c0000], 0xaaaa
        jne 3f
        mov dword ptr [pd1 + 4 * 600], 0
        lea eax, [pd1]
        or eax, 3
        mov [pd2 + 4], eax
        mov eax, [0x400000]
        mov dword ptr [pd2 + 4], 0
        invlpg [0x400000]
        lea eax, [frame_b]
        or eax, 3
        mov [page_table + 0x3c0 * 4], eax
        invlpg [0x3c0000]
        cmp dword ptr [0x3c0000], 0xbbbb
        jne 3f
        mov eax, [pd1]
        mov [pd3], eax
        lea eax, [pd3]
        mov cr3, eax
        cmp dword ptr [0x3c0000], 0xbbbb
        jne 3f
        {PAGING_OFF_AND_PASS}
    3:  {PAGING_OFF_AND_FAIL}
        .bss
        .align 4096
    pd1: .skip 4096
    pd2: .skip 4096
    pd3: .skip 4096
    page_table: .skip 4096
    frame_a: .skip 4096
    frame_b: .skip 4096
        .text",
        identity_map(&["pd1", "pd2", "pd3"])
    );
    let r = run_with_stats(&asm_guest("retired_shared_region", &body), &[]);
    assert_eq!(r.code, Some(0), "stale V: {}\n{}", describe(&r), r.stderr);
    assert_eq!(
        stat(&r.stderr, "MMU: retired spaces serving a new directory"),
        1,
        "{}",
        r.stderr
    );
    assert_eq!(
        stat(
            &r.stderr,
            "MMU: shared page-table regions a new directory took over"
        ),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn a_directory_written_from_another_space_is_seen_when_its_space_is_entered() {
    // pd1 and pd2 share the first 4 MiB; 0x800000 is mapped by pd2 alone,
    // through table_a (to frame_a, which holds 1) or table_b (frame_b, 2).
    // 500 times, from pd1's space, point pd2's entry at the other table
    // (pd2 is lazy then: no write faults after the first), switch to pd2,
    // check what 0x800000 reads, switch back. pd1 is never written while
    // lazy: entering it needs no comparison.
    let body = format!(
        "{}
        lea eax, [frame_a]
        or eax, 3
        mov [table_a + 0], eax
        lea eax, [frame_b]
        or eax, 3
        mov [table_b + 0], eax
        mov dword ptr [frame_a], 1
        mov dword ptr [frame_b], 2
        lea eax, [pd1]
        mov cr3, eax
        {PAGING_ON}
        mov ebx, 500
    2:  mov esi, ebx
        and esi, 1
        lea eax, [table_a]
        lea edx, [table_b]
        test esi, esi
        cmovnz eax, edx
        or eax, 3
        mov [pd2 + 2 * 4], eax
        lea eax, [pd2]
        mov cr3, eax
        mov eax, [0x800000]
        lea ecx, [pd1]
        mov cr3, ecx
        inc esi
        cmp eax, esi
        jne 3f
        dec ebx
        jnz 2b
        {PAGING_OFF_AND_PASS}
    3:  {PAGING_OFF_AND_FAIL}
        .bss
        .align 4096
    pd1: .skip 4096
    pd2: .skip 4096
    page_table: .skip 4096
    table_a: .skip 4096
    table_b: .skip 4096
    frame_a: .skip 4096
    frame_b: .skip 4096
        .text",
        identity_map(&["pd1", "pd2"])
    );
    let r = run_with_stats(&asm_guest("lazy_directory_writes", &body), &[]);
    assert_eq!(
        r.code,
        Some(0),
        "stale read: {}\n{}",
        describe(&r),
        r.stderr
    );
    let unwritten = stat(
        &r.stderr,
        "MMU: lazy directories entered with no comparison",
    );
    assert!(
        unwritten >= 490,
        "{unwritten} entries of pd1 compared:\n{}",
        r.stderr
    );
    assert_stat_below(
        &r.stderr,
        "exits: host fault",
        100,
        "500 writes to a lazy directory",
    );
}

#[test]
fn a_traced_write_that_makes_an_accessed_pte_present_maps_its_page_ahead() {
    // Page tables traced in sync (out-of-sync tables off): 16 PTEs of
    // 0x800000.. written present with the accessed bit set, 16 after them
    // without it, all to `data` (which holds 7); every page then read once.
    // The first 16 are mapped when their PTE is written (no fault at the
    // read); the others are left to the read, which sets their A bit. (A
    // read through the table first makes it watched.)
    let body = format!(
        "{}
        lea eax, [pd1]
        mov cr3, eax
        mov dword ptr [data], 7
        lea eax, [table2]
        or eax, 0x27
        mov [pd1 + 2 * 4], eax
        lea eax, [data]
        or eax, 0x23
        mov [table2 + 100 * 4], eax
        {PAGING_ON}
        mov eax, [0x800000 + 100 * 4096]
        xor ecx, ecx
    1:  lea eax, [data]
        or eax, 0x23
        mov [table2 + ecx * 4], eax
        and eax, ~0x20
        mov [table2 + 64 + ecx * 4], eax
        inc ecx
        cmp ecx, 16
        jb 1b
        xor ebx, ebx
        xor ecx, ecx
    2:  mov edx, ecx
        shl edx, 12
        add ebx, [0x800000 + edx]
        inc ecx
        cmp ecx, 32
        jb 2b
        cmp ebx, 32 * 7
        jne 3f
        test dword ptr [table2 + 64], 0x20
        jz 3f
        {PAGING_OFF_AND_PASS}
    3:  {PAGING_OFF_AND_FAIL}
        .bss
        .align 4096
    pd1: .skip 4096
    page_table: .skip 4096
    table2: .skip 4096
    data: .skip 4096
        .text",
        identity_map(&["pd1"])
    );
    let guest = asm_guest("fill_ahead", &body);
    let r = run_with_stats(&guest, &["--set", "nestmon.mmu.outOfSync=FALSE"]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert_eq!(
        stat(&r.stderr, "MMU: pages mapped ahead of their first access"),
        16,
        "{}",
        r.stderr
    );
}

#[test]
fn pushes_pops_and_calls_that_keep_faulting_go_through_the_software_tlb() {
    // 64 pages at 0x800000 mapped present but never touched: two CALLs
    // (direct and through EAX: their return addresses), their RETs, ENTER
    // and LEAVE, a PUSH and a POP each reach one new page per iteration
    // (the software TLB fills no window mapping), so each takes a hidden
    // fault per page until it becomes adaptive; then its misses are exits,
    // not host faults. What was pushed is read back and checked.
    let body = format!(
        "{}
        lea eax, [pd1]
        mov cr3, eax
        xor ecx, ecx
    1:  mov eax, ecx
        shl eax, 12
        lea edx, [stack_pages + eax]
        or edx, 3
        mov [table2 + ecx * 4], edx
        inc ecx
        cmp ecx, 64
        jb 1b
        lea eax, [table2]
        or eax, 3
        mov [pd1 + 2 * 4], eax
        {PAGING_ON}
        mov esi, esp
        mov esp, 0x840000
        mov ecx, 64
    2:  call 5f
        lea eax, [6f]
        call eax
        push ecx
        sub esp, 4092
        dec ecx
        jnz 2b
        mov ecx, 64
        xor ebx, ebx
    3:  add esp, 4092
        pop eax
        add ebx, eax
        dec ecx
        jnz 3b
        mov esp, esi
        cmp ebx, 64 * 65 / 2
        jne 4f
        {PAGING_OFF_AND_PASS}
    4:  {PAGING_OFF_AND_FAIL}
    5:  ret
    6:  enter 8, 0
        mov dword ptr [esp], 0
        leave
        ret
        .bss
        .align 4096
    pd1: .skip 4096
    page_table: .skip 4096
    table2: .skip 4096
    stack_pages: .skip 64 * 4096
        .text",
        identity_map(&["pd1"])
    );
    let r = run_with_stats(&asm_guest("soft_stack", &body), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    let adaptive = stat(&r.stderr, "MMU: instructions made adaptive");
    assert!(
        adaptive >= 1,
        "{adaptive} adaptive instructions:\n{}",
        r.stderr
    );
    // The first stack instruction on each page becomes adaptive; its
    // misses near ESP map the window too, so the others reach the page
    // without a fault (4 host faults in all).
    assert_stat_below(
        &r.stderr,
        "exits: host fault",
        16,
        "64 new stack pages: 64 without adaptive stack accesses",
    );
}

/// A guest that, 64 times, runs PUSH m32, POP m32 (ESP-based and not),
/// CALL m32, JMP m32, FXSAVE/FXRSTOR, PUSHFD/POPFD, PUSHAD/POPAD, MOVSD, STOSD, LODSB, SCASD,
/// CMPSB (DF set) and XLAT, each on pages of its own, and REPNE SCASB,
/// REP LODSD and REPE CMPSB, sharing one, in a fresh 64 KiB
/// group of linear pages (page `j` of every group maps frame `j` of
/// `data_pages`), and checks what each did through the identity mapping.
fn soft_forms_guest() -> std::path::PathBuf {
    let body = format!(
        "{}
        lea eax, [pd1]
        mov cr3, eax
        xor ecx, ecx
    1:  mov eax, ecx
        and eax, 15
        shl eax, 12
        lea edx, [data_pages + eax]
        or edx, 3
        mov [table2 + ecx * 4], edx
        inc ecx
        cmp ecx, 1024
        jb 1b
        lea eax, [table2]
        or eax, 3
        mov [pd1 + 2 * 4], eax
        mov dword ptr [data_pages + 0x0008], 0x12345678
        mov dword ptr [data_pages + 0x000c], 0x9abcdef0
        lea eax, [callee]
        mov [data_pages + 0x3008], eax
        lea eax, [jumped_here]
        mov [data_pages + 0x3010], eax
        mov dword ptr [data_pages + 0x7100], 0x5eed5eed
        mov byte ptr [data_pages + 0x9100], 0x42
        mov dword ptr [data_pages + 0xa100], 0x77777777
        mov byte ptr [data_pages + 0xb100], 5
        mov byte ptr [data_pages + 0xc100], 3
        mov byte ptr [data_pages + 0xd010], 0x99
        mov byte ptr [data_pages + 0xf020], 0x42
        mov dword ptr [data_pages + 0xf20c], 0xfeedf00d
        mov dword ptr [data_pages + 0xf300], 0x04030201
        mov dword ptr [data_pages + 0xf304], 0x08070605
        mov dword ptr [data_pages + 0xf400], 0x04030201
        mov dword ptr [data_pages + 0xf404], 0x08077705
        mov dword ptr [base], 0x800000
        mov dword ptr [count], 64
        mov [saved_esp], esp
        {PAGING_ON}
    2:  mov dword ptr [data_pages + 0x2008], 0
        mov dword ptr [data_pages + 0x2004], 0
        mov dword ptr [data_pages + 0x200c], 0
        mov dword ptr [data_pages + 0x8100], 0
        mov dword ptr [data_pages + 0xe100], 0
        mov ebx, [base]
        # PUSH m32, POP m32 with ESP after its increment, POP m32.
        lea esp, [ebx + 0x2000]
        push dword ptr [ebx + 8]
        pop dword ptr [esp + 8]
        push dword ptr [ebx + 12]
        pop dword ptr [ebx + 0x200c]
        lea eax, [ebx + 0x2000]
        cmp esp, eax
        jne 8f
        cmp dword ptr [data_pages + 0x2008], 0x12345678
        jne 8f
        cmp dword ptr [data_pages + 0x2004], 0
        jne 8f
        cmp dword ptr [data_pages + 0x200c], 0x9abcdef0
        jne 8f
        cmp dword ptr [data_pages + 0x1ffc], 0x9abcdef0
        jne 8f
        # CALL m32: the target read from page 3, the return address
        # pushed on page 4.
        lea esp, [ebx + 0x5000]
        mov dword ptr [called], 0
        call dword ptr [ebx + 0x3008]
    ret_here:
        cmp dword ptr [called], 1
        jne 8f
        lea eax, [ret_here]
        cmp [data_pages + 0x4ffc], eax
        jne 8f
        # JMP m32: its target read from page 3 too.
        jmp dword ptr [ebx + 0x3010]
        jmp 8f
    jumped_here:
        # FXSAVE and FXRSTOR: their 512 bytes on page 0, after its 16.
        mov word ptr [data_pages + 0x200], 0
        fninit
        fxsave [ebx + 0x200]
        cmp word ptr [data_pages + 0x200], 0x37f
        jne 8f
        fxrstor [ebx + 0x200]
        # PUSHFD/POPFD on page 5: CF comes back.
        lea esp, [ebx + 0x6000]
        stc
        pushfd
        clc
        popfd
        jnc 8f
        test dword ptr [data_pages + 0x5ffc], 1
        jz 8f
        test dword ptr [data_pages + 0x5ffc], 2
        jz 8f
        # PUSHAD/POPAD on page 6.
        lea esp, [ebx + 0x7000]
        mov eax, 0xa1
        mov ecx, 0xc1
        mov edx, 0xd1
        mov ebp, 0xb1
        mov esi, 0x51
        mov edi, 0xd2
        pushad
        xor eax, eax
        xor ecx, ecx
        xor edx, edx
        xor ebp, ebp
        xor esi, esi
        xor edi, edi
        mov ebx, [base]
        lea eax, [ebx + 0x7000]
        cmp [data_pages + 0x6fec], eax
        jne 8f
        xor eax, eax
        xor ebx, ebx
        popad
        cmp eax, 0xa1
        jne 8f
        cmp ecx, 0xc1
        jne 8f
        cmp edx, 0xd1
        jne 8f
        cmp ebp, 0xb1
        jne 8f
        cmp esi, 0x51
        jne 8f
        cmp edi, 0xd2
        jne 8f
        cmp ebx, [base]
        jne 8f
        lea eax, [ebx + 0x7000]
        cmp esp, eax
        jne 8f
        # MOVSD page 7 -> page 8, STOSD page 14, LODSB page 9, SCASD page
        # 10, CMPSB (DF set) pages 11 and 12, XLAT page 13.
        cld
        lea esi, [ebx + 0x7100]
        lea edi, [ebx + 0x8100]
        movsd
        lea eax, [ebx + 0x7104]
        cmp esi, eax
        jne 8f
        lea eax, [ebx + 0x8104]
        cmp edi, eax
        jne 8f
        cmp dword ptr [data_pages + 0x8100], 0x5eed5eed
        jne 8f
        lea edi, [ebx + 0xe100]
        mov eax, 0x600d600d
        stosd
        cmp dword ptr [data_pages + 0xe100], 0x600d600d
        jne 8f
        lea esi, [ebx + 0x9100]
        lodsb
        cmp eax, 0x600d6042
        jne 8f
        lea edi, [ebx + 0xa100]
        mov eax, 0x77777777
        scasd
        jne 8f
        lea eax, [ebx + 0xa104]
        cmp edi, eax
        jne 8f
        std
        lea esi, [ebx + 0xb100]
        lea edi, [ebx + 0xc100]
        cmpsb
        cld
        jbe 8f
        lea eax, [ebx + 0xb0ff]
        cmp esi, eax
        jne 8f
        lea eax, [ebx + 0xc0ff]
        cmp edi, eax
        jne 8f
        lea ebx, [ebx + 0xd000]
        mov eax, 0x10
        xlatb
        cmp eax, 0x99
        jne 8f
        # REPNE SCASB, REP LODSD, REPE CMPSB on page 15.
        mov ebx, [base]
        lea edi, [ebx + 0xf000]
        mov ecx, 0x100
        mov eax, 0x42
        repne scasb
        jne 8f
        cmp ecx, 0x100 - 0x21
        jne 8f
        lea eax, [ebx + 0xf021]
        cmp edi, eax
        jne 8f
        lea esi, [ebx + 0xf200]
        mov ecx, 4
        rep lodsd
        cmp eax, 0xfeedf00d
        jne 8f
        test ecx, ecx
        jnz 8f
        lea esi, [ebx + 0xf300]
        lea edi, [ebx + 0xf400]
        mov ecx, 8
        repe cmpsb
        je 8f
        cmp ecx, 2
        jne 8f
        lea eax, [ebx + 0xf306]
        cmp esi, eax
        jne 8f
        add dword ptr [base], 0x10000
        dec dword ptr [count]
        jnz 2b
        mov esp, [saved_esp]
        {PAGING_OFF_AND_PASS}
    8:  cld
        mov esp, [saved_esp]
        {PAGING_OFF_AND_FAIL}
    callee:
        add dword ptr [called], 1
        ret
        .data
    base: .long 0
    count: .long 0
    called: .long 0
    saved_esp: .long 0
        .bss
        .align 4096
    pd1: .skip 4096
    page_table: .skip 4096
    table2: .skip 4096
    data_pages: .skip 16 * 4096
        .text",
        identity_map(&["pd1"])
    );
    asm_guest("soft_forms", &body)
}

#[test]
fn memory_stack_flag_frame_string_and_xlat_forms_that_keep_faulting_go_through_the_software_tlb() {
    // Each of the 16 instructions reaches a new linear page (two for PUSH
    // and POP m32, CALL m32, MOVSD and CMPSB) in each of 64 rounds, and the
    // software TLB fills no window mapping: each takes a host fault per
    // round (about 1,100 in all) until it becomes adaptive; then its
    // misses are exits, not host faults. (Misses near ESP map the window
    // too, so a POP after its PUSH finds the page mapped: 18 become
    // adaptive, about 80 host faults in all; 138 with FXSAVE and FXRSTOR
    // kept in the window, 131 without them and with JMP m32 kept there.)
    let r = run_with_stats(&soft_forms_guest(), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    let adaptive = stat(&r.stderr, "MMU: instructions made adaptive");
    assert!(
        adaptive >= 10,
        "{adaptive} adaptive instructions:\n{}",
        r.stderr
    );
    assert_stat_below(
        &r.stderr,
        "exits: host fault",
        110,
        "21 new pages per round for 64 rounds: about 1,200 without these forms adaptive",
    );
}

#[test]
fn rep_lods_scas_and_cmps_that_keep_faulting_go_through_the_software_tlb_element_by_element() {
    // The same guest with `rep` strings adaptive too: REPNE SCASB, REP
    // LODSD and REPE CMPSB (which share a page per round, so each starts
    // faulting once the one before it no longer maps the page) become
    // adaptive as well, and still stop where they should.
    let r = run_with_stats(
        &soft_forms_guest(),
        &["--set", "nestmon.mmu.adaptiveStrings=TRUE"],
    );
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    let adaptive = stat(&r.stderr, "MMU: instructions made adaptive");
    assert!(
        adaptive >= 13,
        "{adaptive} adaptive instructions:\n{}",
        r.stderr
    );
    assert_stat_below(
        &r.stderr,
        "exits: host fault",
        100,
        "about 120 with the rep strings not adaptive",
    );
}

#[test]
fn an_adaptive_popad_from_a_page_not_present_raises_the_guests_page_fault() {
    // POPAD at the first byte of a page that is not present, 64 times
    // (the #PF frame goes to the page below, present): the handler counts,
    // makes the page present for the retry, and the loop makes it absent
    // again. After a few host faults POPAD is adaptive and its misses
    // raise the #PF themselves; every retry loads the right registers.
    let body = format!(
        "{}
        lea eax, [page_dir]
        mov cr3, eax
        lea eax, [idt]
        mov [idtr + 2], eax
        lidt [idtr]
        lea eax, [pf_handler]
        mov [idt + 14 * 8], ax
        mov word ptr [idt + 14 * 8 + 2], cs
        mov word ptr [idt + 14 * 8 + 4], 0x8e00
        shr eax, 16
        mov [idt + 14 * 8 + 6], ax
        mov dword ptr [0x301000], 0xd1     # EDI
        mov dword ptr [0x301004], 0x51     # ESI
        mov dword ptr [0x301008], 0xb1     # EBP
        mov dword ptr [0x30100c], 0xdead   # (ESP, skipped)
        mov dword ptr [0x301010], 0xb2     # EBX
        mov dword ptr [0x301014], 0xd2     # EDX
        mov dword ptr [0x301018], 0xc1     # ECX
        mov dword ptr [0x30101c], 0xa1     # EAX
        mov dword ptr [count], 64
        mov [saved_esp], esp
        {PAGING_ON}
    2:  mov dword ptr [page_table + 0x201 * 4], 0x301002
        invlpg [0x201000]
        xor eax, eax
        xor ebx, ebx
        mov esp, 0x201000
        popad
        cmp esp, 0x201020
        jne 4f
        mov esp, [saved_esp]
        cmp eax, 0xa1
        jne 4f
        cmp ecx, 0xc1
        jne 4f
        cmp edx, 0xd2
        jne 4f
        cmp ebx, 0xb2
        jne 4f
        cmp ebp, 0xb1
        jne 4f
        cmp esi, 0x51
        jne 4f
        cmp edi, 0xd1
        jne 4f
        dec dword ptr [count]
        jnz 2b
        cmp dword ptr [faults], 64
        jne 4f
        cmp dword ptr [bad_frames], 0
        jne 4f
        {PAGING_OFF_AND_PASS}
    4:  mov esp, [saved_esp]
        {PAGING_OFF_AND_FAIL}
    pf_handler:
        add dword ptr [faults], 1
        # The fault came before POPAD changed anything: ESP is the page's
        # first byte (the frame is just below it), CR2 in the page (the
        # window form touches the frame's last word first).
        cmp esp, 0x201000 - 16
        jne 5f
        mov eax, cr2
        and eax, 0xfffff000
        cmp eax, 0x201000
        je 6f
    5:  add dword ptr [bad_frames], 1
    6:  mov dword ptr [page_table + 0x201 * 4], 0x301003
        invlpg [0x201000]
        add esp, 4
        iretd
        .data
    idtr: .word 256 * 8 - 1
        .long 0
    count: .long 0
    faults: .long 0
    bad_frames: .long 0
    saved_esp: .long 0
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
    idt: .skip 256 * 8
        .text",
        identity_map(&["page_dir"])
    );
    let r = run_with_stats(&asm_guest("adaptive_popad_page_fault", &body), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "MMU: software-TLB misses raising a guest #PF") >= 32,
        "POPAD's page faults did not come from its misses:\n{}",
        r.stderr
    );
}

#[test]
fn an_adaptive_cmps_whose_two_pages_share_a_software_tlb_slot_runs_through_the_window() {
    // CMPSB between linear 0x800000 and 0x10800000 (256 MiB apart: the
    // same slot of the read table), 64 times, both PTEs rewritten and
    // INVLPGed each round so that it keeps faulting and becomes adaptive.
    // Then each fill would evict the other page's entry; the second miss
    // runs it through the window instead, and it still compares.
    let body = format!(
        "{}
        lea eax, [pd1]
        mov cr3, eax
        lea eax, [table2]
        or eax, 3
        mov [pd1 + 2 * 4], eax
        lea eax, [table3]
        or eax, 3
        mov [pd1 + 0x42 * 4], eax
        mov byte ptr [page_a], 7
        mov byte ptr [page_b], 5
        mov dword ptr [count], 64
        {PAGING_ON}
    2:  lea eax, [page_a]
        or eax, 3
        mov [table2], eax
        lea eax, [page_b]
        or eax, 3
        mov [table3], eax
        invlpg [0x800000]
        invlpg [0x10800000]
        mov esi, 0x800000
        mov edi, 0x10800000
        cmpsb
        jbe 4f
        cmp esi, 0x800001
        jne 4f
        cmp edi, 0x10800001
        jne 4f
        dec dword ptr [count]
        jnz 2b
        {PAGING_OFF_AND_PASS}
    4:  {PAGING_OFF_AND_FAIL}
        .data
    count: .long 0
        .bss
        .align 4096
    pd1: .skip 4096
    page_table: .skip 4096
    table2: .skip 4096
    table3: .skip 4096
    page_a: .skip 4096
    page_b: .skip 4096
        .text",
        identity_map(&["pd1"])
    );
    let r = run_with_stats(&asm_guest("soft_cmps_same_slot", &body), &[]);
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "MMU: instructions made adaptive") >= 1,
        "CMPSB did not become adaptive:\n{}",
        r.stderr
    );
    assert!(
        stat(&r.stderr, "MMU: software-TLB misses run through the window") >= 32,
        "the evicting reads did not go to the window:\n{}",
        r.stderr
    );
}
