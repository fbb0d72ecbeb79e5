//! The replay pipeline: files -> decode -> detect -> sinks, for `exfilwatch replay` (and the
//! benchmarks). On several threads (`threads`), with the output of one: this thread reads the
//! inputs and decides the order of everything (the merge below, `--since/--until`, the clock
//! guard, verdicts, dead letters, `--strict`); units are decoded ahead on worker threads
//! (`ahead.rs`), and detection runs on shards of accounts whose alerts are merged back in the
//! order one detector gives (`shards.rs`).
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
use crate::telemetry::{BatchProcessed, DeadLettered, MalformedRecord, Stats};
use crate::time::Nanos;
use ahead::ReadAhead;
use shards::{Engine, Local, Single, Threaded};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Records per processing-time measurement.
const PROCESSING_BATCH: u64 = 4096;

mod ahead;
mod packed;
pub mod shards;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Threads(#[from] shards::ShardError),
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
    /// Threads to decode and detect on (0 or 1: this one). `replay_sharded` gives the same
    /// output for every value; `replay` (one detector) only decodes on them.
    pub threads: usize,
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

/// Runs the pipeline over the inputs with one detector, bounded after every call (`train`,
/// and tests that keep the detector), delivering through `sinks` (the fan-out the service
/// uses; replay has no runtime, so it drives it with `block_on`: its sinks write files).
/// `progress` gets the running stats now and then. With `opts.threads` above 1, units are
/// decoded on that many threads (`ahead.rs`); detection stays on this one.
pub fn replay(
    cfg: &Config,
    opts: &ReplayOptions,
    detector: &mut Detector,
    sinks: &mut Fanout,
    progress: impl FnMut(&Stats, Duration),
) -> Result<ReplayReport, ReplayError> {
    run(cfg, opts, Single { detector, verdict_failures: 0 }, sinks, progress)
}

/// `exfilwatch replay`: as [`replay`], with the detector split by account into
/// [`shards::VIRTUAL_SHARDS`] shards and the state bound decided over all of them at epoch
/// boundaries ([`shards`]): decoded on `opts.threads` threads and detected on as many, the
/// output (alerts and their order, dead letters, counts) is the same for every thread count.
pub fn replay_sharded(
    cfg: &Config,
    opts: &ReplayOptions,
    detector: Detector,
    sinks: &mut Fanout,
    progress: impl FnMut(&Stats, Duration),
) -> Result<ReplayReport, ReplayError> {
    if threads(opts) > 1 {
        run(cfg, opts, Threaded::new(detector, threads(opts))?, sinks, progress)
    } else {
        run(cfg, opts, Local::new(detector), sinks, progress)
    }
}

/// The threads to use: one when reading stdin, which may be live (a record read is processed
/// before the next one is waited for, as with one thread; chunks and epochs would wait).
fn threads(opts: &ReplayOptions) -> usize {
    if opts.inputs.iter().any(|p| p.as_os_str() == "-") {
        1
    } else {
        // More detect threads than shards would idle.
        opts.threads.min(shards::VIRTUAL_SHARDS)
    }
}

/// Where a unit came from, for locations and dead letters.
struct UnitAt<'u> {
    bytes: &'u [u8],
    source: &'u str,
    line: u64,
}

impl UnitAt<'_> {
    fn location(&self, index: Option<usize>) -> String {
        match index {
            Some(i) => format!("{}:{}#{}", self.source, self.line, i),
            None => format!("{}:{}", self.source, self.line),
        }
    }
}

/// The replay loop's state between decode and detect: the clock guard, the verdicts waiting
/// for their time, the counters, the dead letters; the engine detects.
struct Run<'o, E> {
    opts: &'o ReplayOptions,
    guard: ClockGuard<HeldRecord>,
    stats: Stats,
    dead: Option<DeadLetterFile>,
    pending: BTreeMap<String, VecDeque<crate::detect::Verdict>>,
    engine: E,
    alerts: Vec<Alert>,
    strict_failure: Option<(Malformed, String)>,
    dead_error: Option<SinkError>,
    batch_records: u64,
    report: ReplayReport,
}

