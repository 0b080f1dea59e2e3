//! The indirect-branch translation cache: direct-mapped tables from
//! guest EIP to host code address, one per translation mode, probed by
//! emitted code without touching flags.
//!
//! Each translation mode the run loop uses since the last flush gets a
//! small number, its *tag* (`UnitRequest::ibtc_tag`, below [`TAGS`]); the
//! tag's table is region `tag` of one reservation, so a unit reaches its
//! mode's table by a constant displacement and the probe costs the same in
//! every mode. A mode change, inline or in the monitor, needs no table
//! change.
//!
//! An entry stores the key `!EIP` (64 bits: the upper half all ones) and
//! the host address; the probe computes `key + target + 1` in 64 bits
//! with one `lea`, which is zero only for the entry of that EIP (the
//! target is zero-extended). An all-zero entry therefore matches no EIP,
//! so the reservation starts (and is emptied back to) zeros, and an exit
//! request's empty table is a zero mapping that is never written. A probe
//! of a constant target compares the low 32 bits (`!EIP`, one value per
//! EIP), where an empty entry would match 0xffffffff: that target takes
//! the general probe.
//!
//! Invariant: every entry is zero or maps the EIP it stores, in its
//! region's mode, to the entry of a live translation.

/// Entries per table (indexed by the low 16 bits of the guest EIP).
pub const ENTRIES: usize = 1 << 16;

/// Tables (mode tags) in one reservation: a run loop flushes before it
/// needs more.
pub const TAGS: u32 = 32;

/// Bytes of one table: the displacement between two tags' tables.
pub const TABLE_BYTES: usize = ENTRIES * std::mem::size_of::<Entry>();

/// One table entry: 16 bytes, the key ([`key_of`]) first.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Entry {
    key: u64,
    host: u64,
}

/// The key an entry for `eip` stores: `!EIP` in 64 bits, never 0.
pub fn key_of(eip: u32) -> u64 {
    !u64::from(eip)
}

impl Entry {
    /// The entry that matches no EIP (all zeros).
    const EMPTY: Entry = Entry { key: 0, host: 0 };

    fn is_empty(&self) -> bool {
        self.key == 0 && self.host == 0
    }
}

/// A reservation of zeroed memory for `TAGS` tables.
struct Region {
    ptr: *mut Entry,
}

impl Region {
    /// An anonymous, private, zeroed mapping (`writable`: read-write,
    /// else read-only).
    fn new(writable: bool) -> Region {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                TAGS as usize * TABLE_BYTES,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "cannot reserve the indirect-branch tables"
        );
        Region { ptr: p.cast() }
    }

    fn table(&self, tag: u32) -> &[Entry] {
        assert!(tag < TAGS, "indirect-branch tag {tag} out of range");
        // SAFETY: the mapping holds TAGS tables of ENTRIES entries, lives
        // as long as self, and entries are plain data (any bits valid).
        unsafe { std::slice::from_raw_parts(self.ptr.add(tag as usize * ENTRIES), ENTRIES) }
    }

    fn table_mut(&mut self, tag: u32) -> &mut [Entry] {
        assert!(tag < TAGS, "indirect-branch tag {tag} out of range");
        // SAFETY: as in `table`; &mut self makes this the only reference
        // handed out from the Rust side (emitted code only reads).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(tag as usize * ENTRIES), ENTRIES) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`, which nothing uses
        // any more (the vCPU that emitted code against it is gone).
        unsafe { libc::munmap(self.ptr.cast(), TAGS as usize * TABLE_BYTES) };
    }
}

// SAFETY: the region is plain memory owned by one Ibtc; moving it to
// another thread moves that ownership.
unsafe impl Send for Region {}

/// Entries [`Ibtc`] remembers writing since it was last emptied; past
/// that, emptying it writes the whole of every table with entries. A
/// short-lived process's set holds a few hundred entries (busybox
/// fork+exec in Debian's kernel: about 800), and zeroing a whole table
/// writes 1 MiB.
pub const TOUCHED_MAX: usize = 4096;

/// The tables, plus which tags have entries and which entries were
/// written (to empty only those).
pub struct Ibtc {
    region: Region,
    used: u64,
    /// Indexed by [`mixed_slot`] rather than [`plain_slot`].
    mixed: bool,
    /// Entries written since the last emptying, as `tag * ENTRIES + slot`
    /// (unless `touched_overflow`).
    touched: Vec<u32>,
    /// More than [`TOUCHED_MAX`] entries were written: `touched` no
    /// longer lists them all.
    touched_overflow: bool,
}

