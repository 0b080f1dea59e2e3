//! An indirect-branch table (`translator::ibtc::Ibtc`) together with the
//! linear pages its entries' EIPs lie in, so that dropping the mappings of
//! some pages drops exactly their entries without scanning the table.
//!
//! Two kinds are used (see docs/ARCHITECTURE.md, "Indirect branches and
//! address spaces"): one per cached address space, for the modes of CPL 3,
//! and one shared by every space, for the supervisor modes, which holds
//! entries of global pages (PTE.G with CR4.PGE: the guest promises they
//! map alike in every space, as a global TLB entry survives a CR3 write)
//! and, until the next address-space switch, entries of other pages.
//!
//! Invariants:
//! - Every entry of the table is recorded under the linear page of its
//!   EIP (CS base + EIP of its tag's mode): listed in `Few`, or its tag,
//!   with the EIP of the page's first byte in that mode, in `Many`.
//! - `local` names every page with an entry that is valid in the current
//!   address space only (the shared table's non-global pages).
//! - A global page's record holds the guest frame it mapped when its
//!   entries were made; all of them were made for that frame.

use std::collections::{BTreeMap, BTreeSet};
use translator::ibtc::Ibtc;

/// Entries listed per page before the page falls back to its tags.
const LISTED_PER_PAGE: usize = 64;

/// Bytes of a page.
const PAGE_SIZE: u32 = 4096;

/// The entries of one linear page.
enum PageEntries {
    /// (tag, EIP, EIP of the page's first byte in the tag's mode) of each
    /// entry made.
    Few(Vec<(u32, u32, u32)>),
    /// Too many to list: (tag, EIP of the page's first byte in the tag's
    /// mode) of each tag with entries.
    Many(Vec<(u32, u32)>),
}

/// What an entry's validity depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// A table of one address space: the space's own mappings.
    ThisSpace,
    /// A global page mapping this guest frame, alike in every space.
    Global {
        /// The frame the page maps.
        frame: u32,
    },
    /// A page of the current space only (dropped at a switch).
    Local,
}

/// The entries of one page and the frame a global page maps.
struct PageRecord {
    entries: PageEntries,
    global_frame: Option<u32>,
}

/// An indirect-branch table and where its entries are.
#[derive(Default)]
pub(super) struct BranchTable {
    table: Ibtc,
    pages: BTreeMap<u32, PageRecord>,
    local: BTreeSet<u32>,
}

impl BranchTable {
    /// The table set the supervisor modes share, indexed so that the
    /// kernel's aligned entry points do not crowd into a sixteenth of it
    /// (see `translator::ibtc::mixed_slot`).
    pub(super) fn shared() -> BranchTable {
        BranchTable {
            table: Ibtc::with_mixed_index(),
            ..BranchTable::default()
        }
    }

    /// Host address of the table (for `CpuState::ibtc` or `ibtc_shared`).
    pub(super) fn addr(&self) -> u64 {
        self.table.addr()
    }

    /// The host code `eip` maps to in the mode of `tag`, if any.
    pub(super) fn get(&self, eip: u32, tag: u32) -> Option<u64> {
        self.table.get(eip, tag)
    }

    /// Maps `eip` (at linear address `linear`) in the mode of `tag` to
    /// `host`, valid as `scope` says.
    pub(super) fn insert(&mut self, (linear, eip, tag): (u32, u32, u32), host: u64, scope: Scope) {
        let lpage = linear >> 12;
        let global_frame = match scope {
            Scope::Global { frame } => Some(frame),
            Scope::ThisSpace | Scope::Local => None,
        };
        if self
            .pages
            .get(&lpage)
            .is_some_and(|r| r.global_frame != global_frame)
        {
            // The page maps something else than when its entries were made.
            self.drop_page(lpage);
        }
        self.table.insert(eip, tag, host);
        if scope == Scope::Local {
            self.local.insert(lpage);
        }
        let record = self.pages.entry(lpage).or_insert_with(|| PageRecord {
            entries: PageEntries::Few(Vec::new()),
            global_frame,
        });
        let entry = (tag, eip, eip.wrapping_sub(linear & (PAGE_SIZE - 1)));
        let entries = &mut record.entries;
        match entries {
            PageEntries::Few(list) if list.contains(&entry) => {}
            PageEntries::Few(list) if list.len() < LISTED_PER_PAGE => list.push(entry),
            PageEntries::Few(list) => {
                let mut tags = vec![(tag, entry.2)];
                for &(t, _, start) in list.iter() {
                    if !tags.iter().any(|(seen, _)| *seen == t) {
                        tags.push((t, start));
                    }
                }
                *entries = PageEntries::Many(tags);
            }
            PageEntries::Many(tags) => {
                if !tags.iter().any(|(t, _)| *t == tag) {
                    tags.push((tag, entry.2));
                }
            }
        }
    }

    /// Drops the entry of `eip`, in every tag, that leads to `host` (a
    /// translation that died); its page record stays (a record may name
    /// more than the table holds).
    pub(super) fn remove_entry(&mut self, eip: u32, host: u64) {
        self.table.remove_entry(eip, host);
    }

    /// Drops the entries of the `pages` linear pages from `first`.
    pub(super) fn drop_pages(&mut self, first: u32, pages: u32) {
        if pages == 1 {
            if self.pages.contains_key(&first) {
                self.drop_page(first);
            }
            return;
        }
        for (lpage, _) in self.pages_in(first, pages) {
            self.drop_page(lpage);
        }
    }

