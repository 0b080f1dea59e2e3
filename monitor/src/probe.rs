//! `nestmon probe`: what the host can offer a 32-bit guest.
//!
//! Reports the host CPU, the outer hypervisor (CPUID leaf 0x4000_0000),
//! whether virtualized VT-x/AMD-V and second-level translation are visible,
//! what `/dev/kvm` is and how fast it really runs a 32-bit protected-mode
//! guest (by running one, see [`crate::kvm`]), whether an outer VMware
//! backdoor answers, and the modes `automatic` would select.
//!
//! Invariants:
//! * The probe never hangs: the only potentially slow step, the KVM speed
//!   test, is bounded by [`ProbeLimits::hard_limit`].
//! * The selected modes are computed by [`crate::mode::resolve`] from the
//!   same facts the report shows, so the report and `nestmon run` agree.

use crate::config::VmConfig;
use crate::cpuid::{hypervisor_signature, register_text, vendor_string};
use crate::kvm::{measure_protected_mode_speed, ProbeLimits, SpeedReport};
use crate::mode::{self, HostCapabilities, Support};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// Guest instructions per second a 32-bit guest must reach under `/dev/kvm`
/// for hardware execution to count as usable. Binary translation of the
/// probe loop runs well above this; `kvm_pvm` emulation runs far below.
pub const USABLE_INSTRUCTIONS_PER_SECOND: f64 = 100e6;

/// Kernel modules that can provide `/dev/kvm`, in reporting order.
const KVM_MODULES: &[&str] = &["kvm_intel", "kvm_amd", "kvm_pvm"];

/// The host's `CPUID` instruction.
pub fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let result = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [result.eax, result.ebx, result.ecx, result.edx]
}

/// The host TSC frequency measured against the monotonic clock: the
/// median of three 5 ms windows, rounded to kHz (what CPUID leaf
/// 0x40000010 reports). `None` if the clock did not advance.
pub fn measure_tsc_hz() -> Option<u64> {
    let mut rates: Vec<u64> = (0..3)
        .filter_map(|_| tsc_rate_over(std::time::Duration::from_millis(5)))
        .collect();
    rates.sort_unstable();
    rates
        .get(rates.len() / 2)
        .map(|hz| (hz + 500) / 1000 * 1000)
}

/// The host TSC frequency as [`measure_tsc_hz`] measures it, measured once
/// per boot of the host: kept in `tsc-hz` of nestmon's cache directory
/// (`$NESTMON_CACHE`, else `$XDG_CACHE_HOME/nestmon`, else
/// `~/.cache/nestmon`) with the host's boot id, since the measurement
/// spins for 15-30 ms and the TSC's rate does not change while the host
/// runs. Without a boot id or a writable cache it measures every time.
pub fn host_tsc_hz() -> Option<u64> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    match (cache_dir(), boot_id) {
        (Some(dir), Some(id)) => cached_tsc_hz(&dir, id.trim(), measure_tsc_hz),
        _ => measure_tsc_hz(),
    }
}

/// nestmon's cache directory (see [`host_tsc_hz`]).
fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("NESTMON_CACHE") {
        return Some(dir.into());
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Some(std::path::PathBuf::from(dir).join("nestmon"));
    }
    var("HOME").map(|home| std::path::PathBuf::from(home).join(".cache/nestmon"))
}

