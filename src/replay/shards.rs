//! Replay's detection on several threads, with the output of one.
//!
//! Accounts are independent in the detector (each has its own clock, reorder queue, keys and
//! learning period), so the accounts are split by a hash of their name into
//! [`VIRTUAL_SHARDS`] detectors, always that many whatever the thread count; a thread owns the
//! shards `s` with `s % threads == its index`. The reading thread numbers every item it hands
//! to the detection (an event, or a verdict, in the order one detector would get them) and
//! cuts the sequence into epochs of [`EPOCH`] items; a detect thread answers each epoch with
//! its alerts, each tagged with the number of the item that raised it. The alerts of an epoch
//! are merged by that number (the alerts of one item keep their order): exactly the order in
//! which one detector fed the same items would raise them. At the end of the input, each
//! shard drains its queues account by account and the lists are merged by account name, the
//! order of [`Detector::finish`].
//!
//! What one detector decides over all its accounts, the state bound (`max_state_bytes`), is
//! decided here over all shards, at epoch boundaries only: the state's size after epoch `e`
//! (the sum of the shards' estimates) is compared with the bound, and when it is above, before
//! epoch `e + LAG` (the detect threads may be that far behind the reading thread) the shards
//! are brought to a stop, the size is taken again and, if still above, the keys of all
//! shards are evicted in the order [`Detector::bound_state`] uses (least recently seen first,
//! keys with evidence of a theft last) down to [`LOW_WATER_PERCENT`] of the bound. Nothing of
//! this depends on the number of threads; `--threads 1` runs the same shards and the same
//! checks on the reading thread ([`Local`]).

use crate::alert::Alert;
use crate::decode::Event;
use crate::detect::{Detector, DetectorStats, EvictionCandidate, Verdict, LOW_WATER_PERCENT};
use crate::replay::packed::Packed;
use crate::time::Nanos;
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

/// Detectors the accounts are split into, whatever the thread count.
pub const VIRTUAL_SHARDS: usize = 64;
/// Items (events and verdicts) per epoch.
pub const EPOCH: u64 = 4096;
/// Epochs between a state size found above the bound and the eviction it calls for.
pub const LAG: u64 = 4;
/// An eviction more than this much event time after the previous one starts a new spell.
const SPELL_GAP: Nanos = crate::time::HOUR;
/// How many items ahead of the one being ingested (in a detect thread's batch, or one thread's
/// run) each step of bringing an event's state into cache is taken (`detect/prefetch.rs`): its
/// account, its keys, their windows.
const PREFETCH_AHEAD: [usize; 3] = [8, 4, 2];

/// The shard of an account (FNV-1a of its name).
pub fn shard_of(account: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % VIRTUAL_SHARDS as u64) as usize
}

#[derive(Debug, thiserror::Error)]
#[error("a detect thread stopped: {0}")]
pub struct ShardError(pub String);

/// What drives detection for the replay loop: one detector ([`Single`], `train`), or the
/// shards on the reading thread ([`Local`]) or on detect threads ([`Threaded`]).
pub(super) trait Engine {
    /// A unit starts: if the run stops in it, the alerts of its items are not delivered.
    fn unit_start(&mut self) {}
    fn event(&mut self, ev: Event<'_>, out: &mut Vec<Alert>);
    fn verdict(&mut self, v: &Verdict, out: &mut Vec<Alert>);
    /// Moves the alerts that are final (in order) into `out`.
    fn ready(&mut self, _out: &mut Vec<Alert>) -> Result<(), ShardError> {
        Ok(())
    }
    /// The run stops: `out` (cleared) gets the alerts not yet handed out of the items before
    /// the current unit.
    fn abort(&mut self, out: &mut Vec<Alert>);
    /// End of input: processes everything still queued.
    fn finish(&mut self, out: &mut Vec<Alert>) -> Result<(), ShardError>;
    /// The detector's counters (summed over shards).
    fn stats(&self) -> DetectorStats;
    /// Verdicts that could not be applied (counted as malformed).
    fn verdict_failures(&self) -> u64;
}

/// One detector, bounding itself after every call (`train`, and the library's `replay`).
pub(super) struct Single<'d> {
    pub(super) detector: &'d mut Detector,
    pub(super) verdict_failures: u64,
}

