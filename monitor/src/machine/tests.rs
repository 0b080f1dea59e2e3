//! The exit loop with the interrupt inputs: a device raising an interrupt
//! reaches a halted guest (which sleeps meanwhile) and a spinning one.
//! And the power-on nesting handshake (`vmx.allowNested`) against a
//! simulated outer VMware hypervisor (module `nesting`).

use super::interrupts::InterruptInputs;
use super::{exit_loop, Board, RunEnd};
use crate::cpuid::CpuModel;
use crate::devices::IoBus;
use crate::vcpu::bt::BtVcpu;
use crate::vcpu::{GuestRegisters, Vcpu};
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
const VECTOR: u8 = 0x30;

fn assemble(ip: u32, build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    build(&mut a).unwrap();
    a.assemble(u64::from(ip)).unwrap()
}

/// A machine whose guest loads an IDT with a gate for [`VECTOR`] (its
/// handler sets the byte at [`MARK`]) and then runs `body`, with the
/// flat GDT written here (CS 0x08, data 0x10, as at Multiboot entry).
fn machine(body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> (BtVcpu, Board) {
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
    ram.write(GuestPhys(IDT + u32::from(VECTOR) * 8), &gate)
        .unwrap();
    let handler = assemble(HANDLER, |a| {
        a.mov(byte_ptr(MARK), 1)?;
        a.iretd()
    });
    ram.write(GuestPhys(HANDLER), &handler).unwrap();
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
    let board = Board {
        bus: IoBus::with_serial_writer(Box::new(std::io::sink())).unwrap(),
        backdoor: backdoor::Backdoor::new(
            Default::default(),
            std::iter::empty::<(String, String)>(),
        ),
        restrict_backdoor: false,
        irq: InterruptInputs::new(vcpu.exit_requester()),
    };
    (vcpu, board)
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

/// Runs the exit loop while another thread raises [`VECTOR`] after `after`.
fn run_raising_after(vcpu: &mut BtVcpu, board: &mut Board, after: Duration) -> RunEnd {
    let source = board.irq.source();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            std::thread::sleep(after);
            source.raise(VECTOR);
        });
        exit_loop(vcpu, board)
    })
}

/// The value the guest reported through isa-debug-exit, if it did.
fn guest_report(end: &RunEnd) -> Option<u32> {
    match end {
        RunEnd::GuestExit(value) => Some(*value),
        _ => None,
    }
}

#[test]
fn halted_guest_sleeps_until_a_device_raises_an_interrupt() {
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
    match exit_loop(&mut vcpu, &mut board) {
        RunEnd::Stopped(stop) => {
            assert_eq!(stop.reason, crate::vcpu::StopReason::HaltedForever)
        }
        _ => panic!("want a stop"),
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
