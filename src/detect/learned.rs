//! The detector's learned state as plain rows: what a model (`src/model/`) stores.
//!
//! [`Detector::export_model`] turns the state into tables (accounts, keys, origins, days of
//! volume history, the minutes of the sliding windows, the symbol table) and
//! [`Detector::from_model`] rebuilds exactly the same state from them. Everything a rule
//! reads round-trips: origin tables with their dedup marks and the evidence of origins still
//! new, the sliding sums, the daily peaks and the fitted peak model, the key-level marks, the
//! symbol numbers evidence refers to. So a replay that starts from a model of the days before
//! `T` gives, from `T` on, the alerts of one replay over the whole range.
//!
//! Sans-IO like the rest of the detector: rows in, rows out; the files live in `src/model/`.
//! Only a detector with empty reorder queues (after [`Detector::finish`]) can be exported: a
//! model is a baseline, not a stream position.

use super::*;

/// The learned state of a detector, as rows sorted by account, credential, origin.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedState {
    /// The `[detect]` configuration the state was learned with.
    pub config: DetectConfig,
    /// Interned strings in symbol order (symbol 0 is ""): evidence refers to them by number.
    pub symbols: Vec<String>,
    pub accounts: Vec<AccountRow>,
    pub keys: Vec<KeyRow>,
    pub origins: Vec<OriginRow>,
    pub volume_days: Vec<VolumeDayRow>,
    pub windows: Vec<WindowRow>,
    /// Analysts' verdicts in force (see `verdict.rs`), sorted by account, credential, origin.
    pub verdicts: Vec<VerdictRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccountRow {
    pub account: String,
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    /// Newest event time seen (the account's event-time progress).
    pub max_time: Nanos,
    /// Newest event time processed; `None` before the first.
    pub released: Option<Nanos>,
    pub next_sweep: Nanos,
    /// When evidence was last created; `None` when none can be left.
    pub evidence_created: Option<Nanos>,
    /// Origins unfamiliar to the whole account that its keys read from, by origin.
    pub unfamiliar_origins: Option<Vec<(u128, super::AccountOrigin)>>,
    /// The account's Azure resource id (lowercased), once a record named it.
    pub resource_id: Option<String>,
}

/// Dedup state of a key-level condition (`unfamiliar_origins_aggregate`, `volume_anomaly`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarkRow {
    pub at: Nanos,
    pub level: u8,
    pub epoch: u32,
    pub since: Nanos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyRow {
    pub account: String,
    pub credential: String,
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    /// Derived, for people (ignored when loading): origins familiar at the account's newest
    /// event time, bytes per active hour, typical daily peak, finished days with reads.
    pub known_origins: u64,
    pub typical_hourly_bytes: u64,
    pub typical_peak_bytes: u64,
    pub days_with_reads: u32,
    /// The volume history's day in progress, its active clock hours (a bit per hour) and the
    /// peak model fitted at its start.
    pub today: Option<DaySummary>,
    pub hours_today: u32,
    pub peak_model: Option<PeakModel>,
    pub aggregate_mark: Option<MarkRow>,
    pub volume_mark: Option<MarkRow>,
    /// The minute `unfamiliar_origins_aggregate` was last evaluated in.
    pub aggregate_checked_minute: Option<i64>,
    /// Evidence of the current and previous `volume_window` (window number, current, previous).
    /// Boxed: most keys have none, and rows of a large model add up.
    pub window_evidence: Option<Box<(i64, Evidence, Evidence)>>,
    /// Bytes per origin in the sliding `volume_window` and in the sliding `aggregate_window` of
    /// unfamiliar bytes: the sketches the key-level alerts list origins from.
    pub volume_origins: Option<Box<OriginWindow>>,
    pub unfamiliar_origins: Option<Box<OriginWindow>>,
    /// The user-agent families the key used (hash, first and last minute; `detect::agents`);
    /// empty in models written before them.
    pub user_agents: Vec<AgentSeen>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OriginRow {
    pub account: String,
    pub credential: String,
    /// `203.0.113.0/24` (prefix granularity) or `203.0.113.77/32` (ip).
    pub origin: String,
    pub first_seen: Nanos,
    pub last_seen: Nanos,
    pub bytes: u64,
    pub requests: u32,
    pub mark_level: u8,
    pub mark_epoch: u16,
    pub mark_at: Nanos,
    /// Itemized evidence, kept while the origin is new (boxed: most origins have none).
    pub evidence: Option<Box<Evidence>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VolumeDayRow {
    pub account: String,
    pub credential: String,
    pub day: DaySummary,
}

/// Which sliding sum of a key a [`WindowRow`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WindowKind {
    /// All bytes (`volume_window`).
    Volume,
    /// Bytes from unfamiliar origins (`aggregate_window`).
    Unfamiliar,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Volume => "volume",
            WindowKind::Unfamiliar => "unfamiliar",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "volume" => Some(WindowKind::Volume),
            "unfamiliar" => Some(WindowKind::Unfamiliar),
            _ => None,
        }
    }
}

