//! Growth of the detector's small per-key collections. `Vec` and `VecDeque` give a first push
//! room for 4 elements (and double from there); most per-key windows and lists hold one or two
//! (a minute bucket, an origin slot, a day), and with 100,000 keys the unused room is most of
//! the state. These helpers grow them 1, 2, 4, 8, ... instead: the same amortised cost, no
//! room for elements that never come.

use std::collections::VecDeque;

/// Room for one more element in `v`, doubling from 1.
#[inline]
pub(crate) fn room_for_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
}

/// Room for one more element in `q`, doubling from 1.
#[inline]
pub(crate) fn room_for_one_in<T>(q: &mut VecDeque<T>) {
    if q.len() == q.capacity() {
        q.reserve_exact(q.len().max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_one_by_doubling() {
        let mut v: Vec<u64> = Vec::new();
        let mut q: VecDeque<u64> = VecDeque::new();
        let mut caps = Vec::new();
        for i in 0..9 {
            room_for_one(&mut v);
            v.push(i);
            room_for_one_in(&mut q);
            q.push_back(i);
            caps.push((v.capacity(), q.capacity()));
        }
        let want = [1, 2, 4, 4, 8, 8, 8, 8, 16];
        assert_eq!(caps.iter().map(|c| c.0).collect::<Vec<_>>(), want);
        assert_eq!(caps.iter().map(|c| c.1).collect::<Vec<_>>(), want);
    }
}
