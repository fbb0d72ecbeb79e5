//! An alert as an OCSF 1.8.0 Detection Finding (class_uid 2004, category Findings, activity
//! Create): `finding_info` (uid = the alert id, the rule as a Statistical analytic),
//! `evidences` (per origin: the source endpoint, the key as the actor's user, the account as a
//! resource), `resources` (the Cosmos DB account), `anomaly_analyses` (the observed bytes
//! against the key's baseline), `observables`, the cloud profile (Azure, the subscription),
//! and the rest of the native alert under `unmapped.exfilwatch`. Checked against the
//! published schema by `tests/formats.rs`.

use super::{confidence_id, confidence_score, epoch_ms, rule_description, severity_id};
use crate::alert::{Alert, OriginRef};
use serde_json::{json, Value};

/// OCSF's schema version these documents follow.
pub const VERSION: &str = "1.8.0";

fn severity_caption(id: u8) -> &'static str {
    ["Unknown", "Informational", "Low", "Medium", "High", "Critical"][usize::from(id.min(5))]
}

fn confidence_caption(id: u8) -> &'static str {
    ["Unknown", "Low", "Medium", "High"][usize::from(id.min(3))]
}

/// The origins an alert names: its origin, or the listed ones.
fn origins(a: &Alert) -> Vec<&OriginRef> {
    a.origin.iter().chain(a.origins.iter().flatten()).collect()
}

/// The Cosmos DB account as an OCSF resource.
fn account_resource(a: &Alert) -> Value {
    let mut r = json!({
        "name": a.account,
        "type": "Microsoft.DocumentDB/databaseAccounts",
        "cloud_partition": "AzureCloud",
    });
    match &a.resource {
        Some(res) => {
            r["uid"] = json!(res.id);
            r["group"] = json!({ "name": res.resource_group });
        }
        None => r["uid"] = json!(a.account),
    }
    r
}

/// The key (`key:primarymasterkey`, `aad:<object id>`, ...) as an OCSF user.
fn key_user(a: &Alert) -> Value {
    json!({ "name": a.credential, "uid": format!("{}/{}", a.account, a.credential), "type_id": 99, "type": "Credential" })
}

pub(super) fn finding(a: &Alert) -> Value {
    let (time, start, end) = (epoch_ms(&a.trigger_event_time), epoch_ms(&a.window.start), epoch_ms(&a.window.end));
    let (sev, conf) = (severity_id(a.severity), confidence_id(a));
    let resource = account_resource(a);
    let actor = json!({ "user": key_user(a) });
    let named = origins(a);
    let evidences: Vec<Value> = if named.is_empty() {
        vec![json!({ "actor": actor, "resources": [resource] })]
    } else {
        named
            .iter()
            .map(|o| {
                let mut endpoint = json!({ "ip": o.ip });
                if let Some(asn) = o.info.asn {
                    endpoint["autonomous_system"] = json!({ "number": asn });
                    if let Some(name) = &o.info.as_name {
                        endpoint["autonomous_system"]["name"] = json!(name);
                    }
                }
                if let Some(c) = &o.info.country {
                    endpoint["location"] = json!({ "country": c });
                }
                if let Some(tag) = &o.info.service_tag {
                    endpoint["svc_name"] = json!(tag);
                    if let Some(region) = &o.info.region {
                        endpoint["zone"] = json!(region);
                    }
                }
                let mut e = json!({
                    "src_endpoint": endpoint,
                    "actor": actor,
                    "resources": [resource],
                });
                if let Some(bytes) = o.observed_bytes {
                    e["data"] = json!({ "observed_bytes": bytes });
                }
                e
            })
            .collect()
    };
    let mut observables = vec![
        json!({ "name": "actor.user.name", "type_id": 4, "type": "User Name", "value": a.credential }),
        json!({ "name": "resources.uid", "type_id": 10, "type": "Resource UID", "value": resource["uid"] }),
    ];
    for o in &named {
        observables
            .push(json!({ "name": "evidences.src_endpoint.ip", "type_id": 2, "type": "IP Address", "value": o.ip }));
    }
    let b = &a.baseline;
    let mut baselines = vec![
        json!({
            "observation_parameter": "bytes read per active hour",
            "observation_type": "mean over the key's history",
            "observations": [{ "value": b.typical_hourly_bytes.to_string() }],
            "observed_pattern": format!("{:.1} days of history", b.days_of_history),
        }),
        json!({
            "observation_parameter": "daily peak of bytes read within the window",
            "observation_type": "typical",
            "observations": [{ "value": b.typical_peak_bytes.to_string() }],
        }),
        json!({
            "observation_parameter": "familiar origins",
            "observation_type": "count",
            "observations": [{ "value": b.known_origins.to_string() }],
        }),
    ];
    if let Some(p) = b.p_value {
        baselines.push(json!({
            "observation_parameter": "p-value of the observed bytes under the key's history",
            "observations": [{ "value": format!("{p:e}") }],
        }));
    }
    let analysis = json!({
        "analysis_targets": [{ "name": a.credential, "type": "Credential" }, { "name": a.account, "type": "Cosmos DB account" }],
        "anomalies": [{
            "observation_parameter": "bytes read",
            "observation_type": "sum over the alert's window",
            "observations": [{ "value": a.observed_bytes.to_string(), "count": a.evidence.request_count }],
            "observed_pattern": format!("{} bytes against a threshold of {}", a.observed_bytes, a.threshold_bytes),
        }],
        "baselines": baselines,
    });
    let mut cloud = json!({ "provider": "Azure" });
    if let Some(res) = &a.resource {
        cloud["account"] = json!({ "uid": res.subscription_id, "type_id": 99, "type": "Azure subscription" });
    }
    let native = serde_json::to_value(a).unwrap_or(Value::Null);
    let mut unmapped = serde_json::Map::new();
    for k in ["rule", "observed_bytes", "threshold_bytes", "escalation_level", "other_bytes", "baseline", "evidence"] {
        if let Some(v) = native.get(k) {
            unmapped.insert(k.to_string(), v.clone());
        }
    }
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": sev,
        "severity": severity_caption(sev),
        "confidence_id": conf,
        "confidence": confidence_caption(conf),
        "confidence_score": confidence_score(a),
        "status_id": 1,
        "status": "New",
        "is_alert": true,
        "time": time,
        "start_time": start,
        "end_time": end,
        "count": a.evidence.request_count,
        "message": a.summary,
        "metadata": {
            "version": VERSION,
            "uid": a.id,
            "log_name": "exfilwatch alerts",
            "original_time": a.trigger_event_time,
            "profiles": ["cloud"],
            "product": {
                "name": "exfilwatch",
                "vendor_name": "exfilwatch",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "cloud": cloud,
        "finding_info": {
            "uid": a.id,
            "title": format!("{} on {} by {}", a.rule.as_str(), a.account, a.credential),
            "desc": a.summary,
            "first_seen_time": start,
            "last_seen_time": end,
            "data_sources": ["Azure Cosmos DB diagnostic logs"],
            "types": ["Data Exfiltration"],
            "analytic": {
                "type_id": 3,
                "type": "Statistical",
                "name": a.rule.as_str(),
                "uid": a.rule.as_str(),
                "desc": rule_description(a.rule),
            },
        },
        "evidences": evidences,
        "resources": [resource],
        "anomaly_analyses": [analysis],
        "observables": observables,
        "unmapped": { "exfilwatch": unmapped },
    })
}
