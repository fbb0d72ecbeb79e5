//! [`DetectorStats`]: the counters the detector keeps, and how readings of them are combined.

use super::Suppressed;
use serde::{Deserialize, Serialize};

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
    /// Keys evicted because the state passed `max_state_bytes`.
    #[serde(default)]
    pub keys_evicted: u64,
    /// Spells of eviction: an eviction more than an hour of event time after the previous one
    /// starts a new spell (the callers log one warning per spell).
    #[serde(default)]
    pub eviction_spells: u64,
}

/// Estimated bytes of state per key (see [`DetectorStats::state_bytes`]): 3584 as calibrated
/// in BENCHMARKS.md, plus 64 for the user-agent families (`agents.rs`: the list's 24 bytes in
/// the key and one or two 12-byte entries, grown 1, 2, 4, with the allocator's overhead; on
/// `gen-logs bench` with 50,000 keys the peak RSS did not move measurably).
pub const KEY_BYTES: u64 = 3648;
/// Estimated bytes of state per (key, origin) pair.
pub const ORIGIN_BYTES: u64 = 256;

impl DetectorStats {
    /// The state's estimated size: [`KEY_BYTES`] per key tracked and [`ORIGIN_BYTES`] per
    /// (key, origin) pair (structures, hash tables at their load factor, and the typical heap
    /// of a key's windows, sketches and history, calibrated against peak RSS in BENCHMARKS.md,
    /// "State bound"). Accounts and their reorder queues are not in it: they are bounded by
    /// the estate and by `max_out_of_order`, not by what a client sends.
    pub fn state_bytes(&self) -> u64 {
        self.keys_tracked.saturating_mul(KEY_BYTES).saturating_add(self.origins_tracked.saturating_mul(ORIGIN_BYTES))
    }

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
            keys_evicted: self.keys_evicted.saturating_sub(base.keys_evicted),
            eviction_spells: self.eviction_spells.saturating_sub(base.eviction_spells),
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
        self.keys_evicted += o.keys_evicted;
        self.eviction_spells += o.eviction_spells;
    }
}
