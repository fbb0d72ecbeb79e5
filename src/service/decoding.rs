//! Decoding the raw messages of roles all and rekey, on the loop or on a pool of threads
//! (`service.decode_threads`).
//!
//! The loop receives a raw message, checks it (restored positions, the verdicts topic) and
//! hands it to [`Decoding::submit`]. With one thread it is decoded there and then and pushed
//! into the event-time alignment (the path before the pool existed). With more, it goes to
//! a pool of decode threads while the loop goes on receiving and detecting:
//!
//! - **Order.** Decoding ([`Fetched::decode`]) is a pure function of the payload (each thread
//!   has its own `Decoder`, whose state is only reusable buffers), so a message decoded on a
//!   thread is what the loop's own decoder makes of it. Decoded messages come back in any
//!   order; each carries the sequence number it was submitted under, and a reorder buffer
//!   (one slot per message in flight) pushes them into the aligner in submission order, which
//!   is the order they were received in, and so, per partition, offset order (what
//!   `Aligner::push` requires). The aligner sees the same messages in the same order as with
//!   inline decoding: the output is the same. One thing the aligner learns from elsewhere
//!   would see the pool: the client's position in a partition counts a message once the loop
//!   received it, so a position reported while messages are in flight is taken as at most
//!   the oldest of them ([`Decoding::position`]); otherwise a partition whose last messages
//!   are being decoded would look caught up and stop holding the merge back for them.
//! - **Bounded.** At most [`IN_FLIGHT_PER_THREAD`] x threads messages are submitted and not
//!   yet pushed; while that many are, the loop receives nothing more and waits for a decode
//!   (milliseconds: the consumer is still polled). Beyond that, memory is bounded by the
//!   aligner's buffers as before.
//! - **Rebalance.** A revoked partition's messages still in flight are marked in their slots
//!   ([`Decoding::revoke`], called where the aligner drops its buffered ones) and dropped when
//!   they come back, never pushed: their offsets were never stored, the new owner reads them
//!   again. A message of the same partition submitted after the revocation (it was assigned
//!   again) is a new one and goes through.
//! - **Shutdown.** Messages in flight are like those waiting in the aligner: never handled, so
//!   their offsets are never stored or checkpointed. Dropping the pool closes the job queue;
//!   each thread finishes the message it holds and ends, and is joined.
//! - **Failure.** A panic while decoding is caught on its thread and comes back as a
//!   [`ServiceError::Decode`] from [`Decoding::accept`]; the run ends with it (as the inline
//!   path's panic would end it).
//!
//! Malformed records are decoded into their message's items as on the loop; they are counted,
//! logged and set aside when the message is handled, after the aligner, as before.

use super::{Fetched, ServiceError};
use crate::decode::Decoder;
use crate::sources::align::{Aligner, TopicPartition};
use crate::sources::kafka::RawMessage;
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Messages in flight per decode thread: enough that a thread finding the queue empty is
/// rare (the loop refills it between two of its own steps), few enough that what waits
/// decoded outside the aligner stays small.
pub(crate) const IN_FLIGHT_PER_THREAD: usize = 4;

/// How the loop's raw messages are decoded: inline (`decode_threads = 1`) or on a pool.
pub(crate) enum Decoding {
    Inline(Decoder),
    Pool(Pool),
}

impl Decoding {
    /// One thread: decoded on the loop; more: a pool of `threads` decode threads.
    pub(crate) fn new(threads: usize) -> Result<Decoding, ServiceError> {
        Ok(if threads <= 1 { Decoding::Inline(Decoder::new()) } else { Decoding::Pool(Pool::new(threads)?) })
    }

    /// Threads decoding (1: the loop's own).
    pub(crate) fn threads(&self) -> usize {
        match self {
            Decoding::Inline(_) => 1,
            Decoding::Pool(p) => p.threads.len(),
        }
    }

