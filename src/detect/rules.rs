//! One event through the rules: [`Ctx::process`] keeps the account and the key up to date
//! (the daily sweep, the key's volume window), then runs each rule family in turn: the origin
//! rules of a key (`origin_rules.rs`), `volume_anomaly` (`volume_rule.rs`) and
//! `unfamiliar_origin_account_volume` (`account_rule.rs`). Here too what they share: origins
//! from addresses, escalation levels ([`reached_level`]) and the parts every alert is built of.

use super::*;

/// At `origin_granularity = "asn"`, an autonomous system is an origin key in `100::/96`:
/// `100::` + its 32-bit number. `100::/64` is IPv6's discard-only prefix (RFC 6666), never a
/// client's address; an address in it with no known AS is the origin `100::` (AS 0, which is
/// no AS: never an AS key), so an AS key and an address prefix never meet.
const AS_ORIGINS: u128 = 0x0100 << 112;

/// The origin key of AS `asn` (not 0).
pub(super) fn as_origin(asn: u32) -> OriginKey {
    AS_ORIGINS | u128::from(asn)
}

/// The AS an origin key stands for, if it is one ([`as_origin`]).
pub(super) fn origin_asn(origin: OriginKey) -> Option<u32> {
    (origin >> 32 == AS_ORIGINS >> 32 && origin as u32 != 0).then_some(origin as u32)
}

/// `AS64500` (as an alert, a verdict or a model names it) -> its origin key.
pub(super) fn parse_as_origin(s: &str) -> Option<OriginKey> {
    let n: u32 = s.trim().strip_prefix("AS")?.parse().ok()?;
    (n != 0).then(|| as_origin(n))
}

impl Ctx {
    /// The origin of an address: itself (ip), its network (prefix), or its AS (asn, when the
    /// enrichment knows it; its network otherwise, so nothing goes unwatched). Under "asn" the
    /// answer depends on the enrichment loaded: replay and a service that loaded the same
    /// files agree, and a reload that moves an address to another AS moves its reads to that
    /// AS's origin from then on (the old one is forgotten as any idle origin is).
    pub(super) fn origin_of(&self, ip: u128) -> OriginKey {
        match self.cfg.origin_granularity {
            OriginGranularity::Ip => ip,
            OriginGranularity::Prefix => self.prefix_of(ip),
            OriginGranularity::Asn => {
                if origin_asn(ip).is_some() {
                    return ip; // already an AS (a verdict's origin)
                }
                if ip >> 64 == AS_ORIGINS >> 64 {
                    return AS_ORIGINS; // RFC 6666 space: see AS_ORIGINS
                }
                match self.enrich.as_ref().and_then(|e| e.asn(ip)) {
                    Some(asn) if asn != 0 => as_origin(asn),
                    _ => self.prefix_of(ip),
                }
            }
        }
    }

    fn prefix_of(&self, ip: u128) -> OriginKey {
        let is_v4 = ip >> 32 == 0xffff;
        let len = if is_v4 { 96 + self.cfg.ipv4_prefix as u32 } else { self.cfg.ipv6_prefix as u32 };
        if len >= 128 {
            ip
        } else if len == 0 {
            0
        } else {
            ip & !(u128::MAX >> len)
        }
    }

    /// Whether a key can be an origin under the configuration (a model's rows are checked).
    pub(super) fn is_origin(&self, origin: OriginKey) -> bool {
        match self.cfg.origin_granularity {
            OriginGranularity::Ip => true,
            OriginGranularity::Prefix => self.prefix_of(origin) == origin,
            OriginGranularity::Asn => origin_asn(origin).is_some() || self.prefix_of(origin) == origin,
        }
    }

    /// The AS of an origin key at asn granularity.
    pub(super) fn asn_of_origin(&self, origin: OriginKey) -> Option<u32> {
        (self.cfg.origin_granularity == OriginGranularity::Asn).then(|| origin_asn(origin)).flatten()
    }

