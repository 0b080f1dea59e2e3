//! End to end: `nestmon run` of guests/backdoor.c, a guest that does what a
//! VMware Tools client does first (GETVERSION, RPCI, NESTING_CONTROL, the
//! high-bandwidth port), must print every step as ok and exit through
//! `rt_exit(0)`, which nestmon reports as exit status 0.
//!
//! And, on a vCPU driven directly (two instructions in RAM, no guest
//! image): a high-bandwidth receive that fails because its destination
//! crosses the end of guest RAM leaves guest RAM untouched.

use backdoor::abi::{self, cmd, hb_cmd, msg_type, proto, status};
use backdoor::{high_half, join_halves, Backdoor, HostFacts, Regs};
use monitor::config::VmConfig;
use monitor::cpuid::CpuModel;
use monitor::vcpu::bt::BtVcpu;
use monitor::vcpu::{GuestRegisters, Vcpu, VcpuExit};
use shadowmmu::{GuestPhys, GuestRam};
use std::path::PathBuf;
use std::process::{Command, Output};

fn guest_elf() -> PathBuf {
    PathBuf::from(env!("NESTMON_GUEST_DIR")).join("backdoor.elf")
}

fn run_backdoor_guest() -> Output {
    let elf = guest_elf();
    assert!(elf.is_file(), "guest not built: {}", elf.display());
    Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .output()
        .expect("nestmon starts")
}

#[test]
fn backdoor_guest_passes_every_step_and_exits_zero() {
    let output = run_backdoor_guest();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "getversion: ok version=6",
        "clock: ok",
        "rpci-open: ok",
        "info-set: ok reply=\"1 \"",
        "info-get: ok reply=\"1 hello\"",
        "tools.set.version: ok reply=\"1 \"",
        "unknown: ok reply=\"0 Unknown command\"",
        "rpci-close: ok",
        "nesting: ok version=",
        "hb: ok reply=\"1 hello\"",
        "backdoor: all ok",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "missing {line:?}\n{context}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{context}");
    assert_eq!(output.status.code(), Some(0), "{context}");
}

#[test]
fn backdoor_guest_reports_cpuid_leaf_before_touching_the_backdoor() {
    let output = run_backdoor_guest();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout.lines().find(|l| l.contains(": ")).unwrap_or("");
    assert!(first.starts_with("cpuid: ok"), "stdout:\n{stdout}");
}

/// Guest registers in encoding order: EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
const EBX: usize = 3;

fn to_regs(gpr: &[u32; 8]) -> Regs {
    Regs {
        eax: gpr[0],
        ecx: gpr[1],
        edx: gpr[2],
        ebx: gpr[3],
        ebp: gpr[5],
        esi: gpr[6],
        edi: gpr[7],
    }
}

fn to_gpr(regs: &Regs, gpr: &mut [u32; 8]) {
    (gpr[0], gpr[1], gpr[2], gpr[3], gpr[5], gpr[6], gpr[7]) = (
        regs.eax, regs.ecx, regs.edx, regs.ebx, regs.ebp, regs.esi, regs.edi,
    );
}

/// The backdoor on port 0x5659 (`rep insb`/`rep outsb`); any `out` ends
/// the run with its value as status.
/// Drives `vcpu` until it writes a port other than the high-bandwidth
/// backdoor, handing a `rep insb` on that port to `backdoor`.
fn run_high_bandwidth_only(vcpu: &mut BtVcpu, backdoor: &mut Backdoor) -> Result<(), String> {
    loop {
        match vcpu.run() {
            VcpuExit::IoIn {
                port,
                data,
                string,
                io,
            } => {
                if string && port == abi::BDOORHB_PORT {
                    let mut regs = to_regs(&io.registers().gpr);
                    let cpl = io.cpl();
                    if backdoor.hb_in(&mut regs, cpl, io.memory()).is_some() {
                        let mut gpr = io.registers().gpr;
                        to_gpr(&regs, &mut gpr);
                        io.set_general_registers(gpr);
                        io.complete_string_io();
                        continue;
                    }
                }
                data.fill(0xff);
            }
            VcpuExit::IoOut { .. } => return Ok(()),
            VcpuExit::Stopped(stop) => return Err(stop.to_string()),
            VcpuExit::Hlt | VcpuExit::Interrupted | VcpuExit::InterruptWindow => {}
        }
    }
}

/// A low-bandwidth GuestRPC call on `channel`.
fn message(
    backdoor: &mut Backdoor,
    kind: u16,
    channel: u16,
    cookies: (u32, u32),
    ebx: u32,
) -> Regs {
    let mut regs = Regs::backdoor_call(cmd::MESSAGE, kind, ebx);
    regs.edx = join_halves(abi::BDOOR_PORT, channel);
    (regs.esi, regs.edi) = cookies;
    assert!(backdoor.port_in(&mut regs, 0));
    regs
}

