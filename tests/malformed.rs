//! Hostile and broken input, end to end (issue 14): every kind of bad record goes through the
//! `exfilwatch replay` binary between valid records. For each: the process does not panic (exit
//! code 0), the bad records are counted under their named reason (summary and dead letters),
//! the valid records around them are still used (the planted theft gives the same alerts as
//! without the bad records, the request counts are unchanged), and the process's peak memory
//! (its maximum resident set, `VmHWM`, from its summary) stays bounded.
//!
//! The last test runs the small cases through `exfilwatch run` against a real broker (Tansu,
//! `scripts/with-tansu.sh`): each bad message lands on the dead-letter topic with its reason,
//! and the alerts equal replay's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;
use sample::{by_id, contoso_messages, replay_alerts, unique};

const RID: &str = "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO";

/// A request of contoso's master key; `fields` goes into `properties`.
fn record_with(time: &str, fields: &str) -> String {
    format!(
        r#"{{"time":"{time}","resourceId":"{RID}","category":"DataPlaneRequests","operationName":"ReadFeed","properties":{{"activityId":"66a0c647-af38-4b8d-a92a-c48a805d6460","statusCode":"200","keyType":"PrimaryMasterKey","userAgent":"python-requests/2.25.1","databaseName":"shop","collectionName":"customers",{fields}}}}}"#
    )
}

fn record(day: u32, hour: u32, minute: u32, second: u32, ip: &str, bytes: u64) -> String {
    record_with(
        &format!("2021-08-{day:02}T{hour:02}:{minute:02}:{second:02}.1234567Z"),
        &format!(r#""clientIpAddress":"{ip}","responseLength":"{bytes}""#),
    )
}

/// Eight days of a familiar origin, then 3 GiB from a new one in half an hour: 960 requests.
fn theft_lines() -> Vec<String> {
    let mut v = Vec::new();
    for day in 1..=8 {
        for hour in 0..24 {
            v.push(record(day, hour, 5, 0, "10.20.30.4", 20 << 20));
        }
    }
    for i in 0..768 {
        v.push(record(9, 2, i / 30, (i % 30) * 2, "203.0.113.77", 4 << 20));
    }
    v
}
const REQUESTS: u64 = 8 * 24 + 768;

/// The theft log with `bad` units spliced in: half among the familiar days (day 5, after the
/// first records that set the stream's progress), half in the middle of the theft.
fn with_bad(bad: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    write_log(&mut out, bad, None);
    out
}

/// Writes the theft log with `bad` spliced in as [`with_bad`], and `big`'s unit (streamed: the
/// test process never holds it, so that its own memory does not count in the child's peak)
/// before the first half.
/// Writes one unit to a writer.
type WriteUnit = dyn Fn(&mut dyn Write);

fn write_log(w: &mut impl Write, bad: &[Vec<u8>], big: Option<&WriteUnit>) {
    let (first, second) = bad.split_at(bad.len() / 2);
    for (i, l) in theft_lines().iter().enumerate() {
        let spliced: &[Vec<u8>] = match i {
            100 => first,
            576 => second,
            _ => &[],
        };
        if let (100, Some(big)) = (i, big) {
            big(w);
            w.write_all(b"\n").unwrap();
        }
        for b in spliced {
            w.write_all(b).unwrap();
            w.write_all(b"\n").unwrap();
        }
        w.write_all(l.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
    }
}

/// What a child `exfilwatch` did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Peak resident set size, in KiB (the child's own, from its summary).
    peak_kib: i64,
}

/// Held by each test from building its input to its child's exit: the suite's large inputs
/// are never built at once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `exfilwatch ARGS`, stdout and stderr to files, waits for it, and reads its own peak
/// memory from its summary (`VmHWM` of its memory after exec). Not `ru_maxrss` from `wait4`:
/// the child is spawned sharing this process's memory until its exec (posix_spawn), and Linux
/// carries that memory's peak (an earlier test's large input) into the child's.
fn exfilwatch(dir: &Path, args: &[&std::ffi::OsStr]) -> Ran {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let status = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned();
    Ran {
        code: status.code(),
        stdout: String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned(),
        peak_kib: peak_from_summary(&stderr).unwrap_or_else(|| panic!("no peak memory in the summary:\n{stderr}")),
        stderr,
    }
}

/// `peak memory: 34.1 MiB (34918 KiB)` of a replay summary, in KiB.
fn peak_from_summary(stderr: &str) -> Option<i64> {
    let line = stderr.lines().map(str::trim).find(|l| l.starts_with("peak memory:"))?;
    line.rsplit_once('(')?.1.strip_suffix(" KiB)")?.parse().ok()
}

fn alerts(stdout: &str) -> BTreeMap<String, serde_json::Value> {
    by_id(&stdout.lines().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>())
}

/// The alerts of the theft log without any bad record.
fn clean_alerts() -> &'static BTreeMap<String, serde_json::Value> {
    static CLEAN: OnceLock<BTreeMap<String, serde_json::Value>> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("clean.json");
        std::fs::write(&f, with_bad(&[])).unwrap();
        let ran = exfilwatch(dir.path(), &["replay".as_ref(), f.as_os_str()]);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let a = alerts(&ran.stdout);
        assert!(a.values().any(|a| a["rule"] == "unfamiliar_origin_volume" && a["origin"]["ip"] == "203.0.113.77"));
        a
    })
}

