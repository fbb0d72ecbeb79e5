//! Who owns the origins (`crate::enrich`), in the detector: every alert's origins are stamped
//! with their ASN, AS name, country, Azure service tag and threat lists; its baseline gets the
//! autonomous systems and countries of the key's familiar origins; a read from an AS or a
//! country the key never used raises the alert's severity one step and says so; and
//! `suspicious_origin` alerts on any successful read from an address on a threat list.
//! Pure: the enrichment is data from the configuration, like the allowlist.

use super::*;
use crate::enrich::{Enrichment, OriginInfo};
use std::sync::Arc;

/// A suspicious_origin dedup entry older than the re-alert interval is dropped once the map
/// holds this many.
const SUSPICIOUS_PRUNE_AT: usize = 4096;

/// What a key's familiar origins say about where it is used.
#[derive(Default)]
pub(super) struct Usual {
    /// (AS number, `AS64500 Example Hosting`), the most used first.
    asns: Vec<(u32, String)>,
    countries: Vec<String>,
}

impl Detector {
    /// Who owns the addresses (`[enrich]`); `None` for nobody knows.
    pub fn set_enrichment(&mut self, enrichment: Option<Arc<Enrichment>>) {
        self.ctx.enrich = enrichment;
    }

    /// Whether an enrichment is set.
    pub fn has_enrichment(&self) -> bool {
        self.ctx.enrich.is_some()
    }

    /// As [`Detector::set_enrichment`], builder style.
    pub fn with_enrichment(mut self, enrichment: Option<Arc<Enrichment>>) -> Self {
        self.ctx.enrich = enrichment;
        self
    }
}

