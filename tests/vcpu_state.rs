//! State the BT vCPU keeps or answers itself, checked in-process:
//! - the guest's x87/MMX/SSE registers belong to their vCPU: they survive
//!   exits to the monitor, and two vCPUs taking turns on one host thread
//!   never see each other's registers (the x87 part stays in the host FPU
//!   between exits and is handed over when another vCPU enters);
//! - CPUID answered in translated code gives the CPU model's answers and
//!   keeps the guest's flags.

use iced_x86::code_asm::*;
use monitor::cpuid::CpuModel;
use monitor::vcpu::bt::BtVcpu;
use monitor::vcpu::{GuestRegisters, Vcpu, VcpuExit};
use shadowmmu::{GuestPhys, GuestRam};

const CODE: u32 = 0x1000;
/// The value the guest loads (into ST0, MM0 and XMM0).
const INPUT: u32 = 0x600;
/// Where it stores them back: ST0 (as an integer), MM0, XMM0 (low dword).
const OUT_ST0: u32 = 0x610;
const OUT_MM0: u32 = 0x618;
const OUT_XMM0: u32 = 0x620;

/// A vCPU whose guest loads `value` into ST0 and XMM0, exits on port 0x80,
/// stores them and exits on 0x81, loads it into MM0, exits on 0x82, stores
/// MM0 and exits on 0xf4.
fn vcpu_holding(value: u32) -> BtVcpu {
    let ram = GuestRam::new(1).unwrap();
    ram.write(GuestPhys(INPUT), &value.to_le_bytes()).unwrap();
    let mut a = CodeAssembler::new(32).unwrap();
    let build = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        // CR4.OSFXSR: SSE instructions allowed.
        a.mov(eax, cr4)?;
        a.or(eax, 0x200)?;
        a.mov(cr4, eax)?;
        a.fild(dword_ptr(INPUT))?;
        a.movd(xmm0, dword_ptr(INPUT))?;
        a.out(0x80, al)?;
        a.fld(st0)?;
        a.fistp(dword_ptr(OUT_ST0))?;
        a.movd(dword_ptr(OUT_XMM0), xmm0)?;
        a.out(0x81, al)?;
        a.movd(mm0, dword_ptr(INPUT))?;
        a.out(0x82, al)?;
        a.movq(qword_ptr(OUT_MM0), mm0)?;
        a.emms()?;
        a.out(0xf4, al)
    };
    build(&mut a).unwrap();
    ram.write(GuestPhys(CODE), &a.assemble(u64::from(CODE)).unwrap())
        .unwrap();
    let model = CpuModel::new(&Default::default(), &monitor::probe::host_cpuid).unwrap();
    let mut vcpu = BtVcpu::new(ram, model).unwrap();
    let mut gpr = [0; 8];
    gpr[4] = 0x8000;
    vcpu.set_registers(&GuestRegisters {
        gpr,
        eip: CODE,
        eflags: 2,
    });
    vcpu
}

/// Runs to the next port output and returns its port.
fn next_out(vcpu: &mut BtVcpu) -> u16 {
    match vcpu.run() {
        VcpuExit::IoOut { port, .. } => port,
        VcpuExit::Stopped(stop) => panic!("guest stopped: {stop}"),
        _ => panic!("unexpected exit"),
    }
}

fn read_u32(vcpu: &BtVcpu, at: u32) -> u32 {
    let mut b = [0; 4];
    vcpu.ram().read(GuestPhys(at), &mut b).unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn two_vcpus_taking_turns_on_one_thread_keep_their_own_fpu_registers() {
    let mut a = vcpu_holding(1111);
    let mut b = vcpu_holding(2222);
    for port in [0x80, 0x81, 0x82, 0xf4] {
        assert_eq!(next_out(&mut a), port);
        assert_eq!(next_out(&mut b), port);
    }
    for (vcpu, value) in [(&a, 1111), (&b, 2222)] {
        assert_eq!(read_u32(vcpu, OUT_ST0), value, "ST0");
        assert_eq!(read_u32(vcpu, OUT_XMM0), value, "XMM0");
        assert_eq!(read_u32(vcpu, OUT_MM0), value, "MM0");
    }
}

#[test]
fn monitor_sees_the_registers_of_a_vcpu_between_runs() {
    let mut a = vcpu_holding(0x1234_5678);
    assert_eq!(next_out(&mut a), 0x80);
    let mut other = vcpu_holding(7);
    assert_eq!(next_out(&mut other), 0x80);
    let fx = *a.fx_mut();
    // XMM0 at 160; ST0 (an 80-bit integer-valued real) at 32: check the
    // low dword of XMM0 and that ST0 is tagged valid (abridged FTW bit 0)
    // after the other vCPU ran.
    assert_eq!(
        u32::from_le_bytes(fx[160..164].try_into().unwrap()),
        0x1234_5678
    );
    assert_eq!(fx[4] & 0x80, 0x80, "ST0 (physical register 7) is valid");
    assert_eq!(next_out(&mut a), 0x81);
    assert_eq!(read_u32(&a, OUT_ST0), 0x1234_5678);
}

#[test]
fn cpuid_in_translated_code_answers_as_the_cpu_model_and_keeps_flags() {
    const LEAVES: [u32; 6] = [0, 1, 2, 0x8000_0000, 0x8000_0001, 0x0bad_cafe];
    const ANSWERS: u32 = 0x2000;
    let ram = GuestRam::new(1).unwrap();
    let mut a = CodeAssembler::new(32).unwrap();
    let build = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        for (n, leaf) in LEAVES.iter().enumerate() {
            let at = ANSWERS + 20 * n as u32;
            a.mov(eax, *leaf)?;
            a.mov(ecx, 0x55)?;
            // CF=1, ZF=1 before; SETC/SETZ after.
            a.cmp(esp, esp)?;
            a.stc()?;
            a.cpuid()?;
            a.setb(byte_ptr(at + 16))?;
            a.sete(byte_ptr(at + 17))?;
            a.mov(dword_ptr(at), eax)?;
            a.mov(dword_ptr(at + 4), ebx)?;
            a.mov(dword_ptr(at + 8), ecx)?;
            a.mov(dword_ptr(at + 12), edx)?;
        }
        a.out(0xf4, al)
    };
    build(&mut a).unwrap();
    ram.write(GuestPhys(CODE), &a.assemble(u64::from(CODE)).unwrap())
        .unwrap();
    let model = CpuModel::new(&Default::default(), &monitor::probe::host_cpuid).unwrap();
    let mut vcpu = BtVcpu::new(ram, model.clone()).unwrap();
    let mut gpr = [0; 8];
    gpr[4] = 0x8000;
    vcpu.set_registers(&GuestRegisters {
        gpr,
        eip: CODE,
        eflags: 2,
    });
    assert_eq!(next_out(&mut vcpu), 0xf4);
    for (n, leaf) in LEAVES.iter().enumerate() {
        let at = ANSWERS + 20 * n as u32;
        let got: Vec<u32> = (0..4).map(|r| read_u32(&vcpu, at + 4 * r)).collect();
        assert_eq!(got, model.query(*leaf, 0x55).to_vec(), "leaf {leaf:#x}");
        assert_eq!(read_u32(&vcpu, at + 16) & 0xffff, 0x0101, "CF and ZF kept");
    }
    let exits = vcpu
        .stats()
        .counters
        .iter()
        .find(|c| c.0 == "exits: emulated instruction")
        .map(|c| c.1);
    assert_eq!(exits, Some(1), "only the OUT went to the monitor");
}
