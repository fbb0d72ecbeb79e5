//! What Alertmanager receives: the body of `POST /api/v2/alerts` ([`PostableAlert`]) and the
//! labels, annotations and description an alert is posted with.

use crate::alert::Alert;
use crate::time::Nanos;
use crate::units::{human_bytes, human_span};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall time as `Nanos` since the Unix epoch (0 before it), to compare with event times.
pub(super) fn nanos_since_epoch(t: SystemTime) -> Nanos {
    t.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The body of `POST /api/v2/alerts` is a list of these.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PostableAlert<'a> {
    pub(super) labels: &'a BTreeMap<String, String>,
    pub(super) annotations: &'a BTreeMap<String, String>,
    pub(super) starts_at: String,
    pub(super) ends_at: String,
}

/// The labels an alert is posted with (its identity in Alertmanager). The subscription and
/// resource group, when the logs named them, are labels so that a route can send each
/// subscription's alerts to its owners.
///
/// With `[enrich]`, an alert about one origin also gets `origin_asn` (`AS64500`) and
/// `origin_country` (`NL`): at most one value per origin, so they add no series and no
/// alert identity beyond the `origin` label that is already there, and a route or an
/// inhibition can match on them (a team's own cloud AS, a country) without parsing text. The
/// AS name, service tag and region are annotations only: free text, or (for tags) thousands of
/// values a route has no use for. An alert about several origins gets none of them (it has no
/// `origin` label either: one label value cannot stand for a list).
pub fn labels(alert: &Alert) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".to_owned(), alert.rule.as_str().to_owned());
    l.insert("severity".to_owned(), alert.severity.as_str().to_owned());
    l.insert("account".to_owned(), alert.account.clone());
    if let Some(r) = &alert.resource {
        l.insert("subscription_id".to_owned(), r.subscription_id.clone());
        l.insert("resource_group".to_owned(), r.resource_group.clone());
    }
    l.insert("credential".to_owned(), alert.credential.clone());
    if let Some(o) = &alert.origin {
        l.insert("origin".to_owned(), o.prefix.clone());
        if let Some(asn) = o.info.asn {
            l.insert("origin_asn".to_owned(), format!("AS{asn}"));
        }
        if let Some(c) = &o.info.country {
            l.insert("origin_country".to_owned(), c.clone());
        }
    }
    l
}

/// The annotations an alert is posted with: `summary`, `description`, `alert_id`, and
/// `resource_id` when the logs named it. With `[enrich]`: `origin_owner` (`AS64500 Example
/// Hosting, NL`), `origin_service_tag` and `origin_region` (Azure's tag of the address),
/// `origin_lists` (threat lists naming it) for an alert about one origin; `origin_owners`
/// (`203.0.113.77: AS64500 Example Hosting, NL; ...`) for one about several. The user agents
/// the key never used before, when the evidence names some: `new_user_agents`.
pub fn annotations(alert: &Alert) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".to_owned(), alert.summary.clone());
    a.insert("description".to_owned(), description(alert));
    a.insert("alert_id".to_owned(), alert.id.clone());
    if let Some(r) = &alert.resource {
        a.insert("resource_id".to_owned(), r.id.clone());
    }
    if let Some(o) = &alert.origin {
        if let Some(owner) = o.info.owner() {
            a.insert("origin_owner".to_owned(), owner);
        }
        if let Some(tag) = &o.info.service_tag {
            a.insert("origin_service_tag".to_owned(), tag.clone());
        }
        if let Some(region) = &o.info.region {
            a.insert("origin_region".to_owned(), region.clone());
        }
        if !o.info.lists.is_empty() {
            a.insert("origin_lists".to_owned(), o.info.lists.join(", "));
        }
    }
    if let Some(os) = &alert.origins {
        let owners: Vec<String> =
            os.iter().filter_map(|o| o.info.owner().map(|owner| format!("{}: {owner}", o.ip))).collect();
        if !owners.is_empty() {
            a.insert("origin_owners".to_owned(), owners.join("; "));
        }
    }
    if !alert.evidence.new_user_agents.is_empty() {
        a.insert("new_user_agents".to_owned(), alert.evidence.new_user_agents.join(", "));
    }
    a
}

