//! `exfilwatch run` against a real Kafka-compatible broker (Tansu, started by
//! `scripts/with-tansu.sh`, which `make test` uses; the address comes in EXFILWATCH_TEST_KAFKA).
//! Every wait here polls an observable condition (a topic's content, a committed offset, a
//! process exit) against a deadline; nothing sleeps and hopes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn start_service(dir: &Path, topic: &str, group: &str, alerts: &str, state: Option<&Path>) -> Child {
    let cfg = dir.join(format!("{group}.toml"));
    let state = state.map_or(String::new(), |p| p.display().to_string());
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             [sinks]\nstdout = false\nkafka_topic = \"{alerts}\"\n\
             [service]\nstate_file = \"{state}\"\nmetrics_addr = \"127.0.0.1:0\"\n",
            broker()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
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
                let mut env = b"{\"records\": [".to_vec();
                env.extend(chunk.join(&b","[..]));
                env.extend(b"]}");
                msgs.push(("contoso".into(), env));
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
    let got = read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= golden.len());
    terminate(svc);
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
    let got = read_until(&alerts_topic, Duration::from_secs(120), |m| m.len() >= expected.len());
    terminate(svc);
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
    let state = dir.path().join("state.json");
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, Some(&state));
    wait_for(Duration::from_secs(60), "the first part to be committed", || {
        committed(&topic, &group) >= half as i64 - 1
    });
    terminate(svc);
    assert_eq!(committed(&topic, &group), half as i64, "SIGTERM commits exactly what was processed");
    assert!(state.exists());

    produce(&topic, &msgs[half..]);
    let svc = start_service(dir.path(), &topic, &group, &alerts_topic, Some(&state));
    let expected = replay_alerts(&contoso);
    wait_for(Duration::from_secs(60), "the rest to be committed", || {
        committed(&topic, &group) >= msgs.len() as i64 - 1
    });
    let got = read_until(&alerts_topic, Duration::from_secs(60), |m| m.len() >= expected.len());
    terminate(svc);
    // Every alert exactly once, the same as one uninterrupted replay.
    assert_eq!(got.len(), expected.len(), "no alert twice");
    assert_eq!(by_id(&got), expected);
}
