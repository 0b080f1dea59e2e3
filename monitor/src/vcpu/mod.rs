//! The vCPU interface every execution backend implements, in the style of
//! kvm-ioctls: [`Vcpu::run`] runs the guest until something outside the
//! CPU must act, and returns it as a typed [`VcpuExit`] (port I/O, HLT, a
//! requested stop, a guest that cannot continue). The machine loop hands
//! exits to devices and the VMware backdoor; CPU-internal events
//! (translation misses, hidden page faults, exception and interrupt
//! delivery, CPUID, MSRs) never leave the backend.
//!
//! Backends:
//! - [`bt`]: binary translation (this crate's translator and code cache).
//! - [`kvm`]: hardware execution through `/dev/kvm` (kvm-ioctls).
//!
//! Invariants:
//! - An exit leaves the guest at an instruction boundary, except an I/O
//!   exit, which is completed by the next `run` with the data the handler
//!   put in the exit's buffer (an IN) or simply continued (an OUT).
//! - A stop carries the guest registers at the stop as a value
//!   ([`GuestStop`]), never a preformatted string.

pub mod bt;
pub mod kvm;

use crate::cpu::system::FpuKind;
use crate::cpu::{Eflags, Exception, SystemState};
use std::fmt;
use translator::FpuClass;

/// The x87/MMX/SSE availability class of `i` (for the system model's
/// checks), if it is an FPU-class instruction.
pub(crate) fn fpu_kind(i: &iced_x86::Instruction) -> Option<FpuKind> {
    Some(match translator::fpu_class(i) {
        FpuClass::None => return None,
        FpuClass::X87 => FpuKind::X87,
        FpuClass::Wait => FpuKind::Wait,
        FpuClass::Mmx => FpuKind::Mmx,
        FpuClass::Sse => FpuKind::Sse,
        FpuClass::Fxsr => FpuKind::Fxsr,
    })
}

/// The general registers, EIP and EFLAGS of the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GuestRegisters {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    pub gpr: [u32; 8],
    /// EIP.
    pub eip: u32,
    /// EFLAGS (as the guest would read it).
    pub eflags: u32,
}

/// Everything a stop report shows of the guest CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterDump {
    /// General registers, EIP, EFLAGS.
    pub regs: GuestRegisters,
    /// Segment selectors ES, CS, SS, DS, FS, GS.
    pub selectors: [u16; 6],
    /// CR0, CR2, CR3, CR4.
    pub cr: [u32; 4],
    /// Current privilege level.
    pub cpl: u8,
}

impl RegisterDump {
    /// The dump of `regs` with the system state `sys`.
    pub fn new(regs: GuestRegisters, sys: &SystemState) -> RegisterDump {
        RegisterDump {
            regs,
            selectors: sys.seg.map(|s| s.selector.0),
            cr: [sys.cr0.bits(), sys.cr2, sys.cr3, sys.cr4.bits()],
            cpl: sys.cpl,
        }
    }
}

impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.regs.gpr;
        let s = &self.selectors;
        writeln!(
            f,
            "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}",
            g[0], g[3], g[1], g[2]
        )?;
        writeln!(
            f,
            "ESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}",
            g[6], g[7], g[5], g[4]
        )?;
        writeln!(
            f,
            "EIP={:08x} EFLAGS={:08x} CPL={} CS={:04x} DS={:04x} ES={:04x} SS={:04x} FS={:04x} GS={:04x}",
            self.regs.eip, self.regs.eflags, self.cpl, s[1], s[3], s[0], s[2], s[4], s[5]
        )?;
        write!(
            f,
            "CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x}",
            self.cr[0], self.cr[1], self.cr[2], self.cr[3]
        )
    }
}

/// Why the guest cannot continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A fault while delivering a double fault: the processor shut down.
    /// `first` is the exception that started the chain, at the EIP of the
    /// register dump.
    TripleFault {
        /// The event whose delivery started the chain (an exception, or a
        /// software or external interrupt), described.
        first: String,
        /// The exceptions raised while delivering it, in order, the last
        /// one during the #DF.
        chain: Vec<Exception>,
    },
    /// An exception the vCPU cannot deliver through the IDT yet.
    Exception(Exception),
    /// HLT with interrupts disabled and nothing that could wake it.
    HaltedForever,
    /// HLT with interrupts enabled, but nothing can raise one: the PIC
    /// masks every line a device raises by itself (IRQ0 with the PIT
    /// counting), and no NMI source exists.
    HaltedWithoutInterruptSources,
    /// The guest used something this virtual CPU does not implement.
    Unsupported(String),
    /// A guest access or instruction fetch outside guest RAM.
    OutsideRam(String),
    /// The translator could not translate guest code (a translator bug or
    /// an unsupported form), or the host refused a resource.
    Internal(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::TripleFault { first, chain } => {
                write!(f, "triple fault (the CPU shut down): {first}")?;
                for e in chain {
                    write!(f, "; delivering it raised {e} (vector {})", e.vector())?;
                }
                Ok(())
            }
            StopReason::Exception(e) => write!(
                f,
                "guest exception {e} (vector {}); the guest has no way to handle it",
                e.vector()
            ),
            StopReason::HaltedForever => {
                write!(f, "the guest executed HLT with interrupts disabled; nothing can wake it")
            }
            StopReason::HaltedWithoutInterruptSources => write!(
                f,
                "the guest executed HLT to wait for an interrupt, but nothing can raise one: the PIC masks every line a device raises by itself (IRQ0 with the PIT counting)"
            ),
            StopReason::Unsupported(what) => write!(f, "{what}"),
            StopReason::OutsideRam(what) => write!(f, "{what}"),
            StopReason::Internal(what) => write!(f, "{what}"),
        }
    }
}

