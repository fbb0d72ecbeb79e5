//! `exfilwatch export --to parquet OUT`: the normalized events of everything replay reads, one
//! row per request, as one Parquet file, so that the next question is a fast query in polars
//! or DuckDB (and `exfilwatch investigate`'s fastest input).
//!
//! The columns ([`COLUMNS`]): `time` (timestamp, ns, UTC), `account`, `credential` (the
//! canonical form, `key:primarymasterkey`), `ip`, `origin` (the network the detector counts
//! the address in: `/24` and `/64` by default, [`Origins`]), `status`, `bytes` (the response
//! bytes of a successful request, as the detector counts them), `request_bytes`,
//! `request_charge`, `operation`, `database`, `collection`, `user_agent`, `activity_id`,
//! `category`. Rows keep the order of the inputs (files in replay's order, not merged by time).

use crate::config::OriginGranularity;
use crate::decode::{Decoded, Decoder, Event};
use crate::sources::{collect_streams, InputFault, SourceError, UnitReader};
use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The export's columns, in order.
pub const COLUMNS: [&str; 15] = [
    "time",
    "account",
    "credential",
    "ip",
    "origin",
    "status",
    "bytes",
    "request_bytes",
    "request_charge",
    "operation",
    "database",
    "collection",
    "user_agent",
    "activity_id",
    "category",
];

/// Rows per row group (and per Arrow batch written).
const BATCH_ROWS: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

/// How an address becomes an origin: the detector's `origin_granularity`, `ipv4_prefix` and
/// `ipv6_prefix`. At `origin_granularity = "asn"` an export (and the investigation) shows
/// the prefix: it reads no `[enrich]` files, and an AS is looked up from the address later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origins {
    pub granularity: OriginGranularity,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for Origins {
    fn default() -> Self {
        let d = crate::config::DetectConfig::default();
        Origins { granularity: d.origin_granularity, ipv4_prefix: d.ipv4_prefix, ipv6_prefix: d.ipv6_prefix }
    }
}

impl Origins {
    /// The origin of `ip` as text: `203.0.113.0/24`, `2001:db8:4:12::/64` (or `/32`, `/128`).
    pub fn of(&self, ip: IpAddr) -> String {
        let (len, max) = match ip {
            IpAddr::V4(_) => (self.ipv4_prefix.min(32), 32),
            IpAddr::V6(_) => (self.ipv6_prefix.min(128), 128),
        };
        let len = if self.granularity == OriginGranularity::Ip { max } else { len };
        let net = match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                IpAddr::V6((bits & mask).into())
            }
        };
        format!("{net}/{len}")
    }
}

/// The Arrow schema of the export.
pub fn schema() -> SchemaRef {
    let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        text("account", false),
        text("credential", false),
        text("ip", true),
        text("origin", true),
        Field::new("status", DataType::Int32, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("request_bytes", DataType::Int64, false),
        Field::new("request_charge", DataType::Float64, false),
        text("operation", false),
        text("database", false),
        text("collection", false),
        text("user_agent", false),
        text("activity_id", false),
        text("category", false),
    ]))
}

/// Writes events as the export's Parquet file.
pub struct ExportWriter {
    path: String,
    origins: Origins,
    writer: ArrowWriter<File>,
    time: TimestampNanosecondBuilder,
    text: [StringBuilder; 10],
    status: Int32Builder,
    bytes: Int64Builder,
    request_bytes: Int64Builder,
    charge: Float64Builder,
    pending: usize,
    rows: u64,
    scratch: String,
}

// Indices into `ExportWriter::text`.
const ACCOUNT: usize = 0;
const CREDENTIAL: usize = 1;
const IP: usize = 2;
const ORIGIN: usize = 3;
const OPERATION: usize = 4;
const DATABASE: usize = 5;
const COLLECTION: usize = 6;
const USER_AGENT: usize = 7;
const ACTIVITY: usize = 8;
const CATEGORY: usize = 9;

