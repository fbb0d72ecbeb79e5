//! `exfilwatch run --role rekey`: raw topics -> decode -> the internal topic, partitioned by
//! account (format and partitioning: [`crate::service::wire`]).
//!
//! No detector state lives here, so nothing is checkpointed: a raw message's offset is stored
//! once every batch it produced was acknowledged by the broker (in order, with up to
//! [`MAX_IN_FLIGHT`] messages waiting for their acknowledgements), and librdkafka commits
//! stored offsets. After a crash the raw messages since the last commit are decoded and
//! produced again; every batch names its raw message, and the detect role drops the copies.
//! Malformed records are counted, logged once per kind and set aside on the dead-letter topic
//! here, where they are decoded.
//!
//! The raw partitions are merged by event time as in role all (`sources::align`): a message
//! is decoded when fetched and forwarded when it leaves the aligner, so the internal topic
//! holds each account's records in replay's order. Batches forwarded while the aligner is not
//! live (a backlog is being merged) are flagged `backlog`; once it is live again, every
//! internal partition that last heard "backlog" gets an empty batch without the flag
//! (`service::wire`), so that its detect instance goes back to releasing by `max_hold`.

use super::decoding::Decoding;
use super::{now_ms, set_aside, Fetched, ServiceError};
use crate::config::Options;
use crate::decode::Malformed;
use crate::detect::ClockGuard;
use crate::service::wire::{partition_for, BatchBuilder, Source};
use crate::sinks::kafka::{DeadLetterTopic, InternalTopic, Landing, Producer};
use crate::sources::align::Aligner;
use crate::sources::kafka;
use crate::telemetry::{BatchProcessed, Health, Metrics, Stats};
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

/// Raw messages decoded and produced whose acknowledgements are still awaited.
const MAX_IN_FLIGHT: usize = 5_000;

/// One raw message's batches on their way: resolves to its source once every batch landed.
type Landed = std::pin::Pin<Box<dyn Future<Output = Result<(String, i32, i64), ServiceError>> + Send>>;

/// A live mark on its way to an internal partition.
type Mark = std::pin::Pin<Box<dyn Future<Output = (usize, Result<(), ServiceError>)> + Send>>;

