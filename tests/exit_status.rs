//! nestmon's exit statuses, one per way a run ends (the table of
//! `nestmon run --help` and README.md): the guest's report through
//! isa-debug-exit (0 success, 1 failure with its code on stderr, or QEMU's
//! `(v << 1) | 1` with `--exit-status qemu`), 2 for bad input, 3 for a
//! guest that cannot continue, 4 for a host failure, 5 for a guest that
//! reset the machine through the keyboard controller. Signals (128 + N) are
//! checked in tests/signals.rs, the closed console (141) in
//! tests/streams.rs.

use std::process::Stdio;
use std::time::Duration;

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{captured, dev_full, finish_within, nestmon, Finished};
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/tiny_guest.rs"]
mod tiny_guest;

const TIME_LIMIT: Duration = Duration::from_secs(60);

fn run(args: &[&str]) -> Finished {
    captured(TIME_LIMIT, args)
}

/// Runs a tiny guest that writes `value` to port 0xf4, with `extra` flags.
fn run_reporting(value: u32, extra: &[&str]) -> Finished {
    let dir = Scratch::new(&format!("exit-status-{value:x}-{}", extra.len()));
    let kernel = dir.file("report.elf", &tiny_guest::reports_dword(value));
    let mut args = vec!["run", "--kernel", kernel.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn default_guest_passing_its_self_check_exits_0() {
    let r = run(&["run"]);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert!(r.stdout.contains("passed"), "stdout:\n{}", r.stdout);
}

#[test]
fn guest_reporting_zero_exits_0_silently() {
    let r = run_reporting(0, &[]);
    assert_eq!(r.status, Some(0), "stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("failure"), "stderr:\n{}", r.stderr);
}

#[test]
fn guest_reporting_failure_exits_1_and_stderr_names_its_code() {
    for value in [1u32, 16, 0x7f, 0x1_0000] {
        let r = run_reporting(value, &[]);
        assert_eq!(r.status, Some(1), "value {value}: stderr:\n{}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("the guest reported failure: code {value} ")),
            "value {value}: stderr:\n{}",
            r.stderr
        );
    }
}

#[test]
fn qemu_convention_exits_with_the_value_doubled_plus_one() {
    for (value, status) in [(0u32, 1), (1, 3), (0x10, 0x21), (0x102, 5)] {
        let r = run_reporting(value, &["--exit-status", "qemu"]);
        assert_eq!(r.status, Some(status), "value {value}: {}", r.stderr);
    }
}

#[test]
fn unusable_input_exits_2_under_both_conventions() {
    for extra in [&[][..], &["--exit-status", "qemu"]] {
        let mut args = vec!["run", "--kernel", "/nonexistent/kernel.elf"];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert_eq!(r.status, Some(2), "stderr:\n{}", r.stderr);
    }
    assert_eq!(run(&["run", "--exit-status", "bochs"]).status, Some(2));
}

#[test]
fn guest_that_cannot_continue_exits_3_under_both_conventions() {
    let dir = Scratch::new("exit-status-ud2");
    let kernel = dir.file("ud2.elf", &tiny_guest::dies_of_ud2());
    let path = kernel.to_str().expect("utf-8 path");
    for extra in [&[][..], &["--exit-status", "qemu"]] {
        let mut args = vec!["run", "--kernel", path];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert_eq!(r.status, Some(3), "stderr:\n{}", r.stderr);
        assert!(r.stderr.contains("EIP="), "registers: {}", r.stderr);
    }
}

#[test]
fn guest_resetting_the_machine_under_no_reboot_exits_5_under_both_conventions() {
    let dir = Scratch::new("exit-status-reset");
    let kernel = dir.file(
        "reset.elf",
        &tiny_guest::elf_guest(&tiny_guest::assemble(&[
            "b0 fe", // mov al, 0xfe (pulse the reset line)
            "e6 64", // out 0x64, al (i8042 command)
            "0f 0b", // ud2: not reached
        ])),
    );
    let path = kernel.to_str().expect("utf-8 path");
    for extra in [
        &["--no-reboot"][..],
        &["--no-reboot", "--exit-status", "qemu"],
        &["--set", "nestmon.noReboot=TRUE"],
    ] {
        let mut args = vec!["run", "--kernel", path];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert_eq!(r.status, Some(5), "{extra:?}: stderr:\n{}", r.stderr);
        assert!(
            r.stderr
                .contains("the guest reset the machine (port 0x64); stopping (--no-reboot)"),
            "stderr:\n{}",
            r.stderr
        );
    }
}

#[test]
fn host_failure_exits_4() {
    let refused = finish_within(
        TIME_LIMIT,
        &mut nestmon(&["probe"]),
        dev_full(),
        Stdio::piped(),
        false,
    );
    assert_eq!(refused.status, Some(4), "stderr:\n{}", refused.stderr);
    let unwritable = run(&["run", "--stats-json", "/proc/version"]);
    assert_eq!(unwritable.status, Some(4), "stderr:\n{}", unwritable.stderr);
    assert!(
        unwritable
            .stderr
            .contains("host error: cannot write /proc/version"),
        "stderr:\n{}",
        unwritable.stderr
    );
}

#[test]
fn help_shows_the_exit_status_table() {
    for args in [&["--help"][..], &["run", "--help"]] {
        let r = run(args);
        assert_eq!(r.status, Some(0));
        for row in [
            "Exit statuses:",
            "  0    the guest reported success",
            "or powered the machine off (ACPI S5",
            "  1    the guest reported failure",
            "  2    bad input",
            "  3    the guest stopped",
            "  4    host failure",
            "  5    the guest reset the machine",
            "  128+N  stopped by signal N",
            "  141  the console",
            "--exit-status qemu",
        ] {
            assert!(
                r.stdout.contains(row),
                "{args:?} lacks {row:?}:\n{}",
                r.stdout
            );
        }
    }
}
