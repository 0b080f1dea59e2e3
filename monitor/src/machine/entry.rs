//! The vCPU state a loaded kernel is entered with: the registers its boot
//! protocol gives, and for Linux the system state the 32-bit boot protocol
//! asks for.
//!
//! Invariants: a Multiboot kernel starts from the vCPU's reset state (flat
//! 32-bit protected mode, CS 0x08, data 0x10, paging and interrupts off);
//! a Linux kernel starts with GDTR at the GDT the loader wrote and every
//! segment cache loaded from the descriptor its selector names there, so
//! that the caches and guest memory agree.

use crate::cpu::{Descriptor, Seg, SegmentRegister, Selector, SystemState, TableRegister};
use crate::loader::{BootState, LinuxEntry, LoadedGuest};
use crate::vcpu::bt::BtVcpu;
use crate::vcpu::kvm::{KvmError, KvmVcpu};
use crate::vcpu::GuestRegisters;

/// EFLAGS at entry: only the reserved bit 1 (IF and everything else clear).
const ENTRY_EFLAGS: u32 = 2;

/// A vCPU backend whose registers and system state a boot protocol sets
/// (each starts in the Multiboot entry state).
pub(super) trait EntryState {
    /// Why the state cannot be set.
    type Error;
    /// Sets the general registers, EIP and EFLAGS.
    fn set_entry_registers(&mut self, regs: &GuestRegisters) -> Result<(), Self::Error>;
    /// Replaces the system state.
    fn set_entry_system_state(&mut self, sys: SystemState) -> Result<(), Self::Error>;
}

impl EntryState for BtVcpu {
    type Error = std::convert::Infallible;

    fn set_entry_registers(&mut self, regs: &GuestRegisters) -> Result<(), Self::Error> {
        self.set_registers(regs);
        Ok(())
    }

    fn set_entry_system_state(&mut self, sys: SystemState) -> Result<(), Self::Error> {
        self.set_system_state(sys);
        Ok(())
    }
}

impl EntryState for KvmVcpu {
    type Error = KvmError;

    fn set_entry_registers(&mut self, regs: &GuestRegisters) -> Result<(), KvmError> {
        self.set_registers(regs)
    }

    fn set_entry_system_state(&mut self, sys: SystemState) -> Result<(), KvmError> {
        self.set_system_state(&sys)
    }
}

/// Puts `vcpu` in the state its kernel is entered with.
pub(super) fn enter<V: EntryState>(vcpu: &mut V, loaded: &LoadedGuest) -> Result<(), V::Error> {
    match loaded {
        LoadedGuest::Multiboot(kernel) => {
            vcpu.set_entry_registers(&multiboot_registers(&kernel.boot))
        }
        LoadedGuest::Linux(linux) => {
            vcpu.set_entry_system_state(linux_system_state(&linux.entry))?;
            vcpu.set_entry_registers(&linux_registers(&linux.entry))
        }
    }
}

/// The registers the Multiboot specification gives at entry (the segments
/// are the vCPU's reset state: flat, CS 0x08, data 0x10).
fn multiboot_registers(boot: &BootState) -> GuestRegisters {
    let mut gpr = [0; 8];
    gpr[0] = boot.eax;
    gpr[3] = boot.ebx;
    GuestRegisters {
        gpr,
        eip: boot.eip,
        eflags: ENTRY_EFLAGS,
    }
}

/// The registers of the 32-bit boot protocol: ESI at `boot_params`, EBP,
/// EDI and EBX zero (the others too), interrupts off.
fn linux_registers(entry: &LinuxEntry) -> GuestRegisters {
    let mut gpr = [0; 8];
    gpr[4] = entry.esp;
    gpr[6] = entry.esi;
    GuestRegisters {
        gpr,
        eip: entry.eip,
        eflags: ENTRY_EFLAGS,
    }
}

/// The system state of the 32-bit boot protocol: protected mode, paging
/// off, CPL 0, GDTR at the loader's GDT, CS = `__BOOT_CS`, and DS, ES, SS
/// (and FS, GS, as boot.rst recommends for the 16-bit entry) =
/// `__BOOT_DS`, each cache loaded from its descriptor.
pub(super) fn linux_system_state(entry: &LinuxEntry) -> SystemState {
    let mut sys = SystemState::multiboot_entry();
    sys.gdtr = TableRegister {
        base: entry.gdt_base,
        limit: entry.gdt_limit,
    };
    let code = SegmentRegister::loaded(
        Selector(entry.code_selector),
        Descriptor(entry.code_descriptor),
    );
    let data = SegmentRegister::loaded(
        Selector(entry.data_selector),
        Descriptor(entry.data_descriptor),
    );
    for seg in Seg::ALL {
        sys.seg[seg as usize] = if seg == Seg::Cs { code } else { data };
    }
    sys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::linux::{BOOT_CS, BOOT_DS, CODE_DESCRIPTOR, DATA_DESCRIPTOR};

    fn entry() -> LinuxEntry {
        LinuxEntry {
            eip: 0x10_0000,
            esi: 0x7000,
            esp: 0x8ff0,
            gdt_base: 0x500,
            gdt_limit: 31,
            code_selector: BOOT_CS,
            code_descriptor: CODE_DESCRIPTOR,
            data_selector: BOOT_DS,
            data_descriptor: DATA_DESCRIPTOR,
        }
    }

    #[test]
    fn linux_entry_is_flat_protected_mode_with_the_boot_selectors() {
        let sys = linux_system_state(&entry());
        assert_eq!(
            sys.gdtr,
            TableRegister {
                base: 0x500,
                limit: 31
            }
        );
        assert_eq!(sys.segment(Seg::Cs).selector, Selector(0x10));
        for seg in [Seg::Ds, Seg::Es, Seg::Ss, Seg::Fs, Seg::Gs] {
            assert_eq!(sys.segment(seg).selector, Selector(0x18), "{}", seg.name());
            assert!(sys.segment(seg).writable());
        }
        assert!(sys.segment(Seg::Cs).is_code() && sys.code32() && sys.stack32());
        assert!(sys.flat() && !sys.paging() && sys.cpl == 0);
        assert_eq!(
            sys.seg[Seg::Cs as usize],
            SegmentRegister::flat(0x10, true, 0)
        );
        assert_eq!(
            sys.seg[Seg::Ds as usize],
            SegmentRegister::flat(0x18, false, 0)
        );
    }

    #[test]
    fn linux_registers_are_esi_and_a_stack_with_interrupts_off() {
        let regs = linux_registers(&entry());
        assert_eq!(regs.gpr, [0, 0, 0, 0, 0x8ff0, 0, 0x7000, 0]);
        assert_eq!((regs.eip, regs.eflags), (0x10_0000, 2));
    }
}
