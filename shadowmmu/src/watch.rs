//! The frame watcher: one place that knows, for every guest frame, why
//! writes to it must be seen (it holds translated code, or it is a page
//! directory or page table some cached address space was built from), and
//! what a write to it invalidates.
//!
//! Page tables are traced with a snapshot of their 1024 entries taken when
//! they are first watched. After a write the table is compared with its
//! snapshot, and every entry whose mapping changed becomes an
//! [`Invalidation`] of the linear pages built from it, in every address
//! space that uses the table. A leaf table goes *out of sync* (when
//! allowed) on the guest's first store to it
//! ([`FrameWatcher::unsync_before_write`], as KVM unsyncs a leaf shadow
//! page on its first write fault), or, for writes the monitor traces
//! itself, on the second before a flush: it stops being write-protected
//! and is compared with its snapshot only when the guest must flush
//! anyway ([`FrameWatcher::resync_all`]), as KVM's unsync shadow pages and
//! Xen's out-of-sync shadows do. The current address
//! space's page directory always stays in sync. The directory of a space
//! that is not current is not in use by the CPU: it goes *lazy* (stops
//! being write-protected) when the CPU leaves its space, and is brought
//! back in sync when its space becomes current again
//! ([`FrameWatcher::set_current_space`]), compared with its snapshot
//! first unless no mapping of it could have been written meanwhile; so a
//! dead process's directory reused as data costs no faults, and one
//! reused as a new process's directory keeps the mappings of every entry
//! that came back the same (the kernel's half).
//!
//! Invariants:
//! - A frame is write-protected in every host mapping of it in the
//!   current space, and in every other space's by the time that space
//!   becomes current, whenever [`FrameWatcher::write_protected`] says so:
//!   it holds translated code, or it is a watched table that is in sync.
//!   Exception: a frame protected only as the current space's directory
//!   ([`FrameWatcher::protected_only_as_current_directory`]) may stay
//!   writable in other spaces, since it goes lazy before they become
//!   current. (A mapping of a frame the watcher no longer protects may
//!   still be read-only until a store through it faults and maps it
//!   again.)
//! - A lazy table without `may_differ` equals its snapshot: no host
//!   mapping of it was writable since it went lazy (the monitor reports
//!   every mapping it makes writable, [`FrameWatcher::note_writable_mapping`]).
//! - For an in-sync table, the snapshot equals guest memory except for
//!   accessed and dirty bits the walker set (which change no mapping) and
//!   the guest write being reported; for an out-of-sync table the
//!   snapshot is what the shadow mappings built from it were built from
//!   (a superset of the truth is invalidated at the next resync).
//! - Every use recorded for a table names an address space that may hold
//!   mappings built from it; a space that is dropped is unwatched first.
//! - A lazy table is a directory of spaces none of which is current, and
//!   only a directory (no leaf use); its snapshot is what the spaces'
//!   mappings were built from.

use crate::frameset::FrameSet;
use crate::{GuestPhys, GuestRam};
// Keys are guest frames and addresses: a fast hash, not a keyed one (a
// guest that made its own lookups collide would only slow itself).
use rustc_hash::FxHashMap as HashMap;

const PRESENT: u32 = 1;
const ACCESSED: u32 = 0x20;
const DIRTY: u32 = 0x40;

/// Writes to an in-sync leaf table before it goes out of sync.
pub const UNSYNC_AFTER_WRITES: u32 = 2;
/// Writes to a table with no walk through it in between after which the
/// table is taken to be something else now (write flooding): it stops
/// being watched and the mappings built from it are dropped.
pub const FLOOD_WRITES: u32 = 32;

/// An address space the watcher knows tables of (the monitor's slot
/// number for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId(pub u32);

/// How an address space uses a table frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableUse {
    /// As its page directory.
    Directory,
    /// As the page table of the 4 MiB region `region` (linear >> 22).
    Leaf {
        /// The page-directory index.
        region: u32,
    },
}

/// Linear pages of one address space whose mappings may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// The address space.
    pub space: SpaceId,
    /// First linear page number.
    pub first_page: u32,
    /// Number of pages (1 or 1024).
    pub pages: u32,
}

/// What the monitor must do after the watcher saw writes or a flush.
///
/// Every walk makes and moves a few of these, so it stays at four lists
/// (96 bytes): with six, Rust moved it with calls to `memcpy`, and a PTE
/// rewrite + INVLPG + access cost about 40 cycles more (2026-12-03, AMD).
/// What is rarely needed waits in the watcher instead
/// ([`FrameWatcher::take_present`], [`FrameWatcher::take_protect_elsewhere`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Consequences {
    /// Mappings to drop.
    pub invalidations: Vec<Invalidation>,
    /// Frames that became write-protected (protect every mapping of them).
    pub protect: Vec<u32>,
    /// Frames that are no longer write-protected (their mappings may be
    /// made writable again, by dropping them and letting them refault).
    pub release: Vec<u32>,
    /// Address spaces whose page directory was flooded with writes: drop
    /// them (every mapping and use).
    pub zap: Vec<SpaceId>,
}

impl Consequences {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.invalidations.is_empty()
            && self.protect.is_empty()
            && self.release.is_empty()
            && self.zap.is_empty()
    }

    fn append(&mut self, mut other: Consequences) {
        self.invalidations.append(&mut other.invalidations);
        self.protect.append(&mut other.protect);
        self.release.append(&mut other.release);
        self.zap.append(&mut other.zap);
    }
}

/// Counters of the watcher, for `--stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Writes to in-sync tables seen (guest stores and monitor writes).
    pub traced_writes: u64,
    /// Times a leaf table went out of sync.
    pub unsyncs: u64,
    /// Out-of-sync tables compared with their snapshots on a guest flush.
    pub resyncs: u64,
    /// Tables no longer watched because writes flooded them.
    pub zaps: u64,
    /// Times a directory of a space that was not current went lazy.
    pub lazy_directories: u64,
    /// Lazy directories brought back in sync with no comparison (no
    /// mapping of them could be written meanwhile).
    pub lazy_unwritten: u64,
}

struct Table {
    snapshot: Box<[u32; 1024]>,
    uses: Vec<(SpaceId, TableUse)>,
    unsynced: bool,
    /// Unsynced as the directory of spaces that are not current (not in
    /// the out-of-sync list: compared when a space of it becomes current).
    lazy: bool,
    /// Lazy, and may have been written since it went lazy: some host
    /// mapping of it was writable then or has been made writable since,
    /// or the monitor wrote it. A lazy table without it equals its
    /// snapshot (every write to it would have faulted first).
    may_differ: bool,
    /// Writes since the last resync (for going out of sync).
    writes: u32,
    /// Writes since the last walk through the table (for flooding).
    unused_writes: u32,
}

impl Table {
    fn is_leaf_only(&self) -> bool {
        self.uses
            .iter()
            .all(|(_, u)| matches!(u, TableUse::Leaf { .. }))
    }

    /// Only the directory of spaces other than `current`.
    fn is_idle_directory(&self, current: Option<SpaceId>) -> bool {
        !self.uses.is_empty()
            && self
                .uses
                .iter()
                .all(|(s, u)| *u == TableUse::Directory && Some(*s) != current)
    }
}

