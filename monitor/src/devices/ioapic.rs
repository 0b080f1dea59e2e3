//! The I/O APIC: an Intel 82093AA (version 0x11, 24 redirection entries)
//! at `0xFEC00000`, as its datasheet describes it and as Linux and QEMU use
//! it.
//!
//! [`IoApic`] is a pure state machine: devices drive its 24 input pins
//! ([`IoApic::set_irq`]), the guest programs it through two memory-mapped
//! registers ([`IoApic::mmio_read`], [`IoApic::mmio_write`]), and the local
//! APIC's EOI broadcast ends a level-triggered interrupt
//! ([`IoApic::eoi`]). What it sends to the local APICs is a [`Message`],
//! queued for [`IoApic::take_messages`], never a call made from inside it.
//! [`SharedIoApic`] puts it behind a lock for the MMIO bus, the devices
//! and the machine, and hands every message to a sink after releasing the
//! lock.
//!
//! Modelled: the indirect register access through IOREGSEL (offset `0x00`,
//! 8 bits significant) and IOWIN (offset `0x10`); the ID register (bits
//! 27:24 writable; 32-bit Linux rewrites it and reads it back), the version
//! register (`0x0017_0011`, read-only) and the arbitration register
//! (read-only, reads the ID); the 24 redirection entries with vector,
//! delivery mode (fixed, lowest priority, SMI, NMI, INIT, ExtINT),
//! destination mode, polarity, remote IRR, trigger mode, mask and the 8-bit
//! destination; edge-triggered entries that deliver on a rising edge of
//! their input; level-triggered entries that deliver while their input is
//! asserted, then wait for an EOI of their vector (remote IRR).
//!
//! Choices, where the datasheet leaves room or a guest needs a rule:
//! - Pins are wires: [`IoApic::set_irq`] takes the electrical level, high
//!   meaning asserted for an active-high (polarity 0) entry. An entry
//!   programmed active low (polarity 1) sees the inverted level, so a wire
//!   held low asserts it (and an edge-triggered one fires on the wire's
//!   falling edge). Rewriting the polarity is not itself an edge.
//! - A rising edge on a masked edge-triggered entry is lost, not latched:
//!   the 82093AA datasheet says edges "signaled on a masked interrupt pin
//!   are ignored (i.e., not delivered or held pending)", and QEMU drops
//!   them too.
//! - A level-triggered entry follows its input while masked, so unmasking
//!   it while the input is asserted (and remote IRR is clear) delivers at
//!   once, as in QEMU.
//! - Only fixed and lowest-priority entries are level-triggered: SMI, NMI,
//!   INIT and ExtINT are edge-triggered whatever the trigger mode bit says
//!   (the datasheet requires edge for them; the bit reads back as written).
//! - Writing an entry that is edge-triggered clears its remote IRR, as in
//!   QEMU: a version 0x11 I/O APIC has no EOI register, and Linux clears a
//!   stuck remote IRR by switching the entry to edge and back.
//! - The reserved delivery modes (3 and 6) deliver nothing. An ExtINT
//!   message carries the entry's vector, which means nothing: the 8259A
//!   supplies the vector in the acknowledge cycle.
//!
//! Not modelled: the APIC bus and its arbitration (a message leaves at
//! once, so delivery status always reads 0, idle); choosing the CPU of a
//! lowest-priority message (the receiver does that); the EOI register and
//! the other additions of version 0x20 and later; the reserved bits, which
//! read 0 whatever is written (bits 31:17 and 55:32 of an entry, all but
//! 27:24 of the ID).
//!
//! MMIO accesses: reads of any size see the bytes of IOREGSEL (the index,
//! zero-extended to 32 bits) at `0x00`-`0x03` and of IOWIN at
//! `0x10`-`0x13`, and all ones elsewhere. A write of any size at `0x00`
//! selects the register named by its first byte (Linux writes IOREGSEL as
//! a dword, other systems as a byte); only a 4-byte write at `0x10`
//! reaches IOWIN; every other write is ignored.
//!
//! Invariants:
//! - Remote IRR is set only on level-triggered entries, and only by a
//!   delivery; an EOI of the entry's vector or a rewrite as edge-triggered
//!   clears it.
//! - The input levels last set are kept per pin, so an edge is a change of
//!   the polarity-adjusted level from deasserted to asserted.
//! - Every operation leaves the device consistent (no half-written entry),
//!   so [`SharedIoApic`] tolerates a poisoned lock.
//! - [`SharedIoApic`] hands each message to its sink in the order it was
//!   queued, on the thread that caused it, without holding the I/O APIC's
//!   lock: the sink may call back into the I/O APIC.

