//! Guest frames and the linear window: the guest's page-table walk, shadow
//! fills, write tracing of frames that hold translated code, and the
//! monitor's own writes into guest RAM.
//!
//! Invariants:
//! - A frame in `code_frames` is mapped read-only at every linear page the
//!   reverse map knows for it (paging on) or at its identity page (paging
//!   off); untracing it kills its translations first.
//! - Each view (supervisor, user) never maps more than the guest's page
//!   tables allowed its privilege at the last walk; changing the address
//!   space drops every mapping of both. With paging off only the supervisor
//!   view is used (identity, all of RAM) and the user view is empty.
//! - The reverse map names every (view, linear page) mapped to a frame, and
//!   `shadow` maps each such (view, linear page) back to its frame.
//! - `code_pages` names, for each linear page translations were made from,
//!   their frames; `large_regions` the 4 MiB regions a 4 MiB page was used
//!   in since the last reset (INVLPG there drops the whole region).

use super::{BtCore, SUPERVISOR_VIEW, USER_VIEW};
use shadowmmu::LinearWindow;
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
        .map(|t| {
            if t.large {
                self.large_regions.insert(lin >> 22);
            }
            t.phys.0
        })
        .map_err(page_fault)
    }

    /// A CR3 write or a paging-mode change: with paging on, the shadow
    /// mappings go (all of them, for now; see docs/ARCHITECTURE.md).
    pub(super) fn address_space_changed(&mut self) {
        if self.paging() {
            self.reset_address_space();
        }
    }

    /// INVLPG: drops what the shadow MMU holds for the page of `lin` (all
    /// of the 4 MiB region when a 4 MiB page was mapped in it): its
    /// mappings in both views and the translations made from it. Other
    /// pages keep theirs, as other TLB entries survive INVLPG.
    pub(super) fn invalidate_page(&mut self, lin: u32) {
        if !self.paging() {
            return;
        }
        self.stats.page_invalidations += 1;
        let region = lin >> 22;
        let pages = if self.large_regions.remove(region) {
            region << 10..(region + 1) << 10
        } else {
            lin >> 12..(lin >> 12) + 1
        };
        let start = GuestLinear(pages.start * PAGE_SIZE);
        let len = u64::from(pages.end - pages.start) * u64::from(PAGE_SIZE);
        for view in &self.views {
            // Unmapping part of our own reservation.
            let _ = view.unmap(start, len);
        }
        for lpage in pages {
            for view in [SUPERVISOR_VIEW, USER_VIEW] {
                let alias = Alias::new(view, lpage);
                if let Some(frame) = self.shadow.remove(&alias) {
                    if let Some(aliases) = self.rmap.get_mut(&frame) {
                        aliases.retain(|a| *a != alias);
                    }
                }
            }
            for frame in self.code_pages.remove(&lpage).unwrap_or_default() {
                self.untrace_code_frame(frame);
            }
        }
    }

    /// Notes that translations were made from linear page `lpage` at
    /// `frame`, for INVLPG.
    pub(super) fn note_code_page(&mut self, lpage: u32, frame: u32) {
        let frames = self.code_pages.entry(lpage).or_default();
        if !frames.contains(&frame) {
            frames.push(frame);
        }
    }

    /// The view translated code runs in now.
    pub(super) fn window(&self) -> &LinearWindow {
        &self.views[self.view]
    }

    /// Points the window register of translated code at the view the
    /// current privilege runs in.
    pub(super) fn select_view(&mut self) {
        self.view = super::view_of(&self.sys);
        self.state.window = self.views[self.view].base().0 as u64;
    }

    /// Drops every shadow mapping and translation after the guest changed
    /// its address space (CR0.PG/WP, CR3, CR4 paging bits, INVLPG): both
    /// views are refilled lazily from the guest page tables on hidden
    /// faults.
    pub(super) fn reset_address_space(&mut self) {
        self.flush();
        self.code_frames.clear();
        self.rmap.clear();
        self.shadow.clear();
        self.large_regions.clear();
        // Unmapping and mapping a reservation we own; a failure leaves the
        // window more restrictive, never less.
        for view in &self.views {
            let _ = view.unmap(GuestLinear(0), 1 << 32);
        }
        self.select_view();
        if !self.paging() {
            let size = self.ram.size() as u64;
            let _ = self.views[SUPERVISOR_VIEW].map(
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
            for alias in self.rmap.get(&frame).cloned().unwrap_or_default() {
                self.protect_page(alias, PageProt::Read);
            }
        } else {
            self.protect_page(Alias::new(SUPERVISOR_VIEW, frame), PageProt::Read);
        }
    }

    fn protect_page(&mut self, alias: Alias, prot: PageProt) {
        // A protection change of a page in our own reservation; if the host
        // refuses, the page keeps its old rights and the next write faults
        // again.
        let _ = self.views[alias.view()].protect(
            GuestLinear(alias.lpage() * PAGE_SIZE),
            u64::from(PAGE_SIZE),
            prot,
        );
    }

    /// Kills the translations of `frame` and makes it writable again.
    pub(super) fn untrace_code_frame(&mut self, frame: u32) {
        if !self.code_frames.remove(frame) {
            return;
        }
        self.cache.invalidate_frame(frame);
        self.ibtc.clear();
        self.pending_chain = None;
        if self.paging() {
            // Unmapped aliases refault and are mapped again with the rights
            // their page-table entries give.
            for alias in self.rmap.remove(&frame).unwrap_or_default() {
                let _ = self.views[alias.view()]
                    .unmap(GuestLinear(alias.lpage() * PAGE_SIZE), u64::from(PAGE_SIZE));
            }
        } else {
            self.protect_page(Alias::new(SUPERVISOR_VIEW, frame), PageProt::ReadWrite);
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

    /// Maps linear page `lpage` to guest frame `frame` in the current view:
    /// writable only when the walk found it writable and dirty for the
    /// view's privilege and it holds no translated code.
    pub(super) fn fill_shadow(&mut self, lpage: u32, frame: u32, write: bool) {
        let acc = Access {
            write,
            user: self.view == USER_VIEW,
        };
        let walked = walk(
            &self.ram,
            self.paging_mode(),
            GuestLinear(lpage * PAGE_SIZE),
            acc,
        );
        if walked.is_ok_and(|t| t.large) {
            self.large_regions.insert(lpage >> 10);
        }
        let rw = walked.is_ok_and(|t| t.writable_and_dirty);
        let prot = if rw && !self.code_frames.contains(frame) {
            PageProt::ReadWrite
        } else {
            PageProt::Read
        };
        // A refused mapping leaves the page unmapped: the access faults
        // again and is reported.
        let _ = self.window().map(
            GuestLinear(lpage * PAGE_SIZE),
            self.ram.fd(),
            GuestPhys(frame * PAGE_SIZE),
            u64::from(PAGE_SIZE),
            prot,
        );
        let alias = Alias::new(self.view, lpage);
        if let Some(old) = self.shadow.insert(alias, frame) {
            if old != frame {
                if let Some(aliases) = self.rmap.get_mut(&old) {
                    aliases.retain(|a| *a != alias);
                }
            }
        }
        let aliases = self.rmap.entry(frame).or_default();
        if !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
}

/// A linear page of one view, as the reverse map keeps it: the page number
/// (20 bits) with the view in bit 31.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Alias(u32);

impl Alias {
    const USER_BIT: u32 = 1 << 31;

    fn new(view: usize, lpage: u32) -> Alias {
        Alias(lpage | if view == USER_VIEW { Self::USER_BIT } else { 0 })
    }

    fn view(self) -> usize {
        if self.0 & Self::USER_BIT != 0 {
            USER_VIEW
        } else {
            SUPERVISOR_VIEW
        }
    }

    fn lpage(self) -> u32 {
        self.0 & !Self::USER_BIT
    }
}

/// A failed walk as the guest exception it is.
fn page_fault(pf: PageFault) -> crate::cpu::Exception {
    crate::cpu::Exception::PageFault {
        addr: pf.addr.0,
        error: pf.error_code,
    }
}
