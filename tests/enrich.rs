//! `[enrich]` through `exfilwatch replay` on the sample logs, with files the test writes (an
//! iptoasn TSV, a Service Tags JSON, a threat list): origins carry their owner, baselines the
//! key's usual ASes and countries, a read from an AS the key never used is one severity step
//! higher, and `suspicious_origin` fires once per list for the theft's address. And `run`
//! reloading a threat list on SIGHUP, against the real broker (`make test` starts it).

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs");
const THIEF: &str = "203.0.113.77";

fn replay(config: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["replay", "-q", "--config"])
        .arg(config)
        .arg(SAMPLE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn alerts_name_who_owns_each_origin_and_threat_lists_raise_suspicious_origin() {
    let dir = tempfile::tempdir().unwrap();
    // Every IPv4 address below the thief's /24 is "Contoso Corp" in the US; the thief's /24
    // is a hosting company in NL; IPv6 is left unknown.
    let tsv = write(
        dir.path(),
        "asn.tsv",
        "0.0.0.0\t203.0.112.255\t64496\tUS\tContoso Corp\n\
         203.0.113.0\t203.0.113.255\t64500\tNL\tExample Hosting\n",
    );
    let tags = write(
        dir.path(),
        "tags.json",
        r#"{"changeNumber":7,"cloud":"Public","values":[{"name":"AzureCloud.westeurope","id":"AzureCloud.westeurope",
            "properties":{"changeNumber":7,"region":"westeurope","regionId":18,"platform":"Azure","systemService":"",
            "addressPrefixes":["203.0.113.64/26"]}}]}"#,
    );
    let tor = write(dir.path(), "tor.txt", &format!("# test exits\n{THIEF}\n"));
    let plain = write(dir.path(), "plain.toml", "[detect]\nnew_origin = true\n");
    let enriched = write(
        dir.path(),
        "enriched.toml",
        &format!(
            "[detect]\nnew_origin = true\n[enrich]\nasn_tsv = \"{tsv}\"\nservice_tags = \"{tags}\"\n\
             threat_lists = {{ tor = \"{tor}\" }}\n"
        ),
    );
    let before = replay(Path::new(&plain));
    let after = replay(Path::new(&enriched));
    assert_eq!(after, replay(Path::new(&enriched)), "deterministic");

    // The theft's alert names the owner in its origin and its summary.
    let theft = |alerts: &[Value]| -> Value {
        alerts.iter().find(|a| a["rule"] == "unfamiliar_origin_volume").cloned().expect("the theft's alert")
    };
    let (was, now) = (theft(&before), theft(&after));
    assert_eq!(was["id"], now["id"], "enrichment changes no id");
    let o = &now["origin"];
    assert_eq!((o["ip"].as_str(), o["asn"].as_u64(), o["country"].as_str()), (Some(THIEF), Some(64500), Some("NL")));
    assert_eq!(o["as_name"], "Example Hosting");
    assert_eq!((o["service_tag"].as_str(), o["region"].as_str()), (Some("AzureCloud.westeurope"), Some("westeurope")));
    assert_eq!(o["lists"], serde_json::json!(["tor"]));
    let summary = now["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("from {THIEF} (AS64500 Example Hosting, NL, Azure AzureCloud.westeurope)")),
        "{summary}"
    );
    assert!(summary.contains("AS64500 and country NL never used by this key before"), "{summary}");
    assert_eq!(now["baseline"]["usual_asns"], serde_json::json!(["AS64496 Contoso Corp"]));
    assert_eq!(now["baseline"]["usual_countries"], serde_json::json!(["US"]));
    assert!(was.get("baseline").and_then(|b| b.get("usual_asns")).is_none());

    // new_origin (info): from an AS the key never used, one step up.
    let new_origin = |alerts: &[Value], ip: &str| -> Option<Value> {
        alerts.iter().find(|a| a["rule"] == "new_origin" && a["origin"]["ip"] == ip).cloned()
    };
    assert_eq!(new_origin(&before, THIEF).unwrap()["severity"], "info");
    assert_eq!(new_origin(&after, THIEF).unwrap()["severity"], "low");
    // (A new origin inside the key's usual AS keeps its severity: `detect::owners` unit tests.)

    // suspicious_origin: once for the theft's key and address (many reads, one list).
    let suspicious: Vec<&Value> = after.iter().filter(|a| a["rule"] == "suspicious_origin").collect();
    assert_eq!(suspicious.len(), 1, "{suspicious:#?}");
    let s = suspicious[0];
    assert_eq!((s["severity"].as_str(), s["credential"].as_str()), (Some("critical"), now["credential"].as_str()));
    assert!(s["summary"].as_str().unwrap().contains("on the threat list \"tor\""));
    assert!(before.iter().all(|a| a["rule"] != "suspicious_origin"));
    // Everything else is the same alerts.
    let ids = |alerts: &[Value]| -> Vec<String> {
        alerts
            .iter()
            .filter(|a| a["rule"] != "suspicious_origin")
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&before), ids(&after));

    // A bad line is refused at start, naming the file and line.
    let bad = write(dir.path(), "bad.txt", "203.0.113.77\n300.1.1.1\n");
    let cfg = write(dir.path(), "bad.toml", &format!("[enrich]\nthreat_lists = {{ ti = \"{bad}\" }}\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["replay", "-q", "--config", &cfg, SAMPLE])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.txt:2") && err.contains("300.1.1.1"), "{err}");
}

