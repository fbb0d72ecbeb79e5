//! Analysts' verdicts on alerts: an input like the logs.
//!
//! A [`Verdict`] names an alert and carries what it needs to apply: account, credential,
//! origin and the event time it takes effect (the alert's trigger time). Who recorded it and
//! when (wall clock) are informational only. [`Detector::apply_verdict`] applies it in event
//! time: the account's queued records older than the verdict are processed first, every
//! record at or after it meets the verdict. Replay merges the verdicts file into the stream
//! by event time; the service applies each verdict when it is consumed.
//!
//! - `benign`: the origin is familiar to the key from then on (its evidence is dropped, no
//!   further origin alert). A rule level the origin then reaches while it would still have been
//!   new by time is counted as suppressed (`verdict_benign`) instead of alerting.
//! - `malicious`: the origin never becomes familiar and is never forgotten by the sweep while
//!   the verdict stands, and every successful read from it raises `malicious_origin`
//!   (critical), once per `realert` of event time (each re-alert a new id).
//!
//! A later verdict on the same (account, credential, origin) replaces an earlier one. The
//! verdicts are part of the detector's state: snapshots and models carry them.

use super::origin_map::OriginMap;
use super::*;
use crate::time::parse_timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    Benign,
    Malicious,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Benign => "benign",
            VerdictKind::Malicious => "malicious",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "benign" => Some(VerdictKind::Benign),
            "malicious" => Some(VerdictKind::Malicious),
            _ => None,
        }
    }
}

/// One verdict as written to the verdicts file and topic (one JSON object per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The alert it judges.
    pub alert_id: String,
    /// The alert's rule (informational).
    #[serde(default)]
    pub rule: String,
    pub verdict: VerdictKind,
    pub account: String,
    pub credential: String,
    /// The origin as the alert shows it (`203.0.113.0/24`).
    pub origin: String,
    /// RFC 3339 event time from which it applies (the alert's trigger time).
    pub effective_time: String,
    #[serde(default)]
    pub note: String,
    /// Who recorded it (informational).
    #[serde(default)]
    pub recorded_by: String,
    /// When it was recorded, wall clock (informational).
    #[serde(default)]
    pub recorded_at: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerdictError {
    #[error("not a verdict: {0}")]
    Malformed(String),
    #[error("verdict on alert {id}: effective_time {time:?} is not an RFC 3339 time")]
    Time { id: String, time: String },
    #[error("verdict on alert {id}: origin {origin:?} is not an address or network")]
    Origin { id: String, origin: String },
    #[error(
        "alert {id} is a volume_anomaly: it is about how much a key reads, not where from, so a verdict \
         cannot name its origin; allowlist the credential ([allow] credentials) instead"
    )]
    NoOrigin { id: String },
}

impl Verdict {
    /// Parses one line of a verdicts file.
    pub fn parse_line(line: &str) -> Result<Verdict, VerdictError> {
        let v: Verdict = serde_json::from_str(line).map_err(|e| VerdictError::Malformed(e.to_string()))?;
        v.check()?;
        Ok(v)
    }

    /// Its event time and origin network, checked.
    pub fn check(&self) -> Result<(Nanos, u128), VerdictError> {
        let t = parse_timestamp(&self.effective_time)
            .ok_or_else(|| VerdictError::Time { id: self.alert_id.clone(), time: self.effective_time.clone() })?;
        let bits =
            match allow::parse_cidr(&self.origin).map(|(b, _)| b).or_else(|| rules::parse_as_origin(&self.origin)) {
                Some(b) => b,
                None => self
                    .origin
                    .trim()
                    .parse::<IpAddr>()
                    .map(ip_bits)
                    .map_err(|_| VerdictError::Origin { id: self.alert_id.clone(), origin: self.origin.clone() })?,
            };
        Ok((t, bits))
    }

    /// The event time it takes effect, for ordering (`Nanos::MIN` when unparsable: such a
    /// verdict is refused by [`Verdict::parse_line`] anyway).
    pub fn time(&self) -> Nanos {
        parse_timestamp(&self.effective_time).unwrap_or(Nanos::MIN)
    }

