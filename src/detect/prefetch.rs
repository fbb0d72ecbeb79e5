//! Hints to bring the state an event will use into cache before it is used
//! ([`Detector::prefetch_account`], [`Detector::prefetch_keys`], [`Detector::prefetch_windows`]).
//!
//! With many accounts each event reads state last touched hours of event time earlier: its
//! account's slot, the event waiting in the account's reorder queue (the one the new event
//! releases), the account's keys (the hourly pass reads them all), the windows they hold in
//! boxes of their own, and the origins of the waiting event's key. Each is a cache miss, and
//! each address is read from the one before, so one event's misses cannot overlap. A caller
//! that holds the next events (replay's shards take their items in runs or batches) asks for
//! them a few events ahead, in three steps, each reading what the one before brought in:
//! the account (its look-up's own loads, waited for) and prefetches of its queue and key
//! list; prefetches of the keys and of the waiting event's origins; prefetches of the keys'
//! windows. The misses then overlap with the work of the events in between.
//!
//! Hints only: nothing here changes the state, so the output is the same with them or without.

use super::Detector;

/// Asks the CPU to bring the cache line at `p` in, without waiting for it; a no-op off x86-64.
#[inline(always)]
fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`line`] for every cache line of `*p`.
#[inline(always)]
fn all_lines<T>(p: *const T) {
    let bytes = p.cast::<u8>();
    for off in (0..std::mem::size_of::<T>()).step_by(64) {
        line(bytes.wrapping_add(off));
    }
}

/// Keys of an account whose boxes are prefetched, at most (most accounts have one to four).
const KEYS: usize = 4;

impl Detector {
    /// The first step for an event of `account`, some events before it is ingested: finds
    /// the account (waiting for its slot) and prefetches the event at the front of its queue
    /// and its list of keys.
    pub fn prefetch_account(&self, account: &str) {
        if let Some(acct) = self.accounts.get(account.as_bytes()) {
            if let Some(q) = acct.queue.front() {
                line(q);
            }
            if let Some(first) = acct.keys.first_slot() {
                line(first);
            }
        }
    }

    /// The second step, nearer to the event: prefetches the boxes of the account's keys (the
    /// hourly pass reads them all) and the origins of the key of the event at the front of
    /// the queue.
    pub fn prefetch_keys(&self, account: &str) {
        let Some(acct) = self.accounts.get(account.as_bytes()) else { return };
        for (_, k) in acct.keys.iter().take(KEYS) {
            all_lines(k);
        }
        if let Some(k) = acct.queue.front().and_then(|q| acct.keys.get(&q.cred)) {
            let (origins, entries) = k.origins.arrays();
            line(origins);
            line(entries);
        }
    }

    /// The third step, just before the event: prefetches what the keys hold in boxes of their
    /// own (the windows the hourly pass drops once a key is idle).
    pub fn prefetch_windows(&self, account: &str) {
        let Some(acct) = self.accounts.get(account.as_bytes()) else { return };
        for (_, k) in acct.keys.iter().take(KEYS) {
            if let Some(w) = &k.unfamiliar_origins {
                line(&**w);
            }
            if let Some(w) = &k.volume_origins {
                line(&**w);
            }
            if let Some(w) = &k.window_evidence {
                line(&**w);
            }
            if let Some(w) = &k.spray {
                line(&**w);
            }
        }
    }
}
