//! Telemetry: the pipeline's counters, their Prometheus form, and typed events that log and
//! count together.
//!
//! The hot path only bumps plain integers in [`Stats`] (no atomics, no locks), and the events
//! that matter are typed structs whose `emit` logs and counts together ([`MalformedRecord`],
//! [`BatchProcessed`], [`AlertsDelivered`], [`SinkFailed`], [`DeadLettered`]), emitted once
//! per message or batch. [`Metrics::publish`] moves what changed into the Prometheus registry
//! once per tick (100 ms in `run`). The few things measured outside the hot path (checkpoints,
//! Kafka consumer lag from librdkafka's statistics, readiness) go to the registry directly.
//!
//! Names follow `exfilwatch_<name>_<unit>[_total]`. Labels come from closed sets (categories,
//! reason codes, rules, severities, sink kinds, and the configured topics' partitions), never
//! from data: no IP, account or credential is ever a label.

use crate::alert::{Alert, Rule, Severity};
use crate::decode::{Category, Malformed};
use crate::detect::DetectorStats;
use prometheus::core::{Collector, Desc};
use prometheus::{proto, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Totals of one run of the pipeline.
#[derive(Clone, Debug, PartialEq)]
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
    /// Lines of a verdicts file that are not verdicts (set aside).
    pub verdicts_malformed: u64,
    /// Per alert sink: alerts accepted, failed attempts, retries.
    pub sinks: BTreeMap<SinkKind, SinkCounts>,
    /// Malformed records written to the dead-letter file or topic.
    pub dead_letters: u64,
    /// Processing time per record (decode and detect), in seconds: each message (or batch of
    /// units in replay) is timed once and counted as `records` observations of its average.
    pub processing: Histo,
    /// Event time of a message's newest record to the moment it was processed, in seconds (one
    /// observation per message; `run` only: in a replay it is the archive's age).
    pub lag: Histo,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            records: BTreeMap::new(),
            skipped: BTreeMap::new(),
            malformed: BTreeMap::new(),
            out_of_range: 0,
            input_bytes: 0,
            response_bytes: 0,
            alerts: BTreeMap::new(),
            detector: DetectorStats::default(),
            sinks: BTreeMap::new(),
            dead_letters: 0,
            verdicts_malformed: 0,
            processing: Histo::new(PROCESSING_BUCKETS),
            lag: Histo::new(LAG_BUCKETS),
        }
    }
}

/// Buckets (seconds) of the per-record processing time.
pub const PROCESSING_BUCKETS: &[f64] =
    &[1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0];
/// Buckets (seconds) of the end-to-end lag, from event time to processing.
pub const LAG_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];
/// Buckets (seconds) of the checkpoint write time.
pub const CHECKPOINT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A histogram in plain integers, for the hot path: observed per batch, published per tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Histo {
    bounds: &'static [f64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; the last one above every bound.
    counts: Vec<u64>,
    sum: f64,
}

impl Histo {
    pub fn new(bounds: &'static [f64]) -> Histo {
        Histo { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }

    /// `n` observations of `value`.
    pub fn observe_n(&mut self, value: f64, n: u64) {
        if n == 0 || value.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += n;
        self.sum += value * n as f64;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Prometheus' form: cumulative buckets (`+Inf` is the count).
    fn proto(&self) -> proto::Histogram {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        h.set_sample_count(self.count());
        h.set_sample_sum(self.sum);
        h
    }
}

/// The kinds of alert sink: the `sink` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SinkKind {
    Stdout,
    File,
    Kafka,
    Webhook,
    Alertmanager,
}

impl SinkKind {
    pub const ALL: [SinkKind; 5] =
        [SinkKind::Stdout, SinkKind::File, SinkKind::Kafka, SinkKind::Webhook, SinkKind::Alertmanager];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Kafka => "kafka",
            SinkKind::Webhook => "webhook",
            SinkKind::Alertmanager => "alertmanager",
        }
    }
}

/// What one alert sink did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Alerts the sink accepted.
    pub delivered: u64,
    /// Failed delivery (or re-send) attempts.
    pub failures: u64,
    /// Attempts repeated after a failure.
    pub retries: u64,
    /// Alerts the sink refused for good (set aside on the dead-letter topic, not retried).
    pub rejected: u64,
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

