//! Debian 12's `open-vm-tools:i386` inside Debian's i386 kernel under
//! `nestmon run`: the Tools' own clients talk to nestmon's VMware backdoor
//! unchanged. `vmware-checkvm` finds a VMware VM, `vmware-rpctool` reads
//! guestinfo values given with `--set` and in a `.vmx` file and writes
//! ones that reach `--guestinfo-out`, and `vmtoolsd` runs its TCLO loop:
//! nestmon greets its channel with `reset` and `Capabilities_Register` as
//! VMware does, vmtoolsd answers both and keeps polling.
//!
//! The kernel is `NESTMON_LINUX_KERNEL` or `~/.cache/nestmon/debian-686/
//! vmlinuz` (fetched by `.ci/setup`); the initramfs is built once per run
//! by `guests/linux/build-initramfs.sh --tools` (which fetches busybox,
//! open-vm-tools and the i386 libraries they need into
//! `~/.cache/nestmon/debs`). When the Debian packages cannot be fetched
//! (no kernel, or the script's status 3) each test says why and is
//! skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{captured, Finished};
// Only `Scratch::new` and `Scratch::file` are used here.
#[allow(dead_code)]
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/guest_script.rs"]
mod guest_script;
use guest_script::{append_running, base64};
#[path = "support/watched.rs"]
mod watched;
use watched::{Stream, Watched};

/// The longest a boot with Tools may take before the test fails.
const TIME_LIMIT: Duration = Duration::from_secs(120);

fn debian_kernel() -> Option<PathBuf> {
    let path = match std::env::var_os("NESTMON_LINUX_KERNEL") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/nestmon/debian-686/vmlinuz"),
    };
    path.is_file().then_some(path)
}

/// The initramfs with open-vm-tools, built once for all tests of this
/// run, or why it cannot be had.
fn tools_initramfs() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("linux-tools");
        std::fs::create_dir_all(&dir).expect("initramfs directory");
        let initramfs = dir.join("initramfs-tools.gz");
        // nextest runs each test in a process of its own: the builds of
        // concurrent tests take turns (the script writes FILE.tmp, then
        // renames it), held by an exclusive lock until this one is done.
        let lock = std::fs::File::create(dir.join("build.lock")).expect("lock file");
        // SAFETY: flock on a descriptor this function owns; released when
        // `lock` is dropped at the end of the closure.
        let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/linux/build-initramfs.sh");
        let built = Command::new("bash")
            .arg(&script)
            .arg("--tools")
            .arg("--output")
            .arg(&initramfs)
            .stdin(Stdio::null())
            .output()
            .expect("run build-initramfs.sh");
        match built.status.code() {
            Some(0) => Ok(initramfs),
            Some(3) => Err(String::from_utf8_lossy(&built.stderr).trim().to_owned()),
            other => panic!(
                "build-initramfs.sh --tools failed ({other:?}):\n{}",
                String::from_utf8_lossy(&built.stderr)
            ),
        }
    })
}

/// The kernel and the Tools initramfs, or `None` (after saying why) when
/// the Debian packages cannot be had.
fn guest() -> Option<(PathBuf, PathBuf)> {
    let Some(kernel) = debian_kernel() else {
        eprintln!(
            "skipped: Debian's i386 kernel could not be fetched (.ci/setup puts it at \
             ~/.cache/nestmon/debian-686/vmlinuz; or set NESTMON_LINUX_KERNEL)"
        );
        return None;
    };
    match tools_initramfs() {
        Ok(initramfs) => Some((kernel, initramfs.clone())),
        Err(why) => {
            eprintln!("skipped: Debian's open-vm-tools:i386 could not be fetched: {why}");
            None
        }
    }
}

/// The console's lines, without the serial console's CR.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

