//! Real Prometheus and Alertmanager for the tests: each call starts a fresh server on a free
//! loopback port, with its configuration and storage in a temporary directory, and returns once
//! the server answers `GET /-/ready` with 200 (polled, with a deadline). Dropping the
//! [`Server`] kills that process (by the child's process id) and removes the directory.
//!
//! The binaries come from Debian's packages (`scripts/with-monitoring.sh` installs them; `make
//! test` runs the tests under it). A missing binary fails the test that needs it, with how to
//! install it: a test never passes without the server it tests against.
//!
//! Include with `#[path = "support/monitoring.rs"] mod monitoring;`. Plain std networking
//! (HTTP/1.0 GETs), so it works from sync tests and beside any runtime.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The binary's path on PATH. Panics, saying how to install it, when it is missing.
pub fn binary(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: run the tests under `bash scripts/with-monitoring.sh` (as `make test` does)"
            )
        })
}

/// A running server. Killed (by its process id) on drop.
pub struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    /// Configuration, storage and log; removed on drop.
    dir: tempfile::TempDir,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's own output so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` (with its query string): (status, body).
    pub fn get(&self, path_and_query: &str) -> std::io::Result<(u16, String)> {
        http_get(self.addr, path_and_query)
    }

    /// `GET path` answered 200 with JSON, parsed; panics with the server's log otherwise.
    pub fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        match self.get(path_and_query) {
            Ok((200, body)) => serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{} {path_and_query}: not JSON ({e}): {body}", self.name)),
            Ok((status, body)) => panic!("{} {path_and_query}: HTTP {status}: {body}\n{}", self.name, self.log()),
            Err(e) => panic!("{} {path_and_query}: {e}\n{}", self.name, self.log()),
        }
    }

    /// Prometheus only: an instant query through `/api/v1/query`; returns `data.result` (a
    /// list of `{"metric": {...}, "value": [time, "value"]}` for a vector).
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let v = self.get_json(&format!("/api/v1/query?query={}", percent_encode(promql)));
        assert_eq!(v["status"], "success", "query {promql}: {v}");
        v["data"]["result"].clone()
    }

    /// Prometheus only: the value of a query that yields one sample, if it does yet.
    pub fn query_value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        let list = r.as_array()?;
        if list.len() != 1 {
            return None;
        }
        list[0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this process id; then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alertmanager 0.25 with one receiver that notifies nobody, grouping by alert name.
pub fn alertmanager() -> Server {
    alertmanager_with_config(
        "route:\n  receiver: nobody\n  group_by: ['alertname']\n  group_wait: 1s\n  group_interval: 1s\n  \
         repeat_interval: 1h\nreceivers:\n  - name: nobody\n",
    )
}

/// Alertmanager with the given `alertmanager.yml` text.
pub fn alertmanager_with_config(config_yaml: &str) -> Server {
    let bin = binary("prometheus-alertmanager");
    start("alertmanager", &bin, "alertmanager.yml", config_yaml, |dir, config, addr| {
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
            // No gossip cluster: a lone instance, no port besides the web one.
            "--cluster.listen-address=".to_owned(),
        ]
    })
}

/// Prometheus 2.42 with the given `prometheus.yml` text.
pub fn prometheus(config_yaml: &str) -> Server {
    let bin = binary("prometheus");
    start("prometheus", &bin, "prometheus.yml", config_yaml, |dir, config, addr| {
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
        ]
    })
}

/// Prometheus scraping `targets` (`host:port`, path `/metrics`) as job `job` every `interval`
/// (e.g. `"1s"`).
pub fn prometheus_scraping(job: &str, targets: &[String], interval: &str) -> Server {
    let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    prometheus(&format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nscrape_configs:\n  - job_name: \
         '{job}'\n    scrape_interval: {interval}\n    static_configs:\n      - targets: [{list}]\n"
    ))
}

/// `promtool ARGS...`: (success, stdout and stderr).
pub fn promtool(args: &[&str]) -> (bool, String) {
    let bin = binary("promtool");
    let out = Command::new(bin).args(args).output().unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Starts `bin` on a free port until it is ready. A port taken between choosing and binding
/// (another process got it first) is retried with a new one.
fn start(
    name: &'static str,
    bin: &Path,
    config_name: &str,
    config_yaml: &str,
    args: impl Fn(&Path, &Path, SocketAddr) -> Vec<String>,
) -> Server {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let dir = tempfile::Builder::new().prefix(&format!("exfilwatch-{name}-")).tempdir().unwrap();
        let config = dir.path().join(config_name);
        std::fs::write(&config, config_yaml).unwrap();
        let addr = free_port();
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args(args(dir.path(), &config, addr))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Server { name, child, addr, log, dir };
        match wait_ready(&mut server) {
            Ok(()) => return server,
            Err(why) => {
                let log = server.log();
                drop(server);
                if log.contains("address already in use") && attempts < 5 {
                    continue;
                }
                panic!("{name} did not become ready on {addr}: {why}\n{log}");
            }
        }
    }
}

fn wait_ready(server: &mut Server) -> Result<(), String> {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok((200, _)) = http_get(server.addr, "/-/ready") {
            return Ok(());
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("it exited with {status}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("no 200 from /-/ready within {READY_DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap()
}

/// A minimal HTTP/1.0 GET (the answer is then never chunked, and ends with the connection).
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP answer: {text:.200}"));
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).ok_or_else(bad)?;
    Ok((status, body))
}

/// For a query string value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Polls `cond` every 50 ms until it gives a value; panics naming `what` after `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
