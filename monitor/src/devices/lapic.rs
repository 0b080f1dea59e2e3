//! The local APIC of the one virtual CPU (APIC ID 0) in xAPIC mode, as the
//! Intel SDM vol. 3, chapter "Advanced Programmable Interrupt Controller
//! (APIC)", describes it: its 4 KiB of memory-mapped registers at
//! `IA32_APIC_BASE` (`0xFEE00000`), the interrupts it accepts from the
//! I/O APIC and from itself, their priorities against the TPR and the
//! in-service interrupts, and its timer.
//!
//! [`Lapic`] is a pure state machine over a [`MonotonicClock`] the caller
//! injects: the I/O APIC (or an IPI) hands it interrupts ([`Lapic::accept`]),
//! its INTR output says whether the CPU should take one
//! ([`Lapic::has_interrupt`]), the CPU's acknowledge returns the vector
//! ([`Lapic::acknowledge`]). Like the PIT it keeps no timer of its own:
//! the current count is computed from the time elapsed since the count was
//! written, and a timer thread asks [`Lapic::next_timer_deadline`] when to
//! call [`Lapic::fire_timer`]. [`SharedLapic`] puts it behind a lock for
//! the MMIO bus, the vCPU, the I/O APIC and that thread, and tells
//! listeners when INTR rises and when a level-triggered interrupt ends.
//!
//! Modelled: the ID (bits 31:24 writable, as in QEMU and KVM), version
//! (`0x0005_0014`: six LVT entries, no EOI-broadcast suppression), TPR,
//! APR, PPR, EOI, LDR, DFR and SVR registers; the ISR, TMR and IRR; the
//! ESR with its latch-on-write; the ICR; the LVT entries for the timer,
//! thermal sensor, performance counters, LINT0, LINT1 and errors; the
//! timer's initial and current counts and divide configuration; the
//! `IA32_APIC_BASE` MSR (base, global enable, BSP flag).
//!
//! Not modelled: x2APIC (the EXTD bit of `IA32_APIC_BASE` is refused);
//! other CPUs, so an IPI reaches this CPU or nobody; the TSC-deadline timer
//! mode (CPUID does not offer it: LVT timer bit 18 is reserved and reads 0,
//! so the mode field is one-shot or periodic only); the LVT CMCI entry (the
//! version says six entries, so `0x2F0` is reserved); remote read (RRD
//! reads 0); SMI, INIT and start-up IPIs (they would go to other CPUs, and
//! INIT or SMI to this one does nothing); the thermal and performance
//! interrupts and LINT1's NMI (nothing raises them; their entries are
//! kept); delivery status and remote IRR bits, which always read 0 (a
//! message leaves at once); the focus processor bit of the SVR (reserved
//! on Pentium 4 and later).
//!
//! Reset state: what a PC BIOS (SeaBIOS) leaves for the OS: the APIC
//! globally enabled at `0xFEE00000` as the BSP (`IA32_APIC_BASE` =
//! `0xFEE0_0900`), software-enabled with spurious vector `0xFF` (SVR =
//! `0x1FF`), LINT0 = `0x8700` (ExtINT, level: the 8259A's INTR reaches the
//! CPU), LINT1 = `0x8400` (NMI, level), the other LVT entries masked, TPR
//! 0, DFR all ones (flat model), LDR 0, the timer stopped with divide by 2.
//!
//! Choices, where the SDM leaves room:
//! - APR reads the SDM's formula: the TPR if its class is at least the
//!   highest IRR vector's and above the highest ISR vector's, else the
//!   highest of the three classes (low nibble 0).
//! - A software-disabled APIC (SVR bit 8 clear) keeps and still delivers
//!   what its IRR and ISR hold, but accepts no new fixed interrupt (as
//!   KVM does); an NMI by the ICR still reaches the CPU.
//! - Accessing an offset that is no register (including `0x2F0`, the
//!   absent CMCI entry) reads 0, writes nothing and sets the ESR's
//!   "illegal register address" bit (bit 7), as on Pentium 4 and later
//!   processors and in QEMU. Writes to read-only registers are ignored
//!   without an error.
//! - An error raises the error LVT's interrupt, unless it is masked; if that
//!   entry's vector is itself illegal (below 16) the APIC only records
//!   "receive illegal vector" (bit 6), so an error never loops.
//! - An IPI with the self shorthand delivers any mode to this CPU (the SDM
//!   allows only fixed), exactly like "all including self". A logical
//!   destination matches with the SDM's AND of the destination and the
//!   LDR (flat model: DFR bits 31:28 all ones; cluster model otherwise),
//!   so `0xFF` reaches this APIC only if its LDR is not 0. A fixed or
//!   lowest-priority IPI with a vector below 16 sets "send illegal vector"
//!   (ESR bit 5) and goes nowhere.
//! - The timer counts bus clocks (`bus_hz`) divided by the divide
//!   configuration. Changing the divider while it runs keeps the current
//!   count and counts on at the new rate (what KVM does); so does changing
//!   between one-shot and periodic mode, in the new mode. A masked timer
//!   counts and reloads as usual, and its expiries are consumed without an
//!   interrupt: unmasking it raises nothing for expiries that came while
//!   it was masked.
//! - Several periods elapsed before [`Lapic::fire_timer`] was called are
//!   one interrupt, as the IRR holds one request per vector.
//! - Clearing the global enable (`IA32_APIC_BASE` bit 11) returns every
//!   register, the APIC ID included, to its power-up state (SDM 10.4.7.1:
//!   LVT entries masked, SVR `0xFF`, DFR all ones, the rest 0, the timer
//!   stopped); while disabled the APIC decodes no address, accepts nothing
//!   and [`Lapic::read`]/[`Lapic::write`] do nothing. Enabling it again
//!   leaves it in that state, software-disabled (SDM 10.4.3).
//!
//! MMIO accesses ([`SharedLapic`] as an [`MmioDevice`]): each register
//! occupies the first 4 bytes of its 16-byte slot. A read of any size sees
//! those bytes of the register, and 0 for bytes 4-15 of a slot. A write
//! reaches a register only if it starts at the slot (offset a multiple of
//! 16) and is at least 4 bytes wide (an 8-byte write puts its low half in
//! the register, its high half falls on the slot's reserved bytes); every
//! other write is ignored, as in QEMU (the SDM leaves them undefined).
//!
//! Driving the timer: a thread in `machine/` runs
//!
//! ```text
//! loop {
//!     let check = lapic.run_timer_until(lapic.now());
//!     if stop.load(Ordering::SeqCst) { break; }
//!     let sleep = check.time_left().map_or(IDLE_SLEEP, |left| left.max(MIN_SLEEP));
//!     lapic.wait_for_timer_change(&check, sleep);
//! }
//! ```
//!
//! and is stopped by `stop.store(true, Ordering::SeqCst)` followed by
//! [`SharedLapic::wake_timer_thread`]: the wait ends at once if the
//! timer's schedule changed or a wake came after `check` was taken, so
//! neither a register write nor the stop request can be missed.
//!
//! Invariants:
//! - The IRR never holds a vector below 16; an IRR bit is set only by an
//!   accepted interrupt and moves to the ISR only by an acknowledge.
//! - A running timer has a nonzero initial count; a one-shot timer stops
//!   (and reads 0) once its expiry was taken.
//! - Every register write that changes the timer first brings it up to
//!   the present ([`Lapic::fire_timer`]'s work), so no expiry is lost or
//!   credited to the wrong settings.
//! - [`SharedLapic`]'s INTR mirror is updated under the lock after every
//!   change; the INTR and EOI listeners are called outside the lock, so
//!   they may call back into the APIC or the I/O APIC.

use super::mmio::{MmioDevice, MovableMmio};
use super::pit::MonotonicClock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The architectural MSR number of `IA32_APIC_BASE`.
pub const IA32_APIC_BASE_MSR: u32 = 0x1b;
/// The default physical base of the local APIC's registers.
pub const LAPIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// The length of the region the local APIC decodes.
pub const LAPIC_REGION_LEN: u64 = 0x1000;
/// The timer's input clock the machine gives the APIC (before the divider).
pub const LAPIC_BUS_HZ: u64 = 100_000_000;
/// The value of the version register: version 0x14 (an integrated xAPIC),
/// six LVT entries (bits 23:16 hold the last index, 5).
pub const LAPIC_VERSION: u32 = 0x0005_0014;

/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor (read-only).
const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 11: the APIC is globally enabled.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// `IA32_APIC_BASE` bits 35:12: the base (a 36-bit physical address width).
const APIC_BASE_ADDRESS: u64 = 0x0000_000f_ffff_f000;
/// `IA32_APIC_BASE` at reset.
const RESET_APIC_BASE: u64 = LAPIC_DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP;

/// LVT bit 16: the entry is masked.
const LVT_MASKED: u32 = 1 << 16;
/// LVT timer bit 17: periodic mode (else one-shot).
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// An LVT entry at power-up: masked, everything else 0.
const LVT_RESET: u32 = LVT_MASKED;
/// The delivery mode field of an LVT entry and of the ICR.
const DELIVERY_MODE_SHIFT: u32 = 8;
/// Delivery mode 0b111: ExtINT (the 8259A supplies the vector).
const DELIVERY_EXTINT: u32 = 0b111;

/// SVR bit 8: the APIC is software-enabled.
const SVR_ENABLE: u32 = 1 << 8;
/// The SVR bits a write changes: the vector and the software enable.
const SVR_WRITABLE: u32 = 0x1ff;
/// The SVR at power-up: software-disabled, spurious vector 0xFF.
const SVR_RESET: u32 = 0xff;

/// The DFR's model field (bits 31:28); bits 27:0 always read as ones.
const DFR_MODEL: u32 = 0xf000_0000;
/// DFR model 0b1111: the flat model.
const DFR_FLAT: u32 = 0xf;

