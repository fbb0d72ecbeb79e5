//! The replay pipeline: files -> decode -> detect -> sinks, for `exfilwatch replay` (and the
//! benchmarks). Single-threaded by design: the detector's output must not depend on
//! scheduling.
//!
//! Several inputs are independent streams, each roughly in time order (per-account archives).
//! They are merged by event-time progress: the next unit is always read from the stream whose
//! last record is the oldest, so the detector sees the records interleaved about as they
//! happened, and its per-account reorder queues absorb the rest.
//!
//! Analysts' verdicts (`--verdicts`, `input.verdicts`) are an input too: per account, sorted by
//! their event time, each applied just before the account's first record at or after it (the
//! detector first processes the account's queued records older than the verdict), so a replay
//! gives what the stream gives with each verdict applied at that time. Verdicts after the
//! account's last record are applied at the end, before the queues are drained.

use crate::alert::{Alert, Severity};
use crate::config::Config;
use crate::decode::{raw_record_text, Decoded, Decoder, Malformed};
use crate::detect::Detector;
use crate::sinks::{AlertSink, DeadLetter, DeadLetterFile, SinkError};
use crate::sources::file::SourceError;
use crate::sources::{collect_streams, UnitReader};
use crate::telemetry::{BatchProcessed, DeadLettered, MalformedRecord, Stats};
use crate::time::Nanos;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Records per processing-time measurement.
const PROCESSING_BATCH: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Feedback(#[from] crate::feedback::FeedbackError),
    #[error("malformed record ({reason}) at {location} (--strict)")]
    Strict { reason: Malformed, location: String },
}

#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    pub inputs: Vec<PathBuf>,
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
    pub dead_letter: Option<PathBuf>,
    pub strict: bool,
    /// A verdicts file (JSON Lines) merged into the stream by event time.
    pub verdicts: Option<PathBuf>,
    /// Called about every 250 ms of wall-clock time with the running totals (progress bar).
    pub progress_every: Option<Duration>,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    pub stats: Stats,
    pub alerts_medium_or_higher: u64,
    pub elapsed: Duration,
}