    /// The verdicts an analyst's judgement of `alert` makes: one for an alert about one
    /// origin; one per listed origin for `unfamiliar_origins_aggregate`; none for
    /// `volume_anomaly` (an error). `recorded_at` is the caller's wall clock.
    pub fn from_alert(
        alert: &Alert,
        kind: VerdictKind,
        note: &str,
        recorded_by: &str,
        recorded_at: &str,
    ) -> Result<Vec<Verdict>, VerdictError> {
        let origins: Vec<&OriginRef> = match (alert.rule, &alert.origin, &alert.origins) {
            (Rule::VolumeAnomaly, ..) => return Err(VerdictError::NoOrigin { id: alert.id.clone() }),
            (_, Some(o), _) => vec![o],
            (_, None, Some(list)) if !list.is_empty() => list.iter().collect(),
            _ => return Err(VerdictError::NoOrigin { id: alert.id.clone() }),
        };
        Ok(origins
            .into_iter()
            .map(|o| Verdict {
                alert_id: alert.id.clone(),
                rule: alert.rule.as_str().to_string(),
                verdict: kind,
                account: alert.account.clone(),
                credential: alert.credential.clone(),
                origin: o.prefix.clone(),
                effective_time: alert.trigger_event_time.clone(),
                note: note.to_string(),
                recorded_by: recorded_by.to_string(),
                recorded_at: recorded_at.to_string(),
            })
            .collect())
    }
}

/// A verdict in force, as the detector keeps it (and a model stores it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRow {
    pub account: String,
    pub credential: String,
    /// The origin under the detector's granularity (`203.0.113.0/24`).
    pub origin: String,
    pub verdict: VerdictKind,
    pub effective: Nanos,
    pub alert_id: String,
    pub note: String,
    /// `malicious_origin` dedup: when it last alerted, and its re-alert count.
    pub alerted_at: Option<Nanos>,
    pub epoch: u32,
    /// Bytes read from the origin since the verdict.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Standing {
    account: String,
    credential: String,
    origin: OriginKey,
    kind: VerdictKind,
    effective: Nanos,
    alert_id: String,
    note: String,
    alerted_at: Option<Nanos>,
    epoch: u32,
    bytes: u64,
}

/// The verdicts in force, sorted by (account, credential, origin): lookups by binary search,
/// output in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Verdicts {
    list: Vec<Standing>,
}

impl Verdicts {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn find(&self, account: &str, cred: &str, origin: OriginKey) -> Result<usize, usize> {
        self.list
            .binary_search_by(|s| (s.account.as_str(), s.credential.as_str(), s.origin).cmp(&(account, cred, origin)))
    }

    pub(super) fn kind(&self, account: &str, cred: &str, origin: OriginKey) -> Option<VerdictKind> {
        self.find(account, cred, origin).ok().map(|i| self.list[i].kind)
    }
}

impl OriginEntry {
    /// Whether the origin is unfamiliar at `t` (time since first use, overridden by a verdict).
    pub(super) fn unfamiliar_at(&self, t: Nanos, familiar_after: Nanos) -> bool {
        match self.verdict {
            Some(VerdictKind::Malicious) => true,
            Some(VerdictKind::Benign) => false,
            None => t < self.first_seen + familiar_after,
        }
    }
}

/// [`OriginEntry::unfamiliar_at`] for the origin rules, at the moment a request updated the
/// entry: a benign origin that would still be new by time and reaches a rule level is counted
/// as a suppressed alert (once per level). Also whether it was: the caller then marks the
/// time of that alert (`OriginMap::set_mark_at`).
pub(super) fn unfamiliar_now(
    cfg: &DetectConfig,
    stats: &mut DetectorStats,
    e: &mut OriginEntry,
    t: Nanos,
) -> (bool, bool) {
    let mut marked = false;
    if e.verdict == Some(VerdictKind::Benign) && t < e.first_seen + cfg.familiar_after.0 {
        if let Some(level) = reached_level(e.bytes, cfg.unfamiliar_bytes.0, cfg.escalation_factor, e.mark_level) {
            stats.suppressed.verdict_benign += 1;
            e.mark_level = level + 1;
            marked = true;
        }
    }
    (e.unfamiliar_at(t, cfg.familiar_after.0), marked)
}

