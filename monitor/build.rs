//! Builds the test guests in `guests/` (with the system gcc) into OUT_DIR,
//! so the binary can embed the default guest and the tests can find the
//! others through `NESTMON_GUEST_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests");
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest.join("../guests");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../benches/workloads").display()
    );
    let status = Command::new("make")
        .arg("-C")
        .arg(&guests)
        .arg(format!("OUT={}", out.display()))
        .status()
        .expect("cannot run make to build the guests in guests/ (is make installed?)");
    assert!(
        status.success(),
        "building the guests in guests/ failed (needs gcc with -m32 support)"
    );
    assert!(
        out.join("default.elf").exists(),
        "guests/default.c did not produce default.elf"
    );
    println!("cargo:rustc-env=NESTMON_GUEST_DIR={}", out.display());
}