impl<E: Engine> Run<'_, E> {
    fn set_aside(&mut self, reason: Malformed, location: &str, text: &str) {
        let stats = &mut self.stats;
        if self.opts.strict {
            // The run stops with this record's error: no "set aside, further ones counted".
            *stats.malformed.entry(reason).or_default() += 1;
        } else {
            MalformedRecord { reason, location }.emit(stats);
        }
        if let Some(d) = self.dead.as_mut() {
            match d.write(&DeadLetter { reason: reason.code(), location, record: text, detail: None }) {
                Ok(()) => DeadLettered { reason, location }.emit(stats),
                Err(e) => {
                    self.dead_error.get_or_insert(e);
                }
            }
        }
        if self.opts.strict && self.strict_failure.is_none() {
            self.strict_failure = Some((reason, location.to_string()));
        }
    }

    /// One decoded record of a unit (`index`: its place in the unit). `newest`: the unit's
    /// event-time progress.
    fn item(&mut self, unit: &UnitAt<'_>, index: usize, decoded: Decoded<'_>, newest: &mut Nanos) {
        self.batch_records += 1;
        match decoded {
            Decoded::Event(ev) => {
                let opts = self.opts;
                if opts.since.is_some_and(|s| ev.time < s) || opts.until.is_some_and(|u| ev.time >= u) {
                    *self.stats.records.entry(ev.category).or_default() += 1;
                    self.stats.out_of_range += 1;
                    return;
                }
                let admit = self.guard.admit(&ev.account, ev.time, || HeldRecord {
                    event: ev.clone().into_owned(),
                    location: unit.location(Some(index)),
                    text: raw_record_text(unit.bytes, Some(index)).into_owned(),
                });
                match admit {
                    Admit::Accept => {
                        self.stats.count_event(&ev);
                        *newest = (*newest).max(ev.time);
                        self.ingest(ev);
                    }
                    // Counted as a record now; moved to malformed if it is set aside.
                    Admit::Held => *self.stats.records.entry(ev.category).or_default() += 1,
                    Admit::Reject(reason) => {
                        let text = raw_record_text(unit.bytes, Some(index));
                        self.set_aside(reason, &unit.location(Some(index)), &text)
                    }
                }
                while let Some(out) = self.guard.pop() {
                    if let Some((h, reason)) = self.settle(out) {
                        self.set_aside(reason, &h.location, &h.text);
                    }
                }
            }
            Decoded::Skipped(c) => self.stats.count_skipped(c),
            Decoded::Malformed { reason, index } => {
                let text = raw_record_text(unit.bytes, index);
                self.set_aside(reason, &unit.location(index), &text)
            }
        }
    }

    /// A unit cut off at the document size limit.
    fn too_large(&mut self, unit: &UnitAt<'_>) {
        self.batch_records += 1;
        let text = String::from_utf8_lossy(&unit.bytes[..unit.bytes.len().min(4096)]);
        self.set_aside(Malformed::TooLarge, &unit.location(None), &text);
    }

    /// The fate the clock guard gave a held record: a released one goes to the detection; a
    /// rejected one leaves its category's record count (it becomes malformed) and is returned
    /// to be set aside.
    fn settle(&mut self, out: Out<HeldRecord>) -> Option<(HeldRecord, Malformed)> {
        match out {
            Out::Release(h) => {
                self.stats.response_bytes += h.event.response_bytes;
                self.ingest(h.event);
                None
            }
            Out::Reject(h, reason) => {
                if let Some(n) = self.stats.records.get_mut(&h.event.category) {
                    *n = n.saturating_sub(1);
                }
                Some((h, reason))
            }
        }
    }

    /// Feeds one event to the detection, after the verdicts of its account that take effect
    /// at or before its time.
    fn ingest(&mut self, ev: Event<'_>) {
        if !self.pending.is_empty() {
            if let Some(q) = self.pending.get_mut(&*ev.account) {
                while q.front().is_some_and(|v| v.time() <= ev.time) {
                    if let Some(v) = q.pop_front() {
                        self.engine.verdict(&v, &mut self.alerts);
                    }
                }
            }
        }
        self.engine.event(ev, &mut self.alerts);
    }

    /// A file the input could not give whole (see [`input_fault`]).
    fn fault(&mut self, f: InputFault) -> Result<(), ReplayError> {
        input_fault(f, self.opts.strict, &mut self.dead, &mut self.stats, &mut self.report)
    }

    /// After a unit: the first error it met, if any.
    fn unit_error(&mut self) -> Option<ReplayError> {
        if let Some(e) = self.dead_error.take() {
            return Some(e.into());
        }
        self.strict_failure.take().map(|(reason, location)| ReplayError::Strict { reason, location })
    }

    /// The run stops with `e`: the alerts of the units before the current one are delivered
    /// first (as they would have been, one unit at a time).
    fn fail(&mut self, sinks: &mut Fanout, ledger: Ledger<'_>, e: ReplayError) -> ReplayError {
        self.engine.abort(&mut self.alerts);
        if !self.alerts.is_empty() {
            if let Err(d) = deliver(sinks, &mut self.alerts, ledger, &mut self.stats, &mut self.report) {
                tracing::warn!(message = "Alerts not delivered while stopping.", error = %d);
            }
        }
        e
    }
}