pub(super) async fn run(
    cfg: Options,
    mut metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    // Idempotent and patient: a broker that is away holds the deliveries (and the offsets)
    // until it returns, as in role all.
    let producer = Producer::new(&cfg.kafka, true)?;
    let topic = cfg.service.internal_topic.clone();
    let internal = InternalTopic::new(producer.clone(), &topic);
    let partitions = super::internal_partitions(&cfg)?;
    let dead_letters = cfg.dead_letter_topic.as_ref().map(|t| DeadLetterTopic::new(producer, t));
    // Offsets are stored by hand once landed, and auto-committed.
    let feed = kafka::AlignFeed::default();
    let consumer = kafka::consumer(&cfg.kafka, health.clone(), true, metrics.consumer_lag(), feed.clone())?;
    health.set_restored();
    // Raw messages are decoded on the loop (one thread) or on a pool of decode threads, and
    // enter the aligner in the order they were received either way (`service::decoding`).
    let mut decoding = Decoding::new(cfg.service.decode_threads)?;
    tracing::info!(
        message = "Rekeying.",
        topics = ?cfg.kafka.topics,
        group = %cfg.kafka.group_id,
        internal_topic = %topic,
        partitions,
        decode_threads = decoding.threads()
    );

    // Records stamped ahead of the wall clock or long behind their account are set aside here,
    // before they reach the internal topic.
    let mut clock: ClockGuard<()> = ClockGuard::new(&cfg.detect);
    let mut stats = Stats::default();
    let mut builders: Vec<BatchBuilder> = (0..partitions).map(|_| BatchBuilder::default()).collect();
    // Per internal partition: the source of the last batch produced there and whether it was
    // flagged as produced from a backlog (a live mark follows once caught up).
    let mut last: Vec<Option<(String, i32, i64, bool)>> = vec![None; partitions as usize];
    let mut marks: FuturesUnordered<Mark> = FuturesUnordered::new();
    let mut in_flight: FuturesOrdered<Landed> = FuturesOrdered::new();
    let (mut messages, mut produced) = (0u64, 0u64);
    // The raw partitions are merged by event time (`sources::align`), as in role all: the
    // internal topic gets the records in the order replay would process them.
    let mut align: Aligner<Fetched> = Aligner::new(super::align_options(&cfg));
    let mut paused = BTreeSet::new();
    tokio::pin!(shutdown);
    let mut tick = super::ticker();
    loop {
        if feed.changed() {
            super::apply_align_feed(&feed, &mut align, &mut decoding, &mut paused, None, now_ms());
        }
        while in_flight.len() < MAX_IN_FLIGHT {
            let Some((_, f)) = align.pop(now_ms()) else { break };
            let backlog = !align.live(now_ms());
            let started = std::time::Instant::now();
            let mut bad: Vec<(Malformed, Option<usize>)> = Vec::new();
            let (records, newest) = super::admit(&mut clock, &mut stats, &f, &mut bad, |ev| {
                builders[partition_for(&ev.account, partitions) as usize].push(ev)
            });
            let source = f.source();
            let src = Source { topic: source.0.into(), partition: source.1, offset: source.2 };
            let mut deliveries: Vec<Landing> = Vec::new();
            for (p, b) in builders.iter_mut().enumerate().filter(|(_, b)| !b.is_empty()) {
                let bytes = b.finish(&src, backlog);
                deliveries.push(internal.send(p as i32, bytes).await?);
                last[p] = Some((source.0.to_string(), source.1, source.2, backlog));
                produced += 1;
            }
            let lag = super::event_lag(newest);
            let elapsed = started.elapsed() + f.decoding;
            BatchProcessed { records: records + bad.len() as u64, elapsed, lag }.emit(&mut stats);
            stats.input_bytes += f.payload().len() as u64;
            set_aside(dead_letters.as_ref(), &mut stats, f.payload(), source, bad).await;
            let owned = (source.0.to_string(), source.1, source.2);
            in_flight.push_back(Box::pin(async move {
                for d in deliveries {
                    d.await?;
                }
                Ok(owned)
            }));
            messages += 1;
            health.progress(messages, stats.records_total(), 0);
            if feed.changed() {
                super::apply_align_feed(&feed, &mut align, &mut decoding, &mut paused, None, now_ms());
            }
        }
        super::sync_pauses(&consumer, &mut align, &mut paused, now_ms());
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(landed) = in_flight.next(), if !in_flight.is_empty() => {
                let (t, p, o) = landed?;
                consumer.store_offset(&t, p, o);
            }
            Some((p, landed)) = marks.next(), if !marks.is_empty() => {
                if let Err(error) = landed {
                    // Sent again on the next tick.
                    tracing::warn!(message = "Live mark not delivered; retrying.", partition = p, %error);
                    if let Some(l) = &mut last[p] {
                        l.3 = true;
                    }
                }
            }
            // A decode came back: it and those before it go into the aligner.
            done = decoding.finished(), if decoding.in_flight() > 0 => {
                decoding.accept(done?, &mut align, now_ms())?;
            }
            // With the decode threads' queue full, a decode comes back first (milliseconds).
            msg = consumer.recv(), if in_flight.len() < MAX_IN_FLIGHT && decoding.has_room() => match msg {
                Ok(m) => {
                    health.set_kafka(true, "");
                    if feed.changed() {
                        super::apply_align_feed(&feed, &mut align, &mut decoding, &mut paused, None, now_ms());
                    }
                    // Decoded once, here or on a decode thread: the merge orders it by its
                    // records' times.
                    decoding.submit(m, &mut align, now_ms())?;
                }
                Err(error) => super::receive_error(error).await,
            },
            _ = tick.tick() => {
                if align.live(now_ms()) {
                    // Caught up: tell every internal partition that last heard "backlog" (an
                    // empty batch repeating that batch's source: a copy to the detect role, so
                    // it changes nothing but the flag).
                    for (p, l) in last.iter_mut().enumerate() {
                        let Some((t, rp, o, backlog @ true)) = l else { continue };
                        let bytes = BatchBuilder::default().finish(&Source { topic: t.as_str().into(), partition: *rp, offset: *o }, false);
                        let d = internal.send(p as i32, bytes).await?;
                        *backlog = false;
                        marks.push(Box::pin(async move { (p, d.await.map_err(ServiceError::from)) }));
                    }
                }
                metrics.publish(&stats);
            }
        }
    }

    tracing::info!(
        message = "Shutting down: waiting for the internal topic's acknowledgements.",
        in_flight = in_flight.len(),
        produced
    );
    let finish = async {
        while let Some(landed) = in_flight.next().await {
            let (t, p, o) = landed?;
            consumer.store_offset(&t, p, o);
        }
        if let Err(error) = consumer.commit_stored() {
            tracing::warn!(message = "Final commit failed.", %error);
        }
        Ok(())
    };
    super::finish_within(&cfg, finish).await?;
    metrics.publish(&stats);
    Ok(stats)
}
