//! The state store: crash-safe checkpoints of the service's state with the exact Kafka
//! offsets they cover, and a journal of delivered alert ids between checkpoints.
//!
//! A store is a local directory (or `file://DIR`), or an object store URL (`s3://BUCKET/PREFIX`,
//! `az://CONTAINER/PREFIX`, `gs://BUCKET/PREFIX`, through the `object_store` crate: an object
//! appears whole or not at all, so a put replaces temp file, fsync and rename there;
//! credentials and endpoints come from the environment, as the cloud SDKs read them, or from
//! `service.state_store_options`).
//!
//! Layout of a store:
//! - `checkpoint-<seq>.ckpt`: one header line of JSON ([`Header`]: format version, sequence
//!   number, offsets, the body's length and SHA-256), then the body (the state, JSON). Written
//!   to a temporary file, fsynced, renamed, and the directory fsynced: a reader sees a whole
//!   checkpoint or none. A checkpoint whose body does not match its header (truncated, altered)
//!   is refused and the next older one is used.
//! - `delivered-<seq>-<n>.json`: alert ids delivered after checkpoint `<seq>` was written,
//!   fsynced before their messages count as processed; a restart restores the newest valid
//!   checkpoint and these entries, so an alert re-raised by the re-read records is recognised.
//!
//! The two newest checkpoints are kept (the older one is the fallback), with the journal
//! entries they need.

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Version of the checkpoint format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("state store URL {0:?} is not supported: use a directory path, file://DIR, s3://, az:// or gs://")]
    Url(String),
    #[error("state store {location}: {source}")]
    Object { location: String, source: object_store::Error },
    #[error("state store {location}: {message}")]
    Blocking { location: String, message: String },
    #[error("checkpoint {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("checkpoint {name} has format version {found}; this build reads version {FORMAT_VERSION}")]
    Version { name: String, found: u32 },
    #[error("cannot serialize the state: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The first line of a checkpoint file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u32,
    pub seq: u64,
    /// Next offset to read, per `topic/partition`: every message before it is in the state.
    pub offsets: BTreeMap<String, i64>,
    pub body_len: u64,
    pub body_sha256: String,
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    pub header: Header,
    pub body: Vec<u8>,
    /// Delivered alert ids (with their trigger time) journaled after this checkpoint.
    pub delivered: BTreeMap<String, i64>,
    /// Checkpoints refused on the way (newer than this one), with why.
    pub refused: Vec<String>,
}

/// Where checkpoints and the delivered journal live.
pub struct StateStore {
    backend: Backend,
    /// Sequence number of the newest checkpoint written or restored (0: none).
    seq: u64,
    /// Journal entries written since that checkpoint.
    journal_n: u64,
}

enum Backend {
    /// A local directory: temp file, fsync, rename, directory fsync.
    Dir(PathBuf),
    /// An object store under a prefix; its client runs on a runtime of its own (the store's
    /// methods are blocking: they are called between messages, and rarely).
    Object {
        url: String,
        store: Box<dyn object_store::ObjectStore>,
        prefix: object_store::path::Path,
        /// Always Some until drop (shut down in the background: the store may be dropped
        /// inside another runtime, where a blocking shutdown is refused).
        rt: Option<tokio::runtime::Runtime>,
    },
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Object { rt, .. } = self {
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
    }
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateStore({}, seq {})", self.location(), self.seq)
    }
}

