//! Alerts to Prometheus Alertmanager, through its API v2 (`POST /api/v2/alerts`).
//!
//! # What Alertmanager receives
//! One Alertmanager alert per exfilwatch alert:
//! * **labels** (they identify the alert in Alertmanager, which groups, routes, silences and
//!   deduplicates by them): `alertname` (the rule, e.g. `unfamiliar_origin_volume`),
//!   `severity`, `account`, `credential`, and `origin` (the origin's network, e.g.
//!   `203.0.113.0/24`) for the rules that have one origin. Alerts about several origins
//!   (`unfamiliar_origins_aggregate`, `volume_anomaly`) carry no `origin` label.
//! * **annotations**: `summary` (the alert's one-line summary), `description` (bytes, window,
//!   origin, baseline and evidence in a few lines of text) and `alert_id` (the stable alert id).
//! * `startsAt`: the alert's trigger time (event time, from the logs).
//!
//! # Firing, re-sending, resolving: the cadence Alertmanager expects
//! Alertmanager treats an alert as firing until its `endsAt`. Prometheus, its usual client,
//! re-sends every firing alert each `--rules.alert.resend-delay` (1 min) with `endsAt` four
//! resend intervals ahead, so that an alert whose sender died resolves by itself after a few
//! minutes, and a sender that is merely slow or briefly cut off does not flap. This sink does the
//! same: it keeps the set of alerts it has sent that are still firing, and [`tick`] re-posts each
//! one `resend_interval` after its last accepted post, with `endsAt = now + 4 * resend_interval`.
//!
//! An alert is resolved (posted once more with `endsAt` = now, then forgotten) when
//! * `realert` of **event time** has passed since its trigger time: the detector may raise the
//!   same condition again from then on, as a new alert. Event time is the newest of the alerts'
//!   trigger times and of what the service reports with [`observe_event_time`]; or
//! * the service calls [`resolve`] for its key and origin (the origin became familiar);
//!
//! and, either way, only once it has been firing in Alertmanager for `min_firing` of wall time,
//! so that an alert whose event-time horizon had already passed when it was raised (a backlog
//! being caught up) is still seen firing and notified, rather than resolved at once.
//!
//! Alerts with the same labels are one alert to Alertmanager: an escalation of the same rule,
//! key, origin and severity updates the firing alert (its annotations, `alert_id` the newest)
//! and keeps its first `startsAt`.
//!
//! # Delivery
//! [`send_alerts`] posts new alerts at once (one request, up to [`MAX_ALERTS_PER_POST`]
//! alerts each), and returns an error when Alertmanager did not accept them; the alerts stay in
//! the firing set either way, so the caller may retry the same batch (only the alerts not yet
//! accepted are posted again) and [`tick`] posts them in any case. After a failed post, [`tick`]
//! waits with exponential backoff (100 ms doubling to 30 s) before trying again. Requests time
//! out after `timeout`; redirects are not followed; TLS as in the webhook sink (rustls, webpki
//! roots). The sink does no sleeping of its own and reads no clock: every method takes `now`.
//!
//! [`tick`]: AlertmanagerSink::tick
//! [`send_alerts`]: AlertmanagerSink::send_alerts
//! [`resolve`]: AlertmanagerSink::resolve
//! [`observe_event_time`]: AlertmanagerSink::observe_event_time

use crate::alert::Alert;
use crate::time::{format_rfc3339, parse_timestamp, Nanos};
use crate::units::{human_bytes, human_span};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prometheus's default `--rules.alert.resend-delay`.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// Per request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than Alertmanager's default `group_wait` (30 s), so the firing alert is notified.
pub const DEFAULT_MIN_FIRING: Duration = Duration::from_secs(5 * 60);
/// `endsAt` of a firing alert is this many resend intervals after the post (as Prometheus).
pub const ENDS_AT_RESENDS: u32 = 4;
/// Alerts per request.
pub const MAX_ALERTS_PER_POST: usize = 500;
/// Firing alerts kept; past it, those due soonest are forgotten (Alertmanager resolves them
/// by their `endsAt`).
pub const MAX_FIRING: usize = 100_000;

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const API_PATH: &str = "api/v2/alerts";

