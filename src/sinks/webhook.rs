//! Alerts to an HTTP endpoint: one `POST` per alert, the alert's JSON as the body.
//!
//! # One request per alert
//! Every request carries exactly one alert and names it in the `X-Exfilwatch-Alert-Id` header
//! (the alert's stable [`id`](crate::alert::Alert::id), also in the body). A receiver can thus
//! drop a delivery it already has by that id alone, and a `2xx` answer means "this alert is
//! taken", never "part of a batch was": there is no partial success to interpret.
//!
//! # Delivery semantics
//! * **At least once toward the endpoint.** An alert counts as delivered only when the endpoint
//!   answers `2xx`. A request that times out or whose answer is lost may still have been
//!   processed by the receiver; it is sent again on the next call, so the receiver can see an
//!   id twice and should deduplicate by `X-Exfilwatch-Alert-Id`.
//! * **Exactly once per batch retry.** [`WebhookSink::send_alerts`] stops at the first failure
//!   and remembers, by id, every alert the endpoint accepted (answered `2xx`). A caller that
//!   retries the same batch after an error therefore re-sends only the alerts not yet accepted:
//!   each alert is accepted exactly once, however many retries it takes. The same holds across
//!   batches while the id is remembered: the last [`ACCEPTED_MEMORY`] accepted ids, in
//!   first-in-first-out order, within this process (the memory is not persisted).
//! * Alerts are sent one after another, in the batch's order. Calls are meant to be sequential
//!   (the service awaits one before the next); two concurrent calls with overlapping batches
//!   may both send an alert that neither had seen accepted yet.
//!
//! # Rejected alerts
//! An answer that says the alert itself is wrong (a `4xx` other than `408 Request Timeout` and
//! `429 Too Many Requests`), or an alert that cannot be sent at all, is not retried: retrying
//! would get the same answer forever and hold every later alert back. The alert is settled
//! (remembered like an accepted one), kept for [`WebhookSink::take_rejected`] with the answer,
//! and the batch goes on. The service sets it aside on the dead-letter topic and counts it.
//!
//! Redirects are not followed (a `3xx` is a failure like any other non-`2xx`), so the alert and
//! the configured headers (e.g. `Authorization`) go to the configured endpoint only. TLS is
//! rustls with the `ring` provider and the Mozilla root certificates (webpki-roots); an
//! `HTTPS_PROXY`/`HTTP_PROXY` in the environment is honored.

use crate::alert::Alert;
use crate::formats::AlertFormat;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many accepted alert ids a sink remembers (the oldest are forgotten first).
pub const ACCEPTED_MEMORY: usize = 100_000;

/// The header naming the alert a request carries.
pub const ALERT_ID_HEADER: &str = "x-exfilwatch-alert-id";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse, or is not `http://` / `https://` with a host. The URL itself is
    /// left out of the message: it may hold credentials.
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(String),
    /// A configured header has an invalid name or value (the value is never shown).
    #[error("invalid webhook header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    #[error("the webhook timeout must be greater than zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the webhook HTTP client: {0}")]
    Build(String),
    /// An alert that can never be sent as it is (its id is not a valid header value, or it
    /// does not serialize). Retrying does not help.
    #[error("alert {id:?} cannot be sent: {reason}")]
    InvalidAlert { id: String, reason: String },
    /// No answer: connection refused or reset, DNS, TLS, or the connection closed early.
    #[error("POST to {target} for alert {id} failed: {detail}")]
    Request { target: String, id: String, detail: String },
    /// The endpoint answered, but not with `2xx`.
    #[error("POST to {target} for alert {id} was answered with HTTP {status}")]
    Status { target: String, id: String, status: u16 },
    /// No complete answer within the configured timeout.
    #[error("POST to {target} for alert {id} timed out after {timeout:?}")]
    Timeout { target: String, id: String, timeout: Duration },
}

impl WebhookError {
    /// Whether sending the same alert again may succeed: false for an answer that refuses the
    /// alert itself (4xx other than 408 and 429) and for an alert that cannot be sent.
    pub fn is_retryable(&self) -> bool {
        match self {
            WebhookError::Status { status, .. } => !((400..500).contains(status) && *status != 408 && *status != 429),
            WebhookError::InvalidAlert { .. } => false,
            _ => true,
        }
    }
}

