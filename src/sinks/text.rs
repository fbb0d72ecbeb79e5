//! Alerts as one readable line each, for a terminal: `[critical] rule account/credential:
//! summary` (`replay --format text`, the form `make demo` prints).

use super::{AlertSink, Sent, SinkError};
use crate::alert::Alert;
use crate::telemetry::SinkKind;
use std::io::Write;

pub struct TextSink<W: Write> {
    out: W,
    target: String,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, target: impl Into<String>) -> Self {
        TextSink { out, target: target.into() }
    }
}

/// One alert's line.
pub fn line(a: &Alert) -> String {
    format!("[{}] {} {}/{}: {}", a.severity.as_str(), a.rule.as_str(), a.account, a.credential, a.summary)
}

#[async_trait::async_trait]
impl<W: Write + Send> AlertSink for TextSink<W> {
    fn kind(&self) -> SinkKind {
        SinkKind::of_writer(&self.target)
    }

    fn target(&self) -> &str {
        &self.target
    }

    async fn send(&mut self, alerts: &[Alert]) -> Result<Sent, SinkError> {
        for a in alerts {
            writeln!(self.out, "{}", line(a))
                .map_err(|source| SinkError::Io { target: self.target.clone(), source })?;
        }
        Ok(Sent::default())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io { target: self.target.clone(), source })
    }
}
