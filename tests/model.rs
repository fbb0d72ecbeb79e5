//! Models end to end through the binary: `train`, `replay --model`, `model inspect`, and the
//! refusals (newer format, truncated or corrupted files, an incompatible configuration).
//!
//! The central claim: a replay that starts from a model of the days before `T` gives, from
//! `T` on, exactly the alerts of one replay over the whole range (ids and contents).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sample-baseline");
/// The sample logs' theft begins 2021-08-17T02:13; the model holds the eight days before.
const CUT: &str = "2021-08-17T00:00:00Z";

fn exfilwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_exfilwatch")).args(args).output().unwrap()
}

fn ok(out: Output) -> Output {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn alerts(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn train(out: &Path, until: &str) {
    ok(exfilwatch(&["train", "-q", SAMPLE, "--until", until, "--out", s(out)]));
}

/// A copy of the shipped model to damage.
fn copy_of_shipped(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir(&m).unwrap();
    for e in std::fs::read_dir(SHIPPED).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    m
}

#[test]
fn replay_from_a_model_gives_the_alerts_of_one_replay_over_the_whole_range() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("before-theft");
    train(&model, CUT);
    let full = alerts(&ok(exfilwatch(&["replay", "-q", SAMPLE])));
    let later_in_full: Vec<&Value> = full.iter().filter(|a| a["trigger_event_time"].as_str().unwrap() >= CUT).collect();
    assert_eq!(later_in_full.len(), 2, "the theft: {later_in_full:?}");

    let out = ok(exfilwatch(&["replay", "--model", s(&model), "--since", CUT, SAMPLE]));
    let from_model = alerts(&out);
    assert_eq!(from_model.iter().collect::<Vec<_>>(), later_in_full, "same ids and contents");
    assert!(stderr(&out).contains("4 accounts, 8 keys, 9 origins"), "{}", stderr(&out));

    assert!(!stderr(&out).contains("note:"), "{}", stderr(&out));
    // Without --since the records the model saw would count twice: a note says so.
    let out = ok(exfilwatch(&["replay", "--model", s(&model), SAMPLE]));
    assert!(
        stderr(&out).contains(&format!("note: the model covers event time up to {CUT}; pass --since {CUT}")),
        "{}",
        stderr(&out)
    );

    // Without the model the same days are a learning period: the theft goes unseen.
    let cold = alerts(&ok(exfilwatch(&["replay", "-q", "--since", CUT, SAMPLE])));
    assert!(cold.is_empty(), "{cold:?}");
}

#[test]
fn a_model_cut_in_the_middle_of_the_theft_continues_it_exactly() {
    // Evidence, dedup marks and sliding windows of the new origin are live at this cut.
    let cut = "2021-08-17T02:21:02Z";
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("mid-theft");
    train(&model, cut);
    let full = alerts(&ok(exfilwatch(&["replay", "-q", SAMPLE])));
    let later: Vec<&Value> = full.iter().filter(|a| a["trigger_event_time"].as_str().unwrap() >= cut).collect();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0]["rule"], "unfamiliar_origin_volume");
    let from_model = alerts(&ok(exfilwatch(&["replay", "-q", "--model", s(&model), "--since", cut, SAMPLE])));
    assert_eq!(from_model.iter().collect::<Vec<_>>(), later);
}

#[test]
fn the_shipped_model_is_current_and_training_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("sample-baseline");
    train(&model, CUT);
    let shipped = std::fs::read_to_string(Path::new(SHIPPED).join("manifest.json")).unwrap();
    let fresh = std::fs::read_to_string(model.join("manifest.json")).unwrap();
    assert_eq!(fresh, shipped, "models/sample-baseline is stale: run `make train-sample`");
    let m: Value = serde_json::from_str(&fresh).unwrap();
    assert_eq!(m["format_version"], 2);
    assert!(m["files"].as_array().unwrap().iter().any(|f| f["name"] == "verdicts.parquet"));
    assert_eq!(m["event_time"]["until"], CUT);
    assert_eq!(m["counts"]["keys"], 8);
    for f in m["files"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let bytes = std::fs::read(model.join(name)).unwrap();
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap(), "{name}");
        assert_eq!(&bytes[..4], b"PAR1", "{name} is Parquet");
    }
}

