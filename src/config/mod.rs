//! Configuration: the TOML file, its defaults, and validation with helpful messages. The raw
//! file ([`Config`]) is what `config defaults` prints and `--config` reads; what a run uses is
//! [`Options`] (`options.rs`), checked once at start.
//!
//! Every field has a doc comment; `exfilwatch config defaults` prints [`DEFAULTS_TOML`], which
//! a test keeps equal to `Config::default()`. Unknown keys are rejected with the nearest valid
//! name.

mod options;

pub use options::{
    AlertmanagerEndpoint, HttpTlsAuth, Options, ServiceOptions, SinkOptions, StateStoreOptions, WebhookEndpoint,
};

use crate::secure::secret_from;
use crate::units::{ByteSize, Span};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// How a client IP becomes an origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginGranularity {
    /// The exact address.
    Ip,
    /// The network prefix (`ipv4_prefix`, `ipv6_prefix`).
    Prefix,
    /// The autonomous system (from `[enrich]`'s `asn_tsv` or `asn_mmdb`) for addresses whose
    /// AS is known; the network prefix for the others. For keys used from clouds that change
    /// addresses all day: fewer false alarms, but a theft from inside an AS the key already
    /// uses (another tenant of the same cloud) is no longer unfamiliar.
    Asn,
}

impl OriginGranularity {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginGranularity::Ip => "ip",
            OriginGranularity::Prefix => "prefix",
            OriginGranularity::Asn => "asn",
        }
    }
}

/// Which part of the pipeline `exfilwatch run` runs (scale-out: docs/scaling.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Decode and detect in one process, no internal topic (one machine).
    #[default]
    All,
    /// Consume the raw topics, decode, and produce normalized events to the internal topic,
    /// partitioned by account.
    Rekey,
    /// Consume the internal topic in a consumer group, with detector state per partition.
    Detect,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Rekey => "rekey",
            Role::Detect => "detect",
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub detect: DetectConfig,
    pub input: InputConfig,
    pub kafka: KafkaConfig,
    pub sinks: SinksConfig,
    pub service: ServiceConfig,
    pub allow: AllowConfig,
    /// `[enrich]`: who owns an address (ASN, country, Azure service tags) and threat lists.
    pub enrich: crate::enrich::EnrichConfig,
}

