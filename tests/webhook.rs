//! `WebhookSink` against a real HTTP/1.1 server on loopback (`support/script_server.rs`):
//! each server follows a script of replies (503, a hang past the sink's timeout, or 200).
//! "Accepted" below means "answered 200". Waits poll a condition against a deadline.

use exfilwatch::alert::Alert;
use exfilwatch::sinks::webhook::{WebhookError, WebhookSink};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The first alert of `tests/golden/sample-logs.alerts.jsonl`; `alerts` gives copies new ids.
const ALERT_JSON: &str = r#"{"id":"32d9c9a97880185b180440090444485b","rule":"volume_anomaly","severity":"medium","account":"contoso","credential":"key:primarymasterkey","origins":[{"ip":"203.0.113.77","prefix":"203.0.113.0/24","observed_bytes":1068996085},{"ip":"10.20.30.4","prefix":"10.20.30.0/24","observed_bytes":6530999}],"trigger_event_time":"2021-08-17T02:21:01.227686Z","window":{"start":"2021-08-17T01:28:00Z","end":"2021-08-17T02:21:01.227686Z"},"observed_bytes":1075356568,"threshold_bytes":1073741824,"escalation_level":0,"baseline":{"known_origins":1,"typical_hourly_bytes":34833520,"typical_peak_bytes":110600501,"days_of_history":8.1,"p_value":0.00016760801895867214},"evidence":{"request_count":300,"top_operations":[{"name":"ReadFeed","count":148},{"name":"Query","count":146},{"name":"Read","count":5},{"name":"Upsert","count":1}],"top_collections":[{"name":"shop/customers","count":297},{"name":"shop/orders","count":2},{"name":"shop/carts","count":1}],"top_user_agents":[{"name":"python-requests/2.25.1","count":291},{"name":"Microsoft.Azure.Documents.Client/2.14.0 (netstandard2.0; Linux 5.4.0-1056-azure; x64)","count":9}],"activity_ids":["ca109a47-5d8f-46b1-9bf7-bb9e171a8079","fc96f024-eb47-4147-9f5e-50c5df0ef4de","a3cc5dc3-4991-4b18-9aa3-0db392e267aa","e394c60a-e369-4cab-b73c-a046ae1281c0","767ff1e3-b8c5-4264-bc9b-1e5d5d2efa4d"]},"summary":"key:primarymasterkey of account contoso read 1.0 GiB within 1 h, 10x its typical daily peak of 105 MiB (usual: 33 MiB/h from 1 origin)"}"#;

