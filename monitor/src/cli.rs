//! The `nestmon` command line: `nestmon run [FILE.vmx] …`,
//! `nestmon probe [--json]` and `nestmon bench [GUEST...]` (see
//! [`crate::bench`]).
//!
//! Invariants:
//! * Every failure before the guest starts (bad arguments, bad
//!   configuration, refused modes, an unusable CPU model) is printed as
//!   `nestmon: <message>` on stderr and gives exit status 2; nothing runs.
//! * Warnings and notes go to stderr prefixed `nestmon: warning:` /
//!   `nestmon: note:`; stdout belongs to the guest (COM1) or to `probe`.
//! * No write to stdout or stderr can panic (see [`crate::console`]): when
//!   `probe` or `run --check` cannot write their output they say so on
//!   stderr and exit with status 4 (host failure); a diagnostic stderr
//!   refuses is dropped and never changes the exit status.
//! * `run --check` exits as `run` would before the guest starts: 2 for
//!   everything `run` refuses, including a `.vmx` file that names no
//!   kernel (after printing the summary, whose `refused:` line says why).
//! * Exit statuses are those of [`crate::exit_status`], shown by `--help`.

use crate::config::{self, ConfigError, ConfigSources, Origin, VmConfig};
use crate::console::{self, diagnostic};
use crate::cpuid::{CpuModel, CpuidError};
use crate::exit_status::{self, ExitConvention};
use crate::kvm::ProbeLimits;
use crate::machine::{self, RunOptions};
use crate::mode::{self, Accel, ForcedAccel, ModeError, Resolution};
use crate::probe;
use crate::vcpu::kvm::KvmError;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// nestmon: a binary-translating virtual machine monitor for 32-bit x86 guests.
#[derive(Debug, Parser)]
#[command(name = "nestmon", version, after_help = exit_status::TABLE)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a guest described by a .vmx file and/or flags (the embedded
    /// default guest when no kernel is given).
    #[command(after_help = exit_status::TABLE)]
    Run(Box<RunArgs>),
    /// Report what this host offers (outer hypervisor, /dev/kvm, …) and the
    /// modes `automatic` would select.
    Probe(ProbeArgs),
    /// Run workloads under every backend available here (binary
    /// translation, /dev/kvm, natively, QEMU) and compare them: a table of
    /// ratios to native and a recommended execution mode per workload.
    Bench(crate::bench::BenchArgs),
}

/// `nestmon run`.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// The VM's .vmx file.
    #[arg(value_name = "FILE.vmx")]
    pub vmx: Option<PathBuf>,
    /// Set or override any configuration key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The kernel: a Linux bzImage or a Multiboot kernel, told apart by
    /// content (config key nestmon.kernel).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The kernel command line (config key nestmon.append).
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    pub append: Option<String>,
    /// A Linux kernel's initrd, or a Multiboot kernel's modules as QEMU
    /// takes them: "a.gz" for Linux; "mod1 args,mod2" for Multiboot (comma
    /// separated, ",," for a comma in a name; the text after a file name's
    /// first space is passed with that module) (config key nestmon.initrd).
    #[arg(long, value_name = "FILES", allow_hyphen_values = true)]
    pub initrd: Option<String>,
    /// Guest RAM in MiB (config key memsize).
    #[arg(long, value_name = "MiB")]
    pub memsize: Option<u64>,
    /// Print counters when the guest exits.
    #[arg(long)]
    pub stats: bool,
    /// Write every translation to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_translations: Option<PathBuf>,
    /// Write the guestinfo namespace as JSON to FILE at exit.
    #[arg(long, value_name = "FILE")]
    pub guestinfo_out: Option<PathBuf>,
    /// Write the statistics (as --stats prints them, with totals and rates)
    /// as JSON to FILE at exit.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Check the configuration, print how it resolves, and exit without
    /// running the guest.
    #[arg(long)]
    pub check: bool,
    /// Also list the VMware keys of the .vmx file that have no effect here.
    #[arg(long)]
    pub verbose: bool,
    /// How the guest's report through isa-debug-exit (port 0xf4) becomes
    /// the exit status: `nestmon` (0 success, 1 failure) or `qemu`
    /// (`(value << 1) | 1`, as qemu-system-i386 exits).
    #[arg(long, value_enum, value_name = "CONVENTION", default_value_t)]
    pub exit_status: ExitConvention,
    /// Force the vCPU backend, whatever monitor.virtual_exec and the probe
    /// say (QEMU's spelling): `kvm` (hardware execution through /dev/kvm,
    /// or the device $NESTMON_KVM_DEVICE names; a device that cannot
    /// create a VM exits with status 2) or `bt` (binary translation).
    #[arg(long, value_enum, value_name = "ACCEL")]
    pub accel: Option<Accel>,
    /// A guest reset (reboot) ends the run with exit status 5 instead of
    /// restarting the guest, as QEMU's -no-reboot (config key
    /// nestmon.noReboot).
    #[arg(long)]
    pub no_reboot: bool,
}

