//! Prometheus metrics: [`Metrics`] moves [`Stats`] into its registry once per tick
//! ([`Metrics::publish`]) and takes what is measured outside the hot path (checkpoints, consumer
//! lag, build info) directly; the collectors that compute a value when scraped; readiness
//! ([`register_readiness`]) and the suppressed-alert reasons ([`suppressed_counts`]).

use super::health::{ConsumerLag, Health, Readiness};
use super::stats::{Histo, SinkKind, Stats, LAG_BUCKETS, PROCESSING_BUCKETS};
use crate::alert::{Rule, Severity};
use crate::decode::{Category, Malformed};
use prometheus::core::{Collector, Desc};
use prometheus::{proto, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Buckets (seconds) of the checkpoint write time.
pub const CHECKPOINT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

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

pub(super) fn gauge_family(desc: &Desc, value: f64) -> proto::MetricFamily {
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
    keys_evicted: IntCounter,
    state_bytes: IntGauge,
    expirations: IntCounter,
    suppressed: IntCounterVec,
    verdicts_applied: IntCounter,
    verdicts_malformed: IntCounter,
    sink_delivered: IntCounterVec,
    sink_failures: IntCounterVec,
    sink_rejected: IntCounterVec,
    sink_retries: IntCounterVec,
    dead_letters: IntCounter,
    pending_alerts: IntGauge,
    backpressure: IntGauge,
    backpressure_spells: IntCounter,
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
            keys_evicted: counter(
                "exfilwatch_detector_evicted_keys_total",
                "Keys evicted because the detector state passed detect.max_state_bytes.",
            )?,
            state_bytes: gauge(
                "exfilwatch_detector_state_bytes",
                "The detector state's estimated size (what detect.max_state_bytes bounds).",
            )?,
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
            pending_alerts: gauge(
                "exfilwatch_sink_pending_alerts",
                "Alerts raised and waiting for a sink that has not taken them yet (sinks.max_pending_alerts bounds it).",
            )?,
            backpressure: gauge(
                "exfilwatch_backpressure",
                "1 while consumption is stopped because sinks.max_pending_alerts alerts wait for a failing sink.",
            )?,
            backpressure_spells: counter(
                "exfilwatch_backpressure_spells_total",
                "Times consumption stopped because sinks.max_pending_alerts alerts waited for a failing sink.",
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
        self.keys_evicted.inc_by(s.detector.keys_evicted.saturating_sub(p.detector.keys_evicted));
        self.expirations.inc_by(s.detector.origins_expired.saturating_sub(p.detector.origins_expired));
        for (r, (now, was)) in SUPPRESSION_REASONS
            .iter()
            .zip(suppressed_counts(&s.detector).into_iter().zip(suppressed_counts(&p.detector)))
        {
            self.suppressed.with_label_values(&[*r]).inc_by(now.saturating_sub(was));
        }
        self.dead_letters.inc_by(s.dead_letters.saturating_sub(p.dead_letters));
        self.pending_alerts.set(i64::try_from(s.pending_alerts).unwrap_or(i64::MAX));
        self.backpressure.set(i64::from(s.backpressure));
        self.backpressure_spells.inc_by(s.backpressure_spells.saturating_sub(p.backpressure_spells));
        self.verdicts_applied.inc_by(s.detector.verdicts_applied.saturating_sub(p.detector.verdicts_applied));
        self.verdicts_malformed.inc_by(s.verdicts_malformed.saturating_sub(p.verdicts_malformed));
        self.keys.set(s.detector.keys_tracked as i64);
        self.origins.set(s.detector.origins_tracked as i64);
        self.state_bytes.set(i64::try_from(s.detector.state_bytes()).unwrap_or(i64::MAX));
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
    use crate::telemetry::sample;

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
}
