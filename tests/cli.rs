//! The `exfilwatch` binary end to end: exit codes, stdin, gzip, strict mode, dead letters,
//! config commands. Inputs are written by the tests into temporary directories.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn exfilwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
}

const RID: &str = "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO";

fn record(day: u32, hour: u32, minute: u32, second: u32, ip: &str, bytes: u64) -> String {
    format!(
        r#"{{"time":"2021-08-{day:02}T{hour:02}:{minute:02}:{second:02}.1234567Z","resourceId":"{RID}","category":"DataPlaneRequests","operationName":"ReadFeed","properties":{{"activityId":"66a0c647-af38-4b8d-a92a-c48a805d6460","statusCode":"200","clientIpAddress":"{ip}","responseLength":"{bytes}","keyType":"PrimaryMasterKey","userAgent":"python-requests/2.25.1","databaseName":"shop","collectionName":"customers"}}}}"#
    )
}

/// Eight days of a familiar origin, then 3 GiB from a new one in half an hour.
fn theft_log() -> String {
    let mut s = String::new();
    for day in 1..=8 {
        for hour in 0..24 {
            s.push_str(&record(day, hour, 5, 0, "10.20.30.4", 20 << 20));
            s.push('\n');
        }
    }
    for i in 0..768 {
        s.push_str(&record(9, 2, i / 30, (i % 30) * 2, "203.0.113.77", 4 << 20));
        s.push('\n');
    }
    s
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn alerts(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn replay_finds_the_theft_and_fail_on_alert_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let out = exfilwatch().args(["replay", "--fail-on-alert"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let a = alerts(&out);
    assert_eq!(a[0]["rule"], "unfamiliar_origin_volume");
    assert_eq!(a[0]["severity"], "critical");
    assert_eq!(a[0]["origin"]["ip"], "203.0.113.77");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alerts: unfamiliar_origin_volume/critical 1"), "{stderr}");
    // Without the flag: exit 0.
    let out = exfilwatch().arg("replay").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn metrics_textfile_holds_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &format!("{}\n{{not json\n", theft_log()));
    let m = dir.path().join("exfilwatch.prom");
    let out = exfilwatch().args(["replay", "-q", "--metrics-textfile"]).arg(&m).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&m).unwrap();
    let requests = 8 * 24 + 768;
    assert!(
        text.contains(&format!("exfilwatch_records_read_total{{category=\"DataPlaneRequests\"}} {requests}")),
        "{text}"
    );
    assert!(text.contains("exfilwatch_records_malformed_total{reason=\"invalid_json\"} 1"), "{text}");
    assert!(
        text.contains("exfilwatch_alerts_total{rule=\"unfamiliar_origin_volume\",severity=\"critical\"} 1"),
        "{text}"
    );
    assert!(text.contains("exfilwatch_keys_tracked 1"), "{text}");
}

#[test]
fn stdin_gzip_and_plain_file_give_the_same_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let text = theft_log();
    let plain = write(dir.path(), "logs.json", &text);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    let gzp = dir.path().join("logs.json.gz");
    std::fs::write(&gzp, gz.finish().unwrap()).unwrap();

    let a = exfilwatch().args(["replay", "-q"]).arg(&plain).output().unwrap();
    let b = exfilwatch().args(["replay", "-q"]).arg(&gzp).output().unwrap();
    let mut child =
        exfilwatch().args(["replay", "-q", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let c = child.wait_with_output().unwrap();
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stdout, c.stdout);
}

#[test]
fn malformed_records_are_set_aside_or_fatal_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = theft_log();
    text.insert_str(0, "<html>502 Bad Gateway</html>\n");
    text.push_str(&record(9, 3, 0, 0, "999.1.2.3", 1));
    text.push('\n');
    let f = write(dir.path(), "logs.json", &text);
    let dl = dir.path().join("dead.jsonl");
    let out = exfilwatch().arg("replay").arg(&f).arg("--dead-letter").arg(&dl).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The bad lines cost nothing else: the same alerts as the clean log.
    let clean = exfilwatch().arg("replay").arg(write(dir.path(), "clean.json", &theft_log())).output().unwrap();
    assert_eq!(alerts(&out), alerts(&clean));
    assert!(!alerts(&out).is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("malformed: invalid_json 1, bad_ip 1"), "{stderr}");
    let dead: Vec<serde_json::Value> =
        std::fs::read_to_string(&dl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["reason"], "invalid_json");
    assert_eq!(dead[0]["location"], format!("{}:1", f.display()));
    assert_eq!(dead[0]["record"], "<html>502 Bad Gateway</html>");
    assert_eq!(dead[1]["reason"], "bad_ip");

    let out = exfilwatch().args(["replay", "--strict"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("malformed record (invalid_json) at") && stderr.contains(":1 (--strict)"), "{stderr}");
}

#[test]
fn since_and_until_select_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let out = exfilwatch().args(["replay", "--until", "2021-08-09T00:00:00Z"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(alerts(&out).is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("768 outside --since/--until"), "{stderr}");
    // A value that is not a time is a usage error (exit 2, as the README says).
    let out = exfilwatch().args(["replay", "--since", "not a time"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2_and_missing_input_exits_1() {
    let out = exfilwatch().args(["replay", "--no-such-flag", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = exfilwatch().args(["replay", "/nonexistent/logs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn config_defaults_round_trip_and_check_names_the_nearest_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = exfilwatch().args(["config", "defaults"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let defaults = write(dir.path(), "defaults.toml", &String::from_utf8_lossy(&out.stdout));
    let out = exfilwatch().args(["config", "check"]).arg(&defaults).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = write(dir.path(), "bad.toml", "[detect]\nunfamiliar_byte = \"2GiB\"\n");
    let out = exfilwatch().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `detect.unfamiliar_bytes`?"), "{stderr}");
}

#[test]
fn a_config_file_changes_the_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let cfg = write(dir.path(), "c.toml", "[detect]\nunfamiliar_bytes = \"4GiB\"\nvolume_anomaly = false\n");
    let out = exfilwatch().arg("replay").arg("--config").arg(&cfg).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(alerts(&out).is_empty(), "3 GiB is below a 4 GiB threshold");
}

/// One HTTP GET on loopback: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn replay_metrics_addr_serves_the_endpoints_while_it_runs() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let mut child = exfilwatch()
        .args(["replay", "--metrics-addr", "127.0.0.1:0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    assert!(line.contains("serving /metrics"), "{line}");

    // 100 requests, then control-plane records (counted, skipped) until the replay's
    // progress tick has published the 100.
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..100 {
        writeln!(stdin, "{}", record(1, 0, i / 60, i % 60, "10.20.30.4", 1024)).unwrap();
    }
    let filler = format!(
        r#"{{"time":"2021-08-01T02:00:00Z","resourceId":"{RID}","category":"ControlPlaneRequests","properties":{{}}}}"#
    );
    let want = "exfilwatch_records_read_total{category=\"DataPlaneRequests\"} 100\n";
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        writeln!(stdin, "{filler}").unwrap();
        stdin.flush().unwrap();
        let (code, page) = http_get(&addr, "/metrics");
        if code == 200 && page.contains(want) {
            break page;
        }
        assert!(Instant::now() < deadline, "no {want} on /metrics: {page}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(page.contains("exfilwatch_ready 1"), "{page}");
    assert!(page.contains("exfilwatch_build_info{role=\"replay\",version="), "{page}");
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("DataPlaneRequests 100"), "{rest}");
    // The endpoint went with the process.
    assert_eq!(http_get(&addr, "/healthz").0, 0);
}

#[test]
fn run_roles_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "svc.toml", "[service]\nstate_store = \"\"\nmetrics_addr = \"\"\n");
    let out = exfilwatch().args(["run", "--role", "bogus", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rekey"), "the valid roles are listed");
    // Detect state moves between instances through the state store: without one, refused.
    let out = exfilwatch().args(["run", "--role", "detect", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs service.state_store"));
    let bad = write(dir.path(), "bad.toml", "[service]\nrole = \"detector\"\n");
    let out = exfilwatch().args(["config", "check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// One wrong clock must not blind an account (issue 10): a record stamped 2099 in the middle
/// of the log is set aside as `future_time`, one from two months before as `stale_time`; both
/// go to the dead-letter file, and the alerts are exactly those of the log without them.
#[test]
fn replay_sets_aside_records_from_the_future_and_the_distant_past() {
    let dir = tempfile::tempdir().unwrap();
    let clean = theft_log();
    let mut lines: Vec<String> = clean.lines().map(String::from).collect();
    let future = record(3, 4, 5, 6, "10.20.30.4", 1000).replace("2021-08-03", "2099-01-01");
    let stale = record(3, 4, 5, 6, "10.20.30.4", 1000).replace("2021-08-03", "2021-06-01");
    lines.insert(50, future.clone());
    lines.insert(180, stale.clone());
    let dirty = write(dir.path(), "dirty.json", &(lines.join("\n") + "\n"));
    let clean = write(dir.path(), "clean.json", &clean);
    let dead = dir.path().join("dead.jsonl");
    let out = exfilwatch().arg("replay").arg(&dirty).arg("--dead-letter").arg(&dead).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let reference = exfilwatch().arg("replay").arg(&clean).output().unwrap();
    assert!(!alerts(&reference).is_empty());
    assert_eq!(alerts(&out), alerts(&reference), "the same alerts, ids included");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("future_time 1") && stderr.contains("stale_time 1"), "{stderr}");
    assert!(stderr.contains(" 0 late"), "no record became late: {stderr}");
    let dead: Vec<serde_json::Value> =
        std::fs::read_to_string(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["stale_time", "future_time"], "the stale one at once, the future one at the end");
    assert_eq!(dead[1]["record"].as_str().unwrap(), future);
    assert_eq!(dead[0]["record"].as_str().unwrap(), stale);
    assert!(dead[1]["location"].as_str().unwrap().ends_with("dirty.json:51#0"), "{}", dead[1]["location"]);
}

/// Issue 13: what a new user tripped on.
fn gzip(text: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn gzip_on_stdin_is_read_like_a_gzip_file() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "logs.json", &theft_log());
    let by_path = exfilwatch().args(["replay", "-q"]).arg(&plain).output().unwrap();
    let mut child = exfilwatch()
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&gzip(&theft_log())).unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    assert!(!by_path.stdout.is_empty());
    assert_eq!(piped.stdout, by_path.stdout, "the same alerts");
    assert!(stderr(&piped).contains("malformed: none"), "{}", stderr(&piped));
}

#[test]
fn a_file_reached_twice_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let f = write(&logs, "a.json", &theft_log());
    std::os::unix::fs::symlink(&f, dir.path().join("link.json")).unwrap();
    let once = exfilwatch().args(["replay"]).arg(&f).output().unwrap();
    // The directory, a file in it, a link to it and the same path again.
    let many =
        exfilwatch().arg("replay").arg(&logs).arg(&f).arg(dir.path().join("link.json")).arg(&f).output().unwrap();
    assert_eq!(many.status.code(), Some(0), "{}", stderr(&many));
    assert_eq!(many.stdout, once.stdout, "no alert of a double read");
    let records = |out: &Output| {
        stderr(out)
            .lines()
            .find(|l| l.contains("records in"))
            .map(|l| l.split(':').nth(1).unwrap_or("").split_whitespace().next().unwrap_or("").to_string())
    };
    assert_eq!(records(&many), records(&once), "{}", stderr(&many));
    assert!(
        stderr(&many).contains("reached more than once") && stderr(&many).contains("repeats=3"),
        "{}",
        stderr(&many)
    );
    assert!(stderr(&many).contains("0 late"), "{}", stderr(&many));
}

#[test]
fn impossible_time_ranges_and_bad_times_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let out = exfilwatch()
        .args(["replay", "--since", "2021-08-09T00:00:00Z", "--until", "2021-08-08T00:00:00Z"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not before --until"), "{}", stderr(&out));
    let out = exfilwatch().args(["replay", "--since", "yesterday"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--since `yesterday` is not a time"), "{}", stderr(&out));
}

#[test]
fn output_dash_is_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let out = exfilwatch().current_dir(dir.path()).args(["replay", "-q", "-o", "-"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(alerts(&out)[0]["rule"], "unfamiliar_origin_volume");
    assert!(!dir.path().join("-").exists(), "no file named -");
}

#[test]
fn reading_nothing_is_said_and_has_its_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "README.md", "notes\n");
    write(dir.path(), ".hidden", "x\n");
    let out = exfilwatch().args(["replay", "-q"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no record was read"), "even with -q: {}", stderr(&out));
    // Training on nothing writes no model.
    let f = write(dir.path(), "logs.json", &theft_log());
    let model = dir.path().join("model");
    let out = exfilwatch()
        .args(["train", "-q", "--until", "2021-07-01T00:00:00Z", "--out"])
        .arg(&model)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nothing to train on"), "{}", stderr(&out));
    assert!(!model.exists());
}

#[test]
fn the_learning_period_is_named_when_it_held_alerts_back() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let out = exfilwatch().args(["replay", "--since", "2021-08-08T00:00:00Z"]).arg(&f).output().unwrap();
    assert!(alerts(&out).is_empty(), "one day of history: still learning");
    assert!(
        stderr(&out).contains("held back by the learning period") && stderr(&out).contains("--model"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_replay_metrics_textfile_counts_what_stdout_took() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let m = dir.path().join("m.prom");
    let out = exfilwatch().args(["replay", "-q", "--metrics-textfile"]).arg(&m).arg(&f).output().unwrap();
    let n = alerts(&out).len();
    assert!(n > 0);
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.contains(&format!("exfilwatch_sink_delivered_alerts_total{{sink=\"stdout\"}} {n}")), "{text}");
}

#[test]
fn configuration_errors_say_where_and_config_check_checks_what_run_checks() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let p = write(dir.path(), name, text);
        let out = exfilwatch().args(["config", "check"]).arg(&p).output().unwrap();
        (out.status.code(), stderr(&out))
    };
    let (code, e) = check("size.toml", "[detect]\nunfamiliar_bytes = \"lots\"\n");
    assert_eq!(code, Some(1));
    assert!(e.contains("size.toml: line 2, column 20") && e.contains("unfamiliar_bytes = \"lots\""), "{e}");
    let (_, e) = check("syntax.toml", "[detect\nx = 1\n");
    assert!(e.contains("line 1, column 8") && !e.contains("\n  "), "{e}");
    let (_, e) = check("variant.toml", "[detect]\norigin_granularity = \"ipv4\"\n");
    assert!(e.contains("line 2") && e.contains("origin_granularity"), "{e}");
    for (name, text, key) in [
        ("url.toml", "[sinks]\nwebhook_url = \"not a url\"\n", "sinks.webhook_url"),
        ("store.toml", "[service]\nstate_store = \"ftp://x\"\n", "service.state_store"),
        ("model.toml", "[service]\nmodel = \"/nonexistent/model\"\n", "service.model"),
    ] {
        let (code, e) = check(name, text);
        assert_eq!(code, Some(1), "{name}: {e}");
        assert!(e.contains(key), "{name}: {e}");
    }
    assert_eq!(check("ok.toml", "[sinks]\nwebhook_url = \"https://soc.example/hook\"\n").0, Some(0));
}

#[test]
fn errors_name_what_failed_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let out =
        exfilwatch().args(["replay", "-q", "--dead-letter", "/nonexistent/dir/x.jsonl"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("cannot write dead letters to /nonexistent/dir/x.jsonl"), "{e}");
    assert_eq!(e.matches("os error 2").count(), 1, "the cause once: {e}");
    let out = exfilwatch().args(["replay", "-q", "--metrics-addr", "9464"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("expected HOST:PORT"), "{}", stderr(&out));
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &format!("{}\n{{not json\n", theft_log()));
    // stderr is a pipe here, as when it goes to a log file.
    let out = exfilwatch().args(["replay", "-q"]).arg(&f).env_remove("NO_COLOR").output().unwrap();
    let e = stderr(&out);
    assert!(e.contains("Malformed record set aside"), "{e}");
    assert!(!e.contains('\u{1b}'), "no ANSI escapes: {e:?}");
}

#[test]
fn an_analyst_can_filter_and_read_alerts_in_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &theft_log());
    let all = alerts(&exfilwatch().args(["replay", "-q"]).arg(&f).output().unwrap());
    assert!(all.len() >= 2, "{all:?}");
    let critical = alerts(&exfilwatch().args(["replay", "-q", "--min-severity", "critical"]).arg(&f).output().unwrap());
    assert!(!critical.is_empty() && critical.len() < all.len());
    assert!(critical.iter().all(|a| a["severity"] == "critical"));
    let other = exfilwatch().args(["replay", "-q", "--account", "fabrikam"]).arg(&f).output().unwrap();
    assert!(other.stdout.is_empty(), "no alert of another account");
    let mine = alerts(&exfilwatch().args(["replay", "-q", "--account", "Contoso"]).arg(&f).output().unwrap());
    assert_eq!(mine.len(), all.len(), "account names are matched as the alerts spell them (lowercase)");
    let text = exfilwatch().args(["replay", "-q", "--format", "text"]).arg(&f).output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&text.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), all.len());
    let first = &all[0];
    assert_eq!(
        lines[0],
        format!(
            "[{}] {} {}/{}: {}",
            first["severity"].as_str().unwrap(),
            first["rule"].as_str().unwrap(),
            first["account"].as_str().unwrap(),
            first["credential"].as_str().unwrap(),
            first["summary"].as_str().unwrap()
        )
    );
}

#[test]
fn logs_can_be_json_for_a_log_shipper() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &format!("{}\n{{not json\n", theft_log()));
    let out = exfilwatch().args(["replay", "-q", "--log-format", "json"]).arg(&f).output().unwrap();
    let line = stderr(&out).lines().find(|l| l.contains("Malformed record")).map(str::to_string).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["fields"]["reason"], "invalid_json");
}

#[test]
fn strict_stops_without_promising_to_count_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "logs.json", &format!("{}\n{{not json\n", theft_log()));
    let out = exfilwatch().args(["replay", "-q", "--strict"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("malformed record (invalid_json)") && !e.contains("only counted"), "{e}");
}

#[test]
fn model_inspect_says_what_it_cannot_know_yet() {
    let dir = tempfile::tempdir().unwrap();
    let out = exfilwatch().args(["model", "inspect"]).arg(dir.path().join("missing")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("it does not exist"), "{}", stderr(&out));
    // Half a day of one key: no finished day yet.
    let mut log = String::new();
    for hour in 0..12 {
        log.push_str(&record(1, hour, 5, 0, "10.20.30.4", 300_000));
        log.push('\n');
    }
    let f = write(dir.path(), "logs.json", &log);
    let model = dir.path().join("model");
    let out = exfilwatch().args(["train", "-q", "--out"]).arg(&model).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = exfilwatch().args(["model", "inspect"]).arg(&model).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("less than a day of history") && text.contains("typical: not known yet"), "{text}");
}

/// `train --model OLD` rolls a model forward: trained in two steps, the tables are those of
/// one training over the whole range, byte for byte.
#[test]
fn a_model_continued_with_newer_logs_equals_one_trained_on_all() {
    let dir = tempfile::tempdir().unwrap();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-logs");
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let train = |args: &[&str], out: &Path| {
        let o = exfilwatch().args(["train", "-q"]).args(args).arg("--out").arg(out).arg(sample).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o
    };
    train(&["--until", "2021-08-13T00:00:00Z"], &a);
    let m = a.display().to_string();
    let o = train(&["--model", &m, "--since", "2021-08-13T00:00:00Z", "--until", "2021-08-17T00:00:00Z"], &b);
    assert!(!stderr(&o).contains("counted again"), "--since at the model's end: no note");
    train(&["--until", "2021-08-17T00:00:00Z"], &c);
    for table in ["keys", "origins", "volume_days", "accounts", "windows", "symbols", "verdicts"] {
        let file = format!("{table}.parquet");
        assert_eq!(std::fs::read(b.join(&file)).unwrap(), std::fs::read(c.join(&file)).unwrap(), "{file}");
    }
}

#[test]
fn alerts_name_the_accounts_azure_resource() {
    let dir = tempfile::tempdir().unwrap();
    let replay = |log: &str| {
        let input = write(dir.path(), "in.jsonl", log);
        let out = exfilwatch().args(["replay", "-q"]).arg(&input).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let alerts = alerts(&out);
        assert!(alerts.iter().any(|a| a["rule"] == "unfamiliar_origin_volume"), "{alerts:?}");
        alerts
    };
    // The legacy records spell the id in capitals: the alert gives it lowercased, with its parts.
    for a in replay(&theft_log()) {
        assert_eq!(a["resource_id"], RID.to_ascii_lowercase(), "{a}");
        assert_eq!(a["subscription_id"], "x", "{a}");
        assert_eq!(a["resource_group"], "rg", "{a}");
        assert_eq!(a["account"], "contoso", "{a}");
    }
    // Records that carry only the account's name: the alerts say nothing rather than guess.
    for a in replay(&theft_log().replace(RID, "contoso")) {
        assert!(a.get("resource_id").is_none() && a.get("subscription_id").is_none(), "{a}");
    }
    // A history without the id, then records that name it: the alerts carry it.
    let log = theft_log();
    let theft = log[..log.find("2021-08-09T").unwrap()].rfind('\n').unwrap() + 1;
    let mixed = format!("{}{}", log[..theft].replace(RID, "contoso"), &log[theft..]);
    for a in replay(&mixed) {
        assert_eq!(a["resource_group"], "rg", "{a}");
    }
}

#[test]
fn a_damaged_archive_loses_only_the_damage_and_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    write(&logs, "a-theft.json", &theft_log());
    // Another account's hour, gzipped and cut in half (an interrupted download).
    let other: String =
        (0..3000).map(|i| record(2, 3, i / 60, i % 60, "10.9.9.9", 1000).replace("CONTOSO", "OTHER") + "\n").collect();
    let whole = gzip(&other);
    std::fs::write(logs.join("b-cut.json.gz"), &whole[..whole.len() / 2]).unwrap();
    // An input that exists but cannot be opened as a file (even by root): a socket.
    let socket = dir.path().join("c.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let dead = dir.path().join("dead.jsonl");
    let run = |extra: &[&str]| {
        exfilwatch()
            .args(["replay", "-q", "--dead-letter"])
            .arg(&dead)
            .args(extra)
            .arg(&logs)
            .arg(&socket)
            .output()
            .unwrap()
    };
    let out = run(&["--fail-on-alert"]);
    // Exit 5 outranks 3: the script learns the input was incomplete.
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let alerts = alerts(&out);
    assert!(alerts.iter().any(|a| a["rule"] == "unfamiliar_origin_volume"), "the good file still alerts");
    let err = stderr(&out);
    assert!(err.contains("warning: the input is incomplete: 2 file(s)"), "{err}");
    assert!(err.contains("truncated_input 1, unreadable_input 1"), "{err}");
    let letters: Vec<serde_json::Value> =
        std::fs::read_to_string(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cut = letters.iter().find(|d| d["reason"] == "truncated_input").expect("the cut file dead-lettered");
    let cut_at = cut["location"].as_str().unwrap();
    assert!(cut_at.contains("b-cut.json.gz:"), "{cut_at}");
    assert!(!cut["detail"].as_str().unwrap().is_empty());
    assert!(letters.iter().any(|d| d["reason"] == "unreadable_input" && d["location"] == socket.to_str().unwrap()));
    // The records before the damage were used: the summary counts them, and the partial line.
    let out = exfilwatch().args(["replay", "--dead-letter"]).arg(&dead).arg(&logs).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    let line: u64 = cut_at.rsplit(':').next().unwrap().parse().unwrap();
    let err = stderr(&out);
    let total = 8 * 24 + 768 + (line - 1) + 1;
    assert!(err.contains(&format!("exfilwatch replay: {total} records")), "{total}: {err}");
    assert!(err.contains("invalid_json 1") && err.contains("truncated_input 1"), "{err}");
    // --strict stops at the damage.
    let out = run(&["--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// `theft_log` as the resource-specific table's CSV export (CDBDataPlaneRequests).
fn theft_csv() -> String {
    let mut s = String::from("TenantId,TimeGenerated,AccountName,_ResourceId,OperationName,ActivityId,StatusCode,ClientIpAddress,ResponseLength,KeyType,UserAgent,DatabaseName,CollectionName,Type\n");
    for line in theft_log().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = &r["properties"];
        s.push_str(&format!(
            "t,{},CONTOSO,{RID},{},{},{},{},{},{},{},{},{},CDBDataPlaneRequests\n",
            r["time"].as_str().unwrap(),
            r["operationName"].as_str().unwrap(),
            p["activityId"].as_str().unwrap(),
            p["statusCode"].as_str().unwrap(),
            p["clientIpAddress"].as_str().unwrap(),
            p["responseLength"].as_str().unwrap(),
            p["keyType"].as_str().unwrap(),
            p["userAgent"].as_str().unwrap(),
            p["databaseName"].as_str().unwrap(),
            p["collectionName"].as_str().unwrap(),
        ));
    }
    s
}

/// `theft_log` as the legacy AzureDiagnostics table's Parquet export (every column text).
fn theft_parquet(path: &Path) {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let names = [
        "TimeGenerated",
        "Resource",
        "ResourceId",
        "Category",
        "OperationName",
        "activityId_g",
        "statusCode_s",
        "clientIpAddress_s",
        "responseLength_s",
        "keyType_s",
        "userAgent_s",
        "databaseName_s",
        "collectionName_s",
    ];
    let mut cols: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for line in theft_log().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = &r["properties"];
        let v = [
            r["time"].as_str().unwrap(),
            "CONTOSO",
            RID,
            "DataPlaneRequests",
            r["operationName"].as_str().unwrap(),
            p["activityId"].as_str().unwrap(),
            p["statusCode"].as_str().unwrap(),
            p["clientIpAddress"].as_str().unwrap(),
            p["responseLength"].as_str().unwrap(),
            p["keyType"].as_str().unwrap(),
            p["userAgent"].as_str().unwrap(),
            p["databaseName"].as_str().unwrap(),
            p["collectionName"].as_str().unwrap(),
        ];
        for (c, x) in cols.iter_mut().zip(v) {
            c.push(x.to_string());
        }
    }
    let schema = std::sync::Arc::new(Schema::new(
        names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> =
        cols.into_iter().map(|c| std::sync::Arc::new(StringArray::from(c)) as ArrayRef).collect();
    let batch = arrow::array::RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn replay_and_train_read_log_analytics_exports_as_csv_and_parquet_alike() {
    let dir = tempfile::tempdir().unwrap();
    let json = write(dir.path(), "theft.jsonl", &theft_log());
    let csv = write(dir.path(), "theft.csv", &theft_csv());
    let pq = dir.path().join("theft-export");
    theft_parquet(&pq);
    let run = |p: &Path| exfilwatch().args(["replay", "-q"]).arg(p).output().unwrap();
    let want = alerts(&run(&json));
    assert!(!want.is_empty());
    for p in [&csv, &pq] {
        let out = run(p);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(alerts(&out), want, "{}", p.display());
    }
    // train reads them too: the same model from the CSV as from the JSON.
    for (name, p) in [("json", &json), ("csv", &csv)] {
        let st = exfilwatch().args(["train", "-q"]).arg(p).arg("--out").arg(dir.path().join(name)).status().unwrap();
        assert!(st.success());
    }
    let a = std::fs::read(dir.path().join("json/origins.parquet")).unwrap();
    let b = std::fs::read(dir.path().join("csv/origins.parquet")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_bad_row_of_a_table_export_is_named_and_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = theft_csv();
    text.push_str(&format!("t,2021-08-09T03:00:00Z,CONTOSO,{RID},Query,a,200,203.0.113.77,lots,PrimaryMasterKey,ua,shop,c,CDBDataPlaneRequests\n"));
    let csv = write(dir.path(), "bad.csv", &text);
    let out = exfilwatch().args(["replay", "-q"]).arg(&csv).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("row 961, column ResponseLength"), "{err}");
    // The rows before it were used: the theft is still found.
    assert!(!alerts(&out).is_empty());
}

#[test]
fn export_writes_one_parquet_row_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let json = write(dir.path(), "theft.jsonl", &(theft_log() + "not json\n"));
    let out_file = dir.path().join("events.parquet");
    let out = exfilwatch().arg("export").arg(&json).args(["--to", "parquet"]).arg(&out_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote 960 events"));
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&out_file).unwrap()).unwrap();
    use parquet::file::reader::FileReader;
    assert_eq!(reader.metadata().file_metadata().num_rows(), 8 * 24 + 768);
    // The CSV form gives the same file.
    let csv = write(dir.path(), "theft.csv", &theft_csv());
    let again = dir.path().join("again.parquet");
    assert!(exfilwatch().arg("export").arg(&csv).args(["--to", "parquet"]).arg(&again).status().unwrap().success());
    assert_eq!(std::fs::read(&out_file).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn investigate_without_its_binary_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("exfilwatch");
    std::fs::copy(env!("CARGO_BIN_EXE_exfilwatch"), &lone).unwrap();
    let out = Command::new(&lone).args(["investigate", "sample-logs"]).env("PATH", "").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exfilwatch-investigate")
            && err.contains("cargo build --release --locked -p exfilwatch-investigate"),
        "{err}"
    );
}
