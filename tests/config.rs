//! `nestmon run` configuration handling, through the binary.
//!
//! The corpus in `tests/vmx/` drives most cases: every `invalid/*.vmx` must
//! make `nestmon run FILE` exit with status 2 before running anything, and
//! every `valid/*.vmx` must pass `nestmon run --check FILE` (status 0 when
//! it names a kernel; a valid file without one is refused by `run`, so
//! `--check` prints its summary and exits 2). Each file states what it
//! expects in comment lines:
//! `# expect-stdout: TEXT` and `# expect-stderr: TEXT` (TEXT must appear;
//! `{dir}` stands for the corpus directory).
//!
//! Only paths that exit before the guest runs are exercised here; what each
//! option does to a running guest is tested in tests/options.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nestmon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nestmon"))
}

fn corpus(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vmx")
        .join(kind)
        .canonicalize()
        .expect("the .vmx corpus exists")
}

fn vmx_files(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus(kind))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "vmx"))
        .collect();
    files.sort();
    files
}

/// The `# expect-<stream>:` lines of a corpus file, `{dir}` substituted.
fn expectations(file: &Path, stream: &str) -> Vec<String> {
    let prefix = format!("# expect-{stream}: ");
    let dir = file.parent().unwrap().display().to_string();
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|text| text.replace("{dir}", &dir))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_expectations(file: &Path, output: &Output) {
    let streams = [
        ("stdout", text(&output.stdout)),
        ("stderr", text(&output.stderr)),
    ];
    for (stream, actual) in &streams {
        for expected in expectations(file, stream) {
            assert!(
                actual.contains(&expected),
                "{}: {stream} lacks {expected:?}; it was:\n{actual}",
                file.display()
            );
        }
    }
}

fn run_check(args: &[&str]) -> Output {
    nestmon()
        .arg("run")
        .arg("--check")
        .args(args)
        .output()
        .unwrap()
}

fn assert_refused(output: &Output, message: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(message),
        "stderr lacks {message:?}: {stderr}"
    );
    assert!(stderr.starts_with("nestmon: "), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "the guest must not run");
}

#[test]
fn every_invalid_corpus_file_exits_2_with_its_message() {
    let files = vmx_files("invalid");
    assert!(files.len() >= 20, "the invalid corpus went missing");
    for file in files {
        let output = nestmon().arg("run").arg(&file).output().unwrap();
        let expected = expectations(&file, "stderr");
        assert!(
            !expected.is_empty(),
            "{} states no expectation",
            file.display()
        );
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: stderr {}",
            file.display(),
            text(&output.stderr)
        );
        assert!(
            output.stdout.is_empty(),
            "{}: the guest ran",
            file.display()
        );
        assert!(text(&output.stderr).contains("nestmon: "));
        check_expectations(&file, &output);
    }
}

/// The message `run` and `run --check` give a `.vmx` file that names no
/// kernel.
const NO_KERNEL: &str = "no kernel to boot: nestmon boots a Linux bzImage or a Multiboot \
                         kernel named by nestmon.kernel = \"PATH\" in the file (or --kernel \
                         PATH)";

/// Whether a corpus file sets `nestmon.kernel`.
fn names_a_kernel(file: &Path) -> bool {
    std::fs::read_to_string(file).unwrap().lines().any(|line| {
        line.split_once('=')
            .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case("nestmon.kernel"))
    })
}

#[test]
fn every_valid_corpus_file_passes_check() {
    let files = vmx_files("valid");
    assert!(files.len() >= 8, "the valid corpus went missing");
    for file in files {
        let output = nestmon()
            .args(["run", "--check"])
            .arg(&file)
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        let (status, refusal) = if names_a_kernel(&file) {
            (0, None)
        } else {
            (2, Some(format!("nestmon: {}: {NO_KERNEL}", file.display())))
        };
        assert_eq!(
            output.status.code(),
            Some(status),
            "{}: stderr {stderr}",
            file.display()
        );
        assert!(
            stdout.starts_with("kernel: "),
            "{}: {stdout}",
            file.display()
        );
        if let Some(refusal) = refusal {
            assert!(stderr.contains(&refusal), "{}: {stderr}", file.display());
            assert!(
                stdout.contains(&format!("refused: {NO_KERNEL}")),
                "{stdout}"
            );
        }
        check_expectations(&file, &output);
    }
}

