//! Executable memory with separate write and execute views.
//!
//! Invariant: `rx` and `rw` are two shared mappings of the same memfd of
//! `size` bytes; `rx` is never writable and `rw` is never executable.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The host refused to set up executable memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up {size} bytes of executable memory for the code cache: {source}")]
pub struct ExecError {
    size: usize,
    source: std::io::Error,
}

/// A block of code memory, written through one view and run through another.
pub struct ExecMemory {
    _fd: OwnedFd,
    rx: *mut u8,
    rw: *mut u8,
    size: usize,
}

// SAFETY: the mappings are owned by this value and only used by one thread.
unsafe impl Send for ExecMemory {}

fn map(fd: &OwnedFd, size: usize, prot: i32) -> std::io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of a valid memfd at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}

impl ExecMemory {
    /// Allocates `size` bytes (rounded up to pages).
    pub fn new(size: usize) -> Result<ExecMemory, ExecError> {
        let size = (size + 4095) & !4095;
        let err = |source| ExecError { size, source };
        // SAFETY: the name is NUL-terminated.
        let raw = unsafe { libc::memfd_create(c"nestmon-code-cache".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: valid memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let rx = map(&fd, size, libc::PROT_READ | libc::PROT_EXEC).map_err(err)?;
        let rw = map(&fd, size, libc::PROT_READ | libc::PROT_WRITE).map_err(err)?;
        Ok(ExecMemory {
            _fd: fd,
            rx,
            rw,
            size,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Start of the executable view.
    pub fn exec_base(&self) -> *const u8 {
        self.rx
    }

    /// Writes `code` at `off` through the writable view.
    ///
    /// Panics if the range leaves the block (a cache bookkeeping bug).
    pub fn write(&mut self, off: usize, code: &[u8]) {
        assert!(off.checked_add(code.len()).is_some_and(|e| e <= self.size));
        // SAFETY: the range was checked to lie inside the rw mapping.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), self.rw.add(off), code.len()) };
    }

    /// Reads code back.
    pub fn read(&self, off: usize, len: usize) -> &[u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.size));
        // SAFETY: the range was checked to lie inside the rw mapping, which
        // lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.rw.add(off), len) }
    }
}

impl Drop for ExecMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the two mappings made in `new`.
        unsafe {
            libc::munmap(self.rx.cast(), self.size);
            libc::munmap(self.rw.cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_written_through_rw_view_runs_from_rx_view() {
        let mut m = ExecMemory::new(4096).unwrap();
        m.write(0, &[0xb8, 42, 0, 0, 0, 0xc3]); // mov eax, 42; ret
                                                // SAFETY: the bytes above are a complete function returning 42.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(m.exec_base()) };
        assert_eq!(f(), 42);
    }
}
