//! Every test guest in guests/ runs under `nestmon run --kernel NAME.elf`
//! and must print exactly guests/expected/NAME.out (lines starting with '#'
//! are informational and ignored) and exit with status 0, which is how
//! nestmon reports the guest's `rt_exit(0)` (QEMU exits with 1 for it,
//! (0 << 1) | 1, the isa-debug-exit convention).  Guests without an
//! expected file (backdoor, which only works under nestmon) must still
//! exit with status 0.
//!
//! Two oracle tests check the expected files themselves, independent of
//! nestmon: `native_oracle` (every native-capable guest run as a static
//! i386 Linux program) and `qemu_oracle` (every guest under
//! qemu-system-i386 TCG; skipped when QEMU is not installed).

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn guests_under_nestmon() {
    let dir = guest_dir();
    let pending = pending_guests();
    let mut failures = Vec::new();
    for (name, _, _) in guests() {
        if pending.contains(&name) {
            eprintln!("pending {name}: not yet required under nestmon (NESTMON_PENDING)");
            continue;
        }
        let elf = dir.join(format!("{name}.elf"));
        let r = run_nestmon(&elf);
        let got = filter(&r.stdout);
        if r.code != Some(0) {
            failures.push(format!(
                "{name}: want exit status 0, {}\n{}",
                describe(&r),
                got
            ));
            continue;
        }
        if let Some(want) = expected(&name) {
            if got != want {
                failures.push(format!(
                    "{name}: output differs from expected/{name}.out: {}",
                    first_diff(&want, &got)
                ));
            }
        }
        eprintln!("ok {name} ({:.2?})", r.elapsed);
    }
    assert!(
        failures.is_empty(),
        "{} guest(s) failed under nestmon:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A pending guest that passes under nestmon must leave the pending list,
/// so that it is required from then on.
#[test]
fn pending_guests_are_still_pending() {
    let dir = guest_dir();
    let passing: Vec<String> = pending_guests()
        .into_iter()
        .filter(|name| {
            let r = run_nestmon(&dir.join(format!("{name}.elf")));
            r.code == Some(0) && expected(name).is_some_and(|want| want == filter(&r.stdout))
        })
        .collect();
    assert!(
        passing.is_empty(),
        "these guests pass under nestmon now: remove them from NESTMON_PENDING in guests/Makefile: {passing:?}"
    );
}

#[test]
fn native_oracle() {
    let dir = guest_dir();
    let mut failures = Vec::new();
    for (name, native, _) in guests() {
        if !native {
            continue;
        }
        let r = run_native(&dir.join(format!("{name}.native")));
        let got = filter(&r.stdout);
        match expected(&name) {
            _ if r.code != Some(0) => failures.push(format!("{name}: native {}", describe(&r))),
            Some(want) if want != got => failures.push(format!(
                "{name}: native output: {}",
                first_diff(&want, &got)
            )),
            None => failures.push(format!("{name}: no expected/{name}.out")),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn qemu_oracle() {
    if qemu().is_none() {
        eprintln!("qemu-system-i386 not installed: skipping");
        return;
    }
    let dir = guest_dir();
    let mut failures = Vec::new();
    for (name, _, qemu_ok) in guests() {
        if !qemu_ok {
            continue;
        }
        let r = run_qemu(&dir.join(format!("{name}.elf")));
        let got = filter(&r.stdout);
        match expected(&name) {
            _ if r.code != Some(1) => failures.push(format!("{name}: qemu {}", describe(&r))),
            Some(want) if want != got => {
                failures.push(format!("{name}: qemu output: {}", first_diff(&want, &got)))
            }
            None => failures.push(format!("{name}: no expected/{name}.out")),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The shadow-MMU cost guest (benches/mmu/mmu.c, run by
/// benches/run-mmu.sh), with "quick" on its command line (tiny batches):
/// one line per event, in order, each with a number of cycles, and a
/// passing exit.  Its batches check what they did (every fault handled
/// once, every read through a rewritten PTE or after a CR3 write saw the
/// right frame, every patched immediate ran), so this is also a
/// correctness check; the numbers themselves are not checked.
const MMU_EVENTS: [&str; 9] = [
    "pf_fresh_page",
    "pte_rewrite_invlpg",
    "pte_present_toggle",
    "cr3_reload",
    "cr3_switch",
    "space_create",
    "store_hot_code_page",
    "self_patch_imm",
    "store_plain",
];

/// Builds the guest into a directory of the test's own (two makes must
/// not build into one directory at the same time).
fn mmu_elf(test: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("mmu-{test}"));
    make(&["bench-mmu"], &dir);
    dir.join("bench/mmu.elf")
}

fn check_mmu_run(who: &str, r: &Run, passed: Option<i32>) {
    assert_eq!(
        r.code,
        passed,
        "{who}: want exit status {passed:?}, {}\nstdout:\n{}",
        describe(r),
        r.stdout
    );
    let lines: Vec<&str> = r.stdout.lines().filter(|l| !l.starts_with('#')).collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(names, MMU_EVENTS, "{who}: event lines\n{}", r.stdout);
    for line in lines {
        let cycles: Option<f64> = match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, n] => n.parse().ok(),
            _ => None,
        };
        assert!(
            cycles.is_some_and(|c| c >= 0.0),
            "{who}: want \"NAME CYCLES\", got {line:?}"
        );
    }
}

#[test]
fn mmu_bench_guest_under_nestmon() {
    let r = run(
        std::process::Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--append", "quick", "--kernel"])
            .arg(mmu_elf("nestmon")),
        std::time::Duration::from_secs(120),
    );
    check_mmu_run("nestmon", &r, Some(0));
}

#[test]
fn mmu_bench_guest_under_qemu() {
    let Some(qemu) = qemu() else {
        eprintln!("qemu-system-i386 not installed: skipping");
        return;
    };
    let r = run(
        std::process::Command::new(qemu)
            .arg("-kernel")
            .arg(mmu_elf("qemu"))
            .args(["-append", "quick", "-serial", "stdio", "-display", "none"])
            .args(["-nodefaults", "-monitor", "none", "-no-reboot", "-m", "128"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]),
        std::time::Duration::from_secs(60),
    );
    check_mmu_run("qemu", &r, Some(1));
}

/// guests/pc_reset.c resets the machine once through the i8042 and keeps
/// a marker in CMOS across the reset; `guests_under_nestmon` checks that
/// nestmon boots it again (both boots' lines, exit status 0). Under
/// `--no-reboot` (and `nestmon.noReboot`) the run ends at the reset with
/// exit status 5 and only the first boot's line.
#[test]
fn pc_reset_guest_under_no_reboot_ends_at_the_reset_with_status_5() {
    let elf = guest_dir().join("pc_reset.elf");
    for flags in [&["--no-reboot"][..], &["--set", "nestmon.noReboot=yes"]] {
        let r = run(
            Command::new(env!("CARGO_BIN_EXE_nestmon"))
                .arg("run")
                .arg("--kernel")
                .arg(&elf)
                .args(flags),
            Duration::from_secs(120),
        );
        assert_eq!(r.code, Some(5), "{flags:?}: {}", describe(&r));
        assert_eq!(
            filter(&r.stdout),
            "first boot: boots seen in RAM 1; marking CMOS and resetting\n",
            "{flags:?}"
        );
        assert!(
            r.stderr.contains(
                "nestmon: the guest reset the machine (port 0x64); stopping (--no-reboot)"
            ),
            "{}",
            r.stderr
        );
    }
}

/// The same guest restarted by nestmon: stderr says so, and `--stats`
/// covers both machines (one reset).
#[test]
fn pc_reset_guest_restarts_and_stats_count_the_reset() {
    let elf = guest_dir().join("pc_reset.elf");
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .arg("run")
            .arg("--kernel")
            .arg(&elf)
            .arg("--stats"),
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert_eq!(Some(filter(&r.stdout)), expected("pc_reset"));
    assert!(
        r.stderr
            .contains("nestmon: the guest reset the machine (port 0x64); restarting it"),
        "{}",
        r.stderr
    );
    assert_eq!(stat(&r.stderr, "machine: resets"), 1, "{}", r.stderr);
}

/// QEMU without `-no-reboot` agrees: the same two boots (the oracle for
/// expected/pc_reset.out, which check-qemu cannot run because it passes
/// `-no-reboot`).
#[test]
fn pc_reset_guest_boots_twice_under_qemu_without_no_reboot() {
    let Some(qemu) = qemu() else {
        eprintln!("qemu-system-i386 not installed: skipping");
        return;
    };
    let r = run(
        Command::new(qemu)
            .arg("-kernel")
            .arg(guest_dir().join("pc_reset.elf"))
            .args(["-serial", "stdio", "-display", "none", "-nodefaults"])
            .args(["-monitor", "none", "-m", "128"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]),
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(1), "{}", describe(&r));
    assert_eq!(Some(filter(&r.stdout)), expected("pc_reset"));
}
