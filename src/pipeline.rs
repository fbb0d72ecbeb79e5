//! The per-message bookkeeping every driver shares (replay, and roles all, rekey and detect of
//! `exfilwatch run`): a decoded message ([`Fetched`]: decoded once, when fetched), its records
//! handed through the clock guard to the detector or the internal topic ([`admit`]), counted
//! with [`Stats::count_event`] and [`Stats::count_skipped`] (replay counts with the same two).
//! Free of Kafka: a message is bytes and where they came from.

use crate::decode::{Decoded, Decoder, Malformed};
use crate::detect::{Admit, ClockGuard};
use crate::sources::align::Aligner;
use crate::sources::kafka::RawMessage;
use crate::telemetry::Stats;
use crate::time::Nanos;
use std::time::Duration;

/// A raw message (roles all and rekey), decoded once when fetched; it waits in the event-time
/// alignment as this and is handed on by [`admit`].
pub struct Fetched {
    pub msg: RawMessage,
    /// Its records as decoded, in order: a record's index in its envelope is its place here.
    items: Vec<Decoded<'static>>,
    /// How long the decode took.
    pub decoding: Duration,
}

impl Fetched {
    pub fn decode(decoder: &mut Decoder, msg: RawMessage) -> Fetched {
        let started = std::time::Instant::now();
        let mut items = Vec::new();
        // A message without a payload (a tombstone) holds no record.
        if !msg.payload.is_empty() {
            decoder.decode(&msg.payload, |d| {
                items.push(match d {
                    Decoded::Event(ev) => Decoded::Event(ev.into_owned()),
                    Decoded::Skipped(c) => Decoded::Skipped(c),
                    Decoded::Malformed { reason, index } => Decoded::Malformed { reason, index },
                })
            });
        }
        Fetched { msg, items, decoding: started.elapsed() }
    }

    /// The oldest and newest time of its records (None without any): its place in the merge.
    pub fn times(&self) -> Option<(Nanos, Nanos)> {
        self.items.iter().fold(None, |range, d| match d {
            Decoded::Event(ev) => {
                Some(range.map_or((ev.time, ev.time), |(a, b): (Nanos, Nanos)| (a.min(ev.time), b.max(ev.time))))
            }
            _ => range,
        })
    }

    /// Its records as decoded, in order.
    pub fn items(&self) -> &[Decoded<'static>] {
        &self.items
    }

    pub fn payload(&self) -> &[u8] {
        &self.msg.payload
    }

    pub fn source(&self) -> (&str, i32, i64) {
        self.msg.source()
    }

    /// Into the aligner, under its partition.
    pub fn push_into(self, align: &mut Aligner<Fetched>, now_ms: i64) {
        let (size, times) = (self.payload().len(), self.times());
        let tp = (self.msg.topic.clone(), self.msg.partition);
        let offset = self.msg.offset;
        align.push(tp, offset, times, size, self, now_ms);
    }
}

/// Hands a fetched message's records on, when it leaves the alignment: counts them, sets aside
/// (into `bad`, with their index) the malformed ones and those the clock guard refuses against
/// the wall clock, and passes every other event to `take`. Returns the records counted (events
/// and skips) and the newest event time taken.
pub fn admit(
    clock: &mut ClockGuard<()>,
    stats: &mut Stats,
    fetched: &Fetched,
    bad: &mut Vec<(Malformed, Option<usize>)>,
    mut take: impl FnMut(&crate::decode::Event<'_>),
) -> (u64, Nanos) {
    let (mut records, mut newest) = (0u64, Nanos::MIN);
    let wall = wall_clock_nanos();
    for (index, decoded) in fetched.items.iter().enumerate() {
        match decoded {
            Decoded::Event(ev) => match clock.admit_at(&ev.account, ev.time, wall) {
                // Wall-clock mode holds nothing.
                Admit::Accept | Admit::Held => {
                    records += 1;
                    newest = newest.max(ev.time);
                    stats.count_event(ev);
                    take(ev);
                }
                Admit::Reject(reason) => bad.push((reason, Some(index))),
            },
            Decoded::Skipped(c) => {
                records += 1;
                stats.count_skipped(*c);
            }
            Decoded::Malformed { reason, index } => bad.push((*reason, *index)),
        }
    }
    (records, newest)
}

/// The wall clock in nanoseconds since the epoch: the clock guard's "now" in the service.
pub(crate) fn wall_clock_nanos() -> Nanos {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Nanos::try_from(now.as_nanos()).unwrap_or(Nanos::MAX)
}
