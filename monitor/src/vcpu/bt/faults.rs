//! Host faults in translated code: mapped back to the guest instruction,
//! then classified as a hidden fault (fill the shadow mapping), a write to a
//! frame holding translated code (self-modifying code), or the guest's own
//! exception.
//!
//! Invariant: translated code only touches the window, the state block and
//! the monitor's stack, so a host #GP, #UD, #DE, #MF, #XM or #AC in it is
//! the guest instruction failing the same way; only a host page fault
//! (vector 14) is looked up in the window.

use super::{BtCore, Event};
use crate::cpu::{Cr4, Exception, Fault};
use crate::vcpu::StopReason;
use shadowmmu::PAGE_SIZE;
use translator::state::HostFault;

/// What a host fault in translated code turned out to be.
pub(super) enum FaultOutcome {
    /// A shadow mapping was missing and has been filled; retry.
    Hidden,
    /// A write to a frame holding translated code; run the writer alone.
    CodeWrite,
    /// Run the instruction alone: a folded address wrapped around 4 GiB
    /// (see [`super::folding`]), or a guest fault in an instruction whose
    /// inline form may fault where the CPU would not
    /// (`fixup::RUN_ALONE_ON_GUEST_FAULT`).
    RunAlone,
    /// The guest instruction raises this.
    Guest(Fault),
    /// The guest cannot continue.
    Stop(StopReason),
    /// A fault inside an inline INT n or IRET: nothing of it took effect;
    /// the monitor carries the instruction out.
    Redo,
    /// A fault inside an inline #DE delivery: the monitor delivers it.
    RedoDivideError,
    /// An access to device memory at this physical address: the monitor
    /// carries the instruction out against the device.
    Device(u32),
}

/// The host exception behind a signal in translated code.
#[derive(Debug, PartialEq, Eq)]
enum HostException {
    /// A page fault in the window.
    PageFault,
    /// The guest's own exception.
    Guest(Exception),
    /// A SIMD floating-point exception (#XM or #UD, by guest CR4).
    SimdFloatingPoint,
    /// Nothing translated code should raise.
    Unknown,
}

/// Classifies a host fault by the hardware vector the kernel recorded.
fn host_exception(f: &HostFault) -> HostException {
    match (f.signo as i32, f.trapno) {
        (libc::SIGSEGV | libc::SIGBUS, 14) => HostException::PageFault,
        (libc::SIGSEGV | libc::SIGBUS, 12 | 13) => {
            HostException::Guest(Exception::GeneralProtection(0))
        }
        (libc::SIGBUS, 17) => HostException::Guest(Exception::AlignmentCheck),
        (libc::SIGFPE, 0) => HostException::Guest(Exception::DivideError),
        (libc::SIGFPE, 16) => HostException::Guest(Exception::FloatingPoint),
        (libc::SIGFPE, 19) => HostException::SimdFloatingPoint,
        (libc::SIGILL, _) => HostException::Guest(Exception::InvalidOpcode),
        _ => HostException::Unknown,
    }
}

impl BtCore {
    /// Handles a `Fault` exit.
    pub(super) fn fault(&mut self) -> Event {
        let outcome = self.fault_outcome();
        if let Some(phys) = self.fault_insn.take() {
            if Self::counts_as_memory_fault(&outcome) {
                self.note_memory_fault(phys);
            }
        }
        match outcome {
            FaultOutcome::Hidden => Event::Continue,
            FaultOutcome::CodeWrite | FaultOutcome::RunAlone => self.single_step(),
            FaultOutcome::Guest(fault) => self.raise(fault),
            FaultOutcome::Stop(reason) => Event::Stop(reason),
            FaultOutcome::Redo => self.redo_in_monitor(),
            FaultOutcome::RedoDivideError => self.redo_divide_error(),
            FaultOutcome::Device(phys) => self.device_access(phys),
        }
    }

