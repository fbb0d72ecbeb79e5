//! The service's own security (SECURITY.md): secrets come from the environment or from files
//! and never show in anything exfilwatch prints or writes; a secret file others can read is
//! refused; the files it writes are private (0600, directories 0700); `/metrics` names no
//! account, credential or address; TLS to a webhook (a CA file) and to Kafka (CA, client
//! certificate and key, through a TLS-terminating proxy: Tansu serves no TLS itself).
//!
//! The broker tests need `make test` (scripts/with-tansu.sh: EXFILWATCH_TEST_KAFKA and Tansu's
//! binary); without them they fail.

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;
#[path = "support/script_server.rs"]
mod script_server;
#[path = "support/tls.rs"]
mod tls;

use exfilwatch::alert::Alert;
use exfilwatch::config::HttpTlsAuth;
use exfilwatch::sinks::webhook::WebhookSink;
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every secret of these tests starts with this; no byte exfilwatch prints or writes may hold it.
const MARK: &str = "xwsecret";
const SASL: &str = "xwsecret-sasl-5b7e0c1d";
const HOOK: &str = "xwsecret-hook-93fa2c44";
const AM: &str = "xwsecret-am-0d1e7f66";
const S3: &str = "xwsecret-s3-6c2b9a10";
const KEYPW: &str = "xwsecret-keypw-77e1";
const DEADLINE: Duration = Duration::from_secs(120);

fn exfilwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_exfilwatch"));
    c.env("EXFILWATCH_TEST_SASL", SASL).env("EXFILWATCH_TEST_AM_TOKEN", AM).env_remove("RUST_LOG");
    c
}

