//! The hardware-execution vCPU: the guest runs under `/dev/kvm` (through
//! rust-vmm's `kvm-ioctls`), behind the same [`Vcpu`] interface as the
//! binary translator, so the machine loop, the devices, the loaders and
//! the VMware backdoor are shared unchanged.
//!
//! - Guest RAM is the machine's memfd (`shadowmmu::GuestRam`), whose
//!   shared mapping in the monitor is registered as KVM memory slot 0 at
//!   guest-physical 0: the monitor's writes (loader, backdoor) and the
//!   guest's are the same memory.
//! - The vCPU starts in the binary translator's reset state (flat 32-bit
//!   protected mode, CS 0x08, data 0x10, paging and interrupts off), and
//!   the machine sets the entry state of its boot protocol through
//!   [`KvmVcpu::set_system_state`] and [`KvmVcpu::set_registers`].
//! - CPUID answers are the monitor's CPU model (`KVM_SET_CPUID2`).
//! - Interrupts: no in-kernel irqchip. The PIC model of `devices::pic`
//!   stays the only source of external vectors: the machine asks for an
//!   interrupt window (`kvm_run.request_interrupt_window`), and at the
//!   window injects the PIC's vector with `KVM_INTERRUPT`; NMIs go through
//!   `KVM_NMI`.
//! - Port I/O exits are handed out one element per exit ([`io`]); MMIO
//!   exits never leave the backend: they go to the machine's MMIO bus
//!   (`devices::mmio`: the local APIC, the I/O APIC), which reads all ones
//!   and drops writes where no device decodes, as binary translation
//!   does. KVM keeps `IA32_APIC_BASE` itself here, so a guest that moves
//!   or disables its local APIC is not followed (binary translation
//!   follows it).
//! - Instructions KVM's emulator refuses (an emulation failure, with
//!   `KVM_CAP_EXIT_ON_EMULATION_FAILURE`) are carried out by the executor
//!   binary translation uses, `crate::cpu::exec`, over a KVM-backed
//!   `CpuContext` (`emulate`, `context`); on a KVM without
//!   VT-x/AMD-V, the ones it refuses outside ring 0 with a #UD (and
//!   backdoor port accesses it refuses with a #GP) are caught at the
//!   guest's handler (`intercept`).
//! - `KVM_EXIT_SHUTDOWN` (a triple fault) and KVM's internal errors become
//!   a [`GuestStop`] with the registers.
//!
//! Invariants:
//! - A [`KvmVcpu`] runs on the thread that created it (it is neither `Send`
//!   nor `Sync`): exit requests kick that thread ([`kick`]).
//! - Every return from [`Vcpu::run`] other than an I/O exit leaves the
//!   guest at an instruction boundary with no I/O pending in KVM: an I/O
//!   exit is completed by the next `KVM_RUN` before anything else is
//!   returned (with `immediate_exit` when an exit is requested); a port
//!   access of an instruction the monitor carries out is completed by the
//!   monitor in the next `run` before KVM runs again.
//! - After the monitor changed the vCPU's state, what the last exit said
//!   of the interrupt window is stale: no interrupt is injected until a
//!   `KVM_RUN` has reported it again.
//! - Fields drop in declaration order: the kick registration (which points
//!   into `kvm_run`) before the vCPU fd, the VM before guest RAM, so KVM
//!   never refers to an unmapped slot.

mod context;
mod emulate;
mod fpu;
mod intercept;
mod io;
mod kick;
mod memory;
mod native;
mod state;

pub use kick::{kick_from_signal_handler, KvmExitRequester};

use crate::cpu::SystemState;
use crate::cpuid::CpuModel;
use crate::vcpu::{
    ExitRequester, GuestRegisters, GuestStop, InjectError, IoAccess, RegisterDump, StopReason,
    Vcpu, VcpuExit, VcpuStats,
};
use io::{IoExit, OutKind, StringIo, MAX_INSTRUCTION};
use kvm_bindings::{kvm_regs, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit as KvmExit, VcpuFd, VmFd};
use memory::{LinearMemory, Translation};
use shadowmmu::GuestRam;
use std::ffi::CString;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use translator::GuestIsa;

/// The environment variable naming the KVM device (default `/dev/kvm`);
/// tests point it elsewhere to check how a missing or unusable device is
/// refused.
pub const DEVICE_ENV: &str = "NESTMON_KVM_DEVICE";

/// Where the TSS that VT-x needs for real-mode emulation lives (three
/// pages just below the 4 GiB BIOS area, above any guest RAM).
const TSS_ADDRESS: usize = 0xfffb_d000;

/// `KVM_INTERRUPT`: `_IOW(KVMIO, 0x86, struct kvm_interrupt)`.
const KVM_INTERRUPT: libc::c_ulong =
    ioctl_write(0x86, std::mem::size_of::<kvm_bindings::kvm_interrupt>());

/// `_IOW(KVMIO, nr, size)` of Linux's ioctl encoding.
const fn ioctl_write(nr: u8, size: usize) -> libc::c_ulong {
    const KVMIO: libc::c_ulong = 0xae;
    (1 << 30) | ((size as libc::c_ulong) << 16) | (KVMIO << 8) | nr as libc::c_ulong
}

