//! Guest memory as the high-bandwidth port sees it.
//!
//! Invariant: the backdoor touches guest memory only through this trait, at
//! linear addresses the guest named, and only for as many bytes as ECX says
//! and the protocol state allows.

/// A guest memory access failed (unmapped, not writable, beyond RAM...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest memory fault at linear address {linear:#010x}")]
pub struct MemFault {
    /// The first linear address that could not be accessed.
    pub linear: u32,
}

/// Reads and writes guest memory by linear address (the embedder applies
/// segmentation and paging).
///
/// Contract: **a failed write leaves guest memory untouched.** An
/// implementation checks the whole range (every page of it) before it
/// writes the first byte, so that a reply the backdoor fails to deliver
/// (and reports as failed to the guest) is never half there.
pub trait GuestMemory {
    /// Fills `buf` from guest memory starting at `linear`.
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), MemFault>;
    /// Writes `data` to guest memory starting at `linear`, all of it or,
    /// on failure, none of it.
    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), MemFault>;
}

/// A flat guest memory of `bytes.len()` bytes at linear address 0, for tests
/// and simulations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlatMemory {
    /// The memory contents.
    pub bytes: Vec<u8>,
}

impl FlatMemory {
    /// `size` zero bytes.
    pub fn new(size: usize) -> Self {
        FlatMemory {
            bytes: vec![0; size],
        }
    }

    fn range(&self, linear: u32, len: usize) -> Result<std::ops::Range<usize>, MemFault> {
        let start = linear as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(start..end),
            _ => Err(MemFault { linear }),
        }
    }
}

impl GuestMemory for FlatMemory {
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        let range = self.range(linear, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    /// Checks the whole range before copying, so a failed write changes
    /// nothing (the [`GuestMemory`] contract).
    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), MemFault> {
        let range = self.range(linear, data.len())?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_memory_round_trips_bytes() {
        let mut mem = FlatMemory::new(16);
        mem.write(4, b"abc").unwrap();
        let mut buf = [0; 3];
        mem.read(4, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
    }

    #[test]
    fn flat_memory_write_crossing_the_end_changes_nothing() {
        let mut mem = FlatMemory {
            bytes: vec![0xee; 16],
        };
        assert_eq!(mem.write(12, b"abcdefgh"), Err(MemFault { linear: 12 }));
        assert_eq!(mem.bytes, vec![0xee; 16]);
    }

    #[test]
    fn flat_memory_faults_past_the_end_without_panicking() {
        let mut mem = FlatMemory::new(16);
        assert_eq!(mem.write(15, b"ab"), Err(MemFault { linear: 15 }));
        let mut buf = [0; 2];
        assert_eq!(
            mem.read(u32::MAX, &mut buf),
            Err(MemFault { linear: u32::MAX })
        );
    }
}
