//! The binary-translation vCPU: the run loop over the code cache, and the
//! glue between translated code and the x86 system model (`crate::cpu`).
//!
//! [`BtVcpu::run`] enters translated code and handles its exits itself
//! until something the machine must see happens (port I/O, HLT, a stop
//! request, a guest that cannot continue):
//! - chain and indirect-branch misses translate and link ([`BtCore::step`]);
//! - host faults become hidden faults (shadow fills), self-modifying-code
//!   events or guest exceptions ([`faults`], [`frames`]);
//! - instructions the monitor carries out go to [`exec`], which works on
//!   the system model through the [`crate::cpu::CpuContext`] this backend
//!   implements ([`context`]).
//!
//! Invariants:
//! - Every guest frame that holds live translated code is mapped read-only
//!   in the linear window; a guest write to it kills the frame's
//!   translations before the write happens ([`frames`]).
//! - The monitor's own writes into guest RAM go through
//!   [`BtCore::write_phys`], which applies the same invalidation.
//! - The indirect-branch table only holds entries of live translations.
//! - `CpuState`'s segment bases and selectors mirror `sys.seg` whenever
//!   translated code runs ([`BtCore::sync_segments`]); translations are
//!   looked up with the mode they were made for ([`Mode`]).
//! - At most one I/O instruction is in progress (`pending_io`), and it is
//!   completed at the start of the next `run`.

mod adaptive;
mod branch_table;
mod chains;
mod context;
mod counts;
mod debug;
mod events;
mod exec;
mod faults;
mod folding;
mod frames;
mod predictions;
mod segments;
mod site_predictions;
mod smc;
mod spaces;

use crate::cpu::{Eflags, Exception, Fault, Seg, SystemState};
use crate::cpuid::CpuModel;
use crate::vcpu::{
    ExitRequester, GuestRegisters, GuestStop, InjectError, IoAccess, RegisterDump, StopReason,
    Vcpu, VcpuExit, VcpuStats,
};
use codecache::{BranchSite, CacheError, CodeCache, TransId, TransKey, Translation};
use exec::{ExecOutcome, PendingIo};
use shadowmmu::{FrameWatcher, GuestPhys, GuestRam, PAGE_SIZE};
// Keys are guest frames and addresses: a fast hash, not a keyed one (a
// guest that made its own lookups collide would only slow itself).
use rustc_hash::FxHashMap as HashMap;
use std::io::Write;
use std::sync::{Arc, RwLock};
use translator::ibtc::EmptyIbtc;
use translator::runtime::{self, FaultRegistration};
use translator::state::{ExitReason, LIVE_FLAGS};
use translator::translate::{InlineTransition, Transitions};
use translator::{CpuState, GuestIsa, Mode, Stubs, UnitRequest};

/// Bytes of executable memory for translations.
pub const CODE_CACHE_SIZE: usize = 64 << 20;
/// The `--stats` line of guest instructions executed: every instruction of
/// a unit counts when the unit is entered, so a unit left early (an exit or
/// a fault in its middle) counts its remaining instructions too, and the
/// figure is an upper bound, exact for code that runs without such exits.
pub const GUEST_INSNS_ESTIMATE: &str = "guest instructions executed (estimate)";

/// The mode bit of one-instruction units (never chained; they check their
/// own bytes at entry, since their frames are not traced).
const SINGLE_STEP_MODE: u32 = 0x8000_0000;

/// PC thunks remembered at most (a program has a handful).
const MAX_PC_THUNKS: usize = 4096;
/// Index of the supervisor view in `BtCore::views`.
const SUPERVISOR_VIEW: usize = 0;
/// Index of the user view in `BtCore::views`.
const USER_VIEW: usize = 1;

/// How many instruction forms the `--stats` note on the monitor's
/// instructions names.
const EMULATED_FORMS_SHOWN: usize = 12;

/// Instructions the monitor carried out, counted per iced-x86 form (and
/// those the executor decoded itself): a counter per form, so that counting
/// one costs an index, not a hash.
#[derive(Clone, Debug, Default)]
pub struct EmulatedForms {
    /// Index 0: decoded by the executor; `code + 1`: that form.
    counts: Vec<u64>,
}

impl EmulatedForms {
    fn count(&mut self, code: Option<iced_x86::Code>) {
        let index = code.map_or(0, |c| c as usize + 1);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
    }

    /// The forms counted at least once, with their counts.
    pub fn counted(&self) -> impl Iterator<Item = (Option<iced_x86::Code>, u64)> + '_ {
        let other = self
            .counts
            .first()
            .copied()
            .filter(|n| *n > 0)
            .map(|n| (None, n));
        let forms = iced_x86::Code::values()
            .filter_map(|c| Some((Some(c), *self.counts.get(c as usize + 1)?)))
            .filter(|(_, n)| *n > 0);
        other.into_iter().chain(forms)
    }
}

/// Counters printed by `--stats`.
#[derive(Clone, Debug, Default)]
pub struct BtStats {
    /// Exits to the run loop because a direct branch was not chained yet.
    pub exits_chain_miss: u64,
    /// Exits because an indirect branch target was not in the table.
    pub exits_indirect_miss: u64,
    /// Indirect calls and jumps whose inline cache was made or given up
    /// (their units made again; see `site_predictions`).
    pub inline_caches_changed: u64,
    /// Exits to carry out an instruction in the monitor.
    pub exits_emulate: u64,
    /// Those exits by instruction form (`None`: decoded by the executor
    /// itself), for `--stats`.
    pub emulated_by_form: EmulatedForms,
    /// Exits because of a host fault.
    pub exits_fault: u64,
    /// Exits because an exit was requested (poll page armed).
    pub exits_interrupted: u64,
    /// Exits because a predicted call ran off the return-prediction stack
    /// (128 Ki calls deep without a return since the last entry).
    pub exits_call_overflow: u64,
    /// Port I/O instructions carried out.
    pub io_instructions: u64,
    /// Guest writes to frames holding translated code.
    pub smc_writes: u64,
    /// Accesses the monitor made to device memory (MMIO) for the guest.
    pub mmio_accesses: u64,
    /// Indirect-branch table entries filled ahead, beside a miss's own
    /// (see `BtCore::prefill_page_targets`).
    pub indirect_prefills: u64,
    /// Host faults resolved by filling a shadow mapping (paging on).
    pub hidden_faults: u64,
    /// INVLPGs carried out (each dropping one page or one 4 MiB region).
    pub page_invalidations: u64,
    /// Exceptions raised by guest instructions.
    pub exceptions: u64,
    /// External interrupts injected.
    pub external_interrupts: u64,
    /// NMIs delivered.
    pub nmis: u64,
    /// Inline INT n or IRET sequences that faulted (a page not yet in the
    /// shadow) and were carried out by the monitor instead.
    pub inline_event_redos: u64,
    /// Inline INT n, IRET or exception sites retranslated because their
    /// checks kept failing (a gate or descriptor the guest changed).
    pub inline_event_retranslations: u64,
    /// Exits of cross-page branches whose chain-table entry was not set
    /// for the current view (see [`chains`]).
    pub exits_chain_slot_miss: u64,
    /// Chain-table entries pointed at a translation (see [`chains`]).
    pub chain_entries_set: u64,
    /// Folded memory accesses that wrapped around 4 GiB and ran again
    /// alone, unfolded (see [`folding`]).
    pub unfolded_instructions: u64,
    /// Translations killed by writes to their frames.
    pub smc_translations_killed: u64,
    /// Guest page faults raised (walks that failed).
    pub guest_page_faults: u64,
    /// Switches between cached address spaces (CR3 writes that changed
    /// the page directory).
    pub space_switches: u64,
    /// Address spaces made.
    pub spaces_created: u64,
    /// Address spaces dropped (least recently used past the cache size or
    /// the mapping budget, or zapped).
    pub spaces_evicted: u64,
    /// Times the current space's mappings were all dropped to stay in the
    /// mapping budget.
    pub budget_resets: u64,
    /// Address spaces dropped to stay in the mapping budget.
    pub budget_evictions: u64,
    /// Spaces retired with their 4 MiB regions (directory died or evicted).
    pub spaces_retired: u64,
    /// Regions filled through a shared page table (a kernel's) that a
    /// retired space kept and a new directory took over as they were.
    pub shared_regions_recycled: u64,
    /// Retired spaces that served a new directory.
    pub spaces_recycled: u64,
    /// Paging-mode changes that dropped every space and translation.
    pub mmu_resets: u64,
    /// Pages mapped ahead of their first access: a comparison of a page
    /// table found their entry made present with its accessed bit set.
    pub pages_filled_ahead: u64,
    /// Units whose own bytes, or whose instruction into the next page,
    /// found other bytes in guest memory and were translated again.
    pub crossing_retranslations: u64,
    /// Data segment registers translated code loaded itself (counted when
    /// applied after a run: one per register however often it was loaded
    /// in the run).
    pub inline_segment_loads: u64,
    /// Units translated again for the segment loads they sent to the
    /// monitor (see `segments`).
    pub segment_load_retranslations: u64,
    /// Stores to code frames that touched no translated byte (the
    /// translations were spared).
    pub smc_spared: u64,
    /// Frames made self-checking because stores kept hitting them.
    pub self_checking_frames: u64,
    /// Instructions made adaptive (their memory operand goes through the
    /// software TLB) because they kept taking host faults.
    pub adaptive_instructions: u64,
    /// Adaptive instructions sent back to the window: found in hot code
    /// with no miss for a revert period.
    pub adaptive_reverted: u64,
    /// Instructions that kept taking host faults but whose accesses the
    /// software TLB cannot serve (they stay in the window).
    pub adaptive_refused: u64,
    /// Software-TLB misses (exits of adaptive instructions).
    pub soft_misses: u64,
    /// Software-TLB entries filled.
    pub soft_fills: u64,
    /// Software-TLB misses in a 4 MiB page that filled its whole region
    /// from the window's mappings.
    pub soft_region_fills: u64,
    /// Software-TLB misses that raised the guest's page fault.
    pub soft_guest_faults: u64,
    /// Software-TLB misses the instruction ran alone through the window
    /// for (a page-crossing access, a protected frame, outside RAM).
    pub soft_fallbacks: u64,
}

/// Why a vCPU could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The host refused a resource (memory, executable memory).
    #[error("{0}")]
    Host(String),
}

/// The vCPU as a whole: the I/O data buffer an exit lends to the machine,
/// and everything else.
pub struct BtVcpu {
    io_data: [u8; 4],
    /// The handle other threads request exits through; emptied before the
    /// core (and its registration with the signal handler) is dropped.
    requester: Arc<BtExitRequester>,
    core: BtCore,
}

/// Exit requests from other threads: a read lock is held for the whole
/// request, and the vCPU's drop empties the handle under the write lock,
/// so no request reaches a code cache that is being unregistered.
struct BtExitRequester {
    handle: RwLock<Option<runtime::ExitHandle>>,
}

impl ExitRequester for BtExitRequester {
    fn request_exit(&self) {
        // A poisoned lock still holds a valid handle or None.
        let guard = self.handle.read().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = *guard {
            handle.request_exit();
        }
    }
}

impl Drop for BtVcpu {
    fn drop(&mut self) {
        let mut guard = self
            .requester
            .handle
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }
}

