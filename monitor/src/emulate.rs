//! The monitor's emulation of the guest instructions that translated code
//! hands over (port I/O, CPUID, descriptor tables, segment loads, control
//! registers, BCD arithmetic, software interrupts).
//!
//! Invariant: an instruction is either carried out completely (registers,
//! memory and EIP updated) or not at all (an exception or stop is
//! reported with the state of its start).

use crate::sysregs::{Descriptor, SegCache, CR0_PE, CR0_PG, CR0_TS};
use crate::vcpu::{BtVcpu, IoCpu, Platform};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use shadowmmu::GuestPhys;
use translator::state::{Seg, LIVE_FLAGS};
use translator::Availability;

/// The outcome of emulating one instruction.
#[derive(Debug)]
pub enum Emulated {
    /// Carried out; continue at the new EIP.
    Continue,
    /// Carried out, and the translation mode may have changed.
    ModeChanged,
    /// The guest asked to end the run with this status.
    Exit(i32),
    /// The instruction raises this exception vector.
    Exception(u8),
    /// A memory access of the instruction page-faulted.
    PageFault(shadowmmu::PageFault),
    /// Carried out, and the guest changed its address space (CR0.PG, CR3,
    /// CR4, INVLPG): shadow mappings and translations must go.
    AddressSpaceChanged,
    /// The guest cannot be continued.
    Died(String),
}

type Res<T> = Result<T, Emulated>;

const CF: u32 = 1;
const PF: u32 = 4;
const AF: u32 = 0x10;
const ZF: u32 = 0x40;
const SF: u32 = 0x80;
const DF: u32 = 0x400;
const OF: u32 = 0x800;

/// Emulates the instruction at the vCPU's EIP.
pub fn emulate(v: &mut BtVcpu, p: &mut dyn Platform) -> Emulated {
    let insn = match fetch(v) {
        Ok(i) => i,
        Err(e) => return e,
    };
    match execute(v, p, &insn) {
        Ok(Next::Ip) => {
            v.state.eip = insn.next_ip32();
            Emulated::Continue
        }
        Ok(Next::IpModeChanged) => {
            v.state.eip = insn.next_ip32();
            Emulated::ModeChanged
        }
        Ok(Next::Jumped) => Emulated::ModeChanged,
        Ok(Next::IpAddressSpace) => {
            v.state.eip = insn.next_ip32();
            Emulated::AddressSpaceChanged
        }
        Err(e) => e,
    }
}

enum Next {
    Ip,
    IpAddressSpace,
    IpModeChanged,
    Jumped,
}

fn fetch(v: &mut BtVcpu) -> Res<Instruction> {
    let eip = v.state.eip;
    let mut bytes = [0u8; 15];
    let mut avail = 0;
    while avail < 15 {
        let lin = eip.wrapping_add(avail as u32);
        let Ok(phys) = v.linear_to_phys(lin, false) else {
            break;
        };
        let chunk = (15 - avail)
            .min((0x1000 - (lin & 0xfff)) as usize)
            .min(v.ram().size().saturating_sub(phys as usize));
        if chunk == 0
            || v.ram()
                .read(GuestPhys(phys), &mut bytes[avail..avail + chunk])
                .is_err()
        {
            break;
        }
        avail += chunk;
    }
    let insn = Decoder::with_ip(32, &bytes[..avail], u64::from(eip), DecoderOptions::NONE).decode();
    if insn.is_invalid() {
        return Err(Emulated::Exception(6));
    }
    Ok(insn)
}

