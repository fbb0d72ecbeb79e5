//! A sink that goes away or slows down, under `exfilwatch run` against the real broker (Tansu,
//! started by `scripts/with-tansu.sh`, which `make test` uses) and a real HTTP endpoint on
//! loopback. Every wait polls an observable condition (the service's `/metrics`, what the
//! endpoint received, a committed offset) against a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;
use sample::{by_id, replay_alerts, unique};

fn broker() -> String {
    std::env::var("EXFILWATCH_TEST_KAFKA")
        .expect("these tests need a broker: run them with `make test` (scripts/with-tansu.sh starts Tansu)")
}

/// Alerts an endpoint answered 200, in order: (id, body).
type Accepted = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook endpoint on loopback (HTTP/1.1, keep-alive). While `down` it answers every POST
/// 503; otherwise it waits `delay_ms`, answers 200 and records the alert.
struct Endpoint {
    addr: SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    /// Alerts answered 200, in order (id, body).
    accepted: Accepted,
    /// Requests answered 503.
    refused: Arc<AtomicU64>,
}

impl Endpoint {
    fn start(down: bool, delay_ms: u64) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Endpoint {
            addr: listener.local_addr().unwrap(),
            down: Arc::new(down.into()),
            delay_ms: Arc::new(delay_ms.into()),
            accepted: Arc::default(),
            refused: Arc::default(),
        };
        let (down, delay, accepted, refused) =
            (e.down.clone(), e.delay_ms.clone(), e.accepted.clone(), e.refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (down, delay, accepted, refused) = (down.clone(), delay.clone(), accepted.clone(), refused.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &down, &delay, &accepted, &refused);
                });
            }
        });
        e
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn accepted_ids(&self) -> Vec<String> {
        self.accepted.lock().unwrap().iter().map(|(id, _)| id.clone()).collect()
    }
}

fn serve(
    stream: TcpStream,
    down: &std::sync::atomic::AtomicBool,
    delay: &AtomicU64,
    accepted: &Mutex<Vec<(String, Vec<u8>)>>,
    refused: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut len, mut id) = (0usize, String::new());
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "x-exfilwatch-alert-id" => id = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let status = if down.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            "503 Service Unavailable"
        } else {
            std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
            accepted.lock().unwrap().push((id, body));
            "200 OK"
        };
        write!(out, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n")?;
    }
}

