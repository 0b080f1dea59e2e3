//! External interrupts and NMIs through the vCPU interface, as a platform
//! with an interrupt controller drives them: the machine asks for an
//! interrupt window, the vCPU returns when the guest can take an interrupt
//! (IF = 1, past an interrupt shadow), and the machine injects a vector
//! that the guest's IDT delivers. NMIs are delivered whatever IF says, and
//! a second NMI waits for the first handler's IRET.

use iced_x86::code_asm::*;
use monitor::cpuid::CpuModel;
use monitor::vcpu::bt::BtVcpu;
use monitor::vcpu::{GuestRegisters, InjectError, StopReason, Vcpu, VcpuExit};
use shadowmmu::{GuestPhys, GuestRam};
use std::time::Duration;

/// Where the scenario code starts.
const CODE: u32 = 0x1000;
/// The GDTR and IDTR images (lgdt [GDTR], lidt [IDTR]).
const GDTR: u32 = 0x400;
const IDTR: u32 = 0x408;
const GDT: u32 = 0x500;
const IDT: u32 = 0x2000;
/// The handler of vector 0x40: `out 0x80, al; iret`.
const HANDLER: u32 = 0x3000;
/// The NMI handler: `out 0x81, al; out 0x82, al; iret`.
const NMI_HANDLER: u32 = 0x3100;
const STACK: u32 = 0x8000;
const VECTOR: u8 = 0x40;

fn assemble(ip: u32, build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).expect("32-bit assembler");
    build(&mut a).expect("guest code assembles");
    a.assemble(u64::from(ip)).expect("guest code encodes")
}

/// A 32-bit interrupt gate to `offset` in the flat code segment 0x08.
fn interrupt_gate(offset: u32) -> [u8; 8] {
    let low = 0x0008_0000 | (offset & 0xffff);
    let high = (offset & 0xffff_0000) | 0x8e00;
    let mut gate = [0; 8];
    gate[..4].copy_from_slice(&low.to_le_bytes());
    gate[4..].copy_from_slice(&high.to_le_bytes());
    gate
}

/// A vCPU over 1 MiB whose guest loads a flat GDT and an IDT with
/// gates for vector 0x40 and the NMI (an IDT limit of `idt_limit`), then
/// runs `scenario` (CPL 0, IF = 0).
fn machine(
    idt_limit: u16,
    scenario: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> BtVcpu {
    let ram = GuestRam::new(1).expect("1 MiB of guest RAM");
    let gdt: [u64; 3] = [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    ram.write(GuestPhys(GDT), &gdt_bytes).unwrap();
    let mut descriptors = Vec::new();
    descriptors.extend_from_slice(&(gdt_bytes.len() as u16 - 1).to_le_bytes());
    descriptors.extend_from_slice(&GDT.to_le_bytes());
    descriptors.resize((IDTR - GDTR) as usize, 0);
    descriptors.extend_from_slice(&idt_limit.to_le_bytes());
    descriptors.extend_from_slice(&IDT.to_le_bytes());
    ram.write(GuestPhys(GDTR), &descriptors).unwrap();
    ram.write(GuestPhys(IDT + 2 * 8), &interrupt_gate(NMI_HANDLER))
        .unwrap();
    ram.write(
        GuestPhys(IDT + u32::from(VECTOR) * 8),
        &interrupt_gate(HANDLER),
    )
    .unwrap();
    let handler = assemble(HANDLER, |a| {
        a.out(0x80, al)?;
        a.iretd()
    });
    ram.write(GuestPhys(HANDLER), &handler).unwrap();
    let nmi = assemble(NMI_HANDLER, |a| {
        a.out(0x81, al)?;
        a.out(0x82, al)?;
        a.iretd()
    });
    ram.write(GuestPhys(NMI_HANDLER), &nmi).unwrap();
    let code = assemble(CODE, |a| {
        a.lgdt(ptr(GDTR))?;
        a.lidt(ptr(IDTR))?;
        scenario(a)
    });
    ram.write(GuestPhys(CODE), &code).unwrap();
    let model = CpuModel::new(&Default::default(), &|_, _| [0; 4]).expect("CPU model");
    let mut vcpu = BtVcpu::new(ram, model).expect("vCPU");
    let mut gpr = [0; 8];
    gpr[4] = STACK;
    vcpu.set_registers(&GuestRegisters {
        gpr,
        eip: CODE,
        eflags: 2,
    });
    vcpu
}

/// The address of the instruction after the prologue (lgdt, lidt).
fn scenario_start() -> u32 {
    CODE + assemble(CODE, |a| {
        a.lgdt(ptr(GDTR))?;
        a.lidt(ptr(IDTR))
    })
    .len() as u32
}

/// What `run` returned, reduced to something comparable.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Out(u16),
    Hlt,
    Window,
    Interrupted,
    Stopped(StopReason),
    Other,
}

/// Runs the vCPU to its next exit. Every guest run this way exits by
/// itself; one that has not after a minute (a window that never opens) is
/// asked to stop, so the test fails instead of hanging. A hang guard, not
/// a time limit: no host is that slow.
fn run(vcpu: &mut BtVcpu) -> Exit {
    run_for(vcpu, Duration::from_secs(60))
}

/// Runs the vCPU to its next exit, asking it (and only it, not the vCPUs
/// of tests running alongside) to stop after `limit`, for a guest that
/// never exits by itself.
fn run_for(vcpu: &mut BtVcpu, limit: Duration) -> Exit {
    let requester = vcpu.exit_requester();
    std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        scope.spawn(move || {
            if finished.recv_timeout(limit).is_err() {
                requester.request_exit();
            }
        });
        let exit = match vcpu.run() {
            VcpuExit::IoOut { port, .. } => Exit::Out(port),
            VcpuExit::Hlt => Exit::Hlt,
            VcpuExit::InterruptWindow => Exit::Window,
            VcpuExit::Interrupted => Exit::Interrupted,
            VcpuExit::Stopped(stop) => Exit::Stopped(stop.reason),
            VcpuExit::IoIn { .. } => Exit::Other,
        };
        let _ = done.send(());
        exit
    })
}