#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    /// The URL does not parse, or is not `http://` / `https://` with a host. The URL itself is
    /// left out of the message: it may hold credentials.
    #[error("invalid Alertmanager URL: {0}")]
    InvalidUrl(String),
    /// A configured header has an invalid name or value (the value is never shown).
    #[error("invalid Alertmanager header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    /// A duration option is zero (`timeout`, `resend_interval`) or negative (`realert`).
    #[error("invalid Alertmanager sink option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: &'static str },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the Alertmanager HTTP client: {0}")]
    Build(String),
    /// An alert that can never be posted as it is (its trigger time does not parse). Retrying
    /// does not help.
    #[error("alert {id:?} cannot be sent to Alertmanager: {reason}")]
    InvalidAlert { id: String, reason: String },
    /// No answer: connection refused or reset, DNS, TLS, or the connection closed early.
    #[error("POST to {target} failed: {detail}")]
    Request { target: String, detail: String },
    /// Alertmanager answered, but not with `2xx` (`body`: the start of its answer, which names
    /// the reason for a 400).
    #[error("POST to {target} was answered with HTTP {status}: {body}")]
    Status { target: String, status: u16, body: String },
    /// No complete answer within the configured timeout.
    #[error("POST to {target} timed out after {timeout:?}")]
    Timeout { target: String, timeout: Duration },
}

impl AlertmanagerError {
    /// Whether trying the same post again can succeed: network errors, timeouts, 5xx, 408 and
    /// 429 can; a configuration error, an invalid alert or another 4xx (Alertmanager rejected
    /// the payload) cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            AlertmanagerError::Request { .. } | AlertmanagerError::Timeout { .. } => true,
            AlertmanagerError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// How to reach Alertmanager and when to re-send and resolve. [`AlertmanagerOptions::new`]
/// gives the defaults.
#[derive(Clone, Debug)]
pub struct AlertmanagerOptions {
    /// Alertmanager's base URL (`http://alertmanager:9093`, with its `--web.route-prefix` if it
    /// has one); `api/v2/alerts` is appended unless the URL already ends with it.
    pub url: String,
    /// Per request (connect included).
    pub timeout: Duration,
    /// Extra request headers (e.g. `Authorization`); never logged.
    pub headers: BTreeMap<String, String>,
    /// How often a firing alert is posted again.
    pub resend_interval: Duration,
    /// Event time after an alert's trigger at which it resolves: `detect.realert`.
    pub realert: Nanos,
    /// Wall time an alert stays firing in Alertmanager, at least, before it is resolved.
    pub min_firing: Duration,
}

impl AlertmanagerOptions {
    /// The defaults for a URL and `detect.realert` (nanoseconds of event time).
    pub fn new(url: impl Into<String>, realert: Nanos) -> Self {
        AlertmanagerOptions {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            headers: BTreeMap::new(),
            resend_interval: DEFAULT_RESEND_INTERVAL,
            realert,
            min_firing: DEFAULT_MIN_FIRING,
        }
    }
}

/// What one [`AlertmanagerSink::tick`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Firing alerts posted again (or, for the first time after a failure).
    pub resent: usize,
    /// Alerts posted as resolved and forgotten.
    pub resolved: usize,
    /// Nothing was tried: waiting out the backoff after a failed post.
    pub backing_off: bool,
}

/// One firing alert as this sink keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Firing {
    labels: BTreeMap<String, String>,
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
    dirty: bool,
    /// [`AlertmanagerSink::resolve`] was called for it.
    resolve_requested: bool,
}

/// The firing set and the event-time progress, to save with the service's state and restore
/// after a restart (so that alerts keep being re-sent and are resolved in time).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FiringSnapshot {
    event_time: Nanos,
    alerts: Vec<Firing>,
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
struct FiringSet {
    /// By label set (Alertmanager's identity of an alert), in a canonical string form.
    alerts: BTreeMap<String, Firing>,
    event_time: Nanos,
    resend_interval: Duration,
    realert: Nanos,
    min_firing: Duration,
    capacity: usize,
    warned_full: bool,
}

