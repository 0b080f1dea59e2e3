//! Address spaces cached per guest page directory: each has its two views
//! (supervisor and user windows), the shadow mappings made in them, and
//! its own indirect-branch table. Switching CR3 switches the window
//! register and the table pointer, not the mappings.
//!
//! Invariants:
//! - `ShadowPages` names exactly the pages mapped in its view's window
//!   (frame + 1 per linear page; 0: not mapped).
//! - An address space's indirect-branch table (the one of its CPL 3
//!   modes; supervisor modes share one table, `branch_table`) records the
//!   linear page of every entry, so dropping a page's mapping drops its
//!   entries without scanning the table.
//! - A retired space (its directory died) maps only regions filled from a
//!   4 MiB page, each recorded in `large` with the directory entry it was
//!   filled from; it is used again for a new directory only after every
//!   region whose entry differs there was dropped.
//! - The number of host mappings all spaces hold is kept under a budget
//!   derived from the host's `vm.max_map_count`; past it the least
//!   recently used spaces are dropped.

use super::branch_table::BranchTable;
use shadowmmu::{LinearWindow, WindowError};
use std::collections::BTreeMap;

/// The `root` of the address space used while paging is off.
pub(super) const UNPAGED_ROOT: u32 = u32::MAX;

/// The `root` of a retired space (no page directory is at this frame).
pub(super) const RETIRED_ROOT: u32 = u32::MAX - 1;

/// Retired spaces kept at most: each holds the kernel's 4 MiB mappings
/// (a few hundred host mappings) for the next new directory.
pub(super) const MAX_RETIRED: usize = 4;

/// Address spaces cached at most (each costs two window reservations and
/// an indirect-branch table reservation).
pub(super) const MAX_SPACES: usize = 128;

/// Host mappings (VMAs) one host call on a window may add at most: a
/// call on a range inside one mapping splits it into three.
pub(super) const MAPPINGS_PER_CALL: usize = 2;

/// Aliases a space that is not current keeps to write-protect when it
/// becomes current (`AddressSpace::unprotected`); past that they are
/// protected at once.
pub(super) const MAX_UNPROTECTED: usize = 4096;

/// Linear page -> guest frame of one view.
pub(super) struct ShadowPages {
    regions: Vec<Option<Box<Region>>>,
}

/// The pages of one 4 MiB region: frame + 1 per page (0: not mapped), and
/// a bit per mapped page, so that walking a range skips what is empty.
///
/// Invariants: bit `k` of `mapped` is set exactly when `frames[k] != 0`;
/// bit `k` of `writable` is set only for a mapped page, and whenever the
/// host mapping of the page may be written (a clear bit: read-only).
struct Region {
    frames: [u32; 1024],
    mapped: [u64; 16],
    writable: [u64; 16],
}

impl ShadowPages {
    fn new() -> ShadowPages {
        ShadowPages {
            regions: (0..1024).map(|_| None).collect(),
        }
    }

    /// The frame mapped at `lpage`.
    pub(super) fn get(&self, lpage: u32) -> Option<u32> {
        let r = self.regions[(lpage >> 10) as usize & 1023].as_ref()?;
        r.frames[(lpage & 1023) as usize].checked_sub(1)
    }

    /// Records `frame` at `lpage`, mapped writable or not; the frame
    /// mapped there before.
    pub(super) fn insert(&mut self, lpage: u32, frame: u32, writable: bool) -> Option<u32> {
        let r = self.regions[(lpage >> 10) as usize & 1023].get_or_insert_with(Region::new);
        let k = (lpage & 1023) as usize;
        let old = r.frames[k].checked_sub(1);
        r.frames[k] = frame + 1;
        r.mapped[k / 64] |= 1 << (k % 64);
        r.set_writable(k, writable);
        old
    }

    /// Whether the page at `lpage` is mapped and may be written through
    /// its host mapping.
    pub(super) fn writable(&self, lpage: u32) -> bool {
        self.regions[(lpage >> 10) as usize & 1023]
            .as_ref()
            .is_some_and(|r| r.writable[(lpage & 1023) as usize / 64] >> (lpage % 64) & 1 != 0)
    }

    /// Records that the host mapping of the mapped page `lpage` is
    /// writable or read-only now (nothing for a page not mapped).
    pub(super) fn set_writable(&mut self, lpage: u32, writable: bool) {
        if let Some(r) = self.regions[(lpage >> 10) as usize & 1023].as_mut() {
            let k = (lpage & 1023) as usize;
            if r.frames[k] != 0 {
                r.set_writable(k, writable);
            }
        }
    }

    /// Forgets `lpage`; the frame that was mapped there.
    pub(super) fn remove(&mut self, lpage: u32) -> Option<u32> {
        let r = self.regions[(lpage >> 10) as usize & 1023].as_mut()?;
        let k = (lpage & 1023) as usize;
        let old = r.frames[k].checked_sub(1);
        r.frames[k] = 0;
        r.mapped[k / 64] &= !(1 << (k % 64));
        r.set_writable(k, false);
        old
    }

