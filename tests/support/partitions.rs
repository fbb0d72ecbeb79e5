//! Which internal partitions a `--role detect` instance holds, read from its log (the
//! "Partition assigned." / "Partition revoked." lines, with `NO_COLOR=1` and `RUST_LOG=info`).
//! Shared by `tests/scale.rs` and `examples/kafka_bench.rs`.

use std::collections::BTreeSet;
use std::path::Path;

pub fn held(log: &Path) -> BTreeSet<i32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut held = BTreeSet::new();
    for line in text.lines() {
        let p = || line.split("partition=").nth(1)?.split_whitespace().next()?.parse::<i32>().ok();
        if line.contains("Partition assigned.") {
            held.extend(p());
        } else if line.contains("Partition revoked") {
            if let Some(p) = p() {
                held.remove(&p);
            }
        }
    }
    held
}
