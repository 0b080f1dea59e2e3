//! Leaf callees translated in place at their calls (see
//! `UnitRequest::inline_leaves`): a direct `call` to a short leaf in the
//! unit's page, or an inline cache's match of a `call r/m32`, goes on with
//! the callee's instructions in the same unit, and the callee's `ret` goes
//! on with the caller's, without a host call, return or continuation.
//!
//! Invariants:
//! * The guest sees what the call and the `ret` do: the return address is
//!   stored below ESP, ESP moves by 4 (plus `ret imm16`'s bytes) both
//!   ways, every instruction of the callee keeps its own pc-map entry (a
//!   fault in it stops there, with ESP as the callee saw it), and a
//!   callee that is cut off by a fault or exit runs on as ordinary code.
//! * The `ret` loads the address it pops and compares it with the call's
//!   return point, going elsewhere through the indirect-branch table when
//!   they differ, unless [`keeps_return_slot`] proved that the callee
//!   cannot change the slot or move ESP off it: then the address popped
//!   is the one the call stored (one vCPU; a unit runs without
//!   interruption between its polls, and no callee holds one), and the
//!   `ret` only moves ESP.
//! * A leaf is taken in only whole: every instruction goes on to the next
//!   ([`Ctx::leaf_instruction`]), the unit has room for all of them, and a
//!   unit that would end inside one is made again without leaves in place
//!   (`translate`).

use super::{
    confine, is_system_reg, mem, needs_monitor, seg_index, starts_own_unit, Availability, Ctx,
    MAX_CACHED_TARGETS, MAX_LEAF_INSNS, MAX_LEAF_UNIT_INSNS, MAX_STACK_LAG,
};
use crate::emit::Label;
use crate::{i2, TranslateError};
use iced_x86::{Code, Instruction, InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register};

/// A call whose leaf callee the unit translates in place, from the call
/// to the callee's `ret`.
pub(super) struct InlinedCall {
    /// The return address the call pushed: the unit goes on there after
    /// the callee.
    ret_eip: u32,
    /// Whether the callee being translated leaves its return address
    /// alone (see [`keeps_return_slot`]).
    keeps_return: bool,
    /// The inline-cache matches whose callees follow this one, each at its
    /// label, with the callee.
    arms: Vec<(Label, Leaf)>,
    /// Where the call's paths meet after an inline cache (each path with
    /// R8 at guest ESP); `None` for a direct call, whose one callee goes
    /// straight on with any stack lag.
    join: Option<Label>,
    /// The stack lag at each callee's first instruction.
    entry_lag: i32,
}

/// A leaf callee the unit may translate in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Leaf {
    /// Its first instruction.
    eip: u32,
    /// How many instructions it has, its `ret` included.
    insns: usize,
    /// See [`keeps_return_slot`].
    keeps_return: bool,
}

/// Whether a leaf callee's instructions `body` (its `ret` not included),
/// entered with ESP at its return address, provably leave that address
/// where it is and return with ESP back there: every write to memory
/// other than through ESP, or EBP set from it, could reach the slot and
/// fails the proof, as does every change of ESP other than PUSH, POP
/// (into another register), `add`/`sub esp, imm`, `lea esp, [esp +
/// disp]` and LEAVE after `mov ebp, esp`; the writes through them must
/// have a known size and miss the slot's 4 bytes at their offset in every
/// page ([`may_reach_slot`]), and ESP must be back at the slot at the
/// end.
pub(super) fn keeps_return_slot(body: &[Instruction], info: &mut InstructionInfoFactory) -> bool {
    // ESP and EBP minus the slot's address, EBP where known.
    let mut esp = 0i64;
    let mut ebp: Option<i64> = None;
    for i in body {
        let used = info.info(i);
        for access in used.used_memory() {
            if !is_write(access.access()) {
                continue;
            }
            let base = match access.base() {
                Register::ESP => Some(esp),
                Register::EBP => ebp,
                _ => None,
            };
            let through_stack =
                access.index() == Register::None && access.segment() == Register::SS;
            let Some(base) = base.filter(|_| through_stack) else {
                return false;
            };
            let size = access.memory_size().size() as i64;
            let from = base + i64::from(access.displacement() as u32 as i32);
            if size == 0 || may_reach_slot(from, size) {
                return false;
            }
        }
        let written = |reg: Register| {
            used.used_registers()
                .iter()
                .any(|u| u.register().full_register32() == reg && is_write(u.access()))
        };
        let writes = (written(Register::ESP), written(Register::EBP));
        match stack_effect(i, esp, ebp, writes) {
            Some(after) => (esp, ebp) = after,
            None => return false,
        }
    }
    esp == 0
}

