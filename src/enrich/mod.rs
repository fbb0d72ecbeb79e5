//! Who owns an address: enrichment of origins from files the user supplies (no network at
//! run time), loaded at start and again when a file changes (SIGHUP, or the service's check
//! of their modification times):
//! - ASN, AS name and country from the iptoasn TSV (`range_start range_end AS_number
//!   country_code AS_description`, IPv4 and IPv6, e.g. `ip2asn-combined.tsv`);
//! - Azure's own address ranges from the Service Tags JSON (`ServiceTags_Public.json`: each
//!   tag's name, region and address prefixes): the most specific prefix wins, a tag of a
//!   service (`Storage.WestEurope`) before a region's whole cloud (`AzureCloud.westeurope`);
//! - threat lists (`enrich.threat_lists`: name -> file of addresses and CIDRs, one a line,
//!   `#` comments), for `suspicious_origin`.
//!
//! Lookups are pure and deterministic: the same files give the same answers, so replay and
//! streaming agree. The detector holds an [`Enrichment`] like its allowlist: from the
//! configuration, never from a checkpoint or model.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What is known about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginInfo {
    /// Autonomous system number (iptoasn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Autonomous system's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_name: Option<String>,
    /// ISO 3166-1 alpha-2 country code of the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The Azure service tag whose prefix holds the address (`Storage.WestEurope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tag: Option<String>,
    /// The tag's Azure region (`westeurope`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The threat lists that name the address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lists: Vec<String>,
}

impl OriginInfo {
    pub fn is_empty(&self) -> bool {
        *self == OriginInfo::default()
    }

