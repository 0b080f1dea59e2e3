//! The code cache: executable memory for translations, lookup by guest
//! physical address and mode, direct-branch chaining and invalidation by
//! guest frame.
//!
//! Invariants:
//! - Code lives in one memfd mapped twice: a read-execute view (where code
//!   runs) and a read-write view (where it is written and patched), so no
//!   host address is ever writable and executable at once.
//! - A chained branch site is a `rel32` field in some translation that points
//!   either at its own exit stub (unchained) or at the entry of another live
//!   translation (chained). Every chained site is recorded in the target's
//!   `incoming` list, and an invalidated translation unchains all of them
//!   before its entry can be reused, so no live code ever jumps into a dead
//!   translation.
//! - Memory is handed out by bumping; it is reclaimed only by a full flush,
//!   which drops every translation at once.
//! - The first page of the executable view is the *poll page*: it holds no
//!   code, and every translation loads from it on entry. Whoever wants
//!   translated code to stop at its next translation entry (a signal, an
//!   interrupt) makes that page inaccessible; the load then faults at an
//!   instruction boundary.

mod exec;

pub use exec::{ExecError, ExecMemory};

// Keys are guest frames and addresses: a fast hash, not a keyed one (a
// guest that made its own lookups collide would only slow itself).
use rustc_hash::FxHashMap as HashMap;

/// Size of the poll page at the start of the cache.
pub const POLL_PAGE_SIZE: usize = 4096;

/// Identifies a translation in the cache (valid until the next flush).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransId(pub u32);

/// The key of a translation: where its guest code starts and the CPU mode it
/// was translated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransKey {
    /// Guest-physical address of the first guest instruction.
    pub phys: u32,
    /// Guest linear EIP at which it was translated.
    pub eip: u32,
    /// Mode bits (code size, segment layout, privilege) the code depends on.
    pub mode: u32,
}

/// A direct-branch site: a rel32 field to patch, and where it points when
/// unchained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchSite {
    /// Offset in the cache of the 4-byte rel32 field.
    pub rel32_offset: usize,
    /// Offset in the cache of the exit stub the site uses when unchained.
    pub stub_offset: usize,
}

/// Alignment of every translation's first byte in the cache.
pub const TRANSLATION_ALIGN: usize = 64;

/// Everything the cache records about one translation.
#[derive(Clone, Debug)]
pub struct Translation {
    /// What it translates.
    pub key: TransKey,
    /// Offset of its entry in the cache.
    pub code_offset: usize,
    /// Length of its host code (exit stubs included).
    pub code_len: usize,
    /// Guest frames whose bytes it was translated from.
    pub frames: Vec<u32>,
    /// (host offset relative to `code_offset`, guest EIP) for every guest
    /// instruction, in ascending host order.
    pub pc_map: Vec<(u32, u32)>,
    /// Fix-ups needed at a fault, per guest instruction index (opaque to the
    /// cache).
    pub fixups: Vec<u8>,
    /// (pc-map index, lag): guest ESP is the host's R8 plus the lag when a
    /// fault stops that instruction (sorted; unlisted instructions: 0).
    pub stack_lags: Vec<(u32, i8)>,
    /// Number of guest instructions.
    pub guest_insns: u32,
    /// Sites in *other* translations chained to this one.
    incoming: Vec<BranchSite>,
    /// Whether it was invalidated (its code must not be entered).
    pub dead: bool,
    /// Whether an indirect branch ever went to it through the run loop
    /// (an indirect-branch table miss), see
    /// [`CodeCache::mark_indirect_target`].
    pub indirect_target: bool,
}

impl Translation {
    /// The pc-map index of the guest instruction whose host code holds
    /// offset `rel` (from `code_offset`): the last one starting at or
    /// before it (0 before the first).
    pub fn insn_index(&self, rel: u32) -> usize {
        self.pc_map
            .partition_point(|(h, _)| *h <= rel)
            .saturating_sub(1)
    }

