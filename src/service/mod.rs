//! `exfilwatch run`: the long-running service. Kafka -> decode -> detect -> sinks, with
//! at-least-once delivery.
//!
//! ## The state machine
//! - **Consuming**: one message at a time: decode its records, feed the detector, queue
//!   every alert they raised in the state's outbox and offer it to every sink through the
//!   fan-out (`sinks::fanout`: waiting for the Kafka sink's delivery reports; an alert a sink
//!   refuses for good is set aside and the stream goes on). The message's offset is *stored*
//!   once none of its records waits in a reorder queue any more (the detector reports the
//!   oldest queued arrival) and every sink took their alerts; librdkafka commits stored
//!   offsets periodically, so a committed offset always covers fully processed messages only.
//! - **Sink down**: a failing sink is retried with exponential backoff (100 ms to 30 s) while
//!   the other sinks and the consumption go on; its alerts wait in the outbox (which every
//!   checkpoint holds; without checkpoints no later offset is stored) and `/readyz` answers
//!   503. When `sinks.max_pending_alerts` wait, consumption stops: role all handles no more
//!   messages (they wait in the aligner, which pauses each partition whose buffer is full),
//!   role detect pauses its partitions. The consumer is still polled, so the instance keeps
//!   its partitions and its place in the group (`max.poll.interval.ms`). Nothing is dropped.
//! - **Decoding** (roles all and rekey, `decoding`): a fetched message is decoded once
//!   ([`Fetched`]), on the loop (`service.decode_threads = 1`) or on a pool of decode threads
//!   that hands the decoded messages to the alignment in the order they were fetched (at most
//!   4 per thread in flight; the loop receives nothing more while that many are). A revoked
//!   partition's messages in flight are dropped with its buffered ones; on shutdown those in
//!   flight are, like the buffered ones, never handled.
//! - **Aligning** (roles all and rekey, `sources::align`): decoded messages wait in a
//!   per-partition buffer and are handled in event-time order across
//!   the raw partitions (a partition behind its high watermark with nothing buffered holds the
//!   others back; one whose buffer is all more than `detect.max_out_of_order` ahead of the
//!   slowest, or full, is paused; an idle one leaves after `service.partition_idle_timeout`).
//!   Only a message that left the buffer was handled, so only its offset can be stored or
//!   checkpointed; a revoked partition's buffered messages are dropped unhandled (read again by
//!   the new owner). While a backlog is merged (some partition behind its high watermark),
//!   `max_hold` releases nothing: event time alone decides.
//! - **Holding**: a record waits in its account's reorder queue until the account's event time
//!   is `detect.max_out_of_order` past it, but never longer than `service.max_hold` of
//!   processing time: every 100 ms the records that waited that long are processed (with
//!   everything queued before them). A record that arrives later and belongs before one
//!   already processed is late. This bounds alert latency in a live stream, where event time
//!   moves with the wall clock and a 10-minute reorder window would mean 10-minute-old alerts.
//! - **Rebalancing**: on a revoke, librdkafka calls back between two messages; the stored
//!   offsets are committed synchronously before the partitions go (`sources::kafka`).
//! - **Checkpointing** (with `service.state_store`, the default): every
//!   `service.checkpoint_interval` of processing, the whole state (detector with its reorder
//!   queues, delivered ids, Alertmanager's firing set) is written with the next offset of every
//!   partition it covers (`state` module: temp file, fsync, rename), then those offsets are
//!   committed. Alert ids are journaled durably as soon as every sink accepted them. On start
//!   the newest valid checkpoint is restored with the journal after it; messages below its
//!   offsets are skipped (they are in the state), so the state and the stream position always
//!   agree, even after a SIGKILL, and a re-raised alert is recognised and not re-emitted.
//!   A kill between the alert topic's acknowledgement and the journal's fsync is covered too:
//!   the state keeps, per alert-topic partition, the offset after its last delivery; after a
//!   restore the topic is read back from there before the first produce and the ids found are
//!   not produced again (the other sinks may see that one alert twice, same id).
//!   Without a state store, offsets are stored once a message's records left the reorder
//!   queues and librdkafka auto-commits them.
//! - **Draining** (SIGINT/SIGTERM): stop fetching; write a checkpoint (or, without a state
//!   store, drain the queues and deliver); flush the sinks; commit synchronously; exit 0, all
//!   within `service.shutdown_timeout`.
//! - **Broker away**: librdkafka reconnects with backoff by itself; the condition is logged
//!   once per change, `/readyz` answers 503, and the loop keeps waiting, so no record is
//!   skipped; consumption resumes from the consumer's position when the broker returns.
//! - **Roles** (`service.role`, `run --role`; docs/scaling.md): all of the above is role `all`,
//!   (`all.rs`), one `Shard` (`shard.rs`: detector state and its bookkeeping) for the whole
//!   stream. Role `rekey`
//!   (`rekey.rs`) only decodes, onto the internal topic partitioned by account; role `detect`
//!   (`detect.rs`) runs this pipeline over that topic's batches with one shard per assigned
//!   partition, restored and saved in the consumer's rebalance callback.
//!
//! What every role shares is here: the prologue ([`run_with`]: the checked options, metrics,
//! the HTTP endpoints), the [`Pipeline`] the detecting roles drive (handle a message, deliver,
//! release held records, checkpoint, publish), the receive-error wait, the shutdown deadline
//! (`finish_within`) and the alignment's glue. Beside the loop, `/metrics`, `/healthz` and
//! `/readyz` are served (`service.metrics_addr`, `telemetry::http`); the loop publishes its
//! counters every 100 ms tick.

