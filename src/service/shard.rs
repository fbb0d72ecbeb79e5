//! A detector's state and its bookkeeping ([`Shard`]): what a checkpoint holds
//! ([`SavedState`], the one list of its fields), the offsets it covers, and where it is saved;
//! writing a checkpoint and restoring the newest.

use super::ServiceError;
use crate::detect::{Detector, DetectorStats};
use crate::sinks::fanout::{Ledger, Outbox};
use crate::time::Nanos;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Everything a checkpoint holds: one detector's state and what goes with it. A [`Shard`]
/// keeps it as it is, so the list of fields exists once.
#[derive(Serialize, Deserialize)]
pub(super) struct SavedState {
    pub(super) detector: Detector,
    /// Alert ids already delivered, with their trigger time, within the realert horizon.
    pub(super) delivered: BTreeMap<String, Nanos>,
    /// The sinks' own state, by sink kind (Alertmanager's firing set: re-sent and resolved
    /// after a restart). Role all only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) sinks: BTreeMap<String, serde_json::Value>,
    /// Checkpoints written before `sinks`: the Alertmanager sink's firing set.
    #[serde(default, skip_serializing)]
    pub(super) alertmanager: Option<serde_json::Value>,
    /// Next offset after the last alert delivered, per alert-topic partition.
    #[serde(default)]
    pub(super) alert_topic_marks: BTreeMap<i32, i64>,
    /// Role detect: next raw offset per raw `topic/partition` whose batches are in the state
    /// (a batch below it is a copy a restarted rekey instance produced again).
    #[serde(default)]
    pub(super) raw_marks: BTreeMap<String, i64>,
    /// Alerts raised but not yet taken by every sink (a sink was down): delivered after a
    /// restore, by whoever holds the state then.
    #[serde(default, skip_serializing_if = "Outbox::is_empty")]
    pub(super) outbox: Outbox,
}

impl SavedState {
    pub(super) fn new(detector: Detector) -> SavedState {
        SavedState {
            detector,
            delivered: BTreeMap::new(),
            sinks: BTreeMap::new(),
            alertmanager: None,
            alert_topic_marks: BTreeMap::new(),
            raw_marks: BTreeMap::new(),
            outbox: Outbox::default(),
        }
    }
}

/// One detector's state and where it is saved: the whole stream's (role all), or one internal
/// partition's (role detect, `detect.rs`).
pub(crate) struct Shard {
    /// What a checkpoint holds.
    pub(super) state: SavedState,
    /// Next offset to read per `topic/partition`: everything before it is in the state.
    pub(super) positions: BTreeMap<String, i64>,
    pub(super) store: Option<crate::state::StateStore>,
    /// A backlog is being merged upstream of this state: in role all its own aligner is not
    /// live; in role detect the last batch said the rekey instance's was not (`service::wire`).
    /// Event time alone releases the reorder queues then, as in replay (`release_held`).
    pub(super) backlog: bool,
    /// Role detect: the detector's counters when this process took the partition (a
    /// checkpoint carries them); this process publishes only their growth since.
    pub(super) baseline: DetectorStats,
    /// Eviction spells of the detector already logged (`telemetry::StateEvicted`).
    pub(super) spells_logged: u64,
}

impl Shard {
    pub(super) fn new(detector: Detector, store: Option<crate::state::StateStore>) -> Shard {
        Shard::restored(SavedState::new(detector), BTreeMap::new(), store)
    }

    /// A state restored from a checkpoint covering `positions`.
    pub(super) fn restored(state: SavedState, positions: Offsets, store: Option<crate::state::StateStore>) -> Shard {
        let spells_logged = state.detector.stats().eviction_spells;
        Shard { state, positions, store, backlog: false, baseline: DetectorStats::default(), spells_logged }
    }

    pub(super) fn detector(&self) -> &Detector {
        &self.state.detector
    }

    /// The alerts waiting for a sink, and what the fan-out notes deliveries in.
    pub(super) fn outbox_ledger(&mut self) -> (&mut Outbox, Ledger<'_>) {
        let ledger = Ledger {
            delivered: &mut self.state.delivered,
            alert_marks: &mut self.state.alert_topic_marks,
            journal: self.store.as_mut(),
        };
        (&mut self.state.outbox, ledger)
    }

    /// Writes a checkpoint of this state (with the sinks' state) and the offsets it covers;
    /// returns its size and how long it took. Nothing without a store.
    pub(super) fn save(
        &mut self,
        sinks: BTreeMap<String, serde_json::Value>,
    ) -> Result<Option<(u64, Duration)>, ServiceError> {
        let Some(store) = &mut self.store else { return Ok(None) };
        let t = std::time::Instant::now();
        self.state.sinks = sinks;
        let body = serde_json::to_vec(&self.state).map_err(|e| ServiceError::StateBody(e.to_string()))?;
        let bytes = store.write_checkpoint(self.positions.clone(), &body)?;
        Ok(Some((bytes, t.elapsed())))
    }
}

/// A checkpoint's body, as [`restore`] reads it.
fn parse_body(body: &[u8]) -> Result<SavedState, ServiceError> {
    serde_json::from_slice(body).map_err(|e| ServiceError::StateBody(e.to_string()))
}

/// The fuzz target's entry point (`fuzz/fuzz_targets/checkpoint.rs`): the detector of a
/// checkpoint's body.
#[doc(hidden)]
pub fn checkpoint_detector(body: &[u8]) -> Result<Detector, ServiceError> {
    parse_body(body).map(|s| s.detector)
}

/// Restores the newest valid checkpoint: the state, the offsets it covers, and the delivered
/// ids journaled after it.
pub(super) type Offsets = BTreeMap<String, i64>;

pub(super) fn restore(store: &mut crate::state::StateStore) -> Result<Option<(SavedState, Offsets)>, ServiceError> {
    let Some(loaded) = store.load_newest()? else { return Ok(None) };
    for why in &loaded.refused {
        tracing::warn!(message = "Checkpoint refused; using an older one.", why = %why);
    }
    let mut s = parse_body(&loaded.body)?;
    s.delivered.extend(loaded.delivered);
    if let Some(firing) = s.alertmanager.take() {
        s.sinks.entry(crate::telemetry::SinkKind::Alertmanager.as_str().to_string()).or_insert(firing);
    }
    tracing::info!(
        message = "State restored.",
        store = %store.location(),
        checkpoint = loaded.header.seq,
        partitions = loaded.header.offsets.len()
    );
    Ok(Some((s, loaded.header.offsets)))
}