/// One non-empty minute of a key's sliding sum.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowRow {
    pub account: String,
    pub credential: String,
    pub window: WindowKind,
    /// Minute number (event time / 60 s).
    pub minute: i64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LearnedStateError {
    #[error("events still wait in reorder queues: finish the detector before exporting a model")]
    EventsQueued,
    #[error(
        "the model was learned with detect.{field} = {model} but the configuration says {config}: \
         its origins would not match (use the model's setting or train a new model)"
    )]
    IncompatibleConfig { field: &'static str, model: String, config: String },
    #[error("model state is inconsistent: {0}")]
    Invalid(String),
}

fn mark_row(m: &Mark) -> MarkRow {
    MarkRow { at: m.at, level: m.level, epoch: m.epoch, since: m.since }
}

fn mark(m: &MarkRow) -> Mark {
    Mark { at: m.at, level: m.level, epoch: m.epoch, since: m.since }
}

fn invalid(msg: String) -> LearnedStateError {
    LearnedStateError::Invalid(msg)
}

impl Detector {
    /// The learned state as rows (see [`LearnedState`]). Fails while events wait in reorder
    /// queues: call [`Detector::finish`] first.
    pub fn export_model(&self) -> Result<LearnedState, LearnedStateError> {
        if self.has_queued() || self.accounts.values().any(|a| !a.queue.is_empty()) {
            return Err(LearnedStateError::EventsQueued);
        }
        let ctx = &self.ctx;
        let mut st = LearnedState {
            config: ctx.cfg.clone(),
            symbols: ctx.syms.names().map(str::to_string).collect(),
            accounts: Vec::new(),
            keys: Vec::new(),
            origins: Vec::new(),
            volume_days: Vec::new(),
            windows: Vec::new(),
            verdicts: self.verdicts(),
        };
        let mut names: Vec<&NameKey> = self.accounts.keys().collect();
        names.sort();
        for name in names {
            let Some(acct) = self.accounts.get(name) else { continue };
            let account = name.as_str().to_string();
            st.accounts.push(AccountRow {
                account: account.clone(),
                first_seen: acct.first_seen,
                last_seen: acct.last_seen,
                max_time: acct.max_time,
                released: (acct.released != Nanos::MIN).then_some(acct.released),
                next_sweep: acct.next_sweep,
                evidence_created: (acct.evidence_created != Nanos::MIN).then_some(acct.evidence_created),
                unfamiliar_origins: (!acct.unfamiliar.is_empty()).then(|| {
                    let mut v: Vec<(u128, super::AccountOrigin)> =
                        acct.unfamiliar.iter().map(|(o, e)| (o, e.clone().into())).collect();
                    v.sort_by_key(|x| x.0);
                    v
                }),
                resource_id: acct.resource.as_ref().map(super::state::ResourceId::text),
            });
            let mut keys: Vec<(&str, &KeyState)> = acct.keys.iter().map(|(c, k)| (ctx.syms.name(c), k)).collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (cred, key) in keys {
                let (today, hours_today, days, peak_model) = key.history.parts();
                let familiar_after = ctx.cfg.familiar_after.0;
                st.keys.push(KeyRow {
                    account: account.clone(),
                    credential: cred.to_string(),
                    first_seen: key.first_seen,
                    last_seen: key.last_seen,
                    known_origins: key
                        .origins
                        .values()
                        .filter(|o| acct.max_time >= o.first_seen + familiar_after)
                        .count() as u64,
                    typical_hourly_bytes: key.history.typical_hourly(),
                    typical_peak_bytes: peak_model.map_or(0, PeakModel::typical_peak),
                    days_with_reads: days.len() as u32,
                    today,
                    hours_today,
                    peak_model: peak_model.copied(),
                    aggregate_mark: key.aggregate_mark.as_deref().map(mark_row),
                    volume_mark: key.volume_mark.as_deref().map(mark_row),
                    aggregate_checked_minute: (key.aggregate_checked_minute != i64::MIN)
                        .then_some(key.aggregate_checked_minute),
                    window_evidence: key.window_evidence.as_deref().map(|(b, now, before)| {
                        Box::new((*b, now.evidence().into_owned(), before.evidence().into_owned()))
                    }),
                    user_agents: key.agents.to_vec(),
                    volume_origins: key.volume_origins.clone(),
                    unfamiliar_origins: key.unfamiliar_origins.clone(),
                });
                let mut origins: Vec<(OriginKey, &OriginEntry)> = key.origins.iter().collect();
                origins.sort_by_key(|(k, _)| *k);
                for (o, e) in origins {
                    st.origins.push(OriginRow {
                        account: account.clone(),
                        credential: cred.to_string(),
                        origin: ctx.origin_text(o),
                        first_seen: e.first_seen,
                        last_seen: e.last_seen,
                        bytes: e.bytes,
                        requests: e.requests,
                        mark_level: e.mark_level,
                        mark_epoch: e.mark_epoch,
                        mark_at: key.origins.mark_at(&o),
                        evidence: key.origins.evidence(&o).map(|ev| Box::new(ev.clone())),
                    });
                }
                for d in days {
                    st.volume_days.push(VolumeDayRow {
                        account: account.clone(),
                        credential: cred.to_string(),
                        day: d,
                    });
                }
                for (kind, sum) in [(WindowKind::Volume, &key.volume), (WindowKind::Unfamiliar, &key.unfamiliar)] {
                    for (minute, bytes) in sum.buckets() {
                        st.windows.push(WindowRow {
                            account: account.clone(),
                            credential: cred.to_string(),
                            window: kind,
                            minute,
                            bytes,
                        });
                    }
                }
            }
        }
        Ok(st)
    }

