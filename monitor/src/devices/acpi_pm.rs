//! ACPI fixed hardware: the PM1a event and control blocks and the power
//! management timer, at the ports the FADT names ([`super::acpi`]).
//!
//! | ports | register | modelled |
//! |---|---|---|
//! | `0x600`-`0x601` | PM1a_STS | TMR_STS (bit 0, the timer's bit 31 changed since it was cleared), GBL_STS, PWRBTN_STS, SLPBTN_STS, RTC_STS, WAK_STS; write 1 to clear |
//! | `0x602`-`0x603` | PM1a_EN | TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN, kept as written |
//! | `0x604`-`0x605` | PM1a_CNT | SCI_EN reads 1 (no SMI command port: ACPI mode is always on), BM_RLD kept, SLP_TYP kept, SLP_EN (write-only): with SLP_TYP = [`S5_SLEEP_TYPE`] the machine powers off |
//! | `0x608`-`0x60B` | PM_TMR | a 32-bit counter at 3.579545 MHz of the host's monotonic clock (TMR_VAL_EXT), read-only |
//!
//! Each block is a [`PortDevice`] of its own; both read the same clock.
//! The SCI ([`super::acpi::SCI_IRQ`]) is a level line, high while a
//! status bit and its enable are both set; it is brought up to date at
//! every access to the event and control blocks, so a timer carry (every
//! 20 minutes) raises it at the next access, not at the carry itself
//! (Linux never enables it). Nothing else sets the status bits: there is
//! no power or sleep button (the FADT says so), no RTC alarm wake-up, no
//! global lock owner.
//!
//! Invariants: the PM timer never goes back and wraps at 2^32; SLP_EN
//! reads 0; a write that powers the machine off returns
//! [`IoOutcome::PowerOff`] and changes nothing else.

use super::pic::PicLine;
use super::pit::MonotonicClock;
use super::{IoOutcome, PortDevice};
use std::sync::Arc;

/// The first port of the PM1a event block.
pub const PM_BASE: u16 = 0x600;
/// PM1a_EVT_BLK's offset from [`PM_BASE`] (status, then enable).
pub const PM1_EVT_OFFSET: u16 = 0;
/// PM1a_CNT_BLK's offset from [`PM_BASE`].
pub const PM1_CNT_OFFSET: u16 = 4;
/// Ports of the event and control blocks together (`0x600`-`0x605`).
pub const PM1_PORTS: u16 = 6;
/// The PM timer's port.
pub const PM_TMR_PORT: u16 = 0x608;
/// Ports of the PM timer.
pub const PM_TMR_PORTS: u16 = 4;
/// The sleep type of S5 (soft off), as the DSDT's `\_S5` gives it.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The PM timer's rate (the ACPI specification's 3.579545 MHz).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// PM1 status and enable bits nestmon keeps.
const TMR: u16 = 1 << 0;
const GBL: u16 = 1 << 5;
const PWRBTN: u16 = 1 << 8;
const SLPBTN: u16 = 1 << 9;
const RTC: u16 = 1 << 10;
const WAK_STS: u16 = 1 << 15;
/// Bits of PM1_EN that exist.
const ENABLE_BITS: u16 = TMR | GBL | PWRBTN | SLPBTN | RTC;
/// Bits of PM1_STS that exist.
const STATUS_BITS: u16 = ENABLE_BITS | WAK_STS;

/// PM1_CNT bits.
const SCI_EN: u16 = 1 << 0;
const BM_RLD: u16 = 1 << 1;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP: u16 = 7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits kept as written.
const CONTROL_KEPT: u16 = BM_RLD | SLP_TYP;

/// The PM timer's count at `elapsed` of its clock, unwrapped (64 bits).
fn timer_ticks(elapsed: std::time::Duration) -> u64 {
    (elapsed.as_nanos() * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u64
}

/// The PM timer (`PM_TMR`).
pub struct PmTimer {
    clock: Arc<dyn MonotonicClock>,
}

impl PmTimer {
    /// A timer that counts from `clock`'s zero.
    pub fn new(clock: Arc<dyn MonotonicClock>) -> PmTimer {
        PmTimer { clock }
    }

    /// The 32-bit counter now.
    pub fn value(&self) -> u32 {
        timer_ticks(self.clock.now()) as u32
    }
}

impl PortDevice for PmTimer {
    fn name(&self) -> &'static str {
        "acpi-pm-timer"
    }

    fn read(&mut self, offset: u16, size: u8) -> u32 {
        let bytes = self.value().to_le_bytes();
        (0..usize::from(size)).fold(0, |value, i| {
            let byte = bytes.get(usize::from(offset) + i).copied().unwrap_or(0xff);
            value | u32::from(byte) << (8 * i)
        })
    }

    fn write(&mut self, _offset: u16, _size: u8, _value: u32) -> IoOutcome {
        IoOutcome::Continue
    }
}

