//! The monitor's own standard streams, written without ever panicking.
//!
//! `println!`/`eprintln!` panic when the stream is closed or full (a pipe
//! whose reader went away, `>/dev/full`); nestmon never uses them outside
//! tests. Instead:
//!
//! * diagnostics (errors, warnings, notes, `--stats`, the stop report) go to
//!   standard error through [`diagnostic!`] or [`diagnostic_text`]; a failed
//!   write is ignored, because there is nowhere left to report it, and never
//!   changes the exit status;
//! * command output (`probe`, `run --check`) goes to standard output through
//!   [`write_stdout`], which returns the error so that the command can
//!   report it and exit with [`STDOUT_FAILED_STATUS`].
//!
//! Guest output (COM1) has its own rules, see `devices`.

use std::io::Write;

/// The exit status of a command whose standard output could not be
/// written (a host failure).
pub const STDOUT_FAILED_STATUS: i32 = crate::exit_status::HOST_FAILURE;

/// Writes `text` to standard error as it is (no newline added); a failure
/// is ignored.
pub fn diagnostic_text(text: &str) {
    let mut stderr = std::io::stderr().lock();
    // Nowhere to report a failure to write to stderr: best effort.
    let _ = stderr
        .write_all(text.as_bytes())
        .and_then(|()| stderr.flush());
}

/// Writes one formatted line to standard error, ignoring failure: the
/// non-panicking `eprintln!`.
macro_rules! diagnostic {
    ($($arg:tt)*) => {
        $crate::console::diagnostic_text(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use diagnostic;

/// Writes `text` to standard output and flushes it, so that an error of
/// the stream (closed, full) is returned here rather than lost at exit.
pub fn write_stdout(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes a command's output to standard output; returns the exit status:
/// 0 when written, [`STDOUT_FAILED_STATUS`] (after saying why on standard
/// error, best effort) when standard output refused it.
pub fn print_command_output(text: &str) -> i32 {
    match write_stdout(text) {
        Ok(()) => 0,
        Err(error) => {
            diagnostic!("nestmon: cannot write to standard output: {error}");
            STDOUT_FAILED_STATUS
        }
    }
}
