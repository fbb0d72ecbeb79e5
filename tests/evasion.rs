//! Evasion the detector must still catch (issue 14), through the binary: a week of a key's
//! normal traffic from its application subnet (10.20.30.0/24), then a theft of about 2 GiB
//! disguised five ways. Each file is replayed by `exfilwatch replay`; the theft must raise an
//! alert at high or above naming the key, and nothing else may reach medium.

use std::fmt::Write as _;
use std::process::Command;

const MIB: u64 = 1 << 20;
const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
/// 2021-08-01T00:00:00Z
const T0: u64 = 1_627_776_000;
const CONFIG: &str = "[detect]\nlearning_period = \"2d\"\n";

fn rfc3339(secs: u64, nanos: u64) -> String {
    let days = (secs / DAY) as i64;
    // civil_from_days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let s = secs % DAY;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:07}Z", s / 3600, s / 60 % 60, s % 60, nanos / 100)
}

/// One successful DataPlaneRequests record (legacy shape) of account contoso.
fn record(out: &mut String, secs: u64, nanos: u64, key_type: &str, ip: &str, bytes: u64, agent: &str) {
    let n = out.len();
    writeln!(
        out,
        r#"{{"time": "{}", "resourceId": "/SUBSCRIPTIONS/7E2F6B1C-0D5A-4C1E-9A57-3F0B8C9D2E41/RESOURCEGROUPS/RG-PROD/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO", "category": "DataPlaneRequests", "operationName": "ReadFeed", "properties": {{"activityId": "00000000-0000-4000-8000-{:012x}","requestResourceType": "Document","statusCode": "200","duration": "5","userAgent": "{agent}","clientIpAddress": "{ip}","requestCharge": "2.000000","requestLength": "0","responseLength": "{bytes}","keyType": "{key_type}","databaseName": "shop","collectionName": "customers"}}}}"#,
        rfc3339(secs, nanos),
        n
    )
    .unwrap();
}

const APP: &str = "Microsoft.Azure.Documents.Client/2.14.0 (netstandard2.0; Linux 5.4.0-1056-azure; x64)";
const THIEF: &str = "python-requests/2.25.1";

/// The key's normal traffic from `start` for `hours`: a read of 2 MiB every 10 minutes from one
/// of 40 addresses of its subnet (the address cycles, the subnet stays).
fn normal(out: &mut String, start: u64, hours: u64, key_type: &str) {
    for i in 0..hours * 6 {
        let ip = format!("10.20.30.{}", 1 + i % 40);
        record(out, start + i * 600, 0, key_type, &ip, 2 * MIB, APP);
    }
}

/// `n` reads of `bytes` each from `ip`, evenly over `span` seconds from `start`.
fn reads(out: &mut String, start: u64, span: u64, n: u64, ip: &str, bytes: u64, key_type: &str) {
    for i in 0..n {
        let at = start * 1_000_000_000 + i * span * 1_000_000_000 / n;
        record(out, at / 1_000_000_000, at % 1_000_000_000, key_type, ip, bytes, THIEF);
    }
}

