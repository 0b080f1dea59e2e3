//! Debian 12's i386 kernel (`linux-image-686`) with a busybox initramfs,
//! booted under `nestmon run` to user space: commands given on the kernel
//! command line run in the guest and their output reaches the console;
//! `poweroff`, `reboot` and a kernel panic end the run with their
//! documented statuses; the guest's clock follows the host's; COM1 takes
//! input from standard input; processes compute the same when the shadow
//! MMU's mapping budget keeps dropping address spaces.
//!
//! The kernel is `NESTMON_LINUX_KERNEL` or `~/.cache/nestmon/debian-686/
//! vmlinuz` (fetched by `.ci/setup`); the initramfs is built for each test
//! by `guests/linux/build-initramfs.sh` (which fetches Debian's
//! `busybox-static:i386` once into `~/.cache/nestmon/debs`). When the
//! Debian packages cannot be fetched (no kernel, or the script's status 3)
//! each test says why and is skipped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/bounded_run.rs"]
mod bounded_run;
use bounded_run::{captured, Finished};
// Only `Scratch::new` is used here.
#[allow(dead_code)]
#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/guest_script.rs"]
mod guest_script;
use guest_script::append_running;
#[path = "support/stats.rs"]
mod stats;
use stats::stat;
#[path = "support/watched.rs"]
mod watched;
use watched::{Stream, Watched};

/// The longest a boot may take before the test fails (a boot to /init
/// takes a few seconds).
const TIME_LIMIT: Duration = Duration::from_secs(90);

/// The kernel and the initramfs of one test.
struct Guest {
    kernel: PathBuf,
    initramfs: PathBuf,
    _dir: Scratch,
}

fn debian_kernel() -> Option<PathBuf> {
    let path = match std::env::var_os("NESTMON_LINUX_KERNEL") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/nestmon/debian-686/vmlinuz"),
    };
    path.is_file().then_some(path)
}

