//! COM1: a 16550A UART, the register model of `vm_superio::Serial`, plus an
//! interrupt line that latches.
//!
//! Invariants: output bytes go to the sink in the order the guest writes
//! them and the sink is flushed after each byte (by `vm_superio`). A sink
//! error that may pass (`EAGAIN`, `EINTR`) loses that byte (counted) and the
//! guest goes on; any other error (`EPIPE`: the reader went away, `ENOSPC`:
//! the device is full, a socket peer that closed) means the console is gone,
//! and the write returns [`IoOutcome::ConsoleClosed`] so that the machine
//! stops the guest, as a closed console would.
//!
//! Input: bytes given to a [`UartInput`] (the machine's standard-input
//! reader, from its own thread) wait in a backlog of unbounded size and
//! move into the receive FIFO (64 bytes, `vm_superio`'s) as it has room: at once, and after
//! every guest read of RBR. Nothing is dropped and the order is kept; each
//! move into the FIFO raises the received-data interrupt when the guest
//! enabled it (IER bit 0), as `vm_superio` does.
//!
//! Interrupts: each interrupt the UART signals (an event of
//! `vm_superio`) latches the [`IrqLine`] and, once the line is routed to
//! the PIC ([`IrqLine::route_to`], IRQ4 on the bus), is one edge on that
//! PIC input. MCR's OUT2, which gates the IRQ on a PC, is not modelled.

use super::pic::PicLine;
use super::{IoOutcome, PortDevice};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};

/// An interrupt request line that stays raised until someone takes it,
/// and sends an edge to the PIC input it is routed to.
///
/// Clones share the line: the UART raises it, tests (or a poller) take it.
#[derive(Clone, Debug, Default)]
pub struct IrqLine {
    raised: Arc<AtomicBool>,
    route: Arc<OnceLock<PicLine>>,
}

impl IrqLine {
    /// Raises the line: latches it and pulses the PIC input it is routed to.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        if let Some(line) = self.route.get() {
            line.pulse();
        }
    }

    /// Sends every later [`IrqLine::raise`] to `line` as an edge (for all
    /// clones); a line already routed keeps its first route.
    pub fn route_to(&self, line: PicLine) {
        let _ = self.route.set(line);
    }

    /// Whether the line is raised, leaving it as it is.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Whether the line was raised; lowers it.
    pub fn take(&self) -> bool {
        self.raised.swap(false, Ordering::SeqCst)
    }
}

impl Trigger for IrqLine {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.raise();
        Ok(())
    }
}

/// The UART's output sink.
type Sink = Box<dyn Write + Send>;

/// The register model and the input backlog, shared by the bus (through
/// [`Uart`]) and the input source (through [`UartInput`]).
struct UartState {
    serial: Serial<IrqLine, NoEvents, Sink>,
    /// Received bytes the FIFO has no room for yet, oldest first.
    backlog: VecDeque<u8>,
    /// The sink error behind the last [`IoOutcome::ConsoleClosed`].
    output_error: Option<std::io::Error>,
}

impl UartState {
    /// Moves backlog bytes into the receive FIFO while it has room.
    fn fill_fifo(&mut self) {
        while !self.backlog.is_empty() && self.serial.fifo_capacity() > 0 {
            let (front, _) = self.backlog.as_slices();
            match self.serial.enqueue_raw_bytes(front) {
                Ok(moved) => {
                    self.backlog.drain(..moved);
                }
                Err(SerialError::Trigger(never)) => match never {},
                // Loopback mode takes no input, and a full FIFO no more.
                Err(_) => break,
            }
        }
    }
}

/// A 16550A UART on eight consecutive ports.
pub struct Uart {
    state: Arc<Mutex<UartState>>,
    irq: IrqLine,
    lost_bytes: Arc<AtomicU64>,
}

/// What feeds the UART's receiver: bytes sent here reach the guest in
/// order, through the receive FIFO. Usable from any thread.
#[derive(Clone)]
pub struct UartInput {
    state: Arc<Mutex<UartState>>,
}

impl UartInput {
    /// Queues `bytes` for the guest and fills the FIFO as far as it goes.
    pub fn send(&self, bytes: &[u8]) {
        let mut state = lock(&self.state);
        state.backlog.extend(bytes);
        state.fill_fifo();
    }

    /// Bytes sent that have not reached the FIFO yet.
    pub fn backlog(&self) -> usize {
        lock(&self.state).backlog.len()
    }
}

