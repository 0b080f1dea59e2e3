//! The CPU's interrupt inputs as devices see them: requests for an external
//! interrupt with the vector an interrupt controller supplies, and NMI.
//! Devices (on any thread: timers, input) raise them through an
//! [`InterruptSource`]; the machine loop hands them to the vCPU at its next
//! exit ([`InterruptInputs::forward`]), and a guest halted with IF = 1
//! sleeps in [`InterruptInputs::wait`] until one arrives.
//!
//! Invariants:
//! - Raising never blocks on the vCPU: it queues the request and asks the
//!   running vCPU to exit (a running guest sees it within one pass around
//!   its current loop, see docs/ARCHITECTURE.md).
//! - Requests are delivered in the order they were raised, each once.
//! - A halted guest is woken by a request, never by polling.

use crate::vcpu::{ExitRequester, Vcpu};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The interrupt inputs of one vCPU.
pub struct InterruptInputs {
    shared: Arc<Shared>,
}

/// A device's handle on the interrupt inputs; the machine counts live
/// sources to tell a halted guest that can be woken from one that cannot.
pub struct InterruptSource {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled whenever a request is queued.
    raised: Condvar,
    /// Anything queued (read without the lock on every exit).
    any: AtomicBool,
    sources: AtomicUsize,
    vcpu: Arc<dyn ExitRequester>,
}

#[derive(Default)]
struct Pending {
    vectors: VecDeque<u8>,
    nmi: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The queue stays consistent even if a raiser panicked.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self, change: impl FnOnce(&mut Pending)) {
        change(&mut self.lock());
        self.any.store(true, Ordering::SeqCst);
        self.raised.notify_all();
        self.vcpu.request_exit();
    }
}

impl InterruptInputs {
    /// Inputs that make `vcpu` exit when something is raised.
    pub fn new(vcpu: Arc<dyn ExitRequester>) -> InterruptInputs {
        InterruptInputs {
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending::default()),
                raised: Condvar::new(),
                any: AtomicBool::new(false),
                sources: AtomicUsize::new(0),
                vcpu,
            }),
        }
    }

    /// A new source for a device.
    pub fn source(&self) -> InterruptSource {
        self.shared.sources.fetch_add(1, Ordering::SeqCst);
        InterruptSource {
            shared: self.shared.clone(),
        }
    }

    /// Whether any device could ever raise an interrupt.
    pub fn has_sources(&self) -> bool {
        self.shared.sources.load(Ordering::SeqCst) > 0
    }

    /// Hands pending requests to the vCPU: an NMI is injected, queued
    /// vectors make it ask for an interrupt window.
    pub fn forward(&self, vcpu: &mut dyn Vcpu) {
        if !self.shared.any.load(Ordering::SeqCst) {
            return;
        }
        let mut pending = self.shared.lock();
        if std::mem::take(&mut pending.nmi) {
            vcpu.inject_nmi();
        }
        vcpu.request_interrupt_window(!pending.vectors.is_empty());
        self.shared
            .any
            .store(!pending.vectors.is_empty(), Ordering::SeqCst);
    }

    /// At an open interrupt window: injects the oldest queued vector and
    /// stops asking for windows once the queue is empty.
    pub fn inject_next(&self, vcpu: &mut dyn Vcpu) {
        let mut pending = self.shared.lock();
        if let Some(vector) = pending.vectors.front().copied() {
            if vcpu.inject_interrupt(vector).is_ok() {
                pending.vectors.pop_front();
            }
        }
        let more = !pending.vectors.is_empty();
        vcpu.request_interrupt_window(more);
        self.shared.any.store(more || pending.nmi, Ordering::SeqCst);
    }

    /// Whether a request waits to be delivered.
    pub fn pending(&self) -> bool {
        self.shared.any.load(Ordering::SeqCst)
    }

    /// Sleeps until a request is pending or `limit` passed (the caller
    /// checks its own stop conditions between waits).
    pub fn wait(&self, limit: Duration) {
        let pending = self.shared.lock();
        if !pending.vectors.is_empty() || pending.nmi {
            return;
        }
        // Woken early or late, the caller looks again.
        let _ = self
            .shared
            .raised
            .wait_timeout_while(pending, limit, |p| p.vectors.is_empty() && !p.nmi);
    }
}

impl InterruptSource {
    /// Requests external interrupt `vector` (as an interrupt controller
    /// presents it to the CPU).
    pub fn raise(&self, vector: u8) {
        self.shared.queued(|p| p.vectors.push_back(vector));
    }

    /// Raises the NMI input (requests while one is pending merge).
    pub fn raise_nmi(&self) {
        self.shared.queued(|p| p.nmi = true);
    }
}

impl Drop for InterruptSource {
    fn drop(&mut self) {
        self.shared.sources.fetch_sub(1, Ordering::SeqCst);
    }
}
