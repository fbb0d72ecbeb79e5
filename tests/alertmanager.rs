//! `AlertmanagerSink` against a real Alertmanager 0.25 (`support/monitoring.rs` starts one per
//! test on a free loopback port). The alerts are the real ones: `exfilwatch replay` over the
//! shipped sample logs (the ChaosDB-style theft: one `volume_anomaly`, one
//! `unfamiliar_origin_volume`). Everything is read back through Alertmanager's API v2
//! (`GET /api/v2/alerts`), which lists the alerts that are not resolved.
//!
//! Alertmanager comes from `scripts/with-monitoring.sh` (`make test`); without it these tests fail.

#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/monitoring.rs"]
mod monitoring;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/tls.rs"]
mod tls;

use exfilwatch::alert::{Alert, Rule};
use exfilwatch::sinks::alertmanager::{AlertmanagerOptions, AlertmanagerSink};
use exfilwatch::time::{parse_timestamp, Nanos, HOUR};
use monitoring::{wait_for, Server};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs");
const REALERT: Nanos = 24 * HOUR;
const WAIT: Duration = Duration::from_secs(30);

/// The alerts `exfilwatch replay` raises over the sample logs.
fn sample_alerts() -> Vec<Alert> {
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch")).args(["replay", "-q", SAMPLE]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alerts: Vec<Alert> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rules: Vec<Rule> = alerts.iter().map(|a| a.rule).collect();
    assert_eq!(rules, [Rule::VolumeAnomaly, Rule::UnfamiliarOriginVolume], "the sample's theft alerts");
    alerts
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn sink(am: &Server, resend: Duration, min_firing: Duration) -> AlertmanagerSink {
    let mut o = AlertmanagerOptions::new(am.url(), REALERT);
    o.resend_interval = resend;
    o.min_firing = min_firing;
    o.timeout = Duration::from_secs(5);
    AlertmanagerSink::new(o).unwrap()
}

/// Alertmanager's unresolved alerts, by `alert_id` annotation.
fn listed(am: &Server) -> BTreeMap<String, Value> {
    let v = am.get_json("/api/v2/alerts");
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|a| (a["annotations"]["alert_id"].as_str().unwrap_or_default().to_owned(), a.clone()))
        .collect()
}

/// Waits until Alertmanager lists exactly `ids` (and has processed them: state `active`).
fn wait_listed(am: &Server, ids: &[&str]) -> BTreeMap<String, Value> {
    let mut want: Vec<&str> = ids.to_vec();
    want.sort();
    wait_for(WAIT, &format!("Alertmanager to list exactly {want:?}"), || {
        let l = listed(am);
        let have: Vec<&str> = l.keys().map(String::as_str).collect();
        (have == want && l.values().all(|a| a["status"]["state"] == "active")).then_some(l)
    })
}

fn ms(t: Nanos) -> i64 {
    t.div_euclid(1_000_000)
}

