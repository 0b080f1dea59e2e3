//! `nestmon probe`, through the binary.
//!
//! The machine these tests were written for is a KVM guest whose
//! `/dev/kvm` is `kvm_pvm` (no VT-x/AMD-V, 32-bit guests at a few million
//! instructions per second); the last test pins that expectation when the
//! host matches and is skipped otherwise, printing why.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn probe_json() -> (Value, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .args(["probe", "--json"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = serde_json::from_slice(&output.stdout).expect("probe --json prints JSON");
    (json, took)
}

#[test]
fn probe_json_has_the_documented_keys() {
    let (json, _) = probe_json();
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
fn probe_finishes_quickly() {
    let (_, took) = probe_json();
    assert!(took < Duration::from_secs(2), "probe took {took:?}");
}

#[test]
fn probe_text_names_the_selection() {
    let output = Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .arg("probe")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("outer hypervisor:"), "{text}");
    assert!(
        text.contains("automatic selects: monitor.virtual_exec = "),
        "{text}"
    );
}

#[test]
fn probe_on_a_kvm_pvm_guest_reports_kvm_present_but_not_usable() {
    let is_kvm_pvm_host = std::path::Path::new("/sys/module/kvm_pvm").is_dir()
        && std::path::Path::new("/dev/kvm").exists();
    if !is_kvm_pvm_host {
        eprintln!("skipped: this host does not provide /dev/kvm through kvm_pvm");
        return;
    }
    let (json, _) = probe_json();
    assert_eq!(json["outer_hypervisor"], "KVMKVMKVM");
    assert_eq!(json["outer_hypervisor_name"], "KVM");
    assert_eq!(json["virtualized_hv"], false);
    let kvm = &json["kvm"];
    assert_eq!(kvm["present"], true);
    assert_eq!(kvm["module"], "kvm_pvm");
    assert_eq!(kvm["usable"], false);
    assert_eq!(kvm["verdict"], "not usable");
    let rate = kvm["instructions_per_second"]
        .as_f64()
        .expect("a measured rate");
    assert!(rate > 0.0 && rate < 50e6, "rate {rate}");
    assert!(kvm["reason"].as_str().unwrap().contains("instructions/s"));
    assert_eq!(json["selected"]["virtual_exec"], "software");
    assert_eq!(json["selected"]["virtual_mmu"], "software");
    assert_eq!(
        json["backdoor"]["result"],
        "not attempted (outer hypervisor is not VMware)"
    );
    assert!(json["reason"].as_str().unwrap().contains("not usable"));
}
