//! Seeded generator of random 32-bit x86 test programs for differential
//! testing (host CPU vs nestmon vs QEMU).
//!
//! A program is a C file for guests/Makefile's `one` target: a fixed C
//! part (`dump_c`, which prints one line of state) and a top-level `asm`
//! block holding `main`: random initial registers, flags and a 512-byte
//! data buffer, then `units` random instruction groups, each followed by
//! `pushl $mask; pushl $step; call dump`.  `dump` saves EFLAGS and all
//! registers and prints EAX..EBP, ESP, EFLAGS & mask and a hash of the
//! buffer.  The image is linked at the same address in the guest and the
//! native build, so addresses in registers compare equal.
//!
//! Flags that an instruction leaves undefined are tracked as "tainted":
//! they are masked out of the dump, and before any instruction that reads
//! a tainted flag (adc/sbb/rcl/rcr/setcc/cmovcc/jcc/lahf/pushf/daa/...) the
//! generator first emits a `cmp` that defines all of them.  Divisions are
//! made safe (no #DE), bsf/bsr get a non-zero source, shift counts stay
//! below the operand width, string operations stay inside the buffer.

use std::fmt::Write;

const O: u32 = 0x800;
const S: u32 = 0x080;
const Z: u32 = 0x040;
const A: u32 = 0x010;
const P: u32 = 0x004;
const C: u32 = 0x001;
const ALL: u32 = O | S | Z | A | P | C;

const R32: [&str; 7] = ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"];
const R16: [&str; 7] = ["ax", "bx", "cx", "dx", "si", "di", "bp"];
const R8: [&str; 8] = ["al", "bl", "cl", "dl", "ah", "bh", "ch", "dh"];
/// Buffer size in bytes (memory operands stay inside it).
pub const BUF: u32 = 512;

/// Condition codes and the flags they read.
const CONDS: [(&str, u32); 16] = [
    ("o", O),
    ("no", O),
    ("b", C),
    ("ae", C),
    ("e", Z),
    ("ne", Z),
    ("be", C | Z),
    ("a", C | Z),
    ("s", S),
    ("ns", S),
    ("p", P),
    ("np", P),
    ("l", S | O),
    ("ge", S | O),
    ("le", Z | S | O),
    ("g", Z | S | O),
];

/// xorshift64* pseudo-random numbers.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, including 0).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next() >> 32) % n as u64) as u32
    }
    /// A random 32-bit value biased towards interesting ones.
    pub fn value(&mut self) -> u32 {
        match self.below(8) {
            0 => [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff][self.below(8) as usize],
            1 => {
                [0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe, 0x80000001][self.below(5) as usize]
            }
            2 => self.below(256),
            _ => self.next() as u32,
        }
    }
    fn pick<'a>(&mut self, s: &[&'a str]) -> &'a str {
        s[self.below(s.len() as u32) as usize]
    }
}

struct Gen {
    r: Rng,
    asm: String,
    taint: u32,
    step: u32,
}

fn sfx(size: u32) -> &'static str {
    match size {
        8 => "b",
        16 => "w",
        _ => "l",
    }
}

impl Gen {
    fn emit(&mut self, s: &str) {
        self.asm.push_str("  ");
        self.asm.push_str(s);
        self.asm.push('\n');
    }
    fn reg(&mut self, size: u32) -> String {
        let r = match size {
            8 => self.r.pick(&R8),
            16 => self.r.pick(&R16),
            _ => self.r.pick(&R32),
        };
        format!("%{r}")
    }
    /// A register of `size` other than the given full registers.
    fn reg_except(&mut self, size: u32, not: &[&str]) -> String {
        loop {
            let r = self.reg(size);
            let full = match &r[1..] {
                "al" | "ah" | "ax" | "eax" => "eax",
                "bl" | "bh" | "bx" | "ebx" => "ebx",
                "cl" | "ch" | "cx" | "ecx" => "ecx",
                "dl" | "dh" | "dx" | "edx" => "edx",
                "si" | "esi" => "esi",
                "di" | "edi" => "edi",
                _ => "ebp",
            };
            if !not.contains(&full) {
                return r;
            }
        }
    }
    fn mem(&mut self, size: u32) -> String {
        let k = self.r.below(BUF - size / 8);
        format!("buf+{k}")
    }
    fn rm(&mut self, size: u32) -> String {
        if self.r.below(3) == 0 {
            self.mem(size)
        } else {
            self.reg(size)
        }
    }
    fn imm(&mut self, size: u32) -> String {
        let v = self.r.value();
        match size {
            8 => format!("${:#x}", v & 0xff),
            16 => format!("${:#x}", v & 0xffff),
            _ => format!("${v:#x}"),
        }
    }
    fn size(&mut self) -> u32 {
        [8, 16, 32, 32][self.r.below(4) as usize]
    }
    /// Makes every flag in `need` defined (emits a cmp when one is tainted).
    fn need(&mut self, need: u32) {
        if self.taint & need != 0 {
            let r = self.reg(32);
            let i = self.imm(32);
            self.emit(&format!("cmpl {i}, {r}"));
            self.taint = 0;
        }
    }
    fn set_flags(&mut self, defined: u32, undefined: u32) {
        self.taint = (self.taint & !defined) | undefined;
    }

