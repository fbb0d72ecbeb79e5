//! The shipped sample logs against their golden alerts: the theft, and nothing else at medium
//! or above. Regenerate the golden file only after checking the difference by eye:
//! `cargo run --release --bin exfilwatch -- replay -q sample-logs > tests/golden/sample-logs.alerts.jsonl`.

use std::path::Path;
use std::process::Command;

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/sample-logs.alerts.jsonl");

fn replay(dir: &Path) -> (Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch")).arg("replay").arg(dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn sample_logs_give_exactly_the_golden_alerts() {
    let (alerts, summary) = replay(Path::new(SAMPLE));
    let golden = std::fs::read(GOLDEN).unwrap();
    assert_eq!(String::from_utf8_lossy(&alerts), String::from_utf8_lossy(&golden));
    // The bad lines were counted by reason, the other categories skipped.
    assert!(summary.contains("malformed: invalid_json 2, missing_time 1, bad_ip 1, bad_length 2"), "{summary}");
    assert!(
        summary.contains("QueryRuntimeStatistics 3, PartitionKeyRUConsumption 2, ControlPlaneRequests 2"),
        "{summary}"
    );
}

#[test]
fn only_the_theft_alerts_at_medium_or_above() {
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    let alerts: Vec<serde_json::Value> = golden.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!alerts.is_empty());
    let origin_alerts: Vec<_> = alerts.iter().filter(|a| a["rule"] == "unfamiliar_origin_volume").collect();
    assert_eq!(origin_alerts.len(), 1);
    let theft = origin_alerts[0];
    assert_eq!(theft["severity"], "critical");
    assert_eq!(theft["credential"], "key:primarymasterkey");
    assert_eq!(theft["origin"]["ip"], "203.0.113.77");
    assert_eq!(theft["evidence"]["top_user_agents"][0]["name"], "python-requests/2.25.1");
    // The key always read with its SDK: the thief's tool is new to it, on both theft alerts.
    let new_agents = serde_json::json!(["python-requests/2.25.1"]);
    assert_eq!(theft["evidence"]["new_user_agents"], new_agents);
    let volume = alerts.iter().find(|a| a["rule"] == "volume_anomaly").expect("the theft's volume_anomaly");
    assert_eq!(volume["evidence"]["new_user_agents"], new_agents, "the SDK (9 reads) is not new");
    for a in &alerts {
        let sev = a["severity"].as_str().unwrap();
        if ["medium", "high", "critical"].contains(&sev) {
            assert_eq!(
                (a["account"].as_str(), a["credential"].as_str()),
                (Some("contoso"), Some("key:primarymasterkey"))
            );
            assert!(a["trigger_event_time"].as_str().unwrap().starts_with("2021-08-17T02:"), "{a}");
        }
    }
}

#[test]
fn a_second_replay_is_byte_identical() {
    let (a, _) = replay(Path::new(SAMPLE));
    let (b, _) = replay(Path::new(SAMPLE));
    assert_eq!(a, b);
}

#[test]
fn regenerated_plain_sample_logs_give_the_same_alerts() {
    // The generator is deterministic, and gzip is transparent to replay.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gen-logs")).args(["sample", "--out"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (alerts, _) = replay(dir.path());
    assert_eq!(alerts, std::fs::read(GOLDEN).unwrap());
}

#[test]
fn files_given_one_by_one_merge_like_a_directory() {
    // Each account's files as separate inputs, in reverse order: merged by event time, the
    // same alerts as the directory walk.
    let mut inputs: Vec<String> =
        ["adatum", "northwind", "fabrikam", "contoso"].iter().map(|d| format!("{SAMPLE}/{d}")).collect();
    inputs.reverse();
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch")).arg("replay").args(&inputs).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, std::fs::read(GOLDEN).unwrap());
}

#[test]
fn the_readme_alert_example_is_the_real_alert() {
    // README.md shows the theft's alert; keep it true.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```json\n").expect("a json block in README.md") + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let shown: serde_json::Value = serde_json::from_str(&readme[start..end]).unwrap();
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    let real: serde_json::Value = golden
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a["rule"] == "unfamiliar_origin_volume")
        .unwrap();
    assert_eq!(shown, real);
}
