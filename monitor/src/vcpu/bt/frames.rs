//! Guest frames and the linear window: the guest's page-table walk, shadow
//! fills, write tracing of frames that hold translated code, and the
//! monitor's own writes into guest RAM.
//!
//! Invariants:
//! - A frame in `code_frames` is mapped read-only at every linear page the
//!   reverse map knows for it (paging on) or at its identity page (paging
//!   off); untracing it kills its translations first.
//! - The window never maps more than the guest's page tables allowed at the
//!   last walk; changing the address space drops every mapping.

use super::BtCore;
use shadowmmu::{walk, Access, GuestLinear, GuestPhys, PageFault, PageProt, PagingMode, PAGE_SIZE};

impl BtCore {
    /// Whether guest paging is on.
    pub(super) fn paging(&self) -> bool {
        self.sys.paging()
    }

    fn paging_mode(&self) -> PagingMode {
        PagingMode {
            cr3: self.sys.cr3,
            pse: self.sys.cr4.contains(crate::cpu::Cr4::PSE),
            wp: self.sys.cr0.contains(crate::cpu::Cr0::WP),
        }
    }

    /// Translates a guest linear address as the guest's MMU would for an
    /// access at the CPL, setting accessed/dirty bits; identity when paging
    /// is off.
    pub(super) fn linear_to_phys(
        &mut self,
        lin: u32,
        write: bool,
    ) -> Result<u32, crate::cpu::Exception> {
        self.translate_linear(lin, write, self.sys.cpl == 3)
    }

    /// Like [`Self::linear_to_phys`] with explicit user/supervisor rights.
    pub(super) fn translate_linear(
        &mut self,
        lin: u32,
        write: bool,
        user: bool,
    ) -> Result<u32, crate::cpu::Exception> {
        if !self.paging() {
            return Ok(lin);
        }
        walk(
            &self.ram,
            self.paging_mode(),
            GuestLinear(lin),
            Access { write, user },
        )
        .map(|t| t.phys.0)
        .map_err(page_fault)
    }

    /// INVLPG or a CR3 write: with paging on, the shadow mappings go (all
    /// of them, for now; see docs/ARCHITECTURE.md).
    pub(super) fn invalidate_linear_page(&mut self) {
        if self.paging() {
            self.reset_address_space();
        }
    }

    /// Drops every shadow mapping and translation after the guest changed
    /// its address space (CR0.PG/WP, CR3, CR4 paging bits, INVLPG): the
    /// window is refilled lazily from the guest page tables on hidden
    /// faults.
    pub(super) fn reset_address_space(&mut self) {
        self.flush();
        self.code_frames.clear();
        self.rmap.clear();
        // Unmapping and mapping a reservation we own; a failure leaves the
        // window more restrictive, never less.
        let _ = self.window.unmap(GuestLinear(0), 1 << 32);
        if !self.paging() {
            let size = self.ram.size() as u64;
            let _ = self.window.map(
                GuestLinear(0),
                self.ram.fd(),
                GuestPhys(0),
                size,
                PageProt::ReadWrite,
            );
        }
    }

    pub(super) fn trace_code_frame(&mut self, frame: u32) {
        if (frame as usize) >= self.ram.size() / PAGE_SIZE as usize
            || !self.code_frames.insert(frame)
        {
            return;
        }
        if self.paging() {
            for lp in self.rmap.get(&frame).cloned().unwrap_or_default() {
                self.protect_page(lp, PageProt::Read);
            }
        } else {
            self.protect_page(frame, PageProt::Read);
        }
    }

    fn protect_page(&mut self, lpage: u32, prot: PageProt) {
        // A protection change of a page in our own reservation; if the host
        // refuses, the page keeps its old rights and the next write faults
        // again.
        let _ = self
            .window
            .protect(GuestLinear(lpage * PAGE_SIZE), u64::from(PAGE_SIZE), prot);
    }

    /// Kills the translations of `frame` and makes it writable again.
    pub(super) fn untrace_code_frame(&mut self, frame: u32) {
        if !self.code_frames.remove(&frame) {
            return;
        }
        self.cache.invalidate_frame(frame);
        self.ibtc.clear();
        self.pending_chain = None;
        if self.paging() {
            // Unmapped aliases refault and are mapped again with the rights
            // their page-table entries give.
            for lp in self.rmap.remove(&frame).unwrap_or_default() {
                let _ = self
                    .window
                    .unmap(GuestLinear(lp * PAGE_SIZE), u64::from(PAGE_SIZE));
            }
        } else {
            self.protect_page(frame, PageProt::ReadWrite);
        }
    }

    /// Writes guest-physical memory on behalf of the monitor or a device,
    /// invalidating translated code it overwrites.
    pub(super) fn write_phys(
        &mut self,
        addr: GuestPhys,
        data: &[u8],
    ) -> Result<(), shadowmmu::RamError> {
        if !data.is_empty() {
            let first = addr.frame();
            let last = (addr.0 as u64 + data.len() as u64 - 1) / u64::from(PAGE_SIZE);
            for f in first..=last.min(u64::from(u32::MAX)) as u32 {
                self.untrace_code_frame(f);
            }
        }
        self.ram.write(addr, data)
    }

    /// Maps linear page `lpage` to guest frame `frame`: writable only when
    /// the walk found it writable and dirty and it holds no translated code.
    pub(super) fn fill_shadow(&mut self, lpage: u32, frame: u32, write: bool) {
        let acc = Access {
            write,
            user: self.sys.cpl == 3,
        };
        let rw = walk(
            &self.ram,
            self.paging_mode(),
            GuestLinear(lpage * PAGE_SIZE),
            acc,
        )
        .is_ok_and(|t| t.writable_and_dirty);
        let prot = if rw && !self.code_frames.contains(&frame) {
            PageProt::ReadWrite
        } else {
            PageProt::Read
        };
        // A refused mapping leaves the page unmapped: the access faults
        // again and is reported.
        let _ = self.window.map(
            GuestLinear(lpage * PAGE_SIZE),
            self.ram.fd(),
            GuestPhys(frame * PAGE_SIZE),
            u64::from(PAGE_SIZE),
            prot,
        );
        let aliases = self.rmap.entry(frame).or_default();
        if !aliases.contains(&lpage) {
            aliases.push(lpage);
        }
    }
}

/// A failed walk as the guest exception it is.
fn page_fault(pf: PageFault) -> crate::cpu::Exception {
    crate::cpu::Exception::PageFault {
        addr: pf.addr.0,
        error: pf.error_code,
    }
}
