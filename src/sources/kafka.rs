//! The Kafka source: the consumer ([`Consumer`]: fetch, store and commit offsets, pause and
//! resume), its callbacks (errors, statistics, rebalances; [`PartitionOwner`] lets role detect
//! restore and save partition state in the rebalance callback), and topic metadata. With
//! `sinks/kafka.rs` (the producers and the alert topic's read-back), the only place that
//! speaks rdkafka.
//!
//! Offsets are stored by hand (`enable.auto.offset.store = false`) once a message's records
//! went through the detector and the sinks accepted every alert they raised; librdkafka's
//! periodic auto-commit then commits only stored offsets. On a partition revoke the context
//! commits what is stored, synchronously, before the partitions go: the service handles one
//! message at a time, so nothing is in flight when the callback runs (messages still being
//! decoded or waiting in the alignment were never handled, and their offsets never stored).

use crate::config::KafkaConfig;
use crate::sources::align::TopicPartition;
use crate::telemetry::{ConsumerLag, Health};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
pub use rdkafka::consumer::ConsumerContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, Rebalance, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// A setting that could not be read (the SASL password, the instance id's variable).
    #[error("{0}")]
    Password(String),
    #[error("cannot create the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
    #[error("cannot read the topic metadata: {0}")]
    Scan(#[source] KafkaError),
    #[error("Kafka receive error: {0}")]
    Receive(#[source] KafkaError),
    #[error("cannot commit offsets: {0}")]
    Commit(#[source] KafkaError),
}

/// rdkafka callbacks: errors, statistics (broker reachability, consumer lag), rebalances.
pub struct SourceContext {
    pub health: Arc<Health>,
    pub lag: ConsumerLag,
    /// What the event-time alignment needs from the callbacks (role all and rekey).
    pub align: AlignFeed,
}

/// Reported by the consumer's callbacks for the event-time alignment
/// ([`crate::sources::align`]): rebalances and, per partition, the high watermark and the
/// consumer's position from the statistics. The service loop takes them between messages
/// (a flag, checked per message, says whether there is anything; the lock is taken only then).
#[derive(Clone, Default)]
pub struct AlignFeed(Arc<AlignShared>);

#[derive(Default)]
struct AlignShared {
    changed: std::sync::atomic::AtomicBool,
    inner: std::sync::Mutex<AlignReport>,
}

/// What the callbacks reported since the last [`AlignFeed::take`].
#[derive(Default)]
pub struct AlignReport {
    /// Assignments (true) and revocations (false), in order.
    pub rebalances: Vec<(bool, String, i32)>,
    /// Per partition: high watermark, and the consumer's position when known.
    pub watermarks: std::collections::BTreeMap<(String, i32), Watermark>,
}

/// A partition's high watermark and the consumer's position in it (when known).
pub type Watermark = (i64, Option<i64>);

impl AlignFeed {
    fn with(&self, f: impl FnOnce(&mut AlignReport)) {
        if let Ok(mut r) = self.0.inner.lock() {
            f(&mut r);
            self.0.changed.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether anything was reported since the last take (cheap: one atomic load).
    pub fn changed(&self) -> bool {
        self.0.changed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes the reports.
    pub fn take(&self) -> AlignReport {
        self.0.changed.store(false, std::sync::atomic::Ordering::Release);
        self.0.inner.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    fn rebalance(&self, assigned: bool, tpl: &rdkafka::TopicPartitionList) {
        self.with(|r| {
            for e in tpl.elements() {
                r.rebalances.push((assigned, e.topic().to_string(), e.partition()));
            }
        });
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        match error.rdkafka_error_code() {
            Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve) => self.health.set_kafka(false, reason),
            _ => tracing::warn!(message = "Kafka client error.", error = %error, reason),
        }
    }

    /// Every `statistics.interval.ms`: reachable means a connection to a cluster broker (not
    /// just a bootstrap address) is up. This also notices the broker's return while idle.
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        self.health.set_kafka(up, if up { "" } else { "no connection to a broker is up" });
        self.lag.set(&partition_lags(&statistics));
        let marks = watermarks(&statistics);
        if !marks.is_empty() {
            self.align.with(|r| r.watermarks.extend(marks));
        }
    }
}

/// Consumer lag of every partition this consumer fetches: the high watermark minus the next
/// offset the service will be handed (its position), or, before the first message, librdkafka's
/// lag behind the committed offset. Partitions with neither known yet are left out.
fn partition_lags(statistics: &Statistics) -> Vec<(&str, i32, i64)> {
    let mut lags = Vec::new();
    for (topic, t) in &statistics.topics {
        for (&partition, p) in &t.partitions {
            // -1 is librdkafka's internal "unassigned" partition.
            if partition < 0 || !(p.desired || p.fetch_state == "active") {
                continue;
            }
            let lag = if p.hi_offset >= 0 && p.app_offset >= 0 {
                (p.hi_offset - p.app_offset).max(0)
            } else if p.consumer_lag >= 0 {
                p.consumer_lag
            } else {
                continue;
            };
            lags.push((topic.as_str(), partition, lag));
        }
    }
    lags
}

/// High watermark and position (the next offset handed to the service, else the committed
/// offset) of every fetched partition whose high watermark is known.
fn watermarks(statistics: &Statistics) -> Vec<((String, i32), Watermark)> {
    let mut out = Vec::new();
    for (topic, t) in &statistics.topics {
        for (&partition, p) in &t.partitions {
            if partition < 0 || !(p.desired || p.fetch_state == "active") || p.hi_offset < 0 {
                continue;
            }
            let position = [p.app_offset, p.committed_offset].into_iter().find(|o| *o >= 0);
            // Nothing retained: caught up wherever the position is.
            let position = if p.lo_offset >= 0 && p.lo_offset >= p.hi_offset { Some(p.hi_offset) } else { position };
            out.push(((topic.clone(), partition), (p.hi_offset, position)));
        }
    }
    out
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.align.rebalance(false, tpl);
            // Stored offsets belong to fully processed messages: commit them before the
            // partitions move to another member.
            if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                if !matches!(error, KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) {
                    tracing::warn!(message = "Commit on revoke failed.", %error, partitions = tpl.count());
                }
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.health.set_kafka(true, "");
            self.align.rebalance(true, tpl);
            tracing::info!(message = "Partitions assigned.", partitions = tpl.count());
        }
    }
}

/// A message as fetched (its payload copied out of librdkafka's buffer).
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Empty for a message without one.
    pub payload: Vec<u8>,
}

impl RawMessage {
    /// `(topic, partition, offset)`: where it came from.
    pub fn source(&self) -> (&str, i32, i64) {
        (&self.topic, self.partition, self.offset)
    }
}

/// A subscribed consumer, with the calls the service loops make.
pub struct Consumer<C: ConsumerContext + 'static = SourceContext>(StreamConsumer<C>);

impl<C: ConsumerContext + 'static> Consumer<C> {
    /// The next message (librdkafka reconnects by itself while the broker is away).
    pub async fn recv(&self) -> Result<RawMessage, KafkaSourceError> {
        use rdkafka::message::Message;
        let m = self.0.recv().await.map_err(KafkaSourceError::Receive)?;
        Ok(RawMessage {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        })
    }

    /// Stores `offset` as handled (the next commit covers it). A partition revoked meanwhile
    /// refuses: its new owner reads from the last commit (at-least-once).
    pub fn store_offset(&self, topic: &str, partition: i32, offset: i64) {
        if let Err(error) = self.0.store_offset(topic, partition, offset) {
            tracing::debug!(message = "Cannot store offset.", topic = %topic, partition, %error);
        }
    }

    /// Commits `positions` (next offset per `topic/partition`), synchronously or not.
    pub fn commit(&self, positions: &BTreeMap<String, i64>, sync: bool) -> Result<(), KafkaSourceError> {
        let tpl = offsets_list(positions);
        if tpl.count() == 0 {
            return Ok(());
        }
        let mode = if sync { CommitMode::Sync } else { CommitMode::Async };
        self.0.commit(&tpl, mode).map_err(KafkaSourceError::Commit)
    }

    /// Commits the stored offsets synchronously (the end of a run); nothing stored is fine.
    pub fn commit_stored(&self) -> Result<(), KafkaSourceError> {
        match self.0.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(KafkaSourceError::Commit(error)),
        }
    }

    /// Pauses the partitions in `want` and resumes the others of `paused` (the event-time
    /// alignment's wish); `paused` becomes `want`.
    pub fn set_paused(&self, want: BTreeSet<TopicPartition>, paused: &mut BTreeSet<TopicPartition>) {
        if want == *paused {
            return;
        }
        let list = |tps: Vec<&TopicPartition>| {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in tps {
                tpl.add_partition(topic, *partition);
            }
            tpl
        };
        let to_pause = list(want.difference(paused).collect());
        let to_resume = list(paused.difference(&want).collect());
        if to_pause.count() > 0 {
            if let Err(error) = self.0.pause(&to_pause) {
                tracing::warn!(message = "Cannot pause partitions.", %error);
            }
        }
        if to_resume.count() > 0 {
            if let Err(error) = self.0.resume(&to_resume) {
                tracing::warn!(message = "Cannot resume partitions.", %error);
            }
        }
        *paused = want;
    }
}

