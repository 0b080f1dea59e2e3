//! `nestmon bench`: the shape of its table, JSON and SVG on a tiny
//! workload set (the `hello` guest and its native build, small assembly
//! guests), with short caps. Nothing here depends on how fast a run is:
//! the tests check which backends ran, how each run ended, the ratios'
//! presence and the recommendation's consistency with the times.

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::{asm_guest, describe, guest_dir, run, Run};
use std::process::Command;
use std::time::Duration;

/// The longest a bench of these tests may take (binary translation runs
/// each guest in well under a second; `kvm_pvm` in about one).
const LIMIT: Duration = Duration::from_secs(120);

fn bench(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestmon"));
    command.arg("bench").args(args);
    run(&mut command, LIMIT)
}

fn hello() -> String {
    guest_dir().join("hello.elf").display().to_string()
}

/// Whether `nestmon bench` will use the hardware backend here.
fn kvm_available() -> bool {
    monitor::vcpu::kvm::open_vm().is_ok()
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(r)))
}

#[test]
fn the_table_has_a_column_per_backend_a_ratio_to_native_and_a_recommendation() {
    let hello = hello();
    let r = bench(&[
        &hello,
        "--backend",
        "native",
        "--backend",
        "bt",
        "--cap",
        "60",
    ]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("nestmon bench: ratio to native"),
        "{}",
        r.stdout
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header, ["workload", "native", "bt", "recommended"]);
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[0], "hello");
    assert!(row[1].ends_with('s'), "native time: {}", lines[2]);
    assert!(row[2].ends_with('x'), "bt ratio: {}", lines[2]);
    assert_eq!(row.last(), Some(&"bt"));
    assert!(lines[3].starts_with("geomean"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("hello = \"software\": only binary translation ran it correctly"),
        "{}",
        r.stdout
    );
    for n in 1..=2 {
        assert!(
            r.stderr
                .contains(&format!("nestmon bench: [{n}/2] hello under ")),
            "progress line {n}:\n{}",
            r.stderr
        );
    }
}

#[test]
fn the_json_has_every_run_its_ratio_and_the_recommendation() {
    let hello = hello();
    let mut args = vec![
        hello.as_str(),
        "--json",
        "--backend",
        "native",
        "--backend",
        "bt",
    ];
    let kvm = kvm_available();
    if kvm {
        args.extend(["--backend", "kvm"]);
    }
    let r = bench(&args);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let report = json(&r);
    assert_eq!(report["runs"], 1);
    assert_eq!(report["cap_seconds"], 60.0);
    let row = &report["rows"][0];
    assert_eq!(row["workload"], "hello");
    assert_eq!(row["kind"], "custom");
    let results = row["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .map(|c| c["backend"].as_str().unwrap())
        .collect();
    let mut want = vec!["native", "bt"];
    if kvm {
        want.push("kvm");
    }
    assert_eq!(names, want);
    for cell in results {
        assert_eq!(cell["status"], "ok", "{cell}");
        assert!(cell["seconds"].as_f64().unwrap() > 0.0, "{cell}");
        assert_eq!(
            cell["ratio"].is_number(),
            cell["backend"] != "native",
            "{cell}"
        );
    }
    let fastest = results[1..]
        .iter()
        .min_by(|a, b| {
            a["seconds"]
                .as_f64()
                .partial_cmp(&b["seconds"].as_f64())
                .unwrap()
        })
        .unwrap();
    assert_eq!(row["recommendation"]["backend"], fastest["backend"]);
    let mode = if fastest["backend"] == "kvm" {
        "hardware"
    } else {
        "software"
    };
    assert_eq!(row["recommendation"]["virtual_exec"], mode);
    assert!(report["geomean"]["bt"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_run_past_the_cap_is_killed_and_marked_capped_and_the_chart_shows_it() {
    let spin = asm_guest("bench_spin", "1: jmp 1b");
    let svg = std::env::temp_dir().join(format!("nestmon-bench-{}.svg", std::process::id()));
    let r = bench(&[
        spin.to_str().unwrap(),
        &hello(),
        "--backend",
        "native",
        "--backend",
        "bt",
        "--cap",
        "1",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(
        r.elapsed < Duration::from_secs(60),
        "the cap did not stop the spin"
    );
    let report = json(&r);
    let spin_row = &report["rows"][0];
    assert_eq!(spin_row["workload"], "bench_spin");
    let bt = &spin_row["results"][1];
    assert_eq!(
        (&bt["backend"], &bt["status"]),
        (&"bt".into(), &"capped".into())
    );
    assert_eq!(bt["cap_seconds"], 1.0);
    assert!(bt.get("seconds").is_none() && bt.get("ratio").is_none());
    assert!(spin_row["recommendation"]["backend"].is_null());
    assert!(r
        .stderr
        .contains("bench_spin under bt, run 1 of 1: capped at 1 s (killed)"));
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    std::fs::remove_file(&svg).unwrap();
    assert!(chart.starts_with("<?xml") && chart.trim_end().ends_with("</svg>"));
    assert!(chart.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(chart.contains(">hello</text>") && chart.contains(">bench_spin</text>"));
    assert!(chart.contains("hello bt: ") && chart.contains("</title></rect>"));
    // The spin's native build spins too (capped): its bt bar has no native
    // time to stand on.
    assert!(chart.contains("bt: capped</text>"), "{chart}");
}

#[test]
fn a_guest_that_reports_failure_is_a_failed_run_with_its_status() {
    let fail = asm_guest("bench_fail", "mov al, 1\nout 0xf4, al\n1: jmp 1b");
    let r = bench(&[fail.to_str().unwrap(), "--backend", "bt", "--cap", "30"]);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let row: Vec<&str> = r
        .stdout
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["bench_fail", "FAIL", "-"]);
    assert!(
        r.stdout
            .contains("bench_fail under bt: exit status 1: nestmon: the guest reported failure"),
        "{}",
        r.stdout
    );
}

#[test]
fn bad_arguments_are_refused_with_status_2_before_anything_runs() {
    let r = bench(&["no-such-workload", "--backend", "bt"]);
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert!(
        r.stderr
            .contains("nestmon bench: no workload \"no-such-workload\""),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("qsort"),
        "the built-in names are listed: {}",
        r.stderr
    );
    let r = bench(&[&hello(), "--cap", "0"]);
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert!(r.stderr.contains("--cap 0"), "{}", r.stderr);
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestmon"));
    command
        .args(["bench", &hello(), "--backend", "kvm"])
        .env("NESTMON_KVM_DEVICE", "/dev/null");
    let r = run(&mut command, LIMIT);
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert!(
        r.stderr
            .contains("nestmon bench: --backend kvm: /dev/null cannot create a VM"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
}
