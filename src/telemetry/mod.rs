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
//!
//! One file per job:
//!
//! - `stats.rs`: the run's counters ([`Stats`], [`Histo`], [`SinkKind`], [`SinkCounts`]) and
//!   the histograms' buckets.
//! - `events.rs`: the typed events whose `emit` logs and counts.
//! - `health.rs`: what `/healthz` and `/readyz` report ([`Health`]), the Kafka consumer lag
//!   ([`ConsumerLag`]) and the `exfilwatch_ready` collector.
//! - `metrics.rs`: the Prometheus registry ([`Metrics`]), its collectors,
//!   [`register_readiness`] and [`suppressed_counts`].
//! - `http.rs`: `/metrics`, `/healthz` and `/readyz` over HTTP (`run`, and `replay
//!   --metrics-addr`).

mod events;
mod health;
pub mod http;
mod metrics;
mod stats;

pub use events::{
    AlertsDelivered, Backpressure, BatchProcessed, DeadLettered, MalformedRecord, ResendFailed, SinkFailed,
    SinkRecovered, SinkRejected, StateEvicted,
};
pub use health::{ConsumerLag, Health};
pub use metrics::{register_readiness, suppressed_counts, Metrics, CHECKPOINT_BUCKETS, SUPPRESSION_REASONS};
pub use stats::{Histo, SinkCounts, SinkKind, Stats, LAG_BUCKETS, PROCESSING_BUCKETS};

/// The value of the sample `series` (name with labels, as rendered) in `text`.
#[cfg(test)]
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
