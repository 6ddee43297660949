//! Removing Firehose duplicates across objects and runs, within a horizon.
//!
//! Each committed batch stores the keys of the rows it wrote (`ledger::Commit::dedup_keys`). A
//! run loads the keys of every batch whose newest drop arrived within the horizon of the oldest
//! drop it is about to read, and adds each new batch's keys as it commits. Memory is 16 bytes a
//! key: a week of the seed's sizing is a few MB.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::Result;
use crate::ledger::{Ledger, LedgerState};

/// The keys are already xxh3 hashes: use their low bits as the hash instead of hashing again.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

/// Key -> arrival (epoch ms) of the drop it was first seen in.
pub type KeyMap = HashMap<u128, i64, BuildHasherDefault<KeyHasher>>;

pub struct DedupIndex {
    seen: KeyMap,
    batches: VecDeque<(i64, Vec<u128>)>,
    horizon_ms: i64,
}

impl DedupIndex {
    /// Loads the keys of committed batches that can still hold duplicates of drops arriving
    /// at `from_ms` or later.
    /// (A checkpoint keeps the keys of a day's batches in one segment with each key's arrival.)
    pub async fn load(ledger: &Ledger, state: &LedgerState, horizon_ms: i64, from_ms: i64) -> Result<DedupIndex> {
        let mut idx = DedupIndex { seen: KeyMap::default(), batches: VecDeque::new(), horizon_ms };
        let mut refs = state.dedup_batches();
        refs.retain(|b| b.max_arrival_ms >= from_ms.saturating_sub(horizon_ms));
        refs.sort_by_key(|b| b.max_arrival_ms);
        let loaded = futures::future::try_join_all(refs.iter().map(|b| ledger.dedup_keys_of(b))).await?;
        for (b, pairs) in refs.iter().zip(loaded) {
            for (k, t) in &pairs {
                let e = idx.seen.entry(*k).or_insert(*t);
                *e = (*e).max(*t);
            }
            idx.batches.push_back((b.max_arrival_ms, pairs.into_iter().map(|(k, _)| k).collect()));
        }
        Ok(idx)
    }

    /// True when `key` was not seen within the horizon before a drop arriving at `arrival_ms`
    /// (and records it as seen then).
    pub fn insert(&mut self, key: u128, arrival_ms: i64) -> bool {
        // One probe of the map per key (most keys are new: a lookup, then an insert, was two).
        match self.seen.entry(key) {
            Entry::Occupied(e) if *e.get() >= arrival_ms - self.horizon_ms => false,
            Entry::Occupied(mut e) => {
                *e.get_mut() = arrival_ms;
                true
            }
            Entry::Vacant(e) => {
                e.insert(arrival_ms);
                true
            }
        }
    }

    /// Records a committed batch's keys (already inserted) and forgets batches that fell out
    /// of the horizon.
    pub fn committed(&mut self, max_arrival_ms: i64, keys: Vec<u128>) {
        self.batches.push_back((max_arrival_ms, keys));
        let newest = self.batches.iter().map(|(t, _)| *t).max().unwrap_or(max_arrival_ms);
        while let Some((t, _)) = self.batches.front() {
            if *t >= newest - self.horizon_ms {
                break;
            }
            let (_, old) = self.batches.pop_front().expect("front exists");
            for k in old {
                // Only if no newer batch saw the key again (one probe: found and removed).
                if let Entry::Occupied(e) = self.seen.entry(k)
                    && *e.get() < newest - self.horizon_ms
                {
                    e.remove();
                }
            }
        }
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
    fn keys_leave_after_the_horizon() {
        let mut d = DedupIndex { seen: KeyMap::default(), batches: VecDeque::new(), horizon_ms: 10 };
        assert!(d.insert(1, 0));
        assert!(!d.insert(1, 0));
        d.committed(0, vec![1]);
        assert!(d.insert(2, 10));
        assert!(!d.insert(1, 10), "still inside the horizon");
        assert!(d.insert(1, 11), "seen at 0, more than 10 before 11");
        assert!(!d.insert(1, 12), "seen again at 11");
        d.committed(11, vec![2, 1]);
        assert!(d.insert(3, 30));
        d.committed(30, vec![3]);
        assert_eq!(d.len(), 1, "keys of batches 0 and 11 left the horizon");
    }
}