/// Opens an RPCI channel, sends `request`, asks for the reply's size; the
/// guest registers for the `rep insb` that fetches it to `destination`.
fn receive_registers(backdoor: &mut Backdoor, request: &[u8], destination: u32) -> [u32; 8] {
    let opened = message(
        backdoor,
        msg_type::OPEN,
        0,
        (0, 0),
        proto::RPCI | proto::FLAG_COOKIE,
    );
    let (channel, cookies) = (opened.channel(), (opened.esi, opened.edi));
    message(
        backdoor,
        msg_type::SENDSIZE,
        channel,
        cookies,
        request.len() as u32,
    );
    for chunk in request.chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        message(
            backdoor,
            msg_type::SENDPAYLOAD,
            channel,
            cookies,
            u32::from_le_bytes(word),
        );
    }
    let sized = message(backdoor, msg_type::RECVSIZE, channel, cookies, 0);
    assert_ne!(
        high_half(sized.ecx) & status::HB,
        0,
        "high bandwidth offered"
    );
    let mut gpr = [0u32; 8];
    to_gpr(
        &Regs {
            eax: abi::BDOOR_MAGIC,
            ebx: join_halves(hb_cmd::MESSAGE, status::SUCCESS),
            ecx: sized.ebx,
            edx: join_halves(abi::BDOORHB_PORT, channel),
            esi: cookies.0,
            ebp: cookies.1,
            edi: destination,
        },
        &mut gpr,
    );
    gpr
}

#[test]
fn failed_high_bandwidth_receive_across_the_end_of_ram_leaves_ram_untouched() {
    let ram = GuestRam::new(4).expect("guest RAM");
    let ram_end = ram.size() as u32;
    // 0x1000: rep insb ; out 0xf4, al
    ram.write(GuestPhys(0x1000), &[0xf3, 0x6c, 0xe6, 0xf4])
        .expect("code");
    ram.write(GuestPhys(ram_end - 2), &[0xee, 0xee])
        .expect("marker");
    let mut backdoor = Backdoor::new(HostFacts::default(), [("guestinfo.x", "reply")]);
    // "1 reply": 7 bytes, the first 2 in RAM, the rest past its end (a
    // second page), so the write is split in two pieces.
    let gpr = receive_registers(&mut backdoor, b"info-get guestinfo.x", ram_end - 2);
    let model = CpuModel::new(&VmConfig::default(), &|_, _| [0; 4]).expect("CPU model");
    let mut vcpu = BtVcpu::new(ram, model).expect("vCPU");
    vcpu.set_registers(&GuestRegisters {
        gpr,
        eip: 0x1000,
        eflags: 2,
    });
    let end = run_high_bandwidth_only(&mut vcpu, &mut backdoor);
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(
        high_half(vcpu.registers().gpr[EBX]),
        0,
        "the guest is told the receive failed"
    );
    let mut tail = [0u8; 2];
    vcpu.ram()
        .read(GuestPhys(ram_end - 2), &mut tail)
        .expect("read");
    assert_eq!(tail, [0xee, 0xee], "no part of the reply was written");
}

/// Runs guests/pm_backdoor.c (GETVERSION from ring 0 and from ring 3 with
/// IOPL 0) with `extra` arguments; its standard output.
fn run_cpl_guest(extra: &[&str]) -> String {
    let elf = PathBuf::from(env!("NESTMON_GUEST_DIR")).join("pm_backdoor.elf");
    assert!(elf.is_file(), "guest not built: {}", elf.display());
    let out = Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .args(extra)
        .output()
        .expect("nestmon starts");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn backdoor_answers_ring_3_without_io_privilege_unless_restricted() {
    let open = run_cpl_guest(&[]);
    assert!(open.contains("ring 0: answered"), "{open}");
    assert!(open.contains("ring 3, IOPL 0: answered"), "{open}");
    let restricted = run_cpl_guest(&["--set", "monitor_control.restrict_backdoor=TRUE"]);
    assert!(restricted.contains("ring 0: answered"), "{restricted}");
    assert!(
        restricted.contains("ring 3, IOPL 0: #GP(0000)"),
        "restricted: a ring-3 access is an ordinary port access, #GP(0) with IOPL 0:\n{restricted}"
    );
}

#[test]
fn uuid_bios_and_virtual_hw_version_reach_the_guest() {
    let elf = guest_elf();
    let output = Command::new(env!("CARGO_BIN_EXE_nestmon"))
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .args([
            "--set",
            "uuid.bios=56 4d 01 23 45 67 89 ab-cd ef 01 23 45 67 89 ab",
            "--set",
            "virtualHW.version=19",
        ])
        .output()
        .expect("nestmon starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("hwversion: ok version=19"), "{stdout}");
    // GETUUID: EAX..EDX hold the bytes as little-endian words.
    assert!(
        stdout.contains("uuid: ok 23014d56 ab896745 2301efcd ab896745"),
        "{stdout}"
    );
}