use super::mmio::{MmioBus, MmioDevice, MmioError};
use std::sync::{Arc, Mutex, MutexGuard};

/// The guest-physical address of the I/O APIC's registers.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The length of the region the I/O APIC decodes at [`IOAPIC_BASE`].
pub const IOAPIC_SIZE: u64 = 0x1000;
/// The number of input pins (and redirection entries).
pub const PINS: u8 = 24;
/// The version register: version 0x11, highest entry 23 (bits 23:16).
pub const VERSION: u32 = 0x0017_0011;

/// IOREGSEL's offset in the region.
const IOREGSEL: u64 = 0x00;
/// IOWIN's offset in the region.
const IOWIN: u64 = 0x10;
/// The width of IOREGSEL and IOWIN in bytes.
const REGISTER_BYTES: usize = 4;

/// Register index of the ID register.
const ID_REGISTER: u8 = 0x00;
/// Register index of the version register.
const VERSION_REGISTER: u8 = 0x01;
/// Register index of the arbitration register.
const ARBITRATION_REGISTER: u8 = 0x02;
/// Register index of the low dword of entry 0; entry `n` has `0x10 + 2n`
/// (low) and `0x11 + 2n` (high).
const REDIRECTION_TABLE: u8 = 0x10;
/// The last register index of the redirection table.
const REDIRECTION_TABLE_END: u8 = REDIRECTION_TABLE + 2 * PINS - 1;
/// Where the ID sits in the ID and arbitration registers.
const ID_SHIFT: u32 = 24;
/// The ID's significant bits (four: bits 27:24).
const ID_BITS: u8 = 0x0f;

/// How a local APIC takes a message (an entry's bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// The vector, to every destination CPU.
    Fixed,
    /// The vector, to the destination CPU of lowest priority.
    LowestPriority,
    /// A system management interrupt (the vector is ignored).
    Smi,
    /// A non-maskable interrupt (the vector is ignored).
    Nmi,
    /// An INIT (the vector is ignored).
    Init,
    /// An external interrupt: the CPU takes the vector from the 8259A's
    /// acknowledge cycle.
    ExtInt,
}

impl DeliveryMode {
    /// The mode encoded as `bits` (0-7); `None` for the reserved 3 and 6.
    fn from_bits(bits: u8) -> Option<DeliveryMode> {
        match bits {
            0 => Some(DeliveryMode::Fixed),
            1 => Some(DeliveryMode::LowestPriority),
            2 => Some(DeliveryMode::Smi),
            4 => Some(DeliveryMode::Nmi),
            5 => Some(DeliveryMode::Init),
            7 => Some(DeliveryMode::ExtInt),
            _ => None,
        }
    }

    /// Whether an entry in this mode can be level-triggered (the others
    /// are edge-triggered whatever their trigger mode bit says).
    fn can_be_level_triggered(self) -> bool {
        matches!(self, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
    }
}

/// An interrupt message from the I/O APIC to the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// The vector (meaningless for SMI, NMI, INIT and ExtINT).
    pub vector: u8,
    /// How the destination takes it.
    pub delivery_mode: DeliveryMode,
    /// Logical destination mode (`destination` is a logical APIC ID set);
    /// `false`: physical (`destination` is an APIC ID, `0xFF` broadcast).
    pub logical: bool,
    /// The destination field (the entry's bits 63:56).
    pub destination: u8,
    /// The interrupt is level-triggered: the local APIC sets its TMR bit
    /// and its EOI must reach [`IoApic::eoi`].
    pub level_triggered: bool,
}

/// One 64-bit redirection table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry(u64);

impl Entry {
    const VECTOR: u64 = 0xff;
    const DELIVERY_MODE_SHIFT: u32 = 8;
    const DELIVERY_MODE_BITS: u64 = 0x7;
    const LOGICAL: u64 = 1 << 11;
    const ACTIVE_LOW: u64 = 1 << 13;
    const REMOTE_IRR: u64 = 1 << 14;
    const LEVEL: u64 = 1 << 15;
    const MASKED: u64 = 1 << 16;
    const DESTINATION_SHIFT: u32 = 56;
    /// The bits of the low dword a write changes: vector, delivery mode,
    /// destination mode, polarity, trigger mode, mask.
    const WRITABLE_LOW: u32 = 0x0001_afff;
    /// The bits of the high dword a write changes: the destination.
    const WRITABLE_HIGH: u32 = 0xff00_0000;
    /// The entry at reset: masked, everything else 0.
    const RESET: Entry = Entry(Entry::MASKED);

    fn low(self) -> u32 {
        self.0 as u32
    }

    fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// A guest write of the low dword; remote IRR survives it unless the
    /// entry is now edge-triggered.
    fn write_low(&mut self, value: u32) {
        let kept = self.0 & !u64::from(Entry::WRITABLE_LOW);
        self.0 = kept | u64::from(value & Entry::WRITABLE_LOW);
        if !self.level_triggered() {
            self.0 &= !Entry::REMOTE_IRR;
        }
    }

    /// A guest write of the high dword.
    fn write_high(&mut self, value: u32) {
        let low = self.0 & u64::from(u32::MAX);
        self.0 = low | u64::from(value & Entry::WRITABLE_HIGH) << 32;
    }

    fn vector(self) -> u8 {
        (self.0 & Entry::VECTOR) as u8
    }

    fn delivery_mode(self) -> Option<DeliveryMode> {
        let bits = (self.0 >> Entry::DELIVERY_MODE_SHIFT) & Entry::DELIVERY_MODE_BITS;
        DeliveryMode::from_bits(bits as u8)
    }

    fn masked(self) -> bool {
        self.0 & Entry::MASKED != 0
    }

    fn active_low(self) -> bool {
        self.0 & Entry::ACTIVE_LOW != 0
    }

    fn remote_irr(self) -> bool {
        self.0 & Entry::REMOTE_IRR != 0
    }

    /// Whether the entry behaves as level-triggered: its trigger mode bit
    /// says so and its delivery mode allows it.
    fn level_triggered(self) -> bool {
        self.0 & Entry::LEVEL != 0
            && self
                .delivery_mode()
                .is_some_and(DeliveryMode::can_be_level_triggered)
    }

    /// The message the entry sends, if its delivery mode is not reserved.
    fn message(self) -> Option<Message> {
        Some(Message {
            vector: self.vector(),
            delivery_mode: self.delivery_mode()?,
            logical: self.0 & Entry::LOGICAL != 0,
            destination: (self.0 >> Entry::DESTINATION_SHIFT) as u8,
            level_triggered: self.level_triggered(),
        })
    }
}

/// The register a redirection table index names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryHalf {
    /// Bits 31:0 of entry `pin`.
    Low(usize),
    /// Bits 63:32 of entry `pin`.
    High(usize),
}

impl EntryHalf {
    /// The half of an entry register `index` names, if it is in the table.
    fn of(index: u8) -> Option<EntryHalf> {
        if !(REDIRECTION_TABLE..=REDIRECTION_TABLE_END).contains(&index) {
            return None;
        }
        let pin = usize::from((index - REDIRECTION_TABLE) / 2);
        Some(if index.is_multiple_of(2) {
            EntryHalf::Low(pin)
        } else {
            EntryHalf::High(pin)
        })
    }
}

/// An 82093AA I/O APIC (see the module documentation).
#[derive(Clone, Debug)]
pub struct IoApic {
    /// The APIC ID (bits 27:24 of the ID register).
    id: u8,
    /// IOREGSEL: the register IOWIN reaches.
    select: u8,
    entries: [Entry; PINS as usize],
    /// The electrical level of each pin as last set (bit `n`: pin `n`).
    wires: u32,
    /// Messages not yet taken.
    messages: Vec<Message>,
}

impl IoApic {
    /// An I/O APIC at reset with APIC ID `id` (its low four bits): every
    /// entry masked (low dword `0x0001_0000`, high dword 0), every pin low.
    pub fn new(id: u8) -> IoApic {
        IoApic {
            id: id & ID_BITS,
            select: 0,
            entries: [Entry::RESET; PINS as usize],
            wires: 0,
            messages: Vec::new(),
        }
    }

    /// Sets the wire of input `pin` to electrical level `level` (see the
    /// module documentation for polarity). An edge-triggered entry
    /// delivers when its input becomes asserted while it is unmasked; a
    /// level-triggered one delivers while its input is asserted, it is
    /// unmasked and its remote IRR is clear. Pins past 23 are not wired:
    /// setting them does nothing.
    pub fn set_irq(&mut self, pin: u8, level: bool) {
        let pin = usize::from(pin);
        if pin >= usize::from(PINS) {
            return;
        }
        let was_asserted = self.asserted(pin);
        self.wires = (self.wires & !(1 << pin)) | (u32::from(level) << pin);
        let entry = self.entries[pin];
        if entry.level_triggered() {
            self.service_level(pin);
        } else if self.asserted(pin) && !was_asserted && !entry.masked() {
            self.deliver(pin);
        }
    }