/// Everything of the vCPU but the I/O data buffer (so an I/O exit can lend
/// both at once).
pub struct BtCore {
    /// The signal handler's registration of the code cache; declared first
    /// so that it is dropped (unregistered) before the state block and the
    /// tables it points at.
    faults: FaultRegistration,
    /// Registers and the state block shared with translated code.
    state: Box<CpuState>,
    /// The system state (segments, descriptor tables, control registers).
    sys: SystemState,
    model: CpuModel,
    isa: GuestIsa,
    /// The model's CPUID answers, which translated code gives inline.
    cpuid_answers: translator::CpuidAnswers,
    /// Ports the platform ignores (IN/OUT to them may run inline).
    ignored_ports: Option<translator::translate::PortSet>,
    /// Ports exempt from the I/O permission check (see
    /// [`BtVcpu::set_unprivileged_ports`]).
    unprivileged_ports: Vec<u16>,
    /// The ports translated code has accessed inline (for `--stats`: the
    /// platform does not count those accesses).
    inline_ports: std::collections::BTreeSet<u16>,
    ram: GuestRam,
    /// The memory-mapped devices, for guest accesses outside RAM.
    mmio: crate::devices::mmio::MmioBus,
    /// The local APIC, whose `IA32_APIC_BASE` WRMSR moves or disables
    /// (none: the MSR is only a register).
    lapic: Option<crate::devices::lapic::SharedLapic>,
    /// The host stack translated code runs on, so that guest calls and
    /// returns are host ones (`translator::rstack`; none: return
    /// prediction off, and translated code never makes a host call).
    return_stack: Option<translator::rstack::ReturnStack>,
    /// How many conditional branches a unit goes on past
    /// (`translator::translate::UnitRequest::superblock_branches`).
    superblock_branches: u32,
    /// How many direct branches a unit follows
    /// (`translator::translate::UnitRequest::followed_branches`).
    followed_branches: u32,
    /// Displacements are folded into host addressing
    /// (`nestmon.bt.foldDisplacements`, see [`folding`]).
    fold_displacements: bool,
    /// Instructions whose folded address wrapped (see [`folding`]).
    unfolded: folding::Unfolded,
    /// PC thunks of position-independent code seen so far, by EIP (see
    /// `translator::PcThunk`): calls translated after run them inline,
    /// checking their bytes each time, so an entry never needs dropping.
    pc_thunks: std::collections::HashMap<u32, translator::PcThunk>,
    /// Cross-page chaining through the views' chain tables (see
    /// [`chains`]; none handed out while off).
    chains: chains::ChainSites,
    /// Cross-page direct branches under paging go through the chain
    /// tables (`nestmon.bt.chainTables`); off: they probe the
    /// indirect-branch table.
    chain_tables: bool,
    /// Jumps through a table of targets go through host tables in the
    /// views' chain tables (`nestmon.bt.jumpTables`; needs
    /// `chain_tables`); off: they probe the indirect-branch table.
    jump_tables: bool,
    /// Indirect calls and jumps keep an inline cache of the one target
    /// they were seen to take (`nestmon.bt.inlineCaches`; needs
    /// `chain_tables`).
    inline_caches: bool,
    /// Short leaf callees are translated in place at their calls
    /// (`nestmon.bt.inlineLeaves`).
    inline_leaves: bool,
    /// The targets learned for those caches (see [`site_predictions`]).
    site_predictions: site_predictions::SitePredictions,
    /// The address spaces cached per page directory (slots; see
    /// [`spaces`]), each with a supervisor view (index 0: CPL 0-2, and
    /// every CPL while paging is off) and a user view (index 1: CPL 3 with
    /// paging on) that map only what the guest's page tables allow at
    /// their privilege, and its own indirect-branch table.
    spaces: Vec<Option<spaces::AddressSpace>>,
    /// The slot of the current address space.
    space: usize,
    /// Ticks at every space switch (for least-recently-used eviction).
    clock: u64,
    /// Host mappings the process may hold before spaces are dropped.
    mapping_budget: usize,
    /// Host mappings counted at the last look at `/proc/self/maps`.
    mappings_counted: usize,
    /// Host calls on windows since then (each adds at most
    /// `spaces::MAPPINGS_PER_CALL` mappings).
    window_calls: usize,
    /// The view translated code runs in (its base is `state.window`).
    view: usize,
    /// The segments whose accesses translated code checks (see
    /// `Mode::limited`), as of the last [`Self::sync_segments`].
    limited: u8,
    /// The segment registers as [`Self::sync_segments`] last copied them.
    synced_segments: [Option<crate::cpu::SegmentRegister>; 6],
    cache: CodeCache,
    stubs: Stubs,
    /// The modes translated since the last flush; a mode's tag is its
    /// index (see [`translator::ibtc`]).
    mode_tags: Vec<ModeKey>,
    /// The tag of the current mode.
    tag: u32,
    /// The table exit requests swap in: nothing matches in it. Only its
    /// address is used (by the signal handler), so it must live here.
    _empty_ibtc: EmptyIbtc,
    /// The indirect-branch table of the supervisor modes, shared by every
    /// address space (`CpuState::ibtc_shared`; see [`branch_table`]).
    shared_ibtc: branch_table::BranchTable,
    /// Why guest frames are write-protected: translated code, page tables
    /// of cached spaces (see [`shadowmmu::FrameWatcher`]).
    watcher: FrameWatcher,
    /// In-sync page tables the instruction running alone may write (see
    /// `BtCore::settle_table_writes`).
    pending_table_writes: Vec<u32>,
    /// Code frames the instruction running alone may write next to their
    /// translated bytes (see [`smc`]).
    pending_code_writes: Vec<u32>,
    /// Per frame, the bytes live translations were made from (see [`smc`]).
    code_bytes: HashMap<u32, smc::ByteMap>,
    /// Per code frame, the stores that faulted on it so far.
    code_store_faults: HashMap<u32, u32>,
    /// With paging on: guest frame -> (space, view, linear page) mapped to
    /// it.
    rmap: HashMap<u32, Vec<frames::Alias>>,
    /// Adaptive memory access (see [`adaptive`]).
    adaptive: adaptive::Adaptive,
    /// The monitor's own guest TLB (see [`frames::MonitorTlb`]).
    monitor_tlb: frames::MonitorTlb,
    /// The tables the last [`BtCore::watch_walked`] watched, with the
    /// watcher's epoch after it (see `frames::WatchedWalk`).
    last_watched: Option<frames::WatchedWalk>,
    /// Data segment loads offered to translated code (see `segments`).
    segment_loads: segments::SegmentLoads,
    /// The instruction (guest-physical address) of the host fault being
    /// handled, when it ran in a unit of its own kind (not alone).
    fault_insn: Option<u32>,
    /// The direct branch that just missed, to chain once its target's
    /// translation is entered: (site, target EIP, mode bits). It is only
    /// chained to a translation of exactly that EIP and mode, whatever ran
    /// in between (a debug trap, an exception, an exit request).
    pending_chain: Option<(BranchSite, u32, u32)>,
    stats: BtStats,
    count_indirect: bool,
    hits_counter: Box<u64>,
    /// The outcomes of inline INT n and IRET translations, by
    /// `CpuState::transition` record (emptied with the cache).
    event_outcomes: Vec<events::EventOutcome>,
    /// Inline events whose checks failed, by EIP, since their translation
    /// (see `events::EVENT_BAIL_LIMIT`).
    event_bails: HashMap<u32, u32>,
    /// The CS and SS selectors of ring 3 when it last ran (for the made-up
    /// frame of an inline IRET's return to ring 3).
    last_user_selectors: Option<(u16, u16)>,
    /// GDTR, IDTR and TR as `CpuState::tables_gen` last counted them.
    tables_seen: Option<(
        crate::cpu::TableRegister,
        crate::cpu::TableRegister,
        crate::cpu::SegmentRegister,
        crate::cpu::SegmentRegister,
    )>,
    /// Units entered, counted by translated code while `count_indirect`
    /// (the `--stats` estimate of guest instructions executed).
    entries: counts::EntryCounts,
    log: Option<Box<dyn Write>>,
    /// `/tmp/perf-PID.map` when `NESTMON_PERF_MAP` is set: one line per
    /// translation (host start, length, guest EIP, mode and offset in the
    /// code cache file), so that `benches/perf-guest.py` can name the
    /// guest code perf's samples fall in (perf reports them as offsets in
    /// the memfd `nestmon-code-cache`).
    perf_map: Option<std::fs::File>,
    /// The I/O instruction in progress.
    pending_io: Option<PendingIo>,
    /// The I/O handler completed a string instruction itself.
    string_io_done: bool,
    /// The registers a stop reports instead of the current ones: those at
    /// the fault whose delivery failed (a triple fault).
    stopped_registers: Option<RegisterDump>,
    /// Events delivered through the IDT so far (the single-step trap is
    /// not raised after an instruction that delivered one).
    deliveries: u64,
    /// The I/O instruction in progress began with TF set: #DB when it
    /// completes.
    trap_after_io: bool,
    /// An NMI waits for NMIs to be unblocked.
    pending_nmi: bool,
    /// The instructions `Emulate` exits of live translations hand over,
    /// by token, with the translation whose exit hands each over (emptied
    /// with the cache: tokens are never reused while a translation that
    /// stores them can run).
    emulated: Vec<(iced_x86::Instruction, codecache::TransId)>,
    /// `sys` was borrowed mutably since the last
    /// [`BtCore::settle_system_change`]; `key_before` is the mode key from
    /// just before that borrow.
    sys_dirty: bool,
    key_before: ModeKey,
    /// A stop found outside `run` (an injected interrupt that could not be
    /// delivered), returned by the next `run`.
    deferred_stop: Option<StopReason>,
}

impl BtVcpu {
    /// A vCPU over `ram` for the CPU `model`, in the Multiboot entry state
    /// (flat 32-bit protected mode at CPL 0, paging off).
    pub fn new(ram: GuestRam, model: CpuModel) -> Result<BtVcpu, VcpuError> {
        let core = BtCore::new(ram, model)?;
        let requester = Arc::new(BtExitRequester {
            handle: RwLock::new(Some(core.faults.exit_handle())),
        });
        let mut vcpu = BtVcpu {
            io_data: [0; 4],
            requester,
            core,
        };
        vcpu.set_return_prediction(true)?;
        Ok(vcpu)
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.core.ram
    }

    /// Sets the general registers, EIP and EFLAGS.
    pub fn set_registers(&mut self, regs: &GuestRegisters) {
        let s = &mut self.core.state;
        s.gpr = regs.gpr;
        s.eip = regs.eip;
        s.eflags = regs.eflags & !translator::state::FLAG_IF | 2;
        s.vif = u32::from(regs.eflags & translator::state::FLAG_IF != 0);
    }

    /// Replaces the system state (segment registers with their caches,
    /// descriptor-table and control registers), as a boot loader leaves it
    /// before the first instruction; the translation mode, the segment
    /// mirrors and the address space follow the new state.
    pub fn set_system_state(&mut self, sys: SystemState) {
        let before = self.core.mode_key();
        self.core.sys = sys;
        self.core.after_system_change(before);
    }