    /// A detector in exactly the state [`Detector::export_model`] exported, configured with
    /// `cfg`. Thresholds may differ from the model's (under other volume settings the peak
    /// models are fitted again, so they apply at once); what makes an origin may not. Checks
    /// the rows' consistency first: nothing is half loaded.
    pub fn from_model(state: LearnedState, cfg: DetectConfig) -> Result<Detector, LearnedStateError> {
        check_compatible(&state.config, &cfg)?;
        let refit = volume_settings_differ(&state.config, &cfg);
        let syms = Interner::from_names(state.symbols, SYMBOL_CAPACITY).ok_or_else(|| {
            invalid("the symbol table does not start with the reserved symbols or repeats one".into())
        })?;
        let mut d = Detector::new(cfg);
        d.ctx.syms = syms;
        let cred_sym = |syms: &Interner, c: &str| {
            syms.get(c).ok_or_else(|| invalid(format!("credential {c:?} is missing from the symbol table")))
        };

        for a in state.accounts {
            if a.first_seen > a.last_seen || a.last_seen > a.max_time {
                return Err(invalid(format!(
                    "account {:?}: first seen, last seen and newest time out of order",
                    a.account
                )));
            }
            let acct = AccountState {
                first_seen: a.first_seen,
                last_seen: a.last_seen,
                max_time: a.max_time,
                next_sweep: a.next_sweep,
                queue: VecDeque::new(),
                released: a.released.unwrap_or(Nanos::MIN),
                keys: Default::default(),
                evidence_created: a.evidence_created.unwrap_or(Nanos::MIN),
                unfamiliar: a
                    .unfamiliar_origins
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(o, e)| (o, e.into()))
                    .collect(),
                resource: match &a.resource_id {
                    None => None,
                    Some(id) => Some(super::state::ResourceId::new(
                        &AzureResource::parse(id)
                            .ok_or_else(|| {
                                invalid(format!("account {:?}: {id:?} is not an Azure resource id", a.account))
                            })?
                            .id,
                    )),
                },
            };
            if d.accounts.insert(NameKey::new(&a.account), acct).is_some() {
                return Err(invalid(format!("account {:?} appears twice", a.account)));
            }
        }