    /// The pages from `first` on (`pages` of them) that have entries, with
    /// the frame each maps if it is a global page.
    pub(super) fn pages_in(&self, first: u32, pages: u32) -> Vec<(u32, Option<u32>)> {
        if pages == 1 {
            return self
                .pages
                .get(&first)
                .map(|r| vec![(first, r.global_frame)])
                .unwrap_or_default();
        }
        let end = u64::from(first) + u64::from(pages);
        self.pages
            .range(first..)
            .take_while(|(p, _)| u64::from(**p) < end)
            .map(|(p, r)| (*p, r.global_frame))
            .collect()
    }

    /// Drops every entry, touching only the recorded ones (cheaper than
    /// [`Self::clear`] when few pages have entries).
    pub(super) fn drop_all(&mut self) {
        let pages: Vec<u32> = self.pages.keys().copied().collect();
        for lpage in pages {
            self.drop_page(lpage);
        }
    }

    /// Drops the entries valid in the current address space only (at a
    /// switch to another space).
    pub(super) fn drop_local(&mut self) {
        for lpage in std::mem::take(&mut self.local) {
            self.drop_page(lpage);
        }
    }

    fn drop_page(&mut self, lpage: u32) {
        self.local.remove(&lpage);
        match self.pages.remove(&lpage).map(|r| r.entries) {
            Some(PageEntries::Few(list)) => {
                for (tag, eip, _) in list {
                    self.table.remove_eip(tag, eip);
                }
            }
            Some(PageEntries::Many(tags)) => {
                for (tag, start) in tags {
                    self.table.remove_eips(tag, start, PAGE_SIZE);
                }
            }
            None => {}
        }
    }

    /// Empties the table.
    pub(super) fn clear(&mut self) {
        self.table.clear();
        self.pages.clear();
        self.local.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_a_page_drops_its_entries_and_keeps_the_neighbours() {
        let mut t = BranchTable::default();
        t.insert((0x1004, 0x1004, 0), 0xa, Scope::ThisSpace);
        t.insert((0x1ff0, 0x1ff0, 2), 0xb, Scope::ThisSpace);
        t.insert((0x2000, 0x2000, 0), 0xc, Scope::ThisSpace);
        t.drop_pages(1, 1);
        assert_eq!(t.get(0x1004, 0), None);
        assert_eq!(t.get(0x1ff0, 2), None);
        assert_eq!(t.get(0x2000, 0), Some(0xc));
    }

    #[test]
    fn a_page_with_more_entries_than_listed_is_dropped_by_scanning_its_tags() {
        let mut t = BranchTable::default();
        for n in 0..(LISTED_PER_PAGE as u32 + 10) {
            t.insert(
                (0x10_000 + 4 * n, 0x10_000 + 4 * n, 3),
                0x100 + u64::from(n),
                Scope::ThisSpace,
            );
        }
        t.insert((0x11_000, 0x11_000, 3), 0x999, Scope::ThisSpace);
        t.drop_pages(0x10, 1);
        for n in 0..(LISTED_PER_PAGE as u32 + 10) {
            assert_eq!(t.get(0x10_000 + 4 * n, 3), None, "entry {n}");
        }
        assert_eq!(t.get(0x11_000, 3), Some(0x999));
    }

    #[test]
    fn a_scan_follows_the_cs_base_of_the_tag() {
        let mut t = BranchTable::default();
        for n in 0..(LISTED_PER_PAGE as u32 + 1) {
            // CS base 0x1000: EIP 4n is at linear 0x1000 + 4n (page 1).
            t.insert(
                (0x1000 + 4 * n, 4 * n, 5),
                0x100 + u64::from(n),
                Scope::ThisSpace,
            );
        }
        t.drop_pages(1, 1);
        assert_eq!(t.get(0, 5), None);
        assert_eq!(t.get(4 * LISTED_PER_PAGE as u32, 5), None);
    }

    #[test]
    fn dropping_all_empties_the_table() {
        let mut t = BranchTable::default();
        t.insert((0x1004, 0x1004, 0), 0xa, Scope::Global { frame: 3 });
        t.insert((0x9004, 0x9004, 1), 0xb, Scope::Local);
        t.drop_all();
        assert_eq!(t.get(0x1004, 0), None);
        assert_eq!(t.get(0x9004, 1), None);
        assert!(t.pages_in(0, 1 << 20).is_empty());
    }

    #[test]
    fn local_entries_go_at_a_switch_and_the_others_stay() {
        let mut t = BranchTable::default();
        t.insert(
            (0xc000_0000, 0xc000_0000, 1),
            0xa,
            Scope::Global { frame: 7 },
        );
        t.insert((0x0804_8000, 0x0804_8000, 1), 0xb, Scope::Local);
        t.drop_local();
        assert_eq!(t.get(0xc000_0000, 1), Some(0xa));
        assert_eq!(t.get(0x0804_8000, 1), None);
    }

    #[test]
    fn a_page_that_maps_another_frame_loses_the_entries_of_the_old_one() {
        let mut t = BranchTable::default();
        t.insert(
            (0xc000_0000, 0xc000_0000, 1),
            0xa,
            Scope::Global { frame: 7 },
        );
        t.insert(
            (0xc000_0010, 0xc000_0010, 1),
            0xb,
            Scope::Global { frame: 8 },
        );
        assert_eq!(t.get(0xc000_0000, 1), None);
        assert_eq!(t.get(0xc000_0010, 1), Some(0xb));
        assert_eq!(t.pages_in(0xc0000, 1), vec![(0xc0000, Some(8))]);
    }

    #[test]
    fn an_entry_overwritten_by_another_page_survives_the_first_page_drop() {
        let mut t = BranchTable::default();
        // Same low 16 bits: one table slot.
        t.insert((0x1000, 0x1000, 0), 0xa, Scope::ThisSpace);
        t.insert((0x1_1000, 0x1_1000, 0), 0xb, Scope::ThisSpace);
        t.drop_pages(0x1, 1);
        assert_eq!(t.get(0x1_1000, 0), Some(0xb));
    }
}
