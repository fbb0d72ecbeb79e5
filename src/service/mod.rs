//! `exfilwatch run`: the long-running service. Kafka -> decode -> detect -> sinks, with
//! at-least-once delivery.
//!
//! ## The state machine
//! - **Consuming**: one message at a time: decode its records, feed the detector, deliver
//!   every alert they raised to every sink (waiting for the Kafka sink's delivery reports,
//!   retrying a failing sink with exponential backoff, never dropping). The message's offset
//!   is *stored* once none of its records waits in a reorder queue any more (the detector
//!   reports the oldest queued arrival) and their alerts were accepted; librdkafka commits
//!   stored offsets periodically, so a committed offset always covers fully processed
//!   messages only. While a sink fails, the loop retries it and nothing later is stored.
//! - **Aligning** (roles all and rekey, `sources::align`): fetched messages are decoded once
//!   ([`Fetched`]), wait in a per-partition buffer and are handled in event-time order across
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
//!   one `Shard` (detector state and its bookkeeping) for the whole stream. Role `rekey`
//!   (`rekey.rs`) only decodes, onto the internal topic partitioned by account; role `detect`
//!   (`detect.rs`) runs this pipeline over that topic's batches with one shard per assigned
//!   partition, restored and saved in the consumer's rebalance callback.
//!
//! Beside the loop, `/metrics`, `/healthz` and `/readyz` are served (`service.metrics_addr`,
//! module [`http`]); the loop publishes its counters every 100 ms tick.

mod detect;
pub mod http;
mod rekey;

use crate::alert::Alert;
use crate::config::{Config, Role};
use crate::decode::{raw_record_text, Decoded, Decoder, Malformed};
use crate::detect::{Admit, ClockGuard, Detector, DetectorStats};
use crate::sinks::alertmanager::{AlertmanagerOptions, AlertmanagerSink};
use crate::sinks::kafka::KafkaProducerSink;
use crate::sinks::{AlertSink, JsonLinesSink, SinkError};
use crate::sources::align::{AlignOptions, Aligner, TopicPartition};
use crate::sources::kafka::{self, KafkaSourceError, LogConsumer};
use crate::telemetry::{
    AlertsDelivered, BatchProcessed, DeadLettered, Health, MalformedRecord, Metrics, ResendFailed, SinkFailed,
    SinkKind, SinkRecovered, SinkRejected, Stats,
};
use crate::time::{parse_timestamp, Nanos};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Source(#[from] KafkaSourceError),
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("checkpoint state: {0}")]
    StateBody(String),
    #[error("webhook sink: {0}")]
    Webhook(String),
    #[error("alertmanager sink: {0}")]
    Alertmanager(String),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Http(#[from] http::BindError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot start from the model: {0}")]
    Model(#[from] crate::model::ModelError),
}

/// What a graceful shutdown saves and a start restores.
#[derive(Serialize, Deserialize)]
struct SavedState {
    detector: Detector,
    /// Alert ids already delivered, with their trigger time, within the realert horizon.
    delivered: BTreeMap<String, Nanos>,
    /// The Alertmanager sink's firing alerts (re-sent and resolved after a restart).
    #[serde(default)]
    alertmanager: Option<crate::sinks::alertmanager::FiringSnapshot>,
    /// Next offset after the last alert delivered, per alert-topic partition.
    #[serde(default)]
    alert_topic_marks: BTreeMap<i32, i64>,
    /// Role detect: next raw offset per raw `topic/partition` whose batches are in the state.
    #[serde(default)]
    raw_marks: BTreeMap<String, i64>,
}

/// One detector's state and where it is saved: the whole stream's (role all), or one internal
/// partition's (role detect, `detect.rs`).
pub(crate) struct Shard {
    detector: Detector,
    /// Alert ids already delivered, with their trigger time, within the realert horizon.
    delivered: BTreeMap<String, Nanos>,
    /// Next offset after the last alert this state delivered, per alert-topic partition.
    alert_marks: BTreeMap<i32, i64>,
    /// Role detect: next raw offset per raw `topic/partition` whose batches are in the state
    /// (a batch below it is a copy a restarted rekey instance produced again).
    raw_marks: BTreeMap<String, i64>,
    /// Next offset to read per `topic/partition`: everything before it is in the state.
    positions: BTreeMap<String, i64>,
    store: Option<crate::state::StateStore>,
    /// A backlog is being merged upstream of this state: in role all its own aligner is not
    /// live; in role detect the last batch said the rekey instance's was not (`decode::wire`).
    /// Event time alone releases the reorder queues then, as in replay (`release_held`).
    backlog: bool,
    /// Role detect: the detector's counters when this process took the partition (a
    /// checkpoint carries them); this process publishes only their growth since.
    baseline: DetectorStats,
}

impl Shard {
    fn new(detector: Detector, store: Option<crate::state::StateStore>) -> Shard {
        Shard {
            detector,
            delivered: BTreeMap::new(),
            alert_marks: BTreeMap::new(),
            raw_marks: BTreeMap::new(),
            positions: BTreeMap::new(),
            store,
            backlog: false,
            baseline: DetectorStats::default(),
        }
    }

    /// A state restored from a checkpoint covering `positions`.
    fn restored(s: SavedState, positions: Offsets, store: Option<crate::state::StateStore>) -> Shard {
        Shard {
            detector: s.detector,
            delivered: s.delivered,
            alert_marks: s.alert_topic_marks,
            raw_marks: s.raw_marks,
            positions,
            store,
            backlog: false,
            baseline: DetectorStats::default(),
        }
    }

    /// Writes a checkpoint of this state and the offsets it covers; returns its size and how
    /// long it took. Nothing without a store.
    fn save(
        &mut self,
        alertmanager: Option<crate::sinks::alertmanager::FiringSnapshot>,
    ) -> Result<Option<(u64, Duration)>, ServiceError> {
        let Some(store) = &mut self.store else { return Ok(None) };
        let t = std::time::Instant::now();
        let body = serde_json::to_vec(&SavedStateRef {
            detector: &self.detector,
            delivered: &self.delivered,
            alertmanager,
            alert_topic_marks: &self.alert_marks,
            raw_marks: &self.raw_marks,
        })
        .map_err(|e| ServiceError::StateBody(e.to_string()))?;
        let bytes = store.write_checkpoint(self.positions.clone(), &body)?;
        Ok(Some((bytes, t.elapsed())))
    }

    /// The positions as a list to commit.
    fn offsets_to_commit(&self) -> rdkafka::TopicPartitionList {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (tp, off) in &self.positions {
            if let Some((topic, partition)) = tp.rsplit_once('/').and_then(|(t, p)| Some((t, p.parse().ok()?))) {
                let _ = tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(*off));
            }
        }
        tpl
    }

    /// Notes alerts every sink accepted: journaled durably (when there is a store), and kept
    /// within the realert horizon.
    fn delivered(&mut self, alerts: &[Alert], horizon: Nanos) {
        if let Some(store) = &mut self.store {
            let ids: Vec<(String, Nanos)> = alerts
                .iter()
                .map(|a| (a.id.clone(), parse_timestamp(&a.trigger_event_time).unwrap_or(Nanos::MIN)))
                .collect();
            // Not fatal: the ids are in memory and go into the next checkpoint; only a crash
            // before it could repeat them (the alert topic's read-back still catches those).
            if let Err(error) = store.journal_delivered(&ids) {
                tracing::warn!(message = "Journal entry for delivered alerts failed.", %error);
            }
        }
        let mut newest = Nanos::MIN;
        for a in alerts {
            let t = parse_timestamp(&a.trigger_event_time).unwrap_or(Nanos::MIN);
            newest = newest.max(t);
            self.delivered.insert(a.id.clone(), t);
        }
        self.delivered.retain(|_, t| *t >= newest.saturating_sub(horizon));
    }
}

