//! Host signals: SIGINT, SIGTERM and SIGHUP stop the guest at its next
//! instruction boundary, even in a tight loop that never leaves translated
//! code; nestmon then prints the stop report (and the statistics when
//! asked) and exits with 128 + the signal number.

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;
use std::process::Command;
use std::time::Duration;

/// A guest that says it runs on COM1, then spins in a one-instruction
/// loop chained to itself.
fn spinning_guest() -> std::path::PathBuf {
    asm_guest(
        "spin",
        "mov dx, 0x3f8\nmov al, 0x2a\nout dx, al\nmov ebx, 0x5151\n1: jmp 1b",
    )
}

/// A guest that says it runs, then spins through an indirect jump only
/// (no direct backward branch: the exit request must come through the
/// indirect-branch table).
fn indirect_spinning_guest() -> std::path::PathBuf {
    asm_guest(
        "spin_indirect",
        "mov dx, 0x3f8\nmov al, 0x2a\nout dx, al\nmov ebx, 0x5151\nlea ecx, [1f]\n1: jmp ecx",
    )
}

/// A guest that says it runs, then spins through a jump table only: a
/// `jmp [ecx*4 + table]` whose entry 0 is itself (the exit request must
/// come through the poll on the table's host entries).
fn jump_table_spinning_guest() -> std::path::PathBuf {
    asm_guest(
        "spin_jump_table",
        "mov dx, 0x3f8\nmov al, 0x2a\nout dx, al\nmov ebx, 0x5151\nxor ecx, ecx\n\
         1: jmp dword ptr [ecx*4 + 2f]\n.p2align 2\n2: .long 1b",
    )
}

/// A guest spinning through jumps a translation unit follows: forward,
/// then back before the unit's start, then back again past it.
fn followed_jumps_spinning_guest() -> std::path::PathBuf {
    asm_guest(
        "spin_followed_jumps",
        "mov dx, 0x3f8\nmov al, 0x2a\nout dx, al\nmov ebx, 0x5151\njmp 2f\n\
         1: inc ecx\njmp 3f\n2: inc edx\njmp 1b\n3: jmp 2b",
    )
}

fn run_and_signal(signal: i32, extra: &[&str]) -> Run {
    run_guest_and_signal(&spinning_guest(), signal, extra)
}

fn run_guest_and_signal(guest: &std::path::Path, signal: i32, extra: &[&str]) -> Run {
    run_signalled(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .arg("run")
            .arg("--kernel")
            .arg(guest)
            .args(extra),
        Duration::from_secs(30),
        Some((Duration::from_millis(200), signal)),
    )
}

#[test]
fn sigint_stops_a_spinning_guest_with_a_report_and_status_130() {
    let r = run_and_signal(libc::SIGINT, &[]);
    assert!(!r.timed_out, "{}", describe(&r));
    assert_eq!(r.code, Some(130), "{}", describe(&r));
    assert!(r.stderr.contains("stopped by SIGINT"), "{}", r.stderr);
    assert!(r.stderr.contains("EBX=00005151"), "{}", r.stderr);
    assert!(r.stderr.contains("EIP="), "{}", r.stderr);
}

#[test]
fn sigint_stops_a_guest_spinning_through_an_indirect_jump() {
    let r = run_guest_and_signal(&indirect_spinning_guest(), libc::SIGINT, &[]);
    assert!(!r.timed_out, "{}", describe(&r));
    assert_eq!(r.code, Some(130), "{}", describe(&r));
    assert!(r.stderr.contains("EBX=00005151"), "{}", r.stderr);
}

#[test]
fn sigint_stops_a_guest_spinning_through_a_jump_table() {
    let r = run_guest_and_signal(&jump_table_spinning_guest(), libc::SIGINT, &["--stats"]);
    assert!(!r.timed_out, "{}", describe(&r));
    assert_eq!(r.code, Some(130), "{}", describe(&r));
    assert!(r.stderr.contains("EBX=00005151"), "{}", r.stderr);
    // It spun through its host entry, not through the indirect-branch table.
    assert!(r.stderr.contains("exits: chain-table miss"), "{}", r.stderr);
}

#[test]
fn sigint_stops_a_guest_spinning_through_followed_jumps() {
    for extra in [&[][..], &["--set", "nestmon.bt.followedBranches=32"]] {
        let r = run_guest_and_signal(&followed_jumps_spinning_guest(), libc::SIGINT, extra);
        assert!(!r.timed_out, "{extra:?}: {}", describe(&r));
        assert_eq!(r.code, Some(130), "{extra:?}: {}", describe(&r));
        assert!(r.stderr.contains("EBX=00005151"), "{}", r.stderr);
    }
}

#[test]
fn sigterm_and_sighup_stop_with_128_plus_the_signal() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let r = run_and_signal(signal, &[]);
        assert_eq!(r.code, Some(128 + signal), "{name}: {}", describe(&r));
        assert!(r.stderr.contains(name), "{}", r.stderr);
    }
}

#[test]
fn stats_are_printed_when_a_signal_stops_the_run() {
    let r = run_and_signal(libc::SIGINT, &["--stats"]);
    assert_eq!(r.code, Some(130), "{}", describe(&r));
    assert!(r.stderr.contains("nestmon statistics"), "{}", r.stderr);
    assert!(r.stderr.contains("exits: stop requests"), "{}", r.stderr);
}