/// `nestmon probe`.
#[derive(Debug, Args, Default)]
pub struct ProbeArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Why `nestmon run` refused to start the guest (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The requested modes cannot be honoured.
    #[error(transparent)]
    Mode(#[from] ModeError),
    /// `--accel kvm` (or `nestmon.accel = "kvm"`) on a host whose KVM
    /// device cannot create a VM.
    #[error("{spelling}: hardware execution is not possible: {source}")]
    Accel {
        /// How the backend was forced (`--accel kvm`, `nestmon.accel =
        /// "kvm" (FILE:LINE)`).
        spelling: String,
        /// Why KVM cannot be used.
        source: KvmError,
    },
    /// The guest CPU model cannot be built on this host.
    #[error("{}{source}", origin.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
    Cpuid {
        /// Where the offending mask was set, when known.
        origin: Option<Origin>,
        /// What is wrong.
        source: CpuidError,
    },
}

impl StartError {
    /// The process exit status (always 2: bad input).
    pub fn exit_status(&self) -> i32 {
        exit_status::BAD_INPUT
    }
}

/// How long `nestmon run` lets the `/dev/kvm` speed test measure.
const RUN_PROBE_LIMITS: ProbeLimits = ProbeLimits {
    measure: Duration::from_millis(150),
    hard_limit: Duration::from_millis(1000),
};

impl RunArgs {
    /// The configuration sources these arguments name.
    pub fn sources(&self) -> ConfigSources {
        ConfigSources {
            vmx: self.vmx.clone(),
            settings: self.set.clone(),
            kernel: self.kernel.clone(),
            append: self.append.clone(),
            initrd: self.initrd.clone(),
            memsize_mib: self.memsize,
            no_reboot: self.no_reboot,
        }
    }

    fn run_options(&self, vm: VmConfig, exec: mode::Exec) -> RunOptions {
        RunOptions {
            exec,
            vm,
            stats: self.stats,
            log_translations: self.log_translations.clone(),
            guestinfo_out: self.guestinfo_out.clone(),
            stats_json: self.stats_json.clone(),
            exit_convention: self.exit_status,
        }
    }
}

/// A run that passed every check and may start.
#[derive(Debug)]
pub struct PreparedRun {
    /// What to hand to the machine.
    pub options: RunOptions,
    /// The modes it runs with.
    pub resolution: Resolution,
    /// The guest CPU.
    pub cpu: CpuModel,
    /// A `.vmx` file was given but names no kernel: `run` refuses it
    /// rather than boot the embedded demo guest in its place.
    pub vmx_without_kernel: Option<PathBuf>,
}

/// Parses `args` (including the program name) and does what they say;
/// returns the process exit status.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // Printing can only fail if stderr/stdout are gone.
            let _ = error.print();
            return error.exit_code();
        }
    };
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Probe(args) => probe_command(&args),
        Command::Bench(args) => crate::bench::bench_command(&args),
    }
}

