//! `nestmon probe`, through the binary.
//!
//! These tests hold on any host: what the report says about the CPU, the
//! outer hypervisor, hardware virtualization and `/dev/kvm` is checked
//! against the same facts read here independently (CPUID, `/dev/kvm`,
//! `/sys/module`, `/proc/cpuinfo`), and the selection against what the
//! report says is usable. A host whose `/dev/kvm` comes from `kvm_pvm`
//! (no VT-x/AMD-V; 32-bit guests run at a few million instructions per
//! second) gets that module's own expectations on top. No test depends on
//! how long the probe takes: a probe that does not end by itself within
//! [`HANG_GUARD`] fails as hung (the limits of its speed test are checked
//! as logic in `monitor/src/kvm.rs`).

#[path = "support/bounded_run.rs"]
mod bounded_run;

use bounded_run::{finish_within, nestmon, Finished};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// A probe still running after this hangs: its speed test stops itself
/// after about a second, so this is a hang check, not a time limit.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn probe(args: &[&str]) -> Finished {
    let run = finish_within(
        HANG_GUARD,
        &mut nestmon(args),
        Stdio::piped(),
        Stdio::piped(),
        false,
    );
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    run
}

fn probe_json() -> Value {
    let run = probe(&["probe", "--json"]);
    serde_json::from_str(&run.stdout).expect("probe --json prints JSON")
}

// ----- the host's facts, read without nestmon ------------------------------

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The text stored little-endian in `registers`, trailing NULs trimmed.
fn text(registers: &[u32]) -> String {
    let bytes: Vec<u8> = registers.iter().flat_map(|r| r.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_string()
}

/// CPUID.1:ECX bit 31, then leaf 0x4000_0000's signature (EBX, ECX, EDX).
fn outer_hypervisor() -> Option<String> {
    if cpuid(1)[2] >> 31 & 1 == 0 {
        return None;
    }
    let [_, ebx, ecx, edx] = cpuid(0x4000_0000);
    Some(
        text(&[ebx, ecx, edx])
            .trim_end_matches(['\0', ' '])
            .to_string(),
    )
}

fn max_extended_leaf() -> u32 {
    cpuid(0x8000_0000)[0]
}

fn cpuid_vmx() -> bool {
    cpuid(1)[2] >> 5 & 1 == 1
}

fn cpuid_svm() -> bool {
    max_extended_leaf() >= 0x8000_0001 && cpuid(0x8000_0001)[2] >> 2 & 1 == 1
}

/// The first CPU's `flags` and `vmx flags` in /proc/cpuinfo.
fn cpuinfo_flags() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first_cpu = text.split("\n\n").next().unwrap_or_default().to_string();
    first_cpu
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| matches!(name.trim(), "flags" | "vmx flags"))
        .flat_map(|(_, flags)| flags.split_whitespace().map(str::to_string))
        .collect()
}

fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).is_dir()
}

/// The module that provides `/dev/kvm`: the vendor modules (and
/// `kvm_pvm`) before the generic `kvm`.
fn kvm_module() -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm", "kvm"]
        .into_iter()
        .find(|module| module_loaded(module))
}

fn dev_kvm_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

// ----- the tests ------------------------------------------------------------