/// Alertmanager's identity of an alert: its label set.
fn fingerprint(labels: &BTreeMap<String, String>) -> String {
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
    fn new(opts: &AlertmanagerOptions) -> Self {
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
    fn upsert(&mut self, alert: &Alert) -> Result<String, AlertmanagerError> {
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
    fn due(&self, now: SystemTime) -> (Vec<String>, Vec<String>) {
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

    fn mark_sent(&mut self, keys: &[String], now: SystemTime) {
        for k in keys {
            if let Some(f) = self.alerts.get_mut(k) {
                f.first_sent.get_or_insert(now);
                f.last_sent = Some(now);
                f.dirty = false;
            }
        }
    }

    /// Marks the alerts of (account, credential, origin) for resolution; returns how many.
    fn request_resolution(&mut self, account: &str, credential: &str, origin: &str) -> usize {
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
    fn postable(&self, keys: &[String], now: SystemTime, resolved: bool) -> Vec<PostableAlert<'_>> {
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

fn nanos_since_epoch(t: SystemTime) -> Nanos {
    t.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The body of `POST /api/v2/alerts` is a list of these.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
}

/// The labels an alert is posted with (its identity in Alertmanager).
pub fn labels(alert: &Alert) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".to_owned(), alert.rule.as_str().to_owned());
    l.insert("severity".to_owned(), alert.severity.as_str().to_owned());
    l.insert("account".to_owned(), alert.account.clone());
    l.insert("credential".to_owned(), alert.credential.clone());
    if let Some(o) = &alert.origin {
        l.insert("origin".to_owned(), o.prefix.clone());
    }
    l
}

/// The annotations an alert is posted with: `summary`, `description`, `alert_id`.
pub fn annotations(alert: &Alert) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("summary".to_owned(), alert.summary.clone());
    a.insert("description".to_owned(), description(alert));
    a.insert("alert_id".to_owned(), alert.id.clone());
    a
}

/// A few lines for a person: what was read, from where, against which baseline, and the
/// evidence to look up in the logs.
pub fn description(a: &Alert) -> String {
    let mut d = String::new();
    let _ = write!(d, "{} ({}) on account {}, credential {}", a.rule, a.severity, a.account, a.credential);
    if a.escalation_level > 0 {
        let _ = write!(d, ", escalation level {}", a.escalation_level);
    }
    let _ = writeln!(d, ".");
    let _ = write!(
        d,
        "Read {} (threshold {}) between {} and {}",
        human_bytes(a.observed_bytes),
        human_bytes(a.threshold_bytes),
        a.window.start,
        a.window.end
    );
    if let Some(o) = &a.origin {
        let _ = write!(d, " from {} (origin {})", o.ip, o.prefix);
        if let Some(first) = &a.evidence.origin_first_seen {
            let _ = write!(d, ", first seen {first}");
        }
    }
    let _ = writeln!(d, ".");
    if let Some(os) = a.origins.as_ref().filter(|os| !os.is_empty()) {
        let list: Vec<String> = os
            .iter()
            .map(|o| match o.observed_bytes {
                Some(b) => format!("{} ({}) {}", o.ip, o.prefix, human_bytes(b)),
                None => format!("{} ({})", o.ip, o.prefix),
            })
            .collect();
        let _ = writeln!(d, "Origins: {}.", list.join(", "));
    }
    let b = &a.baseline;
    let _ = write!(
        d,
        "Baseline: {} familiar origin(s), {}/h typical, daily peak {}, {} of history",
        b.known_origins,
        human_bytes(b.typical_hourly_bytes),
        human_bytes(b.typical_peak_bytes),
        human_span((b.days_of_history * 86_400e9) as i64)
    );
    if let Some(p) = b.p_value {
        let _ = write!(d, ", p-value {p:.2e}");
    }
    let _ = writeln!(d, ".");
    let e = &a.evidence;
    let names = |v: &[crate::alert::NameCount]| {
        v.iter().map(|n| format!("{} {}", n.name, n.count)).collect::<Vec<_>>().join(", ")
    };
    let _ = write!(d, "Evidence: {} requests", e.request_count);
    for (what, list) in
        [("operations", &e.top_operations), ("collections", &e.top_collections), ("user agents", &e.top_user_agents)]
    {
        if !list.is_empty() {
            let _ = write!(d, "; {what}: {}", names(list));
        }
    }
    if !e.activity_ids.is_empty() {
        let _ = write!(d, "; activity ids: {}", e.activity_ids.join(", "));
    }
    d.push('.');
    d
}

/// Posts alerts to Alertmanager and keeps them firing there until they resolve. See the module
/// documentation for the cadence.
pub struct AlertmanagerSink {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL without user info, query or fragment: safe to log.
    target: String,
    timeout: Duration,
    set: FiringSet,
    /// Exponential backoff of `tick` after a failed post: no post before `retry_at`.
    backoff: Duration,
    retry_at: Option<SystemTime>,
}

impl AlertmanagerSink {
    pub fn new(opts: AlertmanagerOptions) -> Result<Self, AlertmanagerError> {
        let mut url = reqwest::Url::parse(&opts.url).map_err(|e| AlertmanagerError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AlertmanagerError::InvalidUrl(format!("scheme {:?} is not http or https", url.scheme())));
        }
        if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
            return Err(AlertmanagerError::InvalidUrl("no host".to_owned()));
        }
        if !url.path().trim_end_matches('/').ends_with(API_PATH) {
            let path = format!("{}/{API_PATH}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        if opts.timeout.is_zero() {
            return Err(AlertmanagerError::InvalidOption { name: "timeout", reason: "must be greater than zero" });
        }
        if opts.resend_interval.is_zero() {
            return Err(AlertmanagerError::InvalidOption {
                name: "resend_interval",
                reason: "must be greater than zero",
            });
        }
        if opts.realert < 0 {
            return Err(AlertmanagerError::InvalidOption { name: "realert", reason: "must not be negative" });
        }

        let mut extra = HeaderMap::new();
        for (name, value) in &opts.headers {
            let invalid = |reason: String| AlertmanagerError::InvalidHeader { name: name.clone(), reason };
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let mut header_value = HeaderValue::from_str(value)
                .map_err(|_| invalid("the value is not a valid header value".to_owned()))?;
            header_value.set_sensitive(true);
            extra.insert(header_name, header_value);
        }
        let client = reqwest::Client::builder()
            .default_headers(extra)
            .connect_timeout(opts.timeout)
            .timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AlertmanagerError::Build(error_chain(e.without_url())))?;

        let mut shown = url.clone();
        // Both only fail for URLs that cannot have them, which then have none to remove.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);

        Ok(AlertmanagerSink {
            client,
            url,
            target: shown.to_string(),
            timeout: opts.timeout,
            set: FiringSet::new(&opts),
            backoff: BACKOFF_INITIAL,
            retry_at: None,
        })
    }

    /// Where it posts (for logs): scheme, host, port and path; never user info or headers.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Adds the alerts to the firing set and posts those Alertmanager has not accepted yet in
    /// their current form. Ok once Alertmanager accepted them all (`2xx`).
    ///
    /// On an error the alerts stay in the firing set: retrying the same batch posts only those
    /// not yet accepted, and [`tick`](Self::tick) posts them anyway once its backoff allows.
    /// `now` is the wall clock (`SystemTime::now()` in the service).
    ///
    /// An alert that can never be posted (its trigger time does not parse) is left out; the
    /// others are still posted, and the first such alert's [`AlertmanagerError::InvalidAlert`]
    /// is returned afterwards (not retryable: log it and go on).
    pub async fn send_alerts(&mut self, alerts: &[Alert], now: SystemTime) -> Result<(), AlertmanagerError> {
        let mut keys = Vec::with_capacity(alerts.len());
        let mut invalid = None;
        for a in alerts {
            match self.set.upsert(a) {
                Ok(key) if !keys.contains(&key) => keys.push(key),
                Ok(_) => {}
                Err(e) => {
                    invalid.get_or_insert(e);
                }
            }
        }
        keys.retain(|k| self.set.alerts.get(k).is_some_and(|f| f.dirty));
        if !keys.is_empty() {
            self.post_all(&keys, now, false).await?;
            // Alertmanager is back: no reason for tick to wait any longer.
            self.backoff = BACKOFF_INITIAL;
            self.retry_at = None;
        }
        invalid.map_or(Ok(()), Err)
    }

    /// Event-time progress of the stream (the newest record time processed): alerts resolve
    /// `realert` after their trigger in this time. Call it per batch; it only moves forward.
    pub fn observe_event_time(&mut self, t: Nanos) {
        self.set.event_time = self.set.event_time.max(t);
    }

    /// The origin became familiar to the key: its firing alerts (those with this `origin`
    /// label: `unfamiliar_origin_volume`, `new_origin`) are resolved by the next
    /// [`tick`](Self::tick) (once they have been firing for `min_firing`). `origin` is the
    /// origin's network as in the alerts (`203.0.113.0/24`). Returns how many alerts it marked.
    pub fn resolve(&mut self, account: &str, credential: &str, origin: &str) -> usize {
        self.set.request_resolution(account, credential, origin)
    }

    /// Posts what is due at `now`: resolutions (then forgets those alerts) and the re-sends of
    /// firing alerts whose last accepted post is `resend_interval` old (or that were never
    /// accepted). Does nothing while backing off after a failed post. Cheap when nothing is
    /// due: call it often (the service loop's 100 ms tick is fine); errors are transient (log
    /// and keep calling).
    pub async fn tick(&mut self, now: SystemTime) -> Result<TickReport, AlertmanagerError> {
        if self.retry_at.is_some_and(|t| now < t) {
            return Ok(TickReport { backing_off: true, ..TickReport::default() });
        }
        let (resolve, resend) = self.set.due(now);
        let result = async {
            self.post_all(&resolve, now, true).await?;
            self.post_all(&resend, now, false).await
        }
        .await;
        match result {
            Ok(()) => {
                self.backoff = BACKOFF_INITIAL;
                self.retry_at = None;
                Ok(TickReport { resent: resend.len(), resolved: resolve.len(), backing_off: false })
            }
            Err(e) => {
                self.retry_at = Some(now.checked_add(self.backoff).unwrap_or(now));
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Err(e)
            }
        }
    }

    /// Alerts currently firing (kept and re-sent by this sink).
    pub fn firing_len(&self) -> usize {
        self.set.alerts.len()
    }

    /// The firing set, to save with the service's state.
    pub fn snapshot(&self) -> FiringSnapshot {
        FiringSnapshot { event_time: self.set.event_time, alerts: self.set.alerts.values().cloned().collect() }
    }

    /// Restores a [`snapshot`](Self::snapshot) (replacing the firing set): its alerts are
    /// re-sent and resolved as if the process had not stopped.
    pub fn restore(&mut self, snapshot: FiringSnapshot) {
        self.set.event_time = self.set.event_time.max(snapshot.event_time);
        self.set.alerts = snapshot.alerts.into_iter().map(|f| (fingerprint(&f.labels), f)).collect();
    }

    /// Posts `keys` in requests of at most [`MAX_ALERTS_PER_POST`]; a resolved alert accepted
    /// by Alertmanager is forgotten, a firing one marked sent.
    async fn post_all(&mut self, keys: &[String], now: SystemTime, resolved: bool) -> Result<(), AlertmanagerError> {
        for chunk in keys.chunks(MAX_ALERTS_PER_POST) {
            let body = self.set.postable(chunk, now, resolved);
            if body.is_empty() {
                continue;
            }
            let bytes = serde_json::to_vec(&body).map_err(|e| AlertmanagerError::InvalidAlert {
                id: String::new(),
                reason: format!("does not serialize: {e}"),
            })?;
            self.post(bytes).await?;
            if resolved {
                for k in chunk {
                    self.set.alerts.remove(k);
                }
            } else {
                self.set.mark_sent(chunk, now);
            }
        }
        Ok(())
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), AlertmanagerError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        // Read the answer so the connection can be reused, and for a failure's reason.
        let answer = response.bytes().await;
        if !status.is_success() {
            let body = match answer {
                Ok(b) => String::from_utf8_lossy(&b[..b.len().min(300)]).trim().to_owned(),
                Err(e) => format!("(answer unreadable: {})", error_chain(e.without_url())),
            };
            return Err(AlertmanagerError::Status { target: self.target.clone(), status: status.as_u16(), body });
        }
        Ok(())
    }

    fn request_error(&self, e: reqwest::Error) -> AlertmanagerError {
        if e.is_timeout() {
            AlertmanagerError::Timeout { target: self.target.clone(), timeout: self.timeout }
        } else {
            AlertmanagerError::Request { target: self.target.clone(), detail: error_chain(e.without_url()) }
        }
    }
}

