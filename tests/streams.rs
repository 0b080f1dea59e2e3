//! nestmon's output streams, through the binary: a standard output or
//! standard error that is full (`/dev/full`) never makes nestmon panic
//! (status 101). A command whose output is refused (`probe`, `run --check`)
//! says so on stderr and exits 1; diagnostics refused by stderr change
//! nothing, the status stays the guest's.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/tiny_guest.rs"]
mod tiny_guest;

/// How long any run here may take before the test calls it a hang.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// The status Rust gives a process that panicked.
const PANIC_STATUS: i32 = 101;

/// How a run ended: its exit status and the streams that were captured.
struct Finished {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn nestmon(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestmon"));
    command.args(args).stdin(Stdio::null());
    command
}

fn dev_full() -> Stdio {
    Stdio::from(File::create("/dev/full").expect("/dev/full exists"))
}

/// Reads a pipe to its end on another thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `command` with the given stdout and stderr (a stream given as
/// `Stdio::piped()` is captured); a run that outlives [`TIME_LIMIT`] is
/// killed and fails the test.
fn finish(command: &mut Command, stdout: Stdio, stderr: Stdio) -> Finished {
    let mut child = command
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn nestmon");
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("nestmon ran longer than {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status: status.code(),
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

fn assert_no_panic(run: &Finished) {
    assert_ne!(run.status, Some(PANIC_STATUS), "stderr:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("panicked"),
        "nestmon panicked:\n{}",
        run.stderr
    );
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
