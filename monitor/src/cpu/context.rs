//! The one interface between the x86 system model and a vCPU backend:
//! register access, the system state, and guest-linear memory access with
//! the guest's paging. Everything in `cpu/` works on a `&mut impl
//! CpuContext` (or `dyn`), so it is unit-tested against [`super::testing`]
//! without a code cache, window or signal handler.
//!
//! Invariants every implementation keeps:
//! - `read_linear`/`write_linear` translate through the guest's page tables
//!   as the hardware would (setting A/D bits) and report a failed walk as
//!   [`Exception::PageFault`] with the SDM's error code; a failed write
//!   changes no guest memory;
//! - every write reaches guest RAM through whatever tracks guest frames
//!   (translated code, page tables), so no cached translation outlives the
//!   bytes it was made from.

use super::exception::Exception;
use super::flags::Eflags;
use super::state::{Seg, SystemState};

/// What an access does, for the page-fault error code and protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// Whose rights an access uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// The current privilege level's (user if CPL = 3).
    Current,
    /// Supervisor, whatever the CPL: the processor's implicit accesses to
    /// the GDT, LDT, IDT and TSS (SDM vol. 3, 4.6.1).
    Supervisor,
}

/// A general register, by encoding number (EAX..EDI).
pub type Gpr = usize;

/// EAX.
pub const EAX: Gpr = 0;
/// ECX.
pub const ECX: Gpr = 1;
/// EDX.
pub const EDX: Gpr = 2;
/// EBX.
pub const EBX: Gpr = 3;
/// ESP.
pub const ESP: Gpr = 4;
/// EBP.
pub const EBP: Gpr = 5;
/// ESI.
pub const ESI: Gpr = 6;
/// EDI.
pub const EDI: Gpr = 7;

/// The vCPU as the system model sees it.
pub trait CpuContext {
    /// General register `r` (EAX..EDI in encoding order).
    fn gpr(&self, r: Gpr) -> u32;
    /// Sets general register `r`.
    fn set_gpr(&mut self, r: Gpr, value: u32);
    /// EIP.
    fn eip(&self) -> u32;
    /// Sets EIP.
    fn set_eip(&mut self, value: u32);
    /// EFLAGS, as the guest would read it (IF included).
    fn eflags(&self) -> Eflags;
    /// Sets EFLAGS (IF included).
    fn set_eflags(&mut self, value: Eflags);
    /// The system state.
    fn sys(&self) -> &SystemState;
    /// The system state, to change it.
    fn sys_mut(&mut self) -> &mut SystemState;
    /// Reads guest linear memory.
    fn read_linear(
        &mut self,
        lin: u32,
        buf: &mut [u8],
        kind: AccessKind,
        privilege: Privilege,
    ) -> Result<(), Exception>;
    /// Writes guest linear memory (all or nothing).
    fn write_linear(
        &mut self,
        lin: u32,
        data: &[u8],
        privilege: Privilege,
    ) -> Result<(), Exception>;
    /// The guest's time-stamp counter before the MSR offset (the host's).
    fn host_tsc(&mut self) -> u64;
}

/// Reads `N` bytes of linear memory.
pub fn read_bytes<const N: usize>(
    ctx: &mut (impl CpuContext + ?Sized),
    lin: u32,
    privilege: Privilege,
) -> Result<[u8; N], Exception> {
    let mut b = [0u8; N];
    ctx.read_linear(lin, &mut b, AccessKind::Read, privilege)?;
    Ok(b)
}

/// Reads a little-endian u16 of linear memory.
pub fn read_u16(
    ctx: &mut (impl CpuContext + ?Sized),
    lin: u32,
    privilege: Privilege,
) -> Result<u16, Exception> {
    read_bytes::<2>(ctx, lin, privilege).map(u16::from_le_bytes)
}

/// Reads a little-endian u32 of linear memory.
pub fn read_u32(
    ctx: &mut (impl CpuContext + ?Sized),
    lin: u32,
    privilege: Privilege,
) -> Result<u32, Exception> {
    read_bytes::<4>(ctx, lin, privilege).map(u32::from_le_bytes)
}

/// Reads a little-endian u64 of linear memory.
pub fn read_u64(
    ctx: &mut (impl CpuContext + ?Sized),
    lin: u32,
    privilege: Privilege,
) -> Result<u64, Exception> {
    read_bytes::<8>(ctx, lin, privilege).map(u64::from_le_bytes)
}

/// Reads `buf.len()` bytes at `offset` through segment `seg` at the CPL,
/// with the segment's type and limit checks.
pub fn seg_read(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    offset: u32,
    buf: &mut [u8],
) -> Result<(), Exception> {
    let lin = ctx
        .sys()
        .segment(seg)
        .check(seg, offset, buf.len() as u32, false)?;
    ctx.read_linear(lin, buf, AccessKind::Read, Privilege::Current)
}