/// `[detect]`: the rules and their thresholds. All times are event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// "prefix" (default), "ip" or "asn": what counts as one origin ("asn" needs
    /// `enrich.asn_tsv` or `enrich.asn_mmdb`; addresses of no known AS fall back to the prefix).
    pub origin_granularity: OriginGranularity,
    /// IPv4 prefix length of an origin at prefix granularity.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length of an origin at prefix granularity.
    pub ipv6_prefix: u8,
    /// An origin stays unfamiliar to a key for this long after its first successful request.
    pub familiar_after: Span,
    /// An origin (or key) unused for this long is forgotten; also the span of volume history.
    pub history_window: Span,
    /// An account raises no alert until it has been observed this long.
    pub learning_period: Span,
    /// Bytes read from unfamiliar origins that make an alert.
    pub unfamiliar_bytes: ByteSize,
    /// Sliding window of the `unfamiliar_origins_aggregate` rule.
    pub aggregate_window: Span,
    /// `critical` once bytes reach this multiple of the threshold; escalations at each power.
    pub escalation_factor: u64,
    /// A read-write master key passing the threshold within this span of the origin's first
    /// request is `critical`.
    pub critical_fast_window: Span,
    /// Enables `volume_anomaly`.
    pub volume_anomaly: bool,
    /// Sliding window over which a key's read volume is measured.
    pub volume_window: Span,
    /// `volume_anomaly` never fires below this many bytes in the window.
    pub volume_min_bytes: ByteSize,
    /// ... nor below this multiple of the highest daily peak in the key's history.
    pub volume_min_ratio: f64,
    /// ... and always at or below this multiple of it: a read this many times above anything
    /// the key did (and above `volume_min_bytes`) fires however noisy its history.
    pub volume_max_ratio: f64,
    /// One-sided p-value under the key's own peak distribution (Student's t on log bytes).
    pub volume_p_value: f64,
    /// Days of history (with reads) a key needs before `volume_anomaly` can judge it.
    pub volume_min_history_days: u32,
    /// Floor on the spread of log daily peaks, so a very regular key is not over-sensitive.
    pub volume_min_log_spread: f64,
    /// Enables `new_origin` (severity info): first use of an origin by a key.
    pub new_origin: bool,
    /// One alert per (rule, key, origin) until this much event time has passed.
    pub realert: Span,
    /// Records this much older than the newest of their account are still ordered exactly.
    pub max_out_of_order: Span,
    /// A record stamped more than this ahead of the newest plausible event time (the wall
    /// clock in `run`, the stream's progress in `replay`) is set aside as `future_time`.
    pub max_clock_skew: Span,
    /// Origins remembered per key; the least recently seen are evicted beyond it.
    pub max_origins_per_key: usize,
    /// `origin_spray` (high): more than this many new origins for one key within an hour of
    /// event time. 0: off.
    pub spray_origins: u64,
    /// Bound of the detector's state (its estimate, [`crate::detect::DetectorStats::state_bytes`]):
    /// past it the least recently seen keys are evicted down to 90% of it. 0: no bound.
    pub max_state_bytes: ByteSize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        const H: i64 = crate::time::HOUR;
        DetectConfig {
            origin_granularity: OriginGranularity::Prefix,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            familiar_after: Span(24 * H),
            history_window: Span(30 * 24 * H),
            learning_period: Span(7 * 24 * H),
            unfamiliar_bytes: ByteSize(1 << 30),
            aggregate_window: Span(H),
            escalation_factor: 10,
            critical_fast_window: Span(H),
            volume_anomaly: true,
            volume_window: Span(H),
            volume_min_bytes: ByteSize(1 << 30),
            volume_min_ratio: 2.0,
            volume_max_ratio: 10.0,
            volume_p_value: 0.001,
            volume_min_history_days: 3,
            volume_min_log_spread: 0.3,
            new_origin: false,
            realert: Span(24 * H),
            max_out_of_order: Span(10 * crate::time::MINUTE),
            max_clock_skew: Span(H),
            max_origins_per_key: 10_000,
            spray_origins: 1000,
            max_state_bytes: ByteSize(2 << 30),
        }
    }
}

/// `[allow]`: traffic that never alerts (it is still learned and counted). Each entry may
/// expire (`until`, compared with the alert's event time) and carries a comment. Which alert
/// an entry suppresses: README, "Triage: allowlists and verdicts".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowConfig {
    /// Networks (IPv4 or IPv6 CIDR; an IPv4-mapped IPv6 address matches its IPv4 network).
    pub cidrs: Vec<AllowCidr>,
    /// Credentials in their canonical form, as alerts show them (`key:primarymasterkey`,
    /// `aad:<object id>`); compared without regard to ASCII case.
    pub credentials: Vec<AllowCredential>,
    /// User-agent prefixes, compared without regard to ASCII case.
    pub user_agents: Vec<AllowUserAgent>,
}

/// One `[allow] cidrs` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowCidr {
    pub cidr: String,
    /// RFC 3339; the entry applies to alerts whose event time is before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// One `[allow] credentials` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowCredential {
    pub credential: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// One `[allow] user_agents` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowUserAgent {
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

/// `[input]`: how records are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Stop with an error at the first malformed record instead of setting it aside.
    pub strict: bool,
    /// File (JSON Lines) that receives malformed records with their reason and location;
    /// empty for none.
    pub dead_letter: String,
    /// A multi-line JSON document (a pre-2018 blob) larger than this is set aside.
    pub max_document_bytes: ByteSize,
    /// Analysts' verdicts on alerts (JSON Lines, `exfilwatch feedback` appends to it): `replay`
    /// merges them into the stream by event time; empty for none.
    pub verdicts: String,
    /// Threads `replay` decodes and detects on (and `train` decodes on); 0: one per available
    /// core. The output is the same for every value.
    pub threads: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            strict: false,
            dead_letter: String::new(),
            max_document_bytes: ByteSize(512 << 20),
            verdicts: String::new(),
            threads: 0,
        }
    }
}

