//! The binary-translation vCPU: the run loop over the code cache, exits,
//! write tracing of code frames, and fault reports.
//!
//! Invariants:
//! - Every guest frame that holds live translated code is mapped read-only
//!   in the linear window (`code_frames`); a guest write to it faults, the
//!   frame's translations die, the frame becomes writable again and the
//!   writing instruction runs alone in a one-instruction unit, so no stale
//!   translation ever runs after its guest bytes changed.
//! - The monitor's own writes into guest RAM go through
//!   [`BtVcpu::write_phys`], which applies the same invalidation.
//! - The indirect-branch table only holds entries of live translations: it
//!   is emptied whenever a translation dies or the cache is flushed.

use crate::emulate::{self, Emulated};
use crate::sysregs::SysRegs;
use codecache::{BranchSite, CacheError, CodeCache, TransId, TransKey, Translation};
use shadowmmu::{
    walk, Access, GuestLinear, GuestPhys, GuestRam, LinearWindow, PageFault, PageProt, PagingMode,
    PAGE_SIZE,
};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use translator::ibtc::Ibtc;
use translator::runtime::{self, FaultRegistration};
use translator::state::{ExitReason, LIVE_FLAGS};
use translator::{CpuState, GuestIsa, Mode, Stubs, UnitRequest};

/// Bytes of executable memory for translations.
pub const CODE_CACHE_SIZE: usize = 64 << 20;
/// Mode bits of one-instruction units that are never looked up or chained.
const SINGLE_STEP_MODE: u32 = 0x8000_0000;

/// Counters printed by `--stats`.
#[derive(Clone, Debug, Default)]
pub struct VcpuStats {
    /// Exits to the run loop because a direct branch was not chained yet.
    pub exits_chain_miss: u64,
    /// Exits because an indirect branch target was not in the table.
    pub exits_indirect_miss: u64,
    /// Exits to carry out an instruction in the monitor.
    pub exits_emulate: u64,
    /// Exits because of a host fault.
    pub exits_fault: u64,
    /// Port I/O instructions carried out.
    pub io_instructions: u64,
    /// Guest writes to frames holding translated code.
    pub smc_writes: u64,
    /// Indirect branches resolved in emitted code (counted with --stats).
    pub indirect_hits: u64,
    /// Host faults resolved by filling a shadow mapping (paging on).
    pub hidden_faults: u64,
    /// Exits because an exit was requested (poll page armed).
    pub exits_interrupted: u64,
}

/// How a run ended.
#[derive(Debug)]
pub enum Stop {
    /// The guest asked for this process exit status (isa-debug-exit).
    Exit(i32),
    /// The guest cannot continue; the text explains why, with registers.
    Died(String),
    /// The platform asked the vCPU to stop (a host signal); the guest is
    /// stopped at an instruction boundary and the text holds its registers.
    Requested {
        /// The signal number that asked for the stop.
        signal: i32,
        /// The guest registers at the stop.
        registers: String,
    },
}

