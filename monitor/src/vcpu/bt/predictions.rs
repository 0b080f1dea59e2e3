//! Predicted targets of indirect jumps through a constant address
//! (`jmp [disp32]`: a static executable's PLT entry, which jumps through
//! its GOT slot). The slot rarely changes once the program started, so the
//! unit compares the target it loads with what the slot held when the unit
//! was made and, when they agree, takes a chained direct jump instead of
//! probing the indirect-branch table (see `translator::translate::
//! UnitRequest::jump_predictions`).
//!
//! Jump tables (`jmp [idx*4 + disp32]`) are read ahead the same way: each
//! entry's target when the unit was made becomes a key the jump compares
//! with and a chain-table entry it jumps through (see
//! `translator::translate::UnitRequest::jump_tables`).
//!
//! Invariants:
//! - A prediction (or a table read ahead) is only a guess: the jump still loads its target from
//!   guest memory with the CPU's checks and faults, and a target other
//!   than the guess goes through the table as before, so a wrong or stale
//!   prediction costs time, never correctness.
//! - Reading the slot here is the access the jump makes right after the
//!   unit is made (the unit is translated because it is about to run): a
//!   slot that cannot be read gets no prediction, and nothing is raised;
//!   a slot outside guest RAM (a device's) is not read at all. A jump
//!   table's entries past the ones the guest uses are read too, from RAM
//!   only, so reading them has no effect either.

use super::BtCore;
use crate::cpu::Seg;
use iced_x86::{Instruction, InstructionInfoFactory, OpAccess, Register};
use shadowmmu::{GuestPhys, PAGE_SIZE};
use translator::translate::{
    indirect_prediction_candidate, jump_table_candidate, pic_jump_table, JumpTable,
    JUMP_TABLE_ENTRIES,
};

impl BtCore {
    /// Predictions for the unit's `jmp [disp32]` instructions, sorted by
    /// EIP: the dword each one's slot holds now.
    pub(super) fn jump_predictions(&mut self, insns: &[Instruction]) -> Vec<(u32, u32)> {
        let mut predictions: Vec<(u32, u32)> = insns
            .iter()
            .filter(|i| indirect_prediction_candidate(i))
            .filter_map(|i| Some((i.ip32(), self.slot_value(i)?)))
            .collect();
        predictions.sort_unstable_by_key(|p| p.0);
        predictions
    }

    /// Jump tables for the unit's `jmp [idx*4 + disp32]` instructions and
    /// position-independent `mov r, [base + idx*4 + disp]; add r, base;
    /// jmp r` sequences, sorted by EIP: the targets the table's first
    /// `JUMP_TABLE_ENTRIES` entries give now (a PIC table's entries plus
    /// the base register's value, read from the guest's registers, which
    /// hold what they hold at the unit's start: only when no instruction
    /// of the unit before the load writes it), up to the first entry that
    /// cannot be read ahead (the table's page unmapped, past RAM).
    pub(super) fn jump_tables(&mut self, insns: &[Instruction]) -> Vec<JumpTable> {
        if !self.jump_tables {
            return Vec::new();
        }
        let mut tables = Vec::new();
        for (k, i) in insns.iter().enumerate() {
            let found = if jump_table_candidate(i) {
                self.read_table(i, 0)
            } else if let (Some(load), Some(add)) = (
                k.checked_sub(2).map(|p| &insns[p]),
                k.checked_sub(1).map(|p| &insns[p]),
            ) {
                pic_jump_table([load, add], i)
                    .filter(|pic| !writes_register(&insns[..k - 2], pic.base))
                    .and_then(|pic| {
                        let base = self.state.gpr[gpr_index(pic.base)?];
                        self.read_table(load, base)
                    })
            } else {
                None
            };
            if let Some(targets) = found {
                tables.push(JumpTable {
                    eip: i.ip32(),
                    targets,
                    slots: None,
                });
            }
        }
        tables.sort_unstable_by_key(|t| t.eip);
        tables
    }

    /// The entries of the table `i`'s memory operand names (its base
    /// register reading `base`, 0 for none), each plus `base` (a PIC
    /// table's entries are relative to it), up to `JUMP_TABLE_ENTRIES` or
    /// the first that cannot be read ahead. Read a page's worth at a time
    /// (one walk each); an entry that straddles a page is not read.
    fn read_table(&mut self, i: &Instruction, base: u32) -> Option<Vec<u32>> {
        let seg = self.sys.segment(Seg::from_iced(i.memory_segment())?);
        let mut at = seg
            .base
            .wrapping_add(base)
            .wrapping_add(i.memory_displacement32());
        let mut targets = Vec::with_capacity(JUMP_TABLE_ENTRIES);
        let mut chunk = [0u8; 4 * JUMP_TABLE_ENTRIES];
        while targets.len() < JUMP_TABLE_ENTRIES {
            let to_page_end = (PAGE_SIZE - at % PAGE_SIZE) as usize / 4 * 4;
            let len = to_page_end.min(4 * (JUMP_TABLE_ENTRIES - targets.len()));
            if len == 0 || self.read_ram_ahead(at, &mut chunk[..len]).is_none() {
                break;
            }
            targets.extend(
                chunk[..len]
                    .chunks_exact(4)
                    .map(|e| u32::from_le_bytes([e[0], e[1], e[2], e[3]]).wrapping_add(base)),
            );
            at = at.wrapping_add(len as u32);
        }
        (!targets.is_empty()).then_some(targets)
    }

    /// The dword at the constant address of `i`'s memory operand, read
    /// through the current privilege's rights as the jump reads it; none
    /// when it is not in guest RAM within one page (a device register is
    /// not read ahead of the guest).
    fn slot_value(&mut self, i: &Instruction) -> Option<u32> {
        let seg = self.sys.segment(Seg::from_iced(i.memory_segment())?);
        let at = seg.base.wrapping_add(i.memory_displacement32());
        let mut bytes = [0u8; 4];
        self.read_ram_ahead(at, &mut bytes)?;
        Some(u32::from_le_bytes(bytes))
    }

    /// Reads guest RAM at linear `lin` through the current privilege's
    /// mapping ahead of the instruction that will read it (translation
    /// time): none when the bytes cross a page, are not mapped or are
    /// not RAM (a device register is never read ahead of the guest).
    pub(super) fn read_ram_ahead(&mut self, lin: u32, buf: &mut [u8]) -> Option<()> {
        if (lin & 0xfff) as usize + buf.len() > 0x1000 {
            return None;
        }
        let phys = self.linear_to_phys(lin, false).ok()?;
        if !self.inside_ram(phys, buf.len()) {
            return None;
        }
        self.ram.read_or_ones(GuestPhys(phys), buf);
        Some(())
    }
}

/// Whether any of `insns` writes 32-bit register `r` (or a part of it).
fn writes_register(insns: &[Instruction], r: Register) -> bool {
    let mut info = InstructionInfoFactory::new();
    insns.iter().any(|i| {
        info.info(i).used_registers().iter().any(|u| {
            u.register().full_register() == r.full_register()
                && matches!(
                    u.access(),
                    OpAccess::Write
                        | OpAccess::CondWrite
                        | OpAccess::ReadWrite
                        | OpAccess::ReadCondWrite
                )
        })
    })
}

/// The index of 32-bit general register `r` in the CPU's register file
/// (EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI).
fn gpr_index(r: Register) -> Option<usize> {
    r.is_gpr32().then(|| r.number())
}
