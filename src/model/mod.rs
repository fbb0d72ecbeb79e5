//! Models: a detector's learned baselines, trained from archived logs, as a directory of
//! Parquet tables and a `manifest.json`.
//!
//! ```text
//! models/NAME/
//!   manifest.json        format version, event-time range, record counts, the [detect]
//!                        config used, and the size and SHA-256 of every table
//!   keys.parquet         one row per key: first/last seen, typical volume, peak model, marks
//!   origins.parquet      one row per (key, origin): first/last seen, bytes, requests
//!   volume_days.parquet  one row per key and finished day with reads: peak, total, hours
//!   accounts.parquet     one row per account: event-time progress (learning period, sweeps)
//!   windows.parquet      the minutes of the keys' sliding sums still inside their window
//!   symbols.parquet      the detector's symbol table (evidence refers to it by number)
//! ```
//!
//! `exfilwatch train` (`replay::train`) is a replay whose alerts are counted and dropped, followed by
//! [`Detector::export_model`]; loading is [`Detector::from_model`] over the tables. The state
//! round-trips exactly, so `replay --model` over the time after a model's range gives the
//! alerts one replay over the whole range gives there (`tests/model.rs`).
//!
//! **Architecture invariant:** a model is loaded whole or not at all. Every file's size and
//! SHA-256 are checked against the manifest before any is decoded, every table is decoded and
//! the rows checked for consistency before a detector exists; a model of a newer or unknown
//! format version is refused by its manifest alone. Writing is atomic: the tables go to a
//! temporary directory beside the target, fsynced, which then replaces the target.

mod tables;

use crate::config::DetectConfig;
use crate::detect::{Detector, LearnedState, LearnedStateError};
use crate::telemetry::Stats;
use crate::time::{format_rfc3339, Nanos, DAY};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use tables::FILES;

/// The format this build writes and the only one it reads. Bump it on any change to the
/// tables' columns or meaning.
pub const FORMAT_VERSION: u32 = 2;
/// `format` in the manifest.
pub const FORMAT_NAME: &str = "exfilwatch-model";
pub const MANIFEST: &str = "manifest.json";
/// A manifest larger than this is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write model {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} is not an exfilwatch model: {reason}", dir.display())]
    NotAModel { dir: PathBuf, reason: String },
    #[error(
        "model {}: format version {found} is newer than this exfilwatch supports ({FORMAT_VERSION}); \
         upgrade exfilwatch or train the model again with this version",
        dir.display()
    )]
    TooNew { dir: PathBuf, found: u64 },
    #[error(
        "model {}: format version {found} is not supported (this exfilwatch reads version {FORMAT_VERSION}); \
         train the model again",
        dir.display()
    )]
    Unsupported { dir: PathBuf, found: u64 },
    #[error("model {}: manifest.json is not valid: {reason}", dir.display())]
    Manifest { dir: PathBuf, reason: String },
    #[error(
        "model {}: {file} is truncated or was changed: {found} bytes, the manifest says {expected}; \
         the model is refused",
        dir.display()
    )]
    Size { dir: PathBuf, file: String, expected: u64, found: u64 },
    #[error("model {}: {file} is corrupted (its SHA-256 differs from the manifest's); the model is refused", dir.display())]
    Checksum { dir: PathBuf, file: String },
    #[error("model {}: {file}: {reason}", dir.display())]
    Table { dir: PathBuf, file: String, reason: String },
    #[error("model {}: {source}", dir.display())]
    State { dir: PathBuf, source: LearnedStateError },
    #[error("{} exists and is not a model: refusing to replace it", dir.display())]
    WouldReplace { dir: PathBuf },
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    pub format_version: u32,
    /// `exfilwatch <version>` that wrote it.
    pub created_by: String,
    pub event_time: EventTimeRange,
    pub counts: Counts,
    /// The `[detect]` configuration the baselines were learned with.
    pub config: DetectConfig,
    /// Every table, in [`FILES`] order.
    pub files: Vec<FileEntry>,
}

/// The event time the model covers: the `--since`/`--until` bounds the training was given,
/// and the first and last event time the baselines saw (RFC 3339).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeRange {
    pub since: Option<String>,
    pub until: Option<String>,
    pub first: Option<String>,
    pub last: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Records read (every category, malformed ones included).
    pub records: u64,
    /// Requests the detector saw (in range; failed ones included).
    pub requests: u64,
    pub malformed: u64,
    pub outside_since_until: u64,
    /// Alerts raised while training (not written anywhere).
    pub alerts: u64,
    pub accounts: u64,
    pub keys: u64,
    pub origins: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A loaded model: its manifest and the learned state, checked and whole.