/// The PM1a event block (status, enable) and control block.
pub struct Pm1 {
    clock: Arc<dyn MonotonicClock>,
    /// Status bits other than TMR_STS.
    status: u16,
    enable: u16,
    /// PM1_CNT's kept bits.
    control: u16,
    /// Carries of the timer's bit 31 counted when TMR_STS was last cleared.
    timer_carries_seen: u64,
    sci: Option<PicLine>,
}

impl Pm1 {
    /// The blocks as firmware leaves them (nothing enabled, ACPI mode on),
    /// reading `clock` (the PM timer's) for TMR_STS; the SCI goes to `sci`.
    pub fn new(clock: Arc<dyn MonotonicClock>, sci: Option<PicLine>) -> Pm1 {
        Pm1 {
            clock,
            status: 0,
            enable: 0,
            control: 0,
            timer_carries_seen: 0,
            sci,
        }
    }

    fn timer_carries(&self) -> u64 {
        timer_ticks(self.clock.now()) >> 31
    }

    /// PM1_STS now.
    pub fn status(&self) -> u16 {
        let timer = if self.timer_carries() > self.timer_carries_seen {
            TMR
        } else {
            0
        };
        self.status | timer
    }

    /// Whether the SCI is asserted: a status bit with its enable set.
    pub fn sci_level(&self) -> bool {
        self.status() & self.enable & ENABLE_BITS != 0
    }

    /// The 16-bit register at `register` (0 status, 2 enable, 4 control).
    fn read_register(&self, register: u16) -> u16 {
        match register {
            0 => self.status(),
            2 => self.enable,
            _ => self.control | SCI_EN,
        }
    }

    /// Writes the bytes of `value` that `mask` selects to `register`.
    fn write_register(&mut self, register: u16, value: u16, mask: u16) -> IoOutcome {
        let value = value & mask;
        match register {
            0 => {
                if value & TMR != 0 {
                    self.timer_carries_seen = self.timer_carries();
                }
                self.status &= !(value & STATUS_BITS);
            }
            2 => self.enable = (self.enable & !mask) | (value & ENABLE_BITS),
            _ => {
                self.control = (self.control & !(mask & CONTROL_KEPT)) | (value & CONTROL_KEPT);
                if value & SLP_EN != 0 && self.sleep_type() == S5_SLEEP_TYPE {
                    return IoOutcome::PowerOff;
                }
            }
        }
        IoOutcome::Continue
    }

    /// SLP_TYP as last written.
    fn sleep_type(&self) -> u8 {
        ((self.control & SLP_TYP) >> SLP_TYP_SHIFT) as u8
    }

    fn update_sci(&self) {
        if let Some(line) = &self.sci {
            line.set_level(self.sci_level());
        }
    }
}

