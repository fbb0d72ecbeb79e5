//! The bound on the whole state (`max_state_bytes`): past it, [`Detector::bound_state`] evicts
//! keys, least recently seen first, down to [`LOW_WATER_PERCENT`] of it.
//!
//! Which keys go first: eviction forgets a key's origins, so its next read from a familiar
//! origin looks new (a possible false alarm), and forgets the bytes it read from unfamiliar
//! origins (a possible miss). Misses cost more, so keys are evicted in classes, each least
//! recently seen first (ties by account, then credential name: deterministic):
//! 1. keys without evidence of a theft in progress;
//! 2. keys with it: an origin still unfamiliar that holds itemized evidence (it read at least
//!    1/1024 of `unfamiliar_bytes`), or at least that much read from unfamiliar origins within
//!    `aggregate_window`;
//! 3. keys with an origin judged malicious (which the sweep never forgets either).
//!
//! A spray of many small keys is evicted before the key that reads the data, however recently
//! the spray's keys were used. The estimate is [`DetectorStats::state_bytes`].

use super::*;

/// Eviction stops once the estimate is at or below this share of `max_state_bytes`, so that
/// it runs once per tenth of the bound of growth, not on every event.
pub const LOW_WATER_PERCENT: u64 = 90;

/// An eviction more than this much event time after the previous one starts a new spell.
const SPELL_GAP: Nanos = crate::time::HOUR;

impl KeyState {
    /// Eviction class (see the module doc): 0 evicted first.
    fn eviction_class(&self, now: Nanos, cfg: &DetectConfig) -> u8 {
        let mut class = 0;
        if self.unfamiliar.sum() >= cfg.unfamiliar_bytes.0 / origin_rules::EVIDENCE_SHARE {
            class = 1;
        }
        for (k, o) in &self.origins {
            match o.verdict {
                Some(VerdictKind::Malicious) => return 2,
                _ if self.origins.evidence(&k).is_some() && o.unfamiliar_at(now, cfg.familiar_after.0) => class = 1,
                _ => {}
            }
        }
        class
    }
}

impl Detector {
    /// Evicts keys while the state's estimate is above `max_state_bytes` (0: never). Called
    /// at the end of every public method that processes events.
    pub(super) fn bound_state(&mut self) {
        let cap = self.ctx.cfg.max_state_bytes.0;
        if cap == 0 || self.ctx.stats.state_bytes() <= cap {
            return;
        }
        let low = cap / 100 * LOW_WATER_PERCENT;
        let mut names: Vec<&NameKey> = self.accounts.keys().collect();
        names.sort();
        let cfg = &self.ctx.cfg;
        let mut order: Vec<(u8, Nanos, usize, Sym)> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let acct = &self.accounts[*name];
            for (cred, k) in &acct.keys {
                order.push((k.eviction_class(acct.max_time, cfg), k.last_seen, i, cred));
            }
        }
        let syms = &self.ctx.syms;
        order.sort_unstable_by(|a, b| {
            (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)).then_with(|| syms.name(a.3).cmp(syms.name(b.3)))
        });
        let names: Vec<NameKey> = names.into_iter().cloned().collect();
        let stats = &mut self.ctx.stats;
        let mut touched = vec![false; names.len()];
        for (_, _, i, cred) in order {
            if stats.state_bytes() <= low {
                break;
            }
            let Some(acct) = self.accounts.get_mut(&names[i]) else { continue };
            if let Some(k) = acct.keys.remove(&cred) {
                stats.keys_tracked -= 1;
                stats.origins_tracked -= k.origins.len() as u64;
                stats.keys_evicted += 1;
                touched[i] = true;
            }
        }
        // A hash table keeps its capacity when entries leave: give back what the evicted keys
        // held (their table slots), or the account keeps paying for them.
        for (_, name) in names.iter().enumerate().filter(|(i, _)| touched[*i]) {
            if let Some(acct) = self.accounts.get_mut(name) {
                acct.keys.shrink_to_fit();
            }
        }
        let now = self.ctx.newest;
        if self.ctx.last_eviction.is_none_or(|at| now - at > SPELL_GAP) {
            stats.eviction_spells += 1;
        }
        self.ctx.last_eviction = Some(now);
    }
}