    fn unit(&mut self) {
        match self.r.below(30) {
            0..=5 => self.alu(),
            6 => self.unary(),
            7..=8 => self.shift(),
            9 => self.shd(),
            10 => self.mul(),
            11 => self.div(),
            12 => self.bits(),
            13 => self.bitscan(),
            14 => self.setcc(),
            15 => self.cmov(),
            16 => self.lea(),
            17 => self.pushpop(),
            18 => self.string(),
            19 => self.xchg(),
            20 => self.cmpxchg(),
            21 => self.bswap_ext(),
            22 => self.lahf_sahf(),
            23 => self.bcd(),
            24 => self.carry(),
            25 => self.jcc(),
            26 => self.mov(),
            27 => self.flags_roundtrip(),
            28 => self.loop_(),
            _ => self.alu(),
        }
    }

    fn alu(&mut self) {
        let ops = [
            "add", "adc", "sub", "sbb", "and", "or", "xor", "cmp", "test",
        ];
        let op = self.r.pick(&ops);
        if op == "adc" || op == "sbb" {
            self.need(C);
        }
        let size = self.size();
        let s = sfx(size);
        let line = match self.r.below(5) {
            0 => {
                let (a, b) = (self.reg(size), self.reg(size));
                format!("{op}{s} {a}, {b}")
            }
            1 => {
                let (a, b) = (self.mem(size), self.reg(size));
                format!("{op}{s} {a}, {b}")
            }
            2 => {
                let (a, b) = (self.reg(size), self.mem(size));
                format!("{op}{s} {a}, {b}")
            }
            3 if size != 8 && op != "test" => {
                // sign-extended imm8 form
                let i = self.r.below(256) as i32 - 128;
                let b = self.rm(size);
                format!("{op}{s} ${i}, {b}")
            }
            _ => {
                let i = self.imm(size);
                let b = self.rm(size);
                format!("{op}{s} {i}, {b}")
            }
        };
        self.emit(&line);
        if matches!(op, "and" | "or" | "xor" | "test") {
            self.set_flags(ALL & !A, A);
        } else {
            self.set_flags(ALL, 0);
        }
    }

    fn unary(&mut self) {
        let size = self.size();
        let s = sfx(size);
        let d = self.rm(size);
        match self.r.below(4) {
            0 => {
                self.emit(&format!("inc{s} {d}"));
                self.set_flags(ALL & !C, 0);
            }
            1 => {
                self.emit(&format!("dec{s} {d}"));
                self.set_flags(ALL & !C, 0);
            }
            2 => {
                self.emit(&format!("neg{s} {d}"));
                self.set_flags(ALL, 0);
            }
            _ => self.emit(&format!("not{s} {d}")),
        }
    }

