//! Differential tests: nestmon against the host CPU.
//!
//! (a) `native_guests_match`: every native-capable test guest (built from
//!     the same object both as a Multiboot kernel and as a static i386
//!     Linux program, see guests/Makefile) prints the same bytes under
//!     `nestmon run --kernel NAME.elf` as natively, and nestmon exits with
//!     status 0 (the guest's rt_exit(0)).
//! (b) `random_programs`: seeded random instruction sequences (ALU, shifts,
//!     mul/safe div, bit ops, setcc/cmov, lea, push/pop, string ops, xchg,
//!     cmpxchg, bswap, BCD, flags round trips...; see guestkit/gen.rs) with
//!     a register/flags/memory dump after every instruction group, with
//!     undefined flags masked.  Each program is built as a guest and as a
//!     native program; the outputs must be identical.  Seeds: a fixed list
//!     plus `NESTMON_DIFF_SEED` (decimal or 0x-hex) if set; the number of
//!     instruction groups per program is `NESTMON_DIFF_UNITS` (default 400).
//! (c) `random_programs_qemu_oracle`: the same programs under
//!     qemu-system-i386 (when installed), validating the generator itself.

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::path::PathBuf;

const FIXED_SEEDS: [u64; 6] = [1, 2, 3, 0xdead_beef, 20_240_601, 0x5eed_5eed_5eed];

fn seeds() -> Vec<u64> {
    let mut s = FIXED_SEEDS.to_vec();
    if let Ok(v) = std::env::var("NESTMON_DIFF_SEED") {
        let v = v.trim();
        let parsed = match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => v.parse(),
        };
        s.push(parsed.unwrap_or_else(|_| panic!("NESTMON_DIFF_SEED={v:?} is not a number")));
    }
    s
}

fn units() -> u32 {
    std::env::var("NESTMON_DIFF_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// Generates and builds the program for `seed`; returns (elf, native).
fn build(seed: u64, tag: &str) -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("diff-{tag}"));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    let name = format!("diff_{seed:x}");
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, gen::program(seed, units())).expect("write program");
    make(
        &[
            "one",
            &format!("SRC={}", src.display()),
            &format!("NAME={name}"),
        ],
        &dir,
    );
    (
        dir.join(format!("{name}.elf")),
        dir.join(format!("{name}.native")),
    )
}

fn native_output(bin: &std::path::Path, seed: u64) -> String {
    let r = run_native(bin);
    assert_eq!(
        r.code,
        Some(0),
        "seed {seed:#x}: native program failed: {}",
        describe(&r)
    );
    r.stdout
}

#[test]
fn native_guests_match() {
    let dir = guest_dir();
    let mut failures = Vec::new();
    for (name, native, _) in guests() {
        if !native {
            continue;
        }
        let n = run_native(&dir.join(format!("{name}.native")));
        let g = run_nestmon(&dir.join(format!("{name}.elf")));
        let (nf, gf) = (filter(&n.stdout), filter(&g.stdout));
        if n.code != Some(0) {
            failures.push(format!("{name}: native run failed: {}", describe(&n)));
        } else if g.code != Some(0) {
            failures.push(format!(
                "{name}: nestmon: want exit status 0, {}",
                describe(&g)
            ));
        } else if nf != gf {
            failures.push(format!(
                "{name}: nestmon output differs from native: {}",
                first_diff(&nf, &gf)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn random_programs() {
    let mut failures = Vec::new();
    for seed in seeds() {
        let (elf, native) = build(seed, "nestmon");
        let want = native_output(&native, seed);
        let g = run_nestmon(&elf);
        if g.code != Some(0) {
            failures.push(format!(
                "seed {seed:#x}: nestmon: want exit status 0, {}",
                describe(&g)
            ));
        } else if g.stdout != want {
            failures.push(format!(
                "seed {seed:#x}: nestmon differs from the host CPU ({}): {}",
                elf.with_extension("c").display(),
                first_diff(&want, &g.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn random_programs_qemu_oracle() {
    if qemu().is_none() {
        eprintln!("qemu-system-i386 not installed: skipping");
        return;
    }
    let mut failures = Vec::new();
    for seed in seeds() {
        let (elf, native) = build(seed, "qemu");
        let want = native_output(&native, seed);
        assert!(
            want.lines().count() as u32 > units(),
            "seed {seed:#x}: too little output"
        );
        let q = run_qemu(&elf);
        if q.code != Some(1) {
            failures.push(format!("seed {seed:#x}: qemu: {}", describe(&q)));
        } else if q.stdout != want {
            failures.push(format!(
                "seed {seed:#x}: qemu differs from the host CPU ({}): {}",
                elf.with_extension("c").display(),
                first_diff(&want, &q.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn generator_is_deterministic() {
    assert_eq!(gen::program(42, 50), gen::program(42, 50));
    assert_ne!(gen::program(42, 50), gen::program(43, 50));
}