impl ExportWriter {
    pub fn create(path: &Path, origins: Origins) -> Result<ExportWriter, ExportError> {
        let p = path.display().to_string();
        let write_err = |e: &dyn std::fmt::Display| ExportError::Write { path: p.clone(), message: e.to_string() };
        let file = File::create(path).map_err(|e| write_err(&e))?;
        let props =
            WriterProperties::builder().set_compression(Compression::SNAPPY).set_max_row_group_size(BATCH_ROWS).build();
        let writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| write_err(&e))?;
        Ok(ExportWriter {
            path: p,
            origins,
            writer,
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            text: std::array::from_fn(|_| StringBuilder::new()),
            status: Int32Builder::new(),
            bytes: Int64Builder::new(),
            request_bytes: Int64Builder::new(),
            charge: Float64Builder::new(),
            pending: 0,
            rows: 0,
            scratch: String::new(),
        })
    }

    pub fn push(&mut self, e: &Event<'_>) -> Result<(), ExportError> {
        self.time.append_value(e.time);
        self.text[ACCOUNT].append_value(&e.account);
        e.credential.write_canonical(&mut self.scratch);
        self.text[CREDENTIAL].append_value(&self.scratch);
        match e.client_ip {
            Some(ip) => {
                self.text[IP].append_value(ip.to_string());
                self.text[ORIGIN].append_value(self.origins.of(ip));
            }
            None => {
                self.text[IP].append_null();
                self.text[ORIGIN].append_null();
            }
        }
        self.status.append_value(i32::from(e.status));
        self.bytes.append_value(i64::try_from(e.response_bytes).unwrap_or(i64::MAX));
        self.request_bytes.append_value(i64::try_from(e.request_bytes).unwrap_or(i64::MAX));
        self.charge.append_value(e.request_charge);
        self.text[OPERATION].append_value(&e.operation);
        self.text[DATABASE].append_value(&e.database);
        self.text[COLLECTION].append_value(&e.collection);
        self.text[USER_AGENT].append_value(&e.user_agent);
        self.text[ACTIVITY].append_value(&e.activity_id);
        self.text[CATEGORY].append_value(e.category.as_str());
        self.pending += 1;
        self.rows += 1;
        if self.pending >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if self.pending == 0 {
            return Ok(());
        }
        let t = &mut self.text;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(t[ACCOUNT].finish()),
            Arc::new(t[CREDENTIAL].finish()),
            Arc::new(t[IP].finish()),
            Arc::new(t[ORIGIN].finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.request_bytes.finish()),
            Arc::new(self.charge.finish()),
            Arc::new(t[OPERATION].finish()),
            Arc::new(t[DATABASE].finish()),
            Arc::new(t[COLLECTION].finish()),
            Arc::new(t[USER_AGENT].finish()),
            Arc::new(t[ACTIVITY].finish()),
            Arc::new(t[CATEGORY].finish()),
        ];
        self.pending = 0;
        let path = &self.path;
        let err = |e: &dyn std::fmt::Display| ExportError::Write { path: path.clone(), message: e.to_string() };
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| err(&e))?;
        self.writer.write(&batch).map_err(|e| err(&e))
    }

    /// Writes what is buffered and the file's footer; the number of rows.
    pub fn finish(mut self) -> Result<u64, ExportError> {
        self.flush()?;
        let path = self.path.clone();
        self.writer.close().map_err(|e| ExportError::Write { path, message: e.to_string() })?;
        Ok(self.rows)
    }
}

/// What [`read_events`] met besides events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    pub events: u64,
    /// Records of categories that are not requests.
    pub skipped: u64,
    /// Records set aside, with where the first of them was.
    pub malformed: u64,
    pub first_malformed: Option<String>,
    /// Files cut short, unreadable, or table files with a bad row (file, row, column).
    pub faults: Vec<InputFault>,
}

