//! The sample logs as Kafka messages, and alert sets to compare, for the broker tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs");

/// The units (one JSON value each) of `dir`'s streams, per stream, as replay frames them.
pub fn units(dir: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let (streams, faults) = exfilwatch::sources::collect_streams(&[dir.into()]).unwrap();
    assert!(faults.is_empty(), "{faults:?}");
    streams
        .into_iter()
        .map(|s| {
            let name = s.describe();
            let mut r = exfilwatch::sources::UnitReader::new(s, 1 << 30);
            let mut v = Vec::new();
            while let Some(u) = r.next_unit() {
                v.push(u.bytes.to_vec());
            }
            assert!(r.take_faults().is_empty(), "{name} is damaged");
            (name, v)
        })
        .collect()
}

/// contoso's sample records, one per message, in file order (as replay reads them).
pub fn contoso_messages() -> (String, Vec<(String, Vec<u8>)>) {
    let contoso = format!("{SAMPLE}/contoso");
    let msgs = units(&contoso).into_iter().flat_map(|(_, us)| us).map(|u| (String::new(), u)).collect();
    (contoso, msgs)
}

/// `{"records": [...]}` of these records (one JSON value each), as Azure Monitor sends them.
pub fn envelope<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let mut env = b"{\"records\": [".to_vec();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            env.push(b',');
        }
        env.extend_from_slice(r.as_ref());
    }
    env.extend(b"]}");
    env
}

/// A JSON Lines file's records in envelopes of `n`, without keys.
pub fn file_envelopes(path: &std::path::Path, n: usize) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    lines.chunks(n).map(|c| (String::new(), envelope(c))).collect()
}

/// contoso's sample records in `{"records": [...]}` envelopes of up to `n`, in file order; a
/// unit that is not valid JSON (the samples hold a few on purpose) travels alone at its place.
pub fn contoso_envelopes(n: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let (contoso, singles) = contoso_messages();
    let mut msgs = Vec::new();
    let mut run: Vec<Vec<u8>> = Vec::new();
    let flush = |run: &mut Vec<Vec<u8>>, msgs: &mut Vec<(String, Vec<u8>)>| {
        if !run.is_empty() {
            msgs.push((String::new(), envelope(run)));
            run.clear();
        }
    };
    for (_, u) in singles {
        if serde_json::from_slice::<serde_json::Value>(&u).is_ok() {
            run.push(u);
            if run.len() == n {
                flush(&mut run, &mut msgs);
            }
        } else {
            flush(&mut run, &mut msgs);
            msgs.push((String::new(), u));
        }
    }
    flush(&mut run, &mut msgs);
    (contoso, msgs)
}

/// How Azure Monitor fills Event Hubs: no partition key, so an account's messages land on every
/// partition. Round-robin over `partitions`, except that (with three or more) the last one
/// stays empty and the second-to-last one's producer stops halfway through the stream.
pub fn spread_unkeyed(msgs: Vec<(String, Vec<u8>)>, partitions: i32) -> Vec<(i32, Vec<u8>)> {
    let half = msgs.len() / 2;
    msgs.into_iter()
        .enumerate()
        .map(|(i, (_, m))| {
            let active = match partitions {
                1 | 2 => partitions,
                n if i < half => n - 1,
                n => n - 2,
            };
            ((i as i32) % active, m)
        })
        .collect()
}

/// The detector's counters (events, late records) of `exfilwatch replay` over `dir`.
pub fn replay_counts(dir: &str) -> exfilwatch::detect::DetectorStats {
    replay_stats(dir).detector
}

/// The malformed records `exfilwatch replay` counts over `dir`, by reason.
pub fn replay_malformed(dir: &str) -> BTreeMap<exfilwatch::decode::Malformed, u64> {
    replay_stats(dir).malformed
}

/// The counters of `exfilwatch replay` over `dir`.
pub fn replay_stats(dir: &str) -> exfilwatch::telemetry::Stats {
    let cfg = exfilwatch::config::Config::default();
    let opts = exfilwatch::replay::ReplayOptions { inputs: vec![dir.into()], ..Default::default() };
    let mut detector = exfilwatch::detect::Detector::new(cfg.detect.clone());
    let sink = exfilwatch::sinks::JsonLinesSink::new(std::io::sink(), "nowhere");
    let mut sink = exfilwatch::sinks::fanout::Fanout::one(sink, cfg.detect.realert.0);
    let report = exfilwatch::replay::replay(&cfg, &opts, &mut detector, &mut sink, |_, _| {}).unwrap();
    report.stats
}

/// The alerts `exfilwatch replay` raises over `dir`, by id.
pub fn replay_alerts(dir: &str) -> BTreeMap<String, serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch")).args(["replay", "-q", dir]).output().unwrap();
    assert!(out.status.success());
    by_id(&String::from_utf8_lossy(&out.stdout).lines().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>())
}

/// JSON alerts by id (a duplicate id would collapse: compare lengths too).
pub fn by_id(msgs: &[Vec<u8>]) -> BTreeMap<String, serde_json::Value> {
    msgs.iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .map(|a| (a["id"].as_str().unwrap().to_string(), a))
        .collect()
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `deadline`.
pub fn wait_for(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `child` once it catches the signal (Linux: the `SigCgt` mask of
/// `/proc/<pid>/status`), so that the signal asks the service to drain and stop instead of
/// killing a process still starting (a run that finds nothing left to do may be stopped a few
/// milliseconds after its start). Fails if the child exits first or never catches it.
pub fn sigterm(child: &mut std::process::Child) {
    const SIGTERM_BIT: u64 = 1 << (15 - 1);
    let status = format!("/proc/{}/status", child.id());
    let caught = || {
        std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("SigCgt:").and_then(|m| u64::from_str_radix(m.trim(), 16).ok()))
        })
    };
    wait_for(Duration::from_secs(60), "the process to catch SIGTERM", || {
        if let Some(exit) = child.try_wait().expect("the child's status") {
            panic!("the process exited ({exit}) before it caught SIGTERM");
        }
        caught().unwrap_or(0) & SIGTERM_BIT != 0
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
}

pub fn unique(name: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{n}", std::process::id())
}

/// Where two sets of alerts by id differ: for each id, the fields whose values differ (with
/// both values), so that a failing comparison says what changed, not two walls of JSON.
#[allow(dead_code)]
pub fn alert_differences(
    got: &BTreeMap<String, serde_json::Value>,
    want: &BTreeMap<String, serde_json::Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, w) in want {
        match got.get(id) {
            None => out.push(format!("{id}: missing")),
            Some(g) => {
                for (k, wv) in w.as_object().into_iter().flatten() {
                    if g.get(k) != Some(wv) {
                        out.push(format!("{id} {k}: got {} want {wv}", g.get(k).unwrap_or(&serde_json::Value::Null)));
                    }
                }
            }
        }
    }
    out.extend(got.keys().filter(|id| !want.contains_key(*id)).map(|id| format!("{id}: unexpected")));
    out
}
