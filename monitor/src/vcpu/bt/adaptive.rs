//! Adaptive memory access: a guest instruction that keeps taking host
//! faults through the window (hidden faults that fill a shadow mapping,
//! guest page faults found by the walk) is translated again so that its
//! memory accesses go through the window's software TLB
//! (`shadowmmu::SoftTlb`), as VMware's adaptive binary translation did for
//! instructions that kept faulting: an explicit operand (FXSAVE's and
//! FXRSTOR's 512-byte area among them), a stack access
//! (PUSH, POP, CALL, RET, LEAVE, ENTER, PUSHFD/POPFD, PUSHAD/POPAD, with
//! PUSH/POP/CALL m32's operand too), a string element, XLAT's byte or a
//! `jmp m32`'s target. An instruction with two accesses probes both
//! before it changes anything. A hit costs a dozen flag-free host
//! instructions; a miss is an exit (no host signal, no host mapping call),
//! after which the monitor walks the guest's page tables and fills the
//! entry, raises the guest's #PF, or runs the instruction alone through the
//! window when the software TLB cannot serve it (a page-crossing access, a
//! write to a frame the watcher protects, an address outside RAM).
//!
//! Invariants:
//! - A software-TLB entry is filled only for the current space's current
//!   view, from a walk with that view's rights that the watcher now knows
//!   of (the tables walked are watched for that space and page, as for a
//!   window mapping), so every event that drops or protects the window's
//!   page drops the entry too (`frames.rs` does both).
//! - A write entry only for a frame the walk found writable and dirty and
//!   the watcher does not protect; each is listed in `soft_writes` under
//!   its frame, so that protecting the frame (new translated code, a table
//!   back in sync) drops it. It counts as a writable host mapping of the
//!   frame, as a window mapping does: the watcher is told when one is
//!   made (a lazy directory may then differ from its snapshot), and a
//!   directory that goes lazy with one may have been written.
//! - A miss in a 4 MiB page of the supervisor view fills the whole page's
//!   entries at once, each a copy of the window's own mapping of the page
//!   (frame and rights): the window's drops and protections reach them as
//!   they reach the window (see [`BtCore::fill_soft_region`]).
//! - A miss near the guest's ESP maps the page in the window as well as
//!   in the software TLB (as a hidden fault would), so that the other
//!   instructions reaching that stack page do not fault on it one after
//!   another and become adaptive in turn; elsewhere a fill maps nothing.
//! - An instruction becomes adaptive after [`ADAPT_AFTER`] faults in one
//!   address space within one epoch (at least [`EPOCH`] of host time; the
//!   counts start over at each epoch), so that a few faults spread over a
//!   long run or over many processes do not put a lookup on every
//!   execution of a hot instruction. It stays adaptive (per guest frame
//!   and offset; a cache flush keeps it so) until it has been found hot
//!   and then did not miss for a [`REVERT_PERIOD`]: then it goes back to
//!   the window.
//!   Hot code is what samples find: the unit an exit request found about
//!   to run, and the units time samples of the vCPU thread's CPU time fell
//!   in (`translator::sampler`, every [`SAMPLE_PERIOD`]; taken at each
//!   exit request, where the period's end is looked at too). Exit requests
//!   alone find only loop heads and indirect-branch targets: a function
//!   reached by predicted calls and returns was never found, and in the
//!   busybox shell loop, instructions that forked children's copy-on-write
//!   faults had made adaptive stayed on the software TLB in the parent's
//!   hot code (shell loop 1.55x native with adaptive access on, 1.40x with
//!   it off). Sending back every instruction that missed fewer than twice
//!   in an epoch, hot or not, was tried: in Linux's fork+exec most
//!   adaptive instructions miss about once per process, and 20,800 of
//!   20,900 went back and forth, each time dying and being translated
//!   again (fork+exec 4.4 s -> 7.7 s).

use super::frames::{page_fault, Alias};
use super::{BtCore, Event, SUPERVISOR_VIEW};
use crate::cpu::{Exception, Fault};
use rustc_hash::FxHashMap as HashMap;
use shadowmmu::PAGE_SIZE;
use translator::state::{SOFT_ACCESS_SIZE, SOFT_ACCESS_WRITE};