pub(crate) struct Pipeline {
    cfg: Config,
    decoder: Decoder,
    /// Sets aside records stamped ahead of the wall clock or long behind their account.
    clock: ClockGuard<()>,
    stats: Stats,
    files: Vec<JsonLinesSink<Box<dyn Write + Send>>>,
    producer: Option<KafkaProducerSink>,
    webhook: Option<crate::sinks::webhook::WebhookSink>,
    alertmanager: Option<AlertmanagerSink>,
    /// The Alertmanager sink's last tick failed (logged once per change).
    alertmanager_failing: bool,
    /// Restored from a checkpoint and not yet checked: the alert topic is read from these
    /// marks before the next delivery, for alerts a killed run delivered but had not
    /// journaled yet.
    restart_scan: Option<BTreeMap<i32, i64>>,
    /// Alert ids found on the alert topic by that read: not produced again.
    on_alert_topic: std::collections::HashSet<String>,
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

/// Waits between retries of something outside (a sink, the dead-letter topic): 100 ms,
/// doubling, at most 30 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}

/// One sink's retries within a delivery: exponential backoff from 100 ms to 30 s; the failure
/// is counted every time, logged and reported (not ready) once per failing spell.
struct Retrying {
    sink: SinkKind,
    backoff: Backoff,
    failing: bool,
}

impl Retrying {
    fn new(sink: SinkKind) -> Retrying {
        Retrying { sink, backoff: Backoff::new(), failing: false }
    }

    /// Records a failed attempt and waits before the next.
    async fn failed(&mut self, target: &str, error: &dyn std::fmt::Display, stats: &mut Stats, health: &Health) {
        SinkFailed { sink: self.sink, target, error, retrying: true, first: !self.failing }.emit(stats);
        if !self.failing {
            self.failing = true;
            health.set_sink_failing(true);
        }
        self.backoff.wait().await;
    }

