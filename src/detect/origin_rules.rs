//! The origin rules of a key, in [`Ctx::observe_origin`]: `new_origin` (the first request from
//! an origin), `unfamiliar_origin_volume` (bytes read from one origin since its first request)
//! and `unfamiliar_origins_aggregate` (bytes from all unfamiliar origins in the
//! `aggregate_window`, none above the threshold alone); and their alerts.

use super::*;

/// An unfamiliar origin keeps itemized evidence once it has read this share of
/// `unfamiliar_bytes` (1 MiB of the default 1 GiB).
pub(super) const EVIDENCE_SHARE: u64 = 1024;

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe_origin(
        &mut self,
        account: &str,
        cred: Sym,
        key: &mut KeyState,
        origin: OriginKey,
        s: &Sample,
        learning: bool,
        out: &mut Vec<Alert>,
    ) -> bool {
        let t = s.time;
        let cfg = &self.cfg;
        if key.origins.len() >= cfg.max_origins_per_key && !key.origins.contains_key(&origin) {
            // Evict the least recently seen sixteenth at once: amortized O(log n) per insert.
            // Origins holding evidence of a theft in progress last (bound.rs: misses cost more).
            let mut by_age: Vec<(bool, Nanos, OriginKey)> =
                key.origins.iter().map(|(k, v)| (key.origins.evidence(&k).is_some(), v.last_seen, k)).collect();
            by_age.sort_unstable();
            let n = (cfg.max_origins_per_key / 16).max(1).min(by_age.len());
            for (_, _, k) in &by_age[..n] {
                key.origins.remove(k);
            }
            self.stats.origins_evicted += n as u64;
            self.stats.origins_tracked -= n as u64;
        }
        let (entry, mut is_new) = key.origins.get_or_insert_with(origin, || OriginEntry::new(t));
        let forgotten = !is_new && t - entry.last_seen > cfg.history_window.0;
        if is_new {
            self.stats.origins_tracked += 1;
        } else if forgotten {
            // Unused for the whole history window: forgotten, new again.
            *entry = OriginEntry::new(t);
            is_new = true;
        }
        if is_new && !self.verdicts.is_empty() {
            entry.verdict = self.verdicts.kind(account, self.syms.name(cred), origin);
        }
        entry.first_seen = entry.first_seen.min(t);
        entry.last_seen = entry.last_seen.max(t);
        entry.bytes += s.bytes;
        entry.requests = entry.requests.saturating_add(1);
        let (malicious, bytes) = (entry.verdict == Some(VerdictKind::Malicious), entry.bytes);
        let (unfamiliar, marked) = verdict::unfamiliar_now(cfg, &mut self.stats, entry, t);
        if forgotten {
            // Its time of last alert and its evidence go with it.
            key.origins.forget_cold(&origin);
        }
        if marked {
            key.origins.set_mark_at(origin, t);
        }
        if !unfamiliar {
            key.origins.drop_evidence(&origin);
            return false;
        }
        // Door keeper: itemized evidence only once an origin has read a 1/1024 share of the
        // threshold. Most new origins are one-off and small; they never pay for it.
        let mut created = false;
        let has_evidence = key.origins.evidence(&origin).is_some();
        if has_evidence || bytes >= cfg.unfamiliar_bytes.0 / EVIDENCE_SHARE {
            created = !has_evidence;
            key.origins.evidence_or_new(origin).add(s);
        }
        key.unfamiliar.add(t, s.bytes, cfg.aggregate_window.0);
        if let Some(ip) = s.ip {
            let w = key.unfamiliar_origins.get_or_insert_with(Default::default);
            w.add(t, origin, ip, s.bytes, cfg.aggregate_window.0);
        }
        if malicious {
            self.malicious_read(account, cred, key, origin, s, out);
        }
        let cfg = &self.cfg;

        if is_new && cfg.new_origin {
            if learning {
                self.stats.alerts_suppressed_learning += 1;
            } else {
                let a = self.new_origin_alert(account, cred, key, origin, s);
                self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
            }
        }
        if is_new {
            self.observe_new_origin(account, cred, key, s, learning, out);
        }

        // unfamiliar_origin_volume: cumulative bytes since the origin's first request.
        let cfg = &self.cfg;
        let mark_at = key.origins.mark_at(&origin);
        let Some(entry) = key.origins.get_mut(&origin) else {
            return created;
        };
        let thr = cfg.unfamiliar_bytes.0;
        if entry.mark_level > 0 && t - mark_at >= cfg.realert.0 {
            entry.mark_level = 0;
            entry.mark_epoch = entry.mark_epoch.wrapping_add(1);
        }
        // A malicious origin raises malicious_origin instead (verdict.rs).
        let level = reached_level(entry.bytes, thr, cfg.escalation_factor, entry.mark_level).filter(|_| !malicious);
        if let Some(level) = level {
            if learning {
                self.stats.alerts_suppressed_learning += 1;
            } else {
                entry.mark_level = level + 1;
                key.origins.set_mark_at(origin, t);
                let a = self.origin_volume_alert(account, cred, key, origin, s, level);
                self.emit(a, cred, key, allow::Subject::Origin(origin), t, out);
            }
        }

        // unfamiliar_origins_aggregate: all unfamiliar origins within the window.
        let cfg = &self.cfg;
        let sum = key.unfamiliar.sum();
        if sum < thr {
            return created;
        }
        if let Some(m) = &mut key.aggregate_mark {
            if t - m.at >= cfg.realert.0 {
                m.level = 0;
                m.epoch += 1;
            }
        }
        let done = key.aggregate_mark.as_ref().map_or(0, |m| m.level);
        let Some(level) = reached_level(sum, thr, cfg.escalation_factor, done) else {
            return created;
        };
        let minute = t.div_euclid(MINUTE);
        if key.aggregate_checked_minute == minute {
            return created; // evaluated this minute already: bounded work per key
        }
        key.aggregate_checked_minute = minute;
        let since = t - cfg.aggregate_window.0;
        let mut contributing: Vec<(u64, OriginKey)> = key
            .origins
            .iter()
            .filter(|(_, o)| o.last_seen > since && o.unfamiliar_at(t, cfg.familiar_after.0))
            .map(|(k, o)| (o.bytes, k))
            .collect();
        if contributing.len() < 2 || contributing.iter().any(|&(b, _)| b >= thr) {
            return created; // one origin explains it: unfamiliar_origin_volume covers that
        }
        if learning {
            self.stats.alerts_suppressed_learning += 1;
            return created;
        }
        contributing.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mark = key.aggregate_mark.get_or_insert_with(Default::default);
        if mark.level == 0 {
            mark.since = key.unfamiliar.start().unwrap_or(since);
        }
        mark.level = level + 1;
        mark.at = t;
        let m = **mark;
        let a = self.aggregate_alert(account, cred, key, &contributing, t, level, m);
        self.emit(a, cred, key, allow::Subject::Origins(&contributing), t, out);
        created
    }

    // ---- alert construction (cold path) ----

    fn severity_for_origin(&self, cred: Sym, level: u8, t: Nanos, first_seen: Nanos) -> Severity {
        let rw_master = {
            let c = self.syms.name(cred);
            c == "key:primarymasterkey" || c == "key:secondarymasterkey"
        };
        if level >= 1 || (rw_master && t - first_seen <= self.cfg.critical_fast_window.0) {
            Severity::Critical
        } else {
            Severity::High
        }
    }

    fn new_origin_alert(&self, account: &str, cred: Sym, key: &KeyState, origin: OriginKey, s: &Sample) -> Alert {
        let t = s.time;
        let credential = self.syms.name(cred).to_string();
        let mut first = Evidence::default();
        first.add(s);
        let ev = Some(&first);
        let origin_ref = self.origin_ref(origin, ev, s.ip);
        let epoch = key.origins.get(&origin).map_or(0, |o| o.mark_epoch);
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{credential} of account {account} made its first request from {} ({}) (usual: {})",
            origin_ref.ip,
            origin_ref.prefix,
            self.usual(&baseline)
        );
        let origin_text = origin_ref.prefix.clone();
        Alert {
            id: alert_id(Rule::NewOrigin, account, &credential, &origin_text, t, 0, epoch as u32),
            rule: Rule::NewOrigin,
            severity: Severity::Info,
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(t), end: format_rfc3339(t) },
            observed_bytes: ev.map_or(0, |e| e.bytes),
            threshold_bytes: 0,
            escalation_level: 0,
            baseline,
            evidence: self.evidence_out(&first, Some(t), None),
            summary,
        }
    }

    fn origin_volume_alert(
        &self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        origin: OriginKey,
        s: &Sample,
        level: u8,
    ) -> Alert {
        let t = s.time;
        let credential = self.syms.name(cred).to_string();
        let (first_seen, bytes, epoch, ev, requests) = match key.origins.get(&origin) {
            Some(o) => (o.first_seen, o.bytes, o.mark_epoch, key.origins.evidence(&origin), o.requests as u64),
            None => (t, 0, 0, None, 0),
        };
        let origin_ref = self.origin_ref(origin, ev, s.ip);
        let baseline = self.baseline(key, t, None);
        let (addresses, all) = ev.map_or((1, true), |e| (e.addresses.len(), !e.addresses.is_full()));
        let from = if addresses > 1 {
            let at_least = if all { "" } else { "at least " };
            format!("{} and {at_least}{} other addresses in {}", origin_ref.ip, addresses - 1, origin_ref.prefix)
        } else {
            origin_ref.ip.clone()
        };
        let summary = format!(
            "{credential} of account {account} read {} in {} from {from}, an origin this key never used (usual: {})",
            human_bytes(bytes),
            human_span(t - first_seen),
            self.usual(&baseline)
        );
        let origin_text = origin_ref.prefix.clone();
        Alert {
            id: alert_id(
                Rule::UnfamiliarOriginVolume,
                account,
                &credential,
                &origin_text,
                first_seen,
                level,
                epoch as u32,
            ),
            rule: Rule::UnfamiliarOriginVolume,
            severity: self.severity_for_origin(cred, level, t, first_seen),
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(first_seen), end: format_rfc3339(t) },
            observed_bytes: bytes,
            threshold_bytes: self.cfg.unfamiliar_bytes.0,
            escalation_level: level,
            baseline,
            evidence: self.volume_evidence(
                key,
                ev.unwrap_or(&Evidence::default()),
                Some(first_seen),
                Some(requests),
                t,
            ),
            summary,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate_alert(
        &self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        contributing: &[(u64, OriginKey)],
        t: Nanos,
        level: u8,
        m: Mark,
    ) -> Alert {
        let credential = self.syms.name(cred).to_string();
        let mut merged = Evidence::default();
        let mut requests = 0u64;
        for &(_, o) in contributing {
            requests += key.origins.get(&o).map_or(0, |e| e.requests as u64);
            if let Some(ev) = key.origins.evidence(&o) {
                merged.merge(ev);
            }
        }
        let observed = key.unfamiliar.sum();
        // By bytes in the window, like observed_bytes (not since each origin's first request).
        let (origins, other_bytes) = self.window_origins(key.unfamiliar_origins.as_deref(), observed, 20);
        let baseline = self.baseline(key, t, None);
        let summary = format!(
            "{credential} of account {account} read {} in {} from {} origins it never used, none above {} alone (usual: {})",
            human_bytes(observed),
            human_span(t - m.since),
            contributing.len(),
            human_bytes(self.cfg.unfamiliar_bytes.0),
            self.usual(&baseline)
        );
        Alert {
            id: alert_id(Rule::UnfamiliarOriginsAggregate, account, &credential, "", m.since, level, m.epoch),
            rule: Rule::UnfamiliarOriginsAggregate,
            severity: if level >= 1 { Severity::Critical } else { Severity::High },
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: None,
            origins: Some(origins),
            other_bytes: Some(other_bytes),
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(m.since), end: format_rfc3339(t) },
            observed_bytes: observed,
            threshold_bytes: self.cfg.unfamiliar_bytes.0,
            escalation_level: level,
            baseline,
            evidence: self.volume_evidence(key, &merged, None, Some(requests), t),
            summary,
        }
    }
}
