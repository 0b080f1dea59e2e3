//! The PC's Intel 8254 programmable interval timer at ports `0x40-0x43`,
//! and the bits of system control port B (`0x61`) that belong to it:
//! channel 2's gate and output, the speaker enable, and the refresh toggle.
//!
//! [`Pit`] is a pure state machine over a [`MonotonicClock`] the caller injects
//! (the host's monotonic clock in a run, a fake one in tests). It counts
//! at 1.193182 MHz, [`PIT_HZ`] ticks per second of that clock, and keeps
//! no timer of its own: every value (a counter, an output) is computed
//! from the time elapsed since the channel was loaded. Channel 0's output
//! drives IRQ0; the machine asks [`Pit::next_irq0_deadline`] when the next
//! rising edge is due and [`Pit::irq0_edges_until`] how many came, and
//! pulses the PIC's IRQ0 on time (see `machine::timer`). [`SharedPit`]
//! puts it behind a lock for the port bus and that timer.
//!
//! Modelled: channels 0-2 in modes 0-5 (6 and 7 are 2 and 3), binary and
//! BCD counting, the LSB, MSB and LSB-then-MSB access modes with separate
//! read and write byte sequencing, the counter latch command, the
//! read-back command (count and status; the first latch wins until it is
//! read), the null count flag, the gate (channel 2's, from port `0x61`
//! bit 0; channels 0 and 1 have theirs tied high, as on a PC): low
//! suspends counting in modes 0, 2, 3 and 4 (and forces the output high
//! in modes 2 and 3), a rising edge triggers modes 1 and 5 and reloads
//! modes 2 and 3. A count written while mode 2 or 3 counts takes effect
//! at the end of the current period.
//!
//! Simplifications: the counting element is loaded at the moment the
//! count is written rather than at the next clock pulse, so the counter
//! reads the count itself right after the write (as in QEMU); a new count
//! in mode 3 waits for the end of the full period, not of the half
//! period; for an odd count in mode 3 the counter's intermediate values
//! are QEMU's (`N - (2d mod N)`), while the output is high for
//! `(N + 1) / 2` clocks and low for `(N - 1) / 2`, as the datasheet says.
//!
//! Reset state: channel 0 in mode 2 with count 65536 (18.2 Hz), as a
//! PC BIOS leaves it; channels 1 and 2 in mode 3 with count 65536
//! (QEMU's reset), channel 2's gate low; port `0x61` reads 0 except the
//! output bit and the refresh toggle.
//!
//! Port `0x61`: bit 0 channel 2's gate, bit 1 speaker data enable (kept;
//! there is no sound), bits 2-3 kept as written (the PIIX parity and
//! channel check enables, which nothing here raises), bit 4 the refresh
//! request toggle, which flips at every read (QEMU's behaviour; it tells
//! a polling loop that time passes), bit 5 channel 2's output, bits 6-7
//! (the NMI sources) read 0.
//!
//! Invariants:
//! - Every operation first brings the channels up to the clock's current
//!   tick ([`Channel::catch_up`]), counting the rising edges of each
//!   output since the last look, so no edge is lost when a channel is
//!   reprogrammed before anyone asked for its edges.
//! - A channel's counter and output are functions of `d`, the clocks
//!   counted since it was loaded; reprogramming only changes where `d`
//!   starts.

use super::{DeviceError, IoBus, IoOutcome, PortDevice};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The 8254's input clock: 1.193182 MHz (a third of the NTSC color burst).
pub const PIT_HZ: u64 = 1_193_182;
/// Channel 0's counter port; channels 1 and 2 follow, then the control
/// word port.
pub const PIT_PORT: u16 = 0x40;
/// System control port B.
pub const PORT_B: u16 = 0x61;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A monotonic clock the PIT counts from.
pub trait MonotonicClock: Send + Sync {
    /// The time since some fixed point; never goes back.
    fn now(&self) -> Duration;
}

/// The host's monotonic clock, from the moment it was made.
#[derive(Clone, Copy, Debug)]
pub struct HostMonotonicClock {
    start: Instant,
}

impl HostMonotonicClock {
    /// A clock that reads 0 now.
    pub fn new() -> HostMonotonicClock {
        HostMonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Default for HostMonotonicClock {
    fn default() -> Self {
        HostMonotonicClock::new()
    }
}

/// A clock tests move by hand.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct ManualClock(std::sync::Mutex<Duration>);

#[cfg(test)]
impl ManualClock {
    /// Moves the clock `by` on.
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

#[cfg(test)]
impl MonotonicClock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap()
    }
}

impl MonotonicClock for HostMonotonicClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The PIT clock pulses that have happened by `time`.
pub fn ticks_at(time: Duration) -> u64 {
    (time.as_nanos() * u128::from(PIT_HZ) / NANOS_PER_SECOND) as u64
}

/// The earliest time at which `tick` clock pulses have happened.
pub fn time_of_tick(tick: u64) -> Duration {
    let nanos = (u128::from(tick) * NANOS_PER_SECOND).div_ceil(u128::from(PIT_HZ));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// How a channel's count is read and written (control word bits 5-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// The low byte only (the high byte is 0).
    Lsb = 1,
    /// The high byte only (the low byte is 0).
    Msb = 2,
    /// The low byte, then the high byte.
    Word = 3,
}

/// Whether and how a channel counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A control word was written and no count yet (or, in mode 0, the
    /// first byte of a new count): the output holds the mode's initial
    /// level.
    NoCount,
    /// Modes 1 and 5: a count is written and waits for a gate trigger.
    Armed,
    /// Counting: `d` = the current tick minus `origin`.
    Running {
        /// The tick at which the counter was loaded (d = 0).
        origin: u64,
    },
    /// Stopped by a low gate after `d` clocks (modes 0, 2, 3, 4).
    Suspended {
        /// Clocks counted before the gate went low.
        d: u64,
    },
}

