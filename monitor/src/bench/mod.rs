//! `nestmon bench [GUEST...] [--json] [--svg FILE]`: runs workloads under
//! every backend available here, natively where a native build exists, and
//! under `qemu-system-i386` when it is installed, and reports the ratios
//! to native side by side, with a recommended execution mode per workload
//! (VMware's advice: benchmark your workload in each mode).
//!
//! - Workloads: see [`workload`] (the built-in ones are built from
//!   nestmon's source tree with its `guests/Makefile`; a GUEST that names
//!   a file is the user's own kernel).
//! - Backends: `native` (a native build), `bt` (always), `kvm` (when the
//!   KVM device can create a VM; on a host without VT-x/AMD-V it emulates
//!   32-bit guests, slowly, so the cap matters there), `qemu` (when
//!   `qemu-system-i386 --version` runs). `--backend` restricts them.
//! - Each run is a child process capped at `--cap` seconds (killed then,
//!   and marked capped); a workload runs `--runs` times per backend and
//!   keeps its best time, stopping at the first run that does not
//!   complete correctly.
//! - Progress goes to standard error, one line per run; the table (or the
//!   JSON with `--json`) to standard output; the chart to `--svg FILE`.
//!
//! Invariants: the native run of a workload is made first, so every other
//! run is judged against its output; nothing a run prints reaches
//! nestmon's own output; the exit status is 0 once the report is written,
//! whatever the runs did (2 for bad arguments, 4 when the guests cannot
//! be built or the report cannot be written).

mod report;
mod runner;
mod svg;
pub mod workload;

pub use report::{Outcome, Report};

use crate::console::diagnostic;
use crate::exit_status;
use clap::Args;
use runner::{run_capped, RunEnd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use workload::{Backend, Check, Workload};

/// `nestmon bench`.
#[derive(Debug, Args, Default)]
pub struct BenchArgs {
    /// The workloads: built-in names (the compute kernels of
    /// benches/workloads, events, linux-boot, linux-loop) or paths to
    /// kernels (with NAME.native beside one as its native build); all
    /// built-in workloads when none is given.
    #[arg(value_name = "GUEST")]
    pub guests: Vec<String>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a bar chart of the ratios to native to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The longest one run may take, in seconds; a run still going then is
    /// killed and marked capped.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub cap: f64,
    /// Runs per workload and backend (the best time is kept).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: u32,
    /// Run only under these backends (repeatable; default: every one
    /// available here).
    #[arg(long = "backend", value_enum, value_name = "BACKEND")]
    pub backends: Vec<Backend>,
    /// Where the built-in guests are built (default: $TMPDIR/nestmon-bench).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// nestmon's source tree, for the built-in workloads (default:
    /// $NESTMON_SOURCE_DIR, or the tree this nestmon was built from).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
}

/// Why `nestmon bench` could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad `--cap` or `--runs`.
    #[error("{0}")]
    BadArgument(String),
    /// A GUEST that is neither a file nor a built-in workload.
    #[error(
        "no workload {name:?}: give a built-in workload ({builtin}) or the path of a kernel file"
    )]
    UnknownWorkload {
        /// What was given.
        name: String,
        /// The built-in names.
        builtin: String,
    },
    /// A Linux workload without its images.
    #[error(
        "the Linux workloads need Debian's i386 kernel and nestmon's initramfs: \
         ~/.cache/nestmon/debian-686/vmlinuz and initramfs.gz (.ci/setup and \
         guests/linux/build-initramfs.sh make them), or $NESTMON_LINUX_KERNEL and \
         $NESTMON_LINUX_INITRAMFS"
    )]
    NoLinuxImages,
    /// A backend asked for with `--backend` that this host lacks.
    #[error("--backend {backend}: {why}")]
    BackendUnavailable {
        /// The backend.
        backend: &'static str,
        /// Why it is not available.
        why: String,
    },
    /// The source tree for the built-in workloads is missing.
    #[error(
        "the built-in workloads are built from nestmon's source tree, but {} cannot be used \
         ({why}); pass --source DIR (or set NESTMON_SOURCE_DIR), or name your own kernels",
        path.display()
    )]
    NoSourceTree {
        /// What was looked for.
        path: PathBuf,
        /// Why it cannot be used.
        why: String,
    },
    /// Building the built-in guests failed (make and gcc with -m32 are
    /// needed).
    #[error("building the workloads failed (make and gcc with -m32 support are needed): {0}")]
    Build(String),
    /// The report could not be written.
    #[error("{0}")]
    Output(String),
}

impl BenchError {
    /// The process exit status: 2 for bad input, 4 for the host's failures.
    pub fn exit_status(&self) -> i32 {
        match self {
            BenchError::Build(_) | BenchError::Output(_) => exit_status::HOST_FAILURE,
            _ => exit_status::BAD_INPUT,
        }
    }
}

