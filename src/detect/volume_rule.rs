//! `volume_anomaly`, in [`Ctx::check_volume`]: the key's bytes in the sliding `volume_window`
//! against the threshold fitted to its daily peaks (`volume.rs`); and its alert.

use super::*;

impl Ctx {
    pub(super) fn check_volume(
        &mut self,
        account: &str,
        cred: Sym,
        key: &mut KeyState,
        t: Nanos,
        learning: bool,
        out: &mut Vec<Alert>,
    ) {
        let Some(model) = key.history.model().copied() else {
            return;
        };
        let cfg = &self.cfg;
        if let Some(m) = &mut key.volume_mark {
            if t - m.at >= cfg.realert.0 {
                m.level = 0;
                m.epoch += 1;
            }
        }
        let done = key.volume_mark.as_ref().map_or(0, |m| m.level);
        let Some(level) = reached_level(key.volume.sum(), model.threshold, cfg.escalation_factor, done) else {
            return;
        };
        if learning {
            self.stats.alerts_suppressed_learning += 1;
            return;
        }
        let mark = key.volume_mark.get_or_insert_with(Default::default);
        if mark.level == 0 {
            mark.since = key.volume.start().unwrap_or(t);
        }
        mark.level = level + 1;
        mark.at = t;
        let m = **mark;
        let a = self.volume_alert(account, cred, key, &model, t, level, m);
        self.emit(a, cred, key, allow::Subject::Window, t, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn volume_alert(
        &self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        model: &PeakModel,
        t: Nanos,
        level: u8,
        m: Mark,
    ) -> Alert {
        let credential = self.syms.name(cred).to_string();
        let mut ev = Evidence::default();
        if let Some(w) = &key.window_evidence {
            ev.merge(&w.1.evidence());
            ev.merge(&w.2.evidence());
        }
        let observed = key.volume.sum();
        // Origins of the sliding window by bytes, each shown by the address in it that read the most.
        let (origins, other_bytes) = self.window_origins(key.volume_origins.as_deref(), observed, 10);
        let baseline = self.baseline(key, t, Some(model.p_value(observed)));
        let ratio = observed as f64 / model.typical_peak().max(1) as f64;
        let summary = format!(
            "{credential} of account {account} read {} within {}, {:.0}x its typical {} peak of {} (usual: {})",
            human_bytes(observed),
            human_span(self.cfg.volume_window.0),
            ratio,
            model.basis.noun(),
            human_bytes(model.typical_peak()),
            self.usual(&baseline)
        );
        Alert {
            id: alert_id(Rule::VolumeAnomaly, account, &credential, "", m.since, level, m.epoch),
            rule: Rule::VolumeAnomaly,
            severity: if level >= 1 { Severity::High } else { Severity::Medium },
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: None,
            origins: Some(origins),
            other_bytes: Some(other_bytes),
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(key.volume.start().unwrap_or(t)), end: format_rfc3339(t) },
            observed_bytes: observed,
            threshold_bytes: model.threshold,
            escalation_level: level,
            baseline,
            evidence: self.volume_evidence(key, &ev, None, None, t),
            summary,
        }
    }
}
