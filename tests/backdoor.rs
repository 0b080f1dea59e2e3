//! End to end: `nestmon run` of guests/backdoor.c, a guest that does what a
//! VMware Tools client does first (GETVERSION, RPCI, NESTING_CONTROL, the
//! high-bandwidth port), must print every step as ok and exit through
//! `rt_exit(0)`, which nestmon reports as status (0 << 1) | 1 = 1.

use std::path::PathBuf;
use std::process::{Command, Output};

fn guest_elf() -> PathBuf {
    PathBuf::from(env!("NESTMON_GUEST_DIR")).join("backdoor.elf")
}

fn run_backdoor_guest() -> Output {
    let elf = guest_elf();
    assert!(elf.is_file(), "guest not built: {}", elf.display());
    Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .output()
        .expect("nestmon starts")
}

#[test]
fn backdoor_guest_passes_every_step_and_exits_zero() {
    let output = run_backdoor_guest();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "getversion: ok version=6",
        "rpci-open: ok",
        "info-set: ok reply=\"1 \"",
        "info-get: ok reply=\"1 hello\"",
        "tools.set.version: ok reply=\"1 \"",
        "unknown: ok reply=\"0 Unknown command\"",
        "rpci-close: ok",
        "nesting: ok version=",
        "hb: ok reply=\"1 hello\"",
        "backdoor: all ok",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "missing {line:?}\n{context}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{context}");
    assert_eq!(output.status.code(), Some(1), "{context}");
}

#[test]
fn backdoor_guest_reports_cpuid_leaf_before_touching_the_backdoor() {
    let output = run_backdoor_guest();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout.lines().find(|l| l.contains(": ")).unwrap_or("");
    assert!(first.starts_with("cpuid: ok"), "stdout:\n{stdout}");
}
