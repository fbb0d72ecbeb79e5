//! `exfilwatch run` under faults the real broker cannot produce on cue, with librdkafka's mock
//! cluster (`rdkafka::mocking`, a Kafka-protocol cluster inside this process on a loopback
//! port): broker down at start, broker down mid-stream, request errors; and a webhook sink
//! that fails for a while, then recovers. The service runs in-process (`service::run_with`),
//! so the tests watch its health and progress directly and query `/readyz` over HTTP. Every
//! wait polls an observable condition against a deadline.

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/script_server.rs"]
mod script_server;
use inproc::{config, file_alerts, Service, Setup, DEADLINE};
use kafka_client::read_until;
use sample::{by_id, wait_for};

#[test]
fn broker_down_at_start_then_up_loses_nothing() {
    let s = Setup::new();
    s.produce(&s.msgs);
    s.mock().broker_down(-1).unwrap();
    let mut svc = Service::start(config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), ""));
    let (code, body) = svc.readyz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("Kafka"), "{body}");
    // The client's own report that the broker is unreachable (not just "not seen yet").
    wait_for(DEADLINE, "the service to notice the broker is down", || svc.health.kafka_reported() == Some(false));
    let (code, body) = svc.readyz();
    assert_eq!(code, 503, "{body}");
    assert_eq!(svc.health.messages(), 0);

    s.mock().broker_up(-1).unwrap();
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "ready", || svc.readyz().0 == 200);
    let stats = svc.stop();
    assert_eq!(stats.records_total(), s.records, "every record read once");
    let got = file_alerts(&s.alerts_file());
    assert_eq!(got.len(), s.expected.len(), "no alert twice");
    assert_eq!(by_id(&got), s.expected);
    assert_eq!(s.committed(), s.msgs.len() as i64, "everything processed is committed");
}

#[test]
fn broker_down_mid_stream_resumes_without_loss_or_repeat() {
    let s = Setup::new();
    let half = s.msgs.len() / 2;
    s.produce(&s.msgs[..half]);
    let mut svc = Service::start(config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), ""));
    wait_for(DEADLINE, "the first half", || svc.health.messages() == half as u64);
    wait_for(DEADLINE, "ready", || svc.readyz().0 == 200);

    s.mock().broker_down(-1).unwrap();
    wait_for(DEADLINE, "not ready while the broker is down", || {
        let (code, body) = svc.readyz();
        code == 503 && body.contains("Kafka")
    });
    // Produce the rest while the broker is down (the producer buffers), then bring it back.
    let (bootstrap, rest) = (s.bootstrap.clone(), s.msgs[half..].to_vec());
    let producer = std::thread::spawn(move || kafka_client::produce_compressed(&bootstrap, "logs", &rest, "lz4"));
    assert_eq!(svc.health.messages(), half as u64, "nothing to read while the broker is down");
    s.mock().broker_up(-1).unwrap();
    producer.join().unwrap();
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "ready again", || svc.readyz().0 == 200);
    svc.stop();
    let got = file_alerts(&s.alerts_file());
    assert_eq!(got.len(), s.expected.len(), "no alert twice");
    assert_eq!(by_id(&got), s.expected);
    assert_eq!(s.committed(), s.msgs.len() as i64);
}

#[test]
fn request_errors_on_fetch_commit_and_produce_are_retried() {
    let s = Setup::new();
    s.produce(&s.msgs);
    use RDKafkaRespErr::*;
    s.mock().request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    s.mock().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE],
    );
    s.mock().request_errors(
        RDKafkaApiKey::Produce,
        &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT],
    );
    let cfg = config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), "kafka_topic = \"alerts\"");
    let mut svc = Service::start(cfg);
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    // Auto-commits (every 200 ms here) are retried past the injected errors.
    wait_for(DEADLINE, "the commit of everything", || s.committed() == s.msgs.len() as i64);
    svc.stop();
    let topic = read_until(&s.bootstrap, "alerts", DEADLINE, |m| m.len() >= s.expected.len());
    assert_eq!(topic.len(), s.expected.len(), "each alert once on the alert topic");
    assert_eq!(by_id(&topic), s.expected);
    assert_eq!(by_id(&file_alerts(&s.alerts_file())), s.expected);
}

#[test]
fn failing_webhook_holds_offsets_back_then_delivers_each_alert_once() {
    use script_server::{Reply, Server};
    let s = Setup::new();
    s.produce(&s.msgs);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // Eight failures: about 25 s of backoff (0.1 s doubling), time for every message.
    let server = rt.block_on(Server::start(vec![Reply::Fail; 8]));
    let extra = format!("webhook_url = \"{}\"\nwebhook_timeout = \"2s\"", server.url());
    let mut svc = Service::start(config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), &extra));

    // While the webhook fails, the service is not ready; detection goes on (the alerts wait,
    // far below sinks.max_pending_alerts), but neither the message whose records raised the
    // first waiting alert nor any after it is committed.
    wait_for(DEADLINE, "the webhook's failures", || server.requests().len() >= 3);
    let (code, body) = svc.readyz();
    assert_eq!(code, 503);
    assert!(body.contains("sink"), "{body}");
    wait_for(DEADLINE, "every message handled while the sink fails", || svc.messages() >= s.msgs.len() as u64);
    assert!(server.requests().iter().all(|r| r.answered != Some(200)), "still failing");
    assert!(s.committed() < s.msgs.len() as i64, "offsets held back while the sink fails");

    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "ready again", || svc.readyz().0 == 200);
    svc.stop();
    let accepted: Vec<Vec<u8>> =
        server.requests().into_iter().filter(|r| r.answered == Some(200)).map(|r| r.body).collect();
    assert_eq!(accepted.len(), s.expected.len(), "each alert accepted exactly once");
    assert_eq!(by_id(&accepted), s.expected);
    assert_eq!(s.committed(), s.msgs.len() as i64);
}

