//! The i8042 keyboard controller of a PC, at port `0x60` (data) and port
//! `0x64` (status when read, command when written), with no keyboard and
//! no mouse attached.
//!
//! What a guest finds is the controller as a BIOS leaves it: the self-test
//! passed (status SYS set), command byte `0x61` (keyboard interrupt,
//! translation, auxiliary port disabled), the output port with the reset
//! line high and A20 enabled.
//!
//! Invariants:
//! - Commands complete at once: the input buffer is never full (status bit
//!   1 stays clear), and a command's answer is in the output buffer when
//!   the `out` returns. An answer replaces an unread byte.
//! - Reading port `0x60` empties the output buffer; with nothing pending
//!   it returns the last byte again (OBF stays clear).
//! - A20 is always enabled: nestmon does not wrap addresses at 1 MiB, so
//!   the output port's A20 bit reads 1 whatever the guest writes there
//!   (and commands 0xDD/0xDF change nothing), which tells a guest that
//!   checks the truth.
//! - Pulsing the reset line (commands 0xF0-0xFE with bit 0 clear, 0xFE
//!   the usual one) or writing the output port with bit 0 clear returns
//!   [`IoOutcome::Reset`]: the machine decides what a reset means.
//! - Nothing is attached: a byte for the keyboard or the mouse is not
//!   answered, and the status register's time-out bit (6) says so until
//!   the next byte the guest writes.
//! - The interrupt outputs follow the output buffer, as a PC's controller
//!   (and QEMU's) drive them ([`I8042::irq_levels`]): IRQ 1 is high while
//!   it holds a byte of the keyboard side (a command's answer, a 0xD2
//!   byte) and the command byte enables the keyboard interrupt, IRQ 12
//!   while it holds an auxiliary byte (a 0xD3 loopback) and the command
//!   byte enables the auxiliary interrupt. (Linux's probe of the
//!   auxiliary port waits up to 250 ms for the IRQ 12 of a loopback.)
//! - Commands nestmon does not model (0xC1-0xCF, 0xE0, the password and
//!   vendor commands) are ignored: no answer comes.

use super::pic::{Irq, PicLine, SharedPic};
use super::{IoOutcome, PortDevice};
use std::sync::{Arc, Mutex, MutexGuard};

/// Status register bits (port `0x64` read).
pub mod status {
    /// Output buffer full: port `0x60` has a byte for the CPU.
    pub const OUTPUT_FULL: u8 = 0x01;
    /// Input buffer full (never: commands complete at once).
    pub const INPUT_FULL: u8 = 0x02;
    /// System flag: the self-test passed.
    pub const SYSTEM: u8 = 0x04;
    /// The last byte written went to port `0x64` (a command).
    pub const COMMAND: u8 = 0x08;
    /// The keyboard is not inhibited by a keylock.
    pub const UNLOCKED: u8 = 0x10;
    /// The byte in the output buffer came from the auxiliary port.
    pub const AUX_OUTPUT_FULL: u8 = 0x20;
    /// A byte sent to a device was not taken (nothing is attached).
    pub const TIMEOUT: u8 = 0x40;
}

/// Command byte bits (controller RAM byte 0).
pub mod command_byte {
    /// Interrupt on keyboard output (IRQ 1).
    pub const KEYBOARD_INTERRUPT: u8 = 0x01;
    /// Interrupt on auxiliary output (IRQ 12).
    pub const AUX_INTERRUPT: u8 = 0x02;
    /// The system flag, copied to the status register.
    pub const SYSTEM: u8 = 0x04;
    /// Keyboard interface disabled.
    pub const KEYBOARD_DISABLED: u8 = 0x10;
    /// Auxiliary interface disabled.
    pub const AUX_DISABLED: u8 = 0x20;
    /// Scan code set 1 translation.
    pub const TRANSLATE: u8 = 0x40;
}

/// Output port bits (commands 0xD0/0xD1).
pub mod output_port {
    /// The CPU's reset line: 1 runs, 0 resets.
    pub const RESET: u8 = 0x01;
    /// The A20 gate.
    pub const A20: u8 = 0x02;
    /// The keyboard's byte is in the output buffer (IRQ 1 line).
    pub const KEYBOARD_OUTPUT_FULL: u8 = 0x10;
    /// The auxiliary port's byte is in the output buffer (IRQ 12 line).
    pub const AUX_OUTPUT_FULL: u8 = 0x20;
}

