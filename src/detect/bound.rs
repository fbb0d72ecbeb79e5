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
        for o in self.origins.values() {
            match o.verdict {
                Some(VerdictKind::Malicious) => return 2,
                _ if o.evidence.is_some() && o.unfamiliar_at(now, cfg.familiar_after.0) => class = 1,
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
            for (&cred, k) in &acct.keys {
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
        // held (KeyState is stored inline), or the account keeps paying for them.
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
