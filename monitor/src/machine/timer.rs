//! The PIT's channel 0 in host time: a thread that sleeps until the next
//! rising edge of channel 0's output is due and then pulses IRQ0 on the
//! PIC, whose listener makes the vCPU exit (or wakes a halted guest).
//!
//! The PIT itself keeps no timer (it computes everything from its clock
//! when asked); this thread asks it [`Pit::next_irq0_deadline`] and
//! [`Pit::irq0_edges_until`], and sleeps on the PIT's condition variable,
//! which port writes that change channel 0's schedule signal.
//!
//! Invariants:
//! - The thread never holds the PIT's lock while it touches the PIC
//!   (lock order: neither lock is taken inside the other).
//! - An edge taken from the PIT counts as about to fire
//!   ([`Pit::irq0_may_fire`]) until its pulse reached the PIC, so a
//!   halted vCPU looking between the two never concludes that nothing
//!   can wake it.
//! - Edges that came while nobody looked (a slow host, a stopped thread)
//!   are one pulse: the PIC latches an edge once until it is
//!   acknowledged, as on hardware where the CPU missed ticks.
//! - The thread wakes at most every [`MIN_SLEEP`], however fast the guest
//!   programs the PIT, so a very short period cannot starve the vCPU.
//! - [`PitTimer`]'s drop stops and joins the thread: it lives exactly as
//!   long as the run.
//!
//! [`Pit::next_irq0_deadline`]: crate::devices::pit::Pit::next_irq0_deadline
//! [`Pit::irq0_edges_until`]: crate::devices::pit::Pit::irq0_edges_until
//! [`Pit::irq0_may_fire`]: crate::devices::pit::Pit::irq0_may_fire

use crate::devices::lapic::SharedLapic;
use crate::devices::pic::{Irq, PicLine};
use crate::devices::pit::SharedPit;
use crate::devices::IoBus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The shortest sleep between two looks at the PIT (a 20 kHz rate).
pub const MIN_SLEEP: Duration = Duration::from_micros(50);
/// How long the thread sleeps when channel 0 has no edge coming (a port
/// write that schedules one wakes it earlier).
const IDLE_SLEEP: Duration = Duration::from_secs(1);