/// The frequency recorded in `dir/tsc-hz` for boot `boot_id`, or else
/// `measure`'s, recorded there (best effort: a cache that cannot be
/// written costs only the next run's measurement).
fn cached_tsc_hz(dir: &Path, boot_id: &str, measure: impl FnOnce() -> Option<u64>) -> Option<u64> {
    let file = dir.join("tsc-hz");
    let recorded = std::fs::read_to_string(&file).ok().and_then(|text| {
        let (id, hz) = text.trim().split_once(' ')?;
        (id == boot_id).then(|| hz.parse::<u64>().ok()).flatten()
    });
    if let Some(hz) = recorded.filter(|hz| *hz > 0) {
        return Some(hz);
    }
    let hz = measure()?;
    let temporary = dir.join(format!("tsc-hz.{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&temporary, format!("{boot_id} {hz}\n")))
        .and_then(|()| std::fs::rename(&temporary, &file));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    Some(hz)
}

/// TSC ticks per second over one window of about `window`.
fn tsc_rate_over(window: std::time::Duration) -> Option<u64> {
    let (start, tsc0) = tsc_stamp();
    let mut now = (start, tsc0);
    while now.0.duration_since(start) < window {
        now = tsc_stamp();
    }
    let nanos = now.0.duration_since(start).as_nanos();
    let ticks = u128::from(now.1.wrapping_sub(tsc0));
    (nanos > 0).then(|| (ticks * 1_000_000_000 / nanos) as u64)
}

/// A clock reading and the TSC at the same moment: the midpoint of two TSC
/// reads around the clock read, retried while they lie far apart (the
/// thread was preempted in between).
fn tsc_stamp() -> (std::time::Instant, u64) {
    loop {
        // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
        let before = unsafe { core::arch::x86_64::_rdtsc() };
        let now = std::time::Instant::now();
        // SAFETY: as above.
        let after = unsafe { core::arch::x86_64::_rdtsc() };
        if after.wrapping_sub(before) < 20_000 {
            return (now, before + (after - before) / 2);
        }
    }
}

/// The host CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostCpu {
    /// `GenuineIntel`, `AuthenticAMD`, …
    pub vendor: String,
    /// The brand string (leaves 0x8000_0002..=0x8000_0004), trimmed.
    pub brand: String,
}

/// Hardware virtualization visible to this (possibly virtual) host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HardwareVirtualization {
    /// Intel VT-x (CPUID.1:ECX.VMX).
    pub vmx: bool,
    /// AMD-V (CPUID.8000_0001:ECX.SVM).
    pub svm: bool,
    /// Intel EPT (`ept` in /proc/cpuinfo).
    pub ept: bool,
    /// AMD NPT (CPUID.8000_000A:EDX.NP or `npt` in /proc/cpuinfo).
    pub npt: bool,
}

impl HardwareVirtualization {
    /// True if VT-x or AMD-V is offered.
    pub fn present(&self) -> bool {
        self.vmx || self.svm
    }

    /// True if second-level translation is offered.
    pub fn second_level_translation(&self) -> bool {
        self.ept || self.npt
    }
}

/// What `/dev/kvm` is and whether it runs 32-bit guests usefully.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvmReport {
    /// `/dev/kvm` exists.
    pub present: bool,
    /// The kernel module providing it (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub module: Option<String>,
    /// The speed test ran to completion.
    pub speed_tested: bool,
    /// Guest instructions per second in 32-bit protected mode.
    pub instructions_per_second: Option<f64>,
    /// The speed needed to count as usable.
    pub threshold_instructions_per_second: f64,
    /// Whether hardware execution through `/dev/kvm` is usable.
    pub usable: bool,
    /// `usable` or `not usable`.
    pub verdict: String,
    /// Why, in one sentence.
    pub reason: String,
}

/// The outer VMware backdoor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackdoorReport {
    /// The port was actually tried.
    pub attempted: bool,
    /// What happened.
    pub result: String,
}

/// The modes `automatic` selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selected {
    /// `software` (binary translation) or `hardware`.
    pub virtual_exec: String,
    /// `software` (shadow page tables) or `hardware`.
    pub virtual_mmu: String,
}

