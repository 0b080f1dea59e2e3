//! The vCPU state block that translated code reads and writes through R14.
//!
//! Invariant: while translated code runs, guest EAX..EDI (except ESP) live in
//! the host registers of the same number, guest ESP in R8, and the arithmetic
//! flags and DF of the guest in host RFLAGS; the copies in `gpr`/`eflags`
//! are stale until an exit stores them back. Every field that emitted code
//! touches is addressed by a constant offset from this module.

use std::mem::offset_of;

/// Guest EFLAGS bits that live in host RFLAGS while translated code runs:
/// CF, PF, AF, ZF, SF, DF, OF.
pub const LIVE_FLAGS: u32 = 0x0cd5;
/// EFLAGS.IF.
pub const FLAG_IF: u32 = 0x200;
/// EFLAGS.TF.
pub const FLAG_TF: u32 = 0x100;
/// EFLAGS.DF.
pub const FLAG_DF: u32 = 0x400;

/// Why translated code returned to the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitReason {
    /// A direct branch whose target is not chained yet; `eip` is the target,
    /// `exit_site` the host address of the branch's rel32 field.
    ChainMiss = 1,
    /// An indirect branch whose target is not in the lookup table; `eip` is
    /// the target.
    IndirectMiss = 2,
    /// The instruction at `eip` must be carried out by the monitor.
    Emulate = 3,
    /// A host fault (SIGSEGV/SIGFPE/SIGILL/SIGBUS) in translated code; see
    /// the `fault_*` fields. `eip` is not yet known.
    Fault = 4,
    /// The run loop asked translated code to stop (interrupt window, signal):
    /// a translation's entry found the poll page armed. Registers were saved
    /// by the signal handler; `fault.rip` is the entry of the translation,
    /// none of whose guest instructions ran.
    Interrupted = 5,
    /// A check in translated code found that the instruction at `eip`
    /// must raise the exception in `raise_vector` with error code 0 (an
    /// access beyond a segment's limit or against its type: #GP(0), #SS(0)
    /// through SS). Nothing of the instruction was carried out.
    Raise = 6,
    /// The unit at `eip` starts with an instruction that runs into the
    /// next linear page, and the bytes found there are not the ones it was
    /// translated from (another address space maps another frame there,
    /// or the guest rewrote them): translate it again. Nothing ran.
    CodeChanged = 7,
    /// An adaptive instruction's software-TLB lookup (see
    /// `shadowmmu::SoftTlb`) found no entry for the access described by
    /// `soft_addr` and `soft_access`; `eip` is the instruction, nothing of
    /// which was carried out.
    SoftMiss = 8,
    /// A cross-page direct branch jumped through its view's chain table
    /// (see [`crate::translate::UnitRequest::chain_slots_from`]) to its own
    /// stub: its slot was not set for this view. `eip` is the target,
    /// `exit_site` the slot number; nothing of the target ran.
    ChainSlotMiss = 9,
    /// A ring-0 INVLPG of the linear address in `soft_addr` ran: the
    /// monitor drops what it holds of that page; `eip` is the next
    /// instruction.
    Invlpg = 10,
    /// A predicted guest `call` (a host `call` in translated code) ran
    /// off the bottom of the return-prediction stack (see
    /// [`crate::rstack`]): the guest call had pushed its return address
    /// (ESP four bytes lower) but not yet branched; `fault.rip` is the
    /// host `call`. Direct calls do not poll for exit requests (a cycle of
    /// units through calls alone deepens this stack at every turn), so the
    /// run loop stops before the call here and serves any request.
    CallOverflow = 11,
}

impl ExitReason {
    /// Decodes the raw value stored by emitted code.
    pub fn from_raw(v: u32) -> Option<ExitReason> {
        Some(match v {
            1 => ExitReason::ChainMiss,
            2 => ExitReason::IndirectMiss,
            3 => ExitReason::Emulate,
            4 => ExitReason::Fault,
            5 => ExitReason::Interrupted,
            6 => ExitReason::Raise,
            7 => ExitReason::CodeChanged,
            8 => ExitReason::SoftMiss,
            9 => ExitReason::ChainSlotMiss,
            10 => ExitReason::Invlpg,
            11 => ExitReason::CallOverflow,
            _ => return None,
        })
    }
}

/// `CpuState::soft_access`: the access writes.
pub const SOFT_ACCESS_WRITE: u32 = 0x1_0000;

