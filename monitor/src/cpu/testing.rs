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

/// A system descriptor (TSS, LDT), byte-granular: `access` is P, DPL and
/// the type (0x89 an available 32-bit TSS, 0x81 an available 16-bit one,
/// 0x82 an LDT).
pub fn system_descriptor(base: u32, limit: u32, access: u8) -> Descriptor {
    segment_descriptor(base, limit, access, 0)
}

impl TestCpu {
    /// Writes a u16 without any check.
    pub fn poke_u16(&mut self, at: u32, value: u16) {
        self.poke(at, &value.to_le_bytes());
    }

    /// Writes a u32 without any check.
    pub fn poke_u32(&mut self, at: u32, value: u32) {
        self.poke(at, &value.to_le_bytes());
    }

    /// Reads a u16 without any check.
    pub fn peek_u16(&self, at: u32) -> u16 {
        u16::from_le_bytes(self.peek(at, 2).try_into().expect("2 bytes"))
    }

    /// Writes `state` into a 32-bit TSS at `base`, at the offsets of SDM
    /// vol. 3, figure 7-2 (written out here, independently of `task`).
    pub fn write_tss32(&mut self, base: u32, state: &super::task::TaskState) {
        self.poke_u32(base + 0x1c, state.cr3);
        self.poke_u32(base + 0x20, state.eip);
        self.poke_u32(base + 0x24, state.eflags);
        for (r, value) in state.gpr.iter().enumerate() {
            self.poke_u32(base + 0x28 + 4 * r as u32, *value);
        }
        for (s, sel) in state.seg.iter().enumerate() {
            self.poke_u16(base + 0x48 + 4 * s as u32, *sel);
        }
        self.poke_u16(base + 0x60, state.ldt);
        self.poke_u16(base + 0x64, u16::from(state.trap));
    }

    /// The state in the 32-bit TSS at `base` (figure 7-2).
    pub fn tss32(&self, base: u32) -> super::task::TaskState {
        super::task::TaskState {
            cr3: self.peek_u32(base + 0x1c),
            eip: self.peek_u32(base + 0x20),
            eflags: self.peek_u32(base + 0x24),
            gpr: std::array::from_fn(|r| self.peek_u32(base + 0x28 + 4 * r as u32)),
            seg: std::array::from_fn(|s| self.peek_u16(base + 0x48 + 4 * s as u32)),
            ldt: self.peek_u16(base + 0x60),
            trap: self.peek_u16(base + 0x64) & 1 != 0,
        }
    }

    /// Writes `state` into a 16-bit TSS at `base` (figure 7-11; FS, GS,
    /// CR3 and T have no place in it).
    pub fn write_tss16(&mut self, base: u32, state: &super::task::TaskState) {
        self.poke_u16(base + 0x0e, state.eip as u16);
        self.poke_u16(base + 0x10, state.eflags as u16);
        for (r, value) in state.gpr.iter().enumerate() {
            self.poke_u16(base + 0x12 + 2 * r as u32, *value as u16);
        }
        for (s, sel) in state.seg.iter().take(4).enumerate() {
            self.poke_u16(base + 0x22 + 2 * s as u32, *sel);
        }
        self.poke_u16(base + 0x2a, state.ldt);
    }

    /// Loads a segment register from GDT/LDT entry `selector` as a segment
    /// load would (cache from the descriptor, accessed), without checks.
    pub fn load(&mut self, seg: Seg, selector: u16) {
        let d = self.gdt(selector >> 3).with_accessed();
        self.set_segment(
            seg,
            SegmentRegister::loaded(super::descriptor::Selector(selector), d),
        );
    }

    /// The `n` dwords from SS:ESP up (a flat stack).
    pub fn stack_dwords(&self, n: u32) -> Vec<u32> {
        let esp = self.gpr[super::context::ESP];
        (0..n).map(|i| self.peek_u32(esp + 4 * i)).collect()
    }

    /// The `n` words from SS:SP up (a stack based at 0).
    pub fn stack_words(&self, n: u32) -> Vec<u16> {
        let sp = self.gpr[super::context::ESP] & 0xffff;
        (0..n).map(|i| self.peek_u16(sp + 2 * i)).collect()
    }

    /// A protected-mode machine with rings and tasks; see [`world`].
    pub fn with_tasks() -> TestCpu {
        use world::*;
        let mut cpu = TestCpu::new();
        let flat = |access| segment_descriptor(0, 0xfffff, access, 0xc);
        cpu.set_gdt(1, flat(0x9a));
        cpu.set_gdt(2, flat(0x92));
        cpu.set_gdt(3, flat(0xfa));
        cpu.set_gdt(4, flat(0xf2));
        cpu.set_gdt(5, flat(0x9e));
        cpu.set_gdt(6, system_descriptor(TSS_A_BASE, 0x67, 0x8b));
        cpu.set_gdt(7, system_descriptor(TSS_B_BASE, 0x67, 0x89));
        cpu.set_gdt(8, segment_descriptor(0, 0xffff, 0x9a, 0));
        cpu.set_gdt(9, segment_descriptor(0, 0xffff, 0x92, 0));
        cpu.set_gdt(10, flat(0xba));
        cpu.set_gdt(11, flat(0xb2));
        cpu.set_gdt(12, flat(0x1a));
        cpu.set_gdt(13, flat(0x12));
        cpu.set_gdt(14, system_descriptor(TSS16_BASE, 0x2b, 0x81));
        cpu.set_gdt(15, system_descriptor(LDT_BASE, 0x17, 0x82));
        cpu.set_gdt(16, segment_descriptor(0, 0xfff, 0x9a, 0x4));
        cpu.set_gdt(17, segment_descriptor(0, 0x6fff, 0x92, 0x4));
        cpu.set_gdt(18, system_descriptor(TSS_DF_BASE, 0x67, 0x89));
        cpu.set_gdt(19, flat(0x90));
        cpu.poke_u32(TSS_A_BASE + 4, STACK0);
        cpu.poke_u16(TSS_A_BASE + 8, DATA0);
        cpu.poke_u32(TSS_A_BASE + 12, STACK1);
        cpu.poke_u16(TSS_A_BASE + 16, DATA1);
        cpu.sys.tr = SegmentRegister::loaded(super::descriptor::Selector(TSS_A), cpu.gdt(6));
        for vector in 0..=LAST_HANDLED {
            cpu.set_idt(vector, gate_descriptor(CODE0, handler(vector), 0x8e, 0));
        }
        cpu.set_idt(SYSCALL, gate_descriptor(CODE0, handler(SYSCALL), 0xef, 0));
        cpu.gpr[super::context::ESP] = RING0_ESP;
        cpu
    }

