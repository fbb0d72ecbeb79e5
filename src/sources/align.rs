//! Event-time alignment across the partitions of the raw topics (sans-IO).
//!
//! Azure Monitor writes to Event Hubs without a partition key, so an account's records are
//! spread over every partition, and librdkafka fetches a backlog partition by partition: one
//! partition's days arrive before another's. [`Aligner`] puts them back in event-time order,
//! the way `replay` merges files (always from the stream furthest behind):
//!
//! - **Progress**: per assigned partition, the newest record time seen (the records' own
//!   `time`, not the Kafka timestamp).
//! - **Pause**: a partition whose whole buffer is more than `bound` (`detect.max_out_of_order`)
//!   ahead of the slowest *active* partition (its oldest buffered message is: nothing of it can
//!   be handed out before the others catch up, so fetching more would only fill memory), or
//!   whose buffer holds its share of the buffers' budget or more, should be paused ([`Aligner::paused`]; the
//!   Kafka source calls `Consumer::pause`/`resume`). It resumes once the others are within the
//!   bound of its oldest message, or its buffer is below half of its share: with that
//!   hysteresis a partition is paused and resumed about once per buffer's worth of messages, not
//!   once per message (librdkafka drops what it prefetched for a paused partition and fetches it
//!   again on resume), and it still holds messages when it resumes, so the merge rarely waits
//!   for a fetch. A partition with nothing buffered is never paused, so the slowest partition
//!   always fetches. Memory is bounded by the buffers and librdkafka's fetch queues, never by
//!   the backlog.
//! - **Merge**: [`Aligner::pop`] hands out the buffered message with the oldest event time,
//!   a message's time being its newest record's (as replay's progress: one late record in an
//!   envelope does not pull the envelope ahead of its neighbours) (ties by partition), but only when no partition that could still deliver something older
//!   has nothing buffered: a partition with an empty buffer holds the merge back while it is
//!   behind on its fetch (its next offset below the high watermark, or the watermark not known
//!   yet), like Kafka Streams waiting on a partition with known lag. A caught-up partition (lag
//!   0) never holds it back, so live traffic, where every partition is caught up, is handed out
//!   as it arrives: alignment adds nothing.
//! - **Idle**: a partition with nothing buffered, lag 0 (or unknown) and no data for
//!   `idle_timeout` of wall-clock time leaves the alignment (its stale progress no longer
//!   pauses the others) until data arrives again (Kafka Streams' `max.task.idle.ms`, Flink's
//!   idle sources in watermark alignment).
//! - **Rebalance**: an assigned partition joins from its committed position with no progress
//!   (it holds the merge back until its first message or until it is known to be caught up);
//!   a revoked one leaves, and its buffered messages are dropped unhandled (their offsets were
//!   never stored: the new owner reads them again).
//!
//! The component reads no clock: wall-clock milliseconds are passed in. Within a partition,
//! messages are handed out in offset order, so a partition's stored offsets stay monotonic.

use crate::time::Nanos;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A partition of a raw topic.
pub type TopicPartition = (String, i32);

/// Settings of an [`Aligner`].
#[derive(Clone, Copy, Debug)]
pub struct AlignOptions {
    /// How far (event time) a partition may be ahead of the slowest active one before it is
    /// paused.
    pub bound: Nanos,
    /// Wall-clock milliseconds without data after which a caught-up partition with nothing
    /// buffered leaves the alignment.
    pub idle_timeout_ms: i64,
    /// A partition whose buffered messages add up to this many bytes is paused: at least this
    /// much, or an equal share of `total_bytes` over the assigned partitions when that is more.
    pub buffer_bytes: usize,
    /// What all partitions' buffers may hold together (0: only `buffer_bytes` each). A share
    /// of a fixed total keeps the time a partition's buffer lasts after it resumes (half of it,
    /// consumed at the pipeline's rate split over the partitions) the same however many
    /// partitions there are, and longer than a fetch round trip.
    pub total_bytes: usize,
    /// false (`service.align_partitions = false`): no alignment; `pop` hands out what is
    /// buffered at once, nothing is paused for being ahead, and the stream counts as live.
    pub enabled: bool,
}

struct Held<M> {
    /// The message's newest record time (the key before it when it has no record).
    key: Nanos,
    bytes: usize,
    item: M,
}

struct Part<M> {
    queue: VecDeque<Held<M>>,
    bytes: usize,
    /// Newest record time seen.
    progress: Option<Nanos>,
    /// Offset after the newest message received.
    next_offset: Option<i64>,
    /// The partition's high watermark and the consumer's position, as last reported.
    high: Option<i64>,
    position: Option<i64>,
    /// Wall-clock milliseconds of the last message (or of the assignment).
    last_data_ms: i64,
    /// Paused for a full buffer by the last [`Aligner::paused`] (until below half of it).
    full: bool,
}