/// `[kafka]`: where `exfilwatch run` reads diagnostic logs (Event Hubs speaks Kafka).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`; Event Hubs: `<namespace>.servicebus.windows.net:9093`.
    pub bootstrap_servers: String,
    /// Topics to consume; a name starting with `^` is a regular expression.
    pub topics: Vec<String>,
    /// Consumer group: instances with the same group share the partitions.
    pub group_id: String,
    /// Static group membership (Kafka's `group.instance.id`): a stable name per instance, so
    /// that a restarted instance takes its partitions back at once instead of waiting for the
    /// broker to expire its former self. `${VAR}` is replaced by the environment variable
    /// (Kubernetes StatefulSet: `"${POD_NAME}"`). Empty: dynamic membership.
    pub instance_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (Event Hubs: `sasl_ssl`).
    pub security_protocol: String,
    /// SASL mechanism (Event Hubs: `PLAIN`); empty for none.
    pub sasl_mechanism: String,
    /// SASL user name (Event Hubs: `$ConnectionString`).
    pub sasl_username: String,
    /// Name of the environment variable that holds the SASL password. Never logged.
    pub sasl_password_env: String,
    /// File that holds the SASL password (first line; refused when others may read it).
    /// Never logged.
    pub sasl_password_file: String,
    /// PEM file of the CA certificates that sign the brokers' (`ssl`, `sasl_ssl`); empty: the
    /// system's roots.
    pub ssl_ca_file: String,
    /// PEM file of this client's certificate (mutual TLS); empty for none.
    pub ssl_certificate_file: String,
    /// PEM file of this client's private key (refused when others may read it); empty for none.
    pub ssl_key_file: String,
    /// Environment variable that holds the private key's password, if it is encrypted.
    pub ssl_key_password_env: String,
    /// File that holds the private key's password (first line), if it is encrypted.
    pub ssl_key_password_file: String,
    /// Topic that receives messages that cannot be decoded (original bytes, reason headers);
    /// empty for none.
    pub dead_letter_topic: String,
    /// Further librdkafka settings, passed through as they are.
    pub librdkafka_options: std::collections::BTreeMap<String, String>,
}

