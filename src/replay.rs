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
use crate::decode::Event;
use crate::decode::{raw_record_text, Decoded, Decoder, Malformed};
use crate::detect::{Admit, ClockGuard, Detector, Out};
use crate::sinks::fanout::{Fanout, Ledger};
use crate::sinks::{DeadLetter, DeadLetterFile, SinkError};
use crate::sources::file::{InputFault, SourceError};
use crate::sources::{collect_streams, UnitReader};
use crate::telemetry::{BatchProcessed, DeadLettered, MalformedRecord, StateEvicted, Stats};
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

/// A record the clock guard holds: what it takes to process it or set it aside later.
struct HeldRecord {
    event: Event<'static>,
    location: String,
    text: String,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    pub stats: Stats,
    pub alerts_medium_or_higher: u64,
    pub elapsed: Duration,
    /// Files and directories that could not be read whole: the input was incomplete.
    pub faults: Vec<InputFault>,
}

/// Runs the pipeline over the inputs, delivering through `sinks` (the fan-out the service
/// uses; replay has no runtime, so it drives it with `block_on`: its sinks write files).
/// `progress` gets the running stats now and then.
pub fn replay(
    cfg: &Config,
    opts: &ReplayOptions,
    detector: &mut Detector,
    sinks: &mut Fanout,
    mut progress: impl FnMut(&Stats, Duration),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let (streams, walk_faults) = collect_streams(&opts.inputs)?;
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
                d.write(&DeadLetter { reason: "malformed_verdict", location: &location, record: text, detail: None })?;
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
    for f in walk_faults {
        input_fault(f, opts.strict, &mut dead, &mut stats, &mut report)?;
    }
    // What the fan-out delivered (an id is delivered once, as in the service).
    let (mut delivered, mut alert_marks) = (BTreeMap::new(), BTreeMap::new());
    let mut last_progress = Instant::now();
    // Processing time is measured per batch of records (reading included), never per record.
    let (mut batch_started, mut batch_records) = (Instant::now(), 0u64);

    // Min-heap of (event-time progress, stream index): read from the stream furthest behind.
    // Between decode and detect: records stamped in the future or long stale are set aside.
    let mut guard: ClockGuard<HeldRecord> = ClockGuard::new(&cfg.detect);
    let mut heap: BinaryHeap<Reverse<(Nanos, usize)>> = (0..readers.len()).map(|i| Reverse((Nanos::MIN, i))).collect();
    while let Some(Reverse((progress_t, idx))) = heap.pop() {
        let before = readers[idx].bytes_read;
        let Some(unit) = readers[idx].next_unit() else {
            for f in readers[idx].take_faults() {
                input_fault(f, opts.strict, &mut dead, &mut stats, &mut report)?;
            }
            continue;
        };
        let mut newest = progress_t;
        let mut strict_failure: Option<(Malformed, String)> = None;
        let mut dead_error: Option<SinkError> = None;
        let mut set_aside = |reason: Malformed, location: &str, text: &str, stats: &mut Stats| {
            if opts.strict {
                // The run stops with this record's error: no "set aside, further ones counted".
                *stats.malformed.entry(reason).or_default() += 1;
            } else {
                MalformedRecord { reason, location }.emit(stats);
            }
            if let Some(d) = dead.as_mut() {
                match d.write(&DeadLetter { reason: reason.code(), location, record: text, detail: None }) {
                    Ok(()) => DeadLettered { reason, location }.emit(stats),
                    Err(e) => {
                        dead_error.get_or_insert(e);
                    }
                }
            }
            if opts.strict && strict_failure.is_none() {
                strict_failure = Some((reason, location.to_string()));
            }
        };
        let location = |index: Option<usize>| match index {
            Some(i) => format!("{}:{}#{}", unit.source, unit.line, i),
            None => format!("{}:{}", unit.source, unit.line),
        };
        if unit.too_large {
            batch_records += 1;
            let text = String::from_utf8_lossy(&unit.bytes[..unit.bytes.len().min(4096)]);
            set_aside(Malformed::TooLarge, &location(None), &text, &mut stats);
        } else {
            let mut item = 0usize;
            decoder.decode(unit.bytes, |decoded| {
                let index = item;
                item += 1;
                batch_records += 1;
                match decoded {
                    Decoded::Event(ev) => {
                        if opts.since.is_some_and(|s| ev.time < s) || opts.until.is_some_and(|u| ev.time >= u) {
                            *stats.records.entry(ev.category).or_default() += 1;
                            stats.out_of_range += 1;
                            return;
                        }
                        let admit = guard.admit(&ev.account, ev.time, || HeldRecord {
                            event: ev.clone().into_owned(),
                            location: location(Some(index)),
                            text: raw_record_text(unit.bytes, Some(index)).into_owned(),
                        });
                        match admit {
                            Admit::Accept => {
                                stats.count_event(&ev);
                                newest = newest.max(ev.time);
                                ingest(detector, &mut pending, &ev, &mut alerts, &mut stats);
                            }
                            // Counted as a record now; moved to malformed if it is set aside.
                            Admit::Held => *stats.records.entry(ev.category).or_default() += 1,
                            Admit::Reject(reason) => {
                                let text = raw_record_text(unit.bytes, Some(index));
                                set_aside(reason, &location(Some(index)), &text, &mut stats)
                            }
                        }
                        while let Some(out) = guard.pop() {
                            if let Some((h, reason)) = settle(out, detector, &mut pending, &mut alerts, &mut stats) {
                                set_aside(reason, &h.location, &h.text, &mut stats);
                            }
                        }
                    }
                    Decoded::Skipped(c) => stats.count_skipped(c),
                    Decoded::Malformed { reason, index } => {
                        let text = raw_record_text(unit.bytes, index);
                        set_aside(reason, &location(index), &text, &mut stats)
                    }
                }
            });
        }
        stats.input_bytes += readers[idx].bytes_read - before;
        for f in readers[idx].take_faults() {
            input_fault(f, opts.strict, &mut dead, &mut stats, &mut report)?;
        }
        if let Some(e) = dead_error {
            return Err(e.into());
        }
        if let Some((reason, location)) = strict_failure {
            return Err(ReplayError::Strict { reason, location });
        }
        if !alerts.is_empty() {
            let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut alert_marks, journal: None };
            deliver(sinks, &mut alerts, ledger, &mut stats, &mut report)?;
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
    // Records still held by the clock guard were never confirmed: set aside (or, for an input
    // shorter than the guard's first run, released).
    guard.finish();
    while let Some(out) = guard.pop() {
        if let Some((h, reason)) = settle(out, detector, &mut pending, &mut alerts, &mut stats) {
            MalformedRecord { reason, location: &h.location }.emit(&mut stats);
            if let Some(d) = dead.as_mut() {
                d.write(&DeadLetter { reason: reason.code(), location: &h.location, record: &h.text, detail: None })?;
                DeadLettered { reason, location: &h.location }.emit(&mut stats);
            }
            if opts.strict {
                return Err(ReplayError::Strict { reason, location: h.location });
            }
        }
    }
    let spells_before = detector.stats().eviction_spells;
    for v in pending.into_values().flatten() {
        apply(detector, &v, &mut alerts, &mut stats);
    }
    detector.finish(&mut alerts);
    StateEvicted { spells_before, detector }.emit();
    let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut alert_marks, journal: None };
    deliver(sinks, &mut alerts, ledger, &mut stats, &mut report)?;
    BatchProcessed { records: batch_records, elapsed: batch_started.elapsed(), lag: None }.emit(&mut stats);
    futures::executor::block_on(sinks.close())?;
    if let Some(d) = dead.as_mut() {
        d.flush()?;
    }
    stats.detector = detector.stats().clone();
    report.stats = stats;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A file the input could not give whole: counted under its reason, logged (each one: every
/// such file is a blob to fetch again), dead-lettered with the error, and noted in the report
/// (the run's exit code says the input was incomplete). Under `--strict`, the end of the run.
fn input_fault(
    f: InputFault,
    strict: bool,
    dead: &mut Option<DeadLetterFile>,
    stats: &mut Stats,
    report: &mut ReplayReport,
) -> Result<(), ReplayError> {
    *stats.malformed.entry(f.reason).or_default() += 1;
    match f.reason {
        Malformed::TruncatedInput => tracing::warn!(
            message = "Input file ends in the middle of its data; the records before the damage were used.",
            reason = f.reason.code(),
            location = %f.location,
            error = %f.error,
        ),
        _ => tracing::warn!(
            message = "Input cannot be read; left out.",
            reason = f.reason.code(),
            location = %f.location,
            error = %f.error,
        ),
    }
    if let Some(d) = dead.as_mut() {
        d.write(&DeadLetter { reason: f.reason.code(), location: &f.location, record: "", detail: Some(&f.error) })?;
        DeadLettered { reason: f.reason, location: &f.location }.emit(stats);
    }
    if strict {
        return Err(ReplayError::Strict { reason: f.reason, location: f.location });
    }
    report.faults.push(f);
    Ok(())
}

/// A held record's fate from the clock guard: a released one goes to the detector; a rejected
/// one leaves its category's record count (it becomes malformed) and is returned to be set aside.
fn settle(
    out: Out<HeldRecord>,
    detector: &mut Detector,
    pending: &mut BTreeMap<String, VecDeque<crate::detect::Verdict>>,
    alerts: &mut Vec<Alert>,
    stats: &mut Stats,
) -> Option<(HeldRecord, Malformed)> {
    match out {
        Out::Release(h) => {
            stats.response_bytes += h.event.response_bytes;
            ingest(detector, pending, &h.event, alerts, stats);
            None
        }
        Out::Reject(h, reason) => {
            if let Some(n) = stats.records.get_mut(&h.event.category) {
                *n = n.saturating_sub(1);
            }
            Some((h, reason))
        }
    }
}

/// Feeds one event to the detector, after the verdicts of its account that take effect at or
/// before its time.
fn ingest(
    detector: &mut Detector,
    pending: &mut BTreeMap<String, VecDeque<crate::detect::Verdict>>,
    ev: &Event<'_>,
    alerts: &mut Vec<Alert>,
    stats: &mut Stats,
) {
    let spells_before = detector.stats().eviction_spells;
    if !pending.is_empty() {
        if let Some(q) = pending.get_mut(&*ev.account) {
            while q.front().is_some_and(|v| v.time() <= ev.time) {
                if let Some(v) = q.pop_front() {
                    apply(detector, &v, alerts, stats);
                }
            }
        }
    }
    detector.ingest(ev, alerts);
    StateEvicted { spells_before, detector }.emit();
}

fn apply(detector: &mut Detector, v: &crate::detect::Verdict, alerts: &mut Vec<Alert>, stats: &mut Stats) {
    // Checked when the file was read; a failure here is counted like a malformed line.
    if let Err(e) = detector.apply_verdict(v, alerts) {
        stats.verdicts_malformed += 1;
        tracing::warn!(message = "Verdict not applied.", alert_id = %v.alert_id, reason = %e);
    }
}

fn deliver(
    sinks: &mut Fanout,
    alerts: &mut Vec<Alert>,
    ledger: Ledger<'_>,
    stats: &mut Stats,
    report: &mut ReplayReport,
) -> Result<(), SinkError> {
    report.alerts_medium_or_higher += alerts.iter().filter(|a| a.severity >= Severity::Medium).count() as u64;
    futures::executor::block_on(sinks.deliver(std::mem::take(alerts), ledger, stats))
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(
        "nothing to train on: {read} records read, {outside} of them outside --since/--until, none taken by the \
         detector; no model written"
    )]
    Empty { read: u64, outside: u64 },
}

/// `exfilwatch train`: replays `opts.inputs` (alerts counted, not written) and writes the
/// detector's learned state to `out` as a model (`crate::model`). Returns the manifest
/// written and the replay's report.
/// `start`: a model's detector to continue (`train --model OLD`: roll a model forward with
/// newer logs without reading the old ones again); None starts empty.
pub fn train(
    cfg: &Config,
    opts: &ReplayOptions,
    start: Option<Detector>,
    out: &std::path::Path,
    progress: impl FnMut(&Stats, Duration),
) -> Result<(crate::model::Manifest, ReplayReport), TrainError> {
    use crate::model::{ModelError, TrainInfo};
    let mut detector = start.unwrap_or_else(|| Detector::new(cfg.detect.clone()));
    let sink = crate::sinks::JsonLinesSink::new(std::io::sink(), "training (alerts dropped)");
    let report = replay(cfg, opts, &mut detector, &mut Fanout::one(sink, cfg.detect.realert.0), progress)?;
    if report.stats.detector.events == 0 {
        // An empty model would start every account's learning period over while looking trained.
        return Err(TrainError::Empty { read: report.stats.records_total(), outside: report.stats.out_of_range });
    }
    let state = detector.export_model().map_err(|source| ModelError::State { dir: out.to_path_buf(), source })?;
    let info = TrainInfo { since: opts.since, until: opts.until, stats: report.stats.clone() };
    let manifest = crate::model::write(out, &state, &info)?;
    Ok((manifest, report))
}