/// The records of one message (or one batch of units in replay) went through decode and
/// detect. Measured once per batch: `elapsed / records` is observed `records` times, so the
/// hot path reads the clock once per batch, never per record.
pub struct BatchProcessed {
    pub records: u64,
    pub elapsed: Duration,
    /// Wall time minus the event time of the batch's newest record, when known (`run`).
    pub lag: Option<Duration>,
}

impl BatchProcessed {
    pub fn emit(&self, stats: &mut Stats) {
        if self.records > 0 {
            let per_record = self.elapsed.as_secs_f64() / self.records as f64;
            stats.processing.observe_n(per_record, self.records);
        }
        if let Some(lag) = self.lag {
            stats.lag.observe_n(lag.as_secs_f64(), 1);
        }
        tracing::trace!(
            message = "Batch processed.",
            records = self.records,
            elapsed_us = self.elapsed.as_micros() as u64,
            lag_ms = self.lag.map(|l| l.as_millis() as u64),
        );
    }
}

/// An alert sink accepted a batch of alerts.
pub struct AlertsDelivered {
    pub sink: SinkKind,
    pub alerts: usize,
}

impl AlertsDelivered {
    pub fn emit(&self, stats: &mut Stats) {
        stats.sinks.entry(self.sink).or_default().delivered += self.alerts as u64;
        tracing::debug!(message = "Alerts delivered.", sink = self.sink.as_str(), alerts = self.alerts);
    }
}

/// A delivery (or re-send) attempt failed. Counted always; logged at the first failure of a
/// streak (`first`), since a failing sink is retried every few seconds.
pub struct SinkFailed<'a> {
    pub sink: SinkKind,
    pub target: &'a str,
    pub error: &'a dyn std::fmt::Display,
    /// The same alerts will be tried again (false: given up on, e.g. refused as invalid).
    pub retrying: bool,
    pub first: bool,
}

impl SinkFailed<'_> {
    pub fn emit(&self, stats: &mut Stats) {
        let c = stats.sinks.entry(self.sink).or_default();
        c.failures += 1;
        if self.retrying {
            c.retries += 1;
            if self.first {
                tracing::warn!(
                    message = "Alert sink failing; retrying, offsets held back.",
                    sink = self.sink.as_str(),
                    target = self.target,
                    error = %self.error,
                );
            }
        } else {
            tracing::error!(
                message = "Alert sink refused alerts; not retried.",
                sink = self.sink.as_str(),
                target = self.target,
                error = %self.error,
            );
        }
    }
}

/// A sink refused an alert for good (its answer says the alert itself is wrong): not retried,
/// set aside on the dead-letter topic. Each one is logged: an analyst may never see it.
pub struct SinkRejected<'a> {
    pub sink: SinkKind,
    pub target: &'a str,
    pub alert_id: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl SinkRejected<'_> {
    pub fn emit(&self, stats: &mut Stats) {
        stats.sinks.entry(self.sink).or_default().rejected += 1;
        tracing::error!(
            message = "Alert sink refused an alert for good; set aside on the dead-letter topic, not retried.",
            sink = self.sink.as_str(),
            target = self.target,
            alert_id = self.alert_id,
            error = %self.error,
        );
    }
}

/// The Alertmanager sink's periodic re-send of firing alerts failed (it backs off and tries
/// again; no alert is held back by it). Counted as a failure of the `alertmanager` sink; logged
/// at the first failure of a streak.
pub struct ResendFailed<'a> {
    pub target: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub first: bool,
}

impl ResendFailed<'_> {
    pub fn emit(&self, stats: &mut Stats) {
        stats.sinks.entry(SinkKind::Alertmanager).or_default().failures += 1;
        if self.first {
            tracing::warn!(
                message = "Alertmanager re-send failing; retrying with backoff.",
                target = self.target,
                error = %self.error,
            );
        }
    }
}

/// A failing sink accepted again.
pub struct SinkRecovered {
    pub sink: SinkKind,
}

impl SinkRecovered {
    pub fn emit(&self) {
        tracing::info!(message = "Alert sink recovered.", sink = self.sink.as_str());
    }
}