#[test]
fn check_of_a_vmx_without_a_kernel_prints_its_summary_then_exits_2_as_run_does() {
    let file = corpus("invalid").join("no_kernel.vmx");
    let checked = run_check(&[file.to_str().unwrap()]);
    let stdout = text(&checked.stdout);
    assert_eq!(checked.status.code(), Some(2), "{}", text(&checked.stderr));
    assert!(
        stdout.contains("kernel: (none: `nestmon run` refuses this file, see below)"),
        "{stdout}"
    );
    assert!(stdout.contains("memsize: 64 MiB"), "{stdout}");
    assert!(
        stdout.contains(&format!("refused: {NO_KERNEL}")),
        "{stdout}"
    );
    assert!(
        text(&checked.stderr).contains(&format!("nestmon: {}: {NO_KERNEL}", file.display())),
        "{}",
        text(&checked.stderr)
    );
    let run = nestmon().arg("run").arg(&file).output().unwrap();
    assert_refused(&run, NO_KERNEL);
    let with_kernel = run_check(&[
        file.to_str().unwrap(),
        "--kernel",
        corpus("valid")
            .join("not-a-real-kernel.bin")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(with_kernel.status.code(), Some(0));
}

#[test]
fn relative_kernel_is_found_from_any_working_directory() {
    let file = corpus("valid").join("full.vmx");
    let output = nestmon()
        .current_dir("/")
        .args(["run", "--check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn set_overrides_the_file_and_flags_override_set() {
    let file = corpus("valid").join("duplicate_key.vmx");
    let file = file.to_str().unwrap();
    let overridden = run_check(&[file, "--set", "memsize=32"]);
    assert!(text(&overridden.stdout).contains("memsize: 32 MiB"));
    let flagged = run_check(&[file, "--set", "memsize=32", "--memsize", "8"]);
    assert!(text(&flagged.stdout).contains("memsize: 8 MiB"));
}

#[test]
fn set_accepts_any_key_case_insensitively() {
    let output = run_check(&[
        "--set",
        "DisplayName=from the command line",
        "--set",
        "GUESTINFO.answer=42",
        "--set",
        "monitor.VIRTUAL_EXEC=software",
    ]);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("displayName: from the command line"),
        "{stdout}"
    );
    assert!(stdout.contains("guestinfo.answer: \"42\""), "{stdout}");
    assert!(stdout.contains("monitor.virtual_exec: software -> software"));
}

#[test]
fn repeated_set_warns_and_last_wins() {
    let output = run_check(&["--set", "memsize=16", "--set", "memsize=24"]);
    assert!(text(&output.stdout).contains("memsize: 24 MiB"));
    assert!(text(&output.stderr).contains("memsize is set again"));
}

#[test]
fn set_without_equals_is_refused() {
    let output = nestmon()
        .args(["run", "--set", "memsize"])
        .output()
        .unwrap();
    assert_refused(&output, "--set \"memsize\": expected KEY=VALUE");
}

#[test]
fn unknown_set_key_is_warned_about_by_name() {
    let output = run_check(&["--set", "frobnicate=TRUE"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stderr).contains("unknown key \"frobnicate\" ignored"));
}

#[test]
fn vmware_device_keys_are_listed_only_with_verbose() {
    let quiet = run_check(&["--set", "sound.present=TRUE"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(
        !text(&quiet.stderr).contains("sound.present"),
        "{}",
        text(&quiet.stderr)
    );
    let verbose = run_check(&["--verbose", "--set", "sound.present=TRUE"]);
    assert!(
        text(&verbose.stderr)
            .contains("info: command line (--set): VMware key \"sound.present\" has no effect"),
        "{}",
        text(&verbose.stderr)
    );
}

#[test]
fn no_file_and_no_kernel_selects_the_embedded_guest() {
    let output = run_check(&[]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("kernel: (embedded default guest)"));
}

#[test]
fn kernel_and_append_flags_fill_the_config() {
    let kernel = corpus("valid").join("not-a-real-kernel.bin");
    let output = run_check(&["--kernel", kernel.to_str().unwrap(), "--append", "-x y"]);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("kernel: {}", kernel.display())),
        "{stdout}"
    );
    assert!(stdout.contains("append: \"-x y\""), "{stdout}");
}

#[test]
fn missing_kernel_flag_is_refused() {
    let output = nestmon()
        .args(["run", "--kernel", "/nonexistent/guest.elf"])
        .output()
        .unwrap();
    assert_refused(
        &output,
        "nestmon: command line (--kernel): kernel /nonexistent/guest.elf not found",
    );
}

#[test]
fn missing_vmx_file_is_refused() {
    let output = nestmon()
        .args(["run", "/nonexistent/machine.vmx"])
        .output()
        .unwrap();
    assert_refused(&output, "cannot read /nonexistent/machine.vmx");
}

#[test]
fn non_utf8_vmx_is_refused_with_line() {
    let dir = std::env::temp_dir().join(format!("nestmon-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("latin1.vmx");
    std::fs::write(&file, b"memsize = \"64\"\ndisplayName = \"caf\xe9\"\n").unwrap();
    let output = nestmon().arg("run").arg(&file).output().unwrap();
    assert_refused(&output, "latin1.vmx:2: the file is not valid UTF-8");
}

#[test]
fn bad_memsize_flag_is_a_usage_error() {
    let output = nestmon()
        .args(["run", "--memsize", "lots"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--memsize"));
}

#[test]
fn out_of_range_memsize_flag_names_the_flag() {
    let output = nestmon().args(["run", "--memsize", "3"]).output().unwrap();
    assert_refused(
        &output,
        "command line (--memsize): invalid value \"3\" for memsize",
    );
}

#[test]
fn software_exec_with_hardware_mmu_on_command_line_is_refused() {
    let output = nestmon()
        .args([
            "run",
            "--set",
            "monitor.virtual_exec=software",
            "--set",
            "monitor.virtual_mmu=hardware",
        ])
        .output()
        .unwrap();
    assert_refused(&output, "cannot be combined");
}

#[test]
fn set_accepts_vmware_topology_keys_under_cpuid_quietly() {
    for key in ["cpuid.numSMT=2", "cpuid.coresPerSocket.cookie=2"] {
        let output = run_check(&["--set", key]);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        assert_eq!(text(&output.stderr), "", "{key}");
        assert!(text(&output.stdout).contains("cpuid masks: 0"), "{key}");
    }
}

#[test]
fn cpuid_mask_leaf_may_be_written_with_0x() {
    let output = run_check(&[
        "--set",
        "cpuid.0x80000001.ecx=--------------------------------",
        "--set",
        "cpuid.0X1.edx=--------------------------------",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("cpuid masks: 2"));
}

#[test]
fn unknown_subcommand_and_missing_subcommand_exit_2() {
    assert_eq!(
        nestmon().arg("fly").output().unwrap().status.code(),
        Some(2)
    );
    assert_eq!(nestmon().output().unwrap().status.code(), Some(2));
}
