//! The machine: guest RAM, devices, the loaded guest and the vCPU, put
//! together for one run, and the exit loop that hands the vCPU's exits to
//! the board (devices and the VMware backdoor).
//!
//! Data flows one way: the configuration builds the machine, the vCPU runs
//! until an exit, the loop hands the exit to the board, and back.

mod board;
mod console_input;
mod entry;
pub mod interrupts;
mod power;
mod signals;
mod stats;
#[cfg(test)]
mod tests;
mod timer;

pub use signals::signal_name;

use crate::config::VmConfig;
use crate::console::diagnostic;
use crate::cpuid::CpuModel;
use crate::devices::{CmosBattery, IoBus, PcPlatform, SharedSink, CONSOLE_CLOSED_STATUS};
use crate::exit_status::{self, ExitConvention};
use crate::mode::Exec;
use crate::vcpu::bt::BtVcpu;
use crate::vcpu::kvm::{KvmError, KvmVcpu};
use crate::vcpu::{GuestStop, RegisterDump, StopReason, Vcpu, VcpuExit};
use backdoor::outer::{power_on_handshake, NestingGuard, OuterTransport, PortIoTransport};
use backdoor::{Backdoor, HostFacts, TcloCommand};
use board::{Board, OutEnd};
use power::{SoftPoll, SoftPowerOff};
use signals::StopSignals;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Write the `--stats` report as JSON here at exit.
    pub stats_json: Option<PathBuf>,
    /// How the guest's isa-debug-exit report becomes the exit status.
    pub exit_convention: ExitConvention,
    /// The vCPU backend (the resolved `monitor.virtual_exec`, or
    /// `--accel`).
    pub exec: Exec,
}

/// Why a run ended without a guest-chosen exit status.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The guest image or configuration cannot be used (exit status 2,
    /// [`exit_status::BAD_INPUT`]).
    #[error("{0}")]
    BadInput(String),
    /// The guest reached a state that cannot be continued (exit status 3,
    /// [`exit_status::GUEST_STOPPED`]).
    #[error("guest stopped: {0}")]
    GuestDied(String),
    /// The host failed us (exit status 4, [`exit_status::HOST_FAILURE`]).
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

impl MachineError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            MachineError::BadInput(_) => exit_status::BAD_INPUT,
            MachineError::GuestDied(_) => exit_status::GUEST_STOPPED,
            MachineError::Host(_) => exit_status::HOST_FAILURE,
            MachineError::Interrupted { signal, .. } => exit_status::SIGNAL_BASE + signal,
        }
    }
}

/// The backdoor of one machine, its guestinfo namespace holding
/// `guestinfo` (the configuration's at power-on, the previous machine's
/// after a reset).
fn backdoor_for(vm: &VmConfig, cpu: &CpuModel, guestinfo: &[(String, String)]) -> Backdoor {
    let defaults = HostFacts::default();
    let facts = HostFacts {
        tsc_hz: cpu.tsc_hz(),
        // GETHZ's bus clock is the one CPUID leaf 0x4000_0010 reports.
        bus_hz: crate::cpuid::BUS_HZ as u32,
        mem_size_mib: vm.memsize_mib as u32,
        uuid: vm.uuid_bios.unwrap_or(defaults.uuid),
        hw_version: vm.hw_version.unwrap_or(defaults.hw_version),
        ..defaults
    };
    let mut backdoor = Backdoor::new(facts, guestinfo.iter().cloned());
    // As VMware's VMX does: a TCLO channel starts with `reset`, then
    // `Capabilities_Register` (vmtoolsd announces itself and its version).
    backdoor.greet_tclo_channels(&[TcloCommand::Reset, TcloCommand::CapabilitiesRegister]);
    backdoor
}

fn write_guestinfo(path: &std::path::Path, board: &Board) -> Result<(), MachineError> {
    std::fs::write(path, board.backdoor.guestinfo_json()).map_err(|e| {
        MachineError::Host(format!("cannot write guestinfo to {}: {e}", path.display()))
    })
}