    /// The guest's x87/MMX/SSE state (the FXSAVE image), to set it up.
    pub fn fx_mut(&mut self) -> &mut [u8; 512] {
        self.core.state.fx_mut()
    }

    /// The system state (segments, descriptor tables, control registers).
    pub fn sys(&self) -> &SystemState {
        &self.core.sys
    }

    /// Writes every translation (guest and host code) to `out`.
    pub fn set_translation_log(&mut self, out: Box<dyn Write>) {
        self.core.log = Some(out);
    }

    /// Lets translated code at CPL 0 carry out IN/OUT with an immediate port
    /// among `ports` itself, as the platform would: OUT is dropped, IN
    /// reads all ones. The platform does not see (or count) those accesses.
    pub fn set_ignored_ports(&mut self, ports: translator::translate::PortSet) {
        self.core.ignored_ports = Some(ports);
        self.core.flush();
    }

    /// Ports IN/OUT/INS/OUTS reach without the I/O permission check
    /// (IOPL, the TSS I/O bitmap) at any CPL: the backdoor's, unless
    /// `monitor_control.restrict_backdoor` (see `Board::unprivileged_ports`).
    pub fn set_unprivileged_ports(&mut self, ports: Vec<u16>) {
        self.core.unprivileged_ports = ports;
    }

    /// The memory-mapped devices guest accesses outside RAM reach (none
    /// until this is called: such accesses read all ones and write
    /// nothing).
    pub fn set_mmio_bus(&mut self, bus: crate::devices::mmio::MmioBus) {
        self.core.mmio = bus;
    }

    /// The local APIC whose base and global enable `IA32_APIC_BASE`
    /// writes set (its registers are reached through the MMIO bus).
    pub fn set_local_apic(&mut self, lapic: crate::devices::lapic::SharedLapic) {
        self.core.lapic = Some(lapic);
    }

    /// Lets leaf page tables the guest keeps writing go out of sync until
    /// its next TLB flush (on by default; off: every write to a traced
    /// page table is seen as it happens), for comparison.
    pub fn set_out_of_sync(&mut self, on: bool) {
        self.core.watcher.set_out_of_sync(on);
    }

    /// Lets translation units go on past up to `branches` conditional
    /// branches (`nestmon.bt.superblockBranches`), for comparison.
    /// Translations made before are dropped.
    pub fn set_superblock_branches(&mut self, branches: u32) {
        if branches != self.core.superblock_branches {
            self.core.flush();
            self.core.superblock_branches = branches;
        }
    }

    /// Places later translations in the code cache by `seed`
    /// (`nestmon.bt.layoutSeed`; 0 packs them), for measuring how much a
    /// workload's speed depends on where its host code lands.
    pub fn set_layout_seed(&mut self, seed: u32) {
        self.core.cache.set_layout_seed(seed);
    }

    /// Lets translation units follow up to `branches` direct branches in
    /// their page (`nestmon.bt.followedBranches`), for comparison.
    /// Translations made before are dropped.
    pub fn set_followed_branches(&mut self, branches: u32) {
        if branches != self.core.followed_branches {
            self.core.flush();
            self.core.followed_branches = branches;
        }
    }

    /// Sends cross-page direct branches under paging through the views'
    /// chain tables (`nestmon.bt.chainTables`, on by default) instead of
    /// the indirect-branch table, for comparison. Translations made before
    /// are dropped.
    pub fn set_chain_tables(&mut self, on: bool) {
        if on != self.core.chain_tables {
            self.core.flush();
            self.core.chain_tables = on;
        }
    }

    /// Sends jumps through a table of targets (`jmp [idx*4 + disp32]`, and
    /// the `jmp r` of position-independent code's tables) through host
    /// tables in the views' chain tables
    /// (`nestmon.bt.jumpTables`, on by default; with chain tables only)
    /// instead of the indirect-branch table, for comparison. Translations
    /// made before are dropped.
    pub fn set_jump_tables(&mut self, on: bool) {
        if on != self.core.jump_tables {
            self.core.flush();
            self.core.jump_tables = on;
        }
    }

    /// Gives indirect calls and jumps inline caches of the one target they
    /// were seen to take (`nestmon.bt.inlineCaches`, on by default; with
    /// chain tables only), for comparison. Translations made before are
    /// dropped.
    pub fn set_inline_caches(&mut self, on: bool) {
        if on != self.core.inline_caches {
            self.core.flush();
            self.core.inline_caches = on;
        }
    }

    /// Translates short leaf callees in place at their direct calls and
    /// at their indirect calls' inline-cache matches
    /// (`nestmon.bt.inlineLeaves`, on by default), for comparison.
    /// Translations made before are dropped.
    pub fn set_inline_leaves(&mut self, on: bool) {
        if on != self.core.inline_leaves {
            self.core.flush();
            self.core.inline_leaves = on;
        }
    }

    /// Folds guest displacements into host addressing
    /// (`nestmon.bt.foldDisplacements`, on by default), for comparison.
    /// Translations made before are dropped.
    pub fn set_fold_displacements(&mut self, on: bool) {
        if on != self.core.fold_displacements {
            self.core.flush();
            self.core.fold_displacements = on;
        }
    }

    /// Makes guest calls and returns host ones on a stack of their own, so
    /// that the host predicts guest returns (`nestmon.bt.returnStack`, on
    /// by default), for comparison. Translations made before are dropped
    /// (they assume the other way).
    pub fn set_return_prediction(&mut self, on: bool) -> Result<(), VcpuError> {
        if on == self.core.return_stack.is_some() {
            return Ok(());
        }
        self.core.flush();
        self.core.return_stack = if on {
            let stack = translator::rstack::ReturnStack::new(self.core.stubs.return_sentinel)
                .map_err(|e| {
                    VcpuError::Host(format!("cannot map the return-prediction stack: {e}"))
                })?;
            Some(stack)
        } else {
            None
        };
        self.core.state.rsb_top = self.core.return_stack.as_ref().map_or(0, |s| s.top());
        Ok(())
    }

    /// Lets instructions that keep taking host faults reach memory through
    /// the software TLB (`nestmon.mmu.adaptive`; on by default where the
    /// host has BMI2, which the lookup uses), for comparison.
    pub fn set_adaptive(&mut self, on: bool) {
        self.core.adaptive.on = on && std::arch::is_x86_feature_detected!("bmi2");
    }

    /// Lets `rep movs`, `rep stos`, `rep lods`, `rep scas` and `rep cmps`
    /// that the guest's kernel runs become adaptive too
    /// (`nestmon.mmu.adaptiveStrings`; on by default).
    pub fn set_adaptive_strings(&mut self, on: bool) {
        self.core.adaptive.strings = on;
    }

    /// Sets the most host mappings the process may hold before cached
    /// address spaces are dropped (`nestmon.mmu.maxMappings`; default
    /// three quarters of `vm.max_map_count`).
    ///
    /// A budget above what this host allows a process (its
    /// `vm.max_map_count`, less a margin for the monitor) is refused with
    /// the largest one allowed.
    pub fn set_mapping_budget(&mut self, most: usize) -> Result<(), usize> {
        let largest = spaces::largest_mapping_budget();
        if most > largest {
            return Err(largest);
        }
        self.core.mapping_budget = most;
        Ok(())
    }

    /// Counts indirect-branch hits and units entered in emitted code
    /// (slightly slower), for `--stats`.
    pub fn set_count_indirect(&mut self, on: bool) {
        self.core.count_indirect = on;
    }

    /// Backend counters.
    pub fn bt_stats(&self) -> &BtStats {
        &self.core.stats
    }

    /// The code cache (for statistics).
    pub fn cache(&self) -> &CodeCache {
        &self.core.cache
    }

    /// Indirect-branch hits counted in emitted code.
    pub fn indirect_hits(&self) -> u64 {
        *self.core.hits_counter
    }
}

