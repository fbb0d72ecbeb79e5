//! Sinks: where alerts (and what is set aside) go. Every destination is one [`AlertSink`]
//! (one file: `jsonl.rs` for a file or stdout, `kafka.rs`, `webhook.rs`; one folder: `alertmanager/`);
//! [`fanout::Fanout`] drives them all, the same way in replay and in every service role:
//! retries with backoff while a sink is away, readiness, typed events, rejected alerts onto
//! the dead-letter destination, and the delivered-id journal.
//!
//! Adding a destination (Splunk HEC, a Sentinel endpoint, another format) is one new file
//! implementing [`AlertSink`], and one line where the sinks are built (`service::sinks_for`).

pub mod alertmanager;
pub mod dead_letter;
pub mod fanout;
pub mod filter;
mod http;
pub mod jsonl;
pub mod kafka;
pub mod text;
pub mod webhook;

pub use dead_letter::{DeadLetter, DeadLetterFile, DeadLetters};
pub use jsonl::JsonLinesSink;

use crate::alert::Alert;
use crate::telemetry::SinkKind;
use crate::time::Nanos;
use std::io;
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write alerts to {target}: {source}")]
    Io { target: String, source: io::Error },
    /// The dead-letter file (replay's `--dead-letter`).
    #[error("cannot write dead letters to {target}: {source}")]
    DeadLetterIo { target: String, source: io::Error },
    /// The Kafka producer or the alert topic's read-back failed (librdkafka retries inside;
    /// this is what is left after its timeout).
    #[error("Kafka {target}: {detail}")]
    Kafka { target: String, detail: String },
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error(transparent)]
    Alertmanager(#[from] alertmanager::AlertmanagerError),
    /// A sink's saved state (in a checkpoint) does not restore.
    #[error("{kind} sink state: {detail}")]
    State { kind: &'static str, detail: String },
}

impl SinkError {
    /// A closed pipe (`exfilwatch replay | head`) ends the run quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SinkError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Whether sending the same alerts again may succeed (the fan-out retries with backoff and
    /// holds the offsets back meanwhile); otherwise the run stops with the error. An answer
    /// that refuses one alert is not an error: it is in [`Sent::rejected`].
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Io { .. } | SinkError::DeadLetterIo { .. } | SinkError::State { .. } => false,
            SinkError::Kafka { .. } => true,
            SinkError::Webhook(e) => e.is_retryable(),
            SinkError::Alertmanager(e) => e.is_retryable(),
        }
    }
}

/// An alert a sink refused for good (its answer says the alert itself is wrong): set aside on
/// the dead-letter destination with the answer, counted, and the stream goes on.
#[derive(Debug)]
pub struct Rejected {
    pub id: String,
    /// The alert as it was sent (its JSON).
    pub alert: Vec<u8>,
    /// The sink's answer.
    pub detail: String,
}

/// What one [`AlertSink::send`] settled.
#[derive(Debug, Default)]
pub struct Sent {
    /// Refused for good; every other alert of the batch was accepted.
    pub rejected: Vec<Rejected>,
    /// Where accepted alerts landed on the alert topic (Kafka sink): `(partition, offset)`.
    pub landed: Vec<(i32, i64)>,
}

/// One alert destination.
///
/// `send` is called with each batch of new alerts, in order, one call at a time. It returns
/// once every alert was accepted or refused for good ([`Sent::rejected`]). On an error it
/// remembers which alerts were accepted before it, so that the fan-out's retry of the same
/// batch does not deliver them twice to a receiver that cannot tell.
#[async_trait::async_trait]
pub trait AlertSink: Send {
    /// Which kind of sink (the `sink` label of the metrics).
    fn kind(&self) -> SinkKind;
    /// Where it sends, safe to log (no credentials).
    fn target(&self) -> &str;
    async fn send(&mut self, alerts: &[Alert]) -> Result<Sent, SinkError>;
    /// Makes what was sent durable or visible (a file's buffer).
    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// The end of the run: flush and let go.
    async fn close(&mut self) -> Result<(), SinkError> {
        self.flush().await
    }
    /// The stream's event-time progress (newest record time handled); only moves forward.
    fn observe_event_time(&mut self, _t: Nanos) {}
    /// Periodic work (re-sends), every loop tick; an error is transient (the fan-out logs it
    /// once per failing spell). `now` is the wall clock. Ok(false): nothing was tried (waiting
    /// out a backoff after a failure), so the failing spell has not ended.
    async fn tick(&mut self, _now: SystemTime) -> Result<bool, SinkError> {
        Ok(true)
    }
    /// State to keep in the checkpoint (e.g. Alertmanager's firing set).
    fn checkpoint(&self) -> Option<serde_json::Value> {
        None
    }
    /// Takes back what [`checkpoint`](Self::checkpoint) saved.
    fn restore(&mut self, _saved: serde_json::Value) -> Result<(), SinkError> {
        Ok(())
    }
    /// A restored detector state may have delivered alerts it never journaled; `marks` (next
    /// alert-topic offset per partition after its last delivery) say where to look.
    fn restored_marks(&mut self, _marks: &std::collections::BTreeMap<i32, i64>) {}
}
