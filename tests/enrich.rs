//! `[enrich]` through `exfilwatch replay` on the sample logs, with files the test writes (an
//! iptoasn TSV, a Service Tags JSON, a threat list): origins carry their owner, baselines the
//! key's usual ASes and countries, a read from an AS the key never used is one severity step
//! higher, and `suspicious_origin` fires once per list for the theft's address. And `run`
//! reloading a threat list on SIGHUP, against the real broker (`make test` starts it).

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/mmdb.rs"]
mod mmdb;
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

const RID: &str = "/SUBSCRIPTIONS/7E2F6B1C-0D5A-4C1E-9A57-3F0B8C9D2E41/RESOURCEGROUPS/RG-PROD/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CLOUDY";

/// One successful ReadFeed of the account `cloudy`'s primary key, at `secs` past
/// 2021-08-01T00:00:00Z.
fn record(out: &mut String, secs: u64, ip: &str, bytes: u64, agent: &str) {
    let (d, h, m, s) = (1 + secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    out.push_str(&format!(
        r#"{{"time":"2021-08-{d:02}T{h:02}:{m:02}:{s:02}.1234567Z","resourceId":"{RID}","category":"DataPlaneRequests","operationName":"ReadFeed","properties":{{"activityId":"66a0c647-af38-4b8d-a92a-c48a805d6460","statusCode":"200","clientIpAddress":"{ip}","responseLength":"{bytes}","keyType":"PrimaryMasterKey","userAgent":"{agent}","databaseName":"shop","collectionName":"customers"}}}}"#
    ));
    out.push('\n');
}

fn replay_dir(config: &str, dir: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["replay", "-q", "--config", config])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A key used from a cloud that changes addresses all day (AS64496, in a GeoLite2-ASN
/// database the test writes): under `origin_granularity = "asn"` its reads from many new
/// addresses of that AS are familiar, under "prefix" they raise `unfamiliar_origins_aggregate`;
/// a theft from another AS alerts under both, its origin `AS64500`, its address named.
#[test]
fn asn_granularity_through_replay_with_a_maxmind_database() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let sdk = "Microsoft.Azure.Cosmos/3.35.4 cosmos-netstandard-sdk/3.35.4";
    let mut text = String::new();
    // Eight days, hourly, from a handful of the cloud's addresses.
    for h in 0..8 * 24 {
        record(&mut text, h * 3600 + 60, &format!("10.20.30.{}", 1 + h % 5), 10 << 20, sdk);
    }
    // Day 9: 1.5 GiB in half an hour from 30 addresses of the cloud in 30 new /24s.
    let day9 = 8 * 86_400;
    for i in 0..30 {
        record(&mut text, day9 + i * 60, &format!("10.{}.7.{}", 50 + i, 1 + i), 50 << 20, sdk);
    }
    // Then 1.25 GiB from a hosting company's address, with another tool.
    for i in 0..5 {
        record(&mut text, day9 + 40 * 60 + i * 60, THIEF, 1 << 28, "python-requests/2.31.0");
    }
    std::fs::write(logs.join("cloudy.json"), text).unwrap();
    let asn = mmdb::write(
        dir.path(),
        "GeoLite2-ASN.mmdb",
        "GeoLite2-ASN",
        &[
            ("10.0.0.0/8", mmdb::Value::asn(64496, "Contoso Cloud")),
            ("203.0.113.0/24", mmdb::Value::asn(64500, "Example Hosting")),
        ],
    );
    let country = mmdb::write(
        dir.path(),
        "GeoLite2-Country.mmdb",
        "GeoLite2-Country",
        &[("203.0.113.0/24", mmdb::Value::country("NL"))],
    );
    let config = |granularity: &str| {
        write(
            dir.path(),
            &format!("{granularity}.toml"),
            &format!(
                "[detect]\norigin_granularity = \"{granularity}\"\nlearning_period = \"1d\"\nvolume_anomaly = false\n\
                 [enrich]\nasn_mmdb = \"{asn}\"\ncountry_mmdb = \"{country}\"\n"
            ),
        )
    };
    // (volume_anomaly is off: it counts bytes from any origin, and fires alike under both.)
    let rules =
        |alerts: &[Value]| -> Vec<String> { alerts.iter().map(|a| a["rule"].as_str().unwrap().to_string()).collect() };
    let by_prefix = replay_dir(&config("prefix"), &logs);
    assert_eq!(rules(&by_prefix), ["unfamiliar_origins_aggregate", "unfamiliar_origin_volume"], "{by_prefix:#?}");
    let by_asn = replay_dir(&config("asn"), &logs);
    assert_eq!(by_asn, replay_dir(&config("asn"), &logs), "deterministic");
    assert_eq!(rules(&by_asn), ["unfamiliar_origin_volume"], "{by_asn:#?}");
    let theft = &by_asn[0];
    let o = &theft["origin"];
    assert_eq!((o["ip"].as_str(), o["prefix"].as_str()), (Some(THIEF), Some("AS64500")));
    assert_eq!(
        (o["asn"].as_u64(), o["as_name"].as_str(), o["country"].as_str()),
        (Some(64500), Some("Example Hosting"), Some("NL"))
    );
    assert_eq!(
        theft["baseline"]["usual_asns"],
        serde_json::json!(["AS64496"]),
        "the database names an AS by address only"
    );
    assert!(theft["summary"].as_str().unwrap().contains("AS64500 never used by this key before"), "{theft}");
    assert_eq!(by_prefix[1]["origin"]["prefix"], "203.0.113.0/24");
    // The thief's tool is new to the key (its SDK is not), on both granularities' alerts.
    assert_eq!(theft["evidence"]["new_user_agents"], serde_json::json!(["python-requests/2.31.0"]));
    assert_eq!(by_prefix[1]["evidence"]["new_user_agents"], serde_json::json!(["python-requests/2.31.0"]));
    assert!(by_prefix[0]["evidence"].get("new_user_agents").is_none(), "the cloud's burst: its own SDK");

    // "asn" without a file that knows ASes is refused before anything is read.
    let bare = write(dir.path(), "bare.toml", "[detect]\norigin_granularity = \"asn\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["replay", "-q", "--config", &bare])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origin_granularity = \"asn\" needs") && err.contains("asn_mmdb"), "{err}");
    // A damaged database is refused at start, naming the file.
    std::fs::write(&asn, b"\xAB\xCD\xEFMaxMind.com garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["replay", "-q", "--config", &config("asn")])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GeoLite2-ASN.mmdb") && err.contains("MaxMind DB"), "{err}");
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

