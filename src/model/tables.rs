//! A [`LearnedState`] as Arrow record batches and Parquet files, and back.
//!
//! One Parquet file per table, one row group, Snappy-compressed (a pure-Rust codec every
//! Parquet reader has; it halves the evidence columns). Column types an analyst can use directly: times are
//! `timestamp[ns, UTC]`, days `date32`, sizes `uint64`. Timestamps that mean "never" are
//! nulls. Evidence (bounded itemized counts that refer to the symbol table by number) is a
//! JSON string: it is the detector's internal bookkeeping for origins still new, not a
//! baseline.

use crate::detect::{
    AccountRow, AgentSeen, DayMask, DaySummary, Evidence, KeyRow, LearnedState, MarkRow, OriginRow, OriginWindow,
    PeakModel, VerdictKind, VerdictRow, VolumeDayRow, WindowKind, WindowRow,
};
use crate::time::{Nanos, MINUTE};
use arrow::array::{Array, ArrayRef, PrimitiveArray, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

/// The tables of a model, by file name, in the order they are written.
pub const FILES: [&str; 7] = [
    "symbols.parquet",
    "accounts.parquet",
    "keys.parquet",
    "origins.parquet",
    "volume_days.parquet",
    "windows.parquet",
    "verdicts.parquet",
];

/// What went wrong with one table; the caller adds the model and file.
pub type TableError = String;

// ---- writing ----

/// Columns of a batch being built.
#[derive(Default)]
struct Cols {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Cols {
    fn add(&mut self, name: &str, a: ArrayRef) {
        // Every column nullable: one schema for every model, whatever its data.
        self.fields.push(Field::new(name, a.data_type().clone(), true));
        self.arrays.push(a);
    }
    fn str<'a>(&mut self, name: &str, v: impl Iterator<Item = &'a str>) {
        self.add(name, Arc::new(StringArray::from_iter_values(v)));
    }
    fn opt_str(&mut self, name: &str, v: Vec<Option<String>>) {
        self.add(name, Arc::new(StringArray::from(v)));
    }
    fn ts(&mut self, name: &str, v: impl Iterator<Item = Option<Nanos>>) {
        self.add(name, Arc::new(TimestampNanosecondArray::from(v.collect::<Vec<_>>()).with_timezone("UTC")));
    }
    fn prim<T: ArrowPrimitiveType>(&mut self, name: &str, v: impl Iterator<Item = Option<T::Native>>) {
        self.add(name, Arc::new(v.collect::<PrimitiveArray<T>>()));
    }
    fn into_parquet(self) -> Result<(Vec<u8>, u64), TableError> {
        let rows = self.arrays.first().map_or(0, |a| a.len()) as u64;
        let schema = Arc::new(Schema::new(self.fields));
        let batch = RecordBatch::try_new(schema.clone(), self.arrays).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let props = WriterProperties::builder()
            .set_created_by("exfilwatch".into())
            .set_compression(Compression::SNAPPY)
            .build();
        let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
        w.write(&batch).map_err(|e| e.to_string())?;
        w.close().map_err(|e| e.to_string())?;
        Ok((buf, rows))
    }
}

use arrow::datatypes::{
    Date32Type as D32, Float64Type as F64, Int64Type as I64, UInt16Type as U16, UInt32Type as U32, UInt64Type as U64,
    UInt8Type as U8,
};

/// A table as a file: its name, Parquet bytes and row count.
pub type Encoded = (&'static str, Vec<u8>, u64);

/// Every table, in the order of [`FILES`]; an error names its file.
pub fn encode(st: &LearnedState) -> Result<Vec<Encoded>, (&'static str, TableError)> {
    let mut out = Vec::new();
    let mut put = |file: &'static str, cols: Result<Cols, TableError>| -> Result<(), (&'static str, TableError)> {
        let (bytes, rows) = cols.and_then(Cols::into_parquet).map_err(|e| (file, e))?;
        out.push((file, bytes, rows));
        Ok(())
    };

    let mut c = Cols::default();
    c.prim::<U32>("symbol", (0..st.symbols.len() as u32).map(Some));
    c.str("name", st.symbols.iter().map(String::as_str));
    put(FILES[0], Ok(c))?;

    let a = &st.accounts;
    let mut c = Cols::default();
    c.str("account", a.iter().map(|r| r.account.as_str()));
    c.ts("first_seen", a.iter().map(|r| Some(r.first_seen)));
    c.ts("last_seen", a.iter().map(|r| Some(r.last_seen)));
    c.ts("max_time", a.iter().map(|r| Some(r.max_time)));
    c.ts("released", a.iter().map(|r| r.released));
    c.ts("next_sweep", a.iter().map(|r| Some(r.next_sweep)));
    c.ts("evidence_created", a.iter().map(|r| r.evidence_created));
    let uo: Result<Vec<Option<String>>, TableError> =
        a.iter().map(|r| evidence_json(r.unfamiliar_origins.as_ref())).collect();
    c.opt_str("unfamiliar_origins_json", uo.map_err(|e| (FILES[1], e))?);
    c.opt_str("resource_id", a.iter().map(|r| r.resource_id.clone()).collect());
    put(FILES[1], Ok(c))?;

    put(FILES[2], keys(&st.keys))?;

    let o = &st.origins;
    let mut c = Cols::default();
    c.str("account", o.iter().map(|r| r.account.as_str()));
    c.str("credential", o.iter().map(|r| r.credential.as_str()));
    c.str("origin", o.iter().map(|r| r.origin.as_str()));
    c.ts("first_seen", o.iter().map(|r| Some(r.first_seen)));
    c.ts("last_seen", o.iter().map(|r| Some(r.last_seen)));
    c.prim::<U64>("bytes", o.iter().map(|r| Some(r.bytes)));
    c.prim::<U32>("requests", o.iter().map(|r| Some(r.requests)));
    c.prim::<U8>("alert_level", o.iter().map(|r| Some(r.mark_level)));
    c.prim::<U16>("alert_epoch", o.iter().map(|r| Some(r.mark_epoch)));
    c.ts("alerted_at", o.iter().map(|r| (r.mark_at != 0).then_some(r.mark_at)));
    let ev: Result<Vec<Option<String>>, TableError> = o.iter().map(|r| evidence_json(r.evidence.as_ref())).collect();
    put(
        FILES[3],
        ev.map(|ev| {
            c.opt_str("evidence_json", ev);
            c
        }),
    )?;

    let d = &st.volume_days;
    put(
        FILES[4],
        Ok::<_, TableError>({
            let mut c = Cols::default();
            c.str("account", d.iter().map(|r| r.account.as_str()));
            c.str("credential", d.iter().map(|r| r.credential.as_str()));
            c.prim::<D32>("day", d.iter().map(|r| Some(r.day.day)));
            c.prim::<U64>("peak_bytes", d.iter().map(|r| Some(r.day.peak)));
            c.prim::<U64>("total_bytes", d.iter().map(|r| Some(r.day.total)));
            c.prim::<U8>("active_hours", d.iter().map(|r| Some(r.day.active_hours)));
            c
        }),
    )?;

    let w = &st.windows;
    let minutes: Result<Vec<Nanos>, TableError> = w
        .iter()
        .map(|r| r.minute.checked_mul(MINUTE).ok_or_else(|| format!("minute {} out of range", r.minute)))
        .collect();
    put(
        FILES[5],
        minutes.map(|minutes| {
            let mut c = Cols::default();
            c.str("account", w.iter().map(|r| r.account.as_str()));
            c.str("credential", w.iter().map(|r| r.credential.as_str()));
            c.str("window", w.iter().map(|r| r.window.as_str()));
            c.ts("minute", minutes.into_iter().map(Some));
            c.prim::<U64>("bytes", w.iter().map(|r| Some(r.bytes)));
            c
        }),
    )?;

    let v = &st.verdicts;
    let mut c = Cols::default();
    c.str("account", v.iter().map(|r| r.account.as_str()));
    c.str("credential", v.iter().map(|r| r.credential.as_str()));
    c.str("origin", v.iter().map(|r| r.origin.as_str()));
    c.str("verdict", v.iter().map(|r| r.verdict.as_str()));
    c.ts("effective", v.iter().map(|r| Some(r.effective)));
    c.str("alert_id", v.iter().map(|r| r.alert_id.as_str()));
    c.str("note", v.iter().map(|r| r.note.as_str()));
    c.ts("alerted_at", v.iter().map(|r| r.alerted_at));
    c.prim::<U32>("alert_epoch", v.iter().map(|r| Some(r.epoch)));
    c.prim::<U64>("bytes_since", v.iter().map(|r| Some(r.bytes)));
    put(FILES[6], Ok(c))?;
    Ok(out)
}

pub fn decode_verdicts(batches: &[RecordBatch]) -> Result<Vec<VerdictRow>, TableError> {
    let mut out = Vec::new();
    for b in batches {
        let b = Batch(b);
        let (acc, cred, origin, verdict) =
            (b.str("account")?, b.str("credential")?, b.str("origin")?, b.str("verdict")?);
        let (effective, alert_id, note) = (b.ts("effective")?, b.str("alert_id")?, b.str("note")?);
        let (alerted_at, epoch, bytes) =
            (b.opt_ts("alerted_at")?, b.req::<U32>("alert_epoch")?, b.req::<U64>("bytes_since")?);
        for i in 0..acc.len() {
            let kind = VerdictKind::parse(&verdict[i]).ok_or_else(|| format!("unknown verdict {:?}", verdict[i]))?;
            out.push(VerdictRow {
                account: acc[i].clone(),
                credential: cred[i].clone(),
                origin: origin[i].clone(),
                verdict: kind,
                effective: effective[i],
                alert_id: alert_id[i].clone(),
                note: note[i].clone(),
                alerted_at: alerted_at[i],
                epoch: epoch[i],
                bytes: bytes[i],
            });
        }
    }
    Ok(out)
}

fn evidence_json<T: serde::Serialize>(e: Option<&T>) -> Result<Option<String>, TableError> {
    e.map(|e| serde_json::to_string(e).map_err(|e| e.to_string())).transpose()
}

fn keys(k: &[KeyRow]) -> Result<Cols, TableError> {
    let mut c = Cols::default();
    c.str("account", k.iter().map(|r| r.account.as_str()));
    c.str("credential", k.iter().map(|r| r.credential.as_str()));
    c.ts("first_seen", k.iter().map(|r| Some(r.first_seen)));
    c.ts("last_seen", k.iter().map(|r| Some(r.last_seen)));
    c.prim::<U64>("known_origins", k.iter().map(|r| Some(r.known_origins)));
    c.prim::<U64>("typical_hourly_bytes", k.iter().map(|r| Some(r.typical_hourly_bytes)));
    c.prim::<U64>("typical_peak_bytes", k.iter().map(|r| Some(r.typical_peak_bytes)));
    c.prim::<U32>("days_with_reads", k.iter().map(|r| Some(r.days_with_reads)));
    let m = |f: fn(&PeakModel) -> f64| k.iter().map(move |r| r.peak_model.as_ref().map(f));
    c.prim::<U64>("volume_threshold_bytes", k.iter().map(|r| r.peak_model.map(|m| m.threshold)));
    c.prim::<F64>("peak_mean_ln", m(|m| m.mean_ln));
    c.prim::<F64>("peak_scale_ln", m(|m| m.scale_ln));
    c.prim::<F64>("peak_dof", m(|m| m.dof));
    c.prim::<U64>("peak_max_bytes", k.iter().map(|r| r.peak_model.map(|m| m.max_peak)));
    c.prim::<U8>("peak_basis", k.iter().map(|r| r.peak_model.map(|m| m.basis.code())));
    c.prim::<D32>("today", k.iter().map(|r| r.today.map(|t| t.day)));
    c.prim::<U64>("today_peak_bytes", k.iter().map(|r| r.today.map(|t| t.peak)));
    c.prim::<U64>("today_total_bytes", k.iter().map(|r| r.today.map(|t| t.total)));
    c.prim::<U32>("today_hours", k.iter().map(|r| Some(r.hours_today)));
    for (prefix, get) in [
        ("aggregate_mark", (|r: &KeyRow| r.aggregate_mark) as fn(&KeyRow) -> Option<MarkRow>),
        ("volume_mark", |r: &KeyRow| r.volume_mark),
    ] {
        c.ts(&format!("{prefix}_at"), k.iter().map(|r| get(r).map(|m| m.at)));
        c.prim::<U8>(&format!("{prefix}_level"), k.iter().map(|r| get(r).map(|m| m.level)));
        c.prim::<U32>(&format!("{prefix}_epoch"), k.iter().map(|r| get(r).map(|m| m.epoch)));
        c.ts(&format!("{prefix}_since"), k.iter().map(|r| get(r).map(|m| m.since)));
    }
    c.prim::<I64>("aggregate_checked_minute", k.iter().map(|r| r.aggregate_checked_minute));
    let ev: Result<Vec<Option<String>>, TableError> =
        k.iter().map(|r| evidence_json(r.window_evidence.as_ref())).collect();
    c.opt_str("window_evidence_json", ev?);
    let vo: Result<Vec<Option<String>>, TableError> =
        k.iter().map(|r| evidence_json(r.volume_origins.as_ref())).collect();
    c.opt_str("volume_origins_json", vo?);
    let uo: Result<Vec<Option<String>>, TableError> =
        k.iter().map(|r| evidence_json(r.unfamiliar_origins.as_ref())).collect();
    c.opt_str("unfamiliar_origins_json", uo?);
    let ua: Result<Vec<Option<String>>, TableError> = k
        .iter()
        .map(|r| if r.user_agents.is_empty() { Ok(None) } else { evidence_json(Some(&r.user_agents)) })
        .collect();
    c.opt_str("user_agents_json", ua?);
    Ok(c)
}

// ---- reading ----

/// The batches of one Parquet file (already checked against its checksum).
///
/// The Arrow schema the writer embeds (an IPC message in the file's metadata) is not read: the
/// columns' types come from the Parquet schema, which says all the tables need, and a corrupted
/// embedded schema made arrow-ipc panic (`tests/regression.rs`). The parquet and arrow readers
/// may still panic on other corrupted input instead of returning an error: a panic is caught
/// and the file refused like any unreadable one.
pub fn read_batches(bytes: Vec<u8>) -> Result<Vec<RecordBatch>, TableError> {
    let read = move || {
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes::Bytes::from(bytes), options)
            .and_then(|b| b.build())
            .map_err(|e| format!("not a readable Parquet file: {e}"))?;
        reader.collect::<Result<Vec<_>, _>>().map_err(|e| format!("cannot decode: {e}"))
    };
    std::panic::catch_unwind(read).unwrap_or_else(|_| Err("not a readable Parquet file (the reader panicked)".into()))
}

