//! Running the `nestmon` binary while watching its output line by line as
//! it comes: each line is stamped with the host's clocks when it arrived,
//! a test can wait for a line before acting (sending a signal), and a run
//! that outlives its time limit is killed and fails the test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output and when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    /// The line, without its end of line and the serial console's CR.
    pub text: String,
    /// The host's monotonic clock at its arrival.
    pub at: Instant,
    /// The host's wall clock at its arrival.
    pub wall: SystemTime,
}

/// A running nestmon whose output is being read.
pub struct Watched {
    child: Child,
    lines: Receiver<Line>,
    seen: Vec<Line>,
    started: Instant,
}

/// How a watched run ended.
pub struct Ended {
    /// Exit status, `None` when a signal ended the process.
    pub status: Option<i32>,
    /// Every line, in arrival order.
    pub lines: Vec<Line>,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Ended {
    /// The text of one stream.
    pub fn text(&self, stream: Stream) -> String {
        self.lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| format!("{}\n", l.text))
            .collect()
    }
}

fn reader(pipe: impl Read + Send + 'static, stream: Stream, tx: std::sync::mpsc::Sender<Line>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(bytes) = line else { break };
            let text = String::from_utf8_lossy(&bytes)
                .trim_end_matches('\r')
                .to_owned();
            let line = Line {
                stream,
                text,
                at: Instant::now(),
                wall: SystemTime::now(),
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

impl Watched {
    /// Starts `nestmon ARGS` with standard input closed.
    pub fn spawn(args: &[&str]) -> Watched {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nestmon");
        let (tx, lines) = channel();
        reader(
            child.stdout.take().expect("stdout"),
            Stream::Stdout,
            tx.clone(),
        );
        reader(child.stderr.take().expect("stderr"), Stream::Stderr, tx);
        Watched {
            child,
            lines,
            seen: Vec::new(),
            started,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits up to `limit` for a line of `stream` that contains `needle`;
    /// returns it, or `None` if the time passed or the process ended.
    pub fn wait_for(&mut self, stream: Stream, needle: &str, limit: Duration) -> Option<Line> {
        if let Some(line) = self
            .seen
            .iter()
            .find(|l| l.stream == stream && l.text.contains(needle))
        {
            return Some(line.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    let found = line.stream == stream && line.text.contains(needle);
                    self.seen.push(line.clone());
                    if found {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// The lines seen so far, as text, for failure messages.
    pub fn transcript(&self) -> String {
        self.seen
            .iter()
            .map(|l| format!("{:?}: {}\n", l.stream, l.text))
            .collect()
    }

    /// Waits up to `limit` for the process to end and its output to be
    /// read; kills it and fails the test after that.
    pub fn finish(mut self, limit: Duration) -> Ended {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                self.child.kill().expect("kill");
                self.child.wait().expect("reap");
                self.seen.extend(self.lines.try_iter());
                panic!(
                    "nestmon ran longer than {limit:?}; output:\n{}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        // The readers end at the pipes' end.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Ended {
            status: status.code(),
            lines: self.seen,
            elapsed,
        }
    }
}
