//! A key's origins ([`OriginMap`]): the per-pair records of the state, the largest part of it.
//!
//! A key reads from a handful of origins, and a fleet has hundreds of thousands of keys. A
//! hash table per key kept each pair in a 64-byte slot at between 44% and 88% load (a table of
//! 16 slots for 9 to 14 origins, of 32 for 15 to 28), plus its control bytes. Here the origins
//! and their entries are two arrays in the order the origins came, grown by half (1, 2, 3, 4,
//! 6, 9, 13, ...), searched from the start while there are at most [`LINEAR`] of them (a few
//! cache lines of addresses, read in order), through a hash index beyond: a spray of
//! thousands of origins costs what a hash table costs. An origin takes 8 bytes while every
//! origin of the key is an IPv4 address or prefix (the high 64 bits of its key are clear), 16
//! from the first that is not ([`Keys`]).
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

/// A key's origins in arrival order: 8 bytes each while every one has its high 64 bits clear
/// (IPv4 addresses and prefixes, `::ffff:a.b.c.d`, the most common origins by far), 16 from
/// the first one that does not (IPv6, an AS at `origin_granularity = "asn"`).
#[derive(Clone, Debug)]
enum Keys {
    Narrow(Vec<u64>),
    Wide(Vec<OriginKey>),
}

impl Default for Keys {
    fn default() -> Self {
        Keys::Narrow(Vec::new())
    }
}

/// `origin` as a narrow key, when it is one.
#[inline]
fn narrow(origin: OriginKey) -> Option<u64> {
    u64::try_from(origin).ok()
}

impl Keys {
    #[inline]
    fn get(&self, i: usize) -> Option<OriginKey> {
        match self {
            Keys::Narrow(v) => v.get(i).map(|&k| OriginKey::from(k)),
            Keys::Wide(v) => v.get(i).copied(),
        }
    }

    #[inline]
    fn position(&self, origin: OriginKey) -> Option<usize> {
        match self {
            Keys::Narrow(v) => {
                let k = narrow(origin)?;
                v.iter().position(|&x| x == k)
            }
            Keys::Wide(v) => v.iter().position(|&x| x == origin),
        }
    }

    /// Appends `origin`, widening the keys first when it is not narrow; grows by half.
    fn push(&mut self, origin: OriginKey) {
        if let (Keys::Narrow(v), None) = (&*self, narrow(origin)) {
            let mut wide = Vec::with_capacity(v.capacity());
            wide.extend(v.iter().map(|&k| OriginKey::from(k)));
            *self = Keys::Wide(wide);
        }
        match self {
            Keys::Narrow(v) => {
                super::grow::room_for_one(v);
                v.push(origin as u64);
            }
            Keys::Wide(v) => {
                super::grow::room_for_one(v);
                v.push(origin);
            }
        }
    }

    fn swap_remove(&mut self, i: usize) {
        match self {
            Keys::Narrow(v) => drop(v.swap_remove(i)),
            Keys::Wide(v) => drop(v.swap_remove(i)),
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        match self {
            Keys::Narrow(v) => v.swap(a, b),
            Keys::Wide(v) => v.swap(a, b),
        }
    }

    /// Keeps the first `len`; frees the room once most of it is unused.
    fn truncate(&mut self, len: usize) {
        fn cut<T>(v: &mut Vec<T>, len: usize) {
            v.truncate(len);
            if v.capacity() > 2 * len + 2 {
                v.shrink_to_fit();
            }
        }
        match self {
            Keys::Narrow(v) => cut(v, len),
            Keys::Wide(v) => cut(v, len),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct OriginMap {
    keys: Keys,
    /// The entries, in the order of `keys`.
    entries: Vec<OriginEntry>,
    /// Where each origin is, while there are more than [`LINEAR`].
    index: Option<Box<FxHashMap<OriginKey, u32>>>,
}

impl OriginMap {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, origin: &OriginKey) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(origin).map(|&i| i as usize),
            None => self.keys.position(*origin),
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
        let len = self.entries.len();
        // Grown by half, not doubled: the arrays are most of the state.
        self.keys.push(origin);
        super::grow::room_for_one(&mut self.entries);
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
                index.insert(moved, i as u32);
            }
        }
        Some(entry)
    }