        // Days and window minutes per key, attached when the keys are built.
        let mut days: FxHashMap<(String, Sym), Vec<DaySummary>> = FxHashMap::default();
        for r in state.volume_days {
            let c = cred_sym(&d.ctx.syms, &r.credential)?;
            days.entry((r.account, c)).or_default().push(r.day);
        }
        let mut windows: FxHashMap<(String, Sym, WindowKind), Vec<(i64, u64)>> = FxHashMap::default();
        for r in state.windows {
            let c = cred_sym(&d.ctx.syms, &r.credential)?;
            windows.entry((r.account, c, r.window)).or_default().push((r.minute, r.bytes));
        }
        let mut take_window = |account: &str, c: Sym, kind: WindowKind| {
            let buckets = windows.remove(&(account.to_string(), c, kind)).unwrap_or_default();
            SlidingSum::from_buckets(buckets)
                .ok_or_else(|| invalid(format!("{account}/{}: {} window out of order", c, kind.as_str())))
        };

        for k in state.keys {
            let c = cred_sym(&d.ctx.syms, &k.credential)?;
            let history = VolumeHistory::from_parts(
                k.today,
                k.hours_today,
                days.remove(&(k.account.clone(), c)).unwrap_or_default(),
                k.peak_model,
            )
            .ok_or_else(|| invalid(format!("{}/{}: volume history out of order", k.account, k.credential)))?;
            let mut history = history;
            if refit {
                history.refit(&d.ctx.cfg, &mut d.ctx.tq);
            }
            for (w, what) in [(&k.volume_origins, "volume"), (&k.unfamiliar_origins, "unfamiliar")] {
                if w.as_ref().is_some_and(|w| !w.is_consistent()) {
                    return Err(invalid(format!(
                        "{}/{}: the {what} origin window does not add up",
                        k.account, k.credential
                    )));
                }
            }
            let key = KeyState {
                first_seen: k.first_seen,
                last_seen: k.last_seen,
                origins: origin_map::OriginMap::default(),
                unfamiliar: take_window(&k.account, c, WindowKind::Unfamiliar)?,
                volume: take_window(&k.account, c, WindowKind::Volume)?,
                history,
                window_evidence: k.window_evidence.map(|w| {
                    let (b, now, before) = *w;
                    Box::new((b, super::evidence::Gathered::from(now), super::evidence::Gathered::from(before)))
                }),
                volume_origins: k.volume_origins,
                unfamiliar_origins: k.unfamiliar_origins,
                aggregate_mark: k.aggregate_mark.as_ref().map(|m| Box::new(mark(m))),
                volume_mark: k.volume_mark.as_ref().map(|m| Box::new(mark(m))),
                aggregate_checked_minute: k.aggregate_checked_minute.unwrap_or(i64::MIN),
                // An hour's count of new origins: not part of a model.
                spray: None,
                agents: k.user_agents.into(),
            };
            let acct = d
                .accounts
                .get_mut(k.account.as_bytes())
                .ok_or_else(|| invalid(format!("key {}/{} of an unknown account", k.account, k.credential)))?;
            if acct.keys.insert(c, key) {
                return Err(invalid(format!("key {}/{} appears twice", k.account, k.credential)));
            }
            d.ctx.stats.keys_tracked += 1;
        }
        if let Some((account, ..)) = days.keys().next() {
            return Err(invalid(format!("volume history of an unknown key of account {account:?}")));
        }
        if let Some((account, ..)) = windows.keys().next() {
            return Err(invalid(format!("window minutes of an unknown key of account {account:?}")));
        }