/// The guest, or `None` (after saying why) when the Debian packages
/// cannot be had.
fn guest(test: &str) -> Option<Guest> {
    let Some(kernel) = debian_kernel() else {
        eprintln!(
            "skipped: Debian's i386 kernel could not be fetched (.ci/setup puts it at \
             ~/.cache/nestmon/debian-686/vmlinuz; or set NESTMON_LINUX_KERNEL)"
        );
        return None;
    };
    let dir = Scratch::new(test);
    let initramfs = dir.0.join("initramfs.gz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/linux/build-initramfs.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg("--output")
        .arg(&initramfs)
        .stdin(Stdio::null())
        .output()
        .expect("run build-initramfs.sh");
    match built.status.code() {
        Some(0) => {}
        Some(3) => {
            eprintln!(
                "skipped: Debian's busybox-static:i386 could not be fetched: {}",
                String::from_utf8_lossy(&built.stderr).trim()
            );
            return None;
        }
        other => panic!(
            "build-initramfs.sh failed ({other:?}):\n{}",
            String::from_utf8_lossy(&built.stderr)
        ),
    }
    Some(Guest {
        kernel,
        initramfs,
        _dir: dir,
    })
}

impl Guest {
    /// `nestmon run` of the guest with `append` as its command line.
    fn args<'a>(&'a self, append: &'a str) -> Vec<&'a str> {
        vec![
            "run",
            "--kernel",
            self.kernel.to_str().expect("utf-8 path"),
            "--initrd",
            self.initramfs.to_str().expect("utf-8 path"),
            "--memsize",
            "128",
            "--append",
            append,
        ]
    }

    fn run(&self, append: &str) -> Finished {
        captured(TIME_LIMIT, &self.args(append))
    }

    /// [`Guest::run`] with more flags.
    fn run_with(&self, append: &str, extra: &[&str]) -> Finished {
        let mut args = self.args(append);
        args.extend_from_slice(extra);
        captured(TIME_LIMIT, &args)
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
fn busybox_commands_run_in_the_guest_and_poweroff_exits_0() {
    let Some(guest) = guest("busybox-commands") else {
        return;
    };
    let run = guest.run(
        "console=ttyS0 quiet -- echo marker $((6 * 7)); uname -sm; \
         grep -c ^processor /proc/cpuinfo; echo abc | busybox sha256sum; \
         ls /proc/self/fd/0 >/dev/null && echo fd-ok",
    );
    assert_eq!(
        run.status,
        Some(0),
        "poweroff must end the run with status 0\nconsole:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_line(&run, "nestmon-init: running: echo marker $((6 * 7)); uname -sm; grep -c ^processor /proc/cpuinfo; echo abc | busybox sha256sum; ls /proc/self/fd/0 >/dev/null && echo fd-ok");
    assert_line(&run, "marker 42");
    assert_line(&run, "Linux i686");
    assert_line(&run, "1");
    assert_line(
        &run,
        "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb  -",
    );
    assert_line(&run, "fd-ok");
    assert_line(&run, "nestmon-init: exit status 0");
    assert!(run.stdout.contains("reboot: Power down"), "{}", run.stdout);
    assert!(run.stderr.is_empty(), "stderr:\n{}", run.stderr);
    eprintln!("boot, commands and power-off: {:?}", run.elapsed);
}

#[test]
fn the_default_script_runs_without_commands_and_sees_acpi_and_the_pci_host_bridge() {
    let Some(guest) = guest("busybox-default") else {
        return;
    };
    let run = guest.run("console=ttyS0");
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_line(&run, "nestmon-init: running: . /etc/nestmon/default.sh");
    assert_line(&run, "== uname -a");
    assert!(
        run.stdout.contains("ACPI: PM: (supports S0 S5)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("pci 0000:00:00.0: [8086:1237] type 00 class 0x060000"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("ACPI: PM: Preparing to enter system sleep state S5"),
        "{}",
        run.stdout
    );
}

/// The "LOC:" (local APIC timer) counts the guest printed, in order.
fn local_timer_counts(run: &Finished) -> Vec<u64> {
    lines(&run.stdout)
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("LOC:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn the_kernel_routes_interrupts_through_the_io_apic_and_ticks_on_the_local_apic_timer() {
    let Some(guest) = guest("busybox-apic") else {
        return;
    };
    let run = guest.run(
        "console=ttyS0 quiet -- grep -E 'timer|ttyS0|acpi|LOC' /proc/interrupts; \
         sleep 0.3; grep LOC /proc/interrupts; dmesg | grep -o 'Enabling APIC mode: *Flat'",
    );
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    for (irq, pin) in [("0:", "2-edge"), ("4:", "4-edge"), ("9:", "9-fasteoi")] {
        assert!(
            lines(&run.stdout).iter().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.first() == Some(&irq) && fields.contains(&"IO-APIC") && fields.contains(&pin)
            }),
            "IRQ {irq} is not on I/O APIC pin {pin}:\n{}",
            run.stdout
        );
    }
    let ticks = local_timer_counts(&run);
    assert!(
        ticks.len() == 2 && ticks[0] > 0 && ticks[1] > ticks[0],
        "the local APIC timer does not tick: LOC counts {ticks:?}\n{}",
        run.stdout
    );
    assert_line(&run, "Enabling APIC mode:  Flat");
}

#[test]
fn without_apics_the_kernel_takes_every_interrupt_from_the_8259a_pair() {
    let Some(guest) = guest("busybox-no-apic") else {
        return;
    };
    let run = guest.run_with(
        "console=ttyS0 quiet -- grep -E 'timer|ttyS0|LOC' /proc/interrupts; \
         grep -c ' apic ' /proc/cpuinfo",
        &["--set", "nestmon.apic=FALSE"],
    );
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    for irq in ["0:", "4:"] {
        assert!(
            lines(&run.stdout).iter().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.first() == Some(&irq) && fields.contains(&"XT-PIC")
            }),
            "IRQ {irq} is not on the 8259A:\n{}",
            run.stdout
        );
    }
    assert!(
        !run.stdout.contains("IO-APIC"),
        "an I/O APIC without nestmon.apic:\n{}",
        run.stdout
    );
    assert_line(&run, "0");
}

#[test]
fn reboot_under_no_reboot_ends_the_run_with_the_reset_status() {
    let Some(guest) = guest("busybox-reboot") else {
        return;
    };
    let run = guest.run_with("console=ttyS0 quiet -- reboot -f", &["--no-reboot"]);
    assert_eq!(run.status, Some(5), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("reboot: Restarting system"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("the guest reset the machine (port 0x64); stopping (--no-reboot)"),
        "{}",
        run.stderr
    );
}

/// The guest's script for the reboot test: CMOS byte 0x7e (battery-backed,
/// so it survives a reset as on a PC; read and written through /dev/port)
/// tells the first boot, which marks it and reboots, from the second,
/// which clears it and lets /init power off.
const REBOOT_ONCE: &str = "\
sel() { printf '\\176' | dd of=/dev/port bs=1 seek=112 conv=notrunc 2>/dev/null; }
sel; m=$(dd if=/dev/port bs=1 skip=113 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
if [ \"$m\" = 165 ]; then
  echo \"boot two: CMOS marker $m\"
  sel; printf '\\000' | dd of=/dev/port bs=1 seek=113 conv=notrunc 2>/dev/null
else
  echo \"boot one: CMOS marker $m\"
  sel; printf '\\245' | dd of=/dev/port bs=1 seek=113 conv=notrunc 2>/dev/null
  reboot -f
fi
";

#[test]
fn reboot_restarts_the_guest_which_boots_again_with_its_cmos_kept() {
    let Some(guest) = guest("busybox-reboot-restart") else {
        return;
    };
    let run = guest.run(&append_running(REBOOT_ONCE));
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    let started = lines(&run.stdout)
        .iter()
        .filter(|l| l.starts_with("nestmon-init: started"))
        .count();
    assert_eq!(started, 2, "two boots:\n{}", run.stdout);
    assert_line(&run, "boot one: CMOS marker 0");
    assert_line(&run, "boot two: CMOS marker 165");
    assert!(
        run.stdout.contains("reboot: Restarting system"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("reboot: Power down"), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("the guest reset the machine (port 0x64); restarting it"),
        "{}",
        run.stderr
    );
}

#[test]
fn kernel_panic_with_panic_minus_1_under_no_reboot_ends_with_status_5_and_the_panic_on_the_console()
{
    let Some(guest) = guest("busybox-panic") else {
        return;
    };
    let run = guest.run_with(
        "console=ttyS0 quiet panic=-1 -- echo c > /proc/sysrq-trigger",
        &["--no-reboot"],
    );
    assert_eq!(run.status, Some(5), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{}",
        run.stdout
    );
}

fn host_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The number after `prefix` on the console line that starts with it.
fn number_after(text: &str, prefix: &str) -> f64 {
    lines(text)
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
}

#[test]
fn guest_date_and_uptime_follow_host_time_with_the_hosts_tsc_frequency() {
    let Some(guest) = guest("busybox-clock") else {
        return;
    };
    let before = host_seconds();
    let run = guest.run(
        "console=ttyS0 quiet -- echo date1 $(date +%s); echo up1 $(cat /proc/uptime); \
         sleep 4; echo date2 $(date +%s); echo up2 $(cat /proc/uptime); \
         dmesg | grep -o 'TSC freq read from hypervisor.*'",
    );
    let after = host_seconds();
    assert_eq!(run.status, Some(0), "{}\n{}", run.stdout, run.stderr);
    let (date1, date2) = (
        number_after(&run.stdout, "date1 "),
        number_after(&run.stdout, "date2 "),
    );
    let (up1, up2) = (
        number_after(&run.stdout, "up1 "),
        number_after(&run.stdout, "up2 "),
    );
    // The guest's wall clock is the host's (the RTC, then the TSC).
    assert!(
        date1 >= before.floor() - 1.0 && date2 <= after.ceil() + 1.0,
        "guest date {date1}..{date2}, host {before}..{after}"
    );
    // Four seconds in the guest are four seconds of the host's.
    assert!(
        (date2 - date1 - 4.0).abs() <= 1.0,
        "date {date1} -> {date2}"
    );
    // The interval also holds the commands around `sleep 4` (each a fork
    // and exec), which take longer on a loaded host: the guest's clock
    // must not lose time, and the rest is bounded loosely.
    assert!((3.95..5.5).contains(&(up2 - up1)), "uptime {up1} -> {up2}");
    // Uptime never runs ahead of the host's time since nestmon started.
    assert!(
        up2 <= run.elapsed.as_secs_f64() + 0.2,
        "uptime {up2} after {:?}",
        run.elapsed
    );
    // The kernel took the TSC frequency from the hypervisor leaf/backdoor
    // instead of calibrating it.
    assert!(
        run.stdout.contains("\nTSC freq read from hypervisor : "),
        "{}",
        run.stdout
    );
}

/// Seconds since 1970 of a host wall-clock time.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The number after `prefix` on a watched console line, and the line.
fn stamped(ended: &watched::Ended, prefix: &str) -> (f64, watched::Line) {
    ended
        .lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .find_map(|l| {
            let value = l.text.strip_prefix(prefix)?.split_whitespace().next()?;
            Some((value.parse().ok()?, l.clone()))
        })
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", ended.text(Stream::Stdout)))
}

/// Over half a minute of `sleep 30` (the guest idles in HLT, woken by its
/// timer interrupts), the guest's `date` and `/proc/uptime` advance as
/// the host's clocks do between the two console lines that print them,
/// and its `date` is the host's. Each console line is stamped when it
/// reaches the host (the UART's output is written and flushed as the
/// guest sends it): between the guest reading its clock and the line
/// arriving lie one `echo` and a pipe, milliseconds, up to a few hundred
/// on a loaded host. So: uptime within 1 s of the host's interval (no
/// drift over 30 s: a clock that runs 3% fast or slow fails); `date`
/// within 2 s (it has whole seconds, so rounding alone is up to 1 s);
/// the guest's date within 2 s of the host's when its line arrives.
#[test]
fn guest_clock_tracks_host_time_across_thirty_seconds_of_sleep() {
    let Some(guest) = guest("busybox-clock-30s") else {
        return;
    };
    let script = "echo date1 $(date +%s); echo up1 $(cut -d' ' -f1 /proc/uptime)\n\
                  sleep 30\n\
                  echo up2 $(cut -d' ' -f1 /proc/uptime); echo date2 $(date +%s)\n";
    let append = append_running(script);
    let run = Watched::spawn(&guest.args(&append));
    let ended = run.finish(TIME_LIMIT + Duration::from_secs(30));
    assert_eq!(ended.status, Some(0), "{}", ended.text(Stream::Stdout));
    let (date1, date1_line) = stamped(&ended, "date1 ");
    let (date2, date2_line) = stamped(&ended, "date2 ");
    let (up1, up1_line) = stamped(&ended, "up1 ");
    let (up2, up2_line) = stamped(&ended, "up2 ");
    let host_up = (up2_line.at - up1_line.at).as_secs_f64();
    let host_date = (date2_line.at - date1_line.at).as_secs_f64();
    assert!(host_up >= 30.0, "the host saw {host_up} s");
    assert!(
        (up2 - up1 - host_up).abs() <= 1.0,
        "guest uptime {up1} -> {up2} ({} s) over {host_up} s of the host",
        up2 - up1
    );
    assert!(
        (date2 - date1 - host_date).abs() <= 2.0,
        "guest date {date1} -> {date2} over {host_date} s of the host"
    );
    for (date, line) in [(date1, &date1_line), (date2, &date2_line)] {
        let host = unix_seconds(line.wall);
        assert!(
            (date - host).abs() <= 2.0,
            "guest date {date}, host {host} when the line arrived"
        );
    }
    eprintln!(
        "guest uptime {:.3} s, host {host_up:.3} s; guest date {} s, host {host_date:.3} s",
        up2 - up1,
        date2 - date1
    );
}

#[test]
fn standard_input_reaches_a_shell_in_the_guest() {
    let Some(guest) = guest("busybox-stdin") else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .args(guest.args("console=ttyS0 quiet -- sh"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nestmon");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut console = Vec::new();
    let mut stdin = child.stdin.take();
    let mut typed = false;
    loop {
        if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(100)) {
            console.extend(bytes);
        }
        let text = String::from_utf8_lossy(&console).into_owned();
        if !typed && text.contains("nestmon-init: running: sh") {
            // The shell reads from the console once it prompts; typed
            // ahead, the bytes wait in the UART.
            std::thread::sleep(Duration::from_millis(500));
            let mut input = stdin.take().expect("stdin");
            input
                .write_all(b"echo typed $((2 + 3))\nexit\n")
                .expect("write stdin");
            typed = true;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
                console.extend(bytes);
            }
            let text = String::from_utf8_lossy(&console).into_owned();
            assert_eq!(status.code(), Some(0), "{text}");
            assert!(lines(&text).contains(&"typed 5"), "{text}");
            assert!(
                lines(&text).contains(&"nestmon-init: exit status 0"),
                "{text}"
            );
            return;
        }
        if started.elapsed() > TIME_LIMIT {
            child.kill().expect("kill");
            panic!(
                "no power-off within {TIME_LIMIT:?}:\n{}",
                String::from_utf8_lossy(&console)
            );
        }
    }
}

/// Runs `forks` fork+execs of busybox `true` and a checksum in the guest
/// with `--stats` and `extra`, and checks that both computed what they
/// compute natively and the guest powered off (status 0).
fn fork_loop(guest: &Guest, forks: u32, extra: &[&str]) -> Finished {
    let append = format!(
        "console=ttyS0 quiet -- i=0; while [ $i -lt {forks} ]; do /bin/true; i=$((i + 1)); done; \
         seq 1 20000 | sha256sum | cut -c1-16; echo forks $i"
    );
    let mut args = vec!["--stats"];
    args.extend_from_slice(extra);
    let run = guest.run_with(&append, &args);
    assert_eq!(
        run.status,
        Some(0),
        "{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_line(&run, "f6351f5ead9a700e");
    assert_line(&run, &format!("forks {forks}"));
    run
}

#[test]
fn processes_compute_the_same_when_the_mapping_budget_keeps_dropping_address_spaces() {
    let Some(guest) = guest("mapping-budget") else {
        return;
    };
    // The smallest budget the option takes: each new process's address
    // space pushes older ones (and at times the current one) out.
    let run = fork_loop(&guest, 30, &["--set", "nestmon.mmu.maxMappings=1024"]);
    let dropped = stat(&run.stderr, "MMU: address spaces dropped for the budget");
    assert!(
        dropped > 0,
        "the budget never dropped a space:\n{}",
        run.stderr
    );
    let held = stat(&run.stderr, "MMU: host mappings of the process");
    assert!(
        held <= 1024,
        "{held} host mappings held past the budget of 1024"
    );
}

#[test]
fn new_processes_start_with_the_kernel_mappings_of_dead_ones_and_compute_the_same() {
    let Some(guest) = guest("retired-spaces") else {
        return;
    };
    let run = fork_loop(&guest, 40, &[]);
    // Each fork and each exec makes a page directory: most of them must
    // be served by the space of a dead one, kernel mappings and all.
    let recycled = stat(&run.stderr, "MMU: retired spaces serving a new directory");
    let made = stat(&run.stderr, "MMU: address spaces made");
    assert!(
        recycled >= 40 && made < recycled,
        "{recycled} recycled, {made} made:\n{}",
        run.stderr
    );
    // The kernel's regions mapped through its page tables (which every
    // directory shares) come along too.
    let shared = stat(
        &run.stderr,
        "MMU: shared page-table regions a new directory took over",
    );
    assert!(
        shared >= recycled,
        "{shared} shared regions for {recycled} recycled spaces:\n{}",
        run.stderr
    );
    let lazy = stat(&run.stderr, "MMU: directories of idle spaces gone lazy");
    assert!(lazy >= 40, "{lazy} lazy directories:\n{}", run.stderr);
    // Each new process's first miss in a page of busybox brings the
    // page's other known indirect-branch targets into its table.
    let ahead = stat(&run.stderr, "indirect-branch entries filled ahead");
    let misses = stat(&run.stderr, "indirect-branch misses");
    assert!(
        ahead >= 40 && ahead > misses / 10,
        "{ahead} entries filled ahead, {misses} misses:\n{}",
        run.stderr
    );
}
