//! Kafka client helpers for the broker tests (real Tansu or librdkafka's mock cluster): every
//! function takes the bootstrap address.
#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    rt().block_on(async {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
        let res = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await
            .unwrap();
        for r in res {
            r.unwrap();
        }
    });
}

/// Produces (key, payload) messages in order and waits for every delivery.
pub fn produce(bootstrap: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
    produce_compressed(bootstrap, topic, messages, "none")
}

/// Produces payloads without a key, each to the partition given with it (as Azure Monitor fills
/// Event Hubs: no partition key, an account's records on every partition), in order, and waits
/// for every delivery.
pub fn produce_to_partitions(bootstrap: &str, topic: &str, messages: &[(i32, Vec<u8>)]) {
    rt().block_on(async {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        for chunk in messages.chunks(500) {
            let futs: Vec<_> = chunk
                .iter()
                .map(|(partition, v)| {
                    let record = FutureRecord::<(), _>::to(topic).partition(*partition).payload(v);
                    p.send(record, Timeout::After(Duration::from_secs(30)))
                })
                .collect();
            for f in futs {
                f.await.map_err(|(e, _)| e).unwrap();
            }
        }
    });
}

/// As [`produce`], with the producer's `compression.type` (librdkafka's mock cluster keeps only
/// the last 5 MB of a partition, counted compressed).
pub fn produce_compressed(bootstrap: &str, topic: &str, messages: &[(String, Vec<u8>)], compression: &str) {
    rt().block_on(async {
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("compression.type", compression)
            .create()
            .unwrap();
        for chunk in messages.chunks(500) {
            let futs: Vec<_> = chunk
                .iter()
                .map(|(k, v)| {
                    p.send(FutureRecord::to(topic).key(k).payload(v), Timeout::After(Duration::from_secs(30)))
                })
                .collect();
            for f in futs {
                f.await.map_err(|(e, _)| e).unwrap();
            }
        }
    });
}

/// Reads a topic from the start until `want(messages)` holds or the deadline passes.
pub fn read_until(bootstrap: &str, topic: &str, deadline: Duration, want: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    while Instant::now() < end {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push(m.payload().unwrap_or_default().to_vec());
        }
        if want(&got) {
            break;
        }
    }
    got
}

/// Every message on every partition of `topic` up to its high watermark at the time of the
/// call (what was written before: complete once the writers have stopped).
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    read_all_with_headers(bootstrap, topic).into_iter().map(|(payload, _)| payload).collect()
}

/// As [`read_all`], each message with its headers (as UTF-8 text).
#[allow(dead_code)]
pub fn read_all_with_headers(
    bootstrap: &str,
    topic: &str,
) -> Vec<(Vec<u8>, std::collections::BTreeMap<String, String>)> {
    use rdkafka::message::Headers;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("read-all-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
        if low < high {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low)).unwrap();
            ends.insert(p.id(), high);
        }
    }
    let mut got = Vec::new();
    if ends.is_empty() {
        return got;
    }
    c.assign(&tpl).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(Instant::now() < end, "{topic}: could not read up to the high watermarks {ends:?}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            got.push((m.payload().unwrap_or_default().to_vec(), headers));
            if ends.get(&m.partition()).is_some_and(|h| m.offset() + 1 >= *h) {
                ends.remove(&m.partition());
            }
        }
    }
    got
}

/// The group's committed offset on `partition` of `topic` (-1: none).
pub fn committed(bootstrap: &str, topic: &str, partition: i32, group: &str) -> i64 {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else { return -1 };
    match got.elements().first().map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    }
}
