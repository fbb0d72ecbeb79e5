//! The alert: what an analyst receives. JSON Lines, one alert per line; field names are part
//! of the product's interface (see README "Alert format").

use crate::time::Nanos;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    UnfamiliarOriginVolume,
    /// One origin no key of the account knows, read by several keys, each below the
    /// threshold and together above it.
    UnfamiliarOriginAccountVolume,
    UnfamiliarOriginsAggregate,
    VolumeAnomaly,
    NewOrigin,
    /// A read from an origin an analyst judged malicious (`exfilwatch feedback --malicious`).
    MaliciousOrigin,
    /// More than `spray_origins` new origins for one key within an hour.
    OriginSpray,
    /// A successful read from an address on a configured threat list (`enrich.threat_lists`).
    SuspiciousOrigin,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::UnfamiliarOriginVolume,
        Rule::UnfamiliarOriginAccountVolume,
        Rule::UnfamiliarOriginsAggregate,
        Rule::VolumeAnomaly,
        Rule::NewOrigin,
        Rule::MaliciousOrigin,
        Rule::OriginSpray,
        Rule::SuspiciousOrigin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UnfamiliarOriginVolume => "unfamiliar_origin_volume",
            Rule::UnfamiliarOriginAccountVolume => "unfamiliar_origin_account_volume",
            Rule::UnfamiliarOriginsAggregate => "unfamiliar_origins_aggregate",
            Rule::VolumeAnomaly => "volume_anomaly",
            Rule::NewOrigin => "new_origin",
            Rule::MaliciousOrigin => "malicious_origin",
            Rule::OriginSpray => "origin_spray",
            Rule::SuspiciousOrigin => "suspicious_origin",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An origin as shown to a person: an address and the network it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRef {
    /// The address (for a prefix origin, the one that read the most).
    pub ip: String,
    /// The origin itself: `203.0.113.0/24`, `2001:db8:4:12::/64`, or `/32`, `/128` at ip
    /// granularity.
    pub prefix: String,
    /// In `origins` lists only: the bytes this origin read in the alert's window. Exact while
    /// the window held at most 8 origins; beyond that a Space-Saving estimate, over the true
    /// value by at most 1/8 of the window's bytes (and every origin above that share is
    /// listed). The list's bytes plus the alert's `other_bytes` are its `observed_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_bytes: Option<u64>,
    /// Who owns the address (`asn`, `as_name`, `country`, `service_tag`, `region`, `lists`),
    /// from `[enrich]`'s files; each field left out when unknown.
    #[serde(flatten)]
    pub info: crate::enrich::OriginInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: String,
    pub end: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Origins this key has used long enough to be familiar.
    pub known_origins: u64,
    /// Average bytes per active hour over the key's history.
    pub typical_hourly_bytes: u64,
    /// Typical daily peak of the key's sliding-window volume (0 without history).
    pub typical_peak_bytes: u64,
    /// Event time since the key was first seen, in days.
    pub days_of_history: f64,
    /// volume_anomaly only: one-sided p-value of the observed volume under the key's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// With `[enrich]`: the autonomous systems (`AS64500 Example Hosting`) and countries of
    /// the key's familiar origins, the most used first (at most 5 each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usual_asns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usual_countries: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceOut {
    pub request_count: u64,
    pub top_operations: Vec<NameCount>,
    pub top_collections: Vec<NameCount>,
    pub top_user_agents: Vec<NameCount>,
    pub activity_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_first_seen: Option<String>,
    /// `unfamiliar_origin_account_volume` only: each key that read from the origin, with the
    /// bytes it read (`count`), most first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<NameCount>>,
    /// `unfamiliar_origin_volume`, `unfamiliar_origins_aggregate`, `volume_anomaly`: the user
    /// agents of `top_user_agents` whose family (the product token, `python-requests`) the key
    /// had not used before the alert's reads (within `familiar_after`, like an origin). They
    /// raise the alert's confidence; no alert comes from them alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_user_agents: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub rule: Rule,
    pub severity: Severity,
    pub account: String,
    /// Where the account is in Azure: the fields `resource_id`, `subscription_id` and
    /// `resource_group`, left out when the logs never named it. The rules leave it `None`; the
    /// detector stamps every alert of an account with it.
    #[serde(flatten)]
    pub resource: Option<AzureResource>,
    pub credential: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origins: Option<Vec<OriginRef>>,
    /// With `origins`: the window's bytes not in the list (origins past the list or the
    /// sketch, reads without an address), so that the listed bytes plus these are exactly
    /// `observed_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_bytes: Option<u64>,
    pub trigger_event_time: String,
    pub window: Window,
    pub observed_bytes: u64,
    pub threshold_bytes: u64,
    /// 0 for the first alert of a condition; 1, 2, ... when the bytes reached a further power
    /// of `escalation_factor` times the threshold.
    pub escalation_level: u8,
    pub baseline: Baseline,
    pub evidence: EvidenceOut,
    pub summary: String,
}

