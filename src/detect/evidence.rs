//! What an alert shows an analyst: counts of operations, collections, user agents and
//! addresses, and the first activity ids, gathered while an origin is new (or, for the
//! key-level rules, over the current window). Small and bounded: a handful of slots each.

use super::intern::{Interner, Sym};
use crate::alert::NameCount;
use crate::time::Nanos;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

const SLOTS: usize = 6;
const ACTIVITY_IDS: usize = 5;
const TOP: usize = 5;

/// Counts for at most [`SLOTS`] distinct values, inline (one allocation per evidence, not one
/// per list); values past the slots are summed in `other`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Counts<K> {
    slots: [(K, u64); SLOTS],
    len: u8,
    other: u64,
}

impl<K: Copy + Default> Default for Counts<K> {
    fn default() -> Self {
        Counts { slots: [(K::default(), 0); SLOTS], len: 0, other: 0 }
    }
}

impl<K: Copy + PartialEq + Ord + Default> Counts<K> {
    pub fn add(&mut self, k: K, n: u64) {
        let len = self.len as usize;
        if let Some(slot) = self.slots[..len].iter_mut().find(|(s, _)| *s == k) {
            slot.1 += n;
        } else if len < SLOTS {
            self.slots[len] = (k, n);
            self.len += 1;
        } else {
            self.other += n;
        }
    }

    pub fn merge(&mut self, o: &Counts<K>) {
        for &(k, n) in &o.slots[..o.len as usize] {
            self.add(k, n);
        }
        self.other += o.other;
    }

    /// The largest counts first, ties by value, at most `n`.
    pub fn top(&self, n: usize) -> Vec<(K, u64)> {
        let mut v = self.slots[..self.len as usize].to_vec();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn distinct(&self) -> usize {
        self.len as usize
    }
}

/// A compact, ordered form of an IP address for counting.
pub fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => (0xffffu128 << 32) | u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn ip_from_bits(b: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub requests: u64,
    pub bytes: u64,
    pub first_time: Nanos,
    pub operations: Counts<Sym>,
    /// (database, collection) packed as `db << 32 | coll`.
    pub collections: Counts<u64>,
    pub user_agents: Counts<Sym>,
    /// Bytes per address.
    pub addresses: Counts<u128>,
    activity: [u128; ACTIVITY_IDS],
    activity_len: u8,
}

/// The parts of one request that evidence keeps.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub time: Nanos,
    pub ip: Option<u128>,
    pub bytes: u64,
    pub op: Sym,
    pub ua: Sym,
    pub db: Sym,
    pub coll: Sym,
    pub activity: u128,
}

impl Evidence {
    pub fn add(&mut self, s: &Sample) {
        if self.requests == 0 || s.time < self.first_time {
            self.first_time = s.time;
        }
        self.requests += 1;
        self.bytes += s.bytes;
        self.operations.add(s.op, 1);
        self.collections.add(((s.db as u64) << 32) | s.coll as u64, 1);
        self.user_agents.add(s.ua, 1);
        if let Some(ip) = s.ip {
            self.addresses.add(ip, s.bytes);
        }
        self.add_activity(s.activity);
    }

    pub fn merge(&mut self, o: &Evidence) {
        if self.requests == 0 || (o.requests > 0 && o.first_time < self.first_time) {
            self.first_time = o.first_time;
        }
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.operations.merge(&o.operations);
        self.collections.merge(&o.collections);
        self.user_agents.merge(&o.user_agents);
        self.addresses.merge(&o.addresses);
        for &a in o.activity_ids() {
            self.add_activity(a);
        }
    }

    fn add_activity(&mut self, a: u128) {
        let n = self.activity_len as usize;
        if a != 0 && n < ACTIVITY_IDS && !self.activity[..n].contains(&a) {
            self.activity[n] = a;
            self.activity_len += 1;
        }
    }