/// A secret file (first line the secret) with this mode.
fn secret_file(dir: &Path, name: &str, value: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Panics, showing where, when `bytes` hold a secret of these tests.
fn assert_no_secret(what: &str, bytes: &[u8]) {
    if let Some(i) = bytes.windows(MARK.len()).position(|w| w == MARK.as_bytes()) {
        let from = i.saturating_sub(120);
        let to = (i + 60).min(bytes.len());
        panic!("a secret in {what}: ...{}...", String::from_utf8_lossy(&bytes[from..to]));
    }
}

fn assert_output_clean(what: &str, out: &Output) {
    assert_no_secret(&format!("{what}: stdout"), &out.stdout);
    assert_no_secret(&format!("{what}: stderr"), &out.stderr);
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` is 0600 and every directory 0700 (`dir` itself excluded).
fn assert_private_tree(dir: &Path) {
    let mut todo = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "directory {}", p.display());
                todo.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "file {}", p.display());
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "nothing written under {}", dir.display());
}

/// The sample logs' accounts, credentials, resource ids and client addresses (from the golden
/// alerts), which `/metrics` must not name.
fn sample_identities() -> BTreeSet<String> {
    let golden = include_str!("golden/sample-logs.alerts.jsonl");
    let mut out = BTreeSet::new();
    for line in golden.lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["account", "credential", "resource_id", "subscription_id"] {
            if let Some(s) = a[key].as_str() {
                out.insert(s.to_string());
            }
        }
        for o in a["origins"].as_array().into_iter().flatten() {
            for key in ["ip", "prefix"] {
                if let Some(s) = o[key].as_str() {
                    out.insert(s.to_string());
                }
            }
        }
    }
    assert!(out.len() > 5, "{out:?}");
    out
}

/// A metrics page names no account, credential, resource and no IP address at all.
fn assert_metrics_anonymous(what: &str, page: &str) {
    assert!(page.contains("exfilwatch_"), "{what}: not a metrics page: {page}");
    let lower = page.to_ascii_lowercase();
    for id in sample_identities() {
        assert!(!lower.contains(&id.to_ascii_lowercase()), "{what} names {id:?}");
    }
    // No dotted quad anywhere (versions have three parts).
    for token in page.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<&str> = token.split('.').collect();
        let quad = parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.parse::<u8>().is_ok());
        assert!(!quad, "{what} holds an IPv4 address: {token}");
    }
    assert!(!page.contains("::ffff:"), "{what} holds an IPv6 address");
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn poll(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then the process's exit (which must be a success) and its output.
fn terminate(mut child: Child) -> Output {
    sample::sigterm(&mut child);
    let end = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "exfilwatch run did not stop within 40 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exfilwatch run: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// A configuration whose every secret is set: the SASL password and Alertmanager's token from
/// the environment, the webhook's token, the key's password and an object-store key from files.
fn config_with_every_secret(dir: &Path, secrets: &Path, extra: &str) -> PathBuf {
    let hook = secret_file(secrets, "hook-token", HOOK, 0o600);
    let s3 = secret_file(secrets, "s3-key", S3, 0o600);
    let keypw = secret_file(secrets, "key-password", KEYPW, 0o600);
    let text = format!(
        "[kafka]\nsasl_password_env = \"EXFILWATCH_TEST_SASL\"\nssl_key_password_file = \"{}\"\n\
         [sinks]\nwebhook_url = \"https://soc.example/hook\"\nwebhook_token_file = \"{}\"\n\
         alertmanager_url = \"https://am.example\"\nalertmanager_token_env = \"EXFILWATCH_TEST_AM_TOKEN\"\n\
         [service]\nstate_store = \"s3://bucket/prefix\"\n\
         state_store_options = {{ aws_access_key_id = \"AKIDEXAMPLE\", aws_region = \"us-east-1\" }}\n\
         state_store_secret_files = {{ aws_secret_access_key = \"{}\" }}\n{extra}",
        keypw.display(),
        hook.display(),
        s3.display()
    );
    let p = dir.join("secrets.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_commands_never_print_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();

    let out = exfilwatch().args(["config", "defaults"]).output().unwrap();
    assert!(out.status.success());
    assert_output_clean("config defaults", &out);

    let cfg = config_with_every_secret(dir.path(), secrets.path(), "");
    let out = exfilwatch().args(["config", "check"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_output_clean("config check", &out);

    // A secret where the configuration must not hold one: refused, named, not shown.
    let refused = [
        (
            "[kafka]\nlibrdkafka_options = { \"sasl.password\" = \"SECRET\" }\n",
            "kafka.librdkafka_options.sasl.password",
        ),
        (
            "[service]\nstate_store = \"s3://b/p\"\nstate_store_options = { aws_secret_access_key = \"SECRET\" }\n",
            "service.state_store_options.aws_secret_access_key",
        ),
        ("[sinks]\nwebhook_url = \"https://user:SECRET@soc.example/hook\"\n", "sinks.webhook_url holds a password"),
        ("[sinks]\nalertmanager_url = \"https://user:SECRET@am.example\"\n", "sinks.alertmanager_url holds a password"),
        // A syntax error on a secret's line: the line is not quoted back.
        ("[kafka]\nlibrdkafka_options = { \"sasl.password\" = \"SECRET }\n", "line 2"),
    ];
    for (i, (text, expected)) in refused.iter().enumerate() {
        let p = dir.path().join(format!("refused-{i}.toml"));
        std::fs::write(&p, text.replace("SECRET", SASL)).unwrap();
        let out = exfilwatch().args(["config", "check"]).arg(&p).output().unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{text}: {err}");
        assert_output_clean(&format!("config check of {text}"), &out);
    }

    // An unset variable and a missing file are named, with no value.
    let p = dir.path().join("unset.toml");
    std::fs::write(&p, "[kafka]\nsasl_password_env = \"EXFILWATCH_TEST_UNSET_VARIABLE\"\n").unwrap();
    let out = exfilwatch().args(["config", "check"]).arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("EXFILWATCH_TEST_UNSET_VARIABLE") && err.contains("not set"),
        "{err}"
    );
}

#[test]
fn a_secret_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    for (key, mode) in
        [("kafka]\nsasl_password_file", 0o644), ("sinks]\nwebhook_url = \"https://h/\"\nwebhook_token_file", 0o604)]
    {
        let f = secret_file(secrets.path(), "readable", SASL, mode);
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("[{key} = \"{}\"\n[service]\nstate_store = \"\"\n", f.display())).unwrap();
        for args in [&["config", "check"][..], &["run", "--config"][..]] {
            let out = exfilwatch().args(args).arg(&cfg).output().unwrap();
            assert!(!out.status.success(), "{args:?} accepted a file of mode {mode:o}");
            let err = String::from_utf8_lossy(&out.stderr);
            let shown = format!("{}", f.display());
            assert!(
                err.contains(&shown) && err.contains(&format!("mode 0{mode:o}")) && err.contains("chmod 600"),
                "{args:?}: {err}"
            );
            assert_output_clean(&format!("{args:?} with a readable secret file"), &out);
        }
    }
}

/// `replay` and `train` with every secret configured: nothing they print or write holds one;
/// what they write is private; the metrics they write name no account, credential or address.
#[test]
fn replay_and_train_print_no_secret_and_write_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let cfg = config_with_every_secret(dir.path(), secrets.path(), "");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (alerts, dead, metrics) = (out_dir.join("alerts.jsonl"), out_dir.join("dead.jsonl"), dir.path().join("m.prom"));
    let out = exfilwatch()
        .env("RUST_LOG", "debug")
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("-o")
        .arg(&alerts)
        .arg("--dead-letter")
        .arg(&dead)
        .arg("--metrics-textfile")
        .arg(&metrics)
        .arg(sample::SAMPLE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_output_clean("replay", &out);
    assert!(std::fs::metadata(&dead).unwrap().len() > 0, "the sample logs hold malformed records");

    let model = out_dir.join("model");
    let out = exfilwatch()
        .env("RUST_LOG", "debug")
        .args(["train", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&model)
        .args(["--until", "2021-08-17T00:00:00Z"])
        .arg(sample::SAMPLE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_output_clean("train", &out);

    // A verdict on an alert about an origin (a volume alert names none).
    let first: serde_json::Value = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a["rule"] == "unfamiliar_origin_volume")
        .expect("an unfamiliar_origin_volume alert in the sample");
    let verdicts = out_dir.join("verdicts.jsonl");
    let out = exfilwatch()
        .args(["feedback", first["id"].as_str().unwrap(), "--benign", "--alerts"])
        .arg(&alerts)
        .arg("--verdicts")
        .arg(&verdicts)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_output_clean("feedback", &out);

    for f in files_under(dir.path()) {
        assert_no_secret(&f.display().to_string(), &std::fs::read(&f).unwrap());
    }
    // Alerts, dead letters, verdicts and the model: 0600 files, 0700 directories.
    assert_private_tree(&out_dir);
    assert!(model.join("manifest.json").is_file());
    // The metrics textfile is for node_exporter (another user): readable, and anonymous.
    assert_metrics_anonymous("replay --metrics-textfile", &std::fs::read_to_string(&metrics).unwrap());
}

/// `exfilwatch run` on the broker with every secret it can use set, RUST_LOG=debug and
/// librdkafka's configuration dump on: stdout, stderr, every file it wrote, `/metrics`, the
/// dead-letter topic, and what the webhook and Alertmanager received (but the Authorization
/// header, which must carry the token) hold no secret; its state files are private.
#[test]
fn the_service_prints_and_writes_no_secret() {
    let bootstrap = std::env::var("EXFILWATCH_TEST_KAFKA")
        .expect("this test needs a broker: run it with `make test` (scripts/with-tansu.sh starts Tansu)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The webhook refuses the first alert for good (400): it goes to the dead-letter topic.
    let hook = rt.block_on(script_server::Server::start(vec![script_server::Reply::Status(400)]));
    let am = rt.block_on(script_server::Server::start(vec![]));

    let (contoso, msgs) = sample::contoso_envelopes(20);
    let expected = sample::replay_alerts(&contoso);
    let (logs, dead_topic, group) = (sample::unique("logs"), sample::unique("dead"), sample::unique("g"));
    kafka_client::create_topic(&bootstrap, &logs, 1);
    kafka_client::create_topic(&bootstrap, &dead_topic, 1);
    // The sample's malformed lines, each alone in a message, are dead-lettered too.
    kafka_client::produce(&bootstrap, &logs, &msgs);

    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let hook_token = secret_file(secrets.path(), "hook-token", HOOK, 0o600);
    let (state, alerts) = (dir.path().join("state"), dir.path().join("alerts.jsonl"));
    let metrics_addr = free_addr();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopics = [\"{logs}\"]\ngroup_id = \"{group}\"\n\
             sasl_password_env = \"EXFILWATCH_TEST_SASL\"\ndead_letter_topic = \"{dead_topic}\"\n\
             librdkafka_options = {{ \"debug\" = \"conf,security\" }}\n\
             [sinks]\nstdout = true\nfile = \"{}\"\n\
             webhook_url = \"http://{}/hook\"\nwebhook_token_file = \"{}\"\n\
             alertmanager_url = \"http://{}\"\nalertmanager_token_env = \"EXFILWATCH_TEST_AM_TOKEN\"\n\
             [service]\nmetrics_addr = \"{metrics_addr}\"\nstate_store = \"{}\"\ncheckpoint_interval = \"1s\"\n",
            alerts.display(),
            hook.addr,
            hook_token.display(),
            am.addr,
            state.display()
        ),
    )
    .unwrap();
    let child = exfilwatch()
        .env("RUST_LOG", "debug")
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes while it runs (a full pipe would block the service).
    let mut child = child;
    let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = o.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = e.read_to_end(&mut v);
        v
    });

    poll("every alert in the file sink", DEADLINE, || {
        std::fs::read_to_string(&alerts).unwrap_or_default().lines().count() >= expected.len()
    });
    poll("the webhook's deliveries", DEADLINE, || hook.requests().len() >= expected.len());
    poll("a post to Alertmanager", DEADLINE, || !am.requests().is_empty());
    let (code, page) = http_get(&metrics_addr, "/metrics");
    assert_eq!(code, 200);
    assert_no_secret("/metrics", page.as_bytes());
    assert_metrics_anonymous("/metrics of run", &page);
    let dead = kafka_client::read_until(&bootstrap, &dead_topic, DEADLINE, |m| {
        m.iter().any(|d| String::from_utf8_lossy(d).contains("\"rule\""))
    });
    terminate(child);
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    assert!(!stdout.is_empty() && !stderr.is_empty());
    // librdkafka's configuration dump went through (so it was checked), the password redacted.
    assert!(String::from_utf8_lossy(&stderr).contains("sasl.password"), "no librdkafka configuration dump");
    assert_no_secret("run: stdout", &stdout);
    assert_no_secret("run: stderr", &stderr);

    for (payload, headers) in kafka_client::read_all_with_headers(&bootstrap, &dead_topic) {
        assert_no_secret("a dead letter", &payload);
        assert_no_secret("a dead letter's headers", format!("{headers:?}").as_bytes());
    }
    assert!(!dead.is_empty());
    for (server, token) in [(&hook, HOOK), (&am, AM)] {
        for r in server.requests() {
            assert_eq!(r.headers.get("authorization").map(String::as_str), Some(format!("Bearer {token}").as_str()));
            assert_no_secret("a request's body", &r.body);
        }
    }
    for f in files_under(dir.path()) {
        assert_no_secret(&f.display().to_string(), &std::fs::read(&f).unwrap());
    }
    assert_eq!(mode(&alerts), 0o600);
    assert_private_tree(&state);
}

fn alerts(n: usize) -> Vec<Alert> {
    let golden = include_str!("golden/sample-logs.alerts.jsonl");
    golden.lines().take(n).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A webhook over https whose certificate a CA of the test signed: trusted with that CA file
/// (and the token sent), refused with the system's roots or another CA's file.
#[tokio::test]
async fn the_webhook_trusts_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::Pki::new(dir.path(), "hook");
    let other = tls::Pki::new(dir.path(), "other");
    let server = script_server::Server::start(vec![]).await;
    let proxy = tls::TlsProxy::start(&pki, server.addr, false);
    let url = format!("https://localhost:{}/hook", proxy.addr.port());
    let batch = alerts(3);
    let no_headers = Default::default();
    let timeout = Duration::from_secs(10);

    // The system's and Mozilla's roots do not know the test's CA; nor does another CA.
    for ca_file in [None, Some(other.ca_file.clone())] {
        let auth = HttpTlsAuth { bearer_token: None, ca_file: ca_file.clone() };
        let sink = WebhookSink::with_auth(&url, timeout, &no_headers, &auth).unwrap();
        let e = sink.send_alerts(&batch).await.unwrap_err().to_string();
        assert!(e.to_ascii_lowercase().contains("certificate"), "{ca_file:?}: {e}");
    }
    assert!(server.requests().is_empty());
    // The server side sees the refused handshake a moment after the client gave up.
    let end = Instant::now() + Duration::from_secs(10);
    while proxy.refused() < 2 {
        assert!(Instant::now() < end, "the proxy saw {} refused handshakes, not 2", proxy.refused());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.handshakes(), 0);

    let token = exfilwatch::secure::Secret::new(HOOK);
    let auth = HttpTlsAuth { bearer_token: Some(token), ca_file: Some(pki.ca_file.clone()) };
    let sink = WebhookSink::with_auth(&url, timeout, &no_headers, &auth).unwrap();
    sink.send_alerts(&batch).await.unwrap();
    let got = server.requests();
    assert_eq!(got.len(), batch.len());
    for (r, a) in got.iter().zip(&batch) {
        assert_eq!(r.alert_id(), Some(a.id.as_str()));
        assert_eq!(r.headers.get("authorization").map(String::as_str), Some(format!("Bearer {HOOK}").as_str()));
    }
    assert!(proxy.handshakes() >= 1);

    // A CA file that is not PEM: refused when the sink is built, naming the file.
    let bad = dir.path().join("bad-ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let auth = HttpTlsAuth { bearer_token: None, ca_file: Some(bad.clone()) };
    let e = WebhookSink::with_auth(&url, timeout, &no_headers, &auth).err().expect("a bad CA file").to_string();
    assert!(e.contains(&bad.display().to_string()), "{e}");
}

/// Tansu's binary, installed by scripts/with-tansu.sh.
fn tansu() -> PathBuf {
    let root = std::env::var_os("TANSU_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/exfilwatch/tansu"));
    let bin = root.join("bin/tansu");
    assert!(
        bin.is_file(),
        "{} is missing: run the test with `make test` (scripts/with-tansu.sh installs it)",
        bin.display()
    );
    bin
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tls_client(bootstrap: &str, pki: &tls::Pki) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("security.protocol", "ssl")
        .set("broker.address.family", "v4")
        .set("ssl.ca.location", pki.ca_file.display().to_string())
        .set("ssl.certificate.location", pki.client_cert_file.display().to_string())
        .set("ssl.key.location", pki.client_key_file.display().to_string());
    c
}

/// The service consumes the sample logs over TLS with a client certificate (a TLS-terminating
/// proxy that asks for one, in front of a Tansu of its own that advertises the proxy), and
/// raises the alerts replay raises. A client without the certificate gets nothing through.
#[test]
fn the_service_reads_kafka_over_tls_with_a_client_certificate() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let pki = tls::Pki::new(dir.path(), "kafka");
    let plain = free_addr();
    let proxy = tls::TlsProxy::start(&pki, plain.parse().unwrap(), true);
    let advertised = format!("localhost:{}", proxy.addr.port());
    let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
    let broker = Broker(
        Command::new(tansu())
            .args(["broker", "--listener-url", &format!("tcp://{plain}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    poll("Tansu listening", Duration::from_secs(30), || std::net::TcpStream::connect(&plain).is_ok());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (contoso, msgs) = sample::contoso_envelopes(20);
    let expected = sample::replay_alerts(&contoso);
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = tls_client(&advertised, &pki).create().unwrap();
        for r in admin
            .create_topics(&[NewTopic::new("logs", 1, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await
            .unwrap()
        {
            r.unwrap();
        }
        let p: FutureProducer = tls_client(&advertised, &pki).set("linger.ms", "5").create().unwrap();
        for chunk in msgs.chunks(500) {
            let futs: Vec<_> = chunk
                .iter()
                .map(|(k, v)| p.send(FutureRecord::to("logs").key(k).payload(v), Duration::from_secs(30)))
                .collect();
            for f in futs {
                f.await.map_err(|(e, _)| e).unwrap();
            }
        }
    });
    let before = proxy.handshakes();
    assert!(before >= 1);

    let alerts = dir.path().join("alerts.jsonl");
    let cfg = dir.path().join("run.toml");
    let write_cfg = |key_file: &Path| {
        std::fs::write(
            &cfg,
            format!(
                "[kafka]\nbootstrap_servers = \"{advertised}\"\ntopics = [\"logs\"]\ngroup_id = \"tls\"\n\
                 security_protocol = \"ssl\"\nssl_ca_file = \"{}\"\nssl_certificate_file = \"{}\"\nssl_key_file = \"{}\"\n\
                 librdkafka_options = {{ \"broker.address.family\" = \"v4\" }}\n\
                 [sinks]\nstdout = false\nfile = \"{}\"\n\
                 [service]\nmetrics_addr = \"\"\nstate_store = \"\"\n",
                pki.ca_file.display(),
                pki.client_cert_file.display(),
                key_file.display(),
                alerts.display()
            ),
        )
        .unwrap()
    };

    // A private key others can read is refused before anything connects.
    let readable_key = dir.path().join("readable-key.pem");
    std::fs::copy(&pki.client_key_file, &readable_key).unwrap();
    std::fs::set_permissions(&readable_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_cfg(&readable_key);
    let out = exfilwatch().args(["run", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("kafka.ssl_key_file") && err.contains("mode 0644"), "{err}");

    write_cfg(&pki.client_key_file);
    let run_log = dir.path().join("run.log");
    let child = exfilwatch()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&run_log).unwrap())
        .spawn()
        .unwrap();
    poll("the alerts over TLS", DEADLINE, || {
        std::fs::read_to_string(&alerts).unwrap_or_default().lines().count() >= expected.len()
    });
    terminate(child);
    let got: Vec<Vec<u8>> = std::fs::read_to_string(&alerts).unwrap().lines().map(|l| l.as_bytes().to_vec()).collect();
    assert_eq!(sample::by_id(&got), expected, "{}", std::fs::read_to_string(&run_log).unwrap_or_default());
    assert!(proxy.handshakes() > before, "the service went through the TLS proxy");

    // Without the client certificate the proxy refuses the handshake.
    let refused = proxy.refused();
    rt.block_on(async {
        let mut c = tls_client(&advertised, &pki);
        c.remove("ssl.certificate.location");
        c.remove("ssl.key.location");
        let consumer: rdkafka::consumer::BaseConsumer = c.create().unwrap();
        use rdkafka::consumer::Consumer;
        assert!(consumer.fetch_metadata(Some("logs"), Duration::from_secs(5)).is_err());
    });
    poll("the proxy refusing a client without a certificate", Duration::from_secs(10), || proxy.refused() > refused);
    drop(broker);
}
