//! Linear windows: a guest's 4 GiB linear address space as a host region.
//!
//! Invariant: the reservation is `WINDOW_GUARD + 4 GiB + WINDOW_GUARD_AFTER`
//! bytes (4 GiB before, 32 GiB after), with the 4 GiB part starting at a
//! 4 GiB-aligned host address, so the low 32 bits of `base + lin` equal
//! `lin`. Translated code may form addresses `base + r64 + disp32` with
//! `r64 < 2^32`, and `base + r64*s + disp` with `s` up to 8 and `disp` from
//! 0 to 2 GiB; the guards absorb every such address that falls outside the
//! 4 GiB part, so a stray access faults instead of reaching other host
//! memory.
//!
//! Each window carries its [`SoftTlb`] at [`crate::SOFT_TLB_OFFSET`] from
//! its base, in the guard before the 4 GiB part, and right after it its
//! chain table ([`CHAIN_TABLE_OFFSET`]): the only readable and writable
//! memory there, at 1 GiB below the base, which no window address (at
//! most 512 MiB below the base) reaches.
//!
//! The chain table holds, per cross-page branch site number, the host
//! address that site jumps to in this view (`jmp [r15 +
//! CHAIN_TABLE_OFFSET + 8k]`): the site's own exit stub, or the translation the monitor found
//! for its target through this view's mapping. Invariant: only the
//! monitor writes it, and only with such addresses; every entry a live
//! site can read was written (a new window starts with the monitor
//! filling the entries of every site made so far).

use crate::addr::{GuestLinear, GuestPhys, HostAddr, PAGE_SIZE};
use crate::soft::{SoftTlb, SOFT_TLB_BYTES, SOFT_TLB_OFFSET};
use std::os::fd::{AsRawFd, OwnedFd};

/// Size of the guard region before the 4 GiB linear space.
pub const WINDOW_GUARD: usize = 4 << 30;
/// Size of the guard region after the 4 GiB linear space: what a folded
/// `[r15 + index*8 + disp]` reaches (an index below 4 GiB, a displacement
/// below 2 GiB: less than 34 GiB from the base) lies inside it.
pub const WINDOW_GUARD_AFTER: usize = 32 << 30;
/// Where the chain table starts, relative to the window's base (right
/// after the software TLB).
pub const CHAIN_TABLE_OFFSET: i64 = crate::soft::SOFT_TLB_OFFSET + SOFT_TLB_BYTES as i64;
/// Entries of the chain table (host addresses, 8 bytes each).
pub const CHAIN_SLOTS: usize = 1 << 20;
const CHAIN_TABLE_BYTES: usize = CHAIN_SLOTS * 8;
const SPAN: usize = 1 << 32;
/// A window's whole reservation: the guards, the 4 GiB part, and 4 GiB
/// more to align the part to 4 GiB within it.
const RESERVATION: usize = WINDOW_GUARD + SPAN + WINDOW_GUARD_AFTER + SPAN;

/// Host protection of a window page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageProt {
    /// No access (unmapped for the guest).
    None,
    /// Read-only (write-traced or not yet dirty).
    Read,
    /// Read-write.
    ReadWrite,
}