    /// The sink accepted: a failing spell ends.
    fn done(self, health: &Health) {
        if self.failing {
            SinkRecovered { sink: self.sink }.emit();
            health.set_sink_failing(false);
        }
    }
}

impl Pipeline {
    /// Delivers alerts to every sink; a failing Kafka sink is retried until it accepts.
    async fn deliver(&mut self, shard: &mut Shard, mut alerts: Vec<Alert>) -> Result<(), ServiceError> {
        alerts.retain(|a| !shard.delivered.contains_key(&a.id));
        if alerts.is_empty() {
            return Ok(());
        }
        for f in &mut self.files {
            f.emit(&alerts)?;
            f.flush()?;
            let sink = if f.target() == "stdout" { SinkKind::Stdout } else { SinkKind::File };
            AlertsDelivered { sink, alerts: alerts.len() }.emit(&mut self.stats);
        }
        if let (Some(p), false) = (&self.producer, self.cfg.sinks.kafka_topic.is_empty()) {
            let topic = self.cfg.sinks.kafka_topic.clone();
            let mut retry = Retrying::new(SinkKind::Kafka);
            loop {
                // After a restart, once: which re-raised alerts did the crashed run already
                // put on the alert topic (delivered, but killed before journaling them)?
                let mut attempt: Result<(), String> = Ok(());
                if let Some(from) = self.restart_scan.clone() {
                    let (kcfg, t) = (self.cfg.kafka.clone(), topic.clone());
                    let scan = tokio::task::spawn_blocking(move || {
                        kafka::keys_since(&kcfg, &t, &from, Duration::from_secs(30))
                    })
                    .await
                    .map_err(|join| ServiceError::StateBody(format!("alert topic scan: {join}")))?;
                    match scan {
                        Ok(keys) => {
                            tracing::info!(
                                message = "Alert topic read back after the restart.",
                                topic = %topic,
                                alerts_after_checkpoint = keys.len()
                            );
                            self.on_alert_topic.extend(keys);
                            self.restart_scan = None;
                        }
                        Err(error) => attempt = Err(error.to_string()),
                    }
                }
                if attempt.is_ok() {
                    let fresh: Vec<Alert> =
                        alerts.iter().filter(|a| !self.on_alert_topic.contains(&a.id)).cloned().collect();
                    attempt = match p.send_alerts(&topic, &fresh).await {
                        Ok(landed) => {
                            for (partition, offset) in landed {
                                let next = shard.alert_marks.entry(partition).or_insert(0);
                                *next = (*next).max(offset + 1);
                            }
                            break;
                        }
                        Err(error) => Err(error.to_string()),
                    };
                }
                if let Err(error) = attempt {
                    retry.failed(&topic, &error, &mut self.stats, &self.health).await;
                }
            }
            AlertsDelivered { sink: SinkKind::Kafka, alerts: alerts.len() }.emit(&mut self.stats);
            retry.done(&self.health);
        }
        if let Some(w) = &self.webhook {
            let mut retry = Retrying::new(SinkKind::Webhook);
            let mut rejected = 0;
            loop {
                let outcome = w.send_alerts(&alerts).await;
                // Refused for good (e.g. HTTP 400): set aside, and the stream goes on.
                for r in w.take_rejected() {
                    rejected += 1;
                    let detail = r.error.to_string();
                    SinkRejected { sink: SinkKind::Webhook, target: w.target(), alert_id: &r.id, error: &detail }
                        .emit(&mut self.stats);
                    set_aside_alert(
                        self.producer.as_ref(),
                        &self.cfg.kafka.dead_letter_topic,
                        "webhook",
                        &r.alert,
                        &detail,
                    )
                    .await;
                }
                match outcome {
                    Ok(()) => break,
                    Err(error) => retry.failed(w.target(), &error, &mut self.stats, &self.health).await,
                }
            }
            AlertsDelivered { sink: SinkKind::Webhook, alerts: alerts.len() - rejected }.emit(&mut self.stats);
            retry.done(&self.health);
        }
        if let Some(am) = &mut self.alertmanager {
            let mut retry = Retrying::new(SinkKind::Alertmanager);
            loop {
                let sink = SinkKind::Alertmanager;
                match am.send_alerts(&alerts, std::time::SystemTime::now()).await {
                    Ok(()) => {
                        AlertsDelivered { sink, alerts: alerts.len() }.emit(&mut self.stats);
                        break;
                    }
                    Err(error) if error.is_retryable() => {
                        retry.failed(am.target(), &error, &mut self.stats, &self.health).await;
                    }
                    Err(error) => {
                        // The others of the batch were posted.
                        let target = am.target();
                        SinkFailed { sink, target, error: &error, retrying: false, first: true }.emit(&mut self.stats);
                        break;
                    }
                }
            }
            retry.done(&self.health);
        }
        self.stats.count_alerts(&alerts);
        shard.delivered(&alerts, self.cfg.detect.realert.0);
        Ok(())
    }

    /// Feeds a fetched message's records to the detector and delivers the alerts.
    /// `now` is the processing time ([`Pipeline::now`]) its records are queued with.
    async fn handle(&mut self, shard: &mut Shard, fetched: &Fetched, now: i64) -> Result<(), ServiceError> {
        let mut alerts = Vec::new();
        let mut bad: Vec<(Malformed, Option<usize>)> = Vec::new();
        let detector = &mut shard.detector;
        let started = std::time::Instant::now();
        let (records, newest) =
            admit(&mut self.clock, &mut self.stats, fetched, &mut bad, |ev| detector.ingest_at(ev, now, &mut alerts));
        let elapsed = started.elapsed() + fetched.decoding;
        let (payload, source) = (fetched.payload(), fetched.source());
        let lag = event_lag(newest);
        BatchProcessed { records: records + bad.len() as u64, elapsed, lag }.emit(&mut self.stats);
        self.stats.input_bytes += payload.len() as u64;
        if let Some(am) = &mut self.alertmanager {
            am.observe_event_time(newest);
        }
        set_aside(self.producer.as_ref(), &self.cfg.kafka.dead_letter_topic, &mut self.stats, payload, source, bad)
            .await;
        self.deliver(shard, alerts).await
    }

