//! Stores to frames that hold translated code.
//!
//! A store that does not touch a translated byte (data next to code) does
//! not kill the frame's translations: the instruction runs alone with the
//! page open for it, and the frame is write-protected again. A frame that
//! keeps taking such stores (or real self-modification) becomes
//! *self-checking*: it is no longer write-protected for code, its
//! translations compare their own bytes with guest memory at every entry
//! (and end after every store), and a mismatch retranslates the unit.
//! Stores to it then cost what stores anywhere cost.
//!
//! Invariants:
//! - `code_bytes` marks, per frame, every byte some live translation was
//!   made from (a superset after translations die: it is emptied with
//!   them, per frame).
//! - A self-checking frame is never traced for code, and every translation
//!   made from it (as its first frame) checks itself.

use super::BtCore;
use iced_x86::{Instruction, InstructionInfoFactory, OpAccess};
use shadowmmu::PAGE_SIZE;

/// Stores to one code frame that took a host fault, after which the frame
/// becomes self-checking.
pub(super) const SELF_CHECK_AFTER_FAULTS: u32 = 8;

/// Bytes of translated code of one frame, one bit per byte.
pub(super) type ByteMap = Box<[u64; (PAGE_SIZE / 64) as usize]>;

/// What a store to a code frame does to its translations.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CodeStore {
    /// The store does not touch translated bytes: they survive.
    Spares,
    /// The store (or one we cannot bound) may change translated bytes.
    Kills,
}

impl BtCore {
    /// Notes that a translation was made from `len` bytes at `offset` of
    /// `frame`.
    pub(super) fn note_code_bytes(&mut self, frame: u32, offset: u32, len: u32) {
        let map = self
            .code_bytes
            .entry(frame)
            .or_insert_with(|| Box::new([0; (PAGE_SIZE / 64) as usize]));
        let end = (offset + len).min(PAGE_SIZE);
        for b in offset..end {
            map[(b / 64) as usize] |= 1 << (b % 64);
        }
    }

    /// Whether any translated byte of `frame` lies in `start..end`.
    fn touches_code(&self, frame: u32, start: u32, end: u32) -> bool {
        let Some(map) = self.code_bytes.get(&frame) else {
            return false;
        };
        (start..end.min(PAGE_SIZE)).any(|b| map[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }

    /// Classifies the store at EIP that faulted writing linear `lin` in
    /// code frame `frame`, and counts it towards making the frame
    /// self-checking.
    pub(super) fn classify_code_store(&mut self, frame: u32, lin: u32) -> CodeStore {
        let count = self.code_store_faults.entry(frame).or_insert(0);
        *count += 1;
        if *count >= SELF_CHECK_AFTER_FAULTS {
            self.code_store_faults.remove(&frame);
            self.make_self_checking(frame);
            return CodeStore::Kills;
        }
        let Some(len) = self.store_width() else {
            return CodeStore::Kills;
        };
        let start = lin & (PAGE_SIZE - 1);
        if self.touches_code(frame, start, start + len) {
            CodeStore::Kills
        } else {
            CodeStore::Spares
        }
    }

    /// The width of the one memory write the instruction at EIP makes, if
    /// it makes exactly one of a known width (not a string instruction,
    /// whose stores run on).
    fn store_width(&mut self) -> Option<u32> {
        let insn = super::exec::fetch(self).ok()?;
        store_width_of(&insn)
    }

    /// Stops write-protecting `frame` for code: its translations die, and
    /// the ones made from it from now on check themselves.
    fn make_self_checking(&mut self, frame: u32) {
        self.stats.self_checking_frames += 1;
        self.untrace_code_frame(frame);
        self.watcher.set_self_checking(frame);
    }

    /// A store that spares the translations of `frame` runs alone through
    /// the page it faulted on, opened for it.
    pub(super) fn open_code_for_one_write(&mut self, frame: u32, lpage: u32) {
        self.stats.smc_spared += 1;
        if !self.pending_code_writes.contains(&frame) {
            self.pending_code_writes.push(frame);
        }
        self.open_alias_for_write(lpage);
    }

    /// After the instruction that wrote next to translated code ran: the
    /// frames it was let to write are write-protected again.
    pub(super) fn settle_code_writes(&mut self) {
        for frame in std::mem::take(&mut self.pending_code_writes) {
            if self.watcher.write_protected(frame) {
                self.protect_frame(frame);
            }
        }
    }
}

/// The width of the single memory write `insn` makes, if it makes exactly
/// one and is not a string instruction.
fn store_width_of(insn: &Instruction) -> Option<u32> {
    if insn.is_string_instruction() {
        return None;
    }
    let mut info = InstructionInfoFactory::new();
    let writes: Vec<u32> = info
        .info(insn)
        .used_memory()
        .iter()
        .filter(|m| {
            matches!(
                m.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        })
        .map(|m| m.memory_size().size() as u32)
        .collect();
    match writes[..] {
        [w] if (1..=16).contains(&w) => Some(w),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Instruction {
        iced_x86::Decoder::with_ip(32, bytes, 0x1000, iced_x86::DecoderOptions::NONE).decode()
    }

    #[test]
    fn the_width_of_a_plain_store_is_known_and_string_stores_are_unbounded() {
        assert_eq!(store_width_of(&decode(&[0x89, 0x03])), Some(4)); // mov [ebx], eax
        assert_eq!(store_width_of(&decode(&[0x88, 0x03])), Some(1)); // mov [ebx], al
        assert_eq!(store_width_of(&decode(&[0x66, 0x89, 0x03])), Some(2));
        assert_eq!(store_width_of(&decode(&[0xff, 0x03])), Some(4)); // inc dword [ebx]
        assert_eq!(store_width_of(&decode(&[0xf3, 0xaa])), None); // rep stosb
        assert_eq!(store_width_of(&decode(&[0x8b, 0x03])), None); // a load
        assert_eq!(store_width_of(&decode(&[0x0f, 0xae, 0x03])), None); // fxsave
    }
}