/// Host faults one instruction takes before it becomes adaptive.
pub(super) const ADAPT_AFTER: u8 = 4;

/// Host faults a REP string or a `jmp m32` at CPL 3 takes before it
/// becomes adaptive (in one address space within one epoch): one that
/// keeps faulting (a `rep stosd` clearing a fresh region page after page)
/// goes to the software TLB, a hot short copy or a PLT jump with a few
/// faults in each new process does not (see [`BtCore::faults_to_adapt_at`]).
pub(super) const USER_STRING_OR_JUMP_ADAPT_AFTER: u8 = 16;

/// A fault count meaning "cannot be made adaptive".
const NEVER: u8 = u8::MAX;

/// Faulting instructions counted at most; past that the counts start over.
const MAX_COUNTED: usize = 1 << 16;

/// Hot adaptive instructions watched at most.
const MAX_SAMPLED: usize = 4096;

/// Write entries listed at most; past that every write entry is dropped.
const MAX_SOFT_WRITES: usize = 1 << 16;

/// The shortest epoch over which instructions' faults are counted.
const EPOCH: std::time::Duration = std::time::Duration::from_millis(200);

/// How often hot adaptive instructions that did not miss since the last
/// look go back to the window (shorter than [`EPOCH`], over which faults
/// are counted: code that stopped missing should not wait that long; at
/// the guest's timer rate at most, where exit requests look).
const REVERT_PERIOD: std::time::Duration = std::time::Duration::from_millis(50);

/// CPU time of the vCPU thread between two time samples.
const SAMPLE_PERIOD: std::time::Duration = std::time::Duration::from_millis(1);

/// Exits between two looks at the clock for the end of a revert period
/// (and of an epoch).
const EPOCH_CHECK_EXITS: u32 = 1024;

/// The state of adaptive memory access (see the module docs).
pub(super) struct Adaptive {
    /// On (`nestmon.mmu.adaptive`, and the host has BMI2, which the
    /// software-TLB lookup uses).
    pub(super) on: bool,
    /// `rep movs`/`rep stos`, `rep lods`, `rep scas` and `rep cmps` may
    /// become adaptive too, at CPL 3 after [`USER_STRING_OR_JUMP_ADAPT_AFTER`]
    /// faults (`nestmon.mmu.adaptiveStrings`, on by default: see
    /// docs/ARCHITECTURE.md, "Adaptive memory access").
    pub(super) strings: bool,
    /// Guest frame -> the offsets of its adaptive instructions.
    insns: HashMap<u32, Vec<u16>>,
    /// Host faults counted per instruction (guest-physical address) on
    /// the way to making it adaptive ([`NEVER`]: it cannot be).
    faults: HashMap<(u32, usize), u8>,
    /// Guest frame -> software-TLB write entries naming it.
    soft_writes: HashMap<u32, Vec<Alias>>,
    /// Entries in `soft_writes`.
    soft_write_count: usize,
    /// When the current epoch began.
    epoch_start: std::time::Instant,
    /// When hot adaptive instructions were last looked at for going back.
    revert_start: std::time::Instant,
    /// Exits since the clock was last looked at.
    exits: u32,
    /// Live translations with software-TLB accesses -> their adaptive
    /// instructions (EIP, guest-physical address).
    soft_units: HashMap<u32, Vec<(u32, u32)>>,
    /// Software-TLB misses per EIP since the last look for instructions
    /// to send back ([`REVERT_PERIOD`]).
    misses: HashMap<u32, u32>,
    /// Adaptive instructions (guest-physical addresses) of units an exit
    /// request found about to run (a sample of hot code), until a
    /// [`REVERT_PERIOD`] passes without their missing.
    sampled: rustc_hash::FxHashSet<u32>,
    /// The timer that samples where the vCPU thread spends its CPU time
    /// (made on the thread that runs translated code, see
    /// [`BtCore::ensure_time_sampling`]).
    sampler: Option<translator::sampler::Sampler>,
    /// The sampler could not be made: not tried again.
    sampler_failed: bool,
    /// Samples taken from the ring, reused.
    samples: Vec<u64>,
    /// The last miss: (EIP, linear page, write), to catch two accesses of
    /// one instruction that evict each other (see [`BtCore::soft_miss`]).
    last_miss: Option<(u32, u32, bool)>,
}

