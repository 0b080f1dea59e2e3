//! Running one program of a benchmark under a time cap: a child process
//! with standard input closed, its standard output kept (to compare with
//! the native run's) and the tail of its standard error (to say why a run
//! failed), killed when the cap passes.
//!
//! Invariants:
//! - A run never outlives its cap by more than one polling interval plus
//!   the time the kernel takes to reap a killed child.
//! - The wall time measured is from just before the spawn to the moment
//!   the exit was seen.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a running child is checked.
const POLL: Duration = Duration::from_millis(2);
/// How much of standard error a failed run reports.
const STDERR_TAIL_BYTES: usize = 2048;

/// A program to run and what its successful end looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The exit status of a successful run.
    pub success_status: i32,
}

/// How one run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEnd {
    /// It exited with the success status.
    Completed {
        /// Wall time in seconds.
        seconds: f64,
        /// Its standard output.
        stdout: String,
    },
    /// The cap passed first; it was killed.
    Capped,
    /// It could not be started, or ended otherwise.
    Failed(String),
}

/// Runs `invocation`, killing it after `cap`.
pub fn run_capped(invocation: &Invocation, cap: Duration) -> RunEnd {
    let start = Instant::now();
    let child = Command::new(&invocation.program)
        .args(&invocation.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            return RunEnd::Failed(format!(
                "cannot start {}: {e}",
                invocation.program.display()
            ))
        }
    };
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_capped(&mut child, start, cap);
    let seconds = start.elapsed().as_secs_f64();
    let stdout = joined(stdout);
    let stderr = joined(stderr);
    match status {
        None => RunEnd::Capped,
        Some(Err(e)) => RunEnd::Failed(format!("waiting for the run failed: {e}")),
        Some(Ok(status)) if status.code() == Some(invocation.success_status) => {
            RunEnd::Completed { seconds, stdout }
        }
        Some(Ok(status)) => RunEnd::Failed(describe_failure(status, &stderr)),
    }
}

/// Waits for `child` until `cap` after `start`; `None` when it had to be
/// killed.
fn wait_capped(
    child: &mut Child,
    start: Instant,
    cap: Duration,
) -> Option<std::io::Result<ExitStatus>> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        if start.elapsed() >= cap {
            // Killing a child that exited meanwhile fails harmlessly.
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn reader<R: Read + Send + 'static>(stream: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    stream.map(|mut stream| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error ends the capture; what was read is kept.
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    })
}

fn joined(handle: Option<JoinHandle<Vec<u8>>>) -> String {
    let bytes = handle.and_then(|h| h.join().ok()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// "exit status 3: <last line of stderr>" (or the signal).
fn describe_failure(status: ExitStatus, stderr: &str) -> String {
    let how = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    };
    let tail_start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let tail = stderr
        .get(tail_start..)
        .unwrap_or_default()
        .lines()
        .rfind(|line| line.starts_with("nestmon:") || line.contains("error"))
        .or_else(|| stderr.lines().last())
        .unwrap_or_default()
        .trim();
    if tail.is_empty() {
        how
    } else {
        format!("{how}: {tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str, success_status: i32) -> Invocation {
        Invocation {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".to_string(), script.to_string()],
            success_status,
        }
    }

    #[test]
    fn a_run_that_exits_with_the_success_status_completes_with_its_output() {
        let end = run_capped(&shell("echo hi", 0), Duration::from_secs(20));
        let RunEnd::Completed { stdout, seconds } = end else {
            panic!("{end:?}");
        };
        assert_eq!(stdout, "hi\n");
        assert!(seconds >= 0.0);
    }

    #[test]
    fn another_exit_status_fails_with_the_last_line_of_stderr() {
        let end = run_capped(
            &shell("echo 'nestmon: guest stopped' >&2; exit 3", 0),
            Duration::from_secs(20),
        );
        assert_eq!(
            end,
            RunEnd::Failed("exit status 3: nestmon: guest stopped".into())
        );
    }

    #[test]
    fn a_run_past_its_cap_is_killed_and_capped() {
        let start = Instant::now();
        let end = run_capped(&shell("exec sleep 30", 0), Duration::from_millis(200));
        assert_eq!(end, RunEnd::Capped);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_program_that_cannot_start_fails() {
        let invocation = Invocation {
            program: PathBuf::from("/nonexistent/program"),
            args: Vec::new(),
            success_status: 0,
        };
        let end = run_capped(&invocation, Duration::from_secs(1));
        assert!(
            matches!(&end, RunEnd::Failed(why) if why.starts_with("cannot start")),
            "{end:?}"
        );
    }
}
