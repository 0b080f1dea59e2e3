//! The port-I/O devices seen from outside: a tiny Multiboot guest that talks
//! to COM1 and stops itself through isa-debug-exit, run by the `nestmon`
//! binary; the public `monitor::devices` API with each serial backend; and
//! the PC platform devices on the bus (ports, the injected clock, the
//! configured RAM, the NMI mask, the reset request).

use monitor::config::SerialBackend;
use monitor::devices::{
    Clock, DeviceError, IoBus, IoOutcome, PcPlatform, I8042_COMMAND, I8042_DATA, PCI_CONFIG_BASE,
    RTC_BASE,
};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// 32-bit guest code: if EAX lacks the Multiboot magic, write 0x11 to port
/// 0xf4 (failure code 17). Otherwise wait for COM1's transmitter to be
/// empty, print the command line from the information structure and a
/// newline, then write 0x10 to port 0xf4 (failure code 16: exit status 1,
/// and a line on stderr naming the code).
const GUEST: &[&str] = &[
    "3d 02 b0 ad 2b", // cmp eax, 0x2badb002
    "74 04",          // je magic_ok
    "b0 11",          // mov al, 0x11
    "e6 f4",          // out 0xf4, al
    "66 ba fd 03",    // magic_ok: mov dx, 0x3fd (line status)
    "ec",             // wait: in al, dx
    "a8 20",          // test al, 0x20 (THR empty)
    "74 fb",          // jz wait
    "66 ba f8 03",    // mov dx, 0x3f8 (data)
    "8b 73 10",       // mov esi, [ebx + 16] (cmdline)
    "8a 06",          // next: mov al, [esi]
    "84 c0",          // test al, al
    "74 04",          // jz done
    "ee",             // out dx, al
    "46",             // inc esi
    "eb f6",          // jmp next
    "b0 0a",          // done: mov al, 10
    "ee",             // out dx, al
    "b0 10",          // mov al, 0x10
    "e6 f4",          // out 0xf4, al
    "f4",             // halt: hlt
    "eb fd",          // jmp halt
];

fn guest_code() -> Vec<u8> {
    assemble(GUEST)
}

/// The guest as a flat image placed by its Multiboot header (flag bit 16).
fn flat_guest() -> Vec<u8> {
    let mut image = multiboot_header(0x1_0003);
    let entry = LOAD_AT + 32;
    for w in [LOAD_AT, LOAD_AT, 0, LOAD_AT + 0x1000, entry] {
        image.extend(w.to_le_bytes());
    }
    image.extend(guest_code());
    image
}

#[path = "support/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "support/tiny_guest.rs"]
mod tiny_guest;
use tiny_guest::{assemble, elf_guest, multiboot_header, LOAD_AT};

/// How long a guest may run before the test gives up on it.
const GUEST_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Runs `nestmon run --kernel` and returns (status, stdout, stderr); a run
/// that outlives [`GUEST_TIME_LIMIT`] is killed and fails the test.
fn run_guest(kernel: &Path, append: Option<&str>) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestmon"));
    command.args(["run", "--kernel", kernel.to_str().expect("utf-8 path")]);
    if let Some(text) = append {
        command.args(["--append", text]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nestmon");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > GUEST_TIME_LIMIT {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!(
                "the guest ran longer than {GUEST_TIME_LIMIT:?}; stdout:\n{}",
                stdout.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        stdout.join().expect("stdout"),
        stderr.join().expect("stderr"),
    )
}

/// Reads a pipe to its end on another thread.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn elf_guest_prints_its_command_line_on_com1_and_exits_through_port_f4() {
    let dir = Scratch::new("devices-elf-guest");
    let kernel = dir.file("guest.elf", &elf_guest(&guest_code()));
    let (status, stdout, stderr) = run_guest(&kernel, Some("hello world"));
    assert_eq!(status, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("the guest reported failure: code 16"),
        "{stderr}"
    );
    assert!(
        stdout.contains("guest.elf hello world\n"),
        "stdout:\n{stdout}"
    );
}