/// A count latched for reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Latched {
    value: u16,
    /// LSB-then-MSB access: the LSB was read.
    msb_next: bool,
}

/// One of the three counters.
#[derive(Clone, Debug)]
struct Channel {
    /// Mode 0-5.
    mode: u8,
    /// Mode bits as written (for the status byte).
    mode_bits: u8,
    access: Access,
    bcd: bool,
    /// The count register: the last count written (1..=65536, or
    /// 1..=10000 in BCD).
    written: u32,
    /// The count the counting element was last loaded with.
    count: u32,
    /// Word access: the LSB written, waiting for the MSB.
    pending_lsb: Option<u8>,
    /// Word access, unlatched reads: the MSB comes next.
    read_msb_next: bool,
    latch: Option<Latched>,
    status: Option<u8>,
    null_count: bool,
    gate: bool,
    phase: Phase,
    /// The counter's value when no count is being counted.
    held: u16,
    /// Modes 2 and 3: a new count (`.1`) to load at tick `.0`, the end of
    /// the current period.
    reload: Option<(u64, u32)>,
    /// The tick up to which output edges are counted in `edges`.
    seen: u64,
    /// Rising edges of the output not yet taken.
    edges: u64,
}

impl Channel {
    /// A channel counting `count` in `mode` (LSB-then-MSB, binary) since `now`.
    fn counting(mode: u8, count: u32, gate: bool, now: u64) -> Channel {
        Channel {
            mode,
            mode_bits: mode,
            access: Access::Word,
            bcd: false,
            written: count,
            count,
            pending_lsb: None,
            read_msb_next: false,
            latch: None,
            status: None,
            null_count: false,
            gate,
            phase: if gate {
                Phase::Running { origin: now }
            } else {
                Phase::Suspended { d: 0 }
            },
            held: 0,
            reload: None,
            seen: now,
            edges: 0,
        }
    }