    /// A few words for a person: `AS64500 Example Hosting, NL`, `Azure Storage.WestEurope`.
    pub fn owner(&self) -> Option<String> {
        let mut parts = Vec::new();
        match (self.asn, &self.as_name) {
            (Some(n), Some(name)) => parts.push(format!("AS{n} {name}")),
            (Some(n), None) => parts.push(format!("AS{n}")),
            (None, Some(name)) => parts.push(name.clone()),
            (None, None) => {}
        }
        if let Some(c) = &self.country {
            parts.push(c.clone());
        }
        if let Some(tag) = &self.service_tag {
            parts.push(format!("Azure {tag}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

/// Where the enrichment comes from (`[enrich]`; empty: none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// iptoasn TSV file (ASN, AS name, country per range); "" for none.
    pub asn_tsv: String,
    /// Azure Service Tags JSON (`ServiceTags_Public.json`); "" for none.
    pub service_tags: String,
    /// Threat lists: name -> file (addresses and CIDRs, one a line, `#` comments).
    pub threat_lists: BTreeMap<String, String>,
}

impl EnrichConfig {
    pub fn is_empty(&self) -> bool {
        self.asn_tsv.is_empty() && self.service_tags.is_empty() && self.threat_lists.is_empty()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> =
            [&self.asn_tsv, &self.service_tags].into_iter().filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        f.extend(self.threat_lists.values().map(PathBuf::from));
        f
    }
}

/// An address as 128 bits (IPv4 mapped into `::ffff:0:0/96`, as the detector keeps them).
pub fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => (0xffffu128 << 32) | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// A CIDR (or a bare address) as (network bits, prefix length in the 128-bit space).
fn parse_prefix(s: &str) -> Option<(u128, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().ok()?;
    let (bits, len) = match (ip, len) {
        (IpAddr::V4(_), Some(l)) if l <= 32 => (bits(ip), 96 + l),
        (IpAddr::V4(_), None) => (bits(ip), 128),
        (IpAddr::V6(_), Some(l)) if l <= 128 => (bits(ip), l),
        (IpAddr::V6(_), None) => (bits(ip), 128),
        _ => return None,
    };
    Some((bits & mask(len), len))
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Prefixes by length, for most-specific-first lookups of possibly overlapping networks.
#[derive(Default)]
struct PrefixTable<V> {
    by_len: HashMap<(u8, u128), V>,
    /// The lengths present, longest first.
    lens: Vec<u8>,
}

impl<V> PrefixTable<V> {
    fn entry(&mut self, net: u128, len: u8) -> &mut V
    where
        V: Default,
    {
        if !self.lens.contains(&len) {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.by_len.entry((len, net)).or_default()
    }

    /// The most specific prefix holding `ip`.
    fn longest(&self, ip: u128) -> Option<&V> {
        self.lens.iter().find_map(|&len| self.by_len.get(&(len, ip & mask(len))))
    }

    fn len(&self) -> usize {
        self.by_len.len()
    }
}

struct AsRange {
    start: u128,
    end: u128,
    asn: u32,
    country: Option<String>,
    name: String,
}

struct Tag {
    name: String,
    region: Option<String>,
    /// A service's tag (`systemService` set), preferred over a region's whole cloud.
    service: bool,
}

/// The loaded files. Cheap to share (the detector holds it in an `Arc`).
#[derive(Default)]
pub struct Enrichment {
    /// Sorted by start, not overlapping.
    ranges: Vec<AsRange>,
    tags: Vec<Tag>,
    tag_prefixes: PrefixTable<Vec<u32>>,
    lists: Vec<(String, PrefixTable<()>)>,
    /// Each file with its modification time when loaded.
    loaded: Vec<(PathBuf, Option<SystemTime>)>,
}

impl std::fmt::Debug for Enrichment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrichment")
            .field("as_ranges", &self.ranges.len())
            .field("service_tag_prefixes", &self.tag_prefixes.len())
            .field("threat_lists", &self.lists.iter().map(|(n, t)| (n, t.len())).collect::<Vec<_>>())
            .finish()
    }
}

fn read(path: &str) -> Result<String, EnrichError> {
    std::fs::read_to_string(path).map_err(|source| EnrichError::Io { path: path.to_string(), source })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Enrichment {
    /// Loads every configured file; a bad line is an error naming the file and line.
    pub fn load(cfg: &EnrichConfig) -> Result<Enrichment, EnrichError> {
        let mut e = Enrichment::default();
        if !cfg.asn_tsv.is_empty() {
            e.ranges = load_tsv(&cfg.asn_tsv, &read(&cfg.asn_tsv)?)?;
        }
        if !cfg.service_tags.is_empty() {
            e.load_service_tags(&cfg.service_tags, &read(&cfg.service_tags)?)?;
        }
        for (name, path) in &cfg.threat_lists {
            e.lists.push((name.clone(), load_list(path, &read(path)?)?));
        }
        e.loaded = cfg.files().into_iter().map(|p| (p.clone(), modified(&p))).collect();
        Ok(e)
    }

    /// Whether a file changed (modification time) since it was loaded.
    pub fn changed(&self) -> bool {
        self.loaded.iter().any(|(p, t)| modified(p) != *t)
    }

    pub fn has_lists(&self) -> bool {
        !self.lists.is_empty()
    }

    /// Everything known about an address (its lists included).
    pub fn lookup(&self, ip: IpAddr) -> OriginInfo {
        let b = bits(ip);
        let mut info = OriginInfo::default();
        let i = self.ranges.partition_point(|r| r.start <= b);
        if let Some(r) = i.checked_sub(1).map(|i| &self.ranges[i]).filter(|r| b <= r.end) {
            info.asn = Some(r.asn);
            info.as_name = Some(r.name.clone()).filter(|n| !n.is_empty());
            info.country.clone_from(&r.country);
        }
        if let Some(candidates) = self.tag_prefixes.longest(b) {
            // A service's tag before a region's whole cloud; then by name (fixed order).
            let best = candidates.iter().map(|&i| &self.tags[i as usize]).min_by(|x, y| {
                (!x.service, x.region.is_none(), &x.name).cmp(&(!y.service, y.region.is_none(), &y.name))
            });
            if let Some(t) = best {
                info.service_tag = Some(t.name.clone());
                info.region.clone_from(&t.region);
            }
        }
        info.lists = self.lists_holding(b).map(str::to_string).collect();
        info
    }

    /// The names of the threat lists that hold the address (128-bit form), in name order.
    pub fn lists_holding(&self, b: u128) -> impl Iterator<Item = &str> {
        self.lists.iter().filter(move |(_, t)| t.longest(b).is_some()).map(|(n, _)| n.as_str())
    }

    fn load_service_tags(&mut self, path: &str, text: &str) -> Result<(), EnrichError> {
        #[derive(Deserialize)]
        struct File {
            values: Vec<Value>,
        }
        #[derive(Deserialize)]
        struct Value {
            name: String,
            properties: Props,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Props {
            #[serde(default)]
            region: String,
            #[serde(default)]
            system_service: String,
            #[serde(default)]
            address_prefixes: Vec<String>,
        }
        let file: File = serde_json::from_str(text).map_err(|e| EnrichError::Format {
            path: path.to_string(),
            message: format!("not a Service Tags file: {e}"),
        })?;
        for v in file.values {
            let idx = self.tags.len() as u32;
            for p in &v.properties.address_prefixes {
                let (net, len) = parse_prefix(p).ok_or_else(|| EnrichError::Format {
                    path: path.to_string(),
                    message: format!("service tag {}: {p:?} is not an address prefix", v.name),
                })?;
                self.tag_prefixes.entry(net, len).push(idx);
            }
            let region = Some(v.properties.region).filter(|r| !r.is_empty());
            self.tags.push(Tag { name: v.name, region, service: !v.properties.system_service.is_empty() });
        }
        Ok(())
    }
}

fn load_tsv(path: &str, text: &str) -> Result<Vec<AsRange>, EnrichError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: String| EnrichError::Line { path: path.to_string(), line: n + 1, message };
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 5 {
            return Err(bad(format!("expected 5 tab-separated fields, found {}", f.len())));
        }
        let ip = |s: &str| s.trim().parse::<IpAddr>().map(bits).map_err(|_| bad(format!("{s:?} is not an address")));
        let (start, end) = (ip(f[0])?, ip(f[1])?);
        if end < start {
            return Err(bad("range_end is before range_start".into()));
        }
        let asn: u32 = f[2].trim().parse().map_err(|_| bad(format!("{:?} is not an AS number", f[2])))?;
        if asn == 0 {
            continue; // "Not routed"
        }
        let country = Some(f[3].trim()).filter(|c| c.len() == 2 && *c != "ZZ").map(str::to_string);
        out.push(AsRange { start, end, asn, country, name: f[4..].join("\t").trim().to_string() });
    }
    out.sort_by_key(|r| r.start);
    Ok(out)
}

fn load_list(path: &str, text: &str) -> Result<PrefixTable<()>, EnrichError> {
    let mut t = PrefixTable::default();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let (net, len) = parse_prefix(entry).ok_or_else(|| EnrichError::Line {
            path: path.to_string(),
            line: n + 1,
            message: format!("{entry:?} is not an address or CIDR"),
        })?;
        t.entry(net, len);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn asn_tags_and_lists_are_looked_up_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = write(
            dir.path(),
            "asn.tsv",
            "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n\
             203.0.113.0\t203.0.113.255\t64500\tNL\tExample Hosting\n\
             198.51.100.0\t198.51.100.255\t0\tNone\tNot routed\n\
             2001:db8::\t2001:db8:ffff:ffff:ffff:ffff:ffff:ffff\t64501\tDE\tExample v6\n",
        );
        let tags = write(
            dir.path(),
            "tags.json",
            r#"{"changeNumber":1,"cloud":"Public","values":[
              {"name":"AzureCloud.westeurope","id":"x","properties":{"region":"westeurope","systemService":"","addressPrefixes":["20.50.0.0/16","2603:1020::/47"]}},
              {"name":"Storage.WestEurope","id":"y","properties":{"region":"westeurope","systemService":"AzureStorage","addressPrefixes":["20.50.64.0/20"]}}]}"#,
        );
        let tor = write(dir.path(), "tor.txt", "# exits\n203.0.113.77\n\n192.0.2.0/28  # a block\n");
        let cfg = EnrichConfig {
            asn_tsv: tsv,
            service_tags: tags,
            threat_lists: BTreeMap::from([("tor".to_string(), tor.clone())]),
        };
        let e = Enrichment::load(&cfg).unwrap();
        let hosting = e.lookup(ip("203.0.113.77"));
        assert_eq!((hosting.asn, hosting.country.as_deref()), (Some(64500), Some("NL")));
        assert_eq!(hosting.lists, ["tor"]);
        assert_eq!(hosting.owner().as_deref(), Some("AS64500 Example Hosting, NL"));
        assert_eq!(e.lookup(ip("::ffff:203.0.113.5")).asn, Some(64500), "IPv4-mapped form");
        assert_eq!(e.lookup(ip("2001:db8::9")).as_name.as_deref(), Some("Example v6"));
        assert!(e.lookup(ip("198.51.100.1")).is_empty(), "not routed: nothing");
        assert!(e.lookup(ip("203.0.114.1")).asn.is_none(), "between ranges");
        let storage = e.lookup(ip("20.50.70.1"));
        assert_eq!(
            (storage.service_tag.as_deref(), storage.region.as_deref()),
            (Some("Storage.WestEurope"), Some("westeurope"))
        );
        assert_eq!(e.lookup(ip("20.50.1.1")).service_tag.as_deref(), Some("AzureCloud.westeurope"));
        assert_eq!(e.lookup(ip("2603:1020:1::1")).service_tag.as_deref(), Some("AzureCloud.westeurope"));
        assert_eq!(e.lookup(ip("192.0.2.15")).lists, ["tor"]);
        assert!(e.lookup(ip("192.0.2.16")).lists.is_empty());
        assert!(!e.changed());
        std::fs::write(&tor, "203.0.113.78\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&tor).unwrap().set_modified(later).unwrap();
        assert!(e.changed(), "a list file changed");

        let bad = write(dir.path(), "bad.txt", "10.0.0.1\nnot-an-address\n");
        let cfg = EnrichConfig { threat_lists: BTreeMap::from([("ti".into(), bad)]), ..Default::default() };
        let err = Enrichment::load(&cfg).unwrap_err().to_string();
        assert!(err.contains("bad.txt:2") && err.contains("not-an-address"), "{err}");
        let bad = write(dir.path(), "bad.tsv", "1.0.0.0\t1.0.0.255\tAS13335\tUS\tX\n");
        let err = Enrichment::load(&EnrichConfig { asn_tsv: bad, ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("bad.tsv:1") && err.contains("AS number"), "{err}");
        let missing =
            EnrichConfig { service_tags: dir.path().join("none.json").display().to_string(), ..Default::default() };
        assert!(Enrichment::load(&missing).unwrap_err().to_string().contains("none.json"));
    }
}
