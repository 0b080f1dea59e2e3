//! The machine: guest RAM, devices, the loaded guest and the vCPU, put
//! together for one run.

use crate::config::VmConfig;
use crate::console::{self, diagnostic};
use crate::cpuid::CpuModel;
use crate::devices::{IoBus, IoOutcome, CONSOLE_CLOSED_STATUS};
use crate::vcpu::{BtVcpu, IoCpu, Platform, Stop};
use backdoor::outer::{power_on_handshake, NestingGuard, PortIoTransport};
use backdoor::{Backdoor, Event, GuestMemory, HostFacts, Regs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The guest run when no kernel is given (built from guests/default.c).
pub static DEFAULT_GUEST: &[u8] =
    include_bytes!(concat!(env!("NESTMON_GUEST_DIR"), "/default.elf"));

/// What `nestmon run` was asked to do beyond the VM description.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The VM.
    pub vm: VmConfig,
    /// Print counters at exit.
    pub stats: bool,
    /// Write every translation (guest and host instructions) to this file.
    pub log_translations: Option<PathBuf>,
    /// Write the guestinfo namespace as JSON here at exit.
    pub guestinfo_out: Option<PathBuf>,
}

/// Why a run ended without a guest-chosen exit status.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The guest image or configuration cannot be used (exit status 2).
    #[error("{0}")]
    BadInput(String),
    /// The guest reached a state that cannot be continued (exit status 3).
    #[error("guest stopped: {0}")]
    GuestDied(String),
    /// The host failed us (exit status 1).
    #[error("host error: {0}")]
    Host(String),
    /// A host signal (SIGINT, SIGTERM, SIGHUP) stopped the guest (exit
    /// status 128 + the signal number, as a shell reports a process the
    /// signal killed).
    #[error("guest stopped by {}; registers at the stop:\n{registers}", signal_name(*.signal))]
    Interrupted {
        /// The signal number.
        signal: i32,
        /// The guest registers at the stop.
        registers: String,
    },
}

/// The name of a stop signal, for messages.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

impl MachineError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            MachineError::BadInput(_) => 2,
            MachineError::GuestDied(_) => 3,
            MachineError::Host(_) => 1,
            MachineError::Interrupted { signal, .. } => 128 + signal,
        }
    }
}

/// The devices, CPU model and VMware backdoor the vCPU reaches through
/// exits.
struct Board {
    bus: IoBus,
    cpu: CpuModel,
    backdoor: Backdoor,
    /// `monitor_control.restrict_backdoor`: backdoor accesses from CPL > 0
    /// are ordinary port accesses.
    restrict_backdoor: bool,
}

impl Board {
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
                _ => {}
            }
        }
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

fn from_backdoor_regs(gpr: &mut [u32; 8], r: &Regs) {
    (gpr[0], gpr[1], gpr[2], gpr[3], gpr[5], gpr[6], gpr[7]) =
        (r.eax, r.ecx, r.edx, r.ebx, r.ebp, r.esi, r.edi);
}

impl Platform for Board {
    fn io_in(&mut self, cpu: &mut IoCpu<'_>, port: u16, size: u8) -> u32 {
        if port == BACKDOOR_PORT && size == 4 && self.backdoor_allowed(cpu.cpl) {
            let mut regs = to_backdoor_regs(cpu.gpr);
            if self.backdoor.port_in(&mut regs, cpu.cpl) {
                from_backdoor_regs(cpu.gpr, &regs);
                self.log_backdoor_events();
                return regs.eax;
            }
        }
        self.bus.read(port, size)
    }

    fn io_out(&mut self, cpu: &mut IoCpu<'_>, port: u16, size: u8, value: u32) -> Option<i32> {
        if port == BACKDOOR_PORT && size == 4 && self.backdoor_allowed(cpu.cpl) {
            let mut regs = to_backdoor_regs(cpu.gpr);
            if self.backdoor.port_out(&mut regs, cpu.cpl) {
                from_backdoor_regs(cpu.gpr, &regs);
                self.log_backdoor_events();
                return None;
            }
        }
        match self.bus.write(port, size, value) {
            IoOutcome::Continue => None,
            IoOutcome::Exit(status) => Some(status),
            IoOutcome::ConsoleClosed => {
                report_closed_console(&self.bus);
                Some(CONSOLE_CLOSED_STATUS)
            }
        }
    }

