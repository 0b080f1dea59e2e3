//! Shared helpers for tests/guests.rs and tests/differential.rs: locating
//! and building the test guests (guests/Makefile), running programs with a
//! timeout, comparing outputs, and the random x86 program generator used by
//! the differential tests (`gen`).

#![allow(dead_code)]

pub mod gen;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The guests/ source directory.
pub fn guests_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests")
}

/// The directory holding NAME.elf / NAME.native for every guest.  The
/// monitor's build script fills `NESTMON_GUEST_DIR` by running
/// `make -C guests OUT=<dir>`; without it the guests are built here into
/// the test's scratch directory.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = option_env!("NESTMON_GUEST_DIR") {
            let d = PathBuf::from(d);
            if d.join("hello.elf").exists() {
                return d;
            }
        }
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guests");
        make(&["all"], &d);
        d
    })
}

/// Runs `make -C guests OUT=out <args>` and panics with its output on failure.
pub fn make(args: &[&str], out: &Path) {
    let o = Command::new("make")
        .arg("-s")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(guests_src())
        .arg(format!("OUT={}", out.display()))
        .args(args)
        .output()
        .expect("run make (gcc and binutils are needed to build the guests)");
    assert!(
        o.status.success(),
        "make {:?} failed:\n{}{}",
        args,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every guest: (name, native-capable, runs-under-qemu), from `make list`
/// semantics: sources guests/*.c and guests/*.S; "nestmon: guest-only" in
/// the source means no native build; backdoor needs nestmon itself.
pub fn guests() -> Vec<(String, bool, bool)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(guests_src()).expect("read guests/") {
        let p = e.expect("dir entry").path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "c" && ext != "S" {
            continue;
        }
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(&p).unwrap_or_default();
        let native = !src.contains("nestmon: guest-only");
        // backdoor needs nestmon; "nestmon: no-qemu" guests check what
        // QEMU TCG does not model (their oracle is the SDM).
        let qemu = name != "backdoor" && !src.contains("nestmon: no-qemu");
        v.push((name, native, qemu));
    }
    v.sort();
    v
}

/// Guests nestmon does not yet have to pass (`NESTMON_PENDING` in
/// guests/Makefile): they are checked under QEMU only.
pub fn pending_guests() -> Vec<String> {
    let o = Command::new("make")
        .args(["-s", "--no-print-directory", "-C"])
        .arg(guests_src())
        .arg("list-pending")
        .output()
        .expect("run make list-pending");
    assert!(o.status.success(), "make list-pending failed");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Expected serial output of a guest, if recorded.
pub fn expected(name: &str) -> Option<String> {
    std::fs::read_to_string(guests_src().join("expected").join(format!("{name}.out"))).ok()
}

/// Drops informational lines (starting with '#'), which may differ per run.
pub fn filter(out: &str) -> String {
    let mut s = String::new();
    for l in out.split_inclusive('\n') {
        if !l.starts_with('#') {
            s.push_str(l);
        }
    }
    s
}

/// Result of running a program.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// Exit code, or None when killed by a signal or the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs a command with stdin closed, capturing output, killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Run {
    run_signalled(cmd, timeout, None)
}

/// Like [`run`], sending `signal.1` to the process once it has printed
/// something on stdout and `signal.0` has passed since it started.
pub fn run_signalled(cmd: &mut Command, timeout: Duration, signal: Option<(Duration, i32)>) -> Run {
    let start = Instant::now();
    let mut signal = signal;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let printed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let printed_by_reader = printed.clone();
    let t1 = std::thread::spawn(move || {
        let mut b = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = so.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.extend_from_slice(&chunk[..n]);
            printed_by_reader.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        b
    });
    let t2 = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let mut timed_out = false;
    let status: ExitStatus = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if let Some((after, sig)) = signal {
            if start.elapsed() >= after && printed.load(std::sync::atomic::Ordering::SeqCst) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as i32, sig) };
                signal = None;
            }
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&t1.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t2.join().unwrap()).into_owned();
    Run {
        stdout,
        stderr,
        code: status.code(),
        timed_out,
        elapsed: start.elapsed(),
    }
}