impl PageProt {
    fn bits(self) -> i32 {
        match self {
            PageProt::None => libc::PROT_NONE,
            PageProt::Read => libc::PROT_READ,
            PageProt::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// Why a window operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The host refused to reserve or map address space.
    #[error("host {op} failed for the guest linear window: {source}")]
    Host {
        /// The host call.
        op: &'static str,
        /// The host's error.
        source: std::io::Error,
    },
    /// A range that is not page-aligned or leaves the 4 GiB space.
    #[error("bad window range {lin:#x}+{len:#x}")]
    BadRange {
        /// Start of the range.
        lin: u64,
        /// Length of the range.
        len: u64,
    },
}

/// A reserved host region standing for one guest linear address space.
pub struct LinearWindow {
    reservation: *mut u8,
    base: *mut u8,
    soft: SoftTlb,
}

// SAFETY: the window owns its reservation; it is used by one vCPU thread at a
// time and the signal handler only reads `base`.
unsafe impl Send for LinearWindow {}

impl LinearWindow {
    /// Reserves a new window with everything inaccessible.
    pub fn new() -> Result<LinearWindow, WindowError> {
        let total = RESERVATION;
        // SAFETY: an anonymous PROT_NONE reservation at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(WindowError::Host {
                op: "mmap",
                source: std::io::Error::last_os_error(),
            });
        }
        let start = p as usize;
        let base = (start + WINDOW_GUARD + SPAN - 1) & !(SPAN - 1);
        debug_assert!(
            base - WINDOW_GUARD >= start && base + SPAN + WINDOW_GUARD_AFTER <= start + total
        );
        let tables = (base as i64 + SOFT_TLB_OFFSET) as usize;
        // SAFETY: MAP_FIXED inside the guard before the 4 GiB part of our
        // own fresh reservation (1 GiB below the base, the software TLB's
        // 4 MiB and the chain table's 8 MiB).
        let t = unsafe {
            libc::mmap(
                tables as *mut libc::c_void,
                SOFT_TLB_BYTES + CHAIN_TABLE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if t == libc::MAP_FAILED {
            let source = std::io::Error::last_os_error();
            // SAFETY: the reservation made above, not used by anything.
            unsafe { libc::munmap(p, total) };
            return Err(WindowError::Host { op: "mmap", source });
        }
        Ok(LinearWindow {
            reservation: p.cast(),
            base: base as *mut u8,
            // SAFETY: fresh zeroed read-write memory of SOFT_TLB_BYTES that
            // lives as long as the reservation, i.e. as the window.
            soft: unsafe { SoftTlb::new(tables as *mut u64) },
        })
    }

    /// Points chain-table entry `k` at host address `host` (see the module
    /// docs). Entries past [`CHAIN_SLOTS`] do not exist; writing one is
    /// refused.
    pub fn set_chain_entry(&mut self, k: u32, host: u64) {
        assert!((k as usize) < CHAIN_SLOTS, "chain slot {k} out of range");
        let at = (self.base as i64 + CHAIN_TABLE_OFFSET) as *mut u64;
        // SAFETY: the chain table is CHAIN_TABLE_BYTES of read-write memory
        // of this window, mapped in `new`; `k` is in range.
        unsafe { at.add(k as usize).write(host) };
    }

    /// What chain-table entry `k` holds.
    pub fn chain_entry(&self, k: u32) -> u64 {
        assert!((k as usize) < CHAIN_SLOTS, "chain slot {k} out of range");
        let at = (self.base as i64 + CHAIN_TABLE_OFFSET) as *const u64;
        // SAFETY: as in `set_chain_entry`.
        unsafe { at.add(k as usize).read() }
    }

    /// The window's software TLB.
    pub fn soft(&mut self) -> &mut SoftTlb {
        &mut self.soft
    }

    /// The window's software TLB, to read.
    pub fn soft_ref(&self) -> &SoftTlb {
        &self.soft
    }

    /// Host address of guest linear 0.
    pub fn base(&self) -> HostAddr {
        HostAddr(self.base as usize)
    }

    /// Whether `host` lies in this window's reservation (guards included).
    pub fn contains(&self, host: usize) -> bool {
        let b = self.base as usize;
        host >= b - WINDOW_GUARD && host < b + SPAN + WINDOW_GUARD_AFTER
    }

    /// The guest linear address of a host address inside the 4 GiB part.
    pub fn linear_of(&self, host: usize) -> Option<GuestLinear> {
        let b = self.base as usize;
        (host >= b && host < b + SPAN).then(|| GuestLinear((host - b) as u32))
    }

    fn range(lin: GuestLinear, len: u64) -> Result<(), WindowError> {
        let page = PAGE_SIZE as u64;
        let end = lin.0 as u64 + len;
        if !(lin.0 as u64).is_multiple_of(page) || !len.is_multiple_of(page) || end > SPAN as u64 {
            return Err(WindowError::BadRange {
                lin: lin.0 as u64,
                len,
            });
        }
        Ok(())
    }

    /// Maps `len` bytes of guest RAM starting at `phys` at linear `lin`.
    pub fn map(
        &self,
        lin: GuestLinear,
        ram_fd: &OwnedFd,
        phys: GuestPhys,
        len: u64,
        prot: PageProt,
    ) -> Result<(), WindowError> {
        Self::range(lin, len)?;
        // SAFETY: the target range lies inside our own reservation (checked by
        // `range`), so MAP_FIXED replaces only pages this window owns.
        let p = unsafe {
            libc::mmap(
                self.base.add(lin.0 as usize).cast(),
                len as usize,
                prot.bits(),
                libc::MAP_SHARED | libc::MAP_FIXED,
                ram_fd.as_raw_fd(),
                phys.0 as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(WindowError::Host {
                op: "mmap",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Makes `len` bytes at `lin` inaccessible again (drops any mapping).
    pub fn unmap(&self, lin: GuestLinear, len: u64) -> Result<(), WindowError> {
        Self::range(lin, len)?;
        // SAFETY: the range lies inside our reservation; it becomes an
        // anonymous PROT_NONE region again.
        let p = unsafe {
            libc::mmap(
                self.base.add(lin.0 as usize).cast(),
                len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(WindowError::Host {
                op: "mmap",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Changes the protection of mapped pages.
    pub fn protect(&self, lin: GuestLinear, len: u64, prot: PageProt) -> Result<(), WindowError> {
        Self::range(lin, len)?;
        // SAFETY: the range lies inside our reservation.
        let r = unsafe {
            libc::mprotect(
                self.base.add(lin.0 as usize).cast(),
                len as usize,
                prot.bits(),
            )
        };
        if r != 0 {
            return Err(WindowError::Host {
                op: "mprotect",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for LinearWindow {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the reservation made in `new`.
        unsafe { libc::munmap(self.reservation.cast(), RESERVATION) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestRam;

    #[test]
    fn chain_table_entries_keep_what_the_monitor_writes_per_window() {
        let mut a = LinearWindow::new().unwrap();
        let b = LinearWindow::new().unwrap();
        let last = CHAIN_SLOTS as u32 - 1;
        a.set_chain_entry(0, 0x7f00_1234_5678);
        a.set_chain_entry(last, 42);
        assert_eq!(a.chain_entry(0), 0x7f00_1234_5678);
        assert_eq!(a.chain_entry(last), 42);
        assert_eq!(b.chain_entry(0), 0, "another window's table is its own");
        // The table lies in the guard, clear of what folded addresses reach.
        assert!(CHAIN_TABLE_OFFSET + 8 * CHAIN_SLOTS as i64 <= -(1 << 29));
    }

    #[test]
    fn window_base_is_4gib_aligned() {
        let w = LinearWindow::new().unwrap();
        assert_eq!(w.base().0 % SPAN, 0);
    }

    #[test]
    fn window_maps_ram_at_linear_address() {
        let ram = GuestRam::new(1).unwrap();
        ram.write_u32(GuestPhys(0x2000), 0x1234_5678).unwrap();
        let w = LinearWindow::new().unwrap();
        w.map(
            GuestLinear(0x40_0000),
            ram.fd(),
            GuestPhys(0),
            1 << 20,
            PageProt::ReadWrite,
        )
        .unwrap();
        // SAFETY: the page was just mapped read-write.
        let v = unsafe { *((w.base().0 + 0x40_2000) as *const u32) };
        assert_eq!(v, 0x1234_5678);
        assert_eq!(
            w.linear_of(w.base().0 + 0x40_2000),
            Some(GuestLinear(0x40_2000))
        );
    }

    #[test]
    fn the_software_tlb_lies_in_the_guard_and_starts_empty() {
        let mut w = LinearWindow::new().unwrap();
        assert!(w.soft_ref().is_empty());
        w.soft().fill(5, 0x1234_5000, true);
        let tags = (w.base().0 as i64 + SOFT_TLB_OFFSET) as *const u64;
        // SAFETY: the read tags are the first table of the mapped tables.
        assert_eq!(unsafe { tags.add(5).read() }, crate::soft::tag_of(5));
        assert!(w.contains(tags as usize));
        assert_eq!(w.linear_of(tags as usize), None);
    }

    #[test]
    fn window_refuses_unaligned_or_oversized_ranges() {
        let w = LinearWindow::new().unwrap();
        assert!(w.protect(GuestLinear(1), 4096, PageProt::Read).is_err());
        assert!(w.unmap(GuestLinear(0xffff_f000), 0x2000).is_err());
    }
}
