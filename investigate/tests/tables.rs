//! Every table `exfilwatch investigate` prints, checked against sums this test computes itself:
//! on a generated workload (written by the test as CDBDataPlaneRequests JSON Lines, as an
//! AzureDiagnostics CSV export and as `exfilwatch export`'s Parquet; the expected sums come
//! from the generator's own records, not from any exfilwatch code) and on the sample logs
//! (their events summed here with plain maps).

use exfilwatch::time::{format_rfc3339, parse_timestamp, HOUR};
use serde_json::Value as J;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch-investigate");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the investigation with `--format json`; the parsed document.
fn run_json(args: &[&str]) -> J {
    let out = Command::new(BIN).args(args).args(["--format", "json"]).output().expect("run exfilwatch-investigate");
    assert!(out.status.success(), "investigate {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json output")
}

/// One request as the test generated it.
#[derive(Clone, Debug)]
struct Req {
    t: i64,
    account: String,
    key_type: &'static str,
    /// The canonical credential (`key:primarymasterkey`).
    credential: String,
    ip: String,
    origin: String,
    status: u16,
    response: u64,
    op: &'static str,
    coll: &'static str,
    ua: &'static str,
}

impl Req {
    /// The bytes the investigation counts: a failed request moves no data.
    fn bytes(&self) -> i64 {
        if (200..300).contains(&self.status) || self.status == 304 {
            self.response as i64
        } else {
            0
        }
    }
    fn credential(&self) -> String {
        self.credential.clone()
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn generate(n: usize) -> Vec<Req> {
    let mut r = Lcg(42);
    let start = parse_timestamp("2021-08-10T00:00:00Z").expect("time");
    let keys = ["PrimaryMasterKey", "SecondaryMasterKey", "PrimaryReadonlyMasterKey"];
    let ops = ["Query", "ReadFeed", "Read", "Upsert"];
    let colls = ["orders", "customers", "carts"];
    let uas = ["sdk/2.14", "python-requests/2.25.1", "curl/8.0"];
    (0..n)
        .map(|i| {
            // Origins appear over time: origin k is used only after day k/8, so that some are
            // first seen late.
            let day = r.below(6) as i64;
            let k = r.below(((day + 1) * 8) as u64).min(47);
            let (ip, origin) = if k % 5 == 4 {
                (format!("2001:db8:0:{:x}::{:x}", k, r.below(200) + 1), format!("2001:db8:0:{k:x}::/64"))
            } else {
                (format!("198.51.{}.{}", 10 + k, r.below(250) + 1), format!("198.51.{}.0/24", 10 + k))
            };
            let status = match r.below(20) {
                0 => 429,
                1 => 404,
                _ => 200,
            };
            let key_type = keys[r.below(3) as usize];
            Req {
                t: start + day * 24 * HOUR + r.below(24 * 3600) as i64 * 1_000_000_000 + (i as i64 % 1000) * 1000,
                account: ["contoso", "fabrikam", "adatum"][r.below(3) as usize].to_string(),
                key_type,
                credential: format!("key:{}", key_type.to_ascii_lowercase()),
                ip,
                origin,
                status,
                response: r.below(5_000_000),
                op: ops[r.below(4) as usize],
                coll: colls[r.below(3) as usize],
                ua: uas[r.below(3) as usize],
            }
        })
        .collect()
}

fn write_jsonl(reqs: &[Req], path: &Path) {
    let mut s = String::new();
    for q in reqs {
        let rec = serde_json::json!({
            "TimeGenerated": format_rfc3339(q.t), "AccountName": q.account, "OperationName": q.op,
            "ClientIpAddress": q.ip, "KeyType": q.key_type, "CollectionName": q.coll, "UserAgent": q.ua,
            "StatusCode": q.status, "ResponseLength": q.response, "Type": "CDBDataPlaneRequests",
        });
        s.push_str(&rec.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).expect("write jsonl");
}

fn write_csv(reqs: &[Req], path: &Path) {
    let mut s = String::from("TenantId,TimeGenerated,Resource,Category,OperationName,clientIpAddress_s,keyType_s,collectionName_s,userAgent_s,statusCode_s,responseLength_s,Extra_s\n");
    for q in reqs {
        s.push_str(&format!(
            "t,{},{},DataPlaneRequests,{},{},{},{},{},{},{},x\n",
            format_rfc3339(q.t),
            q.account.to_ascii_uppercase(),
            q.op,
            q.ip,
            q.key_type,
            q.coll,
            q.ua,
            q.status,
            q.response
        ));
    }
    std::fs::write(path, s).expect("write csv");
}

#[derive(Default, Debug, PartialEq)]
struct Agg {
    bytes: i64,
    requests: i64,
    first: i64,
    last: i64,
    set: BTreeSet<String>,
}

fn add(m: &mut BTreeMap<Vec<String>, Agg>, key: Vec<String>, q: &Req, member: String) {
    let a = m.entry(key).or_insert_with(|| Agg { first: i64::MAX, last: i64::MIN, ..Agg::default() });
    a.bytes += q.bytes();
    a.requests += 1;
    a.first = a.first.min(q.t);
    a.last = a.last.max(q.t);
    a.set.insert(member);
}

fn rows<'a>(doc: &'a J, table: &str) -> &'a Vec<J> {
    doc[table].as_array().unwrap_or_else(|| panic!("no table {table} in {doc}"))
}

fn s(v: &J) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| panic!("not a string: {v}"))
}