/// The SeaBIOS settings: SVR software-enabled with vector 0xFF.
const BIOS_SVR: u32 = 0x1ff;
/// The SeaBIOS settings: LINT0 ExtINT, level-triggered, unmasked.
const BIOS_LINT0: u32 = 0x8700;
/// The SeaBIOS settings: LINT1 NMI, level-triggered, unmasked.
const BIOS_LINT1: u32 = 0x8400;

/// ESR bit 5: this APIC tried to send an illegal vector.
const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: this APIC received (or generated) an illegal vector.
const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR bit 7: an access to a reserved register.
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// The ICR low bits a write keeps: vector, delivery mode, destination
/// mode, level, trigger mode, destination shorthand.
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;
/// ICR bit 11: logical destination mode.
const ICR_LOGICAL: u32 = 1 << 11;
/// The ICR's destination shorthand field (bits 19:18).
const ICR_SHORTHAND_SHIFT: u32 = 18;
/// ICR high bits 31:24: the destination.
const ICR_HIGH_WRITABLE: u32 = 0xff00_0000;

/// The ID register bits a write changes (the 8-bit xAPIC ID).
const ID_WRITABLE: u32 = 0xff00_0000;
/// The LDR bits a write changes (the 8-bit logical ID).
const LDR_WRITABLE: u32 = 0xff00_0000;
/// The divide configuration bits a write changes (0, 1 and 3).
const DIVIDE_WRITABLE: u32 = 0b1011;

/// The first vector a fixed interrupt may carry (0-15 are illegal).
const FIRST_LEGAL_VECTOR: u8 = 16;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Why an APIC request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LapicError {
    /// A write to `IA32_APIC_BASE` set a reserved bit (the caller raises
    /// #GP(0)).
    #[error("IA32_APIC_BASE value {0:#x} sets reserved bits: only the base (bits 35:12), the enable (bit 11) and the BSP flag (bit 8) may be set")]
    ReservedApicBaseBits(u64),
}

/// What a register write asks of the machine, beyond the APIC itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicWriteEffect {
    /// An EOI ended this level-triggered vector: broadcast it to the I/O
    /// APIC.
    pub eoi_level: Option<u8>,
    /// An IPI sent an NMI to this CPU.
    pub nmi: bool,
}

/// A local vector table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lvt {
    Timer = 0,
    Thermal = 1,
    Performance = 2,
    Lint0 = 3,
    Lint1 = 4,
    Error = 5,
}

impl Lvt {
    /// The bits of the entry a write changes.
    fn writable(self) -> u32 {
        match self {
            // Vector, mask, periodic (bit 18 is reserved without TSC-deadline).
            Lvt::Timer => 0x0003_00ff,
            // Vector, delivery mode, mask.
            Lvt::Thermal | Lvt::Performance => 0x0001_07ff,
            // Vector, delivery mode, polarity, trigger mode, mask.
            Lvt::Lint0 | Lvt::Lint1 => 0x0001_a7ff,
            // Vector, mask.
            Lvt::Error => 0x0001_00ff,
        }
    }
}

/// A register, by its offset in the APIC's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    Id,
    Version,
    TaskPriority,
    ArbitrationPriority,
    ProcessorPriority,
    EndOfInterrupt,
    RemoteRead,
    LogicalDestination,
    DestinationFormat,
    SpuriousVector,
    /// One of the eight 32-bit words of the ISR.
    InService(usize),
    /// One of the eight 32-bit words of the TMR.
    TriggerMode(usize),
    /// One of the eight 32-bit words of the IRR.
    InterruptRequest(usize),
    ErrorStatus,
    CommandLow,
    CommandHigh,
    Lvt(Lvt),
    InitialCount,
    CurrentCount,
    DivideConfiguration,
}

impl Register {
    /// The register at `offset` (a multiple of 16), if there is one.
    fn at(offset: u32) -> Option<Register> {
        let word = ((offset >> 4) & 7) as usize;
        Some(match offset {
            0x020 => Register::Id,
            0x030 => Register::Version,
            0x080 => Register::TaskPriority,
            0x090 => Register::ArbitrationPriority,
            0x0a0 => Register::ProcessorPriority,
            0x0b0 => Register::EndOfInterrupt,
            0x0c0 => Register::RemoteRead,
            0x0d0 => Register::LogicalDestination,
            0x0e0 => Register::DestinationFormat,
            0x0f0 => Register::SpuriousVector,
            0x100..=0x170 => Register::InService(word),
            0x180..=0x1f0 => Register::TriggerMode(word),
            0x200..=0x270 => Register::InterruptRequest(word),
            0x280 => Register::ErrorStatus,
            0x300 => Register::CommandLow,
            0x310 => Register::CommandHigh,
            0x320 => Register::Lvt(Lvt::Timer),
            0x330 => Register::Lvt(Lvt::Thermal),
            0x340 => Register::Lvt(Lvt::Performance),
            0x350 => Register::Lvt(Lvt::Lint0),
            0x360 => Register::Lvt(Lvt::Lint1),
            0x370 => Register::Lvt(Lvt::Error),
            0x380 => Register::InitialCount,
            0x390 => Register::CurrentCount,
            0x3e0 => Register::DivideConfiguration,
            _ => return None,
        })
    }
}

/// A set of vectors, as the 256-bit ISR, TMR and IRR hold them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }

    fn insert(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] |= 1 << (vector & 31);
    }

    fn remove(&mut self, vector: u8) {
        self.0[usize::from(vector >> 5)] &= !(1 << (vector & 31));
    }

    /// The highest vector in the set.
    fn highest(&self) -> Option<u8> {
        let (word, bits) = self
            .0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, bits)| **bits != 0)?;
        Some((word as u8) << 5 | (31 - bits.leading_zeros()) as u8)
    }

    /// The 32-bit word `word` (0-7), as the guest reads it.
    fn word(&self, word: usize) -> u32 {
        self.0[word]
    }
}

/// The priority class of `vector` (its high nibble).
fn class(vector: u8) -> u8 {
    vector >> 4
}

/// A running timer: counts the bus clocks since `start_cycle` in steps of
/// `divisor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimerRun {
    /// The bus clock from which the counting resumed.
    start_cycle: u64,
    /// Counts done before `start_cycle` (part of a period, after the
    /// divider or the mode changed).
    counted_before: u64,
    /// Bus clocks per count.
    divisor: u64,
    /// Expiries taken: raised, or consumed under the mask.
    taken: u64,
}

impl TimerRun {
    /// Counts done by bus clock `cycle` since the initial count was loaded
    /// (or since the last rebase, plus `counted_before`).
    fn counts_at(&self, cycle: u64) -> u64 {
        self.counted_before + cycle.saturating_sub(self.start_cycle) / self.divisor
    }
}

/// The local APIC of the virtual CPU (see the module documentation).
pub struct Lapic {
    clock: Arc<dyn MonotonicClock>,
    /// The timer's input clock, in Hz (at least 1).
    bus_hz: u64,
    /// `IA32_APIC_BASE`.
    apic_base: u64,
    /// The ID register (the ID in bits 31:24).
    id: u32,
    task_priority: u8,
    logical_destination: u32,
    destination_format: u32,
    spurious_vector: u32,
    in_service: VectorSet,
    trigger_mode: VectorSet,
    requests: VectorSet,
    /// The ESR as read: the errors latched by the last ESR write.
    errors_latched: u32,
    /// Errors seen since the last ESR write.
    errors_pending: u32,
    command_low: u32,
    command_high: u32,
    /// The LVT entries, indexed by [`Lvt`].
    lvt: [u32; 6],
    initial_count: u32,
    divide_configuration: u32,
    /// `None` while the timer is stopped (initial count 0, or a one-shot
    /// that expired).
    timer: Option<TimerRun>,
}

