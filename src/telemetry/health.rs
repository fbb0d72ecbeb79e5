//! Health and readiness: what `/healthz` and `/readyz` report ([`Health`]), the Kafka
//! consumer lag per partition ([`ConsumerLag`]), and `exfilwatch_ready`, computed from the same
//! readiness at every scrape.

use super::metrics::gauge_family;
use prometheus::core::{Collector, Desc};
use prometheus::{proto, IntGaugeVec};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    checkpoint_failing: AtomicBool,
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
            checkpoint_failing: AtomicBool::new(false),
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

    /// The state store refuses checkpoints (offsets are not committed past the last good one).
    pub fn set_checkpoint_failing(&self, failing: bool) {
        self.checkpoint_failing.store(failing, Ordering::Relaxed);
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
        if self.checkpoint_failing.load(Ordering::Relaxed) {
            return Err("the state store cannot be written (checkpoints failing; offsets not committed past the last \
                        good checkpoint)"
                .into());
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
    pub(super) gauge: IntGaugeVec,
    /// The (topic, partition) series shown now; a partition that went away is removed.
    pub(super) shown: Arc<Mutex<BTreeSet<(String, i32)>>>,
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

/// `exfilwatch_ready`, computed when scraped from the same [`Health::readiness`] as `/readyz`.
pub(super) struct Readiness {
    pub(super) desc: Desc,
    pub(super) health: Arc<Health>,
}

impl Collector for Readiness {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![gauge_family(&self.desc, if self.health.readiness().is_ok() { 1.0 } else { 0.0 })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{register_readiness, sample, Metrics};

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