/// What the vCPU needs from the rest of the machine while running.
pub trait Platform {
    /// Port input of `size` bytes.
    fn io_in(&mut self, cpu: &mut IoCpu<'_>, port: u16, size: u8) -> u32;
    /// Port output; `Some(status)` ends the run.
    fn io_out(&mut self, cpu: &mut IoCpu<'_>, port: u16, size: u8, value: u32) -> Option<i32>;
    /// A whole `rep insb`/`rep outsb` on `port` (the VMware high-bandwidth
    /// backdoor); returns false when the port is ordinary, so the monitor
    /// moves the bytes one port access at a time.
    fn string_io(
        &mut self,
        cpu: &mut IoCpu<'_>,
        port: u16,
        input: bool,
        mem: &mut dyn backdoor::GuestMemory,
    ) -> bool;
    /// CPUID.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Whether the vCPU must stop at the next instruction boundary, and the
    /// host signal that asked for it. Whoever sets the request also arms
    /// the code cache's poll page ([`translator::runtime::request_exit_all`])
    /// so that translated code reaches a boundary promptly.
    fn stop_requested(&mut self) -> Option<i32> {
        None
    }
}

/// The vCPU as seen by a port-I/O handler (e.g. the VMware backdoor, which
/// reads and writes all registers).
pub struct IoCpu<'a> {
    /// Guest registers (EAX..EDI in encoding order).
    pub gpr: &'a mut [u32; 8],
    /// Current privilege level.
    pub cpl: u8,
}

/// A vCPU that runs its guest by binary translation.
pub struct BtVcpu {
    /// Registers and the state block shared with translated code.
    pub state: Box<CpuState>,
    /// Control registers, descriptor tables, segment caches.
    pub sys: SysRegs,
    pub(crate) ram: GuestRam,
    window: LinearWindow,
    cache: CodeCache,
    stubs: Stubs,
    ibtc: Ibtc,
    code_frames: HashSet<u32>,
    /// With paging on: guest frame -> linear pages mapped to it in the window.
    rmap: HashMap<u32, Vec<u32>>,
    pending_chain: Option<BranchSite>,
    faults: FaultRegistration,
    isa: GuestIsa,
    /// Counters.
    pub stats: VcpuStats,
    count_indirect: bool,
    hits_counter: Box<u64>,
    log: Option<Box<dyn Write>>,
}

/// Why a vCPU could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// Host resources.
    #[error("{0}")]
    Host(String),
}

impl BtVcpu {
    /// A vCPU over `ram`, in the Multiboot entry state (flat protected mode,
    /// paging off), for a CPU offering the extensions in `isa`.
    pub fn new(ram: GuestRam, isa: GuestIsa) -> Result<BtVcpu, VcpuError> {
        let host = |e: &dyn std::fmt::Display| VcpuError::Host(e.to_string());
        let window = LinearWindow::new().map_err(|e| host(&e))?;
        let size = ram.size() as u64;
        window
            .map(
                GuestLinear(0),
                ram.fd(),
                GuestPhys(0),
                size,
                PageProt::ReadWrite,
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
        };
        let start = cache.exec_addr(0);
        let faults =
            runtime::register_cache(start, start + CODE_CACHE_SIZE as u64, stubs.exit_saved)
                .ok_or_else(|| VcpuError::Host("too many code caches in one process".into()))?;
        let ibtc = Ibtc::default();
        let mut state = Box::<CpuState>::default();
        state.window = window.base().0 as u64;
        state.ibtc = ibtc.addr();
        Ok(BtVcpu {
            state,
            sys: SysRegs::multiboot_entry(),
            ram,
            window,
            cache,
            stubs,
            ibtc,
            code_frames: HashSet::new(),
            rmap: HashMap::new(),
            pending_chain: None,
            faults,
            isa,
            stats: VcpuStats::default(),
            count_indirect: false,
            hits_counter: Box::new(0),
            log: None,
        })
    }