/// The running timer thread of one machine.
pub struct PitTimer {
    pit: SharedPit,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PitTimer {
    /// Starts the thread that drives IRQ0 of `bus`'s PIC from its PIT.
    pub fn start(bus: &IoBus) -> std::io::Result<PitTimer> {
        let pit = bus.pit();
        let irq0 = bus.pic().line(Irq::PIT);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (pit, stop) = (pit.clone(), stop.clone());
            std::thread::Builder::new()
                .name("nestmon-pit".into())
                .spawn(move || run(&pit, &irq0, &stop))?
        };
        Ok(PitTimer {
            pit,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for PitTimer {
    fn drop(&mut self) {
        {
            // Under the lock, so the thread cannot miss it between its
            // look at `stop` and its wait.
            let _pit = self.pit.lock();
            self.stop.store(true, Ordering::SeqCst);
        }
        self.pit.notify();
        if let Some(thread) = self.thread.take() {
            // A panic in the thread was already reported on stderr.
            let _ = thread.join();
        }
    }
}

/// The thread: pulses `irq0` for channel 0's edges until `stop`.
fn run(pit: &SharedPit, irq0: &PicLine, stop: &AtomicBool) {
    let mut guard = pit.lock();
    while !stop.load(Ordering::SeqCst) {
        let now = guard.now();
        if guard.irq0_edges_until(now) > 0 {
            drop(guard);
            irq0.pulse();
            guard = pit.lock();
            // Until here a halted vCPU sees the edge as in flight.
            guard.irq0_pulsed();
            continue;
        }
        let sleep = guard
            .next_irq0_deadline()
            .map_or(IDLE_SLEEP, |due| due.saturating_sub(now).max(MIN_SLEEP));
        guard = pit.wait(guard, sleep);
    }
}

/// The running thread of one machine that expires the local APIC's timer
/// in host time: it sleeps until the timer's next expiry (or until a
/// register write changes the schedule) and then lets the APIC raise its
/// LVT interrupt, whose INTR listener makes the vCPU exit. The same rules
/// as the PIT's thread hold: no sleep shorter than [`MIN_SLEEP`] (expiries
/// that came meanwhile are counted as on a periodic timer that missed
/// ticks: one interrupt), and the drop stops and joins the thread.
pub struct LapicTimer {
    lapic: SharedLapic,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LapicTimer {
    /// Starts the thread that runs `lapic`'s timer.
    pub fn start(lapic: &SharedLapic) -> std::io::Result<LapicTimer> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lapic, stop) = (lapic.clone(), stop.clone());
            std::thread::Builder::new()
                .name("nestmon-lapic-timer".into())
                .spawn(move || run_lapic_timer(&lapic, &stop))?
        };
        Ok(LapicTimer {
            lapic: lapic.clone(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LapicTimer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Counted under the APIC's lock: a thread between its look at
        // `stop` and its wait sees the wake and looks again.
        self.lapic.wake_timer_thread();
        if let Some(thread) = self.thread.take() {
            // A panic in the thread was already reported on stderr.
            let _ = thread.join();
        }
    }
}

/// The thread: expires `lapic`'s timer on time until `stop`.
fn run_lapic_timer(lapic: &SharedLapic, stop: &AtomicBool) {
    loop {
        let check = lapic.run_timer_until(lapic.now());
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let sleep = check
            .time_left()
            .map_or(IDLE_SLEEP, |left| left.max(MIN_SLEEP));
        lapic.wait_for_timer_change(&check, sleep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn bus() -> IoBus {
        IoBus::with_serial_writer(Box::new(std::io::sink())).unwrap()
    }

    /// Programs channel 0 in mode 2 at `count` and unmasks IRQ0 with the
    /// PIC at vectors 0x20.
    fn program(bus: &mut IoBus, count: u16) {
        for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
            bus.write(port, 1, value);
        }
        bus.write(0x21, 1, 0xfe);
        bus.write(0x43, 1, 0x34);
        bus.write(0x40, 1, u32::from(count & 0xff));
        bus.write(0x40, 1, u32::from(count >> 8));
    }

    #[test]
    fn timer_raises_irq0_at_the_programmed_rate() {
        let mut bus = bus();
        program(&mut bus, 1193); // 1 kHz
        let pic = bus.pic();
        let _timer = PitTimer::start(&bus).unwrap();
        let start = Instant::now();
        let mut taken = 0;
        while taken < 20 {
            assert!(start.elapsed() < Duration::from_secs(20), "took {taken}");
            if let Some(vector) = pic.acknowledge_if_pending() {
                assert_eq!(vector, 0x20);
                taken += 1;
                pic.with(|p| p.write(0x20, 0x20));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // Edges never come faster than the PIT's period.
        assert!(start.elapsed() >= Duration::from_millis(19));
    }

    #[test]
    fn timer_sleeps_while_channel_0_has_no_edge_and_wakes_when_programmed() {
        let mut bus = bus();
        for (port, value) in [(0x43, 0x30), (0x21, 0xfa)] {
            bus.write(port, 1, value); // mode 0, no count: nothing comes
        }
        let pic = bus.pic();
        let _timer = PitTimer::start(&bus).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pic.acknowledge_if_pending(), None);
        bus.write(0x40, 1, 0x10); // one-shot of 16 clocks
        bus.write(0x40, 1, 0x00);
        let start = Instant::now();
        while !pic.intr() {
            assert!(start.elapsed() < Duration::from_secs(20));
            std::thread::sleep(Duration::from_micros(100));
        }
        assert_eq!(pic.acknowledge_if_pending(), Some(0x08));
    }

    #[test]
    fn dropping_the_timer_stops_its_thread_promptly() {
        let bus = bus();
        let timer = PitTimer::start(&bus).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let start = Instant::now();
        drop(timer);
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}
