//! `exfilwatch investigate`: which credentials read how much, from where, since when.
//!
//! Inputs ([`load`]): the Parquet file `exfilwatch export --to parquet` writes is scanned
//! lazily by polars (only the columns used, the filters pushed into the scan); everything
//! else replay reads (JSON Lines, pre-2018 blobs, gzip, archive chains, Log Analytics CSV
//! and Parquet exports) goes through the library's readers and decoder
//! ([`exfilwatch::export::read_events`]), so a record means here what it means to the
//! detector, and the filters are applied while reading (only matching rows become a frame).
//!
//! The answers ([`investigate`]) are [`Table`]s: per credential, per origin, the hourly
//! timeline, the origins first seen in the period, and for an alert its key's bytes before,
//! during and after its window and every key that its origins touched. They are printed
//! ([`output`]) as text, CSV, Parquet or JSON, or drawn into one HTML file ([`report`]).

pub mod output;
pub mod report;

use anyhow::{bail, Context, Result};
use exfilwatch::alert::Alert;
use exfilwatch::decode::Event;
use exfilwatch::export::{self, Origins};
use exfilwatch::time::{Nanos, HOUR};
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The origin of a request without an address.
pub const NO_ADDRESS: &str = "(no address)";

/// A network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let net: IpAddr = a.trim().parse().map_err(|_| format!("{s:?} is not an address/prefix"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len =
            if l.is_empty() { max } else { l.trim().parse::<u8>().map_err(|_| format!("{s:?}: bad prefix length"))? };
        if len > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Cidr { net, len })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What to look at. Account and credential are compared in their canonical forms (lower case
/// account, `key:primarymasterkey`); times are `[since, until)`.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub account: Option<String>,
    pub credential: Option<String>,
    pub ip: Option<IpAddr>,
    pub cidr: Option<Cidr>,
    pub since: Option<Nanos>,
    pub until: Option<Nanos>,
}

impl Filters {
    /// Whether the filters other than time keep a request.
    fn keeps_key(&self, account: &str, credential: &str, ip: Option<IpAddr>) -> bool {
        self.account.as_deref().is_none_or(|a| a == account)
            && self.credential.as_deref().is_none_or(|c| c == credential)
            && self.ip.is_none_or(|want| ip == Some(want))
            && self.cidr.is_none_or(|c| ip.is_some_and(|ip| c.contains(ip)))
    }

    fn in_period(&self, t: Nanos) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// The filters other than time, as a polars predicate (on the export's columns).
    fn key_expr(&self) -> Option<Expr> {
        let mut parts = Vec::new();
        if let Some(a) = &self.account {
            parts.push(col("account").eq(lit(a.clone())));
        }
        if let Some(c) = &self.credential {
            parts.push(col("credential").eq(lit(c.clone())));
        }
        if let Some(ip) = self.ip {
            parts.push(col("ip").eq(lit(ip.to_string())));
        }
        if let Some(cidr) = self.cidr {
            parts.push(col("ip").map(
                move |c: Column| {
                    let s = c.str()?;
                    let mask: BooleanChunked = s
                        .into_iter()
                        .map(|v| Some(v.and_then(|v| v.parse::<IpAddr>().ok()).is_some_and(|ip| cidr.contains(ip))))
                        .collect();
                    Ok(Column::from(mask.with_name(c.name().clone()).into_series()))
                },
                |_, f| Ok(Field::new(f.name().clone(), DataType::Boolean)),
            ));
        }
        parts.into_iter().reduce(|a, b| a.and(b))
    }

    fn period_expr(&self) -> Option<Expr> {
        let mut parts = Vec::new();
        if let Some(s) = self.since {
            parts.push(col("t").gt_eq(lit(s)));
        }
        if let Some(u) = self.until {
            parts.push(col("t").lt(lit(u)));
        }
        parts.into_iter().reduce(|a, b| a.and(b))
    }
}