fn lock(state: &Mutex<UartState>) -> MutexGuard<'_, UartState> {
    // The registers stay consistent even if a holder panicked.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Uart {
    /// A UART in its reset state whose transmitted bytes go to `out`.
    pub fn new(out: Sink) -> Uart {
        let irq = IrqLine::default();
        Uart {
            state: Arc::new(Mutex::new(UartState {
                serial: Serial::new(irq.clone(), out),
                backlog: VecDeque::new(),
                output_error: None,
            })),
            irq,
            lost_bytes: Arc::default(),
        }
    }

    /// The UART's interrupt line.
    pub fn irq_line(&self) -> IrqLine {
        self.irq.clone()
    }

    /// The handle that feeds the receiver.
    pub fn input(&self) -> UartInput {
        UartInput {
            state: Arc::clone(&self.state),
        }
    }

    /// Bytes a passing sink error (`EAGAIN`, `EINTR`) lost so far.
    pub fn lost_bytes(&self) -> u64 {
        self.lost_bytes.load(Ordering::Relaxed)
    }

    /// A shared view of the lost-byte counter, readable after the UART is
    /// handed to the bus.
    pub fn lost_bytes_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.lost_bytes)
    }
}

impl PortDevice for Uart {
    fn name(&self) -> &'static str {
        "com1"
    }

    fn max_access_size(&self) -> u8 {
        1
    }

    fn read(&mut self, offset: u16, _size: u8) -> u32 {
        let Some(r) = register(offset) else {
            return 0xff;
        };
        let mut state = lock(&self.state);
        let value = state.serial.read(r);
        if r == RBR {
            state.fill_fifo();
        }
        u32::from(value)
    }

    fn write(&mut self, offset: u16, _size: u8, value: u32) -> IoOutcome {
        let Some(r) = register(offset) else {
            return IoOutcome::Continue;
        };
        let mut state = lock(&self.state);
        match state.serial.write(r, value as u8) {
            Ok(()) | Err(SerialError::FullFifo) => IoOutcome::Continue,
            Err(SerialError::IOError(error)) if may_pass(&error) => {
                self.lost_bytes.fetch_add(1, Ordering::Relaxed);
                IoOutcome::Continue
            }
            Err(SerialError::IOError(error)) => {
                state.output_error = Some(error);
                IoOutcome::ConsoleClosed
            }
            Err(SerialError::Trigger(never)) => match never {},
        }
    }

    fn take_output_error(&mut self) -> Option<std::io::Error> {
        lock(&self.state).output_error.take()
    }
}