/// Loads and checks everything `nestmon run` needs, printing warnings and
/// notes to stderr as they arise.
pub fn prepare_run(args: &RunArgs) -> Result<PreparedRun, StartError> {
    let loaded = config::load(&args.sources())?;
    for message in &loaded.diagnostics {
        if message.severity != config::Severity::Info || args.verbose {
            diagnostic!("nestmon: {message}");
        }
    }
    let vm = loaded.config.clone();
    let forced = forced_accel(args, &loaded);
    let long_mode = kernel_is_64bit(&vm);
    let mut resolution = match &forced {
        Some(forced) => mode::resolve_forced(&vm, &crate::kvm::capabilities_forced(), forced)?,
        None => mode::resolve(
            &vm,
            &crate::kvm::capabilities_for_run(&vm, RUN_PROBE_LIMITS),
        )?,
    };
    if long_mode {
        resolution = resolve_for_64bit_kernel(&vm, forced.as_ref(), resolution)?;
    }
    if let Some(forced) = forced.as_ref().filter(|f| f.accel == Accel::Kvm) {
        crate::vcpu::kvm::open_vm().map_err(|source| StartError::Accel {
            spelling: forced.spelling(),
            source,
        })?;
    }
    for note in &resolution.notes {
        diagnostic!("nestmon: note: {note}");
    }
    let cpu =
        CpuModel::new_measuring(&vm, &probe::host_cpuid, probe::host_tsc_hz).map_err(|source| {
            StartError::Cpuid {
                origin: loaded.origin_of(source.key()).cloned(),
                source,
            }
        })?;
    let vmx_without_kernel = args.vmx.clone().filter(|_| vm.kernel.is_none());
    Ok(PreparedRun {
        options: args.run_options(vm, resolution.exec),
        resolution,
        cpu,
        vmx_without_kernel,
    })
}

/// Whether the configured kernel is a 64-bit (ELF64) file. A kernel that
/// cannot be read is not (the machine reports why it cannot be loaded).
fn kernel_is_64bit(vm: &VmConfig) -> bool {
    vm.kernel
        .as_ref()
        .and_then(|path| crate::loader::read_kernel(path).ok())
        .is_some_and(|image| crate::loader::is_elf64(&image))
}

/// The modes of a 64-bit kernel: a forced backend stays (binary
/// translation runs the kernel until it enables long mode, with a note);
/// otherwise binary translation switches to hardware execution where it
/// is usable, or the kernel is refused (see
/// [`mode::resolve_for_64bit_kernel`]). For a 64-bit kernel, a KVM that
/// can create a VM is usable even without VT-x/AMD-V: binary translation
/// cannot run it at all, and such a KVM (`kvm_pvm`) runs long mode
/// (only the kernel's 32-bit start-up code goes through its emulator).
fn resolve_for_64bit_kernel(
    vm: &VmConfig,
    forced: Option<&ForcedAccel>,
    resolution: Resolution,
) -> Result<Resolution, ModeError> {
    match forced {
        Some(forced) => {
            let mut resolution = resolution;
            if forced.accel == Accel::Bt {
                resolution.notes.push(format!(
                    "the kernel is a 64-bit (ELF64) kernel and {} forces binary translation, \
                     which runs it only until it enables long mode",
                    forced.spelling()
                ));
            }
            Ok(resolution)
        }
        None => {
            let hardware = VmConfig {
                virtual_exec: mode::ModeRequest::Hardware,
                ..vm.clone()
            };
            let mut host = crate::kvm::capabilities_for_run(&hardware, RUN_PROBE_LIMITS);
            let mut resolution = resolution;
            if let mode::Support::Unusable(reason) = &host.hardware_exec {
                host.hardware_exec = match crate::vcpu::kvm::open_vm() {
                    Ok(_) => {
                        resolution.notes.push(format!(
                            "hardware execution is not usable for 32-bit guests here ({reason}), \
                             but {} can create a VM, which is all a 64-bit kernel can use",
                            crate::vcpu::kvm::device_path().display()
                        ));
                        mode::Support::Usable
                    }
                    Err(e) => mode::Support::Unusable(format!("{reason}; and {e}")),
                };
            }
            mode::resolve_for_64bit_kernel(vm, &host, resolution)
        }
    }
}

/// The backend forced by `--accel`, else by `nestmon.accel`, if any.
fn forced_accel(args: &RunArgs, loaded: &config::Loaded) -> Option<ForcedAccel> {
    if let Some(accel) = args.accel {
        return Some(ForcedAccel::command_line(accel));
    }
    let accel = loaded.config.accel?;
    let origin = loaded
        .origin_of(config::ACCEL_KEY)
        .map_or_else(|| "the configuration".to_string(), |o| o.to_string());
    Some(ForcedAccel {
        accel,
        config_origin: Some(origin),
    })
}

