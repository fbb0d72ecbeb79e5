//! An alert as an Elastic Common Schema 9.4 document: `event.kind: alert`, the rule under
//! `rule.*`, the origin as `source.*`, the key as `user.name`, the account's subscription
//! under `cloud.*`, `event.severity` (1 informational .. 5 critical) and `event.risk_score`
//! (Elastic Security's 21/47/73/99 for low..critical, 10 more, up to 100, when user agents the
//! key never used raise the confidence: `exfilwatch.evidence.new_user_agents`, and the first of
//! them as `user_agent.original`); what ECS has no field for under
//! `exfilwatch.*` (a custom field set, as ECS recommends). Every field name outside
//! `exfilwatch.*` is checked against ECS's field list by `tests/formats.rs`.

use super::{confidence_score, epoch_ms, rule_description, severity_id};
use crate::alert::Alert;
use serde_json::{json, Value};

/// The ECS version these documents follow.
pub const VERSION: &str = "9.4.0";

/// Elastic Security's risk score of a severity.
fn risk_score(severity_id: u8) -> u8 {
    [0, 0, 21, 47, 73, 99][usize::from(severity_id.min(5))]
}

pub(super) fn document(a: &Alert) -> Value {
    let sev = severity_id(a.severity);
    let origins: Vec<&crate::alert::OriginRef> = a.origin.iter().chain(a.origins.iter().flatten()).collect();
    let ips: Vec<&str> = origins.iter().map(|o| o.ip.as_str()).collect();
    let mut d = json!({
        "@timestamp": a.trigger_event_time,
        "ecs": { "version": VERSION },
        "message": a.summary,
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection", "database"],
            "type": ["info"],
            "id": a.id,
            "severity": sev,
            "risk_score": (risk_score(sev) + if a.evidence.new_user_agents.is_empty() { 0 } else { 10 }).min(100),
            "start": a.window.start,
            "end": a.window.end,
            "duration": (epoch_ms(&a.window.end) - epoch_ms(&a.window.start)).max(0) * 1_000_000,
            "provider": "exfilwatch",
            "dataset": "exfilwatch.alert",
            "reason": a.summary,
        },
        "rule": {
            "id": a.rule.as_str(),
            "name": a.rule.as_str(),
            "description": rule_description(a.rule),
            "category": "Data Exfiltration",
            "ruleset": "exfilwatch",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "observer": { "vendor": "exfilwatch", "product": "exfilwatch", "version": env!("CARGO_PKG_VERSION") },
        "user": { "name": a.credential },
        "destination": { "bytes": a.observed_bytes },
        "cloud": { "provider": "azure", "service": { "name": "Azure Cosmos DB" } },
        "related": { "user": [a.credential] },
    });
    if let Some(first) = origins.first() {
        d["source"] = json!({ "ip": first.ip, "address": first.ip });
        if let Some(asn) = first.info.asn {
            d["source"]["as"] = json!({ "number": asn });
            if let Some(name) = &first.info.as_name {
                d["source"]["as"]["organization"] = json!({ "name": name });
            }
        }
        if let Some(c) = &first.info.country {
            d["source"]["geo"] = json!({ "country_iso_code": c });
        }
        if let Some(region) = first.info.region.as_ref().filter(|_| first.info.service_tag.is_some()) {
            d["cloud"]["region"] = json!(region);
        }
        d["related"]["ip"] = json!(ips);
    }
    if let Some(res) = &a.resource {
        d["cloud"]["account"] = json!({ "id": res.subscription_id });
    }
    // The user agent most telling: the first new to the key, else the most used.
    let ua = a.evidence.new_user_agents.first().or(a.evidence.top_user_agents.first().map(|n| &n.name));
    if let Some(ua) = ua {
        d["user_agent"] = json!({ "original": ua });
    }
    let native = serde_json::to_value(a).unwrap_or(Value::Null);
    let mut own = serde_json::Map::new();
    for k in [
        "account",
        "resource_id",
        "resource_group",
        "origin",
        "origins",
        "other_bytes",
        "threshold_bytes",
        "escalation_level",
        "baseline",
        "evidence",
        "severity",
    ] {
        if let Some(v) = native.get(k) {
            own.insert(k.to_string(), v.clone());
        }
    }
    // ECS has no confidence of its own: the OCSF score (0-100), the same in both forms.
    own.insert("confidence_score".to_string(), json!(confidence_score(a)));
    d["exfilwatch"] = Value::Object(own);
    d
}
