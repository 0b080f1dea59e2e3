//! Descriptor-table access and segment-register loads with every check the
//! SDM lists (vol. 2, MOV/POP/LDS; vol. 3, 5.4-5.6).
//!
//! Descriptor tables are read and written with supervisor rights whatever
//! the CPL (implicit system accesses). A load that fails changes nothing.

use super::context::{read_u64, CpuContext, Privilege};
use super::descriptor::{Descriptor, Selector};
use super::exception::{selector_error, Exception};
use super::state::{Seg, SegmentRegister};

/// Which exception a failed check raises (#GP for instructions, #TS during
/// a task switch), as a function of the error code.
pub type CheckFault = fn(u32) -> Exception;

/// #GP with the given error code.
pub fn gp(error: u32) -> Exception {
    Exception::GeneralProtection(error)
}

/// #TS with the given error code.
pub fn ts(error: u32) -> Exception {
    Exception::InvalidTss(error)
}

/// The linear address of `selector`'s descriptor, if the GDT or LDT limit
/// covers all 8 bytes of it.
pub fn descriptor_address(ctx: &(impl CpuContext + ?Sized), selector: Selector) -> Option<u32> {
    let sys = ctx.sys();
    let (base, limit) = if selector.in_ldt() {
        if !sys.ldtr.usable() {
            return None;
        }
        (sys.ldtr.base, sys.ldtr.limit)
    } else {
        (sys.gdtr.base, u32::from(sys.gdtr.limit))
    };
    let offset = selector.offset();
    (offset + 7 <= limit).then(|| base.wrapping_add(offset))
}

/// Reads `selector`'s descriptor; a selector outside its table raises
/// `fault(selector)`.
pub fn read_descriptor(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    fault: CheckFault,
) -> Result<Descriptor, Exception> {
    let at = descriptor_address(ctx, selector).ok_or(fault(selector_error(selector.0)))?;
    read_u64(ctx, at, Privilege::Supervisor).map(Descriptor)
}

/// Writes `selector`'s descriptor back (accessed and busy bits).
pub fn write_descriptor(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    d: Descriptor,
    fault: CheckFault,
) -> Result<(), Exception> {
    let at = descriptor_address(ctx, selector).ok_or(fault(selector_error(selector.0)))?;
    ctx.write_linear(at, &d.0.to_le_bytes(), Privilege::Supervisor)
}

/// Sets the accessed bit of a code/data descriptor if it is clear, as a
/// segment load does; returns the descriptor as loaded.
pub fn mark_accessed(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    d: Descriptor,
    fault: CheckFault,
) -> Result<Descriptor, Exception> {
    let accessed = d.with_accessed();
    if accessed != d {
        write_descriptor(ctx, selector, accessed, fault)?;
    }
    Ok(accessed)
}

/// The descriptor DS, ES, FS or GS may be loaded with from `selector` at
/// the current CPL (`None` for a null selector), after every check.
pub fn check_data_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    fault: CheckFault,
) -> Result<Option<Descriptor>, Exception> {
    if selector.is_null() {
        return Ok(None);
    }
    let error = selector_error(selector.0);
    let d = read_descriptor(ctx, selector, fault)?;
    if !d.readable() {
        return Err(fault(error));
    }
    let cpl = ctx.sys().cpl;
    if (d.is_data() || !d.conforming()) && (selector.rpl() > d.dpl() || cpl > d.dpl()) {
        return Err(fault(error));
    }
    if !d.present() {
        return Err(Exception::SegmentNotPresent(error));
    }
    Ok(Some(d))
}

/// The descriptor SS may be loaded with from `selector` at privilege
/// level `cpl`, after every check.
pub fn check_stack_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    cpl: u8,
    fault: CheckFault,
) -> Result<Descriptor, Exception> {
    if selector.is_null() {
        return Err(fault(0));
    }
    let error = selector_error(selector.0);
    let d = read_descriptor(ctx, selector, fault)?;
    if selector.rpl() != cpl || !d.writable() || d.dpl() != cpl {
        return Err(fault(error));
    }
    if !d.present() {
        return Err(Exception::StackFault(error));
    }
    Ok(d)
}

/// MOV/POP/LDS-family load of DS, ES, FS or GS.
pub fn load_data_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    selector: Selector,
) -> Result<(), Exception> {
    debug_assert!(!matches!(seg, Seg::Cs | Seg::Ss));
    let reg = match check_data_segment(ctx, selector, gp)? {
        None => SegmentRegister::null(selector),
        Some(d) => SegmentRegister::loaded(selector, mark_accessed(ctx, selector, d, gp)?),
    };
    ctx.sys_mut().seg[seg as usize] = reg;
    Ok(())
}