    fn shift(&mut self) {
        let ops = ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr", "sal"];
        let op = self.r.pick(&ops);
        if op == "rcl" || op == "rcr" {
            self.need(C);
        }
        let size = self.size();
        let s = sfx(size);
        let n = match self.r.below(3) {
            0 => 1,
            _ => self.r.below(size),
        };
        let use_cl = self.r.below(3) == 0;
        if use_cl {
            let d = if self.r.below(3) == 0 {
                self.mem(size)
            } else {
                self.reg_except(size, &["ecx"])
            };
            self.emit(&format!("movb ${n}, %cl"));
            self.emit(&format!("{op}{s} %cl, {d}"));
        } else if n == 1 && self.r.below(2) == 0 {
            let d = self.rm(size);
            self.emit(&format!("{op}{s} {d}")); // the D0/D1 by-one form
        } else {
            let d = self.rm(size);
            self.emit(&format!("{op}{s} ${n}, {d}"));
        }
        if n == 0 {
            return;
        }
        match op {
            "rol" | "ror" | "rcl" | "rcr" => {
                if n == 1 {
                    self.set_flags(O | C, 0)
                } else {
                    self.set_flags(C, O)
                }
            }
            _ => {
                if n == 1 {
                    self.set_flags(O | S | Z | P | C, A)
                } else {
                    self.set_flags(S | Z | P | C, O | A)
                }
            }
        }
    }

    fn shd(&mut self) {
        let size = if self.r.below(2) == 0 { 16 } else { 32 };
        let s = sfx(size);
        let op = if self.r.below(2) == 0 { "shld" } else { "shrd" };
        let n = self.r.below(size);
        let src = self.reg_except(size, &["ecx"]);
        let dst = if self.r.below(3) == 0 {
            self.mem(size)
        } else {
            self.reg_except(size, &["ecx"])
        };
        if self.r.below(2) == 0 {
            self.emit(&format!("{op}{s} ${n}, {src}, {dst}"));
        } else {
            self.emit(&format!("movb ${n}, %cl"));
            self.emit(&format!("{op}{s} %cl, {src}, {dst}"));
        }
        if n == 1 {
            self.set_flags(O | S | Z | P | C, A);
        } else if n > 1 {
            self.set_flags(S | Z | P | C, O | A);
        }
    }

    fn mul(&mut self) {
        let size = self.size();
        let s = sfx(size);
        match self.r.below(4) {
            0 => {
                let src = self.rm(size);
                self.emit(&format!("mul{s} {src}"));
            }
            1 => {
                let src = self.rm(size);
                self.emit(&format!("imul{s} {src}"));
            }
            2 if size != 8 => {
                let (src, dst) = (self.rm(size), self.reg(size));
                self.emit(&format!("imul{s} {src}, {dst}"));
            }
            _ if size != 8 => {
                let (i, src, dst) = (self.imm(size), self.rm(size), self.reg(size));
                self.emit(&format!("imul{s} {i}, {src}, {dst}"));
            }
            _ => {
                let src = self.rm(8);
                self.emit(&format!("imulb {src}"));
            }
        }
        self.set_flags(O | C, S | Z | A | P);
    }

    fn div(&mut self) {
        let size = self.size();
        let signed = self.r.below(2) == 0;
        let src = if self.r.below(3) == 0 {
            self.mem(size)
        } else {
            self.reg_except(size, &["eax", "edx"])
        };
        match (size, signed) {
            (32, false) => {
                self.emit(&format!("orl $1, {src}"));
                self.emit("xorl %edx, %edx");
                self.emit(&format!("divl {src}"));
            }
            (16, false) => {
                self.emit(&format!("orw $1, {src}"));
                self.emit("xorw %dx, %dx");
                self.emit(&format!("divw {src}"));
            }
            (8, false) => {
                self.emit(&format!("orb $1, {src}"));
                self.emit("movb $0, %ah");
                self.emit(&format!("divb {src}"));
            }
            (32, true) => {
                self.emit(&format!("andl $0x7fffffff, {src}"));
                self.emit(&format!("orl $1, {src}"));
                self.emit("cltd");
                self.emit(&format!("idivl {src}"));
            }
            (16, true) => {
                self.emit(&format!("andw $0x7fff, {src}"));
                self.emit(&format!("orw $1, {src}"));
                self.emit("cwtd");
                self.emit(&format!("idivw {src}"));
            }
            _ => {
                self.emit(&format!("andb $0x7f, {src}"));
                self.emit(&format!("orb $1, {src}"));
                self.emit("cbtw");
                self.emit(&format!("idivb {src}"));
            }
        }
        self.set_flags(0, ALL);
    }