fn execute(v: &mut BtVcpu, p: &mut dyn Platform, i: &Instruction) -> Res<Next> {
    use Mnemonic::*;
    match i.mnemonic() {
        In | Out => port_io(v, p, i),
        Insb | Insw | Insd | Outsb | Outsw | Outsd => string_io(v, p, i),
        Cpuid => {
            let r = p.cpuid(v.state.gpr[0], v.state.gpr[1]);
            let g = &mut v.state.gpr;
            (g[0], g[3], g[1], g[2]) = (r[0], r[1], r[2], r[3]);
            Ok(Next::Ip)
        }
        Hlt => Err(Emulated::Died(if v.state.vif == 0 {
            "the guest executed HLT with interrupts disabled; nothing can wake it".into()
        } else {
            "the guest executed HLT to wait for an interrupt, but no interrupt source is emulated yet".into()
        })),
        Lgdt | Lidt => load_table(v, i),
        Sgdt | Sidt => store_table(v, i),
        Mov if is_cr_or_dr(i) => control_register(v, i),
        Mov => mov_sreg(v, i),
        Pop => pop_sreg(v, i),
        Jmp => far_jmp(v, i),
        Lds | Les | Lfs | Lgs | Lss => load_far_pointer(v, i),
        Daa | Das | Aaa | Aas | Aam | Aad => bcd(v, i),
        Salc => {
            let al = if v.state.eflags & CF != 0 { 0xff } else { 0 };
            v.state.gpr[0] = (v.state.gpr[0] & !0xff) | al;
            Ok(Next::Ip)
        }
        Clts => {
            v.sys.cr0 &= !CR0_TS;
            Ok(Next::Ip)
        }
        Smsw => {
            let val = v.sys.cr0 & 0xffff;
            write_operand(
                v,
                i,
                0,
                val,
                if i.op0_kind() == OpKind::Register {
                    i.op0_register().size()
                } else {
                    2
                },
            )?;
            Ok(Next::Ip)
        }
        Lmsw => {
            let val = read_operand(v, i, 0, 2)?;
            // LMSW can set PE but never clear it.
            v.sys.cr0 = (v.sys.cr0 & !0xe) | (val & 0xf) | (v.sys.cr0 & CR0_PE);
            Ok(Next::Ip)
        }
        Wbinvd | Invd => Ok(Next::Ip),
        Invlpg if v.paging() => Ok(Next::IpAddressSpace),
        Invlpg => Ok(Next::Ip),
        Ltr => {
            v.sys.tr = read_operand(v, i, 0, 2)? as u16;
            Ok(Next::Ip)
        }
        Lldt => {
            v.sys.ldtr = read_operand(v, i, 0, 2)? as u16;
            Ok(Next::Ip)
        }
        Str | Sldt => {
            let val = if i.mnemonic() == Str {
                v.sys.tr
            } else {
                v.sys.ldtr
            };
            let size = if i.op0_kind() == OpKind::Register {
                i.op0_register().size()
            } else {
                2
            };
            write_operand(v, i, 0, u32::from(val), size)?;
            Ok(Next::Ip)
        }
        Int3 => Err(Emulated::Exception(3)),
        Int1 => Err(Emulated::Exception(1)),
        Int => Err(Emulated::Exception(i.immediate8())),
        Into if v.state.eflags & OF != 0 => Err(Emulated::Exception(4)),
        Into => Ok(Next::Ip),
        Pusha if i.code() == Code::Pushaw => push16_all(v),
        Popa if i.code() == Code::Popaw => pop16_all(v),
        Pushf if i.code() == Code::Pushfw => {
            let flags = v.state.guest_eflags();
            push16(v, flags as u16)?;
            Ok(Next::Ip)
        }
        Popf if i.code() == Code::Popfw => {
            let val = u32::from(pop16(v)?);
            v.state.vif = (val >> 9) & 1;
            v.state.eflags = (v.state.eflags & 0xffff_0000) | (val & 0x7fd5) | 2;
            Ok(Next::Ip)
        }
        Bound => Err(Emulated::Died("BOUND is not supported yet".into())),
        Wrmsr if v.state.gpr[1] == MSR_EFER && v.state.gpr[0] & EFER_LME != 0 => Err(Emulated::Died(
            "the guest tried to enable long mode (EFER.LME); 64-bit guests need hardware virtualization \
             (monitor.virtual_exec = \"hardware\" on a host that provides it), binary translation runs 32-bit guests only"
                .into(),
        )),
        Rdmsr | Wrmsr => Err(Emulated::Exception(13)),
        _ if v.isa().availability(i) == Availability::Undefined => Err(Emulated::Exception(6)),
        Maskmovq | Maskmovdqu => mask_move(v, i),
        _ => Err(unsupported(i)),
    }
}

/// Offset of MM0 (ST0) in the FXSAVE image; each register takes 16 bytes.
const FX_MM0: usize = 32;
/// Offset of XMM0 in the FXSAVE image.
const FX_XMM0: usize = 160;

