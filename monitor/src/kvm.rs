//! A speed test of `/dev/kvm` with a tiny 32-bit protected-mode guest.
//!
//! Whether `/dev/kvm` exists says little about whether it can run a 32-bit
//! guest usefully: some kernels (for example `kvm_pvm`, which runs guests
//! without hardware virtualization) emulate 32-bit code instruction by
//! instruction. So the probe actually runs a guest: flat 4 GiB code and data
//! segments loaded through `KVM_SET_SREGS`, paging off, executing a counted
//! `dec ecx; jnz` loop and reporting each finished round with `out`.
//!
//! Invariants:
//! * The probe never runs for longer than [`ProbeLimits::hard_limit`]: the
//!   vCPU runs on its own thread, and the calling thread kicks it with a
//!   signal (repeatedly, so a kick cannot be lost between the stop check and
//!   `KVM_RUN`) once the measuring window has passed. If the vCPU still does
//!   not stop, the thread is abandoned and an error is returned.
//! * The guest image, its memory and the VM are private to the probe and are
//!   released when the probe thread ends.

use crate::config::VmConfig;
use crate::mode::{self, HostCapabilities, Support};
use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::os::unix::thread::JoinHandleExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// Guest-physical size of the probe guest's memory (four pages).
const GUEST_MEMORY_SIZE: usize = 0x4000;
/// Where the GDT lives.
const GDT_ADDRESS: u64 = 0x0000;
/// Where the code starts (the initial EIP).
const CODE_ADDRESS: u64 = 0x1000;
/// Where the guest reads the number of loop iterations per round.
const ROUND_LENGTH_ADDRESS: u64 = 0x2000;
/// The initial stack pointer.
const STACK_TOP: u64 = 0x4000;
/// The port the guest writes to after each round.
const REPORT_PORT: u16 = 0x80;
/// Guest instructions executed per loop iteration (`dec ecx`, `jnz`).
const INSTRUCTIONS_PER_ITERATION: u64 = 2;
/// The first round's length; rounds double while they finish quickly.
const FIRST_ROUND_ITERATIONS: u32 = 50_000;
/// Rounds are lengthened until they take at least this long.
const TARGET_ROUND_TIME: Duration = Duration::from_millis(5);
/// How often the kicker re-sends the signal until the vCPU thread answers.
const KICK_INTERVAL: Duration = Duration::from_millis(2);

/// EIP offsets of the loop body (`dec ecx` and `jnz`), relative to the code.
const LOOP_DEC_OFFSET: u64 = 6;
const LOOP_JNZ_OFFSET: u64 = 7;

/// The guest program, placed at [`CODE_ADDRESS`]:
///
/// ```text
/// 0x1000  8B 0D 00 20 00 00   mov ecx, [0x2000]
/// 0x1006  49                  dec ecx
/// 0x1007  75 FD               jnz 0x1006
/// 0x1009  E6 80               out 0x80, al
/// 0x100B  EB F3               jmp 0x1000
/// ```
const GUEST_CODE: [u8; 13] = [
    0x8B, 0x0D, 0x00, 0x20, 0x00, 0x00, // mov ecx, [ROUND_LENGTH_ADDRESS]
    0x49, // dec ecx
    0x75, 0xFD, // jnz -3
    0xE6, 0x80, // out REPORT_PORT, al
    0xEB, 0xF3, // jmp -13
];

/// Whether the host CPU offers VT-x (CPUID.1:ECX.VMX) or AMD-V
/// (CPUID.8000_0001:ECX.SVM), as `cpuid` answers.
pub fn hardware_virtualization_visible(cpuid: &dyn Fn(u32, u32) -> [u32; 4]) -> bool {
    let vmx = cpuid(1, 0)[2] >> 5 & 1 == 1;
    let svm = cpuid(0x8000_0000, 0)[0] >= 0x8000_0001 && cpuid(0x8000_0001, 0)[2] >> 2 & 1 == 1;
    vmx || svm
}