/// The summary's line that starts with `what`.
fn summary_line<'a>(stderr: &'a str, what: &str) -> &'a str {
    stderr.lines().map(str::trim).find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what:?} in {stderr}"))
}

struct Case {
    /// The bad units, one per line (none holds a newline).
    bad: Vec<Vec<u8>>,
    /// The summary's `malformed:` list, in reason order (`none` when nothing was set aside).
    malformed: &'static str,
    /// Valid requests among the bad units (they add to the 960 requests).
    extra_requests: u64,
    /// Records of other categories among them (the summary's list after DataPlaneRequests).
    other_records: &'static str,
    /// Peak memory bound, MiB.
    max_mib: i64,
    /// Check the dead-letter file (one line per set-aside record, with its reason).
    dead_letters: bool,
    /// One more bad unit, too large to hold: written straight to the file.
    big: Option<Box<WriteUnit>>,
}

impl Case {
    fn new(bad: Vec<Vec<u8>>, malformed: &'static str) -> Case {
        Case { bad, malformed, extra_requests: 0, other_records: "", max_mib: 64, dead_letters: true, big: None }
    }
}

/// Replays the theft log with `case.bad` spliced in and checks everything the suite promises
/// (the caller holds [`one_at_a_time`]).
fn check(case: Case) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("logs.json");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&f).unwrap());
    write_log(&mut w, &case.bad, case.big.as_deref());
    w.flush().unwrap();
    drop(w);
    let dead = dir.path().join("dead.jsonl");
    let mut args: Vec<&std::ffi::OsStr> = vec!["replay".as_ref()];
    if case.dead_letters {
        args.extend(["--dead-letter".as_ref(), dead.as_os_str()]);
    }
    args.push(f.as_os_str());
    let ran = exfilwatch(dir.path(), &args);
    assert_eq!(ran.code, Some(0), "exit code; stderr:\n{}", ran.stderr);
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    assert_eq!(summary_line(&ran.stderr, "malformed:"), format!("malformed: {}", case.malformed), "{}", ran.stderr);
    assert_eq!(
        summary_line(&ran.stderr, "records by category:"),
        format!("records by category: DataPlaneRequests {}{}", REQUESTS + case.extra_requests, case.other_records),
        "{}",
        ran.stderr
    );
    assert_eq!(&alerts(&ran.stdout), clean_alerts(), "the theft around the bad records is alerted as without them");
    if case.dead_letters {
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for l in std::fs::read_to_string(&dead).unwrap_or_default().lines() {
            let d: serde_json::Value = serde_json::from_str(l).unwrap();
            *by_reason.entry(d["reason"].as_str().unwrap().to_string()).or_default() += 1;
        }
        let listed: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let mut want: Vec<&str> = if case.malformed == "none" { vec![] } else { case.malformed.split(", ").collect() };
        want.sort();
        assert_eq!(listed, want, "dead letters by reason");
    }
    eprintln!("peak memory {} MiB (bound {} MiB)", ran.peak_kib >> 10, case.max_mib);
    assert!(ran.peak_kib < case.max_mib << 10, "peak memory {} MiB, bound {} MiB", ran.peak_kib >> 10, case.max_mib);
    ran
}

const T: &str = "2021-08-03T12:00:00Z";