    /// One message of the verdicts topic (JSON verdicts, one per line): each applied to the
    /// detector now, at its own event time; a malformed one is logged, counted and skipped.
    async fn handle_verdicts(
        &mut self,
        shard: &mut Shard,
        payload: &[u8],
        source: (&str, i32, i64),
    ) -> Result<(), ServiceError> {
        let mut alerts = Vec::new();
        let text = String::from_utf8_lossy(payload);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let applied = crate::detect::Verdict::parse_line(line)
                .and_then(|v| shard.detector.apply_verdict(&v, &mut alerts).map(|()| v));
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
                        topic = source.0,
                        partition = source.1,
                        offset = source.2,
                        %error
                    );
                }
            }
        }
        self.deliver(shard, alerts).await
    }

    /// Role detect: one batch of the internal topic (see [`crate::decode::wire`]) into the
    /// partition's detector. A batch from a raw offset the state already covers is a copy
    /// (a rekey instance restarted before committing) and is dropped.
    async fn handle_batch(
        &mut self,
        shard: &mut Shard,
        payload: &[u8],
        source: (&str, i32, i64),
        now: i64,
    ) -> Result<(), ServiceError> {
        use crate::decode::wire::{Batch, WireError};
        let started = std::time::Instant::now();
        let batch = match Batch::parse(payload) {
            Ok(b) => b,
            Err(error) => {
                let reason = match error {
                    WireError::Json(_) => Malformed::InvalidJson,
                    WireError::Format(_) => Malformed::NotAnObject,
                };
                tracing::debug!(message = "Not an internal-topic batch.", %error);
                set_aside(
                    self.producer.as_ref(),
                    &self.cfg.kafka.dead_letter_topic,
                    &mut self.stats,
                    payload,
                    source,
                    vec![(reason, None)],
                )
                .await;
                return Ok(());
            }
        };
        // Also from a copy: the rekey instance's live mark repeats its last batch's source.
        shard.backlog = batch.backlog;
        let raw = format!("{}/{}", batch.source.topic, batch.source.partition);
        if shard.raw_marks.get(&raw).is_some_and(|next| batch.source.offset < *next) {
            self.skipped_replayed += 1;
            return Ok(());
        }
        shard.raw_marks.insert(raw, batch.source.offset + 1);
        let (mut alerts, mut newest) = (Vec::new(), Nanos::MIN);
        for ev in batch.events() {
            newest = newest.max(ev.time);
            shard.detector.ingest_at(&ev, now, &mut alerts);
        }
        let lag = event_lag(newest);
        // Records and input bytes are counted by the rekey role, where they are read.
        BatchProcessed { records: batch.len() as u64, elapsed: started.elapsed(), lag }.emit(&mut self.stats);
        if let Some(am) = &mut self.alertmanager {
            am.observe_event_time(newest);
        }
        self.deliver(shard, alerts).await
    }

    /// Processing time for `Detector::ingest_at` and `service.max_hold`: wall-clock
    /// milliseconds since the Unix epoch, so that the arrival times in a restored state (written
    /// by an earlier process, or another instance) compare with this process's. (Event time
    /// decides everything else; this only bounds how long a record may wait.)
    fn now(&self) -> i64 {
        now_ms()
    }

    /// Stores the offsets of handled messages none of whose records waits in a reorder queue.
    fn store_ready(&mut self, shard: &Shard, consumer: &LogConsumer) {
        let limit = shard.detector.oldest_queued_arrival().unwrap_or(i64::MAX);
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
                if let Err(error) = consumer.store_offset(topic, *partition, offset) {
                    // The partition was revoked meanwhile: its new owner reads from the last
                    // commit (at-least-once).
                    tracing::debug!(message = "Cannot store offset.", topic = %topic, partition, %error);
                }
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
    fn checkpoint(&mut self, shard: &mut Shard, consumer: &LogConsumer, mode: CommitMode) -> Result<(), ServiceError> {
        let Some((bytes, took)) = shard.save(self.alertmanager.as_ref().map(AlertmanagerSink::snapshot))? else {
            return Ok(());
        };
        self.last_checkpoint = std::time::Instant::now();
        self.metrics.checkpoint_written(took, bytes, std::time::SystemTime::now());
        let tpl = shard.offsets_to_commit();
        if tpl.count() > 0 {
            if let Err(error) = consumer.commit(&tpl, mode) {
                // The checkpoint is what counts; the group's offsets are only a fallback.
                tracing::warn!(message = "Commit after checkpoint failed.", %error);
            }
        }
        Ok(())
    }

    /// Lets the Alertmanager sink re-send and resolve what is due.
    async fn tick_alertmanager(&mut self) {
        let Some(am) = &mut self.alertmanager else { return };
        match am.tick(std::time::SystemTime::now()).await {
            Ok(r) if r.backing_off => {}
            Ok(_) => {
                if std::mem::take(&mut self.alertmanager_failing) {
                    tracing::info!(message = "Alertmanager reachable again.", target = am.target());
                }
            }
            Err(error) => {
                let first = !std::mem::replace(&mut self.alertmanager_failing, true);
                ResendFailed { target: am.target(), error: &error, first }.emit(&mut self.stats);
            }
        }
    }

    /// Processes every record waiting in the reorder queues.
    async fn drain(&mut self, shard: &mut Shard) -> Result<(), ServiceError> {
        let mut alerts = Vec::new();
        shard.detector.finish(&mut alerts);
        self.deliver(shard, alerts).await
    }

    /// Processes the records that waited `service.max_hold` or longer (none while a backlog
    /// is merged upstream, [`Shard::backlog`]: event time alone decides then, as in replay).
    async fn release_held(&mut self, shard: &mut Shard) -> Result<(), ServiceError> {
        if !shard.detector.has_queued() || shard.backlog {
            return Ok(());
        }
        let hold = self.cfg.service.max_hold.0 / 1_000_000;
        let cutoff = self.now() - hold;
        let mut alerts = Vec::new();
        shard.detector.release_held(cutoff, &mut alerts);
        self.deliver(shard, alerts).await
    }

    /// Whether the periodic checkpoint is due.
    fn checkpoint_due(&self) -> bool {
        self.checkpoints
            && self.cfg.service.checkpoint_interval.0 > 0
            && self.last_checkpoint.elapsed().as_nanos() as i64 >= self.cfg.service.checkpoint_interval.0
    }

    /// Notes the outcome of a periodic checkpoint: a failure commits nothing (the previous
    /// checkpoint stays the truth) and is retried next interval, logged once per change (the
    /// checkpoint-age metric and its rule show a store that stays away).
    fn checkpoint_outcome(&mut self, outcome: Result<(), ServiceError>) {
        match outcome {
            Ok(()) => {
                if std::mem::take(&mut self.checkpoint_failing) {
                    tracing::info!(message = "Checkpoints written again.");
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut self.checkpoint_failing, true) {
                    tracing::error!(message = "Checkpoint failed; retrying every interval, offsets not committed.", %error);
                }
                self.last_checkpoint = std::time::Instant::now();
            }
        }
    }
}

