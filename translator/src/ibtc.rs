//! The indirect-branch translation cache: a direct-mapped table from guest
//! EIP to host code address, probed by emitted code without touching flags.
//!
//! Invariant: entry `i` is either empty (its key's low 16 bits differ from
//! `i`, so no EIP can match it) or maps a guest EIP whose low 16 bits are
//! `i` to the entry of a live translation for the current mode.

/// Number of entries (indexed by the low 16 bits of the guest EIP).
pub const ENTRIES: usize = 1 << 16;

/// One table entry: 16 bytes, key first.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Entry {
    key: u32,
    _pad: u32,
    host: u64,
}

/// The table.
pub struct Ibtc {
    entries: Box<[Entry]>,
    /// Lookups that missed (counted by the run loop).
    pub misses: u64,
}

impl Default for Ibtc {
    fn default() -> Self {
        let mut t = Ibtc {
            entries: vec![
                Entry {
                    key: 0,
                    _pad: 0,
                    host: 0
                };
                ENTRIES
            ]
            .into_boxed_slice(),
            misses: 0,
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
            e.host = 0;
        }
    }

    /// Maps `eip` to `host`.
    pub fn insert(&mut self, eip: u32, host: u64) {
        let e = &mut self.entries[(eip & 0xffff) as usize];
        e.key = eip;
        e.host = host;
    }

    /// Drops entries whose host address lies in `[start, end)`.
    pub fn remove_range(&mut self, start: u64, end: u64) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            if e.host >= start && e.host < end {
                e.key = !(i as u32);
                e.host = 0;
            }
        }
    }

    /// The mapping of `eip`, if any.
    pub fn get(&self, eip: u32) -> Option<u64> {
        let e = &self.entries[(eip & 0xffff) as usize];
        (e.key == eip && e.host != 0).then_some(e.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_matches_no_eip() {
        let t = Ibtc::default();
        for eip in [0u32, 1, 0xffff, 0x10000, 0xffff_ffff] {
            assert_eq!(t.get(eip), None);
        }
    }

    #[test]
    fn insert_then_get_and_remove_range() {
        let mut t = Ibtc::default();
        t.insert(0x1234_5678, 0x7000);
        assert_eq!(t.get(0x1234_5678), Some(0x7000));
        assert_eq!(t.get(0x0000_5678), None);
        t.remove_range(0x7000, 0x7001);
        assert_eq!(t.get(0x1234_5678), None);
    }
}
