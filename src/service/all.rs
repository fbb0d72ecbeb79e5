//! Role all (`exfilwatch run`, the default): one process, one detector for the whole stream.
//! Raw partitions merged by event time, each message handled by the [`Pipeline`], the
//! verdicts topic applied as it is consumed, periodic checkpoints, a drain on shutdown.

use super::decoding::Decoding;
use super::{
    align_options, allowlist, apply_align_feed, finish_within, initial_detector, receive_error, restore, sync_pauses,
    ticker, Fetched, Pipeline, ServiceError, Shard,
};
use crate::config::Options;
use crate::sources::align::Aligner;
use crate::sources::kafka;
use crate::telemetry::{Health, Metrics, Stats};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

/// Role all: one process, one detector for the whole stream.
pub(super) async fn run(
    cfg: Options,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    let mut store = match &cfg.service.state_store {
        None => None,
        Some(s) => Some(crate::state::StateStore::open_with(&s.location, &s.settings())?),
    };
    let restored = match &mut store {
        Some(store) => restore(store)?,
        None => None,
    };
    let was_restored = restored.is_some();
    let checkpoints = store.is_some();
    let mut p = Pipeline::new(cfg, metrics, health.clone(), checkpoints)?;
    let mut shard = match restored {
        Some((mut s, offsets)) => {
            p.sinks.restore(std::mem::take(&mut s.sinks))?;
            // Only a restored state can have delivered alerts it never journaled.
            p.sinks.restored_marks(&s.alert_topic_marks);
            Shard::restored(s, offsets, store)
        }
        None => Shard::new(initial_detector(&p.cfg)?, store),
    };
    // The allowlist comes from this configuration, never from a checkpoint or model.
    shard.state.detector.set_allowlist(allowlist(&p.cfg)?);
    let mut enrich = super::EnrichReload::new(&p.cfg)?;
    shard.state.detector.set_enrichment(enrich.current());
    health.set_restored();
    // The verdicts topic is one more input, in the same group: its offsets are checkpointed
    // with the state like the logs'. It is not part of the event-time alignment: a verdict is
    // applied when consumed.
    let verdicts_topic = p.cfg.service.verdicts_topic.clone();
    let mut kafka_cfg = p.cfg.kafka.clone();
    kafka_cfg.topics.extend(verdicts_topic.clone());
    let feed = kafka::AlignFeed::default();
    let consumer = kafka::consumer(&kafka_cfg, health.clone(), !checkpoints, p.metrics.consumer_lag(), feed.clone())?;
    if checkpoints && !was_restored {
        // A first checkpoint (the initial state, no offsets yet), so that the journal of
        // delivered ids always follows a checkpoint and a crash before the first periodic
        // one loses nothing.
        p.checkpoint(&mut shard, &consumer, true)?;
    }
    // Raw messages are decoded on the loop (one thread) or on a pool of decode threads, and
    // enter the aligner in the order they were received either way (`decoding`).
    let mut decoding = Decoding::new(p.cfg.service.decode_threads)?;
    tracing::info!(
        message = "Consuming.",
        topics = ?p.cfg.kafka.topics,
        group = %p.cfg.kafka.group_id,
        decode_threads = decoding.threads()
    );

    tokio::pin!(shutdown);
    let mut tick = ticker();
    // Raw partitions are merged by event time (`sources::align`): fetched messages wait in the
    // aligner, and a message is handled (and its offset may be stored) only when it comes out.
    let mut align: Aligner<Fetched> = Aligner::new(align_options(&p.cfg));
    let mut paused = BTreeSet::new();
    loop {
        if feed.changed() {
            apply_align_feed(&feed, &mut align, &mut decoding, &mut paused, verdicts_topic.as_deref(), p.now());
        }
        // Alerts waiting for a failing sink past `sinks.max_pending_alerts`: nothing more is
        // handled; fetched messages wait in the aligner, which pauses each partition whose
        // share of its buffer is full, so consumption stops with memory bounded.
        while !p.backpressure(shard.state.outbox.len()) {
            let Some((_, f)) = align.pop(p.now()) else { break };
            let now = p.now();
            p.handle(&mut shard, &f, now).await?;
            p.handled(&mut shard, &consumer, f.source(), now);
            health.progress(p.messages, p.stats.records_total(), p.health.alerts());
            if feed.changed() {
                apply_align_feed(&feed, &mut align, &mut decoding, &mut paused, verdicts_topic.as_deref(), p.now());
            }
        }
        sync_pauses(&consumer, &mut align, &mut paused, p.now());
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            // A decode came back: it and those before it go into the aligner.
            done = decoding.finished(), if decoding.in_flight() > 0 => {
                decoding.accept(done?, &mut align, p.now())?;
            }
            // With the decode threads' queue full, a decode comes back first (milliseconds).
            msg = consumer.recv(), if decoding.has_room() => match msg {
                Ok(m) => {
                    health.set_kafka(true, "");
                    if feed.changed() {
                        apply_align_feed(&feed, &mut align, &mut decoding, &mut paused, verdicts_topic.as_deref(), p.now());
                    }
                    let tp = format!("{}/{}", m.topic, m.partition);
                    if shard.positions.get(&tp).is_some_and(|next| m.offset < *next) {
                        // Already in the restored state (read again from an older commit).
                        p.skipped_replayed += 1;
                        continue;
                    }
                    if verdicts_topic.as_ref() == Some(&m.topic) {
                        let now = p.now();
                        p.handle_verdicts(&mut shard, &m).await?;
                        p.handled(&mut shard, &consumer, m.source(), now);
                        continue;
                    }
                    // Decoded once, here or on a decode thread: the merge orders it by its
                    // records' times.
                    decoding.submit(m, &mut align, p.now())?;
                }
                Err(error) => receive_error(error).await,
            },
            _ = tick.tick() => {
                // While a backlog is merged, a wait for a partition's next fetch is not disorder.
                shard.backlog = !align.live(p.now());
                if let Some(e) = enrich.poll(&p.cfg) {
                    shard.state.detector.set_enrichment(e);
                }
                p.release_held(&mut shard).await?;
                p.flush(&mut shard).await?;
                p.sinks.tick(&mut p.stats).await;
                if !checkpoints {
                    p.store_ready(&shard, &consumer);
                } else if p.checkpoint_due() {
                    let outcome = p.checkpoint(&mut shard, &consumer, false);
                    p.checkpoint_outcome(outcome);
                }
                p.publish(shard.detector().stats().clone());
            }
        }
    }

    tracing::info!(message = "Shutting down: draining.");
    let cfg = p.cfg.clone();
    let finish = async {
        // Either way every handled record is covered afterwards: by the checkpoint (queues
        // included) or by having been processed; all their offsets may be committed.
        if checkpoints {
            // Alerts waiting for a failing sink get half the shutdown time; those still
            // waiting then are in the checkpoint, delivered after the restart.
            let deadline = std::time::Instant::now() + cfg.service.shutdown_timeout / 2;
            p.flush_waiting(&mut shard, Some(deadline)).await?;
            p.checkpoint(&mut shard, &consumer, true)?;
        } else {
            p.drain(&mut shard).await?;
        }
        for ((topic, partition), q) in std::mem::take(&mut p.pending) {
            if let Some(&(_, offset)) = q.back() {
                consumer.store_offset(&topic, partition, offset);
            }
        }
        p.sinks.close().await?;
        if let Err(error) = consumer.commit_stored() {
            tracing::warn!(message = "Final commit failed.", %error);
        }
        Ok::<_, ServiceError>(())
    };
    finish_within(&cfg, finish).await?;
    p.publish(shard.detector().stats().clone());
    Ok(p.stats)
}
