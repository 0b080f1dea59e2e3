//! Single-stepping (EFLAGS.TF) and instruction breakpoints (DR0-DR3 with
//! DR7), as the SDM gives them (vol. 3, 17.2, 17.3).
//!
//! While either is active the vCPU runs one guest instruction at a time
//! (uncached one-instruction units or the monitor), so every instruction
//! boundary is seen:
//! - before an instruction, an enabled execution breakpoint whose address
//!   is the instruction's linear address raises #DB as a fault (DR6.Bn),
//!   unless EFLAGS.RF suppresses it for that one instruction;
//! - after an instruction that began with TF set and completed without
//!   delivering an event, #DB is raised as a trap (DR6.BS);
//! - after an instruction that completed and accessed memory overlapping an
//!   enabled data breakpoint (R/W = 01 writes, 11 reads or writes), #DB is
//!   raised as a trap (DR6.Bn). The accesses are those iced-x86 reports for
//!   the instruction with the registers it started with; a REP string
//!   instruction reports its whole range, after its last iteration (real
//!   processors stop after the iteration that hit);
//! - after an IN, OUT, INS or OUTS whose ports overlap an enabled I/O
//!   breakpoint (R/W = 10, with CR4.DE), #DB is raised as a trap (DR6.Bn);
//!   this is checked where every port access completes, with no stepping.
//!
//! Invariant: nothing here runs when neither TF nor an execution
//! breakpoint is active, so ordinary code pays nothing.

use super::{BtCore, Event};
use crate::cpu::flags::{Dr6, Dr7, Eflags};
use crate::cpu::interrupt::Event as CpuEvent;
use crate::cpu::{CpuContext, Exception, Seg};

impl BtCore {
    /// Whether the vCPU must run one instruction at a time.
    pub(super) fn debug_stepping(&self) -> bool {
        self.eflags().contains(Eflags::TF)
            || self.execution_breakpoints() != 0
            || self.data_breakpoints() != 0
    }

    /// Whether any I/O breakpoint is enabled (R/W = 10 with CR4.DE): then
    /// every IN/OUT must reach the monitor.
    pub(super) fn io_breakpoints_enabled(&self) -> bool {
        let dr7 = Dr7(self.sys.dr[7]);
        self.sys.cr4.contains(crate::cpu::Cr4::DE)
            && (0..4).any(|n| dr7.enabled(n) && dr7.condition(n) == 2)
    }

    /// The enabled I/O breakpoints (R/W = 10 with CR4.DE) covering any of
    /// the `size` ports from `port`, as a bit mask.
    pub(super) fn io_breakpoints_hit(&self, port: u16, size: u8) -> u8 {
        if !self.sys.cr4.contains(crate::cpu::Cr4::DE) {
            return 0;
        }
        let dr7 = Dr7(self.sys.dr[7]);
        (0..4)
            .filter(|&n| dr7.enabled(n) && dr7.condition(n) == 2)
            .filter(|&n| {
                let len = dr7.len(n);
                let start = (self.sys.dr[n] & 0xffff) & !(len - 1);
                overlaps(u32::from(port), u32::from(size), start, len)
            })
            .fold(0, |mask, n| mask | 1 << n)
    }

    /// The enabled data breakpoints (R/W = 01 or 11), as a bit mask.
    fn data_breakpoints(&self) -> u8 {
        let dr7 = Dr7(self.sys.dr[7]);
        (0..4)
            .filter(|&n| dr7.enabled(n) && matches!(dr7.condition(n), 1 | 3))
            .fold(0, |mask, n| mask | 1 << n)
    }

    /// The data breakpoints `accesses` (linear address, length, write)
    /// hit, as a bit mask.
    fn data_breakpoints_hit(&self, accesses: &[(u32, u32, bool)]) -> u8 {
        let dr7 = Dr7(self.sys.dr[7]);
        let enabled = self.data_breakpoints();
        (0..4)
            .filter(|&n| enabled & (1 << n) != 0)
            .filter(|&n| {
                let len = dr7.len(n);
                let start = self.sys.dr[n] & !(len - 1);
                let writes_only = dr7.condition(n) == 1;
                accesses.iter().any(|&(at, size, write)| {
                    (write || !writes_only) && overlaps(at, size, start, len)
                })
            })
            .fold(0, |mask, n| mask | 1 << n)
    }

    /// The linear accesses (address, length, write) of the instruction at
    /// EIP with the current registers.
    fn memory_accesses(&mut self) -> Vec<(u32, u32, bool)> {
        let Ok(insn) = super::exec::fetch(self) else {
            return Vec::new();
        };
        let mut factory = iced_x86::InstructionInfoFactory::new();
        let info = factory.info(&insn);
        let value = |r: iced_x86::Register, _: usize, _: usize| -> Option<u64> {
            Some(match Seg::from_iced(r) {
                Some(seg) => u64::from(self.sys.segment(seg).base),
                None if r.is_gpr() => u64::from(gpr_value(&self.state.gpr, r)),
                None => 0,
            })
        };
        let rep = u64::from(if insn.has_rep_prefix() || insn.has_repne_prefix() {
            self.state.gpr[1].max(1)
        } else {
            1
        });
        info.used_memory()
            .iter()
            .filter(|m| m.access() != iced_x86::OpAccess::NoMemAccess)
            .filter_map(|m| {
                let at = m.virtual_address(0, value)? as u32;
                let size = m.memory_size().size() as u64;
                let write = matches!(
                    m.access(),
                    iced_x86::OpAccess::Write
                        | iced_x86::OpAccess::CondWrite
                        | iced_x86::OpAccess::ReadWrite
                        | iced_x86::OpAccess::ReadCondWrite
                );
                let len = if insn.is_string_instruction() {
                    size * rep
                } else {
                    size
                };
                Some((at, len.min(u64::from(u32::MAX)) as u32, write))
            })
            .collect()
    }

