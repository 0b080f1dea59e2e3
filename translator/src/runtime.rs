//! The permanent runtime stubs in the code cache (enter, the common exit,
//! the post-fault exit), the host signal handler that turns faults in
//! translated code into exits, and the call that enters translated code.
//!
//! Invariants:
//! - `enter` saves every host callee-saved register and the host RSP in the
//!   state block before loading guest state, and switches RSP to the empty
//!   return-prediction stack (`CpuState::rsb_top`, when there is one, see
//!   `crate::rstack`); every exit path (`exit_common`, `exit_saved`)
//!   restores them from there, so translated code may leave either stack
//!   in any state.
//! - Every handler runs with `SA_ONSTACK`: a thread that runs translated
//!   code has an alternate signal stack ([`ensure_signal_stack`]), since
//!   the return-prediction stack has no room below its guard. A fault on
//!   that guard restarts the stack from its top and resumes the faulting
//!   call (or a unit's first push) itself.
//! - Host DF is clear and host MXCSR is the monitor's again after every
//!   exit. Every exit stores the guest's XMM0-7 and MXCSR in the state
//!   block (the monitor's code may use XMM registers); the guest's x87/MMX
//!   registers stay in the host FPU, which the monitor never uses, until
//!   [`sync_fpu`] copies them out. Per thread, one state block owns the
//!   FPU's x87 registers ([`enter`] hands them over); an entry restores
//!   the whole image only when the owner changed or the monitor changed
//!   the image (`CpuState::fx_load`). An exit costs eight 16-byte stores
//!   and two MXCSR moves instead of FXSAVE, FNINIT and FXRSTOR.
//! - The signal handler acts only on faults whose RIP lies in a registered
//!   code cache; any other fault is re-raised with the default action.
//! - An exit request makes translated code leave at its next cycle of
//!   units: it makes the cache's poll page (the first page, see
//!   `codecache`) inaccessible, which every direct backward branch loads
//!   from, and it points the vCPU's indirect-branch table at an empty one
//!   (`CpuState::ibtc`, reloaded by every indirect branch), so every
//!   indirect branch misses. A poll fault becomes an `Interrupted` exit at
//!   the branch, before it is taken; an indirect miss exits with the
//!   target. [`FaultRegistration::request_exit`] and [`request_exit_all`]
//!   only call `mprotect` and store to atomics: async-signal-safe.

use crate::state::{off, CpuState};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use std::sync::atomic::{AtomicU64, Ordering};

/// Addresses of the runtime stubs.
#[derive(Clone, Copy, Debug)]
pub struct Stubs {
    /// `extern "sysv64" fn(state: *mut CpuState, code: u64)`.
    pub enter: u64,
    /// Saves guest registers and flags, then returns to the run loop.
    pub exit_common: u64,
    /// Returns to the run loop when registers were saved by the signal
    /// handler.
    pub exit_saved: u64,
    /// The poll word every translation loads on entry (the first byte of the
    /// code cache's poll page).
    pub poll: u64,
    /// The return-prediction stack's sentinel (see `crate::rstack`): a
    /// host `ret` that finds no return address of its own lands here,
    /// which puts the sentinel back and jumps to R10, the `ret`'s own
    /// indirect-branch lookup.
    pub return_sentinel: u64,
}

fn r(e: IcedError) -> crate::TranslateError {
    crate::TranslateError::Encode(e.to_string())
}

