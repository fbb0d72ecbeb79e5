//! Who owns an address: enrichment of origins from files the user supplies (no network at
//! run time), loaded at start and again when a file changes (SIGHUP, or the service's check
//! of their modification times):
//! - ASN, AS name and country from the iptoasn TSV (`range_start range_end AS_number
//!   country_code AS_description`, IPv4 and IPv6, e.g. `ip2asn-combined.tsv`);
//! - ASN and AS name from a MaxMind-format ASN database (`enrich.asn_mmdb`: GeoLite2-ASN,
//!   DB-IP's ASN Lite: `autonomous_system_number`, `autonomous_system_organization`), the
//!   country from a Country or City database (`enrich.country_mmdb`: `country.iso_code`), read
//!   with the `maxminddb` crate. Where a database and the TSV both are configured, the database
//!   wins where it answers: the AS (number and name together) from `asn_mmdb` when it knows the
//!   address, else from the TSV; the country from `country_mmdb` when it has one, else the
//!   TSV's (the country an AS range is registered in, coarser than a geolocation);
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
    /// MaxMind-format ASN database (GeoLite2-ASN, DB-IP ASN Lite `.mmdb`); "" for none. Wins
    /// over `asn_tsv` for the addresses it knows.
    pub asn_mmdb: String,
    /// MaxMind-format Country or City database (`country.iso_code`); "" for none. Wins over
    /// `asn_tsv`'s country for the addresses it knows.
    pub country_mmdb: String,
    /// Azure Service Tags JSON (`ServiceTags_Public.json`); "" for none.
    pub service_tags: String,
    /// Threat lists: name -> file (addresses and CIDRs, one a line, `#` comments).
    pub threat_lists: BTreeMap<String, String>,
}

impl EnrichConfig {
    pub fn is_empty(&self) -> bool {
        self.asn_tsv.is_empty()
            && self.asn_mmdb.is_empty()
            && self.country_mmdb.is_empty()
            && self.service_tags.is_empty()
            && self.threat_lists.is_empty()
    }

    /// Whether some file says which AS an address is in (`origin_granularity = "asn"` needs one).
    pub fn knows_asns(&self) -> bool {
        !self.asn_tsv.is_empty() || !self.asn_mmdb.is_empty()
    }

    /// Each configured file with its modification time now (what a failed reload saw, so that
    /// the same bad files are not read again every second).
    pub fn stamps(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        self.files().into_iter().map(|p| (p.clone(), modified(&p))).collect()
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> = [&self.asn_tsv, &self.asn_mmdb, &self.country_mmdb, &self.service_tags]
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
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

/// A MaxMind-format database, read into memory whole (a reload reads the new file while
/// the old one still serves).
type Mmdb = maxminddb::Reader<Vec<u8>>;

/// The loaded files. Cheap to share (the detector holds it in an `Arc`).
#[derive(Default)]
pub struct Enrichment {
    /// Sorted by start, not overlapping.
    ranges: Vec<AsRange>,
    /// The TSV's name of each AS (its first range's).
    as_names: HashMap<u32, String>,
    asn_db: Option<Mmdb>,
    country_db: Option<Mmdb>,
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
            .field("asn_mmdb", &self.asn_db.as_ref().map(|d| &d.metadata().database_type))
            .field("country_mmdb", &self.country_db.as_ref().map(|d| &d.metadata().database_type))
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
            for r in e.ranges.iter().filter(|r| !r.name.is_empty()) {
                e.as_names.entry(r.asn).or_insert_with(|| r.name.clone());
            }
        }
        if !cfg.asn_mmdb.is_empty() {
            e.asn_db = Some(load_mmdb(&cfg.asn_mmdb, MmdbKind::Asn)?);
        }
        if !cfg.country_mmdb.is_empty() {
            e.country_db = Some(load_mmdb(&cfg.country_mmdb, MmdbKind::Country)?);
        }
        if !cfg.service_tags.is_empty() {
            e.load_service_tags(&cfg.service_tags, &read(&cfg.service_tags)?)?;
        }
        for (name, path) in &cfg.threat_lists {
            e.lists.push((name.clone(), load_list(path, &read(path)?)?));
        }
        e.loaded = cfg.stamps();
        Ok(e)
    }