impl Ctx {
    /// A successful read from an origin with a malicious verdict: `malicious_origin`, once per
    /// `realert` of event time. Neither the learning period nor the allowlist hold it back.
    pub(super) fn malicious_read(
        &mut self,
        account: &str,
        cred: Sym,
        key: &KeyState,
        origin: OriginKey,
        s: &Sample,
        out: &mut Vec<Alert>,
    ) {
        let t = s.time;
        let realert = self.cfg.realert.0;
        let Ok(i) = self.verdicts.find(account, self.syms.name(cred), origin) else { return };
        let v = &mut self.verdicts.list[i];
        v.bytes = v.bytes.saturating_add(s.bytes);
        match v.alerted_at {
            Some(at) if t - at < realert => return,
            Some(_) => v.epoch += 1,
            None => {}
        }
        v.alerted_at = Some(t);
        let v = v.clone();
        let credential = self.syms.name(cred).to_string();
        let mut first = Evidence::default();
        first.add(s);
        let origin_ref = self.origin_ref(origin, Some(&first), s.ip);
        let first_seen = key.origins.get(&origin).map_or(t, |o| o.first_seen);
        let baseline = self.baseline(key, t, None);
        let note = if v.note.is_empty() { String::new() } else { format!(": {}", v.note) };
        let summary = format!(
            "{credential} of account {account} read {} from {} ({}), an origin an analyst judged malicious \
             (alert {}{note}); {} read from it since the verdict",
            human_bytes(s.bytes),
            origin_ref.ip,
            origin_ref.prefix,
            v.alert_id,
            human_bytes(v.bytes)
        );
        let origin_text = origin_ref.prefix.clone();
        out.push(Alert {
            id: alert_id(Rule::MaliciousOrigin, account, &credential, &origin_text, v.effective, 0, v.epoch),
            rule: Rule::MaliciousOrigin,
            severity: Severity::Critical,
            account: account.to_string(),
            resource: None, // stamped by `Ctx::process`
            credential,
            origin: Some(origin_ref),
            origins: None,
            other_bytes: None,
            trigger_event_time: format_rfc3339(t),
            window: Window { start: format_rfc3339(v.effective), end: format_rfc3339(t) },
            observed_bytes: v.bytes,
            threshold_bytes: 0,
            escalation_level: 0,
            baseline,
            evidence: self.evidence_out(&first, Some(first_seen), None),
            summary,
        });
    }

    fn set_verdict(&mut self, row: Standing) {
        match self.verdicts.find(&row.account, &row.credential, row.origin) {
            Ok(i) => self.verdicts.list[i] = row,
            Err(i) => self.verdicts.list.insert(i, row),
        }
    }
}

/// The origins of the key (account, credential), when the detector has that key and `origin`
/// among them.
fn origins_with<'a>(
    accounts: &'a mut FxHashMap<NameKey, AccountState>,
    syms: &Interner,
    account: &str,
    cred: &str,
    origin: OriginKey,
) -> Option<&'a mut OriginMap> {
    let c = syms.get(cred)?;
    let origins = &mut accounts.get_mut(account.as_bytes())?.keys.get_mut(&c)?.origins;
    origins.contains_key(&origin).then_some(origins)
}

