//! nestmon's output streams, through the binary: a standard output or
//! standard error that is full (`/dev/full`) never makes nestmon panic
//! (status 101). A command whose output is refused (`probe`, `run --check`)
//! says so on stderr and exits 1; diagnostics refused by stderr change
//! nothing, the status stays the guest's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{assert_no_panic, dev_full, finish_within, nestmon, Finished};
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/tiny_guest.rs"]
mod tiny_guest;

/// How long any run here may take before the test calls it a hang.
const TIME_LIMIT: Duration = Duration::from_secs(30);

fn finish(command: &mut Command, stdout: Stdio, stderr: Stdio) -> Finished {
    finish_within(TIME_LIMIT, command, stdout, stderr, false)
}

fn kernel_arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn probe_into_a_full_stdout_says_so_and_exits_1() {
    let run = finish(&mut nestmon(&["probe"]), dev_full(), Stdio::piped());
    assert_no_panic(&run);
    assert_eq!(run.status, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("nestmon: cannot write to standard output: "),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn probe_json_into_a_full_stdout_exits_1() {
    let run = finish(
        &mut nestmon(&["probe", "--json"]),
        dev_full(),
        Stdio::piped(),
    );
    assert_no_panic(&run);
    assert_eq!(run.status, Some(1), "stderr:\n{}", run.stderr);
}

#[test]
fn check_into_a_full_stdout_says_so_and_exits_1() {
    let run = finish(
        &mut nestmon(&["run", "--check"]),
        dev_full(),
        Stdio::piped(),
    );
    assert_no_panic(&run);
    assert_eq!(run.status, Some(1), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("nestmon: cannot write to standard output: "),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn probe_with_stdout_and_stderr_full_still_exits_1() {
    let run = finish(&mut nestmon(&["probe"]), dev_full(), dev_full());
    assert_eq!(run.status, Some(1));
}

#[test]
fn stats_into_a_full_stderr_keep_the_guest_status() {
    let dir = Scratch::new("streams-stats");
    let kernel = dir.file("exit.elf", &tiny_guest::exits_with_0x21());
    let run = finish(
        &mut nestmon(&["run", "--stats", "--kernel", kernel_arg(&kernel)]),
        Stdio::piped(),
        dev_full(),
    );
    assert_eq!(run.status, Some(0x21), "stdout:\n{}", run.stdout);
}

#[test]
fn stop_report_into_a_full_stderr_keeps_status_3() {
    let dir = Scratch::new("streams-stop-report");
    let kernel = dir.file("ud2.elf", &tiny_guest::dies_of_ud2());
    let run = finish(
        &mut nestmon(&["run", "--kernel", kernel_arg(&kernel)]),
        Stdio::piped(),
        dev_full(),
    );
    assert_eq!(run.status, Some(3), "stdout:\n{}", run.stdout);
}

#[test]
fn stop_report_names_the_exception_when_stderr_works() {
    let dir = Scratch::new("streams-stop-report-visible");
    let kernel = dir.file("ud2.elf", &tiny_guest::dies_of_ud2());
    let run = finish(
        &mut nestmon(&["run", "--kernel", kernel_arg(&kernel)]),
        Stdio::piped(),
        Stdio::piped(),
    );
    assert_eq!(run.status, Some(3), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("nestmon: guest stopped: "),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn refused_configuration_into_a_full_stderr_keeps_status_2() {
    let run = finish(
        &mut nestmon(&["run", "--memsize", "5"]),
        Stdio::piped(),
        dev_full(),
    );
    assert_eq!(run.status, Some(2));
}
