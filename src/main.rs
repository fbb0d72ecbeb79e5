//! The `exfilwatch` command line: a thin layer over the library. Flags become validated
//! options here; the library never sees a command line.
//!
//! Exit codes: 0 ok; 1 runtime error (unreadable input, bad config, --strict); 2 usage;
//! 3 alerts of severity medium or higher with --fail-on-alert; 4 `replay` read no record at all.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use exfilwatch::config::{Config, DEFAULTS_TOML};
use exfilwatch::detect::{Allowlist, Detector, Suppressed, Verdict, VerdictKind};
use exfilwatch::formats::AlertFormat;
use exfilwatch::model::{self, KeySummary, Manifest};
use exfilwatch::replay::{replay_sharded, ReplayError, ReplayOptions, ReplayReport};
use exfilwatch::sinks::fanout::Fanout;
use exfilwatch::sinks::{AlertSink, JsonLinesSink};
use exfilwatch::telemetry::{Health, Metrics, Stats};
use exfilwatch::time::parse_timestamp;
use exfilwatch::units::human_bytes;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "exfilwatch", version, about = "Catches data theft from Azure Cosmos DB in its diagnostic logs.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Logs on stderr as readable text (coloured only on a terminal) or as JSON lines, one
    /// object per event, for log shippers.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Replay archived diagnostic logs through the detector and print the alerts.
    Replay(ReplayArgs),
    /// Learn baselines from archived logs and write them as a model directory (Parquet).
    Train(TrainArgs),
    /// Look into a trained model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The service: consume diagnostic logs from Kafka / Event Hubs and alert as they arrive.
    Run {
        /// Configuration file (TOML) with the [kafka], [sinks] and [service] sections.
        #[arg(long)]
        config: PathBuf,
        /// Start from this trained model when the state store holds no checkpoint yet
        /// (overrides `service.model`).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Which part of the pipeline to run (overrides `service.role`): `all` decodes and
        /// detects in one process; `rekey` decodes the raw topics onto the internal topic,
        /// partitioned by account; `detect` consumes the internal topic in a consumer group
        /// with state per partition (docs/scaling.md).
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
    /// Print or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Record an analyst's verdict on an alert: appended to the verdicts file, which `replay`
    /// (and `train`) merge into the stream at the alert's event time.
    Feedback(FeedbackArgs),
    /// Write the normalized events of everything replay reads (one row per request) as one
    /// Parquet file, for polars, DuckDB or `exfilwatch investigate`.
    Export(ExportArgs),
    /// Forensics over the logs (per credential, per origin, hourly timeline, first-seen
    /// origins, an alert's before/during/after, an HTML report): runs the separate
    /// `exfilwatch-investigate` binary (`cargo build --release -p exfilwatch-investigate`),
    /// found beside this one or on PATH; `exfilwatch investigate --help` lists its flags.
    #[command(disable_help_flag = true)]
    Investigate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Args)]