impl KafkaConfig {
    /// `instance_id` with every `${VAR}` replaced; `None` when it is empty. An error names a
    /// variable that is not set (or empty).
    pub fn group_instance_id(&self) -> Result<Option<String>, String> {
        let mut out = String::new();
        let mut rest = self.instance_id.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("kafka.instance_id: unclosed `${{` in {:?}", self.instance_id))?;
            let name = &after[..end];
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => out.push_str(&v),
                _ => return Err(format!("kafka.instance_id: the environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok((!out.trim().is_empty()).then(|| out.trim().to_string()))
    }

    /// The client settings every Kafka client of a run shares (servers, security, TLS files,
    /// the SASL password and the key's password read from their variable or file), as
    /// librdkafka names them. An error names the setting and where its secret could not be
    /// read, never a secret. The values are secrets: pass them to librdkafka, never to a log.
    pub fn client_settings(&self) -> Result<Vec<(String, String)>, String> {
        let mut c = vec![
            ("bootstrap.servers".to_string(), self.bootstrap_servers.clone()),
            ("security.protocol".to_string(), self.security_protocol.clone()),
        ];
        if !self.sasl_mechanism.is_empty() {
            c.push(("sasl.mechanism".into(), self.sasl_mechanism.clone()));
            c.push(("sasl.username".into(), self.sasl_username.clone()));
        }
        if let Some(p) = secret_from("kafka.sasl_password", &self.sasl_password_env, &self.sasl_password_file)? {
            c.push(("sasl.password".into(), p.expose().to_owned()));
        }
        for (key, file, setting) in [
            ("kafka.ssl_ca_file", &self.ssl_ca_file, "ssl.ca.location"),
            ("kafka.ssl_certificate_file", &self.ssl_certificate_file, "ssl.certificate.location"),
            ("kafka.ssl_key_file", &self.ssl_key_file, "ssl.key.location"),
        ] {
            if file.trim().is_empty() {
                continue;
            }
            if setting == "ssl.key.location" {
                crate::secure::check_secret_file(Path::new(file)).map_err(|e| format!("{key}: {e}"))?;
            } else if !Path::new(file).is_file() {
                return Err(format!("{key}: {file} is not a readable file"));
            }
            c.push((setting.into(), file.clone()));
        }
        if let Some(p) = secret_from("kafka.ssl_key_password", &self.ssl_key_password_env, &self.ssl_key_password_file)?
        {
            c.push(("ssl.key.password".into(), p.expose().to_owned()));
        }
        Ok(c)
    }

    /// Refuses a secret among `librdkafka_options`: it belongs in an environment variable or a
    /// file (`sasl_password_env`, `ssl_key_password_file`, ...).
    pub(crate) fn check_passthrough(&self) -> Result<(), String> {
        for k in self.librdkafka_options.keys() {
            let l = k.to_ascii_lowercase();
            if l.contains("password") || l.contains("secret") || l == "ssl.key.pem" || l == "ssl_key" {
                return Err(format!(
                    "kafka.librdkafka_options.{k} holds a secret, which the configuration file must not: \
                     use kafka.sasl_password_env/_file, kafka.ssl_key_file and kafka.ssl_key_password_env/_file"
                ));
            }
        }
        Ok(())
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topics: vec!["insights-logs-dataplanerequests".into()],
            group_id: "exfilwatch".into(),
            instance_id: String::new(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password_env: String::new(),
            sasl_password_file: String::new(),
            ssl_ca_file: String::new(),
            ssl_certificate_file: String::new(),
            ssl_key_file: String::new(),
            ssl_key_password_env: String::new(),
            ssl_key_password_file: String::new(),
            dead_letter_topic: String::new(),
            librdkafka_options: Default::default(),
        }
    }
}

/// `[sinks]`: where `exfilwatch run` sends alerts (several at once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Alerts as JSON Lines on stdout.
    pub stdout: bool,
    /// Alerts as JSON Lines appended to this file; empty for none.
    pub file: String,
    /// Alerts to this Kafka topic, keyed by alert id; empty for none.
    pub kafka_topic: String,
    /// Alerts POSTed one by one (JSON) to this http(s) URL; empty for none.
    pub webhook_url: String,
    /// Timeout of one webhook request.
    pub webhook_timeout: Span,
    /// Environment variable holding the webhook's token, sent as `Authorization: Bearer`.
    pub webhook_token_env: String,
    /// File holding the webhook's token (first line; refused when others may read it).
    pub webhook_token_file: String,
    /// PEM file of the CA certificates that sign the webhook's; empty: the system's and
    /// Mozilla's roots.
    pub webhook_ca_file: String,
    /// Alerts posted to Alertmanager's API v2 at this base URL; empty for none.
    pub alertmanager_url: String,
    /// Timeout of one Alertmanager request.
    pub alertmanager_timeout: Span,
    /// Environment variable holding a token for Alertmanager (or the proxy before it), sent as
    /// `Authorization: Bearer`.
    pub alertmanager_token_env: String,
    /// File holding that token (first line; refused when others may read it).
    pub alertmanager_token_file: String,
    /// PEM file of the CA certificates that sign Alertmanager's; empty: the system's and
    /// Mozilla's roots.
    pub alertmanager_ca_file: String,
    /// How often firing alerts are re-posted (Prometheus's own cadence is 1 min).
    pub alertmanager_resend_interval: Span,
    /// An alert stays firing at least this long (wall-clock), even when a replayed backlog's
    /// event time passes its realert horizon at once.
    pub alertmanager_min_firing: Span,
    /// Alerts that may wait for a sink that is down (over all detector states of the
    /// process) before the service stops consuming until the sink takes them.
    pub max_pending_alerts: u64,
    /// Format of each alert on stdout: `native` (exfilwatch's JSON), `ocsf` (OCSF 1.8.0
    /// Detection Finding) or `ecs` (Elastic Common Schema 9.4).
    pub stdout_format: crate::formats::AlertFormat,
    /// Format of each alert in `file`.
    pub file_format: crate::formats::AlertFormat,
    /// Format of each alert on `kafka_topic` (the record's key is its id in every format).
    pub kafka_format: crate::formats::AlertFormat,
    /// Format of each alert posted to `webhook_url`.
    pub webhook_format: crate::formats::AlertFormat,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            stdout: true,
            file: String::new(),
            kafka_topic: String::new(),
            webhook_url: String::new(),
            webhook_timeout: Span(10 * crate::time::SECOND),
            webhook_token_env: String::new(),
            webhook_token_file: String::new(),
            webhook_ca_file: String::new(),
            alertmanager_url: String::new(),
            alertmanager_timeout: Span(10 * crate::time::SECOND),
            alertmanager_token_env: String::new(),
            alertmanager_token_file: String::new(),
            alertmanager_ca_file: String::new(),
            alertmanager_resend_interval: Span(60 * crate::time::SECOND),
            alertmanager_min_firing: Span(300 * crate::time::SECOND),
            max_pending_alerts: 10_000,
            stdout_format: Default::default(),
            file_format: Default::default(),
            kafka_format: Default::default(),
            webhook_format: Default::default(),
        }
    }
}