/// Typed access to the columns of one batch, with errors that name the column.
struct Batch<'a>(&'a RecordBatch);

impl<'a> Batch<'a> {
    fn col<T: Array + 'static>(&self, name: &str, want: &str) -> Result<&'a T, TableError> {
        let a = self.0.column_by_name(name).ok_or_else(|| format!("column {name} is missing"))?;
        a.as_any().downcast_ref::<T>().ok_or_else(|| format!("column {name} is {}, expected {want}", a.data_type()))
    }
    fn str(&self, name: &str) -> Result<Vec<String>, TableError> {
        let a = self.col::<StringArray>(name, "utf8")?;
        (0..a.len())
            .map(|i| if a.is_null(i) { Err(format!("column {name} has a null")) } else { Ok(a.value(i).to_string()) })
            .collect()
    }
    fn opt_str(&self, name: &str) -> Result<Vec<Option<String>>, TableError> {
        let a = self.col::<StringArray>(name, "utf8")?;
        Ok((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i).to_string())).collect())
    }
    fn opt<T: ArrowPrimitiveType>(&self, name: &str) -> Result<Vec<Option<T::Native>>, TableError> {
        let a = self.col::<PrimitiveArray<T>>(name, &T::DATA_TYPE.to_string())?;
        Ok((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i))).collect())
    }
    fn req<T: ArrowPrimitiveType>(&self, name: &str) -> Result<Vec<T::Native>, TableError> {
        self.opt::<T>(name)?.into_iter().map(|v| v.ok_or_else(|| format!("column {name} has a null"))).collect()
    }
    fn opt_ts(&self, name: &str) -> Result<Vec<Option<Nanos>>, TableError> {
        let a = self.col::<TimestampNanosecondArray>(name, "timestamp[ns]")?;
        match a.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {}
            t => return Err(format!("column {name} is {t}, expected timestamp[ns]")),
        }
        Ok((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i))).collect())
    }
    fn ts(&self, name: &str) -> Result<Vec<Nanos>, TableError> {
        self.opt_ts(name)?.into_iter().map(|v| v.ok_or_else(|| format!("column {name} has a null"))).collect()
    }
}