/// A guest that cannot continue, with its registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestStop {
    /// Why.
    pub reason: StopReason,
    /// The guest CPU at the stop (for a fault: at the faulting
    /// instruction, as the exception would have seen it).
    pub registers: RegisterDump,
}

impl fmt::Display for GuestStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.reason, self.registers)
    }
}

/// What an I/O exit handler may do beyond the data of the access: the
/// VMware backdoor reads and writes every register and guest memory.
pub trait IoAccess {
    /// The general registers, EIP and EFLAGS.
    fn registers(&self) -> GuestRegisters;
    /// Replaces the general registers (EIP and EFLAGS are kept).
    fn set_general_registers(&mut self, gpr: [u32; 8]);
    /// The current privilege level.
    fn cpl(&self) -> u8;
    /// Guest linear memory, with the guest's paging and the CPL's rights.
    fn memory(&mut self) -> &mut dyn backdoor::GuestMemory;
    /// For a string I/O exit (INS/OUTS): the handler moved all the data
    /// itself and set the registers as the instruction leaves them (the
    /// VMware high-bandwidth backdoor); the backend then completes the
    /// instruction without moving anything.
    fn complete_string_io(&mut self);
}

/// Why [`Vcpu::run`] returned.
pub enum VcpuExit<'a> {
    /// Port input of `data.len()` bytes (1, 2 or 4): fill `data`. `string`
    /// is set for INS (one element per exit; `io.complete_string_io()`
    /// takes the whole instruction).
    IoIn {
        /// The port.
        port: u16,
        /// Where the handler puts the value.
        data: &'a mut [u8],
        /// An INS instruction.
        string: bool,
        /// Registers and memory, for handlers that need them.
        io: &'a mut dyn IoAccess,
    },
    /// Port output of `data`.
    IoOut {
        /// The port.
        port: u16,
        /// The value written.
        data: &'a [u8],
        /// An OUTS instruction.
        string: bool,
        /// Registers and memory, for handlers that need them.
        io: &'a mut dyn IoAccess,
    },
    /// HLT with interrupts enabled: the guest waits for an interrupt.
    Hlt,
    /// The guest can take an external interrupt now (IF = 1, no interrupt
    /// shadow, at an instruction boundary): [`Vcpu::inject_interrupt`]
    /// delivers one. Only returned while a window is requested
    /// ([`Vcpu::request_interrupt_window`]).
    InterruptWindow,
    /// The platform asked the vCPU to stop running for a moment
    /// ([`Vcpu::request_exit`]); the guest is at an instruction boundary.
    Interrupted,
    /// The guest cannot continue.
    Stopped(GuestStop),
}

/// Counters a backend keeps, printed by `--stats`.
#[derive(Clone, Debug, Default)]
pub struct VcpuStats {
    /// Name and value of every counter, in print order.
    pub counters: Vec<(&'static str, u64)>,
    /// Further lines worth reporting.
    pub notes: Vec<String>,
}

/// A virtual CPU.
pub trait Vcpu {
    /// Runs the guest until the next exit.
    fn run(&mut self) -> VcpuExit<'_>;
    /// The general registers, EIP and EFLAGS.
    fn registers(&self) -> GuestRegisters;
    /// The registers a stop report shows.
    fn register_dump(&self) -> RegisterDump;
    /// Makes `run` return [`VcpuExit::Interrupted`] at the next instruction
    /// boundary it reaches (async-signal-safe in every backend).
    fn request_exit(&self);
    /// A handle other threads (device threads, timers) use to make `run`
    /// return [`VcpuExit::Interrupted`]; after the vCPU is gone it does
    /// nothing.
    fn exit_requester(&self) -> std::sync::Arc<dyn ExitRequester>;
    /// Counters.
    fn stats(&self) -> VcpuStats;
    /// While `on`, `run` returns [`VcpuExit::InterruptWindow`] as soon as
    /// the guest can take an external interrupt (at once if it can now).
    /// A guest with IF = 0 runs on until it sets IF.
    fn request_interrupt_window(&mut self, on: bool);
    /// Delivers external interrupt `vector` through the guest's IDT before
    /// the next instruction. Only possible while the window is open (after
    /// [`VcpuExit::InterruptWindow`], or whenever IF = 1 outside a shadow
    /// and no I/O instruction is in progress). A delivery that fails ends
    /// in a stop the next `run` returns (a triple fault).
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), InjectError>;
    /// Raises an NMI: delivered (vector 2) at the next instruction boundary
    /// where NMIs are not blocked (by a running NMI handler, until its
    /// IRET, or by an interrupt shadow). At most one NMI is kept pending.
    fn inject_nmi(&mut self);
}

/// Makes a running vCPU return from `run` at its next instruction
/// boundary; callable from any thread.
pub trait ExitRequester: Send + Sync {
    /// Asks for the exit (a no-op once the vCPU is gone).
    fn request_exit(&self);
}

/// Why an interrupt could not be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The guest cannot take an external interrupt now (IF = 0, an
    /// interrupt shadow, or an I/O instruction in progress).
    #[error("the guest cannot take an external interrupt now (interrupt window closed)")]
    WindowClosed,
}

/// EFLAGS as the register dump shows them, for backends that keep IF
/// apart.
pub fn dump_eflags(flags: Eflags) -> u32 {
    (flags | Eflags::FIXED).bits()
}
