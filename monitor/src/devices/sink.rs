//! Where COM1's bytes go, for each [`SerialBackend`].
//!
//! Invariants: every sink is flushed after each write, so guest output
//! interleaves with the monitor's own messages in the order it happened;
//! a [`SharedSink`] is opened once per run and outlives the machines that
//! write to it (a guest reset keeps the file or socket, as QEMU keeps its
//! chardev).

use super::DeviceError;
use crate::config::SerialBackend;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Opens the sink for `backend`: stdout, a file (appended to, created if
/// missing), a Unix socket the monitor connects to, or nowhere.
pub fn open_serial_sink(backend: &SerialBackend) -> Result<Box<dyn Write + Send>, DeviceError> {
    Ok(match backend {
        SerialBackend::Stdio => Box::new(Stdout),
        SerialBackend::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DeviceError::SerialFile {
                    path: path.clone(),
                    source,
                })?;
            Box::new(Flushed(file))
        }
        SerialBackend::UnixSocket(path) => {
            let stream = UnixStream::connect(path).map_err(|source| DeviceError::SerialSocket {
                path: path.clone(),
                source,
            })?;
            Box::new(Flushed(stream))
        }
        SerialBackend::None => Box::new(std::io::sink()),
    })
}

/// A sink opened once and written by one machine after another (a reset
/// builds a new COM1 over the same backend). Clones write to the same
/// sink.
#[derive(Clone)]
pub struct SharedSink(Arc<Mutex<Box<dyn Write + Send>>>);

impl SharedSink {
    /// Opens the sink for `backend` ([`open_serial_sink`]).
    pub fn open(backend: &SerialBackend) -> Result<SharedSink, DeviceError> {
        Ok(SharedSink(Arc::new(Mutex::new(open_serial_sink(backend)?))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
        // A writer stays usable even if a holder panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.lock().flush()
    }
}

/// The monitor's standard output, flushed after every write.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// Any writer, flushed after every write.
struct Flushed<W: Write>(W);

impl<W: Write> Write for Flushed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        self.0.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    fn scratch_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nestmon-sink-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_backend_appends_to_the_file() {
        let dir = scratch_dir("file");
        let path = dir.join("com1.log");
        std::fs::write(&path, b"before\n").unwrap();
        let mut sink = open_serial_sink(&SerialBackend::File(path.clone())).unwrap();
        sink.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"before\nafter\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn file_in_missing_directory_is_a_clear_error() {
        let path = PathBuf::from("/nonexistent-nestmon-dir/com1.log");
        let err = open_serial_sink(&SerialBackend::File(path))
            .err()
            .expect("must fail");
        assert!(matches!(err, DeviceError::SerialFile { .. }));
        assert!(
            err.to_string()
                .contains("/nonexistent-nestmon-dir/com1.log"),
            "{err}"
        );
    }

    #[test]
    fn unix_socket_backend_delivers_bytes_to_the_listener() {
        let dir = scratch_dir("socket");
        let path = dir.join("com1.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut sink = open_serial_sink(&SerialBackend::UnixSocket(path)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        sink.write_all(b"hi").unwrap();
        drop(sink);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hi");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn socket_without_listener_is_a_clear_error() {
        let dir = scratch_dir("nolistener");
        let err = open_serial_sink(&SerialBackend::UnixSocket(dir.join("absent.sock")))
            .err()
            .expect("must fail");
        assert!(matches!(err, DeviceError::SerialSocket { .. }));
        assert!(err.to_string().contains("absent.sock"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn none_backend_accepts_and_discards() {
        let mut sink = open_serial_sink(&SerialBackend::None).unwrap();
        assert!(sink.write_all(b"gone").is_ok());
    }
}