/// The size bits of `CpuState::soft_access` (FXSAVE and FXRSTOR reach 512
/// bytes).
pub const SOFT_ACCESS_SIZE: u32 = 0xffff;

/// `CpuState::transition`: SYSENTER ran inline (CPL 0, CS and SS from
/// IA32_SYSENTER_CS, IF, VM and RF clear).
pub const TRANSITION_SYSENTER: u32 = 1;
/// `CpuState::transition`: SYSEXIT ran inline (CPL 3, CS and SS from
/// IA32_SYSENTER_CS + 16 and + 24 with RPL 3).
pub const TRANSITION_SYSEXIT: u32 = 2;

/// `CpuState::transition` values from this one on name an inline INT n or
/// IRET: the monitor's table of their outcomes, index `value - FIRST`.
pub const TRANSITION_EVENT_FIRST: u32 = 16;

/// `CpuState::iret_blockers`: NMIs are blocked (the IRET unblocks them).
pub const IRET_BLOCKED_NMI: u32 = 1;
/// What an inline IRET to ring 3 tests in the quadword at
/// `CpuState::iret_blockers` (as the sign-extended immediate of `test
/// qword`): NMIs blocked, or any byte of `seg_iret_blocks` set (bits 32-63;
/// bit 31 of `iret_blockers` is never set).
pub const IRET_BLOCKED_OUTER: i32 = 0x8000_0001_u32 as i32;

/// The byte of `CpuState::seg_iret_blocks` of segment register `s` (in
/// [`Seg`] order), for ES, DS, FS and GS.
pub fn seg_iret_block_index(s: usize) -> Option<usize> {
    const ES: usize = Seg::Es as usize;
    const DS: usize = Seg::Ds as usize;
    const FS: usize = Seg::Fs as usize;
    const GS: usize = Seg::Gs as usize;
    match s {
        ES => Some(0),
        DS => Some(1),
        FS => Some(2),
        GS => Some(3),
        _ => None,
    }
}

/// Guest segment registers in the order of the x86 encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Seg {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// The 512-byte FXSAVE image of the guest's x87/MMX/SSE state.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The state after reset: FCW 0x37F, MXCSR 0x1F80, everything else zero.
    pub fn reset() -> FxArea {
        let mut a = [0u8; 512];
        a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        a[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        FxArea(a)
    }
}

/// What a host fault in translated code looked like.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct HostFault {
    /// Signal number.
    pub signo: u64,
    /// Faulting data address (SIGSEGV/SIGBUS).
    pub addr: u64,
    /// Host instruction pointer of the faulting instruction.
    pub rip: u64,
    /// Page-fault error code (bit 1: write).
    pub err: u64,
    /// si_code of the signal.
    pub code: u64,
    /// The host exception vector (`REG_TRAPNO`: 0 #DE, 6 #UD, 13 #GP,
    /// 14 #PF, 16 #MF, 17 #AC, 19 #XM).
    pub trapno: u64,
}