    /// Whether a file changed (modification time) since it was loaded.
    pub fn changed(&self) -> bool {
        self.loaded.iter().any(|(p, t)| modified(p) != *t)
    }

    pub fn has_lists(&self) -> bool {
        !self.lists.is_empty()
    }

    /// Whether some file says which AS an address is in.
    pub fn knows_asns(&self) -> bool {
        !self.ranges.is_empty() || self.asn_db.is_some()
    }

    /// The TSV's range holding an address (128-bit form).
    fn range(&self, b: u128) -> Option<&AsRange> {
        let i = self.ranges.partition_point(|r| r.start <= b);
        i.checked_sub(1).map(|i| &self.ranges[i]).filter(|r| b <= r.end)
    }

    /// The AS of an address (128-bit form), as [`Enrichment::lookup`] would give it, without
    /// its name: the detector's origin under `origin_granularity = "asn"`, once per read.
    pub fn asn(&self, b: u128) -> Option<u32> {
        if let Some(db) = &self.asn_db {
            if let Some(n) = mmdb_asn(db, plain(b)) {
                return Some(n);
            }
        }
        self.range(b).map(|r| r.asn)
    }

    /// The name of an AS as the TSV gives it (its first range's), for an origin that is an
    /// AS rather than an address (`origin_granularity = "asn"`); `None` when the TSV does not
    /// name it (an AS only `asn_mmdb` knows: its name comes with a lookup of an address).
    pub fn as_name(&self, asn: u32) -> Option<&str> {
        self.as_names.get(&asn).map(String::as_str)
    }

