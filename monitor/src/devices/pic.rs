//! The PC's pair of Intel 8259A programmable interrupt controllers: the
//! master at ports `0x20`/`0x21`, the slave at `0xA0`/`0xA1` cascaded on
//! the master's IR2, and the PIIX edge/level control registers (ELCR) at
//! `0x4D0`/`0x4D1`, as the 8259A datasheet describes them and as Linux and
//! QEMU use them.
//!
//! [`Pic`] is a pure state machine: devices drive its sixteen input lines
//! ([`Pic::set_irq`]), its INTR output says whether the CPU should take an
//! interrupt ([`Pic::has_interrupt`]), and the CPU's interrupt acknowledge
//! cycle returns the vector ([`Pic::acknowledge`]). [`SharedPic`] puts it
//! behind a lock for the port bus, the devices (on any thread, through a
//! [`PicLine`]) and the machine, and tells a listener when INTR rises.
//!
//! Modelled: the ICW1-ICW4 initialization sequence (edge- or
//! level-triggered (LTIM), single or cascade, the vector base, ICW3, ICW4's
//! auto-EOI and special fully nested mode); OCW1 (the IMR); OCW2
//! (non-specific and specific EOI, rotate on non-specific and specific EOI,
//! rotate in auto-EOI mode, set priority); OCW3 (IRR/ISR read select, poll,
//! special mask mode); priority resolution against the in-service register
//! with rotation; edge-triggered inputs latched on a rising edge (the IRR
//! bit stays set until acknowledged, even if the line drops), level
//! inputs (LTIM or the ELCR) that follow the line; spurious IRQ7 and IRQ15;
//! the ELCR, whose reserved bits (IRQ0, 1, 2, 8, 13) stay 0 as on PIIX.
//!
//! Not modelled: the MCS-80/85 mode (ICW4 bit 0 clear, or no ICW4): the PIC
//! always answers an acknowledge with an 8086 vector, which is all an x86
//! CPU can take; buffered mode (ICW4 bits 2-3) and ICW1's ADI and
//! address bits, which only matter to other buses; the slave's ICW3
//! identity: the slave answers whenever the master's ICW3 has bit 2 set
//! (the PC's wiring), and in single mode the master supplies a vector for
//! IR2 itself.
//!
//! Reset state: what a PC BIOS leaves (SeaBIOS under QEMU): both chips
//! initialized, vectors 0x08-0x0F and 0x70-0x77, edge-triggered, normal
//! EOI, cascade on IR2, and every line masked except the cascade.
//! (SeaBIOS also unmasks IRQ0 for its own clock; nestmon keeps it masked,
//! so a guest that never touches the PIC takes no interrupt at all.)
//!
//! Invariants:
//! - The master's IR2 input is always the slave's INT output: every
//!   operation ends by recomputing it ([`Pic::update_cascade`]).
//! - IRR, ISR and IMR bits of one chip refer to its inputs 0-7; the input
//!   levels last set are kept, so an edge is a low-to-high change.
//! - Acknowledging never fails: with no request it returns the spurious
//!   IRQ7 vector (master) or IRQ15 (slave) and sets no in-service bit on
//!   the chip that had nothing.
//! - [`SharedPic`]'s INTR mirror is updated under the lock after every
//!   change, and the listener is called (outside the lock) exactly when
//!   it goes from low to high.

use super::{DeviceError, IoBus, IoOutcome, PortDevice};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The master's command port (its data port is the next one).
pub const MASTER_PORT: u16 = 0x20;
/// The slave's command port.
pub const SLAVE_PORT: u16 = 0xa0;
/// The ELCR of the master's lines (the slave's is the next port).
pub const ELCR_PORT: u16 = 0x4d0;

/// Why a PIC request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PicError {
    /// The PIC pair has inputs 0-15 only.
    #[error("IRQ {0} does not exist: the PIC pair has lines 0-15")]
    NoSuchLine(u8),
}

/// One of the sixteen interrupt request lines of the PIC pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Irq(u8);

impl Irq {
    /// IRQ0: PIT channel 0.
    pub const PIT: Irq = Irq(0);
    /// IRQ1: the keyboard controller.
    pub const KEYBOARD: Irq = Irq(1);
    /// IRQ2: the cascade (a device asking for it gets IRQ9, see [`Pic::set_irq`]).
    pub const CASCADE: Irq = Irq(2);
    /// IRQ4: COM1.
    pub const COM1: Irq = Irq(4);
    /// IRQ8: the RTC.
    pub const RTC: Irq = Irq(8);
    /// IRQ9: the ACPI SCI (level-triggered, as the FADT's SCI_INT says).
    pub const SCI: Irq = Irq(9);
    /// IRQ12: the PS/2 mouse.
    pub const MOUSE: Irq = Irq(12);

    /// IRQ `line`, which must be 0-15.
    pub const fn new(line: u8) -> Result<Irq, PicError> {
        if line < 16 {
            Ok(Irq(line))
        } else {
            Err(PicError::NoSuchLine(line))
        }
    }

    /// The line's number, 0-15.
    pub const fn number(self) -> u8 {
        self.0
    }
}

