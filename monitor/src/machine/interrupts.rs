//! The CPU's interrupt inputs: INTR, which the PIC pair drives, or the
//! local APIC when the machine has one, and NMI.
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
//! With APICs ([`Apics`], `nestmon.apic`), the ISA lines reach the I/O
//! APIC's pins as well (IRQ0 on pin 2, every other IRQ n on pin n, as the
//! MADT's overrides say); its messages go to the local APIC, whose EOIs
//! go back to it. The PIC's INTR then reaches the CPU only while the
//! local APIC takes it (LINT0 unmasked in ExtINT mode, or the APIC
//! globally disabled), and at a window the PIC's ExtINT is acknowledged
//! before the local APIC's highest fixed interrupt.
//!
//! Invariants:
//! - Raising never blocks on the vCPU: a change that raises INTR (or an
//!   NMI) sets `attention` and asks the running vCPU to exit (a running
//!   guest sees it within one pass around its current loop, see
//!   docs/ARCHITECTURE.md).
//! - Whenever INTR is high, either `attention` is set or the vCPU has a
//!   window requested: [`InterruptInputs::forward`] clears `attention`
//!   before it reads INTR (and the NMI flag), and the listeners set it
//!   after INTR rose.
//! - A vector is acknowledged (at the PIC or the local APIC) only at an
//!   open window, and one the vCPU refused anyway is kept and injected at
//!   the next window before anything is asked again: no acknowledged
//!   interrupt is lost.
//! - A halted guest is woken by a request, never by polling; it waits
//!   only while something can still raise one (an NMI source, an enabled
//!   PIC line or unmasked I/O APIC pin with a device that raises it by
//!   itself, IRQ0 with the PIT counting, the local APIC's timer running).
//! - Lock order: the PIC's, the I/O APIC's and the local APIC's locks are
//!   never held while another is taken (each calls its listeners after
//!   releasing its own).

use crate::devices::ioapic::{DeliveryMode, Message, SharedIoApic};
use crate::devices::lapic::SharedLapic;
use crate::devices::mmio::{MmioDevice, MovableMmio};
use crate::devices::pic::{Irq, SharedPic};
use crate::devices::pit::SharedPit;
use crate::devices::IoBus;
use crate::vcpu::{ExitRequester, Vcpu};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How often a halted guest looks at its stop conditions while it sleeps.
const HALT_POLL: Duration = Duration::from_millis(50);

/// The interrupt inputs of one vCPU.
pub struct InterruptInputs {
    shared: Arc<Shared>,
    pic: SharedPic,
    pit: SharedPit,
    /// The local and I/O APIC, when the machine has them.
    apics: Option<Apics>,
    /// A vector acknowledged at the PIC or local APIC that the vCPU
    /// refused.
    held: Option<u8>,
}

/// The machine's local APIC and I/O APIC.
#[derive(Clone)]
pub struct Apics {
    /// The CPU's local APIC.
    pub lapic: SharedLapic,
    /// The I/O APIC the ISA lines reach.
    pub ioapic: SharedIoApic,
}

/// The I/O APIC pin an ISA interrupt line reaches (the MADT's interrupt
/// source overrides: IRQ0 on pin 2, every other line on its own number).
/// A device that asks for IRQ2, the cascade, gets IRQ9 at the PIC and
/// pin 9 here.
pub fn ioapic_pin(irq: Irq) -> u8 {
    match irq {
        Irq::PIT => 2,
        Irq::CASCADE => 9,
        other => other.number(),
    }
}