#[test]
fn probe_json_has_the_documented_keys() {
    let json = probe_json();
    for key in [
        "host_cpu",
        "outer_hypervisor",
        "virtualized_hv",
        "kvm",
        "backdoor",
        "selected",
        "reason",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert!(json["virtualized_hv"].is_boolean());
    assert!(json["kvm"].is_object());
    assert!(json["kvm"]["present"].is_boolean());
    assert!(json["kvm"]["usable"].is_boolean());
    for mode in ["virtual_exec", "virtual_mmu"] {
        let value = json["selected"][mode].as_str().unwrap();
        assert!(matches!(value, "software" | "hardware"), "{mode} = {value}");
    }
    assert!(!json["reason"].as_str().unwrap().is_empty());
}

#[test]
fn probe_ends_by_itself_with_a_complete_speed_verdict() {
    // Returning at all (within the hang guard) is the first half; the
    // second is that a speed test cut short says so instead of a rate.
    let kvm = probe_json()["kvm"].clone();
    let tested = kvm["speed_tested"].as_bool().expect("speed_tested");
    assert_eq!(
        kvm["instructions_per_second"].is_number(),
        tested,
        "a rate exactly when the speed test finished: {kvm}"
    );
    let reason = kvm["reason"].as_str().expect("a reason");
    assert!(!reason.is_empty(), "{kvm}");
    if tested {
        assert!(reason.contains("instructions/s"), "{kvm}");
    } else {
        assert_eq!(kvm["usable"], false, "{kvm}");
    }
}

#[test]
fn probe_text_names_the_selection() {
    let text = probe(&["probe"]).stdout;
    assert!(text.contains("outer hypervisor:"), "{text}");
    assert!(
        text.contains("automatic selects: monitor.virtual_exec = "),
        "{text}"
    );
}

#[test]
fn probe_reports_this_hosts_facts_and_selects_what_it_reports_usable() {
    let json = probe_json();
    let context = format!("probe --json: {json:#}");

    // The CPU and the outer hypervisor.
    let [_, ebx, ecx, edx] = cpuid(0);
    assert_eq!(
        json["host_cpu"]["vendor"],
        text(&[ebx, edx, ecx]),
        "{context}"
    );
    match outer_hypervisor() {
        None => {
            assert!(json["outer_hypervisor"].is_null(), "{context}");
            assert_eq!(json["outer_hypervisor_name"], "none", "{context}");
        }
        Some(signature) => {
            assert_eq!(json["outer_hypervisor"], signature.as_str(), "{context}");
            let known = [
                ("KVMKVMKVM", "KVM"),
                ("VMwareVMware", "VMware"),
                ("Microsoft Hv", "Microsoft Hyper-V"),
                ("XenVMMXenVMM", "Xen"),
                ("TCGTCGTCGTCG", "QEMU TCG"),
            ];
            let name = json["outer_hypervisor_name"].as_str().unwrap();
            match known.iter().find(|(s, _)| *s == signature) {
                Some((_, expected)) => assert_eq!(name, *expected, "{context}"),
                None => assert!(name.starts_with("unknown"), "{context}"),
            }
        }
    }
    if json["outer_hypervisor"] != "VMwareVMware" {
        assert_eq!(json["backdoor"]["attempted"], false, "{context}");
        assert_eq!(
            json["backdoor"]["result"], "not attempted (outer hypervisor is not VMware)",
            "{context}"
        );
    }

    // Hardware virtualization: CPUID decides VT-x and AMD-V; the kernel
    // lists `vmx`/`svm` in /proc/cpuinfo only when CPUID offers them.
    let flags = cpuinfo_flags();
    let has_flag = |name: &str| flags.iter().any(|flag| flag == name);
    let hv = &json["hardware_virtualization"];
    let (vmx, svm) = (cpuid_vmx(), cpuid_svm());
    assert_eq!(hv["vmx"], vmx, "{context}");
    assert_eq!(hv["svm"], svm, "{context}");
    assert!(!has_flag("vmx") || vmx, "cpuinfo has vmx; {context}");
    assert!(!has_flag("svm") || svm, "cpuinfo has svm; {context}");
    assert_eq!(json["virtualized_hv"], vmx || svm, "{context}");
    let ept = has_flag("ept");
    let npt = has_flag("npt")
        || (svm && max_extended_leaf() >= 0x8000_000A && cpuid(0x8000_000A)[3] & 1 == 1);
    assert_eq!(hv["ept"], ept, "{context}");
    assert_eq!(hv["npt"], npt, "{context}");

    // /dev/kvm: presence, module, and a verdict that follows the rate.
    let kvm = &json["kvm"];
    let present = Path::new("/dev/kvm").exists();
    let opens = dev_kvm_opens();
    assert_eq!(kvm["present"], present, "{context}");
    assert_eq!(kvm["module"].as_str(), kvm_module(), "{context}");
    let reason = kvm["reason"].as_str().expect("kvm.reason");
    let tested = kvm["speed_tested"].as_bool().expect("kvm.speed_tested");
    let threshold = kvm["threshold_instructions_per_second"]
        .as_f64()
        .expect("a threshold");
    assert!(threshold > 0.0, "{context}");
    let rate = kvm["instructions_per_second"].as_f64();
    assert_eq!(rate.is_some(), tested, "{context}");
    let usable = kvm["usable"].as_bool().expect("kvm.usable");
    assert_eq!(usable, rate.is_some_and(|r| r >= threshold), "{context}");
    assert_eq!(
        kvm["verdict"],
        if usable { "usable" } else { "not usable" },
        "{context}"
    );
    if !present {
        assert!(!tested, "{context}");
        assert_eq!(reason, "/dev/kvm is not present", "{context}");
    } else if !opens {
        assert!(!tested, "{context}");
        assert!(reason.starts_with("cannot open /dev/kvm"), "{context}");
    } else {
        assert!(!reason.starts_with("cannot open /dev/kvm"), "{context}");
    }

    // What `automatic` selects follows from what the report calls usable.
    let selected = &json["selected"];
    let overall = json["reason"].as_str().expect("reason");
    if usable && monitor::mode::HARDWARE_BACKEND_AVAILABLE {
        assert_eq!(selected["virtual_exec"], "hardware", "{context}");
        let mmu = if ept || npt { "hardware" } else { "software" };
        assert_eq!(selected["virtual_mmu"], mmu, "{context}");
    } else {
        assert_eq!(selected["virtual_exec"], "software", "{context}");
        assert_eq!(selected["virtual_mmu"], "software", "{context}");
        if usable {
            assert!(
                overall.contains("no hardware execution backend"),
                "{context}"
            );
        } else {
            assert!(overall.contains("not usable"), "{context}");
            assert!(overall.contains(reason), "{context}");
        }
    }

    // kvm_pvm runs 32-bit protected-mode code without VT-x/AMD-V, by
    // emulation: far below the threshold, so never usable.
    if present && opens && kvm_module() == Some("kvm_pvm") {
        assert!(!usable, "{context}");
        assert_eq!(selected["virtual_exec"], "software", "{context}");
        if let Some(rate) = rate {
            assert!(rate < threshold, "{context}");
            assert!(
                reason.contains("kvm_pvm") && reason.contains("instructions/s"),
                "{context}"
            );
        }
    }
}