#[derive(Serialize)]
struct SavedStateRef<'a> {
    detector: &'a Detector,
    delivered: &'a BTreeMap<String, Nanos>,
    alertmanager: Option<crate::sinks::alertmanager::FiringSnapshot>,
    alert_topic_marks: &'a BTreeMap<i32, i64>,
    raw_marks: &'a BTreeMap<String, i64>,
}

/// A raw message (roles all and rekey), decoded once when fetched; it waits in the event-time
/// alignment as this and is handed on by [`admit`].
pub(crate) struct Fetched {
    pub(crate) msg: OwnedMessage,
    /// Its records as decoded, in order: a record's index in its envelope is its place here.
    items: Vec<Decoded<'static>>,
    /// How long the decode took.
    decoding: Duration,
}

impl Fetched {
    pub(crate) fn decode(decoder: &mut Decoder, msg: OwnedMessage) -> Fetched {
        let started = std::time::Instant::now();
        let mut items = Vec::new();
        if let Some(payload) = msg.payload() {
            decoder.decode(payload, |d| {
                items.push(match d {
                    Decoded::Event(ev) => Decoded::Event(ev.into_owned()),
                    Decoded::Skipped(c) => Decoded::Skipped(c),
                    Decoded::Malformed { reason, index } => Decoded::Malformed { reason, index },
                })
            });
        }
        Fetched { msg, items, decoding: started.elapsed() }
    }

    /// The oldest and newest time of its records (None without any): its place in the merge.
    pub(crate) fn times(&self) -> Option<(Nanos, Nanos)> {
        self.items.iter().fold(None, |range, d| match d {
            Decoded::Event(ev) => {
                Some(range.map_or((ev.time, ev.time), |(a, b): (Nanos, Nanos)| (a.min(ev.time), b.max(ev.time))))
            }
            _ => range,
        })
    }

    pub(crate) fn payload(&self) -> &[u8] {
        self.msg.payload().unwrap_or_default()
    }

    pub(crate) fn source(&self) -> (&str, i32, i64) {
        (self.msg.topic(), self.msg.partition(), self.msg.offset())
    }
}

/// Hands a fetched message's records on, when it leaves the alignment: counts them, sets aside
/// (into `bad`, with their index) the malformed ones and those the clock guard refuses against
/// the wall clock, and passes every other event to `take`. Returns the records counted (events
/// and skips) and the newest event time taken.
pub(crate) fn admit(
    clock: &mut ClockGuard<()>,
    stats: &mut Stats,
    fetched: &Fetched,
    bad: &mut Vec<(Malformed, Option<usize>)>,
    mut take: impl FnMut(&crate::decode::Event<'_>),
) -> (u64, Nanos) {
    let (mut records, mut newest) = (0u64, Nanos::MIN);
    let wall = wall_clock_nanos();
    for (index, decoded) in fetched.items.iter().enumerate() {
        match decoded {
            Decoded::Event(ev) => match clock.admit_at(&ev.account, ev.time, wall) {
                // Wall-clock mode holds nothing.
                Admit::Accept | Admit::Held => {
                    records += 1;
                    newest = newest.max(ev.time);
                    *stats.records.entry(ev.category).or_default() += 1;
                    stats.response_bytes += ev.response_bytes;
                    take(ev);
                }
                Admit::Reject(reason) => bad.push((reason, Some(index))),
            },
            Decoded::Skipped(c) => {
                records += 1;
                *stats.records.entry(*c).or_default() += 1;
                *stats.skipped.entry(*c).or_default() += 1;
            }
            Decoded::Malformed { reason, index } => bad.push((*reason, *index)),
        }
    }
    (records, newest)
}

/// Counts malformed records, logs each kind once, and writes them to the dead-letter topic
/// (when one is configured) with the reason and where they came from; retried until the topic
/// takes them, so none is lost.
pub(crate) async fn set_aside(
    producer: Option<&KafkaProducerSink>,
    dead_letter_topic: &str,
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
        if let (Some(p), false) = (producer, dead_letter_topic.is_empty()) {
            let text = raw_record_text(payload, index);
            let mut backoff = Backoff::new();
            while let Err(error) =
                p.send_dead_letter(dead_letter_topic, text.as_bytes(), reason.code(), source, index).await
            {
                tracing::warn!(message = "Dead-letter topic failing; retrying.", %error);
                backoff.wait().await;
            }
            DeadLettered { reason, location: &location }.emit(stats);
        }
    }
}

/// An alert a sink refused for good, onto the dead-letter topic (when one is configured),
/// retried until the topic takes it.
async fn set_aside_alert(producer: Option<&KafkaProducerSink>, topic: &str, sink: &str, alert: &[u8], detail: &str) {
    let (Some(p), false) = (producer, topic.is_empty()) else { return };
    let mut backoff = Backoff::new();
    while let Err(error) = p.send_rejected_alert(topic, alert, sink, detail).await {
        tracing::warn!(message = "Dead-letter topic failing; retrying.", %error);
        backoff.wait().await;
    }
}

/// Restores the newest valid checkpoint: the state, the offsets it covers, and the delivered
/// ids journaled after it.
type Offsets = BTreeMap<String, i64>;

