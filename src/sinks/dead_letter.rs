//! What is set aside: malformed records and alerts a sink refused for good, with why and
//! where from. Replay writes a JSON Lines file (`--dead-letter`); the service writes the
//! dead-letter topic (`kafka.dead_letter_topic`, `sinks/kafka.rs`).

use super::SinkError;
use std::io::{self, Write};

/// A record (or alert) set aside, as written to the dead-letter file.
#[derive(serde::Serialize)]
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    /// `file:line` (and `#index` inside an envelope); for an alert, the sink that refused it.
    pub location: &'a str,
    /// The record's original text (lossy UTF-8), or the alert's JSON.
    pub record: &'a str,
    /// The sink's answer, for an alert it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// JSON Lines of [`DeadLetter`]s.
pub struct DeadLetterFile {
    out: io::BufWriter<std::fs::File>,
    target: String,
}

impl DeadLetterFile {
    pub fn create(path: &std::path::Path) -> Result<Self, SinkError> {
        let target = path.display().to_string();
        let f = crate::secure::create_private(path)
            .map_err(|source| SinkError::DeadLetterIo { target: target.clone(), source })?;
        Ok(DeadLetterFile { out: io::BufWriter::new(f), target })
    }

    pub fn write(&mut self, d: &DeadLetter<'_>) -> Result<(), SinkError> {
        let io_err = |source| SinkError::DeadLetterIo { target: self.target.clone(), source };
        serde_json::to_writer(&mut self.out, d).map_err(|e| io_err(e.into()))?;
        self.out.write_all(b"\n").map_err(io_err)
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::DeadLetterIo { target: self.target.clone(), source })
    }
}

/// Where the fan-out puts an alert a sink refused for good.
pub enum DeadLetters {
    /// Nowhere: counted and logged only.
    Off,
    File(DeadLetterFile),
    Kafka(super::kafka::DeadLetterTopic),
}

impl DeadLetters {
    /// Sets a refused alert aside; retried (with backoff) until the destination takes it, so
    /// none is lost. An error only from a file that cannot be written.
    pub async fn alert(&mut self, sink: &str, alert: &[u8], detail: &str) -> Result<(), SinkError> {
        match self {
            DeadLetters::Off => Ok(()),
            DeadLetters::File(f) => f.write(&DeadLetter {
                reason: "sink_rejected",
                location: sink,
                record: &String::from_utf8_lossy(alert),
                detail: Some(detail),
            }),
            DeadLetters::Kafka(topic) => {
                topic.rejected_alert(alert, sink, detail).await;
                Ok(())
            }
        }
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            DeadLetters::File(f) => f.flush(),
            _ => Ok(()),
        }
    }
}
