//! The driver shared by the fuzz targets (`tests/fuzz_*.rs`): corpus replay,
//! a proptest loop bounded by time rather than by a number of cases, a
//! watchdog that turns a hang into a failure, and saving of failing inputs
//! into the corpus.
//!
//! Invariants:
//! - A generative run never starts a case after its time budget
//!   (`NESTMON_FUZZ_SECONDS`, default [`DEFAULT_SECONDS`]) is spent; the
//!   budget bounds generation, not shrinking or corpus replay.
//! - Every input the generator finds failing is shrunk, written into the
//!   target's corpus directory under a name derived from its bytes, and the
//!   test then fails naming that file; replaying the corpus reproduces it.
//! - A case that gives no verdict within [`CASE_LIMIT`] fails as a hang.
//!
//! See docs/fuzzing.md.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseResult, TestError, TestRunner};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable that sets each generative run's time budget, in seconds.
pub const BUDGET_VARIABLE: &str = "NESTMON_FUZZ_SECONDS";
/// The budget when the variable is not set: short, so the test suite stays fast.
pub const DEFAULT_SECONDS: f64 = 3.0;
/// How long one case may run before it counts as a hang.
pub const CASE_LIMIT: Duration = Duration::from_secs(10);
/// Upper bound on shrinking steps after a failure.
const MAX_SHRINK_ITERS: u32 = 4096;

/// One fuzz target: its name and where its corpus lives.
pub struct Target {
    /// Shown in progress and failure messages.
    pub name: &'static str,
    /// The corpus directory under `tests/corpus/`.
    pub corpus: &'static str,
    /// File name extension of saved inputs (without the dot).
    pub extension: &'static str,
}

impl Target {
    /// The corpus directory in the source tree.
    pub fn corpus_dir(&self) -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest.parent().unwrap_or(manifest);
        workspace.join("tests/corpus").join(self.corpus)
    }

    /// Every corpus file and its bytes, sorted by name.
    pub fn corpus_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = self.corpus_dir();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus directory entry").path())
            .filter(|path| path.is_file())
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                (path, bytes)
            })
            .collect()
    }

    /// Checks every corpus file; fails listing each file that fails.
    pub fn replay(&self, check: impl Fn(&[u8]) -> Result<(), String>) {
        let files = self.corpus_files();
        assert!(!files.is_empty(), "the {} corpus is empty", self.name);
        let failures: Vec<String> = files
            .iter()
            .filter_map(|(path, bytes)| {
                let verdict = catch_unwind(AssertUnwindSafe(|| check(bytes)))
                    .unwrap_or_else(|payload| Err(panic_text(payload.as_ref())));
                verdict
                    .err()
                    .map(|why| format!("{}: {why}", path.display()))
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} corpus files fail:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Writes a failing input into the corpus; returns its path.
    pub fn save(&self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path =
            self.corpus_dir()
                .join(format!("found-{:016x}.{}", fnv1a(bytes), self.extension));
        std::fs::write(&path, bytes)?;
        Ok(path)
    }

    /// Runs `test` on generated inputs until the time budget is spent.
    ///
    /// On a failure the input is shrunk, `to_bytes` turns the smallest
    /// failing one into a corpus file, and this panics naming the file.
    pub fn run<S: Strategy>(
        &self,
        strategy: S,
        to_bytes: impl Fn(&S::Value) -> Vec<u8>,
        test: impl Fn(S::Value) -> TestCaseResult,
    ) {
        let budget = budget();
        let deadline = Instant::now() + budget;
        let mut runner = TestRunner::new(Config {
            failure_persistence: None,
            max_shrink_iters: MAX_SHRINK_ITERS,
            ..Config::default()
        });
        let mut cases = 0u64;
        while Instant::now() < deadline {
            let tree = strategy
                .new_tree(&mut runner)
                .unwrap_or_else(|e| panic!("{}: cannot generate a case: {e}", self.name));
            match runner.run_one(tree, &test) {
                Ok(_) => cases += 1,
                Err(TestError::Fail(why, minimal)) => self.fail(&why, &to_bytes(&minimal)),
                Err(TestError::Abort(why)) => panic!("{}: aborted: {why}", self.name),
            }
        }
        eprintln!(
            "{}: {cases} generated cases in {:.1} s",
            self.name,
            budget.as_secs_f64()
        );
    }

    fn fail(&self, why: &impl std::fmt::Display, bytes: &[u8]) -> ! {
        let saved = match self.save(bytes) {
            Ok(path) => format!(
                "the input is saved as {}: commit it to the corpus together with the fix \
                 and a regression test",
                path.display()
            ),
            Err(e) => format!("the input could not be saved ({e}); its bytes: {bytes:02x?}"),
        };
        panic!("{}: a generated input fails: {why}\n{saved}", self.name)
    }
}

/// The generative time budget: `NESTMON_FUZZ_SECONDS` (0 skips generation).
pub fn budget() -> Duration {
    match std::env::var(BUDGET_VARIABLE) {
        Ok(text) => {
            let seconds: f64 = text.trim().parse().unwrap_or_else(|_| {
                panic!("{BUDGET_VARIABLE}={text:?} is not a number of seconds")
            });
            assert!(
                seconds.is_finite() && seconds >= 0.0,
                "{BUDGET_VARIABLE}={text:?} must be a non-negative number of seconds"
            );
            Duration::from_secs_f64(seconds)
        }
        Err(_) => Duration::from_secs_f64(DEFAULT_SECONDS),
    }
}

/// Runs checks on a worker thread so that a case that never returns is
/// reported as a hang instead of stalling the test.
///
/// After a hang the worker is stuck for good: every later [`Watchdog::check`]
/// passes without running, so shrinking stops at the hanging input and the
/// test fails with it. Otherwise dropping the watchdog ends the worker and
/// waits for it, so that the checker's own `Drop` (scratch files) runs.
pub struct Watchdog<I> {
    jobs: Option<mpsc::Sender<I>>,
    verdicts: mpsc::Receiver<Result<(), String>>,
    worker: Option<std::thread::JoinHandle<()>>,
    hung: Cell<bool>,
}

impl<I: Send + 'static> Watchdog<I> {
    /// Starts the worker; it runs `check` on each input it is given.
    pub fn spawn(mut check: impl FnMut(I) -> Result<(), String> + Send + 'static) -> Self {
        let (jobs, inbox) = mpsc::channel::<I>();
        let (outbox, verdicts) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            for input in inbox {
                let verdict = catch_unwind(AssertUnwindSafe(|| check(input)))
                    .unwrap_or_else(|payload| Err(panic_text(payload.as_ref())));
                if outbox.send(verdict).is_err() {
                    break;
                }
            }
        });
        Watchdog {
            jobs: Some(jobs),
            verdicts,
            worker: Some(worker),
            hung: Cell::new(false),
        }
    }

    /// The worker's verdict on `input`, or an error if it takes longer than
    /// [`CASE_LIMIT`].
    pub fn check(&self, input: I) -> Result<(), String> {
        if self.hung.get() {
            return Ok(());
        }
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(input).ok())
            .ok_or_else(|| "the checking thread is gone".to_string())?;
        match self.verdicts.recv_timeout(CASE_LIMIT) {
            Ok(verdict) => verdict,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.hung.set(true);
                Err(format!("hang: no result within {CASE_LIMIT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("the checking thread is gone".to_string())
            }
        }
    }
}

impl<I> Drop for Watchdog<I> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take().filter(|_| !self.hung.get()) {
            let _ = worker.join();
        }
    }
}

/// The message of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    format!("panicked: {message}")
}

/// FNV-1a, 64 bits: names saved inputs by their content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
