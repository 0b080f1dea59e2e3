//! Exit requests for the KVM vCPU: how another thread, or a signal
//! handler, makes `KVM_RUN` return.
//!
//! A request sets a flag and sends the vCPU thread the *kick signal*,
//! whose handler (on the vCPU thread) sets `kvm_run.immediate_exit`
//! through a thread-local pointer. A kick that lands while the thread is
//! inside `KVM_RUN` makes it return `EINTR` (a signal is pending); one
//! that lands just before sets `immediate_exit`, so the next `KVM_RUN`
//! returns `EINTR` at once, after completing the pending I/O (the
//! documented way of kicking a vCPU without `KVM_SET_SIGNAL_MASK`).
//!
//! Invariants:
//! - The thread-local pointer is set only while a [`KickRegistration`]
//!   lives on that thread, and it points into the `kvm_run` mapping of the
//!   vCPU that owns the registration, which is dropped before the mapping
//!   (field order of `KvmCore`).
//! - [`KvmExitRequester`] sends kicks only while its thread is registered:
//!   the vCPU's drop clears it under the write lock, so no kick reaches a
//!   thread after its vCPU is gone.
//! - The signal handler and [`kick_from_signal_handler`] only do
//!   async-signal-safe work: a thread-local read, a volatile byte store,
//!   atomics and `pthread_kill`.

use crate::vcpu::ExitRequester;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once, RwLock};

thread_local! {
    /// The `immediate_exit` byte of the `kvm_run` of the vCPU this thread
    /// runs (null: none).
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The thread that runs a KVM vCPU (a `pthread_t`; 0: none), for stop
/// signals that the kernel delivers to another thread.
static VCPU_THREAD: AtomicU64 = AtomicU64::new(0);

/// The signal that kicks the vCPU thread out of `KVM_RUN` (not the one
/// `crate::kvm`'s speed test uses).
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// Kick signals handled so far (by any thread).
static KICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_kick(_signal: libc::c_int) {
    KICKS.fetch_add(1, Ordering::SeqCst);
    set_immediate_exit_here();
}

/// How many kick signals were handled so far: a change across a stretch
/// of code means a kick landed in it.
pub(super) fn kicks() -> u64 {
    KICKS.load(Ordering::SeqCst)
}

/// Sets `immediate_exit` of the vCPU this thread runs, if any.
fn set_immediate_exit_here() {
    let byte = IMMEDIATE_EXIT.with(Cell::get);
    if !byte.is_null() {
        // SAFETY: the pointer is set only while the registration that
        // owns it lives on this thread, and it points into the live
        // `kvm_run` mapping (module invariant); a byte store is atomic.
        unsafe { std::ptr::write_volatile(byte, 1) };
    }
}

/// Installs the kick signal's handler once per process (`SA_RESTART`, so
/// a kick never makes another system call of the vCPU thread fail).
fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `sigaction` is plain data; all-zero is a valid start.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: the handler is async-signal-safe (module invariant),
        // `action` is initialised and a null old action is allowed.
        unsafe { libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) };
    });
}

/// For the stop-signal handler (`machine::signals`): makes the KVM vCPU
/// leave `KVM_RUN`, from whichever thread the kernel delivered the signal
/// to. Does nothing when no KVM vCPU runs. Async-signal-safe.
pub fn kick_from_signal_handler() {
    if !IMMEDIATE_EXIT.with(Cell::get).is_null() {
        set_immediate_exit_here();
        return;
    }
    let thread = VCPU_THREAD.load(Ordering::SeqCst);
    if thread != 0 {
        // SAFETY: the registered thread is the vCPU thread, alive while
        // its registration is (nestmon runs the vCPU on its main thread);
        // the kick signal has a handler.
        unsafe { libc::pthread_kill(thread, kick_signal()) };
    }
}

/// Exit requests from other threads (device and timer threads).
pub struct KvmExitRequester {
    /// An exit was requested and `run` has not returned for it yet.
    requested: AtomicBool,
    /// The vCPU thread, while its vCPU lives.
    thread: RwLock<Option<libc::pthread_t>>,
}

impl KvmExitRequester {
    /// Takes the pending request, if any.
    pub(super) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }

    /// Marks a request without kicking (the vCPU's own thread).
    pub(super) fn mark(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }
}

impl ExitRequester for KvmExitRequester {
    fn request_exit(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // A poisoned lock still holds a valid thread or None.
        let guard = self.thread.read().unwrap_or_else(|e| e.into_inner());
        if let Some(thread) = *guard {
            // SAFETY: the thread is registered, so it is alive (the
            // vCPU's drop clears it under the write lock before the
            // thread can end); the kick signal has a handler.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }
}

/// The vCPU thread's registration for kicks; dropping it unregisters.
pub struct KickRegistration {
    requester: Arc<KvmExitRequester>,
    thread: libc::pthread_t,
}

impl KickRegistration {
    /// Registers the calling thread as the vCPU thread whose
    /// `immediate_exit` byte is `immediate_exit`.
    ///
    /// # Safety
    /// `immediate_exit` must stay valid until the registration is dropped,
    /// which must happen on this thread.
    pub(super) unsafe fn new(immediate_exit: *mut u8) -> KickRegistration {
        install_handler();
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        IMMEDIATE_EXIT.with(|cell| cell.set(immediate_exit));
        VCPU_THREAD.store(thread, Ordering::SeqCst);
        KickRegistration {
            requester: Arc::new(KvmExitRequester {
                requested: AtomicBool::new(false),
                thread: RwLock::new(Some(thread)),
            }),
            thread,
        }
    }

    /// The requester other threads use.
    pub(super) fn requester(&self) -> &Arc<KvmExitRequester> {
        &self.requester
    }

    /// True on the thread that registered.
    pub(super) fn on_vcpu_thread(&self) -> bool {
        // SAFETY: pthread_self and pthread_equal have no preconditions.
        unsafe { libc::pthread_equal(libc::pthread_self(), self.thread) != 0 }
    }
}

impl Drop for KickRegistration {
    fn drop(&mut self) {
        *self
            .requester
            .thread
            .write()
            .unwrap_or_else(|e| e.into_inner()) = None;
        let _ = VCPU_THREAD.compare_exchange(self.thread, 0, Ordering::SeqCst, Ordering::SeqCst);
        if self.on_vcpu_thread() {
            IMMEDIATE_EXIT.with(|cell| cell.set(std::ptr::null_mut()));
        }
    }
}