/// An alert the endpoint refused for good, with the reason.
#[derive(Debug)]
pub struct Rejected {
    pub id: String,
    /// The alert as it was sent (its JSON).
    pub alert: Vec<u8>,
    pub error: WebhookError,
}

/// The ids the endpoint has accepted, bounded, oldest forgotten first.
struct Accepted {
    ids: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl Accepted {
    fn new(capacity: usize) -> Self {
        Accepted { ids: HashSet::new(), order: VecDeque::new(), capacity }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.capacity == 0 || self.ids.contains(id) {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.ids.insert(Arc::clone(&id));
        self.order.push_back(id);
    }
}

/// POSTs alerts as JSON to an HTTP endpoint.
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL without user info, query or fragment: safe to log.
    target: String,
    timeout: Duration,
    accepted: Mutex<Accepted>,
    /// Refused for good since the last [`WebhookSink::take_rejected`].
    rejected: Mutex<Vec<Rejected>>,
    /// The body's format (native JSON by default).
    format: AlertFormat,
}

impl WebhookSink {
    /// `url` http:// or https://; `timeout` per request; `headers` extra request headers (e.g.
    /// Authorization).
    pub fn new(url: &str, timeout: Duration, headers: &BTreeMap<String, String>) -> Result<Self, WebhookError> {
        Self::with_auth(url, timeout, headers, &super::http::HttpTlsAuth::default())
    }

