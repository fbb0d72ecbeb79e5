//! An account's keys ([`KeyTable`]): a list searched in order while they are few, a hash
//! table past [`FEW_KEYS`].
//!
//! Most accounts are read with one to four credentials (the two account keys, a read-only
//! key, an identity or two). A hash table of two boxed keys takes a 96-byte heap block (four
//! 12-byte slots, control bytes, growth room); the list takes 48 (two 16-byte slots), and
//! finding a key in it reads one cache line without hashing. An account read by many
//! credentials (resource tokens, many identities) gets the table at the first key past
//! [`FEW_KEYS`] and keeps it.
//!
//! Iteration is in no particular order (a removal moves the last key into the gap, the table
//! has its own order): nothing the detector outputs depends on it, every list built from the
//! keys is sorted. Snapshots write the keys as the map they always were; equality ignores the
//! order.

use super::intern::Sym;
use super::state::KeyState;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Keys searched one by one; past this many an account keeps a hash table of them.
const FEW_KEYS: usize = 16;

#[derive(Clone, Debug)]
pub(super) enum KeyTable {
    Few(Vec<(Sym, Box<KeyState>)>),
    Many(FxHashMap<Sym, Box<KeyState>>),
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable::Few(Vec::new())
    }
}

impl KeyTable {
    pub(super) fn len(&self) -> usize {
        match self {
            KeyTable::Few(v) => v.len(),
            KeyTable::Many(m) => m.len(),
        }
    }

    pub(super) fn get(&self, cred: &Sym) -> Option<&KeyState> {
        match self {
            KeyTable::Few(v) => v.iter().find(|(c, _)| c == cred).map(|(_, k)| &**k),
            KeyTable::Many(m) => m.get(cred).map(|k| &**k),
        }
    }

    pub(super) fn get_mut(&mut self, cred: &Sym) -> Option<&mut KeyState> {
        match self {
            KeyTable::Few(v) => v.iter_mut().find(|(c, _)| c == cred).map(|(_, k)| &mut **k),
            KeyTable::Many(m) => m.get_mut(cred).map(|k| &mut **k),
        }
    }

    /// The key of `cred`, made by `new` when there is none.
    pub(super) fn get_or_insert_with(&mut self, cred: Sym, new: impl FnOnce() -> KeyState) -> &mut KeyState {
        let at = match self {
            KeyTable::Few(v) => v.iter().position(|(c, _)| *c == cred),
            KeyTable::Many(_) => None,
        };
        if at.is_none() && matches!(self, KeyTable::Few(v) if v.len() >= FEW_KEYS) {
            if let KeyTable::Few(v) = std::mem::replace(self, KeyTable::Many(FxHashMap::default())) {
                *self = KeyTable::Many(v.into_iter().collect());
            }
        }
        match (self, at) {
            (KeyTable::Few(v), Some(i)) => &mut v[i].1,
            (KeyTable::Few(v), None) => {
                super::grow::room_for_one(v);
                v.push((cred, Box::new(new())));
                let i = v.len() - 1;
                &mut v[i].1
            }
            (KeyTable::Many(m), _) => m.entry(cred).or_insert_with(|| Box::new(new())),
        }
    }

    /// Sets the key of `cred`, returning whether it replaces one.
    pub(super) fn insert(&mut self, cred: Sym, key: KeyState) -> bool {
        let mut key = Some(key);
        let slot = self.get_or_insert_with(cred, || key.take().unwrap_or_else(|| KeyState::new(0)));
        match key {
            Some(key) => {
                *slot = key;
                true
            }
            None => false,
        }
    }

    pub(super) fn remove(&mut self, cred: &Sym) -> Option<Box<KeyState>> {
        match self {
            KeyTable::Few(v) => {
                let i = v.iter().position(|(c, _)| c == cred)?;
                Some(v.swap_remove(i).1)
            }
            KeyTable::Many(m) => m.remove(cred),
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Sym, &mut KeyState) -> bool) {
        match self {
            KeyTable::Few(v) => v.retain_mut(|(c, k)| keep(c, k)),
            KeyTable::Many(m) => m.retain(|c, k| keep(c, k)),
        }
    }

    pub(super) fn clear(&mut self) {
        *self = KeyTable::default();
    }