impl Adaptive {
    /// Adaptive memory access, on if `on` and the host can.
    pub(super) fn new(on: bool) -> Adaptive {
        Adaptive {
            on: on && std::arch::is_x86_feature_detected!("bmi2"),
            strings: true,
            insns: HashMap::default(),
            faults: HashMap::default(),
            soft_writes: HashMap::default(),
            soft_write_count: 0,
            epoch_start: std::time::Instant::now(),
            revert_start: std::time::Instant::now(),
            exits: 0,
            soft_units: HashMap::default(),
            misses: HashMap::default(),
            sampled: rustc_hash::FxHashSet::default(),
            sampler: None,
            sampler_failed: false,
            samples: Vec::new(),
            last_miss: None,
        }
    }

    /// Records that translation `id` (a `TransId`'s index) reaches memory
    /// through the software TLB for the instructions `insns` (EIP,
    /// guest-physical address).
    pub(super) fn note_soft_unit(&mut self, id: u32, insns: Vec<(u32, u32)>) {
        if !insns.is_empty() {
            self.soft_units.insert(id, insns);
        }
    }

    /// Forgets translation `id` (a `TransId`'s index), which died.
    pub(super) fn forget_unit(&mut self, id: u32) {
        self.soft_units.remove(&id);
    }

    /// Forgets every translation (the code cache was flushed).
    pub(super) fn forget_units(&mut self) {
        self.soft_units.clear();
        self.sampled.clear();
    }

    /// Forgets every software-TLB write entry (the spaces were emptied).
    pub(super) fn forget_soft_writes(&mut self) {
        self.soft_writes.clear();
        self.soft_write_count = 0;
    }
}

impl BtCore {
    /// Counts a host fault of the instruction at guest-physical `phys`
    /// that filled a mapping or raised a guest page fault; the
    /// [`ADAPT_AFTER`]th (a user REP string's or `jmp m32`'s
    /// [`USER_STRING_OR_JUMP_ADAPT_AFTER`]th) makes it adaptive: the
    /// translations holding it die (with their indirect-branch entries)
    /// and are made again.
    pub(super) fn note_memory_fault(&mut self, phys: u32) {
        if !self.adaptive.on || !self.paging() {
            return;
        }
        let a = &mut self.adaptive;
        if a.faults.len() >= MAX_COUNTED {
            a.faults.clear();
        }
        let key = (phys, self.space);
        let n = a.faults.entry(key).or_insert(0);
        if *n == NEVER {
            return;
        }
        *n += 1;
        let count = *n;
        if count < ADAPT_AFTER {
            return;
        }
        match self.faults_to_adapt_at(phys) {
            None => {
                self.adaptive.faults.insert(key, NEVER);
                self.stats.adaptive_refused += 1;
                return;
            }
            Some(needed) if count < needed => return,
            Some(_) => {}
        }
        let a = &mut self.adaptive;
        a.faults.remove(&key);
        let offset = (phys % PAGE_SIZE) as u16;
        let list = a.insns.entry(phys / PAGE_SIZE).or_default();
        if list.contains(&offset) {
            return;
        }
        list.push(offset);
        self.stats.adaptive_instructions += 1;
        self.kill_units_containing(phys);
    }

    /// Counts an exit towards the end of the epoch and of the revert
    /// period. At the epoch's end the fault counts start over, so that
    /// only an instruction that faults often ([`ADAPT_AFTER`] times in one
    /// space within one epoch) becomes adaptive; at the period's end an
    /// adaptive instruction of hot code that did not miss once in the
    /// period goes back to the window (see [`Self::sample_unit`]).
    pub(super) fn tick_adaptive_period(&mut self) {
        let a = &mut self.adaptive;
        a.exits += 1;
        if a.exits < EPOCH_CHECK_EXITS {
            return;
        }
        a.exits = 0;
        self.end_adaptive_period_if_due();
    }

