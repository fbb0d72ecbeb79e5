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
    }
    l
}

/// The annotations an alert is posted with: `summary`, `description`, `alert_id`, and
/// `resource_id` when the logs named it.
pub fn annotations(alert: &Alert) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".to_owned(), alert.summary.clone());
    a.insert("description".to_owned(), description(alert));
    a.insert("alert_id".to_owned(), alert.id.clone());
    if let Some(r) = &alert.resource {
        a.insert("resource_id".to_owned(), r.id.clone());
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
    fn an_alert_about_several_origins_has_no_origin_label() {
        let mut a = theft();
        a.origin = None;
        a.rule = crate::alert::Rule::UnfamiliarOriginsAggregate;
        let l = labels(&a);
        assert!(!l.contains_key("origin"));
        assert_eq!(l["alertname"], "unfamiliar_origins_aggregate");
    }
}
