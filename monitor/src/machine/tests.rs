//! The exit loop with the interrupt inputs: an interrupt a device raises
//! on a PIC line reaches a halted guest (which sleeps meanwhile) and a
//! spinning one, the PIT's channel 0 wakes a halted guest at its rate,
//! COM1's interrupt arrives through IRQ4, and a halt nothing can end stops
//! the run. And the power-on nesting handshake (`vmx.allowNested`) against
//! a simulated outer VMware hypervisor (module `nesting`).

use super::interrupts::InterruptInputs;
use super::{Board, RunEnd, SoftPowerOff};
use crate::cpuid::CpuModel;
use crate::devices::pic::{Irq, PicLine};
use crate::devices::IoBus;
use crate::vcpu::bt::BtVcpu;
use crate::vcpu::{GuestRegisters, StopReason, Vcpu};
use iced_x86::code_asm::*;
use shadowmmu::{GuestPhys, GuestRam};
use std::time::{Duration, Instant};

const CODE: u32 = 0x1000;
/// The GDTR image, then (at +8) the IDTR image.
const TABLES: u32 = 0x400;
const IDT: u32 = 0x2000;
const HANDLER: u32 = 0x3000;
/// The byte the handler sets.
const MARK: u32 = 0x600;
/// The dword the PIT tick handler counts in.
const TICKS: u32 = 0x604;
/// The vector of PIC line 0: the guest programs the PIC at 0x30-0x3f.
const PIC_BASE: u8 = 0x30;
/// The line the tests raise as a device would.
const TEST_IRQ: u8 = 5;
/// The vector the PIC gives [`TEST_IRQ`].
const VECTOR: u8 = PIC_BASE + TEST_IRQ;

/// The exit loop with no soft power-off (SIGTERM would stop at once).
fn run_loop(vcpu: &mut dyn crate::vcpu::Vcpu, board: &mut Board) -> RunEnd {
    super::exit_loop(vcpu, board, &mut SoftPowerOff::new(Duration::ZERO))
}

fn assemble(ip: u32, build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    build(&mut a).unwrap();
    a.assemble(u64::from(ip)).unwrap()
}

/// Guest code that initializes the PIC pair at vectors 0x30 and 0x38
/// (cascade on IR2, 8086 mode) and leaves lines unmasked by `masks`
/// (master, slave).
fn program_pic(a: &mut CodeAssembler, masks: (u8, u8)) -> Result<(), IcedError> {
    for (port, value) in [
        (0x20, 0x11),
        (0x21, PIC_BASE),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, PIC_BASE + 8),
        (0xa1, 0x02),
        (0xa1, 0x01),
        (0x21, masks.0),
        (0xa1, masks.1),
    ] {
        a.mov(al, u32::from(value))?;
        a.out(port, al)?;
    }
    Ok(())
}