    /// Ends the revert period if it lasted [`REVERT_PERIOD`], and the
    /// epoch if it lasted [`EPOCH`] (see [`Self::tick_adaptive_period`]).
    /// Also looked at on every exit request (at the guest's timer rate at
    /// least), so that a period ends in hot code that makes few other
    /// exits, where 1,024 exits can take seconds.
    pub(super) fn end_adaptive_period_if_due(&mut self) {
        let a = &mut self.adaptive;
        if a.revert_start.elapsed() < REVERT_PERIOD {
            return;
        }
        let now = std::time::Instant::now();
        a.revert_start = now;
        if now.duration_since(a.epoch_start) >= EPOCH {
            a.epoch_start = now;
            a.faults.retain(|_, n| *n == NEVER);
        }
        // Misses are counted by EIP (what the exit gives); an instruction
        // missed if it did at any EIP a live unit runs it at.
        let misses = std::mem::take(&mut a.misses);
        let missed: rustc_hash::FxHashSet<u32> = a
            .soft_units
            .values()
            .flatten()
            .filter(|(eip, _)| misses.contains_key(eip))
            .map(|(_, phys)| *phys)
            .collect();
        // Instructions found hot (in this period or before) that did not
        // miss in this one go back; the others stay watched.
        let mut cold = Vec::new();
        a.sampled.retain(|phys| {
            let keep = missed.contains(phys);
            if !keep {
                cold.push(*phys);
            }
            keep
        });
        for phys in cold {
            self.revert_to_window(phys);
        }
    }

    /// Starts sampling the calling thread's CPU time (once per thread that
    /// runs translated code) when adaptive memory access is on: the
    /// samples find the hot code whose adaptive instructions may go back
    /// to the window. A host that cannot make the timer runs without it
    /// (exit requests still sample, less evenly).
    pub(super) fn ensure_time_sampling(&mut self) {
        let a = &mut self.adaptive;
        if !a.on || a.sampler_failed {
            return;
        }
        if a.sampler.as_ref().is_some_and(|s| s.samples_this_thread()) {
            return;
        }
        a.sampler = None;
        match translator::sampler::Sampler::start(SAMPLE_PERIOD) {
            Ok(s) => a.sampler = Some(s),
            Err(_) => a.sampler_failed = true,
        }
    }

    /// Takes the time samples noted since the last call and marks the
    /// adaptive instructions of the units they fell in as hot (see
    /// [`Self::sample_unit`]).
    pub(super) fn take_time_samples(&mut self) {
        let mut samples = std::mem::take(&mut self.adaptive.samples);
        samples.clear();
        translator::sampler::take_samples(&mut samples);
        for rip in &samples {
            self.sample_unit(*rip);
        }
        self.adaptive.samples = samples;
    }

    /// An exit request found the unit at host address `rip` about to run:
    /// its adaptive instructions are noted as hot, and its indirect calls
    /// and jumps without an inline cache start being learned.
    pub(super) fn sample_unit(&mut self, rip: u64) {
        self.sample_sites(rip);
        if self.adaptive.soft_units.is_empty() {
            return;
        }
        let Some(id) = self
            .cache
            .offset_of(rip)
            .and_then(|off| self.cache.find_by_offset(off))
        else {
            return;
        };
        let a = &mut self.adaptive;
        if let Some(insns) = a.soft_units.get(&id.0) {
            if a.sampled.len() + insns.len() > MAX_SAMPLED {
                // Instructions that keep missing stay; past the bound the
                // watch starts over.
                a.sampled.clear();
            }
            a.sampled.extend(insns.iter().map(|(_, phys)| *phys));
        }
    }

    /// Sends the adaptive instruction at guest-physical `phys` back to the
    /// window: its units die and are made again without the lookup.
    fn revert_to_window(&mut self, phys: u32) {
        let frame = phys / PAGE_SIZE;
        let offset = (phys % PAGE_SIZE) as u16;
        let Some(list) = self.adaptive.insns.get_mut(&frame) else {
            return;
        };
        let before = list.len();
        list.retain(|o| *o != offset);
        if list.len() == before {
            return;
        }
        if list.is_empty() {
            self.adaptive.insns.remove(&frame);
        }
        self.stats.adaptive_reverted += 1;
        self.kill_units_containing(phys);
    }

