//! Request helpers shared by the sample data set and the scenarios: the request charge and
//! duration of a response, instants spread over a span, an account's ARM resource path.

use super::rng::Rng;
use super::write::MIB;

/// Request units for a response of `bytes`, roughly what Cosmos charges (1 RU per KB read,
/// less per KB for large feeds).
pub(crate) fn ru_for(rng: &mut Rng, op: &str, bytes: u64) -> f64 {
    let kb = bytes as f64 / 1024.0;
    let base = match op {
        "Upsert" | "Create" | "Replace" | "insert" => 9.5 + rng.uniform(0.0, 6.0),
        "Read" => 1.0 + kb * 0.1,
        _ => 2.8 + kb * 0.095,
    };
    (base * rng.uniform(0.93, 1.07) * 100.0).round() / 100.0
}

pub(crate) fn duration_ms(rng: &mut Rng, bytes: u64) -> u64 {
    let mb = bytes as f64 / MIB as f64;
    (rng.uniform(2.0, 14.0) + mb * rng.uniform(45.0, 90.0)) as u64
}

/// Random instants within [start, start + span), sorted.
pub(crate) fn sorted_times(rng: &mut Rng, start: u64, span: u64, n: usize) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).map(|_| start + rng.next() % span).collect();
    v.sort_unstable();
    v
}

pub(crate) fn arm_path(sub: &str, rg: &str, account: &str) -> String {
    format!(
        "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/{}/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/{}",
        sub.to_uppercase(),
        rg.to_uppercase(),
        account.to_uppercase()
    )
}