/// `[service]`: the long-running `exfilwatch run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// On SIGINT/SIGTERM: drain, flush sinks, save state and commit within this time.
    pub shutdown_timeout: Span,
    /// Longest processing time a record waits in a reorder queue for records that could still
    /// arrive before it; bounds alert latency (see README, "Order").
    pub max_hold: Span,
    /// The state store (a directory, or `file://DIR`): periodic checkpoints of the detector
    /// state with the Kafka offsets they cover, restored on start; empty for none (then a
    /// shutdown drains the reorder queues and offsets are auto-committed).
    pub state_store: String,
    /// Settings of an object store (`object_store` configuration keys such as `aws_endpoint`,
    /// `aws_region`, `aws_allow_http`), over those of the environment. Keep secrets in the
    /// environment (`AWS_SECRET_ACCESS_KEY`, `AZURE_STORAGE_ACCOUNT_KEY`, ...) or in files
    /// (`state_store_secret_files`): a secret key here is refused.
    pub state_store_options: std::collections::BTreeMap<String, String>,
    /// Object-store secrets read from files: `object_store` key → file (first line; refused
    /// when others may read it), e.g. { aws_secret_access_key = "/run/secrets/s3-key" }.
    pub state_store_secret_files: std::collections::BTreeMap<String, String>,
    /// Processing time between checkpoints (one is also written on shutdown); "0s": only on
    /// shutdown.
    pub checkpoint_interval: Span,
    /// A trained model directory (`exfilwatch train`) to start from when the state store
    /// holds no checkpoint yet; empty for none. A checkpoint, when there is one, wins.
    pub model: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; empty for nowhere.
    pub metrics_addr: String,
    /// "all" (default), "rekey" or "detect" (`--role` overrides it).
    pub role: Role,
    /// The internal topic between the rekey and detect roles; its partition count is the
    /// number of detect state shards, fixed for the life of the state store.
    pub internal_topic: String,
    /// Topic of analysts' verdicts (`exfilwatch feedback --kafka`), consumed by role all
    /// beside the log topics and applied when consumed; empty for none.
    pub verdicts_topic: String,
    /// Wall-clock time after which a raw partition with nothing to fetch (lag 0) and no data
    /// leaves the event-time alignment, so that it no longer holds the others back (README,
    /// "Order").
    pub partition_idle_timeout: Span,
    /// Roles all and rekey merge the raw partitions by event time (README, "Order"). false:
    /// messages are handled as fetched, which equals replay only when producers key by account.
    pub align_partitions: bool,
    /// Threads roles all and rekey decode raw messages on, beside the loop that fetches and
    /// detects; 1: on the loop itself; 0: one per available core. The output is the same for
    /// every value.
    pub decode_threads: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            shutdown_timeout: Span(30 * crate::time::SECOND),
            max_hold: Span(250 * 1_000_000),
            state_store: "exfilwatch-state".to_string(),
            checkpoint_interval: Span(30 * crate::time::SECOND),
            state_store_options: Default::default(),
            state_store_secret_files: Default::default(),
            model: String::new(),
            metrics_addr: "127.0.0.1:9464".to_string(),
            role: Role::All,
            internal_topic: "exfilwatch-events".to_string(),
            verdicts_topic: String::new(),
            partition_idle_timeout: Span(5 * crate::time::SECOND),
            align_partitions: true,
            decode_threads: 0,
        }
    }
}

