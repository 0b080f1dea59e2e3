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
use super::state::{Seg, SegmentRegister, SystemState};

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

/// An operand size (or a gate's size): what a far transfer pushes and pops
/// and how much of EIP it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperandSize {
    /// 16-bit: words on the stack, IP only.
    Bits16,
    /// 32-bit: doublewords on the stack, all of EIP.
    Bits32,
}

impl OperandSize {
    /// Bytes per stack slot (2 or 4).
    pub fn bytes(self) -> u32 {
        match self {
            OperandSize::Bits16 => 2,
            OperandSize::Bits32 => 4,
        }
    }

    /// `value` cut to the operand size (EIP AND 0000FFFFH for 16 bits).
    pub fn truncate(self, value: u32) -> u32 {
        match self {
            OperandSize::Bits16 => value & 0xffff,
            OperandSize::Bits32 => value,
        }
    }
}

/// The stack offset `delta` bytes above SS:(E)SP, wrapping at 64 KiB on a
/// 16-bit stack.
pub fn stack_offset(ctx: &(impl CpuContext + ?Sized), delta: u32) -> u32 {
    let sp = stack_pointer(ctx).wrapping_add(delta);
    if ctx.sys().stack32() {
        sp
    } else {
        sp & 0xffff
    }
}

/// Reads the `size` (2 or 4) bytes `depth` bytes above the stack pointer
/// without popping (the offset wraps at 64 KiB on a 16-bit stack), so an
/// instruction can check a whole frame before it changes anything (IRET,
/// RET far): #SS(0) past the limit, #PF.
pub fn read_stack(
    ctx: &mut (impl CpuContext + ?Sized),
    depth: u32,
    size: u32,
) -> Result<u32, Exception> {
    let at = stack_offset(ctx, depth);
    let mut b = [0u8; 4];
    seg_read(ctx, Seg::Ss, at, &mut b[..size as usize])?;
    Ok(u32::from_le_bytes(b))
}

/// The offset of push number `i` (0 = the first pushed) of `size` bytes
/// below `sp` on stack `ss` (SS.B decides whether the offset wraps at
/// 64 KiB).
fn slot_offset(ss: SegmentRegister, sp: u32, size: u32, i: u32) -> u32 {
    let at = sp.wrapping_sub((i + 1) * size);
    if ss.big() {
        at
    } else {
        at & 0xffff
    }
}

/// Pushes `values` in order (the first at the highest address), `size`
/// bytes each, below ESP `esp` on stack segment `ss` (which need not be
/// loaded yet: interrupt delivery and calls to an inner level push on the
/// new stack before loading it) with `privilege` (the new CPL's rights),
/// and returns the ESP after the last push (a 16-bit stack wraps SP and
/// keeps the top half of ESP). The registers are not touched: the caller
/// loads SS and ESP once everything else succeeded. Call [`check_frame`]
/// first. Slots are written in push order, so a page fault names the
/// first slot that cannot be written, as the processor's pushes would.
pub fn write_frame(
    ctx: &mut (impl CpuContext + ?Sized),
    ss: SegmentRegister,
    esp: u32,
    size: u32,
    values: &[u32],
    privilege: Privilege,
) -> Result<u32, Exception> {
    let mask = if ss.big() { u32::MAX } else { 0xffff };
    let sp = esp & mask;
    let mut low = sp;
    if values.len() > SHORT_FRAME {
        for (i, v) in values.iter().enumerate() {
            low = slot_offset(ss, sp, size, i as u32);
            let lin = ss.check(Seg::Ss, low, size, true)?;
            ctx.write_linear(lin, &v.to_le_bytes()[..size as usize], privilege)?;
        }
        return Ok((esp & !mask) | low);
    }
    let mut lins = [0u32; SHORT_FRAME];
    for (i, lin) in lins.iter_mut().enumerate().take(values.len()) {
        low = slot_offset(ss, sp, size, i as u32);
        *lin = ss.check(Seg::Ss, low, size, true)?;
    }
    let lins = &lins[..values.len()];
    if let Some(rest) = one_page_below_first_slot(lins, size) {
        // The first slot alone (a fault names it, as the first push would),
        // then the others in one piece of the same page.
        ctx.write_linear(
            lins[0],
            &values[0].to_le_bytes()[..size as usize],
            privilege,
        )?;
        let mut bytes = [0u8; 4 * SHORT_FRAME];
        let mut at = 0;
        for v in values[1..].iter().rev() {
            bytes[at..at + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
            at += size as usize;
        }
        ctx.write_linear(rest, &bytes[..at], privilege)?;
        return Ok((esp & !mask) | low);
    }
    for (lin, v) in lins.iter().zip(values) {
        ctx.write_linear(*lin, &v.to_le_bytes()[..size as usize], privilege)?;
    }
    Ok((esp & !mask) | low)
}

/// Frames of at most this many slots (an interrupt's six, PUSHA's eight)
/// are written in at most two accesses when they lie in one page.
const SHORT_FRAME: usize = 8;

/// The linear address of the lowest slot when every slot after the first
/// lies right below the one before it and all of them in the first slot's
/// page (a frame that neither wraps nor crosses a page: one access for
/// all but the first slot).
fn one_page_below_first_slot(lins: &[u32], size: u32) -> Option<u32> {
    let (&first, &last) = (lins.first()?, lins.last()?);
    let contiguous = lins.windows(2).all(|w| w[0].wrapping_sub(size) == w[1]);
    let same_page = last <= first && last >> 12 == first.wrapping_add(size - 1) >> 12;
    (lins.len() > 1 && contiguous && same_page).then_some(last)
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
