//! Guest frames and the linear windows: the guest's page-table walk, shadow
//! fills, the address spaces cached per page directory, and the frame
//! watcher's consequences (write protection of frames holding translated
//! code or page tables, invalidation of the mappings a page-table write
//! changed), for translated stores and the monitor's own writes alike.
//!
//! Invariants:
//! - A frame the watcher write-protects (`FrameWatcher::write_protected`)
//!   is mapped read-only at every alias the reverse map knows for it in
//!   the current space (paging on) or at its identity page (paging off);
//!   in a space that is not current, at every such alias but those listed
//!   in the space's `unprotected`, which are protected before the space
//!   becomes current again (no code runs in it meanwhile, and the monitor
//!   reaches guest memory through RAM, not through windows). Exception: a
//!   frame protected only as the current directory may stay writable in
//!   other spaces (it goes lazy before another space becomes current).
//!   Untracing a frame for code kills its translations first.
//! - Each view's `shadow` says which of its pages are mapped writable: a
//!   page it calls read-only is read-only in the host (the monitor tells
//!   the watcher about every writable mapping it makes).
//! - Each view of each cached space never maps more than the guest's page
//!   tables allowed its privilege at the last walk, except for what an
//!   out-of-sync leaf table changed since its last resync (a TLB could
//!   hold as much; every guest TLB flush resyncs those tables first), what
//!   a lazy directory of a space that is not current changed (entering the
//!   space compares it first), and what a retired space keeps (compared
//!   with the new directory before it serves one).
//! - Every table a walk for code or data went through is watched for the
//!   current space, so an indirect-branch entry of a page dies (or is
//!   re-checked, for the shared table) when its mapping changes; the
//!   shared table's global entries are also re-checked at INVLPG of their
//!   page and at a CR4.PGE change.
//! - The reverse map names every (space, view, linear page) mapped to a
//!   frame, and each space's `shadow` maps it back to the frame.
//! - With paging off only the unpaged space exists: its supervisor view
//!   maps all of RAM at linear = physical, its user view is empty.

use super::branch_table::{BranchTable, Scope};
use super::spaces::{self, AddressSpace, RETIRED_ROOT, UNPAGED_ROOT};
use super::{BtCore, SUPERVISOR_VIEW, USER_VIEW};
use shadowmmu::{
    walk, Access, Consequences, GuestLinear, GuestPhys, Invalidation, LinearWindow, PageFault,
    PageProt, PagingMode, SpaceId, TableUse, Translated, PAGE_SIZE,
};

