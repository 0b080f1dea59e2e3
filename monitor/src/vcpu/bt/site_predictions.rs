//! Inline caches of indirect calls and jumps
//! (`translator::translate::UnitRequest::branch_predictions`): the few
//! targets (at most `MAX_CACHED_TARGETS`) each `call r/m32` or `jmp r/m32`
//! site was seen to take, so that its translation compares with them in
//! turn and calls or jumps to the one that matches directly instead of
//! probing the indirect-branch table.
//!
//! A site's targets are learned two ways:
//! - from its misses (the exit names the site, `CpuState::exit_site`): an
//!   indirect-branch table miss, and, while its cache has room, any
//!   target its cache does not hold (the translation exits instead of
//!   probing the table, which may hold the target already: a site's other
//!   targets reached first from elsewhere would never be learned
//!   otherwise). Its units are made again with each new target cached
//!   after the ones before; a miss for one target more than the cache
//!   holds gives the cache up, after which the site probes the table;
//! - when a time sample finds a unit with sites that have no cache (their
//!   targets were in the table already, so they never missed): those
//!   sites exit at each of their next [`LEARN_RUNS`] runs
//!   (`UnitRequest::learning_sites`), and get a cache of the targets they
//!   went to if those were few enough, none otherwise.
//!
//! A site found to take more targets keeps no cache: a chain of compares
//! that fail most of the time costs more than the table probe.
//!
//! Invariants:
//! - A cached target is only a guess: the site still loads its target and
//!   compares, so a stale or wrong one costs time, never correctness.
//! - Sites are kept by guest-physical address, so every address space
//!   sharing the code shares its caches; at most [`MAX_SITES`] are kept,
//!   and all are forgotten past that (they are learned again).
//! - A unit is made again only when what it should hold changed (a cache
//!   made or given up, learning started), so each site costs at most
//!   three translations of its units.

use super::BtCore;
use codecache::TransId;
use rustc_hash::FxHashMap as HashMap;
use shadowmmu::PAGE_SIZE;
use translator::translate::MAX_CACHED_TARGETS;

/// Sites kept at most.
const MAX_SITES: usize = 1 << 16;

/// Runs of a site watched before its cache is decided: twice as many as
/// a cache holds, so that a site with more targets shows them.
const LEARN_RUNS: u8 = 2 * MAX_CACHED_TARGETS as u8;

/// Distinct targets of a site, in the order they were first seen: at most
/// `MAX_CACHED_TARGETS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Targets {
    list: [u32; MAX_CACHED_TARGETS],
    len: u8,
}

impl Targets {
    fn as_slice(&self) -> &[u32] {
        &self.list[..usize::from(self.len)]
    }

    /// Adds `target` if it is new; false when it is new and there is no
    /// room for it.
    fn add(&mut self, target: u32) -> bool {
        if self.as_slice().contains(&target) {
            return true;
        }
        let Some(free) = self.list.get_mut(usize::from(self.len)) else {
            return false;
        };
        *free = target;
        self.len += 1;
        true
    }
}

/// What is known of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Being learned: `runs` runs watched, going to `targets`, and
    /// `several` whether to more than those.
    Learning {
        runs: u8,
        targets: Targets,
        several: bool,
    },
    /// Few enough targets: cached.
    Cached(Targets),
    /// More: no cache.
    Several,
}

/// The sites seen, by guest frame, and the units with sites not seen yet.
#[derive(Default)]
pub(super) struct SitePredictions {
    by_frame: HashMap<u32, Vec<(u16, Seen)>>,
    count: usize,
    /// Translation (a `TransId`'s index) -> guest-physical addresses of its
    /// sites that have no cache and are not being learned.
    uncached: HashMap<u32, Vec<u32>>,
    /// Sites whose learning a sample started, whose units are still to be
    /// made again.
    to_learn: Vec<u32>,
}

impl SitePredictions {
    fn seen_mut(&mut self, phys: u32) -> Option<&mut Seen> {
        let offset = (phys % PAGE_SIZE) as u16;
        self.by_frame
            .get_mut(&(phys / PAGE_SIZE))?
            .iter_mut()
            .find(|(o, _)| *o == offset)
            .map(|(_, seen)| seen)
    }

