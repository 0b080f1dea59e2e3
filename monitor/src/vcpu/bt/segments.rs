//! Segment loads translated code carries out itself: `MOV` to DS, ES, FS
//! or GS in ring-0 flat code (see `translator::translate::
//! InlineSegmentLoad`). A kernel loads three or four of them on every
//! system call and interrupt; through the monitor each was an exit. Here:
//! the selectors each register was loaded with lately, the loads offered
//! to a unit that has such a `MOV`, and their application to the system
//! state after a run.
//!
//! Invariants:
//! - An offered load was worked out by the checks the monitor applies to
//!   the same load (`cpu::segment::check_data_segment`, in ring 0, the
//!   only level units with offers run at) from the descriptor bytes the
//!   translated code compares in memory before applying it, and needs no
//!   write (its accessed bit was set); its mode and tag are those of the
//!   system state after the load. Descriptor tables that change (GDTR,
//!   LDTR) flush every translation, offers included.
//! - A load translated code marked in `CpuState::seg_loaded` reaches the
//!   system state before anything reads it after the run
//!   ([`BtCore::apply_inline_segment_loads`], right after every entry).

use super::{limited_segments, BtCore};
use crate::cpu::context::read_u64;
use crate::cpu::descriptor::{Descriptor, Selector};
use crate::cpu::segment::{check_data_segment, descriptor_address, gp};
use crate::cpu::Privilege;
use crate::cpu::{Seg, SegmentRegister};
use translator::translate::{InlineSegmentLoad, InlineVerw, Mode, MAX_SEGMENT_LOADS};

/// The data segment registers a `MOV` may load inline.
const DATA_SEGMENTS: [Seg; 4] = [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs];

/// A load as the checks found it: the descriptor's linear address and
/// bytes (`None` for a null selector) and the register it makes.
type CheckedLoad = (Option<(u32, u64)>, SegmentRegister);

/// What the monitor knows of the data segment loads the guest makes.
#[derive(Debug, Default)]
pub(super) struct SegmentLoads {
    /// Per segment register (`Seg` order), the last selectors it was
    /// loaded with, the most recent first.
    recent: [[Option<u16>; MAX_SEGMENT_LOADS]; 6],
    /// Loads that passed the checks, by (segment, selector).
    checked: rustc_hash::FxHashMap<(u8, u16), CheckedLoad>,
    /// Loads the monitor carried out, by EIP, since that EIP's unit was
    /// last translated.
    emulated: rustc_hash::FxHashMap<u32, u32>,
    /// EIPs whose unit was translated again for them (once each).
    retranslated: rustc_hash::FxHashSet<u32>,
}

/// Loads at one EIP the monitor carries out before the unit holding it is
/// translated again with the selectors seen since (a unit translated
/// before its selectors were ever loaded gets no offers for them).
const RETRANSLATE_AFTER: u32 = 2;

/// EIPs translated again for their segment loads, at most.
const MAX_RETRANSLATED: usize = 4096;

impl SegmentLoads {
    /// Segment register `seg` now holds `reg`. A load checked before that
    /// made another register from the same selector (its descriptor
    /// changed since) is checked again when next offered.
    pub(super) fn note_loaded(&mut self, seg: Seg, reg: SegmentRegister) {
        if !DATA_SEGMENTS.contains(&seg) {
            return;
        }
        let selector = reg.selector.0;
        let key = (seg as u8, selector);
        if self.checked.get(&key).is_some_and(|(_, was)| *was != reg) {
            self.checked.remove(&key);
        }
        let recent = &mut self.recent[seg as usize];
        if recent[0] == Some(selector) {
            return;
        }
        recent.rotate_right(1);
        recent[0] = Some(selector);
        if let Some(k) = (1..recent.len()).find(|&k| recent[k] == Some(selector)) {
            recent[k] = None;
        }
    }