    fn string_io(
        &mut self,
        cpu: &mut IoCpu<'_>,
        port: u16,
        input: bool,
        mem: &mut dyn GuestMemory,
    ) -> bool {
        if port != BACKDOOR_HB_PORT || !self.backdoor_allowed(cpu.cpl) {
            return false;
        }
        let mut regs = to_backdoor_regs(cpu.gpr);
        let moved = if input {
            self.backdoor.hb_in(&mut regs, cpu.cpl, mem)
        } else {
            self.backdoor.hb_out(&mut regs, cpu.cpl, mem)
        };
        if moved.is_some() {
            from_backdoor_regs(cpu.gpr, &regs);
            self.log_backdoor_events();
        }
        moved.is_some()
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpu.query(leaf, subleaf)
    }

    fn stop_requested(&mut self) -> Option<i32> {
        match STOP_SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

/// The low-bandwidth VMware backdoor port.
const BACKDOOR_PORT: u16 = 0x5658;
/// The high-bandwidth VMware backdoor port.
const BACKDOOR_HB_PORT: u16 = 0x5659;

fn backdoor_for(vm: &VmConfig, cpu: &CpuModel) -> Backdoor {
    let facts = HostFacts {
        tsc_hz: cpu.tsc_hz(),
        mem_size_mib: vm.memsize_mib as u32,
        ..HostFacts::default()
    };
    Backdoor::new(
        facts,
        vm.guestinfo.iter().map(|(k, v)| (k.clone(), v.clone())),
    )
}

fn write_guestinfo(path: &std::path::Path, board: &Board) -> Result<(), MachineError> {
    std::fs::write(path, board.backdoor.guestinfo_json()).map_err(|e| {
        MachineError::Host(format!("cannot write guestinfo to {}: {e}", path.display()))
    })
}

/// Builds the machine and runs the guest; returns the process exit status.
pub fn run(opts: &RunOptions) -> Result<i32, MachineError> {
    let bad = |e: &dyn std::fmt::Display| MachineError::BadInput(e.to_string());
    let ram = shadowmmu::GuestRam::new(opts.vm.memsize_mib).map_err(|e| bad(&e))?;
    let (image, name) = match &opts.vm.kernel {
        Some(path) => (
            crate::loader::read_kernel(path).map_err(|e| bad(&e))?,
            path.display().to_string(),
        ),
        None => (DEFAULT_GUEST.to_vec(), "nestmon-default-guest".to_string()),
    };
    let boot =
        crate::loader::load_multiboot(&ram, &image, &name, &opts.vm.append).map_err(|e| bad(&e))?;
    let bus = IoBus::new(&opts.vm.serial0).map_err(|e| bad(&e))?;
    let cpu = CpuModel::new(&opts.vm, &crate::probe::host_cpuid).map_err(|e| bad(&e))?;
    let backdoor = backdoor_for(&opts.vm, &cpu);
    let mut vcpu =
        BtVcpu::new(ram, cpu.guest_isa()).map_err(|e| MachineError::Host(e.to_string()))?;
    enter_multiboot(&mut vcpu, &boot);
    if let Some(path) = &opts.log_translations {
        let f = std::fs::File::create(path)
            .map_err(|e| bad(&format!("cannot create {}: {e}", path.display())))?;
        vcpu.set_translation_log(Box::new(std::io::BufWriter::new(f)));
    }
    vcpu.set_count_indirect(opts.stats);
    let mut board = Board {
        bus,
        cpu,
        backdoor,
        restrict_backdoor: opts.vm.restrict_backdoor,
    };
    // Held while the guest runs: reopens the outer backdoor when dropped,
    // on every return path below.
    let _outer = outer_handshake(opts.vm.allow_nested)?;
    let stop = {
        let _signals = StopSignals::install();
        vcpu.run(&mut board)
    };
    if opts.stats {
        print_stats(&vcpu, &board);
    }
    if let Some(path) = &opts.guestinfo_out {
        write_guestinfo(path, &board)?;
    }
    match stop {
        Stop::Exit(status) => Ok(status),
        Stop::Died(why) => Err(MachineError::GuestDied(why)),
        Stop::Requested { signal, registers } => {
            Err(MachineError::Interrupted { signal, registers })
        }
    }
}

/// The nesting handshake with an outer VMware hypervisor, when there is one:
/// its backdoor is restricted while the guest runs (the returned guard
/// reopens it), and a backdoor that cannot be restricted refuses power-on
/// unless `vmx.allowNested = "TRUE"`. On other hosts the port is never
/// touched.
fn outer_handshake(
    allow_nested: bool,
) -> Result<Option<NestingGuard<PortIoTransport>>, MachineError> {
    if backdoor::outer::hypervisor_vendor().as_deref() != Some("VMwareVMware") {
        return Ok(None);
    }
    let transport = match PortIoTransport::open() {
        Ok(t) => t,
        Err(e) => {
            diagnostic!("nestmon: the outer hypervisor is VMware but its backdoor cannot be reached ({e}); no nesting handshake");
            return Ok(None);
        }
    };
    let guard = power_on_handshake(transport, allow_nested)
        .map_err(|e| MachineError::BadInput(e.to_string()))?;
    if guard.restricted() {
        arm_reopen_on_signals();
    }
    match guard.nesting_version() {
        Some(v) if guard.restricted() => diagnostic!("nestmon: outer VMware backdoor restricted while the guest runs (nesting control v{v})"),
        _ => diagnostic!("nestmon: the outer VMware backdoor has no nesting control; running because vmx.allowNested = \"TRUE\""),
    }
    Ok(Some(guard))
}

/// Whether the outer backdoor is restricted and must be reopened if a
/// signal ends the process.
static OUTER_RESTRICTED: AtomicBool = AtomicBool::new(false);

/// The first stop signal received during the current run (0: none).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signals that stop a run.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Makes the outer backdoor be reopened if a second signal kills the
/// process (the handshake guard's drop does it on every other path).
fn arm_reopen_on_signals() {
    OUTER_RESTRICTED.store(true, Ordering::SeqCst);
}

/// While alive, SIGINT, SIGTERM and SIGHUP stop the guest at its next
/// instruction boundary (the run then returns a stop with the registers);
/// a second signal ends the process by the signal's default action, after
/// reopening the outer backdoor. Dropping it restores the default actions.
struct StopSignals;

impl StopSignals {
    fn install() -> StopSignals {
        STOP_SIGNAL.store(0, Ordering::SeqCst);
        for sig in STOP_SIGNALS {
            // SAFETY: a zeroed sigaction with a handler that only does
            // async-signal-safe work (atomics, mprotect, one port access,
            // signal(), raise()).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        StopSignals
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for sig in STOP_SIGNALS {
            // SAFETY: restores the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

extern "C" fn on_stop_signal(sig: libc::c_int) {
    if STOP_SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        translator::runtime::request_exit_all();
        return;
    }
    if OUTER_RESTRICTED.swap(false, Ordering::SeqCst) {
        backdoor::outer::reopen_outer_backdoor_signal_safe();
    }
    // SAFETY: restoring the default action and re-raising are
    // async-signal-safe; the process then ends as the signal asks.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Puts the vCPU in the state the Multiboot specification gives at entry.
fn enter_multiboot(vcpu: &mut BtVcpu, boot: &crate::loader::BootState) {
    let s = &mut vcpu.state;
    s.eip = boot.eip;
    s.gpr[0] = boot.eax;
    s.gpr[3] = boot.ebx;
    s.seg_sel = [0x10, 0x08, 0x10, 0x10, 0x10, 0x10];
    s.seg_base = [0; 6];
    s.eflags = 2;
    s.vif = 0;
}

fn print_stats(vcpu: &BtVcpu, board: &Board) {
    let c = vcpu.cache().stats();
    let v = &vcpu.stats;
    let mut out = String::from("nestmon statistics:\n");
    let mut line = |k: &str, val: u64| out.push_str(&format!("  {k:<28} {val}\n"));
    line("translations", c.translations);
    line("guest instructions translated", c.guest_insns);
    line("code cache bytes", vcpu.cache().bytes_used() as u64);
    line("chains made", c.chains);
    line("indirect-branch hits", v.indirect_hits);
    line("indirect-branch misses", v.exits_indirect_miss);
    line("exits: chain miss", v.exits_chain_miss);
    line("exits: indirect miss", v.exits_indirect_miss);
    line("exits: emulated instruction", v.exits_emulate);
    line("exits: host fault", v.exits_fault);
    line("exits: stop requests", v.exits_interrupted);
    line("port I/O instructions", v.io_instructions);
    line("self-modifying writes", v.smc_writes);
    line("hidden faults (shadow fills)", v.hidden_faults);
    line("invalidations", c.invalidations);
    line("flushes", c.flushes);
    for (port, reads, writes) in board.bus.unclaimed_counts() {
        out.push_str(&format!(
            "  unclaimed port {port:#06x}: {reads} reads, {writes} writes\n"
        ));
    }
    console::diagnostic_text(&out);
}