/// The state block shared between the run loop and translated code.
#[repr(C, align(64))]
pub struct CpuState {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    pub gpr: [u32; 8],
    /// Guest EIP at an exit.
    pub eip: u32,
    /// Guest EFLAGS (the `LIVE_FLAGS` part is in host RFLAGS while running).
    pub eflags: u32,
    /// Raw [`ExitReason`].
    pub exit_reason: u32,
    /// Virtual interrupt flag (1 = enabled), written inline by CLI/STI.
    pub vif: u32,
    /// 1 when `shadow_eip` is the instruction in an interrupt shadow (the
    /// one after an STI that set IF, or after MOV SS/POP SS): no external
    /// interrupt before it completes. Written inline by STI.
    pub shadow: u32,
    /// The EIP of the instruction in the interrupt shadow.
    pub shadow_eip: u32,
    /// The token of the instruction an `Emulate` exit hands to the monitor
    /// (see `translate::Unit::emulated`).
    pub emulate_token: u32,
    /// 1 while the monitor waits for an interrupt window: inline STI and
    /// POPF that set IF exit to the monitor instead (translated code only
    /// runs with this set while IF = 0).
    pub window_wanted: u32,
    /// Host RSP at entry, restored by every exit path.
    pub host_rsp: u64,
    /// The host RSP of an empty return-prediction stack (see
    /// `crate::rstack`): the sentinel's slot. 0: no such stack; translated
    /// code then keeps the monitor's stack and predicts no returns.
    pub rsb_top: u64,
    /// Host address of guest linear 0 (loaded into R15).
    pub window: u64,
    /// Host address of the indirect-branch table (see [`crate::ibtc`]);
    /// an exit request swaps in an empty table (see `runtime`), so it is
    /// atomic.
    pub ibtc: std::sync::atomic::AtomicU64,
    /// Host address of the indirect-branch table of the tags in
    /// `UnitRequest::shared_ibtc_tags` (a table shared by every address
    /// space); swapped with `ibtc` by an exit request.
    pub ibtc_shared: std::sync::atomic::AtomicU64,
    /// Host address of the rel32 field of the branch that exited.
    pub exit_site: u64,
    /// Host RFLAGS at the exit.
    pub host_flags: u64,
    /// Host MXCSR at entry.
    pub host_mxcsr: u32,
    /// 1: the next entry restores the whole of `fx` (the monitor changed
    /// it, or another state block's x87 registers are in the FPU).
    pub fx_load: u32,
    /// Details of a host fault.
    pub fault: HostFault,
    /// Segment bases, by [`Seg`].
    pub seg_base: [u32; 6],
    /// Segment selectors, by [`Seg`].
    pub seg_sel: [u16; 6],
    /// The offsets each segment allows, by [`Seg`], for the checks of
    /// segments the mode names in [`crate::translate::Mode::limited`]:
    /// `[read_first, read_last, write_first, write_last]`; an access of
    /// `n` bytes at offset `o` is allowed when `first <= o` and
    /// `o + n - 1 <= last` (an empty range is `[1, 0]`).
    pub seg_ranges: [[u64; 4]; 6],
    /// The vector of a `Raise` exit.
    pub raise_vector: u32,
    /// The linear address of a `SoftMiss` exit's access.
    pub soft_addr: u32,
    /// A `SoftMiss` exit's access: its size in bytes ([`SOFT_ACCESS_SIZE`]), plus
    /// [`SOFT_ACCESS_WRITE`] for a write (or a read-modify-write).
    pub soft_access: u32,
    /// The last privilege change translated code made itself since the
    /// last exit ([`TRANSITION_SYSENTER`], [`TRANSITION_SYSEXIT`], 0 for
    /// none): the monitor applies it to its system state first thing at
    /// the next exit. Each transition's effect on the system state is
    /// absolute, so the last one is all that needs applying.
    pub transition: u32,
    /// The translation mode of a chain exit's target when it differs from
    /// the exiting unit's (after an inline privilege change); `u32::MAX`
    /// otherwise. The monitor resets it after reading it.
    pub chain_mode: u32,
    /// Host bases of the supervisor view (0) and the user view (1) of the
    /// guest's address space; an inline privilege change loads one into
    /// R15 and `window`.
    pub view_bases: [u64; 2],
    /// Values an inline INT n or IRET read before its checks (see
    /// `translate::InlineEvent`): they are compared only once every read
    /// that can fault is done.
    pub spill: [u64; 6],
    /// Changes whenever the GDTR, the IDTR, the LDTR or TR changes (the
    /// monitor counts): an inline INT n or IRET made for one value of it
    /// leaves to the monitor under another.
    pub tables_gen: u32,
    /// Why an inline IRET must leave to the monitor now, kept by the run
    /// loop before every entry: [`IRET_BLOCKED_NMI`] (bit 31 is never
    /// set: see [`IRET_BLOCKED_OUTER`]).
    pub iret_blockers: u32,
    /// Right after `iret_blockers`: per data segment register (ES, DS, FS,
    /// GS, see [`seg_iret_block_index`]), 1 when a return to ring 3 would
    /// make it null (its DPL is below 3), which an inline IRET to ring 3
    /// leaves to the monitor. Kept with the other segment mirrors by the
    /// run loop and by inline segment loads.
    pub seg_iret_blocks: [u8; 4],
    /// 1: the exit comes from an inline INT n, IRET or exception delivery
    /// whose checks failed (the monitor resets it).
    pub event_bail: u32,
    /// 1: the guest's x87/MMX registers in the host FPU are newer than
    /// `fx` (see [`CpuState::fx`]).
    pub fx_live: u32,
    /// CR0, CR1 (unused: reading it is #UD), CR2, CR3 and CR4 as MOV from
    /// a control register reads them, copied in before every entry (no
    /// translated code writes a control register: every write exits), so
    /// that ring-0 code reads them inline (a kernel's page-fault handler
    /// reads CR2 every time).
    pub cr: [u32; 5],
    /// Per segment register (0 = ES .. 5 = GS): 1 when translated code
    /// loaded it since the last entry (see
    /// `translate::InlineSegmentLoad`); the monitor applies the load to
    /// its system state (selector `seg_sel`, descriptor `seg_desc`) and
    /// clears the mark.
    pub seg_loaded: [u8; 6],
    /// The descriptor of each segment register translated code loaded
    /// (0 for a null selector).
    pub seg_desc: [u64; 6],
    /// Guest x87/MMX/SSE state while not running: XMM0-7 and MXCSR are
    /// stored by every exit; the x87/MMX part stays in the host FPU (the
    /// monitor never uses x87) until [`CpuState::fx`] or
    /// [`CpuState::fx_mut`] copies it here.
    fx: FxArea,
}

