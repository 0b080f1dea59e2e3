//! The MC146818 real-time clock and its CMOS memory, as on a PC: port
//! `0x70` selects a register (bit 7 masks NMI), port `0x71` reads or
//! writes it.
//!
//! Time comes from an injected [`Clock`] (the host's wall clock in a run,
//! a fake one in tests) as UTC, the way QEMU's `-rtc base=utc` default
//! presents it; the guest's view is the clock plus an offset that the
//! guest's own writes to the time registers move. Register A's update
//! flag and register C's flags are derived from the clock on every access,
//! so nothing here needs a timer thread.
//!
//! Invariants:
//! - The clock registers (seconds, minutes, hours, day of week, day of
//!   month, month, year, century at `0x32`) are computed from the clock
//!   whenever the clock runs; they hold plain bytes only while it is
//!   stopped (register B's SET bit, or the divider held in reset by
//!   register A), and those bytes become the time when it starts again.
//!   `stopped.is_some()` exactly when the clock does not run.
//! - UIP (register A bit 7) is set, while the clock runs, from 244 µs
//!   before each update to the end of the update cycle 1984 µs after it
//!   (the MC146818A's timing at 32.768 kHz; the registers already show
//!   the new second then), and clear the rest of the second: it can never
//!   stay set, a guest that waits for it to clear waits at most 2.3 ms.
//! - Register C's flags (PF, AF, UF) accumulate from the clock between
//!   reads and a read clears them; IRQF follows the enables of register B.
//!   IRQ 8 is never raised: nestmon has no interrupt controller route for
//!   it yet, so the flags are for guests that poll.
//! - Register D always reads VRT (0x80): the battery is good.
//! - Port `0x70` is write-only (reads return 0xff, as on the PIIX and in
//!   QEMU); its bit 7 is kept in an [`NmiMask`] the machine reads.
//! - The other bytes (`0x0e`-`0x7f` but the century) are plain memory,
//!   initialised with the layout a PC BIOS leaves (see [`Rtc::new`]);
//!   nothing but the guest changes them afterwards (the checksum is not
//!   kept up to date, as on a real PC).
//! - Battery-backed, as on a PC: with a [`CmosBattery`], what the guest
//!   wrote to the plain bytes and the time it set survive a machine reset
//!   (the next machine's RTC starts from them). Registers A and B start as
//!   a BIOS sets them up and the shutdown status byte `0x0f` as a BIOS
//!   leaves it after reading it (0), so a reset gives the power-on
//!   register state with the guest's NVRAM and clock. The battery holds
//!   the state after the guest's last write (it is stored on every write).

