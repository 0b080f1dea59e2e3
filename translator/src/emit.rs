//! A small emitter over iced-x86's encoder: encodes host instructions at
//! their final host address, with forward labels for in-unit branches.
//!
//! Invariant: `buf` holds the bytes of a unit that will execute at `base`;
//! every instruction is encoded for `base + offset`, so rel32 branches to
//! absolute addresses (stubs, other code) are correct once copied there.

use crate::TranslateError;
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};

/// A forward or backward in-unit label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Host code being emitted for one translation unit.
pub struct Emitter {
    pub(crate) buf: Vec<u8>,
    base: u64,
    enc: Encoder,
    labels: Vec<Option<usize>>,
    patches: Vec<(usize, Label)>,
}

pub(crate) fn enc_err(e: iced_x86::IcedError) -> TranslateError {
    TranslateError::Encode(e.to_string())
}

impl Emitter {
    /// An emitter for code that will run at host address `base`.
    pub fn new(base: u64) -> Emitter {
        Emitter {
            buf: Vec::with_capacity(1024),
            base,
            enc: Encoder::new(64),
            labels: Vec::new(),
            patches: Vec::new(),
        }
    }

    /// Current offset.
    pub fn pos(&self) -> usize {
        self.buf.len()
    }

    /// Host address of the current position.
    pub fn rip(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Encodes one instruction.
    pub fn ins(&mut self, i: &Instruction) -> Result<(), TranslateError> {
        let rip = self.rip();
        self.enc.set_buffer(std::mem::take(&mut self.buf));
        let res = self.enc.encode(i, rip);
        self.buf = self.enc.take_buffer();
        res.map(|_| ()).map_err(enc_err)
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A new unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` here.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.buf.len());
    }

    /// `jmp rel32` to a label; returns the offset of the rel32 field.
    pub fn jmp_label(&mut self, l: Label) -> usize {
        self.buf.push(0xe9);
        self.rel32_to(l)
    }

    /// `call rel32` to a label; returns the offset of the rel32 field.
    pub fn call_label(&mut self, l: Label) -> usize {
        self.buf.push(0xe8);
        self.rel32_to(l)
    }

    /// `lea r, [rip + rel32]` of a label, for a 64-bit `r` (the
    /// displacement is relative to the instruction's end, which is the
    /// field's end).
    pub fn lea_rip_label(&mut self, r: Register, l: Label) {
        let n = r.number() as u8;
        let rex = 0x48 | if n >= 8 { 0x04 } else { 0 };
        self.buf
            .extend_from_slice(&[rex, 0x8d, 0x05 | ((n & 7) << 3)]);
        self.rel32_to(l);
    }

    /// `jcc rel32` (condition 0..15 as in the opcode) to a label; returns the
    /// offset of the rel32 field.
    pub fn jcc_label(&mut self, cc: u8, l: Label) -> usize {
        self.buf.extend_from_slice(&[0x0f, 0x80 | cc]);
        self.rel32_to(l)
    }

    /// `jrcxz rel8` to a label that must be bound within 127 bytes.
    pub fn jrcxz_label(&mut self, l: Label) {
        self.buf.extend_from_slice(&[0xe3, 0]);
        self.patches.push((usize::MAX - self.buf.len() + 1, l));
    }

    fn rel32_to(&mut self, l: Label) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.patches.push((at, l));
        at
    }

    /// `jmp rel32` to an absolute host address.
    pub fn jmp_abs(&mut self, target: u64) -> Result<(), TranslateError> {
        let i = Instruction::with_branch(Code::Jmp_rel32_64, target).map_err(enc_err)?;
        self.ins(&i)
    }

    /// Resolves label references; returns the code.
    pub fn finish(mut self) -> Result<Vec<u8>, TranslateError> {
        for (at, l) in std::mem::take(&mut self.patches) {
            let dest =
                self.labels[l.0].ok_or_else(|| TranslateError::Encode("unbound label".into()))?;
            if at > usize::MAX / 2 {
                // rel8 of a jrcxz: `at` encodes the position after the byte.
                let end = usize::MAX - at + 1;
                let rel = dest as i64 - end as i64;
                let rel8 = i8::try_from(rel)
                    .map_err(|_| TranslateError::Encode("jrcxz out of range".into()))?;
                self.buf[end - 1] = rel8 as u8;
            } else {
                let rel = dest as i64 - (at as i64 + 4);
                self.buf[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
            }
        }
        Ok(self.buf)
    }
}

/// Builds a two-operand instruction (`Instruction::with2` with our error).
#[macro_export]
macro_rules! i2 {
    ($code:expr, $a:expr, $b:expr) => {
        iced_x86::Instruction::with2($code, $a, $b)
            .map_err(|e| $crate::TranslateError::Encode(e.to_string()))
    };
}

/// `[base + index + disp]` with scale 1.
pub fn mem(base: Register, index: Register, disp: i64) -> MemoryOperand {
    MemoryOperand::new(
        base,
        index,
        1,
        disp,
        if disp == 0 { 0 } else { 1 },
        false,
        Register::None,
    )
}