/// The `n` most frequent of `counts`, ties by value.
fn top<T: Ord + Clone>(counts: BTreeMap<T, u64>, n: usize) -> Vec<T> {
    let mut v: Vec<(u64, T)> = counts.into_iter().map(|(k, c)| (c, k)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v.into_iter().take(n).map(|(_, k)| k).collect()
}

impl Ctx {
    /// The ASes and countries of the key's familiar origins at `t`.
    pub(super) fn usual_owners(&self, enrich: &Enrichment, key: &KeyState, t: Nanos) -> Usual {
        let familiar_after = self.cfg.familiar_after.0;
        let (mut asns, mut countries) = (BTreeMap::new(), BTreeMap::new());
        for (origin, o) in &key.origins {
            if t < o.first_seen + familiar_after || o.verdict == Some(verdict::VerdictKind::Malicious) {
                continue;
            }
            // An AS origin (asn granularity) is its AS, with the TSV's name; no country.
            let info = match self.asn_of_origin(origin) {
                Some(asn) => OriginInfo {
                    asn: Some(asn),
                    as_name: enrich.as_name(asn).map(str::to_string),
                    ..OriginInfo::default()
                },
                None => enrich.lookup(evidence::ip_from_bits(origin)),
            };
            if let Some(asn) = info.asn {
                let shown = match &info.as_name {
                    Some(name) => format!("AS{asn} {name}"),
                    None => format!("AS{asn}"),
                };
                *asns.entry((asn, shown)).or_insert(0) += u64::from(o.requests.max(1));
            }
            if let Some(c) = info.country {
                *countries.entry(c).or_insert(0) += u64::from(o.requests.max(1));
            }
        }
        Usual { asns: top(asns, usize::MAX), countries: top(countries, usize::MAX) }
    }

    /// `suspicious_origin`: a successful read from an address on a threat list, once per list
    /// and `realert` of event time for each (key, address). The allowlist can hold it back (an
    /// analyst's decision outranks a generic list); the learning period does not.
    pub(super) fn suspicious_read(
        &mut self,
        account: &str,
        cred: Sym,
        key: &mut KeyState,
        origin: OriginKey,
        s: &Sample,
        out: &mut Vec<Alert>,
    ) {
        // Every successful read passes here: borrow first, and take a reference (an atomic
        // increment) only for an address some list holds.
        let Some(ip) = s.ip else { return };
        let listed = self.enrich.as_ref().is_some_and(|e| e.has_lists() && e.lists_holding(ip).next().is_some());
        let Some(enrich) = self.enrich.clone().filter(|_| listed) else { return };
        let t = s.time;
        let realert = self.cfg.realert.0;
        for list in enrich.lists_holding(ip) {
            let credential = self.syms.name(cred).to_string();
            let addr = evidence::ip_from_bits(ip).to_string();
            let dedup = format!("{account}\u{1f}{credential}\u{1f}{addr}\u{1f}{list}");
            let (since, epoch) = match self.suspicious.get(&dedup) {
                Some(&(at, _, _)) if t - at < realert => continue,
                Some(&(_, since, epoch)) => (since, epoch + 1),
                None => (t, 0),
            };
            if self.suspicious.len() >= SUSPICIOUS_PRUNE_AT {
                self.suspicious.retain(|_, (at, _, _)| t - *at < realert);
            }
            self.suspicious.insert(dedup, (t, since, epoch));
            let mut ev = Evidence::default();
            ev.add(s);
            let first_seen = key.origins.get(&origin).map_or(t, |o| o.first_seen);
            let mut origin_ref = self.origin_ref(origin, None, Some(ip));
            origin_ref.ip.clone_from(&addr);
            let summary = format!(
                "{credential} of account {account} read {} from {addr}, an address on the threat list \"{list}\"",
                human_bytes(s.bytes)
            );
            let a = Alert {
                id: alert_id(Rule::SuspiciousOrigin, account, &credential, &format!("{addr} {list}"), since, 0, epoch),
                rule: Rule::SuspiciousOrigin,
                severity: Severity::High,
                account: account.to_string(),
                resource: None, // stamped by `Ctx::process`
                credential,
                origin: Some(origin_ref),
                origins: None,
                other_bytes: None,
                trigger_event_time: format_rfc3339(t),
                window: Window { start: format_rfc3339(t), end: format_rfc3339(t) },
                observed_bytes: s.bytes,
                threshold_bytes: 0,
                escalation_level: 0,
                baseline: self.baseline(key, t, None),
                evidence: self.evidence_out(&ev, Some(first_seen), None),
                summary,
            };
            self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
        }
    }
}

/// Stamps an alert's origins with who owns them, its baseline with the key's usual ASes and
/// countries, and raises its severity one step (saying why) when its origin is in an AS or a
/// country none of the key's familiar origins is in.
pub(super) fn stamp(a: &mut Alert, enrich: &Enrichment, usual: &Usual) {
    let look = |o: &mut OriginRef| {
        if let Ok(ip) = o.ip.parse::<IpAddr>() {
            o.info = enrich.lookup(ip);
        }
    };
    a.origin.iter_mut().chain(a.origins.iter_mut().flatten()).for_each(look);
    a.baseline.usual_asns = usual.asns.iter().take(5).map(|(_, s)| s.clone()).collect();
    a.baseline.usual_countries = usual.countries.iter().take(5).cloned().collect();
    let Some(origin) = &a.origin else { return };
    let info: &OriginInfo = &origin.info;
    if let Some(owner) = info.owner() {
        // "from 203.0.113.77" -> "from 203.0.113.77 (AS64500 Example Hosting, NL)".
        if let Some(at) = a.summary.find(&origin.ip) {
            let end = at + origin.ip.len();
            a.summary.insert_str(end, &format!(" ({owner})"));
        }
    }
    let mut never = Vec::new();
    if let Some(asn) = info.asn.filter(|_| !usual.asns.is_empty()) {
        if !usual.asns.iter().any(|(n, _)| *n == asn) {
            never.push(format!("AS{asn}"));
        }
    }
    if let Some(c) = info.country.as_ref().filter(|_| !usual.countries.is_empty()) {
        if !usual.countries.contains(c) {
            never.push(format!("country {c}"));
        }
    }
    if !never.is_empty() {
        a.severity = match a.severity {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        };
        a.summary.push_str(&format!("; {} never used by this key before", never.join(" and ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::EnrichConfig;

    fn alert() -> Alert {
        let text = include_str!("../../tests/golden/sample-logs.alerts.jsonl");
        let mut a: Alert = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        a.severity = Severity::Medium;
        a
    }

    fn usual(asns: &[u32], countries: &[&str]) -> Usual {
        Usual {
            asns: asns.iter().map(|n| (*n, format!("AS{n}"))).collect(),
            countries: countries.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn severity_rises_one_step_only_for_an_as_or_country_the_key_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("asn.tsv");
        std::fs::write(&tsv, "203.0.113.0\t203.0.113.255\t64500\tNL\tExample Hosting\n").unwrap();
        let e = Enrichment::load(&EnrichConfig { asn_tsv: tsv.display().to_string(), ..Default::default() }).unwrap();
        let stamped = |u: Usual| {
            let mut a = alert();
            stamp(&mut a, &e, &u);
            a
        };
        // Its usual AS and country: unchanged, and the summary names the owner.
        let same = stamped(usual(&[64500], &["NL"]));
        assert_eq!(same.severity, Severity::Medium);
        assert!(same.summary.contains("203.0.113.77 (AS64500 Example Hosting, NL)"), "{}", same.summary);
        assert!(!same.summary.contains("never used by this key before"));
        assert_eq!(same.origin.as_ref().unwrap().info.asn, Some(64500));
        // Nothing known about the key's origins: nothing to compare with.
        assert_eq!(stamped(usual(&[], &[])).severity, Severity::Medium);
        // Another AS in the same country; another country too.
        let other_as = stamped(usual(&[64496], &["NL"]));
        assert_eq!(other_as.severity, Severity::High);
        assert!(other_as.summary.ends_with("; AS64500 never used by this key before"), "{}", other_as.summary);
        let both = stamped(usual(&[64496], &["US"]));
        assert_eq!(both.severity, Severity::High, "one step, not two");
        assert!(both.summary.ends_with("; AS64500 and country NL never used by this key before"));
        let mut critical = alert();
        critical.severity = Severity::Critical;
        stamp(&mut critical, &e, &usual(&[1], &[]));
        assert_eq!(critical.severity, Severity::Critical);
    }
}