#[test]
fn an_alert_the_webhook_refuses_for_good_is_dead_lettered_and_the_stream_goes_on() {
    use script_server::{Reply, Server};
    let s = Setup::new();
    s.mock().create_topic("dead", 1, 1).unwrap();
    s.produce(&s.msgs);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The receiver refuses the first alert it gets (HTTP 400: retrying would never end).
    let server = rt.block_on(Server::start(vec![Reply::Status(400)]));
    let extra = format!("webhook_url = \"{}\"\nwebhook_timeout = \"2s\"", server.url());
    let mut cfg = config(&s.bootstrap, "logs", "exfilwatch", &s.alerts_file(), &extra);
    cfg.kafka.dead_letter_topic = "dead".into();
    let mut svc = Service::start(cfg);
    wait_for(DEADLINE, "every message", || svc.messages() >= s.msgs.len() as u64);
    let stats = svc.stop();

    let requests = server.requests();
    assert_eq!(requests[0].answered, Some(400));
    let refused: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let accepted: Vec<Vec<u8>> = requests.iter().filter(|r| r.answered == Some(200)).map(|r| r.body.clone()).collect();
    assert_eq!(accepted.len(), s.expected.len() - 1, "every other alert accepted once; the refused one not retried");
    let mut all = by_id(&accepted);
    all.insert(refused["id"].as_str().unwrap().to_string(), refused.clone());
    assert_eq!(all, s.expected);
    // The refused alert is on the dead-letter topic with the reason and the sink's answer.
    let dead = kafka_client::read_all_with_headers(&s.bootstrap, "dead");
    let set_aside: Vec<_> =
        dead.iter().filter(|(_, h)| h.get("exfilwatch.reason").map(String::as_str) == Some("sink_rejected")).collect();
    assert_eq!(set_aside.len(), 1, "{dead:?}");
    let (body, headers) = set_aside[0];
    assert_eq!(serde_json::from_slice::<serde_json::Value>(body).unwrap()["id"], refused["id"]);
    assert_eq!(headers.get("exfilwatch.sink").map(String::as_str), Some("webhook"));
    assert!(headers.get("exfilwatch.detail").is_some_and(|d| d.contains("400")), "{headers:?}");
    assert_eq!(stats.sinks[&exfilwatch::telemetry::SinkKind::Webhook].rejected, 1);
    assert_eq!(s.committed(), s.msgs.len() as i64, "the stream went on to the end");
}

#[test]
fn an_unwritable_state_store_holds_commits_and_readiness_back_until_it_is_writable_again() {
    let s = Setup::new();
    let state = s.dir.path().join("state");
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"logs\"]\ngroup_id = \"exfilwatch\"\n\
         [kafka.librdkafka_options]\n\"reconnect.backoff.max.ms\" = \"500\"\n\
         [sinks]\nstdout = false\nfile = \"{}\"\n\
         [service]\nmetrics_addr = \"127.0.0.1:0\"\nstate_store = \"{}\"\ncheckpoint_interval = \"1s\"\n",
        s.bootstrap,
        s.alerts_file().display(),
        state.display()
    );
    let cfg = exfilwatch::config::Config::from_toml(&text, "test").unwrap();
    let half = s.msgs.len() / 2;
    s.produce(&s.msgs[..half]);
    let mut svc = Service::start(cfg);
    wait_for(DEADLINE, "the first half, checkpointed and committed", || s.committed() == half as i64);
    assert_eq!(svc.readyz().0, 200);

    // The store becomes unwritable (its directory replaced by a file: even root cannot write
    // into that), then the rest of the stream arrives.
    let aside = s.dir.path().join("state.aside");
    std::fs::rename(&state, &aside).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    s.produce(&s.msgs[half..]);
    wait_for(DEADLINE, "every message handled", || svc.messages() >= s.msgs.len() as u64);
    wait_for(DEADLINE, "not ready", || svc.readyz().0 == 503);
    let (_, body) = svc.readyz();
    assert!(body.contains("state store"), "{body}");
    // The service stays up and commits nothing past the last good checkpoint.
    assert_eq!(s.committed(), half as i64, "offsets committed without a checkpoint");
    assert!(svc.readyz().0 == 503 && s.committed() == half as i64);

    // Writable again: a checkpoint, the commit of everything, ready.
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(&aside, &state).unwrap();
    wait_for(DEADLINE, "the commit of everything", || s.committed() == s.msgs.len() as i64);
    wait_for(DEADLINE, "ready again", || svc.readyz().0 == 200);
    svc.stop();
    assert_eq!(by_id(&file_alerts(&s.alerts_file())), s.expected, "every alert, once");
}