/// The command byte a BIOS leaves: keyboard interrupt, translation,
/// auxiliary port disabled.
const BIOS_COMMAND_BYTE: u8 =
    command_byte::KEYBOARD_INTERRUPT | command_byte::AUX_DISABLED | command_byte::TRANSLATE;
/// The output port latch at power-on: reset high, A20 on, the auxiliary
/// and keyboard clock and data lines idle (high).
const OUTPUT_PORT_AT_POWER_ON: u8 = 0xcf;
/// The input port: keyboard not inhibited.
const INPUT_PORT: u8 = 0x80;

/// Controller commands (port `0x64` writes).
mod cmd {
    pub const READ_RAM_FIRST: u8 = 0x20;
    pub const READ_RAM_LAST: u8 = 0x3f;
    pub const WRITE_RAM_FIRST: u8 = 0x60;
    pub const WRITE_RAM_LAST: u8 = 0x7f;
    pub const DISABLE_AUX: u8 = 0xa7;
    pub const ENABLE_AUX: u8 = 0xa8;
    pub const TEST_AUX: u8 = 0xa9;
    pub const SELF_TEST: u8 = 0xaa;
    pub const TEST_KEYBOARD: u8 = 0xab;
    pub const DISABLE_KEYBOARD: u8 = 0xad;
    pub const ENABLE_KEYBOARD: u8 = 0xae;
    pub const READ_INPUT_PORT: u8 = 0xc0;
    pub const READ_OUTPUT_PORT: u8 = 0xd0;
    pub const WRITE_OUTPUT_PORT: u8 = 0xd1;
    pub const WRITE_KEYBOARD_OUTPUT: u8 = 0xd2;
    pub const WRITE_AUX_OUTPUT: u8 = 0xd3;
    pub const WRITE_AUX: u8 = 0xd4;
    pub const PULSE_FIRST: u8 = 0xf0;
}

/// The answer to a self-test that passed.
pub const SELF_TEST_PASSED: u8 = 0x55;
/// The answer to an interface test that found no fault.
pub const INTERFACE_OK: u8 = 0x00;

/// What the next byte written to port `0x60` is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// Controller RAM byte n (0 is the command byte).
    Ram(u8),
    OutputPort,
    KeyboardOutput,
    AuxOutput,
    AuxDevice,
}

/// The keyboard controller's state.
#[derive(Clone, Debug)]
pub struct I8042 {
    /// Controller RAM; byte 0 is the command byte.
    ram: [u8; 32],
    /// The last byte put in the output buffer.
    output: u8,
    output_full: bool,
    /// The byte in the output buffer came from the auxiliary port.
    output_aux: bool,
    system: bool,
    last_was_command: bool,
    timeout: bool,
    /// The output port latch (A20 always set).
    output_port: u8,
    awaiting: Option<Awaiting>,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// The controller as a BIOS leaves it (see the module documentation).
    pub fn new() -> I8042 {
        let mut ram = [0; 32];
        ram[0] = BIOS_COMMAND_BYTE;
        I8042 {
            ram,
            output: 0,
            output_full: false,
            output_aux: false,
            system: true,
            last_was_command: true,
            timeout: false,
            output_port: OUTPUT_PORT_AT_POWER_ON,
            awaiting: None,
        }
    }

    /// The levels of the interrupt outputs, IRQ 1 and IRQ 12 (see the
    /// module documentation).
    pub fn irq_levels(&self) -> (bool, bool) {
        let enabled = |bit: u8| self.ram[0] & bit != 0;
        (
            self.output_full && !self.output_aux && enabled(command_byte::KEYBOARD_INTERRUPT),
            self.output_full && self.output_aux && enabled(command_byte::AUX_INTERRUPT),
        )
    }

    /// The command byte (controller RAM byte 0).
    pub fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    /// The status register (port `0x64` read).
    pub fn read_status(&self) -> u8 {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        bit(self.output_full, status::OUTPUT_FULL)
            | bit(self.system, status::SYSTEM)
            | bit(self.last_was_command, status::COMMAND)
            | status::UNLOCKED
            | bit(self.output_full && self.output_aux, status::AUX_OUTPUT_FULL)
            | bit(self.timeout, status::TIMEOUT)
    }

    /// The output buffer (port `0x60` read): the last byte, now read.
    pub fn read_data(&mut self) -> u8 {
        self.output_full = false;
        self.output_aux = false;
        self.output
    }