    fn bits(&mut self) {
        let op = self.r.pick(&["bt", "bts", "btr", "btc"]);
        let size = if self.r.below(2) == 0 { 16 } else { 32 };
        let s = sfx(size);
        if self.r.below(2) == 0 {
            let (i, d) = (self.r.below(size), self.rm(size));
            self.emit(&format!("{op}{s} ${i}, {d}"));
        } else {
            let (b, d) = (self.reg(size), self.reg(size));
            self.emit(&format!("{op}{s} {b}, {d}"));
        }
        self.set_flags(C, O | S | Z | A | P);
    }

    fn bitscan(&mut self) {
        let size = if self.r.below(2) == 0 { 16 } else { 32 };
        let s = sfx(size);
        let op = if self.r.below(2) == 0 { "bsf" } else { "bsr" };
        let src = self.rm(size);
        let bit = self.r.below(size);
        self.emit(&format!("or{s} ${:#x}, {src}", 1u32 << bit));
        let dst = self.reg(size);
        self.emit(&format!("{op}{s} {src}, {dst}"));
        self.set_flags(Z, O | S | A | P | C);
    }

    fn cond(&mut self) -> &'static str {
        let (cc, f) = CONDS[self.r.below(16) as usize];
        self.need(f);
        cc
    }

    fn setcc(&mut self) {
        let cc = self.cond();
        let d = self.rm(8);
        self.emit(&format!("set{cc} {d}"));
    }

    fn cmov(&mut self) {
        let cc = self.cond();
        let size = if self.r.below(2) == 0 { 16 } else { 32 };
        let s = sfx(size);
        let (src, dst) = (self.rm(size), self.reg(size));
        self.emit(&format!("cmov{cc}{s} {src}, {dst}"));
    }

    fn lea(&mut self) {
        let (b, i) = (self.r.pick(&R32), self.r.pick(&R32));
        let sc = [1, 2, 4, 8][self.r.below(4) as usize];
        let disp = self.r.value() as i32;
        let size = if self.r.below(4) == 0 { 16 } else { 32 };
        let d = self.reg(size);
        let s = sfx(size);
        match self.r.below(3) {
            0 => self.emit(&format!("lea{s} {disp}(%{b},%{i},{sc}), {d}")),
            1 => self.emit(&format!("lea{s} (%{b},%{i}), {d}")),
            _ => self.emit(&format!("lea{s} {disp}(,%{i},{sc}), {d}")),
        }
    }

    fn pushpop(&mut self) {
        match self.r.below(5) {
            0 => {
                let (a, b) = (self.rm(32), self.rm(32));
                self.emit(&format!("pushl {a}"));
                self.emit(&format!("popl {b}"));
            }
            1 => {
                let (a, b) = (self.rm(16), self.rm(16));
                self.emit(&format!("pushw {a}"));
                self.emit(&format!("popw {b}"));
            }
            2 => {
                let i = self.r.below(256) as i32 - 128;
                let b = self.reg(32);
                self.emit(&format!("pushl ${i}"));
                self.emit(&format!("popl {b}"));
            }
            3 => {
                // pushal, clobber some registers, popal restores them
                self.emit("pushal");
                let r = self.reg(32);
                let i = self.imm(32);
                self.emit(&format!("movl {i}, {r}"));
                self.emit("movl 8(%esp), %eax");
                self.emit("movl %eax, buf+16");
                self.emit("popal");
            }
            _ => {
                let i = self.imm(32);
                let m = self.mem(32);
                self.emit(&format!("pushl {i}"));
                self.emit(&format!("popl {m}"));
            }
        }
    }

    fn string(&mut self) {
        let size = [1u32, 2, 4][self.r.below(3) as usize];
        let s = match size {
            1 => "b",
            2 => "w",
            _ => "l",
        };
        let op = self.r.pick(&["movs", "stos", "lods", "cmps", "scas"]);
        let rep = match self.r.below(4) {
            0 => "",
            1 => "rep ",
            2 if op == "cmps" || op == "scas" => "repne ",
            _ => {
                if op == "cmps" || op == "scas" {
                    "repe "
                } else {
                    "rep "
                }
            }
        };
        let n = if rep.is_empty() {
            1
        } else {
            [0, 1, 2, 5, 17, 40][self.r.below(6) as usize]
        };
        let back = self.r.below(2) == 0;
        let span = n.max(1) * size;
        // start offsets so that [start - span, start + span] stays in buf
        let lo = span;
        let hi = BUF - span - size;
        let si = lo + self.r.below(hi - lo + 1);
        let di = lo + self.r.below(hi - lo + 1);
        self.emit(&format!("movl $buf+{si}, %esi"));
        self.emit(&format!("movl $buf+{di}, %edi"));
        if !rep.is_empty() {
            self.emit(&format!("movl ${n}, %ecx"));
        }
        if back {
            self.emit("std");
        }
        self.emit(&format!("{rep}{op}{s}"));
        self.emit("cld");
        // rep with ECX = 0 leaves the flags alone.
        if (op == "cmps" || op == "scas") && (rep.is_empty() || n != 0) {
            self.set_flags(ALL, 0);
        }
    }

    fn xchg(&mut self) {
        let size = self.size();
        let s = sfx(size);
        let (a, b) = (self.reg(size), self.rm(size));
        if self.r.below(2) == 0 {
            self.emit(&format!("xchg{s} {a}, {b}"));
        } else {
            self.emit(&format!("xadd{s} {a}, {b}"));
            self.set_flags(ALL, 0);
        }
    }

    fn cmpxchg(&mut self) {
        if self.r.below(4) == 0 {
            let m = self.mem(64);
            self.emit(&format!("cmpxchg8b {m}"));
            self.set_flags(Z, 0);
            return;
        }
        let size = self.size();
        let s = sfx(size);
        let (a, b) = (self.reg(size), self.rm(size));
        if self.r.below(2) == 0 {
            // make the comparison succeed sometimes
            let acc = match size {
                8 => "%al",
                16 => "%ax",
                _ => "%eax",
            };
            self.emit(&format!("mov{s} {b}, {acc}"));
        }
        self.emit(&format!("cmpxchg{s} {a}, {b}"));
        self.set_flags(ALL, 0);
    }

    fn bswap_ext(&mut self) {
        match self.r.below(4) {
            0 => {
                let r = self.reg(32);
                self.emit(&format!("bswap {r}"));
            }
            1 => {
                let (src, d) = (self.rm(8), self.reg(32));
                let op = if self.r.below(2) == 0 {
                    "movzbl"
                } else {
                    "movsbl"
                };
                self.emit(&format!("{op} {src}, {d}"));
            }
            2 => {
                let (src, d) = (self.rm(16), self.reg(32));
                let op = if self.r.below(2) == 0 {
                    "movzwl"
                } else {
                    "movswl"
                };
                self.emit(&format!("{op} {src}, {d}"));
            }
            _ => {
                let op = self.r.pick(&["cbtw", "cwtl", "cwtd", "cltd"]);
                self.emit(op);
            }
        }
    }

    fn lahf_sahf(&mut self) {
        if self.r.below(2) == 0 {
            self.need(S | Z | A | P | C);
            self.emit("lahf");
        } else {
            self.emit("sahf");
            self.set_flags(S | Z | A | P | C, 0);
        }
    }

    fn bcd(&mut self) {
        match self.r.below(6) {
            0 | 1 => {
                self.need(A | C);
                let op = if self.r.below(2) == 0 { "daa" } else { "das" };
                self.emit(op);
                self.set_flags(S | Z | A | P | C, O);
            }
            2 | 3 => {
                self.need(A);
                let op = if self.r.below(2) == 0 { "aaa" } else { "aas" };
                self.emit(op);
                self.set_flags(A | C, O | S | Z | P);
            }
            4 => {
                let i = 1 + self.r.below(255);
                self.emit(&format!("aam ${i}"));
                self.set_flags(S | Z | P, O | A | C);
            }
            _ => {
                let i = self.r.below(256);
                self.emit(&format!("aad ${i}"));
                self.set_flags(S | Z | P, O | A | C);
            }
        }
    }

    fn carry(&mut self) {
        match self.r.below(3) {
            0 => self.emit("clc"),
            1 => self.emit("stc"),
            _ => {
                self.need(C);
                self.emit("cmc");
            }
        }
        self.set_flags(C, 0);
    }

    fn jcc(&mut self) {
        let cc = self.cond();
        self.emit(&format!("j{cc} 1f"));
        let (i, r) = (self.imm(32), self.reg(32));
        self.emit(&format!("addl {i}, {r}"));
        self.emit("1:");
        // the add may or may not have run: its flags are defined either way
        // only if the branch was not taken; treat them as defined by the
        // add (cmp-defined before, add-defined after, both fully defined)
    }

    fn mov(&mut self) {
        let size = self.size();
        let s = sfx(size);
        let (a, b) = match self.r.below(3) {
            0 => (self.reg(size), self.rm(size)),
            1 => (self.mem(size), self.reg(size)),
            _ => (self.imm(size), self.rm(size)),
        };
        self.emit(&format!("mov{s} {a}, {b}"));
    }

    fn flags_roundtrip(&mut self) {
        if self.r.below(2) == 0 {
            self.need(ALL);
            let r = self.reg(32);
            self.emit("pushfl");
            self.emit(&format!("popl {r}"));
            self.emit(&format!("andl $0x8d5, {r}"));
            self.set_flags(ALL & !A, A);
        } else {
            let r = self.reg(32);
            self.emit(&format!("pushl {r}"));
            self.emit("andl $0x8d5, (%esp)");
            self.emit("orl $2, (%esp)");
            self.emit("popfl");
            self.set_flags(ALL, 0);
        }
    }

    fn loop_(&mut self) {
        let n = 1 + self.r.below(9);
        let r = self.reg_except(32, &["ecx"]);
        let i = self.imm(32);
        self.emit(&format!("movl ${n}, %ecx"));
        self.emit("1:");
        self.emit(&format!("addl {i}, {r}"));
        self.emit(&format!("roll $3, {r}"));
        self.emit("loop 1b");
        self.set_flags(ALL, 0);
        self.set_flags(C, O);
    }
}