    /// The counter's modulus: 65536 in binary, 10000 in BCD.
    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            0x1_0000
        }
    }

    /// Clocks counted at tick `t`.
    fn d(&self, t: u64) -> Option<u64> {
        match self.phase {
            Phase::Running { origin } => Some(t.saturating_sub(origin)),
            Phase::Suspended { d } => Some(d),
            Phase::NoCount | Phase::Armed => None,
        }
    }

    /// The output `d` clocks after loading `n`.
    fn out_after(&self, d: u64, n: u64) -> bool {
        match self.mode {
            0 | 1 => d >= n,
            2 => d % n != n - 1,
            3 => d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    /// The output at tick `t` (the channel caught up to `t`).
    fn out(&self, t: u64) -> bool {
        match self.phase {
            Phase::NoCount => self.mode != 0,
            Phase::Armed => true,
            Phase::Suspended { .. } if matches!(self.mode, 2 | 3) => true,
            Phase::Running { .. } | Phase::Suspended { .. } => {
                let d = self.d(t).unwrap_or(0);
                self.out_after(d, u64::from(self.count))
            }
        }
    }

    /// The counting element at tick `t`, as binary (0 stands for the
    /// modulus).
    fn counter(&self, t: u64) -> u16 {
        let Some(d) = self.d(t) else {
            return self.held;
        };
        let n = u64::from(self.count);
        let m = self.modulus();
        let value = match self.mode {
            2 => n - d % n,
            3 => n - (2 * d) % n,
            _ => (n + m - d % m) % m,
        };
        (value % m) as u16
    }

    /// The counter as the guest reads it (BCD-encoded in BCD mode).
    fn read_value(&self, t: u64) -> u16 {
        let value = self.counter(t);
        if self.bcd {
            to_bcd(value)
        } else {
            value
        }
    }

    /// Rising edges of the output at `d` in `(from, to]`, counting `n`.
    fn edges_between(&self, from: u64, to: u64, n: u64) -> u64 {
        if to <= from {
            return 0;
        }
        match self.mode {
            0 | 1 => u64::from(from < n && n <= to),
            2 | 3 if n == 1 => 0,
            2 | 3 => to / n - from / n,
            _ => u64::from(from <= n && n < to),
        }
    }

    /// The first `d` after `from` with a rising edge.
    fn next_edge_after(&self, from: u64) -> Option<u64> {
        let n = u64::from(self.count);
        match self.mode {
            0 | 1 => (from < n).then_some(n),
            2 | 3 if n == 1 => None,
            2 | 3 => Some((from / n + 1) * n),
            _ => (from <= n).then_some(n + 1),
        }
    }

    /// Brings the channel to tick `t`: counts the output's rising edges
    /// since the last look and applies a reload that came due.
    fn catch_up(&mut self, t: u64) {
        if t <= self.seen {
            return;
        }
        if let Phase::Running { origin } = self.phase {
            let mut from = self.seen;
            let mut origin = origin;
            if let Some((at, count)) = self.reload {
                if at <= t {
                    let n = u64::from(self.count);
                    self.edges += self.edges_between(from - origin, at - origin, n);
                    self.count = count;
                    self.reload = None;
                    self.null_count = false;
                    origin = at;
                    from = at;
                    self.phase = Phase::Running { origin };
                }
            }
            self.edges += self.edges_between(from - origin, t - origin, u64::from(self.count));
        }
        self.seen = t;
    }

    /// Applies `change` at tick `t`, counting a rising edge of the output
    /// it causes.
    fn transition(&mut self, t: u64, change: impl FnOnce(&mut Channel, u64)) {
        self.catch_up(t);
        let before = self.out(t);
        change(self, t);
        if !before && self.out(t) {
            self.edges += 1;
        }
    }

    /// Loads the counting element with `count` at tick `t`, counting at
    /// once if the gate allows.
    fn load(&mut self, count: u32, t: u64) {
        self.count = count;
        self.reload = None;
        self.null_count = false;
        self.phase = if self.gate || matches!(self.mode, 1 | 5) {
            Phase::Running { origin: t }
        } else {
            Phase::Suspended { d: 0 }
        };
    }

    /// A control word for this channel (not a latch command).
    fn program(&mut self, t: u64, access: Access, mode_bits: u8, bcd: bool) {
        self.transition(t, |ch, t| {
            ch.held = ch.counter(t);
            ch.access = access;
            ch.mode_bits = mode_bits;
            ch.mode = if mode_bits >= 6 {
                mode_bits - 4
            } else {
                mode_bits
            };
            ch.bcd = bcd;
            ch.phase = Phase::NoCount;
            ch.reload = None;
            ch.latch = None;
            ch.status = None;
            ch.pending_lsb = None;
            ch.read_msb_next = false;
            ch.null_count = true;
        });
    }

    /// A byte written to the channel's counter port.
    fn write_count(&mut self, t: u64, value: u8) {
        let raw = match (self.access, self.pending_lsb.take()) {
            (Access::Lsb, _) => u16::from(value),
            (Access::Msb, _) => u16::from(value) << 8,
            (Access::Word, Some(lsb)) => u16::from(lsb) | u16::from(value) << 8,
            (Access::Word, None) => {
                self.pending_lsb = Some(value);
                if self.mode == 0 {
                    // Mode 0: the first byte stops counting, and the
                    // output goes low until the new count runs out.
                    self.transition(t, |ch, t| {
                        ch.held = ch.counter(t);
                        ch.phase = Phase::NoCount;
                    });
                }
                return;
            }
        };
        let count = if self.bcd {
            match from_bcd(raw) {
                0 => 10_000,
                n => n,
            }
        } else {
            match u32::from(raw) {
                0 => 0x1_0000,
                n => n,
            }
        };
        self.written = count;
        self.null_count = true;
        self.transition(t, |ch, t| match (ch.mode, ch.phase) {
            (1 | 5, Phase::NoCount) => ch.phase = Phase::Armed,
            (1 | 5, _) => {}
            (2 | 3, Phase::Running { origin }) => {
                let n = u64::from(ch.count);
                let at = origin + ((t - origin) / n + 1) * n;
                ch.reload = Some((at, count));
            }
            (2 | 3, Phase::Suspended { .. }) => {}
            _ => ch.load(count, t),
        });
    }

    /// A byte read from the channel's counter port.
    fn read_count(&mut self, t: u64) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        let (value, msb) = match self.latch {
            Some(latched) => {
                let msb = match self.access {
                    Access::Lsb => false,
                    Access::Msb => true,
                    Access::Word => latched.msb_next,
                };
                self.latch = (self.access == Access::Word && !msb).then_some(Latched {
                    msb_next: true,
                    ..latched
                });
                (latched.value, msb)
            }
            None => {
                let msb = match self.access {
                    Access::Lsb => false,
                    Access::Msb => true,
                    Access::Word => {
                        let msb = self.read_msb_next;
                        self.read_msb_next = !msb;
                        msb
                    }
                };
                (self.read_value(t), msb)
            }
        };
        let [lsb_byte, msb_byte] = value.to_le_bytes();
        if msb {
            msb_byte
        } else {
            lsb_byte
        }
    }

    /// The counter latch command (ignored while a latched count is unread).
    fn latch_count(&mut self, t: u64) {
        if self.latch.is_none() {
            self.latch = Some(Latched {
                value: self.read_value(t),
                msb_next: false,
            });
        }
    }

    /// Latches the status byte (ignored while a latched status is unread).
    fn latch_status(&mut self, t: u64) {
        if self.status.is_none() {
            self.status = Some(
                u8::from(self.out(t)) << 7
                    | u8::from(self.null_count) << 6
                    | (self.access as u8) << 4
                    | self.mode_bits << 1
                    | u8::from(self.bcd),
            );
        }
    }

    /// The gate input goes to `level` at tick `t`.
    fn set_gate(&mut self, t: u64, level: bool) {
        self.transition(t, |ch, t| {
            let rising = level && !ch.gate;
            let falling = !level && ch.gate;
            ch.gate = level;
            match (ch.mode, ch.phase) {
                (0 | 2 | 3 | 4, Phase::Running { origin }) if falling => {
                    ch.phase = Phase::Suspended { d: t - origin };
                }
                (0 | 4, Phase::Suspended { d }) if rising => {
                    ch.phase = Phase::Running { origin: t - d };
                }
                (1 | 2 | 3 | 5, Phase::Armed | Phase::Running { .. } | Phase::Suspended { .. })
                    if rising =>
                {
                    let count = ch.written;
                    ch.load(count, t);
                }
                _ => {}
            }
        });
    }
}

