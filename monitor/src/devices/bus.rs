//! The port→device dispatch and the unclaimed-port counters.
//!
//! Invariant: `devices` is sorted by base port and no two ranges overlap, so
//! a binary search finds the only device that can own a port.

use super::acpi_pm::{self, Pm1, PmTimer};
use super::debug_exit::DebugExit;
use super::fw_cfg::{self, FwCfg};
use super::i8042::{I8042Port, I8042};
use super::pci::{self, PciHost};
use super::pic::{Irq, Pic, SharedPic};
use super::pit::{HostMonotonicClock, MonotonicClock, Pit, SharedPit};
use super::platform::PcPlatform;
use super::rtc::{CmosBattery, NmiMask, Rtc};
use super::sink::open_serial_sink;
use super::uart::{IrqLine, Uart, UartInput};
use super::{size_mask, ConsoleError, DeviceError, IoOutcome, PortDevice};
use crate::config::SerialBackend;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;
/// Ports COM1 occupies.
const COM1_PORTS: u16 = 8;
/// The isa-debug-exit base port (QEMU `-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_BASE: u16 = 0xf4;
/// Ports isa-debug-exit occupies.
const DEBUG_EXIT_PORTS: u16 = 4;
/// The RTC's index port (the data port follows).
pub const RTC_BASE: u16 = 0x70;
/// The i8042's data port.
pub const I8042_DATA: u16 = 0x60;
/// The i8042's status and command port.
pub const I8042_COMMAND: u16 = 0x64;
/// PCI CONFIG_ADDRESS (CONFIG_DATA is at `0xcfc`).
pub const PCI_CONFIG_BASE: u16 = 0xcf8;

/// A device and the ports it owns.
struct Mapping {
    base: u16,
    /// Number of ports, at least 1; `base + len <= 0x10000`.
    len: u32,
    device: Box<dyn PortDevice>,
}

impl Mapping {
    fn contains(&self, port: u16) -> bool {
        port >= self.base && u32::from(port - self.base) < self.len
    }
}

/// Unclaimed-port access counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    reads: u64,
    writes: u64,
}

/// The port-I/O bus of the machine.
pub struct IoBus {
    devices: Vec<Mapping>,
    unclaimed: BTreeMap<u16, Counts>,
    com1_irq: IrqLine,
    com1_input: UartInput,
    com1_lost_bytes: Arc<AtomicU64>,
    /// COM1's backend, for messages; `None` for a writer given by the embedder.
    serial: Option<SerialBackend>,
    /// Why the last [`IoOutcome::ConsoleClosed`] was returned.
    console_error: Option<ConsoleError>,
    /// The NMI mask bit of port 0x70 (the RTC's, once there is one).
    nmi_mask: NmiMask,
    /// The 8259A pair (ports 0x20-0x21, 0xa0-0xa1, ELCR 0x4d0-0x4d1).
    pic: SharedPic,
    /// The 8254 (ports 0x40-0x43, 0x61).
    pit: SharedPit,
}

impl std::fmt::Debug for IoBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let devices: Vec<_> = self
            .devices
            .iter()
            .map(|m| (m.device.name(), m.base, m.len))
            .collect();
        f.debug_struct("IoBus")
            .field("devices", &devices)
            .field("unclaimed", &self.unclaimed)
            .finish()
    }
}

impl IoBus {
    /// The standard bus: COM1 writing to `serial`, and isa-debug-exit.
    pub fn new(serial: &SerialBackend) -> Result<IoBus, DeviceError> {
        Self::build(open_serial_sink(serial)?, Some(serial.clone()))
    }

    /// The standard bus with COM1 writing to `sink`, the backend `serial`
    /// opened once for the whole run (the machines before and after a
    /// reset write to it too).
    pub fn with_shared_sink(
        sink: super::SharedSink,
        serial: &SerialBackend,
    ) -> Result<IoBus, DeviceError> {
        Self::build(Box::new(sink), Some(serial.clone()))
    }

    /// The standard bus with COM1 writing to `out`.
    pub fn with_serial_writer(out: Box<dyn Write + Send>) -> Result<IoBus, DeviceError> {
        Self::build(out, None)
    }

