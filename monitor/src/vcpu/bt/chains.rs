//! Cross-page chaining through each view's chain table
//! (`translator::translate::UnitRequest::chain_slots_from`,
//! `shadowmmu::LinearWindow::set_chain_entry`; docs/translator.md,
//! "Branches to another page under paging").
//!
//! With guest paging, a direct branch to another linear page cannot be
//! chained in the translation (which every address space shares): the page
//! may map another frame in another space. Each such site has a slot `k`
//! and jumps through entry `k` of the current view's chain table. An entry
//! leads to the site's own stub (a `ChainSlotMiss` exit) until the monitor
//! sets it, in that view only, to the translation its target's page leads
//! to through that view's mapping; it then also sets the entries of the
//! other sites known to branch into the same page, as the indirect-branch
//! table is filled a page at a time.
//!
//! Invariants:
//! - For every slot below [`ChainSites::next`] and every view of every
//!   cached space, the entry holds the slot's stub, or the host address of
//!   a live translation of the slot's target, in the slot's mode, made from
//!   the frame the view maps the target's linear page to. A jump table's
//!   key slot (`translator::translate::SlotKind::TableKey`) always holds its
//!   key, which is no host address (zero, or the upper half all ones:
//!   not canonical): the translator only loads it, and a jump through it
//!   would fault in the host, never reach code.
//! - An entry set to a translation is listed in its space's `chained`
//!   under the target's linear page. Every change of a view's mapping of a
//!   page (a drop, a fill with another frame) puts the entries listed under
//!   that page back on their stubs; the death of a translation puts back,
//!   in every view, the entries of the sites branching to its EIP that
//!   hold its address. Putting an entry back is always safe, so a stale
//!   listing only costs time; listings are sets, so they stay bounded.
//! - A code-cache flush forgets every slot; slots are numbered from 0
//!   again, and every new slot's entry is written in every view before any
//!   translation that reads it runs.

use super::spaces::AddressSpace;
use super::BtCore;
use codecache::{TransId, TransKey};
use rustc_hash::FxHashMap as HashMap;
use translator::translate::SlotKind;

/// The mode recorded for a jump table's key slot: no translation's.
const KEY_SLOT_MODE: u32 = u32::MAX;

/// Slots left free at the end, more than one unit ever takes (a jump
/// table takes 512).
const SLOTS_SPARE: usize = 4096;

/// The chain-table slots handed out since the last flush.
#[derive(Default)]
pub(super) struct ChainSites {
    /// Slot -> host address of its stub.
    stubs: Vec<u64>,
    /// Slot -> (target EIP, mode bits of the translation it wants).
    targets: Vec<(u32, u32)>,
    /// (target's linear page, mode bits) -> the slots branching there.
    by_page: HashMap<(u32, u32), Vec<u32>>,
    /// Slot -> whether its entry was ever set (in any view): only those
    /// are set ahead when a view finds another slot's target page.
    used: Vec<bool>,
    /// (mode bits, targets) -> the first slot of the host jump table made
    /// for them (`translator::translate::JumpTable::slots`).
    host_tables: HashMap<(u32, Vec<u32>), u32>,
}

impl ChainSites {
    /// The slot the next unit's first site takes, if slots are left.
    pub(super) fn next(&self) -> Option<u32> {
        (self.stubs.len() + SLOTS_SPARE <= shadowmmu::CHAIN_SLOTS)
            .then_some(self.stubs.len() as u32)
    }

    /// Every slot's stub, by slot (what a new view's entries start as).
    pub(super) fn stubs(&self) -> &[u64] {
        &self.stubs
    }

    /// The first slot of the host jump table made for `targets` in mode
    /// `mode`, if one was.
    pub(super) fn host_table(&self, mode: u32, targets: &[u32]) -> Option<u32> {
        self.host_tables.get(&(mode, targets.to_vec())).copied()
    }

    /// Records that the host jump table for `targets` in mode `mode`
    /// starts at slot `first` (its slots were registered).
    pub(super) fn note_host_table(&mut self, mode: u32, targets: Vec<u32>, first: u32) {
        self.host_tables.entry((mode, targets)).or_insert(first);
    }

    /// Forgets every slot (the code cache was flushed).
    pub(super) fn clear(&mut self) {
        *self = ChainSites::default();
    }
}

impl BtCore {
    /// Records the chain slots of a unit just placed at `host_base`, in
    /// mode `mode`, and points every view's entries at their stubs.
    pub(super) fn register_chain_slots(
        &mut self,
        slots: &[translator::translate::ChainSlot],
        host_base: u64,
        mode: u32,
    ) {
        let cs_base = self.sys.segment(crate::cpu::Seg::Cs).base;
        for s in slots {
            debug_assert_eq!(s.slot as usize, self.chains.stubs.len());
            let table_branch = match s.kind {
                SlotKind::TableKey(key) => {
                    self.register_key_slot(s.slot, key);
                    continue;
                }
                SlotKind::TableBranch => true,
                SlotKind::Branch => false,
            };
            let stub = host_base + s.stub as u64;
            self.chains.stubs.push(stub);
            self.chains.targets.push((s.target, mode));
            // A jump table's entries are set ahead from the start: its
            // entries share a few targets, and each would miss once
            // otherwise.
            self.chains.used.push(table_branch);
            let page = cs_base.wrapping_add(s.target) >> 12;
            self.chains
                .by_page
                .entry((page, mode))
                .or_default()
                .push(s.slot);
            for space in self.spaces.iter_mut().flatten() {
                for view in space.views.iter_mut() {
                    view.set_chain_entry(s.slot, stub);
                }
            }
        }
    }

