//! INT n and IRET offered to translated code (`translate::InlineEvent`).
//!
//! The monitor carries the instruction out at translation time on a copy of
//! the system state, a *dry run*: reads of guest memory are made (through
//! the guest's page tables, with the rights the system model asks for) and
//! recorded, writes are recorded but not made. When the outcome is one
//! translated code can reproduce (a 32-bit gate to ring 0, or an IRET at
//! CPL 0 to ring 0 or 3, flat segments at both ends, the frame as the only
//! write), the offer carries the reads as checks: emitted code reads the
//! same addresses again and leaves to the monitor unless every value is
//! the same, so the outcome holds whenever the inline path completes.
//! Values that vary per event (TSS.ESP0, the IRET frame, the guest's
//! registers and flags) are read live instead. Descriptor-table and TR
//! changes are caught by `CpuState::tables_gen`.
//!
//! Invariant: an offer never makes the guest observe anything the monitor
//! would not have done: the dry run's own reads only set accessed bits in
//! page tables, which the instruction sets when it runs.

use super::{limited_segments, view_of, BtCore, SUPERVISOR_VIEW};
use crate::cpu::interrupt::{self, Event as CpuEvent, SoftwareKind};
use crate::cpu::{
    AccessKind, CpuContext, Eflags, Exception, Privilege, Seg, SegmentRegister, SystemState,
};
use shadowmmu::PAGE_SIZE;
use translator::translate::{
    InlineEvent, InlineInt, InlineIret, IretTarget, ReadCheck, MAX_CHECKS,
};

/// After this many failed checks at one site its translation is made
/// again, with the descriptors the guest uses now.
pub(super) const EVENT_BAIL_LIMIT: u32 = 64;

/// What an inline INT n or IRET leaves in the system state, applied by the
/// run loop at the next exit (the `CpuState::transition` record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EventOutcome {
    pub cpl: u8,
    pub cs: SegmentRegister,
    pub ss: SegmentRegister,
}

/// The instruction carried out on a copy of the system state.
struct DryRun<'a> {
    core: &'a mut BtCore,
    sys: SystemState,
    gpr: [u32; 8],
    eip: u32,
    eflags: Eflags,
    /// Every read: (linear address, bytes).
    reads: Vec<(u32, Vec<u8>)>,
    /// Every write: (linear address, length).
    writes: Vec<(u32, usize)>,
    /// An IRET frame to read instead of guest memory: (ESP, EIP, CS,
    /// EFLAGS, ESP, SS).
    frame: Option<(u32, [u32; 5])>,
}

impl<'a> DryRun<'a> {
    fn new(core: &'a mut BtCore) -> DryRun<'a> {
        let sys = core.sys.clone();
        let gpr = core.state.gpr;
        let eip = core.state.eip;
        let eflags = CpuContext::eflags(core);
        DryRun {
            core,
            sys,
            gpr,
            eip,
            eflags,
            reads: Vec::new(),
            writes: Vec::new(),
            frame: None,
        }
    }
}

impl CpuContext for DryRun<'_> {
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
        self.eflags = value;
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
        if let Some((esp, values)) = self.frame {
            let offset = lin.wrapping_sub(esp) as usize;
            if offset + buf.len() <= 20 {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                buf.copy_from_slice(&bytes[offset..offset + buf.len()]);
                return Ok(());
            }
        }
        // The reads a dry run makes are the instruction's first, made at
        // the CPL it starts with, which is the monitor's.
        let pieces = self.core.pieces(lin, buf.len(), false, privilege)?;
        self.core.ram.read_pieces_or_ones(&pieces, buf);
        self.reads.push((lin, buf.to_vec()));
        Ok(())
    }

    fn write_linear(
        &mut self,
        lin: u32,
        data: &[u8],
        _privilege: Privilege,
    ) -> Result<(), Exception> {
        self.writes.push((lin, data.len()));
        Ok(())
    }

    fn host_tsc(&mut self) -> u64 {
        0
    }
}

/// The recorded reads outside `skip` (linear ranges read live instead) as
/// checks, or `None` if they do not fit the emitted form.
fn checks_of(reads: &[(u32, Vec<u8>)], skip: &[std::ops::Range<u64>]) -> Option<Vec<ReadCheck>> {
    let mut checks = Vec::new();
    for (lin, bytes) in reads {
        let start = u64::from(*lin);
        if skip.iter().any(|r| r.contains(&start)) {
            continue;
        }
        if !matches!(bytes.len(), 1 | 2 | 4 | 8) {
            return None;
        }
        let mut value = [0u8; 8];
        value[..bytes.len()].copy_from_slice(bytes);
        checks.push(ReadCheck {
            lin: *lin,
            size: bytes.len() as u8,
            value: u64::from_le_bytes(value),
        });
    }
    (checks.len() <= MAX_CHECKS).then_some(checks)
}

