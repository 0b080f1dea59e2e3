//! Self-modifying and cross-modifying code: a write to guest code that has
//! been translated invalidates the translation, including the unit that is
//! running, whether the guest writes it (SMC) or the monitor does on the
//! guest's behalf (port string input, the cross-modifying case).

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `elf` under nestmon with `--stats`.
fn run_with_stats(elf: &Path) -> Run {
    run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--stats", "--kernel"])
            .arg(elf),
        Duration::from_secs(60),
    )
}

#[test]
fn smc_guest_invalidates_translations() {
    let r = run_with_stats(&guest_dir().join("smc.elf"));
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(stat(&r.stderr, "self-modifying writes") > 0);
    assert!(stat(&r.stderr, "invalidations") > 0);
}

#[test]
fn port_input_into_translated_code_invalidates_it() {
    // f: mov eax, imm32 ; ret. Run it, overwrite the low immediate byte with
    // `rep insb` from an unclaimed port (reads 0xff), run it again.
    let body = r#"
    call f
    cmp eax, 0x00000001
    jne bad
    lea edi, [f + 1]
    mov dx, 0x0299
    mov ecx, 1
    cld
    rep insb
    call f
    cmp eax, 0x000000ff
    jne bad
    xor eax, eax
    ret
bad:
    mov eax, 1
    ret
.data
.align 4096
f:
    mov eax, 0x00000001
    ret
"#;
    let r = run_with_stats(&asm_guest("xmc", body));
    assert_eq!(r.code, Some(0), "guest saw stale code: {}", describe(&r));
    assert!(stat(&r.stderr, "invalidations") > 0);
}

#[test]
fn rep_stosb_across_sixteen_translated_code_pages_completes() {
    // Sixteen pages, each holding a translated `mov eax, 1; ret`, are
    // overwritten with RET by one `rep stosb`: one code write per page,
    // each resumed, until the whole range is written.
    let body = r#"
    lea esi, [pages]
    mov ebx, 16
1:  call esi
    add esi, 4096
    dec ebx
    jnz 1b
    lea edi, [pages]
    mov ecx, 16 * 4096
    mov al, 0xc3
    cld
    rep stosb
    mov eax, 7
    call pages + 5 * 4096
    cmp eax, 7
    jne bad
    cmp ecx, 0
    jne bad
    xor eax, eax
    ret
bad:
    mov eax, 1
    ret
.data
.align 4096
pages:
.rept 16
    mov eax, 1
    ret
    .align 4096
.endr
.text
"#;
    let r = run_with_stats(&asm_guest("rep_stosb_code_pages", body));
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "self-modifying writes") >= 16,
        "{}",
        r.stderr
    );
}

#[test]
fn rep_stosb_across_sixteen_translated_code_pages_with_paging_on_completes() {
    // The same with 32-bit paging on: the first 4 MiB identity-mapped with
    // clean PTEs (so the string store also sets D on every page it writes),
    // the sixteen code pages translated through that mapping, then
    // overwritten with RET by one `rep stosb`.
    let body = r#"
    lea edi, [page_table]
    mov eax, 0x3
    mov ecx, 1024
2:  mov [edi], eax
    add eax, 0x1000
    add edi, 4
    loop 2b
    lea eax, [page_table]
    or eax, 0x3
    mov [page_dir], eax
    lea eax, [page_dir]
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    lea esi, [pages]
    mov ebx, 16
1:  call esi
    add esi, 4096
    dec ebx
    jnz 1b
    lea edi, [pages]
    mov ecx, 16 * 4096
    mov al, 0xc3
    cld
    rep stosb
    mov eax, 7
    call pages + 5 * 4096
    mov edx, eax
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    cmp edx, 7
    jne bad
    cmp ecx, 0
    jne bad
    lea esi, [pages]
    shr esi, 12
    mov eax, [page_table + esi * 4 + 15 * 4]
    and eax, 0x60
    cmp eax, 0x60
    jne bad
    xor eax, eax
    ret
bad:
    mov eax, 1
    ret
.data
.align 4096
pages:
.rept 16
    mov eax, 1
    ret
    .align 4096
.endr
.bss
.align 4096
page_dir: .skip 4096
page_table: .skip 4096
.text
"#;
    let r = run_with_stats(&asm_guest("rep_stosb_code_pages_paging", body));
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stderr);
    assert!(
        stat(&r.stderr, "self-modifying writes") >= 16,
        "{}",
        r.stderr
    );
}