impl Default for Ibtc {
    fn default() -> Self {
        Ibtc {
            region: Region::new(true),
            used: 0,
            mixed: false,
            touched: Vec::new(),
            touched_overflow: false,
        }
    }
}

/// A table set in which nothing matches, for exit requests: zeros that
/// are never written.
pub struct EmptyIbtc {
    region: Region,
}

impl Default for EmptyIbtc {
    fn default() -> Self {
        EmptyIbtc {
            region: Region::new(false),
        }
    }
}

impl EmptyIbtc {
    /// Host address of the tables (for exit requests).
    pub fn addr(&self) -> u64 {
        self.region.ptr as u64
    }
}

impl Ibtc {
    /// A table set indexed by [`mixed_slot`] where the host allows it (see
    /// [`mixed_index`]): the one the supervisor modes share.
    pub fn with_mixed_index() -> Ibtc {
        Ibtc {
            mixed: mixed_index(),
            ..Ibtc::default()
        }
    }

    /// Whether this set is indexed by [`mixed_slot`].
    pub fn is_mixed(&self) -> bool {
        self.mixed
    }

    /// The slot of `eip` in this set's tables.
    fn slot(&self, eip: u32) -> usize {
        if self.mixed {
            mixed_slot(eip)
        } else {
            plain_slot(eip)
        }
    }

    /// Host address of the tables (for `CpuState::ibtc`); tag `t`'s table
    /// is at `addr() + t * TABLE_BYTES`.
    pub fn addr(&self) -> u64 {
        self.region.ptr as u64
    }

    /// Empties every table: the entries written since the last emptying,
    /// or every table with entries when there were too many to list.
    pub fn clear(&mut self) {
        if self.touched_overflow {
            for tag in 0..TAGS {
                if self.used & (1 << tag) != 0 {
                    self.region.table_mut(tag).fill(Entry::EMPTY);
                }
            }
        } else {
            for &index in &self.touched {
                let (tag, slot) = (index / ENTRIES as u32, index as usize % ENTRIES);
                self.region.table_mut(tag)[slot] = Entry::EMPTY;
            }
        }
        self.touched.clear();
        self.touched_overflow = false;
        self.used = 0;
    }

    /// Maps `eip` in the mode of `tag` to `host`.
    pub fn insert(&mut self, eip: u32, tag: u32, host: u64) {
        self.used |= 1 << tag;
        let slot = self.slot(eip);
        let e = &mut self.region.table_mut(tag)[slot];
        let was_empty = e.is_empty();
        e.key = key_of(eip);
        e.host = host;
        if was_empty {
            self.note_touched(tag, slot);
        }
    }

    /// Lists entry `slot` of tag `tag` as written (see `touched`).
    fn note_touched(&mut self, tag: u32, slot: usize) {
        if self.touched_overflow {
            return;
        }
        if self.touched.len() >= TOUCHED_MAX {
            self.touched_overflow = true;
            self.touched = Vec::new();
            return;
        }
        self.touched.push(tag * ENTRIES as u32 + slot as u32);
    }

    /// Drops entries whose host address lies in `[start, end)`.
    pub fn remove_range(&mut self, start: u64, end: u64) {
        for tag in 0..TAGS {
            if self.used & (1 << tag) == 0 {
                continue;
            }
            for e in self.region.table_mut(tag) {
                if e.host >= start && e.host < end {
                    *e = Entry::EMPTY;
                }
            }
        }
    }

    /// Drops the entry of `eip`, in every tag, that leads to `host` (a
    /// translation that died).
    pub fn remove_entry(&mut self, eip: u32, host: u64) {
        let key = key_of(eip);
        for tag in 0..TAGS {
            if self.used & (1 << tag) == 0 {
                continue;
            }
            let slot = self.slot(eip);
            let e = &mut self.region.table_mut(tag)[slot];
            if e.key == key && e.host == host {
                *e = Entry::EMPTY;
            }
        }
    }

    /// Drops the entry of `eip` in the mode of `tag`, if it is there.
    pub fn remove_eip(&mut self, tag: u32, eip: u32) {
        if tag >= TAGS || self.used & (1 << tag) == 0 {
            return;
        }
        let slot = self.slot(eip);
        let e = &mut self.region.table_mut(tag)[slot];
        if e.key == key_of(eip) {
            *e = Entry::EMPTY;
        }
    }

