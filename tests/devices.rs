//! The port-I/O devices seen from outside: a tiny Multiboot guest that talks
//! to COM1 and stops itself through isa-debug-exit, run by the `nestmon`
//! binary; and the public `monitor::devices` API with each serial backend.

use monitor::config::SerialBackend;
use monitor::devices::{DeviceError, IoBus, IoOutcome};
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    assert_eq!(bus.read(0xcf8, 4), 0xffff_ffff);
    assert_eq!(bus.write(0x80, 1, 0x12), IoOutcome::Continue);
    let counts: Vec<_> = bus.unclaimed_counts().collect();
    assert_eq!(counts, vec![(0x80, 0, 1), (0x2f8, 1, 0), (0xcf8, 1, 0)]);
}