    pub(super) fn origin_text(&self, origin: OriginKey) -> String {
        if let Some(asn) = self.asn_of_origin(origin) {
            return format!("AS{asn}");
        }
        let ip = evidence::ip_from_bits(origin);
        let len = match (self.cfg.origin_granularity, ip) {
            (OriginGranularity::Ip, IpAddr::V4(_)) => 32,
            (OriginGranularity::Ip, IpAddr::V6(_)) => 128,
            (OriginGranularity::Prefix | OriginGranularity::Asn, IpAddr::V4(_)) => self.cfg.ipv4_prefix,
            (OriginGranularity::Prefix | OriginGranularity::Asn, IpAddr::V6(_)) => self.cfg.ipv6_prefix,
        };
        format!("{ip}/{len}")
    }

    /// Processes one event of the account in event-time order; its alerts go to `out`, stamped
    /// with the account's Azure resource.
    pub(super) fn process(&mut self, account: &str, acct: &mut AccountState, e: &Ev, out: &mut Vec<Alert>) {
        let first = out.len();
        self.newest = self.newest.max(e.time);
        self.apply_rules(account, acct, e, out);
        if out.len() > first {
            if let Some(resource) = acct.resource.as_ref().and_then(|id| AzureResource::parse(&id.text())) {
                for a in &mut out[first..] {
                    a.resource = Some(resource.clone());
                }
            }
            if let Some(enrich) = self.enrich.clone() {
                let key = acct.keys.get(&e.cred);
                let usual = key.map(|k| self.usual_owners(&enrich, k, e.time)).unwrap_or_default();
                for a in &mut out[first..] {
                    owners::stamp(a, &enrich, &usual);
                }
            }
        }
    }

    fn apply_rules(&mut self, account: &str, acct: &mut AccountState, e: &Ev, out: &mut Vec<Alert>) {
        let t = e.time;
        let forget = self.cfg.history_window.0;
        if t - acct.last_seen > forget {
            // Idle longer than the history window: everything known about it is stale.
            self.stats.keys_tracked -= acct.keys.len() as u64;
            self.stats.origins_tracked -= acct.keys.values().map(|k| k.origins.len() as u64).sum::<u64>();
            acct.keys.clear();
            acct.first_seen = t;
        }
        acct.first_seen = acct.first_seen.min(t);
        let hour_turned = t.div_euclid(WINDOW_SWEEP_EVERY) > acct.last_seen.div_euclid(WINDOW_SWEEP_EVERY);
        acct.last_seen = acct.last_seen.max(t);
        if t >= acct.next_sweep {
            // Only when there can be something to drop: keys or origins idle for the history
            // window (not before the account is that old), or evidence of origins turned familiar.
            let may_expire = t - acct.first_seen > forget;
            let may_hold_evidence = acct.evidence_created != Nanos::MIN || !acct.unfamiliar.is_empty();
            if may_expire || may_hold_evidence {
                self.sweep(acct, t);
                if t > acct.evidence_created.saturating_add(self.cfg.familiar_after.0) {
                    acct.evidence_created = Nanos::MIN; // every evidence is stale and was dropped
                }
            }
            acct.next_sweep = t + SWEEP_EVERY;
        } else if hour_turned {
            let familiar_after = self.cfg.familiar_after.0;
            acct.unfamiliar.expire(t, familiar_after);
            acct.keys.for_each_mut(|k| self.drop_idle_windows(k, t));
        }
        let cfg = &self.cfg;
        let learning = t < acct.first_seen + cfg.learning_period.0;

        let key = acct.keys.get_or_insert_with(e.cred, || {
            self.stats.keys_tracked += 1;
            KeyState::new(t)
        });
        key.first_seen = key.first_seen.min(t);
        key.last_seen = key.last_seen.max(t);
        agents::observe(&mut key.agents, self.syms.family(e.ua), t);
        let sample = Sample {
            time: t,
            ip: e.ip,
            bytes: e.bytes,
            op: e.op,
            ua: e.ua,
            db: e.db,
            coll: e.coll,
            activity: e.activity,
        };

        // The origin the request came from, once for every rule below.
        let origin = e.ip.map(|ip| self.origin_of(ip));

        // Volume of the key, from any origin.
        key.volume.add(t, e.bytes, cfg.volume_window.0);
        key.history.observe(t, e.bytes, key.volume.sum(), cfg, &mut self.tq);
        if cfg.volume_anomaly && key.history.model().is_some() {
            let bucket = t.div_euclid(cfg.volume_window.0);
            let w =
                key.window_evidence.get_or_insert_with(|| Box::new((bucket, Gathered::default(), Gathered::default())));
            if bucket > w.0 {
                w.2 = if bucket == w.0 + 1 { std::mem::take(&mut w.1) } else { Gathered::default() };
                w.1 = Gathered::default();
                w.0 = bucket;
            }
            if bucket >= w.0 {
                // Without the address: the window's origins are `volume_origins`' to count.
                w.1.add(&Sample { ip: None, ..sample });
            }
            if let (Some(ip), Some(o)) = (e.ip, origin) {
                key.volume_origins.get_or_insert_with(Default::default).add(t, o, ip, e.bytes, cfg.volume_window.0);
            }
        } else {
            key.window_evidence = None;
            key.volume_origins = None;
        }

        if let Some(origin) = origin {
            if self.observe_origin(account, e.cred, key, origin, &sample, learning, out) {
                acct.evidence_created = acct.evidence_created.max(t);
            }
            self.suspicious_read(account, e.cred, key, origin, &sample, out);
        }
        if self.cfg.volume_anomaly {
            self.check_volume(account, e.cred, key, t, learning, out);
        }
        if let Some(origin) = origin {
            self.observe_account_origin(account, acct, e.cred, origin, &sample, learning, out);
        }
    }

