//! The benchmark scripts of `benches/` as a user runs them: bad arguments
//! are refused with status 2 and a message saying what is wrong, before
//! anything runs; `run-ab.sh` on one workload prints both sides' ratios to
//! native, the ratio between them and a failing side as FAIL. Timings are
//! never checked, only that they are there.

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::{describe, run, Run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NESTMON: &str = env!("CARGO_BIN_EXE_nestmon");

/// Runs `benches/run-ab.sh` with its workloads built under `out`.
fn run_ab(out: &Path, args: &[&str]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/run-ab.sh");
    run(
        Command::new("bash")
            .arg(script)
            .arg("--out")
            .arg(out)
            .args(args),
        Duration::from_secs(300),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `word` reads as a ratio (a decimal number).
fn is_ratio(word: &str) -> bool {
    word.parse::<f64>().is_ok_and(|r| r > 0.0)
}

#[test]
fn run_ab_refuses_bad_arguments_with_status_2_and_says_why() {
    let out = scratch("run-ab-arguments");
    let no_value = format!("{NESTMON},nestmon.bt.inlineCaches");
    let cases: [(&[&str], &str); 6] = [
        (&[NESTMON], "Usage"),
        (
            &["/nonexistent/nestmon", NESTMON],
            "not an executable: /nonexistent/nestmon",
        ),
        (
            &["--rounds", "0", NESTMON, NESTMON],
            "--rounds takes a whole number",
        ),
        (
            &["--layouts", "x", NESTMON, NESTMON],
            "--layouts takes a whole number",
        ),
        (
            &[NESTMON, &no_value],
            "not KEY=VALUE: nestmon.bt.inlineCaches",
        ),
        (&["--fast", NESTMON, NESTMON], "unknown argument: --fast"),
    ];
    for (args, says) in cases {
        let r = run_ab(&out, args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", describe(&r));
        assert!(r.stderr.contains(says), "{args:?}: {}", describe(&r));
        assert!(
            !r.stdout.contains("native"),
            "{args:?} ran: {}",
            describe(&r)
        );
    }
}

#[test]
fn run_ab_prints_both_sides_ratios_and_their_ratio_and_a_failing_side_as_fail() {
    let out = scratch("run-ab-crc32");
    let r = run_ab(&out, &[NESTMON, NESTMON, "nosuch"]);
    assert_eq!(r.code, Some(2), "{}", describe(&r));
    assert!(
        r.stderr.contains("no such workload: nosuch"),
        "{}",
        describe(&r)
    );

    let without_caches = format!("{NESTMON},nestmon.bt.inlineCaches=FALSE");
    let args = [
        "--rounds",
        "1",
        "--layouts",
        "2",
        NESTMON,
        &without_caches,
        "crc32",
    ];
    let r = run_ab(&out, &args);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    assert!(
        r.stdout.contains(&format!("B: {without_caches}")),
        "{}",
        r.stdout
    );
    let row: Vec<&str> = r
        .stdout
        .lines()
        .find(|l| l.starts_with("crc32 "))
        .unwrap_or_else(|| panic!("no crc32 row: {}", r.stdout))
        .split_whitespace()
        .collect();
    // crc32, native seconds, A's mean (lowest-highest), B's, B/A.
    assert_eq!(row.len(), 7, "{row:?}");
    for k in [1, 2, 4, 6] {
        assert!(is_ratio(row[k]), "{row:?}");
    }
    let spread = |s: &str| {
        let inner = s.trim_start_matches('(').trim_end_matches(')');
        inner.split('-').all(is_ratio)
    };
    assert!(spread(row[3]) && spread(row[5]), "{row:?}");
    assert!(
        r.stdout.lines().any(|l| l.starts_with("geomean")),
        "{}",
        r.stdout
    );

    let broken = format!("{NESTMON},nestmon.bt.inlineCaches=maybe");
    let args = ["--rounds", "1", "--layouts", "1", NESTMON, &broken, "crc32"];
    let r = run_ab(&out, &args);
    assert_eq!(r.code, Some(0), "{}", describe(&r));
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("crc32 "))
        .unwrap_or_default();
    assert!(
        row.contains("FAIL") && row.trim_end().ends_with('-'),
        "{}",
        r.stdout
    );
}