/// How the exit loop ended.
enum RunEnd {
    /// The guest reported this value through isa-debug-exit.
    GuestExit(u32),
    /// The console can no longer be written.
    ConsoleClosed,
    /// The guest pulsed the CPU's reset line through this port.
    Reset(u16),
    /// The guest powered the machine off.
    PowerOff,
    /// The guest cannot continue.
    Stopped(GuestStop),
    /// A host signal stopped the guest.
    Signal(i32, RegisterDump),
    /// The host failed the machine (a thread could not be started).
    HostFailure(String),
}

/// Whether a port carries the VMware backdoor (whose traffic may start or
/// stop the Tools' TCLO loop).
fn is_backdoor_port(port: u16) -> bool {
    port == board::BACKDOOR_PORT || port == board::BACKDOOR_HB_PORT
}

/// Runs the vCPU, handing its exits to the board, until the run ends.
fn exit_loop(vcpu: &mut dyn Vcpu, board: &mut Board, soft: &mut SoftPowerOff) -> RunEnd {
    // IRQ0 from the PIT, for as long as the guest runs.
    let _timer = match timer::PitTimer::start(&board.bus) {
        Ok(timer) => timer,
        Err(e) => return RunEnd::HostFailure(format!("cannot start the PIT timer thread: {e}")),
    };
    // The local APIC's timer, when the machine has one.
    let _lapic_timer = match board.irq.lapic().map(timer::LapicTimer::start).transpose() {
        Ok(timer) => timer,
        Err(e) => {
            return RunEnd::HostFailure(format!("cannot start the local APIC timer thread: {e}"))
        }
    };
    soft.track_tools(board);
    loop {
        if let Some(signal) = signals::pending_stop_signal() {
            return RunEnd::Signal(signal, vcpu.register_dump());
        }
        if soft.poll(board) == SoftPoll::StopHard {
            return RunEnd::Signal(libc::SIGTERM, vcpu.register_dump());
        }
        board.irq.forward(vcpu);
        match vcpu.run() {
            VcpuExit::IoIn {
                port,
                data,
                string,
                io,
            } => {
                board.io_in(port, data, string, io);
                if is_backdoor_port(port) {
                    soft.track_tools(board);
                }
            }
            VcpuExit::IoOut {
                port,
                data,
                string,
                io,
            } => match board.io_out(port, data, string, io) {
                Some(OutEnd::GuestExit(value)) => return RunEnd::GuestExit(value),
                Some(OutEnd::ConsoleClosed) => return RunEnd::ConsoleClosed,
                Some(OutEnd::Reset(port)) => return RunEnd::Reset(port),
                Some(OutEnd::PowerOff) => return RunEnd::PowerOff,
                None if is_backdoor_port(port) => soft.track_tools(board),
                None => {}
            },
            // HLT with IF = 1: sleep (without spinning) until the PIC or
            // an NMI source has something, or a stop signal arrives; the
            // loop then delivers it.
            VcpuExit::Hlt => {
                if !board.irq.wait_while_halted(|| {
                    signals::pending_stop_signal().is_some() || soft.needs_attention()
                }) {
                    return RunEnd::Stopped(GuestStop {
                        reason: StopReason::HaltedWithoutInterruptSources,
                        registers: vcpu.register_dump(),
                    });
                }
            }
            VcpuExit::Interrupted => {}
            VcpuExit::InterruptWindow => board.irq.inject_next(vcpu),
            VcpuExit::Stopped(stop) => return RunEnd::Stopped(stop),
        }
    }
}

/// What a run reads once and every boot of it loads again: the kernel,
/// the initrd files and the CPU model (QEMU too keeps its copies of the
/// images and loads them again at a reset).
struct BootImages {
    image: Vec<u8>,
    name: String,
    files: Vec<crate::loader::BootFile>,
    cpu: CpuModel,
}