    /// Another message may be submitted now (inline: always).
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Decoding::Inline(_) => true,
            Decoding::Pool(p) => p.slots.len() < p.limit,
        }
    }

    /// Messages submitted and not yet pushed into the aligner (inline: none).
    pub(crate) fn in_flight(&self) -> usize {
        match self {
            Decoding::Inline(_) => 0,
            Decoding::Pool(p) => p.slots.len(),
        }
    }

    /// A received message: inline, decoded and pushed into `align` now; on the pool, sent to
    /// be decoded (pushed by [`Decoding::accept`] once it and every message before it are).
    pub(crate) fn submit(
        &mut self,
        msg: RawMessage,
        align: &mut Aligner<Fetched>,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        match self {
            Decoding::Inline(decoder) => {
                Fetched::decode(decoder, msg).push_into(align, now_ms);
                Ok(())
            }
            Decoding::Pool(p) => p.submit(msg),
        }
    }

    /// The next decoded message from the pool (never completes inline or with nothing in
    /// flight: select it only while [`Decoding::in_flight`] is not 0). Cancel-safe.
    pub(crate) async fn finished(&mut self) -> Result<Outcome, ServiceError> {
        match self {
            Decoding::Pool(p) if !p.slots.is_empty() => p
                .done
                .recv()
                .await
                .ok_or(ServiceError::Decode("the decode threads stopped with messages in flight".to_string())),
            _ => std::future::pending().await,
        }
    }

    /// Takes a decoded message back and pushes into `align`, in submission order, every
    /// message whose predecessors all came back (dropping those of revoked partitions).
    pub(crate) fn accept(
        &mut self,
        outcome: Outcome,
        align: &mut Aligner<Fetched>,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        match self {
            Decoding::Inline(_) => Ok(()),
            Decoding::Pool(p) => p.accept(outcome, align, now_ms),
        }
    }

    /// The consumer's position in a partition as the aligner may take it: the client counts
    /// a message as delivered once the loop received it, but until it is pushed the aligner
    /// must not think the partition caught up (it would stop waiting for it and hand out
    /// newer messages of other partitions first, unlike inline decoding, where a received
    /// message is pushed at once): at most the offset of its oldest message in flight.
    pub(crate) fn position(&self, tp: &TopicPartition, position: Option<i64>) -> Option<i64> {
        match self {
            Decoding::Inline(_) => position,
            Decoding::Pool(p) => match p.slots.iter().find(|s| s.tp == *tp && !s.revoked) {
                Some(s) => position.map(|at| at.min(s.offset)),
                None => position,
            },
        }
    }

    /// A partition was revoked: its messages in flight will be dropped when they come back.
    /// Returns how many.
    pub(crate) fn revoke(&mut self, tp: &TopicPartition) -> usize {
        match self {
            Decoding::Inline(_) => 0,
            Decoding::Pool(p) => p.revoke(tp),
        }
    }
}

/// A decoded message as it comes back: its sequence number and the decode, or what the
/// decode's panic said.
pub(crate) struct Outcome {
    seq: u64,
    fetched: Result<Fetched, String>,
}

struct Job {
    seq: u64,
    msg: RawMessage,
}

/// A message in flight, in submission order.
struct Slot {
    tp: TopicPartition,
    offset: i64,
    /// Its partition was revoked since it was submitted: dropped when it comes back.
    revoked: bool,
    /// It came back (its decode, `None` once revoked).
    done: bool,
    fetched: Option<Fetched>,
}

/// The decode threads, the queue of jobs they share, and the reorder buffer.
pub(crate) struct Pool {
    /// Closed (taken) on drop, which ends the threads.
    jobs: Option<mpsc::Sender<Job>>,
    /// Unbounded: what is in it is bounded by `limit` submissions.
    done: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Messages in flight, in submission order; the first one's sequence number is `front`.
    slots: VecDeque<Slot>,
    front: u64,
    limit: usize,
}

