//! The software TLB of a linear window: what translated code of an
//! *adaptive* instruction (one that kept taking host faults through the
//! window) looks up instead of touching the window, so that a missing
//! translation costs an exit to the monitor rather than a host signal and a
//! host mapping call.
//!
//! Layout: four direct-mapped tables of [`SOFT_ENTRIES`] `u64`s, indexed by
//! the low 16 bits of the linear page number, at [`SOFT_TLB_OFFSET`] from
//! the window's base (inside the guard before the 4 GiB part, which guest
//! addresses, at most 64 bytes below the base, never reach): read tags,
//! read frames, write tags, write frames. A tag is `-(linear page + 1)`
//! (zero: empty; negated so that translated code finds `tag + page + 1`
//! zero on a match with a single LEA;
//! empty); a frame value is the host address of the guest frame's first
//! byte minus `(linear & 0xf000)`, so that `value + (linear & 0xffff)` is
//! the host address of `linear` (translated code adds the low 16 bits,
//! which it can extract without touching flags).
//!
//! Invariants:
//! - An entry only ever names a frame of guest RAM, filled by the monitor
//!   from a walk of the guest's page tables with the rights of the window's
//!   view; a write entry only for a frame the walk found writable and dirty
//!   and the frame watcher does not protect. Whoever drops or protects a
//!   window page drops the same page here (the monitor's shadow MMU does
//!   it where it drops and protects mappings), so an entry is never valid
//!   where the window's own mapping would not be.
//! - Every filled slot is listed once (up to [`MAX_LISTED`]; past that the
//!   next clear empties the whole tables, giving their memory back), so
//!   clearing costs what was filled; a 4 MiB region filled at once
//!   ([`SoftTlb::fill_region`]) is listed as one entry, its region number
//!   with [`REGION_ENTRY`] set (linear pages never have it).

use crate::addr::PAGE_SIZE;

/// Entries per table.
pub const SOFT_ENTRIES: usize = 1 << 16;
/// Bytes of one table.
pub const SOFT_TABLE_BYTES: usize = SOFT_ENTRIES * 8;
/// Bytes of the four tables.
pub const SOFT_TLB_BYTES: usize = 4 * SOFT_TABLE_BYTES;
/// Where the tables start, relative to the window's base.
pub const SOFT_TLB_OFFSET: i64 = -(1 << 30);
/// Displacement (from the window's base) of the read tags.
pub const SOFT_READ_TAGS: i64 = SOFT_TLB_OFFSET;
/// Displacement of the read frames.
pub const SOFT_READ_FRAMES: i64 = SOFT_TLB_OFFSET + SOFT_TABLE_BYTES as i64;
/// Displacement of the write tags.
pub const SOFT_WRITE_TAGS: i64 = SOFT_TLB_OFFSET + 2 * SOFT_TABLE_BYTES as i64;
/// Displacement of the write frames.
pub const SOFT_WRITE_FRAMES: i64 = SOFT_TLB_OFFSET + 3 * SOFT_TABLE_BYTES as i64;

/// Filled slots listed at most; past that a clear empties everything.
pub const MAX_LISTED: usize = 1024;

/// A listed entry naming a 4 MiB region (linear page >> 10) filled at once
/// rather than one linear page.
const REGION_ENTRY: u32 = 1 << 31;

/// Pages of a 4 MiB region.
const REGION_PAGES: u32 = 1024;

/// The linear pages a listed entry names.
fn pages_of(entry: u32) -> std::ops::Range<u32> {
    if entry & REGION_ENTRY == 0 {
        entry..entry + 1
    } else {
        let first = (entry & !REGION_ENTRY) * REGION_PAGES;
        first..first + REGION_PAGES
    }
}

/// The tag of linear page `lpage`: `-(lpage + 1)`, never zero.
pub fn tag_of(lpage: u32) -> u64 {
    (u64::from(lpage) + 1).wrapping_neg()
}

const READ: usize = 0;
const WRITE: usize = 2 * SOFT_ENTRIES;