impl Vcpu for BtVcpu {
    fn run(&mut self) -> VcpuExit<'_> {
        if self.core.return_stack.is_some() {
            // Signals must not run on the return-prediction stack.
            if let Err(e) = runtime::ensure_signal_stack() {
                let reason = StopReason::Internal(format!("cannot set up a signal stack: {e}"));
                return VcpuExit::Stopped(self.core.stop(reason));
            }
        }
        self.core.ensure_time_sampling();
        loop {
            let event = match self.core.pending_io.take() {
                Some(io) => self.core.resume_io(io, &self.io_data),
                None => match self.core.interrupt_event() {
                    Some(event) => event,
                    None => self.core.step(),
                },
            };
            match event {
                // Code the monitor runs (a long REP string instruction
                // restarted in slices, say) never reaches a poll: requests
                // are checked here too.
                Event::Continue if self.core.exit_requested() => {
                    self.core.serve_exit_request();
                    return VcpuExit::Interrupted;
                }
                Event::Continue => {}
                Event::Io => break,
                Event::Hlt => return VcpuExit::Hlt,
                Event::InterruptWindow => return VcpuExit::InterruptWindow,
                Event::Interrupted => return VcpuExit::Interrupted,
                Event::Stop(reason) => return VcpuExit::Stopped(self.core.stop(reason)),
            }
        }
        self.io_exit()
    }

    fn registers(&self) -> GuestRegisters {
        self.core.registers()
    }

    fn register_dump(&self) -> RegisterDump {
        RegisterDump::new(self.core.registers(), &self.core.sys)
    }

    fn request_exit(&self) {
        self.core.faults.request_exit();
    }

    fn exit_requester(&self) -> Arc<dyn ExitRequester> {
        self.requester.clone()
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.core.state.window_wanted = u32::from(on);
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), InjectError> {
        if !self.core.interrupt_window_open() {
            return Err(InjectError::WindowClosed);
        }
        self.core.stats.external_interrupts += 1;
        let eip = self.core.state.eip;
        let event = crate::cpu::interrupt::Event::External(vector);
        if let Event::Stop(reason) = self.core.deliver(event, eip) {
            self.core.deferred_stop = Some(reason);
        }
        Ok(())
    }

    fn inject_nmi(&mut self) {
        self.core.pending_nmi = true;
    }

    fn stats(&self) -> VcpuStats {
        let c = self.core.cache.stats();
        let v = &self.core.stats;
        let w = self.core.watcher.stats();
        let (tables, unsynced) = self.core.watcher.tables();
        let spaces = self.core.spaces.iter().flatten().count() as u64;
        VcpuStats {
            counters: vec![
                ("translations", c.translations),
                ("guest instructions translated", c.guest_insns),
                ("code cache bytes", self.core.cache.bytes_used() as u64),
                ("chains made", c.chains),
                ("indirect-branch hits", *self.core.hits_counter),
                (GUEST_INSNS_ESTIMATE, self.core.entries.guest_insns()),
                ("indirect-branch misses", v.exits_indirect_miss),
                ("exits: chain miss", v.exits_chain_miss),
                ("exits: chain-table miss", v.exits_chain_slot_miss),
                ("chain-table entries set", v.chain_entries_set),
                ("exits: indirect miss", v.exits_indirect_miss),
                ("exits: emulated instruction", v.exits_emulate),
                ("exits: host fault", v.exits_fault),
                ("exits: stop requests", v.exits_interrupted),
                ("exits: return-stack overflow", v.exits_call_overflow),
                ("port I/O instructions", v.io_instructions),
                ("guest exceptions", v.exceptions),
                ("external interrupts", v.external_interrupts),
                ("NMIs", v.nmis),
                ("self-modifying writes", v.smc_writes),
                ("device memory accesses", v.mmio_accesses),
                ("indirect-branch entries filled ahead", v.indirect_prefills),
                ("inline caches made or given up", v.inline_caches_changed),
                ("hidden faults (shadow fills)", v.hidden_faults),
                (
                    "inline INT/IRET redone by the monitor",
                    v.inline_event_redos,
                ),
                (
                    "segment registers loaded by translated code",
                    v.inline_segment_loads,
                ),
                (
                    "units translated again for their segment loads",
                    v.segment_load_retranslations,
                ),
                (
                    "inline INT/IRET sites retranslated",
                    v.inline_event_retranslations,
                ),
                (
                    "folded accesses that wrapped (run again unfolded)",
                    v.unfolded_instructions,
                ),
                ("INVLPG (page invalidations)", v.page_invalidations),
                ("MMU: guest page faults", v.guest_page_faults),
                ("MMU: traced page-table writes", w.traced_writes),
                ("MMU: page tables gone out of sync", w.unsyncs),
                (
                    "MMU: directories of idle spaces gone lazy",
                    w.lazy_directories,
                ),
                (
                    "MMU: lazy directories entered with no comparison",
                    w.lazy_unwritten,
                ),
                ("MMU: out-of-sync tables resynchronized", w.resyncs),
                ("MMU: page tables zapped (write flooding)", w.zaps),
                ("MMU: page tables watched now", tables as u64),
                ("MMU: page tables out of sync now", unsynced as u64),
                ("MMU: address-space switches", v.space_switches),
                ("MMU: address spaces made", v.spaces_created),
                ("MMU: address spaces dropped", v.spaces_evicted),
                (
                    "MMU: address spaces retired with their 4 MiB pages",
                    v.spaces_retired,
                ),
                (
                    "MMU: retired spaces serving a new directory",
                    v.spaces_recycled,
                ),
                (
                    "MMU: shared page-table regions a new directory took over",
                    v.shared_regions_recycled,
                ),
                ("MMU: address spaces cached now", spaces),
                (
                    "MMU: host mappings of the process",
                    spaces::host_mappings().unwrap_or(0) as u64,
                ),
                (
                    "MMU: address spaces dropped for the budget",
                    v.budget_evictions,
                ),
                ("MMU: budget resets of the current space", v.budget_resets),
                ("MMU: paging-mode resets", v.mmu_resets),
                (
                    "MMU: pages mapped ahead of their first access",
                    v.pages_filled_ahead,
                ),
                (
                    "translations killed by guest writes",
                    v.smc_translations_killed,
                ),
                (
                    "self-checking units retranslated",
                    v.crossing_retranslations,
                ),
                (
                    "stores next to translated code (translations spared)",
                    v.smc_spared,
                ),
                ("frames made self-checking", v.self_checking_frames),
                ("MMU: instructions made adaptive", v.adaptive_instructions),
                (
                    "MMU: adaptive instructions back to the window",
                    v.adaptive_reverted,
                ),
                (
                    "MMU: instructions that kept faulting, not adaptive",
                    v.adaptive_refused,
                ),
                ("MMU: software-TLB misses", v.soft_misses),
                ("MMU: software-TLB fills", v.soft_fills),
                (
                    "MMU: software-TLB fills of a whole 4 MiB page",
                    v.soft_region_fills,
                ),
                (
                    "MMU: software-TLB misses raising a guest #PF",
                    v.soft_guest_faults,
                ),
                (
                    "MMU: software-TLB misses run through the window",
                    v.soft_fallbacks,
                ),
                ("invalidations", c.invalidations),
                ("flushes", c.flushes),
            ],
            notes: self
                .inline_ports_note()
                .into_iter()
                .chain(self.emulated_forms_note())
                .collect(),
        }
    }
}

impl BtVcpu {
    /// The `--stats` line naming the ports accessed inline, if any.
    fn inline_ports_note(&self) -> Option<String> {
        let ports = &self.core.inline_ports;
        if ports.is_empty() {
            return None;
        }
        let list: Vec<String> = ports.iter().map(|p| format!("{p:#06x}")).collect();
        Some(format!(
            "ignored ports accessed by translated code without an exit (not counted): {}",
            list.join(", ")
        ))
    }

    /// The `--stats` line naming the instruction forms the monitor carried
    /// out most often (an exit each), if it carried out any.
    fn emulated_forms_note(&self) -> Option<String> {
        let mut forms: Vec<(u64, String)> = self
            .core
            .stats
            .emulated_by_form
            .counted()
            .map(|(code, n)| {
                let name = code.map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
                (n, name)
            })
            .collect();
        if forms.is_empty() {
            return None;
        }
        forms.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let list: Vec<String> = forms
            .iter()
            .take(EMULATED_FORMS_SHOWN)
            .map(|(n, name)| format!("{name} {n}"))
            .collect();
        Some(format!(
            "instructions carried out by the monitor, most frequent forms (iced-x86 names): {}",
            list.join(", ")
        ))
    }

    /// The I/O exit for the access `pending_io` describes.
    fn io_exit(&mut self) -> VcpuExit<'_> {
        let Some(io) = self.core.pending_io.as_ref() else {
            return VcpuExit::Stopped(
                self.core
                    .stop(StopReason::Internal("I/O exit without an access".into())),
            );
        };
        let (port, size, input, string) = (io.port, io.size as usize, io.input, io.is_string());
        if !input {
            self.io_data = io.out_value.to_le_bytes();
        }
        let data = &mut self.io_data[..size];
        let access: &mut dyn IoAccess = &mut self.core;
        if input {
            VcpuExit::IoIn {
                port,
                data,
                string,
                io: access,
            }
        } else {
            VcpuExit::IoOut {
                port,
                data,
                string,
                io: access,
            }
        }
    }
}

/// What one step of the run loop found.
enum Event {
    /// Keep running.
    Continue,
    /// `pending_io` holds an access for the machine.
    Io,
    /// HLT with IF = 1.
    Hlt,
    /// The interrupt window the machine asked for is open.
    InterruptWindow,
    /// An exit was requested.
    Interrupted,
    /// The guest cannot continue.
    Stop(StopReason),
}