    pub fn activity_ids(&self) -> &[u128] {
        &self.activity[..self.activity_len as usize]
    }

    pub fn top_operations(&self, syms: &Interner) -> Vec<NameCount> {
        named(self.operations.top(SLOTS), |s| syms.name(s).to_string())
    }

    pub fn top_collections(&self, syms: &Interner) -> Vec<NameCount> {
        named(self.collections.top(SLOTS), |k| {
            let (db, coll) = (syms.name((k >> 32) as Sym), syms.name(k as Sym));
            match (db.is_empty(), coll.is_empty()) {
                (true, true) => String::new(),
                (false, true) => db.to_string(),
                (true, false) => coll.to_string(),
                _ => format!("{db}/{coll}"),
            }
        })
    }

    pub fn top_user_agents(&self, syms: &Interner) -> Vec<NameCount> {
        named(self.user_agents.top(SLOTS), |s| syms.name(s).to_string())
    }

    /// Addresses by bytes read.
    pub fn top_addresses(&self, n: usize) -> Vec<(IpAddr, u64)> {
        self.addresses.top(n).into_iter().map(|(b, c)| (ip_from_bits(b), c)).collect()
    }

    pub fn activity_id_strings(&self) -> Vec<String> {
        self.activity_ids().iter().map(|&a| format_guid(a)).collect()
    }
}

/// The [`TOP`] largest counts, ties by name: symbol numbers depend on the order the detector
/// met the names in (a detect partition meets them in another order than one process does),
/// so they must not decide which of equal counts is shown, nor in what order.
fn named<K>(v: Vec<(K, u64)>, name: impl Fn(K) -> String) -> Vec<NameCount> {
    let mut v: Vec<NameCount> = v.into_iter().map(|(k, count)| NameCount { name: name(k), count }).collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v.truncate(TOP);
    v
}

const fn hex_table() -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
}

static HEX: [u8; 256] = hex_table();

/// A GUID as 128 bits (0 when the text is not a GUID). The canonical 36-character form takes a
/// table-driven path: this runs once per record.
pub fn parse_guid(s: &str) -> u128 {
    let b = s.as_bytes();
    if b.len() == 36 && b[8] == b'-' && b[13] == b'-' && b[18] == b'-' && b[23] == b'-' {
        let (mut v, mut bad) = (0u128, 0u8);
        for (i, &c) in b.iter().enumerate() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                continue;
            }
            let d = HEX[c as usize];
            bad |= d;
            v = (v << 4) | (d & 0xf) as u128;
        }
        return if bad > 0xf { 0 } else { v };
    }
    let mut v: u128 = 0;
    let mut n = 0;
    for c in s.bytes() {
        if c == b'-' || c == b'{' || c == b'}' {
            continue;
        }
        let d = HEX[c as usize];
        if d > 0xf || n == 32 {
            return 0;
        }
        v = (v << 4) | d as u128;
        n += 1;
    }
    if n == 32 {
        v
    } else {
        0
    }
}

pub fn format_guid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip() {
        let g = "66a0c647-af38-4b8d-a92a-c48a805d6460";
        assert_eq!(format_guid(parse_guid(g)), g);
        assert_eq!(parse_guid("not-a-guid"), 0);
        assert_eq!(parse_guid("66A0C647-AF38-4B8D-A92A-C48A805D6460"), parse_guid(g));
        assert_eq!(parse_guid("{66a0c647af384b8da92ac48a805d6460}"), parse_guid(g));
        assert_eq!(parse_guid("66a0c647-af38-4b8d-a92a-c48a805d646g"), 0);
    }

    #[test]
    fn counts_keep_the_largest() {
        let mut c = Counts::<u32>::default();
        for i in 0..20u32 {
            c.add(i, i as u64);
        }
        c.add(3, 100);
        let top = c.top(2);
        assert_eq!(top, vec![(3, 103), (5, 5)]);
        assert_eq!(c.distinct(), SLOTS);
    }
}
