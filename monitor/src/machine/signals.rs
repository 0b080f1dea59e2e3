//! Host signals while a guest runs: SIGINT, SIGTERM and SIGHUP stop the
//! guest at its next instruction boundary; a second one ends the process by
//! the signal's default action, after reopening the outer VMware backdoor.
//!
//! SIGTERM first asks for a soft power-off when the machine armed one
//! ([`set_soft_power_off_available`]: the guest's Tools service polls its
//! TCLO channel): the handler only records the request and kicks the
//! vCPU; the machine loop then queues `OS_Halt` and waits for the guest
//! to power off. A second SIGTERM, or SIGINT or SIGHUP, then stops the
//! guest as above.
//!
//! Invariants:
//! - The handler only does async-signal-safe work (atomics, `mprotect`
//!   through the translator runtime, a thread-local read, a byte store and
//!   `pthread_kill` for the KVM vCPU, one port access, `signal`, `raise`).
//! - The soft state moves Unavailable <-> Armed from the machine loop and
//!   Armed -> Requested from the handler only, by compare-and-swap: one
//!   SIGTERM makes at most one request, and a request is never undone
//!   until [`StopSignals::install`] starts a new run.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};

/// Whether the outer backdoor is restricted and must be reopened if a
/// signal ends the process.
static OUTER_RESTRICTED: AtomicBool = AtomicBool::new(false);

/// The first stop signal received during the current run (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// No soft power-off can be asked for: SIGTERM stops the guest at once.
const SOFT_UNAVAILABLE: u8 = 0;
/// A SIGTERM now asks for a soft power-off instead of stopping.
const SOFT_ARMED: u8 = 1;
/// A SIGTERM asked for a soft power-off.
const SOFT_REQUESTED: u8 = 2;

/// The soft power-off state of the current run (one of the `SOFT_*`).
static SOFT_STATE: AtomicU8 = AtomicU8::new(SOFT_UNAVAILABLE);

/// The signals that stop a run.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Makes the outer backdoor be reopened if a second signal kills the
/// process (the handshake guard's drop does it on every other path).
pub fn arm_reopen_on_signals() {
    OUTER_RESTRICTED.store(true, Ordering::SeqCst);
}

/// While alive, SIGINT, SIGTERM and SIGHUP stop the guest at its next
/// instruction boundary (the run then returns a stop with the registers);
/// a second signal ends the process by the signal's default action, after
/// reopening the outer backdoor. Dropping it restores the default actions.
pub struct StopSignals;

impl StopSignals {
    /// Installs the handlers and forgets any earlier stop request.
    pub fn install() -> StopSignals {
        STOP_SIGNAL.store(0, Ordering::SeqCst);
        SOFT_STATE.store(SOFT_UNAVAILABLE, Ordering::SeqCst);
        for sig in STOP_SIGNALS {
            // SAFETY: a zeroed sigaction with a handler that only does
            // async-signal-safe work (atomics, mprotect, one port access,
            // signal(), raise()).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
                // On the alternate stack where the thread has one (the vCPU
                // thread runs translated code on a stack with no room below).
                sa.sa_flags = libc::SA_RESTART | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        StopSignals
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for sig in STOP_SIGNALS {
            // SAFETY: restores the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

extern "C" fn on_stop_signal(sig: libc::c_int) {
    if sig == libc::SIGTERM
        && SOFT_STATE
            .compare_exchange(
                SOFT_ARMED,
                SOFT_REQUESTED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    {
        translator::runtime::request_exit_all();
        crate::vcpu::kvm::kick_from_signal_handler();
        return;
    }
    if STOP_SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        translator::runtime::request_exit_all();
        crate::vcpu::kvm::kick_from_signal_handler();
        return;
    }
    if OUTER_RESTRICTED.swap(false, Ordering::SeqCst) {
        backdoor::outer::reopen_outer_backdoor_signal_safe();
    }
    super::console_input::restore_terminal_signal_safe();
    // SAFETY: restoring the default action and re-raising are
    // async-signal-safe; the process then ends as the signal asks.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The stop signal received since [`StopSignals::install`], if any.
pub fn pending_stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Arms (`true`) or disarms the soft power-off of SIGTERM; a request
/// already made stays.
pub fn set_soft_power_off_available(available: bool) {
    let (from, to) = if available {
        (SOFT_UNAVAILABLE, SOFT_ARMED)
    } else {
        (SOFT_ARMED, SOFT_UNAVAILABLE)
    };
    // Fails harmlessly when the state is already `to` or a request.
    let _ = SOFT_STATE.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst);
}

/// Whether a SIGTERM asked for a soft power-off during this run.
pub fn soft_power_off_requested() -> bool {
    SOFT_STATE.load(Ordering::SeqCst) == SOFT_REQUESTED
}

/// The name of a stop signal, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