/// Where a chip is in its initialization sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    /// Initialized: data port writes are OCW1.
    Ready,
    /// ICW1 seen: the next data port write is ICW2.
    Icw2,
    /// Waiting for ICW3 (cascade mode).
    Icw3,
    /// Waiting for ICW4 (ICW1 asked for it).
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug)]
struct Chip {
    /// The master (its IR2 is the cascade) or the slave.
    master: bool,
    /// Interrupt request register.
    irr: u8,
    /// In-service register.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// The levels of the inputs as last set, for edge detection.
    input: u8,
    /// The line of highest priority (0 unless rotated): line `l` has
    /// priority `(l - top) & 7`, 0 being the highest.
    top: u8,
    /// Vector of line 0 (ICW2, bits 7-3).
    base: u8,
    init: Init,
    /// ICW1 bit 0: an ICW4 follows.
    icw4_needed: bool,
    /// ICW1 bit 1: single mode (no ICW3, no cascade).
    single: bool,
    /// ICW1 bit 3: every input is level-triggered.
    ltim: bool,
    /// ICW3: the master's slave lines, or the slave's identity.
    icw3: u8,
    /// ICW4 bit 0 (kept for the record; 8086 vectors are always given).
    x86_mode: bool,
    /// ICW4 bit 1: the acknowledge ends the interrupt (no ISR bit).
    auto_eoi: bool,
    /// OCW2: rotate priorities on each auto-EOI.
    rotate_on_auto_eoi: bool,
    /// ICW4 bit 4: special fully nested mode.
    special_fully_nested: bool,
    /// OCW3: reads of the command port return the ISR (else the IRR).
    read_isr: bool,
    /// OCW3: the next read is a poll.
    poll: bool,
    /// OCW3: special mask mode.
    special_mask: bool,
    /// Edge/level control: 1 = level-triggered.
    elcr: u8,
    /// The ELCR bits that may be set.
    elcr_mask: u8,
}

impl Chip {
    /// The chip as a BIOS leaves it: initialized at `base` in cascade
    /// mode, 8086 mode, normal EOI, lines masked by `imr`.
    fn bios(master: bool, base: u8, imr: u8) -> Chip {
        Chip {
            master,
            irr: 0,
            isr: 0,
            imr,
            input: 0,
            top: 0,
            base,
            init: Init::Ready,
            icw4_needed: true,
            single: false,
            ltim: false,
            icw3: if master { 1 << Irq::CASCADE.0 } else { 2 },
            x86_mode: true,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            read_isr: false,
            poll: false,
            special_mask: false,
            elcr: 0,
            elcr_mask: if master { 0xf8 } else { 0xde },
        }
    }

    /// The inputs that are level-triggered.
    fn level_lines(&self) -> u8 {
        if self.ltim {
            0xff
        } else {
            self.elcr
        }
    }