/// Assembles the stubs for execution at host address `rip`: the
/// addresses of enter, the common exit, the saved exit and the
/// return-prediction sentinel.
pub fn assemble_stubs(rip: u64) -> Result<(Vec<u8>, [u64; 4]), crate::TranslateError> {
    let mut a = CodeAssembler::new(64).map_err(r)?;
    let mut exit_common = a.create_label();
    let mut exit_saved = a.create_label();
    let mut enter = a.create_label();
    let mut sentinel = a.create_label();
    emit_enter(&mut a, &mut enter).map_err(r)?;
    emit_exits(&mut a, &mut exit_common, &mut exit_saved).map_err(r)?;
    emit_sentinel(&mut a, &mut sentinel).map_err(r)?;
    let res = a
        .assemble_options(rip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .map_err(r)?;
    let addrs = [
        res.label_ip(&enter).map_err(r)?,
        res.label_ip(&exit_common).map_err(r)?,
        res.label_ip(&exit_saved).map_err(r)?,
        res.label_ip(&sentinel).map_err(r)?,
    ];
    Ok((res.inner.code_buffer, addrs))
}

const GUEST_GPRS: [AsmRegister32; 8] = [eax, ecx, edx, ebx, r8d, ebp, esi, edi];

/// Offset of MXCSR in the FXSAVE image.
const FX_MXCSR: i32 = 24;
/// Offset of XMM0 in the FXSAVE image.
const FX_XMM0: i32 = 160;
const GUEST_XMMS: [AsmRegisterXmm; 8] = [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7];

fn emit_enter(a: &mut CodeAssembler, enter: &mut CodeLabel) -> Result<(), IcedError> {
    let mut sse_only = a.create_label();
    let mut loaded = a.create_label();
    a.set_label(enter)?;
    for reg in [rbx, rbp, r12, r13, r14, r15] {
        a.push(reg)?;
    }
    a.sub(rsp, 8)?;
    a.mov(r14, rdi)?;
    a.mov(qword_ptr(r14 + off::HOST_RSP), rsp)?;
    // Translated code runs on the empty return-prediction stack, when
    // there is one (see crate::rstack).
    a.mov(rax, qword_ptr(r14 + off::RSB_TOP))?;
    a.test(rax, rax)?;
    a.cmovne(rsp, rax)?;
    a.stmxcsr(dword_ptr(r14 + off::HOST_MXCSR))?;
    a.cmp(dword_ptr(r14 + off::FX_LOAD), 0)?;
    a.je(sse_only)?;
    a.fxrstor64(ptr(r14 + off::FX))?;
    a.mov(dword_ptr(r14 + off::FX_LOAD), 0)?;
    a.jmp(loaded)?;
    a.set_label(&mut sse_only)?;
    for (i, reg) in GUEST_XMMS.iter().enumerate() {
        a.movaps(*reg, xmmword_ptr(r14 + (off::FX + FX_XMM0 + 16 * i as i32)))?;
    }
    a.ldmxcsr(dword_ptr(r14 + (off::FX + FX_MXCSR)))?;
    a.set_label(&mut loaded)?;
    a.mov(r15, qword_ptr(r14 + off::WINDOW))?;
    a.mov(r9, rsi)?;
    a.mov(eax, dword_ptr(r14 + off::EFLAGS))?;
    a.and(eax, crate::state::LIVE_FLAGS as i32)?;
    a.or(eax, 2)?;
    a.push(rax)?;
    a.popfq()?;
    for (i, reg) in GUEST_GPRS.iter().enumerate() {
        a.mov(*reg, dword_ptr(r14 + (off::GPR + 4 * i as i32)))?;
    }
    a.jmp(r9)
}

fn emit_exits(
    a: &mut CodeAssembler,
    common: &mut CodeLabel,
    saved: &mut CodeLabel,
) -> Result<(), IcedError> {
    a.set_label(common)?;
    for (i, reg) in GUEST_GPRS.iter().enumerate() {
        a.mov(dword_ptr(r14 + (off::GPR + 4 * i as i32)), *reg)?;
    }
    a.pushfq()?;
    a.pop(rax)?;
    a.mov(qword_ptr(r14 + off::HOST_FLAGS), rax)?;
    a.set_label(saved)?;
    for (i, reg) in GUEST_XMMS.iter().enumerate() {
        a.movaps(xmmword_ptr(r14 + (off::FX + FX_XMM0 + 16 * i as i32)), *reg)?;
    }
    a.stmxcsr(dword_ptr(r14 + (off::FX + FX_MXCSR)))?;
    a.ldmxcsr(dword_ptr(r14 + off::HOST_MXCSR))?;
    a.cld()?;
    a.mov(rsp, qword_ptr(r14 + off::HOST_RSP))?;
    a.add(rsp, 8)?;
    for reg in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(reg)?;
    }
    a.ret()
}

