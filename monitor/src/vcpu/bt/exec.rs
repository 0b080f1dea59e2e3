//! The instructions the monitor carries out for translated code: the
//! binary-translation backend as the shared executor's
//! [`Executor`](crate::cpu::exec::Executor) (`crate::cpu::exec` decodes
//! the instruction at CS:EIP and carries it out on the system model), and
//! the completion of the port I/O it leaves to the machine.
//!
//! Invariant: an instruction either completes (registers, memory and EIP
//! updated) or raises its fault with the state of its start, except where
//! the SDM itself leaves partial results (string I/O between elements).
//! Every write to guest memory goes through `BtCore::write_phys` (the
//! frame watcher), and every change of the translation-relevant state
//! through `sys_mut`, so the run loop sees what an instruction changed.

use super::BtCore;
use crate::cpu::exec::{self as shared, Executor, ModelFeature};
use crate::cpu::msr;
use crate::cpu::system::{self, FpuKind};
use crate::cpu::{Cr4, Exception, Fault};
use iced_x86::Instruction;
use translator::Availability;

pub(super) use shared::{ExecOutcome, PendingIo};

/// Carries out the instruction at CS:EIP; `decoded` is the instruction
/// there as the translator decoded it, if the exit handed it over.
pub(super) fn execute(core: &mut BtCore, decoded: Option<Instruction>) -> ExecOutcome {
    shared::execute(core, decoded)
}

/// Decodes the instruction at CS:EIP (its fetch can fault).
pub(super) fn fetch(core: &mut BtCore) -> Result<Instruction, Fault> {
    shared::fetch(core)
}

impl Executor for BtCore {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.model.query(leaf, subleaf)
    }

    fn offers(&self, feature: ModelFeature) -> bool {
        self.model.offers(match feature {
            ModelFeature::Sep => crate::cpuid::SEP,
            ModelFeature::Msr => crate::cpuid::MSR,
        })
    }

    fn cr4_writable(&self) -> Cr4 {
        self.model.cr4_bits()
    }

    fn undefined(&self, i: &Instruction) -> bool {
        self.isa.availability(i) == Availability::Undefined
    }

    fn fpu_kind(&self, i: &Instruction) -> Option<FpuKind> {
        crate::vcpu::fpu_kind(i)
    }

    fn port_exempt(&self, port: u16) -> bool {
        self.unprivileged_ports.contains(&port)
    }

    fn after_invlpg(&mut self, lin: u32) {
        self.invalidate_page(lin);
    }

    fn after_paging_change(&mut self) {
        self.address_space_changed();
    }

    fn read_msr(&mut self, index: u32) -> Result<u64, Exception> {
        system::rdmsr(self, index)
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), Exception> {
        if let (msr::APIC_BASE, Some(lapic)) = (index, &self.lapic) {
            // The APIC refuses what it cannot take before the MSR changes.
            lapic
                .set_apic_base(value)
                .map_err(|_| Exception::GeneralProtection(0))?;
        }
        system::wrmsr(self, index, value)?;
        if (msr::SYSENTER_CS..=msr::SYSENTER_EIP).contains(&index) {
            // Translations carry out SYSENTER/SYSEXIT with these values.
            self.flush();
        }
        Ok(())
    }

    fn fx_image(&mut self) -> Result<[u8; 512], Fault> {
        Ok(*self.state.fx())
    }

    fn fx_image_mut(&mut self) -> Result<&mut [u8; 512], Fault> {
        Ok(self.state.fx_mut())
    }
}

impl BtCore {
    /// Completes the I/O access the machine handled (`data` holds an IN's
    /// value) and either finishes the instruction or sets up the next
    /// element of a REP string instruction.
    pub(super) fn resume_io(&mut self, mut io: PendingIo, data: &[u8; 4]) -> super::Event {
        let handler_done = io.is_string() && std::mem::take(&mut self.string_io_done);
        match shared::complete_io(self, &mut io, data, handler_done) {
            Ok(false) => {
                let single_step = std::mem::take(&mut self.trap_after_io);
                let hits = self.io_breakpoints_hit(io.port, io.size);
                if single_step || hits != 0 {
                    self.debug_trap(single_step, hits)
                } else {
                    super::Event::Continue
                }
            }
            Ok(true) => {
                self.pending_io = Some(io);
                super::Event::Io
            }
            Err(e) => self.raise(e.into()),
        }
    }
}