    /// Kills the live translations that hold the instruction at
    /// guest-physical `phys` (with their indirect-branch entries), so that
    /// it is translated again; the frame's other translations live on.
    pub(super) fn kill_units_containing(&mut self, phys: u32) {
        for id in self.cache.translations_of_frame(phys / PAGE_SIZE) {
            let t = self.cache.get(id);
            let holds = t
                .pc_map
                .iter()
                .any(|(_, eip)| t.key.phys.wrapping_add(eip.wrapping_sub(t.key.eip)) == phys);
            if !holds {
                continue;
            }
            if self.cache.invalidate(id) {
                self.forget_dead_translation(id);
            }
        }
        self.pending_chain = None;
    }

    /// The host faults the instruction at guest-physical `phys` takes
    /// before it becomes adaptive: [`ADAPT_AFTER`] for one whose memory
    /// accesses the translator can send through the software TLB,
    /// [`USER_STRING_OR_JUMP_ADAPT_AFTER`] for a REP string or a `jmp m32`
    /// at CPL 3, `None` for any other (or any REP string without
    /// `nestmon.mmu.adaptiveStrings`).
    /// A user program's hot short copy pays the lookup at every run: with
    /// [`ADAPT_AFTER`] for user strings too, the few faults busybox
    /// gunzip's inflate copies (`rep movsb` of a few bytes each) take in
    /// each new process made them adaptive, and gunzip ran 25% longer
    /// (4% with the 50 ms revert period); at CPL 0-2 a REP string is the
    /// kernel's copy or clear of whole pages. A static program's PLT jumps
    /// (`jmp [GOT slot]`) took about 3 faults in each new busybox process
    /// and, adaptive after 4, stayed so in the shell's hot loop (a unit of
    /// one instruction that time samples rarely find): the shell loop ran
    /// 2-3% longer.
    fn faults_to_adapt_at(&self, phys: u32) -> Option<u8> {
        let in_page = (PAGE_SIZE - phys % PAGE_SIZE).min(15) as usize;
        let mut bytes = [0u8; 15];
        if self
            .ram
            .read(shadowmmu::GuestPhys(phys), &mut bytes[..in_page])
            .is_err()
        {
            return None;
        }
        let bitness = if self.sys.code32() { 32 } else { 16 };
        let i = iced_x86::Decoder::new(bitness, &bytes[..in_page], iced_x86::DecoderOptions::NONE)
            .decode();
        if i.is_invalid() {
            return None;
        }
        let by_cpl = if self.sys.cpl == 3 {
            USER_STRING_OR_JUMP_ADAPT_AFTER
        } else {
            ADAPT_AFTER
        };
        if translator::translate::soft_access_candidate(&i)
            || translator::translate::soft_stack_candidate(&i)
            || translator::translate::soft_element_candidate(&i)
        {
            Some(ADAPT_AFTER)
        } else if translator::translate::soft_jump_candidate(&i)
            || self.adaptive.strings && translator::translate::soft_string_candidate(&i)
        {
            Some(by_cpl)
        } else {
            None
        }
    }

    /// The EIPs of the adaptive instructions of a unit starting at `eip`
    /// (linear `linear`, guest-physical `phys`): those at or after it in
    /// its page.
    pub(super) fn adaptive_eips(&self, eip: u32, linear: u32, phys: u32) -> Vec<u32> {
        if !self.adaptive.on || !self.paging() {
            return Vec::new();
        }
        self.adaptive
            .insns
            .get(&(phys / PAGE_SIZE))
            .map_or_else(Vec::new, |list| {
                super::folding::eips_from(list, eip, linear)
            })
    }