    /// Everything known about an address (its lists included).
    pub fn lookup(&self, ip: IpAddr) -> OriginInfo {
        let b = bits(ip);
        let mut info = OriginInfo::default();
        if let Some(r) = self.range(b) {
            info.asn = Some(r.asn);
            info.as_name = Some(r.name.clone()).filter(|n| !n.is_empty());
            info.country.clone_from(&r.country);
        }
        // The databases win where they answer (the module's documentation says why).
        if let Some(db) = &self.asn_db {
            if let Some(n) = mmdb_asn(db, plain(b)) {
                info.asn = Some(n);
                info.as_name = mmdb_str(db, plain(b), &["autonomous_system_organization"]);
            }
        }
        if let Some(db) = &self.country_db {
            if let Some(c) = mmdb_str(db, plain(b), &["country", "iso_code"]).filter(|c| c.len() == 2) {
                info.country = Some(c);
            }
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

/// An address as the databases take it: IPv4 (in its IPv4-mapped form here) as IPv4, which
/// the reader looks up at `::a.b.c.d` in an IPv6 tree, as the format says.
fn plain(b: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(b);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// A database's AS number for an address; 0 (reserved) counts as none. A lookup that fails
/// (damage past the checks made when it was loaded) is no answer, as for an address it lacks.
fn mmdb_asn(db: &Mmdb, ip: IpAddr) -> Option<u32> {
    let found = db.lookup(ip).ok()?;
    found
        .decode_path::<u32>(&[maxminddb::PathElement::Key("autonomous_system_number")])
        .ok()
        .flatten()
        .filter(|&n| n != 0)
}

fn mmdb_str(db: &Mmdb, ip: IpAddr, path: &[&str]) -> Option<String> {
    let found = db.lookup(ip).ok()?;
    let path: Vec<maxminddb::PathElement<'_>> = path.iter().map(|k| maxminddb::PathElement::Key(k)).collect();
    found.decode_path::<String>(&path).ok().flatten().filter(|s| !s.is_empty())
}

#[derive(Clone, Copy, PartialEq)]
enum MmdbKind {
    Asn,
    Country,
}

/// Opens a MaxMind-format database and checks that it is the kind configured (its
/// `database_type`: an ASN database for `asn_mmdb`, a Country or City one for
/// `country_mmdb`), so that two swapped paths are an error at start, not silence.
fn load_mmdb(path: &str, kind: MmdbKind) -> Result<Mmdb, EnrichError> {
    let bytes = std::fs::read(path).map_err(|source| EnrichError::Io { path: path.to_string(), source })?;
    let bad = |message: String| EnrichError::Format { path: path.to_string(), message };
    let db = maxminddb::Reader::from_source(bytes).map_err(|e| bad(format!("not a MaxMind DB file: {e}")))?;
    let t = db.metadata().database_type.to_ascii_lowercase();
    let (fits, wanted) = match kind {
        MmdbKind::Asn => (t.contains("asn"), "an ASN database (GeoLite2-ASN, DB-IP ASN Lite)"),
        MmdbKind::Country => (
            t.contains("country") || t.contains("city"),
            "a Country or City database (GeoLite2-Country or -City, DB-IP)",
        ),
    };
    if !fits {
        return Err(bad(format!("database_type {:?} is not {wanted}", db.metadata().database_type)));
    }
    // One lookup of each family, so that a tree or data section damaged near its root is an
    // error now rather than silence at every read.
    for probe in [IpAddr::from([1, 1, 1, 1]), IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])] {
        match db.lookup(probe) {
            Ok(r) => {
                r.decode::<maxminddb::geoip2::Asn<'_>>()
                    .map(|_| ())
                    .or_else(|_| r.decode::<maxminddb::geoip2::Country<'_>>().map(|_| ()))
                    .map_err(|e| bad(format!("damaged MaxMind DB file: {e}")))?;
            }
            // An IPv6 address in an IPv4-only database is no damage.
            Err(_) if probe.is_ipv6() && db.metadata().ip_version == 4 => {}
            Err(e) => return Err(bad(format!("damaged MaxMind DB file: {e}"))),
        }
    }
    Ok(db)
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
#[path = "../../tests/support/mmdb.rs"]
pub(crate) mod mmdb_writer;

#[cfg(test)]
mod tests {
    use super::mmdb_writer::{self, Value};
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
            ..Default::default()
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

    #[test]
    fn the_test_writer_makes_databases_the_maxminddb_crate_reads() {
        let entries = [
            ("203.0.113.0/24", Value::asn(64500, "Example Hosting")),
            ("203.0.113.128/25", Value::asn(64501, "Inner Hosting")),
            ("10.0.0.0/8", Value::asn(64496, "Contoso Corp")),
            ("2001:db8::/32", Value::asn(64502, "Example v6")),
        ];
        for size in [24, 28, 32] {
            let db = maxminddb::Reader::from_source(mmdb_writer::build("GeoLite2-ASN", size, &entries)).unwrap();
            db.verify().unwrap_or_else(|e| panic!("record size {size}: {e}"));
            assert_eq!(db.metadata().record_size, size as u16);
            assert_eq!(db.metadata().binary_format_major_version, 2);
            let asn = |ip: &str| {
                let r = db.lookup(ip.parse().unwrap()).unwrap();
                r.decode::<maxminddb::geoip2::Asn<'_>>()
                    .unwrap()
                    .map(|a| (a.autonomous_system_number, a.autonomous_system_organization.map(str::to_string)))
            };
            assert_eq!(asn("203.0.113.77"), Some((Some(64500), Some("Example Hosting".into()))), "size {size}");
            assert_eq!(asn("203.0.113.200").and_then(|a| a.0), Some(64501), "the more specific network");
            assert_eq!(asn("10.200.0.1").and_then(|a| a.0), Some(64496));
            assert_eq!(asn("2001:db8:1::9").and_then(|a| a.0), Some(64502), "IPv6");
            assert_eq!(asn("::ffff:10.1.1.1"), None, "IPv4-mapped form is not aliased in this tree");
            assert_eq!(asn("203.0.114.1"), None);
            assert_eq!(asn("2001:db9::1"), None);
            let net = db.lookup("203.0.113.5".parse().unwrap()).unwrap().network().unwrap();
            assert_eq!(net.to_string(), "203.0.113.0/25", "the leaf the address fell in");
        }
    }

    #[test]
    fn mmdb_files_answer_before_the_tsv_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = write(
            dir.path(),
            "asn.tsv",
            "203.0.113.0\t203.0.113.255\t64500\tNL\tExample Hosting\n\
             198.51.100.0\t198.51.100.255\t64499\tUS\tOnly In Tsv\n",
        );
        let asn_db = mmdb_writer::write(
            dir.path(),
            "asn.mmdb",
            "GeoLite2-ASN",
            &[("203.0.113.0/25", Value::asn(64510, "Newer Owner")), ("2001:db8::/32", Value::asn(64502, "Example v6"))],
        );
        let country_db = mmdb_writer::write(
            dir.path(),
            "country.mmdb",
            "GeoLite2-City",
            &[("203.0.113.0/24", Value::country("DE")), ("2001:db8::/48", Value::country("FR"))],
        );
        let cfg = EnrichConfig {
            asn_tsv: tsv,
            asn_mmdb: asn_db.clone(),
            country_mmdb: country_db.clone(),
            ..Default::default()
        };
        let e = Enrichment::load(&cfg).unwrap();
        assert!(e.knows_asns() && cfg.knows_asns());
        // The databases win where they answer: AS number and name together, the country apart.
        let a = e.lookup(ip("203.0.113.7"));
        assert_eq!((a.asn, a.as_name.as_deref(), a.country.as_deref()), (Some(64510), Some("Newer Owner"), Some("DE")));
        assert_eq!(e.asn(bits(ip("203.0.113.7"))), Some(64510));
        assert_eq!(e.as_name(64500), Some("Example Hosting"), "the TSV's name");
        assert_eq!(e.as_name(64510), None, "only the database knows it, by address");
        // Outside the ASN database's network: the TSV's AS, the country database's country.
        let b = e.lookup(ip("203.0.113.200"));
        assert_eq!(
            (b.asn, b.as_name.as_deref(), b.country.as_deref()),
            (Some(64500), Some("Example Hosting"), Some("DE"))
        );
        // Only the TSV knows it.
        let c = e.lookup(ip("198.51.100.1"));
        assert_eq!((c.asn, c.country.as_deref()), (Some(64499), Some("US")));
        // IPv6, and the IPv4-mapped form of an IPv4 address.
        let d = e.lookup(ip("2001:db8::1"));
        assert_eq!((d.asn, d.country.as_deref()), (Some(64502), Some("FR")));
        assert_eq!(e.lookup(ip("2001:db8:1::1")).country, None);
        assert_eq!(e.lookup(ip("::ffff:203.0.113.7")).asn, Some(64510));
        assert!(e.lookup(ip("192.0.2.1")).is_empty());
        assert!(!e.changed());
        std::fs::write(&asn_db, mmdb_writer::build("GeoLite2-ASN", 24, &[])).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&asn_db).unwrap().set_modified(later).unwrap();
        assert!(e.changed(), "a database changed");

        // A damaged or wrong file is an error naming it.
        let junk = write(dir.path(), "junk.mmdb", "not a database at all");
        let err = Enrichment::load(&EnrichConfig { asn_mmdb: junk, ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("junk.mmdb") && err.contains("not a MaxMind DB file"), "{err}");
        let mut cut = mmdb_writer::build("GeoLite2-ASN", 28, &[("203.0.113.0/24", Value::asn(64500, "X"))]);
        let n = cut.len();
        cut.truncate(n - 40); // into the metadata
        std::fs::write(dir.path().join("cut.mmdb"), cut).unwrap();
        let cut = dir.path().join("cut.mmdb").display().to_string();
        let err = Enrichment::load(&EnrichConfig { asn_mmdb: cut, ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("cut.mmdb"), "{err}");
        let mut bad_tree = mmdb_writer::build("GeoLite2-ASN", 24, &[("1.0.0.0/8", Value::asn(13335, "X"))]);
        bad_tree[..6].copy_from_slice(&[0xff; 6]); // the root points past the file
        std::fs::write(dir.path().join("tree.mmdb"), bad_tree).unwrap();
        let tree = dir.path().join("tree.mmdb").display().to_string();
        let err = Enrichment::load(&EnrichConfig { asn_mmdb: tree, ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("tree.mmdb") && err.contains("damaged"), "{err}");
        let swapped = EnrichConfig { asn_mmdb: country_db, ..Default::default() };
        let err = Enrichment::load(&swapped).unwrap_err().to_string();
        assert!(err.contains("country.mmdb") && err.contains("not an ASN database"), "{err}");
        let missing =
            EnrichConfig { country_mmdb: dir.path().join("none.mmdb").display().to_string(), ..Default::default() };
        assert!(Enrichment::load(&missing).unwrap_err().to_string().contains("none.mmdb"));
    }
}
