//! Guest RAM: one memfd, mapped once read-write for the monitor.
//!
//! Invariant: `host` points to a shared mapping of exactly `size` bytes of
//! the memfd for the whole life of the `GuestRam`, with [`RAM_GUARD`]
//! bytes of `PROT_NONE` reservation on either side (translated code's
//! software-TLB accesses, `frame + (linear & 0xffff) - (linear & 0xf000)`,
//! can reach at most 60 KiB before a frame and 64 KiB + 15 bytes after it
//! whatever path led to them, and a software-TLB `rep` chunk 32 KiB more
//! either way: the guards make that a fault, never other host memory);
//! every accessor checks `addr + len <= size` before touching it.

use crate::addr::{GuestPhys, HostAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The largest guest RAM a 32-bit guest without PAE can use below the
/// conventional 3.5 GiB hole start.
pub const MAX_GUEST_RAM: u64 = 3584 << 20;

/// Inaccessible bytes reserved before and after the RAM mapping.
pub const RAM_GUARD: usize = 1 << 20;

/// Why guest RAM could not be created or accessed.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    /// A memory size the guest cannot use.
    #[error("memory size {mib} MiB is not usable: {why}")]
    BadSize {
        /// Requested size in MiB.
        mib: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The host refused the allocation.
    #[error("the host cannot provide {mib} MiB of guest RAM: {source}")]
    HostRefused {
        /// Requested size in MiB.
        mib: u64,
        /// The host's error.
        source: std::io::Error,
    },
    /// An access outside guest RAM.
    #[error("guest-physical access of {len} bytes at {addr:#010x} is outside guest RAM ({size:#x} bytes)")]
    OutOfRange {
        /// First byte of the access.
        addr: u32,
        /// Length of the access.
        len: usize,
        /// Size of guest RAM.
        size: usize,
    },
}

/// Guest RAM backed by a memfd.
pub struct GuestRam {
    fd: OwnedFd,
    host: *mut u8,
    size: usize,
}

// SAFETY: GuestRam owns its mapping; the raw pointer is only dereferenced
// through bounds-checked accessors, and the vCPU is single-threaded.
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Creates `mib` MiB of zeroed guest RAM.
    pub fn new(mib: u64) -> Result<GuestRam, RamError> {
        check_size(mib)?;
        let size = (mib << 20) as usize;
        let fd = create_memfd(size).map_err(|source| RamError::HostRefused { mib, source })?;
        let host = map_shared(&fd, size).map_err(|source| RamError::HostRefused { mib, source })?;
        Ok(GuestRam { fd, host, size })
    }

    /// The size of guest RAM in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of 4 KiB frames of guest RAM (at most 2^20).
    pub fn frames(&self) -> u32 {
        (self.size / crate::PAGE_SIZE as usize) as u32
    }

    /// The memfd backing guest RAM (for windows that map it).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The monitor's host address of guest-physical 0.
    pub fn host_base(&self) -> HostAddr {
        HostAddr(self.host as usize)
    }

    fn check(&self, addr: GuestPhys, len: usize) -> Result<usize, RamError> {
        let start = addr.0 as usize;
        match start.checked_add(len) {
            Some(end) if end <= self.size => Ok(start),
            _ => Err(RamError::OutOfRange {
                addr: addr.0,
                len,
                size: self.size,
            }),
        }
    }

    /// Copies guest memory at `addr` into `buf`.
    pub fn read(&self, addr: GuestPhys, buf: &mut [u8]) -> Result<(), RamError> {
        let off = self.check(addr, buf.len())?;
        // SAFETY: `check` proved off..off+len lies inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.host.add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies guest memory at `addr` into `buf`, as a guest read sees it:
    /// a range not wholly inside RAM reads as all ones (nothing drives the
    /// bus there on a PC).
    pub fn read_or_ones(&self, addr: GuestPhys, buf: &mut [u8]) {
        if self.read(addr, buf).is_err() {
            buf.fill(0xff);
        }
    }

    /// [`Self::read_or_ones`] of consecutive `(physical address, length)`
    /// pieces (an access split at page boundaries) into `buf`, in order.
    pub fn read_pieces_or_ones(&self, pieces: &[(u32, usize)], buf: &mut [u8]) {
        let mut at = 0;
        for &(phys, n) in pieces {
            self.read_or_ones(GuestPhys(phys), &mut buf[at..at + n]);
            at += n;
        }
    }

    /// Copies `data` into guest memory at `addr`.
    pub fn write(&self, addr: GuestPhys, data: &[u8]) -> Result<(), RamError> {
        let off = self.check(addr, data.len())?;
        // SAFETY: `check` proved off..off+len lies inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.host.add(off), data.len()) };
        Ok(())
    }

    /// Fills `len` bytes at `addr` with zero. The whole pages of the range
    /// are punched out of the memfd instead of written: they read as zero
    /// and take no host memory until the guest touches them (a Multiboot
    /// kernel's megabyte of BSS cost 256 page faults at every start).
    pub fn zero(&self, addr: GuestPhys, len: usize) -> Result<(), RamError> {
        let off = self.check(addr, len)?;
        let page = crate::PAGE_SIZE as usize;
        let (first, end) = (off.next_multiple_of(page), (off + len) / page * page);
        if first < end && self.punch_hole(first, end - first).is_ok() {
            self.write_zeros(off, first - off);
            self.write_zeros(end, off + len - end);
        } else {
            self.write_zeros(off, len);
        }
        Ok(())
    }

    /// Frees the memfd's pages of `off..off + len` (page-aligned), which then
    /// read as zero in every mapping.
    fn punch_hole(&self, off: usize, len: usize) -> std::io::Result<()> {
        // SAFETY: fallocate on our own memfd; it changes file contents only
        // (to zeros), which every mapping of it may see at any time.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Stores zeros at `off..off + len`, which the caller checked.
    fn write_zeros(&self, off: usize, len: usize) {
        // SAFETY: the caller's `check` proved off..off+len lies inside the
        // mapping.
        unsafe { std::ptr::write_bytes(self.host.add(off), 0, len) };
    }

    /// Reads a little-endian u32.
    pub fn read_u32(&self, addr: GuestPhys) -> Result<u32, RamError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian u32.
    pub fn write_u32(&self, addr: GuestPhys, value: u32) -> Result<(), RamError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Reads a little-endian u16.
    pub fn read_u16(&self, addr: GuestPhys) -> Result<u16, RamError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: GuestPhys) -> Result<u64, RamError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: the reservation made in `map_shared` (the mapping and its
        // guards), which nothing else unmaps.
        unsafe { libc::munmap(self.host.sub(RAM_GUARD).cast(), self.size + 2 * RAM_GUARD) };
    }
}

fn check_size(mib: u64) -> Result<(), RamError> {
    let bad = |why: String| Err(RamError::BadSize { mib, why });
    if mib == 0 {
        return bad("guest RAM must be at least 1 MiB".into());
    }
    if mib << 20 > MAX_GUEST_RAM {
        return bad(format!(
            "a 32-bit guest can use at most {} MiB",
            MAX_GUEST_RAM >> 20
        ));
    }
    let host = host_memory_bytes();
    if host != 0 && mib << 20 > host {
        return bad(format!("the host has only {} MiB of memory", host >> 20));
    }
    Ok(())
}

/// Physical memory plus swap of the host, or 0 if unknown.
fn host_memory_bytes() -> u64 {
    // SAFETY: sysinfo only writes into the struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 0;
    }
    (info.totalram as u64 + info.totalswap as u64) * info.mem_unit as u64
}