#[test]
fn flat_guest_placed_by_header_addresses_runs_the_same() {
    let dir = Scratch::new("devices-flat-guest");
    let kernel = dir.file("guest.bin", &flat_guest());
    let (status, stdout, stderr) = run_guest(&kernel, Some("x=1"));
    assert_eq!(status, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("the guest reported failure: code 16"),
        "{stderr}"
    );
    assert!(stdout.contains("guest.bin x=1\n"), "stdout:\n{stdout}");
}

#[test]
fn command_line_without_append_is_the_kernel_name_and_a_space() {
    let dir = Scratch::new("devices-no-append");
    let kernel = dir.file("guest.elf", &elf_guest(&guest_code()));
    let (status, stdout, stderr) = run_guest(&kernel, None);
    assert_eq!(status, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("the guest reported failure: code 16"),
        "{stderr}"
    );
    assert!(stdout.contains("guest.elf \n"), "stdout:\n{stdout}");
}

#[test]
fn file_backend_appends_guest_output_to_the_file() {
    let dir = Scratch::new("devices-file-backend");
    let path = dir.file("com1.log", b"earlier\n");
    let mut bus = IoBus::new(&SerialBackend::File(path.clone())).expect("bus");
    for &b in b"later\n" {
        assert_eq!(bus.write(0x3f8, 1, b.into()), IoOutcome::Continue);
    }
    assert_eq!(std::fs::read(&path).expect("log"), b"earlier\nlater\n");
}

#[test]
fn unix_socket_backend_sends_guest_output_to_the_listener() {
    let dir = Scratch::new("devices-socket-backend");
    let path = dir.0.join("com1.sock");
    let listener = UnixListener::bind(&path).expect("listen");
    let mut bus = IoBus::new(&SerialBackend::UnixSocket(path)).expect("bus");
    let (mut peer, _) = listener.accept().expect("accept");
    for &b in b"ping" {
        bus.write(0x3f8, 1, b.into());
    }
    drop(bus);
    let mut got = String::new();
    peer.read_to_string(&mut got).expect("read");
    assert_eq!(got, "ping");
}

#[test]
fn unix_socket_without_listener_is_a_named_error() {
    let dir = Scratch::new("devices-socket-missing");
    let path = dir.0.join("nobody.sock");
    let err = IoBus::new(&SerialBackend::UnixSocket(path)).expect_err("no listener");
    assert!(matches!(err, DeviceError::SerialSocket { .. }));
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}

#[test]
fn none_backend_discards_output_and_keeps_the_uart_working() {
    let mut bus = IoBus::new(&SerialBackend::None).expect("bus");
    assert_eq!(bus.write(0x3f8, 1, b'x'.into()), IoOutcome::Continue);
    assert_eq!(bus.read(0x3fd, 1) & 0x20, 0x20);
}

#[test]
fn debug_exit_reports_the_value_of_each_width() {
    let mut bus = IoBus::new(&SerialBackend::None).expect("bus");
    assert_eq!(bus.write(0xf4, 1, 0x00), IoOutcome::GuestExit(0));
    assert_eq!(bus.write(0xf4, 1, 0x10), IoOutcome::GuestExit(0x10));
    assert_eq!(bus.write(0xf4, 2, 0x0180), IoOutcome::GuestExit(0x0180));
    assert_eq!(
        bus.write(0xf4, 4, 0x0001_0002),
        IoOutcome::GuestExit(0x0001_0002)
    );
}

#[test]
fn unclaimed_ports_read_as_ones_and_are_counted() {
    let mut bus = IoBus::new(&SerialBackend::None).expect("bus");
    assert_eq!(bus.read(0x2f8, 1), 0xff);
    assert_eq!(bus.read(0x2e8, 4), 0xffff_ffff);
    assert_eq!(bus.write(0x80, 1, 0x12), IoOutcome::Continue);
    let counts: Vec<_> = bus.unclaimed_counts().collect();
    assert_eq!(counts, vec![(0x80, 0, 1), (0x2e8, 1, 0), (0x2f8, 1, 0)]);
}

/// A clock stopped at one instant.
struct StoppedClock(SystemTime);

impl Clock for StoppedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// 2024-02-29 12:34:56 UTC, a Thursday.
const LEAP_DAY_NOON: u64 = 1_709_210_096;