/// Runs `nestmon bench`; returns the exit status.
pub fn bench_command(args: &BenchArgs) -> i32 {
    match bench(args) {
        Ok(status) => status,
        Err(error) => {
            diagnostic!("nestmon bench: {error}");
            error.exit_status()
        }
    }
}

fn bench(args: &BenchArgs) -> Result<i32, BenchError> {
    if !(args.cap.is_finite() && args.cap > 0.0) {
        return Err(BenchError::BadArgument(format!(
            "--cap {}: the cap must be a positive number of seconds",
            args.cap
        )));
    }
    if args.runs == 0 {
        return Err(BenchError::BadArgument(
            "--runs 0: at least one run is needed".into(),
        ));
    }
    let backends = backends(&args.backends)?;
    let source = args
        .source
        .clone()
        .unwrap_or_else(workload::default_source_dir);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("nestmon-bench"));
    let workloads = workload::resolve(&args.guests, &source, &out)?;
    let nestmon = std::env::current_exe()
        .map_err(|e| BenchError::Output(format!("cannot find the nestmon binary: {e}")))?;
    let cap = Duration::from_secs_f64(args.cap);
    let mut progress = Progress::new(&workloads, &backends, args.runs, &nestmon);
    let rows = workloads
        .iter()
        .map(|w| measure(w, &backends, args.runs, cap, &nestmon, &mut progress))
        .collect();
    let report = Report::new(backends, args.runs, args.cap, rows);
    write(&report, args)
}

/// The backends to use: those asked for (each must be available), or
/// every available one.
fn backends(asked: &[Backend]) -> Result<Vec<Backend>, BenchError> {
    let mut chosen = Vec::new();
    for backend in Backend::ALL {
        let wanted = asked.is_empty() || asked.contains(&backend);
        if !wanted {
            continue;
        }
        match unavailable(backend) {
            None => chosen.push(backend),
            Some(why) if !asked.is_empty() => {
                return Err(BenchError::BackendUnavailable {
                    backend: backend.name(),
                    why,
                })
            }
            Some(why) => diagnostic!("nestmon bench: note: no {} runs: {why}", backend.name()),
        }
    }
    Ok(chosen)
}

/// Why `backend` cannot run here, if it cannot.
fn unavailable(backend: Backend) -> Option<String> {
    match backend {
        Backend::Native | Backend::Bt => None,
        Backend::Kvm => crate::vcpu::kvm::open_vm().err().map(|e| e.to_string()),
        Backend::Qemu => {
            let ran = std::process::Command::new("qemu-system-i386")
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            match ran {
                Ok(status) if status.success() => None,
                _ => Some("qemu-system-i386 is not installed (or does not run)".into()),
            }
        }
    }
}

/// One progress line per run, on standard error.
struct Progress {
    done: usize,
    total: usize,
}

impl Progress {
    fn new(workloads: &[Workload], backends: &[Backend], runs: u32, nestmon: &Path) -> Progress {
        let total = workloads
            .iter()
            .map(|w| {
                backends
                    .iter()
                    .filter(|&&b| w.invocation(b, nestmon).is_some())
                    .count()
            })
            .sum::<usize>()
            * runs as usize;
        Progress { done: 0, total }
    }

    fn report(&mut self, workload: &str, backend: Backend, run: u32, runs: u32, what: &str) {
        self.done += 1;
        diagnostic!(
            "nestmon bench: [{}/{}] {workload} under {}, run {run} of {runs}: {what}",
            self.done,
            self.total,
            backend.name()
        );
    }
}

/// Runs `workload` under each backend (native first).
fn measure(
    workload: &Workload,
    backends: &[Backend],
    runs: u32,
    cap: Duration,
    nestmon: &Path,
    progress: &mut Progress,
) -> report::Row {
    let mut reference: Option<String> = None;
    let mut outcomes = Vec::new();
    for &backend in backends {
        let Some(invocation) = workload.invocation(backend, nestmon) else {
            continue;
        };
        let mut best: Option<Outcome> = None;
        for run in 1..=runs {
            let end = run_capped(&invocation, cap);
            let outcome = judge(workload, backend, end, &mut reference, cap);
            progress.report(&workload.name, backend, run, runs, &describe(&outcome));
            let done = !matches!(outcome, Outcome::Ok { .. });
            best = Some(match (best, outcome) {
                (Some(Outcome::Ok { seconds: a }), Outcome::Ok { seconds: b }) => {
                    Outcome::Ok { seconds: a.min(b) }
                }
                (_, outcome) => outcome,
            });
            if done {
                break;
            }
        }
        if let Some(outcome) = best {
            outcomes.push((backend, outcome));
        }
    }
    report::Row::new(workload, outcomes)
}