struct ExportArgs {
    /// Files, directories (walked recursively) or `-` for stdin, as for `replay`: JSON Lines,
    /// pre-2018 blobs, gzip, and Log Analytics exports (AzureDiagnostics or
    /// CDBDataPlaneRequests as CSV or Parquet).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The output format (`parquet`) and the file to write: `--to parquet OUT`.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "OUT"], required = true)]
    to: Vec<String>,
    /// Configuration file (TOML): the origin of an address follows `detect.origin_granularity`,
    /// `ipv4_prefix` and `ipv6_prefix`.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("judgement").required(true).args(["benign", "malicious"])))]
struct FeedbackArgs {
    /// The alert's id (the `id` field of the alert).
    alert_id: String,
    /// The alert was expected traffic: its origin becomes familiar for its key.
    #[arg(long)]
    benign: bool,
    /// The alert was theft: the origin stays unfamiliar forever and every further read from
    /// it raises `malicious_origin` (critical).
    #[arg(long)]
    malicious: bool,
    /// A note kept with the verdict (shown in `malicious_origin` alerts).
    #[arg(long, default_value = "")]
    note: String,
    /// The alerts file (JSON Lines, as `replay -o` or the file sink writes it) to find the alert in.
    #[arg(long)]
    alerts: PathBuf,
    /// The verdicts file to append to (default: `input.verdicts` of --config).
    #[arg(long)]
    verdicts: Option<PathBuf>,
    /// Configuration file (TOML), for `input.verdicts`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Who records the verdict (informational; default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Also (or, without --verdicts and input.verdicts, only) produce the verdict to
    /// `service.verdicts_topic` on the brokers of --config's [kafka].
    #[arg(long)]
    kafka: bool,
}

/// What `replay` and `train` read, and how.
#[derive(Args)]
struct InputArgs {
    /// Files, directories (walked recursively) or `-` for stdin; gzip is read transparently.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Configuration file (TOML); `exfilwatch config defaults` prints every key.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only records at or after this event time (RFC 3339, e.g. 2021-08-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only records before this event time.
    #[arg(long)]
    until: Option<String>,
    /// Write malformed records (reason, location, text) to this JSON Lines file.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Stop with exit code 1 at the first malformed record.
    #[arg(long)]
    strict: bool,
    /// Analysts' verdicts (JSON Lines, `exfilwatch feedback`) merged into the stream by event
    /// time (default: `input.verdicts` of --config).
    #[arg(long)]
    verdicts: Option<PathBuf>,
    /// No summary on stderr at the end, and no progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Threads to decode and detect on (default: `input.threads` of --config, 0 there meaning
    /// one per available core). The output is the same for every value.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Write alerts (JSON Lines) here instead of stdout (`-`: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Start from this trained model (`exfilwatch train`): no learning period for the
    /// accounts it covers. Without --config, the model's own [detect] settings are used.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Exit with code 3 when any alert of severity medium or higher was raised.
    #[arg(long)]
    fail_on_alert: bool,
    /// Write only alerts of this severity or higher (info, low, medium, high, critical); the
    /// summary still counts every alert.
    #[arg(long, value_enum, default_value = "info")]
    min_severity: SeverityArg,
    /// Write only the alerts of this account (repeatable).
    #[arg(long = "account", value_name = "NAME")]
    accounts: Vec<String>,
    /// `native` (exfilwatch's JSON Lines, the default; `json` is the same), `ocsf` (OCSF 1.8.0
    /// Detection Findings), `ecs` (Elastic Common Schema 9.4 documents), one per line, or
    /// `text` (one readable line per alert: `[critical] rule account/credential: summary`).
    #[arg(long, value_enum, default_value = "native")]
    format: OutputFormat,
    /// Write the run's counters in the Prometheus text format to this file at the end (for
    /// node_exporter's textfile collector); written to a temporary file and renamed.
    #[arg(long)]
    metrics_textfile: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address while the replay runs (e.g.
    /// 127.0.0.1:9464; port 0 picks a free one, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
}

/// `replay --metrics-addr`: the service's endpoints, served by a small runtime beside the
/// (synchronous) replay, fed from its progress callback.
struct LiveMetrics {
    metrics: Metrics,
    health: std::sync::Arc<Health>,
    /// Runs the endpoint; dropped (and the endpoint closed) when the replay ends.
    _runtime: tokio::runtime::Runtime,
}

impl LiveMetrics {
    fn start(addr: &str) -> Result<(LiveMetrics, std::net::SocketAddr)> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let metrics = Metrics::new().context("cannot register metrics")?;
        let health = std::sync::Arc::new(Health::standalone());
        let bound =
            runtime.block_on(exfilwatch::telemetry::http::serve(addr, health.clone(), metrics.registry.clone()))?;
        Ok((LiveMetrics { metrics, health, _runtime: runtime }, bound))
    }

