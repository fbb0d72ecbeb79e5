//! The allowlist (`[allow]`): networks, credentials and user agents whose traffic never
//! alerts. It is still learned and counted: an allowed condition updates its dedup marks like
//! an alert would, so each alert it would have raised is counted once, by reason
//! ([`Suppressed`]).
//!
//! Sans-IO like the rest of the detector: an entry's `until` is compared with the alert's
//! event time, never with a clock. The allowlist comes from the current configuration, not
//! from a snapshot or a model ([`Detector::set_allowlist`] after `new`, `restore`,
//! `from_model`).
//!
//! Which alert an entry suppresses (README, "Triage: allowlists and verdicts"):
//! - a credential entry: every alert of that key (except `malicious_origin`);
//! - `unfamiliar_origin_volume`, `new_origin`: the origin (its whole prefix, or the address
//!   at ip granularity) lies inside an allowed network; or every user agent of the origin's
//!   evidence matches an allowed prefix (evidence that counted requests of user agents it
//!   could not name does not qualify);
//! - `unfamiliar_origins_aggregate`: every contributing origin lies inside allowed networks;
//!   or every user agent of every contributing origin's evidence is allowed;
//! - `volume_anomaly`: every origin the alert lists (the window's origin sketch, exact) lies
//!   inside allowed networks (bytes without a known address disqualify), or every user agent
//!   of the window is allowed;
//! - `malicious_origin` is never suppressed: an analyst's verdict outranks the allowlist.

use super::*;
use crate::config::AllowConfig;
use crate::time::parse_timestamp;

/// Alerts not raised, by reason.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Suppressed {
    pub allow_cidr: u64,
    pub allow_credential: u64,
    pub allow_user_agent: u64,
    pub verdict_benign: u64,
}

impl Suppressed {
    /// Reason codes, as the metric label and the replay summary name them.
    pub const REASONS: [&'static str; 4] = ["allow_cidr", "allow_credential", "allow_user_agent", "verdict_benign"];

    /// The counts in [`Suppressed::REASONS`] order.
    pub fn counts(&self) -> [u64; 4] {
        [self.allow_cidr, self.allow_credential, self.allow_user_agent, self.verdict_benign]
    }

    /// The growth since `base`, an earlier reading.
    pub fn since(&self, base: &Suppressed) -> Suppressed {
        Suppressed {
            allow_cidr: self.allow_cidr.saturating_sub(base.allow_cidr),
            allow_credential: self.allow_credential.saturating_sub(base.allow_credential),
            allow_user_agent: self.allow_user_agent.saturating_sub(base.allow_user_agent),
            verdict_benign: self.verdict_benign.saturating_sub(base.verdict_benign),
        }
    }

    pub fn add(&mut self, o: &Suppressed) {
        self.allow_cidr += o.allow_cidr;
        self.allow_credential += o.allow_credential;
        self.allow_user_agent += o.allow_user_agent;
        self.verdict_benign += o.verdict_benign;
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }
}

/// Why an allowlist suppresses an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowReason {
    Cidr,
    Credential,
    UserAgent,
}

/// The compiled `[allow]` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowlist {
    /// (network as 128 bits, prefix length over 128 bits, until).
    cidrs: Vec<(u128, u32, Nanos)>,
    credentials: Vec<(String, Nanos)>,
    /// Lower-case prefixes.
    user_agents: Vec<(String, Nanos)>,
}

/// A network `a.b.c.d/n` or `x::/n` as (bits, length over 128 bits); IPv4 as IPv4-mapped.
pub fn parse_cidr(s: &str) -> Option<(u128, u32)> {
    let (ip, len) = s.trim().split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let len = match ip {
        IpAddr::V4(_) if len <= 32 => 96 + len,
        IpAddr::V6(_) if len <= 128 => len,
        _ => return None,
    };
    let bits = ip_bits(ip);
    Some((bits & mask(len), len))
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    }
}