    /// Counts a data segment load the monitor carried out at `eip`; true
    /// once per EIP, when it reaches [`RETRANSLATE_AFTER`].
    fn note_emulated(&mut self, eip: u32) -> bool {
        if self.retranslated.len() >= MAX_RETRANSLATED || self.retranslated.contains(&eip) {
            return false;
        }
        let count = self.emulated.entry(eip).or_insert(0);
        *count += 1;
        if *count < RETRANSLATE_AFTER {
            return false;
        }
        self.emulated.remove(&eip);
        self.retranslated.insert(eip);
        true
    }

    /// The descriptor tables changed: what was checked against them goes.
    pub(super) fn forget_checks(&mut self) {
        self.checked.clear();
    }
}

/// Whether `i` loads a data segment register with `MOV` or `POP`.
pub(super) fn loads_data_segment(i: &iced_x86::Instruction) -> bool {
    use iced_x86::Code;
    if matches!(
        i.code(),
        Code::Popd_DS | Code::Popd_ES | Code::Popd_FS | Code::Popd_GS
    ) {
        return true;
    }
    matches!(i.code(), Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_rm16)
        && matches!(
            i.op0_register(),
            iced_x86::Register::ES
                | iced_x86::Register::DS
                | iced_x86::Register::FS
                | iced_x86::Register::GS
        )
}

/// Whether `i` is a `VERW` with a memory operand at a constant address
/// (Linux's `verw mds_verw_sel`), which translated code may answer.
pub(super) fn verw_at_constant_address(i: &iced_x86::Instruction) -> bool {
    i.code() == iced_x86::Code::Verw_r32m16
        && i.op0_kind() == iced_x86::OpKind::Memory
        && i.memory_base() == iced_x86::Register::None
        && i.memory_index() == iced_x86::Register::None
}

impl BtCore {
    /// The answers offered to a unit of `mode` for its `VERW`s at a
    /// constant address (only ring-0 flat 32-bit code gets any): for the
    /// selector each operand holds now, the answer the monitor gives, and
    /// the descriptor it read for it.
    pub(super) fn verw_offers(
        &mut self,
        mode: Mode,
        insns: &[iced_x86::Instruction],
    ) -> Vec<(u32, InlineVerw)> {
        if !mode.cpl0 || !mode.flat || mode.code16 || self.sys.cpl != 0 {
            return Vec::new();
        }
        insns
            .iter()
            .filter(|i| verw_at_constant_address(i))
            .filter_map(|i| Some((i.ip32(), self.verw_answer(i)?)))
            .collect()
    }

    /// The answer to `i` for the selector its operand holds now.
    fn verw_answer(&mut self, i: &iced_x86::Instruction) -> Option<InlineVerw> {
        let seg = self.sys.segment(Seg::from_iced(i.memory_segment())?);
        // Translated code reads through CS without a check (see
        // `Ctx::inline_verw`): only a readable CS of 4 GiB gets an answer.
        if i.memory_segment() == iced_x86::Register::CS
            && !(seg.readable() && seg.limit == u32::MAX)
        {
            return None;
        }
        let base = seg.base;
        let at = base.wrapping_add(i.memory_displacement32());
        let mut bytes = [0u8; 2];
        self.read_ram_ahead(at, &mut bytes)?;
        let sel = Selector(u16::from_le_bytes(bytes));
        let writable = crate::cpu::system::tables::verw(self, sel).ok()?;
        let descriptor = match descriptor_address(self, sel).filter(|_| !sel.is_null()) {
            Some(at) => Some((at, read_u64(self, at, Privilege::Supervisor).ok()?)),
            None => None,
        };
        Some(InlineVerw {
            selector: sel.0,
            descriptor,
            writable,
        })
    }

    /// The loads offered to a unit of `mode` (only ring-0 flat 32-bit
    /// code gets any): for each data segment register, the selectors it
    /// was loaded with lately whose load passes the checks now and needs
    /// no write.
    pub(super) fn segment_load_offers(&mut self, mode: Mode) -> Vec<(u8, InlineSegmentLoad)> {
        if !mode.cpl0 || !mode.flat || mode.code16 || self.sys.cpl != 0 {
            return Vec::new();
        }
        let mut offers = Vec::new();
        for seg in DATA_SEGMENTS {
            for selector in self.segment_loads.recent[seg as usize]
                .into_iter()
                .flatten()
            {
                if let Some(load) = self.offer(seg, selector) {
                    offers.push((seg as u8, load));
                }
            }
        }
        offers
    }