/// Runs the pipeline over the inputs. `progress` gets the running stats now and then.
pub fn replay(
    cfg: &Config,
    opts: &ReplayOptions,
    detector: &mut Detector,
    sink: &mut dyn AlertSink,
    mut progress: impl FnMut(&Stats, Duration),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let streams = collect_streams(&opts.inputs)?;
    let max_doc = usize::try_from(cfg.input.max_document_bytes.0).unwrap_or(usize::MAX);
    let mut readers: Vec<UnitReader> = streams.into_iter().map(|s| UnitReader::new(s, max_doc)).collect();
    let mut dead = match &opts.dead_letter {
        Some(p) => Some(DeadLetterFile::create(p)?),
        None => None,
    };
    let mut stats = Stats::default();
    let mut verdicts: Vec<crate::detect::Verdict> = Vec::new();
    if let Some(path) = &opts.verdicts {
        let file = crate::feedback::read_verdicts(path)?;
        for (line, reason, text) in &file.malformed {
            let location = format!("{}:{line}", path.display());
            stats.verdicts_malformed += 1;
            tracing::warn!(message = "Malformed verdict set aside.", location = %location, reason = %reason);
            if let Some(d) = dead.as_mut() {
                d.write(&DeadLetter { reason: "malformed_verdict", location: &location, record: text })?;
                stats.dead_letters += 1;
            }
        }
        verdicts = file.verdicts;
        // By event time; verdicts of one time keep their order in the file.
        verdicts.sort_by_key(|v| v.time());
    }
    let mut pending: BTreeMap<String, VecDeque<crate::detect::Verdict>> = BTreeMap::new();
    for v in verdicts {
        pending.entry(v.account.clone()).or_default().push_back(v);
    }
    let mut decoder = Decoder::new();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut report = ReplayReport::default();
    let mut last_progress = Instant::now();
    // Processing time is measured per batch of records (reading included), never per record.
    let (mut batch_started, mut batch_records) = (Instant::now(), 0u64);

    // Min-heap of (event-time progress, stream index): read from the stream furthest behind.
    let mut heap: BinaryHeap<Reverse<(Nanos, usize)>> = (0..readers.len()).map(|i| Reverse((Nanos::MIN, i))).collect();
    while let Some(Reverse((progress_t, idx))) = heap.pop() {
        let before = readers[idx].bytes_read;
        let Some(unit) = readers[idx].next_unit()? else {
            continue;
        };
        let mut newest = progress_t;
        let mut strict_failure: Option<(Malformed, String)> = None;
        let mut dead_error: Option<SinkError> = None;
        let mut on_malformed = |reason: Malformed, index: Option<usize>, stats: &mut Stats| {
            let location = match index {
                Some(i) => format!("{}:{}#{}", unit.source, unit.line, i),
                None => format!("{}:{}", unit.source, unit.line),
            };
            MalformedRecord { reason, location: &location }.emit(stats);
            if let Some(d) = dead.as_mut() {
                let text = if reason == Malformed::TooLarge {
                    String::from_utf8_lossy(&unit.bytes[..unit.bytes.len().min(4096)])
                } else {
                    raw_record_text(unit.bytes, index)
                };
                match d.write(&DeadLetter { reason: reason.code(), location: &location, record: &text }) {
                    Ok(()) => DeadLettered { reason, location: &location }.emit(stats),
                    Err(e) => {
                        dead_error.get_or_insert(e);
                    }
                }
            }
            if opts.strict && strict_failure.is_none() {
                strict_failure = Some((reason, location));
            }
        };
        if unit.too_large {
            batch_records += 1;
            on_malformed(Malformed::TooLarge, None, &mut stats);
        } else {
            decoder.decode(unit.bytes, |item| match item {
                Decoded::Event(ev) => {
                    batch_records += 1;
                    *stats.records.entry(ev.category).or_default() += 1;
                    if opts.since.is_some_and(|s| ev.time < s) || opts.until.is_some_and(|u| ev.time >= u) {
                        stats.out_of_range += 1;
                        return;
                    }
                    stats.response_bytes += ev.response_bytes;
                    newest = newest.max(ev.time);
                    if !pending.is_empty() {
                        if let Some(q) = pending.get_mut(&*ev.account) {
                            while q.front().is_some_and(|v| v.time() <= ev.time) {
                                if let Some(v) = q.pop_front() {
                                    apply(detector, &v, &mut alerts, &mut stats);
                                }
                            }
                        }
                    }
                    detector.ingest(&ev, &mut alerts);
                }
                Decoded::Skipped(c) => {
                    batch_records += 1;
                    *stats.records.entry(c).or_default() += 1;
                    *stats.skipped.entry(c).or_default() += 1;
                }
                Decoded::Malformed { reason, index } => {
                    batch_records += 1;
                    on_malformed(reason, index, &mut stats)
                }
            });
        }
        stats.input_bytes += readers[idx].bytes_read - before;
        if let Some(e) = dead_error {
            return Err(e.into());
        }
        if let Some((reason, location)) = strict_failure {
            return Err(ReplayError::Strict { reason, location });
        }
        if !alerts.is_empty() {
            deliver(sink, &mut alerts, &mut stats, &mut report)?;
        }
        heap.push(Reverse((newest, idx)));
        if batch_records >= PROCESSING_BATCH {
            BatchProcessed { records: batch_records, elapsed: batch_started.elapsed(), lag: None }.emit(&mut stats);
            (batch_started, batch_records) = (Instant::now(), 0);
        }
        if let Some(every) = opts.progress_every {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                stats.detector = detector.stats().clone();
                progress(&stats, started.elapsed());
            }
        }
    }
    for v in pending.into_values().flatten() {
        apply(detector, &v, &mut alerts, &mut stats);
    }
    detector.finish(&mut alerts);
    deliver(sink, &mut alerts, &mut stats, &mut report)?;
    BatchProcessed { records: batch_records, elapsed: batch_started.elapsed(), lag: None }.emit(&mut stats);
    sink.flush()?;
    if let Some(d) = dead.as_mut() {
        d.flush()?;
    }
    stats.detector = detector.stats().clone();
    report.stats = stats;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn apply(detector: &mut Detector, v: &crate::detect::Verdict, alerts: &mut Vec<Alert>, stats: &mut Stats) {
    // Checked when the file was read; a failure here is counted like a malformed line.
    if let Err(e) = detector.apply_verdict(v, alerts) {
        stats.verdicts_malformed += 1;
        tracing::warn!(message = "Verdict not applied.", alert_id = %v.alert_id, reason = %e);
    }
}

fn deliver(
    sink: &mut dyn AlertSink,
    alerts: &mut Vec<Alert>,
    stats: &mut Stats,
    report: &mut ReplayReport,
) -> Result<(), SinkError> {
    sink.emit(alerts)?;
    stats.count_alerts(alerts);
    report.alerts_medium_or_higher += alerts.iter().filter(|a| a.severity >= Severity::Medium).count() as u64;
    alerts.clear();
    Ok(())
}