impl Allowlist {
    /// Checks and compiles `[allow]`; an error names the entry.
    pub fn compile(cfg: &AllowConfig) -> Result<Allowlist, String> {
        let until = |what: &str, i: usize, u: &Option<String>| -> Result<Nanos, String> {
            match u {
                None => Ok(Nanos::MAX),
                Some(s) => parse_timestamp(s)
                    .ok_or_else(|| format!("allow.{what}[{i}]: until {s:?} is not a time like 2027-01-31T00:00:00Z")),
            }
        };
        let mut out = Allowlist::default();
        for (i, e) in cfg.cidrs.iter().enumerate() {
            let (net, len) = parse_cidr(&e.cidr).ok_or_else(|| {
                format!("allow.cidrs[{i}]: {:?} is not a network like 10.20.0.0/16 or 2001:db8::/32", e.cidr)
            })?;
            out.cidrs.push((net, len, until("cidrs", i, &e.until)?));
        }
        for (i, e) in cfg.credentials.iter().enumerate() {
            let c = e.credential.trim();
            if !c.contains(':') {
                return Err(format!(
                    "allow.credentials[{i}]: {:?} is not a credential as alerts show it (e.g. key:primarymasterkey, aad:<object id>)",
                    e.credential
                ));
            }
            out.credentials.push((c.to_ascii_lowercase(), until("credentials", i, &e.until)?));
        }
        for (i, e) in cfg.user_agents.iter().enumerate() {
            if e.user_agent.trim().is_empty() {
                return Err(format!("allow.user_agents[{i}]: an empty user-agent prefix would allow everything"));
            }
            out.user_agents.push((e.user_agent.to_ascii_lowercase(), until("user_agents", i, &e.until)?));
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty() && self.credentials.is_empty() && self.user_agents.is_empty()
    }

    pub fn credential(&self, cred: &str, t: Nanos) -> bool {
        self.credentials.iter().any(|(c, until)| t < *until && c.eq_ignore_ascii_case(cred))
    }

    /// Whether the network `bits/len` (len over 128 bits) lies inside an allowed network.
    pub fn network(&self, bits: u128, len: u32, t: Nanos) -> bool {
        self.cidrs.iter().any(|&(net, l, until)| t < until && l <= len && bits & mask(l) == net)
    }

    pub fn user_agent(&self, ua: &str, t: Nanos) -> bool {
        let ua = ua.as_bytes();
        self.user_agents
            .iter()
            .any(|(p, until)| t < *until && ua.len() >= p.len() && ua[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
    }
}

/// What an alert is about, for the allowlist.
pub(super) enum Subject<'a> {
    /// One origin of the key (`unfamiliar_origin_volume`, `new_origin`).
    Origin(OriginKey),
    /// The contributing origins (`unfamiliar_origins_aggregate`).
    Origins(&'a [(u64, OriginKey)]),
    /// The key's volume window (`volume_anomaly`).
    Window,
    /// The first requests of the key's new origins (`origin_spray`): allowed by credential or
    /// when every one came from an allowed user agent.
    Spray(&'a Evidence),
}

impl Ctx {
    /// Length (over 128 bits) of an origin's network under the configuration.
    fn origin_len(&self, origin: OriginKey) -> u32 {
        let v4 = origin >> 32 == 0xffff;
        match (self.cfg.origin_granularity, v4) {
            (OriginGranularity::Ip, _) => 128,
            // An AS is no network: no CIDR entry covers it (credentials and user agents do).
            (OriginGranularity::Asn, _) if self.asn_of_origin(origin).is_some() => 0,
            (OriginGranularity::Prefix | OriginGranularity::Asn, true) => 96 + self.cfg.ipv4_prefix as u32,
            (OriginGranularity::Prefix | OriginGranularity::Asn, false) => self.cfg.ipv6_prefix as u32,
        }
    }

    /// Every user agent of every evidence is allowed (and there is at least one; evidence
    /// that counted requests under user agents it could not keep does not qualify).
    fn agents_allowed<'e>(&self, evs: impl IntoIterator<Item = Option<&'e Evidence>>, t: Nanos) -> bool {
        let mut any = false;
        for ev in evs {
            let Some(ev) = ev else { return false };
            // A full sketch may have evicted (and folded into its counters) user agents it no
            // longer names: then not every user agent is known.
            let top = ev.user_agents.top();
            if ev.user_agents.is_full() || top.iter().map(|x| x.1).sum::<u64>() != ev.requests || top.is_empty() {
                return false;
            }
            if !top.iter().all(|(s, _)| self.allow.user_agent(self.syms.name(*s), t)) {
                return false;
            }
            any = true;
        }
        any
    }

    fn allow_reason(&self, cred: Sym, key: &KeyState, subject: &Subject<'_>, t: Nanos) -> Option<AllowReason> {
        let allow = &self.allow;
        if allow.credential(self.syms.name(cred), t) {
            return Some(AllowReason::Credential);
        }
        match subject {
            Subject::Origin(o) => {
                if allow.network(*o, self.origin_len(*o), t) {
                    return Some(AllowReason::Cidr);
                }
                let ev = key.origins.evidence(o);
                self.agents_allowed([ev], t).then_some(AllowReason::UserAgent)
            }
            Subject::Origins(list) => {
                if !list.is_empty() && list.iter().all(|&(_, o)| allow.network(o, self.origin_len(o), t)) {
                    return Some(AllowReason::Cidr);
                }
                let evs = list.iter().map(|(_, o)| key.origins.evidence(o));
                self.agents_allowed(evs, t).then_some(AllowReason::UserAgent)
            }
            Subject::Window => {
                let mut ev = Evidence::default();
                if let Some(w) = &key.window_evidence {
                    ev.merge(&w.1.evidence());
                    ev.merge(&w.2.evidence());
                }
                // The origins the alert lists (the window's origin sketch): every one of them
                // allowed, each with only its own bytes, and no bytes without an address.
                if let Some(w) = key.volume_origins.as_deref() {
                    let origins = w.top(usize::MAX);
                    if w.exact()
                        && !origins.is_empty()
                        && w.total() == key.volume.sum()
                        && origins.iter().all(|o| allow.network(o.origin, self.origin_len(o.origin), t))
                    {
                        return Some(AllowReason::Cidr);
                    }
                }
                self.agents_allowed([Some(&ev)], t).then_some(AllowReason::UserAgent)
            }
            Subject::Spray(ev) => self.agents_allowed([Some(*ev)], t).then_some(AllowReason::UserAgent),
        }
    }

    /// Where a rule raises an alert: pushes it, or counts it as suppressed by the allowlist.
    pub(super) fn emit(
        &mut self,
        a: Alert,
        cred: Sym,
        key: &KeyState,
        subject: Subject<'_>,
        t: Nanos,
        out: &mut Vec<Alert>,
    ) {
        if !self.allow.is_empty() {
            if let Some(reason) = self.allow_reason(cred, key, &subject, t) {
                let s = &mut self.stats.suppressed;
                match reason {
                    AllowReason::Cidr => s.allow_cidr += 1,
                    AllowReason::Credential => s.allow_credential += 1,
                    AllowReason::UserAgent => s.allow_user_agent += 1,
                }
                return;
            }
        }
        out.push(a);
    }
}

impl Detector {
    /// Sets the allowlist (from the current configuration; it is not part of a snapshot or
    /// model).
    pub fn set_allowlist(&mut self, allow: Allowlist) {
        self.ctx.allow = allow;
    }

    /// As [`Detector::set_allowlist`], builder style.
    pub fn with_allowlist(mut self, allow: Allowlist) -> Self {
        self.ctx.allow = allow;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ev;
    use super::*;
    use crate::alert::Rule;
    use crate::config::{AllowCidr, AllowCredential, AllowUserAgent, Config};
    use crate::time::{parse_timestamp, HOUR, MINUTE};

    const MIB: u64 = 1 << 20;
    const CRED: &str = "key:primaryreadonlymasterkey";

    fn t0() -> Nanos {
        parse_timestamp("2021-08-01T00:00:00Z").unwrap()
    }

    /// Two days from a familiar origin, then 2 GiB in 4 MiB pages from `ip` within 30 minutes.
    fn theft(ip: &str) -> Vec<Event<'static>> {
        let mut evs: Vec<Event<'static>> =
            (0..48).map(|h| ev(t0() + h * HOUR, "contoso", CRED, "10.0.0.5", 10 * MIB)).collect();
        let start = t0() + 48 * HOUR;
        evs.extend((0..512).map(|i| ev(start + i * (30 * MINUTE / 512), "contoso", CRED, ip, 4 * MIB)));
        evs
    }

    fn run(allow: AllowConfig, events: &[Event<'static>]) -> (Vec<Alert>, Detector) {
        let cfg = DetectConfig { learning_period: crate::units::Span(0), volume_anomaly: false, ..Default::default() };
        let mut d = Detector::new(cfg).with_allowlist(Allowlist::compile(&allow).unwrap());
        let mut out = Vec::new();
        for e in events {
            d.ingest(e, &mut out);
        }
        d.finish(&mut out);
        (out, d)
    }

    fn cidr(c: &str, until: Option<&str>) -> AllowConfig {
        AllowConfig {
            cidrs: vec![AllowCidr { cidr: c.into(), until: until.map(Into::into), comment: "test".into() }],
            ..Default::default()
        }
    }

    #[test]
    fn each_kind_suppresses_and_is_counted_by_reason_while_traffic_is_still_learned() {
        let evs = theft("203.0.113.77");
        let (plain, plain_d) = run(AllowConfig::default(), &evs);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert_eq!(plain[0].rule, Rule::UnfamiliarOriginVolume);

        let (a, d) = run(cidr("203.0.0.0/16", None), &evs);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(d.stats().suppressed, Suppressed { allow_cidr: 1, ..Default::default() });
        // Still learned: the same origins and keys as without the allowlist.
        assert_eq!(d.stats().origins_tracked, plain_d.stats().origins_tracked);
        assert_eq!(d.stats().origins_tracked, 2);

        let creds = AllowConfig {
            credentials: vec![AllowCredential { credential: CRED.to_uppercase(), until: None, comment: String::new() }],
            ..Default::default()
        };
        let (a, d) = run(creds, &evs);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(d.stats().suppressed, Suppressed { allow_credential: 1, ..Default::default() });

        let agents = AllowConfig {
            user_agents: vec![AllowUserAgent { user_agent: "TEST-".into(), until: None, comment: String::new() }],
            ..Default::default()
        };
        let (a, d) = run(agents, &evs);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(d.stats().suppressed, Suppressed { allow_user_agent: 1, ..Default::default() });

        // Entries that do not cover it suppress nothing.
        let other_agent = AllowConfig {
            user_agents: vec![AllowUserAgent { user_agent: "agent".into(), until: None, comment: String::new() }],
            ..Default::default()
        };
        assert_eq!(run(other_agent, &evs).0, plain);
        assert_eq!(run(cidr("203.0.114.0/24", None), &evs).0, plain);
        // A network smaller than the origin's /24 does not cover the origin.
        assert_eq!(run(cidr("203.0.113.64/26", None), &evs).0, plain);
    }

    #[test]
    fn until_is_compared_with_event_time() {
        let evs = theft("203.0.113.77");
        let (plain, _) = run(AllowConfig::default(), &evs);
        // The theft happens on 2021-08-03: an entry that expired on the 2nd no longer holds.
        assert_eq!(run(cidr("203.0.113.0/24", Some("2021-08-02T00:00:00Z")), &evs).0, plain);
        let (a, d) = run(cidr("203.0.113.0/24", Some("2021-08-04T00:00:00Z")), &evs);
        assert!(a.is_empty());
        assert_eq!(d.stats().suppressed.allow_cidr, 1);
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_networks_and_ipv6_networks_match() {
        let (a, d) = run(cidr("203.0.113.0/24", None), &theft("::ffff:203.0.113.77"));
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(d.stats().suppressed.allow_cidr, 1);
        let v6 = theft("2001:db8:1:2::5");
        assert_eq!(run(AllowConfig::default(), &v6).0.len(), 1);
        let (a, d) = run(cidr("2001:db8::/32", None), &v6);
        assert!(a.is_empty(), "{a:?}");
        assert_eq!(d.stats().suppressed.allow_cidr, 1);
    }

    #[test]
    fn bad_entries_are_config_errors_naming_the_entry() {
        let err = |t: &str| Config::from_toml(t, "t.toml").unwrap_err().to_string();
        let e = err("[allow]\ncidrs = [{ cidr = \"10.0.0.0/8\" }, { cidr = \"10.0.0.300/8\" }]\n");
        assert!(e.contains("allow.cidrs[1]") && e.contains("10.0.0.300/8"), "{e}");
        let e = err("[allow]\ncidrs = [{ cidr = \"10.0.0.0/33\" }]\n");
        assert!(e.contains("allow.cidrs[0]"), "{e}");
        let e = err("[allow]\ncredentials = [{ credential = \"key:x\", until = \"next week\" }]\n");
        assert!(e.contains("allow.credentials[0]") && e.contains("next week"), "{e}");
        let e = err("[allow]\nuser_agents = [{ user_agent = \"\" }]\n");
        assert!(e.contains("allow.user_agents[0]"), "{e}");
        let e = err("[allow]\ncidrs = [{ cidr = \"10.0.0.0/8\", note = \"x\" }]\n");
        assert!(e.contains("unknown field"), "{e}");
        let ok = Config::from_toml(
            "[allow]\ncidrs = [{ cidr = \"10.20.0.0/16\", until = \"2027-01-31T00:00:00Z\", comment = \"migration\" }]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(ok.allow.cidrs[0].comment, "migration");
    }
}
