//! The board: the port-I/O bus with its devices and the VMware backdoor,
//! as the machine loop hands them the vCPU's I/O exits.
//!
//! Invariant: devices never see the vCPU; only the backdoor, which the
//! VMware protocol defines over the whole register file and guest memory,
//! reaches them, through the exit's [`IoAccess`].

use super::interrupts::InterruptInputs;
use crate::console::diagnostic;
use crate::devices::{IoBus, IoOutcome};
use crate::vcpu::IoAccess;
use backdoor::{Backdoor, Event, Regs};

/// The low-bandwidth VMware backdoor port.
pub const BACKDOOR_PORT: u16 = 0x5658;
/// The high-bandwidth VMware backdoor port.
pub const BACKDOOR_HB_PORT: u16 = 0x5659;

/// Why a port write ended the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutEnd {
    /// The guest wrote this value to isa-debug-exit.
    GuestExit(u32),
    /// The console can no longer be written (already reported on stderr).
    ConsoleClosed,
    /// The guest pulsed the reset line through this port (the machine
    /// says what it does about it).
    Reset(u16),
    /// The guest powered the machine off (ACPI S5).
    PowerOff,
}

/// The devices and the VMware backdoor.
pub struct Board {
    /// Port-I/O devices.
    pub bus: IoBus,
    /// The VMware backdoor.
    pub backdoor: Backdoor,
    /// `monitor_control.restrict_backdoor`: backdoor accesses from CPL > 0
    /// are ordinary port accesses.
    pub restrict_backdoor: bool,
    /// The CPU's interrupt inputs, which devices raise.
    pub irq: InterruptInputs,
}

impl Board {
    /// The ports nothing on the board answers: no device claims them and
    /// they are not the backdoor's. An access there reads all ones and
    /// writes nothing.
    pub fn ignored_ports(&self) -> translator::translate::PortSet {
        // Between claimed ranges, a port at a time (a lookup per port
        // cost a fraction of a millisecond at every start).
        let mut ports = translator::translate::PortSet::default();
        let mut next = 0u32;
        let claimed = self
            .bus
            .claimed_ranges()
            .map(|(base, len)| (u32::from(base), len));
        for (base, len) in claimed.chain([(1 << 16, 0)]) {
            for port in next..base {
                let port = port as u16;
                if port != BACKDOOR_PORT && port != BACKDOOR_HB_PORT {
                    ports.insert(port);
                }
            }
            next = next.max(base + len);
        }
        ports
    }

    /// The ports whose accesses skip the I/O permission check (IOPL, the
    /// TSS bitmap) at CPL > 0: the backdoor's, as on VMware, where Tools
    /// run as user processes without I/O privilege; none when
    /// `restrict_backdoor` makes such accesses ordinary port accesses.
    pub fn unprivileged_ports(&self) -> Vec<u16> {
        if self.restrict_backdoor {
            Vec::new()
        } else {
            vec![BACKDOOR_PORT, BACKDOOR_HB_PORT]
        }
    }

    fn backdoor_allowed(&self, cpl: u8) -> bool {
        !(self.restrict_backdoor && cpl > 0)
    }

    /// Logs what Tools told the backdoor (version, log lines, replies).
    fn log_backdoor_events(&mut self) {
        for event in self.backdoor.drain_events() {
            match event {
                Event::ToolsVersion(v) => diagnostic!("nestmon: guest tools version {v}"),
                Event::ToolsVersionType(t) => diagnostic!("nestmon: guest tools version type {t}"),
                Event::GuestLog(line) => diagnostic!("nestmon: guest log: {line}"),
                Event::TcloReply { command, reply } => {
                    diagnostic!("nestmon: tools replied to {command:?}: {reply:?}")
                }
                Event::StateChangeStatus { success, state } => {
                    let outcome = if success { "done" } else { "failed" };
                    diagnostic!(
                        "nestmon: guest tools: {} script {outcome}",
                        state_change_name(state)
                    )
                }
                _ => {}
            }
        }
    }

