//! Symbols for the strings the detector keeps (operations, user agents, databases,
//! collections, credentials): each distinct string is stored once and events carry a `u32`.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub type Sym = u32;

/// Stands for every string past the capacity.
pub const OTHER: Sym = 1;

#[derive(Debug, Clone)]
pub struct Interner {
    names: Vec<Box<str>>,
    index: FxHashMap<Box<str>, Sym>,
    capacity: usize,
}

impl Interner {
    pub fn new(capacity: usize) -> Self {
        let mut i = Interner { names: Vec::new(), index: FxHashMap::default(), capacity: capacity.max(2) };
        i.insert(""); // symbol 0: the empty string
        i.insert("(other)");
        i
    }

    fn insert(&mut self, s: &str) -> Sym {
        let sym = self.names.len() as Sym;
        self.names.push(s.into());
        self.index.insert(s.into(), sym);
        sym
    }

    /// The symbol of `s`, or [`OTHER`] once `capacity` distinct strings are held.
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.index.get(s) {
            return sym;
        }
        if self.names.len() >= self.capacity {
            return OTHER;
        }
        self.insert(s)
    }

    /// Interns a string that must keep its identity (a credential): never [`OTHER`].
    pub fn intern_always(&mut self, s: &str) -> Sym {
        match self.index.get(s) {
            Some(&sym) => sym,
            None => self.insert(s),
        }
    }

    pub fn name(&self, sym: Sym) -> &str {
        self.names.get(sym as usize).map_or("", |s| s)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.len() <= 2
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
        let index = st.names.iter().enumerate().map(|(i, n)| (n.clone(), i as Sym)).collect();
        Ok(Interner { names: st.names, index, capacity: st.capacity })
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
        let empty = i.intern("");
        assert_eq!(i.name(empty), "");
    }
}