    /// The inline load of `selector` into `seg`, if its checks pass and
    /// its mode has a tag.
    fn offer(&mut self, seg: Seg, selector: u16) -> Option<InlineSegmentLoad> {
        let (descriptor, reg) = self.checked_load(seg, selector)?;
        let mut after = self.sys.clone();
        after.seg[seg as usize] = reg;
        let key = self.mode_key_of(&after, limited_segments(&after));
        let tag = self.tag_of(key)?;
        Some(InlineSegmentLoad {
            selector,
            descriptor,
            base: reg.base,
            ranges: reg.offset_ranges(),
            mode: key.mode,
            tag,
            // No translation depends on FS's or GS's base.
            any_base: matches!(seg, Seg::Fs | Seg::Gs)
                && descriptor.is_some()
                && std::arch::is_x86_feature_detected!("bmi2"),
            blocks_iret: reg.nulled_by_return_to(3),
        })
    }

    /// `selector` loaded into `seg` as the monitor would load it in ring
    /// 0, if that passes every check and writes nothing (a descriptor
    /// whose accessed bit is clear gets it from the monitor's load first).
    fn checked_load(&mut self, seg: Seg, selector: u16) -> Option<CheckedLoad> {
        if let Some(load) = self.segment_loads.checked.get(&(seg as u8, selector)) {
            return Some(*load);
        }
        let sel = Selector(selector);
        let load = match check_data_segment(self, sel, gp).ok()? {
            None => (None, SegmentRegister::null(sel)),
            Some(d) if d.with_accessed() == d => {
                let at = descriptor_address(self, sel)?;
                (Some((at, d.0)), SegmentRegister::loaded(sel, d))
            }
            Some(_) => return None,
        };
        self.segment_loads
            .checked
            .insert((seg as u8, selector), load);
        Some(load)
    }

    /// After the monitor carried out the segment load `i` that the
    /// translation `owner` handed over: the second time at its EIP, in
    /// ring-0 flat 32-bit code, the translation dies, so that the next run
    /// translates it again with the selectors loaded since (once per EIP;
    /// a selector whose descriptor keeps changing stays with the monitor).
    pub(super) fn retranslate_for_segment_loads(
        &mut self,
        i: &iced_x86::Instruction,
        owner: Option<codecache::TransId>,
    ) {
        let flat_ring0 = self.sys.cpl == 0 && self.sys.flat() && self.sys.code32();
        let Some(id) = owner.filter(|_| flat_ring0) else {
            return;
        };
        if !self.segment_loads.note_emulated(i.ip32()) || self.cache.get(id).dead {
            return;
        }
        self.stats.segment_load_retranslations += 1;
        self.cache.invalidate(id);
        self.forget_dead_translation(id);
        self.pending_chain = None;
    }

    /// Applies the loads translated code made in its last run to the
    /// system state (the mirrors it read already hold them), then acts on
    /// the mode they make.
    pub(super) fn apply_inline_segment_loads(&mut self) {
        if self.state.seg_loaded == [0; 6] {
            return;
        }
        let mut applied = 0;
        for seg in DATA_SEGMENTS {
            let s = seg as usize;
            if std::mem::take(&mut self.state.seg_loaded[s]) == 0 {
                continue;
            }
            let selector = Selector(self.state.seg_sel[s]);
            self.sys.seg[s] = if selector.is_null() {
                SegmentRegister::null(selector)
            } else {
                SegmentRegister::loaded(selector, Descriptor(self.state.seg_desc[s]))
            };
            applied += 1;
        }
        if applied > 0 {
            self.stats.inline_segment_loads += applied;
            self.sync_segments();
            let key = self.mode_key();
            self.tag = self.tag_or_flush(key);
        }
    }
}