    /// How far guest ESP is from the host's R8 at the start of the
    /// instruction with pc-map index `idx` (see [`Translation::stack_lags`]).
    pub fn stack_lag(&self, idx: usize) -> i32 {
        self.stack_lags
            .binary_search_by_key(&(idx as u32), |&(i, _)| i)
            .map_or(0, |k| i32::from(self.stack_lags[k].1))
    }

    /// A record with no code, frames or instructions, to fill in.
    pub fn empty() -> Translation {
        Translation {
            key: TransKey {
                phys: 0,
                eip: 0,
                mode: 0,
            },
            code_offset: 0,
            code_len: 0,
            frames: Vec::new(),
            pc_map: Vec::new(),
            fixups: Vec::new(),
            stack_lags: Vec::new(),
            guest_insns: 0,
            incoming: Vec::new(),
            indirect_target: false,
            dead: false,
        }
    }
}

/// Counters of the cache.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// Translations made since start.
    pub translations: u64,
    /// Guest instructions translated since start.
    pub guest_insns: u64,
    /// Chains made.
    pub chains: u64,
    /// Translations invalidated (guest code written).
    pub invalidations: u64,
    /// Full flushes.
    pub flushes: u64,
}

/// Why the cache could not take a translation.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache is full; flush and retry.
    #[error("code cache full")]
    Full,
    /// The host refused executable memory.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// The translation cache.
pub struct CodeCache {
    mem: ExecMemory,
    /// Start of translation space (after the permanent runtime stubs).
    base_used: usize,
    used: usize,
    translations: Vec<Translation>,
    by_key: HashMap<TransKey, TransId>,
    /// Live translations by the guest frames they were made from.
    by_frame: HashMap<u32, Vec<TransId>>,
    /// Live translations marked as indirect-branch targets, by the frame
    /// of their first instruction.
    indirect_by_frame: HashMap<u32, Vec<TransId>>,
    /// Host code start offsets, for host-PC lookups.
    by_offset: OffsetIndex,
    stats: CacheStats,
    /// Spreads translations out (see [`CodeCache::set_layout_seed`]); 0
    /// packs them.
    layout_seed: u32,
}

/// Empty lines of [`TRANSLATION_ALIGN`] bytes before translation number
/// `n` under layout seed `seed`: none with seed 0, else 0 to 3, from a
/// hash of both (the same seed gives the same layout again).
fn layout_gap(seed: u32, n: usize) -> usize {
    if seed == 0 {
        return 0;
    }
    let mut x =
        (u64::from(seed) << 32 | n as u64 & 0xffff_ffff).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 62) as usize
}

/// Removes `id` from the list of `key` in `map`, and the list once empty.
fn forget_id(map: &mut HashMap<u32, Vec<TransId>>, key: u32, id: TransId) {
    if let Some(ids) = map.get_mut(&key) {
        if let Some(at) = ids.iter().position(|i| *i == id) {
            ids.swap_remove(at);
        }
        if ids.is_empty() {
            map.remove(&key);
        }
    }
}

/// Translation start offsets in the order they were written (ascending),
/// with, for each 4 KiB page of the cache, the index of the first start at
/// or after that page's beginning: a host-PC lookup searches one page's
/// starts instead of all of them (a fault or an exit in a cache of 80,000
/// translations otherwise pays a binary search's cache misses).
///
/// Invariant: `first_in_page[p]` is the number of starts below `p * 4096`,
/// for every page up to that of the last start.
#[derive(Default)]
struct OffsetIndex {
    starts: Vec<(usize, TransId)>,
    first_in_page: Vec<u32>,
}

impl OffsetIndex {
    const PAGE_SHIFT: u32 = 12;

    /// Records a start above every start recorded so far.
    fn push(&mut self, off: usize, id: TransId) {
        debug_assert!(self.starts.last().is_none_or(|(o, _)| *o < off));
        let page = off >> Self::PAGE_SHIFT;
        while self.first_in_page.len() <= page {
            self.first_in_page.push(self.starts.len() as u32);
        }
        self.starts.push((off, id));
    }

