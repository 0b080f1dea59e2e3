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

/// A kernel command line that runs `script` in the guest's shell. The
/// kernel hands at most 32 words after ` -- ` to /init and panics on more
/// ("Too many boot init vars"), so the script travels as one base64 word.
fn append_running(script: &str) -> String {
    format!(
        "console=ttyS0 quiet -- echo {} | base64 -d | sh",
        base64(script.as_bytes())
    )
}

/// Standard base64 (RFC 4648, with padding), as busybox's `base64 -d`
/// reads it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, b)| w | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(word >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
