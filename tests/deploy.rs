//! The shipped monitoring assets under `deploy/`, checked with the real tools: `promtool`
//! validates them, and a real Prometheus runs the example scrape configuration.
//!
//! The tools come from `scripts/with-monitoring.sh` (`make test`); without them these tests fail.

#[path = "support/monitoring.rs"]
mod monitoring;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

const SCRAPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/scrape.yml");
const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/rules.yml");
const RULES_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/rules.test.yml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/exfilwatch.json");
/// Where the example scrapes: exfilwatch's default metrics address.
const DEFAULT_TARGET: &str = "'127.0.0.1:9464'";

#[test]
fn promtool_accepts_the_example_scrape_config() {
    let (ok, out) = monitoring::promtool(&["check", "config", SCRAPE]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_rejects_a_broken_copy_of_it() {
    // The check above can fail: a misspelt key in the same file is refused.
    let text = std::fs::read_to_string(SCRAPE).unwrap();
    let broken = text.replacen("scrape_timeout:", "scrape_timout:", 1);
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.yml");
    std::fs::write(&path, broken).unwrap();
    let (ok, out) = monitoring::promtool(&["check", "config", path.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("scrape_timout"), "{out}");
}

/// Serves a fixed Prometheus text page to every request, forever (on a detached thread).
fn metrics_server(page: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: \
                 close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    addr
}

#[test]
fn prometheus_runs_the_example_scrape_config() {
    let text = std::fs::read_to_string(SCRAPE).unwrap();
    assert!(text.contains(DEFAULT_TARGET), "the example scrapes exfilwatch's default address");
    let target = metrics_server(
        "# HELP exfilwatch_test_records_total Test.\n# TYPE exfilwatch_test_records_total counter\n\
         exfilwatch_test_records_total{category=\"DataPlaneRequests\"} 16570\n",
    );
    // The shipped job as it is, pointed at the test target and scraping every second.
    let config = text
        .replace(DEFAULT_TARGET, &format!("'{target}'"))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        .replace("  - rules.yml", &format!("  - '{RULES}'"));
    assert!(config.contains("scrape_timeout: 1s"));
    assert!(config.contains(RULES), "the example loads the shipped rules");
    let prom = monitoring::prometheus(&config);

    let value = monitoring::wait_for(Duration::from_secs(60), "Prometheus to scrape the target", || {
        prom.query_value("exfilwatch_test_records_total{job=\"exfilwatch\",service=\"exfilwatch\"}")
    });
    assert_eq!(value, 16570.0);
    assert_eq!(prom.query_value("up{job=\"exfilwatch\"}"), Some(1.0), "{}", prom.log());
    let targets = prom.get_json("/api/v1/targets");
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{targets}");
    assert_eq!(active[0]["scrapeUrl"], format!("http://{target}/metrics"));
    let rules = prom.get_json("/api/v1/rules");
    assert_eq!(rules["data"]["groups"][0]["rules"].as_array().unwrap().len(), 9, "{rules}");
}

#[test]
fn promtool_accepts_the_rules() {
    let (ok, out) = monitoring::promtool(&["check", "rules", RULES]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
}

#[test]
fn promtool_rejects_a_broken_copy_of_the_rules() {
    // A PromQL syntax error in one expression is refused.
    let text = std::fs::read_to_string(RULES).unwrap();
    let broken =
        text.replacen("exfilwatch_ready{job=\"exfilwatch\"} == 0", "exfilwatch_ready{job=\"exfilwatch\" == 0", 1);
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, broken).unwrap();
    let (ok, out) = monitoring::promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(!ok, "{out}");
}

#[test]
fn each_rule_fires_on_its_failure_and_not_on_health() {
    // deploy/prometheus/rules.test.yml: promtool's rule unit tests (synthetic series, expected
    // alerts with labels and annotations at given times).
    let (ok, out) = monitoring::promtool(&["test", "rules", RULES_TEST]);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // Every shipped rule has a unit test.
    let rules = std::fs::read_to_string(RULES).unwrap();
    let tests = std::fs::read_to_string(RULES_TEST).unwrap();
    for name in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {name}")), "no unit test for {name}");
    }
}

#[test]
fn dashboard_is_a_well_formed_grafana_dashboard() {
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    assert_eq!(d["uid"], "exfilwatch");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> =
        d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let panels = d["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id at {title}");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{title} is wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert!(!p["description"].as_str().unwrap_or("").is_empty(), "{title} has no description");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr} ignores the instance variable");
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries}");
    // Which metrics these queries name, and that each really exists, is checked against a
    // running service in tests/metrics.rs.
}