impl Engine for Single<'_> {
    fn event(&mut self, ev: Event<'_>, out: &mut Vec<Alert>) {
        let spells_before = self.detector.stats().eviction_spells;
        self.detector.ingest(&ev, out);
        crate::telemetry::StateEvicted { spells_before, detector: self.detector }.emit();
    }

    fn verdict(&mut self, v: &Verdict, out: &mut Vec<Alert>) {
        if !apply(self.detector, v, out) {
            self.verdict_failures += 1;
        }
    }

    fn abort(&mut self, out: &mut Vec<Alert>) {
        out.clear();
    }

    fn finish(&mut self, out: &mut Vec<Alert>) -> Result<(), ShardError> {
        let spells_before = self.detector.stats().eviction_spells;
        self.detector.finish(out);
        crate::telemetry::StateEvicted { spells_before, detector: self.detector }.emit();
        Ok(())
    }

    fn stats(&self) -> DetectorStats {
        self.detector.stats().clone()
    }

    fn verdict_failures(&self) -> u64 {
        self.verdict_failures
    }
}

/// Applies a verdict (checked when the file was read; a failure here is counted like a
/// malformed line). False when it was not applied.
fn apply(detector: &mut Detector, v: &Verdict, out: &mut Vec<Alert>) -> bool {
    match detector.apply_verdict(v, out) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(message = "Verdict not applied.", alert_id = %v.alert_id, reason = %e);
            false
        }
    }
}

/// The shards one thread owns (the others `None`).
struct ShardSet {
    shards: Vec<Option<Detector>>,
    verdict_failures: u64,
}

impl ShardSet {
    fn shard(&mut self, s: usize) -> &mut Detector {
        match self.shards.get_mut(s) {
            Some(Some(d)) => d,
            // The router sends a thread only its own shards.
            _ => unreachable!("shard {s} routed to a thread that does not own it"),
        }
    }

    /// Ingests the batch's items in order, their alerts numbered (appended to `alerts`), and
    /// empties it. The state of the events a few items ahead is brought into cache while
    /// one is ingested (`detect/prefetch.rs`).
    fn run(&mut self, batch: &mut Batch, alerts: &mut Vec<(u64, Alert)>, scratch: &mut Vec<Alert>) {
        for j in 0..batch.items.len() {
            self.prefetch(batch, j + PREFETCH_AHEAD[0], Detector::prefetch_account);
            self.prefetch(batch, j + PREFETCH_AHEAD[1], Detector::prefetch_keys);
            self.prefetch(batch, j + PREFETCH_AHEAD[2], Detector::prefetch_windows);
            let (seq, s, w) = std::mem::replace(&mut batch.items[j], (0, 0, Work::Event(usize::MAX)));
            match w {
                Work::Event(i) => {
                    if let Some(ev) = batch.events.get(i) {
                        self.shard(s).ingest(&ev, scratch);
                    }
                }
                Work::Verdict(v) => {
                    if !apply(self.shard(s), &v, scratch) {
                        self.verdict_failures += 1;
                    }
                }
            }
            alerts.extend(scratch.drain(..).map(|a| (seq, a)));
        }
        batch.items.clear();
        batch.events.clear();
    }

    /// A step of [`Detector`]'s prefetch (`step`) for the event at `j` of the batch, if any.
    #[inline]
    fn prefetch(&self, batch: &Batch, j: usize, step: fn(&Detector, &str)) {
        if let Some((_, s, Work::Event(i))) = batch.items.get(j) {
            if let (Some(Some(d)), Some(account)) = (self.shards.get(*s), batch.events.account(*i)) {
                step(d, account);
            }
        }
    }

