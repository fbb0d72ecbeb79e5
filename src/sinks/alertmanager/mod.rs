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
//! * [`resolve`] is called for its key and origin: it is there for a caller that learns that the
//!   origin became familiar to the key. Nothing calls it yet: so far the service resolves by
//!   event time (`realert`) only;
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

mod firing;
mod payload;

pub use firing::FiringSnapshot;
pub use payload::{annotations, description, labels};

use crate::alert::Alert;
use crate::time::Nanos;
use firing::{fingerprint, FiringSet};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

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
/// gives the defaults. Its `Debug` shows the headers' names only.
#[derive(Clone)]
pub struct AlertmanagerOptions {
    /// Alertmanager's base URL (`http://alertmanager:9093`, with its `--web.route-prefix` if it
    /// has one); `api/v2/alerts` is appended unless the URL already ends with it.
    pub url: String,
    /// Per request (connect included).
    pub timeout: Duration,
    /// Extra request headers (e.g. `Authorization`); never logged.
    pub headers: BTreeMap<String, String>,
    /// Bearer token and CA file (`sinks.alertmanager_token_*`, `sinks.alertmanager_ca_file`).
    pub tls_auth: super::http::HttpTlsAuth,
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
            tls_auth: Default::default(),
            resend_interval: DEFAULT_RESEND_INTERVAL,
            realert,
            min_firing: DEFAULT_MIN_FIRING,
        }
    }
}

impl std::fmt::Debug for AlertmanagerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerOptions")
            .field("url", &super::http::shown_str(&self.url))
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("tls_auth", &self.tls_auth)
            .field("resend_interval", &self.resend_interval)
            .field("realert", &self.realert)
            .field("min_firing", &self.min_firing)
            .finish()
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

        super::http::warn_cleartext_token(&url, &opts.tls_auth, "alertmanager");
        super::http::header_map(&opts.headers)
            .map_err(|(name, reason)| AlertmanagerError::InvalidHeader { name, reason })?;
        let client = super::http::client_builder(&opts.headers, &opts.tls_auth, opts.timeout)
            .map_err(AlertmanagerError::Build)?
            .timeout(opts.timeout)
            .build()
            .map_err(|e| AlertmanagerError::Build(super::http::error_chain(e.without_url())))?;

        Ok(AlertmanagerSink {
            client,
            target: super::http::shown(&url),
            url,
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
                Err(e) => format!("(answer unreadable: {})", super::http::error_chain(e.without_url())),
            };
            return Err(AlertmanagerError::Status { target: self.target.clone(), status: status.as_u16(), body });
        }
        Ok(())
    }

    fn request_error(&self, e: reqwest::Error) -> AlertmanagerError {
        if e.is_timeout() {
            AlertmanagerError::Timeout { target: self.target.clone(), timeout: self.timeout }
        } else {
            AlertmanagerError::Request {
                target: self.target.clone(),
                detail: super::http::error_chain(e.without_url()),
            }
        }
    }
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
    use crate::time::{parse_timestamp, HOUR};
    use std::time::UNIX_EPOCH;

    // Fixtures, shared with the tests of `firing.rs` and `payload.rs`.

    /// The theft alert of `tests/golden/sample-logs.alerts.jsonl`, evidence shortened.
    const THEFT: &str = r#"{"id":"5bd47fbba194f155745192dff01d01c9","rule":"unfamiliar_origin_volume","severity":"critical","account":"contoso","resource_id":"/subscriptions/7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41/resourcegroups/rg-prod/providers/microsoft.documentdb/databaseaccounts/contoso","subscription_id":"7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41","resource_group":"rg-prod","credential":"key:primarymasterkey","origin":{"ip":"203.0.113.77","prefix":"203.0.113.0/24"},"trigger_event_time":"2021-08-17T02:21:04.0501146Z","window":{"start":"2021-08-17T02:13:18.5778706Z","end":"2021-08-17T02:21:04.0501146Z"},"observed_bytes":1076539753,"threshold_bytes":1073741824,"escalation_level":0,"baseline":{"known_origins":1,"typical_hourly_bytes":34833520,"typical_peak_bytes":110600501,"days_of_history":8.1},"evidence":{"request_count":293,"top_operations":[{"name":"ReadFeed","count":147}],"top_collections":[{"name":"shop/customers","count":293}],"top_user_agents":[{"name":"python-requests/2.25.1","count":293}],"activity_ids":["0b5a1f47-0000-4000-8000-000000000000"],"origin_first_seen":"2021-08-17T02:13:18.5778706Z"},"summary":"key:primarymasterkey of account contoso read 1.0 GiB in 8 min from 203.0.113.77, an origin this key never used (usual: 33 MiB/h from 1 origin)"}"#;

    pub(super) fn theft() -> Alert {
        serde_json::from_str(THEFT).unwrap()
    }

    pub(super) fn trigger() -> Nanos {
        parse_timestamp("2021-08-17T02:21:04.0501146Z").unwrap()
    }

    pub(super) fn opts() -> AlertmanagerOptions {
        let mut o = AlertmanagerOptions::new("http://127.0.0.1:9/", 24 * HOUR);
        o.resend_interval = Duration::from_secs(60);
        o.min_firing = Duration::from_secs(300);
        o
    }

    pub(super) fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
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