impl PortDevice for Pm1 {
    fn name(&self) -> &'static str {
        "acpi-pm1"
    }

    fn read(&mut self, offset: u16, size: u8) -> u32 {
        let value = (0..u16::from(size)).fold(0u32, |value, i| {
            let at = offset + i;
            let byte = if at < PM1_PORTS {
                (self.read_register(at & !1) >> (8 * (at & 1))) as u8
            } else {
                0xff
            };
            value | u32::from(byte) << (8 * i)
        });
        self.update_sci();
        value
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) -> IoOutcome {
        let mut outcome = IoOutcome::Continue;
        for i in 0..u16::from(size) {
            let at = offset + i;
            if at >= PM1_PORTS {
                break;
            }
            let shift = 8 * (at & 1);
            let byte = (value >> (8 * i)) as u16 & 0xff;
            if self.write_register(at & !1, byte << shift, 0xff << shift) == IoOutcome::PowerOff {
                outcome = IoOutcome::PowerOff;
            }
        }
        self.update_sci();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::devices::pit::ManualClock as FakeClock;

    fn pm1() -> (Pm1, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        (Pm1::new(clock.clone(), None), clock)
    }

    const STS: u16 = 0;
    const EN: u16 = 2;
    const CNT: u16 = 4;

    #[test]
    fn timer_counts_at_3_579545_mhz_of_its_clock() {
        let clock = Arc::new(FakeClock::default());
        let mut timer = PmTimer::new(clock.clone());
        assert_eq!(timer.read(0, 4), 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(timer.read(0, 4), 3_579_545);
        clock.advance(Duration::from_millis(1));
        assert_eq!(timer.read(0, 4), 3_579_545 + 3_579);
        assert_eq!(timer.read(1, 1), (3_583_124 >> 8) & 0xff, "byte reads");
    }

    #[test]
    fn timer_wraps_at_32_bits_and_ignores_writes() {
        let clock = Arc::new(FakeClock::default());
        let mut timer = PmTimer::new(clock.clone());
        clock.advance(Duration::from_nanos(
            (1u64 << 32) * 1_000_000_000 / PM_TIMER_HZ + 1_000,
        ));
        assert!(timer.read(0, 4) < 10);
        assert_eq!(timer.write(0, 4, 0x1234), IoOutcome::Continue);
        assert!(timer.read(0, 4) < 10);
    }

    #[test]
    fn sci_enable_reads_set_and_sleep_enable_reads_clear() {
        let (mut pm, _) = pm1();
        assert_eq!(pm.read(CNT, 2), 1);
        assert_eq!(
            pm.write(CNT, 2, u32::from(3u16 << SLP_TYP_SHIFT)),
            IoOutcome::Continue
        );
        assert_eq!(pm.read(CNT, 2), u32::from(3u16 << SLP_TYP_SHIFT | SCI_EN));
        assert_eq!(
            pm.write(CNT, 2, u32::from(3u16 << SLP_TYP_SHIFT | SLP_EN)),
            IoOutcome::Continue
        );
        assert_eq!(pm.read(CNT, 2) & u32::from(SLP_EN), 0);
    }

    #[test]
    fn sleep_enable_with_the_s5_type_powers_off() {
        let (mut pm, _) = pm1();
        // What ACPICA does: SLP_TYP first, then SLP_TYP | SLP_EN.
        let typ = u32::from(S5_SLEEP_TYPE) << SLP_TYP_SHIFT;
        assert_eq!(pm.write(CNT, 2, typ), IoOutcome::Continue);
        assert_eq!(
            pm.write(CNT, 2, typ | u32::from(SLP_EN)),
            IoOutcome::PowerOff
        );
    }

    #[test]
    fn sleep_enable_in_the_high_byte_alone_uses_the_kept_type() {
        let (mut pm, _) = pm1();
        pm.write(CNT, 2, u32::from(S5_SLEEP_TYPE) << SLP_TYP_SHIFT);
        let high = (u32::from(S5_SLEEP_TYPE) << SLP_TYP_SHIFT | u32::from(SLP_EN)) >> 8;
        assert_eq!(pm.write(CNT + 1, 1, high), IoOutcome::PowerOff);
    }

    #[test]
    fn timer_status_sets_at_a_bit_31_carry_and_clears_on_write_of_1() {
        let (mut pm, clock) = pm1();
        assert_eq!(pm.read(STS, 2), 0);
        clock.advance(Duration::from_secs(601)); // 2^31 ticks: 599.9 s
        assert_eq!(pm.read(STS, 2), u32::from(TMR));
        assert_eq!(pm.write(STS, 2, 0), IoOutcome::Continue);
        assert_eq!(pm.read(STS, 2), u32::from(TMR), "writing 0 keeps it");
        pm.write(STS, 2, u32::from(TMR));
        assert_eq!(pm.read(STS, 2), 0);
    }

    #[test]
    fn enables_keep_only_defined_bits_and_raise_the_sci_with_a_status() {
        let (mut pm, clock) = pm1();
        pm.write(EN, 2, 0xffff);
        assert_eq!(pm.read(EN, 2), u32::from(ENABLE_BITS));
        assert!(!pm.sci_level());
        clock.advance(Duration::from_secs(601));
        assert!(pm.sci_level(), "TMR_STS with TMR_EN");
        pm.write(STS, 2, u32::from(TMR));
        assert!(!pm.sci_level());
        pm.write(EN, 1, 0);
        assert_eq!(
            pm.read(EN, 2),
            u32::from(ENABLE_BITS & 0xff00),
            "byte write"
        );
    }

    #[test]
    fn ports_past_the_control_block_read_all_ones() {
        let (mut pm, _) = pm1();
        assert_eq!(pm.read(CNT, 4), 0xffff_0001);
    }
}