mod all;
mod decoding;
mod detect;
mod rekey;
mod shard;
pub mod wire;

use shard::{restore, SavedState, Shard};

use crate::alert::Alert;
use crate::config::{Config, Options, Role};
use crate::decode::{raw_record_text, Malformed};
use crate::detect::{ClockGuard, Detector, DetectorStats};
pub(crate) use crate::pipeline::{admit, Fetched};
use crate::sinks::alertmanager::{AlertmanagerOptions, AlertmanagerSink};
use crate::sinks::fanout::Fanout;
use crate::sinks::kafka::{DeadLetterTopic, KafkaAlertSink, Producer};
use crate::sinks::{AlertSink, DeadLetters, JsonLinesSink, SinkError};
use crate::sources::align::{AlignOptions, Aligner, TopicPartition};
use crate::sources::kafka::{self, Consumer, KafkaSourceError, RawMessage};
use crate::telemetry::{BatchProcessed, DeadLettered, Health, MalformedRecord, Metrics, Stats};
use crate::time::Nanos;
pub(crate) use shard::checkpoint_detector;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Source(#[from] KafkaSourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("checkpoint state: {0}")]
    StateBody(String),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Http(#[from] crate::telemetry::http::BindError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot start from the model: {0}")]
    Model(#[from] crate::model::ModelError),
    /// The decode threads (`service.decode_threads`) failed: one could not start, or a
    /// decode panicked (an internal bug).
    #[error("decoding: {0}")]
    Decode(String),
}

/// The per-run machinery every role that detects shares: the clock guard, the sinks'
/// fan-out, the dead-letter topic, offsets waiting to be stored, checkpoint cadence, counters.
pub(crate) struct Pipeline {
    cfg: Options,
    /// Sets aside records stamped ahead of the wall clock or long behind their account.
    clock: ClockGuard<()>,
    stats: Stats,
    sinks: Fanout,
    /// Where malformed records go (`kafka.dead_letter_topic`).
    dead_letters: Option<DeadLetterTopic>,
    /// Handled messages whose offsets are not stored yet, per (topic, partition): (arrival
    /// time as [`Pipeline::now`], offset), in arrival order.
    pending: BTreeMap<(String, i32), VecDeque<(i64, i64)>>,
    /// Checkpoints are written (a state store is configured).
    checkpoints: bool,
    last_checkpoint: std::time::Instant,
    /// The last periodic checkpoint failed (logged once per change).
    checkpoint_failing: bool,
    /// Messages below the restored checkpoint's offsets, skipped.
    skipped_replayed: u64,
    messages: u64,
    metrics: Metrics,
    health: Arc<Health>,
}

impl Pipeline {
    /// Queues alerts in the shard's outbox and tries to deliver them through the fan-out
    /// (every sink; refused ones set aside; a failing sink is tried again after its backoff,
    /// from [`Pipeline::flush`]), noted in the shard's ledger once every sink took them.
    async fn deliver(&mut self, shard: &mut Shard, alerts: Vec<Alert>) -> Result<(), ServiceError> {
        // Every call that feeds the detector delivers its alerts here: the one place to log
        // a new spell of state eviction.
        crate::telemetry::StateEvicted { spells_before: shard.spells_logged, detector: shard.detector() }.emit();
        shard.spells_logged = shard.detector().stats().eviction_spells;
        let now = self.now();
        self.sinks.offer(&mut shard.state.outbox, alerts, &shard.state.delivered, now);
        self.flush(shard).await
    }

    /// Another attempt at the alerts waiting in the shard's outbox, when one is due.
    async fn flush(&mut self, shard: &mut Shard) -> Result<(), ServiceError> {
        let (outbox, ledger) = shard.outbox_ledger();
        Ok(self.sinks.flush(outbox, ledger, &mut self.stats).await?)
    }

    /// Delivers the shard's waiting alerts, waiting for failing sinks, until none waits or
    /// `deadline` passes (shutdown).
    async fn flush_waiting(
        &mut self,
        shard: &mut Shard,
        deadline: Option<std::time::Instant>,
    ) -> Result<(), ServiceError> {
        let (outbox, ledger) = shard.outbox_ledger();
        Ok(self.sinks.deliver_waiting(outbox, ledger, &mut self.stats, deadline).await?)
    }

    /// Whether `pending` alerts waiting for a sink stop consumption now
    /// (`sinks.max_pending_alerts`); a change is logged and counted.
    fn backpressure(&mut self, pending: usize) -> bool {
        let on = self.sinks.backpressure(pending);
        self.stats.pending_alerts = pending as u64;
        if on != self.stats.backpressure {
            crate::telemetry::Backpressure { on, pending }.emit(&mut self.stats);
        }
        on
    }

    /// Feeds a fetched message's records to the detector and delivers the alerts.
    /// `now` is the processing time ([`Pipeline::now`]) its records are queued with.
    async fn handle(&mut self, shard: &mut Shard, fetched: &Fetched, now: i64) -> Result<(), ServiceError> {
        let mut alerts = Vec::new();
        let mut bad: Vec<(Malformed, Option<usize>)> = Vec::new();
        let detector = &mut shard.state.detector;
        let started = std::time::Instant::now();
        let (records, newest) =
            admit(&mut self.clock, &mut self.stats, fetched, &mut bad, |ev| detector.ingest_at(ev, now, &mut alerts));
        let elapsed = started.elapsed() + fetched.decoding;
        let lag = event_lag(newest);
        BatchProcessed { records: records + bad.len() as u64, elapsed, lag }.emit(&mut self.stats);
        self.stats.input_bytes += fetched.payload().len() as u64;
        self.sinks.observe_event_time(newest);
        set_aside(self.dead_letters.as_ref(), &mut self.stats, fetched.payload(), fetched.source(), bad).await;
        self.deliver(shard, alerts).await
    }

    /// One message of the verdicts topic (JSON verdicts, one per line): each applied to the
    /// detector now, at its own event time; a malformed one is logged, counted and skipped.
    async fn handle_verdicts(&mut self, shard: &mut Shard, m: &RawMessage) -> Result<(), ServiceError> {
        let mut alerts = Vec::new();
        let text = String::from_utf8_lossy(&m.payload);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let applied = crate::detect::Verdict::parse_line(line)
                .and_then(|v| shard.state.detector.apply_verdict(&v, &mut alerts).map(|()| v));
            match applied {
                Ok(v) => tracing::info!(
                    message = "Verdict applied.",
                    alert_id = %v.alert_id,
                    verdict = v.verdict.as_str(),
                    account = %v.account,
                    origin = %v.origin
                ),
                Err(error) => {
                    self.stats.verdicts_malformed += 1;
                    tracing::warn!(
                        message = "Malformed verdict set aside.",
                        topic = %m.topic,
                        partition = m.partition,
                        offset = m.offset,
                        %error
                    );
                }
            }
        }
        self.deliver(shard, alerts).await
    }

    /// Role detect: one batch of the internal topic (see [`crate::service::wire`]) into the
    /// partition's detector. A batch from a raw offset the state already covers is a copy
    /// (a rekey instance restarted before committing) and is dropped.
    async fn handle_batch(&mut self, shard: &mut Shard, m: &RawMessage, now: i64) -> Result<(), ServiceError> {
        use crate::service::wire::{Batch, WireError};
        let started = std::time::Instant::now();
        let batch = match Batch::parse(&m.payload) {
            Ok(b) => b,
            Err(error) => {
                let reason = match error {
                    WireError::Json(_) => Malformed::InvalidJson,
                    WireError::Format(_) => Malformed::NotAnObject,
                };
                tracing::debug!(message = "Not an internal-topic batch.", %error);
                set_aside(self.dead_letters.as_ref(), &mut self.stats, &m.payload, m.source(), vec![(reason, None)])
                    .await;
                return Ok(());
            }
        };
        // Also from a copy: the rekey instance's live mark repeats its last batch's source.
        shard.backlog = batch.backlog;
        let raw = format!("{}/{}", batch.source.topic, batch.source.partition);
        if shard.state.raw_marks.get(&raw).is_some_and(|next| batch.source.offset < *next) {
            self.skipped_replayed += 1;
            return Ok(());
        }
        shard.state.raw_marks.insert(raw, batch.source.offset + 1);
        let (mut alerts, mut newest) = (Vec::new(), Nanos::MIN);
        for ev in batch.events() {
            newest = newest.max(ev.time);
            shard.state.detector.ingest_at(&ev, now, &mut alerts);
        }
        let lag = event_lag(newest);
        // Records and input bytes are counted by the rekey role, where they are read.
        BatchProcessed { records: batch.len() as u64, elapsed: started.elapsed(), lag }.emit(&mut self.stats);
        self.sinks.observe_event_time(newest);
        self.deliver(shard, alerts).await
    }

    /// Processing time for `Detector::ingest_at` and `service.max_hold`: wall-clock
    /// milliseconds since the Unix epoch, so that the arrival times in a restored state (written
    /// by an earlier process, or another instance) compare with this process's. (Event time
    /// decides everything else; this only bounds how long a record may wait.)
    fn now(&self) -> i64 {
        now_ms()
    }

    /// A message was handled: counted, its position noted in the shard, and (without
    /// checkpoints) its offset queued to be stored once its records left the reorder queues.
    fn handled<C: kafka::ConsumerContext>(
        &mut self,
        shard: &mut Shard,
        consumer: &Consumer<C>,
        source: (&str, i32, i64),
        now: i64,
    ) {
        let (topic, partition, offset) = source;
        self.messages += 1;
        shard.positions.insert(format!("{topic}/{partition}"), offset + 1);
        if !self.checkpoints {
            self.pending.entry((topic.to_string(), partition)).or_default().push_back((now, offset));
            self.store_ready(shard, consumer);
        }
    }

    /// Stores the offsets of handled messages none of whose records waits in a reorder queue.
    /// Nor any after the oldest alert still waiting for a sink.
    fn store_ready<C: kafka::ConsumerContext>(&mut self, shard: &Shard, consumer: &Consumer<C>) {
        let queued = shard.detector().oldest_queued_arrival().unwrap_or(i64::MAX);
        let limit = queued.min(shard.state.outbox.oldest_since().unwrap_or(i64::MAX));
        for ((topic, partition), q) in &mut self.pending {
            let mut last = None;
            while let Some(&(arrived, offset)) = q.front() {
                if arrived >= limit {
                    break;
                }
                last = Some(offset);
                q.pop_front();
            }
            if let Some(offset) = last {
                consumer.store_offset(topic, *partition, offset);
            }
        }
    }

    /// Moves the counters to Prometheus and the progress to the health report.
    fn publish(&mut self, detector: DetectorStats) {
        self.stats.detector = detector;
        self.metrics.publish(&self.stats);
        let alerts = self.stats.alerts.values().sum();
        // Records read, or (role detect, which reads batches) the events the detectors took.
        let records = self.stats.records_total().max(self.stats.detector.events);
        self.health.progress(self.messages, records, alerts);
    }

    /// Writes a checkpoint (state + the offsets it covers), then commits those offsets.
    fn checkpoint<C: kafka::ConsumerContext>(
        &mut self,
        shard: &mut Shard,
        consumer: &Consumer<C>,
        sync: bool,
    ) -> Result<(), ServiceError> {
        let Some((bytes, took)) = shard.save(self.sinks.checkpoint())? else {
            return Ok(());
        };
        self.last_checkpoint = std::time::Instant::now();
        self.metrics.checkpoint_written(took, bytes, std::time::SystemTime::now());
        if let Err(error) = consumer.commit(&shard.positions, sync) {
            // The checkpoint is what counts; the group's offsets are only a fallback.
            tracing::warn!(message = "Commit after checkpoint failed.", %error);
        }
        Ok(())
    }

    /// Processes every record waiting in the reorder queues, and delivers every alert (waiting
    /// for failing sinks: the shutdown timeout bounds it).
    async fn drain(&mut self, shard: &mut Shard) -> Result<(), ServiceError> {
        let mut alerts = Vec::new();
        shard.state.detector.finish(&mut alerts);
        self.deliver(shard, alerts).await?;
        self.flush_waiting(shard, None).await
    }

    /// Processes the records that waited `service.max_hold` or longer (none while a backlog
    /// is merged upstream, [`Shard::backlog`]: event time alone decides then, as in replay).
    async fn release_held(&mut self, shard: &mut Shard) -> Result<(), ServiceError> {
        if !shard.detector().has_queued() || shard.backlog {
            return Ok(());
        }
        let hold = self.cfg.service.max_hold.as_millis() as i64;
        let cutoff = self.now() - hold;
        let mut alerts = Vec::new();
        shard.state.detector.release_held(cutoff, &mut alerts);
        self.deliver(shard, alerts).await
    }

    /// Whether the periodic checkpoint is due.
    fn checkpoint_due(&self) -> bool {
        self.checkpoints
            && self.cfg.service.checkpoint_interval.is_some_and(|every| self.last_checkpoint.elapsed() >= every)
    }

    /// Notes the outcome of a periodic checkpoint: a failure commits nothing (the previous
    /// checkpoint stays the truth) and is retried next interval, logged once per change (the
    /// checkpoint-age metric and its rule show a store that stays away).
    fn checkpoint_outcome(&mut self, outcome: Result<(), ServiceError>) {
        match outcome {
            Ok(()) => {
                if std::mem::take(&mut self.checkpoint_failing) {
                    self.health.set_checkpoint_failing(false);
                    tracing::info!(message = "Checkpoints written again.");
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut self.checkpoint_failing, true) {
                    self.health.set_checkpoint_failing(true);
                    tracing::error!(message = "Checkpoint failed; retrying every interval, offsets not committed.", %error);
                }
                self.last_checkpoint = std::time::Instant::now();
            }
        }
    }
}

/// Counts malformed records, logs each kind once, and writes them to the dead-letter topic
/// (when one is configured) with the reason and where they came from; retried until the topic
/// takes them, so none is lost.
pub(crate) async fn set_aside(
    dead_letters: Option<&DeadLetterTopic>,
    stats: &mut Stats,
    payload: &[u8],
    source: (&str, i32, i64),
    bad: Vec<(Malformed, Option<usize>)>,
) {
    for (reason, index) in bad {
        let location = match index {
            Some(i) => format!("{}/{}@{}#{}", source.0, source.1, source.2, i),
            None => format!("{}/{}@{}", source.0, source.1, source.2),
        };
        MalformedRecord { reason, location: &location }.emit(stats);
        if let Some(topic) = dead_letters {
            let text = raw_record_text(payload, index);
            topic.record(text.as_bytes(), reason.code(), source, index).await;
            DeadLettered { reason, location: &location }.emit(stats);
        }
    }
}

/// Runs until `shutdown` completes; returns the run's counters.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<Stats, ServiceError> {
    run_with(cfg, Arc::new(Health::default()), shutdown).await
}