    fn owned(&self) -> impl Iterator<Item = &Detector> {
        self.shards.iter().flatten()
    }

    fn state_bytes(&self) -> u64 {
        self.owned().map(|d| d.stats().state_bytes()).sum()
    }

    fn stats(&self) -> DetectorStats {
        let mut s = DetectorStats::default();
        for d in self.owned() {
            s.add(d.stats());
        }
        s
    }

    fn newest(&self) -> Nanos {
        self.owned().map(Detector::newest_processed).max().unwrap_or(Nanos::MIN)
    }

    fn candidates(&self) -> Vec<(usize, EvictionCandidate)> {
        let mut out = Vec::new();
        for (s, d) in self.shards.iter().enumerate() {
            if let Some(d) = d {
                out.extend(d.eviction_candidates().into_iter().map(|c| (s, c)));
            }
        }
        out
    }

    fn evict(&mut self, mut keys: Vec<(usize, EvictionCandidate)>) {
        keys.sort_by_key(|(s, _)| *s);
        let mut rest = &keys[..];
        while let Some(&(s, _)) = rest.first() {
            let n = rest.iter().take_while(|(t, _)| *t == s).count();
            let list: Vec<EvictionCandidate> = rest[..n].iter().map(|(_, c)| c.clone()).collect();
            self.shard(s).evict(&list);
            rest = &rest[n..];
        }
    }

    fn finish(&mut self) -> Vec<(String, Vec<Alert>)> {
        self.shards.iter_mut().flatten().flat_map(|d| d.finish_accounts()).collect()
    }
}

/// The state bound over all shards (see the module documentation).
struct Bound {
    cap: u64,
    /// Per epoch (from `base`), whether the state was above the bound after it.
    over: VecDeque<bool>,
    base: u64,
    /// Sizes measured before this epoch predate the last eviction.
    floor: u64,
    last_eviction: Option<Nanos>,
    spells: u64,
}

impl Bound {
    fn new(cap: u64) -> Self {
        Bound { cap, over: VecDeque::new(), base: 0, floor: 0, last_eviction: None, spells: 0 }
    }

    /// The state's size after epoch `e` (called for each epoch in order).
    fn measured(&mut self, e: u64, bytes: u64) {
        if self.over.is_empty() {
            self.base = e;
        }
        self.over.push_back(self.cap > 0 && bytes > self.cap);
    }

    /// Whether to stop before epoch `k` and look at the state (each `k` asked once, in order).
    fn due(&mut self, k: u64) -> bool {
        let Some(j) = k.checked_sub(LAG) else { return false };
        while self.base < j && !self.over.is_empty() {
            self.over.pop_front();
            self.base += 1;
        }
        j >= self.floor && self.base == j && self.over.front() == Some(&true)
    }

    /// Which keys to evict, given every shard's keys and the state's size now (above the
    /// bound); counts the spell.
    fn choose(
        &mut self,
        mut cands: Vec<(usize, EvictionCandidate)>,
        mut state: u64,
        now: Nanos,
    ) -> Vec<(usize, EvictionCandidate)> {
        let low = self.cap / 100 * LOW_WATER_PERCENT;
        cands.sort_unstable_by(|a, b| a.1.order(&b.1));
        let mut n = 0;
        for (_, c) in &cands {
            if state <= low {
                break;
            }
            state = state.saturating_sub(c.bytes);
            n += 1;
        }
        cands.truncate(n);
        if self.last_eviction.is_none_or(|at| now - at > SPELL_GAP) {
            self.spells += 1;
            tracing::warn!(
                message = "Detector state passed detect.max_state_bytes: evicting the least recently seen keys \
                           (logged once per spell, counted in exfilwatch_detector_evicted_keys_total).",
                max_state_bytes = self.cap,
                keys_evicted = n,
            );
        }
        self.last_eviction = Some(now);
        cands
    }
}