impl BootImages {
    fn read(opts: &RunOptions) -> Result<BootImages, MachineError> {
        let bad = |e: &dyn std::fmt::Display| MachineError::BadInput(e.to_string());
        let (image, name) = match &opts.vm.kernel {
            Some(path) => (
                crate::loader::read_kernel(path).map_err(|e| bad(&e))?,
                path.display().to_string(),
            ),
            None => (DEFAULT_GUEST.to_vec(), "nestmon-default-guest".to_string()),
        };
        let files = opts
            .vm
            .initrd
            .iter()
            .map(|item| crate::loader::read_boot_file(&item.path, item.args.as_deref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let cpu = CpuModel::new_measuring(
            &opts.vm,
            &crate::probe::host_cpuid,
            crate::probe::host_tsc_hz,
        )
        .map_err(|e| bad(&e))?;
        // A 64-bit kernel under hardware execution sees a processor with
        // long mode (mode resolution sent it there; binary translation
        // keeps the 32-bit model and stops when the kernel tries to leave
        // it).
        let cpu = if opts.exec == Exec::Hardware && crate::loader::is_elf64(&image) {
            cpu.with_long_mode()
        } else {
            cpu
        };
        Ok(BootImages {
            image,
            name,
            files,
            cpu,
        })
    }
}

/// What outlives one machine within a run, as on a PC whose reset button
/// is pressed: COM1's backend (the file, socket or standard output), the
/// CMOS (battery-backed: its bytes and the time the guest set), and the
/// guestinfo namespace (the VMX's, which VMware keeps across guest
/// reboots until power-off).
struct Persistent {
    sink: SharedSink,
    cmos_battery: CmosBattery,
    guestinfo: Vec<(String, String)>,
}

/// One machine: fresh guest RAM with the images loaded, devices and vCPU
/// in their power-on state.
struct Machine {
    vcpu: MachineVcpu,
    board: Board,
}

impl Machine {
    fn build(
        opts: &RunOptions,
        images: &BootImages,
        kept: &Persistent,
    ) -> Result<Machine, MachineError> {
        let bad = |e: &dyn std::fmt::Display| MachineError::BadInput(e.to_string());
        let ram = shadowmmu::GuestRam::new(opts.vm.memsize_mib).map_err(|e| bad(&e))?;
        let loaded = crate::loader::load_kernel(
            &ram,
            &images.image,
            &images.name,
            &opts.vm.append,
            &images.files,
        )
        .map_err(|e| bad(&e))?;
        if let crate::loader::LoadedGuest::Linux(_) = &loaded {
            crate::devices::acpi::build_tables_with(crate::devices::acpi::TableOptions {
                ram_bytes: opts.vm.memsize_mib << 20,
                apic: opts.vm.apic,
            })
            .write_to(&ram)
            .map_err(|e| MachineError::Host(e.to_string()))?;
        }
        let mut bus =
            IoBus::with_shared_sink(kept.sink.clone(), &opts.vm.serial0).map_err(|e| bad(&e))?;
        bus.add_pc_platform_with_battery(PcPlatform::for_vm(&opts.vm), kept.cmos_battery.clone())
            .map_err(|e| MachineError::Host(e.to_string()))?;
        let backdoor = backdoor_for(&opts.vm, &images.cpu, &kept.guestinfo);
        let cpu = images.cpu.clone();
        let mut vcpu = match opts.exec {
            Exec::BinaryTranslation => MachineVcpu::Bt(Box::new(bt_vcpu(opts, ram, cpu, &loaded)?)),
            Exec::Hardware => MachineVcpu::Kvm(Box::new(kvm_vcpu(opts, ram, &cpu, &loaded)?)),
        };
        let apics = opts.vm.apic.then(new_apics);
        let irq =
            interrupts::InterruptInputs::new(vcpu.as_dyn().exit_requester(), &bus, apics.clone());
        let mmio = device_memory(&irq, apics.as_ref())?;
        let board = Board {
            bus,
            backdoor,
            restrict_backdoor: opts.vm.restrict_backdoor,
            irq,
        };
        match &mut vcpu {
            MachineVcpu::Bt(bt) => {
                bt.set_ignored_ports(board.ignored_ports());
                bt.set_unprivileged_ports(board.unprivileged_ports());
                bt.set_mmio_bus(mmio);
                if let Some(apics) = &apics {
                    bt.set_local_apic(apics.lapic.clone());
                }
            }
            MachineVcpu::Kvm(kvm) => {
                kvm.set_unprivileged_ports(board.unprivileged_ports());
                kvm.set_mmio_bus(mmio);
            }
        }
        Ok(Machine { vcpu, board })
    }

    /// The guestinfo namespace as the next machine starts with it.
    fn guestinfo(&self) -> Vec<(String, String)> {
        self.board
            .backdoor
            .guestinfo()
            .entries()
            .map(|(k, v)| (k, v.to_owned()))
            .collect()
    }
}

/// Builds the machine and runs the guest, building it again after each
/// reset unless `--no-reboot`; returns the process exit status.
pub fn run(opts: &RunOptions) -> Result<i32, MachineError> {
    let images = BootImages::read(opts)?;
    let mut kept = Persistent {
        sink: SharedSink::open(&opts.vm.serial0)
            .map_err(|e| MachineError::BadInput(e.to_string()))?,
        cmos_battery: CmosBattery::default(),
        guestinfo: opts
            .vm
            .guestinfo
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let mut machine = Machine::build(opts, &images, &kept)?;
    // Held while the guest runs: reopens the outer backdoor when dropped,
    // on every return path below.
    let _outer = outer_handshake(opts.vm.allow_nested)?;
    let started = std::time::Instant::now();
    let mut earlier = stats::Totals::default();
    let end = {
        let _signals = StopSignals::install();
        // Dropped before the signal handlers: the terminal is restored
        // first.
        let input = console_input_for(opts, &machine.board)?;
        let mut soft = SoftPowerOff::new(std::time::Duration::from_secs(u64::from(
            opts.vm.soft_power_off_seconds,
        )));
        loop {
            let end = exit_loop(machine.vcpu.as_dyn_mut(), &mut machine.board, &mut soft);
            let RunEnd::Reset(port) = end else {
                break end;
            };
            if opts.vm.no_reboot {
                diagnostic!(
                    "nestmon: the guest reset the machine (port {port:#x}); stopping (--no-reboot)"
                );
                break end;
            }
            diagnostic!("nestmon: the guest reset the machine (port {port:#x}); restarting it");
            earlier.add(&stats::StatsReport::new(
                machine.vcpu.as_dyn(),
                &machine.board,
                std::time::Duration::ZERO,
            ));
            kept.guestinfo = machine.guestinfo();
            // The old machine (its RAM, translations and threads) goes
            // before the new one is built.
            drop(machine);
            machine = Machine::build(opts, &images, &kept)?;
            if let Some(input) = &input {
                input.retarget(machine.board.bus.com1_input());
            }
        }
    };
    finish(opts, &machine, &earlier, started.elapsed(), end)
}

/// Writes `--stats`, `--stats-json` and `--guestinfo-out` for the whole
/// run (the last machine's counters plus those of the machines a reset
/// ended) and turns its end into the exit status.
fn finish(
    opts: &RunOptions,
    machine: &Machine,
    earlier: &stats::Totals,
    elapsed: std::time::Duration,
    end: RunEnd,
) -> Result<i32, MachineError> {
    if opts.stats || opts.stats_json.is_some() {
        let mut report = stats::StatsReport::new(machine.vcpu.as_dyn(), &machine.board, elapsed);
        report.include(earlier);
        if opts.stats {
            stats::print_stats(&report);
        }
        if let Some(path) = &opts.stats_json {
            std::fs::write(path, report.json())
                .map_err(|e| MachineError::Host(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    if let Some(path) = &opts.guestinfo_out {
        write_guestinfo(path, &machine.board)?;
    }
    let vm_line = vm_identity(&opts.vm);
    match end {
        RunEnd::GuestExit(value) => Ok(guest_exit_status(opts.exit_convention, value)),
        RunEnd::ConsoleClosed => Ok(CONSOLE_CLOSED_STATUS),
        RunEnd::Reset(_) => Ok(exit_status::GUEST_RESET),
        RunEnd::PowerOff => Ok(exit_status::GUEST_POWER_OFF),
        RunEnd::Stopped(stop) => Err(MachineError::GuestDied(format!("{stop}{vm_line}"))),
        RunEnd::Signal(signal, dump) => Err(MachineError::Interrupted {
            signal,
            registers: format!("{dump}{vm_line}"),
        }),
        RunEnd::HostFailure(why) => Err(MachineError::Host(why)),
    }
}

/// COM1's input from standard input, when COM1 is on standard I/O.
fn console_input_for(
    opts: &RunOptions,
    board: &Board,
) -> Result<Option<console_input::ConsoleInput>, MachineError> {
    if opts.vm.serial0 != crate::config::SerialBackend::Stdio {
        return Ok(None);
    }
    console_input::ConsoleInput::start(board.bus.com1_input())
        .map_err(|e| MachineError::Host(format!("cannot start reading standard input: {e}")))
}

/// The vCPU of one run, of the backend the run's modes chose.
enum MachineVcpu {
    /// Binary translation.
    Bt(Box<BtVcpu>),
    /// Hardware execution through `/dev/kvm`.
    Kvm(Box<KvmVcpu>),
}

impl MachineVcpu {
    fn as_dyn(&self) -> &dyn Vcpu {
        match self {
            MachineVcpu::Bt(v) => v.as_ref(),
            MachineVcpu::Kvm(v) => v.as_ref(),
        }
    }

    fn as_dyn_mut(&mut self) -> &mut dyn Vcpu {
        match self {
            MachineVcpu::Bt(v) => v.as_mut(),
            MachineVcpu::Kvm(v) => v.as_mut(),
        }
    }
}

/// A local APIC in its power-on state (as the firmware leaves it) and
/// the I/O APIC the MADT describes.
fn new_apics() -> interrupts::Apics {
    use crate::devices::{ioapic, lapic};
    let clock = Arc::new(crate::devices::pit::HostMonotonicClock::new());
    interrupts::Apics {
        lapic: lapic::SharedLapic::new(lapic::Lapic::new(clock, crate::cpuid::BUS_HZ)),
        ioapic: ioapic::SharedIoApic::new(ioapic::IoApic::new(crate::devices::acpi::IOAPIC_ID)),
    }
}

/// The memory-mapped devices: the I/O APIC at its fixed address and the
/// local APIC wherever `IA32_APIC_BASE` puts it, when the machine has
/// them; nothing otherwise.
fn device_memory(
    irq: &interrupts::InterruptInputs,
    apics: Option<&interrupts::Apics>,
) -> Result<crate::devices::mmio::MmioBus, MachineError> {
    let mut mmio = crate::devices::mmio::MmioBus::new();
    if let Some(apics) = apics {
        apics
            .ioapic
            .register(&mut mmio)
            .map_err(|e| MachineError::Host(e.to_string()))?;
    }
    if let Some(lapic) = irq.lapic_on_bus() {
        mmio.set_movable(lapic);
    }
    Ok(mmio)
}

/// The binary-translation vCPU over `ram`, in the entry state of `loaded`.
fn bt_vcpu(
    opts: &RunOptions,
    ram: shadowmmu::GuestRam,
    cpu: CpuModel,
    loaded: &crate::loader::LoadedGuest,
) -> Result<BtVcpu, MachineError> {
    let mut vcpu = BtVcpu::new(ram, cpu).map_err(|e| MachineError::Host(e.to_string()))?;
    let Ok(()) = entry::enter(&mut vcpu, loaded);
    if let Some(path) = &opts.log_translations {
        let f = std::fs::File::create(path).map_err(|e| {
            MachineError::BadInput(format!("cannot create {}: {e}", path.display()))
        })?;
        vcpu.set_translation_log(Box::new(std::io::BufWriter::new(f)));
    }
    vcpu.set_count_indirect(opts.stats);
    vcpu.set_out_of_sync(opts.vm.mmu_out_of_sync);
    vcpu.set_adaptive(opts.vm.mmu_adaptive);
    vcpu.set_adaptive_strings(opts.vm.mmu_adaptive_strings);
    vcpu.set_superblock_branches(opts.vm.bt_superblock_branches);
    vcpu.set_followed_branches(opts.vm.bt_followed_branches);
    vcpu.set_layout_seed(opts.vm.bt_layout_seed);
    vcpu.set_fold_displacements(opts.vm.bt_fold_displacements);
    vcpu.set_chain_tables(opts.vm.bt_chain_tables);
    vcpu.set_jump_tables(opts.vm.bt_jump_tables);
    vcpu.set_inline_caches(opts.vm.bt_inline_caches);
    vcpu.set_inline_leaves(opts.vm.bt_inline_leaves);
    vcpu.set_return_prediction(opts.vm.bt_return_stack)
        .map_err(|e| MachineError::Host(e.to_string()))?;
    if let Some(most) = opts.vm.mmu_max_mappings {
        vcpu.set_mapping_budget(most as usize).map_err(|largest| {
            MachineError::BadInput(format!(
                "nestmon.mmu.maxMappings = {most} is more than this host lets a process hold \
                 (vm.max_map_count less a margin for the monitor: at most {largest})"
            ))
        })?;
    }
    Ok(vcpu)
}

/// The hardware vCPU over `ram`, in the entry state of `loaded`; a KVM
/// that cannot give one is input nestmon cannot use (exit status 2).
fn kvm_vcpu(
    opts: &RunOptions,
    ram: shadowmmu::GuestRam,
    cpu: &CpuModel,
    loaded: &crate::loader::LoadedGuest,
) -> Result<KvmVcpu, MachineError> {
    let unusable =
        |e: KvmError| MachineError::BadInput(format!("hardware execution is not possible: {e}"));
    let mut vcpu = KvmVcpu::new(ram, cpu).map_err(unusable)?;
    entry::enter(&mut vcpu, loaded).map_err(unusable)?;
    if opts.log_translations.is_some() {
        diagnostic!("nestmon: note: --log-translations has no effect under hardware execution (nothing is translated)");
    }
    Ok(vcpu)
}

/// The exit status for a guest that reported `value`; a failure's code
/// goes to standard error under nestmon's convention (under QEMU's the
/// status itself carries it).
fn guest_exit_status(convention: ExitConvention, value: u32) -> i32 {
    let status = convention.status_for_report(value);
    if convention == ExitConvention::Nestmon && value != 0 {
        diagnostic!(
            "nestmon: the guest reported failure: code {value} (isa-debug-exit, port 0xf4)"
        );
    }
    status
}

/// The stop report's last line naming the VM (`displayName`, `guestOS`),
/// when the configuration names it.
fn vm_identity(vm: &VmConfig) -> String {
    match &vm.display_name {
        Some(name) => format!("\nVM: {name:?} (guestOS {})", vm.guest_os),
        None => String::new(),
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
    let vendor = backdoor::outer::hypervisor_vendor();
    let guard = nesting_handshake(vendor.as_deref(), allow_nested, PortIoTransport::open)?;
    if guard.as_ref().is_some_and(NestingGuard::restricted) {
        signals::arm_reopen_on_signals();
    }
    Ok(guard)
}

/// [`outer_handshake`] for a host whose CPUID leaf 0x4000_0000 named
/// `vendor`, reaching its backdoor through whatever `open` returns (the
/// real port, or a simulated outer hypervisor in tests). `open` is called
/// only when `vendor` is VMware's: elsewhere the port must not be touched.
/// A backdoor that cannot be opened (`ioperm` refused) means no handshake,
/// with a line on stderr; one without nesting control refuses power-on
/// ([`MachineError::BadInput`], exit status 2) unless `allow_nested`.
fn nesting_handshake<T, E>(
    vendor: Option<&str>,
    allow_nested: bool,
    open: impl FnOnce() -> Result<T, E>,
) -> Result<Option<NestingGuard<T>>, MachineError>
where
    T: OuterTransport,
    E: std::fmt::Display,
{
    if vendor != Some(backdoor::outer::VMWARE_VENDOR) {
        return Ok(None);
    }
    let transport = match open() {
        Ok(t) => t,
        Err(e) => {
            diagnostic!("nestmon: the outer hypervisor is VMware but its backdoor cannot be reached ({e}); no nesting handshake");
            return Ok(None);
        }
    };
    let guard = power_on_handshake(transport, allow_nested)
        .map_err(|e| MachineError::BadInput(e.to_string()))?;
    match guard.nesting_version() {
        Some(v) if guard.restricted() => diagnostic!("nestmon: outer VMware backdoor restricted while the guest runs (nesting control v{v})"),
        _ => diagnostic!("nestmon: the outer VMware backdoor has no nesting control; running because vmx.allowNested = \"TRUE\""),
    }
    Ok(Some(guard))
}
