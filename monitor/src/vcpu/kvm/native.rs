//! A small host routine that runs one guest x87/MMX/SSE instruction on
//! the host's FPU with the guest's FPU state loaded (`fpu` decides what
//! runs and prepares the instruction).
//!
//! The routine lives in executable memory of its own (a
//! `codecache::ExecMemory`: written through one view, run through
//! another). It is `extern "C" fn(*mut Block)`:
//!
//! 1. `FXSAVE64` the host's FPU state into [`Block::host_fx`];
//! 2. load the guest's general registers into host registers (see
//!    [`HOST_GPR`]), `FXRSTOR64` [`Block::fx`], load the guest's
//!    arithmetic flags;
//! 3. run the instruction in the *slot* ([`SLOT_LEN`] bytes, padded with
//!    NOPs), whose memory operand, if any, is `[rdi + MEM]`
//!    ([`Block::mem`]);
//! 4. store the flags, `FXSAVE64` into [`Block::fx`], store the general
//!    registers, `FXRSTOR64` the host's state and return.
//!
//! Invariants:
//! - The routine keeps the System V ABI: RBX, RBP, RSP and R12-R15 are
//!   preserved, the host's MXCSR and x87 control word (and the whole
//!   x87/SSE state) are restored before it returns, DF stays clear.
//! - The slot holds an instruction that cannot fault on the host: the
//!   caller (`fpu`) runs only instructions the host CPU has, with every
//!   SIMD exception masked in the MXCSR it loads, no x87 exception
//!   pending when the instruction is a waiting one, memory only in
//!   [`Block::mem`] (which is 64-byte aligned and [`MEM_LEN`] bytes), and
//!   general registers only through [`HOST_GPR`]. Nothing the
//!   instruction leaves pending (an unmasked x87 exception) survives the
//!   return: the steps after it are non-waiting and the host's state is
//!   restored.
//! - The routine itself and the block are only used by the thread that
//!   owns the [`HostFpu`] (it is neither `Send` nor `Sync`).

use codecache::{ExecError, ExecMemory};
use iced_x86::code_asm::{
    dword_ptr, eax, ptr, qword_ptr, r10d, r11d, r12, r12d, r13, r13d, r14, r14d, r15, r15d, r9d,
    rdi, AsmRegister32, CodeAssembler,
};
use iced_x86::{IcedError, Register};
use std::marker::PhantomData;

/// The longest instruction the slot holds (the architectural maximum is
/// 15 bytes; the rest is NOP padding).
pub(super) const SLOT_LEN: usize = 16;
/// Bytes of [`Block::mem`]: the largest memory operand of an x87, MMX,
/// SSE or FXSR instruction (FXSAVE's 512-byte image).
pub(super) const MEM_LEN: usize = 512;
/// The offset of [`Block::mem`] in the block: the displacement of the
/// redirected memory operand `[rdi + MEM]`.
pub(super) const MEM: i32 = std::mem::offset_of!(Block, mem) as i32;

/// The host register that stands for guest register `n` (EAX, ECX, EDX,
/// EBX, ESP, EBP, ESI, EDI) in the slot's instruction. EAX stays EAX
/// (FNSTSW AX names it implicitly); the others avoid RDI (the block) and
/// RSP (the routine's stack).
pub(super) const HOST_GPR: [Register; 8] = [
    Register::EAX,
    Register::R9D,
    Register::R10D,
    Register::R11D,
    Register::R12D,
    Register::R13D,
    Register::R14D,
    Register::R15D,
];

/// The routine's assembler names for [`HOST_GPR`].
const HOST_GPR_ASM: [AsmRegister32; 8] = [eax, r9d, r10d, r11d, r12d, r13d, r14d, r15d];

/// RFLAGS bits the instruction sees from the guest and may change: CF,
/// PF, AF, ZF, SF, OF (FCMOVcc reads them, FCOMI and COMISS write them).
pub(super) const ARITHMETIC_FLAGS: u32 = 0x8d5;
/// RFLAGS bit 1 (always set) and IF (as the host runs).
const HOST_FLAGS: u64 = 0x202;

/// What the routine works on.
#[repr(C, align(64))]
pub(super) struct Block {
    /// The FXSAVE64 image the instruction starts from, and its result.
    pub(super) fx: [u8; 512],
    /// The host's FPU state while the instruction runs.
    host_fx: [u8; 512],
    /// The memory operand: the guest's bytes before, the result after.
    pub(super) mem: [u8; MEM_LEN],
    /// The guest's general registers (EAX..EDI), before and after.
    pub(super) gpr: [u32; 8],
    /// RFLAGS before and after (only [`ARITHMETIC_FLAGS`] are the
    /// guest's).
    flags: u64,
}

impl Block {
    fn new() -> Box<Block> {
        Box::new(Block {
            fx: [0; 512],
            host_fx: [0; 512],
            mem: [0; MEM_LEN],
            gpr: [0; 8],
            flags: HOST_FLAGS,
        })
    }
}

