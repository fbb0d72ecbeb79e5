//! A sum over a sliding window of event time, at one-minute resolution.

use crate::time::{Nanos, MINUTE};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Bytes per minute for the minutes inside the window; the newest minute seen defines its end.
/// Bounded by the window length in minutes; empty minutes take no space.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SlidingSum {
    buckets: VecDeque<(i64, u64)>,
    sum: u64,
}

impl SlidingSum {
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The newest non-empty minute (minute number).
    pub fn newest_minute(&self) -> Option<i64> {
        self.buckets.back().map(|&(m, _)| m)
    }

    /// Start of the oldest minute still in the window.
    pub fn start(&self) -> Option<Nanos> {
        self.buckets.front().map(|&(m, _)| m * MINUTE)
    }

    /// Adds `bytes` at time `t` and slides the window (`window` long) to end at the newest
    /// minute seen. A value older than the window is dropped; one inside it but out of order
    /// lands in its own minute.
    pub fn add(&mut self, t: Nanos, bytes: u64, window: Nanos) {
        let m = t.div_euclid(MINUTE);
        let span = (window / MINUTE).max(1);
        let newest = self.buckets.back().map_or(m, |&(b, _)| b.max(m));
        while let Some(&(b, v)) = self.buckets.front() {
            if b > newest - span {
                break;
            }
            self.sum -= v;
            self.buckets.pop_front();
        }
        if bytes == 0 || m <= newest - span {
            return;
        }
        self.sum += bytes;
        super::grow::room_for_one_in(&mut self.buckets);
        match self.buckets.back_mut() {
            Some(back) if back.0 == m => back.1 += bytes,
            Some(back) if back.0 > m => {
                let i = self.buckets.partition_point(|&(b, _)| b < m);
                match self.buckets.get_mut(i) {
                    Some(slot) if slot.0 == m => slot.1 += bytes,
                    _ => self.buckets.insert(i, (m, bytes)),
                }
            }
            _ => self.buckets.push_back((m, bytes)),
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
        Some(SlidingSum { buckets: buckets.into(), sum })
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
}
