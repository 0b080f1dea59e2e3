//! The indirect-branch translation cache: a direct-mapped table from
//! (guest EIP, mode tag) to host code address, probed by emitted code
//! without touching flags.
//!
//! Each translation mode the run loop uses gets a small number, its *tag*
//! (`UnitRequest::ibtc_tag`); an entry matches only a lookup with the same
//! EIP and tag, so translations of several modes (ring 3 and ring 0 code)
//! share one table and a mode change, inline or in the monitor, needs no
//! table change.
//!
//! Invariant: entry `i` is either empty (its EIP's low 16 bits differ from
//! `i`, so no EIP can match it) or maps a guest EIP whose low 16 bits are
//! `i`, with a tag, to the entry of a live translation for that EIP in the
//! mode of that tag.

/// Number of entries (indexed by the low 16 bits of the guest EIP).
pub const ENTRIES: usize = 1 << 16;

/// One table entry: 16 bytes, the 64-bit key (EIP, then tag) first.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Entry {
    key: u32,
    tag: u32,
    host: u64,
}

/// The table.
pub struct Ibtc {
    entries: Box<[Entry]>,
}

impl Default for Ibtc {
    fn default() -> Self {
        let mut t = Ibtc {
            entries: vec![
                Entry {
                    key: 0,
                    tag: 0,
                    host: 0
                };
                ENTRIES
            ]
            .into_boxed_slice(),
        };
        t.clear();
        t
    }
}

impl Ibtc {
    /// Host address of the table (for `CpuState::ibtc`).
    pub fn addr(&self) -> u64 {
        self.entries.as_ptr() as u64
    }

    /// Empties the table.
    pub fn clear(&mut self) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.key = !(i as u32);
            e.tag = 0;
            e.host = 0;
        }
    }

    /// Maps `eip` in the mode of `tag` to `host`.
    pub fn insert(&mut self, eip: u32, tag: u32, host: u64) {
        let e = &mut self.entries[(eip & 0xffff) as usize];
        e.key = eip;
        e.tag = tag;
        e.host = host;
    }

    /// Drops entries whose host address lies in `[start, end)`.
    pub fn remove_range(&mut self, start: u64, end: u64) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.host >= start && e.host < end {
                e.key = !(i as u32);
                e.tag = 0;
                e.host = 0;
            }
        }
    }

    /// The mapping of `eip` in the mode of `tag`, if any.
    pub fn get(&self, eip: u32, tag: u32) -> Option<u64> {
        let e = &self.entries[(eip & 0xffff) as usize];
        (e.key == eip && e.tag == tag && e.host != 0).then_some(e.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_matches_no_eip() {
        let t = Ibtc::default();
        for eip in [0u32, 1, 0xffff, 0x10000, 0xffff_ffff] {
            assert_eq!(t.get(eip, 0), None);
        }
    }

    #[test]
    fn insert_then_get_and_remove_range() {
        let mut t = Ibtc::default();
        t.insert(0x1234_5678, 0, 0x7000);
        assert_eq!(t.get(0x1234_5678, 0), Some(0x7000));
        assert_eq!(t.get(0x0000_5678, 0), None);
        t.remove_range(0x7000, 0x7001);
        assert_eq!(t.get(0x1234_5678, 0), None);
    }

    #[test]
    fn an_entry_answers_only_for_its_mode_tag() {
        let mut t = Ibtc::default();
        t.insert(0x1000, 3, 0x7000);
        assert_eq!(t.get(0x1000, 3), Some(0x7000));
        assert_eq!(t.get(0x1000, 0), None);
        t.insert(0x1000, 0, 0x8000);
        assert_eq!(t.get(0x1000, 0), Some(0x8000));
        assert_eq!(t.get(0x1000, 3), None, "same slot: the newer entry won");
    }
}