impl std::fmt::Debug for Lapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lapic")
            .field("apic_base", &format_args!("{:#x}", self.apic_base))
            .field("task_priority", &self.task_priority)
            .field("spurious_vector", &self.spurious_vector)
            .field("in_service", &self.in_service)
            .field("requests", &self.requests)
            .field("lvt", &self.lvt)
            .field("initial_count", &self.initial_count)
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl Lapic {
    /// The APIC as a PC BIOS leaves it (see the module documentation),
    /// its timer counting `bus_hz` clocks per second of `clock` before the
    /// divider (the machine uses [`LAPIC_BUS_HZ`]; 0 counts as 1).
    pub fn new(clock: Arc<dyn MonotonicClock>, bus_hz: u64) -> Lapic {
        let mut lapic = Lapic::powered_up(clock, bus_hz.max(1), RESET_APIC_BASE);
        lapic.spurious_vector = BIOS_SVR;
        lapic.lvt[Lvt::Lint0 as usize] = BIOS_LINT0;
        lapic.lvt[Lvt::Lint1 as usize] = BIOS_LINT1;
        lapic
    }

    /// The registers after power-up (SDM 10.4.7.1), with `apic_base`.
    fn powered_up(clock: Arc<dyn MonotonicClock>, bus_hz: u64, apic_base: u64) -> Lapic {
        Lapic {
            clock,
            bus_hz,
            apic_base,
            id: 0,
            task_priority: 0,
            logical_destination: 0,
            destination_format: u32::MAX,
            spurious_vector: SVR_RESET,
            in_service: VectorSet::default(),
            trigger_mode: VectorSet::default(),
            requests: VectorSet::default(),
            errors_latched: 0,
            errors_pending: 0,
            command_low: 0,
            command_high: 0,
            lvt: [LVT_RESET; 6],
            initial_count: 0,
            divide_configuration: 0,
            timer: None,
        }
    }

    /// The clock's time now.
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Whether the APIC is globally enabled (`IA32_APIC_BASE` bit 11).
    pub fn hardware_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_ENABLE != 0
    }

    /// Whether the APIC is software-enabled (SVR bit 8).
    pub fn software_enabled(&self) -> bool {
        self.spurious_vector & SVR_ENABLE != 0
    }

    /// The 8-bit APIC ID.
    pub fn apic_id(&self) -> u8 {
        (self.id >> 24) as u8
    }

    /// The region the APIC decodes: its 4 KiB at the base while globally
    /// enabled, nothing while disabled.
    pub fn region(&self) -> Option<(u64, u64)> {
        self.hardware_enabled()
            .then_some((self.apic_base & APIC_BASE_ADDRESS, LAPIC_REGION_LEN))
    }

    /// `IA32_APIC_BASE` (`0xFEE0_0900` at reset).
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// A write of `IA32_APIC_BASE`. Only the base (bits 35:12), the global
    /// enable (bit 11) and the BSP flag (bit 8, read-only: it stays set
    /// whatever is written) may be set; anything else is refused, and the
    /// caller raises #GP(0). Clearing the enable returns the registers to
    /// their power-up state and stops decoding; setting it again leaves
    /// them so (software-disabled).
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), LapicError> {
        if value & !(APIC_BASE_ADDRESS | APIC_BASE_ENABLE | APIC_BASE_BSP) != 0 {
            return Err(LapicError::ReservedApicBaseBits(value));
        }
        let apic_base = value & (APIC_BASE_ADDRESS | APIC_BASE_ENABLE) | APIC_BASE_BSP;
        if self.hardware_enabled() && apic_base & APIC_BASE_ENABLE == 0 {
            *self = Lapic::powered_up(self.clock.clone(), self.bus_hz, apic_base);
        }
        self.apic_base = apic_base;
        Ok(())
    }

    /// Whether the 8259A's INTR reaches the CPU: the APIC is globally
    /// disabled (the CPU's LINT0 pin is then INTR itself), or LINT0 is
    /// unmasked in ExtINT mode (as QEMU and KVM decide it).
    pub fn accepts_pic_interrupt(&self) -> bool {
        let lint0 = self.lvt[Lvt::Lint0 as usize];
        !self.hardware_enabled()
            || (lint0 & LVT_MASKED == 0 && (lint0 >> DELIVERY_MODE_SHIFT) & 7 == DELIVERY_EXTINT)
    }

    /// Whether an interrupt for `destination` reaches this APIC: physical
    /// mode (`logical` false) matches the APIC ID or the broadcast `0xFF`;
    /// logical mode matches the LDR in the flat or cluster model the DFR
    /// selects (see the module documentation).
    pub fn accepts_destination(&self, destination: u8, logical: bool) -> bool {
        if !logical {
            return destination == 0xff || destination == self.apic_id();
        }
        let logical_id = (self.logical_destination >> 24) as u8;
        if self.destination_format >> 28 == DFR_FLAT {
            return destination & logical_id != 0;
        }
        let cluster = destination >> 4;
        (cluster == 0xf || cluster == logical_id >> 4) && destination & logical_id & 0xf != 0
    }

    /// The priority below which (by class) interrupts wait: the TPR, or
    /// the class of the highest interrupt in service if that is higher.
    fn processor_priority(&self) -> u8 {
        let in_service = self.in_service.highest().unwrap_or(0);
        if class(self.task_priority) >= class(in_service) {
            self.task_priority
        } else {
            in_service & 0xf0
        }
    }

    /// The arbitration priority, by the SDM's formula.
    fn arbitration_priority(&self) -> u8 {
        let tpr = class(self.task_priority);
        let in_service = class(self.in_service.highest().unwrap_or(0));
        let requested = class(self.requests.highest().unwrap_or(0));
        if tpr >= requested && tpr > in_service {
            self.task_priority
        } else {
            tpr.max(in_service).max(requested) << 4
        }
    }

    /// The INTR output: the highest requested vector's class is above the
    /// processor priority's, and the APIC is globally enabled.
    pub fn has_interrupt(&self) -> bool {
        self.hardware_enabled()
            && self
                .requests
                .highest()
                .is_some_and(|vector| class(vector) > class(self.processor_priority()))
    }

    /// The CPU's interrupt acknowledge: the highest requested vector moves
    /// from the IRR to the ISR and is returned. With nothing deliverable
    /// (the request went away or the TPR rose since INTR rose) the
    /// spurious vector (SVR bits 7:0) is returned and nothing changes.
    pub fn acknowledge(&mut self) -> u8 {
        match self.requests.highest().filter(|_| self.has_interrupt()) {
            Some(vector) => {
                self.requests.remove(vector);
                self.in_service.insert(vector);
                vector
            }
            None => self.spurious_vector as u8,
        }
    }

    /// A fixed interrupt for this APIC (from the I/O APIC, an IPI or its
    /// own LVT): sets its IRR bit, and its TMR bit if `level_triggered`
    /// (cleared if edge). A vector below 16 is illegal: it sets ESR bit 6
    /// and is dropped. A globally or software-disabled APIC accepts
    /// nothing.
    pub fn accept(&mut self, vector: u8, level_triggered: bool) {
        if !self.hardware_enabled() || !self.software_enabled() {
            return;
        }
        if vector < FIRST_LEGAL_VECTOR {
            self.signal_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        self.request(vector, level_triggered);
    }

    /// Sets `vector`'s IRR bit and its TMR bit as `level_triggered`.
    fn request(&mut self, vector: u8, level_triggered: bool) {
        self.requests.insert(vector);
        if level_triggered {
            self.trigger_mode.insert(vector);
        } else {
            self.trigger_mode.remove(vector);
        }
    }

    /// Records `error` for the next ESR write and raises the error LVT's
    /// interrupt if it is unmasked (an illegal vector there only adds
    /// "receive illegal vector").
    fn signal_error(&mut self, error: u32) {
        self.errors_pending |= error;
        let lvt = self.lvt[Lvt::Error as usize];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        let vector = lvt as u8;
        if vector < FIRST_LEGAL_VECTOR {
            self.errors_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
        } else {
            self.request(vector, false);
        }
    }

    /// A 32-bit read of the register at `offset` (a multiple of 16 within
    /// the APIC's page; other offsets read 0). Reserved bits read 0; an
    /// offset that is no register reads 0 and sets ESR bit 7.
    pub fn read(&mut self, offset: u32) -> u32 {
        if !self.hardware_enabled() || !offset.is_multiple_of(16) {
            return 0;
        }
        let Some(register) = Register::at(offset) else {
            self.signal_error(ESR_ILLEGAL_REGISTER);
            return 0;
        };
        self.read_register(register)
    }

    fn read_register(&self, register: Register) -> u32 {
        match register {
            Register::Id => self.id,
            Register::Version => LAPIC_VERSION,
            Register::TaskPriority => u32::from(self.task_priority),
            Register::ArbitrationPriority => u32::from(self.arbitration_priority()),
            Register::ProcessorPriority => u32::from(self.processor_priority()),
            Register::EndOfInterrupt | Register::RemoteRead => 0,
            Register::LogicalDestination => self.logical_destination,
            Register::DestinationFormat => self.destination_format,
            Register::SpuriousVector => self.spurious_vector,
            Register::InService(word) => self.in_service.word(word),
            Register::TriggerMode(word) => self.trigger_mode.word(word),
            Register::InterruptRequest(word) => self.requests.word(word),
            Register::ErrorStatus => self.errors_latched,
            Register::CommandLow => self.command_low,
            Register::CommandHigh => self.command_high,
            Register::Lvt(lvt) => self.lvt[lvt as usize],
            Register::InitialCount => self.initial_count,
            Register::CurrentCount => self.current_count(),
            Register::DivideConfiguration => self.divide_configuration,
        }
    }

    /// A 32-bit write of `value` to the register at `offset` (a multiple of
    /// 16 within the APIC's page; other offsets are ignored). Reserved bits
    /// are not written, read-only registers ignore writes, an offset that
    /// is no register sets ESR bit 7. The effect says what the machine
    /// must do beyond the APIC.
    pub fn write(&mut self, offset: u32, value: u32) -> LapicWriteEffect {
        let mut effect = LapicWriteEffect::default();
        if !self.hardware_enabled() || !offset.is_multiple_of(16) {
            return effect;
        }
        let Some(register) = Register::at(offset) else {
            self.signal_error(ESR_ILLEGAL_REGISTER);
            return effect;
        };
        match register {
            Register::Id => self.id = value & ID_WRITABLE,
            Register::TaskPriority => self.task_priority = value as u8,
            Register::EndOfInterrupt => effect.eoi_level = self.end_of_interrupt(),
            Register::LogicalDestination => self.logical_destination = value & LDR_WRITABLE,
            Register::DestinationFormat => self.destination_format = value | !DFR_MODEL,
            Register::SpuriousVector => self.write_spurious_vector(value),
            Register::ErrorStatus => self.errors_latched = std::mem::take(&mut self.errors_pending),
            Register::CommandLow => effect.nmi = self.send_ipi(value),
            Register::CommandHigh => self.command_high = value & ICR_HIGH_WRITABLE,
            Register::Lvt(lvt) => self.write_lvt(lvt, value),
            Register::InitialCount => self.write_initial_count(value),
            Register::DivideConfiguration => self.write_divide_configuration(value),
            Register::Version
            | Register::ArbitrationPriority
            | Register::ProcessorPriority
            | Register::RemoteRead
            | Register::InService(_)
            | Register::TriggerMode(_)
            | Register::InterruptRequest(_)
            | Register::CurrentCount => {}
        }
        effect
    }

    /// An EOI: the highest in-service vector ends; returned if it was
    /// level-triggered (its TMR bit set).
    fn end_of_interrupt(&mut self) -> Option<u8> {
        let vector = self.in_service.highest()?;
        self.in_service.remove(vector);
        self.trigger_mode.contains(vector).then_some(vector)
    }

    /// An SVR write; clearing the software enable masks every LVT entry.
    fn write_spurious_vector(&mut self, value: u32) {
        self.fire_timer_until(self.clock.now());
        self.spurious_vector = value & SVR_WRITABLE;
        if !self.software_enabled() {
            for entry in &mut self.lvt {
                *entry |= LVT_MASKED;
            }
        }
    }

    /// An LVT write; the mask stays set while software-disabled.
    fn write_lvt(&mut self, lvt: Lvt, value: u32) {
        let mut value = value & lvt.writable();
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        if lvt != Lvt::Timer {
            self.lvt[lvt as usize] = value;
            return;
        }
        let now = self.clock.now();
        self.fire_timer_until(now);
        let old = std::mem::replace(&mut self.lvt[Lvt::Timer as usize], value);
        if (old ^ value) & LVT_TIMER_PERIODIC != 0 {
            self.rebase_timer(now);
        }
    }

    /// A write of the ICR's low half: sends the IPI it describes. Returns
    /// whether it sent an NMI to this CPU.
    fn send_ipi(&mut self, value: u32) -> bool {
        self.command_low = value & ICR_LOW_WRITABLE;
        let vector = self.command_low as u8;
        let mode = (self.command_low >> DELIVERY_MODE_SHIFT) & 7;
        let fixed = matches!(mode, 0b000 | 0b001);
        if fixed && vector < FIRST_LEGAL_VECTOR {
            self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
            return false;
        }
        if !self.ipi_reaches_self() {
            return false;
        }
        if fixed {
            self.accept(vector, false);
        }
        mode == 0b100
    }

    /// Whether the IPI in the ICR has this APIC among its destinations.
    fn ipi_reaches_self(&self) -> bool {
        match (self.command_low >> ICR_SHORTHAND_SHIFT) & 3 {
            0b00 => self.accepts_destination(
                (self.command_high >> 24) as u8,
                self.command_low & ICR_LOGICAL != 0,
            ),
            // Self, and all including self.
            0b01 | 0b10 => true,
            // All excluding self.
            _ => false,
        }
    }

    /// The divisor the divide configuration selects: 2 to 128, or 1.
    fn divisor(&self) -> u64 {
        let code = (self.divide_configuration & 0b11) | (self.divide_configuration & 0b1000) >> 1;
        if code == 0b111 {
            1
        } else {
            2 << code
        }
    }

    fn timer_periodic(&self) -> bool {
        self.lvt[Lvt::Timer as usize] & LVT_TIMER_PERIODIC != 0
    }

    /// The bus clocks that have happened by `time`.
    fn cycle_at(&self, time: Duration) -> u64 {
        let cycles = time.as_nanos() * u128::from(self.bus_hz) / NANOS_PER_SECOND;
        u64::try_from(cycles).unwrap_or(u64::MAX)
    }

    /// The earliest time by which `cycle` bus clocks have happened.
    fn time_of_cycle(&self, cycle: u64) -> Duration {
        let nanos = (u128::from(cycle) * NANOS_PER_SECOND).div_ceil(u128::from(self.bus_hz));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The expiries a timer has had after `counts` counts.
    fn expiries_after(&self, counts: u64) -> u64 {
        let initial = u64::from(self.initial_count);
        if self.timer_periodic() {
            counts / initial
        } else {
            u64::from(counts >= initial)
        }
    }

    /// The current count register.
    fn current_count(&self) -> u32 {
        let Some(run) = self.timer else {
            return 0;
        };
        let initial = u64::from(self.initial_count);
        let counts = run.counts_at(self.cycle_at(self.clock.now()));
        let left = if self.timer_periodic() {
            initial - counts % initial
        } else {
            initial.saturating_sub(counts)
        };
        left as u32
    }

    /// A write of the initial count: (re)starts the timer from `value`
    /// now, or stops it if `value` is 0.
    fn write_initial_count(&mut self, value: u32) {
        let now = self.clock.now();
        self.fire_timer_until(now);
        self.initial_count = value;
        self.timer = (value != 0).then(|| TimerRun {
            start_cycle: self.cycle_at(now),
            counted_before: 0,
            divisor: self.divisor(),
            taken: 0,
        });
    }

    /// A write of the divide configuration: a running timer keeps its
    /// current count and counts on at the new rate.
    fn write_divide_configuration(&mut self, value: u32) {
        let now = self.clock.now();
        self.fire_timer_until(now);
        self.divide_configuration = value & DIVIDE_WRITABLE;
        self.rebase_timer(now);
    }

    /// Restarts a running timer's counting at `now` from where it is in
    /// its current period, with the present divisor. The timer must have
    /// been brought up to `now` ([`Lapic::fire_timer_until`]).
    fn rebase_timer(&mut self, now: Duration) {
        let cycle = self.cycle_at(now);
        let divisor = self.divisor();
        let initial = u64::from(self.initial_count);
        if let Some(run) = &mut self.timer {
            *run = TimerRun {
                start_cycle: cycle,
                counted_before: run.counts_at(cycle) % initial,
                divisor,
                taken: 0,
            };
        }
    }

    /// When the timer's next expiry that raises an interrupt is due (it may
    /// be past, if [`Lapic::fire_timer`] was not called yet); `None` if the
    /// timer is stopped or masked (a masked timer's expiries are consumed
    /// without an interrupt when the timer is next looked at, and its
    /// count is computed on demand, so nothing needs to happen on time).
    pub fn next_timer_deadline(&self) -> Option<Duration> {
        let run = self.timer?;
        if self.lvt[Lvt::Timer as usize] & LVT_MASKED != 0 {
            return None;
        }
        let initial = u64::from(self.initial_count);
        let expiry_count = run.taken.saturating_add(1).saturating_mul(initial);
        let cycles = (expiry_count - run.counted_before).saturating_mul(run.divisor);
        Some(self.time_of_cycle(run.start_cycle.saturating_add(cycles)))
    }

    /// Brings the timer up to the clock's present: see
    /// [`Lapic::fire_timer_until`].
    pub fn fire_timer(&mut self) {
        self.fire_timer_until(self.clock.now());
    }

    /// Brings the timer up to `now`: if it expired since the last look,
    /// requests the timer LVT's vector (once, however many periods
    /// elapsed) unless the entry is masked; a one-shot timer stops at 0, a
    /// periodic one goes on with its next period. A `now` before the last
    /// look changes nothing.
    pub fn fire_timer_until(&mut self, now: Duration) {
        let Some(run) = self.timer else {
            return;
        };
        let expiries = self.expiries_after(run.counts_at(self.cycle_at(now)));
        if expiries <= run.taken {
            return;
        }
        self.timer = self.timer_periodic().then_some(TimerRun {
            taken: expiries,
            ..run
        });
        let lvt = self.lvt[Lvt::Timer as usize];
        if lvt & LVT_MASKED == 0 {
            self.accept(lvt as u8, false);
        }
    }
}

/// Something told when INTR rises.
type IntrListener = Arc<dyn Fn() + Send + Sync>;
/// Something told the vector of a level-triggered interrupt's EOI.
type EoiListener = Arc<dyn Fn(u8) + Send + Sync>;

/// What the lock guards: the APIC, and the timer thread's wake requests.
struct Guarded {
    lapic: Lapic,
    /// Incremented by [`SharedLapic::wake_timer_thread`].
    wakes: u64,
}

struct Shared {
    guarded: Mutex<Guarded>,
    /// INTR as of the last change.
    intr: AtomicBool,
    /// An NMI sent by an IPI, not yet taken.
    nmi: AtomicBool,
    /// Signalled when the timer's schedule changes or a wake is asked for.
    timer_changed: Condvar,
    intr_listener: Mutex<Option<IntrListener>>,
    eoi_listener: Mutex<Option<EoiListener>>,
}

/// What [`SharedLapic::run_timer_until`] saw: when the timer's next
/// interrupt is due; pass it to [`SharedLapic::wait_for_timer_change`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerCheck {
    /// The time the timer was brought up to.
    pub now: Duration,
    /// When the next expiry that raises an interrupt is due, if any.
    pub next_deadline: Option<Duration>,
    /// The wake requests counted then.
    wakes: u64,
}