    /// Gives back the room of keys that left.
    pub(super) fn shrink_to_fit(&mut self) {
        match self {
            KeyTable::Few(v) => v.shrink_to_fit(),
            KeyTable::Many(m) => m.shrink_to_fit(),
        }
    }

    pub(super) fn iter(&self) -> Iter<'_> {
        match self {
            KeyTable::Few(v) => Iter::Few(v.iter()),
            KeyTable::Many(m) => Iter::Many(m.iter()),
        }
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &KeyState> {
        self.iter().map(|(_, k)| k)
    }

    pub(super) fn values_mut(&mut self) -> ValuesMut<'_> {
        match self {
            KeyTable::Few(v) => ValuesMut::Few(v.iter_mut()),
            KeyTable::Many(m) => ValuesMut::Many(m.values_mut()),
        }
    }
}

/// [`KeyTable::iter`]: each credential with its key.
pub(super) enum Iter<'a> {
    Few(std::slice::Iter<'a, (Sym, Box<KeyState>)>),
    Many(std::collections::hash_map::Iter<'a, Sym, Box<KeyState>>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (Sym, &'a KeyState);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(i) => i.next().map(|(c, k)| (*c, &**k)),
            Iter::Many(i) => i.next().map(|(c, k)| (*c, &**k)),
        }
    }
}

/// [`KeyTable::values_mut`].
pub(super) enum ValuesMut<'a> {
    Few(std::slice::IterMut<'a, (Sym, Box<KeyState>)>),
    Many(std::collections::hash_map::ValuesMut<'a, Sym, Box<KeyState>>),
}

impl<'a> Iterator for ValuesMut<'a> {
    type Item = &'a mut KeyState;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ValuesMut::Few(i) => i.next().map(|(_, k)| &mut **k),
            ValuesMut::Many(i) => i.next().map(|k| &mut **k),
        }
    }
}

impl<'a> IntoIterator for &'a KeyTable {
    type Item = (Sym, &'a KeyState);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The same keys with the same states, in any order.
impl PartialEq for KeyTable {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(c, k)| other.get(&c) == Some(k))
    }
}

/// A map of credentials to keys, as the hash table it replaces was written.
impl Serialize for KeyTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for KeyTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = FxHashMap::<Sym, KeyState>::deserialize(d)?;
        let mut table = KeyTable::default();
        for (cred, key) in map {
            table.insert(cred, key);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Any sequence of finds, inserts, removals and retains leaves the same keys as a hash
        /// table given it, as a list and past [`FEW_KEYS`] as a table; a snapshot reads back
        /// the same.
        #[test]
        fn behaves_as_a_hash_table(ops in proptest::collection::vec((0u8..5, 0u32..40, 0i64..1000), 0..300)) {
            let mut table = KeyTable::default();
            let mut want: HashMap<Sym, i64> = HashMap::new();
            for (op, cred, t) in ops {
                match op {
                    0 | 1 => {
                        let k = table.get_or_insert_with(cred, || KeyState::new(t));
                        prop_assert_eq!(k.first_seen, *want.entry(cred).or_insert(t));
                    }
                    2 => prop_assert_eq!(table.insert(cred, KeyState::new(t)), want.insert(cred, t).is_some()),
                    3 => prop_assert_eq!(table.remove(&cred).map(|k| k.first_seen), want.remove(&cred)),
                    _ => {
                        table.retain(|c, k| (*c as i64 + k.first_seen) % 3 != t % 3);
                        want.retain(|c, f| (*c as i64 + *f) % 3 != t % 3);
                    }
                }
                prop_assert_eq!(table.len(), want.len());
                for c in 0..40 {
                    prop_assert_eq!(table.get(&c).map(|k| k.first_seen), want.get(&c).copied());
                }
                let mut held: Vec<(Sym, i64)> = table.iter().map(|(c, k)| (c, k.first_seen)).collect();
                held.sort_unstable();
                let mut wanted: Vec<(Sym, i64)> = want.iter().map(|(c, f)| (*c, *f)).collect();
                wanted.sort_unstable();
                prop_assert_eq!(held, wanted);
            }
            let json = serde_json::to_string(&table).expect("serializes");
            let back: KeyTable = serde_json::from_str(&json).expect("reads back");
            prop_assert!(back == table);
            let map: FxHashMap<Sym, KeyState> = serde_json::from_str(&json).expect("a map of keys");
            prop_assert_eq!(map.len(), table.len());
        }
    }
}