/// Why hardware execution is not usable on a host without VT-x/AMD-V.
pub const NO_HARDWARE_VIRTUALIZATION: &str = "the host CPU offers no VT-x/AMD-V (CPUID), so \
     /dev/kvm, if present, can only emulate a 32-bit guest (as kvm_pvm does), far below hardware speed";

/// The capabilities `nestmon run` resolves its modes against: those of
/// [`crate::probe::host_capabilities`], except that a host whose CPU shows
/// no VT-x/AMD-V is not usable for hardware execution without running the
/// speed test ("hardware" means real VT-x/AMD-V; a `/dev/kvm` there
/// emulates, and measuring it would only cost every run time).
pub fn capabilities_for_run(config: &VmConfig, limits: ProbeLimits) -> HostCapabilities {
    let cpuid = crate::probe::host_cpuid;
    if mode::needs_hardware_probe(config) && !hardware_virtualization_visible(&cpuid) {
        let unusable = Support::Unusable(NO_HARDWARE_VIRTUALIZATION.to_string());
        return HostCapabilities {
            hardware_exec: unusable.clone(),
            hardware_mmu: unusable,
            outer_hypervisor: crate::probe::outer_hypervisor_signature(&cpuid),
        };
    }
    crate::probe::host_capabilities(config, limits)
}

/// The capabilities under `--accel`: nothing is measured; the hardware
/// MMU is usable where KVM itself uses EPT/NPT.
pub fn capabilities_forced() -> HostCapabilities {
    let slat = if kvm_uses_slat(Path::new("/sys/module")) {
        Support::Usable
    } else {
        Support::Unusable("KVM does not use EPT/NPT on this host".to_string())
    };
    HostCapabilities {
        hardware_exec: Support::NotProbed,
        hardware_mmu: slat,
        outer_hypervisor: crate::probe::outer_hypervisor_signature(&crate::probe::host_cpuid),
    }
}

/// Whether a loaded KVM module uses second-level translation: its
/// `ept` (kvm_intel) or `npt` (kvm_amd) parameter under `sys_module`.
pub fn kvm_uses_slat(sys_module: &Path) -> bool {
    [("kvm_intel", "ept"), ("kvm_amd", "npt")]
        .iter()
        .any(|(module, parameter)| {
            std::fs::read_to_string(sys_module.join(module).join("parameters").join(parameter))
                .is_ok_and(|value| matches!(value.trim(), "Y" | "y" | "1"))
        })
}

/// How long the speed test may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeLimits {
    /// How long the guest is measured.
    pub measure: Duration,
    /// After this, the probe gives up on a vCPU that does not stop.
    pub hard_limit: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            measure: Duration::from_millis(250),
            hard_limit: Duration::from_millis(1000),
        }
    }
}

/// The result of a speed test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeedReport {
    /// Guest instructions retired during the measurement.
    pub instructions: u64,
    /// How long the guest was measured.
    pub elapsed: Duration,
}

impl SpeedReport {
    /// Guest instructions per second.
    pub fn instructions_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds == 0.0 {
            0.0
        } else {
            self.instructions as f64 / seconds
        }
    }
}

/// Why the speed test could not produce a figure.
#[derive(Debug, thiserror::Error)]
pub enum KvmProbeError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0}")]
    Open(std::io::Error),
    /// A KVM ioctl failed.
    #[error("{operation} failed: {source}")]
    Ioctl {
        /// What was being done.
        operation: &'static str,
        /// The error the kernel returned.
        source: std::io::Error,
    },
    /// The probe guest's memory could not be allocated.
    #[error("cannot allocate the probe guest's memory: {0}")]
    Memory(std::io::Error),
    /// The guest stopped in a way the probe program never does.
    #[error("the probe guest stopped unexpectedly: {0}")]
    UnexpectedExit(String),
    /// The vCPU thread did not answer its kicks.
    #[error("the probe vCPU did not stop within {0:?} and was abandoned")]
    DidNotStop(Duration),
    /// The vCPU thread could not be started.
    #[error("cannot start the probe vCPU thread: {0}")]
    Thread(std::io::Error),
}