    /// The local APIC's EOI broadcast for `vector`: every entry with that
    /// vector and remote IRR set has it cleared, and delivers again if its
    /// input is still asserted and it is unmasked.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..usize::from(PINS) {
            let entry = &mut self.entries[pin];
            if entry.remote_irr() && entry.vector() == vector {
                entry.0 &= !Entry::REMOTE_IRR;
                self.service_level(pin);
            }
        }
    }

    /// The messages to deliver, in the order they were sent, taken.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// The pins whose entry is unmasked (bit `n`: pin `n`): a device able
    /// to raise one of them can still interrupt a halted CPU. A
    /// level-triggered entry waiting for its EOI counts too, so the answer
    /// errs towards "an interrupt may still come".
    pub fn unmasked_pins(&self) -> u32 {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| !entry.masked())
            .fold(0, |pins, (pin, _)| pins | 1 << pin)
    }

    /// The register at `index` as IOWIN reads it (0 for indices that name
    /// no register).
    pub fn read_register(&self, index: u8) -> u32 {
        match (index, EntryHalf::of(index)) {
            (ID_REGISTER | ARBITRATION_REGISTER, _) => u32::from(self.id) << ID_SHIFT,
            (VERSION_REGISTER, _) => VERSION,
            (_, Some(EntryHalf::Low(pin))) => self.entries[pin].low(),
            (_, Some(EntryHalf::High(pin))) => self.entries[pin].high(),
            (_, None) => 0,
        }
    }

    /// Writes `value` to the register at `index` as IOWIN does: read-only
    /// bits and registers, and indices that name no register, ignore it.
    pub fn write_register(&mut self, index: u8, value: u32) {
        match (index, EntryHalf::of(index)) {
            (ID_REGISTER, _) => self.id = (value >> ID_SHIFT) as u8 & ID_BITS,
            (_, Some(EntryHalf::Low(pin))) => {
                self.entries[pin].write_low(value);
                self.service_level(pin);
            }
            (_, Some(EntryHalf::High(pin))) => self.entries[pin].write_high(value),
            _ => {}
        }
    }

    /// A guest read of `data.len()` bytes at `offset` in the region (see
    /// the module documentation for sizes and offsets).
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let select = u32::from(self.select).to_le_bytes();
        let window = self.read_register(self.select).to_le_bytes();
        for (at, byte) in (offset..).zip(data.iter_mut()) {
            *byte = register_byte(&select, IOREGSEL, at)
                .or_else(|| register_byte(&window, IOWIN, at))
                .unwrap_or(0xff);
        }
    }

    /// A guest write of `data` at `offset` in the region (see the module
    /// documentation for sizes and offsets).
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (IOREGSEL, [index, ..]) => self.select = *index,
            (IOWIN, &[b0, b1, b2, b3]) => {
                self.write_register(self.select, u32::from_le_bytes([b0, b1, b2, b3]));
            }
            _ => {}
        }
    }

    /// Whether `pin`'s input is asserted: its wire's level, inverted for
    /// an active-low entry.
    fn asserted(&self, pin: usize) -> bool {
        let high = self.wires & (1 << pin) != 0;
        high != self.entries[pin].active_low()
    }

    /// Delivers a level-triggered entry if its input is asserted, it is
    /// unmasked and no delivery awaits its EOI.
    fn service_level(&mut self, pin: usize) {
        let entry = self.entries[pin];
        let ready = entry.level_triggered() && !entry.masked() && !entry.remote_irr();
        if ready && self.asserted(pin) {
            self.deliver(pin);
        }
    }

    /// Queues `pin`'s message; a level-triggered one sets remote IRR.
    fn deliver(&mut self, pin: usize) {
        let entry = &mut self.entries[pin];
        if let Some(message) = entry.message() {
            if message.level_triggered {
                entry.0 |= Entry::REMOTE_IRR;
            }
            self.messages.push(message);
        }
    }
}

/// Byte `at` (a region offset) of a 4-byte register at `base` holding
/// `bytes`, if `at` falls in it.
fn register_byte(bytes: &[u8; REGISTER_BYTES], base: u64, at: u64) -> Option<u8> {
    let index = usize::try_from(at.checked_sub(base)?).ok()?;
    bytes.get(index).copied()
}

/// Where an I/O APIC's messages go: called once per message, without the
/// I/O APIC's lock, on the thread that caused it.
pub type MessageSink = Arc<dyn Fn(Message) + Send + Sync>;

struct Shared {
    ioapic: Mutex<IoApic>,
    sink: Mutex<Option<MessageSink>>,
}