/// The return-prediction sentinel: a host `ret` popped it, so put it
/// back (its slot still holds it) and continue at R10, the lookup the
/// `ret` pointed it at.
fn emit_sentinel(a: &mut CodeAssembler, sentinel: &mut CodeLabel) -> Result<(), IcedError> {
    a.set_label(sentinel)?;
    a.lea(rsp, qword_ptr(rsp - 8))?;
    a.jmp(r10)
}

thread_local! {
    /// The state block whose guest x87/MMX registers this thread's FPU
    /// holds (0: none). Cleared when that block is dropped.
    static FPU_OWNER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Copies the guest x87/MMX registers from the FPU into `state.fx` if they
/// are newer there (XMM0-7 and MXCSR are stored by every exit already).
pub fn sync_fpu(state: &mut CpuState) {
    if state.fx_live == 0 {
        return;
    }
    let mut image = crate::state::FxArea([0; 512]);
    // SAFETY: FXSAVE64 writes 512 bytes to a 16-byte aligned buffer, which
    // `image` is (FxArea is align(16)); it changes no register.
    unsafe {
        std::arch::asm!("fxsave64 [{}]", in(reg) image.0.as_mut_ptr(), options(nostack));
    }
    let fx = state.fx_raw();
    // FCW, FSW, FTW, FOP, FIP, FDP; MXCSR (24..28) is the guest's already.
    fx[0..24].copy_from_slice(&image.0[0..24]);
    // ST0-7/MM0-7.
    fx[32..160].copy_from_slice(&image.0[32..160]);
    state.fx_live = 0;
}

/// Called when `state` is dropped: its x87 registers in this thread's FPU
/// belong to nobody any more.
pub(crate) fn forget_fpu_owner(state: &CpuState) {
    let me = state as *const CpuState as usize;
    let _ = FPU_OWNER.try_with(|owner| {
        if owner.get() == me {
            owner.set(0);
        }
    });
}

/// Makes `state` the owner of this thread's x87 registers: the previous
/// owner's are saved into its image first, and `state`'s whole image is
/// loaded at the entry.
fn take_fpu(state: &mut CpuState) {
    let me = state as *mut CpuState as usize;
    let previous = FPU_OWNER.with(|owner| owner.replace(me));
    if previous == me {
        return;
    }
    if previous != 0 {
        // SAFETY: an owner clears itself from this thread's FPU_OWNER when
        // dropped (CpuState's Drop), and state blocks are only entered and
        // dropped on one thread (`enter`'s contract), so `previous` is a
        // live state block that nothing else borrows now (we hold `state`,
        // a different one, and the caller runs on this thread).
        let previous = unsafe { &mut *(previous as *mut CpuState) };
        sync_fpu(previous);
    }
    state.fx_load = 1;
}

/// Runs translated code at `code` until it exits.
///
/// # Safety
/// `stubs.enter` must be the enter stub of a live code cache, `code` the
/// entry of a live translation of that cache, and `state` must have a
/// `window` whose guest-visible pages are mapped as the translations expect.
/// A state block must be dropped on the thread that enters it.
pub unsafe fn enter(stubs: &Stubs, state: &mut CpuState, code: u64) {
    take_fpu(state);
    state.fx_live = 1;
    // SAFETY: the caller guarantees `stubs.enter` is the stub emitted by
    // `emit_enter`, which follows the sysv64 ABI and preserves callee-saved
    // registers.
    let f: extern "sysv64" fn(*mut CpuState, u64) =
        unsafe { std::mem::transmute(stubs.enter as usize) };
    f(state, code);
}

const MAX_CACHES: usize = 64;
static CACHE_START: [AtomicU64; MAX_CACHES] = [const { AtomicU64::new(0) }; MAX_CACHES];
static CACHE_END: [AtomicU64; MAX_CACHES] = [const { AtomicU64::new(0) }; MAX_CACHES];
static CACHE_EXIT: [AtomicU64; MAX_CACHES] = [const { AtomicU64::new(0) }; MAX_CACHES];
/// Per registered cache: the address of its vCPU's `CpuState::ibtc`.
static CACHE_IBTC_SLOT: [AtomicU64; MAX_CACHES] = [const { AtomicU64::new(0) }; MAX_CACHES];
/// Per registered cache: the address of its vCPU's
/// `CpuState::ibtc_shared`.
static CACHE_SHARED_IBTC_SLOT: [AtomicU64; MAX_CACHES] = [const { AtomicU64::new(0) }; MAX_CACHES];
/// Per registered cache: the empty indirect-branch table swapped in on a
/// request.
static CACHE_EMPTY_IBTC: [AtomicU64; MAX_CACHES] = [const { AtomicU64::new(0) }; MAX_CACHES];

/// A registration of a code cache with the signal handler; unregisters on
/// drop.
pub struct FaultRegistration(usize);

impl Drop for FaultRegistration {
    fn drop(&mut self) {
        CACHE_IBTC_SLOT[self.0].store(0, Ordering::SeqCst);
        CACHE_SHARED_IBTC_SLOT[self.0].store(0, Ordering::SeqCst);
        CACHE_EMPTY_IBTC[self.0].store(0, Ordering::SeqCst);
        CACHE_EXIT[self.0].store(0, Ordering::SeqCst);
        CACHE_END[self.0].store(0, Ordering::SeqCst);
        CACHE_START[self.0].store(0, Ordering::SeqCst);
    }
}

/// Registers the executable range `[start, end)` whose faults return
/// through `exit_saved`, installing the handlers on first use. The page at
/// `start` is the cache's poll page.
pub fn register_cache(start: u64, end: u64, exit_saved: u64) -> Option<FaultRegistration> {
    install_handlers();
    for i in 0..MAX_CACHES {
        if CACHE_START[i]
            .compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            CACHE_EXIT[i].store(exit_saved, Ordering::SeqCst);
            CACHE_END[i].store(end, Ordering::SeqCst);
            return Some(FaultRegistration(i));
        }
    }
    None
}