/// MOV/POP/LSS load of SS.
pub fn load_stack_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
) -> Result<(), Exception> {
    let cpl = ctx.sys().cpl;
    let d = check_stack_segment(ctx, selector, cpl, gp)?;
    let d = mark_accessed(ctx, selector, d, gp)?;
    ctx.sys_mut().seg[Seg::Ss as usize] = SegmentRegister::loaded(selector, d);
    Ok(())
}

/// A segment load as MOV Sreg, POP Sreg and LDS/LES/LFS/LGS/LSS do it.
/// CS cannot be loaded this way (#UD, decided by the caller).
pub fn load_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    selector: Selector,
) -> Result<(), Exception> {
    if seg == Seg::Ss {
        load_stack_segment(ctx, selector)
    } else {
        load_data_segment(ctx, seg, selector)
    }
}

/// After a return or IRET to an outer privilege level: DS, ES, FS and GS
/// whose DPL is below the new CPL (data or non-conforming code) become
/// null, so the outer level cannot use them (SDM vol. 2, RET and IRET).
pub fn invalidate_inner_segments(ctx: &mut (impl CpuContext + ?Sized)) {
    let cpl = ctx.sys().cpl;
    for seg in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
        if ctx.sys().segment(seg).nulled_by_return_to(cpl) {
            ctx.sys_mut().seg[seg as usize] = SegmentRegister::null(Selector(0));
        }
    }
}

/// The descriptor of the code segment an interrupt, trap or call gate
/// names, after the checks the gate's target gets (SDM vol. 2, INT n and
/// CALL): a null selector is #GP(0); outside its table, not a code segment
/// or DPL above the CPL, #GP(selector); not present, #NP(selector). The
/// caller adds EXT to the error code where it applies.
pub fn check_gate_target(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
) -> Result<Descriptor, Exception> {
    if selector.is_null() {
        return Err(gp(0));
    }
    let error = selector_error(selector.0);
    let d = read_descriptor(ctx, selector, gp)?;
    if !d.is_code() || d.dpl() > ctx.sys().cpl {
        return Err(gp(error));
    }
    if !d.present() {
        return Err(Exception::SegmentNotPresent(error));
    }
    Ok(d)
}