/// As [`run`], reporting readiness and progress through `health` (tests watch it). The
/// prologue every role shares (the checked options, metrics, the HTTP endpoints) is here.
pub async fn run_with(
    cfg: Config,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    let cfg = cfg.options("the configuration")?;
    let metrics = Metrics::for_role(cfg.service.role.as_str())?;
    if let Some(addr) = &cfg.service.metrics_addr {
        let addr = crate::telemetry::http::serve(addr, health.clone(), metrics.registry.clone()).await?;
        health.set_http_addr(addr);
    }
    tracing::info!(message = "Starting.", role = cfg.service.role.as_str());
    match cfg.service.role {
        Role::All => all::run(cfg, metrics, health, shutdown).await,
        Role::Rekey => rekey::run(cfg, metrics, health, shutdown).await,
        Role::Detect => detect::run(cfg, metrics, health, shutdown).await,
    }
}

/// The configured alert sinks, in delivery order: stdout, file, the alert topic, the webhook,
/// Alertmanager. A new destination is one more line here (and its file in `sinks/`).
fn sinks_for(cfg: &Options, producer: Option<&Producer>) -> Result<Vec<Box<dyn AlertSink>>, ServiceError> {
    let mut sinks: Vec<Box<dyn AlertSink>> = Vec::new();
    if cfg.sinks.stdout {
        sinks.push(Box::new(
            JsonLinesSink::new(std::io::stdout(), "stdout").flushing().with_format(cfg.sinks.stdout_format),
        ));
    }
    if let Some(path) = &cfg.sinks.file {
        let file = crate::sinks::jsonl::file(&path.display().to_string(), true)?;
        sinks.push(Box::new(file.flushing().with_format(cfg.sinks.file_format)));
    }
    if let (Some(p), Some(topic)) = (producer, &cfg.sinks.kafka_topic) {
        sinks.push(Box::new(KafkaAlertSink::new(p.clone(), topic, &cfg.kafka).with_format(cfg.sinks.kafka_format)));
    }
    if let Some(w) = &cfg.sinks.webhook {
        let sink =
            crate::sinks::webhook::WebhookSink::with_auth(w.url.as_str(), w.timeout, &Default::default(), &w.tls_auth)
                .map_err(SinkError::from)?;
        sinks.push(Box::new(sink.with_format(cfg.sinks.webhook_format)));
    }
    if let Some(am) = &cfg.sinks.alertmanager {
        let mut opts = AlertmanagerOptions::new(am.url.as_str(), cfg.detect.realert.0);
        opts.timeout = am.timeout;
        opts.resend_interval = am.resend_interval;
        opts.min_firing = am.min_firing;
        opts.tls_auth = am.tls_auth.clone();
        sinks.push(Box::new(AlertmanagerSink::new(opts).map_err(SinkError::from)?));
    }
    Ok(sinks)
}