/// Whether `size` bytes at `from` (relative to the slot) may overlap the
/// slot's 4 bytes: compared within the page, since addresses wrap at 4 GiB
/// and, under paging, another linear page may map the slot's frame.
fn may_reach_slot(from: i64, size: i64) -> bool {
    let page = i64::from(shadowmmu::PAGE_SIZE);
    let in_page = from.rem_euclid(page);
    size >= page - 4 || in_page < 4 || in_page + size > page
}

/// Whether an access may write.
fn is_write(access: OpAccess) -> bool {
    matches!(
        access,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// ESP and EBP (relative, EBP where known) after `i`, from `esp` and
/// `ebp` before it, `i` writing ESP and EBP as `writes` says; `None` when
/// ESP becomes unknown.
fn stack_effect(
    i: &Instruction,
    esp: i64,
    ebp: Option<i64>,
    (writes_esp, writes_ebp): (bool, bool),
) -> Option<(i64, Option<i64>)> {
    let op0_is = |r: Register| i.op0_kind() == OpKind::Register && i.op0_register() == r;
    // POP SP or POP ESP: ESP becomes what it pops.
    let writes_esp_as_operand =
        i.op0_kind() == OpKind::Register && i.op0_register().full_register32() == Register::ESP;
    let immediate = matches!(
        i.op1_kind(),
        OpKind::Immediate8 | OpKind::Immediate8to32 | OpKind::Immediate32
    );
    let esp_after = match i.mnemonic() {
        Mnemonic::Push => esp + i64::from(i.stack_pointer_increment()),
        Mnemonic::Pop if !writes_esp_as_operand => esp + i64::from(i.stack_pointer_increment()),
        Mnemonic::Leave => ebp? + 4,
        _ if !writes_esp => esp,
        Mnemonic::Add if op0_is(Register::ESP) && immediate => {
            esp + i64::from(i.immediate(1) as u32 as i32)
        }
        Mnemonic::Sub if op0_is(Register::ESP) && immediate => {
            esp - i64::from(i.immediate(1) as u32 as i32)
        }
        Mnemonic::Lea
            if op0_is(Register::ESP)
                && i.memory_base() == Register::ESP
                && i.memory_index() == Register::None =>
        {
            esp + i64::from(i.memory_displacement32() as i32)
        }
        _ => return None,
    };
    let ebp_after = if i.mnemonic() == Mnemonic::Mov
        && op0_is(Register::EBP)
        && i.op1_kind() == OpKind::Register
        && i.op1_register() == Register::ESP
    {
        Some(esp)
    } else if writes_ebp || i.mnemonic() == Mnemonic::Leave {
        None
    } else {
        ebp
    };
    Some((esp_after, ebp_after))
}

impl Ctx<'_> {
    /// The callee at `target` of `call`, if the unit may translate it in
    /// place (see `UnitRequest::inline_leaves`) after `taken` instructions
    /// of other callees of the same call: it lies in the part of the
    /// unit's page the unit may translate, apart from the call itself, and
    /// is at most [`MAX_LEAF_INSNS`] instructions that go on to the next
    /// one ([`Ctx::leaf_instruction`]) ending in `ret` or `ret imm16`,
    /// none of them one that the monitor asked to reach memory through the
    /// software TLB; and the unit has room for all of them.
    pub(super) fn leaf_at(
        &mut self,
        call: &Instruction,
        target: u32,
        taken: usize,
    ) -> Option<Leaf> {
        if !self.inline_leaves || target == call.next_ip32() {
            return None;
        }
        let room = MAX_LEAF_UNIT_INSNS.checked_sub(self.leaf_insns + taken)?;
        let page_len = self.req.page_end.wrapping_sub(self.page_eip);
        let mut decoder = self.decoder_at(target);
        let mut body = Vec::new();
        for n in 1..=MAX_LEAF_INSNS.min(room) {
            let i = decoder.decode();
            let in_page = i.ip32().wrapping_sub(self.page_eip) < page_len
                && i.next_ip32().wrapping_sub(self.page_eip) <= page_len;
            let on_call = i.ip32() < call.next_ip32() && call.ip32() < i.next_ip32();
            if i.is_invalid() || !in_page || on_call || self.req.soft_access.contains(&i.ip32()) {
                return None;
            }
            if matches!(i.code(), Code::Retnd | Code::Retnd_imm16) {
                let keeps_return = keeps_return_slot(&body, &mut self.info);
                return Some(Leaf {
                    eip: target,
                    insns: n,
                    keeps_return,
                });
            }
            if !self.leaf_instruction(&i) {
                return None;
            }
            body.push(i);
        }
        None
    }

    /// Whether `i` may be part of a leaf callee translated in place: it
    /// goes on to the next instruction whatever happens (no branch, call,
    /// interrupt or return), and its translation does too (nothing the
    /// monitor carries out or the unit ends at: no string instruction,
    /// flags image, interrupt flag, port, segment or system register, no
    /// ENTER, CPUID, XLAT or SYSENTER; a push or pop of a general register,
    /// an immediate or memory not addressed through ESP).
    fn leaf_instruction(&mut self, i: &Instruction) -> bool {
        use Mnemonic::*;
        let special = matches!(
            i.mnemonic(),
            Pushfd
                | Popfd
                | Pushf
                | Popf
                | Pushad
                | Popad
                | Pusha
                | Popa
                | Cli
                | Sti
                | Enter
                | Cpuid
                | In
                | Out
                | Xlatb
                | Sysenter
                | Sysexit
                | Invlpg
                | Verw
                | Verr
        ) || (i.mnemonic() == Leave && i.code() != Code::Leaved)
            || i.is_string_instruction();
        let odd_operand = (0..i.op_count()).any(|n| {
            i.op_kind(n) == OpKind::Register
                && (seg_index(i.op_register(n)).is_some() || is_system_reg(i.op_register(n)))
        });
        let odd_pop = i.mnemonic() == Pop
            && i.op0_kind() == OpKind::Memory
            && (i.memory_base() == Register::ESP || i.memory_index() == Register::ESP);
        if i.flow_control() != iced_x86::FlowControl::Next
            || special
            || odd_operand
            || odd_pop
            || needs_monitor(i)
            || self.req.mode.exits(i)
            || (self.req.split_events && starts_own_unit(i, self.req.mode.cpl0))
        {
            return false;
        }
        match self.req.isa.availability(i) {
            Availability::Undefined => return false,
            Availability::Nop => return true,
            _ => {}
        }
        let own_path = matches!(
            i.mnemonic(),
            Push | Pop | Leave | Lea | Div | Idiv | Nop | Reservednop
        );
        own_path || confine::check_generic(i, &mut self.info).is_ok()
    }

    /// The inline cache's targets of indirect call `i` whose callees the
    /// unit translates in place, by their index in the cache: those that
    /// are leaves (see [`Ctx::leaf_at`]) while the unit has room, at a
    /// predicted call through the stack as it is (not the software TLB)
    /// whose targets are known. None when there are none.
    pub(super) fn leaf_arms(&mut self, i: &Instruction) -> Vec<(usize, Leaf)> {
        if !self.predicts_returns() || self.wants_soft_stack(i) || self.learning_site(i) {
            return Vec::new();
        }
        let mut taken = 0;
        let mut arms = Vec::new();
        for (k, &(_, target)) in self.cached_targets(i).iter().enumerate() {
            if let Some(leaf) = self.leaf_at(i, target, taken) {
                taken += leaf.insns;
                arms.push((k, leaf));
            }
        }
        arms
    }

    /// The return address of call `i` pushed as a push would store it,
    /// into the stack lag when the call may keep one (see
    /// [`Ctx::keeps_stack_lag`]) and that stays within
    /// [`MAX_STACK_LAG`].
    pub(super) fn push_return_keeping_lag(
        &mut self,
        i: &Instruction,
    ) -> Result<(), TranslateError> {
        if !self.stack_folds(i) {
            return self.push_return(i);
        }
        self.push_folded(Some(i.next_ip32()), 4)?;
        self.lag_within_bounds()
    }

    /// Brings R8 up to date when the lag has grown past
    /// [`MAX_STACK_LAG`] (a unit's lags are listed as bytes).
    fn lag_within_bounds(&mut self) -> Result<(), TranslateError> {
        if self.stack_pending.abs() > MAX_STACK_LAG {
            self.flush_stack_lag()?;
        }
        Ok(())
    }

    /// `lea r8d, [r8 + lag]` on the path being emitted (which leaves the
    /// unit or calls out of it), the lag still pending for the code after
    /// it.
    pub(super) fn flush_stack_lag_on_this_path(&mut self) -> Result<(), TranslateError> {
        self.move_r8_by(self.stack_pending)
    }

    /// Direct call `i` to `leaf`, in place: the return address is pushed
    /// and the unit goes on with the callee's instructions (see
    /// [`Ctx::ret_in_place`]).
    pub(super) fn call_in_place(
        &mut self,
        i: &Instruction,
        leaf: Leaf,
    ) -> Result<bool, TranslateError> {
        self.push_return_keeping_lag(i)?;
        self.inlined = Some(InlinedCall {
            ret_eip: i.next_ip32(),
            keeps_return: leaf.keeps_return,
            arms: Vec::new(),
            join: None,
            entry_lag: self.stack_pending,
        });
        self.follow = Some(leaf.eip);
        Ok(false)
    }

    /// Indirect call `i` with an inline cache, its target in R9D and its
    /// return address pushed, the callees of the cache's targets `leaves`
    /// (by index) translated in place; the others are called as
    /// `Ctx::cached_call` calls them:
    ///
    /// ```text
    /// mov r10, rcx ; lea ecx, [r9 - t1] ; jrcxz hit1 ; ... ; mov rcx, r10
    /// jmp probe
    /// hit1: jmp leaf1 ; hit2: jmp arm2 ; ...   ; within a JRCXZ's reach
    /// arm2: mov rcx, r10 ; call <t2> ; jmp cont   ; a callee called
    /// probe: <table lookup and call, or the miss exit while learning>
    /// cont: <continuation> ; jmp join
    /// leaf1: mov rcx, r10 ; <callee> ; <its ret> ; jmp join
    /// ...                              ; the other leaves
    /// join:
    /// ```
    ///
    /// Every path other than a leaf's brings R8 up to ESP first (a host
    /// call's callee and an exit need it there); each leaf's `ret` does
    /// it before the join. Up to [`MAX_CACHED_TARGETS`] targets.
    pub(super) fn cached_call_in_place(
        &mut self,
        i: &Instruction,
        leaves: &[(usize, Leaf)],
    ) -> Result<bool, TranslateError> {
        let cached = self.cached_targets(i);
        let (probe, cont, join) = (self.e.label(), self.e.label(), self.e.label());
        let hits = self.jump_if_r9_is_one_of(cached.iter().map(|p| p.1), Register::R10)?;
        self.flush_stack_lag_on_this_path()?;
        self.e.jmp_label(probe);
        let mut arms = Vec::new();
        let mut called = Vec::new();
        for (k, (hit, &(_, target))) in hits.into_iter().zip(cached).enumerate() {
            self.e.bind(hit);
            let arm = self.e.label();
            self.e.jmp_label(arm);
            match leaves.iter().find(|(at, _)| *at == k) {
                Some(&(_, leaf)) => arms.push((arm, leaf)),
                None => called.push((arm, target)),
            }
        }
        for (arm, target) in called {
            self.e.bind(arm);
            self.call_cached_target(target, cont)?;
        }
        // The probe's host call returns straight into the continuation.
        self.e.bind(probe);
        self.cached_call_probe(cached.len() < MAX_CACHED_TARGETS)?;
        self.e.bind(cont);
        self.continuation(i.next_ip32())?;
        self.e.jmp_label(join);
        let call = InlinedCall {
            ret_eip: i.next_ip32(),
            keeps_return: false,
            arms,
            join: Some(join),
            entry_lag: self.stack_pending,
        };
        self.next_leaf(call)?;
        Ok(false)
    }

    /// Starts the next callee of `call` (its first arm): its label, RCX
    /// back from R10 where the inline cache kept it, the lag of a callee's
    /// start, and the unit going on at the callee.
    fn next_leaf(&mut self, mut call: InlinedCall) -> Result<(), TranslateError> {
        let (label, leaf) = call.arms.remove(0);
        self.e.bind(label);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
        self.stack_pending = call.entry_lag;
        call.keeps_return = leaf.keeps_return;
        self.follow = Some(leaf.eip);
        self.inlined = Some(call);
        Ok(())
    }

    /// The `ret` (popping `extra` bytes more) of a leaf callee translated
    /// in place for `call`. ESP moves past the return address (into the
    /// lag when it may). Unless the callee keeps its return address, the
    /// address is loaded into R9D first and compared with the call's
    /// return point: any other jumps to a stub after the unit's code that
    /// leaves through the indirect-branch table with R8 at ESP
    /// ([`Ctx::leaf_return_elsewhere`]). Then the unit goes on at the
    /// return point (after the next callee of an inline cache, if any,
    /// and the join). No flag changes; RCX kept in R11 for the compare.
    pub(super) fn ret_in_place(
        &mut self,
        call: InlinedCall,
        extra: i64,
    ) -> Result<bool, TranslateError> {
        if call.keeps_return {
            self.stack_moved(4 + extra as i32)?;
            self.lag_within_bounds()?;
        } else {
            let at = self.stack_address(Register::R8)?;
            let top = mem(Register::R15, at, i64::from(self.stack_pending));
            self.load32(Register::R9D, top)?;
            self.stack_moved(4 + extra as i32)?;
            self.lag_within_bounds()?;
            let matched = self.jump_if_r9_is_one_of([call.ret_eip], Register::R11)?;
            let other = self.e.label();
            self.e.jmp_label(other);
            self.leaf_returns_elsewhere
                .push((other, self.stack_pending));
            for label in matched {
                self.e.bind(label);
            }
            self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R11)?)?;
        }
        let Some(join) = call.join else {
            self.follow = Some(call.ret_eip);
            return Ok(false);
        };
        self.flush_stack_lag()?;
        if call.arms.is_empty() {
            self.e.bind(join);
            self.follow = Some(call.ret_eip);
            return Ok(false);
        }
        self.e.jmp_label(join);
        self.next_leaf(call)?;
        Ok(false)
    }

    /// The stub at `label` of a leaf callee's `ret` translated in place
    /// that popped another address than its call's return point (into
    /// R9D), with stack lag `lag`: ESP brought up to date, then the
    /// lookup of R9D.
    pub(super) fn leaf_return_elsewhere(
        &mut self,
        label: Label,
        lag: i32,
    ) -> Result<(), TranslateError> {
        self.e.bind(label);
        self.move_r8_by(lag)?;
        self.indirect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn keeps(code: &[u8]) -> bool {
        let body: Vec<Instruction> = Decoder::with_ip(32, code, 0x1000, DecoderOptions::NONE)
            .into_iter()
            .collect();
        assert!(body.iter().all(|i| !i.is_invalid()), "{code:02x?}");
        keeps_return_slot(&body, &mut InstructionInfoFactory::new())
    }

    #[test]
    fn reads_and_writes_clear_of_the_return_address_keep_it() {
        assert!(keeps(&[]), "nothing at all");
        assert!(keeps(&[0x8b, 0x44, 0x24, 0x04]), "mov eax, [esp+4]");
        assert!(keeps(&[0x8b, 0x04, 0x24]), "mov eax, [esp]: a read");
        assert!(
            keeps(&[0x89, 0x44, 0x24, 0x04]),
            "mov [esp+4], eax: above it"
        );
        // sub esp, 8 ; mov [esp+4], eax ; add esp, 8
        assert!(keeps(&[
            0x83, 0xec, 0x08, 0x89, 0x44, 0x24, 0x04, 0x83, 0xc4, 0x08
        ]));
        // push ebp ; mov ebp, esp ; mov [ebp-4], eax ; leave
        assert!(keeps(&[0x55, 0x89, 0xe5, 0x89, 0x45, 0xfc, 0xc9]));
        // push ebx ; push esi ; pop esi ; pop ebx
        assert!(keeps(&[0x53, 0x56, 0x5e, 0x5b]));
        // lea esp, [esp-8] ; lea esp, [esp+8]
        assert!(keeps(&[0x8d, 0x64, 0x24, 0xf8, 0x8d, 0x64, 0x24, 0x08]));
    }

    #[test]
    fn a_write_that_may_reach_the_return_address_fails_the_proof() {
        assert!(!keeps(&[0x89, 0x04, 0x24]), "mov [esp], eax");
        assert!(!keeps(&[0x66, 0x89, 0x44, 0x24, 0x02]), "mov [esp+2], ax");
        assert!(!keeps(&[0x87, 0x04, 0x24]), "xchg [esp], eax");
        assert!(!keeps(&[0x89, 0x42, 0x04]), "mov [edx+4], eax: anywhere");
        assert!(!keeps(&[0x89, 0x04, 0x8c]), "mov [esp+ecx*4], eax");
        assert!(
            !keeps(&[0x26, 0x89, 0x44, 0x24, 0x08]),
            "mov es:[esp+8], eax"
        );
        // pop eax ; push ebx: the push lands on the return address.
        assert!(!keeps(&[0x58, 0x53]));
        // push ebp ; mov ebp, esp ; mov [ebp+4], eax ; pop ebp
        assert!(!keeps(&[0x55, 0x89, 0xe5, 0x89, 0x45, 0x04, 0x5d]));
        // mov ebp, esp ; inc ebp ; mov [ebp-8], eax: EBP no longer known.
        assert!(!keeps(&[0x89, 0xe5, 0x45, 0x89, 0x45, 0xf8]));
    }

    #[test]
    fn a_write_to_another_page_or_4_gib_away_at_the_slots_offset_fails_the_proof() {
        // mov dword ptr [esp+0x400000], 0: another page that may map the
        // slot's frame.
        assert!(!keeps(&[
            0xc7, 0x84, 0x24, 0x00, 0x00, 0x40, 0x00, 0, 0, 0, 0
        ]));
        // mov [esp+0xffe], eax: its last two bytes at the slot's offset.
        assert!(!keeps(&[0x89, 0x84, 0x24, 0xfe, 0x0f, 0x00, 0x00]));
        // sub esp, 0x80000000 (twice) ; mov [esp], eax ; add esp, ... (twice)
        let mut far = Vec::new();
        far.extend([0x81, 0xec, 0x00, 0x00, 0x00, 0x80].repeat(2));
        far.extend([0x89, 0x04, 0x24]);
        far.extend([0x81, 0xc4, 0x00, 0x00, 0x00, 0x80].repeat(2));
        assert!(!keeps(&far));
        // xsave [esp-16]: a store whose size iced-x86 does not give.
        assert!(!keeps(&[0x0f, 0xae, 0x64, 0x24, 0xf0]));
        assert!(
            keeps(&[0x89, 0x84, 0x24, 0x00, 0x08, 0x00, 0x00]),
            "mov [esp+0x800], eax"
        );
    }

    #[test]
    fn esp_moved_off_the_return_address_or_beyond_reckoning_fails_the_proof() {
        // push ax ; pop sp
        assert!(!keeps(&[0x66, 0x50, 0x66, 0x5c]));
        assert!(!keeps(&[0x83, 0xc4, 0x04]), "add esp, 4: returns elsewhere");
        assert!(!keeps(&[0x5b]), "pop ebx");
        assert!(!keeps(&[0x89, 0xec]), "mov esp, ebp");
        assert!(!keeps(&[0x5c]), "pop esp");
        assert!(!keeps(&[0x03, 0x24, 0x24]), "add esp, [esp]");
        assert!(!keeps(&[0xc9]), "leave with EBP unknown");
    }
}
