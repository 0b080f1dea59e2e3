//! COM1's input from the monitor's standard input, while a guest runs with
//! `serial0` on standard I/O.
//!
//! - When standard input and standard output are both terminals (a person
//!   at the console), the terminal is put in raw mode (no echo, no line
//!   editing, no signals from Ctrl-C or Ctrl-Z: they go to the guest, as on
//!   a serial line; output processing stays on) and every key goes to the
//!   guest. `Ctrl-A x` stops nestmon as SIGINT does (exit status 130);
//!   `Ctrl-A Ctrl-A` sends one Ctrl-A; `Ctrl-A` and any other key sends
//!   both.
//! - When standard input is not a terminal (a pipe, a file), its bytes go to
//!   the guest as they come, until its end; the terminal, if any, is not
//!   touched.
//! - When standard input is a terminal but standard output is not (nestmon
//!   run from a test harness or with its output in a file), standard input
//!   is not read, so nestmon never takes keys meant for someone else.
//!
//! Invariants: the terminal's settings are restored on every way out of a
//! run in which they were changed: the guard's drop (every return of the
//! machine, including a first stop signal), a panic (a hook restores them
//! before the previous hook runs), and a second stop signal, which ends
//! the process from the signal handler ([`restore_terminal_signal_safe`],
//! async-signal-safe: one atomic swap and `tcsetattr`). The reader thread
//! polls with a timeout, so dropping [`ConsoleInput`] stops it promptly.
//! One reader serves the whole run: after a guest reset it feeds the new
//! machine's COM1 ([`ConsoleInput::retarget`]), so the terminal stays in
//! raw mode and no byte read from standard input is lost.

use crate::devices::UartInput;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Standard input.
const STDIN: RawFd = 0;
/// Standard output.
const STDOUT: RawFd = 1;
/// The escape key of the console (Ctrl-A, as QEMU's `-nographic`).
const ESCAPE: u8 = 0x01;
/// After [`ESCAPE`], the key that stops nestmon.
const QUIT_KEY: u8 = b'x';
/// How long the reader waits for input before it looks at its stop flag.
const POLL_MS: i32 = 100;
/// Input the guest has not taken yet beyond which the reader waits.
const MAX_BACKLOG: usize = 64 * 1024;

/// The terminal settings before raw mode (set once per process).
static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();
/// Whether the terminal is in raw mode now.
static RAW: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was, if nestmon changed it; callable from
/// a signal handler.
pub fn restore_terminal_signal_safe() {
    if RAW.swap(false, Ordering::SeqCst) {
        if let Some(saved) = SAVED_TERMIOS.get() {
            // SAFETY: tcsetattr is async-signal-safe; `saved` is a valid
            // termios that tcgetattr filled for this descriptor.
            unsafe { libc::tcsetattr(STDIN, libc::TCSANOW, saved) };
        }
    }
}

fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Raw mode on standard input's terminal.
fn enter_raw_mode() -> io::Result<()> {
    // SAFETY: a zeroed termios is a valid buffer for tcgetattr to fill.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `saved` is a valid termios to fill.
    if unsafe { libc::tcgetattr(STDIN, &mut saved) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let saved = *SAVED_TERMIOS.get_or_init(|| saved);
    let mut raw = saved;
    raw.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
    raw.c_cflag = (raw.c_cflag & !(libc::CSIZE | libc::PARENB)) | libc::CS8;
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    RAW.store(true, Ordering::SeqCst);
    // SAFETY: `raw` is a valid termios derived from the terminal's own.
    if unsafe { libc::tcsetattr(STDIN, libc::TCSANOW, &raw) } != 0 {
        RAW.store(false, Ordering::SeqCst);
        return Err(io::Error::last_os_error());
    }
    install_panic_hook();
    Ok(())
}

/// Makes a panic restore the terminal before the previous hook reports it.
fn install_panic_hook() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal_signal_safe();
        previous(info);
    }));
}

/// What the reader does with the keys of a terminal: the Ctrl-A escape.
#[derive(Debug, Default)]
struct Escape {
    /// The last key was [`ESCAPE`].
    pending: bool,
}

/// What a chunk of keys means.
#[derive(Debug, PartialEq, Eq)]
struct Keys {
    /// Bytes for the guest.
    guest: Vec<u8>,
    /// The quit sequence was typed.
    quit: bool,
}

impl Escape {
    fn filter(&mut self, input: &[u8]) -> Keys {
        let mut keys = Keys {
            guest: Vec::with_capacity(input.len()),
            quit: false,
        };
        for &byte in input {
            if !std::mem::take(&mut self.pending) {
                if byte == ESCAPE {
                    self.pending = true;
                } else {
                    keys.guest.push(byte);
                }
                continue;
            }
            match byte {
                QUIT_KEY => {
                    keys.quit = true;
                    return keys;
                }
                ESCAPE => keys.guest.push(ESCAPE),
                other => keys.guest.extend([ESCAPE, other]),
            }
        }
        keys
    }
}