/// MASKMOVQ/MASKMOVDQU: stores the bytes of the first register whose mask
/// byte (second register) has its top bit set to DS:[EDI]. Carried out by
/// the monitor because the store address is held in a register, which the
/// translator cannot rebase by re-encoding (see `translator::confine`).
fn mask_move(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let (base, width) = match i.code() {
        Code::Maskmovq_rDI_mm_mm => (FX_MM0, 8),
        Code::Maskmovdqu_rDI_xmm_xmm => (FX_XMM0, 16),
        _ => return Err(unsupported(i)),
    };
    let reg = |n: u32| {
        let at = base + 16 * i.op_register(n).number();
        let mut bytes = [0u8; 16];
        bytes[..width].copy_from_slice(&v.state.fx.0[at..at + width]);
        bytes
    };
    let (data, mask) = (reg(1), reg(2));
    let seg = seg_of(i.memory_segment());
    let dest = v.state.seg_base[seg as usize].wrapping_add(v.state.gpr[7]);
    let selected: Vec<usize> = (0..width).filter(|&n| mask[n] & 0x80 != 0).collect();
    if let (Some(&first), Some(&last)) = (selected.first(), selected.last()) {
        // Translate the whole range first: a fault leaves memory untouched.
        let start = dest.wrapping_add(first as u32);
        pieces(v, start, last - first + 1, true)?;
        for n in selected {
            write_mem(v, dest.wrapping_add(n as u32), &data[n..=n])?;
        }
    }
    if i.code() == Code::Maskmovq_rDI_mm_mm {
        enter_mmx_state(v);
    }
    Ok(Next::Ip)
}

/// What every MMX instruction but EMMS does to the x87 state: all tags
/// valid (abridged tag byte 0xff) and TOP = 0.
fn enter_mmx_state(v: &mut BtVcpu) {
    let fx = &mut v.state.fx.0;
    fx[4] = 0xff;
    let fsw = u16::from_le_bytes([fx[2], fx[3]]) & !0x3800;
    fx[2..4].copy_from_slice(&fsw.to_le_bytes());
}

fn unsupported(i: &Instruction) -> Emulated {
    use iced_x86::Formatter;
    let mut text = String::new();
    iced_x86::IntelFormatter::new().format(i, &mut text);
    match i.mnemonic() {
        Mnemonic::Ud0
        | Mnemonic::Ud1
        | Mnemonic::Ud2
        | Mnemonic::Sysenter
        | Mnemonic::Sysexit
        | Mnemonic::Syscall
        | Mnemonic::Sysret
        | Mnemonic::Rdtscp
        | Mnemonic::Xgetbv
        | Mnemonic::Monitor
        | Mnemonic::Mwait
        | Mnemonic::Rdpid => Emulated::Exception(6),
        _ => Emulated::Died(format!(
            "the guest instruction `{text}` at EIP={:#010x} is not supported yet",
            i.ip32()
        )),
    }
}

// ----- registers and memory -------------------------------------------------

fn gpr_index(r: Register) -> usize {
    r.full_register32().number()
}

/// Value of a general or segment register as the guest sees it.
fn reg_value(v: &BtVcpu, r: Register) -> u32 {
    if r.is_segment_register() {
        return v.state.seg_base[seg_of(r) as usize];
    }
    let full = v.state.gpr[gpr_index(r)];
    match r.size() {
        4 => full,
        2 => full & 0xffff,
        _ if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) => {
            (full >> 8) & 0xff
        }
        _ => full & 0xff,
    }
}

fn set_reg(v: &mut BtVcpu, r: Register, val: u32) {
    let slot = &mut v.state.gpr[gpr_index(r)];
    *slot = match r.size() {
        4 => val,
        2 => (*slot & 0xffff_0000) | (val & 0xffff),
        _ if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) => {
            (*slot & !0xff00) | ((val & 0xff) << 8)
        }
        _ => (*slot & !0xff) | (val & 0xff),
    };
}

fn seg_of(r: Register) -> Seg {
    match r {
        Register::ES => Seg::Es,
        Register::CS => Seg::Cs,
        Register::SS => Seg::Ss,
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => Seg::Ds,
    }
}

/// Linear address of the memory operand.
fn effective_address(v: &BtVcpu, i: &Instruction) -> Res<u32> {
    if i.memory_base().size() == 2 || i.memory_index().size() == 2 {
        return Err(Emulated::Died("16-bit addressing is not supported".into()));
    }
    i.virtual_address(0, 0, |r, _, _| Some(u64::from(reg_value(v, r))))
        .map(|a| a as u32)
        .ok_or_else(|| Emulated::Died("cannot compute operand address".into()))
}