    fn publish(&mut self, s: &Stats) {
        self.metrics.publish(s);
        self.health.progress(0, s.records_total(), s.alerts.values().sum());
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The model directory to write (e.g. models/NAME); an existing model there is replaced.
    #[arg(long)]
    out: PathBuf,
    /// Continue this model with the logs given (roll a model forward with newer logs without
    /// reading the old ones again; --out may name the same directory). Without --config, the
    /// model's own [detect] settings are used.
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// A key's familiar origins and typical volume, as a table or JSON.
    Inspect {
        /// The model directory.
        model: PathBuf,
        /// Only this account (lower case, as in alerts).
        #[arg(long)]
        account: Option<String>,
        /// Only this credential (canonical form, e.g. key:primarymasterkey).
        #[arg(long)]
        credential: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration as commented TOML.
    Defaults,
    /// Validate a configuration file.
    Check { file: PathBuf },
}

/// A command line that asks for something impossible (exit code 2, as clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour only for a terminal (and never with NO_COLOR): log files and shippers get plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter());
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ReplayError::Sink(s)) = e.downcast_ref::<ReplayError>() {
                if s.is_broken_pipe() {
                    return ExitCode::SUCCESS;
                }
            }
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                // A message that already quotes its cause is not followed by it again.
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(&format!("\n  caused by: {cause}"));
                }
            }
            eprintln!("{msg}");
            if e.downcast_ref::<UsageError>().is_some() {
                return ExitCode::from(2);
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config(ConfigCommand::Defaults) => {
            print!("{DEFAULTS_TOML}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { file }) => {
            // The same checks `run` makes at start (URLs, spans, what a role needs).
            Config::load(&file)?.options(&file.display().to_string())?;
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => run_replay(args),
        Command::Train(args) => run_train(args),
        Command::Model(ModelCommand::Inspect { model, account, credential, format }) => {
            inspect(&model, account.as_deref(), credential.as_deref(), format)
        }
        Command::Run { config, model, role } => run_service(&config, model, role),
        Command::Feedback(args) => run_feedback(args),
        Command::Export(args) => run_export(args),
        Command::Investigate { args } => run_investigate(args),
    }
}

fn run_export(args: ExportArgs) -> Result<ExitCode> {
    use exfilwatch::export::{export_parquet, Origins};
    let [format, out] = args.to.as_slice() else {
        return Err(UsageError("--to takes a format and a file: --to parquet OUT".into()).into());
    };
    if !format.eq_ignore_ascii_case("parquet") {
        return Err(UsageError(format!("--to {format}: the only export format is parquet")).into());
    }
    let out = PathBuf::from(out);
    let detect = match &args.config {
        Some(c) => Config::load(c)?.detect,
        None => Config::default().detect,
    };
    let origins = Origins {
        granularity: detect.origin_granularity,
        ipv4_prefix: detect.ipv4_prefix,
        ipv6_prefix: detect.ipv6_prefix,
    };
    let (summary, rows) = export_parquet(&args.paths, &out, origins)?;
    eprintln!(
        "wrote {rows} events to {} ({} records of other categories skipped, {} malformed)",
        out.display(),
        summary.skipped,
        summary.malformed
    );
    if let Some(m) = &summary.first_malformed {
        eprintln!("first malformed record: {m}");
    }
    for f in &summary.faults {
        eprintln!("{}: {}: {}", f.reason, f.location, f.error);
    }
    // As replay: input that could not be read whole is exit code 5.
    Ok(if summary.faults.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(5) })
}

/// `exfilwatch investigate ...`: the polars binary, beside this one or on PATH.
fn run_investigate(args: Vec<std::ffi::OsString>) -> Result<ExitCode> {
    const NAME: &str = "exfilwatch-investigate";
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join(NAME))).filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(NAME));
    let status = match std::process::Command::new(&program).args(&args).status() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError(format!(
                "exfilwatch investigate needs the {NAME} binary (polars), not found beside {} nor on PATH: \
                 build it with `cargo build --release --locked -p exfilwatch-investigate`",
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
            ))
            .into())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot run {}", program.display())),
    };
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}

