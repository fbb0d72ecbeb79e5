//! The configuration as a run uses it, checked once at start ([`Config::options`]): every
//! optional part an `Option` (the file's empty string for "none" is read here and nowhere
//! else), every span a `Duration`, every URL parsed, and the checks that need several keys
//! (a role and what it needs). `exfilwatch config check` runs the same checks.

use super::{AllowConfig, Config, ConfigError, DetectConfig, KafkaConfig, Role};
use crate::formats::AlertFormat;
use crate::secure::{secret_from, Secret};
use crate::units::Span;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `exfilwatch run` needs, checked.
#[derive(Clone, Debug)]
pub struct Options {
    pub detect: DetectConfig,
    pub allow: AllowConfig,
    pub enrich: crate::enrich::EnrichConfig,
    /// Client settings (servers, security, librdkafka options), passed to librdkafka.
    pub kafka: KafkaConfig,
    /// `kafka.dead_letter_topic`.
    pub dead_letter_topic: Option<String>,
    pub sinks: SinkOptions,
    pub service: ServiceOptions,
}

/// `[sinks]`: the destinations that are on.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub stdout: bool,
    /// JSON Lines appended to this file.
    pub file: Option<PathBuf>,
    /// The alert topic.
    pub kafka_topic: Option<String>,
    pub webhook: Option<WebhookEndpoint>,
    pub alertmanager: Option<AlertmanagerEndpoint>,
    /// Alerts that may wait for a failing sink before consumption stops (at least 1).
    pub max_pending_alerts: usize,
    /// Each sink's alert format.
    pub stdout_format: AlertFormat,
    pub file_format: AlertFormat,
    pub kafka_format: AlertFormat,
    pub webhook_format: AlertFormat,
}

#[derive(Clone, Debug)]
pub struct WebhookEndpoint {
    pub url: url::Url,
    pub timeout: Duration,
    pub tls_auth: HttpTlsAuth,
}

/// An HTTP sink's credentials and trust.
#[derive(Clone, Debug, Default)]
pub struct HttpTlsAuth {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Trust only the CA certificates of this PEM file (instead of the system's and Mozilla's).
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct AlertmanagerEndpoint {
    pub url: url::Url,
    pub timeout: Duration,
    pub tls_auth: HttpTlsAuth,
    pub resend_interval: Duration,
    pub min_firing: Duration,
}

/// `[service]`.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    pub role: Role,
    pub shutdown_timeout: Duration,
    pub max_hold: Duration,
    pub state_store: Option<StateStoreOptions>,
    /// None: a checkpoint only on shutdown.
    pub checkpoint_interval: Option<Duration>,
    pub model: Option<PathBuf>,
    pub metrics_addr: Option<String>,
    pub internal_topic: String,
    pub verdicts_topic: Option<String>,
    pub partition_idle_timeout: Duration,
    pub align_partitions: bool,
    /// Threads decoding raw messages (roles all and rekey), at least 1 (`0` in the file
    /// resolved to the available cores); 1: on the loop.
    pub decode_threads: usize,
}

/// Where checkpoints go: a directory or an object store URL, with the store's settings.
#[derive(Clone, Debug)]
pub struct StateStoreOptions {
    pub location: String,
    /// Settings without secrets (`service.state_store_options`).
    pub options: BTreeMap<String, String>,
    /// Secrets read from `service.state_store_secret_files`.
    pub secrets: BTreeMap<String, Secret>,
}

impl StateStoreOptions {
    /// Every setting for the object store, secrets included: pass it to the store only.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut all = self.options.clone();
        all.extend(self.secrets.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())));
        all
    }
}

/// An empty string is "none".
fn some(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.to_string())
}

/// A span that must not be negative (`positive`: nor zero), as a duration.
fn duration(name: &str, s: Span, positive: bool) -> Result<Duration, String> {
    match s.0 {
        n if n < 0 => Err(format!("{name} must not be negative")),
        0 if positive => Err(format!("{name} must be greater than zero")),
        n => Ok(Duration::from_nanos(n as u64)),
    }
}

/// An http(s) URL with a host. The URL itself is left out of the message: it may hold
/// credentials.
fn http_url(name: &str, s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("{name} is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{name}: scheme {:?} is not http or https", url.scheme()));
    }
    if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
        return Err(format!("{name} has no host"));
    }
    if url.password().is_some() {
        return Err(format!(
            "{name} holds a password, which the configuration file must not: put the token in \
             {name}'s _token_env or _token_file setting instead (sent as Authorization: Bearer)"
        ));
    }
    Ok(url)
}

/// The token and CA file of an HTTP sink (`prefix`: `sinks.webhook`, `sinks.alertmanager`).
fn tls_auth(prefix: &str, token_env: &str, token_file: &str, ca_file: &str) -> Result<HttpTlsAuth, String> {
    let bearer_token = secret_from(&format!("{prefix}_token"), token_env, token_file)?;
    let ca_file = some(ca_file).map(PathBuf::from);
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            return Err(format!("{prefix}_ca_file: {} is not a readable file", ca.display()));
        }
    }
    Ok(HttpTlsAuth { bearer_token, ca_file })
}

