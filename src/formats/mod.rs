//! Alert output formats: the native JSON (`crate::alert::Alert`, the product's interface),
//! OCSF 1.8.0 Detection Findings (`ocsf.rs`) and Elastic Common Schema 9.4 documents
//! (`ecs.rs`), for SOC pipelines that expect one of those. Pure mappings: one alert in, one
//! JSON document out, the same in replay and in every sink of `run`.

mod ecs;
mod ocsf;

use crate::alert::{Alert, Rule, Severity};
use serde::{Deserialize, Serialize};

/// How a sink writes each alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// exfilwatch's own JSON (README "Alert format").
    #[default]
    Native,
    /// An OCSF 1.8.0 Detection Finding (class_uid 2004).
    Ocsf,
    /// An Elastic Common Schema 9.4 document (`event.kind: alert`).
    Ecs,
}

impl AlertFormat {
    pub const ALL: [AlertFormat; 3] = [AlertFormat::Native, AlertFormat::Ocsf, AlertFormat::Ecs];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertFormat::Native => "native",
            AlertFormat::Ocsf => "ocsf",
            AlertFormat::Ecs => "ecs",
        }
    }

    /// The format named `s` (as in the configuration), if any.
    pub fn parse(s: &str) -> Option<AlertFormat> {
        AlertFormat::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The alert as this format's JSON document.
    pub fn value(self, alert: &Alert) -> serde_json::Value {
        match self {
            // An alert is plain data (strings, numbers, lists): it always serializes.
            AlertFormat::Native => serde_json::to_value(alert).unwrap_or(serde_json::Value::Null),
            AlertFormat::Ocsf => ocsf::finding(alert),
            AlertFormat::Ecs => ecs::document(alert),
        }
    }

    /// The alert as one line of JSON (no newline).
    pub fn to_vec(self, alert: &Alert) -> Vec<u8> {
        match self {
            AlertFormat::Native => serde_json::to_vec(alert).unwrap_or_default(),
            _ => serde_json::to_vec(&self.value(alert)).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for AlertFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule looks for, in one sentence (OCSF `analytic.desc`, ECS `rule.description`).
fn rule_description(rule: Rule) -> &'static str {
    match rule {
        Rule::UnfamiliarOriginVolume => {
            "A key read a large volume from an origin (address or network) it had never used."
        }
        Rule::UnfamiliarOriginAccountVolume => {
            "Several keys of an account read, together, a large volume from one origin no key of the account knew."
        }
        Rule::UnfamiliarOriginsAggregate => {
            "A key read a large volume from many origins it had never used, none large on its own."
        }
        Rule::VolumeAnomaly => "A key read far more within an hour than its own history makes plausible.",
        Rule::NewOrigin => "A key read from an origin it had never used.",
        Rule::MaliciousOrigin => "A key read from an origin an analyst judged malicious.",
        Rule::OriginSpray => "A key was used from more new origins within an hour than the configured limit.",
        Rule::SuspiciousOrigin => "A key read from an address on a configured threat list.",
    }
}

/// How sure an alert is that data left to someone else: a volume from an origin the key
/// never used is the theft's signature; a statistical excess or a new origin alone is weaker;
/// a user agent the key never used on the reads (`evidence.new_user_agents`) is one step more.
/// OCSF `confidence_id` (1 low, 2 medium, 3 high).
fn confidence_id(a: &Alert) -> u8 {
    let step = u8::from(!a.evidence.new_user_agents.is_empty());
    (rule_confidence(a.rule) + step).min(3)
}

/// OCSF `confidence_score` (0-100): 30, 60, 90 for a rule's low, medium and high confidence,
/// 10 more with new user agents, so the step shows also where `confidence_id` is at its top.
fn confidence_score(a: &Alert) -> u8 {
    let step = if a.evidence.new_user_agents.is_empty() { 0 } else { 10 };
    (30 * rule_confidence(a.rule) + step).min(100)
}

fn rule_confidence(rule: Rule) -> u8 {
    match rule {
        Rule::UnfamiliarOriginVolume
        | Rule::UnfamiliarOriginAccountVolume
        | Rule::UnfamiliarOriginsAggregate
        | Rule::MaliciousOrigin
        | Rule::SuspiciousOrigin => 3,
        Rule::VolumeAnomaly | Rule::OriginSpray => 2,
        Rule::NewOrigin => 1,
    }
}

/// OCSF `severity_id`: 1 informational .. 5 critical.
fn severity_id(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// Milliseconds since the epoch of an alert's RFC 3339 time stamp (0 if it is not one: the
/// detector always writes valid ones).
fn epoch_ms(t: &str) -> i64 {
    crate::time::parse_timestamp(t).map_or(0, |ns| ns.div_euclid(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> Vec<Alert> {
        let text = include_str!("../../tests/golden/sample-logs.alerts.jsonl");
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn native_is_the_alert_itself_and_names_round_trip() {
        for a in alerts() {
            let back: Alert = serde_json::from_slice(&AlertFormat::Native.to_vec(&a)).unwrap();
            assert_eq!(back, a);
        }
        for f in AlertFormat::ALL {
            assert_eq!(AlertFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(AlertFormat::parse("json"), None);
    }

    #[test]
    fn a_user_agent_new_to_the_key_raises_confidence_one_step() {
        for mut a in alerts() {
            assert_eq!(a.evidence.new_user_agents, ["python-requests/2.25.1"], "the sample's theft");
            let (with_id, with_score) = (confidence_id(&a), confidence_score(&a));
            let risk_with = AlertFormat::Ecs.value(&a)["event"]["risk_score"].as_u64().unwrap();
            a.evidence.new_user_agents.clear();
            let (without_id, without_score) = (confidence_id(&a), confidence_score(&a));
            let risk_without = AlertFormat::Ecs.value(&a)["event"]["risk_score"].as_u64().unwrap();
            match a.rule {
                Rule::VolumeAnomaly => assert_eq!((without_id, with_id), (2, 3)),
                _ => assert_eq!((without_id, with_id), (3, 3), "high is the top"),
            }
            assert_eq!(with_score, without_score + 10);
            assert_eq!(risk_with, (risk_without + 10).min(100));
            assert_eq!(AlertFormat::Ocsf.value(&a)["confidence_score"], without_score);
        }
    }

    #[test]
    fn every_format_carries_the_alert_id_severity_and_time() {
        for a in alerts() {
            let o = AlertFormat::Ocsf.value(&a);
            assert_eq!(o["finding_info"]["uid"], a.id.as_str());
            assert_eq!(o["severity"], a.severity.as_str().to_string()[..1].to_uppercase() + &a.severity.as_str()[1..]);
            assert_eq!(o["time"], epoch_ms(&a.trigger_event_time));
            let e = AlertFormat::Ecs.value(&a);
            assert_eq!(e["event"]["id"], a.id.as_str());
            assert_eq!(e["@timestamp"], a.trigger_event_time.as_str());
            assert_eq!(e["rule"]["name"], a.rule.as_str());
        }
    }
}