    /// A `SoftMiss` exit: the access `CpuState::soft_addr`/`soft_access`
    /// of the instruction at EIP found no software-TLB entry. A miss of the
    /// same instruction right after one in the same table (read or write)
    /// for another page in the same slot means two of its accesses evict
    /// each other (CMPS reads two pages 256 MiB apart, say): it runs
    /// through the window instead of filling one entry after the other
    /// for ever.
    pub(super) fn soft_miss(&mut self) -> Event {
        self.stats.soft_misses += 1;
        if self.adaptive.misses.len() < MAX_COUNTED {
            *self.adaptive.misses.entry(self.state.eip).or_insert(0) += 1;
        }
        let lin = self.state.soft_addr;
        let size = (self.state.soft_access & SOFT_ACCESS_SIZE).max(1);
        let write = self.state.soft_access & SOFT_ACCESS_WRITE != 0;
        let last = lin.wrapping_add(size - 1);
        if !self.paging() || last < lin || (lin ^ last) / PAGE_SIZE != 0 {
            return self.soft_fallback();
        }
        // Two accesses of one instruction in one table (CMPS reads twice)
        // whose pages share a slot would each evict the other's entry:
        // the instruction runs through the window instead.
        let lpage = lin / PAGE_SIZE;
        let last_miss = self
            .adaptive
            .last_miss
            .replace((self.state.eip, lpage, write));
        if let Some((eip, page, w)) = last_miss {
            let slot = |p: u32| p % shadowmmu::SOFT_ENTRIES as u32;
            if eip == self.state.eip && w == write && page != lpage && slot(page) == slot(lpage) {
                self.adaptive.last_miss = None;
                return self.soft_fallback();
            }
        }
        let walked = match self.walk_for_fault(lin, write) {
            Ok(w) => w,
            Err(pf) => {
                self.stats.soft_guest_faults += 1;
                return self.raise(Fault::Exception(page_fault(pf)));
            }
        };
        let phys = walked.phys.0;
        let frame = phys / PAGE_SIZE;
        let writable =
            |core: &BtCore| walked.writable_and_dirty && !core.watcher.write_protected(frame);
        if phys as usize >= self.ram.size() {
            return self.soft_fallback();
        }
        // An in-sync leaf table stops being protected on this first write
        // (see `FrameWatcher::unsync_before_write`).
        if write && !writable(self) && !self.watcher.unsync_before_write(frame) {
            return self.soft_fallback();
        }
        self.watch_walked(lpage, &walked);
        // Watching the walked tables may have made the frame itself a
        // watched table (a page table mapped as data).
        let write_entry = writable(self);
        if write && !write_entry {
            return self.soft_fallback();
        }
        if walked.large && self.view == SUPERVISOR_VIEW && !self.soft_reads(lpage) {
            self.fill_soft_region(lpage, &walked);
        }
        self.fill_soft(lpage, frame, write);
        if self.near_stack_pointer(lin) {
            // The window maps it too: a stack page is reached by many
            // instructions (pushes, pops, calls, returns, frame accesses),
            // and the first one's fill would otherwise leave each of the
            // others a window fault that makes it adaptive in turn.
            self.map_walked(self.view, lpage, &walked);
        }
        Event::Continue
    }

    /// Whether linear `lin` lies within 64 bytes below or 128 above the
    /// guest's ESP (a stack instruction's slot, PUSHAD's frame, a
    /// frame access near the top of the stack).
    fn near_stack_pointer(&self, lin: u32) -> bool {
        let esp = self.state.gpr[crate::cpu::context::ESP];
        lin.wrapping_sub(esp.wrapping_sub(64)) < 192
    }