/// `KVM_INTERNAL_ERROR_EMULATION`: KVM's emulator gave an instruction up.
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

/// KVM's internal-error suberrors (`KVM_INTERNAL_ERROR_*`).
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "KVM could not emulate an instruction",
        2 => "an exception occurred while delivering another one",
        3 => "an event could not be delivered",
        4 => "an unexpected exit reason",
        _ => "an unknown internal error",
    }
}

/// The KVM device this process uses: `$NESTMON_KVM_DEVICE` or `/dev/kvm`.
pub fn device_path() -> PathBuf {
    std::env::var_os(DEVICE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/kvm"))
}

/// Why the hardware backend cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The device opened but refused to create a VM.
    #[error("{path} cannot create a VM (KVM_CREATE_VM): {source}")]
    CreateVm {
        /// The device.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A KVM ioctl failed while setting the vCPU up.
    #[error("{operation} failed: {source}")]
    Ioctl {
        /// What was being done.
        operation: &'static str,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// The CPU model does not fit `KVM_SET_CPUID2`.
    #[error("the guest CPU model cannot be given to KVM: {0}")]
    Cpuid(String),
}

fn ioctl_error(operation: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |e| KvmError::Ioctl {
        operation,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

fn os_error(e: kvm_ioctls::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

/// Opens the KVM device and creates a VM: whether hardware execution can
/// be used at all (`--accel kvm` checks this before anything runs).
pub fn open_vm() -> Result<VmFd, KvmError> {
    let path = device_path();
    let shown = path.display().to_string();
    let c_path =
        CString::new(path.into_os_string().into_encoded_bytes()).map_err(|_| KvmError::Open {
            path: shown.clone(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    let kvm = Kvm::new_with_path(&c_path).map_err(|e| KvmError::Open {
        path: shown.clone(),
        source: os_error(e),
    })?;
    kvm.create_vm().map_err(|e| KvmError::CreateVm {
        path: shown,
        source: os_error(e),
    })
}

/// Makes KVM give back every instruction its emulator cannot carry out
/// (`KVM_CAP_EXIT_ON_EMULATION_FAILURE`): without it KVM does so only at
/// CPL 0 and raises #UD in the guest at any other privilege level, so a
/// ring-3 INT n under `kvm_pvm` would never reach the monitor. A KVM
/// without the capability (before Linux 5.15) keeps that behaviour.
fn exit_on_emulation_failure(vm: &VmFd) -> Result<(), KvmError> {
    let cap = kvm_bindings::KVM_CAP_EXIT_ON_EMULATION_FAILURE;
    if vm.check_extension_raw(libc::c_ulong::from(cap)) <= 0 {
        return Ok(());
    }
    let mut enable = kvm_bindings::kvm_enable_cap {
        cap,
        ..Default::default()
    };
    enable.args[0] = 1;
    vm.enable_cap(&enable).map_err(ioctl_error(
        "KVM_ENABLE_CAP(KVM_CAP_EXIT_ON_EMULATION_FAILURE)",
    ))
}

/// `--stats` counters of the KVM backend.
#[derive(Clone, Debug, Default)]
struct KvmStats {
    kvm_runs: u64,
    exits_io: u64,
    exits_mmio: u64,
    exits_hlt: u64,
    exits_window: u64,
    exits_interrupted: u64,
    exits_shutdown: u64,
    exits_emulation: u64,
    exits_other: u64,
    io_elements: u64,
    string_io_by_handler: u64,
    external_interrupts: u64,
    nmis: u64,
    /// Instructions KVM gave back that the monitor carried out.
    monitor_instructions: u64,
    /// Of those, the ones KVM had refused with a #UD in the guest (see
    /// [`intercept`]).
    intercepted_ud: u64,
    /// Backdoor port accesses KVM had refused with a #GP in the guest.
    intercepted_gp: u64,
    /// Guest-physical pages of MMIO accesses (the first few).
    mmio_pages: std::collections::BTreeSet<u64>,
}

/// How many distinct MMIO pages `--stats` lists.
const MMIO_PAGES_SHOWN: usize = 8;

/// The hardware vCPU: the I/O data buffer an exit lends, and the rest.
pub struct KvmVcpu {
    io_data: [u8; 4],
    core: KvmCore,
}

/// Everything but the I/O data buffer (so an I/O exit can lend both).
pub struct KvmCore {
    /// Declared first: unregisters (and stops kicks) before the vCPU fd
    /// and its `kvm_run` mapping go.
    kick: kick::KickRegistration,
    vcpu: VcpuFd,
    /// Dropped before `ram`: KVM's slot refers to its mapping.
    _vm: VmFd,
    ram: GuestRam,
    /// The memory-mapped devices MMIO exits reach.
    mmio: crate::devices::mmio::MmioBus,
    /// The I/O exit being handed out, element by element.
    io: Option<IoExit>,
    /// KVM still has to complete an I/O or MMIO access (next `KVM_RUN`).
    completion_pending: bool,
    /// The machine wants [`VcpuExit::InterruptWindow`].
    window_wanted: bool,
    /// An interrupt was queued with `KVM_INTERRUPT` since the last run.
    injected: bool,
    /// The monitor carried out an instruction since the last run, so
    /// what the last exit said of IF and the interrupt window is stale.
    carried_out: bool,
    /// The guest CPU model (CPUID answers, features) and the instruction
    /// set it defines, for the instructions the monitor carries out.
    model: CpuModel,
    isa: GuestIsa,
    /// Ports exempt from the I/O permission check in the instructions
    /// the monitor carries out (see [`KvmVcpu::set_unprivileged_ports`]).
    unprivileged_ports: Vec<u16>,
    /// The #UD and #GP intercept (see [`intercept`]).
    intercept: intercept::UdIntercept,
    /// The host routine that runs the guest's x87/MMX/SSE instructions
    /// KVM gives back ([`fpu`], [`native`]), set up on first use.
    host_fpu: std::cell::RefCell<Option<native::HostFpu>>,
    /// A port access of an instruction the monitor carries out (a
    /// backdoor access KVM refused outside ring 0), element by element.
    monitor_io: Option<crate::cpu::exec::PendingIo>,
    /// The handler carried out that string instruction whole.
    monitor_io_done: bool,
    /// A stop found outside `run`, returned by the next `run`.
    deferred_stop: Option<StopReason>,
    stats: KvmStats,
    /// Neither `Send` nor `Sync` (see the module invariants).
    _thread_bound: PhantomData<*const ()>,
}

impl KvmVcpu {
    /// The memory-mapped devices MMIO exits reach (none until this is
    /// called: reads return all ones, writes are dropped).
    pub fn set_mmio_bus(&mut self, bus: crate::devices::mmio::MmioBus) {
        self.core.mmio = bus;
    }

    /// A vCPU over `ram` for the CPU `model` under `$NESTMON_KVM_DEVICE`
    /// (`/dev/kvm`), in the Multiboot entry state; it must run on the
    /// calling thread.
    pub fn new(ram: GuestRam, model: &CpuModel) -> Result<KvmVcpu, KvmError> {
        let vm = open_vm()?;
        // Needed only by VT-x without unrestricted guest, for real mode;
        // other KVM implementations may refuse it, which costs nothing
        // while the guest stays in protected mode.
        let _ = vm.set_tss_address(TSS_ADDRESS);
        exit_on_emulation_failure(&vm)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.size() as u64,
            userspace_addr: ram.host_base().0 as u64,
        };
        // SAFETY: the region is guest RAM's own shared mapping, which
        // lives as long as `ram`, and `ram` outlives the VM (field order
        // of `KvmCore`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl_error("KVM_SET_USER_MEMORY_REGION"))?;
        let mut vcpu = vm.create_vcpu(0).map_err(ioctl_error("KVM_CREATE_VCPU"))?;
        let cpuid = state::cpuid_of(model).map_err(KvmError::Cpuid)?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(ioctl_error("KVM_SET_CPUID2"))?;
        let immediate_exit: *mut u8 = &mut vcpu.get_kvm_run().immediate_exit;
        // SAFETY: the byte lies in the vCPU's `kvm_run` mapping, which
        // lives until the vCPU fd is dropped, after the registration
        // (field order); a `KvmVcpu` never leaves this thread.
        let kick = unsafe { kick::KickRegistration::new(immediate_exit) };
        let mut core = KvmCore {
            kick,
            vcpu,
            _vm: vm,
            ram,
            io: None,
            completion_pending: false,
            mmio: crate::devices::mmio::MmioBus::new(),
            window_wanted: false,
            injected: false,
            carried_out: false,
            model: model.clone(),
            isa: model.guest_isa(),
            unprivileged_ports: Vec::new(),
            intercept: intercept::UdIntercept::for_this_host(),
            host_fpu: std::cell::RefCell::new(None),
            monitor_io: None,
            monitor_io_done: false,
            deferred_stop: None,
            stats: KvmStats::default(),
            _thread_bound: PhantomData,
        };
        core.set_system_state(&SystemState::multiboot_entry())?;
        core.set_registers(&GuestRegisters {
            eflags: 2,
            ..GuestRegisters::default()
        })?;
        Ok(KvmVcpu {
            io_data: [0; 4],
            core,
        })
    }

    /// Ports the VMware backdoor answers at any privilege level: the
    /// instructions the monitor carries out skip the I/O permission check
    /// for them (KVM checks the ones it runs itself).
    pub fn set_unprivileged_ports(&mut self, ports: Vec<u16>) {
        self.core.unprivileged_ports = ports;
    }

    /// Guest RAM.
    pub fn ram(&self) -> &GuestRam {
        &self.core.ram
    }

    /// Sets the general registers, EIP and EFLAGS.
    pub fn set_registers(&mut self, regs: &GuestRegisters) -> Result<(), KvmError> {
        self.core.set_registers(regs)
    }

    /// Replaces the system state (segment registers with their caches,
    /// descriptor tables, control registers), as a boot loader leaves it.
    pub fn set_system_state(&mut self, sys: &SystemState) -> Result<(), KvmError> {
        self.core.set_system_state(sys)
    }

    /// The I/O exit for the element of the monitor's own port access.
    fn monitor_io_exit(&mut self) -> VcpuExit<'_> {
        let Some(io) = self.core.monitor_io.as_ref() else {
            let reason = StopReason::Internal("I/O exit without an access".into());
            return VcpuExit::Stopped(self.core.stop(reason));
        };
        let (port, size, input, string) = (io.port, io.size as usize, io.input, io.is_string());
        if !input {
            self.io_data[..size].copy_from_slice(&io.out_value.to_le_bytes()[..size]);
        }
        let data = &mut self.io_data[..size];
        let access: &mut dyn IoAccess = &mut self.core;
        if input {
            VcpuExit::IoIn {
                port,
                data,
                string,
                io: access,
            }
        } else {
            VcpuExit::IoOut {
                port,
                data,
                string,
                io: access,
            }
        }
    }

    /// The I/O exit for the element `core.io` hands out now.
    fn io_exit(&mut self) -> VcpuExit<'_> {
        let Some(io) = self.core.io.as_ref() else {
            let reason = StopReason::Internal("I/O exit without an access".into());
            return VcpuExit::Stopped(self.core.stop(reason));
        };
        let (port, size, input, string) =
            (io.port, io.size as usize, io.input, io.string.is_some());
        let (index, element_size, data_offset) = (io.handed - 1, io.size, io.data_offset);
        if !input {
            let element = self.core.element(index, element_size, data_offset);
            self.io_data[..size].copy_from_slice(element);
        }
        let data = &mut self.io_data[..size];
        let access: &mut dyn IoAccess = &mut self.core;
        if input {
            VcpuExit::IoIn {
                port,
                data,
                string,
                io: access,
            }
        } else {
            VcpuExit::IoOut {
                port,
                data,
                string,
                io: access,
            }
        }
    }
}

/// What one step of the run loop found.
enum Step {
    Io,
    /// A port access of an instruction the monitor carries out.
    MonitorIo,
    Hlt,
    InterruptWindow,
    Interrupted,
    Stop(StopReason),
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> VcpuExit<'_> {
        match self.core.step(&self.io_data) {
            Step::Io => self.io_exit(),
            Step::MonitorIo => self.monitor_io_exit(),
            Step::Hlt => VcpuExit::Hlt,
            Step::InterruptWindow => VcpuExit::InterruptWindow,
            Step::Interrupted => VcpuExit::Interrupted,
            Step::Stop(reason) => VcpuExit::Stopped(self.core.stop(reason)),
        }
    }

    fn registers(&self) -> GuestRegisters {
        self.core
            .vcpu
            .get_regs()
            .map(|r| state::guest_registers(&r))
            .unwrap_or_default()
    }

    fn register_dump(&self) -> RegisterDump {
        self.core.register_dump()
    }

    fn request_exit(&self) {
        self.core.kick.requester().mark();
    }

    fn exit_requester(&self) -> Arc<dyn ExitRequester> {
        self.core.kick.requester().clone()
    }

    fn stats(&self) -> VcpuStats {
        self.core.vcpu_stats()
    }

    fn request_interrupt_window(&mut self, on: bool) {
        self.core.window_wanted = on;
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), InjectError> {
        if !self.core.window_open() {
            return Err(InjectError::WindowClosed);
        }
        let irq = kvm_bindings::kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one `kvm_interrupt`, which `irq`
        // is, from a vCPU fd this vCPU owns.
        let status = unsafe { libc::ioctl(self.core.vcpu.as_raw_fd(), KVM_INTERRUPT, &irq) };
        if status < 0 {
            let error = std::io::Error::last_os_error();
            self.core.deferred_stop = Some(StopReason::Internal(format!(
                "KVM_INTERRUPT of vector {vector:#04x} failed: {error}"
            )));
        } else {
            self.core.injected = true;
            self.core.stats.external_interrupts += 1;
        }
        Ok(())
    }

    fn inject_nmi(&mut self) {
        match self.core.vcpu.nmi() {
            Ok(()) => self.core.stats.nmis += 1,
            Err(e) => {
                self.core.deferred_stop = Some(StopReason::Internal(format!(
                    "KVM_NMI failed: {}",
                    os_error(e)
                )));
            }
        }
    }
}

impl KvmCore {
    fn set_registers(&mut self, guest: &GuestRegisters) -> Result<(), KvmError> {
        let mut regs = self.vcpu.get_regs().map_err(ioctl_error("KVM_GET_REGS"))?;
        state::set_registers(&mut regs, guest);
        self.vcpu
            .set_regs(&regs)
            .map_err(ioctl_error("KVM_SET_REGS"))
    }

    fn set_system_state(&mut self, sys: &SystemState) -> Result<(), KvmError> {
        let mut sregs = self
            .vcpu
            .get_sregs()
            .map_err(ioctl_error("KVM_GET_SREGS"))?;
        state::apply_system_state(&mut sregs, sys);
        self.vcpu
            .set_sregs(&sregs)
            .map_err(ioctl_error("KVM_SET_SREGS"))
    }

    fn regs(&self) -> Result<kvm_regs, StopReason> {
        self.vcpu
            .get_regs()
            .map_err(|e| StopReason::Internal(format!("KVM_GET_REGS failed: {}", os_error(e))))
    }

    fn sregs(&self) -> Result<kvm_sregs, StopReason> {
        self.vcpu
            .get_sregs()
            .map_err(|e| StopReason::Internal(format!("KVM_GET_SREGS failed: {}", os_error(e))))
    }

    fn put_regs(&self, regs: &kvm_regs) -> Result<(), StopReason> {
        self.vcpu
            .set_regs(regs)
            .map_err(|e| StopReason::Internal(format!("KVM_SET_REGS failed: {}", os_error(e))))
    }

    fn register_dump(&self) -> RegisterDump {
        match (self.vcpu.get_regs(), self.vcpu.get_sregs()) {
            (Ok(regs), Ok(sregs)) => state::register_dump(&regs, &sregs),
            _ => state::register_dump(&kvm_regs::default(), &kvm_sregs::default()),
        }
    }

    fn stop(&mut self, reason: StopReason) -> GuestStop {
        GuestStop {
            reason,
            registers: self.register_dump(),
        }
    }

    /// The interrupt window is open: the last exit said KVM can take an
    /// interrupt (IF = 1, no shadow, nothing queued) and nothing happened
    /// since that could change it.
    fn window_open(&mut self) -> bool {
        if self.io.is_some()
            || self.monitor_io.is_some()
            || self.completion_pending
            || self.injected
            || self.carried_out
        {
            return false;
        }
        let run = self.vcpu.get_kvm_run();
        run.ready_for_interrupt_injection != 0 && run.if_flag != 0
    }

    /// Element `index` of the current I/O exit's data in `kvm_run`.
    fn element(&mut self, index: u32, size: u8, data_offset: usize) -> &mut [u8] {
        let run: *mut kvm_bindings::kvm_run = self.vcpu.get_kvm_run();
        let offset = data_offset + index as usize * size as usize;
        // SAFETY: KVM puts the `count * size` bytes of an I/O exit at
        // `data_offset` inside the vCPU's `kvm_run` mapping (as
        // kvm-ioctls' own `run` relies on), `index < count`, and the
        // slice borrows `self` mutably, so nothing else touches it.
        unsafe { std::slice::from_raw_parts_mut(run.cast::<u8>().add(offset), size as usize) }
    }

    /// The run loop: finishes the element handed out last, then runs the
    /// guest until something the machine must see happens.
    fn step(&mut self, io_data: &[u8; 4]) -> Step {
        if !self.kick.on_vcpu_thread() {
            return Step::Stop(StopReason::Internal(
                "the KVM vCPU must run on the thread that created it".into(),
            ));
        }
        if let Some(reason) = self.deferred_stop.take() {
            return Step::Stop(reason);
        }
        if let Some(step) = self.finish_monitor_io(io_data) {
            return step;
        }
        if let Some(step) = self.finish_element(io_data) {
            return step;
        }
        loop {
            if !self.completion_pending {
                if self.kick.requester().take() {
                    self.stats.exits_interrupted += 1;
                    return Step::Interrupted;
                }
                if self.window_wanted && self.window_open() {
                    return Step::InterruptWindow;
                }
            } else if self.kick.requester().take() {
                // Complete the I/O, then stop at the boundary.
                self.vcpu.set_kvm_immediate_exit(1);
            }
            if let Some(step) = self.run_guest() {
                return step;
            }
        }
    }

    /// Stores the handler's input for the element handed out last and
    /// hands out the next one, or ends the I/O exit (KVM completes it at
    /// the next run).
    fn finish_element(&mut self, io_data: &[u8; 4]) -> Option<Step> {
        let mut io = self.io.take()?;
        if io.input && !io.string_done {
            let size = io.size as usize;
            self.element(io.handed - 1, io.size, io.data_offset)
                .copy_from_slice(&io_data[..size]);
        }
        if io.string_done {
            return self.finish_string_by_handler(&io).err().map(Step::Stop);
        }
        if let Some(gpr) = io.handler_gpr.take() {
            let unview = io.string.map_or(gpr, |s| s.unview(gpr));
            if let Err(reason) = self.set_gpr(unview) {
                return Some(Step::Stop(reason));
            }
        }
        if io.handed < io.count {
            io.handed += 1;
            self.stats.io_elements += 1;
            self.io = Some(io);
            return Some(Step::Io);
        }
        if io.input {
            self.completion_pending = true;
        }
        None
    }

    fn set_gpr(&mut self, gpr: [u32; 8]) -> Result<(), StopReason> {
        let mut regs = self.regs()?;
        state::set_general_registers(&mut regs, gpr);
        self.put_regs(&regs)
    }

    /// One `KVM_RUN`; `Some` when the machine must see its exit.
    fn run_guest(&mut self) -> Option<Step> {
        if let Err(reason) = self.arm_intercept() {
            return Some(Step::Stop(reason));
        }
        self.vcpu.get_kvm_run().request_interrupt_window = u8::from(self.window_wanted);
        self.stats.kvm_runs += 1;
        let mmio = match self.vcpu.run() {
            Ok(KvmExit::IoIn(..)) | Ok(KvmExit::IoOut(..)) => None,
            Ok(KvmExit::MmioRead(address, data)) => {
                self.mmio.read(address, data);
                Some(address)
            }
            Ok(KvmExit::MmioWrite(address, data)) => {
                self.mmio.write(address, data);
                Some(address)
            }
            Ok(KvmExit::Hlt) => return self.after_run(RunEnd::Hlt),
            Ok(KvmExit::IrqWindowOpen) => return self.after_run(RunEnd::Window),
            Ok(KvmExit::Shutdown) => return self.after_run(RunEnd::Shutdown),
            Ok(KvmExit::Intr) => return self.after_run(RunEnd::Interrupted),
            Ok(KvmExit::InternalError) => return self.after_run(RunEnd::Internal),
            Ok(KvmExit::FailEntry(reason, _)) => return self.after_run(RunEnd::FailEntry(reason)),
            Ok(KvmExit::Debug(arch)) => {
                let pc = arch.pc;
                return self.after_run(RunEnd::Debug(pc));
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return self.after_run(RunEnd::Other(what));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return self.after_run(RunEnd::Interrupted)
            }
            Err(e) => return self.after_run(RunEnd::Error(os_error(e))),
        };
        self.completion_pending = false;
        self.injected = false;
        self.carried_out = false;
        let Some(address) = mmio else {
            return self.io_exit_begins();
        };
        self.stats.exits_mmio += 1;
        if self.stats.mmio_pages.len() < MMIO_PAGES_SHOWN {
            self.stats.mmio_pages.insert(address & !0xfff);
        }
        self.completion_pending = true;
        None
    }

    /// The exits that carry no data.
    fn after_run(&mut self, end: RunEnd) -> Option<Step> {
        self.completion_pending = false;
        self.injected = false;
        self.carried_out = false;
        match end {
            RunEnd::Debug(pc) => self.debug_exit(pc),
            RunEnd::Hlt => {
                self.stats.exits_hlt += 1;
                if self.vcpu.get_kvm_run().if_flag != 0 {
                    Some(Step::Hlt)
                } else {
                    Some(Step::Stop(StopReason::HaltedForever))
                }
            }
            RunEnd::Window => {
                self.stats.exits_window += 1;
                self.window_wanted.then_some(Step::InterruptWindow)
            }
            RunEnd::Interrupted => {
                self.vcpu.set_kvm_immediate_exit(0);
                self.kick.requester().take();
                self.stats.exits_interrupted += 1;
                Some(Step::Interrupted)
            }
            RunEnd::Shutdown => {
                self.stats.exits_shutdown += 1;
                Some(Step::Stop(StopReason::TripleFault {
                    first: "an event KVM does not name (KVM_EXIT_SHUTDOWN: the CPU shut down)"
                        .into(),
                    chain: Vec::new(),
                }))
            }
            RunEnd::Internal => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, whose
                // union member is `internal`.
                let internal = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal };
                if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
                    self.stats.exits_emulation += 1;
                    self.carried_out = true;
                    return self.emulate_failed_instruction();
                }
                self.stats.exits_other += 1;
                Some(Step::Stop(StopReason::Unsupported(format!(
                    "KVM stopped the guest: {} (KVM_EXIT_INTERNAL_ERROR, suberror {})",
                    internal_error_name(internal.suberror),
                    internal.suberror
                ))))
            }
            RunEnd::FailEntry(reason) => {
                self.stats.exits_other += 1;
                Some(Step::Stop(StopReason::Internal(format!(
                    "KVM could not enter the guest (hardware entry failure reason {reason:#x})"
                ))))
            }
            RunEnd::Other(what) => {
                self.stats.exits_other += 1;
                Some(Step::Stop(StopReason::Unsupported(format!(
                    "unexpected KVM exit {what}"
                ))))
            }
            RunEnd::Error(error) => Some(Step::Stop(StopReason::Internal(format!(
                "KVM_RUN failed: {error}"
            )))),
        }
    }

    /// A `KVM_EXIT_IO`: records it and hands out its first element.
    fn io_exit_begins(&mut self) -> Option<Step> {
        self.stats.exits_io += 1;
        // SAFETY: the exit reason is KVM_EXIT_IO, whose union member is `io`.
        let exit = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.io };
        let input = u32::from(exit.direction) == kvm_bindings::KVM_EXIT_IO_IN;
        let count = exit.count.max(1);
        let string = if input {
            self.classify_in()
        } else {
            match self.classify_out(exit.port, exit.size, count) {
                Ok(string) => string,
                Err(reason) => return Some(Step::Stop(reason)),
            }
        };
        self.io = Some(IoExit {
            port: exit.port,
            size: exit.size,
            count,
            input,
            data_offset: exit.data_offset as usize,
            handed: 1,
            string,
            string_done: false,
            handler_gpr: None,
        });
        self.stats.io_elements += 1;
        Some(Step::Io)
    }

    /// Linear memory with the current translation and the CPL's rights.
    fn linear(&self) -> Result<LinearMemory<'_>, StopReason> {
        let (regs, sregs) = (self.regs()?, self.sregs()?);
        Ok(LinearMemory {
            ram: &self.ram,
            translation: Translation::from_control_registers(sregs.cr0, sregs.cr3, sregs.cr4),
            user: state::cpl(&regs, &sregs) == 3,
        })
    }

    /// Up to [`MAX_INSTRUCTION`] bytes of code at CS:`eip` (fewer when
    /// the rest cannot be read), and the code segment's size in bits.
    fn code_at(&self, eip: u32) -> Result<(Vec<u8>, u32), StopReason> {
        let sregs = self.sregs()?;
        let bits = if sregs.cr0 & 1 != 0 && sregs.cs.db != 0 {
            32
        } else {
            16
        };
        let start = (sregs.cs.base as u32).wrapping_add(eip);
        Ok((self.readable_bytes(start, MAX_INSTRUCTION)?, bits))
    }

    /// Up to `len` bytes at `linear`, as many as can be read from the start.
    fn readable_bytes(&self, linear: u32, len: usize) -> Result<Vec<u8>, StopReason> {
        use backdoor::GuestMemory;
        let mut memory = self.linear()?;
        let mut bytes = vec![0u8; len];
        for take in (1..=len).rev() {
            if memory.read(linear, &mut bytes[..take]).is_ok() {
                bytes.truncate(take);
                return Ok(bytes);
            }
        }
        Ok(Vec::new())
    }

    /// Whether the IN at EIP is an INS.
    fn classify_in(&self) -> Option<StringIo> {
        let eip = self.regs().ok()?.rip as u32;
        let (bytes, bits) = self.code_at(eip).ok()?;
        io::classify_in(io::decode(&bytes, bits, u64::from(eip)).as_ref())
    }

    /// Completes the OUT (see [`io`]) and tells OUT from OUTS.
    fn classify_out(
        &mut self,
        port: u16,
        size: u8,
        count: u32,
    ) -> Result<Option<StringIo>, StopReason> {
        self.complete_without_running()?;
        let regs = self.regs()?;
        let eip = regs.rip as u32;
        let (at, bits) = self.code_at(eip)?;
        let sregs = self.sregs()?;
        let before_start = (sregs.cs.base as u32)
            .wrapping_add(eip)
            .wrapping_sub(MAX_INSTRUCTION as u32);
        let before = self.readable_bytes_ending(before_start, MAX_INSTRUCTION)?;
        let kind = io::classify_out(
            io::decode(&at, bits, u64::from(eip)).as_ref(),
            &before,
            port,
            size,
            regs.rdx as u16,
            regs.rcx as u32,
        );
        let df = regs.rflags & (1 << 10) != 0;
        let bytes = count * u32::from(size);
        Ok(match kind {
            OutKind::Plain => None,
            OutKind::StringDone { rep } => Some(StringIo::outs(rep, None, count, bytes, df)),
            OutKind::StringRestart { len } => {
                Some(StringIo::outs(true, Some(len), count, bytes, df))
            }
        })
    }

    /// The last bytes of the `len` bytes at `linear` that can be read
    /// (the range may start on an unmapped page).
    fn readable_bytes_ending(&self, linear: u32, len: usize) -> Result<Vec<u8>, StopReason> {
        use backdoor::GuestMemory;
        let mut memory = self.linear()?;
        for skip in 0..len {
            let mut bytes = vec![0u8; len - skip];
            if memory
                .read(linear.wrapping_add(skip as u32), &mut bytes)
                .is_ok()
            {
                return Ok(bytes);
            }
        }
        Ok(Vec::new())
    }

    /// Lets KVM complete a pending I/O without running the guest
    /// (`KVM_RUN` with `immediate_exit`, which returns `EINTR`).
    fn complete_without_running(&mut self) -> Result<(), StopReason> {
        let kicks = kick::kicks();
        self.vcpu.set_kvm_immediate_exit(1);
        self.stats.kvm_runs += 1;
        let result = self.vcpu.run().map(|exit| format!("{exit:?}"));
        // A kick that arrived meanwhile must still stop the next run.
        self.vcpu
            .set_kvm_immediate_exit(u8::from(kick::kicks() != kicks));
        match result {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(StopReason::Internal(format!(
                "completing an I/O instruction failed: KVM_RUN: {}",
                os_error(e)
            ))),
            Ok(exit) => Err(StopReason::Internal(format!(
                "completing an I/O instruction without running the guest, KVM exited with {exit}"
            ))),
        }
    }

    /// The handler carried out a whole INS/OUTS itself and left the
    /// registers as the instruction leaves them: end the instruction
    /// there without moving anything else.
    fn finish_string_by_handler(&mut self, io: &IoExit) -> Result<(), StopReason> {
        self.stats.string_io_by_handler += 1;
        let string = io.string.unwrap_or_default();
        let mut regs = self.regs()?;
        let final_gpr = io
            .handler_gpr
            .unwrap_or_else(|| string.view(state::guest_registers(&regs).gpr));
        if io.input {
            self.complete_ins_in_place(io, &mut regs)?;
        } else if let Some(len) = string.restart_len {
            regs.rip = u64::from((regs.rip as u32).wrapping_add(len));
        }
        state::set_general_registers(&mut regs, final_gpr);
        self.put_regs(&regs)
    }

    /// KVM waits for `io.count` INS elements: it gets the bytes already at
    /// their destination (the handler wrote them), and ECX = `io.count`
    /// with REP, so it finishes the instruction with this batch, rewriting
    /// the same bytes. `regs` becomes the state after the instruction.
    fn complete_ins_in_place(
        &mut self,
        io: &IoExit,
        regs: &mut kvm_regs,
    ) -> Result<(), StopReason> {
        let string = io.string.unwrap_or_default();
        if string.rep {
            regs.rcx = u64::from(io.count);
            self.put_regs(regs)?;
        }
        let size = u32::from(io.size);
        let df = regs.rflags & (1 << 10) != 0;
        let es_base = self.sregs()?.es.base as u32;
        let edi = regs.rdi as u32;
        for index in 0..io.count {
            let offset = index * size;
            let linear = es_base.wrapping_add(if df {
                edi.wrapping_sub(offset)
            } else {
                edi.wrapping_add(offset)
            });
            let bytes = self.readable_bytes(linear, size as usize)?;
            let element = self.element(index, io.size, io.data_offset);
            element.fill(0);
            element[..bytes.len()].copy_from_slice(&bytes);
        }
        self.complete_without_running()?;
        *regs = self.regs()?;
        Ok(())
    }

    fn vcpu_stats(&self) -> VcpuStats {
        let s = &self.stats;
        let mut notes = Vec::new();
        if !s.mmio_pages.is_empty() {
            let pages: Vec<String> = s.mmio_pages.iter().map(|p| format!("{p:#010x}")).collect();
            notes.push(format!(
                "MMIO outside guest RAM on pages: {}",
                pages.join(", ")
            ));
        }
        VcpuStats {
            counters: vec![
                ("KVM_RUN calls", s.kvm_runs),
                ("exits: port I/O", s.exits_io),
                ("exits: MMIO", s.exits_mmio),
                ("exits: HLT", s.exits_hlt),
                ("exits: interrupt window", s.exits_window),
                ("exits: stop requests", s.exits_interrupted),
                ("exits: shutdown", s.exits_shutdown),
                ("exits: emulation failures", s.exits_emulation),
                (
                    "instructions carried out by nestmon",
                    s.monitor_instructions,
                ),
                ("  of them refused by KVM with #UD", s.intercepted_ud),
                ("backdoor accesses KVM refused with #GP", s.intercepted_gp),
                ("exits: other", s.exits_other),
                ("port I/O elements", s.io_elements),
                ("string I/O done by the handler", s.string_io_by_handler),
                ("external interrupts", s.external_interrupts),
                ("NMIs", s.nmis),
            ],
            notes,
        }
    }
}