    fn insert(&mut self, phys: u32, seen: Seen) {
        if self.count >= MAX_SITES {
            self.by_frame.clear();
            self.count = 0;
        }
        let offset = (phys % PAGE_SIZE) as u16;
        self.by_frame
            .entry(phys / PAGE_SIZE)
            .or_default()
            .push((offset, seen));
        self.count += 1;
    }

    /// Notes a table miss (or a learning run) of the site at
    /// guest-physical `phys` for `target`; whether the site's units must
    /// be made again.
    fn note_miss(&mut self, phys: u32, target: u32) -> bool {
        let Some(seen) = self.seen_mut(phys) else {
            let mut targets = Targets::default();
            targets.add(target);
            self.insert(phys, Seen::Cached(targets));
            return true;
        };
        match *seen {
            Seen::Cached(targets) if targets.as_slice().contains(&target) => false,
            Seen::Cached(mut targets) => {
                *seen = if targets.add(target) {
                    Seen::Cached(targets)
                } else {
                    Seen::Several
                };
                true
            }
            Seen::Learning {
                runs,
                mut targets,
                several,
            } => {
                let several = !targets.add(target) || several;
                let runs = runs + 1;
                *seen = if runs < LEARN_RUNS {
                    Seen::Learning {
                        runs,
                        targets,
                        several,
                    }
                } else if several {
                    Seen::Several
                } else {
                    Seen::Cached(targets)
                };
                runs >= LEARN_RUNS
            }
            Seen::Several => false,
        }
    }

    /// Records translation `id`'s sites without a cache (guest-physical).
    pub(super) fn note_unit(&mut self, id: TransId, sites: Vec<u32>) {
        if !sites.is_empty() {
            self.uncached.insert(id.0, sites);
        }
    }

    /// Forgets translation `id`, which died.
    pub(super) fn forget_unit(&mut self, id: TransId) {
        self.uncached.remove(&id.0);
    }

    /// Forgets every translation (the code cache was flushed).
    pub(super) fn forget_units(&mut self) {
        self.uncached.clear();
        self.to_learn.clear();
    }

    /// A time sample found translation `id` about to run: its sites that
    /// have no cache and were never seen start being learned.
    fn sample(&mut self, id: TransId) {
        let Some(sites) = self.uncached.remove(&id.0) else {
            return;
        };
        for phys in sites {
            if self.seen_mut(phys).is_none() {
                self.insert(
                    phys,
                    Seen::Learning {
                        runs: 0,
                        targets: Targets::default(),
                        several: false,
                    },
                );
                self.to_learn.push(phys);
            }
        }
    }

    /// The cached targets (site EIP, target) and the sites being learned
    /// (EIPs) of a unit that starts at `eip` (linear `linear`,
    /// guest-physical `phys`): those of its whole page, sorted by site
    /// (each site's targets in the order they were seen).
    pub(super) fn for_unit(&self, eip: u32, linear: u32, phys: u32) -> (Vec<(u32, u32)>, Vec<u32>) {
        let (mut cached, mut learning) = (Vec::new(), Vec::new());
        let Some(list) = self.by_frame.get(&(phys / PAGE_SIZE)) else {
            return (cached, learning);
        };
        // Every site of the page: a unit may follow a branch back before
        // its start.
        let start = linear % PAGE_SIZE;
        for (offset, seen) in list {
            let site = eip.wrapping_add(u32::from(*offset)).wrapping_sub(start);
            match seen {
                Seen::Cached(targets) => {
                    cached.extend(targets.as_slice().iter().map(|t| (site, *t)))
                }
                Seen::Learning { .. } => learning.push(site),
                Seen::Several => {}
            }
        }
        // Stable: each site's targets stay in the order they were seen.
        cached.sort_by_key(|p| p.0);
        learning.sort_unstable();
        (cached, learning)
    }
}

impl BtCore {
    /// An `IndirectMiss` exit that names site `site` (an EIP in the current
    /// CS) whose target is EIP: learns it (see the module doc), making the
    /// site's units again when that changes what they should hold. Before
    /// the target is looked up, so that no unit it finds dies here.
    pub(super) fn learn_site_target(&mut self, site: u32) {
        if !self.inline_caches {
            return;
        }
        let linear = self
            .sys
            .segment(crate::cpu::Seg::Cs)
            .base
            .wrapping_add(site);
        let Ok(phys) = self.linear_to_phys(linear, false) else {
            return;
        };
        if self.site_predictions.note_miss(phys, self.state.eip) {
            self.stats.inline_caches_changed += 1;
            self.kill_units_containing(phys);
        }
    }