    /// The instruction-set extensions of the guest CPU.
    pub fn isa(&self) -> &GuestIsa {
        &self.isa
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    /// Writes every translation (guest and host code) to `out`.
    pub fn set_translation_log(&mut self, out: Box<dyn Write>) {
        self.log = Some(out);
    }

    /// Counts indirect-branch hits in emitted code (slightly slower).
    pub fn set_count_indirect(&mut self, on: bool) {
        self.count_indirect = on;
    }

    /// The code cache (for statistics).
    pub fn cache(&self) -> &CodeCache {
        &self.cache
    }

    /// Current translation mode.
    fn mode(&self) -> Mode {
        let b = &self.state.seg_base;
        Mode {
            flat: b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0,
        }
    }

    /// Runs the guest until it stops.
    pub fn run(&mut self, platform: &mut dyn Platform) -> Stop {
        loop {
            if let Some(signal) = platform.stop_requested() {
                self.stats.indirect_hits = *self.hits_counter;
                return Stop::Requested {
                    signal,
                    registers: self.register_dump(),
                };
            }
            if let Some(stop) = self.step(platform) {
                self.stats.indirect_hits = *self.hits_counter;
                return stop;
            }
        }
    }

    /// Runs translated code once, up to its next exit, and handles the
    /// exit; `Some` when the guest stopped.
    pub fn step(&mut self, platform: &mut dyn Platform) -> Option<Stop> {
        let eip = self.state.eip;
        let id = match self.translation_for(eip, 0) {
            Ok(id) => id,
            Err(stop) => return Some(stop),
        };
        if let Some(site) = self.pending_chain.take() {
            self.cache.chain(site, id);
        }
        let entry = self.cache.exec_addr(self.cache.get(id).code_offset);
        self.run_translation(entry);
        self.handle_exit(platform)
    }

    fn run_translation(&mut self, entry: u64) {
        self.state.exit_reason = 0;
        // SAFETY: `entry` is the entry of a live translation of our cache,
        // emitted for this state block and window; the stubs belong to the
        // same cache.
        unsafe { runtime::enter(&self.stubs, &mut self.state, entry) };
        let flags = self.state.host_flags as u32;
        self.state.eflags = (self.state.eflags & !LIVE_FLAGS) | (flags & LIVE_FLAGS) | 2;
    }

    fn handle_exit(&mut self, platform: &mut dyn Platform) -> Option<Stop> {
        match ExitReason::from_raw(self.state.exit_reason) {
            Some(ExitReason::ChainMiss) => {
                self.stats.exits_chain_miss += 1;
                self.note_chain_site();
                None
            }
            Some(ExitReason::IndirectMiss) => {
                self.stats.exits_indirect_miss += 1;
                self.ibtc.misses += 1;
                let eip = self.state.eip;
                match self.translation_for(eip, 0) {
                    Ok(id) => {
                        let addr = self.cache.exec_addr(self.cache.get(id).code_offset);
                        self.ibtc.insert(eip, addr);
                        None
                    }
                    Err(stop) => Some(stop),
                }
            }
            Some(ExitReason::Emulate) => {
                self.stats.exits_emulate += 1;
                self.emulate(platform)
            }
            Some(ExitReason::Fault) => {
                self.stats.exits_fault += 1;
                self.fault()
            }
            Some(ExitReason::Interrupted) => {
                self.stats.exits_interrupted += 1;
                // Served: the run loop checks what was requested before it
                // enters translated code again.
                self.faults.clear_exit_request();
                self.state.eip = self.guest_eip_at(self.state.fault.rip);
                None
            }
            _ => Some(Stop::Died(format!(
                "translated code exited with unknown reason {}",
                self.state.exit_reason
            ))),
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
        self.pending_chain = Some(BranchSite {
            rel32_offset,
            stub_offset,
        });
    }

    /// The translation for `eip`, made if needed. `single` asks for a
    /// one-instruction unit that is not cached for lookup.
    fn translation_for(&mut self, eip: u32, single: usize) -> Result<TransId, Stop> {
        let mode = self.mode();
        let phys = match self.linear_to_phys(eip, false) {
            Ok(p) => p,
            Err(pf) => return Err(self.page_fault(pf)),
        };
        let key = TransKey {
            phys,
            eip,
            mode: if single > 0 {
                SINGLE_STEP_MODE
            } else {
                mode.bits()
            },
        };
        if single == 0 {
            if let Some(id) = self.cache.lookup(&key) {
                return Ok(id);
            }
        }
        if phys as usize >= self.ram.size() {
            return Err(self.died(&format!(
                "execution left guest RAM at EIP={eip:#010x} (physical {phys:#010x})"
            )));
        }
        match self.translate_into_cache(key, mode, single) {
            Err(TranslateFailure::Full) => {
                self.flush();
                self.translate_into_cache(key, mode, single)
                    .map_err(|e| self.died(&e.to_string()))
            }
            r => r.map_err(|e| self.died(&e.to_string())),
        }
    }

    fn flush(&mut self) {
        self.cache.flush();
        self.ibtc.clear();
        self.pending_chain = None;
    }

    fn translate_into_cache(
        &mut self,
        key: TransKey,
        mode: Mode,
        single: usize,
    ) -> Result<TransId, TranslateFailure> {
        let eip = key.eip;
        let (bytes, next_frame) = self.code_bytes(eip, key.phys);
        let code_offset = self.cache.aligned_next_offset();
        let host_base = self.cache.exec_addr(code_offset);
        let req = UnitRequest {
            eip,
            code: &bytes,
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
            isa: self.isa,
        };
        let unit = translator::translate(&req)
            .map_err(|e| TranslateFailure::Other(format!("at EIP={eip:#010x}: {e}")))?;
        if unit.code.len() > self.cache.free() {
            return Err(TranslateFailure::Full);
        }
        let mut frames = vec![key.phys >> 12];
        let crosses = (eip & (PAGE_SIZE - 1)) + unit.guest_len > PAGE_SIZE;
        if let (true, Some(f)) = (crosses, next_frame) {
            frames.push(f);
        }
        if let Some(log) = self.log.as_mut() {
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
        t.guest_insns = unit.insns.len() as u32;
        let id = self.cache.insert(t, &unit.code).map_err(|e| match e {
            CacheError::Full => TranslateFailure::Full,
            e => TranslateFailure::Other(e.to_string()),
        })?;
        if single == 0 {
            for f in frames {
                self.trace_code_frame(f);
            }
        }
        Ok(id)
    }

    /// Guest code bytes from `eip` (at `phys`) to the end of its page plus up
    /// to 15 bytes of the next page, and the next page's frame if mapped.
    fn code_bytes(&mut self, eip: u32, phys: u32) -> (Vec<u8>, Option<u32>) {
        let in_page = (PAGE_SIZE - (eip & (PAGE_SIZE - 1))) as usize;
        let avail = self.ram.size().saturating_sub(phys as usize).min(in_page);
        let mut bytes = vec![0u8; avail];
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

    /// Whether guest paging is on.
    pub fn paging(&self) -> bool {
        self.sys.cr0 & crate::sysregs::CR0_PG != 0
    }

    fn paging_mode(&self) -> PagingMode {
        PagingMode {
            cr3: self.sys.cr3,
            pse: self.sys.cr4 & 0x10 != 0,
            wp: self.sys.cr0 & (1 << 16) != 0,
        }
    }

    /// Translates a guest linear address as the guest's MMU would, setting
    /// accessed/dirty bits; identity when paging is off.
    pub fn linear_to_phys(&mut self, lin: u32, write: bool) -> Result<u32, PageFault> {
        if !self.paging() {
            return Ok(lin);
        }
        let acc = Access {
            write,
            user: self.sys.cpl == 3,
        };
        walk(&self.ram, self.paging_mode(), GuestLinear(lin), acc).map(|t| t.phys.0)
    }

    /// Drops every shadow mapping and translation after the guest changed
    /// its address space (CR0.PG, CR3, CR4, INVLPG): the window is refilled
    /// lazily from the guest page tables on hidden faults.
    pub fn reset_address_space(&mut self) {
        self.flush();
        self.code_frames.clear();
        self.rmap.clear();
        let _ = self.window.unmap(GuestLinear(0), 1 << 32);
        if !self.paging() {
            let size = self.ram.size() as u64;
            let _ = self.window.map(
                GuestLinear(0),
                self.ram.fd(),
                GuestPhys(0),
                size,
                PageProt::ReadWrite,
            );
        }
    }

    fn page_fault(&mut self, pf: PageFault) -> Stop {
        self.sys.cr2 = pf.addr.0;
        let mut stop = self.exception(14);
        if let Stop::Died(text) = &mut stop {
            text.push_str(&format!(
                "
page fault at {} with error code {:#x}",
                pf.addr, pf.error_code
            ));
        }
        stop
    }

    fn trace_code_frame(&mut self, frame: u32) {
        if (frame as usize) >= self.ram.size() / PAGE_SIZE as usize
            || !self.code_frames.insert(frame)
        {
            return;
        }
        if self.paging() {
            for lp in self.rmap.get(&frame).cloned().unwrap_or_default() {
                let _ = self.window.protect(
                    GuestLinear(lp * PAGE_SIZE),
                    u64::from(PAGE_SIZE),
                    PageProt::Read,
                );
            }
        } else {
            let _ = self.window.protect(
                GuestLinear(frame * PAGE_SIZE),
                u64::from(PAGE_SIZE),
                PageProt::Read,
            );
        }
    }

    /// Kills the translations of `frame` and makes it writable again.
    fn untrace_code_frame(&mut self, frame: u32) {
        if self.code_frames.remove(&frame) {
            self.cache.invalidate_frame(frame);
            self.ibtc.clear();
            self.pending_chain = None;
            if self.paging() {
                // Unmapped aliases refault and are mapped again with the
                // rights their page-table entries give.
                for lp in self.rmap.remove(&frame).unwrap_or_default() {
                    let _ = self
                        .window
                        .unmap(GuestLinear(lp * PAGE_SIZE), u64::from(PAGE_SIZE));
                }
            } else {
                let _ = self.window.protect(
                    GuestLinear(frame * PAGE_SIZE),
                    u64::from(PAGE_SIZE),
                    PageProt::ReadWrite,
                );
            }
        }
    }

    /// Writes guest-physical memory on behalf of the monitor or a device,
    /// invalidating translated code it overwrites.
    pub fn write_phys(&mut self, addr: GuestPhys, data: &[u8]) -> Result<(), shadowmmu::RamError> {
        if !data.is_empty() {
            let first = addr.frame();
            let last = (addr.0 as u64 + data.len() as u64 - 1) / u64::from(PAGE_SIZE);
            for f in first..=last.min(u64::from(u32::MAX)) as u32 {
                self.untrace_code_frame(f);
            }
        }
        self.ram.write(addr, data)
    }

    fn fault(&mut self) -> Option<Stop> {
        match self.fault_outcome() {
            FaultOutcome::Hidden => None,
            FaultOutcome::CodeWrite => self.single_step(),
            FaultOutcome::Stop(stop) => Some(stop),
        }
    }

    /// The guest EIP of the instruction at host address `rip` in a live
    /// translation (the translation's first EIP if `rip` is at its entry).
    fn guest_eip_at(&self, rip: u64) -> u32 {
        let Some(off) = self.cache.offset_of(rip) else {
            return self.state.eip;
        };
        let Some(id) = self.cache.find_by_offset(off) else {
            return self.state.eip;
        };
        let t = self.cache.get(id);
        let rel = (off - t.code_offset) as u32;
        let idx = t
            .pc_map
            .partition_point(|(h, _)| *h <= rel)
            .saturating_sub(1);
        t.pc_map.get(idx).map_or(t.key.eip, |p| p.1)
    }

    /// Maps a host fault back to the guest instruction and classifies it.
    fn fault_outcome(&mut self) -> FaultOutcome {
        let f = self.state.fault;
        let Some(off) = self.cache.offset_of(f.rip) else {
            return FaultOutcome::Stop(self.died("host fault outside translated code"));
        };
        let Some(id) = self.cache.find_by_offset(off) else {
            return FaultOutcome::Stop(self.died("host fault in the runtime stubs"));
        };
        let t = self.cache.get(id);
        let rel = (off - t.code_offset) as u32;
        let idx = t
            .pc_map
            .partition_point(|(h, _)| *h <= rel)
            .saturating_sub(1);
        self.state.eip = t.pc_map.get(idx).map_or(t.key.eip, |p| p.1);
        let fix = t.fixups.get(idx).copied().unwrap_or(0);
        if fix >= translator::translate::fixup::SWAP_BASE {
            let r = usize::from(fix - translator::translate::fixup::SWAP_BASE);
            let v = self.state.gpr[r];
            self.state.gpr[r] = (v & 0xffff_0000) | ((v & 0xff) << 8) | ((v >> 8) & 0xff);
        }
        match host_exception(&f) {
            HostException::PageFault => self.resolve_memory_fault(f.addr, f.err & 2 != 0),
            HostException::Guest(vector) => FaultOutcome::Stop(self.exception(vector)),
            HostException::SimdFloatingPoint => {
                // #XM needs CR4.OSXMMEXCPT; without it the CPU raises #UD.
                let vector = if self.sys.cr4 & CR4_OSXMMEXCPT != 0 {
                    19
                } else {
                    6
                };
                FaultOutcome::Stop(self.exception(vector))
            }
            HostException::Unknown => {
                FaultOutcome::Stop(self.died("unexpected host signal in translated code"))
            }
        }
    }

    /// Classifies a host fault in the window: a hidden fault (the shadow
    /// mapping was filled), a write to translated code, or a guest stop.
    fn resolve_memory_fault(&mut self, host_addr: u64, write: bool) -> FaultOutcome {
        let Some(lin) = self.window.linear_of(host_addr as usize) else {
            // An access that straddles the top of the 4 GiB linear space
            // reached the guard after the window. With a 4 GiB segment
            // limit the SDM leaves it implementation-specific whether such
            // an access wraps or faults (vol. 3, 5.3); this CPU faults.
            return FaultOutcome::Stop(self.exception(13));
        };
        let phys = match self.linear_to_phys(lin.0, write) {
            Ok(p) => p,
            Err(pf) => return FaultOutcome::Stop(self.page_fault(pf)),
        };
        let frame = phys / PAGE_SIZE;
        if write && self.code_frames.contains(&frame) {
            self.stats.smc_writes += 1;
            self.untrace_code_frame(frame);
            return FaultOutcome::CodeWrite;
        }
        if phys as usize >= self.ram.size() || !self.paging() {
            return FaultOutcome::Stop(self.died(&format!(
                "guest {} at {} (physical {phys:#010x}) is outside guest RAM ({} MiB)",
                if write { "write" } else { "read" },
                lin,
                self.ram.size() >> 20
            )));
        }
        self.fill_shadow(lin.page(), frame, write);
        self.stats.hidden_faults += 1;
        FaultOutcome::Hidden
    }

    /// Maps linear page `lpage` to guest frame `frame`: writable only when
    /// the walk found it writable and dirty and it holds no translated code.
    fn fill_shadow(&mut self, lpage: u32, frame: u32, write: bool) {
        let mode = self.paging_mode();
        let acc = Access {
            write,
            user: self.sys.cpl == 3,
        };
        let rw = walk(&self.ram, mode, GuestLinear(lpage * PAGE_SIZE), acc)
            .is_ok_and(|t| t.writable_and_dirty);
        let prot = if rw && !self.code_frames.contains(&frame) {
            PageProt::ReadWrite
        } else {
            PageProt::Read
        };
        let _ = self.window.map(
            GuestLinear(lpage * PAGE_SIZE),
            self.ram.fd(),
            GuestPhys(frame * PAGE_SIZE),
            u64::from(PAGE_SIZE),
            prot,
        );
        let aliases = self.rmap.entry(frame).or_default();
        if !aliases.contains(&lpage) {
            aliases.push(lpage);
        }
    }

    /// Runs the instruction at EIP alone (after its write target became
    /// writable), then resumes normal translation. Hidden faults on the way
    /// are filled and the instruction retried.
    fn single_step(&mut self) -> Option<Stop> {
        for _ in 0..8 {
            let id = match self.translation_for(self.state.eip, 1) {
                Ok(id) => id,
                Err(stop) => return Some(stop),
            };
            let entry = self.cache.exec_addr(self.cache.get(id).code_offset);
            self.run_translation(entry);
            if ExitReason::from_raw(self.state.exit_reason) != Some(ExitReason::Fault) {
                return None;
            }
            self.stats.exits_fault += 1;
            match self.fault_outcome() {
                FaultOutcome::Hidden | FaultOutcome::CodeWrite => continue,
                FaultOutcome::Stop(stop) => return Some(stop),
            }
        }
        Some(self.died("an instruction kept faulting while running alone"))
    }

    fn emulate(&mut self, platform: &mut dyn Platform) -> Option<Stop> {
        match emulate::emulate(self, platform) {
            Emulated::Continue => None,
            Emulated::ModeChanged => {
                self.ibtc.clear();
                None
            }
            Emulated::AddressSpaceChanged => {
                self.reset_address_space();
                None
            }
            Emulated::PageFault(pf) => Some(self.page_fault(pf)),
            Emulated::Exit(status) => Some(Stop::Exit(status)),
            Emulated::Exception(vector) => Some(self.exception(vector)),
            Emulated::Died(why) => Some(self.died(&why)),
        }
    }

    /// Stops the guest on an exception (no IDT delivery yet).
    fn exception(&self, vector: u8) -> Stop {
        let name = match vector {
            0 => "#DE (divide error)",
            1 => "#DB (debug)",
            3 => "#BP (breakpoint)",
            4 => "#OF (overflow)",
            5 => "#BR (bound range exceeded)",
            6 => "#UD (invalid opcode)",
            7 => "#NM (device not available)",
            13 => "#GP (general protection)",
            14 => "#PF (page fault)",
            16 => "#MF (x87 floating-point error)",
            17 => "#AC (alignment check)",
            19 => "#XM (SIMD floating-point error)",
            _ => "exception",
        };
        Stop::Died(format!(
            "guest exception {name} (vector {vector}) at EIP={:#010x}; exception delivery through the IDT is not supported yet\n{}",
            self.state.eip,
            self.register_dump()
        ))
    }

    fn died(&self, why: &str) -> Stop {
        Stop::Died(format!("{why}\n{}", self.register_dump()))
    }

    /// The guest registers, formatted for reports.
    pub fn register_dump(&self) -> String {
        let g = &self.state.gpr;
        let s = &self.state;
        format!(
            "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}\nESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}\nEIP={:08x} EFLAGS={:08x} CS={:04x} DS={:04x} ES={:04x} SS={:04x} FS={:04x} GS={:04x}\nCR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x}",
            g[0], g[3], g[1], g[2], g[6], g[7], g[5], g[4], s.eip, s.guest_eflags(),
            s.seg_sel[1], s.seg_sel[3], s.seg_sel[0], s.seg_sel[2], s.seg_sel[4], s.seg_sel[5],
            self.sys.cr0, self.sys.cr2, self.sys.cr3, self.sys.cr4
        )
    }
}

/// CR4.OSXMMEXCPT: the OS handles #XM.
const CR4_OSXMMEXCPT: u32 = 1 << 10;

/// The host exception behind a signal in translated code.
#[derive(Debug, PartialEq, Eq)]
enum HostException {
    /// A page fault in the window (hidden fault, code write, or guest #PF).
    PageFault,
    /// An exception that is the guest's own, with its guest vector.
    Guest(u8),
    /// A SIMD floating-point exception (#XM or #UD, by guest CR4).
    SimdFloatingPoint,
    /// Nothing translated code should raise.
    Unknown,
}

/// Classifies a host fault by the hardware vector the kernel recorded.
/// Translated code only touches the window, the state block and the
/// monitor's stack, so a host #GP, #UD, #DE, #MF or #AC in it is the
/// guest's own instruction failing the same way (a misaligned MOVAPS,
/// reserved MXCSR bits in LDMXCSR, a division by zero, an unmasked x87
/// exception, an opcode the host lacks).
fn host_exception(f: &translator::state::HostFault) -> HostException {
    match (f.signo as i32, f.trapno) {
        (libc::SIGSEGV | libc::SIGBUS, 14) => HostException::PageFault,
        (libc::SIGSEGV | libc::SIGBUS, 12 | 13) => HostException::Guest(13),
        (libc::SIGBUS, 17) => HostException::Guest(17),
        (libc::SIGFPE, 0) => HostException::Guest(0),
        (libc::SIGFPE, 16) => HostException::Guest(16),
        (libc::SIGFPE, 19) => HostException::SimdFloatingPoint,
        (libc::SIGILL, _) => HostException::Guest(6),
        _ => HostException::Unknown,
    }
}

/// What a host fault in the window turned out to be.
enum FaultOutcome {
    /// A shadow mapping was missing and has been filled; retry.
    Hidden,
    /// A write to a frame holding translated code; run the writer alone.
    CodeWrite,
    /// The guest stops.
    Stop(Stop),
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