    fn build(
        out: Box<dyn Write + Send>,
        serial: Option<SerialBackend>,
    ) -> Result<IoBus, DeviceError> {
        let uart = Uart::new(out);
        let mut bus = IoBus {
            devices: Vec::new(),
            unclaimed: BTreeMap::new(),
            com1_irq: uart.irq_line(),
            com1_input: uart.input(),
            com1_lost_bytes: uart.lost_bytes_counter(),
            serial,
            console_error: None,
            nmi_mask: NmiMask::default(),
            pic: SharedPic::new(Pic::new()),
            pit: SharedPit::new(Pit::new(Arc::new(HostMonotonicClock::new()))),
        };
        bus.register(COM1_BASE, COM1_PORTS, Box::new(uart))?;
        bus.register(DEBUG_EXIT_BASE, DEBUG_EXIT_PORTS, Box::new(DebugExit))?;
        bus.com1_irq.route_to(bus.pic.line(Irq::COM1));
        bus.pic.clone().register(&mut bus)?;
        bus.pit.clone().register(&mut bus)?;
        Ok(bus)
    }

    /// Adds `device` at ports `base..base + len`.
    pub fn register(
        &mut self,
        base: u16,
        len: u16,
        device: Box<dyn PortDevice>,
    ) -> Result<(), DeviceError> {
        let name = device.name();
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(DeviceError::BadPortRange {
                name,
                base,
                len: u32::from(len),
            });
        }
        let at = self.devices.partition_point(|m| m.base < base);
        let neighbours = [at.checked_sub(1), Some(at)];
        for other in neighbours
            .into_iter()
            .flatten()
            .filter_map(|i| self.devices.get(i))
        {
            if u32::from(other.base) < end && u32::from(base) < u32::from(other.base) + other.len {
                return Err(DeviceError::PortsInUse {
                    name,
                    base,
                    end,
                    other: other.device.name(),
                });
            }
        }
        self.devices.insert(
            at,
            Mapping {
                base,
                len: u32::from(len),
                device,
            },
        );
        Ok(())
    }

    /// Adds the PC platform devices describing `platform`: the RTC and
    /// CMOS at 0x70-0x71, the i8042 at 0x60 and 0x64, PCI configuration
    /// mechanism #1 at 0xcf8-0xcff, fw_cfg at 0x510-0x511.
    pub fn add_pc_platform(&mut self, platform: PcPlatform) -> Result<(), DeviceError> {
        self.add_pc_platform_with_battery(platform, CmosBattery::default())
    }

    /// [`IoBus::add_pc_platform`] with a CMOS whose battery-backed bytes
    /// and time come from (and are kept in) `cmos_battery`: the battery of
    /// the machine a guest reset ended, for the machine that follows it.
    pub fn add_pc_platform_with_battery(
        &mut self,
        platform: PcPlatform,
        cmos_battery: CmosBattery,
    ) -> Result<(), DeviceError> {
        let rtc = Rtc::with_battery(
            platform.clock,
            platform.ram_bytes,
            self.nmi_mask.clone(),
            cmos_battery,
        );
        self.register(RTC_BASE, 2, Box::new(rtc))?;
        let (data, command) = I8042Port::pair_with_irqs(I8042::new(), &self.pic);
        self.register(I8042_DATA, 1, Box::new(data))?;
        self.register(I8042_COMMAND, 1, Box::new(command))?;
        self.register(PCI_CONFIG_BASE, pci::PORTS, Box::new(PciHost::new()))?;
        let fw_cfg = FwCfg::new(platform.ram_bytes, platform.cpus);
        self.register(fw_cfg::SELECTOR_PORT, fw_cfg::PORTS, Box::new(fw_cfg))?;
        self.add_acpi_pm()
    }

    /// The ACPI fixed hardware the FADT names: the PM1a event and control
    /// blocks at 0x600-0x605 (SCI on IRQ 9) and the PM timer at
    /// 0x608-0x60b, both on one monotonic clock.
    fn add_acpi_pm(&mut self) -> Result<(), DeviceError> {
        let clock: Arc<dyn MonotonicClock> = Arc::new(HostMonotonicClock::new());
        let pm1 = Pm1::new(clock.clone(), Some(self.pic.line(Irq::SCI)));
        self.register(acpi_pm::PM_BASE, acpi_pm::PM1_PORTS, Box::new(pm1))?;
        let timer = PmTimer::new(clock);
        self.register(acpi_pm::PM_TMR_PORT, acpi_pm::PM_TMR_PORTS, Box::new(timer))
    }

    /// The NMI mask bit (bit 7 of what the guest last wrote to port
    /// 0x70), as a handle that follows later writes.
    pub fn nmi_mask(&self) -> NmiMask {
        self.nmi_mask.clone()
    }

    /// The PIC pair, which COM1 (IRQ 4) and the PIT (IRQ 0) drive.
    pub fn pic(&self) -> SharedPic {
        self.pic.clone()
    }

    /// The PIT.
    pub fn pit(&self) -> SharedPit {
        self.pit.clone()
    }

    /// COM1's interrupt line (IRQ 4, routed to the PIC), latched until taken.
    pub fn com1_irq(&self) -> IrqLine {
        self.com1_irq.clone()
    }

    /// What feeds COM1's receiver (the console's input), from any thread.
    pub fn com1_input(&self) -> UartInput {
        self.com1_input.clone()
    }

    /// Bytes COM1's backend refused for a passing reason (`EAGAIN`) and the
    /// guest therefore lost, so far.
    pub fn com1_lost_bytes(&self) -> u64 {
        self.com1_lost_bytes.load(Ordering::Relaxed)
    }

    /// Why the last write that returned [`IoOutcome::ConsoleClosed`] did so.
    pub fn console_error(&self) -> Option<&ConsoleError> {
        self.console_error.as_ref()
    }

    /// A guest `in` of `size` bytes (1, 2 or 4; other values count as 4) at `port`.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        let size = normalized(size);
        match self.device_index(port) {
            Some(i) if size <= self.devices[i].device.max_access_size() => {
                let mapping = &mut self.devices[i];
                mapping.device.read(port - mapping.base, size) & size_mask(size)
            }
            Some(_) => self.read_bytewise(port, size),
            None if size == 1 || !self.any_device_within(port, size) => {
                self.unclaimed.entry(port).or_default().reads += 1;
                size_mask(size)
            }
            None => self.read_bytewise(port, size),
        }
    }

    /// A guest `out` of `size` bytes (1, 2 or 4; other values count as 4) of `value` at `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) -> IoOutcome {
        let size = normalized(size);
        let value = value & size_mask(size);
        match self.device_index(port) {
            Some(i) if size <= self.devices[i].device.max_access_size() => {
                let mapping = &mut self.devices[i];
                let outcome = mapping.device.write(port - mapping.base, size, value);
                if outcome == IoOutcome::ConsoleClosed {
                    self.record_console_error(i);
                }
                outcome
            }
            Some(_) => self.write_bytewise(port, size, value),
            None if size == 1 || !self.any_device_within(port, size) => {
                self.unclaimed.entry(port).or_default().writes += 1;
                IoOutcome::Continue
            }
            None => self.write_bytewise(port, size, value),
        }
    }

    /// Whether a device answers at `port`.
    pub fn claims(&self, port: u16) -> bool {
        self.device_index(port).is_some()
    }

    /// Ports accessed without a device, in port order, as `(port, reads, writes)`.
    pub fn unclaimed_counts(&self) -> impl Iterator<Item = (u16, u64, u64)> + '_ {
        self.unclaimed
            .iter()
            .map(|(&port, c)| (port, c.reads, c.writes))
    }

    /// Keeps why device `index` closed the console, naming the backend.
    fn record_console_error(&mut self, index: usize) {
        if let Some(error) = self.devices[index].device.take_output_error() {
            self.console_error = Some(ConsoleError::new(self.serial.as_ref(), error));
        }
    }

    /// The ports each device claims, as (first port, count), in port
    /// order.
    pub fn claimed_ranges(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.devices.iter().map(|m| (m.base, m.len))
    }

    fn device_index(&self, port: u16) -> Option<usize> {
        let after = self.devices.partition_point(|m| m.base <= port);
        after
            .checked_sub(1)
            .filter(|&i| self.devices[i].contains(port))
    }

    /// Whether a device owns any of the ports `port + 1 .. port + size`.
    fn any_device_within(&self, port: u16, size: u8) -> bool {
        (1..u16::from(size)).any(|i| self.device_index(port.wrapping_add(i)).is_some())
    }

    /// Splits a wide read into byte reads at consecutive ports, little-endian.
    fn read_bytewise(&mut self, port: u16, size: u8) -> u32 {
        (0..size).fold(0, |value, i| {
            let byte = self.read(port.wrapping_add(u16::from(i)), 1);
            value | byte << (8 * u32::from(i))
        })
    }

    /// Splits a wide write into byte writes; the first outcome that stops
    /// the guest ends it.
    fn write_bytewise(&mut self, port: u16, size: u8, value: u32) -> IoOutcome {
        for i in 0..size {
            let byte = (value >> (8 * u32::from(i))) & 0xff;
            match self.write(port.wrapping_add(u16::from(i)), 1, byte) {
                IoOutcome::Continue => {}
                stop => return stop,
            }
        }
        IoOutcome::Continue
    }
}