/// Flat 32-bit code and stack, with nothing refusing a stack access (a
/// code segment always counts as limited: it refuses writes, which inline
/// events never make through it).
fn flat_32bit(sys: &SystemState) -> bool {
    let ss = 1 << Seg::Ss as u8;
    sys.flat() && sys.code32() && sys.stack32() && limited_segments(sys) & ss == 0
}

impl BtCore {
    /// The inline INT n or IRET for the unit whose code (32-bit) at `eip`
    /// is `bytes`, if it starts with one translated code can carry out.
    pub(super) fn first_event(&mut self, eip: u32, bytes: &[u8]) -> Option<InlineEvent> {
        let mut decoder =
            iced_x86::Decoder::with_ip(32, bytes, u64::from(eip), iced_x86::DecoderOptions::NONE);
        let insn = decoder.decode();
        if !translator::translate::starts_own_unit(&insn, self.sys.cpl == 0) {
            return None;
        }
        self.offer_event(&insn)
    }

    /// The #DE delivery that translated code may carry out inline for a
    /// zero divisor at `eip`'s unit, if translated code can deliver #DE in
    /// the current state (asked only for units that divide: the dry run
    /// behind it costs more than a translation).
    pub(super) fn divide_error_offer(&mut self, eip: u32) -> Option<InlineInt> {
        if !self.may_offer_events() {
            return None;
        }
        let event = CpuEvent::Exception(Exception::DivideError);
        match self.offer_delivery(event, eip)? {
            InlineEvent::Int(x) => Some(x),
            InlineEvent::Iret(_) => None,
        }
    }

    /// Whether the current state allows inline events at all.
    fn may_offer_events(&self) -> bool {
        self.sys.cr0.contains(crate::cpu::Cr0::PE)
            && !self.debug_stepping()
            && self.state.eflags & Eflags::VM.bits() == 0
            && flat_32bit(&self.sys)
    }

    /// An inline INT n, IRET or #GP delivery for the instruction `insn`
    /// at the start of a unit in the current state, if translated code can
    /// carry it out.
    pub(super) fn offer_event(&mut self, insn: &iced_x86::Instruction) -> Option<InlineEvent> {
        if !self.may_offer_events() || insn.ip32() != self.state.eip {
            return None;
        }
        let eip = insn.ip32();
        match insn.code() {
            iced_x86::Code::Int_imm8 => {
                let vector = insn.immediate8();
                let event = CpuEvent::Software {
                    vector,
                    kind: SoftwareKind::IntN,
                };
                self.offer_delivery(event, insn.next_ip32())
            }
            iced_x86::Code::Iretd if self.sys.cpl == 0 => self.offer_iret(insn.next_ip32()),
            _ if self.sys.cpl != 0 && translator::translate::gp_outside_ring0(insn) => {
                let event = CpuEvent::Exception(Exception::GeneralProtection(0));
                self.offer_delivery(event, eip)
            }
            _ => None,
        }
    }

