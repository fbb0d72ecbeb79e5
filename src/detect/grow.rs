//! Growth of the detector's small per-key collections. `Vec` and `VecDeque` give a first push
//! room for 4 elements and double from there; most per-key windows and lists hold one or two
//! (a minute bucket, an origin slot, a day), and with 100,000 keys the unused room is most of
//! the state. These helpers grow them by half from one instead (1, 2, 3, 4, 6, 9, 13, 19, 28,
//! 42, ...): amortised constant cost all the same, and a quarter of the room unused on average
//! rather than a third (a key's 35 days of volume history take 42 slots, not 64).

use std::collections::VecDeque;

/// How many more elements a full collection of `len` makes room for.
#[inline]
pub(crate) fn growth(len: usize) -> usize {
    (len / 2).max(1)
}

/// Room for one more element in `v`, growing by half.
#[inline]
pub(crate) fn room_for_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(growth(v.len()));
    }
}

/// Room for one more element in `v` (a `SmallVec` past its inline room), growing by half.
#[inline]
pub(crate) fn room_for_one_small<A: smallvec::Array>(v: &mut smallvec::SmallVec<A>) {
    if v.len() == v.capacity() {
        v.reserve_exact(growth(v.len()));
    }
}

/// Room for one more element in `q`, growing by half.
#[inline]
pub(crate) fn room_for_one_in<T>(q: &mut VecDeque<T>) {
    if q.len() == q.capacity() {
        q.reserve_exact(growth(q.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_one_by_half() {
        let mut v: Vec<u64> = Vec::new();
        let mut q: VecDeque<u64> = VecDeque::new();
        let mut caps = Vec::new();
        for i in 0..20 {
            room_for_one(&mut v);
            v.push(i);
            room_for_one_in(&mut q);
            q.push_back(i);
            caps.push((v.capacity(), q.capacity()));
        }
        let want = [1, 2, 3, 4, 6, 6, 9, 9, 9, 13, 13, 13, 13, 19, 19, 19, 19, 19, 19, 28];
        assert_eq!(caps.iter().map(|c| c.0).collect::<Vec<_>>(), want);
        assert_eq!(caps.iter().map(|c| c.1).collect::<Vec<_>>(), want);
    }
}