/// Pages on each side of a faulting 4 KiB page that one fill may also map
/// (`BtCore::fill_around`).
const FILL_AROUND: u32 = 15;
/// A page-table entry's accessed bit.
const ENTRY_ACCESSED: u32 = 0x20;
/// The bits of a page-table entry a page mapped with a filled page must
/// share with its entry: present, R/W, U/S, accessed, dirty, global.
const SAME_FILL_BITS: u32 = 0x167;

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

    /// [`Self::linear_to_phys`] for fetching code at `lin`: the tables of
    /// the walk are watched for the current space as a fill's are, so
    /// that a change of the mapping reaches the translations' indirect-
    /// branch entries even when no data access filled the page.
    pub(super) fn code_to_phys(&mut self, lin: u32) -> Result<u32, crate::cpu::Exception> {
        if !self.paging() {
            return Ok(lin);
        }
        let t = self
            .walk_noting(lin, false, self.sys.cpl == 3)
            .map_err(page_fault)?;
        self.watch_walked(lin >> 12, &t);
        Ok(t.phys.0)
    }

    /// Records the current space's uses of the tables `walked` went
    /// through for linear page `lpage`.
    pub(super) fn watch_walked(&mut self, lpage: u32, walked: &Translated) {
        let walk = WatchedWalk {
            space: self.space,
            directory: walked.pde.table_frame(),
            leaf: walked.pte.map(|pte| (pte.table_frame(), lpage >> 10)),
            epoch: self.watcher.epoch(),
        };
        if self.last_watched == Some(walk) {
            // Watched so already, and nothing happened since that would
            // make watching them again do anything.
            return;
        }
        self.watch_walked_tables(lpage, walked);
        self.last_watched = Some(WatchedWalk {
            epoch: self.watcher.epoch(),
            ..walk
        });
    }

    fn watch_walked_tables(&mut self, lpage: u32, walked: &Translated) {
        let me = SpaceId(self.space as u32);
        let c = self
            .watcher
            .watch(walked.pde.table_frame(), me, TableUse::Directory, &self.ram);
        self.apply(c);
        if let Some(pte) = walked.pte {
            let usage = TableUse::Leaf {
                region: lpage >> 10,
            };
            let c = self.watcher.watch(pte.table_frame(), me, usage, &self.ram);
            self.apply(c);
        }
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
        let paging = self.paging_registers();
        if let Some(frame) = self.monitor_tlb.get(paging, lin >> 12, write, user) {
            return Ok(frame << 12 | lin & 0xfff);
        }
        let phys = self
            .walk_noting(lin, write, user)
            .map(|t| t.phys.0)
            .map_err(page_fault)?;
        self.monitor_tlb
            .insert(paging, lin >> 12, phys >> 12, write, user);
        Ok(phys)
    }

    /// CR0, CR3 and CR4: what a walk depends on besides the tables.
    fn paging_registers(&self) -> [u32; 3] {
        [self.sys.cr0.bits(), self.sys.cr3, self.sys.cr4.bits()]
    }

    /// Walks the guest page tables, telling the watcher about the accessed
    /// and dirty bits the walk set.
    fn walk_noting(&mut self, lin: u32, write: bool, user: bool) -> Result<Translated, PageFault> {
        let t = walk(
            &self.ram,
            self.paging_mode(),
            GuestLinear(lin),
            Access { write, user },
        )?;
        let c = self.watcher.note_walked_entry(t.pde.addr, t.pde.value);
        self.apply(c);
        if let Some(pte) = t.pte {
            let c = self.watcher.note_walked_entry(pte.addr, pte.value);
            self.apply(c);
        }
        Ok(t)
    }

    /// MOV to CR3/CR0/CR4 that may flush the guest's TLB: out-of-sync
    /// tables are brought back in sync (the new address space, if any, is
    /// switched to by [`Self::after_system_change`]).
    pub(super) fn address_space_changed(&mut self) {
        if self.paging() {
            self.guest_tlb_flush();
        }
    }

    /// INVLPG: the guest wants the page of `lin` seen afresh. Mappings of
    /// in-sync tables already follow the guest's writes, so only the entry
    /// of `lin` in an out-of-sync table needs comparing.
    pub(super) fn invalidate_page(&mut self, lin: u32) {
        self.monitor_tlb.clear();
        if !self.paging() {
            return;
        }
        self.stats.page_invalidations += 1;
        let c = self.watcher.sync_entry(
            SpaceId(self.space as u32),
            self.space().root,
            lin,
            &self.ram,
        );
        self.apply(c);
        // A global entry survives CR3 writes but not an INVLPG of its page
        // (of any page of its 4 MiB page): the shared table's entries of
        // the region are checked against the current tables.
        self.recheck_shared_pages(lin >> 22 << 10, 1024);
    }

    /// Drops the shared table's entries of the `pages` pages from `first`
    /// whose mapping changed: the ones that no longer map, as a global
    /// page in the current page tables, the frame they mapped when the
    /// entries were made. (A space that dies, or changes a mapping the
    /// current one does not share, leaves the global pages' entries alone.)
    pub(super) fn recheck_shared_pages(&mut self, first: u32, pages: u32) {
        for (lpage, frame) in self.shared_ibtc.pages_in(first, pages) {
            let still = frame.is_some() && self.global_frame(lpage << 12) == frame;
            if !still {
                self.shared_ibtc.drop_pages(lpage, 1);
            }
        }
    }

    /// A guest TLB flush (CR3 write, INVLPG, CR4.PGE change): every
    /// out-of-sync table is compared with its snapshot again.
    pub(super) fn guest_tlb_flush(&mut self) {
        self.monitor_tlb.clear();
        let c = self.watcher.resync_all(&self.ram);
        self.apply(c);
    }

    /// The current address space.
    pub(super) fn space(&self) -> &AddressSpace {
        self.spaces[self.space]
            .as_ref()
            .expect("the current space exists")
    }

    pub(super) fn space_mut(&mut self) -> &mut AddressSpace {
        self.spaces[self.space]
            .as_mut()
            .expect("the current space exists")
    }

    /// The view translated code runs in now.
    pub(super) fn window(&self) -> &LinearWindow {
        &self.space().views[self.view]
    }

    /// Points the window register of translated code at the view the
    /// current privilege runs in, in the current space.
    pub(super) fn select_view(&mut self) {
        self.view = super::view_of(&self.sys);
        let bases = self.space().views.each_ref().map(|v| v.base().0 as u64);
        self.state.window = bases[self.view];
        self.state.view_bases = bases;
    }

    /// Points translated code at the current space's indirect-branch
    /// table, unless an exit request swapped in the empty one (serving the
    /// request restores the current space's).
    fn select_ibtc(&mut self, previous: u64) {
        let now = self.space().ibtc.addr();
        let _ = self.state.ibtc.compare_exchange(
            previous,
            now,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// The root the current paging state names.
    fn current_root(&self) -> u32 {
        if self.paging() {
            self.sys.cr3 >> 12
        } else {
            UNPAGED_ROOT
        }
    }

    /// After a CR3 change with paging on: switches to the cached space of
    /// the new page directory (made if needed), keeping every other
    /// space's mappings.
    pub(super) fn switch_address_space(&mut self) {
        self.guest_tlb_flush();
        if self.sys.cr4.contains(crate::cpu::Cr4::PGE) {
            self.shared_ibtc.drop_local();
        } else {
            // Without PGE no mapping is global: entries made while it was
            // on (a toggle is off-then-on) hold in the old space only.
            self.shared_ibtc.drop_all();
        }
        let root = self.current_root();
        let previous = self.space().ibtc.addr();
        self.clock += 1;
        let slot = match self
            .spaces
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.root == root))
        {
            Some(slot) => slot,
            None => match self.new_space(root) {
                Some(slot) => slot,
                None => return,
            },
        };
        let left = (slot != self.space).then(|| {
            let root = self.space().root;
            (root, self.frame_writable_anywhere(root))
        });
        self.space = slot;
        self.protect_deferred();
        let now = self.clock;
        self.space_mut().last_used = now;
        self.stats.space_switches += 1;
        // The space's directory, if it went lazy while another space ran,
        // is compared with what its mappings were built from.
        let c = self
            .watcher
            .set_current_space(SpaceId(slot as u32), root, left, &self.ram);
        self.apply(c);
        for frame in self.watcher.take_protect_elsewhere() {
            self.protect_elsewhere(frame);
        }
        self.select_view();
        self.select_ibtc(previous);
    }

    /// Makes a space for `root` in a free slot (dropping the least
    /// recently used one when all are taken); `None` if the host refused.
    fn new_space(&mut self, root: u32) -> Option<usize> {
        if let Some(slot) = self.newest_retired() {
            self.recycle_space(slot, root);
            return Some(slot);
        }
        let slot = match self.spaces.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if self.spaces.len() < spaces::MAX_SPACES => {
                self.spaces.push(None);
                self.spaces.len() - 1
            }
            None => {
                let victim = self.least_recently_used()?;
                self.retire_space(victim);
                if self.spaces[victim].as_ref().is_some_and(|s| s.retired) {
                    self.recycle_space(victim, root);
                    return Some(victim);
                }
                victim
            }
        };
        match AddressSpace::new(root, self.clock, self.chains.stubs()) {
            Ok(space) => {
                self.spaces[slot] = Some(space);
                self.stats.spaces_created += 1;
                Some(slot)
            }
            Err(e) => {
                self.deferred_stop
                    .get_or_insert(crate::vcpu::StopReason::Internal(format!(
                        "the host refused a window for a new guest address space: {e}"
                    )));
                None
            }
        }
    }

    /// The retired space retired last, if any.
    fn newest_retired(&self) -> Option<usize> {
        self.spaces
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.retired))
            .max_by_key(|(_, s)| s.as_ref().map_or(0, |s| s.last_used))
            .map(|(i, _)| i)
    }

    /// A space whose directory died (or that is evicted) keeps its 4 MiB
    /// regions, and the regions it filled through page tables other spaces
    /// share for the same region (a kernel's: every directory points at
    /// them), for the next new directory, if it has any and fewer than
    /// [`spaces::MAX_RETIRED`] are kept; else it is dropped. Everything
    /// else it maps goes, and so do its uses of watched tables but those
    /// shared ones, which keep what it kept coherent meanwhile (every
    /// region kept is checked against the next directory's entries).
    fn retire_space(&mut self, slot: usize) {
        debug_assert_ne!(slot, self.space);
        let retired = self.spaces.iter().flatten().filter(|s| s.retired).count();
        let keep = self.spaces[slot].as_ref().is_some_and(|s| {
            (!s.large.is_empty() || !s.leaf_pdes.is_empty()) && s.root != UNPAGED_ROOT
        });
        if !keep || retired >= spaces::MAX_RETIRED {
            self.drop_space(slot);
            return;
        }
        let (c, shared) = self
            .watcher
            .unwatch_space_but_shared_leaves(SpaceId(slot as u32));
        self.apply(c);
        self.keep_shared_leaves(slot, shared);
        let Some(space) = self.spaces[slot].as_mut() else {
            return;
        };
        space.root = RETIRED_ROOT;
        space.retired = true;
        space.last_used = self.clock;
        space.clear_ibtc();
        for view in space.views.iter_mut() {
            view.soft().clear();
        }
        let mut kept: Vec<u32> = space.large.keys().copied().collect();
        kept.extend(space.leaf_pdes.keys().copied());
        kept.sort_unstable();
        self.stats.spaces_retired += 1;
        // Every region but the large ones and those of shared page tables,
        // in both views; the user view entirely.
        let mut region = 0u32;
        for r in kept.iter().copied().chain(std::iter::once(1024)) {
            if r > region {
                self.drop_pages(slot, region << 10, (r - region) << 10);
            }
            region = r + 1;
        }
        let user_pages = self.spaces[slot]
            .as_ref()
            .map_or_else(Vec::new, |s| s.shadow[USER_VIEW].all());
        for (lpage, _) in user_pages {
            self.drop_pages_of_view(Alias::new(slot, USER_VIEW, lpage));
        }
    }

    /// Of the leaf uses the watcher kept for retiring space `slot` (region,
    /// table frame: tables other spaces use for the same region), keeps
    /// those of regions the space filled from that very table, with the
    /// directory entry they were filled from; gives up the others.
    fn keep_shared_leaves(&mut self, slot: usize, shared: Vec<(u32, u32)>) {
        let Some(space) = self.spaces[slot].as_mut() else {
            return;
        };
        let mut kept = std::collections::BTreeMap::new();
        let mut given_up = Vec::new();
        for (region, table) in shared {
            match space.leaf_pdes.get(&region) {
                Some(pde) if pde >> 12 == table => {
                    kept.insert(region, *pde);
                }
                _ => given_up.push((region, table)),
            }
        }
        space.leaf_pdes = kept;
        for (region, table) in given_up {
            let c = self
                .watcher
                .end_leaf_use(table, SpaceId(slot as u32), region);
            self.apply(c);
        }
    }

    /// Serves the directory at `root` with retired space `slot`: each of
    /// its 4 MiB regions, and each region it kept from a shared page
    /// table, stays if the new directory's entry for it is the one it was
    /// filled from, else it goes (with its use of the table); the directory
    /// is watched at once (the regions kept depend on it).
    fn recycle_space(&mut self, slot: usize, root: u32) {
        let Some(space) = self.spaces[slot].as_ref() else {
            return;
        };
        let changed = |r: u32, pde: u32| {
            self.ram
                .read_u32(GuestPhys(root * PAGE_SIZE + r * 4))
                .map_or(true, |now| now != pde)
        };
        let stale: Vec<u32> = space
            .large
            .iter()
            .filter(|(r, pde)| changed(**r, **pde))
            .map(|(r, _)| *r)
            .collect();
        let stale_leaves: Vec<(u32, u32)> = space
            .leaf_pdes
            .iter()
            .filter(|(r, pde)| changed(**r, **pde))
            .map(|(r, pde)| (*r, *pde))
            .collect();
        for r in stale {
            self.drop_pages(slot, r << 10, 1024);
        }
        for (r, pde) in stale_leaves {
            self.drop_pages(slot, r << 10, 1024);
            if let Some(space) = self.spaces[slot].as_mut() {
                space.leaf_pdes.remove(&r);
            }
            let c = self
                .watcher
                .end_leaf_use(pde >> 12, SpaceId(slot as u32), r);
            self.apply(c);
        }
        let now = self.clock;
        if let Some(space) = self.spaces[slot].as_mut() {
            space.root = root;
            space.retired = false;
            space.last_used = now;
            self.stats.spaces_recycled += 1;
            self.stats.shared_regions_recycled += space.leaf_pdes.len() as u64;
        }
        let c = self
            .watcher
            .watch(root, SpaceId(slot as u32), TableUse::Directory, &self.ram);
        self.apply(c);
    }

    /// The cached space used least recently, other than the current one.
    fn least_recently_used(&self) -> Option<usize> {
        self.spaces
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != self.space && s.is_some())
            .min_by_key(|(_, s)| s.as_ref().map_or(0, |s| s.last_used))
            .map(|(i, _)| i)
    }

    /// Drops a cached space that is not the current one: its windows, its
    /// table, its reverse-map entries and its uses of watched tables.
    fn drop_space(&mut self, slot: usize) {
        debug_assert_ne!(slot, self.space);
        let Some(space) = self.spaces[slot].take() else {
            return;
        };
        for view in [SUPERVISOR_VIEW, USER_VIEW] {
            for (lpage, frame) in space.shadow[view].all() {
                self.rmap_remove(frame, Alias::new(slot, view, lpage));
            }
        }
        self.stats.spaces_evicted += 1;
        drop(space);
        let c = self.watcher.unwatch_space(SpaceId(slot as u32));
        self.apply(c);
    }

    /// Drops every mapping of the current space (it stays cached).
    fn empty_current_space(&mut self) {
        let slot = self.space;
        self.drop_pages(slot, 0, 1 << 20);
        let c = self.watcher.unwatch_space(SpaceId(slot as u32));
        self.apply(c);
    }

    /// Drops every cached space and makes a fresh one for the current
    /// paging state (a paging-mode change: CR0.PG or WP, CR4.PSE or PAE),
    /// with every translation, since their chains follow the old rules.
    pub(super) fn reset_address_space(&mut self) {
        self.flush();
        self.stats.mmu_resets += 1;
        // The old space's table: if an exit request swapped in the empty
        // one, `select_ibtc` leaves it for the request's service.
        let previous = self.space().ibtc.addr();
        let c = self.watcher.unwatch_all();
        drop(c);
        self.watcher.clear_code();
        self.rmap.clear();
        self.adaptive.forget_soft_writes();
        let root = self.current_root();
        self.clock += 1;
        let fresh = match AddressSpace::new(root, self.clock, self.chains.stubs()) {
            Ok(s) => s,
            Err(e) => {
                self.deferred_stop
                    .get_or_insert(crate::vcpu::StopReason::Internal(format!(
                        "the host refused a window for the guest address space: {e}"
                    )));
                return;
            }
        };
        // The old current space goes last: translated code's table
        // pointer may still name its table until `select_ibtc`.
        let old = self.spaces[self.space].replace(fresh);
        for (i, s) in self.spaces.iter_mut().enumerate() {
            if i != self.space {
                *s = None;
            }
        }
        self.stats.spaces_created += 1;
        let c = self
            .watcher
            .set_current_space(SpaceId(self.space as u32), root, None, &self.ram);
        self.apply(c);
        // No space but this one is left: nothing to protect elsewhere.
        drop(self.watcher.take_protect_elsewhere());
        self.select_view();
        self.select_ibtc(previous);
        drop(old);
        if !self.paging() {
            let size = self.ram.size() as u64;
            // A refused mapping leaves guest RAM unreachable: every access
            // faults and is reported as outside RAM.
            let _ = self.space().views[SUPERVISOR_VIEW].map(
                GuestLinear(0),
                self.ram.fd(),
                GuestPhys(0),
                size,
                PageProt::ReadWrite,
            );
        }
    }

    /// Applies what the watcher decided.
    pub(super) fn apply(&mut self, c: Consequences) {
        if c.is_empty() {
            return;
        }
        if !c.invalidations.is_empty() {
            // A mapping the guest changed: what the monitor's own TLB
            // holds may be what changed (a hardware TLB could keep it until
            // the guest's flush; dropping it is never wrong).
            self.monitor_tlb.clear();
        }
        for inv in coalesce(c.invalidations) {
            self.invalidate(inv);
        }
        for frame in c.protect {
            self.protect_frame(frame);
        }
        for frame in c.release {
            self.release_frame(frame);
        }
        for SpaceId(slot) in c.zap {
            let slot = slot as usize;
            if slot == self.space {
                self.empty_current_space();
            } else if self.spaces.get(slot).is_some_and(Option::is_some) {
                self.retire_space(slot);
            }
        }
    }

    fn invalidate(&mut self, inv: Invalidation) {
        let slot = inv.space.0 as usize;
        if self.spaces.get(slot).is_some_and(Option::is_some) {
            self.drop_pages(slot, inv.first_page, inv.pages);
        }
    }

    /// Unmaps `pages` linear pages from `first` in both views of a space,
    /// with their indirect-branch entries.
    fn drop_pages(&mut self, slot: usize, first: u32, pages: u32) {
        self.recheck_shared_pages(first, pages);
        let Some(space) = self.spaces[slot].as_mut() else {
            return;
        };
        let mut gone = Vec::new();
        let mut calls = 0;
        for view in [SUPERVISOR_VIEW, USER_VIEW] {
            super::chains::unchain_range(space, view, first, pages, self.chains.stubs());
            space.views[view].soft().drop_range(first, pages);
            let mapped = if pages == 1 {
                space.shadow[view]
                    .get(first)
                    .map(|frame| vec![(first, frame)])
                    .unwrap_or_default()
            } else {
                space.shadow[view].in_range(first, pages)
            };
            if mapped.is_empty() {
                continue;
            }
            for (lpage, frame) in mapped {
                space.shadow[view].remove(lpage);
                gone.push((frame, Alias::new(slot, view, lpage)));
            }
            let len = u64::from(pages) * u64::from(PAGE_SIZE);
            // Unmapping part of the space's own reservation.
            let _ = space.views[view].unmap(GuestLinear(first * PAGE_SIZE), len);
            calls += 1;
        }
        space.ibtc.drop_pages(first, pages);
        let end = u64::from(first) + u64::from(pages);
        let covers_regions = pages >= 1024 && !space.large.is_empty();
        let whole: Vec<u32> = if covers_regions {
            space
                .large
                .range(first >> 10..)
                .map(|(r, _)| *r)
                .take_while(|r| u64::from(*r) << 10 < end)
                .filter(|r| *r << 10 >= first && (u64::from(*r) + 1) << 10 <= end)
                .collect()
        } else {
            Vec::new()
        };
        for r in whole {
            space.large.remove(&r);
            space.leaf_pdes.remove(&r);
        }
        self.window_calls += calls;
        for (frame, alias) in gone {
            self.rmap_remove(frame, alias);
        }
    }

    fn rmap_remove(&mut self, frame: u32, alias: Alias) {
        if let Some(aliases) = self.rmap.get_mut(&frame) {
            aliases.retain(|a| *a != alias);
            if aliases.is_empty() {
                self.rmap.remove(&frame);
            }
        }
    }

    /// Write-protects every mapping of `frame`.
    pub(super) fn protect_frame(&mut self, frame: u32) {
        self.drop_soft_writes_of(frame);
        if !self.paging() {
            self.protect_alias(
                Alias::new(self.space, SUPERVISOR_VIEW, frame),
                PageProt::Read,
            );
            return;
        }
        let only_current_directory = self.watcher.protected_only_as_current_directory(frame);
        for alias in self.rmap.get(&frame).cloned().unwrap_or_default() {
            if !self.alias_writable(alias) || (alias.slot() != self.space && only_current_directory)
            {
                // Read-only already, or in a space where it goes lazy
                // before anything runs there.
                continue;
            }
            if alias.slot() == self.space {
                self.protect_alias(alias, PageProt::Read);
            } else {
                self.protect_alias_later(alias);
            }
        }
    }

    /// Write-protects `alias`, of a space that is not current, when that
    /// space becomes current again (`protect_deferred`; nothing runs in it
    /// meanwhile), or at once if the space's list is full.
    fn protect_alias_later(&mut self, alias: Alias) {
        let deferred = self
            .spaces
            .get_mut(alias.slot())
            .and_then(Option::as_mut)
            .filter(|space| space.unprotected.len() < spaces::MAX_UNPROTECTED)
            .map(|space| space.unprotected.push(alias))
            .is_some();
        if !deferred {
            self.protect_alias(alias, PageProt::Read);
        }
    }

    /// Whether some host mapping of `frame` may be written.
    fn frame_writable_anywhere(&self, frame: u32) -> bool {
        self.soft_writable(frame)
            || self
                .rmap
                .get(&frame)
                .is_some_and(|aliases| aliases.iter().any(|a| self.alias_writable(*a)))
    }

    /// Write-protects the writable mappings of `frame` in the spaces that
    /// are not current, before each becomes current again.
    fn protect_elsewhere(&mut self, frame: u32) {
        // Software-TLB write entries too (in every space: the current
        // one's refill through a walk the watcher sees).
        self.drop_soft_writes_of(frame);
        for alias in self.rmap.get(&frame).cloned().unwrap_or_default() {
            if alias.slot() != self.space && self.alias_writable(alias) {
                self.protect_alias_later(alias);
            }
        }
    }

    /// Whether the host mapping of `alias` may be written.
    fn alias_writable(&self, alias: Alias) -> bool {
        self.spaces
            .get(alias.slot())
            .and_then(Option::as_ref)
            .is_some_and(|space| space.shadow[alias.view()].writable(alias.lpage()))
    }

    /// Write-protects the aliases of the current space that
    /// [`Self::protect_frame`] left for when it became current, where
    /// their frame is still to be kept read-only (write-protected, or a
    /// lazy directory: `FrameWatcher::keeps_read_only`).
    fn protect_deferred(&mut self) {
        let mut pending = std::mem::take(&mut self.space_mut().unprotected);
        pending.sort_unstable();
        pending.dedup();
        pending.retain(|alias| {
            let shadow = &self.space().shadow[alias.view()];
            let frame = shadow.get(alias.lpage());
            shadow.writable(alias.lpage()) && frame.is_some_and(|f| self.watcher.keeps_read_only(f))
        });
        for (first, pages) in alias_runs(&pending) {
            self.protect_run(first, pages, PageProt::Read);
        }
    }

    /// Lets `frame` be written again: its mappings are dropped and refault
    /// with the rights their entries give.
    fn release_frame(&mut self, frame: u32) {
        if !self.paging() {
            self.protect_alias(
                Alias::new(self.space, SUPERVISOR_VIEW, frame),
                PageProt::ReadWrite,
            );
            return;
        }
        for alias in self.rmap.get(&frame).cloned().unwrap_or_default() {
            self.drop_pages_of_view(alias);
        }
    }

    /// Unmaps one alias (one view's page of one space).
    fn drop_pages_of_view(&mut self, alias: Alias) {
        let Some(space) = self.spaces.get_mut(alias.slot()).and_then(Option::as_mut) else {
            return;
        };
        space.views[alias.view()].soft().drop_page(alias.lpage());
        super::chains::unchain_range(space, alias.view(), alias.lpage(), 1, self.chains.stubs());
        if let Some(frame) = space.shadow[alias.view()].remove(alias.lpage()) {
            // Unmapping part of the space's own reservation.
            let _ = space.views[alias.view()]
                .unmap(GuestLinear(alias.lpage() * PAGE_SIZE), u64::from(PAGE_SIZE));
            self.window_calls += 1;
            self.rmap_remove(frame, alias);
        }
    }

    /// Changes the rights of one mapped alias (never of a page that is
    /// not mapped: that would make the reservation itself accessible).
    fn protect_alias(&mut self, alias: Alias, prot: PageProt) {
        self.protect_run(alias, 1, prot);
    }

    /// Changes the rights of `pages` aliases from `first` (same space and
    /// view, consecutive linear pages) in one host call; nothing happens
    /// unless every one of them is mapped.
    fn protect_run(&mut self, first: Alias, pages: u32, prot: PageProt) {
        let ram_frames = self.ram.frames();
        let Some(space) = self.spaces.get_mut(first.slot()).and_then(Option::as_mut) else {
            return;
        };
        let view = first.view();
        let lpages = first.lpage()..first.lpage() + pages;
        if prot != PageProt::ReadWrite {
            lpages
                .clone()
                .for_each(|lpage| space.views[view].soft().drop_write(lpage));
        }
        let mapped = |lpage: u32| {
            if space.root == UNPAGED_ROOT {
                view == SUPERVISOR_VIEW && lpage < ram_frames
            } else {
                space.shadow[view].get(lpage).is_some()
            }
        };
        if !lpages.clone().all(mapped) {
            return;
        }
        self.window_calls += 1;
        // A protection change of pages in our own reservation; if the host
        // refuses, the pages keep their old rights (and the shadow says
        // so) and the next write faults again.
        let changed = space.views[view].protect(
            GuestLinear(first.lpage() * PAGE_SIZE),
            u64::from(pages) * u64::from(PAGE_SIZE),
            prot,
        );
        if changed.is_ok() {
            let writable = prot == PageProt::ReadWrite;
            for lpage in lpages {
                space.shadow[view].set_writable(lpage, writable);
                if let Some(frame) = space.shadow[view].get(lpage).filter(|_| writable) {
                    self.watcher.note_writable_mapping(frame);
                }
            }
        }
    }

    /// Marks `frame` as holding translated code (write-protected).
    pub(super) fn trace_code_frame(&mut self, frame: u32) {
        if frame >= self.ram.frames() {
            return;
        }
        if self.watcher.trace_code(frame) {
            self.protect_frame(frame);
        }
    }

    /// Kills the translations of `frame` (and only their indirect-branch
    /// entries) and lets it be written again unless it is a page table
    /// in sync.
    pub(super) fn untrace_code_frame(&mut self, frame: u32) {
        if !self.watcher.untrace_code(frame) {
            return;
        }
        self.code_bytes.remove(&frame);
        let dead = self.cache.invalidate_frame(frame);
        self.stats.smc_translations_killed += dead.len() as u64;
        for id in dead {
            self.forget_dead_translation(id);
        }
        self.pending_chain = None;
        if !self.watcher.write_protected(frame) {
            self.release_frame(frame);
        }
    }

    /// Records an indirect-branch entry of the current mode: in the
    /// current space's table for CPL 3, else in the shared table, valid in
    /// every space when its page is global.
    pub(super) fn ibtc_insert(&mut self, eip: u32, host: u64) {
        let tag = self.tag;
        let linear = self.sys.segment(crate::cpu::Seg::Cs).base.wrapping_add(eip);
        let key = (linear, eip, tag);
        if self.tag_is_shared(tag) {
            let scope = match self.global_frame(linear) {
                Some(frame) => Scope::Global { frame },
                None => Scope::Local,
            };
            self.shared_ibtc.insert(key, host, scope);
        } else {
            self.space_mut().ibtc.insert(key, host, Scope::ThisSpace);
        }
    }

    /// After an indirect-branch miss in a table of the current address
    /// space (not the shared one) that found translation `missed`: the
    /// other live translations of the same frame that indirect branches
    /// reached before (in any address space), in the same mode, whose EIP
    /// lies in the same linear page at the offset it has in the frame,
    /// enter the table too. The page was just walked to that frame, so
    /// each entry is right here; a new process running code its
    /// predecessors ran (every fork, every exec of the same binary) then
    /// misses about once per page instead of once per target. The entries
    /// are recorded per page like any other, so a change of the page's
    /// mapping drops them.
    pub(super) fn prefill_page_targets(&mut self, missed: codecache::TransId) {
        let first_time = !self.cache.get(missed).indirect_target;
        self.cache.mark_indirect_target(missed);
        if first_time || self.tag_is_shared(self.tag) {
            // A target new to every space: its page's others were seen.
            return;
        }
        let key = self.cache.get(missed).key;
        let cs_base = self.sys.segment(crate::cpu::Seg::Cs).base;
        let page = cs_base.wrapping_add(key.eip) >> 12;
        let frame = key.phys >> 12;
        for id in self.cache.indirect_targets_of_frame(frame).to_vec() {
            let t = self.cache.get(id);
            let linear = cs_base.wrapping_add(t.key.eip);
            let here = id != missed
                && t.key.mode == key.mode
                && t.key.phys >> 12 == frame
                && linear >> 12 == page
                && linear & 0xfff == t.key.phys & 0xfff;
            if here {
                let (eip, host) = (t.key.eip, self.cache.exec_addr(t.code_offset));
                self.ibtc_insert(eip, host);
                self.stats.indirect_prefills += 1;
            }
        }
    }

    /// The frame the linear page of `lin` maps if the mapping is alike in
    /// every address space: paging is off, or its PTE (PDE for a 4 MiB
    /// page) is present and global with CR4.PGE. Reads the current page
    /// tables without setting accessed bits.
    fn global_frame(&self, lin: u32) -> Option<u32> {
        const PRESENT: u32 = 1;
        const LARGE: u32 = 1 << 7;
        const GLOBAL: u32 = 1 << 8;
        if !self.paging() {
            return Some(lin >> 12);
        }
        if !self.sys.cr4.contains(crate::cpu::Cr4::PGE) {
            return None;
        }
        let pde_at = (self.sys.cr3 & !0xfff) + (lin >> 22) * 4;
        let pde = self.ram.read_u32(GuestPhys(pde_at)).ok()?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & LARGE != 0 && self.sys.cr4.contains(crate::cpu::Cr4::PSE) {
            return (pde & GLOBAL != 0).then_some((pde >> 12 & !0x3ff) | (lin >> 12 & 0x3ff));
        }
        let pte_at = (pde & !0xfff) + ((lin >> 12) & 0x3ff) * 4;
        let pte = self.ram.read_u32(GuestPhys(pte_at)).ok()?;
        (pte & (PRESENT | GLOBAL) == PRESENT | GLOBAL).then_some(pte >> 12)
    }

    /// The indirect-branch table translated code of `tag` probes.
    pub(super) fn branch_table(&self, tag: u32) -> &BranchTable {
        if self.tag_is_shared(tag) {
            &self.shared_ibtc
        } else {
            &self.space().ibtc
        }
    }

    /// Tags whose modes use the shared table: the supervisor ones with
    /// CR4.PGE on (without global pages nothing maps alike in every
    /// space, and each space's own table serves them better).
    pub(super) fn tag_is_shared(&self, tag: u32) -> bool {
        const PGE: u32 = 0x80;
        self.mode_tags
            .get(tag as usize)
            .is_some_and(|k| !k.cpl_user && k.paging.2 & PGE != 0)
    }

    /// `UnitRequest::shared_ibtc_tags`: the supervisor modes' tags.
    pub(super) fn shared_tags(&self) -> u32 {
        (0..self.mode_tags.len().min(32) as u32)
            .filter(|t| self.tag_is_shared(*t))
            .fold(0, |mask, t| mask | 1 << t)
    }

    /// Forgets what points at translation `id`, which just died: its
    /// indirect-branch entries in every table and its record as a unit
    /// with software-TLB accesses.
    pub(super) fn forget_dead_translation(&mut self, id: codecache::TransId) {
        let t = self.cache.get(id);
        let (eip, host) = (t.key.eip, self.cache.exec_addr(t.code_offset));
        self.remove_ibtc_entries(eip, host);
        self.unchain_translation(id);
        self.adaptive.forget_unit(id.0);
        self.site_predictions.forget_unit(id);
    }

    /// Drops the indirect-branch entries of `eip` that lead to `host` (a
    /// translation that died) from every table.
    fn remove_ibtc_entries(&mut self, eip: u32, host: u64) {
        for space in self.spaces.iter_mut().flatten() {
            space.ibtc.remove_entry(eip, host);
        }
        self.shared_ibtc.remove_entry(eip, host);
    }

    /// Writes guest-physical memory on behalf of the monitor or a device:
    /// translated code it overwrites dies, and page tables it changes
    /// invalidate what was built from them, as guest stores would.
    pub(super) fn write_phys(
        &mut self,
        addr: GuestPhys,
        data: &[u8],
    ) -> Result<(), shadowmmu::RamError> {
        let frames = frames_of(addr, data.len());
        for f in frames.clone() {
            self.untrace_code_frame(f as u32);
        }
        let result = self.ram.write(addr, data);
        for f in frames.map(|f| f as u32) {
            if self.watcher.is_synced_table(f) {
                let c = self.watcher.table_written(f, &self.ram);
                self.apply(c);
            }
        }
        result
    }

    /// A guest store faulted on an in-sync page table: the store is let
    /// through this alias (the instruction then runs alone) and compared
    /// with the snapshot afterwards ([`Self::settle_table_writes`]).
    pub(super) fn open_table_for_one_write(&mut self, frame: u32, lpage: u32) {
        if !self.pending_table_writes.contains(&frame) {
            self.pending_table_writes.push(frame);
        }
        self.open_alias_for_write(lpage);
    }

    /// Makes linear page `lpage` of the current view writable (for the
    /// one instruction about to run alone).
    pub(super) fn open_alias_for_write(&mut self, lpage: u32) {
        let alias = Alias::new(self.space, self.view, lpage);
        self.protect_alias(alias, PageProt::ReadWrite);
    }

    /// After the instruction that wrote in-sync page tables ran: what it
    /// changed is invalidated, and the tables are write-protected again
    /// unless they went out of sync.
    pub(super) fn settle_table_writes(&mut self) {
        for frame in std::mem::take(&mut self.pending_table_writes) {
            let c = self.watcher.table_written(frame, &self.ram);
            self.apply(c);
            if self.watcher.write_protected(frame) {
                self.protect_frame(frame);
            }
        }
    }

    /// Maps linear page `lpage` of view `view` of the current space to the
    /// frame `walked` found (with paging on), watching the tables the walk
    /// went through: writable only when the walk found it writable and
    /// dirty and the watcher does not protect the frame.
    pub(super) fn map_walked(&mut self, view: usize, lpage: u32, walked: &Translated) {
        let slot = self.space;
        self.watch_walked(lpage, walked);
        if self.opens_mapped_page(view, lpage, walked) {
            return;
        }
        let (first, frame0, pages) = if walked.large {
            self.fill_extent(view, lpage, walked)
        } else {
            self.fill_around(view, lpage, walked)
        };
        let prot =
            if walked.writable_and_dirty && (pages > 1 || !self.watcher.write_protected(frame0)) {
                PageProt::ReadWrite
            } else {
                PageProt::Read
            };
        let fd = self.ram.fd();
        let space = self.spaces[slot]
            .as_mut()
            .expect("the current space exists");
        // A refused mapping leaves the pages unmapped: the access faults
        // again and is reported.
        let _ = space.views[view].map(
            GuestLinear(first * PAGE_SIZE),
            fd,
            GuestPhys(frame0 * PAGE_SIZE),
            u64::from(pages) * u64::from(PAGE_SIZE),
            prot,
        );
        self.window_calls += 1;
        if view == SUPERVISOR_VIEW {
            let region = first >> 10;
            if pages == 1024 {
                space.large.insert(region, walked.pde.value);
            } else if !walked.large {
                // Pages of a page table now: the region is no 4 MiB page.
                space.large.remove(&region);
                space.leaf_pdes.insert(region, walked.pde.value);
            }
        }
        for n in 0..pages {
            // The frames kept read-only are protected again right below.
            let writable =
                prot == PageProt::ReadWrite && !self.stays_read_only(frame0 + n, first + n, lpage);
            self.record_alias(slot, view, first + n, frame0 + n, writable);
            if writable {
                self.watcher.note_writable_mapping(frame0 + n);
            }
        }
        if pages > 1 && prot == PageProt::ReadWrite {
            self.protect_watched_runs(view, first, frame0, pages, lpage);
        }
    }

    /// Whether `frame`, just mapped at linear page `page` by a fill for an
    /// access to `accessed`, must be read-only: the watcher protects it,
    /// or it is a lazy directory the access did not reach (a write to it
    /// then faults once and is let through: see
    /// `FrameWatcher::keeps_read_only`). The accessed page itself follows
    /// the watcher's protection alone, or a write to it would fault
    /// forever.
    fn stays_read_only(&self, frame: u32, page: u32, accessed: u32) -> bool {
        if page == accessed {
            self.watcher.write_protected(frame)
        } else {
            self.watcher.keeps_read_only(frame)
        }
    }

    /// A write to a 4 KiB page mapped read-only to the very frame the walk
    /// found, which may be written now (the watcher let it go, or its
    /// entry became dirty): its rights change in one host call instead of
    /// a new fill. Whether it did.
    fn opens_mapped_page(&mut self, view: usize, lpage: u32, walked: &Translated) -> bool {
        let frame = walked.phys.frame();
        let shadow = &self.space().shadow[view];
        let reopen = !walked.large
            && walked.writable_and_dirty
            && shadow.get(lpage) == Some(frame)
            && !shadow.writable(lpage)
            && !self.watcher.write_protected(frame);
        if reopen {
            self.protect_alias(Alias::new(self.space, view, lpage), PageProt::ReadWrite);
        }
        reopen
    }

    /// Write-protects, in view `view` of the current space, the frames that
    /// stay read-only (`stays_read_only`, for an access to `accessed`)
    /// among `pages` just mapped from linear page `first`
    /// (frames from `frame0`): one host call per run of such frames
    /// (translated code and page tables often lie side by side).
    fn protect_watched_runs(
        &mut self,
        view: usize,
        first: u32,
        frame0: u32,
        pages: u32,
        accessed: u32,
    ) {
        let read_only = |core: &Self, n: u32| core.stays_read_only(frame0 + n, first + n, accessed);
        let mut n = 0;
        while n < pages {
            if !read_only(self, n) {
                n += 1;
                continue;
            }
            let start = n;
            while n < pages && read_only(self, n) {
                n += 1;
            }
            self.window_calls += 1;
            // Every page of the run was mapped just now; if the host refuses,
            // the pages keep their rights and the watcher's frames would be
            // written unseen, so the run is unmapped instead (refaults map
            // it page by page).
            let view_window = &self.space().views[view];
            let lin = GuestLinear((first + start) * PAGE_SIZE);
            let len = u64::from(n - start) * u64::from(PAGE_SIZE);
            if view_window.protect(lin, len, PageProt::Read).is_err() {
                for k in start..n {
                    self.drop_pages_of_view(Alias::new(self.space, view, first + k));
                }
            } else {
                let shadow = &mut self.space_mut().shadow[view];
                (start..n).for_each(|k| shadow.set_writable(first + k, false));
            }
        }
    }

    /// The pages one fill maps for the walk of `lpage`: the whole 4 MiB
    /// page when the walk went through one (the TLB holds it as one entry:
    /// its accessed and dirty bits are the PDE's), if it lies in RAM and
    /// the view's region was not filled from that very entry already (a
    /// page dropped from such a region, say by a frame's release, comes
    /// back alone); else the one page. As (first linear page, its frame,
    /// pages).
    fn fill_extent(&self, view: usize, lpage: u32, walked: &Translated) -> (u32, u32, u32) {
        let frame = walked.phys.frame();
        let ram_frames = u64::from(self.ram.frames());
        let region_filled = view == SUPERVISOR_VIEW
            && self.space().large.get(&(lpage >> 10)) == Some(&walked.pde.value);
        if walked.large && !region_filled && u64::from(frame & !1023) + 1024 <= ram_frames {
            (lpage & !1023, frame & !1023, 1024)
        } else {
            (lpage, frame, 1)
        }
    }

    /// The pages one fill of the 4 KiB page `lpage` maps: with it, the
    /// pages next to it (up to [`FILL_AROUND`] on each side, in the same
    /// page table) that map the frames next to its frame with the same
    /// rights and whose accessed bit the guest already has (and dirty bit,
    /// for a writable mapping): one host call maps them all, where each
    /// would otherwise cost a host fault of its own. Nothing the guest sees
    /// changes: no accessed or dirty bit is set for a page not accessed,
    /// and every entry is walked as an access would walk it, so the
    /// watcher notes it. As (first linear page, its frame, pages).
    fn fill_around(&mut self, view: usize, lpage: u32, walked: &Translated) -> (u32, u32, u32) {
        let frame = walked.phys.frame();
        let fits = |core: &mut BtCore, delta: i64| core.fills_with(view, lpage, walked, delta);
        let after = (1..=FILL_AROUND)
            .take_while(|&k| fits(self, i64::from(k)))
            .count() as u32;
        let before = (1..=FILL_AROUND)
            .take_while(|&k| fits(self, -i64::from(k)))
            .count() as u32;
        (lpage - before, frame - before, before + 1 + after)
    }

    /// Whether the page `delta` pages from `lpage` can be mapped with it
    /// (see [`Self::fill_around`]).
    fn fills_with(&mut self, view: usize, lpage: u32, walked: &Translated, delta: i64) -> bool {
        let Some(pte) = walked.pte else {
            return false;
        };
        let page = i64::from(lpage) + delta;
        let frame = i64::from(walked.phys.frame()) + delta;
        let ram_frames = i64::from(self.ram.frames());
        if page < 0 || page >> 10 != i64::from(lpage >> 10) || frame < 0 || frame >= ram_frames {
            return false;
        }
        let (page, frame) = (page as u32, frame as u32);
        let entry_addr = (i64::from(pte.addr.0) + 4 * delta) as u32;
        let Ok(entry) = self.ram.read_u32(GuestPhys(entry_addr)) else {
            return false;
        };
        if entry & ENTRY_ACCESSED == 0
            || (entry ^ pte.value) & SAME_FILL_BITS != 0
            || entry >> 12 != frame
        {
            return false;
        }
        // Walked as a read would walk it: with A (and the PDE's A) set,
        // the walk changes nothing in guest memory.
        match self.walk_noting(page * PAGE_SIZE, false, view == USER_VIEW) {
            Ok(t) => {
                !t.large
                    && t.phys.frame() == frame
                    && t.writable_and_dirty == walked.writable_and_dirty
            }
            Err(_) => false,
        }
    }

    /// Records that `lpage` of a view of space `slot` maps `frame`.
    fn record_alias(&mut self, slot: usize, view: usize, lpage: u32, frame: u32, writable: bool) {
        let Some(space) = self.spaces[slot].as_mut() else {
            return;
        };
        let alias = Alias::new(slot, view, lpage);
        let old = space.shadow[view].insert(lpage, frame, writable);
        if let Some(old) = old.filter(|o| *o != frame) {
            // The page maps another frame now: what was chained into it
            // was found through the old one.
            super::chains::unchain_range(space, view, lpage, 1, self.chains.stubs());
            self.rmap_remove(old, alias);
        }
        let aliases = self.rmap.entry(frame).or_default();
        if !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }

    /// Maps the pages of the current space that a page-table comparison
    /// found made present with their accessed bit set
    /// (`FrameWatcher::take_present`; at most [`MAX_FILLS_AHEAD`]), in
    /// the view that will likely reach them first (the user view for a
    /// user page), as KVM prefetches a guest PTE written while shadowed:
    /// the walk changes no accessed or dirty bit (both entries have A set,
    /// and it walks for a read), so nothing the guest sees changes; a page
    /// mapped already, or whose entries changed again, is left alone.
    pub(super) fn fill_ahead(&mut self) {
        let current = SpaceId(self.space as u32);
        let pages = self.watcher.take_present();
        let mine = pages.into_iter().filter(|(space, _)| *space == current);
        for (_, lpage) in mine.take(MAX_FILLS_AHEAD) {
            if !self.paging() {
                return;
            }
            let lin = lpage << 12;
            let Some(view) = self.view_to_fill_ahead(lin) else {
                continue;
            };
            if self.space().shadow[view].get(lpage).is_some() {
                continue;
            }
            let Ok(walked) = self.walk_noting(lin, false, view == USER_VIEW) else {
                continue;
            };
            if (walked.phys.0 as usize) < self.ram.size() {
                self.stats.pages_filled_ahead += 1;
                self.map_walked(view, lpage, &walked);
            }
        }
    }

    /// The view to map `lin` ahead in, if its directory and table entries
    /// are present, accessed and point to a page table: the user view if
    /// both allow user access, else the supervisor view.
    fn view_to_fill_ahead(&self, lin: u32) -> Option<usize> {
        const WANTED: u32 = 0x21; // present, accessed
        const USER: u32 = 0x4;
        const PAGE_SIZE_BIT: u32 = 0x80;
        let pde_addr = (self.sys.cr3 & !0xfff) + (lin >> 22) * 4;
        let pde = self.ram.read_u32(GuestPhys(pde_addr)).ok()?;
        if pde & WANTED != WANTED || pde & PAGE_SIZE_BIT != 0 {
            return None;
        }
        let pte_addr = (pde & !0xfff) + ((lin >> 12) & 1023) * 4;
        let pte = self.ram.read_u32(GuestPhys(pte_addr)).ok()?;
        if pte & WANTED != WANTED {
            return None;
        }
        Some(if pde & pte & USER != 0 {
            USER_VIEW
        } else {
            SUPERVISOR_VIEW
        })
    }

    /// Walks for an access to `lin` with the rights of view `view` and
    /// maps the page there if the walk succeeds (no guest fault is raised
    /// here).
    pub(super) fn prefault_in(&mut self, view: usize, lin: u32, write: bool) {
        let Ok(walked) = self.walk_noting(lin, write, view == USER_VIEW) else {
            return;
        };
        if (walked.phys.0 as usize) < self.ram.size() {
            self.map_walked(view, lin >> 12, &walked);
        }
    }

    /// Drops least recently used spaces (then the current space's
    /// mappings) while the process holds more host mappings than the
    /// budget. The count is an estimate from above (the last count plus
    /// what the window calls since could add) until it passes the budget;
    /// then the host is asked.
    pub(super) fn keep_mappings_in_budget(&mut self) {
        let estimate = self.mappings_counted + self.window_calls * spaces::MAPPINGS_PER_CALL;
        if estimate <= self.mapping_budget {
            return;
        }
        loop {
            self.window_calls = 0;
            self.mappings_counted = spaces::host_mappings().unwrap_or(self.mapping_budget + 1);
            if self.mappings_counted <= self.mapping_budget / 4 * 3 {
                return;
            }
            match self.least_recently_used() {
                Some(victim) => {
                    self.stats.budget_evictions += 1;
                    self.drop_space(victim);
                }
                None => {
                    self.stats.budget_resets += 1;
                    self.empty_current_space();
                    self.mappings_counted = spaces::host_mappings().unwrap_or(0);
                    return;
                }
            }
        }
    }

    /// Walks for a host fault at `lin` in the current view (rights of its
    /// privilege).
    pub(super) fn walk_for_fault(
        &mut self,
        lin: u32,
        write: bool,
    ) -> Result<Translated, PageFault> {
        self.walk_noting(lin, write, self.view == USER_VIEW)
    }
}