/// A machine whose guest loads an IDT whose gate for `vector` leads to
/// `handler` and then runs `body`, with the flat GDT written here (CS
/// 0x08, data 0x10, as at Multiboot entry).
fn machine_with(
    vector: u8,
    handler: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (BtVcpu, Board) {
    let ram = GuestRam::new(1).unwrap();
    let gdt: [u64; 3] = [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    ram.write(GuestPhys(0x500), &gdt_bytes).unwrap();
    let mut tables = Vec::new();
    tables.extend_from_slice(&23u16.to_le_bytes());
    tables.extend_from_slice(&0x500u32.to_le_bytes());
    tables.extend_from_slice(&[0, 0]);
    tables.extend_from_slice(&0x7ffu16.to_le_bytes());
    tables.extend_from_slice(&IDT.to_le_bytes());
    ram.write(GuestPhys(TABLES), &tables).unwrap();
    let gate_low = 0x0008_0000 | (HANDLER & 0xffff);
    let gate_high = (HANDLER & 0xffff_0000) | 0x8e00;
    let mut gate = gate_low.to_le_bytes().to_vec();
    gate.extend_from_slice(&gate_high.to_le_bytes());
    ram.write(GuestPhys(IDT + u32::from(vector) * 8), &gate)
        .unwrap();
    ram.write(GuestPhys(HANDLER), &assemble(HANDLER, handler))
        .unwrap();
    let code = assemble(CODE, |a| {
        a.lgdt(ptr(TABLES))?;
        a.lidt(ptr(TABLES + 8))?;
        body(a)
    });
    ram.write(GuestPhys(CODE), &code).unwrap();
    let model = CpuModel::new(&Default::default(), &|_, _| [0; 4]).unwrap();
    let mut vcpu = BtVcpu::new(ram, model).unwrap();
    let mut gpr = [0; 8];
    gpr[4] = 0x8000;
    vcpu.set_registers(&GuestRegisters {
        gpr,
        eip: CODE,
        eflags: 2,
    });
    let bus = IoBus::with_serial_writer(Box::new(std::io::sink())).unwrap();
    let irq = InterruptInputs::new(vcpu.exit_requester(), &bus, None);
    let board = Board {
        bus,
        backdoor: backdoor::Backdoor::new(
            Default::default(),
            std::iter::empty::<(String, String)>(),
        ),
        restrict_backdoor: false,
        irq,
    };
    (vcpu, board)
}

/// A handler that sets the byte at [`MARK`] and ends the interrupt at
/// the master PIC.
fn marking_handler(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.push(eax)?;
    a.mov(byte_ptr(MARK), 1)?;
    a.mov(al, 0x20)?;
    a.out(0x20, al)?;
    a.pop(eax)?;
    a.iretd()
}

/// A machine whose guest programs the PIC with only [`TEST_IRQ`]
/// unmasked, has [`marking_handler`] at [`VECTOR`], and then runs `body`.
fn machine(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> (BtVcpu, Board) {
    machine_with(VECTOR, marking_handler, |a| {
        program_pic(a, (!(1 << TEST_IRQ), 0xff))?;
        body(a)
    })
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs the exit loop while another thread, as a device would, raises
/// [`TEST_IRQ`] `after` the guest unmasked it. The line is armed (the
/// device may raise it by itself), so a halted guest waits for it.
fn run_raising_after(vcpu: &mut BtVcpu, board: &mut Board, after: Duration) -> RunEnd {
    let pic = board.bus.pic();
    let line: PicLine = pic.line(Irq::new(TEST_IRQ).unwrap());
    line.set_armed(true);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let start = Instant::now();
            while !pic.line_enabled(line.irq()) && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(after);
            line.pulse();
        });
        run_loop(vcpu, board)
    })
}

/// The value the guest reported through isa-debug-exit, if it did.
fn guest_report(end: &RunEnd) -> Option<u32> {
    match end {
        RunEnd::GuestExit(value) => Some(*value),
        _ => None,
    }
}

/// The reason the run stopped, if it stopped.
fn stop_reason(end: RunEnd) -> Option<StopReason> {
    match end {
        RunEnd::Stopped(stop) => Some(stop.reason),
        _ => None,
    }
}

#[test]
fn halted_guest_sleeps_until_a_device_raises_its_pic_line() {
    let (mut vcpu, mut board) = machine(|a| {
        a.sti()?;
        a.hlt()?;
        a.mov(al, byte_ptr(MARK))?;
        a.out(0xf4, al)
    });
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let end = run_raising_after(&mut vcpu, &mut board, Duration::from_millis(300));
    assert_eq!(
        guest_report(&end),
        Some(1),
        "the handler ran, then the code after HLT"
    );
    let waited = wall.elapsed();
    assert!(waited >= Duration::from_millis(300));
    // A spinning vCPU would burn CPU for (nearly) all the time it waited;
    // a sleeping one uses a small part of it, however slow the host.
    let used = thread_cpu_time() - cpu;
    assert!(
        used < waited / 2,
        "the halted vCPU spun: {used:?} of CPU in {waited:?}"
    );
}