/// Why the routine could not be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum HostFpuError {
    /// No executable memory.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The routine did not assemble (a bug).
    #[error("cannot assemble the host FPU routine: {0}")]
    Assemble(#[from] IcedError),
}

/// The routine and its block.
pub(super) struct HostFpu {
    code: ExecMemory,
    /// Offset of the slot in `code`.
    slot: usize,
    block: Box<Block>,
    /// The MXCSR bits the host's FXRSTOR accepts (MXCSR_MASK).
    mxcsr_mask: u32,
    /// Neither `Send` nor `Sync` (see the module invariants).
    _thread_bound: PhantomData<*const ()>,
}

impl HostFpu {
    /// Assembles the routine into fresh executable memory.
    pub(super) fn new() -> Result<HostFpu, HostFpuError> {
        let prologue = assemble(prologue)?;
        let epilogue = assemble(epilogue)?;
        let mut code = ExecMemory::new(prologue.len() + SLOT_LEN + epilogue.len())?;
        code.write(0, &prologue);
        code.write(prologue.len(), &[NOP; SLOT_LEN]);
        code.write(prologue.len() + SLOT_LEN, &epilogue);
        Ok(HostFpu {
            code,
            slot: prologue.len(),
            block: Block::new(),
            mxcsr_mask: host_mxcsr_mask(),
            _thread_bound: PhantomData,
        })
    }

    /// The MXCSR bits the host's FXRSTOR accepts: any other set bit would
    /// make it raise #GP.
    pub(super) fn mxcsr_mask(&self) -> u32 {
        self.mxcsr_mask
    }

    /// The host address of the slot (the x87 instruction pointer the
    /// host records for the instruction).
    pub(super) fn slot_address(&self) -> u64 {
        self.code.exec_base() as u64 + self.slot as u64
    }

    /// The host address of [`Block::mem`] (the x87 data pointer the host
    /// records for a memory operand).
    pub(super) fn mem_address(&self) -> u64 {
        std::ptr::addr_of!(self.block.mem) as u64
    }

    /// The block, to set up the instruction's inputs and read its
    /// results.
    pub(super) fn block(&mut self) -> &mut Block {
        &mut self.block
    }

    /// The guest's arithmetic flags for the instruction.
    pub(super) fn set_flags(&mut self, eflags: u32) {
        self.block.flags = HOST_FLAGS | u64::from(eflags & ARITHMETIC_FLAGS);
    }

    /// The arithmetic flags the instruction left.
    pub(super) fn flags(&self) -> u32 {
        self.block.flags as u32 & ARITHMETIC_FLAGS
    }

    /// Runs `instruction` (encoded for the slot's address, at most
    /// [`SLOT_LEN`] bytes) over the block.
    ///
    /// # Safety
    ///
    /// `instruction` must be one instruction that cannot fault or trap
    /// on the host with the block's state loaded, and may touch only what
    /// the module invariants allow (the x87/SSE state, [`HOST_GPR`], the
    /// arithmetic flags, [`Block::mem`] through `[rdi + MEM]`).
    pub(super) unsafe fn run(&mut self, instruction: &[u8]) {
        assert!(
            instruction.len() <= SLOT_LEN,
            "an x86 instruction is at most 15 bytes"
        );
        let mut slot = [NOP; SLOT_LEN];
        slot[..instruction.len()].copy_from_slice(instruction);
        self.code.write(self.slot, &slot);
        self.block.flags = HOST_FLAGS | (self.block.flags & u64::from(ARITHMETIC_FLAGS));
        // SAFETY: the executable view starts with the routine assembled in
        // `new`, an `extern "C" fn(*mut Block)` that keeps the ABI (module
        // invariants); the slot holds an instruction the caller vouches
        // for, and the block is ours, aligned as FXSAVE64 needs.
        let routine: extern "C" fn(*mut Block) =
            unsafe { std::mem::transmute(self.code.exec_base()) };
        routine(&mut *self.block);
    }
}

const NOP: u8 = 0x90;

/// Offset of MXCSR_MASK in an FXSAVE image.
const FX_MXCSR_MASK: usize = 28;
/// The MXCSR_MASK of a CPU that stores 0 there (SDM vol. 1, 11.6.6).
const DEFAULT_MXCSR_MASK: u32 = 0xffbf;

/// The host CPU's MXCSR_MASK.
fn host_mxcsr_mask() -> u32 {
    #[repr(C, align(16))]
    struct Image([u8; 512]);
    let mut image = Image([0; 512]);
    // SAFETY: FXSAVE64 stores 512 bytes at a 16-byte aligned buffer of
    // that size and changes no register.
    unsafe {
        std::arch::asm!("fxsave64 [{}]", in(reg) image.0.as_mut_ptr(), options(nostack));
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&image.0[FX_MXCSR_MASK..FX_MXCSR_MASK + 4]);
    match u32::from_le_bytes(mask) {
        0 => DEFAULT_MXCSR_MASK,
        m => m,
    }
}