/// The registered cache whose range holds `rip`: (poll page, exit_saved).
pub(crate) fn cache_for(rip: u64) -> Option<(u64, u64)> {
    (0..MAX_CACHES).find_map(|i| {
        let s = CACHE_START[i].load(Ordering::SeqCst);
        let e = CACHE_END[i].load(Ordering::SeqCst);
        (s != 0 && rip >= s && rip < e).then(|| (s, CACHE_EXIT[i].load(Ordering::SeqCst)))
    })
}

const POLL_PAGE: usize = codecache::POLL_PAGE_SIZE;

fn protect_poll_page(start: u64, prot: libc::c_int) {
    // SAFETY: `start` is the first page of a registered code cache's
    // executable view, a page that holds no code and that this crate alone
    // protects; changing its protection cannot invalidate any Rust
    // reference. mprotect is async-signal-safe.
    unsafe { libc::mprotect(start as *mut libc::c_void, POLL_PAGE, prot) };
}

/// Requests exits of one registered code cache from another thread
/// ([`FaultRegistration::exit_handle`]). Only valid while the registration
/// lives: its owner must make sure no request runs once it is dropped.
#[derive(Clone, Copy, Debug)]
pub struct ExitHandle(usize);

impl ExitHandle {
    /// As [`FaultRegistration::request_exit`].
    pub fn request_exit(&self) {
        request_exit(self.0);
    }
}

impl FaultRegistration {
    /// A handle for requesting exits from another thread.
    pub fn exit_handle(&self) -> ExitHandle {
        ExitHandle(self.0)
    }