/// `service.state_store_secret_files` read, after refusing a secret among the plain options.
fn state_store_secrets(
    options: &BTreeMap<String, String>,
    files: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Secret>, String> {
    if let Some(k) = options.keys().find(|k| crate::secure::is_secret_setting(k)) {
        return Err(format!(
            "service.state_store_options.{k} is a secret, which the configuration file must not hold: \
             set it in the environment or name a file in service.state_store_secret_files"
        ));
    }
    files
        .iter()
        .map(|(k, f)| {
            crate::secure::read_secret_file(std::path::Path::new(f))
                .map(|s| (k.clone(), s))
                .map_err(|e| format!("service.state_store_secret_files.{k}: {e}"))
        })
        .collect()
}

impl Config {
    /// The checked options of a run. `origin` names the configuration in messages.
    pub fn options(&self, origin: &str) -> Result<Options, ConfigError> {
        self.try_options().map_err(|message| ConfigError::Invalid { path: origin.to_string(), message })
    }

    fn try_options(&self) -> Result<Options, String> {
        let (k, s, v) = (&self.kafka, &self.sinks, &self.service);
        let sinks = SinkOptions {
            stdout: s.stdout,
            file: some(&s.file).map(PathBuf::from),
            kafka_topic: some(&s.kafka_topic),
            webhook: match some(&s.webhook_url) {
                None => None,
                Some(u) => Some(WebhookEndpoint {
                    url: http_url("sinks.webhook_url", &u)?,
                    timeout: duration("sinks.webhook_timeout", s.webhook_timeout, true)?,
                    tls_auth: tls_auth(
                        "sinks.webhook",
                        &s.webhook_token_env,
                        &s.webhook_token_file,
                        &s.webhook_ca_file,
                    )?,
                }),
            },
            alertmanager: match some(&s.alertmanager_url) {
                None => None,
                Some(u) => Some(AlertmanagerEndpoint {
                    url: http_url("sinks.alertmanager_url", &u)?,
                    timeout: duration("sinks.alertmanager_timeout", s.alertmanager_timeout, true)?,
                    tls_auth: tls_auth(
                        "sinks.alertmanager",
                        &s.alertmanager_token_env,
                        &s.alertmanager_token_file,
                        &s.alertmanager_ca_file,
                    )?,
                    resend_interval: duration(
                        "sinks.alertmanager_resend_interval",
                        s.alertmanager_resend_interval,
                        true,
                    )?,
                    min_firing: duration("sinks.alertmanager_min_firing", s.alertmanager_min_firing, false)?,
                }),
            },
            max_pending_alerts: match s.max_pending_alerts {
                0 => return Err("sinks.max_pending_alerts must be at least 1".into()),
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            stdout_format: s.stdout_format,
            file_format: s.file_format,
            kafka_format: s.kafka_format,
            webhook_format: s.webhook_format,
        };
        let checkpoint_interval = duration("service.checkpoint_interval", v.checkpoint_interval, false)?;
        let service = ServiceOptions {
            role: v.role,
            shutdown_timeout: duration("service.shutdown_timeout", v.shutdown_timeout, false)?,
            max_hold: duration("service.max_hold", v.max_hold, false)?,
            state_store: match some(&v.state_store) {
                None => None,
                Some(location) => Some(StateStoreOptions {
                    location,
                    options: v.state_store_options.clone(),
                    secrets: state_store_secrets(&v.state_store_options, &v.state_store_secret_files)?,
                }),
            },
            checkpoint_interval: (!checkpoint_interval.is_zero()).then_some(checkpoint_interval),
            model: some(&v.model).map(PathBuf::from),
            metrics_addr: some(&v.metrics_addr),
            internal_topic: some(&v.internal_topic).ok_or("service.internal_topic must not be empty")?,
            verdicts_topic: some(&v.verdicts_topic),
            partition_idle_timeout: duration("service.partition_idle_timeout", v.partition_idle_timeout, false)?,
            align_partitions: v.align_partitions,
            decode_threads: match v.decode_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
        };
        if let Some(store) = &service.state_store {
            if let Some((scheme, _)) = store.location.split_once("://") {
                const SCHEMES: [&str; 8] = ["file", "s3", "s3a", "az", "azure", "abfs", "abfss", "gs"];
                if !SCHEMES.contains(&scheme) {
                    return Err(format!(
                        "service.state_store: scheme {scheme:?} is not one of {} (or a directory path)",
                        SCHEMES.join(", ")
                    ));
                }
            }
        }
        if let Some(model) = &service.model {
            if !model.join("manifest.json").is_file() {
                return Err(format!(
                    "service.model: {} is not a model directory (no manifest.json; `exfilwatch train` writes one)",
                    model.display()
                ));
            }
        }
        if service.role != Role::All && service.verdicts_topic.is_some() {
            return Err(format!(
                "service.verdicts_topic is only consumed by role \"all\" so far, not by role \"{}\": \
                 leave it empty there (a model trained with --verdicts carries the verdicts)",
                service.role.as_str()
            ));
        }
        if service.role == Role::Detect && service.state_store.is_none() {
            return Err(
                "role detect needs service.state_store: partition state moves between instances through it".into()
            );
        }
        k.check_passthrough()?;
        // The secrets are read here so that `config check` (and a start) fails on one that
        // cannot be read; librdkafka gets them when a client is made.
        k.client_settings()?;
        if k.topics.is_empty() && service.role != Role::Detect {
            return Err("kafka.topics must name at least one topic".into());
        }
        k.group_instance_id()?;
        Ok(Options {
            detect: self.detect.clone(),
            allow: self.allow.clone(),
            enrich: self.enrich.clone(),
            kafka: k.clone(),
            dead_letter_topic: some(&k.dead_letter_topic),
            sinks,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(toml: &str) -> Result<Options, String> {
        Config::from_toml(toml, "t").map_err(|e| e.to_string())?.options("t").map_err(|e| e.to_string())
    }

    #[test]
    fn empty_strings_are_none_and_spans_durations() {
        let o = options("").unwrap();
        assert!(o.sinks.stdout && o.sinks.file.is_none() && o.sinks.webhook.is_none());
        assert!(o.dead_letter_topic.is_none() && o.service.verdicts_topic.is_none() && o.service.model.is_none());
        assert_eq!(o.service.max_hold, Duration::from_millis(250));
        assert_eq!(o.service.checkpoint_interval, Some(Duration::from_secs(30)));
        let o = options("[service]\ncheckpoint_interval = \"0s\"\nstate_store = \"\"\n").unwrap();
        assert!(o.service.checkpoint_interval.is_none() && o.service.state_store.is_none());
    }

    #[test]
    fn sink_formats_and_the_pending_bound_are_checked() {
        let o = options("[sinks]\nfile_format = \"ocsf\"\nwebhook_format = \"ecs\"\nmax_pending_alerts = 5\n").unwrap();
        assert_eq!((o.sinks.file_format, o.sinks.webhook_format), (AlertFormat::Ocsf, AlertFormat::Ecs));
        assert_eq!((o.sinks.stdout_format, o.sinks.kafka_format), (AlertFormat::Native, AlertFormat::Native));
        assert_eq!(o.sinks.max_pending_alerts, 5);
        let e = options("[sinks]\nkafka_format = \"cef\"\n").unwrap_err();
        assert!(e.contains("kafka_format") && e.contains("ocsf"), "{e}");
        let e = options("[sinks]\nmax_pending_alerts = 0\n").unwrap_err();
        assert!(e.contains("max_pending_alerts"), "{e}");
    }

    #[test]
    fn urls_are_parsed_once_and_bad_ones_named() {
        let o = options("[sinks]\nwebhook_url = \"https://soc.example/hook\"\n").unwrap();
        assert_eq!(o.sinks.webhook.unwrap().url.host_str(), Some("soc.example"));
        let e = options("[sinks]\nalertmanager_url = \"ftp://am:9093\"\n").unwrap_err();
        assert!(e.contains("sinks.alertmanager_url") && e.contains("ftp"), "{e}");
        let e = options("[sinks]\nwebhook_url = \"not a url\"\n").unwrap_err();
        assert!(e.contains("sinks.webhook_url"), "{e}");
        let e = options("[sinks]\nwebhook_url = \"http://h/\"\nwebhook_timeout = \"0s\"\n").unwrap_err();
        assert!(e.contains("webhook_timeout"), "{e}");
    }

    #[test]
    fn a_state_store_scheme_and_a_model_directory_are_checked() {
        let e = options("[service]\nstate_store = \"ftp://x\"\n").unwrap_err();
        assert!(e.contains("service.state_store") && e.contains("ftp"), "{e}");
        assert!(options("[service]\nstate_store = \"s3://bucket/prefix\"\n").is_ok());
        let e = options("[service]\nmodel = \"/nonexistent/model\"\n").unwrap_err();
        assert!(e.contains("service.model") && e.contains("/nonexistent/model"), "{e}");
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sample-baseline");
        assert!(options(&format!("[service]\nmodel = \"{shipped}\"\n")).is_ok());
    }

    #[test]
    fn role_checks_need_several_keys() {
        let e = options("[service]\nrole = \"detect\"\nstate_store = \"\"\n").unwrap_err();
        assert!(e.contains("state_store"), "{e}");
        let e = options("[service]\nrole = \"rekey\"\nverdicts_topic = \"v\"\n").unwrap_err();
        assert!(e.contains("verdicts_topic"), "{e}");
        assert!(options("[service]\nrole = \"all\"\nverdicts_topic = \"v\"\n").is_ok());
    }
}
