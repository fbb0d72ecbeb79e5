//! Streaming benchmark (`make bench-kafka`: runs it through scripts/with-tansu.sh).
//!
//! 1. Throughput: produces RECORDS legacy records (from a `gen-logs bench` file) in envelopes of
//!    20 (by default) to a 4-partition topic, then, in three alternating rounds, (a) drains it
//!    with a bare rdkafka consumer that only reads, with the service's fetch settings (the
//!    broker-side limit), (b) times `exfilwatch run` catching up from the beginning (until
//!    its committed offsets reach the end) decoding on the loop (`decode_threads = 1`), (c) the
//!    same decoding on two threads (`decode_threads = 2`) and (d) with `align_partitions =
//!    false` (no event-time alignment of the partitions, decode threads as configured by
//!    default), each with its peak resident memory. The
//!    envelopes are spread over the partitions as they come (8 rotating keys), each partition
//!    holding a slice of the whole time range: how an unkeyed Event Hub fills. Medians are
//!    compared. The broker is the real one
//!    (Tansu via scripts/with-tansu.sh), uncompressed (lz4 batches stalled its produce path
//!    here). librdkafka's mock cluster cannot serve this: it keeps only the last 5 MB of a
//!    partition; it took 206 s to take 200k records, then stalled a bare drain (tried here).
//! 2. Latency: `exfilwatch run` consumes a topic under a steady produced load (normal traffic
//!    plus one 1.2 GiB theft from a new IP every 0.5 s, each round one envelope, event time =
//!    the message's produce timestamp); each alert's latency is its record's timestamp on the
//!    alert topic (when exfilwatch emitted it) minus the produce timestamp of the record that
//!    triggered it. Reports p50 and p99, and the broker's produce acknowledgement time (a part
//!    of it: a record is readable only once the broker has it); once with `decode_threads = 1`
//!    and once with 2.
//!
//! 3. Scale-out (`kafka_bench scale BENCH_FILE [RECORDS]`): produces RECORDS records in envelopes
//!    of 20 to a 4-partition raw topic, times one `--role rekey` instance decoding them onto a
//!    4-partition internal topic, then, in three alternating rounds, times one and then two
//!    `--role detect` instances (a fresh group and state store each round) from their start
//!    until the group's committed offsets reach the end of the internal topic (they commit
//!    after each checkpoint, every second here). Medians are compared.
//!
//! Usage: kafka_bench BENCH_FILE [RECORDS [RECORDS_PER_ENVELOPE]]
//!        kafka_bench scale BENCH_FILE [RECORDS]

#[path = "../tests/support/partitions.rs"]
mod partitions;
use partitions::held;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Partitions of the throughput topic.
const BENCH_PARTITIONS: i32 = 4;
/// Partitions of the latency topic (the real broker).
const PARTITIONS: i32 = 4;
/// Throughput rounds (bare drain, then exfilwatch run, each round).
const ROUNDS: usize = 3;

static BROKER: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn broker() -> String {
    BROKER.lock().map(|b| b.clone()).unwrap_or_default()
}

fn set_broker(b: String) {
    if let Ok(mut g) = BROKER.lock() {
        *g = b;
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn unique(name: &str) -> String {
    format!("{name}-{}", now_ms())
}

async fn create_topic(name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", broker()).create()?;
    for r in admin
        .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    Ok(())
}

fn producer(compression: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("linger.ms", "5")
        .set("compression.type", compression)
        .create()?)
}

const KEYS: [&str; 8] = ["0", "1", "2", "3", "4", "5", "6", "7"];

async fn produce_all(p: &FutureProducer, topic: &str, msgs: &[Vec<u8>]) -> anyhow::Result<()> {
    for chunk in msgs.chunks(500) {
        let futs: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let record = FutureRecord::to(topic).key(KEYS[i % KEYS.len()]).payload(m);
                p.send(record, Timeout::After(Duration::from_secs(60)))
            })
            .collect();
        for f in futs {
            f.await.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

fn end_offsets(topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker()).create()?;
    let mut total = 0;
    for p in 0..partitions {
        let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        total += high;
    }
    Ok(total)
}

fn committed(topic: &str, group: &str, partitions: i32) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", broker()).set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum())
}

/// A bare drain: seconds from its first message to the last, seconds from the consumer's
/// creation (group join included, as `exfilwatch run`'s catch-up includes its start), bytes.
struct Bare {
    from_first: f64,
    from_start: f64,
    bytes: u64,
}

