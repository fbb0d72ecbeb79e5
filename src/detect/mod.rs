//! Detect: per-key baselines and the rules, as a sans-IO state machine.
//!
//! **Architecture invariant:** the detector does no I/O and reads no clock. Its output is a
//! function of the sequence of events it was given (and of a restored snapshot), so replaying
//! a file and streaming the same records give the same alerts, byte for byte.
//!
//! ## How it works
//! - Events are grouped by account (the account owns its keys, a key is
//!   `(account, credential)`). Each account keeps a reorder queue: an event waits until the
//!   account's newest event time is `max_out_of_order` past it, then it is processed in
//!   event-time order. An event already older than that watermark is *late*: it is processed at
//!   once (it still updates the baselines and can still trip the cumulative rules) and counted.
//!   Tracking progress per account, not globally, keeps a replay of per-account archives
//!   correct: the second account's records are not months late relative to the first.
//! - Per key: origins (client IP prefix or exact IP) with first/last seen, bytes, requests,
//!   dedup marks and, while new, evidence; a sliding sum of bytes from unfamiliar origins; a
//!   sliding sum of all bytes; a day-by-day history of peaks from which the `volume_anomaly`
//!   threshold is fitted once a day.
//! - State is bounded: `max_origins_per_key` with least-recently-seen eviction, a daily
//!   sweep (per account, in event time) that forgets origins and keys idle for
//!   `history_window`, and evidence only for origins that are still new.
//! - Triage: the allowlist (`allow.rs`) is checked where a rule pushes an alert; analysts'
//!   verdicts (`verdict.rs`) are applied in event time and mark origins familiar (benign) or
//!   unfamiliar for good (malicious, `malicious_origin`).

mod allow;
mod clock;
mod evidence;
mod intern;
mod learned;
mod sketch;
mod verdict;
mod volume;
mod window;

pub use allow::{parse_cidr, AllowReason, Allowlist, Suppressed};
pub use clock::{Admit, ClockGuard, Out, CONFIRM_RUN, MAX_HELD};
pub use evidence::{format_guid, ip_bits, parse_guid, Evidence};
pub use intern::{Interner, NameKey, Sym};
pub use learned::{
    AccountRow, KeyRow, LearnedState, LearnedStateError, MarkRow, OriginRow, VolumeDayRow, WindowKind, WindowRow,
};
pub use sketch::OriginWindow;
pub use verdict::{Verdict, VerdictError, VerdictKind, VerdictRow};
pub use volume::{DayMask, DaySummary, PeakModel, TQuantiles, VolumeHistory};
pub use window::SlidingSum;

use crate::alert::{alert_id, Alert, Baseline, EvidenceOut, NameCount, OriginRef, Rule, Severity, Window};
use crate::config::{DetectConfig, OriginGranularity};
use crate::decode::Event;
use crate::time::{format_rfc3339, Nanos, DAY, MINUTE};
use crate::units::{human_bytes, human_span};
use evidence::Sample;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;

/// An origin: the client address masked to the configured prefix, as 128 bits (IPv4 in its
/// IPv4-mapped IPv6 form).
pub type OriginKey = u128;

/// Symbol capacity for evidence strings (operations, user agents, collections); past it they
/// show as "(other)". Credentials are never folded.
const SYMBOL_CAPACITY: usize = 1_000_000;

/// An unfamiliar origin keeps itemized evidence once it has read this share of
/// `unfamiliar_bytes` (1 MiB of the default 1 GiB).
const EVIDENCE_SHARE: u64 = 1024;

/// How often (event time) an account's idle origins and keys are swept out.
const SWEEP_EVERY: Nanos = DAY;

/// An event as the detector keeps it while it waits in a reorder queue: owned and compact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Ev {
    time: Nanos,
    /// When the caller handed it over (processing time, caller's clock; 0 in replay).
    arrived: i64,
    cred: Sym,
    ip: Option<u128>,
    bytes: u64,
    op: Sym,
    ua: Sym,
    db: Sym,
    coll: Sym,
    activity: u128,
}

/// Dedup state of one condition: when it last alerted, how far it escalated, and how many
/// times it re-alerted (part of the id, so a re-alert is a new alert).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Mark {
    at: Nanos,
    /// Levels already alerted (0: none).
    level: u8,
    epoch: u32,
    since: Nanos,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct OriginEntry {
    first_seen: Nanos,
    last_seen: Nanos,
    bytes: u64,
    requests: u32,
    mark_level: u8,
    mark_epoch: u16,
    mark_at: Nanos,
    /// Present while the origin is unfamiliar.
    evidence: Option<Box<Evidence>>,
    /// An analyst's verdict on it (the detector's list of verdicts is the truth; see verdict.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verdict: Option<VerdictKind>,
}

