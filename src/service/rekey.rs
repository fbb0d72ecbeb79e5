//! `exfilwatch run --role rekey`: raw topics -> decode -> the internal topic, partitioned by
//! account (format and partitioning: [`crate::decode::wire`]).
//!
//! No detector state lives here, so nothing is checkpointed: a raw message's offset is stored
//! once every batch it produced was acknowledged by the broker (in order, with up to
//! [`MAX_IN_FLIGHT`] messages waiting for their acknowledgements), and librdkafka commits
//! stored offsets. After a crash the raw messages since the last commit are decoded and
//! produced again; every batch names its raw message, and the detect role drops the copies.
//! Malformed records are counted, logged once per kind and set aside on the dead-letter topic
//! here, where they are decoded.

use super::{set_aside, ServiceError};
use crate::config::Config;
use crate::decode::wire::{partition_for, BatchBuilder, Source};
use crate::decode::{Decoder, Malformed};
use crate::detect::ClockGuard;
use crate::sinks::kafka::KafkaProducerSink;
use crate::sources::kafka;
use crate::telemetry::{BatchProcessed, Health, Metrics, Stats};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Raw messages decoded and produced whose acknowledgements are still awaited.
const MAX_IN_FLIGHT: usize = 5_000;

/// One raw message's batches on their way: resolves to its source once every batch landed.
type Landing = std::pin::Pin<Box<dyn Future<Output = Result<(String, i32, i64), KafkaError>> + Send>>;

pub(super) async fn run(
    cfg: Config,
    mut metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    let producer = {
        let mut c = kafka::client_config(&cfg.kafka)?;
        // Idempotent (no duplicates or reordering from retries) and patient: a broker that is
        // away holds the deliveries (and the offsets) until it returns, as in role all.
        c.set("enable.idempotence", "true").set("message.timeout.ms", "0").set("linger.ms", "5");
        let p: FutureProducer = c.create().map_err(ServiceError::Producer)?;
        p
    };
    let topic = cfg.service.internal_topic.clone();
    let partitions = super::internal_partitions(&cfg)?;
    let dead_letters = (!cfg.kafka.dead_letter_topic.is_empty()).then(|| KafkaProducerSink::new(producer.clone()));
    // Offsets are stored by hand once landed, and auto-committed.
    let consumer = kafka::consumer(&cfg.kafka, health.clone(), true, metrics.consumer_lag(), Default::default())?;
    health.set_restored();
    tracing::info!(
        message = "Rekeying.",
        topics = ?cfg.kafka.topics,
        group = %cfg.kafka.group_id,
        internal_topic = %topic,
        partitions
    );

    let mut decoder = Decoder::new();
    // Records stamped ahead of the wall clock or long behind their account are set aside here,
    // before they reach the internal topic.
    let mut clock: ClockGuard<()> = ClockGuard::new(&cfg.detect);
    let mut stats = Stats::default();
    let mut builders: Vec<BatchBuilder> = (0..partitions).map(|_| BatchBuilder::default()).collect();
    let mut in_flight: FuturesOrdered<Landing> = FuturesOrdered::new();
    let (mut messages, mut produced) = (0u64, 0u64);
    tokio::pin!(shutdown);
    let mut tick = super::ticker();
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(landed) = in_flight.next(), if !in_flight.is_empty() => {
                let (t, p, o) = landed.map_err(ServiceError::Producer)?;
                if let Err(error) = consumer.store_offset(&t, p, o) {
                    // Revoked meanwhile: the new owner re-reads from the last commit.
                    tracing::debug!(message = "Cannot store offset.", topic = %t, partition = p, %error);
                }
            }
            msg = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT => match msg {
                Ok(m) => {
                    health.set_kafka(true, "");
                    let source = (m.topic(), m.partition(), m.offset());
                    let payload = m.payload().unwrap_or_default();
                    let started = std::time::Instant::now();
                    let mut bad: Vec<(Malformed, Option<usize>)> = Vec::new();
                    let (records, newest) =
                        super::decode_message(&mut decoder, &mut clock, &mut stats, payload, &mut bad, |ev| {
                            builders[partition_for(&ev.account, partitions) as usize].push(ev)
                        });
                    let src = Source { topic: source.0.into(), partition: source.1, offset: source.2 };
                    let mut deliveries = Vec::new();
                    for (p, b) in builders.iter_mut().enumerate().filter(|(_, b)| !b.is_empty()) {
                        let bytes = b.finish(&src);
                        deliveries.push(send(&producer, &topic, p as i32, bytes).await?);
                        produced += 1;
                    }
                    let lag = super::event_lag(newest);
                    BatchProcessed { records: records + bad.len() as u64, elapsed: started.elapsed(), lag }.emit(&mut stats);
                    stats.input_bytes += payload.len() as u64;
                    set_aside(dead_letters.as_ref(), &cfg.kafka.dead_letter_topic, &mut stats, payload, source, bad).await;
                    let owned = (source.0.to_string(), source.1, source.2);
                    in_flight.push_back(Box::pin(async move {
                        for d in deliveries {
                            match d.await {
                                Ok(Ok(_)) => {}
                                Ok(Err((e, _))) => return Err(e),
                                Err(_) => return Err(KafkaError::Canceled),
                            }
                        }
                        Ok(owned)
                    }));
                    messages += 1;
                    health.progress(messages, stats.records_total(), 0);
                }
                Err(error) => {
                    tracing::warn!(message = "Kafka receive error; retrying.", %error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = tick.tick() => {
                metrics.publish(&stats);
            }
        }
    }

    tracing::info!(
        message = "Shutting down: waiting for the internal topic's acknowledgements.",
        in_flight = in_flight.len(),
        produced
    );
    let shutdown_timeout = Duration::from_nanos(cfg.service.shutdown_timeout.0.max(0) as u64);
    let finish = async {
        while let Some(landed) = in_flight.next().await {
            let (t, p, o) = landed.map_err(ServiceError::Producer)?;
            let _ = consumer.store_offset(&t, p, o);
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(message = "Final commit failed.", %error),
        }
        Ok::<(), ServiceError>(())
    };
    tokio::time::timeout(shutdown_timeout, finish)
        .await
        .map_err(|_| ServiceError::ShutdownTimeout(shutdown_timeout))??;
    metrics.publish(&stats);
    Ok(stats)
}

/// Queues one batch; while librdkafka's queue is full, waits for it to make room (earlier
/// batches land in the background).
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    bytes: Vec<u8>,
) -> Result<rdkafka::producer::DeliveryFuture, ServiceError> {
    loop {
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).partition(partition).payload(&bytes);
        match producer.send_result(record) {
            Ok(d) => return Ok(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(ServiceError::Producer(e)),
        }
    }
}
