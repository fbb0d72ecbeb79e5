//! Symbols for the strings the detector keeps (operations, user agents, databases,
//! collections, credentials): each distinct string is stored once and events carry a `u32`.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::hash::{Hash, Hasher};

/// A string used as a hash-map key, stored inside the map's own slot when short (account
/// names, credentials): a lookup then compares bytes already in cache instead of following a
/// pointer to the heap. Longer strings fall back to a box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

const INLINE: usize = 46;

impl NameKey {
    pub fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            NameKey::Inline { len: s.len() as u8, bytes }
        } else {
            NameKey::Heap(s.into())
        }
    }

    /// The bytes, without re-validating UTF-8 (the hot path: hashing).
    fn as_bytes(&self) -> &[u8] {
        match self {
            NameKey::Inline { len, bytes } => &bytes[..*len as usize],
            NameKey::Heap(b) => b.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Hash for NameKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // The hash of the byte slice, so that maps can be searched with a `&[u8]` (`Borrow`)
        // without building a key. Consistent with the derived `Eq`: a given string is always
        // the same variant.
        self.as_bytes().hash(h)
    }
}

impl std::borrow::Borrow<[u8]> for NameKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Serialize for NameKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NameKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(NameKey::new(&String::deserialize(d)?))
    }
}

impl PartialOrd for NameKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for NameKey {
    /// The order of the strings: UTF-8's byte order is `str`'s, so the bytes are compared
    /// without validating them again (accounts are sorted by name at every end of input).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(o.as_bytes())
    }
}

pub type Sym = u32;

/// Stands for every string past the capacity.
pub const OTHER: Sym = 1;

#[derive(Debug, Clone)]
pub struct Interner {
    names: Vec<Box<str>>,
    /// The user-agent family of each string (`agents::family`), by symbol: a user agent is
    /// hashed once, when it is first seen, not on every record. Derived, never stored.
    families: Vec<u32>,
    index: FxHashMap<NameKey, Sym>,
    capacity: usize,
}

impl Interner {
    pub fn new(capacity: usize) -> Self {
        let mut i = Interner {
            names: Vec::new(),
            families: Vec::new(),
            index: FxHashMap::default(),
            capacity: capacity.max(2),
        };
        i.insert(""); // symbol 0: the empty string
        i.insert("(other)");
        i
    }

    fn insert(&mut self, s: &str) -> Sym {
        let sym = self.names.len() as Sym;
        self.names.push(s.into());
        self.families.push(super::agents::family(s));
        self.index.insert(NameKey::new(s), sym);
        sym
    }

    /// The symbol of `s`, or [`OTHER`] once `capacity` distinct strings are held.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.index.get(s.as_bytes()) {
            return sym;
        }
        if self.names.len() >= self.capacity {
            return OTHER;
        }
        self.insert(s)
    }

    /// Interns a string that must keep its identity (a credential): never [`OTHER`].
    pub fn intern_always(&mut self, s: &str) -> Sym {
        match self.index.get(s.as_bytes()) {
            Some(&sym) => sym,
            None => self.insert(s),
        }
    }

    pub fn name(&self, sym: Sym) -> &str {
        self.names.get(sym as usize).map_or("", |s| s)
    }

    /// `agents::family(self.name(sym))`, computed once per symbol.
    pub(super) fn family(&self, sym: Sym) -> u32 {
        match self.families.get(sym as usize) {
            Some(&f) => f,
            None => super::agents::family(self.name(sym)),
        }
    }

    /// The symbol of `s` if it was interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.index.get(s.as_bytes()).copied()
    }

    /// Every string, in symbol order (symbol 0 first).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|s| &**s)
    }

    /// Rebuilds a table from [`Interner::names`]; `None` unless it starts with the two
    /// reserved symbols and holds no string twice.
    pub fn from_names(names: Vec<String>, capacity: usize) -> Option<Self> {
        if names.first().map(String::as_str) != Some("") || names.get(1).map(String::as_str) != Some("(other)") {
            return None;
        }
        let mut i = Interner {
            names: Vec::with_capacity(names.len()),
            families: Vec::with_capacity(names.len()),
            index: FxHashMap::default(),
            capacity,
        };
        for n in names {
            if i.index.contains_key(n.as_bytes()) {
                return None;
            }
            i.insert(&n);
        }
        Some(i)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    names: Vec<Box<str>>,
    capacity: usize,
}

impl Serialize for Interner {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored { names: self.names.clone(), capacity: self.capacity }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Interner {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let st = Stored::deserialize(d)?;
        let index = st.names.iter().enumerate().map(|(i, n)| (NameKey::new(n), i as Sym)).collect();
        let families = st.names.iter().map(|n| super::agents::family(n)).collect();
        Ok(Interner { names: st.names, families, index, capacity: st.capacity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_folds_into_other() {
        let mut i = Interner::new(4);
        let a = i.intern("a");
        let b = i.intern("b");
        assert_eq!(i.intern("a"), a);
        assert_eq!(i.intern("c"), OTHER);
        assert_ne!(i.intern_always("cred"), OTHER);
        assert_eq!(i.name(b), "b");
        let long = "x".repeat(100);
        let l = i.intern_always(&long);
        assert_eq!(i.intern_always(&long), l);
        assert_eq!(i.name(l), long);
        let empty = i.intern("");
        assert_eq!(i.name(empty), "");
    }
}