/// Everything `nestmon probe` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeReport {
    /// The host CPU.
    pub host_cpu: HostCpu,
    /// The outer hypervisor's CPUID signature (`KVMKVMKVM`, …), if any.
    pub outer_hypervisor: Option<String>,
    /// Its common name (`KVM`, `VMware`, …) or `none`.
    pub outer_hypervisor_name: String,
    /// VT-x or AMD-V is offered to this host.
    pub virtualized_hv: bool,
    /// Details of the hardware virtualization offered.
    pub hardware_virtualization: HardwareVirtualization,
    /// `/dev/kvm`.
    pub kvm: KvmReport,
    /// The outer VMware backdoor.
    pub backdoor: BackdoorReport,
    /// What `automatic` selects.
    pub selected: Selected,
    /// Why.
    pub reason: String,
}

/// Probes the host; the `/dev/kvm` speed test runs within `limits`.
pub fn probe(limits: ProbeLimits) -> ProbeReport {
    let outer_detection = backdoor::outer::detect_outer();
    let outer_hypervisor = outer_hypervisor_signature(&host_cpuid);
    let hardware_virtualization = hardware_virtualization(&host_cpuid, &cpuinfo_flags());
    let kvm = probe_kvm(limits);
    let capabilities = capabilities_from(&kvm, &hardware_virtualization, &outer_hypervisor);
    let (selected, reason) = automatic_selection(&capabilities);
    ProbeReport {
        host_cpu: host_cpu(&host_cpuid),
        outer_hypervisor_name: hypervisor_name(outer_hypervisor.as_deref()),
        outer_hypervisor,
        virtualized_hv: hardware_virtualization.present(),
        hardware_virtualization,
        kvm,
        backdoor: backdoor_report(&outer_detection),
        selected,
        reason,
    }
}

/// The capabilities `nestmon run` resolves its modes against. The KVM
/// speed test only runs when the outcome could depend on it
/// ([`mode::needs_hardware_probe`]).
pub fn host_capabilities(config: &VmConfig, limits: ProbeLimits) -> HostCapabilities {
    let outer_hypervisor = outer_hypervisor_signature(&host_cpuid);
    if !mode::needs_hardware_probe(config) {
        return HostCapabilities {
            hardware_exec: Support::NotProbed,
            hardware_mmu: Support::NotProbed,
            outer_hypervisor,
        };
    }
    let hardware_virtualization = hardware_virtualization(&host_cpuid, &cpuinfo_flags());
    let kvm = probe_kvm(limits);
    capabilities_from(&kvm, &hardware_virtualization, &outer_hypervisor)
}

fn automatic_selection(capabilities: &HostCapabilities) -> (Selected, String) {
    let automatic = VmConfig::default();
    match mode::resolve(&automatic, capabilities) {
        Ok(resolution) => (
            Selected {
                virtual_exec: resolution.exec.config_name().to_string(),
                virtual_mmu: resolution.mmu.config_name().to_string(),
            },
            resolution.reason,
        ),
        Err(error) => (
            Selected {
                virtual_exec: "none".to_string(),
                virtual_mmu: "none".to_string(),
            },
            error.to_string(),
        ),
    }
}

fn capabilities_from(
    kvm: &KvmReport,
    hardware_virtualization: &HardwareVirtualization,
    outer_hypervisor: &Option<String>,
) -> HostCapabilities {
    let hardware_exec = if kvm.usable {
        Support::Usable
    } else {
        Support::Unusable(kvm.reason.clone())
    };
    let hardware_mmu = match (
        &hardware_exec,
        hardware_virtualization.second_level_translation(),
    ) {
        (Support::Unusable(reason), _) => Support::Unusable(reason.clone()),
        (Support::NotProbed, _) => Support::NotProbed,
        (Support::Usable, true) => Support::Usable,
        (Support::Usable, false) => {
            Support::Unusable("the host offers no EPT/NPT second-level translation".to_string())
        }
    };
    HostCapabilities {
        hardware_exec,
        hardware_mmu,
        outer_hypervisor: outer_hypervisor.clone(),
    }
}

