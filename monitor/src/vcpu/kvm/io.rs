//! Port I/O exits of the KVM backend, as the shared vCPU interface hands
//! them out: one element per exit, with the register file the VMware
//! backdoor reads and writes.
//!
//! KVM reports an I/O exit as (port, size, count, data) and does not say
//! whether the instruction was IN/OUT or INS/OUTS, nor where it left the
//! registers. What it does (arch/x86/kvm/x86.c, emulate.c):
//! - IN and INS stop *before* the instruction (or the batch of INS
//!   elements) retires; the next `KVM_RUN` completes it from the data.
//! - OUTS always goes through KVM's instruction emulator, which has already
//!   advanced ESI, ECX (with REP) and EIP (unless REP elements remain, in
//!   which case EIP stays on the instruction) when it exits. A plain OUT
//!   either did the same (emulated, as under `kvm_pvm`) or is completed by
//!   the next `KVM_RUN` (the fast path of VT-x/AMD-V).
//!
//! So an OUT exit is first completed without running the guest
//! (`immediate_exit`), which leaves EIP after the instruction except for a
//! REP OUTS restart, and then classified: a REP OUTS of the exit's size on
//! port DX with ECX > 0 at EIP is a restart; otherwise the instruction
//! ended at EIP, and its last byte tells OUTS (6E/6F) from OUT (EE/EF, or
//! E6/E7 with the port as immediate). An IN exit is classified by decoding
//! the instruction at EIP.
//!
//! Invariants:
//! - The handler of a string element sees the registers as they were
//!   before the instruction's first element ([`StringIo`] undoes KVM's
//!   advance of ECX and ESI for OUTS), so the high-bandwidth backdoor
//!   reads its count and buffer where the guest put them.
//! - Registers a handler sets during a string element are kept aside and
//!   applied once the element is finished: as the final state when the
//!   handler completed the whole instruction, otherwise translated back
//!   into KVM's view.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

/// The longest x86 instruction.
pub(super) const MAX_INSTRUCTION: usize = 15;

/// How a string I/O instruction looks to its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) struct StringIo {
    /// It has a REP prefix.
    pub rep: bool,
    /// A REP OUTS that KVM restarts (EIP on it): its length.
    pub restart_len: Option<u32>,
    /// Added to KVM's ECX for the handler's view.
    pub ecx_add: u32,
    /// Added to KVM's ESI for the handler's view.
    pub esi_add: u32,
}

impl StringIo {
    /// The view of an OUTS that already moved `bytes` bytes (`elements`
    /// elements) with direction flag `df`.
    pub(super) fn outs(
        rep: bool,
        restart_len: Option<u32>,
        elements: u32,
        bytes: u32,
        df: bool,
    ) -> StringIo {
        StringIo {
            rep,
            restart_len,
            ecx_add: if rep { elements } else { 0 },
            esi_add: if df { bytes } else { bytes.wrapping_neg() },
        }
    }

    /// KVM's general registers as the handler sees them.
    pub(super) fn view(&self, mut gpr: [u32; 8]) -> [u32; 8] {
        gpr[1] = gpr[1].wrapping_add(self.ecx_add);
        gpr[6] = gpr[6].wrapping_add(self.esi_add);
        gpr
    }

    /// The handler's registers in KVM's view.
    pub(super) fn unview(&self, mut gpr: [u32; 8]) -> [u32; 8] {
        gpr[1] = gpr[1].wrapping_sub(self.ecx_add);
        gpr[6] = gpr[6].wrapping_sub(self.esi_add);
        gpr
    }
}

/// One I/O exit of KVM, handed out element by element.
#[derive(Clone, Debug)]
pub(super) struct IoExit {
    /// The port.
    pub port: u16,
    /// Bytes per element (1, 2 or 4).
    pub size: u8,
    /// Elements in this exit.
    pub count: u32,
    /// An input (IN/INS).
    pub input: bool,
    /// Offset of the data in the `kvm_run` mapping.
    pub data_offset: usize,
    /// Elements handed out so far.
    pub handed: u32,
    /// INS/OUTS, and how the handler sees it.
    pub string: Option<StringIo>,
    /// The handler completed the whole string instruction itself.
    pub string_done: bool,
    /// General registers a handler set during a string element.
    pub handler_gpr: Option<[u32; 8]>,
}

/// Decodes the instruction in `bytes` (fetched at `ip`) with the code
/// segment's default size `bitness`; `None` if they do not decode.
pub(super) fn decode(bytes: &[u8], bitness: u32, ip: u64) -> Option<Instruction> {
    let mut decoder = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    (!instruction.is_invalid()).then_some(instruction)
}

fn string_size(mnemonic: Mnemonic) -> Option<u8> {
    match mnemonic {
        Mnemonic::Insb | Mnemonic::Outsb => Some(1),
        Mnemonic::Insw | Mnemonic::Outsw => Some(2),
        Mnemonic::Insd | Mnemonic::Outsd => Some(4),
        _ => None,
    }
}

fn has_rep(instruction: &Instruction) -> bool {
    instruction.has_rep_prefix() || instruction.has_repne_prefix()
}