    fn sweep(&mut self, acct: &mut AccountState, t: Nanos) {
        let forget = self.cfg.history_window.0;
        let familiar_after = self.cfg.familiar_after.0;
        acct.unfamiliar.expire(t, familiar_after);
        let (aggregate_window, volume_window) = (self.cfg.aggregate_window.0, self.cfg.volume_window.0);
        let stats = &mut self.stats;
        acct.keys.retain(|_, k| {
            // An origin judged malicious is never forgotten while the verdict stands.
            let malicious = |o: &OriginEntry| o.verdict == Some(VerdictKind::Malicious);
            if t - k.last_seen > forget && !k.origins.values().any(malicious) {
                stats.keys_expired += 1;
                stats.keys_tracked -= 1;
                stats.origins_tracked -= k.origins.len() as u64;
                return false;
            }
            let before = k.origins.len();
            k.origins.retain(|_, o| t - o.last_seen <= forget || malicious(o));
            let gone = (before - k.origins.len()) as u64;
            stats.origins_expired += gone;
            stats.origins_tracked -= gone;
            k.origins.drop_evidence_where(|o| t >= o.first_seen + familiar_after);
            drop_idle_windows(k, t, aggregate_window, volume_window);
            agents::sweep(&mut k.agents, t, forget);
            true
        });
    }

    /// Drops the windows `k` has been idle for (the sweep, and hourly between sweeps).
    fn drop_idle_windows(&self, k: &mut KeyState, t: Nanos) {
        drop_idle_windows(k, t, self.cfg.aggregate_window.0, self.cfg.volume_window.0);
    }

    // ---- alert construction (cold path) ----

    pub(super) fn baseline(&self, key: &KeyState, t: Nanos, p_value: Option<f64>) -> Baseline {
        let familiar_after = self.cfg.familiar_after.0;
        Baseline {
            known_origins: key.origins.values().filter(|o| t >= o.first_seen + familiar_after).count() as u64,
            typical_hourly_bytes: key.history.typical_hourly(),
            typical_peak_bytes: key.history.model().map_or(0, PeakModel::typical_peak),
            days_of_history: ((t - key.first_seen) as f64 / DAY as f64 * 10.0).round() / 10.0,
            p_value,
            usual_asns: Vec::new(),
            usual_countries: Vec::new(),
        }
    }

    /// `requests` overrides the evidence's own count (an origin counts all its requests, also
    /// those before its evidence began).
    pub(super) fn evidence_out(
        &self,
        ev: &Evidence,
        origin_first_seen: Option<Nanos>,
        requests: Option<u64>,
    ) -> EvidenceOut {
        EvidenceOut {
            request_count: requests.unwrap_or(ev.requests),
            top_operations: ev.top_operations(&self.syms),
            top_collections: ev.top_collections(&self.syms),
            top_user_agents: ev.top_user_agents(&self.syms),
            activity_ids: ev.activity_id_strings(),
            origin_first_seen: origin_first_seen.map(format_rfc3339),
            credentials: None,
            new_user_agents: Vec::new(),
        }
    }

