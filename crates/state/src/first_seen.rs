//! "Once per offender": a bounded memory of who has already been logged, so hostile input
//! yields one operator line per sender rather than one per packet or request, and a flood of
//! fresh senders costs bounded memory (past the cap the memory starts over; a sender may then be
//! logged a second time, never unboundedly often).

use std::collections::HashSet;
use std::hash::Hash;

#[derive(Debug, Clone)]
pub struct FirstSeen<K> {
    seen: HashSet<K>,
    cap: usize,
}

/// Senders remembered by default: a few thousand keys, a few hundred KiB at most.
pub const DEFAULT_CAP: usize = 4096;

impl<K: Eq + Hash> Default for FirstSeen<K> {
    fn default() -> Self {
        Self::new(DEFAULT_CAP)
    }
}

impl<K: Eq + Hash> FirstSeen<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            seen: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// `true` the first time `key` is seen (the caller logs then) and `false` after.
    pub fn first(&mut self, key: K) -> bool {
        if self.seen.len() >= self.cap && !self.seen.contains(&key) {
            self.seen.clear();
        }
        self.seen.insert(key)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_first_once_and_memory_stays_under_the_cap() {
        let mut f = FirstSeen::new(3);
        assert!(f.first("a"));
        assert!(!f.first("a"));
        assert!(f.first("b") && f.first("c"));
        assert!(!f.first("c"), "a known key at the cap is not forgotten");
        assert_eq!(f.len(), 3);
        // A fourth sender starts the memory over instead of growing it.
        assert!(f.first("d"));
        assert_eq!(f.len(), 1);
        assert!(f.first("a"), "forgotten, so logged once more");
        for i in 0..10_000 {
            f.first(if i % 2 == 0 { "x" } else { "y" });
            assert!(f.len() <= 3);
        }
        let mut zero = FirstSeen::new(0);
        assert!(zero.first(1) && !zero.first(1));
    }
}