    /// Keeps the origins `keep` says to, in their order; frees room once most is unused.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&OriginKey, &mut OriginEntry) -> bool) {
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let Some(origin) = self.keys.get(i) else { break };
            if keep(&origin, &mut self.entries[i]) {
                self.keys.swap(kept, i);
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        if kept == self.entries.len() {
            return;
        }
        self.keys.truncate(kept);
        self.entries.truncate(kept);
        if self.entries.capacity() > 2 * kept + 2 {
            self.entries.shrink_to_fit();
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.index = (self.len() > LINEAR).then(|| {
            let mut index = FxHashMap::with_capacity_and_hasher(self.len(), Default::default());
            index.extend(self.iter().enumerate().map(|(i, (k, _))| (k, i as u32)));
            Box::new(index)
        });
    }

    /// The origins and their entries, in arrival order.
    pub(super) fn iter(&self) -> Iter<'_> {
        Iter { keys: &self.keys, entries: self.entries.iter().enumerate() }
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, OriginEntry> {
        self.entries.iter()
    }

    pub(super) fn values_mut(&mut self) -> std::slice::IterMut<'_, OriginEntry> {
        self.entries.iter_mut()
    }
}

/// [`OriginMap::iter`]: each origin (by value: narrow ones are widened) with its entry.
pub(super) struct Iter<'a> {
    keys: &'a Keys,
    entries: std::iter::Enumerate<std::slice::Iter<'a, OriginEntry>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (OriginKey, &'a OriginEntry);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (i, e) = self.entries.next()?;
        Some((self.keys.get(i)?, e))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl<'a> IntoIterator for &'a OriginMap {
    type Item = (OriginKey, &'a OriginEntry);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The same origins with the same entries, in any order.
impl PartialEq for OriginMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(&k) == Some(v))
    }
}

/// A map, as the hash table it replaces was written (snapshots of either read alike).
impl Serialize for OriginMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(&k, v)?;
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
        fn behaves_as_a_hash_table(ops in proptest::collection::vec((0u8..4, 0u128..90, 0i64..1000), 0..400)) {
            let mut map = OriginMap::default();
            let mut want: HashMap<OriginKey, OriginEntry> = HashMap::new();
            for (op, k, t) in ops {
                // Some origins wide (an IPv6 prefix, an AS): the keys widen at the first.
                let k = if k >= 80 { (k - 79) << 100 } else { k };
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
                    prop_assert!(map.iter().enumerate().all(|(i, (k, _))| index.get(&k) == Some(&(i as u32))));
                }
                for (k, v) in &want {
                    prop_assert_eq!(map.get(k), Some(v));
                }
                prop_assert!(map.iter().all(|(k, v)| want.get(&k) == Some(v)));
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
        let order = |m: &OriginMap| m.iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(order(&back), order(&map));
        // What the hash table wrote reads as the same map.
        let table: FxHashMap<OriginKey, OriginEntry> = map.iter().map(|(k, v)| (k, v.clone())).collect();
        let from_table: OriginMap = serde_json::from_str(&serde_json::to_string(&table).expect("json")).expect("reads");
        assert_eq!(from_table, map);
        assert!(OriginMap::default().is_empty());
    }

    /// IPv4 origins take 8 bytes until the first wide one; then every origin is kept wide,
    /// in the same order, and each is still found.
    #[test]
    fn keys_are_narrow_until_a_wide_origin_comes() {
        let v4 = |i: u128| 0xffff_0a00_0000 | i << 8;
        let mut map = OriginMap::default();
        for i in 0..40 {
            map.insert(v4(i), entry(i as i64));
        }
        assert!(matches!(map.keys, Keys::Narrow(_)));
        assert_eq!(map.get(&(v4(3) | 1 << 64)), None, "a wide origin is never a narrow one's twin");
        let wide = 0x2001_0db8u128 << 96;
        map.insert(wide, entry(99));
        assert!(matches!(map.keys, Keys::Wide(_)));
        let order: Vec<OriginKey> = map.iter().map(|(k, _)| k).collect();
        assert_eq!(order, (0..40).map(v4).chain([wide]).collect::<Vec<_>>());
        assert!((0..40).all(|i| map.get(&v4(i)).map(|e| e.first_seen) == Some(i as i64)));
        assert_eq!(map.remove(&v4(0)).map(|e| e.first_seen), Some(0));
        assert_eq!(map.get(&wide).map(|e| e.first_seen), Some(99));
        map.retain(|k, _| *k != wide);
        assert_eq!((map.len(), map.get(&wide).is_none(), map.get(&v4(5)).is_some()), (39, true, true));
    }
}
