//! The Kafka source: the consumer and its callbacks, topic metadata, and the alert topic's
//! read-back. (Role detect's rebalance context lives in `service/detect.rs`; the service
//! commits offsets itself.)
//!
//! Offsets are stored by hand (`enable.auto.offset.store = false`) once a message's records
//! went through the detector and the sinks accepted every alert they raised; librdkafka's
//! periodic auto-commit then commits only stored offsets. On a partition revoke the context
//! commits what is stored, synchronously, before the partitions go: the service handles one
//! message at a time, so nothing is in flight when the callback runs.

use crate::config::KafkaConfig;
use crate::telemetry::{ConsumerLag, Health};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("cannot read the SASL password from {0}: {1}")]
    Password(String, String),
    #[error("cannot create the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe { topics: Vec<String>, source: KafkaError },
    #[error("cannot read back the alert topic: {0}")]
    Scan(#[source] KafkaError),
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

pub type LogConsumer = StreamConsumer<SourceContext>;

/// Client settings shared by the consumer and the producers (servers, security).
pub fn client_config(cfg: &KafkaConfig) -> Result<ClientConfig, KafkaSourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers).set("security.protocol", &cfg.security_protocol);
    if !cfg.sasl_mechanism.is_empty() {
        c.set("sasl.mechanism", &cfg.sasl_mechanism).set("sasl.username", &cfg.sasl_username);
    }
    if !cfg.sasl_password_env.is_empty() {
        let p = std::env::var(&cfg.sasl_password_env)
            .map_err(|e| KafkaSourceError::Password(format!("${}", cfg.sasl_password_env), e.to_string()))?;
        c.set("sasl.password", p);
    } else if !cfg.sasl_password_file.is_empty() {
        let p = std::fs::read_to_string(&cfg.sasl_password_file)
            .map_err(|e| KafkaSourceError::Password(cfg.sasl_password_file.clone(), e.to_string()))?;
        c.set("sasl.password", p.lines().next().unwrap_or("").trim());
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
) -> Result<LogConsumer, KafkaSourceError> {
    consumer_with(cfg, &cfg.group_id, &cfg.topics, auto_commit, SourceContext { health, lag, align })
}

/// A consumer of `topics` in `group` with the service's settings and the given context (the
/// detect role's restores and saves partition state in its rebalance callback).
pub fn consumer_with<C: ConsumerContext + 'static>(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
    auto_commit: bool,
    context: C,
) -> Result<StreamConsumer<C>, KafkaSourceError> {
    let mut c = client_config(cfg)?;
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
    Ok(consumer)
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

/// The keys (alert ids) of the messages on `topic` from `from[partition]` (the low watermark
/// for a partition not in `from`) up to the high watermark as it is now. Blocking; used once
/// after a restart to learn which re-raised alerts a crashed run already delivered.
pub fn keys_since(
    cfg: &KafkaConfig,
    topic: &str,
    from: &std::collections::BTreeMap<i32, i64>,
    timeout: std::time::Duration,
) -> Result<std::collections::HashSet<String>, KafkaSourceError> {
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let deadline = std::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let mut c = client_config(cfg)?;
    c.set("group.id", format!("{}.alert-scan", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = c.create().map_err(KafkaSourceError::Create)?;
    let md = consumer.fetch_metadata(Some(topic), left()).map_err(KafkaSourceError::Scan)?;
    let mut ends = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), left()).map_err(KafkaSourceError::Scan)?;
        let start = from.get(&p.id()).copied().unwrap_or(low).max(low);
        if start < high {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(start)).map_err(KafkaSourceError::Scan)?;
            ends.insert(p.id(), high);
        }
    }
    let mut keys = std::collections::HashSet::new();
    if ends.is_empty() {
        return Ok(keys);
    }
    consumer.assign(&tpl).map_err(KafkaSourceError::Scan)?;
    while !ends.is_empty() {
        if left().is_zero() {
            return Err(KafkaSourceError::Scan(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            )));
        }
        match consumer.poll(left().min(std::time::Duration::from_millis(500))) {
            Some(Ok(m)) => {
                if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    keys.insert(k.to_string());
                }
                if ends.get(&m.partition()).is_some_and(|h| m.offset() + 1 >= *h) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(KafkaSourceError::Scan(e)),
            None => {}
        }
    }
    Ok(keys)
}