/// The software TLB of one window (see the module docs).
pub struct SoftTlb {
    tables: *mut u64,
    listed: Vec<u32>,
    overflowed: bool,
}

// SAFETY: the tables belong to the window that owns this value; only the
// vCPU thread touches them.
unsafe impl Send for SoftTlb {}

impl SoftTlb {
    /// A software TLB whose tables are the [`SOFT_TLB_BYTES`] at `tables`,
    /// readable, writable and zero (empty).
    ///
    /// # Safety
    /// `tables` must point to such memory, owned by the caller for as long
    /// as the value lives and touched by nothing else.
    pub unsafe fn new(tables: *mut u64) -> SoftTlb {
        SoftTlb {
            tables,
            listed: Vec::new(),
            overflowed: false,
        }
    }

    fn slot(lpage: u32) -> usize {
        (lpage & 0xffff) as usize
    }

    fn get(&self, at: usize) -> u64 {
        debug_assert!(at < 4 * SOFT_ENTRIES);
        // SAFETY: `at` is below the four tables' entry count (slots are
        // 16-bit, table starts are multiples of SOFT_ENTRIES below 4).
        unsafe { self.tables.add(at).read() }
    }

    fn set(&mut self, at: usize, v: u64) {
        debug_assert!(at < 4 * SOFT_ENTRIES);
        // SAFETY: as in `get`; the memory is writable and ours.
        unsafe { self.tables.add(at).write(v) }
    }

    /// Makes linear page `lpage` reach the frame whose first byte is at
    /// host address `frame_host`, for reads, and for writes too if `write`.
    /// Returns whether the page's write entry is new (it was not there for
    /// this page before).
    pub fn fill(&mut self, lpage: u32, frame_host: usize, write: bool) -> bool {
        let slot = Self::slot(lpage);
        let value = (frame_host as u64).wrapping_sub(u64::from((lpage & 0xf) * PAGE_SIZE));
        let tag = tag_of(lpage);
        let listed = self.get(READ + slot) == tag || self.get(WRITE + slot) == tag;
        let new_write = write && self.get(WRITE + slot) != tag;
        self.set(READ + slot, tag);
        self.set(READ + SOFT_ENTRIES + slot, value);
        if write {
            self.set(WRITE + slot, tag);
            self.set(WRITE + SOFT_ENTRIES + slot, value);
        } else if self.get(WRITE + slot) == tag {
            self.set(WRITE + slot, 0);
        }
        if !listed {
            self.list(lpage);
        }
        new_write
    }

    /// Lists `entry` (a linear page or a [`REGION_ENTRY`]), or notes that
    /// the listing overflowed.
    #[inline]
    fn list(&mut self, entry: u32) {
        if self.overflowed {
            // The next clear empties everything anyway; compacting a full
            // listing again at every fill would cost a sort each.
            return;
        }
        if self.listed.len() == MAX_LISTED {
            self.compact_listing();
        }
        if self.listed.len() < MAX_LISTED {
            self.listed.push(entry);
        } else {
            self.overflowed = true;
        }
    }

    /// Fills the pages of the 4 MiB region `region` (linear page >> 10)
    /// that `page` names: for the region's `k`th page, the host address of
    /// its frame's first byte and whether it may be written too (`None`:
    /// the page is left as it is; a write entry the page has is kept
    /// either way, unlike [`Self::fill`]'s). The region is listed as one
    /// entry, so that dropping and clearing reach every page it filled.
    pub fn fill_region(&mut self, region: u32, mut page: impl FnMut(u32) -> Option<(usize, bool)>) {
        let first = region.wrapping_mul(REGION_PAGES);
        for k in 0..REGION_PAGES {
            let Some((frame_host, write)) = page(k) else {
                continue;
            };
            let lpage = first | k;
            let slot = Self::slot(lpage);
            let value = (frame_host as u64).wrapping_sub(u64::from((lpage & 0xf) * PAGE_SIZE));
            let tag = tag_of(lpage);
            self.set(READ + slot, tag);
            self.set(READ + SOFT_ENTRIES + slot, value);
            // A write entry the page has already stays: it is as valid
            // as the new read entry.
            if write {
                self.set(WRITE + slot, tag);
                self.set(WRITE + SOFT_ENTRIES + slot, value);
            }
        }
        let entry = REGION_ENTRY | region;
        if !self.listed.contains(&entry) {
            self.list(entry);
        }
    }