fn i(v: &J) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Checks the credentials, origins, timeline and first_seen tables against `reqs` (already
/// filtered by the key filters) and the period.
fn check(doc: &J, reqs: &[Req], since: Option<i64>, until: Option<i64>) {
    let in_period = |t: i64| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u);
    let period: Vec<&Req> = reqs.iter().filter(|q| in_period(q.t)).collect();
    assert!(!period.is_empty(), "the test's period holds requests");
    let (mut creds, mut origins, mut timeline) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for q in &period {
        add(&mut creds, vec![q.account.clone(), q.credential()], q, q.origin.clone());
        add(&mut origins, vec![q.origin.clone()], q, format!("{}/{}", q.account, q.credential()));
        add(&mut timeline, vec![format_rfc3339(q.t - q.t.rem_euclid(HOUR)), q.origin.clone()], q, String::new());
    }
    // Per credential.
    let got = rows(doc, "credentials");
    assert_eq!(got.len(), creds.len());
    for r in got {
        let want = &creds[&vec![s(&r["account"]), s(&r["credential"])]];
        assert_eq!(i(&r["bytes"]), want.bytes, "{r}");
        assert_eq!(i(&r["requests"]), want.requests, "{r}");
        assert_eq!(i(&r["origins"]) as usize, want.set.len(), "{r}");
        assert_eq!(s(&r["first_seen"]), format_rfc3339(want.first));
        assert_eq!(s(&r["last_seen"]), format_rfc3339(want.last));
    }
    // Sorted by bytes, most first.
    let b: Vec<i64> = got.iter().map(|r| i(&r["bytes"])).collect();
    assert!(b.windows(2).all(|w| w[0] >= w[1]), "{b:?}");
    // Per origin.
    let got = rows(doc, "origins");
    assert_eq!(got.len(), origins.len());
    for r in got {
        let want = &origins[&vec![s(&r["origin"])]];
        assert_eq!((i(&r["bytes"]), i(&r["requests"])), (want.bytes, want.requests), "{r}");
        assert_eq!(s(&r["first_seen"]), format_rfc3339(want.first));
        assert_eq!(s(&r["last_seen"]), format_rfc3339(want.last));
        assert_eq!(
            i(&r["credential_count"]) as usize,
            want.set.iter().map(|k| k.split_once('/').map(|x| x.1)).collect::<BTreeSet<_>>().len()
        );
        assert_eq!(s(&r["credentials"]), want.set.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    // Timeline.
    let got = rows(doc, "timeline");
    assert_eq!(got.len(), timeline.len());
    for r in got {
        let want = &timeline[&vec![s(&r["hour"]), s(&r["origin"])]];
        assert_eq!((i(&r["bytes"]), i(&r["requests"])), (want.bytes, want.requests), "{r}");
    }
    let total: i64 = period.iter().map(|q| q.bytes()).sum();
    assert_eq!(got.iter().map(|r| i(&r["bytes"])).sum::<i64>(), total);
    // First seen in the period, over everything the key filters keep.
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for q in reqs {
        let f = first.entry(&q.origin).or_insert(i64::MAX);
        *f = (*f).min(q.t);
    }
    let want: BTreeMap<String, String> =
        first.iter().filter(|(_, t)| in_period(**t)).map(|(o, t)| (o.to_string(), format_rfc3339(*t))).collect();
    let got: BTreeMap<String, String> =
        rows(doc, "first_seen").iter().map(|r| (s(&r["origin"]), s(&r["first_seen"]))).collect();
    assert_eq!(got, want);
}

struct Workload {
    _dir: tempfile::TempDir,
    reqs: Vec<Req>,
    jsonl: PathBuf,
    csv: PathBuf,
    parquet: PathBuf,
}

fn workload() -> Workload {
    let dir = tempfile::tempdir().expect("tempdir");
    let reqs = generate(6000);
    let (jsonl, csv, parquet) = (dir.path().join("w.jsonl"), dir.path().join("w.csv"), dir.path().join("w.parquet"));
    write_jsonl(&reqs, &jsonl);
    write_csv(&reqs, &csv);
    let (summary, rows) = exfilwatch::export::export_parquet(
        std::slice::from_ref(&jsonl),
        &parquet,
        exfilwatch::export::Origins::default(),
    )
    .expect("export");
    assert_eq!((rows, summary.malformed, summary.faults.len()), (reqs.len() as u64, 0, 0));
    Workload { _dir: dir, reqs, jsonl, csv, parquet }
}

#[test]
fn generated_workload_every_table_matches_independent_sums_in_all_three_input_forms() {
    let w = workload();
    for input in [&w.jsonl, &w.csv, &w.parquet] {
        let doc = run_json(&[input.to_str().expect("path")]);
        check(&doc, &w.reqs, None, None);
    }
}

#[test]
fn generated_workload_filters_account_credential_cidr_and_period() {
    let w = workload();
    let since = parse_timestamp("2021-08-11T12:00:00Z").expect("time");
    let until = parse_timestamp("2021-08-14T06:00:00Z").expect("time");
    let keep: Vec<Req> = w
        .reqs
        .iter()
        .filter(|q| q.account == "fabrikam" && q.credential() == "key:primarymasterkey" && q.ip.starts_with("198.51."))
        .filter(|q| q.ip.split('.').nth(2).and_then(|o| o.parse::<u32>().ok()).is_some_and(|o| (16..32).contains(&o)))
        .cloned()
        .collect();
    for input in [&w.parquet, &w.jsonl, &w.csv] {
        let doc = run_json(&[
            input.to_str().expect("path"),
            "--account",
            "Fabrikam",
            "--credential",
            "key:primarymasterkey",
            "--cidr",
            "198.51.16.0/20",
            "--since",
            "2021-08-11T12:00:00Z",
            "--until",
            "2021-08-14T06:00:00Z",
        ]);
        check(&doc, &keep, Some(since), Some(until));
        // Origins first seen in the period exist in this workload (they appear over time).
        assert!(!rows(&doc, "first_seen").is_empty());
    }
    // One address.
    let ip = w.reqs[17].ip.clone();
    let one: Vec<Req> = w.reqs.iter().filter(|q| q.ip == ip).cloned().collect();
    let doc = run_json(&[w.parquet.to_str().expect("path"), "--ip", &ip]);
    check(&doc, &one, None, None);
}

/// The sample logs' events, as the decoder gives them (the sums are this test's).
fn sample_requests() -> Vec<Req> {
    let origins = exfilwatch::export::Origins::default();
    let mut out = Vec::new();
    let summary = exfilwatch::export::read_events(
        &[root().join("sample-logs")],
        |e| -> Result<(), exfilwatch::sources::SourceError> {
            let mut credential = String::new();
            e.credential.write_canonical(&mut credential);
            out.push(Req {
                t: e.time,
                account: e.account.to_string(),
                key_type: "",
                credential,
                ip: e.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                origin: e.client_ip.map_or_else(|| "(no address)".to_string(), |i| origins.of(i)),
                // The decoder already counts a failed request's bytes as 0.
                status: 200,
                response: e.response_bytes,
                op: "",
                coll: "",
                ua: "",
            });
            Ok(())
        },
    )
    .expect("sample logs");
    assert!(summary.faults.is_empty());
    out
}

#[test]
fn sample_logs_every_table_matches_independent_sums() {
    let reqs = sample_requests();
    assert!(reqs.len() > 10_000);
    let doc = run_json(&[root().join("sample-logs").to_str().expect("path")]);
    check(&doc, &reqs, None, None);
    let since = parse_timestamp("2021-08-17T00:00:00Z").expect("time");
    let doc = run_json(&[root().join("sample-logs").to_str().expect("path"), "--since", "2021-08-17T00:00:00Z"]);
    check(&doc, &reqs, Some(since), None);
    // The theft's origin is new on the 17th.
    assert!(rows(&doc, "first_seen").iter().any(|r| s(&r["origin"]) == "203.0.113.0/24"), "{}", doc["first_seen"]);
}

#[test]
fn alert_before_during_after_and_reach_match_independent_sums() {
    let alerts = root().join("tests/golden/sample-logs.alerts.jsonl");
    let first: J = serde_json::from_str(
        std::fs::read_to_string(&alerts).expect("golden alerts").lines().next().expect("one alert"),
    )
    .expect("alert json");
    let id = s(&first["id"]);
    let account = s(&first["account"]);
    let credential = s(&first["credential"]);
    let prefixes: BTreeSet<String> = first["origins"]
        .as_array()
        .map(|v| v.iter().map(|o| s(&o["prefix"])).collect())
        .unwrap_or_else(|| [s(&first["origin"]["prefix"])].into());
    let start = parse_timestamp(&s(&first["window"]["start"])).expect("start");
    let end = parse_timestamp(&s(&first["window"]["end"])).expect("end");

    let reqs = sample_requests();
    let mut want: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut reach: BTreeMap<(String, String, String), (i64, i64)> = BTreeMap::new();
    for q in reqs.iter().filter(|q| prefixes.contains(&q.origin)) {
        let c = q.credential();
        let e = reach.entry((q.origin.clone(), q.account.clone(), c.clone())).or_default();
        e.0 += q.bytes();
        e.1 += 1;
        if q.account == account && c == credential {
            let period = if q.t < start {
                "before"
            } else if q.t <= end {
                "during"
            } else {
                "after"
            };
            let e = want.entry(period).or_default();
            e.0 += q.bytes();
            e.1 += 1;
        }
    }
    assert!(want.get("during").is_some_and(|d| d.0 > 1 << 30), "the alert's window read over 1 GiB: {want:?}");
    for input in [root().join("sample-logs")] {
        let doc =
            run_json(&[input.to_str().expect("path"), "--alert", &id, "--alerts", alerts.to_str().expect("path")]);
        let got = rows(&doc, "alert_window");
        assert_eq!(got.iter().map(|r| s(&r["period"])).collect::<Vec<_>>(), ["before", "during", "after"]);
        for r in got {
            let p = s(&r["period"]);
            let w = want.get(p.as_str()).copied().unwrap_or((0, 0));
            assert_eq!((i(&r["bytes"]), i(&r["requests"])), w, "{p}");
        }
        let got: BTreeMap<(String, String, String), (i64, i64)> = rows(&doc, "alert_reach")
            .iter()
            .map(|r| ((s(&r["origin"]), s(&r["account"]), s(&r["credential"])), (i(&r["bytes"]), i(&r["requests"]))))
            .collect();
        assert_eq!(got, reach);
        // The other tables are those of the alert's key.
        for r in rows(&doc, "credentials") {
            assert_eq!((s(&r["account"]), s(&r["credential"])), (account.clone(), credential.clone()));
        }
    }
}

#[test]
fn csv_parquet_and_text_outputs_hold_the_same_tables() {
    let w = workload();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = w.parquet.to_str().expect("path");
    let doc = run_json(&[input, "--account", "contoso"]);
    for format in ["csv", "parquet"] {
        let out = dir.path().join(format);
        let st = Command::new(BIN)
            .args([input, "--account", "contoso", "--format", format, "--out", out.to_str().expect("path")])
            .status()
            .expect("run");
        assert!(st.success());
        for t in ["credentials", "origins", "timeline", "first_seen"] {
            let f = out.join(format!("{t}.{format}"));
            assert!(f.is_file(), "{} missing", f.display());
            if format == "csv" {
                let text = std::fs::read_to_string(&f).expect("csv");
                assert_eq!(text.lines().count(), rows(&doc, t).len() + 1, "{t}");
                let total: i64 = text
                    .lines()
                    .skip(1)
                    .map(|l| {
                        let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
                        let at = header.iter().position(|h| *h == "bytes").unwrap_or(usize::MAX);
                        let mut rdr = csv_fields(l);
                        rdr.nth(at).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0)
                    })
                    .sum();
                let want: i64 = rows(&doc, t).iter().map(|r| i(&r["bytes"])).sum();
                assert_eq!(total, want, "{t}");
            } else {
                assert_eq!(&std::fs::read(&f).expect("parquet")[..4], b"PAR1");
            }
        }
    }
    let out = Command::new(BIN).args([input, "--account", "contoso"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("== Per credential") && text.contains("== Per origin") && text.contains("key:primarymasterkey")
    );
}

/// The fields of one CSV line (quotes honoured).
fn csv_fields(line: &str) -> std::vec::IntoIter<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
}

#[test]
fn a_bad_table_file_is_a_clear_error_naming_file_row_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.csv");
    std::fs::write(
        &p,
        "TimeGenerated,AccountName,ResponseLength\n2021-08-17T10:00:00Z,a,1\n2021-08-17T10:00:00Z,a,many\n",
    )
    .expect("write");
    let out = Command::new(BIN).arg(&p).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}: row 2, column ResponseLength", p.display())), "{err}");
    assert!(err.contains("expected a number, found \"many\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
