//! Which JSON parser decodes our records fastest through serde? Run with
//! `cargo bench --features parser-comparison --bench parsers`; results in BENCHMARKS.md.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exfilwatch::decode::RawRecord;
const LEGACY: &str = include_str!("data/legacy-record.json");
fn b(c: &mut Criterion) {
    let mut g = c.benchmark_group("parser");
    g.throughput(Throughput::Bytes(LEGACY.len() as u64));
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            serde_json::from_slice::<RawRecord>(std::hint::black_box(LEGACY.as_bytes()))
                .map(|r| r.time.0.is_some())
                .unwrap_or(false)
        })
    });
    g.bench_function("sonic_rs", |b| {
        b.iter(|| {
            sonic_rs::from_slice::<RawRecord>(std::hint::black_box(LEGACY.as_bytes()))
                .map(|r| r.time.0.is_some())
                .unwrap_or(false)
        })
    });
    g.bench_function("simd_json", |b| {
        b.iter_batched_ref(
            || LEGACY.as_bytes().to_vec(),
            |v| simd_json::serde::from_slice::<RawRecord>(v).map(|r| r.time.0.is_some()).unwrap_or(false),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}
criterion_group!(benches, b);
criterion_main!(benches);
