//! `exfilwatch run` against a real Kafka-compatible broker (Tansu, started by
//! `scripts/with-tansu.sh`, which `make test` uses; the address comes in EXFILWATCH_TEST_KAFKA).
//! Every wait here polls an observable condition (a topic's content, a committed offset, a
//! process exit) against a deadline; nothing sleeps and hopes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;
use sample::{by_id, contoso_messages, replay_alerts, unique, units, wait_for, SAMPLE};

fn broker() -> String {
    std::env::var("EXFILWATCH_TEST_KAFKA")
        .expect("these tests need a broker: run them with `make test` (scripts/with-tansu.sh starts Tansu)")
}

fn create_topic(name: &str, partitions: i32) {
    kafka_client::create_topic(&broker(), name, partitions)
}

fn produce(topic: &str, messages: &[(String, Vec<u8>)]) {
    kafka_client::produce(&broker(), topic, messages)
}

fn read_until(topic: &str, deadline: Duration, want: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
    kafka_client::read_until(&broker(), topic, deadline, want)
}

fn committed(topic: &str, group: &str) -> i64 {
    kafka_client::committed(&broker(), topic, 0, group)
}

/// With `state`: checkpoints there every second; without: no state store.
fn start_service(dir: &Path, topic: &str, group: &str, alerts: &str, state: Option<&Path>) -> Child {
    let state = state.map_or(String::new(), |p| p.display().to_string());
    start_service_with(dir, topic, group, alerts, &format!("state_store = \"{state}\"\ncheckpoint_interval = \"1s\"\n"))
}

/// `extra` goes into `[service]`.
fn start_service_with(dir: &Path, topic: &str, group: &str, alerts: &str, extra: &str) -> Child {
    let cfg = dir.join(format!("{group}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             [sinks]\nstdout = false\nkafka_topic = \"{alerts}\"\n\
             [service]\nmetrics_addr = \"127.0.0.1:0\"\n{extra}",
            broker()
        ),
    )
    .unwrap();
    run_with_config(&cfg, &[])
}

/// `exfilwatch run --config CFG` with these environment variables (its alerts go to topics).
fn run_with_config(cfg: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["run", "--config"])
        .arg(cfg)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn terminate(mut child: Child) {
    sample::sigterm(&mut child);
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exfilwatch run exited with {status}");
            return;
        }
        assert!(Instant::now() < end, "exfilwatch run did not stop within 40 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sample_logs_over_four_partitions_give_the_golden_alerts() {
    // Each account's messages keyed by account (one partition each, in order); contoso's lines
    // grouped into {"records": [...]} envelopes of 20, the others as they are in the files.
    let (topic, alerts_topic, group) = (unique("logs"), unique("alerts"), unique("g"));
    create_topic(&topic, 4);
    create_topic(&alerts_topic, 1);
    let mut msgs: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, us) in units(SAMPLE) {
        if name.contains("CONTOSO") {
            let (good, bad): (Vec<_>, Vec<_>) =
                us.into_iter().partition(|u| serde_json::from_slice::<serde_json::Value>(u).is_ok());
            for b in bad {
                msgs.push((name.clone(), b));
            }
            for chunk in good.chunks(20) {
                msgs.push(("contoso".into(), sample::envelope(chunk)));
            }
        } else {
            msgs.extend(us.into_iter().map(|u| (name.clone(), u)));
        }
    }
    // The bad lines sit in their own messages; keep contoso's together on one key.
    for m in &mut msgs {
        if m.0.contains("CONTOSO") {
            m.0 = "contoso".into();
        }
    }
    produce(&topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, None);
    let golden = replay_alerts(SAMPLE);
    read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= golden.len());
    terminate(svc);
    // All the alert topic holds (duplicates would show).
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    assert_eq!(got.len(), golden.len(), "no alert twice");
    assert_eq!(by_id(&got), golden);
}

