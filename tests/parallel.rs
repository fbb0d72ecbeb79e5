//! `replay --threads N` gives the output of `--threads 1`, byte for byte: the alerts file (same
//! alerts, same order, same ids), the dead-letter file and the summary's counts, with 1, 2, 3
//! and 8 threads, on the sample logs (the golden test's input), with verdicts and --since, on
//! a generated multi-account archive tree (many streams merged by event time), on a
//! generated file whose state passes a small `max_state_bytes` (keys evicted), and from a
//! trained model (split over the shards); `train` writes the same model files with every thread
//! count (it keeps one detector and decodes on the threads).

use std::path::{Path, PathBuf};
use std::process::Command;

const THREADS: [usize; 4] = [1, 2, 3, 8];

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-logs")
}

/// What one replay gave: the alerts file, the dead-letter file, the summary without its
/// first line (the time taken).
#[derive(Debug, PartialEq)]
struct Output {
    alerts: String,
    dead: String,
    summary: String,
    code: Option<i32>,
}

fn replay(dir: &Path, threads: usize, args: &[&std::ffi::OsStr]) -> Output {
    let alerts = dir.join(format!("alerts-{threads}.jsonl"));
    let dead = dir.join(format!("dead-{threads}.jsonl"));
    let o = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
        .arg("replay")
        .args(args)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("-o")
        .arg(&alerts)
        .arg("--dead-letter")
        .arg(&dead)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    // The counts; not the peak memory, which depends on the threads.
    let summary = stderr
        .lines()
        .skip_while(|l| !l.starts_with("exfilwatch replay:"))
        .skip(1)
        .filter(|l| !l.trim_start().starts_with("peak memory:"))
        .collect::<Vec<_>>()
        .join("\n");
    Output {
        alerts: std::fs::read_to_string(&alerts).unwrap_or_default(),
        dead: std::fs::read_to_string(&dead).unwrap_or_default(),
        summary,
        code: o.status.code(),
    }
}

/// Replays with every thread count; asserts they agree; returns the one-thread output.
fn same_for_every_thread_count(args: &[&std::ffi::OsStr]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let one = replay(dir.path(), 1, args);
    for n in &THREADS[1..] {
        let other = replay(dir.path(), *n, args);
        assert_eq!(other.code, one.code, "exit code with --threads {n}");
        assert!(other.alerts == one.alerts, "alerts differ with --threads {n}");
        assert!(other.dead == one.dead, "dead letters differ with --threads {n}");
        assert_eq!(other.summary, one.summary, "summary differs with --threads {n}");
    }
    one
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn sample_logs_give_the_same_output_with_every_thread_count() {
    let s = samples();
    let one = same_for_every_thread_count(&[s.as_os_str()]);
    // The golden alerts (the default thread count) are these.
    let golden =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sample-logs.alerts.jsonl"))
            .unwrap();
    assert_eq!(one.alerts, golden);
    assert!(one.alerts.contains("\"rule\":\"unfamiliar_origin_volume\""));
    assert!(one.dead.contains("invalid_json"), "{}", one.dead);
    assert!(one.summary.contains("malformed: invalid_json 2"), "{}", one.summary);
}

#[test]
fn verdicts_since_and_strict_give_the_same_output_with_every_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = samples();
    let all = same_for_every_thread_count(&[s.as_os_str()]);
    let alerts_file = dir.path().join("all.jsonl");
    std::fs::write(&alerts_file, &all.alerts).unwrap();
    // A benign verdict on the first origin alert, a malicious one on another.
    let ids: Vec<String> = all
        .alerts
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["rule"] == "unfamiliar_origin_volume" || a["rule"] == "new_origin")
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    assert!(!ids.is_empty());
    let verdicts = dir.path().join("verdicts.jsonl");
    for (id, kind) in ids.iter().zip(["--benign", "--malicious"]) {
        let o = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
            .args(["feedback", id, kind, "--note", "t", "--by", "ana", "--alerts"])
            .arg(&alerts_file)
            .arg("--verdicts")
            .arg(&verdicts)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let with = same_for_every_thread_count(&[s.as_os_str(), os("--verdicts"), verdicts.as_os_str()]);
    assert!(with.summary.contains("applied"), "{}", with.summary);
    assert_ne!(with.alerts, all.alerts);

    let since = same_for_every_thread_count(&[s.as_os_str(), os("--since"), os("2021-08-10T00:00:00Z")]);
    assert!(since.summary.contains("outside --since/--until"), "{}", since.summary);

    // --strict stops at the first malformed record: the alerts before it, and the exit code,
    // are those of one thread.
    let strict = same_for_every_thread_count(&[s.as_os_str(), os("--strict")]);
    assert_eq!(strict.code, Some(1));
}

