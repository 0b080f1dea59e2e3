//! The descriptor-table instructions: LGDT, LIDT, SGDT, SIDT, LLDT, SLDT,
//! LTR, STR, and the descriptor queries LAR, LSL, VERR, VERW and ARPL
//! (Intel SDM vol. 2, their pages; vol. 3, 2.4, 3.5, 5.10, 7.2.4).
//!
//! LGDT/LIDT/SGDT/SIDT take the memory operand as a segment and offset
//! (they read or write it after the privilege check); the others take the
//! selector the vCPU read from their r/m16 operand. Descriptor tables are
//! read and written with supervisor rights. LAR, LSL, VERR and VERW answer
//! `None`/`false` (ZF = 0) rather than fault for a selector they may not
//! see; only a page fault on the table itself is raised.

use super::privileged::require_cpl0;
use crate::cpu::context::{read_u64, seg_read, seg_write, CpuContext, OperandSize, Privilege};
use crate::cpu::descriptor::{Descriptor, Selector, SystemKind};
use crate::cpu::exception::{selector_error, Exception};
use crate::cpu::segment::{descriptor_address, gp, read_descriptor, write_descriptor};
use crate::cpu::state::{Seg, SegmentRegister, TableRegister};

/// The 6-byte pseudo-descriptor of GDTR or IDTR as SGDT/SIDT store it:
/// the limit, then all 32 bits of the base (for either operand size, as
/// the SDM's SGDT operation gives it for processors since the Intel386).
pub fn pseudo_descriptor(t: TableRegister) -> [u8; 6] {
    let mut b = [0u8; 6];
    b[..2].copy_from_slice(&t.limit.to_le_bytes());
    b[2..].copy_from_slice(&t.base.to_le_bytes());
    b
}

/// Reads a pseudo-descriptor at `seg:offset`; a 16-bit operand size keeps
/// 24 bits of the base (SDM vol. 2, LGDT/LIDT).
fn read_pseudo_descriptor(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    offset: u32,
    operand_size: OperandSize,
) -> Result<TableRegister, Exception> {
    let mut b = [0u8; 6];
    seg_read(ctx, seg, offset, &mut b)?;
    let base = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    Ok(TableRegister {
        limit: u16::from_le_bytes([b[0], b[1]]),
        base: match operand_size {
            OperandSize::Bits16 => base & 0x00ff_ffff,
            OperandSize::Bits32 => base,
        },
    })
}

/// LGDT from the pseudo-descriptor at `seg:offset` (#GP(0) at CPL > 0).
pub fn lgdt(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    offset: u32,
    operand_size: OperandSize,
) -> Result<(), Exception> {
    require_cpl0(ctx)?;
    let t = read_pseudo_descriptor(ctx, seg, offset, operand_size)?;
    ctx.sys_mut().gdtr = t;
    Ok(())
}

/// LIDT from the pseudo-descriptor at `seg:offset` (#GP(0) at CPL > 0).
pub fn lidt(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    offset: u32,
    operand_size: OperandSize,
) -> Result<(), Exception> {
    require_cpl0(ctx)?;
    let t = read_pseudo_descriptor(ctx, seg, offset, operand_size)?;
    ctx.sys_mut().idtr = t;
    Ok(())
}

/// SGDT to `seg:offset` (any CPL: UMIP is not modelled).
pub fn sgdt(ctx: &mut (impl CpuContext + ?Sized), seg: Seg, offset: u32) -> Result<(), Exception> {
    let image = pseudo_descriptor(ctx.sys().gdtr);
    seg_write(ctx, seg, offset, &image)
}

/// SIDT to `seg:offset` (any CPL: UMIP is not modelled).
pub fn sidt(ctx: &mut (impl CpuContext + ?Sized), seg: Seg, offset: u32) -> Result<(), Exception> {
    let image = pseudo_descriptor(ctx.sys().idtr);
    seg_write(ctx, seg, offset, &image)
}

/// #GP naming `selector`.
fn gp_sel(selector: Selector) -> Exception {
    gp(selector_error(selector.0))
}

