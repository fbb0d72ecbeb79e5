//! Analysts' feedback: `exfilwatch feedback` finds an alert in an alerts file and appends the
//! verdicts it makes to a verdicts file; `replay` reads that file back. The verdicts
//! themselves, and what they do to the detector, are in `detect/verdict.rs`.
//!
//! A verdicts file is JSON Lines, one [`Verdict`] per line. A line that is not a valid
//! verdict is counted and set aside (the caller logs it and writes it to the dead-letter file),
//! never fatal.

use crate::alert::Alert;
use crate::detect::{Verdict, VerdictError};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("no alert with id {id} in {path} ({alerts} alerts read)")]
    UnknownAlert { id: String, path: PathBuf, alerts: u64 },
    #[error(transparent)]
    Verdict(#[from] VerdictError),
    #[error("cannot produce the verdict to topic {topic}: {source}")]
    Produce { topic: String, source: crate::sinks::SinkError },
}

/// A verdicts file: the valid verdicts in file order, and the lines set aside.
#[derive(Debug, Default)]
pub struct VerdictsFile {
    pub verdicts: Vec<Verdict>,
    /// (line number, reason, text) of each malformed line.
    pub malformed: Vec<(u64, String, String)>,
}

/// Reads a verdicts file. A missing file is an error (the caller named it).
pub fn read_verdicts(path: &Path) -> Result<VerdictsFile, FeedbackError> {
    let rerr = |source| FeedbackError::Read { path: path.to_path_buf(), source };
    let f = std::fs::File::open(path).map_err(rerr)?;
    let mut out = VerdictsFile::default();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(rerr)?;
        if line.trim().is_empty() {
            continue;
        }
        match Verdict::parse_line(&line) {
            Ok(v) => out.verdicts.push(v),
            Err(e) => out.malformed.push((i as u64 + 1, e.to_string(), line)),
        }
    }
    Ok(out)
}

/// The alert with id `id` in a JSON Lines alerts file (what `replay -o` and the file sink
/// write). Lines that are not alerts are passed over.
pub fn find_alert(path: &Path, id: &str) -> Result<Alert, FeedbackError> {
    let rerr = |source| FeedbackError::Read { path: path.to_path_buf(), source };
    let f = std::fs::File::open(path).map_err(rerr)?;
    let mut alerts = 0u64;
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(rerr)?;
        let Ok(a) = serde_json::from_str::<Alert>(&line) else { continue };
        alerts += 1;
        if a.id == id {
            return Ok(a);
        }
    }
    Err(FeedbackError::UnknownAlert { id: id.to_string(), path: path.to_path_buf(), alerts })
}

/// Produces verdicts to the verdicts topic (`service.verdicts_topic`), one message each keyed
/// by the alert id, waiting for the broker's acknowledgement of every one.
pub async fn produce_verdicts(
    cfg: &crate::config::KafkaConfig,
    topic: &str,
    verdicts: &[Verdict],
) -> Result<(), FeedbackError> {
    let mut messages = Vec::with_capacity(verdicts.len());
    for v in verdicts {
        let json = serde_json::to_vec(v).map_err(|e| FeedbackError::Verdict(VerdictError::Malformed(e.to_string())))?;
        messages.push((v.alert_id.clone(), json));
    }
    crate::sinks::kafka::produce_keyed(cfg, topic, &messages)
        .await
        .map_err(|source| FeedbackError::Produce { topic: topic.to_string(), source })
}

/// Appends verdicts to a verdicts file (created if needed), durably.
pub fn append_verdicts(path: &Path, verdicts: &[Verdict]) -> Result<(), FeedbackError> {
    let werr = |source| FeedbackError::Write { path: path.to_path_buf(), source };
    let mut text = String::new();
    for v in verdicts {
        text.push_str(&serde_json::to_string(v).map_err(|e| werr(e.into()))?);
        text.push('\n');
    }
    let mut f = crate::secure::open_private(path, true).map_err(werr)?;
    f.write_all(text.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)
}