/// An error and its causes in one line.
fn error_chain(e: reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[async_trait::async_trait]
impl super::AlertSink for AlertmanagerSink {
    fn kind(&self) -> crate::telemetry::SinkKind {
        crate::telemetry::SinkKind::Alertmanager
    }

    fn target(&self) -> &str {
        &self.target
    }

    /// An alert that cannot be posted, or a batch Alertmanager refuses (a 4xx other than 408
    /// and 429: it names the reason), is rejected: set aside, and the stream goes on.
    async fn send(&mut self, alerts: &[Alert]) -> Result<super::Sent, super::SinkError> {
        let rejected_all = |error: &AlertmanagerError| {
            alerts
                .iter()
                .map(|a| super::Rejected {
                    id: a.id.clone(),
                    alert: serde_json::to_vec(a).unwrap_or_default(),
                    detail: error.to_string(),
                })
                .collect()
        };
        match self.send_alerts(alerts, SystemTime::now()).await {
            Ok(()) => Ok(super::Sent::default()),
            Err(error) if error.is_retryable() => Err(error.into()),
            Err(AlertmanagerError::InvalidAlert { id, reason }) => {
                let detail = AlertmanagerError::InvalidAlert { id: id.clone(), reason }.to_string();
                let rejected = alerts
                    .iter()
                    .filter(|a| a.id == id)
                    .map(|a| super::Rejected {
                        id: a.id.clone(),
                        alert: serde_json::to_vec(a).unwrap_or_default(),
                        detail: detail.clone(),
                    })
                    .collect();
                Ok(super::Sent { rejected, landed: Vec::new() })
            }
            Err(error) => Ok(super::Sent { rejected: rejected_all(&error), landed: Vec::new() }),
        }
    }

    fn observe_event_time(&mut self, t: Nanos) {
        AlertmanagerSink::observe_event_time(self, t)
    }

    async fn tick(&mut self, now: SystemTime) -> Result<bool, super::SinkError> {
        Ok(!AlertmanagerSink::tick(self, now).await?.backing_off)
    }

    fn checkpoint(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.snapshot()).ok()
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), super::SinkError> {
        let snapshot: FiringSnapshot = serde_json::from_value(saved)
            .map_err(|e| super::SinkError::State { kind: "alertmanager", detail: e.to_string() })?;
        AlertmanagerSink::restore(self, snapshot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{HOUR, MINUTE};

    /// The theft alert of `tests/golden/sample-logs.alerts.jsonl`, evidence shortened.
    const THEFT: &str = r#"{"id":"5bd47fbba194f155745192dff01d01c9","rule":"unfamiliar_origin_volume","severity":"critical","account":"contoso","credential":"key:primarymasterkey","origin":{"ip":"203.0.113.77","prefix":"203.0.113.0/24"},"trigger_event_time":"2021-08-17T02:21:04.0501146Z","window":{"start":"2021-08-17T02:13:18.5778706Z","end":"2021-08-17T02:21:04.0501146Z"},"observed_bytes":1076539753,"threshold_bytes":1073741824,"escalation_level":0,"baseline":{"known_origins":1,"typical_hourly_bytes":34833520,"typical_peak_bytes":110600501,"days_of_history":8.1},"evidence":{"request_count":293,"top_operations":[{"name":"ReadFeed","count":147}],"top_collections":[{"name":"shop/customers","count":293}],"top_user_agents":[{"name":"python-requests/2.25.1","count":293}],"activity_ids":["0b5a1f47-0000-4000-8000-000000000000"],"origin_first_seen":"2021-08-17T02:13:18.5778706Z"},"summary":"key:primarymasterkey of account contoso read 1.0 GiB in 8 min from 203.0.113.77, an origin this key never used (usual: 33 MiB/h from 1 origin)"}"#;

    fn theft() -> Alert {
        serde_json::from_str(THEFT).unwrap()
    }

    fn trigger() -> Nanos {
        parse_timestamp("2021-08-17T02:21:04.0501146Z").unwrap()
    }

    fn opts() -> AlertmanagerOptions {
        let mut o = AlertmanagerOptions::new("http://127.0.0.1:9/", 24 * HOUR);
        o.resend_interval = Duration::from_secs(60);
        o.min_firing = Duration::from_secs(300);
        o
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn labels_and_annotations_of_the_theft() {
        let a = theft();
        let l = labels(&a);
        let want: BTreeMap<String, String> = [
            ("alertname", "unfamiliar_origin_volume"),
            ("severity", "critical"),
            ("account", "contoso"),
            ("credential", "key:primarymasterkey"),
            ("origin", "203.0.113.0/24"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(l, want);
        let n = annotations(&a);
        assert_eq!(n.keys().collect::<Vec<_>>(), ["alert_id", "description", "summary"]);
        assert_eq!(n["alert_id"], "5bd47fbba194f155745192dff01d01c9");
        assert_eq!(n["summary"], a.summary);
        let d = &n["description"];
        assert!(d.contains("Read 1.0 GiB (threshold 1.0 GiB) between 2021-08-17T02:13:18.5778706Z and"), "{d}");
        assert!(d.contains("from 203.0.113.77 (origin 203.0.113.0/24), first seen 2021-08-17T02:13:18"), "{d}");
        assert!(d.contains("python-requests/2.25.1 293"), "{d}");
        assert!(d.contains("8 d 2 h of history"), "{d}");
    }

    #[test]
    fn an_alert_about_several_origins_has_no_origin_label() {
        let mut a = theft();
        a.origin = None;
        a.rule = crate::alert::Rule::UnfamiliarOriginsAggregate;
        let l = labels(&a);
        assert!(!l.contains_key("origin"));
        assert_eq!(l["alertname"], "unfamiliar_origins_aggregate");
    }

    #[test]
    fn urls_get_the_api_path_once_and_bad_ones_are_refused() {
        let s = AlertmanagerSink::new(AlertmanagerOptions::new("http://user:pw@am:9093", HOUR)).unwrap();
        assert_eq!(s.target(), "http://am:9093/api/v2/alerts");
        let s = AlertmanagerSink::new(AlertmanagerOptions::new("https://am/prefix/", HOUR)).unwrap();
        assert_eq!(s.target(), "https://am/prefix/api/v2/alerts");
        let s = AlertmanagerSink::new(AlertmanagerOptions::new("http://am:9093/api/v2/alerts", HOUR)).unwrap();
        assert_eq!(s.target(), "http://am:9093/api/v2/alerts");
        assert!(matches!(
            AlertmanagerSink::new(AlertmanagerOptions::new("ftp://am", HOUR)),
            Err(AlertmanagerError::InvalidUrl(_))
        ));
        let mut o = AlertmanagerOptions::new("http://am", HOUR);
        o.resend_interval = Duration::ZERO;
        assert!(matches!(AlertmanagerSink::new(o), Err(AlertmanagerError::InvalidOption { .. })));
    }

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

    #[tokio::test]
    async fn tick_backs_off_exponentially_after_a_failure() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let mut sink = AlertmanagerSink::new(opts()).unwrap();
        let e = sink.send_alerts(&[theft()], at(0)).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert_eq!(sink.firing_len(), 1, "kept for the next try");
        let e = sink.tick(at(0)).await.unwrap_err();
        assert!(matches!(e, AlertmanagerError::Request { .. }), "{e}");
        // Backoff 100 ms, then 200 ms, ...
        let t0 = at(0);
        assert!(sink.tick(t0 + Duration::from_millis(99)).await.unwrap().backing_off);
        assert!(sink.tick(t0 + Duration::from_millis(100)).await.is_err());
        let t1 = t0 + Duration::from_millis(100);
        assert!(sink.tick(t1 + Duration::from_millis(199)).await.unwrap().backing_off);
        assert!(sink.tick(t1 + Duration::from_millis(200)).await.is_err());
    }

    #[tokio::test]
    async fn an_invalid_alert_does_not_hold_back_the_others() {
        let mut sink = AlertmanagerSink::new(opts()).unwrap();
        let mut bad = theft();
        bad.id = "bad".into();
        bad.trigger_event_time = "not a time".into();
        // Nothing listens: the post of the valid one fails first, and that error wins.
        let e = sink.send_alerts(&[bad.clone(), theft()], at(0)).await.unwrap_err();
        assert!(matches!(e, AlertmanagerError::Request { .. }), "{e}");
        assert_eq!(sink.firing_len(), 1);
        // With nothing left to post, the invalid alert's error comes back.
        let e = sink.send_alerts(&[bad], at(0)).await.unwrap_err();
        assert!(matches!(&e, AlertmanagerError::InvalidAlert { id, .. } if id == "bad"), "{e}");
    }

    #[test]
    fn snapshot_restores_the_firing_set() {
        let mut s = AlertmanagerSink::new(opts()).unwrap();
        s.set.upsert(&theft()).unwrap();
        s.observe_event_time(trigger() + HOUR);
        let snap = s.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        let mut r = AlertmanagerSink::new(opts()).unwrap();
        r.restore(serde_json::from_str(&json).unwrap());
        assert_eq!(r.snapshot(), snap);
        assert_eq!(r.firing_len(), 1);
    }
}