impl Detector {
    /// Applies a verdict at its event time: the account's queued records older than it are
    /// processed first (their alerts go to `out`), then the verdict holds for every record
    /// at or after it. See the module documentation for what each verdict does.
    pub fn apply_verdict(&mut self, v: &Verdict, out: &mut Vec<Alert>) -> Result<(), VerdictError> {
        let (t, bits) = v.check()?;
        let origin = self.ctx.origin_of(bits);
        let account = v.account.as_str();
        if let Some(acct) = self.accounts.get_mut(account.as_bytes()) {
            while acct.queue.front().is_some_and(|q| q.time < t) {
                self.ctx.release_next(account, acct, out);
            }
        }
        self.ctx.set_verdict(Standing {
            account: account.to_string(),
            credential: v.credential.clone(),
            origin,
            kind: v.verdict,
            effective: t,
            alert_id: v.alert_id.clone(),
            note: v.note.clone(),
            alerted_at: None,
            epoch: 0,
            bytes: 0,
        });
        self.ctx.stats.verdicts_applied += 1;
        if let Some(origins) = origins_with(&mut self.accounts, &self.ctx.syms, account, &v.credential, origin) {
            if let Some(e) = origins.get_mut(&origin) {
                e.verdict = Some(v.verdict);
            }
            if v.verdict == VerdictKind::Benign {
                origins.drop_evidence(&origin);
            }
        }
        self.bound_state();
        Ok(())
    }

    /// The verdicts in force, sorted by account, credential, origin.
    pub fn verdicts(&self) -> Vec<VerdictRow> {
        self.ctx
            .verdicts
            .list
            .iter()
            .map(|s| VerdictRow {
                account: s.account.clone(),
                credential: s.credential.clone(),
                origin: self.ctx.origin_text(s.origin),
                verdict: s.kind,
                effective: s.effective,
                alert_id: s.alert_id.clone(),
                note: s.note.clone(),
                alerted_at: s.alerted_at,
                epoch: s.epoch,
                bytes: s.bytes,
            })
            .collect()
    }