/// The commented default configuration, as printed by `exfilwatch config defaults`.
pub const DEFAULTS_TOML: &str = include_str!("../config_defaults.toml");

impl DetectConfig {
    pub fn validate(&self) -> Result<(), String> {
        let pos = |name: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(format!("detect.{name} must be positive"))
            }
        };
        pos("familiar_after", self.familiar_after.0)?;
        pos("history_window", self.history_window.0)?;
        pos("aggregate_window", self.aggregate_window.0)?;
        pos("volume_window", self.volume_window.0)?;
        pos("realert", self.realert.0)?;
        pos("max_clock_skew", self.max_clock_skew.0)?;
        if self.learning_period.0 < 0 || self.max_out_of_order.0 < 0 {
            return Err("detect.learning_period and detect.max_out_of_order cannot be negative".into());
        }
        if self.ipv4_prefix > 32 || self.ipv6_prefix > 128 {
            return Err("detect.ipv4_prefix is at most 32 and detect.ipv6_prefix at most 128".into());
        }
        if self.unfamiliar_bytes.0 == 0 {
            return Err("detect.unfamiliar_bytes must be positive".into());
        }
        if self.escalation_factor < 2 {
            return Err("detect.escalation_factor must be at least 2".into());
        }
        if !(self.volume_p_value > 0.0 && self.volume_p_value < 0.5) {
            return Err("detect.volume_p_value must be in (0, 0.5)".into());
        }
        if self.volume_min_history_days < 2 {
            return Err("detect.volume_min_history_days must be at least 2".into());
        }
        if self.volume_min_ratio.is_nan()
            || self.volume_min_ratio < 1.0
            || self.volume_min_log_spread.is_nan()
            || self.volume_min_log_spread <= 0.0
        {
            return Err("detect.volume_min_ratio must be >= 1 and detect.volume_min_log_spread > 0".into());
        }
        if self.volume_max_ratio.is_nan() || self.volume_max_ratio < self.volume_min_ratio {
            return Err("detect.volume_max_ratio must be at least detect.volume_min_ratio".into());
        }
        if self.max_origins_per_key < 1 {
            return Err("detect.max_origins_per_key must be at least 1".into());
        }
        if self.history_window.0 < self.familiar_after.0 {
            return Err("detect.history_window must be at least detect.familiar_after".into());
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates TOML text; `origin` names the source in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: origin.to_string(), message };
        let value: toml::Table = text.parse().map_err(|e: toml::de::Error| invalid(located(text, &e)))?;
        check_keys(&value, &toml::Table::try_from(Config::default()).map_err(|e| invalid(e.to_string()))?, "")
            .map_err(invalid)?;
        // From the text (not the table), so that a bad value's error knows where it is.
        let cfg: Config = toml::from_str(text).map_err(|e: toml::de::Error| invalid(located(text, &e)))?;
        cfg.detect.validate().map_err(invalid)?;
        if cfg.detect.origin_granularity == OriginGranularity::Asn && !cfg.enrich.knows_asns() {
            return Err(invalid(
                "detect.origin_granularity = \"asn\" needs a file that says which AS an address is in: set \
                 enrich.asn_tsv or enrich.asn_mmdb"
                    .into(),
            ));
        }
        crate::detect::Allowlist::compile(&cfg.allow).map_err(invalid)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::from_toml(&text, &path.display().to_string())
    }
}

/// A TOML error with where it is: `line L, column C: message (at `the line`)`.
fn located(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let message = e.message().trim_end().replace('\n', "; ");
    // A line that may hold a secret (one put where it does not belong) is not quoted back.
    let lower = line.to_ascii_lowercase();
    if ["password", "secret", "token", "key"].iter().any(|w| lower.contains(w)) {
        return format!("line {line_no}, column {column}: {message}");
    }
    format!("line {line_no}, column {column}: {message} (at `{line}`)")
}

