//! The clock-skew guard: a record whose time stamp cannot be true never reaches the detector.
//!
//! One record stamped 2099 would move its account's event time 75 years ahead: every record
//! after it would be late, and the daily sweep would forget every baseline. Whoever can write
//! one log line (or a broken clock upstream) could blind an account. The guard sits between
//! decode and detect and sets aside, as malformed:
//! - `future_time`: a record more than `max_clock_skew` ahead of the newest plausible event
//!   time. In `run` that is the wall clock ([`ClockGuard::admit_at`]): nothing is logged in the
//!   future. In `replay` there is no wall clock to trust, so it is the stream's own progress, the
//!   newest accepted time of any account ([`ClockGuard::admit`]). A record ahead of it is
//!   *held*, not judged at once, because archives have real gaps (an outage of the diagnostic
//!   setting, a missing hour): when [`CONFIRM_RUN`] records in a row are all ahead, the jump is
//!   real, progress moves to the earliest held record and the held records are released in
//!   time order ([`ClockGuard::pop`]). A held record is also released once ordinary records
//!   catch up with it. Progress starts at the median time of the first [`CONFIRM_RUN`] records
//!   (held until then), so a wrong first record cannot set it. What is still held at the end
//!   of the input, or pushed out when more than [`MAX_HELD`] wait (the farthest ahead first),
//!   is set aside.
//! - `stale_time`: a record older than `history_window` behind its own account's progress: the
//!   detector would have forgotten everything it could be compared with, and processing it
//!   would make the account's clock run backwards for its sweep.
//!
//! Trade-off: a burst of [`CONFIRM_RUN`] or more consecutive records that all carry the same
//! wrong future time is believed (it is indistinguishable from a gap in the logs); a single
//! wrong record, or wrong records interleaved with true ones, never is.
//!
//! **Architecture invariant:** sans-IO and deterministic, like the detector: the wall clock is
//! an argument, never read here.

use super::intern::NameKey;
use crate::config::DetectConfig;
use crate::decode::Malformed;
use crate::time::Nanos;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, VecDeque};

/// Consecutive records ahead of progress that prove a jump (a gap in the logs), in replay.
pub const CONFIRM_RUN: u32 = 64;

/// Records held at most (replay); past it the one farthest ahead is set aside.
pub const MAX_HELD: usize = 4096;

/// What to do with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Plausible: process it now.
    Accept,
    /// Ahead of progress: the guard keeps it; it comes back through [`ClockGuard::pop`].
    Held,
    /// Set it aside as malformed (`future_time` or `stale_time`); it changes no state.
    Reject(Malformed),
}

#[derive(Debug)]
struct Held<T> {
    account: NameKey,
    payload: T,
}

/// See the module documentation. `T` is what the caller needs to process or set aside a held
/// record later (in replay: the owned event, its location and its text).
#[derive(Debug)]
pub struct ClockGuard<T> {
    skew: Nanos,
    stale_after: Nanos,
    /// Newest accepted event time per account.
    accounts: FxHashMap<NameKey, Nanos>,
    /// Newest accepted event time of any account (replay).
    newest: Option<Nanos>,
    /// Records ahead of `newest`, by (time, arrival).
    held: BTreeMap<(Nanos, u64), Held<T>>,
    seq: u64,
    /// Records in a row that were ahead.
    run: u32,
    out: VecDeque<Out<T>>,
}

/// A held record's fate, handed out by [`ClockGuard::pop`].
#[derive(Debug, PartialEq)]
pub enum Out<T> {
    /// Became plausible: process it now (released in time order).
    Release(T),
    /// Set it aside as malformed.
    Reject(T, Malformed),
}

impl<T> ClockGuard<T> {
    pub fn new(cfg: &DetectConfig) -> Self {
        ClockGuard {
            skew: cfg.max_clock_skew.0,
            stale_after: cfg.history_window.0,
            accounts: FxHashMap::default(),
            newest: None,
            held: BTreeMap::new(),
            seq: 0,
            run: 0,
            out: VecDeque::new(),
        }
    }