/// Whether a sink error may pass, so that later bytes can still be written.
fn may_pass(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// The receive buffer register (with DLAB clear; with DLAB set, a read
/// there is the divisor latch and leaves the FIFO alone, so refilling after
/// it is harmless).
const RBR: u8 = 0;

/// The register number for a port offset, if the UART has it.
fn register(offset: u16) -> Option<u8> {
    u8::try_from(offset).ok().filter(|&r| r < 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u16 = 0;
    const DLL: u16 = 0;
    const DLM: u16 = 1;
    const IER: u16 = 1;
    const LCR: u16 = 3;
    const LSR: u16 = 5;
    const SCR: u16 = 7;
    const DLAB: u32 = 0x80;

    use crate::devices::test_support::Captured;

    /// A sink that refuses every byte with `kind`.
    struct Refusing(std::io::ErrorKind);

    impl Write for Refusing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(self.0))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink that refuses every byte with the host error `errno`.
    struct FailingWithErrno(i32);

    impl Write for FailingWithErrno {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(self.0))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (Uart, Captured) {
        let out = Captured::default();
        (Uart::new(Box::new(out.clone())), out)
    }

    #[test]
    fn line_status_says_transmitter_empty_and_idle() {
        let (mut uart, _) = uart();
        let lsr = uart.read(LSR, 1);
        assert_eq!(lsr & 0x20, 0x20, "THR empty");
        assert_eq!(lsr & 0x40, 0x40, "transmitter idle");
        assert_eq!(lsr & 0x01, 0, "no received data");
    }

    #[test]
    fn transmitted_bytes_reach_the_sink_in_order() {
        let (mut uart, out) = uart();
        for &b in b"Hello\r\n" {
            assert_eq!(uart.write(THR, 1, u32::from(b)), IoOutcome::Continue);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"Hello\r\n");
    }

    #[test]
    fn divisor_latch_round_trips_while_dlab_is_set() {
        let (mut uart, out) = uart();
        uart.write(LCR, 1, DLAB | 0x03);
        uart.write(DLL, 1, 0x01);
        uart.write(DLM, 1, 0x00);
        assert_eq!((uart.read(DLL, 1), uart.read(DLM, 1)), (0x01, 0x00));
        uart.write(LCR, 1, 0x03);
        assert_eq!(uart.read(IER, 1), 0, "IER is back once DLAB is clear");
        assert!(
            out.0.lock().unwrap().is_empty(),
            "divisor writes are not output"
        );
    }

    #[test]
    fn scratch_register_keeps_its_value() {
        let (mut uart, _) = uart();
        uart.write(SCR, 1, 0xa5);
        assert_eq!(uart.read(SCR, 1), 0xa5);
    }

    #[test]
    fn broken_pipe_closes_the_console_and_keeps_the_error() {
        let mut uart = Uart::new(Box::new(Refusing(std::io::ErrorKind::BrokenPipe)));
        assert_eq!(
            uart.write(THR, 1, u32::from(b'x')),
            IoOutcome::ConsoleClosed
        );
        let error = uart.take_output_error().expect("the error is kept");
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(uart.take_output_error().is_none(), "taken once");
        assert_eq!(uart.lost_bytes(), 0);
    }

    #[test]
    fn full_device_closes_the_console() {
        let mut uart = Uart::new(Box::new(FailingWithErrno(libc::ENOSPC)));
        assert_eq!(
            uart.write(THR, 1, u32::from(b'x')),
            IoOutcome::ConsoleClosed
        );
        assert_eq!(
            uart.take_output_error().and_then(|e| e.raw_os_error()),
            Some(libc::ENOSPC)
        );
    }

    #[test]
    fn would_block_loses_the_byte_and_keeps_the_guest_running() {
        let mut uart = Uart::new(Box::new(Refusing(std::io::ErrorKind::WouldBlock)));
        assert_eq!(uart.write(THR, 1, u32::from(b'x')), IoOutcome::Continue);
        assert_eq!(uart.lost_bytes(), 1);
        assert!(uart.take_output_error().is_none());
    }

    #[test]
    fn register_writes_do_not_touch_a_broken_sink() {
        let mut uart = Uart::new(Box::new(Refusing(std::io::ErrorKind::BrokenPipe)));
        assert_eq!(uart.write(LCR, 1, 0x03), IoOutcome::Continue);
        assert_eq!(uart.write(SCR, 1, 0x5a), IoOutcome::Continue);
    }

    #[test]
    fn enabling_the_transmit_interrupt_raises_the_irq_line() {
        let (mut uart, _) = uart();
        let irq = uart.irq_line();
        uart.write(IER, 1, 0x02);
        assert!(irq.take());
        assert!(!irq.is_raised());
    }

    const RBR_PORT: u16 = 0;

    /// Reads every byte the guest can read now (LSR bit 0, then RBR).
    fn drain(uart: &mut Uart) -> Vec<u8> {
        let mut got = Vec::new();
        while uart.read(LSR, 1) & 1 == 1 {
            got.push(uart.read(RBR_PORT, 1) as u8);
        }
        got
    }

    #[test]
    fn received_bytes_reach_the_guest_in_order() {
        let (mut uart, _) = uart();
        assert_eq!(uart.read(LSR, 1) & 1, 0);
        uart.input().send(b"ls\r");
        assert_eq!(uart.read(LSR, 1) & 1, 1, "data ready");
        assert_eq!(drain(&mut uart), b"ls\r");
        assert_eq!(uart.read(LSR, 1) & 1, 0);
    }

    #[test]
    fn input_beyond_the_fifo_waits_and_is_never_dropped() {
        let (mut uart, _) = uart();
        let input = uart.input();
        let text: Vec<u8> = (0..200u8).collect();
        input.send(&text);
        assert!(input.backlog() > 0, "the FIFO holds 64 bytes");
        let mut got = Vec::new();
        while got.len() < text.len() {
            let more = drain(&mut uart);
            assert!(!more.is_empty(), "stalled at {}", got.len());
            got.extend(more);
        }
        assert_eq!(got, text);
        assert_eq!(input.backlog(), 0);
    }

    #[test]
    fn received_data_raises_the_irq_when_enabled() {
        let (mut uart, _) = uart();
        let irq = uart.irq_line();
        uart.write(IER, 1, 0x01); // received data available
        assert!(!irq.take());
        uart.input().send(b"x");
        assert!(irq.take());
        assert_eq!(uart.read(2, 1) & 0x0f, 0x04, "IIR: received data");
        assert_eq!(drain(&mut uart), b"x");
    }

    #[test]
    fn offsets_past_the_eighth_register_are_ignored() {
        let (mut uart, out) = uart();
        assert_eq!(uart.read(8, 1), 0xff);
        assert_eq!(uart.write(8, 1, 0x41), IoOutcome::Continue);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