/// The standard bus plus the PC platform of a machine with `ram_mib`.
fn pc_bus(ram_mib: u64) -> IoBus {
    let mut bus = IoBus::new(&SerialBackend::None).expect("bus");
    bus.add_pc_platform(PcPlatform {
        ram_bytes: ram_mib << 20,
        cpus: 1,
        clock: Box::new(StoppedClock(
            UNIX_EPOCH + Duration::from_secs(LEAP_DAY_NOON),
        )),
    })
    .expect("platform");
    bus
}

fn cmos(bus: &mut IoBus, index: u8) -> u8 {
    bus.write(RTC_BASE, 1, index.into());
    bus.read(RTC_BASE + 1, 1) as u8
}

#[test]
fn pc_platform_claims_its_ports_and_not_their_neighbours() {
    let bus = pc_bus(128);
    for port in [0x60, 0x64, 0x70, 0x71, 0x510, 0x511]
        .into_iter()
        .chain(0xcf8..=0xcff)
    {
        assert!(bus.claims(port), "{port:#x} unclaimed");
    }
    // 0x72-0x73 are the second CMOS bank of later chipsets, 0x514 fw_cfg's
    // DMA register: neither is modelled. (0x61, port B, is the PIT's.)
    for port in [
        0x5f, 0x62, 0x63, 0x65, 0x72, 0x73, 0xcf7, 0xd00, 0x50f, 0x512, 0x514,
    ] {
        assert!(!bus.claims(port), "{port:#x} claimed");
    }
}

#[test]
fn rtc_reads_the_injected_clock_through_the_bus() {
    let mut bus = pc_bus(128);
    let time: Vec<u8> = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32]
        .into_iter()
        .map(|r| cmos(&mut bus, r))
        .collect();
    assert_eq!(time, [0x56, 0x34, 0x12, 0x05, 0x29, 0x02, 0x24, 0x20]);
}

#[test]
fn cmos_and_fw_cfg_describe_the_configured_ram() {
    let mut bus = pc_bus(256);
    let above_16m = u16::from_le_bytes([cmos(&mut bus, 0x34), cmos(&mut bus, 0x35)]);
    assert_eq!(above_16m, (256 - 16) * 16);
    assert_eq!(bus.write(0x510, 2, 0x03), IoOutcome::Continue);
    let ram: Vec<u8> = (0..8).map(|_| bus.read(0x511, 1) as u8).collect();
    assert_eq!(u64::from_le_bytes(ram.try_into().unwrap()), 256 << 20);
    bus.write(0x510, 2, 0x05);
    assert_eq!(bus.read(0x511, 1), 1, "one processor");
}

#[test]
fn rtc_index_bit_7_masks_nmi_for_the_machine() {
    let mut bus = pc_bus(128);
    let nmi = bus.nmi_mask();
    assert!(!nmi.is_masked());
    bus.write(RTC_BASE, 1, 0x8d);
    assert!(nmi.is_masked());
    assert_eq!(bus.read(RTC_BASE + 1, 1), 0x80, "register D");
    bus.write(RTC_BASE, 1, 0x0d);
    assert!(!nmi.is_masked());
}

#[test]
fn keyboard_controller_reset_pulse_ends_the_run_as_a_reset() {
    let mut bus = pc_bus(128);
    assert_eq!(bus.write(I8042_COMMAND, 1, 0xaa), IoOutcome::Continue);
    assert_eq!(bus.read(I8042_DATA, 1), 0x55);
    assert_eq!(bus.write(I8042_COMMAND, 1, 0xfe), IoOutcome::Reset);
}

#[test]
fn pci_host_bridge_answers_dword_and_byte_lane_reads() {
    let mut bus = pc_bus(128);
    bus.write(PCI_CONFIG_BASE, 4, 0x8000_0000);
    assert_eq!(bus.read(PCI_CONFIG_BASE, 4), 0x8000_0000);
    assert_eq!(bus.read(0xcfc, 4), 0x1237_8086);
    assert_eq!(bus.read(0xcfe, 2), 0x1237);
    bus.write(PCI_CONFIG_BASE, 4, 0x8000_0800); // 00:01.0
    assert_eq!(bus.read(0xcfc, 4), 0xffff_ffff);
    assert_eq!(bus.unclaimed_counts().count(), 0);
}