/// Runs the probe guest for `limits.measure` and reports its speed.
///
/// Never takes much longer than `limits.hard_limit`.
pub fn measure_protected_mode_speed(limits: ProbeLimits) -> Result<SpeedReport, KvmProbeError> {
    supervise(limits, run_probe_guest)
}

/// Runs `vcpu` on its own thread (it must return once the flag it is given
/// is set) and enforces `limits` on it: the flag is set once
/// `limits.measure` has passed, the thread is then kicked every
/// [`KICK_INTERVAL`] (a kick makes a blocking system call such as
/// `KVM_RUN` fail with `EINTR`), and a thread that has still not answered
/// by `limits.hard_limit` is abandoned with [`KvmProbeError::DidNotStop`].
fn supervise<F>(limits: ProbeLimits, vcpu: F) -> Result<SpeedReport, KvmProbeError>
where
    F: FnOnce(&AtomicBool) -> Result<SpeedReport, KvmProbeError> + Send + 'static,
{
    install_kick_handler();
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = mpsc::channel();
    let vcpu_stop = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let result = vcpu(&vcpu_stop);
            // The receiver may have given up already; nothing to do then.
            let _ = sender.send(result);
        })
        .map_err(KvmProbeError::Thread)?;
    let thread_id = handle.as_pthread_t();

    let started = Instant::now();
    if let Ok(result) = receiver.recv_timeout(limits.measure) {
        return result;
    }
    stop.store(true, Ordering::SeqCst);
    let deadline = started + limits.hard_limit;
    loop {
        kick(thread_id);
        match receiver.recv_timeout(KICK_INTERVAL) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(KvmProbeError::UnexpectedExit(
                    "the probe thread ended without a result".into(),
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                // Dropping the handle detaches the thread; it owns all its state.
                drop(handle);
                return Err(KvmProbeError::DidNotStop(limits.hard_limit));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// The signal used to kick the probe vCPU out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

extern "C" fn ignore_kick(_signal: libc::c_int) {}

/// Installs a do-nothing handler so the kick signal interrupts `KVM_RUN`
/// (which then fails with `EINTR`) instead of killing the process.
fn install_kick_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `sigaction` is plain data; all-zero is a valid starting value.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0;
        // SAFETY: `action.sa_mask` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: the handler is async-signal-safe (it does nothing), `action`
        // is fully initialised and a null old-action pointer is allowed.
        let status = unsafe { libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) };
        debug_assert_eq!(status, 0, "sigaction rejected the kick signal");
    });
}