    /// The mapped pages among `first..first + pages`, as (page, frame).
    pub(super) fn in_range(&self, first: u32, pages: u32) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let end = (u64::from(first) + u64::from(pages)).min(1 << 20);
        let mut lpage = u64::from(first);
        while lpage < end {
            let region = lpage >> 10;
            let region_end = ((region + 1) << 10).min(end);
            if let Some(r) = &self.regions[region as usize] {
                let base = (region << 10) as u32;
                let offset = (lpage & 1023) as u32;
                r.collect_mapped(base, offset, (region_end - lpage) as u32, &mut out);
            }
            lpage = region_end;
        }
        out
    }

    /// Every mapped page, as (page, frame).
    pub(super) fn all(&self) -> Vec<(u32, u32)> {
        self.in_range(0, 1 << 20)
    }
}

impl Region {
    fn new() -> Box<Region> {
        Box::new(Region {
            frames: [0; 1024],
            mapped: [0; 16],
            writable: [0; 16],
        })
    }

    fn set_writable(&mut self, k: usize, writable: bool) {
        let bit = 1u64 << (k % 64);
        if writable {
            self.writable[k / 64] |= bit;
        } else {
            self.writable[k / 64] &= !bit;
        }
    }

    /// Appends the mapped pages among `first..first + pages` of this
    /// region (offsets within it; its first linear page is `base`) to `out`
    /// as (linear page, frame).
    fn collect_mapped(&self, base: u32, first: u32, pages: u32, out: &mut Vec<(u32, u32)>) {
        let end = first + pages;
        for word in (first / 64)..end.div_ceil(64) {
            let lo = (word * 64).max(first);
            let hi = ((word + 1) * 64).min(end);
            let mask = bits_between(lo - word * 64, hi - word * 64);
            let mut bits = self.mapped[word as usize] & mask;
            while bits != 0 {
                let k = word * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                out.push((base | k, self.frames[k as usize] - 1));
            }
        }
    }
}

/// The bits `lo..hi` of a word (`lo < hi <= 64`).
fn bits_between(lo: u32, hi: u32) -> u64 {
    let below_hi = if hi == 64 { u64::MAX } else { (1 << hi) - 1 };
    below_hi & !((1u64 << lo) - 1)
}

/// One cached address space.
pub(super) struct AddressSpace {
    /// The page directory's frame, or [`UNPAGED_ROOT`].
    pub(super) root: u32,
    /// Supervisor and user windows.
    pub(super) views: [LinearWindow; 2],
    /// What each view maps.
    pub(super) shadow: [ShadowPages; 2],
    /// The indirect-branch table of this space's CPL 3 modes.
    pub(super) ibtc: BranchTable,
    /// The clock value of the last switch to it.
    pub(super) last_used: u64,
    /// Regions of the supervisor view filled from a 4 MiB page, with the
    /// page-directory entry they were filled from: every page mapped in
    /// such a region was mapped from that entry alone (no page table), so
    /// a retired space can serve another directory whose entry is the
    /// same.
    pub(super) large: BTreeMap<u32, u32>,
    /// Regions of the supervisor view filled through a page table, with
    /// the directory entry (naming that table) they were filled from: a
    /// retired space keeps those whose table other spaces share (a
    /// kernel's), and serves a new directory with them if its entry is
    /// the same.
    pub(super) leaf_pdes: BTreeMap<u32, u32>,
    /// Retired: its directory died; it keeps only the mappings of `large`
    /// and waits to serve a new directory ([`RETIRED_ROOT`] as root).
    pub(super) retired: bool,
    /// Aliases whose frame the watcher began to protect while the space
    /// was not current: write-protected when it becomes current again
    /// (one host call each, saved for spaces never entered again).
    pub(super) unprotected: Vec<super::frames::Alias>,
    /// Per view: linear page -> the chain-table slots whose entries are set
    /// for branches into that page, each listed once (see
    /// [`super::chains`]).
    pub(super) chained: [rustc_hash::FxHashMap<u32, Vec<u32>>; 2],
}

impl AddressSpace {
    /// A new space with nothing mapped, whose chain-table entries are
    /// `chain_stubs` (by slot: nothing is chained yet).
    pub(super) fn new(
        root: u32,
        now: u64,
        chain_stubs: &[u64],
    ) -> Result<AddressSpace, WindowError> {
        let mut views = [LinearWindow::new()?, LinearWindow::new()?];
        for view in views.iter_mut() {
            for (k, stub) in chain_stubs.iter().enumerate() {
                view.set_chain_entry(k as u32, *stub);
            }
        }
        Ok(AddressSpace {
            root,
            views,
            shadow: [ShadowPages::new(), ShadowPages::new()],
            ibtc: BranchTable::default(),
            last_used: now,
            large: BTreeMap::new(),
            leaf_pdes: BTreeMap::new(),
            retired: false,
            unprotected: Vec::new(),
            chained: Default::default(),
        })
    }