/// A key the bound may evict, as [`Detector::eviction_candidates`] lists it: what orders it
/// among the keys of several detectors (replay's shards, `src/replay/shards.rs`) exactly as
/// [`Detector::bound_state`] orders the keys of one: class, last seen, account name, credential
/// name. Keys of one account are in one detector, so the credential's place among them is its
/// `rank` in its detector's list (no name is copied).
#[derive(Clone, Debug)]
pub struct EvictionCandidate {
    pub class: u8,
    pub last_seen: Nanos,
    pub account: NameKey,
    /// Place in this detector's list, ordered like [`EvictionCandidate::order`] with the
    /// credential's name last.
    pub rank: u32,
    /// What evicting it takes off [`DetectorStats::state_bytes`].
    pub bytes: u64,
    cred: Sym,
}

impl EvictionCandidate {
    /// The eviction order (first evicted first).
    pub fn order(&self, other: &EvictionCandidate) -> std::cmp::Ordering {
        (self.class, self.last_seen, &self.account, self.rank).cmp(&(
            other.class,
            other.last_seen,
            &other.account,
            other.rank,
        ))
    }
}

impl Detector {
    /// Every key, as a candidate for eviction, in eviction order. For a caller that bounds
    /// the state of several detectors together; one detector bounds itself
    /// (`max_state_bytes`).
    pub fn eviction_candidates(&self) -> Vec<EvictionCandidate> {
        let cfg = &self.ctx.cfg;
        let mut out = Vec::with_capacity(self.ctx.stats.keys_tracked as usize);
        for (name, acct) in &self.accounts {
            for (cred, k) in &acct.keys {
                out.push(EvictionCandidate {
                    class: k.eviction_class(acct.max_time, cfg),
                    last_seen: k.last_seen,
                    account: name.clone(),
                    rank: 0,
                    bytes: KEY_BYTES + k.origins.len() as u64 * ORIGIN_BYTES,
                    cred,
                });
            }
        }
        let syms = &self.ctx.syms;
        out.sort_unstable_by(|a, b| {
            (a.class, a.last_seen, &a.account)
                .cmp(&(b.class, b.last_seen, &b.account))
                .then_with(|| syms.name(a.cred).cmp(syms.name(b.cred)))
        });
        for (i, c) in out.iter_mut().enumerate() {
            c.rank = u32::try_from(i).unwrap_or(u32::MAX);
        }
        out
    }

    /// Evicts these keys (from this detector's [`Detector::eviction_candidates`]), counted in
    /// `keys_evicted`; the caller counts spells.
    pub fn evict(&mut self, keys: &[EvictionCandidate]) {
        let stats = &mut self.ctx.stats;
        let mut touched: Vec<&NameKey> = Vec::new();
        for c in keys {
            let Some(acct) = self.accounts.get_mut(&c.account) else { continue };
            if let Some(k) = acct.keys.remove(&c.cred) {
                stats.keys_tracked -= 1;
                stats.origins_tracked -= k.origins.len() as u64;
                stats.keys_evicted += 1;
                touched.push(&c.account);
            }
        }
        touched.sort();
        touched.dedup();
        for name in touched {
            if let Some(acct) = self.accounts.get_mut(name) {
                acct.keys.shrink_to_fit();
            }
        }
    }

    /// The newest event time processed (any account): the clock of eviction spells.
    pub fn newest_processed(&self) -> Nanos {
        self.ctx.newest
    }

    /// Sets `max_state_bytes` (0: this detector never evicts; a caller bounds it, see
    /// [`Detector::eviction_candidates`]).
    pub fn set_max_state_bytes(&mut self, bytes: u64) {
        self.ctx.cfg.max_state_bytes = crate::units::ByteSize(bytes);
    }
}