/// The descriptor CS may be loaded with from `selector` by a return (RET
/// far, IRET) or a task switch, which run at privilege level
/// `selector.rpl()` afterwards (SDM vol. 2, IRET and RET; vol. 3, 7.3):
/// a null selector is `fault(0)`; outside its table, not a code segment,
/// RPL below the CPL, a conforming segment with DPL above the RPL or a
/// non-conforming one with DPL other than the RPL, `fault(selector)`; not
/// present, #NP(selector).
pub fn check_return_code_segment(
    ctx: &mut (impl CpuContext + ?Sized),
    selector: Selector,
    fault: CheckFault,
) -> Result<Descriptor, Exception> {
    if selector.is_null() {
        return Err(fault(0));
    }
    let error = selector_error(selector.0);
    let d = read_descriptor(ctx, selector, fault)?;
    let rpl = selector.rpl();
    let privilege_fits = if d.conforming() {
        d.dpl() <= rpl
    } else {
        d.dpl() == rpl
    };
    if !d.is_code() || rpl < ctx.sys().cpl || !privilege_fits {
        return Err(fault(error));
    }
    if !d.present() {
        return Err(Exception::SegmentNotPresent(error));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{segment_descriptor, TestCpu};
    use super::*;

    /// GDT: 1 flat code 0, 2 flat data 0, 3 data DPL 3, 4 not-present data,
    /// 5 execute-only code, 6 read-only data, 7 flat data DPL 3 writable.
    fn cpu() -> TestCpu {
        let mut cpu = TestCpu::new();
        cpu.set_gdt(1, segment_descriptor(0, 0xfffff, 0x9a, 0xc));
        cpu.set_gdt(2, segment_descriptor(0, 0xfffff, 0x92, 0xc));
        cpu.set_gdt(3, segment_descriptor(0x1000, 0xfff, 0xf2, 0x4));
        cpu.set_gdt(4, segment_descriptor(0, 0xfffff, 0x12, 0xc));
        cpu.set_gdt(5, segment_descriptor(0, 0xfffff, 0x98, 0xc));
        cpu.set_gdt(6, segment_descriptor(0, 0xfffff, 0x90, 0xc));
        cpu.set_gdt(7, segment_descriptor(0, 0xfffff, 0xf2, 0xc));
        cpu
    }

    #[test]
    fn data_segment_load_fills_the_cache_and_sets_accessed() {
        let mut cpu = cpu();
        load_segment(&mut cpu, Seg::Ds, Selector(0x18)).unwrap();
        let ds = cpu.sys.segment(Seg::Ds);
        assert_eq!(
            (ds.base, ds.limit, ds.selector),
            (0x1000, 0xfff, Selector(0x18))
        );
        assert!(
            cpu.gdt(3).type_field() & 1 == 1,
            "accessed bit set in the GDT"
        );
    }

    #[test]
    fn null_selector_makes_a_data_segment_unusable_but_not_ss() {
        let mut cpu = cpu();
        load_segment(&mut cpu, Seg::Es, Selector(3)).unwrap();
        assert!(!cpu.sys.segment(Seg::Es).usable());
        assert_eq!(
            load_segment(&mut cpu, Seg::Ss, Selector(0)),
            Err(Exception::GeneralProtection(0))
        );
    }

    #[test]
    fn selector_past_the_gdt_limit_is_gp_with_the_selector() {
        let mut cpu = cpu();
        assert_eq!(
            load_segment(&mut cpu, Seg::Ds, Selector(0x100)),
            Err(Exception::GeneralProtection(0x100))
        );
    }

    #[test]
    fn not_present_data_segment_is_np_and_not_present_stack_is_ss() {
        let mut cpu = cpu();
        assert_eq!(
            load_segment(&mut cpu, Seg::Fs, Selector(0x20)),
            Err(Exception::SegmentNotPresent(0x20))
        );
        cpu.set_gdt(4, segment_descriptor(0, 0xfffff, 0x12, 0xc));
        assert_eq!(
            load_segment(&mut cpu, Seg::Ss, Selector(0x20)),
            Err(Exception::StackFault(0x20))
        );
    }

    #[test]
    fn execute_only_code_cannot_be_a_data_segment_and_read_only_data_cannot_be_ss() {
        let mut cpu = cpu();
        assert_eq!(
            load_segment(&mut cpu, Seg::Ds, Selector(0x28)),
            Err(Exception::GeneralProtection(0x28))
        );
        assert_eq!(
            load_segment(&mut cpu, Seg::Ss, Selector(0x30)),
            Err(Exception::GeneralProtection(0x30))
        );
        assert!(
            load_segment(&mut cpu, Seg::Ds, Selector(0x08)).is_ok(),
            "readable code"
        );
    }

    #[test]
    fn privilege_checks_use_cpl_rpl_and_dpl() {
        let mut cpu = cpu();
        cpu.sys.cpl = 3;
        assert_eq!(
            load_segment(&mut cpu, Seg::Ds, Selector(0x13)),
            Err(Exception::GeneralProtection(0x10)),
            "DPL 0 data from CPL 3"
        );
        assert!(load_segment(&mut cpu, Seg::Ds, Selector(0x3b)).is_ok());
        assert_eq!(
            load_segment(&mut cpu, Seg::Ss, Selector(0x38)),
            Err(Exception::GeneralProtection(0x38)),
            "RPL 0 != CPL 3 for SS"
        );
        assert!(load_segment(&mut cpu, Seg::Ss, Selector(0x3b)).is_ok());
    }

    #[test]
    fn ldt_selector_without_an_ldt_is_gp() {
        let mut cpu = cpu();
        assert_eq!(
            load_segment(&mut cpu, Seg::Gs, Selector(0x0f)),
            Err(Exception::GeneralProtection(0x0c)),
            "the error code keeps TI, drops RPL"
        );
    }

    #[test]
    fn returning_outward_nulls_inner_data_segments() {
        let mut cpu = cpu();
        load_segment(&mut cpu, Seg::Ds, Selector(0x10)).unwrap();
        cpu.sys.cpl = 3;
        load_segment(&mut cpu, Seg::Es, Selector(0x3b)).unwrap();
        invalidate_inner_segments(&mut cpu);
        assert!(!cpu.sys.segment(Seg::Ds).usable());
        assert!(cpu.sys.segment(Seg::Es).usable());
    }
}