fn wait_until(child: &mut std::process::Child, within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        assert!(child.try_wait().unwrap().is_none(), "exfilwatch run exited while waiting for {what}");
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("timed out waiting for {what}");
}

/// The records the service has handled (`exfilwatch_record_processing_seconds_count`).
fn handled(addr: std::net::SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return 0 };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("exfilwatch_record_processing_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `run` with a threat list that does not name the thief; the list is rewritten to name it
/// (its modification time kept, so only the signal can tell) and the service gets SIGHUP;
/// the theft's records, produced after, raise `suspicious_origin`.
#[test]
fn the_service_reloads_its_threat_lists_on_sighup() {
    let broker = std::env::var("EXFILWATCH_TEST_KAFKA")
        .expect("this test needs a broker: run it with `make test` (scripts/with-tansu.sh starts Tansu)");
    let dir = tempfile::tempdir().unwrap();
    let (_, msgs) = sample::contoso_messages();
    let split = msgs.iter().position(|(_, m)| String::from_utf8_lossy(m).contains(THIEF)).expect("the theft");
    let topic = sample::unique("enrich");
    kafka_client::create_topic(&broker, &topic, 1);
    kafka_client::produce(&broker, &topic, &msgs[..split]);
    let list = dir.path().join("tor.txt");
    std::fs::write(&list, "198.51.100.1\n").unwrap();
    let mtime = std::fs::metadata(&list).unwrap().modified().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let cfg = write(
        dir.path(),
        "run.toml",
        &format!(
            "[kafka]\nbootstrap_servers = \"{broker}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{}\"\n\
             [sinks]\nstdout = false\nfile = \"{}\"\n\
             [service]\nmetrics_addr = \"{metrics}\"\nstate_store = \"\"\n\
             [enrich]\nthreat_lists = {{ tor = \"{}\" }}\n",
            sample::unique("g"),
            alerts.display(),
            list.display()
        ),
    );
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["run", "--config", &cfg])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(&mut child, Duration::from_secs(60), "the records before the theft", || {
        handled(metrics) >= split as u64
    });

    std::fs::write(&list, format!("198.51.100.1\n{THIEF}\n")).unwrap();
    std::fs::File::options().write(true).open(&list).unwrap().set_modified(mtime).unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until(&mut child, Duration::from_secs(30), "the reload", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("Enrichment reloaded.")
    });
    kafka_client::produce(&broker, &topic, &msgs[split..]);
    let suspicious = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|a| a["rule"] == "suspicious_origin")
            .collect()
    };
    wait_until(&mut child, Duration::from_secs(60), "suspicious_origin", || {
        !suspicious(&std::fs::read_to_string(&alerts).unwrap_or_default()).is_empty()
    });
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let found = suspicious(&std::fs::read_to_string(&alerts).unwrap());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["origin"]["ip"], THIEF);
    assert_eq!(found[0]["origin"]["lists"], serde_json::json!(["tor"]));
}
