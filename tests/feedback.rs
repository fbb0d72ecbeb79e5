//! `exfilwatch feedback` and `replay --verdicts` end to end, on the shipped sample logs: a
//! benign verdict on an alert removes it from the next replay; a malicious one raises
//! `malicious_origin` (critical); malformed verdict lines are counted and set aside.

use std::path::Path;
use std::process::Command;

fn exfilwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
}

fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-logs")
}

fn replay(args: &[&str], out: &Path) -> (Vec<serde_json::Value>, String) {
    let o = exfilwatch().arg("replay").arg(samples()).args(args).arg("-o").arg(out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(out).unwrap();
    (text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(), stderr)
}

fn feedback(id: &str, kind: &str, alerts: &Path, verdicts: &Path) -> std::process::Output {
    exfilwatch()
        .args(["feedback", id, kind, "--note", "ticket 7", "--by", "ana", "--alerts"])
        .arg(alerts)
        .arg("--verdicts")
        .arg(verdicts)
        .output()
        .unwrap()
}

/// The sample logs' first alert about one origin.
fn origin_alert(alerts: &[serde_json::Value]) -> serde_json::Value {
    alerts.iter().find(|a| a["rule"] == "unfamiliar_origin_volume").cloned().expect("an origin alert")
}

#[test]
fn benign_verdict_removes_the_alert_from_the_next_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = replay(&[], &dir.path().join("alerts.jsonl"));
    let a = origin_alert(&all);
    let id = a["id"].as_str().unwrap();
    let verdicts = dir.path().join("verdicts.jsonl");
    let o = feedback(id, "--benign", &dir.path().join("alerts.jsonl"), &verdicts);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&verdicts).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(line["alert_id"], id);
    assert_eq!(line["verdict"], "benign");
    assert_eq!(line["origin"], a["origin"]["prefix"]);
    assert_eq!(line["effective_time"], a["trigger_event_time"]);
    assert_eq!(line["recorded_by"], "ana");

    // A malformed line is counted and set aside, never fatal.
    let mut text = std::fs::read_to_string(&verdicts).unwrap();
    text.push_str("{not a verdict\n");
    std::fs::write(&verdicts, text).unwrap();
    let dead = dir.path().join("dead.jsonl");
    let args = ["--verdicts", verdicts.to_str().unwrap(), "--dead-letter", dead.to_str().unwrap()];
    let (after, stderr) = replay(&args, &dir.path().join("after.jsonl"));
    assert!(after.iter().all(|x| x["id"] != a["id"]), "still raised: {a}");
    let same_origin = |x: &&serde_json::Value| {
        x["account"] == a["account"] && x["credential"] == a["credential"] && x["origin"] == a["origin"]
    };
    assert_eq!(after.iter().filter(same_origin).count(), 0);
    // The other alerts are untouched.
    assert_eq!(after.len(), all.iter().filter(|x| !same_origin(x)).count());
    assert!(stderr.contains("verdicts: 1 applied, 1 malformed"), "{stderr}");
    assert!(stderr.contains("verdict_benign 1"), "{stderr}");
    assert!(std::fs::read_to_string(&dead).unwrap().contains("malformed_verdict"));

    // An unknown id is a clear error.
    let o = feedback("0123", "--benign", &dir.path().join("alerts.jsonl"), &verdicts);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no alert with id 0123"));
}

#[test]
fn malicious_verdict_raises_critical_reads_from_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (all, _) = replay(&[], &dir.path().join("alerts.jsonl"));
    let a = origin_alert(&all);
    let verdicts = dir.path().join("verdicts.jsonl");
    let o = feedback(a["id"].as_str().unwrap(), "--malicious", &dir.path().join("alerts.jsonl"), &verdicts);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let (after, stderr) = replay(&["--verdicts", verdicts.to_str().unwrap()], &dir.path().join("after.jsonl"));
    let mal: Vec<&serde_json::Value> = after.iter().filter(|x| x["rule"] == "malicious_origin").collect();
    assert!(!mal.is_empty(), "{stderr}");
    assert!(mal.iter().all(|m| m["severity"] == "critical" && m["origin"]["prefix"] == a["origin"]["prefix"]));
    assert_eq!(mal[0]["trigger_event_time"], a["trigger_event_time"]);
    assert!(mal[0]["summary"].as_str().unwrap().contains("ticket 7"));
    // For that origin malicious_origin replaces unfamiliar_origin_volume.
    assert!(after.iter().all(|x| x["id"] != a["id"]));
    assert!(!after.iter().any(|x| x["rule"] == "unfamiliar_origin_volume" && x["origin"] == a["origin"]));
}