/// Reads every input as replay does (files, directories, `-`, gzip, archive chains, CSV and
/// Parquet exports), in input order, and hands each event to `each`.
pub fn read_events<E>(inputs: &[PathBuf], mut each: impl FnMut(&Event<'_>) -> Result<(), E>) -> Result<ReadSummary, E>
where
    E: From<SourceError>,
{
    let (streams, faults) = collect_streams(inputs)?;
    let mut summary = ReadSummary { faults, ..ReadSummary::default() };
    let mut decoder = Decoder::new();
    let max_doc = usize::try_from(crate::config::InputConfig::default().max_document_bytes.0).unwrap_or(usize::MAX);
    for stream in streams {
        let mut reader = UnitReader::new(stream, max_doc);
        while let Some(unit) = reader.next_unit() {
            let (source, line) = (unit.source.to_string(), unit.line);
            let mut result = Ok(());
            decoder.decode(unit.bytes, |d| match d {
                Decoded::Event(e) => {
                    if result.is_ok() {
                        summary.events += 1;
                        result = each(&e);
                    }
                }
                Decoded::Skipped(_) => summary.skipped += 1,
                Decoded::Malformed { reason, .. } => {
                    summary.malformed += 1;
                    summary.first_malformed.get_or_insert_with(|| format!("{source}:{line}: {reason}"));
                }
            });
            result?;
        }
        summary.faults.extend(reader.take_faults());
    }
    Ok(summary)
}

/// `exfilwatch export --to parquet`: reads `inputs`, writes `out`.
pub fn export_parquet(inputs: &[PathBuf], out: &Path, origins: Origins) -> Result<(ReadSummary, u64), ExportError> {
    let mut writer = ExportWriter::create(out, origins)?;
    let summary = read_events(inputs, |e| writer.push(e))?;
    let rows = writer.finish()?;
    Ok((summary, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn origins_are_the_detectors_networks() {
        let o = Origins::default();
        assert_eq!(o.of("203.0.113.77".parse().expect("ip")), "203.0.113.0/24");
        assert_eq!(o.of("2001:db8:4:12:ab::1".parse().expect("ip")), "2001:db8:4:12::/64");
        let ip = Origins { granularity: OriginGranularity::Ip, ..o };
        assert_eq!(ip.of("203.0.113.77".parse().expect("ip")), "203.0.113.77/32");
        let wide = Origins { ipv4_prefix: 16, ipv6_prefix: 0, ..o };
        assert_eq!(wide.of("203.0.113.77".parse().expect("ip")), "203.0.0.0/16");
        assert_eq!(wide.of("2001:db8::1".parse().expect("ip")), "::/0");
    }

    #[test]
    fn export_writes_one_row_per_request_with_the_decoders_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs.jsonl");
        std::fs::write(
            &logs,
            concat!(
                r#"{"time":"2021-08-17T10:00:00Z","resourceId":"/SUBSCRIPTIONS/S/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.DOCUMENTDB/DATABASEACCOUNTS/CONTOSO","category":"DataPlaneRequests","operationName":"Query","properties":{"clientIpAddress":"203.0.113.77","keyType":"PrimaryMasterKey","statusCode":"200","responseLength":"4194304","collectionName":"customers","userAgent":"python-requests/2.25.1"}}"#,
                "\n",
                r#"{"time":"2021-08-17T10:01:00Z","resourceId":"/X/DATABASEACCOUNTS/CONTOSO","category":"DataPlaneRequests","operationName":"Read","properties":{"keyType":"PrimaryMasterKey","statusCode":"429","responseLength":"99"}}"#,
                "\n",
                r#"{"time":"2021-08-17T10:02:00Z","category":"ControlPlaneRequests"}"#,
                "\n",
                "not json\n",
            ),
        )
        .expect("write logs");
        let out = dir.path().join("events.parquet");
        let (summary, rows) = export_parquet(&[logs], &out, Origins::default()).expect("export");
        assert_eq!((rows, summary.events, summary.skipped, summary.malformed), (2, 2, 1, 1));
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&out).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, COLUMNS);
        let text = |c: &str, i: usize| -> Option<String> {
            let a = b.column_by_name(c).expect("column").as_string::<i32>();
            (!a.is_null(i)).then(|| a.value(i).to_string())
        };
        assert_eq!(text("account", 0).as_deref(), Some("contoso"));
        assert_eq!(text("credential", 1).as_deref(), Some("key:primarymasterkey"));
        assert_eq!(text("ip", 0).as_deref(), Some("203.0.113.77"));
        assert_eq!(text("origin", 0).as_deref(), Some("203.0.113.0/24"));
        assert_eq!((text("ip", 1), text("origin", 1)), (None, None));
        assert_eq!(text("collection", 0).as_deref(), Some("customers"));
        let bytes = b.column_by_name("bytes").expect("bytes").as_primitive::<Int64Type>();
        // A throttled request moves no data.
        assert_eq!((bytes.value(0), bytes.value(1)), (4_194_304, 0));
        let time = b.column_by_name("time").expect("time").as_primitive::<TimestampNanosecondType>();
        assert_eq!(time.value(0), crate::time::parse_timestamp("2021-08-17T10:00:00Z").expect("time"));
    }
}