/// A malformed record was written to the dead-letter file or topic.
pub struct DeadLettered<'a> {
    pub reason: Malformed,
    pub location: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(&self, stats: &mut Stats) {
        stats.dead_letters += 1;
        tracing::debug!(message = "Record dead-lettered.", reason = self.reason.code(), location = self.location);
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
    /// For a process without Kafka and without state to restore (`replay --metrics-addr`):
    /// ready while its loop makes progress.
    pub fn standalone() -> Health {
        let h = Health::default();
        h.kafka_seen.store(true, Ordering::Relaxed);
        h.set_restored();
        h.beat();
        h
    }

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

/// Kafka consumer lag per consumed partition (messages between the partition's high watermark
/// and the service's position), set by the Kafka source from librdkafka's statistics every
/// `statistics.interval.ms`. A handle: clones share the gauge.
#[derive(Clone)]
pub struct ConsumerLag {
    gauge: IntGaugeVec,
    /// The (topic, partition) series shown now; a partition that went away is removed.
    shown: Arc<Mutex<BTreeSet<(String, i32)>>>,
}

impl ConsumerLag {
    /// The lag of every partition consumed now, as `(topic, partition, messages)`.
    pub fn set(&self, lags: &[(&str, i32, i64)]) {
        let Ok(mut shown) = self.shown.lock() else { return };
        let now: BTreeSet<(String, i32)> = lags.iter().map(|(t, p, _)| (t.to_string(), *p)).collect();
        for (topic, partition) in shown.difference(&now) {
            let _ = self.gauge.remove_label_values(&[topic.as_str(), partition.to_string().as_str()]);
        }
        for (topic, partition, lag) in lags {
            self.gauge.with_label_values(&[*topic, partition.to_string().as_str()]).set(*lag);
        }
        *shown = now;
    }
}

/// A [`Histo`] published by [`Metrics::publish`], rendered as a Prometheus histogram.
struct HistoCollector {
    desc: Desc,
    current: Arc<Mutex<Histo>>,
}

impl Collector for HistoCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let Ok(h) = self.current.lock() else { return Vec::new() };
        let mut m = proto::Metric::default();
        m.set_histogram(h.proto());
        vec![family(&self.desc, proto::MetricType::HISTOGRAM, vec![m])]
    }
}

fn family(desc: &Desc, kind: proto::MetricType, metrics: Vec<proto::Metric>) -> proto::MetricFamily {
    let mut f = proto::MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge_family(desc: &Desc, value: f64) -> proto::MetricFamily {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    family(desc, proto::MetricType::GAUGE, vec![proto::Metric::from_gauge(g)])
}

/// `exfilwatch_checkpoint_age_seconds`, computed when scraped: seconds since the last
/// checkpoint (or since checkpoints were expected, before the first one). Absent when the
/// process writes no checkpoints.
struct CheckpointAge {
    desc: Desc,
    last: Arc<Mutex<Option<SystemTime>>>,
}

impl Collector for CheckpointAge {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let Some(last) = self.last.lock().ok().and_then(|l| *l) else { return Vec::new() };
        let age = SystemTime::now().duration_since(last).unwrap_or_default();
        vec![gauge_family(&self.desc, age.as_secs_f64())]
    }
}

/// `exfilwatch_ready`, computed when scraped from the same [`Health::readiness`] as `/readyz`.
struct Readiness {
    desc: Desc,
    health: Arc<Health>,
}

impl Collector for Readiness {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![gauge_family(&self.desc, if self.health.readiness().is_ok() { 1.0 } else { 0.0 })]
    }
}

/// Adds `exfilwatch_ready` (1 when `/readyz` would answer 200, else 0) to `registry`, computed
/// from `health` at every scrape. Registering it twice is harmless.
pub fn register_readiness(registry: &Registry, health: Arc<Health>) -> Result<(), prometheus::Error> {
    let desc = Desc::new(
        "exfilwatch_ready".into(),
        "1 when the service is ready (as /readyz answers 200), else 0.".into(),
        Vec::new(),
        Default::default(),
    )?;
    match registry.register(Box::new(Readiness { desc, health })) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `reason` labels of `exfilwatch_alerts_suppressed_total`, in [`suppressed_counts`] order.
pub const SUPPRESSION_REASONS: [&str; 5] =
    ["learning", "allow_cidr", "allow_credential", "allow_user_agent", "verdict_benign"];

/// The detector's suppressed-alert counters in [`SUPPRESSION_REASONS`] order.
pub fn suppressed_counts(d: &crate::detect::DetectorStats) -> [u64; 5] {
    let [c, k, u, v] = d.suppressed.counts();
    [d.alerts_suppressed_learning, c, k, u, v]
}

/// The Prometheus side of [`Stats`], and what is measured outside the hot path (checkpoints,
/// consumer lag, build info).
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
    expirations: IntCounter,
    suppressed: IntCounterVec,
    verdicts_applied: IntCounter,
    verdicts_malformed: IntCounter,
    sink_delivered: IntCounterVec,
    sink_failures: IntCounterVec,
    sink_rejected: IntCounterVec,
    sink_retries: IntCounterVec,
    dead_letters: IntCounter,
    processing: Arc<Mutex<Histo>>,
    lag: Arc<Mutex<Histo>>,
    consumer_lag: ConsumerLag,
    checkpoint_duration: Histogram,
    checkpoint_bytes: IntGauge,
    checkpoint_timestamp: prometheus::Gauge,
    checkpoint_last: Arc<Mutex<Option<SystemTime>>>,
    published: Stats,
}