fn normalized(size: u8) -> u8 {
    match size {
        1 | 2 => size,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use crate::devices::test_support::Captured;

    /// Remembers its last access and answers reads with a fixed value.
    struct Probe {
        last: Arc<Mutex<Option<(u16, u8, u32)>>>,
    }

    impl PortDevice for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn read(&mut self, offset: u16, size: u8) -> u32 {
            *self.last.lock().unwrap() = Some((offset, size, 0));
            0x1234_5678
        }
        fn write(&mut self, offset: u16, size: u8, value: u32) -> IoOutcome {
            *self.last.lock().unwrap() = Some((offset, size, value));
            IoOutcome::Continue
        }
    }

    fn bus() -> (IoBus, Captured) {
        let out = Captured::default();
        (
            IoBus::with_serial_writer(Box::new(out.clone())).unwrap(),
            out,
        )
    }

    #[test]
    fn com1_output_reaches_the_serial_writer() {
        let (mut bus, out) = bus();
        for &b in b"ok\n" {
            assert_eq!(bus.write(0x3f8, 1, u32::from(b)), IoOutcome::Continue);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"ok\n");
    }

    /// A backend that refuses every byte with `kind`.
    struct Refusing(std::io::ErrorKind);

    impl Write for Refusing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_a_blocked_backend_refuses_are_counted_on_the_bus() {
        let mut bus =
            IoBus::with_serial_writer(Box::new(Refusing(std::io::ErrorKind::WouldBlock))).unwrap();
        assert_eq!(bus.write(0x3f8, 1, 0x41), IoOutcome::Continue);
        assert_eq!(bus.write(0x3f8, 1, 0x42), IoOutcome::Continue);
        assert_eq!(bus.com1_lost_bytes(), 2);
        assert!(bus.console_error().is_none());
    }

    #[test]
    fn closed_backend_closes_the_console_with_its_error() {
        let mut bus =
            IoBus::with_serial_writer(Box::new(Refusing(std::io::ErrorKind::BrokenPipe))).unwrap();
        assert!(bus.console_error().is_none());
        assert_eq!(bus.write(0x3f8, 1, 0x41), IoOutcome::ConsoleClosed);
        assert!(
            matches!(bus.console_error(), Some(ConsoleError::Writer(e)) if e.kind() == std::io::ErrorKind::BrokenPipe),
            "{:?}",
            bus.console_error()
        );
    }

    #[test]
    fn wide_write_to_a_closed_console_stops_at_the_first_byte() {
        let mut bus =
            IoBus::with_serial_writer(Box::new(Refusing(std::io::ErrorKind::BrokenPipe))).unwrap();
        assert_eq!(bus.write(0x3f8, 4, 0x4443_4241), IoOutcome::ConsoleClosed);
    }

    #[test]
    fn com1_line_status_reports_an_empty_transmitter() {
        let (mut bus, _) = bus();
        assert_eq!(bus.read(0x3fd, 1) & 0x60, 0x60);
    }

    #[test]
    fn debug_exit_byte_write_reports_the_value() {
        let (mut bus, _) = bus();
        assert_eq!(bus.write(0xf4, 1, 0x10), IoOutcome::GuestExit(0x10));
        assert_eq!(bus.write(0xf4, 1, 0), IoOutcome::GuestExit(0));
    }

    #[test]
    fn debug_exit_accepts_word_and_dword_writes_with_the_full_value() {
        let (mut bus, _) = bus();
        assert_eq!(bus.write(0xf4, 2, 0x0102), IoOutcome::GuestExit(0x0102));
        assert_eq!(
            bus.write(0xf4, 4, 0x0001_0000),
            IoOutcome::GuestExit(0x0001_0000)
        );
    }

    #[test]
    fn debug_exit_covers_its_four_ports() {
        let (mut bus, _) = bus();
        assert_eq!(bus.write(0xf7, 1, 3), IoOutcome::GuestExit(3));
        assert_eq!(bus.write(0xf8, 1, 3), IoOutcome::Continue);
    }

    #[test]
    fn write_value_is_masked_to_the_access_size() {
        let (mut bus, _) = bus();
        assert_eq!(bus.write(0xf4, 1, 0xff05), IoOutcome::GuestExit(0x05));
    }

    #[test]
    fn unclaimed_reads_return_all_ones_by_size() {
        let (mut bus, _) = bus();
        assert_eq!(bus.read(0x80, 1), 0xff);
        assert_eq!(bus.read(0x80, 2), 0xffff);
        assert_eq!(bus.read(0x80, 4), 0xffff_ffff);
    }

    #[test]
    fn unclaimed_accesses_are_counted_per_port() {
        let (mut bus, _) = bus();
        bus.read(0x201, 1);
        bus.read(0x201, 1);
        assert_eq!(bus.write(0x80, 1, 0x55), IoOutcome::Continue);
        bus.write(0x201, 1, 0);
        let counts: Vec<_> = bus.unclaimed_counts().collect();
        assert_eq!(counts, vec![(0x80, 0, 1), (0x201, 2, 1)]);
    }

    #[test]
    fn claimed_accesses_are_not_counted_as_unclaimed() {
        let (mut bus, _) = bus();
        bus.read(0x3fd, 1);
        bus.write(0x3f8, 1, b'x'.into());
        assert_eq!(bus.unclaimed_counts().count(), 0);
    }

    #[test]
    fn wide_uart_read_is_split_into_byte_reads() {
        let (mut bus, _) = bus();
        bus.write(0x3ff, 1, 0xab); // scratch
        bus.write(0x3fb, 1, 0x03); // LCR
        let word = bus.read(0x3fe, 2);
        assert_eq!(word >> 8, 0xab);
        assert_eq!(bus.read(0x3fb, 1), 0x03);
    }

    #[test]
    fn wide_access_straddling_a_device_edge_splits_per_port() {
        let (mut bus, _) = bus();
        bus.write(0x3f8 + 7, 1, 0x5a); // scratch
        let value = bus.read(0x3ff, 2);
        assert_eq!(value, 0xff5a);
        assert_eq!(
            bus.unclaimed_counts().collect::<Vec<_>>(),
            vec![(0x400, 1, 0)]
        );
        let value = bus.read(0x3f6, 4);
        assert_eq!(value & 0xffff, 0xffff);
    }

    #[test]
    fn registered_device_gets_offsets_relative_to_its_base() {
        let (mut bus, _) = bus();
        let last = Arc::new(Mutex::new(None));
        bus.register(0x70, 2, Box::new(Probe { last: last.clone() }))
            .unwrap();
        bus.write(0x71, 2, 0xbeef);
        assert_eq!(*last.lock().unwrap(), Some((1, 2, 0xbeef)));
        assert_eq!(bus.read(0x70, 1), 0x78);
    }

    #[test]
    fn overlapping_registration_is_refused() {
        let (mut bus, _) = bus();
        let probe = || {
            Box::new(Probe {
                last: Arc::default(),
            })
        };
        let err = bus.register(0x3f0, 9, probe()).unwrap_err();
        assert!(
            matches!(err, DeviceError::PortsInUse { other: "com1", .. }),
            "{err}"
        );
        assert!(bus.register(0x3f0, 8, probe()).is_ok());
        assert!(matches!(
            bus.register(0xf6, 1, probe()),
            Err(DeviceError::PortsInUse { .. })
        ));
    }

    #[test]
    fn empty_or_wrapping_ranges_are_refused() {
        let (mut bus, _) = bus();
        let probe = || {
            Box::new(Probe {
                last: Arc::default(),
            })
        };
        assert!(matches!(
            bus.register(0x10, 0, probe()),
            Err(DeviceError::BadPortRange { .. })
        ));
        assert!(matches!(
            bus.register(0xfffe, 4, probe()),
            Err(DeviceError::BadPortRange { .. })
        ));
        assert!(bus.register(0xfffc, 4, probe()).is_ok());
    }

    #[test]
    fn com1_irq_latches_when_the_transmitter_interrupt_is_enabled() {
        let (mut bus, _) = bus();
        let irq = bus.com1_irq();
        assert!(!irq.take());
        bus.write(0x3f9, 1, 0x02); // IER: THR empty
        assert!(irq.take());
        assert!(!irq.take());
        bus.write(0x3f8, 1, b'a'.into());
        assert!(
            !irq.is_raised(),
            "THRE was not acknowledged, so no new edge"
        );
        bus.read(0x3fa, 1); // IIR read acknowledges
        bus.write(0x3f8, 1, b'b'.into());
        assert!(irq.take());
    }
}