    /// Whether some page `entry` names is still filled.
    fn still_filled(&self, entry: u32) -> bool {
        let filled = |p: u32| {
            let slot = Self::slot(p);
            self.get(READ + slot) == tag_of(p) || self.get(WRITE + slot) == tag_of(p)
        };
        if entry & REGION_ENTRY == 0 {
            filled(entry)
        } else {
            pages_of(entry).any(filled)
        }
    }

    /// Keeps only the listed pages that are still filled, once each (a
    /// page dropped and filled again is listed again).
    fn compact_listing(&mut self) {
        let mut listed = std::mem::take(&mut self.listed);
        listed.sort_unstable();
        listed.dedup();
        listed.retain(|e| self.still_filled(*e));
        self.listed = listed;
    }

    /// The host address `lpage` reaches for a read (or a write), if filled.
    pub fn lookup(&self, lpage: u32, write: bool) -> Option<usize> {
        let slot = Self::slot(lpage);
        let table = if write { WRITE } else { READ };
        (self.get(table + slot) == tag_of(lpage)).then(|| {
            let v = self.get(table + SOFT_ENTRIES + slot);
            v.wrapping_add(u64::from((lpage & 0xf) * PAGE_SIZE)) as usize
        })
    }

    /// Drops `lpage` for reads and writes.
    pub fn drop_page(&mut self, lpage: u32) {
        let slot = Self::slot(lpage);
        let tag = tag_of(lpage);
        for table in [READ, WRITE] {
            if self.get(table + slot) == tag {
                self.set(table + slot, 0);
            }
        }
    }

    /// Drops `lpage` for writes only (it stays readable).
    pub fn drop_write(&mut self, lpage: u32) {
        let slot = Self::slot(lpage);
        if self.get(WRITE + slot) == tag_of(lpage) {
            self.set(WRITE + slot, 0);
        }
    }

    /// Drops the `pages` linear pages from `first`.
    pub fn drop_range(&mut self, first: u32, pages: u32) {
        if self.is_empty() {
            return;
        }
        if pages <= 16 {
            for n in 0..pages {
                self.drop_page(first.wrapping_add(n));
            }
            return;
        }
        if self.overflowed {
            self.clear();
            return;
        }
        let end = u64::from(first) + u64::from(pages);
        for k in 0..self.listed.len() {
            let entry = self.listed[k];
            if entry & REGION_ENTRY == 0 {
                if entry >= first && u64::from(entry) < end {
                    self.drop_page(entry);
                }
                continue;
            }
            let named = pages_of(entry);
            let to = u64::from(named.end).min(end) as u32;
            for lpage in named.start.max(first)..to {
                self.drop_page(lpage);
            }
        }
    }

    /// Drops every write entry.
    pub fn drop_writes(&mut self) {
        if self.overflowed {
            self.clear();
            return;
        }
        for k in 0..self.listed.len() {
            for lpage in pages_of(self.listed[k]) {
                self.drop_write(lpage);
            }
        }
    }

