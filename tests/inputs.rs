//! The files nestmon reads on the user's behalf (`--kernel PATH`, the
//! `.vmx` file), through the binary: anything but a regular file is refused
//! at once with what it is (never "not found" unless nothing is there), a
//! FIFO never blocks, a file past the documented limit is refused before it
//! is read, and every refusal exits with status 2.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{assert_no_panic, captured, Finished};
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;

/// A refusal must come at once; this is far above what it takes.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The documented limits (README.md, docs/config.md, docs/devices.md).
const KERNEL_LIMIT: u64 = 256 << 20;
const VMX_LIMIT: u64 = 1 << 20;

fn run(args: &[&str]) -> Finished {
    captured(TIME_LIMIT, args)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Asserts status 2, that nothing ran, and that stderr has every one of `words`.
fn assert_refused(run: &Finished, words: &[&str]) {
    assert_no_panic(run);
    assert_eq!(run.status, Some(2), "stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "the guest ran:\n{}", run.stdout);
    for word in words {
        assert!(
            run.stderr.contains(word),
            "stderr lacks {word:?}:\n{}",
            run.stderr
        );
    }
    assert!(
        !run.stderr.contains("not found"),
        "the path exists:\n{}",
        run.stderr
    );
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A sparse file of `len` bytes (no disk space used).
fn sparse_file(path: &Path, len: u64) {
    File::create(path)
        .and_then(|file| file.set_len(len))
        .expect("sparse file");
}

#[test]
fn kernel_that_is_a_directory_is_refused_with_its_kind() {
    let dir = Scratch::new("inputs-kernel-dir");
    let refused = run(&["run", "--kernel", text(&dir.0)]);
    assert_refused(&refused, &["is a directory, not a kernel file"]);
}

#[test]
fn kernel_that_is_a_fifo_is_refused_without_blocking() {
    let dir = Scratch::new("inputs-kernel-fifo");
    let fifo = dir.0.join("kernel");
    mkfifo(&fifo);
    let refused = run(&["run", "--kernel", text(&fifo)]);
    assert_refused(&refused, &["is a FIFO (named pipe), not a kernel file"]);
}

#[test]
fn kernel_that_is_dev_zero_is_refused_as_a_character_device() {
    let refused = run(&["run", "--kernel", "/dev/zero"]);
    assert_refused(&refused, &["/dev/zero is a character device"]);
}

#[test]
fn kernel_that_is_a_socket_is_refused_with_its_kind() {
    let dir = Scratch::new("inputs-kernel-socket");
    let path = dir.0.join("kernel.sock");
    let _listener = UnixListener::bind(&path).expect("bind");
    let refused = run(&["run", "--kernel", text(&path)]);
    assert_refused(&refused, &["is a socket, not a kernel file"]);
}

#[test]
fn kernel_named_in_a_vmx_that_is_a_fifo_is_refused_with_file_and_line() {
    let dir = Scratch::new("inputs-vmx-kernel-fifo");
    mkfifo(&dir.0.join("kernel"));
    let vmx = dir.file("vm.vmx", b"memsize = \"64\"\nnestmon.kernel = \"kernel\"\n");
    let refused = run(&["run", text(&vmx)]);
    assert_refused(&refused, &["vm.vmx:2: kernel ", "is a FIFO (named pipe)"]);
}

#[test]
fn kernel_larger_than_the_limit_is_refused_before_reading() {
    let dir = Scratch::new("inputs-kernel-large");
    let kernel = dir.0.join("huge.elf");
    sparse_file(&kernel, KERNEL_LIMIT + 1);
    let refused = run(&["run", "--kernel", text(&kernel)]);
    assert_refused(&refused, &["huge.elf is larger than 256 MiB"]);
}

#[test]
fn kernel_check_reports_the_kind_too() {
    let refused = run(&["run", "--check", "--kernel", "/dev/null"]);
    assert_refused(&refused, &["/dev/null is a character device"]);
}

#[test]
fn vmx_that_is_a_fifo_is_refused_without_blocking() {
    let dir = Scratch::new("inputs-vmx-fifo");
    let fifo = dir.0.join("vm.vmx");
    mkfifo(&fifo);
    let refused = run(&["run", text(&fifo)]);
    assert_refused(&refused, &["is a FIFO (named pipe), not a .vmx file"]);
}

#[test]
fn vmx_that_is_dev_zero_is_refused_at_once() {
    let refused = run(&["run", "/dev/zero"]);
    assert_refused(
        &refused,
        &["/dev/zero is a character device, not a .vmx file"],
    );
}

#[test]
fn vmx_that_is_a_directory_is_refused_with_its_kind() {
    let dir = Scratch::new("inputs-vmx-dir");
    let refused = run(&["run", text(&dir.0)]);
    assert_refused(&refused, &["is a directory, not a .vmx file"]);
}

#[test]
fn vmx_larger_than_the_limit_is_refused_before_reading() {
    let dir = Scratch::new("inputs-vmx-large");
    let vmx = dir.0.join("big.vmx");
    sparse_file(&vmx, VMX_LIMIT + 1);
    let refused = run(&["run", text(&vmx)]);
    assert_refused(&refused, &["big.vmx is larger than 1 MiB"]);
}

#[test]
fn vmx_at_the_limit_is_read() {
    let dir = Scratch::new("inputs-vmx-at-limit");
    let mut contents = b"memsize = \"64\"\n".to_vec();
    contents.resize(VMX_LIMIT as usize, b'\n');
    let vmx = dir.file("full.vmx", &contents);
    let checked = run(&["run", "--check", text(&vmx)]);
    // Read and summarised; it names no kernel, so `--check` refuses it as
    // `run` would (status 2) after the summary.
    assert_eq!(checked.status, Some(2), "stderr:\n{}", checked.stderr);
    assert!(
        checked.stdout.contains("memsize: 64 MiB"),
        "{}",
        checked.stdout
    );
}

#[test]
fn missing_vmx_still_says_it_does_not_exist() {
    let dir = Scratch::new("inputs-vmx-missing");
    let missing = run(&["run", text(&dir.0.join("absent.vmx"))]);
    assert_eq!(missing.status, Some(2));
    assert!(
        missing.stderr.contains("No such file or directory"),
        "stderr:\n{}",
        missing.stderr
    );
}