    /// A command (port `0x64` write).
    pub fn write_command(&mut self, command: u8) -> IoOutcome {
        self.last_was_command = true;
        self.timeout = false;
        self.awaiting = None;
        match command {
            cmd::READ_RAM_FIRST..=cmd::READ_RAM_LAST => {
                self.answer(self.ram[usize::from(command - cmd::READ_RAM_FIRST)]);
            }
            cmd::WRITE_RAM_FIRST..=cmd::WRITE_RAM_LAST => {
                self.awaiting = Some(Awaiting::Ram(command - cmd::WRITE_RAM_FIRST));
            }
            cmd::DISABLE_AUX => self.ram[0] |= command_byte::AUX_DISABLED,
            cmd::ENABLE_AUX => self.ram[0] &= !command_byte::AUX_DISABLED,
            cmd::TEST_AUX | cmd::TEST_KEYBOARD => self.answer(INTERFACE_OK),
            cmd::SELF_TEST => {
                self.system = true;
                self.answer(SELF_TEST_PASSED);
            }
            cmd::DISABLE_KEYBOARD => self.ram[0] |= command_byte::KEYBOARD_DISABLED,
            cmd::ENABLE_KEYBOARD => self.ram[0] &= !command_byte::KEYBOARD_DISABLED,
            cmd::READ_INPUT_PORT => self.answer(INPUT_PORT),
            cmd::READ_OUTPUT_PORT => self.answer(self.output_port_value()),
            cmd::WRITE_OUTPUT_PORT => self.awaiting = Some(Awaiting::OutputPort),
            cmd::WRITE_KEYBOARD_OUTPUT => self.awaiting = Some(Awaiting::KeyboardOutput),
            cmd::WRITE_AUX_OUTPUT => self.awaiting = Some(Awaiting::AuxOutput),
            cmd::WRITE_AUX => self.awaiting = Some(Awaiting::AuxDevice),
            // Pulse the output port's bits 0-3 that are clear in the
            // command's low nibble; bit 0 is the reset line.
            cmd::PULSE_FIRST..=0xff if command & output_port::RESET == 0 => {
                return IoOutcome::Reset;
            }
            _ => {}
        }
        IoOutcome::Continue
    }

    /// A data byte (port `0x60` write): a parameter of the last command,
    /// or a byte for the keyboard.
    pub fn write_data(&mut self, value: u8) -> IoOutcome {
        self.last_was_command = false;
        self.timeout = false;
        match self.awaiting.take() {
            Some(Awaiting::Ram(0)) => {
                self.ram[0] = value;
                self.system = value & command_byte::SYSTEM != 0;
            }
            Some(Awaiting::Ram(n)) => self.ram[usize::from(n)] = value,
            Some(Awaiting::OutputPort) => {
                self.output_port = value | output_port::A20;
                if value & output_port::RESET == 0 {
                    return IoOutcome::Reset;
                }
            }
            Some(Awaiting::KeyboardOutput) => self.put_output(value, false),
            Some(Awaiting::AuxOutput) => self.put_output(value, true),
            Some(Awaiting::AuxDevice) => self.timeout = true,
            None => {
                // Sending to the keyboard enables its interface; nothing
                // is there to take the byte.
                self.ram[0] &= !command_byte::KEYBOARD_DISABLED;
                self.timeout = true;
            }
        }
        IoOutcome::Continue
    }

    /// The output port as command 0xD0 reads it.
    fn output_port_value(&self) -> u8 {
        let mut value = self.output_port
            & !(output_port::KEYBOARD_OUTPUT_FULL | output_port::AUX_OUTPUT_FULL)
            | output_port::A20;
        if self.output_full {
            value |= if self.output_aux {
                output_port::AUX_OUTPUT_FULL
            } else {
                output_port::KEYBOARD_OUTPUT_FULL
            };
        }
        value
    }

    /// The controller's own answer to a command.
    fn answer(&mut self, value: u8) {
        self.put_output(value, false);
    }

    fn put_output(&mut self, value: u8, aux: bool) {
        self.output = value;
        self.output_full = true;
        self.output_aux = aux;
    }
}

/// Which of the controller's two ports a [`I8042Port`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// `0x60`: data.
    Data,
    /// `0x64`: status and command.
    Command,
}

/// The controller with the interrupt lines it drives.
#[derive(Debug)]
struct Wired {
    kbc: I8042,
    /// IRQ 1 and IRQ 12 of the PIC, if wired.
    lines: Option<[PicLine; 2]>,
    /// The levels last put on the lines.
    driven: (bool, bool),
}