#[test]
fn spinning_guest_with_interrupts_enabled_takes_a_raised_interrupt() {
    let (mut vcpu, mut board) = machine(|a| {
        let mut spin = a.create_label();
        a.sti()?;
        a.set_label(&mut spin)?;
        a.cmp(byte_ptr(MARK), 0)?;
        a.je(spin)?;
        a.mov(al, 2)?;
        a.out(0xf4, al)
    });
    let end = run_raising_after(&mut vcpu, &mut board, Duration::from_millis(50));
    assert_eq!(guest_report(&end), Some(2));
}

#[test]
fn halt_with_interrupts_disabled_still_stops_although_sources_exist() {
    let (mut vcpu, mut board) = machine(|a| {
        a.cli()?;
        a.hlt()
    });
    let _source = board.irq.source();
    assert_eq!(
        stop_reason(run_loop(&mut vcpu, &mut board)),
        Some(StopReason::HaltedForever)
    );
}

#[test]
fn halt_with_every_pic_line_masked_stops_the_run() {
    // At reset every line but the cascade is masked, and programming the
    // PIT does not change that.
    let (mut vcpu, mut board) = machine_with(VECTOR, marking_handler, |a| {
        a.mov(al, 0x34)?;
        a.out(0x43, al)?;
        a.mov(al, 0x10)?;
        a.out(0x40, al)?;
        a.out(0x40, al)?;
        a.sti()?;
        a.hlt()
    });
    assert_eq!(
        stop_reason(run_loop(&mut vcpu, &mut board)),
        Some(StopReason::HaltedWithoutInterruptSources)
    );
}

#[test]
fn halt_with_irq0_enabled_but_the_pit_idle_stops_the_run() {
    let (mut vcpu, mut board) = machine_with(PIC_BASE, marking_handler, |a| {
        program_pic(a, (0xfe, 0xff))?;
        a.mov(al, 0x30)?; // channel 0, mode 0, and no count
        a.out(0x43, al)?;
        a.sti()?;
        a.hlt()
    });
    assert_eq!(
        stop_reason(run_loop(&mut vcpu, &mut board)),
        Some(StopReason::HaltedWithoutInterruptSources)
    );
}

#[test]
fn pit_channel_0_wakes_a_halted_guest_at_its_rate() {
    const WANT: u32 = 50;
    let tick_handler = |a: &mut CodeAssembler| {
        a.push(eax)?;
        a.inc(dword_ptr(TICKS))?;
        a.mov(al, 0x20)?;
        a.out(0x20, al)?;
        a.pop(eax)?;
        a.iretd()
    };
    let (mut vcpu, mut board) = machine_with(PIC_BASE, tick_handler, |a| {
        let mut wait = a.create_label();
        program_pic(a, (0xfe, 0xff))?;
        a.mov(al, 0x34)?; // channel 0, LSB then MSB, mode 2
        a.out(0x43, al)?;
        a.mov(al, (1193 & 0xff) as u32)?; // 1 kHz
        a.out(0x40, al)?;
        a.mov(al, (1193 >> 8) as u32)?;
        a.out(0x40, al)?;
        a.set_label(&mut wait)?;
        a.sti()?;
        a.hlt()?;
        a.cli()?;
        a.cmp(dword_ptr(TICKS), WANT)?;
        a.jb(wait)?;
        a.mov(al, 0)?;
        a.out(0xf4, al)
    });
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let end = run_loop(&mut vcpu, &mut board);
    assert_eq!(guest_report(&end), Some(0));
    let waited = wall.elapsed();
    // Ticks never come faster than the PIT's period (the first may come
    // at once, from an edge latched before).
    assert!(
        waited >= Duration::from_millis(u64::from(WANT) - 2),
        "{WANT} ticks in {waited:?}"
    );
    let used = thread_cpu_time() - cpu;
    assert!(
        used < waited / 2,
        "the halted vCPU spun: {used:?} of CPU in {waited:?}"
    );
}