/// An alert of an alerts file (`replay -o`, the file sink) as the investigation uses it.
#[derive(Clone, Debug)]
pub struct AlertScope {
    pub id: String,
    pub account: String,
    pub credential: String,
    /// The alert's origins (prefixes, as the export's `origin` column writes them).
    pub origins: Vec<String>,
    pub start: Nanos,
    pub end: Nanos,
}

/// Finds alert `id` in an alerts file (JSON Lines).
pub fn find_alert(alerts: &Path, id: &str) -> Result<AlertScope> {
    let text = std::fs::read_to_string(alerts).with_context(|| format!("cannot read {}", alerts.display()))?;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let a: Alert = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}: not an alert", alerts.display(), n + 1))?;
        if a.id != id {
            continue;
        }
        let mut origins: Vec<String> =
            a.origin.iter().chain(a.origins.iter().flatten()).map(|o| o.prefix.clone()).collect();
        origins.sort();
        origins.dedup();
        let time = |s: &str, what: &str| {
            exfilwatch::time::parse_timestamp(s).with_context(|| {
                format!("{}: line {}: the alert's window {what} {s:?} is not a time", alerts.display(), n + 1)
            })
        };
        return Ok(AlertScope {
            start: time(&a.window.start, "start")?,
            end: time(&a.window.end, "end")?,
            id: a.id,
            account: a.account,
            credential: a.credential,
            origins,
        });
    }
    bail!("no alert {id} in {}", alerts.display())
}

/// The columns the investigation reads.
const USED: [&str; 9] =
    ["time", "account", "credential", "ip", "origin", "bytes", "operation", "collection", "user_agent"];

/// Whether `path` is a Parquet file with the export's columns (then polars scans it).
fn is_export(path: &Path) -> Result<bool> {
    if !path.is_file() || exfilwatch::sources::table_format(path) != Some(exfilwatch::sources::TableFormat::Parquet) {
        return Ok(false);
    }
    let mut lf = LazyFrame::scan_parquet(PlRefPath::try_from_path(path)?, ScanArgsParquet::default())
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let schema = lf.collect_schema().with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    Ok(USED.iter().all(|c| schema.get(c).is_some()))
}

/// Columns of the events read through the library, before they become a frame.
#[derive(Default)]
struct Columns {
    time: Vec<i64>,
    account: Vec<String>,
    credential: Vec<String>,
    ip: Vec<Option<String>>,
    origin: Vec<String>,
    bytes: Vec<i64>,
    operation: Vec<String>,
    collection: Vec<String>,
    user_agent: Vec<String>,
}

impl Columns {
    fn push(&mut self, e: &Event<'_>, credential: &str, origins: &Origins) {
        self.time.push(e.time);
        self.account.push(e.account.to_string());
        self.credential.push(credential.to_string());
        self.ip.push(e.client_ip.map(|ip| ip.to_string()));
        self.origin.push(e.client_ip.map_or_else(|| NO_ADDRESS.to_string(), |ip| origins.of(ip)));
        self.bytes.push(i64::try_from(e.response_bytes).unwrap_or(i64::MAX));
        self.operation.push(e.operation.to_string());
        self.collection.push(e.collection.to_string());
        self.user_agent.push(e.user_agent.to_string());
    }

    fn into_frame(self) -> Result<DataFrame> {
        let n = self.time.len();
        let cols = vec![
            Column::new("t".into(), self.time),
            Column::new("account".into(), self.account),
            Column::new("credential".into(), self.credential),
            Column::new("ip".into(), self.ip),
            Column::new("origin".into(), self.origin),
            Column::new("bytes".into(), self.bytes),
            Column::new("operation".into(), self.operation),
            Column::new("collection".into(), self.collection),
            Column::new("user_agent".into(), self.user_agent),
        ];
        Ok(DataFrame::new(n, cols)?)
    }
}