    /// Drops the entries of tag `tag` for the `len` EIPs from `start`
    /// (wrapping).
    pub fn remove_eips(&mut self, tag: u32, start: u32, len: u32) {
        if tag >= TAGS || self.used & (1 << tag) == 0 {
            return;
        }
        let mixed = self.mixed;
        let table = self.region.table_mut(tag);
        for n in 0..len.min(ENTRIES as u32) {
            let eip = start.wrapping_add(n);
            let slot = if mixed {
                mixed_slot(eip)
            } else {
                plain_slot(eip)
            };
            let e = &mut table[slot];
            if e.key == key_of(eip) {
                *e = Entry::EMPTY;
            }
        }
    }

    /// The tags that may have entries, as a bit mask.
    pub fn used_tags(&self) -> u64 {
        self.used
    }

    /// The mapping of `eip` in the mode of `tag`, if any.
    pub fn get(&self, eip: u32, tag: u32) -> Option<u64> {
        let e = &self.region.table(tag)[self.slot(eip)];
        (e.key == key_of(eip) && e.host != 0).then_some(e.host)
    }
}

/// Whether a table set may be indexed by [`mixed_slot`]: the host has
/// BMI2, whose RORX computes it flag-free in the probe.
pub fn mixed_index() -> bool {
    std::arch::is_x86_feature_detected!("bmi2")
}

/// The slot of `eip` by its low 16 bits: one dependent instruction in the
/// probe (`movzx`), for the tables of one address space.
pub fn plain_slot(eip: u32) -> usize {
    (eip & 0xffff) as usize
}

