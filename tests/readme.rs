//! README.md's "Writing a guest" stays true: its C guest, built with the
//! gcc command it gives, prints its line under nestmon and exits 0, and
//! prints the same under qemu-system-i386 (exit 1, QEMU's convention).

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The first ```c block after the "## Writing a guest" heading.
fn readme_guest_source() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("read README.md");
    let section = readme
        .split("## Writing a guest")
        .nth(1)
        .expect("README.md has a \"Writing a guest\" section");
    let code = section
        .split("```c\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has a ```c block");
    code.to_string()
}

/// Builds the README's guest with the README's gcc flags.
fn build_readme_guest() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readme-guest");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let src = dir.join("hello.c");
    std::fs::write(&src, readme_guest_source()).expect("write hello.c");
    let elf = dir.join("hello.elf");
    let out = Command::new("gcc")
        .args([
            "-m32",
            "-ffreestanding",
            "-fno-pic",
            "-nostdlib",
            "-static",
            "-Wl,-Ttext=0x100000",
            "-Wl,--build-id=none",
            "-o",
        ])
        .arg(&elf)
        .arg(&src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "the README's gcc command fails:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    elf
}

#[test]
fn readme_guest_prints_its_line_and_exits_0() {
    let r = run_nestmon(&build_readme_guest());
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert_eq!(r.stdout, "hello from my guest\n");
}

#[test]
fn readme_guest_runs_the_same_under_qemu() {
    let Some(_) = qemu() else {
        eprintln!("skipped: qemu-system-i386 is not installed");
        return;
    };
    let r = run_qemu(&build_readme_guest());
    assert_eq!(r.code, Some(1), "{}", describe(&r));
    assert_eq!(r.stdout, "hello from my guest\n");
}