/// `replay --min-severity`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for exfilwatch::alert::Severity {
    fn from(s: SeverityArg) -> Self {
        use exfilwatch::alert::Severity;
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

/// `replay --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    /// exfilwatch's own JSON, one alert per line (README "Alert format").
    #[value(alias = "json")]
    Native,
    /// OCSF 1.8.0 Detection Findings, one per line.
    Ocsf,
    /// Elastic Common Schema 9.4 documents, one per line.
    Ecs,
    /// One readable line per alert.
    Text,
}

/// `run --role`: the command line's names for [`exfilwatch::config::Role`] (clap stays out of
/// the library).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RoleArg {
    All,
    Rekey,
    Detect,
}

impl From<RoleArg> for exfilwatch::config::Role {
    fn from(r: RoleArg) -> Self {
        use exfilwatch::config::Role;
        match r {
            RoleArg::All => Role::All,
            RoleArg::Rekey => Role::Rekey,
            RoleArg::Detect => Role::Detect,
        }
    }
}

fn run_service(config: &std::path::Path, model: Option<PathBuf>, role: Option<RoleArg>) -> Result<ExitCode> {
    let mut cfg = Config::load(config)?;
    if let Some(m) = model {
        cfg.service.model = m.display().to_string();
    }
    if let Some(r) = role {
        cfg.service.role = r.into();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // The handlers are installed now, before the service connects and restores its state: a
    // signal during start-up is a clean stop too, not the default action's kill.
    let shutdown = {
        let _rt = rt.enter();
        shutdown_signal()?
    };
    let stats = rt.block_on(exfilwatch::service::run(cfg, shutdown))?;
    let alerts: u64 = stats.alerts.values().sum();
    let d = &stats.detector;
    tracing::info!(
        message = "Stopped.",
        records = stats.records_total(),
        events = d.events,
        late = d.late_events,
        alerts
    );
    Ok(ExitCode::SUCCESS)
}

/// Catches SIGINT and SIGTERM from now on (inside a runtime); the future completes on the
/// first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

fn event_time(flag: &str, v: &Option<String>) -> Result<Option<i64>> {
    v.as_deref()
        .map(|s| {
            parse_timestamp(s)
                .ok_or_else(|| UsageError(format!("--{flag} `{s}` is not a time like 2021-08-01T00:00:00Z")).into())
        })
        .transpose()
}

/// The configuration and replay options of `replay` and `train`.
fn input_options(args: &InputArgs) -> Result<(Config, ReplayOptions)> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if args.strict {
        cfg.input.strict = true;
    }
    let dead_letter = args
        .dead_letter
        .clone()
        .or_else(|| (!cfg.input.dead_letter.is_empty()).then(|| PathBuf::from(&cfg.input.dead_letter)));
    let verdicts =
        args.verdicts.clone().or_else(|| (!cfg.input.verdicts.is_empty()).then(|| PathBuf::from(&cfg.input.verdicts)));
    let (since, until) = (event_time("since", &args.since)?, event_time("until", &args.until)?);
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(UsageError(format!(
                "--since {} is not before --until {}: no record could be read",
                args.since.as_deref().unwrap_or_default(),
                args.until.as_deref().unwrap_or_default()
            ))
            .into());
        }
    }
    let opts = ReplayOptions {
        verdicts,
        inputs: args.paths.clone(),
        since,
        until,
        dead_letter,
        strict: cfg.input.strict,
        // The progress line only on a terminal, and not with -q.
        progress_every: (std::io::stderr().is_terminal() && !args.quiet).then_some(Duration::from_millis(250)),
        threads: match args.threads.unwrap_or(cfg.input.threads) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
    };
    Ok((cfg, opts))
}

