//! Telemetry: the pipeline's counters, their Prometheus form, and typed events that log and
//! count together.
//!
//! The hot path only bumps plain integers in [`Stats`]; [`Metrics::publish`] moves the deltas
//! into Prometheus counters once per batch. Labels come from closed sets (categories, reason
//! codes, rules, severities), never from data.

use crate::alert::{Alert, Rule, Severity};
use crate::decode::{Category, Malformed};
use crate::detect::DetectorStats;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Totals of one run of the pipeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Records read, by category (request categories included).
    pub records: BTreeMap<Category, u64>,
    /// Records of categories the detector does not use.
    pub skipped: BTreeMap<Category, u64>,
    pub malformed: BTreeMap<Malformed, u64>,
    /// Request records outside `--since`/`--until`.
    pub out_of_range: u64,
    /// Bytes of log input read.
    pub input_bytes: u64,
    /// Data bytes the logged requests read from Cosmos DB (successful responses).
    pub response_bytes: u64,
    pub alerts: BTreeMap<(Rule, Severity), u64>,
    pub detector: DetectorStats,
}

impl Stats {
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }
    pub fn records_total(&self) -> u64 {
        self.records.values().sum::<u64>() + self.malformed_total()
    }
    pub fn count_alerts(&mut self, alerts: &[Alert]) {
        for a in alerts {
            *self.alerts.entry((a.rule, a.severity)).or_default() += 1;
        }
    }
}

/// A record set aside: counted always, logged once per reason with its location.
pub struct MalformedRecord<'a> {
    pub reason: Malformed,
    pub location: &'a str,
}

impl MalformedRecord<'_> {
    pub fn emit(&self, stats: &mut Stats) {
        let n = stats.malformed.entry(self.reason).or_default();
        *n += 1;
        if *n == 1 {
            tracing::warn!(
                message = "Malformed record set aside; further ones of this kind are only counted.",
                reason = self.reason.code(),
                location = self.location,
            );
        }
    }
}

/// What `/healthz` and `/readyz` report, shared between the service loop, the Kafka client's
/// callbacks and the HTTP endpoint. Ready means: connected to Kafka, state restored, and the
/// main loop making progress (no sink failing, a step within [`Health::STALL_AFTER`]).
#[derive(Debug)]
pub struct Health {
    started: std::time::Instant,
    kafka_down: AtomicBool,
    kafka_seen: AtomicBool,
    restored: AtomicBool,
    sink_failing: AtomicBool,
    /// Milliseconds since `started` of the main loop's last completed step.
    heartbeat_ms: AtomicU64,
    messages: AtomicU64,
    records: AtomicU64,
    alerts: AtomicU64,
    http_addr: std::sync::Mutex<Option<std::net::SocketAddr>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: std::time::Instant::now(),
            kafka_down: AtomicBool::new(false),
            kafka_seen: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            sink_failing: AtomicBool::new(false),
            heartbeat_ms: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            records: AtomicU64::new(0),
            alerts: AtomicU64::new(0),
            http_addr: std::sync::Mutex::new(None),
        }
    }
}

impl Health {
    /// A main loop that completed no step for this long is stalled.
    pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records the broker's reachability; logs once per change.
    pub fn set_kafka(&self, up: bool, reason: &str) {
        let first = !self.kafka_seen.swap(true, Ordering::Relaxed);
        let was_down = self.kafka_down.swap(!up, Ordering::Relaxed);
        if first && up {
            tracing::info!(message = "Kafka broker reachable.");
        } else if (first || !was_down) && !up {
            tracing::warn!(message = "Kafka broker unreachable; retrying with backoff.", reason);
        } else if was_down && up {
            tracing::info!(message = "Kafka broker reachable again.");
        }
    }

    /// The broker's reachability as last reported by the Kafka client; None before any report.
    pub fn kafka_reported(&self) -> Option<bool> {
        self.kafka_seen.load(Ordering::Relaxed).then(|| !self.kafka_down.load(Ordering::Relaxed))
    }

    pub fn kafka_up(&self) -> bool {
        self.kafka_seen.load(Ordering::Relaxed) && !self.kafka_down.load(Ordering::Relaxed)
    }

    pub fn set_restored(&self) {
        self.restored.store(true, Ordering::Relaxed);
    }

    pub fn set_sink_failing(&self, failing: bool) {
        self.sink_failing.store(failing, Ordering::Relaxed);
    }