    /// Empties the indirect-branch table.
    pub(super) fn clear_ibtc(&mut self) {
        self.ibtc.clear();
    }
}

/// The host's limit on mappings per process (`vm.max_map_count`,
/// 65,530 by default).
fn host_map_limit() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530)
}

/// Mappings the process may hold before the shadow MMU drops address
/// spaces: three quarters of the host's limit, leaving the rest as a
/// margin for what one fault handling adds and for the monitor itself.
pub(super) fn mapping_budget() -> usize {
    host_map_limit() / 4 * 3
}

/// Mappings kept free below the host's limit whatever budget is asked for:
/// what one fault's handling may add, the monitor's own mappings, and the
/// estimate's slack.
const MAPPING_MARGIN: usize = 4096;

/// The largest budget `nestmon.mmu.maxMappings` may ask for on this host.
pub(super) fn largest_mapping_budget() -> usize {
    host_map_limit().saturating_sub(MAPPING_MARGIN)
}

/// The host mappings this process holds now (the lines of
/// `/proc/self/maps`), if the host tells.
pub(super) fn host_mappings() -> Option<usize> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    Some(maps.iter().filter(|b| **b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_pages_track_what_is_mapped_by_page_and_range() {
        let mut s = ShadowPages::new();
        assert_eq!(s.insert(0x401, 7, false), None);
        assert_eq!(s.insert(0x401, 8, false), Some(7));
        s.insert(0x7ff, 9, false);
        s.insert(0xfffff, 10, false);
        assert_eq!(s.all().len(), 3);
        assert_eq!(s.get(0x401), Some(8));
        assert_eq!(s.in_range(0x400, 0x400), vec![(0x401, 8), (0x7ff, 9)]);
        assert_eq!(s.all().len(), 3);
        assert_eq!(s.remove(0x401), Some(8));
        assert_eq!(s.remove(0x401), None);
        assert_eq!(s.all().len(), 2);
        assert_eq!(s.get(0x401), None);
    }

    #[test]
    fn shadow_pages_know_which_mappings_are_writable() {
        let mut s = ShadowPages::new();
        s.insert(0x401, 7, true);
        s.insert(0x402, 8, false);
        assert!(s.writable(0x401) && !s.writable(0x402) && !s.writable(0x403));
        s.set_writable(0x402, true);
        s.set_writable(0x401, false);
        s.set_writable(0x403, true);
        assert!(!s.writable(0x401) && s.writable(0x402));
        assert!(!s.writable(0x403), "a page not mapped is never writable");
        s.remove(0x402);
        assert!(!s.writable(0x402));
        s.insert(0x402, 9, false);
        assert!(
            !s.writable(0x402),
            "a new mapping has the rights it is given"
        );
    }

    #[test]
    fn a_range_of_shadow_pages_lists_exactly_the_mapped_pages_in_it() {
        // Pages on and around 64-page word edges and region edges, ranges
        // starting and ending anywhere near them, against a plain scan.
        let mut s = ShadowPages::new();
        let pages = [
            0u32, 1, 63, 64, 65, 127, 128, 1000, 1023, 1024, 1087, 2047, 0xfffff,
        ];
        for (n, p) in pages.iter().enumerate() {
            s.insert(*p, n as u32 + 100, false);
        }
        s.remove(65);
        let edges = [
            0u32, 1, 62, 63, 64, 65, 66, 128, 1023, 1024, 1025, 2048, 0xffffe,
        ];
        for &first in &edges {
            for &len in &[0u32, 1, 2, 63, 64, 65, 1000, 1025, 4096] {
                let want: Vec<(u32, u32)> = (u64::from(first)..(u64::from(first) + u64::from(len)))
                    .filter(|p| *p < 1 << 20)
                    .filter_map(|p| s.get(p as u32).map(|f| (p as u32, f)))
                    .collect();
                assert_eq!(s.in_range(first, len), want, "from {first:#x}, {len} pages");
            }
        }
        assert_eq!(s.all().len(), pages.len() - 1);
    }

    #[test]
    fn the_mapping_budget_stays_under_the_host_limit() {
        assert!(mapping_budget() < host_map_limit());
        assert!(mapping_budget() > 1000);
        assert!(largest_mapping_budget() < host_map_limit());
    }

    #[test]
    fn host_mappings_are_counted_and_grow_with_a_split_window() {
        let before = host_mappings().unwrap();
        assert!(before > 3);
        let ram = shadowmmu::GuestRam::new(1).unwrap();
        let w = LinearWindow::new().unwrap();
        w.map(
            shadowmmu::GuestLinear(0x1000_0000),
            ram.fd(),
            shadowmmu::GuestPhys(0),
            4096,
            shadowmmu::PageProt::Read,
        )
        .unwrap();
        assert!(host_mappings().unwrap() >= before + 2);
    }
}