/// The frame watcher (see the module documentation).
pub struct FrameWatcher {
    code: FrameSet,
    self_checking: FrameSet,
    tables: HashMap<u32, Table>,
    unsynced: Vec<u32>,
    /// Lazy directories (see [`Table::lazy`]).
    lazy_frames: FrameSet,
    /// Directories of the current space that were lazy and found
    /// unchanged (see [`Self::take_protect_elsewhere`]).
    protect_elsewhere: Vec<u32>,
    /// Pages to map ahead (see [`Self::take_present`]).
    present: Vec<(SpaceId, u32)>,
    /// The space the CPU runs in, if the monitor said.
    current: Option<SpaceId>,
    /// Counts the changes after which [`Self::watch`] may have something
    /// to do again for a use it recorded (a use or table forgotten, a
    /// table gone lazy or out of sync).
    epoch: u64,
    out_of_sync: bool,
    stats: WatchStats,
}

/// Whether changing an entry from `old` to `new` can change a mapping
/// built from it: anything but accessed and dirty bits being set, for an
/// entry that was present (nothing is built from a not-present entry: no
/// TLB entry either, SDM vol. 3A, 4.10.4.3, so making it present needs no
/// invalidation). A cleared accessed or dirty bit matters: the next access
/// (or write) must walk again to set it, so the mapping that lets it
/// through must go.
pub fn entry_change_matters(old: u32, new: u32) -> bool {
    let ad = ACCESSED | DIRTY;
    old & PRESENT != 0 && ((old ^ new) & !ad != 0 || old & !new & ad != 0)
}

