//! The fan-out: alerts to every sink, in order, the same way in replay and in every service
//! role. It owns what every destination needs and none should write again:
//! - the outbox ([`Outbox`]): alerts wait there until every sink took them. A sink whose error
//!   is worth a retry ([`SinkError::is_retryable`]) is tried again after a backoff (100 ms,
//!   doubling, at most 30 s) while the others go on; the service goes on consuming until
//!   `sinks.max_pending_alerts` wait ([`Fanout::backpressure`]), then stops consuming (and
//!   stays in its consumer group) until the sink takes them: nothing is dropped. The outbox
//!   is in every checkpoint, and without one the offsets after its oldest alert wait;
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
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Waits between retries of something outside (a sink, the dead-letter topic): 100 ms,
/// doubling, at most 30 s.
pub struct Backoff(Duration);

impl Backoff {
    pub fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.step()).await;
    }

    /// The next wait (and doubles the one after).
    pub fn step(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        now
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

/// Alerts raised but not yet taken by every sink, in the order they were raised. Each detector
/// state has one and its checkpoints hold it, so alerts waiting for a sink that is down survive
/// a restart (and move with a partition to its next owner); its length is bounded by
/// `sinks.max_pending_alerts` through back-pressure ([`Fanout::backpressure`]).
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Outbox {
    alerts: VecDeque<Alert>,
    /// Per alert, the processing time (ms) it was raised at: offsets of messages handled from
    /// then on wait (role all without a state store). Not saved: a restored state has a store.
    #[serde(skip)]
    since: VecDeque<i64>,
    /// Per sink (in delivery order), how many of the first alerts it took. Not saved: after a
    /// restore every sink gets the saved alerts again (at least once).
    #[serde(skip)]
    taken: Vec<usize>,
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// The processing time the oldest waiting alert was raised at.
    pub fn oldest_since(&self) -> Option<i64> {
        self.since.front().copied()
    }

    fn contains(&self, id: &str) -> bool {
        self.alerts.iter().any(|a| a.id == id)
    }
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
    /// Per sink: its last delivery failed (logged once per spell).
    failing: Vec<bool>,
    /// While a sink fails: the wait before the next attempt, and when it is due.
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// `sinks.max_pending_alerts`: the outboxes' total past which consumption stops.
    max_pending: usize,
}

impl Fanout {
    pub fn new(sinks: Vec<Box<dyn AlertSink>>, dead_letters: DeadLetters, horizon: Nanos) -> Fanout {
        let n = sinks.len();
        Fanout {
            sinks,
            dead_letters,
            health: Arc::new(Health::default()),
            horizon,
            tick_failing: vec![false; n],
            failing: vec![false; n],
            backoff: Backoff::new(),
            retry_at: None,
            max_pending: usize::MAX,
        }
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

    /// Alerts that may wait for a failing sink (over all outboxes) before consumption stops.
    pub fn with_max_pending(mut self, max_pending: usize) -> Fanout {
        self.max_pending = max_pending.max(1);
        self
    }

    /// Whether `pending` alerts waiting (all outboxes together) must stop consumption until
    /// the sinks take some.
    pub fn backpressure(&self, pending: usize) -> bool {
        pending >= self.max_pending
    }

    /// When the next attempt at a failing sink is due (none while every sink takes alerts).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Delivers the alerts not in the ledger to every sink, waiting for a failing one until it
    /// accepts (replay, and a shutdown's last alerts); refused ones are set aside. Then notes
    /// them in the ledger. An error only when a sink fails in a way no retry mends (a file
    /// that cannot be written).
    pub async fn deliver(
        &mut self,
        alerts: Vec<Alert>,
        ledger: Ledger<'_>,
        stats: &mut Stats,
    ) -> Result<(), SinkError> {
        let mut outbox = Outbox::default();
        self.offer(&mut outbox, alerts, ledger.delivered, 0);
        self.deliver_waiting(&mut outbox, ledger, stats, None).await
    }

    /// Flushes an outbox, waiting for failing sinks, until it is empty or `deadline` passes.
    pub async fn deliver_waiting(
        &mut self,
        outbox: &mut Outbox,
        mut ledger: Ledger<'_>,
        stats: &mut Stats,
        deadline: Option<Instant>,
    ) -> Result<(), SinkError> {
        loop {
            self.flush(outbox, reborrow(&mut ledger), stats).await?;
            if outbox.is_empty() {
                return Ok(());
            }
            let at = self.retry_at.unwrap_or_else(Instant::now);
            if deadline.is_some_and(|d| at > d) {
                return Ok(());
            }
            tokio::time::sleep_until(at.into()).await;
        }
    }

    /// Queues alerts for delivery: those not in the ledger nor already waiting, raised at
    /// processing time `now_ms`.
    pub fn offer(&self, outbox: &mut Outbox, alerts: Vec<Alert>, delivered: &BTreeMap<String, Nanos>, now_ms: i64) {
        // A restored outbox has no processing times.
        outbox.since.resize(outbox.alerts.len(), 0);
        for a in alerts {
            if !delivered.contains_key(&a.id) && !outbox.contains(&a.id) {
                outbox.alerts.push_back(a);
                outbox.since.push_back(now_ms);
            }
        }
    }

    /// One attempt (unless a failing sink's next try is not due yet) to give every sink the
    /// outbox's alerts it has not taken; refused ones are set aside. The alerts every sink took
    /// leave the outbox and are noted in the ledger. A sink that fails in a way worth a retry
    /// is logged (once per spell), makes `/readyz` answer 503, and is tried again after a
    /// backoff; the other sinks go on. An error only when no retry mends the failure.
    pub async fn flush(&mut self, outbox: &mut Outbox, ledger: Ledger<'_>, stats: &mut Stats) -> Result<(), SinkError> {
        if outbox.is_empty() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        outbox.since.resize(outbox.alerts.len(), 0);
        outbox.taken.resize(self.sinks.len(), 0);
        let mut failed = false;
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            let from = outbox.taken[i];
            if from >= outbox.alerts.len() {
                continue;
            }
            let batch: Vec<Alert> = outbox.alerts.range(from..).cloned().collect();
            let kind = sink.kind();
            let sent = match sink.send(&batch).await {
                Ok(sent) => sent,
                Err(error) if error.is_retryable() => {
                    let first = !std::mem::replace(&mut self.failing[i], true);
                    SinkFailed { sink: kind, target: sink.target(), error: &error, retrying: true, first }.emit(stats);
                    failed = true;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if std::mem::take(&mut self.failing[i]) {
                SinkRecovered { sink: kind }.emit();
            }
            for r in &sent.rejected {
                SinkRejected { sink: kind, target: sink.target(), alert_id: &r.id, error: &r.detail }.emit(stats);
                self.dead_letters.alert(kind.as_str(), &r.alert, &r.detail).await?;
            }
            for (partition, offset) in sent.landed {
                let next = ledger.alert_marks.entry(partition).or_insert(0);
                *next = (*next).max(offset + 1);
            }
            AlertsDelivered { sink: kind, alerts: batch.len() - sent.rejected.len() }.emit(stats);
            outbox.taken[i] = outbox.alerts.len();
        }
        if failed {
            self.retry_at = Some(Instant::now() + self.backoff.step());
        } else {
            self.retry_at = None;
            self.backoff = Backoff::new();
        }
        self.health.set_sink_failing(self.failing.iter().any(|f| *f));
        let done = outbox.taken.iter().copied().min().unwrap_or(outbox.alerts.len());
        if done > 0 {
            let alerts: Vec<Alert> = outbox.alerts.drain(..done).collect();
            outbox.since.drain(..done);
            for t in &mut outbox.taken {
                *t -= done;
            }
            stats.count_alerts(&alerts);
            self.note_delivered(&alerts, ledger);
        }
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

/// A shorter-lived copy of a ledger's borrows, for one call of a loop.
fn reborrow<'b>(ledger: &'b mut Ledger<'_>) -> Ledger<'b> {
    Ledger { delivered: ledger.delivered, alert_marks: ledger.alert_marks, journal: ledger.journal.as_deref_mut() }
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
    fn alerts_wait_in_the_outbox_for_a_failing_sink_while_the_others_take_them_once() {
        let alerts = alerts();
        let (good, good_calls) = recording(SinkKind::Kafka, 0, vec![]);
        let (bad, bad_calls) = recording(SinkKind::Webhook, 2, vec![]);
        let mut fanout = Fanout::new(vec![good, bad], DeadLetters::Off, 24 * crate::time::HOUR).with_max_pending(3);
        let (mut delivered, mut marks, mut stats) = (BTreeMap::new(), BTreeMap::new(), Stats::default());
        let mut outbox = Outbox::default();
        fanout.offer(&mut outbox, alerts[..1].to_vec(), &delivered, 7);
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        rt().block_on(fanout.flush(&mut outbox, ledger, &mut stats)).unwrap();
        assert_eq!((outbox.len(), outbox.oldest_since()), (1, Some(7)), "waits for the failing sink");
        assert!(delivered.is_empty() && fanout.retry_at().is_some());
        // Not due yet: nothing is sent; more alerts queue behind the first (a repeat is not).
        fanout.offer(&mut outbox, alerts.clone(), &delivered, 9);
        assert_eq!(outbox.len(), alerts.len());
        assert!(fanout.backpressure(3) && !fanout.backpressure(2));
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        rt().block_on(fanout.flush(&mut outbox, ledger, &mut stats)).unwrap();
        assert_eq!((good_calls.lock().unwrap().len(), bad_calls.lock().unwrap().len()), (1, 1));
        let ledger = Ledger { delivered: &mut delivered, alert_marks: &mut marks, journal: None };
        rt().block_on(fanout.deliver_waiting(&mut outbox, ledger, &mut stats, None)).unwrap();
        assert!(outbox.is_empty() && fanout.retry_at().is_none());
        let ids = |a: &[Alert]| a.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        // The good sink got each alert once: the first, then the rest.
        assert_eq!(good_calls.lock().unwrap().concat(), ids(&alerts));
        // The failing one got them all in its last, successful attempt.
        assert_eq!(bad_calls.lock().unwrap().last().unwrap(), &ids(&alerts));
        assert_eq!(delivered.len(), alerts.len());
        assert_eq!(stats.alerts.values().sum::<u64>(), alerts.len() as u64);
        // An outbox survives a checkpoint (serde) with its alerts; each sink gets them again.
        let mut outbox = Outbox::default();
        fanout.offer(&mut outbox, alerts.clone(), &BTreeMap::new(), 1);
        let saved = serde_json::to_vec(&outbox).unwrap();
        let back: Outbox = serde_json::from_slice(&saved).unwrap();
        assert_eq!(back.len(), alerts.len());
        assert_eq!(back.oldest_since(), None, "processing times are not saved");
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
