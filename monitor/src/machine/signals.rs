//! Host signals while a guest runs: SIGINT, SIGTERM and SIGHUP stop the
//! guest at its next instruction boundary; a second one ends the process by
//! the signal's default action, after reopening the outer VMware backdoor.
//!
//! Invariant: the handler only does async-signal-safe work (atomics,
//! `mprotect` through the translator runtime, a thread-local read, a byte
//! store and `pthread_kill` for the KVM vCPU, one port access, `signal`,
//! `raise`).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Whether the outer backdoor is restricted and must be reopened if a
/// signal ends the process.
static OUTER_RESTRICTED: AtomicBool = AtomicBool::new(false);

/// The first stop signal received during the current run (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

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
        for sig in STOP_SIGNALS {
            // SAFETY: a zeroed sigaction with a handler that only does
            // async-signal-safe work (atomics, mprotect, one port access,
            // signal(), raise()).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
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

/// The name of a stop signal, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