/// Whether the host's CPUID (`cpuid`) reports LAHF and SAHF in 64-bit
/// mode, which translated PUSHFD and POPFD use (the first x86-64 CPUs
/// lacked them).
fn host_has_lahf_sahf(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> bool {
    cpuid(0x8000_0000, 0)[0] >= 0x8000_0001 && cpuid(0x8000_0001, 0)[2] & 1 == 1
}

impl BtCore {
    fn new(ram: GuestRam, model: CpuModel) -> Result<BtCore, VcpuError> {
        let host = |e: &dyn std::fmt::Display| VcpuError::Host(e.to_string());
        if !host_has_lahf_sahf(crate::probe::host_cpuid) {
            return Err(VcpuError::Host(
                "binary translation needs LAHF/SAHF in 64-bit mode (CPUID 0x80000001 ECX bit 0), \
                 which this host CPU lacks"
                    .into(),
            ));
        }
        let unpaged =
            spaces::AddressSpace::new(spaces::UNPAGED_ROOT, 0, &[]).map_err(|e| host(&e))?;
        let size = ram.size() as u64;
        unpaged.views[SUPERVISOR_VIEW]
            .map(
                shadowmmu::GuestLinear(0),
                ram.fd(),
                GuestPhys(0),
                size,
                shadowmmu::PageProt::ReadWrite,
            )
            .map_err(|e| host(&e))?;
        let mut cache = CodeCache::new(CODE_CACHE_SIZE).map_err(|e| host(&e))?;
        let (code, addrs) = runtime::assemble_stubs(cache.exec_addr(cache.aligned_next_offset()))
            .map_err(|e| host(&e))?;
        cache.add_permanent(&code).map_err(|e| host(&e))?;
        let stubs = Stubs {
            enter: addrs[0],
            exit_common: addrs[1],
            exit_saved: addrs[2],
            poll: cache.poll_addr(),
            return_sentinel: addrs[3],
        };
        let start = cache.exec_addr(0);
        let faults =
            runtime::register_cache(start, start + CODE_CACHE_SIZE as u64, stubs.exit_saved)
                .ok_or_else(|| VcpuError::Host("too many code caches in one process".into()))?;
        let empty_ibtc = EmptyIbtc::default();
        let mut state = Box::<CpuState>::default();
        let bases = unpaged.views.each_ref().map(|v| v.base().0 as u64);
        state.window = bases[SUPERVISOR_VIEW];
        state.view_bases = bases;
        state
            .ibtc
            .store(unpaged.ibtc.addr(), std::sync::atomic::Ordering::SeqCst);
        let shared_ibtc = branch_table::BranchTable::shared();
        state
            .ibtc_shared
            .store(shared_ibtc.addr(), std::sync::atomic::Ordering::SeqCst);
        // SAFETY: the state block is boxed and the empty table's entries
        // are boxed, so neither moves; both are owned by the core, which
        // drops the registration (its first field) before them.
        unsafe { faults.set_ibtc(&state.ibtc, &state.ibtc_shared, empty_ibtc.addr()) };
        let frames = ram.frames() as usize;
        let mut core = BtCore {
            state,
            sys: SystemState::multiboot_entry(),
            isa: model.guest_isa(),
            cpuid_answers: model.cpuid_answers(),
            ignored_ports: None,
            inline_ports: Default::default(),
            unprivileged_ports: Vec::new(),
            model,
            ram,
            spaces: vec![Some(unpaged)],
            space: 0,
            clock: 0,
            mapping_budget: spaces::mapping_budget(),
            mappings_counted: spaces::host_mappings().unwrap_or(0),
            window_calls: 0,
            view: SUPERVISOR_VIEW,
            limited: 0,
            synced_segments: [None; 6],
            cache,
            stubs,
            mode_tags: Vec::new(),
            tag: 0,
            _empty_ibtc: empty_ibtc,
            shared_ibtc,
            watcher: FrameWatcher::new(frames, true),
            pending_table_writes: Vec::new(),
            pending_code_writes: Vec::new(),
            code_bytes: HashMap::default(),
            code_store_faults: HashMap::default(),
            rmap: HashMap::default(),
            adaptive: adaptive::Adaptive::new(true),
            monitor_tlb: frames::MonitorTlb::default(),
            last_watched: None,
            segment_loads: segments::SegmentLoads::default(),
            fault_insn: None,
            mmio: crate::devices::mmio::MmioBus::new(),
            lapic: None,
            return_stack: None,
            superblock_branches: translator::translate::DEFAULT_SUPERBLOCK_BRANCHES,
            followed_branches: translator::translate::DEFAULT_FOLLOWED_BRANCHES,
            fold_displacements: true,
            unfolded: folding::Unfolded::default(),
            pc_thunks: std::collections::HashMap::new(),
            chains: chains::ChainSites::default(),
            chain_tables: true,
            jump_tables: true,
            inline_caches: true,
            inline_leaves: true,
            site_predictions: site_predictions::SitePredictions::default(),
            pending_chain: None,
            faults,
            stats: BtStats::default(),
            count_indirect: false,
            hits_counter: Box::new(0),
            entries: counts::EntryCounts::default(),
            event_outcomes: Vec::new(),
            event_bails: HashMap::default(),
            last_user_selectors: None,
            tables_seen: None,
            log: None,
            perf_map: open_perf_map(),
            pending_io: None,
            string_io_done: false,
            stopped_registers: None,
            deliveries: 0,
            trap_after_io: false,
            pending_nmi: false,
            emulated: Vec::new(),
            deferred_stop: None,
            sys_dirty: false,
            key_before: ModeKey::default(),
        };
        // The mirrors (and the limited-segment mask in the mode) first, so
        // that the first mode gets tag 0 (no tag instructions in probes).
        core.sync_segments();
        core.key_before = core.mode_key();
        core.tag = core.tag_or_flush(core.key_before);
        Ok(core)
    }

    fn registers(&self) -> GuestRegisters {
        GuestRegisters {
            gpr: self.state.gpr,
            eip: self.state.eip,
            eflags: self.state.guest_eflags(),
        }
    }

    /// A stop with the registers as they are now (or as they were at the
    /// fault a failed delivery started from).
    fn stop(&mut self, reason: StopReason) -> GuestStop {
        let registers = self
            .stopped_registers
            .take()
            .unwrap_or_else(|| RegisterDump::new(self.registers(), &self.sys));
        GuestStop { reason, registers }
    }

    /// Copies what translated code reads of the segment registers (bases,
    /// selectors, allowed offsets) into the state block, for the registers
    /// that changed since the last copy.
    fn sync_segments(&mut self) {
        let tables = (self.sys.gdtr, self.sys.idtr, self.sys.tr, self.sys.ldtr);
        if self.tables_seen != Some(tables) {
            self.tables_seen = Some(tables);
            self.state.tables_gen = self.state.tables_gen.wrapping_add(1);
            self.segment_loads.forget_checks();
        }
        if self.sys.cpl == 3 {
            self.last_user_selectors = Some((
                self.sys.segment(Seg::Cs).selector.0,
                self.sys.segment(Seg::Ss).selector.0,
            ));
        }
        for seg in Seg::ALL {
            let s = seg as usize;
            let reg = self.sys.segment(seg);
            if self.synced_segments[s] == Some(reg) {
                continue;
            }
            self.synced_segments[s] = Some(reg);
            self.segment_loads.note_loaded(seg, reg);
            self.state.seg_base[s] = reg.base;
            self.state.seg_sel[s] = reg.selector.0;
            let ranges = reg.offset_ranges();
            self.state.seg_ranges[s] = ranges;
            if let Some(k) = translator::state::seg_iret_block_index(s) {
                self.state.seg_iret_blocks[k] = u8::from(reg.nulled_by_return_to(3));
            }
            if ranges != crate::cpu::SegmentRegister::UNRESTRICTED {
                self.limited |= 1 << s;
            } else {
                self.limited &= !(1 << s);
            }
        }
    }

    /// The translation mode of the current state.
    fn mode(&self) -> Mode {
        self.mode_of(&self.sys, self.limited)
    }

    /// The translation mode of system state `sys` whose limited segments
    /// are `limited`.
    fn mode_of(&self, sys: &SystemState, limited: u8) -> Mode {
        use crate::cpu::{Cr0, Cr4};
        Mode {
            flat: sys.flat(),
            cpl0: sys.cpl == 0,
            fpu_exits: sys.cr0.intersects(Cr0::TS | Cr0::EM),
            wait_exits: sys.cr0.contains(Cr0::TS | Cr0::MP),
            sse_exits: !sys.cr4.contains(Cr4::OSFXSR),
            rdtsc_exits: sys.cpl > 0 && sys.cr4.contains(Cr4::TSD),
            code16: !sys.code32(),
            stack16: !sys.stack32(),
            io_exits: self.io_breakpoints_enabled(),
            limited,
        }
    }

    /// Runs translated code once, up to its next exit, and handles it.
    fn step(&mut self) -> Event {
        // Between two runs of translated code nothing is half done: the
        // place to map pages ahead and to drop spaces if the mappings grew
        // past the budget.
        if self.watcher.has_present() {
            self.fill_ahead();
        }
        self.keep_mappings_in_budget();
        if self.debug_stepping() {
            return self.debug_step();
        }
        let eip = self.state.eip;
        // After an exit that left no branch to chain (an instruction the
        // monitor carried out, an I/O exit), the indirect-branch table
        // finds the translation of the current mode without a page walk
        // or a map lookup; it holds exactly what an indirect branch to
        // this EIP would run.
        if self.pending_chain.is_none() {
            if let Some(entry) = self.branch_table(self.tag).get(eip, self.tag) {
                self.run_translation(entry);
                return self.handle_exit();
            }
        }
        let id = match self.translation_for(eip, 0) {
            Ok(id) => id,
            Err(event) => return event,
        };
        if let Some((site, target, mode)) = self.pending_chain.take() {
            let key = self.cache.get(id).key;
            if key.eip == target && key.mode == mode {
                self.cache.chain(site, id);
            }
        }
        let entry = self.cache.exec_addr(self.cache.get(id).code_offset);
        self.ibtc_insert(eip, entry);
        self.run_translation(entry);
        self.handle_exit()
    }

    fn run_translation(&mut self, entry: u64) {
        self.state.exit_reason = 0;
        self.state.iret_blockers = self.iret_blockers();
        let sys = &self.sys;
        self.state.cr = [sys.cr0.bits(), 0, sys.cr2, sys.cr3, sys.cr4.bits()];
        // SAFETY: `entry` is the entry of a live translation of our cache,
        // emitted for this state block and window; the stubs belong to the
        // same cache.
        unsafe { runtime::enter(&self.stubs, &mut self.state, entry) };
        self.apply_inline_segment_loads();
        let flags = self.state.host_flags as u32;
        self.state.eflags = (self.state.eflags & !LIVE_FLAGS) | (flags & LIVE_FLAGS) | 2;
    }

    fn handle_exit(&mut self) -> Event {
        self.tick_adaptive_period();
        self.apply_inline_transition();
        if std::mem::take(&mut self.state.event_bail) != 0 {
            self.note_event_bail();
        }
        match ExitReason::from_raw(self.state.exit_reason) {
            Some(ExitReason::ChainMiss) => {
                self.stats.exits_chain_miss += 1;
                self.note_chain_site();
                Event::Continue
            }
            Some(ExitReason::ChainSlotMiss) => self.chain_slot_miss(),
            Some(ExitReason::IndirectMiss) if self.exit_requested() => {
                // The empty table of an exit request: EIP is the target,
                // whose translation (if any) was about to run.
                if let Some(entry) = self.branch_table(self.tag).get(self.state.eip, self.tag) {
                    self.sample_unit(entry);
                }
                self.serve_exit_request();
                Event::Interrupted
            }
            Some(ExitReason::IndirectMiss) => {
                self.stats.exits_indirect_miss += 1;
                if let Some(site) = translator::translate::site_of_miss(self.state.exit_site) {
                    self.learn_site_target(site);
                }
                let eip = self.state.eip;
                match self.translation_for(eip, 0) {
                    Ok(id) => {
                        let addr = self.cache.exec_addr(self.cache.get(id).code_offset);
                        self.ibtc_insert(eip, addr);
                        self.prefill_page_targets(id);
                        Event::Continue
                    }
                    Err(event) => event,
                }
            }
            Some(ExitReason::Emulate) => {
                self.stats.exits_emulate += 1;
                self.emulate()
            }
            Some(ExitReason::Raise) => {
                self.stats.exits_emulate += 1;
                let e = match self.state.raise_vector {
                    0 => Exception::DivideError,
                    12 => Exception::StackFault(0),
                    _ => Exception::GeneralProtection(0),
                };
                self.raise(Fault::Exception(e))
            }
            Some(ExitReason::Fault) => {
                self.stats.exits_fault += 1;
                self.fault()
            }
            Some(ExitReason::CodeChanged) => {
                self.retranslate_crossing_unit();
                Event::Continue
            }
            Some(ExitReason::SoftMiss) => self.soft_miss(),
            Some(ExitReason::Invlpg) => {
                // Counted as the instruction the monitor carries out.
                self.stats.exits_emulate += 1;
                self.stats
                    .emulated_by_form
                    .count(Some(iced_x86::Code::Invlpg_m));
                self.invalidate_page(self.state.soft_addr);
                Event::Continue
            }
            Some(ExitReason::Interrupted) => {
                self.sample_unit(self.state.fault.rip);
                self.stop_at(self.state.fault.rip);
                self.serve_exit_request();
                Event::Interrupted
            }
            Some(ExitReason::CallOverflow) => {
                self.stats.exits_call_overflow += 1;
                self.sample_unit(self.state.fault.rip);
                self.stop_before_call(self.state.fault.rip);
                if self.exit_requested() {
                    self.serve_exit_request();
                    Event::Interrupted
                } else {
                    // A deep recursion: the call runs again on an empty
                    // stack.
                    Event::Continue
                }
            }
            None => Event::Stop(StopReason::Internal(format!(
                "translated code exited with unknown reason {}",
                self.state.exit_reason
            ))),
        }
    }

    /// The unit at EIP found other bytes in the next page than it was
    /// translated from: it dies (with its indirect-branch entries) and the
    /// next step translates the bytes there now.
    fn retranslate_crossing_unit(&mut self) {
        self.stats.crossing_retranslations += 1;
        let eip = self.state.eip;
        let linear = self.sys.segment(Seg::Cs).base.wrapping_add(eip);
        let Ok(phys) = self.linear_to_phys(linear, false) else {
            return;
        };
        let mode = self.mode().bits();
        for mode in [mode, SINGLE_STEP_MODE | mode] {
            if let Some(id) = self.cache.lookup(&TransKey { phys, eip, mode }) {
                self.cache.invalidate(id);
                self.forget_dead_translation(id);
                self.pending_chain = None;
            }
        }
    }

    /// An exit request swapped the indirect-branch table.
    fn exit_requested(&self) -> bool {
        self.state.ibtc.load(std::sync::atomic::Ordering::SeqCst) != self.space().ibtc.addr()
    }

    /// Undoes an exit request's arming; whoever asked decides what happens
    /// next (the machine loop checks its flags after every exit).
    fn serve_exit_request(&mut self) {
        self.stats.exits_interrupted += 1;
        self.take_time_samples();
        self.end_adaptive_period_if_due();
        self.learn_sampled_sites();
        self.faults.clear_exit_request(
            (&self.state.ibtc, self.space().ibtc.addr()),
            (&self.state.ibtc_shared, self.shared_ibtc.addr()),
        );
    }

    /// Carries out the instruction at EIP in the monitor.
    fn emulate(&mut self) -> Event {
        let token = std::mem::replace(
            &mut self.state.emulate_token,
            translator::translate::NO_TOKEN,
        );
        let (decoded, owner) = self.emulated.get(token as usize).copied().unzip();
        self.stats.emulated_by_form.count(decoded.map(|i| i.code()));
        let outcome = exec::execute(self, decoded);
        self.settle_system_change();
        if let Some(i) = decoded.filter(segments::loads_data_segment) {
            self.retranslate_for_segment_loads(&i, owner);
        }
        if std::mem::take(&mut self.sys.interrupt_shadow) {
            // STI that set IF, MOV SS, POP SS: the next instruction runs
            // before any interrupt.
            self.state.shadow = 1;
            self.state.shadow_eip = self.state.eip;
        }
        match outcome {
            ExecOutcome::Done => Event::Continue,
            ExecOutcome::Io(io) => {
                self.stats.io_instructions += 1;
                self.pending_io = Some(io);
                Event::Io
            }
            ExecOutcome::Halt => self.halt(),
            ExecOutcome::Fault(fault) => self.raise(fault),
            ExecOutcome::Interrupt { event, return_eip } => self.deliver(event, return_eip),
        }
    }

    /// Whether the instruction at EIP is in an interrupt shadow (a stale
    /// shadow, left by an STI whose next instruction ran, is dropped).
    fn in_interrupt_shadow(&mut self) -> bool {
        if self.state.shadow != 0 && self.state.shadow_eip == self.state.eip {
            return true;
        }
        self.state.shadow = 0;
        false
    }

    /// Whether an external interrupt can be delivered now.
    fn interrupt_window_open(&mut self) -> bool {
        self.state.vif != 0 && self.pending_io.is_none() && !self.in_interrupt_shadow()
    }

    /// At an instruction boundary, before running on: a stop left by an
    /// injection, a pending NMI delivered, or the interrupt window the
    /// machine waits for. An instruction in an interrupt shadow runs alone
    /// first (NMIs wait for it too, as MOV SS blocks them).
    fn interrupt_event(&mut self) -> Option<Event> {
        if let Some(reason) = self.deferred_stop.take() {
            return Some(Event::Stop(reason));
        }
        let nmi = self.pending_nmi && !self.sys.nmi_blocked;
        let window = self.state.window_wanted != 0 && self.state.vif != 0;
        if !nmi && !window {
            return None;
        }
        if self.in_interrupt_shadow() {
            self.state.shadow = 0;
            return Some(if self.debug_stepping() {
                self.debug_step()
            } else {
                self.single_step()
            });
        }
        if nmi {
            self.pending_nmi = false;
            self.stats.nmis += 1;
            let eip = self.state.eip;
            return Some(self.deliver(crate::cpu::interrupt::Event::Nmi, eip));
        }
        Some(Event::InterruptWindow)
    }

    /// HLT: waits for an interrupt if IF is set, stops for good otherwise.
    fn halt(&mut self) -> Event {
        if self.state.vif != 0 {
            Event::Hlt
        } else {
            Event::Stop(StopReason::HaltedForever)
        }
    }

    /// What translated code and the window depend on, to see what a
    /// monitor-run instruction changed.
    fn mode_key(&self) -> ModeKey {
        self.mode_key_of(&self.sys, self.limited)
    }

    /// [`Self::mode_key`] of system state `sys` (as [`Self::mode_of`]).
    fn mode_key_of(&self, sys: &SystemState, limited: u8) -> ModeKey {
        ModeKey {
            mode: self.mode_of(sys, limited).bits(),
            code32: sys.code32(),
            paging: (
                sys.cr0.bits() & (1 << 31 | 1 << 16),
                sys.cr3,
                sys.cr4.bits() & 0xb0,
            ),
            cpl_user: sys.cpl == 3,
            cs_base: sys.segment(Seg::Cs).base,
            cr4_tsd: sys.cr4.contains(crate::cpu::Cr4::TSD),
        }
    }

    /// SYSENTER and SYSEXIT as translated code may carry them out in the
    /// current state: their targets' segments, modes, indirect-branch tags
    /// and views, worked out on a copy of the system state with the same
    /// functions the monitor uses to apply them afterwards.
    fn transitions(&mut self) -> Option<Transitions> {
        if !self.model.offers(crate::cpuid::SEP) || !self.sys.cr0.contains(crate::cpu::Cr0::PE) {
            return None;
        }
        let sysenter = self.transition_to(crate::cpu::system::sysenter::sysenter_system_state);
        let sysexit = self.transition_to(crate::cpu::system::sysenter::sysexit_system_state);
        let sysenter = sysenter.map(|to| InlineTransition {
            eip: self.sys.msr.sysenter_eip,
            esp: self.sys.msr.sysenter_esp,
            ..to
        });
        Some(Transitions { sysenter, sysexit })
    }

    /// The inline transition `apply` makes from the current state, if it
    /// can be made (EIP and ESP left for the caller).
    fn transition_to(&mut self, apply: fn(&mut SystemState) -> bool) -> Option<InlineTransition> {
        let mut sys = self.sys.clone();
        if !apply(&mut sys) {
            return None;
        }
        self.inline_transition_for(&sys)
    }

    /// Applies to the system state the privilege change translated code
    /// made itself (see `CpuState::transition`), before the exit is looked
    /// at: CPL, CS and SS as SYSENTER/SYSEXIT set them, and the mirrors,
    /// view and tag that follow (translated code already switched the
    /// mirrors and the window).
    fn apply_inline_transition(&mut self) {
        let applied = match std::mem::take(&mut self.state.transition) {
            0 => return,
            translator::state::TRANSITION_SYSENTER => {
                self.state.eflags &= !(Eflags::VM | Eflags::RF).bits();
                crate::cpu::system::sysenter::sysenter_system_state(&mut self.sys)
            }
            translator::state::TRANSITION_SYSEXIT => {
                crate::cpu::system::sysenter::sysexit_system_state(&mut self.sys)
            }
            record => self.apply_event_record(record),
        };
        debug_assert!(
            applied,
            "translated code made a transition the state forbids"
        );
        self.sync_segments();
        self.select_view();
        let key = self.mode_key();
        self.tag = self.tag_or_flush(key);
    }

    /// After the system model ran: acts on what it changed, if it changed
    /// anything (see [`Self::after_system_change`]).
    fn settle_system_change(&mut self) {
        if std::mem::take(&mut self.sys_dirty) {
            let before = self.key_before;
            self.after_system_change(before);
        }
    }

    /// Acts on what a monitor-run instruction changed: segment mirrors
    /// always, the indirect-branch table when the mode changed, the view
    /// when the privilege changed, every shadow mapping when the address
    /// space changed.
    fn after_system_change(&mut self, before: ModeKey) {
        let tables_before = self.state.tables_gen;
        self.sync_segments();
        let after = self.mode_key();
        let (pg_wp, cr3, cr4) = after.paging;
        let (pg_wp_before, cr3_before, cr4_before) = before.paging;
        const PGE: u32 = 0x80;
        if pg_wp != pg_wp_before || (cr4 ^ cr4_before) & !PGE != 0 {
            self.reset_address_space();
        } else {
            if cr3 != cr3_before && self.paging() {
                self.switch_address_space();
            } else if cr4 != cr4_before {
                self.guest_tlb_flush();
                // A PGE toggle flushes global TLB entries too: the shared
                // table's entries whose page no longer maps its frame as
                // a global page go.
                self.recheck_shared_pages(0, 1 << 20);
            }
            let tables_changed =
                self.state.tables_gen != tables_before && !self.event_outcomes.is_empty();
            if tables_changed || after.cr4_tsd != before.cr4_tsd {
                // Inline INT n, IRET, SYSENTER and SYSEXIT were worked out
                // under the old descriptor tables or for the old ring-3
                // mode (rare: LGDT, LIDT, LLDT, LTR, task switches, TSD).
                self.flush();
            }
            if after.cpl_user != before.cpl_user {
                // User and supervisor code see the address space through
                // their own views: a privilege change switches the window
                // register.
                self.select_view();
            }
        }
        self.tag = self.tag_or_flush(after);
    }

    /// The indirect-branch table tag of the mode `key` (a new one for a
    /// mode not seen since the last flush), if one is left.
    fn tag_of(&mut self, key: ModeKey) -> Option<u32> {
        // Translations are shared by every address space, so a tag names a
        // mode whatever the page directory (each space has its own table).
        let key = ModeKey {
            paging: (key.paging.0, 0, key.paging.2),
            ..key
        };
        if let Some(i) = self.mode_tags.iter().position(|k| *k == key) {
            return Some(i as u32);
        }
        if self.mode_tags.len() >= translator::ibtc::TAGS as usize {
            return None;
        }
        self.mode_tags.push(key);
        Some(self.mode_tags.len() as u32 - 1)
    }

    /// The tag of the mode `key`, flushing the translations first when
    /// every tag is taken (only where no translation is being made).
    fn tag_or_flush(&mut self, key: ModeKey) -> u32 {
        match self.tag_of(key) {
            Some(tag) => tag,
            None => {
                self.flush();
                self.tag_of(key).unwrap_or(0)
            }
        }
    }

    /// A guest exception at the current EIP, delivered through the IDT; a
    /// triple fault or something this CPU does not implement stops the
    /// guest with its registers.
    fn raise(&mut self, fault: Fault) -> Event {
        match fault {
            Fault::Exception(e) => {
                self.stats.exceptions += 1;
                if let Exception::PageFault { .. } = e {
                    self.stats.guest_page_faults += 1;
                }
                let eip = self.state.eip;
                self.deliver(crate::cpu::interrupt::Event::Exception(e), eip)
            }
            other => self.fault_stop(other, String::new(), Vec::new()),
        }
    }

    /// Delivers `event` through the IDT, pushing `return_eip`.
    fn deliver(&mut self, event: crate::cpu::interrupt::Event, return_eip: u32) -> Event {
        self.deliveries += 1;
        self.state.shadow = 0;
        let registers_at_fault = self.stop(StopReason::Internal(String::new())).registers;
        let mut chain = Vec::new();
        let result = crate::cpu::interrupt::deliver_recording(self, event, return_eip, &mut chain);
        self.settle_system_change();
        match result {
            Ok(()) => Event::Continue,
            Err(fault) => {
                let stop = self.fault_stop(fault, event.to_string(), chain);
                if let Event::Stop(reason) = stop {
                    self.stopped_registers = Some(registers_at_fault);
                    return Event::Stop(reason);
                }
                stop
            }
        }
    }

    /// The stop for a fault that cannot be delivered.
    fn fault_stop(&mut self, fault: Fault, first: String, chain: Vec<Exception>) -> Event {
        match fault {
            Fault::TripleFault => Event::Stop(StopReason::TripleFault { first, chain }),
            Fault::Unsupported(what) => Event::Stop(StopReason::Unsupported(format!(
                "the guest needs {what}, which this virtual CPU does not implement"
            ))),
            Fault::Exception(e) => Event::Stop(StopReason::Exception(e)),
        }
    }

    fn note_chain_site(&mut self) {
        let Some(rel32_offset) = self.cache.offset_of(self.state.exit_site) else {
            return;
        };
        let Some(src) = self.cache.find_by_offset(rel32_offset) else {
            return;
        };
        let t = self.cache.get(src);
        if t.dead || t.key.mode & SINGLE_STEP_MODE != 0 {
            return;
        }
        let rel = i32::from_le_bytes(
            self.cache
                .code(rel32_offset, 4)
                .try_into()
                .unwrap_or([0; 4]),
        );
        let stub_offset = (rel32_offset as i64 + 4 + i64::from(rel)) as usize;
        // A jump made after an inline privilege change leads into the
        // other mode's code.
        let mode = match std::mem::replace(&mut self.state.chain_mode, u32::MAX) {
            u32::MAX => t.key.mode,
            other => other,
        };
        self.pending_chain = Some((
            BranchSite {
                rel32_offset,
                stub_offset,
            },
            self.state.eip,
            mode,
        ));
    }

    /// The translation for `eip`, made if needed. `single` asks for a
    /// one-instruction unit that is not cached for lookup.
    fn translation_for(&mut self, eip: u32, single: usize) -> Result<TransId, Event> {
        let mode = self.mode();
        let cs = self.sys.segment(Seg::Cs);
        if eip > cs.limit {
            return Err(self.raise(Fault::Exception(Exception::GeneralProtection(0))));
        }
        let linear = cs.base.wrapping_add(eip);
        let phys = match self.code_to_phys(linear) {
            Ok(p) => p,
            Err(e) => return Err(self.raise(Fault::Exception(e))),
        };
        // One-instruction units check their own bytes (their frames are
        // not traced), so they are kept and found again like the others.
        let key = TransKey {
            phys,
            eip,
            mode: if single > 0 {
                SINGLE_STEP_MODE | mode.bits()
            } else {
                mode.bits()
            },
        };
        if let Some(id) = self.cache.lookup(&key) {
            return Ok(id);
        }
        if phys as usize >= self.ram.size() {
            return Err(Event::Stop(StopReason::OutsideRam(format!(
                "execution left guest RAM at EIP={eip:#010x} (physical {phys:#010x})"
            ))));
        }
        match self.translate_into_cache(key, mode, single) {
            Err(TranslateFailure::Full) => {
                self.flush();
                self.translate_into_cache(key, mode, single)
                    .map_err(|e| Event::Stop(StopReason::Internal(e.to_string())))
            }
            r => r.map_err(|e| Event::Stop(StopReason::Internal(e.to_string()))),
        }
    }

    fn flush(&mut self) {
        self.cache.flush();
        self.adaptive.forget_units();
        self.site_predictions.forget_units();
        self.entries.retire_all();
        self.event_outcomes.clear();
        self.event_bails.clear();
        self.emulated.clear();
        self.code_bytes.clear();
        for space in self.spaces.iter_mut().flatten() {
            space.clear_ibtc();
        }
        self.shared_ibtc.clear();
        self.chains.clear();
        for space in self.spaces.iter_mut().flatten() {
            space.chained = Default::default();
        }
        // No translation is left to carry an old tag.
        self.mode_tags.clear();
        let key = self.mode_key();
        self.tag = self.tag_of(key).unwrap_or(0);
        self.pending_chain = None;
    }

    /// The conditional branches a unit of `mode` goes on past: none in a
    /// paging kernel's code (most of which runs once or a few times, at
    /// boot and in short system-call paths, so that longer units only
    /// cost translation: docs/translator.md, "Superblocks").
    fn superblock_branches_for(&self, mode: Mode) -> u32 {
        if mode.cpl0 && self.paging() {
            0
        } else {
            self.superblock_branches
        }
    }

    /// The direct branches a unit of `mode` follows: none where it gets
    /// no superblocks either (a paging kernel's code), nor in a unit of
    /// `single` instructions or a self-checking one.
    fn followed_branches_for(&self, mode: Mode, single: usize, self_check: bool) -> u32 {
        if mode.cpl0 && self.paging() || single > 0 || self_check {
            0
        } else {
            self.followed_branches
        }
    }

    fn translate_into_cache(
        &mut self,
        key: TransKey,
        mode: Mode,
        single: usize,
    ) -> Result<TransId, TranslateFailure> {
        let eip = key.eip;
        let linear = self.sys.segment(Seg::Cs).base.wrapping_add(eip);
        let (bytes, next_frame) = self.code_bytes(linear, key.phys);
        let page_end = eip.wrapping_add(PAGE_SIZE - (linear & (PAGE_SIZE - 1)));
        let self_check = single > 0 || self.watcher.is_self_checking(key.phys >> 12);
        let followed_branches = self.followed_branches_for(mode, single, self_check);
        let code_before = if followed_branches > 0 {
            self.code_before(linear, key.phys)
        } else {
            Vec::new()
        };
        let offers = single == 0 && !mode.code16;
        let event = if offers {
            self.first_event(eip, &bytes)
        } else {
            None
        };
        // Translated without an inline #DE first; a unit that divides is
        // translated again with one when the state allows it.
        let mut divide_error = None;
        let code_offset = self.cache.aligned_next_offset();
        let host_base = self.cache.exec_addr(code_offset);
        let soft_access = if single == 0 {
            self.adaptive_eips(eip, linear, key.phys)
        } else {
            Vec::new()
        };
        let unfolded = self.unfolded.eips(eip, linear, key.phys);
        // Offered only to a unit that turned out to load a data segment
        // or to hold a VERW at a constant address.
        let mut segment_loads = Vec::new();
        let mut verw = Vec::new();
        let mut jump_predictions = Vec::new();
        let mut jump_tables = Vec::new();
        let (branch_predictions, learning_sites) = if self.inline_caches && single == 0 {
            self.site_predictions.for_unit(eip, linear, key.phys)
        } else {
            (Vec::new(), Vec::new())
        };
        let mut segments_offered = false;
        // Flat code only: a target's linear page is its EIP's page.
        let chain_slots_from = if self.chain_tables && single == 0 && mode.flat {
            self.chains.next()
        } else {
            None
        };
        let unit = loop {
            let req = UnitRequest {
                eip,
                code: &bytes,
                code_before: &code_before,
                followed_branches,
                page_end,
                mode,
                host_base,
                stubs: self.stubs,
                max_insns: if single > 0 {
                    single
                } else {
                    translator::translate::MAX_UNIT_INSNS
                },
                count_indirect: if self.count_indirect {
                    Some(&*self.hits_counter as *const u64 as u64)
                } else {
                    None
                },
                count_entries: self.count_indirect.then(|| self.entries.next_slot()),
                ibtc_tag: self.tag,
                transitions: if single == 0 {
                    self.transitions()
                } else {
                    None
                },
                // After `transitions`, which may give modes their tags.
                shared_ibtc_tags: self.shared_tags(),
                isa: self.isa,
                emulate_tokens_from: (single == 0).then_some(self.emulated.len() as u32),
                cpuid: Some(&self.cpuid_answers),
                ignored_ports: self.ignored_ports.as_ref(),
                event: event.as_ref(),
                divide_error: divide_error.as_ref(),
                split_events: single == 0,
                paged: self.paging().then(|| translator::translate::PagedCode {
                    cs_base: self.sys.segment(Seg::Cs).base,
                }),
                self_check,
                soft_access: &soft_access,
                return_stack: self.return_stack.is_some(),
                superblock_branches: self.superblock_branches_for(mode),
                // A one-instruction unit runs what wrapped (see `folding`).
                fold_displacements: single == 0 && self.fold_displacements,
                unfolded: &unfolded,
                pc_thunks: Some(&self.pc_thunks),
                chain_slots_from,
                segment_loads: &segment_loads,
                verw: &verw,
                jump_predictions: &jump_predictions,
                jump_tables: &jump_tables,
                branch_predictions: &branch_predictions,
                learning_sites: &learning_sites,
                inline_leaves: self.inline_leaves,
            };
            let unit = translator::translate(&req)
                .map_err(|e| TranslateFailure::Other(format!("at EIP={eip:#010x}: {e}")))?;
            if offers && divide_error.is_none() && unit.insns.iter().any(divides) {
                divide_error = self.divide_error_offer(eip);
                if divide_error.is_some() {
                    continue;
                }
            }
            if single == 0 && !segments_offered {
                // Every kind of offer at once: one translation more at most.
                segments_offered = true;
                if unit.insns.iter().any(segments::loads_data_segment) {
                    segment_loads = self.segment_load_offers(mode);
                }
                if unit.insns.iter().any(segments::verw_at_constant_address) {
                    verw = self.verw_offers(mode, &unit.insns);
                }
                jump_predictions = self.jump_predictions(&unit.insns);
                if chain_slots_from.is_some() {
                    jump_tables = self.jump_tables(&unit.insns);
                    for table in &mut jump_tables {
                        table.slots = self.chains.host_table(key.mode, &table.targets);
                    }
                }
                if !segment_loads.is_empty()
                    || !verw.is_empty()
                    || !jump_predictions.is_empty()
                    || !jump_tables.is_empty()
                {
                    continue;
                }
            }
            break unit;
        };
        if unit.code.len() > self.cache.free() {
            return Err(TranslateFailure::Full);
        }
        let mut frames = vec![key.phys >> 12];
        let crosses = (linear & (PAGE_SIZE - 1)) + unit.guest_len > PAGE_SIZE;
        if let (true, Some(f)) = (crosses, next_frame) {
            frames.push(f);
        }
        if let Some(map) = self.perf_map.as_mut() {
            // A profiling aid: a line that cannot be written is skipped.
            let _ = writeln!(
                map,
                "{host_base:x} {:x} guest_{:08x}_mode{:x}_off{code_offset:x}",
                unit.code.len(),
                key.eip,
                key.mode
            );
        }
        if let Some(log) = self.log.as_mut() {
            // A listing that cannot be written is not worth stopping for.
            let _ = writeln!(
                log,
                "{}",
                translator::listing::format_unit(&unit.insns, &unit.code, host_base)
            );
        }
        let mut t = Translation::empty();
        t.key = key;
        t.code_offset = code_offset;
        t.frames = frames.clone();
        t.pc_map = unit.pc_map;
        t.fixups = unit.fixups;
        t.stack_lags = unit.stack_lags;
        t.guest_insns = unit.insns.len() as u32;
        let id = self.cache.insert(t, &unit.code).map_err(|e| match e {
            CacheError::Full => TranslateFailure::Full,
            e => TranslateFailure::Other(e.to_string()),
        })?;
        self.register_chain_slots(&unit.chain_slots, host_base, key.mode);
        for &(jump, first) in &unit.jump_table_slots {
            if let Some(table) = jump_tables.iter().find(|t| t.eip == jump) {
                self.chains
                    .note_host_table(key.mode, table.targets.clone(), first);
            }
        }
        if self.pc_thunks.len() < MAX_PC_THUNKS {
            if let Some(thunk) = translator::PcThunk::of(&unit.insns, &bytes) {
                self.pc_thunks.insert(eip, thunk);
            }
        }
        let soft_insns = unit
            .soft_eips
            .iter()
            .map(|e| (*e, key.phys.wrapping_add(e.wrapping_sub(eip))))
            .collect();
        self.adaptive.note_soft_unit(id.0, soft_insns);
        let uncached = unit
            .uncached_sites
            .iter()
            .map(|e| key.phys.wrapping_add(e.wrapping_sub(eip)))
            .filter(|p| p / PAGE_SIZE == key.phys / PAGE_SIZE)
            .collect();
        self.site_predictions.note_unit(id, uncached);
        if self.count_indirect {
            self.entries.commit(unit.insns.len() as u32);
        }
        self.emulated.extend(unit.emulated.iter().map(|i| (*i, id)));
        self.inline_ports.extend(&unit.inline_ports);
        if single == 0 {
            let offset = linear & (PAGE_SIZE - 1);
            self.note_code_bytes(
                key.phys >> 12,
                offset - unit.guest_before,
                unit.guest_before + unit.guest_len,
            );
            if let Some(&next) = frames.get(1) {
                self.note_code_bytes(next, 0, (offset + unit.guest_len).saturating_sub(PAGE_SIZE));
            }
            for &(leaf, len) in &unit.leaf_ranges {
                // In the unit's page, before or after its first byte.
                let at = offset.wrapping_add(leaf.wrapping_sub(eip)) & (PAGE_SIZE - 1);
                self.note_code_bytes(key.phys >> 12, at, len);
            }
            for f in frames {
                self.trace_code_frame(f);
            }
        }
        Ok(id)
    }

    /// Guest code bytes of the linear page of `eip` (at `phys`) before it,
    /// as far as RAM holds them.
    fn code_before(&mut self, eip: u32, phys: u32) -> Vec<u8> {
        let before = eip & (PAGE_SIZE - 1);
        let start = phys - before;
        let avail = self
            .ram
            .size()
            .saturating_sub(start as usize)
            .min(before as usize);
        let mut bytes = vec![0u8; avail];
        if avail < before as usize || self.ram.read(GuestPhys(start), &mut bytes).is_err() {
            return Vec::new();
        }
        bytes
    }

    /// Guest code bytes from linear address `eip` (at `phys`) to the end of
    /// its page plus up to 15 bytes of the next page, and the next page's
    /// frame if mapped.
    fn code_bytes(&mut self, eip: u32, phys: u32) -> (Vec<u8>, Option<u32>) {
        let in_page = (PAGE_SIZE - (eip & (PAGE_SIZE - 1))) as usize;
        let avail = self.ram.size().saturating_sub(phys as usize).min(in_page);
        let mut bytes = vec![0u8; avail];
        // The range was clamped to RAM above.
        let _ = self.ram.read(GuestPhys(phys), &mut bytes);
        let next_lin = eip.wrapping_add(in_page as u32);
        let next = if avail < in_page || next_lin == 0 {
            None
        } else {
            self.linear_to_phys(next_lin, false).ok()
        };
        if let Some(np) = next {
            let tail = self.ram.size().saturating_sub(np as usize).min(15);
            let mut more = vec![0u8; tail];
            if self.ram.read(GuestPhys(np), &mut more).is_ok() {
                bytes.extend_from_slice(&more);
            }
        }
        (bytes, next.map(|p| p >> 12))
    }

    /// Makes the guest state the one at the start of the instruction at
    /// host address `rip` in a live translation (its first instruction if
    /// `rip` is at its entry): EIP, and ESP when a run of pushes and pops
    /// left it pending there (see `translator::translate::Unit::stack_lags`).
    fn stop_at(&mut self, rip: u64) {
        if let Some(lag) = self.stop_at_instruction(rip) {
            self.apply_stack_lag(lag);
        }
    }

    /// Sets EIP to the guest instruction whose code holds host address
    /// `rip` and returns that instruction's stack lag; nothing when `rip`
    /// is in no translation.
    fn stop_at_instruction(&mut self, rip: u64) -> Option<i32> {
        let off = self.cache.offset_of(rip)?;
        let t = self.cache.get(self.cache.find_by_offset(off)?);
        let idx = t.insn_index((off - t.code_offset) as u32);
        self.state.eip = t.pc_map.get(idx).map_or(t.key.eip, |p| p.1);
        Some(t.stack_lag(idx))
    }

    /// The guest state before the predicted call whose host `call` at
    /// `rip` ran off the return-prediction stack (`ExitReason::
    /// CallOverflow`): EIP is the call's, and ESP gets back the four
    /// bytes of the return address the call pushed (the call folds any
    /// stack lag before it, so R8 held the guest ESP after the push; the
    /// pushed bytes stay below ESP, where the call writes them again).
    fn stop_before_call(&mut self, rip: u64) {
        if self.stop_at_instruction(rip).is_none() {
            return;
        }
        let ss = self.sys.segment(Seg::Ss);
        let esp = &mut self.state.gpr[crate::cpu::context::ESP];
        *esp = if ss.big() {
            esp.wrapping_add(4)
        } else {
            (*esp & !0xffff) | (esp.wrapping_add(4) & 0xffff)
        };
    }

    /// Guest ESP is R8 plus `lag` (see [`Self::stop_at`]).
    fn apply_stack_lag(&mut self, lag: i32) {
        let esp = &mut self.state.gpr[crate::cpu::context::ESP];
        *esp = esp.wrapping_add(lag as u32);
    }

    /// Runs the instruction at EIP alone (after its write target became
    /// writable), then resumes normal translation. Hidden faults and
    /// writes to further code frames on the way are resolved and the
    /// instruction continued (a `rep` string instruction across many pages
    /// takes one such fault per page and makes progress each time). One
    /// access may fault a few times in a row (a code write, then the
    /// refill of the page it unmapped, then its dirty bit); more than
    /// that at the same address with the same registers is a livelock and
    /// stops.
    fn single_step(&mut self) -> Event {
        let event = self.single_step_alone();
        // Page tables and code frames the instruction was let to write are
        // compared and protected again whatever became of it.
        self.settle_table_writes();
        self.settle_code_writes();
        event
    }

    /// [`Self::single_step`] but for the page tables it opened.
    fn single_step_alone(&mut self) -> Event {
        const SAME_FAULT_LIMIT: u32 = 4;
        let mut last: Option<(u64, [u32; 8])> = None;
        let mut repeats = 0;
        loop {
            let id = match self.translation_for(self.state.eip, 1) {
                Ok(id) => id,
                Err(event) => return event,
            };
            let entry = self.cache.exec_addr(self.cache.get(id).code_offset);
            self.run_translation(entry);
            if ExitReason::from_raw(self.state.exit_reason) != Some(ExitReason::Fault) {
                return self.handle_exit();
            }
            self.stats.exits_fault += 1;
            let this = (self.state.fault.addr, self.state.gpr);
            repeats = if last == Some(this) { repeats + 1 } else { 0 };
            if repeats >= SAME_FAULT_LIMIT {
                return Event::Stop(StopReason::Internal(format!(
                    "an instruction kept faulting at host address {:#x} while running alone",
                    this.0
                )));
            }
            last = Some(this);
            match self.fault_outcome() {
                faults::FaultOutcome::Hidden
                | faults::FaultOutcome::CodeWrite
                | faults::FaultOutcome::RunAlone => continue,
                faults::FaultOutcome::Guest(fault) => return self.raise(fault),
                faults::FaultOutcome::Stop(reason) => return Event::Stop(reason),
                faults::FaultOutcome::Redo => return self.redo_in_monitor(),
                faults::FaultOutcome::RedoDivideError => return self.redo_divide_error(),
                faults::FaultOutcome::Device(phys) => return self.device_access(phys),
            }
        }
    }
}

impl IoAccess for BtCore {
    fn registers(&self) -> GuestRegisters {
        BtCore::registers(self)
    }

    fn set_general_registers(&mut self, gpr: [u32; 8]) {
        self.state.gpr = gpr;
    }

    fn cpl(&self) -> u8 {
        self.sys.cpl
    }

    fn memory(&mut self) -> &mut dyn backdoor::GuestMemory {
        self
    }

    fn complete_string_io(&mut self) {
        self.string_io_done = true;
    }
}

/// The segments whose accesses translated code checks in state `sys` (see
/// `Mode::limited`).
fn limited_segments(sys: &SystemState) -> u8 {
    Seg::ALL
        .into_iter()
        .filter(|&seg| sys.segment(seg).restricts_access())
        .fold(0, |mask, seg| mask | 1 << seg as u8)
}

/// The view code of state `sys` runs in: the user view for CPL 3 with
/// paging on, the supervisor view otherwise.
fn view_of(sys: &SystemState) -> usize {
    if sys.paging() && sys.cpl == 3 {
        USER_VIEW
    } else {
        SUPERVISOR_VIEW
    }
}

/// The perf map file (`/tmp/perf-PID.map`, the format perf reads for
/// JIT code) when the environment variable `NESTMON_PERF_MAP` is set.
fn open_perf_map() -> Option<std::fs::File> {
    std::env::var_os("NESTMON_PERF_MAP")?;
    let path = format!("/tmp/perf-{}.map", std::process::id());
    match std::fs::File::create(&path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("nestmon: NESTMON_PERF_MAP: cannot create {path}: {e}");
            None
        }
    }
}