/// Writes `data` at `offset` through segment `seg` at the CPL, with the
/// segment's type and limit checks.
pub fn seg_write(
    ctx: &mut (impl CpuContext + ?Sized),
    seg: Seg,
    offset: u32,
    data: &[u8],
) -> Result<(), Exception> {
    let lin = ctx
        .sys()
        .segment(seg)
        .check(seg, offset, data.len() as u32, true)?;
    ctx.write_linear(lin, data, Privilege::Current)
}

/// The stack pointer as SS.B says it is used: all of ESP, or SP.
pub fn stack_pointer(ctx: &(impl CpuContext + ?Sized)) -> u32 {
    let esp = ctx.gpr(ESP);
    if ctx.sys().stack32() {
        esp
    } else {
        esp & 0xffff
    }
}

/// Sets the stack pointer as SS.B says (SP only leaves ESP's top half).
pub fn set_stack_pointer(ctx: &mut (impl CpuContext + ?Sized), sp: u32) {
    let value = if ctx.sys().stack32() {
        sp
    } else {
        (ctx.gpr(ESP) & 0xffff_0000) | (sp & 0xffff)
    };
    ctx.set_gpr(ESP, value);
}

/// Pushes the low `size` (2 or 4) bytes of `value` on SS:(E)SP.
pub fn push(ctx: &mut (impl CpuContext + ?Sized), value: u32, size: u32) -> Result<(), Exception> {
    let sp = stack_pointer(ctx).wrapping_sub(size);
    let sp = if ctx.sys().stack32() { sp } else { sp & 0xffff };
    seg_write(ctx, Seg::Ss, sp, &value.to_le_bytes()[..size as usize])?;
    set_stack_pointer(ctx, sp);
    Ok(())
}

/// Pops `size` (2 or 4) bytes from SS:(E)SP.
pub fn pop(ctx: &mut (impl CpuContext + ?Sized), size: u32) -> Result<u32, Exception> {
    let sp = stack_pointer(ctx);
    let mut b = [0u8; 4];
    seg_read(ctx, Seg::Ss, sp, &mut b[..size as usize])?;
    set_stack_pointer(ctx, sp.wrapping_add(size));
    Ok(u32::from_le_bytes(b))
}

/// Reads the `size` (2 or 4) bytes `depth` bytes above the stack pointer
/// without popping (the offset wraps at 64 KiB on a 16-bit stack), so an
/// instruction can check a whole frame before it changes anything (IRET,
/// RET far).
pub fn peek_stack(
    ctx: &mut (impl CpuContext + ?Sized),
    depth: u32,
    size: u32,
) -> Result<u32, Exception> {
    let sp = stack_pointer(ctx).wrapping_add(depth);
    let sp = if ctx.sys().stack32() { sp } else { sp & 0xffff };
    let mut b = [0u8; 4];
    seg_read(ctx, Seg::Ss, sp, &mut b[..size as usize])?;
    Ok(u32::from_le_bytes(b))
}

/// The stack pointer after pushing `count` items of `size` (2 or 4) bytes
/// on the stack `ss` (loaded or about to be) whose ESP is `esp`, if every
/// slot is inside the segment; a frame that does not fit is
/// #SS(`limit_error`). A 16-bit stack (SS.B clear) wraps SP and keeps the
/// top half of ESP.
pub fn check_frame(
    ss: super::state::SegmentRegister,
    esp: u32,
    count: u32,
    size: u32,
    limit_error: u32,
) -> Result<u32, Exception> {
    let mask = if ss.big() { u32::MAX } else { 0xffff };
    let mut sp = esp & mask;
    for _ in 0..count {
        sp = sp.wrapping_sub(size) & mask;
        ss.check(Seg::Ss, sp, size, true)
            .map_err(|_| Exception::StackFault(limit_error))?;
    }
    Ok((esp & !mask) | sp)
}

/// Pushes `values` (the first one first, at the highest address) as
/// `size`-byte items on the stack `ss`/`esp`, which need not be the loaded
/// SS (interrupt delivery and calls to an inner level push on the new
/// stack before loading it). Every slot is checked before any is written
/// ([`check_frame`]); returns the new ESP, to load with SS. Writes use
/// `privilege` (the new CPL's rights).
pub fn push_frame(
    ctx: &mut (impl CpuContext + ?Sized),
    ss: super::state::SegmentRegister,
    esp: u32,
    values: &[u32],
    size: u32,
    privilege: Privilege,
    limit_error: u32,
) -> Result<u32, Exception> {
    let new_esp = check_frame(ss, esp, values.len() as u32, size, limit_error)?;
    let mask = if ss.big() { u32::MAX } else { 0xffff };
    let mut sp = esp & mask;
    for value in values {
        sp = sp.wrapping_sub(size) & mask;
        let lin = ss.base.wrapping_add(sp);
        ctx.write_linear(lin, &value.to_le_bytes()[..size as usize], privilege)?;
    }
    Ok(new_esp)
}
