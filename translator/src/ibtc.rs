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

/// Tables kept for modes the guest left (a guest switching between ring
/// 3 and ring 0 keeps two).
pub const KEPT_TABLES: usize = 4;

/// One table per mode the guest ran in recently, so that a mode switch (a
/// system call, an interrupt from user code) swaps tables instead of
/// clearing one.
///
/// Invariant: `current` answers for `current_key`; every kept table either
/// answers for its key or is marked stale and is cleared before it answers
/// again. Table entries live in boxes, so a table's [`Ibtc::addr`] stays
/// the same while it moves between `current` and the kept list.
pub struct IbtcSet<K> {
    current: Ibtc,
    current_key: K,
    /// Most recently left first: (key, table, stale).
    kept: Vec<(K, Ibtc, bool)>,
}

impl<K: PartialEq + Copy> IbtcSet<K> {
    /// One empty table, for `key`.
    pub fn new(key: K) -> Self {
        IbtcSet {
            current: Ibtc::default(),
            current_key: key,
            kept: Vec::new(),
        }
    }

    /// The table of the current mode.
    pub fn current(&self) -> &Ibtc {
        &self.current
    }

    /// The table of the current mode, to insert into.
    pub fn current_mut(&mut self) -> &mut Ibtc {
        &mut self.current
    }

    /// Makes the table of `key` current (a kept one, a new one, or the
    /// least recently used one cleared); returns whether the current table
    /// changed.
    pub fn switch_to(&mut self, key: K) -> bool {
        if key == self.current_key {
            return false;
        }
        let found = self.kept.iter().position(|(k, _, _)| *k == key);
        let i = match found {
            Some(i) => i,
            None if self.kept.len() < KEPT_TABLES => {
                self.kept.push((key, Ibtc::default(), false));
                self.kept.len() - 1
            }
            None => {
                // The least recently used table goes to the new mode.
                let last = self.kept.len() - 1;
                self.kept[last].0 = key;
                self.kept[last].2 = true;
                last
            }
        };
        // Entry i moves to the front (most recently left order kept), then
        // trades places with the current table.
        self.kept[..=i].rotate_right(1);
        let front = &mut self.kept[0];
        if std::mem::take(&mut front.2) {
            front.1.clear();
        }
        std::mem::swap(&mut self.current, &mut front.1);
        std::mem::swap(&mut self.current_key, &mut front.0);
        true
    }

    /// Empties every table: the current one now, the kept ones before they
    /// are used again.
    pub fn clear_all(&mut self) {
        self.current.clear();
        for (_, _, stale) in &mut self.kept {
            *stale = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_back_finds_the_table_of_that_mode() {
        let mut set = IbtcSet::new(0u8);
        set.current_mut().insert(0x1000, 0x7000);
        let ring0 = set.current().addr();
        assert!(set.switch_to(3));
        assert_eq!(set.current().get(0x1000), None);
        set.current_mut().insert(0x1000, 0x8000);
        assert!(set.switch_to(0));
        assert_eq!(set.current().addr(), ring0);
        assert_eq!(set.current().get(0x1000), Some(0x7000));
        assert!(!set.switch_to(0));
    }

    #[test]
    fn clear_all_empties_kept_tables_before_they_answer() {
        let mut set = IbtcSet::new(0u8);
        set.current_mut().insert(0x1000, 0x7000);
        set.switch_to(3);
        set.current_mut().insert(0x2000, 0x8000);
        set.clear_all();
        assert_eq!(set.current().get(0x2000), None);
        set.switch_to(0);
        assert_eq!(set.current().get(0x1000), None);
    }

    #[test]
    fn least_recently_used_table_is_reused_cleared() {
        let mut set = IbtcSet::new(0u32);
        for key in 0..=KEPT_TABLES as u32 {
            set.current_mut().insert(0x1000, 0x7000 + u64::from(key));
            set.switch_to(key + 1);
        }
        // Key 0's table was the oldest and went to the newest mode.
        assert_eq!(set.current().get(0x1000), None);
        set.switch_to(0);
        assert_eq!(set.current().get(0x1000), None);
        set.switch_to(2);
        assert_eq!(set.current().get(0x1000), Some(0x7002));
    }

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