use super::{IoOutcome, PortDevice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the RTC's wall-clock time comes from.
pub trait Clock: Send {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The host's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// What a PC's CMOS keeps across a machine reset: its 128 bytes and the
/// guest's time offset from the host's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Retained {
    cmos: [u8; 128],
    offset_ns: i128,
}

/// The CMOS's battery: what one machine's RTC leaves for the next
/// machine's after a reset ([`Rtc::with_battery`]). Empty until the guest
/// writes to the RTC. Clones share the same contents.
#[derive(Clone, Debug, Default)]
pub struct CmosBattery(Arc<Mutex<Option<Retained>>>);

impl CmosBattery {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Retained>> {
        // Plain data: consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The CMOS byte at `index` (0-127) as the battery keeps it, if the
    /// guest wrote anything yet.
    pub fn byte(&self, index: u8) -> Option<u8> {
        self.lock()
            .as_ref()
            .map(|kept| kept.cmos[usize::from(index & 0x7f)])
    }
}

/// The NMI mask bit of port `0x70` (bit 7 of the last index written),
/// shared between the RTC, which the guest writes it through, and the
/// machine, which reads it.
#[derive(Clone, Debug, Default)]
pub struct NmiMask(Arc<AtomicBool>);

impl NmiMask {
    /// Whether the guest masked NMI (wrote an index with bit 7 set last).
    pub fn is_masked(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, masked: bool) {
        self.0.store(masked, Ordering::SeqCst);
    }
}

/// Register numbers (CMOS offsets).
mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const SECONDS_ALARM: u8 = 0x01;
    pub const MINUTES: u8 = 0x02;
    pub const MINUTES_ALARM: u8 = 0x03;
    pub const HOURS: u8 = 0x04;
    pub const HOURS_ALARM: u8 = 0x05;
    pub const WEEKDAY: u8 = 0x06;
    pub const DAY: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const A: u8 = 0x0a;
    pub const B: u8 = 0x0b;
    pub const C: u8 = 0x0c;
    pub const D: u8 = 0x0d;
    pub const CENTURY: u8 = 0x32;
}

/// The PC's CMOS layout (what a BIOS leaves there).
pub mod layout {
    /// Equipment byte: bit 0 floppy drives present, bit 1 FPU, bit 2 PS/2
    /// mouse, bits 4-5 video (0: EGA/VGA or none), bits 6-7 floppies - 1.
    pub const EQUIPMENT: u8 = 0x14;
    /// Base memory in KiB (16 bits, little-endian).
    pub const BASE_MEMORY: u8 = 0x15;
    /// Extended memory above 1 MiB in KiB, at most 0xffff (16 bits).
    pub const EXTENDED_MEMORY: u8 = 0x17;
    /// The checksum of 0x10..=0x2d, big-endian (0x2e high, 0x2f low).
    pub const CHECKSUM: u8 = 0x2e;
    /// Extended memory again, as the BIOS's POST found it (16 bits).
    pub const EXTENDED_MEMORY_POST: u8 = 0x30;
    /// The century (BCD or binary, as the clock registers).
    pub const CENTURY: u8 = 0x32;
    /// Memory above 16 MiB in 64 KiB blocks, at most 0xffff (16 bits).
    pub const MEMORY_ABOVE_16M: u8 = 0x34;
    /// First byte covered by the checksum.
    pub const CHECKSUM_FIRST: u8 = 0x10;
    /// Last byte covered by the checksum.
    pub const CHECKSUM_LAST: u8 = 0x2d;
    /// The shutdown status byte: why the CPU was reset (a BIOS reads it
    /// at reset and clears it).
    pub const SHUTDOWN_STATUS: u8 = 0x0f;
}

const A_UIP: u8 = 0x80;
/// Divider select bits of register A.
const A_DV: u8 = 0x70;
/// Rate select bits of register A.
const A_RS: u8 = 0x0f;
/// Register A after a BIOS set the clock up: 32.768 kHz time base, 1024 Hz
/// periodic rate.
const A_DEFAULT: u8 = 0x26;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_BINARY: u8 = 0x04;
const B_24_HOUR: u8 = 0x02;
/// Register B after a BIOS: 24-hour, BCD, no interrupts.
const B_DEFAULT: u8 = B_24_HOUR;

const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

const D_VRT: u8 = 0x80;

/// Hours register bit for PM in 12-hour mode.
const PM: u8 = 0x80;
/// An alarm byte with both top bits set matches any value.
const ALARM_ANY: u8 = 0xc0;

const NS_PER_SEC: i128 = 1_000_000_000;
/// How long before the update UIP is set: 8 cycles of the 32.768 kHz
/// time base (244.14 µs).
const UIP_BEFORE_NS: i128 = 8 * NS_PER_SEC / 32_768;
/// How long the update cycle keeps UIP set after the update: 65 cycles of
/// the 32.768 kHz time base (1983.6 µs).
const UPDATE_CYCLE_NS: i128 = 65 * NS_PER_SEC / 32_768;
/// Where in its second the clock starts when the divider leaves reset: the
/// first update comes half a second later.
const AFTER_DIVIDER_RESET_NS: i128 = NS_PER_SEC / 2;
const SECS_PER_DAY: i64 = 86_400;

/// The clock registers, in the order the stopped clock keeps them.
const CLOCK_REGISTERS: [u8; 8] = [
    reg::SECONDS,
    reg::MINUTES,
    reg::HOURS,
    reg::WEEKDAY,
    reg::DAY,
    reg::MONTH,
    reg::YEAR,
    reg::CENTURY,
];

/// The real-time clock and CMOS memory.
pub struct Rtc {
    clock: Box<dyn Clock>,
    cmos: [u8; 128],
    /// The register port `0x71` accesses (bits 0-6 of the last index).
    index: u8,
    nmi_mask: NmiMask,
    /// Guest time minus host time, in nanoseconds.
    offset_ns: i128,
    /// The clock registers while the clock is stopped, in
    /// [`CLOCK_REGISTERS`] order.
    stopped: Option<[u8; 8]>,
    /// Register C's PF, AF and UF not yet read.
    flags: u8,
    /// Guest time up to which update and alarm flags are accounted.
    flags_guest_ns: i128,
    /// Host time up to which periodic flags are accounted.
    flags_host_ns: i128,
    /// Where the CMOS bytes and the time offset are kept for the machine
    /// after a reset.
    battery: Option<CmosBattery>,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("index", &self.index)
            .field("offset_ns", &self.offset_ns)
            .field("stopped", &self.stopped)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl Rtc {
    /// An RTC reading `clock`, its CMOS holding what a BIOS leaves on a
    /// PC with `ram_bytes` of RAM from address 0 (all below 4 GiB):
    /// register A `0x26` and B `0x02` (24-hour BCD); the equipment byte
    /// with only the FPU (no floppy, no PS/2 mouse, no video adapter);
    /// 640 KiB of base memory; extended memory in KiB at `0x17` and `0x30`
    /// (at most `0xffff`); memory above 16 MiB in 64 KiB blocks at `0x34`
    /// (at most `0xffff`); the checksum of `0x10..=0x2d` at `0x2e`; the
    /// century at `0x32`. NMI starts unmasked in `nmi_mask`.
    pub fn new(clock: Box<dyn Clock>, ram_bytes: u64, nmi_mask: NmiMask) -> Rtc {
        let host = host_ns(clock.as_ref());
        let rtc = Rtc {
            clock,
            cmos: pc_cmos_layout(ram_bytes),
            index: 0,
            nmi_mask,
            offset_ns: 0,
            stopped: None,
            flags: 0,
            flags_guest_ns: host,
            flags_host_ns: host,
            battery: None,
        };
        rtc.nmi_mask.set(false);
        rtc
    }

    /// [`Rtc::new`], after a reset of the machine: the CMOS bytes and the
    /// guest's time come from `battery` when the guest wrote any before
    /// (registers A and B as a BIOS sets them up, the shutdown status
    /// byte `0x0f` cleared), and every later write is kept there.
    pub fn with_battery(
        clock: Box<dyn Clock>,
        ram_bytes: u64,
        nmi_mask: NmiMask,
        battery: CmosBattery,
    ) -> Rtc {
        let mut rtc = Rtc::new(clock, ram_bytes, nmi_mask);
        if let Some(kept) = *battery.lock() {
            rtc.cmos = kept.cmos;
            rtc.cmos[usize::from(reg::A)] = A_DEFAULT;
            rtc.cmos[usize::from(reg::B)] = B_DEFAULT;
            rtc.cmos[usize::from(layout::SHUTDOWN_STATUS)] = 0;
            rtc.offset_ns = kept.offset_ns;
            let guest = rtc.flags_host_ns + rtc.offset_ns;
            rtc.flags_guest_ns = guest;
        }
        rtc.battery = Some(battery);
        rtc
    }

    /// Stores the CMOS bytes and the time offset in the battery, if any.
    fn keep(&self) {
        if let Some(battery) = &self.battery {
            *battery.lock() = Some(Retained {
                cmos: self.cmos,
                offset_ns: self.offset_ns,
            });
        }
    }

    /// The register `index` (0-127) as the guest reads it.
    pub fn read_register(&mut self, index: u8) -> u8 {
        let index = index & 0x7f;
        let host = host_ns(self.clock.as_ref());
        self.account(host);
        match index {
            reg::A => self.cmos[usize::from(reg::A)] | if self.uip(host) { A_UIP } else { 0 },
            reg::C => {
                let enabled = self.cmos[usize::from(reg::B)] & (B_PIE | B_AIE | B_UIE);
                let irqf = if self.flags & enabled != 0 { C_IRQF } else { 0 };
                std::mem::take(&mut self.flags) | irqf
            }
            reg::D => D_VRT,
            _ => match clock_slot(index) {
                Some(slot) => match &self.stopped {
                    Some(registers) => registers[slot],
                    None => self.encoded_time(self.guest_secs(host))[slot],
                },
                None => self.cmos[usize::from(index)],
            },
        }
    }

    /// The guest writes `value` to register `index` (0-127).
    pub fn write_register(&mut self, index: u8, value: u8) {
        let index = index & 0x7f;
        let host = host_ns(self.clock.as_ref());
        self.account(host);
        match index {
            reg::A => {
                let was_reset = divider_in_reset(self.cmos[usize::from(reg::A)]);
                let was_running = self.stopped.is_none();
                self.cmos[usize::from(reg::A)] = value & !A_UIP;
                let left_reset = was_reset && !divider_in_reset(value);
                self.follow_mode(was_running, left_reset, host);
            }
            reg::B => {
                let was_running = self.stopped.is_none();
                // SET clears the update-ended interrupt enable (datasheet).
                let value = if value & B_SET != 0 {
                    value & !B_UIE
                } else {
                    value
                };
                self.cmos[usize::from(reg::B)] = value;
                self.follow_mode(was_running, false, host);
            }
            reg::C | reg::D => {}
            _ => match clock_slot(index) {
                Some(slot) => self.write_clock(slot, value, host),
                None => self.cmos[usize::from(index)] = value,
            },
        }
        self.keep();
    }

    /// Whether the registers A and B let the clock run: SET clear and the
    /// divider running (QEMU counts DV 000-010 as running; 11x holds it in
    /// reset and 011 is a test mode, neither runs).
    fn runs(&self) -> bool {
        self.cmos[usize::from(reg::B)] & B_SET == 0 && self.cmos[usize::from(reg::A)] & A_DV <= 0x20
    }

    /// Stops or starts the clock after a write to A or B.
    fn follow_mode(&mut self, was_running: bool, left_reset: bool, host: i128) {
        match (was_running, self.runs()) {
            (true, false) => {
                self.stopped = Some(self.encoded_time(self.guest_secs(host)));
            }
            (false, true) => {
                let registers = self.stopped.take().unwrap_or_default();
                let secs = self.decoded_time(&registers);
                let phase = if left_reset {
                    AFTER_DIVIDER_RESET_NS
                } else {
                    (host + self.offset_ns).rem_euclid(NS_PER_SEC)
                };
                self.offset_ns = i128::from(secs) * NS_PER_SEC + phase - host;
                self.flags_guest_ns = host + self.offset_ns;
            }
            _ => {}
        }
    }

    /// A write to the clock register in `slot`.
    fn write_clock(&mut self, slot: usize, value: u8, host: i128) {
        if let Some(registers) = &mut self.stopped {
            registers[slot] = value;
            return;
        }
        let mut registers = self.encoded_time(self.guest_secs(host));
        registers[slot] = value;
        let secs = self.decoded_time(&registers);
        let phase = (host + self.offset_ns).rem_euclid(NS_PER_SEC);
        self.offset_ns = i128::from(secs) * NS_PER_SEC + phase - host;
        // A time the guest sets is not an update: no flags for the jump.
        self.flags_guest_ns = host + self.offset_ns;
    }

    /// The guest's time in whole seconds since 1970 (running clock).
    fn guest_secs(&self, host: i128) -> i64 {
        clamp_secs((host + self.offset_ns).div_euclid(NS_PER_SEC))
    }

    /// UIP: the update is at most 244 µs away, or its cycle is not over.
    fn uip(&self, host: i128) -> bool {
        let phase = (host + self.offset_ns).rem_euclid(NS_PER_SEC);
        let quiet = UPDATE_CYCLE_NS..NS_PER_SEC - UIP_BEFORE_NS;
        self.stopped.is_none() && !quiet.contains(&phase)
    }

    /// Brings register C's flags up to `host`: PF for every period of the
    /// divider that ended, UF for a second that ended, AF when the time
    /// after an update matched the alarm.
    fn account(&mut self, host: i128) {
        let a = self.cmos[usize::from(reg::A)];
        if !divider_in_reset(a) {
            if let Some(period) = periodic_ticks(a & A_RS) {
                let ticks = |ns: i128| (ns * 32_768).div_euclid(NS_PER_SEC).div_euclid(period);
                if ticks(host) > ticks(self.flags_host_ns) {
                    self.flags |= C_PF;
                }
            }
        }
        self.flags_host_ns = host;
        if self.stopped.is_some() {
            return;
        }
        let now = host + self.offset_ns;
        let (from, to) = (
            clamp_secs(self.flags_guest_ns.div_euclid(NS_PER_SEC)),
            clamp_secs(now.div_euclid(NS_PER_SEC)),
        );
        if to > from {
            self.flags |= C_UF;
            // Every time of day comes round within a day.
            let first = (from + 1).max(to - (SECS_PER_DAY - 1));
            if (first..=to).any(|secs| self.alarm_matches(secs)) {
                self.flags |= C_AF;
            }
        }
        self.flags_guest_ns = now;
    }

    /// Whether the time of day of `secs` matches the alarm registers.
    fn alarm_matches(&self, secs: i64) -> bool {
        let of_day = secs.rem_euclid(SECS_PER_DAY);
        let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
        let matches = |alarm: u8, value: u8| alarm & ALARM_ANY == ALARM_ANY || alarm == value;
        matches(
            self.cmos[usize::from(reg::SECONDS_ALARM)],
            self.encode(second as u32),
        ) && matches(
            self.cmos[usize::from(reg::MINUTES_ALARM)],
            self.encode(minute as u32),
        ) && matches(
            self.cmos[usize::from(reg::HOURS_ALARM)],
            self.encode_hour(hour as u32),
        )
    }

    fn binary(&self) -> bool {
        self.cmos[usize::from(reg::B)] & B_BINARY != 0
    }

    fn hour_24(&self) -> bool {
        self.cmos[usize::from(reg::B)] & B_24_HOUR != 0
    }

    /// `value` (0-99; more in binary mode, up to 255) as register B's data
    /// mode writes it.
    fn encode(&self, value: u32) -> u8 {
        if self.binary() {
            value.min(255) as u8
        } else {
            (((value / 10 % 10) << 4) | (value % 10)) as u8
        }
    }

    /// A register's value in register B's data mode (bad BCD digits count
    /// for what they are: 0x1a is 20).
    fn decode(&self, register: u8) -> u32 {
        if self.binary() {
            u32::from(register)
        } else {
            u32::from(register >> 4) * 10 + u32::from(register & 0x0f)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.hour_24() {
            self.encode(hour)
        } else {
            let twelve = match hour % 12 {
                0 => 12,
                h => h,
            };
            self.encode(twelve) | if hour >= 12 { PM } else { 0 }
        }
    }

    fn decode_hour(&self, register: u8) -> u32 {
        if self.hour_24() {
            self.decode(register)
        } else {
            let pm = if register & PM != 0 { 12 } else { 0 };
            self.decode(register & !PM) % 12 + pm
        }
    }

    /// The clock registers for `secs`, in [`CLOCK_REGISTERS`] order.
    fn encoded_time(&self, secs: i64) -> [u8; 8] {
        let t = DateTime::from_secs(secs);
        let year = t.year.clamp(0, 25_599) as u32;
        [
            self.encode(t.second),
            self.encode(t.minute),
            self.encode_hour(t.hour),
            self.encode(t.weekday),
            self.encode(t.day),
            self.encode(t.month),
            self.encode(year % 100),
            self.encode(year / 100),
        ]
    }

    /// The time the clock registers say, normalised: values past a field's
    /// range carry into the next field (61 seconds are a minute and one
    /// second, 31 November is 1 December), a month outside 1-12 is
    /// clamped, day 0 counts as 1. The day of the week is not read: it
    /// follows from the date.
    fn decoded_time(&self, registers: &[u8; 8]) -> i64 {
        let year =
            i64::from(self.decode(registers[7])) * 100 + i64::from(self.decode(registers[6]));
        let month = self.decode(registers[5]).clamp(1, 12);
        let day = self.decode(registers[4]).max(1);
        let days = days_from_civil(year, month, 1) + i64::from(day) - 1;
        days * SECS_PER_DAY
            + i64::from(self.decode_hour(registers[2])) * 3600
            + i64::from(self.decode(registers[1])) * 60
            + i64::from(self.decode(registers[0]))
    }

    /// The register port `0x71` accesses now.
    pub fn index(&self) -> u8 {
        self.index
    }
}

impl PortDevice for Rtc {
    fn name(&self) -> &'static str {
        "rtc"
    }

    fn max_access_size(&self) -> u8 {
        1
    }

    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        match offset {
            1 => u32::from(self.read_register(self.index)),
            _ => 0xff,
        }
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) -> IoOutcome {
        let value = value as u8;
        match offset {
            0 => {
                self.index = value & 0x7f;
                self.nmi_mask.set(value & 0x80 != 0);
            }
            1 => self.write_register(self.index, value),
            _ => {}
        }
        IoOutcome::Continue
    }
}

/// The CMOS bytes a BIOS leaves on a PC with `ram_bytes` of RAM (see
/// [`Rtc::new`]); the clock registers are computed, not stored.
fn pc_cmos_layout(ram_bytes: u64) -> [u8; 128] {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let mut cmos = [0u8; 128];
    let mut put16 = |at: u8, value: u64| {
        let value = value.min(0xffff) as u16;
        cmos[usize::from(at)..usize::from(at) + 2].copy_from_slice(&value.to_le_bytes());
    };
    put16(layout::BASE_MEMORY, (ram_bytes / KIB).min(640));
    let extended = ram_bytes.saturating_sub(MIB) / KIB;
    put16(layout::EXTENDED_MEMORY, extended);
    put16(layout::EXTENDED_MEMORY_POST, extended);
    put16(
        layout::MEMORY_ABOVE_16M,
        ram_bytes.saturating_sub(16 * MIB) / (64 * KIB),
    );
    cmos[usize::from(reg::A)] = A_DEFAULT;
    cmos[usize::from(reg::B)] = B_DEFAULT;
    cmos[usize::from(layout::EQUIPMENT)] = 0x02;
    let sum = cmos_checksum(&cmos);
    cmos[usize::from(layout::CHECKSUM)..usize::from(layout::CHECKSUM) + 2]
        .copy_from_slice(&sum.to_be_bytes());
    cmos
}

/// The standard checksum: the 16-bit sum of bytes `0x10..=0x2d`.
fn cmos_checksum(cmos: &[u8; 128]) -> u16 {
    cmos[usize::from(layout::CHECKSUM_FIRST)..=usize::from(layout::CHECKSUM_LAST)]
        .iter()
        .map(|&b| u16::from(b))
        .sum()
}

/// Where a clock register sits in [`CLOCK_REGISTERS`].
fn clock_slot(index: u8) -> Option<usize> {
    CLOCK_REGISTERS.iter().position(|&r| r == index)
}

/// Whether register A holds the divider in reset (DV = 11x).
fn divider_in_reset(a: u8) -> bool {
    a & 0x60 == 0x60
}

/// The periodic flag's period in cycles of the 32.768 kHz time base for
/// rate select `rs`; none for 0. Rates 1 and 2 are 256 and 128 Hz, 3-15
/// are 8192 Hz down to 2 Hz.
fn periodic_ticks(rs: u8) -> Option<i128> {
    match rs {
        0 => None,
        1 => Some(128),
        2 => Some(256),
        _ => Some(1 << (rs - 1)),
    }
}

/// The host's time in nanoseconds since 1970 (negative before).
fn host_ns(clock: &dyn Clock) -> i128 {
    match clock.now().duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// Seconds that fit an `i64` (far beyond what the registers express).
fn clamp_secs(secs: i128) -> i64 {
    secs.clamp(i128::from(i64::MIN / 2), i128::from(i64::MAX / 2)) as i64
}

/// A UTC calendar time, as the clock registers hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    /// 1-12.
    month: u32,
    /// 1-31.
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 1 (Sunday) to 7 (Saturday).
    weekday: u32,
}

impl DateTime {
    fn from_secs(secs: i64) -> DateTime {
        let days = secs.div_euclid(SECS_PER_DAY);
        let of_day = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            // 1 January 1970 was a Thursday (5 when Sunday is 1).
            weekday: ((days + 4).rem_euclid(7) + 1) as u32,
        }
    }
}