    /// Streaming: judges a record of `account` stamped `t` against the wall clock `now` (same
    /// unit: nanoseconds since the epoch). Nothing is held.
    pub fn admit_at(&mut self, account: &str, t: Nanos, now: Nanos) -> Admit {
        if t > now.saturating_add(self.skew) {
            return Admit::Reject(Malformed::FutureTime);
        }
        if self.is_stale(account, t) {
            return Admit::Reject(Malformed::StaleTime);
        }
        self.accepted(account, t);
        Admit::Accept
    }

    /// Replay: judges a record of `account` stamped `t` against the stream's progress. When it
    /// is held, `payload` is called to keep what the caller needs; empty [`ClockGuard::pop`]
    /// after every call: accepting a record can release held ones.
    pub fn admit(&mut self, account: &str, t: Nanos, payload: impl FnOnce() -> T) -> Admit {
        let ahead = match self.newest {
            None => true, // the first records: nothing to compare with yet
            Some(newest) => t > newest.saturating_add(self.skew),
        };
        if !ahead {
            // The hot path: one look-up of the account.
            match self.accounts.get_mut(account.as_bytes()) {
                Some(p) if t < p.saturating_sub(self.stale_after) => return Admit::Reject(Malformed::StaleTime),
                Some(p) => *p = (*p).max(t),
                None => {
                    self.accounts.insert(NameKey::new(account), t);
                }
            }
            self.newest = self.newest.max(Some(t));
            self.run = 0;
            if !self.held.is_empty() {
                self.release_due();
            }
            return Admit::Accept;
        }
        if self.is_stale(account, t) {
            return Admit::Reject(Malformed::StaleTime);
        }
        self.seq += 1;
        self.held.insert((t, self.seq), Held { account: NameKey::new(account), payload: payload() });
        if self.newest.is_none() {
            if self.held.len() >= CONFIRM_RUN as usize {
                self.start();
            }
        } else {
            self.run += 1;
            if self.run >= CONFIRM_RUN {
                // A gap in the logs, not a wrong clock: progress moves to the earliest held.
                self.run = 0;
                if let Some((&(first, _), _)) = self.held.first_key_value() {
                    self.newest = Some(first);
                }
                self.release_due();
            }
        }
        while self.held.len() > MAX_HELD {
            if let Some((_, h)) = self.held.pop_last() {
                self.out.push_back(Out::Reject(h.payload, Malformed::FutureTime));
            }
        }
        Admit::Held
    }

    /// Progress starts at the (lower) median of the first records: one wrong clock among
    /// them cannot set it.
    fn start(&mut self) {
        let n = self.held.len();
        if let Some((&(median, _), _)) = self.held.iter().nth(n.saturating_sub(1) / 2) {
            self.newest = Some(median);
        }
        self.run = 0;
        self.release_due();
    }

    /// The next held record that became plausible or was set aside, in the order decided.
    pub fn pop(&mut self) -> Option<Out<T>> {
        self.out.pop_front()
    }

    /// End of input: whatever is still held was never confirmed and is set aside.
    pub fn finish(&mut self) {
        if self.newest.is_none() {
            self.start(); // fewer records than CONFIRM_RUN in all
        }
        while let Some((_, h)) = self.held.pop_first() {
            self.out.push_back(Out::Reject(h.payload, Malformed::FutureTime));
        }
        self.run = 0;
    }