    /// Input `line` (0-7) is now at `level`.
    fn set_input(&mut self, line: u8, level: bool) {
        let bit = 1u8 << line;
        if self.level_lines() & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.input & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.input |= bit;
        } else {
            self.input &= !bit;
        }
    }

    /// The priority of `line`: 0 is the highest, 7 the lowest.
    fn priority(&self, line: u8) -> u8 {
        line.wrapping_sub(self.top) & 7
    }

    /// The line of highest priority among `mask`'s bits.
    fn highest(&self, mask: u8) -> Option<u8> {
        (0..8)
            .map(|p| (p + self.top) & 7)
            .find(|&line| mask & (1 << line) != 0)
    }

    /// The request this chip presents on INT: the unmasked request of
    /// highest priority, if it beats the interrupt in service.
    fn request(&self) -> Option<u8> {
        let line = self.highest(self.irr & !self.imr)?;
        let mut in_service = self.isr;
        if self.special_mask {
            // A masked level in service does not hold back the others.
            in_service &= !self.imr;
        }
        let Some(current) = self.highest(in_service) else {
            return Some(line);
        };
        let nested_slave = self.master
            && self.special_fully_nested
            && line == Irq::CASCADE.0
            && current == Irq::CASCADE.0;
        (self.priority(line) < self.priority(current) || nested_slave).then_some(line)
    }

    /// The acknowledge of `line`: its ISR bit is set (unless auto-EOI)
    /// and an edge-triggered request is consumed.
    fn acknowledge(&mut self, line: u8) {
        let bit = 1u8 << line;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.top = (line + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.level_lines() & bit == 0 {
            self.irr &= !bit;
        }
    }

    /// A poll (OCW3 P, then a read): an acknowledge of the request,
    /// returned as `0x80 | line`, or 0 when there is none.
    fn poll_read(&mut self) -> u8 {
        match self.request() {
            Some(line) => {
                self.acknowledge(line);
                0x80 | line
            }
            None => 0,
        }
    }

    fn read(&mut self, data_port: bool) -> u8 {
        if self.poll {
            self.poll = false;
            return self.poll_read();
        }
        match (data_port, self.read_isr) {
            (true, _) => self.imr,
            (false, true) => self.isr,
            (false, false) => self.irr,
        }
    }

    fn write(&mut self, data_port: bool, value: u8) {
        if data_port {
            self.write_data(value);
        } else if value & 0x10 != 0 {
            self.icw1(value);
        } else if value & 0x08 != 0 {
            self.ocw3(value);
        } else {
            self.ocw2(value);
        }
    }

    /// ICW1: starts the initialization sequence. The IMR and ISR are
    /// cleared, IR7 gets the lowest priority, special mask mode ends, the
    /// IRR is selected for reading and the edge sense is reset (a line
    /// that is high must go low and high again to request); with no
    /// ICW4, every ICW4 function is cleared.
    fn icw1(&mut self, value: u8) {
        self.icw4_needed = value & 0x01 != 0;
        self.single = value & 0x02 != 0;
        self.ltim = value & 0x08 != 0;
        self.imr = 0;
        self.isr = 0;
        self.top = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.rotate_on_auto_eoi = false;
        if !self.icw4_needed {
            self.x86_mode = false;
            self.auto_eoi = false;
            self.special_fully_nested = false;
        }
        self.irr = self.input & self.level_lines();
        self.init = Init::Icw2;
    }

    fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            Init::Ready => {
                self.imr = value;
                Init::Ready
            }
            Init::Icw2 => {
                self.base = value & 0xf8;
                if !self.single {
                    Init::Icw3
                } else if self.icw4_needed {
                    Init::Icw4
                } else {
                    Init::Ready
                }
            }
            Init::Icw3 => {
                self.icw3 = value;
                if self.icw4_needed {
                    Init::Icw4
                } else {
                    Init::Ready
                }
            }
            Init::Icw4 => {
                self.x86_mode = value & 0x01 != 0;
                self.auto_eoi = value & 0x02 != 0;
                self.special_fully_nested = value & 0x10 != 0;
                Init::Ready
            }
        };
    }

    /// OCW2: end of interrupt, rotation and priority commands.
    fn ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            // Rotate in auto-EOI mode: clear, set.
            0b000 => self.rotate_on_auto_eoi = false,
            0b100 => self.rotate_on_auto_eoi = true,
            // Non-specific EOI, and rotate on non-specific EOI.
            rotate @ (0b001 | 0b101) => {
                if let Some(line) = self.highest(self.isr) {
                    self.isr &= !(1 << line);
                    if rotate == 0b101 {
                        self.top = (line + 1) & 7;
                    }
                }
            }
            // Specific EOI, and rotate on specific EOI.
            rotate @ (0b011 | 0b111) => {
                self.isr &= !(1 << level);
                if rotate == 0b111 {
                    self.top = (level + 1) & 7;
                }
            }
            // Set priority: `level` becomes the lowest.
            0b110 => self.top = (level + 1) & 7,
            // 0b010: no operation.
            _ => {}
        }
    }

    /// OCW3: read register select, poll, special mask mode.
    fn ocw3(&mut self, value: u8) {
        if value & 0x04 != 0 {
            self.poll = true;
        }
        if value & 0x02 != 0 {
            self.read_isr = value & 0x01 != 0;
        }
        if value & 0x40 != 0 {
            self.special_mask = value & 0x20 != 0;
        }
    }
}

/// The master and slave 8259A of a PC.
#[derive(Clone, Debug)]
pub struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Pic::new()
    }
}

impl Pic {
    /// The pair as a PC BIOS leaves it (see the module documentation):
    /// vectors 0x08 and 0x70, every line but the cascade masked.
    pub fn new() -> Pic {
        Pic {
            master: Chip::bios(true, 0x08, !(1 << Irq::CASCADE.0)),
            slave: Chip::bios(false, 0x70, 0xff),
        }
    }

    /// Sets input `irq` to `level`. An edge-triggered input requests an
    /// interrupt on a low-to-high change; a level-triggered one (LTIM,
    /// ELCR) requests while it is high. IRQ2 is the cascade: as on a PC/AT,
    /// whose ISA IRQ2 pin is wired to the slave's IR1, it drives IRQ9.
    pub fn set_irq(&mut self, irq: Irq, level: bool) {
        match irq.0 {
            2 => self.slave.set_input(1, level),
            line @ 0..=7 => self.master.set_input(line, level),
            line => self.slave.set_input(line - 8, level),
        }
        self.update_cascade();
    }

    /// The INTR output: the CPU should acknowledge an interrupt.
    pub fn has_interrupt(&self) -> bool {
        self.master.request().is_some()
    }