/// Splits a linear range into physical pieces, translating each page as
/// the guest MMU would (setting accessed/dirty bits).
fn pieces(v: &mut BtVcpu, lin: u32, len: usize, write: bool) -> Res<Vec<(u32, usize)>> {
    let mut out = Vec::new();
    let mut done = 0usize;
    while done < len {
        let at = lin.wrapping_add(done as u32);
        let chunk = (len - done).min((0x1000 - (at & 0xfff)) as usize);
        let phys = v.linear_to_phys(at, write).map_err(Emulated::PageFault)?;
        out.push((phys, chunk));
        done += chunk;
    }
    Ok(out)
}

/// Reads guest linear memory.
fn read_mem(v: &mut BtVcpu, lin: u32, buf: &mut [u8]) -> Res<()> {
    let mut at = 0;
    for (phys, n) in pieces(v, lin, buf.len(), false)? {
        v.ram()
            .read(GuestPhys(phys), &mut buf[at..at + n])
            .map_err(|e| Emulated::Died(e.to_string()))?;
        at += n;
    }
    Ok(())
}

/// Writes guest linear memory, invalidating translated code it hits.
///
/// All or nothing: every page is translated and every piece checked to lie
/// inside guest RAM before the first byte is written, so a failed write
/// leaves guest RAM untouched (the accessed/dirty bits the page walk sets
/// aside, as on hardware).
fn write_mem(v: &mut BtVcpu, lin: u32, data: &[u8]) -> Res<()> {
    let pieces = pieces(v, lin, data.len(), true)?;
    check_pieces_inside_ram(v.ram().size(), &pieces)?;
    let mut at = 0;
    for (phys, n) in pieces {
        v.write_phys(GuestPhys(phys), &data[at..at + n])
            .map_err(|e| Emulated::Died(e.to_string()))?;
        at += n;
    }
    Ok(())
}

/// Fails, with the error guest RAM itself would give, unless every
/// `(physical address, length)` piece lies inside RAM of `ram_size` bytes.
fn check_pieces_inside_ram(ram_size: usize, pieces: &[(u32, usize)]) -> Res<()> {
    let outside = pieces
        .iter()
        .find(|&&(phys, n)| phys as usize + n > ram_size);
    match outside {
        Some(&(addr, len)) => Err(Emulated::Died(
            shadowmmu::RamError::OutOfRange {
                addr,
                len,
                size: ram_size,
            }
            .to_string(),
        )),
        None => Ok(()),
    }
}

