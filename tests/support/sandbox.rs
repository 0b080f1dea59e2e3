//! A sandbox for running untrusted guest code in-process under the BT
//! vCPU: a canary mapping below 4 GiB that a confinement bug could reach
//! through a guest register value, a platform whose port 0xf4 ends the run,
//! and a watchdog that stops a guest that does not stop by itself.

#![allow(dead_code)]

use monitor::config::VmConfig;
use monitor::cpuid::{CpuModel, CpuidMask};
use monitor::vcpu::bt::BtVcpu;
use monitor::vcpu::{GuestRegisters, GuestStop, Vcpu, VcpuExit};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Runtime stubs at fixed addresses, for translating units that are
/// checked but never run.
pub const STUBS: translator::Stubs = translator::Stubs {
    enter: 0x7f00_0000_1000,
    exit_common: 0x7f00_0000_1100,
    exit_saved: 0x7f00_0000_1200,
    poll: 0x7f00_0000_0000,
    return_sentinel: 0x7f00_0000_1300,
};

/// Where guest code is placed.
pub const CODE: u32 = 0x1000;
/// The guest stack.
pub const STACK: u32 = 0x8000;
/// Size of the canary mapping.
pub const CANARY_LEN: usize = 0x3000;
/// The byte the canary is filled with.
pub const CANARY_BYTE: u8 = 0xa5;

/// A canary mapping below 4 GiB, filled with [`CANARY_BYTE`].
pub struct Canary {
    /// Host address of the mapping.
    pub addr: usize,
}

impl Canary {
    /// Maps the canary at a free address below 4 GiB.
    pub fn map() -> Canary {
        for candidate in [0x5a00_0000usize, 0x4000_0000, 0x2000_0000, 0x7000_0000] {
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping;
            // the new anonymous mapping is owned by the returned value.
            let p = unsafe {
                libc::mmap(
                    candidate as *mut libc::c_void,
                    CANARY_LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as usize == candidate {
                // SAFETY: the mapping was just made, CANARY_LEN bytes long.
                unsafe { std::ptr::write_bytes(p as *mut u8, CANARY_BYTE, CANARY_LEN) };
                return Canary { addr: candidate };
            }
        }
        panic!("no free address below 4 GiB for the canary");
    }

    /// The address guest registers hold: the middle page.
    pub fn target(&self) -> u32 {
        (self.addr + 0x1000) as u32
    }

    /// Whether every byte still holds the fill pattern.
    pub fn intact(&self) -> bool {
        // SAFETY: the mapping is alive and CANARY_LEN bytes long.
        let bytes = unsafe { std::slice::from_raw_parts(self.addr as *const u8, CANARY_LEN) };
        bytes.iter().all(|b| *b == CANARY_BYTE)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, CANARY_LEN) };
    }
}

impl Canary {
    /// Fills it again (after a reported violation).
    pub fn restore(&self) {
        // SAFETY: the canary mapping is alive and CANARY_LEN bytes long.
        unsafe { std::ptr::write_bytes(self.addr as *mut u8, CANARY_BYTE, CANARY_LEN) };
    }
}

/// How a sandboxed guest ended.
#[derive(Debug)]
pub enum Outcome {
    /// It wrote to port 0xf4.
    Exited,
    /// It cannot continue (an exception, a report).
    Stopped(GuestStop),
    /// The watchdog stopped it.
    Watchdog,
}

/// A CPU model offering every extension the translator may offer: masks
/// copy every bit of leaves 1 and 0x80000001 from a host that has them all
/// (the model drops what cannot be offered).
pub fn widest_model() -> CpuModel {
    let all = "HHHH:HHHH:HHHH:HHHH:HHHH:HHHH:HHHH:HHHH";
    let masks = ["cpuid.1.ecx", "cpuid.1.edx", "cpuid.80000001.ecx"]
        .iter()
        .map(|key| CpuidMask::parse(key, all).expect("mask"))
        .collect();
    let config = VmConfig {
        cpuid_masks: masks,
        ..VmConfig::default()
    };
    CpuModel::new(&config, &|_, _| [u32::MAX; 4]).expect("widest model")
}

/// Runs `bytes` followed by `out 0xf4, al` as a guest at [`CODE`] whose
/// registers all name `target` (ESP names [`STACK`]) and whose MMX/XMM
/// bytes are all 0xFF; a guest still running after five seconds is
/// stopped by the watchdog.
pub fn run_one(bytes: &[u8], target: u32) -> Outcome {
    let mut gprs = [target; 8];
    gprs[4] = STACK;
    run_guest(bytes, gprs, Duration::from_secs(5))
}

/// Runs `bytes` followed by `out 0xf4, al` as a guest at [`CODE`] in 1 MiB
/// of RAM with general registers `gprs` (EAX..EDI in encoding order), all
/// MMX/XMM bytes 0xFF and a CPU offering every extension the translator
/// can offer ([`widest_model`]); a guest still running after `limit` is
/// stopped by the watchdog.
pub fn run_guest(bytes: &[u8], gprs: [u32; 8], limit: Duration) -> Outcome {
    let ram = shadowmmu::GuestRam::new(1).expect("1 MiB of guest RAM");
    let mut code = bytes.to_vec();
    code.extend_from_slice(&[0xe6, 0xf4]);
    let room = (STACK - CODE) as usize;
    code.truncate(room);
    ram.write(shadowmmu::GuestPhys(CODE), &code).unwrap();
    let mut vcpu = BtVcpu::new(ram, widest_model()).expect("vCPU");
    vcpu.set_registers(&GuestRegisters {
        gpr: gprs,
        eip: CODE,
        eflags: 2,
    });
    let fx = vcpu.fx_mut();
    for reg in 0..8 {
        for base in [32, 160] {
            let at = base + 16 * reg;
            fx[at..at + 16].fill(0xff);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (done, finished) = mpsc::channel::<()>();
        let stop = &stop;
        scope.spawn(move || {
            if finished.recv_timeout(limit).is_err() {
                stop.store(true, Ordering::SeqCst);
                translator::runtime::request_exit_all();
            }
        });
        let result = drive(&mut vcpu, stop);
        let _ = done.send(());
        result
    })
}

/// The exit loop: port 0xf4 ends the run, other ports read all ones and
/// ignore writes, HLT ends it as a stop.
fn drive(vcpu: &mut BtVcpu, stop: &AtomicBool) -> Outcome {
    loop {
        match vcpu.run() {
            VcpuExit::IoIn { data, .. } => data.fill(0xff),
            VcpuExit::IoOut { port: 0xf4, .. } => return Outcome::Exited,
            VcpuExit::IoOut { .. } => {}
            VcpuExit::Hlt => return Outcome::Exited,
            VcpuExit::Interrupted | VcpuExit::InterruptWindow => {}
            VcpuExit::Stopped(s) => return Outcome::Stopped(s),
        }
        if stop.load(Ordering::SeqCst) {
            return Outcome::Watchdog;
        }
    }
}