    /// Whether nothing was filled since the last clear.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && !self.overflowed
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        if self.overflowed {
            // SAFETY: the four tables are SOFT_TLB_BYTES of memory of ours;
            // for the private anonymous mapping a window gives, dropping
            // the pages makes them read as zero again and frees them.
            let dropped =
                unsafe { libc::madvise(self.tables.cast(), SOFT_TLB_BYTES, libc::MADV_DONTNEED) }
                    == 0;
            if !dropped {
                // SAFETY: as above; the memory is writable.
                unsafe { std::ptr::write_bytes(self.tables.cast::<u8>(), 0, SOFT_TLB_BYTES) };
            }
        } else {
            for k in 0..self.listed.len() {
                let entry = self.listed[k];
                if entry & REGION_ENTRY == 0 {
                    let slot = Self::slot(entry);
                    for at in [READ, READ + SOFT_ENTRIES, WRITE, WRITE + SOFT_ENTRIES] {
                        self.set(at + slot, 0);
                    }
                    continue;
                }
                // A region's slots are consecutive: it starts at a
                // multiple of 1,024 pages, which divides the slot count.
                let slot = Self::slot(pages_of(entry).start);
                let n = REGION_PAGES as usize;
                for at in [READ, READ + SOFT_ENTRIES, WRITE, WRITE + SOFT_ENTRIES] {
                    debug_assert!(at + slot + n <= 4 * SOFT_ENTRIES);
                    // SAFETY: the region's slots lie inside one table (see
                    // above), memory of ours.
                    unsafe { std::ptr::write_bytes(self.tables.add(at + slot), 0, n) };
                }
            }
        }
        self.listed.clear();
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> (Vec<u64>, SoftTlb) {
        let mut mem = vec![0u64; 4 * SOFT_ENTRIES];
        // SAFETY: `mem` outlives the SoftTlb in every test and is not
        // touched otherwise while it is used.
        let tlb = unsafe { SoftTlb::new(mem.as_mut_ptr()) };
        (mem, tlb)
    }

    #[test]
    fn a_filled_page_reaches_its_frame_for_the_rights_it_was_filled_with() {
        let (_mem, mut t) = tables();
        t.fill(0x12345, 0x7000_0000, false);
        assert_eq!(t.lookup(0x12345, false), Some(0x7000_0000));
        assert_eq!(t.lookup(0x12345, true), None);
        t.fill(0x12346, 0x7000_3000, true);
        assert_eq!(t.lookup(0x12346, true), Some(0x7000_3000));
        assert_eq!(t.lookup(0x12346, false), Some(0x7000_3000));
        // Another page with the same slot is not found.
        assert_eq!(t.lookup(0x02345, false), None);
    }

    #[test]
    fn the_frame_value_plus_the_low_16_bits_is_the_host_address() {
        let (mem, mut t) = tables();
        t.fill(0xabcde, 0x5555_0000, true);
        let slot = 0xbcde;
        let v = mem[SOFT_ENTRIES + slot];
        let lin: u32 = 0xabcd_e123;
        assert_eq!(v.wrapping_add(u64::from(lin & 0xffff)), 0x5555_0123);
        assert_eq!(mem[slot], tag_of(0xabcde));
        // What translated code computes: tag + page + 1 is zero on a match.
        assert_eq!(mem[slot].wrapping_add(0xabcde + 1), 0);
    }