    /// The CPU's interrupt acknowledge: the vector of the request of
    /// highest priority, whose ISR bit is now set (unless in auto-EOI
    /// mode) and whose edge-triggered request is consumed. With no request
    /// (it went away, or was masked, since INTR rose), the master answers
    /// with its IR7 vector and the slave with its IR7 vector (IRQ15), and
    /// the chip without a request sets no ISR bit: a spurious interrupt.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.request() {
            None => self.master.base | 7,
            Some(line) => {
                self.master.acknowledge(line);
                if line == Irq::CASCADE.0 && self.cascaded() {
                    match self.slave.request() {
                        Some(slave_line) => {
                            self.slave.acknowledge(slave_line);
                            self.slave.base | slave_line
                        }
                        None => self.slave.base | 7,
                    }
                } else {
                    self.master.base | line
                }
            }
        };
        self.update_cascade();
        vector
    }

    /// Whether a request on `irq` can reach INTR as far as the masks go
    /// (the master's, and for a slave line the slave's and the cascade's).
    pub fn line_enabled(&self, irq: Irq) -> bool {
        let line = if irq == Irq::CASCADE { 9 } else { irq.0 };
        if line < 8 {
            return self.master.imr & (1 << line) == 0;
        }
        self.cascaded()
            && self.master.imr & (1 << Irq::CASCADE.0) == 0
            && self.slave.imr & (1 << (line - 8)) == 0
    }

    /// A guest `in` of one byte at `port` (the PIC's or the ELCR's);
    /// other ports read all ones.
    pub fn read(&mut self, port: u16) -> u8 {
        let value = match port {
            0x20 | 0x21 => self.master.read(port & 1 != 0),
            0xa0 | 0xa1 => self.slave.read(port & 1 != 0),
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => 0xff,
        };
        self.update_cascade();
        value
    }

    /// A guest `out` of one byte at `port` (the PIC's or the ELCR's);
    /// other ports are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            0x20 | 0x21 => self.master.write(port & 1 != 0, value),
            0xa0 | 0xa1 => self.slave.write(port & 1 != 0, value),
            0x4d0 => self.master.elcr = value & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = value & self.slave.elcr_mask,
            _ => {}
        }
        self.update_cascade();
    }

    /// Whether the master takes the slave's vectors on IR2.
    fn cascaded(&self) -> bool {
        !self.master.single && self.master.icw3 & (1 << Irq::CASCADE.0) != 0
    }

    /// Drives the master's IR2 with the slave's INT output.
    fn update_cascade(&mut self) {
        let slave_int = self.slave.request().is_some();
        self.master.set_input(Irq::CASCADE.0, slave_int);
    }
}

/// Something told when INTR rises.
type IntrListener = Arc<dyn Fn() + Send + Sync>;

struct Shared {
    pic: Mutex<Pic>,
    /// INTR as of the last change.
    intr: AtomicBool,
    /// Per line: the devices that may raise it by themselves ([`PicLine::set_armed`]).
    armed: [AtomicUsize; 16],
    listener: Mutex<Option<IntrListener>>,
    /// Where the same ISA lines also go (the I/O APIC's pins).
    mirror: Mutex<Option<LineMirror>>,
}

/// Called with every level a device drives onto a line, after the PIC saw
/// it: the ISA interrupt lines of a PC reach the I/O APIC as well.
pub type LineMirror = Arc<dyn Fn(Irq, bool) + Send + Sync>;