/// A consumer that only reads, with the fetch settings `exfilwatch run` uses.
fn bare_drain(topic: &str, messages: i64) -> anyhow::Result<Bare> {
    let created = Instant::now();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("bare"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    c.subscribe(&[topic])?;
    let (mut n, mut bytes) = (0i64, 0u64);
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < messages && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            n += 1;
            bytes += m.payload().map_or(0, |p| p.len() as u64);
        }
    }
    anyhow::ensure!(n == messages, "bare drain read {n} of {messages}");
    let from_first = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(Bare { from_first, from_start: created.elapsed().as_secs_f64(), bytes })
}

fn config(
    dir: &std::path::Path,
    topic: &str,
    group: &str,
    alerts: &str,
    extra: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let p = dir.join(format!("{group}.toml"));
    std::fs::write(
        &p,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group}\"\n\
             librdkafka_options = {{ \"auto.commit.interval.ms\" = \"100\" }}\n\
             [sinks]\nstdout = false\nkafka_topic = \"{alerts}\"\n[service]\nmetrics_addr = \"\"\n{}{extra}",
            broker(),
            if extra.contains("state_store") { "" } else { "state_store = \"\"\n" }
        ),
    )?;
    Ok(p)
}

fn exfilwatch() -> std::path::PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.parent().and_then(|d| d.parent()).map(|d| d.join("exfilwatch")).unwrap_or_default()
}

fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One `exfilwatch run` catch-up: seconds from its start until its committed offsets reach
/// the end; its steady rate in messages/s (from the first commit seen to the end: what is
/// left once the process started and joined the group); peak resident memory (MiB, VmHWM);
/// CPU seconds of the loop's thread (the main thread, which drives the service), of the
/// decode threads, and of the whole process.
struct Run {
    secs: f64,
    steady: f64,
    rss_mib: u64,
    loop_cpu: f64,
    decode_cpu: f64,
    cpu: f64,
}

/// CPU seconds (user + system) of a process's threads: (main thread, decode threads, all).
fn thread_cpu(pid: u32) -> (f64, f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let (mut main, mut decode, mut all) = (0.0, 0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return (0.0, 0.0, 0.0) };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else { continue };
        // pid (comm) state ... : fields after the closing parenthesis; utime, stime are 14, 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let secs = cpu / tick;
        all += secs;
        if t.file_name().to_string_lossy() == pid.to_string() {
            main += secs;
        } else if comm.starts_with("exfilwatch-dec") {
            decode += secs;
        }
    }
    (main, decode, all)
}

/// Times `exfilwatch run` (a fresh group; `extra` goes into `[service]`) from its start until
/// its committed offsets reach `total`.
async fn catch_up(dir: &std::path::Path, topic: &str, total: i64, extra: &str) -> anyhow::Result<Run> {
    let (group, alerts) = (unique("bench-g"), unique("bench-alerts"));
    create_topic(&alerts, 1).await?;
    let cfg = config(dir, topic, &group, &alerts, extra)?;
    let t = Instant::now();
    let mut child = Command::new(exfilwatch()).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).spawn()?;
    let mut first: Option<(f64, i64)> = None;
    loop {
        let done = committed(topic, &group, BENCH_PARTITIONS)?;
        if done >= total {
            break;
        }
        if done > 0 && first.is_none() {
            first = Some((t.elapsed().as_secs_f64(), done));
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(900), "exfilwatch run did not catch up in 15 min");
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let (loop_cpu, decode_cpu, cpu) = thread_cpu(child.id());
    stop(&mut child);
    let steady = first.map_or(0.0, |(at, done)| (total - done) as f64 / (secs - at));
    Ok(Run { secs, steady, rss_mib: hwm_kib / 1024, loop_cpu, decode_cpu, cpu })
}

fn read_envelopes(file: &str, records: usize, envelope: usize) -> anyhow::Result<(usize, Vec<Vec<u8>>)> {
    let mut lines = Vec::with_capacity(records);
    for l in std::io::BufReader::new(std::fs::File::open(file)?).lines().take(records) {
        lines.push(l?);
    }
    let msgs = lines.chunks(envelope).map(|c| format!("{{\"records\": [{}]}}", c.join(",")).into_bytes()).collect();
    Ok((lines.len(), msgs))
}

