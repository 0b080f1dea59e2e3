//! Folded displacements (`translator::translate::UnitRequest::
//! fold_displacements`): translated code reaches a flat `[reg + disp]` as
//! `[r15 + reg + disp]`, with no 32-bit wrap-around. An address that wraps
//! (a negative displacement on a small register, a register near 4 GiB)
//! lands in a guard beside the window instead; the fault handler then runs
//! the instruction alone, unfolded (a one-instruction unit never folds),
//! and remembers it, so that its units are made again without folding it.
//!
//! Invariant: an instruction named here is never folded in a unit made
//! after it was named (until the list is forgotten as a whole, past
//! [`MAX_UNFOLDED`]: a forgotten instruction that wraps again is named
//! again, which costs a fault, never a wrong access).

use super::BtCore;
use shadowmmu::PAGE_SIZE;
use std::collections::HashMap;

/// Instructions remembered before the list starts over.
const MAX_UNFOLDED: usize = 4096;

/// The instructions whose folded address wrapped, by guest frame.
#[derive(Default)]
pub(super) struct Unfolded {
    /// Guest frame -> offsets of its unfolded instructions.
    by_frame: HashMap<u32, Vec<u16>>,
    /// Instructions in `by_frame`.
    count: usize,
}

impl Unfolded {
    /// Names the instruction at guest-physical `phys`; whether it is new.
    fn note(&mut self, phys: u32) -> bool {
        if self.count >= MAX_UNFOLDED {
            self.by_frame.clear();
            self.count = 0;
        }
        let offset = (phys % PAGE_SIZE) as u16;
        let list = self.by_frame.entry(phys / PAGE_SIZE).or_default();
        if list.contains(&offset) {
            return false;
        }
        list.push(offset);
        self.count += 1;
        true
    }

    /// The EIPs of the unfolded instructions of a unit that starts at
    /// `eip` (linear `linear`, guest-physical `phys`): those at or after it
    /// in its page.
    pub(super) fn eips(&self, eip: u32, linear: u32, phys: u32) -> Vec<u32> {
        self.by_frame
            .get(&(phys / PAGE_SIZE))
            .map_or_else(Vec::new, |list| eips_from(list, eip, linear))
    }
}

/// The EIPs, for a unit that starts at `eip` (linear `linear`), of the
/// instructions at page offsets `offsets` (all of its page: a unit may
/// follow a branch back before its start).
pub(super) fn eips_from(offsets: &[u16], eip: u32, linear: u32) -> Vec<u32> {
    let start = linear % PAGE_SIZE;
    offsets
        .iter()
        .map(|o| eip.wrapping_add(u32::from(*o)).wrapping_sub(start))
        .collect()
}

/// Whether host address `host` lies where a folded access that wrapped
/// around 4 GiB lands, for the window at `base`: the 512 MiB before it or
/// the guard after it, which a folded `[reg + disp]` reaches 2 GiB into
/// and a folded `[index*8 + disp]` 30 GiB (see
/// `translator::translate::FOLDED_DISPLACEMENTS`,
/// `shadowmmu::WINDOW_GUARD_AFTER`).
pub(super) fn wrapped_access(base: usize, host: u64) -> bool {
    let folded = translator::translate::FOLDED_DISPLACEMENTS;
    let host = host as i128 - base as i128;
    let after = 1i128 << 32;
    (i128::from(folded.start)..0).contains(&host)
        || (after..after + shadowmmu::WINDOW_GUARD_AFTER as i128).contains(&host)
}

impl BtCore {
    /// The instruction at guest-physical `phys` reached a guard because its
    /// folded address wrapped: its units are made again without folding it.
    pub(super) fn unfold(&mut self, phys: u32) {
        self.stats.unfolded_instructions += 1;
        if self.unfolded.note(phys) {
            self.kill_units_containing(phys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_instruction_is_listed_for_every_unit_of_its_page() {
        let mut u = Unfolded::default();
        assert!(u.note(0x5123));
        assert!(!u.note(0x5123));
        assert_eq!(u.eips(0x0804_8100, 0x0804_8100, 0x5100), vec![0x0804_8123]);
        assert_eq!(
            u.eips(0x0804_8124, 0x0804_8124, 0x5124),
            vec![0x0804_8123],
            "a unit may follow a branch back before its start"
        );
        assert_eq!(
            u.eips(0x124, 0x0804_8124, 0x5124),
            vec![0x123],
            "EIPs in the unit's CS"
        );
        assert!(u.eips(0x0804_8100, 0x0804_8100, 0x6100).is_empty());
    }

    #[test]
    fn the_list_starts_over_when_full() {
        let mut u = Unfolded::default();
        for k in 0..MAX_UNFOLDED as u32 {
            u.note(k * PAGE_SIZE);
        }
        assert!(u.note(0x10));
        assert_eq!(u.count, 1);
    }

    #[test]
    fn wrapped_accesses_are_the_guards_a_folded_address_reaches() {
        let base = 0x7f00_0000_0000usize;
        let b = base as u64;
        assert!(wrapped_access(base, b - 4));
        assert!(wrapped_access(base, b - (1 << 29)));
        assert!(!wrapped_access(base, b - (1 << 29) - 1));
        assert!(!wrapped_access(base, b));
        assert!(!wrapped_access(base, b + 0xffff_ffff));
        assert!(wrapped_access(base, b + (1 << 32)));
        assert!(wrapped_access(base, b + (1 << 32) + 0x7fff_ffff));
        // [index*8 + disp] with the largest index and displacement.
        assert!(wrapped_access(base, b + 8 * 0xffff_ffff + 0x7fff_ffff));
        assert!(!wrapped_access(base, b + (36 << 30)));
    }
}