#[derive(Clone, Debug)]
pub struct Model {
    pub manifest: Manifest,
    pub state: LearnedState,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What `train` read, for the manifest.
#[derive(Clone, Debug, Default)]
pub struct TrainInfo {
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
    pub stats: Stats,
}

/// Writes `state` as a model directory at `dir`, atomically: a directory that already holds
/// a model is replaced, any other existing path is refused.
pub fn write(dir: &Path, state: &LearnedState, info: &TrainInfo) -> Result<Manifest, ModelError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Write { path, source }
    };
    if dir.exists() && !dir.join(MANIFEST).is_file() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            return Err(ModelError::WouldReplace { dir: dir.to_path_buf() });
        }
    }
    let tables = tables::encode(state).map_err(|(file, reason)| ModelError::Table {
        dir: dir.to_path_buf(),
        file: file.to_string(),
        reason,
    })?;
    let s = &info.stats;
    let first = state.accounts.iter().map(|a| a.first_seen).min();
    let last = state.accounts.iter().map(|a| a.max_time).max();
    let manifest = Manifest {
        format: FORMAT_NAME.to_string(),
        format_version: FORMAT_VERSION,
        created_by: format!("exfilwatch {}", env!("CARGO_PKG_VERSION")),
        event_time: EventTimeRange {
            since: info.since.map(format_rfc3339),
            until: info.until.map(format_rfc3339),
            first: first.map(format_rfc3339),
            last: last.map(format_rfc3339),
        },
        counts: Counts {
            records: s.records_total(),
            requests: s.detector.events,
            malformed: s.malformed_total(),
            outside_since_until: s.out_of_range,
            alerts: s.alerts.values().sum(),
            accounts: state.accounts.len() as u64,
            keys: state.keys.len() as u64,
            origins: state.origins.len() as u64,
        },
        config: state.config.clone(),
        files: tables
            .iter()
            .map(|(name, bytes, rows)| FileEntry {
                name: name.to_string(),
                rows: *rows,
                bytes: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            })
            .collect(),
    };
    let mut manifest_text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| ModelError::Manifest { dir: dir.to_path_buf(), reason: e.to_string() })?;
    manifest_text.push('\n');

    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::secure::create_private_dir_all(&parent).map_err(werr(&parent))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    crate::secure::create_private_dir(&tmp).map_err(werr(&tmp))?;
    let put = |file: &str, bytes: &[u8]| -> Result<(), ModelError> {
        let p = tmp.join(file);
        let mut f = crate::secure::create_private(&p).map_err(werr(&p))?;
        f.write_all(bytes).map_err(werr(&p))?;
        f.sync_all().map_err(werr(&p))
    };
    let result = (|| {
        for (file, bytes, _) in &tables {
            put(file, bytes)?;
        }
        put(MANIFEST, manifest_text.as_bytes())?;
        std::fs::File::open(&tmp).and_then(|d| d.sync_all()).map_err(werr(&tmp))?;
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(werr(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(werr(dir))?;
        std::fs::File::open(&parent).and_then(|d| d.sync_all()).map_err(werr(&parent))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if old.exists() && !dir.exists() {
            let _ = std::fs::rename(&old, dir);
        }
    }
    result?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(manifest)
}

/// Reads and checks a model directory: manifest and format version, every file's size and
/// checksum, every table. Nothing is returned unless all of it is sound.
pub fn load(dir: &Path) -> Result<Model, ModelError> {
    let manifest = read_manifest(dir)?;
    // Every file checked before any is decoded.
    let mut contents = Vec::with_capacity(FILES.len());
    for entry in &manifest.files {
        let path = dir.join(&entry.name);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Read { path: path.clone(), source })?;
        if bytes.len() as u64 != entry.bytes {
            return Err(ModelError::Size {
                dir: dir.to_path_buf(),
                file: entry.name.clone(),
                expected: entry.bytes,
                found: bytes.len() as u64,
            });
        }
        if sha256_hex(&bytes) != entry.sha256 {
            return Err(ModelError::Checksum { dir: dir.to_path_buf(), file: entry.name.clone() });
        }
        contents.push(bytes);
    }
    decode_tables(dir, manifest, contents)
}

/// The fuzz target's entry point (`fuzz/fuzz_targets/model.rs`): [`load`] after the file
/// checks, as if the files had passed them (a model written by a faulty writer, or whose
/// manifest was rewritten with its files): the manifest's text and the tables' bytes in
/// [`FILES`] order.
#[doc(hidden)]
pub fn load_unchecked(manifest: &[u8], contents: Vec<Vec<u8>>) -> Result<Model, ModelError> {
    let dir = Path::new("<fuzz>");
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| ModelError::Manifest { dir: dir.into(), reason: e.to_string() })?;
    if manifest.files.len() != FILES.len() || contents.len() != FILES.len() {
        return Err(ModelError::Manifest { dir: dir.into(), reason: "not one entry per table".into() });
    }
    decode_tables(dir, manifest, contents)
}