impl CpuState {
    /// The guest's FXSAVE image, brought up to date.
    pub fn fx(&mut self) -> &[u8; 512] {
        crate::runtime::sync_fpu(self);
        &self.fx.0
    }

    /// The guest's FXSAVE image, brought up to date, for changing: the next
    /// entry loads all of it.
    pub fn fx_mut(&mut self) -> &mut [u8; 512] {
        crate::runtime::sync_fpu(self);
        self.fx_load = 1;
        &mut self.fx.0
    }

    /// Only for the runtime: the image as it is.
    pub(crate) fn fx_raw(&mut self) -> &mut [u8; 512] {
        &mut self.fx.0
    }
}

impl Drop for CpuState {
    fn drop(&mut self) {
        crate::runtime::forget_fpu_owner(self);
    }
}

impl Default for CpuState {
    fn default() -> Self {
        CpuState {
            gpr: [0; 8],
            eip: 0,
            eflags: 2,
            exit_reason: 0,
            vif: 0,
            shadow: 0,
            shadow_eip: 0,
            emulate_token: u32::MAX,
            window_wanted: 0,
            host_rsp: 0,
            rsb_top: 0,
            window: 0,
            ibtc: std::sync::atomic::AtomicU64::new(0),
            ibtc_shared: std::sync::atomic::AtomicU64::new(0),
            exit_site: 0,
            host_flags: 0,
            host_mxcsr: 0,
            fx_load: 1,
            fault: HostFault::default(),
            seg_base: [0; 6],
            seg_sel: [0; 6],
            seg_ranges: [[0, u64::from(u32::MAX), 0, u64::from(u32::MAX)]; 6],
            raise_vector: 0,
            soft_addr: 0,
            soft_access: 0,
            transition: 0,
            chain_mode: u32::MAX,
            view_bases: [0; 2],
            spill: [0; 6],
            tables_gen: 0,
            iret_blockers: 0,
            seg_iret_blocks: [0; 4],
            event_bail: 0,
            fx_live: 0,
            cr: [0; 5],
            seg_loaded: [0; 6],
            seg_desc: [0; 6],
            fx: FxArea::reset(),
        }
    }
}

impl CpuState {
    /// Guest EFLAGS as the guest would read it.
    pub fn guest_eflags(&self) -> u32 {
        (self.eflags & !FLAG_IF) | if self.vif != 0 { FLAG_IF } else { 0 } | 2
    }
}

