//! A [`CpuContext`] for unit tests of the system model: registers, system
//! state and 1 MiB of memory where linear = physical, with ranges that
//! page-fault on demand and helpers to build GDT/IDT/TSS entries.

use super::context::{AccessKind, CpuContext, Privilege};
use super::descriptor::Descriptor;
use super::exception::Exception;
use super::flags::Eflags;
use super::state::{Seg, SegmentRegister, SystemState, TableRegister};
use std::ops::Range;

/// Memory size of a test CPU.
pub const MEM_SIZE: usize = 1 << 20;
/// Where [`TestCpu::new`] puts the GDT.
pub const GDT: u32 = 0x1000;
/// Where it puts the IDT.
pub const IDT: u32 = 0x2000;

/// A CPU with flat memory, in the Multiboot entry state, with an empty
/// GDT of 32 entries at [`GDT`] and an empty IDT of 256 at [`IDT`].
pub struct TestCpu {
    /// EAX..EDI.
    pub gpr: [u32; 8],
    /// EIP.
    pub eip: u32,
    /// EFLAGS.
    pub eflags: Eflags,
    /// System state.
    pub sys: SystemState,
    /// Memory, linear = physical.
    pub mem: Vec<u8>,
    /// Linear ranges that are not present (a page fault on access).
    pub unmapped: Vec<Range<u32>>,
    /// Linear ranges that are read-only (a page fault on write).
    pub read_only: Vec<Range<u32>>,
    /// The host TSC the next read returns.
    pub tsc: u64,
}

impl Default for TestCpu {
    fn default() -> Self {
        TestCpu::new()
    }
}

impl TestCpu {
    /// A fresh CPU (see the type's documentation).
    pub fn new() -> TestCpu {
        let mut sys = SystemState::multiboot_entry();
        sys.gdtr = TableRegister {
            base: GDT,
            limit: 32 * 8 - 1,
        };
        sys.idtr = TableRegister {
            base: IDT,
            limit: 256 * 8 - 1,
        };
        TestCpu {
            gpr: [0; 8],
            eip: 0x10_0000,
            eflags: Eflags::FIXED,
            sys,
            mem: vec![0; MEM_SIZE],
            unmapped: Vec::new(),
            read_only: Vec::new(),
            tsc: 0,
        }
    }

    /// Writes GDT entry `index`.
    pub fn set_gdt(&mut self, index: u16, d: Descriptor) {
        self.poke(GDT + 8 * u32::from(index), &d.0.to_le_bytes());
    }

    /// GDT entry `index` as it is now in memory.
    pub fn gdt(&self, index: u16) -> Descriptor {
        Descriptor(u64::from_le_bytes(
            self.peek(GDT + 8 * u32::from(index), 8)
                .try_into()
                .expect("8 bytes"),
        ))
    }

    /// Writes IDT entry `vector`.
    pub fn set_idt(&mut self, vector: u8, d: Descriptor) {
        self.poke(IDT + 8 * u32::from(vector), &d.0.to_le_bytes());
    }