/// Decodes the tables of a model whose files were checked (`contents` in [`FILES`] order).
fn decode_tables(dir: &Path, manifest: Manifest, contents: Vec<Vec<u8>>) -> Result<Model, ModelError> {
    let table = |i: usize, bytes: Vec<u8>| {
        let file = FILES[i];
        let terr = |reason: String| ModelError::Table { dir: dir.to_path_buf(), file: file.to_string(), reason };
        let batches = tables::read_batches(bytes).map_err(terr)?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows as u64 != manifest.files[i].rows {
            return Err(terr(format!("{rows} rows, the manifest says {}", manifest.files[i].rows)));
        }
        Ok((batches, terr))
    };
    // Table by table, each file's bytes and batches dropped once its rows are out.
    let mut it = contents.into_iter();
    let mut next = |i: usize| table(i, it.next().unwrap_or_default());
    let symbols = {
        let (b, e) = next(0)?;
        tables::decode_symbols(&b).map_err(e)?
    };
    let accounts = {
        let (b, e) = next(1)?;
        tables::decode_accounts(&b).map_err(e)?
    };
    let keys = {
        let (b, e) = next(2)?;
        tables::decode_keys(&b).map_err(e)?
    };
    let origins = {
        let (b, e) = next(3)?;
        tables::decode_origins(&b).map_err(e)?
    };
    let volume_days = {
        let (b, e) = next(4)?;
        tables::decode_volume_days(&b).map_err(e)?
    };
    let windows = {
        let (b, e) = next(5)?;
        tables::decode_windows(&b).map_err(e)?
    };
    let verdicts = {
        let (b, e) = next(6)?;
        tables::decode_verdicts(&b).map_err(e)?
    };
    let state = LearnedState {
        config: manifest.config.clone(),
        symbols,
        accounts,
        keys,
        origins,
        volume_days,
        windows,
        verdicts,
    };
    Ok(Model { manifest, state })
}

fn read_manifest(dir: &Path) -> Result<Manifest, ModelError> {
    let path = dir.join(MANIFEST);
    let merr = |reason: String| ModelError::Manifest { dir: dir.to_path_buf(), reason };
    if !dir.exists() {
        return Err(ModelError::NotAModel { dir: dir.to_path_buf(), reason: "it does not exist".into() });
    }
    if !dir.is_dir() {
        return Err(ModelError::NotAModel { dir: dir.to_path_buf(), reason: "not a directory".into() });
    }
    match std::fs::metadata(&path) {
        Err(_) => return Err(ModelError::NotAModel { dir: dir.to_path_buf(), reason: format!("no {MANIFEST}") }),
        Ok(m) if m.len() > MAX_MANIFEST_BYTES => return Err(merr(format!("larger than {MAX_MANIFEST_BYTES} bytes"))),
        Ok(_) => {}
    }
    let text = std::fs::read(&path).map_err(|source| ModelError::Read { path: path.clone(), source })?;
    // The version first, from a loose reading: a newer format may have changed the rest.
    let loose: serde_json::Value = serde_json::from_slice(&text).map_err(|e| merr(e.to_string()))?;
    if loose.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(ModelError::NotAModel {
            dir: dir.to_path_buf(),
            reason: format!("{MANIFEST} has no \"format\": \"{FORMAT_NAME}\""),
        });
    }
    let version =
        loose.get("format_version").and_then(|v| v.as_u64()).ok_or_else(|| merr("no format_version".into()))?;
    if version > FORMAT_VERSION as u64 {
        return Err(ModelError::TooNew { dir: dir.to_path_buf(), found: version });
    }
    if version != FORMAT_VERSION as u64 {
        return Err(ModelError::Unsupported { dir: dir.to_path_buf(), found: version });
    }
    let manifest: Manifest = serde_json::from_value(loose).map_err(|e| merr(e.to_string()))?;
    let names: Vec<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    if names != FILES {
        return Err(merr(format!("it lists the files {names:?}, expected {FILES:?}")));
    }
    Ok(manifest)
}