/// `n` distinct alerts (ids `alert-0000`, ...), otherwise the golden alert.
fn alerts(n: usize) -> Vec<Alert> {
    (0..n)
        .map(|i| {
            let mut v: serde_json::Value = serde_json::from_str(ALERT_JSON).unwrap();
            v["id"] = serde_json::Value::String(format!("alert-{i:04}"));
            v["observed_bytes"] = serde_json::Value::from(1_075_356_568u64 + i as u64);
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

#[path = "support/script_server.rs"]
mod script_server;
use script_server::{Reply, Server};

/// Polls `cond` until it holds or `within` passes.
async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count_by_id(ids: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id.clone()).or_insert(0) += 1;
    }
    counts
}

fn once_each(batch: &[Alert]) -> BTreeMap<String, usize> {
    batch.iter().map(|a| (a.id.clone(), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_accepted_at_once() {
    let server = Server::start(vec![]).await;
    let headers = BTreeMap::from([("Authorization".to_owned(), "Bearer t0ken-for-tests".to_owned())]);
    let sink = WebhookSink::new(&server.url(), Duration::from_secs(5), &headers).unwrap();
    let batch = alerts(5);

    sink.send_alerts(&batch).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 5, "one request per alert");
    let ids: Vec<String> = requests.iter().map(|r| r.alert_id().unwrap().to_owned()).collect();
    let sent: Vec<String> = batch.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids, sent, "each id once, in the batch's order");
    for (r, a) in requests.iter().zip(&batch) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/exfilwatch?source=test");
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
        assert_eq!(r.headers.get("authorization").map(String::as_str), Some("Bearer t0ken-for-tests"));
        let back: Alert = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(&back, a, "the body is the alert");
    }
    assert_eq!(server.accepted_ids(), sent);

    // Accepted ones are remembered: the same batch again sends nothing.
    sink.send_alerts(&batch).await.unwrap();
    assert_eq!(server.requests().len(), 5);
    assert_eq!(sink.target(), format!("http://{}/hooks/exfilwatch", server.addr));
}

/// Retries `send_alerts` on the same batch with exponential backoff (10 ms, doubling, at most
/// 1 s apart) until it returns Ok, at most 20 attempts. The errors, each with its call's duration.
async fn send_until_ok(sink: &WebhookSink, batch: &[Alert]) -> Vec<(WebhookError, Duration)> {
    let mut errors = Vec::new();
    let mut backoff = Duration::from_millis(10);
    for _ in 0..20 {
        let started = Instant::now();
        match sink.send_alerts(batch).await {
            Ok(()) => return errors,
            Err(e) => {
                errors.push((e, started.elapsed()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    panic!("no success within 20 attempts; errors: {errors:?}");
}

/// Waits for the server's hung request to end and checks that the client gave up on it
/// (closed the connection) through its own timeout.
async fn assert_client_timed_out(server: &Server, errors: &[(WebhookError, Duration)], timeout: Duration) {
    assert!(wait_until(Duration::from_secs(10), || !server.log.lock().unwrap().hangs.is_empty()).await);
    let (held, client_gave_up) = {
        let log = server.log.lock().unwrap();
        (log.hangs[0].held, log.hangs[0].client_gave_up)
    };
    assert!(client_gave_up, "the client never closed the hung request (held {held:?})");
    // The server's clock starts when the request has arrived, a little after the client's.
    assert!(held >= timeout / 2 && held < Duration::from_secs(5), "held {held:?}");
    let (_, timed_out_after) = errors.iter().find(|(e, _)| matches!(e, WebhookError::Timeout { .. })).unwrap();
    assert!(*timed_out_after >= timeout && *timed_out_after < Duration::from_secs(5), "{timed_out_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_then_recovering_delivers_each_alert_once() {
    let timeout = Duration::from_millis(300);
    let server = Server::start(vec![Reply::Fail, Reply::Fail, Reply::Fail, Reply::Hang]).await;
    let sink = WebhookSink::new(&server.url(), timeout, &BTreeMap::new()).unwrap();
    let batch = alerts(5);

    let errors = send_until_ok(&sink, &batch).await;

    assert!(!errors.is_empty());
    let statuses = errors.iter().filter(|(e, _)| matches!(e, WebhookError::Status { status: 503, .. })).count();
    let timeouts = errors.iter().filter(|(e, _)| matches!(e, WebhookError::Timeout { .. })).count();
    assert_eq!((statuses, timeouts, errors.len()), (3, 1, 4), "errors: {errors:?}");

    assert_client_timed_out(&server, &errors, timeout).await;

    let accepted = server.accepted_ids();
    assert_eq!(count_by_id(&accepted), once_each(&batch), "accepted: {accepted:?}");
    assert!(server.requests().iter().all(|r| r.answered.is_some()));
    // 3 x 503 and the hang, all for the first alert, then the 5 alerts.
    assert_eq!(server.requests().len(), 9);
    assert!(server.requests()[..4].iter().all(|r| r.alert_id() == Some(batch[0].id.as_str())));
}

/// The same, with the failures spread over the batch, so every retry starts after alerts that
/// were already accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_mid_batch_then_recovering_delivers_each_alert_once() {
    let timeout = Duration::from_millis(300);
    let script = vec![Reply::Ok, Reply::Fail, Reply::Ok, Reply::Hang, Reply::Ok, Reply::Fail];
    let server = Server::start(script).await;
    let sink = WebhookSink::new(&server.url(), timeout, &BTreeMap::new()).unwrap();
    let batch = alerts(5);

    let errors = send_until_ok(&sink, &batch).await;

    let kinds: Vec<&str> = errors
        .iter()
        .map(|(e, _)| match e {
            WebhookError::Status { status: 503, .. } => "503",
            WebhookError::Timeout { .. } => "timeout",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["503", "timeout", "503"], "errors: {errors:?}");
    assert_client_timed_out(&server, &errors, timeout).await;

    let accepted = server.accepted_ids();
    assert_eq!(count_by_id(&accepted), once_each(&batch), "accepted: {accepted:?}");
    let received: Vec<String> = server.requests().iter().map(|r| r.alert_id().unwrap().to_owned()).collect();
    let expected: Vec<String> = [0, 1, 1, 2, 2, 3, 3, 4].iter().map(|&i| batch[i].id.clone()).collect();
    assert_eq!(received, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_partial_success_skips_accepted_alerts() {
    let server = Server::start(vec![Reply::Ok, Reply::Ok, Reply::Fail]).await;
    let sink = WebhookSink::new(&server.url(), Duration::from_secs(5), &BTreeMap::new()).unwrap();
    let batch = alerts(5);

    let err = sink.send_alerts(&batch).await.unwrap_err();
    match &err {
        WebhookError::Status { status, id, target } => {
            assert_eq!((*status, id.as_str()), (503, batch[2].id.as_str()));
            assert!(!target.contains("source=test"), "target shows the query: {target}");
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(server.accepted_ids(), [batch[0].id.clone(), batch[1].id.clone()]);

    sink.send_alerts(&batch).await.unwrap();

    let accepted = server.accepted_ids();
    assert_eq!(count_by_id(&accepted), once_each(&batch), "accepted: {accepted:?}");
    let received: Vec<String> = server.requests().iter().map(|r| r.alert_id().unwrap().to_owned()).collect();
    let expected: Vec<String> = [0, 1, 2, 2, 3, 4].iter().map(|&i| batch[i].id.clone()).collect();
    assert_eq!(received, expected, "6 requests: the failed one again, the accepted ones not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_refused_for_good_is_set_aside_and_the_batch_goes_on() {
    // 400 for the second alert (the receiver says it is wrong: retrying would never end);
    // 429 for the fourth (slow down: worth a retry).
    let server = Server::start(vec![Reply::Ok, Reply::Status(400), Reply::Ok, Reply::Status(429)]).await;
    let sink = WebhookSink::new(&server.url(), Duration::from_secs(5), &BTreeMap::new()).unwrap();
    let batch = alerts(5);
    let err = sink.send_alerts(&batch).await.unwrap_err();
    assert!(matches!(err, WebhookError::Status { status: 429, .. }), "{err:?}");
    assert!(err.is_retryable());
    let rejected = sink.take_rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].id, batch[1].id);
    assert!(matches!(rejected[0].error, WebhookError::Status { status: 400, .. }));
    assert!(!rejected[0].error.is_retryable());
    let back: Alert = serde_json::from_slice(&rejected[0].alert).unwrap();
    assert_eq!(back.id, batch[1].id, "the alert itself is kept for the dead-letter topic");
    // The retry sends the 429'd alert and the rest; the refused one is not sent again.
    sink.send_alerts(&batch).await.unwrap();
    assert!(sink.take_rejected().is_empty());
    let received: Vec<String> = server.requests().iter().map(|r| r.alert_id().unwrap().to_owned()).collect();
    let expected: Vec<String> = [0, 1, 2, 3, 3, 4].iter().map(|&i| batch[i].id.clone()).collect();
    assert_eq!(received, expected);
    let accepted = server.accepted_ids();
    let want: Vec<String> = [0, 2, 3, 4].iter().map(|&i| batch[i].id.clone()).collect();
    assert_eq!(accepted, want);
}

#[tokio::test]
async fn connection_refused_is_an_error_and_nothing_is_remembered() {
    // A port bound but not listening: reserved for this test, and connecting to it is refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let sink = WebhookSink::new(&format!("http://{addr}/"), Duration::from_secs(2), &BTreeMap::new()).unwrap();
    let batch = alerts(2);
    match sink.send_alerts(&batch).await {
        Err(WebhookError::Request { id, .. }) => assert_eq!(id, batch[0].id),
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn new_rejects_malformed_configuration() {
    let t = Duration::from_secs(1);
    let none = BTreeMap::new();
    for url in ["not a url", "", "ftp://example.com/hook", "http://", "file:///tmp/x", "http://exa mple.com/"] {
        match WebhookSink::new(url, t, &none) {
            Err(WebhookError::InvalidUrl(_)) => {}
            Err(other) => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
            Ok(_) => panic!("{url:?} was accepted"),
        }
    }
    assert!(matches!(WebhookSink::new("https://example.com/h", Duration::ZERO, &none), Err(WebhookError::ZeroTimeout)));
    let bad_name = BTreeMap::from([("Bad Header".to_owned(), "x".to_owned())]);
    assert!(matches!(WebhookSink::new("https://example.com/h", t, &bad_name), Err(WebhookError::InvalidHeader { .. })));
    let secret = "Bearer s3cret\nX-Injected: 1";
    let bad_value = BTreeMap::from([("Authorization".to_owned(), secret.to_owned())]);
    let err = WebhookSink::new("https://example.com/h", t, &bad_value).err().unwrap();
    assert!(matches!(err, WebhookError::InvalidHeader { .. }));
    assert!(!err.to_string().contains("s3cret"), "the header value leaked: {err}");
    let err = WebhookSink::new("https://u:s3cret@exa mple.com/", t, &none).err().unwrap();
    assert!(!err.to_string().contains("s3cret"), "the URL leaked: {err}");
    // A well-formed https URL builds (rustls with ring, no network needed).
    let ok = WebhookSink::new("https://user:s3cret@hooks.example.com/in?token=s3cret", t, &none).unwrap();
    assert_eq!(ok.target(), "https://hooks.example.com/in");
}
