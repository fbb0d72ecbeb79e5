//! Detector update cost per event (criterion). `make bench-criterion`.
//!
//! Steady state of a realistic mix: many keys, each with a handful of familiar origins, events
//! in time order; plus the cost of an event from a new origin (evidence, rule checks).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exfilwatch::config::DetectConfig;
use exfilwatch::decode::{Category, Credential, CredentialKind, Event};
use exfilwatch::detect::Detector;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

const T0: i64 = 1_627_776_000_000_000_000; // 2021-08-01T00:00:00Z

fn event(i: u64, keys: u64, origins: u64, fresh: bool) -> Event<'static> {
    let key = i % keys;
    let origin = if fresh { 1000 + i } else { (i / keys) % origins };
    Event {
        time: T0 + (i as i64) * 10_000_000, // 100 events per second
        category: Category::DataPlaneRequests,
        account: Cow::Owned(format!("acct{:05}", key / 2)),
        credential: Credential {
            kind: CredentialKind::Key,
            id: Cow::Borrowed(if key % 2 == 0 { "primarymasterkey" } else { "secondaryreadonlymasterkey" }),
        },
        client_ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + ((origin as u32) << 8) + (key as u32 % 200)))),
        operation: Cow::Borrowed("Query"),
        status: 200,
        success: true,
        response_bytes: 20_000,
        request_bytes: 0,
        request_charge: 3.0,
        user_agent: Cow::Borrowed("Microsoft.Azure.Documents.Client/2.14.0"),
        database: Cow::Borrowed("shop"),
        collection: Cow::Borrowed("orders"),
        activity_id: Cow::Borrowed("66a0c647-af38-4b8d-a92a-c48a805d6460"),
        resource_id: Cow::Borrowed(""),
    }
}

fn bench_detector(c: &mut Criterion) {
    let mut g = c.benchmark_group("detect");
    const BATCH: u64 = 10_000;
    g.throughput(Throughput::Elements(BATCH));
    // Warm a detector with 1000 keys x 8 origins over two days, then time batches of events.
    let keys = 1000;
    let warm: Vec<Event<'static>> = (0..2 * 86_400 * 100 / 10).map(|i| event(i * 10, keys, 8, false)).collect();
    let mut base = Detector::new(DetectConfig::default());
    let mut out = Vec::new();
    for e in &warm {
        base.ingest(e, &mut out);
    }
    let start = warm.len() as u64 * 10;
    let steady: Vec<Event<'static>> = (start..start + BATCH).map(|i| event(i, keys, 8, false)).collect();
    let fresh: Vec<Event<'static>> = (start..start + BATCH).map(|i| event(i, keys, 8, true)).collect();
    g.bench_function("familiar_origin_event", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |d| {
                let mut out = Vec::new();
                for e in &steady {
                    d.ingest(e, &mut out);
                }
                out.len()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("new_origin_event", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |d| {
                let mut out = Vec::new();
                for e in &fresh {
                    d.ingest(e, &mut out);
                }
                out.len()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_detector
}
criterion_main!(benches);