/// The I/O APIC pins driven by the ISA lines in `lines` (bit n: IRQ n).
fn ioapic_pins(lines: u16) -> u32 {
    (0..16u8)
        .filter(|&n| lines & (1 << n) != 0)
        .filter_map(|n| Irq::new(n).ok())
        .fold(0, |pins, irq| pins | 1 << ioapic_pin(irq))
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
    /// halts), and through `apics` when the machine has them.
    pub fn new(vcpu: Arc<dyn ExitRequester>, bus: &IoBus, apics: Option<Apics>) -> InterruptInputs {
        let shared = Arc::new(Shared {
            nmi: Mutex::new(false),
            woken: Condvar::new(),
            attention: AtomicBool::new(false),
            sources: AtomicUsize::new(0),
            vcpu,
        });
        let pic = bus.pic();
        pic.set_intr_listener(wake_listener(&shared));
        if let Some(apics) = &apics {
            wire_apics(apics, &pic, &shared);
        }
        let inputs = InterruptInputs {
            shared,
            pic,
            pit: bus.pit(),
            apics,
            held: None,
        };
        // INTR may be up already.
        inputs
            .shared
            .attention
            .store(inputs.intr(), Ordering::SeqCst);
        inputs
    }

    /// The local APIC, when the machine has one.
    pub fn lapic(&self) -> Option<&SharedLapic> {
        self.apics.as_ref().map(|apics| &apics.lapic)
    }

    /// The local APIC for the MMIO bus, when the machine has one.
    pub fn lapic_on_bus(&self) -> Option<Arc<LapicOnBus>> {
        let lapic = self.lapic()?.clone();
        Some(Arc::new(LapicOnBus {
            lapic,
            shared: Arc::downgrade(&self.shared),
        }))
    }

    /// The CPU's INTR input: the local APIC's, or the PIC's where it
    /// reaches the CPU.
    fn intr(&self) -> bool {
        self.apics.as_ref().is_some_and(|apics| apics.lapic.intr()) || self.pic_reaches_cpu()
    }

    /// Whether the PIC's INTR is up and reaches the CPU (through LINT0
    /// when there is a local APIC).
    fn pic_reaches_cpu(&self) -> bool {
        self.pic.intr()
            && self
                .apics
                .as_ref()
                .is_none_or(|apics| apics.lapic.accepts_pic_interrupt())
    }

    /// The interrupt acknowledge cycle: the PIC's ExtINT first, then the
    /// local APIC's highest deliverable fixed interrupt.
    fn acknowledge(&self) -> Option<u8> {
        if self.pic_reaches_cpu() {
            if let Some(vector) = self.pic.acknowledge_if_pending() {
                return Some(vector);
            }
        }
        self.apics
            .as_ref()
            .and_then(|apics| apics.lapic.acknowledge_if_pending())
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
        if self.intr() || self.held.is_some() {
            vcpu.request_interrupt_window(true);
        }
    }

    /// At an open interrupt window: the interrupt acknowledge, if INTR
    /// is still high, and the injection of its vector; then windows are
    /// asked for only while INTR stays high.
    pub fn inject_next(&mut self, vcpu: &mut dyn Vcpu) {
        if let Some(vector) = self.held.take().or_else(|| self.acknowledge()) {
            if vcpu.inject_interrupt(vector).is_err() {
                self.held = Some(vector);
            }
        }
        vcpu.request_interrupt_window(self.held.is_some() || self.intr());
    }

    /// Whether an interrupt or NMI waits to be delivered.
    pub fn pending(&self) -> bool {
        self.shared.attention.load(Ordering::SeqCst)
            || self.intr()
            || self.held.is_some()
            || *self.shared.lock()
    }

    /// Whether an interrupt can still arrive while the CPU does nothing:
    /// an NMI source exists, an armed line is enabled at the PIC (while
    /// the PIC reaches the CPU) or unmasked at the I/O APIC, IRQ0 is so
    /// and the PIT's channel 0 will give it an edge, or the local APIC's
    /// timer runs.
    pub fn can_arrive(&self) -> bool {
        if self.has_sources() {
            return true;
        }
        let pit_fires = || self.pit.lock().irq0_may_fire();
        let via_pic =
            || self.pic.armed_line_enabled() || (self.pic.line_enabled(Irq::PIT) && pit_fires());
        let Some(apics) = &self.apics else {
            return via_pic();
        };
        if apics.lapic.accepts_pic_interrupt() && via_pic() {
            return true;
        }
        if apics.lapic.timer_may_fire() {
            return true;
        }
        let unmasked = apics.ioapic.unmasked_pins();
        unmasked & ioapic_pins(self.pic.armed_lines()) != 0
            || (unmasked & ioapic_pins(1 << Irq::PIT.number()) != 0 && pit_fires())
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
            !*nmi && !self.shared.attention.load(Ordering::SeqCst) && !self.intr()
        });
    }
}

/// A listener that tells the machine loop and a halted guest that INTR
/// rose (and does nothing once the inputs are gone).
fn wake_listener(shared: &Arc<Shared>) -> Arc<dyn Fn() + Send + Sync> {
    let shared = Arc::downgrade(shared);
    Arc::new(move || {
        if let Some(shared) = shared.upgrade() {
            shared.wake(|_| {});
        }
    })
}

/// Connects the APICs: the ISA lines to the I/O APIC's pins, its
/// messages to the local APIC (an NMI message to the NMI input), the
/// local APIC's EOIs back to it, and the local APIC's INTR to the vCPU.
fn wire_apics(apics: &Apics, pic: &SharedPic, shared: &Arc<Shared>) {
    let ioapic = apics.ioapic.clone();
    pic.set_line_mirror(Arc::new(move |irq, level| {
        ioapic.set_irq(ioapic_pin(irq), level)
    }));
    let (lapic, nmi) = (apics.lapic.clone(), Arc::downgrade(shared));
    apics
        .ioapic
        .set_sink(Arc::new(move |message| deliver(&lapic, &nmi, message)));
    let ioapic = apics.ioapic.clone();
    apics
        .lapic
        .set_eoi_listener(Arc::new(move |vector| ioapic.eoi(vector)));
    apics.lapic.set_intr_listener(wake_listener(shared));
}