    /// An IN or INS element: fills `data`.
    pub fn io_in(&mut self, port: u16, data: &mut [u8], string: bool, io: &mut dyn IoAccess) {
        let cpl = io.cpl();
        if self.backdoor_allowed(cpl) {
            if string && port == BACKDOOR_HB_PORT {
                if self.high_bandwidth(true, io) {
                    return;
                }
            } else if !string && port == BACKDOOR_PORT && data.len() == 4 {
                let mut regs = to_backdoor_regs(&io.registers().gpr);
                if self.backdoor.port_in(&mut regs, cpl) {
                    set_backdoor_regs(io, &regs);
                    data.copy_from_slice(&regs.eax.to_le_bytes());
                    self.log_backdoor_events();
                    return;
                }
            }
        }
        let value = self.bus.read(port, data.len() as u8);
        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    }

    /// An OUT or OUTS element; `Some(end)` ends the run.
    pub fn io_out(
        &mut self,
        port: u16,
        data: &[u8],
        string: bool,
        io: &mut dyn IoAccess,
    ) -> Option<OutEnd> {
        let cpl = io.cpl();
        if self.backdoor_allowed(cpl) {
            if string && port == BACKDOOR_HB_PORT {
                if self.high_bandwidth(false, io) {
                    return None;
                }
            } else if !string && port == BACKDOOR_PORT && data.len() == 4 {
                let mut regs = to_backdoor_regs(&io.registers().gpr);
                if self.backdoor.port_out(&mut regs, cpl) {
                    set_backdoor_regs(io, &regs);
                    self.log_backdoor_events();
                    return None;
                }
            }
        }
        let mut word = [0u8; 4];
        word[..data.len()].copy_from_slice(data);
        match self
            .bus
            .write(port, data.len() as u8, u32::from_le_bytes(word))
        {
            IoOutcome::Continue => None,
            IoOutcome::GuestExit(value) => Some(OutEnd::GuestExit(value)),
            IoOutcome::ConsoleClosed => {
                report_closed_console(&self.bus);
                Some(OutEnd::ConsoleClosed)
            }
            IoOutcome::PowerOff => Some(OutEnd::PowerOff),
            IoOutcome::Reset => Some(OutEnd::Reset(port)),
        }
    }

    /// A whole `rep insb`/`rep outsb` on the high-bandwidth port; false
    /// when the backdoor does not take it (then it is an ordinary port).
    fn high_bandwidth(&mut self, input: bool, io: &mut dyn IoAccess) -> bool {
        let cpl = io.cpl();
        let mut regs = to_backdoor_regs(&io.registers().gpr);
        let moved = if input {
            self.backdoor.hb_in(&mut regs, cpl, io.memory())
        } else {
            self.backdoor.hb_out(&mut regs, cpl, io.memory())
        };
        if moved.is_none() {
            return false;
        }
        set_backdoor_regs(io, &regs);
        io.complete_string_io();
        self.log_backdoor_events();
        true
    }
}

/// open-vm-tools' name of a `GuestOsState` (lib/include/vmware/guestrpc/
/// powerops.h).
fn state_change_name(state: u32) -> String {
    match state {
        1 => "halt".into(),
        2 => "reboot".into(),
        3 => "power-on".into(),
        4 => "resume".into(),
        5 => "suspend".into(),
        other => format!("state change {other}"),
    }
}

/// Says on stderr (best effort) why the console stops the guest.
fn report_closed_console(bus: &IoBus) {
    match bus.console_error() {
        Some(error) => diagnostic!("nestmon: {error}; stopping the guest"),
        None => diagnostic!("nestmon: the console was closed; stopping the guest"),
    }
}

fn to_backdoor_regs(gpr: &[u32; 8]) -> Regs {
    Regs {
        eax: gpr[0],
        ecx: gpr[1],
        edx: gpr[2],
        ebx: gpr[3],
        ebp: gpr[5],
        esi: gpr[6],
        edi: gpr[7],
    }
}

fn set_backdoor_regs(io: &mut dyn IoAccess, r: &Regs) {
    let mut gpr = io.registers().gpr;
    (gpr[0], gpr[1], gpr[2], gpr[3], gpr[5], gpr[6], gpr[7]) =
        (r.eax, r.ecx, r.edx, r.ebx, r.ebp, r.esi, r.edi);
    io.set_general_registers(gpr);
}