fn run(args: &RunArgs) -> i32 {
    let prepared = match prepare_run(args) {
        Ok(prepared) => prepared,
        Err(error) => {
            diagnostic!("nestmon: {error}");
            return error.exit_status();
        }
    };
    if args.check {
        // 0, or 4 when standard output refused the summary.
        let printed = console::print_command_output(&describe(&prepared));
        if printed != 0 || prepared.vmx_without_kernel.is_none() {
            return printed;
        }
    }
    // `run --check` refuses, after its summary, what `run` refuses.
    if let Some(vmx) = &prepared.vmx_without_kernel {
        diagnostic!("nestmon: {}: {NO_KERNEL}", vmx.display());
        return exit_status::BAD_INPUT;
    }
    match machine::run(&prepared.options) {
        Ok(status) => status,
        Err(error) => {
            diagnostic!("nestmon: {error}");
            error.exit_status()
        }
    }
}

/// Why a `.vmx` without a kernel is not run.
const NO_KERNEL: &str = "no kernel to boot: nestmon boots a Linux bzImage or a Multiboot \
     kernel named by nestmon.kernel = \"PATH\" in the file (or --kernel PATH); it does not \
     boot disk images yet, and runs its embedded demo guest only when neither a .vmx file nor a \
     kernel is given";

/// The initrd items as `run --check` shows them.
fn describe_initrd(items: &[config::InitrdItem]) -> String {
    if items.is_empty() {
        return "(none)".to_string();
    }
    let shown: Vec<String> = items
        .iter()
        .map(|item| match &item.args {
            Some(args) => format!("{} (arguments {args:?})", item.path.display()),
            None => item.path.display().to_string(),
        })
        .collect();
    shown.join(", ")
}