fn progress_line(s: &Stats, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let alerts: u64 = s.alerts.values().sum();
    eprint!(
        "\r\x1b[2K{} records ({:.0}/s), {} of logs, {} alerts",
        s.records_total(),
        s.records_total() as f64 / secs,
        human_bytes(s.input_bytes),
        alerts
    );
}

fn run_replay(args: ReplayArgs) -> Result<ExitCode> {
    let (cfg, mut opts) = input_options(&args.input)?;
    let terminal = opts.progress_every.is_some();
    let mut live = match &args.metrics_addr {
        Some(addr) => {
            let (live, bound) = LiveMetrics::start(addr).with_context(|| {
                format!("--metrics-addr `{addr}`: expected HOST:PORT, e.g. 127.0.0.1:9464 (port 0 picks a free one)")
            })?;
            // A port the system picked is printed even with -q: nothing else says which it is.
            if !args.input.quiet || addr.ends_with(":0") {
                eprintln!("exfilwatch replay: serving /metrics, /healthz, /readyz on http://{bound}");
            }
            opts.progress_every = Some(Duration::from_millis(250));
            Some(live)
        }
        None => None,
    };
    let detector = match &args.model {
        // Without --config the model's own [detect] settings; with it, the file's.
        Some(dir) => {
            let (d, manifest) = model::load_detector(dir, args.input.config.is_some().then_some(&cfg.detect))?;
            if !args.input.quiet {
                eprintln!("{}", model_line(dir, &manifest));
                // Records the model has seen would be counted again (as late records).
                let r = &manifest.event_time;
                let end = r.until.as_deref().or(r.last.as_deref());
                if let Some(end) = end.filter(|e| opts.since.is_none_or(|s| parse_timestamp(e).is_some_and(|e| s < e)))
                {
                    eprintln!(
                        "note: the model covers event time up to {end}; pass --since {end} to read only what follows"
                    );
                }
            }
            d
        }
        None => Detector::new(cfg.detect.clone()),
    };
    // The allowlist comes from the configuration, never from the model.
    let mut detector = detector.with_allowlist(Allowlist::compile(&cfg.allow).map_err(anyhow::Error::msg)?);
    // So is the enrichment.
    if !cfg.enrich.is_empty() {
        let e = exfilwatch::enrich::Enrichment::load(&cfg.enrich).context("[enrich]")?;
        detector.set_enrichment(Some(std::sync::Arc::new(e)));
    }
    let (out, target): (Box<dyn std::io::Write + Send>, String) =
        match args.output.as_ref().filter(|p| p.as_os_str() != "-") {
            Some(p) => {
                let f =
                    exfilwatch::secure::create_private(p).with_context(|| format!("cannot create {}", p.display()))?;
                (Box::new(std::io::BufWriter::new(f)), p.display().to_string())
            }
            None => (Box::new(std::io::BufWriter::new(std::io::stdout())), "stdout".to_string()),
        };
    let sink: Box<dyn AlertSink> = match args.format {
        OutputFormat::Native => Box::new(JsonLinesSink::new(out, target)),
        OutputFormat::Ocsf => Box::new(JsonLinesSink::new(out, target).with_format(AlertFormat::Ocsf)),
        OutputFormat::Ecs => Box::new(JsonLinesSink::new(out, target).with_format(AlertFormat::Ecs)),
        OutputFormat::Text => Box::new(exfilwatch::sinks::text::TextSink::new(out, target)),
    };
    let sink = exfilwatch::sinks::filter::Filtered::new(sink, args.min_severity.into(), &args.accounts);
    let mut sink = Fanout::one(sink, cfg.detect.realert.0);
    let progress = |s: &Stats, elapsed: Duration| {
        if let Some(live) = live.as_mut() {
            live.publish(s);
        }
        if terminal {
            progress_line(s, elapsed);
        }
    };
    let result = replay_sharded(&cfg, &opts, detector, &mut sink, progress);
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let report = result?;
    if let Some(live) = live.as_mut() {
        live.publish(&report.stats);
    }
    if let Some(path) = &args.metrics_textfile {
        let mut metrics = Metrics::new().context("cannot register metrics")?;
        metrics.publish(&report.stats);
        exfilwatch::state::write_atomically_readable(path, &[metrics.render().as_bytes()])
            .with_context(|| format!("cannot write metrics to {}", path.display()))?;
    }
    if !args.input.quiet {
        print_summary("replay", &report);
        let held = report.stats.detector.alerts_suppressed_learning;
        if held > 0 && args.model.is_none() {
            eprintln!(
                "note: {held} alerts were held back by the learning period (detect.learning_period, {}): an account \
                 raises nothing until observed that long; start from a model of earlier logs (--model) to judge from \
                 the first record",
                exfilwatch::units::human_span(cfg.detect.learning_period.0)
            );
        }
    }
    if let Some(code) = incomplete_input(&report) {
        return Ok(code);
    }
    if report.stats.records_total() == 0 {
        // A security tool that read nothing says so, even with -q.
        eprintln!(
            "warning: no record was read from {} (no log file there, or only empty ones): nothing was checked",
            args.input.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
        return Ok(ExitCode::from(4));
    }
    if args.fail_on_alert && report.alerts_medium_or_higher > 0 {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code 5 (and a warning, even with -q) when files could not be read whole: the results
/// cover only what was read. It outranks 3 and 4: a script must know the input was incomplete.
fn incomplete_input(r: &ReplayReport) -> Option<ExitCode> {
    let first = r.faults.first()?;
    let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in &r.faults {
        *by_reason.entry(f.reason.code()).or_default() += 1;
    }
    let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    eprintln!(
        "warning: the input is incomplete: {} file(s) or directories could not be read whole ({}), e.g. {}: {}; \
         the results cover only what was read (the records before any damage were used)",
        r.faults.len(),
        reasons.join(", "),
        first.location,
        first.error
    );
    Some(ExitCode::from(5))
}

fn print_summary(what: &str, r: &ReplayReport) {
    let s = &r.stats;
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let total = s.records_total();
    out.push_str(&format!(
        "exfilwatch {what}: {total} records in {:.2} s ({:.0} records/s, {}/s of logs)\n",
        secs,
        total as f64 / secs,
        human_bytes((s.input_bytes as f64 / secs) as u64)
    ));
    let list = |m: Vec<(String, u64)>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        }
    };
    out.push_str(&format!(
        "  records by category: {}\n",
        list(s.records.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    ));
    out.push_str(&format!(
        "  skipped (other categories): {}\n",
        list(s.skipped.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    ));
    out.push_str(&format!("  malformed: {}\n", list(s.malformed.iter().map(|(k, v)| (k.to_string(), *v)).collect())));
    let d = &s.detector;
    out.push_str(&format!(
        "  requests: {} ({} failed, {} late, {} without a client IP, {} outside --since/--until); data read by them: {}\n",
        d.events,
        d.failed_requests,
        d.late_events,
        d.without_ip,
        s.out_of_range,
        human_bytes(s.response_bytes)
    ));
    out.push_str(&format!(
        "  state: {} keys, {} (key, origin) pairs, about {}; {} origins evicted, {} expired; keys evicted: {}\n",
        d.keys_tracked,
        d.origins_tracked,
        human_bytes(d.state_bytes()),
        d.origins_evicted,
        d.origins_expired,
        d.keys_evicted
    ));
    let suppressed: Vec<(String, u64)> = [("learning", d.alerts_suppressed_learning)]
        .into_iter()
        .chain(Suppressed::REASONS.into_iter().zip(d.suppressed.counts()))
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_string(), n))
        .collect();
    out.push_str(&format!("  alerts suppressed: {}\n", list(suppressed)));
    if d.verdicts_applied > 0 || s.verdicts_malformed > 0 {
        out.push_str(&format!(
            "  verdicts: {} applied, {} malformed (set aside)\n",
            d.verdicts_applied, s.verdicts_malformed
        ));
    }
    out.push_str(&format!(
        "  alerts: {}\n",
        list(s.alerts.iter().map(|((rule, sev), v)| (format!("{rule}/{sev}"), *v)).collect())
    ));
    if let Some(kib) = peak_memory_kib() {
        out.push_str(&format!("  peak memory: {} ({kib} KiB)\n", human_bytes(kib << 10)));
    }
    let _ = std::io::stderr().write_all(out.as_bytes());
}

/// This process's peak resident memory (Linux: `VmHWM` of /proc/self/status), if known.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.split_whitespace().next()?.parse().ok()
}