/// Rejects keys the defaults do not have, naming the closest valid one.
fn check_keys(given: &toml::Table, known: &toml::Table, prefix: &str) -> Result<(), String> {
    for (k, v) in given {
        let full = format!("{prefix}{k}");
        match known.get(k) {
            None => {
                let best =
                    known.keys().map(|c| (edit_distance(k, c), c)).min().filter(|(d, c)| *d <= (c.len() / 2).max(2));
                return Err(match best {
                    Some((_, c)) => format!("unknown key `{full}`; did you mean `{prefix}{c}`?"),
                    None => format!(
                        "unknown key `{full}`; valid keys here: {}",
                        known.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            // An empty table in the defaults is free-form (librdkafka_options, state_store_options,
            // state_store_secret_files).
            Some(toml::Value::Table(kt)) if !kt.is_empty() => {
                if let toml::Value::Table(gt) = v {
                    check_keys(gt, kt, &format!("{full}."))?;
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_are_the_defaults() {
        let parsed = Config::from_toml(DEFAULTS_TOML, "defaults").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_default_key_is_documented() {
        let table = toml::Table::try_from(Config::default()).unwrap();
        for (section, v) in &table {
            for key in v.as_table().unwrap().keys() {
                if key == "librdkafka_options" || key == "state_store_options" || key == "state_store_secret_files" {
                    assert!(DEFAULTS_TOML.contains(&format!("\n{key} = {{}}")));
                    continue;
                }
                assert!(DEFAULTS_TOML.contains(&format!("\n{key} = ")), "{section}.{key} missing from defaults");
            }
        }
    }

    #[test]
    fn unknown_key_names_the_nearest() {
        let err = Config::from_toml("[detect]\nfamilar_after = \"12h\"\n", "t.toml").unwrap_err().to_string();
        assert!(err.contains("unknown key `detect.familar_after`; did you mean `detect.familiar_after`?"), "{err}");
        let err = Config::from_toml("[detekt]\n", "t.toml").unwrap_err().to_string();
        assert!(err.contains("did you mean `detect`"), "{err}");
    }

    #[test]
    fn librdkafka_options_are_free_form() {
        let c = Config::from_toml("[kafka]\nlibrdkafka_options = { \"fetch.min.bytes\" = \"1\" }\n", "t").unwrap();
        assert_eq!(c.kafka.librdkafka_options.get("fetch.min.bytes").map(String::as_str), Some("1"));
    }

    #[test]
    fn human_units_and_validation() {
        let c = Config::from_toml("[detect]\nunfamiliar_bytes = \"500MiB\"\nrealert = \"1h30m\"\n", "t").unwrap();
        assert_eq!(c.detect.unfamiliar_bytes.0, 500 << 20);
        assert_eq!(c.detect.realert.0, 90 * crate::time::MINUTE);
        let err = Config::from_toml("[detect]\nrealert = \"soon\"\n", "t").unwrap_err().to_string();
        assert!(err.contains("not a duration"), "{err}");
        let err = Config::from_toml("[detect]\nipv4_prefix = 40\n", "t").unwrap_err().to_string();
        assert!(err.contains("ipv4_prefix"), "{err}");
        let err = Config::from_toml("[detect]\norigin_granularity = \"asn\"\n", "t").unwrap_err().to_string();
        assert!(err.contains("origin_granularity = \"asn\" needs") && err.contains("enrich.asn_mmdb"), "{err}");
        let only_tags = "[detect]\norigin_granularity = \"asn\"\n[enrich]\nservice_tags = \"t.json\"\n";
        assert!(Config::from_toml(only_tags, "t").is_err(), "service tags name no AS");
        for file in ["asn_tsv", "asn_mmdb"] {
            let c =
                Config::from_toml(&format!("[detect]\norigin_granularity = \"asn\"\n[enrich]\n{file} = \"x\"\n"), "t")
                    .unwrap();
            assert_eq!(c.detect.origin_granularity, OriginGranularity::Asn);
        }
        let err = Config::from_toml("[detect]\norigin_granularity = \"as\"\n", "t").unwrap_err().to_string();
        assert!(err.contains("unknown variant"), "{err}");
    }
}