/// `topic/partition` -> offset as librdkafka's list.
fn offsets_list(positions: &BTreeMap<String, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, off) in positions {
        if let Some((topic, partition)) = tp.rsplit_once('/').and_then(|(t, p)| Some((t, p.parse().ok()?))) {
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(*off));
        }
    }
    tpl
}

/// Who owns state per partition (role detect): called from the rebalance callback, between
/// two messages, so nothing of the partitions is in flight.
pub trait PartitionOwner: Send + Sync + 'static {
    /// Before fetching starts: takes up each assigned `(topic, partition)`; returns where to
    /// start fetching those it has a position for (others start at the committed offset).
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<(String, i32, i64)>;
    /// Before the partitions go: lets them go; returns the positions to commit (synchronously)
    /// as `topic/partition` -> next offset.
    fn revoked(&self, partitions: &[(String, i32)]) -> BTreeMap<String, i64>;
}

/// The callbacks of a consumer whose partitions carry state ([`PartitionOwner`]).
pub struct OwnerContext<O: PartitionOwner> {
    source: SourceContext,
    owner: O,
}

impl<O: PartitionOwner> ClientContext for OwnerContext<O> {
    fn error(&self, error: KafkaError, reason: &str) {
        self.source.error(error, reason)
    }

    fn stats(&self, statistics: Statistics) {
        self.source.stats(statistics)
    }
}

