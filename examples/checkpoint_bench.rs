//! Checkpoint figures (BENCHMARKS.md): feeds a detector with every record of a `gen-logs
//! bench` file (e.g. 100,000 keys x 20 origins), then writes its state to a state store as
//! `exfilwatch run` does (serialize, temp file, fsync, rename), and restores it (read, verify
//! the SHA-256, deserialize). Prints the state's size and each step's time; median of 3.
//!
//! Usage: cargo run --release --example checkpoint_bench -- FILE [STORE_DIR]

use exfilwatch::config::Config;
use exfilwatch::decode::{Decoded, Decoder};
use exfilwatch::detect::Detector;
use exfilwatch::sources::{collect_streams, UnitReader};
use exfilwatch::state::StateStore;
use std::collections::BTreeMap;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args.first().ok_or_else(|| anyhow::anyhow!("usage: checkpoint_bench FILE [STORE_DIR]"))?;
    let store_dir = args.get(1).cloned().unwrap_or_else(|| "bench-data/checkpoint-store".into());
    let cfg = Config::default();
    let mut detector = Detector::new(cfg.detect.clone());
    let mut decoder = Decoder::new();
    let mut alerts = Vec::new();
    for stream in collect_streams(&[file.into()])?.0 {
        let mut r = UnitReader::new(stream, 512 << 20);
        while let Some(unit) = r.next_unit() {
            decoder.decode(unit.bytes, |d| {
                if let Decoded::Event(e) = d {
                    detector.ingest(&e, &mut alerts);
                }
            });
        }
    }
    let s = detector.stats().clone();
    println!("state: {} keys, {} (key, origin) pairs", s.keys_tracked, s.origins_tracked);
    let _ = std::fs::remove_dir_all(&store_dir);
    let mut store = StateStore::open(&store_dir)?;
    let offsets = BTreeMap::from([("logs/0".to_string(), 1_000_000i64)]);
    let (mut ser, mut write, mut read, mut de) = (vec![], vec![], vec![], vec![]);
    let mut size = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let body = detector.snapshot()?;
        ser.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        size = store.write_checkpoint(offsets.clone(), &body)?;
        write.push(t.elapsed().as_secs_f64());
        drop(body);
        let t = Instant::now();
        let loaded = StateStore::open(&store_dir)?.load_newest()?.ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
        read.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let restored = Detector::restore(&loaded.body)?;
        de.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(restored.stats() == detector.stats(), "restored state differs");
    }
    println!(
        "checkpoint size: {:.1} MiB ({:.0} bytes per (key, origin) pair)",
        size as f64 / 1048576.0,
        size as f64 / s.origins_tracked.max(1) as f64
    );
    println!("write: serialize {:.2} s + store (temp file, fsync, rename) {:.2} s", median(ser), median(write));
    println!("restore: read + verify SHA-256 {:.2} s + deserialize {:.2} s", median(read), median(de));
    let _ = std::fs::remove_dir_all(&store_dir);
    Ok(())
}