/// The requests the investigation looks at: the rows the filters other than time keep (the
/// period is applied later, as "first seen" needs what came before it), plus, for an alert,
/// every row of its origins (to list the other keys they touched). Column `t` is the time in
/// nanoseconds; `origin` is never null ([`NO_ADDRESS`]).
pub fn load(inputs: &[PathBuf], filters: &Filters, alert: Option<&AlertScope>, origins: &Origins) -> Result<DataFrame> {
    let mut lazy = Vec::new();
    let mut others = Vec::new();
    for p in inputs {
        if is_export(p)? {
            lazy.push(p.clone());
        } else {
            others.push(p.clone());
        }
    }
    let alert_origins: BTreeSet<String> = alert.map(|a| a.origins.iter().cloned().collect()).unwrap_or_default();
    let mut frames = Vec::new();
    for p in &lazy {
        let lf = LazyFrame::scan_parquet(PlRefPath::try_from_path(p)?, ScanArgsParquet::default())?
            .select(USED.iter().map(|c| col(*c)).collect::<Vec<_>>())
            .with_column(
                col("time")
                    .cast(DataType::Datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC)))
                    .cast(DataType::Int64)
                    .alias("t"),
            )
            .with_column(col("origin").fill_null(lit(NO_ADDRESS)))
            .select([
                col("t"),
                col("account"),
                col("credential"),
                col("ip"),
                col("origin"),
                col("bytes").cast(DataType::Int64),
                col("operation"),
                col("collection"),
                col("user_agent"),
            ]);
        let key = filters.key_expr();
        let reach = (!alert_origins.is_empty()).then(|| {
            alert_origins.iter().map(|o| col("origin").eq(lit(o.clone()))).reduce(|a, b| a.or(b)).unwrap_or(lit(false))
        });
        let lf = match (key, reach) {
            (Some(k), Some(r)) => lf.filter(k.or(r)),
            (Some(k), None) => lf.filter(k),
            (None, _) => lf,
        };
        frames.push(lf);
    }
    if !others.is_empty() {
        let mut cols = Columns::default();
        let mut credential = String::new();
        let summary = export::read_events(&others, |e: &Event<'_>| -> Result<()> {
            e.credential.write_canonical(&mut credential);
            let keep = filters.keeps_key(&e.account, &credential, e.client_ip)
                || (!alert_origins.is_empty() && e.client_ip.is_some_and(|ip| alert_origins.contains(&origins.of(ip))));
            if keep {
                cols.push(e, &credential, origins);
            }
            Ok(())
        })?;
        if let Some(f) = summary.faults.first() {
            bail!("{}: {} ({})", f.location, f.error, f.reason);
        }
        frames.push(cols.into_frame()?.lazy());
    }
    let lf = match frames.len() {
        0 => bail!("no input"),
        1 => frames.remove(0),
        _ => concat(frames, UnionArgs::default())?,
    };
    Ok(lf.collect()?)
}

/// One cell of an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    /// Nanoseconds since the epoch, UTC.
    Time(i64),
    Bool(bool),
}

/// One answer: named columns and rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// `credentials`, `origins`, `timeline`, `first_seen`, `alert_window`, `alert_reach`.
    pub name: &'static str,
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// A collected frame as a table; the columns named in `times` hold nanoseconds.
fn table_of(name: &'static str, title: String, df: &DataFrame, times: &[&str]) -> Result<Table> {
    let columns: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    let mut rows = Vec::with_capacity(df.height());
    let cols = df.columns();
    for i in 0..df.height() {
        let mut row = Vec::with_capacity(columns.len());
        for (c, name) in cols.iter().zip(&columns) {
            let v = match c.get(i)? {
                AnyValue::Null => Value::Null,
                AnyValue::Boolean(b) => Value::Bool(b),
                AnyValue::String(s) => Value::Text(s.to_string()),
                AnyValue::StringOwned(s) => Value::Text(s.to_string()),
                AnyValue::Int64(v) if times.contains(&name.as_str()) => Value::Time(v),
                AnyValue::Int64(v) => Value::Int(v),
                AnyValue::Int32(v) => Value::Int(i64::from(v)),
                AnyValue::UInt32(v) => Value::Int(i64::from(v)),
                AnyValue::UInt64(v) => Value::Int(i64::try_from(v).unwrap_or(i64::MAX)),
                AnyValue::Float64(v) => Value::Float(v),
                other => Value::Text(other.to_string()),
            };
            row.push(v);
        }
        rows.push(row);
    }
    Ok(Table { name, title, columns, rows })
}