/// Days since 1 January 1970 of a date in the proleptic Gregorian
/// calendar (`month` 1-12; `day` may run past the month's end).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March, so that the leap day ends them.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1 January 1970: (year, month 1-12, day 1-31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A clock the test sets and moves.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<SystemTime>>);

    impl FakeClock {
        /// At `secs` and `nanos` past 1970.
        fn at(secs: u64, nanos: u32) -> FakeClock {
            FakeClock(Arc::new(Mutex::new(
                UNIX_EPOCH + Duration::new(secs, nanos),
            )))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    /// 2026-11-30 23:43:46 UTC, a Monday.
    const MONDAY_NIGHT: u64 = 1_796_082_226;
    /// Half a second into a second: far from UIP.
    const HALF_SECOND: u32 = 500_000_000;

    fn rtc_at(secs: u64, nanos: u32) -> (Rtc, FakeClock) {
        let clock = FakeClock::at(secs, nanos);
        let rtc = Rtc::new(Box::new(clock.clone()), 128 << 20, NmiMask::default());
        (rtc, clock)
    }

    #[test]
    fn battery_keeps_nvram_and_set_time_for_the_rtc_after_a_reset() {
        let clock = FakeClock::at(MONDAY_NIGHT, HALF_SECOND);
        let battery = CmosBattery::default();
        let mut first = Rtc::with_battery(
            Box::new(clock.clone()),
            128 << 20,
            NmiMask::default(),
            battery.clone(),
        );
        assert_eq!(battery.byte(0x50), None, "empty until the guest writes");
        first.write_register(0x50, 0xa5);
        first.write_register(layout::SHUTDOWN_STATUS, 0x0a);
        first.write_register(reg::B, B_DEFAULT | 0x04); // binary mode
        first.write_register(reg::HOURS, 5); // the guest sets 05:43:46
        assert_eq!(battery.byte(0x50), Some(0xa5));
        clock.advance(Duration::from_secs(10));
        let mut second = Rtc::with_battery(
            Box::new(clock.clone()),
            128 << 20,
            NmiMask::default(),
            battery.clone(),
        );
        assert_eq!(second.read_register(0x50), 0xa5);
        assert_eq!(second.read_register(layout::SHUTDOWN_STATUS), 0);
        assert_eq!(second.read_register(reg::A), A_DEFAULT);
        assert_eq!(second.read_register(reg::B), B_DEFAULT, "BCD again");
        // The time the guest set went on for the ten seconds (BCD now).
        assert_eq!(second.read_register(reg::HOURS), 0x05);
        assert_eq!(second.read_register(reg::MINUTES), 0x43);
        assert_eq!(second.read_register(reg::SECONDS), 0x56);
    }

    #[test]
    fn rtc_without_battery_writes_start_from_the_bios_layout() {
        let battery = CmosBattery::default();
        let (mut plain, _clock) = rtc_at(MONDAY_NIGHT, HALF_SECOND);
        plain.write_register(0x50, 0xa5);
        assert_eq!(battery.byte(0x50), None);
        let mut fresh = Rtc::with_battery(
            Box::new(FakeClock::at(MONDAY_NIGHT, HALF_SECOND)),
            128 << 20,
            NmiMask::default(),
            battery,
        );
        assert_eq!(fresh.read_register(0x50), 0);
        assert_eq!(fresh.read_register(layout::EQUIPMENT), 0x02);
    }

    /// Seconds, minutes, hours, weekday, day, month, year, century.
    fn time(rtc: &mut Rtc) -> [u8; 8] {
        CLOCK_REGISTERS.map(|r| rtc.read_register(r))
    }

    fn port_read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(0, 1, u32::from(index));
        rtc.read(1, 1) as u8
    }

    #[test]
    fn clock_registers_show_the_host_time_in_bcd_and_24_hours() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        assert_eq!(
            time(&mut rtc),
            [0x46, 0x43, 0x23, 0x02, 0x30, 0x11, 0x26, 0x20]
        );
        assert_eq!(port_read(&mut rtc, reg::YEAR), 0x26);
    }

    #[test]
    fn binary_mode_gives_plain_numbers() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::B, B_24_HOUR | B_BINARY);
        assert_eq!(time(&mut rtc), [46, 43, 23, 2, 30, 11, 26, 20]);
    }

    #[test]
    fn twelve_hour_mode_marks_pm_and_shows_midnight_and_noon_as_12() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::B, 0);
        assert_eq!(rtc.read_register(reg::HOURS), 0x80 | 0x11, "23:43 is 11 PM");
        clock.advance(Duration::from_secs(20 * 60)); // 00:03:46
        assert_eq!(rtc.read_register(reg::HOURS), 0x12, "midnight is 12 AM");
        clock.advance(Duration::from_secs(12 * 3600)); // 12:03:46
        assert_eq!(rtc.read_register(reg::HOURS), 0x80 | 0x12, "noon is 12 PM");
        rtc.write_register(reg::B, B_BINARY);
        assert_eq!(rtc.read_register(reg::HOURS), 0x80 | 12);
    }

    #[test]
    fn the_date_rolls_over_with_the_clock() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 0);
        clock.advance(Duration::from_secs(16 * 60 + 14)); // 2026-12-01 00:00:00
        assert_eq!(
            time(&mut rtc),
            [0x00, 0x00, 0x00, 0x03, 0x01, 0x12, 0x26, 0x20]
        );
    }

    #[test]
    fn weekday_counts_sunday_as_one() {
        // 2000-01-02 00:00:00 UTC was a Sunday.
        let (mut rtc, _) = rtc_at(946_771_200, 0);
        assert_eq!(rtc.read_register(reg::WEEKDAY), 1);
        assert_eq!(rtc.read_register(reg::CENTURY), 0x20);
        assert_eq!(rtc.read_register(reg::YEAR), 0x00);
    }

    #[test]
    fn uip_covers_244_us_before_the_update_and_the_1984_us_update_cycle() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 999_800_000);
        assert_eq!(rtc.read_register(reg::A), A_UIP | A_DEFAULT);
        clock.advance(Duration::from_micros(400));
        assert_eq!(rtc.read_register(reg::A), A_UIP | A_DEFAULT, "updating");
        assert_eq!(
            rtc.read_register(reg::SECONDS),
            0x47,
            "already the new second"
        );
        clock.advance(Duration::from_micros(1900)); // 2.1 ms after the update
        assert_eq!(
            rtc.read_register(reg::A),
            A_DEFAULT,
            "cleared after the update cycle"
        );
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 999_700_000);
        assert_eq!(rtc.read_register(reg::A), A_DEFAULT, "not yet");
    }

    #[test]
    fn uip_is_never_set_while_set_stops_the_clock() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 999_900_000);
        rtc.write_register(reg::B, B_SET | B_24_HOUR);
        assert_eq!(rtc.read_register(reg::A) & A_UIP, 0);
    }

    #[test]
    fn register_a_keeps_its_writable_bits_and_uip_is_read_only() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, HALF_SECOND);
        rtc.write_register(reg::A, 0xa3);
        assert_eq!(rtc.read_register(reg::A), 0x23);
    }

    #[test]
    fn set_freezes_the_registers_and_the_written_time_runs_when_it_clears() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 250_000_000);
        rtc.write_register(reg::B, B_SET | B_24_HOUR);
        // 31 December 2099, 23:59:58: written field by field, the day
        // before the month, which a normalising write would have spoiled.
        for (r, v) in [
            (reg::SECONDS, 0x58),
            (reg::MINUTES, 0x59),
            (reg::HOURS, 0x23),
            (reg::DAY, 0x31),
            (reg::MONTH, 0x12),
            (reg::YEAR, 0x99),
            (reg::CENTURY, 0x20),
        ] {
            rtc.write_register(r, v);
        }
        clock.advance(Duration::from_secs(5));
        assert_eq!(rtc.read_register(reg::SECONDS), 0x58, "stopped");
        assert_eq!(rtc.read_register(reg::DAY), 0x31);
        rtc.write_register(reg::B, B_24_HOUR);
        assert_eq!(rtc.read_register(reg::SECONDS), 0x58);
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            time(&mut rtc),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x21],
            "2100-01-01 00:00:00, a Friday"
        );
    }

    #[test]
    fn set_clears_the_update_interrupt_enable() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::B, B_SET | B_UIE | B_24_HOUR);
        assert_eq!(rtc.read_register(reg::B), B_SET | B_24_HOUR);
    }

    #[test]
    fn a_write_while_running_moves_the_clock_and_it_keeps_counting() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::MINUTES, 0x05);
        assert_eq!(rtc.read_register(reg::MINUTES), 0x05);
        assert_eq!(rtc.read_register(reg::HOURS), 0x23);
        clock.advance(Duration::from_secs(60));
        assert_eq!(rtc.read_register(reg::MINUTES), 0x06);
        assert_eq!(rtc.read_register(reg::SECONDS), 0x46);
        rtc.write_register(reg::B, B_24_HOUR | B_BINARY);
        rtc.write_register(reg::YEAR, 30);
        assert_eq!(rtc.read_register(reg::YEAR), 30);
        assert_eq!(rtc.read_register(reg::MONTH), 11);
    }

    #[test]
    fn the_weekday_follows_the_date() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::WEEKDAY, 0x05);
        assert_eq!(rtc.read_register(reg::WEEKDAY), 0x02);
    }

    #[test]
    fn divider_reset_stops_the_clock_and_the_first_update_comes_half_a_second_after() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 900_000_000);
        rtc.write_register(reg::A, 0x70 | 0x06);
        clock.advance(Duration::from_secs(3));
        assert_eq!(rtc.read_register(reg::SECONDS), 0x46, "held in reset");
        rtc.write_register(reg::A, A_DEFAULT);
        clock.advance(Duration::from_millis(499));
        assert_eq!(rtc.read_register(reg::SECONDS), 0x46);
        clock.advance(Duration::from_millis(2));
        assert_eq!(rtc.read_register(reg::SECONDS), 0x47);
    }

    #[test]
    fn register_c_flags_an_ended_update_once_and_irqf_follows_the_enables() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::A, 0x20); // no periodic rate
        assert_eq!(rtc.read_register(reg::C), 0);
        clock.advance(Duration::from_millis(1100));
        assert_eq!(rtc.read_register(reg::C), C_UF);
        assert_eq!(rtc.read_register(reg::C), 0, "reading clears");
        rtc.write_register(reg::B, B_24_HOUR | B_UIE);
        clock.advance(Duration::from_secs(1));
        assert_eq!(rtc.read_register(reg::C), C_IRQF | C_UF);
    }

    #[test]
    fn register_c_flags_the_periodic_rate() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 100_000_000);
        rtc.write_register(reg::A, 0x2f); // 2 Hz
        rtc.read_register(reg::C);
        clock.advance(Duration::from_millis(300));
        assert_eq!(rtc.read_register(reg::C) & C_PF, 0, "not yet half a second");
        clock.advance(Duration::from_millis(300));
        assert_eq!(rtc.read_register(reg::C) & C_PF, C_PF);
    }

    #[test]
    fn register_c_flags_a_matching_alarm_and_not_another() {
        let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::A, 0x20);
        rtc.write_register(reg::SECONDS_ALARM, 0x50);
        rtc.write_register(reg::MINUTES_ALARM, 0xff); // any minute
        rtc.write_register(reg::HOURS_ALARM, 0x23);
        clock.advance(Duration::from_secs(3)); // :49
        assert_eq!(rtc.read_register(reg::C), C_UF);
        clock.advance(Duration::from_secs(1)); // :50
        assert_eq!(rtc.read_register(reg::C), C_UF | C_AF);
        rtc.write_register(reg::B, B_24_HOUR | B_AIE);
        clock.advance(Duration::from_secs(60)); // next minute's :50
        assert_eq!(rtc.read_register(reg::C), C_IRQF | C_UF | C_AF);
    }

    #[test]
    fn setting_the_time_raises_no_update_flag() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::A, 0x20);
        rtc.write_register(reg::HOURS, 0x05);
        assert_eq!(rtc.read_register(reg::C), 0);
    }

    #[test]
    fn register_d_reports_a_good_battery_and_c_and_d_ignore_writes() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        rtc.write_register(reg::D, 0);
        rtc.write_register(reg::C, 0xff);
        assert_eq!(rtc.read_register(reg::D), D_VRT);
        assert_eq!(rtc.read_register(reg::C) & 0x0f, 0);
    }

    #[test]
    fn cmos_holds_the_pc_layout_for_128_mib() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, HALF_SECOND);
        let mut byte = |at: u8| port_read(&mut rtc, at);
        assert_eq!(byte(reg::A), A_DEFAULT);
        assert_eq!(byte(reg::B), B_DEFAULT);
        assert_eq!(byte(layout::EQUIPMENT), 0x02, "an FPU, nothing else");
        assert_eq!((byte(0x15), byte(0x16)), (0x80, 0x02), "640 KiB");
        assert_eq!((byte(0x17), byte(0x18)), (0xff, 0xff), "127 MiB, capped");
        assert_eq!((byte(0x30), byte(0x31)), (0xff, 0xff));
        assert_eq!((byte(0x34), byte(0x35)), (0x00, 0x07), "112 MiB in 64 KiB");
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(byte(i))).sum();
        assert_eq!(u16::from_be_bytes([byte(0x2e), byte(0x2f)]), sum);
        assert_eq!(sum, 0x0282);
    }

    #[test]
    fn small_and_large_memories_fill_the_size_fields_within_their_caps() {
        let field = |cmos: &[u8; 128], at: usize| u16::from_le_bytes([cmos[at], cmos[at + 1]]);
        let small = pc_cmos_layout(8 << 20);
        assert_eq!(field(&small, 0x17), 7 * 1024);
        assert_eq!(field(&small, 0x30), 7 * 1024);
        assert_eq!(field(&small, 0x34), 0);
        let large = pc_cmos_layout(3 << 30);
        assert_eq!(field(&large, 0x34), 0xbf00, "3 GiB - 16 MiB");
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(large[i])).sum();
        assert_eq!(u16::from_be_bytes([large[0x2e], large[0x2f]]), sum);
        let huge = pc_cmos_layout(1 << 33);
        assert_eq!(field(&huge, 0x34), 0xffff);
    }

    #[test]
    fn other_cmos_bytes_are_memory_and_the_checksum_is_not_kept_up_to_date() {
        let (mut rtc, _) = rtc_at(MONDAY_NIGHT, 0);
        let checksum = port_read(&mut rtc, 0x2f);
        rtc.write(0, 1, 0x40);
        rtc.write(1, 1, 0xa5);
        rtc.write(0, 1, 0x10);
        rtc.write(1, 1, 0x01);
        assert_eq!(port_read(&mut rtc, 0x40), 0xa5);
        assert_eq!(port_read(&mut rtc, 0x10), 0x01);
        assert_eq!(port_read(&mut rtc, 0x2f), checksum);
        assert_eq!(port_read(&mut rtc, 0x7f), 0);
    }

    #[test]
    fn index_bit_7_masks_nmi_and_the_index_port_reads_all_ones() {
        let mask = NmiMask::default();
        let clock = FakeClock::at(MONDAY_NIGHT, 0);
        let mut rtc = Rtc::new(Box::new(clock), 128 << 20, mask.clone());
        assert!(!mask.is_masked());
        rtc.write(0, 1, 0x80 | 0x40);
        assert!(mask.is_masked());
        assert_eq!(rtc.index(), 0x40, "bit 7 is not part of the index");
        assert_eq!(rtc.read(0, 1), 0xff);
        rtc.write(0, 1, 0x0d);
        assert!(!mask.is_masked());
        assert_eq!(rtc.read(1, 1), u32::from(D_VRT));
    }

    #[test]
    fn a_host_clock_before_1970_does_not_panic() {
        let clock = FakeClock(Arc::new(Mutex::new(
            UNIX_EPOCH - Duration::from_secs(86_400 * 365),
        )));
        let mut rtc = Rtc::new(Box::new(clock), 128 << 20, NmiMask::default());
        assert_eq!(rtc.read_register(reg::YEAR), 0x69);
        assert_eq!(rtc.read_register(reg::CENTURY), 0x19);
    }

    #[test]
    fn calendar_conversion_knows_leap_years() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1,
            "2100 is not a leap year"
        );
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2
        );
        assert_eq!(days_from_civil(2026, 11, 31), days_from_civil(2026, 12, 1));
    }

    proptest! {
        #[test]
        fn calendar_conversion_round_trips(days in -1_000_000i64..10_000_000) {
            let (year, month, day) = civil_from_days(days);
            prop_assert!((1..=12).contains(&month));
            prop_assert!((1..=31).contains(&day));
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }

        #[test]
        fn registers_written_under_set_read_back_and_run(
            secs in 0u64..4_000_000_000,
            binary in any::<bool>(),
        ) {
            let (mut rtc, clock) = rtc_at(MONDAY_NIGHT, 0);
            let mode = B_24_HOUR | if binary { B_BINARY } else { 0 };
            let want = rtc_at(secs, 0).0.encoded_time_in_mode(secs as i64, mode);
            rtc.write_register(reg::B, B_SET | mode);
            for (slot, &r) in CLOCK_REGISTERS.iter().enumerate() {
                rtc.write_register(r, want[slot]);
            }
            rtc.write_register(reg::B, mode);
            prop_assert_eq!(time(&mut rtc), want);
            clock.advance(Duration::from_secs(86_400));
            let next = rtc_at(0, 0).0.encoded_time_in_mode(secs as i64 + 86_400, mode);
            prop_assert_eq!(time(&mut rtc), next);
        }
    }

    impl Rtc {
        /// The clock registers for `secs` with register B set to `mode`.
        fn encoded_time_in_mode(&mut self, secs: i64, mode: u8) -> [u8; 8] {
            self.cmos[usize::from(reg::B)] = mode;
            self.encoded_time(secs)
        }
    }
}