/// Generates the C source of a random test program.
pub fn program(seed: u64, units: u32) -> String {
    let mut g = Gen {
        r: Rng::new(seed),
        asm: String::new(),
        taint: 0,
        step: 0,
    };
    let mut c = String::new();
    writeln!(
        c,
        "/* nestmon differential test program, seed {seed}, {units} units (generated) */"
    )
    .unwrap();
    c.push_str(PRELUDE);
    // data buffer
    c.push_str("uint8_t buf[512] __attribute__((aligned(64))) = {");
    for i in 0..BUF {
        if i % 16 == 0 {
            c.push_str("\n   ");
        }
        write!(c, " {:#04x},", g.r.below(256)).unwrap();
    }
    c.push_str("\n};\n\n__asm__(\".text\\n\"\n\".globl main\\n\"\n\"main:\\n\"\n");
    g.emit("pushal");
    g.emit("movl %esp, saved_esp");
    for r in ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"] {
        let v = g.r.value();
        g.emit(&format!("movl ${v:#x}, %{r}"));
    }
    let f = 2 | (g.r.next() as u32 & ALL);
    g.emit(&format!("pushl ${f:#x}"));
    g.emit("popfl");
    g.emit("pushl $0x8d5\n  pushl $0\n  call dump");
    for step in 1..=units {
        g.step = step;
        g.unit();
        let mask = ALL & !g.taint;
        g.emit(&format!("pushl ${mask:#x}\n  pushl ${step}\n  call dump"));
    }
    g.emit("movl saved_esp, %esp");
    g.emit("popal");
    g.emit("xorl %eax, %eax");
    g.emit("ret");
    for line in g.asm.lines() {
        writeln!(c, "\"{line}\\n\"").unwrap();
    }
    c.push_str(");\n");
    c
}

const PRELUDE: &str = r#"#include "rt.h"

uint32_t saved_esp;
static uint32_t steps;

/* frame: edi esi ebp esp ebx edx ecx eax eflags ret step mask */
void dump_c(uint32_t *f)
{
    uint32_t h = 0x811c9dc5, i;
    extern uint8_t buf[512];
    for (i = 0; i < 512; i++)
        h = (h ^ buf[i]) * 0x01000193;
    rt_printf("%04u a=%08x b=%08x c=%08x d=%08x si=%08x di=%08x bp=%08x sp=%08x f=%03x m=%08x\n",
              f[10], f[7], f[4], f[6], f[5], f[1], f[0], f[2], f[3] + 16, f[8] & f[11], h);
    steps++;
}

__asm__(".text\n"
        "dump:\n"
        "  pushfl\n"
        "  pushal\n"
        "  cld\n"
        "  pushl %esp\n"
        "  call dump_c\n"
        "  addl $4, %esp\n"
        "  popal\n"
        "  popfl\n"
        "  ret $8\n");

"#;