/// The I/O APIC shared by the MMIO bus, the devices that drive its pins
/// and the machine that takes its messages. Clones share the I/O APIC.
#[derive(Clone)]
pub struct SharedIoApic {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SharedIoApic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIoApic")
            .field("ioapic", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl SharedIoApic {
    /// Shares `ioapic`; its messages are dropped until a sink is set.
    pub fn new(ioapic: IoApic) -> SharedIoApic {
        SharedIoApic {
            shared: Arc::new(Shared {
                ioapic: Mutex::new(ioapic),
                sink: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IoApic> {
        // Every operation leaves the I/O APIC consistent, so the state a
        // panicking holder left is usable.
        self.shared.ioapic.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sink(&self) -> Option<MessageSink> {
        self.shared
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` on the I/O APIC, then, without its lock, hands the sink
    /// every message queued so far.
    pub fn with<R>(&self, f: impl FnOnce(&mut IoApic) -> R) -> R {
        let (result, messages) = {
            let mut ioapic = self.lock();
            let result = f(&mut ioapic);
            (result, ioapic.take_messages())
        };
        if messages.is_empty() {
            return result;
        }
        if let Some(sink) = self.sink() {
            messages.into_iter().for_each(|message| sink(message));
        }
        result
    }

    /// Sets input `pin` to `level` (see [`IoApic::set_irq`]).
    pub fn set_irq(&self, pin: u8, level: bool) {
        self.with(|ioapic| ioapic.set_irq(pin, level));
    }

    /// The EOI broadcast for `vector` (see [`IoApic::eoi`]).
    pub fn eoi(&self, vector: u8) {
        self.with(|ioapic| ioapic.eoi(vector));
    }

    /// The unmasked pins (see [`IoApic::unmasked_pins`]).
    pub fn unmasked_pins(&self) -> u32 {
        self.lock().unmasked_pins()
    }

    /// Sends every later message to `sink`; replaces the previous sink.
    pub fn set_sink(&self, sink: MessageSink) {
        *self.shared.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Puts the I/O APIC's registers on `bus` at [`IOAPIC_BASE`].
    pub fn register(&self, bus: &mut MmioBus) -> Result<(), MmioError> {
        bus.register(IOAPIC_BASE, IOAPIC_SIZE, Arc::new(self.clone()))
    }
}

impl MmioDevice for SharedIoApic {
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        self.lock().mmio_read(offset, data);
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        self.with(|ioapic| ioapic.mmio_write(offset, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MASKED: u32 = 1 << 16;
    const LEVEL: u32 = 1 << 15;
    const REMOTE_IRR: u32 = 1 << 14;
    const ACTIVE_LOW: u32 = 1 << 13;
    const DELIVERY_STATUS: u32 = 1 << 12;
    const LOGICAL: u32 = 1 << 11;
    const NMI: u32 = 4 << 8;
    const EXTINT: u32 = 7 << 8;

    fn low_index(pin: u8) -> u8 {
        REDIRECTION_TABLE + 2 * pin
    }

    /// Programs entry `pin` as Linux does: the high dword, then the low.
    fn program(io: &mut IoApic, pin: u8, low: u32, destination: u8) {
        io.write_register(low_index(pin) + 1, u32::from(destination) << 24);
        io.write_register(low_index(pin), low);
    }

    fn entry_low(io: &IoApic, pin: u8) -> u32 {
        io.read_register(low_index(pin))
    }

    fn fixed(vector: u8, level_triggered: bool) -> Message {
        Message {
            vector,
            delivery_mode: DeliveryMode::Fixed,
            logical: false,
            destination: 0,
            level_triggered,
        }
    }

    fn mmio_select(io: &mut IoApic, index: u8) {
        io.mmio_write(IOREGSEL, &u32::from(index).to_le_bytes());
    }

    fn mmio_window(io: &IoApic) -> u32 {
        let mut data = [0; 4];
        io.mmio_read(IOWIN, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn reset_masks_every_entry() {
        let mut io = IoApic::new(1);
        for pin in 0..PINS {
            assert_eq!(entry_low(&io, pin), 0x0001_0000, "pin {pin}");
            assert_eq!(io.read_register(low_index(pin) + 1), 0, "pin {pin}");
            io.set_irq(pin, true);
        }
        assert_eq!(io.unmasked_pins(), 0);
        assert!(io.take_messages().is_empty());
    }

    #[test]
    fn id_register_is_writable_in_bits_27_to_24_and_the_arbitration_register_follows() {
        let mut io = IoApic::new(1);
        assert_eq!(io.read_register(ID_REGISTER), 0x0100_0000);
        io.write_register(ID_REGISTER, 0x0200_0000);
        assert_eq!(io.read_register(ID_REGISTER), 0x0200_0000);
        io.write_register(ID_REGISTER, 0xffff_ffff);
        assert_eq!(io.read_register(ID_REGISTER), 0x0f00_0000);
        assert_eq!(io.read_register(ARBITRATION_REGISTER), 0x0f00_0000);
        io.write_register(ARBITRATION_REGISTER, 0);
        assert_eq!(io.read_register(ARBITRATION_REGISTER), 0x0f00_0000);
    }

    #[test]
    fn version_register_says_0x11_with_24_entries_and_is_read_only() {
        let mut io = IoApic::new(1);
        assert_eq!(io.read_register(VERSION_REGISTER), 0x0017_0011);
        io.write_register(VERSION_REGISTER, 0);
        assert_eq!(io.read_register(VERSION_REGISTER), VERSION);
    }

    #[test]
    fn indices_that_name_no_register_read_zero() {
        let mut io = IoApic::new(1);
        for index in [0x03, 0x0f, 0x40, 0xff] {
            io.write_register(index, u32::MAX);
            assert_eq!(io.read_register(index), 0, "index {index:#x}");
        }
    }

    #[test]
    fn edge_entry_delivers_on_a_rising_edge_only() {
        let mut io = IoApic::new(1);
        program(&mut io, 4, 0x34, 0);
        io.set_irq(4, true);
        assert_eq!(io.take_messages(), vec![fixed(0x34, false)]);
        io.set_irq(4, true);
        io.set_irq(4, false);
        assert!(io.take_messages().is_empty(), "no new edge");
        io.set_irq(4, true);
        assert_eq!(io.take_messages(), vec![fixed(0x34, false)]);
    }

    #[test]
    fn rising_edge_on_a_masked_edge_entry_is_lost() {
        let mut io = IoApic::new(1);
        program(&mut io, 1, MASKED | 0x31, 0);
        io.set_irq(1, true);
        io.set_irq(1, false);
        program(&mut io, 1, 0x31, 0);
        assert!(io.take_messages().is_empty(), "not latched");
        io.set_irq(1, true);
        assert_eq!(io.take_messages(), vec![fixed(0x31, false)]);
    }

    #[test]
    fn level_entry_delivers_once_until_eoi_then_again_while_still_high() {
        let mut io = IoApic::new(1);
        program(&mut io, 9, LEVEL | 0x39, 0);
        io.set_irq(9, true);
        assert_eq!(io.take_messages(), vec![fixed(0x39, true)]);
        assert_ne!(entry_low(&io, 9) & REMOTE_IRR, 0);
        io.set_irq(9, true);
        assert!(io.take_messages().is_empty(), "remote IRR holds it");
        io.eoi(0x39);
        assert_eq!(io.take_messages(), vec![fixed(0x39, true)], "still high");
        io.set_irq(9, false);
        io.eoi(0x39);
        assert!(io.take_messages().is_empty());
        assert_eq!(entry_low(&io, 9) & REMOTE_IRR, 0);
    }

    #[test]
    fn eoi_of_another_vector_does_nothing() {
        let mut io = IoApic::new(1);
        program(&mut io, 9, LEVEL | 0x39, 0);
        io.set_irq(9, true);
        io.take_messages();
        io.eoi(0x3a);
        assert!(io.take_messages().is_empty());
        assert_ne!(entry_low(&io, 9) & REMOTE_IRR, 0);
    }

    #[test]
    fn eoi_ends_every_level_entry_sharing_the_vector() {
        let mut io = IoApic::new(1);
        program(&mut io, 10, LEVEL | 0x40, 0);
        program(&mut io, 11, LEVEL | 0x40, 0);
        io.set_irq(10, true);
        io.set_irq(11, true);
        assert_eq!(io.take_messages().len(), 2);
        io.eoi(0x40);
        assert_eq!(io.take_messages().len(), 2, "both still high");
    }

    #[test]
    fn unmasking_a_level_entry_whose_input_is_asserted_delivers() {
        let mut io = IoApic::new(1);
        program(&mut io, 9, MASKED | LEVEL | 0x39, 0);
        io.set_irq(9, true);
        assert!(io.take_messages().is_empty());
        program(&mut io, 9, LEVEL | 0x39, 0);
        assert_eq!(io.take_messages(), vec![fixed(0x39, true)]);
    }

    #[test]
    fn polarity_low_inverts_the_input() {
        let mut io = IoApic::new(1);
        io.set_irq(5, true); // the wire idles high
        program(&mut io, 5, ACTIVE_LOW | LEVEL | 0x35, 0);
        assert!(io.take_messages().is_empty(), "high is deasserted");
        io.set_irq(5, false);
        assert_eq!(io.take_messages(), vec![fixed(0x35, true)]);

        io.set_irq(6, true);
        program(&mut io, 6, ACTIVE_LOW | 0x36, 0);
        io.set_irq(6, false);
        assert_eq!(io.take_messages(), vec![fixed(0x36, false)], "falling wire");
        io.set_irq(6, true);
        assert!(io.take_messages().is_empty(), "rising wire");
    }

    #[test]
    fn redirection_entry_reads_back_its_writable_bits() {
        let mut io = IoApic::new(1);
        io.write_register(low_index(3), 0xffff_ffff);
        io.write_register(low_index(3) + 1, 0xffff_ffff);
        assert_eq!(entry_low(&io, 3), 0x0001_afff);
        assert_eq!(io.read_register(low_index(3) + 1), 0xff00_0000);
        let programmed = MASKED | LEVEL | ACTIVE_LOW | LOGICAL | (1 << 8) | 0x5a;
        io.write_register(low_index(23), programmed);
        assert_eq!(entry_low(&io, 23), programmed);
    }

    #[test]
    fn remote_irr_and_delivery_status_are_not_writable() {
        let mut io = IoApic::new(1);
        io.write_register(low_index(2), MASKED | REMOTE_IRR | DELIVERY_STATUS | LEVEL);
        assert_eq!(entry_low(&io, 2), MASKED | LEVEL);
        program(&mut io, 9, LEVEL | 0x39, 0);
        io.set_irq(9, true);
        io.write_register(low_index(9), MASKED | LEVEL | 0x39);
        assert_eq!(entry_low(&io, 9), REMOTE_IRR | MASKED | LEVEL | 0x39);
    }

    #[test]
    fn rewriting_a_level_entry_as_edge_clears_remote_irr() {
        let mut io = IoApic::new(1);
        program(&mut io, 9, LEVEL | 0x39, 0);
        io.set_irq(9, true);
        io.take_messages();
        program(&mut io, 9, MASKED | 0x39, 0);
        assert_eq!(entry_low(&io, 9) & REMOTE_IRR, 0);
        program(&mut io, 9, LEVEL | 0x39, 0);
        assert_eq!(io.take_messages(), vec![fixed(0x39, true)], "still high");
    }

    #[test]
    fn nmi_and_extint_entries_are_edge_triggered_even_if_programmed_level() {
        let mut io = IoApic::new(1);
        program(&mut io, 0, LEVEL | EXTINT, 0);
        program(&mut io, 7, LEVEL | NMI, 0);
        io.set_irq(0, true);
        io.set_irq(7, true);
        let modes: Vec<_> = io
            .take_messages()
            .iter()
            .map(|m| (m.delivery_mode, m.level_triggered))
            .collect();
        assert_eq!(
            modes,
            [(DeliveryMode::ExtInt, false), (DeliveryMode::Nmi, false)]
        );
        assert_eq!(entry_low(&io, 0) & REMOTE_IRR, 0);
        io.set_irq(7, true);
        assert!(io.take_messages().is_empty(), "no new edge");
    }

    #[test]
    fn reserved_delivery_modes_deliver_nothing() {
        let mut io = IoApic::new(1);
        program(&mut io, 3, 3 << 8, 0);
        program(&mut io, 4, LEVEL | (6 << 8), 0);
        io.set_irq(3, true);
        io.set_irq(4, true);
        assert!(io.take_messages().is_empty());
        assert_eq!(entry_low(&io, 4) & REMOTE_IRR, 0);
    }

    #[test]
    fn message_carries_destination_mode_and_delivery_mode() {
        let mut io = IoApic::new(1);
        program(&mut io, 12, LOGICAL | (1 << 8) | 0x44, 0x03);
        io.set_irq(12, true);
        let expected = Message {
            vector: 0x44,
            delivery_mode: DeliveryMode::LowestPriority,
            logical: true,
            destination: 0x03,
            level_triggered: false,
        };
        assert_eq!(io.take_messages(), vec![expected]);
    }

    #[test]
    fn unmasked_pins_is_a_bitmap_of_unmasked_entries() {
        let mut io = IoApic::new(1);
        program(&mut io, 0, 0x30, 0);
        program(&mut io, 23, 0x47, 0);
        assert_eq!(io.unmasked_pins(), 1 | 1 << 23);
        program(&mut io, 0, MASKED | 0x30, 0);
        assert_eq!(io.unmasked_pins(), 1 << 23);
    }

    #[test]
    fn pins_past_23_are_not_wired() {
        let mut io = IoApic::new(1);
        io.set_irq(24, true);
        io.set_irq(255, true);
        assert!(io.take_messages().is_empty());
    }

    #[test]
    fn dword_access_through_ioregsel_and_iowin_reaches_the_registers() {
        let mut io = IoApic::new(1);
        mmio_select(&mut io, VERSION_REGISTER);
        assert_eq!(mmio_window(&io), VERSION);
        mmio_select(&mut io, low_index(2));
        io.mmio_write(IOWIN, &0x0000_0032u32.to_le_bytes());
        assert_eq!(entry_low(&io, 2), 0x32);
        let mut select = [0; 4];
        io.mmio_read(IOREGSEL, &mut select);
        assert_eq!(u32::from_le_bytes(select), u32::from(low_index(2)));
    }

    #[test]
    fn byte_access_to_ioregsel_selects_the_register() {
        let mut io = IoApic::new(1);
        io.mmio_write(IOREGSEL, &[VERSION_REGISTER]);
        assert_eq!(mmio_window(&io), VERSION);
        let mut byte = [0];
        io.mmio_read(IOREGSEL, &mut byte);
        assert_eq!(byte, [VERSION_REGISTER]);
        io.mmio_write(IOREGSEL, &0x1234_5600u32.to_le_bytes());
        assert_eq!(mmio_window(&io), 0x0100_0000, "only the low byte counts");
    }

    #[test]
    fn other_accesses_read_all_ones_and_writes_there_are_ignored() {
        let mut io = IoApic::new(1);
        mmio_select(&mut io, ID_REGISTER);
        let mut data = [0; 4];
        io.mmio_read(0x20, &mut data);
        assert_eq!(data, [0xff; 4]);
        io.mmio_read(0x0e, &mut data);
        assert_eq!(data, [0xff, 0xff, 0, 0], "straddles into IOWIN");
        io.mmio_write(IOWIN, &[0x0f]);
        io.mmio_write(IOWIN + 3, &[0x0f]);
        io.mmio_write(0x40, &0u32.to_le_bytes());
        io.mmio_write(IOREGSEL + 1, &[0x01]);
        assert_eq!(io.read_register(ID_REGISTER), 0x0100_0000);
        assert_eq!(mmio_window(&io), 0x0100_0000, "IOREGSEL unchanged");
    }

    #[test]
    fn shared_handle_calls_the_sink_outside_the_lock() {
        let ioapic = SharedIoApic::new(IoApic::new(1));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (sink_ioapic, sink_received) = (ioapic.clone(), received.clone());
        ioapic.set_sink(Arc::new(move |message: Message| {
            // Locks the I/O APIC again: would deadlock under its lock.
            let pins = sink_ioapic.unmasked_pins();
            sink_received.lock().unwrap().push((message, pins));
        }));
        ioapic.with(|io| program(io, 9, LEVEL | 0x39, 0));
        ioapic.set_irq(9, true);
        ioapic.eoi(0x39);
        let expected = (fixed(0x39, true), 1 << 9);
        assert_eq!(*received.lock().unwrap(), vec![expected, expected]);
    }

    #[test]
    fn sink_may_end_the_interrupt_it_receives() {
        let ioapic = SharedIoApic::new(IoApic::new(1));
        let calls = Arc::new(AtomicUsize::new(0));
        let (sink_ioapic, counted) = (ioapic.clone(), calls.clone());
        ioapic.set_sink(Arc::new(move |message: Message| {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                sink_ioapic.eoi(message.vector);
            }
        }));
        ioapic.with(|io| program(io, 9, LEVEL | 0x39, 0));
        ioapic.set_irq(9, true);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "EOI while high redelivers");
    }

    #[test]
    fn shared_handle_on_the_mmio_bus_answers_at_0xfec00000() {
        let ioapic = SharedIoApic::new(IoApic::new(1));
        let messages = Arc::new(AtomicUsize::new(0));
        let counted = messages.clone();
        ioapic.set_sink(Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let mut bus = MmioBus::new();
        ioapic.register(&mut bus).unwrap();
        bus.write(IOAPIC_BASE, &[low_index(4)]);
        bus.write(IOAPIC_BASE + IOWIN, &0x34u32.to_le_bytes());
        assert_eq!(ioapic.unmasked_pins(), 1 << 4);
        ioapic.set_irq(4, true);
        assert_eq!(messages.load(Ordering::SeqCst), 1);
        let mut data = [0; 4];
        bus.write(IOAPIC_BASE, &[VERSION_REGISTER]);
        bus.read(IOAPIC_BASE + IOWIN, &mut data);
        assert_eq!(u32::from_le_bytes(data), VERSION);
    }
}
