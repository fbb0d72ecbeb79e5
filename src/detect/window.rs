//! A sum over a sliding window of event time, at one-minute resolution.

use crate::time::{Nanos, MINUTE};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// Bytes per minute for the minutes inside the window; the newest minute seen defines its end.
/// Bounded by the window length in minutes; empty minutes take no space. The first minute is
/// inline: a key read now and then (most keys) has one minute in its window at a time, and a
/// heap block of its own was one more cold block to read at every read. Written and read as
/// the list of (minute, bytes) it always was.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SlidingSum {
    /// (minute, bytes), oldest first.
    buckets: SmallVec<[(i64, u64); 1]>,
    sum: u64,
}

impl SlidingSum {
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The newest non-empty minute (minute number).
    pub fn newest_minute(&self) -> Option<i64> {
        self.buckets.last().map(|&(m, _)| m)
    }

    /// Start of the oldest minute still in the window.
    pub fn start(&self) -> Option<Nanos> {
        self.buckets.first().map(|&(m, _)| m * MINUTE)
    }

    /// Adds `bytes` at time `t` and slides the window (`window` long) to end at the newest
    /// minute seen. A value older than the window is dropped; one inside it but out of order
    /// lands in its own minute.
    pub fn add(&mut self, t: Nanos, bytes: u64, window: Nanos) {
        let m = t.div_euclid(MINUTE);
        let span = (window / MINUTE).max(1);
        let newest = self.buckets.last().map_or(m, |&(b, _)| b.max(m));
        // The minutes that slid out and their bytes, in one pass; dropped at once (one move of
        // the rest).
        let (mut out, mut gone) = (0, 0);
        for &(_, v) in self.buckets.iter().take_while(|&&(b, _)| b <= newest - span) {
            out += 1;
            gone += v;
        }
        if out == self.buckets.len() && self.buckets.spilled() {
            // Slid empty: the heap block goes (the next minute is inline again).
            *self = SlidingSum::default();
        } else if out > 0 {
            self.sum -= gone;
            self.buckets.drain(..out);
        }
        if bytes == 0 || m <= newest - span {
            return;
        }
        self.sum += bytes;
        match self.buckets.last_mut() {
            Some(back) if back.0 == m => back.1 += bytes,
            Some(back) if back.0 > m => {
                let i = self.buckets.partition_point(|&(b, _)| b < m);
                match self.buckets.get_mut(i) {
                    Some(slot) if slot.0 == m => slot.1 += bytes,
                    _ => {
                        super::grow::room_for_one_small(&mut self.buckets);
                        self.buckets.insert(i, (m, bytes))
                    }
                }
            }
            _ => {
                super::grow::room_for_one_small(&mut self.buckets);
                self.buckets.push((m, bytes))
            }
        }
    }

    /// The non-empty minutes in the window, oldest first: (minute number, bytes).
    pub fn buckets(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.buckets.iter().copied()
    }

    /// Rebuilds a window from [`SlidingSum::buckets`]; `None` unless the minutes are strictly
    /// increasing, the bytes non-zero and their sum fits.
    pub fn from_buckets(buckets: Vec<(i64, u64)>) -> Option<Self> {
        let mut sum = 0u64;
        for (i, &(m, b)) in buckets.iter().enumerate() {
            if b == 0 || (i > 0 && buckets[i - 1].0 >= m) {
                return None;
            }
            sum = sum.checked_add(b)?;
        }
        Some(SlidingSum { buckets: SmallVec::from_vec(buckets), sum })
    }

    pub fn clear(&mut self) {
        self.buckets.clear();
        self.sum = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR;

    #[test]
    fn slides_and_drops_old_minutes() {
        let mut s = SlidingSum::default();
        s.add(0, 10, HOUR);
        s.add(30 * MINUTE, 20, HOUR);
        assert_eq!(s.sum(), 30);
        s.add(59 * MINUTE + 59_000_000_000, 5, HOUR);
        assert_eq!(s.sum(), 35);
        s.add(60 * MINUTE, 1, HOUR); // minute 0 leaves the window
        assert_eq!(s.sum(), 26);
        s.add(30_000_000_000, 100, HOUR); // minute 0, older than the window: dropped
        assert_eq!(s.sum(), 26);
        s.add(45 * MINUTE, 4, HOUR); // out of order but inside
        assert_eq!(s.sum(), 30);
        assert_eq!(s.start(), Some(30 * MINUTE));
        s.add(10 * HOUR, 0, HOUR);
        assert_eq!(s.sum(), 0);
    }

    proptest::proptest! {
        /// The same window, minute for minute, as the `VecDeque` it was held in before (kept
        /// here as the reference), and written as the same list.
        #[test]
        fn the_inline_window_is_the_plain_window(
            steps in proptest::collection::vec((-90i64..150, 0u64..4, 0usize..3), 1..80),
        ) {
            use std::collections::VecDeque;
            let mut s = SlidingSum::default();
            let mut plain: VecDeque<(i64, u64)> = VecDeque::new();
            let mut plain_sum = 0u64;
            let mut t = 1_000 * HOUR;
            for (half_minutes, bytes, w) in steps {
                t += half_minutes * MINUTE / 2;
                let window = [MINUTE, HOUR, 3 * HOUR][w];
                s.add(t, bytes, window);
                // The window as `SlidingSum::add` kept it in a `VecDeque`.
                let m = t.div_euclid(MINUTE);
                let span = (window / MINUTE).max(1);
                let newest = plain.back().map_or(m, |&(b, _)| b.max(m));
                while let Some(&(b, v)) = plain.front() {
                    if b > newest - span {
                        break;
                    }
                    plain_sum -= v;
                    plain.pop_front();
                }
                if bytes > 0 && m > newest - span {
                    plain_sum += bytes;
                    match plain.back_mut() {
                        Some(back) if back.0 == m => back.1 += bytes,
                        Some(back) if back.0 > m => {
                            let i = plain.partition_point(|&(b, _)| b < m);
                            match plain.get_mut(i) {
                                Some(slot) if slot.0 == m => slot.1 += bytes,
                                _ => plain.insert(i, (m, bytes)),
                            }
                        }
                        _ => plain.push_back((m, bytes)),
                    }
                }
                proptest::prop_assert_eq!(s.buckets().collect::<Vec<_>>(), plain.iter().copied().collect::<Vec<_>>());
                proptest::prop_assert_eq!(s.sum(), plain_sum);
                proptest::prop_assert_eq!(s.newest_minute(), plain.back().map(|b| b.0));
                let json = serde_json::to_string(&s).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                let want = serde_json::json!({ "buckets": plain, "sum": plain_sum }).to_string();
                proptest::prop_assert_eq!(&json, &want);
                let back: SlidingSum = serde_json::from_str(&json).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                proptest::prop_assert_eq!(back, s.clone());
            }
        }
    }
}