impl OriginEntry {
    fn new(t: Nanos) -> Self {
        OriginEntry {
            first_seen: t,
            last_seen: t,
            bytes: 0,
            requests: 0,
            mark_level: 0,
            mark_epoch: 0,
            mark_at: 0,
            evidence: None,
            verdict: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct KeyState {
    first_seen: Nanos,
    last_seen: Nanos,
    origins: FxHashMap<OriginKey, OriginEntry>,
    unfamiliar: SlidingSum,
    volume: SlidingSum,
    history: VolumeHistory,
    /// Evidence of the current and the previous `volume_window` (for `volume_anomaly`).
    window_evidence: Option<Box<(i64, Evidence, Evidence)>>,
    /// Bytes per origin in the sliding `volume_window`, kept while `window_evidence` is (the
    /// origins `volume_anomaly` lists).
    #[serde(default)]
    volume_origins: Option<Box<OriginWindow>>,
    /// Bytes per unfamiliar origin in the sliding `aggregate_window` (the origins
    /// `unfamiliar_origins_aggregate` lists); dropped by the sweep once the key is idle that long.
    #[serde(default)]
    unfamiliar_origins: Option<Box<OriginWindow>>,
    aggregate_mark: Option<Mark>,
    volume_mark: Option<Mark>,
    aggregate_checked_minute: i64,
}

impl KeyState {
    fn new(t: Nanos) -> Self {
        KeyState {
            first_seen: t,
            last_seen: t,
            origins: FxHashMap::default(),
            unfamiliar: SlidingSum::default(),
            volume: SlidingSum::default(),
            history: VolumeHistory::default(),
            window_evidence: None,
            volume_origins: None,
            unfamiliar_origins: None,
            aggregate_mark: None,
            volume_mark: None,
            aggregate_checked_minute: i64::MIN,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct AccountState {
    first_seen: Nanos,
    last_seen: Nanos,
    /// Newest event time seen: the account's event-time progress.
    max_time: Nanos,
    next_sweep: Nanos,
    /// Events not yet processed, in time order (ties in arrival order).
    queue: VecDeque<Ev>,
    /// Newest event time processed from the queue: an event older than it is late.
    released: Nanos,
    keys: FxHashMap<Sym, KeyState>,
    /// When evidence was last created in this account: until `familiar_after` after it, a
    /// sweep may have evidence to drop.
    evidence_created: Nanos,
    /// Origins unfamiliar to the whole account while keys read from them
    /// (`unfamiliar_origin_account_volume`); each leaves `familiar_after` after its first read.
    #[serde(default)]
    unfamiliar: FxHashMap<OriginKey, AccountOrigin>,
}

/// Keys named per account-level origin; reads by further keys still count in its bytes.
const ACCOUNT_ORIGIN_KEYS: usize = 16;

/// An origin as the account sees it: bytes its keys read from it since the account's first
/// read from it, while no key of the account knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccountOrigin {
    first_seen: Nanos,
    /// Some key of the account already knew the origin when this entry was made.
    familiar: bool,
    bytes: u64,
    /// Bytes per key (credential symbol), in the order the keys came.
    keys: Vec<(Sym, u64)>,
    mark_level: u8,
    mark_epoch: u32,
    mark_at: Nanos,
}

/// Counters the detector keeps; the pipeline turns them into metrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DetectorStats {
    pub events: u64,
    pub failed_requests: u64,
    pub late_events: u64,
    pub without_ip: u64,
    pub keys_tracked: u64,
    pub origins_tracked: u64,
    pub origins_evicted: u64,
    pub origins_expired: u64,
    pub keys_expired: u64,
    pub alerts_suppressed_learning: u64,
    /// Alerts not raised because of the allowlist or a benign verdict, by reason.
    #[serde(default)]
    pub suppressed: Suppressed,
    #[serde(default)]
    pub verdicts_applied: u64,
}

impl DetectorStats {
    /// The counters' growth since `base` (an earlier reading of the same detector); the gauges
    /// (keys and origins tracked) as they are now.
    pub fn since(&self, base: &DetectorStats) -> DetectorStats {
        DetectorStats {
            events: self.events.saturating_sub(base.events),
            failed_requests: self.failed_requests.saturating_sub(base.failed_requests),
            late_events: self.late_events.saturating_sub(base.late_events),
            without_ip: self.without_ip.saturating_sub(base.without_ip),
            keys_tracked: self.keys_tracked,
            origins_tracked: self.origins_tracked,
            origins_evicted: self.origins_evicted.saturating_sub(base.origins_evicted),
            origins_expired: self.origins_expired.saturating_sub(base.origins_expired),
            keys_expired: self.keys_expired.saturating_sub(base.keys_expired),
            alerts_suppressed_learning: self.alerts_suppressed_learning.saturating_sub(base.alerts_suppressed_learning),
            suppressed: self.suppressed.since(&base.suppressed),
            verdicts_applied: self.verdicts_applied.saturating_sub(base.verdicts_applied),
        }
    }

    /// Adds another detector's counters (several partitions' detectors make one report).
    pub fn add(&mut self, o: &DetectorStats) {
        self.events += o.events;
        self.failed_requests += o.failed_requests;
        self.late_events += o.late_events;
        self.without_ip += o.without_ip;
        self.keys_tracked += o.keys_tracked;
        self.origins_tracked += o.origins_tracked;
        self.origins_evicted += o.origins_evicted;
        self.origins_expired += o.origins_expired;
        self.keys_expired += o.keys_expired;
        self.alerts_suppressed_learning += o.alerts_suppressed_learning;
        self.suppressed.add(&o.suppressed);
        self.verdicts_applied += o.verdicts_applied;
    }
}

/// Everything but the accounts, so rules can borrow an account mutably beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ctx {
    cfg: DetectConfig,
    syms: Interner,
    stats: DetectorStats,
    /// Arrival times of the events waiting in reorder queues (all accounts).
    #[serde(default)]
    arrivals: ArrivalIndex,
    #[serde(skip)]
    tq: TQuantiles,
    /// From the current configuration, never from a snapshot.
    #[serde(skip)]
    allow: Allowlist,
    #[serde(default)]
    verdicts: verdict::Verdicts,
}

/// Multiset of the `arrived` values of queued events, for the oldest one in O(1). Arrivals
/// come in non-decreasing order (a processing clock), so adding is a push or an increment at
/// the back; a value out of order is inserted at its place (a binary search).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ArrivalIndex {
    runs: VecDeque<(i64, u64)>,
}

impl ArrivalIndex {
    fn add(&mut self, arrived: i64) {
        match self.runs.back_mut() {
            Some((t, n)) if *t == arrived => *n += 1,
            Some((t, _)) if *t > arrived => {
                let i = self.runs.partition_point(|(t, _)| *t < arrived);
                match self.runs.get_mut(i) {
                    Some((t, n)) if *t == arrived => *n += 1,
                    _ => self.runs.insert(i, (arrived, 1)),
                }
            }
            _ => self.runs.push_back((arrived, 1)),
        }
    }

    fn remove(&mut self, arrived: i64) {
        let i = self.runs.partition_point(|(t, _)| *t < arrived);
        if let Some((t, n)) = self.runs.get_mut(i) {
            if *t == arrived {
                *n = n.saturating_sub(1);
            }
        }
        while self.runs.front().is_some_and(|(_, n)| *n == 0) {
            self.runs.pop_front();
        }
    }

    fn oldest(&self) -> Option<i64> {
        self.runs.front().map(|(t, _)| *t)
    }
}

/// The detector. Feed it with [`Detector::ingest`], flush it with [`Detector::finish`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Detector {
    ctx: Ctx,
    accounts: FxHashMap<NameKey, AccountState>,
    #[serde(skip)]
    scratch: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("detector snapshot is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl Detector {
    pub fn new(cfg: DetectConfig) -> Self {
        Detector {
            ctx: Ctx {
                cfg,
                syms: Interner::new(SYMBOL_CAPACITY),
                stats: DetectorStats::default(),
                arrivals: ArrivalIndex::default(),
                tq: TQuantiles::default(),
                allow: Allowlist::default(),
                verdicts: verdict::Verdicts::default(),
            },
            accounts: FxHashMap::default(),
            scratch: String::new(),
        }
    }

    pub fn config(&self) -> &DetectConfig {
        &self.ctx.cfg
    }

    pub fn stats(&self) -> &DetectorStats {
        &self.ctx.stats
    }

    /// The whole state, including events still waiting in reorder queues.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(serde_json::to_vec(self)?)
    }

    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Takes one decoded request; alerts it causes (now or by releasing earlier events) are
    /// appended to `out`.
    pub fn ingest(&mut self, ev: &Event<'_>, out: &mut Vec<Alert>) {
        self.ingest_at(ev, 0, out)
    }

    /// As [`Detector::ingest`], noting the caller's processing time `arrived` (any monotonic
    /// clock, e.g. milliseconds) for [`Detector::release_held`]. The detector never reads a
    /// clock itself: a caller that passes the same values gets the same output.
    pub fn ingest_at(&mut self, ev: &Event<'_>, arrived: i64, out: &mut Vec<Alert>) {
        let ctx = &mut self.ctx;
        ctx.stats.events += 1;
        if !ev.success {
            // Failed requests move no data and prove nothing about an origin.
            ctx.stats.failed_requests += 1;
            return;
        }
        ev.credential.write_canonical(&mut self.scratch);
        let e = Ev {
            time: ev.time,
            arrived,
            cred: ctx.syms.intern_always(&self.scratch),
            ip: ev.client_ip.map(ip_bits),
            bytes: ev.response_bytes,
            op: ctx.syms.intern(&ev.operation),
            ua: ctx.syms.intern(&ev.user_agent),
            db: ctx.syms.intern(&ev.database),
            coll: ctx.syms.intern(&ev.collection),
            activity: parse_guid(&ev.activity_id),
        };
        if e.ip.is_none() {
            ctx.stats.without_ip += 1;
        }
        if !self.accounts.contains_key(ev.account.as_bytes()) {
            let state = AccountState {
                first_seen: e.time,
                last_seen: e.time,
                max_time: e.time,
                next_sweep: e.time + SWEEP_EVERY,
                queue: VecDeque::new(),
                released: Nanos::MIN,
                keys: FxHashMap::default(),
                evidence_created: Nanos::MIN,
                unfamiliar: FxHashMap::default(),
            };
            self.accounts.insert(NameKey::new(&ev.account), state);
        }
        let Some(acct) = self.accounts.get_mut(ev.account.as_bytes()) else { return };
        let (name, acct) = (&*ev.account, acct);
        let watermark = acct.max_time - ctx.cfg.max_out_of_order.0;
        if e.time < watermark || e.time < acct.released {
            ctx.stats.late_events += 1;
            ctx.process(name, acct, &e, out);
            return;
        }
        // Insert in time order; equal times keep arrival order.
        ctx.arrivals.add(arrived);
        match acct.queue.back() {
            Some(b) if b.time > e.time => {
                let i = acct.queue.partition_point(|q| q.time <= e.time);
                acct.queue.insert(i, e);
            }
            _ => acct.queue.push_back(e),
        }
        if ev.time > acct.max_time {
            acct.max_time = ev.time;
            let watermark = acct.max_time - ctx.cfg.max_out_of_order.0;
            while acct.queue.front().is_some_and(|q| q.time < watermark) {
                if let Some(q) = acct.queue.pop_front() {
                    acct.released = acct.released.max(q.time);
                    ctx.arrivals.remove(q.arrived);
                    ctx.process(name, acct, &q, out);
                }
            }
        }
    }

    /// Processes every event still waiting (end of input), account by account in name order.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        let mut names: Vec<NameKey> = self.accounts.keys().cloned().collect();
        names.sort();
        for name in names {
            if let Some(acct) = self.accounts.get_mut(&name) {
                while let Some(q) = acct.queue.pop_front() {
                    acct.released = acct.released.max(q.time);
                    self.ctx.arrivals.remove(q.arrived);
                    self.ctx.process(name.as_str(), acct, &q, out);
                }
            }
        }
    }