    /// Tells exit requests which indirect-branch table fields to point at
    /// `empty_table` (a table in which nothing matches): `slot` (a
    /// `CpuState::ibtc`) and `shared_slot` (its `CpuState::ibtc_shared`).
    ///
    /// # Safety
    /// Both slots must stay valid (fields of a `CpuState` that does not
    /// move) and `empty_table` a live, empty table, for as long as this
    /// registration lives.
    pub unsafe fn set_ibtc(&self, slot: &AtomicU64, shared_slot: &AtomicU64, empty_table: u64) {
        CACHE_EMPTY_IBTC[self.0].store(empty_table, Ordering::SeqCst);
        CACHE_SHARED_IBTC_SLOT[self.0]
            .store(shared_slot as *const AtomicU64 as u64, Ordering::SeqCst);
        CACHE_IBTC_SLOT[self.0].store(slot as *const AtomicU64 as u64, Ordering::SeqCst);
    }

    /// Makes translated code of this cache stop at its next cycle of units
    /// with an `Interrupted` exit or an indirect miss. Safe to call from a
    /// signal handler or another thread.
    pub fn request_exit(&self) {
        request_exit(self.0);
    }

    /// Lets translated code run on after an exit request was served: the
    /// poll page readable again, `table` the indirect-branch table in
    /// `slot` and `shared_table` the one in `shared_slot`.
    pub fn clear_exit_request(
        &self,
        (slot, table): (&AtomicU64, u64),
        (shared_slot, shared_table): (&AtomicU64, u64),
    ) {
        let start = CACHE_START[self.0].load(Ordering::SeqCst);
        if start != 0 {
            protect_poll_page(start, libc::PROT_READ);
        }
        shared_slot.store(shared_table, Ordering::SeqCst);
        slot.store(table, Ordering::SeqCst);
    }
}

fn request_exit(slot: usize) {
    let start = CACHE_START[slot].load(Ordering::SeqCst);
    if start == 0 {
        return;
    }
    protect_poll_page(start, libc::PROT_NONE);
    let empty = CACHE_EMPTY_IBTC[slot].load(Ordering::SeqCst);
    for slots in [&CACHE_SHARED_IBTC_SLOT, &CACHE_IBTC_SLOT] {
        let ibtc = slots[slot].load(Ordering::SeqCst);
        if ibtc != 0 && empty != 0 {
            // SAFETY: `set_ibtc`'s contract keeps the slot valid while the
            // registration (which is still in the table) lives.
            let field = unsafe { &*(ibtc as *const AtomicU64) };
            field.store(empty, Ordering::SeqCst);
        }
    }
}

/// Makes translated code of every registered cache stop at its next
/// translation entry. Async-signal-safe.
pub fn request_exit_all() {
    for slot in 0..MAX_CACHES {
        request_exit(slot);
    }
}

/// Bytes of the alternate signal stack of a thread that runs translated
/// code.
const SIGNAL_STACK_BYTES: usize = 256 << 10;

/// Gives the calling thread an alternate signal stack, if it has none, so
/// that handlers installed with `SA_ONSTACK` (the fault handler here, the
/// monitor's stop signals) never run on the return-prediction stack that
/// translated code uses (see `crate::rstack`). Call it on every thread
/// before it enters translated code; the stack stays for the thread's
/// life.
pub fn ensure_signal_stack() -> std::io::Result<()> {
    thread_local! {
        static READY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if READY.with(|r| r.get()) {
        return Ok(());
    }
    // SAFETY: a zeroed stack_t is a valid out-parameter.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: queries the current alternate stack only.
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= SIGNAL_STACK_BYTES {
        READY.with(|r| r.set(true));
        return Ok(());
    }
    // SAFETY: a fresh anonymous mapping, never unmapped: the thread may
    // take a signal on it until it ends (a few per process).
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIGNAL_STACK_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let new = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: SIGNAL_STACK_BYTES,
    };
    // SAFETY: `new` describes the mapping just made.
    if unsafe { libc::sigaltstack(&new, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    READY.with(|r| r.set(true));
    Ok(())
}

fn install_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL] {
            // On the thread's alternate stack: translated code runs on the
            // return-prediction stack, which has no room below its guard
            // (see `ensure_signal_stack`).
            set_handler(sig, on_fault, libc::SA_NODEFER | libc::SA_ONSTACK);
        }
    });
}

