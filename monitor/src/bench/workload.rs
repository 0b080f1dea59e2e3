//! The workloads `nestmon bench` runs, and how each backend runs them.
//!
//! Built-in workloads come from nestmon's source tree, built with its
//! `guests/Makefile` (gcc with `-m32` and make are needed):
//! - the compute kernels `benches/workloads/*.c` (`make benches`: each is
//!   `bench/NAME.elf`, a Multiboot guest, and `bench/NAME.native`, a
//!   static i386 Linux program, from one object), judged against the
//!   native run's output;
//! - `events`, the per-event guest `benches/events/events.c` (`make
//!   bench-events`; exit-heavy: INT/IRET, SYSENTER, faults, port I/O; no
//!   native build), judged by its exit status (it prints cycle counts);
//! - `linux-boot` and `linux-loop`, Debian's i386 kernel with nestmon's
//!   test initramfs (`~/.cache/nestmon/debian-686/{vmlinuz,initramfs.gz}`,
//!   or `$NESTMON_LINUX_KERNEL` and `$NESTMON_LINUX_INITRAMFS`), only when
//!   both images exist: boot to `/init` and power off, and a busybox shell
//!   loop; judged by the initramfs's `nestmon-init: exit status 0` line.
//!
//! A GUEST argument that names a file is a workload of the user's: a
//! Multiboot kernel (or bzImage), with `NAME.native` beside it, if there
//! is one, as its native build and output reference.
//!
//! Invariant: every workload has a guest every backend but `native` can
//! boot; `native` runs only where a native build exists.

use super::runner::Invocation;
use super::BenchError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a workload runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The native build, on the host.
    Native,
    /// nestmon, binary translation (`--accel bt`).
    Bt,
    /// nestmon, hardware execution through `/dev/kvm` (`--accel kvm`).
    Kvm,
    /// `qemu-system-i386` (TCG).
    Qemu,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: [Backend; 4] = [Backend::Native, Backend::Bt, Backend::Kvm, Backend::Qemu];

    /// Its name in the table, the JSON and `--backend`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Bt => "bt",
            Backend::Kvm => "kvm",
            Backend::Qemu => "qemu",
        }
    }
}

/// What a workload exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A compute kernel with a native build.
    Compute,
    /// The per-event (exit- and fault-heavy) guest.
    Events,
    /// Linux with the test initramfs.
    Linux,
    /// A kernel the user named.
    Custom,
}

/// How a completed run's output is judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The same lines as the native run's, `#` lines aside.
    SameAsNative,
    /// The exit status alone.
    ExitStatus,
    /// The output holds this line.
    Contains(&'static str),
}

/// One workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Its name in the table.
    pub name: String,
    /// What it exercises.
    pub kind: Kind,
    /// The kernel the guests boot.
    pub kernel: PathBuf,
    /// Linux's initrd.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub append: Option<String>,
    /// The native build, if any.
    pub native: Option<PathBuf>,
    /// How a run's output is judged.
    pub check: Check,
}

/// The line nestmon's initramfs prints when its commands succeeded.
const LINUX_SUCCESS: &str = "nestmon-init: exit status 0";
/// The Linux workloads: name and the commands `/init` runs.
const LINUX_WORKLOADS: [(&str, &str); 2] = [
    ("linux-boot", "true"),
    (
        "linux-loop",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    ),
];
/// The per-event guest's name.
const EVENTS: &str = "events";

impl Workload {
    /// How `backend` runs this workload (`nestmon` is this program), if it
    /// can.
    pub fn invocation(&self, backend: Backend, nestmon: &Path) -> Option<Invocation> {
        match backend {
            Backend::Native => self.native.as_ref().map(|native| Invocation {
                program: native.clone(),
                args: Vec::new(),
                success_status: 0,
            }),
            Backend::Bt | Backend::Kvm => Some(self.nestmon(backend, nestmon)),
            Backend::Qemu => Some(self.qemu()),
        }
    }

    fn nestmon(&self, backend: Backend, nestmon: &Path) -> Invocation {
        let mut args = vec![
            "run".to_string(),
            "--accel".to_string(),
            backend.name().to_string(),
            "--kernel".to_string(),
            self.kernel.display().to_string(),
        ];
        self.boot_files(&mut args, "--initrd", "--append");
        // As QEMU's -no-reboot below: a guest that resets fails its run
        // (exit status 5) instead of booting again forever.
        args.push("--no-reboot".to_string());
        Invocation {
            program: nestmon.to_path_buf(),
            args,
            // A guest's success report and an ACPI power-off both exit 0.
            success_status: 0,
        }
    }