#[test]
fn com1_transmit_interrupt_arrives_through_irq4() {
    let (mut vcpu, mut board) = machine_with(PIC_BASE + 4, marking_handler, |a| {
        program_pic(a, (0xef, 0xff))?;
        a.mov(al, 0x02)?; // IER: transmitter holding register empty
        a.mov(dx, 0x3f9)?;
        a.out(dx, al)?;
        a.sti()?;
        a.hlt()?;
        a.mov(al, byte_ptr(MARK))?;
        a.out(0xf4, al)
    });
    assert_eq!(guest_report(&run_loop(&mut vcpu, &mut board)), Some(1));
}

#[test]
fn masked_line_raised_while_the_guest_spins_arrives_when_unmasked() {
    // The guest spins with IRQ5 masked until the line was raised (the IRR
    // bit, read through OCW3, shows it), then unmasks it.
    let (mut vcpu, mut board) = machine(|a| {
        let mut spin = a.create_label();
        let mut wait = a.create_label();
        a.mov(al, 0xff)?;
        a.out(0x21, al)?;
        a.sti()?;
        a.set_label(&mut spin)?;
        a.in_(al, 0x20)?; // IRR
        a.test(al, 1 << TEST_IRQ)?;
        a.je(spin)?;
        a.mov(cl, byte_ptr(MARK))?; // still 0: masked
        a.mov(al, !(1u8 << TEST_IRQ) as u32)?;
        a.out(0x21, al)?;
        a.set_label(&mut wait)?;
        a.cmp(byte_ptr(MARK), 0)?;
        a.je(wait)?;
        a.mov(al, cl)?;
        a.add(al, 0x10)?;
        a.out(0xf4, al)
    });
    let pic = board.bus.pic();
    let line = pic.line(Irq::new(TEST_IRQ).unwrap());
    let end = std::thread::scope(|scope| {
        scope.spawn(move || {
            // Raised once the guest masked everything again.
            let start = Instant::now();
            while pic.with(|p| p.read(0x21)) != 0xff && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            line.pulse();
        });
        run_loop(&mut vcpu, &mut board)
    });
    assert_eq!(guest_report(&end), Some(0x10), "no delivery while masked");
}

#[test]
fn pic_pit_and_elcr_ports_are_not_answered_in_translated_code() {
    let (_vcpu, board) = machine(|a| a.hlt());
    let ignored = board.ignored_ports();
    for port in [
        0x20, 0x21, 0xa0, 0xa1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x4d0, 0x4d1,
    ] {
        assert!(!ignored.contains(port), "{port:#x} is answered inline");
    }
    assert!(ignored.contains(0x80));
    // Exactly the ports no device claims, but the backdoor's.
    for port in 0..=u16::MAX {
        let backdoor = port == super::board::BACKDOOR_PORT || port == 0x5659;
        assert_eq!(
            ignored.contains(port),
            !board.bus.claims(port) && !backdoor,
            "{port:#x}"
        );
    }
}

/// The nesting handshake at power-on (`vmx.allowNested`), driven with the
/// simulated outer VMware hypervisor of `backdoor::outer` instead of the
/// host's port.
mod nesting {
    use super::super::{nesting_handshake, MachineError};
    use backdoor::abi::{self, cmd, nesting};
    use backdoor::outer::{OuterTransport, SimulatedOuter};
    use backdoor::{Backdoor, Event, HostFacts, Regs};
    use std::cell::Cell;

    /// The simulated outer host, which has nesting control (version 2).
    fn outer_with_nesting_control() -> SimulatedOuter {
        SimulatedOuter::new(Backdoor::new(
            HostFacts::default(),
            std::iter::empty::<(String, String)>(),
        ))
    }