    /// Processes queued events that arrived (per [`Detector::ingest_at`]) at or before
    /// `arrived_before`, with every event queued ahead of them, in time order. The streaming
    /// service calls it so that a record waits at most a bounded processing time for records
    /// that could still arrive before it: a record that arrives later than that but belongs
    /// before one already processed is late.
    pub fn release_held(&mut self, arrived_before: i64, out: &mut Vec<Alert>) {
        match self.ctx.arrivals.oldest() {
            Some(t) if t <= arrived_before => {}
            _ => return,
        }
        let mut names: Vec<NameKey> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.queue.iter().any(|q| q.arrived <= arrived_before))
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        for name in names {
            if let Some(acct) = self.accounts.get_mut(&name) {
                let Some(last) = acct.queue.iter().rposition(|q| q.arrived <= arrived_before) else { continue };
                for _ in 0..=last {
                    if let Some(q) = acct.queue.pop_front() {
                        acct.released = acct.released.max(q.time);
                        self.ctx.arrivals.remove(q.arrived);
                        self.ctx.process(name.as_str(), acct, &q, out);
                    }
                }
            }
        }
    }

    /// Whether events wait in reorder queues.
    pub fn has_queued(&self) -> bool {
        self.ctx.arrivals.oldest().is_some()
    }

    /// The oldest `arrived` value (see [`Detector::ingest_at`]) among queued events: every
    /// event that arrived before it has been processed. The service stores a message's
    /// offset only then.
    pub fn oldest_queued_arrival(&self) -> Option<i64> {
        self.ctx.arrivals.oldest()
    }

    /// Bytes the state holds per (key, origin), estimated from the structures' sizes.
    /// Keeps only the accounts `keep` accepts (a detect partition's share of a trained model,
    /// which has nothing queued); the key and origin gauges follow.
    pub fn retain_accounts(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.accounts.retain(|name, _| keep(name.as_str()));
        let keys = self.accounts.values().flat_map(|a| a.keys.values());
        self.ctx.stats.keys_tracked = self.accounts.values().map(|a| a.keys.len() as u64).sum();
        self.ctx.stats.origins_tracked = keys.map(|k| k.origins.len() as u64).sum();
    }

    pub fn approx_bytes_per_origin() -> usize {
        // hashbrown: key + value + 1 control byte, at most 7/8 full.
        (std::mem::size_of::<OriginKey>() + std::mem::size_of::<OriginEntry>() + 1) * 8 / 7
    }
}

