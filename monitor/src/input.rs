//! Reading a file nestmon was asked to read (a kernel, a `.vmx`) safely.
//!
//! Invariants of [`read_regular_file`]:
//! - It never blocks: the file's type is checked with `stat` before it is
//!   opened (so opening a device has no side effect), and it is opened with
//!   `O_NONBLOCK`, so a FIFO put in its place in between cannot block the
//!   open either; the opened file is checked again with `fstat`.
//! - Only regular files are read; anything else is refused with its
//!   [`FileKind`].
//! - It never reads more than `limit + 1` bytes, so neither a file larger
//!   than the limit nor one that grows while it is read can exhaust memory.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path names, for messages about files that are not regular.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A FIFO (named pipe).
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device (`/dev/zero`, a terminal).
    CharacterDevice,
    /// A block device (a disk).
    BlockDevice,
    /// Something else the host reports.
    Other,
}

impl FileKind {
    /// The kind of file `metadata` describes (after following symbolic links).
    pub fn of(metadata: &Metadata) -> FileKind {
        let kind = metadata.file_type();
        if kind.is_file() {
            FileKind::Regular
        } else if kind.is_dir() {
            FileKind::Directory
        } else if kind.is_fifo() {
            FileKind::Fifo
        } else if kind.is_socket() {
            FileKind::Socket
        } else if kind.is_char_device() {
            FileKind::CharacterDevice
        } else if kind.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        }
    }
}

impl std::fmt::Display for FileKind {
    /// "a directory", "a FIFO (named pipe)", …: what follows "is".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharacterDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "not a regular file",
        })
    }
}

/// Why [`read_regular_file`] refused a file.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The host could not stat, open or read it.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// It is not a regular file.
    #[error("is {0}")]
    NotRegular(FileKind),
    /// It holds more than the limit (or grew past it while being read).
    #[error("is larger than {limit} bytes")]
    TooLarge {
        /// The most that is read.
        limit: u64,
    },
}

/// Reads the regular file at `path`, of at most `limit` bytes, without
/// ever blocking on it (see the module invariants).
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    check_regular(&std::fs::metadata(path)?, limit)?;
    let file = open_without_blocking(path)?;
    let size = check_regular(&file.metadata()?, limit)?;
    read_at_most(file, size, limit)
}

/// The file's size, if it is a regular file within `limit`.
fn check_regular(metadata: &Metadata, limit: u64) -> Result<u64, InputError> {
    match FileKind::of(metadata) {
        FileKind::Regular if metadata.len() > limit => Err(InputError::TooLarge { limit }),
        FileKind::Regular => Ok(metadata.len()),
        other => Err(InputError::NotRegular(other)),
    }
}