/// An API time stamp (millisecond precision) in milliseconds.
fn api_ms(v: &Value) -> i64 {
    ms(parse_timestamp(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap())
}

fn wall_ns(t: SystemTime) -> Nanos {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as Nanos
}

fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_theft_reaches_alertmanager_with_its_labels_annotations_and_start() {
    let am = monitoring::alertmanager();
    let mut alerts = sample_alerts();
    // As `[enrich]` stamps it (tests/enrich.rs): the owner becomes two labels and annotations.
    if let Some(o) = alerts[1].origin.as_mut() {
        o.info = exfilwatch::enrich::OriginInfo {
            asn: Some(64500),
            as_name: Some("Example Hosting".into()),
            country: Some("NL".into()),
            ..Default::default()
        };
    }
    let (volume, theft) = (&alerts[0], &alerts[1]);
    let mut sink = sink(&am, Duration::from_secs(60), Duration::from_secs(300));
    let now = SystemTime::now();
    rt().block_on(sink.send_alerts(&alerts, now)).unwrap();
    assert_eq!(sink.firing_len(), 2);

    let l = wait_listed(&am, &[&volume.id, &theft.id]);
    let t = &l[&theft.id];
    assert_eq!(
        strings(&t["labels"]),
        map(&[
            ("alertname", "unfamiliar_origin_volume"),
            ("severity", "critical"),
            ("account", "contoso"),
            ("subscription_id", "7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41"),
            ("resource_group", "rg-prod"),
            ("credential", "key:primarymasterkey"),
            ("origin", "203.0.113.0/24"),
            ("origin_asn", "AS64500"),
            ("origin_country", "NL"),
        ])
    );
    let ann = strings(&t["annotations"]);
    assert_eq!(
        ann.keys().collect::<Vec<_>>(),
        ["alert_id", "description", "new_user_agents", "origin_owner", "resource_id", "summary"]
    );
    assert_eq!(ann["origin_owner"], "AS64500 Example Hosting, NL");
    assert_eq!(ann["new_user_agents"], "python-requests/2.25.1");
    assert_eq!(ann["summary"], theft.summary);
    assert!(ann["summary"].contains("read 1.0 GiB in 8 min from 203.0.113.77"), "{}", ann["summary"]);
    assert!(ann["description"].contains("from 203.0.113.77 (origin 203.0.113.0/24)"), "{}", ann["description"]);
    assert_eq!(api_ms(&t["startsAt"]), ms(parse_timestamp(&theft.trigger_event_time).unwrap()));
    assert_eq!(api_ms(&t["startsAt"]), ms(parse_timestamp("2021-08-17T02:21:04.0501146Z").unwrap()));
    // Firing for four resend intervals from the post, as Prometheus does.
    assert_eq!(api_ms(&t["endsAt"]), ms(wall_ns(now) + 4 * 60_000_000_000));

    let v = &l[&volume.id];
    assert_eq!(
        strings(&v["labels"]),
        map(&[
            ("alertname", "volume_anomaly"),
            ("severity", "medium"),
            ("account", "contoso"),
            ("subscription_id", "7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41"),
            ("resource_group", "rg-prod"),
            ("credential", "key:primarymasterkey"),
        ]),
        "an alert about several origins has no origin label"
    );
    assert_eq!(v["annotations"]["summary"].as_str(), Some(volume.summary.as_str()));
    assert_eq!(api_ms(&v["startsAt"]), ms(parse_timestamp(&volume.trigger_event_time).unwrap()));
}

#[test]
fn firing_alerts_are_resent_and_resolve_after_realert_of_event_time() {
    let am = monitoring::alertmanager();
    let alerts = sample_alerts();
    let (volume, theft) = (&alerts[0], &alerts[1]);
    let rt = rt();
    let mut sink = sink(&am, Duration::from_secs(60), Duration::ZERO);
    // Sent a minute ago (as far as the sink knows): the wall clock passed to the sink is what
    // it puts in endsAt, and Alertmanager judges endsAt by its own clock, so the times given
    // are never ahead of the real one.
    let t0 = SystemTime::now() - Duration::from_secs(60);
    rt.block_on(sink.send_alerts(&alerts, t0)).unwrap();
    let first = wait_listed(&am, &[&volume.id, &theft.id]);

    // Nothing is due before the resend interval; at it, both are posted again and their endsAt
    // moves forward in Alertmanager.
    let r = rt.block_on(sink.tick(t0 + Duration::from_secs(59))).unwrap();
    assert_eq!((r.resent, r.resolved), (0, 0));
    let t1 = SystemTime::now();
    let r = rt.block_on(sink.tick(t1)).unwrap();
    assert_eq!((r.resent, r.resolved), (2, 0));
    let ends = ms(wall_ns(t1) + 4 * 60_000_000_000);
    wait_for(WAIT, "the re-sent endsAt", || listed(&am).values().all(|a| api_ms(&a["endsAt"]) == ends).then_some(()));
    assert!(api_ms(&first[&theft.id]["endsAt"]) < ends);

    // Event time one nanosecond short of the volume alert's trigger + realert: both still fire.
    let volume_at = parse_timestamp(&volume.trigger_event_time).unwrap();
    let theft_at = parse_timestamp(&theft.trigger_event_time).unwrap();
    assert!(volume_at < theft_at);
    sink.observe_event_time(volume_at + REALERT - 1);
    let r = rt.block_on(sink.tick(t1)).unwrap();
    assert_eq!((r.resent, r.resolved), (0, 0));
    assert_eq!(listed(&am).len(), 2);

    // At it, the volume alert is posted with endsAt = now and leaves Alertmanager's list.
    sink.observe_event_time(volume_at + REALERT);
    let now = SystemTime::now();
    let r = rt.block_on(sink.tick(now)).unwrap();
    assert_eq!((r.resent, r.resolved), (0, 1));
    assert_eq!(sink.firing_len(), 1);
    wait_listed(&am, &[&theft.id]);

    // Then the theft, at its own horizon.
    sink.observe_event_time(theft_at + REALERT);
    let r = rt.block_on(sink.tick(SystemTime::now())).unwrap();
    assert_eq!((r.resent, r.resolved), (0, 1));
    assert_eq!(sink.firing_len(), 0);
    wait_listed(&am, &[]);
    // Alertmanager counted two resolved alerts received (not merely two that timed out).
    let resolved = wait_for(WAIT, "alertmanager_alerts_received_total{status=\"resolved\"}", || {
        let (_, metrics) = am.get("/metrics").ok()?;
        metrics
            .lines()
            .find(|l| l.starts_with("alertmanager_alerts_received_total{status=\"resolved\",version=\"v2\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    });
    assert_eq!(resolved, 2.0);
    // Nothing left to do.
    let r = rt.block_on(sink.tick(SystemTime::now() + Duration::from_secs(3600))).unwrap();
    assert_eq!((r.resent, r.resolved), (0, 0));
}

#[test]
fn a_familiar_origin_resolves_its_alerts_only() {
    let am = monitoring::alertmanager();
    let alerts = sample_alerts();
    let (volume, theft) = (&alerts[0], &alerts[1]);
    let rt = rt();
    let mut sink = sink(&am, Duration::from_secs(60), Duration::from_secs(120));
    // First accepted two minutes ago, as far as the sink knows (see the test above).
    let t0 = SystemTime::now() - Duration::from_secs(120);
    rt.block_on(sink.send_alerts(&alerts, t0)).unwrap();
    wait_listed(&am, &[&volume.id, &theft.id]);

    assert_eq!(sink.resolve("contoso", "key:primarymasterkey", "198.51.100.0/24"), 0);
    assert_eq!(sink.resolve("contoso", "key:primarymasterkey", "203.0.113.0/24"), 1);
    // Not before min_firing (120 s) of wall time since it was first accepted.
    let r = rt.block_on(sink.tick(t0 + Duration::from_secs(30))).unwrap();
    assert_eq!(r.resolved, 0);
    assert_eq!(listed(&am).len(), 2);
    let r = rt.block_on(sink.tick(SystemTime::now())).unwrap();
    assert_eq!((r.resolved, r.resent), (1, 1), "the theft resolved, the volume alert re-sent");
    wait_listed(&am, &[&volume.id]);
}

#[test]
fn alertmanager_away_then_back_gets_the_alerts_kept_in_the_firing_set() {
    let am = monitoring::alertmanager();
    let alerts = sample_alerts();
    let rt = rt();
    // A port where nothing listens: refused, retryable, alerts kept.
    let mut o = AlertmanagerOptions::new(format!("http://{}", monitoring::free_port()), REALERT);
    o.timeout = Duration::from_secs(2);
    let mut away = AlertmanagerSink::new(o).unwrap();
    let t0 = SystemTime::now();
    let e = rt.block_on(away.send_alerts(&alerts, t0)).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(away.firing_len(), 2);
    // While backing off, tick tries nothing.
    assert!(rt.block_on(away.tick(t0)).is_err());
    assert!(rt.block_on(away.tick(t0 + Duration::from_millis(50))).unwrap().backing_off);

    // The same firing set, moved to a sink that reaches Alertmanager (as after a restart with
    // the saved state): its first tick posts both.
    let mut back = sink(&am, Duration::from_secs(60), Duration::from_secs(300));
    back.restore(away.snapshot());
    let r = rt.block_on(back.tick(SystemTime::now())).unwrap();
    assert_eq!((r.resent, r.resolved), (2, 0));
    wait_listed(&am, &[&alerts[0].id, &alerts[1].id]);
}

/// The whole path: the sample logs on a (mock-cluster) topic, `exfilwatch run` with
/// `sinks.alertmanager_url`, and the theft read back through Alertmanager's API v2.
#[test]
fn the_service_posts_the_theft_to_alertmanager() {
    let am = monitoring::alertmanager();
    let s = inproc::Setup::new();
    s.produce(&s.msgs);
    let extra = format!("alertmanager_url = \"{}\"\nalertmanager_timeout = \"5s\"", am.url());
    let mut svc = inproc::Service::start(inproc::config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), &extra));
    sample::wait_for(inproc::DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    let ids: Vec<&str> = s.expected.keys().map(String::as_str).collect();
    let listed = wait_listed(&am, &ids);
    svc.stop();
    let theft = s.expected.values().find(|a| a["rule"] == "unfamiliar_origin_volume").expect("the theft alert");
    let t = &listed[theft["id"].as_str().unwrap_or_default()];
    assert_eq!(
        strings(&t["labels"]),
        map(&[
            ("alertname", "unfamiliar_origin_volume"),
            ("severity", "critical"),
            ("account", "contoso"),
            ("subscription_id", "7e2f6b1c-0d5a-4c1e-9a57-3f0b8c9d2e41"),
            ("resource_group", "rg-prod"),
            ("credential", "key:primarymasterkey"),
            ("origin", "203.0.113.0/24"),
        ])
    );
    assert_eq!(t["annotations"]["summary"], theft["summary"]);
    let trigger = parse_timestamp(theft["trigger_event_time"].as_str().unwrap_or_default()).unwrap();
    assert_eq!(api_ms(&t["startsAt"]), ms(trigger));
}

/// Alertmanager behind https (a TLS-terminating proxy whose certificate a CA of the test
/// signed, in front of the real Alertmanager): with the system's and Mozilla's roots the sink
/// refuses it and posts nothing; with `sinks.alertmanager_ca_file` naming that CA the theft's
/// alerts arrive.
#[test]
fn the_sink_trusts_alertmanagers_ca_file_over_https() {
    let am = monitoring::alertmanager();
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::Pki::new(dir.path(), "alertmanager");
    let backend: std::net::SocketAddr = am.url().trim_start_matches("http://").parse().unwrap();
    let proxy = tls::TlsProxy::start(&pki, backend, false);
    let url = format!("https://localhost:{}", proxy.addr.port());
    let alerts = sample_alerts();
    let mut o = AlertmanagerOptions::new(url, REALERT);
    o.timeout = Duration::from_secs(5);

    let mut untrusting = AlertmanagerSink::new(o.clone()).unwrap();
    let e = rt().block_on(untrusting.send_alerts(&alerts, SystemTime::now())).unwrap_err();
    let chain = format!("{e} {:?}", std::error::Error::source(&e));
    assert!(chain.to_ascii_lowercase().contains("certificate"), "{chain}");
    assert_eq!(proxy.handshakes(), 0);

    o.tls_auth = exfilwatch::config::HttpTlsAuth { bearer_token: None, ca_file: Some(pki.ca_file.clone()) };
    let mut trusting = AlertmanagerSink::new(o).unwrap();
    rt().block_on(trusting.send_alerts(&alerts, SystemTime::now())).unwrap();
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    wait_listed(&am, &ids);
    assert!(proxy.handshakes() >= 1);
}
