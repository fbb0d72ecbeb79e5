//! Bounded heavy-hitter sketches for alert evidence: Space-Saving (Metwally, Agrawal, El
//! Abbadi 2005), weighted.
//!
//! [`TopK`] keeps at most `N` counters inline. A value already counted adds to its counter; a
//! new one takes a free counter or, when all are taken, the counter with the smallest count
//! (the first such slot), which it inherits and adds to. So the counts always add up to the
//! total weight, and with `T` the total:
//! - every counted value's count is at least its true weight and over-estimates it by at most
//!   `T / N` (the smallest counter never exceeds `T / N`);
//! - every value whose true weight is above `T / N` is counted (it cannot be the smallest);
//! - while at most `N` distinct values were added, every count is exact.
//!
//! [`OriginWindow`] is the same sketch over a sliding window of event time at one-minute
//! resolution, the resolution of the detector's `SlidingSum`: each counter's bytes are kept
//! per minute, so they leave the window with their minute, and fed the same way as a key's
//! sliding sum its counters add up to that sum. A taken-over counter keeps the minutes it
//! inherited, so an over-estimate also slides out with them.
//!
//! Eviction ties go to the first slot, which depends only on the order values were added,
//! never on their numbering (symbol numbers differ between detectors that met names in another
//! order): detectors that saw the same events keep the same counters.

use crate::time::{Nanos, MINUTE};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

/// Counters per evidence list (operations, collections, user agents, addresses) and per
/// origin window. Alerts show five of each; eight keep those five exact whenever at most eight
/// distinct values occurred (a client uses a few operations, collections and user agents, a
/// key a few origins an hour), bound the error by 1/8 of the total otherwise, and cost
/// 128 bytes per list of symbols (16 bytes a counter), inline.
pub const CAPACITY: usize = 8;

/// An address or origin (`u128` bits) kept 8-byte aligned: a `u128` field aligns its struct to
/// 16 bytes, so a counter of (address, count) took 32 bytes instead of 24, and an origin
/// window's counter 128 instead of 96. Ordered (high word first), written and read as the
/// `u128` it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr([u64; 2]);

impl From<u128> for Addr {
    fn from(v: u128) -> Self {
        Addr([(v >> 64) as u64, v as u64])
    }
}

impl From<Addr> for u128 {
    fn from(a: Addr) -> Self {
        ((a.0[0] as u128) << 64) | a.0[1] as u128
    }
}

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        u128::from(*self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u128::deserialize(d).map(Addr::from)
    }
}

/// Space-Saving with `N` counters (see the module doc for the bounds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopK<K, const N: usize> {
    slots: [(K, u64); N],
    len: u8,
}

impl<K: Copy + Default, const N: usize> Default for TopK<K, N> {
    fn default() -> Self {
        TopK { slots: [(K::default(), 0); N], len: 0 }
    }
}

impl<K: Copy + Ord + Default, const N: usize> TopK<K, N> {
    /// Adds `w` to `k`. A zero weight for a value not yet counted takes only a free counter:
    /// it must not evict anything.
    pub fn add(&mut self, k: K, w: u64) {
        let len = self.len as usize;
        if let Some(slot) = self.slots[..len].iter_mut().find(|(s, _)| *s == k) {
            slot.1 += w;
        } else if len < N {
            self.slots[len] = (k, w);
            self.len += 1;
        } else if w > 0 {
            // The first of the smallest counters (min_by_key keeps the first of equals).
            let min = (0..len).min_by_key(|&i| self.slots[i].1).unwrap_or(0);
            let slot = &mut self.slots[min];
            *slot = (k, slot.1 + w);
        }
    }

    /// Adds another sketch's counters, as if its values had been added here with their counts.
    pub fn merge(&mut self, o: &TopK<K, N>) {
        for &(k, n) in o.entries() {
            self.add(k, n);
        }
    }

    pub fn entries(&self) -> &[(K, u64)] {
        &self.slots[..self.len as usize]
    }

    /// Every counter, the largest first, ties by value (callers that show names sort again
    /// by name).
    pub fn top(&self) -> Vec<(K, u64)> {
        let mut v = self.entries().to_vec();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The total weight added (the counts always add up to it).
    pub fn total(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }

    /// The estimate for `k`: its count, or 0 when it is not counted (then its true weight is
    /// at most [`TopK::error_bound`]).
    pub fn estimate(&self, k: K) -> u64 {
        self.entries().iter().find(|e| e.0 == k).map_or(0, |e| e.1)
    }

    /// The most any count over-estimates by: total / N.
    pub fn error_bound(&self) -> u64 {
        self.total() / N as u64
    }

    /// Values counted (all of them while fewer than `N` occurred).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len as usize == N
    }
}