    /// `event` delivered inline, pushing `return_eip`.
    fn offer_delivery(&mut self, event: CpuEvent, return_eip: u32) -> Option<InlineEvent> {
        let from_cpl = self.sys.cpl;
        if from_cpl != 0 && from_cpl != 3 {
            return None;
        }
        let tss_esp0 = self.sys.tr.base.wrapping_add(4);
        let mut dry = DryRun::new(self);
        dry.eflags |= Eflags::IF;
        let mut raised = Vec::new();
        interrupt::deliver_recording(&mut dry, event, return_eip, &mut raised).ok()?;
        let outer = dry.sys.cpl != from_cpl;
        if !raised.is_empty() || dry.sys.cpl != 0 || !flat_32bit(&dry.sys) {
            return None;
        }
        let error_code = event.error_code();
        let size = 12 + if outer { 8 } else { 0 } + if error_code.is_some() { 4 } else { 0 };
        let esp = dry.gpr[crate::cpu::context::ESP];
        let frame = u64::from(esp)..u64::from(esp) + size;
        let written: usize = dry.writes.iter().map(|w| w.1).sum();
        let in_frame = dry.writes.iter().all(|&(lin, len)| {
            frame.contains(&u64::from(lin)) && u64::from(lin) + len as u64 <= frame.end
        });
        if written as u64 != size || !in_frame {
            return None;
        }
        let esp0 = u64::from(tss_esp0)..u64::from(tss_esp0) + 1;
        let skip = if outer {
            std::slice::from_ref(&esp0)
        } else {
            &[]
        };
        let checks = checks_of(&dry.reads, skip)?;
        let clears_if = !dry.eflags.contains(Eflags::IF);
        let (handler, sys) = (dry.eip, dry.sys);
        let mut to = self.inline_transition_for(&sys)?;
        to.eip = handler;
        Some(InlineEvent::Int(InlineInt {
            vector: event.vector(),
            software: event.is_software_interrupt(),
            error_code,
            return_eip,
            checks,
            esp0_at: outer.then_some(tss_esp0),
            clears_if,
            to,
            tables_gen: self.state.tables_gen,
            record: self.event_record(&sys),
            supervisor_view: SUPERVISOR_VIEW as u32,
        }))
    }

    /// IRET at CPL 0 inline: the return the frame on the stack asks for,
    /// and the other kind worked out on a made-up frame (a return to the
    /// current CS, and a return to the ring-3 segments last used), so that
    /// one IRET site serves returns to both rings.
    fn offer_iret(&mut self, next_eip: u32) -> Option<InlineEvent> {
        let esp = self.state.gpr[crate::cpu::context::ESP];
        let mut outer = None;
        let mut same = None;
        let mut checks: Vec<ReadCheck> = Vec::new();
        let eflags = CpuContext::eflags(self).bits();
        let made_up =
            |cs: u16, ss: u16| (esp, [next_eip, u32::from(cs), eflags, esp, u32::from(ss)]);
        let current_cs = self.sys.segment(Seg::Cs).selector.0;
        let mut frames = vec![None, Some(made_up(current_cs, 0))];
        if let Some((cs, ss)) = self.last_user_selectors {
            frames.push(Some(made_up(cs, ss)));
        }
        for frame in frames {
            let Some((is_outer, target, found)) = self.iret_target(next_eip, frame) else {
                continue;
            };
            let slot = if is_outer { &mut outer } else { &mut same };
            if slot.is_none() {
                *slot = Some(target);
                for c in found {
                    if !checks.contains(&c) {
                        checks.push(c);
                    }
                }
            }
        }
        if (outer.is_none() && same.is_none()) || checks.len() > MAX_CHECKS {
            return None;
        }
        Some(InlineEvent::Iret(InlineIret {
            checks,
            outer,
            same,
            tables_gen: self.state.tables_gen,
        }))
    }

    /// The IRET target the dry run reaches with the frame on the stack
    /// (`frame` None) or a made-up one: (to ring 3, target, checks).
    fn iret_target(
        &mut self,
        next_eip: u32,
        frame: Option<(u32, [u32; 5])>,
    ) -> Option<(bool, IretTarget, Vec<ReadCheck>)> {
        let esp = self.state.gpr[crate::cpu::context::ESP];
        let data_segments = [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs].map(|s| self.sys.segment(s));
        let mut dry = DryRun::new(self);
        dry.frame = frame;
        interrupt::iret(&mut dry, 4, next_eip).ok()?;
        let outer = dry.sys.cpl == 3;
        let kept =
            [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs].map(|s| dry.sys.segment(s)) == data_segments;
        if !(outer || dry.sys.cpl == 0) || !flat_32bit(&dry.sys) || !dry.writes.is_empty() || !kept
        {
            return None;
        }
        let frame = u64::from(esp)..u64::from(esp) + if outer { 20 } else { 12 };
        let checks = checks_of(&dry.reads, &[frame])?;
        let sys = dry.sys;
        let to = self.inline_transition_for(&sys)?;
        let target = IretTarget {
            selectors: [
                sys.segment(Seg::Cs).selector.0,
                sys.segment(Seg::Ss).selector.0,
            ],
            to,
            record: self.event_record(&sys),
        };
        Some((outer, target, checks))
    }