impl Wired {
    /// Puts the controller's interrupt outputs on the lines where they
    /// changed.
    fn drive_irqs(&mut self) {
        let levels = self.kbc.irq_levels();
        if let Some([keyboard, aux]) = &self.lines {
            if levels.0 != self.driven.0 {
                keyboard.set_level(levels.0);
            }
            if levels.1 != self.driven.1 {
                aux.set_level(levels.1);
            }
        }
        self.driven = levels;
    }
}

/// One of the controller's ports on the bus; the two share the
/// controller. (Ports `0x61`-`0x63` between them are not the
/// controller's: on a PC `0x61` is system control port B.)
#[derive(Debug)]
pub struct I8042Port {
    controller: Arc<Mutex<Wired>>,
    port: Port,
}

impl I8042Port {
    /// The data port (`0x60`) and the command port (`0x64`) of `controller`,
    /// its interrupt outputs not wired.
    pub fn pair(controller: I8042) -> (I8042Port, I8042Port) {
        Self::pair_wired(controller, None)
    }

    /// [`I8042Port::pair`] with the interrupt outputs on IRQ 1 and IRQ 12
    /// of `pic`.
    pub fn pair_with_irqs(controller: I8042, pic: &SharedPic) -> (I8042Port, I8042Port) {
        Self::pair_wired(
            controller,
            Some([pic.line(Irq::KEYBOARD), pic.line(Irq::MOUSE)]),
        )
    }

    fn pair_wired(kbc: I8042, lines: Option<[PicLine; 2]>) -> (I8042Port, I8042Port) {
        let controller = Arc::new(Mutex::new(Wired {
            kbc,
            lines,
            driven: (false, false),
        }));
        (
            I8042Port {
                controller: Arc::clone(&controller),
                port: Port::Data,
            },
            I8042Port {
                controller,
                port: Port::Command,
            },
        )
    }

    fn controller(&self) -> MutexGuard<'_, Wired> {
        // The state stays consistent even if a holder panicked.
        self.controller.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PortDevice for I8042Port {
    fn name(&self) -> &'static str {
        "i8042"
    }

    fn max_access_size(&self) -> u8 {
        1
    }

    fn read(&mut self, _offset: u16, _size: u8) -> u32 {
        let mut wired = self.controller();
        let value = match self.port {
            Port::Data => wired.kbc.read_data(),
            Port::Command => wired.kbc.read_status(),
        };
        wired.drive_irqs();
        u32::from(value)
    }