impl Ctx {
    fn origin_of(&self, ip: u128) -> OriginKey {
        if self.cfg.origin_granularity == OriginGranularity::Ip {
            return ip;
        }
        let is_v4 = ip >> 32 == 0xffff;
        let len = if is_v4 { 96 + self.cfg.ipv4_prefix as u32 } else { self.cfg.ipv6_prefix as u32 };
        if len >= 128 {
            ip
        } else if len == 0 {
            0
        } else {
            ip & !(u128::MAX >> len)
        }
    }

    fn origin_text(&self, origin: OriginKey) -> String {
        let ip = evidence::ip_from_bits(origin);
        let len = match (self.cfg.origin_granularity, ip) {
            (OriginGranularity::Ip, IpAddr::V4(_)) => 32,
            (OriginGranularity::Ip, IpAddr::V6(_)) => 128,
            (OriginGranularity::Prefix, IpAddr::V4(_)) => self.cfg.ipv4_prefix,
            (OriginGranularity::Prefix, IpAddr::V6(_)) => self.cfg.ipv6_prefix,
        };
        format!("{ip}/{len}")
    }

    fn process(&mut self, account: &str, acct: &mut AccountState, e: &Ev, out: &mut Vec<Alert>) {
        let t = e.time;
        let forget = self.cfg.history_window.0;
        if t - acct.last_seen > forget {
            // Idle longer than the history window: everything known about it is stale.
            self.stats.keys_tracked -= acct.keys.len() as u64;
            self.stats.origins_tracked -= acct.keys.values().map(|k| k.origins.len() as u64).sum::<u64>();
            acct.keys.clear();
            acct.first_seen = t;
        }
        acct.first_seen = acct.first_seen.min(t);
        acct.last_seen = acct.last_seen.max(t);
        if t >= acct.next_sweep {
            // Only when there can be something to drop: keys or origins idle for the history
            // window (not before the account is that old), or evidence of origins turned familiar.
            let may_expire = t - acct.first_seen > forget;
            let may_hold_evidence = acct.evidence_created != Nanos::MIN || !acct.unfamiliar.is_empty();
            if may_expire || may_hold_evidence {
                self.sweep(acct, t);
                if t > acct.evidence_created.saturating_add(self.cfg.familiar_after.0) {
                    acct.evidence_created = Nanos::MIN; // every evidence is stale and was dropped
                }
            }
            acct.next_sweep = t + SWEEP_EVERY;
        }
        let cfg = &self.cfg;
        let learning = t < acct.first_seen + cfg.learning_period.0;

        let key = acct.keys.entry(e.cred).or_insert_with(|| {
            self.stats.keys_tracked += 1;
            KeyState::new(t)
        });
        key.first_seen = key.first_seen.min(t);
        key.last_seen = key.last_seen.max(t);
        let sample = Sample {
            time: t,
            ip: e.ip,
            bytes: e.bytes,
            op: e.op,
            ua: e.ua,
            db: e.db,
            coll: e.coll,
            activity: e.activity,
        };

        // The origin the request came from, once for every rule below.
        let origin = e.ip.map(|ip| self.origin_of(ip));

        // Volume of the key, from any origin.
        key.volume.add(t, e.bytes, cfg.volume_window.0);
        key.history.observe(t, e.bytes, key.volume.sum(), cfg, &mut self.tq);
        if cfg.volume_anomaly && key.history.model().is_some() {
            let bucket = t.div_euclid(cfg.volume_window.0);
            let w =
                key.window_evidence.get_or_insert_with(|| Box::new((bucket, Evidence::default(), Evidence::default())));
            if bucket > w.0 {
                w.2 = if bucket == w.0 + 1 { std::mem::take(&mut w.1) } else { Evidence::default() };
                w.1 = Evidence::default();
                w.0 = bucket;
            }
            if bucket >= w.0 {
                // Without the address: the window's origins are `volume_origins`' to count.
                w.1.add(&Sample { ip: None, ..sample });
            }
            if let (Some(ip), Some(o)) = (e.ip, origin) {
                key.volume_origins.get_or_insert_with(Default::default).add(t, o, ip, e.bytes, cfg.volume_window.0);
            }
        } else {
            key.window_evidence = None;
            key.volume_origins = None;
        }

        if let Some(origin) = origin {
            if self.observe_origin(account, e.cred, key, origin, &sample, learning, out) {
                acct.evidence_created = acct.evidence_created.max(t);
            }
        }
        if self.cfg.volume_anomaly {
            self.check_volume(account, e.cred, key, t, learning, out);
        }
        if let Some(origin) = origin {
            self.observe_account_origin(account, acct, e.cred, origin, &sample, learning, out);
        }
    }

