//! `exfilwatch run --role detect`: the internal topic -> detect -> sinks, one detector state per
//! internal partition, moving with the partition between instances of a consumer group.
//!
//! ## Partition state
//! Each assigned partition has its own [`Shard`] (detector, delivered ids, alert-topic marks,
//! raw-offset marks) and its own place in the state store: `<state_store>/<topic>-<partition>`
//! (a subdirectory, or a prefix of an object store URL), with the same checkpoints and
//! journal as role all.
//! - **Assigned** (rebalance callback, before fetching starts): the partition's newest valid
//!   checkpoint is restored and fetching starts at the offset it covers; without one the
//!   partition starts fresh (or from its share of `service.model`) at the group's committed
//!   offset. A restored state's alert-topic marks are read back before the next produce, as
//!   after a restart in role all.
//! - **Revoked** (rebalance callback, before the partition goes): a checkpoint of its state is
//!   written and the offsets it covers committed, then the state is dropped. Nothing is in
//!   flight then: the loop handles one message at a time and the callback runs between two.
//! - Periodically and on shutdown, every partition is checkpointed, as in role all.
//!
//! An instance that dies without a revoke (SIGKILL, lost machine) leaves its partitions'
//! last periodic checkpoints; the instance that gets them restores those and reads on from
//! their offsets: alerts re-raised from the re-read batches are recognised by the delivered
//! ids (journal) and the alert topic's read-back, so none is emitted twice.

use super::{Pipeline, SavedState, ServiceError, Shard};
use crate::config::{Options, StateStoreOptions};
use crate::detect::{Detector, DetectorStats};
use crate::service::wire::partition_for;
use crate::sources::kafka::{self, Consumer, OwnerContext, PartitionOwner};
use crate::state::StateStore;
use crate::telemetry::{Health, Metrics, Stats};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// What the rebalance callback and the loop share. The loop never holds the lock across a
/// call that can run the callback (`recv`), so the two never wait for each other.
#[derive(Default)]
struct Shared {
    shards: BTreeMap<i32, Shard>,
    /// Alert-topic marks of states restored in a callback, for the loop's read-back.
    restored_marks: Vec<BTreeMap<i32, i64>>,
    /// Checkpoints written in a callback (size, time taken), for the metrics.
    written: Vec<(u64, std::time::Duration)>,
    /// A partition's state could not be restored: the service stops with this (its
    /// supervisor restarts it; the partition is retried by whoever gets it).
    fatal: Option<String>,
    /// The counters of the partitions this instance gave up, so that the published totals
    /// (this process's work) never go backwards when a partition leaves. Gauges (keys and
    /// origins tracked) are not kept: they describe the partitions held now.
    departed: DetectorStats,
    /// `[enrich]` as loaded now: given to every state taken on.
    enrich: Option<Arc<crate::enrich::Enrichment>>,
}

/// The partitions' states, restored and saved from the consumer's rebalance callback.
struct Partitions {
    shared: Arc<Mutex<Shared>>,
    cfg: Options,
    /// `service.state_store` (role detect needs one).
    store: StateStoreOptions,
    /// Partition count of the internal topic (a model's accounts are split by it).
    partitions: i32,
    /// `service.model`, loaded on the first partition that starts without a checkpoint.
    model: Mutex<Option<Detector>>,
}

impl Shared {
    /// Takes a partition's state out for good (revoked); what this process counted on it stays
    /// in the totals.
    fn give_up(&mut self, partition: i32) -> Option<Shard> {
        let shard = self.shards.remove(&partition)?;
        let mut departed = shard.detector().stats().since(&shard.baseline);
        (departed.keys_tracked, departed.origins_tracked) = (0, 0);
        self.departed.add(&departed);
        Some(shard)
    }
}

