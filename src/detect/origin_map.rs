//! A key's origins ([`OriginMap`]): the per-pair records of the state, the largest part of it.
//!
//! A key reads from a handful of origins, and a fleet has hundreds of thousands of keys. A
//! hash table per key kept each pair in a 64-byte slot at between 44% and 88% load (a table of
//! 16 slots for 9 to 14 origins, of 32 for 15 to 28), plus its control bytes. Here the origins
//! and their entries are two arrays in the order the origins came, grown by an eighth (1, 2,
//! ..., 8, 9, 10, ..., 16, 18, 20, 22, 24, 27, ...: a twentieth of the room unused on average,
//! where growing by half left a fifth; an array is copied about eight times as it doubles,
//! which costs nothing measurable here), searched from the start while there are at most
//! [`LINEAR`] of them (a few cache lines of addresses, read in order), through a hash index
//! beyond: a spray of thousands of origins costs what a hash table costs. An origin takes 4
//! bytes while every origin of the key is an IPv4 address or prefix (`::ffff:a.b.c.d`: its low
//! 32 bits), 8 from the first that is not but has its high 64 bits clear, 16 from the first
//! wider (the map is no bigger for it: see `OriginMap::keys`).
//!
//! What few pairs use (the time of their last alert, itemized evidence: [`OriginCold`]) is
//! kept beside the arrays, by origin, in a table made when the first is set: an entry is 32
//! bytes, not 40 with a pointer of its own.
//!
//! Iteration is in arrival order (a removal moves the last origin into the gap). Nothing the
//! detector outputs depends on it: every list built from the origins is sorted, every count
//! and sum is order-free. Snapshots keep the order (a map in it); equality ignores it.

use super::state::{OriginCold, OriginEntry, OriginEntryFields};
use super::{Evidence, OriginKey};
use crate::time::Nanos;
use rustc_hash::FxHashMap;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Origins searched one by one; past this many a key keeps a hash index of them.
const LINEAR: usize = 32;

/// `origin` as a narrow key (one word), when it is one.
#[inline]
pub(super) fn narrow(origin: OriginKey) -> Option<u64> {
    u64::try_from(origin).ok()
}

/// The high bits of an IPv4 origin (`::ffff:a.b.c.d`, its address or prefix in the low 32).
const V4_MAPPED: OriginKey = 0xffff << 32;

/// How many 32-bit words `origin` takes: 1 for an IPv4 address or prefix (its low 32 bits),
/// 2 when its high 64 bits are clear, else 4.
#[inline]
fn width_of(origin: OriginKey) -> usize {
    if origin >> 32 == V4_MAPPED >> 32 {
        1
    } else if origin >> 64 == 0 {
        2
    } else {
        4
    }
}

