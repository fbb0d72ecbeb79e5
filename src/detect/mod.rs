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
//! - Per key: origins (client IP prefix, exact IP, or the address's autonomous system at
//!   `origin_granularity = "asn"`, `rules.rs`) with first/last seen, bytes, requests,
//!   dedup marks and, while new, evidence; a sliding sum of bytes from unfamiliar origins; a
//!   sliding sum of all bytes; a day-by-day history of peaks from which the `volume_anomaly`
//!   threshold is fitted once a day.
//! - State is bounded: `max_origins_per_key` with least-recently-seen eviction, a daily
//!   sweep (per account, in event time) that forgets origins and keys idle for
//!   `history_window`, and evidence only for origins that are still new.
//! - Triage: the allowlist (`allow.rs`) is checked where a rule pushes an alert; analysts'
//!   verdicts (`verdict.rs`) are applied in event time and mark origins familiar (benign) or
//!   unfamiliar for good (malicious, `malicious_origin`).
//!
//! ## Where things are
//! This file: the [`Detector`] and its API. `state.rs`: the per-account, per-key and
//! per-origin state; `stats.rs`: [`DetectorStats`]; `reorder.rs`: the reorder queues;
//! `rules.rs`: one event through the rules, with each rule family and its alerts in
//! `origin_rules.rs`, `volume_rule.rs` and `account_rule.rs`.

mod account_rule;
mod agents;
mod allow;
mod bound;
mod clock;
mod evidence;
mod few_map;
mod grow;
mod intern;
mod key_table;
mod learned;
mod origin_map;
mod origin_rules;
mod owners;
mod prefetch;
mod reorder;
mod rules;
mod sketch;
mod spray_rule;
mod state;
mod stats;
mod verdict;
mod volume;
mod volume_rule;
mod window;

pub use agents::AgentSeen;
pub use allow::{parse_cidr, AllowReason, Allowlist, Suppressed};
pub use bound::{EvictionCandidate, LOW_WATER_PERCENT};
pub use clock::{Admit, ClockGuard, Out, CONFIRM_RUN, MAX_HELD};
pub use evidence::{format_guid, ip_bits, parse_guid, Evidence};
pub use intern::{Interner, NameKey, Sym};
pub use learned::{
    AccountRow, KeyRow, LearnedState, LearnedStateError, MarkRow, OriginRow, VolumeDayRow, WindowKind, WindowRow,
};
pub use sketch::OriginWindow;
pub use state::AccountOrigin;
pub use stats::{DetectorStats, KEY_BYTES, ORIGIN_BYTES};
pub use verdict::{Verdict, VerdictError, VerdictKind, VerdictRow};
pub use volume::{DayMask, DaySummary, PeakModel, TQuantiles, VolumeHistory};
pub use window::SlidingSum;

use crate::alert::{
    alert_id, Alert, AzureResource, Baseline, EvidenceOut, NameCount, OriginRef, Rule, Severity, Window,
};
use crate::config::{DetectConfig, OriginGranularity};
use crate::decode::Event;
use crate::time::{format_rfc3339, Nanos, DAY, HOUR, MINUTE};
use crate::units::{human_bytes, human_span};
use evidence::{Gathered, Sample};
use reorder::ArrivalIndex;
use rules::reached_level;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use state::{AccountState, Ev, KeyState, Mark, OriginEntry, OriginEntryFields, Tally};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

/// An origin: the client address masked to the configured prefix, as 128 bits (IPv4 in its
/// IPv4-mapped IPv6 form).
pub type OriginKey = u128;

/// Symbol capacity for evidence strings (operations, user agents, collections); past it they
/// show as "(other)". Credentials are never folded.
const SYMBOL_CAPACITY: usize = 1_000_000;

/// How often (event time) an account's idle origins and keys are swept out.
const SWEEP_EVERY: Nanos = DAY;

/// How often (event time) an account drops, between sweeps, what is over: the windows of its
/// idle keys and its account-level origins past `familiar_after`. It happens at an account's
/// first event in each new hour. A window idle for its own length holds only minutes the key's
/// next read slides out, and most keys of a large fleet read a few times a day: held until the
/// daily sweep, such leftovers were a fifth of the state.
const WINDOW_SWEEP_EVERY: Nanos = HOUR;

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
    /// Who owns an address (`[enrich]`): from the current configuration, never from a
    /// snapshot; reloaded when its files change.
    #[serde(skip)]
    enrich: Option<std::sync::Arc<crate::enrich::Enrichment>>,
    /// `suspicious_origin` dedup: (account, credential, address, list) -> (last alert, first
    /// alert, re-alert count).
    #[serde(default)]
    suspicious: BTreeMap<String, (Nanos, Nanos, u32)>,
    #[serde(default)]
    verdicts: verdict::Verdicts,
    /// Newest event time processed (any account): the clock of eviction spells.
    #[serde(default = "nanos_min")]
    newest: Nanos,
    /// When the state was last evicted to `max_state_bytes` (event time, [`Ctx::newest`]).
    #[serde(default)]
    last_eviction: Option<Nanos>,
}

