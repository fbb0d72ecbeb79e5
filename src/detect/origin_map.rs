//! A key's origins ([`OriginMap`]): the per-pair records of the state, the largest part of it.
//!
//! A key reads from a handful of origins, and a fleet has hundreds of thousands of keys. A
//! hash table per key kept each pair in a 64-byte slot at between 44% and 88% load (a table of
//! 16 slots for 9 to 14 origins, of 32 for 15 to 28), plus its control bytes. Here the origins
//! and their entries are two arrays in the order the origins came, grown by half (1, 2, 3, 4,
//! 6, 9, 13, ...), searched from the start while there are at most [`LINEAR`] of them (a few
//! cache lines of addresses, read in order), through a hash index beyond: a spray of
//! thousands of origins costs what a hash table costs.
//!
//! Iteration is in arrival order (a removal moves the last origin into the gap). Nothing the
//! detector outputs depends on it: every list built from the origins is sorted, every count
//! and sum is order-free. Snapshots keep the order (a map in it); equality ignores it.

use super::state::OriginEntry;
use super::OriginKey;
use rustc_hash::FxHashMap;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Origins searched one by one; past this many a key keeps a hash index of them.
const LINEAR: usize = 32;

#[derive(Clone, Debug, Default)]
pub(super) struct OriginMap {
    keys: Vec<OriginKey>,
    entries: Vec<OriginEntry>,
    /// Where each origin is, while there are more than [`LINEAR`].
    index: Option<Box<FxHashMap<OriginKey, u32>>>,
}

impl OriginMap {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn position(&self, origin: &OriginKey) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(origin).map(|&i| i as usize),
            None => self.keys.iter().position(|k| k == origin),
        }
    }

    pub(super) fn contains_key(&self, origin: &OriginKey) -> bool {
        self.position(origin).is_some()
    }

    pub(super) fn get(&self, origin: &OriginKey) -> Option<&OriginEntry> {
        self.position(origin).and_then(|i| self.entries.get(i))
    }

    pub(super) fn get_mut(&mut self, origin: &OriginKey) -> Option<&mut OriginEntry> {
        self.position(origin).and_then(|i| self.entries.get_mut(i))
    }

    /// The entry of `origin`, made by `new` when there is none (then also true).
    pub(super) fn get_or_insert_with(
        &mut self,
        origin: OriginKey,
        new: impl FnOnce() -> OriginEntry,
    ) -> (&mut OriginEntry, bool) {
        match self.position(&origin) {
            Some(i) => (&mut self.entries[i], false),
            None => {
                let i = self.push(origin, new());
                (&mut self.entries[i], true)
            }
        }
    }

    /// Sets the entry of `origin`, returning the one it replaces.
    pub(super) fn insert(&mut self, origin: OriginKey, entry: OriginEntry) -> Option<OriginEntry> {
        match self.position(&origin) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i], entry)),
            None => {
                self.push(origin, entry);
                None
            }
        }
    }

    fn push(&mut self, origin: OriginKey, entry: OriginEntry) -> usize {
        let len = self.keys.len();
        if len == self.keys.capacity() {
            // Grown by half, not doubled: the arrays are most of the state.
            let more = super::grow::growth(len);
            self.keys.reserve_exact(more);
            self.entries.reserve_exact(more);
        }
        self.keys.push(origin);
        self.entries.push(entry);
        if let Some(index) = &mut self.index {
            index.insert(origin, len as u32);
        } else if len + 1 > LINEAR {
            self.reindex();
        }
        len
    }

    pub(super) fn remove(&mut self, origin: &OriginKey) -> Option<OriginEntry> {
        let i = self.position(origin)?;
        self.keys.swap_remove(i);
        let entry = self.entries.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(origin);
            if let Some(moved) = self.keys.get(i) {
                index.insert(*moved, i as u32);
            }
        }
        Some(entry)
    }

    /// Keeps the origins `keep` says to, in their order; frees room once most is unused.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&OriginKey, &mut OriginEntry) -> bool) {
        let mut kept = 0;
        for i in 0..self.keys.len() {
            if keep(&self.keys[i], &mut self.entries[i]) {
                self.keys.swap(kept, i);
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        if kept == self.keys.len() {
            return;
        }
        self.keys.truncate(kept);
        self.entries.truncate(kept);
        if self.keys.capacity() > 2 * kept + 2 {
            self.keys.shrink_to_fit();
            self.entries.shrink_to_fit();
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.index = (self.keys.len() > LINEAR).then(|| {
            let mut index = FxHashMap::with_capacity_and_hasher(self.keys.len(), Default::default());
            index.extend(self.keys.iter().enumerate().map(|(i, &k)| (k, i as u32)));
            Box::new(index)
        });
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&OriginKey, &OriginEntry)> {
        self.keys.iter().zip(&self.entries)
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, OriginEntry> {
        self.entries.iter()
    }

    pub(super) fn values_mut(&mut self) -> std::slice::IterMut<'_, OriginEntry> {
        self.entries.iter_mut()
    }
}

impl<'a> IntoIterator for &'a OriginMap {
    type Item = (&'a OriginKey, &'a OriginEntry);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, OriginKey>, std::slice::Iter<'a, OriginEntry>>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.iter().zip(&self.entries)
    }
}

