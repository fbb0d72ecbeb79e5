//! The answers as terminal tables, CSV, JSON or Parquet.

use crate::{Table, Value};
use anyhow::{Context, Result};
use exfilwatch::time::format_rfc3339;
use exfilwatch::units::human_bytes;
use polars::prelude::*;
use std::path::Path;

/// A cell as text (times in RFC 3339).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Time(t) => format_rfc3339(*t),
        Value::Bool(b) => b.to_string(),
    }
}

/// Aligned columns for a terminal; byte counts also in readable units.
pub fn terminal(tables: &[Table]) -> String {
    let mut out = String::new();
    for t in tables {
        out.push_str(&format!("\n== {} ({} rows)\n", t.title, t.rows.len()));
        let cell = |c: usize, v: &Value| -> String {
            match (t.columns[c].as_str(), v) {
                ("bytes", Value::Int(b)) => format!("{} ({})", b, human_bytes(u64::try_from(*b).unwrap_or(0))),
                _ => {
                    let s = text(v);
                    if s.chars().count() > 60 {
                        s.chars().take(57).collect::<String>() + "..."
                    } else {
                        s
                    }
                }
            }
        };
        let cells: Vec<Vec<String>> =
            t.rows.iter().map(|r| r.iter().enumerate().map(|(i, v)| cell(i, v)).collect()).collect();
        let widths: Vec<usize> = (0..t.columns.len())
            .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([t.columns[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |r: &[String]| -> String {
            r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
                + "\n"
        };
        out.push_str(&line(&t.columns));
        for r in &cells {
            out.push_str(&line(r));
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn csv(t: &Table) -> String {
    let mut out = t.columns.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",") + "\n";
    for r in &t.rows {
        out.push_str(&(r.iter().map(|v| csv_field(&text(v))).collect::<Vec<_>>().join(",") + "\n"));
    }
    out
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(s) => s.clone().into(),
        Value::Time(t) => format_rfc3339(*t).into(),
        Value::Bool(b) => (*b).into(),
    }
}

/// `{"<table>": [{"column": value, ...}, ...], ...}`.
pub fn json(tables: &[Table]) -> serde_json::Value {
    let mut doc = serde_json::Map::new();
    for t in tables {
        let rows: Vec<serde_json::Value> = t
            .rows
            .iter()
            .map(|r| serde_json::Value::Object(t.columns.iter().cloned().zip(r.iter().map(json_value)).collect()))
            .collect();
        doc.insert(t.name.to_string(), rows.into());
    }
    serde_json::Value::Object(doc)
}

/// A table as a polars frame (times as UTC timestamps), for Parquet.
pub fn frame(t: &Table) -> Result<DataFrame> {
    let mut cols = Vec::new();
    for (i, name) in t.columns.iter().enumerate() {
        let kind = t.rows.iter().map(|r| &r[i]).find(|v| **v != Value::Null);
        let name: PlSmallStr = name.as_str().into();
        let col = match kind {
            Some(Value::Int(_)) => Column::new(
                name,
                t.rows.iter().map(|r| if let Value::Int(v) = r[i] { Some(v) } else { None }).collect::<Vec<_>>(),
            ),
            Some(Value::Time(_)) => Column::new(
                name,
                t.rows.iter().map(|r| if let Value::Time(v) = r[i] { Some(v) } else { None }).collect::<Vec<_>>(),
            )
            .cast(&DataType::Datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC)))?,
            Some(Value::Float(_)) => Column::new(
                name,
                t.rows.iter().map(|r| if let Value::Float(v) = r[i] { Some(v) } else { None }).collect::<Vec<_>>(),
            ),
            Some(Value::Bool(_)) => Column::new(
                name,
                t.rows.iter().map(|r| if let Value::Bool(v) = r[i] { Some(v) } else { None }).collect::<Vec<_>>(),
            ),
            _ => {
                Column::new(name, t.rows.iter().map(|r| (r[i] != Value::Null).then(|| text(&r[i]))).collect::<Vec<_>>())
            }
        };
        cols.push(col);
    }
    Ok(DataFrame::new(t.rows.len(), cols)?)
}

/// One file per table in `dir`: `<name>.csv` or `<name>.parquet`.
pub fn write_dir(tables: &[Table], dir: &Path, parquet: bool) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for t in tables {
        let path = dir.join(format!("{}.{}", t.name, if parquet { "parquet" } else { "csv" }));
        if parquet {
            let mut df = frame(t)?;
            let f = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            ParquetWriter::new(f).finish(&mut df).with_context(|| format!("cannot write {}", path.display()))?;
        } else {
            std::fs::write(&path, csv(t)).with_context(|| format!("cannot write {}", path.display()))?;
        }
        written.push(path);
    }
    Ok(written)
}