/// Splits a detector into the shards, each unbounded on its own (the bound is [`Bound`]'s).
fn split(detector: Detector) -> (Vec<Detector>, u64) {
    let cap = detector.config().max_state_bytes.0;
    let mut shards = detector.split_accounts(VIRTUAL_SHARDS, shard_of);
    for d in &mut shards {
        d.set_max_state_bytes(0);
    }
    (shards, cap)
}

/// The shards on the reading thread (`--threads 1`). Items are ingested in runs of
/// [`LOCAL_RUN`], as a detect thread ingests its batch, so that the state of the next few is
/// brought into cache while one is ingested; their alerts are handed out after the run.
pub(super) struct Local {
    set: ShardSet,
    bound: Bound,
    seq: u64,
    /// Items not yet ingested.
    batch: Batch,
    /// Alerts of the items ingested, not yet handed out, with their item numbers.
    alerts: Vec<(u64, Alert)>,
    scratch: Vec<Alert>,
    /// The first item of the current unit.
    cutoff: u64,
}

/// Items a [`Local`] ingests at once (a divisor of [`EPOCH`]).
const LOCAL_RUN: usize = 64;

impl Local {
    pub(super) fn new(detector: Detector) -> Self {
        let (shards, cap) = split(detector);
        Local {
            set: ShardSet { shards: shards.into_iter().map(Some).collect(), verdict_failures: 0 },
            bound: Bound::new(cap),
            seq: 0,
            batch: Batch::with_capacity(LOCAL_RUN),
            alerts: Vec::new(),
            scratch: Vec::new(),
            cutoff: 0,
        }
    }

    /// Before each item: the epoch boundary's bookkeeping (on the state of every item before
    /// it). Returns the item's number.
    fn next_item(&mut self) -> u64 {
        if self.seq > 0 && self.seq % EPOCH == 0 {
            self.ingest_waiting();
            let k = self.seq / EPOCH;
            self.bound.measured(k - 1, self.set.state_bytes());
            if self.bound.due(k) {
                self.evict_if_over();
                self.bound.floor = k;
            }
        }
        self.seq += 1;
        self.seq - 1
    }

    /// Takes an item; ingests the run once it is whole.
    fn push(&mut self, seq: u64, s: usize, w: Work) {
        self.batch.items.push((seq, s, w));
        if self.batch.items.len() >= LOCAL_RUN {
            self.ingest_waiting();
        }
    }

    fn ingest_waiting(&mut self) {
        self.set.run(&mut self.batch, &mut self.alerts, &mut self.scratch);
    }

    fn evict_if_over(&mut self) {
        let state = self.set.state_bytes();
        if self.bound.cap > 0 && state > self.bound.cap {
            let keys = self.bound.choose(self.set.candidates(), state, self.set.newest());
            self.set.evict(keys);
        }
    }
}

impl Drop for Local {
    /// The state is freed on a thread of its own: at the end of a large replay that takes a
    /// noticeable time (hundreds of MiB of small allocations) that nothing needs to wait for.
    fn drop(&mut self) {
        let shards = std::mem::take(&mut self.set.shards);
        // If no thread can be started, the closure (and the state) is dropped right here.
        let _ = std::thread::Builder::new().name("free-state".into()).spawn(move || drop(shards));
    }
}

impl Engine for Local {
    fn unit_start(&mut self) {
        self.cutoff = self.seq;
    }

    fn event(&mut self, ev: Event<'_>, _out: &mut Vec<Alert>) {
        let seq = self.next_item();
        let i = self.batch.events.push(&ev);
        self.push(seq, shard_of(&ev.account), Work::Event(i));
    }

    fn verdict(&mut self, v: &Verdict, _out: &mut Vec<Alert>) {
        let seq = self.next_item();
        self.push(seq, shard_of(&v.account), Work::Verdict(Box::new(v.clone())));
    }