// Serialized as the list of (value, count) pairs: the same in checkpoints and models.
impl<K: Serialize, const N: usize> Serialize for TopK<K, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.slots[..self.len as usize].iter())
    }
}

impl<'de, K: Deserialize<'de> + Copy + Default + PartialEq, const N: usize> Deserialize<'de> for TopK<K, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<(K, u64)> = Vec::deserialize(d)?;
        if v.len() > N {
            return Err(D::Error::custom(format!("{} counters where at most {N} are kept", v.len())));
        }
        let mut t = TopK { slots: [(K::default(), 0); N], len: v.len() as u8 };
        for (i, e) in v.into_iter().enumerate() {
            if t.slots[..i].iter().any(|s| s.0 == e.0) {
                return Err(D::Error::custom("a value is counted twice"));
            }
            t.slots[i] = e;
        }
        Ok(t)
    }
}

/// One counter of an [`OriginWindow`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct OriginSlot {
    origin: Addr,
    /// Bytes in the window (the counter's minutes).
    bytes: u64,
    /// Addresses of the origin by bytes, since it took the counter.
    addresses: TopK<Addr, 2>,
    /// When it took the counter over from another origin that still had bytes in the window:
    /// the newest minute those bytes can be from (they count as this origin's until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inherited_until: Option<i64>,
}

/// Space-Saving of origins by bytes over a sliding window of event time (see the module doc).
/// At most [`CAPACITY`] counters and one entry per (minute, counter): bounded by the window
/// length in minutes times the capacity however many addresses spray it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OriginWindow {
    /// The first counter inline: most windows name one origin (a key that read from one
    /// unfamiliar origin, then went idle), and a counter of its own on the heap was one more
    /// cold block to free when the window is dropped.
    slots: SmallVec<[OriginSlot; 1]>,
    /// (minute, counter, bytes), minutes in non-decreasing order. The first inline: a window
    /// made by one read and dropped when its key has been idle that long (most windows of a
    /// large fleet) is then one heap block, not two.
    minutes: SmallVec<[(i64, u8, u64); 1]>,
    /// Newest minute seen: the window's end.
    newest: Option<i64>,
    total: u64,
}

/// An origin as an [`OriginWindow`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginBytes {
    pub origin: u128,
    /// The address of the origin that read the most since the origin took its counter.
    pub top_address: Option<u128>,
    /// Bytes in the window: exact unless the counter was taken over from another origin
    /// (see [`OriginWindow::exact`]), then an over-estimate by at most total / [`CAPACITY`].
    pub bytes: u64,
}