fn read_u32(v: &mut BtVcpu, lin: u32) -> Res<u32> {
    let mut b = [0u8; 4];
    read_mem(v, lin, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_operand(v: &mut BtVcpu, i: &Instruction, n: u32, size: usize) -> Res<u32> {
    match i.op_kind(n) {
        OpKind::Register => Ok(reg_value(v, i.op_register(n))),
        OpKind::Memory => {
            let mut b = [0u8; 4];
            let a = effective_address(v, i)?;
            read_mem(v, a, &mut b[..size])?;
            Ok(u32::from_le_bytes(b))
        }
        _ => Ok(i.immediate(n) as u32),
    }
}

fn write_operand(v: &mut BtVcpu, i: &Instruction, n: u32, val: u32, size: usize) -> Res<()> {
    match i.op_kind(n) {
        OpKind::Register => {
            set_reg(v, i.op_register(n), val);
            Ok(())
        }
        _ => {
            let a = effective_address(v, i)?;
            write_mem(v, a, &val.to_le_bytes()[..size])
        }
    }
}

// ----- 16-bit stack forms ------------------------------------------------------

fn stack_addr(v: &BtVcpu, esp: u32) -> u32 {
    v.state.seg_base[Seg::Ss as usize].wrapping_add(esp)
}

fn push16(v: &mut BtVcpu, val: u16) -> Res<()> {
    let esp = v.state.gpr[4].wrapping_sub(2);
    let at = stack_addr(v, esp);
    write_mem(v, at, &val.to_le_bytes())?;
    v.state.gpr[4] = esp;
    Ok(())
}

fn pop16(v: &mut BtVcpu) -> Res<u16> {
    let esp = v.state.gpr[4];
    let mut b = [0u8; 2];
    let at = stack_addr(v, esp);
    read_mem(v, at, &mut b)?;
    v.state.gpr[4] = esp.wrapping_add(2);
    Ok(u16::from_le_bytes(b))
}

fn push16_all(v: &mut BtVcpu) -> Res<Next> {
    let base = v.state.gpr[4].wrapping_sub(16);
    let mut image = [0u8; 16];
    for n in 0..8 {
        // Memory order from the lowest address: DI, SI, BP, SP, BX, DX, CX, AX.
        let reg = 7 - n;
        image[2 * n..2 * n + 2].copy_from_slice(&(v.state.gpr[reg] as u16).to_le_bytes());
    }
    let at = stack_addr(v, base);
    write_mem(v, at, &image)?;
    v.state.gpr[4] = base;
    Ok(Next::Ip)
}

fn pop16_all(v: &mut BtVcpu) -> Res<Next> {
    let esp = v.state.gpr[4];
    let mut image = [0u8; 16];
    let at = stack_addr(v, esp);
    read_mem(v, at, &mut image)?;
    for n in 0..8 {
        let reg = 7 - n;
        if reg != 4 {
            let val = u16::from_le_bytes([image[2 * n], image[2 * n + 1]]);
            v.state.gpr[reg] = (v.state.gpr[reg] & 0xffff_0000) | u32::from(val);
        }
    }
    v.state.gpr[4] = esp.wrapping_add(16);
    Ok(Next::Ip)
}

// ----- port I/O ---------------------------------------------------------------

fn port_io(v: &mut BtVcpu, p: &mut dyn Platform, i: &Instruction) -> Res<Next> {
    let (port_op, data_op) = if i.mnemonic() == Mnemonic::In {
        (1, 0)
    } else {
        (0, 1)
    };
    let port = if i.op_kind(port_op) == OpKind::Register {
        (v.state.gpr[2] & 0xffff) as u16
    } else {
        i.immediate8() as u16
    };
    let data_reg = i.op_register(data_op);
    let size = data_reg.size() as u8;
    v.stats.io_instructions += 1;
    let cpl = v.sys.cpl;
    let mut cpu = IoCpu {
        gpr: &mut v.state.gpr,
        cpl,
    };
    if i.mnemonic() == Mnemonic::In {
        let val = p.io_in(&mut cpu, port, size);
        // A backdoor reply may have rewritten EAX entirely; only narrow
        // reads merge into the old value.
        if size == 4 {
            v.state.gpr[0] = val;
        } else {
            set_reg(v, data_reg, val);
        }
        Ok(Next::Ip)
    } else {
        let val = reg_value_from(cpu.gpr, data_reg);
        match p.io_out(&mut cpu, port, size, val) {
            Some(status) => Err(Emulated::Exit(status)),
            None => Ok(Next::Ip),
        }
    }
}

fn reg_value_from(gpr: &[u32; 8], r: Register) -> u32 {
    let full = gpr[gpr_index(r)];
    match r.size() {
        4 => full,
        2 => full & 0xffff,
        _ => full & 0xff,
    }
}

fn string_io(v: &mut BtVcpu, p: &mut dyn Platform, i: &Instruction) -> Res<Next> {
    let size = match i.mnemonic() {
        Mnemonic::Insb | Mnemonic::Outsb => 1u8,
        Mnemonic::Insw | Mnemonic::Outsw => 2,
        _ => 4,
    };
    let input = matches!(
        i.mnemonic(),
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd
    );
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    let port = (v.state.gpr[2] & 0xffff) as u16;
    let step = if v.state.eflags & DF != 0 {
        (size as u32).wrapping_neg()
    } else {
        size as u32
    };
    let mut count = if rep { v.state.gpr[1] } else { 1 };
    v.stats.io_instructions += 1;
    if size == 1 && rep && whole_transfer(v, p, port, input) {
        return Ok(Next::Ip);
    }
    while count > 0 {
        if input {
            let cpl = v.sys.cpl;
            let val = p.io_in(
                &mut IoCpu {
                    gpr: &mut v.state.gpr,
                    cpl,
                },
                port,
                size,
            );
            let dst = v.state.seg_base[Seg::Es as usize].wrapping_add(v.state.gpr[7]);
            write_mem(v, dst, &val.to_le_bytes()[..size as usize])?;
            v.state.gpr[7] = v.state.gpr[7].wrapping_add(step);
        } else {
            let seg = seg_of(if i.segment_prefix() == Register::None {
                Register::DS
            } else {
                i.segment_prefix()
            });
            let src = v.state.seg_base[seg as usize].wrapping_add(v.state.gpr[6]);
            let mut b = [0u8; 4];
            read_mem(v, src, &mut b[..size as usize])?;
            v.state.gpr[6] = v.state.gpr[6].wrapping_add(step);
            let cpl = v.sys.cpl;
            if let Some(status) = p.io_out(
                &mut IoCpu {
                    gpr: &mut v.state.gpr,
                    cpl,
                },
                port,
                size,
                u32::from_le_bytes(b),
            ) {
                return Err(Emulated::Exit(status));
            }
        }
        count -= 1;
        if rep {
            v.state.gpr[1] = count;
        }
    }
    Ok(Next::Ip)
}

/// Offers a `rep insb`/`rep outsb` to the platform as one transfer.
fn whole_transfer(v: &mut BtVcpu, p: &mut dyn Platform, port: u16, input: bool) -> bool {
    let mut gpr = v.state.gpr;
    let cpl = v.sys.cpl;
    let handled = p.string_io(
        &mut IoCpu { gpr: &mut gpr, cpl },
        port,
        input,
        &mut LinearMemory { vcpu: v },
    );
    if handled {
        v.state.gpr = gpr;
    }
    handled
}

/// Guest linear memory for devices, translated as the guest MMU would.
struct LinearMemory<'a> {
    vcpu: &'a mut BtVcpu,
}

impl backdoor::GuestMemory for LinearMemory<'_> {
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), backdoor::MemFault> {
        read_mem(self.vcpu, linear, buf).map_err(|_| backdoor::MemFault { linear })
    }

    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), backdoor::MemFault> {
        write_mem(self.vcpu, linear, data).map_err(|_| backdoor::MemFault { linear })
    }
}

