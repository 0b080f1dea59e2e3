//! The CPU's interrupt inputs: INTR, which the PIC pair drives, and NMI.
//!
//! External interrupts come from the PIC ([`crate::devices::pic`]): devices
//! raise its lines (COM1 on IRQ4 from the vCPU thread, the PIT's IRQ0 from
//! the timer thread of `machine::timer`, any device from any thread
//! through a `PicLine`), and when the PIC's INTR output rises it calls the
//! listener installed here, which asks the vCPU to exit and wakes a halted
//! guest. The machine loop then asks the vCPU for an interrupt window
//! ([`InterruptInputs::forward`]); at the window the vector comes from the
//! PIC's interrupt acknowledge ([`InterruptInputs::inject_next`]), so the
//! in-service register, priorities, masks and EOIs are the PIC's, as on a
//! PC. NMIs come from an [`InterruptSource`] and are injected as before.
//!
//! Invariants:
//! - Raising never blocks on the vCPU: a change that raises INTR (or an
//!   NMI) sets `attention` and asks the running vCPU to exit (a running
//!   guest sees it within one pass around its current loop, see
//!   docs/ARCHITECTURE.md).
//! - Whenever INTR is high, either `attention` is set or the vCPU has a
//!   window requested: [`InterruptInputs::forward`] clears `attention`
//!   before it reads INTR (and the NMI flag), and the listener sets it
//!   after INTR rose.
//! - A vector is acknowledged at the PIC only at an open window, and one
//!   the vCPU refused anyway is kept and injected at the next window
//!   before the PIC is asked again: no acknowledged interrupt is lost.
//! - A halted guest is woken by a request, never by polling; it waits
//!   only while something can still raise one (an NMI source, an enabled
//!   PIC line with a device that raises it by itself, IRQ0 with the PIT
//!   counting).

use crate::devices::pic::{Irq, SharedPic};
use crate::devices::pit::SharedPit;
use crate::devices::IoBus;
use crate::vcpu::{ExitRequester, Vcpu};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often a halted guest looks at its stop conditions while it sleeps.
const HALT_POLL: Duration = Duration::from_millis(50);

/// The interrupt inputs of one vCPU.
pub struct InterruptInputs {
    shared: Arc<Shared>,
    pic: SharedPic,
    pit: SharedPit,
    /// A vector acknowledged at the PIC that the vCPU refused.
    held: Option<u8>,
}

/// A device's handle on the NMI input; the machine counts live sources to
/// tell a halted guest that an NMI can still wake from one that nothing
/// can.
pub struct InterruptSource {
    shared: Arc<Shared>,
}

struct Shared {
    /// An NMI raised and not yet handed to the vCPU; also the lock of
    /// `woken`.
    nmi: Mutex<bool>,
    /// Signalled when INTR rises or an NMI is raised.
    woken: Condvar,
    /// Something happened that the machine loop must forward (read
    /// without the lock on every exit).
    attention: AtomicBool,
    sources: AtomicUsize,
    vcpu: Arc<dyn ExitRequester>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // A flag stays consistent even if a raiser panicked.
        self.nmi.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the machine loop and a halted guest that something arrived.
    fn wake(&self, change: impl FnOnce(&mut bool)) {
        {
            let mut nmi = self.lock();
            change(&mut nmi);
            self.attention.store(true, Ordering::SeqCst);
        }
        self.woken.notify_all();
        self.vcpu.request_exit();
    }
}

impl InterruptInputs {
    /// Inputs that make `vcpu` exit when something is raised, taking
    /// external interrupts from `bus`'s PIC (and watching its PIT, for
    /// halts).
    pub fn new(vcpu: Arc<dyn ExitRequester>, bus: &IoBus) -> InterruptInputs {
        let shared = Arc::new(Shared {
            nmi: Mutex::new(false),
            woken: Condvar::new(),
            attention: AtomicBool::new(false),
            sources: AtomicUsize::new(0),
            vcpu,
        });
        let pic = bus.pic();
        let listener = Arc::downgrade(&shared);
        pic.set_intr_listener(Arc::new(move || {
            if let Some(shared) = listener.upgrade() {
                shared.wake(|_| {});
            }
        }));
        // INTR may be up already.
        shared.attention.store(pic.intr(), Ordering::SeqCst);
        InterruptInputs {
            shared,
            pic,
            pit: bus.pit(),
            held: None,
        }
    }