/// Loads a model into a detector ready to continue where the model ends: the entry point for
/// `replay --model` and `run --model`. `cfg` is the `[detect]` configuration to run with
/// (`None`: the model's own); its origin granularity and prefix lengths must be the model's.
pub fn load_detector(dir: &Path, cfg: Option<&DetectConfig>) -> Result<(Detector, Manifest), ModelError> {
    let model = load(dir)?;
    let cfg = cfg.cloned().unwrap_or_else(|| model.manifest.config.clone());
    let detector = Detector::from_model(model.state, cfg)
        .map_err(|source| ModelError::State { dir: dir.to_path_buf(), source })?;
    Ok((detector, model.manifest))
}

/// One key of a model, for `exfilwatch model inspect`: its familiar origins and typical volume.
#[derive(Clone, Debug, Serialize)]
pub struct KeySummary {
    pub account: String,
    pub credential: String,
    pub first_seen: String,
    pub last_seen: String,
    /// Days between first and last seen.
    pub days_observed: f64,
    pub typical_hourly_bytes: u64,
    pub typical_peak_bytes: u64,
    /// The bytes in `volume_window` at which `volume_anomaly` fires; `None` before enough
    /// history.
    pub volume_threshold_bytes: Option<u64>,
    pub days_with_reads: u32,
    pub familiar_origins: u64,
    /// Every origin, the most bytes first.
    pub origins: Vec<OriginSummary>,
    /// The finished days with reads, oldest first.
    pub daily: Vec<DaySummaryOut>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OriginSummary {
    pub origin: String,
    /// Familiar at the end of the model's range (used for longer than `familiar_after`).
    pub familiar: bool,
    pub first_seen: String,
    pub last_seen: String,
    pub bytes: u64,
    pub requests: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct DaySummaryOut {
    pub day: String,
    pub peak_bytes: u64,
    pub total_bytes: u64,
    pub active_hours: u8,
}

impl Model {
    /// The keys matching the filters (exact account and credential names), sorted.
    pub fn key_summaries(&self, account: Option<&str>, credential: Option<&str>) -> Vec<KeySummary> {
        let st = &self.state;
        let familiar_after = st.config.familiar_after.0;
        let mut out = Vec::new();
        for k in &st.keys {
            if account.is_some_and(|a| a != k.account) || credential.is_some_and(|c| c != k.credential) {
                continue;
            }
            let now = st.accounts.iter().find(|a| a.account == k.account).map_or(k.last_seen, |a| a.max_time);
            let mine = |a: &str, c: &str| a == k.account && c == k.credential;
            let mut origins: Vec<OriginSummary> = st
                .origins
                .iter()
                .filter(|o| mine(&o.account, &o.credential))
                .map(|o| OriginSummary {
                    origin: o.origin.clone(),
                    familiar: now >= o.first_seen.saturating_add(familiar_after),
                    first_seen: format_rfc3339(o.first_seen),
                    last_seen: format_rfc3339(o.last_seen),
                    bytes: o.bytes,
                    requests: o.requests,
                })
                .collect();
            origins.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.origin.cmp(&b.origin)));
            let daily = st
                .volume_days
                .iter()
                .filter(|d| mine(&d.account, &d.credential))
                .map(|d| DaySummaryOut {
                    day: format_rfc3339(i64::from(d.day.day).saturating_mul(DAY))
                        .get(..10)
                        .unwrap_or_default()
                        .to_string(),
                    peak_bytes: d.day.peak,
                    total_bytes: d.day.total,
                    active_hours: d.day.active_hours,
                })
                .collect();
            out.push(KeySummary {
                account: k.account.clone(),
                credential: k.credential.clone(),
                first_seen: format_rfc3339(k.first_seen),
                last_seen: format_rfc3339(k.last_seen),
                days_observed: ((k.last_seen - k.first_seen) as f64 / DAY as f64 * 10.0).round() / 10.0,
                typical_hourly_bytes: k.typical_hourly_bytes,
                typical_peak_bytes: k.typical_peak_bytes,
                volume_threshold_bytes: k.peak_model.map(|m| m.threshold),
                days_with_reads: k.days_with_reads,
                familiar_origins: origins.iter().filter(|o| o.familiar).count() as u64,
                origins,
                daily,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