/// Opens for reading with `O_NONBLOCK` (a FIFO opens at once instead of
/// waiting for a writer) and `O_NOCTTY` (a terminal never becomes ours).
fn open_without_blocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Reads to the end, refusing more than `limit` bytes; `size_hint` (the
/// size `fstat` gave) only sizes the buffer.
fn read_at_most(file: File, size_hint: u64, limit: u64) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge { limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("nestmon-input-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mkfifo(path: &Path) {
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `name` is a valid NUL-terminated path that outlives the call.
        let result = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
        assert_eq!(result, 0, "mkfifo {}", path.display());
    }

    #[test]
    fn regular_file_within_the_limit_is_read_whole() {
        let dir = Scratch::new("regular");
        let path = dir.0.join("k");
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(read_regular_file(&path, 4).unwrap(), b"abcd");
    }

    #[test]
    fn file_one_byte_over_the_limit_is_refused_as_too_large() {
        let dir = Scratch::new("large");
        let path = dir.0.join("k");
        std::fs::write(&path, b"abcde").unwrap();
        assert!(matches!(
            read_regular_file(&path, 4),
            Err(InputError::TooLarge { limit: 4 })
        ));
    }

    #[test]
    fn reader_stops_one_byte_past_the_limit_whatever_the_file_claims() {
        let dir = Scratch::new("grows");
        let path = dir.0.join("k");
        std::fs::write(&path, b"abcdefgh").unwrap();
        let file = File::open(&path).unwrap();
        assert!(matches!(
            read_at_most(file, 2, 4),
            Err(InputError::TooLarge { limit: 4 })
        ));
    }

    #[test]
    fn directory_is_refused_with_its_kind() {
        let dir = Scratch::new("directory");
        assert!(matches!(
            read_regular_file(&dir.0, 1 << 20),
            Err(InputError::NotRegular(FileKind::Directory))
        ));
    }

    #[test]
    fn fifo_is_refused_at_once_with_its_kind() {
        let dir = Scratch::new("fifo");
        let path = dir.0.join("f");
        mkfifo(&path);
        assert!(matches!(
            read_regular_file(&path, 1 << 20),
            Err(InputError::NotRegular(FileKind::Fifo))
        ));
    }

    #[test]
    fn fifo_opens_without_waiting_for_a_writer() {
        let dir = Scratch::new("fifo-open");
        let path = dir.0.join("f");
        mkfifo(&path);
        let file = open_without_blocking(&path).unwrap();
        assert_eq!(
            FileKind::of(&file.metadata().unwrap()),
            FileKind::Fifo,
            "the fstat check sees what was opened"
        );
    }

    #[test]
    fn socket_is_refused_with_its_kind() {
        let dir = Scratch::new("socket");
        let path = dir.0.join("s");
        let _listener = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            read_regular_file(&path, 1 << 20),
            Err(InputError::NotRegular(FileKind::Socket))
        ));
    }

    #[test]
    fn dev_zero_is_refused_as_a_character_device() {
        assert!(matches!(
            read_regular_file(Path::new("/dev/zero"), 1 << 20),
            Err(InputError::NotRegular(FileKind::CharacterDevice))
        ));
    }

    /// Makes a block device node (loop device 7:0) at `path`; needs
    /// CAP_MKNOD, which CI's root has. The node is only `stat`ed, never
    /// opened, so no device behind it is needed.
    fn mknod_block_device(path: &Path) -> std::io::Result<()> {
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: `name` is a valid NUL-terminated path that outlives the call.
        let result =
            unsafe { libc::mknod(name.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) };
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    #[test]
    fn block_device_is_refused_with_its_kind() {
        let dir = Scratch::new("block");
        let made = dir.0.join("b");
        let mut devices: Vec<PathBuf> = std::fs::read_dir("/dev")
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()))
            .take(1)
            .collect();
        let mknod = mknod_block_device(&made);
        if mknod.is_ok() {
            devices.push(made);
        }
        if devices.is_empty() {
            let why = format!(
                "no block device in /dev, and mknod of one failed ({})",
                mknod.unwrap_err()
            );
            assert!(std::env::var_os("CI").is_none(), "{why}, and CI is set");
            eprintln!("skipped: {why}");
            return;
        }
        for device in devices {
            assert!(
                matches!(
                    read_regular_file(&device, 1 << 20),
                    Err(InputError::NotRegular(FileKind::BlockDevice))
                ),
                "{}",
                device.display()
            );
        }
    }

    #[test]
    fn missing_file_is_the_hosts_not_found() {
        let error = read_regular_file(Path::new("/nonexistent/k"), 1).unwrap_err();
        assert!(
            matches!(&error, InputError::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
            "{error:?}"
        );
    }

    #[test]
    fn kinds_read_as_what_follows_is() {
        assert_eq!(FileKind::Directory.to_string(), "a directory");
        assert_eq!(FileKind::Fifo.to_string(), "a FIFO (named pipe)");
        assert_eq!(FileKind::CharacterDevice.to_string(), "a character device");
        assert_eq!(FileKind::BlockDevice.to_string(), "a block device");
    }
}