impl TimerCheck {
    /// How long from `now` to the next deadline (zero if it is past);
    /// `None` if no interrupt will come without a register write.
    pub fn time_left(&self) -> Option<Duration> {
        self.next_deadline
            .map(|deadline| deadline.saturating_sub(self.now))
    }
}

/// The local APIC shared by the MMIO bus, the vCPU, the I/O APIC and the
/// machine's timer thread. Clones share the APIC.
///
/// Self-NMIs (an NMI sent by an ICR write) are latched for
/// [`SharedLapic::take_nmi`] rather than told to a listener: only the
/// vCPU's own MMIO store can send one, so the vCPU checks after the store.
#[derive(Clone)]
pub struct SharedLapic {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SharedLapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLapic")
            .field("lapic", &self.lock().lapic)
            .finish_non_exhaustive()
    }
}

impl SharedLapic {
    /// Shares `lapic`.
    pub fn new(lapic: Lapic) -> SharedLapic {
        let intr = lapic.has_interrupt();
        SharedLapic {
            shared: Arc::new(Shared {
                guarded: Mutex::new(Guarded { lapic, wakes: 0 }),
                intr: AtomicBool::new(intr),
                nmi: AtomicBool::new(false),
                timer_changed: Condvar::new(),
                intr_listener: Mutex::new(None),
                eoi_listener: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Guarded> {
        // Every operation leaves the APIC consistent, even one that panicked.
        self.shared
            .guarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the APIC, then updates INTR, tells the INTR listener if
    /// it rose and wakes the timer thread if the timer's schedule changed.
    /// A write made here reports its [`LapicWriteEffect`] to `f` only: use
    /// [`SharedLapic::write`] to have the effects carried out.
    pub fn with<R>(&self, f: impl FnOnce(&mut Lapic) -> R) -> R {
        let (result, rose, timer_changed) = {
            let mut guarded = self.lock();
            let deadline = guarded.lapic.next_timer_deadline();
            let result = f(&mut guarded.lapic);
            let timer_changed = guarded.lapic.next_timer_deadline() != deadline;
            (result, self.update_intr(&guarded.lapic), timer_changed)
        };
        if timer_changed {
            self.shared.timer_changed.notify_all();
        }
        if rose {
            self.tell_intr_listener();
        }
        result
    }

    /// Mirrors `lapic`'s INTR; whether it rose.
    fn update_intr(&self, lapic: &Lapic) -> bool {
        let intr = lapic.has_interrupt();
        let was = self.shared.intr.swap(intr, Ordering::SeqCst);
        intr && !was
    }

    fn tell_intr_listener(&self) {
        let listener = self
            .shared
            .intr_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener();
        }
    }

    /// The INTR output (one atomic load).
    pub fn intr(&self) -> bool {
        self.shared.intr.load(Ordering::SeqCst)
    }

    /// Calls `listener` (on the thread that made the change, without the
    /// APIC's lock) whenever INTR goes from low to high; replaces the
    /// previous listener.
    pub fn set_intr_listener(&self, listener: IntrListener) {
        *self
            .shared
            .intr_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// Calls `listener` with the vector (on the thread that wrote the EOI,
    /// without the APIC's lock) whenever an EOI ends a level-triggered
    /// interrupt, for the I/O APIC's EOI; replaces the previous listener.
    pub fn set_eoi_listener(&self, listener: EoiListener) {
        *self
            .shared
            .eoi_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// The acknowledge cycle, if INTR is up: the vector to deliver.
    pub fn acknowledge_if_pending(&self) -> Option<u8> {
        self.with(|lapic| lapic.has_interrupt().then(|| lapic.acknowledge()))
    }

    /// A fixed interrupt for this APIC (see [`Lapic::accept`]).
    pub fn accept(&self, vector: u8, level_triggered: bool) {
        self.with(|lapic| lapic.accept(vector, level_triggered));
    }

    /// A register read (see [`Lapic::read`]).
    pub fn read(&self, offset: u32) -> u32 {
        self.with(|lapic| lapic.read(offset))
    }

    /// A register write (see [`Lapic::write`]) whose effects are carried
    /// out: a level-triggered EOI goes to the EOI listener, a self-NMI is
    /// latched for [`SharedLapic::take_nmi`]. Returns the effect too.
    pub fn write(&self, offset: u32, value: u32) -> LapicWriteEffect {
        let effect = self.with(|lapic| lapic.write(offset, value));
        if effect.nmi {
            self.shared.nmi.store(true, Ordering::SeqCst);
        }
        if let Some(vector) = effect.eoi_level {
            let listener = self
                .shared
                .eoi_listener
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(listener) = listener {
                listener(vector);
            }
        }
        effect
    }

    /// Whether an IPI sent an NMI to this CPU since the last call; takes
    /// it.
    pub fn take_nmi(&self) -> bool {
        self.shared.nmi.swap(false, Ordering::SeqCst)
    }

    /// `IA32_APIC_BASE` (see [`Lapic::apic_base`]).
    pub fn apic_base(&self) -> u64 {
        self.with(|lapic| lapic.apic_base())
    }

    /// A write of `IA32_APIC_BASE` (see [`Lapic::set_apic_base`]).
    pub fn set_apic_base(&self, value: u64) -> Result<(), LapicError> {
        self.with(|lapic| lapic.set_apic_base(value))
    }

    /// Whether the 8259A's INTR reaches the CPU (see
    /// [`Lapic::accepts_pic_interrupt`]).
    pub fn accepts_pic_interrupt(&self) -> bool {
        self.lock().lapic.accepts_pic_interrupt()
    }

    /// Whether the timer can raise an interrupt by itself (it runs with
    /// its LVT entry unmasked), for a halted CPU deciding whether anything
    /// can wake it.
    pub fn timer_may_fire(&self) -> bool {
        self.lock().lapic.next_timer_deadline().is_some()
    }

    /// The APIC's clock now.
    pub fn now(&self) -> Duration {
        self.lock().lapic.now()
    }

    /// For the timer thread: brings the timer up to `now` (raising its
    /// interrupt if an expiry came, see [`Lapic::fire_timer_until`]) and
    /// says when the next one is due.
    pub fn run_timer_until(&self, now: Duration) -> TimerCheck {
        let (check, rose) = {
            let mut guarded = self.lock();
            guarded.lapic.fire_timer_until(now);
            let check = TimerCheck {
                now,
                next_deadline: guarded.lapic.next_timer_deadline(),
                wakes: guarded.wakes,
            };
            (check, self.update_intr(&guarded.lapic))
        };
        if rose {
            self.tell_intr_listener();
        }
        check
    }

    /// For the timer thread: waits until the timer's next deadline differs
    /// from `check`'s, a wake was asked for since `check`
    /// ([`SharedLapic::wake_timer_thread`]), or `timeout` passes.
    pub fn wait_for_timer_change(&self, check: &TimerCheck, timeout: Duration) {
        let guarded = self.lock();
        let unchanged = |guarded: &mut Guarded| {
            guarded.wakes == check.wakes
                && guarded.lapic.next_timer_deadline() == check.next_deadline
        };
        // A poisoned lock is tolerated: the APIC stays consistent.
        drop(
            self.shared
                .timer_changed
                .wait_timeout_while(guarded, timeout, unchanged),
        );
    }

    /// Ends the timer thread's wait (to stop it: set its stop flag first).
    pub fn wake_timer_thread(&self) {
        self.lock().wakes += 1;
        self.shared.timer_changed.notify_all();
    }
}

impl MmioDevice for SharedLapic {
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let mut slot: Option<(u64, [u8; 4])> = None;
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            let within = (at % 16) as usize;
            if within >= 4 {
                *byte = 0;
                continue;
            }
            let register = at - within as u64;
            let bytes = match slot {
                Some((read, bytes)) if read == register => bytes,
                _ => {
                    let value = u32::try_from(register).map_or(0, |offset| self.read(offset));
                    slot = Some((register, value.to_le_bytes()));
                    value.to_le_bytes()
                }
            };
            *byte = bytes[within];
        }
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(&[b0, b1, b2, b3])) = (u32::try_from(offset), data.first_chunk())
        else {
            return;
        };
        if offset.is_multiple_of(16) {
            self.write(offset, u32::from_le_bytes([b0, b1, b2, b3]));
        }
    }
}

impl MovableMmio for SharedLapic {
    fn region(&self) -> Option<(u64, u64)> {
        self.lock().lapic.region()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use crate::devices::pit::ManualClock as FakeClock;

    const ID: u32 = 0x20;
    const VERSION: u32 = 0x30;
    const TPR: u32 = 0x80;
    const APR: u32 = 0x90;
    const PPR: u32 = 0xa0;
    const EOI: u32 = 0xb0;
    const LDR: u32 = 0xd0;
    const DFR: u32 = 0xe0;
    const SVR: u32 = 0xf0;
    const ISR: u32 = 0x100;
    const TMR: u32 = 0x180;
    const IRR: u32 = 0x200;
    const ESR: u32 = 0x280;
    const CMCI: u32 = 0x2f0;
    const ICR_LOW: u32 = 0x300;
    const ICR_HIGH: u32 = 0x310;
    const LVT_TIMER: u32 = 0x320;
    const LVT_THERMAL: u32 = 0x330;
    const LVT_PERF: u32 = 0x340;
    const LVT_LINT0: u32 = 0x350;
    const LVT_LINT1: u32 = 0x360;
    const LVT_ERROR: u32 = 0x370;
    const INITIAL_COUNT: u32 = 0x380;
    const CURRENT_COUNT: u32 = 0x390;
    const DIVIDE: u32 = 0x3e0;

    /// The machine's APIC (100 MHz bus: one count every 10 ns at divide
    /// by 1) on a fake clock.
    fn lapic() -> (Lapic, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        (Lapic::new(clock.clone(), LAPIC_BUS_HZ), clock)
    }

    /// The ISR, TMR or IRR word holding `vector`, and its bit.
    fn vector_bit(lapic: &mut Lapic, base: u32, vector: u8) -> bool {
        let word = lapic.read(base + 0x10 * u32::from(vector >> 5));
        word & (1 << (vector & 31)) != 0
    }

    /// Reads the ESR as software does: write, then read.
    fn errors(lapic: &mut Lapic) -> u32 {
        lapic.write(ESR, 0);
        lapic.read(ESR)
    }

    /// A timer in `mode_bits` (LVT bits 17-16 and the vector) counting
    /// `count` at divide by 1.
    fn start_timer(lapic: &mut Lapic, lvt: u32, count: u32) {
        lapic.write(DIVIDE, 0b1011);
        lapic.write(LVT_TIMER, lvt);
        lapic.write(INITIAL_COUNT, count);
    }

    fn nanos(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    #[test]
    fn reset_state_is_what_the_bios_leaves() {
        let (mut lapic, _) = lapic();
        assert_eq!(lapic.apic_base(), 0xfee0_0900);
        assert_eq!(lapic.region(), Some((0xfee0_0000, 0x1000)));
        assert_eq!(lapic.read(ID), 0);
        assert_eq!(lapic.read(SVR), 0x1ff);
        assert_eq!(lapic.read(LVT_LINT0), 0x8700);
        assert_eq!(lapic.read(LVT_LINT1), 0x8400);
        for lvt in [LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_ERROR] {
            assert_eq!(lapic.read(lvt), 0x0001_0000, "LVT {lvt:#x} masked");
        }
        assert_eq!(lapic.read(TPR), 0);
        assert_eq!(lapic.read(DFR), 0xffff_ffff);
        assert_eq!(lapic.read(LDR), 0);
        assert_eq!(lapic.read(INITIAL_COUNT), 0);
        assert_eq!(lapic.read(CURRENT_COUNT), 0);
        assert_eq!(lapic.read(DIVIDE), 0);
        assert_eq!(lapic.next_timer_deadline(), None);
        assert!(!lapic.has_interrupt());
        assert_eq!(errors(&mut lapic), 0);
    }

    #[test]
    fn version_says_six_lvt_entries_and_the_cmci_entry_reads_zero() {
        let (mut lapic, _) = lapic();
        assert_eq!(lapic.read(VERSION), 0x0005_0014);
        lapic.write(VERSION, 0);
        assert_eq!(lapic.read(VERSION), 0x0005_0014, "read-only");
        lapic.write(CMCI, 0x40);
        assert_eq!(lapic.read(CMCI), 0);
    }

    #[test]
    fn reserved_bits_read_zero_and_read_only_registers_ignore_writes() {
        let (mut lapic, _) = lapic();
        let writes = [
            (ID, 0xffff_ffff, 0xff00_0000),
            (TPR, 0xffff_ffff, 0xff),
            (LDR, 0xffff_ffff, 0xff00_0000),
            (DFR, 0x0000_0000, 0x0fff_ffff),
            (SVR, 0xffff_ffff, 0x1ff),
            (ICR_HIGH, 0xffff_ffff, 0xff00_0000),
            (LVT_TIMER, 0xffff_ffff, 0x0003_00ff),
            (LVT_THERMAL, 0xffff_ffff, 0x0001_07ff),
            (LVT_PERF, 0xffff_ffff, 0x0001_07ff),
            (LVT_LINT0, 0xffff_ffff, 0x0001_a7ff),
            (LVT_LINT1, 0xffff_ffff, 0x0001_a7ff),
            (LVT_ERROR, 0xffff_ffff, 0x0001_00ff),
            (DIVIDE, 0xffff_ffff, 0b1011),
        ];
        for (offset, value, read) in writes {
            lapic.write(offset, value);
            assert_eq!(lapic.read(offset), read, "register {offset:#x}");
        }
        lapic.write(ICR_LOW, 0xffff_ffff); // all excluding self: goes nowhere
        assert_eq!(
            lapic.read(ICR_LOW),
            0x000c_cfff,
            "delivery status reads idle"
        );
        lapic.write(TPR, 0);
        for offset in [APR, PPR, ISR, TMR, IRR + 0x70, CURRENT_COUNT, 0xc0] {
            lapic.write(offset, 0xffff_ffff);
            assert_eq!(lapic.read(offset), 0, "register {offset:#x}");
        }
        assert_eq!(errors(&mut lapic), 0, "no illegal register was touched");
    }

    #[test]
    fn unknown_offsets_read_zero_and_report_an_illegal_register() {
        let (mut lapic, _) = lapic();
        assert_eq!(lapic.read(0x24), 0, "not at a register's start: no error");
        assert_eq!(errors(&mut lapic), 0);
        assert_eq!(lapic.read(0x40), 0);
        assert_eq!(errors(&mut lapic), 0x80);
        lapic.write(0x3f0, 1);
        assert_eq!(errors(&mut lapic), 0x80);
        assert_eq!(
            errors(&mut lapic),
            0,
            "latched errors end at the next ESR write"
        );
    }

    #[test]
    fn fixed_interrupt_is_delivered_above_ppr_only() {
        let (mut lapic, _) = lapic();
        lapic.accept(0x41, false);
        assert!(lapic.has_interrupt());
        assert_eq!(lapic.acknowledge(), 0x41);
        assert_eq!(lapic.read(PPR), 0x40);
        lapic.accept(0x4f, false);
        assert!(!lapic.has_interrupt(), "same class as the one in service");
        lapic.accept(0x30, false);
        assert!(!lapic.has_interrupt(), "lower class");
        lapic.accept(0x50, false);
        assert!(lapic.has_interrupt(), "a higher class nests");
        assert_eq!(lapic.acknowledge(), 0x50);
        lapic.write(EOI, 0);
        lapic.write(EOI, 0);
        assert_eq!(lapic.acknowledge(), 0x4f);
        lapic.write(EOI, 0);
        assert_eq!(lapic.acknowledge(), 0x30);
    }

    #[test]
    fn acknowledge_moves_the_highest_request_into_service() {
        let (mut lapic, _) = lapic();
        lapic.accept(0x33, false);
        lapic.accept(0x91, false);
        assert!(vector_bit(&mut lapic, IRR, 0x91));
        assert_eq!(lapic.acknowledge(), 0x91);
        assert!(!vector_bit(&mut lapic, IRR, 0x91));
        assert!(vector_bit(&mut lapic, ISR, 0x91));
        assert!(vector_bit(&mut lapic, IRR, 0x33));
    }

    #[test]
    fn acknowledge_with_nothing_deliverable_returns_the_spurious_vector() {
        let (mut lapic, _) = lapic();
        assert_eq!(lapic.acknowledge(), 0xff);
        lapic.write(SVR, 0x127);
        lapic.write(TPR, 0x50);
        lapic.accept(0x42, false);
        assert_eq!(
            lapic.acknowledge(),
            0x27,
            "all eight vector bits are writable"
        );
        assert!(vector_bit(&mut lapic, IRR, 0x42), "nothing changed");
        assert_eq!(lapic.read(ISR + 0x20), 0);
    }

    #[test]
    fn tpr_blocks_lower_classes() {
        let (mut lapic, _) = lapic();
        lapic.write(TPR, 0x5a);
        lapic.accept(0x5f, false);
        assert!(!lapic.has_interrupt(), "the class must be above the TPR's");
        assert_eq!(lapic.read(PPR), 0x5a);
        lapic.accept(0x60, false);
        assert!(lapic.has_interrupt());
        assert_eq!(lapic.acknowledge(), 0x60);
        assert_eq!(lapic.read(PPR), 0x60);
        lapic.write(EOI, 0);
        lapic.write(TPR, 0);
        assert_eq!(lapic.acknowledge(), 0x5f);
    }

    #[test]
    fn ppr_and_apr_follow_the_sdm_formulas() {
        let (mut lapic, _) = lapic();
        lapic.write(TPR, 0x37);
        assert_eq!((lapic.read(PPR), lapic.read(APR)), (0x37, 0x37));
        lapic.accept(0x81, false);
        assert_eq!(lapic.read(APR), 0x80, "a higher request");
        lapic.acknowledge();
        assert_eq!((lapic.read(PPR), lapic.read(APR)), (0x80, 0x80));
        lapic.write(TPR, 0x8c);
        assert_eq!(lapic.read(PPR), 0x8c, "TPR class equal to ISR's");
        assert_eq!(
            lapic.read(APR),
            0x80,
            "APR needs the TPR strictly above the ISR"
        );
        lapic.write(TPR, 0x9c);
        assert_eq!((lapic.read(PPR), lapic.read(APR)), (0x9c, 0x9c));
    }

    #[test]
    fn eoi_clears_highest_isr_and_reports_level_vectors() {
        let (mut lapic, _) = lapic();
        lapic.accept(0x40, true);
        assert_eq!(lapic.acknowledge(), 0x40);
        lapic.accept(0x60, false);
        assert_eq!(lapic.acknowledge(), 0x60);
        assert_eq!(lapic.write(EOI, 0), LapicWriteEffect::default(), "edge");
        assert!(!vector_bit(&mut lapic, ISR, 0x60));
        assert!(vector_bit(&mut lapic, ISR, 0x40));
        let effect = lapic.write(EOI, 0);
        assert_eq!(effect.eoi_level, Some(0x40));
        assert_eq!(lapic.read(ISR + 0x20), 0);
        assert_eq!(lapic.write(EOI, 0).eoi_level, None, "nothing in service");
    }

    #[test]
    fn tmr_is_set_for_level_and_cleared_for_edge_on_acceptance() {
        let (mut lapic, _) = lapic();
        lapic.accept(0x70, true);
        assert!(vector_bit(&mut lapic, TMR, 0x70));
        lapic.accept(0x70, false);
        assert!(!vector_bit(&mut lapic, TMR, 0x70));
    }

    #[test]
    fn illegal_vector_sets_esr() {
        let (mut lapic, _) = lapic();
        lapic.write(LVT_ERROR, 0xfe);
        lapic.accept(0x0f, false);
        assert_eq!(lapic.read(IRR), 0, "vectors 0-15 never reach the IRR");
        assert_eq!(lapic.read(ESR), 0, "not latched before an ESR write");
        assert_eq!(lapic.acknowledge(), 0xfe, "the error interrupt");
        assert_eq!(errors(&mut lapic), 0x40);
    }

    #[test]
    fn error_lvt_with_an_illegal_vector_only_records_it() {
        let (mut lapic, _) = lapic();
        lapic.write(LVT_ERROR, 0x03);
        lapic.accept(0x01, false);
        assert!(!lapic.has_interrupt());
        assert_eq!(errors(&mut lapic), 0x40);
        lapic.write(LVT_ERROR, 0x0001_0003);
        lapic.read(0x10);
        assert_eq!(
            errors(&mut lapic),
            0x80,
            "masked: no interrupt, no second error"
        );
    }

    #[test]
    fn self_ipi_by_shorthand_and_by_destination() {
        let (mut lapic, _) = lapic();
        lapic.write(ICR_LOW, 0x0004_0031); // self
        lapic.write(ICR_LOW, 0x0008_0032); // all including self
        lapic.write(ICR_HIGH, 0);
        lapic.write(ICR_LOW, 0x0000_0033); // physical, ID 0
        lapic.write(ICR_HIGH, 0xff00_0000);
        lapic.write(ICR_LOW, 0x0000_0134); // lowest priority, broadcast
        lapic.write(LDR, 0x0100_0000);
        lapic.write(ICR_HIGH, 0x0300_0000);
        lapic.write(ICR_LOW, 0x0000_0835); // logical, flat
        for vector in 0x31..=0x35 {
            assert!(vector_bit(&mut lapic, IRR, vector), "vector {vector:#x}");
            assert!(!vector_bit(&mut lapic, TMR, vector), "IPIs are edge");
        }
        assert_eq!(lapic.read(ICR_LOW) & 1 << 12, 0, "delivery status idle");
    }

    #[test]
    fn ipis_for_other_apics_reach_nobody() {
        let (mut lapic, _) = lapic();
        lapic.write(ICR_LOW, 0x000c_0031); // all excluding self
        lapic.write(ICR_HIGH, 0x0100_0000);
        lapic.write(ICR_LOW, 0x0000_0032); // physical ID 1
        lapic.write(ICR_LOW, 0x0000_0500); // INIT
        lapic.write(ICR_LOW, 0x0000_0608); // start-up
        lapic.write(ICR_HIGH, 0x0200_0000);
        lapic.write(ICR_LOW, 0x0000_0833); // logical 0x02, LDR 0
        assert_eq!(lapic.read(IRR + 0x10), 0);
        assert_eq!(errors(&mut lapic), 0);
    }

    #[test]
    fn logical_destinations_follow_the_flat_and_cluster_models() {
        let (mut lapic, _) = lapic();
        assert!(
            !lapic.accepts_destination(0xff, true),
            "LDR 0 matches nothing"
        );
        lapic.write(LDR, 0x2400_0000);
        assert!(lapic.accepts_destination(0x04, true));
        assert!(lapic.accepts_destination(0xff, true));
        assert!(!lapic.accepts_destination(0x41, true));
        lapic.write(DFR, 0x0fff_ffff); // cluster
        assert!(lapic.accepts_destination(0x24, true));
        assert!(lapic.accepts_destination(0xf4, true), "all clusters");
        assert!(!lapic.accepts_destination(0x34, true), "another cluster");
        assert!(!lapic.accepts_destination(0x28, true), "another member");
        lapic.write(ID, 0x0700_0000);
        assert!(lapic.accepts_destination(0x07, false));
        assert!(lapic.accepts_destination(0xff, false));
        assert!(!lapic.accepts_destination(0x00, false));
    }

    #[test]
    fn self_nmi_by_icr_is_reported_in_the_effect() {
        let (mut lapic, _) = lapic();
        assert!(lapic.write(ICR_LOW, 0x0004_0400).nmi);
        assert!(!lapic.write(ICR_LOW, 0x000c_0400).nmi, "excluding self");
        assert!(!lapic.write(ICR_LOW, 0x0004_0200).nmi, "SMI does nothing");
        assert!(!lapic.has_interrupt());
    }

    #[test]
    fn ipi_with_an_illegal_vector_sets_the_send_error_and_goes_nowhere() {
        let (mut lapic, _) = lapic();
        lapic.write(ICR_LOW, 0x0004_000e);
        assert_eq!(lapic.read(IRR), 0);
        assert_eq!(errors(&mut lapic), 0x20);
        lapic.write(ICR_LOW, 0x0004_0402); // NMI: the vector does not matter
        assert_eq!(errors(&mut lapic), 0);
    }

    #[test]
    fn periodic_timer_reloads_and_latches_once() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x0002_0040, 1000); // 10 us period
        assert_eq!(lapic.read(CURRENT_COUNT), 1000);
        assert_eq!(lapic.next_timer_deadline(), Some(nanos(10_000)));
        clock.advance(nanos(2_500));
        assert_eq!(lapic.read(CURRENT_COUNT), 750);
        clock.advance(nanos(35_000)); // three expiries
        lapic.fire_timer();
        assert_eq!(lapic.acknowledge(), 0x40);
        assert!(!lapic.has_interrupt(), "three periods, one interrupt");
        assert_eq!(lapic.read(CURRENT_COUNT), 250, "reloaded, counting on");
        assert_eq!(lapic.next_timer_deadline(), Some(nanos(40_000)));
        lapic.write(EOI, 0);
        clock.advance(nanos(2_500));
        lapic.fire_timer();
        assert_eq!(lapic.acknowledge(), 0x40);
    }

    #[test]
    fn one_shot_timer_stops_at_zero() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x41, 100);
        clock.advance(nanos(999));
        lapic.fire_timer();
        assert!(!lapic.has_interrupt());
        assert_eq!(lapic.read(CURRENT_COUNT), 1);
        clock.advance(nanos(1));
        assert_eq!(lapic.read(CURRENT_COUNT), 0);
        lapic.fire_timer();
        assert_eq!(lapic.acknowledge(), 0x41);
        assert_eq!(lapic.next_timer_deadline(), None);
        clock.advance(nanos(100_000));
        lapic.fire_timer();
        assert!(!lapic.has_interrupt(), "no second expiry");
        assert_eq!(lapic.read(CURRENT_COUNT), 0);
        assert_eq!(lapic.read(INITIAL_COUNT), 100, "the initial count stays");
    }

    #[test]
    fn writing_the_initial_count_restarts_and_zero_stops_the_timer() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x41, 100);
        clock.advance(nanos(500));
        lapic.write(INITIAL_COUNT, 100);
        assert_eq!(lapic.read(CURRENT_COUNT), 100);
        assert_eq!(lapic.next_timer_deadline(), Some(nanos(1_500)));
        lapic.write(INITIAL_COUNT, 0);
        assert_eq!(lapic.next_timer_deadline(), None);
        clock.advance(nanos(10_000));
        lapic.fire_timer();
        assert!(!lapic.has_interrupt());
        assert_eq!(lapic.read(CURRENT_COUNT), 0);
    }

    #[test]
    fn an_expiry_before_a_rewrite_is_not_lost() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x41, 100);
        clock.advance(nanos(1_000));
        lapic.write(INITIAL_COUNT, 100);
        assert_eq!(lapic.acknowledge(), 0x41);
    }

    #[test]
    fn masked_timer_counts_but_raises_nothing() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x0003_0040, 1000);
        assert_eq!(lapic.next_timer_deadline(), None, "nothing to raise");
        clock.advance(nanos(12_000));
        assert_eq!(lapic.read(CURRENT_COUNT), 800, "it reloaded");
        lapic.fire_timer();
        assert!(!lapic.has_interrupt());
        lapic.write(LVT_TIMER, 0x0002_0040);
        assert!(!lapic.has_interrupt(), "masked expiries stay unraised");
        assert_eq!(lapic.next_timer_deadline(), Some(nanos(20_000)));
        clock.advance(nanos(8_000));
        lapic.fire_timer();
        assert_eq!(lapic.acknowledge(), 0x40);
    }

    #[test]
    fn divider_scales_the_count() {
        for (code, divisor) in [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ] {
            let (mut lapic, clock) = lapic();
            lapic.write(DIVIDE, code);
            lapic.write(LVT_TIMER, 0x40);
            lapic.write(INITIAL_COUNT, 1000);
            clock.advance(nanos(10 * 100 * divisor));
            assert_eq!(lapic.read(CURRENT_COUNT), 900, "divide code {code:#06b}");
            assert_eq!(
                lapic.next_timer_deadline(),
                Some(nanos(10 * 1000 * divisor)),
                "divide code {code:#06b}"
            );
        }
    }

    #[test]
    fn changing_the_divider_keeps_the_count_and_changes_the_rate() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x0002_0040, 1000);
        clock.advance(nanos(4_000));
        lapic.write(DIVIDE, 0b0000); // divide by 2
        assert_eq!(lapic.read(CURRENT_COUNT), 600);
        assert_eq!(lapic.next_timer_deadline(), Some(nanos(4_000 + 600 * 20)));
        clock.advance(nanos(12_000));
        lapic.fire_timer();
        assert_eq!(lapic.acknowledge(), 0x40);
        assert_eq!(
            lapic.read(CURRENT_COUNT),
            1000,
            "a full period at the new rate"
        );
        assert_eq!(lapic.next_timer_deadline(), Some(nanos(16_000 + 20_000)));
    }

    #[test]
    fn switching_to_one_shot_finishes_the_current_period() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x0002_0040, 1000);
        clock.advance(nanos(13_000));
        lapic.write(LVT_TIMER, 0x40);
        assert_eq!(lapic.acknowledge(), 0x40, "the expiry before the switch");
        lapic.write(EOI, 0);
        assert_eq!(lapic.read(CURRENT_COUNT), 700);
        clock.advance(nanos(7_000));
        lapic.fire_timer();
        assert!(lapic.has_interrupt());
        assert_eq!(lapic.next_timer_deadline(), None, "one-shot: done");
    }

    #[test]
    fn tsc_deadline_mode_cannot_be_selected() {
        let (mut lapic, clock) = lapic();
        lapic.write(LVT_TIMER, 0x0004_0040);
        assert_eq!(lapic.read(LVT_TIMER), 0x40, "bit 18 is reserved");
        lapic.write(DIVIDE, 0b1011);
        lapic.write(INITIAL_COUNT, 10);
        clock.advance(nanos(100));
        lapic.fire_timer();
        assert!(lapic.has_interrupt(), "a one-shot timer");
    }

    #[test]
    fn software_disable_masks_every_lvt() {
        let (mut lapic, clock) = lapic();
        start_timer(&mut lapic, 0x0002_0040, 1000);
        lapic.accept(0x50, false);
        lapic.acknowledge();
        lapic.accept(0x60, false);
        lapic.write(SVR, 0xff);
        for lvt in [
            LVT_TIMER,
            LVT_THERMAL,
            LVT_PERF,
            LVT_LINT0,
            LVT_LINT1,
            LVT_ERROR,
        ] {
            assert_ne!(lapic.read(lvt) & 0x1_0000, 0, "LVT {lvt:#x}");
        }
        lapic.write(LVT_LINT0, 0x700);
        assert_eq!(
            lapic.read(LVT_LINT0),
            0x0001_0700,
            "the mask cannot be cleared"
        );
        assert!(vector_bit(&mut lapic, ISR, 0x50), "the ISR is kept");
        lapic.accept(0x70, false);
        assert!(
            !vector_bit(&mut lapic, IRR, 0x70),
            "new interrupts are dropped"
        );
        clock.advance(nanos(50_000));
        lapic.fire_timer();
        assert_eq!(lapic.acknowledge(), 0x60, "what the IRR held is delivered");
        lapic.write(SVR, 0x1ff);
        assert_ne!(
            lapic.read(LVT_TIMER) & 0x1_0000,
            0,
            "re-enabling unmasks nothing"
        );
        lapic.write(LVT_TIMER, 0x0002_0040);
        assert_eq!(lapic.read(LVT_TIMER), 0x0002_0040);
    }

    #[test]
    fn disabling_in_apic_base_stops_decoding_and_reenable_is_software_disabled() {
        let (mut lapic, _) = lapic();
        lapic.write(TPR, 0x20);
        lapic.write(ID, 0x0500_0000);
        start_timer(&mut lapic, 0x0002_0040, 1000);
        lapic.accept(0x44, true);
        lapic.set_apic_base(0xfee0_0100).unwrap();
        assert_eq!(lapic.apic_base(), 0xfee0_0100);
        assert_eq!(lapic.region(), None);
        assert!(!lapic.has_interrupt());
        assert_eq!(lapic.next_timer_deadline(), None);
        lapic.accept(0x45, false);
        lapic.write(SVR, 0x1ff);
        assert_eq!(lapic.read(SVR), 0, "decodes nothing");
        lapic.set_apic_base(0xfee0_0900).unwrap();
        assert_eq!(lapic.region(), Some((0xfee0_0000, 0x1000)));
        assert_eq!(lapic.read(SVR), 0xff, "software-disabled");
        assert_eq!(lapic.read(LVT_LINT0), 0x0001_0000);
        assert_eq!(lapic.read(DFR), 0xffff_ffff);
        for offset in [ID, TPR, INITIAL_COUNT, IRR + 0x20, TMR + 0x20] {
            assert_eq!(lapic.read(offset), 0, "register {offset:#x}");
        }
        assert!(!lapic.has_interrupt());
    }

    #[test]
    fn reserved_apic_base_bits_are_refused() {
        let (mut lapic, _) = lapic();
        for value in [0xfee0_0d00, 0xfee0_0901, 0x10_fee0_0900, 1 << 63] {
            assert_eq!(
                lapic.set_apic_base(value),
                Err(LapicError::ReservedApicBaseBits(value)),
                "{value:#x}"
            );
        }
        assert_eq!(lapic.apic_base(), 0xfee0_0900, "unchanged");
        lapic.set_apic_base(0xf_fee0_0800).unwrap();
        assert_eq!(lapic.apic_base(), 0xf_fee0_0900, "the BSP flag stays set");
        assert_eq!(
            lapic.region(),
            Some((0xf_fee0_0000, 0x1000)),
            "the region moved"
        );
        assert_eq!(lapic.read(SVR), 0x1ff, "moving is not disabling");
    }

    #[test]
    fn pic_reaches_the_cpu_through_extint_lint0_or_when_disabled() {
        let (mut lapic, _) = lapic();
        assert!(lapic.accepts_pic_interrupt());
        lapic.write(LVT_LINT0, 0x0001_0700);
        assert!(!lapic.accepts_pic_interrupt(), "masked");
        lapic.write(LVT_LINT0, 0x0000_0400);
        assert!(!lapic.accepts_pic_interrupt(), "NMI mode");
        lapic.write(LVT_LINT0, 0x8700);
        lapic.write(SVR, 0xff);
        assert!(
            !lapic.accepts_pic_interrupt(),
            "software-disabled masks LINT0"
        );
        lapic.set_apic_base(0xfee0_0000).unwrap();
        assert!(
            lapic.accepts_pic_interrupt(),
            "globally disabled: INTR goes straight in"
        );
    }

    #[test]
    fn shared_lapic_calls_the_listener_when_intr_rises() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let inner = shared.clone();
        shared.set_intr_listener(Arc::new(move || {
            assert!(inner.intr(), "called outside the lock, after the mirror");
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        shared.accept(0x40, false);
        assert!(shared.intr());
        shared.accept(0x41, false);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "INTR was already up");
        assert_eq!(shared.acknowledge_if_pending(), Some(0x41));
        assert!(!shared.intr(), "0x40 is in the same class");
        assert_eq!(shared.acknowledge_if_pending(), None);
        shared.write(EOI, 0);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "EOI let 0x40 up");
    }

    #[test]
    fn shared_lapic_tells_the_eoi_listener_of_level_vectors_outside_the_lock() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        let ended = Arc::new(Mutex::new(Vec::new()));
        let (inner, record) = (shared.clone(), ended.clone());
        shared.set_eoi_listener(Arc::new(move |vector| {
            // The I/O APIC re-delivers a line still asserted.
            inner.accept(vector, true);
            record.lock().unwrap().push(vector);
        }));
        shared.accept(0x50, true);
        assert_eq!(shared.acknowledge_if_pending(), Some(0x50));
        shared.write(EOI, 0);
        assert_eq!(*ended.lock().unwrap(), vec![0x50]);
        assert!(shared.intr(), "re-delivered");
    }

    #[test]
    fn shared_lapic_latches_a_self_nmi_until_taken() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        assert!(!shared.take_nmi());
        shared.write(ICR_LOW, 0x0004_0400);
        assert!(shared.take_nmi());
        assert!(!shared.take_nmi());
    }

    #[test]
    fn run_timer_until_raises_due_expiries_and_reports_the_next_deadline() {
        let (lapic, clock) = lapic();
        let shared = SharedLapic::new(lapic);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        shared.set_intr_listener(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(!shared.timer_may_fire());
        shared.write(DIVIDE, 0b1011);
        shared.write(LVT_TIMER, 0x0002_0040);
        shared.write(INITIAL_COUNT, 1000);
        assert!(shared.timer_may_fire());
        let check = shared.run_timer_until(shared.now());
        assert_eq!(check.next_deadline, Some(nanos(10_000)));
        assert_eq!(check.time_left(), Some(nanos(10_000)));
        clock.advance(nanos(10_000));
        let check = shared.run_timer_until(shared.now());
        assert!(shared.intr());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(check.next_deadline, Some(nanos(20_000)));
        shared.write(LVT_TIMER, 0x0003_0040);
        assert!(!shared.timer_may_fire(), "masked");
    }

    #[test]
    fn wait_for_timer_change_ends_when_a_write_reschedules_the_timer() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        let check = shared.run_timer_until(shared.now());
        assert_eq!(check.time_left(), None);
        let waiter = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                shared.wait_for_timer_change(&check, Duration::from_secs(30));
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(10));
        shared.write(LVT_TIMER, 0x40);
        shared.write(INITIAL_COUNT, 1000);
        assert!(waiter.join().unwrap() < Duration::from_secs(10));
    }

    #[test]
    fn a_change_before_the_wait_is_not_missed() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        let check = shared.run_timer_until(shared.now());
        shared.write(LVT_TIMER, 0x40);
        shared.write(INITIAL_COUNT, 1000);
        let start = Instant::now();
        shared.wait_for_timer_change(&check, Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(10));
        let check = shared.run_timer_until(shared.now());
        shared.wake_timer_thread();
        let start = Instant::now();
        shared.wait_for_timer_change(&check, Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn mmio_reads_see_each_register_in_the_first_bytes_of_its_slot() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        let mut data = [0u8; 4];
        shared.mmio_read(0x30, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x0005_0014);
        let mut byte = [0u8; 1];
        shared.mmio_read(0x32, &mut byte);
        assert_eq!(byte, [0x05]);
        let mut wide = [0xaau8; 8];
        shared.mmio_read(0x2c, &mut wide);
        assert_eq!(
            wide,
            [0, 0, 0, 0, 0x14, 0, 0x05, 0],
            "slot end, then the version"
        );
        shared.mmio_read(0x34, &mut data);
        assert_eq!(data, [0; 4]);
    }

    #[test]
    fn mmio_writes_reach_a_register_only_at_its_slot_start_and_4_bytes_wide() {
        let (lapic, _) = lapic();
        let shared = SharedLapic::new(lapic);
        shared.mmio_write(0x80, &[0x20]);
        shared.mmio_write(0x84, &0x30u32.to_le_bytes());
        assert_eq!(shared.read(TPR), 0);
        shared.mmio_write(0x80, &0x40u32.to_le_bytes());
        assert_eq!(shared.read(TPR), 0x40);
        shared.mmio_write(0x80, &0xffff_ffff_0000_0050u64.to_le_bytes());
        assert_eq!(shared.read(TPR), 0x50);
        assert_eq!(
            shared.region(),
            Some((LAPIC_DEFAULT_BASE, LAPIC_REGION_LEN))
        );
        shared.set_apic_base(0xfee0_0000).unwrap();
        assert_eq!(shared.region(), None);
    }
}