#[test]
fn truncated_json() {
    let _one = one_at_a_time();
    let full = record(3, 12, 0, 0, "10.20.30.4", 1);
    let cuts: Vec<Vec<u8>> =
        [1, 10, 40, full.len() / 2, full.len() - 1].iter().map(|&n| full.as_bytes()[..n].to_vec()).collect();
    let mut bad = cuts;
    bad.push(br#"{"records": [{"time": "2021-08-03T12:00:00Z""#.to_vec());
    check(Case::new(bad, "invalid_json 6"));
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let _one = one_at_a_time();
    // A file saved by a Windows tool starts with a byte order mark: its first record is used.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bom.json");
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend(with_bad(&[]));
    std::fs::write(&f, text).unwrap();
    let ran = exfilwatch(dir.path(), &["replay".as_ref(), f.as_os_str()]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(summary_line(&ran.stderr, "malformed:"), "malformed: none", "{}", ran.stderr);
    assert_eq!(&alerts(&ran.stdout), clean_alerts());
}

#[test]
fn a_50_mb_single_record_is_too_large() {
    let _one = one_at_a_time();
    let mut case = Case::new(vec![], "too_large 1");
    case.big = Some(Box::new(|w: &mut dyn Write| {
        let r = record_with(T, r#""clientIpAddress":"10.20.30.4","responseLength":"1","userAgent":""#);
        w.write_all(&r.as_bytes()[..r.len() - 2]).unwrap(); // the user agent string left open
        let mb = vec![b'x'; 1 << 20];
        for _ in 0..50 {
            w.write_all(&mb).unwrap();
        }
        w.write_all(b"\"}}").unwrap();
    }));
    case.max_mib = 128;
    check(case);
}

#[test]
fn a_100_mb_envelope_is_decoded_in_bounded_memory() {
    let _one = one_at_a_time();
    // 100 MB of skipped records (QueryRuntimeStatistics) with two bad requests inside.
    let skipped = r#"{"time":"2021-08-03T12:00:00Z","resourceId":"/X/CONTOSO","category":"QueryRuntimeStatistics","properties":{"querytext":"SELECT * FROM c WHERE c.id = @id AND c.partitionKey = @pk ORDER BY c._ts DESC","activityId":"66a0c647-af38-4b8d-a92a-c48a805d6460"}}"#;
    let n = (100 << 20) / (skipped.len() + 1) + 1;
    let mut case = Case::new(vec![], "bad_ip 1, bad_length 1");
    case.big = Some(Box::new(move |w: &mut dyn Write| {
        w.write_all(b"{\"records\": [").unwrap();
        for i in 0..n {
            if i > 0 {
                w.write_all(b",").unwrap();
            }
            let r = match i {
                1000 => record_with(T, r#""clientIpAddress":"unknown""#),
                200_000 => record_with(T, r#""clientIpAddress":"10.20.30.4","responseLength":"-7""#),
                _ => skipped.to_string(),
            };
            w.write_all(r.as_bytes()).unwrap();
        }
        w.write_all(b"]}").unwrap();
    }));
    case.other_records = Box::leak(format!(", QueryRuntimeStatistics {}", n - 2).into_boxed_str());
    case.max_mib = 256;
    check(case);
}

#[test]
fn deep_nesting() {
    let _one = one_at_a_time();
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n)).into_bytes();
    let mut bad = vec![deep("[", "]", 100_000), deep(r#"{"a":"#, "}", 100_000)];
    // A request whose user agent nests 10,000 arrays deep.
    let mut r = record_with(T, r#""clientIpAddress":"10.20.30.4","userAgent":"#).into_bytes();
    r.truncate(r.len() - 2);
    r.extend(deep("[", "]", 10_000));
    r.extend(b"}}");
    bad.push(r);
    bad.push(format!(r#"{{"records": {}}}"#, String::from_utf8(deep("[", "]", 5_000)).unwrap()).into_bytes());
    // simd-json parses arrays of any depth (not objects: not_an_object) and refuses objects
    // nested that deep (invalid_json); a user agent that is an array reads as absent.
    let mut case = Case::new(bad, "invalid_json 1, not_an_object 2");
    case.extra_requests = 1;
    check(case);
}

#[test]
fn invalid_utf8_and_nul_bytes() {
    let _one = one_at_a_time();
    let mut in_string = record_with(T, r#""clientIpAddress":"10.20.30.4","userAgent":"ab""#).into_bytes();
    let at = in_string.windows(2).position(|w| w == b"ab").unwrap();
    in_string[at] = 0xff;
    let mut raw_nul = in_string.clone();
    raw_nul[at] = 0;
    let bad = vec![
        in_string,
        raw_nul,
        b"\xc3\x28\xa0\xa1".to_vec(),
        b"\0\0\0\0".to_vec(),
        b"{\"records\": [\0]}".to_vec(),
        // Escaped, a NUL is a character: in an address it makes the address bad.
        record_with(T, r#""clientIpAddress":"10.20.30.4\u0000""#).into_bytes(),
    ];
    check(Case::new(bad, "invalid_json 5, bad_ip 1"));
}

#[test]
fn numbers_out_of_range() {
    let _one = one_at_a_time();
    let len = |v: &str| record_with(T, &format!(r#""clientIpAddress":"10.20.30.4","responseLength":{v}"#)).into_bytes();
    let bad = vec![
        len("-1"),
        len("\"-1\""),
        len("1e400"),
        len("\"1e400\""),
        len("18446744073709551616"),
        len("\"18446744073709551616\""),
        len("\"99999999999999999999999999999\""),
        len("-1e-400"),
        record_with(T, r#""clientIpAddress":"10.20.30.4","statusCode":70000"#).into_bytes(),
        record_with(T, r#""clientIpAddress":"10.20.30.4","statusCode":"-200""#).into_bytes(),
    ];
    // simd-json refuses numbers it cannot represent (1e400, 2^64) as JSON; as strings they are
    // bad lengths; -1e-400 is a negative zero: a length of 0, a request.
    let mut case = Case::new(bad, "invalid_json 2, bad_length 5, bad_status 2");
    case.extra_requests = 1;
    check(case);
}

#[test]
fn times_from_1970_and_2200() {
    let _one = one_at_a_time();
    let at = |t: &str| record_with(t, r#""clientIpAddress":"10.20.30.4","responseLength":"1""#).into_bytes();
    let bad = vec![
        at("1970-01-01T00:00:00Z"),
        at("1970-01-01T00:00:00.0000000Z"),
        at("2200-01-01T00:00:00Z"),
        at("2200-12-31T23:59:59.9999999Z"),
        at("9999-12-31T23:59:59Z"),
        at("0000-00-00T00:00:00Z"),
        at("-1"),
        at(""),
    ];
    check(Case::new(bad, "missing_time 1, bad_time 3, future_time 2, stale_time 2"));
}

#[test]
fn addresses_in_every_odd_form() {
    let _one = one_at_a_time();
    let ip = |a: &str| record_with(T, &format!(r#""clientIpAddress":"{a}","responseLength":"1""#)).into_bytes();
    let bad = vec![
        ip("fe80::1%eth0"),
        ip("[fe80::1%25eth0]:443"),
        ip("010.020.030.004"),
        ip("unknown"),
        ip("10.20.30"),
        ip("10.20.30.4:99999"),
        ip("[10.20.30.4"),
        // Valid forms of the familiar origin: requests.
        ip("[::ffff:10.20.30.4]:443"),
        ip("10.20.30.4:8080"),
        ip("::ffff:10.20.30.4"),
        ip("[10.20.30.4]"),
    ];
    let mut case = Case::new(bad, "bad_ip 7");
    case.extra_requests = 4;
    check(case);
}

#[test]
fn duplicate_keys_the_last_one_wins() {
    let _one = one_at_a_time();
    let bad = vec![
        format!(r#"{{"time":"{T}","time":"yesterday","resourceId":"{RID}","category":"DataPlaneRequests","properties":{{}}}}"#)
            .into_bytes(),
        record_with(T, r#""clientIpAddress":"10.20.30.4","responseLength":"5","responseLength":"-5""#).into_bytes(),
        record_with(T, r#""clientIpAddress":"10.20.30.4","clientIpAddress":"nowhere""#).into_bytes(),
        // Both valid: one request.
        record_with(T, r#""clientIpAddress":"nowhere","clientIpAddress":"10.20.30.4","responseLength":"1""#)
            .into_bytes(),
    ];
    let mut case = Case::new(bad, "bad_time 1, bad_ip 1, bad_length 1");
    case.extra_requests = 1;
    check(case);
}

#[test]
fn wrong_types_everywhere() {
    let _one = one_at_a_time();
    let props = r#""clientIpAddress":"10.20.30.4""#;
    let bad = vec![
        format!(r#"{{"time":20210803,"resourceId":"{RID}","category":"DataPlaneRequests","properties":{{{props}}}}}"#),
        format!(r#"{{"time":["{T}"],"resourceId":"{RID}","category":"DataPlaneRequests","properties":{{{props}}}}}"#),
        format!(
            r#"{{"time":"{T}","resourceId":{{"id":"x"}},"category":"DataPlaneRequests","properties":{{{props}}}}}"#
        ),
        format!(
            r#"{{"time":"{T}","resourceId":"{RID}","category":"DataPlaneRequests","properties":{{"clientIpAddress":true}}}}"#
        ),
        format!(
            r#"{{"time":"{T}","resourceId":"{RID}","category":"DataPlaneRequests","properties":{{{props},"statusCode":[200]}}}}"#
        ),
        format!(
            r#"{{"time":"{T}","resourceId":"{RID}","category":"DataPlaneRequests","properties":{{{props},"responseLength":{{}}}}}}"#
        ),
        format!(
            r#"{{"time":"{T}","resourceId":"{RID}","category":"DataPlaneRequests","properties":{{{props},"requestLength":false}}}}"#
        ),
        r#"{"records": {"time": "x"}}"#.to_string(),
        r#"{"records": [1, "two", null, [3]]}"#.to_string(),
        "\"just a string\"".to_string(),
        "42".to_string(),
        "null".to_string(),
        // A category that is a number: not a request category, skipped.
        format!(r#"{{"time":"{T}","resourceId":"{RID}","category":7,"properties":{{{props}}}}}"#),
    ];
    // A time that is an array reads as absent (missing_time); one that is a number, as text.
    let mut case = Case::new(
        bad.into_iter().map(String::into_bytes).collect(),
        "not_an_object 8, missing_time 1, bad_time 1, bad_ip 1, bad_length 2, bad_status 1, missing_account 1",
    );
    case.other_records = ", Other 1";
    check(case);
}

#[test]
fn the_same_record_a_million_times() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("million.json");
    let one = format!(
        r#"{{"time":"{T}","resourceId":"c","category":"DataPlaneRequests","properties":{{"clientIpAddress":"unknown"}}}}"#
    );
    let mut w = std::io::BufWriter::new(std::fs::File::create(&f).unwrap());
    for (i, l) in theft_lines().iter().enumerate() {
        if i == 100 {
            for _ in 0..1_000_000 {
                writeln!(w, "{one}").unwrap();
            }
        }
        writeln!(w, "{l}").unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
    let ran = exfilwatch(dir.path(), &["replay".as_ref(), f.as_os_str()]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(summary_line(&ran.stderr, "malformed:"), "malformed: bad_ip 1000000");
    assert_eq!(
        summary_line(&ran.stderr, "records by category:"),
        format!("records by category: DataPlaneRequests {REQUESTS}")
    );
    assert_eq!(&alerts(&ran.stdout), clean_alerts());
    // Logged once per reason, not once per record.
    assert!(ran.stderr.lines().filter(|l| l.contains("bad_ip")).count() < 10, "{}", ran.stderr);
    assert!(ran.peak_kib < 64 << 10, "peak memory {} MiB", ran.peak_kib >> 10);
}

// ---- the same through `exfilwatch run` ----

fn broker() -> String {
    std::env::var("EXFILWATCH_TEST_KAFKA")
        .expect("this test needs a broker: run it with `make test` (scripts/with-tansu.sh starts Tansu)")
}

/// Every small case's bad units, with the reason each must be dead-lettered with.
fn small_cases() -> Vec<(Vec<u8>, &'static str)> {
    let r = |f: &str| record_with("2021-08-17T02:30:00Z", f).into_bytes();
    let mut v: Vec<(Vec<u8>, &'static str)> = vec![
        (b"{\"time\":\"2021-08-17T02:30:00Z\",\"resourceId\":\"a".to_vec(), "invalid_json"),
        (format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "not_an_object"),
        (format!("{}{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000)).into_bytes(), "invalid_json"),
        (b"\xc3\x28\xa0\xa1".to_vec(), "invalid_json"),
        (b"\0\0\0\0".to_vec(), "invalid_json"),
        (r(r#""clientIpAddress":"10.0.0.1","responseLength":"-1""#), "bad_length"),
        (r(r#""clientIpAddress":"10.0.0.1","responseLength":"1e400""#), "bad_length"),
        // simd-json refuses a number it cannot represent.
        (r(r#""clientIpAddress":"10.0.0.1","responseLength":18446744073709551616"#), "invalid_json"),
        (r(r#""clientIpAddress":"10.0.0.1","responseLength":"18446744073709551616""#), "bad_length"),
        (r(r#""clientIpAddress":"10.0.0.1","statusCode":70000"#), "bad_status"),
        (record_with("1970-01-01T00:00:00Z", r#""clientIpAddress":"10.0.0.1""#).into_bytes(), "stale_time"),
        (record_with("2200-01-01T00:00:00Z", r#""clientIpAddress":"10.0.0.1""#).into_bytes(), "future_time"),
        (record_with("0000-00-00T00:00:00Z", r#""clientIpAddress":"10.0.0.1""#).into_bytes(), "bad_time"),
        (r(r#""clientIpAddress":"fe80::1%eth0""#), "bad_ip"),
        (r(r#""clientIpAddress":"010.020.030.004""#), "bad_ip"),
        (r(r#""clientIpAddress":"unknown""#), "bad_ip"),
        (r(r#""clientIpAddress":"10.0.0.1","responseLength":"5","responseLength":"-5""#), "bad_length"),
        (r(r#""clientIpAddress":"10.0.0.1","statusCode":[200]"#), "bad_status"),
        (b"{\"records\": {\"time\": \"x\"}}".to_vec(), "not_an_object"),
        (b"42".to_vec(), "not_an_object"),
    ];
    // Raw NUL inside a string.
    let mut nul = r(r#""clientIpAddress":"10.0.0.1","userAgent":"ab""#);
    let at = nul.windows(2).position(|w| w == b"ab").unwrap();
    nul[at] = 0;
    v.push((nul, "invalid_json"));
    v
}

#[test]
fn bad_messages_on_the_raw_topic_are_dead_lettered_with_their_reason_and_change_no_alert() {
    let (topic, alerts_topic, dead_topic, group) =
        (unique("bad"), unique("alerts-bad"), unique("dead-bad"), unique("gb"));
    let b = broker();
    for t in [&topic, &alerts_topic, &dead_topic] {
        kafka_client::create_topic(&b, t, 1);
    }
    let (contoso, mut msgs) = contoso_messages();
    let bad = small_cases();
    // Spread among contoso's messages, after its first thousand (the account has progressed).
    for (i, (payload, _)) in bad.iter().enumerate() {
        msgs.insert(1000 + i * 97, (String::new(), payload.clone()));
    }
    kafka_client::produce(&b, &topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{b}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             dead_letter_topic = \"{dead_topic}\"\n[sinks]\nstdout = false\nkafka_topic = \"{alerts_topic}\"\n\
             [service]\nmetrics_addr = \"127.0.0.1:0\"\nstate_store = \"\"\n"
        ),
    )
    .unwrap();
    let mut svc = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let expected = replay_alerts(&contoso);
    assert!(!expected.is_empty());
    kafka_client::read_until(&b, &alerts_topic, Duration::from_secs(120), |m| m.len() >= expected.len());
    // A dead letter carries the record as text: invalid UTF-8 replaced (U+FFFD).
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned().into_bytes();
    let bad: Vec<(Vec<u8>, &str)> = bad.into_iter().map(|(p, r)| (text(&p), r)).collect();
    kafka_client::read_until(&b, &dead_topic, Duration::from_secs(60), |m| bad.iter().all(|(p, _)| m.contains(p)));
    sample::sigterm(&mut svc);
    let status = svc.wait().unwrap();
    assert!(status.success(), "exfilwatch run exited with {status}");
    assert_eq!(by_id(&kafka_client::read_all(&b, &alerts_topic)), expected, "alerts equal replay's");
    let dead = kafka_client::read_all_with_headers(&b, &dead_topic);
    // The others are the sample's own bad lines.
    let theirs: Vec<&Vec<u8>> = dead.iter().map(|(p, _)| p).filter(|p| !bad.iter().any(|(b, _)| b == *p)).collect();
    assert!(theirs.iter().all(|p| msgs.iter().any(|(_, m)| text(m) == **p)), "a dead letter that is no message");
    for (payload, reason) in &bad {
        let got: Vec<&str> =
            dead.iter().filter(|(p, _)| p == payload).map(|(_, h)| h["exfilwatch.reason"].as_str()).collect();
        assert_eq!(got, [*reason], "dead letter of {:?}", String::from_utf8_lossy(&payload[..payload.len().min(80)]));
    }
}