/// What the trained model knew: per (account, credential), the origins it had and whether
/// each was familiar at the end of its range.
pub type ModelOrigins = HashMap<(String, String), HashMap<String, bool>>;

pub fn model_origins(dir: &Path) -> Result<ModelOrigins> {
    let m = exfilwatch::model::load(dir)?;
    let mut out: ModelOrigins = HashMap::new();
    for k in m.key_summaries(None, None) {
        let e = out.entry((k.account.clone(), k.credential.clone())).or_default();
        for o in k.origins {
            e.insert(o.origin, o.familiar);
        }
    }
    Ok(out)
}

/// Everything the investigation answers, in the order it prints them.
pub struct Answers {
    pub tables: Vec<Table>,
    /// For the report: the alert's window, to shade.
    pub alert: Option<AlertScope>,
    pub filters: Filters,
}

fn by_bytes_desc(t: &mut Table, tie: &[&str]) {
    let b = t.column("bytes");
    let ties: Vec<usize> = tie.iter().filter_map(|c| t.column(c)).collect();
    t.rows.sort_by(|x, y| {
        let key = |r: &Vec<Value>| match b.map(|i| &r[i]) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        };
        key(y).cmp(&key(x)).then_with(|| {
            ties.iter().map(|&i| cmp_value(&x[i], &y[i])).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        })
    });
}

fn cmp_value(a: &Value, b: &Value) -> std::cmp::Ordering {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) | (Time(x), Time(y)) => x.cmp(y),
        (Text(x), Text(y)) => x.cmp(y),
        (Float(x), Float(y)) => x.total_cmp(y),
        _ => format!("{a:?}").cmp(&format!("{b:?}")),
    }
}