    fn ready(&mut self, out: &mut Vec<Alert>) -> Result<(), ShardError> {
        out.extend(self.alerts.drain(..).map(|(_, a)| a));
        Ok(())
    }

    fn abort(&mut self, out: &mut Vec<Alert>) {
        out.clear();
        self.ingest_waiting();
        let cutoff = self.cutoff;
        out.extend(self.alerts.drain(..).filter(|(seq, _)| *seq < cutoff).map(|(_, a)| a));
    }

    fn finish(&mut self, out: &mut Vec<Alert>) -> Result<(), ShardError> {
        self.ingest_waiting();
        out.extend(self.alerts.drain(..).map(|(_, a)| a));
        let mut lists = self.set.finish();
        lists.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(lists.into_iter().flat_map(|(_, l)| l));
        self.evict_if_over();
        Ok(())
    }

    fn stats(&self) -> DetectorStats {
        let mut s = self.set.stats();
        s.eviction_spells += self.bound.spells;
        s
    }

    fn verdict_failures(&self) -> u64 {
        self.set.verdict_failures
    }
}

/// An item of a detect thread's batch.
enum Work {
    /// An event, by its index in the batch's [`Packed`].
    Event(usize),
    Verdict(Box<Verdict>),
}

#[derive(Default)]
struct Batch {
    events: Packed,
    items: Vec<(u64, usize, Work)>,
}

impl Batch {
    fn with_capacity(items: usize) -> Self {
        Batch { events: Packed::with_capacity(items, items * 160), items: Vec::with_capacity(items) }
    }
}

enum Msg {
    Epoch(u64, Batch),
    Candidates,
    Evict(Vec<(usize, EvictionCandidate)>),
    Finish,
}

enum Reply {
    /// An epoch's alerts; its batch comes back emptied, to be filled again.
    Epoch {
        worker: usize,
        epoch: u64,
        alerts: Vec<(u64, Alert)>,
        state: u64,
        stats: DetectorStats,
        failures: u64,
        batch: Batch,
    },
    Candidates {
        list: Vec<(usize, EvictionCandidate)>,
        newest: Nanos,
    },
    Evicted {
        worker: usize,
        stats: DetectorStats,
    },
    Finished {
        worker: usize,
        lists: Vec<(String, Vec<Alert>)>,
        state: u64,
        stats: DetectorStats,
        failures: u64,
    },
}