/// The `run --check` summary: the resolved configuration, one item a line.
pub fn describe(prepared: &PreparedRun) -> String {
    let vm = &prepared.options.vm;
    let kernel = match (&vm.kernel, &prepared.vmx_without_kernel) {
        (Some(k), _) => k.display().to_string(),
        (None, Some(_)) => "(none: `nestmon run` refuses this file, see below)".to_string(),
        (None, None) => "(embedded default guest)".to_string(),
    };
    let mut lines = vec![
        format!("kernel: {kernel}"),
        format!("append: {:?}", vm.append),
        format!("initrd: {}", describe_initrd(&vm.initrd)),
        format!("memsize: {} MiB", vm.memsize_mib),
        format!(
            "displayName: {}",
            vm.display_name.as_deref().unwrap_or("(none)")
        ),
        format!("guestOS: {}", vm.guest_os),
        format!("serial0: {:?}", vm.serial0),
        format!(
            "monitor.virtual_exec: {} -> {}",
            vm.virtual_exec,
            prepared.resolution.exec.config_name()
        ),
        format!(
            "monitor.virtual_mmu: {} -> {}",
            vm.virtual_mmu,
            prepared.resolution.mmu.config_name()
        ),
        format!("reason: {}", prepared.resolution.reason),
        format!(
            "accel: {}",
            match prepared.options.exec {
                mode::Exec::Hardware => "kvm",
                mode::Exec::BinaryTranslation => "bt",
            }
        ),
        format!(
            "monitor_control.restrict_backdoor: {}",
            vm.restrict_backdoor
        ),
        format!("vhv.enable: {}", vm.vhv_enable),
        format!("vmx.allowNested: {}", vm.allow_nested),
        format!("hypervisor.cpuid.v0: {}", vm.hypervisor_cpuid_v0),
        format!("cpuid masks: {}", vm.cpuid_masks.len()),
        format!("nestmon.apic: {}", vm.apic),
    ];
    lines.extend(
        [
            (0u32, "cpuid.0"),
            (1, "cpuid.1"),
            (0x8000_0001, "cpuid.80000001"),
        ]
        .iter()
        .map(|(leaf, name)| {
            let [a, b, c, d] = prepared.cpu.query(*leaf, 0);
            format!("{name}: eax={a:08x} ebx={b:08x} ecx={c:08x} edx={d:08x}")
        }),
    );
    lines.push(format!("tsc: {} Hz", prepared.cpu.tsc_hz()));
    lines.extend(
        vm.guestinfo
            .iter()
            .map(|(k, v)| format!("guestinfo.{k}: {v:?}")),
    );
    if prepared.vmx_without_kernel.is_some() {
        lines.push(format!("refused: {NO_KERNEL}"));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn probe_command(args: &ProbeArgs) -> i32 {
    let report = probe::probe(ProbeLimits::default());
    let text = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(error) => {
                diagnostic!("nestmon: cannot encode the probe report: {error}");
                return exit_status::HOST_FAILURE;
            }
        }
    } else {
        report.to_string()
    };
    console::print_command_output(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("nestmon").chain(args.iter().copied())).unwrap()
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).command {
            Command::Run(run) => *run,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn run_flags_fill_sources_and_run_options() {
        let args = run_args(&[
            "run",
            "vm.vmx",
            "--set",
            "a=1",
            "--set",
            "b=2",
            "--kernel",
            "k.elf",
            "--append",
            "-v quiet",
            "--initrd",
            "m1 -x,m2",
            "--memsize",
            "64",
            "--stats",
            "--log-translations",
            "t.log",
            "--guestinfo-out",
            "g.json",
        ]);
        let sources = args.sources();
        assert_eq!(sources.vmx, Some(PathBuf::from("vm.vmx")));
        assert_eq!(sources.settings, vec!["a=1", "b=2"]);
        assert_eq!(sources.kernel, Some(PathBuf::from("k.elf")));
        assert_eq!(sources.append.as_deref(), Some("-v quiet"));
        assert_eq!(sources.initrd.as_deref(), Some("m1 -x,m2"));
        assert_eq!(sources.memsize_mib, Some(64));
        let options = args.run_options(VmConfig::default(), mode::Exec::Hardware);
        assert_eq!(options.exec, mode::Exec::Hardware);
        assert!(options.stats);
        assert_eq!(options.log_translations, Some(PathBuf::from("t.log")));
        assert_eq!(options.guestinfo_out, Some(PathBuf::from("g.json")));
    }

    #[test]
    fn bare_run_has_no_sources() {
        let args = run_args(&["run"]);
        assert_eq!(args.sources(), ConfigSources::default());
        assert!(!args.stats && !args.check);
    }

    #[test]
    fn accel_takes_qemus_spellings() {
        assert_eq!(run_args(&["run", "--accel", "kvm"]).accel, Some(Accel::Kvm));
        assert_eq!(run_args(&["run", "--accel", "bt"]).accel, Some(Accel::Bt));
        assert_eq!(run_args(&["run"]).accel, None);
        assert_eq!(main_with_args(["nestmon", "run", "--accel", "tcg"]), 2);
    }

    #[test]
    fn accel_bt_resolves_to_binary_translation_without_a_probe() {
        let args = run_args(&[
            "run",
            "--accel",
            "bt",
            "--set",
            "monitor.virtual_exec=hardware",
        ]);
        let prepared = prepare_run(&args).unwrap();
        assert_eq!(prepared.options.exec, mode::Exec::BinaryTranslation);
        assert!(describe(&prepared).contains("accel: bt"));
        assert!(prepared.resolution.reason.contains("--accel bt"));
    }

    #[test]
    fn nestmon_accel_in_the_configuration_forces_the_backend_and_accel_wins_over_it() {
        let args = run_args(&[
            "run",
            "--set",
            "nestmon.accel=bt",
            "--set",
            "monitor.virtual_exec=hardware",
        ]);
        let prepared = prepare_run(&args).unwrap();
        assert_eq!(prepared.options.exec, mode::Exec::BinaryTranslation);
        assert!(
            prepared
                .resolution
                .reason
                .starts_with("nestmon.accel = \"bt\" (command line (--set)) was given"),
            "{}",
            prepared.resolution.reason
        );
        let mut both = args;
        both.accel = Some(Accel::Bt);
        assert!(prepare_run(&both)
            .unwrap()
            .resolution
            .reason
            .starts_with("--accel bt was given"));
    }

    #[test]
    fn nestmon_accel_with_another_value_is_refused() {
        let args = run_args(&["run", "--set", "nestmon.accel=tcg"]);
        let error = prepare_run(&args).unwrap_err();
        assert_eq!(error.exit_status(), 2);
        assert!(error.to_string().contains("\"kvm\" or \"bt\""), "{error}");
    }

    #[test]
    fn bench_takes_guests_json_svg_cap_runs_and_backends() {
        let Command::Bench(args) = parse(&[
            "bench",
            "qsort",
            "k.elf",
            "--json",
            "--svg",
            "c.svg",
            "--cap",
            "2.5",
            "--runs",
            "3",
            "--backend",
            "bt",
            "--backend",
            "kvm",
        ])
        .command
        else {
            panic!("not bench");
        };
        assert_eq!(args.guests, ["qsort", "k.elf"]);
        assert!(args.json);
        assert_eq!(args.svg, Some(PathBuf::from("c.svg")));
        assert_eq!((args.cap, args.runs), (2.5, 3));
        assert_eq!(
            args.backends,
            [
                crate::bench::workload::Backend::Bt,
                crate::bench::workload::Backend::Kvm
            ]
        );
        assert_eq!(main_with_args(["nestmon", "bench", "--backend", "tcg"]), 2);
    }

    #[test]
    fn probe_takes_json_flag() {
        assert!(matches!(
            parse(&["probe", "--json"]).command,
            Command::Probe(ProbeArgs { json: true })
        ));
    }

    #[test]
    fn bad_arguments_exit_with_status_2() {
        assert_eq!(main_with_args(["nestmon", "run", "--memsize", "lots"]), 2);
        assert_eq!(main_with_args(["nestmon", "fly"]), 2);
        assert_eq!(main_with_args(["nestmon"]), 2);
    }

    #[test]
    fn refused_modes_exit_with_status_2() {
        let args = run_args(&[
            "run",
            "--set",
            "monitor.virtual_exec=software",
            "--set",
            "monitor.virtual_mmu=hardware",
        ]);
        let error = prepare_run(&args).unwrap_err();
        assert!(matches!(
            error,
            StartError::Mode(ModeError::SoftwareExecWithHardwareMmu)
        ));
        assert_eq!(error.exit_status(), 2);
    }

    #[test]
    fn impossible_cpu_model_refuses_to_start() {
        let args = run_args(&[
            "run",
            "--set",
            "monitor.virtual_exec=software",
            "--set",
            "cpuid.7.ebx=--------------------------------",
        ]);
        let error = prepare_run(&args).unwrap_err();
        assert!(matches!(error, StartError::Cpuid { .. }));
        assert!(
            error
                .to_string()
                .starts_with("command line (--set): cpuid.7.ebx: leaf 0x7"),
            "{error}"
        );
    }

    #[test]
    fn check_of_a_vmx_without_a_kernel_prints_the_summary_then_exits_2() {
        let dir = std::env::temp_dir().join(format!("nestmon-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vmx = dir.join("no-kernel.vmx");
        std::fs::write(&vmx, "memsize = \"64\"\n").unwrap();
        let path = vmx.to_str().unwrap();
        let args = run_args(&["run", "--check", path]);
        let prepared = prepare_run(&args).unwrap();
        let summary = describe(&prepared);
        assert!(summary.contains("memsize: 64 MiB"), "{summary}");
        assert!(summary.contains("refused: no kernel to boot"), "{summary}");
        assert_eq!(run(&args), 2);
        let with_kernel = run_args(&["run", "--check", path, "--kernel", path]);
        assert_eq!(run(&with_kernel), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_summary_shows_resolved_modes_and_cpu() {
        let args = run_args(&[
            "run",
            "--set",
            "monitor.virtual_exec=software",
            "--set",
            "guestinfo.x=1",
        ]);
        let text = describe(&prepare_run(&args).unwrap());
        assert!(text.contains("kernel: (embedded default guest)"));
        assert!(text.contains("monitor.virtual_exec: software -> software"));
        assert!(text.contains("guestinfo.x: \"1\""));
        assert!(text.contains("cpuid.1: eax=000006d8"));
    }
}