fn host_cpu(cpuid: &dyn Fn(u32, u32) -> [u32; 4]) -> HostCpu {
    let [_, ebx, ecx, edx] = cpuid(0, 0);
    let brand = if cpuid(0x8000_0000, 0)[0] >= 0x8000_0004 {
        let registers: Vec<u32> = (0x8000_0002..=0x8000_0004)
            .flat_map(|leaf| cpuid(leaf, 0))
            .collect();
        register_text(&registers).trim().to_string()
    } else {
        String::new()
    };
    HostCpu {
        vendor: vendor_string(ebx, ecx, edx),
        brand,
    }
}

/// The signature of leaf 0x4000_0000 when CPUID.1:ECX bit 31 says a
/// hypervisor is present.
pub fn outer_hypervisor_signature(cpuid: &dyn Fn(u32, u32) -> [u32; 4]) -> Option<String> {
    if cpuid(1, 0)[2] >> 31 & 1 == 0 {
        return None;
    }
    let [_, ebx, ecx, edx] = cpuid(0x4000_0000, 0);
    let signature = hypervisor_signature(ebx, ecx, edx);
    Some(signature.trim_end_matches(['\0', ' ']).to_string())
}

/// The common name of a hypervisor signature.
pub fn hypervisor_name(signature: Option<&str>) -> String {
    match signature {
        None => "none".to_string(),
        Some("KVMKVMKVM") => "KVM".to_string(),
        Some("VMwareVMware") => "VMware".to_string(),
        Some("Microsoft Hv") => "Microsoft Hyper-V".to_string(),
        Some("XenVMMXenVMM") => "Xen".to_string(),
        Some("TCGTCGTCGTCG") => "QEMU TCG".to_string(),
        Some(other) => format!("unknown ({other:?})"),
    }
}

fn hardware_virtualization(
    cpuid: &dyn Fn(u32, u32) -> [u32; 4],
    cpuinfo_flags: &[String],
) -> HardwareVirtualization {
    let has_flag = |name: &str| cpuinfo_flags.iter().any(|flag| flag == name);
    let max_extended = cpuid(0x8000_0000, 0)[0];
    let svm = max_extended >= 0x8000_0001 && cpuid(0x8000_0001, 0)[2] >> 2 & 1 == 1;
    let npt_cpuid = svm && max_extended >= 0x8000_000A && cpuid(0x8000_000A, 0)[3] & 1 == 1;
    HardwareVirtualization {
        vmx: cpuid(1, 0)[2] >> 5 & 1 == 1,
        svm,
        ept: has_flag("ept"),
        npt: npt_cpuid || has_flag("npt"),
    }
}

/// Every flag in /proc/cpuinfo's `flags` and `vmx flags` lines (first CPU).
fn cpuinfo_flags() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first_cpu = text.split("\n\n").next().unwrap_or_default();
    first_cpu
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| matches!(name.trim(), "flags" | "vmx flags"))
        .flat_map(|(_, flags)| flags.split_whitespace().map(str::to_string))
        .collect()
}

fn kvm_module(sys_module: &Path) -> Option<String> {
    KVM_MODULES
        .iter()
        .find(|module| sys_module.join(module).is_dir())
        .map(|module| module.to_string())
        .or_else(|| sys_module.join("kvm").is_dir().then(|| "kvm".to_string()))
}

fn probe_kvm(limits: ProbeLimits) -> KvmReport {
    let present = Path::new("/dev/kvm").exists();
    let module = kvm_module(Path::new("/sys/module"));
    if !present {
        return kvm_verdict(present, module, None, "/dev/kvm is not present".to_string());
    }
    match measure_protected_mode_speed(limits) {
        Ok(speed) => {
            let reason = speed_reason(module.as_deref(), &speed);
            kvm_verdict(present, module, Some(speed), reason)
        }
        Err(error) => kvm_verdict(present, module, None, error.to_string()),
    }
}