/// gen-logs' planted thefts among ordinary traffic, in envelopes of 20 records, produced to a
/// new one-partition topic; returns (the topic, messages, replay's alerts of the same file).
fn thefts(dir: &Path, records: u32, keys: u32, thefts: u32) -> (String, usize, BTreeMap<String, serde_json::Value>) {
    let logs = dir.join("thefts.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_gen-logs"))
        .args(["bench", "--records", &records.to_string(), "--keys", &keys.to_string()])
        .args(["--origins-per-key", "3", "--thefts", &thefts.to_string(), "--out"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = replay_alerts(logs.to_str().unwrap());
    let msgs = sample::file_envelopes(&logs, 20);
    let topic = unique("outage");
    kafka_client::create_topic(&broker(), &topic, 1);
    kafka_client::produce(&broker(), &topic, &msgs);
    (topic, msgs.len(), expected)
}

/// `exfilwatch run` with its log on `log`; `extra` goes at the end of the configuration.
fn start(dir: &Path, topic: &str, group: &str, metrics: SocketAddr, extra: &str, log: &Path) -> Child {
    let cfg = dir.join(format!("{group}.toml"));
    let state = dir.join("state");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             [kafka.librdkafka_options]\n\
             \"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\"max.poll.interval.ms\" = \"10000\"\n\
             [service]\nmetrics_addr = \"{metrics}\"\nstate_store = \"{}\"\ncheckpoint_interval = \"1s\"\n{extra}",
            broker(),
            state.display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// One sample of the service's `/metrics` (unlabelled series and the sum over labels).
fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let name = series.split('{').next().unwrap_or(series).to_string();
        *out.entry(name).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Some(out)
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    scrape(addr).and_then(|m| m.get(name).copied()).unwrap_or(-1.0)
}

fn readyz(addr: SocketAddr) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return 0 };
    let _ = write!(s, "GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn wait_for(child: &mut Child, within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        assert!(child.try_wait().unwrap().is_none(), "exfilwatch run exited while waiting for {what}");
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn terminate(mut child: Child) {
    sample::sigterm(&mut child);
    let end = Instant::now() + Duration::from_secs(40);
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exfilwatch run exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("exfilwatch run did not stop within 40 s of SIGTERM");
}

fn count_each(ids: &[String]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for id in ids {
        *n.entry(id.clone()).or_insert(0) += 1;
    }
    n
}

/// The webhook is down (503) from the start, for three of the consumer's poll intervals
/// (`max.poll.interval.ms`, 5 minutes by default, is 10 s here, so the outage is the same as
/// 15 minutes at the default). Meanwhile:
/// - the alert topic, the other sink, gets the alerts raised before the bound;
/// - `sinks.max_pending_alerts` (2) alerts wait, then consumption stops: no record is handled
///   for the rest of the outage and the committed offset stays behind the end; `/readyz`
///   answers 503 and the back-pressure gauge is 1;
/// - the instance keeps its partition: it is assigned once and never exceeds the poll
///   interval (librdkafka would log it and leave the group).
///
/// When the webhook is back, every alert reaches it exactly once (replay's alerts, same ids),
/// the rest of the topic is consumed, and the alert topic holds each alert once.
#[test]
fn a_sink_down_for_minutes_holds_alerts_then_stops_consumption_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, total, expected) = thefts(dir.path(), 40_000, 30, 6);
    assert!(expected.len() > 3, "more alerts than may wait: {}", expected.len());
    let alerts_topic = unique("outage-alerts");
    kafka_client::create_topic(&broker(), &alerts_topic, 1);
    let hook = Endpoint::start(true, 0);
    let metrics = free_port();
    let log = dir.path().join("run.log");
    let group = unique("outage-g");
    let extra = format!(
        "[sinks]\nstdout = false\nkafka_topic = \"{alerts_topic}\"\nwebhook_url = \"{}\"\nwebhook_timeout = \"2s\"\n\
         max_pending_alerts = 2\n",
        hook.url()
    );
    let mut child = start(dir.path(), &topic, &group, metrics, &extra, &log);

    wait_for(&mut child, Duration::from_secs(60), "back-pressure", || {
        metric(metrics, "exfilwatch_backpressure") == 1.0
    });
    let events =
        |m: &BTreeMap<String, f64>| m.get("exfilwatch_record_processing_seconds_count").copied().unwrap_or(-1.0);
    let held = scrape(metrics).unwrap();
    let outage = Instant::now();
    let mut samples = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        assert!(child.try_wait().unwrap().is_none(), "exfilwatch run exited during the outage");
        let m = scrape(metrics).expect("/metrics answers during the outage");
        assert_eq!(m.get("exfilwatch_backpressure"), Some(&1.0), "back-pressure holds while the sink is down");
        assert_eq!(events(&m), events(&held), "no record is handled while alerts wait at the bound");
        let pending = m.get("exfilwatch_sink_pending_alerts").copied().unwrap_or(0.0);
        assert!((2.0..=expected.len() as f64).contains(&pending), "2 or a few more alerts wait: {pending}");
        assert_eq!(readyz(metrics), 503, "not ready while a sink fails");
        samples += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(samples >= 20);
    assert!(hook.accepted_ids().is_empty());
    assert!(hook.refused.load(Ordering::SeqCst) >= 3, "the webhook was retried");
    let committed = kafka_client::committed(&broker(), &topic, 0, &group);
    assert!(committed < total as i64, "offsets stay behind the waiting alerts: {committed} of {total}");
    let on_topic = kafka_client::read_all(&broker(), &alerts_topic);
    assert!(
        (2..expected.len()).contains(&on_topic.len()),
        "the other sink got the alerts raised before the bound: {}",
        on_topic.len()
    );

    hook.down.store(false, Ordering::SeqCst);
    wait_for(&mut child, Duration::from_secs(120), "every alert at the webhook and the topic consumed", || {
        hook.accepted_ids().len() >= expected.len()
            && kafka_client::committed(&broker(), &topic, 0, &group) >= total as i64
    });
    wait_for(&mut child, Duration::from_secs(10), "ready again", || readyz(metrics) == 200);
    let m = scrape(metrics).unwrap();
    assert_eq!(m.get("exfilwatch_backpressure"), Some(&0.0));
    assert_eq!(m.get("exfilwatch_sink_pending_alerts"), Some(&0.0));
    assert!(m.get("exfilwatch_backpressure_spells_total").is_some_and(|n| *n >= 1.0));
    terminate(child);

    let got = count_each(&hook.accepted_ids());
    assert!(got.values().all(|n| *n == 1), "each alert once: {got:?}");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), expected.keys().cloned().collect::<Vec<_>>());
    for (id, body) in hook.accepted.lock().unwrap().iter() {
        let alert: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(alert, expected[id], "the webhook got replay's alert {id}");
    }
    let topic_alerts = kafka_client::read_all(&broker(), &alerts_topic);
    assert_eq!(topic_alerts.len(), expected.len(), "each alert once on the topic");
    assert_eq!(by_id(&topic_alerts), expected);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("Partitions assigned.").count(), 1, "the partition never left:\n{text}");
    assert!(!text.contains("maximum poll interval"), "the poll interval was kept:\n{text}");
}