/// A few lines for a person: what was read, from where, against which baseline, and the
/// evidence to look up in the logs.
pub fn description(a: &Alert) -> String {
    let mut d = String::new();
    let _ = write!(d, "{} ({}) on account {}, credential {}", a.rule, a.severity, a.account, a.credential);
    if a.escalation_level > 0 {
        let _ = write!(d, ", escalation level {}", a.escalation_level);
    }
    let _ = writeln!(d, ".");
    if let Some(r) = &a.resource {
        let _ = writeln!(d, "Resource: {}.", r.id);
    }
    let _ = write!(
        d,
        "Read {} (threshold {}) between {} and {}",
        human_bytes(a.observed_bytes),
        human_bytes(a.threshold_bytes),
        a.window.start,
        a.window.end
    );
    if let Some(o) = &a.origin {
        let _ = write!(d, " from {} (origin {})", o.ip, o.prefix);
        if let Some(first) = &a.evidence.origin_first_seen {
            let _ = write!(d, ", first seen {first}");
        }
    }
    let _ = writeln!(d, ".");
    if let Some(os) = a.origins.as_ref().filter(|os| !os.is_empty()) {
        let list: Vec<String> = os
            .iter()
            .map(|o| match o.observed_bytes {
                Some(b) => format!("{} ({}) {}", o.ip, o.prefix, human_bytes(b)),
                None => format!("{} ({})", o.ip, o.prefix),
            })
            .collect();
        let _ = writeln!(d, "Origins: {}.", list.join(", "));
    }
    let b = &a.baseline;
    let _ = write!(
        d,
        "Baseline: {} familiar origin(s), {}/h typical, daily peak {}, {} of history",
        b.known_origins,
        human_bytes(b.typical_hourly_bytes),
        human_bytes(b.typical_peak_bytes),
        human_span((b.days_of_history * 86_400e9) as i64)
    );
    if let Some(p) = b.p_value {
        let _ = write!(d, ", p-value {p:.2e}");
    }
    let _ = writeln!(d, ".");
    let e = &a.evidence;
    let names = |v: &[crate::alert::NameCount]| {
        v.iter().map(|n| format!("{} {}", n.name, n.count)).collect::<Vec<_>>().join(", ")
    };
    let _ = write!(d, "Evidence: {} requests", e.request_count);
    for (what, list) in
        [("operations", &e.top_operations), ("collections", &e.top_collections), ("user agents", &e.top_user_agents)]
    {
        if !list.is_empty() {
            let _ = write!(d, "; {what}: {}", names(list));
        }
    }
    if !e.activity_ids.is_empty() {
        let _ = write!(d, "; activity ids: {}", e.activity_ids.join(", "));
    }
    d.push('.');
    d
}

#[cfg(test)]
mod tests {
    use super::super::tests::theft;
    use super::*;

    #[test]
    fn labels_and_annotations_of_the_theft() {
        let a = theft();
        let l = labels(&a);
        let want: BTreeMap<String, String> = [
            ("alertname", "unfamiliar_origin_volume"),
            ("severity", "critical"),
            ("account", "contoso"),
            ("subscription_id", "7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41"),
            ("resource_group", "rg-prod"),
            ("credential", "key:primarymasterkey"),
            ("origin", "203.0.113.0/24"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(l, want);
        let n = annotations(&a);
        assert_eq!(n.keys().collect::<Vec<_>>(), ["alert_id", "description", "resource_id", "summary"]);
        assert_eq!(n["resource_id"], a.resource.clone().unwrap().id);
        assert_eq!(n["alert_id"], "5bd47fbba194f155745192dff01d01c9");
        assert_eq!(n["summary"], a.summary);
        let d = &n["description"];
        assert!(d.contains("Read 1.0 GiB (threshold 1.0 GiB) between 2021-08-17T02:13:18.5778706Z and"), "{d}");
        assert!(d.contains("from 203.0.113.77 (origin 203.0.113.0/24), first seen 2021-08-17T02:13:18"), "{d}");
        assert!(d.contains("python-requests/2.25.1 293"), "{d}");
        assert!(d.contains("8 d 2 h of history"), "{d}");
        assert!(
            d.contains("\nResource: /subscriptions/7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41/resourcegroups/rg-prod/"),
            "{d}"
        );
    }

    #[test]
    fn the_owner_of_the_origin_is_in_labels_and_annotations() {
        let mut a = theft();
        let info = crate::enrich::OriginInfo {
            asn: Some(64500),
            as_name: Some("Example Hosting".into()),
            country: Some("NL".into()),
            service_tag: Some("AzureCloud.westeurope".into()),
            region: Some("westeurope".into()),
            lists: vec!["tor".into()],
        };
        a.origin.as_mut().unwrap().info = info.clone();
        a.evidence.new_user_agents = vec!["python-requests/2.25.1".into()];
        let l = labels(&a);
        assert_eq!(l["origin_asn"], "AS64500");
        assert_eq!(l["origin_country"], "NL");
        assert!(!l.contains_key("origin_service_tag"), "free text and many values: an annotation only");
        let n = annotations(&a);
        assert_eq!(n["origin_owner"], "AS64500 Example Hosting, NL, Azure AzureCloud.westeurope");
        assert_eq!(n["origin_service_tag"], "AzureCloud.westeurope");
        assert_eq!(n["origin_region"], "westeurope");
        assert_eq!(n["origin_lists"], "tor");
        assert_eq!(n["new_user_agents"], "python-requests/2.25.1");

        // Several origins: the owners in one annotation, no origin labels.
        let mut v = theft();
        let mut o = v.origin.take().unwrap();
        o.info = info;
        let unknown = crate::alert::OriginRef { ip: "10.20.30.11".into(), ..o.clone() };
        let unknown = crate::alert::OriginRef { info: Default::default(), ..unknown };
        v.origins = Some(vec![o, unknown]);
        let l = labels(&v);
        assert!(!l.contains_key("origin_asn") && !l.contains_key("origin_country"));
        let n = annotations(&v);
        assert_eq!(n["origin_owners"], "203.0.113.77: AS64500 Example Hosting, NL, Azure AzureCloud.westeurope");
        assert!(!n.contains_key("origin_owner") && !n.contains_key("new_user_agents"));
    }

    #[test]
    fn an_alert_about_several_origins_has_no_origin_label() {
        let mut a = theft();
        a.origin = None;
        a.rule = crate::alert::Rule::UnfamiliarOriginsAggregate;
        let l = labels(&a);
        assert!(!l.contains_key("origin"));
        assert_eq!(l["alertname"], "unfamiliar_origins_aggregate");
    }
}
