//! A small Kafka client for `make demo` (Debian's kcat cannot talk to current brokers):
//!
//!   kafka_tool create BOOTSTRAP TOPIC PARTITIONS
//!   kafka_tool produce BOOTSTRAP TOPIC PATH [ENVELOPE]   the logs under PATH, as replay frames
//!       them, in `{"records": [...]}` envelopes of ENVELOPE (default 20) keyed by stream, so
//!       each account's archive stays in order on one partition
//!   kafka_tool wait-caught-up BOOTSTRAP TOPIC GROUP SECONDS   until GROUP's committed offsets
//!       reach the end of every partition of TOPIC
//!   kafka_tool print BOOTSTRAP TOPIC   every alert on TOPIC: a readable line, then its JSON

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["create", b, topic, n] => rt.block_on(create(b, topic, n.parse().context("PARTITIONS")?)),
        ["produce", b, topic, path] => rt.block_on(produce(b, topic, path, 20)),
        ["produce", b, topic, path, n] => rt.block_on(produce(b, topic, path, n.parse().context("ENVELOPE")?)),
        ["wait-caught-up", b, topic, group, secs] => wait_caught_up(b, topic, group, secs.parse().context("SECONDS")?),
        ["print", b, topic] => print(b, topic),
        _ => bail!("usage: kafka_tool create|produce|wait-caught-up|print ... (see the source's header)"),
    }
}

async fn create(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    for r in admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await?
    {
        r.map_err(|(t, e)| anyhow!("cannot create {t}: {e}"))?;
    }
    println!("created topic {topic} ({partitions} partitions)");
    Ok(())
}

async fn produce(bootstrap: &str, topic: &str, path: &str, envelope: usize) -> Result<()> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()?;
    let (mut records, mut messages) = (0usize, 0usize);
    for stream in exfilwatch::sources::collect_streams(&[path.into()])?.0 {
        let key = stream.describe();
        let mut reader = exfilwatch::sources::UnitReader::new(stream, 1 << 30);
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut pending = Vec::new();
        while let Some(u) = reader.next_unit() {
            records += 1;
            // A unit that is not JSON (the samples hold a few on purpose) travels alone.
            if serde_json::from_slice::<serde::de::IgnoredAny>(u.bytes).is_ok() {
                batch.push(u.bytes.to_vec());
                if batch.len() < envelope {
                    continue;
                }
                pending.push(envelope_of(&mut batch));
            } else {
                if !batch.is_empty() {
                    pending.push(envelope_of(&mut batch));
                }
                pending.push(u.bytes.to_vec());
            }
        }
        if !batch.is_empty() {
            pending.push(envelope_of(&mut batch));
        }
        for chunk in pending.chunks(200) {
            let futs: Vec<_> = chunk
                .iter()
                .map(|m| p.send(FutureRecord::to(topic).key(&key).payload(m), Timeout::After(Duration::from_secs(60))))
                .collect();
            for f in futs {
                f.await.map_err(|(e, _)| anyhow!("produce to {topic}: {e}"))?;
            }
            messages += chunk.len();
        }
    }
    println!("produced {records} records in {messages} messages to {topic}");
    Ok(())
}

fn envelope_of(batch: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut env = b"{\"records\": [".to_vec();
    env.extend(batch.join(&b","[..]));
    env.extend(b"]}");
    batch.clear();
    env
}

fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?)
}

/// (partition, low, high) of every partition of `topic`.
fn watermarks(c: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md.topics().first().ok_or_else(|| anyhow!("no metadata for {topic}"))?;
    t.partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            Ok((p.id(), lo, hi))
        })
        .collect()
}

fn wait_caught_up(bootstrap: &str, topic: &str, group: &str, secs: u64) -> Result<()> {
    let c = consumer(bootstrap, group)?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let ends = watermarks(&c, topic)?;
    loop {
        let mut tpl = TopicPartitionList::new();
        for (p, _, _) in &ends {
            tpl.add_partition(topic, *p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let behind: i64 = ends
            .iter()
            .map(|(p, _, hi)| {
                let at = match committed.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                };
                hi - at
            })
            .sum();
        if behind <= 0 {
            println!("group {group} has committed every message of {topic}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("group {group} is still {behind} messages behind on {topic} after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print(bootstrap: &str, topic: &str) -> Result<()> {
    let c = consumer(bootstrap, &format!("kafka-tool-print-{}", std::process::id()))?;
    let ends = watermarks(&c, topic)?;
    let mut tpl = TopicPartitionList::new();
    for (p, lo, _) in &ends {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*lo))?;
    }
    c.assign(&tpl)?;
    let total: i64 = ends.iter().map(|(_, lo, hi)| hi - lo).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < total {
        if Instant::now() > deadline {
            bail!("read {seen} of {total} messages of {topic} within 60 s");
        }
        let Some(m) = c.poll(Duration::from_millis(500)) else { continue };
        let m = m?;
        seen += 1;
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        println!(
            "[{}] {} {}/{}: {}",
            v["severity"].as_str().unwrap_or("?"),
            v["rule"].as_str().unwrap_or("?"),
            v["account"].as_str().unwrap_or("?"),
            v["credential"].as_str().unwrap_or("?"),
            v["summary"].as_str().unwrap_or("?")
        );
        println!("{}", String::from_utf8_lossy(m.payload().unwrap_or_default()));
    }
    println!("{total} alert(s) on {topic}");
    Ok(())
}