/// A webhook that takes 300 ms per alert, with many alerts: the service goes at the sink's
/// pace without piling alerts up (never more than `sinks.max_pending_alerts` wait) and its
/// peak memory stays far below the topic's size; every alert arrives once, in replay's order.
#[test]
fn a_slow_sink_paces_the_service_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, total, expected) = thefts(dir.path(), 120_000, 60, 40);
    assert!(expected.len() >= 20, "many alerts: {}", expected.len());
    let hook = Endpoint::start(false, 300);
    let metrics = free_port();
    let log = dir.path().join("run.log");
    let group = unique("slow-g");
    let extra = format!(
        "[sinks]\nstdout = false\nwebhook_url = \"{}\"\nwebhook_timeout = \"5s\"\nmax_pending_alerts = 5\n",
        hook.url()
    );
    let mut child = start(dir.path(), &topic, &group, metrics, &extra, &log);
    let pid = child.id();
    let mut most_pending = 0.0f64;
    wait_for(&mut child, Duration::from_secs(180), "every alert at the webhook", || {
        if let Some(p) = scrape(metrics).and_then(|m| m.get("exfilwatch_sink_pending_alerts").copied()) {
            most_pending = most_pending.max(p);
        }
        hook.accepted_ids().len() >= expected.len()
            && kafka_client::committed(&broker(), &topic, 0, &group) >= total as i64
    });
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    terminate(child);
    assert!(most_pending <= 5.0, "alerts did not pile up: at most {most_pending} waited");
    // The aligner's buffer (32 MiB) plus the detector's state and the client's queues.
    let topic_bytes: u64 = std::fs::metadata(dir.path().join("thefts.jsonl")).unwrap().len();
    assert!(peak_kib < 256 << 10, "peak RSS {peak_kib} KiB stays bounded (the topic holds {topic_bytes} bytes)");
    let ids = hook.accepted_ids();
    assert!(count_each(&ids).values().all(|n| *n == 1), "each alert once");
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(id, a)| (a["trigger_event_time"].as_str().unwrap_or("").to_string(), id.clone()))
        .collect();
    want.sort();
    let mut got: Vec<(String, String)> = ids
        .iter()
        .map(|id| (expected[id]["trigger_event_time"].as_str().unwrap_or("").to_string(), id.clone()))
        .collect();
    got.sort();
    assert_eq!(got, want, "replay's alerts");
}