/// Reads a system descriptor LLDT or LTR may load: the selector must name
/// the GDT (#GP(selector)) within its limit (#GP(selector)), and the
/// descriptor be one `accept` takes (#GP(selector)) and present
/// (#NP(selector)).
fn gdt_system_descriptor(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    accept: fn(SystemKind) -> bool,
) -> Result<Descriptor, Exception> {
    if selector.in_ldt() {
        return Err(gp_sel(selector));
    }
    let d = read_descriptor(ctx, selector, gp)?;
    if d.is_code_or_data() || !accept(d.system_kind()) {
        return Err(gp_sel(selector));
    }
    if !d.present() {
        return Err(Exception::SegmentNotPresent(selector_error(selector.0)));
    }
    Ok(d)
}

/// LLDT `selector` (SDM vol. 2, LLDT): #GP(0) at CPL > 0; a null selector
/// leaves LDTR unusable; otherwise an LDT descriptor in the GDT.
pub fn lldt(ctx: &mut (impl CpuContext + ?Sized), selector: Selector) -> Result<(), Exception> {
    require_cpl0(ctx)?;
    let ldtr = if selector.is_null() {
        SegmentRegister::null(selector)
    } else {
        let d = gdt_system_descriptor(ctx, selector, |k| k == SystemKind::Ldt)?;
        SegmentRegister::loaded(selector, d)
    };
    ctx.sys_mut().ldtr = ldtr;
    Ok(())
}

/// SLDT: the LDTR selector.
pub fn sldt(ctx: &(impl CpuContext + ?Sized)) -> u16 {
    ctx.sys().ldtr.selector.0
}

/// LTR `selector` (SDM vol. 2, LTR; vol. 3, 7.2.4): #GP(0) at CPL > 0 or
/// for a null selector; an available 32- or 16-bit TSS in the GDT, which
/// is marked busy.
pub fn ltr(ctx: &mut (impl CpuContext + ?Sized), selector: Selector) -> Result<(), Exception> {
    require_cpl0(ctx)?;
    if selector.is_null() {
        return Err(gp(0));
    }
    let d = gdt_system_descriptor(ctx, selector, |k| {
        matches!(k, SystemKind::Tss32Available | SystemKind::Tss16Available)
    })?;
    let busy = d.with_busy(true);
    write_descriptor(ctx, selector, busy, gp)?;
    ctx.sys_mut().tr = SegmentRegister::loaded(selector, busy);
    Ok(())
}

/// STR: the task register's selector.
pub fn str(ctx: &(impl CpuContext + ?Sized)) -> u16 {
    ctx.sys().tr.selector.0
}

/// The descriptor `selector` names, or `None` for a null selector or one
/// outside its table (the queries then clear ZF rather than fault).
fn visible_descriptor(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
) -> Result<Option<Descriptor>, Exception> {
    if selector.is_null() {
        return Ok(None);
    }
    match descriptor_address(ctx, selector) {
        None => Ok(None),
        Some(at) => read_u64(ctx, at, Privilege::Supervisor).map(|d| Some(Descriptor(d))),
    }
}

/// The privilege rule of LAR, LSL, VERR and VERW: conforming code is
/// always visible; anything else needs DPL >= CPL and DPL >= RPL.
fn visible_at(cpl: u8, selector: Selector, d: Descriptor) -> bool {
    d.conforming() || (d.dpl() >= cpl && d.dpl() >= selector.rpl())
}