/// `origin` as `width` words, low first.
#[inline]
fn words_of(origin: OriginKey, width: usize) -> [u32; 4] {
    let w = [origin as u32, (origin >> 32) as u32, (origin >> 64) as u32, (origin >> 96) as u32];
    if width == 1 {
        [w[0], 0, 0, 0]
    } else {
        w
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct OriginMap {
    /// The origins in arrival order, in 32-bit words: one each while every origin of the key
    /// is an IPv4 address or prefix (`::ffff:a.b.c.d`, by far the most common: its low 32
    /// bits), two from the first that is not but whose high 64 bits are clear, four from the
    /// first wider (IPv6, an AS at `origin_granularity = "asn"`). The lengths tell which:
    /// `keys` holds one, two or four words per entry ([`OriginMap::width`]), so the map is no
    /// bigger for it.
    keys: Vec<u32>,
    /// The entries, in the order of `keys`.
    entries: Vec<OriginEntry>,
    /// Where each origin is, while there are more than [`LINEAR`].
    index: Option<Box<FxHashMap<OriginKey, u32>>>,
    /// The rarely set parts of entries, by origin (none of defaults; only origins in the map).
    cold: Option<Box<FxHashMap<OriginKey, OriginCold>>>,
}

/// The origin at `i` of `keys` (`width` words each).
#[inline]
fn key_at(keys: &[u32], width: usize, i: usize) -> Option<OriginKey> {
    let w = keys.get(width * i..width * (i + 1))?;
    Some(match w {
        [a] => V4_MAPPED | OriginKey::from(*a),
        _ => w.iter().rev().fold(0, |k, &x| k << 32 | OriginKey::from(x)),
    })
}

/// Where `origin` is in `keys` (`width` words each), searched in order.
#[inline]
fn key_position(keys: &[u32], width: usize, origin: &OriginKey) -> Option<usize> {
    if width_of(*origin) > width {
        return None;
    }
    let w = words_of(*origin, width);
    match width {
        1 => keys.iter().position(|&x| x == w[0]),
        2 => keys.chunks_exact(2).position(|k| k[0] == w[0] && k[1] == w[1]),
        _ => keys.chunks_exact(4).position(|k| k == w),
    }
}

impl OriginMap {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where the origins and their entries start (a hint for a prefetch).
    pub(super) fn arrays(&self) -> (*const u32, *const OriginEntry) {
        (self.keys.as_ptr(), self.entries.as_ptr())
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The words each origin takes (1 in an empty map).
    #[inline]
    fn width(&self) -> usize {
        self.keys.len().checked_div(self.entries.len()).unwrap_or(1)
    }

    fn position(&self, origin: &OriginKey) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(origin).map(|&i| i as usize),
            None => key_position(&self.keys, self.width(), origin),
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

    /// Sets the entry of `origin`, returning the one it replaces (its rarely set part, if any,
    /// stays: [`OriginMap::insert_fields`] sets both).
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
        let width = self.width().max(width_of(origin));
        if width > self.width() && len > 0 {
            // The first wider origin: every origin takes as many words from now on.
            let mut words = Vec::with_capacity(width * self.entries.capacity());
            for i in 0..len {
                let k = key_at(&self.keys, self.width(), i).unwrap_or_default();
                words.extend_from_slice(&words_of(k, width)[..width]);
            }
            self.keys = words;
        }
        // Grown by an eighth, not doubled: the arrays are most of the state.
        if len == self.entries.capacity() {
            self.entries.reserve_exact((len / 8).max(1));
        }
        let words = width * self.entries.capacity();
        self.keys.reserve_exact(words.saturating_sub(self.keys.len()));
        self.keys.extend_from_slice(&words_of(origin, width)[..width]);
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
        let width = self.width();
        let last = self.keys.len() - width;
        self.keys.copy_within(last.., width * i);
        self.keys.truncate(last);
        let entry = self.entries.swap_remove(i);
        self.forget_cold(origin);
        if let Some(index) = &mut self.index {
            index.remove(origin);
            if let Some(moved) = key_at(&self.keys, width, i) {
                index.insert(moved, i as u32);
            }
        }
        Some(entry)
    }

    /// Keeps the origins `keep` says to, in their order; frees room once most is unused.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&OriginKey, &mut OriginEntry) -> bool) {
        let (width, len) = (self.width(), self.entries.len());
        let mut kept = 0;
        for i in 0..len {
            let Some(origin) = key_at(&self.keys, width, i) else { break };
            if keep(&origin, &mut self.entries[i]) {
                for w in 0..width {
                    self.keys.swap(width * kept + w, width * i + w);
                }
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        if kept == len {
            return;
        }
        if let Some(mut cold) = self.cold.take() {
            cold.retain(|o, _| key_position(&self.keys[..width * kept], width, o).is_some());
            self.cold = (!cold.is_empty()).then_some(cold);
        }
        // The keys stay as wide while any origin is left (an empty map is narrow again).
        self.keys.truncate(width * kept);
        self.entries.truncate(kept);
        if self.entries.capacity() > 2 * kept + 2 {
            self.keys.shrink_to_fit();
            self.entries.shrink_to_fit();
        }
        self.reindex();
    }

    /// Sets the entry of `origin` and its rarely set part from their fields (a snapshot's, a
    /// model's row), returning whether it replaces one.
    pub(super) fn insert_fields(&mut self, origin: OriginKey, fields: OriginEntryFields<Box<Evidence>>) -> bool {
        let (entry, cold) = OriginEntry::from_fields(fields);
        let replaced = self.insert(origin, entry).is_some();
        self.forget_cold(&origin);
        if !cold.is_default() {
            self.cold.get_or_insert_with(Default::default).insert(origin, cold);
        }
        replaced
    }

    fn cold_of(&self, origin: &OriginKey) -> Option<&OriginCold> {
        self.cold.as_ref()?.get(origin)
    }

    /// The rarely set part of `origin` (in the map), made of defaults first when there is none.
    fn cold_mut(&mut self, origin: OriginKey) -> &mut OriginCold {
        debug_assert!(self.contains_key(&origin), "a cold part only for an origin of the map");
        self.cold.get_or_insert_with(Default::default).entry(origin).or_default()
    }

    /// Drops the rarely set part of `origin` when it holds only defaults.
    fn tidy(&mut self, origin: &OriginKey) {
        if let Some(cold) = &mut self.cold {
            if cold.get(origin).is_some_and(OriginCold::is_default) {
                cold.remove(origin);
            }
            if cold.is_empty() {
                self.cold = None;
            }
        }
    }

    /// Drops the rarely set part of `origin` (an origin forgotten and seen again).
    pub(super) fn forget_cold(&mut self, origin: &OriginKey) {
        if let Some(cold) = &mut self.cold {
            cold.remove(origin);
            if cold.is_empty() {
                self.cold = None;
            }
        }
    }

    /// When `origin` last alerted (0: never).
    pub(super) fn mark_at(&self, origin: &OriginKey) -> Nanos {
        self.cold_of(origin).map_or(0, |c| c.mark_at)
    }

    pub(super) fn set_mark_at(&mut self, origin: OriginKey, t: Nanos) {
        self.cold_mut(origin).mark_at = t;
        self.tidy(&origin);
    }

    /// The itemized evidence of `origin`, kept while it is new.
    pub(super) fn evidence(&self, origin: &OriginKey) -> Option<&Evidence> {
        self.cold_of(origin)?.evidence.as_deref()
    }

    /// The evidence of `origin` (in the map), made empty first when it has none.
    pub(super) fn evidence_or_new(&mut self, origin: OriginKey) -> &mut Evidence {
        self.cold_mut(origin).evidence.get_or_insert_with(Default::default)
    }

    pub(super) fn drop_evidence(&mut self, origin: &OriginKey) {
        if let Some(c) = self.cold.as_mut().and_then(|c| c.get_mut(origin)) {
            c.evidence = None;
            self.tidy(origin);
        }
    }

    /// Drops the evidence of every origin whose entry `stale` says is past needing it.
    pub(super) fn drop_evidence_where(&mut self, mut stale: impl FnMut(&OriginEntry) -> bool) {
        let Some(mut cold) = self.cold.take() else { return };
        for (origin, c) in cold.iter_mut() {
            if c.evidence.is_some() && self.get(origin).is_some_and(&mut stale) {
                c.evidence = None;
            }
        }
        cold.retain(|_, c| !c.is_default());
        self.cold = (!cold.is_empty()).then_some(cold);
    }

    /// Whether no origin has a rarely set part.
    #[cfg(test)]
    pub(super) fn cold_is_empty(&self) -> bool {
        self.cold.is_none()
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
        Iter { keys: &self.keys, width: self.width(), entries: self.entries.iter().enumerate() }
    }

    pub(super) fn values(&self) -> std::slice::Iter<'_, OriginEntry> {
        self.entries.iter()
    }
}

/// [`OriginMap::iter`]: each origin (by value: it may be kept in one word) with its entry.
pub(super) struct Iter<'a> {
    keys: &'a [u32],
    width: usize,
    entries: std::iter::Enumerate<std::slice::Iter<'a, OriginEntry>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (OriginKey, &'a OriginEntry);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (i, e) = self.entries.next()?;
        Some((key_at(self.keys, self.width, i)?, e))
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
        self.len() == other.len()
            && self.iter().all(|(k, v)| {
                other.get(&k) == Some(v)
                    && self.mark_at(&k) == other.mark_at(&k)
                    && self.evidence(&k) == other.evidence(&k)
            })
    }
}

