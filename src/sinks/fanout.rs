//! The fan-out: one batch of alerts to every sink, in order, the same way in replay and in
//! every service role. It owns what every destination needs and none should write again:
//! - retries with backoff (100 ms, doubling, at most 30 s) while a sink's error is worth a
//!   retry ([`SinkError::is_retryable`]); meanwhile the caller stores no later offset, so a
//!   sink that is down holds the stream back and loses nothing;
//! - readiness (`/readyz` answers 503 while a sink fails) and typed events (logged once per
//!   failing spell, every attempt counted);
//! - alerts a sink refused for good ([`Sent::rejected`]): counted, logged, set aside on the
//!   dead-letter destination with the sink's answer, and the stream goes on;
//! - the delivered-id ledger: an alert id every sink took is not delivered again (kept within
//!   the realert horizon, journaled durably when the state has a store).

use super::{AlertSink, DeadLetters, SinkError};
use crate::alert::Alert;
use crate::telemetry::{AlertsDelivered, Health, ResendFailed, SinkFailed, SinkRecovered, SinkRejected, Stats};
use crate::time::{parse_timestamp, Nanos};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Waits between retries of something outside (a sink, the dead-letter topic): 100 ms,
/// doubling, at most 30 s.
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// A detector state's record of what was delivered (checkpointed with it).
pub struct Ledger<'a> {
    /// Alert ids every sink accepted, with their trigger time, within the realert horizon.
    pub delivered: &'a mut BTreeMap<String, Nanos>,
    /// Next offset after the last alert delivered, per alert-topic partition.
    pub alert_marks: &'a mut BTreeMap<i32, i64>,
    /// Where delivered ids are journaled between checkpoints (none in replay).
    pub journal: Option<&'a mut crate::state::StateStore>,
}

/// Every sink of a run, and where refused alerts go.
pub struct Fanout {
    sinks: Vec<Box<dyn AlertSink>>,
    dead_letters: DeadLetters,
    health: Arc<Health>,
    /// `detect.realert`: how long a delivered id is remembered (event time).
    horizon: Nanos,
    /// Per sink: its last tick failed (logged once per change).
    tick_failing: Vec<bool>,
}

impl Fanout {
    pub fn new(sinks: Vec<Box<dyn AlertSink>>, dead_letters: DeadLetters, horizon: Nanos) -> Fanout {
        let tick_failing = vec![false; sinks.len()];
        Fanout { sinks, dead_letters, health: Arc::new(Health::default()), horizon, tick_failing }
    }

    /// One sink, nothing set aside (replay, training).
    pub fn one(sink: impl AlertSink + 'static, horizon: Nanos) -> Fanout {
        Fanout::new(vec![Box::new(sink)], DeadLetters::Off, horizon)
    }

    /// Reports sink failures to this health (readiness).
    pub fn with_health(mut self, health: Arc<Health>) -> Fanout {
        self.health = health;
        self
    }

    /// Delivers the alerts not in the ledger to every sink, retrying a failing one until it
    /// accepts; refused ones are set aside. Then notes them in the ledger. An error only when
    /// a sink fails in a way no retry mends (a file that cannot be written).
    pub async fn deliver(
        &mut self,
        mut alerts: Vec<Alert>,
        ledger: Ledger<'_>,
        stats: &mut Stats,
    ) -> Result<(), SinkError> {
        alerts.retain(|a| !ledger.delivered.contains_key(&a.id));
        if alerts.is_empty() {
            return Ok(());
        }
        for sink in &mut self.sinks {
            let (kind, mut backoff, mut failing) = (sink.kind(), Backoff::new(), false);
            let sent = loop {
                match sink.send(&alerts).await {
                    Ok(sent) => break sent,
                    Err(error) if error.is_retryable() => {
                        let target = sink.target();
                        SinkFailed { sink: kind, target, error: &error, retrying: true, first: !failing }.emit(stats);
                        if !failing {
                            failing = true;
                            self.health.set_sink_failing(true);
                        }
                        backoff.wait().await;
                    }
                    Err(error) => return Err(error),
                }
            };
            if failing {
                SinkRecovered { sink: kind }.emit();
                self.health.set_sink_failing(false);
            }
            for r in &sent.rejected {
                SinkRejected { sink: kind, target: sink.target(), alert_id: &r.id, error: &r.detail }.emit(stats);
                self.dead_letters.alert(kind.as_str(), &r.alert, &r.detail).await?;
            }
            for (partition, offset) in sent.landed {
                let next = ledger.alert_marks.entry(partition).or_insert(0);
                *next = (*next).max(offset + 1);
            }
            AlertsDelivered { sink: kind, alerts: alerts.len() - sent.rejected.len() }.emit(stats);
        }
        stats.count_alerts(&alerts);
        self.note_delivered(&alerts, ledger);
        Ok(())
    }