impl FrameWatcher {
    /// A watcher for frames `0..frames`; `out_of_sync` allows leaf tables
    /// to go out of sync.
    pub fn new(frames: usize, out_of_sync: bool) -> FrameWatcher {
        FrameWatcher {
            code: FrameSet::with_capacity(frames),
            self_checking: FrameSet::with_capacity(frames),
            tables: HashMap::default(),
            unsynced: Vec::new(),
            lazy_frames: FrameSet::with_capacity(frames),
            protect_elsewhere: Vec::new(),
            present: Vec::new(),
            current: None,
            epoch: 0,
            out_of_sync,
            stats: WatchStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    /// Tables watched now, and how many of them are out of sync.
    pub fn tables(&self) -> (usize, usize) {
        (self.tables.len(), self.unsynced.len())
    }

    /// Allows or forbids out-of-sync leaf tables from now on (tables out
    /// of sync stay so until the next resync).
    pub fn set_out_of_sync(&mut self, on: bool) {
        self.out_of_sync = on;
    }

    /// Whether leaf tables may go out of sync.
    pub fn out_of_sync_allowed(&self) -> bool {
        self.out_of_sync
    }

    /// Whether every host mapping of `frame` must be read-only.
    pub fn write_protected(&self, frame: u32) -> bool {
        self.code.contains(frame) || self.tables.get(&frame).is_some_and(|t| !t.unsynced)
    }

    /// Whether a new host mapping of `frame` is to be read-only: it is
    /// write-protected, or it is a lazy directory (a write to it then
    /// faults once and is let through, and only then may the directory
    /// differ from its snapshot: see [`Self::note_writable_mapping`]).
    pub fn keeps_read_only(&self, frame: u32) -> bool {
        self.write_protected(frame) || self.lazy_frames.contains(frame)
    }

    /// Whether `frame` holds translated code.
    pub fn is_code(&self, frame: u32) -> bool {
        self.code.contains(frame)
    }

    /// Whether `frame` is a watched table that is in sync (writes to it
    /// must be reported with [`Self::table_written`]).
    pub fn is_synced_table(&self, frame: u32) -> bool {
        self.tables.get(&frame).is_some_and(|t| !t.unsynced)
    }

    /// Marks `frame` as holding translated code; true if it was not
    /// write-protected before (protect its mappings). A self-checking
    /// frame is never traced.
    pub fn trace_code(&mut self, frame: u32) -> bool {
        if self.self_checking.contains(frame) {
            return false;
        }
        let was = self.write_protected(frame);
        self.code.insert(frame) && !was
    }

    /// `frame` no longer holds translated code; true if it was traced for
    /// code.
    pub fn untrace_code(&mut self, frame: u32) -> bool {
        self.code.remove(frame)
    }

    /// Makes `frame` self-checking: its translations check their own bytes
    /// instead of the frame being write-protected for code (it must not be
    /// traced for code any more).
    pub fn set_self_checking(&mut self, frame: u32) {
        self.code.remove(frame);
        self.self_checking.insert(frame);
    }

    /// Whether translations made from `frame` must check themselves.
    pub fn is_self_checking(&self, frame: u32) -> bool {
        self.self_checking.contains(frame)
    }

    /// Every frame traced for code, emptied.
    pub fn clear_code(&mut self) {
        self.code.clear();
    }

    /// Changes whenever [`Self::watch`] of a use it recorded may have
    /// something to do again: while it stays the same, watching a table
    /// again for the same use changes nothing.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records that `space` uses `frame` (in `ram`) as `usage`, and that a
    /// walk went through it.
    pub fn watch(
        &mut self,
        frame: u32,
        space: SpaceId,
        usage: TableUse,
        ram: &GuestRam,
    ) -> Consequences {
        let mut out = Consequences::default();
        if let Some(t) = self.tables.get_mut(&frame) {
            t.unused_writes = 0;
            if t.lazy && usage != TableUse::Directory {
                // A dead space's directory is now another space's page
                // table: the dead space goes, as it was (the monitor
                // decides what of it to keep), and the table is compared
                // for nobody.
                out.zap.extend(t.uses.iter().map(|(s, _)| *s));
                t.uses.clear();
                self.epoch += 1;
            }
            if t.lazy || (t.unsynced && usage == TableUse::Directory) {
                // Directories in use and tables with a new use are in
                // sync: bring it back first.
                self.epoch += 1;
                out.append(self.bring_back_in_sync(frame, ram));
            }
            if let Some(t) = self.tables.get_mut(&frame) {
                if !t.uses.contains(&(space, usage)) {
                    t.uses.push((space, usage));
                }
            }
            return out;
        }
        let was_protected = self.write_protected(frame);
        self.tables.insert(
            frame,
            Table {
                snapshot: read_table(ram, frame),
                uses: vec![(space, usage)],
                unsynced: false,
                lazy: false,
                may_differ: false,
                writes: 0,
                unused_writes: 0,
            },
        );
        if !was_protected {
            out.protect.push(frame);
        }
        out
    }

    /// A walk used the entry at `addr`, which holds `value` now: the
    /// snapshot takes the accessed and dirty bits the walk set, so that a
    /// later clear of them by the guest is seen. In an out-of-sync table
    /// the entry may also have changed since the snapshot; a mapping is
    /// about to be built from `value`, so the snapshot takes it, and what
    /// other spaces built from the old value is invalidated now.
    pub fn note_walked_entry(&mut self, addr: GuestPhys, value: u32) -> Consequences {
        let mut out = Consequences::default();
        let Some(t) = self.tables.get_mut(&addr.frame()) else {
            return out;
        };
        // A walk went through it: not flooded with unused writes.
        t.unused_writes = 0;
        let i = (addr.0 & 0xfff) / 4;
        let e = &mut t.snapshot[i as usize];
        let old = *e;
        let ad = ACCESSED | DIRTY;
        if (old ^ value) & !ad == 0 {
            *e |= value & ad;
            return out;
        }
        *e = value;
        if !entry_change_matters(old, value) {
            return out;
        }
        let mut ended = Vec::new();
        entry_changed(&t.uses, i, old, &mut out, &mut ended);
        for (table, space, usage) in ended {
            out.append(self.end_use(table, space, usage));
        }
        out
    }

    /// A write was made to the in-sync table `frame` (now in `ram`):
    /// compares it with its snapshot and says what changed; a leaf table
    /// written again before a flush goes out of sync, one flooded with
    /// writes no walk went through stops being watched.
    pub fn table_written(&mut self, frame: u32, ram: &GuestRam) -> Consequences {
        let Some(t) = self.tables.get_mut(&frame) else {
            return Consequences::default();
        };
        if t.unsynced {
            // Compared when it is brought back in sync.
            t.may_differ = true;
            return Consequences::default();
        }
        if self.out_of_sync && t.is_idle_directory(self.current) {
            // No CPU uses it: compared when one of its spaces is entered.
            self.make_lazy(frame, true);
            let mut out = Consequences::default();
            if !self.code.contains(frame) {
                out.release.push(frame);
            }
            return out;
        }
        self.stats.traced_writes += 1;
        t.writes += 1;
        t.unused_writes += 1;
        let flooded = t.unused_writes >= FLOOD_WRITES;
        let unsync =
            !flooded && self.out_of_sync && t.writes >= UNSYNC_AFTER_WRITES && t.is_leaf_only();
        let mut out = self.resync(frame, ram, true);
        if flooded {
            out.append(self.zap_table(frame));
        } else if unsync {
            if let Some(t) = self.tables.get_mut(&frame) {
                t.unsynced = true;
                self.unsynced.push(frame);
                self.stats.unsyncs += 1;
                self.epoch += 1;
                if !self.code.contains(frame) {
                    out.release.push(frame);
                }
            }
        }
        out
    }

    /// A guest store is about to write the in-sync table `frame` (it
    /// faulted on the table's write protection). A table that only serves
    /// as leaf table goes out of sync at once, and an idle directory goes
    /// lazy, as KVM unsyncs a leaf shadow page on its first write fault:
    /// the store then runs as it is, with no comparison until the guest
    /// flushes, which the guest must do before it relies on a changed
    /// entry (a not-present entry made present is never mapped, so its
    /// first use walks the table). Returns whether the table stopped being
    /// write-protected; `false` (out-of-sync tables not allowed, a
    /// directory in use, a frame that also holds code, a table flooded
    /// with writes no walk went through) leaves the store to be traced
    /// through [`FrameWatcher::table_written`].
    pub fn unsync_before_write(&mut self, frame: u32) -> bool {
        if !self.out_of_sync || self.code.contains(frame) {
            return false;
        }
        let current = self.current;
        let Some(t) = self.tables.get_mut(&frame) else {
            return false;
        };
        if t.unsynced || t.uses.is_empty() {
            return false;
        }
        if t.is_idle_directory(current) {
            self.make_lazy(frame, true);
            return true;
        }
        if !t.is_leaf_only() {
            return false;
        }
        // Counted as a write no walk went through, so that a table reused
        // as data still floods (the traced write that reaches the limit
        // zaps it).
        t.unused_writes += 1;
        if t.unused_writes >= FLOOD_WRITES {
            return false;
        }
        t.unsynced = true;
        self.unsynced.push(frame);
        self.stats.unsyncs += 1;
        self.epoch += 1;
        true
    }

    /// The guest flushes its TLB (CR3 write, INVLPG, CR4.PGE change):
    /// every out-of-sync table is compared with its snapshot and
    /// write-protected again.
    pub fn resync_all(&mut self, ram: &GuestRam) -> Consequences {
        let mut out = Consequences::default();
        for frame in std::mem::take(&mut self.unsynced) {
            self.stats.resyncs += 1;
            out.append(self.bring_back_in_sync(frame, ram));
        }
        out
    }

    /// INVLPG of `lin` in `space`: the entry of `lin` in the out-of-sync
    /// leaf table `space` uses for it (if any) is compared with its
    /// snapshot; the table stays out of sync (its other entries, like
    /// other TLB entries, need no refresh yet), as KVM does.
    pub fn sync_entry(
        &mut self,
        space: SpaceId,
        directory: u32,
        lin: u32,
        ram: &GuestRam,
    ) -> Consequences {
        let mut out = Consequences::default();
        let usage = (space, TableUse::Leaf { region: lin >> 22 });
        let Some(frame) = self.unsynced_leaf_of(directory, usage) else {
            return out;
        };
        let i = (lin >> 12) & 1023;
        let mut word = [0u8; 4];
        // A table beyond RAM reads as zeros, as in `read_table`.
        let _ = ram.read(GuestPhys(frame.wrapping_mul(4096) + i * 4), &mut word);
        let now = u32::from_le_bytes(word);
        let Some(t) = self.tables.get_mut(&frame) else {
            return out;
        };
        let old = t.snapshot[i as usize];
        if old != now && entry_change_matters(old, now) {
            entry_changed(&t.uses, i, old, &mut out, &mut Vec::new());
        }
        t.snapshot[i as usize] = now;
        out
    }

    /// The out-of-sync leaf table `usage` names (a space and a region),
    /// found through `directory`, the space's directory: in sync while its
    /// space is current, so its entry for the region names the table the
    /// region's mappings were built from (a change of the entry ended that
    /// use). Any out-of-sync table with that use if the directory is not
    /// watched.
    fn unsynced_leaf_of(&self, directory: u32, usage: (SpaceId, TableUse)) -> Option<u32> {
        let TableUse::Leaf { region } = usage.1 else {
            return None;
        };
        let has_use = |f: &u32| {
            self.tables
                .get(f)
                .is_some_and(|t| t.unsynced && t.uses.contains(&usage))
        };
        match self.tables.get(&directory).filter(|t| !t.unsynced) {
            Some(d) => {
                let entry = d.snapshot[region as usize & 1023];
                Some(entry >> 12)
                    .filter(|_| entry & PRESENT != 0)
                    .filter(has_use)
            }
            None => self.unsynced.iter().copied().find(has_use),
        }
    }

    /// The CPU now runs in `space`, whose directory is `directory`, having
    /// left the space whose directory is `left` (if it was another; with
    /// whether some host mapping of it is writable): with out-of-sync
    /// tables allowed, the directory left
    /// goes lazy at once if it serves no other purpose (no CPU uses it
    /// now; a read-only mapping of it stays so, and a write through one
    /// faults once and is then let through). The directory of `space`,
    /// if lazy, is traced again: compared with its snapshot first (what
    /// changed is invalidated) if it may have been written; one found
    /// unchanged is also to be write-protected in the other spaces
    /// ([`Self::take_protect_elsewhere`]), so that entering it again
    /// needs no comparison, while one that was written keeps its
    /// writable mappings elsewhere (written again, it costs a comparison
    /// instead of a fault).
    pub fn set_current_space(
        &mut self,
        space: SpaceId,
        directory: u32,
        left: Option<(u32, bool)>,
        ram: &GuestRam,
    ) -> Consequences {
        self.current = Some(space);
        if let Some((frame, writable)) = left {
            self.leave_directory(frame, writable);
        }
        let entered = self.lazy_frames.contains(directory)
            && self
                .tables
                .get(&directory)
                .is_some_and(|t| t.uses.contains(&(space, TableUse::Directory)));
        if entered {
            self.enter_lazy_directory(directory, ram)
        } else {
            Consequences::default()
        }
    }

    /// Brings the lazy directory `frame` of the space just entered back
    /// in sync (see [`Self::set_current_space`]).
    fn enter_lazy_directory(&mut self, frame: u32, ram: &GuestRam) -> Consequences {
        let Some(t) = self.tables.get(&frame) else {
            return Consequences::default();
        };
        if !t.may_differ {
            self.stats.lazy_unwritten += 1;
            self.end_lazy(frame);
            return Consequences::default();
        }
        let mut now = read_entries(ram, frame);
        let unchanged = *t.snapshot == now;
        if !unchanged && !self.code.contains(frame) {
            restore_directory_accessed_bits(&t.snapshot, &mut now, frame, ram);
        }
        let out = self.bring_back_in_sync_to(frame, &now);
        if unchanged {
            self.protect_elsewhere.push(frame);
        }
        out
    }

    /// The directories of the current space that were lazy and were found
    /// unchanged when it was entered: write-protect their mappings in the
    /// other spaces too (before those become current), so that the next
    /// time the space is entered no comparison is needed. (Kept here, not
    /// in [`Consequences`], which stays small: it is made and moved on
    /// every walk.)
    pub fn take_protect_elsewhere(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.protect_elsewhere)
    }

    /// Linear pages (with the space) whose leaf entry a traced write found
    /// made present with its accessed bit already set: the monitor may map
    /// them ahead of their first access, as KVM prefetches a guest PTE
    /// written while shadowed (an entry whose accessed bit is clear is
    /// left to the access, which must set it). Not at flushes or INVLPG:
    /// in Debian's kernel, 300 fork+execs made 36,000 entries present that
    /// an INVLPG then named, and mapping them ahead added 70,000 host
    /// calls while sparing 1,300 faults.
    pub fn take_present(&mut self) -> Vec<(SpaceId, u32)> {
        std::mem::take(&mut self.present)
    }

    /// Whether [`Self::take_present`] has pages.
    pub fn has_present(&self) -> bool {
        !self.present.is_empty()
    }

    /// Makes the in-sync table `frame` lazy.
    fn make_lazy(&mut self, frame: u32, may_differ: bool) {
        let Some(t) = self.tables.get_mut(&frame) else {
            return;
        };
        t.unsynced = true;
        t.lazy = true;
        t.may_differ = may_differ;
        self.epoch += 1;
        self.lazy_frames.insert(frame);
        self.stats.lazy_directories += 1;
    }

    /// Takes the lazy table `frame` off the lazy list, in sync (the caller
    /// compared it if it had to).
    fn end_lazy(&mut self, frame: u32) {
        self.lazy_frames.remove(frame);
        if let Some(t) = self.tables.get_mut(&frame) {
            t.unsynced = false;
            t.lazy = false;
            t.may_differ = false;
            t.writes = 0;
        }
    }

    /// A host mapping of `frame` is made writable: a lazy table may now
    /// be written unseen.
    pub fn note_writable_mapping(&mut self, frame: u32) {
        if self.lazy_frames.contains(frame) {
            if let Some(t) = self.tables.get_mut(&frame) {
                t.may_differ = true;
            }
        }
    }

    /// The directory `frame` is no longer the current one: it goes lazy
    /// if it is only the directory of spaces that are not current.
    fn leave_directory(&mut self, frame: u32, writable: bool) {
        let current = self.current;
        let Some(t) = self.tables.get(&frame) else {
            return;
        };
        if !self.out_of_sync || t.unsynced || !t.is_idle_directory(current) {
            return;
        }
        self.make_lazy(frame, writable);
    }

    /// Whether `frame` is write-protected only as the directory of the
    /// current space: it goes lazy when the CPU leaves that space
    /// ([`Self::set_current_space`]), so no other space's mapping of it
    /// needs to be read-only (no write through one can happen while the
    /// directory is in sync).
    pub fn protected_only_as_current_directory(&self, frame: u32) -> bool {
        let Some(current) = self.current else {
            return false;
        };
        self.out_of_sync
            && !self.code.contains(frame)
            && self.tables.get(&frame).is_some_and(|t| {
                !t.unsynced && t.uses.iter().all(|u| *u == (current, TableUse::Directory))
            })
    }

    /// Compares unsynced (out-of-sync or lazy) table `frame` with its
    /// snapshot and traces it again.
    fn bring_back_in_sync(&mut self, frame: u32, ram: &GuestRam) -> Consequences {
        let now = read_entries(ram, frame);
        self.bring_back_in_sync_to(frame, &now)
    }

    /// [`Self::bring_back_in_sync`] with the table's entries as they are
    /// in guest memory now (`now`), read by the caller.
    fn bring_back_in_sync_to(&mut self, frame: u32, now: &[u32; 1024]) -> Consequences {
        // Entries made present while nothing traced the table are not
        // mapped ahead: a kernel makes many present that this space never
        // reaches, and each would cost a host call. Only a traced write
        // maps ahead (see `Self::take_present`).
        let mut out = self.resync_to(frame, now, false);
        // The list it is on (already taken off by `resync_all`).
        if self.tables.get(&frame).is_some_and(|t| t.lazy) {
            self.end_lazy(frame);
        } else {
            self.unsynced.retain(|f| *f != frame);
        }
        if let Some(t) = self.tables.get_mut(&frame) {
            t.unsynced = false;
            t.writes = 0;
            if !self.code.contains(frame) {
                out.protect.push(frame);
            }
        }
        out
    }

    /// Forgets every use by `space` (dropped by the monitor); tables left
    /// without uses stop being watched.
    pub fn unwatch_space(&mut self, space: SpaceId) -> Consequences {
        self.epoch += 1;
        let mut out = Consequences::default();
        for frame in self.tables_used_by(space) {
            if let Some(t) = self.tables.get_mut(&frame) {
                t.uses.retain(|(s, _)| *s != space);
                if t.uses.is_empty() {
                    out.append(self.forget(frame));
                }
            }
        }
        out
    }

    /// Forgets every use by `space` (whose directory died) except its leaf
    /// uses of tables another space uses for the same region (a kernel's
    /// page tables, which every directory shares): those stay, so that the
    /// monitor may keep what it mapped from them. Returns what forgetting
    /// the rest entails, and the uses kept as (region, table frame).
    pub fn unwatch_space_but_shared_leaves(
        &mut self,
        space: SpaceId,
    ) -> (Consequences, Vec<(u32, u32)>) {
        self.epoch += 1;
        let mut out = Consequences::default();
        let mut kept = Vec::new();
        for frame in self.tables_used_by(space) {
            let Some(t) = self.tables.get_mut(&frame) else {
                continue;
            };
            let shared = |usage: &TableUse| match usage {
                TableUse::Leaf { .. } => t.uses.iter().any(|(s, u)| *s != space && u == usage),
                TableUse::Directory => false,
            };
            let (mine, others): (Vec<_>, Vec<_>) = t.uses.iter().partition(|(s, _)| *s == space);
            let keep: Vec<(SpaceId, TableUse)> =
                mine.into_iter().filter(|(_, u)| shared(u)).collect();
            for (_, usage) in &keep {
                if let TableUse::Leaf { region } = usage {
                    kept.push((*region, frame));
                }
            }
            t.uses = others.into_iter().chain(keep).collect();
            if t.uses.is_empty() {
                out.append(self.forget(frame));
            }
        }
        (out, kept)
    }

    /// The tables `space` uses.
    fn tables_used_by(&self, space: SpaceId) -> Vec<u32> {
        self.tables
            .iter()
            .filter(|(_, t)| t.uses.iter().any(|(s, _)| *s == space))
            .map(|(f, _)| *f)
            .collect()
    }

    /// `space` no longer uses table `frame` for region `region` (a kept
    /// leaf use the monitor gives up).
    pub fn end_leaf_use(&mut self, frame: u32, space: SpaceId, region: u32) -> Consequences {
        self.end_use(frame, space, TableUse::Leaf { region })
    }

    /// Forgets every table (a paging-mode change drops every space).
    pub fn unwatch_all(&mut self) -> Consequences {
        let mut out = Consequences::default();
        let frames: Vec<u32> = self.tables.keys().copied().collect();
        for frame in frames {
            out.append(self.forget(frame));
        }
        out
    }

    /// Compares table `frame` with its snapshot, updating it; the
    /// invalidations of every entry whose change matters, and the leaf
    /// uses a changed directory entry ends.
    fn resync(&mut self, frame: u32, ram: &GuestRam, traced: bool) -> Consequences {
        let now = read_entries(ram, frame);
        self.resync_to(frame, &now, traced)
    }

    /// [`Self::resync`] with the table's entries as they are in guest
    /// memory now (`now`), read by the caller.
    fn resync_to(&mut self, frame: u32, now: &[u32; 1024], traced: bool) -> Consequences {
        let mut out = Consequences::default();
        let Some(t) = self.tables.get_mut(&frame) else {
            return out;
        };
        if *t.snapshot == *now {
            return out;
        }
        let mut ended = Vec::new();
        for (i, (old, new)) in t.snapshot.iter().zip(now.iter()).enumerate() {
            if *old == *new {
                continue;
            }
            if entry_change_matters(*old, *new) {
                entry_changed(&t.uses, i as u32, *old, &mut out, &mut ended);
            }
            if traced {
                note_made_present(&t.uses, i as u32, *old, *new, &mut self.present);
            }
        }
        *t.snapshot = *now;
        for (table, space, usage) in ended {
            out.append(self.end_use(table, space, usage));
        }
        out
    }

    /// `space` no longer uses `frame` as `usage`.
    fn end_use(&mut self, frame: u32, space: SpaceId, usage: TableUse) -> Consequences {
        let Some(t) = self.tables.get_mut(&frame) else {
            return Consequences::default();
        };
        t.uses.retain(|u| *u != (space, usage));
        self.epoch += 1;
        if t.uses.is_empty() {
            self.forget(frame)
        } else {
            Consequences::default()
        }
    }

    /// Stops watching a flooded table: the mappings built from it go, and
    /// the spaces it is the directory of are dropped.
    fn zap_table(&mut self, frame: u32) -> Consequences {
        self.stats.zaps += 1;
        let mut out = Consequences::default();
        let Some(t) = self.tables.get(&frame) else {
            return out;
        };
        for (space, usage) in &t.uses {
            match usage {
                TableUse::Directory => out.zap.push(*space),
                TableUse::Leaf { region } => out.invalidations.push(Invalidation {
                    space: *space,
                    first_page: region << 10,
                    pages: 1024,
                }),
            }
        }
        out.append(self.forget(frame));
        out
    }

    fn forget(&mut self, frame: u32) -> Consequences {
        self.epoch += 1;
        let mut out = Consequences::default();
        if let Some(t) = self.tables.remove(&frame) {
            if t.lazy {
                self.lazy_frames.remove(frame);
            } else if t.unsynced {
                self.unsynced.retain(|f| *f != frame);
            } else if !self.code.contains(frame) {
                out.release.push(frame);
            }
        }
        out
    }
}

/// The invalidations of entry `i` of a table with `uses` changing from
/// `old`, and the leaf uses a directory entry's change ends.
fn entry_changed(
    uses: &[(SpaceId, TableUse)],
    i: u32,
    old: u32,
    out: &mut Consequences,
    ended: &mut Vec<(u32, SpaceId, TableUse)>,
) {
    for (space, usage) in uses {
        match usage {
            TableUse::Directory => {
                out.invalidations.push(Invalidation {
                    space: *space,
                    first_page: i << 10,
                    pages: 1024,
                });
                if old & PRESENT != 0 {
                    ended.push((old >> 12, *space, TableUse::Leaf { region: i }));
                }
            }
            TableUse::Leaf { region } => out.invalidations.push(Invalidation {
                space: *space,
                first_page: region << 10 | i,
                pages: 1,
            }),
        }
    }
}

/// Entry `i` of a table with `uses` went from `old` to `new`: if it was
/// made present with its accessed bit set, the pages its leaf uses map
/// go to `out` (see [`FrameWatcher::take_present`]).
fn note_made_present(
    uses: &[(SpaceId, TableUse)],
    i: u32,
    old: u32,
    new: u32,
    out: &mut Vec<(SpaceId, u32)>,
) {
    if old & PRESENT != 0 || new & (PRESENT | ACCESSED) != PRESENT | ACCESSED {
        return;
    }
    for (space, usage) in uses {
        if let TableUse::Leaf { region } = usage {
            out.push((*space, region << 10 | i));
        }
    }
}

fn read_table(ram: &GuestRam, frame: u32) -> Box<[u32; 1024]> {
    Box::new(read_entries(ram, frame))
}

/// Sets again, in the directory at `frame` (the current one), the accessed
/// bit of each entry that points to a page table and differs from what it
/// was (`snapshot`) only by that bit being clear now (`now`): a processor
/// may fill its paging-structure cache from any entry of the current
/// directory at any time, setting the entry's accessed bit first (Intel
/// SDM vol. 3A, 4.10.3.1, "PDE cache"), so the mappings built from such an
/// entry may stay. A directory copied from a template whose entries were
/// never used (a new address space) would otherwise lose every mapping of
/// the regions it shares with the template. `now` (the entries read from
/// guest memory) gets the bits set too.
fn restore_directory_accessed_bits(
    snapshot: &[u32; 1024],
    now: &mut [u32; 1024],
    frame: u32,
    ram: &GuestRam,
) {
    const PAGE_SIZE_BIT: u32 = 0x80;
    // Most entries are the same: runs of 16 that are go by at one compare
    // (the MMU benchmark's address-space row 2,270 -> 1,960 cycles; with
    // an entry-by-entry test of the bits it took 2,270 or 2,950 with the
    // loop's alignment in two builds that did not change it).
    const RUN: usize = 16;
    let runs = snapshot.chunks_exact(RUN).zip(now.chunks_exact_mut(RUN));
    for (r, (olds, news)) in runs.enumerate() {
        if olds == news {
            continue;
        }
        for (j, (old, new)) in olds.iter().zip(news.iter_mut()).enumerate() {
            let points_to_table = old & PRESENT != 0 && old & PAGE_SIZE_BIT == 0;
            if points_to_table && old & ACCESSED != 0 && *old ^ *new == ACCESSED {
                // A table beyond RAM reads as zeros and is not written.
                let i = (r * RUN + j) as u32;
                let addr = GuestPhys(frame.wrapping_mul(4096) + 4 * i);
                if ram.write_u32(addr, *old).is_ok() {
                    *new = *old;
                }
            }
        }
    }
}

/// The 1024 entries of the table at `frame` as they are in `ram` now.
fn read_entries(ram: &GuestRam, frame: u32) -> [u32; 1024] {
    let mut bytes = [0u8; 4096];
    // A table beyond RAM reads as zeros (not-present entries), as the
    // walker sees it.
    let _ = ram.read(GuestPhys(frame.wrapping_mul(4096)), &mut bytes);
    let mut out = [0u32; 1024];
    for (e, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *e = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S0: SpaceId = SpaceId(0);
    const S1: SpaceId = SpaceId(1);
    const PD: u32 = 1;
    const PT: u32 = 2;

    fn ram() -> GuestRam {
        GuestRam::new(1).unwrap()
    }

    fn set(ram: &GuestRam, frame: u32, index: u32, value: u32) {
        ram.write_u32(GuestPhys(frame * 4096 + index * 4), value)
            .unwrap();
    }

    fn get(ram: &GuestRam, frame: u32, index: u32) -> u32 {
        ram.read_u32(GuestPhys(frame * 4096 + index * 4)).unwrap()
    }

    #[test]
    fn only_mapping_changes_and_cleared_dirty_bits_matter() {
        assert!(!entry_change_matters(0x1003, 0x1023));
        assert!(!entry_change_matters(0x1023, 0x1063));
        assert!(entry_change_matters(0x1023, 0x1003));
        assert!(entry_change_matters(0x1067, 0x1027));
        assert!(entry_change_matters(0x1003, 0x2003));
        assert!(entry_change_matters(0x1003, 0x1001));
        assert!(entry_change_matters(0x1003, 0x1002));
        assert!(!entry_change_matters(0x1000, 0x2000));
        assert!(!entry_change_matters(0x1002, 0x1003), "made present");
        assert!(
            !entry_change_matters(0x2002, 0x1023),
            "made present elsewhere"
        );
    }

    #[test]
    fn a_changed_pte_invalidates_its_page_in_every_space_using_the_table() {
        let ram = ram();
        set(&ram, PT, 5, 0x7003);
        let mut w = FrameWatcher::new(256, false);
        let c = w.watch(PT, S0, TableUse::Leaf { region: 3 }, &ram);
        assert_eq!(c.protect, vec![PT]);
        assert!(w
            .watch(PT, S1, TableUse::Leaf { region: 7 }, &ram)
            .is_empty());
        assert!(w.write_protected(PT));
        set(&ram, PT, 5, 0x8003);
        let c = w.table_written(PT, &ram);
        assert_eq!(
            c.invalidations,
            vec![
                Invalidation {
                    space: S0,
                    first_page: 3 << 10 | 5,
                    pages: 1
                },
                Invalidation {
                    space: S1,
                    first_page: 7 << 10 | 5,
                    pages: 1
                },
            ]
        );
        assert_eq!(w.stats().traced_writes, 1);
    }

    #[test]
    fn accessed_and_dirty_bits_set_by_the_walker_change_nothing_but_a_cleared_dirty_bit_does() {
        let ram = ram();
        set(&ram, PT, 0, 0x7003);
        let mut w = FrameWatcher::new(256, false);
        w.watch(PT, S0, TableUse::Leaf { region: 0 }, &ram);
        set(&ram, PT, 0, 0x7063);
        assert!(w.note_walked_entry(GuestPhys(PT * 4096), 0x7063).is_empty());
        assert!(w.table_written(PT, &ram).invalidations.is_empty());
        set(&ram, PT, 0, 0x7023);
        assert_eq!(w.table_written(PT, &ram).invalidations.len(), 1);
    }

    #[test]
    fn a_dying_space_keeps_only_its_leaf_uses_of_tables_another_space_shares() {
        let ram = GuestRam::new(1).unwrap();
        let mut w = FrameWatcher::new(256, true);
        let (a, b) = (SpaceId(1), SpaceId(2));
        let kernel = TableUse::Leaf { region: 768 };
        w.watch(10, a, TableUse::Directory, &ram);
        w.watch(11, a, kernel, &ram);
        w.watch(12, a, TableUse::Leaf { region: 32 }, &ram);
        w.watch(20, b, TableUse::Directory, &ram);
        w.watch(11, b, kernel, &ram);
        // Table 11 is b's for another region: not shared for region 768.
        w.watch(13, a, TableUse::Leaf { region: 1 }, &ram);
        w.watch(13, b, TableUse::Leaf { region: 2 }, &ram);
        let (_, kept) = w.unwatch_space_but_shared_leaves(a);
        assert_eq!(kept, vec![(768, 11)]);
        assert!(
            !w.is_synced_table(10) && !w.is_synced_table(12),
            "a's own tables go"
        );
        assert!(w.is_synced_table(11) && w.is_synced_table(13));
        // Giving the kept use up leaves b's.
        w.end_leaf_use(11, a, 768);
        assert!(w.is_synced_table(11));
        w.end_leaf_use(11, b, 768);
        assert!(!w.is_synced_table(11));
    }

    #[test]
    fn a_leaf_written_twice_goes_out_of_sync_and_is_compared_on_the_next_flush() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        set(&ram, PT, 1, 0x5003);
        assert!(w.table_written(PT, &ram).release.is_empty());
        set(&ram, PT, 2, 0x6003);
        let c = w.table_written(PT, &ram);
        assert_eq!(c.release, vec![PT]);
        assert!(!w.write_protected(PT));
        assert_eq!(w.tables(), (1, 1));
        // Writes while out of sync are not seen...
        set(&ram, PT, 3, 0x7003);
        set(&ram, PT, 2, 0);
        // ...until the guest flushes (an entry made present built nothing
        // to drop).
        let c = w.resync_all(&ram);
        assert_eq!(c.protect, vec![PT]);
        let pages: Vec<u32> = c.invalidations.iter().map(|i| i.first_page).collect();
        assert_eq!(pages, vec![1 << 10 | 2]);
        assert!(w.write_protected(PT));
        assert_eq!(w.stats().resyncs, 1);
    }

    #[test]
    fn a_leaf_goes_out_of_sync_before_its_first_write_and_is_compared_on_the_next_flush() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PT, 2, 0x5003);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        assert!(w.unsync_before_write(PT));
        assert!(!w.write_protected(PT));
        assert_eq!(w.tables(), (1, 1));
        assert_eq!(w.stats().traced_writes, 0);
        // Already out of sync: nothing more to do.
        assert!(!w.unsync_before_write(PT));
        set(&ram, PT, 2, 0x6003);
        let c = w.resync_all(&ram);
        assert_eq!(c.protect, vec![PT]);
        let pages: Vec<u32> = c.invalidations.iter().map(|i| i.first_page).collect();
        assert_eq!(pages, vec![1 << 10 | 2]);
        assert!(w.write_protected(PT));
    }

    #[test]
    fn a_directory_in_use_a_code_frame_or_no_out_of_sync_keeps_its_store_traced() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        assert!(!w.unsync_before_write(PD));
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        w.trace_code(PT);
        assert!(!w.unsync_before_write(PT));
        let mut off = FrameWatcher::new(256, false);
        off.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        assert!(!off.unsync_before_write(PT));
        assert!(off.write_protected(PT));
    }

    #[test]
    fn a_directory_store_left_to_the_traced_path_counts_once_towards_flooding() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        for i in 0..FLOOD_WRITES - 1 {
            assert!(!w.unsync_before_write(PD));
            set(&ram, PD, i, 0x3003);
            w.table_written(PD, &ram);
        }
        assert_eq!(w.stats().zaps, 0);
        assert!(w.write_protected(PD));
    }

    #[test]
    fn an_idle_directory_goes_lazy_before_its_first_write() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.set_current_space(S1, PD, None, &ram);
        assert!(w.unsync_before_write(PD));
        assert!(!w.write_protected(PD));
        assert_eq!(w.stats().lazy_directories, 1);
    }

    #[test]
    fn a_leaf_rewritten_with_no_walk_through_it_floods_through_the_traced_path() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        for _ in 1..FLOOD_WRITES {
            assert!(w.unsync_before_write(PT));
            w.resync_all(&ram);
        }
        assert!(!w.unsync_before_write(PT));
        set(&ram, PT, 5, 0x5003);
        w.table_written(PT, &ram);
        assert_eq!(w.stats().zaps, 1);
        assert!(!w.write_protected(PT));
    }

    #[test]
    fn an_entry_walked_while_out_of_sync_joins_the_snapshot_and_invalidates_other_spaces() {
        let ram = ram();
        set(&ram, PT, 3, 0x5003);
        let mut w = FrameWatcher::new(256, true);
        w.watch(PT, S0, TableUse::Leaf { region: 0 }, &ram);
        w.watch(PT, S1, TableUse::Leaf { region: 2 }, &ram);
        set(&ram, PT, 1, 0x1003);
        w.table_written(PT, &ram);
        set(&ram, PT, 2, 0x2003);
        w.table_written(PT, &ram);
        assert!(!w.write_protected(PT), "out of sync");
        // Unseen: entry 3 now maps another frame, and S0 walks it.
        set(&ram, PT, 3, 0x6003);
        let c = w.note_walked_entry(GuestPhys(PT * 4096 + 12), 0x6023);
        let pages: Vec<u32> = c.invalidations.iter().map(|i| i.first_page).collect();
        assert_eq!(pages, vec![3, 2 << 10 | 3]);
        // Cleared while out of sync: the flush sees it against what the
        // mapping was built from.
        set(&ram, PT, 3, 0);
        let pages: Vec<u32> = w
            .resync_all(&ram)
            .invalidations
            .iter()
            .map(|i| i.first_page)
            .collect();
        assert_eq!(pages, vec![3, 2 << 10 | 3]);
    }

    #[test]
    fn invlpg_finds_the_out_of_sync_table_through_the_current_directory() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PD, 1, PT << 12 | 0x27);
        set(&ram, PT, 7, 0x1003);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        assert!(w.unsync_before_write(PT));
        set(&ram, PT, 7, 0x7003);
        let c = w.sync_entry(S0, PD, 1 << 22 | 7 << 12, &ram);
        assert_eq!(c.invalidations.len(), 1);
        set(&ram, PT, 7, 0x8003);
        assert!(
            w.sync_entry(S0, PD, 2 << 22 | 7 << 12, &ram).is_empty(),
            "the directory names no table for region 2"
        );
        assert!(
            w.sync_entry(S1, PD, 1 << 22 | 7 << 12, &ram).is_empty(),
            "not S1's table"
        );
        assert_eq!(
            w.sync_entry(S0, PD, 1 << 22 | 7 << 12, &ram)
                .invalidations
                .len(),
            1
        );
    }

    #[test]
    fn an_entry_made_present_with_its_accessed_bit_names_its_pages_for_a_fill_ahead() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, false);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        w.watch(PT, S1, TableUse::Leaf { region: 1 }, &ram);
        set(&ram, PT, 5, 0x7023);
        set(&ram, PT, 6, 0x8003);
        let c = w.table_written(PT, &ram);
        assert!(c.invalidations.is_empty());
        assert_eq!(
            w.take_present(),
            vec![(S0, 1 << 10 | 5), (S1, 1 << 10 | 5)],
            "not the one without A"
        );
        set(&ram, PT, 5, 0x9023);
        w.table_written(PT, &ram);
        assert!(!w.has_present(), "present before");
    }

    #[test]
    fn invlpg_compares_one_entry_and_leaves_the_table_out_of_sync() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PT, 7, 0x1003);
        set(&ram, PT, 8, 0x1003);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        w.watch(PT, S1, TableUse::Leaf { region: 1 }, &ram);
        for i in 0..2 {
            set(&ram, PT, i, 0x1003);
            w.table_written(PT, &ram);
        }
        set(&ram, PT, 7, 0x7003);
        set(&ram, PT, 8, 0x8003);
        let c = w.sync_entry(S0, PD, 1 << 22 | 7 << 12, &ram);
        let pages: Vec<u32> = c.invalidations.iter().map(|i| i.first_page).collect();
        assert_eq!(
            pages,
            vec![1 << 10 | 7, 1 << 10 | 7],
            "every space using the table"
        );
        assert_eq!(w.tables(), (1, 1), "still out of sync");
        assert!(w.sync_entry(S0, PD, 1 << 22 | 7 << 12, &ram).is_empty());
        assert!(
            w.sync_entry(S0, PD, 2 << 22 | 8 << 12, &ram).is_empty(),
            "another region"
        );
        let pages: Vec<u32> = w
            .resync_all(&ram)
            .invalidations
            .iter()
            .map(|i| i.first_page)
            .collect();
        assert_eq!(pages, vec![1 << 10 | 8, 1 << 10 | 8]);
    }

    #[test]
    fn the_current_spaces_directory_never_goes_out_of_sync() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        for i in 0..4 {
            set(&ram, PD, i, 0x3003);
            w.table_written(PD, &ram);
        }
        assert!(w.write_protected(PD));
        assert_eq!(w.tables(), (1, 0));
    }

    #[test]
    fn a_changed_pde_drops_its_region_and_ends_the_use_of_the_old_table() {
        let ram = ram();
        set(&ram, PD, 4, PT << 12 | 3);
        let mut w = FrameWatcher::new(256, false);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.watch(PT, S0, TableUse::Leaf { region: 4 }, &ram);
        set(&ram, PD, 4, 0);
        let c = w.table_written(PD, &ram);
        assert_eq!(
            c.invalidations,
            vec![Invalidation {
                space: S0,
                first_page: 4 << 10,
                pages: 1024
            }]
        );
        assert_eq!(c.release, vec![PT]);
        assert!(!w.write_protected(PT));
    }

    #[test]
    fn a_flooded_directory_zaps_its_spaces() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.set_current_space(S1, PD, None, &ram);
        w.watch(PD, S1, TableUse::Directory, &ram);
        let mut zapped = Vec::new();
        for i in 0..FLOOD_WRITES {
            set(&ram, PD, i, i);
            zapped.extend(w.table_written(PD, &ram).zap);
        }
        assert_eq!(zapped, vec![S1]);
        assert!(!w.write_protected(PD));
        assert_eq!(w.stats().zaps, 1);
    }

    #[test]
    fn an_idle_spaces_directory_goes_lazy_and_is_compared_when_entered() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PD, 0, PT << 12 | 0x27);
        set(&ram, PD, 768, 0x40_0000 | 0xe3);
        w.watch(PD, S1, TableUse::Directory, &ram);
        w.set_current_space(S0, PD, None, &ram);
        // Zeroed and refilled, as a directory page reused for a new process.
        set(&ram, PD, 768, 0);
        let c = w.table_written(PD, &ram);
        assert_eq!(c.release, vec![PD], "no longer write-protected");
        assert!(c.invalidations.is_empty(), "nothing compared yet");
        assert!(!w.write_protected(PD));
        assert!(!w.is_synced_table(PD));
        set(&ram, PD, 768, 0x40_0000 | 0xe3);
        set(&ram, PD, 0, 0);
        assert!(w.table_written(PD, &ram).is_empty(), "writes unseen");
        assert!(w.resync_all(&ram).is_empty(), "a guest flush leaves it");
        let c = w.set_current_space(S1, PD, None, &ram);
        assert_eq!(
            c.invalidations,
            vec![Invalidation {
                space: S1,
                first_page: 0,
                pages: 1024
            }],
            "only the entry that changed"
        );
        assert_eq!(c.protect, vec![PD]);
        assert!(w.write_protected(PD));
        assert_eq!(w.stats().lazy_directories, 1);
    }

    #[test]
    fn the_epoch_moves_whenever_watching_a_recorded_use_again_could_matter() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PD, 1, PT << 12 | 0x27);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        let e = w.epoch();
        w.watch(PT, S0, TableUse::Leaf { region: 1 }, &ram);
        w.note_walked_entry(GuestPhys(PT * 4096 + 4), 0);
        assert_eq!(w.epoch(), e, "nothing changed");
        assert!(w.unsync_before_write(PT));
        assert!(w.epoch() > e, "out of sync");
        w.resync_all(&ram);
        let e = w.epoch();
        w.end_leaf_use(PT, S0, 1);
        assert!(w.epoch() > e, "a use ended");
        let e = w.epoch();
        w.set_current_space(S1, PD, Some((PD, false)), &ram);
        assert!(w.epoch() > e, "lazy");
        let e = w.epoch();
        w.unwatch_space(S0);
        assert!(w.epoch() > e, "a space's uses forgotten");
    }

    #[test]
    fn the_directory_left_at_a_switch_goes_lazy_without_a_release() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PD, 1, PT << 12 | 0x27);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        assert!(w.protected_only_as_current_directory(PD));
        let c = w.set_current_space(S1, PD, Some((PD, true)), &ram);
        assert!(c.is_empty(), "its mappings stay as they are: nothing to do");
        assert!(!w.write_protected(PD));
        assert!(!w.protected_only_as_current_directory(PD));
        set(&ram, PD, 1, 0);
        assert!(w.table_written(PD, &ram).is_empty(), "writes unseen");
        let c = w.set_current_space(S0, PD, None, &ram);
        assert_eq!(c.invalidations.len(), 1, "compared when entered");
        assert_eq!(c.protect, vec![PD]);
        assert!(
            w.take_protect_elsewhere().is_empty(),
            "it was written: left writable"
        );
        assert!(w.protected_only_as_current_directory(PD));
    }

    #[test]
    fn a_lazy_directory_no_mapping_could_write_is_entered_with_no_comparison() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PD, 1, PT << 12 | 0x27);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.set_current_space(S1, PD, Some((PD, false)), &ram);
        // Changed in memory behind the watcher's back: only a test can.
        set(&ram, PD, 1, 0);
        let c = w.set_current_space(S0, PD, None, &ram);
        assert!(c.is_empty(), "not compared");
        assert!(w.write_protected(PD));
        assert_eq!(w.stats().lazy_unwritten, 1);
        // A mapping made writable while it is lazy makes it compared (and
        // what was changed unseen is found then).
        w.set_current_space(S1, PD, Some((PD, false)), &ram);
        w.note_writable_mapping(PD);
        let c = w.set_current_space(S0, PD, None, &ram);
        assert_eq!(c.invalidations.len(), 1, "compared");
        // And one found unchanged is protected in the other spaces.
        w.set_current_space(S1, PD, Some((PD, true)), &ram);
        let c = w.set_current_space(S0, PD, None, &ram);
        assert!(c.invalidations.is_empty());
        assert_eq!(w.take_protect_elsewhere(), vec![PD]);
    }

    #[test]
    fn an_entered_directory_gets_back_accessed_bits_a_copy_cleared() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        set(&ram, PD, 1, PT << 12 | 0x27);
        set(&ram, PD, 2, (PT + 1) << 12 | 0x27);
        set(&ram, PD, 3, 0x40_0000 | 0xe7);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.set_current_space(S1, PD, Some((PD, true)), &ram);
        // A template copied over it: the same entries with A clear, and
        // one entry that changed for real.
        set(&ram, PD, 1, PT << 12 | 0x07);
        set(&ram, PD, 2, (PT + 2) << 12 | 0x07);
        set(&ram, PD, 3, 0x40_0000 | 0xc7);
        let c = w.set_current_space(S0, PD, None, &ram);
        let regions: Vec<u32> = c.invalidations.iter().map(|i| i.first_page >> 10).collect();
        assert_eq!(
            regions,
            vec![2, 3],
            "the 4 MiB page's entry is a TLB entry: dropped"
        );
        assert_eq!(get(&ram, PD, 1), PT << 12 | 0x27, "set again");
        assert_eq!(get(&ram, PD, 2), (PT + 2) << 12 | 0x07);
        assert_eq!(get(&ram, PD, 3), 0x40_0000 | 0xc7);
    }

    #[test]
    fn a_directory_with_another_purpose_stays_traced_when_left() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.set_current_space(S0, PD, None, &ram);
        w.watch(PD, S0, TableUse::Directory, &ram);
        w.watch(PD, S0, TableUse::Leaf { region: 768 }, &ram);
        assert!(
            !w.protected_only_as_current_directory(PD),
            "a page table too"
        );
        w.set_current_space(S1, PD, Some((PD, true)), &ram);
        assert!(w.write_protected(PD));
        w.watch(PT, S1, TableUse::Directory, &ram);
        w.trace_code(PT);
        assert!(!w.protected_only_as_current_directory(PT), "code too");
        let mut off = FrameWatcher::new(256, false);
        off.set_current_space(S0, PD, None, &ram);
        off.watch(PD, S0, TableUse::Directory, &ram);
        assert!(!off.protected_only_as_current_directory(PD));
        off.set_current_space(S1, PD, Some((PD, true)), &ram);
        assert!(
            off.write_protected(PD),
            "no lazy directories without out-of-sync tables"
        );
    }

    #[test]
    fn a_lazy_directory_used_as_a_page_table_drops_its_dead_space() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, true);
        w.watch(PD, S1, TableUse::Directory, &ram);
        w.set_current_space(S0, PD, None, &ram);
        set(&ram, PD, 5, 0x1234_5067);
        w.table_written(PD, &ram);
        let c = w.watch(PD, S0, TableUse::Leaf { region: 3 }, &ram);
        assert_eq!(c.zap, vec![S1]);
        assert!(c.invalidations.is_empty(), "the dead space goes as it was");
        assert!(w.write_protected(PD), "a page table in use is traced");
    }

    #[test]
    fn without_out_of_sync_tables_an_idle_directory_stays_traced() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, false);
        set(&ram, PD, 1, PT << 12 | 0x27);
        w.watch(PD, S1, TableUse::Directory, &ram);
        w.set_current_space(S0, PD, None, &ram);
        set(&ram, PD, 1, 0);
        let c = w.table_written(PD, &ram);
        assert_eq!(c.invalidations.len(), 1, "seen as it happens");
        assert!(w.write_protected(PD));
    }

    #[test]
    fn code_and_table_tracing_share_the_protection() {
        let ram = ram();
        let mut w = FrameWatcher::new(256, false);
        assert!(w.trace_code(PT));
        let c = w.watch(PT, S0, TableUse::Leaf { region: 0 }, &ram);
        assert!(c.protect.is_empty(), "already protected for code");
        assert!(w.untrace_code(PT));
        assert!(w.write_protected(PT));
        let c = w.unwatch_space(S0);
        assert_eq!(c.release, vec![PT]);
        assert!(!w.write_protected(PT));
    }
}
