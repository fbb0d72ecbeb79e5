//! `gen-logs`: writes the synthetic Cosmos DB diagnostic logs that exfilwatch is tested,
//! demonstrated and benchmarked on. Standard library only, so it builds on its own:
//!
//! ```text
//! rustc -O --edition 2021 src/bin/gen-logs.rs -o gen-logs
//! gen-logs sample --out DIR
//! gen-logs bench --records N --keys K --origins-per-key O --out FILE [--thefts T]
//! gen-logs scenarios --seed N --out DIR [--accounts N]
//! ```
//!
//! `sample` (module `gen-logs/sample.rs`) writes the committed data set (`sample-logs/`): four
//! accounts in the four wire shapes the detector reads, with exactly one theft (contoso,
//! 2021-08-17 02:13 UTC) and deliberate noise (late records, malformed lines, other log
//! categories). `bench` (`gen-logs/bench.rs`) writes one large JSON Lines file of legacy
//! shape-A records in event-time order with `T` planted thefts. `scenarios`
//! (`gen-logs/scenarios.rs`) writes a labelled month and a half of traffic with thefts of every
//! kind for `make eval` (detection accuracy, BENCHMARKS.md).
//!
//! The three share `gen-logs/rng.rs` (the generator, GUIDs, resource ids), `gen-logs/timefmt.rs`
//! (100-ns ticks, civil dates, timestamp formats), `gen-logs/write.rs` (numbers and byte sizes
//! written by hand, files) and `gen-logs/request.rs` (request charge and duration, instants,
//! ARM paths). This file is the command line.
//!
//! Output is a pure function of the arguments: a fixed-seed splitmix64 generator, no clock,
//! no environment, no hash-map iteration. Exit codes: 0 ok, 1 I/O error, 2 usage.

use std::path::PathBuf;

#[path = "gen-logs/bench.rs"]
mod bench;
#[path = "gen-logs/request.rs"]
mod request;
#[path = "gen-logs/rng.rs"]
mod rng;
#[path = "gen-logs/sample.rs"]
mod sample;
#[path = "gen-logs/scenarios.rs"]
mod scenarios;
#[path = "gen-logs/timefmt.rs"]
mod timefmt;
#[path = "gen-logs/write.rs"]
mod write;

use bench::{run_bench, BenchCfg};
use sample::run_sample;

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

const USAGE: &str = "usage:
  gen-logs sample --out DIR
  gen-logs bench --records N --keys K --origins-per-key O --out FILE [--thefts T]
      defaults: --records 2000000 --keys 100000 --origins-per-key 20 --thefts 10
  gen-logs scenarios --seed N --out DIR [--accounts N]
      a labelled month of traffic with planted thefts (DIR/logs/*.jsonl, DIR/labels.json);
      defaults: --seed 1 --accounts 24";

enum Cmd {
    Sample(PathBuf),
    Bench(BenchCfg),
    Scenarios(scenarios::ScenCfg),
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let mode = args.first().ok_or("missing mode")?;
    let mut out: Option<PathBuf> = None;
    let mut scen = scenarios::ScenCfg { seed: 1, accounts: 24, out: PathBuf::new() };
    let mut cfg = BenchCfg { records: 2_000_000, keys: 100_000, origins: 20, thefts: 10, out: PathBuf::new() };
    let mut i = 1;
    while i < args.len() {
        let flag = args[i].as_str();
        let val = args.get(i + 1).ok_or_else(|| format!("{} needs a value", flag))?;
        let num = || val.replace('_', "").parse::<u64>().map_err(|_| format!("{}: not a number: {}", flag, val));
        match (mode.as_str(), flag) {
            (_, "--out") => out = Some(PathBuf::from(val)),
            ("bench", "--records") => cfg.records = num()?,
            ("bench", "--keys") => cfg.keys = num()?,
            ("bench", "--origins-per-key") => cfg.origins = num()?,
            ("bench", "--thefts") => cfg.thefts = num()?,
            ("scenarios", "--seed") => scen.seed = num()?,
            ("scenarios", "--accounts") => scen.accounts = num()? as usize,
            _ => return Err(format!("unknown option for {}: {}", mode, flag)),
        }
        i += 2;
    }
    let out = out.ok_or("--out is required")?;
    match mode.as_str() {
        "sample" => Ok(Cmd::Sample(out)),
        "bench" => {
            cfg.out = out;
            Ok(Cmd::Bench(cfg))
        }
        "scenarios" => {
            scen.out = out;
            Ok(Cmd::Scenarios(scen))
        }
        m => Err(format!("unknown mode: {}", m)),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", USAGE);
        return;
    }
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gen-logs: {}\n{}", e, USAGE);
            std::process::exit(2);
        }
    };
    let res = match cmd {
        Cmd::Sample(dir) => run_sample(&dir),
        Cmd::Bench(cfg) => run_bench(&cfg),
        Cmd::Scenarios(cfg) => scenarios::run_scenarios(&cfg),
    };
    if let Err(e) = res {
        eprintln!("gen-logs: error: {}", e);
        std::process::exit(1);
    }
}