fn restore(store: &mut crate::state::StateStore) -> Result<Option<(SavedState, Offsets)>, ServiceError> {
    let Some(loaded) = store.load_newest()? else { return Ok(None) };
    for why in &loaded.refused {
        tracing::warn!(message = "Checkpoint refused; using an older one.", why = %why);
    }
    let mut s: SavedState = serde_json::from_slice(&loaded.body).map_err(|e| ServiceError::StateBody(e.to_string()))?;
    s.delivered.extend(loaded.delivered);
    tracing::info!(
        message = "State restored.",
        store = %store.location(),
        checkpoint = loaded.header.seq,
        partitions = loaded.header.offsets.len()
    );
    Ok(Some((s, loaded.header.offsets)))
}

/// Runs until `shutdown` completes; returns the run's counters.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<Stats, ServiceError> {
    run_with(cfg, Arc::new(Health::default()), shutdown).await
}

/// As [`run`], reporting readiness and progress through `health` (tests watch it).
pub async fn run_with(
    cfg: Config,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    let metrics = Metrics::for_role(cfg.service.role.as_str())?;
    if !cfg.service.metrics_addr.is_empty() {
        let addr = http::serve(&cfg.service.metrics_addr, health.clone(), metrics.registry.clone()).await?;
        health.set_http_addr(addr);
    }
    tracing::info!(message = "Starting.", role = cfg.service.role.as_str());
    if cfg.service.role != Role::All && !cfg.service.verdicts_topic.is_empty() {
        return Err(ServiceError::Setup(format!(
            "service.verdicts_topic is only consumed by role \"all\" so far, not by role \"{}\": \
             leave it empty there (a model trained with --verdicts carries the verdicts)",
            cfg.service.role.as_str()
        )));
    }
    match cfg.service.role {
        Role::All => run_all(cfg, metrics, health, shutdown).await,
        Role::Rekey => rekey::run(cfg, metrics, health, shutdown).await,
        Role::Detect => detect::run(cfg, metrics, health, shutdown).await,
    }
}