fn model_line(dir: &std::path::Path, m: &Manifest) -> String {
    let r = &m.event_time;
    format!(
        "model {}: format {}, event time {} to {}{}; {} accounts, {} keys, {} origins",
        dir.display(),
        m.format_version,
        r.first.as_deref().unwrap_or("-"),
        r.last.as_deref().unwrap_or("-"),
        r.until.as_deref().map(|u| format!(" (trained --until {u})")).unwrap_or_default(),
        m.counts.accounts,
        m.counts.keys,
        m.counts.origins
    )
}

fn run_train(args: TrainArgs) -> Result<ExitCode> {
    let (mut cfg, opts) = input_options(&args.input)?;
    let start = match &args.model {
        Some(dir) => {
            let (d, manifest) = model::load_detector(dir, args.input.config.is_some().then_some(&cfg.detect))?;
            // The model's settings go on unless --config says otherwise.
            cfg.detect = d.config().clone();
            if !args.input.quiet {
                eprintln!("{}", model_line(dir, &manifest));
                let r = &manifest.event_time;
                if let Some(end) = r.until.as_deref().or(r.last.as_deref()) {
                    if opts.since.is_none_or(|s| parse_timestamp(end).is_some_and(|e| s < e)) {
                        eprintln!(
                            "note: the model covers event time up to {end}; records before it are counted again (as \
                             late); pass --since {end} to read only what follows"
                        );
                    }
                }
            }
            Some(d)
        }
        None => None,
    };
    let result = exfilwatch::replay::train(&cfg, &opts, start, &args.out, progress_line);
    if opts.progress_every.is_some() {
        eprint!("\r\x1b[2K");
    }
    let (manifest, report) = result?;
    if !args.input.quiet {
        print_summary("train", &report);
        let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
        eprintln!("{}; {} in {} files", model_line(&args.out, &manifest), human_bytes(bytes), manifest.files.len() + 1);
    }
    if let Some(code) = incomplete_input(&report) {
        return Ok(code);
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(dir: &std::path::Path, account: Option<&str>, credential: Option<&str>, format: Format) -> Result<ExitCode> {
    let m = model::load(dir)?;
    let keys = m.key_summaries(account, credential);
    if keys.is_empty() {
        let mut accounts: Vec<&str> = m.state.accounts.iter().map(|a| a.account.as_str()).collect();
        accounts.dedup();
        anyhow::bail!(
            "no key of the model matches{}{} (its accounts: {})",
            account.map(|a| format!(" --account {a}")).unwrap_or_default(),
            credential.map(|c| format!(" --credential {c}")).unwrap_or_default(),
            accounts.join(", ")
        );
    }
    let text = match format {
        Format::Json => {
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                manifest: &'a Manifest,
                keys: &'a [KeySummary],
            }
            serde_json::to_string_pretty(&Doc { manifest: &m.manifest, keys: &keys })? + "\n"
        }
        Format::Table => {
            let mut out = model_line(dir, &m.manifest) + "\n";
            for k in &keys {
                out.push_str(&key_table(k, &m.manifest));
            }
            out
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn key_table(k: &KeySummary, m: &Manifest) -> String {
    let mut out = format!("\n{} / {}\n", k.account, k.credential);
    let span = if k.days_observed < 1.0 {
        "less than a day of history".to_string()
    } else {
        format!("{} days, {} with reads", k.days_observed, k.days_with_reads)
    };
    out.push_str(&format!("  seen {} to {} ({span})\n", k.first_seen, k.last_seen));
    let threshold = match k.volume_threshold_bytes {
        Some(t) => format!(
            "volume_anomaly from {} within {}",
            human_bytes(t),
            exfilwatch::units::human_span(m.config.volume_window.0)
        ),
        None => format!("volume_anomaly not judging yet (needs {} days with reads)", m.config.volume_min_history_days),
    };
    if k.days_with_reads == 0 {
        // No finished day yet: a typical hour or peak of 0 B would read as "reads nothing".
        out.push_str(&format!("  typical: not known yet (no finished day with reads); {threshold}\n"));
    } else {
        out.push_str(&format!(
            "  typical: {}/h, daily peak {}; {}\n",
            human_bytes(k.typical_hourly_bytes),
            human_bytes(k.typical_peak_bytes),
            threshold
        ));
    }
    if !k.daily.is_empty() {
        let days: Vec<String> = k
            .daily
            .iter()
            .rev()
            .take(7)
            .rev()
            .map(|d| format!("{} {}", d.day.get(5..).unwrap_or(&d.day), human_bytes(d.peak_bytes)))
            .collect();
        out.push_str(&format!("  daily peaks (newest {}): {}\n", days.len(), days.join(", ")));
    }
    out.push_str(&format!("  origins: {} familiar of {}\n", k.familiar_origins, k.origins.len()));
    let rows: Vec<[String; 6]> = k
        .origins
        .iter()
        .map(|o| {
            [
                o.origin.clone(),
                if o.familiar { "yes" } else { "new" }.to_string(),
                o.first_seen.clone(),
                o.last_seen.clone(),
                human_bytes(o.bytes),
                o.requests.to_string(),
            ]
        })
        .collect();
    let head = ["origin", "familiar", "first seen", "last seen", "bytes", "requests"].map(String::from);
    let mut width = head.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        let cells: Vec<String> = r.iter().zip(width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(&format!("    {}\n", cells.join("  ").trim_end()));
    }
    out
}

fn run_feedback(args: FeedbackArgs) -> Result<ExitCode> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let path =
        args.verdicts.clone().or_else(|| (!cfg.input.verdicts.is_empty()).then(|| PathBuf::from(&cfg.input.verdicts)));
    if path.is_none() && !args.kafka {
        anyhow::bail!("no verdicts file: pass --verdicts FILE (or set input.verdicts in --config) and/or --kafka");
    }
    if args.kafka && cfg.service.verdicts_topic.is_empty() {
        anyhow::bail!("--kafka needs service.verdicts_topic in --config");
    }
    let kind = if args.malicious { VerdictKind::Malicious } else { VerdictKind::Benign };
    let alert = exfilwatch::feedback::find_alert(&args.alerts, &args.alert_id)?;
    let by = args.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let verdicts = Verdict::from_alert(&alert, kind, &args.note, &by, &exfilwatch::time::format_rfc3339(now))?;
    let mut to = Vec::new();
    if let Some(path) = &path {
        exfilwatch::feedback::append_verdicts(path, &verdicts)?;
        to.push(path.display().to_string());
    }
    if args.kafka {
        let topic = &cfg.service.verdicts_topic;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(exfilwatch::feedback::produce_verdicts(&cfg.kafka, topic, &verdicts))?;
        to.push(format!("topic {topic}"));
    }
    let origins: Vec<&str> = verdicts.iter().map(|v| v.origin.as_str()).collect();
    eprintln!(
        "{} verdict on alert {} ({}, {} / {}, origin {}) from {}: written to {}",
        kind.as_str(),
        alert.id,
        alert.rule,
        alert.account,
        alert.credential,
        origins.join(", "),
        alert.trigger_event_time,
        to.join(" and ")
    );
    Ok(ExitCode::SUCCESS)
}
