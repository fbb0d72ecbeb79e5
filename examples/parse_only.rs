//! The decoder alone over files: the throughput limit of `exfilwatch replay`, used by the
//! whole-pipeline benchmark (`make bench`). Reads and decodes every unit with the same source
//! and decoder as replay, and does nothing with the events but count them.
//!
//! With `--owned`, each unit's events are also copied into owned events, kept until the next
//! unit, as the service does for a fetched message waiting in the event-time alignment
//! (`pipeline::Fetched`): the cost of that copy.
//!
//! Usage: cargo run --release --example parse_only -- [--owned] FILE...

use exfilwatch::decode::{Decoded, Decoder};
use exfilwatch::sources::{collect_streams, UnitReader};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let owned = args.first().is_some_and(|a| a == "--owned");
    if owned {
        args.remove(0);
    }
    let paths: Vec<std::path::PathBuf> = args.into_iter().map(Into::into).collect();
    anyhow::ensure!(!paths.is_empty(), "usage: parse_only [--owned] FILE...");
    let mut kept = Vec::new();
    let started = Instant::now();
    let (mut events, mut other, mut bytes, mut response) = (0u64, 0u64, 0u64, 0u64);
    let mut decoder = Decoder::new();
    let (streams, faults) = collect_streams(&paths)?;
    anyhow::ensure!(faults.is_empty(), "cannot read the input: {faults:?}");
    for stream in streams {
        let mut r = UnitReader::new(stream, 512 << 20);
        while let Some(unit) = r.next_unit() {
            kept.clear();
            decoder.decode(unit.bytes, |d| match d {
                Decoded::Event(e) => {
                    events += 1;
                    response += e.response_bytes;
                    if owned {
                        kept.push(e.into_owned());
                    }
                }
                _ => other += 1,
            });
        }
        bytes += r.bytes_read;
        let faults = r.take_faults();
        anyhow::ensure!(faults.is_empty(), "the input is damaged: {faults:?}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"records\": {}, \"events\": {events}, \"input_bytes\": {bytes}, \"seconds\": {secs:.3}, \"records_per_s\": {:.0}, \"response_bytes\": {response}}}",
        events + other,
        (events + other) as f64 / secs
    );
    Ok(())
}
