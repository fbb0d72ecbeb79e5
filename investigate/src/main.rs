//! `exfilwatch-investigate` (also run as `exfilwatch investigate`): forensics over Cosmos DB
//! diagnostic logs with polars. See the README's "Investigate" section.

use anyhow::{bail, Context, Result};
use clap::Parser;
use exfilwatch::config::Config;
use exfilwatch::export::Origins;
use exfilwatch::time::parse_timestamp;
use exfilwatch_investigate::{find_alert, investigate, load, model_origins, output, report, Cidr, Filters};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "exfilwatch investigate",
    version,
    about = "Which credentials read how much, from where, since when: per credential, per origin, hourly timeline, first-seen origins, an alert's before/during/after."
)]
struct Args {
    /// Files or directories, as for `replay` (JSON Lines, pre-2018 blobs, gzip, Log Analytics
    /// CSV/Parquet exports) and the Parquet file `exfilwatch export --to parquet` writes (the
    /// fastest: scanned lazily, only the columns and row groups needed).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Only this account (as in alerts: the account name, lower case).
    #[arg(long)]
    account: Option<String>,
    /// Only this credential (canonical form, e.g. key:primarymasterkey, aad:<principal>).
    #[arg(long)]
    credential: Option<String>,
    /// Only requests from this address.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Only requests from this network (e.g. 203.0.113.0/24).
    #[arg(long)]
    cidr: Option<Cidr>,
    /// The period starts here (RFC 3339); origins first seen before it are not "new".
    #[arg(long)]
    since: Option<String>,
    /// The period ends before this time.
    #[arg(long)]
    until: Option<String>,
    /// Investigate this alert (its `id`): its key by default, its origins before, during and
    /// after its window, and every key they touched. Needs --alerts.
    #[arg(long, requires = "alerts")]
    alert: Option<String>,
    /// The alerts file (JSON Lines, as `replay -o` writes it).
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// A trained model (`exfilwatch train`): the origins table says whether it knew each origin.
    #[arg(long)]
    model: Option<PathBuf>,
    /// How to print the answers: aligned tables, or csv/parquet (one file per table in --out,
    /// a directory), or one JSON document (stdout, or --out).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Where --format writes (a directory for csv and parquet, a file for json and text).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a self-contained HTML report with charts.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Configuration file (TOML): origins follow its detect.origin_granularity and prefixes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Threads for polars (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Csv,
    Parquet,
    Json,
}

fn time(flag: &str, s: &Option<String>) -> Result<Option<i64>> {
    s.as_deref()
        .map(|v| {
            parse_timestamp(v)
                .with_context(|| format!("--{flag} {v:?} is not a time (RFC 3339, e.g. 2021-08-17T00:00:00Z)"))
        })
        .transpose()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(&format!("\n  caused by: {cause}"));
                }
            }
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<()> {
    if let Some(n) = args.threads {
        // Read by polars when its thread pool starts, which is below.
        std::env::set_var("POLARS_MAX_THREADS", n.max(1).to_string());
    }
    if matches!(args.format, Format::Csv | Format::Parquet) && args.out.is_none() {
        bail!("--format csv and parquet write one file per table: give --out DIR");
    }
    let detect = match &args.config {
        Some(c) => Config::load(c)?.detect,
        None => Config::default().detect,
    };
    let origins = Origins {
        granularity: detect.origin_granularity,
        ipv4_prefix: detect.ipv4_prefix,
        ipv6_prefix: detect.ipv6_prefix,
    };
    let alert = match (&args.alert, &args.alerts) {
        (Some(id), Some(file)) => Some(find_alert(file, id)?),
        _ => None,
    };
    let filters = Filters {
        account: args.account.map(|a| a.to_ascii_lowercase()).or_else(|| alert.as_ref().map(|a| a.account.clone())),
        credential: args.credential.or_else(|| alert.as_ref().map(|a| a.credential.clone())),
        ip: args.ip.map(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        }),
        cidr: args.cidr,
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
    };
    let model = args.model.as_deref().map(model_origins).transpose()?;
    let df = load(&args.paths, &filters, alert.as_ref(), &origins)?;
    let answers = investigate(&df, &filters, alert.as_ref(), model.as_ref())?;
    if let Some(path) = &args.report {
        let title = match &alert {
            Some(a) => format!("exfilwatch investigation: alert {}", a.id),
            None => "exfilwatch investigation".to_string(),
        };
        std::fs::write(path, report::render(&answers, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    let doc = match args.format {
        Format::Csv | Format::Parquet => {
            let dir = args.out.as_deref().context("--out DIR")?;
            for p in output::write_dir(&answers.tables, dir, args.format == Format::Parquet)? {
                eprintln!("wrote {}", p.display());
            }
            return Ok(());
        }
        Format::Json => serde_json::to_string_pretty(&output::json(&answers.tables))? + "\n",
        Format::Text => output::terminal(&answers.tables),
    };
    match &args.out {
        Some(p) => std::fs::write(p, doc).with_context(|| format!("cannot write {}", p.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(doc.as_bytes()).and_then(|_| stdout.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(())
}