    /// Writes bytes without any check.
    pub fn poke(&mut self, at: u32, bytes: &[u8]) {
        self.mem[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// Reads bytes without any check.
    pub fn peek(&self, at: u32, len: usize) -> &[u8] {
        &self.mem[at as usize..at as usize + len]
    }

    /// Reads a u32 without any check.
    pub fn peek_u32(&self, at: u32) -> u32 {
        u32::from_le_bytes(self.peek(at, 4).try_into().expect("4 bytes"))
    }

    /// Loads a segment register's cache directly (test setup).
    pub fn set_segment(&mut self, seg: Seg, reg: SegmentRegister) {
        self.sys.seg[seg as usize] = reg;
    }

    fn fault_at(
        &self,
        lin: u32,
        len: usize,
        write: bool,
        privilege: Privilege,
    ) -> Option<Exception> {
        let user = privilege == Privilege::Current && self.sys.cpl == 3;
        let error =
            |present: bool| u32::from(present) | u32::from(write) << 1 | u32::from(user) << 2;
        for n in 0..len as u32 {
            let a = lin.wrapping_add(n);
            if a as usize >= self.mem.len() || self.unmapped.iter().any(|r| r.contains(&a)) {
                return Some(Exception::PageFault {
                    addr: a,
                    error: error(false),
                });
            }
            if write && self.read_only.iter().any(|r| r.contains(&a)) {
                return Some(Exception::PageFault {
                    addr: a,
                    error: error(true),
                });
            }
        }
        None
    }
}

/// A code or data segment descriptor: `access` is the access byte (P, DPL,
/// S, type), `flags` the G/D/B nibble (e.g. 0xc for 4 KiB granularity and
/// 32-bit), `limit` the raw 20-bit limit.
pub fn segment_descriptor(base: u32, limit: u32, access: u8, flags: u8) -> Descriptor {
    let b = u64::from(base);
    let l = u64::from(limit);
    Descriptor(
        (l & 0xffff)
            | (b & 0xff_ffff) << 16
            | u64::from(access) << 40
            | (l >> 16 & 0xf) << 48
            | u64::from(flags & 0xf) << 52
            | (b >> 24) << 56,
    )
}

/// A gate descriptor: `access` is P, DPL and the system type.
pub fn gate_descriptor(selector: u16, offset: u32, access: u8, params: u8) -> Descriptor {
    let o = u64::from(offset);
    Descriptor(
        (o & 0xffff)
            | u64::from(selector) << 16
            | u64::from(params & 0x1f) << 32
            | u64::from(access) << 40
            | (o >> 16) << 48,
    )
}

impl CpuContext for TestCpu {
    fn gpr(&self, r: usize) -> u32 {
        self.gpr[r]
    }

    fn set_gpr(&mut self, r: usize, value: u32) {
        self.gpr[r] = value;
    }

    fn eip(&self) -> u32 {
        self.eip
    }

    fn set_eip(&mut self, value: u32) {
        self.eip = value;
    }

    fn eflags(&self) -> Eflags {
        self.eflags
    }

    fn set_eflags(&mut self, value: Eflags) {
        self.eflags = value | Eflags::FIXED;
    }

    fn sys(&self) -> &SystemState {
        &self.sys
    }

    fn sys_mut(&mut self) -> &mut SystemState {
        &mut self.sys
    }

    fn read_linear(
        &mut self,
        lin: u32,
        buf: &mut [u8],
        _kind: AccessKind,
        privilege: Privilege,
    ) -> Result<(), Exception> {
        if let Some(e) = self.fault_at(lin, buf.len(), false, privilege) {
            return Err(e);
        }
        for (n, b) in buf.iter_mut().enumerate() {
            *b = self.mem[lin.wrapping_add(n as u32) as usize];
        }
        Ok(())
    }

    fn write_linear(
        &mut self,
        lin: u32,
        data: &[u8],
        privilege: Privilege,
    ) -> Result<(), Exception> {
        if let Some(e) = self.fault_at(lin, data.len(), true, privilege) {
            return Err(e);
        }
        for (n, b) in data.iter().enumerate() {
            self.mem[lin.wrapping_add(n as u32) as usize] = *b;
        }
        Ok(())
    }

    fn host_tsc(&mut self) -> u64 {
        self.tsc
    }
}

#[cfg(test)]
mod tests {
    use super::super::context::{pop, push, seg_read, ESP};
    use super::*;

    #[test]
    fn descriptor_builders_round_trip() {
        let d = segment_descriptor(0x1234_5678, 0xabcde, 0x92, 0x4);
        assert_eq!((d.base(), d.limit()), (0x1234_5678, 0xabcde));
        assert_eq!(d.attr(), 0x4092);
        let g = gate_descriptor(0x08, 0xdead_beef, 0x8e, 0);
        assert_eq!((g.gate_selector().0, g.gate_offset()), (0x08, 0xdead_beef));
    }

    #[test]
    fn push_and_pop_use_ss_and_esp() {
        let mut cpu = TestCpu::new();
        cpu.gpr[ESP] = 0x8000;
        push(&mut cpu, 0x1122_3344, 4).unwrap();
        assert_eq!((cpu.gpr[ESP], cpu.peek_u32(0x7ffc)), (0x7ffc, 0x1122_3344));
        assert_eq!(pop(&mut cpu, 2), Ok(0x3344));
        assert_eq!(cpu.gpr[ESP], 0x7ffe);
    }

    #[test]
    fn sixteen_bit_stack_wraps_sp_and_keeps_the_top_of_esp() {
        let mut cpu = TestCpu::new();
        let mut ss = cpu.sys.segment(Seg::Ss);
        ss.attr &= !0x4000;
        ss.limit = 0xffff;
        cpu.set_segment(Seg::Ss, ss);
        cpu.gpr[ESP] = 0xabcd_0000;
        push(&mut cpu, 0x55aa, 2).unwrap();
        assert_eq!(cpu.gpr[ESP], 0xabcd_fffe);
        assert_eq!(cpu.peek(0xfffe, 2), &[0xaa, 0x55]);
    }

    #[test]
    fn unmapped_ranges_fault_with_the_address_and_error_code() {
        let mut cpu = TestCpu::new();
        cpu.unmapped.push(0x5000..0x6000);
        cpu.sys.cpl = 3;
        let mut b = [0u8; 4];
        assert_eq!(
            seg_read(&mut cpu, Seg::Ds, 0x4ffe, &mut b),
            Err(Exception::PageFault {
                addr: 0x5000,
                error: 4
            })
        );
    }
}