/// The same origins with the same entries, in any order.
impl PartialEq for OriginMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// A map, as the hash table it replaces was written (snapshots of either read alike).
impl Serialize for OriginMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for OriginMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Origins;
        impl<'de> Visitor<'de> for Origins {
            type Value = OriginMap;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of origins to their entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<OriginMap, A::Error> {
                let mut map = OriginMap::default();
                while let Some((k, v)) = access.next_entry::<OriginKey, OriginEntry>()? {
                    // A key given twice: the last wins, as in a hash table.
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(Origins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn entry(t: i64) -> OriginEntry {
        OriginEntry::new(t)
    }

    proptest! {
        /// Any sequence of inserts, removals and retains leaves the same origins and entries
        /// as a hash table given it, across the linear and the indexed sizes.
        #[test]
        fn behaves_as_a_hash_table(ops in proptest::collection::vec((0u8..4, 0u128..80, 0i64..1000), 0..400)) {
            let mut map = OriginMap::default();
            let mut want: HashMap<OriginKey, OriginEntry> = HashMap::new();
            for (op, k, t) in ops {
                match op {
                    0 => {
                        let (e, new) = map.get_or_insert_with(k, || entry(t));
                        prop_assert_eq!(new, !want.contains_key(&k));
                        e.bytes += 1;
                        want.entry(k).or_insert_with(|| entry(t)).bytes += 1;
                    }
                    1 => prop_assert_eq!(map.insert(k, entry(t)), want.insert(k, entry(t))),
                    2 => prop_assert_eq!(map.remove(&k), want.remove(&k)),
                    _ => {
                        map.retain(|o, e| (o + e.bytes as u128) % 3 != t as u128 % 3);
                        want.retain(|o, e| (o + e.bytes as u128) % 3 != t as u128 % 3);
                    }
                }
                prop_assert_eq!(map.len(), want.len());
                prop_assert!(map.len() <= LINEAR || map.index.is_some());
                if let Some(index) = &map.index {
                    prop_assert_eq!(index.len(), map.len());
                    prop_assert!(map.keys.iter().enumerate().all(|(i, k)| index.get(k) == Some(&(i as u32))));
                }
                for (k, v) in &want {
                    prop_assert_eq!(map.get(k), Some(v));
                }
                prop_assert!(map.iter().all(|(k, v)| want.get(k) == Some(v)));
            }
        }
    }

    #[test]
    fn a_snapshot_keeps_the_order_and_reads_a_hash_tables() {
        let mut map = OriginMap::default();
        for k in [7u128, 3, 1 << 100, 5] {
            map.insert(k, entry(k as i64 & 0xff));
        }
        let json = serde_json::to_string(&map).expect("serializes");
        let back: OriginMap = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back.keys, map.keys);
        // What the hash table wrote reads as the same map.
        let table: FxHashMap<OriginKey, OriginEntry> = map.iter().map(|(k, v)| (*k, v.clone())).collect();
        let from_table: OriginMap = serde_json::from_str(&serde_json::to_string(&table).expect("json")).expect("reads");
        assert_eq!(from_table, map);
        assert!(OriginMap::default().is_empty());
    }
}