    #[test]
    fn dropping_pages_ranges_writes_and_everything() {
        let (_mem, mut t) = tables();
        for p in 0..40 {
            t.fill(0x100 + p, 0x1000_0000 + (p as usize) * 4096, true);
        }
        t.drop_page(0x100);
        assert_eq!(t.lookup(0x100, false), None);
        t.drop_write(0x101);
        assert_eq!(t.lookup(0x101, true), None);
        assert!(t.lookup(0x101, false).is_some());
        t.drop_range(0x102, 3);
        assert_eq!(t.lookup(0x104, false), None);
        assert!(t.lookup(0x105, false).is_some());
        t.drop_range(0x110, 100);
        assert_eq!(t.lookup(0x120, false), None);
        assert!(t.lookup(0x10f, true).is_some());
        t.drop_writes();
        assert_eq!(t.lookup(0x10f, true), None);
        assert!(t.lookup(0x10f, false).is_some());
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.lookup(0x10f, false), None);
    }

    #[test]
    fn refilling_a_page_lists_it_once_and_reports_a_new_write_entry_once() {
        let (_mem, mut t) = tables();
        assert!(t.fill(9, 0x4000_0000, true));
        assert!(!t.fill(9, 0x4000_0000, true));
        assert!(!t.fill(9, 0x4000_0000, false));
        assert!(t.fill(9, 0x4000_0000, true));
        for _ in 0..(2 * MAX_LISTED) {
            t.fill(10, 0x4000_1000, false);
        }
        assert_eq!(t.listed.len(), 2);
        assert!(!t.overflowed);
    }

    #[test]
    fn pages_dropped_and_filled_again_do_not_overflow_the_listing() {
        let (_mem, mut t) = tables();
        for _ in 0..(4 * MAX_LISTED) {
            t.fill(3, 0x5000_0000, true);
            t.drop_page(3);
        }
        t.fill(4, 0x5000_1000, false);
        assert!(!t.overflowed);
        t.drop_range(0, 1 << 20);
        assert_eq!(t.lookup(4, false), None);
    }

    #[test]
    fn a_read_fill_takes_back_an_older_write_entry_of_the_page() {
        let (_mem, mut t) = tables();
        t.fill(7, 0x2000_0000, true);
        t.fill(7, 0x2000_0000, false);
        assert_eq!(t.lookup(7, true), None);
        assert!(t.lookup(7, false).is_some());
    }

    #[test]
    fn a_region_filled_at_once_is_dropped_and_cleared_like_single_pages() {
        let (_mem, mut t) = tables();
        // Region 0x301 (pages 0xc0400-0xc07ff): every page but the 5th,
        // writable but the 7th; an older write entry of the 7th stays.
        t.fill(0xc0407, 0x6000_7000, true);
        t.fill_region(0x301, |k| {
            (k != 5).then(|| (0x6000_0000 + k as usize * 4096, k != 7))
        });
        assert_eq!(t.lookup(0xc0400, true), Some(0x6000_0000));
        assert_eq!(t.lookup(0xc07ff, false), Some(0x6000_0000 + 1023 * 4096));
        assert_eq!(t.lookup(0xc0405, false), None);
        assert_eq!(t.lookup(0xc0407, true), Some(0x6000_7000));
        // Listed as one entry: a range drop of more than 16 pages reaches
        // it.
        assert_eq!(t.listed, vec![0xc0407, REGION_ENTRY | 0x301]);
        t.drop_range(0xc0600, 0x100);
        assert_eq!(t.lookup(0xc0650, false), None);
        assert!(t.lookup(0xc0700, false).is_some());
        t.drop_writes();
        assert_eq!(t.lookup(0xc0400, true), None);
        assert!(t.lookup(0xc0400, false).is_some());
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.lookup(0xc0700, false), None);
        assert_eq!(t.lookup(0xc0407, false), None);
    }

    #[test]
    fn regions_filled_over_each_other_are_listed_once_each_and_cleared() {
        let (_mem, mut t) = tables();
        // 67 regions: the last three take the slots of the first three.
        for r in 0..67 {
            t.fill_region(r, |k| Some((0x7000_0000 + k as usize * 4096, false)));
            t.fill_region(r, |_| None);
        }
        assert_eq!(t.listed.len(), 67);
        t.compact_listing();
        assert_eq!(t.listed.len(), 64);
        let last = 66 * 1024;
        assert!(t.lookup(last, false).is_some());
        t.clear();
        assert_eq!(t.lookup(last, false), None);
        assert!(t.is_empty());
    }

    #[test]
    fn past_the_listing_limit_a_clear_still_empties_everything() {
        let (_mem, mut t) = tables();
        for p in 0..(MAX_LISTED as u32 + 10) {
            t.fill(p, 0x3000_0000, false);
        }
        let last = MAX_LISTED as u32 + 9;
        assert!(t.lookup(last, false).is_some());
        t.drop_range(0, 1 << 20);
        assert_eq!(t.lookup(last, false), None);
        assert!(t.is_empty());
    }
}
