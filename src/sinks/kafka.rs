//! Kafka on the way out: the alert topic (keyed by alert id: a compacted topic keeps one
//! record per alert) with its read-back after a restart, the dead-letter topic, the internal
//! topic role rekey writes, and the verdicts `exfilwatch feedback` produces. Every send waits
//! for the broker's delivery report. With `sources/kafka.rs`, the only place that speaks
//! rdkafka.

use super::{AlertSink, Sent, SinkError};
use crate::alert::Alert;
use crate::config::KafkaConfig;
use crate::formats::AlertFormat;
use crate::telemetry::SinkKind;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

fn kafka_error(target: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Kafka { target: target.to_string(), detail: e.to_string() }
}

/// Client settings shared with the consumer (`KafkaConfig::client_settings`).
fn client_config(cfg: &KafkaConfig) -> Result<rdkafka::ClientConfig, String> {
    let mut c = rdkafka::ClientConfig::new();
    for (k, v) in cfg.client_settings()? {
        c.set(k, v);
    }
    Ok(c)
}

/// A producer (cheap to clone: one librdkafka client).
#[derive(Clone)]
pub struct Producer(FutureProducer);

impl Producer {
    /// Idempotent (no duplicates or reordering from its own retries). `patient`: a broker
    /// that is away holds deliveries until it returns (`message.timeout.ms` 0, role rekey);
    /// otherwise a delivery fails after 30 s and the caller retries.
    pub fn new(cfg: &KafkaConfig, patient: bool) -> Result<Producer, SinkError> {
        let mut c = client_config(cfg).map_err(|e| kafka_error("producer", e))?;
        c.set("enable.idempotence", "true");
        if patient {
            c.set("message.timeout.ms", "0").set("linger.ms", "5");
        } else {
            c.set("message.timeout.ms", "30000");
        }
        c.create().map(Producer).map_err(|e| kafka_error("producer", format!("cannot create the producer: {e}")))
    }

    async fn send(&self, record: FutureRecord<'_, str, [u8]>) -> Result<(i32, i64), KafkaError> {
        let d = self.0.send(record, Timeout::After(Duration::from_secs(30))).await.map_err(|(e, _)| e)?;
        Ok((d.partition, d.offset))
    }
}

/// The alert topic (`sinks.kafka_topic`).
pub struct KafkaAlertSink {
    producer: Producer,
    topic: String,
    /// For the read-back's consumer.
    kafka: KafkaConfig,
    /// Restored from a checkpoint and not yet checked: the topic is read from these marks
    /// before the next send, for alerts a killed run delivered but had not journaled yet.
    scan_from: Option<BTreeMap<i32, i64>>,
    /// Alert ids found by that read: not produced again.
    on_topic: HashSet<String>,
    /// How each alert is written (the record's key is its id whatever the format).
    format: AlertFormat,
}

impl KafkaAlertSink {
    /// Writes each alert in this format (native JSON by default).
    pub fn with_format(mut self, format: AlertFormat) -> KafkaAlertSink {
        self.format = format;
        self
    }

    pub fn new(producer: Producer, topic: &str, kafka: &KafkaConfig) -> KafkaAlertSink {
        KafkaAlertSink {
            producer,
            topic: topic.to_string(),
            kafka: kafka.clone(),
            scan_from: None,
            on_topic: HashSet::new(),
            format: AlertFormat::Native,
        }
    }

    /// Reads the topic back from the restored marks, once.
    async fn read_back(&mut self) -> Result<(), SinkError> {
        let Some(from) = self.scan_from.clone() else { return Ok(()) };
        let (kcfg, topic) = (self.kafka.clone(), self.topic.clone());
        let keys = tokio::task::spawn_blocking(move || keys_since(&kcfg, &topic, &from, Duration::from_secs(30)))
            .await
            .map_err(|join| kafka_error(&self.topic, format!("alert topic read-back: {join}")))??;
        tracing::info!(
            message = "Alert topic read back after the restart.",
            topic = %self.topic,
            alerts_after_checkpoint = keys.len()
        );
        self.on_topic.extend(keys);
        self.scan_from = None;
        Ok(())
    }
}

#[async_trait::async_trait]
impl AlertSink for KafkaAlertSink {
    fn kind(&self) -> SinkKind {
        SinkKind::Kafka
    }

    fn target(&self) -> &str {
        &self.topic
    }

    /// Queues every alert not already on the topic, then waits for every delivery report.
    async fn send(&mut self, alerts: &[Alert]) -> Result<Sent, SinkError> {
        self.read_back().await?;
        let fresh: Vec<&Alert> = alerts.iter().filter(|a| !self.on_topic.contains(&a.id)).collect();
        let mut payloads = Vec::with_capacity(fresh.len());
        for a in &fresh {
            payloads.push(self.format.to_vec(a));
        }
        let pending: Vec<_> = fresh
            .iter()
            .zip(&payloads)
            .map(|(a, p)| self.producer.send(FutureRecord::to(&self.topic).key(a.id.as_str()).payload(p.as_slice())))
            .collect();
        let mut sent = Sent::default();
        for p in pending {
            sent.landed.push(p.await.map_err(|e| kafka_error(&self.topic, e))?);
        }
        Ok(sent)
    }