impl<O: PartitionOwner> ConsumerContext for OwnerContext<O> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for (topic, partition, next) in self.owner.assigned(&partitions) {
                    if let Err(error) = tpl.set_partition_offset(&topic, partition, Offset::Offset(next)) {
                        tracing::warn!(message = "Cannot set the start offset.", partition, %error);
                    }
                }
                let done = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(error) = done {
                    tracing::error!(message = "Cannot take the assigned partitions.", %error);
                }
                self.source.health.set_kafka(true, "");
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let offsets = offsets_list(&self.owner.revoked(&partitions));
                if offsets.count() > 0 {
                    if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
                        tracing::warn!(message = "Commit on revoke failed.", partitions = offsets.count(), %error);
                    }
                }
                let done = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(error) = done {
                    tracing::warn!(message = "Cannot give the revoked partitions up.", %error);
                }
            }
            other => tracing::warn!(message = "Rebalance error.", error = ?other),
        }
    }
}

/// A consumer of `topics` in `group` whose partitions' state `owner` restores and saves in the
/// rebalance callback (role detect). Offsets are committed by the service (after checkpoints).
pub fn owning_consumer<O: PartitionOwner>(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
    health: Arc<Health>,
    lag: ConsumerLag,
    owner: O,
) -> Result<Consumer<OwnerContext<O>>, KafkaSourceError> {
    let source = SourceContext { health, lag, align: AlignFeed::default() };
    consumer_with(cfg, group, topics, false, OwnerContext { source, owner })
}

/// Client settings shared by the consumer and the producers (servers, security).
pub fn client_config(cfg: &KafkaConfig) -> Result<ClientConfig, KafkaSourceError> {
    let mut c = ClientConfig::new();
    for (k, v) in cfg.client_settings().map_err(KafkaSourceError::Password)? {
        c.set(k, v);
    }
    Ok(c)
}

/// A consumer subscribed to the configured topics.
///
/// `auto_commit`: librdkafka commits the offsets the service stores, periodically; without it
/// the service commits by itself (after each checkpoint).
///
/// `lag` receives the consumer lag per partition from librdkafka's statistics; `align` the
/// rebalances and watermarks for the event-time alignment.
pub fn consumer(
    cfg: &KafkaConfig,
    health: Arc<Health>,
    auto_commit: bool,
    lag: ConsumerLag,
    align: AlignFeed,
) -> Result<Consumer, KafkaSourceError> {
    consumer_with(cfg, &cfg.group_id, &cfg.topics, auto_commit, SourceContext { health, lag, align })
}

/// A consumer of `topics` in `group` with the service's settings and the given context.
fn consumer_with<C: ConsumerContext + 'static>(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
    auto_commit: bool,
    context: C,
) -> Result<Consumer<C>, KafkaSourceError> {
    let mut c = client_config(cfg)?;
    if let Some(id) = cfg.group_instance_id().map_err(KafkaSourceError::Password)? {
        c.set("group.instance.id", id);
    }
    c.set("group.id", group)
        .set("enable.auto.commit", if auto_commit { "true" } else { "false" })
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Alert latency: do not let the broker hold a fetch for the default 500 ms.
        .set("fetch.wait.max.ms", "100")
        // Broker reachability for readiness, and consumer lag (see `SourceContext::stats`).
        .set("statistics.interval.ms", "1000");
    for (k, v) in &cfg.librdkafka_options {
        c.set(k, v);
    }
    let consumer: StreamConsumer<C> = c.create_with_context(context).map_err(KafkaSourceError::Create)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|source| KafkaSourceError::Subscribe { topics: topics.to_vec(), source })?;
    Ok(Consumer(consumer))
}

/// How many partitions `topic` has (0 when it does not exist), from the cluster's metadata.
pub fn partition_count(
    cfg: &KafkaConfig,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<usize, KafkaSourceError> {
    let client: BaseConsumer = client_config(cfg)?.create().map_err(KafkaSourceError::Create)?;
    let md = client.fetch_metadata(Some(topic), timeout).map_err(KafkaSourceError::Scan)?;
    Ok(md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len()))
}