fn speed_reason(module: Option<&str>, speed: &SpeedReport) -> String {
    let rate = speed.instructions_per_second();
    let comparison = if rate >= USABLE_INSTRUCTIONS_PER_SECOND {
        "at least"
    } else {
        "below"
    };
    format!(
        "/dev/kvm ({}) runs a 32-bit protected-mode guest at {} instructions/s, {comparison} the {} \
         instructions/s needed",
        module.unwrap_or("unknown module"),
        human_rate(rate),
        human_rate(USABLE_INSTRUCTIONS_PER_SECOND)
    )
}

fn kvm_verdict(
    present: bool,
    module: Option<String>,
    speed: Option<SpeedReport>,
    reason: String,
) -> KvmReport {
    let instructions_per_second = speed.map(|s| s.instructions_per_second());
    let usable = instructions_per_second.is_some_and(|rate| rate >= USABLE_INSTRUCTIONS_PER_SECOND);
    KvmReport {
        present,
        module,
        speed_tested: speed.is_some(),
        instructions_per_second,
        threshold_instructions_per_second: USABLE_INSTRUCTIONS_PER_SECOND,
        usable,
        verdict: if usable { "usable" } else { "not usable" }.to_string(),
        reason,
    }
}

fn backdoor_report(detection: &backdoor::outer::OuterDetection) -> BackdoorReport {
    use backdoor::outer::BackdoorProbe;
    match &detection.backdoor {
        BackdoorProbe::NotVmware => BackdoorReport {
            attempted: false,
            result: "not attempted (outer hypervisor is not VMware)".to_string(),
        },
        other => BackdoorReport {
            attempted: true,
            result: other.to_string(),
        },
    }
}