/// An I/O APIC message to the one CPU: fixed and lowest-priority
/// interrupts addressed to its local APIC go to the local APIC, an NMI to
/// the NMI input. SMI and INIT have nothing to reach on this machine (no
/// SMM, one CPU that is already running), and an ExtINT message carries
/// no vector: the 8259A's INTR reaches the CPU through LINT0, which is
/// how the MADT wires it, so routing it a second way would deliver it
/// twice.
fn deliver(lapic: &SharedLapic, nmi: &Weak<Shared>, message: Message) {
    match message.delivery_mode {
        DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
            if lapic.with(|l| l.accepts_destination(message.destination, message.logical)) {
                lapic.accept(message.vector, message.level_triggered);
            }
        }
        DeliveryMode::Nmi => {
            if let Some(shared) = nmi.upgrade() {
                shared.wake(|nmi| *nmi = true);
            }
        }
        DeliveryMode::Smi | DeliveryMode::Init | DeliveryMode::ExtInt => {}
    }
}

/// The local APIC as the MMIO bus sees it: a register store that sends
/// the CPU an NMI (through the ICR) raises the NMI input at once, so the
/// vCPU, which made the store, takes it before its next instruction.
pub struct LapicOnBus {
    lapic: SharedLapic,
    shared: Weak<Shared>,
}

impl MmioDevice for LapicOnBus {
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        self.lapic.mmio_read(offset, data);
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        self.lapic.mmio_write(offset, data);
        if self.lapic.take_nmi() {
            if let Some(shared) = self.shared.upgrade() {
                shared.wake(|nmi| *nmi = true);
            }
        }
    }
}