/// The outcome of one run; the native run's output becomes the reference.
fn judge(
    workload: &Workload,
    backend: Backend,
    end: RunEnd,
    reference: &mut Option<String>,
    cap: Duration,
) -> Outcome {
    let (seconds, stdout) = match end {
        RunEnd::Completed { seconds, stdout } => (seconds, stdout),
        RunEnd::Capped => {
            return Outcome::Capped {
                cap_seconds: cap.as_secs_f64(),
            }
        }
        RunEnd::Failed(why) => return Outcome::Failed { why },
    };
    let output = comparable(&stdout);
    let wrong = match &workload.check {
        Check::ExitStatus => None,
        Check::Contains(line) => (!stdout.lines().any(|l| l.trim_end() == *line))
            .then(|| format!("its output lacks the line {line:?}")),
        Check::SameAsNative if backend == Backend::Native => {
            *reference = Some(output);
            None
        }
        Check::SameAsNative => match reference {
            Some(want) if *want != output => Some(first_difference(want, &output)),
            _ => None,
        },
    };
    match wrong {
        Some(why) => Outcome::WrongOutput { why },
        None => Outcome::Ok { seconds },
    }
}

/// A run's output without the lines that legitimately differ (`#` lines:
/// timings, cycle counts).
fn comparable(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first line where `got` differs from `want`.
fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let line = (0..w.len().max(g.len()))
        .find(|&i| w.get(i) != g.get(i))
        .unwrap_or(0);
    format!(
        "output line {} is {:?}, natively {:?}",
        line + 1,
        g.get(line).copied().unwrap_or("<end>"),
        w.get(line).copied().unwrap_or("<end>")
    )
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { seconds } => format!("{seconds:.3} s"),
        Outcome::Capped { cap_seconds } => format!("capped at {cap_seconds} s (killed)"),
        Outcome::Failed { why } => format!("FAILED: {why}"),
        Outcome::WrongOutput { why } => format!("FAILED: {why}"),
    }
}

/// Writes the table or JSON to standard output and the chart to `--svg`.
fn write(report: &Report, args: &BenchArgs) -> Result<i32, BenchError> {
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::chart(report))
            .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if args.json {
        report
            .json()
            .map_err(|e| BenchError::Output(format!("cannot encode the report: {e}")))?
    } else {
        report.table()
    };
    Ok(crate::console::print_command_output(&text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use workload::Kind;

    fn compute() -> Workload {
        Workload {
            name: "w".into(),
            kind: Kind::Compute,
            kernel: "/k".into(),
            initrd: None,
            append: None,
            native: Some("/n".into()),
            check: Check::SameAsNative,
        }
    }

    fn completed(stdout: &str) -> RunEnd {
        RunEnd::Completed {
            seconds: 1.5,
            stdout: stdout.into(),
        }
    }

    #[test]
    fn runs_are_judged_against_the_native_output_without_hash_lines() {
        let w = compute();
        let cap = Duration::from_secs(5);
        let mut reference = None;
        let native = judge(
            &w,
            Backend::Native,
            completed("a\n# t=1\n"),
            &mut reference,
            cap,
        );
        assert_eq!(native, Outcome::Ok { seconds: 1.5 });
        let same = judge(
            &w,
            Backend::Bt,
            completed("a\n# t=2\n"),
            &mut reference,
            cap,
        );
        assert_eq!(same, Outcome::Ok { seconds: 1.5 });
        let other = judge(&w, Backend::Kvm, completed("b\n"), &mut reference, cap);
        assert_eq!(
            other,
            Outcome::WrongOutput {
                why: "output line 1 is \"b\", natively \"a\"".into()
            }
        );
        let capped = judge(&w, Backend::Qemu, RunEnd::Capped, &mut reference, cap);
        assert_eq!(capped, Outcome::Capped { cap_seconds: 5.0 });
    }

    #[test]
    fn a_linux_run_needs_the_success_line() {
        let w = Workload {
            check: Check::Contains("nestmon-init: exit status 0"),
            ..compute()
        };
        let cap = Duration::from_secs(5);
        let good = judge(
            &w,
            Backend::Bt,
            completed("x\nnestmon-init: exit status 0\n"),
            &mut None,
            cap,
        );
        assert!(matches!(good, Outcome::Ok { .. }));
        let bad = judge(
            &w,
            Backend::Bt,
            completed("nestmon-init: exit status 1\n"),
            &mut None,
            cap,
        );
        assert!(matches!(bad, Outcome::WrongOutput { .. }));
    }

    #[test]
    fn bad_caps_and_run_counts_are_refused_with_status_2() {
        for args in [
            BenchArgs {
                cap: 0.0,
                runs: 1,
                ..BenchArgs::default()
            },
            BenchArgs {
                cap: f64::NAN,
                runs: 1,
                ..BenchArgs::default()
            },
            BenchArgs {
                cap: 1.0,
                runs: 0,
                ..BenchArgs::default()
            },
        ] {
            assert_eq!(bench(&args).unwrap_err().exit_status(), 2);
        }
    }
}
