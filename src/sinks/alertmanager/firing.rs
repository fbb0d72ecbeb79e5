//! The firing set: the alerts this sink has posted that still fire in Alertmanager, by label
//! set, and the bookkeeping of when each is due to be re-sent or resolved (sans-IO: every
//! decision takes `now`). [`FiringSnapshot`] is what the service saves of it in checkpoints.

use super::payload::{annotations, labels, nanos_since_epoch, PostableAlert};
use super::{AlertmanagerError, AlertmanagerOptions, ENDS_AT_RESENDS, MAX_FIRING};
use crate::alert::Alert;
use crate::time::{format_rfc3339, parse_timestamp, Nanos};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// One firing alert as this sink keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Firing {
    pub(super) labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// Of the newest alert merged into this one.
    alert_id: String,
    /// Event time: the earliest trigger time of the alerts merged into this one.
    starts_at: Nanos,
    /// Event time at which it resolves: the newest trigger time plus `realert`.
    resolve_at: Nanos,
    /// Wall time of the first post Alertmanager accepted.
    first_sent: Option<SystemTime>,
    /// Wall time of the last post Alertmanager accepted.
    last_sent: Option<SystemTime>,
    /// Changed since the last accepted post (new, or merged with a newer alert).
    pub(super) dirty: bool,
    /// [`AlertmanagerSink::resolve`](super::AlertmanagerSink::resolve) was called for it.
    resolve_requested: bool,
}

/// The firing set and the event-time progress, to save with the service's state and restore
/// after a restart (so that alerts keep being re-sent and are resolved in time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FiringSnapshot {
    pub(super) event_time: Nanos,
    pub(super) alerts: Vec<Firing>,
}

impl FiringSnapshot {
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

/// The sans-IO part: which alerts fire, which are due to be posted or resolved at a time.
#[derive(Debug)]
pub(super) struct FiringSet {
    /// By label set (Alertmanager's identity of an alert), in a canonical string form.
    pub(super) alerts: BTreeMap<String, Firing>,
    pub(super) event_time: Nanos,
    resend_interval: Duration,
    realert: Nanos,
    min_firing: Duration,
    capacity: usize,
    warned_full: bool,
}

/// Alertmanager's identity of an alert: its label set.
pub(super) fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut key = String::new();
    for (k, v) in labels {
        key.push_str(k);
        key.push('\u{1f}');
        key.push_str(v);
        key.push('\u{1e}');
    }
    key
}

impl FiringSet {
    pub(super) fn new(opts: &AlertmanagerOptions) -> Self {
        FiringSet {
            alerts: BTreeMap::new(),
            event_time: Nanos::MIN,
            resend_interval: opts.resend_interval,
            realert: opts.realert,
            min_firing: opts.min_firing,
            capacity: MAX_FIRING,
            warned_full: false,
        }
    }

    /// Adds an alert (or merges it into the firing one with the same labels); returns its key.
    pub(super) fn upsert(&mut self, alert: &Alert) -> Result<String, AlertmanagerError> {
        let trigger = parse_timestamp(&alert.trigger_event_time).ok_or_else(|| AlertmanagerError::InvalidAlert {
            id: alert.id.clone(),
            reason: format!("trigger_event_time {:?} is not a time stamp", alert.trigger_event_time),
        })?;
        self.event_time = self.event_time.max(trigger);
        let labels = labels(alert);
        let key = fingerprint(&labels);
        let resolve_at = trigger.saturating_add(self.realert);
        if let Some(f) = self.alerts.get_mut(&key) {
            if f.alert_id != alert.id {
                f.annotations = annotations(alert);
                f.alert_id = alert.id.clone();
                f.starts_at = f.starts_at.min(trigger);
                f.resolve_at = f.resolve_at.max(resolve_at);
                f.dirty = true;
                f.resolve_requested = false;
            }
            return Ok(key);
        }
        if self.alerts.len() >= self.capacity {
            self.forget_soonest_due();
        }
        self.alerts.insert(
            key.clone(),
            Firing {
                labels,
                annotations: annotations(alert),
                alert_id: alert.id.clone(),
                starts_at: trigger,
                resolve_at,
                first_sent: None,
                last_sent: None,
                dirty: true,
                resolve_requested: false,
            },
        );
        Ok(key)
    }

