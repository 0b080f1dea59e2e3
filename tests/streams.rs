//! nestmon's output streams, through the binary: a standard output or
//! standard error that is full (`/dev/full`) never makes nestmon panic
//! (status 101). A command whose output is refused (`probe`, `run --check`)
//! says so on stderr and exits 4 (host failure); diagnostics refused by stderr change
//! nothing, the status stays the guest's.
//!
//! The guest console (COM1) that can no longer be written (a pipe whose
//! reader went away, a full device, a serial file or socket that fails)
//! stops the guest at once with status 141 (128 + SIGPIPE) and one line on
//! stderr, instead of letting it run on, printing into nothing.

use std::os::unix::net::UnixListener;
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
fn probe_into_a_full_stdout_says_so_and_exits_4() {
    let run = finish(&mut nestmon(&["probe"]), dev_full(), Stdio::piped());
    assert_no_panic(&run);
    assert_eq!(run.status, Some(4), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("nestmon: cannot write to standard output: "),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn probe_json_into_a_full_stdout_exits_4() {
    let run = finish(
        &mut nestmon(&["probe", "--json"]),
        dev_full(),
        Stdio::piped(),
    );
    assert_no_panic(&run);
    assert_eq!(run.status, Some(4), "stderr:\n{}", run.stderr);
}

#[test]
fn check_into_a_full_stdout_says_so_and_exits_4() {
    let run = finish(
        &mut nestmon(&["run", "--check"]),
        dev_full(),
        Stdio::piped(),
    );
    assert_no_panic(&run);
    assert_eq!(run.status, Some(4), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("nestmon: cannot write to standard output: "),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn probe_with_stdout_and_stderr_full_still_exits_4() {
    let run = finish(&mut nestmon(&["probe"]), dev_full(), dev_full());
    assert_eq!(run.status, Some(4));
}

#[test]
fn stats_into_a_full_stderr_keep_the_guest_status() {
    let dir = Scratch::new("streams-stats");
    let kernel = dir.file("exit.elf", &tiny_guest::reports_failure_code_16());
    let run = finish(
        &mut nestmon(&["run", "--stats", "--kernel", kernel_arg(&kernel)]),
        Stdio::piped(),
        dev_full(),
    );
    assert_eq!(run.status, Some(1), "stdout:\n{}", run.stdout);
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

/// 128 + SIGPIPE: how a run whose console was closed ends.
const CONSOLE_CLOSED_STATUS: i32 = 141;

/// Runs `command` with its stdout a pipe whose read end is closed at once.
fn finish_with_closed_stdout(command: &mut Command) -> Finished {
    finish_within(TIME_LIMIT, command, Stdio::piped(), Stdio::piped(), true)
}

fn assert_console_closed(run: &Finished, message: &str) {
    assert_no_panic(run);
    assert_eq!(
        run.status,
        Some(CONSOLE_CLOSED_STATUS),
        "stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(message),
        "stderr lacks {message:?}:\n{}",
        run.stderr
    );
}

#[test]
fn endless_printer_stops_with_141_when_the_pipe_reader_goes_away() {
    let dir = Scratch::new("streams-closed-pipe");
    let kernel = dir.file("printer.elf", &tiny_guest::endless_printer());
    let run = finish_with_closed_stdout(&mut nestmon(&["run", "--kernel", kernel_arg(&kernel)]));
    assert_console_closed(
        &run,
        "nestmon: the console (standard output) was closed; stopping the guest\n",
    );
    assert_eq!(
        run.stderr.matches("stopping the guest").count(),
        1,
        "one line:\n{}",
        run.stderr
    );
}

#[test]
fn default_guest_stops_with_141_when_the_pipe_reader_goes_away() {
    let run = finish_with_closed_stdout(&mut nestmon(&["run"]));
    assert_console_closed(
        &run,
        "nestmon: the console (standard output) was closed; stopping the guest",
    );
}

#[test]
fn endless_printer_stops_with_141_on_a_full_stdout() {
    let dir = Scratch::new("streams-full-console");
    let kernel = dir.file("printer.elf", &tiny_guest::endless_printer());
    let run = finish(
        &mut nestmon(&["run", "--kernel", kernel_arg(&kernel)]),
        dev_full(),
        Stdio::piped(),
    );
    assert_console_closed(
        &run,
        "nestmon: cannot write to the console (standard output): No space left on device",
    );
}

#[test]
fn closed_console_with_a_full_stderr_still_ends_with_141() {
    let dir = Scratch::new("streams-full-console-and-stderr");
    let kernel = dir.file("printer.elf", &tiny_guest::endless_printer());
    let run = finish(
        &mut nestmon(&["run", "--stats", "--kernel", kernel_arg(&kernel)]),
        dev_full(),
        dev_full(),
    );
    assert_eq!(run.status, Some(CONSOLE_CLOSED_STATUS));
}

#[test]
fn serial_file_on_a_full_device_stops_the_guest_naming_the_file() {
    let dir = Scratch::new("streams-serial-file-full");
    let kernel = dir.file("printer.elf", &tiny_guest::endless_printer());
    let run = finish(
        &mut nestmon(&[
            "run",
            "--kernel",
            kernel_arg(&kernel),
            "--set",
            "serial0.fileType=file",
            "--set",
            "serial0.fileName=/dev/full",
        ]),
        Stdio::piped(),
        Stdio::piped(),
    );
    assert_console_closed(
        &run,
        "nestmon: cannot write to the serial output file /dev/full: No space left on device",
    );
    assert!(run.stdout.is_empty(), "stdout:\n{}", run.stdout);
}

#[test]
fn serial_socket_whose_peer_closes_stops_the_guest_naming_the_socket() {
    let dir = Scratch::new("streams-serial-socket-closed");
    let kernel = dir.file("printer.elf", &tiny_guest::endless_printer());
    let socket = dir.0.join("com1.sock");
    let listener = UnixListener::bind(&socket).expect("listen");
    let peer = std::thread::spawn(move || drop(listener.accept().expect("accept")));
    let run = finish(
        &mut nestmon(&[
            "run",
            "--kernel",
            kernel_arg(&kernel),
            "--set",
            "serial0.fileType=pipe",
            "--set",
            &format!("serial0.fileName={}", kernel_arg(&socket)),
        ]),
        Stdio::piped(),
        Stdio::piped(),
    );
    peer.join().expect("peer");
    assert_console_closed(
        &run,
        &format!(
            "nestmon: cannot write to the serial Unix socket {}: ",
            socket.display()
        ),
    );
}
