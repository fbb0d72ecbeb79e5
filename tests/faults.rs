//! `exfilwatch run` under faults the real broker cannot produce on cue, with librdkafka's mock
//! cluster (`rdkafka::mocking`, a Kafka-protocol cluster inside this process on a loopback
//! port): broker down at start, broker down mid-stream, request errors; and a webhook sink
//! that fails for a while, then recovers. The service runs in-process (`service::run_with`),
//! so the tests watch its health and progress directly and query `/readyz` over HTTP. Every
//! wait polls an observable condition against a deadline.

use exfilwatch::config::Config;
use exfilwatch::telemetry::Health;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/script_server.rs"]
mod script_server;
use kafka_client::{committed, read_until};
use sample::{by_id, contoso_envelopes, replay_alerts, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

/// `exfilwatch run` in a background runtime.
struct Service {
    health: Arc<Health>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<exfilwatch::telemetry::Stats, String>>>,
}

impl Service {
    fn start(cfg: Config) -> Service {
        // The service's logs, shown for a failing test (`RUST_LOG` to change the level).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
            .with_test_writer()
            .try_init();
        let health = Arc::new(Health::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = health.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(exfilwatch::service::run_with(cfg, h, async {
                let _ = rx.await;
            }))
            .map_err(|e| e.to_string())
        });
        let s = Service { health, stop: Some(tx), thread: Some(thread) };
        wait_for(DEADLINE, "the metrics endpoint", || s.health.http_addr().is_some());
        s
    }

    /// Processed messages; panics with the service's error if it stopped by itself.
    fn messages(&mut self) -> u64 {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let r = self.thread.take().unwrap().join().unwrap();
            panic!("the service stopped by itself: {:?}", r.map(|_| ()));
        }
        self.health.messages()
    }

    /// `/readyz` over HTTP: (status code, body).
    fn readyz(&self) -> (u16, String) {
        let Some(addr) = self.health.http_addr() else { return (0, String::new()) };
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }

    /// SIGTERM's path: stop, drain, commit; the run's counters.
    fn stop(mut self) -> exfilwatch::telemetry::Stats {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.thread.take().unwrap().join().unwrap().expect("the service stops cleanly")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn config(bootstrap: &str, topic: &str, group: &str, alerts_file: &Path, extra: &str) -> Config {
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
         [kafka.librdkafka_options]\n\"auto.commit.interval.ms\" = \"200\"\n\"reconnect.backoff.max.ms\" = \"500\"\n\
         [sinks]\nstdout = false\nfile = \"{}\"\n{extra}\n\
         [service]\nmetrics_addr = \"127.0.0.1:0\"\n",
        alerts_file.display()
    );
    Config::from_toml(&text, "test").unwrap()
}

fn file_alerts(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| l.as_bytes().to_vec()).collect()
}

struct Setup {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    bootstrap: String,
    msgs: Vec<(String, Vec<u8>)>,
    expected: BTreeMap<String, serde_json::Value>,
    /// Records in the messages (valid or not).
    records: u64,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("logs", 1, 1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        // Envelopes of 20, lz4-compressed: the mock cluster keeps only 5 MB per partition.
        let (contoso, msgs) = contoso_envelopes(20);
        let records = sample::contoso_messages().1.len() as u64;
        let expected = replay_alerts(&contoso);
        assert!(!expected.is_empty());
        Setup { cluster, bootstrap, msgs, expected, records, dir: tempfile::tempdir().unwrap() }
    }

    fn alerts_file(&self) -> PathBuf {
        self.dir.path().join("alerts.jsonl")
    }

    fn produce(&self, msgs: &[(String, Vec<u8>)]) {
        kafka_client::produce_compressed(&self.bootstrap, "logs", msgs, "lz4")
    }

    fn committed(&self) -> i64 {
        committed(&self.bootstrap, "logs", 0, "exfilwatch")
    }
}