    /// Carries out in the monitor an instruction that touches device
    /// memory at `phys` (its registers are those at its start): the data
    /// moves operating systems use on device registers
    /// (`crate::cpu::instr::data`); any other instruction there stops the
    /// guest, named.
    pub(super) fn device_access(&mut self, phys: u32) -> Event {
        let insn = match super::exec::fetch(self) {
            Ok(insn) => insn,
            Err(fault) => return self.raise(fault),
        };
        if !crate::cpu::instr::data::handles(&insn) {
            return Event::Stop(StopReason::OutsideRam(format!(
                "guest instruction `{insn}` at {:#010x} accesses device memory at physical \
                 {phys:#010x}; nestmon carries out only MOV, MOVZX, MOVSX and XCHG there",
                self.state.eip
            )));
        }
        self.state.emulate_token = translator::translate::NO_TOKEN;
        self.emulate()
    }

    /// Delivers in the monitor a #DE whose inline delivery faulted, then
    /// maps the pages the inline form touches.
    pub(super) fn redo_divide_error(&mut self) -> Event {
        self.stats.inline_event_redos += 1;
        let old_esp = self.state.gpr[crate::cpu::context::ESP];
        let event = self.raise(Exception::DivideError.into());
        self.prefault_event_pages(old_esp);
        event
    }

    /// Carries out in the monitor an INT n or IRET whose inline form
    /// faulted, then maps the pages that form touches so that the next one
    /// completes inline.
    pub(super) fn redo_in_monitor(&mut self) -> Event {
        self.stats.inline_event_redos += 1;
        let old_esp = self.state.gpr[crate::cpu::context::ESP];
        self.state.emulate_token = translator::translate::NO_TOKEN;
        let event = self.emulate();
        self.prefault_event_pages(old_esp);
        event
    }

    /// Maps a host fault back to the guest instruction (restoring precise
    /// registers) and classifies it.
    pub(super) fn fault_outcome(&mut self) -> FaultOutcome {
        let f = self.state.fault;
        let Some(off) = self.cache.offset_of(f.rip) else {
            return FaultOutcome::Stop(StopReason::Internal(
                "host fault outside translated code".into(),
            ));
        };
        let Some(id) = self.cache.find_by_offset(off) else {
            return FaultOutcome::Stop(StopReason::Internal(
                "host fault in the runtime stubs".into(),
            ));
        };
        let t = self.cache.get(id);
        let rel = (off - t.code_offset) as u32;
        let idx = t.insn_index(rel);
        self.state.eip = t.pc_map.get(idx).map_or(t.key.eip, |p| p.1);
        let lag = t.stack_lag(idx);
        self.fault_insn = self.faulting_instruction(id, rel, idx, f.addr);
        let mut fix = t.fixups.get(idx).copied().unwrap_or(0);
        let run_alone_on_guest_fault =
            fix == translator::translate::fixup::RUN_ALONE_ON_GUEST_FAULT;
        if run_alone_on_guest_fault {
            fix = translator::translate::fixup::NONE;
        }
        match fix {
            translator::translate::fixup::REDO_IN_MONITOR => return FaultOutcome::Redo,
            translator::translate::fixup::DIVIDE_ERROR_IN_MONITOR => {
                return FaultOutcome::RedoDivideError
            }
            _ => {}
        }
        let alone = t.key.mode & super::SINGLE_STEP_MODE != 0;
        let insn = t
            .key
            .phys
            .wrapping_add(self.state.eip.wrapping_sub(t.key.eip));
        self.apply_fixup(fix);
        self.apply_stack_lag(lag);
        match host_exception(&f) {
            HostException::PageFault
                if !alone && super::folding::wrapped_access(self.window().base().0, f.addr) =>
            {
                self.unfold(insn);
                FaultOutcome::RunAlone
            }
            HostException::PageFault if run_alone_on_guest_fault && !alone => {
                match self.resolve_memory_fault(f.addr, f.err & 2 != 0) {
                    FaultOutcome::Guest(_) => FaultOutcome::RunAlone,
                    other => other,
                }
            }
            HostException::PageFault => self.resolve_memory_fault(f.addr, f.err & 2 != 0),
            HostException::Guest(e) => FaultOutcome::Guest(e.into()),
            HostException::SimdFloatingPoint => {
                // #XM needs CR4.OSXMMEXCPT; without it the CPU raises #UD.
                let e = if self.sys.cr4.contains(Cr4::OSXMMEXCPT) {
                    Exception::SimdFloatingPoint
                } else {
                    Exception::InvalidOpcode
                };
                FaultOutcome::Guest(e.into())
            }
            HostException::Unknown => FaultOutcome::Stop(StopReason::Internal(format!(
                "unexpected host signal {} (vector {}) in translated code",
                f.signo, f.trapno
            ))),
        }
    }