    /// At capacity: the alert that would resolve first is dropped without a resolution post;
    /// Alertmanager resolves it by its `endsAt` within four resend intervals.
    fn forget_soonest_due(&mut self) {
        let soonest = self.alerts.iter().min_by_key(|(_, f)| (f.resolve_at, f.starts_at)).map(|(k, _)| k.clone());
        if let Some(k) = soonest {
            self.alerts.remove(&k);
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    message = "Alertmanager sink: too many firing alerts; forgetting those due soonest.",
                    capacity = self.capacity
                );
            }
        }
    }

    fn resolution_due(&self, f: &Firing, now: SystemTime) -> bool {
        let Some(first) = f.first_sent else { return false };
        let shown_long_enough = now >= first.checked_add(self.min_firing).unwrap_or(first);
        shown_long_enough && (f.resolve_requested || self.event_time >= f.resolve_at)
    }

    fn resend_due(&self, f: &Firing, now: SystemTime) -> bool {
        f.dirty
            || match f.last_sent {
                None => true,
                Some(t) => now >= t.checked_add(self.resend_interval).unwrap_or(t),
            }
    }

    /// (keys to resolve, keys to post as firing) at `now`.
    pub(super) fn due(&self, now: SystemTime) -> (Vec<String>, Vec<String>) {
        let mut resolve = Vec::new();
        let mut resend = Vec::new();
        for (k, f) in &self.alerts {
            if self.resolution_due(f, now) {
                resolve.push(k.clone());
            } else if self.resend_due(f, now) {
                resend.push(k.clone());
            }
        }
        (resolve, resend)
    }

    pub(super) fn mark_sent(&mut self, keys: &[String], now: SystemTime) {
        for k in keys {
            if let Some(f) = self.alerts.get_mut(k) {
                f.first_sent.get_or_insert(now);
                f.last_sent = Some(now);
                f.dirty = false;
            }
        }
    }

    /// Marks the alerts of (account, credential, origin) for resolution; returns how many.
    pub(super) fn request_resolution(&mut self, account: &str, credential: &str, origin: &str) -> usize {
        let mut n = 0;
        for f in self.alerts.values_mut() {
            let is = |name: &str, want: &str| f.labels.get(name).is_some_and(|v| v == want);
            if is("account", account) && is("credential", credential) && is("origin", origin) {
                f.resolve_requested = true;
                n += 1;
            }
        }
        n
    }

    /// The Alertmanager form of the alerts `keys`: firing until `now + 4 resends`, or resolved
    /// at `now`.
    pub(super) fn postable(&self, keys: &[String], now: SystemTime, resolved: bool) -> Vec<PostableAlert<'_>> {
        let now_ns = nanos_since_epoch(now);
        let firing_for = i64::try_from(self.resend_interval.as_nanos().saturating_mul(u128::from(ENDS_AT_RESENDS)))
            .unwrap_or(i64::MAX);
        keys.iter()
            .filter_map(|k| self.alerts.get(k))
            .map(|f| {
                // Never before startsAt, which Alertmanager rejects (a trigger time ahead of
                // this machine's clock).
                let base = now_ns.max(f.starts_at);
                let ends = if resolved { base } else { base.saturating_add(firing_for) };
                PostableAlert {
                    labels: &f.labels,
                    annotations: &f.annotations,
                    starts_at: format_rfc3339(f.starts_at),
                    ends_at: format_rfc3339(ends),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, opts, theft, trigger};
    use super::*;
    use crate::time::{HOUR, MINUTE};
    use std::time::UNIX_EPOCH;

    #[test]
    fn firing_alerts_are_resent_each_interval_and_resolve_after_realert_of_event_time() {
        let mut s = FiringSet::new(&opts());
        let k = s.upsert(&theft()).unwrap();
        assert_eq!(s.due(at(0)), (vec![], vec![k.clone()]), "new: posted at once");
        s.mark_sent(std::slice::from_ref(&k), at(0));
        assert_eq!(s.due(at(59)), (vec![], vec![]));
        assert_eq!(s.due(at(60)), (vec![], vec![k.clone()]), "re-sent after resend_interval");
        s.mark_sent(std::slice::from_ref(&k), at(60));

        // Event time moves to just before trigger + realert: still firing.
        s.event_time = trigger() + 24 * HOUR - 1;
        assert_eq!(s.due(at(600)).0, Vec::<String>::new());
        s.event_time = trigger() + 24 * HOUR;
        assert_eq!(s.due(at(600)), (vec![k.clone()], vec![]));
        // But never before min_firing (300 s) of wall time since the first accepted post.
        assert_eq!(s.due(at(299)), (vec![], vec![k.clone()]));
    }

    #[test]
    fn an_alert_never_accepted_is_not_resolved_only_posted() {
        let mut s = FiringSet::new(&opts());
        let k = s.upsert(&theft()).unwrap();
        s.event_time = Nanos::MAX;
        s.request_resolution("contoso", "key:primarymasterkey", "203.0.113.0/24");
        assert_eq!(s.due(at(10_000)), (vec![], vec![k]));
    }

    #[test]
    fn resolve_marks_only_the_key_and_origin() {
        let mut s = FiringSet::new(&opts());
        let k = s.upsert(&theft()).unwrap();
        let mut other = theft();
        other.id = "other".into();
        other.credential = "key:secondarymasterkey".into();
        let k2 = s.upsert(&other).unwrap();
        s.mark_sent(&[k.clone(), k2.clone()], at(0));
        assert_eq!(s.request_resolution("contoso", "key:primarymasterkey", "198.51.100.0/24"), 0);
        assert_eq!(s.request_resolution("contoso", "key:primarymasterkey", "203.0.113.0/24"), 1);
        assert_eq!(s.due(at(300)), (vec![k], vec![k2]));
    }

    #[test]
    fn the_same_labels_merge_keeping_the_first_start() {
        let mut s = FiringSet::new(&opts());
        let k = s.upsert(&theft()).unwrap();
        s.mark_sent(std::slice::from_ref(&k), at(0));
        assert_eq!(s.upsert(&theft()).unwrap(), k);
        assert!(!s.alerts[&k].dirty, "the same alert again changes nothing");
        let mut esc = theft();
        esc.id = "escalated".into();
        esc.escalation_level = 1;
        esc.trigger_event_time = "2021-08-17T03:00:00Z".into();
        assert_eq!(s.upsert(&esc).unwrap(), k);
        let f = &s.alerts[&k];
        assert!(f.dirty);
        assert_eq!(f.alert_id, "escalated");
        assert_eq!(f.annotations["alert_id"], "escalated");
        assert_eq!(f.starts_at, trigger());
        assert_eq!(f.resolve_at, parse_timestamp("2021-08-18T03:00:00Z").unwrap());
        assert_eq!(s.alerts.len(), 1);
    }

    #[test]
    fn postable_times() {
        let mut s = FiringSet::new(&opts());
        let k = s.upsert(&theft()).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let firing = s.postable(std::slice::from_ref(&k), now, false);
        assert_eq!(firing[0].starts_at, "2021-08-17T02:21:04.0501146Z");
        assert_eq!(firing[0].ends_at, format_rfc3339(1_700_000_000 * 1_000_000_000 + 4 * MINUTE));
        let resolved = s.postable(std::slice::from_ref(&k), now, true);
        assert_eq!(resolved[0].ends_at, format_rfc3339(1_700_000_000 * 1_000_000_000));
        // A trigger time ahead of the clock: endsAt never before startsAt.
        let early = s.postable(std::slice::from_ref(&k), UNIX_EPOCH, true);
        assert_eq!(early[0].ends_at, early[0].starts_at);
        let v = serde_json::to_value(&firing).unwrap();
        assert!(v[0].get("startsAt").is_some() && v[0].get("endsAt").is_some(), "{v}");
    }

    #[test]
    fn at_capacity_the_soonest_due_is_forgotten() {
        let mut s = FiringSet::new(&opts());
        s.capacity = 2;
        for (i, t) in ["2021-08-17T05:00:00Z", "2021-08-17T01:00:00Z", "2021-08-17T03:00:00Z"].iter().enumerate() {
            let mut a = theft();
            a.id = format!("a{i}");
            a.account = format!("acct{i}");
            a.trigger_event_time = (*t).into();
            s.upsert(&a).unwrap();
        }
        let mut ids: Vec<_> = s.alerts.values().map(|f| f.alert_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a0", "a2"]);
    }

    #[test]
    fn a_bad_trigger_time_is_an_invalid_alert() {
        let mut s = FiringSet::new(&opts());
        let mut a = theft();
        a.trigger_event_time = "yesterday".into();
        let e = s.upsert(&a).unwrap_err();
        assert!(matches!(e, AlertmanagerError::InvalidAlert { .. }) && !e.is_retryable(), "{e}");
    }
}