    /// Notes alerts every sink took: journaled durably (when there is a store), and kept
    /// within the realert horizon.
    fn note_delivered(&self, alerts: &[Alert], ledger: Ledger<'_>) {
        let trigger = |a: &Alert| parse_timestamp(&a.trigger_event_time).unwrap_or(Nanos::MIN);
        if let Some(store) = ledger.journal {
            let ids: Vec<(String, Nanos)> = alerts.iter().map(|a| (a.id.clone(), trigger(a))).collect();
            // Not fatal: the ids are in memory and go into the next checkpoint; only a crash
            // before it could repeat them (the alert topic's read-back still catches those).
            if let Err(error) = store.journal_delivered(&ids) {
                tracing::warn!(message = "Journal entry for delivered alerts failed.", %error);
            }
        }
        let mut newest = Nanos::MIN;
        for a in alerts {
            let t = trigger(a);
            newest = newest.max(t);
            ledger.delivered.insert(a.id.clone(), t);
        }
        let horizon = self.horizon;
        ledger.delivered.retain(|_, t| *t >= newest.saturating_sub(horizon));
    }

    /// The stream's event-time progress, for the sinks that resolve by it.
    pub fn observe_event_time(&mut self, t: Nanos) {
        if t != Nanos::MIN {
            for s in &mut self.sinks {
                s.observe_event_time(t);
            }
        }
    }

    /// Every sink's periodic work (Alertmanager's re-sends); failures logged once per spell.
    pub async fn tick(&mut self, stats: &mut Stats) {
        let now = SystemTime::now();
        for (sink, failing) in self.sinks.iter_mut().zip(&mut self.tick_failing) {
            match sink.tick(now).await {
                Ok(false) => {}
                Ok(true) => {
                    if std::mem::take(failing) {
                        let (sink, target) = (sink.kind().as_str(), sink.target());
                        tracing::info!(message = "Sink reachable again.", sink, target);
                    }
                }
                Err(error) => {
                    let first = !std::mem::replace(failing, true);
                    ResendFailed { sink: sink.kind(), target: sink.target(), error: &error, first }.emit(stats);
                }
            }
        }
    }

    /// The sinks' state for a checkpoint, by sink kind.
    pub fn checkpoint(&self) -> BTreeMap<String, serde_json::Value> {
        self.sinks.iter().filter_map(|s| Some((s.kind().as_str().to_string(), s.checkpoint()?))).collect()
    }

    /// Gives each sink its state from a checkpoint.
    pub fn restore(&mut self, mut saved: BTreeMap<String, serde_json::Value>) -> Result<(), SinkError> {
        for s in &mut self.sinks {
            if let Some(v) = saved.remove(s.kind().as_str()) {
                s.restore(v)?;
            }
        }
        Ok(())
    }

    /// A restored state's alert-topic marks: read back before the next delivery.
    pub fn restored_marks(&mut self, marks: &BTreeMap<i32, i64>) {
        for s in &mut self.sinks {
            s.restored_marks(marks);
        }
    }

    /// The end of a run: every sink flushed and let go, the dead letters flushed.
    pub async fn close(&mut self) -> Result<(), SinkError> {
        for s in &mut self.sinks {
            s.close().await?;
        }
        self.dead_letters.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::SinkKind;

    /// The golden alerts of the sample logs.
    fn alerts() -> Vec<Alert> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/sample-logs.alerts.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        let alerts: Vec<Alert> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(alerts.len() >= 2);
        alerts
    }

    type Calls = Arc<std::sync::Mutex<Vec<Vec<String>>>>;

    /// A destination that records what it took; it fails `fail` times (retryable) first, and
    /// refuses the alerts whose ids are in `refuse`.
    struct Recording {
        kind: SinkKind,
        fail: usize,
        refuse: Vec<String>,
        calls: Calls,
    }