impl<M> Part<M> {
    fn new(now_ms: i64) -> Part<M> {
        Part {
            queue: VecDeque::new(),
            bytes: 0,
            progress: None,
            next_offset: None,
            high: None,
            position: None,
            last_data_ms: now_ms,
            full: false,
        }
    }

    /// Everything up to the (last reported) high watermark was received.
    fn caught_up(&self) -> bool {
        let next = match (self.next_offset, self.position) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        matches!((next, self.high), (Some(n), Some(h)) if n >= h)
    }

    /// Nothing buffered, nothing known to be left to fetch, and no data for the idle timeout.
    fn idle(&self, now_ms: i64, timeout_ms: i64) -> bool {
        let lag_zero_or_unknown = self.high.is_none() || self.caught_up();
        self.queue.is_empty() && lag_zero_or_unknown && now_ms.saturating_sub(self.last_data_ms) >= timeout_ms
    }
}

/// Merges the messages of several partitions by event time (see the module documentation).
pub struct Aligner<M> {
    opts: AlignOptions,
    parts: BTreeMap<TopicPartition, Part<M>>,
}

impl<M> Aligner<M> {
    pub fn new(opts: AlignOptions) -> Aligner<M> {
        Aligner { opts, parts: BTreeMap::new() }
    }

    /// A partition joins the alignment (again: nothing changes for one already in it).
    pub fn assign(&mut self, tp: TopicPartition, now_ms: i64) {
        self.parts.entry(tp).or_insert_with(|| Part::new(now_ms));
    }

    /// A partition leaves; its buffered messages are returned, unhandled.
    pub fn revoke(&mut self, tp: &TopicPartition) -> Vec<M> {
        self.parts.remove(tp).map(|p| p.queue.into_iter().map(|h| h.item).collect()).unwrap_or_default()
    }

