//! exfilwatch: catches data theft from Azure Cosmos DB in its diagnostic logs.
//!
//! # Layout
//! The modules follow the data's path (see `ARCHITECTURE.md`):
//! - [`sources`]: where records come from: files and directories (plain, gzip, multi-line
//!   pre-2018 blobs) and stdin, framed into units of one JSON value.
//! - [`decode`]: a unit's bytes into normalized [`decode::Event`]s; skipped categories and
//!   malformed records are items too, never errors.
//! - [`detect`]: the sans-IO detector: events in, [`alert::Alert`]s out, state snapshot/restore;
//!   the allowlist (`[allow]`) and analysts' verdicts ([`detect::Verdict`]) are decided there.
//! - [`feedback`]: `exfilwatch feedback`: an alert of an alerts file into verdicts, appended to
//!   a verdicts file or produced to the verdicts topic; reading a verdicts file back.
//! - [`alert`]: the alert format and its stable ids.
//! - [`sinks`]: where alerts and what is set aside go: one [`sinks::AlertSink`] per destination
//!   (JSON Lines file or stdout, Kafka, webhook, Alertmanager) behind one fan-out.
//! - [`pipeline`]: the per-message bookkeeping every driver shares (decoded once, admitted
//!   through the clock guard, counted).
//! - [`replay`]: the driver of `exfilwatch replay` (files, merged by event time);
//!   [`service`]: the driver of `exfilwatch run` (Kafka, its roles, checkpoints).
//! - [`model`]: baselines trained from archives (`exfilwatch train`), as Parquet tables and a
//!   manifest; loaded into a detector by [`model::load_detector`] (`--model`).
//! - Beside them: [`config`] (the TOML file), [`telemetry`] (counters, metrics, once-per-kind
//!   logging), [`time`] and [`units`].

pub mod alert;
pub mod config;
pub mod decode;
pub mod detect;
pub mod enrich;
pub mod export;
pub mod feedback;
pub mod formats;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod pipeline;
pub mod replay;
pub mod secure;
pub mod service;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod telemetry;
pub mod time;
pub mod units;