    /// Records held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn is_stale(&self, account: &str, t: Nanos) -> bool {
        self.accounts.get(account.as_bytes()).is_some_and(|&p| t < p.saturating_sub(self.stale_after))
    }

    fn accepted(&mut self, account: &str, t: Nanos) {
        match self.accounts.get_mut(account.as_bytes()) {
            Some(p) => *p = (*p).max(t),
            None => {
                self.accounts.insert(NameKey::new(account), t);
            }
        }
        self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
    }

    /// Releases, in time order, every held record within the skew of progress (each one
    /// released moves progress, which may release the next).
    fn release_due(&mut self) {
        while let Some(newest) = self.newest {
            let Some(entry) = self.held.first_entry() else { break };
            let t = entry.key().0;
            if t > newest.saturating_add(self.skew) {
                break;
            }
            let h = entry.remove();
            self.accepted(h.account.as_str(), t);
            self.out.push_back(Out::Release(h.payload));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY, HOUR, MINUTE};

    const T0: Nanos = 1_628_000_000_000_000_000; // 2021-08-03
    const YEAR_2099: Nanos = 4_070_908_800_000_000_000;

    fn guard() -> ClockGuard<u32> {
        ClockGuard::new(&DetectConfig::default())
    }

    /// Feeds (account, time, id) records; returns the ids in the order the detector would see
    /// them and the ids set aside with their reason.
    fn replay(records: &[(&str, Nanos, u32)]) -> (Vec<u32>, Vec<(u32, Malformed)>) {
        let mut g = guard();
        let (mut seen, mut aside) = (Vec::new(), Vec::new());
        for &(a, t, id) in records {
            match g.admit(a, t, || id) {
                Admit::Accept => seen.push(id),
                Admit::Held => {}
                Admit::Reject(r) => aside.push((id, r)),
            }
            drain(&mut g, &mut seen, &mut aside);
        }
        g.finish();
        drain(&mut g, &mut seen, &mut aside);
        (seen, aside)
    }

    fn drain(g: &mut ClockGuard<u32>, seen: &mut Vec<u32>, aside: &mut Vec<(u32, Malformed)>) {
        while let Some(o) = g.pop() {
            match o {
                Out::Release(p) => seen.push(p),
                Out::Reject(p, r) => aside.push((p, r)),
            }
        }
    }

    /// `n` records of account `a`, one a minute from `start`, ids from `id`.
    fn steady(a: &'static str, start: Nanos, n: u32, id: u32) -> Vec<(&'static str, Nanos, u32)> {
        (0..n).map(|i| (a, start + i as i64 * MINUTE, id + i)).collect()
    }

    #[test]
    fn one_record_from_2099_is_set_aside_and_the_rest_goes_on() {
        for at in [0, 10, 63, 64, 300] {
            let mut recs = steady("a", T0, 500, 0);
            recs.insert(at, ("a", YEAR_2099, 9999));
            let (seen, aside) = replay(&recs);
            assert_eq!(aside, vec![(9999, Malformed::FutureTime)], "at {at}");
            assert_eq!(seen, (0..500).collect::<Vec<_>>(), "at {at}");
        }
    }

    #[test]
    fn a_short_input_with_a_wrong_first_record() {
        let mut recs = vec![("a", YEAR_2099, 9999)];
        recs.extend(steady("a", T0, 5, 0));
        let (seen, aside) = replay(&recs);
        assert_eq!(aside, vec![(9999, Malformed::FutureTime)]);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn wrong_records_interleaved_with_true_ones_are_never_believed() {
        // A broken clock on one gateway: every third record is a day ahead.
        let recs: Vec<(&str, Nanos, u32)> = (0..600)
            .map(|i| if i % 3 == 1 { ("a", T0 + DAY + i as i64 * MINUTE, i) } else { ("a", T0 + i as i64 * MINUTE, i) })
            .collect();
        let (seen, aside) = replay(&recs);
        // 600 minutes of true records never reach a day ahead.
        assert_eq!(aside.len(), 200);
        assert!(aside.iter().all(|&(id, r)| id % 3 == 1 && r == Malformed::FutureTime));
        assert_eq!(seen.len(), 400);
        assert!(seen.iter().all(|id| id % 3 != 1));
    }

    #[test]
    fn a_gap_in_the_logs_is_confirmed_and_nothing_is_lost() {
        // Ten hours, then nothing for three days, then ten more hours.
        let mut recs: Vec<(&str, Nanos, u32)> = (0..300).map(|i| ("a", T0 + i as i64 * 2 * MINUTE, i)).collect();
        recs.extend((300..600).map(|i| ("a", T0 + 3 * DAY + i as i64 * 2 * MINUTE, i)));
        let (seen, aside) = replay(&recs);
        assert!(aside.is_empty(), "{aside:?}");
        assert_eq!(seen, (0..600).collect::<Vec<_>>(), "in time order");
    }

    #[test]
    fn a_held_record_is_released_when_progress_catches_up() {
        // Two hours ahead of 100 minutes of records, then true records walk up to it.
        let mut recs = steady("a", T0, 100, 0);
        recs.push(("a", T0 + 99 * MINUTE + 2 * HOUR, 1000));
        recs.extend(steady("a", T0 + 100 * MINUTE, 100, 100));
        let (seen, aside) = replay(&recs);
        assert!(aside.is_empty());
        assert_eq!(seen.len(), 201);
        // Released once progress came within the skew (1 h) of it.
        let pos = seen.iter().position(|&x| x == 1000).unwrap();
        assert_eq!(seen[pos - 1], 159);
    }

    #[test]
    fn accounts_that_start_later_are_confirmed_by_their_own_records() {
        // A replay of two archives months apart: account b's records are all ahead of a's.
        let mut recs = steady("a", T0, 100, 0);
        recs.extend(steady("b", T0 + 120 * DAY, 200, 100));
        let (seen, aside) = replay(&recs);
        assert!(aside.is_empty());
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn held_records_are_bounded() {
        let mut g = guard();
        for (a, t, i) in steady("a", T0, CONFIRM_RUN, 0) {
            g.admit(a, t, || i);
        }
        while let Some(o) = g.pop() {
            assert!(matches!(o, Out::Release(_)), "nothing set aside");
        }
        assert_eq!(g.held(), 0);
        let mut aside = 0;
        for i in 0..(MAX_HELD as u32 * 2) {
            // Ahead, but never CONFIRM_RUN in a row: a true record after every few.
            let t = if i % 8 == 7 { T0 + CONFIRM_RUN as i64 * MINUTE } else { T0 + DAY + i as i64 };
            g.admit("a", t, || i);
            while let Some(o) = g.pop() {
                if let Out::Reject(p, r) = o {
                    assert_eq!(r, Malformed::FutureTime);
                    assert!(p % 8 != 7);
                    aside += 1;
                }
            }
            assert!(g.held() <= MAX_HELD);
        }
        assert_eq!(aside, MAX_HELD as u32 * 2 * 7 / 8 - MAX_HELD as u32, "the excess, farthest ahead first");
    }

    #[test]
    fn stale_records_are_set_aside_in_both_modes() {
        let mut g = guard();
        for (a, t, i) in steady("a", T0 + 40 * DAY, CONFIRM_RUN, 0) {
            g.admit(a, t, || i);
        }
        assert_eq!(g.admit("a", T0, || 1), Admit::Reject(Malformed::StaleTime));
        assert_eq!(g.admit("a", T0 + 20 * DAY, || 2), Admit::Accept); // late, not stale
        assert_eq!(g.admit("b", T0 + 20 * DAY, || 3), Admit::Accept); // its own account's progress
        let mut w: ClockGuard<()> = ClockGuard::new(&DetectConfig::default());
        let now = T0 + 40 * DAY;
        assert_eq!(w.admit_at("a", now - MINUTE, now), Admit::Accept);
        assert_eq!(w.admit_at("a", T0, now), Admit::Reject(Malformed::StaleTime));
        assert_eq!(w.admit_at("a", now + 30 * MINUTE, now), Admit::Accept);
        assert_eq!(w.admit_at("a", now + 2 * HOUR, now), Admit::Reject(Malformed::FutureTime));
    }
}