    /// The guest-physical address of the instruction whose own access
    /// faulted at host address `addr`, in translation `id` at offset `rel`
    /// (its pc-map entry `idx`), to count towards making it adaptive: a
    /// unit's instructions all start in its first page. `None` for a
    /// one-instruction unit (how adaptive instructions fall back) and for
    /// the unit's checks of its own code bytes (a self-checking unit's, an
    /// instruction into the next page's), which read the unit's code pages
    /// before or after its instructions.
    fn faulting_instruction(
        &self,
        id: codecache::TransId,
        rel: u32,
        idx: usize,
        addr: u64,
    ) -> Option<u32> {
        let t = self.cache.get(id);
        if t.key.mode & super::SINGLE_STEP_MODE != 0 || t.pc_map.get(idx).is_none_or(|p| rel < p.0)
        {
            return None;
        }
        let code_page = self
            .sys
            .segment(crate::cpu::Seg::Cs)
            .base
            .wrapping_add(t.key.eip)
            >> 12;
        let data_page = self.window().linear_of(addr as usize).map(|l| l.0 >> 12);
        if data_page.is_some_and(|p| p.wrapping_sub(code_page) <= 1) {
            return None;
        }
        Some(
            t.key
                .phys
                .wrapping_add(self.state.eip.wrapping_sub(t.key.eip)),
        )
    }

    /// Undoes what translated code had done to guest registers inside the
    /// faulting instruction (see `translator::translate::fixup`).
    fn apply_fixup(&mut self, fix: u8) {
        use translator::translate::fixup;
        if let Some(r) = fixup::swapped(fix) {
            let v = self.state.gpr[r];
            self.state.gpr[r] = (v & 0xffff_0000) | ((v & 0xff) << 8) | ((v >> 8) & 0xff);
        }
        if fix & fixup::SI_REBASED != 0 {
            let base = self.state.seg_base[fixup::si_segment(fix)];
            self.state.gpr[6] = self.state.gpr[6].wrapping_sub(base);
        }
        if fix & fixup::DI_REBASED != 0 {
            let base = self.state.seg_base[0];
            self.state.gpr[7] = self.state.gpr[7].wrapping_sub(base);
        }
    }