    /// Moves a [`TestCpu::with_tasks`] machine to ring 3: CS, SS, DS, ES,
    /// FS and GS the DPL 3 flat segments, ESP [`world::STACK3`].
    pub fn enter_ring3(&mut self) {
        use world::*;
        self.load(Seg::Cs, CODE3);
        for seg in [Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs] {
            self.load(seg, DATA3);
        }
        self.sys.cpl = 3;
        self.gpr[super::context::ESP] = STACK3;
    }
}

/// The machine of [`TestCpu::with_tasks`]: its GDT selectors, TSSs, stacks
/// and handlers. It runs at CPL 0 in task A (TR = [`TSS_A`], busy) with
/// ESP [`RING0_ESP`]; task A's TSS gives SS0:ESP0 = [`DATA0`]:[`STACK0`]
/// and SS1:ESP1 = [`DATA1`]:[`STACK1`]. IDT vectors 0 to
/// [`LAST_HANDLED`] are 32-bit DPL 0 interrupt gates to [`CODE0`]:
/// [`handler`]`(vector)`, vector [`SYSCALL`] a DPL 3 trap gate.
pub mod world {
    /// GDT 1: flat 32-bit code, DPL 0.
    pub const CODE0: u16 = 0x08;
    /// GDT 2: flat writable data, DPL 0.
    pub const DATA0: u16 = 0x10;
    /// GDT 3: flat 32-bit code, DPL 3 (RPL 3).
    pub const CODE3: u16 = 0x1b;
    /// GDT 4: flat writable data, DPL 3 (RPL 3).
    pub const DATA3: u16 = 0x23;
    /// GDT 5: flat conforming code, DPL 0.
    pub const CONFORMING0: u16 = 0x28;
    /// GDT 6: task A's 32-bit TSS (busy: the running task).
    pub const TSS_A: u16 = 0x30;
    /// GDT 7: task B's 32-bit TSS (available).
    pub const TSS_B: u16 = 0x38;
    /// GDT 8: 16-bit code, limit 0xffff, DPL 0.
    pub const CODE16: u16 = 0x40;
    /// GDT 9: 16-bit writable data, limit 0xffff, DPL 0.
    pub const DATA16: u16 = 0x48;
    /// GDT 10: flat 32-bit code, DPL 1 (RPL 1).
    pub const CODE1: u16 = 0x51;
    /// GDT 11: flat writable data, DPL 1 (RPL 1).
    pub const DATA1: u16 = 0x59;
    /// GDT 12: flat code, DPL 0, not present.
    pub const ABSENT_CODE: u16 = 0x60;
    /// GDT 13: flat writable data, DPL 0, not present.
    pub const ABSENT_DATA: u16 = 0x68;
    /// GDT 14: a 16-bit TSS (available).
    pub const TSS16: u16 = 0x70;
    /// GDT 15: an LDT of 3 entries.
    pub const LDT: u16 = 0x78;
    /// GDT 16: 32-bit code, DPL 0, limit 0xfff.
    pub const SHORT_CODE: u16 = 0x80;
    /// GDT 17: 32-bit writable data, DPL 0, limit 0x6fff.
    pub const SHORT_DATA: u16 = 0x88;
    /// GDT 18: the double-fault task's 32-bit TSS (available).
    pub const TSS_DF: u16 = 0x90;
    /// GDT 19: flat read-only data, DPL 0.
    pub const READ_ONLY: u16 = 0x98;
    /// Task A's TSS.
    pub const TSS_A_BASE: u32 = 0x3000;
    /// Task B's TSS.
    pub const TSS_B_BASE: u32 = 0x3100;
    /// The 16-bit TSS.
    pub const TSS16_BASE: u32 = 0x3200;
    /// The double-fault task's TSS.
    pub const TSS_DF_BASE: u32 = 0x3300;
    /// The LDT.
    pub const LDT_BASE: u32 = 0x3800;
    /// ESP0 in task A's TSS.
    pub const STACK0: u32 = 0x9000;
    /// ESP1 in task A's TSS.
    pub const STACK1: u32 = 0xa000;
    /// ESP in ring 3 after [`super::TestCpu::enter_ring3`].
    pub const STACK3: u32 = 0x8000;
    /// ESP at the start, in ring 0.
    pub const RING0_ESP: u32 = 0x7000;
    /// The last vector of the DPL 0 interrupt gates.
    pub const LAST_HANDLED: u8 = 0x30;
    /// The DPL 3 trap gate.
    pub const SYSCALL: u8 = 0x80;

    /// The handler address of `vector`.
    pub fn handler(vector: u8) -> u32 {
        0x4_0000 + 0x10 * u32::from(vector)
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