/// `exfilwatch run` on a new topic holding the sample's contoso messages before the theft,
/// with `[enrich]` set to `enrich` (TOML lines), once it has handled them all.
struct Service {
    broker: String,
    topic: String,
    /// The theft's messages, for the test to produce once it changed the files.
    theft: Vec<(String, Vec<u8>)>,
    child: std::process::Child,
    log: std::path::PathBuf,
    alerts: std::path::PathBuf,
}

impl Service {
    fn start(dir: &Path, topic: &str, enrich: &str) -> Service {
        let broker = std::env::var("EXFILWATCH_TEST_KAFKA")
            .expect("this test needs a broker: run it with `make test` (scripts/with-tansu.sh starts Tansu)");
        let (_, mut msgs) = sample::contoso_messages();
        let split = msgs.iter().position(|(_, m)| String::from_utf8_lossy(m).contains(THIEF)).expect("the theft");
        let theft = msgs.split_off(split);
        let topic = sample::unique(topic);
        kafka_client::create_topic(&broker, &topic, 1);
        kafka_client::produce(&broker, &topic, &msgs);
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let alerts = dir.join("alerts.jsonl");
        let cfg = write(
            dir,
            "run.toml",
            &format!(
                "[kafka]\nbootstrap_servers = \"{broker}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{}\"\n\
                 [sinks]\nstdout = false\nfile = \"{}\"\n\
                 [service]\nmetrics_addr = \"{metrics}\"\nstate_store = \"\"\n\
                 [enrich]\n{enrich}\n",
                sample::unique("g"),
                alerts.display(),
            ),
        );
        let log = dir.join("run.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
            .args(["run", "--config", &cfg])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_until(&mut child, Duration::from_secs(60), "the records before the theft", || {
            handled(metrics) >= msgs.len() as u64
        });
        Service { broker, topic, theft, child, log, alerts }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alerts_text(&self) -> String {
        std::fs::read_to_string(&self.alerts).unwrap_or_default()
    }

    /// Produces the theft's messages.
    fn produce_theft(&self) {
        kafka_client::produce(&self.broker, &self.topic, &self.theft);
    }

    /// SIGTERM, and the service exits cleanly.
    fn stop(mut self) {
        sample::sigterm(&mut self.child);
        assert!(self.child.wait().unwrap().success());
    }
}

/// `run` with a threat list that does not name the thief; the list is rewritten to name it
/// (its modification time kept, so only the signal can tell) and the service gets SIGHUP;
/// the theft's records, produced after, raise `suspicious_origin`.
#[test]
fn the_service_reloads_its_threat_lists_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("tor.txt");
    std::fs::write(&list, "198.51.100.1\n").unwrap();
    let mtime = std::fs::metadata(&list).unwrap().modified().unwrap();
    let mut svc = Service::start(dir.path(), "enrich", &format!("threat_lists = {{ tor = \"{}\" }}", list.display()));

    std::fs::write(&list, format!("198.51.100.1\n{THIEF}\n")).unwrap();
    std::fs::File::options().write(true).open(&list).unwrap().set_modified(mtime).unwrap();
    let pid = svc.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let log = svc.log.clone();
    wait_until(&mut svc.child, Duration::from_secs(30), "the reload", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("Enrichment reloaded.")
    });
    svc.produce_theft();
    let suspicious = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|a| a["rule"] == "suspicious_origin")
            .collect()
    };
    let alerts = svc.alerts.clone();
    wait_until(&mut svc.child, Duration::from_secs(60), "suspicious_origin", || {
        !suspicious(&std::fs::read_to_string(&alerts).unwrap_or_default()).is_empty()
    });
    let text = svc.alerts_text();
    svc.stop();
    let found = suspicious(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["origin"]["ip"], THIEF);
    assert_eq!(found[0]["origin"]["lists"], serde_json::json!(["tor"]));
}