/// A Cosmos DB account's place in Azure, from the `resourceId` of its log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureResource {
    /// The resource id,
    /// `/subscriptions/<id>/resourcegroups/<rg>/providers/microsoft.documentdb/databaseaccounts/<name>`
    /// (what `az` and the portal take); lowercased (Azure resource ids are case-insensitive; the legacy logs spell them in
    /// capitals, the resource-specific tables in lower case), without a trailing `/`.
    #[serde(rename = "resource_id")]
    pub id: String,
    pub subscription_id: String,
    pub resource_group: String,
}

impl AzureResource {
    /// `None` unless `s` is a full resource id
    /// (`/subscriptions/<id>/resourceGroups/<rg>/providers/<namespace>/<type>/<name>...`):
    /// the pre-2018 records' bare account name is not one.
    pub fn parse(s: &str) -> Option<AzureResource> {
        const PREFIX: &str = "/subscriptions/";
        let s = s.trim().trim_end_matches('/');
        // The detector asks again for every record of an account whose records carry only a
        // name: refuse those before allocating.
        if !s.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX)) {
            return None;
        }
        let id = s.to_ascii_lowercase();
        let mut parts = id.strip_prefix(PREFIX)?.split('/');
        let subscription_id = parts.next().filter(|p| !p.is_empty())?.to_string();
        if parts.next()? != "resourcegroups" {
            return None;
        }
        let resource_group = parts.next().filter(|p| !p.is_empty())?.to_string();
        if parts.next()? != "providers" || parts.clone().count() < 3 || parts.any(str::is_empty) {
            return None;
        }
        Some(AzureResource { id, subscription_id, resource_group })
    }
}

/// The stable alert id: a hash of what identifies the condition, so the same input always
/// yields the same ids and a sink can drop one it already delivered.
pub fn alert_id(
    rule: Rule,
    account: &str,
    credential: &str,
    origin: &str,
    since: Nanos,
    level: u8,
    epoch: u32,
) -> String {
    let mut h = Sha256::new();
    for part in [rule.as_str(), account, credential, origin] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    h.update(since.to_be_bytes());
    h.update([level]);
    h.update(epoch.to_be_bytes());
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_are_parsed_whatever_their_case() {
        let legacy = "/SUBSCRIPTIONS/6F6A1D3C-0000-4E7B-9A4B-2C1D7E1B5A10/RESOURCEGROUPS/RG-Prod/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO";
        let r = AzureResource::parse(legacy).expect("a full resource id");
        assert_eq!(r.subscription_id, "6f6a1d3c-0000-4e7b-9a4b-2c1d7e1b5a10");
        assert_eq!(r.resource_group, "rg-prod");
        assert_eq!(r.id, legacy.to_ascii_lowercase());
        assert_eq!(AzureResource::parse(&format!("{}/", legacy.to_ascii_lowercase())), Some(r));
        for not_one in [
            "",
            "adatum",
            "/X/DATABASEACCOUNTS/N",
            "/subscriptions//resourcegroups/rg/providers/microsoft.documentdb/databaseaccounts/a",
            "/subscriptions/s/resourcegroups/rg",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.documentdb",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.documentdb//a",
        ] {
            assert_eq!(AzureResource::parse(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = alert_id(Rule::UnfamiliarOriginVolume, "contoso", "key:primarymasterkey", "203.0.113.0/24", 5, 0, 0);
        assert_eq!(
            a,
            alert_id(Rule::UnfamiliarOriginVolume, "contoso", "key:primarymasterkey", "203.0.113.0/24", 5, 0, 0)
        );
        assert_eq!(a.len(), 32);
        assert_ne!(
            a,
            alert_id(Rule::UnfamiliarOriginVolume, "contoso", "key:primarymasterkey", "203.0.113.0/24", 5, 1, 0)
        );
        assert_ne!(
            a,
            alert_id(Rule::UnfamiliarOriginVolume, "contoso", "key:primarymasterkey", "203.0.113.0/24", 5, 0, 1)
        );
        assert_ne!(a, alert_id(Rule::VolumeAnomaly, "contoso", "key:primarymasterkey", "203.0.113.0/24", 5, 0, 0));
    }

    #[test]
    fn severities_order() {
        assert!(Severity::Critical > Severity::High && Severity::Medium > Severity::Info);
        assert_eq!(
            serde_json::to_string(&Rule::UnfamiliarOriginsAggregate).unwrap(),
            "\"unfamiliar_origins_aggregate\""
        );
    }
}