    /// A miss in a 4 MiB page of the supervisor view (Linux maps its
    /// direct map so): the window maps the whole region (one host call, as
    /// a hidden fault there would, unless it does already from the same
    /// directory entry), and every page of it the window maps to the
    /// frames of that page goes into the software TLB at once, with the
    /// window's rights (read-only where the watcher protects the frame or
    /// the entry is clean). A hardware TLB holds the 4 MiB page as one
    /// entry too; otherwise a kernel's copy through its direct map takes a
    /// miss per 4 KiB page where the window took one fault per 4 MiB.
    /// Entries that mirror window mappings need no bookkeeping of their
    /// own: whatever drops or protects a window page drops or protects its
    /// software-TLB entry too. Kept out of line: inlined, it made every
    /// miss slower (the MMU benchmark's fresh-page row, which never
    /// reaches it, 770 -> 790-850 cycles).
    #[inline(never)]
    fn fill_soft_region(&mut self, lpage: u32, walked: &shadowmmu::Translated) {
        let region = lpage >> 10;
        let frame0 = walked.phys.frame() & !1023;
        if u64::from(frame0) + 1024 > u64::from(self.ram.frames()) {
            return;
        }
        let filled = |core: &BtCore| core.space().large.get(&region) == Some(&walked.pde.value);
        if !filled(self) {
            self.map_walked(SUPERVISOR_VIEW, lpage, walked);
            if !filled(self) {
                return;
            }
        }
        let host0 = self.ram.host_base().0 + frame0 as usize * PAGE_SIZE as usize;
        let space = self.space_mut();
        let shadow = &space.shadow[SUPERVISOR_VIEW];
        space.views[SUPERVISOR_VIEW]
            .soft()
            .fill_region(region, |k| {
                let page = region << 10 | k;
                (shadow.get(page) == Some(frame0 + k))
                    .then(|| (host0 + (k * PAGE_SIZE) as usize, shadow.writable(page)))
            });
        self.stats.soft_region_fills += 1;
    }

    /// Whether the current view's software TLB has a read entry for
    /// `lpage`.
    fn soft_reads(&self, lpage: u32) -> bool {
        self.window().soft_ref().lookup(lpage, false).is_some()
    }

    /// Fills the current view's software TLB for `lpage` -> `frame`.
    fn fill_soft(&mut self, lpage: u32, frame: u32, write: bool) {
        let host = self.ram.host_base().0 + frame as usize * PAGE_SIZE as usize;
        let (slot, view) = (self.space, self.view);
        let Some(space) = self.spaces.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let new_write = space.views[view].soft().fill(lpage, host, write);
        self.stats.soft_fills += 1;
        if new_write {
            // A lazy directory written through it must be compared when
            // its space is entered again (as through a window mapping).
            self.watcher.note_writable_mapping(frame);
            if self.adaptive.soft_write_count >= MAX_SOFT_WRITES {
                self.drop_soft_writes();
            }
            self.adaptive.soft_write_count += 1;
            self.adaptive
                .soft_writes
                .entry(frame)
                .or_default()
                .push(Alias::new(slot, view, lpage));
        }
    }

    /// Runs the instruction at EIP alone through the window (which takes
    /// and resolves its faults the usual way).
    fn soft_fallback(&mut self) -> Event {
        self.stats.soft_fallbacks += 1;
        self.single_step()
    }

    /// Whether some view's software TLB may write `frame`.
    pub(super) fn soft_writable(&self, frame: u32) -> bool {
        self.adaptive.soft_writes.contains_key(&frame)
    }

    /// Drops the software-TLB write entries of `frame` (it is to be
    /// write-protected).
    pub(super) fn drop_soft_writes_of(&mut self, frame: u32) {
        let Some(aliases) = self.adaptive.soft_writes.remove(&frame) else {
            return;
        };
        for a in aliases {
            if let Some(space) = self.spaces.get_mut(a.slot()).and_then(Option::as_mut) {
                space.views[a.view()].soft().drop_write(a.lpage());
            }
        }
    }

    /// Drops every software-TLB write entry of every space.
    pub(super) fn drop_soft_writes(&mut self) {
        self.adaptive.forget_soft_writes();
        for space in self.spaces.iter_mut().flatten() {
            for view in space.views.iter_mut() {
                view.soft().drop_writes();
            }
        }
    }

    /// Whether a host fault that `outcome` resolved counts towards making
    /// its instruction adaptive: a hidden fault or a guest page fault.
    pub(super) fn counts_as_memory_fault(outcome: &super::faults::FaultOutcome) -> bool {
        matches!(
            outcome,
            super::faults::FaultOutcome::Hidden
                | super::faults::FaultOutcome::Guest(Fault::Exception(Exception::PageFault { .. }))
        )
    }
}