    /// A new NMI source for a device.
    pub fn source(&self) -> InterruptSource {
        self.shared.sources.fetch_add(1, Ordering::SeqCst);
        InterruptSource {
            shared: self.shared.clone(),
        }
    }

    /// Whether any device could ever raise an NMI.
    pub fn has_sources(&self) -> bool {
        self.shared.sources.load(Ordering::SeqCst) > 0
    }

    /// Hands what arrived to the vCPU: an NMI is injected, a high INTR
    /// makes it ask for an interrupt window. One atomic load when nothing
    /// arrived.
    pub fn forward(&self, vcpu: &mut dyn Vcpu) {
        if !self.shared.attention.load(Ordering::SeqCst) {
            return;
        }
        // Cleared before INTR and the NMI flag are read: whatever arrives
        // from here on sets it again.
        self.shared.attention.store(false, Ordering::SeqCst);
        if std::mem::take(&mut *self.shared.lock()) {
            vcpu.inject_nmi();
        }
        if self.pic.intr() || self.held.is_some() {
            vcpu.request_interrupt_window(true);
        }
    }

    /// At an open interrupt window: the PIC's interrupt acknowledge, if
    /// INTR is still high, and the injection of its vector; then windows
    /// are asked for only while INTR stays high.
    pub fn inject_next(&mut self, vcpu: &mut dyn Vcpu) {
        if let Some(vector) = self
            .held
            .take()
            .or_else(|| self.pic.acknowledge_if_pending())
        {
            if vcpu.inject_interrupt(vector).is_err() {
                self.held = Some(vector);
            }
        }
        vcpu.request_interrupt_window(self.held.is_some() || self.pic.intr());
    }

    /// Whether an interrupt or NMI waits to be delivered.
    pub fn pending(&self) -> bool {
        self.shared.attention.load(Ordering::SeqCst)
            || self.pic.intr()
            || self.held.is_some()
            || *self.shared.lock()
    }

    /// Whether an interrupt can still arrive while the CPU does nothing:
    /// an NMI source exists, an armed PIC line is enabled, or IRQ0 is
    /// enabled and the PIT's channel 0 will give it an edge.
    pub fn can_arrive(&self) -> bool {
        self.has_sources()
            || self.pic.armed_line_enabled()
            || (self.pic.line_enabled(Irq::PIT) && self.pit.lock().irq0_may_fire())
    }

    /// HLT with IF = 1: sleeps (without spinning) until an interrupt or
    /// NMI is pending or `stop` says so, and returns true; returns false
    /// at once if nothing can ever wake the guest ([`Self::can_arrive`]).
    pub fn wait_while_halted(&self, stop: impl Fn() -> bool) -> bool {
        loop {
            if self.pending() || stop() {
                return true;
            }
            if !self.can_arrive() {
                // A pulse that reached the PIC after the look above (the
                // PIT stops counting an edge as in flight only once it
                // did) is pending now.
                return self.pending();
            }
            self.wait(HALT_POLL);
        }
    }

    /// Sleeps until something is raised or `limit` passed (the caller
    /// checks its own stop conditions between waits).
    fn wait(&self, limit: Duration) {
        let guard = self.shared.lock();
        // Woken early or late, the caller looks again.
        let _ = self.shared.woken.wait_timeout_while(guard, limit, |nmi| {
            !*nmi && !self.shared.attention.load(Ordering::SeqCst) && !self.pic.intr()
        });
    }
}

impl InterruptSource {
    /// Raises the NMI input (requests while one is pending merge).
    pub fn raise_nmi(&self) {
        self.shared.wake(|nmi| *nmi = true);
    }
}

impl Drop for InterruptSource {
    fn drop(&mut self) {
        self.shared.sources.fetch_sub(1, Ordering::SeqCst);
    }
}