impl OriginWindow {
    /// Adds `bytes` read from `ip` (in `origin`) at `t` and slides the window (`window` long)
    /// to end at the newest minute seen, exactly as `SlidingSum::add` does: a value older than
    /// the window is dropped.
    pub fn add(&mut self, t: Nanos, origin: u128, ip: u128, bytes: u64, window: Nanos) {
        let m = t.div_euclid(MINUTE);
        let span = (window / MINUTE).max(1);
        let newest = self.newest.map_or(m, |n| n.max(m));
        self.newest = Some(newest);
        // The minutes that slid out, dropped at once (one move of the rest).
        let mut out = 0;
        for &(_, slot, v) in self.minutes.iter().take_while(|e| e.0 <= newest - span) {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                s.bytes -= v;
            }
            self.total -= v;
            out += 1;
        }
        if out == self.minutes.len() && self.minutes.spilled() {
            // Slid empty: the heap block goes (the next minute is inline again).
            self.minutes = SmallVec::new();
        } else if out > 0 {
            self.minutes.drain(..out);
        }
        if bytes == 0 || m <= newest - span {
            return;
        }
        let (origin, ip) = (Addr::from(origin), Addr::from(ip));
        let i = match self.slots.iter().position(|s| s.origin == origin) {
            Some(i) => i,
            None if self.slots.len() < CAPACITY => {
                super::grow::room_for_one_small(&mut self.slots);
                self.slots.push(OriginSlot { origin, ..OriginSlot::default() });
                self.slots.len() - 1
            }
            None => {
                let min = (0..self.slots.len()).min_by_key(|&i| self.slots[i].bytes).unwrap_or(0);
                // Taken over: keeps the minutes (bytes) it holds, starts a new address list.
                let s = &mut self.slots[min];
                s.origin = origin;
                s.addresses = TopK::default();
                s.inherited_until = (s.bytes > 0).then_some(newest);
                min
            }
        };
        let s = &mut self.slots[i];
        s.bytes += bytes;
        s.addresses.add(ip, bytes);
        self.total += bytes;
        // Entries of minute m lie just before the insertion point; at most CAPACITY of them.
        let at = match self.minutes.last() {
            // In time order (nearly always): the end, without a search.
            Some(last) if last.0 > m => self.minutes.partition_point(|e| e.0 <= m),
            _ => self.minutes.len(),
        };
        let mut j = at;
        while j > 0 && self.minutes[j - 1].0 == m {
            j -= 1;
            if self.minutes[j].1 as usize == i {
                self.minutes[j].2 += bytes;
                return;
            }
        }
        super::grow::room_for_one_small(&mut self.minutes);
        self.minutes.insert(at, (m, i as u8, bytes));
    }

    /// Bytes in the window (what the counters add up to).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Every origin with bytes in the window is named with exactly its own bytes: no counter
    /// holds bytes it inherited from an origin it took over from.
    pub fn exact(&self) -> bool {
        let oldest = self.minutes.first().map_or(i64::MAX, |e| e.0);
        self.slots.iter().all(|s| s.bytes == 0 || s.inherited_until.is_none_or(|m| m < oldest))
    }

    /// The most a listed origin's bytes over-estimate: total / [`CAPACITY`].
    pub fn error_bound(&self) -> u64 {
        self.total / CAPACITY as u64
    }

    /// The origins with bytes in the window, the most first (ties by origin), at most `n`.
    pub fn top(&self, n: usize) -> Vec<OriginBytes> {
        let mut v: Vec<OriginBytes> = self
            .slots
            .iter()
            .filter(|s| s.bytes > 0)
            .map(|s| OriginBytes {
                origin: s.origin.into(),
                top_address: s.addresses.top().first().map(|a| a.0.into()),
                bytes: s.bytes,
            })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.origin.cmp(&b.origin)));
        v.truncate(n);
        v
    }

    /// Whether the internal bookkeeping agrees with itself (a restored model is checked).
    pub fn is_consistent(&self) -> bool {
        if self.slots.len() > CAPACITY {
            return false;
        }
        let mut per_slot = vec![0u64; self.slots.len()];
        let mut prev = i64::MIN;
        for &(m, slot, v) in &self.minutes {
            let Some(b) = per_slot.get_mut(slot as usize) else { return false };
            if m < prev || self.newest.is_none_or(|n| m > n) || v == 0 {
                return false;
            }
            prev = m;
            *b = match b.checked_add(v) {
                Some(x) => x,
                None => return false,
            };
        }
        let total: Option<u64> = per_slot.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        per_slot.iter().zip(&self.slots).all(|(&b, s)| b == s.bytes) && total == Some(self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR;
    use proptest::prelude::*;

    /// Addresses 8-byte aligned keep an origin window's counter at 96 bytes (128 with `u128`
    /// fields), and write and read as the `u128` they hold, in its order.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn addresses_are_packed_and_read_as_u128() {
        assert_eq!(std::mem::size_of::<OriginSlot>(), 96);
        assert_eq!(std::mem::size_of::<(Addr, u64)>(), 24);
        let v: u128 = (7u128 << 64) | 9;
        assert_eq!(u128::from(Addr::from(v)), v);
        assert_eq!(serde_json::to_string(&Addr::from(v)).unwrap(), serde_json::to_string(&v).unwrap());
        let back: Addr = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back, Addr::from(v));
        let mut pairs = [(u128::MAX, 1u128), (1 << 64, (1 << 64) - 1), (5, 3)];
        for (a, b) in &mut pairs {
            assert_eq!(Addr::from(*a).cmp(&Addr::from(*b)), a.cmp(&b), "{a} {b}");
        }
    }

    #[test]
    fn exact_while_distinct_values_fit() {
        let mut t = TopK::<u32, CAPACITY>::default();
        for round in 0..5u64 {
            for k in 0..CAPACITY as u32 {
                t.add(k, k as u64 + round);
            }
        }
        for k in 0..CAPACITY as u32 {
            assert_eq!(t.estimate(k), 5 * k as u64 + 10);
        }
        assert_eq!(t.top()[0], (CAPACITY as u32 - 1, 5 * (CAPACITY as u64 - 1) + 10));
        assert_eq!(t.total(), (0..CAPACITY as u64).map(|k| 5 * k + 10).sum::<u64>());
    }

    #[test]
    fn a_zero_weight_never_evicts() {
        let mut t = TopK::<u32, 2>::default();
        t.add(1, 5);
        t.add(2, 0);
        t.add(3, 0);
        assert_eq!(t.top(), vec![(1, 5), (2, 0)]);
    }

    #[test]
    fn the_heavy_hitter_survives_a_spray_of_one_off_addresses() {
        let mut t = TopK::<u128, CAPACITY>::default();
        let thief = 0xffff_cb00_714d_u128;
        for i in 0..5000u128 {
            t.add(0xffff_0a00_0000 + i, 1000);
            if i % 10 == 0 {
                t.add(thief, 2000);
            }
        }
        let total = 5000 * 1000 + 500 * 2000;
        assert_eq!(t.total(), total);
        let top = t.top();
        assert_eq!(top[0].0, thief);
        assert!(top[0].1 >= 500 * 2000 && top[0].1 <= 500 * 2000 + total / CAPACITY as u64, "{top:?}");
    }

    #[test]
    fn the_origin_window_keeps_the_heavy_hitter_through_a_spray() {
        let mut w = OriginWindow::default();
        let thief = 0xffff_cb00_7100_u128;
        for i in 0..5000i64 {
            let t = i * 500_000_000; // 5000 requests in 41 minutes
            w.add(t, 0xffff_0000_0000 + ((i as u128) << 8), 0xffff_0000_0001 + ((i as u128) << 8), 1000, HOUR);
            if i % 10 == 0 {
                w.add(t, thief, thief + 77, 3000, HOUR);
            }
        }
        assert_eq!(w.total(), 5000 * 1000 + 500 * 3000);
        let top = w.top(CAPACITY);
        assert_eq!((top[0].origin, top[0].top_address), (thief, Some(thief + 77)));
        assert!(top[0].bytes >= 500 * 3000 && top[0].bytes <= 500 * 3000 + w.error_bound());
        assert_eq!(top.iter().map(|o| o.bytes).sum::<u64>(), w.total());
        assert!(w.minutes.len() <= 42 * CAPACITY, "{} entries", w.minutes.len());
        assert!(w.is_consistent());
    }

    #[test]
    fn the_origin_window_is_exact_until_a_counter_inherits_bytes_in_the_window() {
        let mut w = OriginWindow::default();
        for o in 0..CAPACITY as u128 {
            w.add(o as i64 * MINUTE, o, o, 100, HOUR);
        }
        assert!(w.exact(), "one counter per origin");
        // A ninth origin takes over the smallest counter, whose 100 bytes are still inside.
        w.add(10 * MINUTE, 99, 99, 5, HOUR);
        assert!(!w.exact());
        // Once the inherited minutes have left the window, the counter holds only its own.
        w.add(80 * MINUTE, 99, 99, 5, HOUR);
        assert!(w.exact(), "{w:?}");
    }

    #[test]
    fn the_origin_window_slides_like_a_sliding_sum() {
        let mut w = OriginWindow::default();
        let mut s = crate::detect::SlidingSum::default();
        let adds = [(0, 1, 10), (30 * MINUTE, 2, 20), (59 * MINUTE + 1, 1, 5), (60 * MINUTE, 3, 1), (30, 4, 100)];
        for (t, o, b) in adds {
            w.add(t, o, o, b, HOUR);
            s.add(t, b, HOUR);
            assert_eq!(w.total(), s.sum());
        }
        // Origin 1's first 10 bytes left with minute 0; its 5 later ones stay.
        assert_eq!(w.top(9).iter().map(|o| (o.origin, o.bytes)).collect::<Vec<_>>(), vec![(2, 20), (1, 5), (3, 1)]);
        assert!(w.is_consistent());
        let mut bad = w.clone();
        bad.total += 1;
        assert!(!bad.is_consistent());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Against exact counts: the counts add up, every estimate is within the bound, every
        /// value above total / N is counted, and below N distinct values all are exact.
        #[test]
        fn space_saving_bounds(adds in proptest::collection::vec((0u32..20, 0u64..1000), 0..300)) {
            let mut t = TopK::<u32, CAPACITY>::default();
            let mut exact = std::collections::BTreeMap::<u32, u64>::new();
            for &(k, w) in &adds {
                t.add(k, w);
                *exact.entry(k).or_default() += w;
            }
            let total: u64 = exact.values().sum();
            prop_assert_eq!(t.total(), total);
            let bound = total / CAPACITY as u64;
            for (&k, &w) in &exact {
                let e = t.estimate(k);
                if e > 0 || w > bound {
                    prop_assert!(e >= w && e <= w + bound, "{} true {} est {} bound {}", k, w, e, bound);
                }
                if exact.len() <= CAPACITY {
                    prop_assert_eq!(e, w);
                }
            }
        }

        /// The window with its first minute inline is the window as it was kept in a
        /// `VecDeque` (`Plain`, the former `OriginWindow::add`): the same minutes, counters,
        /// listing and JSON after every read, in order, out of order, past the window and
        /// with more origins than counters.
        #[test]
        fn the_inline_minutes_are_the_plain_window(
            steps in proptest::collection::vec((-90i64..150, 0u64..4, 0u128..12, 0usize..3), 1..80),
        ) {
            let mut w = OriginWindow::default();
            let mut plain = Plain::default();
            let mut t = 1_000 * HOUR;
            for (half_minutes, bytes, origin, window) in steps {
                t += half_minutes * MINUTE / 2;
                let window = [MINUTE, HOUR, 3 * HOUR][window];
                w.add(t, origin, origin << 8, bytes, window);
                plain.add(t, origin, origin << 8, bytes, window);
                let json = serde_json::to_string(&w).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&json, &serde_json::to_string(&plain).map_err(|e| TestCaseError::fail(e.to_string()))?);
                prop_assert_eq!(w.total(), plain.total);
                prop_assert!(w.is_consistent());
                let back: OriginWindow = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&back, &w);
                prop_assert_eq!(back.top(CAPACITY), w.top(CAPACITY));
            }
        }
    }

    #[derive(Default, Serialize)]
    struct Plain {
        slots: Vec<OriginSlot>,
        minutes: std::collections::VecDeque<(i64, u8, u64)>,
        newest: Option<i64>,
        total: u64,
    }

    impl Plain {
        fn add(&mut self, t: Nanos, origin: u128, ip: u128, bytes: u64, window: Nanos) {
            let m = t.div_euclid(MINUTE);
            let span = (window / MINUTE).max(1);
            let newest = self.newest.map_or(m, |n| n.max(m));
            self.newest = Some(newest);
            while let Some(&(b, slot, v)) = self.minutes.front() {
                if b > newest - span {
                    break;
                }
                self.slots[slot as usize].bytes -= v;
                self.total -= v;
                self.minutes.pop_front();
            }
            if bytes == 0 || m <= newest - span {
                return;
            }
            let (origin, ip) = (Addr::from(origin), Addr::from(ip));
            let i = match self.slots.iter().position(|s| s.origin == origin) {
                Some(i) => i,
                None if self.slots.len() < CAPACITY => {
                    self.slots.push(OriginSlot { origin, ..OriginSlot::default() });
                    self.slots.len() - 1
                }
                None => {
                    let min = (0..self.slots.len()).min_by_key(|&i| self.slots[i].bytes).unwrap_or(0);
                    let s = &mut self.slots[min];
                    s.origin = origin;
                    s.addresses = TopK::default();
                    s.inherited_until = (s.bytes > 0).then_some(newest);
                    min
                }
            };
            let s = &mut self.slots[i];
            s.bytes += bytes;
            s.addresses.add(ip, bytes);
            self.total += bytes;
            let at = match self.minutes.back() {
                Some(last) if last.0 > m => self.minutes.partition_point(|e| e.0 <= m),
                _ => self.minutes.len(),
            };
            let mut j = at;
            while j > 0 && self.minutes[j - 1].0 == m {
                j -= 1;
                if self.minutes[j].1 as usize == i {
                    self.minutes[j].2 += bytes;
                    return;
                }
            }
            self.minutes.insert(at, (m, i as u8, bytes));
        }
    }
}