/// A map, as the hash table it replaces was written (snapshots of either read alike).
impl Serialize for OriginMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(&k, &v.fields(self.mark_at(&k), self.evidence(&k)))?;
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
                while let Some((k, v)) = access.next_entry::<OriginKey, OriginEntryFields<Box<Evidence>>>()? {
                    // A key given twice: the last wins, as in a hash table.
                    map.insert_fields(k, v);
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
                // IPv4 origins (one word), others whose high 64 bits are clear (two) and wide
                // ones (an IPv6 prefix, an AS: four): the keys widen at the first of each.
                let k = match k {
                    0..40 => V4_MAPPED | k << 8,
                    40..80 => k,
                    _ => (k - 79) << 100,
                };
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
                prop_assert!([1, 2, 4].iter().any(|w| map.keys.len() == w * map.len()));
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
        let table: FxHashMap<OriginKey, _> = map.iter().map(|(k, v)| (k, v.fields(0, None))).collect();
        let from_table: OriginMap = serde_json::from_str(&serde_json::to_string(&table).expect("json")).expect("reads");
        assert_eq!(from_table, map);
        assert!(OriginMap::default().is_empty());
    }

    /// IPv4 origins take 4 bytes until the first other one; then every origin is kept as
    /// wide as the widest (8 bytes while the high 64 bits of each are clear, 16 from the first
    /// that is not), in the same order, and each is still found.
    #[test]
    fn keys_are_narrow_until_a_wider_origin_comes() {
        let v4 = |i: u128| V4_MAPPED | 0x0a00_0000 | i << 8;
        let mut map = OriginMap::default();
        for i in 0..40 {
            map.insert(v4(i), entry(i as i64));
        }
        assert!(map.width() == 1 && map.keys.len() == 40);
        assert_eq!(map.get(&(v4(3) & 0xffff_ffff)), None, "an IPv4 origin is never a two-word one's twin");
        assert_eq!(map.get(&(v4(3) | 1 << 64)), None, "nor a wide one's");
        let mid = 0x0a00_0300u128;
        map.insert(mid, entry(98));
        assert!(map.width() == 2 && map.keys.len() == 82);
        let wide = 0x2001_0db8u128 << 96;
        map.insert(wide, entry(99));
        assert!(map.width() == 4 && map.keys.len() == 168);
        let order: Vec<OriginKey> = map.iter().map(|(k, _)| k).collect();
        assert_eq!(order, (0..40).map(v4).chain([mid, wide]).collect::<Vec<_>>());
        assert!((0..40).all(|i| map.get(&v4(i)).map(|e| e.first_seen) == Some(i as i64)));
        assert_eq!(map.get(&mid).map(|e| e.first_seen), Some(98));
        assert_eq!(map.remove(&v4(0)).map(|e| e.first_seen), Some(0));
        assert_eq!(map.get(&wide).map(|e| e.first_seen), Some(99));
        map.retain(|k, _| *k != wide);
        assert_eq!((map.len(), map.get(&wide).is_none(), map.get(&v4(5)).is_some()), (40, true, true));
        map.retain(|_, _| false);
        assert!(map.width() == 1 && map.is_empty(), "an empty map is narrow again");
        map.insert(wide, entry(7));
        assert!(map.width() == 4 && map.get(&wide).is_some() && map.get(&(wide as u64 as u128)).is_none());
    }

    /// The rarely set parts stay with their origins through removals (which move the last
    /// origin into the gap), retains and the index past [`LINEAR`], and go with them.
    #[test]
    fn cold_parts_follow_their_origins_and_go_with_them() {
        let mut map = OriginMap::default();
        let n = LINEAR as u128 + 8;
        for k in 0..n {
            map.insert(k, entry(k as i64));
        }
        for k in (0..n).step_by(3) {
            map.set_mark_at(k, 1000 + k as i64);
        }
        map.evidence_or_new(4);
        map.remove(&0);
        map.remove(&3);
        map.retain(|k, _| k % 2 == 0 || *k == 9);
        for k in 0..n {
            let kept = k != 0 && k != 3 && (k % 2 == 0 || k == 9);
            assert_eq!(map.contains_key(&k), kept, "{k}");
            let mark = if kept && k % 3 == 0 { 1000 + k as i64 } else { 0 };
            assert_eq!(map.mark_at(&k), mark, "{k}");
            assert_eq!(map.evidence(&k).is_some(), k == 4, "{k}");
        }
        let left = map.cold.as_ref().map_or(0, |c| c.len());
        assert_eq!(left, map.iter().filter(|(k, _)| k % 3 == 0 || *k == 4).count(), "no cold part of a gone origin");
        map.drop_evidence_where(|e| e.first_seen == 4);
        assert!(map.evidence(&4).is_none());
        map.retain(|_, _| false);
        assert!(map.cold_is_empty());
    }
}