/// Runs every query on the loaded requests.
pub fn investigate(
    df: &DataFrame,
    filters: &Filters,
    alert: Option<&AlertScope>,
    model: Option<&ModelOrigins>,
) -> Result<Answers> {
    let all = df.clone().lazy();
    // The rows of the filters other than time (the load added an alert's reach).
    let keyed = match filters.key_expr() {
        Some(e) => all.clone().filter(e),
        None => all.clone(),
    };
    let period = match filters.period_expr() {
        Some(e) => keyed.clone().filter(e),
        None => keyed.clone(),
    }
    .collect()?;
    let p = || period.clone().lazy();
    let mut tables = Vec::new();

    // Per credential.
    let creds = p()
        .group_by([col("account"), col("credential")])
        .agg([
            col("bytes").sum().alias("bytes"),
            len().alias("requests"),
            col("origin").n_unique().alias("origins"),
            col("t").min().alias("first_seen"),
            col("t").max().alias("last_seen"),
        ])
        .collect()?;
    let mut t = table_of("credentials", "Per credential".into(), &creds, &["first_seen", "last_seen"])?;
    by_bytes_desc(&mut t, &["account", "credential"]);
    tables.push(t);

    // Per origin, with its keys, user agents, operations and collections.
    let per_origin = p()
        .group_by([col("origin")])
        .agg([
            col("bytes").sum().alias("bytes"),
            len().alias("requests"),
            col("t").min().alias("first_seen"),
            col("t").max().alias("last_seen"),
            col("credential").n_unique().alias("credential_count"),
        ])
        .collect()?;
    let mut t = table_of("origins", "Per origin".into(), &per_origin, &["first_seen", "last_seen"])?;
    let lists = |what: &str| -> Result<HashMap<String, String>> {
        let df = p().group_by([col("origin"), col(what)]).agg([len().alias("n")]).collect()?;
        let rows = table_of("x", String::new(), &df, &[])?;
        let mut per: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        for r in rows.rows {
            if let (Value::Text(o), v, Value::Int(n)) = (&r[0], &r[1], &r[2]) {
                let v = match v {
                    Value::Text(s) if !s.is_empty() => s.clone(),
                    _ => "-".to_string(),
                };
                per.entry(o.clone()).or_default().push((*n, v));
            }
        }
        Ok(per
            .into_iter()
            .map(|(o, mut v)| {
                v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                let shown: Vec<String> = v.iter().take(5).map(|(n, s)| format!("{s} ({n})")).collect();
                let more = if v.len() > 5 { format!(", +{} more", v.len() - 5) } else { String::new() };
                (o, shown.join(", ") + &more)
            })
            .collect())
    };
    let (ua, ops, colls) = (lists("user_agent")?, lists("operation")?, lists("collection")?);
    // The keys of each origin, and what the model knew of it.
    let keys_df = p().group_by([col("origin"), col("account"), col("credential")]).agg([len().alias("n")]).collect()?;
    let keys = table_of("x", String::new(), &keys_df, &[])?;
    let mut origin_keys: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in &keys.rows {
        if let (Value::Text(o), Value::Text(a), Value::Text(c)) = (&r[0], &r[1], &r[2]) {
            origin_keys.entry(o.clone()).or_default().push((a.clone(), c.clone()));
        }
    }
    t.columns.extend(["credentials", "user_agents", "operations", "collections"].map(String::from));
    if model.is_some() {
        t.columns.push("model".into());
    }
    for row in &mut t.rows {
        let Value::Text(o) = row[0].clone() else { continue };
        let mut ks = origin_keys.get(&o).cloned().unwrap_or_default();
        ks.sort();
        let mut names: Vec<String> = ks.iter().map(|(a, c)| format!("{a}/{c}")).collect();
        names.sort();
        row.push(Value::Text(names.join(", ")));
        for l in [&ua, &ops, &colls] {
            row.push(Value::Text(l.get(&o).cloned().unwrap_or_default()));
        }
        if let Some(m) = model {
            let known: Vec<Option<bool>> =
                ks.iter().map(|k| m.get(k).and_then(|origins| origins.get(&o).copied())).collect();
            let familiar = known.iter().filter(|k| **k == Some(true)).count();
            let seen = known.iter().filter(|k| k.is_some()).count();
            let verdict = if familiar == known.len() && !known.is_empty() {
                "familiar"
            } else if seen == known.len() && !known.is_empty() {
                "known, not yet familiar"
            } else if seen > 0 {
                "known to some keys"
            } else {
                "new"
            };
            row.push(Value::Text(verdict.into()));
        }
    }
    by_bytes_desc(&mut t, &["origin"]);
    tables.push(t);

    // Hourly timeline of bytes per origin.
    let timeline = p()
        .with_column((col("t") - (col("t") % lit(HOUR))).alias("hour"))
        .group_by([col("hour"), col("origin")])
        .agg([col("bytes").sum().alias("bytes"), len().alias("requests")])
        .collect()?;
    let mut t = table_of("timeline", "Bytes per hour and origin".into(), &timeline, &["hour"])?;
    t.rows.sort_by(|a, b| cmp_value(&a[0], &b[0]).then_with(|| cmp_value(&a[1], &b[1])));
    tables.push(t);

    // Origins first seen in the period (over everything before it too).
    let first = keyed.clone().group_by([col("origin")]).agg([col("t").min().alias("first_seen")]).collect()?;
    let first = table_of("x", String::new(), &first, &["first_seen"])?;
    let mut t = Table {
        name: "first_seen",
        title: "Origins first seen in the period".into(),
        columns: ["origin", "first_seen", "bytes", "requests", "credentials"].map(String::from).to_vec(),
        rows: Vec::new(),
    };
    let origins_table = &tables[1];
    let (ob, orq, oc) = (
        origins_table.column("bytes").unwrap_or(1),
        origins_table.column("requests").unwrap_or(2),
        origins_table.column("credentials").unwrap_or(6),
    );
    for r in &first.rows {
        let (Value::Text(o), Value::Time(f)) = (&r[0], &r[1]) else { continue };
        if !filters.in_period(*f) {
            continue;
        }
        let in_period = origins_table.rows.iter().find(|x| x[0] == Value::Text(o.clone()));
        let (b, n, c) = match in_period {
            Some(x) => (x[ob].clone(), x[orq].clone(), x[oc].clone()),
            None => (Value::Int(0), Value::Int(0), Value::Text(String::new())),
        };
        t.rows.push(vec![Value::Text(o.clone()), Value::Time(*f), b, n, c]);
    }
    t.rows.sort_by(|a, b| cmp_value(&a[1], &b[1]).then_with(|| cmp_value(&a[0], &b[0])));
    tables.push(t);

    if let Some(a) = alert {
        // The alert's key from its origins: before, during and after its window.
        let origin_pred =
            a.origins.iter().map(|o| col("origin").eq(lit(o.clone()))).reduce(|x, y| x.or(y)).unwrap_or(lit(false));
        let key = all
            .clone()
            .filter(col("account").eq(lit(a.account.clone())).and(col("credential").eq(lit(a.credential.clone()))))
            .filter(origin_pred.clone());
        let phase = when(col("t").lt(lit(a.start)))
            .then(lit("before"))
            .when(col("t").lt_eq(lit(a.end)))
            .then(lit("during"))
            .otherwise(lit("after"))
            .alias("period");
        let w = key
            .with_column(phase)
            .group_by([col("period")])
            .agg([
                col("bytes").sum().alias("bytes"),
                len().alias("requests"),
                col("t").min().alias("first_seen"),
                col("t").max().alias("last_seen"),
            ])
            .collect()?;
        let got = table_of("x", String::new(), &w, &["first_seen", "last_seen"])?;
        let mut t = Table {
            name: "alert_window",
            title: format!("Alert {}: {} / {} from {}", a.id, a.account, a.credential, a.origins.join(", ")),
            columns: ["period", "bytes", "requests", "first_seen", "last_seen"].map(String::from).to_vec(),
            rows: Vec::new(),
        };
        for name in ["before", "during", "after"] {
            match got.rows.iter().find(|r| r[0] == Value::Text(name.into())) {
                Some(r) => t.rows.push(r.clone()),
                None => {
                    t.rows.push(vec![Value::Text(name.into()), Value::Int(0), Value::Int(0), Value::Null, Value::Null])
                }
            }
        }
        tables.push(t);
        // Every key and account the alert's origins touched.
        let reach = all
            .filter(origin_pred)
            .group_by([col("origin"), col("account"), col("credential")])
            .agg([
                col("bytes").sum().alias("bytes"),
                len().alias("requests"),
                col("t").min().alias("first_seen"),
                col("t").max().alias("last_seen"),
            ])
            .collect()?;
        let mut t = table_of(
            "alert_reach",
            "Every key the alert's origins touched".into(),
            &reach,
            &["first_seen", "last_seen"],
        )?;
        t.columns.push("alerted_key".into());
        for r in &mut t.rows {
            let same = r[1] == Value::Text(a.account.clone()) && r[2] == Value::Text(a.credential.clone());
            r.push(Value::Bool(same));
        }
        by_bytes_desc(&mut t, &["origin", "account", "credential"]);
        tables.push(t);
    }
    Ok(Answers { tables, alert: alert.cloned(), filters: filters.clone() })
}