/// LAR `selector` (SDM vol. 2, LAR): the access rights (the descriptor's
/// second doubleword masked by 00F0FF00H, or FF00H for a 16-bit operand
/// size; the undefined limit bits read 0), or `None` (ZF = 0). Valid:
/// code and data segments, TSSs, LDTs, call gates and task gates; not
/// interrupt or trap gates or reserved types. Presence is not checked.
pub fn lar(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    operand_size: OperandSize,
) -> Result<Option<u32>, Exception> {
    let Some(d) = visible_descriptor(ctx, selector)? else {
        return Ok(None);
    };
    let valid = d.is_code_or_data()
        || matches!(
            d.system_kind(),
            SystemKind::Tss16Available
                | SystemKind::Ldt
                | SystemKind::Tss16Busy
                | SystemKind::CallGate16
                | SystemKind::TaskGate
                | SystemKind::Tss32Available
                | SystemKind::Tss32Busy
                | SystemKind::CallGate32
        );
    if !valid || !visible_at(ctx.sys().cpl, selector, d) {
        return Ok(None);
    }
    let rights = (d.0 >> 32) as u32;
    Ok(Some(match operand_size {
        OperandSize::Bits32 => rights & 0x00f0_ff00,
        OperandSize::Bits16 => rights & 0xff00,
    }))
}

/// LSL `selector` (SDM vol. 2, LSL): the segment limit in bytes
/// (granularity applied; its low 16 bits for a 16-bit operand size), or
/// `None` (ZF = 0). Valid: code and data segments, TSSs and LDTs; no gates.
pub fn lsl(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    operand_size: OperandSize,
) -> Result<Option<u32>, Exception> {
    let Some(d) = visible_descriptor(ctx, selector)? else {
        return Ok(None);
    };
    let valid =
        d.is_code_or_data() || d.system_kind().is_tss() || d.system_kind() == SystemKind::Ldt;
    if !valid || !visible_at(ctx.sys().cpl, selector, d) {
        return Ok(None);
    }
    Ok(Some(operand_size.truncate(d.limit())))
}

/// VERR `selector` (SDM vol. 2, VERR): ZF = 1 if the segment is a code or
/// data segment readable at the CPL and RPL.
pub fn verr(ctx: &mut (impl CpuContext + ?Sized), selector: Selector) -> Result<bool, Exception> {
    let cpl = ctx.sys().cpl;
    Ok(visible_descriptor(ctx, selector)?
        .is_some_and(|d| d.is_code_or_data() && visible_at(cpl, selector, d) && d.readable()))
}

/// VERW `selector` (SDM vol. 2, VERW): ZF = 1 if the segment is a data
/// segment writable at the CPL and RPL (code is never writable).
pub fn verw(ctx: &mut (impl CpuContext + ?Sized), selector: Selector) -> Result<bool, Exception> {
    let cpl = ctx.sys().cpl;
    Ok(visible_descriptor(ctx, selector)?
        .is_some_and(|d| d.writable() && visible_at(cpl, selector, d)))
}