    /// A time sample found the unit at host address `rip` about to run:
    /// its sites without a cache start being learned (their units are
    /// made again at [`BtCore::learn_sampled_sites`]).
    pub(super) fn sample_sites(&mut self, rip: u64) {
        if !self.inline_caches || self.site_predictions.uncached.is_empty() {
            return;
        }
        if let Some(id) = self
            .cache
            .offset_of(rip)
            .and_then(|off| self.cache.find_by_offset(off))
        {
            self.site_predictions.sample(id);
        }
    }

    /// Makes again the units of the sites a sample started learning (at an
    /// exit request, once the guest's state was taken from them).
    pub(super) fn learn_sampled_sites(&mut self) {
        for phys in std::mem::take(&mut self.site_predictions.to_learn) {
            self.kill_units_containing(phys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_caches_each_target_it_misses_for_and_gives_up_past_the_most() {
        let mut p = SitePredictions::default();
        assert!(p.note_miss(0x5123, 0x0804_9000), "new: made again");
        assert!(!p.note_miss(0x5123, 0x0804_9000), "the same target");
        assert_eq!(
            p.for_unit(0x0804_8100, 0x0804_8100, 0x5100).0,
            vec![(0x0804_8123, 0x0804_9000)]
        );
        for k in 1..MAX_CACHED_TARGETS as u32 {
            assert!(p.note_miss(0x5123, 0x0804_9000 + k), "target {k}: added");
        }
        let cached = p.for_unit(0x0804_8100, 0x0804_8100, 0x5100).0;
        assert_eq!(cached.len(), MAX_CACHED_TARGETS);
        assert_eq!(cached[1], (0x0804_8123, 0x0804_9001), "in the order seen");
        assert!(!p.note_miss(0x5123, 0x0804_9001), "cached already");
        assert!(p.note_miss(0x5123, 0x0804_a000), "one too many");
        assert!(p.for_unit(0x0804_8100, 0x0804_8100, 0x5100).0.is_empty());
        assert!(!p.note_miss(0x5123, 0x0804_b000), "given up for good");
    }

    #[test]
    fn a_sampled_site_is_learned_over_its_next_runs() {
        let mut p = SitePredictions::default();
        p.note_unit(TransId(7), vec![0x5040, 0x5080, 0x50c0]);
        p.sample(TransId(7));
        assert_eq!(p.to_learn, vec![0x5040, 0x5080, 0x50c0]);
        assert_eq!(
            p.for_unit(0x1000, 0x1000, 0x5000),
            (vec![], vec![0x1040, 0x1080, 0x10c0])
        );
        for run in 1..LEARN_RUNS {
            assert!(!p.note_miss(0x5040, 0x2000), "run {run}");
            assert!(!p.note_miss(0x5080, 0x3000 + u32::from(run % 2)));
            assert!(!p.note_miss(0x50c0, 0x4000 + u32::from(run)));
        }
        assert!(p.note_miss(0x5040, 0x2000), "one target: cached");
        assert!(p.note_miss(0x5080, 0x3000), "two targets: both cached");
        assert!(p.note_miss(0x50c0, 0x4000), "sixteen targets: none");
        assert_eq!(
            p.for_unit(0x1000, 0x1000, 0x5000),
            (
                vec![(0x1040, 0x2000), (0x1080, 0x3001), (0x1080, 0x3000)],
                vec![]
            )
        );
        // A unit sampled again learns nothing more.
        p.note_unit(TransId(8), vec![0x5040]);
        p.sample(TransId(8));
        assert_eq!(p.to_learn.len(), 3);
    }

    #[test]
    fn a_unit_gets_the_cached_sites_of_its_whole_page() {
        let mut p = SitePredictions::default();
        p.note_miss(0x5180, 2);
        p.note_miss(0x5040, 1);
        p.note_miss(0x6040, 3);
        assert_eq!(
            p.for_unit(0x1020, 0x0804_8020, 0x5020).0,
            vec![(0x1040, 1), (0x1180, 2)]
        );
        assert_eq!(
            p.for_unit(0x1100, 0x0804_8100, 0x5100).0,
            vec![(0x1040, 1), (0x1180, 2)],
            "sites before the unit's start: it may follow a branch back there"
        );
    }
}