impl Pipeline {
    /// The sinks and counters of a run; `firing`: the Alertmanager sink's restored alerts.
    fn new(
        cfg: Config,
        metrics: Metrics,
        health: Arc<Health>,
        firing: Option<crate::sinks::alertmanager::FiringSnapshot>,
        checkpoints: bool,
    ) -> Result<Pipeline, ServiceError> {
        let alertmanager = if cfg.sinks.alertmanager_url.is_empty() {
            None
        } else {
            let span = |s: crate::units::Span| Duration::from_nanos(s.0.max(0) as u64);
            let mut opts = AlertmanagerOptions::new(&cfg.sinks.alertmanager_url, cfg.detect.realert.0);
            opts.timeout = span(cfg.sinks.alertmanager_timeout);
            opts.resend_interval = span(cfg.sinks.alertmanager_resend_interval);
            opts.min_firing = span(cfg.sinks.alertmanager_min_firing);
            let mut am = AlertmanagerSink::new(opts).map_err(|e| ServiceError::Alertmanager(e.to_string()))?;
            if let Some(f) = firing {
                am.restore(f);
            }
            Some(am)
        };
        let producer = if !cfg.sinks.kafka_topic.is_empty() || !cfg.kafka.dead_letter_topic.is_empty() {
            Some(KafkaProducerSink::new(idempotent_producer(&cfg)?))
        } else {
            None
        };
        let webhook = if cfg.sinks.webhook_url.is_empty() {
            None
        } else {
            let timeout = Duration::from_nanos(cfg.sinks.webhook_timeout.0.max(1) as u64);
            Some(
                crate::sinks::webhook::WebhookSink::new(&cfg.sinks.webhook_url, timeout, &Default::default())
                    .map_err(|e| ServiceError::Webhook(e.to_string()))?,
            )
        };
        let mut files: Vec<JsonLinesSink<Box<dyn Write + Send>>> = Vec::new();
        if cfg.sinks.stdout {
            files.push(JsonLinesSink::new(Box::new(std::io::stdout()), "stdout"));
        }
        if !cfg.sinks.file.is_empty() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.sinks.file)
                .map_err(|source| SinkError::Io { target: cfg.sinks.file.clone(), source })?;
            files.push(JsonLinesSink::new(Box::new(f), cfg.sinks.file.clone()));
        }
        if checkpoints {
            metrics.expect_checkpoints();
        }
        Ok(Pipeline {
            clock: ClockGuard::new(&cfg.detect),
            cfg,
            decoder: Decoder::new(),
            stats: Stats::default(),
            files,
            producer,
            webhook,
            alertmanager,
            alertmanager_failing: false,
            restart_scan: None,
            on_alert_topic: Default::default(),
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

    /// A restored state may have delivered alerts it never journaled: the alert topic is read
    /// back from `marks` before the next produce (merged with any scan still due).
    fn scan_alert_topic_from(&mut self, marks: &BTreeMap<i32, i64>) {
        if self.cfg.sinks.kafka_topic.is_empty() {
            return;
        }
        match &mut self.restart_scan {
            None => self.restart_scan = Some(marks.clone()),
            // A partition missing from a state's marks is read from its start.
            Some(scan) => {
                scan.retain(|p, _| marks.contains_key(p));
                for (p, m) in marks {
                    if let Some(v) = scan.get_mut(p) {
                        *v = (*v).min(*m);
                    }
                }
            }
        }
    }

    /// Flushes the file sinks.
    fn flush_files(&mut self) -> Result<(), ServiceError> {
        for f in &mut self.files {
            f.flush()?;
        }
        Ok(())
    }
}

/// A producer with idempotence (no duplicates or reordering from its own retries).
pub(crate) fn idempotent_producer(cfg: &Config) -> Result<FutureProducer, ServiceError> {
    let mut c = kafka::client_config(&cfg.kafka)?;
    c.set("enable.idempotence", "true").set("message.timeout.ms", "30000");
    c.create().map_err(ServiceError::Producer)
}

/// Role all: one process, one detector for the whole stream.
async fn run_all(
    cfg: Config,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    let mut store = match cfg.service.state_store.as_str() {
        "" => None,
        location => Some(crate::state::StateStore::open_with(location, &cfg.service.state_store_options)?),
    };
    let restored = match &mut store {
        Some(store) => restore(store)?,
        None => None,
    };
    let was_restored = restored.is_some();
    let checkpoints = store.is_some();
    let (mut shard, firing) = match restored {
        Some((mut s, offsets)) => {
            let firing = s.alertmanager.take();
            (Shard::restored(s, offsets, store), firing)
        }
        None => (Shard::new(initial_detector(&cfg)?, store), None),
    };
    // The allowlist comes from this configuration, never from a checkpoint or model.
    shard.detector.set_allowlist(allowlist(&cfg)?);
    let mut p = Pipeline::new(cfg, metrics, health.clone(), firing, checkpoints)?;
    health.set_restored();
    // The verdicts topic is one more input, in the same group: its offsets are checkpointed
    // with the state like the logs'. It is not part of the event-time alignment: a verdict is
    // applied when consumed.
    let verdicts_topic = p.cfg.service.verdicts_topic.clone();
    let mut kafka_cfg = p.cfg.kafka.clone();
    if !verdicts_topic.is_empty() {
        kafka_cfg.topics.push(verdicts_topic.clone());
    }
    let feed = kafka::AlignFeed::default();
    let consumer = kafka::consumer(&kafka_cfg, health.clone(), !checkpoints, p.metrics.consumer_lag(), feed.clone())?;
    // Only a restored state can have delivered alerts it never journaled.
    if was_restored {
        let marks = shard.alert_marks.clone();
        p.scan_alert_topic_from(&marks);
    }
    if checkpoints && !was_restored {
        // A first checkpoint (the initial state, no offsets yet), so that the journal of
        // delivered ids always follows a checkpoint and a crash before the first periodic
        // one loses nothing.
        p.checkpoint(&mut shard, &consumer, CommitMode::Sync)?;
    }
    tracing::info!(message = "Consuming.", topics = ?p.cfg.kafka.topics, group = %p.cfg.kafka.group_id);

    tokio::pin!(shutdown);
    let mut tick = ticker();
    // Raw partitions are merged by event time (`sources::align`): fetched messages wait in the
    // aligner, and a message is handled (and its offset may be stored) only when it comes out.
    let mut align: Aligner<Fetched> = Aligner::new(align_options(&p.cfg));
    let mut paused = BTreeSet::new();
    loop {
        if feed.changed() {
            apply_align_feed(&feed, &mut align, &mut paused, &verdicts_topic, p.now());
        }
        while let Some((_, f)) = align.pop(p.now()) {
            let now = p.now();
            p.handle(&mut shard, &f, now).await?;
            let (topic, partition, offset) = f.source();
            p.messages += 1;
            shard.positions.insert(format!("{topic}/{partition}"), offset + 1);
            if !checkpoints {
                p.pending.entry((topic.to_string(), partition)).or_default().push_back((now, offset));
                p.store_ready(&shard, &consumer);
            }
            health.progress(p.messages, p.stats.records_total(), p.health.alerts());
            if feed.changed() {
                apply_align_feed(&feed, &mut align, &mut paused, &verdicts_topic, p.now());
            }
        }
        sync_pauses(&consumer, &mut align, &mut paused, p.now());
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    health.set_kafka(true, "");
                    if feed.changed() {
                        apply_align_feed(&feed, &mut align, &mut paused, &verdicts_topic, p.now());
                    }
                    let tp = format!("{}/{}", m.topic(), m.partition());
                    if shard.positions.get(&tp).is_some_and(|next| m.offset() < *next) {
                        // Already in the restored state (read again from an older commit).
                        p.skipped_replayed += 1;
                        continue;
                    }
                    if !verdicts_topic.is_empty() && m.topic() == verdicts_topic {
                        let now = p.now();
                        if let Some(payload) = m.payload() {
                            p.handle_verdicts(&mut shard, payload, (m.topic(), m.partition(), m.offset())).await?;
                        }
                        p.messages += 1;
                        shard.positions.insert(tp, m.offset() + 1);
                        if !checkpoints {
                            p.pending.entry((m.topic().to_string(), m.partition())).or_default().push_back((now, m.offset()));
                            p.store_ready(&shard, &consumer);
                        }
                        continue;
                    }
                    // Decoded once, here: the merge orders it by its records' times.
                    let f = Fetched::decode(&mut p.decoder, m.detach());
                    let (size, times) = (f.payload().len(), f.times());
                    let (topic, partition, offset) = f.source();
                    let tp = (topic.to_string(), partition);
                    align.push(tp, offset, times, size, f, p.now());
                }
                Err(error) => {
                    tracing::warn!(message = "Kafka receive error; retrying.", %error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = tick.tick() => {
                // While a backlog is merged, a wait for a partition's next fetch is not disorder.
                shard.backlog = !align.live(p.now());
                p.release_held(&mut shard).await?;
                p.tick_alertmanager().await;
                if !checkpoints {
                    p.store_ready(&shard, &consumer);
                } else if p.checkpoint_due() {
                    let outcome = p.checkpoint(&mut shard, &consumer, CommitMode::Async);
                    p.checkpoint_outcome(outcome);
                }
                p.publish(shard.detector.stats().clone());
            }
        }
    }

    tracing::info!(message = "Shutting down: draining.");
    let shutdown_timeout = Duration::from_nanos(p.cfg.service.shutdown_timeout.0.max(0) as u64);
    let finish = async {
        // Either way every handled record is covered afterwards: by the checkpoint (queues
        // included) or by having been processed; all their offsets may be committed.
        if checkpoints {
            p.checkpoint(&mut shard, &consumer, CommitMode::Sync)?;
        } else {
            p.drain(&mut shard).await?;
        }
        let pending = std::mem::take(&mut p.pending);
        for ((topic, partition), q) in pending {
            if let Some(&(_, offset)) = q.back() {
                if let Err(error) = consumer.store_offset(&topic, partition, offset) {
                    tracing::debug!(message = "Cannot store offset.", topic = %topic, partition, %error);
                }
            }
        }
        p.publish(shard.detector.stats().clone());
        p.flush_files()?;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(message = "Final commit failed.", %error),
        }
        Ok::<(), ServiceError>(())
    };
    tokio::time::timeout(shutdown_timeout, finish)
        .await
        .map_err(|_| ServiceError::ShutdownTimeout(shutdown_timeout))??;
    p.stats.detector = shard.detector.stats().clone();
    Ok(p.stats)
}

