//! The run's counters: [`Stats`], the plain integers (and plain-integer histograms, [`Histo`])
//! the hot path bumps without atomics or locks, with the per-sink counts ([`SinkKind`],
//! [`SinkCounts`]) and the histograms' buckets.

use crate::alert::{Alert, Rule, Severity};
use crate::decode::{Category, Malformed};
use crate::detect::DetectorStats;
use prometheus::proto;
use std::collections::BTreeMap;

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
    /// Alerts waiting for a sink (`run`; a gauge).
    pub pending_alerts: u64,
    /// Consumption is stopped until a sink takes the waiting alerts (`sinks.max_pending_alerts`).
    pub backpressure: bool,
    /// Times consumption stopped so.
    pub backpressure_spells: u64,
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
            pending_alerts: 0,
            backpressure: false,
            backpressure_spells: 0,
        }
    }
}

/// Buckets (seconds) of the per-record processing time.
pub const PROCESSING_BUCKETS: &[f64] =
    &[1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0];
/// Buckets (seconds) of the end-to-end lag, from event time to processing.
pub const LAG_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];

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
    pub(super) fn proto(&self) -> proto::Histogram {
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
    /// A writer's kind by its target: `stdout`, or a file.
    pub fn of_writer(target: &str) -> SinkKind {
        if target == "stdout" {
            SinkKind::Stdout
        } else {
            SinkKind::File
        }
    }

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
    /// Records read: every category's, and the malformed ones (not the damaged files, which
    /// are counted under `truncated_input` / `unreadable_input` but are not records).
    pub fn records_total(&self) -> u64 {
        let files: u64 =
            [Malformed::TruncatedInput, Malformed::UnreadableInput].iter().filter_map(|r| self.malformed.get(r)).sum();
        self.records.values().sum::<u64>() + self.malformed_total() - files
    }
    pub fn count_alerts(&mut self, alerts: &[Alert]) {
        for a in alerts {
            *self.alerts.entry((a.rule, a.severity)).or_default() += 1;
        }
    }
}

impl Stats {
    /// A record that became an event the detector (or the internal topic) takes.
    pub fn count_event(&mut self, ev: &crate::decode::Event<'_>) {
        *self.records.entry(ev.category).or_default() += 1;
        self.response_bytes += ev.response_bytes;
    }

    /// A record of a category the detector does not read.
    pub fn count_skipped(&mut self, category: crate::decode::Category) {
        *self.records.entry(category).or_default() += 1;
        *self.skipped.entry(category).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