/// Sends the kick signal to the probe thread.
fn kick(thread: libc::pthread_t) {
    // SAFETY: `thread` comes from a `JoinHandle` that has not been joined or
    // dropped, so it names a live (or finished but unjoined) thread, and the
    // signal has a handler installed.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}

/// Anonymous, page-aligned host memory backing the probe guest.
struct GuestMemory {
    base: *mut u8,
    len: usize,
}

impl GuestMemory {
    fn new(len: usize) -> Result<Self, KvmProbeError> {
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; the result is checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(KvmProbeError::Memory(std::io::Error::last_os_error()));
        }
        Ok(GuestMemory {
            base: base.cast(),
            len,
        })
    }

    /// Copies `bytes` to guest-physical `address`.
    fn write(&self, address: u64, bytes: &[u8]) {
        let start = usize::try_from(address).expect("probe addresses fit in usize");
        assert!(
            start + bytes.len() <= self.len,
            "probe guest write out of range"
        );
        // SAFETY: the range was checked to lie inside the mapping, which lives
        // as long as `self`; the vCPU is not running while the probe writes
        // (writes happen only between `KVM_RUN` calls on this same thread).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(start), bytes.len()) };
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping created in `new` and not
        // unmapped elsewhere; the VM using it has been dropped before this
        // (fields of `ProbeVm` drop in declaration order).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The VM, its one vCPU and its memory, dropped in this order.
struct ProbeVm {
    vcpu: VcpuFd,
    _vm: VmFd,
    memory: GuestMemory,
}

fn ioctl_error(operation: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmProbeError {
    move |error| KvmProbeError::Ioctl {
        operation,
        source: std::io::Error::from_raw_os_error(error.errno()),
    }
}

/// Creates the VM and loads the guest program and its initial state.
fn build_probe_vm() -> Result<ProbeVm, KvmProbeError> {
    let kvm = Kvm::new()
        .map_err(|e| KvmProbeError::Open(std::io::Error::from_raw_os_error(e.errno())))?;
    let vm = kvm.create_vm().map_err(ioctl_error("KVM_CREATE_VM"))?;
    let memory = GuestMemory::new(GUEST_MEMORY_SIZE)?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: GUEST_MEMORY_SIZE as u64,
        userspace_addr: memory.base as u64,
    };
    // SAFETY: the region describes `memory`, which outlives the VM (see the
    // field order of `ProbeVm`) and is not used for anything else.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(ioctl_error("KVM_SET_USER_MEMORY_REGION"))?;
    write_guest_image(&memory);
    let vcpu = vm.create_vcpu(0).map_err(ioctl_error("KVM_CREATE_VCPU"))?;
    enter_flat_protected_mode(&vcpu)?;
    Ok(ProbeVm {
        vcpu,
        _vm: vm,
        memory,
    })
}

/// Writes the GDT, the program and the first round length.
fn write_guest_image(memory: &GuestMemory) {
    let gdt: [u64; 3] = [
        0,
        0x00CF_9B00_0000_FFFF, // 0x08: flat 32-bit code, execute/read, accessed
        0x00CF_9300_0000_FFFF, // 0x10: flat 32-bit data, read/write, accessed
    ];
    for (index, descriptor) in gdt.iter().enumerate() {
        memory.write(GDT_ADDRESS + 8 * index as u64, &descriptor.to_le_bytes());
    }
    memory.write(CODE_ADDRESS, &GUEST_CODE);
    memory.write(ROUND_LENGTH_ADDRESS, &FIRST_ROUND_ITERATIONS.to_le_bytes());
}

fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 32-bit protected mode with flat segments, paging off.
fn enter_flat_protected_mode(vcpu: &VcpuFd) -> Result<(), KvmProbeError> {
    let mut sregs = vcpu.get_sregs().map_err(ioctl_error("KVM_GET_SREGS"))?;
    sregs.cs = flat_segment(0x08, 0xB);
    let data = flat_segment(0x10, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = GDT_ADDRESS;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.tr = kvm_segment {
        limit: 0x67,
        type_: 0xB, // busy 32-bit TSS, as VM entry requires
        s: 0,
        db: 0,
        g: 0,
        ..flat_segment(0, 0)
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        present: 0,
        type_: 0x2,
        s: 0,
        db: 0,
        g: 0,
        limit: 0,
        ..flat_segment(0, 0)
    };
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs)
        .map_err(ioctl_error("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(ioctl_error("KVM_GET_REGS"))?;
    regs.rip = CODE_ADDRESS;
    regs.rsp = STACK_TOP;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).map_err(ioctl_error("KVM_SET_REGS"))?;
    Ok(())
}

/// Counts finished rounds and adapts the round length.
struct Progress {
    round_iterations: u32,
    iterations: u64,
    round_started: Instant,
}

impl Progress {
    /// Accounts a finished round; returns the next round's length.
    fn finish_round(&mut self) -> u32 {
        self.iterations += u64::from(self.round_iterations);
        let took = self.round_started.elapsed();
        if took < TARGET_ROUND_TIME && self.round_iterations <= u32::MAX / 2 {
            self.round_iterations *= 2;
        }
        self.round_started = Instant::now();
        self.round_iterations
    }

    /// Adds the part of an unfinished round, read from the stopped vCPU.
    fn add_partial_round(&mut self, vcpu: &VcpuFd) {
        let Ok(regs) = vcpu.get_regs() else {
            return;
        };
        let in_loop = regs.rip == CODE_ADDRESS + LOOP_DEC_OFFSET
            || regs.rip == CODE_ADDRESS + LOOP_JNZ_OFFSET;
        if in_loop {
            let remaining = regs.rcx & 0xFFFF_FFFF;
            self.iterations += u64::from(self.round_iterations).saturating_sub(remaining);
        }
    }
}

/// Builds and runs the probe guest until `stop` is set; runs on its own thread.
fn run_probe_guest(stop: &AtomicBool) -> Result<SpeedReport, KvmProbeError> {
    let mut probe = build_probe_vm()?;
    let started = Instant::now();
    let mut progress = Progress {
        round_iterations: FIRST_ROUND_ITERATIONS,
        iterations: 0,
        round_started: started,
    };
    while !stop.load(Ordering::SeqCst) {
        match probe.vcpu.run() {
            Ok(VcpuExit::IoOut(REPORT_PORT, _)) => {
                let next = progress.finish_round();
                probe
                    .memory
                    .write(ROUND_LENGTH_ADDRESS, &next.to_le_bytes());
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => return Err(KvmProbeError::UnexpectedExit(format!("{other:?}"))),
            Err(error) if error.errno() == libc::EINTR || error.errno() == libc::EAGAIN => {}
            Err(error) => return Err(ioctl_error("KVM_RUN")(error)),
        }
    }
    let elapsed = started.elapsed();
    progress.add_partial_round(&probe.vcpu);
    Ok(SpeedReport {
        instructions: progress.iterations * INSTRUCTIONS_PER_ITERATION,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_or_svm_bits_show_hardware_virtualization() {
        let none = |_leaf: u32, _sub: u32| [0x8000_0001, 0, 0, 0];
        assert!(!hardware_virtualization_visible(&none));
        let vmx = |leaf: u32, _sub: u32| if leaf == 1 { [0, 0, 1 << 5, 0] } else { [0; 4] };
        assert!(hardware_virtualization_visible(&vmx));
        let svm = |leaf: u32, _sub: u32| match leaf {
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0001 => [0, 0, 1 << 2, 0],
            _ => [0; 4],
        };
        assert!(hardware_virtualization_visible(&svm));
        let svm_bit_without_leaf = |leaf: u32, _sub: u32| match leaf {
            0x8000_0001 => [0, 0, 1 << 2, 0],
            _ => [0; 4],
        };
        assert!(!hardware_virtualization_visible(&svm_bit_without_leaf));
    }

    #[test]
    fn slat_comes_from_the_kvm_modules_parameters() {
        let dir = std::env::temp_dir().join(format!("nestmon-slat-{}", std::process::id()));
        let params = dir.join("kvm_intel").join("parameters");
        std::fs::create_dir_all(&params).unwrap();
        assert!(!kvm_uses_slat(&dir));
        std::fs::write(params.join("ept"), "N\n").unwrap();
        assert!(!kvm_uses_slat(&dir));
        std::fs::write(params.join("ept"), "Y\n").unwrap();
        assert!(kvm_uses_slat(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn guest_code_loop_offsets_match_the_listing() {
        assert_eq!(GUEST_CODE[LOOP_DEC_OFFSET as usize], 0x49);
        assert_eq!(GUEST_CODE[LOOP_JNZ_OFFSET as usize], 0x75);
        // The jnz displacement lands on the dec.
        let after_jnz = LOOP_JNZ_OFFSET as i64 + 2;
        assert_eq!(
            after_jnz + i64::from(GUEST_CODE[8] as i8),
            LOOP_DEC_OFFSET as i64
        );
        // The final jmp lands on the first instruction.
        let after_jmp = GUEST_CODE.len() as i64;
        assert_eq!(after_jmp + i64::from(GUEST_CODE[12] as i8), 0);
        assert_eq!(GUEST_CODE[10], REPORT_PORT as u8);
    }

    #[test]
    fn speed_is_instructions_over_elapsed_seconds() {
        let report = SpeedReport {
            instructions: 3_000_000,
            elapsed: Duration::from_millis(1500),
        };
        assert!((report.instructions_per_second() - 2_000_000.0).abs() < 1.0);
    }

    #[test]
    fn zero_elapsed_time_reports_zero_speed() {
        let report = SpeedReport {
            instructions: 10,
            elapsed: Duration::ZERO,
        };
        assert_eq!(report.instructions_per_second(), 0.0);
    }

    /// How long a test waits for a probe before calling it hung: far
    /// beyond every limit the tests set, so reaching it means the probe
    /// does not end by itself, not that the host is slow.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    /// A hard limit no responsive thread can miss, even on a loaded host
    /// (below [`HANG_GUARD`], so a thread that never answers is still
    /// reported as abandoned rather than hung).
    const GENEROUS_HARD_LIMIT: Duration = Duration::from_secs(30);

    /// Runs `probe` on its own thread and returns its result; fails the
    /// test if it has not returned within [`HANG_GUARD`].
    fn within_hang_guard<T: Send + 'static>(probe: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(probe());
        });
        receiver
            .recv_timeout(HANG_GUARD)
            .expect("the probe did not return within the hang guard")
    }

    fn report_of(instructions: u64) -> SpeedReport {
        SpeedReport {
            instructions,
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_vcpu_that_never_stops_is_abandoned_at_the_hard_limit() {
        let limits = ProbeLimits {
            measure: Duration::from_millis(10),
            hard_limit: Duration::from_millis(50),
        };
        let (release, released) = mpsc::channel::<()>();
        let (flag_sender, flag_seen) = mpsc::channel();
        let result = within_hang_guard(move || {
            supervise(limits, move |stop| {
                // Deaf to the stop flag and to the kicks (the wait retries
                // after EINTR): it returns only once the test releases it,
                // which is after `supervise` has returned.
                let _ = released.recv();
                let _ = flag_sender.send(stop.load(Ordering::SeqCst));
                Ok(report_of(1))
            })
        });
        assert!(
            matches!(result, Err(KvmProbeError::DidNotStop(limit)) if limit == limits.hard_limit),
            "{result:?}"
        );
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("did not stop within 50ms and was abandoned"));
        drop(release);
        assert_eq!(
            flag_seen.recv_timeout(HANG_GUARD),
            Ok(true),
            "the abandoned thread had been told to stop"
        );
    }

    #[test]
    fn a_vcpu_that_polls_the_stop_flag_is_told_to_stop_and_its_report_returned() {
        let limits = ProbeLimits {
            measure: Duration::from_millis(10),
            hard_limit: GENEROUS_HARD_LIMIT,
        };
        let result = within_hang_guard(move || {
            supervise(limits, |stop| {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(report_of(42))
            })
        });
        assert_eq!(result.unwrap(), report_of(42));
    }

    #[test]
    fn a_vcpu_blocked_in_a_system_call_is_kicked_out_of_it() {
        let limits = ProbeLimits {
            measure: Duration::from_millis(10),
            hard_limit: GENEROUS_HARD_LIMIT,
        };
        let result = within_hang_guard(move || {
            supervise(limits, |stop| {
                // Like `KVM_RUN`: blocked in the kernel until a signal
                // handler runs. Blocks at least once, even when the flag
                // is already set, so only a kick can end this.
                let mut wakeups = 0;
                loop {
                    // SAFETY: pause(2) only waits for a signal; the kick
                    // signal has a do-nothing handler (`supervise`
                    // installs it before starting this thread).
                    unsafe { libc::pause() };
                    wakeups += 1;
                    if stop.load(Ordering::SeqCst) {
                        return Ok(report_of(wakeups));
                    }
                }
            })
        });
        let report = result.expect("the kicks woke the blocked thread");
        assert!(report.instructions >= 1);
    }

    #[test]
    fn probe_of_the_hosts_dev_kvm_ends_with_a_result() {
        let limits = ProbeLimits {
            measure: Duration::from_millis(50),
            hard_limit: Duration::from_millis(400),
        };
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let result = within_hang_guard(move || measure_protected_mode_speed(limits));
        match &result {
            Ok(report) => assert!(report.instructions_per_second().is_finite()),
            Err(KvmProbeError::DidNotStop(limit)) => assert_eq!(*limit, limits.hard_limit),
            Err(_) => {}
        }
        assert_eq!(
            matches!(result, Err(KvmProbeError::Open(_))),
            !opens,
            "/dev/kvm opens for this test: {opens}; the probe: {result:?}"
        );
    }
}
