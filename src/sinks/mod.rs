//! Sinks: where alerts (and dead letters) go. JSON Lines to a file or stdout for now; the
//! streaming service adds Kafka and webhooks behind the same trait.

pub mod alertmanager;
pub mod kafka;
pub mod webhook;

use crate::alert::Alert;
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write alerts to {target}: {source}")]
    Io { target: String, source: io::Error },
}

impl SinkError {
    /// A closed pipe (`exfilwatch replay | head`) ends the run quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, SinkError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Accepts alerts. `emit` returns once the sink has taken them (written or queued durably).
pub trait AlertSink {
    fn emit(&mut self, alerts: &[Alert]) -> Result<(), SinkError>;
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// One alert per line, fields in the documented order.
pub struct JsonLinesSink<W: Write> {
    out: W,
    target: String,
    line: Vec<u8>,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W, target: impl Into<String>) -> Self {
        JsonLinesSink { out, target: target.into(), line: Vec::with_capacity(2048) }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Where it writes: a path, or `stdout`.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl<W: Write> AlertSink for JsonLinesSink<W> {
    fn emit(&mut self, alerts: &[Alert]) -> Result<(), SinkError> {
        for a in alerts {
            self.line.clear();
            serde_json::to_writer(&mut self.line, a)
                .map_err(|e| SinkError::Io { target: self.target.clone(), source: e.into() })?;
            self.line.push(b'\n');
            self.out.write_all(&self.line).map_err(|source| SinkError::Io { target: self.target.clone(), source })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io { target: self.target.clone(), source })
    }
}

/// A malformed record set aside, as written to the dead-letter file.
#[derive(serde::Serialize)]
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    /// `file:line` (and `#index` inside an envelope).
    pub location: &'a str,
    /// The record's original text (lossy UTF-8).
    pub record: &'a str,
}

/// JSON Lines of [`DeadLetter`]s.
pub struct DeadLetterFile {
    out: io::BufWriter<std::fs::File>,
    target: String,
}

impl DeadLetterFile {
    pub fn create(path: &std::path::Path) -> Result<Self, SinkError> {
        let target = path.display().to_string();
        let f = std::fs::File::create(path).map_err(|source| SinkError::Io { target: target.clone(), source })?;
        Ok(DeadLetterFile { out: io::BufWriter::new(f), target })
    }

    pub fn write(&mut self, d: &DeadLetter<'_>) -> Result<(), SinkError> {
        let io_err = |source| SinkError::Io { target: self.target.clone(), source };
        serde_json::to_writer(&mut self.out, d).map_err(|e| io_err(e.into()))?;
        self.out.write_all(b"\n").map_err(io_err)
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io { target: self.target.clone(), source })
    }
}