/// An IN exit: the instruction at EIP (`instruction`) is INS or IN.
pub(super) fn classify_in(instruction: Option<&Instruction>) -> Option<StringIo> {
    let instruction = instruction?;
    matches!(
        instruction.mnemonic(),
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd
    )
    .then(|| StringIo {
        rep: has_rep(instruction),
        ..StringIo::default()
    })
}

/// What an OUT exit's instruction was, from the completed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OutKind {
    /// OUT.
    Plain,
    /// OUTS, finished (EIP after it).
    StringDone {
        /// It had a REP prefix.
        rep: bool,
    },
    /// REP OUTS that continues (EIP on it), of this length.
    StringRestart {
        /// Its length.
        len: u32,
    },
}

/// Classifies an OUT exit of `size`-byte elements on `port`, after its
/// completion: `at_eip` decodes the bytes at EIP, `before_eip` holds up to
/// [`MAX_INSTRUCTION`] bytes that end at EIP (fewer when they cannot be
/// read), `dx` and `ecx` are the registers.
pub(super) fn classify_out(
    at_eip: Option<&Instruction>,
    before_eip: &[u8],
    port: u16,
    size: u8,
    dx: u16,
    ecx: u32,
) -> OutKind {
    if let Some(instruction) = at_eip {
        let restart = has_rep(instruction)
            && string_size(instruction.mnemonic()) == Some(size)
            && matches!(
                instruction.mnemonic(),
                Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd
            )
            && dx == port
            && ecx != 0;
        if restart {
            return OutKind::StringRestart {
                len: instruction.len() as u32,
            };
        }
    }
    match before_eip.split_last() {
        Some((0x6e | 0x6f, prefixes)) => OutKind::StringDone {
            rep: rep_in_prefixes(prefixes),
        },
        _ => OutKind::Plain,
    }
}

/// Whether the prefix bytes that end `bytes` include REP/REPNE.
fn rep_in_prefixes(bytes: &[u8]) -> bool {
    const PREFIXES: [u8; 10] = [0xf3, 0xf2, 0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65];
    bytes
        .iter()
        .rev()
        .take(MAX_INSTRUCTION - 1)
        .take_while(|b| PREFIXES.contains(b))
        .any(|&b| b == 0xf3 || b == 0xf2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bytes: &[u8]) -> Option<Instruction> {
        decode(bytes, 32, 0x1000)
    }

    #[test]
    fn in_exits_are_told_apart_by_the_instruction() {
        assert_eq!(classify_in(at(&[0xed]).as_ref()), None, "in eax, dx");
        assert_eq!(
            classify_in(at(&[0xf3, 0x6c]).as_ref()),
            Some(StringIo {
                rep: true,
                ..StringIo::default()
            }),
            "rep insb"
        );
        assert_eq!(
            classify_in(at(&[0x6d]).as_ref()).map(|s| s.rep),
            Some(false),
            "insd"
        );
    }

    #[test]
    fn a_rep_outs_with_elements_left_is_a_restart() {
        let rep_outsb = at(&[0xf3, 0x6e]);
        assert_eq!(
            classify_out(rep_outsb.as_ref(), &[0x90], 0x5659, 1, 0x5659, 3),
            OutKind::StringRestart { len: 2 }
        );
        // Another port, size or no count left: the instruction ended.
        assert_eq!(
            classify_out(rep_outsb.as_ref(), &[0x90], 0x5659, 1, 0x3f8, 3),
            OutKind::Plain
        );
        assert_eq!(
            classify_out(rep_outsb.as_ref(), &[0xf3, 0x6e], 0x5659, 1, 0x5659, 0),
            OutKind::StringDone { rep: true }
        );
    }

    #[test]
    fn a_finished_out_is_told_by_its_last_byte() {
        let next = at(&[0x90]);
        assert_eq!(
            classify_out(next.as_ref(), &[0x89, 0xc8, 0xee], 0x3f8, 1, 0x3f8, 5),
            OutKind::Plain
        );
        assert_eq!(
            classify_out(next.as_ref(), &[0xe6, 0xf4], 0xf4, 1, 0, 5),
            OutKind::Plain
        );
        assert_eq!(
            classify_out(next.as_ref(), &[0x90, 0x6e], 0x3f8, 1, 0x3f8, 5),
            OutKind::StringDone { rep: false }
        );
        assert_eq!(
            classify_out(next.as_ref(), &[0x90, 0xf3, 0x66, 0x6f], 0x3f8, 2, 0x3f8, 0),
            OutKind::StringDone { rep: true }
        );
        assert_eq!(classify_out(None, &[], 0x3f8, 1, 0x3f8, 0), OutKind::Plain);
    }

    #[test]
    fn the_outs_view_undoes_kvms_advance_and_round_trips() {
        // rep outsb of 1 element, DF = 0: KVM left ECX - 1 and ESI + 1.
        let view = StringIo::outs(true, None, 1, 1, false);
        let kvm = [0, 4, 0, 0, 0, 0, 0x2001, 0];
        let seen = view.view(kvm);
        assert_eq!((seen[1], seen[6]), (5, 0x2000));
        assert_eq!(view.unview(seen), kvm);
        // DF = 1, no REP: ESI went down, ECX untouched.
        let down = StringIo::outs(false, None, 1, 2, true);
        assert_eq!(down.view(kvm)[6], 0x2003);
        assert_eq!(down.view(kvm)[1], 4);
    }
}