        for o in state.origins {
            let origin = parse_origin(&o.origin).ok_or_else(|| {
                invalid(format!("{}/{}: origin {:?} is not an address/length", o.account, o.credential, o.origin))
            })?;
            if !d.ctx.is_origin(origin) || d.ctx.origin_text(origin) != o.origin {
                return Err(invalid(format!(
                    "{}/{}: origin {:?} does not match the configured origin granularity",
                    o.account, o.credential, o.origin
                )));
            }
            let c = cred_sym(&d.ctx.syms, &o.credential)?;
            let key = d.accounts.get_mut(o.account.as_bytes()).and_then(|a| a.keys.get_mut(&c)).ok_or_else(|| {
                invalid(format!("origin {} of an unknown key {}/{}", o.origin, o.account, o.credential))
            })?;
            let fields = OriginEntryFields {
                first_seen: o.first_seen,
                last_seen: o.last_seen,
                bytes: o.bytes,
                requests: o.requests,
                mark_level: o.mark_level,
                mark_epoch: o.mark_epoch,
                mark_at: o.mark_at,
                evidence: o.evidence,
                verdict: None,
            };
            if key.origins.insert_fields(origin, fields) {
                return Err(invalid(format!("{}/{}: origin {} appears twice", o.account, o.credential, o.origin)));
            }
            d.ctx.stats.origins_tracked += 1;
        }
        d.load_verdicts(state.verdicts)?;
        Ok(d)
    }
}

/// Whether a peak model fitted under `model` would come out differently under `cfg`.
fn volume_settings_differ(model: &DetectConfig, cfg: &DetectConfig) -> bool {
    model.volume_min_bytes != cfg.volume_min_bytes
        || model.volume_min_ratio != cfg.volume_min_ratio
        || model.volume_max_ratio != cfg.volume_max_ratio
        || model.volume_p_value != cfg.volume_p_value
        || model.volume_min_history_days != cfg.volume_min_history_days
        || model.volume_min_log_spread != cfg.volume_min_log_spread
}

/// What makes an origin must agree: the origin tables are keyed by it.
fn check_compatible(model: &DetectConfig, cfg: &DetectConfig) -> Result<(), LearnedStateError> {
    let incompatible =
        |field, m: String, c: String| Err(LearnedStateError::IncompatibleConfig { field, model: m, config: c });
    if model.origin_granularity != cfg.origin_granularity {
        let name = |g: OriginGranularity| format!("\"{}\"", g.as_str());
        return incompatible("origin_granularity", name(model.origin_granularity), name(cfg.origin_granularity));
    }
    // "asn" falls back to the prefixes for addresses of no known AS.
    if cfg.origin_granularity != OriginGranularity::Ip {
        if model.ipv4_prefix != cfg.ipv4_prefix {
            return incompatible("ipv4_prefix", model.ipv4_prefix.to_string(), cfg.ipv4_prefix.to_string());
        }
        if model.ipv6_prefix != cfg.ipv6_prefix {
            return incompatible("ipv6_prefix", model.ipv6_prefix.to_string(), cfg.ipv6_prefix.to_string());
        }
    }
    Ok(())
}

/// `203.0.113.0/24` -> the origin key (the address part; the length is checked by the caller
/// against the configuration); `AS64500` -> its origin key at asn granularity.
fn parse_origin(s: &str) -> Option<OriginKey> {
    if let Some(o) = rules::parse_as_origin(s) {
        return Some(o);
    }
    let (ip, len) = s.split_once('/')?;
    len.parse::<u8>().ok()?;
    Some(ip_bits(ip.parse::<IpAddr>().ok()?))
}