    fn write(&mut self, _offset: u16, _size: u8, value: u32) -> IoOutcome {
        let mut wired = self.controller();
        let outcome = match self.port {
            Port::Data => wired.kbc.write_data(value as u8),
            Port::Command => wired.kbc.write_command(value as u8),
        };
        wired.drive_irqs();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `command` and returns the answer, checking that one came.
    fn ask(kbc: &mut I8042, command: u8) -> u8 {
        assert_eq!(kbc.write_command(command), IoOutcome::Continue);
        assert_ne!(
            kbc.read_status() & status::OUTPUT_FULL,
            0,
            "no answer to {command:#x}"
        );
        kbc.read_data()
    }

    #[test]
    fn after_the_bios_the_self_test_passed_and_the_command_byte_is_0x61() {
        let mut kbc = I8042::new();
        assert_eq!(
            kbc.read_status(),
            status::SYSTEM | status::COMMAND | status::UNLOCKED
        );
        assert_eq!(ask(&mut kbc, 0x20), 0x61);
    }

    #[test]
    fn self_test_answers_0x55_and_sets_the_system_flag() {
        let mut kbc = I8042::new();
        kbc.write_command(0x60);
        kbc.write_data(0x00);
        assert_eq!(kbc.read_status() & status::SYSTEM, 0);
        assert_eq!(ask(&mut kbc, 0xaa), SELF_TEST_PASSED);
        assert_ne!(kbc.read_status() & status::SYSTEM, 0);
    }

    #[test]
    fn interface_tests_find_no_fault() {
        let mut kbc = I8042::new();
        assert_eq!(ask(&mut kbc, 0xab), INTERFACE_OK);
        assert_eq!(ask(&mut kbc, 0xa9), INTERFACE_OK);
    }

    #[test]
    fn command_byte_round_trips_and_its_system_bit_is_the_status_flag() {
        let mut kbc = I8042::new();
        kbc.write_command(0x60);
        assert_eq!(kbc.read_status() & status::COMMAND, status::COMMAND);
        kbc.write_data(0x45);
        assert_eq!(kbc.read_status() & status::COMMAND, 0, "a data write");
        assert_eq!(ask(&mut kbc, 0x20), 0x45);
        assert_eq!(kbc.command_byte(), 0x45);
        assert_ne!(kbc.read_status() & status::SYSTEM, 0);
        kbc.write_command(0x60);
        kbc.write_data(0x41);
        assert_eq!(kbc.read_status() & status::SYSTEM, 0);
    }

    #[test]
    fn keyboard_and_aux_disable_and_enable_flip_their_command_byte_bits() {
        let mut kbc = I8042::new();
        kbc.write_command(0xad);
        assert_eq!(ask(&mut kbc, 0x20), 0x71);
        kbc.write_command(0xae);
        assert_eq!(ask(&mut kbc, 0x20), 0x61);
        kbc.write_command(0xa8);
        assert_eq!(ask(&mut kbc, 0x20), 0x41);
        kbc.write_command(0xa7);
        assert_eq!(ask(&mut kbc, 0x20), 0x61);
    }

    #[test]
    fn reading_data_with_nothing_pending_repeats_the_last_byte() {
        let mut kbc = I8042::new();
        assert_eq!(ask(&mut kbc, 0xaa), 0x55);
        assert_eq!(kbc.read_status() & status::OUTPUT_FULL, 0);
        assert_eq!(kbc.read_data(), 0x55);
        assert_eq!(kbc.read_status() & status::OUTPUT_FULL, 0);
    }

    #[test]
    fn an_answer_replaces_an_unread_byte() {
        let mut kbc = I8042::new();
        kbc.write_command(0xaa);
        kbc.write_command(0xab);
        assert_eq!(kbc.read_data(), INTERFACE_OK);
    }

    #[test]
    fn output_port_has_the_reset_line_high_and_a20_on() {
        let mut kbc = I8042::new();
        assert_eq!(ask(&mut kbc, 0xd0), 0xcf);
    }

    #[test]
    fn a20_stays_enabled_whatever_the_guest_writes() {
        let mut kbc = I8042::new();
        kbc.write_command(0xd1);
        assert_eq!(kbc.write_data(0xcd), IoOutcome::Continue);
        assert_eq!(ask(&mut kbc, 0xd0) & output_port::A20, output_port::A20);
        kbc.write_command(0xdd);
        assert_eq!(ask(&mut kbc, 0xd0) & output_port::A20, output_port::A20);
    }

    #[test]
    fn output_port_read_shows_which_output_buffer_is_full() {
        let mut kbc = I8042::new();
        kbc.write_command(0xd3);
        kbc.write_data(0x12);
        assert_eq!(
            kbc.read_status() & (status::OUTPUT_FULL | status::AUX_OUTPUT_FULL),
            status::OUTPUT_FULL | status::AUX_OUTPUT_FULL
        );
        // The answer to 0xd0 replaces the byte, so the port read sees the
        // auxiliary byte still there.
        assert_eq!(ask(&mut kbc, 0xd0), 0xcf | output_port::AUX_OUTPUT_FULL);
    }

    #[test]
    fn written_output_bytes_come_back_as_keyboard_or_aux_data() {
        let mut kbc = I8042::new();
        kbc.write_command(0xd2);
        kbc.write_data(0x1c);
        assert_eq!(kbc.read_status() & status::AUX_OUTPUT_FULL, 0);
        assert_eq!(kbc.read_data(), 0x1c);
        kbc.write_command(0xd3);
        kbc.write_data(0xfa);
        assert_ne!(kbc.read_status() & status::AUX_OUTPUT_FULL, 0);
        assert_eq!(kbc.read_data(), 0xfa);
    }

    #[test]
    fn the_interrupt_outputs_follow_the_output_buffer_and_the_command_byte() {
        let mut kbc = I8042::new();
        assert_eq!(kbc.irq_levels(), (false, false));
        // The BIOS command byte enables the keyboard interrupt only.
        kbc.write_command(0xaa);
        assert_eq!(kbc.irq_levels(), (true, false));
        kbc.read_data();
        assert_eq!(kbc.irq_levels(), (false, false));
        kbc.write_command(0xd3);
        kbc.write_data(0x5a);
        assert_eq!(kbc.irq_levels(), (false, false), "IRQ 12 not enabled");
        kbc.read_data();
        kbc.write_command(0x60);
        kbc.write_data(command_byte::AUX_INTERRUPT | command_byte::SYSTEM);
        kbc.write_command(0xd3);
        kbc.write_data(0x5a);
        assert_eq!(kbc.irq_levels(), (false, true));
        assert_eq!(kbc.read_data(), 0x5a);
        assert_eq!(kbc.irq_levels(), (false, false));
    }

    #[test]
    fn an_aux_loopback_raises_irq_12_on_the_pic_as_linux_probes_it() {
        use super::super::pic::Pic;
        let pic = SharedPic::new(Pic::new());
        let seen = super::super::test_support::mirrored_levels(&pic);
        let (mut data, mut command) = I8042Port::pair_with_irqs(I8042::new(), &pic);
        // Linux's i8042_check_aux: command byte with IRQ 12 enabled and the
        // keyboard's disabled, then a loopback through 0xd3.
        command.write(0, 1, 0x60);
        data.write(0, 1, 0x46);
        command.write(0, 1, 0xd3);
        data.write(0, 1, 0xa5);
        assert_eq!(*seen.lock().unwrap(), [(12, true)]);
        assert_eq!(data.read(0, 1), 0xa5);
        assert_eq!(*seen.lock().unwrap(), [(12, true), (12, false)]);
    }

    #[test]
    fn pulsing_the_reset_line_asks_for_a_reset() {
        let mut kbc = I8042::new();
        assert_eq!(kbc.write_command(0xfe), IoOutcome::Reset);
        assert_eq!(kbc.write_command(0xf0), IoOutcome::Reset);
        assert_eq!(
            kbc.write_command(0xff),
            IoOutcome::Continue,
            "pulses nothing"
        );
        assert_eq!(kbc.write_command(0xfd), IoOutcome::Continue, "pulses bit 1");
    }

    #[test]
    fn writing_the_output_port_with_the_reset_bit_clear_asks_for_a_reset() {
        let mut kbc = I8042::new();
        kbc.write_command(0xd1);
        assert_eq!(kbc.write_data(0xce), IoOutcome::Reset);
        kbc.write_command(0xd1);
        assert_eq!(kbc.write_data(0xcf), IoOutcome::Continue);
    }

    #[test]
    fn bytes_for_the_absent_keyboard_and_mouse_time_out_unanswered() {
        let mut kbc = I8042::new();
        kbc.write_command(0xad);
        assert_eq!(kbc.write_data(0xff), IoOutcome::Continue);
        assert_eq!(
            kbc.read_status() & (status::TIMEOUT | status::OUTPUT_FULL),
            status::TIMEOUT
        );
        assert_eq!(
            kbc.command_byte() & command_byte::KEYBOARD_DISABLED,
            0,
            "sending to the keyboard enables its interface"
        );
        kbc.write_command(0xd4);
        assert_eq!(kbc.read_status() & status::TIMEOUT, 0, "cleared by a write");
        kbc.write_data(0xf2);
        assert_eq!(
            kbc.read_status() & (status::TIMEOUT | status::OUTPUT_FULL),
            status::TIMEOUT
        );
    }

    #[test]
    fn controller_ram_round_trips() {
        let mut kbc = I8042::new();
        kbc.write_command(0x7f);
        kbc.write_data(0x5a);
        assert_eq!(ask(&mut kbc, 0x3f), 0x5a);
        assert_eq!(ask(&mut kbc, 0x21), 0x00);
        assert_eq!(ask(&mut kbc, 0x20), 0x61, "the command byte is untouched");
    }

    #[test]
    fn input_port_says_the_keyboard_is_not_inhibited() {
        let mut kbc = I8042::new();
        assert_eq!(ask(&mut kbc, 0xc0), 0x80);
    }

    #[test]
    fn unmodelled_commands_give_no_answer() {
        let mut kbc = I8042::new();
        for command in [0xa1, 0xc1, 0xe0, 0x10] {
            assert_eq!(kbc.write_command(command), IoOutcome::Continue);
            assert_eq!(kbc.read_status() & status::OUTPUT_FULL, 0, "{command:#x}");
        }
    }

    #[test]
    fn the_two_ports_share_one_controller() {
        let (mut data, mut command) = I8042Port::pair(I8042::new());
        assert_eq!(command.write(0, 1, 0xaa), IoOutcome::Continue);
        assert_eq!(command.read(0, 1) & 1, 1);
        assert_eq!(data.read(0, 1), 0x55);
        assert_eq!(command.read(0, 1) & 1, 0);
        assert_eq!(command.write(0, 1, 0xfe), IoOutcome::Reset);
    }
}