/// Sorts the lines by time (the records' own order is left to the detector otherwise, within
/// `max_out_of_order`; sorting keeps the scenarios about the disguise alone).
fn sorted(text: String) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| l[10..38].to_string());
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn replay(logs: String) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logs.jsonl"), sorted(logs)).unwrap();
    std::fs::write(dir.path().join("exfilwatch.toml"), CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .arg("replay")
        .arg("-q")
        .arg("--config")
        .arg(dir.path().join("exfilwatch.toml"))
        .arg(dir.path().join("logs.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn at_least_medium(alerts: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    alerts.iter().filter(|a| ["medium", "high", "critical"].contains(&a["severity"].as_str().unwrap())).collect()
}

/// A week of normal traffic, then `theft` on day 7 at 02:00 (with the normal traffic going on).
fn scenario(theft: impl FnOnce(&mut String, u64)) -> Vec<serde_json::Value> {
    let mut logs = String::new();
    normal(&mut logs, T0, 8 * 24, "PrimaryMasterKey");
    theft(&mut logs, T0 + 7 * DAY + 2 * HOUR);
    replay(logs)
}

/// The only alerts at medium or above are about the key, in the theft's span, and one of them is
/// of `rule` from `origin` (when given).
fn assert_caught(alerts: &[serde_json::Value], rule: &str, origin: Option<&str>) {
    let loud = at_least_medium(alerts);
    assert!(!loud.is_empty(), "theft not detected: {alerts:#?}");
    for a in &loud {
        assert_eq!(a["credential"], "key:primarymasterkey", "{a}");
        assert!(a["trigger_event_time"].as_str().unwrap().starts_with("2021-08-08T0"), "outside the theft: {a}");
    }
    let hit = loud.iter().find(|a| a["rule"] == rule).unwrap_or_else(|| panic!("no {rule}: {loud:#?}"));
    if let Some(o) = origin {
        assert_eq!(hit["origin"]["ip"], o, "{hit}");
        assert_eq!(hit["origin"]["prefix"], "203.0.113.0/24", "{hit}");
    }
}

#[test]
fn a_theft_from_an_ipv4_mapped_address_is_the_ipv4_origin() {
    let alerts = scenario(|logs, t| reads(logs, t, 1800, 512, "::ffff:203.0.113.77", 4 * MIB, "PrimaryMasterKey"));
    assert_caught(&alerts, "unfamiliar_origin_volume", Some("203.0.113.77"));
    let theft = alerts.iter().find(|a| a["rule"] == "unfamiliar_origin_volume").unwrap();
    assert_eq!(theft["severity"], "critical", "a read-write master key, within the hour");
    assert_eq!(theft["observed_bytes"], 1 << 30, "{theft}");
}

#[test]
fn a_theft_with_a_mixed_case_key_class_is_the_same_key() {
    // The normal traffic goes on in mixed case too: its subnet must stay familiar to the key.
    let alerts = scenario(|logs, t| {
        normal(logs, t, 2, "primaryMASTERkey");
        reads(logs, t, 1800, 512, "203.0.113.77", 4 * MIB, "primaryMASTERkey");
    });
    assert_caught(&alerts, "unfamiliar_origin_volume", Some("203.0.113.77"));
}

#[test]
fn a_theft_split_into_thousands_of_tiny_reads_adds_up() {
    // 2.1 GiB in 20,000 reads of 110 KiB over two hours.
    let alerts = scenario(|logs, t| reads(logs, t, 2 * HOUR, 20_000, "203.0.113.77", 110 * 1024, "PrimaryMasterKey"));
    assert_caught(&alerts, "unfamiliar_origin_volume", Some("203.0.113.77"));
    let theft = alerts.iter().find(|a| a["rule"] == "unfamiliar_origin_volume").unwrap();
    assert!(theft["evidence"]["request_count"].as_u64().unwrap() >= 9_000, "{theft}");
}

#[test]
fn a_theft_interleaved_with_the_keys_normal_traffic_counts_only_its_own_bytes() {
    // Normal traffic ten times as frequent as usual, from its own subnet, in between the reads.
    let alerts = scenario(|logs, t| {
        for i in 0..600 {
            record(logs, t + i * 6, 500_000_000, "PrimaryMasterKey", &format!("10.20.30.{}", 1 + i % 40), MIB, APP);
        }
        reads(logs, t, 3600, 600, "203.0.113.77", 4 * MIB, "PrimaryMasterKey");
    });
    assert_caught(&alerts, "unfamiliar_origin_volume", Some("203.0.113.77"));
    let theft = alerts.iter().find(|a| a["rule"] == "unfamiliar_origin_volume").unwrap();
    assert_eq!(theft["observed_bytes"], 1 << 30, "only the thief's reads: {theft}");
    assert_eq!(theft["evidence"]["top_user_agents"][0]["name"], THIEF, "{theft}");
}

#[test]
fn a_theft_spread_over_the_keys_own_prefix_and_one_new_one_is_a_volume_anomaly() {
    // 1.5 GiB from an address inside the key's own /24 (familiar: no origin rule) and 600 MiB
    // from a new one (below unfamiliar_bytes), within 40 minutes: 2.1 GiB where the key reads
    // 12 MiB an hour.
    let alerts = scenario(|logs, t| {
        reads(logs, t, 2400, 384, "10.20.30.250", 4 * MIB, "PrimaryMasterKey");
        reads(logs, t, 2400, 150, "203.0.113.77", 4 * MIB, "PrimaryMasterKey");
    });
    assert_caught(&alerts, "volume_anomaly", None);
    assert!(!alerts.iter().any(|a| a["rule"] == "unfamiliar_origin_volume"), "600 MiB is below the threshold");
    let v = alerts.iter().find(|a| a["rule"] == "volume_anomaly").unwrap();
    let listed: Vec<&str> = v["origins"].as_array().unwrap().iter().map(|o| o["prefix"].as_str().unwrap()).collect();
    assert!(listed.contains(&"203.0.113.0/24") && listed.contains(&"10.20.30.0/24"), "{v}");
}

#[test]
fn the_normal_week_alone_is_silent() {
    let mut logs = String::new();
    normal(&mut logs, T0, 8 * 24, "PrimaryMasterKey");
    normal(&mut logs, T0 + 7 * DAY, 24, "primaryMASTERkey");
    let alerts = replay(logs);
    assert!(at_least_medium(&alerts).is_empty(), "{alerts:#?}");
}

#[test]
fn the_record_times_are_well_formed() {
    // The helper's own check: the scenarios' times are what they say.
    assert_eq!(rfc3339(T0, 0), "2021-08-01T00:00:00.0000000Z");
    assert_eq!(rfc3339(T0 + 7 * DAY + 2 * HOUR + 61, 500_000_000), "2021-08-08T02:01:01.5000000Z");
}