/// The binary value of BCD digits (digits above 9 count at face value).
fn from_bcd(raw: u16) -> u32 {
    (0..4).fold(0, |value, digit| {
        let nibble = u32::from(raw >> (4 * (3 - digit)) & 0xf);
        value * 10 + nibble
    })
}

/// `value` (below 10000) as four BCD digits.
fn to_bcd(value: u16) -> u16 {
    let value = value % 10_000;
    (0..4).fold(0, |bcd, digit| {
        let decimal = value / 10u16.pow(digit) % 10;
        bcd | decimal << (4 * digit)
    })
}

/// The 8254 and port `0x61`.
pub struct Pit {
    clock: Arc<dyn MonotonicClock>,
    channels: [Channel; 3],
    /// Port `0x61` bit 1.
    speaker: bool,
    /// Port `0x61` bits 2-3.
    port_b_kept: u8,
    /// Port `0x61` bit 4.
    refresh: bool,
    /// Channel 0 edges were taken ([`Pit::irq0_edges_until`]) and their
    /// pulse may not have reached the PIC yet ([`Pit::irq0_pulsed`]).
    irq0_in_flight: bool,
}

impl std::fmt::Debug for Pit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pit")
            .field("channels", &self.channels)
            .field("speaker", &self.speaker)
            .finish_non_exhaustive()
    }
}

impl Pit {
    /// The PIT as a PC BIOS leaves it (see the module documentation),
    /// counting from `clock`'s present.
    pub fn new(clock: Arc<dyn MonotonicClock>) -> Pit {
        let now = ticks_at(clock.now());
        Pit {
            clock,
            channels: [
                Channel::counting(2, 0x1_0000, true, now),
                Channel::counting(3, 0x1_0000, true, now),
                Channel::counting(3, 0x1_0000, false, now),
            ],
            speaker: false,
            port_b_kept: 0,
            refresh: false,
            irq0_in_flight: false,
        }
    }

    /// The clock's time now.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    fn tick(&self) -> u64 {
        ticks_at(self.clock.now())
    }

    /// A guest `in` of one byte at `port` (`0x40-0x43` or `0x61`); other
    /// ports read all ones.
    pub fn read(&mut self, port: u16) -> u8 {
        let t = self.tick();
        match port {
            0x40..=0x42 => {
                let channel = &mut self.channels[usize::from(port - PIT_PORT)];
                channel.catch_up(t);
                channel.read_count(t)
            }
            // The control word register cannot be read (QEMU reads 0).
            0x43 => 0,
            PORT_B => {
                let channel = &mut self.channels[2];
                channel.catch_up(t);
                self.refresh = !self.refresh;
                u8::from(channel.gate)
                    | u8::from(self.speaker) << 1
                    | self.port_b_kept
                    | u8::from(self.refresh) << 4
                    | u8::from(channel.out(t)) << 5
            }
            _ => 0xff,
        }
    }

    /// A guest `out` of one byte at `port` (`0x40-0x43` or `0x61`); other
    /// ports are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        let t = self.tick();
        match port {
            0x40..=0x42 => self.channels[usize::from(port - PIT_PORT)].write_count(t, value),
            0x43 => self.control(t, value),
            PORT_B => {
                self.channels[2].set_gate(t, value & 0x01 != 0);
                self.speaker = value & 0x02 != 0;
                self.port_b_kept = value & 0x0c;
            }
            _ => {}
        }
    }

    /// A control word (port `0x43`).
    fn control(&mut self, t: u64, value: u8) {
        let select = value >> 6;
        if select == 3 {
            // Read-back: bit 5 clear latches the count, bit 4 clear the
            // status, of each channel whose bit (1-3) is set.
            for (i, channel) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                channel.catch_up(t);
                if value & 0x20 == 0 {
                    channel.latch_count(t);
                }
                if value & 0x10 == 0 {
                    channel.latch_status(t);
                }
            }
            return;
        }
        let channel = &mut self.channels[usize::from(select)];
        channel.catch_up(t);
        let access = match (value >> 4) & 3 {
            0 => return channel.latch_count(t),
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        };
        channel.program(t, access, (value >> 1) & 7, value & 1 != 0);
    }

    /// Channel `channel`'s output now (0-2).
    pub fn output(&mut self, channel: usize) -> bool {
        let t = self.tick();
        let channel = &mut self.channels[channel];
        channel.catch_up(t);
        channel.out(t)
    }

    /// The rising edges of channel 0's output (IRQ0) that happened by
    /// `now` and were not yet taken; takes them. Until
    /// [`Pit::irq0_pulsed`], IRQ0 counts as about to fire.
    pub fn irq0_edges_until(&mut self, now: Duration) -> u64 {
        let channel = &mut self.channels[0];
        channel.catch_up(ticks_at(now));
        let edges = std::mem::take(&mut channel.edges);
        self.irq0_in_flight |= edges > 0;
        edges
    }

    /// The edges taken by [`Pit::irq0_edges_until`] were pulsed on the
    /// PIC: from now on the PIC, not the PIT, says an interrupt waits.
    pub fn irq0_pulsed(&mut self) {
        self.irq0_in_flight = false;
    }

    /// When channel 0's next rising edge is due: at once (the time of the
    /// last look) if an edge was not taken yet, `None` if no edge will
    /// come without the guest reprogramming the channel.
    pub fn next_irq0_deadline(&self) -> Option<Duration> {
        let channel = &self.channels[0];
        if channel.edges > 0 {
            return Some(time_of_tick(channel.seen));
        }
        let Phase::Running { origin } = channel.phase else {
            return None;
        };
        let d = channel.next_edge_after(channel.seen - origin)?;
        Some(time_of_tick(origin + d))
    }

    /// Whether IRQ0 may still get an edge by itself: one is pending or
    /// due, or taken and on its way to the PIC.
    pub fn irq0_may_fire(&self) -> bool {
        self.irq0_in_flight || self.next_irq0_deadline().is_some()
    }
}

