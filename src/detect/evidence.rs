//! What an alert shows an analyst: the most frequent operations, collections and user agents
//! with counts, addresses by bytes, and the first activity ids, gathered while an origin is new
//! (or, for the key-level rules, over the current window). Small and bounded: each list is a
//! Space-Saving sketch of [`CAPACITY`] counters (`sketch.rs`: exact while at most that many
//! distinct values occurred, otherwise over by at most 1/[`CAPACITY`] of the total, and every
//! value above that share is listed).

use super::intern::{Interner, Sym};
use super::sketch::{Addr, TopK, CAPACITY};
use crate::alert::NameCount;
use crate::time::Nanos;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

const ACTIVITY_IDS: usize = 5;
const TOP: usize = 5;

/// One evidence list: [`CAPACITY`] counters, inline (one allocation per evidence, not one per
/// list).
pub type Counts<K> = TopK<K, CAPACITY>;

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
    pub addresses: Counts<Addr>,
    activity: [u128; ACTIVITY_IDS],
    activity_len: u8,
}

/// Evidence gathered one request at a time, compact while it holds few: a key's window or its
/// new origins usually see one or two requests, and an [`Evidence`] is about 800 bytes (its
/// sketches are inline). The first [`FEW`] requests are kept as they came and folded into an
/// [`Evidence`] when one more comes; [`Gathered::evidence`] is exactly what adding every
/// request to one [`Evidence`] in the same order gives. It serializes as that [`Evidence`], so
/// checkpoints and models read and write the same documents as before.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "Evidence", into = "Evidence")]
pub struct Gathered {
    /// The requests, while there are at most [`FEW`] and `folded` is `None`.
    first: Vec<Sample>,
    folded: Option<Box<Evidence>>,
}

/// Requests a [`Gathered`] keeps as they came.
const FEW: usize = 4;

impl Gathered {
    pub fn add(&mut self, s: &Sample) {
        match &mut self.folded {
            Some(ev) => ev.add(s),
            None if self.first.len() < FEW => {
                super::grow::room_for_one(&mut self.first);
                self.first.push(*s);
            }
            None => {
                let mut ev = Box::<Evidence>::default();
                for f in std::mem::take(&mut self.first) {
                    ev.add(&f);
                }
                ev.add(s);
                self.folded = Some(ev);
            }
        }
    }

    /// The evidence of every request added.
    pub fn evidence(&self) -> std::borrow::Cow<'_, Evidence> {
        match &self.folded {
            Some(ev) => std::borrow::Cow::Borrowed(&**ev),
            None => {
                let mut ev = Evidence::default();
                for f in &self.first {
                    ev.add(f);
                }
                std::borrow::Cow::Owned(ev)
            }
        }
    }

    /// The oldest request's time (the evidence's `first_time`; 0 when empty).
    pub fn first_time(&self) -> Nanos {
        match &self.folded {
            Some(ev) => ev.first_time,
            None => self.first.iter().map(|f| f.time).min().unwrap_or(0),
        }
    }
}

impl From<Evidence> for Gathered {
    fn from(ev: Evidence) -> Self {
        Gathered { first: Vec::new(), folded: (ev != Evidence::default()).then(|| Box::new(ev)) }
    }
}

impl From<Gathered> for Evidence {
    fn from(g: Gathered) -> Self {
        match g.folded {
            Some(ev) => *ev,
            None => g.evidence().into_owned(),
        }
    }
}

impl PartialEq for Gathered {
    /// The same evidence, however it is held.
    fn eq(&self, other: &Self) -> bool {
        self.evidence() == other.evidence()
    }
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
            self.addresses.add(ip.into(), s.bytes);
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
        named(self.operations.top(), |s| syms.name(s).to_string())
    }

    pub fn top_collections(&self, syms: &Interner) -> Vec<NameCount> {
        named(self.collections.top(), |k| {
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
        named(self.user_agents.top(), |s| syms.name(s).to_string())
    }

    /// Addresses by bytes read (sketch estimates), at most `n`.
    pub fn top_addresses(&self, n: usize) -> Vec<(IpAddr, u64)> {
        self.addresses.top().into_iter().take(n).map(|(b, c)| (ip_from_bits(b.into()), c)).collect()
    }

    pub fn activity_id_strings(&self) -> Vec<String> {
        self.activity_ids().iter().map(|&a| format_guid(a)).collect()
    }
}

/// The [`TOP`] largest counts (of every counter, so the order of equal counts is decided here,
/// by name, before the list is cut), ties by name: symbol numbers depend on the order the detector
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
        // The usual form: the 32 digits at fixed places, into two 64-bit halves.
        const DIGITS: [usize; 32] = [
            0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32,
            33, 34, 35,
        ];
        let (mut hi, mut lo, mut bad) = (0u64, 0u64, 0u8);
        for &i in &DIGITS[..16] {
            let d = HEX[b[i] as usize];
            bad |= d;
            hi = (hi << 4) | u64::from(d & 0xf);
        }
        for &i in &DIGITS[16..] {
            let d = HEX[b[i] as usize];
            bad |= d;
            lo = (lo << 4) | u64::from(d & 0xf);
        }
        return if bad > 0xf { 0 } else { (u128::from(hi) << 64) | u128::from(lo) };
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
    fn gathered_evidence_is_the_evidence_of_its_requests_in_order() {
        let sample = |i: u64| Sample {
            time: 1_000 - i as i64 * 7 % 13,
            ip: (i % 3 != 0).then_some(0xffff_0a00_0000 + (i % 5) as u128),
            bytes: 100 * i + 1,
            op: (i % 2) as Sym,
            ua: (i % 4) as Sym,
            db: 1,
            coll: (i % 9) as Sym,
            activity: i as u128 + 1,
        };
        for n in 0..12u64 {
            let mut g = Gathered::default();
            let mut ev = Evidence::default();
            for i in 0..n {
                g.add(&sample(i));
                ev.add(&sample(i));
            }
            assert_eq!(*g.evidence(), ev, "{n} requests");
            assert_eq!(g.first_time(), ev.first_time, "{n} requests");
            assert_eq!(g.folded.is_some(), n as usize > FEW, "{n} requests");
            // Checkpoints and models hold it as the evidence it stands for, and it reads back
            // as the same evidence (folded), to which more requests add alike.
            let json = serde_json::to_string(&g).expect("serializes");
            assert_eq!(json, serde_json::to_string(&ev).expect("serializes"));
            let mut back: Gathered = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, g);
            back.add(&sample(99));
            ev.add(&sample(99));
            assert_eq!(*back.evidence(), ev);
        }
    }

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
    fn a_late_heavy_value_is_listed_first() {
        // The case: six values first, then the one that matters.
        let mut e = Evidence::default();
        let mut syms = Interner::new(100);
        let base = Sample { time: 0, ip: None, bytes: 1, op: 0, ua: 0, db: 0, coll: 0, activity: 0 };
        for i in 0..10u32 {
            let op = syms.intern(&format!("op{i}"));
            e.add(&Sample { op, ..base });
        }
        let late = syms.intern("ReadFeed");
        for _ in 0..50 {
            e.add(&Sample { op: late, ..base });
        }
        let top = e.top_operations(&syms);
        assert_eq!((top[0].name.as_str(), top[0].count >= 50), ("ReadFeed", true), "{top:?}");
        assert!(top[0].count <= 50 + 60 / CAPACITY as u64);
        assert_eq!(e.operations.total(), 60);
    }
}