impl Pool {
    fn new(threads: usize) -> Result<Pool, ServiceError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (done_tx, done) = tokio::sync::mpsc::unbounded_channel();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (queue, done_tx) = (queue.clone(), done_tx.clone());
            let h = std::thread::Builder::new()
                .name(format!("exfilwatch-decode-{i}"))
                .spawn(move || decode_jobs(&queue, &done_tx))
                .map_err(|e| ServiceError::Decode(format!("cannot start a decode thread: {e}")))?;
            handles.push(h);
        }
        Ok(Pool {
            jobs: Some(jobs),
            done,
            threads: handles,
            slots: VecDeque::new(),
            front: 0,
            limit: IN_FLIGHT_PER_THREAD * threads,
        })
    }

    fn submit(&mut self, msg: RawMessage) -> Result<(), ServiceError> {
        let seq = self.front + self.slots.len() as u64;
        let (tp, offset) = ((msg.topic.clone(), msg.partition), msg.offset);
        let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send(Job { seq, msg }).is_ok());
        if !sent {
            return Err(ServiceError::Decode("the decode threads stopped".to_string()));
        }
        self.slots.push_back(Slot { tp, offset, revoked: false, done: false, fetched: None });
        Ok(())
    }

    fn accept(&mut self, outcome: Outcome, align: &mut Aligner<Fetched>, now_ms: i64) -> Result<(), ServiceError> {
        let fetched = outcome.fetched.map_err(ServiceError::Decode)?;
        let slot = outcome
            .seq
            .checked_sub(self.front)
            .and_then(|i| self.slots.get_mut(i as usize))
            .ok_or_else(|| ServiceError::Decode(format!("decoded message {} was not in flight", outcome.seq)))?;
        slot.done = true;
        if !slot.revoked {
            slot.fetched = Some(fetched);
        }
        while self.slots.front().is_some_and(|s| s.done) {
            let Some(slot) = self.slots.pop_front() else { break };
            self.front += 1;
            if let Some(f) = slot.fetched {
                f.push_into(align, now_ms);
            }
        }
        Ok(())
    }

    fn revoke(&mut self, tp: &TopicPartition) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.tp == *tp && !s.revoked) {
            s.revoked = true;
            s.fetched = None;
            n += 1;
        }
        n
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // No more jobs: each thread ends after the message it holds.
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// A decode thread: takes jobs from the shared queue until it is closed (or nobody listens
/// any more), with its own decoder.
fn decode_jobs(queue: &Mutex<mpsc::Receiver<Job>>, done: &tokio::sync::mpsc::UnboundedSender<Outcome>) {
    let mut decoder = Decoder::new();
    loop {
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Job { seq, msg }) = job else { return };
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Fetched::decode(&mut decoder, msg)));
        let fetched = decoded.map_err(|panic| {
            // Its buffers may be half-written: a fresh one for the next message.
            decoder = Decoder::new();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!("a decode thread panicked: {what}")
        });
        if done.send(Outcome { seq, fetched }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::align::AlignOptions;

    fn opts() -> AlignOptions {
        // Alignment off: `pop` hands out what is buffered in push order per partition,
        // partitions by event time, so the order the pool pushes in shows.
        AlignOptions { bound: 0, idle_timeout_ms: 1000, buffer_bytes: 1 << 20, total_bytes: 0, enabled: false }
    }

    fn record(account: &str, second: u32) -> String {
        format!(
            "{{\"time\":\"2021-08-17T02:00:{second:02}Z\",\"resourceId\":\"/SUBSCRIPTIONS/S/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/{account}\",\"category\":\"DataPlaneRequests\",\"operationName\":\"Query\",\"properties\":{{\"statusCode\":\"200\",\"clientIpAddress\":\"10.0.0.1\",\"responseLength\":\"100\",\"keyType\":\"PrimaryMasterKey\"}}}}"
        )
    }

    /// Messages over partitions, some malformed, some envelopes of many records (slow), some
    /// single records (fast), so that decodes finish out of order.
    fn messages() -> Vec<RawMessage> {
        (0..200_i64)
            .map(|i| {
                let partition = (i % 3) as i32;
                let payload = match i % 7 {
                    0 => b"{not json".to_vec(),
                    1 => format!(
                        "{{\"records\": [{}]}}",
                        (0..400).map(|_| record("BIG", 1)).collect::<Vec<_>>().join(",")
                    )
                    .into_bytes(),
                    3 => Vec::new(),
                    _ => record(&format!("A{i}"), (i % 60) as u32).into_bytes(),
                };
                RawMessage { topic: "logs".into(), partition, offset: i, payload }
            })
            .collect()
    }

    /// Everything in `align`, popped: (partition, offset, what its records decoded to).
    fn drain(align: &mut Aligner<Fetched>) -> Vec<(i32, i64, String)> {
        use crate::decode::Decoded;
        let mut out = Vec::new();
        while let Some((_, f)) = align.pop(0) {
            let items: Vec<String> = f
                .items()
                .iter()
                .map(|d| match d {
                    Decoded::Event(ev) => format!("{}@{}", ev.account, ev.time),
                    Decoded::Skipped(c) => format!("skipped {c:?}"),
                    Decoded::Malformed { reason, index } => format!("{reason:?} {index:?}"),
                })
                .collect();
            let summary = format!("{} records, first {:?}, last {:?}", items.len(), items.first(), items.last());
            out.push((f.msg.partition, f.msg.offset, summary));
        }
        out
    }

    /// Per partition, in the order handed out.
    fn by_partition(v: Vec<(i32, i64, String)>) -> std::collections::BTreeMap<i32, Vec<(i64, String)>> {
        let mut m: std::collections::BTreeMap<i32, Vec<(i64, String)>> = Default::default();
        for (p, o, s) in v {
            m.entry(p).or_default().push((o, s));
        }
        m
    }

    fn through(threads: usize, revoke_after: Option<(usize, i32)>) -> Vec<(i32, i64, String)> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut decoding = Decoding::new(threads).unwrap();
            assert_eq!(decoding.threads(), threads);
            let mut align: Aligner<Fetched> = Aligner::new(opts());
            for (i, m) in messages().into_iter().enumerate() {
                while !decoding.has_room() {
                    let o = decoding.finished().await.unwrap();
                    decoding.accept(o, &mut align, 0).unwrap();
                }
                decoding.submit(m, &mut align, 0).unwrap();
                if revoke_after.is_some_and(|(at, _)| at == i) {
                    let tp = ("logs".to_string(), revoke_after.map_or(0, |r| r.1));
                    decoding.revoke(&tp);
                    align.revoke(&tp);
                }
            }
            while decoding.in_flight() > 0 {
                let o = decoding.finished().await.unwrap();
                decoding.accept(o, &mut align, 0).unwrap();
            }
            drain(&mut align)
        })
    }

    #[test]
    fn the_pool_pushes_what_inline_decoding_pushes_in_the_same_order() {
        let inline = through(1, None);
        assert_eq!(inline.len(), 200);
        for threads in [2, 3, 8] {
            assert_eq!(through(threads, None), inline, "{threads} threads");
        }
    }

    #[test]
    fn a_revoked_partition_in_flight_is_never_pushed_and_later_messages_are() {
        // Revoked after message 100 was submitted: partition 1's messages up to 100 are
        // dropped (in flight or buffered), those submitted afterwards are kept, in order;
        // the other partitions lose nothing. (Across partitions the merge order may differ
        // from a run without the revocation: compared per partition.)
        let mut expected = by_partition(through(1, None));
        expected.entry(1).or_default().retain(|(o, _)| *o > 100);
        assert!(!expected[&1].is_empty() && expected[&0].len() > 60);
        for threads in [1, 2, 4] {
            let got = by_partition(through(threads, Some((100, 1))));
            assert_eq!(got, expected, "{threads} threads");
        }
    }

    #[test]
    fn a_partition_with_a_message_in_flight_is_not_caught_up_before_it_is_pushed() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut decoding = Decoding::new(2).unwrap();
            let mut align: Aligner<Fetched> = Aligner::new(opts());
            let tp = ("logs".to_string(), 1);
            let mut msgs = messages().into_iter().filter(|m| m.partition == 1);
            let (first, second) = (msgs.next().unwrap(), msgs.next().unwrap());
            let at = first.offset;
            decoding.submit(first, &mut align, 0).unwrap();
            decoding.submit(second, &mut align, 0).unwrap();
            // The client reports both as delivered (position after the second).
            assert_eq!(decoding.position(&tp, Some(at + 10)), Some(at));
            assert_eq!(decoding.position(&tp, None), None);
            assert_eq!(decoding.position(&("logs".to_string(), 0), Some(7)), Some(7), "another partition");
            while decoding.in_flight() > 0 {
                let o = decoding.finished().await.unwrap();
                decoding.accept(o, &mut align, 0).unwrap();
            }
            assert_eq!(decoding.position(&tp, Some(at + 10)), Some(at + 10), "all pushed");
            assert_eq!(Decoding::new(1).unwrap().position(&tp, Some(at + 10)), Some(at + 10), "inline");
        });
    }

    #[test]
    fn at_most_four_messages_per_thread_are_in_flight() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut decoding = Decoding::new(2).unwrap();
            let mut align: Aligner<Fetched> = Aligner::new(opts());
            let mut msgs = messages().into_iter();
            while decoding.has_room() {
                decoding.submit(msgs.next().unwrap(), &mut align, 0).unwrap();
            }
            assert_eq!(decoding.in_flight(), 2 * IN_FLIGHT_PER_THREAD);
            assert_eq!(align.buffered(), 0, "nothing pushed before it came back");
            while !decoding.has_room() {
                let o = decoding.finished().await.unwrap();
                decoding.accept(o, &mut align, 0).unwrap();
            }
            assert!(decoding.in_flight() < 2 * IN_FLIGHT_PER_THREAD);
            assert_eq!(align.buffered() + decoding.in_flight(), 2 * IN_FLIGHT_PER_THREAD, "each message once");
        });
    }
}