    /// The main loop completed a step.
    pub fn beat(&self) {
        self.heartbeat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Totals processed so far (messages fully handled, records decoded, alerts delivered).
    pub fn progress(&self, messages: u64, records: u64, alerts: u64) {
        self.messages.store(messages, Ordering::Relaxed);
        self.records.store(records, Ordering::Relaxed);
        self.alerts.store(alerts, Ordering::Relaxed);
        self.beat();
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
    pub fn alerts(&self) -> u64 {
        self.alerts.load(Ordering::Relaxed)
    }

    pub fn set_http_addr(&self, addr: std::net::SocketAddr) {
        if let Ok(mut a) = self.http_addr.lock() {
            *a = Some(addr);
        }
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, once bound.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr.lock().ok().and_then(|a| *a)
    }

    /// `Ok(())` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.restored.load(Ordering::Relaxed) {
            return Err("state not restored yet".into());
        }
        if !self.kafka_up() {
            return Err("Kafka broker not reachable".into());
        }
        if self.sink_failing.load(Ordering::Relaxed) {
            return Err("an alert sink is failing (alerts and offsets held back)".into());
        }
        let idle = self.now_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed));
        if idle > Self::STALL_AFTER.as_millis() as u64 {
            return Err(format!("stalled: main loop made no progress for {} s", idle / 1000));
        }
        Ok(())
    }
}

/// The Prometheus side of [`Stats`].
pub struct Metrics {
    pub registry: Registry,
    records: IntCounterVec,
    skipped: IntCounterVec,
    malformed: IntCounterVec,
    late: IntCounter,
    input_bytes: IntCounter,
    response_bytes: IntCounter,
    alerts: IntCounterVec,
    keys: IntGauge,
    origins: IntGauge,
    evictions: IntCounter,
    published: Stats,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Metrics {
            records: vec("exfilwatch_records_read_total", "Log records read, by category.", &["category"])?,
            skipped: vec(
                "exfilwatch_records_skipped_total",
                "Records of categories the detector does not use.",
                &["category"],
            )?,
            malformed: vec(
                "exfilwatch_records_malformed_total",
                "Records set aside as malformed, by reason.",
                &["reason"],
            )?,
            late: counter(
                "exfilwatch_records_late_total",
                "Records older than max_out_of_order behind their account.",
            )?,
            input_bytes: counter("exfilwatch_log_input_bytes_total", "Bytes of log input read.")?,
            response_bytes: counter(
                "exfilwatch_read_response_bytes_total",
                "Bytes the logged requests read from Cosmos DB.",
            )?,
            alerts: vec("exfilwatch_alerts_total", "Alerts raised, by rule and severity.", &["rule", "severity"])?,
            keys: gauge("exfilwatch_keys_tracked", "Baseline keys (account, credential) in state.")?,
            origins: gauge("exfilwatch_key_origins_tracked", "(key, origin) pairs in state.")?,
            evictions: counter("exfilwatch_origin_evictions_total", "Origins evicted by max_origins_per_key.")?,
            registry,
            published: Stats::default(),
        })
    }

    /// Moves what changed since the last call into the Prometheus counters.
    pub fn publish(&mut self, s: &Stats) {
        let p = &self.published;
        for (c, n) in &s.records {
            self.records.with_label_values(&[c.as_str()]).inc_by(n - p.records.get(c).copied().unwrap_or(0));
        }
        for (c, n) in &s.skipped {
            self.skipped.with_label_values(&[c.as_str()]).inc_by(n - p.skipped.get(c).copied().unwrap_or(0));
        }
        for (r, n) in &s.malformed {
            self.malformed.with_label_values(&[r.code()]).inc_by(n - p.malformed.get(r).copied().unwrap_or(0));
        }
        for ((rule, sev), n) in &s.alerts {
            self.alerts
                .with_label_values(&[rule.as_str(), sev.as_str()])
                .inc_by(n - p.alerts.get(&(*rule, *sev)).copied().unwrap_or(0));
        }
        self.late.inc_by(s.detector.late_events - p.detector.late_events);
        self.input_bytes.inc_by(s.input_bytes - p.input_bytes);
        self.response_bytes.inc_by(s.response_bytes - p.response_bytes);
        self.evictions.inc_by(s.detector.origins_evicted - p.detector.origins_evicted);
        self.keys.set(s.detector.keys_tracked as i64);
        self.origins.set(s.detector.origins_tracked as i64);
        self.published = s.clone();
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_moves_deltas() {
        let mut m = Metrics::new().unwrap();
        let mut s = Stats::default();
        *s.records.entry(Category::DataPlaneRequests).or_default() += 5;
        *s.malformed.entry(Malformed::BadIp).or_default() += 1;
        m.publish(&s);
        *s.records.entry(Category::DataPlaneRequests).or_default() += 2;
        m.publish(&s);
        let text = m.render();
        assert!(text.contains("exfilwatch_records_read_total{category=\"DataPlaneRequests\"} 7"), "{text}");
        assert!(text.contains("exfilwatch_records_malformed_total{reason=\"bad_ip\"} 1"), "{text}");
    }
}
