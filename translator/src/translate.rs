//! Translation of one unit of guest code into host code.
//!
//! A unit starts at a guest EIP and ends at a control transfer, at an
//! instruction the monitor must carry out, before the first instruction
//! that starts on the next guest page, or at the length limit.
//!
//! Invariants of emitted code (see docs/ARCHITECTURE.md):
//! - Guest registers are never written before the last guest-memory access
//!   of the same guest instruction that can fault, so a fault leaves the
//!   guest state of the instruction's start (modulo the recorded fix-up);
//!   a REP string instruction moves ECX, ESI and EDI between elements, as
//!   an interrupted `rep` leaves them. An instruction reaching memory
//!   through the software TLB does every lookup before its first store or
//!   register change, so a miss exits with the state of its start.
//! - No emitted sequence changes host flags except the guest's own
//!   instructions and PUSHF/POPF, which restore them before any access that
//!   can fault.
//! - Every exit stores the guest EIP at which execution continues.

mod events;
mod leaves;

pub use events::{
    gp_outside_ring0, starts_own_unit, InlineEvent, InlineInt, InlineIret, IretTarget, ReadCheck,
    MAX_CHECKS,
};

use crate::confine;
use crate::emit::{mem, Emitter, Label};
use crate::isa::{Availability, GuestIsa};
use crate::runtime::Stubs;
use crate::state::{off, ExitReason, Seg};
use crate::{i2, TranslateError};
use iced_x86::{
    Code, ConditionCode, Decoder, DecoderError, DecoderOptions, Instruction,
    InstructionInfoFactory, Mnemonic, OpKind, Register,
};

/// Guest instructions per unit at most.
pub const MAX_UNIT_INSNS: usize = 64;

/// How many conditional branches a unit goes on past unless the monitor
/// asks otherwise ([`UnitRequest::superblock_branches`]; docs/translator.md
/// has the measurements behind the number).
pub const DEFAULT_SUPERBLOCK_BRANCHES: u32 = 4;

/// How many direct branches a unit follows unless the monitor asks
/// otherwise ([`UnitRequest::followed_branches`]; docs/translator.md,
/// "Followed branches").
pub const DEFAULT_FOLLOWED_BRANCHES: u32 = 4;

/// Mode bits a translation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Mode {
    /// DS, ES, SS and CS all have base 0, so only FS/GS overrides add a base.
    pub flat: bool,
    /// CPL 0: CLI, STI, PUSHFD and POPFD run inline (IOPL cannot forbid
    /// them); at any other CPL the monitor carries them out.
    pub cpl0: bool,
    /// Every x87, MMX, SSE and FXSAVE/FXRSTOR instruction goes to the
    /// monitor (CR0.TS or CR0.EM is set: #NM or #UD decide there).
    pub fpu_exits: bool,
    /// WAIT/FWAIT goes to the monitor (CR0.TS and CR0.MP set: #NM).
    pub wait_exits: bool,
    /// SSE instructions go to the monitor (CR4.OSFXSR is clear: #UD).
    pub sse_exits: bool,
    /// RDTSC goes to the monitor (CR4.TSD at CPL > 0: #GP).
    pub rdtsc_exits: bool,
    /// The code segment is 16-bit (CS.D = 0): decode with 16-bit default
    /// operand and address sizes; stack instructions, string instructions
    /// and LOOP/JCXZ go to the monitor.
    pub code16: bool,
    /// The stack is 16-bit (SS.B = 0: SP, not ESP): every stack instruction
    /// goes to the monitor.
    pub stack16: bool,
    /// Every IN/OUT goes to the monitor (an I/O breakpoint is enabled), even
    /// to ports the platform ignores.
    pub io_exits: bool,
    /// Segments (bit `s` for [`Seg`] `s`) whose limit, expand-down bound,
    /// type or null selector can forbid an access: explicit memory operands
    /// through them are checked inline against `CpuState::seg_ranges`
    /// (#GP(0), #SS(0) through SS); stack instructions (SS) and string
    /// instructions (their source segment or ES) go to the monitor, which
    /// checks every access.
    pub limited: u8,
}

impl Mode {
    /// The bits used in cache keys.
    pub fn bits(self) -> u32 {
        u32::from(self.flat)
            | u32::from(self.cpl0) << 1
            | u32::from(self.fpu_exits) << 2
            | u32::from(self.sse_exits) << 3
            | u32::from(self.rdtsc_exits) << 4
            | u32::from(self.wait_exits) << 5
            | u32::from(self.code16) << 6
            | u32::from(self.stack16) << 7
            | u32::from(self.io_exits) << 8
            | u32::from(self.limited & 0x3f) << 9
    }

    /// Whether accesses through segment register `seg` are checked.
    fn is_limited(self, seg: Register) -> bool {
        seg_index(seg).is_some_and(|s| self.limited & (1 << s as u8) != 0)
    }

    /// Decoding bitness.
    fn bitness(self) -> u32 {
        if self.code16 {
            16
        } else {
            32
        }
    }

    /// Whether `i` must go to the monitor in this mode.
    fn exits(self, i: &Instruction) -> bool {
        use Mnemonic::*;
        let class = crate::isa::fpu_class(i);
        if (self.code16 || self.stack16 || self.is_limited(Register::SS)) && uses_stack(i) {
            return true;
        }
        if self.code16 && (i.is_string_instruction() || is_loop_like(i)) {
            return true;
        }
        if i.is_string_instruction()
            && (self.is_limited(Register::ES) || self.is_limited(i.memory_segment()))
        {
            return true;
        }
        match i.mnemonic() {
            Cli | Sti | Pushfd | Popfd => !self.cpl0,
            Rdtsc => self.rdtsc_exits,
            _ => match class {
                crate::isa::FpuClass::None => false,
                crate::isa::FpuClass::Wait => self.wait_exits,
                crate::isa::FpuClass::Sse => self.fpu_exits || self.sse_exits,
                _ => self.fpu_exits,
            },
        }
    }
}

/// An instruction that pushes or pops: its stack pointer arithmetic follows
/// SS.B and its default sizes CS.D.
fn uses_stack(i: &Instruction) -> bool {
    i.is_stack_instruction()
        || matches!(
            i.flow_control(),
            iced_x86::FlowControl::Call
                | iced_x86::FlowControl::IndirectCall
                | iced_x86::FlowControl::Return
                | iced_x86::FlowControl::Interrupt
        )
}

/// What a PUSH through the software TLB stores.
#[derive(Clone, Copy)]
enum SoftPushed {
    /// A host register holding a guest register (32 bits).
    Register(Register),
    /// A constant (an immediate, a return address).
    Immediate(u32),
    /// The 32 bits in spill slot 0 (through R9D, after the probe).
    Spilled,
}

/// Where a software-TLB miss goes.
#[derive(Clone, Copy)]
enum SoftMiss {
    /// A `SoftMiss` exit for the instruction at this EIP.
    Exit(u32),
    /// A jump to this label (R10D still the address).
    Jump(Label),
}

/// The registers PUSHAD stores, from ESP - 4 down (R8D is ESP).
const PUSHAD_ORDER: [Register; 8] = [
    Register::EAX,
    Register::ECX,
    Register::EDX,
    Register::EBX,
    Register::R8D,
    Register::EBP,
    Register::ESI,
    Register::EDI,
];

/// The registers POPAD loads, from ESP up (`None`: the skipped ESP).
const POPAD_ORDER: [Register; 8] = [
    Register::EDI,
    Register::ESI,
    Register::EBP,
    Register::None,
    Register::EBX,
    Register::EDX,
    Register::ECX,
    Register::EAX,
];

/// `[r14 + SPILL + 8 * k]`: spill slot `k` of the state block.
fn spill_slot(k: i64) -> iced_x86::MemoryOperand {
    mem(Register::R14, Register::None, i64::from(off::SPILL) + 8 * k)
}

/// `[r12 + r11 + disp]`: the software-TLB access (see `Ctx::soft_probe`),
/// `disp` bytes into it.
fn soft_slot(disp: i64) -> iced_x86::MemoryOperand {
    mem(Register::R12, Register::R11, disp)
}

/// `[r15 + r12*8 + disp]`: a slot of the software-TLB table at `disp`.
fn soft_table(disp: i64) -> iced_x86::MemoryOperand {
    iced_x86::MemoryOperand::new(
        Register::R15,
        Register::R12,
        8,
        disp,
        displ_size(disp),
        false,
        Register::None,
    )
}

/// The bound put on ECX right before a software-TLB `rep` chunk (a chunk
/// never has more than 4,096 elements), for the confinement check.
pub const SOFT_STRING_MAX_COUNT: u32 = 0x1fff;

/// Whether `i` is a string instruction with REP the translator can run
/// through the software TLB when the monitor asks (see
/// [`UnitRequest::soft_access`]): `rep movs` or `rep stos` (page by page,
/// `Ctx::soft_string`), `rep lods`, `repe`/`repne scas` and `repe`/`repne
/// cmps` (element by element, `Ctx::soft_rep_elements`), with 32-bit
/// addresses and no segment override of the source but DS or ES (the mode
/// must also be flat: both need segment bases of 0).
pub fn soft_string_candidate(i: &Instruction) -> bool {
    use Mnemonic::*;
    let chunked =
        matches!(i.mnemonic(), Movsb | Movsw | Movsd | Stosb | Stosw | Stosd) && i.has_rep_prefix();
    // LODS only with REP (its REPNE form stays in the window).
    let lods = matches!(i.mnemonic(), Lodsb | Lodsw | Lodsd);
    let by_element = soft_by_element(i) && (i.has_rep_prefix() || i.has_repne_prefix() && !lods);
    (chunked || by_element) && element_string(i)
}

/// Whether `i` is a REP string instruction that runs through the software
/// TLB one element per lookup (see [`soft_string_candidate`]).
fn soft_by_element(i: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        i.mnemonic(),
        Lodsb | Lodsw | Lodsd | Scasb | Scasw | Scasd | Cmpsb | Cmpsw | Cmpsd
    )
}

/// Whether `i` is a stack instruction whose stack access the translator
/// can send through the software TLB when the monitor asks (see
/// [`UnitRequest::soft_access`]; the mode must also be flat): a 32-bit
/// PUSH of a general register, an immediate or a memory operand, a 32-bit
/// POP into a general register other than ESP or into memory, a near CALL
/// (its return address; direct, through a register other than ESP, or
/// through memory, whose target is read through the software TLB too), a
/// 32-bit near RET (its return address), LEAVE and ENTER with level 0 (the
/// saved EBP), PUSHFD and POPFD (the flags' slot), PUSHAD and POPAD (their
/// 32 bytes as one access). A fresh process's stack grows page by page
/// under them.
pub fn soft_stack_candidate(i: &Instruction) -> bool {
    match i.mnemonic() {
        Mnemonic::Push => {
            i.stack_pointer_increment() == -4
                && match i.op0_kind() {
                    OpKind::Immediate8to32 | OpKind::Immediate32 => true,
                    OpKind::Register => {
                        i.op0_register().is_gpr32() || i.op0_register().is_segment_register()
                    }
                    OpKind::Memory => soft_stack_memory_form(i),
                    _ => false,
                }
        }
        Mnemonic::Pop => {
            i.stack_pointer_increment() == 4
                && match i.op0_kind() {
                    OpKind::Register => {
                        i.op0_register().is_gpr32() && i.op0_register() != Register::ESP
                    }
                    OpKind::Memory => soft_stack_memory_form(i),
                    _ => false,
                }
        }
        Mnemonic::Call => match i.code() {
            Code::Call_rel32_32 => true,
            Code::Call_rm32 if i.op0_kind() == OpKind::Memory => soft_stack_memory_form(i),
            // Its return address is pushed before the target is read.
            Code::Call_rm32 => {
                i.op0_kind() == OpKind::Register
                    && i.op0_register().is_gpr32()
                    && i.op0_register() != Register::ESP
            }
            _ => false,
        },
        Mnemonic::Ret => matches!(i.code(), Code::Retnd | Code::Retnd_imm16),
        Mnemonic::Leave => i.code() == Code::Leaved,
        Mnemonic::Enter => i.code() == Code::Enterd_imm16_imm8 && i.immediate8_2nd() == 0,
        Mnemonic::Pushad => i.code() == Code::Pushad,
        Mnemonic::Popad => i.code() == Code::Popad,
        Mnemonic::Pushfd => i.code() == Code::Pushfd,
        Mnemonic::Popfd => i.code() == Code::Popfd,
        _ => false,
    }
}

/// Whether `i` is an indirect jump whose target the translator can read
/// through the software TLB when the monitor asks (see
/// [`UnitRequest::soft_access`]; the mode must also be flat): a near `jmp
/// m32` with 32-bit addressing (a PLT entry's GOT slot, a jump table's
/// entry), as CALL m32 reads its target (see [`soft_stack_candidate`]).
pub fn soft_jump_candidate(i: &Instruction) -> bool {
    i.code() == Code::Jmp_rm32 && i.op0_kind() == OpKind::Memory && !is_16bit_address(i)
}

/// Whether `i` is a stack instruction with a memory operand whose two
/// accesses (the operand and the stack slot) can both go through the
/// software TLB (part of [`soft_stack_candidate`]): PUSH m32, POP m32 and
/// a near CALL m32, with 32-bit addressing.
fn soft_stack_memory_form(i: &Instruction) -> bool {
    matches!(i.code(), Code::Push_rm32 | Code::Pop_rm32 | Code::Call_rm32)
        && i.op0_kind() == OpKind::Memory
        && !is_16bit_address(i)
}

/// Whether `i` is an instruction with an implicit memory access the
/// translator can send through the software TLB when the monitor asks
/// (see [`UnitRequest::soft_access`]; the mode must also be flat): a
/// string instruction without a REP prefix (MOVS, STOS, LODS, SCAS, CMPS:
/// one element, DF honoured) with 32-bit addresses and no segment
/// override but DS or ES, and XLAT with a 32-bit EBX through DS.
pub fn soft_element_candidate(i: &Instruction) -> bool {
    if i.mnemonic() == Mnemonic::Xlatb {
        return i.memory_base() == Register::EBX && i.memory_segment() == Register::DS;
    }
    element_string(i) && !i.has_rep_prefix() && !i.has_repne_prefix()
}

/// MOVS, STOS, LODS, SCAS or CMPS with 32-bit addresses and no segment
/// override but DS or ES (of its source).
fn element_string(i: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        i.mnemonic(),
        Movsb
            | Movsw
            | Movsd
            | Stosb
            | Stosw
            | Stosd
            | Lodsb
            | Lodsw
            | Lodsd
            | Scasb
            | Scasw
            | Scasd
            | Cmpsb
            | Cmpsw
            | Cmpsd
    ) && i.is_string_instruction()
        && !(0..i.op_count()).any(|n| {
            matches!(
                i.op_kind(n),
                OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI
            )
        })
        && matches!(i.memory_segment(), Register::DS | Register::ES)
}

/// The element size of a string instruction.
fn string_element_size(i: &Instruction) -> u32 {
    use Mnemonic::*;
    match i.mnemonic() {
        Movsb | Stosb | Lodsb | Scasb | Cmpsb => 1,
        Movsw | Stosw | Lodsw | Scasw | Cmpsw => 2,
        _ => 4,
    }
}

/// iced-x86's displacement size for a 64-bit memory operand.
fn displ_size(disp: i64) -> u32 {
    match disp {
        0 => 0,
        -128..=127 => 1,
        _ => 8,
    }
}

/// The size of `i`'s explicit memory access and whether it writes it
/// (a read-modify-write needs the write range, which lies within the read
/// range of every segment that has one).
fn explicit_access(i: &Instruction) -> (u32, bool) {
    let size = i.memory_size().size() as u32;
    let info = iced_x86::InstructionInfoFactory::new().info(i).clone();
    let write = info.used_memory().iter().any(|m| {
        m.segment() == i.memory_segment()
            && m.base() == i.memory_base()
            && m.index() == i.memory_index()
            && matches!(
                m.access(),
                iced_x86::OpAccess::Write
                    | iced_x86::OpAccess::ReadWrite
                    | iced_x86::OpAccess::CondWrite
                    | iced_x86::OpAccess::ReadCondWrite
            )
    });
    (size, write)
}

/// Whether `i` is an instruction whose explicit memory operand can go
/// through the software TLB when the monitor asks (see
/// [`UnitRequest::soft_access`]): one the generic path translates (no
/// stack, string, control-transfer or specially translated instruction)
/// with an access of 1 to 16 bytes. The monitor asks only for these.
pub fn soft_access_candidate(i: &Instruction) -> bool {
    use Mnemonic::*;
    if i.is_string_instruction()
        || i.flow_control() != iced_x86::FlowControl::Next
        || uses_stack(i)
        || reaches_beyond_operand(i)
        || matches!(
            i.mnemonic(),
            Pushad
                | Popad
                | Pushfd
                | Popfd
                | Leave
                | Enter
                | Xlatb
                | Div
                | Idiv
                | Lea
                | Nop
                | Reservednop
        )
        || !(0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
    {
        return false;
    }
    // Exactly the explicit operand is accessed, and really accessed (a
    // PREFETCH never faults, so a miss must not raise #PF for it).
    let info = iced_x86::InstructionInfoFactory::new().info(i).clone();
    let used = info.used_memory();
    let explicit_only = used.len() == 1
        && used[0].base() == i.memory_base()
        && used[0].index() == i.memory_index()
        && !matches!(used[0].access(), iced_x86::OpAccess::NoMemAccess);
    explicit_only && ((1..=16).contains(&i.memory_size().size()) || wide_soft_access(i))
}

/// Whether `i` is FXSAVE or FXRSTOR (32-bit forms): its 512-byte area may
/// go through the software TLB as one access (the lookup hits only if the
/// area lies in one page; the verifier lets exactly these reach 512 bytes
/// past `r12 + r11`). Linux saves a task's FPU state with FXSAVE into its
/// task structure, a fresh page for many new processes.
pub fn wide_soft_access(i: &Instruction) -> bool {
    matches!(i.code(), Code::Fxsave_m512byte | Code::Fxrstor_m512byte)
}

/// BT, BTS, BTR and BTC with a register bit offset: they address up to
/// 256 MiB either side of their operand (iced-x86 reports only the operand
/// itself), which the window's 4 GiB guards absorb but the software TLB's
/// frame-relative access would not.
pub fn reaches_beyond_operand(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) && i.op1_kind() == OpKind::Register
}

/// Whether direct branch `i` of the unit starting at `unit_eip` may close
/// a cycle of units: its target is at or below the unit's start. Such a
/// branch polls (see `Ctx::poll`).
fn closes_cycle(i: &Instruction, unit_eip: u32) -> bool {
    matches!(i.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32)
        && (i.near_branch_target() as u32) <= unit_eip
}

/// LOOP, LOOPE, LOOPNE, JCXZ, JECXZ.
fn is_loop_like(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne | Mnemonic::Jecxz | Mnemonic::Jcxz
    )
}

/// What the translator needs to translate one unit.
pub struct UnitRequest<'a> {
    /// Guest EIP of the first instruction.
    pub eip: u32,
    /// Guest bytes from `eip` to the end of its linear page plus up to 15
    /// more.
    pub code: &'a [u8],
    /// Guest bytes of the same linear page before `eip` (the last byte is
    /// the one at `eip - 1`; fewer, or none, when the monitor gives fewer):
    /// a followed branch (see [`UnitRequest::followed_branches`]) may go
    /// back there.
    pub code_before: &'a [u8],
    /// The EIP of the first byte of the next linear page (CS base + EIP
    /// crosses a page there): the unit stops before it.
    pub page_end: u32,
    /// The mode to translate for.
    pub mode: Mode,
    /// Host address where the unit will run.
    pub host_base: u64,
    /// The runtime stubs.
    pub stubs: Stubs,
    /// At most this many guest instructions (1 for a single-step unit).
    pub max_insns: usize,
    /// Host address of a u64 incremented on every indirect-branch hit.
    pub count_indirect: Option<u64>,
    /// Host address of a u64 incremented every time the unit is entered.
    pub count_entries: Option<u64>,
    /// The indirect-branch table tag of this unit's mode (see
    /// [`crate::ibtc`]): lookups of its indirect branches match only
    /// entries with this tag.
    pub ibtc_tag: u32,
    /// Tags (bit `t` for tag `t`) whose table is `CpuState::ibtc_shared`
    /// rather than `CpuState::ibtc`.
    pub shared_ibtc_tags: u32,
    /// The instruction-set extensions the guest CPU offers.
    pub isa: GuestIsa,
    /// The token of the unit's first `Emulate` exit (`None`: the unit's
    /// exits carry no token, see [`Unit::emulated`]).
    pub emulate_tokens_from: Option<u32>,
    /// The guest CPU's CPUID answers, for CPUID inline (`None`: CPUID
    /// exits to the monitor).
    pub cpuid: Option<&'a CpuidAnswers>,
    /// Ports no device claims: at CPL 0, IN/OUT with an immediate port
    /// there run inline (OUT does nothing, IN reads all ones), as the
    /// platform would answer them.
    pub ignored_ports: Option<&'a PortSet>,
    /// SYSENTER and SYSEXIT carried out inline, as the monitor worked them
    /// out for the current system state (`None`: both go to the monitor).
    pub transitions: Option<Transitions>,
    /// The unit's first instruction (an INT n or IRET) carried out inline,
    /// as the monitor worked it out (`None`: the monitor carries it out).
    pub event: Option<&'a InlineEvent>,
    /// The #DE of a zero divisor delivered inline (`None`: a `Raise` exit).
    pub divide_error: Option<&'a InlineInt>,
    /// End the unit before an INT n or IRET that is not its first
    /// instruction, so that it starts a unit of its own, for which the
    /// monitor can offer an [`InlineEvent`].
    pub split_events: bool,
    /// Guest paging is on (see [`PagedCode`]); `None`: linear addresses
    /// are physical ones, and every direct branch may be chained.
    pub paged: Option<PagedCode>,
    /// The unit checks its own guest bytes (at CS base + `eip`) every time
    /// it is entered, and ends after every instruction that writes memory:
    /// its frame is written so often that it is not write-protected (see
    /// `smc` in the monitor). A mismatch exits with `CodeChanged` before
    /// anything ran.
    pub self_check: bool,
    /// Guest EIPs of *adaptive* instructions: their explicit memory
    /// operand goes through the software TLB of the current window
    /// (`shadowmmu::SoftTlb`) instead of the window, and a miss exits with
    /// [`ExitReason::SoftMiss`] (see `Ctx::soft_operand`). Only
    /// instructions translated by the generic path use it; the others
    /// ignore the request.
    pub soft_access: &'a [u32],
    /// Guest `call`/`ret` become host `call`/`ret` on the return-prediction
    /// stack (see [`crate::rstack`]): `CpuState::rsb_top` names one, and
    /// the host has BMI2 (the call's room check rotates RSP with RORX).
    pub return_stack: bool,
    /// How many conditional branches a unit continues past (a
    /// *superblock*): the taken path leaves through a chainable exit and
    /// the not-taken path goes on in the same unit. 0 ends every unit at
    /// its first conditional branch.
    pub superblock_branches: u32,
    /// How many direct branches a unit *follows*: a `jmp rel` to its own
    /// linear page, or the taken path of a conditional branch back in its
    /// page (a loop's back edge, whose not-taken path then leaves through
    /// a chainable exit), goes on with the target's translation in the
    /// same unit instead of ending it, unless the target was translated in
    /// the unit already. 0 follows none. Never in a self-checking unit.
    pub followed_branches: u32,
    /// Displacements are folded into host addressing (see
    /// [`FOLDED_DISPLACEMENTS`]): a flat-segment `[reg + disp]` becomes
    /// `[r15 + reg + disp]` and an absolute `[disp]` below 2 GiB becomes
    /// `[r15 + disp]`, instead of a `lea` into R10 first. An address that
    /// wraps around 4 GiB then reaches a guard beside the window, and the
    /// monitor runs the instruction again alone, unfolded.
    pub fold_displacements: bool,
    /// Guest EIPs whose memory operand is not folded (their address
    /// wrapped around 4 GiB before).
    pub unfolded: &'a [u32],
    /// Position-independent code's PC thunks the monitor has seen
    /// (`mov r32, [esp]; ret`, 4 bytes), by EIP: their register and their
    /// bytes. A ring-3 `call` to one runs it inline (see
    /// `Ctx::call_pc_thunk`), checking the bytes each time.
    pub pc_thunks: Option<&'a std::collections::HashMap<u32, PcThunk>>,
    /// With guest paging, a direct branch to another linear page in the
    /// unit's own mode jumps through the current view's chain table
    /// (`jmp [r15 + shadowmmu::CHAIN_TABLE_OFFSET + 8k]`) instead of
    /// probing the indirect-branch table; its sites take slot numbers `k`
    /// from this one up ([`Unit::chain_slots`]). `None`: they probe.
    pub chain_slots_from: Option<u32>,
    /// Data segment loads a ring-0 unit in a flat mode carries out itself
    /// (`MOV` or `POP` to DS/ES/FS/GS, see [`InlineSegmentLoad`]): by
    /// segment (0 = ES .. 5 = GS), the selectors it expects. Any other selector, or a
    /// descriptor that changed, goes to the monitor as before.
    pub segment_loads: &'a [(u8, InlineSegmentLoad)],
    /// Ring-0 `VERW` instructions the unit carries out itself, by EIP
    /// (see [`InlineVerw`]).
    pub verw: &'a [(u32, InlineVerw)],
    /// Predicted targets of `jmp [disp32]` (a static executable's PLT
    /// entry: its GOT slot), by the jump's EIP: what the slot held when
    /// the unit was made. The jump compares the target it loads with the
    /// prediction and, when they agree, goes on by a chained direct jump
    /// instead of the indirect-branch table (see
    /// [`indirect_prediction_candidate`]).
    pub jump_predictions: &'a [(u32, u32)],
    /// Jump tables (`jmp [idx*4 + disp32]`, a `switch`, or the `jmp r` of
    /// a position-independent one, see [`pic_jump_table`]), by the jump's
    /// EIP: the targets the table's first [`JUMP_TABLE_ENTRIES`] entries
    /// held when the unit was made (fewer where the table's page or RAM
    /// ends; a PIC table's entries plus the base register's value). With
    /// chain tables, such a jump goes through a host table indexed by the
    /// low byte of the guest's index (see [`jump_table_candidate`] and
    /// `Ctx::table_jump`).
    pub jump_tables: &'a [JumpTable],
    /// Inline caches of indirect calls and jumps (`call r/m32`, `jmp
    /// r/m32` other than a jump table or a predicted `jmp [disp32]`), by
    /// the branch's EIP, sorted by EIP only: the targets (at most
    /// [`MAX_CACHED_TARGETS`] per site, the first compared first) the
    /// monitor saw the site take. The site compares the target it loads
    /// with them in turn and, on a match, calls or jumps there as a direct
    /// branch (chained, or through a chain-table slot), or runs a leaf
    /// callee in place (see [`UnitRequest::inline_leaves`]); any other
    /// target takes the indirect-branch table. A site with more than
    /// [`MAX_COMPARED_TARGETS`] targets and no leaf among them probes the
    /// table instead. A table miss at such a site names it in
    /// `CpuState::exit_site` (see [`site_of_miss`]), which is how the
    /// monitor learns the target.
    pub branch_predictions: &'a [(u32, u32)],
    /// Indirect calls and jumps, by EIP (sorted), whose targets the
    /// monitor is learning: each such site exits at every run with an
    /// `IndirectMiss` that names it, instead of probing the table.
    pub learning_sites: &'a [u32],
    /// Direct calls, and inline-cache matches of indirect calls, whose
    /// callee is a short *leaf* in the unit's page (see
    /// [`MAX_LEAF_INSNS`]) translate the callee in place: the return
    /// address is stored as the call stores it, the callee's instructions
    /// follow, and its `ret` loads the address back, compares it with the
    /// call's return point and goes on there in the same unit (any other
    /// address goes through the indirect-branch table); a callee that
    /// provably leaves its return address alone skips the load and the
    /// compare. No host call, return or continuation. Never in a
    /// self-checking unit.
    pub inline_leaves: bool,
}

/// The most instructions (its `ret` included) a leaf callee may have to
/// be translated in place at a call (see [`UnitRequest::inline_leaves`]).
pub const MAX_LEAF_INSNS: usize = 12;

/// The most instructions of leaf callees a unit translates in place, on
/// top of its own [`MAX_UNIT_INSNS`] (a loop calling through inline
/// caches of a few leaves each takes them all in).
pub const MAX_LEAF_UNIT_INSNS: usize = 64;

/// The most targets an inline cache holds (see
/// [`UnitRequest::branch_predictions`]).
pub const MAX_CACHED_TARGETS: usize = 8;

/// The most targets an inline cache compares with when none of its
/// callees runs in place (every match leaves the unit): a chain of
/// compares that mostly fail costs more than a table probe, and the
/// matches' code must stay within a JRCXZ's reach of the compares.
pub const MAX_COMPARED_TARGETS: usize = 4;

/// `CpuState::exit_site` of an `IndirectMiss` exit that names no site whose
/// target the monitor may learn (a `ret`, a direct branch's table probe, a
/// jump table).
pub const NO_SITE: u32 = u32::MAX;

/// The site an `IndirectMiss` exit names (`CpuState::exit_site`, see
/// [`UnitRequest::branch_predictions`]), if any.
pub fn site_of_miss(exit_site: u64) -> Option<u32> {
    Some(exit_site as u32).filter(|s| *s != NO_SITE)
}

/// Entries of a jump table that get a host entry of their own: the low
/// byte of the index selects one, so a `movzx` bounds it without touching
/// the flags.
pub const JUMP_TABLE_ENTRIES: usize = 256;

/// The targets a jump table held when its jump was translated (see
/// [`UnitRequest::jump_tables`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpTable {
    /// The jump's EIP.
    pub eip: u32,
    /// Entry `m`'s target, for `m` below [`JUMP_TABLE_ENTRIES`].
    pub targets: Vec<u32>,
    /// The first chain slot of a host table an earlier unit made for the
    /// same targets in the same mode (see [`Unit::jump_table_slots`]): the
    /// jump goes through it, so that every copy of a guest jump table's
    /// jump (in the units that followed branches to it) shares one host
    /// table. `None`: the unit makes a table of its own.
    pub slots: Option<u32>,
}

/// Whether `i` is a jump through a table of 4-byte targets at a constant
/// address indexed by a register (`jmp [idx*4 + disp32]`, no base, no
/// segment override: what a C `switch` compiles to outside
/// position-independent code), whose targets the monitor may read ahead
/// for [`UnitRequest::jump_tables`].
pub fn jump_table_candidate(i: &Instruction) -> bool {
    i.code() == Code::Jmp_rm32
        && i.op0_kind() == OpKind::Memory
        && i.memory_base() == Register::None
        && i.memory_index_scale() == 4
        && i.memory_index().is_gpr32()
        && i.segment_prefix() == Register::None
}

/// The table of a position-independent jump table (what a C `switch`
/// compiles to in PIC code, GOT-relative entries):
///
/// ```text
/// mov r, [base + index*4 + disp]
/// add r, base
/// jmp r
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PicJumpTable {
    /// The register holding the GOT's address (EBX in i386 PIC code).
    pub base: Register,
    /// The index register.
    pub index: Register,
    /// The table's offset from `base`.
    pub disp: u32,
}

/// The table `jmp` jumps through when it ends a position-independent jump
/// table whose two other instructions are `previous` (the one right before
/// it last): see [`PicJumpTable`]. The entry is relative to `base`, and
/// neither the load nor the add writes `base` or `index`.
pub fn pic_jump_table(previous: [&Instruction; 2], jmp: &Instruction) -> Option<PicJumpTable> {
    let [load, add] = previous;
    let r = jmp.op0_register();
    let jumps_through_register =
        jmp.code() == Code::Jmp_rm32 && jmp.op0_kind() == OpKind::Register && r != Register::ESP;
    let base = load.memory_base();
    let index = load.memory_index();
    let loads = load.code() == Code::Mov_r32_rm32
        && load.op0_register() == r
        && load.op1_kind() == OpKind::Memory
        && base.is_gpr32()
        && base != Register::ESP
        && index.is_gpr32()
        && load.memory_index_scale() == 4
        && load.segment_prefix() == Register::None
        && r != base
        && r != index;
    let adds_base = matches!(add.code(), Code::Add_r32_rm32 | Code::Add_rm32_r32)
        && add.op0_kind() == OpKind::Register
        && add.op1_kind() == OpKind::Register
        && add.op0_register() == r
        && add.op1_register() == base;
    (jumps_through_register && loads && adds_base).then(|| PicJumpTable {
        base,
        index,
        disp: load.memory_displacement32(),
    })
}

/// Whether `i` is an indirect jump whose target the monitor may predict
/// for [`UnitRequest::jump_predictions`]: `jmp [disp32]`, a memory
/// operand of a constant address (no base, no index).
pub fn indirect_prediction_candidate(i: &Instruction) -> bool {
    i.code() == Code::Jmp_rm32
        && i.op0_kind() == OpKind::Memory
        && i.memory_base() == Register::None
        && i.memory_index() == Register::None
}

/// A `VERW` (ZF = whether a selector names a segment writable at the CPL)
/// that ring-0 translated code answers itself: the monitor worked the
/// answer out for the selector its memory operand held when the unit was
/// translated, and the code compares the selector it reads and the
/// descriptor's 8 bytes with what the answer was worked out from. Linux
/// runs one on every return to user mode (`verw mds_verw_sel`, its
/// CPU-buffer clearing), always with the same selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlineVerw {
    /// The selector.
    pub selector: u16,
    /// The descriptor's linear address and bytes; `None` when the answer
    /// reads none (a null selector, or one beyond its table's limit).
    pub descriptor: Option<(u32, u64)>,
    /// The answer: ZF.
    pub writable: bool,
}

/// What PEXT gives for `value` and `mask`: the bits of `value` under
/// `mask`, gathered from bit 0 up in order.
pub fn pext(value: u64, mask: u64) -> u64 {
    let (mut out, mut k) = (0u64, 0);
    for bit in (0..64).filter(|b| mask >> b & 1 == 1) {
        out |= (value >> bit & 1) << k;
        k += 1;
    }
    out
}

/// Selectors a `mov` to one segment register compares with, at most.
pub const MAX_SEGMENT_LOADS: usize = 2;

/// A data segment load (MOV or POP to DS, ES, FS or GS) that translated code may
/// carry out itself: the monitor worked it out for one selector with the
/// same checks it applies (in ring 0; a descriptor with its accessed bit
/// set, so the load writes nothing), and the code compares the selector
/// and the descriptor's 8 bytes in memory (through the window) with the
/// ones it was worked out from before applying it. Kernels load DS, ES and
/// FS on every system call and interrupt (Linux: `__USER_DS` and
/// `__KERNEL_PERCPU` on entry, the user's FS on the way out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlineSegmentLoad {
    /// The selector.
    pub selector: u16,
    /// The descriptor's linear address and its 8 bytes; `None` for a null
    /// selector, which reads no descriptor.
    pub descriptor: Option<(u32, u64)>,
    /// The segment's base and its `CpuState::seg_ranges` after the load.
    pub base: u32,
    /// See [`InlineSegmentLoad::base`].
    pub ranges: [u64; 4],
    /// The translation-key mode bits after the load (the unit's own when
    /// the load changes nothing a translation depends on), and that
    /// mode's indirect-branch tag.
    pub mode: u32,
    /// See [`InlineSegmentLoad::mode`].
    pub tag: u32,
    /// The descriptor's base may differ from `descriptor`'s (FS and GS
    /// only, whose base no translation depends on; the host has BMI2):
    /// the code compares every other bit and takes the base from memory
    /// (with PEXT). Linux rewrites its TLS descriptors, which GS loads,
    /// at every context switch.
    pub any_base: bool,
    /// A return to ring 3 would make the segment null (its DPL is below
    /// 3): an inline IRET to ring 3 must leave it to the monitor.
    pub blocks_iret: bool,
}

/// The base bits of a segment descriptor (15:0 of the base at 16, 23:16
/// at 32, 31:24 at 56), in the order PEXT gathers them.
pub const DESCRIPTOR_BASE_BITS: u64 = 0xff00_00ff_ffff_0000;

/// The displacements folded into `[r15 + reg + disp]` (see
/// [`UnitRequest::fold_displacements`]): with `reg` below 4 GiB, every such
/// address lies within 512 MiB before the window or 2 GiB after it, inside
/// the guards (`shadowmmu::WINDOW_GUARD`, 4 GiB each side) and 512 MiB clear
/// of the software TLB at 1 GiB before the window. Displacements below
/// that are mostly addresses in a kernel's upper gigabyte, used with a
/// small index: they would wrap every time, so they keep the `lea`.
pub const FOLDED_DISPLACEMENTS: std::ops::Range<i64> = -(1 << 29)..1 << 31;

/// How a unit is translated when guest paging is on, so that it stays
/// right in every address space that maps its first page to the same
/// frame (translations are keyed by physical address and shared by all
/// address spaces):
/// - a direct branch to another linear page is never chained (another
///   address space may map other code there): its exit probes the
///   indirect-branch table of the current address space for the target,
///   and exits only on a miss;
/// - an instruction that runs into the next linear page starts a unit of
///   its own, which first compares the bytes it took from that page with
///   what the page holds now (through the window, so an unmapped page
///   faults as the fetch would) and exits with `CodeChanged` if they
///   differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedCode {
    /// The CS base (linear = CS base + EIP).
    pub cs_base: u32,
}

impl PagedCode {
    /// Whether guest EIPs `a` and `b` lie in the same linear page.
    pub fn same_page(self, a: u32, b: u32) -> bool {
        (self.cs_base.wrapping_add(a) ^ self.cs_base.wrapping_add(b)) >> 12 == 0
    }
}

/// What translated code needs to carry out SYSENTER or SYSEXIT itself:
/// everything the instruction changes that does not come from guest
/// registers, and the translation mode it leads to. Valid until the
/// IA32_SYSENTER_* MSRs or the paging state change (the monitor flushes
/// the translations then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlineTransition {
    /// The new EIP (SYSENTER: IA32_SYSENTER_EIP; SYSEXIT takes EDX).
    pub eip: u32,
    /// The new ESP (SYSENTER: IA32_SYSENTER_ESP; SYSEXIT takes ECX).
    pub esp: u32,
    /// The new CS and SS selectors.
    pub selectors: [u16; 2],
    /// The new `CpuState::seg_ranges` of CS and SS.
    pub ranges: [[u64; 4]; 2],
    /// The translation-key mode bits of the code it leads to.
    pub mode: u32,
    /// The indirect-branch table tag of that mode.
    pub tag: u32,
    /// The view it runs in (an index of `CpuState::view_bases`).
    pub view: u32,
}

/// The inline privilege changes a unit may make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    /// SYSENTER (any CPL).
    pub sysenter: Option<InlineTransition>,
    /// SYSEXIT (only offered for CPL 0 units).
    pub sysexit: Option<InlineTransition>,
}

/// A set of I/O ports.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        PortSet(Box::new([0; 1024]))
    }
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "PortSet({count} ports)")
    }
}

impl PortSet {
    /// Adds `port`.
    pub fn insert(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] >> (port & 63) & 1 == 1
    }

    /// Whether all `size` ports from `port` are in the set (a range past
    /// port 0xFFFF never is).
    pub fn contains_range(&self, port: u16, size: u16) -> bool {
        (0..size).all(|k| port.checked_add(k).is_some_and(|p| self.contains(p)))
    }
}

/// Every answer of the guest CPU's CPUID, which depends on the leaf (EAX)
/// alone: translated code answers CPUID from these without an exit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidAnswers {
    /// `(leaf, [eax, ebx, ecx, edx])`, the most frequently asked first.
    pub leaves: Vec<(u32, [u32; 4])>,
    /// The answer for every other leaf.
    pub otherwise: [u32; 4],
}

/// A fix-up the run loop applies to registers saved at a fault, as bits:
/// bits 0-2 hold `SWAP_BASE + n` for a byte swap of register `n` (AL..BL),
/// [`SI_REBASED`] and [`DI_REBASED`] say that ESI/EDI hold segment base +
/// offset (a string instruction through a segment with a base), the base
/// of segment [`si_segment`] for ESI and of ES for EDI.
pub mod fixup {
    /// Nothing to fix.
    pub const NONE: u8 = 0;
    /// Bytes 0 and 1 of guest register `(f & 7) - SWAP_BASE` are exchanged.
    pub const SWAP_BASE: u8 = 1;
    /// ESI holds (base of segment `si_segment(f)` + ESI) mod 2^32.
    pub const SI_REBASED: u8 = 0x80;
    /// EDI holds (ES base + EDI) mod 2^32.
    pub const DI_REBASED: u8 = 0x08;

    /// A host fault anywhere in the instruction's emitted code means: let
    /// the monitor carry the instruction out (an inline INT n or IRET, see
    /// `events`; nothing of it took effect). Checked before the bits
    /// above, which it does not combine with.
    pub const REDO_IN_MONITOR: u8 = 0x7f;
    /// A host fault here means: the instruction raises #DE (its divisor
    /// was zero), which the monitor delivers (an inline #DE delivery that
    /// faulted, nothing of it took effect).
    pub const DIVIDE_ERROR_IN_MONITOR: u8 = 0x7e;
    /// A host fault here that is the guest's own exception means: run the
    /// instruction again alone (a call whose PC thunk runs inline reads
    /// the thunk's bytes first, which must not fault where the CPU would
    /// not; nothing of it took effect). Other faults are handled as
    /// usual. Checked before the bits above, which it does not combine
    /// with.
    pub const RUN_ALONE_ON_GUEST_FAULT: u8 = 0x7d;

    /// The segment register number (0 = ES .. 5 = GS) ESI was rebased by.
    pub fn si_segment(f: u8) -> usize {
        usize::from((f >> 4) & 7)
    }

    /// The register whose bytes 0 and 1 are exchanged, if any.
    pub fn swapped(f: u8) -> Option<usize> {
        let n = f & 7;
        (n >= SWAP_BASE).then(|| usize::from(n - SWAP_BASE))
    }
}

/// A translated unit, ready to be copied to `host_base`.
pub struct Unit {
    /// Host code (body followed by exit stubs).
    pub code: Vec<u8>,
    /// (host offset, guest EIP) for every guest instruction.
    pub pc_map: Vec<(u32, u32)>,
    /// Fault fix-up per guest instruction (see [`fixup`]).
    pub fixups: Vec<u8>,
    /// Direct-branch sites: (rel32 offset, stub offset), relative to the unit.
    pub sites: Vec<(usize, usize)>,
    /// Bytes of guest code covered, from `eip`.
    pub guest_len: u32,
    /// Bytes of guest code covered before `eip` (in its linear page), where
    /// a followed branch went back: the unit's code lies in `eip -
    /// guest_before .. eip + guest_len`.
    pub guest_before: u32,
    /// The guest instructions, for listings.
    pub insns: Vec<Instruction>,
    /// The ports of IN/OUT instructions that run inline (see
    /// [`UnitRequest::ignored_ports`]).
    pub inline_ports: Vec<u16>,
    /// The instructions this unit's `Emulate` exits hand to the monitor,
    /// in token order from `emulate_tokens_from`: an exit stores its token
    /// in `CpuState::emulate_token` ([`NO_TOKEN`] when it has none), so the
    /// monitor need not fetch and decode the instruction again.
    pub emulated: Vec<Instruction>,
    /// The EIPs of the instructions this unit sends through the software
    /// TLB (of those [`UnitRequest::soft_access`] named).
    pub soft_eips: Vec<u32>,
    /// The chain-table slots of its cross-page branches (see
    /// [`UnitRequest::chain_slots_from`]), numbered from there.
    pub chain_slots: Vec<ChainSlot>,
    /// The EIPs of its indirect calls and jumps that could have an inline
    /// cache but have none and are not being learned (see
    /// [`UnitRequest::branch_predictions`]).
    pub uncached_sites: Vec<u32>,
    /// (jump's EIP, first chain slot) of every host jump table the unit
    /// made (its branch entries are that slot and the next
    /// [`JUMP_TABLE_ENTRIES`]` - 1`, its keys the [`JUMP_TABLE_ENTRIES`]
    /// after them), for [`JumpTable::slots`] of later units.
    pub jump_table_slots: Vec<(u32, u32)>,
    /// (pc-map index, lag) for every instruction that starts with R8 not
    /// yet holding guest ESP: guest ESP is R8 + lag there (see
    /// [`MAX_STACK_LAG`]); instructions not listed start with lag 0.
    pub stack_lags: Vec<(u32, i8)>,
    /// The guest bytes of leaf callees translated in place (see
    /// [`UnitRequest::inline_leaves`]), as (EIP, length) in the unit's
    /// page: code of the unit besides `guest_before`/`guest_len`'s range,
    /// which covers the caller's instructions only.
    pub leaf_ranges: Vec<(u32, u32)>,
}

/// The largest distance, in bytes, between guest ESP and R8 that a run of
/// PUSH/POP instructions leaves pending (see `Ctx::keeps_stack_lag`).
pub const MAX_STACK_LAG: i32 = 64;

/// A PC thunk of position-independent i386 code (`__x86.get_pc_thunk.*`:
/// `mov r32, [esp]; ret`), which loads its caller's return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcThunk {
    /// The 32-bit register it loads.
    pub reg: Register,
    /// Its 4 bytes, little-endian.
    pub bytes: u32,
}

impl PcThunk {
    /// The thunk the two instructions `insns` of a unit made from guest
    /// bytes `code` are, if they are one (4 bytes in all).
    pub fn of(insns: &[Instruction], code: &[u8]) -> Option<PcThunk> {
        let [load, ret] = insns else {
            return None;
        };
        let is_load = load.code() == Code::Mov_r32_rm32
            && load.op1_kind() == OpKind::Memory
            && load.memory_base() == Register::ESP
            && load.memory_index() == Register::None
            && load.memory_displacement32() == 0
            && load.segment_prefix() == Register::None
            && load.len() == 3
            && load.op0_register() != Register::ESP;
        let bytes = u32::from_le_bytes(code.get(..4)?.try_into().ok()?);
        (is_load && ret.code() == Code::Retnd && ret.len() == 1).then_some(PcThunk {
            reg: load.op0_register(),
            bytes,
        })
    }
}

/// One cross-page branch site that jumps through the chain table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainSlot {
    /// Its slot number.
    pub slot: u32,
    /// The guest EIP it branches to.
    pub target: u32,
    /// Offset in the unit of its stub, which exits with
    /// `ExitReason::ChainSlotMiss` (where a slot not set for a view leads).
    pub stub: usize,
    /// What the slot is for.
    pub kind: SlotKind,
}

/// What a chain-table slot is for (see [`ChainSlot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A direct branch's.
    Branch,
    /// One entry of a jump table (see `Ctx::table_jump`): a branch to
    /// `target` when the jump's target matched the entry's key.
    TableBranch,
    /// A jump table's key: the entry always holds this value,
    /// `crate::ibtc::key_of` of `target` (what the jump compares the
    /// target it loaded with), or 0 (no target), in every view; nothing
    /// branches through it and `stub` means nothing.
    TableKey(u64),
}

/// `CpuState::emulate_token` of an `Emulate` exit without a decoded
/// instruction.
pub const NO_TOKEN: u32 = u32::MAX;

struct Exit {
    label: Label,
    target: u32,
    rel32: usize,
    /// The target's mode when it is not the unit's (see
    /// `CpuState::chain_mode`).
    mode: Option<u32>,
    /// The target lies in another linear page while paging is on: the
    /// exit probes the indirect-branch table of this tag instead of
    /// waiting to be chained (see [`PagedCode`]).
    probe: Option<u32>,
}

struct Ctx<'a> {
    e: Emitter,
    req: &'a UnitRequest<'a>,
    exits: Vec<Exit>,
    fixup: u8,
    info: InstructionInfoFactory,
    /// The guest instruction being translated.
    current: Option<Instruction>,
    /// The two guest instructions translated before the current one in
    /// this unit, the latest last (see [`pic_jump_table`]).
    previous: [Option<Instruction>; 2],
    emulated: Vec<Instruction>,
    inline_ports: Vec<u16>,
    /// See [`Unit::soft_eips`].
    soft_eips: Vec<u32>,
    /// See [`Unit::chain_slots`].
    chain_slots: Vec<ChainSlot>,
    /// See [`Unit::uncached_sites`].
    uncached_sites: Vec<u32>,
    /// See [`Unit::jump_table_slots`].
    jump_table_slots: Vec<(u32, u32)>,
    /// Indices in `chain_slots` of the slots whose branch was made in
    /// place (`jmp`/`call` through the entry): their miss stubs come with
    /// the exit stubs.
    slot_stubs: Vec<usize>,
    /// The jump tables' shared miss stubs, with the index in `chain_slots`
    /// of each table's first host entry (see `Ctx::table_jump`).
    table_stubs: Vec<(Label, usize)>,
    /// Extra (host offset, guest EIP, fix-up) entries inside the current
    /// instruction's code, from where a fault is handled differently.
    sub_entries: Vec<(u32, u32, u8)>,
    /// Conditional branches the unit went on past so far.
    branches_passed: u32,
    /// Guest ESP minus R8 (mod 2^32) at this point of the emitted code:
    /// pushes and pops of a run of instructions that keep a lag store and
    /// load relative to it and leave R8 alone, and the first instruction
    /// that does not keep one brings R8 up to date first.
    stack_pending: i32,
    /// Whether the instruction being translated may leave a lag pending.
    lag_ok: bool,
    /// The EIP of a backward conditional branch whose poll was emitted
    /// before the flag-setting instruction in front of it (see
    /// [`poll_goes_before`]).
    poll_hoisted_for: Option<u32>,
    /// The guest bytes of the unit's page the unit may translate: those of
    /// `UnitRequest::code_before` and then `UnitRequest::code`.
    page: &'a [u8],
    /// The EIP of `page[0]`.
    page_eip: u32,
    /// The target of the branch just followed (see
    /// [`UnitRequest::followed_branches`]): translation goes on there.
    follow: Option<u32>,
    /// Branches the unit may still follow.
    follows_left: u32,
    /// Whether the unit followed a branch.
    followed: bool,
    /// The EIPs of the instructions translated so far.
    translated: Vec<u32>,
    /// The call whose leaf callee is being translated in place.
    inlined: Option<leaves::InlinedCall>,
    /// Leaf callees' instructions translated in place so far.
    leaf_insns: usize,
    /// The stubs of leaf callees' returns elsewhere than their calls'
    /// return points, with the stack lag there (see
    /// [`Ctx::leaf_return_elsewhere`]).
    leaf_returns_elsewhere: Vec<(Label, i32)>,
    /// Whether calls may take leaf callees in (see
    /// [`UnitRequest::inline_leaves`]).
    inline_leaves: bool,
}

/// Adds the `len` guest bytes at `eip` to `ranges` ((EIP, length) pairs),
/// extending the last one when they follow it.
fn note_range(ranges: &mut Vec<(u32, u32)>, eip: u32, len: u32) {
    match ranges.last_mut() {
        Some((at, n)) if at.wrapping_add(*n) == eip => *n += len,
        _ => ranges.push((eip, len)),
    }
}

fn err(e: iced_x86::IcedError) -> TranslateError {
    TranslateError::Encode(e.to_string())
}

/// Host register holding guest register `r` (any width).
fn host(r: Register) -> Register {
    match r {
        Register::ESP => Register::R8D,
        Register::SP => Register::R8W,
        other => other,
    }
}

/// The low byte of 32-bit host register `r` (SIL, DIL, BPL and the
/// like need a REX prefix, which the host always has).
fn low_byte_of(r: Register) -> Option<Register> {
    Some(match r {
        Register::EAX => Register::AL,
        Register::ECX => Register::CL,
        Register::EDX => Register::DL,
        Register::EBX => Register::BL,
        Register::EBP => Register::BPL,
        Register::ESI => Register::SIL,
        Register::EDI => Register::DIL,
        Register::R8D => Register::R8L,
        _ => return None,
    })
}

/// 64-bit host register holding the 32-bit guest register `r`.
fn host64(r: Register) -> Register {
    match r {
        Register::ESP => Register::R8,
        Register::None => Register::None,
        other => other.full_register(),
    }
}

fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

fn seg_index(r: Register) -> Option<Seg> {
    Some(match r {
        Register::ES => Seg::Es,
        Register::CS => Seg::Cs,
        Register::SS => Seg::Ss,
        Register::DS => Seg::Ds,
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => return None,
    })
}

fn cc_bits(cc: ConditionCode) -> Option<u8> {
    Some(match cc {
        ConditionCode::o => 0,
        ConditionCode::no => 1,
        ConditionCode::b => 2,
        ConditionCode::ae => 3,
        ConditionCode::e => 4,
        ConditionCode::ne => 5,
        ConditionCode::be => 6,
        ConditionCode::a => 7,
        ConditionCode::s => 8,
        ConditionCode::ns => 9,
        ConditionCode::p => 10,
        ConditionCode::np => 11,
        ConditionCode::l => 12,
        ConditionCode::ge => 13,
        ConditionCode::le => 14,
        ConditionCode::g => 15,
        ConditionCode::None => return None,
    })
}

/// Whether instruction `i` writes memory (explicitly, or on the stack or
/// through a string destination).
fn writes_memory(i: &Instruction, info: &mut InstructionInfoFactory) -> bool {
    use iced_x86::OpAccess;
    info.info(i).used_memory().iter().any(|m| {
        matches!(
            m.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    })
}

/// How many bytes of instruction `i`, starting `offset` bytes into the
/// unit, lie past the end of the unit's page (`bytes_in_page` from the
/// unit's start), if any.
fn crossing_tail(i: &Instruction, offset: u32, bytes_in_page: u32) -> Option<usize> {
    let end = offset as usize + i.len();
    (!i.is_invalid() && end > bytes_in_page as usize).then(|| end - bytes_in_page as usize)
}

/// Bytes a code check reads from one value of R10 (its displacements stay
/// within the window guard's reach).
const CHECK_STRIDE: usize = 64;

/// Translates one unit.
pub fn translate(req: &UnitRequest<'_>) -> Result<Unit, TranslateError> {
    match translate_unit(req, req.inline_leaves) {
        // Never expected (a leaf is only taken in when the unit has room
        // for all of it): the unit is made again without leaves in place.
        Err(TranslateError::Unsupported(LEAF_CUT_OFF)) => translate_unit(req, false),
        made => made,
    }
}

/// The error of a unit that would end inside a leaf callee translated in
/// place (see [`translate`]).
const LEAF_CUT_OFF: &str = "a unit ending inside a leaf callee";

/// [`translate`], with leaf callees in place if `inline_leaves` (and the
/// request allows them).
fn translate_unit(req: &UnitRequest<'_>, inline_leaves: bool) -> Result<Unit, TranslateError> {
    let follows = req.followed_branches > 0
        && req.max_insns > 1
        && !req.self_check
        && req.mode.bitness() == 32;
    let joined;
    let (page, page_eip): (&[u8], u32) = if follows && !req.code_before.is_empty() {
        joined = [req.code_before, req.code].concat();
        (&joined, req.eip.wrapping_sub(req.code_before.len() as u32))
    } else {
        (req.code, req.eip)
    };
    let mut cx = Ctx {
        e: Emitter::new(req.host_base),
        req,
        exits: Vec::new(),
        fixup: fixup::NONE,
        info: InstructionInfoFactory::new(),
        current: None,
        previous: [None, None],
        emulated: Vec::new(),
        inline_ports: Vec::new(),
        soft_eips: Vec::new(),
        chain_slots: Vec::new(),
        slot_stubs: Vec::new(),
        table_stubs: Vec::new(),
        uncached_sites: Vec::new(),
        jump_table_slots: Vec::new(),
        sub_entries: Vec::new(),
        branches_passed: 0,
        stack_pending: 0,
        lag_ok: false,
        poll_hoisted_for: None,
        page,
        page_eip,
        follow: None,
        follows_left: if follows { req.followed_branches } else { 0 },
        followed: false,
        translated: Vec::new(),
        inlined: None,
        leaf_insns: 0,
        leaf_returns_elsewhere: Vec::new(),
        inline_leaves: inline_leaves
            && req.max_insns > 1
            && !req.self_check
            && req.mode.bitness() == 32,
    };
    let mut dec = cx.decoder_at(req.eip);
    let mut pc_map = Vec::new();
    let mut fixups = Vec::new();
    let mut stack_lags = Vec::new();
    let mut insns = Vec::new();
    // Page offsets are taken from `page_eip`, the first byte the unit may
    // translate (`req.eip` unless it may follow branches back).
    let bytes_in_page = req.page_end.wrapping_sub(page_eip);
    let mut next = req.eip;
    // The page offsets of the first byte and the end of the code translated.
    let start_offset = req.eip.wrapping_sub(page_eip);
    let mut covered = (start_offset, start_offset);
    // Leaf callees' bytes translated in place (outside `covered`).
    let mut leaf_ranges = Vec::new();
    if let Some(counter) = req.count_entries {
        cx.bump_counter(counter)?;
    }
    let body = cx.e.label();
    let self_check = req.self_check.then(|| {
        let check = cx.e.label();
        cx.e.jmp_label(check);
        cx.e.bind(body);
        check
    });
    loop {
        let past_page = next.wrapping_sub(page_eip) >= bytes_in_page;
        // Leaf callees' instructions count apart (`MAX_LEAF_UNIT_INSNS`).
        let full = insns.len() - cx.leaf_insns >= req.max_insns.min(MAX_UNIT_INSNS);
        if (full && cx.inlined.is_none()) || past_page {
            cx.end_unit_at(next, &mut pc_map, &mut fixups)?;
            break;
        }
        let insn = dec.decode();
        if insn.is_invalid() && dec.last_error() == DecoderError::NoMoreBytes && !insns.is_empty() {
            // The instruction runs past the bytes the monitor could give
            // (the next page is not mapped now): it starts a unit of its
            // own, whose fetch the monitor carries out (or faults).
            cx.end_unit_at(next, &mut pc_map, &mut fixups)?;
            break;
        }
        if req.split_events && !insns.is_empty() && starts_own_unit(&insn, req.mode.cpl0) {
            cx.end_unit_at(next, &mut pc_map, &mut fixups)?;
            break;
        }
        let tail = crossing_tail(&insn, next.wrapping_sub(page_eip), bytes_in_page);
        if let (Some(paged), Some(tail)) = (req.paged, tail) {
            if !insns.is_empty() {
                cx.end_unit_at(next, &mut pc_map, &mut fixups)?;
                break;
            }
            let _ = paged;
            let at = page_eip.wrapping_add(bytes_in_page);
            let skip = bytes_in_page as usize;
            cx.check_bytes(at, &page[skip..skip + tail])?;
        }
        cx.lag_ok = !insn.is_invalid() && cx.keeps_stack_lag(&insn);
        if !cx.lag_ok {
            cx.flush_stack_lag()?;
        }
        if cx.stack_pending != 0 {
            stack_lags.push((pc_map.len() as u32, cx.stack_pending as i8));
        }
        pc_map.push((cx.e.pos() as u32, next));
        cx.fixup = fixup::NONE;
        cx.translated.push(next);
        if cx.poll_goes_before(&insn) {
            // At the start of this instruction's code: a poll fault stops
            // before it (`pc_map`), with the state of its start.
            cx.poll()?;
            cx.poll_hoisted_for = Some(insn.next_ip32());
        }
        // A leaf callee's instruction (its `ret` included) or the caller's.
        let in_leaf = cx.inlined.is_some();
        let ends = if insn.is_invalid() {
            cx.current = None;
            cx.emulate_exit(next)?
        } else {
            cx.current = Some(insn);
            cx.one(&insn)?
        };
        fixups.push(cx.fixup);
        cx.previous = [cx.previous[1], Some(insn)];
        for (pos, eip, fix) in cx.sub_entries.drain(..) {
            pc_map.push((pos, eip));
            fixups.push(fix);
        }
        insns.push(insn);
        let this = next;
        next = insn.next_ip32();
        if insn.is_invalid() {
            next = dec.ip() as u32;
        }
        if in_leaf {
            cx.leaf_insns += 1;
            note_range(&mut leaf_ranges, this, next.wrapping_sub(this));
        } else {
            covered.0 = covered.0.min(this.wrapping_sub(page_eip));
            covered.1 = covered.1.max(next.wrapping_sub(page_eip));
        }
        if ends {
            break;
        }
        if let Some(target) = cx.follow.take() {
            next = target;
            dec = cx.decoder_at(target);
            continue;
        }
        if self_check.is_some() && writes_memory(&insn, &mut cx.info) {
            // The store may have changed the unit's own later bytes: the
            // next unit checks them at its entry.
            cx.end_unit_at(next, &mut pc_map, &mut fixups)?;
            break;
        }
    }
    if cx.inlined.is_some() {
        return Err(TranslateError::Unsupported(LEAF_CUT_OFF));
    }
    if cx.stack_pending != 0 {
        return Err(TranslateError::Unsupported(
            "a unit ending with ESP not in R8",
        ));
    }
    let guest_len = covered.1.wrapping_sub(start_offset).max(1);
    let guest_before = start_offset - covered.0;
    // The stubs belong to no one instruction: a table miss in one (a
    // cross-page branch's probe) names no site to learn.
    cx.current = None;
    let sites = cx.emit_exit_stubs()?;
    if let Some(check) = self_check {
        // A fault in the check is one of the unit's entry: nothing ran.
        pc_map.push((cx.e.pos() as u32, req.eip));
        fixups.push(fixup::NONE);
        cx.e.bind(check);
        let len = (guest_len as usize).min(req.code.len());
        cx.check_bytes(req.eip, &req.code[..len])?;
        cx.e.jmp_label(body);
    }
    let code = cx.e.finish()?;
    crate::verify::check_unit(&code, req.host_base, req.stubs.poll)?;
    Ok(Unit {
        code,
        pc_map,
        fixups,
        sites,
        guest_len,
        guest_before,
        insns,
        emulated: cx.emulated,
        inline_ports: cx.inline_ports,
        soft_eips: cx.soft_eips,
        chain_slots: cx.chain_slots,
        uncached_sites: cx.uncached_sites,
        jump_table_slots: cx.jump_table_slots,
        stack_lags,
        leaf_ranges,
    })
}

impl<'a> Ctx<'a> {
    fn ins(&mut self, i: Instruction) -> Result<(), TranslateError> {
        self.e.ins(&i)
    }

    /// A decoder of the unit's page from `eip` on (no bytes when `eip` is
    /// not in what the unit may translate).
    fn decoder_at(&self, eip: u32) -> Decoder<'a> {
        let at = eip.wrapping_sub(self.page_eip) as usize;
        let page: &'a [u8] = self.page;
        Decoder::with_ip(
            self.req.mode.bitness(),
            page.get(at..).unwrap_or(&[]),
            u64::from(eip),
            DecoderOptions::NONE,
        )
    }

    /// Whether the unit may follow a direct branch to `target`: it has
    /// follows left, `target` lies in the part of its page it may
    /// translate, and no instruction of the unit starts there yet.
    fn may_follow(&self, target: u32) -> bool {
        let in_page =
            target.wrapping_sub(self.page_eip) < self.req.page_end.wrapping_sub(self.page_eip);
        self.follows_left > 0 && in_page && !self.translated.contains(&target)
    }

    /// Follows the direct branch to `target` (see [`Ctx::may_follow`]):
    /// the unit goes on there.
    fn follow_to(&mut self, target: u32) {
        self.follows_left -= 1;
        self.followed = true;
        self.follow = Some(target);
    }

    /// Whether the poll of the backward conditional branch right after `i`
    /// goes before `i` instead of between them: `i` sets the flags the
    /// branch tests (CMP, TEST, ADD, SUB, AND, OR, XOR, INC, DEC), and the
    /// host fuses such a pair into one operation only when they are
    /// adjacent. A poll fault then stops before `i` rather than before the
    /// branch; either is an instruction boundary of the same cycle.
    fn poll_goes_before(&self, i: &Instruction) -> bool {
        use Mnemonic::*;
        if i.is_invalid()
            || !matches!(
                i.mnemonic(),
                Cmp | Test | Add | Sub | And | Or | Xor | Inc | Dec
            )
        {
            return false;
        }
        let at = i.next_ip32().wrapping_sub(self.page_eip) as usize;
        let in_page = self.req.page_end.wrapping_sub(self.page_eip) as usize;
        let Some(bytes) = self.page.get(at..in_page.min(self.page.len())) else {
            return false;
        };
        let next = Decoder::with_ip(
            self.req.mode.bitness(),
            bytes,
            u64::from(i.next_ip32()),
            DecoderOptions::NONE,
        )
        .decode();
        !next.is_invalid() && next.is_jcc_short_or_near() && closes_cycle(&next, self.req.eip)
    }

    /// Adds one to the u64 at host address `counter` through R13 and R10
    /// (scratch where this is used: at a unit's entry and after an
    /// indirect-branch hit), with MOV and LEA only, so no flag changes.
    fn bump_counter(&mut self, counter: u64) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Mov_r64_imm64, Register::R13, counter)?)?;
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R10,
            mem(Register::R13, Register::None, 0)
        )?)?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::R10,
            mem(Register::R10, Register::None, 1)
        )?)?;
        self.ins(i2!(
            Code::Mov_rm64_r64,
            mem(Register::R13, Register::None, 0),
            Register::R10
        )?)
    }

    /// `lea dst32, [base + disp]` (32-bit result: wraps like the guest).
    fn lea32(&mut self, dst: Register, base: Register, disp: i64) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Lea_r32_m, dst, mem(base, Register::None, disp))?)
    }

    /// `mov dst32, m` (a 32-bit load).
    fn load32(&mut self, dst: Register, m: iced_x86::MemoryOperand) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Mov_r32_rm32, dst, m)?)
    }

    /// `mov r9d, [rip -> poll word]`: faults when an exit was requested
    /// (see `runtime`). Emitted before every direct branch back to an
    /// address at or below the unit's start (every cycle of units has such
    /// an edge), or before the instruction setting the flags of such a
    /// conditional branch (see [`poll_goes_before`]); it touches no flags,
    /// and R9 is free between guest instructions.
    fn poll(&mut self) -> Result<(), TranslateError> {
        self.load32(
            Register::R9D,
            iced_x86::MemoryOperand::with_base_displ(Register::RIP, self.req.stubs.poll as i64),
        )
    }

    /// Polls before a direct branch that can close a cycle of units (its
    /// target is at or below the unit's start), before any of the
    /// branch's own effects, so an exit there restarts it cleanly.
    fn poll_if_backward(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.poll_hoisted_for == Some(i.ip32()) {
            self.poll_hoisted_for = None;
            return Ok(());
        }
        if closes_cycle(i, self.req.eip) && !self.host_call_bounds_cycle(i) {
            self.poll()?;
        }
        Ok(())
    }

    /// Whether `i` is a direct guest `call` that becomes a host `call`
    /// (a predicted call): it needs no poll, because every turn of a cycle
    /// of units that no other poll or indirect branch interrupts would
    /// leave one more host return address on the return-prediction stack,
    /// whose guard stops such a cycle within 128 Ki turns
    /// (`ExitReason::CallOverflow`). Polling at every call to a lower
    /// address cost the busybox shell loop about 2%.
    fn host_call_bounds_cycle(&self, i: &Instruction) -> bool {
        i.code() == Code::Call_rel32_32 && self.predicts_returns()
    }

    /// The indirect-branch tag a direct branch to `target` in the mode of
    /// `tag` probes, if it may not be chained (see [`PagedCode`]).
    fn probe_for(&self, target: u32, tag: u32) -> Option<u32> {
        let paged = self.req.paged?;
        (!paged.same_page(self.req.eip, target)).then_some(tag)
    }

    /// Records the chainable exit of the branch whose rel32 field is at
    /// `rel32` and points at `label`: to guest `target`, in another mode
    /// when `mode` says so, probing the table of `tag` when it may not be
    /// chained.
    fn chain_site(&mut self, label: Label, rel32: usize, target: u32, mode: Option<u32>, tag: u32) {
        let probe = self.probe_for(target, tag);
        self.exits.push(Exit {
            label,
            target,
            rel32,
            mode,
            probe,
        });
    }

    /// Ends the unit with a chainable jump to guest `target`.
    fn chain_exit(&mut self, target: u32) -> Result<(), TranslateError> {
        if self.through_chain_table_at_site(target) {
            return self.branch_through_chain_table(Code::Jmp_rm64, target);
        }
        let label = self.e.label();
        let rel32 = self.e.jmp_label(label);
        self.chain_site(label, rel32, target, None, self.req.ibtc_tag);
        Ok(())
    }

    /// A chainable host `call` to guest `target` (a predicted guest call):
    /// chained like [`Ctx::chain_exit`]'s jump; unchained, its exit stub
    /// exits (every exit drops the return-prediction stack).
    fn chain_call(&mut self, target: u32) -> Result<(), TranslateError> {
        if self.through_chain_table_at_site(target) {
            return self.branch_through_chain_table(Code::Call_rm64, target);
        }
        let label = self.e.label();
        let rel32 = self.e.call_label(label);
        self.chain_site(label, rel32, target, None, self.req.ibtc_tag);
        Ok(())
    }

    /// Ends the unit with a chainable jump to guest `target` in another
    /// mode (after an inline privilege change) whose indirect-branch tag
    /// is `tag`.
    fn chain_exit_to_mode(
        &mut self,
        target: u32,
        mode: u32,
        tag: u32,
    ) -> Result<(), TranslateError> {
        let label = self.e.label();
        let rel32 = self.e.jmp_label(label);
        self.chain_site(label, rel32, target, Some(mode), tag);
        Ok(())
    }

    /// `jcc` to a chainable exit.
    fn chain_jcc(&mut self, cc: u8, target: u32) -> Result<(), TranslateError> {
        let label = self.e.label();
        let rel32 = self.e.jcc_label(cc, label);
        self.chain_site(label, rel32, target, None, self.req.ibtc_tag);
        Ok(())
    }

    /// Compares guest `bytes` with what the current view holds at CS:`at`
    /// (the CS base read at run time), without touching the flags; exits
    /// with `CodeChanged` at the unit's EIP when they differ (nothing of the
    /// unit ran). RCX is kept in R13 meanwhile.
    fn check_bytes(&mut self, at: u32, bytes: &[u8]) -> Result<(), TranslateError> {
        let changed = self.e.label();
        let done = self.e.label();
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        let cs_base = off::SEG_BASE + 4 * Seg::Cs as i32;
        self.load32(
            Register::R10D,
            mem(Register::R14, Register::None, cs_base.into()),
        )?;
        self.lea32(Register::R10D, Register::R10, i64::from(at as i32))?;
        let mut at = 0usize;
        // R10 moves along so that no displacement passes the guard's
        // reach (the confinement verifier's limit).
        let mut base = 0usize;
        while at < bytes.len() {
            if at - base + 4 > CHECK_STRIDE {
                self.lea32(Register::R10D, Register::R10, (at - base) as i64)?;
                base = at;
            }
            let left = bytes.len() - at;
            let (load, width) = match left {
                4.. => (Code::Mov_r32_rm32, 4),
                2 | 3 => (Code::Movzx_r32_rm16, 2),
                _ => (Code::Movzx_r32_rm8, 1),
            };
            let mut expected = [0u8; 4];
            expected[..width].copy_from_slice(&bytes[at..at + width]);
            let m = mem(Register::R15, Register::R10, (at - base) as i64);
            self.ins(i2!(load, Register::R11D, m)?)?;
            self.ins(i2!(
                Code::Mov_r32_imm32,
                Register::R12D,
                u32::from_le_bytes(expected)
            )?)?;
            self.ins(Instruction::with1(Code::Not_rm64, Register::R12).map_err(err)?)?;
            // RCX = loaded - expected (64 bits, both below 2^32): zero
            // only when equal.
            self.ins(i2!(
                Code::Lea_r64_m,
                Register::RCX,
                mem(Register::R11, Register::R12, 1)
            )?)?;
            let same = self.e.label();
            self.e.jrcxz_label(same);
            self.e.jmp_label(changed);
            self.e.bind(same);
            at += width;
        }
        self.e.jmp_label(done);
        self.e.bind(changed);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        self.store_eip_imm(self.req.eip)?;
        self.store_exit(ExitReason::CodeChanged)?;
        self.e.jmp_abs(self.req.stubs.exit_common)?;
        self.e.bind(done);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)
    }

    fn emit_exit_stubs(&mut self) -> Result<Vec<(usize, usize)>, TranslateError> {
        let mut sites = Vec::new();
        for x in std::mem::take(&mut self.exits) {
            self.e.bind(x.label);
            let stub = self.e.pos();
            if let Some(tag) = x.probe {
                // Never chained: the target's page may hold other code in
                // another address space.
                if x.mode.is_none() && self.req.chain_slots_from.is_some() {
                    self.through_chain_table(x.target)?;
                } else {
                    self.indirect_constant(x.target, tag)?;
                }
                continue;
            }
            self.store_eip_imm(x.target)?;
            self.store_exit(ExitReason::ChainMiss)?;
            if let Some(mode) = x.mode {
                self.ins(i2!(
                    Code::Mov_rm32_imm32,
                    mem(Register::R14, Register::None, off::CHAIN_MODE.into()),
                    mode
                )?)?;
            }
            let site_addr = self.req.host_base + x.rel32 as u64;
            self.ins(i2!(
                Code::Lea_r64_m,
                Register::R9,
                iced_x86::MemoryOperand::with_base_displ(Register::RIP, site_addr as i64)
            )?)?;
            self.ins(i2!(
                Code::Mov_rm64_r64,
                mem(Register::R14, Register::None, off::EXIT_SITE.into()),
                Register::R9
            )?)?;
            self.e.jmp_abs(self.req.stubs.exit_common)?;
            sites.push((x.rel32, stub));
        }
        for index in std::mem::take(&mut self.slot_stubs) {
            self.slot_miss_stub(index)?;
        }
        for (label, lag) in std::mem::take(&mut self.leaf_returns_elsewhere) {
            self.leaf_return_elsewhere(label, lag)?;
        }
        for (label, first) in std::mem::take(&mut self.table_stubs) {
            self.table_miss_stub(label, first)?;
        }
        Ok(sites)
    }

    /// Whether a branch of the unit's mode to guest `target` goes through
    /// a chain-table slot (a cross-page target in flat code with chain
    /// tables; see [`Ctx::through_chain_table`]).
    fn through_chain_table_at_site(&self, target: u32) -> bool {
        self.req.chain_slots_from.is_some() && self.probe_for(target, self.req.ibtc_tag).is_some()
    }

    /// A cross-page branch to guest `target` through the next chain-table
    /// slot `k`: `jmp [r15 + CHAIN_TABLE_OFFSET + 8k]`, then the slot's
    /// stub, where the entry leads until the monitor sets it for the view:
    /// a `ChainSlotMiss` exit with EIP the target and the exit site `k`.
    fn through_chain_table(&mut self, target: u32) -> Result<(), TranslateError> {
        let index = self.next_chain_slot(target);
        self.ins(Instruction::with1(Code::Jmp_rm64, self.chain_entry(index)).map_err(err)?)?;
        self.slot_miss_stub(index)
    }

    /// An unconditional `jmp` (`Jmp_rm64`) or predicted `call`
    /// (`Call_rm64`) to guest `target` made in place through the next
    /// chain-table slot, instead of a branch to a stub that jumps through
    /// it: one host branch fewer per cross-page jump and call. The slot's
    /// miss stub is emitted with the exit stubs; a `call` that reaches it
    /// leaves a return address on the return-prediction stack, which the
    /// exit drops with the rest of the stack.
    fn branch_through_chain_table(
        &mut self,
        code: Code,
        target: u32,
    ) -> Result<(), TranslateError> {
        let index = self.next_chain_slot(target);
        self.ins(Instruction::with1(code, self.chain_entry(index)).map_err(err)?)?;
        self.slot_stubs.push(index);
        Ok(())
    }

    /// Takes the next chain-table slot for a branch to `target`; returns
    /// its index in `chain_slots` (its stub is not emitted yet).
    fn next_chain_slot(&mut self, target: u32) -> usize {
        let first = self.req.chain_slots_from.unwrap_or(0);
        let slot = first + self.chain_slots.len() as u32;
        self.chain_slots.push(ChainSlot {
            slot,
            target,
            stub: 0,
            kind: SlotKind::Branch,
        });
        self.chain_slots.len() - 1
    }

    /// The chain-table entry of `chain_slots[index]` in the current view.
    fn chain_entry(&self, index: usize) -> iced_x86::MemoryOperand {
        let entry = shadowmmu::CHAIN_TABLE_OFFSET + 8 * i64::from(self.chain_slots[index].slot);
        mem(Register::R15, Register::None, entry)
    }

    /// The stub of `chain_slots[index]`, where its entry leads until the
    /// monitor sets it for the view: a `ChainSlotMiss` exit with EIP the
    /// target and the exit site the slot.
    fn slot_miss_stub(&mut self, index: usize) -> Result<(), TranslateError> {
        let ChainSlot { slot, target, .. } = self.chain_slots[index];
        self.chain_slots[index].stub = self.e.pos();
        self.store_eip_imm(target)?;
        self.store_exit(ExitReason::ChainSlotMiss)?;
        self.ins(i2!(
            Code::Mov_rm64_imm32,
            mem(Register::R14, Register::None, off::EXIT_SITE.into()),
            slot
        )?)?;
        self.e.jmp_abs(self.req.stubs.exit_common)
    }

    fn store_eip_imm(&mut self, eip: u32) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::EIP.into()),
            eip
        )?)
    }

    fn store_exit(&mut self, why: ExitReason) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::EXIT_REASON.into()),
            why as u32
        )?)
    }

    /// Ends the unit: the monitor carries out the instruction at `eip`
    /// (handed over decoded, with a token, when it is the instruction being
    /// translated).
    fn emulate_exit(&mut self, eip: u32) -> Result<bool, TranslateError> {
        let token = match (self.req.emulate_tokens_from, self.current) {
            (Some(first), Some(i)) if i.ip32() == eip => {
                self.emulated.push(i);
                first.wrapping_add(self.emulated.len() as u32 - 1)
            }
            _ => NO_TOKEN,
        };
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::EMULATE_TOKEN.into()),
            token
        )?)?;
        self.store_eip_imm(eip)?;
        self.store_exit(ExitReason::Emulate)?;
        self.e.jmp_abs(self.req.stubs.exit_common)?;
        Ok(true)
    }

    /// Translates one instruction; returns whether it ends the unit.
    fn one(&mut self, guest: &Instruction) -> Result<bool, TranslateError> {
        if guest.mnemonic() == Mnemonic::Cpuid {
            if let Some(answers) = self.req.cpuid {
                return self.cpuid(answers).map(|_| false);
            }
        }
        if let Some(seg) = selector_read_into_register(guest) {
            self.read_selector(guest.op0_register(), seg)?;
            return Ok(false);
        }
        if let Some(cr) = self.inline_control_register_read(guest) {
            self.read_control_register(guest.op0_register(), cr)?;
            return Ok(false);
        }
        if let Some((seg, loads)) = self.inline_segment_loads(guest) {
            return self.segment_load(guest, seg, &loads);
        }
        if let Some(verw) = self.inline_verw(guest) {
            return self.verw(guest, &verw).map(|_| false);
        }
        if self.invlpg_exits_with_its_address(guest) {
            return self.invlpg_exit(guest);
        }
        if let Some(ends) = self.inline_transition(guest)? {
            return Ok(ends);
        }
        if let Some(ends) = self.inline_event(guest)? {
            return Ok(ends);
        }
        if let Some(port) = self.ignored_port_access(guest) {
            self.inline_ports.push(port);
            return self.ignored_port_io(guest).map(|_| false);
        }
        if needs_monitor(guest) || self.req.mode.exits(guest) {
            return self.emulate_exit(guest.ip32());
        }
        let mut substitute = *guest;
        match self.req.isa.availability(guest) {
            Availability::Native => {}
            Availability::Nop => return Ok(false),
            Availability::Substitute(code) => substitute.set_code(code),
            // The monitor raises #UD.
            Availability::Undefined => return self.emulate_exit(guest.ip32()),
        }
        let i = &substitute;
        if let Some(target) = self.followed_jump(i) {
            // No code: the unit goes on at the target.
            self.follow_to(target);
            return Ok(false);
        }
        self.poll_if_backward(i)?;
        if matches!(i.mnemonic(), Mnemonic::Nop | Mnemonic::Reservednop) {
            // Multi-byte and reserved NOPs do nothing and never fault; their
            // ModRM register field is part of the opcode in the hint space,
            // so re-encoding ESP as R8 could turn one into another hint.
            return Ok(false);
        }
        match i.mnemonic() {
            Mnemonic::Jmp => self.jmp(i),
            Mnemonic::Call => self.call(i),
            Mnemonic::Ret => self.ret(i),
            Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne | Mnemonic::Jecxz => {
                self.loop_like(i)
            }
            Mnemonic::Push => self.push(i).map(|_| false),
            Mnemonic::Pop => self.pop(i),
            Mnemonic::Pushad => self.pushad(i).map(|_| false),
            Mnemonic::Popad => self.popad(i).map(|_| false),
            Mnemonic::Pushfd => self.pushfd(i).map(|_| false),
            Mnemonic::Popfd => self.popfd(i).map(|_| false),
            Mnemonic::Leave => self.leave(i).map(|_| i.code() != Code::Leaved),
            Mnemonic::Enter => self.enter(i),
            Mnemonic::Cli => self.set_vif(false).map(|_| false),
            Mnemonic::Sti => self.sti(i).map(|_| false),
            Mnemonic::Xlatb => self.xlat(i).map(|_| false),
            Mnemonic::Div | Mnemonic::Idiv => self.divide(i).map(|_| false),
            Mnemonic::Lea => self.lea(i).map(|_| false),
            Mnemonic::Movsb
            | Mnemonic::Movsw
            | Mnemonic::Movsd
            | Mnemonic::Cmpsb
            | Mnemonic::Cmpsw
            | Mnemonic::Cmpsd
                if i.is_string_instruction() =>
            {
                self.string(i)
            }
            Mnemonic::Stosb
            | Mnemonic::Stosw
            | Mnemonic::Stosd
            | Mnemonic::Lodsb
            | Mnemonic::Lodsw
            | Mnemonic::Lodsd
            | Mnemonic::Scasb
            | Mnemonic::Scasw
            | Mnemonic::Scasd => self.string(i),
            _ if i.flow_control() == iced_x86::FlowControl::ConditionalBranch => self.jcc(i),
            _ => match confine::check_generic(i, &mut self.info) {
                Ok(()) => self.generic(i).map(|_| false),
                Err(_) => self.emulate_exit(i.ip32()),
            },
        }
    }

    /// `mov r32/r16, sreg`: the selector from the state block's mirror
    /// (kept by the monitor and by inline privilege changes). With a
    /// 32-bit destination the upper half is zeroed, as P6 and later CPUs
    /// do; a 16-bit one keeps it. Never faults, touches no flag.
    fn read_selector(&mut self, dst: Register, seg: Seg) -> Result<(), TranslateError> {
        let m = mem(
            Register::R14,
            Register::None,
            i64::from(off::SEG_SEL) + 2 * seg as i64,
        );
        if dst.size() == 4 {
            self.ins(i2!(Code::Movzx_r32_rm16, host(dst), m)?)
        } else {
            self.ins(i2!(Code::Mov_r16_rm16, host(dst), m)?)
        }
    }

    /// Whether `i` is an INVLPG whose linear address translated code works
    /// out for the monitor (an `Invlpg` exit): in ring 0, through a
    /// segment whose accesses need no check (INVLPG checks no limit, and
    /// outside ring 0 it is #GP(0), which the monitor raises).
    fn invlpg_exits_with_its_address(&self, i: &Instruction) -> bool {
        let mode = self.req.mode;
        i.code() == Code::Invlpg_m && mode.cpl0 && !mode.is_limited(i.memory_segment())
    }

    /// Ends the unit with an `Invlpg` exit: the linear address of `i`'s
    /// operand into `soft_addr`, EIP the next instruction.
    fn invlpg_exit(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        self.address(i, true)?;
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R14, Register::None, off::SOFT_ADDR.into()),
            Register::R10D
        )?)?;
        self.store_eip_imm(i.next_ip32())?;
        self.store_exit(ExitReason::Invlpg)?;
        self.e.jmp_abs(self.req.stubs.exit_common)?;
        Ok(true)
    }

    /// The control register `i` reads (`mov r32, crN`) if it runs inline:
    /// in ring 0, CR0, CR2, CR3 or CR4 (another is #UD, and any read
    /// outside ring 0 #GP(0), which the monitor raises).
    fn inline_control_register_read(&self, i: &Instruction) -> Option<u32> {
        if i.code() != Code::Mov_r32_cr || !self.req.mode.cpl0 {
            return None;
        }
        let n = i.op1_register() as u32 - Register::CR0 as u32;
        matches!(n, 0 | 2 | 3 | 4).then_some(n)
    }

    /// `mov dst, crN` from the state block's copy (`CpuState::cr`).
    fn read_control_register(&mut self, dst: Register, n: u32) -> Result<(), TranslateError> {
        let m = mem(
            Register::R14,
            Register::None,
            i64::from(off::CR) + 4 * i64::from(n),
        );
        self.ins(i2!(Code::Mov_r32_rm32, host(dst), m)?)
    }

    /// The loads offered for `i` if it is a `mov es/ds/fs/gs, r/m16` or a
    /// `pop es/ds/fs/gs` this unit may carry out itself (see
    /// [`InlineSegmentLoad`]): in ring 0, flat 32-bit code, a memory source
    /// through a segment whose accesses need no check (for POP, a 32-bit
    /// stack).
    fn inline_segment_loads(&self, i: &Instruction) -> Option<(Seg, Vec<InlineSegmentLoad>)> {
        let mode = self.req.mode;
        let source_fits = match i.code() {
            Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_rm16 => {
                i.op1_kind() != OpKind::Memory || !mode.is_limited(i.memory_segment())
            }
            // POP from a flat 32-bit stack that needs no check.
            Code::Popd_DS | Code::Popd_ES | Code::Popd_FS | Code::Popd_GS => {
                !mode.stack16 && !mode.is_limited(Register::SS)
            }
            _ => false,
        };
        if !source_fits || !mode.cpl0 || !mode.flat || mode.code16 {
            return None;
        }
        let seg = seg_index(i.op0_register()).filter(|s| !matches!(s, Seg::Cs | Seg::Ss))?;
        let loads: Vec<InlineSegmentLoad> = self
            .req
            .segment_loads
            .iter()
            .filter(|(s, _)| *s == seg as u8)
            .map(|(_, load)| *load)
            .take(MAX_SEGMENT_LOADS)
            .collect();
        (!loads.is_empty()).then_some((seg, loads))
    }

    /// `mov seg, r/m16` or `pop seg` for the selectors of `loads`:
    ///
    /// ```text
    /// movzx r10d, <source>                ; the selector
    /// mov r11d, <descriptor address> ; mov r12/r11, [r15 + r11]   ; each
    /// mov r13, rcx
    /// lea ecx, [r10 - selector] ; jrcxz near_k                      ; each
    /// jmp to_monitor ; near_k: jmp load_k                           ; each
    /// to_monitor: mov rcx, r13 ; <Emulate exit>
    /// load_k: mov rcx, -descriptor ; lea rcx, [rcx + r12/r11] ; jrcxz ok_k
    ///         mov rcx, r13 ; jmp <Emulate exit>
    /// ok_k:   mov rcx, r13 ; <selector, base, ranges, descriptor into the
    ///         state block, the segment marked loaded> ; then on in the unit,
    ///         or a chainable exit to the next instruction in the new mode
    /// ```
    ///
    /// Every access that can fault comes before RCX is borrowed, and a
    /// fault anywhere lets the monitor carry the load out (nothing of it
    /// took effect). The monitor applies the marked loads to its system
    /// state after the run (`CpuState::seg_loaded`).
    fn segment_load(
        &mut self,
        i: &Instruction,
        seg: Seg,
        loads: &[InlineSegmentLoad],
    ) -> Result<bool, TranslateError> {
        self.fixup = fixup::REDO_IN_MONITOR;
        let pops = i.mnemonic() == Mnemonic::Pop;
        if pops {
            // The selector is the low word of the doubleword at ESP.
            self.flush_stack_lag()?;
            self.ins(i2!(
                Code::Movzx_r32_rm16,
                Register::R10D,
                mem(Register::R15, Register::R8, 0)
            )?)?;
        } else if i.op1_kind() == OpKind::Register {
            self.ins(i2!(
                Code::Mov_r32_rm32,
                Register::R10D,
                host(i.op1_register().full_register32())
            )?)?;
            self.ins(i2!(Code::Movzx_r32_rm16, Register::R10D, Register::R10W)?)?;
        } else {
            let m = self.window_operand(i, false)?;
            self.ins(i2!(Code::Movzx_r32_rm16, Register::R10D, m)?)?;
        }
        // The descriptors, into R12 and R11 (at most two loads).
        let held = [Register::R12, Register::R11];
        for (load, reg) in loads.iter().zip(held) {
            if let Some((at, _)) = load.descriptor {
                self.read_descriptor(reg, at)?;
            }
        }
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        // JRCXZ reaches 127 bytes: each match leaves through a near jump.
        let near: Vec<Label> = loads.iter().map(|_| self.e.label()).collect();
        let matched: Vec<Label> = loads.iter().map(|_| self.e.label()).collect();
        for (load, at) in loads.iter().zip(&near) {
            self.lea32(Register::ECX, Register::R10, -i64::from(load.selector))?;
            self.e.jrcxz_label(*at);
        }
        let to_monitor = self.e.label();
        self.e.jmp_label(to_monitor);
        for (at, block) in near.iter().zip(&matched) {
            self.e.bind(*at);
            self.e.jmp_label(*block);
        }
        let done = self.e.label();
        let mut continues = false;
        for ((load, at), reg) in loads.iter().zip(&matched).zip(held) {
            self.e.bind(*at);
            let any_base = load.any_base && matches!(seg, Seg::Fs | Seg::Gs);
            let load = &InlineSegmentLoad { any_base, ..*load };
            match load.descriptor {
                Some((_, descriptor)) if load.any_base => {
                    self.same_descriptor_but_base_or(reg, descriptor, to_monitor)?;
                }
                Some((_, descriptor)) => self.same_descriptor_or(reg, descriptor, to_monitor)?,
                None => {}
            }
            self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
            self.store_segment(seg, load, reg)?;
            if pops {
                self.lea32(Register::R8D, Register::R8, 4)?;
            }
            if load.mode == self.req.mode.bits() {
                continues = true;
                self.e.jmp_label(done);
            } else {
                self.chain_exit_to_mode(i.next_ip32(), load.mode, load.tag)?;
            }
        }
        self.monitor_carries_out_restoring_rcx(to_monitor, i)?;
        self.e.bind(done);
        Ok(!continues)
    }

    /// The answer offered for `i` if it is a ring-0 `VERW` with a memory
    /// operand through a segment whose accesses need no check (or CS).
    fn inline_verw(&self, i: &Instruction) -> Option<InlineVerw> {
        let mode = self.req.mode;
        let fits = i.code() == Code::Verw_r32m16
            && i.op0_kind() == OpKind::Memory
            && mode.cpl0
            && mode.flat
            && !mode.code16
            // Through CS (Linux: `verw %cs:mds_verw_sel`, as DS may still
            // be the user's) only when offered: the monitor offers it for
            // a readable 4 GiB CS (based at 0, as the mode is flat).
            && (!mode.is_limited(i.memory_segment()) || i.memory_segment() == Register::CS);
        if !fits {
            return None;
        }
        let eip = i.ip32();
        self.req
            .verw
            .iter()
            .find(|(at, _)| *at == eip)
            .map(|(_, v)| *v)
    }

    /// `verw m16` answered with `offer` when the selector and descriptor
    /// are the ones it was worked out from:
    ///
    /// ```text
    /// movzx r10d, word [m]
    /// mov r11d, <descriptor address> ; mov r12, [r15 + r11]
    /// mov r13, rcx
    /// lea ecx, [r10 - selector] ; jrcxz same ; jmp to_monitor
    /// same: mov rcx, -descriptor ; lea rcx, [rcx + r12] ; jrcxz ok
    ///       jmp to_monitor
    /// ok:   mov rcx, r13 ; pushfq ; pop r11 ; or/and r11, ZF ; push r11
    ///       popfq ; jmp done
    /// to_monitor: mov rcx, r13 ; <Emulate exit>
    /// done:
    /// ```
    ///
    /// As for an inline segment load, every access that can fault comes
    /// before RCX is borrowed, and a fault lets the monitor carry it out.
    fn verw(&mut self, i: &Instruction, offer: &InlineVerw) -> Result<(), TranslateError> {
        self.fixup = fixup::REDO_IN_MONITOR;
        let m = self.window_operand(i, false)?;
        self.ins(i2!(Code::Movzx_r32_rm16, Register::R10D, m)?)?;
        if let Some((at, _)) = offer.descriptor {
            self.read_descriptor(Register::R12, at)?;
        }
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        let to_monitor = self.e.label();
        self.lea32(Register::ECX, Register::R10, -i64::from(offer.selector))?;
        self.on_if_rcx_zero_else(to_monitor);
        if let Some((_, descriptor)) = offer.descriptor {
            self.same_descriptor_or(Register::R12, descriptor, to_monitor)?;
        }
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        // ZF alone changes: the flags go through R11 on the host stack.
        const ZF: i32 = 0x40;
        self.ins(Instruction::with(Code::Pushfq))?;
        self.ins(Instruction::with1(Code::Pop_r64, Register::R11).map_err(err)?)?;
        if offer.writable {
            self.ins(i2!(Code::Or_rm64_imm8, Register::R11, ZF)?)?;
        } else {
            self.ins(i2!(Code::And_rm64_imm8, Register::R11, !ZF)?)?;
        }
        self.ins(Instruction::with1(Code::Push_r64, Register::R11).map_err(err)?)?;
        self.ins(Instruction::with(Code::Popfq))?;
        let done = self.e.label();
        self.e.jmp_label(done);
        self.monitor_carries_out_restoring_rcx(to_monitor, i)?;
        self.e.bind(done);
        Ok(())
    }

    /// `mov r11d, at ; mov reg, [r15 + r11]`: the 8 bytes of a descriptor
    /// at linear `at`, through the window.
    fn read_descriptor(&mut self, reg: Register, at: u32) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Mov_r32_imm32, Register::R11D, at)?)?;
        self.ins(i2!(
            Code::Mov_r64_rm64,
            reg,
            mem(Register::R15, Register::R11, 0)
        )?)
    }

    /// Goes on if `reg` holds `descriptor`, else jumps to `to_monitor`
    /// (RCX is borrowed: saved in R13).
    fn same_descriptor_or(
        &mut self,
        reg: Register,
        descriptor: u64,
        to_monitor: Label,
    ) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_r64_imm64,
            Register::RCX,
            descriptor.wrapping_neg()
        )?)?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RCX,
            mem(Register::RCX, reg, 0)
        )?)?;
        self.on_if_rcx_zero_else(to_monitor);
        Ok(())
    }

    /// Goes on if RCX is 0, else jumps to `to_monitor` (JRCXZ over a near
    /// jump: JRCXZ reaches only 127 bytes).
    fn on_if_rcx_zero_else(&mut self, to_monitor: Label) {
        let zero = self.e.label();
        self.e.jrcxz_label(zero);
        self.e.jmp_label(to_monitor);
        self.e.bind(zero);
    }

    /// Goes on if `reg` holds `descriptor` but for the base bits, else
    /// jumps to `to_monitor` (RCX borrowed; R9 takes the mask):
    /// `mov r9, !base ; pext rcx, reg, r9 ; lea ecx, [rcx - expected]`.
    fn same_descriptor_but_base_or(
        &mut self,
        reg: Register,
        descriptor: u64,
        to_monitor: Label,
    ) -> Result<(), TranslateError> {
        let kept = !DESCRIPTOR_BASE_BITS;
        self.ins(i2!(Code::Mov_r64_imm64, Register::R9, kept)?)?;
        self.ins(
            Instruction::with3(
                Code::VEX_Pext_r64_r64_rm64,
                Register::RCX,
                reg,
                Register::R9,
            )
            .map_err(err)?,
        )?;
        // 32 bits are kept: ECX is their difference mod 2^32.
        let expected = pext(descriptor, kept) as u32;
        self.lea32(
            Register::ECX,
            Register::RCX,
            i64::from(expected.wrapping_neg() as i32),
        )?;
        self.on_if_rcx_zero_else(to_monitor);
        Ok(())
    }

    /// At `to_monitor`: RCX back from R13, then the monitor carries `i`
    /// out.
    fn monitor_carries_out_restoring_rcx(
        &mut self,
        to_monitor: Label,
        i: &Instruction,
    ) -> Result<(), TranslateError> {
        self.e.bind(to_monitor);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        self.emulate_exit(i.ip32()).map(|_| ())
    }

    /// What a load of `seg` makes of the state block: the mirrors
    /// translated code reads, the descriptor for the monitor, the mark
    /// that it happened, and whether a return to ring 3 would make the
    /// segment null (its byte of `CpuState::seg_iret_blocks`).
    fn store_segment(
        &mut self,
        seg: Seg,
        load: &InlineSegmentLoad,
        held: Register,
    ) -> Result<(), TranslateError> {
        let s = seg as i64;
        let state = |at: i32, index: i64, size: i64| {
            mem(Register::R14, Register::None, i64::from(at) + index * size)
        };
        self.ins(i2!(
            Code::Mov_rm16_imm16,
            state(off::SEG_SEL, s, 2),
            u32::from(load.selector)
        )?)?;
        let descriptor = load.descriptor.map_or(0, |(_, d)| d);
        let desc_at = off::SEG_DESC + 8 * seg as i32;
        if load.any_base && load.descriptor.is_some() {
            // The base and the descriptor as memory holds them.
            self.ins(i2!(
                Code::Mov_r64_imm64,
                Register::R9,
                DESCRIPTOR_BASE_BITS
            )?)?;
            self.ins(
                Instruction::with3(
                    Code::VEX_Pext_r64_r64_rm64,
                    Register::R9,
                    held,
                    Register::R9,
                )
                .map_err(err)?,
            )?;
            self.ins(i2!(
                Code::Mov_rm32_r32,
                state(off::SEG_BASE, s, 4),
                Register::R9D
            )?)?;
            self.ins(i2!(
                Code::Mov_rm64_r64,
                mem(Register::R14, Register::None, desc_at.into()),
                held
            )?)?;
        } else {
            self.ins(i2!(
                Code::Mov_rm32_imm32,
                state(off::SEG_BASE, s, 4),
                load.base
            )?)?;
        }
        let quads = load
            .ranges
            .iter()
            .enumerate()
            .map(|(k, r)| (off::SEG_RANGES + 32 * seg as i32 + 8 * k as i32, *r))
            .chain(
                (!(load.any_base && load.descriptor.is_some())).then_some((desc_at, descriptor)),
            );
        for (at, value) in quads {
            self.ins(i2!(Code::Mov_r64_imm64, Register::R10, value)?)?;
            self.ins(i2!(
                Code::Mov_rm64_r64,
                mem(Register::R14, Register::None, at.into()),
                Register::R10
            )?)?;
        }
        self.ins(i2!(Code::Mov_rm8_imm8, state(off::SEG_LOADED, s, 1), 1u32)?)?;
        let k = crate::state::seg_iret_block_index(seg as usize).unwrap_or(0) as i64;
        self.ins(i2!(
            Code::Mov_rm8_imm8,
            state(off::SEG_IRET_BLOCKS, k, 1),
            u32::from(load.blocks_iret)
        )?)?;
        Ok(())
    }

    // ----- memory operands -------------------------------------------------

    /// Computes the guest linear address of `i`'s memory operand into R10D
    /// and returns `(R10, 0)`, or returns a base register and displacement
    /// usable as `[r15 + base + disp]` directly (`base` may be `None` for an
    /// absolute address; see [`UnitRequest::fold_displacements`]).
    fn address(
        &mut self,
        i: &Instruction,
        force_r10: bool,
    ) -> Result<(Register, i64), TranslateError> {
        let seg = i.memory_segment();
        let seg_base = self.needs_seg_base(seg);
        let checked = self.req.mode.is_limited(seg);
        if let Some(disp) = self.in_place_displacement(i, force_r10) {
            return Ok((host64(i.memory_base()), disp));
        }
        let one_register =
            !is_16bit_address(i) && !force_r10 && !checked && i.memory_index() == Register::None;
        if one_register && seg_base {
            if let Some(folded) = self.folded_displacement(i) {
                return self.seg_base_folded(i, folded);
            }
        }
        if i.memory_base() == Register::ESP && self.stack_pending != 0 {
            // keeps_stack_lag admits only operands folded in place.
            return Err(TranslateError::Unsupported(
                "ESP lag in an unfolded address",
            ));
        }
        self.offset_into_r10(i)?;
        if checked {
            let (size, write) = explicit_access(i);
            self.check_segment_access(i, seg, size, write)?;
        }
        if seg_base {
            self.add_seg_base(seg)?;
        }
        Ok((Register::R10, 0))
    }

    /// `seg:[base + disp]` or `seg:[disp]` with a segment base to add and a
    /// displacement that folds (`folded`): the base into R11, plus the
    /// base register in 32 bits into R10, and the displacement into host
    /// addressing, `[r15 + r11 + disp]` or `[r15 + r10 + disp]` (TLS and
    /// per-CPU accesses, `gs:[0x14]` in every function with a stack
    /// protector: two host instructions fewer). A sum that the guest
    /// would wrap lands in a guard, as for any folded displacement.
    fn seg_base_folded(
        &mut self,
        i: &Instruction,
        folded: i64,
    ) -> Result<(Register, i64), TranslateError> {
        self.load_seg_base(i.memory_segment())?;
        let base = i.memory_base();
        if base == Register::None {
            return Ok((Register::R11, folded));
        }
        let lag = if base == Register::ESP {
            self.stack_pending
        } else {
            0
        };
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R10D,
            mem(Register::R11, host64(base), lag.into())
        )?)?;
        Ok((Register::R10, folded))
    }

    /// The displacement `d` when `i`'s operand is `[r15 + base + d]` as it
    /// stands (no segment base to add, no limit to check, no index, 32-bit
    /// addressing, `force_r10` false): a bare `[reg]`, or a displacement
    /// that folds, with the stack lag added for an ESP base.
    fn in_place_displacement(&self, i: &Instruction, force_r10: bool) -> Option<i64> {
        let seg = i.memory_segment();
        if is_16bit_address(i)
            || force_r10
            || self.req.mode.is_limited(seg)
            || self.needs_seg_base(seg)
            || i.memory_index() != Register::None
        {
            return None;
        }
        let base = i.memory_base();
        let lag = if base == Register::ESP {
            i64::from(self.stack_pending)
        } else {
            0
        };
        if i.memory_displacement32() == 0 && lag == 0 && base != Register::None {
            return Some(0);
        }
        let folded = self.folded_displacement(i)? + lag;
        FOLDED_DISPLACEMENTS.contains(&folded).then_some(folded)
    }

    /// The displacement of `i`'s `[base + disp]` or `[disp]` operand as
    /// host addressing takes it, when it may be folded there.
    fn folded_displacement(&self, i: &Instruction) -> Option<i64> {
        if !self.req.fold_displacements || self.req.unfolded.contains(&i.ip32()) {
            return None;
        }
        let disp = i.memory_displacement32();
        let folded = if i.memory_base() == Register::None {
            // An absolute address: the same linear address, never wrapped.
            i64::from(disp)
        } else {
            i64::from(disp as i32)
        };
        FOLDED_DISPLACEMENTS.contains(&folded).then_some(folded)
    }

    /// Checks the access of `size` bytes at offset R10 through `seg`
    /// against the segment's allowed range (`CpuState::seg_ranges`); out of
    /// range, the unit exits with a `Raise` of #SS(0) (SS) or #GP(0)
    /// before anything of `i` is carried out. Guest flags are kept; R11 is
    /// clobbered. An access of 0 bytes (NOP, PREFETCH) is not checked.
    fn check_segment_access(
        &mut self,
        i: &Instruction,
        seg: Register,
        size: u32,
        write: bool,
    ) -> Result<(), TranslateError> {
        let Some(s) = seg_index(seg) else {
            return Ok(());
        };
        if size == 0 {
            return Ok(());
        }
        let range = i64::from(off::SEG_RANGES) + 32 * s as i64 + if write { 16 } else { 0 };
        let fail = self.e.label();
        let allowed = self.e.label();
        self.ins(Instruction::with(Code::Pushfq))?;
        self.ins(i2!(
            Code::Cmp_r64_rm64,
            Register::R10,
            mem(Register::R14, Register::None, range)
        )?)?;
        self.e.jcc_label(2, fail);
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::R11,
            mem(Register::R10, Register::None, i64::from(size - 1))
        )?)?;
        self.ins(i2!(
            Code::Cmp_r64_rm64,
            Register::R11,
            mem(Register::R14, Register::None, range + 8)
        )?)?;
        self.e.jcc_label(6, allowed);
        self.e.bind(fail);
        self.ins(Instruction::with(Code::Popfq))?;
        let vector: u32 = if seg == Register::SS { 12 } else { 13 };
        self.raise_exit(i, vector)?;
        self.e.bind(allowed);
        self.ins(Instruction::with(Code::Popfq))
    }

    /// Exits so that the monitor raises exception `vector` (error code 0
    /// where it has one) at `i`, nothing of which was carried out.
    fn raise_exit(&mut self, i: &Instruction, vector: u32) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::RAISE_VECTOR.into()),
            vector
        )?)?;
        self.store_eip_imm(i.ip32())?;
        self.store_exit(ExitReason::Raise)?;
        self.e.jmp_abs(self.req.stubs.exit_common)
    }

    /// DIV/IDIV: a zero divisor raises #DE through a `Raise` exit instead
    /// of a host SIGFPE (which costs the host kernel's signal delivery).
    /// The divisor is read into ECX (the guest's ECX kept in R13) and
    /// tested with JRCXZ, which touches no flags; then the division runs
    /// as itself (a quotient overflow still raises #DE by SIGFPE).
    fn divide(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let zero = self.e.label();
        let done = self.e.label();
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        let size = i.memory_size().size();
        match i.op0_kind() {
            OpKind::Register => {
                let r = host(i.op0_register());
                let load = match r.size() {
                    1 => i2!(Code::Movzx_r32_rm8, Register::ECX, r)?,
                    2 => i2!(Code::Movzx_r32_rm16, Register::ECX, r)?,
                    _ => i2!(Code::Mov_r32_rm32, Register::ECX, r)?,
                };
                self.ins(load)?;
            }
            OpKind::Memory => {
                let m = self.window_operand(i, true)?;
                let load = match size {
                    1 => i2!(Code::Movzx_r32_rm8, Register::ECX, m)?,
                    2 => i2!(Code::Movzx_r32_rm16, Register::ECX, m)?,
                    _ => i2!(Code::Mov_r32_rm32, Register::ECX, m)?,
                };
                self.ins(load)?;
            }
            _ => return self.generic(i),
        }
        self.e.jrcxz_label(zero);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        self.generic(i)?;
        self.e.jmp_label(done);
        self.e.bind(zero);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        match self.req.divide_error {
            Some(x) if self.req.max_insns > 1 => {
                // A fault in the delivery (not in the division) redoes the
                // instruction in the monitor.
                self.sub_entries.push((
                    self.e.pos() as u32,
                    i.ip32(),
                    fixup::DIVIDE_ERROR_IN_MONITOR,
                ));
                self.inline_int(x, i, i.ip32())?;
            }
            _ => self.raise_exit(i, 0)?,
        }
        self.e.bind(done);
        Ok(())
    }

    /// R10D = the memory operand's offset: `[base + index*scale + disp]`
    /// in 32 bits, or in 16 bits (wrapping at 64 KiB) for 16-bit addressing.
    /// Touches no flags.
    fn offset_into_r10(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let disp = i.memory_displacement32();
        if i.memory_base() == Register::None && i.memory_index() == Register::None {
            let disp = if is_16bit_address(i) {
                disp & 0xffff
            } else {
                disp
            };
            return self.ins(i2!(Code::Mov_r32_imm32, Register::R10D, disp)?);
        }
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R10D,
            guest_address_operand(i)
        )?)?;
        if is_16bit_address(i) {
            self.ins(i2!(Code::Movzx_r32_rm16, Register::R10D, Register::R10W)?)?;
        }
        Ok(())
    }

    fn needs_seg_base(&self, seg: Register) -> bool {
        matches!(seg, Register::FS | Register::GS) || !self.req.mode.flat
    }

    fn add_seg_base(&mut self, seg: Register) -> Result<(), TranslateError> {
        self.load_seg_base(seg)?;
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R10D,
            mem(Register::R10, Register::R11, 0)
        )?)
    }

    /// `[r15 + addr]` for the operand of `i`.
    fn window_operand(
        &mut self,
        i: &Instruction,
        force_r10: bool,
    ) -> Result<iced_x86::MemoryOperand, TranslateError> {
        if let Some((index, scale, disp)) = self.scaled_in_place(i, force_r10) {
            return Ok(iced_x86::MemoryOperand::new(
                Register::R15,
                index,
                scale,
                disp,
                displ_size(disp),
                false,
                Register::None,
            ));
        }
        let (reg, disp) = self.address(i, force_r10)?;
        Ok(mem(Register::R15, reg, disp))
    }

    /// `(index, scale, disp)` when `i`'s operand is `[index*scale + disp]`
    /// (no base) that may be folded as it stands into `[r15 + index*scale
    /// + disp]`: a flat segment, no limit to check, 32-bit addressing,
    /// `force_r10` false, a displacement that folds as an absolute address
    /// (below 2 GiB), and not a BT with a register bit offset (which
    /// reaches 256 MiB around its operand). A table or array indexed by a
    /// register (`mov eax, [ecx*4 + table]`, a `switch`'s jump) costs no
    /// `lea` then. The address reaches at most 34 GiB past the window's
    /// base, inside its guard after it (`shadowmmu::WINDOW_GUARD_AFTER`);
    /// a guest address that wraps around 4 GiB lands there, and the
    /// monitor runs the instruction again unfolded (see
    /// [`UnitRequest::unfolded`]).
    fn scaled_in_place(&self, i: &Instruction, force_r10: bool) -> Option<(Register, u32, i64)> {
        let seg = i.memory_segment();
        let index = i.memory_index();
        if force_r10
            || is_16bit_address(i)
            || i.memory_base() != Register::None
            || index == Register::None
            || self.req.mode.is_limited(seg)
            || self.needs_seg_base(seg)
            || reaches_beyond_operand(i)
        {
            return None;
        }
        let disp = self.folded_displacement(i)?;
        (disp >= 0).then(|| (host64(index), i.memory_index_scale(), disp))
    }

    /// Whether `i`'s stack access goes through the software TLB: the
    /// monitor asked for it, and it can (see [`soft_stack_candidate`]).
    fn wants_soft_stack(&self, i: &Instruction) -> bool {
        self.req.mode.flat
            && self.req.soft_access.contains(&i.ip32())
            && soft_stack_candidate(i)
            // POP m32 adds 4 to an ESP base after the address is formed,
            // which a segment-limit check of the address would not see.
            && !(i.code() == Code::Pop_rm32
                && i.op0_kind() == OpKind::Memory
                && i.memory_base() == Register::ESP
                && self.req.mode.is_limited(i.memory_segment()))
    }

    /// Whether `i`'s jump target is read through the software TLB: the
    /// monitor asked for it, and it can (see [`soft_jump_candidate`]).
    fn wants_soft_jump(&self, i: &Instruction) -> bool {
        self.req.mode.flat && self.req.soft_access.contains(&i.ip32()) && soft_jump_candidate(i)
    }

    /// `jmp m32`'s target read through the software TLB into R9D (ESP
    /// brought up to date first: a miss exits at the jump with the
    /// guest's state as it was).
    fn soft_target_to_r9(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.flush_stack_lag()?;
        self.note_soft(i);
        self.soft_explicit(i, false, 0)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, soft_slot(0))?)
    }

    /// Records that `i` reaches memory through the software TLB (once,
    /// however many accesses it has).
    fn note_soft(&mut self, i: &Instruction) {
        if self.soft_eips.last() != Some(&i.ip32()) {
            self.soft_eips.push(i.ip32());
        }
    }

    /// The probe for `i`'s explicit 32-bit memory operand (a stack
    /// instruction's): R10D its linear address, plus `esp_after` when it is
    /// ESP-based (POP m32 forms its address with ESP already incremented).
    fn soft_explicit(
        &mut self,
        i: &Instruction,
        write: bool,
        esp_after: i64,
    ) -> Result<(), TranslateError> {
        self.address(i, true)?;
        if esp_after != 0 && i.memory_base() == Register::ESP {
            self.lea32(Register::R10D, Register::R10, esp_after)?;
        }
        self.soft_probe(4, write, SoftMiss::Exit(i.ip32()))
    }

    /// `i`'s explicit 32-bit operand read through the software TLB into
    /// spill slot 0 (`mov r9d, [r12 + r11] ; mov [spill0], r9d`), so that
    /// the next probe may use every scratch register.
    fn soft_operand_to_spill(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.note_soft(i);
        self.soft_explicit(i, false, 0)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, soft_slot(0))?)?;
        self.ins(i2!(Code::Mov_rm32_r32, spill_slot(0), Register::R9D)?)
    }

    /// PUSH m32 through the software TLB: the operand (read, ESP as before
    /// the push) into spill slot 0, then [`Self::soft_push`] of it. Both
    /// probes come before the store: a miss of either changes nothing.
    fn soft_push_memory(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        // ESP up to date before an ESP-based operand's address is formed.
        self.flush_stack_lag()?;
        self.soft_operand_to_spill(i)?;
        self.soft_push(i, SoftPushed::Spilled)
    }

    /// PUSH of a segment register (32-bit) through the software TLB: the
    /// selector, zero-extended as the window form stores it, into spill
    /// slot 0 from the state block, then [`Self::soft_push`] of it.
    fn soft_push_selector(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let Some(s) = seg_index(i.op0_register()) else {
            return Err(TranslateError::Unsupported("push operand"));
        };
        let selector = mem(
            Register::R14,
            Register::None,
            i64::from(off::SEG_SEL) + 2 * s as i64,
        );
        self.ins(i2!(Code::Movzx_r32_rm16, Register::R9D, selector)?)?;
        self.ins(i2!(Code::Mov_rm32_r32, spill_slot(0), Register::R9D)?)?;
        self.soft_push(i, SoftPushed::Spilled)
    }

    /// POP m32 through the software TLB: the 4 bytes at ESP into spill
    /// slot 0, then the operand's probe (for a write, an ESP base counted
    /// after the increment, as the SDM has it), the store, ESP + 4.
    ///
    /// ```text
    ///     mov r10d, r8d ; <probe: read> ; mov r9d, [r12 + r11] ; mov [spill0], r9d
    ///     <address into r10d> (+4 if ESP-based) ; <probe: write>
    ///     mov r9d, [spill0] ; mov [r12 + r11], r9d ; lea r8d, [r8 + 4]
    /// ```
    fn soft_pop_memory(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.soft_load_top(i, Register::R9D)?;
        self.ins(i2!(Code::Mov_rm32_r32, spill_slot(0), Register::R9D)?)?;
        self.soft_explicit(i, true, 4)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, spill_slot(0))?)?;
        self.ins(i2!(Code::Mov_rm32_r32, soft_slot(0), Register::R9D)?)?;
        self.lea32(Register::R8D, Register::R8, 4)
    }

    /// PUSHAD through the software TLB: one 32-byte write at ESP - 32
    /// (an access crossing a page misses, and the monitor runs it through
    /// the window), the registers stored after the probe, ESP's as it was.
    fn soft_pushad(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.flush_stack_lag()?;
        self.note_soft(i);
        self.lea32(Register::R10D, Register::R8, -32)?;
        self.soft_probe(32, true, SoftMiss::Exit(i.ip32()))?;
        for (n, r) in PUSHAD_ORDER.iter().enumerate() {
            self.ins(i2!(Code::Mov_rm32_r32, soft_slot(28 - 4 * n as i64), *r)?)?;
        }
        self.lea32(Register::R8D, Register::R8, -32)
    }

    /// POPAD through the software TLB: one 32-byte read at ESP, then the
    /// registers (not ESP) and ESP + 32.
    fn soft_popad(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.flush_stack_lag()?;
        self.note_soft(i);
        self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::R8D)?)?;
        self.soft_probe(32, false, SoftMiss::Exit(i.ip32()))?;
        for (n, r) in POPAD_ORDER.iter().enumerate() {
            if *r != Register::None {
                self.ins(i2!(Code::Mov_r32_rm32, *r, soft_slot(4 * n as i64))?)?;
            }
        }
        self.lea32(Register::R8D, Register::R8, 32)
    }

    /// A string instruction without REP (see [`soft_element_candidate`])
    /// through the software TLB: every access of its one element probed
    /// before anything is stored or a register changes (MOVS and CMPS keep
    /// the source element in spill slot 0 across the destination's
    /// probe), then ESI/EDI moved by the element size, down when DF is set.
    fn soft_element_string(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        self.note_soft(i);
        let (si, di) = self.soft_element(i)?;
        self.advance_string_registers(string_element_size(i), si, di)?;
        Ok(false)
    }

    /// `rep lods`, `repe`/`repne scas` or `repe`/`repne cmps` through the
    /// software TLB, one element per lookup:
    ///
    /// ```text
    ///     jrcxz none ; jmp top ; none: jmp done
    /// top: <poll>
    ///     <the element, as without REP> ; lea ecx, [rcx - 1]
    ///     (scas, cmps: jnz done for REPE, jz done for REPNE)
    ///     jrcxz done ; jmp top
    /// done:
    /// ```
    ///
    /// A miss exits with ECX, ESI and EDI as the elements done so far left
    /// them (a `rep` interrupted between elements, which the monitor
    /// resumes as the hardware would), and so does an exit request at the
    /// poll.
    fn soft_rep_elements(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        use Mnemonic::*;
        self.note_soft(i);
        let (top, none, done) = (self.e.label(), self.e.label(), self.e.label());
        // JRCXZ reaches 127 bytes: ECX = 0 on entry jumps on through a JMP.
        self.e.jrcxz_label(none);
        self.e.jmp_label(top);
        self.e.bind(none);
        self.e.jmp_label(done);
        self.e.bind(top);
        self.poll()?;
        let (si, di) = self.soft_element(i)?;
        self.advance_string_registers(string_element_size(i), si, di)?;
        self.lea32(Register::ECX, Register::RCX, -1)?;
        if matches!(i.mnemonic(), Scasb | Scasw | Scasd | Cmpsb | Cmpsw | Cmpsd) {
            // jz (4) for REPNE, jnz (5) for REPE.
            self.e
                .jcc_label(if i.has_repne_prefix() { 4 } else { 5 }, done);
        }
        self.e.jrcxz_label(done);
        self.e.jmp_label(top);
        self.e.bind(done);
        Ok(false)
    }

    /// The one element of string instruction `i` through the software TLB
    /// (see [`Self::soft_element_string`]), ESI and EDI not moved; which of
    /// them it uses.
    fn soft_element(&mut self, i: &Instruction) -> Result<(bool, bool), TranslateError> {
        use Mnemonic::*;
        let size = string_element_size(i);
        let (acc, r9) = match size {
            1 => (Register::AL, Register::R9L),
            2 => (Register::AX, Register::R9W),
            _ => (Register::EAX, Register::R9D),
        };
        let (load, store, cmp) = match size {
            1 => (Code::Mov_r8_rm8, Code::Mov_rm8_r8, Code::Cmp_r8_rm8),
            2 => (Code::Mov_r16_rm16, Code::Mov_rm16_r16, Code::Cmp_r16_rm16),
            _ => (Code::Mov_r32_rm32, Code::Mov_rm32_r32, Code::Cmp_r32_rm32),
        };
        let eip = i.ip32();
        let probe_reg = |cx: &mut Self, reg: Register, write: bool| {
            cx.ins(i2!(Code::Mov_r32_rm32, Register::R10D, reg)?)?;
            cx.soft_probe(size, write, SoftMiss::Exit(eip))
        };
        let (si, di) = match i.mnemonic() {
            Lodsb | Lodsw | Lodsd => {
                probe_reg(self, Register::ESI, false)?;
                self.ins(i2!(load, acc, soft_slot(0))?)?;
                (true, false)
            }
            Stosb | Stosw | Stosd => {
                probe_reg(self, Register::EDI, true)?;
                self.ins(i2!(store, soft_slot(0), acc)?)?;
                (false, true)
            }
            Scasb | Scasw | Scasd => {
                probe_reg(self, Register::EDI, false)?;
                self.ins(i2!(cmp, acc, soft_slot(0))?)?;
                (false, true)
            }
            _ => {
                let movs = matches!(i.mnemonic(), Movsb | Movsw | Movsd);
                probe_reg(self, Register::ESI, false)?;
                let widen = match size {
                    1 => Code::Movzx_r32_rm8,
                    2 => Code::Movzx_r32_rm16,
                    _ => Code::Mov_r32_rm32,
                };
                self.ins(i2!(widen, Register::R9D, soft_slot(0))?)?;
                self.ins(i2!(Code::Mov_rm32_r32, spill_slot(0), Register::R9D)?)?;
                probe_reg(self, Register::EDI, movs)?;
                self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, spill_slot(0))?)?;
                if movs {
                    self.ins(i2!(store, soft_slot(0), r9)?)?;
                } else {
                    self.ins(i2!(cmp, r9, soft_slot(0))?)?;
                }
                (true, true)
            }
        };
        Ok((si, di))
    }

    /// `pushfq; test byte [rsp + 1], 4; jnz label`: the guest's flags
    /// saved on the host stack (the caller pops them on every path) and a
    /// jump to `label` when DF is set.
    fn save_flags_and_jump_if_df(&mut self, label: Label) -> Result<(), TranslateError> {
        self.ins(Instruction::with(Code::Pushfq))?;
        self.ins(i2!(
            Code::Test_rm8_imm8,
            mem(Register::RSP, Register::None, 1),
            4u32
        )?)?;
        self.e.jcc_label(5, label);
        Ok(())
    }

    /// ESI and/or EDI moved by one element of `size` bytes, down when DF
    /// is set; guest flags are kept (saved around the DF test).
    fn advance_string_registers(
        &mut self,
        size: u32,
        si: bool,
        di: bool,
    ) -> Result<(), TranslateError> {
        let (down, end) = (self.e.label(), self.e.label());
        self.save_flags_and_jump_if_df(down)?;
        for (label, delta) in [(None, i64::from(size)), (Some(down), -i64::from(size))] {
            if let Some(l) = label {
                self.e.bind(l);
            }
            self.ins(Instruction::with(Code::Popfq))?;
            if si {
                self.lea32(Register::ESI, Register::RSI, delta)?;
            }
            if di {
                self.lea32(Register::EDI, Register::RDI, delta)?;
            }
            if label.is_none() {
                self.e.jmp_label(end);
            }
        }
        self.e.bind(end);
        Ok(())
    }

    /// XLAT through the software TLB: R10D = EBX + AL (DS has base 0 in a
    /// flat mode; a limit is checked as in the window form), the probe for
    /// a 1-byte read, `mov al, [r12 + r11]`.
    fn soft_xlat(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.note_soft(i);
        self.xlat_linear_to_r10(i)?;
        self.soft_probe(1, false, SoftMiss::Exit(i.ip32()))?;
        self.ins(i2!(Code::Mov_r8_rm8, Register::AL, soft_slot(0))?)
    }

    /// Whether `i`'s implicit access goes through the software TLB (see
    /// [`soft_element_candidate`]).
    fn wants_soft_element(&self, i: &Instruction) -> bool {
        self.req.mode.flat && self.req.soft_access.contains(&i.ip32()) && soft_element_candidate(i)
    }

    /// PUSH (or a CALL's return address) through the software TLB:
    ///
    /// ```text
    ///     lea r10d, [r8 - 4] ; <probe for a 4-byte write>
    ///     mov dword [r12 + r11], value ; lea r8d, [r8 - 4]
    /// ```
    ///
    /// A miss exits before anything is stored or ESP moves.
    fn soft_push(&mut self, i: &Instruction, value: SoftPushed) -> Result<(), TranslateError> {
        self.flush_stack_lag()?;
        self.note_soft(i);
        self.lea32(Register::R10D, Register::R8, -4)?;
        self.soft_probe(4, true, SoftMiss::Exit(i.ip32()))?;
        let slot = soft_slot(0);
        match value {
            SoftPushed::Register(r) => self.ins(i2!(Code::Mov_rm32_r32, slot, r)?)?,
            SoftPushed::Immediate(v) => self.ins(i2!(Code::Mov_rm32_imm32, slot, v)?)?,
            SoftPushed::Spilled => {
                self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, spill_slot(0))?)?;
                self.ins(i2!(Code::Mov_rm32_r32, slot, Register::R9D)?)?;
            }
        }
        self.lea32(Register::R8D, Register::R8, -4)
    }

    /// POP into a general register through the software TLB (see
    /// [`Self::soft_pop_into`]).
    fn soft_pop(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.soft_pop_into(i, host(i.op0_register()).full_register32())
    }

    /// The 4 bytes at ESP into `dst` through the software TLB: `mov r10d,
    /// r8d`, the probe for a 4-byte read, `mov dst, [r12 + r11]`, `lea
    /// r8d, [r8 + 4]`. A miss exits before anything changes.
    fn soft_pop_into(&mut self, i: &Instruction, dst: Register) -> Result<(), TranslateError> {
        self.soft_load_top(i, dst)?;
        self.lea32(Register::R8D, Register::R8, 4)
    }

    /// The 4 bytes at ESP into `dst` through the software TLB (ESP not
    /// moved; a miss exits before anything changes).
    fn soft_load_top(&mut self, i: &Instruction, dst: Register) -> Result<(), TranslateError> {
        self.flush_stack_lag()?;
        self.note_soft(i);
        self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::R8D)?)?;
        self.soft_probe(4, false, SoftMiss::Exit(i.ip32()))?;
        self.ins(i2!(Code::Mov_r32_rm32, dst, soft_slot(0))?)
    }

    /// Whether `i`'s explicit memory operand goes through the software
    /// TLB: the monitor asked for it, and it can.
    fn wants_soft_access(&self, i: &Instruction) -> bool {
        self.req.soft_access.contains(&i.ip32()) && soft_access_candidate(i)
    }

    /// The operand `[r12 + r11]` reaching `i`'s explicit memory operand
    /// through the software TLB of the current window (R15-relative, so it
    /// follows view switches). With R10D the linear address:
    ///
    /// ```text
    /// mov r9d, 12 ; lea r11d, [r10 + size - 1]
    /// shrx r11d, r11d, r9d        ; page of the last byte
    /// shrx r9d, r10d, r9d         ; page of the first byte
    /// movzx r12d, r9w             ; slot
    /// mov r13, rcx ; mov rcx, [r15 + r12*8 + tags]   ; -(page + 1)
    /// lea rcx, [rcx + r11 + 1]    ; last page - page
    /// jrcxz hit ; mov rcx, r13 ; <SoftMiss exit>
    /// hit: mov rcx, r13 ; mov r12, [r15 + r12*8 + frames]
    /// movzx r11d, r10w            ; frame value + low 16 bits = host
    /// ```
    ///
    /// A hit needs the slot's tag to be the first byte's page and the last
    /// byte in the same page: an access crossing pages always misses, and
    /// the monitor runs it through the window. No flag changes (SHRX,
    /// MOVZX, NOT, LEA, MOV); RCX is the guest's again on both paths.
    /// Whatever path reaches the access, it lies within 60 KiB before or
    /// 4 KiB + 15 bytes after a frame the table names (the guards around
    /// guest RAM absorb the rest), which the verifier checks by itself.
    fn soft_operand(&mut self, i: &Instruction) -> Result<iced_x86::MemoryOperand, TranslateError> {
        let (size, write) = explicit_access(i);
        self.note_soft(i);
        self.address(i, true)?;
        self.soft_probe(size, write, SoftMiss::Exit(i.ip32()))?;
        Ok(soft_slot(0))
    }

    /// The software-TLB lookup of the access of `size` bytes at R10D (see
    /// [`Self::soft_operand`]): on a hit R12 holds the slot's frame value
    /// and R11 the low 16 bits of R10D (their sum is the host address); on
    /// a miss it exits with `SoftMiss` for the instruction at the given EIP,
    /// or jumps to a label with R10D kept. Touches no flags; RCX is the
    /// guest's again on both paths.
    fn soft_probe(&mut self, size: u32, write: bool, miss: SoftMiss) -> Result<(), TranslateError> {
        let last = mem(Register::R10, Register::None, i64::from(size - 1));
        self.soft_probe_to(last, size, write, miss)
    }

    /// [`Self::soft_probe`] of the bytes from R10D to `last` (a `lea`
    /// operand giving the access's last byte from R10D; an access of
    /// `size` bytes for a miss exit).
    fn soft_probe_to(
        &mut self,
        last: iced_x86::MemoryOperand,
        size: u32,
        write: bool,
        miss: SoftMiss,
    ) -> Result<(), TranslateError> {
        let (tags, frames) = if write {
            (shadowmmu::SOFT_WRITE_TAGS, shadowmmu::SOFT_WRITE_FRAMES)
        } else {
            (shadowmmu::SOFT_READ_TAGS, shadowmmu::SOFT_READ_FRAMES)
        };
        let err = crate::emit::enc_err;
        self.ins(i2!(Code::Mov_r32_imm32, Register::R9D, 12u32)?)?;
        self.ins(i2!(Code::Lea_r32_m, Register::R11D, last)?)?;
        let shrx = |dst: Register, src: Register| {
            Instruction::with3(Code::VEX_Shrx_r32_rm32_r32, dst, src, Register::R9D).map_err(err)
        };
        self.ins(shrx(Register::R11D, Register::R11D)?)?;
        self.ins(shrx(Register::R9D, Register::R10D)?)?;
        self.ins(i2!(Code::Movzx_r32_rm16, Register::R12D, Register::R9W)?)?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, soft_table(tags))?)?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RCX,
            mem(Register::RCX, Register::R11, 1)
        )?)?;
        let hit = self.e.label();
        self.e.jrcxz_label(hit);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        match miss {
            SoftMiss::Exit(eip) => self.soft_miss_exit(size, write, eip)?,
            SoftMiss::Jump(l) => {
                self.e.jmp_label(l);
            }
        }
        self.e.bind(hit);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::R12, soft_table(frames))?)?;
        self.ins(i2!(Code::Movzx_r32_rm16, Register::R11D, Register::R10W)?)
    }

    /// Exits with `SoftMiss` for the access of `size` bytes at R10D by the
    /// instruction at `eip`.
    fn soft_miss_exit(&mut self, size: u32, write: bool, eip: u32) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R14, Register::None, off::SOFT_ADDR.into()),
            Register::R10D
        )?)?;
        let access = size
            | if write {
                crate::state::SOFT_ACCESS_WRITE
            } else {
                0
            };
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::SOFT_ACCESS.into()),
            access
        )?)?;
        self.store_eip_imm(eip)?;
        self.store_exit(ExitReason::SoftMiss)?;
        self.e.jmp_abs(self.req.stubs.exit_common)
    }

    /// An adaptive `rep movs`/`rep stos` (see [`soft_string_candidate`]):
    /// page by page through the software TLB, each chunk a native `rep`
    /// between host pointers into guest RAM.
    ///
    /// ```text
    ///     pushfq ; test byte [rsp+1], 4 ; jnz slow   ; DF = 1: the window
    /// top: test ecx, ecx ; jz done
    ///     spill EDI (and ESI); R10D = EDI; probe (write) -> miss_dst
    ///     lea rdi, [r12 + r11]; R11D = whole elements left in EDI's page
    ///     (none: the element straddles -> miss_dst)
    ///     movs: the same for ESI (read) -> miss_src, lea rsi, [r12 + r11]
    ///     chunk = min(ECX, elements left); and ecx, 0x1fff; rep movs/stos
    ///     EDI (ESI) = spilled + chunk * size; ECX = rest; jmp top
    /// miss: EDI (ESI) back from the spill; popfq; SoftMiss exit
    /// done: popfq ; jmp end
    /// slow: popfq ; the window form
    /// ```
    ///
    /// Guest flags are saved for the whole of it (nothing in it touches
    /// the guest's); ECX, ESI and EDI change only by whole chunks, so a
    /// miss leaves the state of a `rep` interrupted between elements, which
    /// the monitor resumes as the hardware would. A chunk never leaves its
    /// page (an element that straddles two misses, and the monitor runs
    /// the rest through the window).
    fn soft_string(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        self.note_soft(i);
        let size = string_element_size(i);
        let movs = matches!(
            i.mnemonic(),
            Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd
        );
        let spill = |k: i64| mem(Register::R14, Register::None, i64::from(off::SPILL) + 8 * k);
        let (slow, top, done, end) = (
            self.e.label(),
            self.e.label(),
            self.e.label(),
            self.e.label(),
        );
        let (miss_dst, miss_src) = (self.e.label(), self.e.label());
        let general = self.e.label();
        self.soft_string_in_one_page(i, size, movs, general, end)?;
        self.e.bind(general);
        self.save_flags_and_jump_if_df(slow)?;
        self.e.bind(top);
        self.ins(i2!(Code::Test_rm32_r32, Register::ECX, Register::ECX)?)?;
        self.e.jcc_label(4, done);
        self.ins(i2!(Code::Mov_rm32_r32, spill(0), Register::EDI)?)?;
        if movs {
            self.ins(i2!(Code::Mov_rm32_r32, spill(1), Register::ESI)?)?;
        }
        // The destination, ES:EDI (ES has base 0 in a flat mode).
        self.soft_string_pointer(Register::RDI, size, true, miss_dst)?;
        self.ins(i2!(Code::Mov_rm32_r32, spill(2), Register::R11D)?)?;
        if movs {
            self.soft_string_pointer(Register::RSI, size, false, miss_src)?;
            self.ins(i2!(Code::Cmp_r32_rm32, Register::R11D, spill(2))?)?;
            self.ins(i2!(Code::Cmova_r32_rm32, Register::R11D, spill(2))?)?;
        } else {
            self.ins(i2!(Code::Mov_r32_rm32, Register::R11D, spill(2))?)?;
        }
        self.ins(i2!(Code::Cmp_r32_rm32, Register::R11D, Register::ECX)?)?;
        self.ins(i2!(Code::Cmova_r32_rm32, Register::R11D, Register::ECX)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, Register::ECX)?)?;
        self.ins(i2!(Code::Sub_r32_rm32, Register::R9D, Register::R11D)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R13D, Register::R11D)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::ECX, Register::R11D)?)?;
        self.ins(i2!(
            Code::And_rm32_imm32,
            Register::ECX,
            SOFT_STRING_MAX_COUNT
        )?)?;
        self.soft_rep_and_advance(i, size, movs)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::ECX, Register::R9D)?)?;
        self.e.jmp_label(top);
        for (label, write) in [(miss_dst, true), (miss_src, false)] {
            self.e.bind(label);
            if write || movs {
                self.ins(i2!(Code::Mov_r32_rm32, Register::EDI, spill(0))?)?;
                if movs {
                    self.ins(i2!(Code::Mov_r32_rm32, Register::ESI, spill(1))?)?;
                }
                self.ins(Instruction::with(Code::Popfq))?;
                self.soft_miss_exit(size, write, i.ip32())?;
            }
        }
        self.e.bind(done);
        self.ins(Instruction::with(Code::Popfq))?;
        self.e.jmp_label(end);
        self.e.bind(slow);
        self.ins(Instruction::with(Code::Popfq))?;
        self.string_through_window(i)?;
        self.e.bind(end);
        Ok(false)
    }

    /// The fast path of an adaptive `rep movs`/`rep stos` (see
    /// [`Self::soft_string`]): when DF is clear, ECX is below 4,096 and
    /// the software TLB has the page of each operand's first byte and its
    /// last lies in that page too (a copy of a few bytes, the common case
    /// of a hot one), a single native `rep` between the two host pointers,
    /// with no flag touched (the chunk loop saves and restores the guest's
    /// flags around it, which costs more than a short copy):
    ///
    /// ```text
    ///     pushfq ; pop r9 ; mov r10d, 0x400 ; pext r9, r9, r10   ; DF
    ///     mov r10d, 12 ; shrx r11d, ecx, r10d ; lea r9, [r9 + r11] ; + ECX >> 12
    ///     mov r13, rcx ; mov rcx, r9 ; jrcxz go ; mov rcx, r13 ; jmp general
    /// go: mov rcx, r13
    ///     spill EDI ; R10D = EDI ; probe [EDI, EDI + ECX * size) (write) -> general
    ///     lea rdi, [r12 + r11]
    ///     movs: spill ESI ; R10D = ESI ; probe (read) -> back ; lea rsi, [r12 + r11]
    ///     mov r13, rcx ; movzx ecx, cx ; rep movs/stos
    ///     mov edi, [spill 0] ; lea edi, [rdi + r13 * size] (ESI too) ; jmp end
    /// back: mov edi, [spill 0] ; jmp general
    /// ```
    ///
    /// Every way out but the copy leaves the guest's registers as they
    /// were and goes on to the chunk loop (`general`), which handles the
    /// rest; the copy runs whole, as the instruction would.
    fn soft_string_in_one_page(
        &mut self,
        i: &Instruction,
        size: u32,
        movs: bool,
        general: Label,
        end: Label,
    ) -> Result<(), TranslateError> {
        let err = crate::emit::enc_err;
        let (go, back) = (self.e.label(), self.e.label());
        self.ins(Instruction::with(Code::Pushfq))?;
        self.ins(Instruction::with1(Code::Pop_r64, Register::R9).map_err(err)?)?;
        self.ins(i2!(Code::Mov_r32_imm32, Register::R10D, 0x400u32)?)?;
        self.ins(
            Instruction::with3(
                Code::VEX_Pext_r64_r64_rm64,
                Register::R9,
                Register::R9,
                Register::R10,
            )
            .map_err(err)?,
        )?;
        self.ins(i2!(Code::Mov_r32_imm32, Register::R10D, 12u32)?)?;
        self.ins(
            Instruction::with3(
                Code::VEX_Shrx_r32_rm32_r32,
                Register::R11D,
                Register::ECX,
                Register::R10D,
            )
            .map_err(err)?,
        )?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::R9,
            mem(Register::R9, Register::R11, 0)
        )?)?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R9)?)?;
        self.e.jrcxz_label(go);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        self.e.jmp_label(general);
        self.e.bind(go);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        // The last byte of ECX elements from R10D (ECX < 4,096: no wrap
        // makes another page's address look like this one's).
        let last = iced_x86::MemoryOperand::new(
            Register::R10,
            Register::RCX,
            size,
            -1,
            1,
            false,
            Register::None,
        );
        self.ins(i2!(Code::Mov_rm32_r32, spill_slot(0), Register::EDI)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::EDI)?)?;
        self.soft_probe_to(last, size, true, SoftMiss::Jump(general))?;
        self.ins(i2!(Code::Lea_r64_m, Register::RDI, soft_slot(0))?)?;
        if movs {
            self.ins(i2!(Code::Mov_rm32_r32, spill_slot(1), Register::ESI)?)?;
            self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::ESI)?)?;
            self.soft_probe_to(last, size, false, SoftMiss::Jump(back))?;
            self.ins(i2!(Code::Lea_r64_m, Register::RSI, soft_slot(0))?)?;
        }
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        self.ins(i2!(Code::Movzx_r32_rm16, Register::ECX, Register::CX)?)?;
        self.soft_rep_and_advance(i, size, movs)?;
        self.e.jmp_label(end);
        self.e.bind(back);
        self.ins(i2!(Code::Mov_r32_rm32, Register::EDI, spill_slot(0))?)?;
        self.e.jmp_label(general);
        Ok(())
    }

    /// The native `rep` of `i` between the host pointers in RSI/RDI, then
    /// EDI (and ESI, for MOVS) back to guest addresses: the ones spilled
    /// to slots 0 and 1 moved by the R13 elements of `size` bytes it ran.
    fn soft_rep_and_advance(
        &mut self,
        i: &Instruction,
        size: u32,
        movs: bool,
    ) -> Result<(), TranslateError> {
        self.e.raw(&string_bytes(i, self.page, self.page_eip)?);
        let advanced = |reg: Register| {
            iced_x86::MemoryOperand::new(reg, Register::R13, size, 0, 0, false, Register::None)
        };
        self.ins(i2!(Code::Mov_r32_rm32, Register::EDI, spill_slot(0))?)?;
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::EDI,
            advanced(Register::RDI)
        )?)?;
        if movs {
            self.ins(i2!(Code::Mov_r32_rm32, Register::ESI, spill_slot(1))?)?;
            self.ins(i2!(
                Code::Lea_r32_m,
                Register::ESI,
                advanced(Register::RSI)
            )?)?;
        }
        Ok(())
    }

    /// Turns string register `reg` (RSI or RDI, a guest address) into
    /// the host pointer the software TLB gives for it (R10D keeps the
    /// guest address), and R11D into the whole elements of `size` bytes
    /// left in its page; jumps to `miss` on a miss or when an element
    /// straddles the page's end.
    fn soft_string_pointer(
        &mut self,
        reg: Register,
        size: u32,
        write: bool,
        miss: Label,
    ) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_r32_rm32,
            Register::R10D,
            reg.full_register32()
        )?)?;
        self.soft_probe(size, write, SoftMiss::Jump(miss))?;
        self.ins(i2!(Code::Lea_r64_m, reg, soft_slot(0))?)?;
        self.elements_left_in_page(size)?;
        self.e.jcc_label(4, miss);
        Ok(())
    }

    /// R11D = the whole elements of `size` bytes from R10D to the end of
    /// its page (0 when one straddles the page's end); ZF set when none.
    fn elements_left_in_page(&mut self, size: u32) -> Result<(), TranslateError> {
        let err = crate::emit::enc_err;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R11D, Register::R10D)?)?;
        self.ins(i2!(Code::And_rm32_imm32, Register::R11D, 0xfffu32)?)?;
        self.ins(Instruction::with1(Code::Neg_rm32, Register::R11D).map_err(err)?)?;
        self.ins(i2!(Code::Add_rm32_imm32, Register::R11D, 0x1000u32)?)?;
        self.ins(i2!(
            Code::Shr_rm32_imm8,
            Register::R11D,
            size.trailing_zeros()
        )?)?;
        self.ins(i2!(Code::Test_rm32_r32, Register::R11D, Register::R11D)?)
    }

    // ----- generic instructions --------------------------------------------

    fn generic(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let mut h = *i;
        h.set_code(long_mode_code(i.code()));
        let has_mem = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
        let high: Vec<u32> = (0..i.op_count())
            .filter(|&n| i.op_kind(n) == OpKind::Register && is_high_byte(i.op_register(n)))
            .collect();
        let uses_rex = has_mem
            || (0..i.op_count()).any(|n| {
                i.op_kind(n) == OpKind::Register
                    && matches!(i.op_register(n), Register::ESP | Register::SP)
            });
        if has_mem {
            let m = if self.wants_soft_access(i) {
                self.soft_operand(i)?
            } else {
                self.window_operand(i, !high.is_empty())?
            };
            set_memory(&mut h, m);
        }
        for n in 0..i.op_count() {
            if i.op_kind(n) == OpKind::Register {
                h.set_op_register(n, host(i.op_register(n)));
            }
        }
        if uses_rex && !high.is_empty() {
            return self.with_high_byte_swapped(h, &high);
        }
        self.ins(h)
    }

    /// Encodes `h` with its high-byte register replaced by the low byte of
    /// the same register, exchanging the two around it.
    fn with_high_byte_swapped(
        &mut self,
        mut h: Instruction,
        high: &[u32],
    ) -> Result<(), TranslateError> {
        let hr = h.op_register(high[0]);
        let lo = match hr {
            Register::AH => Register::AL,
            Register::CH => Register::CL,
            Register::DH => Register::DL,
            _ => Register::BL,
        };
        for &n in high {
            if h.op_register(n) != hr {
                return Err(TranslateError::Unsupported(
                    "two different high-byte registers with REX",
                ));
            }
            h.set_op_register(n, lo);
        }
        self.fixup = fixup::SWAP_BASE + (lo.number() as u8);
        let swap = i2!(Code::Xchg_rm8_r8, lo, hr)?;
        self.ins(swap)?;
        self.ins(h)?;
        self.ins(swap)
    }

    fn lea(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let dst = host(i.op0_register());
        let base = i.memory_base();
        let index = i.memory_index();
        if is_16bit_address(i) {
            self.offset_into_r10(i)?;
            return if dst.size() == 2 {
                self.ins(i2!(Code::Mov_r16_rm16, dst, Register::R10W)?)
            } else {
                self.ins(i2!(Code::Mov_r32_rm32, dst, Register::R10D)?)
            };
        }
        let disp = i.memory_displacement32();
        if base == Register::None && index == Register::None {
            return if dst.size() == 2 {
                self.ins(i2!(Code::Mov_r16_imm16, dst, disp & 0xffff)?)
            } else {
                self.ins(i2!(Code::Mov_r32_imm32, dst, disp)?)
            };
        }
        let code = if dst.size() == 2 {
            Code::Lea_r16_m
        } else {
            Code::Lea_r32_m
        };
        let mut operand = guest_address_operand(i);
        if base == Register::ESP && self.stack_pending != 0 {
            // A 32-bit LEA: the displacement wraps as the result does.
            let disp = (operand.displacement as i32).wrapping_add(self.stack_pending);
            operand.displacement = i64::from(disp);
            operand.displ_size = 1;
        }
        self.ins(i2!(code, dst, operand)?)
    }

    /// R10D = the linear address XLAT reads: EBX (or BX) + AL, its
    /// segment's limit checked and base added where the mode needs it.
    fn xlat_linear_to_r10(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Movzx_r32_rm8, Register::R10D, Register::AL)?)?;
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R10D,
            mem(Register::RBX, Register::R10, 0)
        )?)?;
        if i.memory_base() == Register::BX {
            self.ins(i2!(Code::Movzx_r32_rm16, Register::R10D, Register::R10W)?)?;
        }
        let seg = i.memory_segment();
        if self.req.mode.is_limited(seg) {
            self.check_segment_access(i, seg, 1, false)?;
        }
        if self.needs_seg_base(seg) {
            self.add_seg_base(seg)?;
        }
        Ok(())
    }

    fn xlat(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.wants_soft_element(i) {
            return self.soft_xlat(i);
        }
        self.xlat_linear_to_r10(i)?;
        self.ins(i2!(
            Code::Mov_r8_rm8,
            Register::AL,
            mem(Register::R15, Register::R10, 0)
        )?)
    }

    /// The port of an `IN`/`OUT` with an immediate port that may run
    /// inline: at CPL 0 (IOPL and the I/O bitmap cannot forbid it), with no
    /// I/O breakpoint, to ports no device claims.
    fn ignored_port_access(&self, i: &Instruction) -> Option<u16> {
        let ports = self.req.ignored_ports?;
        if !self.req.mode.cpl0 || self.req.mode.io_exits {
            return None;
        }
        let (port_op, data_op) = match i.mnemonic() {
            Mnemonic::Out => (0, 1),
            Mnemonic::In => (1, 0),
            _ => return None,
        };
        if i.op_kind(port_op) != OpKind::Immediate8 {
            return None;
        }
        let port = u16::from(i.immediate8());
        let size = i.op_register(data_op).size() as u16;
        ports.contains_range(port, size).then_some(port)
    }

    /// An access to an ignored port: OUT does nothing; IN reads all ones,
    /// as from an ISA bus with nothing on it.
    fn ignored_port_io(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if i.mnemonic() != Mnemonic::In {
            return Ok(());
        }
        let code = match i.op0_register() {
            Register::AL => Code::Mov_r8_imm8,
            Register::AX => Code::Mov_r16_imm16,
            _ => Code::Mov_r32_imm32,
        };
        self.ins(i2!(code, i.op0_register(), size_mask(i.op0_register()))?)
    }

    /// SYSENTER or SYSEXIT carried out inline when the monitor offered
    /// it: `Some(ends_unit)` if it was translated.
    fn inline_transition(&mut self, i: &Instruction) -> Result<Option<bool>, TranslateError> {
        let Some(t) = self.req.transitions else {
            return Ok(None);
        };
        match i.code() {
            Code::Sysenter => match t.sysenter {
                Some(to) => self.sysenter(&to).map(Some),
                None => Ok(None),
            },
            Code::Sysexitd if self.req.mode.cpl0 => match t.sysexit {
                Some(to) => self.sysexit(&to).map(Some),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// SYSENTER: IF clear, ESP and the new CS/SS, then a chainable jump
    /// into the ring-0 mode's translation of IA32_SYSENTER_EIP; polled
    /// first, as an inline INT is (see `Ctx::inline_int`).
    fn sysenter(&mut self, to: &InlineTransition) -> Result<bool, TranslateError> {
        self.poll()?;
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::VIF.into()),
            0u32
        )?)?;
        self.ins(i2!(Code::Mov_r32_imm32, Register::R8D, to.esp)?)?;
        self.privilege_change(to, crate::state::TRANSITION_SYSENTER)?;
        self.chain_exit_to_mode(to.eip, to.mode, to.tag)?;
        Ok(true)
    }

    /// SYSEXIT: ESP = ECX, the new CS/SS, then an indirect branch to EDX
    /// looked up for the ring-3 mode.
    fn sysexit(&mut self, to: &InlineTransition) -> Result<bool, TranslateError> {
        self.ins(i2!(Code::Mov_r32_rm32, Register::R8D, Register::ECX)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, Register::EDX)?)?;
        self.privilege_change(to, crate::state::TRANSITION_SYSEXIT)?;
        self.indirect_in(to.tag)?;
        Ok(true)
    }

    /// The state-block side of an inline privilege change: the CS and SS
    /// mirrors (selector, base 0, allowed offsets), the transition for the
    /// monitor, and the window register switched to the new view. Touches
    /// no flags and no guest register.
    fn privilege_change(&mut self, to: &InlineTransition, kind: u32) -> Result<(), TranslateError> {
        if self.req.return_stack {
            // A continuation belongs to its call's mode: none survives a
            // privilege change.
            self.ins(i2!(
                Code::Mov_r64_rm64,
                Register::RSP,
                mem(Register::R14, Register::None, off::RSB_TOP.into())
            )?)?;
        }
        for (n, seg) in [Seg::Cs, Seg::Ss].into_iter().enumerate() {
            let s = seg as i64;
            self.ins(i2!(
                Code::Mov_rm16_imm16,
                mem(
                    Register::R14,
                    Register::None,
                    i64::from(off::SEG_SEL) + 2 * s
                ),
                u32::from(to.selectors[n])
            )?)?;
            self.ins(i2!(
                Code::Mov_rm32_imm32,
                mem(
                    Register::R14,
                    Register::None,
                    i64::from(off::SEG_BASE) + 4 * s
                ),
                0u32
            )?)?;
            for (k, value) in to.ranges[n].iter().enumerate() {
                self.ins(i2!(Code::Mov_r64_imm64, Register::R11, *value)?)?;
                self.ins(i2!(
                    Code::Mov_rm64_r64,
                    mem(
                        Register::R14,
                        Register::None,
                        i64::from(off::SEG_RANGES) + 32 * s + 8 * k as i64
                    ),
                    Register::R11
                )?)?;
            }
        }
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::TRANSITION.into()),
            kind
        )?)?;
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R15,
            mem(
                Register::R14,
                Register::None,
                i64::from(off::VIEW_BASES) + 8 * i64::from(to.view)
            )
        )?)?;
        self.ins(i2!(
            Code::Mov_rm64_r64,
            mem(Register::R14, Register::None, off::WINDOW.into()),
            Register::R15
        )?)
    }

    /// CPUID from the model's answers: a chain of comparisons on EAX (the
    /// guest's flags saved around it), then the four registers as
    /// immediates.
    fn cpuid(&mut self, answers: &CpuidAnswers) -> Result<(), TranslateError> {
        let done = self.e.label();
        self.ins(Instruction::with(Code::Pushfq))?;
        for (leaf, values) in &answers.leaves {
            let next = self.e.label();
            self.ins(i2!(Code::Cmp_rm32_imm32, Register::EAX, *leaf)?)?;
            self.e.jcc_label(5, next);
            self.cpuid_answer(values)?;
            self.e.jmp_label(done);
            self.e.bind(next);
        }
        self.cpuid_answer(&answers.otherwise)?;
        self.e.bind(done);
        self.ins(Instruction::with(Code::Popfq))
    }

    fn cpuid_answer(&mut self, values: &[u32; 4]) -> Result<(), TranslateError> {
        for (reg, value) in [Register::EAX, Register::EBX, Register::ECX, Register::EDX]
            .into_iter()
            .zip(values)
        {
            self.ins(i2!(Code::Mov_r32_imm32, reg, *value)?)?;
        }
        Ok(())
    }

    /// STI at CPL 0: IF set, and the next instruction in the interrupt
    /// shadow. While the monitor waits for an interrupt window, the monitor
    /// carries out the STI (and then delivers the interrupt).
    fn sti(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let keep_going = self.e.label();
        self.ins(Instruction::with(Code::Pushfq))?;
        self.ins(i2!(
            Code::Cmp_rm32_imm8,
            mem(Register::R14, Register::None, off::WINDOW_WANTED.into()),
            0u32
        )?)?;
        self.e.jcc_label(4, keep_going);
        self.ins(Instruction::with(Code::Popfq))?;
        self.emulate_exit(i.ip32())?;
        self.e.bind(keep_going);
        self.ins(Instruction::with(Code::Popfq))?;
        self.set_vif(true)?;
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::SHADOW_EIP.into()),
            i.next_ip32()
        )?)?;
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::SHADOW.into()),
            1u32
        )?)
    }

    fn set_vif(&mut self, on: bool) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_rm32_imm32,
            mem(Register::R14, Register::None, off::VIF.into()),
            u32::from(on)
        )?)
    }

    // ----- stack -----------------------------------------------------------

    /// Ends the unit before the instruction at `next`: R8 brought up to
    /// date, then a chainable exit there.
    /// Ends the unit with a chainable jump to `next`, the instruction
    /// after the last one translated. When a followed branch went back to
    /// code at or below the unit's start, that jump can close a cycle of
    /// units, so it polls first, as an instruction boundary of its own
    /// (`pc_map` and `fixups` get its entry): a poll fault there stops
    /// before `next`.
    fn end_unit_at(
        &mut self,
        next: u32,
        pc_map: &mut Vec<(u32, u32)>,
        fixups: &mut Vec<u8>,
    ) -> Result<(), TranslateError> {
        self.flush_stack_lag()?;
        if next <= self.req.eip && self.followed {
            pc_map.push((self.e.pos() as u32, next));
            fixups.push(fixup::NONE);
            self.poll()?;
        }
        self.chain_exit(next)
    }

    /// Brings R8 up to guest ESP (`lea r8d, [r8 + lag]`: no flag changes).
    fn flush_stack_lag(&mut self) -> Result<(), TranslateError> {
        let lag = std::mem::take(&mut self.stack_pending);
        self.move_r8_by(lag)
    }

    /// `lea r8d, [r8 + lag]` unless `lag` is 0 (no flag changes); the
    /// translation's own lag is left as it is.
    fn move_r8_by(&mut self, lag: i32) -> Result<(), TranslateError> {
        if lag == 0 {
            return Ok(());
        }
        self.lea32(Register::R8D, Register::R8, i64::from(lag))
    }

    /// Whether `i` may run with guest ESP not yet in R8 (a lag pending from
    /// earlier pushes and pops), so that a run of them updates R8 once:
    /// with a flat stack whose accesses fold, a PUSH of a general register
    /// or an immediate and a POP into one (they add to the lag), a direct
    /// CALL and a RET (which bring R8 up to date), and instructions of a
    /// few plain forms that use ESP at most as the base of `[esp + disp]`,
    /// which folds the lag into its displacement. Nothing here leaves the
    /// unit on the way (no exit sees R8); a fault in one of them is mapped
    /// back with the lag the unit lists for it (`Unit::stack_lags`).
    fn keeps_stack_lag(&mut self, i: &Instruction) -> bool {
        let neutral = i.mnemonic() == Mnemonic::Lea || STACK_NEUTRAL.contains(&i.mnemonic());
        let stack = matches!(
            i.mnemonic(),
            Mnemonic::Push | Mnemonic::Pop | Mnemonic::Call | Mnemonic::Ret
        );
        // Without a lag pending, keeping none costs nothing: only pushes and
        // pops start one (and calls and returns take it over).
        if !(stack || neutral && self.stack_pending != 0) {
            return false;
        }
        if !self.req.mode.flat
            || !self.req.fold_displacements
            || self.req.max_insns == 1
            || self.req.unfolded.contains(&i.ip32())
            || self.req.soft_access.contains(&i.ip32())
            || needs_monitor(i)
            || self.req.mode.exits(i)
            || !matches!(self.req.isa.availability(i), Availability::Native)
            || i.has_rep_prefix()
            || i.has_repne_prefix()
        {
            return false;
        }
        let room = MAX_STACK_LAG - self.stack_pending.abs() >= 4;
        match i.mnemonic() {
            Mnemonic::Push => {
                room && i.stack_pointer_increment() == -4
                    && (pushes_plain_value(i)
                        || i.op0_kind() == OpKind::Memory
                            && no_stack_register(i)
                            && self.stack_operand_folds(i))
            }
            Mnemonic::Pop => room && i.stack_pointer_increment() == 4 && is_plain_gpr32(i, 0),
            Mnemonic::Call => match i.op0_kind() {
                OpKind::NearBranch32 => {
                    self.pc_thunk_at(i, i.near_branch_target() as u32).is_none()
                }
                // An indirect call whose target does not depend on ESP:
                // the target is read first (the lag pending, listed for a
                // fault), then the return address is pushed with the lag
                // folded in, as for a direct call.
                OpKind::Register | OpKind::Memory => {
                    i.code() == Code::Call_rm32
                        && no_stack_register(i)
                        && i.memory_base() != Register::ESP
                }
                _ => false,
            },
            Mnemonic::Ret => matches!(i.code(), Code::Retnd | Code::Retnd_imm16),
            Mnemonic::Lea => !is_16bit_address(i) && no_stack_register(i),
            m if STACK_NEUTRAL.contains(&m) => {
                no_stack_register(i)
                    && confine::check_generic(i, &mut self.info).is_ok()
                    && self.stack_operand_folds(i)
            }
            _ => false,
        }
    }

    /// Whether `i`'s memory operand, if it is ESP-based, takes the folded
    /// `[r15 + r8 + disp + lag]` form of [`Self::address`] (and not a path
    /// through R10 that reads R8 as guest ESP). `Ctx::generic` forces R10
    /// for operands beside a high-byte register.
    fn stack_operand_folds(&self, i: &Instruction) -> bool {
        let has_mem = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
        if !has_mem || i.memory_base() != Register::ESP {
            return true;
        }
        let high = (0..i.op_count())
            .any(|n| i.op_kind(n) == OpKind::Register && is_high_byte(i.op_register(n)));
        self.in_place_displacement(i, high).is_some()
    }

    fn push(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.wants_soft_stack(i) {
            let value = match i.op0_kind() {
                OpKind::Register if seg_index(i.op0_register()).is_some() => {
                    return self.soft_push_selector(i);
                }
                OpKind::Register => SoftPushed::Register(host(i.op0_register()).full_register32()),
                OpKind::Memory => return self.soft_push_memory(i),
                _ => SoftPushed::Immediate(i.immediate(0) as u32),
            };
            return self.soft_push(i, value);
        }
        let size = i.stack_pointer_increment().unsigned_abs();
        if size != 4 && size != 2 {
            return Err(TranslateError::Unsupported("push size"));
        }
        // Source into R11D (or an immediate).
        let imm = match i.op0_kind() {
            OpKind::Immediate8to32
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate16 => Some(i.immediate(0) as u32),
            OpKind::Register => {
                let r = i.op0_register();
                if let Some(s) = seg_index(r) {
                    let m = mem(
                        Register::R14,
                        Register::None,
                        i64::from(off::SEG_SEL) + 2 * s as i64,
                    );
                    self.ins(i2!(Code::Movzx_r32_rm16, Register::R11D, m)?)?;
                } else if self.stack_folds(i) {
                    // Stored straight from the register (`push_folded`).
                    return self.push_folded_register(host(r), size);
                } else {
                    self.ins(i2!(
                        Code::Mov_r32_rm32,
                        Register::R11D,
                        host(r).full_register32()
                    )?)?;
                }
                None
            }
            OpKind::Memory => {
                let m = self.window_operand(i, false)?;
                let code = if size == 4 {
                    Code::Mov_r32_rm32
                } else {
                    Code::Movzx_r32_rm16
                };
                self.ins(i2!(code, Register::R11D, m)?)?;
                None
            }
            _ => return Err(TranslateError::Unsupported("push operand")),
        };
        if self.stack_folds(i) {
            return self.push_folded(imm, size);
        }
        self.lea32(Register::R9D, Register::R8, -(size as i64))?;
        let at = self.stack_address(Register::R9)?;
        let slot = mem(Register::R15, at, 0);
        match (imm, size) {
            (Some(v), 4) => self.ins(i2!(Code::Mov_rm32_imm32, slot, v)?)?,
            (Some(v), _) => self.ins(i2!(Code::Mov_rm16_imm16, slot, v & 0xffff)?)?,
            (None, 4) => self.ins(i2!(Code::Mov_rm32_r32, slot, Register::R11D)?)?,
            (None, _) => self.ins(i2!(Code::Mov_rm16_r16, slot, Register::R11W)?)?,
        }
        self.ins(i2!(Code::Mov_r32_rm32, Register::R8D, Register::R9D)?)
    }

    /// Whether a stack access of `i` may fold its displacement: `[r15 +
    /// esp - n]` with a flat stack segment, as a folded `[reg + disp]`
    /// (see [`UnitRequest::fold_displacements`]); an ESP below `n` wraps
    /// into the guard before the window.
    fn stack_folds(&self, i: &Instruction) -> bool {
        self.req.mode.flat && self.req.fold_displacements && !self.req.unfolded.contains(&i.ip32())
    }

    /// The rest of a folded PUSH of an immediate or of R11: `mov [r15 +
    /// r8 - size], src` then `lea r8d, [r8 - size]` (a fault in the store
    /// leaves ESP as it was).
    fn push_folded(&mut self, imm: Option<u32>, size: u32) -> Result<(), TranslateError> {
        let Some(v) = imm else {
            let r11 = if size == 4 {
                Register::R11D
            } else {
                Register::R11W
            };
            return self.push_folded_register(r11, size);
        };
        let slot = self.pushed_slot(size);
        if size == 4 {
            self.ins(i2!(Code::Mov_rm32_imm32, slot, v)?)?;
        } else {
            self.ins(i2!(Code::Mov_rm16_imm16, slot, v & 0xffff)?)?;
        }
        self.pushed(size)
    }

    /// `[r15 + r8 + lag - size]`: where a folded push of `size` bytes
    /// stores.
    fn pushed_slot(&self, size: u32) -> iced_x86::MemoryOperand {
        mem(
            Register::R15,
            Register::R8,
            i64::from(self.stack_pending) - i64::from(size),
        )
    }

    /// ESP goes down by `size` after a folded push's store.
    fn pushed(&mut self, size: u32) -> Result<(), TranslateError> {
        self.stack_moved(-(size as i32))
    }

    /// ESP moves by `delta` after a folded push or pop: into the lag when
    /// the instruction keeps one, else into R8 (with any lag).
    fn stack_moved(&mut self, delta: i32) -> Result<(), TranslateError> {
        self.stack_pending += delta;
        if self.lag_ok {
            return Ok(());
        }
        self.flush_stack_lag()
    }

    /// A folded PUSH of a guest register (`reg` its host register, ESP's
    /// being R8, whose value before the push is what is stored).
    fn push_folded_register(&mut self, reg: Register, size: u32) -> Result<(), TranslateError> {
        let slot = self.pushed_slot(size);
        if size == 4 {
            self.ins(i2!(Code::Mov_rm32_r32, slot, reg.full_register32())?)?;
        } else {
            self.ins(i2!(Code::Mov_rm16_r16, slot, reg)?)?;
        }
        self.pushed(size)
    }

    fn pop(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        if self.wants_soft_stack(i) {
            if i.op0_kind() == OpKind::Memory {
                return self.soft_pop_memory(i).map(|_| false);
            }
            return self.soft_pop(i).map(|_| false);
        }
        let size = i.stack_pointer_increment() as i64;
        if size != 4 && size != 2 {
            return Err(TranslateError::Unsupported("pop size"));
        }
        match i.op0_kind() {
            OpKind::Register if seg_index(i.op0_register()).is_none() => {
                let dst = host(i.op0_register());
                if self.req.mode.flat && size == 4 && dst.full_register() != Register::R8 {
                    // Straight into the register: a fault leaves it and
                    // ESP as they were.
                    let top = mem(Register::R15, Register::R8, self.stack_pending.into());
                    self.load32(dst.full_register32(), top)?;
                    self.stack_moved(4)?;
                    return Ok(false);
                }
                let at = self.stack_address(Register::R8)?;
                let top = mem(Register::R15, at, 0);
                let code = if size == 4 {
                    Code::Mov_r32_rm32
                } else {
                    Code::Movzx_r32_rm16
                };
                self.ins(i2!(code, Register::R9D, top)?)?;
                self.lea32(Register::R8D, Register::R8, size)?;
                if size == 4 {
                    self.ins(i2!(Code::Mov_r32_rm32, dst, Register::R9D)?)?;
                } else {
                    self.ins(i2!(Code::Mov_r16_rm16, dst, Register::R9W)?)?;
                }
                Ok(false)
            }
            OpKind::Memory
                if i.memory_base() != Register::ESP && i.memory_index() != Register::ESP =>
            {
                let m = self.window_operand(i, true)?;
                let at = self.stack_address(Register::R8)?;
                let top = mem(Register::R15, at, 0);
                if size == 4 {
                    self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, top)?)?;
                    self.ins(i2!(Code::Mov_rm32_r32, m, Register::R9D)?)?;
                } else {
                    self.ins(i2!(Code::Mov_r16_rm16, Register::R9W, top)?)?;
                    self.ins(i2!(Code::Mov_rm16_r16, m, Register::R9W)?)?;
                }
                self.lea32(Register::R8D, Register::R8, size)?;
                Ok(false)
            }
            _ => self.emulate_exit(i.ip32()),
        }
    }

    fn pushad(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.wants_soft_stack(i) {
            return self.soft_pushad(i);
        }
        self.lea32(Register::R9D, Register::R8, -32)?;
        let at = self.stack_address(Register::R9)?;
        for (n, r) in PUSHAD_ORDER.iter().enumerate() {
            let slot = mem(Register::R15, at, 28 - 4 * n as i64);
            self.ins(i2!(Code::Mov_rm32_r32, slot, *r)?)?;
        }
        self.ins(i2!(Code::Mov_r32_rm32, Register::R8D, Register::R9D)?)
    }

    fn popad(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.wants_soft_stack(i) {
            return self.soft_popad(i);
        }
        // Touch both ends first so no load after a register write can fault.
        let at = self.stack_address(Register::R8)?;
        self.load32(Register::R9D, mem(Register::R15, at, 28))?;
        self.load32(Register::R9D, mem(Register::R15, at, 0))?;
        for (n, r) in POPAD_ORDER.iter().enumerate() {
            if *r != Register::None {
                self.ins(i2!(
                    Code::Mov_r32_rm32,
                    *r,
                    mem(Register::R15, at, 4 * n as i64)
                )?)?;
            }
        }
        self.lea32(Register::R8D, Register::R8, 32)
    }

    fn pushfd(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.wants_soft_stack(i) {
            // The image into spill slot 0 (guest flags saved around its
            // making), then pushed through the software TLB.
            self.flush_stack_lag()?;
            // (POPFQ here: SAHF would need RAX, and nothing may change a
            // guest register before the push's probe.)
            self.eflags_image_to_r11()?;
            self.ins(Instruction::with(Code::Popfq))?;
            self.ins(i2!(Code::Mov_rm32_r32, spill_slot(0), Register::R11D)?)?;
            return self.soft_push(i, SoftPushed::Spilled);
        }
        self.lea32(Register::R9D, Register::R8, -4)?;
        let at = self.stack_address(Register::R9)?;
        // Probe the slot first: nothing below may fault once flags change.
        self.ins(i2!(Code::Mov_rm32_imm32, mem(Register::R15, at, 0), 0u32)?)?;
        self.eflags_image_to_r11()?;
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R15, at, 0),
            Register::R11D
        )?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R8D, Register::R9D)?)?;
        self.restore_pushed_flags()
    }

    /// Takes back the host flags the PUSHFQ of [`Ctx::eflags_image_to_r11`]
    /// left on the host stack: DF was never changed since, the status
    /// flags come back through [`Ctx::status_flags_from`] (a POPFQ takes
    /// four times as long: docs/translator.md, "PUSHFD and POPFD").
    /// Clobbers R10 and R11.
    fn restore_pushed_flags(&mut self) -> Result<(), TranslateError> {
        self.pushed_flags_to_r11()?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RSP,
            mem(Register::RSP, Register::None, 8)
        )?)?;
        self.status_flags_from(Register::R11D)
    }

    /// `mov r11, [rsp]`: the flags a PUSHFQ left on the host stack.
    fn pushed_flags_to_r11(&mut self) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R11,
            mem(Register::RSP, Register::None, 0)
        )?)
    }

    /// Sets the host's status flags (CF, PF, AF, ZF, SF and OF; DF and
    /// the rest untouched) from the EFLAGS image in `image`, a 32-bit
    /// register other than EAX, without POPFQ: `mov eax, image ; shl eax,
    /// 8` puts the image's low byte in AH and 0 in AL, `bt image, 11`
    /// copies OF into CF, `adc al, 0x7f` overflows exactly when CF is set,
    /// and SAHF loads CF, PF, AF, ZF and SF from AH. RAX is kept in R10
    /// meanwhile.
    fn status_flags_from(&mut self, image: Register) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Mov_r64_rm64, Register::R10, Register::RAX)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::EAX, image)?)?;
        self.ins(i2!(Code::Shl_rm32_imm8, Register::EAX, 8u32)?)?;
        self.ins(i2!(Code::Bt_rm32_imm8, image, 11u32)?)?;
        self.ins(i2!(Code::Adc_rm8_imm8, Register::AL, 0x7fu32)?)?;
        self.ins(Instruction::with(Code::Sahf))?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::RAX, Register::R10)?)
    }

    /// PUSHFD's image of EFLAGS into R11D (live flags from the host's, the
    /// others from the state block, IF from the virtual IF), after a
    /// PUSHFQ that the caller pops. Uses R10.
    fn eflags_image_to_r11(&mut self) -> Result<(), TranslateError> {
        self.ins(Instruction::with(Code::Pushfq))?;
        self.pushed_flags_to_r11()?;
        self.ins(i2!(
            Code::And_rm32_imm32,
            Register::R11D,
            crate::state::LIVE_FLAGS
        )?)?;
        // Non-live bits come from the state, IF from the virtual IF.
        self.load32(
            Register::R10D,
            mem(Register::R14, Register::None, off::EFLAGS.into()),
        )?;
        self.ins(i2!(
            Code::And_rm32_imm32,
            Register::R10D,
            !(crate::state::FLAG_IF | crate::state::LIVE_FLAGS) & 0x003f_7fff
        )?)?;
        self.ins(i2!(Code::Or_r32_rm32, Register::R11D, Register::R10D)?)?;
        self.load32(
            Register::R10D,
            mem(Register::R14, Register::None, off::VIF.into()),
        )?;
        self.ins(i2!(Code::Shl_rm32_imm8, Register::R10D, 9u32)?)?;
        self.ins(i2!(Code::Or_r32_rm32, Register::R11D, Register::R10D)?)?;
        self.ins(i2!(Code::Or_rm32_imm8, Register::R11D, 2u32)?)
    }

    fn popfd(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if self.wants_soft_stack(i) {
            self.soft_load_top(i, Register::R9D)?;
        } else {
            let at = self.stack_address(Register::R8)?;
            self.load32(Register::R9D, mem(Register::R15, at, 0))?;
        }
        // Setting TF changes the translation mode (single-step), and setting
        // IF while the monitor waits for an interrupt window opens it: the
        // monitor does those POPFDs. The guest's flags are saved around the
        // tests.
        let keep_going = self.e.label();
        let to_monitor = self.e.label();
        self.ins(Instruction::with(Code::Pushfq))?;
        self.ins(i2!(
            Code::Test_rm32_imm32,
            Register::R9D,
            crate::state::FLAG_TF
        )?)?;
        self.e.jcc_label(5, to_monitor);
        self.ins(i2!(
            Code::Test_rm32_imm32,
            Register::R9D,
            crate::state::FLAG_IF
        )?)?;
        self.e.jcc_label(4, keep_going);
        self.ins(i2!(
            Code::Cmp_rm32_imm8,
            mem(Register::R14, Register::None, off::WINDOW_WANTED.into()),
            0u32
        )?)?;
        self.e.jcc_label(4, keep_going);
        self.e.bind(to_monitor);
        self.ins(Instruction::with(Code::Popfq))?;
        self.emulate_exit(i.ip32())?;
        self.e.bind(keep_going);
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RSP,
            mem(Register::RSP, Register::None, 8)
        )?)?;
        // Non-live bits (IF, IOPL, AC, ID...) go to the state; IF to VIF.
        self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::R9D)?)?;
        self.ins(i2!(
            Code::And_rm32_imm32,
            Register::R10D,
            !crate::state::LIVE_FLAGS & 0x003f_7fd7
        )?)?;
        self.ins(i2!(Code::Or_rm32_imm8, Register::R10D, 2u32)?)?;
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R14, Register::None, off::EFLAGS.into()),
            Register::R10D
        )?)?;
        self.ins(i2!(Code::Shr_rm32_imm8, Register::R10D, 9u32)?)?;
        self.ins(i2!(Code::And_rm32_imm8, Register::R10D, 1u32)?)?;
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R14, Register::None, off::VIF.into()),
            Register::R10D
        )?)?;
        // The live flags: DF by CLD or STD, the status flags without a
        // POPFQ.
        let (set, done) = (self.e.label(), self.e.label());
        self.ins(i2!(
            Code::Test_rm32_imm32,
            Register::R9D,
            crate::state::FLAG_DF
        )?)?;
        self.e.jcc_label(5, set);
        self.ins(Instruction::with(Code::Cld))?;
        self.e.jmp_label(done);
        self.e.bind(set);
        self.ins(Instruction::with(Code::Std))?;
        self.e.bind(done);
        self.status_flags_from(Register::R9D)?;
        self.lea32(Register::R8D, Register::R8, 4)
    }

    fn leave(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if i.code() != Code::Leaved {
            self.emulate_exit(i.ip32())?;
            return Ok(());
        }
        if self.wants_soft_stack(i) {
            // mov r10d, ebp ; <probe> ; lea r8d, [rbp + 4] ; mov ebp, [r12 + r11]
            self.flush_stack_lag()?;
            self.note_soft(i);
            self.ins(i2!(Code::Mov_r32_rm32, Register::R10D, Register::EBP)?)?;
            self.soft_probe(4, false, SoftMiss::Exit(i.ip32()))?;
            self.lea32(Register::R8D, Register::RBP, 4)?;
            return self.ins(i2!(Code::Mov_r32_rm32, Register::EBP, soft_slot(0))?);
        }
        let at = self.stack_address(Register::RBP)?;
        self.load32(Register::R9D, mem(Register::R15, at, 0))?;
        self.lea32(Register::R8D, Register::RBP, 4)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::EBP, Register::R9D)?)
    }

    fn enter(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        if i.immediate8_2nd() != 0 || i.code() != Code::Enterd_imm16_imm8 {
            return self.emulate_exit(i.ip32());
        }
        let size = i.immediate16() as i64;
        if self.wants_soft_stack(i) {
            // The push of EBP through the software TLB, then EBP = ESP and
            // ESP lowered by the frame's size.
            self.soft_push(i, SoftPushed::Register(Register::EBP))?;
            self.ins(i2!(Code::Mov_r32_rm32, Register::EBP, Register::R8D)?)?;
            self.lea32(Register::R8D, Register::R8, -size)?;
            return Ok(false);
        }
        self.lea32(Register::R9D, Register::R8, -4)?;
        let at = self.stack_address(Register::R9)?;
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R15, at, 0),
            Register::EBP
        )?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::EBP, Register::R9D)?)?;
        self.lea32(Register::R8D, Register::R9, -size)?;
        Ok(false)
    }

    // ----- control flow ----------------------------------------------------

    fn jmp(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        match i.op0_kind() {
            OpKind::NearBranch32 | OpKind::NearBranch16 => {
                self.chain_exit(i.near_branch_target() as u32)?;
                Ok(true)
            }
            OpKind::Register | OpKind::Memory if i.code() == Code::Jmp_rm32 => {
                if let Some(at) = self.jump_table(i) {
                    // An edge that can close a cycle without a backward
                    // direct branch or a table probe: polled first.
                    self.poll()?;
                    self.target_to_r9(i)?;
                    let req = self.req;
                    self.table_jump(i, &req.jump_tables[at])?;
                    self.indirect()?;
                    return Ok(true);
                }
                if self.wants_soft_jump(i) {
                    self.soft_target_to_r9(i)?;
                } else {
                    self.target_to_r9(i)?;
                }
                if self.learning_site(i) {
                    self.indirect_miss_exit()?;
                    return Ok(true);
                }
                self.note_uncached(i);
                let cached = self.compared_targets(i);
                if !cached.is_empty() {
                    self.predicted_jumps(cached)?;
                    if cached.len() < MAX_COMPARED_TARGETS {
                        // A target not cached yet is learned.
                        self.indirect_miss_exit()?;
                        return Ok(true);
                    }
                } else if let Some(predicted) = self.jump_prediction(i) {
                    self.predicted_jumps(&[(i.ip32(), predicted)])?;
                }
                self.indirect()?;
                Ok(true)
            }
            _ => self.emulate_exit(i.ip32()),
        }
    }

    /// The monitor's prediction for the indirect jump `i`, when the unit
    /// may jump into other translations.
    fn jump_prediction(&self, i: &Instruction) -> Option<u32> {
        if self.req.max_insns == 1 || !indirect_prediction_candidate(i) {
            return None;
        }
        let at = self
            .req
            .jump_predictions
            .binary_search_by_key(&i.ip32(), |p| p.0)
            .ok()?;
        Some(self.req.jump_predictions[at].1)
    }

    /// Where in [`UnitRequest::jump_tables`] the monitor's jump table
    /// for `i` is, when the unit may jump into
    /// other translations through the view's chain table and `i` loads
    /// its target through the window.
    /// The position-independent jump table `i` ends, when the two
    /// instructions before it in the unit load and rebase its entry (see
    /// [`pic_jump_table`]).
    fn pic_table(&self, i: &Instruction) -> Option<PicJumpTable> {
        let [Some(load), Some(add)] = &self.previous else {
            return None;
        };
        pic_jump_table([load, add], i)
    }

    fn jump_table(&self, i: &Instruction) -> Option<usize> {
        if self.req.max_insns == 1
            || self.req.chain_slots_from.is_none()
            || !(jump_table_candidate(i) || self.pic_table(i).is_some())
            || self.wants_soft_jump(i)
        {
            return None;
        }
        self.req
            .jump_tables
            .binary_search_by_key(&i.ip32(), |t| t.eip)
            .ok()
    }

    /// A jump-table jump `i` whose target is in R9D, through a host table
    /// of [`JUMP_TABLE_ENTRIES`] entries in the view's chain table, one
    /// per low byte `m` of the guest's index: a key slot holding
    /// `key_of(targets[m])` and a branch slot, set by the monitor to the
    /// translation of `targets[m]` in the view (its shared stub, a
    /// `ChainSlotMiss` exit for slot `first + m`, until then):
    ///
    /// ```text
    /// movzx r11d, idx8 ; mov r10, rcx
    /// mov rcx, [r15 + keys + r11*8] ; lea rcx, [rcx + r9 + 1]
    /// jrcxz hit ; mov rcx, r10 ; jmp fallback
    /// hit: mov rcx, r10 ; jmp [r15 + branches + r11*8]
    /// fallback:                      ; the table probe that follows
    /// ```
    ///
    /// The host jump's address depends on the index alone, as the guest's
    /// own does, not on the target loaded from guest memory and a table
    /// probe after it: a mispredicted dispatch resolves as soon as on
    /// the host. A target other than what the table held when the unit was
    /// made (a rewritten table, an index past 255 whose low byte names
    /// another entry) fails the key compare and takes the probe. Flags
    /// untouched.
    fn table_jump(&mut self, i: &Instruction, table: &JumpTable) -> Result<(), TranslateError> {
        let index = self
            .pic_table(i)
            .map_or_else(|| i.memory_index(), |pic| pic.index);
        let index8 =
            low_byte_of(host(index)).ok_or(TranslateError::Unsupported("jump-table index"))?;
        let first_slot = match table.slots {
            Some(slot) => slot,
            None => self.new_host_table(i, &table.targets),
        };
        let (hit, fallback) = (self.e.label(), self.e.label());
        let entries = |slot: u32| {
            let disp = shadowmmu::CHAIN_TABLE_OFFSET + 8 * i64::from(slot);
            iced_x86::MemoryOperand::new(
                Register::R15,
                Register::R11,
                8,
                disp,
                displ_size(disp),
                false,
                Register::None,
            )
        };
        self.ins(i2!(Code::Movzx_r32_rm8, Register::R11D, index8)?)?;
        self.ins(i2!(Code::Mov_r64_rm64, Register::R10, Register::RCX)?)?;
        let keys = entries(first_slot + JUMP_TABLE_ENTRIES as u32);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, keys)?)?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RCX,
            mem(Register::RCX, Register::R9, 1)
        )?)?;
        self.e.jrcxz_label(hit);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
        self.e.jmp_label(fallback);
        self.e.bind(hit);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
        let branches = entries(first_slot);
        self.ins(Instruction::with1(Code::Jmp_rm64, branches).map_err(err)?)?;
        self.e.bind(fallback);
        Ok(())
    }

    /// Takes the chain slots of a new host table for jump-table jump `i`
    /// with `targets` (see [`Ctx::table_jump`]), its miss stub to come
    /// with the exit stubs; returns its first slot.
    fn new_host_table(&mut self, i: &Instruction, targets: &[u32]) -> u32 {
        let first = self.chain_slots.len();
        for m in 0..JUMP_TABLE_ENTRIES {
            let index = self.next_chain_slot(targets.get(m).copied().unwrap_or(0));
            self.chain_slots[index].kind = SlotKind::TableBranch;
        }
        for m in 0..JUMP_TABLE_ENTRIES {
            let target = targets.get(m).copied();
            let index = self.next_chain_slot(target.unwrap_or(0));
            // Past the entries read, a key that matches no target:
            // 0 + r9 + 1 is never zero.
            self.chain_slots[index].kind =
                SlotKind::TableKey(target.map_or(0, crate::ibtc::key_of));
        }
        let stub = self.e.label();
        self.table_stubs.push((stub, first));
        let first_slot = self.chain_slots[first].slot;
        self.jump_table_slots.push((i.ip32(), first_slot));
        first_slot
    }

    /// The shared stub of the jump table whose first branch slot is
    /// `chain_slots[first]`, where every branch entry leads until the
    /// monitor sets it for the view: a `ChainSlotMiss` exit with EIP the
    /// target (R9D, which matched the entry's key) and the exit site the
    /// entry's slot, `first`'s plus the low byte of the index (R11).
    fn table_miss_stub(&mut self, label: Label, first: usize) -> Result<(), TranslateError> {
        self.e.bind(label);
        let at = self.e.pos();
        for slot in &mut self.chain_slots[first..first + JUMP_TABLE_ENTRIES] {
            slot.stub = at;
        }
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R14, Register::None, off::EIP.into()),
            Register::R9D
        )?)?;
        self.store_exit(ExitReason::ChainSlotMiss)?;
        let slot = self.chain_slots[first].slot;
        self.lea32(Register::R11D, Register::R11, i64::from(slot))?;
        self.ins(i2!(
            Code::Mov_rm64_r64,
            mem(Register::R14, Register::None, off::EXIT_SITE.into()),
            Register::R11
        )?)?;
        self.e.jmp_abs(self.req.stubs.exit_common)
    }

    /// With the jump's target in R9D: when it is one of the `predicted`
    /// (site, target) pairs' targets, a chained direct jump there (polled
    /// as any direct branch that can close a cycle); otherwise falls
    /// through with RCX restored, to the table probe that follows. Flags
    /// untouched.
    fn predicted_jumps(&mut self, predicted: &[(u32, u32)]) -> Result<(), TranslateError> {
        let hits = self.jump_if_r9_is_one_of(predicted.iter().map(|p| p.1), Register::R10)?;
        let miss = self.e.label();
        self.e.jmp_label(miss);
        for (hit, &(_, target)) in hits.into_iter().zip(predicted) {
            self.e.bind(hit);
            self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
            if target <= self.req.eip {
                self.poll()?;
            }
            self.chain_exit(target)?;
        }
        self.e.bind(miss);
        Ok(())
    }

    /// Compares R9D with the constants `targets` in turn, without touching
    /// the flags (`mov keep, rcx`, then `lea ecx, [r9 - target] ; jrcxz
    /// hit` for each, then `mov rcx, keep`): returns the label each match
    /// jumps to (with the guest's RCX still in `keep`), and falls through
    /// with RCX restored when none matched.
    fn jump_if_r9_is_one_of(
        &mut self,
        targets: impl IntoIterator<Item = u32>,
        keep: Register,
    ) -> Result<Vec<Label>, TranslateError> {
        self.ins(i2!(Code::Mov_r64_rm64, keep, Register::RCX)?)?;
        let mut hits = Vec::new();
        for target in targets {
            let hit = self.e.label();
            self.lea32(
                Register::ECX,
                Register::R9,
                i64::from(target.wrapping_neg() as i32),
            )?;
            self.e.jrcxz_label(hit);
            hits.push(hit);
        }
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, keep)?)?;
        Ok(hits)
    }

    /// The target of direct `jmp` `i` if the unit follows it (see
    /// [`UnitRequest::followed_branches`]).
    fn followed_jump(&self, i: &Instruction) -> Option<u32> {
        let direct = matches!(i.code(), Code::Jmp_rel8_32 | Code::Jmp_rel32_32);
        let target = i.near_branch_target() as u32;
        (direct && self.may_follow(target)).then_some(target)
    }

    fn jcc(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        let Some(cc) = cc_bits(i.condition_code()) else {
            return self.emulate_exit(i.ip32());
        };
        let target = i.near_branch_target() as u32;
        if target <= i.ip32() && self.may_follow(target) {
            // A loop's back edge: the taken path goes on here, the
            // not-taken one leaves (the poll before the branch, when its
            // target is at or below the unit's start, covers that exit
            // too: the next instruction lies between the two).
            self.chain_jcc(cc ^ 1, i.next_ip32())?;
            self.follow_to(target);
            return Ok(false);
        }
        self.chain_jcc(cc, target)?;
        let forward = target > i.ip32();
        if forward && self.branches_passed < self.req.superblock_branches && self.req.max_insns > 1
        {
            // The not-taken path goes on here (the unit loop still ends
            // the unit at its page's end or its length limit). Not past a
            // backward branch: what follows a loop's back edge runs once
            // per loop, and translating it into every such unit only
            // makes hot code bigger.
            self.branches_passed += 1;
            return Ok(false);
        }
        self.chain_exit(i.next_ip32())?;
        Ok(true)
    }

    fn loop_like(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        if matches!(
            i.code(),
            Code::Jcxz_rel8_16
                | Code::Jcxz_rel8_32
                | Code::Loop_rel8_16_CX
                | Code::Loop_rel8_32_CX
                | Code::Loope_rel8_16_CX
                | Code::Loope_rel8_32_CX
                | Code::Loopne_rel8_16_CX
                | Code::Loopne_rel8_32_CX
        ) {
            return self.emulate_exit(i.ip32());
        }
        let fall = self.e.label();
        let take = self.e.label();
        if i.mnemonic() == Mnemonic::Jecxz {
            self.e.jrcxz_label(take);
        } else {
            self.lea32(Register::ECX, Register::RCX, -1)?;
            self.e.jrcxz_label(fall);
            match i.mnemonic() {
                Mnemonic::Loope => {
                    self.e.jcc_label(5, fall);
                }
                Mnemonic::Loopne => {
                    self.e.jcc_label(4, fall);
                }
                _ => {}
            }
        }
        if i.mnemonic() == Mnemonic::Jecxz {
            self.chain_exit(i.next_ip32())?;
            self.e.bind(take);
            self.chain_exit(i.near_branch_target() as u32)?;
        } else {
            self.chain_exit(i.near_branch_target() as u32)?;
            self.e.bind(fall);
            self.chain_exit(i.next_ip32())?;
            self.e.bind(take);
        }
        Ok(true)
    }

    fn push_return(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let ret = i.next_ip32();
        if self.wants_soft_stack(i) {
            return self.soft_push(i, SoftPushed::Immediate(ret));
        }
        if self.stack_folds(i) {
            // Whatever lag the pushes before left, R8 is ESP after a call.
            self.push_folded(Some(ret), 4)?;
            return self.flush_stack_lag();
        }
        self.lea32(Register::R11D, Register::R8, -4)?;
        let at = self.stack_address(Register::R11)?;
        self.ins(i2!(Code::Mov_rm32_imm32, mem(Register::R15, at, 0), ret)?)?;
        self.ins(i2!(Code::Mov_r32_rm32, Register::R8D, Register::R11D)?)
    }

    fn call(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        let predicted = self.predicts_returns();
        match i.op0_kind() {
            OpKind::NearBranch32 => {
                let target = i.near_branch_target() as u32;
                if let Some(thunk) = self
                    .pc_thunk_at(i, target)
                    .filter(|_| !self.wants_soft_stack(i))
                {
                    return self.call_pc_thunk(i, target, thunk);
                }
                let leaf = if self.wants_soft_stack(i) {
                    None
                } else {
                    self.leaf_at(i, target, 0)
                };
                if let Some(leaf) = leaf {
                    return self.call_in_place(i, leaf);
                }
                self.push_return(i)?;
                if !predicted {
                    self.chain_exit(i.near_branch_target() as u32)?;
                    return Ok(true);
                }
                self.chain_call(i.near_branch_target() as u32)?;
                self.continuation(i.next_ip32())?;
                Ok(false)
            }
            OpKind::Register | OpKind::Memory if i.code() == Code::Call_rm32 => {
                let leaves = self.leaf_arms(i);
                if !leaves.is_empty() {
                    self.target_to_r9(i)?;
                    self.push_return_keeping_lag(i)?;
                    return self.cached_call_in_place(i, &leaves);
                }
                if self.wants_soft_stack(i) && i.op0_kind() == OpKind::Memory {
                    // The target through the software TLB into spill slot
                    // 0 (ESP as before the call), then the push; both
                    // probes come before the store.
                    self.flush_stack_lag()?;
                    self.soft_operand_to_spill(i)?;
                    self.push_return(i)?;
                    self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, spill_slot(0))?)?;
                } else if self.wants_soft_stack(i) {
                    // The probe uses R9: the target (a register other
                    // than ESP) is read after the push.
                    self.push_return(i)?;
                    self.target_to_r9(i)?;
                } else {
                    self.target_to_r9(i)?;
                    self.push_return(i)?;
                }
                if !predicted {
                    self.indirect()?;
                    return Ok(true);
                }
                if self.learning_site(i) {
                    self.indirect_miss_exit()?;
                    return Ok(true);
                }
                self.note_uncached(i);
                let cached = self.compared_targets(i);
                if !cached.is_empty() {
                    self.cached_call(cached)?;
                } else {
                    // The lookup of R9D, a hit calling the callee's
                    // translation through its entry.
                    self.lookup_r9(self.req.ibtc_tag, Code::Call_rm64)?;
                }
                self.continuation(i.next_ip32())?;
                Ok(false)
            }
            _ => self.emulate_exit(i.ip32()),
        }
    }

    fn ret(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        let extra = match i.code() {
            Code::Retnd => 0,
            Code::Retnd_imm16 => i64::from(i.immediate16()),
            _ => return self.emulate_exit(i.ip32()),
        };
        if let Some(call) = self.inlined.take() {
            return self.ret_in_place(call, extra);
        }
        if self.wants_soft_stack(i) {
            self.soft_pop_into(i, Register::R9D)?;
            self.lea32(Register::R8D, Register::R8, extra)?;
        } else {
            let at = self.stack_address(Register::R8)?;
            let lag = i64::from(std::mem::take(&mut self.stack_pending));
            self.load32(Register::R9D, mem(Register::R15, at, lag))?;
            self.lea32(Register::R8D, Register::R8, lag + 4 + extra)?;
        }
        if self.predicts_returns() {
            // The host return lands on the continuation of the matching
            // call, or (no call of its own on the stack) on the sentinel,
            // which jumps to R10: the lookup right after the `ret`.
            let lookup = self.e.label();
            self.e.lea_rip_label(Register::R10, lookup);
            self.ins(Instruction::with(Code::Retnq))?;
            self.e.bind(lookup);
        }
        self.indirect()?;
        Ok(true)
    }

    /// The PC thunk a `call` at `i` to `target` may run inline: a known
    /// one, called with a flat stack whose store folds and with predicted
    /// returns (so the call does not end the unit either way), its 4 bytes
    /// in one page.
    fn pc_thunk_at(&self, i: &Instruction, target: u32) -> Option<PcThunk> {
        let thunk = *self.req.pc_thunks?.get(&target)?;
        let fits = self.predicts_returns() && self.stack_folds(i) && target & 0xfff <= 0xffc;
        fits.then_some(thunk)
    }

    /// A `call` to PC thunk `thunk` at `target`, inline: if the 4 bytes at
    /// `target` in the current view are still the thunk's, the return
    /// address goes to `[esp - 4]` (as the call's push would leave it) and
    /// into the thunk's register, ESP unchanged; otherwise the call runs
    /// as any other. The check reads the thunk's page, which the call
    /// itself would not: a guest fault there (or anywhere in the call)
    /// runs the call again alone, where it is an ordinary call.
    fn call_pc_thunk(
        &mut self,
        i: &Instruction,
        target: u32,
        thunk: PcThunk,
    ) -> Result<bool, TranslateError> {
        let (inline, done) = (self.e.label(), self.e.label());
        self.fixup = fixup::RUN_ALONE_ON_GUEST_FAULT;
        self.ins(i2!(Code::Mov_r64_rm64, Register::R13, Register::RCX)?)?;
        let bytes = if target < 0x8000_0000 {
            mem(Register::R15, Register::None, i64::from(target))
        } else {
            self.ins(i2!(Code::Mov_r32_imm32, Register::R10D, target)?)?;
            mem(Register::R15, Register::R10, 0)
        };
        self.load32(Register::ECX, bytes)?;
        self.lea32(
            Register::ECX,
            Register::RCX,
            i64::from(thunk.bytes.wrapping_neg() as i32),
        )?;
        self.e.jrcxz_label(inline);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        self.push_return(i)?;
        self.chain_call(target)?;
        self.continuation(i.next_ip32())?;
        self.e.jmp_label(done);
        self.e.bind(inline);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R13)?)?;
        let slot = mem(Register::R15, Register::R8, -4);
        self.ins(i2!(Code::Mov_rm32_imm32, slot, i.next_ip32())?)?;
        self.ins(i2!(Code::Mov_r32_imm32, host(thunk.reg), i.next_ip32())?)?;
        self.e.bind(done);
        Ok(false)
    }

    /// A predicted indirect call whose target is in R9D, with an inline
    /// cache of the targets of (site, target) pairs `cached`: a match
    /// calls it as a direct call would (chained, or through a chain-table
    /// slot), any other target through the table. Every host call returns
    /// to the continuation that follows:
    ///
    /// ```text
    /// mov r10, rcx ; lea ecx, [r9 - t1] ; jrcxz hit1 ; lea ecx, [r9 - t2] ...
    /// mov rcx, r10 ; jmp probe
    /// hit1: mov rcx, r10 ; call <t1> ; jmp cont
    /// ...
    /// probe: <table lookup, call [r12 + r11*8 + t + 8]>
    /// cont:
    /// ```
    ///
    /// (The matches come first: a `jrcxz` reaches 127 bytes, and the
    /// probe with its miss exit is half of that.) While the cache has room
    /// for more targets, the probe is an `IndirectMiss` exit naming the
    /// site instead, so that the monitor learns the target even when the
    /// table holds it (and the site's units are made again with it).
    fn cached_call(&mut self, cached: &[(u32, u32)]) -> Result<(), TranslateError> {
        let (probe, cont) = (self.e.label(), self.e.label());
        let hits = self.jump_if_r9_is_one_of(cached.iter().map(|p| p.1), Register::R10)?;
        self.e.jmp_label(probe);
        for (hit, &(_, target)) in hits.into_iter().zip(cached) {
            self.e.bind(hit);
            self.call_cached_target(target, cont)?;
        }
        self.e.bind(probe);
        self.cached_call_probe(cached.len() < MAX_COMPARED_TARGETS)?;
        self.e.bind(cont);
        Ok(())
    }

    /// An inline cache's match that calls `target` (the guest's RCX kept
    /// in R10 by the compares): RCX back, R8 up to ESP, the chainable host
    /// call, then on to the continuation at `cont`.
    fn call_cached_target(&mut self, target: u32, cont: Label) -> Result<(), TranslateError> {
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
        self.flush_stack_lag_on_this_path()?;
        self.chain_call(target)?;
        self.e.jmp_label(cont);
        Ok(())
    }

    /// The probe of a cached call's target in R9D that matched none:
    /// while the cache `has_room`, an `IndirectMiss` exit naming the site
    /// (the target is learned); then the table's lookup, calling through
    /// the entry.
    fn cached_call_probe(&mut self, has_room: bool) -> Result<(), TranslateError> {
        if has_room {
            return self.indirect_miss_exit();
        }
        self.lookup_r9(self.req.ibtc_tag, Code::Call_rm64)
    }

    /// Whether guest calls and returns use the return-prediction stack: it
    /// exists, and the unit may jump into other translations (a unit of
    /// one instruction ends after it).
    fn predicts_returns(&self) -> bool {
        self.req.return_stack && self.req.max_insns > 1
    }

    /// The host return point of a predicted call whose guest return
    /// address is `ret_eip`, with R9D the address the guest `ret` popped
    /// and R10 that `ret`'s own lookup (every host `ret` sets it): falls
    /// through into the translation of the instructions after the call if
    /// they match (the unit goes on there), else jumps to R10, which looks
    /// R9D up in the same mode. Flags untouched; RCX kept in R11 meanwhile.
    fn continuation(&mut self, ret_eip: u32) -> Result<(), TranslateError> {
        let matched = self.jump_if_r9_is_one_of([ret_eip], Register::R11)?;
        self.ins(Instruction::with1(Code::Jmp_rm64, Register::R10).map_err(err)?)?;
        for label in matched {
            self.e.bind(label);
        }
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R11)?)
    }

    /// Loads the target of an indirect jmp/call into R9D.
    fn target_to_r9(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        if i.code() != Code::Jmp_rm32 && i.code() != Code::Call_rm32 {
            return Err(TranslateError::Unsupported("indirect branch form"));
        }
        if i.op0_kind() == OpKind::Register {
            self.ins(i2!(
                Code::Mov_r32_rm32,
                Register::R9D,
                host(i.op0_register())
            )?)
        } else {
            let m = self.window_operand(i, false)?;
            self.ins(i2!(Code::Mov_r32_rm32, Register::R9D, m)?)
        }
    }

    /// Jumps to guest R9D through the indirect-branch table without touching
    /// host flags; on a miss, exits with `IndirectMiss`.
    fn indirect(&mut self) -> Result<(), TranslateError> {
        self.indirect_in(self.req.ibtc_tag)
    }

    /// The exit to the run loop for an indirect branch to the EIP in R9D
    /// that is not (or may not be) looked up in emitted code.
    fn indirect_miss_exit(&mut self) -> Result<(), TranslateError> {
        self.ins(i2!(
            Code::Mov_rm32_r32,
            mem(Register::R14, Register::None, off::EIP.into()),
            Register::R9D
        )?)?;
        self.store_exit(ExitReason::IndirectMiss)?;
        let site = self
            .current
            .filter(|i| self.may_cache_target(i))
            .map_or(NO_SITE, |i| i.ip32());
        // Sign-extended: the low 32 bits are the site.
        self.ins(i2!(
            Code::Mov_rm64_imm32,
            mem(Register::R14, Register::None, off::EXIT_SITE.into()),
            site as i32
        )?)?;
        self.e.jmp_abs(self.req.stubs.exit_common)
    }

    /// Whether indirect branch `i` may get an inline cache (see
    /// [`UnitRequest::branch_predictions`]): a `call r/m32` or `jmp r/m32`
    /// in flat code with chain tables (so that the cached target can be
    /// reached from every view), not a jump table's jump (which has its
    /// own host table) and not a `jmp [disp32]` (whose slot the monitor
    /// reads ahead instead), in a unit that may jump into other
    /// translations.
    fn may_cache_target(&self, i: &Instruction) -> bool {
        matches!(i.code(), Code::Call_rm32 | Code::Jmp_rm32)
            && self.req.max_insns > 1
            && self.req.chain_slots_from.is_some()
            && !indirect_prediction_candidate(i)
            && self.jump_table(i).is_none()
    }

    /// The cached (site, target) pairs of indirect call or jump `i` (none
    /// when the monitor gave none), at most [`MAX_CACHED_TARGETS`].
    fn cached_targets(&self, i: &Instruction) -> &'a [(u32, u32)] {
        if !self.may_cache_target(i) {
            return &[];
        }
        let all: &'a [(u32, u32)] = self.req.branch_predictions;
        let from = all.partition_point(|p| p.0 < i.ip32());
        let to = all.partition_point(|p| p.0 <= i.ip32());
        &all[from..to.min(from + MAX_CACHED_TARGETS)]
    }

    /// The cached targets of `i` when there are at most
    /// [`MAX_COMPARED_TARGETS`] of them, else none (the site probes the
    /// table).
    fn compared_targets(&self, i: &Instruction) -> &'a [(u32, u32)] {
        let cached = self.cached_targets(i);
        if cached.len() > MAX_COMPARED_TARGETS {
            return &[];
        }
        cached
    }

    /// Whether the monitor is learning the targets of indirect call or
    /// jump `i` (see [`UnitRequest::learning_sites`]).
    fn learning_site(&self, i: &Instruction) -> bool {
        self.may_cache_target(i) && self.req.learning_sites.binary_search(&i.ip32()).is_ok()
    }

    /// Notes indirect call or jump `i` in [`Unit::uncached_sites`] when it
    /// could have an inline cache and has none.
    fn note_uncached(&mut self, i: &Instruction) {
        if self.may_cache_target(i) && self.cached_targets(i).is_empty() && !self.learning_site(i) {
            self.uncached_sites.push(i.ip32());
        }
    }

    /// An indirect branch to the EIP in R9D, looked up for the mode of
    /// `tag` (another mode's after an inline privilege change).
    fn indirect_in(&mut self, tag: u32) -> Result<(), TranslateError> {
        self.lookup_r9(tag, Code::Jmp_rm64)
    }

    /// The lookup of the EIP in R9D in the table of `tag`, a hit leaving
    /// through the entry's host address by `transfer`: `Jmp_rm64` for an
    /// indirect branch, `Call_rm64` for a predicted indirect call (a host
    /// call through the entry, whose return address is the call's
    /// continuation: one host branch fewer than calling an out-of-line
    /// lookup that jumps). A miss exits with `IndirectMiss`.
    fn lookup_r9(&mut self, tag: u32, transfer: Code) -> Result<(), TranslateError> {
        if self.req.max_insns == 1 {
            // A unit of one instruction (single-stepping, or an
            // instruction run alone) must end after it: no jump into
            // other translations.
            return self.indirect_miss_exit();
        }
        let hit = self.e.label();
        // The mode's table (see crate::ibtc): a constant displacement from
        // the table set the tag's modes use.
        let table = i64::from(tag) * crate::ibtc::TABLE_BYTES as i64;
        let (set, mixed) = self.table_set(tag);
        self.ins(i2!(Code::Mov_r64_rm64, Register::R10, Register::RCX)?)?;
        if mixed {
            // low16(eip + (eip >> 4)), flag-free: the shared set is
            // indexed so (see ibtc::mixed_slot).
            self.ins(
                Instruction::with3(
                    Code::VEX_Rorx_r32_rm32_imm8,
                    Register::R11D,
                    Register::R9D,
                    4u32,
                )
                .map_err(err)?,
            )?;
            self.ins(i2!(
                Code::Lea_r32_m,
                Register::R11D,
                mem(Register::R11, Register::R9, 0)
            )?)?;
            self.ins(i2!(Code::Movzx_r32_rm16, Register::R11D, Register::R11W)?)?;
        } else {
            self.ins(i2!(Code::Movzx_r32_rm16, Register::R11D, Register::R9W)?)?;
        }
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R11D,
            mem(Register::R11, Register::R11, 0)
        )?)?;
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R12,
            mem(Register::R14, Register::None, set.into())
        )?)?;
        let key = iced_x86::MemoryOperand::new(
            Register::R12,
            Register::R11,
            8,
            table,
            displ_size(table),
            false,
            Register::None,
        );
        // RCX = key + target + 1 = !EIP + target + 1 in 64 bits (see
        // crate::ibtc::key_of): zero only on a hit; LEA leaves the flags
        // alone.
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, key)?)?;
        self.ins(i2!(
            Code::Lea_r64_m,
            Register::RCX,
            mem(Register::RCX, Register::R9, 1)
        )?)?;
        let dest = iced_x86::MemoryOperand::new(
            Register::R12,
            Register::R11,
            8,
            table + 8,
            displ_size(table + 8),
            false,
            Register::None,
        );
        self.probe_outcome(hit, None, dest, transfer)
    }

    /// The end of a table probe whose compare left RCX zero on a hit, with
    /// the guest's RCX in R10: a miss restores RCX and exits with
    /// `IndirectMiss` (setting R9D to `target` first when the probe never
    /// loaded it); a hit restores RCX, counts (with `--stats`) and jumps
    /// through the entry's host address `dest`.
    fn probe_outcome(
        &mut self,
        hit: Label,
        target: Option<u32>,
        dest: iced_x86::MemoryOperand,
        transfer: Code,
    ) -> Result<(), TranslateError> {
        self.e.jrcxz_label(hit);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
        if let Some(target) = target {
            self.ins(i2!(Code::Mov_r32_imm32, Register::R9D, target)?)?;
        }
        self.indirect_miss_exit()?;
        self.e.bind(hit);
        self.ins(i2!(Code::Mov_r64_rm64, Register::RCX, Register::R10)?)?;
        if let Some(counter) = self.req.count_indirect {
            self.bump_counter(counter)?;
        }
        self.ins(Instruction::with1(transfer, dest).map_err(err)?)
    }

    /// The state-block field holding the table set the lookups of `tag`
    /// use, and whether that set is indexed by [`crate::ibtc::mixed_slot`].
    fn table_set(&self, tag: u32) -> (i32, bool) {
        if tag < 32 && self.req.shared_ibtc_tags & (1 << tag) != 0 {
            (off::IBTC_SHARED, crate::ibtc::mixed_index())
        } else {
            (off::IBTC, false)
        }
    }

    /// The lookup of the constant guest `target` in the table of `tag` (a
    /// direct branch that may not be chained): the slot is known here, so
    /// the probe reads its entry at a constant displacement from the table
    /// set, with no index to compute:
    ///
    /// ```text
    /// mov r10, rcx ; mov r12, [r14 + set]
    /// mov ecx, [r12 + entry]           ; low half of the key, !EIP
    /// lea ecx, [rcx + target + 1]     ; 32 bits: zero only on a hit
    /// jrcxz hit ; mov rcx, r10 ; mov r9d, target ; <IndirectMiss exit>
    /// hit: mov rcx, r10 ; jmp [r12 + entry + 8]
    /// ```
    ///
    /// A target of 0xFFFFFFFF (whose key's low half, 0, is an empty
    /// entry's) takes the general lookup.
    fn indirect_constant(&mut self, target: u32, tag: u32) -> Result<(), TranslateError> {
        if self.req.max_insns == 1 || target == u32::MAX {
            self.ins(i2!(Code::Mov_r32_imm32, Register::R9D, target)?)?;
            return self.indirect_in(tag);
        }
        let (set, mixed) = self.table_set(tag);
        let slot = if mixed {
            crate::ibtc::mixed_slot(target)
        } else {
            crate::ibtc::plain_slot(target)
        };
        let entry = i64::from(tag) * crate::ibtc::TABLE_BYTES as i64
            + (slot * std::mem::size_of::<crate::ibtc::Entry>()) as i64;
        let hit = self.e.label();
        self.ins(i2!(Code::Mov_r64_rm64, Register::R10, Register::RCX)?)?;
        self.ins(i2!(
            Code::Mov_r64_rm64,
            Register::R12,
            mem(Register::R14, Register::None, set.into())
        )?)?;
        self.ins(i2!(
            Code::Mov_r32_rm32,
            Register::ECX,
            mem(Register::R12, Register::None, entry)
        )?)?;
        // The low 32 bits of the key, !target, plus target + 1.
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::ECX,
            mem(
                Register::RCX,
                Register::None,
                i64::from(target.wrapping_add(1) as i32)
            )
        )?)?;
        self.probe_outcome(
            hit,
            Some(target),
            mem(Register::R12, Register::None, entry + 8),
            Code::Jmp_rm64,
        )
    }

    // ----- strings ---------------------------------------------------------

    fn string(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        if self.wants_soft_element(i) {
            return self.soft_element_string(i);
        }
        if self.req.mode.flat
            && self.req.soft_access.contains(&i.ip32())
            && soft_string_candidate(i)
        {
            if soft_by_element(i) {
                return self.soft_rep_elements(i);
            }
            return self.soft_string(i);
        }
        self.string_through_window(i)
    }

    /// A string instruction as itself, on window addresses.
    fn string_through_window(&mut self, i: &Instruction) -> Result<bool, TranslateError> {
        let sixteen_bit_addresses = (0..i.op_count()).any(|n| {
            matches!(
                i.op_kind(n),
                OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI
            )
        });
        if sixteen_bit_addresses {
            return self.emulate_exit(i.ip32());
        }
        let uses_si = matches!(
            i.mnemonic(),
            Mnemonic::Movsb
                | Mnemonic::Movsw
                | Mnemonic::Movsd
                | Mnemonic::Cmpsb
                | Mnemonic::Cmpsw
                | Mnemonic::Cmpsd
                | Mnemonic::Lodsb
                | Mnemonic::Lodsw
                | Mnemonic::Lodsd
        );
        let uses_di = !matches!(
            i.mnemonic(),
            Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd
        );
        // ESI goes through DS or an override, EDI always through ES.
        let si_seg = i.memory_segment();
        let si_base = uses_si && self.needs_seg_base(si_seg);
        let di_base = uses_di && self.needs_seg_base(Register::ES);
        if uses_si {
            self.rebase_string_register(Register::RSI, si_base.then_some(si_seg))?;
        }
        if uses_di {
            self.rebase_string_register(Register::RDI, di_base.then_some(Register::ES))?;
        }
        if si_base {
            let seg = seg_index(si_seg).unwrap_or(Seg::Ds) as u8;
            self.fixup |= fixup::SI_REBASED | seg << 4;
        }
        if di_base {
            self.fixup |= fixup::DI_REBASED;
        }
        // The guest encoding means the same in 64-bit mode once segment
        // prefixes (ignored there, or host FS/GS there) are dropped: no REX,
        // no 0x67.
        let bytes = string_bytes(i, self.page, self.page_eip)?;
        self.e.raw(&bytes);
        if uses_si {
            self.restore_string_register(Register::RSI, si_base.then_some(si_seg))?;
        }
        if uses_di {
            self.restore_string_register(Register::RDI, di_base.then_some(Register::ES))?;
        }
        Ok(false)
    }

    /// Makes `reg` (RSI or RDI) the host address of the guest's
    /// `seg:reg`: `reg = seg base + reg` (32-bit, wrapping like the guest),
    /// then `r15 + reg`. Touches no flags.
    fn rebase_string_register(
        &mut self,
        reg: Register,
        seg: Option<Register>,
    ) -> Result<(), TranslateError> {
        if let Some(seg) = seg {
            self.load_seg_base(seg)?;
            self.ins(i2!(
                Code::Lea_r32_m,
                reg.full_register32(),
                mem(reg, Register::R11, 0)
            )?)?;
        }
        self.ins(i2!(Code::Lea_r64_m, reg, mem(reg, Register::R15, 0))?)
    }

    /// The inverse of [`Self::rebase_string_register`] after the string
    /// instruction moved `reg`: truncate (the window is 4 GiB aligned),
    /// then subtract the segment base as `reg + !base + 1`.
    fn restore_string_register(
        &mut self,
        reg: Register,
        seg: Option<Register>,
    ) -> Result<(), TranslateError> {
        let reg32 = reg.full_register32();
        self.ins(i2!(Code::Mov_r32_rm32, reg32, reg32)?)?;
        if let Some(seg) = seg {
            self.load_seg_base(seg)?;
            self.ins(Instruction::with1(Code::Not_rm32, Register::R11D).map_err(err)?)?;
            self.ins(i2!(Code::Lea_r32_m, reg32, mem(reg, Register::R11, 1))?)?;
        }
        Ok(())
    }

    /// The register through which `[r15 + reg + disp]` addresses the guest's
    /// SS:`esp` plus disp: `esp` itself when SS's base is 0 (flat), else
    /// R13 = SS base plus `esp` (32-bit, wrapping like the guest; R12 holds
    /// the base). Uses only R12 and R13 and touches no flags.
    fn stack_address(&mut self, esp: Register) -> Result<Register, TranslateError> {
        let esp64 = esp.full_register();
        if self.req.mode.flat {
            return Ok(esp64);
        }
        self.load32(
            Register::R12D,
            mem(
                Register::R14,
                Register::None,
                i64::from(off::SEG_BASE) + 4 * Seg::Ss as i64,
            ),
        )?;
        self.ins(i2!(
            Code::Lea_r32_m,
            Register::R13D,
            mem(esp64, Register::R12, 0)
        )?)?;
        Ok(Register::R13)
    }

    /// `mov r11d, [r14 + base of seg]`.
    fn load_seg_base(&mut self, seg: Register) -> Result<(), TranslateError> {
        let s = seg_index(seg).unwrap_or(Seg::Ds) as i64;
        self.load32(
            Register::R11D,
            mem(
                Register::R14,
                Register::None,
                i64::from(off::SEG_BASE) + 4 * s,
            ),
        )
    }
}

/// The bytes of a string instruction without segment-override prefixes.
fn string_bytes(i: &Instruction, code: &[u8], unit_eip: u32) -> Result<Vec<u8>, TranslateError> {
    let start = i.ip32().wrapping_sub(unit_eip) as usize;
    let bytes = code
        .get(start..start + i.len())
        .ok_or(TranslateError::Unsupported("string bytes"))?;
    Ok(bytes
        .iter()
        .copied()
        .filter(|b| !matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65))
        .collect())
}

/// The memory operand uses 16-bit addressing (`[bx+si]`, `[bp+disp]`, a
/// 16-bit displacement alone).
fn is_16bit_address(i: &Instruction) -> bool {
    i.memory_base().size() == 2
        || i.memory_index().size() == 2
        || (i.memory_base() == Register::None
            && i.memory_index() == Register::None
            && i.memory_displ_size() == 2)
}

/// The guest's address expression `[base + index*scale + disp]` over the
/// host registers holding those guest registers (no window, no segment).
/// Mnemonics whose plain forms (see `Ctx::keeps_stack_lag`) run with a
/// stack lag pending: they go through `Ctx::generic` and never exit.
const STACK_NEUTRAL: &[Mnemonic] = &[
    Mnemonic::Mov,
    Mnemonic::Movzx,
    Mnemonic::Movsx,
    Mnemonic::Add,
    Mnemonic::Sub,
    Mnemonic::And,
    Mnemonic::Or,
    Mnemonic::Xor,
    Mnemonic::Cmp,
    Mnemonic::Test,
    Mnemonic::Inc,
    Mnemonic::Dec,
    Mnemonic::Neg,
    Mnemonic::Not,
    Mnemonic::Adc,
    Mnemonic::Sbb,
    Mnemonic::Shl,
    Mnemonic::Shr,
    Mnemonic::Sar,
    Mnemonic::Imul,
];

/// Whether operand `n` of `i` is a general 32-bit register other than ESP.
fn is_plain_gpr32(i: &Instruction, n: u32) -> bool {
    i.op_kind(n) == OpKind::Register
        && i.op_register(n).is_gpr32()
        && i.op_register(n) != Register::ESP
}

/// Whether `i` (a PUSH) pushes a general 32-bit register other than ESP or
/// an immediate.
fn pushes_plain_value(i: &Instruction) -> bool {
    matches!(i.op0_kind(), OpKind::Immediate8to32 | OpKind::Immediate32) || is_plain_gpr32(i, 0)
}

/// Whether every register operand of `i` is a general register other than
/// ESP (and its parts), so that it neither reads nor writes guest ESP
/// except as the base of its memory operand.
fn no_stack_register(i: &Instruction) -> bool {
    (0..i.op_count()).all(|n| {
        i.op_kind(n) != OpKind::Register || {
            let r = i.op_register(n);
            (r.is_gpr8() || r.is_gpr16() || r.is_gpr32()) && r.full_register32() != Register::ESP
        }
    }) && i.memory_index() != Register::ESP
}

fn guest_address_operand(i: &Instruction) -> iced_x86::MemoryOperand {
    let disp = i.memory_displacement32();
    iced_x86::MemoryOperand::new(
        host64(i.memory_base()),
        host64(i.memory_index()),
        i.memory_index_scale(),
        i64::from(disp as i32),
        if disp == 0 { 0 } else { 1 },
        false,
        Register::None,
    )
}

/// Replaces the memory operand of `h` by `m`.
fn set_memory(h: &mut Instruction, m: iced_x86::MemoryOperand) {
    h.set_memory_base(m.base);
    h.set_memory_index(m.index);
    h.set_memory_index_scale(m.scale);
    h.set_memory_displacement64(m.displacement as u64);
    h.set_memory_displ_size(m.displ_size);
    h.set_segment_prefix(Register::None);
}

/// The 64-bit-mode code for a 32-bit-mode-only encoding of the same
/// operation.
fn long_mode_code(c: Code) -> Code {
    match c {
        Code::Inc_r16 => Code::Inc_rm16,
        Code::Inc_r32 => Code::Inc_rm32,
        Code::Dec_r16 => Code::Dec_rm16,
        Code::Dec_r32 => Code::Dec_rm32,
        Code::Mov_AL_moffs8 => Code::Mov_r8_rm8,
        Code::Mov_AX_moffs16 => Code::Mov_r16_rm16,
        Code::Mov_EAX_moffs32 => Code::Mov_r32_rm32,
        Code::Mov_moffs8_AL => Code::Mov_rm8_r8,
        Code::Mov_moffs16_AX => Code::Mov_rm16_r16,
        Code::Mov_moffs32_EAX => Code::Mov_rm32_r32,
        // 82 /r ib: an alias of 80 /r ib that 64-bit mode does not have.
        Code::Add_rm8_imm8_82 => Code::Add_rm8_imm8,
        Code::Or_rm8_imm8_82 => Code::Or_rm8_imm8,
        Code::Adc_rm8_imm8_82 => Code::Adc_rm8_imm8,
        Code::Sbb_rm8_imm8_82 => Code::Sbb_rm8_imm8,
        Code::And_rm8_imm8_82 => Code::And_rm8_imm8,
        Code::Sub_rm8_imm8_82 => Code::Sub_rm8_imm8,
        Code::Xor_rm8_imm8_82 => Code::Xor_rm8_imm8,
        Code::Cmp_rm8_imm8_82 => Code::Cmp_rm8_imm8,
        other => other,
    }
}

/// Instructions the monitor carries out (privileged, segment or I/O
/// related, not encodable in 64-bit mode, or rare enough not to matter).
fn needs_monitor(i: &Instruction) -> bool {
    use Mnemonic::*;
    if (0..i.op_count())
        .any(|n| i.op_kind(n) == OpKind::Register && is_system_reg(i.op_register(n)))
    {
        return true;
    }
    matches!(
        i.mnemonic(),
        In | Out
            | Insb
            | Insw
            | Insd
            | Outsb
            | Outsw
            | Outsd
            | Hlt
            | Cpuid
            | Int
            | Int1
            | Int3
            | Into
            | Iret
            | Iretd
            | Lgdt
            | Lidt
            | Sgdt
            | Sidt
            | Lldt
            | Sldt
            | Ltr
            | Str
            | Lmsw
            | Smsw
            | Invlpg
            | Wbinvd
            | Invd
            | Rdmsr
            | Wrmsr
            | Rdpmc
            | Clts
            | Sysenter
            | Sysexit
            | Syscall
            | Sysret
            | Ud0
            | Ud1
            | Ud2
            | Bound
            | Arpl
            | Lar
            | Lsl
            | Verr
            | Verw
            | Daa
            | Das
            | Aaa
            | Aas
            | Aam
            | Aad
            | Salc
            | Lds
            | Les
            | Lfs
            | Lgs
            | Lss
            | Retf
            | Rdtscp
            | Rdpid
            | Swapgs
            | Monitor
            | Mwait
            | Xgetbv
            | Xsetbv
            | Getsec
            | Vmcall
            | Vmlaunch
            | Vmresume
            | Vmxoff
            | Vmxon
            | Vmptrld
            | Vmptrst
            | Vmread
            | Vmwrite
            | Vmclear
            | Invept
            | Invvpid
            | Rsm
            | Fxsave64
            | Fxrstor64
    ) || matches!(
        i.code(),
        Code::Jmp_ptr1632
            | Code::Jmp_ptr1616
            | Code::Call_ptr1632
            | Code::Call_ptr1616
            | Code::Jmp_m1632
            | Code::Jmp_m1616
            | Code::Call_m1632
            | Code::Call_m1616
    ) || is_sreg_move(i)
        || i.code() == Code::Pushfw
        || i.code() == Code::Popfw
        || matches!(i.code(), Code::Pushaw | Code::Popaw)
        || (i.mnemonic() == Mnemonic::Pop
            && i.op0_kind() == OpKind::Register
            && seg_index(i.op0_register()).is_some())
}

/// The segment register a `mov r32/r16, sreg` reads into a general
/// register (reads into memory go through the monitor).
fn selector_read_into_register(i: &Instruction) -> Option<Seg> {
    if i.mnemonic() != Mnemonic::Mov
        || i.op0_kind() != OpKind::Register
        || i.op1_kind() != OpKind::Register
    {
        return None;
    }
    let dst = i.op0_register();
    if !dst.is_gpr32() && !dst.is_gpr16() {
        return None;
    }
    seg_index(i.op1_register())
}

fn is_system_reg(r: Register) -> bool {
    r.is_cr() || r.is_dr() || r.is_tr()
}

fn is_sreg_move(i: &Instruction) -> bool {
    i.mnemonic() == Mnemonic::Mov
        && (0..i.op_count())
            .any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_segment_register())
}

/// All ones in the width of `reg`.
fn size_mask(reg: Register) -> u32 {
    match reg.size() {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUBS: Stubs = Stubs {
        enter: 0x10_0000,
        exit_common: 0x10_1000,
        exit_saved: 0x10_2000,
        poll: 0x0f_f000,
        return_sentinel: 0x10_3000,
    };

    fn unit(code: &[u8]) -> Unit {
        unit_at(0x1000, code)
    }

    /// What a test varies in a unit request; the rest is fixed.
    struct Setup<'a> {
        eip: u32,
        mode: Mode,
        max_insns: usize,
        emulate_tokens_from: Option<u32>,
        ignored_ports: Option<&'a PortSet>,
        transitions: Option<Transitions>,
        event: Option<&'a InlineEvent>,
        split_events: bool,
        paged: Option<PagedCode>,
        self_check: bool,
        soft_access: &'a [u32],
        return_stack: bool,
        superblock_branches: u32,
        fold_displacements: bool,
        unfolded: &'a [u32],
        chain_slots_from: Option<u32>,
        pc_thunks: Option<&'a std::collections::HashMap<u32, PcThunk>>,
        segment_loads: &'a [(u8, InlineSegmentLoad)],
        verw: &'a [(u32, InlineVerw)],
        jump_predictions: &'a [(u32, u32)],
        jump_tables: &'a [JumpTable],
        branch_predictions: &'a [(u32, u32)],
        learning_sites: &'a [u32],
        inline_leaves: bool,
        code_before: &'a [u8],
        followed_branches: u32,
        /// The code is all the monitor could give (no NOP padding).
        exact_code: bool,
        /// The guest's instruction set (`None`: the baseline).
        isa: Option<GuestIsa>,
    }

    impl Default for Setup<'_> {
        /// Flat ring-0 code at 0x1000, tokens from 0.
        fn default() -> Self {
            Setup {
                eip: 0x1000,
                mode: Mode {
                    flat: true,
                    cpl0: true,
                    ..Mode::default()
                },
                max_insns: 64,
                emulate_tokens_from: Some(0),
                ignored_ports: None,
                transitions: None,
                event: None,
                split_events: false,
                paged: None,
                self_check: false,
                soft_access: &[],
                return_stack: false,
                superblock_branches: 0,
                fold_displacements: false,
                unfolded: &[],
                chain_slots_from: None,
                pc_thunks: None,
                exact_code: false,
                isa: None,
                segment_loads: &[],
                verw: &[],
                jump_predictions: &[],
                jump_tables: &[],
                branch_predictions: &[],
                learning_sites: &[],
                inline_leaves: false,
                code_before: &[],
                followed_branches: 0,
            }
        }
    }

    /// Translates `code` (padded with NOPs) as `setup` says.
    fn translate_with(code: &[u8], setup: Setup<'_>) -> Unit {
        let mut bytes = code.to_vec();
        if !setup.exact_code {
            bytes.resize(bytes.len().max(64), 0x90);
        }
        let req = UnitRequest {
            eip: setup.eip,
            code: &bytes,
            code_before: setup.code_before,
            followed_branches: setup.followed_branches,
            page_end: (setup.eip | 0xfff).wrapping_add(1),
            mode: setup.mode,
            host_base: 0x20_0000,
            stubs: STUBS,
            max_insns: setup.max_insns,
            count_indirect: None,
            count_entries: None,
            ibtc_tag: 0,
            shared_ibtc_tags: 0,
            isa: setup.isa.unwrap_or_else(GuestIsa::baseline),
            emulate_tokens_from: setup.emulate_tokens_from,
            cpuid: None,
            ignored_ports: setup.ignored_ports,
            transitions: setup.transitions,
            event: setup.event,
            divide_error: None,
            split_events: setup.split_events,
            paged: setup.paged,
            self_check: setup.self_check,
            soft_access: setup.soft_access,
            return_stack: setup.return_stack,
            superblock_branches: setup.superblock_branches,
            fold_displacements: setup.fold_displacements,
            unfolded: setup.unfolded,
            chain_slots_from: setup.chain_slots_from,
            pc_thunks: setup.pc_thunks,
            segment_loads: setup.segment_loads,
            verw: setup.verw,
            jump_predictions: setup.jump_predictions,
            jump_tables: setup.jump_tables,
            branch_predictions: setup.branch_predictions,
            learning_sites: setup.learning_sites,
            inline_leaves: setup.inline_leaves,
        };
        translate(&req).unwrap()
    }

    /// The host instructions of a unit.
    fn host_insns(unit: &Unit) -> Vec<Instruction> {
        Decoder::with_ip(64, &unit.code, 0x20_0000, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    /// `inc eax; jz +2; inc ebx; inc ecx; jnz (back to the start);
    /// inc edx; ret` at 0x1000 with `branches` allowed.
    /// Translates `code` in a flat unit whose chain slots start at
    /// `first_slot`, with jump tables `tables`.
    fn translate_with_tables(code: &[u8], first_slot: u32, tables: &[JumpTable]) -> Unit {
        translate_with(
            code,
            Setup {
                chain_slots_from: Some(first_slot),
                jump_tables: tables,
                ..Setup::default()
            },
        )
    }

    fn superblock_unit(branches: u32) -> Unit {
        let code = [0x40, 0x74, 0x02, 0x43, 0x41, 0x75, 0xf9, 0x42, 0xc3];
        translate_with(
            &code,
            Setup {
                superblock_branches: branches,
                ..Setup::default()
            },
        )
    }

    /// The guest EIPs of the chainable exits of `unit`'s own code.
    fn chain_targets(unit: &Unit) -> Vec<u32> {
        host_insns(unit)
            .iter()
            .filter(|i| {
                i.code() == Code::Mov_rm32_imm32
                    && i.memory_base() == Register::R14
                    && i.memory_displacement64() as i64 == i64::from(off::EIP)
            })
            .map(|i| i.immediate32())
            .collect()
    }

    #[test]
    fn a_unit_goes_on_past_a_forward_conditional_branch_and_ends_at_a_backward_one() {
        let unit = superblock_unit(4);
        // inc eax; jz; inc ebx; inc ecx; jnz (backward: the unit ends).
        assert_eq!(unit.insns.len(), 5);
        assert_eq!(unit.guest_len, 7);
        // Exits: jz taken (0x1005), jnz taken (0x1000), fall-through (0x1007).
        let mut targets = chain_targets(&unit);
        targets.sort_unstable();
        assert_eq!(targets, [0x1000, 0x1005, 0x1007]);
        assert_eq!(unit.sites.len(), 3);
    }

    #[test]
    fn without_superblocks_a_unit_ends_at_its_first_conditional_branch() {
        let unit = superblock_unit(0);
        assert_eq!(unit.insns.len(), 2);
        let mut targets = chain_targets(&unit);
        targets.sort_unstable();
        assert_eq!(targets, [0x1003, 0x1005]);
    }

    /// A unit at 0x1010 whose page's bytes from 0x1000 are `before` (NOP
    /// padded to 16 bytes), following up to `follows` branches.
    fn unit_after(before: &[u8], code: &[u8], follows: u32) -> Unit {
        let mut page = before.to_vec();
        page.resize(16, 0x90);
        translate_with(
            code,
            Setup {
                eip: 0x1010,
                code_before: &page,
                followed_branches: follows,
                ..Setup::default()
            },
        )
    }

    /// The polls of a unit (loads of the poll word, RIP-relative).
    fn poll_loads(u: &Unit) -> usize {
        host_insns(u)
            .iter()
            .filter(|i| i.code() == Code::Mov_r32_rm32 && i.memory_base() == Register::RIP)
            .count()
    }

    #[test]
    fn a_followed_jump_goes_on_at_its_target_in_the_same_unit() {
        // inc eax; jmp +1; (inc ebx, skipped); inc ecx; jmp 0x2000
        let code = [0x40, 0xeb, 0x01, 0x43, 0x41, 0xe9, 0xf6, 0x0f, 0x00, 0x00];
        let u = translate_with(
            &code,
            Setup {
                followed_branches: 4,
                ..Setup::default()
            },
        );
        let eips: Vec<u32> = u.insns.iter().map(|i| i.ip32()).collect();
        assert_eq!(eips, [0x1000, 0x1001, 0x1004, 0x1005]);
        assert_eq!(chain_targets(&u), [0x2000], "no exit to the jump's target");
        assert_eq!((u.guest_before, u.guest_len), (0, 10));
        let plain = translate_with(&code, Setup::default());
        assert_eq!(
            plain.insns.len(),
            2,
            "not followed: the unit ends at the jump"
        );
        assert_eq!(chain_targets(&plain), [0x1004]);
    }

    #[test]
    fn a_followed_jump_back_before_the_units_start_covers_those_bytes_too() {
        // 0x1000: inc ebx; jmp 0x2000 / 0x1010: inc eax; jmp 0x1000
        let before = [0x43, 0xe9, 0xfa, 0x0f, 0x00, 0x00];
        let u = unit_after(&before, &[0x40, 0xeb, 0xed], 4);
        let eips: Vec<u32> = u.insns.iter().map(|i| i.ip32()).collect();
        assert_eq!(eips, [0x1010, 0x1011, 0x1000, 0x1001]);
        let mapped: Vec<u32> = u.pc_map.iter().map(|p| p.1).collect();
        assert_eq!(mapped, [0x1010, 0x1011, 0x1000, 0x1001]);
        assert_eq!(u.pc_map[1].0, u.pc_map[2].0, "the jump has no code");
        assert_eq!((u.guest_before, u.guest_len), (0x10, 3));
        assert_eq!(chain_targets(&u), [0x2000]);
        assert_eq!(poll_loads(&u), 0, "no branch to the unit's start or below");
        let none = unit_after(&before, &[0x40, 0xeb, 0xed], 0);
        assert_eq!(none.insns.len(), 2);
        assert_eq!(poll_loads(&none), 1, "the jump back polls");
    }

    #[test]
    fn a_followed_back_edge_leaves_on_its_not_taken_path_and_polls_when_that_can_close_a_cycle() {
        // 0x1000: inc ebx; jmp 0x1010 / 0x1010: dec ecx; jnz 0x1000
        let before = [0x43, 0xeb, 0x0d];
        let u = unit_after(&before, &[0x49, 0x75, 0xed, 0x90], 4);
        let eips: Vec<u32> = u.insns.iter().map(|i| i.ip32()).collect();
        assert_eq!(eips, [0x1010, 0x1011, 0x1000, 0x1001]);
        let mut targets = chain_targets(&u);
        targets.sort_unstable();
        // jz 0x1013 (the not-taken path), and the jump to the start.
        assert_eq!(targets, [0x1010, 0x1013]);
        let text = host_text(&u).join("\n");
        assert!(text.contains("\nje "), "the branch inverted: {text}");
        assert_eq!(
            poll_loads(&u),
            2,
            "before the back edge and the jump: {text}"
        );
        // A backward branch to an instruction the unit holds already is not
        // followed: the unit ends there as before.
        let self_loop = unit_after(&[], &[0x49, 0x75, 0xfd, 0x90], 4);
        assert_eq!(self_loop.insns.len(), 2);
        let mut targets = chain_targets(&self_loop);
        targets.sort_unstable();
        assert_eq!(targets, [0x1010, 0x1013]);
    }

    #[test]
    fn a_unit_ending_below_its_start_after_a_followed_branch_polls_at_a_boundary_of_its_own() {
        // 0x1010: jmp 0x1000 / 0x1000: inc eax, inc eax, ... (3 insns at most)
        let u = translate_with(
            &[0xeb, 0xee],
            Setup {
                eip: 0x1010,
                code_before: &[0x40; 16],
                followed_branches: 4,
                max_insns: 3,
                ..Setup::default()
            },
        );
        assert_eq!(chain_targets(&u), [0x1002]);
        assert_eq!(poll_loads(&u), 1);
        let last = *u.pc_map.last().unwrap();
        assert_eq!(last.1, 0x1002, "a poll fault there stops before 0x1002");
        assert_eq!(u.pc_map.len(), u.fixups.len());
    }

    #[test]
    fn a_unit_follows_no_more_branches_than_asked_and_none_when_self_checking_or_alone() {
        // jmp +0 four times, then inc eax.
        let code = [0xeb, 0x00, 0xeb, 0x00, 0xeb, 0x00, 0xeb, 0x00, 0x40];
        let with = |follows, self_check, max_insns| {
            translate_with(
                &code,
                Setup {
                    followed_branches: follows,
                    self_check,
                    max_insns,
                    ..Setup::default()
                },
            )
        };
        assert_eq!(chain_targets(&with(2, false, 64)), [0x1006]);
        assert_eq!(
            with(4, true, 64).insns.len(),
            1,
            "self-checking: ends at the jump"
        );
        assert_eq!(with(4, false, 1).insns.len(), 1);
        let all = with(4, false, 64);
        assert_eq!(all.insns[4].ip32(), 0x1008, "all four followed");
        assert!(!chain_targets(&all).contains(&0x1002));
    }

    #[test]
    fn a_jump_table_made_before_for_the_same_targets_is_shared() {
        // jmp [ecx*4 + 0x3000]
        let code = [0xff, 0x24, 0x8d, 0x00, 0x30, 0x00, 0x00];
        let table = |slots| JumpTable {
            eip: 0x1000,
            targets: vec![0x2000, 0x2010],
            slots,
        };
        let (new, made_before) = ([table(None)], [table(Some(4096))]);
        let made = translate_with_tables(&code, 7, &new);
        assert_eq!(made.jump_table_slots, [(0x1000, 7)]);
        assert_eq!(made.chain_slots.len(), 2 * JUMP_TABLE_ENTRIES);
        let shared = translate_with_tables(&code, 7, &made_before);
        assert!(shared.jump_table_slots.is_empty());
        assert!(shared.chain_slots.is_empty(), "no slots of its own");
        let entry = |k: i64| shadowmmu::CHAIN_TABLE_OFFSET + 8 * k;
        let text = host_text(&shared).join("\n");
        for line in [
            format!("mov rcx,[r15+r11*8-{:X}h]", -entry(4096 + 256)),
            format!("jmp qword ptr [r15+r11*8-{:X}h]", -entry(4096)),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn a_unit_goes_on_past_no_more_conditional_branches_than_asked() {
        // jz +0 three times, then inc eax: with 2 allowed, the unit ends
        // at the third.
        let code = [0x74, 0x00, 0x74, 0x00, 0x74, 0x00, 0x40];
        let unit = translate_with(
            &code,
            Setup {
                superblock_branches: 2,
                ..Setup::default()
            },
        );
        assert_eq!(unit.insns.len(), 3);
        let single = translate_with(
            &code,
            Setup {
                superblock_branches: 2,
                max_insns: 1,
                ..Setup::default()
            },
        );
        assert_eq!(single.insns.len(), 1, "a unit of one instruction stays one");
    }

    #[test]
    fn an_instruction_cut_off_by_the_end_of_the_bytes_given_starts_a_unit_of_its_own() {
        // inc eax; then `and eax, imm32` of which only 3 of 5 bytes are
        // there (its next page is not mapped when the unit is made).
        let code = [0x40, 0x25, 0x83, 0x08];
        let unit = translate_with(
            &code,
            Setup {
                exact_code: true,
                ..Setup::default()
            },
        );
        assert_eq!(unit.insns.len(), 1);
        assert_eq!(chain_targets(&unit), [0x1001]);
        assert!(unit.emulated.is_empty(), "nothing is left to the monitor");
    }

    #[test]
    fn an_adaptive_instruction_reaches_memory_through_the_software_tlb() {
        // mov eax, [ebx+8]; add [esi], ecx
        let code = [0x8b, 0x43, 0x08, 0x01, 0x0e];
        let soft = [0x1000, 0x1003];
        let unit = translate_with(
            &code,
            Setup {
                soft_access: &soft,
                ..Setup::default()
            },
        );
        let insns = host_insns(&unit);
        let soft_accesses: Vec<&Instruction> = insns
            .iter()
            .filter(|i| i.memory_base() == Register::R12 && i.memory_index() == Register::R11)
            .collect();
        assert_eq!(soft_accesses.len(), 2);
        let tables: Vec<i64> = insns
            .iter()
            .filter(|i| i.memory_base() == Register::R15 && i.memory_index() == Register::R12)
            .map(|i| i.memory_displacement64() as i64)
            .collect();
        assert_eq!(
            tables,
            [
                shadowmmu::SOFT_READ_TAGS,
                shadowmmu::SOFT_READ_FRAMES,
                shadowmmu::SOFT_WRITE_TAGS,
                shadowmmu::SOFT_WRITE_FRAMES
            ]
        );
        // The window is not touched.
        assert!(!insns.iter().any(|i| i.memory_base() == Register::R15
            && i.memory_index() != Register::R12
            && i.op_count() > 0
            && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)));
    }

    fn predicted(code: &[u8]) -> Vec<Instruction> {
        host_insns(&translate_with(
            code,
            Setup {
                return_stack: true,
                ..Setup::default()
            },
        ))
    }

    /// Flat code with folded stack accesses, predicted returns and leaves
    /// in place.
    fn leafy() -> Setup<'static> {
        Setup {
            return_stack: true,
            fold_displacements: true,
            inline_leaves: true,
            ..Setup::default()
        }
    }

    /// `caller` at 0x1000 and `leaf` at 0x1020 (NOPs between and after),
    /// translated as `setup` says.
    fn with_leaf(caller: &[u8], leaf: &[u8], setup: Setup<'_>) -> Unit {
        let mut code = vec![0x90; 0x40];
        code[..caller.len()].copy_from_slice(caller);
        code[0x20..0x20 + leaf.len()].copy_from_slice(leaf);
        translate_with(&code, setup)
    }

    /// `call 0x1020 ; inc eax ; ret`.
    const CALLS_LEAF: [u8; 7] = [0xe8, 0x1b, 0x00, 0x00, 0x00, 0x40, 0xc3];

    fn eips(unit: &Unit) -> Vec<u32> {
        unit.insns.iter().map(|i| i.ip32()).collect()
    }

    fn host_calls(unit: &Unit) -> usize {
        host_insns(unit)
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Call)
            .count()
    }

    #[test]
    fn a_direct_call_to_a_leaf_goes_on_with_the_callee_and_then_after_the_call() {
        // mov eax, [esp+4] ; add eax, 1 ; ret: it cannot touch its return
        // address, so its ret only moves ESP (here: a lag, R8 never moves).
        let unit = with_leaf(
            &CALLS_LEAF,
            &[0x8b, 0x44, 0x24, 0x04, 0x83, 0xc0, 0x01, 0xc3],
            leafy(),
        );
        assert_eq!(
            eips(&unit),
            [0x1000, 0x1020, 0x1024, 0x1027, 0x1005, 0x1006]
        );
        assert_eq!(host_calls(&unit), 0);
        let text = host_text(&unit).join("\n");
        assert!(text.contains("mov dword ptr [r15+r8-4],1005h"), "{text}");
        assert!(
            text.contains("mov eax,[r15+r8]"),
            "the argument above it:\n{text}"
        );
        assert!(!text.contains("r9-1005h"), "no compare:\n{text}");
        // The callee's instructions run with ESP 4 below R8, listed so.
        assert_eq!(unit.stack_lags, [(1, -4), (2, -4), (3, -4)]);
        // Its bytes are code of the unit apart from the caller's.
        assert_eq!(unit.leaf_ranges, [(0x1020, 8)]);
        assert_eq!((unit.guest_before, unit.guest_len), (0, 7));
        assert_eq!(
            unit.pc_map.iter().map(|p| p.1).collect::<Vec<_>>()[..4],
            [0x1000, 0x1020, 0x1024, 0x1027]
        );
    }

    #[test]
    fn a_leaf_that_may_write_its_return_address_compares_it_at_its_ret() {
        // mov [edx], eax ; ret
        let unit = with_leaf(&CALLS_LEAF, &[0x89, 0x02, 0xc3], leafy());
        assert_eq!(eips(&unit), [0x1000, 0x1020, 0x1022, 0x1005, 0x1006]);
        assert_eq!(host_calls(&unit), 0);
        let text = host_text(&unit).join("\n");
        assert!(text.contains("mov r9d,[r15+r8-4]"), "{text}");
        assert!(text.contains("lea ecx,[r9-1005h]"), "{text}");
    }

    #[test]
    fn callees_that_are_not_short_plain_leaves_are_called() {
        let called = |leaf: &[u8], setup: Setup<'_>| {
            let unit = with_leaf(&CALLS_LEAF, leaf, setup);
            !eips(&unit).contains(&0x1020) && host_calls(&unit) == 1
        };
        let plain = [0x40, 0xc3];
        assert!(!called(&plain, leafy()), "inc eax ; ret: in place");
        assert!(called(&[0x74, 0x01, 0x40, 0xc3], leafy()), "a branch");
        assert!(called(&[0x9c, 0x58, 0xc3], leafy()), "pushfd");
        assert!(
            called(&[0xe8, 0x00, 0x00, 0x00, 0x00, 0xc3], leafy()),
            "a call"
        );
        assert!(called(&[0xa4, 0xc3], leafy()), "movsb");
        assert!(called(&[0xe6, 0x80, 0xc3], leafy()), "out");
        let mut long = vec![0x40; MAX_LEAF_INSNS];
        long.push(0xc3);
        assert!(called(&long, leafy()), "too long");
        assert!(!called(&long[1..], leafy()), "just short enough");
        let off = Setup {
            inline_leaves: false,
            ..leafy()
        };
        assert!(called(&plain, off), "leaves in place off");
        let checking = Setup {
            self_check: true,
            ..leafy()
        };
        assert!(called(&plain, checking), "a self-checking unit");
        let soft = [0x1020];
        let adaptive = Setup {
            soft_access: &soft,
            ..leafy()
        };
        assert!(
            called(&plain, adaptive),
            "an instruction through the software TLB"
        );
        let single = Setup {
            max_insns: 1,
            ..leafy()
        };
        let one = with_leaf(&CALLS_LEAF, &plain, single);
        assert_eq!(eips(&one), [0x1000], "a one-instruction unit");
    }

    #[test]
    fn a_unit_takes_in_leaves_until_its_leaf_budget_is_spent_then_calls_them() {
        // 40 calls of `inc eax ; ret` at 0x1200: 32 of them fill the
        // budget of leaf instructions, the other 8 are host calls.
        let mut code = vec![0x90; 0x210];
        for k in 0..40u32 {
            let at = 5 * k as usize;
            let rel = 0x1200u32.wrapping_sub(0x1000 + 5 * k + 5);
            code[at] = 0xe8;
            code[at + 1..at + 5].copy_from_slice(&rel.to_le_bytes());
        }
        code[0x200..0x202].copy_from_slice(&[0x40, 0xc3]);
        let unit = translate_with(&code, leafy());
        let in_place = MAX_LEAF_UNIT_INSNS / 2;
        assert_eq!(host_calls(&unit), 40 - in_place);
        let leaf_insns = unit.insns.iter().filter(|i| i.ip32() >= 0x1200).count();
        assert_eq!(leaf_insns, MAX_LEAF_UNIT_INSNS);
        assert_eq!(
            unit.insns.len() - leaf_insns,
            MAX_UNIT_INSNS,
            "the caller's own"
        );
    }

    #[test]
    fn an_inline_cache_runs_its_leaf_targets_in_place_and_calls_the_others() {
        // call [eax+4] ; inc eax ; ret, its cache holding a leaf in the
        // page (inc eax ; ret) and a target in another page.
        let caller = [0xff, 0x50, 0x04, 0x40, 0xc3];
        let predictions = [(0x1000, 0x1020), (0x1000, 0x5000)];
        let unit = with_leaf(
            &caller,
            &[0x40, 0xc3],
            Setup {
                chain_slots_from: Some(0),
                branch_predictions: &predictions,
                ..leafy()
            },
        );
        assert_eq!(eips(&unit), [0x1000, 0x1020, 0x1021, 0x1003, 0x1004]);
        assert_eq!(host_calls(&unit), 1, "the other target's");
        let text = host_text(&unit).join("\n");
        assert!(text.contains("lea ecx,[r9-1020h]"), "{text}");
        assert!(text.contains("lea ecx,[r9-5000h]"), "{text}");
    }

    #[test]
    fn an_inline_cache_of_leaves_compares_with_all_it_holds_and_of_one_leaf_with_calls_too() {
        // call [eax+4] ; inc eax ; ret, and eight leaves `inc edx ; ret`
        // at 0x1020 + 4k; the cache holds them, or one of them and four
        // targets in another page.
        let mut code = vec![0x90; 0x40];
        code[..5].copy_from_slice(&[0xff, 0x50, 0x04, 0x40, 0xc3]);
        for k in 0..MAX_CACHED_TARGETS {
            code[0x20 + 4 * k..0x22 + 4 * k].copy_from_slice(&[0x42, 0xc3]);
        }
        let leaves: Vec<(u32, u32)> = (0..MAX_CACHED_TARGETS as u32)
            .map(|k| (0x1000, 0x1020 + 4 * k))
            .collect();
        let mut mixed = vec![(0x1000, 0x1020)];
        mixed.extend((0..MAX_COMPARED_TARGETS as u32).map(|k| (0x1000, 0x5000 + 0x100 * k)));
        for (predictions, calls) in [(&leaves, 0), (&mixed, MAX_COMPARED_TARGETS)] {
            let unit = translate_with(
                &code,
                Setup {
                    chain_slots_from: Some(0),
                    branch_predictions: predictions,
                    ..leafy()
                },
            );
            let text = host_text(&unit).join("\n");
            for &(_, target) in predictions.iter() {
                assert!(
                    text.contains(&format!("lea ecx,[r9-{target:X}h]")),
                    "{target:#x}: {text}"
                );
            }
            // Direct calls (a full cache's table probe calls through the
            // table's entry).
            let direct = host_insns(&unit)
                .iter()
                .filter(|i| i.code() == Code::Call_rel32_64)
                .count();
            assert_eq!(direct, calls, "{text}");
            let in_place = predictions.len() - calls;
            assert_eq!(unit.insns.len(), 3 + 2 * in_place, "{text}");
        }
    }

    #[test]
    fn a_predicted_call_is_a_host_call_whose_continuation_checks_the_return_and_goes_on() {
        // call +0x10; inc eax
        let insns = predicted(&[0xe8, 0x10, 0, 0, 0, 0x40]);
        let call = insns
            .iter()
            .position(|i| i.code() == Code::Call_rel32_64)
            .expect("a host call");
        // The continuation compares R9D with the return address 0x1005
        // without touching the flags, then the unit goes on with the INC.
        assert_eq!(insns[call + 2].code(), Code::Lea_r32_m);
        assert_eq!(insns[call + 2].memory_base(), Register::R9);
        assert_eq!(
            insns[call + 2].memory_displacement64() as i64 as i32,
            -0x1005
        );
        assert_eq!(insns[call + 3].code(), Code::Jrcxz_rel8_64);
        assert!(insns[call..].iter().any(|i| i.mnemonic() == Mnemonic::Inc));
        assert!(!insns.iter().any(|i| i.code() == Code::Retnq));
    }

    #[test]
    fn pushfd_and_popfd_set_the_host_flags_back_without_popfq() {
        let count =
            |insns: &[Instruction], code: Code| insns.iter().filter(|i| i.code() == code).count();
        // pushfd; inc eax: the image made from PUSHFQ's copy, the flags
        // back through SAHF and the ADC that sets OF, EAX kept in R10.
        let pushfd = host_insns(&translate_with(&[0x9c, 0x40], Setup::default()));
        assert_eq!(count(&pushfd, Code::Popfq), 0, "{pushfd:?}");
        assert_eq!(count(&pushfd, Code::Pushfq), 1);
        assert_eq!(count(&pushfd, Code::Sahf), 1);
        let add = pushfd
            .iter()
            .position(|i| i.code() == Code::Adc_rm8_imm8)
            .expect("the ADC that sets OF");
        assert_eq!(pushfd[add - 1].code(), Code::Bt_rm32_imm8);
        assert_eq!(
            (pushfd[add].op0_register(), pushfd[add].immediate8()),
            (Register::AL, 0x7f)
        );
        assert_eq!(pushfd[add + 1].code(), Code::Sahf);
        assert_eq!(
            (
                pushfd[add + 2].op0_register(),
                pushfd[add + 2].op1_register()
            ),
            (Register::RAX, Register::R10)
        );
        // popfd: DF by CLD or STD, the status flags the same way; a POPFQ
        // only on the path to the monitor (TF, or IF with a window wanted).
        let popfd = host_insns(&translate_with(&[0x9d, 0x40], Setup::default()));
        assert_eq!(count(&popfd, Code::Popfq), 1, "{popfd:?}");
        assert_eq!(count(&popfd, Code::Sahf), 1);
        assert_eq!((count(&popfd, Code::Cld), count(&popfd, Code::Std)), (1, 1));
        let sahf = popfd.iter().position(|i| i.code() == Code::Sahf).unwrap();
        let popfq = popfd.iter().position(|i| i.code() == Code::Popfq).unwrap();
        assert!(popfq < sahf, "the monitor's path comes first");
    }

    #[test]
    fn a_predicted_ret_points_r10_at_its_own_lookup_and_returns() {
        let insns = predicted(&[0xc3]);
        let ret = insns
            .iter()
            .position(|i| i.code() == Code::Retnq)
            .expect("a host ret");
        let lea = &insns[ret - 1];
        assert_eq!(
            (lea.code(), lea.op0_register(), lea.memory_base()),
            (Code::Lea_r64_m, Register::R10, Register::RIP)
        );
        assert_eq!(lea.memory_displacement64(), insns[ret + 1].ip());
        // What follows is the ordinary indirect-branch lookup.
        assert!(insns[ret..].iter().any(|i| i.code() == Code::Jmp_rm64));
    }

    #[test]
    fn an_indirect_call_calls_through_its_table_entry_and_a_one_instruction_unit_predicts_nothing()
    {
        // call eax: the lookup inline, a hit a host call through the
        // entry's host address (the continuation its return address).
        let insns = predicted(&[0xff, 0xd0]);
        assert!(insns.iter().any(|i| i.code() == Code::Call_rm64
            && i.memory_base() == Register::R12
            && i.memory_index() == Register::R11));
        assert!(!insns.iter().any(|i| i.code() == Code::Call_rel32_64));
        let single = host_insns(&translate_with(
            &[0xc3],
            Setup {
                return_stack: true,
                max_insns: 1,
                ..Setup::default()
            },
        ));
        assert!(!single
            .iter()
            .any(|i| matches!(i.code(), Code::Retnq | Code::Call_rel32_64)));
    }

    #[test]
    fn an_inline_privilege_change_starts_the_return_stack_again() {
        let resets = |insns: &[Instruction]| {
            insns
                .iter()
                .filter(|i| {
                    i.code() == Code::Mov_r64_rm64
                        && i.op0_register() == Register::RSP
                        && i.memory_displacement64() as i64 == i64::from(off::RSB_TOP)
                })
                .count()
        };
        assert_eq!(resets(&predicted(&[0xe8, 0, 0, 0, 0])), 0);
        let sysenter = translate_with(
            &[0x0f, 0x34],
            Setup {
                mode: Mode {
                    flat: true,
                    ..Mode::default()
                },
                transitions: Some(Transitions {
                    sysenter: Some(TO_RING0),
                    sysexit: None,
                }),
                return_stack: true,
                ..Setup::default()
            },
        );
        assert!(sysenter.emulated.is_empty(), "SYSENTER ran inline");
        assert_eq!(resets(&host_insns(&sysenter)), 1);
    }

    #[test]
    fn adaptive_pushes_pops_and_calls_reach_the_stack_through_the_software_tlb() {
        // push eax; push 0x1234; pop ebx; call +0 (to 0x100c)
        let code = [0x50, 0x68, 0x34, 0x12, 0, 0, 0x5b, 0xe8, 0, 0, 0, 0];
        let unit = translate_with(
            &code,
            Setup {
                soft_access: &[0x1000, 0x1001, 0x1006, 0x1007],
                fold_displacements: true,
                ..Setup::default()
            },
        );
        let text = host_text(&unit);
        for want in [
            "mov [r12+r11],eax",
            "mov dword ptr [r12+r11],1234h",
            "mov ebx,[r12+r11]",
            "mov dword ptr [r12+r11],100Ch",
        ] {
            assert!(text.contains(&want.to_string()), "{want}: {text:#?}");
        }
        assert_eq!(unit.soft_eips, vec![0x1000, 0x1001, 0x1006, 0x1007]);
        assert!(
            !text.iter().any(|t| t.contains("[r15+r8")),
            "no stack access through the window: {text:#?}"
        );
        // ret 8
        let ret = translate_with(
            &[0xc2, 8, 0],
            Setup {
                soft_access: &[0x1000],
                ..Setup::default()
            },
        );
        let text = host_text(&ret);
        assert!(text.contains(&"mov r9d,[r12+r11]".to_string()), "{text:#?}");
        assert!(text.contains(&"lea r8d,[r8+8]".to_string()), "{text:#?}");
        // enter 16, 0; leave; call eax
        let frame = translate_with(
            &[0xc8, 16, 0, 0, 0xc9, 0xff, 0xd0],
            Setup {
                soft_access: &[0x1000, 0x1004, 0x1005],
                ..Setup::default()
            },
        );
        let text = host_text(&frame);
        for want in [
            "mov [r12+r11],ebp",
            "mov ebp,r8d",
            "lea r8d,[r8-10h]",
            "mov r10d,ebp",
            "lea r8d,[rbp+4]",
            "mov ebp,[r12+r11]",
            "mov dword ptr [r12+r11],1007h",
        ] {
            assert!(text.contains(&want.to_string()), "{want}: {text:#?}");
        }
        assert_eq!(frame.soft_eips, vec![0x1000, 0x1004, 0x1005]);
        let push = text
            .iter()
            .position(|t| t == "mov dword ptr [r12+r11],1007h");
        let target = text.iter().position(|t| t == "mov r9d,eax");
        assert!(
            push < target,
            "the target is read after the push: {text:#?}"
        );
    }

    /// One 32-bit guest instruction at 0x1000.
    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(32, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    /// The guest-memory accesses of a unit that go through the window
    /// (`[r15 + ...]` other than the software-TLB tables' `[r15 + r12*8 +
    /// t]` and the chain table's `jmp`/`call [r15 + t]`).
    fn window_accesses(unit: &Unit) -> Vec<Instruction> {
        host_insns(unit)
            .into_iter()
            .filter(|h| {
                (0..h.op_count()).any(|n| h.op_kind(n) == OpKind::Memory)
                    && h.memory_base() == Register::R15
                    && h.memory_index() != Register::R12
                    && !matches!(h.code(), Code::Jmp_rm64 | Code::Call_rm64)
            })
            .collect()
    }

    /// Checks the precise-state rule of a software-TLB form: every probe
    /// (its `jrcxz`) comes before the first store through the software TLB
    /// and the first write of a guest register other than ECX (which the
    /// probe saves and restores), so a miss changes nothing the guest sees.
    fn assert_probes_before_changes(unit: &Unit, what: &str) {
        let insns = host_insns(unit);
        let mut info = iced_x86::InstructionInfoFactory::new();
        let guest = [
            Register::RAX,
            Register::RDX,
            Register::RBX,
            Register::RBP,
            Register::RSI,
            Register::RDI,
            Register::R8,
        ];
        let changes = |h: &Instruction, info: &mut iced_x86::InstructionInfoFactory| {
            let used = info.info(h);
            let soft_store = used.used_memory().iter().any(|m| {
                m.base() == Register::R12
                    && m.index() == Register::R11
                    && m.access() != iced_x86::OpAccess::Read
            });
            let reg = used.used_registers().iter().any(|r| {
                guest.contains(&r.register().full_register())
                    && r.access() != iced_x86::OpAccess::Read
            });
            soft_store || reg
        };
        let first = insns
            .iter()
            .position(|h| changes(h, &mut info))
            .unwrap_or(insns.len());
        let last_probe = insns
            .iter()
            .rposition(|h| h.code() == Code::Jrcxz_rel8_64)
            .expect("a probe");
        assert!(
            last_probe < first,
            "{what}: a change before the last probe: {:#?}",
            host_text(unit)
        );
    }

    /// `code` translated as one adaptive instruction at 0x1000 (the
    /// verifier runs on it), with its host text: every entry of `wants`
    /// matches some host instruction, and the unit names the instruction
    /// as one reaching memory through the software TLB.
    fn soft_form_unit(
        code: &[u8],
        what: &str,
        fold_displacements: bool,
        wants: &[&str],
        matches: impl Fn(&str, &str) -> bool,
    ) -> (Unit, Vec<String>) {
        let unit = translate_with(
            code,
            Setup {
                soft_access: &[0x1000],
                max_insns: 1,
                fold_displacements,
                ..Setup::default()
            },
        );
        let text = host_text(&unit);
        for want in wants {
            assert!(
                text.iter().any(|t| matches(t, want)),
                "{what}: {want}: {text:#?}"
            );
        }
        assert_eq!(unit.soft_eips, vec![0x1000], "{what}");
        (unit, text)
    }

    #[test]
    fn adaptive_stack_forms_with_memory_flags_and_all_registers_go_through_the_software_tlb() {
        // Each alone (ESP's lag flushed, one instruction per unit):
        // push dword [ebx+8]; pop dword [esp+4]; pop dword [ebx];
        // call dword [eax]; pushfd; popfd; pushad; popad; push fs.
        let forms: [(&[u8], &str, &[&str]); 9] = [
            (&[0xff, 0x73, 0x08], "push [ebx+8]", &["mov [r12+r11],r9d"]),
            (
                &[0x0f, 0xa0],
                "push fs",
                // The selector from the state block, zero-extended.
                &["movzx r9d,word ptr [r14+0D0h]", "mov [r12+r11],r9d"],
            ),
            (
                &[0x8f, 0x44, 0x24, 0x04],
                "pop [esp+4]",
                // The operand's address uses ESP after the increment.
                &["lea r10d,[r10+4]", "mov [r12+r11],r9d", "lea r8d,[r8+4]"],
            ),
            (&[0x8f, 0x03], "pop [ebx]", &["mov [r12+r11],r9d"]),
            (
                &[0xff, 0x10],
                "call [eax]",
                &["mov dword ptr [r12+r11],1002h"],
            ),
            (&[0x9c], "pushfd", &["mov [r12+r11],r9d", "pushfq"]),
            (&[0x9d], "popfd", &["mov r9d,[r12+r11]", "popfq"]),
            (
                &[0x60],
                "pushad",
                &[
                    "mov [r12+r11+1Ch],eax",
                    "mov [r12+r11+0Ch],r8d",
                    "mov [r12+r11],edi",
                ],
            ),
            (
                &[0x61],
                "popad",
                &[
                    "mov edi,[r12+r11]",
                    "mov eax,[r12+r11+1Ch]",
                    "lea r8d,[r8+20h]",
                ],
            ),
        ];
        for (code, what, wants) in forms {
            let i = decode(code);
            assert!(soft_stack_candidate(&i), "{what}: not a candidate");
            assert!(!soft_access_candidate(&i), "{what}");
            // The verifier ran on the unit (`translate` checks every one).
            let (unit, text) = soft_form_unit(code, what, true, wants, |t, w| t == w);
            assert!(
                window_accesses(&unit).is_empty(),
                "{what}: a window access left: {text:#?}"
            );
            assert_probes_before_changes(&unit, what);
        }
        // PUSH and POP m32 and CALL m32 probe twice: the operand and the
        // stack slot; PUSHAD/POPAD probe their 32 bytes once.
        let probes = |code: &[u8]| {
            let unit = translate_with(
                code,
                Setup {
                    soft_access: &[0x1000],
                    max_insns: 1,
                    ..Setup::default()
                },
            );
            host_insns(&unit)
                .iter()
                .filter(|h| h.code() == Code::Jrcxz_rel8_64)
                .count()
        };
        assert_eq!(probes(&[0xff, 0x73, 0x08]), 2);
        assert_eq!(probes(&[0x8f, 0x03]), 2);
        assert_eq!(probes(&[0xff, 0x10]), 2);
        assert_eq!(probes(&[0x60]), 1);
        // Not asked for: the window forms as before.
        let plain = translate_with(&[0x60, 0xff, 0x73, 0x08], Setup::default());
        assert!(plain.soft_eips.is_empty());
        assert!(!window_accesses(&plain).is_empty());
    }

    #[test]
    fn adaptive_indirect_jump_reads_its_target_through_the_software_tlb() {
        // jmp [eax*4 + 0x2000] (a jump table) and jmp [0x3000] (a PLT
        // entry's GOT slot): the target from `[r12 + r11]` into R9D, the
        // table probe after it, no window access left.
        let forms: [(&[u8], &str); 2] = [
            (
                &[0xff, 0x24, 0x85, 0x00, 0x20, 0x00, 0x00],
                "jmp [eax*4+2000h]",
            ),
            (&[0xff, 0x25, 0x00, 0x30, 0x00, 0x00], "jmp [3000h]"),
        ];
        for (code, what) in forms {
            let i = decode(code);
            assert!(soft_jump_candidate(&i), "{what}: not a candidate");
            assert!(
                !soft_access_candidate(&i) && !soft_stack_candidate(&i),
                "{what}"
            );
            let (unit, text) =
                soft_form_unit(code, what, true, &["mov r9d,[r12+r11]"], |t, w| t == w);
            assert!(
                window_accesses(&unit).is_empty(),
                "{what}: a window access left: {text:#?}"
            );
            assert_probes_before_changes(&unit, what);
        }
        // A register target and 16-bit addressing are not candidates.
        assert!(!soft_jump_candidate(&decode(&[0xff, 0xe0])));
        assert!(!soft_jump_candidate(&decode(&[0x67, 0xff, 0x27])));
        // Not asked for: the window form as before.
        let plain = translate_with(&[0xff, 0x25, 0x00, 0x30, 0x00, 0x00], Setup::default());
        assert!(plain.soft_eips.is_empty());
        assert!(!window_accesses(&plain).is_empty());
    }

    #[test]
    fn adaptive_single_string_elements_and_xlat_go_through_the_software_tlb() {
        let forms: [(&[u8], &str, &[&str]); 12] = [
            (&[0xa4], "movsb", &["mov [r12+r11],r9b"]),
            (&[0x66, 0xa5], "movsw", &["mov [r12+r11],r9w"]),
            (&[0xa5], "movsd", &["mov [r12+r11],r9d"]),
            (&[0xaa], "stosb", &["mov [r12+r11],al"]),
            (&[0xab], "stosd", &["mov [r12+r11],eax"]),
            (&[0xac], "lodsb", &["mov al,[r12+r11]"]),
            (&[0xad], "lodsd", &["mov eax,[r12+r11]"]),
            (&[0xae], "scasb", &["cmp al,[r12+r11]"]),
            (&[0xaf], "scasd", &["cmp eax,[r12+r11]"]),
            (&[0xa6], "cmpsb", &["cmp r9b,[r12+r11]"]),
            (&[0xa7], "cmpsd", &["cmp r9d,[r12+r11]"]),
            (&[0xd7], "xlat", &["mov al,[r12+r11]"]),
        ];
        for (code, what, wants) in forms {
            let i = decode(code);
            assert!(soft_element_candidate(&i), "{what}: not a candidate");
            let (unit, text) = soft_form_unit(code, what, false, wants, |t, w| t == w);
            assert!(
                window_accesses(&unit).is_empty()
                    && !text
                        .iter()
                        .any(|t| t.contains("r15") && (t.contains("rsi") || t.contains("rdi"))),
                "{what}: a window access left: {text:#?}"
            );
            assert_probes_before_changes(&unit, what);
            // DF honoured: ESI/EDI go up or down by the element.
            if what != "xlat" {
                let n = string_element_size(&i);
                let up = text.iter().any(|t| t.ends_with(&format!("+{n}]")));
                let down = text.iter().any(|t| t.ends_with(&format!("-{n}]")));
                assert!(up && down, "{what}: {text:#?}");
            }
        }
        // With REP, or a segment override other than DS/ES: not these forms.
        assert!(!soft_element_candidate(&decode(&[0xf3, 0xa4])));
        assert!(!soft_element_candidate(&decode(&[0xf3, 0xae])));
        assert!(!soft_element_candidate(&decode(&[0x64, 0xac])));
        assert!(!soft_element_candidate(&decode(&[0x64, 0xd7])));
    }

    #[test]
    fn adaptive_rep_lods_scas_and_cmps_go_through_the_software_tlb_element_by_element() {
        // rep lodsb; repe cmpsb; repne scasd; repe scasw
        let forms: [(&[u8], &str, &[&str]); 4] = [
            (&[0xf3, 0xac], "rep lodsb", &["mov al,[r12+r11]"]),
            (&[0xf3, 0xa6], "repe cmpsb", &["cmp r9b,[r12+r11]", "jne"]),
            (&[0xf2, 0xaf], "repne scasd", &["cmp eax,[r12+r11]", "je"]),
            (
                &[0x66, 0xf3, 0xaf],
                "repe scasw",
                &["cmp ax,[r12+r11]", "jne"],
            ),
        ];
        for (code, what, wants) in forms {
            let i = decode(code);
            assert!(soft_string_candidate(&i), "{what}: not a candidate");
            assert!(!soft_element_candidate(&i), "{what}");
            let wants: Vec<&str> = wants.iter().copied().chain(["lea ecx,[rcx-1]"]).collect();
            let (unit, text) = soft_form_unit(code, what, false, &wants, |t, w| t.starts_with(w));
            assert!(
                window_accesses(&unit).is_empty(),
                "{what}: a window access left: {text:#?}"
            );
            // Each element: the poll and the ECX test, then its probes
            // before ECX, ESI or EDI moves; a loop back to the poll.
            let insns = host_insns(&unit);
            let poll = insns
                .iter()
                .position(|h| h.is_ip_rel_memory_operand())
                .expect("a poll");
            let count = insns
                .iter()
                .position(|h| h.code() == Code::Lea_r32_m && h.op0_register() == Register::ECX)
                .unwrap();
            let moves = insns
                .iter()
                .position(|h| {
                    h.code() == Code::Lea_r32_m
                        && matches!(h.op0_register(), Register::ESI | Register::EDI)
                })
                .unwrap();
            // The probe's frame load, `mov r12, [r15 + r12*8 + frames]`.
            let last_probe = insns
                .iter()
                .rposition(|h| {
                    h.code() == Code::Mov_r64_rm64
                        && h.op0_register() == Register::R12
                        && h.memory_base() == Register::R15
                })
                .unwrap();
            assert!(
                poll < last_probe && last_probe < moves && moves < count,
                "{what}: {text:#?}"
            );
            let back = insns[count..].iter().any(|h| {
                h.code() == Code::Jmp_rel32_64 && h.near_branch_target() == insns[poll].ip()
                    || h.code() == Code::Jmp_rel8_64 && h.near_branch_target() == insns[poll].ip()
            });
            assert!(back, "{what}: no loop: {text:#?}");
        }
    }

    #[test]
    fn a_short_adaptive_rep_copy_within_one_page_runs_natively_before_any_flag_is_saved() {
        // rep movsd; rep stosb: a native `rep` between the two probes'
        // host pointers comes first, with no POPFQ on its path (the chunk
        // loop's flag save costs more than a copy of a few bytes); the
        // chunk loop follows for everything else.
        for (code, what, string) in [
            (&[0xf3, 0xa5][..], "rep movsd", Code::Movsd_m32_m32),
            (&[0xf3, 0xaa][..], "rep stosb", Code::Stosb_m8_AL),
        ] {
            let wants = ["pext r9,r9,r10", "movzx ecx,cx"];
            let (unit, text) = soft_form_unit(code, what, false, &wants, |t, w| t == w);
            assert!(
                window_accesses(&unit).is_empty(),
                "{what}: a window access left: {text:#?}"
            );
            let insns = host_insns(&unit);
            let reps: Vec<usize> = (0..insns.len())
                .filter(|&k| insns[k].code() == string && insns[k].has_rep_prefix())
                .collect();
            // The fast copy, the chunk, the window form (DF set).
            assert_eq!(reps.len(), 3, "{what}: {text:#?}");
            let first_popf = insns.iter().position(|h| h.code() == Code::Popfq).unwrap();
            assert!(reps[0] < first_popf, "{what}: {text:#?}");
            let bounded = insns[reps[0] - 1];
            assert_eq!(bounded.code(), Code::Movzx_r32_rm16, "{what}: {text:#?}");
        }
    }

    #[test]
    fn a_soft_tlb_miss_exits_with_the_access_and_the_instruction() {
        // mov [ebx], ax: a 2-byte write.
        let code = [0x66, 0x89, 0x03];
        let unit = translate_with(
            &code,
            Setup {
                soft_access: &[0x1000],
                ..Setup::default()
            },
        );
        let insns = host_insns(&unit);
        let stored = |field: i32| {
            insns.iter().find_map(|i| {
                (i.code() == Code::Mov_rm32_imm32
                    && i.memory_base() == Register::R14
                    && i.memory_displacement64() as i64 == i64::from(field))
                .then(|| i.immediate32())
            })
        };
        assert_eq!(
            stored(off::SOFT_ACCESS),
            Some(2 | crate::state::SOFT_ACCESS_WRITE)
        );
        assert_eq!(stored(off::EIP), Some(0x1000));
        assert_eq!(stored(off::EXIT_REASON), Some(ExitReason::SoftMiss as u32));
    }

    #[test]
    fn accesses_beyond_the_operand_or_none_are_not_software_tlb_candidates() {
        let decode = |bytes: &[u8]| Decoder::new(32, bytes, DecoderOptions::NONE).decode();
        // bts [ebx], eax: a register bit offset.
        assert!(!soft_access_candidate(&decode(&[0x0f, 0xab, 0x03])));
        // bts dword [ebx], 5: an immediate one.
        assert!(soft_access_candidate(&decode(&[0x0f, 0xba, 0x2b, 0x05])));
        // prefetcht0 [ebx] accesses nothing.
        assert!(!soft_access_candidate(&decode(&[0x0f, 0x18, 0x0b])));
        // mov eax, [ebx+8]
        assert!(soft_access_candidate(&decode(&[0x8b, 0x43, 0x08])));
    }

    #[test]
    fn strings_with_a_segment_override_and_wide_accesses_ignore_the_software_tlb() {
        // lodsd fs:[esi] (a string with an FS override); xsave [eax] (an
        // area whose size depends on XCR0)
        let code = [0x64, 0xad, 0x0f, 0xae, 0x20];
        assert!(!soft_access_candidate(&decode(&code[2..])));
        let unit = translate_with(
            &code,
            Setup {
                soft_access: &[0x1000, 0x1002],
                ..Setup::default()
            },
        );
        assert!(!host_insns(&unit)
            .iter()
            .any(|i| i.memory_base() == Register::R12 && i.memory_index() == Register::R11));
    }

    #[test]
    fn adaptive_fxsave_and_fxrstor_probe_their_512_bytes_as_one_access() {
        // fxsave [eax]; fxrstor [ebx+10h]: one probe of the whole area
        // (its last byte's page must be the first's), then the native
        // instruction on `[r12 + r11]`.
        let forms: [(&[u8], &str, &str); 2] = [
            (&[0x0f, 0xae, 0x00], "fxsave [eax]", "fxsave [r12+r11]"),
            (
                &[0x0f, 0xae, 0x4b, 0x10],
                "fxrstor [ebx+10h]",
                "fxrstor [r12+r11]",
            ),
        ];
        for (code, what, want) in forms {
            let i = decode(code);
            assert!(soft_access_candidate(&i) && wide_soft_access(&i), "{what}");
            let unit = translate_with(
                code,
                Setup {
                    soft_access: &[0x1000],
                    max_insns: 1,
                    isa: Some(GuestIsa::with(GuestIsa::TRANSLATABLE).expect("offerable")),
                    ..Setup::default()
                },
            );
            let text = host_text(&unit);
            assert!(text.iter().any(|t| t == want), "{what}: {text:#?}");
            assert_eq!(unit.soft_eips, vec![0x1000], "{what}");
            assert!(
                text.iter().any(|t| t == "lea r11d,[r10+1FFh]"),
                "{what}: the probe does not cover 512 bytes: {text:#?}"
            );
            assert!(
                window_accesses(&unit).is_empty(),
                "{what}: a window access left: {text:#?}"
            );
        }
    }

    /// Translates `code` (padded with NOPs) as if it stood at guest `eip`.
    fn unit_at(eip: u32, code: &[u8]) -> Unit {
        translate_with(
            code,
            Setup {
                eip,
                ..Setup::default()
            },
        )
    }

    /// Translates `code` at 0x1000 in `mode` with `ports` ignored.
    fn unit_with(code: &[u8], mode: Mode, ports: &PortSet) -> Unit {
        translate_with(
            code,
            Setup {
                mode,
                emulate_tokens_from: Some(7),
                ignored_ports: Some(ports),
                ..Setup::default()
            },
        )
    }

    /// `in al, 0x80; out 0x80, eax; in al, 0x60`.
    const PORT_IO: [u8; 6] = [0xe4, 0x80, 0xe7, 0x80, 0xe4, 0x60];

    fn port_0x80_to_0x83() -> PortSet {
        let mut ports = PortSet::default();
        (0x80..0x84).for_each(|p| ports.insert(p));
        ports
    }

    #[test]
    fn io_to_ignored_ports_runs_inline_at_cpl0_and_the_rest_exits_with_a_token() {
        let mode = Mode {
            flat: true,
            cpl0: true,
            ..Mode::default()
        };
        let u = unit_with(&PORT_IO, mode, &port_0x80_to_0x83());
        assert_eq!(u.inline_ports, vec![0x80, 0x80]);
        assert_eq!(u.emulated.len(), 1);
        assert_eq!(u.emulated[0].ip32(), 0x1004, "the IN from port 0x60 exits");
        let text = host_text(&u).join("\n");
        assert!(text.contains("mov al,0FFh"), "{text}");
        assert!(text.contains("[r14+"), "the exit stores its token:\n{text}");
    }

    #[test]
    fn io_to_ignored_ports_exits_outside_cpl0_and_with_io_breakpoints() {
        let user = Mode {
            flat: true,
            ..Mode::default()
        };
        let breakpoints = Mode {
            flat: true,
            cpl0: true,
            io_exits: true,
            ..Mode::default()
        };
        for mode in [user, breakpoints] {
            let u = unit_with(&PORT_IO, mode, &port_0x80_to_0x83());
            assert!(u.inline_ports.is_empty(), "{mode:?}");
            assert_eq!(u.emulated[0].ip32(), 0x1000, "{mode:?}");
        }
    }

    #[test]
    fn a_ring0_invlpg_hands_its_linear_address_over_and_outside_ring0_it_exits_to_be_raised() {
        let ring0 = Mode {
            flat: true,
            cpl0: true,
            ..Mode::default()
        };
        // invlpg [ebx+8]; nop
        let code = [0x0f, 0x01, 0x7b, 0x08, 0x90];
        let u = unit_with(&code, ring0, &PortSet::default());
        let text = host_text(&u);
        let addr = format!("mov [r14+{:X}h],r10d", off::SOFT_ADDR);
        let reason = format!("mov dword ptr [r14+{:X}h],0Ah", off::EXIT_REASON);
        assert_eq!(ExitReason::from_raw(10), Some(ExitReason::Invlpg));
        let next = format!("mov dword ptr [r14+{:X}h],1004h", off::EIP);
        assert!(text.contains(&"lea r10d,[rbx+8]".to_string()), "{text:#?}");
        for want in [&addr, &reason, &next] {
            assert!(text.contains(want), "{want} in {text:#?}");
        }
        assert!(u.emulated.is_empty());
        assert_eq!(u.guest_len, 4, "the unit ends after it");
        let limited = Mode {
            limited: 1 << Seg::Ds as u8,
            ..ring0
        };
        let user = Mode {
            flat: true,
            ..Mode::default()
        };
        for mode in [limited, user] {
            let u = unit_with(&code, mode, &PortSet::default());
            assert_eq!(u.emulated.len(), 1, "{mode:?}: the monitor carries it out");
        }
    }

    #[test]
    fn wide_io_is_inline_only_when_every_port_is_ignored() {
        let mode = Mode {
            flat: true,
            cpl0: true,
            ..Mode::default()
        };
        // in eax, 0x82: ports 0x82-0x85, of which 0x84 and 0x85 are claimed.
        let u = unit_with(&[0xe5, 0x82], mode, &port_0x80_to_0x83());
        assert!(u.inline_ports.is_empty());
        assert_eq!(u.emulated[0].ip32(), 0x1000);
    }

    /// DS (bit 3) limited: the explicit operand through DS is checked,
    /// the one through a flat ES is not.
    #[test]
    fn accesses_through_a_limited_segment_are_checked_and_others_are_not() {
        let mode = Mode {
            flat: true,
            cpl0: true,
            limited: 1 << Seg::Ds as u8,
            ..Mode::default()
        };
        // mov eax,[ebx]; mov eax,es:[ebx]
        let u = unit_with(&[0x8b, 0x03, 0x26, 0x8b, 0x03], mode, &PortSet::default());
        let text = host_text(&u);
        let ds_range = format!("cmp r10,[r14+{:X}h]", off::SEG_RANGES + 32 * Seg::Ds as i32);
        assert_eq!(
            text.iter()
                .filter(|t| t.starts_with("cmp r10,[r14+"))
                .count(),
            1,
            "{text:#?}"
        );
        assert!(text.contains(&ds_range), "{text:#?}");
        assert!(text.contains(&"lea r11,[r10+3]".to_string()), "{text:#?}");
        assert!(
            text.iter().any(|t| t == "mov eax,[r15+rbx]"),
            "ES is flat: {text:#?}"
        );
    }

    #[test]
    fn a_write_is_checked_against_the_write_range() {
        let mode = Mode {
            flat: true,
            cpl0: true,
            limited: 1 << Seg::Ds as u8,
            ..Mode::default()
        };
        // inc dword [ebx]
        let u = unit_with(&[0xff, 0x03], mode, &PortSet::default());
        let write_range = format!(
            "cmp r10,[r14+{:X}h]",
            off::SEG_RANGES + 32 * Seg::Ds as i32 + 16
        );
        assert!(host_text(&u).contains(&write_range), "{:#?}", host_text(&u));
    }

    #[test]
    fn stack_and_string_instructions_exit_when_their_segments_are_limited() {
        let ss = Mode {
            flat: true,
            cpl0: true,
            limited: 1 << Seg::Ss as u8,
            ..Mode::default()
        };
        let es = Mode {
            limited: 1 << Seg::Es as u8,
            ..ss
        };
        // push eax
        let u = unit_with(&[0x50], ss, &PortSet::default());
        assert_eq!(u.emulated[0].mnemonic(), Mnemonic::Push);
        // stosb
        let u = unit_with(&[0xaa], es, &PortSet::default());
        assert_eq!(u.emulated[0].mnemonic(), Mnemonic::Stosb);
        // push eax with only ES limited runs inline.
        let u = unit_with(&[0x50], es, &PortSet::default());
        assert!(u.emulated.is_empty());
    }

    #[test]
    fn a_one_instruction_unit_exits_at_an_indirect_branch_without_probing() {
        let ret = translate_with(
            &[0xc3],
            Setup {
                max_insns: 1,
                emulate_tokens_from: None,
                ..Setup::default()
            },
        );
        let text = host_text(&ret);
        assert!(!text.iter().any(|t| t.starts_with("jrcxz")), "{text:#?}");
        assert!(!text.iter().any(|t| t.contains("[r12+r11*8")), "{text:#?}");
    }

    #[test]
    fn division_tests_for_a_zero_divisor_with_jrcxz_before_dividing() {
        let u = unit(&[0xf7, 0xf3, 0xc3]); // div ebx; ret
        let text = host_text(&u);
        let at = |s: &str| text.iter().position(|t| t == s);
        let (Some(save), Some(load), Some(div)) =
            (at("mov r13,rcx"), at("mov ecx,ebx"), at("div ebx"))
        else {
            panic!("{text:#?}");
        };
        assert!(save < load && load < div, "{text:#?}");
        assert!(
            text[load + 1].starts_with("jrcxz"),
            "the test touches no flags: {text:#?}"
        );
        let raise = format!("mov dword ptr [r14+{:X}h],0", off::RAISE_VECTOR);
        assert!(
            text.contains(&raise),
            "#DE is raised by a Raise exit: {text:#?}"
        );
    }

    const TO_RING0: InlineTransition = InlineTransition {
        eip: 0xc010_0000,
        esp: 0xc000_8000,
        selectors: [0x10, 0x18],
        ranges: [[0, 0xffff_ffff, 1, 0], [0, 0xffff_ffff, 0, 0xffff_ffff]],
        mode: 0x203,
        tag: 5,
        view: 0,
    };

    fn unit_with_transitions(code: &[u8], mode: Mode, transitions: Option<Transitions>) -> Unit {
        translate_with(
            code,
            Setup {
                mode,
                transitions,
                ..Setup::default()
            },
        )
    }

    #[test]
    fn offered_sysenter_runs_inline_and_chains_into_the_ring0_mode() {
        let user = Mode {
            flat: true,
            ..Mode::default()
        };
        let offered = Transitions {
            sysenter: Some(TO_RING0),
            sysexit: None,
        };
        let u = unit_with_transitions(&[0x0f, 0x34], user, Some(offered));
        assert!(u.emulated.is_empty());
        assert_eq!(u.sites.len(), 1, "one chainable exit to IA32_SYSENTER_EIP");
        let text = host_text(&u);
        assert!(
            text.contains(&"mov r8d,0C0008000h".to_string()),
            "{text:#?}"
        );
        let chain_mode = format!("mov dword ptr [r14+{:X}h],203h", off::CHAIN_MODE);
        assert!(text.contains(&chain_mode), "{text:#?}");
        let transition = format!(
            "mov dword ptr [r14+{:X}h],{}",
            off::TRANSITION,
            crate::state::TRANSITION_SYSENTER
        );
        assert!(text.contains(&transition), "{text:#?}");
        // Without the offer it is the monitor's.
        let u = unit_with_transitions(&[0x0f, 0x34], user, None);
        assert_eq!(u.emulated[0].code(), Code::Sysenter);
    }

    #[test]
    fn offered_sysexit_runs_inline_only_in_ring0_code() {
        let offered = Transitions {
            sysenter: None,
            sysexit: Some(InlineTransition { tag: 9, ..TO_RING0 }),
        };
        let ring0 = Mode {
            flat: true,
            cpl0: true,
            ..Mode::default()
        };
        let u = unit_with_transitions(&[0x0f, 0x35], ring0, Some(offered));
        assert!(u.emulated.is_empty());
        let text = host_text(&u);
        assert!(text.contains(&"mov r9d,edx".to_string()), "{text:#?}");
        // The target is looked up in the ring-3 mode's table.
        let table = format!("mov rcx,[r12+r11*8+{:X}h]", 9 * crate::ibtc::TABLE_BYTES);
        assert!(text.contains(&table), "{text:#?}");
        let ring3 = Mode {
            cpl0: false,
            ..ring0
        };
        let u = unit_with_transitions(&[0x0f, 0x35], ring3, Some(offered));
        assert_eq!(u.emulated[0].code(), Code::Sysexitd);
    }

    fn ring3_flat() -> Mode {
        Mode {
            flat: true,
            ..Mode::default()
        }
    }

    fn int80_offer(software: bool) -> InlineEvent {
        InlineEvent::Int(InlineInt {
            vector: if software { 0x80 } else { 13 },
            software,
            error_code: (!software).then_some(0),
            return_eip: 0x1002,
            checks: vec![ReadCheck {
                lin: 0x5400,
                size: 8,
                value: 0x00c0_ee00_0008_1234,
            }],
            esp0_at: Some(0x6004),
            clears_if: true,
            to: TO_RING0,
            tables_gen: 7,
            record: crate::state::TRANSITION_EVENT_FIRST,
            supervisor_view: 0,
        })
    }

    #[test]
    fn offered_int_runs_inline_with_every_fault_redone_by_the_monitor() {
        let offer = int80_offer(true);
        let u = translate_with(
            &[0xcd, 0x80],
            Setup {
                mode: ring3_flat(),
                event: Some(&offer),
                ..Setup::default()
            },
        );
        let text = host_text(&u);
        let supervisor = format!("mov r15,[r14+{:X}h]", off::VIEW_BASES);
        assert!(text.contains(&supervisor), "{text:#?}");
        assert!(
            text.contains(&"mov r10d,6004h".to_string()),
            "ESP0 read live"
        );
        let gen = format!("cmp dword ptr [r14+{:X}h],7", off::TABLES_GEN);
        assert!(text.contains(&gen), "{text:#?}");
        assert!(
            text.contains(&"mov dword ptr [r15+r10-14h],1002h".to_string()),
            "{text:#?}"
        );
        assert_eq!(u.sites.len(), 1, "a chainable jump to the handler");
        assert_eq!(u.fixups, vec![fixup::REDO_IN_MONITOR]);
        assert_eq!(u.emulated[0].code(), Code::Int_imm8, "the fallback");
        // Another vector is not the one offered.
        let u = translate_with(
            &[0xcd, 0x81],
            Setup {
                mode: ring3_flat(),
                event: Some(&offer),
                ..Setup::default()
            },
        );
        assert_eq!(u.fixups, vec![fixup::NONE]);
    }

    #[test]
    fn an_inline_event_or_sysenter_polls_before_anything_else() {
        // Its chained jump to the handler may close a cycle of units, and
        // its privilege change empties the return-prediction stack.
        for (code, offer) in [
            (&[0xcd, 0x80][..], int80_offer(true)),
            (&[0xf4][..], int80_offer(false)),
        ] {
            let u = translate_with(
                code,
                Setup {
                    mode: ring3_flat(),
                    event: Some(&offer),
                    ..Setup::default()
                },
            );
            let text = host_text(&u);
            assert!(
                text[0].starts_with("mov r9d,[") && text[0].ends_with("h]"),
                "{text:#?}"
            );
        }
        let offered = Transitions {
            sysenter: Some(TO_RING0),
            sysexit: None,
        };
        let u = unit_with_transitions(&[0x0f, 0x34], ring3_flat(), Some(offered));
        let text = host_text(&u);
        assert!(text[0].starts_with("mov r9d,["), "{text:#?}");
    }

    #[test]
    fn offered_gp_delivery_replaces_hlt_only_outside_ring0() {
        let offer = int80_offer(false);
        let user = translate_with(
            &[0xf4],
            Setup {
                mode: ring3_flat(),
                event: Some(&offer),
                ..Setup::default()
            },
        );
        let text = host_text(&user);
        assert!(
            text.contains(&"mov dword ptr [r15+r10-18h],0".to_string()),
            "error code pushed: {text:#?}"
        );
        assert!(
            text.contains(&"mov dword ptr [r15+r10-14h],1000h".to_string()),
            "the faulting EIP is pushed: {text:#?}"
        );
        let ring0 = translate_with(
            &[0xf4],
            Setup {
                event: Some(&offer),
                ..Setup::default()
            },
        );
        assert_eq!(ring0.fixups, vec![fixup::NONE], "HLT at CPL 0 halts");
    }

    #[test]
    fn split_events_start_a_unit_at_each_int_and_iret() {
        let split = |code: &[u8], mode: Mode| {
            translate_with(
                code,
                Setup {
                    mode,
                    split_events: true,
                    paged: None,
                    ..Setup::default()
                },
            )
        };
        let u = split(&[0x90, 0xcd, 0x80], ring3_flat());
        assert_eq!(u.insns.len(), 1, "ends before INT");
        assert_eq!(u.guest_len, 1);
        let u = split(&[0x90, 0xcf], Setup::default().mode);
        assert_eq!(u.insns.len(), 1, "ends before IRETD");
        let u = split(&[0x90, 0xf4], ring3_flat());
        assert_eq!(u.insns.len(), 1, "ends before HLT outside ring 0");
        let u = split(&[0xcd, 0x80], ring3_flat());
        assert_eq!(u.insns.len(), 1, "INT first: translated");
    }

    #[test]
    fn offered_iret_picks_its_target_by_the_popped_cs() {
        let target = |cs: u16, ss: u16, tag: u32| IretTarget {
            selectors: [cs, ss],
            to: InlineTransition { tag, ..TO_RING0 },
            record: crate::state::TRANSITION_EVENT_FIRST,
        };
        let offer = InlineEvent::Iret(InlineIret {
            checks: vec![],
            outer: Some(target(0x1b, 0x23, 3)),
            same: Some(target(0x08, 0x10, 4)),
            tables_gen: 1,
        });
        let u = translate_with(
            &[0xcf],
            Setup {
                event: Some(&offer),
                ..Setup::default()
            },
        );
        let text = host_text(&u);
        let cs = |sel: &str| format!("cmp word ptr [r14+{:X}h],{sel}", off::SPILL + 40);
        assert!(
            text.contains(&cs("1Bh")) && text.contains(&cs("8")),
            "{text:#?}"
        );
        assert!(text.contains(&"cmp r13w,23h".to_string()), "{text:#?}");
        for tag in [3, 4] {
            let table = format!("mov rcx,[r12+r11*8+{:X}h]", tag * crate::ibtc::TABLE_BYTES);
            assert!(text.contains(&table), "looked up in tag {tag}: {text:#?}");
        }
        assert_eq!(u.fixups, vec![fixup::REDO_IN_MONITOR]);
        // Outside ring 0 IRET is never inline.
        let u = translate_with(
            &[0xcf],
            Setup {
                mode: ring3_flat(),
                event: Some(&offer),
                ..Setup::default()
            },
        );
        assert_eq!(u.fixups, vec![fixup::NONE]);
    }

    fn host_text(u: &Unit) -> Vec<String> {
        use iced_x86::Formatter;
        let mut f = iced_x86::IntelFormatter::new();
        Decoder::with_ip(64, &u.code, 0x20_0000, DecoderOptions::NONE)
            .into_iter()
            .map(|i| {
                let mut t = String::new();
                f.format(&i, &mut t);
                t
            })
            .collect()
    }

    #[test]
    fn folded_displacements_become_host_addressing_except_where_they_would_wrap() {
        let code = [
            0x89, 0x55, 0xd4, // 0x1000 mov [ebp-0x2c],edx
            0x8b, 0x83, 0x00, 0x00, 0x00, 0xc1, // 0x1003 mov eax,[ebx+0xc1000000]
            0x8b, 0x05, 0x00, 0xa0, 0x04, 0x08, // 0x1009 mov eax,[0x0804a000]
            0x53, // 0x100f push ebx
            0x5e, // 0x1010 pop esi
        ];
        let folded = host_text(&translate_with(
            &code,
            Setup {
                fold_displacements: true,
                ..Setup::default()
            },
        ));
        let has = |text: &[String], want: &str| text.iter().any(|t| t == want);
        assert!(has(&folded, "mov [r15+rbp-2Ch],edx"), "{folded:#?}");
        // A kernel address as displacement keeps the lea (it would wrap).
        assert!(has(&folded, "lea r10d,[rbx-3F000000h]"), "{folded:#?}");
        assert!(has(&folded, "mov eax,[r15+804A000h]"), "{folded:#?}");
        assert!(has(&folded, "mov [r15+r8-4],ebx"), "{folded:#?}");
        // The pop reads where the push stored: ESP is back where it was,
        // so R8 is never updated.
        assert!(has(&folded, "mov esi,[r15+r8-4]"), "{folded:#?}");
        assert!(
            !folded.iter().any(|t| t.starts_with("lea r8d")),
            "{folded:#?}"
        );
        let unfolded = host_text(&translate_with(
            &code,
            Setup {
                fold_displacements: true,
                unfolded: &[0x1000, 0x100f],
                ..Setup::default()
            },
        ));
        assert!(has(&unfolded, "lea r10d,[rbp-2Ch]"), "{unfolded:#?}");
        assert!(!has(&unfolded, "mov [r15+r8-4],ebx"), "{unfolded:#?}");
        assert!(has(&unfolded, "mov eax,[r15+804A000h]"), "{unfolded:#?}");
        let plain = host_text(&translate_with(&code, Setup::default()));
        assert!(!plain.iter().any(|t| t.contains("r15+rbp-")), "{plain:#?}");
    }

    #[test]
    fn a_scaled_index_with_a_displacement_below_2_gib_folds_with_its_scale() {
        let code = [
            0x8b, 0x0c, 0xb5, 0x20, 0x1f, 0x10, 0x00, // mov ecx,[esi*4+0x101f20]
            0x89, 0x04, 0xcd, 0x00, 0x00, 0x00, 0xc1, // mov [ecx*8+0xc1000000],eax
            0x8b, 0x04, 0x8b, // mov eax,[ebx+ecx*4]
            0x0f, 0xa3, 0x04, 0x8d, 0x00, 0x10, 0x00, 0x00, // bt [ecx*4+0x1000],eax
        ];
        let folded = host_text(&translate_with(
            &code,
            Setup {
                fold_displacements: true,
                ..Setup::default()
            },
        ));
        let has = |want: &str| folded.iter().any(|t| t == want);
        assert!(has("mov ecx,[r15+rsi*4+101F20h]"), "{folded:#?}");
        // A kernel address keeps the lea; so does a base with the index,
        // and a BT with a register bit offset.
        assert!(has("lea r10d,[rcx*8-3F000000h]"), "{folded:#?}");
        assert!(has("lea r10d,[rbx+rcx*4]"), "{folded:#?}");
        assert!(has("lea r10d,[rcx*4+1000h]"), "{folded:#?}");
        let unfolded = host_text(&translate_with(
            &code,
            Setup {
                fold_displacements: true,
                unfolded: &[0x1000],
                ..Setup::default()
            },
        ));
        assert!(
            unfolded.iter().any(|t| t == "lea r10d,[rsi*4+101F20h]"),
            "{unfolded:#?}"
        );
    }

    #[test]
    fn a_run_of_pushes_and_pops_updates_esp_once_and_lists_its_lags() {
        let code = [
            0x53, // push ebx
            0x56, // push esi
            0x8b, 0x44, 0x24, 0x08, // mov eax,[esp+8]
            0x8d, 0x4c, 0x24, 0x04, // lea ecx,[esp+4]
            0x5f, // pop edi
            0x5d, // pop ebp
            0xc3, // ret
        ];
        let folded = || Setup {
            fold_displacements: true,
            ..Setup::default()
        };
        let u = translate_with(&code, folded());
        let text = host_text(&u);
        let body: Vec<&str> = text.iter().map(String::as_str).take(8).collect();
        assert_eq!(
            body,
            [
                "mov [r15+r8-4],ebx",
                "mov [r15+r8-8],esi",
                "mov eax,[r15+r8]",
                "lea ecx,[r8-4]",
                "mov edi,[r15+r8-8]",
                "mov ebp,[r15+r8-4]",
                "mov r9d,[r15+r8]",
                "lea r8d,[r8+4]",
            ],
            "{text:#?}"
        );
        assert_eq!(u.stack_lags, [(1, -4), (2, -8), (3, -8), (4, -8), (5, -4)]);
        // An instruction that uses ESP otherwise gets it in R8 first.
        let u = translate_with(&[0x53, 0x89, 0xec, 0xc3], folded()); // push ebx; mov esp,ebp; ret
        let text = host_text(&u);
        assert_eq!(
            text[..3],
            ["mov [r15+r8-4],ebx", "lea r8d,[r8-4]", "mov r8d,ebp"],
            "{text:#?}"
        );
        assert!(u.stack_lags.is_empty());
        // Without folding, every push and pop updates R8 itself.
        let u = translate_with(&code, Setup::default());
        assert!(u.stack_lags.is_empty());
    }

    #[test]
    fn an_indirect_call_folds_the_lag_of_the_pushes_before_it() {
        let folded = || Setup {
            fold_displacements: true,
            return_stack: true,
            ..Setup::default()
        };
        // push eax; call edx / push eax; call [ecx+8]: one ESP update, after
        // the return address, with the call's lag listed for a fault.
        for call in [&[0xff, 0xd2][..], &[0xff, 0x51, 0x08][..]] {
            let code = [&[0x50][..], call].concat();
            let u = translate_with(&code, folded());
            let text = host_text(&u);
            let updates: Vec<&String> = text.iter().filter(|t| t.starts_with("lea r8d,")).collect();
            assert_eq!(updates, ["lea r8d,[r8-8]"], "{text:#?}");
            let ret = format!("mov dword ptr [r15+r8-8],{:X}h", 0x1000 + code.len());
            assert!(text.contains(&ret), "{text:#?}");
            assert_eq!(u.stack_lags, [(1, -4)]);
        }
        // An ESP-based target keeps the update before the call.
        let u = translate_with(&[0x50, 0xff, 0x54, 0x24, 0x04], folded()); // push eax; call [esp+4]
        let text = host_text(&u);
        assert!(text.iter().any(|t| t == "lea r8d,[r8-4]"), "{text:#?}");
    }

    #[test]
    fn a_segment_base_joins_a_folded_displacement() {
        // mov eax,gs:[0x14]; mov edx,fs:[ecx+8]; ret
        let code = [0x65, 0xa1, 0x14, 0, 0, 0, 0x64, 0x8b, 0x51, 0x08, 0xc3];
        let folded = host_text(&translate_with(
            &code,
            Setup {
                fold_displacements: true,
                ..Setup::default()
            },
        ));
        // The GS and FS bases in the state block.
        let want = [
            "mov r11d,[r14+0C4h]",
            "mov eax,[r15+r11+14h]",
            "mov r11d,[r14+0C0h]",
            "lea r10d,[r11+rcx]",
            "mov edx,[r15+r10+8]",
        ];
        assert_eq!(folded[..5], want, "{folded:#?}");
        let plain = host_text(&translate_with(&code, Setup::default()));
        assert!(plain.iter().any(|t| t == "mov r10d,14h"), "{plain:#?}");
    }

    #[test]
    fn conditional_branch_ends_unit_with_two_chainable_sites() {
        let u = unit(&[0x31, 0xc0, 0x74, 0x10]); // xor eax,eax; je +0x10
        assert_eq!(u.insns.len(), 2);
        assert_eq!(u.sites.len(), 2, "taken and fall-through exits");
        assert_eq!(u.guest_len, 4);
    }

    #[test]
    fn memory_operand_goes_through_the_window_with_32bit_wrap() {
        let u = unit(&[0x8b, 0x44, 0x8b, 0xfc, 0xc3]); // mov eax,[ebx+ecx*4-4]; ret
        let text = host_text(&u);
        assert!(
            text.iter().any(|t| t == "lea r10d,[rbx+rcx*4-4]"),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t == "mov eax,[r15+r10]"), "{text:?}");
    }

    #[test]
    fn reading_a_segment_register_loads_the_selector_mirror_inline() {
        // mov eax,ss; mov dx,fs; mov ebp,ds; ret
        let u = unit(&[0x8c, 0xd0, 0x66, 0x8c, 0xe2, 0x8c, 0xdd, 0xc3]);
        let text = host_text(&u);
        let sel = |s: Seg| {
            // As iced-x86 writes hex: a leading 0 before a letter.
            let hex = format!("{:X}", off::SEG_SEL + 2 * s as i32);
            let pad = if hex.starts_with(|c: char| c.is_ascii_alphabetic()) {
                "0"
            } else {
                ""
            };
            format!("[r14+{pad}{hex}h]")
        };
        assert!(
            text.contains(&format!("movzx eax,word ptr {}", sel(Seg::Ss))),
            "{text:?}"
        );
        assert!(
            text.contains(&format!("mov dx,{}", sel(Seg::Fs))),
            "{text:?}"
        );
        assert!(
            text.contains(&format!("movzx ebp,word ptr {}", sel(Seg::Ds))),
            "{text:?}"
        );
        assert!(u.emulated.is_empty(), "no exit to the monitor");
    }

    #[test]
    fn guest_esp_lives_in_r8() {
        let u = unit(&[0x89, 0xe0, 0xc3]); // mov eax,esp; ret
        assert!(host_text(&u).iter().any(|t| t == "mov eax,r8d"));
    }

    #[test]
    fn high_byte_register_with_memory_records_a_swap_fixup() {
        let u = unit(&[0x02, 0x23, 0xc3]); // add ah,[ebx]; ret
        assert_eq!(
            u.fixups[0],
            fixup::SWAP_BASE,
            "AL/AH of EAX are exchanged around the access"
        );
        assert_eq!(fixup::swapped(u.fixups[0]), Some(0));
        let text = host_text(&u);
        assert!(text.iter().any(|t| t == "add al,[r15+r10]"), "{text:?}");
    }

    #[test]
    fn privileged_instruction_exits_to_the_monitor_at_its_eip() {
        let u = unit(&[0x90, 0x0f, 0xa2]); // nop; cpuid
        assert_eq!(u.insns.len(), 2);
        assert!(u.sites.is_empty());
        assert!(host_text(&u)
            .iter()
            .any(|t| t == "mov dword ptr [r14+20h],1001h"));
    }

    fn polls(u: &Unit) -> usize {
        host_text(u)
            .iter()
            .filter(|t| t.starts_with("mov r9d,["))
            .count()
    }

    #[test]
    fn a_predicted_jump_through_a_constant_slot_compares_then_chains_to_the_prediction() {
        // jmp [0x3000] at 0x1000
        let code = [0xff, 0x25, 0x00, 0x30, 0x00, 0x00];
        let plain = translate_with(&code, Setup::default());
        let (forward, backward) = ([(0x1000u32, 0x2000u32)], [(0x1000u32, 0x1000u32)]);
        let with = |predictions| Setup {
            jump_predictions: predictions,
            ..Setup::default()
        };
        let predicted = translate_with(&code, with(&forward));
        let text = host_text(&predicted);
        assert!(text.iter().any(|t| t == "lea ecx,[r9-2000h]"), "{text:#?}");
        // One chainable site more (to the prediction); the table probe
        // stays for every other target.
        assert_eq!(predicted.sites.len(), plain.sites.len() + 1);
        assert!(text.iter().any(|t| t.contains("[r12+r11*8")));
        // Forward: no poll; at or below the unit's start: a poll on the
        // predicted path, as for any direct branch that can close a cycle
        // (`polls` also counts the load of the target into R9D).
        assert_eq!(polls(&predicted), polls(&plain));
        assert_eq!(
            polls(&translate_with(&code, with(&backward))),
            polls(&plain) + 1
        );
        // Not for a jump through a register-based address.
        let by_register = [0xff, 0x20]; // jmp [eax]
        let u = translate_with(&by_register, with(&forward));
        assert!(!host_text(&u).iter().any(|t| t == "lea ecx,[r9-2000h]"));
    }

    #[test]
    fn backward_direct_branches_poll_and_forward_ones_do_not() {
        // dec ecx; jnz -3 (a loop onto the unit's start)
        assert_eq!(polls(&unit(&[0x49, 0x75, 0xfd])), 1);
        // dec ecx; jnz +0x10
        assert_eq!(polls(&unit(&[0x49, 0x75, 0x10])), 0);
        // jmp eax: indirect branches are served by the table swap instead
        assert_eq!(polls(&unit(&[0xff, 0xe0])), 0);
    }

    #[test]
    fn a_backward_jcc_polls_before_the_instruction_setting_its_flags() {
        // dec ecx; jnz -3: the poll goes first, DEC and JNZ stay adjacent
        // (the host fuses them), and the pc map puts the poll in DEC's code.
        let u = unit(&[0x49, 0x75, 0xfd]);
        let text = host_text(&u);
        assert!(text[0].starts_with("mov r9d,["), "{text:?}");
        assert_eq!(text[1], "dec ecx");
        assert!(text[2].starts_with("jne "), "{text:?}");
        assert_eq!(polls(&u), 1);
        assert_eq!(u.pc_map[0], (0, 0x1000));
        // mov eax, 1; jnz -7: MOV sets no flags, the poll stays at the jump.
        let u = unit(&[0xb8, 1, 0, 0, 0, 0x75, 0xf9]);
        let text = host_text(&u);
        assert_eq!(text[0], "mov eax,1");
        assert!(text[1].starts_with("mov r9d,["), "{text:?}");
        assert_eq!(polls(&u), 1);
        // cmp eax, 1; jnz +0x10: a forward branch polls nowhere.
        assert_eq!(polls(&unit(&[0x83, 0xf8, 0x01, 0x75, 0x10])), 0);
    }

    #[test]
    fn reserved_nop_naming_esp_emits_nothing() {
        // 0f 1c a0 disp32: a reserved NOP whose reg field is ESP; re-encoded
        // with R8 it would decode as CLDEMOTE in 64-bit mode.
        let nop = unit(&[0x0f, 0x1c, 0xa0, 0, 0, 0, 0, 0xc3]);
        let ret = unit(&[0xc3]);
        assert_eq!(nop.insns.len(), 2);
        assert_eq!(nop.code.len(), ret.code.len());
    }

    #[test]
    fn opcode_82_is_translated_as_its_64bit_mode_equivalent_80() {
        // add byte [ebx],5 in the 82 encoding
        let u = unit(&[0x82, 0x03, 0x05, 0xc3]);
        let text = host_text(&u);
        assert!(
            text.iter().any(|t| t == "add byte ptr [r15+rbx],5"),
            "{text:?}"
        );
    }

    #[test]
    fn unit_stops_before_the_next_page() {
        let u = unit_at(0x1ff8, &[0x90; 0x10]);
        assert_eq!(u.insns.len(), 8);
        assert_eq!(
            u.sites.len(),
            1,
            "falls through to 0x2000 by a chainable exit"
        );
    }

    fn paged_unit(eip: u32, code: &[u8]) -> Unit {
        translate_with(
            code,
            Setup {
                eip,
                paged: Some(PagedCode { cs_base: 0 }),
                ..Setup::default()
            },
        )
    }

    #[test]
    fn with_paging_a_branch_to_another_page_probes_the_table_and_one_within_the_page_chains() {
        // jmp 0x3000 from 0x1000: another page.
        let far = paged_unit(0x1000, &[0xe9, 0xfb, 0x1f, 0x00, 0x00]);
        assert!(far.sites.is_empty(), "never chained");
        let text = host_text(&far).join("\n");
        // The probe reads the target's own entry (slot 0x3000, see
        // ibtc::plain_slot, of table 0): no index is computed.
        assert!(text.contains("mov ecx,[r12+30000h]"), "{text}");
        assert!(text.contains("jmp qword ptr [r12+30008h]"), "{text}");
        assert!(!text.contains("movzx r11d,r9w"), "{text}");
        // jmp 0x1800: the same page.
        let near = paged_unit(0x1000, &[0xe9, 0xfb, 0x07, 0x00, 0x00]);
        assert_eq!(near.sites.len(), 1);
        // Without paging every direct branch may be chained.
        let flat = unit(&[0xe9, 0xfb, 0x1f, 0x00, 0x00]);
        assert_eq!(flat.sites.len(), 1);
    }

    #[test]
    fn with_chain_tables_branches_to_other_pages_jump_or_call_through_their_slots() {
        // jne 0x3000; call 0x5000; jmp 0x1800 (same page), from 0x1000.
        let code = [
            0x0f, 0x85, 0xfa, 0x1f, 0x00, 0x00, // 0x1000 jne 0x3000
            0xe8, 0xf5, 0x3f, 0x00, 0x00, // 0x1006 call 0x5000
            0xe9, 0xea, 0x07, 0x00, 0x00, // 0x100b jmp 0x17fa
        ];
        let u = translate_with(
            &code,
            Setup {
                paged: Some(PagedCode { cs_base: 0 }),
                chain_slots_from: Some(7),
                return_stack: true,
                superblock_branches: 2,
                ..Setup::default()
            },
        );
        let targets: Vec<(u32, u32)> = u.chain_slots.iter().map(|c| (c.slot, c.target)).collect();
        // The call goes through its slot in place (taken first); the jne
        // reaches its slot's jump through a stub.
        assert_eq!(targets, vec![(7, 0x5000), (8, 0x3000)]);
        let text = host_text(&u).join("\n");
        let entry = |k: i64| shadowmmu::CHAIN_TABLE_OFFSET + 8 * k;
        assert!(
            text.contains(&format!("call qword ptr [r15-{:X}h]", -entry(7))),
            "{text}"
        );
        assert!(
            text.contains(&format!("jmp qword ptr [r15-{:X}h]", -entry(8))),
            "{text}"
        );
        assert!(!text.contains("[r12+"), "no table probe: {text}");
        // Each slot's stub exits with its number.
        for c in &u.chain_slots {
            let stub = host_insns(&u)
                .into_iter()
                .find(|i| i.ip() == 0x20_0000 + c.stub as u64)
                .expect("the stub starts an instruction");
            assert_eq!(stub.memory_displacement64(), off::EIP as u64, "{stub}");
        }
        assert_eq!(u.sites.len(), 1, "the same page's jump chains as before");
    }

    #[test]
    fn a_jump_table_jumps_through_its_own_host_entries_keyed_by_the_low_byte_of_the_index() {
        // jmp [ecx*4 + 0x3000] at 0x1000.
        let code = [0xff, 0x24, 0x8d, 0x00, 0x30, 0x00, 0x00];
        let tables = [JumpTable {
            eip: 0x1000,
            targets: vec![0x2000, 0x2010, 0xffff_ffff],
            slots: None,
        }];
        let u = translate_with_tables(&code, 7, &tables);
        // 256 branch slots from 7, then 256 key slots.
        assert_eq!(u.chain_slots.len(), 2 * JUMP_TABLE_ENTRIES);
        let (branches, keys) = u.chain_slots.split_at(JUMP_TABLE_ENTRIES);
        assert_eq!(
            (branches[0].slot, branches[0].target, branches[0].kind),
            (7, 0x2000, SlotKind::TableBranch)
        );
        assert_eq!(branches[2].target, 0xffff_ffff);
        assert!(branches.iter().all(|b| b.stub == branches[0].stub));
        assert_eq!(keys[0].slot, 7 + JUMP_TABLE_ENTRIES as u32);
        assert_eq!(
            keys[1].kind,
            SlotKind::TableKey(crate::ibtc::key_of(0x2010))
        );
        assert_eq!(
            keys[2].kind,
            SlotKind::TableKey(crate::ibtc::key_of(0xffff_ffff))
        );
        // Past the entries read: a key no target matches.
        assert_eq!(keys[3].kind, SlotKind::TableKey(0));
        let entry = |k: i64| shadowmmu::CHAIN_TABLE_OFFSET + 8 * k;
        let text = host_text(&u).join("\n");
        for line in [
            "movzx r11d,cl".to_string(),
            format!("mov rcx,[r15+r11*8-{:X}h]", -entry(7 + 256)),
            "lea rcx,[rcx+r9+1]".to_string(),
            format!("jmp qword ptr [r15+r11*8-{:X}h]", -entry(7)),
            // The shared stub: the slot of the entry taken.
            "lea r11d,[r11+7]".to_string(),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        // Polled (a cycle may close through it), and the table probe
        // stays for a target the keys do not hold.
        // Without chain tables, or without the table read ahead: the probe alone.
        let plain = translate_with_tables(&code, 7, &[]);
        assert_eq!(polls(&u), polls(&plain) + 1, "{text}");
        assert!(text.contains("mov r12,[r14+"), "{text}");
        assert!(plain.chain_slots.is_empty());
        let unchained = translate_with(
            &code,
            Setup {
                jump_tables: &tables,
                ..Setup::default()
            },
        );
        assert!(!host_text(&unchained).iter().any(|t| t.contains("r11*8-")));
    }

    #[test]
    fn a_jump_table_indexed_by_a_register_without_a_legacy_low_byte_uses_its_rex_form() {
        // jmp [esi*4 + 0x3000]
        let code = [0xff, 0x24, 0xb5, 0x00, 0x30, 0x00, 0x00];
        let tables = [JumpTable {
            eip: 0x1000,
            targets: vec![0x2000],
            slots: None,
        }];
        let u = translate_with_tables(&code, 0, &tables);
        assert!(host_text(&u).iter().any(|t| t == "movzx r11d,sil"));
    }

    #[test]
    fn a_position_independent_jump_table_jumps_through_host_entries_keyed_by_its_index() {
        // mov ecx,[ebx+eax*4-0x100]; add ecx,ebx; jmp ecx
        let code = [
            0x8b, 0x8c, 0x83, 0x00, 0xff, 0xff, 0xff, 0x01, 0xd9, 0xff, 0xe1,
        ];
        let tables = [JumpTable {
            eip: 0x1009,
            targets: vec![0x2000, 0x2010],
            slots: None,
        }];
        let u = translate_with_tables(&code, 0, &tables);
        let text = host_text(&u).join("\n");
        // The index is EAX's low byte, the target the rebased entry in ECX.
        assert!(text.contains("movzx r11d,al"), "{text}");
        assert!(text.contains("mov r9d,ecx"), "{text}");
        assert_eq!(u.chain_slots.len(), 2 * JUMP_TABLE_ENTRIES);
        // Only right after the load and the add of the same base.
        let plain = [0x01, 0xd9, 0xff, 0xe1]; // add ecx,ebx; jmp ecx
        let tables = [JumpTable {
            eip: 0x1002,
            targets: vec![0x2000],
            slots: None,
        }];
        let u = translate_with_tables(&plain, 0, &tables);
        assert!(u.chain_slots.is_empty());
    }

    #[test]
    fn an_indirect_call_with_a_cached_target_compares_then_calls_it_directly() {
        // call [eax+4]; nop, a flat unit with chain tables and returns predicted.
        let code = [0xff, 0x50, 0x04, 0x90];
        let setup = |predictions, learning| Setup {
            chain_slots_from: Some(0),
            return_stack: true,
            branch_predictions: predictions,
            learning_sites: learning,
            ..Setup::default()
        };
        let plain = translate_with(&code, setup(&[], &[]));
        assert_eq!(plain.uncached_sites, vec![0x1000]);
        let cached = translate_with(&code, setup(&[(0x1000, 0x5000)], &[]));
        assert!(cached.uncached_sites.is_empty());
        let text = host_text(&cached).join("\n");
        assert!(text.contains("lea ecx,[r9-5000h]"), "{text}");
        // A chained call (to a same-page target it is a direct call) for
        // the cached target, and its continuation; any other target exits
        // naming the site while the cache has room (it is learned).
        assert!(!text.contains("call qword ptr [r12+r11*8+"), "{text}");
        let site = format!("mov qword ptr [r14+{:X}h],1000h", off::EXIT_SITE);
        assert!(text.contains(&site), "{text}");
        assert_eq!(cached.sites.len(), plain.sites.len() + 1, "{text}");
        assert_eq!(text.matches("lea ecx,[r9-1003h]").count(), 1, "{text}");
        // A full cache: the table's call for any other target, and one
        // continuation after all the calls.
        let full: Vec<(u32, u32)> = (0..MAX_COMPARED_TARGETS as u32)
            .map(|k| (0x1000, 0x5000 + 0x100 * k))
            .collect();
        let text = host_text(&translate_with(&code, setup(&full, &[]))).join("\n");
        assert!(text.contains("call qword ptr [r12+r11*8+"), "{text}");
        assert_eq!(text.matches("lea ecx,[r9-1003h]").count(), 1, "{text}");
        // Being learned: it exits with the site named, every time.
        let learning = translate_with(&code, setup(&[], &[0x1000]));
        let text = host_text(&learning).join("\n");
        assert!(!text.contains("[r12+r11*8+"), "no table probe: {text}");
        let site = format!("mov qword ptr [r14+{:X}h],1000h", off::EXIT_SITE);
        assert!(text.contains(&site), "{text}");
        assert!(learning.uncached_sites.is_empty());
    }

    #[test]
    fn an_inline_cache_of_several_targets_compares_with_each_in_turn_and_of_more_probes_the_table()
    {
        // call [eax+4]; nop / jmp eax, flat, chain tables, returns predicted.
        let (call, jump) = ([0xff, 0x50, 0x04, 0x90], [0xff, 0xe0]);
        let setup = |predictions| Setup {
            chain_slots_from: Some(0),
            return_stack: true,
            branch_predictions: predictions,
            ..Setup::default()
        };
        let targets: Vec<(u32, u32)> = (0..=MAX_CACHED_TARGETS as u32)
            .map(|k| (0x1000, 0x5000 + 0x100 * k))
            .collect();
        for code in [&call[..], &jump[..]] {
            let plain = translate_with(code, setup(&[]));
            let two = translate_with(code, setup(&targets[..2]));
            let text = host_text(&two).join("\n");
            let first = text.find("lea ecx,[r9-5000h]").expect("first compare");
            let second = text.find("lea ecx,[r9-5100h]").expect("second compare");
            assert!(first < second, "in the order given: {text}");
            assert_eq!(two.sites.len(), plain.sites.len() + 2, "{text}");
            let compares = |predictions| {
                let text = host_text(&translate_with(code, setup(predictions))).join("\n");
                text.matches("lea ecx,[r9-5").count()
            };
            assert_eq!(
                compares(&targets[..MAX_COMPARED_TARGETS]),
                MAX_COMPARED_TARGETS
            );
            // No leaf among them to run in place: the table.
            assert_eq!(compares(&targets[..=MAX_COMPARED_TARGETS]), 0);
            assert_eq!(compares(&targets), 0, "past the most a cache holds");
        }
        // Every host call of the cached call returns to the one
        // continuation (its return-address check, once).
        let u = translate_with(&call, setup(&targets[..3]));
        let text = host_text(&u).join("\n");
        assert_eq!(text.matches("lea ecx,[r9-1003h]").count(), 1, "{text}");
    }

    #[test]
    fn an_indirect_jump_with_a_cached_target_chains_to_it_and_a_miss_names_its_site() {
        // jmp eax
        let code = [0xff, 0xe0];
        let setup = |predictions| Setup {
            chain_slots_from: Some(0),
            branch_predictions: predictions,
            ..Setup::default()
        };
        let cached = translate_with(&code, setup(&[(0x1000, 0x1800)]));
        let text = host_text(&cached).join("\n");
        assert!(text.contains("lea ecx,[r9-1800h]"), "{text}");
        assert_eq!(cached.sites.len(), 1, "{text}");
        let site = format!("mov qword ptr [r14+{:X}h],1000h", off::EXIT_SITE);
        assert!(
            text.contains(&site),
            "the table miss names the site: {text}"
        );
        // Without chain tables there is no cache, and a miss names no site.
        let unchained = translate_with(
            &code,
            Setup {
                chain_slots_from: None,
                ..setup(&[(0x1000, 0x1800)])
            },
        );
        let text = host_text(&unchained).join("\n");
        assert!(!text.contains("lea ecx,[r9-1800h]"), "{text}");
        assert!(
            text.contains(&format!(
                "mov qword ptr [r14+{:X}h],0FFFFFFFFFFFFFFFFh",
                off::EXIT_SITE
            )),
            "{text}"
        );
    }

    #[test]
    fn a_segment_load_offered_inline_compares_selector_and_descriptor_before_storing() {
        // mov fs, eax; mov ds, [ebx]; nop, in a flat ring-0 unit: FS has a
        // load of the unit's own mode and a null one (another mode), DS none.
        let code = [0x8e, 0xe0, 0x8e, 0x1b, 0x90];
        let same = InlineSegmentLoad {
            selector: 0xd8,
            descriptor: Some((0xc1c0_10d8, 0x00cf_9300_0000_ffff)),
            base: 0x1234_5000,
            ranges: [0, 0xffff_ffff, 0, 0xffff_ffff],
            mode: 3,
            tag: 0,
            any_base: false,
            blocks_iret: true,
        };
        let null = InlineSegmentLoad {
            selector: 0,
            descriptor: None,
            base: 0,
            ranges: [1, 0, 1, 0],
            mode: 3 | 1 << 13,
            tag: 2,
            any_base: false,
            blocks_iret: false,
        };
        let loads = [(Seg::Fs as u8, same), (Seg::Fs as u8, null)];
        let u = translate_with(
            &code,
            Setup {
                segment_loads: &loads,
                ..Setup::default()
            },
        );
        let text = host_text(&u).join("\n");
        // The selector compares, the descriptor read through the window
        // and compared, the base stored, the load marked.
        assert!(text.contains("lea ecx,[r10-0D8h]"), "{text}");
        assert!(text.contains("lea ecx,[r10]"), "{text}");
        assert!(text.contains("mov r12,[r15+r11]"), "{text}");
        assert!(text.contains("mov rcx,0FF306CFFFFFF0001h"), "{text}");
        // As iced-x86 formats a displacement: a leading 0 before a letter.
        let hex = |v: i32| {
            let digits = format!("{v:X}h");
            if digits.starts_with(|c: char| c.is_ascii_alphabetic()) {
                format!("0{digits}")
            } else {
                digits
            }
        };
        let base = format!("mov dword ptr [r14+{}],12345000h", hex(off::SEG_BASE + 16));
        assert!(text.contains(&base), "{text}");
        let mark = format!("mov byte ptr [r14+{}],1", hex(off::SEG_LOADED + 4));
        assert!(text.contains(&mark), "{text}");
        // A DPL-0 FS blocks an inline IRET to ring 3 (FS's byte is the third).
        let block = format!("mov byte ptr [r14+{}],1", hex(off::SEG_IRET_BLOCKS + 2));
        assert!(text.contains(&block), "{text}");
        // The DS load (nothing offered) goes to the monitor and ends the
        // unit; the null FS load's mode change leaves through a chainable
        // exit in its mode.
        assert_eq!(u.insns.len(), 2, "{:?}", u.insns);
        let chain_mode = format!("[r14+{}],2003h", hex(off::CHAIN_MODE));
        assert!(text.contains(&chain_mode), "{text}");
    }

    #[test]
    fn pext_gathers_the_bits_under_the_mask_from_bit_0_up() {
        assert_eq!(pext(0b1011_0110, 0b1111_0000), 0b1011);
        assert_eq!(pext(0xdead_beef, 0), 0);
        // A descriptor's base: 15:0 at 16, 23:16 at 32, 31:24 at 56.
        let d = 0x12cf_9334_5678_ffffu64;
        assert_eq!(pext(d, DESCRIPTOR_BASE_BITS), 0x1234_5678);
    }

    #[test]
    fn a_gs_load_of_any_base_compares_the_other_bits_and_takes_the_base_from_memory() {
        // mov gs, eax in a flat ring-0 unit.
        let code = [0x8e, 0xe8, 0x90];
        let tls = InlineSegmentLoad {
            selector: 0x33,
            descriptor: Some((0xc1c0_1030, 0x00cf_f300_0000_ffff)),
            base: 0,
            ranges: [0, 0xffff_ffff, 0, 0xffff_ffff],
            mode: 3,
            tag: 0,
            any_base: true,
            blocks_iret: false,
        };
        let loads = [(Seg::Gs as u8, tls)];
        let u = translate_with(
            &code,
            Setup {
                segment_loads: &loads,
                ..Setup::default()
            },
        );
        let text = host_text(&u).join("\n");
        assert!(text.contains("pext rcx,r12,r9"), "{text}");
        assert!(text.contains("pext r9,r12,r9"), "{text}");
        // The base PEXT gathered is what GS's base mirror gets.
        assert!(text.contains("],r9d"), "{text}");
    }

    #[test]
    fn an_offered_verw_sets_zf_alone_after_comparing_selector_and_descriptor() {
        // verw cs:[0x2000]; nop, in a flat ring-0 unit.
        let code = [0x2e, 0x0f, 0x00, 0x2d, 0x00, 0x20, 0x00, 0x00, 0x90];
        let offer = InlineVerw {
            selector: 0x68,
            descriptor: Some((0xc1c0_1068, 0x00cf_9300_0000_ffff)),
            writable: true,
        };
        let offers = [(0x1000, offer)];
        let u = translate_with(
            &code,
            Setup {
                verw: &offers,
                ..Setup::default()
            },
        );
        let text = host_text(&u).join("\n");
        assert!(
            text.contains("mov r10d,2000h\nmovzx r10d,word ptr [r15+r10]"),
            "{text}"
        );
        assert!(text.contains("lea ecx,[r10-68h]"), "{text}");
        assert!(text.contains("mov r12,[r15+r11]"), "{text}");
        assert!(
            text.contains("pushfq\npop r11\nor r11,40h\npush r11\npopfq"),
            "{text}"
        );
        // The unit goes on past it (into the padding's NOPs).
        assert!(u.insns.len() > 1);
        // Not offered: the monitor carries it out.
        let u = translate_with(&code, Setup::default());
        assert!(!host_text(&u).join("\n").contains("pushfq"));
    }

    #[test]
    fn a_call_to_a_known_pc_thunk_runs_it_inline_after_checking_its_bytes() {
        // mov ebx,[esp]; ret at 0x1100, then call 0x1100 at 0x1000.
        let thunk_code = [0x8b, 0x1c, 0x24, 0xc3];
        let u = translate_with(&thunk_code, Setup::default());
        let thunk = PcThunk::of(&u.insns, &thunk_code).expect("a PC thunk");
        assert_eq!(thunk.reg, Register::EBX);
        assert_eq!(thunk.bytes, 0xc3241c8b);
        assert!(PcThunk::of(&u.insns[..1], &thunk_code).is_none());
        let known = std::collections::HashMap::from([(0x1100u32, thunk)]);
        let call = [0xe8, 0xfb, 0x00, 0x00, 0x00]; // call 0x1100
        let setup = || Setup {
            return_stack: true,
            fold_displacements: true,
            pc_thunks: Some(&known),
            ..Setup::default()
        };
        let text = host_text(&translate_with(&call, setup())).join("\n");
        assert!(text.contains("mov ecx,[r15+1100h]"), "{text}");
        assert!(text.contains("lea ecx,[rcx+3CDBE375h]"), "{text}");
        assert!(text.contains("mov dword ptr [r15+r8-4],1005h"), "{text}");
        assert!(text.contains("mov ebx,1005h"), "{text}");
        // The ordinary call is there for bytes that changed.
        assert!(text.contains("call "), "{text}");
        let u = translate_with(&call, setup());
        assert_eq!(u.fixups[0], fixup::RUN_ALONE_ON_GUEST_FAULT);
        // Not without folded stores, nor in a one-instruction unit.
        let plain = Setup {
            fold_displacements: false,
            ..setup()
        };
        assert!(!host_text(&translate_with(&call, plain))
            .join("\n")
            .contains("mov ebx,1005h"));
        let alone = Setup {
            max_insns: 1,
            ..setup()
        };
        assert!(!host_text(&translate_with(&call, alone))
            .join("\n")
            .contains("mov ebx,1005h"));
    }

    #[test]
    fn a_predicted_call_returning_to_0x80000000_checks_its_return_address() {
        // call 0x7fff0000 at 0x7ffffffb: the return address 0x80000000 is
        // the continuation's most negative disp32.
        let rel = 0x7fff_0000u32.wrapping_sub(0x8000_0000).to_le_bytes();
        let unit = translate_with(
            &[0xe8, rel[0], rel[1], rel[2], rel[3]],
            Setup {
                eip: 0x7fff_fffb,
                return_stack: true,
                ..Setup::default()
            },
        );
        let text = host_text(&unit).join("\n");
        assert!(text.contains("lea ecx,[r9-80000000h]"), "{text}");
    }

    #[test]
    fn constant_targets_at_the_ends_of_the_32_bit_range_are_looked_up_right() {
        // jmp 0x7fffffff (entry key 0x80000000: the compare's displacement
        // is the most negative disp32) from 0x10000000.
        let rel = 0x7fff_ffffu32.wrapping_sub(0x1000_0005).to_le_bytes();
        let mid = paged_unit(0x1000_0000, &[0xe9, rel[0], rel[1], rel[2], rel[3]]);
        let text = host_text(&mid).join("\n");
        assert!(text.contains("lea ecx,[rcx-80000000h]"), "{text}");
        // jmp 0xffffffff: its key would be an empty entry's 0, so it takes
        // the general lookup.
        let rel = 0xffff_ffffu32.wrapping_sub(0x1000_0005).to_le_bytes();
        let top = paged_unit(0x1000_0000, &[0xe9, rel[0], rel[1], rel[2], rel[3]]);
        let text = host_text(&top).join("\n");
        assert!(text.contains("movzx r11d,r9w"), "{text}");
    }

    #[test]
    fn with_paging_an_instruction_running_into_the_next_page_starts_a_unit_that_checks_its_bytes() {
        // nop at 0x1ffe, then mov eax, 0x44332211 at 0x1fff (4 bytes in the
        // next page).
        let code = [0x90, 0xb8, 0x11, 0x22, 0x33, 0x44];
        let first = paged_unit(0x1ffe, &code);
        assert_eq!(first.insns.len(), 1, "ends before the crossing instruction");
        let second = paged_unit(0x1fff, &code[1..]);
        assert_eq!(second.insns.len(), 1);
        let text = host_text(&second).join("\n");
        assert!(text.contains("lea r10d,[r10+2000h]"), "{text}");
        assert!(text.contains("mov r12d,44332211h"), "{text}");
        let changed = format!("mov dword ptr [r14+{:X}h],7", off::EXIT_REASON);
        assert!(text.contains(&changed), "{text}");
        // Without paging the instruction stays in the unit, unchecked.
        let flat = unit_at(0x1ffe, &code);
        assert_eq!(flat.insns.len(), 2);
    }

    #[test]
    fn a_self_checking_unit_compares_its_bytes_at_entry_and_ends_after_a_store() {
        // mov eax, 0x11223344; mov [ebx], eax; ret
        let code = [0xb8, 0x44, 0x33, 0x22, 0x11, 0x89, 0x03, 0xc3];
        let u = translate_with(
            &code,
            Setup {
                self_check: true,
                ..Setup::default()
            },
        );
        assert_eq!(u.insns.len(), 2, "ends after the store");
        let text = host_text(&u).join("\n");
        assert!(text.contains("lea r10d,[r10+1000h]"), "{text}");
        assert!(text.contains("mov r12d,22334"), "{text}");
        let changed = format!("mov dword ptr [r14+{:X}h],7", off::EXIT_REASON);
        assert!(text.contains(&changed), "{text}");
        // A fault in the check is one of the unit's first instruction.
        assert_eq!(u.pc_map.last().map(|p| p.1), Some(0x1000));
        assert!(u.pc_map.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn a_long_self_checking_unit_checks_every_byte_within_the_guards_reach() {
        // 40 x `mov eax, imm32` (200 bytes, no store, no branch), then ret:
        // the check reads far past 64 bytes from the unit's start.
        let mut code = Vec::new();
        for n in 0..40u8 {
            code.extend_from_slice(&[0xb8, n, 0x5a, 0xa5, 0x11]);
        }
        code.push(0xc3);
        let u = translate_with(
            &code,
            Setup {
                self_check: true,
                ..Setup::default()
            },
        );
        assert!(
            u.insns.len() > 13,
            "a long unit: {} instructions",
            u.insns.len()
        );
        // The confinement verifier accepted it (translate_with checks), and
        // the check steps R10 along instead of growing displacements.
        let text = host_text(&u).join("\n");
        assert!(text.contains("lea r10d,[r10+40h]"), "{text}");
        let guest_len = u.guest_len as usize;
        let checked = text.matches("lea rcx,[r11+r12+1]").count();
        assert!(
            checked * 4 >= guest_len,
            "{checked} compares for {guest_len} bytes"
        );
    }
}