    /// The enabled execution breakpoints (DR7 enable bits with R/W = 00),
    /// as a bit mask of DR0-DR3.
    fn execution_breakpoints(&self) -> u8 {
        let dr7 = Dr7(self.sys.dr[7]);
        (0..4)
            .filter(|&n| dr7.enabled(n) && dr7.condition(n) == 0)
            .fold(0, |mask, n| mask | 1 << n)
    }

    /// The breakpoints whose address is the linear address of EIP.
    fn breakpoints_hit(&self) -> u8 {
        let lin = self.sys.segment(Seg::Cs).base.wrapping_add(self.state.eip);
        let enabled = self.execution_breakpoints();
        (0..4)
            .filter(|&n| enabled & (1 << n) != 0 && self.sys.dr[n] == lin)
            .fold(0, |mask, n| mask | 1 << n)
    }

    /// Runs one instruction with the debug checks around it.
    pub(super) fn debug_step(&mut self) -> Event {
        let flags = self.eflags();
        if flags.contains(Eflags::RF) {
            // RF suppresses instruction breakpoints for this instruction.
            self.set_eflags(flags - Eflags::RF);
        } else {
            let hit = self.breakpoints_hit();
            if hit != 0 {
                self.set_dr6(u32::from(hit));
                return self.raise(Exception::Debug.into());
            }
        }
        let trap = flags.contains(Eflags::TF);
        let watched = if self.data_breakpoints() != 0 {
            self.memory_accesses()
        } else {
            Vec::new()
        };
        let delivered = self.deliveries;
        let event = self.run_one_instruction();
        let completed = self.deliveries == delivered;
        let data_hits = if completed {
            self.data_breakpoints_hit(&watched)
        } else {
            0
        };
        match event {
            Event::Continue if completed && (trap || data_hits != 0) => {
                self.debug_trap(trap, data_hits)
            }
            Event::Io if trap => {
                self.trap_after_io = true;
                Event::Io
            }
            other => other,
        }
    }

    /// The #DB trap after a completed instruction: DR6.BS for a single
    /// step, DR6.Bn for the data breakpoints hit.
    pub(super) fn debug_trap(&mut self, single_step: bool, data_hits: u8) -> Event {
        let mut causes = u32::from(data_hits);
        if single_step {
            causes |= Dr6::BS.bits();
        }
        self.set_dr6(causes);
        let eip = self.state.eip;
        self.deliver(CpuEvent::Exception(Exception::Debug), eip)
    }

    /// Runs the instruction at EIP alone.
    fn run_one_instruction(&mut self) -> Event {
        let id = match self.translation_for(self.state.eip, 1) {
            Ok(id) => id,
            Err(event) => return event,
        };
        let entry = self.cache.exec_addr(self.cache.get(id).code_offset);
        self.run_translation(entry);
        self.handle_exit()
    }

    /// Records debug-exception causes in DR6 (B0-B3 and BS are sticky
    /// until software clears them; B0-B3 are rewritten by a new match).
    fn set_dr6(&mut self, causes: u32) {
        let dr6 = &mut self.sys.dr[6];
        if causes & 0xf != 0 {
            *dr6 &= !0xf;
        }
        *dr6 |= causes | Dr6::FIXED_ONES;
    }
}

/// Whether `[a, a + alen)` and `[b, b + blen)` overlap (32-bit linear
/// addresses; ranges do not wrap past 4 GiB for breakpoint purposes).
fn overlaps(a: u32, alen: u32, b: u32, blen: u32) -> bool {
    let (a, alen, b, blen) = (u64::from(a), u64::from(alen), u64::from(b), u64::from(blen));
    a < b + blen && b < a + alen
}

/// The value of general register `r` (any width) from the register file.
fn gpr_value(gpr: &[u32; 8], r: iced_x86::Register) -> u32 {
    let full = gpr[r.full_register32().number()];
    match r.size() {
        4 => full,
        2 => full & 0xffff,
        _ if matches!(
            r,
            iced_x86::Register::AH
                | iced_x86::Register::CH
                | iced_x86::Register::DH
                | iced_x86::Register::BH
        ) =>
        {
            (full >> 8) & 0xff
        }
        _ => full & 0xff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_overlap_when_they_share_a_byte() {
        assert!(overlaps(0x1000, 4, 0x1003, 1));
        assert!(!overlaps(0x1000, 4, 0x1004, 4));
        assert!(overlaps(0x0fff, 2, 0x1000, 4));
    }

    #[test]
    fn register_values_follow_their_width() {
        let gpr = [0x1122_3344, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(gpr_value(&gpr, iced_x86::Register::AX), 0x3344);
        assert_eq!(gpr_value(&gpr, iced_x86::Register::AH), 0x33);
        assert_eq!(gpr_value(&gpr, iced_x86::Register::EAX), 0x1122_3344);
    }
}