/// The invalidations `list` names, sorted and merged into runs of
/// adjacent or overlapping pages per space (one host call per run).
fn coalesce(mut list: Vec<Invalidation>) -> Vec<Invalidation> {
    if list.len() < 2 {
        return list;
    }
    list.sort_by_key(|i| (i.space, i.first_page));
    let mut out: Vec<Invalidation> = Vec::with_capacity(list.len());
    for inv in list {
        if let Some(last) = out.last_mut() {
            let end = u64::from(last.first_page) + u64::from(last.pages);
            if last.space == inv.space && u64::from(inv.first_page) <= end {
                let new_end = end.max(u64::from(inv.first_page) + u64::from(inv.pages));
                last.pages = (new_end - u64::from(last.first_page)) as u32;
                continue;
            }
        }
        out.push(inv);
    }
    out
}

/// The frames `len` bytes from `addr` touch.
fn frames_of(addr: GuestPhys, len: usize) -> std::ops::Range<u64> {
    let first = u64::from(addr.frame());
    if len == 0 {
        return first..first;
    }
    let last = (u64::from(addr.0) + len as u64 - 1) / u64::from(PAGE_SIZE);
    first..last + 1
}

/// Pages to map ahead (see [`BtCore::fill_ahead`]) kept between two runs
/// of translated code; past that, the rest fault in as usual.
const MAX_FILLS_AHEAD: usize = 64;