#[test]
fn replay_equals_streaming_through_one_partition() {
    let (topic, alerts_topic, group) = (unique("logs1"), unique("alerts1"), unique("g1"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    let (contoso, msgs) = contoso_messages();
    produce(&topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, None);
    let expected = replay_alerts(&contoso);
    assert!(!expected.is_empty());
    read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= expected.len());
    terminate(svc);
    // All the alert topic holds (duplicates would show).
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    assert_eq!(got.len(), expected.len(), "no alert twice");
    assert_eq!(by_id(&got), expected);
}

#[test]
fn sigterm_mid_stream_and_restart_skip_nothing_and_repeat_no_alert() {
    let (topic, alerts_topic, group) = (unique("logs2"), unique("alerts2"), unique("g2"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    let (contoso, msgs) = contoso_messages();
    // Stop after the theft began: the state file must carry it across the restart.
    let half = msgs.len() * 9 / 10;
    produce(&topic, &msgs[..half]);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, Some(&state));
    wait_for(Duration::from_secs(60), "the first part to be committed", || {
        committed(&topic, &group) >= half as i64 - 1
    });
    terminate(svc);
    assert_eq!(committed(&topic, &group), half as i64, "SIGTERM commits exactly what was processed");
    assert!(std::fs::read_dir(&state).unwrap().count() > 0, "a checkpoint was written");

    produce(&topic, &msgs[half..]);
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, Some(&state));
    let expected = replay_alerts(&contoso);
    wait_for(Duration::from_secs(60), "the rest to be committed", || {
        committed(&topic, &group) >= msgs.len() as i64 - 1
    });
    read_until(&alerts_topic, Duration::from_secs(60), |m| m.len() >= expected.len());
    terminate(svc);
    // All the alert topic holds (duplicates would show).
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    // Every alert exactly once, the same as one uninterrupted replay.
    assert_eq!(got.len(), expected.len(), "no alert twice");
    assert_eq!(by_id(&got), expected);
}

/// Several thefts (gen-logs' planted ones) through one partition; the service is killed with
/// SIGKILL five times (once while a checkpoint or journal entry is being written: its temporary
/// file exists), its journal of delivered ids dropped each time (a kill after the alert topic
/// acknowledged an alert but before the journal had it), and restarted each time. The alerts on the alert topic equal one uninterrupted
/// replay's: same ids and content, none missing, none twice.
#[test]
fn sigkill_five_times_restores_checkpoints_and_alerts_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("thefts.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_gen-logs"))
        .args(["bench", "--records", "40000", "--keys", "30", "--origins-per-key", "3", "--thefts", "4", "--out"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = replay_alerts(logs.to_str().unwrap());
    assert!(expected.len() >= 4, "several thefts: {expected:?}");
    let msgs = sample::file_envelopes(&logs, 20);
    let (topic, alerts_topic, group) = (unique("logs3"), unique("alerts3"), unique("g3"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    produce(&topic, &msgs);
    let state = dir.path().join("state");
    let total = msgs.len() as i64;
    let mut killed_in_write = false;
    for k in 1..=5 {
        let mut svc = start_service(dir.path(), &topic, &group, &alerts_topic, Some(&state));
        let target = total * k / 6;
        wait_for(Duration::from_secs(120), "progress before the kill", || committed(&topic, &group) >= target);
        if !killed_in_write {
            // Poll the store for a write in progress (its temporary file) for up to 5 s.
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && !killed_in_write {
                killed_in_write = std::fs::read_dir(&state)
                    .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
                    .unwrap_or(false);
            }
        }
        svc.kill().unwrap();
        svc.wait().unwrap();
        // As if the kill had landed between the alert topic's acknowledgement and the
        // journal's fsync: the ids delivered since the newest checkpoint are forgotten.
        for e in std::fs::read_dir(&state).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("delivered-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    assert!(killed_in_write, "one kill landed while a checkpoint or journal entry was being written");
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, Some(&state));
    wait_for(Duration::from_secs(120), "the whole topic", || committed(&topic, &group) >= total);
    terminate(svc);
    // Everything the six runs wrote to the alert topic.
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    assert_eq!(got.len(), expected.len(), "none twice, none missing: {:?}", by_id(&got).keys().collect::<Vec<_>>());
    let diff = sample::alert_differences(&by_id(&got), &expected);
    assert!(diff.is_empty(), "same alerts as one uninterrupted run: {diff:#?}");
}

/// `run --model`: contoso's records after the shipped model's end, through the real broker,
/// raise what `replay --model --since` raises on them (the theft), with no learning period;
/// without the model the same records raise nothing (contoso would still be learning).
#[test]
fn run_from_a_model_raises_what_replay_from_it_raises() {
    const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sample-baseline");
    const CUT: &str = "2021-08-17T00:00:00Z";
    let (topic, alerts_topic, group) = (unique("logs4"), unique("alerts4"), unique("g4"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    let (contoso, msgs) = contoso_messages();
    let after: Vec<(String, Vec<u8>)> = msgs
        .into_iter()
        .filter(|(_, m)| {
            let v: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
            v["time"].as_str().is_some_and(|t| t >= CUT)
        })
        .collect();
    assert!(!after.is_empty());
    produce(&topic, &after);
    let replay = |model: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_exfilwatch"));
        cmd.args(["replay", "-q", "--since", CUT]);
        if model {
            cmd.args(["--model", MODEL]);
        }
        let out = cmd.arg(&contoso).output().unwrap();
        assert!(out.status.success());
        by_id(&String::from_utf8_lossy(&out.stdout).lines().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>())
    };
    let expected = replay(true);
    assert!(!expected.is_empty(), "the model knows contoso: the theft is caught");
    assert!(replay(false).is_empty(), "without the model contoso is still learning");

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let extra = format!("state_store = \"{}\"\ncheckpoint_interval = \"1s\"\nmodel = \"{MODEL}\"\n", state.display());
    let svc = start_service_with(dir.path(), &topic, &group, &alerts_topic, &extra);
    read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= expected.len());
    wait_for(Duration::from_secs(60), "the whole topic to be committed", || {
        committed(&topic, &group) >= after.len() as i64
    });
    terminate(svc);
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    assert_eq!(got.len(), expected.len(), "no alert twice");
    assert_eq!(by_id(&got), expected);
}

/// One wrong clock must not blind an account (issue 10), in the service as in replay: a record
/// stamped 2099 (ahead of the wall clock) and one from two months before its account's progress
/// are set aside to the dead-letter topic with their reasons, and the alerts are those of a
/// replay of the clean sample.
#[test]
fn records_from_the_future_and_the_distant_past_are_dead_lettered_and_change_nothing() {
    let (topic, alerts_topic, dead_topic, group) =
        (unique("skew"), unique("alerts-skew"), unique("dead"), unique("gs"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    create_topic(&dead_topic, 1);
    let (contoso, mut msgs) = contoso_messages();
    let restamp = |unit: &[u8], to: &str| -> Vec<u8> {
        let text = String::from_utf8(unit.to_vec()).unwrap();
        let at = text.find("\"time\"").unwrap();
        let date = at + text[at..].find("2021-08-").unwrap();
        format!("{}{to}{}", &text[..date], &text[date + 10..]).into_bytes()
    };
    let future = restamp(&msgs[100].1, "2099-01-01");
    let stale = restamp(&msgs[3000].1, "2021-06-01");
    msgs.insert(101, (String::new(), future.clone()));
    msgs.insert(3001, (String::new(), stale.clone()));
    produce(&topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skew.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             dead_letter_topic = \"{dead_topic}\"\n[sinks]\nstdout = false\nkafka_topic = \"{alerts_topic}\"\n\
             [service]\nmetrics_addr = \"127.0.0.1:0\"\nstate_store = \"\"\n",
            broker()
        ),
    )
    .unwrap();
    let svc = run_with_config(&cfg, &[]);
    let expected = replay_alerts(&contoso);
    assert!(!expected.is_empty());
    read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= expected.len());
    // Both set-aside records were sent (and acknowledged) before the theft's records came.
    terminate(svc);
    assert_eq!(by_id(&kafka_client::read_all(&broker(), &alerts_topic)), expected);
    let dead = kafka_client::read_all_with_headers(&broker(), &dead_topic);
    let reason_of = |payload: &[u8]| -> Vec<String> {
        dead.iter().filter(|(p, _)| p == payload).map(|(_, h)| h["exfilwatch.reason"].clone()).collect()
    };
    assert_eq!(reason_of(&future), ["future_time"]);
    assert_eq!(reason_of(&stale), ["stale_time"]);
}

#[test]
fn a_malicious_verdict_on_the_verdicts_topic_raises_critical_on_a_later_read() {
    let (topic, alerts_topic, verdicts_topic, group) =
        (unique("logsv"), unique("alertsv"), unique("verdicts"), unique("gv"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    create_topic(&verdicts_topic, 1);
    let (contoso, msgs) = contoso_messages();
    produce(&topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let svc = start_service_with(
        dir.path(),
        &topic,
        &group,
        &alerts_topic,
        &format!("state_store = \"\"\nverdicts_topic = \"{verdicts_topic}\"\n"),
    );
    let expected = replay_alerts(&contoso);
    read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= expected.len());
    let theft = expected.values().find(|a| a["rule"] == "unfamiliar_origin_volume").unwrap().clone();

    // The analyst's verdict, through `feedback --kafka`.
    let alerts_file = dir.path().join("alerts.jsonl");
    std::fs::write(&alerts_file, format!("{theft}\n")).unwrap();
    let cfg = dir.path().join("feedback.toml");
    std::fs::write(
        &cfg,
        format!("[kafka]\nbootstrap_servers = \"{}\"\n[service]\nverdicts_topic = \"{verdicts_topic}\"\n", broker()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["feedback", theft["id"].as_str().unwrap(), "--malicious", "--kafka", "--alerts"])
        .arg(&alerts_file)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = read_until(&verdicts_topic, Duration::from_secs(30), |m| !m.is_empty());
    let v: serde_json::Value = serde_json::from_slice(&v[0]).unwrap();
    assert_eq!(v["verdict"], "malicious");

    // A day later, one small read from the thief's address.
    let thief = units(&contoso)
        .into_iter()
        .flat_map(|(_, us)| us)
        .find(|u| String::from_utf8_lossy(u).contains("203.0.113.77"))
        .unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&thief).unwrap();
    rec["time"] = "2021-08-18T03:00:00.0000000Z".into();
    produce(&topic, &[(String::new(), serde_json::to_vec(&rec).unwrap())]);
    let got = read_until(&alerts_topic, Duration::from_secs(60), |m| {
        m.iter().any(|a| String::from_utf8_lossy(a).contains("\"rule\":\"malicious_origin\""))
    });
    terminate(svc);
    let mal: Vec<serde_json::Value> = got
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap())
        .filter(|a| a["rule"] == "malicious_origin")
        .collect();
    assert_eq!(mal.len(), 1, "{mal:?}");
    assert_eq!(mal[0]["severity"], "critical");
    assert_eq!(mal[0]["trigger_event_time"], "2021-08-18T03:00:00Z");
    assert_eq!(mal[0]["origin"]["prefix"], theft["origin"]["prefix"]);
}

/// A backlog of the contoso sample spread over `partitions` without keys
/// ([`sample::spread_unkeyed`]: one partition empty, one whose producer stops halfway),
/// consumed by role all decoding on `decode_threads` (1: on the loop): the alert topic holds
/// exactly replay's alerts (same ids, none twice), and the detector counts the same records
/// and the same late records as replay.
fn a_backlog_over(partitions: i32, decode_threads: usize) {
    let bootstrap = broker();
    let (topic, alerts_topic, group) = (unique("rr"), unique("rr-alerts"), unique("rr-g"));
    create_topic(&topic, partitions);
    create_topic(&alerts_topic, 1);
    let (contoso, msgs) = sample::contoso_envelopes(20);
    let spread = sample::spread_unkeyed(msgs, partitions);
    kafka_client::produce_to_partitions(&bootstrap, &topic, &spread);
    let expected = replay_alerts(&contoso);
    assert!(!expected.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let alerts_file = dir.path().join("alerts.jsonl");
    let extra = format!("kafka_topic = \"{alerts_topic}\"");
    let mut cfg = inproc::config(&bootstrap, &topic, &group, &alerts_file, &extra);
    cfg.service.decode_threads = decode_threads;
    let mut svc = inproc::Service::start(cfg);
    wait_for(Duration::from_secs(120), "every message handled", || svc.messages() >= spread.len() as u64);
    let stats = svc.stop();
    // All the alert topic holds (duplicates would show): replay's alerts, same ids.
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    let case = format!("{partitions} partitions, {decode_threads} decode threads");
    assert_eq!(by_id(&got), expected, "{case}");
    assert_eq!(got.len(), expected.len(), "no alert twice ({case})");
    let replayed = sample::replay_counts(&contoso);
    assert!(replayed.events > 0);
    assert_eq!(stats.detector.events, replayed.events, "every record through the detector ({case})");
    assert_eq!(stats.detector.late_events, replayed.late_events, "late records as in replay ({case})");
    // The malformed lines of the sample sit between envelopes: counted alike on every path.
    let malformed = sample::replay_malformed(&contoso);
    assert!(!malformed.is_empty());
    assert_eq!(stats.malformed, malformed, "malformed records by reason ({case})");
}

#[test]
fn a_backlog_on_one_partition_raises_what_replay_raises() {
    a_backlog_over(1, 1);
}

#[test]
fn a_backlog_round_robin_over_four_unkeyed_partitions_raises_what_replay_raises() {
    // librdkafka fetches a backlog partition by partition, days apart in event time.
    a_backlog_over(4, 1);
}

#[test]
fn a_backlog_round_robin_over_eight_unkeyed_partitions_raises_what_replay_raises() {
    a_backlog_over(8, 1);
}

#[test]
fn a_backlog_over_four_unkeyed_partitions_decoded_on_four_threads_raises_what_replay_raises() {
    // The decode threads hand the messages to the merge in fetch order: the same output.
    a_backlog_over(4, 4);
}

#[test]
fn a_backlog_over_eight_unkeyed_partitions_decoded_on_four_threads_raises_what_replay_raises() {
    a_backlog_over(8, 4);
}

/// Static membership (`kafka.instance_id`): an instance SIGKILLed mid-stream and restarted
/// under the same id gets its partition back at once, without waiting for the broker to
/// expire its dead former self (the session timeout, 45 s here, is longer than the whole
/// deadline below), resumes from its checkpoint, and the alert topic holds replay's alerts,
/// each once. The id comes from an environment variable, as in a Kubernetes StatefulSet.
#[test]
fn a_killed_instance_with_a_static_id_takes_its_partition_back_at_once() {
    let (topic, alerts_topic, group) = (unique("logs-static"), unique("alerts-static"), unique("g-static"));
    create_topic(&topic, 1);
    create_topic(&alerts_topic, 1);
    let (contoso, msgs) = contoso_messages();
    let half = msgs.len() / 2;
    produce(&topic, &msgs[..half]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("static.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             instance_id = \"exfilwatch-${{TEST_POD_NAME}}\"\n\
             [kafka.librdkafka_options]\n\"session.timeout.ms\" = \"45000\"\n\
             [sinks]\nstdout = false\nkafka_topic = \"{alerts_topic}\"\n\
             [service]\nmetrics_addr = \"127.0.0.1:0\"\nstate_store = \"{}\"\ncheckpoint_interval = \"1s\"\n",
            broker(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let start = || run_with_config(&cfg, &[("TEST_POD_NAME", "0")]);
    let mut svc = start();
    wait_for(Duration::from_secs(60), "the first half committed", || committed(&topic, &group) >= half as i64);
    svc.kill().unwrap();
    svc.wait().unwrap();

    produce(&topic, &msgs[half..]);
    let restarted = Instant::now();
    let svc = start();
    wait_for(
        Duration::from_secs(30),
        "the partition back and the rest committed, well within the session timeout",
        || committed(&topic, &group) >= msgs.len() as i64,
    );
    assert!(restarted.elapsed() < Duration::from_secs(45));
    terminate(svc);
    let expected = replay_alerts(&contoso);
    let got = kafka_client::read_all(&broker(), &alerts_topic);
    assert_eq!(got.len(), expected.len(), "none twice, none missing");
    assert_eq!(by_id(&got), expected);
}

/// A Tansu of this test's own, storing in SQLite under `dir` so that its topics and the
/// group's offsets survive a restart. Killed on drop.
struct OwnBroker {
    child: Child,
    addr: String,
    dir: std::path::PathBuf,
}

impl OwnBroker {
    fn start(dir: &Path, port: u16) -> OwnBroker {
        let bin = std::env::var("EXFILWATCH_TANSU_BIN")
            .expect("this test runs a broker of its own: run it with `make test` (scripts/with-tansu.sh names Tansu)");
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tansu.log")).unwrap();
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &format!("tcp://{addr}"), "--advertised-listener-url"])
            .arg(format!("tcp://{addr}"))
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(30), "the broker listening", || std::net::TcpStream::connect(&addr).is_ok());
        OwnBroker { child, addr, dir: dir.to_path_buf() }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        let port = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        *self = OwnBroker::start(&self.dir.clone(), port);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The broker stopped mid-stream and started again (the real broker, its data on disk): the
/// service retries while it is away, goes on where it was, and the alert topic holds
/// replay's alerts, each once; every message is committed, none skipped.
#[test]
fn the_broker_restarted_mid_stream_loses_nothing_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut broker = OwnBroker::start(dir.path(), port);
    let (topic, alerts_topic, group) = ("logs", "alerts", "exfilwatch");
    kafka_client::create_topic(&broker.addr, topic, 1);
    kafka_client::create_topic(&broker.addr, alerts_topic, 1);
    let (contoso, msgs) = contoso_messages();
    let half = msgs.len() / 2;
    kafka_client::produce(&broker.addr, topic, &msgs[..half]);
    let cfg = dir.path().join("svc.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             [kafka.librdkafka_options]\n\"reconnect.backoff.max.ms\" = \"500\"\n\
             [sinks]\nstdout = false\nkafka_topic = \"{alerts_topic}\"\n\
             [service]\nmetrics_addr = \"127.0.0.1:0\"\nstate_store = \"{}\"\ncheckpoint_interval = \"1s\"\n",
            broker.addr,
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let svc = run_with_config(&cfg, &[]);
    let committed = |b: &OwnBroker| kafka_client::committed(&b.addr, topic, 0, group);
    wait_for(Duration::from_secs(60), "the first half committed", || committed(&broker) >= half as i64);
    broker.restart();
    kafka_client::produce(&broker.addr, topic, &msgs[half..]);
    wait_for(Duration::from_secs(120), "everything committed after the restart", || {
        committed(&broker) >= msgs.len() as i64
    });
    terminate(svc);
    let expected = replay_alerts(&contoso);
    let got = kafka_client::read_all(&broker.addr, alerts_topic);
    assert_eq!(got.len(), expected.len(), "none twice, none missing");
    assert_eq!(by_id(&got), expected);
}