    fn restored_marks(&mut self, marks: &BTreeMap<i32, i64>) {
        match &mut self.scan_from {
            None => self.scan_from = Some(marks.clone()),
            // Merged with a read-back still due; a partition missing from a state's marks is
            // read from its start.
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
}

/// The dead-letter topic (`kafka.dead_letter_topic`): what could not be decoded, and alerts a
/// sink refused for good. Every write is retried (backoff 100 ms to 30 s) until the topic
/// takes it, so nothing set aside is lost.
#[derive(Clone)]
pub struct DeadLetterTopic {
    producer: Producer,
    topic: String,
}

impl DeadLetterTopic {
    pub fn new(producer: Producer, topic: &str) -> DeadLetterTopic {
        DeadLetterTopic { producer, topic: topic.to_string() }
    }

    async fn until_taken<'r>(&self, record: impl Fn() -> FutureRecord<'r, str, [u8]>) {
        let mut backoff = super::fanout::Backoff::new();
        while let Err(error) = self.producer.send(record()).await {
            tracing::warn!(message = "Dead-letter topic failing; retrying.", %error);
            backoff.wait().await;
        }
    }

    /// A record that could not be decoded: its original bytes, and headers saying why and
    /// where it came from (`exfilwatch.reason`, `exfilwatch.source.{topic,partition,offset,
    /// record_index}`).
    pub async fn record(&self, bytes: &[u8], reason: &str, source: (&str, i32, i64), index: Option<usize>) {
        let (src_topic, partition, offset) = source;
        let (partition, offset, index) = (partition.to_string(), offset.to_string(), index.map(|i| i.to_string()));
        self.until_taken(|| {
            let mut headers = OwnedHeaders::new()
                .insert(Header { key: "exfilwatch.reason", value: Some(reason) })
                .insert(Header { key: "exfilwatch.source.topic", value: Some(src_topic) })
                .insert(Header { key: "exfilwatch.source.partition", value: Some(&partition) })
                .insert(Header { key: "exfilwatch.source.offset", value: Some(&offset) });
            if let Some(i) = &index {
                headers = headers.insert(Header { key: "exfilwatch.source.record_index", value: Some(i) });
            }
            FutureRecord::to(&self.topic).payload(bytes).headers(headers)
        })
        .await
    }

    /// An alert a sink refused for good: the alert's JSON, with headers `exfilwatch.reason` =
    /// `sink_rejected`, `exfilwatch.sink` and `exfilwatch.detail` (the sink's answer).
    pub async fn rejected_alert(&self, alert: &[u8], sink: &str, detail: &str) {
        self.until_taken(|| {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "exfilwatch.reason", value: Some("sink_rejected") })
                .insert(Header { key: "exfilwatch.sink", value: Some(sink) })
                .insert(Header { key: "exfilwatch.detail", value: Some(detail) });
            FutureRecord::to(&self.topic).payload(alert).headers(headers)
        })
        .await
    }
}

/// One batch on its way to the internal topic: resolves once the broker acknowledged it.
pub type Landing = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// Role rekey's output: batches to chosen partitions of the internal topic, many in flight.
pub struct InternalTopic {
    producer: Producer,
    topic: String,
}

impl InternalTopic {
    pub fn new(producer: Producer, topic: &str) -> InternalTopic {
        InternalTopic { producer, topic: topic.to_string() }
    }

    /// Queues one batch; while librdkafka's queue is full, waits for it to make room (earlier
    /// batches land in the background). The returned future resolves on acknowledgement.
    pub async fn send(&self, partition: i32, bytes: Vec<u8>) -> Result<Landing, SinkError> {
        loop {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&self.topic).partition(partition).payload(&bytes);
            match self.producer.0.send_result(record) {
                Ok(d) => {
                    let topic = self.topic.clone();
                    return Ok(Box::pin(async move {
                        match d.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(kafka_error(&topic, e)),
                            Err(_) => Err(kafka_error(&topic, KafkaError::Canceled)),
                        }
                    }));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(kafka_error(&self.topic, e)),
            }
        }
    }
}

/// Produces `(key, payload)` messages to `topic`, waiting for every acknowledgement
/// (`exfilwatch feedback` onto the verdicts topic).
pub async fn produce_keyed(cfg: &KafkaConfig, topic: &str, messages: &[(String, Vec<u8>)]) -> Result<(), SinkError> {
    let producer = Producer::new(cfg, false)?;
    for (key, payload) in messages {
        producer
            .send(FutureRecord::to(topic).key(key.as_str()).payload(payload.as_slice()))
            .await
            .map_err(|e| kafka_error(topic, e))?;
    }
    Ok(())
}

/// The keys (alert ids) of the messages on `topic` from `from[partition]` (the low watermark
/// for a partition not in `from`) up to the high watermark as it is now. Blocking; used once
/// after a restart to learn which re-raised alerts a crashed run already delivered.
pub fn keys_since(
    cfg: &KafkaConfig,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<HashSet<String>, SinkError> {
    use rdkafka::{Offset, TopicPartitionList};
    let err = |e: KafkaError| kafka_error(topic, format!("cannot read back the alert topic: {e}"));
    let deadline = std::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let mut c = client_config(cfg).map_err(|e| kafka_error(topic, e))?;
    c.set("group.id", format!("{}.alert-scan", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = c.create().map_err(err)?;
    let md = consumer.fetch_metadata(Some(topic), left()).map_err(err)?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), left()).map_err(err)?;
        let start = from.get(&p.id()).copied().unwrap_or(low).max(low);
        if start < high {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(start)).map_err(err)?;
            ends.insert(p.id(), high);
        }
    }
    let mut keys = HashSet::new();
    if ends.is_empty() {
        return Ok(keys);
    }
    consumer.assign(&tpl).map_err(err)?;
    while !ends.is_empty() {
        if left().is_zero() {
            return Err(err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut)));
        }
        match consumer.poll(left().min(Duration::from_millis(500))) {
            Some(Ok(m)) => {
                if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    keys.insert(k.to_string());
                }
                if ends.get(&m.partition()).is_some_and(|h| m.offset() + 1 >= *h) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(err(e)),
            None => {}
        }
    }
    Ok(keys)
}