    /// QEMU as the guest tests and benches/run-ratios.sh run it.
    fn qemu(&self) -> Invocation {
        let mut args: Vec<String> = ["-kernel", &self.kernel.display().to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        self.boot_files(&mut args, "-initrd", "-append");
        args.extend(
            [
                "-serial",
                "stdio",
                "-display",
                "none",
                "-nodefaults",
                "-monitor",
                "none",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
                "-no-reboot",
                "-m",
                "128",
            ]
            .map(String::from),
        );
        Invocation {
            program: PathBuf::from("qemu-system-i386"),
            args,
            // isa-debug-exit turns the guest's 0 into (0 << 1) | 1; Linux
            // powers off, which QEMU ends with 0.
            success_status: if self.kind == Kind::Linux { 0 } else { 1 },
        }
    }

    fn boot_files(&self, args: &mut Vec<String>, initrd: &str, append: &str) {
        if let Some(file) = &self.initrd {
            args.extend([initrd.to_string(), file.display().to_string()]);
        }
        if let Some(text) = &self.append {
            args.extend([append.to_string(), text.clone()]);
        }
    }
}

/// Where nestmon's source tree is: `$NESTMON_SOURCE_DIR`, or where this
/// binary was built from.
pub fn default_source_dir() -> PathBuf {
    std::env::var_os("NESTMON_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// The Linux images, if both exist.
fn linux_images() -> Option<(PathBuf, PathBuf)> {
    let cache =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/nestmon/debian-686"));
    let pick = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| cache.as_ref().map(|c| c.join(name)))
            .filter(|p| p.is_file())
    };
    Some((
        pick("NESTMON_LINUX_KERNEL", "vmlinuz")?,
        pick("NESTMON_LINUX_INITRAMFS", "initramfs.gz")?,
    ))
}

/// The built-in workloads' names: the compute kernels, `events`, and the
/// Linux workloads when their images exist.
pub fn builtin_names(source: &Path) -> Result<Vec<String>, BenchError> {
    let dir = source.join("benches/workloads");
    let entries = std::fs::read_dir(&dir).map_err(|e| BenchError::NoSourceTree {
        path: dir.clone(),
        why: e.to_string(),
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names.push(EVENTS.to_string());
    if linux_images().is_some() {
        names.extend(LINUX_WORKLOADS.iter().map(|(name, _)| name.to_string()));
    }
    Ok(names)
}

/// The workloads `requested` names (all built-in ones when empty),
/// building the built-in guests into `out` first.
pub fn resolve(
    requested: &[String],
    source: &Path,
    out: &Path,
) -> Result<Vec<Workload>, BenchError> {
    let builtin = builtin_names(source)?;
    let names: Vec<String> = if requested.is_empty() {
        builtin.clone()
    } else {
        requested.to_vec()
    };
    let needs_build = names.iter().any(|n| builtin.contains(n) && !is_linux(n));
    if needs_build {
        build(source, out)?;
    }
    names
        .iter()
        .map(|name| workload(name, &builtin, out))
        .collect()
}

fn is_linux(name: &str) -> bool {
    LINUX_WORKLOADS.iter().any(|(n, _)| *n == name)
}

fn workload(name: &str, builtin: &[String], out: &Path) -> Result<Workload, BenchError> {
    let path = Path::new(name);
    if path.is_file() {
        return Ok(custom(path));
    }
    if !builtin.iter().any(|b| b == name) {
        if is_linux(name) {
            return Err(BenchError::NoLinuxImages);
        }
        return Err(BenchError::UnknownWorkload {
            name: name.to_string(),
            builtin: builtin.join(", "),
        });
    }
    if let Some((_, commands)) = LINUX_WORKLOADS.iter().find(|(n, _)| *n == name) {
        let (kernel, initramfs) = linux_images().ok_or(BenchError::NoLinuxImages)?;
        return Ok(Workload {
            name: name.to_string(),
            kind: Kind::Linux,
            kernel,
            initrd: Some(initramfs),
            append: Some(format!("console=ttyS0 quiet -- {commands}")),
            native: None,
            check: Check::Contains(LINUX_SUCCESS),
        });
    }
    let bench = out.join("bench");
    let events = name == EVENTS;
    Ok(Workload {
        name: name.to_string(),
        kind: if events { Kind::Events } else { Kind::Compute },
        kernel: bench.join(format!("{name}.elf")),
        initrd: None,
        append: None,
        native: (!events).then(|| bench.join(format!("{name}.native"))),
        check: if events {
            Check::ExitStatus
        } else {
            Check::SameAsNative
        },
    })
}

/// A kernel the user named, with `NAME.native` beside it if present.
fn custom(path: &Path) -> Workload {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let native = path.with_file_name(format!("{stem}.native"));
    let native = native.is_file().then_some(native);
    Workload {
        name: stem,
        kind: Kind::Custom,
        kernel: path.to_path_buf(),
        initrd: None,
        append: None,
        check: if native.is_some() {
            Check::SameAsNative
        } else {
            Check::ExitStatus
        },
        native,
    }
}

/// `make -C SOURCE/guests benches bench-events OUT=out`.
fn build(source: &Path, out: &Path) -> Result<(), BenchError> {
    let guests = source.join("guests");
    if !guests.join("Makefile").is_file() {
        return Err(BenchError::NoSourceTree {
            path: guests,
            why: "it has no Makefile".into(),
        });
    }
    let output = Command::new("make")
        .args(["-s", "--no-print-directory", "-C"])
        .arg(&guests)
        .arg(format!("OUT={}", out.display()))
        .args(["benches", "bench-events"])
        .output()
        .map_err(|e| BenchError::Build(format!("cannot run make: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(BenchError::Build(format!(
        "make -C {} benches bench-events failed ({}):\n{}",
        guests.display(),
        output.status,
        stderr.trim_end()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compute() -> Workload {
        workload("qsort", &["qsort".to_string()], Path::new("/out")).unwrap()
    }

    #[test]
    fn a_compute_kernel_runs_natively_and_under_every_vmm() {
        let w = compute();
        assert_eq!(w.kind, Kind::Compute);
        let native = w.invocation(Backend::Native, Path::new("/n")).unwrap();
        assert_eq!(native.program, PathBuf::from("/out/bench/qsort.native"));
        let bt = w.invocation(Backend::Bt, Path::new("/n")).unwrap();
        assert_eq!(
            bt.args,
            [
                "run",
                "--accel",
                "bt",
                "--kernel",
                "/out/bench/qsort.elf",
                "--no-reboot"
            ]
        );
        let qemu = w.invocation(Backend::Qemu, Path::new("/n")).unwrap();
        assert_eq!(qemu.success_status, 1);
        assert_eq!(&qemu.args[..2], ["-kernel", "/out/bench/qsort.elf"]);
    }

    #[test]
    fn the_events_guest_has_no_native_build() {
        let w = workload(EVENTS, &[EVENTS.to_string()], Path::new("/out")).unwrap();
        assert_eq!((w.kind, &w.check), (Kind::Events, &Check::ExitStatus));
        assert!(w.invocation(Backend::Native, Path::new("/n")).is_none());
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_builtin_list() {
        let error = workload("nope", &["qsort".to_string()], Path::new("/out")).unwrap_err();
        assert!(error.to_string().contains("qsort"), "{error}");
    }

    #[test]
    fn a_path_is_a_custom_workload_with_its_native_build_beside_it() {
        let dir = std::env::temp_dir().join(format!("nestmon-bench-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("mine.elf");
        std::fs::write(&kernel, b"x").unwrap();
        let w = custom(&kernel);
        assert_eq!((w.name.as_str(), w.native.is_none()), ("mine", true));
        std::fs::write(dir.join("mine.native"), b"x").unwrap();
        let w = custom(&kernel);
        assert_eq!(w.check, Check::SameAsNative);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn linux_workloads_boot_with_the_initramfs_and_power_off() {
        let w = Workload {
            name: "linux-boot".into(),
            kind: Kind::Linux,
            kernel: "/k".into(),
            initrd: Some("/i".into()),
            append: Some("console=ttyS0 -- true".into()),
            native: None,
            check: Check::Contains(LINUX_SUCCESS),
        };
        let kvm = w.invocation(Backend::Kvm, Path::new("/n")).unwrap();
        assert_eq!(
            kvm.args[5..],
            [
                "--initrd",
                "/i",
                "--append",
                "console=ttyS0 -- true",
                "--no-reboot"
            ]
        );
        assert_eq!(
            w.invocation(Backend::Qemu, Path::new("/n"))
                .unwrap()
                .success_status,
            0
        );
    }
}