    /// The `CpuState::transition` record of an outcome (a new one for an
    /// outcome not seen since the last flush).
    fn event_record(&mut self, sys: &SystemState) -> u32 {
        let outcome = EventOutcome {
            cpl: sys.cpl,
            cs: sys.segment(Seg::Cs),
            ss: sys.segment(Seg::Ss),
        };
        let index = match self.event_outcomes.iter().position(|o| *o == outcome) {
            Some(i) => i,
            None => {
                self.event_outcomes.push(outcome);
                self.event_outcomes.len() - 1
            }
        };
        translator::state::TRANSITION_EVENT_FIRST + index as u32
    }

    /// Applies the outcome named by a `CpuState::transition` record.
    pub(super) fn apply_event_record(&mut self, record: u32) -> bool {
        let index = record.wrapping_sub(translator::state::TRANSITION_EVENT_FIRST) as usize;
        let Some(outcome) = self.event_outcomes.get(index).copied() else {
            return false;
        };
        self.sys.cpl = outcome.cpl;
        self.sys.seg[Seg::Cs as usize] = outcome.cs;
        self.sys.seg[Seg::Ss as usize] = outcome.ss;
        self.sys.interrupt_shadow = false;
        true
    }

    /// An inline event at EIP failed its checks: after
    /// [`EVENT_BAIL_LIMIT`] failures its frame's translations are made
    /// again, from what the guest's tables hold now.
    pub(super) fn note_event_bail(&mut self) {
        let eip = self.state.eip;
        let count = self.event_bails.entry(eip).or_insert(0);
        *count += 1;
        if *count < EVENT_BAIL_LIMIT {
            return;
        }
        self.event_bails.remove(&eip);
        let lin = self.sys.segment(Seg::Cs).base.wrapping_add(eip);
        if let Ok(phys) = self.linear_to_phys(lin, false) {
            self.stats.inline_event_retranslations += 1;
            self.untrace_code_frame(phys >> 12);
        }
    }

    /// Why an inline IRET must leave to the monitor now (see
    /// `CpuState::iret_blockers`).
    pub(super) fn iret_blockers(&self) -> u32 {
        if self.sys.nmi_blocked {
            translator::state::IRET_BLOCKED_NMI
        } else {
            0
        }
    }

    /// After the monitor carried out an INT n or IRET whose inline form
    /// faulted (a page not yet in the shadow): maps, in the supervisor
    /// view, the pages the inline form touches, so that the next one runs
    /// inline. `old_esp` is ESP before the instruction.
    pub(super) fn prefault_event_pages(&mut self, old_esp: u32) {
        if !self.paging() {
            return;
        }
        let tables = [
            (self.sys.idtr.base, u32::from(self.sys.idtr.limit)),
            (self.sys.gdtr.base, u32::from(self.sys.gdtr.limit)),
            (self.sys.tr.base, self.sys.tr.limit.min(11)),
        ];
        for (base, limit) in tables {
            let last = base.wrapping_add(limit.min(16 * PAGE_SIZE));
            let mut page = base & !(PAGE_SIZE - 1);
            loop {
                self.prefault(page, false);
                if page >= last & !(PAGE_SIZE - 1) {
                    break;
                }
                page = page.wrapping_add(PAGE_SIZE);
            }
        }
        self.prefault(old_esp, false);
        self.prefault(old_esp.wrapping_add(19), false);
        if self.sys.cpl == 0 {
            let esp = self.state.gpr[crate::cpu::context::ESP];
            self.prefault(esp, true);
            self.prefault(esp.wrapping_add(19), true);
        }
    }

    /// Fills the supervisor view's mapping of the page of `lin` if the
    /// guest's page tables allow the access.
    fn prefault(&mut self, lin: u32, write: bool) {
        if self.paging() {
            self.prefault_in(SUPERVISOR_VIEW, lin, write);
        }
    }

    /// The inline privilege change into system state `sys` (EIP and ESP
    /// left for the caller).
    pub(super) fn inline_transition_for(
        &mut self,
        sys: &SystemState,
    ) -> Option<translator::translate::InlineTransition> {
        let limited = limited_segments(sys);
        let key = self.mode_key_of(sys, limited);
        let [cs, ss] = [Seg::Cs, Seg::Ss].map(|seg| sys.segment(seg));
        Some(translator::translate::InlineTransition {
            eip: 0,
            esp: 0,
            selectors: [cs.selector.0, ss.selector.0],
            ranges: [cs.offset_ranges(), ss.offset_ranges()],
            mode: key.mode,
            tag: self.tag_of(key)?,
            view: view_of(sys) as u32,
        })
    }
}
