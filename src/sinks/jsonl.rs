//! Alerts as JSON Lines, to a file or stdout: one alert per line, fields in the documented
//! order.

use super::{AlertSink, Sent, SinkError};
use crate::alert::Alert;
use crate::formats::AlertFormat;
use crate::telemetry::SinkKind;
use std::io::Write;

/// One alert per line.
pub struct JsonLinesSink<W: Write> {
    out: W,
    target: String,
    line: Vec<u8>,
    /// Flush after every batch (the service: alerts visible at once), or only on `flush`
    /// (replay: a buffered file).
    flush_each: bool,
    format: AlertFormat,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W, target: impl Into<String>) -> Self {
        JsonLinesSink {
            out,
            target: target.into(),
            line: Vec::with_capacity(2048),
            flush_each: false,
            format: AlertFormat::Native,
        }
    }

    /// Writes each alert in this format (native JSON by default).
    pub fn with_format(mut self, format: AlertFormat) -> Self {
        self.format = format;
        self
    }

    /// Flushes after every batch.
    pub fn flushing(mut self) -> Self {
        self.flush_each = true;
        self
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Where it writes: a path, or `stdout`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Writes the alerts (buffered as `W` buffers).
    pub fn write(&mut self, alerts: &[Alert]) -> Result<(), SinkError> {
        for a in alerts {
            self.line.clear();
            match self.format {
                AlertFormat::Native => serde_json::to_writer(&mut self.line, a)
                    .map_err(|e| SinkError::Io { target: self.target.clone(), source: e.into() })?,
                other => self.line.extend(other.to_vec(a)),
            }
            self.line.push(b'\n');
            self.out.write_all(&self.line).map_err(|source| SinkError::Io { target: self.target.clone(), source })?;
        }
        if self.flush_each {
            self.flush_now()?;
        }
        Ok(())
    }

    pub fn flush_now(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io { target: self.target.clone(), source })
    }
}

/// Opens a file sink in append mode (the service) or truncating it (replay's `-o`).
pub fn file(path: &str, append: bool) -> Result<JsonLinesSink<std::io::BufWriter<std::fs::File>>, SinkError> {
    let f = crate::secure::open_private(std::path::Path::new(path), append)
        .map_err(|source| SinkError::Io { target: path.to_string(), source })?;
    Ok(JsonLinesSink::new(std::io::BufWriter::new(f), path))
}

#[async_trait::async_trait]
impl<W: Write + Send> AlertSink for JsonLinesSink<W> {
    fn kind(&self) -> SinkKind {
        SinkKind::of_writer(&self.target)
    }

    fn target(&self) -> &str {
        &self.target
    }

    async fn send(&mut self, alerts: &[Alert]) -> Result<Sent, SinkError> {
        self.write(alerts)?;
        Ok(Sent::default())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.flush_now()
    }
}