    /// The evidence of a volume rule's alert: [`Ctx::evidence_out`] and the user agents new to
    /// the key (`agents.rs`).
    pub(super) fn volume_evidence(
        &self,
        key: &KeyState,
        ev: &Evidence,
        origin_first_seen: Option<Nanos>,
        requests: Option<u64>,
        t: Nanos,
    ) -> EvidenceOut {
        let mut out = self.evidence_out(ev, origin_first_seen, requests);
        out.new_user_agents = self.new_user_agents(key, &out.top_user_agents, t);
        out
    }

    /// The origin as an alert shows it: the address that read the most (the evidence's), else
    /// `read_by` (an address the caller saw read from it), else the origin's own address. An
    /// AS origin is no address: it needs one of the first two.
    pub(super) fn origin_ref(&self, origin: OriginKey, ev: Option<&Evidence>, read_by: Option<u128>) -> OriginRef {
        let ip = ev
            .and_then(|e| e.top_addresses(1).first().map(|a| a.0))
            .or_else(|| read_by.map(evidence::ip_from_bits))
            .unwrap_or_else(|| evidence::ip_from_bits(origin));
        OriginRef {
            ip: ip.to_string(),
            prefix: self.origin_text(origin),
            observed_bytes: None,
            info: Default::default(),
        }
    }

    /// The origins of a key-level alert's window by bytes, the most first, at most `n`, each
    /// shown by its address that read the most; and the bytes not listed. The listed bytes
    /// plus the rest are exactly `observed`: a listed estimate is cut to what `observed` leaves
    /// (it cannot exceed it while the sketch was fed with the window's sum; the cut only
    /// guards the sum), and bytes the sketch never saw (before it existed, or reads without an
    /// address) are part of the rest.
    pub(super) fn window_origins(&self, w: Option<&OriginWindow>, observed: u64, n: usize) -> (Vec<OriginRef>, u64) {
        let mut left = observed;
        let mut out = Vec::new();
        for o in w.map(|w| w.top(n)).unwrap_or_default() {
            let bytes = o.bytes.min(left);
            if bytes == 0 {
                break;
            }
            left -= bytes;
            let ip = evidence::ip_from_bits(o.top_address.unwrap_or(o.origin));
            out.push(OriginRef {
                ip: ip.to_string(),
                prefix: self.origin_text(o.origin),
                observed_bytes: Some(bytes),
                info: Default::default(),
            });
        }
        (out, left)
    }

    pub(super) fn usual(&self, b: &Baseline) -> String {
        if b.typical_hourly_bytes == 0 {
            format!("no volume history yet, {}", plural(b.known_origins, "known origin"))
        } else {
            format!("{}/h from {}", human_bytes(b.typical_hourly_bytes), plural(b.known_origins, "origin"))
        }
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The highest escalation level (0 = threshold, 1 = factor x threshold, ...) that `value` has
/// reached at or above `done`, if any.
pub(super) fn reached_level(value: u64, threshold: u64, factor: u64, done: u8) -> Option<u8> {
    let level_threshold = |l: u8| threshold.saturating_mul(factor.saturating_pow(l as u32));
    if value < level_threshold(done) {
        return None;
    }
    let mut l = done;
    while l < 8 && value >= level_threshold(l + 1) {
        l += 1;
    }
    Some(l)
}

/// Window sketches of an idle key hold only minutes its next read slides out: dropped once
/// the key has been idle for the window's length. The evidence of its volume windows, once
/// both are past (the next read starts them empty).
fn drop_idle_windows(k: &mut KeyState, t: Nanos, aggregate_window: Nanos, volume_window: Nanos) {
    let idle = t - k.last_seen;
    if idle >= aggregate_window {
        k.unfamiliar_origins = None;
    }
    if idle >= volume_window {
        k.volume_origins = None;
    }
    if idle >= spray_rule::SPRAY_WINDOW {
        k.spray = None;
    }
    if k.window_evidence.as_ref().is_some_and(|w| t.div_euclid(volume_window) > w.0 + 1) {
        k.window_evidence = None;
    }
}