/// A signal handler taking the kernel's `siginfo_t` and `ucontext_t`.
pub(crate) type SigInfoHandler =
    extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `sig` with `SA_SIGINFO` and `flags`, blocking no
/// other signal while it runs.
pub(crate) fn set_handler(sig: libc::c_int, handler: SigInfoHandler, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction with a valid handler, flags and an empty
    // mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO | flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

const GUEST_GREGS: [libc::c_int; 8] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_R8,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
];

/// Whether the host instruction at `rip` is a `call` (`E8 rel32`, or
/// `FF /2` with an optional REX prefix): translated code makes host calls
/// only for predicted guest calls (see `crate::rstack`).
///
/// # Safety
/// `rip` must point at an instruction in readable code.
unsafe fn is_host_call(rip: u64) -> bool {
    // SAFETY: the caller's contract; an instruction of translated code
    // has at least the three bytes read here (the cache's code is
    // followed by more code or its exit stubs).
    let bytes = unsafe { std::ptr::read_unaligned(rip as *const [u8; 3]) };
    let (opcode, modrm) = if bytes[0] & 0xf0 == 0x40 {
        (bytes[1], bytes[2])
    } else {
        (bytes[0], bytes[1])
    };
    opcode == 0xe8 || (opcode == 0xff && (modrm >> 3) & 7 == 2)
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext for SA_SIGINFO handlers.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let gregs = &mut uc.uc_mcontext.gregs;
    let rip = gregs[libc::REG_RIP as usize] as u64;
    let Some((poll, exit_saved)) = cache_for(rip) else {
        // Not ours: fall back to the default action and let it re-fault.
        // SAFETY: resetting a signal to its default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    };
    // SAFETY: inside translated code R14 always holds the vCPU state block
    // (invariant of the register convention), which is live while its code
    // runs.
    let state = unsafe { &mut *(gregs[libc::REG_R14 as usize] as *mut CpuState) };
    // SAFETY: `info` is valid for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() as u64 };
    let overflow = sig == libc::SIGSEGV
        && state.rsb_top != 0
        && crate::rstack::guard_of(state.rsb_top).contains(&addr);
    // SAFETY: `rip` lies in a registered code cache's executable view
    // (`cache_for`), readable for as long as the registration lives.
    if overflow && !unsafe { is_host_call(rip) } {
        // A unit's first push ran off the bottom of the return-prediction
        // stack: start it again from the top, and run the instruction
        // again. Only predictions are lost.
        gregs[libc::REG_RSP as usize] = state.rsb_top as i64;
        return;
    }
    for (i, reg) in GUEST_GREGS.iter().enumerate() {
        state.gpr[i] = gregs[*reg as usize] as u32;
    }
    state.host_flags = gregs[libc::REG_EFL as usize] as u64;
    // SAFETY: `info` is valid for SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code as u64 };
    state.fault = crate::state::HostFault {
        signo: sig as u64,
        addr,
        rip,
        err: gregs[libc::REG_ERR as usize] as u64,
        code,
        trapno: gregs[libc::REG_TRAPNO as usize] as u64,
    };
    let poll_fault = sig == libc::SIGSEGV && (poll..poll + POLL_PAGE as u64).contains(&addr);
    state.exit_reason = if overflow {
        // A host call: the run loop stops before the guest call it
        // belongs to (see `ExitReason::CallOverflow`); the exit stub
        // must not run at the guard.
        gregs[libc::REG_RSP as usize] = state.rsb_top as i64;
        crate::state::ExitReason::CallOverflow
    } else if poll_fault {
        crate::state::ExitReason::Interrupted
    } else {
        crate::state::ExitReason::Fault
    } as u32;
    gregs[libc::REG_RIP as usize] = exit_saved as i64;
}