    /// `unfamiliar_origin_account_volume`: one origin that no key of the account knows, read
    /// by several of its keys, each below the threshold and together above it (a thief who
    /// spreads a theft over the keys he holds).
    #[allow(clippy::too_many_arguments)]
    fn observe_account_origin(
        &mut self,
        account: &str,
        acct: &mut AccountState,
        cred: Sym,
        origin: OriginKey,
        s: &Sample,
        learning: bool,
        out: &mut Vec<Alert>,
    ) {
        let (t, familiar_after) = (s.time, self.cfg.familiar_after.0);
        if acct.keys.len() < 2 {
            return; // one key: its own rules see everything
        }
        let Some(ko) = acct.keys.get(&cred).and_then(|k| k.origins.get(&origin)) else { return };
        if t >= ko.first_seen + familiar_after || ko.verdict.is_some() {
            return; // familiar to this key, or judged by an analyst
        }
        if !acct.unfamiliar.contains_key(&origin) {
            if acct.unfamiliar.len() >= self.cfg.max_origins_per_key {
                acct.unfamiliar.retain(|_, o| t < o.first_seen + familiar_after);
                if acct.unfamiliar.len() >= self.cfg.max_origins_per_key {
                    return; // bounded: a spray this wide trips unfamiliar_origins_aggregate
                }
            }
            let familiar = acct
                .keys
                .iter()
                .any(|(c, k)| *c != cred && k.origins.get(&origin).is_some_and(|o| t >= o.first_seen + familiar_after));
            let entry = AccountOrigin {
                first_seen: t,
                familiar,
                bytes: 0,
                keys: Vec::new(),
                mark_level: 0,
                mark_epoch: 0,
                mark_at: 0,
            };
            acct.unfamiliar.insert(origin, entry);
        }
        let Some(entry) = acct.unfamiliar.get_mut(&origin) else { return };
        if entry.familiar || t >= entry.first_seen + familiar_after {
            return;
        }
        entry.bytes += s.bytes;
        match entry.keys.iter().position(|(c, _)| *c == cred) {
            Some(i) => entry.keys[i].1 += s.bytes,
            None if entry.keys.len() < ACCOUNT_ORIGIN_KEYS => entry.keys.push((cred, s.bytes)),
            None => {}
        }
        if entry.keys.len() < 2 {
            return;
        }
        let (thr, factor, realert) = (self.cfg.unfamiliar_bytes.0, self.cfg.escalation_factor, self.cfg.realert.0);
        if entry.mark_level > 0 && t - entry.mark_at >= realert {
            entry.mark_level = 0;
            entry.mark_epoch = entry.mark_epoch.wrapping_add(1);
        }
        let Some(level) = reached_level(entry.bytes, thr, factor, entry.mark_level) else { return };
        if level == 0 && entry.keys.iter().any(|&(_, b)| b >= thr) {
            return; // one key explains it: unfamiliar_origin_volume covers that
        }
        if learning {
            self.stats.alerts_suppressed_learning += 1;
            return;
        }
        entry.mark_level = level + 1;
        entry.mark_at = t;
        let entry = entry.clone();
        let Some(key) = acct.keys.get(&cred) else { return };
        let a = self.account_origin_alert(account, key, origin, &entry, s, level);
        self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn observe_origin(
        &mut self,
        account: &str,
        cred: Sym,
        key: &mut KeyState,
        origin: OriginKey,
        s: &Sample,
        learning: bool,
        out: &mut Vec<Alert>,
    ) -> bool {
        let t = s.time;
        let cfg = &self.cfg;
        if !key.origins.contains_key(&origin) && key.origins.len() >= cfg.max_origins_per_key {
            // Evict the least recently seen sixteenth at once: amortized O(log n) per insert.
            let mut by_age: Vec<(Nanos, OriginKey)> = key.origins.iter().map(|(k, v)| (v.last_seen, *k)).collect();
            by_age.sort_unstable();
            let n = (cfg.max_origins_per_key / 16).max(1).min(by_age.len());
            for (_, k) in &by_age[..n] {
                key.origins.remove(k);
            }
            self.stats.origins_evicted += n as u64;
            self.stats.origins_tracked -= n as u64;
        }
        let mut is_new = false;
        let entry = key.origins.entry(origin).or_insert_with(|| {
            is_new = true;
            OriginEntry::new(t)
        });
        if is_new {
            self.stats.origins_tracked += 1;
        } else if t - entry.last_seen > cfg.history_window.0 {
            // Unused for the whole history window: forgotten, new again.
            *entry = OriginEntry::new(t);
            is_new = true;
        }
        if is_new && !self.verdicts.is_empty() {
            entry.verdict = self.verdicts.kind(account, self.syms.name(cred), origin);
        }
        entry.first_seen = entry.first_seen.min(t);
        entry.last_seen = entry.last_seen.max(t);
        entry.bytes += s.bytes;
        entry.requests = entry.requests.saturating_add(1);
        let malicious = entry.verdict == Some(VerdictKind::Malicious);
        let unfamiliar = verdict::unfamiliar_now(cfg, &mut self.stats, entry, t);
        if !unfamiliar {
            entry.evidence = None;
            return false;
        }
        // Door keeper: itemized evidence only once an origin has read a 1/1024 share of the
        // threshold. Most new origins are one-off and small; they never pay for it.
        let mut created = false;
        if entry.evidence.is_some() || entry.bytes >= cfg.unfamiliar_bytes.0 / EVIDENCE_SHARE {
            created = entry.evidence.is_none();
            entry.evidence.get_or_insert_with(Default::default).add(s);
        }
        key.unfamiliar.add(t, s.bytes, cfg.aggregate_window.0);
        if let Some(ip) = s.ip {
            let w = key.unfamiliar_origins.get_or_insert_with(Default::default);
            w.add(t, origin, ip, s.bytes, cfg.aggregate_window.0);
        }
        if malicious {
            self.malicious_read(account, cred, key, origin, s, out);
        }
        let cfg = &self.cfg;

        if is_new && cfg.new_origin {
            if learning {
                self.stats.alerts_suppressed_learning += 1;
            } else {
                let a = self.new_origin_alert(account, cred, key, origin, s);
                self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
            }
        }

        // unfamiliar_origin_volume: cumulative bytes since the origin's first request.
        let cfg = &self.cfg;
        let Some(entry) = key.origins.get_mut(&origin) else {
            return created;
        };
        let thr = cfg.unfamiliar_bytes.0;
        if entry.mark_level > 0 && t - entry.mark_at >= cfg.realert.0 {
            entry.mark_level = 0;
            entry.mark_epoch = entry.mark_epoch.wrapping_add(1);
        }
        // A malicious origin raises malicious_origin instead (verdict.rs).
        let level = reached_level(entry.bytes, thr, cfg.escalation_factor, entry.mark_level).filter(|_| !malicious);
        if let Some(level) = level {
            if learning {
                self.stats.alerts_suppressed_learning += 1;
            } else {
                entry.mark_level = level + 1;
                entry.mark_at = t;
                let a = self.origin_volume_alert(account, cred, key, origin, t, level);
                self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
            }
        }

        // unfamiliar_origins_aggregate: all unfamiliar origins within the window.
        let cfg = &self.cfg;
        let sum = key.unfamiliar.sum();
        if sum < thr {
            return created;
        }
        if let Some(m) = &mut key.aggregate_mark {
            if t - m.at >= cfg.realert.0 {
                m.level = 0;
                m.epoch += 1;
            }
        }
        let done = key.aggregate_mark.map_or(0, |m| m.level);
        let Some(level) = reached_level(sum, thr, cfg.escalation_factor, done) else {
            return created;
        };
        let minute = t.div_euclid(MINUTE);
        if key.aggregate_checked_minute == minute {
            return created; // evaluated this minute already: bounded work per key
        }
        key.aggregate_checked_minute = minute;
        let since = t - cfg.aggregate_window.0;
        let mut contributing: Vec<(u64, OriginKey)> = key
            .origins
            .iter()
            .filter(|(_, o)| o.last_seen > since && o.unfamiliar_at(t, cfg.familiar_after.0))
            .map(|(k, o)| (o.bytes, *k))
            .collect();
        if contributing.len() < 2 || contributing.iter().any(|&(b, _)| b >= thr) {
            return created; // one origin explains it: unfamiliar_origin_volume covers that
        }
        if learning {
            self.stats.alerts_suppressed_learning += 1;
            return created;
        }
        contributing.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mark = key.aggregate_mark.get_or_insert(Mark::default());
        if mark.level == 0 {
            mark.since = key.unfamiliar.start().unwrap_or(since);
        }
        mark.level = level + 1;
        mark.at = t;
        let m = *mark;
        let a = self.aggregate_alert(account, cred, key, &contributing, t, level, m);
        self.emit(a, cred, key, allow::Subject::Origins(&contributing), t, out);
        created
    }

    fn check_volume(
        &mut self,
        account: &str,
        cred: Sym,
        key: &mut KeyState,
        t: Nanos,
        learning: bool,
        out: &mut Vec<Alert>,
    ) {
        let Some(model) = key.history.model().copied() else {
            return;
        };
        let cfg = &self.cfg;
        if let Some(m) = &mut key.volume_mark {
            if t - m.at >= cfg.realert.0 {
                m.level = 0;
                m.epoch += 1;
            }
        }
        let done = key.volume_mark.map_or(0, |m| m.level);
        let Some(level) = reached_level(key.volume.sum(), model.threshold, cfg.escalation_factor, done) else {
            return;
        };
        if learning {
            self.stats.alerts_suppressed_learning += 1;
            return;
        }
        let mark = key.volume_mark.get_or_insert(Mark::default());
        if mark.level == 0 {
            mark.since = key.volume.start().unwrap_or(t);
        }
        mark.level = level + 1;
        mark.at = t;
        let m = *mark;
        let a = self.volume_alert(account, cred, key, &model, t, level, m);
        self.emit(a, cred, key, allow::Subject::Window, t, out);
    }

    fn sweep(&mut self, acct: &mut AccountState, t: Nanos) {
        let forget = self.cfg.history_window.0;
        let familiar_after = self.cfg.familiar_after.0;
        acct.unfamiliar.retain(|_, o| t < o.first_seen + familiar_after);
        let (aggregate_window, volume_window) = (self.cfg.aggregate_window.0, self.cfg.volume_window.0);
        let stats = &mut self.stats;
        acct.keys.retain(|_, k| {
            // An origin judged malicious is never forgotten while the verdict stands.
            let malicious = |o: &OriginEntry| o.verdict == Some(VerdictKind::Malicious);
            if t - k.last_seen > forget && !k.origins.values().any(malicious) {
                stats.keys_expired += 1;
                stats.keys_tracked -= 1;
                stats.origins_tracked -= k.origins.len() as u64;
                return false;
            }
            let before = k.origins.len();
            k.origins.retain(|_, o| t - o.last_seen <= forget || malicious(o));
            let gone = (before - k.origins.len()) as u64;
            stats.origins_expired += gone;
            stats.origins_tracked -= gone;
            for o in k.origins.values_mut() {
                if o.evidence.is_some() && t >= o.first_seen + familiar_after {
                    o.evidence = None;
                }
            }
            // Window sketches of an idle key hold only minutes its next read slides out.
            if t - k.last_seen >= aggregate_window {
                k.unfamiliar_origins = None;
            }
            if t - k.last_seen >= volume_window {
                k.volume_origins = None;
            }
            true
        });
    }

    // ---- alert construction (cold path) ----

    fn baseline(&self, key: &KeyState, t: Nanos, p_value: Option<f64>) -> Baseline {
        let familiar_after = self.cfg.familiar_after.0;
        Baseline {
            known_origins: key.origins.values().filter(|o| t >= o.first_seen + familiar_after).count() as u64,
            typical_hourly_bytes: key.history.typical_hourly(),
            typical_peak_bytes: key.history.model().map_or(0, PeakModel::typical_peak),
            days_of_history: ((t - key.first_seen) as f64 / DAY as f64 * 10.0).round() / 10.0,
            p_value,
        }
    }

    /// `requests` overrides the evidence's own count (an origin counts all its requests, also
    /// those before its evidence began).
    fn evidence_out(&self, ev: &Evidence, origin_first_seen: Option<Nanos>, requests: Option<u64>) -> EvidenceOut {
        EvidenceOut {
            request_count: requests.unwrap_or(ev.requests),
            top_operations: ev.top_operations(&self.syms),
            top_collections: ev.top_collections(&self.syms),
            top_user_agents: ev.top_user_agents(&self.syms),
            activity_ids: ev.activity_id_strings(),
            origin_first_seen: origin_first_seen.map(format_rfc3339),
            credentials: None,
        }
    }

    fn origin_ref(&self, origin: OriginKey, ev: Option<&Evidence>) -> OriginRef {
        let ip =
            ev.and_then(|e| e.top_addresses(1).first().map(|a| a.0)).unwrap_or_else(|| evidence::ip_from_bits(origin));
        OriginRef { ip: ip.to_string(), prefix: self.origin_text(origin), observed_bytes: None }
    }

    /// The origins of a key-level alert's window by bytes, the most first, at most `n`, each
    /// shown by its address that read the most; and the bytes not listed. The listed bytes
    /// plus the rest are exactly `observed`: a listed estimate is cut to what `observed` leaves
    /// (it cannot exceed it while the sketch was fed with the window's sum; the cut only
    /// guards the sum), and bytes the sketch never saw (before it existed, or reads without an
    /// address) are part of the rest.
    fn window_origins(&self, w: Option<&OriginWindow>, observed: u64, n: usize) -> (Vec<OriginRef>, u64) {
        let mut left = observed;
        let mut out = Vec::new();
        for o in w.map(|w| w.top(n)).unwrap_or_default() {
            let bytes = o.bytes.min(left);
            if bytes == 0 {
                break;
            }
            left -= bytes;
            let ip = evidence::ip_from_bits(o.top_address.unwrap_or(o.origin));
            out.push(OriginRef { ip: ip.to_string(), prefix: self.origin_text(o.origin), observed_bytes: Some(bytes) });
        }
        (out, left)
    }

    fn usual(&self, b: &Baseline) -> String {
        if b.typical_hourly_bytes == 0 {
            format!("no volume history yet, {}", plural(b.known_origins, "known origin"))
        } else {
            format!("{}/h from {}", human_bytes(b.typical_hourly_bytes), plural(b.known_origins, "origin"))
        }
    }

    fn severity_for_origin(&self, cred: Sym, level: u8, t: Nanos, first_seen: Nanos) -> Severity {
        let rw_master = {
            let c = self.syms.name(cred);
            c == "key:primarymasterkey" || c == "key:secondarymasterkey"
        };
        if level >= 1 || (rw_master && t - first_seen <= self.cfg.critical_fast_window.0) {
            Severity::Critical
        } else {
            Severity::High
        }
    }

    fn origin_volume_alert(
        &self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        origin: OriginKey,
        t: Nanos,
        level: u8,
    ) -> Alert {
        let credential = self.syms.name(cred).to_string();
        let (first_seen, bytes, epoch, ev, requests) = match key.origins.get(&origin) {
            Some(o) => (o.first_seen, o.bytes, o.mark_epoch, o.evidence.as_deref(), o.requests as u64),
            None => (t, 0, 0, None, 0),
        };
        let origin_ref = self.origin_ref(origin, ev);
        let baseline = self.baseline(key, t, None);
        let (addresses, all) = ev.map_or((1, true), |e| (e.addresses.len(), !e.addresses.is_full()));
        let from = if addresses > 1 {
            let at_least = if all { "" } else { "at least " };
            format!("{} and {at_least}{} other addresses in {}", origin_ref.ip, addresses - 1, origin_ref.prefix)
        } else {
            origin_ref.ip.clone()
        };
        let summary = format!(
            "{credential} of account {account} read {} in {} from {from}, an origin this key never used (usual: {})",
            human_bytes(bytes),
            human_span(t - first_seen),
            self.usual(&baseline)
        );
        let origin_text = origin_ref.prefix.clone();
        Alert {
            id: alert_id(
                Rule::UnfamiliarOriginVolume,
                account,
                &credential,
                &origin_text,
                first_seen,
                level,
                epoch as u32,
            ),
            rule: Rule::UnfamiliarOriginVolume,
            severity: self.severity_for_origin(cred, level, t, first_seen),
            account: account.to_string(),
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(first_seen), end: format_rfc3339(t) },
            observed_bytes: bytes,
            threshold_bytes: self.cfg.unfamiliar_bytes.0,
            escalation_level: level,
            baseline,
            evidence: self.evidence_out(ev.unwrap_or(&Evidence::default()), Some(first_seen), Some(requests)),
            summary,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate_alert(
        &self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        contributing: &[(u64, OriginKey)],
        t: Nanos,
        level: u8,
        m: Mark,
    ) -> Alert {
        let credential = self.syms.name(cred).to_string();
        let mut merged = Evidence::default();
        let mut requests = 0u64;
        for &(_, o) in contributing {
            requests += key.origins.get(&o).map_or(0, |e| e.requests as u64);
            if let Some(ev) = key.origins.get(&o).and_then(|e| e.evidence.as_deref()) {
                merged.merge(ev);
            }
        }
        let observed = key.unfamiliar.sum();
        // By bytes in the window, like observed_bytes (not since each origin's first request).
        let (origins, other_bytes) = self.window_origins(key.unfamiliar_origins.as_deref(), observed, 20);
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{credential} of account {account} read {} in {} from {} origins it never used, none above {} alone (usual: {})",
            human_bytes(observed),
            human_span(t - m.since),
            contributing.len(),
            human_bytes(self.cfg.unfamiliar_bytes.0),
            self.usual(&baseline)
        );
        Alert {
            id: alert_id(Rule::UnfamiliarOriginsAggregate, account, &credential, "", m.since, level, m.epoch),
            rule: Rule::UnfamiliarOriginsAggregate,
            severity: if level >= 1 { Severity::Critical } else { Severity::High },
            account: account.to_string(),
            credential,
            origin: None,
            origins: Some(origins),
            other_bytes: Some(other_bytes),
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(m.since), end: format_rfc3339(t) },
            observed_bytes: observed,
            threshold_bytes: self.cfg.unfamiliar_bytes.0,
            escalation_level: level,
            baseline,
            evidence: self.evidence_out(&merged, None, Some(requests)),
            summary,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn volume_alert(
        &self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        model: &PeakModel,
        t: Nanos,
        level: u8,
        m: Mark,
    ) -> Alert {
        let credential = self.syms.name(cred).to_string();
        let mut ev = Evidence::default();
        if let Some(w) = &key.window_evidence {
            ev.merge(&w.1);
            ev.merge(&w.2);
        }
        let observed = key.volume.sum();
        // Origins of the sliding window by bytes, each shown by the address in it that read the most.
        let (origins, other_bytes) = self.window_origins(key.volume_origins.as_deref(), observed, 10);
        let baseline = self.baseline(key, t, Some(model.p_value(observed)));
        let ratio = observed as f64 / model.typical_peak().max(1) as f64;
        let summary = format!(
            "{credential} of account {account} read {} within {}, {:.0}x its typical {} peak of {} (usual: {})",
            human_bytes(observed),
            human_span(self.cfg.volume_window.0),
            ratio,
            model.basis.noun(),
            human_bytes(model.typical_peak()),
            self.usual(&baseline)
        );
        Alert {
            id: alert_id(Rule::VolumeAnomaly, account, &credential, "", m.since, level, m.epoch),
            rule: Rule::VolumeAnomaly,
            severity: if level >= 1 { Severity::High } else { Severity::Medium },
            account: account.to_string(),
            credential,
            origin: None,
            origins: Some(origins),
            other_bytes: Some(other_bytes),
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(key.volume.start().unwrap_or(t)), end: format_rfc3339(t) },
            observed_bytes: observed,
            threshold_bytes: model.threshold,
            escalation_level: level,
            baseline,
            evidence: self.evidence_out(&ev, None, None),
            summary,
        }
    }

    fn account_origin_alert(
        &self,
        account: &str,
        key: &KeyState,
        origin: OriginKey,
        entry: &AccountOrigin,
        s: &Sample,
        level: u8,
    ) -> Alert {
        let t = s.time;
        let ev = key.origins.get(&origin).and_then(|o| o.evidence.as_deref());
        let origin_ref = self.origin_ref(origin, ev);
        // The keys by bytes, ties by name; the alert's credential is the one that read the most.
        let mut keys: Vec<(String, u64)> =
            entry.keys.iter().map(|&(c, b)| (self.syms.name(c).to_string(), b)).collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let credential = keys.first().map_or_else(String::new, |k| k.0.clone());
        let listed = keys.iter().map(|(c, b)| format!("{c} {}", human_bytes(*b))).collect::<Vec<_>>().join(", ");
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{} keys of account {account} read {} in {} from {} ({listed}), an origin no key of the account \
             ever used, none of them above {} alone (usual: {})",
            keys.len(),
            human_bytes(entry.bytes),
            human_span(t - entry.first_seen),
            origin_ref.ip,
            human_bytes(self.cfg.unfamiliar_bytes.0),
            self.usual(&baseline)
        );
        let origin_text = origin_ref.prefix.clone();
        let mut evidence = self.evidence_out(ev.unwrap_or(&Evidence::default()), Some(entry.first_seen), None);
        evidence.credentials = Some(keys.iter().map(|(c, b)| NameCount { name: c.clone(), count: *b }).collect());
        Alert {
            id: alert_id(
                Rule::UnfamiliarOriginAccountVolume,
                account,
                "",
                &origin_text,
                entry.first_seen,
                level,
                entry.mark_epoch,
            ),
            rule: Rule::UnfamiliarOriginAccountVolume,
            severity: if level >= 1 { Severity::Critical } else { Severity::High },
            account: account.to_string(),
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(entry.first_seen), end: format_rfc3339(t) },
            observed_bytes: entry.bytes,
            threshold_bytes: self.cfg.unfamiliar_bytes.0,
            escalation_level: level,
            baseline,
            evidence,
            summary,
        }
    }

    fn new_origin_alert(&self, account: &str, cred: Sym, key: &KeyState, origin: OriginKey, s: &Sample) -> Alert {
        let t = s.time;
        let credential = self.syms.name(cred).to_string();
        let mut first = Evidence::default();
        first.add(s);
        let ev = Some(&first);
        let origin_ref = self.origin_ref(origin, ev);
        let epoch = key.origins.get(&origin).map_or(0, |o| o.mark_epoch);
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{credential} of account {account} made its first request from {} ({}) (usual: {})",
            origin_ref.ip,
            origin_ref.prefix,
            self.usual(&baseline)
        );
        let origin_text = origin_ref.prefix.clone();
        Alert {
            id: alert_id(Rule::NewOrigin, account, &credential, &origin_text, t, 0, epoch as u32),
            rule: Rule::NewOrigin,
            severity: Severity::Info,
            account: account.to_string(),
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(t), end: format_rfc3339(t) },
            observed_bytes: ev.map_or(0, |e| e.bytes),
            threshold_bytes: 0,
            escalation_level: 0,
            baseline,
            evidence: self.evidence_out(&first, Some(t), None),
            summary,
        }
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The highest escalation level (0 = threshold, 1 = factor x threshold, ...) that `value` has
/// reached at or above `done`, if any.
fn reached_level(value: u64, threshold: u64, factor: u64, done: u8) -> Option<u8> {
    let level_threshold = |l: u8| threshold.saturating_mul(factor.saturating_pow(l as u32));
    if value < level_threshold(done) {
        return None;
    }
    let mut l = done;
    while l < 8 && value >= level_threshold(l + 1) {
        l += 1;
    }
    Some(l)
}

#[cfg(test)]
pub(crate) mod tests;