/// What monitor-run instructions may change that translated code or the
/// window depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct ModeKey {
    /// The translation mode's bits.
    mode: u32,
    code32: bool,
    /// CR0.PG|WP, CR3, CR4.PSE|PAE|PGE.
    paging: (u32, u32, u32),
    /// User rights: the window's mappings were made for CPL 3 or not.
    cpl_user: bool,
    /// The indirect-branch table maps EIPs, which name other code under
    /// another CS base.
    cs_base: u32,
    /// CR4.TSD: it changes the mode of ring-3 code only, which inline
    /// IRET and SYSEXIT in ring-0 translations embed.
    cr4_tsd: bool,
}

#[derive(Debug)]
enum TranslateFailure {
    Full,
    Other(String),
}

impl std::fmt::Display for TranslateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslateFailure::Full => write!(f, "code cache full"),
            TranslateFailure::Other(s) => write!(f, "cannot translate guest code {s}"),
        }
    }
}

/// EFLAGS of the guest as the system model sees them.
fn eflags_of(state: &CpuState) -> Eflags {
    Eflags::from_raw(state.guest_eflags())
}

/// Whether `i` is a DIV or IDIV (a unit with one may deliver #DE inline).
fn divides(i: &iced_x86::Instruction) -> bool {
    matches!(
        i.mnemonic(),
        iced_x86::Mnemonic::Div | iced_x86::Mnemonic::Idiv
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lahf_and_sahf_are_required_of_the_host_and_found_on_this_one() {
        let reports = |max_extended: u32, ecx: u32| {
            move |leaf: u32, _| match leaf {
                0x8000_0000 => [max_extended, 0, 0, 0],
                0x8000_0001 => [0, 0, ecx, 0],
                _ => [0; 4],
            }
        };
        assert!(host_has_lahf_sahf(reports(0x8000_0008, 0x121)));
        assert!(!host_has_lahf_sahf(reports(0x8000_0008, 0x120)));
        assert!(
            !host_has_lahf_sahf(reports(0x8000_0000, 0x1)),
            "no leaf 0x80000001"
        );
        assert!(host_has_lahf_sahf(crate::probe::host_cpuid));
    }

    #[test]
    fn emulated_forms_are_counted_per_form_and_listed_with_the_executors_own() {
        let mut forms = EmulatedForms::default();
        assert_eq!(forms.counted().count(), 0);
        forms.count(Some(iced_x86::Code::Invlpg_m));
        forms.count(Some(iced_x86::Code::Invlpg_m));
        forms.count(None);
        forms.count(Some(iced_x86::Code::Hlt));
        let listed: std::collections::HashMap<_, _> = forms.counted().collect();
        let want = std::collections::HashMap::from([
            (None, 1),
            (Some(iced_x86::Code::Invlpg_m), 2),
            (Some(iced_x86::Code::Hlt), 1),
        ]);
        assert_eq!(listed, want);
    }
}