/// Assembles position-independent code.
fn assemble(
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    body(&mut a)?;
    a.assemble(0)
}

/// Offsets in [`Block`].
const FX: i32 = std::mem::offset_of!(Block, fx) as i32;
const HOST_FX: i32 = std::mem::offset_of!(Block, host_fx) as i32;
const GPR: i32 = std::mem::offset_of!(Block, gpr) as i32;
const FLAGS: i32 = std::mem::offset_of!(Block, flags) as i32;

/// Saves the host, loads the guest (steps 1 and 2 of the module docs).
fn prologue(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.fxsave64(ptr(rdi + HOST_FX))?;
    for r in [r12, r13, r14, r15] {
        a.push(r)?;
    }
    for (n, r) in HOST_GPR_ASM.into_iter().enumerate() {
        a.mov(r, dword_ptr(rdi + GPR + 4 * n as i32))?;
    }
    a.fxrstor64(ptr(rdi + FX))?;
    a.push(qword_ptr(rdi + FLAGS))?;
    a.popfq()
}

/// Saves the guest, restores the host (step 4 of the module docs).
fn epilogue(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.pushfq()?;
    a.pop(qword_ptr(rdi + FLAGS))?;
    a.fxsave64(ptr(rdi + FX))?;
    for (n, r) in HOST_GPR_ASM.into_iter().enumerate() {
        a.mov(dword_ptr(rdi + GPR + 4 * n as i32), r)?;
    }
    for r in [r15, r14, r13, r12] {
        a.pop(r)?;
    }
    a.fxrstor64(ptr(rdi + HOST_FX))?;
    a.cld()?;
    a.ret()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Encoder, Instruction, MemoryOperand};

    fn encode(i: Instruction, fpu: &HostFpu) -> Vec<u8> {
        let mut e = Encoder::new(64);
        e.encode(&i, fpu.slot_address()).unwrap();
        e.take_buffer()
    }

    #[test]
    fn the_routine_runs_an_sse_add_on_the_block_and_keeps_the_host_state() {
        let mut fpu = HostFpu::new().unwrap();
        // An FXSAVE64 image: default FCW and MXCSR, XMM0 = 1.5f, and
        // [mem] = 2.25f.
        let block = fpu.block();
        block.fx[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        block.fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        block.fx[160..164].copy_from_slice(&1.5f32.to_le_bytes());
        block.mem[..4].copy_from_slice(&2.25f32.to_le_bytes());
        let addss = Instruction::with2(
            Code::Addss_xmm_xmmm32,
            Register::XMM0,
            MemoryOperand::with_base_displ(Register::RDI, i64::from(MEM)),
        )
        .unwrap();
        let bytes = encode(addss, &fpu);
        let host_mxcsr_before = host_mxcsr();
        // SAFETY: ADDSS with every SIMD exception masked cannot fault, and
        // its memory operand is the block's.
        unsafe { fpu.run(&bytes) };
        assert_eq!(host_mxcsr(), host_mxcsr_before);
        let xmm0 = f32::from_le_bytes(fpu.block().fx[160..164].try_into().unwrap());
        assert_eq!(xmm0, 3.75);
    }

    #[test]
    fn the_routine_passes_general_registers_and_flags_through_the_mapped_registers() {
        let mut fpu = HostFpu::new().unwrap();
        let block = fpu.block();
        block.fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        block.fx[160..164].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        block.gpr = [1, 2, 3, 4, 5, 6, 7, 8];
        // movd ebx (host r11d), xmm0; then comiss xmm0, xmm0 sets ZF.
        let movd = Instruction::with2(Code::Movd_rm32_xmm, HOST_GPR[3], Register::XMM0).unwrap();
        let bytes = encode(movd, &fpu);
        // SAFETY: MOVD to a mapped register cannot fault.
        unsafe { fpu.run(&bytes) };
        assert_eq!(fpu.block().gpr, [1, 2, 3, 0x1234_5678, 5, 6, 7, 8]);
        fpu.set_flags(0);
        let comiss =
            Instruction::with2(Code::Comiss_xmm_xmmm32, Register::XMM1, Register::XMM1).unwrap();
        let bytes = encode(comiss, &fpu);
        // SAFETY: COMISS of zeros with SIMD exceptions masked cannot fault.
        unsafe { fpu.run(&bytes) };
        assert_eq!(fpu.flags() & 0x40, 0x40, "ZF: equal");
    }

    fn host_mxcsr() -> u32 {
        let mut m = 0u32;
        // SAFETY: STMXCSR stores four bytes at a valid, aligned address.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut m, options(nostack)) };
        m
    }
}