/// ARPL `dest`, `src` (SDM vol. 2, ARPL): `dest` with its RPL raised to
/// `src`'s if lower, and ZF (set when it was raised).
pub fn arpl(dest: u16, src: u16) -> (u16, bool) {
    if dest & 3 < src & 3 {
        ((dest & !3) | (src & 3), true)
    } else {
        (dest, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{gate_descriptor, segment_descriptor, TestCpu};

    const CODE0: u16 = 0x08;
    const DATA0: u16 = 0x10;
    const CODE3: u16 = 0x18;
    const DATA3: u16 = 0x20;
    const LDT: u16 = 0x28;
    const TSS32: u16 = 0x30;
    const TSS32_BUSY: u16 = 0x38;
    const TSS16: u16 = 0x40;
    const CALL_GATE: u16 = 0x48;
    const TASK_GATE: u16 = 0x50;
    const INTERRUPT_GATE: u16 = 0x58;
    const EXECUTE_ONLY3: u16 = 0x60;
    const CONFORMING0: u16 = 0x68;
    const READ_ONLY3: u16 = 0x70;
    const ABSENT_LDT: u16 = 0x78;
    const ABSENT_TSS: u16 = 0x80;
    const RESERVED3: u16 = 0x88;
    const PAGE_GRANULAR3: u16 = 0x90;

    fn cpu() -> TestCpu {
        let mut cpu = TestCpu::new();
        let seg = segment_descriptor;
        for (sel, d) in [
            (CODE0, seg(0, 0xfffff, 0x9a, 0xc)),
            (DATA0, seg(0, 0xfffff, 0x92, 0xc)),
            (CODE3, seg(0, 0xfffff, 0xfa, 0xc)),
            (DATA3, seg(0x1000, 0xffff, 0xf2, 0x4)),
            (LDT, seg(0x4000, 0x3f, 0x82, 0)),
            (TSS32, seg(0x3000, 0x67, 0x89, 0)),
            (TSS32_BUSY, seg(0x3100, 0x67, 0x8b, 0)),
            (TSS16, seg(0x3200, 0x2b, 0x81, 0)),
            (CALL_GATE, gate_descriptor(CODE0, 0x1000, 0xec, 0)),
            (TASK_GATE, gate_descriptor(TSS32, 0, 0xe5, 0)),
            (INTERRUPT_GATE, gate_descriptor(CODE0, 0x1000, 0xee, 0)),
            (EXECUTE_ONLY3, seg(0, 0xfffff, 0xf8, 0xc)),
            (CONFORMING0, seg(0, 0xfffff, 0x9e, 0xc)),
            (READ_ONLY3, seg(0, 0xfffff, 0xf0, 0xc)),
            (ABSENT_LDT, seg(0x4000, 0x3f, 0x02, 0)),
            (ABSENT_TSS, seg(0x3000, 0x67, 0x09, 0)),
            (RESERVED3, seg(0, 0xffff, 0xe0, 0)),
            (PAGE_GRANULAR3, seg(0, 0x0000f, 0xf2, 0xc)),
        ] {
            cpu.set_gdt(sel >> 3, d);
        }
        cpu
    }

    const GP0: Exception = Exception::GeneralProtection(0);

    fn gp_of(sel: u16) -> Exception {
        Exception::GeneralProtection(u32::from(sel))
    }

    // ----- LGDT, LIDT, SGDT, SIDT -------------------------------------------

    #[test]
    fn lgdt_loads_limit_and_base_from_memory() {
        let mut cpu = cpu();
        cpu.poke(0x5000, &[0xff, 0x03, 0x78, 0x56, 0x34, 0x12]);
        lgdt(&mut cpu, Seg::Ds, 0x5000, OperandSize::Bits32).unwrap();
        assert_eq!(
            cpu.sys.gdtr,
            TableRegister {
                base: 0x1234_5678,
                limit: 0x3ff
            }
        );
    }

    #[test]
    fn lidt_with_a_16bit_operand_size_keeps_a_24bit_base() {
        let mut cpu = cpu();
        cpu.poke(0x5000, &[0xff, 0x07, 0x78, 0x56, 0x34, 0x12]);
        lidt(&mut cpu, Seg::Ds, 0x5000, OperandSize::Bits16).unwrap();
        assert_eq!(
            cpu.sys.idtr,
            TableRegister {
                base: 0x0034_5678,
                limit: 0x7ff
            }
        );
    }

    #[test]
    fn lgdt_and_lidt_above_ring0_are_gp0_and_change_nothing() {
        let mut cpu = cpu();
        let (gdtr, idtr) = (cpu.sys.gdtr, cpu.sys.idtr);
        cpu.sys.cpl = 3;
        cpu.unmapped.push(0x5000..0x6000);
        assert_eq!(
            lgdt(&mut cpu, Seg::Ds, 0x5000, OperandSize::Bits32),
            Err(GP0),
            "the privilege check comes before the operand's page fault"
        );
        assert_eq!(
            lidt(&mut cpu, Seg::Ds, 0x5000, OperandSize::Bits32),
            Err(GP0)
        );
        assert_eq!((cpu.sys.gdtr, cpu.sys.idtr), (gdtr, idtr));
    }

    #[test]
    fn lidt_past_the_segment_limit_is_gp0() {
        let mut cpu = cpu();
        let mut ds = cpu.sys.segment(Seg::Ds);
        ds.limit = 0x5003;
        cpu.set_segment(Seg::Ds, ds);
        assert_eq!(
            lidt(&mut cpu, Seg::Ds, 0x5000, OperandSize::Bits32),
            Err(GP0)
        );
    }

    #[test]
    fn sgdt_and_sidt_store_the_limit_and_the_full_base_at_any_cpl() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        cpu.sys.idtr = TableRegister {
            base: 0xc012_3456,
            limit: 0x7ff,
        };
        sgdt(&mut cpu, Seg::Ds, 0x5000).unwrap();
        sidt(&mut cpu, Seg::Ds, 0x5010).unwrap();
        assert_eq!(cpu.peek(0x5000, 6), [0xff, 0x00, 0x00, 0x10, 0x00, 0x00]);
        assert_eq!(cpu.peek(0x5010, 6), [0xff, 0x07, 0x56, 0x34, 0x12, 0xc0]);
    }

    // ----- LLDT, SLDT, LTR, STR ----------------------------------------------

    #[test]
    fn lldt_loads_an_ldt_descriptor_from_the_gdt() {
        let mut cpu = cpu();
        lldt(&mut cpu, Selector(LDT)).unwrap();
        let ldtr = cpu.sys.ldtr;
        assert_eq!(
            (ldtr.base, ldtr.limit, ldtr.selector),
            (0x4000, 0x3f, Selector(LDT))
        );
        assert!(ldtr.usable());
        assert_eq!(sldt(&cpu), LDT);
    }

    #[test]
    fn lldt_with_a_null_selector_leaves_ldtr_unusable() {
        let mut cpu = cpu();
        lldt(&mut cpu, Selector(LDT)).unwrap();
        lldt(&mut cpu, Selector(0)).unwrap();
        assert!(!cpu.sys.ldtr.usable());
        assert_eq!(sldt(&cpu), 0);
    }

    #[test]
    fn lldt_of_anything_but_an_ldt_in_the_gdt_is_gp_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(lldt(&mut cpu, Selector(DATA0)), Err(gp_of(DATA0)));
        assert_eq!(lldt(&mut cpu, Selector(TSS32)), Err(gp_of(TSS32)));
        assert_eq!(lldt(&mut cpu, Selector(LDT | 4)), Err(gp_of(LDT | 4)));
        assert_eq!(lldt(&mut cpu, Selector(0x400)), Err(gp_of(0x400)));
        assert!(!cpu.sys.ldtr.usable());
    }

    #[test]
    fn lldt_of_a_not_present_ldt_is_np_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(
            lldt(&mut cpu, Selector(ABSENT_LDT)),
            Err(Exception::SegmentNotPresent(u32::from(ABSENT_LDT)))
        );
    }

    #[test]
    fn lldt_and_ltr_above_ring0_are_gp0() {
        let mut cpu = cpu();
        cpu.sys.cpl = 1;
        assert_eq!(lldt(&mut cpu, Selector(LDT)), Err(GP0));
        assert_eq!(ltr(&mut cpu, Selector(TSS32)), Err(GP0));
    }

    #[test]
    fn ltr_loads_an_available_tss_and_marks_it_busy() {
        let mut cpu = cpu();
        ltr(&mut cpu, Selector(TSS32)).unwrap();
        assert_eq!(cpu.gdt(TSS32 >> 3).system_kind(), SystemKind::Tss32Busy);
        let tr = cpu.sys.tr;
        assert_eq!((tr.base, tr.limit, tr.attr & 0xf), (0x3000, 0x67, 0xb));
        assert_eq!(str(&cpu), TSS32);
        ltr(&mut cpu, Selector(TSS16)).unwrap();
        assert_eq!(cpu.gdt(TSS16 >> 3).system_kind(), SystemKind::Tss16Busy);
    }

    #[test]
    fn ltr_of_a_busy_tss_or_a_non_tss_is_gp_with_the_selector() {
        let mut cpu = cpu();
        let tr = cpu.sys.tr;
        assert_eq!(ltr(&mut cpu, Selector(TSS32_BUSY)), Err(gp_of(TSS32_BUSY)));
        assert_eq!(ltr(&mut cpu, Selector(LDT)), Err(gp_of(LDT)));
        assert_eq!(ltr(&mut cpu, Selector(TSS32 | 4)), Err(gp_of(TSS32 | 4)));
        assert_eq!(ltr(&mut cpu, Selector(3)), Err(GP0), "null");
        assert_eq!(cpu.sys.tr, tr);
    }

    #[test]
    fn ltr_of_a_not_present_tss_is_np_and_leaves_it_available() {
        let mut cpu = cpu();
        assert_eq!(
            ltr(&mut cpu, Selector(ABSENT_TSS)),
            Err(Exception::SegmentNotPresent(u32::from(ABSENT_TSS)))
        );
        assert_eq!(
            cpu.gdt(ABSENT_TSS >> 3).system_kind(),
            SystemKind::Tss32Available
        );
    }

    // ----- LAR, LSL, VERR, VERW, ARPL -----------------------------------------

    fn lar32(cpu: &mut TestCpu, sel: u16) -> Option<u32> {
        lar(cpu, Selector(sel), OperandSize::Bits32).unwrap()
    }

    fn lsl32(cpu: &mut TestCpu, sel: u16) -> Option<u32> {
        lsl(cpu, Selector(sel), OperandSize::Bits32).unwrap()
    }

    #[test]
    fn lar_of_a_code_segment_returns_its_access_rights() {
        let mut cpu = cpu();
        assert_eq!(lar32(&mut cpu, CODE0), Some(0x00c0_9a00));
        assert_eq!(
            lar(&mut cpu, Selector(CODE0), OperandSize::Bits16),
            Ok(Some(0x9a00))
        );
    }

    #[test]
    fn lar_accepts_tss_ldt_call_and_task_gates_but_not_interrupt_gates() {
        let mut cpu = cpu();
        assert_eq!(lar32(&mut cpu, TSS32), Some(0x0000_8900));
        assert_eq!(lar32(&mut cpu, TSS32_BUSY), Some(0x0000_8b00));
        assert_eq!(lar32(&mut cpu, LDT), Some(0x0000_8200));
        assert_eq!(lar32(&mut cpu, CALL_GATE | 3), Some(0x0000_ec00));
        assert_eq!(lar32(&mut cpu, TASK_GATE | 3), Some(0x0000_e500));
        assert_eq!(lar32(&mut cpu, INTERRUPT_GATE | 3), None);
        assert_eq!(lar32(&mut cpu, RESERVED3 | 3), None);
    }

    #[test]
    fn lar_of_a_more_privileged_segment_clears_zf_but_conforming_code_is_visible() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        assert_eq!(lar32(&mut cpu, DATA0 | 3), None);
        assert_eq!(lar32(&mut cpu, CODE3 | 3), Some(0x00c0_fa00));
        assert_eq!(lar32(&mut cpu, CONFORMING0 | 3), Some(0x00c0_9e00));
    }

    #[test]
    fn lar_with_rpl_above_the_dpl_clears_zf() {
        let mut cpu = cpu();
        assert_eq!(lar32(&mut cpu, DATA0 | 1), None);
        assert_eq!(lar32(&mut cpu, DATA3 | 3), Some(0x0040_f200));
    }

    #[test]
    fn lar_of_a_null_or_out_of_table_selector_clears_zf_without_faulting() {
        let mut cpu = cpu();
        assert_eq!(lar32(&mut cpu, 0), None);
        assert_eq!(lar32(&mut cpu, 0x400), None);
        assert_eq!(lar32(&mut cpu, 0x0c), None, "no LDT");
    }

    #[test]
    fn lar_reads_descriptors_from_the_ldt() {
        let mut cpu = cpu();
        lldt(&mut cpu, Selector(LDT)).unwrap();
        cpu.poke(
            0x4008,
            &segment_descriptor(0, 0xfff, 0xf2, 0x4).0.to_le_bytes(),
        );
        assert_eq!(lar32(&mut cpu, 0x0f), Some(0x0040_f200));
        assert_eq!(lsl32(&mut cpu, 0x0f), Some(0xfff));
        assert_eq!(lar32(&mut cpu, 0x47), None, "past the LDT limit");
    }

    #[test]
    fn lar_raises_a_page_fault_on_the_descriptor_table() {
        let mut cpu = cpu();
        cpu.unmapped.push(0x1000..0x1100);
        assert!(matches!(
            lar(&mut cpu, Selector(CODE0), OperandSize::Bits32),
            Err(Exception::PageFault { addr: 0x1008, .. })
        ));
    }

    #[test]
    fn lsl_of_a_tss_returns_its_limit() {
        let mut cpu = cpu();
        assert_eq!(lsl32(&mut cpu, TSS32), Some(0x67));
        assert_eq!(lsl32(&mut cpu, TSS16), Some(0x2b));
        assert_eq!(lsl32(&mut cpu, LDT), Some(0x3f));
    }

    #[test]
    fn lsl_applies_granularity_and_a_16bit_operand_size_keeps_the_low_word() {
        let mut cpu = cpu();
        assert_eq!(lsl32(&mut cpu, PAGE_GRANULAR3 | 3), Some(0xffff));
        assert_eq!(lsl32(&mut cpu, CODE0), Some(u32::MAX));
        assert_eq!(
            lsl(&mut cpu, Selector(CODE0), OperandSize::Bits16),
            Ok(Some(0xffff))
        );
    }

    #[test]
    fn lsl_of_a_gate_or_a_more_privileged_segment_clears_zf() {
        let mut cpu = cpu();
        assert_eq!(lsl32(&mut cpu, CALL_GATE), None);
        assert_eq!(lsl32(&mut cpu, TASK_GATE), None);
        cpu.sys.cpl = 3;
        assert_eq!(lsl32(&mut cpu, TSS32 | 3), None);
    }

    #[test]
    fn verr_on_readable_code_and_data_sets_zf_but_not_on_execute_only_code() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        assert_eq!(verr(&mut cpu, Selector(CODE3 | 3)), Ok(true));
        assert_eq!(verr(&mut cpu, Selector(READ_ONLY3 | 3)), Ok(true));
        assert_eq!(verr(&mut cpu, Selector(EXECUTE_ONLY3 | 3)), Ok(false));
        assert_eq!(verr(&mut cpu, Selector(DATA0 | 3)), Ok(false));
    }

    #[test]
    fn verr_on_conforming_code_ignores_privilege() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        assert_eq!(verr(&mut cpu, Selector(CONFORMING0 | 3)), Ok(true));
    }

    #[test]
    fn verr_and_verw_on_system_descriptors_or_null_clear_zf() {
        let mut cpu = cpu();
        assert_eq!(verr(&mut cpu, Selector(TSS32)), Ok(false));
        assert_eq!(verw(&mut cpu, Selector(CALL_GATE)), Ok(false));
        assert_eq!(verr(&mut cpu, Selector(0)), Ok(false));
    }

    #[test]
    fn verw_on_a_code_segment_clears_zf() {
        let mut cpu = cpu();
        assert_eq!(verw(&mut cpu, Selector(CODE0)), Ok(false));
        assert_eq!(verw(&mut cpu, Selector(CONFORMING0)), Ok(false));
    }

    #[test]
    fn verw_needs_writable_data_visible_at_the_cpl_and_rpl() {
        let mut cpu = cpu();
        assert_eq!(verw(&mut cpu, Selector(DATA0)), Ok(true));
        assert_eq!(verw(&mut cpu, Selector(READ_ONLY3)), Ok(false));
        assert_eq!(
            verw(&mut cpu, Selector(DATA0 | 2)),
            Ok(false),
            "RPL 2 > DPL 0"
        );
        cpu.sys.cpl = 3;
        assert_eq!(verw(&mut cpu, Selector(DATA3 | 3)), Ok(true));
        assert_eq!(verw(&mut cpu, Selector(DATA0 | 3)), Ok(false));
    }

    #[test]
    fn arpl_raises_a_lower_rpl_and_sets_zf() {
        assert_eq!(arpl(0x0010, 0x0023), (0x0013, true));
        assert_eq!(arpl(0x0013, 0x0021), (0x0013, false));
        assert_eq!(arpl(0x0012, 0x0002), (0x0012, false));
    }
}