/// Bytes of fetched messages a raw partition may hold in the aligner before it is paused
/// (librdkafka's default `max.partition.fetch.bytes`: one fetch).
const ALIGN_BUFFER_BYTES: usize = 1 << 20;

/// The event-time alignment of the raw partitions: `detect.max_out_of_order` ahead of the
/// slowest pauses a partition; `service.partition_idle_timeout` lets an idle one go.
pub(crate) fn align_options(cfg: &Config) -> AlignOptions {
    AlignOptions {
        bound: cfg.detect.max_out_of_order.0,
        idle_timeout_ms: cfg.service.partition_idle_timeout.0 / 1_000_000,
        buffer_bytes: ALIGN_BUFFER_BYTES,
        enabled: cfg.service.align_partitions,
    }
}

/// Takes the consumer callbacks' reports into the aligner: rebalances (a revoked partition's
/// buffered messages are dropped unhandled: their offsets were never stored, the new owner
/// reads them again; an assigned one starts unpaused) and watermarks.
pub(crate) fn apply_align_feed<M>(
    feed: &kafka::AlignFeed,
    align: &mut Aligner<M>,
    paused: &mut BTreeSet<TopicPartition>,
    outside: &str,
    now_ms: i64,
) {
    let report = feed.take();
    for (assigned, topic, partition) in report.rebalances {
        if !outside.is_empty() && topic == outside {
            continue; // not aligned (the verdicts topic)
        }
        let tp = (topic, partition);
        paused.remove(&tp);
        if assigned {
            align.assign(tp, now_ms);
        } else {
            let dropped = align.revoke(&tp).len();
            tracing::debug!(message = "Partition left the alignment.", topic = %tp.0, partition = tp.1, dropped);
        }
    }
    for (tp, (high, position)) in report.watermarks {
        if !outside.is_empty() && tp.0 == outside {
            continue;
        }
        align.set_watermark(&tp, high, position);
    }
}

/// Pauses the partitions the aligner wants paused and resumes the others.
pub(crate) fn sync_pauses<C: rdkafka::consumer::ConsumerContext, M>(
    consumer: &rdkafka::consumer::StreamConsumer<C>,
    align: &mut Aligner<M>,
    paused: &mut BTreeSet<TopicPartition>,
    now_ms: i64,
) {
    let want = align.paused(now_ms);
    if want == *paused {
        return;
    }
    let list = |tps: Vec<&TopicPartition>| {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (topic, partition) in tps {
            tpl.add_partition(topic, *partition);
        }
        tpl
    };
    let to_pause = list(want.difference(paused).collect());
    let to_resume = list(paused.difference(&want).collect());
    if to_pause.count() > 0 {
        if let Err(error) = consumer.pause(&to_pause) {
            tracing::warn!(message = "Cannot pause partitions.", %error);
        }
    }
    if to_resume.count() > 0 {
        if let Err(error) = consumer.resume(&to_resume) {
            tracing::warn!(message = "Cannot resume partitions.", %error);
        }
    }
    tracing::debug!(message = "Alignment pauses.", paused = ?want.iter().map(|tp| tp.1).collect::<Vec<_>>(), partitions = align.partitions().count(), buffered = align.buffered());
    *paused = want;
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

/// The wall clock in nanoseconds since the epoch: the clock guard's "now" in the service.
pub(crate) fn wall_clock_nanos() -> Nanos {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Nanos::try_from(now.as_nanos()).unwrap_or(Nanos::MAX)
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
pub(crate) fn internal_partitions(cfg: &Config) -> Result<i32, ServiceError> {
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
pub(crate) fn allowlist(cfg: &Config) -> Result<crate::detect::Allowlist, ServiceError> {
    crate::detect::Allowlist::compile(&cfg.allow).map_err(ServiceError::Setup)
}

/// A state with no checkpoint starts from `service.model` when one is set.
fn initial_detector(cfg: &Config) -> Result<Detector, ServiceError> {
    if cfg.service.model.is_empty() {
        return Ok(Detector::new(cfg.detect.clone()));
    }
    let dir = std::path::Path::new(&cfg.service.model);
    let (detector, manifest) = crate::model::load_detector(dir, Some(&cfg.detect))?;
    tracing::info!(
        message = "Starting from a trained model.",
        model = %dir.display(),
        keys = manifest.counts.keys,
        until = manifest.event_time.until.as_deref().or(manifest.event_time.last.as_deref()).unwrap_or("")
    );
    Ok(detector)
}