    /// As [`WebhookSink::new`], with a bearer token and a CA file (`sinks.webhook_token_*`,
    /// `sinks.webhook_ca_file`).
    pub fn with_auth(
        url: &str,
        timeout: Duration,
        headers: &BTreeMap<String, String>,
        auth: &super::http::HttpTlsAuth,
    ) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(url).map_err(|e| WebhookError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::InvalidUrl(format!("scheme {:?} is not http or https", url.scheme())));
        }
        if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
            return Err(WebhookError::InvalidUrl("no host".to_owned()));
        }
        if timeout.is_zero() {
            return Err(WebhookError::ZeroTimeout);
        }

        super::http::warn_cleartext_token(&url, auth, "webhook");
        // A header's own error names it; the rest (token, CA file) is a build error.
        super::http::header_map(headers).map_err(|(name, reason)| WebhookError::InvalidHeader { name, reason })?;
        let client = super::http::client_builder(headers, auth, timeout)
            .map_err(WebhookError::Build)?
            .build()
            .map_err(|e| WebhookError::Build(super::http::error_chain(e.without_url())))?;

        Ok(WebhookSink {
            client,
            target: super::http::shown(&url),
            url,
            timeout,
            accepted: Mutex::new(Accepted::new(ACCEPTED_MEMORY)),
            rejected: Mutex::new(Vec::new()),
            format: AlertFormat::Native,
        })
    }

    /// Posts each alert in this format (native JSON by default).
    pub fn with_format(mut self, format: AlertFormat) -> Self {
        self.format = format;
        self
    }

    /// POSTs each alert (one request per alert, body = the alert's JSON, Content-Type:
    /// application/json, plus a header `X-Exfilwatch-Alert-Id: <id>`) that this sink has not
    /// accepted before, in order.
    ///
    /// Returns Ok(()) once every alert was accepted (a 2xx response) or refused for good (see
    /// "Rejected alerts": those wait in [`WebhookSink::take_rejected`]). On the first failure
    /// worth a retry (connection error, timeout, 5xx, 408, 429) it returns Err; the alerts
    /// settled before it are remembered (by id) and are not sent again by the next call, so a
    /// caller that retries the same batch delivers each alert exactly once.
    pub async fn send_alerts(&self, alerts: &[Alert]) -> Result<(), WebhookError> {
        for alert in alerts {
            if self.lock_accepted().contains(&alert.id) {
                continue;
            }
            match self.post(alert).await {
                Ok(()) => {}
                Err(error) if !error.is_retryable() => {
                    let body = self.format.to_vec(alert);
                    self.lock_rejected().push(Rejected { id: alert.id.clone(), alert: body, error });
                }
                Err(error) => return Err(error),
            }
            self.lock_accepted().insert(&alert.id);
        }
        Ok(())
    }

    /// The alerts refused for good since the last call.
    pub fn take_rejected(&self) -> Vec<Rejected> {
        std::mem::take(&mut *self.lock_rejected())
    }

    fn lock_rejected(&self) -> std::sync::MutexGuard<'_, Vec<Rejected>> {
        self.rejected.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where it posts (for logs): scheme, host, port and path; never user info, query string
    /// or headers.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// One alert, one request; Ok once the endpoint answered 2xx.
    async fn post(&self, alert: &Alert) -> Result<(), WebhookError> {
        let invalid = |reason: String| WebhookError::InvalidAlert { id: alert.id.clone(), reason };
        let id_value =
            HeaderValue::from_str(&alert.id).map_err(|_| invalid("id is not a valid header value".into()))?;
        let body = self.format.to_vec(alert);

        let response = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ALERT_ID_HEADER, id_value)
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error(alert, e))?;

        let status = response.status();
        if !status.is_success() {
            return Err(WebhookError::Status {
                target: self.target.clone(),
                id: alert.id.clone(),
                status: status.as_u16(),
            });
        }
        // Accepted. Read the (ignored) answer body so the connection can be reused; an error
        // here does not undo the acceptance.
        if let Err(error) = response.bytes().await {
            tracing::debug!(message = "Webhook answer body unreadable.", endpoint = %self.target, error = %error.without_url());
        }
        Ok(())
    }

    fn request_error(&self, alert: &Alert, e: reqwest::Error) -> WebhookError {
        let (target, id) = (self.target.clone(), alert.id.clone());
        if e.is_timeout() {
            WebhookError::Timeout { target, id, timeout: self.timeout }
        } else {
            WebhookError::Request { target, id, detail: super::http::error_chain(e.without_url()) }
        }
    }

    /// Never held across an `.await`. A panic while it was held cannot leave the memory
    /// inconsistent in a way that matters (at worst an id is remembered or not), so a poisoned
    /// lock is used as is.
    fn lock_accepted(&self) -> std::sync::MutexGuard<'_, Accepted> {
        self.accepted.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl super::AlertSink for WebhookSink {
    fn kind(&self) -> crate::telemetry::SinkKind {
        crate::telemetry::SinkKind::Webhook
    }

    fn target(&self) -> &str {
        &self.target
    }

    async fn send(&mut self, alerts: &[Alert]) -> Result<super::Sent, super::SinkError> {
        // On an error, alerts refused before it stay in `take_rejected` for the retry's answer
        // (the retry does not send them again).
        self.send_alerts(alerts).await?;
        // Refused for good (e.g. HTTP 400).
        let rejected = self
            .take_rejected()
            .into_iter()
            .map(|r| super::Rejected { id: r.id, alert: r.alert, detail: r.error.to_string() })
            .collect();
        Ok(super::Sent { rejected, landed: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_memory_forgets_the_oldest_first() {
        let mut m = Accepted::new(3);
        for id in ["a", "b", "c"] {
            m.insert(id);
        }
        m.insert("b"); // already there: no change in order
        m.insert("d");
        assert!(!m.contains("a"));
        assert!(m.contains("b") && m.contains("c") && m.contains("d"));
        m.insert("e");
        assert!(!m.contains("b"));
        assert_eq!((m.ids.len(), m.order.len()), (3, 3));
    }

    #[test]
    fn accepted_memory_holds_the_documented_number() {
        let mut m = Accepted::new(ACCEPTED_MEMORY);
        for i in 0..=ACCEPTED_MEMORY {
            m.insert(&i.to_string());
        }
        assert_eq!(m.ids.len(), ACCEPTED_MEMORY);
        assert!(!m.contains("0"));
        assert!(m.contains("1") && m.contains(&ACCEPTED_MEMORY.to_string()));
    }

    #[test]
    fn target_hides_credentials_and_query() {
        let headers = BTreeMap::from([("Authorization".to_owned(), "Bearer s3cret".to_owned())]);
        let s = WebhookSink::new(
            "https://user:pa55@hooks.example.com:8443/alerts/in?token=t0k#frag",
            Duration::from_secs(1),
            &headers,
        )
        .unwrap();
        assert_eq!(s.target(), "https://hooks.example.com:8443/alerts/in");
    }
}