    /// Records a jump table's key slot `slot`, whose entry holds `key` in
    /// every view: its "stub", which nothing puts it back from. Its target
    /// is none (no mode matches [`KEY_SLOT_MODE`]) and it is listed under
    /// no page, so no miss, set-ahead or unchaining touches it.
    fn register_key_slot(&mut self, slot: u32, key: u64) {
        self.chains.stubs.push(key);
        self.chains.targets.push((0, KEY_SLOT_MODE));
        self.chains.used.push(false);
        for space in self.spaces.iter_mut().flatten() {
            for view in space.views.iter_mut() {
                view.set_chain_entry(slot, key);
            }
        }
    }

    /// A `ChainSlotMiss` exit: the site of slot `exit_site` branched to
    /// EIP through an entry not set for the current view. Finds the
    /// target's translation through this view's mapping, sets the entry
    /// (and those of the other sites into the same page), and goes on
    /// there.
    pub(super) fn chain_slot_miss(&mut self) -> super::Event {
        self.stats.exits_chain_slot_miss += 1;
        let slot = self.state.exit_site as u32;
        let eip = self.state.eip;
        let id = match self.translation_for(eip, 0) {
            Ok(id) => id,
            Err(event) => return event,
        };
        // Translating may have flushed the cache, and the slot numbers with
        // it: only a slot that still branches to EIP in this mode is set.
        let Some(&(target, mode)) = self.chains.targets.get(slot as usize) else {
            return super::Event::Continue;
        };
        let key = self.cache.get(id).key;
        if key.mode != mode || target != eip {
            return super::Event::Continue;
        }
        let cs_base = self.sys.segment(crate::cpu::Seg::Cs).base;
        let page = cs_base.wrapping_add(eip) >> 12;
        let mut set = vec![(slot, id)];
        let others: Vec<u32> = self
            .chains
            .by_page
            .get(&(page, mode))
            .map(|sites| {
                sites
                    .iter()
                    .copied()
                    .filter(|k| *k != slot && self.chains.used[*k as usize])
                    .collect()
            })
            .unwrap_or_default();
        for other in others {
            let target = self.chains.targets[other as usize].0;
            let linear = cs_base.wrapping_add(target);
            let phys = (key.phys & !0xfff) | (linear & 0xfff);
            if let Some(found) = self.cache.lookup(&TransKey {
                phys,
                eip: target,
                mode,
            }) {
                set.push((other, found));
            }
        }
        self.set_chain_entries(page, &set);
        super::Event::Continue
    }

    /// Points the current view's entries at translations (slot,
    /// translation), whose targets lie in linear page `page`.
    fn set_chain_entries(&mut self, page: u32, set: &[(u32, TransId)]) {
        let view = self.view;
        self.stats.chain_entries_set += set.len() as u64;
        let hosts: Vec<(u32, u64)> = set
            .iter()
            .map(|(k, id)| (*k, self.cache.exec_addr(self.cache.get(*id).code_offset)))
            .collect();
        for (k, _) in set {
            self.chains.used[*k as usize] = true;
        }
        let stubs = &self.chains.stubs;
        let space = self.spaces[self.space]
            .as_mut()
            .expect("the current space exists");
        let listed = space.chained[view].entry(page).or_default();
        for (k, host) in hosts {
            let window = &mut space.views[view];
            // An entry off its stub is listed already (under this page:
            // an entry is only set for its own target's page).
            if window.chain_entry(k) == stubs[k as usize] {
                listed.push(k);
            }
            window.set_chain_entry(k, host);
        }
    }

    /// Puts back on their stubs the entries set to translation `id`, which
    /// died: those of the sites branching to its EIP, in every view.
    pub(super) fn unchain_translation(&mut self, id: TransId) {
        let t = self.cache.get(id);
        let (eip, mode) = (t.key.eip, t.key.mode);
        let host = self.cache.exec_addr(t.code_offset);
        let cs_base = self.sys.segment(crate::cpu::Seg::Cs).base;
        let page = cs_base.wrapping_add(eip) >> 12;
        let Some(sites) = self.chains.by_page.get(&(page, mode)) else {
            return;
        };
        for &k in sites {
            if self.chains.targets[k as usize].0 != eip {
                continue;
            }
            let stub = self.chains.stubs[k as usize];
            for space in self.spaces.iter_mut().flatten() {
                for (view, listed) in space.views.iter_mut().zip(space.chained.iter_mut()) {
                    if view.chain_entry(k) == host {
                        view.set_chain_entry(k, stub);
                        if let Some(slots) = listed.get_mut(&page) {
                            slots.retain(|s| *s != k);
                        }
                    }
                }
            }
        }
    }
}

/// Puts back on their stubs the entries of `view` of `space` set for
/// linear pages `first..first + pages` (`stubs`: every slot's stub).
pub(super) fn unchain_range(
    space: &mut AddressSpace,
    view: usize,
    first: u32,
    pages: u32,
    stubs: &[u64],
) {
    let end = u64::from(first) + u64::from(pages);
    let chained = &mut space.chained[view];
    if chained.is_empty() {
        return;
    }
    let in_range = |p: u32| u64::from(p) >= u64::from(first) && u64::from(p) < end;
    let gone: Vec<u32> = if pages == 1 {
        if !chained.contains_key(&first) {
            return;
        }
        vec![first]
    } else if u64::from(pages) > chained.len() as u64 {
        chained.keys().copied().filter(|p| in_range(*p)).collect()
    } else {
        (first..(end as u32).max(first))
            .filter(|p| chained.contains_key(p))
            .collect()
    };
    for page in gone {
        for k in chained.remove(&page).unwrap_or_default() {
            if let Some(stub) = stubs.get(k as usize) {
                space.views[view].set_chain_entry(k, *stub);
            }
        }
    }
}