impl Shard {
    /// A partition taken with its checkpoint: the counters it carries were counted by whoever
    /// held it before, so this process publishes only their growth from here.
    fn counting_from_now(mut self) -> Shard {
        self.baseline = self.detector().stats().clone();
        self
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding it would have ended the service; the data is still consistent
    // per shard (each is taken out while in use).
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a partition's state lives: a subdirectory, or a prefix under the object store URL.
pub(crate) fn partition_location(store: &str, topic: &str, partition: i32) -> String {
    format!("{}/{topic}-{partition}", store.trim_end_matches('/'))
}

impl PartitionOwner for Partitions {
    /// Restores (or starts) the state of each assigned partition; fetching starts at the
    /// offset its checkpoint covers.
    fn assigned(&self, partitions: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        let mut starts = Vec::new();
        for (topic, partition) in partitions {
            let (topic, partition) = (topic.clone(), *partition);
            if lock(&self.shared).shards.contains_key(&partition) {
                continue;
            }
            match self.open(&topic, partition) {
                Ok((shard, marks)) => {
                    let next = shard.positions.get(&format!("{topic}/{partition}")).copied();
                    tracing::info!(
                        message = "Partition assigned.",
                        topic = %topic,
                        partition,
                        restored = marks.is_some(),
                        from_offset = next.unwrap_or(-1)
                    );
                    if let Some(next) = next {
                        starts.push((topic, partition, next));
                    }
                    let mut shared = lock(&self.shared);
                    shared.shards.insert(partition, shard);
                    shared.restored_marks.extend(marks);
                }
                Err(error) => {
                    tracing::error!(message = "Cannot restore a partition's state.", topic = %topic, partition, %error);
                    lock(&self.shared).fatal.get_or_insert(format!("partition {partition}: {error}"));
                }
            }
        }
        starts
    }

    /// Saves each revoked partition's state and drops it; the offsets it covers are committed.
    fn revoked(&self, partitions: &[(String, i32)]) -> BTreeMap<String, i64> {
        let mut commit = BTreeMap::new();
        for (topic, partition) in partitions {
            let Some(mut shard) = lock(&self.shared).give_up(*partition) else { continue };
            let saved = match shard.save(BTreeMap::new()) {
                Ok(written) => {
                    lock(&self.shared).written.extend(written);
                    commit.extend(std::mem::take(&mut shard.positions));
                    true
                }
                // Its new owner restores the previous checkpoint and reads on from there.
                Err(error) => {
                    tracing::warn!(message = "Checkpoint on revoke failed.", partition, %error);
                    false
                }
            };
            tracing::info!(message = "Partition revoked.", topic = %topic, partition, saved);
        }
        commit
    }
}

impl Partitions {
    /// A partition's state: its newest checkpoint (with the alert marks to read back from),
    /// or a fresh state.
    #[allow(clippy::type_complexity)]
    fn open(&self, topic: &str, partition: i32) -> Result<(Shard, Option<BTreeMap<i32, i64>>), ServiceError> {
        let location = partition_location(&self.store.location, topic, partition);
        let mut store = StateStore::open_with(&location, &self.store.settings())?;
        if let Some((s, offsets)) = super::restore(&mut store)? {
            let s: SavedState = s;
            let marks = s.alert_topic_marks.clone();
            let mut shard = Shard::restored(s, offsets, Some(store)).counting_from_now();
            // The allowlist comes from this configuration, never from a checkpoint.
            shard.state.detector.set_allowlist(super::allowlist(&self.cfg)?);
            shard.state.detector.set_enrichment(lock(&self.shared).enrich.clone());
            return Ok((shard, Some(marks)));
        }
        let detector = if self.cfg.service.model.is_none() {
            Detector::new(self.cfg.detect.clone())
        } else {
            let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
            if model.is_none() {
                *model = Some(super::initial_detector(&self.cfg)?);
            }
            let mut d = model.clone().unwrap_or_else(|| Detector::new(self.cfg.detect.clone()));
            d.retain_accounts(|account| partition_for(account, self.partitions) == partition);
            d
        };
        let detector = detector.with_allowlist(super::allowlist(&self.cfg)?);
        let mut shard = Shard::new(detector.with_enrichment(lock(&self.shared).enrich.clone()), Some(store));
        // A first checkpoint, so that the journal of delivered ids always follows one.
        shard.save(BTreeMap::new())?;
        Ok((shard, None))
    }
}

/// The consumer group of the detect role.
pub(crate) fn detect_group(cfg: &Options) -> String {
    format!("{}-detect", cfg.kafka.group_id)
}

type DetectConsumer = Consumer<OwnerContext<Partitions>>;

pub(super) async fn run(
    cfg: Options,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<Stats, ServiceError> {
    // Checked with the options; here for the type.
    let Some(store) = cfg.service.state_store.clone() else {
        return Err(ServiceError::Setup(
            "role detect needs service.state_store: partition state moves between instances through it".into(),
        ));
    };
    let partitions = super::internal_partitions(&cfg)?;
    let mut enrich = super::EnrichReload::new(&cfg)?;
    let shared = Arc::new(Mutex::new(Shared { enrich: enrich.current(), ..Shared::default() }));
    let owner = Partitions { shared: shared.clone(), cfg: cfg.clone(), store, partitions, model: Mutex::new(None) };
    let topics = vec![cfg.service.internal_topic.clone()];
    let group = detect_group(&cfg);
    let consumer: DetectConsumer =
        kafka::owning_consumer(&cfg.kafka, &group, &topics, health.clone(), metrics.consumer_lag(), owner)?;
    let mut p = Pipeline::new(cfg, metrics, health.clone(), true)?;
    health.set_restored();
    tracing::info!(message = "Detecting.", topic = %topics[0], partitions, group = %group);

    tokio::pin!(shutdown);
    let mut tick = super::ticker();
    let mut paused = std::collections::BTreeSet::new();
    loop {
        // Alerts waiting for a failing sink past `sinks.max_pending_alerts` (all partitions
        // together): every assigned partition is paused until the sinks take some. A message
        // fetched before the pause is still handled; the consumer is still polled, so the
        // instance keeps its place in the group.
        let (pending, assigned) = {
            let shared = lock(&shared);
            let pending: usize = shared.shards.values().map(|s| s.state.outbox.len()).sum();
            let assigned: std::collections::BTreeSet<_> =
                shared.shards.keys().map(|partition| (topics[0].clone(), *partition)).collect();
            (pending, assigned)
        };
        let want = if p.backpressure(pending) { assigned.clone() } else { Default::default() };
        // A partition assigned again starts unpaused.
        paused.retain(|tp| assigned.contains(tp));
        consumer.set_paused(want, &mut paused);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            msg = consumer.recv() => {
                p.take_callback_news(&shared)?;
                match msg {
                    Ok(m) => {
                        health.set_kafka(true, "");
                        let Some(mut shard) = lock(&shared).shards.remove(&m.partition) else {
                            // Fetched before the partition went; its new owner reads it.
                            continue;
                        };
                        let tp = format!("{}/{}", m.topic, m.partition);
                        let outcome = if shard.positions.get(&tp).is_some_and(|next| m.offset < *next) {
                            p.skipped_replayed += 1;
                            Ok(())
                        } else if m.payload.is_empty() {
                            // Nothing rekey writes; nothing to take.
                            p.handled(&mut shard, &consumer, m.source(), p.now());
                            Ok(())
                        } else {
                            let now = p.now();
                            let r = p.handle_batch(&mut shard, &m, now).await;
                            p.handled(&mut shard, &consumer, m.source(), now);
                            r
                        };
                        lock(&shared).shards.insert(m.partition, shard);
                        outcome?;
                    }
                    Err(error) => super::receive_error(error).await,
                }
            }
            _ = tick.tick() => {
                p.take_callback_news(&shared)?;
                if let Some(e) = enrich.poll(&p.cfg) {
                    let mut shared = lock(&shared);
                    shared.enrich.clone_from(&e);
                    for shard in shared.shards.values_mut() {
                        shard.state.detector.set_enrichment(e.clone());
                    }
                }
                let assigned: Vec<i32> = lock(&shared).shards.keys().copied().collect();
                for partition in assigned {
                    let Some(mut shard) = lock(&shared).shards.remove(&partition) else { continue };
                    let mut r = p.release_held(&mut shard).await;
                    if r.is_ok() {
                        r = p.flush(&mut shard).await;
                    }
                    lock(&shared).shards.insert(partition, shard);
                    r?;
                }
                p.sinks.tick(&mut p.stats).await;
                if p.checkpoint_due() {
                    let outcome = checkpoint_all(&mut p, &shared, &consumer, false);
                    p.checkpoint_outcome(outcome);
                }
                p.publish(events(&shared));
            }
        }
    }

    tracing::info!(message = "Shutting down: saving partition state.");
    let cfg = p.cfg.clone();
    let finish = async {
        // Alerts waiting for a failing sink get half the shutdown time; those still waiting
        // then are in the partitions' checkpoints, delivered by their next owner.
        let deadline = std::time::Instant::now() + cfg.service.shutdown_timeout / 2;
        let held: Vec<i32> = lock(&shared).shards.keys().copied().collect();
        for partition in held {
            let Some(mut shard) = lock(&shared).shards.remove(&partition) else { continue };
            let r = p.flush_waiting(&mut shard, Some(deadline)).await;
            lock(&shared).shards.insert(partition, shard);
            r?;
        }
        checkpoint_all(&mut p, &shared, &consumer, true)?;
        p.sinks.close().await?;
        Ok(())
    };
    super::finish_within(&cfg, finish).await?;
    // Saved: the revoke when the consumer closes has nothing left to save.
    let stats = events(&shared);
    lock(&shared).shards.clear();
    p.publish(stats);
    Ok(p.stats)
}

/// What this process's detectors counted: on the partitions given up, plus the growth of
/// those held now since it took them (gauges: only those held now). Never goes backwards.
fn events(shared: &Mutex<Shared>) -> DetectorStats {
    let shared = lock(shared);
    let mut total = shared.departed.clone();
    for s in shared.shards.values() {
        total.add(&s.detector().stats().since(&s.baseline));
    }
    total
}

/// Checkpoints every assigned partition, then commits the offsets they cover.
fn checkpoint_all(
    p: &mut Pipeline,
    shared: &Mutex<Shared>,
    consumer: &DetectConsumer,
    sync: bool,
) -> Result<(), ServiceError> {
    let mut shared = lock(shared);
    let mut offsets = BTreeMap::new();
    let mut failed = None;
    for shard in shared.shards.values_mut() {
        match shard.save(BTreeMap::new()) {
            Ok(written) => {
                if let Some((bytes, took)) = written {
                    p.metrics.checkpoint_written(took, bytes, std::time::SystemTime::now());
                }
                offsets.extend(shard.positions.clone());
            }
            Err(error) => failed = Some(error),
        }
    }
    p.last_checkpoint = std::time::Instant::now();
    if let Err(error) = consumer.commit(&offsets, sync) {
        tracing::warn!(message = "Commit after checkpoint failed.", %error);
    }
    failed.map_or(Ok(()), Err)
}

impl Pipeline {
    /// Takes what the rebalance callback left: restored states' alert marks (read back before
    /// the next produce), checkpoint figures, or a failure to restore.
    fn take_callback_news(&mut self, shared: &Mutex<Shared>) -> Result<(), ServiceError> {
        let (marks, written, fatal) = {
            let mut s = lock(shared);
            (std::mem::take(&mut s.restored_marks), std::mem::take(&mut s.written), s.fatal.take())
        };
        if let Some(why) = fatal {
            return Err(ServiceError::Setup(format!("cannot restore partition state: {why}")));
        }
        for m in &marks {
            self.sinks.restored_marks(m);
        }
        for (bytes, took) in written {
            self.metrics.checkpoint_written(took, bytes, std::time::SystemTime::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, Decoder};

    /// A shard whose detector took the first `n` records of a sample file.
    fn shard_with(n: usize) -> Shard {
        let mut detector = Detector::new(crate::config::Config::default().detect);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs/fabrikam/cdbdataplanerequests.jsonl");
        let text = std::fs::read(path).unwrap();
        let (mut d, mut out) = (Decoder::new(), Vec::new());
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).take(n) {
            d.decode(line, |item| {
                if let Decoded::Event(ev) = item {
                    detector.ingest(&ev, &mut out);
                }
            });
        }
        detector.finish(&mut out);
        Shard::new(detector, None)
    }

    #[test]
    fn counters_never_go_backwards_when_a_partition_leaves_and_comes_back() {
        let shared = Mutex::new(Shared::default());
        lock(&shared).shards.insert(0, shard_with(300));
        lock(&shared).shards.insert(1, shard_with(200));
        let before = events(&shared);
        assert!(before.events >= 500 && before.keys_tracked > 0, "{before:?}");
        // Partition 1 leaves, then comes back with its checkpoint (counters start at zero in
        // a restored detector) and takes more records.
        let gone = lock(&shared).give_up(1).unwrap();
        let left = events(&shared);
        let restored: Detector = serde_json::from_slice(&serde_json::to_vec(&gone.state.detector).unwrap()).unwrap();
        assert_eq!(restored.stats().events, 200, "a checkpoint carries the counters");
        let mut back = Shard::new(restored, None).counting_from_now();
        assert_eq!(events(&shared).events, left.events, "taken back: not counted twice");
        // It takes 50 more records.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs/fabrikam/cdbdataplanerequests.jsonl");
        let text = std::fs::read(path).unwrap();
        let (mut d, mut out) = (Decoder::new(), Vec::new());
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).skip(200).take(50) {
            d.decode(line, |item| {
                if let Decoded::Event(ev) = item {
                    back.state.detector.ingest(&ev, &mut out);
                }
            });
        }
        back.state.detector.finish(&mut out);
        lock(&shared).shards.insert(1, back);
        let after = events(&shared);
        assert_eq!(after.events, left.events + 50);
        for (name, b, l, a) in [
            ("events", before.events, left.events, after.events),
            ("late_events", before.late_events, left.late_events, after.late_events),
            ("failed_requests", before.failed_requests, left.failed_requests, after.failed_requests),
            ("without_ip", before.without_ip, left.without_ip, after.without_ip),
            ("origins_evicted", before.origins_evicted, left.origins_evicted, after.origins_evicted),
            ("origins_expired", before.origins_expired, left.origins_expired, after.origins_expired),
        ] {
            assert!(b <= l && l <= a, "{name}: {b} -> {l} -> {a}");
        }
        assert_eq!(left.events, before.events, "the departed partition's events still count");
        assert!(left.keys_tracked < before.keys_tracked, "gauges: only the partitions held now");
    }
}