    /// The partitions in the alignment.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.parts.keys()
    }

    /// The high watermark of a partition and the consumer's position in it (when known), as
    /// the client last reported them.
    pub fn set_watermark(&mut self, tp: &TopicPartition, high: i64, position: Option<i64>) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.high = Some(high);
            p.position = position;
        }
    }

    /// A fetched message: `offset`, the oldest and newest of its records' times (None when it
    /// has no record with a time), its size. A partition not assigned yet joins.
    pub fn push(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        times: Option<(Nanos, Nanos)>,
        bytes: usize,
        item: M,
        now_ms: i64,
    ) {
        let p = self.parts.entry(tp).or_insert_with(|| Part::new(now_ms));
        let key = match times {
            Some((_, newest)) => {
                p.progress = Some(p.progress.map_or(newest, |t| t.max(newest)));
                newest
            }
            // Nothing to order: it goes after what the partition already holds.
            None => p.queue.back().map_or(Nanos::MIN, |h| h.key),
        };
        p.next_offset = Some(p.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
        p.last_data_ms = now_ms;
        p.bytes += bytes;
        p.queue.push_back(Held { key, bytes, item });
    }

    /// The slowest active partition's progress: over partitions with a progress that are not
    /// idle and not drained (nothing buffered and known to be caught up: whatever such a
    /// partition receives next is new, so its old progress says nothing about what to fetch).
    fn floor(&self, now_ms: i64) -> Option<Nanos> {
        self.parts
            .values()
            .filter(|p| !(p.idle(now_ms, self.opts.idle_timeout_ms) || p.queue.is_empty() && p.caught_up()))
            .filter_map(|p| p.progress)
            .min()
    }

    /// The partitions that should be paused now (too far ahead of the slowest active one, or
    /// with a full buffer; see the module documentation for the hysteresis). Every other
    /// partition should be fetching.
    pub fn paused(&mut self, now_ms: i64) -> BTreeSet<TopicPartition> {
        if !self.opts.enabled {
            return BTreeSet::new();
        }
        let floor = self.floor(now_ms);
        let share = self.opts.total_bytes / self.parts.len().max(1);
        let (bound, cap) = (self.opts.bound, self.opts.buffer_bytes.max(share));
        let mut out = BTreeSet::new();
        for (tp, p) in &mut self.parts {
            let Some(head) = p.queue.front() else {
                p.full = false;
                continue;
            };
            let ahead = floor.is_some_and(|f| head.key > f.saturating_add(bound));
            p.full = if p.full { p.bytes >= cap / 2 } else { p.bytes >= cap };
            if ahead || p.full {
                out.insert(tp.clone());
            }
        }
        out
    }

    /// The next message in event-time order, or None while nothing is buffered or a partition
    /// that may still deliver something older has nothing buffered.
    pub fn pop(&mut self, now_ms: i64) -> Option<(TopicPartition, M)> {
        let (tp, key) = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.queue.front().map(|h| (tp, h.key)))
            .min_by_key(|(tp, key)| (*key, (*tp).clone()))
            .map(|(tp, key)| (tp.clone(), key))?;
        let timeout = self.opts.idle_timeout_ms;
        let blocked = self.opts.enabled
            && self.parts.values().any(|p| {
                p.queue.is_empty() && !p.caught_up() && !p.idle(now_ms, timeout) && p.progress.is_none_or(|t| t <= key)
            });
        if blocked {
            return None;
        }
        let p = self.parts.get_mut(&tp)?;
        let h = p.queue.pop_front()?;
        p.bytes -= h.bytes;
        Some((tp, h.item))
    }

    /// Every partition is caught up (or idle) and nothing is buffered: the stream is live, not a
    /// backlog.
    pub fn live(&self, now_ms: i64) -> bool {
        !self.opts.enabled
            || self
                .parts
                .values()
                .all(|p| p.queue.is_empty() && (p.caught_up() || p.idle(now_ms, self.opts.idle_timeout_ms)))
    }

    /// Messages buffered over all partitions.
    pub fn buffered(&self) -> usize {
        self.parts.values().map(|p| p.queue.len()).sum()
    }

    /// Takes every buffered message out, oldest first within a partition (on shutdown, when
    /// the wait for a slow partition is over).
    pub fn drain(&mut self) -> Vec<(TopicPartition, M)> {
        let mut out = Vec::new();
        for (tp, p) in &mut self.parts {
            out.extend(p.queue.drain(..).map(|h| (tp.clone(), h.item)));
            p.bytes = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Nanos = 60 * 1_000_000_000;
    const DAY: Nanos = 24 * 60 * MIN;

    fn opts() -> AlignOptions {
        AlignOptions { bound: 10 * MIN, idle_timeout_ms: 5_000, buffer_bytes: 1_000, total_bytes: 0, enabled: true }
    }

    fn tp(p: i32) -> TopicPartition {
        ("raw".to_string(), p)
    }

    /// Pops everything that may go now.
    fn pop_all(a: &mut Aligner<&'static str>, now: i64) -> Vec<&'static str> {
        std::iter::from_fn(|| a.pop(now).map(|(_, m)| m)).collect()
    }

    #[test]
    fn merges_partitions_far_apart_in_event_time() {
        let mut a = Aligner::new(opts());
        for p in 0..3 {
            a.assign(tp(p), 0);
        }
        // Partition 0 fetched a day ahead of partition 1; partition 2 not fetched yet.
        a.push(tp(0), 0, Some((DAY, DAY + MIN)), 10, "p0-day1", 1);
        a.push(tp(0), 1, Some((2 * DAY, 2 * DAY)), 10, "p0-day2", 1);
        a.push(tp(1), 0, Some((0, 20 * 1_000_000_000)), 10, "p1-day0", 1);
        a.set_watermark(&tp(2), 5, None);
        // Partition 2 has a backlog and nothing buffered: nothing may go.
        assert_eq!(a.pop(2), None);
        // Partition 0 is more than the bound ahead of the slowest: paused.
        assert_eq!(a.paused(2), BTreeSet::from([tp(0)]));
        a.push(tp(2), 0, Some((30 * 1_000_000_000, 30 * 1_000_000_000)), 10, "p2-day0", 3);
        // The oldest goes; then partition 1 (watermark unknown, not idle yet) holds the merge:
        // it may deliver something older than p2-day0.
        assert_eq!(pop_all(&mut a, 3), vec!["p1-day0"]);
        a.set_watermark(&tp(1), 1, None);
        // Caught up: p2-day0 goes, then partition 2 (a backlog, nothing buffered) holds back.
        assert_eq!(pop_all(&mut a, 4), vec!["p2-day0"]);
        assert_eq!(a.pop(4), None, "partition 2 still has a backlog");
        a.set_watermark(&tp(2), 1, None);
        assert_eq!(pop_all(&mut a, 4), vec!["p0-day1", "p0-day2"]);
        assert_eq!(a.buffered(), 0);
    }

    #[test]
    fn an_empty_partition_holds_back_only_until_known_caught_up_or_idle() {
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        a.push(tp(0), 0, Some((DAY, DAY)), 10, "a", 10);
        assert_eq!(a.pop(10), None, "partition 1's watermark is unknown");
        // Idle: nothing buffered, no data for the timeout, lag unknown.
        assert_eq!(a.pop(5_000), Some((tp(0), "a")));
        // Known lag keeps holding back, whatever the time.
        a.set_watermark(&tp(1), 7, Some(3));
        a.push(tp(0), 1, Some((DAY + 1, DAY + 1)), 10, "b", 6_000);
        assert_eq!(a.pop(60_000), None);
        // Lag 0 (the position reached the high watermark): it goes at once.
        a.set_watermark(&tp(1), 7, Some(7));
        assert_eq!(a.pop(6_001), Some((tp(0), "b")));
    }

    #[test]
    fn an_idle_partition_leaves_and_rejoins_when_data_arrives() {
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        // Partition 1's high watermark was never reported; it went quiet at day 0.
        a.push(tp(1), 0, Some((0, 0)), 10, "p1", 0);
        a.push(tp(0), 0, Some((DAY, DAY)), 10, "p0", 100);
        a.set_watermark(&tp(0), 1, None);
        // Partition 1 might still deliver something older: partition 0 waits, paused (its
        // whole buffer is a day ahead)...
        assert_eq!(pop_all(&mut a, 100), vec!["p1"]);
        assert_eq!(a.paused(4_999), BTreeSet::from([tp(0)]));
        // ...until partition 1 has been idle for the timeout: it leaves the alignment.
        assert_eq!(a.paused(5_000), BTreeSet::new());
        assert_eq!(pop_all(&mut a, 5_000), vec!["p0"]);
        // Data on partition 1 brings it back: partition 0 waits for it again.
        a.push(tp(0), 1, Some((DAY + 1, DAY + 1)), 10, "p0-next", 5_500);
        a.set_watermark(&tp(0), 2, None);
        a.push(tp(1), 1, Some((MIN, MIN)), 10, "p1-later", 6_000);
        assert_eq!(a.paused(6_000), BTreeSet::from([tp(0)]));
        assert_eq!(pop_all(&mut a, 6_000), vec!["p1-later"]);
        assert_eq!(pop_all(&mut a, 11_000), vec!["p0-next"]);
    }

    #[test]
    fn a_caught_up_partition_whose_producer_stopped_holds_nothing_back() {
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        // Partition 1's producer stopped at day 0 (lag 0); partition 0 goes on to day 1.
        a.push(tp(1), 0, Some((0, 0)), 10, "p1", 0);
        a.set_watermark(&tp(1), 1, None);
        a.push(tp(0), 0, Some((DAY, DAY)), 10, "p0", 100);
        a.push(tp(0), 1, Some((DAY + 1, DAY + 1)), 10, "p0-next", 100);
        a.set_watermark(&tp(0), 5, None);
        assert_eq!(a.paused(100), BTreeSet::from([tp(0)]), "partition 1 still holds a record of day 0");
        assert_eq!(pop_all(&mut a, 100), vec!["p1", "p0", "p0-next"]);
        a.push(tp(0), 2, Some((DAY + 2, DAY + 2)), 10, "p0-later", 200);
        // Drained and caught up: its day-0 progress pauses nobody, with no idle timeout to wait.
        assert_eq!(a.paused(200), BTreeSet::new());
    }

    #[test]
    fn a_full_buffer_pauses_its_partition() {
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        a.set_watermark(&tp(1), 100, Some(0));
        for i in 0..3 {
            a.push(tp(0), i, Some((i, i)), 400, "x", 0);
        }
        assert_eq!(a.pop(0), None, "partition 1 has a backlog and nothing fetched");
        assert_eq!(a.paused(0), BTreeSet::from([tp(0)]), "1,200 bytes buffered of 1,000");
        a.push(tp(1), 0, Some((0, 0)), 10, "y", 1);
        a.set_watermark(&tp(1), 1, None);
        a.set_watermark(&tp(0), 3, None);
        assert_eq!(pop_all(&mut a, 1), vec!["x", "y", "x", "x"]);
        assert_eq!(a.paused(1), BTreeSet::new());
    }

    #[test]
    fn a_paused_partition_resumes_below_half_its_buffer_not_at_once() {
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.set_watermark(&tp(0), 10, Some(0));
        for i in 0..4 {
            a.push(tp(0), i, Some((i, i)), 300, "x", 0);
        }
        assert_eq!(a.paused(0), BTreeSet::from([tp(0)]), "1,200 bytes of 1,000");
        a.pop(0);
        assert_eq!(a.paused(0), BTreeSet::from([tp(0)]), "900 bytes: still paused");
        a.pop(0);
        assert_eq!(a.paused(0), BTreeSet::from([tp(0)]), "600 bytes: still paused");
        a.pop(0);
        assert_eq!(a.paused(0), BTreeSet::new(), "300 bytes, under half: resumed");
        a.push(tp(0), 4, Some((4, 4)), 300, "x", 0);
        assert_eq!(a.paused(0), BTreeSet::new(), "600 bytes: not paused again until full");
    }

    #[test]
    fn rebalance_drops_the_revoked_and_a_new_partition_holds_back_until_fetched() {
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        a.push(tp(0), 0, Some((DAY, DAY)), 10, "p0", 0);
        a.push(tp(1), 4, Some((DAY + 1, DAY + 1)), 10, "p1", 0);
        assert_eq!(a.revoke(&tp(1)), vec!["p1"]);
        assert_eq!(a.partitions().cloned().collect::<Vec<_>>(), vec![tp(0)]);
        // Partition 2 assigned in the rebalance, from a committed position with a backlog.
        a.assign(tp(2), 10);
        a.set_watermark(&tp(2), 50, Some(20));
        a.set_watermark(&tp(0), 1, None);
        assert_eq!(a.pop(100_000), None, "the new partition may hold older records");
        a.push(tp(2), 20, Some((0, 0)), 10, "p2", 100_001);
        assert_eq!(pop_all(&mut a, 100_001), vec!["p2"], "p2 holds nothing older than p0's head");
        assert_eq!(a.paused(100_001), BTreeSet::from([tp(0)]));
    }

    #[test]
    fn messages_without_records_keep_their_place_and_ties_go_by_partition() {
        let mut a = Aligner::new(opts());
        a.assign(tp(1), 0);
        a.assign(tp(0), 0);
        a.push(tp(1), 0, Some((5, 5)), 1, "p1-a", 0);
        a.push(tp(1), 1, None, 1, "p1-empty", 0);
        a.push(tp(0), 0, Some((5, 5)), 1, "p0-a", 0);
        a.set_watermark(&tp(0), 1, None);
        a.set_watermark(&tp(1), 2, None);
        assert_eq!(pop_all(&mut a, 0), vec!["p0-a", "p1-a", "p1-empty"]);
    }

    #[test]
    fn a_message_goes_by_its_newest_record() {
        // An envelope holding one record from long ago goes at its newest record's time, not
        // ahead of the messages around it.
        let mut a = Aligner::new(opts());
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        a.push(tp(0), 0, Some((DAY - 60 * MIN, DAY + 2 * MIN)), 10, "with-a-late-record", 0);
        a.push(tp(1), 0, Some((DAY, DAY + MIN)), 10, "before", 0);
        a.set_watermark(&tp(0), 1, None);
        a.set_watermark(&tp(1), 1, None);
        assert_eq!(pop_all(&mut a, 0), vec!["before", "with-a-late-record"]);
    }

    #[test]
    fn caught_up_partitions_add_no_wait() {
        // Live traffic: every partition caught up; each message goes as soon as it arrives.
        let mut a = Aligner::new(opts());
        for p in 0..4 {
            a.assign(tp(p), 0);
            a.set_watermark(&tp(p), 0, Some(0));
        }
        for (i, p) in [2, 0, 3, 1].into_iter().enumerate() {
            let t = DAY + i as Nanos * 1_000_000;
            a.push(tp(p), 0, Some((t, t)), 10, "m", 1);
            assert!(a.pop(1).is_some(), "message {i} goes at once");
        }
        assert_eq!(a.paused(1), BTreeSet::new());
        assert!(a.live(1));
        a.set_watermark(&tp(3), 9, None);
        assert!(!a.live(1), "partition 3 has a backlog");
    }

    #[test]
    fn disabled_hands_out_in_fetch_order_and_pauses_nothing() {
        let mut a = Aligner::new(AlignOptions { enabled: false, ..opts() });
        a.assign(tp(0), 0);
        a.assign(tp(1), 0);
        a.set_watermark(&tp(1), 100, Some(0));
        // Partition 1 has a backlog and nothing buffered, partition 0 is a day ahead: still
        // handed out at once, and never paused.
        a.push(tp(0), 0, Some((DAY, DAY)), 10, "ahead", 0);
        a.push(tp(1), 0, Some((0, 0)), 10, "behind", 0);
        a.push(tp(0), 1, Some((2 * DAY, 2 * DAY)), 10, "further", 0);
        assert_eq!(a.paused(0), BTreeSet::new());
        assert!(a.pop(0).is_some());
        assert!(a.live(0), "no alignment: the stream always counts as live");
    }
}