/// The tables one walk went through, as [`BtCore::watch_walked`] watched
/// them for a space: the directory, and the leaf table with its region;
/// with the watcher's epoch after it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct WatchedWalk {
    space: usize,
    directory: u32,
    leaf: Option<(u32, u32)>,
    epoch: u64,
}

/// A linear page of one view of one cached space, as the reverse map keeps
/// it: the page number (20 bits), the view in bit 31, the space's slot in
/// the upper half.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Alias(u64);

impl Alias {
    const USER_BIT: u64 = 1 << 31;

    pub(super) fn new(slot: usize, view: usize, lpage: u32) -> Alias {
        let user = if view == USER_VIEW { Self::USER_BIT } else { 0 };
        Alias((slot as u64) << 32 | user | u64::from(lpage))
    }

    pub(super) fn slot(self) -> usize {
        (self.0 >> 32) as usize
    }

    pub(super) fn view(self) -> usize {
        if self.0 & Self::USER_BIT != 0 {
            USER_VIEW
        } else {
            SUPERVISOR_VIEW
        }
    }

    pub(super) fn lpage(self) -> u32 {
        (self.0 & 0xf_ffff) as u32
    }
}

/// Sorted aliases as runs of consecutive linear pages of one view of one
/// space: (first alias, pages).
fn alias_runs(sorted: &[Alias]) -> Vec<(Alias, u32)> {
    let mut runs: Vec<(Alias, u32)> = Vec::new();
    for &alias in sorted {
        match runs.last_mut() {
            Some((first, pages))
                if first.slot() == alias.slot()
                    && first.view() == alias.view()
                    && first.lpage() + *pages == alias.lpage() =>
            {
                *pages += 1;
            }
            _ => runs.push((alias, 1)),
        }
    }
    runs
}

