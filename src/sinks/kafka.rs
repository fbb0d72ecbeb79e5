//! Alerts to a Kafka topic, keyed by alert id (a compacted topic keeps one record per alert),
//! and dead letters to a Kafka topic. Every send waits for the broker's delivery report.

use crate::alert::Alert;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::time::Duration;

/// A producer that reports delivery: `send_alerts` returns only once every alert is stored.
pub struct KafkaProducerSink {
    producer: FutureProducer,
}

impl KafkaProducerSink {
    pub fn new(producer: FutureProducer) -> Self {
        KafkaProducerSink { producer }
    }

    /// Returns where each alert landed: `(partition, offset)`, in order.
    pub async fn send_alerts(&self, topic: &str, alerts: &[Alert]) -> Result<Vec<(i32, i64)>, KafkaError> {
        let payloads = alerts
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KafkaError::MessageProduction(map_json(e)))?;
        // Queue them all, then wait for every delivery report.
        let pending: Vec<_> = alerts
            .iter()
            .zip(&payloads)
            .map(|(a, p)| {
                let record = FutureRecord::to(topic).key(&a.id).payload(p);
                self.producer.send(record, Timeout::After(Duration::from_secs(30)))
            })
            .collect();
        let mut landed = Vec::with_capacity(pending.len());
        for p in pending {
            let d = p.await.map_err(|(e, _)| e)?;
            landed.push((d.partition, d.offset));
        }
        Ok(landed)
    }

    /// A message that could not be decoded: its original bytes, and headers saying why and
    /// where it came from.
    pub async fn send_dead_letter(
        &self,
        topic: &str,
        bytes: &[u8],
        reason: &str,
        source: (&str, i32, i64),
        index: Option<usize>,
    ) -> Result<(), KafkaError> {
        let (src_topic, partition, offset) = source;
        let (partition, offset, index) = (partition.to_string(), offset.to_string(), index.map(|i| i.to_string()));
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "exfilwatch.reason", value: Some(reason) })
            .insert(Header { key: "exfilwatch.source.topic", value: Some(src_topic) })
            .insert(Header { key: "exfilwatch.source.partition", value: Some(&partition) })
            .insert(Header { key: "exfilwatch.source.offset", value: Some(&offset) });
        if let Some(i) = &index {
            headers = headers.insert(Header { key: "exfilwatch.source.record_index", value: Some(i) });
        }
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(bytes).headers(headers);
        self.producer.send(record, Timeout::After(Duration::from_secs(30))).await.map_err(|(e, _)| e)?;
        Ok(())
    }
}

impl KafkaProducerSink {
    /// An alert a sink refused for good, on the dead-letter topic: the alert's JSON, with
    /// headers `exfilwatch.reason` = `sink_rejected`, `exfilwatch.sink` and
    /// `exfilwatch.detail` (the sink's answer).
    pub async fn send_rejected_alert(
        &self,
        topic: &str,
        alert: &[u8],
        sink: &str,
        detail: &str,
    ) -> Result<(), KafkaError> {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "exfilwatch.reason", value: Some("sink_rejected") })
            .insert(Header { key: "exfilwatch.sink", value: Some(sink) })
            .insert(Header { key: "exfilwatch.detail", value: Some(detail) });
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(topic).payload(alert).headers(headers);
        self.producer.send(record, Timeout::After(Duration::from_secs(30))).await.map_err(|(e, _)| e)?;
        Ok(())
    }
}

fn map_json(_: serde_json::Error) -> rdkafka::types::RDKafkaErrorCode {
    rdkafka::types::RDKafkaErrorCode::InvalidMessage
}
