//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`, see `fuzz/README.md`): each takes
//! arbitrary bytes through one of the library's readers of outside input, the way the program
//! does, and checks what must hold whatever the input (no panic is the fuzzer's own check).
//! Not part of the API.

use crate::alert::Alert;
use crate::config::{Config, DetectConfig};
use crate::decode::{parse_ip, raw_record_text, Category, Credential, CredentialKind, Decoded, Decoder, Event};
use crate::detect::Detector;
use crate::service::wire::{Batch, BatchBuilder};
use std::borrow::Cow;

/// The decoder over one unit (a line, a Kafka message, a whole document): every item it
/// yields is used as the drivers use it, decoding the same bytes again with the warm
/// decoder gives the same items, and so does simd-json's tape alone (the direct scanner,
/// `src/decode/scan.rs`, answers for most units).
pub fn decode(bytes: &[u8]) {
    let mut decoder = Decoder::new();
    let first = decode_items(&mut decoder, bytes);
    let again = decode_items(&mut decoder, bytes);
    assert_eq!(first, again, "a warm decoder decoded the same unit differently");
    let taped = decode_items(&mut Decoder::tape_only(), bytes);
    assert_eq!(first, taped, "the direct scanner and simd-json's tape decoded the unit differently");
    // The dead-letter text of the first few set-aside records (each call parses the unit).
    for index in first.iter().filter_map(|i| i.1).take(4) {
        let _ = raw_record_text(bytes, index);
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = parse_ip(s);
        let _ = crate::time::parse_timestamp(s);
        let _ = Category::from_name(s);
    }
}

/// (Debug form, index of a set-aside record) of every item of a unit.
type Items = Vec<(String, Option<Option<usize>>)>;

fn decode_items(decoder: &mut Decoder, bytes: &[u8]) -> Items {
    let mut items = Vec::new();
    let mut canonical = String::new();
    decoder.decode(bytes, |d| {
        let index = match &d {
            Decoded::Event(ev) => {
                ev.credential.write_canonical(&mut canonical);
                assert!(ev.status <= 999);
                assert!(ev.success || ev.response_bytes == 0, "a failed request moved bytes");
                None
            }
            Decoded::Malformed { index, .. } => Some(*index),
            Decoded::Skipped(c) => {
                assert!(!c.is_request());
                None
            }
        };
        let text = match d {
            Decoded::Event(ev) => format!("{:?}", ev.into_owned()),
            other => format!("{other:?}"),
        };
        items.push((text, index));
    });
    items
}

/// A few requests of the sample accounts around their time, from familiar and new origins.
fn probe_events() -> Vec<Event<'static>> {
    let mut out = Vec::new();
    let base = crate::time::parse_timestamp("2021-08-17T02:00:00Z").unwrap_or(0);
    for (i, account) in ["contoso", "fabrikam", "adatum", "northwind"].iter().enumerate() {
        for j in 0..6i64 {
            out.push(Event {
                time: base + (i as i64 * 7 + j) * 60_000_000_000,
                category: Category::DataPlaneRequests,
                account: Cow::Borrowed(account),
                credential: Credential { kind: CredentialKind::Key, id: Cow::Borrowed("primarymasterkey") },
                client_ip: Some(if j % 2 == 0 { [203, 0, 113, 77].into() } else { [10, 0, 0, 4].into() }),
                operation: Cow::Borrowed("ReadFeed"),
                status: 200,
                success: true,
                response_bytes: 1 << (20 + j),
                request_bytes: 100,
                request_charge: 1.0,
                user_agent: Cow::Borrowed("fuzz"),
                database: Cow::Borrowed("db"),
                collection: Cow::Borrowed("coll"),
                activity_id: Cow::Borrowed(""),
                resource_id: Cow::Borrowed(""),
            });
        }
    }
    out
}

/// Feeds `events` to `detector`, flushes it, and takes a snapshot that must restore.
fn exercise(mut detector: Detector, events: impl IntoIterator<Item = Event<'static>>) {
    let mut alerts: Vec<Alert> = Vec::new();
    for ev in events {
        detector.ingest(&ev, &mut alerts);
    }
    detector.release_held(i64::MAX, &mut alerts);
    detector.finish(&mut alerts);
    for a in &alerts {
        let _ = serde_json::to_string(a);
    }
    let snap = detector.snapshot().expect("a detector's snapshot serializes");
    Detector::restore(&snap).expect("a detector's own snapshot restores");
}

/// The internal topic's batches (`service::wire`): a batch that parses is written again by
/// the builder, reads back to the same events, and its events go through a detector.
pub fn wire(bytes: &[u8]) {
    let Ok(batch) = Batch::parse(bytes) else { return };
    let events: Vec<Event<'static>> = batch.events().map(Event::into_owned).collect();
    let mut builder = BatchBuilder::default();
    for ev in &events {
        builder.push(ev);
    }
    let again = builder.finish(&batch.source, batch.backlog);
    let reread = Batch::parse(&again).expect("a batch the builder wrote parses");
    assert_eq!(reread.source, batch.source);
    assert_eq!(reread.backlog, batch.backlog);
    let second: Vec<Event<'static>> = reread.events().map(Event::into_owned).collect();
    assert_eq!(second.len(), events.len());
    for (a, b) in events.iter().zip(&second) {
        // The wire keeps only the categories and credentials the detector knows: compare the
        // written form, which must be stable.
        assert_eq!(
            (a.time, &a.account, a.client_ip, a.status, a.success),
            (b.time, &b.account, b.client_ip, b.status, b.success)
        );
        assert_eq!((a.response_bytes, a.request_bytes), (b.response_bytes, b.request_bytes));
        assert!(a.request_charge.to_bits() == b.request_charge.to_bits() || a.request_charge.is_nan());
    }
    exercise(Detector::new(DetectConfig::default()), events.into_iter().take(64));
}

/// A checkpoint's body (`service::shard`, the detector's serialized state): refused or
/// restored, and a restored detector runs and snapshots.
pub fn checkpoint(bytes: &[u8]) {
    let Ok(detector) = crate::service::checkpoint_detector(bytes) else { return };
    exercise(detector, probe_events());
}

/// A model (`model::load` after the file checks): `manifest` and the seven tables; a model
/// that loads makes a detector or is refused by it, and that detector runs.
pub fn model(manifest: &[u8], tables: Vec<Vec<u8>>) {
    let Ok(model) = crate::model::load_unchecked(manifest, tables) else { return };
    let cfg = model.manifest.config.clone();
    if let Ok(detector) = Detector::from_model(model.state, cfg) {
        exercise(detector, probe_events());
    }
}

/// The configuration file: parsed and checked as `Config::load` does, then the run's options;
/// a configuration that passes makes a detector that runs.
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(cfg) = Config::from_toml(text, "fuzz.toml") else { return };
    let _ = cfg.options("fuzz.toml");
    let _ = cfg.kafka.client_settings();
    let _ = crate::detect::Allowlist::compile(&cfg.allow);
    exercise(Detector::new(cfg.detect.clone()), probe_events());
}