/// A failed walk as the guest exception it is.
pub(super) fn page_fault(pf: PageFault) -> crate::cpu::Exception {
    crate::cpu::Exception::PageFault {
        addr: pf.addr.0,
        error: pf.error_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(space: u32, first_page: u32, pages: u32) -> Invalidation {
        Invalidation {
            space: SpaceId(space),
            first_page,
            pages,
        }
    }

    #[test]
    fn invalidations_merge_into_runs_per_space() {
        let merged = coalesce(vec![
            inv(1, 5, 1),
            inv(0, 3, 1),
            inv(0, 4, 1),
            inv(0, 1024, 1024),
            inv(0, 1500, 1),
            inv(0, 2, 1),
            inv(1, 7, 1),
        ]);
        assert_eq!(
            merged,
            vec![inv(0, 2, 3), inv(0, 1024, 1024), inv(1, 5, 1), inv(1, 7, 1)]
        );
    }

    #[test]
    fn sorted_aliases_form_runs_per_view_of_consecutive_pages() {
        let s = |lpage| Alias::new(2, SUPERVISOR_VIEW, lpage);
        let u = |lpage| Alias::new(2, USER_VIEW, lpage);
        let mut aliases = vec![
            u(11),
            s(5),
            s(3),
            s(4),
            u(10),
            s(7),
            Alias::new(3, SUPERVISOR_VIEW, 8),
        ];
        aliases.sort_unstable();
        assert_eq!(
            alias_runs(&aliases),
            vec![
                (s(3), 3),
                (s(7), 1),
                (u(10), 2),
                (Alias::new(3, SUPERVISOR_VIEW, 8), 1)
            ]
        );
    }
}

/// The monitor's own TLB: the linear pages [`BtCore::translate_linear`]
/// walked last (an exception delivery reads the IDT, the GDT and the TSS
/// and writes its frame: about a dozen walks of three or four pages, each
/// telling the frame watcher about both entries it used; a kernel's entry
/// code loads three or four segment registers, each a read of the GDT).
/// Like a hardware TLB it outlives the instructions that filled it: it is
/// emptied at every guest TLB flush (INVLPG, CR3 and CR4 writes) and
/// whenever the frame watcher finds a mapping changed, and serves only
/// under the CR0, CR3 and CR4 it was filled under (a task switch loads
/// CR3 in the middle of its accesses), so it never holds what a hardware
/// TLB could not; an entry that a read walk made does not serve a write,
/// whose walk sets the dirty bit.
#[derive(Debug, Default)]
pub(super) struct MonitorTlb {
    entries: [Option<MonitorTlbEntry>; 4],
    next: usize,
    /// CR0, CR3 and CR4 of the entries.
    paging: [u32; 3],
}

#[derive(Clone, Copy, Debug)]
struct MonitorTlbEntry {
    lpage: u32,
    frame: u32,
    /// Made by a walk with user rights.
    user: bool,
    /// Made by a write walk (the dirty bit is set).
    write: bool,
}

impl MonitorTlb {
    /// The frame of linear page `lpage` for an access with these rights,
    /// if an entry serves it.
    fn get(&self, paging: [u32; 3], lpage: u32, write: bool, user: bool) -> Option<u32> {
        if paging != self.paging {
            return None;
        }
        self.entries
            .iter()
            .flatten()
            .find(|e| e.lpage == lpage && e.user == user && (e.write || !write))
            .map(|e| e.frame)
    }

    /// Records a walk of `lpage` to `frame` (replacing an entry of the
    /// same page and rights, else the oldest).
    fn insert(&mut self, paging: [u32; 3], lpage: u32, frame: u32, write: bool, user: bool) {
        if paging != self.paging {
            self.clear();
            self.paging = paging;
        }
        let entry = MonitorTlbEntry {
            lpage,
            frame,
            user,
            write,
        };
        let same = self
            .entries
            .iter()
            .position(|e| e.is_some_and(|e| e.lpage == lpage && e.user == user));
        let at = same.unwrap_or_else(|| {
            let at = self.next;
            self.next = (self.next + 1) % self.entries.len();
            at
        });
        self.entries[at] = Some(entry);
    }

    /// Forgets every entry.
    pub(super) fn clear(&mut self) {
        self.entries = [None; 4];
    }
}

#[cfg(test)]
mod monitor_tlb_tests {
    use super::MonitorTlb;

    const P: [u32; 3] = [0x8000_0011, 0x1000, 0x10];

    #[test]
    fn a_read_entry_serves_reads_of_its_page_and_rights_only() {
        let mut tlb = MonitorTlb::default();
        tlb.insert(P, 0x12345, 0x777, false, false);
        assert_eq!(tlb.get(P, 0x12345, false, false), Some(0x777));
        assert_eq!(tlb.get(P, 0x12345, true, false), None, "a write walks");
        assert_eq!(tlb.get(P, 0x12345, false, true), None, "user rights walk");
        assert_eq!(tlb.get(P, 0x12346, false, false), None);
    }

    #[test]
    fn a_write_entry_serves_reads_and_writes_and_replaces_the_read_one() {
        let mut tlb = MonitorTlb::default();
        tlb.insert(P, 5, 50, false, false);
        tlb.insert(P, 5, 50, true, false);
        assert_eq!(tlb.get(P, 5, true, false), Some(50));
        assert_eq!(tlb.get(P, 5, false, false), Some(50));
        assert_eq!(tlb.entries.iter().flatten().count(), 1);
    }

    #[test]
    fn the_oldest_entry_goes_and_clear_forgets_all() {
        let mut tlb = MonitorTlb::default();
        for page in 0..5 {
            tlb.insert(P, page, page + 100, false, false);
        }
        assert_eq!(tlb.get(P, 0, false, false), None, "the first went");
        assert_eq!(tlb.get(P, 4, false, false), Some(104));
        tlb.clear();
        assert_eq!(tlb.get(P, 4, false, false), None);
    }

    #[test]
    fn entries_serve_only_under_the_paging_registers_they_were_made_under() {
        let mut tlb = MonitorTlb::default();
        tlb.insert(P, 1, 10, true, false);
        let other_cr3 = [P[0], 0x2000, P[2]];
        assert_eq!(tlb.get(other_cr3, 1, false, false), None);
        tlb.insert(other_cr3, 2, 20, false, false);
        assert_eq!(tlb.get(P, 1, false, false), None, "the old CR3's went");
        assert_eq!(tlb.get(other_cr3, 2, false, false), Some(20));
    }
}
