//! Running the `nestmon` binary with chosen standard streams and a time
//! limit, so that a run that hangs fails its test instead of blocking it.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The status Rust gives a process that panicked.
pub const PANIC_STATUS: i32 = 101;

/// How a run ended: its exit status, the streams that were captured, and
/// how long it took.
pub struct Finished {
    /// Exit status, `None` when a signal ended the process.
    pub status: Option<i32>,
    /// Standard output, if it was `Stdio::piped()`.
    pub stdout: String,
    /// Standard error, if it was `Stdio::piped()`.
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

/// `nestmon ARGS` with standard input closed.
pub fn nestmon(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestmon"));
    command.args(args).stdin(Stdio::null());
    command
}

/// `/dev/full` as a standard stream: every write fails with ENOSPC.
pub fn dev_full() -> Stdio {
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
/// `Stdio::piped()` is captured; with `close_stdout` the read end of a
/// piped stdout is closed at once instead); a run that outlives `limit` is
/// killed and fails the test.
pub fn finish_within(
    limit: Duration,
    command: &mut Command,
    stdout: Stdio,
    stderr: Stdio,
    close_stdout: bool,
) -> Finished {
    let started = Instant::now();
    let mut child = command
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn nestmon");
    let stdout_pipe = child.stdout.take().filter(|_| !close_stdout);
    let out = drain(stdout_pipe);
    let err = drain(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!(
                "nestmon ran longer than {limit:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status: status.code(),
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
        elapsed: started.elapsed(),
    }
}

/// `nestmon ARGS` with standard output and error captured, killed (and
/// the test failed) after `limit`.
pub fn captured(limit: Duration, args: &[&str]) -> Finished {
    finish_within(
        limit,
        &mut nestmon(args),
        Stdio::piped(),
        Stdio::piped(),
        false,
    )
}

/// Asserts that the run did not panic (status 101, "panicked" on stderr).
pub fn assert_no_panic(run: &Finished) {
    assert_ne!(run.status, Some(PANIC_STATUS), "stderr:\n{}", run.stderr);
    assert!(
        !run.stderr.contains("panicked"),
        "nestmon panicked:\n{}",
        run.stderr
    );
}