// ----- descriptor tables and segments -------------------------------------------

fn load_table(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let a = effective_address(v, i)?;
    let mut b = [0u8; 6];
    read_mem(v, a, &mut b)?;
    let reg = crate::sysregs::TableReg {
        limit: u16::from_le_bytes([b[0], b[1]]),
        base: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
    };
    if i.mnemonic() == Mnemonic::Lgdt {
        v.sys.gdtr = reg;
    } else {
        v.sys.idtr = reg;
    }
    Ok(Next::Ip)
}

fn store_table(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let reg = if i.mnemonic() == Mnemonic::Sgdt {
        v.sys.gdtr
    } else {
        v.sys.idtr
    };
    let a = effective_address(v, i)?;
    let mut b = [0u8; 6];
    b[..2].copy_from_slice(&reg.limit.to_le_bytes());
    b[2..].copy_from_slice(&reg.base.to_le_bytes());
    write_mem(v, a, &b)?;
    Ok(Next::Ip)
}

/// Loads segment register `seg` with `sel` from the GDT.
fn load_segment(v: &mut BtVcpu, seg: Seg, sel: u16) -> Res<()> {
    if sel & !3 == 0 {
        if matches!(seg, Seg::Ss | Seg::Cs) {
            return Err(Emulated::Exception(13));
        }
        v.state.seg_sel[seg as usize] = sel;
        v.state.seg_base[seg as usize] = 0;
        v.sys.seg[seg as usize] = SegCache::default();
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(Emulated::Died(format!(
            "segment selector {sel:#06x} refers to an LDT, which is not supported yet"
        )));
    }
    let index = u32::from(sel & !7);
    if index + 7 > u32::from(v.sys.gdtr.limit) {
        return Err(Emulated::Exception(13));
    }
    let mut b = [0u8; 8];
    let at = v.sys.gdtr.base.wrapping_add(index);
    read_mem(v, at, &mut b)?;
    let d = Descriptor::parse(u64::from_le_bytes(b));
    if !d.is_code_or_data() {
        return Err(Emulated::Exception(13));
    }
    if !d.present() {
        return Err(Emulated::Exception(if seg == Seg::Ss { 12 } else { 11 }));
    }
    if seg == Seg::Cs && (!d.is_code() || d.attr & 0x4000 == 0) {
        return Err(Emulated::Died(format!(
            "CS selector {sel:#06x} is not a 32-bit code segment; 16-bit code is not supported"
        )));
    }
    v.state.seg_sel[seg as usize] = sel;
    v.state.seg_base[seg as usize] = d.base;
    v.sys.seg[seg as usize] = SegCache {
        limit: d.limit,
        attr: d.attr,
    };
    Ok(())
}

