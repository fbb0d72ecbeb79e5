//! Log Analytics exports: the `AzureDiagnostics` table (suffixed columns such as
//! `clientIpAddress_s`, `responseLength_s`, `keyType_s`, `Resource`, `TimeGenerated`) and the
//! resource-specific `CDBDataPlaneRequests` table (PascalCase columns), as CSV (plain or
//! gzip) or Parquet.
//!
//! A [`TableReader`] turns each row into one JSON object whose keys are the row's own column
//! names (the decoder knows them all as aliases, `src/decode/raw.rs`), so that a row is
//! normalized by [`crate::decode::Decoder`] exactly as the same record read as JSON. Columns
//! the decoder does not use are not read (Parquet) or not copied (CSV); `Resource` (the
//! account name of the `AzureDiagnostics` table) is passed as `accountName`.
//!
//! Unlike a JSON line, a table has a schema, and a value of the wrong type is an error that
//! names the file, the row and the column ([`TableError`]): a number column (`ResponseLength`,
//! `statusCode_s`, ...) holding text that is not a number, a time column holding something
//! that is not a time, a Parquet column of a type that cannot hold its values. A file without
//! a time column or without an account column (`AccountName`, `Resource`, `ResourceId`,
//! `_ResourceId`) is refused when opened. An empty cell is an absent value, as in JSON.

use crate::time::parse_timestamp;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// A table file that cannot be read, or a value in it of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}{}: {problem}", .row.map(|r| format!(": row {r}")).unwrap_or_default(), .column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
pub struct TableError {
    pub file: String,
    /// 1-based data row (the CSV header is not counted); `None` for the whole file.
    pub row: Option<u64>,
    pub column: Option<String>,
    pub problem: String,
}

/// The two table file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Parquet,
}

/// Whether `path` is a table: Parquet by its magic bytes, CSV by its name (`.csv`, `.csv.gz`).
pub fn table_format(path: &Path) -> Option<TableFormat> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
    if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        return Some(TableFormat::Csv);
    }
    let mut magic = [0u8; 4];
    let mut f = File::open(path).ok()?;
    f.read_exact(&mut magic).ok()?;
    (&magic == b"PAR1").then_some(TableFormat::Parquet)
}

/// What a column holds, for the type checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Time,
    Number,
    Text,
}

/// The time columns the decoder reads (named when a file has none); what every column holds
/// is the decoder's to say ([`crate::decode::column_kind`]).
const TIME: &[&str] = &["TimeGenerated", "time", "timeGenerated", "timestamp"];
/// Columns that name the account (one is required).
const ACCOUNT: &[&str] = &[
    "AccountName",
    "accountName",
    "databaseAccountName",
    "Resource",
    "ResourceId",
    "_ResourceId",
    "resourceId",
    "resourceID",
];

fn kind_of(name: &str) -> Option<Kind> {
    use crate::decode::ColumnKind;
    if name == "Resource" {
        return Some(Kind::Text); // read as `accountName`
    }
    Some(match crate::decode::column_kind(name)? {
        ColumnKind::Time => Kind::Time,
        ColumnKind::Number => Kind::Number,
        ColumnKind::Text => Kind::Text,
    })
}

/// A column the reader copies: its index in the file, its name, the JSON key it gets, its kind.
#[derive(Clone, Debug)]
struct Col {
    index: usize,
    name: String,
    key: String,
    kind: Kind,
}

/// Picks the used columns of a header; refuses a file without a time or an account column.
fn pick_columns(file: &str, names: &[String]) -> Result<Vec<Col>, TableError> {
    let has_account_name = names.iter().any(|n| ["AccountName", "accountName", "databaseAccountName"].contains(&&**n));
    let mut cols = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let Some(kind) = kind_of(name) else { continue };
        let key = match name.as_str() {
            // The AzureDiagnostics table's account name; ignored beside a real account column.
            "Resource" if has_account_name => continue,
            "Resource" => "accountName".to_string(),
            other => other.to_string(),
        };
        cols.push(Col { index, name: name.clone(), key, kind });
    }
    let whole = |problem: String| TableError { file: file.into(), row: None, column: None, problem };
    if !cols.iter().any(|c| c.kind == Kind::Time) {
        return Err(whole(format!("no time column (one of {})", TIME.join(", "))));
    }
    if !names.iter().any(|n| ACCOUNT.contains(&&**n)) {
        return Err(whole(format!("no account column (one of {})", ACCOUNT.join(", "))));
    }
    Ok(cols)
}

