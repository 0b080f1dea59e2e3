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
    // Each INVLPG must cost one refill of that page, not a flush of every
    // translation and mapping.
    let body = "
        lea edi, [page_table]
        mov eax, 0x3
        mov ecx, 1024
    1:  mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop 1b
        lea eax, [page_table]
        or eax, 0x3
        mov [page_dir], eax
        lea eax, [page_dir]
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        mov ebx, 1000
    2:  mov eax, 0x300003
        mov [page_table + 0x200 * 4], eax
        invlpg [0x200000]
        mov eax, [0x200000]
        dec ebx
        jnz 2b
        mov eax, cr0
        and eax, 0x7fffffff
        mov cr0, eax
        xor eax, eax
        ret
        .bss
        .align 4096
    page_dir: .skip 4096
    page_table: .skip 4096
        .text";
    let r = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--stats", "--kernel"])
            .arg(asm_guest("invlpg_loop", body)),
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