#[test]
fn broker_down_at_start_then_up_loses_nothing() {
    let s = Setup::new();
    s.produce(&s.msgs);
    s.cluster.broker_down(-1).unwrap();
    let mut svc = Service::start(config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), ""));
    let (code, body) = svc.readyz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("Kafka"), "{body}");
    // The client's own report that the broker is unreachable (not just "not seen yet").
    wait_for(DEADLINE, "the service to notice the broker is down", || svc.health.kafka_reported() == Some(false));
    let (code, body) = svc.readyz();
    assert_eq!(code, 503, "{body}");
    assert_eq!(svc.health.messages(), 0);

    s.cluster.broker_up(-1).unwrap();
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "ready", || svc.readyz().0 == 200);
    let stats = svc.stop();
    assert_eq!(stats.records_total(), s.records, "every record read once");
    let got = file_alerts(&s.alerts_file());
    assert_eq!(got.len(), s.expected.len(), "no alert twice");
    assert_eq!(by_id(&got), s.expected);
    assert_eq!(s.committed(), s.msgs.len() as i64, "everything processed is committed");
}

#[test]
fn broker_down_mid_stream_resumes_without_loss_or_repeat() {
    let s = Setup::new();
    let half = s.msgs.len() / 2;
    s.produce(&s.msgs[..half]);
    let mut svc = Service::start(config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), ""));
    wait_for(DEADLINE, "the first half", || svc.health.messages() == half as u64);
    wait_for(DEADLINE, "ready", || svc.readyz().0 == 200);

    s.cluster.broker_down(-1).unwrap();
    wait_for(DEADLINE, "not ready while the broker is down", || {
        let (code, body) = svc.readyz();
        code == 503 && body.contains("Kafka")
    });
    // Produce the rest while the broker is down (the producer buffers), then bring it back.
    let (bootstrap, rest) = (s.bootstrap.clone(), s.msgs[half..].to_vec());
    let producer = std::thread::spawn(move || kafka_client::produce_compressed(&bootstrap, "logs", &rest, "lz4"));
    assert_eq!(svc.health.messages(), half as u64, "nothing to read while the broker is down");
    s.cluster.broker_up(-1).unwrap();
    producer.join().unwrap();
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "ready again", || svc.readyz().0 == 200);
    svc.stop();
    let got = file_alerts(&s.alerts_file());
    assert_eq!(got.len(), s.expected.len(), "no alert twice");
    assert_eq!(by_id(&got), s.expected);
    assert_eq!(s.committed(), s.msgs.len() as i64);
}

#[test]
fn request_errors_on_fetch_commit_and_produce_are_retried() {
    let s = Setup::new();
    s.produce(&s.msgs);
    use RDKafkaRespErr::*;
    s.cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    s.cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE],
    );
    s.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT],
    );
    let cfg = config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), "kafka_topic = \"alerts\"");
    let mut svc = Service::start(cfg);
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    // Auto-commits (every 200 ms here) are retried past the injected errors.
    wait_for(DEADLINE, "the commit of everything", || s.committed() == s.msgs.len() as i64);
    svc.stop();
    let topic = read_until(&s.bootstrap, "alerts", DEADLINE, |m| m.len() >= s.expected.len());
    assert_eq!(topic.len(), s.expected.len(), "each alert once on the alert topic");
    assert_eq!(by_id(&topic), s.expected);
    assert_eq!(by_id(&file_alerts(&s.alerts_file())), s.expected);
}

#[test]
fn failing_webhook_holds_offsets_back_then_delivers_each_alert_once() {
    use script_server::{Reply, Server};
    let s = Setup::new();
    s.produce(&s.msgs);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(Server::start(vec![Reply::Fail; 6]));
    let extra = format!("webhook_url = \"{}\"\nwebhook_timeout = \"2s\"", server.url());
    let mut svc = Service::start(config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), &extra));

    // While the webhook fails, the service is not ready and the message whose records raised
    // the alert is not committed.
    wait_for(DEADLINE, "the webhook's failures", || server.requests().len() >= 3);
    let (code, body) = svc.readyz();
    assert_eq!(code, 503);
    assert!(body.contains("sink"), "{body}");
    let held_at = svc.health.messages();
    assert!(held_at < s.msgs.len() as u64, "the loop waits for the sink");
    assert!(s.committed() < held_at as i64, "offsets held back while the sink fails");

    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "ready again", || svc.readyz().0 == 200);
    svc.stop();
    let accepted: Vec<Vec<u8>> =
        server.requests().into_iter().filter(|r| r.answered == Some(200)).map(|r| r.body).collect();
    assert_eq!(accepted.len(), s.expected.len(), "each alert accepted exactly once");
    assert_eq!(by_id(&accepted), s.expected);
    assert_eq!(s.committed(), s.msgs.len() as i64);
}