    /// The last start at or before `off`.
    fn last_at_or_before(&self, off: usize) -> Option<(usize, TransId)> {
        let page = off >> Self::PAGE_SHIFT;
        let at = |p: usize| {
            self.first_in_page
                .get(p)
                .map_or(self.starts.len(), |i| *i as usize)
        };
        let (lo, hi) = (at(page), at(page + 1));
        let i = lo + self.starts[lo..hi].partition_point(|(o, _)| *o <= off);
        self.starts.get(i.checked_sub(1)?).copied()
    }
}

impl CodeCache {
    /// A cache of `size` bytes (the first page is the poll page).
    pub fn new(size: usize) -> Result<CodeCache, CacheError> {
        Ok(CodeCache {
            mem: ExecMemory::new(size.max(2 * POLL_PAGE_SIZE))?,
            base_used: POLL_PAGE_SIZE,
            used: POLL_PAGE_SIZE,
            translations: Vec::new(),
            by_key: HashMap::default(),
            by_frame: HashMap::default(),
            indirect_by_frame: HashMap::default(),
            by_offset: OffsetIndex::default(),
            stats: CacheStats::default(),
            layout_seed: 0,
        })
    }

    /// Host address of the poll page (the first page of the executable
    /// view).
    pub fn poll_addr(&self) -> u64 {
        self.mem.exec_base() as u64
    }

    /// Host address at which cache offset `off` executes.
    pub fn exec_addr(&self, off: usize) -> u64 {
        self.mem.exec_base() as u64 + off as u64
    }

    /// Cache offset of an executable host address, if it is in the cache.
    pub fn offset_of(&self, host: u64) -> Option<usize> {
        let base = self.mem.exec_base() as u64;
        (host >= base && host < base + self.mem.size() as u64).then(|| (host - base) as usize)
    }

    /// The offset the next code will be written at.
    pub fn next_offset(&self) -> usize {
        self.used
    }

    /// Free bytes left.
    pub fn free(&self) -> usize {
        self.mem.size() - self.used
    }

    /// Writes permanent code (runtime stubs) that survives flushes. Only
    /// valid before any translation was added.
    pub fn add_permanent(&mut self, code: &[u8]) -> Result<usize, CacheError> {
        assert!(self.translations.is_empty(), "permanent code goes first");
        let off = self.write_code(code)?;
        self.base_used = self.used;
        Ok(off)
    }

    fn write_code(&mut self, code: &[u8]) -> Result<usize, CacheError> {
        let off = self.aligned_next_offset();
        if off + code.len() > self.mem.size() {
            return Err(CacheError::Full);
        }
        self.mem.write(off, code);
        self.used = off + code.len();
        Ok(off)
    }

    /// Adds a translation whose code was emitted for offset `code_offset`
    /// (which must equal `aligned next_offset()`).
    pub fn insert(&mut self, mut t: Translation, code: &[u8]) -> Result<TransId, CacheError> {
        let off = self.write_code(code)?;
        assert_eq!(off, t.code_offset, "translation emitted for another offset");
        t.code_len = code.len();
        t.incoming = Vec::new();
        t.dead = false;
        let id = TransId(self.translations.len() as u32);
        self.stats.translations += 1;
        self.stats.guest_insns += u64::from(t.guest_insns);
        for f in &t.frames {
            self.by_frame.entry(*f).or_default().push(id);
        }
        self.by_key.insert(t.key, id);
        self.by_offset.push(off, id);
        self.translations.push(t);
        Ok(id)
    }

    /// Where a new translation will start: at the next 64-byte boundary
    /// (a host cache line), so that how a translation's hot loop meets
    /// the host's fetch lines does not depend on what was translated
    /// before it (docs/translator.md, "Translation alignment"); with a
    /// layout seed, 0 to 3 lines further on (see [`layout_gap`]).
    pub fn aligned_next_offset(&self) -> usize {
        let lines = layout_gap(self.layout_seed, self.translations.len());
        self.used.next_multiple_of(TRANSLATION_ALIGN) + lines * TRANSLATION_ALIGN
    }