    /// Classifies a host page fault in the window: a hidden fault (the
    /// shadow mapping was filled), a write to translated code or to an
    /// in-sync page table, a guest exception, or an access outside guest
    /// RAM.
    fn resolve_memory_fault(&mut self, host_addr: u64, write: bool) -> FaultOutcome {
        let Some(lin) = self.window().linear_of(host_addr as usize) else {
            // An access that straddles the top of the 4 GiB linear space
            // reached the guard after the window. With a 4 GiB segment
            // limit the SDM leaves it implementation-specific whether such
            // an access wraps or faults (vol. 3, 5.3); this CPU faults.
            return FaultOutcome::Guest(Exception::GeneralProtection(0).into());
        };
        if !self.paging() {
            return self.unpaged_fault(lin.0, write);
        }
        let walked = match self.walk_for_fault(lin.0, write) {
            Ok(t) => t,
            Err(pf) => return FaultOutcome::Guest(super::frames::page_fault(pf).into()),
        };
        let phys = walked.phys.0;
        if phys as usize >= self.ram.size() {
            return self.outside_ram(lin.0, phys, write);
        }
        let frame = phys / PAGE_SIZE;
        let (spares, killed) = self.code_store(frame, lin.0, write);
        let table = write && self.watcher.is_synced_table(frame);
        if table && !spares && !killed && self.watcher.unsync_before_write(frame) {
            // The table went out of sync (or lazy): the store runs as it is.
            self.map_walked(self.view, lin.page(), &walked);
            return FaultOutcome::Hidden;
        }
        if spares || table {
            self.map_walked(self.view, lin.page(), &walked);
            if table {
                self.open_table_for_one_write(frame, lin.page());
            }
            if spares {
                self.open_code_for_one_write(frame, lin.page());
            }
            return FaultOutcome::CodeWrite;
        }
        if killed {
            return FaultOutcome::CodeWrite;
        }
        self.map_walked(self.view, lin.page(), &walked);
        self.stats.hidden_faults += 1;
        FaultOutcome::Hidden
    }

    /// A store to `frame` at `lin` (if `write`): whether it spares the
    /// frame's translations, or killed them.
    fn code_store(&mut self, frame: u32, lin: u32, write: bool) -> (bool, bool) {
        if !write || !self.watcher.is_code(frame) {
            return (false, false);
        }
        self.stats.smc_writes += 1;
        match self.classify_code_store(frame, lin) {
            super::smc::CodeStore::Spares => (true, false),
            super::smc::CodeStore::Kills => {
                self.untrace_code_frame(frame);
                (false, true)
            }
        }
    }

    /// A host fault in the identity window (paging off): a write to
    /// translated code, or an access beyond guest RAM.
    fn unpaged_fault(&mut self, phys: u32, write: bool) -> FaultOutcome {
        let frame = phys / PAGE_SIZE;
        match self.code_store(frame, phys, write) {
            (true, _) => {
                self.open_code_for_one_write(frame, frame);
                FaultOutcome::CodeWrite
            }
            (_, true) => FaultOutcome::CodeWrite,
            _ => self.outside_ram(phys, phys, write),
        }
    }

    fn outside_ram(&self, lin: u32, phys: u32, write: bool) -> FaultOutcome {
        if self.mmio.claims(u64::from(phys)) {
            return FaultOutcome::Device(phys);
        }
        FaultOutcome::Stop(StopReason::OutsideRam(format!(
            "guest {} at {} (physical {phys:#010x}) is outside guest RAM ({} MiB)",
            if write { "write" } else { "read" },
            shadowmmu::GuestLinear(lin),
            self.ram.size() >> 20
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(signo: i32, trapno: u64) -> HostFault {
        HostFault {
            signo: signo as u64,
            trapno,
            ..HostFault::default()
        }
    }

    #[test]
    fn host_general_protection_is_the_guests_gp0() {
        assert_eq!(
            host_exception(&fault(libc::SIGSEGV, 13)),
            HostException::Guest(Exception::GeneralProtection(0))
        );
    }

    #[test]
    fn host_page_fault_is_looked_up_in_the_window() {
        assert_eq!(
            host_exception(&fault(libc::SIGSEGV, 14)),
            HostException::PageFault
        );
    }

    #[test]
    fn floating_point_signals_are_classified_by_vector() {
        assert_eq!(
            host_exception(&fault(libc::SIGFPE, 0)),
            HostException::Guest(Exception::DivideError)
        );
        assert_eq!(
            host_exception(&fault(libc::SIGFPE, 16)),
            HostException::Guest(Exception::FloatingPoint)
        );
        assert_eq!(
            host_exception(&fault(libc::SIGFPE, 19)),
            HostException::SimdFloatingPoint
        );
        assert_eq!(
            host_exception(&fault(libc::SIGILL, 6)),
            HostException::Guest(Exception::InvalidOpcode)
        );
    }
}