impl MovableMmio for LapicOnBus {
    fn region(&self) -> Option<(u64, u64)> {
        self.lapic.region()
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

#[cfg(test)]
mod tests {
    //! The APIC wiring without a vCPU: ISA lines to I/O APIC pins, its
    //! messages to the local APIC, EOIs back, LINT0 gating the PIC, the
    //! halt test's sources, a self-NMI through the bus.
    use super::*;
    use crate::devices::ioapic::IoApic;
    use crate::devices::lapic::Lapic;
    use crate::devices::pit::HostMonotonicClock;

    const LVT_MASKED: u32 = 1 << 16;
    const LINT0: u32 = 0x350;
    const LVT_TIMER: u32 = 0x320;
    const TIMER_INITIAL: u32 = 0x380;
    const EOI: u32 = 0xb0;
    const ICR_LOW: u32 = 0x300;
    const LEVEL: u32 = 1 << 15;
    const REMOTE_IRR: u32 = 1 << 14;

    /// Counts exit requests.
    #[derive(Default)]
    struct Requests(AtomicUsize);

    impl ExitRequester for Requests {
        fn request_exit(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Rig {
        inputs: InterruptInputs,
        bus: IoBus,
        apics: Apics,
        requests: Arc<Requests>,
    }

    fn rig() -> Rig {
        let bus = IoBus::with_serial_writer(Box::new(std::io::sink())).unwrap();
        let apics = Apics {
            lapic: SharedLapic::new(Lapic::new(Arc::new(HostMonotonicClock::new()), 100_000_000)),
            ioapic: SharedIoApic::new(IoApic::new(1)),
        };
        let requests = Arc::new(Requests::default());
        let inputs = InterruptInputs::new(requests.clone(), &bus, Some(apics.clone()));
        Rig {
            inputs,
            bus,
            apics,
            requests,
        }
    }

    impl Rig {
        /// Routes I/O APIC `pin` to `vector` at APIC 0, unmasked.
        fn route(&self, pin: u8, vector: u8, flags: u32) {
            self.apics.ioapic.with(|io| {
                io.write_register(0x11 + 2 * pin, 0);
                io.write_register(0x10 + 2 * pin, u32::from(vector) | flags);
            });
        }

        fn redirection(&self, pin: u8) -> u32 {
            self.apics
                .ioapic
                .with(|io| io.read_register(0x10 + 2 * pin))
        }

        /// The PIC pair at vectors 0x20/0x28 with only `irq` unmasked.
        fn program_pic(&mut self, irq: u8) {
            for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
                self.bus.write(port, 1, value);
            }
            self.bus.write(0x21, 1, u32::from(!(1u8 << irq)));
        }
    }

    #[test]
    fn isa_lines_reach_the_io_apic_pins_the_madt_gives() {
        assert_eq!(ioapic_pin(Irq::PIT), 2);
        assert_eq!(ioapic_pin(Irq::CASCADE), 9);
        assert_eq!(ioapic_pin(Irq::COM1), 4);
        assert_eq!(ioapic_pin(Irq::SCI), 9);
        assert_eq!(ioapic_pins(0b1_0001_0001), 1 << 2 | 1 << 4 | 1 << 8);
    }

    #[test]
    fn irq0_through_pin_2_reaches_the_cpu_as_the_pins_vector() {
        let rig = rig();
        rig.route(2, 0x50, 0);
        let before = rig.requests.0.load(Ordering::SeqCst);
        rig.bus.pic().line(Irq::PIT).pulse();
        assert!(rig.inputs.pending());
        assert!(
            rig.requests.0.load(Ordering::SeqCst) > before,
            "no exit asked"
        );
        assert_eq!(rig.inputs.acknowledge(), Some(0x50));
        assert_eq!(rig.inputs.acknowledge(), None);
        rig.apics.lapic.write(EOI, 0);
        assert!(!rig.inputs.intr());
        // A pin left masked delivers nothing.
        rig.route(2, 0x50, LVT_MASKED);
        rig.bus.pic().line(Irq::PIT).pulse();
        assert!(!rig.inputs.intr());
    }

    #[test]
    fn the_pic_reaches_the_cpu_only_while_lint0_takes_extint() {
        let mut rig = rig();
        rig.program_pic(5);
        rig.bus.pic().line(Irq::new(5).unwrap()).set_level(true);
        assert!(rig.inputs.intr(), "LINT0 is ExtINT at power-on");
        rig.apics.lapic.write(LINT0, LVT_MASKED | 7 << 8);
        assert!(!rig.inputs.intr(), "a masked LINT0 blocks the 8259A");
        assert_eq!(rig.inputs.acknowledge(), None);
        rig.apics.lapic.write(LINT0, 7 << 8);
        assert_eq!(rig.inputs.acknowledge(), Some(0x25));
    }

    #[test]
    fn the_pics_extint_is_acknowledged_before_the_local_apics_vectors() {
        let mut rig = rig();
        rig.program_pic(5);
        rig.apics.lapic.accept(0xe0, false);
        rig.bus.pic().line(Irq::new(5).unwrap()).pulse();
        assert_eq!(rig.inputs.acknowledge(), Some(0x25));
        assert_eq!(rig.inputs.acknowledge(), Some(0xe0));
    }

    #[test]
    fn a_level_interrupt_holds_remote_irr_until_the_local_apics_eoi() {
        let rig = rig();
        rig.route(4, 0x51, LEVEL);
        let com1 = rig.bus.pic().line(Irq::COM1);
        com1.set_level(true);
        assert_eq!(rig.inputs.acknowledge(), Some(0x51));
        assert_ne!(rig.redirection(4) & REMOTE_IRR, 0);
        com1.set_level(false);
        rig.apics.lapic.write(EOI, 0);
        assert_eq!(
            rig.redirection(4) & REMOTE_IRR,
            0,
            "the EOI reached the I/O APIC"
        );
        assert!(!rig.inputs.intr());
        // Still high at the EOI: delivered again.
        com1.set_level(true);
        assert_eq!(rig.inputs.acknowledge(), Some(0x51));
        rig.apics.lapic.write(EOI, 0);
        assert_eq!(rig.inputs.acknowledge(), Some(0x51));
    }

    #[test]
    fn a_halted_cpu_can_be_woken_by_the_apic_timer_or_an_armed_unmasked_pin() {
        let rig = rig();
        // LINT0 masked: the PIC's lines do not count.
        rig.apics.lapic.write(LINT0, LVT_MASKED | 7 << 8);
        assert!(!rig.inputs.can_arrive());
        rig.apics.lapic.write(LVT_TIMER, 0x40);
        rig.apics.lapic.write(TIMER_INITIAL, 1_000_000_000);
        assert!(rig.inputs.can_arrive(), "the timer runs");
        rig.apics.lapic.write(TIMER_INITIAL, 0);
        assert!(!rig.inputs.can_arrive());
        let com1 = rig.bus.pic().line(Irq::COM1);
        com1.set_armed(true);
        assert!(!rig.inputs.can_arrive(), "pin 4 is masked");
        rig.route(4, 0x51, 0);
        assert!(rig.inputs.can_arrive());
    }

    #[test]
    fn a_self_nmi_written_through_the_bus_raises_the_nmi_input() {
        let rig = rig();
        let on_bus = rig.inputs.lapic_on_bus().unwrap();
        assert_eq!(on_bus.region(), Some((0xfee0_0000, 0x1000)));
        on_bus.mmio_write(u64::from(ICR_LOW), &(4u32 << 8).to_le_bytes());
        assert!(rig.inputs.pending());
        assert!(*rig.inputs.shared.lock(), "the NMI is latched");
    }
}