fn nanos_min() -> Nanos {
    Nanos::MIN
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
                enrich: None,
                suspicious: BTreeMap::new(),
                verdicts: verdict::Verdicts::default(),
                newest: Nanos::MIN,
                last_eviction: None,
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
        // One probe for a known account (nearly every record).
        let acct = match self.accounts.get_mut(ev.account.as_bytes()) {
            Some(acct) => acct,
            None => self.accounts.entry(NameKey::new(&ev.account)).or_insert(AccountState {
                first_seen: e.time,
                last_seen: e.time,
                max_time: e.time,
                next_sweep: e.time + SWEEP_EVERY,
                queue: VecDeque::new(),
                released: Nanos::MIN,
                keys: Default::default(),
                evidence_created: Nanos::MIN,
                unfamiliar: Default::default(),
                resource: None,
            }),
        };
        if acct.resource.is_none() && !ev.resource_id.is_empty() {
            acct.resource = AzureResource::parse(&ev.resource_id).map(|r| state::ResourceId::new(&r.id));
        }
        ctx.enqueue(&ev.account, acct, e, out);
        self.bound_state();
    }

    /// Processes every event still waiting (end of input), account by account in name order.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        let mut names: Vec<NameKey> = self.accounts.keys().cloned().collect();
        names.sort();
        for name in names {
            if let Some(acct) = self.accounts.get_mut(&name) {
                while self.ctx.release_next(name.as_str(), acct, out) {}
            }
        }
        self.bound_state();
    }

    /// As [`Detector::finish`], the alerts of each account apart: (account, its alerts), in
    /// account name order. Replay's shards (`src/replay/shards.rs`) merge several detectors'
    /// lists by name into the order one detector gives.
    pub fn finish_accounts(&mut self) -> Vec<(String, Vec<Alert>)> {
        let mut names: Vec<NameKey> = self.accounts.keys().cloned().collect();
        names.sort();
        let mut lists = Vec::new();
        for name in names {
            let mut out = Vec::new();
            if let Some(acct) = self.accounts.get_mut(&name) {
                while self.ctx.release_next(name.as_str(), acct, &mut out) {}
            }
            if !out.is_empty() {
                lists.push((name.as_str().to_string(), out));
            }
        }
        self.bound_state();
        lists
    }

    /// Splits the detector by account into `n` detectors (`route(account)` < `n` picks one;
    /// replay's shards). Each keeps the configuration, symbols and verdicts; the counters stay
    /// with the first (sums over the parts equal the whole), the key and origin gauges follow
    /// the accounts.
    pub fn split_accounts(mut self, n: usize, route: impl Fn(&str) -> usize) -> Vec<Detector> {
        let accounts = std::mem::take(&mut self.accounts);
        let mut parts: Vec<Detector> = (0..n.max(1))
            .map(|i| {
                let mut d = Detector { ctx: self.ctx.clone(), accounts: FxHashMap::default(), scratch: String::new() };
                if i > 0 {
                    d.ctx.stats = DetectorStats::default();
                }
                d
            })
            .collect();
        for (name, acct) in accounts {
            let i = route(name.as_str()).min(parts.len() - 1);
            parts[i].accounts.insert(name, acct);
        }
        for d in &mut parts {
            d.ctx.stats.keys_tracked = d.accounts.values().map(|a| a.keys.len() as u64).sum();
            d.ctx.stats.origins_tracked =
                d.accounts.values().flat_map(|a| a.keys.values()).map(|k| k.origins.len() as u64).sum();
        }
        parts
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
                    self.ctx.release_next(name.as_str(), acct, out);
                }
            }
        }
        self.bound_state();
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

    /// Keeps only the accounts `keep` accepts (a detect partition's share of a trained model,
    /// which has nothing queued); the key and origin gauges follow.
    pub fn retain_accounts(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.accounts.retain(|name, _| keep(name.as_str()));
        let keys = self.accounts.values().flat_map(|a| a.keys.values());
        self.ctx.stats.keys_tracked = self.accounts.values().map(|a| a.keys.len() as u64).sum();
        self.ctx.stats.origins_tracked = keys.map(|k| k.origins.len() as u64).sum();
    }

    /// Bytes the state holds per (key, origin), estimated from the structures' sizes (the
    /// table entry alone; [`ORIGIN_BYTES`] is what [`DetectorStats::state_bytes`] counts).
    pub fn approx_bytes_per_origin() -> usize {
        // hashbrown: key + value + 1 control byte, at most 7/8 full.
        (std::mem::size_of::<OriginKey>() + std::mem::size_of::<OriginEntry>() + 1) * 8 / 7
    }
}

#[cfg(test)]
pub(crate) mod tests;