fn mov_sreg(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    if i.op0_kind() == OpKind::Register && i.op0_register().is_segment_register() {
        let seg = seg_of(i.op0_register());
        if seg == Seg::Cs {
            return Err(Emulated::Exception(6));
        }
        let sel = read_operand(v, i, 1, 2)? as u16;
        load_segment(v, seg, sel)?;
        return Ok(Next::IpModeChanged);
    }
    let sel = u32::from(v.state.seg_sel[seg_of(i.op1_register()) as usize]);
    let size = if i.op0_kind() == OpKind::Register {
        i.op0_register().size()
    } else {
        2
    };
    write_operand(v, i, 0, sel, size)?;
    Ok(Next::Ip)
}

fn pop_sreg(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let esp = v.state.gpr[4];
    let top = v.state.seg_base[Seg::Ss as usize].wrapping_add(esp);
    let sel = read_u32(v, top)? as u16;
    load_segment(v, seg_of(i.op0_register()), sel)?;
    v.state.gpr[4] = esp.wrapping_add(4);
    Ok(Next::IpModeChanged)
}

fn far_jmp(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let (sel, target) = match i.code() {
        Code::Jmp_ptr1632 => (i.far_branch_selector(), i.far_branch32()),
        Code::Jmp_m1632 => {
            let a = effective_address(v, i)?;
            let mut b = [0u8; 6];
            read_mem(v, a, &mut b)?;
            (
                u16::from_le_bytes([b[4], b[5]]),
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            )
        }
        _ => return Err(unsupported(i)),
    };
    load_segment(v, Seg::Cs, sel)?;
    v.state.eip = v.state.seg_base[Seg::Cs as usize].wrapping_add(target);
    Ok(Next::Jumped)
}

fn load_far_pointer(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    if i.op0_register().size() != 4 {
        return Err(unsupported(i));
    }
    let a = effective_address(v, i)?;
    let mut b = [0u8; 6];
    read_mem(v, a, &mut b)?;
    let seg = match i.mnemonic() {
        Mnemonic::Lds => Seg::Ds,
        Mnemonic::Les => Seg::Es,
        Mnemonic::Lfs => Seg::Fs,
        Mnemonic::Lgs => Seg::Gs,
        _ => Seg::Ss,
    };
    load_segment(v, seg, u16::from_le_bytes([b[4], b[5]]))?;
    set_reg(
        v,
        i.op0_register(),
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    );
    Ok(Next::IpModeChanged)
}

// ----- control registers --------------------------------------------------------

fn is_cr_or_dr(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| {
        i.op_kind(n) == OpKind::Register && (i.op_register(n).is_cr() || i.op_register(n).is_dr())
    })
}

fn control_register(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let (dst, src) = (i.op0_register(), i.op1_register());
    if src.is_cr() || src.is_dr() {
        let val = if src.is_cr() {
            read_cr(v, src)?
        } else {
            v.sys.dr[src.number()]
        };
        set_reg(v, dst, val);
        return Ok(Next::Ip);
    }
    let val = reg_value(v, src);
    if dst.is_dr() {
        v.sys.dr[dst.number()] = val;
        return Ok(Next::Ip);
    }
    match dst {
        Register::CR0 => {
            if val & CR0_PE == 0 {
                return Err(Emulated::Died(
                    "the guest left protected mode; real mode is not supported".into(),
                ));
            }
            if val & CR0_PG != 0 && v.sys.cr4 & CR4_PAE != 0 {
                return Err(Emulated::Died(
                    "the guest enabled PAE paging, which is not supported yet".into(),
                ));
            }
            let old = v.sys.cr0;
            v.sys.cr0 = val | 0x10;
            if (old ^ v.sys.cr0) & (CR0_PG | CR0_WP) != 0 {
                return Ok(Next::IpAddressSpace);
            }
        }
        Register::CR2 => v.sys.cr2 = val,
        Register::CR3 => {
            v.sys.cr3 = val;
            if v.paging() {
                return Ok(Next::IpAddressSpace);
            }
        }
        Register::CR4 => {
            if v.paging() && val & CR4_PAE != 0 {
                return Err(Emulated::Died(
                    "the guest enabled PAE paging, which is not supported yet".into(),
                ));
            }
            let old = v.sys.cr4;
            v.sys.cr4 = val;
            if v.paging() && (old ^ val) & CR4_PAGING_BITS != 0 {
                return Ok(Next::IpAddressSpace);
            }
        }
        _ => return Err(Emulated::Exception(6)),
    }
    Ok(Next::IpModeChanged)
}