/// The PIC pair shared by the port bus, the devices that raise its lines
/// and the machine that takes its interrupts. Clones share the PIC.
#[derive(Clone)]
pub struct SharedPic {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SharedPic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPic")
            .field("pic", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl SharedPic {
    /// Shares `pic`.
    pub fn new(pic: Pic) -> SharedPic {
        let intr = pic.has_interrupt();
        SharedPic {
            shared: Arc::new(Shared {
                pic: Mutex::new(pic),
                intr: AtomicBool::new(intr),
                armed: Default::default(),
                listener: Mutex::new(None),
                mirror: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pic> {
        // The PIC stays consistent even if a holder panicked: every
        // operation leaves it in a valid state.
        self.shared.pic.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the PIC, then updates INTR and tells the listener if
    /// INTR rose.
    pub fn with<R>(&self, f: impl FnOnce(&mut Pic) -> R) -> R {
        let (result, rose) = {
            let mut pic = self.lock();
            let result = f(&mut pic);
            let intr = pic.has_interrupt();
            let was = self.shared.intr.swap(intr, Ordering::SeqCst);
            (result, intr && !was)
        };
        if rose {
            let listener = self
                .shared
                .listener
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(listener) = listener {
                listener();
            }
        }
        result
    }

    /// The INTR output (one atomic load).
    pub fn intr(&self) -> bool {
        self.shared.intr.load(Ordering::SeqCst)
    }

    /// Calls `listener` (on the thread that made the change, without the
    /// PIC's lock) whenever INTR goes from low to high; replaces the
    /// previous listener.
    pub fn set_intr_listener(&self, listener: IntrListener) {
        *self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// Sends every level devices drive onto the lines to `mirror` too
    /// (outside the PIC's lock, after the PIC saw it); replaces the
    /// previous one.
    pub fn set_line_mirror(&self, mirror: LineMirror) {
        *self.shared.mirror.lock().unwrap_or_else(|e| e.into_inner()) = Some(mirror);
    }

    /// Drives `irq` to `level` on the mirror, if there is one.
    fn mirror(&self, irq: Irq, level: bool) {
        let mirror = self
            .shared
            .mirror
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(mirror) = mirror {
            mirror(irq, level);
        }
    }

    /// The lines some device may raise by itself (bit n: IRQ n; see
    /// [`PicLine::set_armed`]).
    pub fn armed_lines(&self) -> u16 {
        (0..16u16).fold(0, |bits, line| {
            let armed = self.shared.armed[usize::from(line)].load(Ordering::SeqCst) > 0;
            bits | (u16::from(armed) << line)
        })
    }

    /// The acknowledge cycle, if INTR is up: the vector to deliver.
    pub fn acknowledge_if_pending(&self) -> Option<u8> {
        self.with(|pic| pic.has_interrupt().then(|| pic.acknowledge()))
    }

    /// A handle on input `irq` for a device.
    pub fn line(&self, irq: Irq) -> PicLine {
        PicLine {
            pic: self.clone(),
            irq,
            armed: AtomicBool::new(false),
        }
    }

    /// Whether a line that some device may raise by itself (armed, see
    /// [`PicLine::set_armed`]) is enabled, so that INTR can rise without
    /// the CPU doing anything.
    pub fn armed_line_enabled(&self) -> bool {
        let pic = self.lock();
        (0..16).any(|line| {
            self.shared.armed[usize::from(line)].load(Ordering::SeqCst) > 0
                && pic.line_enabled(Irq(line))
        })
    }

    /// Whether `irq` is enabled (see [`Pic::line_enabled`]).
    pub fn line_enabled(&self, irq: Irq) -> bool {
        self.lock().line_enabled(irq)
    }

    /// Puts the PIC's ports on `bus`: `0x20-0x21`, `0xA0-0xA1` and the
    /// ELCR at `0x4D0-0x4D1`.
    pub fn register(&self, bus: &mut IoBus) -> Result<(), DeviceError> {
        for (base, name) in [
            (MASTER_PORT, "pic-master"),
            (SLAVE_PORT, "pic-slave"),
            (ELCR_PORT, "elcr"),
        ] {
            let ports = PicPorts {
                pic: self.clone(),
                base,
                name,
            };
            bus.register(base, 2, Box::new(ports))?;
        }
        Ok(())
    }
}

/// A device's handle on one input of the PIC; usable from any thread.
#[derive(Debug)]
pub struct PicLine {
    pic: SharedPic,
    irq: Irq,
    /// Whether this handle counts in the line's armed sources.
    armed: AtomicBool,
}

impl PicLine {
    /// The line.
    pub fn irq(&self) -> Irq {
        self.irq
    }

    /// Sets the line to `level`.
    pub fn set_level(&self, level: bool) {
        self.pic.with(|pic| pic.set_irq(self.irq, level));
        self.pic.mirror(self.irq, level);
    }

    /// One edge: the line goes high and low again (how an interrupt
    /// event, like KVM's irqfd, drives an edge-triggered input).
    pub fn pulse(&self) {
        self.pic.with(|pic| {
            pic.set_irq(self.irq, true);
            pic.set_irq(self.irq, false);
        });
        self.pic.mirror(self.irq, true);
        self.pic.mirror(self.irq, false);
    }

    /// Says whether the device may raise the line by itself (a timer set,
    /// input expected), so that a CPU halted with the line enabled can be
    /// woken. Dropping the handle disarms it.
    pub fn set_armed(&self, armed: bool) {
        if self.armed.swap(armed, Ordering::SeqCst) != armed {
            let count = &self.pic.shared.armed[usize::from(self.irq.0)];
            if armed {
                count.fetch_add(1, Ordering::SeqCst);
            } else {
                count.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for PicLine {
    fn drop(&mut self) {
        self.set_armed(false);
    }
}

/// Two ports of the PIC pair on the bus.
struct PicPorts {
    pic: SharedPic,
    base: u16,
    name: &'static str,
}

impl PortDevice for PicPorts {
    fn name(&self) -> &'static str {
        self.name
    }

    fn max_access_size(&self) -> u8 {
        1
    }

    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        let port = self.base + offset;
        u32::from(self.pic.with(|pic| pic.read(port)))
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) -> IoOutcome {
        let port = self.base + offset;
        self.pic.with(|pic| pic.write(port, value as u8));
        IoOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irq(n: u8) -> Irq {
        Irq::new(n).unwrap()
    }

    /// The pair initialized as Linux does (vectors 0x20 and 0x28, ICW4
    /// `icw4` on both), every line unmasked.
    fn linux_pic(icw4: u8) -> Pic {
        let mut pic = Pic::new();
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x20);
        pic.write(0x21, 0x04);
        pic.write(0x21, icw4);
        pic.write(0xa0, 0x11);
        pic.write(0xa1, 0x28);
        pic.write(0xa1, 0x02);
        pic.write(0xa1, icw4);
        pic.write(0x21, 0x00);
        pic.write(0xa1, 0x00);
        pic
    }

    fn pulse(pic: &mut Pic, n: u8) {
        pic.set_irq(irq(n), true);
        pic.set_irq(irq(n), false);
    }

    fn isr(pic: &mut Pic, port: u16) -> u8 {
        pic.write(port, 0x0b);
        let value = pic.read(port);
        pic.write(port, 0x0a);
        value
    }

    #[test]
    fn reset_state_is_what_a_bios_leaves_with_everything_but_the_cascade_masked() {
        let mut pic = Pic::new();
        assert_eq!(pic.read(0x21), 0xfb);
        assert_eq!(pic.read(0xa1), 0xff);
        pulse(&mut pic, 0);
        assert!(!pic.has_interrupt(), "IRQ0 is masked");
        assert_eq!(pic.read(0x20), 0x01, "but latched in the IRR");
        pic.write(0x21, 0xfa);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x08);
    }

    #[test]
    fn icw_sequence_sets_the_vector_bases_and_clears_the_masks() {
        let mut pic = linux_pic(0x01);
        assert_eq!((pic.read(0x21), pic.read(0xa1)), (0, 0));
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x23);
        pulse(&mut pic, 14);
        pic.write(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x2e);
    }

    #[test]
    fn icw2_ignores_the_low_three_bits_of_the_base() {
        let mut pic = Pic::new();
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x37);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x01);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x31);
    }

    #[test]
    fn single_mode_skips_icw3_and_without_ic4_skips_icw4() {
        let mut pic = Pic::new();
        pic.write(0x20, 0x12); // single, no ICW4
        pic.write(0x21, 0x40);
        pic.write(0x21, 0x01); // OCW1 already
        assert_eq!(pic.read(0x21), 0x01);
        pulse(&mut pic, 0);
        assert!(!pic.has_interrupt());
        pic.write(0xa1, 0xfd); // the slave's IR1 (IRQ9, where IRQ2 goes)
        pulse(&mut pic, 2);
        assert_eq!(
            pic.acknowledge(),
            0x40 | 2,
            "without the cascade the master gives IR2's vector itself"
        );
    }

    #[test]
    fn icw1_resets_the_edge_sense_so_a_line_held_high_does_not_request() {
        let mut pic = linux_pic(0x01);
        pic.set_irq(irq(5), true);
        assert!(pic.has_interrupt());
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x20);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x01);
        assert_eq!(pic.read(0x20), 0, "IRR cleared");
        pic.set_irq(irq(5), true);
        assert!(!pic.has_interrupt(), "no new edge");
        pic.set_irq(irq(5), false);
        pic.set_irq(irq(5), true);
        assert!(pic.has_interrupt());
    }

    #[test]
    fn imr_masks_a_line_and_unmasking_delivers_the_latched_request() {
        let mut pic = linux_pic(0x01);
        pic.write(0x21, 0x01);
        pulse(&mut pic, 0);
        assert!(!pic.has_interrupt());
        assert_eq!(pic.read(0x20) & 1, 1);
        pic.write(0x21, 0x00);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x20);
    }

    #[test]
    fn edge_triggered_request_stays_latched_after_the_line_drops() {
        let mut pic = linux_pic(0x01);
        pic.set_irq(irq(6), true);
        pic.set_irq(irq(6), false);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x26);
        assert!(!pic.has_interrupt(), "the acknowledge consumed it");
    }

    #[test]
    fn edge_triggered_line_held_high_requests_once() {
        let mut pic = linux_pic(0x03); // auto-EOI: no ISR bit holds it back
        pic.set_irq(irq(6), true);
        assert_eq!(pic.acknowledge(), 0x26);
        pic.set_irq(irq(6), true);
        assert!(!pic.has_interrupt());
        pic.set_irq(irq(6), false);
        pic.set_irq(irq(6), true);
        assert!(pic.has_interrupt());
    }

    #[test]
    fn level_triggered_line_in_the_elcr_requests_while_high() {
        let mut pic = linux_pic(0x01);
        pic.write(0x4d0, 0x20); // IRQ5 level-triggered
        assert_eq!(pic.read(0x4d0), 0x20);
        pic.set_irq(irq(5), true);
        assert_eq!(pic.acknowledge(), 0x25);
        pic.write(0x20, 0x20);
        assert!(pic.has_interrupt(), "still high, so requested again");
        pic.set_irq(irq(5), false);
        assert!(!pic.has_interrupt(), "the request follows the line");
    }

    #[test]
    fn level_triggered_slave_line_that_drops_after_the_cascade_latched_is_a_spurious_irq15() {
        let mut pic = linux_pic(0x01);
        pic.write(0x4d1, 0x08); // IRQ11 level-triggered
        assert_eq!(pic.read(0x4d1), 0x08);
        pic.set_irq(irq(11), true);
        pic.set_irq(irq(11), false);
        assert!(
            pic.has_interrupt(),
            "the master latched the edge of the slave's INT on IR2"
        );
        assert_eq!(pic.acknowledge(), 0x2f);
    }

    #[test]
    fn elcr_reserved_bits_stay_clear() {
        let mut pic = Pic::new();
        pic.write(0x4d0, 0xff);
        pic.write(0x4d1, 0xff);
        assert_eq!((pic.read(0x4d0), pic.read(0x4d1)), (0xf8, 0xde));
    }

    #[test]
    fn ltim_makes_every_input_level_triggered() {
        let mut pic = Pic::new();
        pic.write(0x20, 0x19);
        pic.write(0x21, 0x20);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x01);
        pic.set_irq(irq(3), true);
        assert!(pic.has_interrupt());
        pic.set_irq(irq(3), false);
        assert!(!pic.has_interrupt());
    }