fn from_json<T: serde::de::DeserializeOwned>(s: Option<String>, what: &str) -> Result<Option<T>, TableError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| format!("{what} is not valid: {e}"))).transpose()
}

fn mark(
    at: Option<Nanos>,
    level: Option<u8>,
    epoch: Option<u32>,
    since: Option<Nanos>,
) -> Result<Option<MarkRow>, TableError> {
    match (at, level, epoch, since) {
        (Some(at), Some(level), Some(epoch), Some(since)) => Ok(Some(MarkRow { at, level, epoch, since })),
        (None, None, None, None) => Ok(None),
        _ => Err("a mark is partly null".into()),
    }
}

pub fn decode_symbols(batches: &[RecordBatch]) -> Result<Vec<String>, TableError> {
    let mut names = Vec::new();
    for b in batches {
        let b = Batch(b);
        for (sym, name) in b.req::<U32>("symbol")?.into_iter().zip(b.str("name")?) {
            if sym as usize != names.len() {
                return Err(format!("symbol {sym} out of sequence"));
            }
            names.push(name);
        }
    }
    Ok(names)
}

pub fn decode_accounts(batches: &[RecordBatch]) -> Result<Vec<AccountRow>, TableError> {
    let mut out = Vec::new();
    for b in batches {
        let b = Batch(b);
        let (acc, first, last, max) = (b.str("account")?, b.ts("first_seen")?, b.ts("last_seen")?, b.ts("max_time")?);
        let (rel, sweep, evc) = (b.opt_ts("released")?, b.ts("next_sweep")?, b.opt_ts("evidence_created")?);
        let mut uo = b.opt_str("unfamiliar_origins_json")?.into_iter();
        // Models written before alerts named the resource have no such column.
        let mut res = match b.0.column_by_name("resource_id") {
            Some(_) => b.opt_str("resource_id")?,
            None => vec![None; acc.len()],
        }
        .into_iter();
        for i in 0..acc.len() {
            out.push(AccountRow {
                account: acc[i].clone(),
                first_seen: first[i],
                last_seen: last[i],
                max_time: max[i],
                released: rel[i],
                next_sweep: sweep[i],
                evidence_created: evc[i],
                unfamiliar_origins: from_json(uo.next().flatten(), "an account's unfamiliar origins")?,
                resource_id: res.next().flatten(),
            });
        }
    }
    Ok(out)
}