/// Byte offsets used by emitted code.
pub mod off {
    use super::*;
    /// `gpr[i]` is at `GPR + 4 * i`.
    pub const GPR: i32 = offset_of!(CpuState, gpr) as i32;
    /// `eip`.
    pub const EIP: i32 = offset_of!(CpuState, eip) as i32;
    /// `eflags`.
    pub const EFLAGS: i32 = offset_of!(CpuState, eflags) as i32;
    /// `exit_reason`.
    pub const EXIT_REASON: i32 = offset_of!(CpuState, exit_reason) as i32;
    /// `vif`.
    pub const VIF: i32 = offset_of!(CpuState, vif) as i32;
    /// `shadow`.
    pub const SHADOW: i32 = offset_of!(CpuState, shadow) as i32;
    /// `shadow_eip`.
    pub const SHADOW_EIP: i32 = offset_of!(CpuState, shadow_eip) as i32;
    /// `emulate_token`.
    pub const EMULATE_TOKEN: i32 = offset_of!(CpuState, emulate_token) as i32;
    /// `window_wanted`.
    pub const WINDOW_WANTED: i32 = offset_of!(CpuState, window_wanted) as i32;
    /// `host_rsp`.
    pub const HOST_RSP: i32 = offset_of!(CpuState, host_rsp) as i32;
    /// `rsb_top`.
    pub const RSB_TOP: i32 = offset_of!(CpuState, rsb_top) as i32;
    /// `window`.
    pub const WINDOW: i32 = offset_of!(CpuState, window) as i32;
    /// `ibtc`.
    pub const IBTC: i32 = offset_of!(CpuState, ibtc) as i32;
    /// `ibtc_shared`.
    pub const IBTC_SHARED: i32 = offset_of!(CpuState, ibtc_shared) as i32;
    /// `exit_site`.
    pub const EXIT_SITE: i32 = offset_of!(CpuState, exit_site) as i32;
    /// `host_flags`.
    pub const HOST_FLAGS: i32 = offset_of!(CpuState, host_flags) as i32;
    /// `host_mxcsr`.
    pub const HOST_MXCSR: i32 = offset_of!(CpuState, host_mxcsr) as i32;
    /// `fx_load`.
    pub const FX_LOAD: i32 = offset_of!(CpuState, fx_load) as i32;
    /// `seg_base[i]` is at `SEG_BASE + 4 * i`.
    pub const SEG_BASE: i32 = offset_of!(CpuState, seg_base) as i32;
    /// `seg_sel[i]` is at `SEG_SEL + 2 * i`.
    pub const SEG_SEL: i32 = offset_of!(CpuState, seg_sel) as i32;
    /// `seg_ranges[s][k]` is at `SEG_RANGES + 32 * s + 8 * k`.
    pub const SEG_RANGES: i32 = offset_of!(CpuState, seg_ranges) as i32;
    /// `raise_vector`.
    pub const RAISE_VECTOR: i32 = offset_of!(CpuState, raise_vector) as i32;
    /// `soft_addr`.
    pub const SOFT_ADDR: i32 = offset_of!(CpuState, soft_addr) as i32;
    /// `soft_access`.
    pub const SOFT_ACCESS: i32 = offset_of!(CpuState, soft_access) as i32;
    /// `transition`.
    pub const TRANSITION: i32 = offset_of!(CpuState, transition) as i32;
    /// `chain_mode`.
    pub const CHAIN_MODE: i32 = offset_of!(CpuState, chain_mode) as i32;
    /// `view_bases[v]` is at `VIEW_BASES + 8 * v`.
    pub const VIEW_BASES: i32 = offset_of!(CpuState, view_bases) as i32;
    /// `spill[k]` is at `SPILL + 8 * k`.
    pub const SPILL: i32 = offset_of!(CpuState, spill) as i32;
    /// `tables_gen`.
    pub const TABLES_GEN: i32 = offset_of!(CpuState, tables_gen) as i32;
    /// `iret_blockers`.
    pub const IRET_BLOCKERS: i32 = offset_of!(CpuState, iret_blockers) as i32;
    /// `seg_iret_blocks[k]` is at `SEG_IRET_BLOCKS + k` (ES, DS, FS, GS).
    pub const SEG_IRET_BLOCKS: i32 = offset_of!(CpuState, seg_iret_blocks) as i32;
    const _: () = assert!(SEG_IRET_BLOCKS == IRET_BLOCKERS + 4, "one quadword");
    /// `event_bail`.
    pub const EVENT_BAIL: i32 = offset_of!(CpuState, event_bail) as i32;
    /// `fx`.
    pub const FX: i32 = offset_of!(CpuState, fx) as i32;
    /// `seg_loaded[s]` is at `SEG_LOADED + s`.
    pub const SEG_LOADED: i32 = offset_of!(CpuState, seg_loaded) as i32;
    /// `seg_desc[s]` is at `SEG_DESC + 8 * s`.
    pub const SEG_DESC: i32 = offset_of!(CpuState, seg_desc) as i32;
    /// `cr[n]` is at `CR + 4 * n`.
    pub const CR: i32 = offset_of!(CpuState, cr) as i32;
}
