//! The guest CPU state in KVM's layout: the system model's segment
//! registers, tables and control registers as `kvm_sregs`, the general
//! registers as `kvm_regs`, and the model's CPUID answers as
//! `KVM_SET_CPUID2` entries.
//!
//! Invariant: a segment register converts with its cached base, limit
//! (granularity applied, as KVM takes it) and attributes; one whose
//! attributes are 0 (a null selector) is marked unusable, as VMX wants.

use crate::cpu::{Cr0, Cr4, SegmentRegister, Selector, SystemState, TableRegister};
use crate::cpuid::CpuModel;
use crate::vcpu::{GuestRegisters, RegisterDump};
use kvm_bindings::{kvm_cpuid_entry2, kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, CpuId};

/// A segment register as KVM's `kvm_segment`.
pub(super) fn kvm_segment_of(reg: &SegmentRegister) -> kvm_segment {
    let attr = reg.attr;
    let bit = |n: u16| ((attr >> n) & 1) as u8;
    kvm_segment {
        base: u64::from(reg.base),
        limit: reg.limit,
        selector: reg.selector.0,
        type_: (attr & 0xf) as u8,
        s: bit(4),
        dpl: ((attr >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(12),
        l: bit(13),
        db: bit(14),
        g: bit(15),
        unusable: u8::from(attr & 0x80 == 0),
        padding: 0,
    }
}

/// KVM's `kvm_segment` as a segment register (the inverse of
/// [`kvm_segment_of`]): an unusable segment has `attr` 0.
pub(super) fn segment_register_of(seg: &kvm_segment) -> SegmentRegister {
    let attr = if seg.unusable != 0 {
        0
    } else {
        u16::from(seg.type_ & 0xf)
            | u16::from(seg.s & 1) << 4
            | u16::from(seg.dpl & 3) << 5
            | u16::from(seg.present & 1) << 7
            | u16::from(seg.avl & 1) << 12
            | u16::from(seg.l & 1) << 13
            | u16::from(seg.db & 1) << 14
            | u16::from(seg.g & 1) << 15
    };
    SegmentRegister {
        selector: Selector(seg.selector),
        base: seg.base as u32,
        limit: seg.limit,
        attr,
    }
}

fn table_register_of(table: &kvm_dtable) -> TableRegister {
    TableRegister {
        base: table.base as u32,
        limit: table.limit,
    }
}

/// The system state `regs` and `sregs` describe: segments with their
/// caches, the descriptor-table registers, CR0, CR2, CR3, CR4 and the
/// CPL. Debug registers, MSRs and the interrupt shadow are left at their
/// defaults (KVM keeps them elsewhere).
pub(super) fn system_state_of(regs: &kvm_regs, sregs: &kvm_sregs) -> SystemState {
    let seg = [sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs]
        .map(|s| segment_register_of(&s));
    SystemState {
        seg,
        ldtr: segment_register_of(&sregs.ldt),
        tr: segment_register_of(&sregs.tr),
        gdtr: table_register_of(&sregs.gdt),
        idtr: table_register_of(&sregs.idt),
        cr0: Cr0::from_bits_retain(sregs.cr0 as u32),
        cr2: sregs.cr2 as u32,
        cr3: sregs.cr3 as u32,
        cr4: Cr4::from_bits_retain(sregs.cr4 as u32),
        cpl: cpl(regs, sregs),
        ..SystemState::default()
    }
}

fn kvm_table_of(table: &TableRegister) -> kvm_dtable {
    kvm_dtable {
        base: u64::from(table.base),
        limit: table.limit,
        padding: [0; 3],
    }
}

/// Writes `sys` (segments with their caches, GDTR, IDTR, LDTR, TR, CR0,
/// CR2, CR3, CR4) into `sregs`; EFER is 0 (no long mode).
pub(super) fn apply_system_state(sregs: &mut kvm_sregs, sys: &SystemState) {
    let [es, cs, ss, ds, fs, gs] = sys.seg.map(|s| kvm_segment_of(&s));
    (sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs) = (es, cs, ss, ds, fs, gs);
    sregs.ldt = kvm_segment_of(&sys.ldtr);
    sregs.tr = kvm_segment_of(&sys.tr);
    sregs.gdt = kvm_table_of(&sys.gdtr);
    sregs.idt = kvm_table_of(&sys.idtr);
    sregs.cr0 = u64::from(sys.cr0.bits());
    sregs.cr2 = u64::from(sys.cr2);
    sregs.cr3 = u64::from(sys.cr3);
    sregs.cr4 = u64::from(sys.cr4.bits());
    sregs.efer = 0;
}

/// The general registers, EIP and EFLAGS of `regs`.
pub(super) fn guest_registers(regs: &kvm_regs) -> GuestRegisters {
    GuestRegisters {
        gpr: [
            regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
        ]
        .map(|r| r as u32),
        eip: regs.rip as u32,
        eflags: regs.rflags as u32,
    }
}

/// Replaces the general registers of `regs` (EAX, ECX, EDX, EBX, ESP,
/// EBP, ESI, EDI order).
pub(super) fn set_general_registers(regs: &mut kvm_regs, gpr: [u32; 8]) {
    let [a, c, d, b, sp, bp, si, di] = gpr.map(u64::from);
    (
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi,
    ) = (a, c, d, b, sp, bp, si, di);
}

/// Replaces the general registers, EIP and EFLAGS of `regs`.
pub(super) fn set_registers(regs: &mut kvm_regs, guest: &GuestRegisters) {
    set_general_registers(regs, guest.gpr);
    regs.rip = u64::from(guest.eip);
    regs.rflags = u64::from(guest.eflags | 2);
}

/// The current privilege level: CS.RPL in protected mode, 3 in virtual-8086
/// mode, 0 in real mode.
pub(super) fn cpl(regs: &kvm_regs, sregs: &kvm_sregs) -> u8 {
    const EFLAGS_VM: u64 = 1 << 17;
    if sregs.cr0 & 1 == 0 {
        0
    } else if regs.rflags & EFLAGS_VM != 0 {
        3
    } else {
        (sregs.cs.selector & 3) as u8
    }
}

/// What a stop report shows, from KVM's registers.
pub(super) fn register_dump(regs: &kvm_regs, sregs: &kvm_sregs) -> RegisterDump {
    RegisterDump {
        regs: guest_registers(regs),
        selectors: [sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs].map(|s| s.selector),
        cr: [sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4].map(|r| r as u32),
        cpl: cpl(regs, sregs),
    }
}

/// The model's CPUID answers as `KVM_SET_CPUID2` entries (no leaf of the
/// model has subleaves; KVM answers a leaf above the maximum with the
/// highest basic leaf, as the model and Intel CPUs do).
pub(super) fn cpuid_of(model: &CpuModel) -> Result<CpuId, String> {
    let entries: Vec<kvm_cpuid_entry2> = model
        .cpuid_answers()
        .leaves
        .iter()
        .map(|&(function, [eax, ebx, ecx, edx])| kvm_cpuid_entry2 {
            function,
            index: 0,
            flags: 0,
            eax,
            ebx,
            ecx,
            edx,
            padding: [0; 3],
        })
        .collect();
    CpuId::from_entries(&entries).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Descriptor;

    #[test]
    fn flat_code_segment_converts_to_a_usable_32bit_code_segment() {
        let seg = kvm_segment_of(&SegmentRegister::flat(0x08, true, 0));
        assert_eq!((seg.base, seg.limit, seg.selector), (0, u32::MAX, 0x08));
        assert_eq!((seg.type_, seg.s, seg.dpl, seg.present), (0xb, 1, 0, 1));
        assert_eq!((seg.db, seg.g, seg.l, seg.unusable), (1, 1, 0, 0));
    }

    #[test]
    fn segments_convert_back_unchanged() {
        let d = crate::cpu::Descriptor(0x1240_f234_5678_ffff);
        for reg in [
            SegmentRegister::flat(0x08, true, 0),
            SegmentRegister::flat(0x23, false, 3),
            SegmentRegister::loaded(Selector(0x2b), d),
            SegmentRegister::null(Selector(0)),
        ] {
            assert_eq!(segment_register_of(&kvm_segment_of(&reg)), reg);
        }
    }

    #[test]
    fn system_state_converts_back_unchanged() {
        let mut sregs = kvm_sregs::default();
        let mut sys = SystemState::multiboot_entry();
        sys.cr3 = 0x5000;
        sys.gdtr = TableRegister {
            base: 0x1000,
            limit: 0x3f,
        };
        apply_system_state(&mut sregs, &sys);
        let back = system_state_of(&kvm_regs::default(), &sregs);
        assert_eq!((back.seg, back.ldtr, back.tr), (sys.seg, sys.ldtr, sys.tr));
        assert_eq!((back.gdtr, back.idtr), (sys.gdtr, sys.idtr));
        assert_eq!((back.cr0, back.cr3, back.cr4), (sys.cr0, sys.cr3, sys.cr4));
    }

    #[test]
    fn null_segment_is_unusable() {
        let seg = kvm_segment_of(&SegmentRegister::null(Selector(0)));
        assert_eq!((seg.unusable, seg.present), (1, 0));
    }

    #[test]
    fn descriptor_attributes_keep_dpl_and_granularity() {
        // Ring-3 data, byte granular, limit 0xffff, base 0x12345678.
        let d = Descriptor(0x1240_f234_5678_ffff);
        let seg = kvm_segment_of(&SegmentRegister::loaded(Selector(0x2b), d));
        assert_eq!((seg.base, seg.limit), (0x1234_5678, 0xffff));
        assert_eq!((seg.dpl, seg.g, seg.db, seg.type_), (3, 0, 1, 2));
    }

    #[test]
    fn multiboot_entry_state_is_flat_protected_mode_with_a_busy_tss() {
        let mut sregs = kvm_sregs::default();
        apply_system_state(&mut sregs, &SystemState::multiboot_entry());
        assert_eq!(sregs.cr0, 0x11);
        assert_eq!((sregs.cs.selector, sregs.ds.selector), (0x08, 0x10));
        assert_eq!((sregs.tr.type_, sregs.tr.present, sregs.tr.s), (0xb, 1, 0));
        assert_eq!(sregs.ldt.unusable, 1);
        assert_eq!((sregs.idt.base, sregs.idt.limit), (0, 0x3ff));
        assert_eq!(sregs.efer, 0);
    }

    #[test]
    fn registers_round_trip_in_the_dump_order() {
        let guest = GuestRegisters {
            gpr: [1, 2, 3, 4, 5, 6, 7, 8],
            eip: 0x10_0000,
            eflags: 0x202,
        };
        let mut regs = kvm_regs::default();
        set_registers(&mut regs, &guest);
        assert_eq!(
            (regs.rax, regs.rcx, regs.rbx, regs.rsp, regs.rdi),
            (1, 2, 4, 5, 8)
        );
        assert_eq!(guest_registers(&regs), guest);
    }

    #[test]
    fn cpl_is_cs_rpl_in_protected_mode() {
        let mut sregs = kvm_sregs::default();
        let mut regs = kvm_regs::default();
        sregs.cs.selector = 0x1b;
        assert_eq!(cpl(&regs, &sregs), 0, "real mode");
        sregs.cr0 = 1;
        assert_eq!(cpl(&regs, &sregs), 3);
        sregs.cs.selector = 0x08;
        regs.rflags = 1 << 17;
        assert_eq!(cpl(&regs, &sregs), 3, "virtual-8086 mode");
    }

    #[test]
    fn cpuid_entries_carry_the_models_answers() {
        let model = CpuModel::new(
            &crate::config::VmConfig::default(),
            &crate::probe::host_cpuid,
        )
        .unwrap();
        let cpuid = cpuid_of(&model).unwrap();
        let leaf1 = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 1)
            .expect("leaf 1");
        assert_eq!(
            [leaf1.eax, leaf1.ebx, leaf1.ecx, leaf1.edx],
            model.query(1, 0)
        );
    }
}
