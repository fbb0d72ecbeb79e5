//! An account's keys ([`KeyTable`]): a [`FewMap`], a list searched in order while they are
//! few, a hash table past [`FEW_KEYS`].
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

use super::few_map::{self, FewMap};
use super::intern::Sym;
use super::state::KeyState;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Keys searched one by one; past this many an account keeps a hash table of them.
const FEW_KEYS: usize = 16;

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct KeyTable(FewMap<Sym, Box<KeyState>, FEW_KEYS>);

impl KeyTable {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn get(&self, cred: &Sym) -> Option<&KeyState> {
        self.0.get(cred).map(|k| &**k)
    }

    pub(super) fn get_mut(&mut self, cred: &Sym) -> Option<&mut KeyState> {
        self.0.get_mut(cred).map(|k| &mut **k)
    }

    /// The key of `cred`, made by `new` when there is none.
    pub(super) fn get_or_insert_with(&mut self, cred: Sym, new: impl FnOnce() -> KeyState) -> &mut KeyState {
        self.0.get_or_insert_with(cred, || Box::new(new())).0
    }

    /// Sets the key of `cred`, returning whether it replaces one.
    pub(super) fn insert(&mut self, cred: Sym, key: KeyState) -> bool {
        self.0.insert(cred, Box::new(key)).is_some()
    }

    pub(super) fn remove(&mut self, cred: &Sym) -> Option<Box<KeyState>> {
        self.0.remove(cred)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Sym, &mut KeyState) -> bool) {
        self.0.retain(|c, k| keep(c, k))
    }

    pub(super) fn clear(&mut self) {
        *self = KeyTable::default();
    }

    /// Gives back the room of keys that left.
    pub(super) fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit()
    }

    pub(super) fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &KeyState> {
        self.iter().map(|(_, k)| k)
    }

    /// Where the list's first slot is (a hint for a prefetch); `None` for a table or no key.
    pub(super) fn first_slot(&self) -> Option<*const (Sym, Box<KeyState>)> {
        self.0.list_start()
    }

    pub(super) fn for_each_mut(&mut self, mut f: impl FnMut(&mut KeyState)) {
        self.0.for_each_mut(|k| f(k))
    }
}

/// [`KeyTable::iter`]: each credential with its key.
pub(super) struct Iter<'a>(few_map::Iter<'a, Sym, Box<KeyState>>);

impl<'a> Iterator for Iter<'a> {
    type Item = (Sym, &'a KeyState);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(c, k)| (c, &**k))
    }
}

impl<'a> IntoIterator for &'a KeyTable {
    type Item = (Sym, &'a KeyState);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
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