pub fn decode_keys(batches: &[RecordBatch]) -> Result<Vec<KeyRow>, TableError> {
    let mut out = Vec::new();
    for b in batches {
        let b = Batch(b);
        let (acc, cred, first, last) =
            (b.str("account")?, b.str("credential")?, b.ts("first_seen")?, b.ts("last_seen")?);
        let (known, hourly, peak) = (
            b.req::<U64>("known_origins")?,
            b.req::<U64>("typical_hourly_bytes")?,
            b.req::<U64>("typical_peak_bytes")?,
        );
        let days = b.req::<U32>("days_with_reads")?;
        let (thr, mean, scale, dof, maxp) = (
            b.opt::<U64>("volume_threshold_bytes")?,
            b.opt::<F64>("peak_mean_ln")?,
            b.opt::<F64>("peak_scale_ln")?,
            b.opt::<F64>("peak_dof")?,
            b.opt::<U64>("peak_max_bytes")?,
        );
        let basis = b.opt::<U8>("peak_basis")?;
        let (today, tpeak, ttotal, hours) = (
            b.opt::<D32>("today")?,
            b.opt::<U64>("today_peak_bytes")?,
            b.opt::<U64>("today_total_bytes")?,
            b.req::<U32>("today_hours")?,
        );
        let marks = |p: &str| -> Result<Vec<Option<MarkRow>>, TableError> {
            let (at, lv, ep, si) = (
                b.opt_ts(&format!("{p}_at"))?,
                b.opt::<U8>(&format!("{p}_level"))?,
                b.opt::<U32>(&format!("{p}_epoch"))?,
                b.opt_ts(&format!("{p}_since"))?,
            );
            (0..at.len()).map(|i| mark(at[i], lv[i], ep[i], si[i])).collect()
        };
        let (agg, vol) = (marks("aggregate_mark")?, marks("volume_mark")?);
        let checked = b.opt::<I64>("aggregate_checked_minute")?;
        let wev = b.opt_str("window_evidence_json")?;
        let (mut vo, mut uo) =
            (b.opt_str("volume_origins_json")?.into_iter(), b.opt_str("unfamiliar_origins_json")?.into_iter());
        // Written since the user-agent families (same format version: a model without them
        // loads with none, its keys' user agents new once more).
        let mut ua = match b.0.column_by_name("user_agents_json") {
            Some(_) => b.opt_str("user_agents_json")?.into_iter(),
            None => Vec::new().into_iter(),
        };
        for (i, wev) in wev.into_iter().enumerate() {
            let (vo, uo) = (vo.next().flatten(), uo.next().flatten());
            let user_agents = from_json::<Vec<AgentSeen>>(ua.next().flatten(), "user_agents_json")?.unwrap_or_default();
            let peak_model = match (thr[i], mean[i], scale[i], dof[i], maxp[i], basis[i]) {
                (Some(threshold), Some(mean_ln), Some(scale_ln), Some(dof), Some(max_peak), Some(basis)) => {
                    let basis = DayMask::from_code(basis).ok_or("a peak model has no days of the week")?;
                    Some(PeakModel { mean_ln, scale_ln, dof, max_peak, threshold, basis })
                }
                (None, None, None, None, None, None) => None,
                _ => return Err("a peak model is partly null".into()),
            };
            let today = match (today[i], tpeak[i], ttotal[i]) {
                (Some(d), Some(peak), Some(total)) => Some(DaySummary { day: d, peak, total, active_hours: 0 }),
                (None, None, None) => None,
                _ => return Err("the day in progress is partly null".into()),
            };
            out.push(KeyRow {
                account: acc[i].clone(),
                credential: cred[i].clone(),
                first_seen: first[i],
                last_seen: last[i],
                known_origins: known[i],
                typical_hourly_bytes: hourly[i],
                typical_peak_bytes: peak[i],
                days_with_reads: days[i],
                today,
                hours_today: hours[i],
                peak_model,
                aggregate_mark: agg[i],
                volume_mark: vol[i],
                aggregate_checked_minute: checked[i],
                window_evidence: from_json::<Box<(i64, Evidence, Evidence)>>(wev, "window_evidence_json")?,
                volume_origins: from_json::<Box<OriginWindow>>(vo, "volume_origins_json")?,
                unfamiliar_origins: from_json::<Box<OriginWindow>>(uo, "unfamiliar_origins_json")?,
                user_agents,
            });
        }
    }
    Ok(out)
}