/// The EFER MSR.
const MSR_EFER: u32 = 0xc000_0080;
/// EFER.LME: long mode enable.
const EFER_LME: u32 = 1 << 8;

/// CR0.WP.
const CR0_WP: u32 = 1 << 16;
/// CR4.PAE.
const CR4_PAE: u32 = 0x20;
/// CR4 bits that change how the page tables are read: PSE, PAE, PGE.
const CR4_PAGING_BITS: u32 = 0x10 | 0x20 | 0x80;

fn read_cr(v: &BtVcpu, r: Register) -> Res<u32> {
    Ok(match r {
        Register::CR0 => v.sys.cr0,
        Register::CR2 => v.sys.cr2,
        Register::CR3 => v.sys.cr3,
        Register::CR4 => v.sys.cr4,
        _ => return Err(Emulated::Exception(6)),
    })
}

// ----- BCD ------------------------------------------------------------------------

fn parity(b: u8) -> u32 {
    if b.count_ones().is_multiple_of(2) {
        PF
    } else {
        0
    }
}

fn szp(b: u8) -> u32 {
    (if b == 0 { ZF } else { 0 }) | (if b & 0x80 != 0 { SF } else { 0 }) | parity(b)
}

fn bcd(v: &mut BtVcpu, i: &Instruction) -> Res<Next> {
    let flags = v.state.eflags;
    let eax = v.state.gpr[0];
    let (al, ah) = ((eax & 0xff) as u8, ((eax >> 8) & 0xff) as u8);
    let (cf, af) = (flags & CF != 0, flags & AF != 0);
    let (new_ax, new_flags): (u16, u32) = match i.mnemonic() {
        Mnemonic::Daa | Mnemonic::Das => {
            let sub = i.mnemonic() == Mnemonic::Das;
            let (mut a, mut c, mut af2) = (al, false, false);
            if (al & 0xf) > 9 || af {
                let (r, carry) = if sub {
                    al.overflowing_sub(6)
                } else {
                    al.overflowing_add(6)
                };
                a = r;
                c = cf || carry;
                af2 = true;
            }
            if al > 0x99 || cf {
                a = if sub {
                    a.wrapping_sub(0x60)
                } else {
                    a.wrapping_add(0x60)
                };
                c = true;
            }
            (
                u16::from(ah) << 8 | u16::from(a),
                szp(a) | if c { CF } else { 0 } | if af2 { AF } else { 0 },
            )
        }
        Mnemonic::Aaa | Mnemonic::Aas => {
            let sub = i.mnemonic() == Mnemonic::Aas;
            if (al & 0xf) > 9 || af {
                let ax = (u16::from(ah) << 8) | u16::from(al);
                let ax = if sub {
                    ax.wrapping_sub(6).wrapping_sub(0x100)
                } else {
                    ax.wrapping_add(0x106)
                };
                (ax & 0xff0f, AF | CF | szp((ax & 0xff) as u8 & 0x0f) & PF)
            } else {
                (
                    (u16::from(ah) << 8) | u16::from(al & 0xf),
                    szp(al & 0x0f) & PF,
                )
            }
        }
        Mnemonic::Aam => {
            let base = i.immediate8();
            if base == 0 {
                return Err(Emulated::Exception(0));
            }
            let (q, r) = (al / base, al % base);
            ((u16::from(q) << 8) | u16::from(r), szp(r))
        }
        _ => {
            let base = i.immediate8();
            let r = al.wrapping_add(ah.wrapping_mul(base));
            (u16::from(r), szp(r))
        }
    };
    v.state.gpr[0] = (eax & 0xffff_0000) | u32::from(new_ax);
    let defined = CF | PF | AF | ZF | SF | OF;
    v.state.eflags = (flags & !(defined & LIVE_FLAGS)) | new_flags | 2;
    Ok(Next::Ip)
}
