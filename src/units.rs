//! Human-readable sizes (`"1GiB"`, `"500MB"`) and durations (`"24h"`, `"1h30m"`, `"10m"`), as
//! used in the configuration file and in alert summaries.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A byte count written with a unit in configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A span of event time written with a unit in configuration (nanoseconds inside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub i64);

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.replace('_', "").parse().map_err(|_| format!("`{s}` is not a size like \"1GiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!("unknown size unit `{other}` in `{s}` (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"))
        }
    };
    let v = num * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("size `{s}` is out of range"));
    }
    Ok(v.round() as u64)
}

pub fn parse_span(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if n_end == 0 {
            return Err(format!("`{s}` is not a duration like \"24h\" or \"1h30m\""));
        }
        let n: i64 = rest[..n_end].parse().map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[n_end..];
        let u_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..u_end].trim();
        rest = &rest[u_end..];
        let mult: i64 = match unit {
            "ms" => 1_000_000,
            "s" | "" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 7 * 86_400_000_000_000,
            other => return Err(format!("unknown duration unit `{other}` in `{s}` (use ms, s, m, h, d, w)")),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration `{s}` is too long"))?;
    }
    Ok(total)
}

/// `7.3 GiB`, `120 MiB`, `512 B`: binary units, one decimal below 10.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// `42 min`, `3 h 10 min`, `2 d 4 h`, `35 s`.
pub fn human_span(ns: i64) -> String {
    let s = ns.max(0) / 1_000_000_000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", (s + 30) / 60)
    } else if s < 86_400 {
        let m = (s + 30) / 60;
        if m % 60 == 0 {
            format!("{} h", m / 60)
        } else {
            format!("{} h {} min", m / 60, m % 60)
        }
    } else {
        let h = (s + 1800) / 3600;
        if h % 24 == 0 {
            format!("{} d", h / 24)
        } else {
            format!("{} d {} h", h / 24, h % 24)
        }
    }
}

/// The config-file form of a size: the largest binary unit that divides it exactly.
pub fn config_bytes(b: u64) -> String {
    for (unit, m) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= m && b % m == 0 {
            return format!("{}{unit}", b / m);
        }
    }
    format!("{b}B")
}

/// The config-file form of a duration: the largest unit that divides it exactly.
pub fn config_span(ns: i64) -> String {
    for (unit, m) in
        [("d", 86_400_000_000_000i64), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000)]
    {
        if ns >= m && ns % m == 0 {
            return format!("{}{unit}", ns / m);
        }
    }
    format!("{}ms", ns / 1_000_000)
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&config_bytes(self.0))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&config_span(self.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&config_bytes(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&config_span(self.0))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(n) => Ok(ByteSize(n)),
            NumOrText::Text(t) => parse_size(&t).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(_) => Err(serde::de::Error::custom("a duration needs a unit, e.g. \"24h\"")),
            NumOrText::Text(t) => parse_span(&t).map(Span).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("1 parsec").is_err());
        assert!(parse_size("GiB").is_err());
        assert_eq!(config_bytes(1 << 30), "1GiB");
        assert_eq!(config_bytes(1000), "1000B");
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("24h"), Ok(24 * 3_600_000_000_000));
        assert_eq!(parse_span("1h30m"), Ok(90 * 60_000_000_000));
        assert_eq!(parse_span("10m"), Ok(600_000_000_000));
        assert_eq!(parse_span("30d"), Ok(30 * 86_400_000_000_000));
        assert!(parse_span("soon").is_err());
        assert!(parse_span("5y").is_err());
        assert_eq!(config_span(parse_span("7d").unwrap()), "7d");
        assert_eq!(config_span(parse_span("90m").unwrap()), "90m");
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(7_838_315_315), "7.3 GiB");
        assert_eq!(human_bytes(120 << 20), "120 MiB");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_span(42 * 60_000_000_000), "42 min");
        assert_eq!(human_span(190 * 60_000_000_000), "3 h 10 min");
        assert_eq!(human_span(2 * 86_400_000_000_000), "2 d");
    }
}
