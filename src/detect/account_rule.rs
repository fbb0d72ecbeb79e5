//! `unfamiliar_origin_account_volume`, in [`Ctx::observe_account_origin`]: one origin no key of
//! the account knows, read by several of its keys, each below the threshold and together above
//! it; and its alert.

use super::*;

/// Keys named per account-level origin; reads by further keys still count in its bytes.
const ACCOUNT_ORIGIN_KEYS: usize = 16;

impl Ctx {
    /// `unfamiliar_origin_account_volume`: one origin that no key of the account knows, read
    /// by several of its keys, each below the threshold and together above it (a thief who
    /// spreads a theft over the keys he holds).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe_account_origin(
        &mut self,
        account: &str,
        acct: &mut AccountState,
        cred: Sym,
        origin: OriginKey,
        s: &Sample,
        learning: bool,
        out: &mut Vec<Alert>,
    ) {
        let (t, familiar_after) = (s.time, self.cfg.familiar_after.0);
        if acct.keys.len() < 2 {
            return; // one key: its own rules see everything
        }
        let Some(ko) = acct.keys.get(&cred).and_then(|k| k.origins.get(&origin)) else { return };
        if t >= ko.first_seen + familiar_after || ko.verdict.is_some() {
            return; // familiar to this key, or judged by an analyst
        }
        if acct.unfamiliar.len() >= self.cfg.max_origins_per_key && !acct.unfamiliar.contains_key(&origin) {
            acct.unfamiliar.expire(t, familiar_after);
            if acct.unfamiliar.len() >= self.cfg.max_origins_per_key {
                return; // bounded: a spray this wide trips unfamiliar_origins_aggregate
            }
        }
        let keys = &acct.keys;
        let fresh = || {
            let familiar = keys
                .iter()
                .any(|(c, k)| c != cred && k.origins.get(&origin).is_some_and(|o| t >= o.first_seen + familiar_after));
            Tally::new(t, cred, familiar)
        };
        let (tally, made) = acct.unfamiliar.get_or_insert_with(origin, fresh);
        if !made && t >= tally.first_seen() + familiar_after {
            // Its tally is over: a read by a key that still finds the origin unfamiliar
            // starts a new one now, not once a sweep has dropped the old.
            *tally = fresh();
        }
        if tally.familiar() {
            return;
        }
        // One key so far: its own rules see everything.
        let Some(entry) = tally.add(cred, s.bytes, ACCOUNT_ORIGIN_KEYS) else { return };
        if entry.keys.len() < 2 {
            return;
        }
        let (thr, factor, realert) = (self.cfg.unfamiliar_bytes.0, self.cfg.escalation_factor, self.cfg.realert.0);
        if entry.mark_level > 0 && t - entry.mark_at >= realert {
            entry.mark_level = 0;
            entry.mark_epoch = entry.mark_epoch.wrapping_add(1);
        }
        let Some(level) = reached_level(entry.bytes, thr, factor, entry.mark_level) else { return };
        if level == 0 && entry.keys.iter().any(|&(_, b)| b >= thr) {
            return; // one key explains it: unfamiliar_origin_volume covers that
        }
        if learning {
            self.stats.alerts_suppressed_learning += 1;
            return;
        }
        entry.mark_level = level + 1;
        entry.mark_at = t;
        let entry = entry.clone();
        let Some(key) = acct.keys.get(&cred) else { return };
        let a = self.account_origin_alert(account, key, origin, &entry, s, level);
        self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
    }

    fn account_origin_alert(
        &self,
        account: &str,
        key: &KeyState,
        origin: OriginKey,
        entry: &AccountOrigin,
        s: &Sample,
        level: u8,
    ) -> Alert {
        let t = s.time;
        let ev = key.origins.evidence(&origin);
        let origin_ref = self.origin_ref(origin, ev, s.ip);
        // The keys by bytes, ties by name; the alert's credential is the one that read the most.
        let mut keys: Vec<(String, u64)> =
            entry.keys.iter().map(|&(c, b)| (self.syms.name(c).to_string(), b)).collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let credential = keys.first().map_or_else(String::new, |k| k.0.clone());
        let listed = keys.iter().map(|(c, b)| format!("{c} {}", human_bytes(*b))).collect::<Vec<_>>().join(", ");
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{} keys of account {account} read {} in {} from {} ({listed}), an origin no key of the account \
             ever used, none of them above {} alone (usual: {})",
            keys.len(),
            human_bytes(entry.bytes),
            human_span(t - entry.first_seen),
            origin_ref.ip,
            human_bytes(self.cfg.unfamiliar_bytes.0),
            self.usual(&baseline)
        );
        let origin_text = origin_ref.prefix.clone();
        let mut evidence = self.evidence_out(ev.unwrap_or(&Evidence::default()), Some(entry.first_seen), None);
        evidence.credentials = Some(keys.iter().map(|(c, b)| NameCount { name: c.clone(), count: *b }).collect());
        Alert {
            id: alert_id(
                Rule::UnfamiliarOriginAccountVolume,
                account,
                "",
                &origin_text,
                entry.first_seen,
                level,
                entry.mark_epoch,
            ),
            rule: Rule::UnfamiliarOriginAccountVolume,
            severity: if level >= 1 { Severity::Critical } else { Severity::High },
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(entry.first_seen), end: format_rfc3339(t) },
            observed_bytes: entry.bytes,
            threshold_bytes: self.cfg.unfamiliar_bytes.0,
            escalation_level: level,
            baseline,
            evidence,
            summary,
        }
    }
}