/// The pipeline with a given detection engine.
fn run<E: Engine>(
    cfg: &Config,
    opts: &ReplayOptions,
    engine: E,
    sinks: &mut Fanout,
    mut progress: impl FnMut(&Stats, Duration),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let (streams, walk_faults) = collect_streams(&opts.inputs)?;
    let max_doc = usize::try_from(cfg.input.max_document_bytes.0).unwrap_or(usize::MAX);
    let readers: Vec<UnitReader> = streams.into_iter().map(|s| UnitReader::new(s, max_doc)).collect();
    let dead = match &opts.dead_letter {
        Some(p) => Some(DeadLetterFile::create(p)?),
        None => None,
    };
    let mut r = Run {
        opts,
        guard: ClockGuard::new(&cfg.detect),
        stats: Stats::default(),
        dead,
        pending: BTreeMap::new(),
        engine,
        alerts: Vec::new(),
        strict_failure: None,
        dead_error: None,
        batch_records: 0,
        report: ReplayReport::default(),
    };
    let mut verdicts: Vec<crate::detect::Verdict> = Vec::new();
    if let Some(path) = &opts.verdicts {
        let file = crate::feedback::read_verdicts(path)?;
        for (line, reason, text) in &file.malformed {
            let location = format!("{}:{line}", path.display());
            r.stats.verdicts_malformed += 1;
            tracing::warn!(message = "Malformed verdict set aside.", location = %location, reason = %reason);
            if let Some(d) = r.dead.as_mut() {
                d.write(&DeadLetter { reason: "malformed_verdict", location: &location, record: text, detail: None })?;
                r.stats.dead_letters += 1;
            }
        }
        verdicts = file.verdicts;
        // By event time; verdicts of one time keep their order in the file.
        verdicts.sort_by_key(|v| v.time());
    }
    for v in verdicts {
        r.pending.entry(v.account.clone()).or_default().push_back(v);
    }
    // What the fan-out delivered (an id is delivered once, as in the service).
    let (mut delivered, mut alert_marks) = (BTreeMap::new(), BTreeMap::new());
    macro_rules! ledger {
        () => {
            Ledger { delivered: &mut delivered, alert_marks: &mut alert_marks, journal: None }
        };
    }
    for f in walk_faults {
        if let Err(e) = r.fault(f) {
            return Err(r.fail(sinks, ledger!(), e));
        }
    }
    let mut last_progress = Instant::now();
    // Processing time is measured per batch of records (reading included), never per record.
    let mut batch_started = Instant::now();

    // Decoded here, or ahead on other threads.
    let mut source = match threads(opts) {
        0 | 1 => Source::Here(readers, Box::default()),
        n => Source::Ahead(Box::new(ReadAhead::new(readers, n)?)),
    };
    let streams = match &source {
        Source::Ahead(a) => a.streams(),
        Source::Here(readers, _) => readers.len(),
    };
    // Min-heap of (event-time progress, stream index): read from the stream furthest behind.
    // Between decode and detect: records stamped in the future or long stale are set aside.
    let mut heap: BinaryHeap<Reverse<(Nanos, usize)>> = (0..streams).map(|i| Reverse((Nanos::MIN, i))).collect();
    while let Some(Reverse((progress_t, idx))) = heap.pop() {
        r.engine.unit_start();
        let mut newest = progress_t;
        let mut faults = Vec::new();
        match &mut source {
            Source::Here(readers, decoder) => {
                let before = readers[idx].bytes_read;
                let Some(unit) = readers[idx].next_unit() else {
                    for f in readers[idx].take_faults() {
                        if let Err(e) = r.fault(f) {
                            return Err(r.fail(sinks, ledger!(), e));
                        }
                    }
                    continue;
                };
                let at = UnitAt { bytes: unit.bytes, source: unit.source, line: unit.line };
                if unit.too_large {
                    r.too_large(&at);
                } else {
                    let mut index = 0usize;
                    decoder.decode(unit.bytes, |decoded| {
                        r.item(&at, index, decoded, &mut newest);
                        index += 1;
                    });
                }
                r.stats.input_bytes += readers[idx].bytes_read - before;
                faults.extend(readers[idx].take_faults());
            }
            Source::Ahead(a) => {
                if let ahead::Step::End(end) = a.advance(idx)? {
                    for f in end {
                        if let Err(e) = r.fault(f) {
                            return Err(r.fail(sinks, ledger!(), e));
                        }
                    }
                    continue;
                }
                if let Some((chunk, u, items)) = a.unit(idx) {
                    let at = UnitAt {
                        bytes: chunk.unit_bytes(u),
                        source: chunk.sources.get(u.source).map_or("", |s| s.as_str()),
                        line: u.line,
                    };
                    if u.too_large {
                        r.too_large(&at);
                    } else {
                        for (index, item) in items.iter().enumerate() {
                            let decoded = match item {
                                ahead::Item::Event(i) => match chunk.events.get(*i) {
                                    Some(ev) => Decoded::Event(ev),
                                    None => continue,
                                },
                                ahead::Item::Skipped(c) => Decoded::Skipped(*c),
                                ahead::Item::Malformed { reason, index } => {
                                    Decoded::Malformed { reason: *reason, index: *index }
                                }
                            };
                            r.item(&at, index, decoded, &mut newest);
                        }
                    }
                    r.stats.input_bytes += u.read;
                }
                faults.extend(a.take_faults(idx));
            }
        }
        for f in faults {
            if let Err(e) = r.fault(f) {
                return Err(r.fail(sinks, ledger!(), e));
            }
        }
        if let Some(e) = r.unit_error() {
            return Err(r.fail(sinks, ledger!(), e));
        }
        r.engine.ready(&mut r.alerts)?;
        if !r.alerts.is_empty() {
            deliver(sinks, &mut r.alerts, ledger!(), &mut r.stats, &mut r.report)?;
        }
        heap.push(Reverse((newest, idx)));
        if r.batch_records >= PROCESSING_BATCH {
            BatchProcessed { records: r.batch_records, elapsed: batch_started.elapsed(), lag: None }.emit(&mut r.stats);
            (batch_started, r.batch_records) = (Instant::now(), 0);
        }
        if let Some(every) = opts.progress_every {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                r.stats.detector = r.engine.stats();
                progress(&r.stats, started.elapsed());
            }
        }
    }
    drop(source);
    // Records still held by the clock guard were never confirmed: set aside (or, for an input
    // shorter than the guard's first run, released).
    r.engine.unit_start();
    r.guard.finish();
    while let Some(out) = r.guard.pop() {
        if let Some((h, reason)) = r.settle(out) {
            MalformedRecord { reason, location: &h.location }.emit(&mut r.stats);
            if let Some(d) = r.dead.as_mut() {
                if let Err(e) =
                    d.write(&DeadLetter { reason: reason.code(), location: &h.location, record: &h.text, detail: None })
                {
                    return Err(r.fail(sinks, ledger!(), e.into()));
                }
                DeadLettered { reason, location: &h.location }.emit(&mut r.stats);
            }
            if opts.strict {
                return Err(r.fail(sinks, ledger!(), ReplayError::Strict { reason, location: h.location }));
            }
        }
    }
    for v in std::mem::take(&mut r.pending).into_values().flatten() {
        r.engine.verdict(&v, &mut r.alerts);
    }
    r.engine.finish(&mut r.alerts)?;
    deliver(sinks, &mut r.alerts, ledger!(), &mut r.stats, &mut r.report)?;
    BatchProcessed { records: r.batch_records, elapsed: batch_started.elapsed(), lag: None }.emit(&mut r.stats);
    futures::executor::block_on(sinks.close())?;
    if let Some(d) = r.dead.as_mut() {
        d.flush()?;
    }
    r.stats.verdicts_malformed += r.engine.verdict_failures();
    r.stats.detector = r.engine.stats();
    let mut report = r.report;
    report.stats = r.stats;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Where units come from: read and decoded on this thread, or decoded ahead.
enum Source {
    Here(Vec<UnitReader>, Box<Decoder>),
    Ahead(Box<ReadAhead>),
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
    /// `origin_granularity = "asn"`: the origins are ASes, so training needs `[enrich]`.
    #[error("[enrich]: {0}")]
    Enrich(#[from] crate::enrich::EnrichError),
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
    // At asn granularity an origin is what the enrichment says; otherwise the enrichment
    // changes alerts only, which training drops.
    if cfg.detect.origin_granularity == crate::config::OriginGranularity::Asn && !detector.has_enrichment() {
        let e = crate::enrich::Enrichment::load(&cfg.enrich)?;
        detector.set_enrichment(Some(std::sync::Arc::new(e)));
    }
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