/// How a `KVM_RUN` without data ended.
enum RunEnd {
    /// `KVM_EXIT_DEBUG` at this linear address (the #UD intercept).
    Debug(u64),
    Hlt,
    Window,
    Shutdown,
    Interrupted,
    Internal,
    FailEntry(u64),
    Other(String),
    Error(std::io::Error),
}

impl IoAccess for KvmCore {
    fn registers(&self) -> GuestRegisters {
        let mut regs = self
            .vcpu
            .get_regs()
            .map(|r| state::guest_registers(&r))
            .unwrap_or_default();
        if let Some(io) = &self.io {
            if let Some(gpr) = io.handler_gpr {
                regs.gpr = gpr;
            } else if let Some(string) = io.string {
                regs.gpr = string.view(regs.gpr);
            }
        }
        regs
    }

    fn set_general_registers(&mut self, gpr: [u32; 8]) {
        match &mut self.io {
            Some(io) if io.string.is_some() => io.handler_gpr = Some(gpr),
            _ => {
                if let Err(reason) = self.set_gpr(gpr) {
                    self.deferred_stop = Some(reason);
                }
            }
        }
    }

    fn cpl(&self) -> u8 {
        match (self.vcpu.get_regs(), self.vcpu.get_sregs()) {
            (Ok(regs), Ok(sregs)) => state::cpl(&regs, &sregs),
            _ => 0,
        }
    }

    fn memory(&mut self) -> &mut dyn backdoor::GuestMemory {
        self
    }

    fn complete_string_io(&mut self) {
        if let Some(io) = &mut self.io {
            if io.string.is_some() {
                io.string_done = true;
            }
        } else if self.monitor_io.as_ref().is_some_and(|io| io.is_string()) {
            self.monitor_io_done = true;
        }
    }
}

/// The backdoor's view of guest memory: linear addresses at the CPL.
impl backdoor::GuestMemory for KvmCore {
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), backdoor::MemFault> {
        let mut memory = self.linear().map_err(|_| backdoor::MemFault { linear })?;
        memory.read(linear, buf)
    }

    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), backdoor::MemFault> {
        let mut memory = self.linear().map_err(|_| backdoor::MemFault { linear })?;
        memory.write(linear, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_interrupt_has_linux_ioctl_number() {
        assert_eq!(KVM_INTERRUPT, 0x4004_ae86);
    }

    #[test]
    fn internal_errors_are_named() {
        assert_eq!(
            internal_error_name(1),
            "KVM could not emulate an instruction"
        );
        assert_eq!(internal_error_name(99), "an unknown internal error");
    }
}