struct Shared {
    pit: Mutex<Pit>,
    /// Signalled when channel 0's edge schedule changes.
    changed: Condvar,
}

/// The PIT shared by the port bus and the machine's timer. Clones share
/// the PIT.
#[derive(Clone)]
pub struct SharedPit {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SharedPit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPit")
            .field("pit", &*self.lock())
            .finish()
    }
}

impl SharedPit {
    /// Shares `pit`.
    pub fn new(pit: Pit) -> SharedPit {
        SharedPit {
            shared: Arc::new(Shared {
                pit: Mutex::new(pit),
                changed: Condvar::new(),
            }),
        }
    }

    /// The PIT, locked.
    pub fn lock(&self) -> MutexGuard<'_, Pit> {
        // Every operation leaves the PIT consistent, even one that panicked.
        self.shared.pit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases `guard` and waits until channel 0's schedule changes
    /// ([`SharedPit::notify`]) or `timeout` passes (or spuriously).
    pub fn wait<'a>(&self, guard: MutexGuard<'a, Pit>, timeout: Duration) -> MutexGuard<'a, Pit> {
        match self.shared.changed.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// Wakes whoever waits in [`SharedPit::wait`].
    pub fn notify(&self) {
        self.shared.changed.notify_all();
    }

    /// Puts the PIT on `bus`: `0x40-0x43` and `0x61`.
    pub fn register(&self, bus: &mut IoBus) -> Result<(), DeviceError> {
        bus.register(
            PIT_PORT,
            4,
            Box::new(PitPorts {
                pit: self.clone(),
                base: PIT_PORT,
                name: "pit",
            }),
        )?;
        bus.register(
            PORT_B,
            1,
            Box::new(PitPorts {
                pit: self.clone(),
                base: PORT_B,
                name: "port-b",
            }),
        )
    }
}

/// PIT ports on the bus.
struct PitPorts {
    pit: SharedPit,
    base: u16,
    name: &'static str,
}

