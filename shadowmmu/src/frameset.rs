//! A set of guest frame numbers as a bitmap: constant-time membership for
//! the checks made on every monitor write to guest memory.
//!
//! Invariant: bit `f` of word `f / 64` is set exactly when frame `f` is in
//! the set; `len` counts the set bits. Frames beyond the bitmap are never
//! members (inserting one is refused).

/// A bitmap over the frames `0..capacity`.
#[derive(Clone, Debug)]
pub struct FrameSet {
    words: Vec<u64>,
    len: usize,
}

impl FrameSet {
    /// An empty set able to hold frames `0..capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        FrameSet {
            words: vec![0; capacity.div_ceil(64)],
            len: 0,
        }
    }

    fn slot(&self, frame: u32) -> Option<(usize, u64)> {
        let word = frame as usize / 64;
        (word < self.words.len()).then_some((word, 1u64 << (frame % 64)))
    }

    /// Adds `frame`; false if it was already there or lies beyond the
    /// capacity.
    pub fn insert(&mut self, frame: u32) -> bool {
        let Some((word, bit)) = self.slot(frame) else {
            return false;
        };
        let was = self.words[word] & bit != 0;
        self.words[word] |= bit;
        if !was {
            self.len += 1;
        }
        !was
    }

    /// Removes `frame`; false if it was not there.
    pub fn remove(&mut self, frame: u32) -> bool {
        let Some((word, bit)) = self.slot(frame) else {
            return false;
        };
        let was = self.words[word] & bit != 0;
        self.words[word] &= !bit;
        if was {
            self.len -= 1;
        }
        was
    }

    /// Whether `frame` is in the set.
    pub fn contains(&self, frame: u32) -> bool {
        self.slot(frame)
            .is_some_and(|(word, bit)| self.words[word] & bit != 0)
    }

    /// Number of frames in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every frame.
    pub fn clear(&mut self) {
        if self.len != 0 {
            self.words.fill(0);
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_contains_agree() {
        let mut s = FrameSet::with_capacity(200);
        assert!(s.insert(0));
        assert!(s.insert(63));
        assert!(s.insert(64));
        assert!(s.insert(199));
        assert!(!s.insert(64));
        assert_eq!(s.len(), 4);
        assert!(s.contains(63) && s.contains(64) && !s.contains(65));
        assert!(s.remove(63));
        assert!(!s.remove(63));
        assert!(!s.contains(63));
        assert_eq!(s.len(), 3);
        s.clear();
        assert!(s.is_empty() && !s.contains(0) && !s.contains(199));
    }

    #[test]
    fn frames_beyond_the_capacity_are_never_members() {
        let mut s = FrameSet::with_capacity(64);
        assert!(!s.insert(64));
        assert!(!s.insert(u32::MAX));
        assert!(!s.contains(u32::MAX));
        assert!(!s.remove(1000));
        assert!(s.is_empty());
    }
}
