//! Which JSON parser decodes our records fastest? Run with
//! `cargo bench --features parser-comparison --bench parsers`; results in BENCHMARKS.md.
//!
//! serde_json and sonic-rs deserialize into a borrowed serde struct holding the fields the
//! decoder needs (what the first decoder did); simd-json builds its tape and the shipped
//! `Decoder` walks it (what the decoder does now, normalization included).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exfilwatch::decode::{Decoded, Decoder};
use serde::Deserialize;
use std::borrow::Cow;

const LEGACY: &str = include_str!("data/legacy-record.json");

#[allow(dead_code)]
#[derive(Deserialize)]
struct Props<'a> {
    #[serde(borrow, rename = "clientIpAddress")]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "keyType")]
    key: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "statusCode")]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "responseLength")]
    response: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "requestLength")]
    request: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "userAgent")]
    ua: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "activityId")]
    activity: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "databaseName")]
    db: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "collectionName")]
    coll: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "aadPrincipalId")]
    aad: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "resourceTokenPermissionId")]
    perm: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "requestCharge")]
    charge: Option<Cow<'a, str>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Rec<'a> {
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "resourceId")]
    resource_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "operationName")]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    properties: Option<Props<'a>>,
}

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parser");
    g.throughput(Throughput::Bytes(LEGACY.len() as u64));
    let bytes = LEGACY.as_bytes();
    g.bench_function("serde_json_struct", |b| {
        b.iter(|| serde_json::from_slice::<Rec>(std::hint::black_box(bytes)).map(|r| r.time.is_some()).unwrap_or(false))
    });
    g.bench_function("sonic_rs_struct", |b| {
        b.iter(|| sonic_rs::from_slice::<Rec>(std::hint::black_box(bytes)).map(|r| r.time.is_some()).unwrap_or(false))
    });
    let mut bufs = simd_json::Buffers::new(4096);
    let mut input = Vec::with_capacity(4096);
    g.bench_function("simd_json_tape", |b| {
        b.iter(|| {
            input.clear();
            input.extend_from_slice(std::hint::black_box(bytes));
            simd_json::to_tape_with_buffers(&mut input, &mut bufs).map(|t| t.0.len()).unwrap_or(0)
        })
    });
    let mut decoder = Decoder::new();
    g.bench_function("exfilwatch_decoder_simd_json", |b| {
        b.iter(|| {
            let mut n = 0;
            decoder.decode(std::hint::black_box(bytes), |d| {
                if let Decoded::Event(e) = d {
                    n += e.response_bytes
                }
            });
            n
        })
    });
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