    /// Places later translations by `seed` (`nestmon.bt.layoutSeed`): 0
    /// packs them one after the other, any other seed leaves a different
    /// pattern of empty lines between them. For measuring how much a
    /// workload's speed depends on where its code lands, not for speed.
    pub fn set_layout_seed(&mut self, seed: u32) {
        self.layout_seed = seed;
    }

    /// The live translation for `key`.
    pub fn lookup(&self, key: &TransKey) -> Option<TransId> {
        self.by_key.get(key).copied()
    }

    /// The record of a translation.
    pub fn get(&self, id: TransId) -> &Translation {
        &self.translations[id.0 as usize]
    }

    /// The translation containing cache offset `off`.
    pub fn find_by_offset(&self, off: usize) -> Option<TransId> {
        let (start, id) = self.by_offset.last_at_or_before(off)?;
        let t = self.get(id);
        (off < start + t.code_len).then_some(id)
    }

    /// Points `site` at the entry of `target` and records the link.
    pub fn chain(&mut self, site: BranchSite, target: TransId) {
        let t = &self.translations[target.0 as usize];
        if t.dead {
            return;
        }
        let dest = t.code_offset;
        self.patch_rel32(site.rel32_offset, dest);
        self.translations[target.0 as usize].incoming.push(site);
        self.stats.chains += 1;
    }

    fn patch_rel32(&mut self, rel32_offset: usize, dest: usize) {
        let rel = dest as i64 - (rel32_offset as i64 + 4);
        self.mem.write(rel32_offset, &(rel as i32).to_le_bytes());
    }

    /// Invalidates every translation made from guest frame `frame`; returns
    /// the ones that died (their records stay readable until the next
    /// flush).
    pub fn invalidate_frame(&mut self, frame: u32) -> Vec<TransId> {
        let Some(ids) = self.by_frame.remove(&frame) else {
            return Vec::new();
        };
        ids.into_iter().filter(|id| self.kill(*id)).collect()
    }

    /// Invalidates one translation (its guest code changed in a way its
    /// frames do not show); false if it was dead already.
    pub fn invalidate(&mut self, id: TransId) -> bool {
        self.kill(id)
    }

    fn kill(&mut self, id: TransId) -> bool {
        let t = &mut self.translations[id.0 as usize];
        if t.dead {
            return false;
        }
        t.dead = true;
        let key = t.key;
        let incoming = std::mem::take(&mut t.incoming);
        let frames = std::mem::take(&mut t.frames);
        let indirect_target = t.indirect_target;
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        for f in &frames {
            forget_id(&mut self.by_frame, *f, id);
        }
        if indirect_target {
            forget_id(&mut self.indirect_by_frame, key.phys >> 12, id);
        }
        self.translations[id.0 as usize].frames = frames;
        for site in incoming {
            self.patch_rel32(site.rel32_offset, site.stub_offset);
        }
        self.stats.invalidations += 1;
        true
    }

    /// Records that an indirect branch reached `id` through the run loop,
    /// so that the monitor can put it in a new address space's
    /// indirect-branch table ahead of its first use there.
    pub fn mark_indirect_target(&mut self, id: TransId) {
        let t = &mut self.translations[id.0 as usize];
        if t.indirect_target || t.dead {
            return;
        }
        t.indirect_target = true;
        let frame = t.key.phys >> 12;
        self.indirect_by_frame.entry(frame).or_default().push(id);
    }

    /// The live translations made from `frame`.
    pub fn translations_of_frame(&self, frame: u32) -> Vec<TransId> {
        self.by_frame.get(&frame).cloned().unwrap_or_default()
    }