    #[async_trait::async_trait]
    impl AlertSink for Recording {
        fn kind(&self) -> SinkKind {
            self.kind
        }
        fn target(&self) -> &str {
            "recording"
        }
        async fn send(&mut self, alerts: &[Alert]) -> Result<super::super::Sent, SinkError> {
            self.calls.lock().unwrap().push(alerts.iter().map(|a| a.id.clone()).collect());
            if self.fail > 0 {
                self.fail -= 1;
                return Err(SinkError::Kafka { target: "recording".into(), detail: "broker away".into() });
            }
            let rejected = alerts
                .iter()
                .filter(|a| self.refuse.contains(&a.id))
                .map(|a| super::super::Rejected {
                    id: a.id.clone(),
                    alert: serde_json::to_vec(a).unwrap(),
                    detail: "HTTP 400".into(),
                })
                .collect();
            Ok(super::super::Sent { rejected, landed: vec![(0, 41), (1, 7)] })
        }
    }

    fn recording(kind: SinkKind, fail: usize, refuse: Vec<String>) -> (Box<dyn AlertSink>, Calls) {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        (Box::new(Recording { kind, fail, refuse, calls: calls.clone() }), calls)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_failing_sink_is_retried_until_it_accepts_and_an_id_is_delivered_once() {
        let alerts = alerts();
        let (sink, calls) = recording(SinkKind::Webhook, 2, vec![]);
        let mut fanout = Fanout::new(vec![sink], DeadLetters::Off, 24 * crate::time::HOUR);
        let (mut delivered, mut marks, mut stats) = (BTreeMap::new(), BTreeMap::new(), Stats::default());
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        rt().block_on(fanout.deliver(alerts.clone(), ledger, &mut stats)).unwrap();
        assert_eq!(calls.lock().unwrap().len(), 3, "two failures, then accepted");
        let c = &stats.sinks[&SinkKind::Webhook];
        assert_eq!((c.failures, c.retries, c.delivered), (2, 2, alerts.len() as u64));
        assert_eq!(delivered.len(), alerts.len());
        assert_eq!(marks, BTreeMap::from([(0, 42), (1, 8)]), "next offset after each landing");
        // The same alerts again (a re-raise after a restart): nothing is sent.
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        rt().block_on(fanout.deliver(alerts.clone(), ledger, &mut stats)).unwrap();
        assert_eq!(calls.lock().unwrap().len(), 3);
        assert_eq!(stats.alerts.values().sum::<u64>(), alerts.len() as u64);
    }

    #[test]
    fn a_refused_alert_is_set_aside_and_the_others_go_on_to_every_sink() {
        let alerts = alerts();
        let refused = alerts[0].id.clone();
        let (first, _) = recording(SinkKind::Webhook, 0, vec![refused.clone()]);
        let (second, after) = recording(SinkKind::File, 0, vec![]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let dead = DeadLetters::File(super::super::DeadLetterFile::create(&path).unwrap());
        let mut fanout = Fanout::new(vec![first, second], dead, 24 * crate::time::HOUR);
        let (mut delivered, mut marks, mut stats) = (BTreeMap::new(), BTreeMap::new(), Stats::default());
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        rt().block_on(fanout.deliver(alerts.clone(), ledger, &mut stats)).unwrap();
        rt().block_on(fanout.close()).unwrap();
        let web = &stats.sinks[&SinkKind::Webhook];
        assert_eq!((web.rejected, web.delivered, web.failures), (1, alerts.len() as u64 - 1, 0));
        assert_eq!(after.lock().unwrap()[0].len(), alerts.len(), "the next sink got every alert");
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["reason"], "sink_rejected");
        assert_eq!(lines[0]["location"], "webhook");
        assert_eq!(lines[0]["detail"], "HTTP 400");
        let set_aside: Alert = serde_json::from_str(lines[0]["record"].as_str().unwrap()).unwrap();
        assert_eq!(set_aside.id, refused);
    }

    #[test]
    fn an_error_no_retry_mends_stops_the_delivery_and_records_nothing() {
        struct Broken;
        #[async_trait::async_trait]
        impl AlertSink for Broken {
            fn kind(&self) -> SinkKind {
                SinkKind::File
            }
            fn target(&self) -> &str {
                "/full-disk"
            }
            async fn send(&mut self, _: &[Alert]) -> Result<super::super::Sent, SinkError> {
                Err(SinkError::Io { target: "/full-disk".into(), source: std::io::ErrorKind::StorageFull.into() })
            }
        }
        let mut fanout = Fanout::new(vec![Box::new(Broken)], DeadLetters::Off, 24 * crate::time::HOUR);
        let (mut delivered, mut marks, mut stats) = (BTreeMap::new(), BTreeMap::new(), Stats::default());
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        let e = rt().block_on(fanout.deliver(alerts(), ledger, &mut stats)).unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains("/full-disk"), "{e}");
        assert!(delivered.is_empty(), "nothing counts as delivered");
    }
}