impl Pipeline {
    /// The sinks and counters of a run.
    fn new(cfg: Options, metrics: Metrics, health: Arc<Health>, checkpoints: bool) -> Result<Pipeline, ServiceError> {
        let producer = if cfg.sinks.kafka_topic.is_some() || cfg.dead_letter_topic.is_some() {
            Some(Producer::new(&cfg.kafka, false)?)
        } else {
            None
        };
        let dead_letters = match (&producer, &cfg.dead_letter_topic) {
            (Some(p), Some(topic)) => Some(DeadLetterTopic::new(p.clone(), topic)),
            _ => None,
        };
        let refused = dead_letters.clone().map_or(DeadLetters::Off, DeadLetters::Kafka);
        let sinks = Fanout::new(sinks_for(&cfg, producer.as_ref())?, refused, cfg.detect.realert.0)
            .with_health(health.clone())
            .with_max_pending(cfg.sinks.max_pending_alerts);
        if checkpoints {
            metrics.expect_checkpoints();
        }
        Ok(Pipeline {
            clock: ClockGuard::new(&cfg.detect),
            cfg,
            stats: Stats::default(),
            sinks,
            dead_letters,
            pending: BTreeMap::new(),
            checkpoints,
            last_checkpoint: std::time::Instant::now(),
            checkpoint_failing: false,
            skipped_replayed: 0,
            messages: 0,
            metrics,
            health,
        })
    }
}

