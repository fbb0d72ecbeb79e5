//! `origin_spray` (high): more than `spray_origins` new origins for one key within
//! [`SPRAY_WINDOW`] of event time. A key is used from a handful of networks; hundreds of new
//! ones within an hour are an address spray (to hide a theft among them, or to fill the
//! detector's memory) or a key leaked far and wide. The count is of first requests from
//! origins the key does not know, so it is independent of `max_origins_per_key`: an origin
//! evicted from a full key and seen again counts again. Once per key per `realert` (each
//! re-alert a new id), escalating (critical) at each power of `escalation_factor` times the
//! threshold, like `unfamiliar_origins_aggregate`.

use super::state::{Spray, SprayState};
use super::*;
use crate::time::HOUR;

/// The window `spray_origins` counts new origins over.
pub const SPRAY_WINDOW: Nanos = HOUR;

impl Ctx {
    /// A new origin of `key` (its first request is `s`): counted, and `origin_spray` checked.
    pub(super) fn observe_new_origin(
        &mut self,
        account: &str,
        cred: Sym,
        key: &mut KeyState,
        s: &Sample,
        learning: bool,
        out: &mut Vec<Alert>,
    ) {
        let n = self.cfg.spray_origins;
        if n == 0 {
            return;
        }
        let t = s.time;
        let Some(sp) = add_new_origin(&mut key.spray, s) else { return }; // one: `n` is at least 1
        let count = sp.window.sum();
        if count <= n {
            return;
        }
        if let Some(m) = &mut sp.mark {
            if t - m.at >= self.cfg.realert.0 {
                m.level = 0;
                m.epoch += 1;
            }
        }
        let done = sp.mark.map_or(0, |m| m.level);
        let Some(level) = reached_level(count, n + 1, self.cfg.escalation_factor, done) else { return };
        let first_time = sp.evidence.first_time();
        let mark = sp.mark.get_or_insert(Mark::default());
        if mark.level == 0 {
            mark.since = sp.window.start().unwrap_or(t).min(first_time);
        }
        mark.level = level + 1;
        mark.at = t;
        let m = *mark;
        if learning {
            // Once per level, like an alert would be.
            self.stats.alerts_suppressed_learning += 1;
            return;
        }
        let a = self.spray_alert(account, cred, key, count, t, level, m);
        let Some(SprayState::Many(sp)) = key.spray.as_deref() else { return };
        self.emit(a, cred, key, allow::Subject::Spray(&sp.evidence.evidence()), t, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn spray_alert(&self, account: &str, cred: Sym, key: &KeyState, count: u64, t: Nanos, level: u8, m: Mark) -> Alert {
        let credential = self.syms.name(cred).to_string();
        let empty = Spray::default();
        let sp = match key.spray.as_deref() {
            Some(SprayState::Many(sp)) => sp,
            _ => &empty, // an alert is of a window of more than one origin
        };
        let ev = &*sp.evidence.evidence();
        // A sample of the new origins: the addresses whose first requests read the most.
        let origins: Vec<OriginRef> = ev
            .top_addresses(CAPACITY_SHOWN)
            .into_iter()
            .map(|(ip, _)| {
                let o = self.origin_of(ip_bits(ip));
                OriginRef {
                    ip: ip.to_string(),
                    prefix: self.origin_text(o),
                    observed_bytes: None,
                    info: Default::default(),
                }
            })
            .collect();
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{credential} of account {account} made its first request from {count} new origins in {} \
             (more than {} within {}; usual: {})",
            human_span(t - m.since),
            self.cfg.spray_origins,
            human_span(SPRAY_WINDOW),
            self.usual(&baseline)
        );
        Alert {
            id: alert_id(Rule::OriginSpray, account, &credential, "", m.since, level, m.epoch),
            rule: Rule::OriginSpray,
            severity: if level >= 1 { Severity::Critical } else { Severity::High },
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: None,
            origins: Some(origins),
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(m.since), end: format_rfc3339(t) },
            observed_bytes: ev.bytes,
            threshold_bytes: 0,
            escalation_level: level,
            baseline,
            evidence: self.evidence_out(ev, None, Some(count)),
            summary,
        }
    }
}

/// Counts a new origin whose first request is `s` in the key's window `slot`: the window with
/// more than one origin, or `None` while it holds one (its request alone, in place).
fn add_new_origin<'a>(slot: &'a mut Option<Box<SprayState>>, s: &Sample) -> Option<&'a mut Spray> {
    let minute = s.time.div_euclid(MINUTE);
    let slid_empty = |newest: i64| minute - newest >= SPRAY_WINDOW / MINUTE;
    if slot.is_none() {
        *slot = Some(Box::new(SprayState::One(*s)));
        return None;
    }
    let state = slot.as_deref_mut()?;
    if let SprayState::One(first) = state {
        if slid_empty(first.time.div_euclid(MINUTE)) {
            *first = *s; // a new count of one
            return None;
        }
        *state = SprayState::Many(Spray::of_one(first));
    }
    let SprayState::Many(sp) = state else { return None };
    if sp.window.newest_minute().is_none_or(slid_empty) {
        sp.evidence = Gathered::default(); // the window slid empty: a new count
    }
    sp.window.add(s.time, 1, SPRAY_WINDOW);
    sp.evidence.add(s);
    Some(sp)
}

/// Addresses an `origin_spray` alert shows (its evidence sketch holds that many).
const CAPACITY_SHOWN: usize = sketch::CAPACITY;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(time: Nanos, ip: u8) -> Sample {
        Sample { time, ip: Some(u128::from(ip)), bytes: u64::from(ip) * 10, op: 1, ua: 2, db: 3, coll: 4, activity: 5 }
    }

    proptest! {
        /// The window held as one request while it has one origin is the window the plain
        /// [`Spray`] keeps, after every new origin: in order, out of order, and after gaps that
        /// slide it empty.
        #[test]
        fn the_window_of_one_is_the_plain_window(
            steps in proptest::collection::vec((-70i64..140, any::<u8>()), 1..40),
        ) {
            let mut slot = None;
            let mut plain = Spray::default();
            let mut t = 1_000 * HOUR;
            for (minutes, ip) in steps {
                t += minutes * MINUTE / 2;
                let s = sample(t, ip);
                // The window as it was kept before `SprayState`.
                if plain.window.newest_minute().is_none_or(|m| t.div_euclid(MINUTE) - m >= SPRAY_WINDOW / MINUTE) {
                    plain.evidence = Gathered::default();
                }
                plain.window.add(t, 1, SPRAY_WINDOW);
                plain.evidence.add(&s);
                let many = add_new_origin(&mut slot, &s).map(|sp| sp.window.sum());
                match many {
                    Some(count) => prop_assert_eq!(count, plain.window.sum()),
                    None => prop_assert_eq!(plain.window.sum(), 1),
                }
                let Some(state) = slot.as_deref() else { return Err(TestCaseError::fail("no window")) };
                prop_assert_eq!(&Spray::from(state.clone()), &plain);
                // Written as the plain window, and read back as the same window.
                let json = serde_json::to_string(state).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&json, &serde_json::to_string(&plain).map_err(|e| TestCaseError::fail(e.to_string()))?);
                let back: SprayState = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&back, state);
            }
        }
    }
}