impl Metrics {
    /// The metrics of a replay (`role="replay"` in `exfilwatch_build_info`).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        Metrics::for_role("replay")
    }

    /// The metrics of `run` in a role (`all`, `rekey`, `detect`), named by the `role` label of
    /// `exfilwatch_build_info`.
    pub fn for_role(role: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reg = |c: Box<dyn Collector>| registry.register(c);
        let vec = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            reg(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            reg(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            reg(Box::new(g.clone()))?;
            Ok(g)
        };
        let histo = |name: &str, help: &str, bounds: &'static [f64]| -> Result<Arc<Mutex<Histo>>, prometheus::Error> {
            let current = Arc::new(Mutex::new(Histo::new(bounds)));
            let desc = Desc::new(name.into(), help.into(), Vec::new(), Default::default())?;
            reg(Box::new(HistoCollector { desc, current: current.clone() }))?;
            Ok(current)
        };
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "exfilwatch_kafka_consumer_lag_messages",
                "Messages between a consumed partition's high watermark and the service's position \
                 (librdkafka statistics).",
            ),
            &["topic", "partition"],
        )?;
        reg(Box::new(consumer_lag.clone()))?;
        let checkpoint_duration = Histogram::with_opts(
            HistogramOpts::new("exfilwatch_checkpoint_duration_seconds", "Time to write one checkpoint durably.")
                .buckets(CHECKPOINT_BUCKETS.to_vec()),
        )?;
        reg(Box::new(checkpoint_duration.clone()))?;
        let checkpoint_timestamp = prometheus::Gauge::new(
            "exfilwatch_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written (0: none yet).",
        )?;
        reg(Box::new(checkpoint_timestamp.clone()))?;
        let checkpoint_last = Arc::new(Mutex::new(None));
        reg(Box::new(CheckpointAge {
            desc: Desc::new(
                "exfilwatch_checkpoint_age_seconds".into(),
                "Seconds since the last checkpoint (or since the start, before the first one); \
                 absent without a state store."
                    .into(),
                Vec::new(),
                Default::default(),
            )?,
            last: checkpoint_last.clone(),
        }))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "exfilwatch_build_info",
                "Always 1; the version of the running exfilwatch and its role (replay, all, rekey, detect) as labels.",
            ),
            &["version", "role"],
        )?;
        reg(Box::new(build_info.clone()))?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), role]).set(1);

        let m = Metrics {
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
            expirations: counter(
                "exfilwatch_origin_expirations_total",
                "Origins forgotten after history_window without use.",
            )?,
            suppressed: vec(
                "exfilwatch_alerts_suppressed_total",
                "Alerts not raised, by reason: learning (the account's learning period), allow_cidr, \
                 allow_credential, allow_user_agent ([allow]), verdict_benign (an analyst's benign verdict).",
                &["reason"],
            )?,
            verdicts_applied: counter(
                "exfilwatch_verdicts_applied_total",
                "Analysts' verdicts applied to the detector (benign or malicious).",
            )?,
            verdicts_malformed: counter(
                "exfilwatch_verdicts_malformed_total",
                "Lines of a verdicts file that are not verdicts (set aside).",
            )?,
            sink_delivered: vec(
                "exfilwatch_sink_delivered_alerts_total",
                "Alerts an alert sink accepted, by sink.",
                &["sink"],
            )?,
            sink_failures: vec(
                "exfilwatch_sink_failures_total",
                "Failed delivery or re-send attempts, by sink.",
                &["sink"],
            )?,
            sink_rejected: vec(
                "exfilwatch_sink_rejected_alerts_total",
                "Alerts a sink refused for good (e.g. HTTP 400), set aside instead of retried, by sink.",
                &["sink"],
            )?,
            sink_retries: vec(
                "exfilwatch_sink_retries_total",
                "Delivery attempts repeated after a failure, by sink.",
                &["sink"],
            )?,
            dead_letters: counter(
                "exfilwatch_dead_letter_messages_total",
                "Malformed records written to the dead-letter file or topic.",
            )?,
            processing: histo(
                "exfilwatch_record_processing_seconds",
                "Decode and detect time per record (each message timed once, its average counted per record).",
                PROCESSING_BUCKETS,
            )?,
            lag: histo(
                "exfilwatch_event_lag_seconds",
                "From the event time of a message's newest record to its processing (one per message).",
                LAG_BUCKETS,
            )?,
            consumer_lag: ConsumerLag { gauge: consumer_lag, shown: Arc::default() },
            checkpoint_duration,
            checkpoint_bytes: gauge("exfilwatch_checkpoint_size_bytes", "Size of the last checkpoint written.")?,
            checkpoint_timestamp,
            checkpoint_last,
            registry,
            published: Stats::default(),
        };
        // Every series of a closed label set exists from the start, at 0, so that rate() and
        // increase() see the first event and dashboards show what is possible.
        for c in Category::ALL {
            m.records.with_label_values(&[c.as_str()]);
            m.skipped.with_label_values(&[c.as_str()]);
        }
        for r in Malformed::ALL {
            m.malformed.with_label_values(&[r.code()]);
        }
        for rule in Rule::ALL {
            for sev in Severity::ALL {
                m.alerts.with_label_values(&[rule.as_str(), sev.as_str()]);
            }
        }
        for r in SUPPRESSION_REASONS {
            m.suppressed.with_label_values(&[r]);
        }
        for s in SinkKind::ALL {
            for v in [&m.sink_delivered, &m.sink_failures, &m.sink_retries, &m.sink_rejected] {
                v.with_label_values(&[s.as_str()]);
            }
        }
        Ok(m)
    }

    /// Moves what changed since the last call into the Prometheus counters. Counters only go
    /// up: a total that went down (a bug upstream) adds nothing rather than wrapping.
    pub fn publish(&mut self, s: &Stats) {
        let p = &self.published;
        for (c, n) in &s.records {
            self.records
                .with_label_values(&[c.as_str()])
                .inc_by(n.saturating_sub(p.records.get(c).copied().unwrap_or(0)));
        }
        for (c, n) in &s.skipped {
            self.skipped
                .with_label_values(&[c.as_str()])
                .inc_by(n.saturating_sub(p.skipped.get(c).copied().unwrap_or(0)));
        }
        for (r, n) in &s.malformed {
            self.malformed
                .with_label_values(&[r.code()])
                .inc_by(n.saturating_sub(p.malformed.get(r).copied().unwrap_or(0)));
        }
        for ((rule, sev), n) in &s.alerts {
            self.alerts
                .with_label_values(&[rule.as_str(), sev.as_str()])
                .inc_by(n.saturating_sub(p.alerts.get(&(*rule, *sev)).copied().unwrap_or(0)));
        }
        for (sink, c) in &s.sinks {
            let was = p.sinks.get(sink).copied().unwrap_or_default();
            let label = [sink.as_str()];
            self.sink_delivered.with_label_values(&label).inc_by(c.delivered.saturating_sub(was.delivered));
            self.sink_failures.with_label_values(&label).inc_by(c.failures.saturating_sub(was.failures));
            self.sink_retries.with_label_values(&label).inc_by(c.retries.saturating_sub(was.retries));
            self.sink_rejected.with_label_values(&label).inc_by(c.rejected.saturating_sub(was.rejected));
        }
        self.late.inc_by(s.detector.late_events.saturating_sub(p.detector.late_events));
        self.input_bytes.inc_by(s.input_bytes.saturating_sub(p.input_bytes));
        self.response_bytes.inc_by(s.response_bytes.saturating_sub(p.response_bytes));
        self.evictions.inc_by(s.detector.origins_evicted.saturating_sub(p.detector.origins_evicted));
        self.expirations.inc_by(s.detector.origins_expired.saturating_sub(p.detector.origins_expired));
        for (r, (now, was)) in SUPPRESSION_REASONS
            .iter()
            .zip(suppressed_counts(&s.detector).into_iter().zip(suppressed_counts(&p.detector)))
        {
            self.suppressed.with_label_values(&[*r]).inc_by(now.saturating_sub(was));
        }
        self.dead_letters.inc_by(s.dead_letters.saturating_sub(p.dead_letters));
        self.verdicts_applied.inc_by(s.detector.verdicts_applied.saturating_sub(p.detector.verdicts_applied));
        self.verdicts_malformed.inc_by(s.verdicts_malformed.saturating_sub(p.verdicts_malformed));
        self.keys.set(s.detector.keys_tracked as i64);
        self.origins.set(s.detector.origins_tracked as i64);
        if s.processing != p.processing {
            if let Ok(mut h) = self.processing.lock() {
                h.clone_from(&s.processing);
            }
        }
        if s.lag != p.lag {
            if let Ok(mut h) = self.lag.lock() {
                h.clone_from(&s.lag);
            }
        }
        self.published.clone_from(s);
    }

    /// The handle the Kafka source sets the consumer lag through.
    pub fn consumer_lag(&self) -> ConsumerLag {
        self.consumer_lag.clone()
    }

    /// This process writes checkpoints: `exfilwatch_checkpoint_age_seconds` counts from now
    /// until the first one is written.
    pub fn expect_checkpoints(&self) {
        if let Ok(mut last) = self.checkpoint_last.lock() {
            last.get_or_insert_with(SystemTime::now);
        }
    }

    /// A checkpoint of `bytes` was written durably at `at` and took `duration`: logged and
    /// counted (duration histogram, size, time of the last one, age).
    pub fn checkpoint_written(&self, duration: Duration, bytes: u64, at: SystemTime) {
        tracing::debug!(message = "Checkpoint written.", bytes, ms = duration.as_millis() as u64);
        self.checkpoint_duration.observe(duration.as_secs_f64());
        self.checkpoint_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let unix = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.checkpoint_timestamp.set(unix.as_secs_f64());
        if let Ok(mut last) = self.checkpoint_last.lock() {
            *last = Some(at);
        }
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

    /// The value of the sample `series` (name with labels, as rendered) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

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

    #[test]
    fn typed_events_count_and_publish() {
        let mut m = Metrics::new().unwrap();
        let mut s = Stats::default();
        AlertsDelivered { sink: SinkKind::Webhook, alerts: 3 }.emit(&mut s);
        let error = "HTTP 503";
        SinkFailed { sink: SinkKind::Webhook, target: "http://x", error: &error, retrying: true, first: true }
            .emit(&mut s);
        SinkFailed { sink: SinkKind::Webhook, target: "http://x", error: &error, retrying: true, first: false }
            .emit(&mut s);
        SinkFailed { sink: SinkKind::Alertmanager, target: "http://y", error: &error, retrying: false, first: true }
            .emit(&mut s);
        DeadLettered { reason: Malformed::InvalidJson, location: "t/0@1" }.emit(&mut s);
        // 100 records in 1 ms: 10 µs each.
        BatchProcessed { records: 100, elapsed: Duration::from_millis(1), lag: Some(Duration::from_secs(3)) }
            .emit(&mut s);
        m.publish(&s);
        m.publish(&s); // nothing new: no double counting
        let t = m.render();
        assert_eq!(sample(&t, "exfilwatch_sink_delivered_alerts_total{sink=\"webhook\"}"), Some(3.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_sink_failures_total{sink=\"webhook\"}"), Some(2.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_sink_retries_total{sink=\"webhook\"}"), Some(2.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_sink_failures_total{sink=\"alertmanager\"}"), Some(1.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_sink_retries_total{sink=\"alertmanager\"}"), Some(0.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_sink_delivered_alerts_total{sink=\"kafka\"}"), Some(0.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_dead_letter_messages_total"), Some(1.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_record_processing_seconds_count"), Some(100.0), "{t}");
        // 10 µs lands in the (5 µs, 10 µs] bucket: none below, all from there on.
        assert_eq!(sample(&t, "exfilwatch_record_processing_seconds_bucket{le=\"0.000005\"}"), Some(0.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_record_processing_seconds_bucket{le=\"0.00001\"}"), Some(100.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_record_processing_seconds_bucket{le=\"+Inf\"}"), Some(100.0), "{t}");
        let sum = sample(&t, "exfilwatch_record_processing_seconds_sum").unwrap();
        assert!((sum - 0.001).abs() < 1e-9, "{t}");
        assert_eq!(sample(&t, "exfilwatch_event_lag_seconds_count"), Some(1.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_event_lag_seconds_bucket{le=\"2.5\"}"), Some(0.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_event_lag_seconds_bucket{le=\"5\"}"), Some(1.0), "{t}");
        // Closed label sets are there from the start.
        assert_eq!(sample(&t, "exfilwatch_records_malformed_total{reason=\"too_large\"}"), Some(0.0), "{t}");
        assert_eq!(
            sample(&t, "exfilwatch_alerts_total{rule=\"volume_anomaly\",severity=\"critical\"}"),
            Some(0.0),
            "{t}"
        );
        assert_eq!(
            sample(&t, &format!("exfilwatch_build_info{{role=\"replay\",version=\"{}\"}}", env!("CARGO_PKG_VERSION"))),
            Some(1.0)
        );
    }

    #[test]
    fn histo_buckets_are_le_bounds() {
        let mut h = Histo::new(&[1.0, 2.0]);
        h.observe_n(1.0, 2); // on the bound: in `le="1"`
        h.observe_n(1.5, 1);
        h.observe_n(9.0, 4);
        h.observe_n(f64::NAN, 5);
        h.observe_n(0.5, 0);
        let p = h.proto();
        let cum: Vec<u64> = p.get_bucket().iter().map(|b| b.cumulative_count()).collect();
        assert_eq!(cum, [2, 3]);
        assert_eq!(p.get_sample_count(), 7);
        assert_eq!(h.sum(), 2.0 + 1.5 + 36.0);
    }

    #[test]
    fn consumer_lag_follows_the_assignment() {
        let m = Metrics::new().unwrap();
        let lag = m.consumer_lag();
        lag.set(&[("logs", 0, 5), ("logs", 1, 0)]);
        let t = m.render();
        assert_eq!(
            sample(&t, "exfilwatch_kafka_consumer_lag_messages{partition=\"0\",topic=\"logs\"}"),
            Some(5.0),
            "{t}"
        );
        lag.set(&[("logs", 0, 2)]);
        let t = m.render();
        assert_eq!(
            sample(&t, "exfilwatch_kafka_consumer_lag_messages{partition=\"0\",topic=\"logs\"}"),
            Some(2.0),
            "{t}"
        );
        assert!(!t.contains("partition=\"1\""), "a revoked partition's series goes: {t}");
    }

    #[test]
    fn checkpoint_age_only_with_checkpoints() {
        let m = Metrics::new().unwrap();
        assert!(!m.render().contains("exfilwatch_checkpoint_age_seconds"));
        m.expect_checkpoints();
        let age = sample(&m.render(), "exfilwatch_checkpoint_age_seconds").unwrap();
        assert!((0.0..60.0).contains(&age), "{age}");
        let at = SystemTime::now() - Duration::from_secs(100);
        m.checkpoint_written(Duration::from_millis(20), 4096, at);
        let t = m.render();
        let age = sample(&t, "exfilwatch_checkpoint_age_seconds").unwrap();
        assert!((100.0..160.0).contains(&age), "{t}");
        assert_eq!(sample(&t, "exfilwatch_checkpoint_size_bytes"), Some(4096.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_checkpoint_duration_seconds_count"), Some(1.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_checkpoint_duration_seconds_bucket{le=\"0.01\"}"), Some(0.0), "{t}");
        assert_eq!(sample(&t, "exfilwatch_checkpoint_duration_seconds_bucket{le=\"0.05\"}"), Some(1.0), "{t}");
        let ts = sample(&t, "exfilwatch_checkpoint_last_success_timestamp_seconds").unwrap();
        assert!(ts > 1.7e9, "{t}");
    }

    #[test]
    fn ready_gauge_follows_readiness() {
        let m = Metrics::new().unwrap();
        let health = Arc::new(Health::default());
        register_readiness(&m.registry, health.clone()).unwrap();
        register_readiness(&m.registry, health.clone()).unwrap();
        assert_eq!(sample(&m.render(), "exfilwatch_ready"), Some(0.0));
        health.set_restored();
        health.set_kafka(true, "");
        health.beat();
        assert_eq!(sample(&m.render(), "exfilwatch_ready"), Some(1.0));
        health.set_sink_failing(true);
        assert_eq!(sample(&m.render(), "exfilwatch_ready"), Some(0.0));
        assert_eq!(Health::standalone().readiness(), Ok(()));
    }
}