fn work(worker: usize, mut set: ShardSet, rx: Receiver<Msg>, tx: SyncSender<Reply>) {
    let mut scratch = Vec::new();
    while let Ok(msg) = rx.recv() {
        let reply = match msg {
            Msg::Epoch(epoch, mut batch) => {
                let mut alerts = Vec::new();
                set.run(&mut batch, &mut alerts, &mut scratch);
                let failures = std::mem::take(&mut set.verdict_failures);
                Reply::Epoch { worker, epoch, alerts, state: set.state_bytes(), stats: set.stats(), failures, batch }
            }
            Msg::Candidates => Reply::Candidates { list: set.candidates(), newest: set.newest() },
            Msg::Evict(keys) => {
                set.evict(keys);
                Reply::Evicted { worker, stats: set.stats() }
            }
            Msg::Finish => {
                let lists = set.finish();
                let failures = std::mem::take(&mut set.verdict_failures);
                Reply::Finished { worker, lists, state: set.state_bytes(), stats: set.stats(), failures }
            }
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

/// An epoch's answers so far.
#[derive(Default)]
struct EpochAcc {
    replies: usize,
    alerts: Vec<(u64, Alert)>,
    state: u64,
}

/// The shards on detect threads (`--threads N`, N > 1).
pub(super) struct Threaded {
    senders: Vec<SyncSender<Msg>>,
    handles: Vec<JoinHandle<()>>,
    replies: Receiver<Reply>,
    batches: Vec<Batch>,
    /// Batches the detect threads gave back, filled again for the next epochs (their buffers
    /// are not allocated and freed once per epoch).
    spare: Vec<Batch>,
    seq: u64,
    /// The open epoch (items being batched).
    epoch: u64,
    /// Epochs sent and not yet answered by every thread, from `answered`.
    acc: VecDeque<EpochAcc>,
    /// Epochs answered by every thread (their alerts moved to `ready`).
    answered: u64,
    ready: Vec<(u64, Alert)>,
    /// The first item of the current unit.
    cutoff: u64,
    worker_stats: Vec<DetectorStats>,
    failures: u64,
    bound: Bound,
    state: u64,
    failed: Option<ShardError>,
    /// `seq` when the answers were last looked at.
    polled: u64,
}

impl Threaded {
    pub(super) fn new(detector: Detector, threads: usize) -> Result<Self, ShardError> {
        let threads = threads.clamp(1, VIRTUAL_SHARDS);
        let (shards, cap) = split(detector);
        let mut sets: Vec<ShardSet> = (0..threads)
            .map(|_| ShardSet { shards: (0..VIRTUAL_SHARDS).map(|_| None).collect(), verdict_failures: 0 })
            .collect();
        for (s, d) in shards.into_iter().enumerate() {
            sets[s % threads].shards[s] = Some(d);
        }
        let (reply_tx, replies) = sync_channel(4 * threads * LAG as usize);
        let (mut senders, mut handles) = (Vec::new(), Vec::new());
        for (w, set) in sets.into_iter().enumerate() {
            let (tx, rx) = sync_channel(LAG as usize + 2);
            let reply_tx = reply_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("detect-{w}"))
                .spawn(move || work(w, set, rx, reply_tx))
                .map_err(|e| ShardError(format!("cannot start a detect thread: {e}")))?;
            senders.push(tx);
            handles.push(h);
        }
        Ok(Threaded {
            batches: (0..threads).map(|_| Batch::default()).collect(),
            spare: Vec::new(),
            senders,
            handles,
            replies,
            seq: 0,
            epoch: 0,
            acc: VecDeque::new(),
            answered: 0,
            ready: Vec::new(),
            cutoff: 0,
            worker_stats: vec![DetectorStats::default(); threads],
            failures: 0,
            bound: Bound::new(cap),
            state: 0,
            failed: None,
            polled: 0,
        })
    }

    fn threads(&self) -> usize {
        self.senders.len()
    }

    fn send(&mut self, w: usize, msg: Msg) {
        if self.failed.is_none() && self.senders[w].send(msg).is_err() {
            self.failed = Some(ShardError(format!("detect-{w} is gone")));
        }
    }

    /// Waits for the next answer; handles it. False once a thread failed.
    fn receive(&mut self) -> Option<Reply> {
        loop {
            if self.failed.is_some() {
                return None;
            }
            match self.replies.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => return self.handle(r),
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(w) = self.handles.iter().position(|h| h.is_finished()) {
                        self.failed = Some(ShardError(format!("detect-{w} ended (panicked)")));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.failed = Some(ShardError("every detect thread ended".into()));
                }
            }
        }
    }

    /// Books an epoch's answer (returned: None); other answers are returned to the caller.
    fn handle(&mut self, r: Reply) -> Option<Reply> {
        match r {
            Reply::Epoch { worker, epoch, alerts, state, stats, failures, batch } => {
                if self.spare.len() < self.senders.len() * (LAG as usize + 2) {
                    self.spare.push(batch);
                }
                self.worker_stats[worker] = stats;
                self.failures += failures;
                let i = (epoch - self.answered) as usize;
                let a = &mut self.acc[i];
                a.replies += 1;
                a.alerts.extend(alerts);
                a.state += state;
                while self.acc.front().is_some_and(|a| a.replies == self.senders.len()) {
                    if let Some(mut a) = self.acc.pop_front() {
                        // Stable: the alerts of one item keep their order.
                        a.alerts.sort_by_key(|(seq, _)| *seq);
                        self.ready.extend(a.alerts);
                        self.bound.measured(self.answered, a.state);
                        self.state = a.state;
                        self.answered += 1;
                    }
                }
                None
            }
            other => Some(other),
        }
    }

    /// Waits until every epoch sent is answered.
    fn drain(&mut self) {
        while self.answered < self.epoch && self.failed.is_none() {
            if let Some(_unexpected) = self.receive() {
                self.failed = Some(ShardError("answer out of turn".into()));
            }
        }
    }

    /// Sends the open epoch, after the bound's check; opens the next.
    fn close_epoch(&mut self) {
        let k = self.epoch;
        // At most LAG epochs in flight: epoch k - LAG must be answered (and measured).
        while k >= LAG && self.answered < k - LAG + 1 && self.failed.is_none() {
            if self.receive().is_some() {
                self.failed = Some(ShardError("answer out of turn".into()));
            }
        }
        if self.bound.due(k) {
            self.drain();
            self.evict_if_over();
            self.bound.floor = k;
        }
        self.acc.push_back(EpochAcc::default());
        for w in 0..self.threads() {
            // The next batch is sized like this one.
            let size = self.batches[w].items.len();
            let next = self.spare.pop().unwrap_or_else(|| Batch::with_capacity(size));
            let batch = std::mem::replace(&mut self.batches[w], next);
            self.send(w, Msg::Epoch(k, batch));
        }
        self.epoch += 1;
    }

    /// With every thread idle: the state's size now; evicts down to the low-water mark.
    fn evict_if_over(&mut self) {
        if self.bound.cap == 0 || self.state <= self.bound.cap {
            return;
        }
        for w in 0..self.threads() {
            self.send(w, Msg::Candidates);
        }
        let (mut all, mut now) = (Vec::new(), Nanos::MIN);
        for _ in 0..self.threads() {
            match self.receive() {
                Some(Reply::Candidates { list, newest }) => {
                    all.extend(list);
                    now = now.max(newest);
                }
                _ => {
                    self.failed.get_or_insert(ShardError("answer out of turn".into()));
                    return;
                }
            }
        }
        let keys = self.bound.choose(all, self.state, now);
        self.state = self.state.saturating_sub(keys.iter().map(|(_, c)| c.bytes).sum());
        let mut per: Vec<Vec<(usize, EvictionCandidate)>> = (0..self.threads()).map(|_| Vec::new()).collect();
        for (s, c) in keys {
            per[s % self.threads()].push((s, c));
        }
        for (w, list) in per.into_iter().enumerate() {
            self.send(w, Msg::Evict(list));
        }
        for _ in 0..self.threads() {
            match self.receive() {
                Some(Reply::Evicted { worker, stats }) => self.worker_stats[worker] = stats,
                _ => {
                    self.failed.get_or_insert(ShardError("answer out of turn".into()));
                    return;
                }
            }
        }
    }

    fn next_item(&mut self) -> u64 {
        if self.seq > 0 && self.seq % EPOCH == 0 {
            self.close_epoch();
        }
        self.seq += 1;
        self.seq - 1
    }
}

impl Engine for Threaded {
    fn unit_start(&mut self) {
        self.cutoff = self.seq;
    }

    fn event(&mut self, ev: Event<'_>, _out: &mut Vec<Alert>) {
        let seq = self.next_item();
        let s = shard_of(&ev.account);
        let b = &mut self.batches[s % self.senders.len()];
        let i = b.events.push(&ev);
        b.items.push((seq, s, Work::Event(i)));
    }

    fn verdict(&mut self, v: &Verdict, _out: &mut Vec<Alert>) {
        let seq = self.next_item();
        let s = shard_of(&v.account);
        let w = s % self.senders.len();
        self.batches[w].items.push((seq, s, Work::Verdict(Box::new(v.clone()))));
    }

    fn ready(&mut self, out: &mut Vec<Alert>) -> Result<(), ShardError> {
        // Answers come once per epoch: look when one may have come (the merge's order does not
        // depend on when alerts are taken, only on their numbers).
        if self.answered == self.epoch || self.seq < self.polled + EPOCH / 8 {
            return Ok(());
        }
        self.polled = self.seq;
        while let Ok(r) = self.replies.try_recv() {
            if self.handle(r).is_some() {
                self.failed.get_or_insert(ShardError("answer out of turn".into()));
            }
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        out.extend(self.ready.drain(..).map(|(_, a)| a));
        Ok(())
    }

    fn abort(&mut self, out: &mut Vec<Alert>) {
        out.clear();
        // The items before the current unit may wait in the open batches.
        self.acc.push_back(EpochAcc::default());
        for w in 0..self.threads() {
            let batch = std::mem::take(&mut self.batches[w]);
            self.send(w, Msg::Epoch(self.epoch, batch));
        }
        self.epoch += 1;
        self.drain();
        let cutoff = self.cutoff;
        out.extend(self.ready.drain(..).filter(|(seq, _)| *seq < cutoff).map(|(_, a)| a));
    }

    fn finish(&mut self, out: &mut Vec<Alert>) -> Result<(), ShardError> {
        self.acc.push_back(EpochAcc::default());
        for w in 0..self.threads() {
            let batch = std::mem::take(&mut self.batches[w]);
            self.send(w, Msg::Epoch(self.epoch, batch));
        }
        self.epoch += 1;
        self.drain();
        out.extend(self.ready.drain(..).map(|(_, a)| a));
        for w in 0..self.threads() {
            self.send(w, Msg::Finish);
        }
        let (mut lists, mut state) = (Vec::new(), 0);
        for _ in 0..self.threads() {
            match self.receive() {
                Some(Reply::Finished { worker, lists: l, state: s, stats, failures }) => {
                    lists.extend(l);
                    state += s;
                    self.worker_stats[worker] = stats;
                    self.failures += failures;
                }
                _ => {
                    self.failed.get_or_insert(ShardError("answer out of turn".into()));
                    break;
                }
            }
        }
        lists.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(lists.into_iter().flat_map(|(_, l)| l));
        self.state = state;
        self.evict_if_over();
        // Every thread answered: what is left is freeing the state (hundreds of MiB of small
        // allocations in a large replay), which nothing waits for; the threads end on their own.
        self.senders.clear();
        self.handles.clear();
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stats(&self) -> DetectorStats {
        let mut s = DetectorStats::default();
        for w in &self.worker_stats {
            s.add(w);
        }
        s.eviction_spells += self.bound.spells;
        s
    }

    fn verdict_failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_acts_lag_epochs_after_a_size_above_it_and_once_per_measurement() {
        let mut b = Bound::new(100);
        let sizes = [10, 150, 20, 30, 40, 200, 210, 50, 60];
        let mut due = Vec::new();
        for (e, size) in sizes.iter().enumerate() {
            let k = e as u64 + 1;
            b.measured(e as u64, *size);
            if b.due(k) {
                due.push(k);
                b.floor = k;
            }
        }
        // Epoch 1 was above: looked at before epoch 5. Epoch 5 was above (after that eviction):
        // before epoch 9. Epoch 6 would be looked at before epoch 10, past the end here.
        assert_eq!(due, vec![5, 9]);
        // No bound: never.
        let mut free = Bound::new(0);
        for e in 0..10 {
            free.measured(e, u64::MAX);
            assert!(!free.due(e + 1));
        }
    }

    #[test]
    fn accounts_spread_over_the_shards() {
        let mut seen = [0u32; VIRTUAL_SHARDS];
        for i in 0..6400 {
            seen[shard_of(&format!("acct{i:05}"))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50 && n < 150), "{seen:?}");
        assert_eq!(shard_of("contoso"), shard_of("contoso"));
    }
}
