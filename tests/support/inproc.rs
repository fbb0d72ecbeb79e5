//! `exfilwatch run` in-process (`service::run_with`) against librdkafka's mock cluster, for
//! tests that watch its health and progress directly and query `/readyz` over HTTP.
#![allow(dead_code)]

use crate::kafka_client;
use crate::sample::{self, contoso_envelopes, replay_alerts, wait_for};
use exfilwatch::config::Config;
use exfilwatch::telemetry::Health;
use rdkafka::mocking::MockCluster;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEADLINE: Duration = Duration::from_secs(60);

/// `exfilwatch run` in a background runtime.
pub struct Service {
    pub health: Arc<Health>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<exfilwatch::telemetry::Stats, String>>>,
}

impl Service {
    pub fn start(cfg: Config) -> Service {
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
    pub fn messages(&mut self) -> u64 {
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let r = self.thread.take().unwrap().join().unwrap();
            panic!("the service stopped by itself: {:?}", r.map(|_| ()));
        }
        self.health.messages()
    }

    /// `/readyz` over HTTP: (status code, body).
    pub fn readyz(&self) -> (u16, String) {
        let Some(addr) = self.health.http_addr() else { return (0, String::new()) };
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }

    /// SIGTERM's path: stop, drain, commit; the run's counters.
    pub fn stop(mut self) -> exfilwatch::telemetry::Stats {
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

pub fn config(bootstrap: &str, topic: &str, group: &str, alerts_file: &Path, extra: &str) -> Config {
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
         [kafka.librdkafka_options]\n\"auto.commit.interval.ms\" = \"200\"\n\"reconnect.backoff.max.ms\" = \"500\"\n\
         [sinks]\nstdout = false\nfile = \"{}\"\n{extra}\n\
         [service]\nmetrics_addr = \"127.0.0.1:0\"\nstate_store = \"\"\n",
        alerts_file.display()
    );
    Config::from_toml(&text, "test").unwrap()
}

pub fn file_alerts(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| l.as_bytes().to_vec()).collect()
}

pub struct Setup {
    /// librdkafka's mock cluster ([`Setup::new`]), or None on the real broker ([`Setup::real`]).
    pub cluster: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    pub bootstrap: String,
    /// The log topic (one partition), the alert topic and the consumer group.
    pub logs: String,
    pub alerts: String,
    pub group: String,
    pub msgs: Vec<(String, Vec<u8>)>,
    pub expected: BTreeMap<String, serde_json::Value>,
    /// Records in the messages (valid or not).
    pub records: u64,
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// On librdkafka's mock cluster (brokers that can fail on cue).
    pub fn new() -> Setup {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("logs", 1, 1).unwrap();
        cluster.create_topic("alerts", 1, 1).unwrap();
        let bootstrap = cluster.bootstrap_servers();
        Setup::with(Some(cluster), bootstrap, "logs".into(), "alerts".into(), "exfilwatch".into())
    }

    /// On the real broker (`EXFILWATCH_TEST_KAFKA`, started by `make test`), fresh topics.
    pub fn real() -> Setup {
        let bootstrap = std::env::var("EXFILWATCH_TEST_KAFKA")
            .expect("this test needs a broker: run it with `make test` (scripts/with-tansu.sh starts Tansu)");
        let (logs, alerts, group) = (sample::unique("logs"), sample::unique("alerts"), sample::unique("g"));
        kafka_client::create_topic(&bootstrap, &logs, 1);
        kafka_client::create_topic(&bootstrap, &alerts, 1);
        Setup::with(None, bootstrap, logs, alerts, group)
    }

    fn with(
        cluster: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
        bootstrap: String,
        logs: String,
        alerts: String,
        group: String,
    ) -> Setup {
        // Envelopes of 20 (lz4-compressed on the mock cluster: it keeps only 5 MB per partition).
        let (contoso, msgs) = contoso_envelopes(20);
        let records = sample::contoso_messages().1.len() as u64;
        let expected = replay_alerts(&contoso);
        assert!(!expected.is_empty());
        Setup { cluster, bootstrap, logs, alerts, group, msgs, expected, records, dir: tempfile::tempdir().unwrap() }
    }

    /// The mock cluster (panics on the real broker).
    pub fn mock(&self) -> &MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        self.cluster.as_ref().expect("a mock-cluster setup")
    }

    /// The service's configuration for this setup (see [`config`]).
    pub fn config(&self, extra: &str) -> Config {
        config(&self.bootstrap, &self.logs, &self.group, &self.alerts_file(), extra)
    }

    pub fn alerts_file(&self) -> PathBuf {
        self.dir.path().join("alerts.jsonl")
    }

    pub fn produce(&self, msgs: &[(String, Vec<u8>)]) {
        let compression = if self.cluster.is_some() { "lz4" } else { "none" };
        kafka_client::produce_compressed(&self.bootstrap, &self.logs, msgs, compression)
    }

    pub fn committed(&self) -> i64 {
        kafka_client::committed(&self.bootstrap, &self.logs, 0, &self.group)
    }
}
