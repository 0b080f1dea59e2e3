//! The machine: guest RAM, devices, the loaded guest and the vCPU, put
//! together for one run.

use crate::config::VmConfig;
use crate::devices::{IoBus, IoOutcome};
use crate::vcpu::{BtVcpu, IoCpu, Platform, Stop};
use std::path::PathBuf;

/// The guest run when no kernel is given (built from guests/default.c).
pub static DEFAULT_GUEST: &[u8] = include_bytes!(concat!(env!("NESTMON_GUEST_DIR"), "/default.elf"));

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
}

impl MachineError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            MachineError::BadInput(_) => 2,
            MachineError::GuestDied(_) => 3,
            MachineError::Host(_) => 1,
        }
    }
}

/// The devices and CPU model the vCPU reaches through exits.
struct Board {
    bus: IoBus,
}

impl Platform for Board {
    fn io_in(&mut self, _cpu: &mut IoCpu<'_>, port: u16, size: u8) -> u32 {
        self.bus.read(port, size)
    }

    fn io_out(&mut self, _cpu: &mut IoCpu<'_>, port: u16, size: u8, value: u32) -> Option<i32> {
        match self.bus.write(port, size, value) {
            IoOutcome::Continue => None,
            IoOutcome::Exit(status) => Some(status),
        }
    }

    fn cpuid(&mut self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0; 4]
    }
}

/// Builds the machine and runs the guest; returns the process exit status.
pub fn run(opts: &RunOptions) -> Result<i32, MachineError> {
    let bad = |e: &dyn std::fmt::Display| MachineError::BadInput(e.to_string());
    let ram = shadowmmu::GuestRam::new(opts.vm.memsize_mib).map_err(|e| bad(&e))?;
    let (image, name) = match &opts.vm.kernel {
        Some(path) => (crate::loader::read_kernel(path).map_err(|e| bad(&e))?, path.display().to_string()),
        None => (DEFAULT_GUEST.to_vec(), "nestmon-default-guest".to_string()),
    };
    let boot = crate::loader::load_multiboot(&ram, &image, &name, &opts.vm.append).map_err(|e| bad(&e))?;
    let bus = IoBus::new(&opts.vm.serial0).map_err(|e| MachineError::Host(e.to_string()))?;
    let mut vcpu = BtVcpu::new(ram).map_err(|e| MachineError::Host(e.to_string()))?;
    enter_multiboot(&mut vcpu, &boot);
    if let Some(path) = &opts.log_translations {
        let f = std::fs::File::create(path).map_err(|e| bad(&format!("cannot create {}: {e}", path.display())))?;
        vcpu.set_translation_log(Box::new(std::io::BufWriter::new(f)));
    }
    vcpu.set_count_indirect(opts.stats);
    let mut board = Board { bus };
    let stop = vcpu.run(&mut board);
    if opts.stats {
        print_stats(&vcpu, &board);
    }
    match stop {
        Stop::Exit(status) => Ok(status),
        Stop::Died(why) => Err(MachineError::GuestDied(why)),
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
    line("port I/O instructions", v.io_instructions);
    line("self-modifying writes", v.smc_writes);
    line("invalidations", c.invalidations);
    line("flushes", c.flushes);
    for (port, reads, writes) in board.bus.unclaimed_counts() {
        out.push_str(&format!("  unclaimed port {port:#06x}: {reads} reads, {writes} writes\n"));
    }
    eprint!("{out}");
}
