//! The per-event cost benchmark guest (benches/events/events.c, run by
//! benches/run-events.sh) runs under nestmon: with "quick" on its command
//! line (tiny batches) it must print one line per event, in order, each
//! with a positive cycle count, and exit as a passing guest (status 0 under nestmon, 1 under QEMU's
//! isa-debug-exit convention).
//! Only behaviour is checked, never the numbers themselves.  The same
//! check under qemu-system-i386 TCG keeps the guest honest (skipped when
//! QEMU is not installed).

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The events, in the order the guest prints them.
const EVENTS: [&str; 13] = [
    "int80_ring3_iret",
    "int_ring0_iret",
    "sysenter_sysexit",
    "de_delivery",
    "gp_delivery",
    "out_unclaimed",
    "in_unclaimed",
    "cpuid",
    "cli_sti",
    "pushf_popf",
    "call_ret",
    "read_sreg",
    "reload_ds",
];

/// Builds the guest (`make -C guests bench-events`) into a directory of
/// the test's own: nextest runs each test in its own process, and two
/// makes must not build into one directory at the same time.
fn events_elf(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("events-{test}"));
    make(&["bench-events"], &dir);
    dir.join("bench/events.elf")
}

/// Checks a run's status and output: every event, in order, with a
/// number of cycles (0 is a real answer: nestmon carries out I/O to ports
/// nothing claims inside translated code, at no measurable cost; a FAIL
/// line is not a number); informational '#' lines are skipped.
fn check(who: &str, r: &Run, passed: Option<i32>) {
    assert_eq!(
        r.code,
        passed,
        "{who}: want exit status {passed:?} (the guest's rt_exit(0)), {}\nstdout:\n{}",
        describe(r),
        r.stdout
    );
    let lines: Vec<&str> = r.stdout.lines().filter(|l| !l.starts_with('#')).collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(names, EVENTS, "{who}: event lines\n{}", r.stdout);
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let cycles: Option<f64> = match fields[..] {
            [_, n] => n.parse().ok(),
            _ => None,
        };
        assert!(
            cycles.is_some_and(|c| c >= 0.0),
            "{who}: want \"NAME CYCLES\" with CYCLES >= 0, got {line:?}"
        );
    }
}

#[test]
fn events_guest_under_nestmon() {
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--append", "quick", "--kernel"])
            .arg(events_elf("nestmon")),
        Duration::from_secs(60),
    );
    check("nestmon", &r, Some(0));
}

#[test]
fn events_guest_under_qemu() {
    let Some(qemu) = qemu() else {
        eprintln!("qemu-system-i386 not installed: skipping");
        return;
    };
    let r = run(
        Command::new(qemu)
            .arg("-kernel")
            .arg(events_elf("qemu"))
            .args(["-append", "quick", "-serial", "stdio", "-display", "none"])
            .args(["-nodefaults", "-monitor", "none", "-no-reboot", "-m", "128"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]),
        Duration::from_secs(60),
    );
    check("qemu", &r, Some(1));
}

#[test]
fn privilege_changes_under_paging_keep_translations_and_mappings() {
    // Hundreds of INT 0x80 round trips between ring 3 and ring 0 with
    // paging on: each ring runs in its own view of the address space, so
    // a privilege change switches views instead of dropping the code
    // cache and every shadow mapping (which cost ~2 flushes per event).
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args([
                "run",
                "--stats",
                "--append",
                "quick paging only=int80_ring3_iret",
            ])
            .arg("--kernel")
            .arg(events_elf("paging")),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}\n{}", describe(&r), r.stdout);
    assert!(r.stdout.contains("# paging on"), "{}", r.stdout);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("# int80_ring3_iret:"))
        .unwrap_or_else(|| panic!("no batch line:\n{}", r.stdout));
    let events: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| n * 8)
        .unwrap_or_else(|| panic!("unparsable batch line {line:?}"));
    assert!(events >= 100, "too few events to tell: {line}");
    let flushes = stat(&r.stderr, "flushes");
    let hidden = stat(&r.stderr, "hidden faults (shadow fills)");
    assert!(
        flushes <= 8,
        "{flushes} code-cache flushes for {events} round trips"
    );
    assert!(
        hidden <= 64,
        "{hidden} shadow fills for {events} round trips"
    );
}

/// One run of the events guest with `--stats` for event `name`: (events
/// timed, exits to carry out an instruction, exceptions the monitor
/// delivered).
fn inline_run(append: &str, name: &str) -> (u64, u64, u64) {
    let r = run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(["run", "--stats", "--append"])
            .arg(format!("{append} only={name}"))
            .arg("--kernel")
            .arg(events_elf("inline")),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{name}: {}\n{}", describe(&r), r.stdout);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("# {name}:")))
        .unwrap_or_else(|| panic!("{name}: no batch line:\n{}", r.stdout));
    let per_batch: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| n * 8)
        .unwrap_or_else(|| panic!("unparsable batch line {line:?}"));
    (
        per_batch,
        stat(&r.stderr, "exits: emulated instruction"),
        stat(&r.stderr, "guest exceptions"),
    )
}

#[test]
fn int_iret_and_exception_deliveries_run_in_translated_code() {
    // INT 0x80 from ring 3 and IRET back, INT 0x80 in ring 0, #DE from a
    // zero divisor and #GP from HLT in ring 3, each delivered through its
    // gate and returned from with IRET: after the first of each (which
    // the monitor works out, and which maps the pages), translated code
    // carries them out without an exit, with paging on and off. A "quick"
    // run and a full one do the same setup and print the same lines; the
    // full one times many more events (its batches are about 1000 times
    // longer, however loaded the host), and must not take more exits for
    // them.
    for paging in ["", "paging"] {
        for name in [
            "int80_ring3_iret",
            "int_ring0_iret",
            "de_delivery",
            "gp_delivery",
        ] {
            let (few, exits_few, _) = inline_run(&format!("quick {paging}"), name);
            let (many, exits_many, in_monitor) = inline_run(paging, name);
            assert!(many >= 4 * few, "{name}: {many} events against {few}");
            let extra_events = (many - few) * 5;
            let extra_exits = exits_many.saturating_sub(exits_few);
            assert!(
                extra_exits < extra_events / 4,
                "{name} ({paging}): {extra_exits} more monitor exits for {extra_events} more events"
            );
            assert!(
                in_monitor <= 4,
                "{name}: {in_monitor} exceptions went to the monitor"
            );
        }
    }
}