    /// An older outer VMware host: the simulated one, except that
    /// NESTING_CONTROL is unknown to it (all ones, as for any unknown
    /// command). Records every command it is sent.
    #[derive(Debug)]
    struct OuterWithoutNestingControl {
        outer: SimulatedOuter,
        commands: Vec<(u16, u16)>,
    }

    impl OuterTransport for OuterWithoutNestingControl {
        fn low_bandwidth(&mut self, mut regs: Regs) -> Regs {
            self.commands.push((regs.command(), regs.subcommand()));
            if regs.command() == cmd::NESTING_CONTROL {
                regs.eax = abi::ALL_ONES;
                return regs;
            }
            self.outer.low_bandwidth(regs)
        }
    }

    fn outer_without_nesting_control() -> OuterWithoutNestingControl {
        OuterWithoutNestingControl {
            outer: outer_with_nesting_control(),
            commands: Vec::new(),
        }
    }

    const VMWARE: Option<&str> = Some("VMwareVMware");

    #[test]
    fn allow_nested_false_refuses_power_on_when_the_outer_backdoor_cannot_be_restricted() {
        let mut outer = outer_without_nesting_control();
        let refused = nesting_handshake(VMWARE, false, || Ok::<_, String>(&mut outer))
            .expect_err("power-on refused");
        assert!(matches!(refused, MachineError::BadInput(_)), "{refused:?}");
        assert_eq!(refused.exit_status(), 2);
        assert!(
            refused.to_string().contains("vmx.allowNested = \"TRUE\""),
            "{refused}"
        );
        assert_eq!(
            outer.commands,
            [(cmd::NESTING_CONTROL, nesting::QUERY)],
            "only asked, never restricted"
        );
    }

    #[test]
    fn allow_nested_true_powers_on_with_the_outer_backdoor_left_open() {
        let mut outer = outer_without_nesting_control();
        {
            let guard = nesting_handshake(VMWARE, true, || Ok::<_, String>(&mut outer))
                .expect("power-on allowed")
                .expect("a handshake took place");
            assert!(!guard.restricted());
            assert_eq!(guard.nesting_version(), None);
        }
        assert_eq!(outer.commands, [(cmd::NESTING_CONTROL, nesting::QUERY)]);
    }

    #[test]
    fn outer_backdoor_with_nesting_control_is_restricted_while_the_guard_lives() {
        for allow_nested in [false, true] {
            let mut outer = outer_with_nesting_control();
            {
                let guard = nesting_handshake(VMWARE, allow_nested, || Ok::<_, String>(&mut outer))
                    .expect("power-on")
                    .expect("a handshake took place");
                assert!(guard.restricted());
            }
            assert!(!outer.host.restricted(), "reopened when the run ended");
            assert_eq!(
                outer.host.drain_events(),
                [
                    Event::NestingRestricted(true),
                    Event::NestingRestricted(false)
                ]
            );
        }
    }

    #[test]
    fn a_host_that_is_not_vmware_never_opens_the_backdoor_port() {
        for vendor in [None, Some("KVMKVMKVM"), Some("Microsoft Hv"), Some("")] {
            for allow_nested in [false, true] {
                let opened = Cell::new(false);
                let result = nesting_handshake(vendor, allow_nested, || {
                    opened.set(true);
                    Ok::<_, String>(outer_without_nesting_control())
                });
                assert!(matches!(result, Ok(None)), "{vendor:?}");
                assert!(!opened.get(), "{vendor:?}: the port was opened");
            }
        }
    }

    #[test]
    fn vmware_backdoor_that_cannot_be_opened_means_no_handshake() {
        let result = nesting_handshake(VMWARE, false, || {
            Err::<SimulatedOuter, _>("ioperm(0x5658, 2, 1) failed: EPERM")
        });
        assert!(matches!(result, Ok(None)));
    }
}