fn assert_line(run: &Finished, line: &str) {
    assert!(
        lines(&run.stdout).contains(&line),
        "no line {line:?} on the console (status {:?}):\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

#[test]
fn checkvm_finds_vmware_and_rpctool_reads_set_and_vmx_guestinfo_and_writes_guestinfo_out() {
    let Some((kernel, initramfs)) = guest() else {
        return;
    };
    let dir = Scratch::new("tools-rpctool");
    let vmx = dir.file(
        "tools.vmx",
        format!(
            "nestmon.kernel = \"{}\"\nnestmon.initrd = \"{}\"\nmemsize = \"128\"\n\
             guestinfo.fromvmx = \"from the vmx file\"\n",
            kernel.display(),
            initramfs.display()
        )
        .as_bytes(),
    );
    let out = dir.0.join("guestinfo.json");
    let append = append_running(
        "vmware-checkvm; echo checkvm-status $?\n\
         vmware-checkvm -p\n\
         vmware-rpctool 'info-get guestinfo.fromset'\n\
         vmware-rpctool 'info-get guestinfo.fromvmx'\n\
         vmware-rpctool 'info-get guestinfo.missing'; echo missing-status $?\n\
         vmware-rpctool 'info-set guestinfo.fromguest hello from the guest'\n\
         echo set-status $?\n\
         vmware-rpctool 'info-get guestinfo.fromguest'\n",
    );
    let run = captured(
        TIME_LIMIT,
        &[
            "run",
            vmx.to_str().expect("utf-8 path"),
            "--set",
            "guestinfo.fromset=set on the command line",
            "--guestinfo-out",
            out.to_str().expect("utf-8 path"),
            "--append",
            &append,
        ],
    );
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_line(&run, "VMware software version 6 (good)");
    assert_line(&run, "checkvm-status 0");
    assert_line(&run, "Workstation");
    assert_line(&run, "set on the command line");
    assert_line(&run, "from the vmx file");
    assert_line(&run, "missing-status 1");
    assert_line(&run, "set-status 0");
    assert_line(&run, "hello from the guest");
    assert_line(&run, "nestmon-init: exit status 0");
    let guestinfo = read_json(&out);
    assert_eq!(guestinfo["guestinfo.fromguest"], "hello from the guest");
    assert_eq!(guestinfo["guestinfo.fromset"], "set on the command line");
    assert_eq!(guestinfo["guestinfo.fromvmx"], "from the vmx file");
    assert!(run.stderr.is_empty(), "stderr:\n{}", run.stderr);
}

#[test]
fn vmtoolsd_answers_reset_and_capabilities_register_and_keeps_polling_tclo() {
    let Some((kernel, initramfs)) = guest() else {
        return;
    };
    let dir = Scratch::new("tools-vmtoolsd");
    let (out, stats) = (dir.0.join("guestinfo.json"), dir.0.join("stats.json"));
    // vmtoolsd logs (tools.conf of guests/linux/tools.sh) its core to
    // /var/log/vmtoolsd.log, the rest (RPC traffic) to /var/log/vmsvc.log;
    // it is given five seconds after its plugins are up, then stopped
    // with SIGTERM.
    let append = append_running(
        "log=/var/log/vmsvc.log core=/var/log/vmtoolsd.log\n\
         vmtoolsd &\n\
         for i in $(seq 150); do\n\
           grep -q \"Plugin 'timeSync' initialized\" $core 2>/dev/null && break\n\
           sleep 0.2\n\
         done\n\
         sleep 5; kill $!; wait\n\
         grep -o 'Plugin .* initialized' $core\n\
         grep -o 'RpcIn: received 5 bytes, content:\"reset\"' $log\n\
         grep -o 'RpcIn: received 21 bytes, content:\"Capabilities_Register\"' $log\n\
         grep -q 'empty TCLO poll' $log && echo empty-polls\n",
    );
    let run = captured(
        TIME_LIMIT,
        &[
            "run",
            "--kernel",
            kernel.to_str().expect("utf-8 path"),
            "--initrd",
            initramfs.to_str().expect("utf-8 path"),
            "--memsize",
            "128",
            "--guestinfo-out",
            out.to_str().expect("utf-8 path"),
            "--stats-json",
            stats.to_str().expect("utf-8 path"),
            "--append",
            &append,
        ],
    );
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    for plugin in ["guestInfo", "powerops", "timeSync"] {
        assert_line(&run, &format!("Plugin '{plugin}' initialized"));
    }
    assert_line(&run, "RpcIn: received 5 bytes, content:\"reset\"");
    assert_line(
        &run,
        "RpcIn: received 21 bytes, content:\"Capabilities_Register\"",
    );
    assert_line(&run, "empty-polls");
    // What vmtoolsd told the host, as nestmon logs it.
    for said in [
        "nestmon: tools replied to \"reset\": \"OK ATR toolbox\"",
        "nestmon: tools replied to \"Capabilities_Register\": \"OK \"",
        "nestmon: guest log: toolbox: Version: 12.2.0",
    ] {
        assert!(run.stderr.contains(said), "no {said:?} in:\n{}", run.stderr);
    }
    // vmtoolsd publishes its version in the guestinfo namespace.
    let guestinfo = read_json(&out);
    assert_eq!(guestinfo["guestinfo.vmtools.versionString"], "12.2.0");
    let counters = read_json(&stats)["counters"].clone();
    let count = |name: &str| {
        counters[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name:?} in {counters}"))
    };
    assert_eq!(count("backdoor: TCLO channels opened"), 1);
    assert_eq!(count("backdoor: TCLO commands sent"), 2);
    assert!(
        count("backdoor: TCLO polls") > 3,
        "the loop kept polling: {counters}"
    );
    assert!(count("backdoor: RPCI requests") >= 10, "{counters}");
    assert!(
        count("backdoor: high-bandwidth transfers") > 0,
        "{counters}"
    );
}

/// `nestmon run` of the Tools initramfs with `script` as the guest's
/// commands, watched as it runs.
fn watched_tools_guest(kernel: &Path, initramfs: &Path, script: &str, extra: &[&str]) -> Watched {
    let append = append_running(script);
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().expect("utf-8 path"),
        "--initrd",
        initramfs.to_str().expect("utf-8 path"),
        "--memsize",
        "128",
        "--append",
        &append,
    ];
    args.extend_from_slice(extra);
    Watched::spawn(&args)
}

/// What nestmon says once vmtoolsd's TCLO loop took the greeting: from
/// then on the Tools service polls its channel.
const TOOLS_POLLING: &str = "nestmon: tools replied to \"Capabilities_Register\"";

/// Waits until `stream` of `run` shows `needle`; fails the test with the
/// transcript (and `why`) otherwise.
fn expect_line(run: &mut Watched, stream: Stream, needle: &str, why: &str) {
    assert!(
        run.wait_for(stream, needle, TIME_LIMIT).is_some(),
        "{why}no {needle:?}:\n{}",
        run.transcript()
    );
}

/// Sends SIGTERM to `run`, which must then stop hard at once: status 143
/// within 5 s, saying so. Its standard error.
fn sigterm_stops_hard(run: Watched) -> String {
    let asked = std::time::Instant::now();
    run.signal(libc::SIGTERM);
    let ended = run.finish(TIME_LIMIT);
    let stderr = ended.text(Stream::Stderr);
    assert_eq!(ended.status, Some(143), "{stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(stderr.contains("guest stopped by SIGTERM"), "{stderr}");
    stderr
}

#[test]
fn sigterm_asks_vmtoolsd_to_halt_the_guest_which_powers_off_with_status_0() {
    let Some((kernel, initramfs)) = guest() else {
        return;
    };
    let mut run = watched_tools_guest(
        &kernel,
        &initramfs,
        "vmtoolsd &\nsleep 600\necho slept-to-the-end\n",
        &[],
    );
    expect_line(
        &mut run,
        Stream::Stderr,
        TOOLS_POLLING,
        "vmtoolsd never answered the greeting: ",
    );
    let asked = std::time::Instant::now();
    run.signal(libc::SIGTERM);
    let ended = run.finish(TIME_LIMIT);
    let (stdout, stderr) = (ended.text(Stream::Stdout), ended.text(Stream::Stderr));
    assert_eq!(ended.status, Some(0), "{stdout}\nstderr:\n{stderr}");
    // Well within the default 30 s: vmtoolsd polls TCLO at least every
    // second, runs the power-off script and then shutdown -h now.
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "{:?}",
        asked.elapsed()
    );
    for said in [
        "nestmon: SIGTERM: asked the guest's Tools to shut the guest down (OS_Halt); \
         waiting up to 30 s for it to power off (SIGINT or another SIGTERM stops it at once)",
        "nestmon: tools replied to \"OS_Halt\": \"OK \"",
        "nestmon: guest tools: halt script done",
    ] {
        assert!(stderr.contains(said), "no {said:?} in:\n{stderr}");
    }
    // The guest shut down by itself (the /sbin/shutdown of tools.sh, then
    // the kernel's ACPI power-off), before its sleep ended.
    assert!(stdout.contains("reboot: Power down"), "{stdout}");
    assert!(!stdout.contains("slept-to-the-end"), "{stdout}");
    assert!(!stderr.contains("stopped by"), "{stderr}");
}

#[test]
fn sigterm_without_tools_stops_the_guest_at_once_with_status_143() {
    let Some((kernel, initramfs)) = guest() else {
        return;
    };
    let mut run = watched_tools_guest(&kernel, &initramfs, "echo no-tools-here\nsleep 600\n", &[]);
    expect_line(&mut run, Stream::Stdout, "no-tools-here", "");
    let stderr = sigterm_stops_hard(run);
    assert!(!stderr.contains("OS_Halt"), "{stderr}");
}

/// A guest script whose Tools take their time powering off: vmtoolsd runs
/// the power-off script before it shuts the guest down (tools.conf of
/// tools.sh names none, so it runs poweroff-vm-default; a slow one stands
/// in here).
const SLOW_POWER_OFF: &str =
    "printf '#!/bin/sh\\nsleep 600\\n' >/etc/vmware-tools/poweroff-vm-default\n\
     vmtoolsd &\nsleep 600\n";

#[test]
fn a_second_sigterm_while_the_guest_shuts_down_stops_it_hard_with_status_143() {
    let Some((kernel, initramfs)) = guest() else {
        return;
    };
    let mut run = watched_tools_guest(&kernel, &initramfs, SLOW_POWER_OFF, &[]);
    expect_line(&mut run, Stream::Stderr, TOOLS_POLLING, "");
    run.signal(libc::SIGTERM);
    expect_line(&mut run, Stream::Stderr, "tools replied to \"OS_Halt\"", "");
    sigterm_stops_hard(run);
}

#[test]
fn a_guest_that_does_not_power_off_in_time_is_stopped_after_the_soft_power_off_timeout() {
    let Some((kernel, initramfs)) = guest() else {
        return;
    };
    let mut run = watched_tools_guest(
        &kernel,
        &initramfs,
        SLOW_POWER_OFF,
        &["--set", "nestmon.softPowerOffTimeout=3"],
    );
    expect_line(&mut run, Stream::Stderr, TOOLS_POLLING, "");
    let asked = std::time::Instant::now();
    run.signal(libc::SIGTERM);
    let ended = run.finish(TIME_LIMIT);
    let stderr = ended.text(Stream::Stderr);
    assert_eq!(ended.status, Some(143), "{stderr}");
    let waited = asked.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(8)).contains(&waited),
        "{waited:?}"
    );
    for said in [
        "waiting up to 3 s for it to power off",
        "nestmon: the guest did not power off within 3 s of SIGTERM; stopping it",
        "guest stopped by SIGTERM",
    ] {
        assert!(stderr.contains(said), "no {said:?} in:\n{stderr}");
    }
}
