//! The per-account reorder queues: an event waits until its account's newest event time is
//! `max_out_of_order` past it, then is released to the rules in event-time order; a late one
//! is processed at once. [`ArrivalIndex`] keeps the arrival (processing) times of the queued
//! events, for [`Detector::release_held`](super::Detector::release_held) and the offsets the
//! service may commit.

use super::{AccountState, Alert, Ctx, Ev};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Multiset of the `arrived` values of queued events, for the oldest one in O(1). Arrivals
/// come in non-decreasing order (a processing clock), so adding is a push or an increment at
/// the back; a value out of order is inserted at its place (a binary search).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct ArrivalIndex {
    runs: VecDeque<(i64, u64)>,
}

impl ArrivalIndex {
    pub(super) fn add(&mut self, arrived: i64) {
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

    pub(super) fn remove(&mut self, arrived: i64) {
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

    pub(super) fn oldest(&self) -> Option<i64> {
        self.runs.front().map(|(t, _)| *t)
    }
}

impl Ctx {
    /// Takes an event of the account `name` into its reorder queue and processes what the
    /// account's new watermark releases; a late event (older than the watermark, or than an
    /// event already processed) is processed at once and counted.
    pub(super) fn enqueue(&mut self, name: &str, acct: &mut AccountState, e: Ev, out: &mut Vec<Alert>) {
        let watermark = acct.max_time - self.cfg.max_out_of_order.0;
        if e.time < watermark || e.time < acct.released {
            self.stats.late_events += 1;
            self.process(name, acct, &e, out);
            return;
        }
        if e.time > acct.max_time {
            // What the new watermark releases goes first: all of it is older than `e`, so the
            // order is the one of inserting `e` first, and an account whose events come far
            // apart keeps one waiting, not two.
            acct.max_time = e.time;
            let watermark = acct.max_time - self.cfg.max_out_of_order.0;
            while acct.queue.front().is_some_and(|q| q.time < watermark) {
                self.release_next(name, acct, out);
            }
        }
        // Insert in time order; equal times keep arrival order. The queue grows from one
        // event (most accounts have one or two waiting; a first push would make room for four).
        self.arrivals.add(e.arrived);
        super::grow::room_for_one_in(&mut acct.queue);
        match acct.queue.back() {
            Some(b) if b.time > e.time => {
                let i = acct.queue.partition_point(|q| q.time <= e.time);
                acct.queue.insert(i, e);
            }
            _ => acct.queue.push_back(e),
        }
    }

    /// Processes the account's oldest queued event; false when its queue is empty.
    pub(super) fn release_next(&mut self, name: &str, acct: &mut AccountState, out: &mut Vec<Alert>) -> bool {
        let Some(q) = acct.queue.pop_front() else { return false };
        acct.released = acct.released.max(q.time);
        self.arrivals.remove(q.arrived);
        self.process(name, acct, &q, out);
        true
    }
}