    #[test]
    fn level_request_that_drops_before_the_acknowledge_is_a_spurious_irq7() {
        let mut pic = linux_pic(0x01);
        pic.write(0x4d0, 0x20);
        pic.set_irq(irq(5), true);
        assert!(pic.has_interrupt());
        pic.set_irq(irq(5), false);
        assert_eq!(pic.acknowledge(), 0x27);
        assert_eq!(isr(&mut pic, 0x20), 0, "no ISR bit for a spurious IRQ7");
    }

    #[test]
    fn slave_request_gone_before_the_acknowledge_is_a_spurious_irq15() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 10);
        assert!(pic.has_interrupt());
        pic.write(0xa1, 0x04); // mask IRQ10: the slave drops INT, the master keeps IR2 latched
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x2f);
        assert_eq!(isr(&mut pic, 0xa0), 0, "the slave sets no ISR bit");
        assert_eq!(isr(&mut pic, 0x20), 0x04, "the master did acknowledge IR2");
    }

    #[test]
    fn acknowledge_with_nothing_pending_returns_the_spurious_vector() {
        let mut pic = linux_pic(0x01);
        assert!(!pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x27);
        assert_eq!(isr(&mut pic, 0x20), 0);
    }

    #[test]
    fn in_service_interrupt_holds_back_its_level_and_lower_ones_until_eoi() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x23);
        assert_eq!(isr(&mut pic, 0x20), 0x08);
        pulse(&mut pic, 3);
        pulse(&mut pic, 5);
        assert!(!pic.has_interrupt(), "same and lower priority wait");
        pulse(&mut pic, 1);
        assert!(pic.has_interrupt(), "a higher priority nests");
        assert_eq!(pic.acknowledge(), 0x21);
        assert_eq!(isr(&mut pic, 0x20), 0x0a);
        pic.write(0x20, 0x20); // non-specific EOI ends the highest: IRQ1
        assert_eq!(isr(&mut pic, 0x20), 0x08);
        assert!(!pic.has_interrupt());
        pic.write(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x23);
        pic.write(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x25);
    }

    #[test]
    fn specific_eoi_clears_the_named_level() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 4);
        pic.acknowledge();
        pulse(&mut pic, 2 + 8); // IRQ10 through the cascade, higher than IRQ4
        assert_eq!(pic.acknowledge(), 0x2a);
        assert_eq!(isr(&mut pic, 0x20), 0x14);
        pic.write(0x20, 0x64); // specific EOI, level 4
        assert_eq!(isr(&mut pic, 0x20), 0x04);
        pic.write(0xa0, 0x62);
        pic.write(0x20, 0x62);
        assert_eq!((isr(&mut pic, 0x20), isr(&mut pic, 0xa0)), (0, 0));
    }

    #[test]
    fn slave_interrupts_need_an_eoi_on_both_chips() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 8);
        assert_eq!(pic.acknowledge(), 0x28);
        pulse(&mut pic, 9);
        assert!(!pic.has_interrupt());
        pic.write(0xa0, 0x20);
        assert!(!pic.has_interrupt(), "the master still has IR2 in service");
        pic.write(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x29);
    }

    #[test]
    fn irq2_from_a_device_is_irq9_as_on_an_at() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 2);
        assert_eq!(pic.acknowledge(), 0x29);
    }

    #[test]
    fn auto_eoi_sets_no_in_service_bit() {
        let mut pic = linux_pic(0x03);
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), 0x20);
        assert_eq!(isr(&mut pic, 0x20), 0);
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), 0x20, "no EOI needed");
    }

    #[test]
    fn rotate_on_non_specific_eoi_makes_the_served_level_the_lowest() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x21);
        pic.write(0x20, 0xa0); // rotate on non-specific EOI: IRQ1 lowest, IRQ2 highest
        pulse(&mut pic, 0);
        pulse(&mut pic, 1);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x23);
        pic.write(0x20, 0xa0); // IRQ3 lowest now: order 4 5 6 7 0 1 2 3
        assert_eq!(pic.acknowledge(), 0x20);
        pic.write(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x21);
    }

    #[test]
    fn set_priority_and_rotate_on_specific_eoi_choose_the_lowest_level() {
        let mut pic = linux_pic(0x01);
        pic.write(0x20, 0xc5); // IRQ5 lowest: IRQ6 highest
        pulse(&mut pic, 0);
        pulse(&mut pic, 7);
        assert_eq!(pic.acknowledge(), 0x27);
        pic.write(0x20, 0xe7); // rotate on specific EOI of 7: IRQ0 highest again
        pulse(&mut pic, 7);
        assert_eq!(pic.acknowledge(), 0x20);
    }

    #[test]
    fn rotate_in_auto_eoi_mode_rotates_at_each_acknowledge() {
        let mut pic = linux_pic(0x03);
        pic.write(0x20, 0x80);
        pulse(&mut pic, 0);
        pulse(&mut pic, 4);
        assert_eq!(pic.acknowledge(), 0x20);
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), 0x24, "IRQ0 became the lowest");
        pic.write(0x20, 0x00); // clear rotate in auto-EOI
        assert_eq!(pic.acknowledge(), 0x20);
    }

    #[test]
    fn ocw3_selects_irr_or_isr_for_reading() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 1);
        pulse(&mut pic, 6);
        assert_eq!(pic.read(0x20), 0x42, "IRR by default");
        pic.acknowledge();
        pic.write(0x20, 0x0b);
        assert_eq!(pic.read(0x20), 0x02, "ISR");
        assert_eq!(pic.read(0x20), 0x02, "stays selected");
        pic.write(0x20, 0x0a);
        assert_eq!(pic.read(0x20), 0x40, "IRR again");
        pic.write(0x20, 0x08); // RR clear: no change
        assert_eq!(pic.read(0x20), 0x40);
        assert_eq!(pic.read(0x21), 0x00, "the data port reads the IMR");
    }

    #[test]
    fn poll_acknowledges_the_highest_request_and_reads_its_level() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 6);
        pulse(&mut pic, 3);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), 0x83);
        assert_eq!(isr(&mut pic, 0x20), 0x08);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), 0x00, "IRQ6 is held back by IRQ3");
        pic.write(0x20, 0x20);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x21), 0x86, "either port answers a poll");
        assert_eq!(pic.read(0x21), 0x00, "then the IMR again");
    }

    #[test]
    fn poll_ignores_masked_requests() {
        let mut pic = linux_pic(0x01);
        pic.write(0x21, 0x01);
        pulse(&mut pic, 0);
        pic.write(0x20, 0x0c);
        assert_eq!(pic.read(0x20), 0x00);
    }

    #[test]
    fn special_mask_mode_lets_lower_levels_through_a_masked_level_in_service() {
        let mut pic = linux_pic(0x01);
        pulse(&mut pic, 2 + 1); // IRQ3
        assert_eq!(pic.acknowledge(), 0x23);
        pulse(&mut pic, 5);
        assert!(!pic.has_interrupt());
        pic.write(0x21, 0x08); // mask IRQ3
        pic.write(0x20, 0x68); // set special mask mode
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), 0x25);
        pic.write(0x20, 0x48); // reset special mask mode
        pulse(&mut pic, 7);
        assert!(
            !pic.has_interrupt(),
            "IRQ3 and IRQ5 in service hold IRQ7 back"
        );
    }

    #[test]
    fn special_fully_nested_mode_lets_a_higher_slave_request_nest() {
        let mut pic = linux_pic(0x01);
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x20);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x11); // SFNM on the master
        pulse(&mut pic, 12);
        assert_eq!(pic.acknowledge(), 0x2c);
        pulse(&mut pic, 8);
        assert!(pic.has_interrupt(), "IRQ8 beats IRQ12 on the slave");
        assert_eq!(pic.acknowledge(), 0x28);

        let mut plain = linux_pic(0x01);
        pulse(&mut plain, 12);
        plain.acknowledge();
        pulse(&mut plain, 8);
        assert!(
            !plain.has_interrupt(),
            "without SFNM IR2 in service blocks it"
        );
    }

    #[test]
    fn line_enabled_follows_both_masks_and_the_cascade() {
        let mut pic = linux_pic(0x01);
        assert!(pic.line_enabled(Irq::PIT));
        assert!(pic.line_enabled(Irq::RTC));
        pic.write(0x21, 0x04);
        assert!(!pic.line_enabled(Irq::RTC), "cascade masked");
        assert!(pic.line_enabled(Irq::PIT));
        pic.write(0x21, 0x01);
        assert!(!pic.line_enabled(Irq::PIT));
        pic.write(0xa1, 0x01);
        assert!(!pic.line_enabled(Irq::RTC));
        assert!(pic.line_enabled(Irq::MOUSE));
    }

    #[test]
    fn irq_numbers_past_15_are_refused() {
        assert_eq!(Irq::new(16), Err(PicError::NoSuchLine(16)));
        assert_eq!(Irq::new(15).map(Irq::number), Ok(15));
    }

    #[test]
    fn shared_pic_tells_the_listener_when_intr_rises_and_only_then() {
        let pic = SharedPic::new(linux_pic(0x01));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        pic.set_intr_listener(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let line = pic.line(Irq::COM1);
        line.pulse();
        assert!(pic.intr());
        line.pulse();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "INTR was already up");
        assert_eq!(pic.acknowledge_if_pending(), Some(0x24));
        assert!(!pic.intr());
        line.pulse();
        assert_eq!(pic.acknowledge_if_pending(), None, "IRQ4 in service");
        pic.with(|p| p.write(0x20, 0x20));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "EOI let the second one up");
    }

    #[test]
    fn the_line_mirror_sees_every_level_devices_drive_whatever_the_masks() {
        let pic = SharedPic::new(Pic::new());
        let seen = super::super::test_support::mirrored_levels(&pic);
        pic.line(Irq::COM1).set_level(true);
        pic.line(Irq::COM1).set_level(false);
        pic.line(Irq::PIT).pulse();
        assert_eq!(
            *seen.lock().unwrap(),
            [(4, true), (4, false), (0, true), (0, false)]
        );
        let rtc = pic.line(Irq::RTC);
        assert_eq!(pic.armed_lines(), 0);
        rtc.set_armed(true);
        assert_eq!(pic.armed_lines(), 1 << 8, "armed whether or not enabled");
    }

    #[test]
    fn armed_lines_count_only_while_enabled_and_armed() {
        let pic = SharedPic::new(Pic::new());
        let rtc = pic.line(Irq::RTC);
        rtc.set_armed(true);
        assert!(!pic.armed_line_enabled(), "IRQ8 masked at reset");
        pic.with(|p| p.write(0xa1, 0xfe));
        assert!(pic.armed_line_enabled());
        rtc.set_armed(false);
        assert!(!pic.armed_line_enabled());
        rtc.set_armed(true);
        rtc.set_armed(true);
        drop(rtc);
        assert!(!pic.armed_line_enabled(), "dropping disarms once");
    }

    #[test]
    fn ports_on_the_bus_reach_the_pic() {
        let mut bus =
            IoBus::with_serial_writer(Box::new(crate::devices::test_support::Captured::default()))
                .unwrap();
        let pic = bus.pic();
        bus.write(0x21, 1, 0x5b);
        bus.write(0xa1, 1, 0xa5);
        bus.write(0x4d1, 1, 0x08);
        assert_eq!(bus.read(0x21, 1), 0x5b);
        assert_eq!(bus.read(0xa1, 1), 0xa5);
        assert_eq!(bus.read(0x4d0, 2), 0x0800);
        assert!(!pic.line_enabled(Irq::PIT));
        assert!(bus.claims(0x20) && bus.claims(0xa0) && bus.claims(0x4d1));
    }
}