fn gen_logs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gen-logs"))
}

#[test]
fn a_generated_multi_account_archive_gives_the_same_output_with_every_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("scenarios");
    let o = gen_logs().args(["scenarios", "--seed", "3", "--accounts", "12", "--out"]).arg(&logs).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let one = same_for_every_thread_count(&[logs.as_os_str()]);
    assert!(one.alerts.lines().count() > 3, "too few alerts to compare:\n{}", one.alerts);
}

#[test]
fn eviction_past_max_state_bytes_is_the_same_with_every_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("bench.jsonl");
    let o = gen_logs()
        .args(["bench", "--records", "60000", "--keys", "3000", "--origins-per-key", "6", "--thefts", "6", "--out"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[detect]\nmax_state_bytes = \"4MiB\"\n").unwrap();
    let one = same_for_every_thread_count(&[logs.as_os_str(), os("--config"), config.as_os_str()]);
    assert!(one.alerts.contains("\"rule\":\"unfamiliar_origin_volume\""), "{}", one.summary);
    let evicted: u64 = one
        .summary
        .split("keys evicted: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(evicted > 0, "no key evicted: {}", one.summary);
}

#[test]
fn train_writes_the_same_model_and_replay_from_it_the_same_output_with_every_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = samples();
    let model = |threads: usize| {
        let out = dir.path().join(format!("model-{threads}"));
        let o = Command::new(env!("CARGO_BIN_EXE_exfilwatch"))
            .args(["train", "-q", "--threads", &threads.to_string(), "--until", "2021-08-14T00:00:00Z"])
            .arg(&s)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let one = model(1);
    let mut files: Vec<_> = std::fs::read_dir(&one).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert!(files.len() > 3, "{files:?}");
    for n in &THREADS[1..] {
        let other = model(*n);
        for f in &files {
            assert!(
                std::fs::read(one.join(f)).unwrap() == std::fs::read(other.join(f)).unwrap(),
                "{f:?} differs with --threads {n}"
            );
        }
    }
    // The model's detector split over the shards: the same alerts with every thread count.
    let from = same_for_every_thread_count(&[
        s.as_os_str(),
        os("--model"),
        one.as_os_str(),
        os("--since"),
        os("2021-08-14T00:00:00Z"),
    ]);
    assert!(from.alerts.contains("\"rule\":\"unfamiliar_origin_volume\""), "{}", from.summary);
}

#[test]
fn strict_delivers_the_alerts_of_every_record_before_the_damage() {
    // A file cut after `n` records, then a damaged line: `--strict` stops there, having
    // delivered what every record before the damage raised, in order (a prefix of what the
    // whole file raises). The cuts that matter are just after a record that raised an alert,
    // when that record may still wait in one thread's run or a detect thread's batch: for the
    // first alerts, the cut is found by halving (the smallest that delivers the alert), and at
    // every cut tried one thread and two deliver the same.
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("bench.jsonl");
    let o = gen_logs()
        .args(["bench", "--records", "40000", "--keys", "300", "--origins-per-key", "4", "--thefts", "8", "--out"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&logs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let whole = replay(dir.path(), 1, &[logs.as_os_str(), os("-q")]);
    assert_eq!(whole.code, Some(0), "{}", whole.summary);
    let cut = dir.path().join("cut.jsonl");
    // The alerts `--strict` delivers on the first `n` records and the damage; the same with
    // one thread and two.
    let strict = |n: usize| -> usize {
        std::fs::write(&cut, format!("{}\n{{\"time\": \"damaged\n", lines[..n].join("\n"))).unwrap();
        let one = replay(dir.path(), 1, &[cut.as_os_str(), os("-q"), os("--strict")]);
        let two = replay(dir.path(), 2, &[cut.as_os_str(), os("-q"), os("--strict")]);
        assert_eq!(one.code, Some(1), "{}", one.summary);
        assert!(one.alerts == two.alerts, "cut at {n}: one thread and two delivered different alerts");
        assert!(whole.alerts.starts_with(&one.alerts), "cut at {n}: not what the whole file raised first");
        one.alerts.lines().count()
    };
    let mut found = 0;
    let (mut lo, mut had) = (1, strict(1));
    for hi in (5_000..lines.len()).step_by(5_000) {
        let has = strict(hi);
        if has > had && found < 3 {
            // The smallest cut in (lo, hi] that delivers more than `lo` did.
            let (mut a, mut b) = (lo, hi);
            while b - a > 1 {
                let m = (a + b) / 2;
                if strict(m) > had {
                    b = m;
                } else {
                    a = m;
                }
            }
            found += 1;
        }
        (lo, had) = (hi, has);
    }
    assert!(found > 0, "no alert before the last cut to look at");
}