pub fn decode_origins(batches: &[RecordBatch]) -> Result<Vec<OriginRow>, TableError> {
    let mut out = Vec::new();
    for b in batches {
        let b = Batch(b);
        let (acc, cred, origin) = (b.str("account")?, b.str("credential")?, b.str("origin")?);
        let (first, last, bytes, req) =
            (b.ts("first_seen")?, b.ts("last_seen")?, b.req::<U64>("bytes")?, b.req::<U32>("requests")?);
        let (lv, ep, at) = (b.req::<U8>("alert_level")?, b.req::<U16>("alert_epoch")?, b.opt_ts("alerted_at")?);
        let ev = b.opt_str("evidence_json")?;
        for (i, ev) in ev.into_iter().enumerate() {
            out.push(OriginRow {
                account: acc[i].clone(),
                credential: cred[i].clone(),
                origin: origin[i].clone(),
                first_seen: first[i],
                last_seen: last[i],
                bytes: bytes[i],
                requests: req[i],
                mark_level: lv[i],
                mark_epoch: ep[i],
                mark_at: at[i].unwrap_or(0),
                evidence: from_json::<Box<Evidence>>(ev, "evidence_json")?,
            });
        }
    }
    Ok(out)
}

pub fn decode_volume_days(batches: &[RecordBatch]) -> Result<Vec<VolumeDayRow>, TableError> {
    let mut out = Vec::new();
    for b in batches {
        let b = Batch(b);
        let (acc, cred, day) = (b.str("account")?, b.str("credential")?, b.req::<D32>("day")?);
        let (peak, total, hours) =
            (b.req::<U64>("peak_bytes")?, b.req::<U64>("total_bytes")?, b.req::<U8>("active_hours")?);
        for i in 0..acc.len() {
            out.push(VolumeDayRow {
                account: acc[i].clone(),
                credential: cred[i].clone(),
                day: DaySummary { day: day[i], peak: peak[i], total: total[i], active_hours: hours[i] },
            });
        }
    }
    Ok(out)
}

pub fn decode_windows(batches: &[RecordBatch]) -> Result<Vec<WindowRow>, TableError> {
    let mut out = Vec::new();
    for b in batches {
        let b = Batch(b);
        let (acc, cred, window) = (b.str("account")?, b.str("credential")?, b.str("window")?);
        let (minute, bytes) = (b.ts("minute")?, b.req::<U64>("bytes")?);
        for i in 0..acc.len() {
            let kind = WindowKind::parse(&window[i]).ok_or_else(|| format!("unknown window {:?}", window[i]))?;
            if minute[i].rem_euclid(MINUTE) != 0 {
                return Err(format!("window minute {} is not on a minute", minute[i]));
            }
            out.push(WindowRow {
                account: acc[i].clone(),
                credential: cred[i].clone(),
                window: kind,
                minute: minute[i].div_euclid(MINUTE),
                bytes: bytes[i],
            });
        }
    }
    Ok(out)
}