/// `run` with a GeoLite2-ASN database that does not know the thief's network: the database is
/// replaced by a damaged file (the reload fails, naming it; the service goes on with the old
/// one), then by one that knows AS64500 (reloaded on its own, from the modification time);
/// the theft's alert, produced after, names the AS.
#[test]
fn the_service_reloads_a_maxmind_database_and_survives_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("GeoLite2-ASN.mmdb");
    let contoso = ("10.0.0.0/8", mmdb::Value::asn(64496, "Contoso Corp"));
    std::fs::write(&db, mmdb::build("GeoLite2-ASN", 24, std::slice::from_ref(&contoso))).unwrap();
    let mut svc = Service::start(dir.path(), "enrich-mmdb", &format!("asn_mmdb = \"{}\"", db.display()));
    let touch = |bytes: &[u8], secs: u64| {
        std::fs::write(&db, bytes).unwrap();
        let t = std::time::SystemTime::now() + Duration::from_secs(secs);
        std::fs::File::options().write(true).open(&db).unwrap().set_modified(t).unwrap();
    };
    let log = svc.log.clone();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    touch(b"\xAB\xCD\xEFMaxMind.com but no metadata", 10);
    wait_until(&mut svc.child, Duration::from_secs(30), "the failed reload", || text().contains("reload failed"));
    let failed = text().lines().find(|l| l.contains("reload failed")).unwrap_or_default().to_string();
    assert!(failed.contains("GeoLite2-ASN.mmdb") && failed.contains("MaxMind DB"), "{failed}");
    let hosting = ("203.0.113.0/24", mmdb::Value::asn(64500, "Example Hosting"));
    touch(&mmdb::build("GeoLite2-ASN", 28, &[contoso, hosting]), 20);
    wait_until(&mut svc.child, Duration::from_secs(30), "the reload", || text().contains("Enrichment reloaded."));
    assert_eq!(svc.log_text().matches("reload failed").count(), 1, "a damaged file is not read again every second");
    svc.produce_theft();
    let theft = |text: &str| -> Option<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["rule"] == "unfamiliar_origin_volume")
    };
    let alerts = svc.alerts.clone();
    wait_until(&mut svc.child, Duration::from_secs(60), "the theft's alert", || {
        theft(&std::fs::read_to_string(&alerts).unwrap_or_default()).is_some()
    });
    let text = svc.alerts_text();
    svc.stop();
    let a = theft(&text).unwrap();
    assert_eq!((a["origin"]["ip"].as_str(), a["origin"]["asn"].as_u64()), (Some(THIEF), Some(64500)));
    assert_eq!(a["origin"]["as_name"], "Example Hosting");
    assert_eq!(a["baseline"]["usual_asns"], serde_json::json!(["AS64496 Contoso Corp"]));
}