/// Retries of an object store request: a few, within 20 s (a checkpoint write blocks the
/// service loop; a store that stays away is an error the loop reports and retries later).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl StateStore {
    /// Opens (creating) the store at `location`: a directory path, `file://DIR`, or an object
    /// store URL (see the module doc).
    pub fn open(location: &str) -> Result<StateStore, StateError> {
        StateStore::open_with(location, &BTreeMap::new())
    }

    /// As [`StateStore::open`], with object store settings (`object_store`'s configuration
    /// keys, e.g. `aws_endpoint`, `aws_allow_http`, `azure_storage_account_name`) over the
    /// environment's.
    pub fn open_with(location: &str, options: &BTreeMap<String, String>) -> Result<StateStore, StateError> {
        let backend = match location.split_once("://") {
            None => Backend::Dir(PathBuf::from(location)),
            Some(("file", rest)) => Backend::Dir(PathBuf::from(rest)),
            Some((scheme @ ("s3" | "s3a" | "az" | "azure" | "abfs" | "abfss" | "gs"), _)) => {
                let url = location.to_string();
                let err = |source| StateError::Object { location: url.clone(), source };
                // Each cloud's builder: the environment, the URL, bounded retries, then the
                // given settings (an unknown key is an error naming it).
                macro_rules! build {
                    ($builder:ty) => {{
                        let b = <$builder>::from_env().with_url(location).with_retry(retry());
                        let b = options
                            .iter()
                            .try_fold(b, |b, (k, v)| k.parse().map(|k| b.with_config(k, v)).map_err(err))?;
                        Box::new(b.build().map_err(err)?)
                    }};
                }
                let store: Box<dyn object_store::ObjectStore> = match scheme {
                    "s3" | "s3a" => build!(object_store::aws::AmazonS3Builder),
                    "gs" => build!(object_store::gcp::GoogleCloudStorageBuilder),
                    _ => build!(object_store::azure::MicrosoftAzureBuilder),
                };
                // The URL's path after the bucket/container is the prefix.
                let path = location.split_once("://").map_or("", |(_, r)| r);
                let prefix = path.split_once('/').map_or("", |(_, p)| p).trim_matches('/');
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StateError::Blocking { location: url.clone(), message: e.to_string() })?;
                Backend::Object { url, store, prefix: object_store::path::Path::from(prefix), rt: Some(rt) }
            }
            Some(_) => return Err(StateError::Url(location.to_string())),
        };
        if let Backend::Dir(dir) = &backend {
            crate::secure::create_private_dir_all(dir).map_err(io(dir))?;
        }
        Ok(StateStore { backend, seq: 0, journal_n: 0 })
    }

    /// The store's location, for messages.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Dir(d) => d.display().to_string(),
            Backend::Object { url, .. } => url.clone(),
        }
    }

    /// Runs an object store call to completion on the store's own runtime, from a thread of
    /// its own (the caller may be inside another runtime, where blocking on one is refused).
    fn block<T: Send>(
        &self,
        f: impl for<'a> FnOnce(
                &'a dyn object_store::ObjectStore,
                &'a object_store::path::Path,
            ) -> futures::future::LocalBoxFuture<'a, Result<T, object_store::Error>>
            + Send,
    ) -> Result<T, StateError> {
        let Backend::Object { url, store, prefix, rt: Some(rt) } = &self.backend else {
            return Err(StateError::Url(self.location()));
        };
        let out = std::thread::scope(|s| s.spawn(|| rt.block_on(f(store.as_ref(), prefix))).join());
        match out {
            Ok(r) => r.map_err(|source| StateError::Object { location: url.clone(), source }),
            Err(_) => Err(StateError::Blocking { location: url.clone(), message: "the store's call panicked".into() }),
        }
    }

    fn names(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut names = Vec::new();
        match &self.backend {
            Backend::Dir(dir) => {
                for e in std::fs::read_dir(dir).map_err(io(dir))? {
                    let e = e.map_err(io(dir))?;
                    if let Some(n) = e.file_name().to_str() {
                        if n.starts_with(prefix) && !n.ends_with(".tmp") {
                            names.push(n.to_string());
                        }
                    }
                }
            }
            Backend::Object { .. } => {
                use futures::TryStreamExt;
                let metas = self.block(|store, root| Box::pin(store.list(Some(root)).try_collect::<Vec<_>>()))?;
                for m in metas {
                    if let Some(n) = m.location.filename().filter(|n| n.starts_with(prefix)) {
                        names.push(n.to_string());
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes `bytes` to `name` atomically and durably.
    fn put(&self, name: &str, parts: &[&[u8]]) -> Result<(), StateError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let path = dir.join(name);
                write_atomically(&path, parts).map_err(io(&path))
            }
            Backend::Object { .. } => {
                let payload: object_store::PutPayload =
                    parts.iter().map(|p| bytes::Bytes::copy_from_slice(p)).collect();
                self.block(|store, root| {
                    let path = root.clone().join(name);
                    Box::pin(async move { store.put(&path, payload).await.map(|_| ()) })
                })
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StateError> {
        match &self.backend {
            Backend::Dir(dir) => {
                let path = dir.join(name);
                std::fs::read(&path).map_err(io(&path))
            }
            Backend::Object { .. } => self.block(|store, root| {
                let path = root.clone().join(name);
                Box::pin(async move { Ok(store.get(&path).await?.bytes().await?.to_vec()) })
            }),
        }
    }

    /// Best effort: an entry left behind is only disk space (it is never read again).
    fn remove(&self, name: &str) {
        match &self.backend {
            Backend::Dir(dir) => {
                let _ = std::fs::remove_file(dir.join(name));
            }
            Backend::Object { .. } => {
                let _ = self.block(|store, root| {
                    let path = root.clone().join(name);
                    Box::pin(async move { store.delete(&path).await })
                });
            }
        }
    }

    /// Writes the next checkpoint; returns its size in bytes. Keeps the two newest.
    pub fn write_checkpoint(&mut self, offsets: BTreeMap<String, i64>, body: &[u8]) -> Result<u64, StateError> {
        let seq = self.seq + 1;
        let header = Header {
            format_version: FORMAT_VERSION,
            seq,
            offsets,
            body_len: body.len() as u64,
            body_sha256: sha256_hex(body),
        };
        let mut head = serde_json::to_vec(&header)?;
        head.push(b'\n');
        self.put(&format!("checkpoint-{seq:012}.ckpt"), &[&head, body])?;
        self.seq = seq;
        self.journal_n = 0;
        // Keep checkpoints seq-1 and seq, and the journal entries written after seq-1.
        for n in self.names("checkpoint-")? {
            if parse_seq(&n, "checkpoint-").is_some_and(|s| s + 1 < seq) {
                self.remove(&n);
            }
        }
        for n in self.names("delivered-")? {
            if parse_seq(&n, "delivered-").is_some_and(|s| s + 1 < seq) {
                self.remove(&n);
            }
        }
        Ok((head.len() + body.len()) as u64)
    }

    /// Journals alert ids (with trigger times) delivered since the last checkpoint, durably.
    pub fn journal_delivered(&mut self, ids: &[(String, i64)]) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.journal_n += 1;
        let name = format!("delivered-{:012}-{:06}.json", self.seq, self.journal_n);
        self.put(&name, &[&serde_json::to_vec(ids)?])
    }

    /// The newest valid checkpoint and the journal after it; None for an empty store.
    pub fn load_newest(&mut self) -> Result<Option<Loaded>, StateError> {
        let mut refused = Vec::new();
        let mut names = self.names("checkpoint-")?;
        names.reverse();
        for name in names {
            match self.read_checkpoint(&name) {
                Ok((header, body)) => {
                    let mut delivered = BTreeMap::new();
                    let mut journal_n = 0;
                    for j in self.names("delivered-")? {
                        let Some(s) = parse_seq(&j, "delivered-") else { continue };
                        if s < header.seq {
                            continue;
                        }
                        let bytes = self.read(&j)?;
                        let ids: Vec<(String, i64)> = serde_json::from_slice(&bytes).map_err(|e| {
                            StateError::Invalid { name: j.clone(), message: format!("journal entry: {e}") }
                        })?;
                        delivered.extend(ids);
                        if s == header.seq {
                            journal_n += 1;
                        }
                    }
                    // Continue numbering after what exists (a fallback keeps newer entries).
                    self.seq = self
                        .names("checkpoint-")?
                        .iter()
                        .filter_map(|n| parse_seq(n, "checkpoint-"))
                        .max()
                        .unwrap_or(header.seq)
                        .max(header.seq);
                    self.journal_n = if self.seq == header.seq { journal_n } else { 0 };
                    return Ok(Some(Loaded { header, body, delivered, refused }));
                }
                Err(e @ StateError::Version { .. }) => return Err(e),
                Err(e) => refused.push(e.to_string()),
            }
        }
        if refused.is_empty() {
            Ok(None)
        } else {
            Err(StateError::Invalid { name: self.location(), message: refused.join("; ") })
        }
    }

    fn read_checkpoint(&self, name: &str) -> Result<(Header, Vec<u8>), StateError> {
        let bytes = self.read(name)?;
        let invalid = |m: &str| StateError::Invalid { name: name.to_string(), message: m.to_string() };
        let nl = memchr::memchr(b'\n', &bytes).ok_or_else(|| invalid("no header line (truncated?)"))?;
        let header: Header =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| invalid(&format!("header is not valid: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(StateError::Version { name: name.to_string(), found: header.format_version });
        }
        let body = &bytes[nl + 1..];
        if body.len() as u64 != header.body_len {
            return Err(invalid(&format!(
                "body is {} bytes, header says {} (truncated?)",
                body.len(),
                header.body_len
            )));
        }
        if sha256_hex(body) != header.body_sha256 {
            return Err(invalid("body does not match its SHA-256 (corrupted)"));
        }
        Ok((header, body.to_vec()))
    }
}

fn parse_seq(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.get(..12)?.parse().ok()
}

/// Writes `parts` to `path` atomically and durably: a temporary file beside it, fsynced, renamed
/// over `path`, then the directory fsynced so that the rename survives a crash. A reader sees
/// the old content or the new, never a part. The file is 0600 (a checkpoint holds accounts,
/// credentials and origins).
pub fn write_atomically(path: &std::path::Path, parts: &[&[u8]]) -> std::io::Result<()> {
    write_atomically_with(path, parts, false)
}

/// As [`write_atomically`], the file readable by all (0644 less the umask): replay's
/// `--metrics-textfile`, which node_exporter (another user) reads and which names no account,
/// credential or address.
pub fn write_atomically_readable(path: &std::path::Path, parts: &[&[u8]]) -> std::io::Result<()> {
    write_atomically_with(path, parts, true)
}

fn write_atomically_with(path: &std::path::Path, parts: &[&[u8]], readable: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // `<name>.tmp`: the store's listing skips it, and a test watches for it.
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = if readable { std::fs::File::create(&tmp)? } else { crate::secure::create_private(&tmp)? };
    for p in parts {
        f.write_all(p)?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(n: i64) -> BTreeMap<String, i64> {
        BTreeMap::from([("logs/0".to_string(), n)])
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.prom");
        write_atomically(&path, &[b"old ", b"content"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old content");
        write_atomically(&path, &[b"new"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec!["metrics.prom".to_string()]);
        assert!(write_atomically(&dir.path().join("missing/x"), &[b"x"]).is_err());
    }

    #[test]
    fn newest_valid_checkpoint_with_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path().to_str().unwrap()).unwrap();
        assert!(s.load_newest().unwrap().is_none());
        s.write_checkpoint(offsets(10), b"one").unwrap();
        s.journal_delivered(&[("a".into(), 1)]).unwrap();
        s.write_checkpoint(offsets(20), b"two").unwrap();
        s.journal_delivered(&[("b".into(), 2)]).unwrap();
        s.write_checkpoint(offsets(30), b"three").unwrap();
        s.journal_delivered(&[("c".into(), 3)]).unwrap();

        let mut r = StateStore::open(&format!("file://{}", dir.path().display())).unwrap();
        let l = r.load_newest().unwrap().unwrap();
        assert_eq!((l.header.seq, l.body.as_slice()), (3, &b"three"[..]));
        assert_eq!(l.header.offsets, offsets(30));
        assert_eq!(l.delivered, BTreeMap::from([("c".to_string(), 3)]));
        // Only the two newest checkpoints remain.
        assert_eq!(r.names("checkpoint-").unwrap().len(), 2);
    }

    #[test]
    fn a_corrupted_or_truncated_checkpoint_falls_back_to_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path().to_str().unwrap()).unwrap();
        s.write_checkpoint(offsets(10), b"older state").unwrap();
        s.journal_delivered(&[("x".into(), 1)]).unwrap();
        s.write_checkpoint(offsets(20), b"newer state").unwrap();
        let newest = dir.path().join("checkpoint-000000000002.ckpt");
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&newest, &bytes).unwrap();
        let l = StateStore::open(dir.path().to_str().unwrap()).unwrap().load_newest().unwrap().unwrap();
        assert_eq!(l.body, b"older state");
        assert_eq!(l.header.offsets, offsets(10));
        assert_eq!(l.delivered, BTreeMap::from([("x".to_string(), 1)]), "the older checkpoint's journal");
        assert!(l.refused[0].contains("SHA-256"), "{:?}", l.refused);

        std::fs::write(&newest, &bytes[..bytes.len() - 4]).unwrap();
        let l = StateStore::open(dir.path().to_str().unwrap()).unwrap().load_newest().unwrap().unwrap();
        assert!(l.refused[0].contains("truncated"), "{:?}", l.refused);
    }

    #[test]
    fn a_newer_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path().to_str().unwrap()).unwrap();
        s.write_checkpoint(offsets(10), b"x").unwrap();
        let p = dir.path().join("checkpoint-000000000001.ckpt");
        let text = std::fs::read_to_string(&p).unwrap().replace("\"format_version\":2", "\"format_version\":9");
        std::fs::write(&p, text).unwrap();
        let e = StateStore::open(dir.path().to_str().unwrap()).unwrap().load_newest().unwrap_err();
        assert!(e.to_string().contains("format version 9"), "{e}");
    }

    #[test]
    fn other_urls_are_refused() {
        assert!(matches!(StateStore::open("ftp://host/x"), Err(StateError::Url(_))));
        assert!(matches!(StateStore::open("redis://host/x"), Err(StateError::Url(_))));
    }

    #[test]
    fn an_unknown_object_store_option_is_refused() {
        let opts = BTreeMap::from([("aws_no_such_thing".to_string(), "1".to_string())]);
        let e = StateStore::open_with("s3://bucket/prefix", &opts).unwrap_err();
        assert!(e.to_string().contains("aws_no_such_thing"), "{e}");
    }
}