impl PortDevice for PitPorts {
    fn name(&self) -> &'static str {
        self.name
    }

    fn max_access_size(&self) -> u8 {
        1
    }

    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        u32::from(self.pit.lock().read(self.base + offset))
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) -> IoOutcome {
        let changed = {
            let mut pit = self.pit.lock();
            let before = pit.next_irq0_deadline();
            pit.write(self.base + offset, value as u8);
            pit.next_irq0_deadline() != before
        };
        if changed {
            self.pit.notify();
        }
        IoOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A clock the test moves by hand, in PIT ticks.
    #[derive(Default)]
    struct FakeClock(AtomicU64);

    impl FakeClock {
        fn advance(&self, ticks: u64) {
            let now = self.0.load(Ordering::SeqCst);
            self.0.store(now + ticks, Ordering::SeqCst);
        }
    }

    impl MonotonicClock for FakeClock {
        fn now(&self) -> Duration {
            time_of_tick(self.0.load(Ordering::SeqCst))
        }
    }

    fn pit() -> (Pit, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        clock.advance(1000);
        (Pit::new(clock.clone()), clock)
    }

    /// Programs channel `ch` in `mode`, LSB then MSB, binary, with `count`.
    fn program(pit: &mut Pit, ch: u16, mode: u8, count: u16) {
        pit.write(0x43, (ch as u8) << 6 | 0x30 | mode << 1);
        pit.write(0x40 + ch, count as u8);
        pit.write(0x40 + ch, (count >> 8) as u8);
    }

    fn latched(pit: &mut Pit, ch: u16) -> u16 {
        pit.write(0x43, (ch as u8) << 6);
        u16::from(pit.read(0x40 + ch)) | u16::from(pit.read(0x40 + ch)) << 8
    }

    #[test]
    fn ticks_and_times_convert_both_ways_at_1193182_hz() {
        assert_eq!(ticks_at(Duration::from_secs(1)), PIT_HZ);
        assert_eq!(ticks_at(Duration::from_nanos(838)), 0);
        assert_eq!(ticks_at(Duration::from_nanos(839)), 1);
        for tick in [0, 1, 2, 1193, 65536, 1 << 40] {
            let t = time_of_tick(tick);
            assert_eq!(ticks_at(t), tick);
            assert_eq!(
                ticks_at(t - Duration::from_nanos(1).min(t)),
                tick.saturating_sub(1)
            );
        }
    }

    #[test]
    fn reset_state_runs_channel_0_at_18_hz() {
        let (mut pit, clock) = pit();
        assert_eq!(latched(&mut pit, 0), 0, "65536 reads as 0");
        clock.advance(1);
        assert_eq!(latched(&mut pit, 0), 0xffff);
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 0);
        let due = pit.next_irq0_deadline().unwrap();
        assert_eq!(ticks_at(due), 1000 + 65536);
    }

    #[test]
    fn mode_0_counts_down_and_raises_the_output_at_zero() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 0, 100);
        assert!(!pit.output(0), "low after the count is written");
        assert_eq!(latched(&mut pit, 0), 100);
        clock.advance(30);
        assert_eq!(latched(&mut pit, 0), 70);
        clock.advance(69);
        assert!(!pit.output(0));
        clock.advance(1);
        assert!(pit.output(0), "high at terminal count");
        assert_eq!(latched(&mut pit, 0), 0);
        clock.advance(5);
        assert_eq!(latched(&mut pit, 0), 0xfffb, "keeps counting, wrapping");
        assert!(pit.output(0), "and stays high");
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 1);
        assert_eq!(pit.next_irq0_deadline(), None, "one-shot");
    }

    #[test]
    fn one_shot_edge_taken_counts_as_about_to_fire_until_pulsed() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 0, 100);
        assert!(pit.irq0_may_fire(), "counting towards its edge");
        clock.advance(100);
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 1);
        assert_eq!(pit.next_irq0_deadline(), None, "one-shot");
        // The timer thread pulses the PIC after it lets go of the PIT: a
        // halted vCPU that looks in between must not give up.
        assert!(pit.irq0_may_fire(), "taken, not yet on the PIC");
        pit.irq0_pulsed();
        assert!(!pit.irq0_may_fire(), "the PIC has it now");
    }

    #[test]
    fn mode_0_first_byte_of_a_new_count_stops_counting() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 0, 10);
        clock.advance(20);
        assert!(pit.output(0));
        pit.write(0x40, 50);
        assert!(!pit.output(0), "output low again");
        clock.advance(100);
        assert!(!pit.output(0), "not counting without the MSB");
        pit.write(0x40, 0);
        clock.advance(49);
        assert!(!pit.output(0));
        clock.advance(1);
        assert!(pit.output(0));
    }

    #[test]
    fn mode_2_rate_generator_edges_once_per_period() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 2, 1193);
        let start = pit.now();
        let first = pit.next_irq0_deadline().unwrap();
        assert_eq!(ticks_at(first) - ticks_at(start), 1193);
        clock.advance(1192);
        assert!(!pit.output(0), "low for the clock at count 1");
        assert_eq!(latched(&mut pit, 0), 1);
        clock.advance(1);
        assert!(pit.output(0));
        assert_eq!(latched(&mut pit, 0), 1193, "reloaded");
        clock.advance(1193 * 10);
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 11);
        assert_eq!(pit.irq0_edges_until(now), 0, "taken");
        let next = pit.next_irq0_deadline().unwrap();
        assert_eq!(ticks_at(next) - ticks_at(now), 1193);
    }

    #[test]
    fn mode_3_square_wave_is_high_for_the_first_half() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 3, 10);
        for (step, high, counter) in [(0, true, 10), (4, true, 2), (1, false, 10), (4, false, 2)] {
            clock.advance(step);
            assert_eq!(pit.output(0), high, "at +{step}");
            assert_eq!(latched(&mut pit, 0), counter);
        }
        clock.advance(1);
        assert!(pit.output(0));
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 1);
        program(&mut pit, 0, 3, 5);
        clock.advance(2);
        assert!(pit.output(0), "odd count: high for 3 clocks");
        clock.advance(1);
        assert!(!pit.output(0), "low for 2");
        clock.advance(2);
        assert!(pit.output(0));
    }

    #[test]
    fn mode_4_software_strobe_pulses_low_for_one_clock() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 4, 20);
        assert!(pit.output(0));
        clock.advance(20);
        assert!(!pit.output(0));
        clock.advance(1);
        assert!(pit.output(0));
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 1);
        assert_eq!(pit.next_irq0_deadline(), None);
    }

    #[test]
    fn mode_1_and_5_wait_for_a_gate_trigger() {
        let (mut pit, clock) = pit();
        program(&mut pit, 2, 1, 10);
        assert!(pit.output(2));
        clock.advance(50);
        assert!(pit.output(2), "no trigger, gate low");
        pit.write(0x61, 0x01);
        assert!(!pit.output(2), "triggered: low until terminal count");
        clock.advance(10);
        assert!(pit.output(2));
        pit.write(0x61, 0x00);
        pit.write(0x61, 0x01);
        assert!(!pit.output(2), "retriggered");

        program(&mut pit, 2, 5, 10);
        pit.write(0x61, 0x00);
        pit.write(0x61, 0x01);
        clock.advance(10);
        assert!(!pit.output(2), "strobe at terminal count");
        clock.advance(1);
        assert!(pit.output(2));
    }

    #[test]
    fn channel_0_in_mode_1_never_fires_because_its_gate_is_tied_high() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 1, 10);
        clock.advance(100);
        assert!(pit.output(0));
        assert_eq!(pit.next_irq0_deadline(), None);
    }

    #[test]
    fn low_gate_suspends_mode_0_counting() {
        let (mut pit, clock) = pit();
        pit.write(0x61, 0x01);
        program(&mut pit, 2, 0, 100);
        clock.advance(40);
        pit.write(0x61, 0x00);
        clock.advance(1000);
        assert_eq!(latched(&mut pit, 2), 60, "held while the gate is low");
        assert!(!pit.output(2));
        pit.write(0x61, 0x01);
        clock.advance(60);
        assert!(pit.output(2));
    }

    #[test]
    fn low_gate_forces_mode_2_high_and_a_rising_gate_reloads() {
        let (mut pit, clock) = pit();
        pit.write(0x61, 0x01);
        program(&mut pit, 2, 2, 10);
        clock.advance(9);
        assert!(!pit.output(2));
        pit.write(0x61, 0x00);
        assert!(pit.output(2), "forced high");
        clock.advance(100);
        pit.write(0x61, 0x01);
        assert_eq!(latched(&mut pit, 2), 10, "reloaded on the rising gate");
        clock.advance(9);
        assert!(!pit.output(2));
    }

    #[test]
    fn new_count_in_mode_2_takes_effect_at_the_end_of_the_period() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 2, 100);
        clock.advance(30);
        pit.write(0x40, 10);
        pit.write(0x40, 0);
        assert_eq!(latched(&mut pit, 0), 70, "the current period goes on");
        let due = pit.next_irq0_deadline().unwrap();
        clock.advance(70);
        assert_eq!(pit.now(), due);
        assert_eq!(latched(&mut pit, 0), 10, "new count from the boundary");
        clock.advance(20);
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 3);
    }

    #[test]
    fn reprogramming_keeps_an_edge_nobody_took_yet() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 0, 10);
        clock.advance(15);
        program(&mut pit, 0, 0, 1000);
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 1, "the first count ran out");
        assert!(pit.next_irq0_deadline().is_some());
    }

    #[test]
    fn control_word_that_forces_a_low_output_high_is_an_edge() {
        let (mut pit, _clock) = pit();
        program(&mut pit, 0, 0, 10);
        assert!(!pit.output(0));
        pit.write(0x43, 0x34); // mode 2: output high at once
        assert!(pit.output(0));
        let now = pit.now();
        assert_eq!(pit.irq0_edges_until(now), 1);
        assert_eq!(pit.next_irq0_deadline(), None, "no count yet");
    }

    #[test]
    fn latch_command_freezes_the_value_until_both_bytes_are_read() {
        let (mut pit, clock) = pit();
        program(&mut pit, 0, 0, 0x1234);
        pit.write(0x43, 0x00);
        clock.advance(0x100);
        pit.write(0x43, 0x00); // ignored: the first latch is unread
        assert_eq!(pit.read(0x40), 0x34);
        clock.advance(0x100);
        assert_eq!(pit.read(0x40), 0x12);
        assert_eq!(pit.read(0x40), 0x34, "live LSB of 0x1034");
        assert_eq!(pit.read(0x40), 0x10, "live MSB");
    }

    #[test]
    fn lsb_only_and_msb_only_access_modes() {
        let (mut pit, clock) = pit();
        pit.write(0x43, 0x10); // channel 0, LSB only, mode 0
        pit.write(0x40, 0x80);
        assert_eq!(pit.read(0x40), 0x80);
        assert_eq!(pit.read(0x40), 0x80, "always the LSB");
        clock.advance(0x80);
        assert!(pit.output(0));
        pit.write(0x43, 0x20); // MSB only, mode 0
        pit.write(0x40, 0x02);
        assert_eq!(pit.read(0x40), 0x02);
        clock.advance(0x1ff);
        assert_eq!(pit.read(0x40), 0x00);
        assert!(!pit.output(0));
        clock.advance(1);
        assert!(pit.output(0), "0x200 clocks");
    }

    #[test]
    fn reads_and_writes_keep_separate_byte_order() {
        let (mut pit, _clock) = pit();
        program(&mut pit, 0, 4, 0x1234);
        assert_eq!(pit.read(0x40), 0x34);
        pit.write(0x40, 0x78);
        assert_eq!(pit.read(0x40), 0x12, "the read order is its own");
        pit.write(0x40, 0x56);
        assert_eq!(latched(&mut pit, 0), 0x5678);
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let (mut pit, clock) = pit();
        pit.write(0x61, 0x01);
        program(&mut pit, 2, 0, 50);
        clock.advance(50);
        pit.write(0x43, 0xc8); // read-back: count and status of channel 2
        assert_eq!(
            pit.read(0x42),
            0xb0,
            "OUT high, count loaded, LSB/MSB, mode 0"
        );
        clock.advance(5);
        assert_eq!(pit.read(0x42), 0x00);
        assert_eq!(pit.read(0x42), 0x00, "latched 0");
        pit.write(0x43, 0xe8); // status only
        assert_eq!(pit.read(0x42), 0xb0);
        assert_eq!(pit.read(0x42), 0xfb, "then the live count, 0xfffb");
    }

    #[test]
    fn null_count_is_set_until_the_count_is_loaded() {
        let (mut pit, clock) = pit();
        pit.write(0x43, 0x34);
        pit.write(0x43, 0xe2); // status of channel 0
        assert_eq!(pit.read(0x40), 0xf4, "OUT high, null count, no count yet");
        pit.write(0x40, 100);
        pit.write(0x40, 0);
        pit.write(0x43, 0xe2);
        assert_eq!(pit.read(0x40), 0xb4);
        pit.write(0x40, 10);
        pit.write(0x40, 0);
        pit.write(0x43, 0xe2);
        assert_eq!(
            pit.read(0x40) & 0x40,
            0x40,
            "new count waits for the period end"
        );
        clock.advance(100);
        pit.write(0x43, 0xe2);
        assert_eq!(pit.read(0x40) & 0x40, 0);
    }

    #[test]
    fn bcd_counting_counts_in_decimal() {
        let (mut pit, clock) = pit();
        pit.write(0x43, 0x31); // channel 0, LSB/MSB, mode 0, BCD
        pit.write(0x40, 0x00);
        pit.write(0x40, 0x10); // 1000
        clock.advance(1);
        assert_eq!(latched(&mut pit, 0), 0x0999);
        clock.advance(998);
        assert!(!pit.output(0));
        clock.advance(1);
        assert!(pit.output(0));
        clock.advance(1);
        assert_eq!(latched(&mut pit, 0), 0x9999, "wraps to 9999");
        assert_eq!((from_bcd(0x1234), to_bcd(1234)), (1234, 0x1234));
    }

    #[test]
    fn port_61_reports_gate_speaker_out2_and_a_toggling_refresh_bit() {
        let (mut pit, clock) = pit();
        pit.write(0x61, 0x03);
        program(&mut pit, 2, 0, 10);
        let first = pit.read(0x61);
        let second = pit.read(0x61);
        assert_eq!(first & 0x2f, 0x03, "gate and speaker, OUT2 low");
        assert_eq!((first ^ second) & 0x10, 0x10, "refresh toggles on reads");
        clock.advance(10);
        assert_eq!(pit.read(0x61) & 0x20, 0x20, "OUT2 high at terminal count");
        pit.write(0x61, 0x0c);
        assert_eq!(pit.read(0x61) & 0x0f, 0x0c, "bits 2-3 kept, gate off");
    }

    #[test]
    fn channel_2_countdown_calibrates_like_linux() {
        // pit_calibrate_tsc: gate on, speaker off, mode 0, 50 ms.
        let (mut pit, clock) = pit();
        let port_b = pit.read(0x61);
        pit.write(0x61, (port_b & !0x02) | 0x01);
        pit.write(0x43, 0xb0);
        let latch = (PIT_HZ / 20) as u16;
        pit.write(0x42, latch as u8);
        pit.write(0x42, (latch >> 8) as u8);
        let mut polls = 0;
        while pit.read(0x61) & 0x20 == 0 {
            clock.advance(100);
            polls += 1;
        }
        assert_eq!(polls, u64::from(latch).div_ceil(100));
    }

    #[test]
    fn control_port_reads_zero_and_unknown_ports_all_ones() {
        let (mut pit, _clock) = pit();
        assert_eq!(pit.read(0x43), 0);
        assert_eq!(pit.read(0x44), 0xff);
    }

    #[test]
    fn ports_on_the_bus_reach_the_pit() {
        let mut bus =
            IoBus::with_serial_writer(Box::new(crate::devices::test_support::Captured::default()))
                .unwrap();
        bus.write(0x43, 1, 0xb0);
        bus.write(0x42, 1, 0x34);
        bus.write(0x42, 1, 0x12);
        bus.write(0x43, 1, 0xd8); // read-back: count of channel 2
        let count = bus.read(0x42, 1) | bus.read(0x42, 1) << 8;
        assert!(count <= 0x1234, "{count:#x}");
        bus.write(0x61, 1, 0x01);
        assert_eq!(bus.read(0x61, 1) & 0x01, 0x01);
        assert!(bus.claims(0x40) && bus.claims(0x43) && bus.claims(0x61));
        assert!(!bus.claims(0x44));
    }

    #[test]
    fn writes_that_change_irq0_timing_wake_the_timer() {
        let pit = SharedPit::new(Pit::new(Arc::new(HostMonotonicClock::new())));
        let mut ports = PitPorts {
            pit: pit.clone(),
            base: PIT_PORT,
            name: "pit",
        };
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let guard = pit.lock();
                let start = Instant::now();
                drop(pit.wait(guard, Duration::from_secs(30)));
                start.elapsed()
            });
            // Keep writing until the waiter is woken (it may not wait yet).
            while !waiter.is_finished() {
                ports.write(3, 1, 0x34);
                ports.write(0, 1, 0x10);
                ports.write(0, 1, 0x00);
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(waiter.join().unwrap() < Duration::from_secs(30));
        });
    }
}