/// The slot of `eip` with bits 4-19 mixed into bits 0-15,
/// `low16(eip + (eip >> 4))`: three dependent instructions in the probe.
/// Function entry points are 16-byte aligned, so the low 16 bits alone
/// give them 4,096 slots of 65,536: the kernel's indirect-call targets in
/// the shared set conflicted there (about 325 misses per busybox
/// fork+exec, 133 left with this index), while a switch-dispatched
/// interpreter in one address space paid 17% for the longer probe.
pub fn mixed_slot(eip: u32) -> usize {
    (eip.wrapping_add(eip >> 4) & 0xffff) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mixed_set_finds_and_drops_what_it_holds() {
        let mut t = Ibtc::with_mixed_index();
        assert_eq!(t.is_mixed(), mixed_index());
        // Two aligned entries 64 KiB apart: one slot each when mixed.
        t.insert(0xc100_0010, 2, 0x7000);
        t.insert(0xc101_0010, 2, 0x8000);
        assert_eq!(t.get(0xc101_0010, 2), Some(0x8000));
        if t.is_mixed() {
            assert_eq!(t.get(0xc100_0010, 2), Some(0x7000));
        }
        t.remove_eips(2, 0xc101_0000, 0x100);
        assert_eq!(t.get(0xc101_0010, 2), None);
        t.remove_eip(2, 0xc100_0010);
        assert_eq!(t.get(0xc100_0010, 2), None);
    }

    #[test]
    fn clearing_empties_the_entries_written_since_the_last_clear() {
        let mut t = Ibtc::default();
        t.insert(0x1000, 0, 0x7000);
        t.insert(0x2000, 3, 0x8000);
        t.remove_eip(3, 0x2000);
        t.insert(0x2000, 3, 0x9000);
        t.clear();
        assert_eq!(t.get(0x1000, 0), None);
        assert_eq!(t.get(0x2000, 3), None);
        assert_eq!(t.used_tags(), 0);
        assert!(t.region.table(0).iter().all(Entry::is_empty));
        assert!(t.region.table(3).iter().all(Entry::is_empty));
    }

    #[test]
    fn clearing_after_more_entries_than_it_lists_empties_whole_tables() {
        let mut t = Ibtc::default();
        for n in 0..(TOUCHED_MAX as u32 + 10) {
            t.insert(n, 1, 0x7000 + u64::from(n));
        }
        t.insert(0x4_0000, 2, 0x100);
        t.clear();
        assert!((0..TOUCHED_MAX as u32 + 10).all(|n| t.get(n, 1).is_none()));
        assert_eq!(t.get(0x4_0000, 2), None);
        assert!(t.region.table(1).iter().all(Entry::is_empty));
        // Listing starts over after the clear.
        t.insert(5, 1, 0x5);
        t.clear();
        assert_eq!(t.get(5, 1), None);
    }

    #[test]
    fn aligned_entry_points_spread_over_the_whole_table() {
        if !mixed_index() {
            return;
        }
        // 4,096 function entries 16 bytes apart in one 64 KiB block: with
        // the low 16 bits alone they would fill 4,096 slots; mixed, they
        // take distinct slots, and so do the next block's.
        let slots: std::collections::HashSet<usize> = (0..8192u32)
            .map(|n| mixed_slot(0xc100_0000 + 16 * n))
            .collect();
        assert_eq!(slots.len(), 8192);
        assert!(slots.iter().all(|&s| s < ENTRIES));
    }

    #[test]
    fn removing_an_entry_or_a_range_leaves_the_others() {
        let mut t = Ibtc::default();
        t.insert(0x1000, 0, 0xaaaa);
        t.insert(0x1004, 1, 0xbbbb);
        t.insert(0x2000, 0, 0xcccc);
        t.remove_entry(0x1000, 0xdddd);
        assert_eq!(t.get(0x1000, 0), Some(0xaaaa), "another host address");
        t.remove_entry(0x1000, 0xaaaa);
        assert_eq!(t.get(0x1000, 0), None);
        t.remove_eips(0, 0x1000, 0x1000);
        assert_eq!(t.get(0x1004, 1), Some(0xbbbb), "another tag");
        assert_eq!(t.get(0x2000, 0), Some(0xcccc), "outside the range");
        t.remove_eips(1, 0x1000, 0x1000);
        assert_eq!(t.get(0x1004, 1), None);
    }

    #[test]
    fn empty_table_matches_no_eip() {
        let t = Ibtc::default();
        for eip in [0u32, 1, 0xffff, 0x10000, 0xffff_ffff] {
            assert_eq!(t.get(eip, 0), None);
            assert_eq!(t.get(eip, TAGS - 1), None);
        }
    }

    #[test]
    fn insert_then_get_and_remove_range() {
        let mut t = Ibtc::default();
        t.insert(0x1234_5678, 0, 0x7000);
        assert_eq!(t.get(0x1234_5678, 0), Some(0x7000));
        assert_eq!(t.get(0x0000_5678, 0), None);
        t.remove_range(0x7000, 0x7001);
        assert_eq!(t.get(0x1234_5678, 0), None);
    }

    #[test]
    fn an_entry_answers_only_for_its_mode_tag() {
        let mut t = Ibtc::default();
        t.insert(0x1000, 3, 0x7000);
        assert_eq!(t.get(0x1000, 3), Some(0x7000));
        assert_eq!(t.get(0x1000, 0), None);
        t.insert(0x1000, 0, 0x8000);
        assert_eq!(t.get(0x1000, 0), Some(0x8000));
        assert_eq!(
            t.get(0x1000, 3),
            Some(0x7000),
            "each mode has its own table"
        );
        t.clear();
        assert_eq!(t.get(0x1000, 3), None);
        assert_eq!(t.get(0x1000, 0), None);
    }

    #[test]
    fn every_eip_has_a_key_no_empty_entry_matches() {
        let mut t = Ibtc::default();
        for eip in [0, 1, 0x7fff_ffff, 0xffff_ffff] {
            assert_eq!(t.get(eip, 0), None, "{eip:#x} before");
            assert_ne!(key_of(eip), 0);
            // The probe's sum, key + EIP + 1, is zero for the EIP's key
            // and not for an empty entry's.
            assert_eq!(key_of(eip).wrapping_add(u64::from(eip) + 1), 0);
            assert_ne!(u64::from(eip) + 1, 0);
            t.insert(eip, 0, 0x7000 + u64::from(eip & 0xff));
            assert_eq!(t.get(eip, 0), Some(0x7000 + u64::from(eip & 0xff)));
        }
    }

    #[test]
    fn the_exit_request_tables_are_zero() {
        let e = EmptyIbtc::default();
        // SAFETY: reading the first and the last entry of the mapping.
        let (first, last) = unsafe {
            let p = e.addr() as *const u64;
            (*p, *p.add(TAGS as usize * TABLE_BYTES / 8 - 1))
        };
        assert_eq!((first, last), (0, 0));
    }
}
