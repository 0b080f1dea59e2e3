//! How often each translated unit was entered, for the `--stats` estimate
//! of guest instructions executed (units entered times their length).
//!
//! Invariants:
//! * A slot's address never changes while a translation that increments it
//!   can run: slots live in boxed chunks that are never freed or moved, and
//!   a slot is handed out again only after [`EntryCounts::retire_all`],
//!   which the cache flush calls when no translation is left.
//! * Translated code increments a slot only while the monitor is not
//!   reading it (one thread runs both), so relaxed loads see every entry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per chunk.
const CHUNK: usize = 1024;

/// Entry counters of the live translations, and the total of the retired.
#[derive(Default)]
pub struct EntryCounts {
    chunks: Vec<Box<[AtomicU64; CHUNK]>>,
    /// Guest instructions of the translation using each slot, by slot.
    lengths: Vec<u32>,
    /// Guest instructions counted in translations flushed since.
    retired: u64,
}

impl EntryCounts {
    /// The address of the counter the next translation increments on entry;
    /// the slot is taken by [`EntryCounts::commit`].
    pub fn next_slot(&mut self) -> u64 {
        let index = self.lengths.len();
        if index / CHUNK == self.chunks.len() {
            self.chunks
                .push(Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        }
        self.slot(index).as_ptr() as u64
    }

    /// Takes the slot [`EntryCounts::next_slot`] named, for a translation of
    /// `guest_insns` instructions.
    pub fn commit(&mut self, guest_insns: u32) {
        self.lengths.push(guest_insns);
    }

    /// Every translation is gone: folds their counts into the retired total
    /// and frees the slots.
    pub fn retire_all(&mut self) {
        self.retired += self.live_insns();
        for index in 0..self.lengths.len() {
            self.slot(index).store(0, Ordering::Relaxed);
        }
        self.lengths.clear();
    }

    /// Guest instructions executed so far, estimated.
    pub fn guest_insns(&self) -> u64 {
        self.retired + self.live_insns()
    }

    fn live_insns(&self) -> u64 {
        self.lengths
            .iter()
            .enumerate()
            .map(|(index, &len)| self.slot(index).load(Ordering::Relaxed) * u64::from(len))
            .sum()
    }

    fn slot(&self, index: usize) -> &AtomicU64 {
        &self.chunks[index / CHUNK][index % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What translated code does on entry.
    fn enter(address: u64, times: u64) {
        // SAFETY: `address` is a live slot's AtomicU64 (from next_slot).
        let slot = unsafe { &*(address as *const AtomicU64) };
        slot.fetch_add(times, Ordering::Relaxed);
    }

    #[test]
    fn total_is_entries_times_lengths() {
        let mut counts = EntryCounts::default();
        let a = counts.next_slot();
        counts.commit(3);
        let b = counts.next_slot();
        counts.commit(10);
        enter(a, 5);
        enter(b, 2);
        assert_eq!(counts.guest_insns(), 5 * 3 + 2 * 10);
    }

    #[test]
    fn a_slot_not_committed_is_handed_out_again() {
        let mut counts = EntryCounts::default();
        let a = counts.next_slot();
        assert_eq!(counts.next_slot(), a, "the translation did not fit");
        counts.commit(1);
        assert_ne!(counts.next_slot(), a);
    }

    #[test]
    fn retired_counts_survive_a_flush_and_slots_restart_at_zero() {
        let mut counts = EntryCounts::default();
        let a = counts.next_slot();
        counts.commit(4);
        enter(a, 10);
        counts.retire_all();
        assert_eq!(counts.guest_insns(), 40);
        let again = counts.next_slot();
        assert_eq!(again, a);
        counts.commit(1);
        assert_eq!(counts.guest_insns(), 40, "the reused slot starts at zero");
    }

    #[test]
    fn slots_keep_their_address_across_chunks() {
        let mut counts = EntryCounts::default();
        let first = counts.next_slot();
        counts.commit(1);
        for _ in 0..3 * CHUNK {
            counts.next_slot();
            counts.commit(1);
        }
        enter(first, 7);
        assert_eq!(counts.guest_insns(), 7);
    }
}
