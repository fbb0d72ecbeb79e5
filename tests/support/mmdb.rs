//! A test-only writer of the MaxMind DB format (version 2.0, as documented by MaxMind:
//! "MaxMind DB File Format Specification"), so that tests build their own small `.mmdb` files
//! and nothing is downloaded. Used by `src/enrich/mod.rs`'s unit tests and `tests/enrich.rs`.
//!
//! The layout it writes:
//! - a binary search tree over the 128 bits of an address (`ip_version` 6; IPv4 networks live
//!   at `::a.b.c.d`, under 96 zero bits, where readers look IPv4 up), `node_count` nodes of two
//!   records each, `record_size` 24, 28 or 32 bits per record, big-endian (28: the middle byte's
//!   high nibble is the left record's top bits, its low nibble the right record's). A record
//!   `< node_count` is a node, `== node_count` is "no data", and `node_count + 16 + offset`
//!   points to `offset` in the data section;
//! - 16 zero bytes (the data section separator);
//! - the data section: each network's value in the format's own encoding (a control byte whose
//!   top three bits are the type and low five the size, extended types 8 and up in a second
//!   byte, sizes 29, 30, 31 followed by 1, 2 or 3 bytes);
//! - `\xAB\xCD\xEFMaxMind.com` and the metadata map (`node_count`, `record_size`,
//!   `ip_version`, `database_type`, `languages`, `binary_format_major_version` = 2,
//!   `binary_format_minor_version` = 0, `build_epoch`, `description`).

#![allow(dead_code)]

use std::net::IpAddr;

/// A value of the data section.
#[derive(Clone, Debug)]
pub enum Value {
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Bool(bool),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    pub fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    pub fn str(s: &str) -> Value {
        Value::Str(s.to_string())
    }

    /// A GeoLite2-ASN record.
    pub fn asn(number: u32, organization: &str) -> Value {
        Value::map(&[
            ("autonomous_system_number", Value::U32(number)),
            ("autonomous_system_organization", Value::str(organization)),
        ])
    }

    /// A GeoLite2-Country (or the country part of a City) record.
    pub fn country(iso_code: &str) -> Value {
        Value::map(&[
            ("continent", Value::map(&[("code", Value::str("EU"))])),
            (
                "country",
                Value::map(&[
                    ("geoname_id", Value::U32(2750405)),
                    ("iso_code", Value::str(iso_code)),
                    ("names", Value::map(&[("en", Value::str(iso_code))])),
                ]),
            ),
        ])
    }
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | first);
    } else {
        out.push(first);
        out.push(kind - 7);
    }
    out.extend(extra);
}

/// An unsigned integer without its leading zero bytes, as the format stores them.
fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend(&bytes[skip..]);
}

pub fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend(s.as_bytes());
        }
        Value::U16(n) => uint(out, 5, u64::from(*n)),
        Value::U32(n) => uint(out, 6, u64::from(*n)),
        Value::U64(n) => uint(out, 9, *n),
        Value::Bool(b) => control(out, 14, usize::from(*b)),
        Value::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Value::Str(k.clone()));
                encode(out, v);
            }
        }
        Value::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// `203.0.113.0/24` or `2001:db8::/32` -> (128 bits, prefix length over 128 bits).
fn network(cidr: &str) -> (u128, u32) {
    let (addr, len) = cidr.split_once('/').expect("a CIDR");
    let len: u32 = len.parse().expect("a prefix length");
    match addr.parse::<IpAddr>().expect("an address") {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 96 + len),
        IpAddr::V6(a) => (u128::from(a), len),
    }
}

/// The bytes of a database of `database_type` holding `entries` (CIDR, value), later entries
/// inside earlier ones overriding them there.
pub fn build(database_type: &str, record_size: u32, entries: &[(&str, Value)]) -> Vec<u8> {
    assert!([24, 28, 32].contains(&record_size));
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    let mut data = Vec::new();
    for (cidr, value) in entries {
        let (bits, len) = network(cidr);
        let offset = data.len();
        encode(&mut data, value);
        let mut node = 0;
        for depth in 0..len {
            let side = ((bits >> (127 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][side] = Rec::Data(offset);
                break;
            }
            node = match nodes[node][side] {
                Rec::Node(n) => n,
                other => {
                    // Empty, or a wider network's data that goes on under both branches.
                    nodes.push([other; 2]);
                    let n = nodes.len() - 1;
                    nodes[node][side] = Rec::Node(n);
                    n
                }
            };
        }
    }
    let node_count = nodes.len();
    let value = |r: Rec| -> u64 {
        match r {
            Rec::Empty => node_count as u64,
            Rec::Node(n) => n as u64,
            Rec::Data(off) => (node_count + 16 + off) as u64,
        }
    };
    let mut out = Vec::new();
    for [l, r] in &nodes {
        let (l, r) = (value(*l), value(*r));
        assert!(l < 1 << record_size && r < 1 << record_size, "record too large for its size");
        match record_size {
            24 => {
                out.extend(&(l as u32).to_be_bytes()[1..]);
                out.extend(&(r as u32).to_be_bytes()[1..]);
            }
            28 => {
                out.extend(&(l as u32).to_be_bytes()[1..]);
                out.push((((l >> 24) & 0x0f) << 4 | ((r >> 24) & 0x0f)) as u8);
                out.extend(&(r as u32).to_be_bytes()[1..]);
            }
            _ => {
                out.extend(&(l as u32).to_be_bytes());
                out.extend(&(r as u32).to_be_bytes());
            }
        }
    }
    out.extend([0u8; 16]);
    out.extend(&data);
    out.extend(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = Value::map(&[
        ("node_count", Value::U32(node_count as u32)),
        ("record_size", Value::U16(record_size as u16)),
        ("ip_version", Value::U16(6)),
        ("database_type", Value::str(database_type)),
        ("languages", Value::Array(vec![Value::str("en")])),
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(1_700_000_000)),
        ("description", Value::map(&[("en", Value::str("exfilwatch test database"))])),
    ]);
    encode(&mut out, &metadata);
    out
}

/// Writes [`build`]'s bytes to `dir/name`; returns the path as text.
pub fn write(dir: &std::path::Path, name: &str, database_type: &str, entries: &[(&str, Value)]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, build(database_type, 28, entries)).expect("write the test database");
    p.display().to_string()
}