/// Checks a text cell of a time or number column; `Err` is the problem.
fn check_cell(kind: Kind, v: &str) -> Result<(), String> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(());
    }
    match kind {
        Kind::Text => Ok(()),
        Kind::Time => match parse_timestamp(t) {
            Some(_) => Ok(()),
            None => Err(format!("expected a time, found {}", quoted(t))),
        },
        Kind::Number => match t.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(()),
            _ => Err(format!("expected a number, found {}", quoted(t))),
        },
    }
}

fn quoted(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    format!("{short:?}{}", if short.len() < s.len() { "..." } else { "" })
}

/// Appends `"key":"value",` (JSON-escaped) to `out`.
fn push_pair(out: &mut Vec<u8>, key: &str, value: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    // Writing JSON strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Reads the rows of a table file as JSON records.
pub struct TableReader {
    file: String,
    inner: Inner,
    /// Data rows handed out so far.
    row: u64,
}

enum Inner {
    Csv { reader: csv::Reader<Box<dyn Read + Send>>, cols: Vec<Col>, record: csv::StringRecord },
    Parquet { batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader, cols: Vec<Col>, batch: Option<Batch> },
}

/// A Parquet batch with its used columns as text.
struct Batch {
    columns: Vec<arrow::array::StringArray>,
    at: usize,
}

impl TableReader {
    /// Opens a table file, reads its header or schema and checks its columns.
    pub fn open(path: &Path, format: TableFormat) -> Result<TableReader, TableError> {
        let file = path.display().to_string();
        let whole = |problem: String| TableError { file: file.clone(), row: None, column: None, problem };
        let f = File::open(path).map_err(|e| whole(format!("cannot open: {e}")))?;
        let inner = match format {
            TableFormat::Csv => {
                let mut buffered = BufReader::with_capacity(256 << 10, f);
                let gzip =
                    buffered.fill_buf().map_err(|e| whole(format!("cannot read: {e}")))?.starts_with(&[0x1f, 0x8b]);
                let source: Box<dyn Read + Send> =
                    if gzip { Box::new(flate2::bufread::MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };
                let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(source);
                let header = reader.headers().map_err(|e| whole(format!("cannot read the header: {e}")))?.clone();
                if header.is_empty() || (header.len() == 1 && header[0].trim().is_empty()) {
                    return Err(whole("empty file: no header row".into()));
                }
                let names: Vec<String> =
                    header.iter().map(|h| h.trim().trim_start_matches('\u{feff}').to_string()).collect();
                let cols = pick_columns(&file, &names)?;
                Inner::Csv { reader, cols, record: csv::StringRecord::new() }
            }
            TableFormat::Parquet => {
                use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
                use parquet::arrow::ProjectionMask;
                let builder = ParquetRecordBatchReaderBuilder::try_new(f)
                    .map_err(|e| whole(format!("not a readable Parquet file: {e}")))?;
                let schema = builder.schema().clone();
                let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                let picked = pick_columns(&file, &names)?;
                for c in &picked {
                    let dt = schema.field(c.index).data_type();
                    if !type_fits(c.kind, dt) {
                        return Err(TableError {
                            file: file.clone(),
                            row: None,
                            column: Some(c.name.clone()),
                            problem: format!("type {dt} cannot hold {}", kind_name(c.kind)),
                        });
                    }
                }
                let mask = ProjectionMask::roots(builder.parquet_schema(), picked.iter().map(|c| c.index));
                // The columns of a projected batch come in file order: renumber them.
                let cols = picked.iter().enumerate().map(|(i, c)| Col { index: i, ..c.clone() }).collect();
                let batches = builder
                    .with_projection(mask)
                    .with_batch_size(8192)
                    .build()
                    .map_err(|e| whole(format!("not a readable Parquet file: {e}")))?;
                Inner::Parquet { batches, cols, batch: None }
            }
        };
        Ok(TableReader { file, inner, row: 0 })
    }

    /// The next row as one JSON object in `out` (cleared first) and its 1-based row number;
    /// `None` at the end of the file.
    pub fn next_record(&mut self, out: &mut Vec<u8>) -> Result<Option<u64>, TableError> {
        out.clear();
        let row = self.row + 1;
        let file = &self.file;
        let err = |column: Option<&str>, problem: String| TableError {
            file: file.clone(),
            row: Some(row),
            column: column.map(str::to_string),
            problem,
        };
        match &mut self.inner {
            Inner::Csv { reader, cols, record } => {
                match reader.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {}
                    Err(e) => return Err(err(None, csv_problem(&e))),
                }
                out.push(b'{');
                for c in cols.iter() {
                    let v = record.get(c.index).unwrap_or("");
                    check_cell(c.kind, v).map_err(|p| err(Some(&c.name), p))?;
                    if !v.trim().is_empty() {
                        push_pair(out, &c.key, v);
                    }
                }
                out.push(b'}');
            }
            Inner::Parquet { batches, cols, batch } => {
                loop {
                    if let Some(b) = batch {
                        if b.at < b.columns.first().map_or(0, Array::len) {
                            break;
                        }
                    }
                    let next = match batches.next() {
                        None => return Ok(None),
                        Some(Err(e)) => return Err(err(None, format!("cannot read: {e}"))),
                        Some(Ok(b)) => b,
                    };
                    *batch = Some(text_batch(&next, cols).map_err(|(c, p)| err(Some(&c), p))?);
                }
                let Some(b) = batch.as_mut() else { return Ok(None) };
                out.push(b'{');
                for (c, column) in cols.iter().zip(&b.columns) {
                    if column.is_null(b.at) {
                        continue;
                    }
                    let v = column.value(b.at);
                    check_cell(c.kind, v).map_err(|p| err(Some(&c.name), p))?;
                    if !v.trim().is_empty() {
                        push_pair(out, &c.key, v);
                    }
                }
                out.push(b'}');
                b.at += 1;
            }
        }
        self.row = row;
        Ok(Some(row))
    }
}

fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
        csv::ErrorKind::Io(e) => format!("cannot read: {e}"),
        _ => e.to_string(),
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Time => "a time",
        Kind::Number => "a number",
        Kind::Text => "text",
    }
}

