//! A map that is a list while it is small ([`FewMap`]): searched in order while it holds at
//! most `FEW` entries, a hash table from the first past that, kept from then on.
//!
//! The detector's per-account collections (an account's keys, its tallies of new origins)
//! hold a handful each, and there are hundreds of thousands of accounts: a hash table of a
//! few entries spends more on empty slots and control bytes than on the entries, and a list
//! of them is found in one cache line without hashing. The table past `FEW` keeps a key
//! used by thousands (a spray of origins, many credentials) from costing a search of the list.
//!
//! Iteration is in no particular order (a removal moves the last entry into the gap, the
//! table has its own order): the callers sort what they output.

use rustc_hash::FxHashMap;
use std::hash::Hash;

#[derive(Clone, Debug)]
pub(super) enum FewMap<K, V, const FEW: usize> {
    Few(Vec<(K, V)>),
    Many(FxHashMap<K, V>),
}

impl<K, V, const FEW: usize> Default for FewMap<K, V, FEW> {
    fn default() -> Self {
        FewMap::Few(Vec::new())
    }
}

impl<K: Copy + Eq + Hash, V, const FEW: usize> FewMap<K, V, FEW> {
    pub(super) fn len(&self) -> usize {
        match self {
            FewMap::Few(v) => v.len(),
            FewMap::Many(m) => m.len(),
        }
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        match self {
            FewMap::Few(v) => v.iter().find(|(x, _)| x == k).map(|(_, e)| e),
            FewMap::Many(m) => m.get(k),
        }
    }

    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        match self {
            FewMap::Few(v) => v.iter_mut().find(|(x, _)| x == k).map(|(_, e)| e),
            FewMap::Many(m) => m.get_mut(k),
        }
    }

    /// The entry of `k`, made by `new` when there is none (then also true).
    pub(super) fn get_or_insert_with(&mut self, k: K, new: impl FnOnce() -> V) -> (&mut V, bool) {
        let at = match self {
            FewMap::Few(v) => v.iter().position(|(x, _)| *x == k),
            FewMap::Many(_) => None,
        };
        if at.is_none() && matches!(self, FewMap::Few(v) if v.len() >= FEW) {
            if let FewMap::Few(v) = std::mem::replace(self, FewMap::Many(FxHashMap::default())) {
                *self = FewMap::Many(v.into_iter().collect());
            }
        }
        match (self, at) {
            (FewMap::Few(v), Some(i)) => (&mut v[i].1, false),
            (FewMap::Few(v), None) => {
                // Grown by a quarter: most of these lists hold a handful.
                if v.len() == v.capacity() {
                    v.reserve_exact((v.len() / 4).max(1));
                }
                v.push((k, new()));
                let i = v.len() - 1;
                (&mut v[i].1, true)
            }
            (FewMap::Many(m), _) => {
                let mut made = false;
                let e = m.entry(k).or_insert_with(|| {
                    made = true;
                    new()
                });
                (e, made)
            }
        }
    }

    /// Sets the entry of `k`, returning the one it replaces (as a hash table's `insert`).
    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
        if let Some(slot) = self.get_mut(&k) {
            return Some(std::mem::replace(slot, v));
        }
        self.get_or_insert_with(k, || v);
        None
    }

    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        match self {
            FewMap::Few(v) => {
                let i = v.iter().position(|(x, _)| x == k)?;
                Some(v.swap_remove(i).1)
            }
            FewMap::Many(m) => m.remove(k),
        }
    }

    /// Keeps the entries `keep` says to; a list gives back its room once most is unused.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        match self {
            FewMap::Few(v) => {
                v.retain_mut(|(k, e)| keep(k, e));
                if v.capacity() > 2 * v.len() + 2 {
                    v.shrink_to_fit();
                }
            }
            FewMap::Many(m) => m.retain(|k, e| keep(k, e)),
        }
    }

    /// Gives back the room of entries that left.
    pub(super) fn shrink_to_fit(&mut self) {
        match self {
            FewMap::Few(v) => v.shrink_to_fit(),
            FewMap::Many(m) => m.shrink_to_fit(),
        }
    }

    pub(super) fn iter(&self) -> Iter<'_, K, V> {
        match self {
            FewMap::Few(v) => Iter::Few(v.iter()),
            FewMap::Many(m) => Iter::Many(m.iter()),
        }
    }

    /// Where the list's first entry is (a hint for a prefetch); `None` for a table or an empty list.
    pub(super) fn list_start(&self) -> Option<*const (K, V)> {
        match self {
            FewMap::Few(v) if !v.is_empty() => Some(v.as_ptr()),
            _ => None,
        }
    }

    pub(super) fn for_each_mut(&mut self, mut f: impl FnMut(&mut V)) {
        match self {
            FewMap::Few(v) => v.iter_mut().for_each(|(_, e)| f(e)),
            FewMap::Many(m) => m.values_mut().for_each(f),
        }
    }
}

/// The same entries, however they are held and in any order.
impl<K: Copy + Eq + Hash, V: PartialEq, const FEW: usize> PartialEq for FewMap<K, V, FEW> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, e)| other.get(&k) == Some(e))
    }
}

/// [`FewMap::iter`]: each key (by value) with its entry.
pub(super) enum Iter<'a, K, V> {
    Few(std::slice::Iter<'a, (K, V)>),
    Many(std::collections::hash_map::Iter<'a, K, V>),
}

impl<'a, K: Copy, V> Iterator for Iter<'a, K, V> {
    type Item = (K, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(i) => i.next().map(|(k, e)| (*k, e)),
            Iter::Many(i) => i.next().map(|(k, e)| (*k, e)),
        }
    }
}