    /// The live translations marked as indirect-branch targets whose first
    /// instruction lies in `frame`.
    pub fn indirect_targets_of_frame(&self, frame: u32) -> &[TransId] {
        self.indirect_by_frame
            .get(&frame)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether any live translation was made from `frame`.
    pub fn frame_has_code(&self, frame: u32) -> bool {
        self.by_frame.contains_key(&frame)
    }

    /// Drops every translation (permanent code stays).
    pub fn flush(&mut self) {
        self.translations.clear();
        self.by_key.clear();
        self.by_frame.clear();
        self.indirect_by_frame.clear();
        self.by_offset = OffsetIndex::default();
        self.used = self.base_used;
        self.stats.flushes += 1;
    }

    /// Frames that hold translated code.
    pub fn code_frames(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_frame.keys().copied()
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes of translated code in use.
    pub fn bytes_used(&self) -> usize {
        self.used - self.base_used
    }

    /// Reads back code bytes (for disassembly listings).
    pub fn code(&self, off: usize, len: usize) -> &[u8] {
        self.mem.read(off, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_seed_leaves_up_to_three_lines_between_translations_and_seed_0_none() {
        assert!((0..1000).all(|n| layout_gap(0, n) == 0));
        for seed in [1, 2, 77, u32::MAX] {
            let gaps: Vec<usize> = (0..400).map(|n| layout_gap(seed, n)).collect();
            assert!(gaps.iter().all(|g| *g <= 3));
            for g in 0..=3 {
                assert!(gaps.contains(&g), "seed {seed}: no gap of {g}");
            }
            assert_eq!(
                gaps,
                (0..400).map(|n| layout_gap(seed, n)).collect::<Vec<_>>()
            );
        }
        assert_ne!(
            (0..64).map(|n| layout_gap(1, n)).collect::<Vec<_>>(),
            (0..64).map(|n| layout_gap(2, n)).collect::<Vec<_>>()
        );
        let mut cache = CodeCache::new(1 << 20).unwrap();
        let packed = cache.aligned_next_offset();
        cache.set_layout_seed(5);
        let spread = cache.aligned_next_offset();
        assert_eq!((spread - packed) % TRANSLATION_ALIGN, 0);
        assert_eq!(spread - packed, layout_gap(5, 0) * TRANSLATION_ALIGN);
    }

    #[test]
    fn the_offset_index_finds_the_last_start_at_or_before_any_offset() {
        // Starts spread over pages: several in one page, pages with none,
        // one at a page's first byte; against a plain scan.
        let starts = [0x1000usize, 0x1010, 0x1800, 0x2000, 0x5ff0, 0x9000, 0x9100];
        let mut index = OffsetIndex::default();
        for (n, s) in starts.iter().enumerate() {
            index.push(*s, TransId(n as u32));
        }
        for off in (0..0xa000).step_by(8) {
            let want = starts
                .iter()
                .enumerate()
                .rev()
                .find(|(_, s)| **s <= off)
                .map(|(n, s)| (*s, TransId(n as u32)));
            assert_eq!(index.last_at_or_before(off), want, "offset {off:#x}");
        }
    }

    fn record(cache: &CodeCache, phys: u32) -> Translation {
        Translation {
            key: TransKey {
                phys,
                eip: phys,
                mode: 0,
            },
            code_offset: cache.aligned_next_offset(),
            code_len: 0,
            frames: vec![phys >> 12],
            pc_map: vec![(0, phys)],
            fixups: vec![0],
            stack_lags: Vec::new(),
            guest_insns: 1,
            incoming: Vec::new(),
            dead: false,
            indirect_target: false,
        }
    }

    #[test]
    fn an_indirect_target_stays_marked() {
        let mut cache = CodeCache::new(1 << 20).unwrap();
        let r = record(&cache, 0x1000);
        let id = cache.insert(r, &[0xc3]).unwrap();
        assert!(!cache.get(id).indirect_target);
        cache.mark_indirect_target(id);
        assert!(cache.get(id).indirect_target);
        assert_eq!(cache.translations_of_frame(1), vec![id]);
        assert_eq!(cache.indirect_targets_of_frame(1), &[id]);
    }

    #[test]
    fn a_dead_translation_leaves_the_lists_of_its_frames() {
        let mut cache = CodeCache::new(1 << 20).unwrap();
        let mut r = record(&cache, 0x1ff0);
        r.frames.push(2);
        let spanning = cache.insert(r, &[0xc3]).unwrap();
        let r = record(&cache, 0x1800);
        let other = cache.insert(r, &[0xc3]).unwrap();
        cache.mark_indirect_target(spanning);
        cache.mark_indirect_target(other);
        assert!(cache.invalidate(spanning));
        assert_eq!(cache.translations_of_frame(1), vec![other]);
        assert_eq!(cache.indirect_targets_of_frame(1), &[other]);
        assert!(!cache.frame_has_code(2), "only the dead one was there");
        assert_eq!(cache.get(spanning).frames, vec![1, 2], "its record stays");
        assert_eq!(cache.invalidate_frame(1), vec![other]);
        assert!(!cache.frame_has_code(1));
        assert!(cache.indirect_targets_of_frame(1).is_empty());
        cache.mark_indirect_target(other);
        assert!(
            cache.indirect_targets_of_frame(1).is_empty(),
            "a dead one is not listed"
        );
    }

    #[test]
    fn lookup_finds_inserted_translation() {
        let mut c = CodeCache::new(1 << 16).unwrap();
        let t = record(&c, 0x1000);
        let id = c.insert(t, &[0xc3]).unwrap();
        assert_eq!(
            c.lookup(&TransKey {
                phys: 0x1000,
                eip: 0x1000,
                mode: 0
            }),
            Some(id)
        );
        assert_eq!(c.find_by_offset(c.get(id).code_offset), Some(id));
    }

    #[test]
    fn every_translation_starts_on_a_host_cache_line() {
        let mut c = CodeCache::new(1 << 16).unwrap();
        c.add_permanent(&[0xcc; 5]).unwrap();
        for (n, len) in [1usize, 63, 64, 65, 130].into_iter().enumerate() {
            let t = record(&c, 0x1000 * (n as u32 + 1));
            let id = c.insert(t, &vec![0x90; len]).unwrap();
            assert_eq!(c.get(id).code_offset % 64, 0, "translation {n}");
        }
    }

    #[test]
    fn invalidating_a_frame_unchains_incoming_sites() {
        let mut c = CodeCache::new(1 << 16).unwrap();
        // Source translation: jmp rel32 at offset 1..5, stub at 5.
        let src = record(&c, 0x1000);
        let src_off = src.code_offset;
        let src_id = c.insert(src, &[0xe9, 0, 0, 0, 0, 0xcc]).unwrap();
        let dst = record(&c, 0x5000);
        let dst_id = c.insert(dst, &[0x90, 0xc3]).unwrap();
        let site = BranchSite {
            rel32_offset: src_off + 1,
            stub_offset: src_off + 5,
        };
        c.chain(site, dst_id);
        let rel = i32::from_le_bytes(c.code(src_off + 1, 4).try_into().unwrap());
        assert_eq!(
            src_off as i64 + 5 + rel as i64,
            c.get(dst_id).code_offset as i64
        );
        assert_eq!(c.invalidate_frame(5).len(), 1);
        let rel = i32::from_le_bytes(c.code(src_off + 1, 4).try_into().unwrap());
        assert_eq!(rel, 0, "site points back at its stub");
        assert!(c.get(dst_id).dead);
        assert!(!c.get(src_id).dead);
        assert_eq!(
            c.lookup(&TransKey {
                phys: 0x5000,
                eip: 0x5000,
                mode: 0
            }),
            None
        );
    }

    #[test]
    fn full_cache_reports_full_and_flush_reclaims() {
        let mut c = CodeCache::new(8192).unwrap();
        c.add_permanent(&[0xcc; 64]).unwrap();
        let big = vec![0x90; 4050];
        let t = record(&c, 0);
        assert!(matches!(c.insert(t, &big), Err(CacheError::Full)));
        c.flush();
        let t = record(&c, 0);
        assert!(c.insert(t, &[0x90; 1000]).is_ok());
        assert_eq!(c.stats().flushes, 1);
    }
}