/// The end of every role's run: `finish` (save or drain, flush, commit) within
/// `service.shutdown_timeout`.
pub(crate) async fn finish_within<T>(
    cfg: &Options,
    finish: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    let timeout = cfg.service.shutdown_timeout;
    tokio::time::timeout(timeout, finish).await.map_err(|_| ServiceError::ShutdownTimeout(timeout))?
}

/// A receive error (librdkafka reconnects by itself): logged, and the loop waits a little.
pub(crate) async fn receive_error(error: KafkaSourceError) {
    tracing::warn!(message = "Kafka receive error; retrying.", %error);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Bytes of fetched messages the raw partitions may hold in the aligner together, shared
/// equally; a partition whose share is full is paused until it is half empty. 32 MiB: at the
/// pipeline's rate (about 45 MB/s on 2 cores) half of it lasts some 350 ms, longer than a
/// fetch round trip, so a resumed partition's next fetch arrives before the merge waits for
/// it (with one fetch's worth per partition, 1 MiB, the merge waited for every fetch: catch-up
/// ran at a fifth of the rate without alignment, BENCHMARKS.md).
const ALIGN_BUFFER_TOTAL: usize = 32 << 20;

/// ... and at least this much per partition: two fetches (librdkafka's default
/// `max.partition.fetch.bytes` is 1 MiB).
const ALIGN_BUFFER_MIN: usize = 2 << 20;

/// The event-time alignment of the raw partitions: `detect.max_out_of_order` ahead of the
/// slowest pauses a partition; `service.partition_idle_timeout` lets an idle one go.
pub(crate) fn align_options(cfg: &Options) -> AlignOptions {
    AlignOptions {
        bound: cfg.detect.max_out_of_order.0,
        idle_timeout_ms: cfg.service.partition_idle_timeout.as_millis() as i64,
        buffer_bytes: ALIGN_BUFFER_MIN,
        total_bytes: ALIGN_BUFFER_TOTAL,
        enabled: cfg.service.align_partitions,
    }
}

/// Takes the consumer callbacks' reports into the aligner: rebalances (a revoked partition's
/// buffered messages are dropped unhandled, and so are those still being decoded: their
/// offsets were never stored, the new owner reads them again; an assigned one starts
/// unpaused) and watermarks.
pub(crate) fn apply_align_feed(
    feed: &kafka::AlignFeed,
    align: &mut Aligner<Fetched>,
    decoding: &mut decoding::Decoding,
    paused: &mut BTreeSet<TopicPartition>,
    outside: Option<&str>,
    now_ms: i64,
) {
    let report = feed.take();
    for (assigned, topic, partition) in report.rebalances {
        if outside == Some(topic.as_str()) {
            continue; // not aligned (the verdicts topic)
        }
        let tp = (topic, partition);
        paused.remove(&tp);
        if assigned {
            align.assign(tp, now_ms);
        } else {
            let dropped = align.revoke(&tp).len();
            let decoding = decoding.revoke(&tp);
            tracing::debug!(message = "Partition left the alignment.", topic = %tp.0, partition = tp.1, dropped, decoding);
        }
    }
    for (tp, (high, position)) in report.watermarks {
        if outside == Some(tp.0.as_str()) {
            continue;
        }
        // A message received but still being decoded is not in the aligner yet.
        align.set_watermark(&tp, high, decoding.position(&tp, position));
    }
}

/// Pauses the partitions the aligner wants paused and resumes the others.
pub(crate) fn sync_pauses<C: kafka::ConsumerContext, M>(
    consumer: &Consumer<C>,
    align: &mut Aligner<M>,
    paused: &mut BTreeSet<TopicPartition>,
    now_ms: i64,
) {
    let want = align.paused(now_ms);
    if want != *paused {
        tracing::debug!(message = "Alignment pauses.", paused = ?want.iter().map(|tp| tp.1).collect::<Vec<_>>(), partitions = align.partitions().count(), buffered = align.buffered());
        consumer.set_paused(want, paused);
    }
}

/// The loop's 100 ms tick (held records, Alertmanager re-sends, checkpoints, metrics); a late
/// tick is not made up for.
pub(crate) fn ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Wall-clock milliseconds since the Unix epoch: processing time (`max_hold`, the alignment's
/// idle timeout).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Wall time since the event time `newest` (a message's newest record), when there was one.
pub(crate) fn event_lag(newest: Nanos) -> Option<Duration> {
    (newest != Nanos::MIN).then(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(Duration::from_nanos(newest.max(0) as u64))
    })
}

/// Partition count of the internal topic, which must exist: it is the number of detect state
/// shards, a deployment decision, so it is never created implicitly.
pub(crate) fn internal_partitions(cfg: &Options) -> Result<i32, ServiceError> {
    let topic = &cfg.service.internal_topic;
    let n = kafka::partition_count(&cfg.kafka, topic, Duration::from_secs(30))?;
    if n == 0 {
        return Err(ServiceError::Setup(format!(
            "the internal topic {topic:?} does not exist (or has no partitions): create it with as many \
             partitions as detect instances may ever run (docs/scaling.md)"
        )));
    }
    Ok(n as i32)
}

/// The detector's allowlist from `[allow]` (validated when the configuration was loaded).
pub(crate) fn allowlist(cfg: &Options) -> Result<crate::detect::Allowlist, ServiceError> {
    crate::detect::Allowlist::compile(&cfg.allow).map_err(ServiceError::Setup)
}

/// Who owns the addresses, from `[enrich]`'s files (`None` without any).
pub(crate) fn enrichment(cfg: &Options) -> Result<Option<Arc<crate::enrich::Enrichment>>, ServiceError> {
    if cfg.enrich.is_empty() {
        return Ok(None);
    }
    let e = crate::enrich::Enrichment::load(&cfg.enrich).map_err(|e| ServiceError::Setup(e.to_string()))?;
    tracing::info!(message = "Enrichment loaded.", enrichment = ?e);
    Ok(Some(Arc::new(e)))
}

/// `[enrich]` while the service runs: its files are loaded again on SIGHUP or when one's
/// modification time changes (checked every second); a reload that fails keeps the previous
/// one and is logged, and is tried again on SIGHUP or once a file changes again (not every
/// second: a GeoLite2 City database is tens of megabytes).
pub(crate) struct EnrichReload {
    current: Option<Arc<crate::enrich::Enrichment>>,
    hangup: Option<tokio::signal::unix::Signal>,
    last_check: std::time::Instant,
    /// The files' modification times when a reload last failed.
    failed: Option<Vec<(std::path::PathBuf, Option<std::time::SystemTime>)>>,
}

impl EnrichReload {
    pub(crate) fn new(cfg: &Options) -> Result<EnrichReload, ServiceError> {
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(message = "Cannot catch SIGHUP: [enrich] reloads on file changes only.", %error);
                None
            }
        };
        Ok(EnrichReload { current: enrichment(cfg)?, hangup, last_check: std::time::Instant::now(), failed: None })
    }

    pub(crate) fn current(&self) -> Option<Arc<crate::enrich::Enrichment>> {
        self.current.clone()
    }

    /// A new enrichment when SIGHUP came or a file changed and it loaded.
    pub(crate) fn poll(&mut self, cfg: &Options) -> Option<Option<Arc<crate::enrich::Enrichment>>> {
        use futures::FutureExt;
        let hup = self.hangup.as_mut().is_some_and(|s| s.recv().now_or_never().flatten().is_some());
        let due = self.last_check.elapsed() >= Duration::from_secs(1);
        if !hup && !due {
            return None;
        }
        self.last_check = std::time::Instant::now();
        if !hup && !self.current.as_ref().is_some_and(|e| e.changed()) {
            return None;
        }
        let stamps = cfg.enrich.stamps();
        if !hup && self.failed.as_ref() == Some(&stamps) {
            return None; // the files that failed, unchanged
        }
        match enrichment(cfg) {
            Ok(e) => {
                tracing::info!(message = "Enrichment reloaded.", sighup = hup);
                self.current = e;
                self.failed = None;
                Some(self.current.clone())
            }
            Err(error) => {
                tracing::error!(message = "Enrichment reload failed; keeping the previous one.", %error);
                self.failed = Some(stamps);
                None
            }
        }
    }
}

/// A state with no checkpoint starts from `service.model` when one is set.
fn initial_detector(cfg: &Options) -> Result<Detector, ServiceError> {
    let Some(dir) = &cfg.service.model else {
        return Ok(Detector::new(cfg.detect.clone()));
    };
    let (detector, manifest) = crate::model::load_detector(dir, Some(&cfg.detect))?;
    tracing::info!(
        message = "Starting from a trained model.",
        model = %dir.display(),
        keys = manifest.counts.keys,
        until = manifest.event_time.until.as_deref().or(manifest.event_time.last.as_deref()).unwrap_or("")
    );
    Ok(detector)
}
