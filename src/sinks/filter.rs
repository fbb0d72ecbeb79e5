//! Only some alerts to a sink: at or above a severity, of some accounts (`replay
//! --min-severity`, `--account`). The others are not written; the summary and the counters still
//! count every alert the detector raised.

use super::{AlertSink, Sent, SinkError};
use crate::alert::{Alert, Severity};
use crate::telemetry::SinkKind;
use crate::time::Nanos;
use std::time::SystemTime;

pub struct Filtered {
    inner: Box<dyn AlertSink>,
    min_severity: Severity,
    /// Empty: every account. Lowercase, as accounts are in alerts.
    accounts: Vec<String>,
}

impl Filtered {
    pub fn new(inner: Box<dyn AlertSink>, min_severity: Severity, accounts: &[String]) -> Filtered {
        Filtered { inner, min_severity, accounts: accounts.iter().map(|a| a.to_lowercase()).collect() }
    }

    fn wanted(&self, a: &Alert) -> bool {
        a.severity >= self.min_severity && (self.accounts.is_empty() || self.accounts.contains(&a.account))
    }
}

#[async_trait::async_trait]
impl AlertSink for Filtered {
    fn kind(&self) -> SinkKind {
        self.inner.kind()
    }

    fn target(&self) -> &str {
        self.inner.target()
    }

    async fn send(&mut self, alerts: &[Alert]) -> Result<Sent, SinkError> {
        if alerts.iter().all(|a| self.wanted(a)) {
            return self.inner.send(alerts).await;
        }
        let wanted: Vec<Alert> = alerts.iter().filter(|a| self.wanted(a)).cloned().collect();
        if wanted.is_empty() {
            return Ok(Sent::default());
        }
        self.inner.send(&wanted).await
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush().await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }

    fn observe_event_time(&mut self, t: Nanos) {
        self.inner.observe_event_time(t)
    }

    async fn tick(&mut self, now: SystemTime) -> Result<bool, SinkError> {
        self.inner.tick(now).await
    }
}
