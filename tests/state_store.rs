//! The state store on a real S3-compatible object store: moto's S3 server on loopback, started
//! by `scripts/with-s3.sh` (which `make test` uses; the endpoint comes in EXFILWATCH_TEST_S3,
//! the bucket `exfilwatch-test` exists). Checkpoints round-trip, the two newest are kept, a
//! corrupted one falls back to the previous; and the service checkpoints to it on shutdown
//! and restores from it on start, raising no alert twice.

#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/kafka_client.rs"]
mod kafka_client;
#[path = "support/sample.rs"]
mod sample;

use exfilwatch::state::StateStore;
use inproc::{file_alerts, Service, Setup, DEADLINE};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::BTreeMap;

const BUCKET: &str = "exfilwatch-test";

fn endpoint() -> String {
    std::env::var("EXFILWATCH_TEST_S3")
        .expect("these tests need an S3 endpoint: run them with `make test` (scripts/with-s3.sh starts one)")
}

/// object_store settings for the local endpoint (moto takes any key).
fn options() -> BTreeMap<String, String> {
    [
        ("aws_endpoint", endpoint()),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The bucket, through object_store directly (to look at and damage what the store wrote).
struct Bucket {
    store: object_store::aws::AmazonS3,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    fn new() -> Bucket {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(endpoint())
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap();
        Bucket { store, rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap() }
    }

    /// Object names under `prefix` that start with `name`.
    fn names(&self, prefix: &str, name: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let metas: Vec<_> = self.rt.block_on(self.store.list(Some(&Path::from(prefix))).try_collect()).unwrap();
        metas
            .iter()
            .filter_map(|m: &object_store::ObjectMeta| m.location.filename().map(str::to_string))
            .filter(|n| n.starts_with(name))
            .collect()
    }

    fn get(&self, path: &str) -> Vec<u8> {
        self.rt.block_on(async { self.store.get(&Path::from(path)).await?.bytes().await }).unwrap().to_vec()
    }

    fn put(&self, path: &str, bytes: Vec<u8>) {
        self.rt.block_on(self.store.put(&Path::from(path), PutPayload::from(bytes))).unwrap();
    }
}

fn offsets(n: i64) -> BTreeMap<String, i64> {
    BTreeMap::from([("logs/0".to_string(), n)])
}

#[test]
fn checkpoints_in_s3_round_trip_keep_two_and_fall_back_from_a_corrupted_one() {
    let prefix = sample::unique("ckpt");
    let url = format!("s3://{BUCKET}/{prefix}");
    let mut s = StateStore::open_with(&url, &options()).unwrap();
    assert!(s.load_newest().unwrap().is_none(), "a new prefix is an empty store");
    s.write_checkpoint(offsets(10), b"one").unwrap();
    s.write_checkpoint(offsets(20), b"two").unwrap();
    s.journal_delivered(&[("b".into(), 2)]).unwrap();
    s.write_checkpoint(offsets(30), b"three").unwrap();
    s.journal_delivered(&[("c".into(), 3)]).unwrap();

    let l = StateStore::open_with(&url, &options()).unwrap().load_newest().unwrap().unwrap();
    assert_eq!((l.header.seq, l.body.as_slice(), &l.header.offsets), (3, &b"three"[..], &offsets(30)));
    assert_eq!(l.delivered, BTreeMap::from([("c".to_string(), 3)]));
    let bucket = Bucket::new();
    assert_eq!(bucket.names(&prefix, "checkpoint-").len(), 2, "only the two newest checkpoints remain");

    // Corrupt the newest object in place: the previous checkpoint, with its journal, is used.
    let newest = format!("{prefix}/checkpoint-000000000003.ckpt");
    let mut bytes = bucket.get(&newest);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bucket.put(&newest, bytes);
    let l = StateStore::open_with(&url, &options()).unwrap().load_newest().unwrap().unwrap();
    assert_eq!((l.header.seq, l.body.as_slice()), (2, &b"two"[..]));
    assert_eq!(l.delivered, BTreeMap::from([("b".to_string(), 2), ("c".to_string(), 3)]));
    assert!(l.refused[0].contains("SHA-256"), "{:?}", l.refused);
}

/// Nothing listens on the endpoint: a few retries (within 20 s), then an error naming the store.
#[test]
fn an_unreachable_object_store_is_a_clear_error() {
    let mut o = options();
    o.insert("aws_endpoint".into(), "http://127.0.0.1:9".into());
    let mut s = StateStore::open_with(&format!("s3://{BUCKET}/x"), &o).unwrap();
    let e = s.write_checkpoint(offsets(1), b"x").unwrap_err().to_string();
    assert!(e.starts_with(&format!("state store s3://{BUCKET}/x:")), "{e}");
}

/// The service with its state in S3: half the sample, a graceful stop (checkpoint to S3), the
/// rest, a restart that restores from S3: every alert exactly once, as one replay.
#[test]
fn the_service_checkpoints_to_s3_and_restores_from_it() {
    let s = Setup::new();
    let prefix = sample::unique("svc");
    let mut cfg = s.config("");
    cfg.service.state_store = format!("s3://{BUCKET}/{prefix}");
    // The secret key from a file (the configuration refuses it among the plain options).
    let mut plain = options();
    let secret = plain.remove("aws_secret_access_key").unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("s3-secret-key");
    std::fs::write(&key_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    cfg.service.state_store_options = plain;
    cfg.service.state_store_secret_files =
        [("aws_secret_access_key".to_string(), key_file.display().to_string())].into_iter().collect();
    let half = s.msgs.len() * 9 / 10;
    s.produce(&s.msgs[..half]);
    let mut svc = Service::start(cfg.clone());
    sample::wait_for(DEADLINE, "the first part", || svc.messages() >= half as u64);
    svc.stop();
    assert!(!Bucket::new().names(&prefix, "checkpoint-").is_empty(), "a checkpoint in the bucket");

    s.produce(&s.msgs[half..]);
    // Another consumer group (it starts from the topic's beginning; on the mock cluster the
    // old member's leave is slow): the checkpoint's offsets, not the group's, say where to
    // resume, and the messages below them are skipped, not processed again.
    cfg.kafka.group_id = sample::unique("g");
    let mut svc = Service::start(cfg);
    sample::wait_for(DEADLINE, "the rest", || svc.messages() >= (s.msgs.len() - half) as u64);
    let stats = svc.stop();
    let got = file_alerts(&s.alerts_file());
    assert_eq!(got.len(), s.expected.len(), "no alert twice, none missing");
    assert_eq!(sample::by_id(&got), s.expected);
    assert!(stats.records_total() > 0);
}