    /// Loads verdicts rows (a model's) and marks the origins they name.
    pub(super) fn load_verdicts(&mut self, rows: Vec<VerdictRow>) -> Result<(), LearnedStateError> {
        for r in rows {
            let bits = allow::parse_cidr(&r.origin).map(|(b, _)| b).or_else(|| rules::parse_as_origin(&r.origin));
            let bits = bits.ok_or_else(|| {
                LearnedStateError::Invalid(format!("verdict on {:?}: origin is not a network", r.origin))
            })?;
            let origin = self.ctx.origin_of(bits);
            let origins = origins_with(&mut self.accounts, &self.ctx.syms, &r.account, &r.credential, origin);
            if let Some(e) = origins.and_then(|m| m.get_mut(&origin)) {
                e.verdict = Some(r.verdict);
            }
            self.ctx.set_verdict(Standing {
                account: r.account,
                credential: r.credential,
                origin,
                kind: r.verdict,
                effective: r.effective,
                alert_id: r.alert_id,
                note: r.note,
                alerted_at: r.alerted_at,
                epoch: r.epoch,
                bytes: r.bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ev;
    use super::*;
    use crate::time::{HOUR, MINUTE};

    const MIB: u64 = 1 << 20;
    const CRED: &str = "key:primaryreadonlymasterkey";
    const THIEF: &str = "203.0.113.77";

    fn t0() -> Nanos {
        parse_timestamp("2021-08-01T00:00:00Z").unwrap()
    }

    fn cfg() -> DetectConfig {
        DetectConfig { learning_period: crate::units::Span(0), volume_anomaly: false, ..Default::default() }
    }

    /// Two days from a familiar origin, then 2 GiB from the thief within 30 minutes (one alert
    /// at 1 GiB), then `later`.
    fn stream(later: &[(Nanos, u64)]) -> Vec<Event<'static>> {
        let mut evs: Vec<Event<'static>> =
            (0..48).map(|h| ev(t0() + h * HOUR, "contoso", CRED, "10.0.0.5", 10 * MIB)).collect();
        let start = t0() + 48 * HOUR;
        evs.extend((0..512).map(|i| ev(start + i * (30 * MINUTE / 512), "contoso", CRED, THIEF, 4 * MIB)));
        evs.extend(later.iter().map(|&(t, b)| ev(t, "contoso", CRED, THIEF, b)));
        evs
    }

    /// Feeds the events, applying each verdict before the first event at or after its time
    /// (as replay merges them).
    fn replay(d: &mut Detector, evs: &[Event<'static>], verdicts: &[Verdict]) -> Vec<Alert> {
        let mut out = Vec::new();
        let mut vs = verdicts.iter().peekable();
        for e in evs {
            while let Some(v) = vs.next_if(|v| v.time() <= e.time) {
                d.apply_verdict(v, &mut out).unwrap();
            }
            d.ingest(e, &mut out);
        }
        for v in vs {
            d.apply_verdict(v, &mut out).unwrap();
        }
        d.finish(&mut out);
        out
    }

    /// The alert of the plain run and a verdict of `kind` on it.
    fn judged(kind: VerdictKind) -> (Alert, Verdict) {
        let alerts = replay(&mut Detector::new(cfg()), &stream(&[]), &[]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let v = Verdict::from_alert(&alerts[0], kind, "ticket 42", "ana", "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].origin, "203.0.113.0/24");
        (alerts[0].clone(), v[0].clone())
    }

    #[test]
    fn benign_makes_the_origin_familiar_and_stops_re_alerts() {
        let (alert, v) = judged(VerdictKind::Benign);
        let trigger = parse_timestamp(&alert.trigger_event_time).unwrap();
        // 9 more GiB from the thief within the hour: without the verdict, an escalation.
        let later: Vec<(Nanos, u64)> = (1..=36).map(|i| (trigger + i * MINUTE, 256 * MIB)).collect();
        let plain = replay(&mut Detector::new(cfg()), &stream(&later), &[]);
        assert_eq!(plain.len(), 2, "{plain:?}");
        assert_eq!(plain[1].escalation_level, 1);

        // The verdict recorded after the first alert, applied when the stream reaches it.
        let mut d = Detector::new(cfg());
        let alerts = replay(&mut d, &stream(&later), std::slice::from_ref(&v));
        assert!(alerts.is_empty(), "the verdict applies from the alert's own trigger on: {alerts:?}");
        assert_eq!(d.stats().verdicts_applied, 1);
        // Each level it reached while new by time is counted as suppressed: 1 GiB and 10 GiB.
        assert_eq!(d.stats().suppressed.verdict_benign, 2);
        assert_eq!(d.verdicts()[0].verdict, VerdictKind::Benign);
    }

    #[test]
    fn malicious_re_raises_critical_on_a_later_small_read_once_per_realert() {
        let (alert, v) = judged(VerdictKind::Malicious);
        let trigger = parse_timestamp(&alert.trigger_event_time).unwrap();
        // Three days later (familiar by time long since), 1 KiB; again a minute later; again
        // 25 h later; and 40 days later (idle beyond history_window: would be forgotten).
        let later = [
            (trigger + 72 * HOUR, 1024),
            (trigger + 72 * HOUR + MINUTE, 1024),
            (trigger + 97 * HOUR, 1024),
            (trigger + 40 * 24 * HOUR, 1024),
        ];
        let plain = replay(&mut Detector::new(cfg()), &stream(&later), &[]);
        assert_eq!(plain.len(), 1, "{plain:?}");

        let mut d = Detector::new(cfg());
        let alerts = replay(&mut d, &stream(&later), std::slice::from_ref(&v));
        // malicious_origin replaces the origin's volume alert.
        assert!(alerts.iter().all(|a| a.rule == Rule::MaliciousOrigin), "{alerts:#?}");
        let mal: Vec<&Alert> = alerts.iter().filter(|a| a.rule == Rule::MaliciousOrigin).collect();
        // The trigger record itself (at the verdict's time), then 72 h, 97 h and 40 days on.
        assert_eq!(mal.len(), 4, "{alerts:#?}");
        assert!(mal.iter().all(|a| a.severity == Severity::Critical));
        assert_eq!(mal[0].trigger_event_time, alert.trigger_event_time);
        assert_eq!(mal[1].trigger_event_time, format_rfc3339(trigger + 72 * HOUR));
        assert_eq!(mal[2].trigger_event_time, format_rfc3339(trigger + 97 * HOUR));
        assert_eq!(mal[3].trigger_event_time, format_rfc3339(trigger + 40 * 24 * HOUR));
        let mut ids: Vec<&str> = mal.iter().map(|a| a.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4);
        assert!(
            mal[1].summary.contains("judged malicious") && mal[1].summary.contains("ticket 42"),
            "{}",
            mal[1].summary
        );
        assert_eq!(mal[1].origin.as_ref().map(|o| o.prefix.as_str()), Some("203.0.113.0/24"));
    }

    #[test]
    fn verdicts_survive_snapshot_and_model() {
        let (alert, v) = judged(VerdictKind::Malicious);
        let trigger = parse_timestamp(&alert.trigger_event_time).unwrap();
        let mut d = Detector::new(cfg());
        let first = replay(&mut d, &stream(&[]), std::slice::from_ref(&v));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].rule, Rule::MaliciousOrigin);
        let small = ev(trigger + 72 * HOUR, "contoso", CRED, THIEF, 1024);
        let continued = |mut d: Detector| {
            let mut out = Vec::new();
            d.ingest(&small, &mut out);
            d.finish(&mut out);
            out
        };
        let direct = continued(d.clone());
        assert_eq!(direct.len(), 1);
        assert_eq!(direct[0].rule, Rule::MaliciousOrigin);
        let restored = Detector::restore(&d.snapshot().unwrap()).unwrap();
        assert_eq!(restored.verdicts(), d.verdicts());
        assert_eq!(continued(restored), direct);
        let model = d.export_model().unwrap();
        assert_eq!(model.verdicts, d.verdicts());
        let loaded = Detector::from_model(model, cfg()).unwrap();
        assert_eq!(continued(loaded), direct);
    }

    #[test]
    fn replay_merge_equals_applying_it_while_later_records_still_wait() {
        let (alert, v) = judged(VerdictKind::Malicious);
        let trigger = parse_timestamp(&alert.trigger_event_time).unwrap();
        let later = [(trigger + 2 * MINUTE, 1024), (trigger + 72 * HOUR, 1024)];
        let evs = stream(&later);
        let merged = replay(&mut Detector::new(cfg()), &evs, std::slice::from_ref(&v));
        // Streaming: the verdict arrives after records up to 5 minutes past its time were
        // ingested (they wait in the reorder queue), as a consumed verdict would.
        let mut d = Detector::new(cfg());
        let mut out = Vec::new();
        let mut applied = false;
        for e in &evs {
            if !applied && e.time > trigger + 5 * MINUTE {
                d.apply_verdict(&v, &mut out).unwrap();
                applied = true;
            }
            d.ingest(e, &mut out);
        }
        d.finish(&mut out);
        assert_eq!(out, merged);
        assert!(merged.iter().any(|a| a.rule == Rule::MaliciousOrigin));
    }

    #[test]
    fn volume_anomaly_has_no_origin_to_judge_and_bad_lines_are_refused() {
        let (mut alert, _) = judged(VerdictKind::Benign);
        alert.rule = Rule::VolumeAnomaly;
        let err = Verdict::from_alert(&alert, VerdictKind::Benign, "", "", "").unwrap_err();
        assert!(matches!(err, VerdictError::NoOrigin { .. }), "{err}");
        assert!(matches!(Verdict::parse_line("{\"alert_id\": 1}"), Err(VerdictError::Malformed(_))));
        let (_, v) = judged(VerdictKind::Benign);
        let mut bad = v.clone();
        bad.effective_time = "yesterday".into();
        let line = serde_json::to_string(&bad).unwrap();
        assert!(matches!(Verdict::parse_line(&line), Err(VerdictError::Time { .. })));
        let line = serde_json::to_string(&v).unwrap();
        assert_eq!(Verdict::parse_line(&line).unwrap(), v);
    }
}