fn create_memfd(size: usize) -> std::io::Result<OwnedFd> {
    // SAFETY: the name is a valid NUL-terminated string.
    let raw = unsafe { libc::memfd_create(c"nestmon-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `fd` is a valid memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn map_shared(fd: &OwnedFd, size: usize) -> std::io::Result<*mut u8> {
    let total = size + 2 * RAM_GUARD;
    // SAFETY: an anonymous PROT_NONE reservation at a kernel-chosen address.
    let r = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the reservation is `total` bytes, so `RAM_GUARD` lies inside it.
    let start = unsafe { r.cast::<u8>().add(RAM_GUARD) };
    // SAFETY: MAP_FIXED over the middle of our own fresh reservation.
    let p = unsafe {
        libc::mmap(
            start.cast(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE | libc::MAP_FIXED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        // SAFETY: the reservation made above, not used by anything.
        unsafe { libc::munmap(r, total) };
        return Err(e);
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_clears_partial_and_whole_pages_and_nothing_else() {
        let ram = GuestRam::new(1).unwrap();
        ram.write(GuestPhys(0), &[0xa5; 5 * 4096]).unwrap();
        ram.zero(GuestPhys(100), 3 * 4096 + 50).unwrap();
        let mut got = vec![0u8; 5 * 4096];
        ram.read(GuestPhys(0), &mut got).unwrap();
        let zeroed = 100..100 + 3 * 4096 + 50;
        for (i, b) in got.iter().enumerate() {
            let want = if zeroed.contains(&i) { 0 } else { 0xa5 };
            assert_eq!(*b, want, "byte {i}");
        }
        // The punched pages take stores again.
        ram.write_u32(GuestPhys(8192), 0x1234_5678).unwrap();
        assert_eq!(ram.read_u32(GuestPhys(8192)).unwrap(), 0x1234_5678);
    }

    #[test]
    fn zero_inside_one_page_writes_zeros() {
        let ram = GuestRam::new(1).unwrap();
        ram.write(GuestPhys(4096), &[0xff; 4096]).unwrap();
        ram.zero(GuestPhys(4100), 10).unwrap();
        let mut got = [0u8; 20];
        ram.read(GuestPhys(4096), &mut got).unwrap();
        assert_eq!(&got[..4], &[0xff; 4]);
        assert_eq!(&got[4..14], &[0; 10]);
        assert_eq!(&got[14..], &[0xff; 6]);
        assert!(ram.zero(GuestPhys((1 << 20) - 4), 8).is_err());
    }

    #[test]
    fn ram_round_trips_bytes() {
        let ram = GuestRam::new(2).unwrap();
        ram.write_u32(GuestPhys(0x1000), 0xdead_beef).unwrap();
        assert_eq!(ram.read_u32(GuestPhys(0x1000)).unwrap(), 0xdead_beef);
    }

    #[test]
    fn ram_refuses_access_past_end() {
        let ram = GuestRam::new(1).unwrap();
        assert!(matches!(
            ram.read_u32(GuestPhys(0xffffe)),
            Err(RamError::OutOfRange { .. })
        ));
        assert!(ram.read_u32(GuestPhys(0xffffc)).is_ok());
    }

    #[test]
    fn a_piece_outside_ram_reads_as_all_ones_and_the_others_as_memory() {
        let ram = GuestRam::new(1).unwrap();
        ram.write_u32(GuestPhys(0xffc), 0x1122_3344).unwrap();
        let mut buf = [0u8; 8];
        // Four bytes at the end of a page inside RAM, four past the end.
        ram.read_pieces_or_ones(&[(0xffc, 4), (0x10_0000, 4)], &mut buf);
        assert_eq!(buf, [0x44, 0x33, 0x22, 0x11, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn ram_refuses_sizes_a_32bit_guest_cannot_use() {
        assert!(matches!(GuestRam::new(0), Err(RamError::BadSize { .. })));
        assert!(matches!(GuestRam::new(8192), Err(RamError::BadSize { .. })));
    }
}