/// Runs `instances` processes of `exfilwatch run --role ROLE` until `group` has committed
/// `total` messages of `topic`. Returns the seconds from their start, and (detect role) the
/// steady rate in messages/s: from the first commit seen once every instance holds
/// partitions and together all of them, to the end.
fn time_until_committed(
    cfg: &std::path::Path,
    role: &str,
    instances: usize,
    topic: &str,
    group: &str,
    total: i64,
) -> anyhow::Result<(f64, Option<f64>)> {
    let t = Instant::now();
    let mut children = Vec::new();
    let mut logs = Vec::new();
    for i in 0..instances {
        let log = cfg.with_extension(format!("{role}-{i}.log"));
        children.push(
            Command::new(exfilwatch())
                .args(["run", "--role", role, "--config"])
                .arg(cfg)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()?,
        );
        logs.push(log);
    }
    let mut steady: Option<(Instant, i64)> = None;
    loop {
        let done = committed(topic, group, BENCH_PARTITIONS)?;
        if done >= total {
            break;
        }
        if steady.is_none() && role == "detect" {
            let sets: Vec<_> = logs.iter().map(|l| held(l)).collect();
            let all: std::collections::BTreeSet<i32> = sets.iter().flatten().copied().collect();
            if all.len() == BENCH_PARTITIONS as usize && sets.iter().all(|s| !s.is_empty()) {
                steady = Some((Instant::now(), done));
            }
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(900), "{role} did not catch up in 15 min");
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t.elapsed().as_secs_f64();
    for c in &mut children {
        stop(c);
    }
    let rate = steady.map(|(at, done)| (total - done) as f64 / at.elapsed().as_secs_f64());
    Ok((secs, rate))
}

async fn scale(file: &str, records: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let (n, msgs) = read_envelopes(file, records, 20)?;
    let (raw, internal) = (unique("scale-raw"), unique("scale-events"));
    create_topic(&raw, BENCH_PARTITIONS).await?;
    create_topic(&internal, BENCH_PARTITIONS).await?;
    let t = Instant::now();
    produce_all(&producer("none")?, &raw, &msgs).await?;
    eprintln!("produced {n} records in {} messages in {:.1} s", msgs.len(), t.elapsed().as_secs_f64());
    let group = unique("scale-g");
    let extra = |state: &str| {
        format!("checkpoint_interval = \"1s\"\ninternal_topic = \"{internal}\"\nstate_store = \"{state}\"\n")
    };
    let cfg = config(dir, &raw, &group, "", &extra(""))?;
    let (rekey_s, _) = time_until_committed(&cfg, "rekey", 1, &raw, &group, end_offsets(&raw, BENCH_PARTITIONS)?)?;
    let total = end_offsets(&internal, BENCH_PARTITIONS)?;
    let per_batch = n as f64 / total as f64;
    eprintln!("rekey: {n} records in {rekey_s:.2} s -> {total} batches on the internal topic");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for instances in [1, 2] {
            let g = unique("scale-d");
            let state = dir.join(&g);
            let cfg = config(dir, &raw, &g, "", &extra(&state.display().to_string()))?;
            let (s, rate) = time_until_committed(&cfg, "detect", instances, &internal, &format!("{g}-detect"), total)?;
            let rate = rate.unwrap_or(0.0) * per_batch;
            eprintln!("round {}: {instances} detect instance(s) {s:.2} s, steady {rate:.0} records/s", round + 1);
            times[instances - 1].push(s);
            rates[instances - 1].push(rate);
        }
    }
    println!(
        "scale-out: {n} records over {BENCH_PARTITIONS} raw partitions -> {total} batches on a \
         {BENCH_PARTITIONS}-partition internal topic, {ROUNDS} rounds"
    );
    println!("| stage | catch-up rounds (s) | median s | records/s | steady records/s (rounds) | median |");
    println!("|---|---|---:|---:|---|---:|");
    println!("| rekey, 1 instance | {rekey_s:.2} | {rekey_s:.2} | {:.0} | | |", n as f64 / rekey_s);
    let fmt = |v: &[f64], p: usize| v.iter().map(|x| format!("{x:.p$}")).collect::<Vec<_>>().join(", ");
    let mut medians = Vec::new();
    for i in 0..2 {
        let (tr, rr) = (fmt(&times[i], 2), fmt(&rates[i], 0));
        let (m, r) = (percentile(&mut times[i], 0.5), percentile(&mut rates[i], 0.5));
        medians.push((m, r));
        println!("| detect, {} instance(s) | {tr} | {m:.2} | {:.0} | {rr} | {r:.0} |", i + 1, n as f64 / m);
    }
    println!(
        "two detect instances / one (medians): catch-up rate {:.2}, steady rate {:.2}",
        medians[0].0 / medians[1].0,
        medians[1].1 / medians[0].1
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("scale") {
        set_broker(std::env::var("EXFILWATCH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into()));
        let file = args.get(2).ok_or_else(|| anyhow::anyhow!("usage: kafka_bench scale BENCH_FILE [RECORDS]"))?;
        let records: usize = args.get(3).map_or(Ok(300_000), |s| s.parse())?;
        return scale(file, records, tempfile::tempdir()?.path()).await;
    }
    let file = args.get(1).ok_or_else(|| anyhow::anyhow!("usage: kafka_bench BENCH_FILE [RECORDS]"))?;
    let records: usize = args.get(2).map_or(Ok(1_000_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;

    // ---- throughput ----
    let envelope: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let (n_records, msgs) = read_envelopes(file, records, envelope)?;
    set_broker(std::env::var("EXFILWATCH_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into()));
    let topic = unique("bench-logs");
    create_topic(&topic, BENCH_PARTITIONS).await?;
    let p = producer("none")?;
    let t = Instant::now();
    produce_all(&p, &topic, &msgs).await?;
    eprintln!("produced {n_records} records in {} messages in {:.1} s", msgs.len(), t.elapsed().as_secs_f64());
    let total = end_offsets(&topic, BENCH_PARTITIONS)?;
    // Rounds alternate exfilwatch run decoding on the loop, on two decode threads, without the
    // event-time alignment, and the bare drain, on the same topic (the broker's caches warm for
    // all alike); medians are reported, with each run's peak resident memory.
    let variants = [
        ("exfilwatch run, decode_threads = 1", "decode_threads = 1\n"),
        ("exfilwatch run, decode_threads = 2", "decode_threads = 2\n"),
        ("exfilwatch run, align_partitions = false", "align_partitions = false\n"),
    ];
    let (mut bare, mut bare_start, mut bytes) = (Vec::new(), Vec::new(), 0);
    let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        let mut line = format!("round {}:", round + 1);
        for ((label, extra), done) in variants.iter().zip(runs.iter_mut()) {
            let r = catch_up(dir.path(), &topic, total, extra).await?;
            line.push_str(&format!(
                " {label} {:.2} s, steady {:.0} msg/s ({} MiB, CPU loop {:.2} s, decode threads {:.2} s, all {:.2} s);",
                r.secs, r.steady, r.rss_mib, r.loop_cpu, r.decode_cpu, r.cpu
            ));
            done.push(r);
        }
        let b = bare_drain(&topic, total)?;
        bytes = b.bytes;
        eprintln!(
            "{line} bare drain {:.2} s from its first message, {:.2} s from its start",
            b.from_first, b.from_start
        );
        bare.push(b.from_first);
        bare_start.push(b.from_start);
    }
    let n = n_records as f64;
    let per_msg = n / total as f64;
    println!(
        "throughput: {} records ({} MB) in {} messages (envelopes of {envelope}) over {BENCH_PARTITIONS} partitions, {ROUNDS} rounds",
        n_records,
        bytes / 1_000_000,
        total
    );
    let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    println!(
        "| consumer | rounds (s) | median s | records/s | steady records/s (median) | CPU s: loop thread / decode threads / process (medians) | peak RSS MiB (median) |\n|---|---|---:|---:|---:|---:|---:|"
    );
    let (bare_rounds, bare_start_rounds) = (rounds(&bare), rounds(&bare_start));
    let (bare_s, bare_start_s) = (percentile(&mut bare, 0.5), percentile(&mut bare_start, 0.5));
    println!(
        "| bare rdkafka drain, from its first message | {bare_rounds} | {bare_s:.2} | {:.0} | {:.0} | | |",
        n / bare_s,
        n / bare_s
    );
    println!(
        "| bare rdkafka drain, from its start | {bare_start_rounds} | {bare_start_s:.2} | {:.0} | | | |",
        n / bare_start_s
    );
    let mut medians = Vec::new();
    for ((label, _), done) in variants.iter().zip(runs.iter()) {
        let col = |f: fn(&Run) -> f64| {
            let mut v: Vec<f64> = done.iter().map(f).collect();
            (rounds(&v), percentile(&mut v, 0.5))
        };
        let (r, m) = col(|r| r.secs);
        let (_, steady) = col(|r| r.steady);
        let (_, loop_cpu) = col(|r| r.loop_cpu);
        let (_, decode_cpu) = col(|r| r.decode_cpu);
        let (_, cpu) = col(|r| r.cpu);
        let (_, rss) = col(|r| r.rss_mib as f64);
        medians.push((m, steady * per_msg));
        println!(
            "| {label} (catch-up, incl. start) | {r} | {m:.2} | {:.0} | {:.0} | {loop_cpu:.2} / {decode_cpu:.2} / {cpu:.2} | {rss:.0} |",
            n / m,
            steady * per_msg
        );
    }
    for ((label, _), (m, steady)) in variants.iter().zip(&medians) {
        println!(
            "{label}: catch-up incl. start / bare drain from its start {:.2}; / bare drain from its first message {:.2}; steady / bare drain {:.2}",
            bare_start_s / m,
            bare_s / m,
            steady / (n / bare_s)
        );
    }
    println!(
        "decode_threads = 2 / decode_threads = 1 (medians): catch-up rate {:.2}, steady rate {:.2}",
        medians[0].0 / medians[1].0,
        medians[1].1 / medians[0].1
    );

    // ---- latency ----
    for threads in [1, 2] {
        latency(dir.path(), &format!("decode_threads = {threads}\n")).await?;
    }
    Ok(())
}

/// `exfilwatch run` (`service` goes into `[service]`) under a steady produced load: how long
/// from a theft's produce time to its alert on the alert topic (p50, p99, max).
async fn latency(dir: &std::path::Path, service: &str) -> anyhow::Result<()> {
    let p = producer("none")?;
    let (topic, alerts, group) = (unique("lat-logs"), unique("lat-alerts"), unique("lat-g"));
    create_topic(&topic, PARTITIONS).await?;
    create_topic(&alerts, 1).await?;
    let detect = format!("{service}[detect]\nlearning_period = \"0s\"\nvolume_anomaly = false\n");
    let cfg = config(dir, &topic, &group, &alerts, &detect)?;
    let mut child = Command::new(exfilwatch()).args(["run", "--config"]).arg(&cfg).stdout(Stdio::null()).spawn()?;
    let thefts = 60;
    let rid = "/SUBSCRIPTIONS/X/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS";
    let rec = |acct: usize, ip: &str, bytes: u64, t: i64| {
        let secs = t / 1000;
        let (d, s) = (secs / 86400, secs % 86400);
        // civil date from days (valid for 1970-2099)
        let z = d + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{{\"time\":\"{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z\",\"resourceId\":\"{rid}/LAT{acct}\",\"category\":\"DataPlaneRequests\",\"operationName\":\"ReadFeed\",\"properties\":{{\"statusCode\":\"200\",\"clientIpAddress\":\"{ip}\",\"responseLength\":\"{bytes}\",\"keyType\":\"PrimaryMasterKey\"}}}}",
            s / 3600, s / 60 % 60, s % 60, t % 1000
        )
    };
    let t = Instant::now();
    let mut acks = Vec::new();
    for i in 0..thefts {
        // Normal traffic on every account, then a theft on account i: 300 x 4 MiB within ~0.5 s.
        let mut batch = Vec::new();
        for a in 0..thefts {
            batch.push(rec(a, "10.0.0.5", 10_000, now_ms()));
        }
        for _ in 0..300 {
            batch.push(rec(i, "203.0.113.77", 4 << 20, now_ms()));
        }
        // One envelope per round, as a diagnostic export sends them: event time = produce
        // time (the record's timestamp is set when it is handed to the producer).
        let msg = format!("{{\"records\": [{}]}}", batch.join(",")).into_bytes();
        let sent = Instant::now();
        p.send(
            FutureRecord::to(&topic).key(KEYS[i % KEYS.len()]).payload(&msg).timestamp(now_ms()),
            Timeout::After(Duration::from_secs(60)),
        )
        .await
        .map_err(|(e, _)| e)?;
        acks.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("latency load produced in {:.1} s", t.elapsed().as_secs_f64());
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("lat-reader"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    c.subscribe(&[alerts.as_str()])?;
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while lat.len() < thefts && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let a: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            let trig = exfilwatch::time::parse_timestamp(a["trigger_event_time"].as_str().unwrap_or("")).unwrap_or(0)
                / 1_000_000;
            if let Some(ts) = m.timestamp().to_millis() {
                lat.push((ts - trig) as f64);
            }
        }
    }
    stop(&mut child);
    anyhow::ensure!(lat.len() == thefts, "got {} of {thefts} alerts", lat.len());
    println!(
        "latency ({}), produce-time event -> alert on the alert topic, {} alerts: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        service.trim(),
        lat.len(),
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        percentile(&mut lat, 1.0)
    );
    println!(
        "broker produce acknowledgement of those records (part of the above): p50 {:.0} ms, p99 {:.0} ms",
        percentile(&mut acks, 0.5),
        percentile(&mut acks, 0.99)
    );
    Ok(())
}