fn type_fits(kind: Kind, dt: &DataType) -> bool {
    let text = matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null);
    let number =
        dt.is_integer() || dt.is_floating() || matches!(dt, DataType::Decimal128(..) | DataType::Decimal256(..));
    match kind {
        Kind::Time => text || matches!(dt, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64),
        Kind::Number => text || number,
        Kind::Text => text || number || matches!(dt, DataType::Boolean),
    }
}

/// The used columns of `b` as text (times as RFC 3339, numbers in their decimal form).
fn text_batch(b: &RecordBatch, cols: &[Col]) -> Result<Batch, (String, String)> {
    let mut columns = Vec::with_capacity(cols.len());
    for c in cols {
        let array = b.column(c.index);
        let cast = match array.data_type() {
            // A time zone-less timestamp is UTC (Log Analytics writes UTC): mark it so.
            DataType::Timestamp(unit, None) => {
                let utc = DataType::Timestamp(*unit, Some("+00:00".into()));
                arrow::compute::cast(array, &utc).and_then(|a| arrow::compute::cast(&a, &DataType::Utf8))
            }
            _ => arrow::compute::cast(array, &DataType::Utf8),
        }
        .map_err(|e| (c.name.clone(), format!("cannot read as {}: {e}", kind_name(c.kind))))?;
        columns.push(cast.as_string::<i32>().clone());
    }
    Ok(Batch { columns, at: 0 })
}

impl From<TableError> for io::Error {
    fn from(e: TableError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

#[cfg(test)]
mod tests;
