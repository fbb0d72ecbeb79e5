//! Scale-out against the real broker (Tansu, from `scripts/with-tansu.sh`): one `--role rekey`
//! instance, two `--role detect` instances over a 4-partition internal topic; one detect
//! instance is killed (SIGKILL) mid-stream and the other takes its partitions over, restoring
//! their state from the shared state store. The alerts on the alert topic must be exactly
//! those of one process over the whole stream (`exfilwatch replay`, which equals `run`:
//! tests/kafka.rs): same ids, none missing, none twice.
//!
//! Every wait polls an observable condition (the alert topic, the instances' logs of which
//! partitions they hold) against a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/partitions.rs"]
mod partitions;
#[path = "support/sample.rs"]
mod sample;
use sample::{by_id, unique, wait_for};

fn broker() -> String {
    std::env::var("EXFILWATCH_TEST_KAFKA")
        .expect("these tests need a broker: run them with `make test` (scripts/with-tansu.sh starts Tansu)")
}

/// The records of the generated workload (8 thefts on 8 accounts, spread over the 4 internal
/// partitions), one JSON line each, in time order; and the path of the file.
fn workload(dir: &Path) -> (PathBuf, Vec<Vec<u8>>) {
    let path = dir.join("logs.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_gen-logs"))
        .args(["bench", "--records", "40000", "--keys", "64", "--origins-per-key", "4", "--thefts", "8", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read(&path).unwrap();
    let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    (path, lines)
}

fn account(line: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    v["resourceId"].as_str().unwrap().rsplit('/').next().unwrap().to_ascii_lowercase()
}

/// Each account's records in `{"records": [...]}` envelopes of up to 20, keyed by account
/// (so one account's records stay in order on one raw partition).
fn envelopes(lines: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let mut per: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut msgs = Vec::new();
    for l in lines {
        let a = account(l);
        let run = per.entry(a.clone()).or_default();
        run.push(l);
        if run.len() == 20 {
            order.push((a.clone(), std::mem::take(run)));
        }
    }
    for (a, run) in per {
        if !run.is_empty() {
            order.push((a, run));
        }
    }
    for (a, run) in order {
        msgs.push((a, sample::envelope(&run)));
    }
    msgs
}

struct Instance {
    child: Child,
    log: PathBuf,
}

/// Whether `group` has committed every message of `topic`.
fn caught_up(topic: &str, group: &str) -> bool {
    caught_up_over(topic, group, 4)
}

/// Whether `group` has committed every message of the `partitions` partitions of `topic`.
fn caught_up_over(topic: &str, group: &str, partitions: i32) -> bool {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker()).create().unwrap();
    (0..partitions).all(|p| {
        let (low, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        // An empty partition gets no commit.
        low >= high || kafka_client::committed(&broker(), topic, p, group) >= high
    })
}

fn start(dir: &Path, name: &str, role: &str, raw: &str, internal: &str, group: &str, alerts: &str) -> Instance {
    // Only the checkpoints on assign, revoke and shutdown: a kill loses everything since.
    start_with(dir, name, role, raw, internal, group, alerts, "checkpoint_interval = \"1h\"\n")
}

/// As [`start`], with more of `[service]` in `service` (e.g. `service.checkpoint_interval`:
/// detect commits after each checkpoint).
#[allow(clippy::too_many_arguments)]
fn start_with(
    dir: &Path,
    name: &str,
    role: &str,
    raw: &str,
    internal: &str,
    group: &str,
    alerts: &str,
    service: &str,
) -> Instance {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{raw}\"]\ngroup_id = \"{group}\"\n\
             librdkafka_options = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}\n\
             [sinks]\nstdout = false\nkafka_topic = \"{alerts}\"\n\
             [service]\nmetrics_addr = \"\"\nstate_store = \"{}\"\ninternal_topic = \"{internal}\"\n{service}",
            broker(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["run", "--role", role, "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Instance { child, log }
}

/// A test that fails leaves no process behind.
impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Instance {
    /// The internal partitions this detect instance holds now, from its log.
    fn held(&self) -> BTreeSet<i32> {
        partitions::held(&self.log)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn terminate(&mut self) {
        sample::sigterm(&mut self.child);
        let end = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.success(), "exited with {status}:\n{log}");
                return;
            }
            assert!(Instant::now() < end, "did not stop within 40 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Joins the group and leaves it again: a membership change. Tansu 0.6 does not rebalance
/// when a member's session expires (its heartbeat handler drops the member but keeps the
/// generation and the old assignment, coordinator/group/administrator.rs), which a Kafka
/// broker or Event Hubs would do by itself; a member joining and leaving starts the rebalance
/// that hands the dead member's partitions to the survivor.
fn join_and_leave(group: &str, topic: &str) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while c.assignment().map(|a| a.count()).unwrap_or(0) == 0 && Instant::now() < end {
        // Messages fetched meanwhile are not processed and nothing is committed.
        let _ = c.poll(Duration::from_millis(100));
    }
    drop(c); // leaves the group
}

#[test]
fn two_detect_instances_one_killed_give_the_single_process_alerts() {
    let (raw, internal, alerts, group) = (unique("raw"), unique("events"), unique("alerts"), unique("g"));
    kafka_client::create_topic(&broker(), &raw, 4);
    kafka_client::create_topic(&broker(), &internal, 4);
    kafka_client::create_topic(&broker(), &alerts, 1);
    let dir = tempfile::tempdir().unwrap();
    let (path, lines) = workload(dir.path());

    // What one process raises over the whole stream.
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch")).args(["replay", "-q"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let golden =
        by_id(&String::from_utf8_lossy(&out.stdout).lines().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>());
    // The stream in two parts, split in event time: the thefts of the first are all raised
    // before the kill, those of the second after the takeover.
    let split = "2021-08-09T12:00:00";
    let cut = lines.iter().position(|l| std::str::from_utf8(&l[..60]).unwrap().contains("2021-08-09T12")).unwrap();
    let first_part: BTreeSet<String> = golden
        .iter()
        .filter(|(_, a)| a["trigger_event_time"].as_str().unwrap() < split)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        !first_part.is_empty() && first_part.len() < golden.len(),
        "the workload has thefts on both sides of {split}: {golden:?}"
    );

    let d = dir.path();
    let mut rekey = start(d, "rekey", "rekey", &raw, &internal, &group, &alerts);
    let a = start(d, "detect-a", "detect", &raw, &internal, &group, &alerts);
    wait_for(Duration::from_secs(60), "detect-a to hold all 4 partitions", || a.held().len() == 4);
    let mut b = start(d, "detect-b", "detect", &raw, &internal, &group, &alerts);
    wait_for(Duration::from_secs(60), "the partitions to be split between detect-a and detect-b", || {
        let (ha, hb) = (a.held(), b.held());
        ha.len() == 2 && hb.len() == 2 && ha.is_disjoint(&hb)
    });
    let b_held = b.held();

    kafka_client::produce(&broker(), &raw, &envelopes(&lines[..cut]));
    let topic_ids = || -> BTreeSet<String> { by_id(&kafka_client::read_all(&broker(), &alerts)).into_keys().collect() };
    wait_for(Duration::from_secs(120), "the first part's alerts", || topic_ids().is_superset(&first_part));
    // detect-b delivered alerts it never checkpointed (its only checkpoint is the one taken
    // when it got its partitions): killing it now loses all of its work.
    let journaled = b_held.iter().any(|p| {
        std::fs::read_dir(d.join("state").join(format!("{internal}-{p}")))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("delivered-"))
    });
    assert!(journaled, "detect-b (partitions {b_held:?}) raised some of the first part's alerts");
    b.child.kill().unwrap();
    b.child.wait().unwrap();

    // detect-a takes detect-b's partitions over (see join_and_leave for why the test nudges).
    let detect_group = format!("{group}-detect");
    let end = Instant::now() + Duration::from_secs(120);
    while a.held().len() < 4 {
        assert!(Instant::now() < end, "detect-a did not take detect-b's partitions over");
        join_and_leave(&detect_group, &internal);
        let settle = Instant::now() + Duration::from_secs(10);
        while a.held().len() < 4 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    kafka_client::produce(&broker(), &raw, &envelopes(&lines[cut..]));
    wait_for(Duration::from_secs(180), "every alert", || topic_ids().len() >= golden.len());
    let mut a = a;
    assert!(a.alive());
    a.terminate();
    rekey.terminate();

    let got = kafka_client::read_all(&broker(), &alerts);
    let got_ids: Vec<String> = by_id(&got).into_keys().collect();
    assert_eq!(got.len(), golden.len(), "no alert twice: {got_ids:?}");
    let got = by_id(&got);
    assert_eq!(got.keys().collect::<Vec<_>>(), golden.keys().collect::<Vec<_>>());
    for (id, want) in &golden {
        assert_eq!(&got[id], want, "alert {id}: as one process raised it");
    }
}

/// A number logged by an instance's "Stopped." line (`field=value`).
fn stopped_figure(log: &Path, field: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line =
        text.lines().rev().find(|l| l.contains("Stopped.")).unwrap_or_else(|| panic!("no Stopped. line in {log:?}"));
    let key = format!(" {field}=");
    line.split(&key)
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

#[test]
fn a_backlog_over_unkeyed_partitions_through_rekey_and_two_detect_instances_raises_what_replay_raises() {
    through_rekey(1);
}

#[test]
fn a_backlog_through_rekey_decoding_on_four_threads_and_two_detect_instances_raises_what_replay_raises() {
    through_rekey(4);
}

/// The contoso sample as Azure Monitor fills Event Hubs (no key: round-robin over 8 raw
/// partitions, one empty, one whose producer stops halfway), consumed as a backlog by one
/// rekey instance (which merges the raw partitions by event time, decoding on
/// `decode_threads`) and two detect instances: replay's alerts and counts.
fn through_rekey(decode_threads: usize) {
    let (raw, internal, alerts, group) = (unique("raw8"), unique("events8"), unique("alerts8"), unique("g8"));
    kafka_client::create_topic(&broker(), &raw, 8);
    kafka_client::create_topic(&broker(), &internal, 4);
    kafka_client::create_topic(&broker(), &alerts, 1);
    let (contoso, msgs) = sample::contoso_envelopes(20);
    let spread = sample::spread_unkeyed(msgs, 8);
    kafka_client::produce_to_partitions(&broker(), &raw, &spread);
    let expected = sample::replay_alerts(&contoso);
    let replayed = sample::replay_counts(&contoso);
    assert!(!expected.is_empty() && replayed.events > 0);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let service = format!("checkpoint_interval = \"1s\"\ndecode_threads = {decode_threads}\n");
    let start = |name: &str, role: &str| start_with(d, name, role, &raw, &internal, &group, &alerts, &service);
    let mut a = start("detect-a", "detect");
    wait_for(Duration::from_secs(60), "detect-a to hold all 4 partitions", || a.held().len() == 4);
    let mut b = start("detect-b", "detect");
    wait_for(Duration::from_secs(60), "the partitions to be split between detect-a and detect-b", || {
        let (ha, hb) = (a.held(), b.held());
        ha.len() == 2 && hb.len() == 2 && ha.is_disjoint(&hb)
    });
    // The backlog is there before the rekey instance starts.
    let mut rekey = start("rekey", "rekey");
    wait_for(Duration::from_secs(120), "rekey to commit every raw message", || caught_up_over(&raw, &group, 8));
    let detect_group = format!("{group}-detect");
    wait_for(Duration::from_secs(120), "detect to commit the whole internal topic", || {
        caught_up_over(&internal, &detect_group, 4)
    });
    let got =
        kafka_client::read_until(&broker(), &alerts, Duration::from_secs(60), |m| by_id(m).len() >= expected.len());
    rekey.terminate();
    a.terminate();
    b.terminate();
    let said = std::fs::read_to_string(&rekey.log).unwrap();
    assert!(said.contains(&format!("decode_threads={decode_threads}")), "rekey decoded on {decode_threads}: {said}");

    let all = kafka_client::read_all(&broker(), &alerts);
    assert!(all.len() >= got.len());
    assert_eq!(by_id(&all), expected, "replay's alerts, same ids");
    assert_eq!(all.len(), expected.len(), "no alert twice");
    let (events, late) = [&a, &b]
        .iter()
        .fold((0, 0), |(e, l), i| (e + stopped_figure(&i.log, "events"), l + stopped_figure(&i.log, "late")));
    assert_eq!(events, replayed.events, "every record through a detector");
    assert_eq!(late, replayed.late_events, "late records as in replay");
}

#[test]
fn batches_produced_twice_by_rekey_count_once() {
    // A rekey instance that lost its commits decodes and produces everything again: here a
    // second rekey group over the same raw topic puts every batch on the internal topic a
    // second time. Bytes counted twice would change the alerts (volumes, evidence); the detect
    // role drops every batch from a raw offset its state already covers.
    let (raw, internal, alerts, group) = (unique("raw"), unique("events"), unique("alerts"), unique("g"));
    kafka_client::create_topic(&broker(), &raw, 4);
    kafka_client::create_topic(&broker(), &internal, 4);
    kafka_client::create_topic(&broker(), &alerts, 1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (path, lines) = workload(d);
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch")).args(["replay", "-q"]).arg(&path).output().unwrap();
    let golden =
        by_id(&String::from_utf8_lossy(&out.stdout).lines().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>());
    // Both at once, and the detect instance with them, so that each batch and its copy
    // arrive close together (a copy long after its original would be late and change little).
    let mut detect = start(d, "detect", "detect", &raw, &internal, &group, &alerts);
    wait_for(Duration::from_secs(60), "detect to hold all 4 partitions", || detect.held().len() == 4);
    let rekeys: Vec<(String, Instance)> = ["first", "second"]
        .iter()
        .map(|copy| {
            let g = format!("{group}-{copy}");
            let i = start(d, &format!("rekey-{copy}"), "rekey", &raw, &internal, &g, &alerts);
            (g, i)
        })
        .collect();
    kafka_client::produce(&broker(), &raw, &envelopes(&lines));
    for (g, mut rekey) in rekeys {
        wait_for(Duration::from_secs(120), "rekey to commit every raw message", || caught_up(&raw, &g));
        rekey.terminate();
    }
    let topic_ids = || by_id(&kafka_client::read_all(&broker(), &alerts)).len();
    wait_for(Duration::from_secs(120), "every alert", || topic_ids() >= golden.len());
    // Everything read: the detect group's commits (after its shutdown checkpoint) reach the end.
    detect.terminate();
    assert!(caught_up(&internal, &format!("{group}-detect")), "detect read the whole internal topic");
    let got = kafka_client::read_all(&broker(), &alerts);
    assert_eq!(got.len(), golden.len(), "no alert twice");
    let got = by_id(&got);
    for (id, want) in &golden {
        assert_eq!(&got[id], want, "alert {id}: as one process raised it");
    }
}

#[test]
fn rekey_and_detect_refuse_a_missing_internal_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, missing, alerts, group) = (unique("raw"), unique("no-such-topic"), unique("alerts"), unique("g"));
    kafka_client::create_topic(&broker(), &raw, 1);
    for role in ["rekey", "detect"] {
        let mut i = start(dir.path(), role, role, &raw, &missing, &group, &alerts);
        let status = i.child.wait().unwrap();
        let log = std::fs::read_to_string(&i.log).unwrap();
        assert_eq!(status.code(), Some(1), "{role}: {log}");
        assert!(log.contains(&format!("the internal topic \"{missing}\" does not exist")), "{role}: {log}");
    }
}