/// Builds an assembly guest whose `main` is `body` (Intel syntax, linked
/// with the guest runtime) into the test's scratch directory.
pub fn asm_guest(name: &str, body: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("asm-guests");
    std::fs::create_dir_all(&dir).unwrap();
    let source = format!(".intel_syntax noprefix\n.text\n.globl main\nmain:\n{body}\n");
    // Tests in other processes build and run the same guests at the same
    // time: one builds at a time, a guest whose source is unchanged is
    // not built again, and a new build is renamed into place whole, so
    // that no run ever reads a half-linked file.
    let _lock = BuildLock::take(&dir.join(".build-lock"));
    let (src, elf) = (
        dir.join(format!("{name}.S")),
        dir.join(format!("{name}.elf")),
    );
    if elf.exists() && std::fs::read_to_string(&src).is_ok_and(|s| s == source) {
        return elf;
    }
    let staged = format!("{name}.staged");
    let staged_src = dir.join(format!("{staged}.S"));
    std::fs::write(&staged_src, &source).unwrap();
    make(
        &[
            "one",
            &format!("SRC={}", staged_src.display()),
            &format!("NAME={staged}"),
        ],
        &dir,
    );
    for ext in ["elf", "native"] {
        std::fs::rename(
            dir.join(format!("{staged}.{ext}")),
            dir.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
    // Last: the source says what the ELF was built from.
    std::fs::rename(&staged_src, &src).unwrap();
    elf
}

/// An exclusive `flock` on a file, held until dropped.
struct BuildLock(std::fs::File);

impl BuildLock {
    fn take(path: &Path) -> BuildLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: flock on a descriptor this function owns; it blocks
        // until the lock is ours and has no other effect.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            r,
            0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        BuildLock(file)
    }
}

/// Runs `nestmon run --kernel elf`.
pub fn run_nestmon(elf: &Path) -> Run {
    run(
        Command::new(env!("CARGO_BIN_EXE_nestmon"))
            .arg("run")
            .arg("--kernel")
            .arg(elf),
        Duration::from_secs(120),
    )
}

/// Runs a native build of a guest.
pub fn run_native(bin: &Path) -> Run {
    run(&mut Command::new(bin), Duration::from_secs(60))
}

#[path = "../support/stats.rs"]
mod stats;
// Like the rest of the kit, not every test binary uses it.
#[allow(unused_imports)]
pub use stats::{assert_stat_below, stat};

/// The QEMU binary, if installed (with CI set, it must be).
pub fn qemu() -> Option<&'static str> {
    let ok = Command::new("qemu-system-i386")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    // CI installs QEMU (.ci/setup): there, a missing QEMU is a failure,
    // not a test that passes without having run.
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "qemu-system-i386 is missing, and CI is set: .ci/setup should have installed it"
    );
    ok.then_some("qemu-system-i386")
}

/// Runs a Multiboot guest under QEMU TCG exactly as documented in docs/guests.md.
pub fn run_qemu(elf: &Path) -> Run {
    run(
        Command::new("qemu-system-i386")
            .arg("-kernel")
            .arg(elf)
            .args([
                "-serial",
                "stdio",
                "-display",
                "none",
                "-nodefaults",
                "-monitor",
                "none",
            ])
            .args([
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
                "-no-reboot",
                "-m",
                "128",
            ]),
        Duration::from_secs(120),
    )
}

/// First differing line of two outputs, for failure messages.
pub fn first_diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i).copied(), g.get(i).copied());
        if a != b {
            return format!(
                "line {}:\n  want: {}\n  got:  {}",
                i + 1,
                a.unwrap_or("<end of output>"),
                b.unwrap_or("<end of output>")
            );
        }
    }
    "outputs are identical".into()
}

/// Describes a run for failure messages.
pub fn describe(r: &Run) -> String {
    let tail: String = r
        .stderr
        .lines()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "exit code {:?}{}, {:.2?}; stderr tail:\n{}",
        r.code,
        if r.timed_out { " (timed out)" } else { "" },
        r.elapsed,
        tail
    )
}