/// `1.9 M`, `2.4 G`, … for instruction rates.
fn human_rate(rate: f64) -> String {
    if rate >= 1e9 {
        format!("{:.1} G", rate / 1e9)
    } else if rate >= 1e6 {
        format!("{:.1} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hv = &self.hardware_virtualization;
        writeln!(
            f,
            "host CPU:          {} ({})",
            self.host_cpu.vendor, self.host_cpu.brand
        )?;
        match &self.outer_hypervisor {
            Some(signature) => writeln!(
                f,
                "outer hypervisor:  {} ({signature})",
                self.outer_hypervisor_name
            )?,
            None => writeln!(f, "outer hypervisor:  none")?,
        }
        writeln!(
            f,
            "virtualized HV:    {} (VT-x {}, AMD-V {}, EPT {}, NPT {})",
            yes_no(self.virtualized_hv),
            yes_no(hv.vmx),
            yes_no(hv.svm),
            yes_no(hv.ept),
            yes_no(hv.npt)
        )?;
        writeln!(
            f,
            "/dev/kvm:          {}{}",
            if self.kvm.present {
                "present"
            } else {
                "absent"
            },
            self.kvm
                .module
                .as_ref()
                .map(|m| format!(", module {m}"))
                .unwrap_or_default()
        )?;
        if let Some(rate) = self.kvm.instructions_per_second {
            writeln!(f, "  32-bit guest:    {} instructions/s", human_rate(rate))?;
        }
        writeln!(
            f,
            "  verdict:         {} ({})",
            self.kvm.verdict, self.kvm.reason
        )?;
        writeln!(f, "outer backdoor:    {}", self.backdoor.result)?;
        writeln!(
            f,
            "automatic selects: monitor.virtual_exec = \"{}\", monitor.virtual_mmu = \"{}\"",
            self.selected.virtual_exec, self.selected.virtual_mmu
        )?;
        writeln!(f, "reason:            {}", self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_frequency_is_measured_once_per_boot_and_then_read_back() {
        let dir = std::env::temp_dir().join(format!("nestmon-tsc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            cached_tsc_hz(&dir, "boot-a", || Some(2_700_000_000)),
            Some(2_700_000_000)
        );
        let again = cached_tsc_hz(&dir, "boot-a", || panic!("measured again in the same boot"));
        assert_eq!(again, Some(2_700_000_000));
        // Another boot measures again and replaces the record.
        assert_eq!(
            cached_tsc_hz(&dir, "boot-b", || Some(3_000_000_000)),
            Some(3_000_000_000)
        );
        assert_eq!(cached_tsc_hz(&dir, "boot-b", || None), Some(3_000_000_000));
        // A record that does not parse is measured over.
        std::fs::write(dir.join("tsc-hz"), "boot-b many").unwrap();
        assert_eq!(cached_tsc_hz(&dir, "boot-b", || Some(1_000)), Some(1_000));
        // A failed measurement is not recorded.
        assert_eq!(cached_tsc_hz(&dir, "boot-c", || None), None);
        assert_eq!(cached_tsc_hz(&dir, "boot-c", || Some(5)), Some(5));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cache_that_cannot_be_written_still_gives_the_measurement() {
        let not_a_dir =
            std::env::temp_dir().join(format!("nestmon-tsc-file-{}", std::process::id()));
        std::fs::write(&not_a_dir, "a file").unwrap();
        assert_eq!(cached_tsc_hz(&not_a_dir, "boot", || Some(42)), Some(42));
        let _ = std::fs::remove_file(&not_a_dir);
    }

    #[test]
    fn measured_tsc_frequency_is_plausible_and_in_khz() {
        let hz = measure_tsc_hz().expect("the monotonic clock advances");
        assert!((100_000_000..20_000_000_000).contains(&hz), "{hz} Hz");
        assert_eq!(hz % 1000, 0);
    }
    use std::time::Duration;

    fn signature_registers(text: &str) -> [u32; 3] {
        let bytes: Vec<u8> = text.bytes().chain(std::iter::repeat(0)).take(12).collect();
        [0, 4, 8].map(|i| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]))
    }

    fn kvm_guest_host(leaf: u32, _subleaf: u32) -> [u32; 4] {
        let [ebx, ecx, edx] = signature_registers("KVMKVMKVM");
        match leaf {
            1 => [0, 0, 1 << 31, 0],
            0x4000_0000 => [0x4000_0001, ebx, ecx, edx],
            0x8000_0000 => [0x8000_000A, 0, 0, 0],
            0x8000_0001 => [0, 0, 1 << 2, 0],
            0x8000_000A => [0, 0, 0, 1],
            _ => [0; 4],
        }
    }

    fn bare_metal_host(leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            1 => [0, 0, 1 << 5, 0],
            _ => [0; 4],
        }
    }

    fn measured(rate: f64) -> KvmReport {
        let speed = SpeedReport {
            instructions: rate as u64,
            elapsed: Duration::from_secs(1),
        };
        kvm_verdict(
            true,
            Some("kvm_pvm".into()),
            Some(speed),
            speed_reason(Some("kvm_pvm"), &speed),
        )
    }

    #[test]
    fn outer_hypervisor_is_read_only_when_the_hypervisor_bit_is_set() {
        assert_eq!(
            outer_hypervisor_signature(&kvm_guest_host).as_deref(),
            Some("KVMKVMKVM")
        );
        assert_eq!(outer_hypervisor_signature(&bare_metal_host), None);
    }

    #[test]
    fn hypervisors_are_shown_by_name() {
        assert_eq!(hypervisor_name(Some("KVMKVMKVM")), "KVM");
        assert_eq!(hypervisor_name(Some("VMwareVMware")), "VMware");
        assert_eq!(hypervisor_name(Some("Microsoft Hv")), "Microsoft Hyper-V");
        assert_eq!(hypervisor_name(Some("XenVMMXenVMM")), "Xen");
        assert_eq!(hypervisor_name(None), "none");
        assert!(hypervisor_name(Some("Odd")).contains("Odd"));
    }

    #[test]
    fn svm_and_npt_come_from_cpuid_and_ept_from_cpuinfo() {
        let amd = hardware_virtualization(&kvm_guest_host, &[]);
        assert!(amd.svm && amd.npt && !amd.vmx && !amd.ept);
        let intel = hardware_virtualization(&bare_metal_host, &["vmx".into(), "ept".into()]);
        assert!(intel.vmx && intel.ept && intel.present() && intel.second_level_translation());
    }

    #[test]
    fn slow_kvm_is_not_usable_and_says_how_slow() {
        let report = measured(2.0e6);
        assert!(!report.usable);
        assert_eq!(report.verdict, "not usable");
        assert!(
            report.reason.contains("2.0 M instructions/s"),
            "{}",
            report.reason
        );
        assert!(report.reason.contains("below"));
    }

    #[test]
    fn fast_kvm_is_usable() {
        let report = measured(2.0e9);
        assert!(report.usable);
        assert_eq!(report.verdict, "usable");
    }

    #[test]
    fn unusable_kvm_selects_software_with_its_reason() {
        let kvm = measured(2.0e6);
        let hv = hardware_virtualization(&kvm_guest_host, &[]);
        let capabilities = capabilities_from(&kvm, &hv, &Some("KVMKVMKVM".into()));
        assert_eq!(
            capabilities.hardware_mmu,
            Support::Unusable(kvm.reason.clone())
        );
        let (selected, reason) = automatic_selection(&capabilities);
        assert_eq!(selected.virtual_exec, "software");
        assert_eq!(selected.virtual_mmu, "software");
        assert!(reason.contains("2.0 M instructions/s"), "{reason}");
    }

    #[test]
    fn usable_kvm_without_slat_offers_no_hardware_mmu() {
        let kvm = measured(2.0e9);
        let hv = hardware_virtualization(&bare_metal_host, &[]);
        let capabilities = capabilities_from(&kvm, &hv, &None);
        assert_eq!(capabilities.hardware_exec, Support::Usable);
        assert!(matches!(capabilities.hardware_mmu, Support::Unusable(_)));
    }

    #[test]
    fn missing_kvm_module_directory_reports_none() {
        let empty = std::env::temp_dir().join(format!("nestmon-no-modules-{}", std::process::id()));
        // A directory left by an earlier run with the same process id
        // would already hold the module.
        let _ = std::fs::remove_dir_all(&empty);
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(kvm_module(&empty), None);
        std::fs::create_dir_all(empty.join("kvm_amd")).unwrap();
        assert_eq!(kvm_module(&empty).as_deref(), Some("kvm_amd"));
        let _ = std::fs::remove_dir_all(&empty);
    }

    #[test]
    fn rates_are_humanized() {
        assert_eq!(human_rate(1_900_000.0), "1.9 M");
        assert_eq!(human_rate(2.5e9), "2.5 G");
        assert_eq!(human_rate(1500.0), "1.5 k");
        assert_eq!(human_rate(12.0), "12");
    }

    #[test]
    fn report_serializes_with_the_documented_keys() {
        let kvm = measured(2.0e6);
        let report = ProbeReport {
            host_cpu: HostCpu {
                vendor: "AuthenticAMD".into(),
                brand: "x".into(),
            },
            outer_hypervisor: Some("KVMKVMKVM".into()),
            outer_hypervisor_name: "KVM".into(),
            virtualized_hv: false,
            hardware_virtualization: hardware_virtualization(&bare_metal_host, &[]),
            kvm,
            backdoor: BackdoorReport {
                attempted: false,
                result: "not attempted".into(),
            },
            selected: Selected {
                virtual_exec: "software".into(),
                virtual_mmu: "software".into(),
            },
            reason: "r".into(),
        };
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "outer_hypervisor",
            "virtualized_hv",
            "kvm",
            "selected",
            "reason",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert_eq!(json["selected"]["virtual_exec"], "software");
        assert!(report
            .to_string()
            .contains("outer hypervisor:  KVM (KVMKVMKVM)"));
    }
}