/// Standard input feeding COM1 for as long as it lives.
pub struct ConsoleInput {
    stop: Arc<AtomicBool>,
    /// The COM1 the reader feeds (the current machine's).
    target: Arc<Mutex<UartInput>>,
    thread: Option<JoinHandle<()>>,
}

impl ConsoleInput {
    /// Starts feeding `input` from standard input as the module docs say;
    /// `None` when standard input is not to be read. A terminal that
    /// refuses raw mode is read as it is.
    pub fn start(input: UartInput) -> io::Result<Option<ConsoleInput>> {
        let terminal = is_terminal(STDIN);
        if terminal && !is_terminal(STDOUT) {
            return Ok(None);
        }
        let raw = terminal && enter_raw_mode().is_ok();
        let stop = Arc::new(AtomicBool::new(false));
        let target = Arc::new(Mutex::new(input));
        let thread = {
            let (stop, target) = (stop.clone(), target.clone());
            std::thread::Builder::new()
                .name("nestmon-stdin".into())
                .spawn(move || read_stdin(&target, &stop, raw))?
        };
        Ok(Some(ConsoleInput {
            stop,
            target,
            thread: Some(thread),
        }))
    }

    /// Feeds `input` (the COM1 of the machine built after a reset) from
    /// now on.
    pub fn retarget(&self, input: UartInput) {
        *lock_target(&self.target) = input;
    }
}

fn lock_target(target: &Mutex<UartInput>) -> std::sync::MutexGuard<'_, UartInput> {
    // A handle stays valid even if a holder panicked.
    target.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for ConsoleInput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // A panic in the thread was already reported on stderr.
            let _ = thread.join();
        }
        restore_terminal_signal_safe();
    }
}

/// Waits up to [`POLL_MS`] for standard input; true when it can be read
/// (or has ended), false on a timeout.
fn wait_readable() -> io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: STDIN,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    match unsafe { libc::poll(&mut fds, 1, POLL_MS) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ if fds.revents & libc::POLLNVAL != 0 => Err(io::Error::from_raw_os_error(libc::EBADF)),
        _ => Ok(true),
    }
}

/// Reads standard input until it ends, fails, or `stop`, into the
/// current `target`.
fn read_stdin(target: &Mutex<UartInput>, stop: &AtomicBool, raw: bool) {
    let mut escape = Escape::default();
    let mut buffer = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let input = lock_target(target).clone();
        if input.backlog() > MAX_BACKLOG {
            std::thread::sleep(std::time::Duration::from_millis(u64::from(POLL_MS as u32)));
            continue;
        }
        match wait_readable() {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => return,
        }
        // SAFETY: reads into a buffer of that many bytes.
        let n = unsafe { libc::read(STDIN, buffer.as_mut_ptr().cast(), buffer.len()) };
        match n {
            0 => return,
            n if n < 0 => {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return;
                }
            }
            n => {
                let bytes = &buffer[..n as usize];
                if !raw {
                    input.send(bytes);
                    continue;
                }
                let keys = escape.filter(bytes);
                input.send(&keys.guest);
                if keys.quit {
                    // SAFETY: raise delivers SIGINT to this process, whose
                    // stop handler stops the guest as Ctrl-C would.
                    unsafe { libc::raise(libc::SIGINT) };
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_pass_through() {
        let mut e = Escape::default();
        assert_eq!(
            e.filter(b"ls -l\r\x03"),
            Keys {
                guest: b"ls -l\r\x03".to_vec(),
                quit: false
            }
        );
    }

    #[test]
    fn ctrl_a_x_quits_and_drops_what_follows() {
        let mut e = Escape::default();
        let keys = e.filter(b"ab\x01xcd");
        assert_eq!(keys.guest, b"ab");
        assert!(keys.quit);
    }

    #[test]
    fn ctrl_a_twice_sends_one_and_other_keys_send_both() {
        let mut e = Escape::default();
        assert_eq!(e.filter(b"\x01\x01").guest, b"\x01");
        assert_eq!(e.filter(b"\x01q").guest, b"\x01q");
    }

    #[test]
    fn escape_split_across_reads_still_counts() {
        let mut e = Escape::default();
        let first = e.filter(b"a\x01");
        assert_eq!((first.guest.as_slice(), first.quit), (&b"a"[..], false));
        assert!(e.filter(b"x").quit);
    }

    #[test]
    fn restoring_without_raw_mode_does_nothing() {
        assert!(!RAW.load(Ordering::SeqCst));
        restore_terminal_signal_safe();
        assert!(!RAW.load(Ordering::SeqCst));
    }
}