const IF: u32 = 1 << 9;

#[test]
fn window_opens_after_sti_and_the_instruction_in_its_shadow() {
    let mut vcpu = machine(0x7ff, |a| {
        let mut spin = a.create_label();
        a.sti()?;
        a.inc(ebx)?;
        a.set_label(&mut spin)?;
        a.inc(ecx)?;
        a.jmp(spin)
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(run(&mut vcpu), Exit::Window);
    let regs = vcpu.registers();
    assert_eq!(regs.gpr[3], 1, "the instruction after STI ran first");
    assert_eq!(regs.gpr[1], 0, "and nothing after it");
    assert_eq!(regs.eip, scenario_start() + 2, "stopped right after it");
    assert_ne!(regs.eflags & IF, 0);
}

#[test]
fn injected_interrupt_runs_its_handler_and_returns_to_the_interrupted_code() {
    // The loop is interrupted at its start and then runs to its end, so
    // that the run ends by itself (not after some time has passed).
    const LOOP_END: u32 = 1000;
    let mut vcpu = machine(0x7ff, |a| {
        let mut spin = a.create_label();
        a.sti()?;
        a.nop()?;
        a.set_label(&mut spin)?;
        a.inc(ecx)?;
        a.cmp(ecx, LOOP_END)?;
        a.jne(spin)?;
        a.out(0x84, al)?;
        a.hlt()
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(run(&mut vcpu), Exit::Window);
    let at = vcpu.registers();
    vcpu.inject_interrupt(VECTOR).expect("window is open");
    let inside = vcpu.registers();
    assert_eq!(inside.eip, HANDLER);
    assert_eq!(inside.gpr[4], STACK - 12, "EFLAGS, CS, EIP pushed");
    assert_eq!(inside.eflags & IF, 0, "an interrupt gate clears IF");
    vcpu.request_interrupt_window(false);
    assert_eq!(run(&mut vcpu), Exit::Out(0x80));
    assert_eq!(run(&mut vcpu), Exit::Out(0x84), "the loop ran to its end");
    let after = vcpu.registers();
    assert_eq!(after.gpr[4], STACK, "IRET popped the frame");
    assert_ne!(after.eflags & IF, 0, "IRET restored IF");
    assert!(after.gpr[1] > at.gpr[1], "the interrupted loop went on");
    assert_eq!(after.gpr[1], LOOP_END);
    assert_eq!(
        vcpu.stats()
            .counters
            .iter()
            .find(|c| c.0 == "external interrupts")
            .map(|c| c.1),
        Some(1)
    );
}

#[test]
fn window_stays_closed_while_interrupts_are_disabled() {
    let mut vcpu = machine(0x7ff, |a| {
        let mut spin = a.create_label();
        a.cli()?;
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(
        run_for(&mut vcpu, Duration::from_millis(100)),
        Exit::Interrupted
    );
    assert_eq!(
        vcpu.inject_interrupt(VECTOR),
        Err(InjectError::WindowClosed)
    );
    assert_eq!(vcpu.registers().gpr[4], STACK, "nothing was delivered");
}

#[test]
fn popf_that_sets_if_opens_the_window_at_the_next_instruction() {
    let mut vcpu = machine(0x7ff, |a| {
        let mut spin = a.create_label();
        a.pushfd()?;
        a.or(dword_ptr(esp), 0x200)?;
        a.popfd()?;
        a.set_label(&mut spin)?;
        a.inc(ecx)?;
        a.jmp(spin)
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(run(&mut vcpu), Exit::Window);
    let regs = vcpu.registers();
    assert_eq!(regs.gpr[1], 0, "no instruction ran after POPFD");
    assert_ne!(regs.eflags & IF, 0);
}

#[test]
fn interrupt_wakes_sti_hlt_and_returns_after_the_hlt() {
    let mut vcpu = machine(0x7ff, |a| {
        a.sti()?;
        a.hlt()?;
        a.out(0x83, al)?;
        a.cli()?;
        a.hlt()
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(
        run(&mut vcpu),
        Exit::Hlt,
        "HLT in the STI shadow still halts"
    );
    assert_eq!(run(&mut vcpu), Exit::Window);
    vcpu.inject_interrupt(VECTOR).expect("window is open");
    vcpu.request_interrupt_window(false);
    assert_eq!(run(&mut vcpu), Exit::Out(0x80));
    assert_eq!(
        run(&mut vcpu),
        Exit::Out(0x83),
        "IRET returned past the HLT"
    );
    assert_eq!(run(&mut vcpu), Exit::Stopped(StopReason::HaltedForever));
}

#[test]
fn nmi_is_delivered_with_interrupts_disabled_and_a_second_waits_for_iret() {
    // Port 0x84 marks the guest ready (IDT loaded, IF = 0): the NMIs
    // arrive at the next instruction, which says when both returned.
    let mut vcpu = machine(0x7ff, |a| {
        a.cli()?;
        a.out(0x84, al)?;
        a.out(0x85, al)?;
        a.hlt()
    });
    assert_eq!(run(&mut vcpu), Exit::Out(0x84));
    vcpu.inject_nmi();
    assert_eq!(run(&mut vcpu), Exit::Out(0x81));
    vcpu.inject_nmi();
    assert_eq!(
        run(&mut vcpu),
        Exit::Out(0x82),
        "the handler is not interrupted"
    );
    assert_eq!(run(&mut vcpu), Exit::Out(0x81), "delivered after the IRET");
    assert_eq!(run(&mut vcpu), Exit::Out(0x82));
    assert_eq!(
        run(&mut vcpu),
        Exit::Out(0x85),
        "the second IRET returned to the interrupted code"
    );
    assert_eq!(vcpu.registers().gpr[4], STACK);
    assert_eq!(
        vcpu.stats()
            .counters
            .iter()
            .find(|c| c.0 == "NMIs")
            .map(|c| c.1),
        Some(2)
    );
}

#[test]
fn interrupt_the_idt_cannot_deliver_ends_in_a_triple_fault_report() {
    let mut vcpu = machine(0xf, |a| {
        let mut spin = a.create_label();
        a.sti()?;
        a.set_label(&mut spin)?;
        a.jmp(spin)
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(run(&mut vcpu), Exit::Window);
    vcpu.inject_interrupt(VECTOR).expect("window is open");
    match run(&mut vcpu) {
        Exit::Stopped(StopReason::TripleFault { first, .. }) => {
            assert!(first.contains("external interrupt, vector 0x40"), "{first}")
        }
        other => panic!("want a triple fault, got {other:?}"),
    }
}

#[test]
fn mov_ss_holds_interrupts_until_the_next_instruction_completes() {
    let mut vcpu = machine(0x7ff, |a| {
        let mut spin = a.create_label();
        a.mov(ax, ss)?;
        a.sti()?;
        a.mov(ss, ax)?;
        a.inc(ebx)?;
        a.set_label(&mut spin)?;
        a.inc(ecx)?;
        a.jmp(spin)
    });
    vcpu.request_interrupt_window(true);
    assert_eq!(run(&mut vcpu), Exit::Window);
    let regs = vcpu.registers();
    assert_eq!(regs.gpr[3], 1, "the instruction after MOV SS ran");
    assert_eq!(regs.gpr[1], 0, "and nothing after it");
}