#[test]
fn inspect_shows_a_keys_familiar_origins_and_typical_volume() {
    let out =
        ok(exfilwatch(&["model", "inspect", SHIPPED, "--account", "contoso", "--credential", "key:primarymasterkey"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("contoso / key:primarymasterkey"), "{text}");
    assert!(text.contains("10.20.30.0/24  yes"), "{text}");
    assert!(text.contains("typical: 33 MiB/h"), "{text}");
    assert!(!text.contains("key:secondaryreadonlymasterkey"), "{text}");

    let out = ok(exfilwatch(&["model", "inspect", SHIPPED, "--account", "contoso", "--format", "json"]));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert!(keys.iter().all(|k| k["account"] == "contoso"));
    let backup = keys.iter().find(|k| k["credential"] == "key:secondaryreadonlymasterkey").unwrap();
    assert_eq!(backup["origins"][0]["origin"], "10.20.40.0/24");
    assert_eq!(backup["origins"][0]["familiar"], true);
    // The nightly backup's peaks make its volume threshold far above the web app's.
    assert!(backup["volume_threshold_bytes"].as_u64().unwrap() > 5 << 30, "{backup}");
    assert_eq!(doc["manifest"]["event_time"]["until"], CUT);

    let out = exfilwatch(&["model", "inspect", SHIPPED, "--account", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no key of the model matches --account nobody"), "{}", stderr(&out));
}

#[test]
fn a_newer_or_unknown_format_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let m = copy_of_shipped(dir.path());
    let manifest = m.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for (version, expected) in
        [(3, "format version 3 is newer than this exfilwatch supports (2)"), (1, "format version 1 is not supported")]
    {
        std::fs::write(&manifest, text.replace("\"format_version\": 2", &format!("\"format_version\": {version}")))
            .unwrap();
        for args in [vec!["replay", "--model", s(&m), SAMPLE], vec!["model", "inspect", s(&m)]] {
            let out = exfilwatch(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            assert!(stderr(&out).contains(expected), "{}", stderr(&out));
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn a_truncated_or_corrupted_file_is_refused_never_half_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let m = copy_of_shipped(dir.path());
    let origins = m.join("origins.parquet");
    let good = std::fs::read(&origins).unwrap();

    std::fs::write(&origins, &good[..good.len() / 2]).unwrap();
    let out = exfilwatch(&["replay", "--model", s(&m), "--since", CUT, SAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("origins.parquet is truncated or was changed"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no alert from a half-loaded model");

    // Same size, one byte flipped in the middle of the data.
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x40;
    std::fs::write(&origins, &bad).unwrap();
    let out = exfilwatch(&["replay", "--model", s(&m), "--since", CUT, SAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("origins.parquet is corrupted"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    std::fs::write(&origins, &good).unwrap();
    std::fs::remove_file(m.join("keys.parquet")).unwrap();
    let out = exfilwatch(&["model", "inspect", s(&m)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("keys.parquet"), "{}", stderr(&out));
}

#[test]
fn a_configuration_with_other_origins_is_refused_and_thresholds_may_differ() {
    let dir = tempfile::tempdir().unwrap();
    let ip = dir.path().join("ip.toml");
    std::fs::write(&ip, "[detect]\norigin_granularity = \"ip\"\n").unwrap();
    let out = exfilwatch(&["replay", "--model", SHIPPED, "--config", s(&ip), "--since", CUT, SAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("detect.origin_granularity = \"prefix\""), "{}", stderr(&out));

    // A higher threshold: the 1.0 GiB theft stays below it, the model is used as is.
    let high = dir.path().join("high.toml");
    std::fs::write(&high, "[detect]\nunfamiliar_bytes = \"2GiB\"\nvolume_min_bytes = \"2GiB\"\n").unwrap();
    let out = ok(exfilwatch(&["replay", "-q", "--model", SHIPPED, "--config", s(&high), "--since", CUT, SAMPLE]));
    let a = alerts(&out);
    assert!(a.iter().all(|a| a["threshold_bytes"].as_u64().unwrap() >= 2 << 30), "{a:?}");
}

#[test]
fn train_does_not_replace_a_directory_that_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
    let out = exfilwatch(&["train", "-q", SAMPLE, "--until", CUT, "--out", s(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a model: refusing to replace it"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(), "keep me");
    // A model is replaced.
    let model = dir.path().join("m");
    train(&model, "2021-08-12T00:00:00Z");
    train(&model, CUT);
    let m: Value = serde_json::from_slice(&std::fs::read(model.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["event_time"]["until"], CUT);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary directory left");
}
