//! Typed events: one struct per notable thing, whose `emit` logs and counts in [`Stats`]
//! together, emitted once per message or batch.

use super::{SinkKind, Stats};
use crate::decode::Malformed;
use std::time::Duration;

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
            message = "Alert sink refused an alert for good; set aside with its answer, not retried.",
            sink = self.sink.as_str(),
            target = self.target,
            alert_id = self.alert_id,
            error = %self.error,
        );
    }
}

/// A sink's periodic work failed (`AlertSink::tick`: the Alertmanager sink's re-send of firing
/// alerts; it backs off and tries again; no alert is held back by it). Counted as a failure of
/// that sink; logged at the first failure of a streak.
pub struct ResendFailed<'a> {
    pub sink: SinkKind,
    pub target: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub first: bool,
}

impl ResendFailed<'_> {
    pub fn emit(&self, stats: &mut Stats) {
        stats.sinks.entry(self.sink).or_default().failures += 1;
        if self.first {
            tracing::warn!(
                message = "Sink re-send failing; retrying with backoff.",
                sink = self.sink.as_str(),
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

/// Alerts waiting for a failing sink reached `sinks.max_pending_alerts`: consumption stops
/// (`on`) until the sinks take some (`!on`). Logged and counted once per change.
pub struct Backpressure {
    pub on: bool,
    pub pending: usize,
}

impl Backpressure {
    pub fn emit(&self, stats: &mut Stats) {
        stats.backpressure = self.on;
        if self.on {
            stats.backpressure_spells += 1;
            tracing::warn!(
                message = "Alerts wait for a failing sink: consumption stopped until it takes them.",
                pending = self.pending
            );
        } else {
            tracing::info!(message = "Consumption resumed: the sinks took the waiting alerts.", pending = self.pending);
        }
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

/// The detector's state passed `detect.max_state_bytes` and keys were evicted. The detector
/// counts evictions and spells (it does no I/O); the caller compares the spell count from
/// before a call with the one after it and logs here, once per spell.
pub struct StateEvicted<'a> {
    pub spells_before: u64,
    pub detector: &'a crate::detect::Detector,
}

impl StateEvicted<'_> {
    pub fn emit(&self) {
        let s = self.detector.stats();
        if s.eviction_spells > self.spells_before {
            tracing::warn!(
                message = "Detector state passed detect.max_state_bytes: evicting the least recently seen keys \
                           (logged once per spell, counted in exfilwatch_detector_evicted_keys_total).",
                max_state_bytes = self.detector.config().max_state_bytes.0,
                state_bytes = s.state_bytes(),
                keys_tracked = s.keys_tracked,
                keys_evicted = s.keys_evicted,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{sample, Metrics};

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
}
