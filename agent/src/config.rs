//! The agent's TOML configuration: parsing, defaults, validation and path resolution.
//!
//! Invariants: unknown fields are refused by serde (a typo never silently falls back to a
//! default); [`AgentConfig::validate`] reports every bad field at once, named by its path
//! (`hub.url`, `dataset[0].cursor_column`), before any file is opened or any connection is made;
//! relative paths are resolved against the directory of the config file, so the agent behaves the
//! same whatever its working directory.

use kho_shared::fields::{self, FieldProblem};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Outbox bound when none is configured: five million changes is roughly 2–3 GB of disk for
/// typical rows, days of outage for a busy department, and still small enough to be a warning.
pub const DEFAULT_MAX_CHANGES: u64 = 5_000_000;
/// Changes per batch: large enough that per-request overhead (a round trip, the hub's ledger
/// transaction and fsync) is amortised — 20,000 syncs about a third faster than 5,000 end to end —
/// small enough that one batch applies in well under a second on the hub. `batch_max_bytes` caps
/// batches of wide rows.
pub const DEFAULT_BATCH_MAX_CHANGES: usize = 20_000;
/// Uncompressed JSON bytes per batch: 8 MiB keeps the agent's and hub's memory per batch small.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;
/// How long a partial batch waits to fill: short enough to feel live, long enough to group a
/// burst of captured changes into one request.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(200);
/// Batches sent before the oldest one's answer (HTTPS): 2 keeps the hub busy while the next batch
/// travels and is decoded; more only adds memory (each in-flight batch is held until its answer).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;
/// Most batches in flight a config may ask for.
pub const MAX_IN_FLIGHT_LIMIT: usize = 8;
/// Per-request timeout: generous for an 8 MiB batch on a slow provincial link.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat period: the hub declares an agent offline after a few missed heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// MQTT keep-alive: short enough to notice a cut link within a minute, long enough not to wake
/// mobile/3G links needlessly.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long an MQTT batch waits for the hub's ack before it is re-sent: the same budget as an
/// HTTPS request (upload, apply, answer).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period when a dataset does not say: department databases change at office pace.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: AgentSection,
    pub hub: HubSection,
    #[serde(default)]
    pub outbox: OutboxSection,
    #[serde(default)]
    pub forward: ForwardSection,
    #[serde(default, rename = "dataset")]
    pub datasets: Vec<DatasetConfig>,
    /// Where the configuration came from (a file path), for error messages.
    #[serde(skip)]
    pub origin: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub id: String,
    /// Holds `outbox.sqlite`; resolved against the config file's directory.
    pub data_dir: PathBuf,
}

/// How the agent reaches the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// `POST`s to the hub (`hub.url = "https://…"`).
    #[default]
    Https,
    /// Publishes to an MQTT broker over TLS (`hub.url = "mqtts://broker:8883"`) and waits for the
    /// hub's acknowledgement on the agent's ack topic.
    Mqtt,
}

/// Where and how to reach the hub. With `transport = "mqtt"`, `url` is the broker's `mqtts://`
/// URL and `ca_cert` the CA that signed the broker's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    #[serde(default)]
    pub transport: TransportKind,
    pub url: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Trust only this CA (PEM) when set; the platform's roots otherwise.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub insecure_dev: bool,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Enrolled agents: the Ed25519 private key (PKCS#8 PEM, mode 0600) that signs every batch.
    /// `kho-agent enroll` creates it here; it never leaves this machine.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Client certificate (PEM), CN = agent id, presented with `client_key` if set, else with
    /// `signing_key` (an enrolled agent's key). HTTPS: presented to the hub. MQTT: presented to
    /// the broker. `kho-agent enroll` (and `rotate-key`) writes the certificate the hub's agent CA
    /// issues here — unless `client_key` is set: then it is the broker's own PKI and left alone.
    /// Over MQTT the broker then trusts the hub's agent CA (docs: mTLS with the hub-issued certificate).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// MQTT: the private key (PEM) of a `client_cert` from the broker's own PKI. Leave it unset to
    /// present the hub-issued certificate with `signing_key`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// MQTT: keep-alive ping period; a dead connection is noticed within about 1.5× this.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// MQTT: how long to wait for the hub's acknowledgement of a batch before sending it again.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    #[serde(default = "default_max_changes")]
    pub max_changes: u64,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection { max_changes: DEFAULT_MAX_CHANGES }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    #[serde(default = "default_batch_max_changes")]
    pub batch_max_changes: usize,
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Batches sent before the oldest one's answer arrives (HTTPS; MQTT always sends one at a time).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for ForwardSection {
    fn default() -> Self {
        ForwardSection {
            batch_max_changes: DEFAULT_BATCH_MAX_CHANGES,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            linger: DEFAULT_LINGER,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

#[path = "config_mode.rs"]
mod mode;
pub use mode::Mode;

/// Where a dataset's rows come from: a SQLite file, a PostgreSQL or MySQL/MariaDB server
/// (`url`, `password_env`/`password_file`, `sslmode`), a drop folder of CSV/XLSX files
/// ([`crate::source::folder`]) or a JSON REST API ([`crate::source::rest`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    Sqlite {
        path: PathBuf,
    },
    Postgres(crate::source::remote::RemoteSourceConfig),
    Mysql(crate::source::remote::RemoteSourceConfig),
    Folder(crate::source::folder::FolderSourceConfig),
    // Boxed: much larger than the other variants.
    Rest(Box<crate::source::rest::RestSourceConfig>),
    /// Any database with an ODBC driver ([`crate::source::odbc`]).
    Odbc(crate::source::odbc::OdbcSourceConfig),
}

impl SourceConfig {
    /// Whether rows come from a database (which needs `table` or `query`).
    pub fn is_database(&self) -> bool {
        matches!(
            self,
            SourceConfig::Sqlite { .. } | SourceConfig::Postgres(_) | SourceConfig::Mysql(_) | SourceConfig::Odbc(_)
        )
    }
}

/// One dataset the agent captures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: String,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    pub key: Vec<String>,
    pub mode: Mode,
    #[serde(default)]
    pub cursor_column: Option<String>,
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Cron-like times to poll at, in Asia/Ho_Chi_Minh (e.g. `"0 2 * * *"`: every day at 02:00);
    /// replaces `poll_interval` when set. See [`crate::schedule`].
    #[serde(default)]
    pub schedule: Option<String>,
    pub source: SourceConfig,
    /// `[dataset.text]`: encodings of the source's text and NFC normalisation
    /// ([`crate::source::text`]).
    #[serde(default)]
    pub text: crate::source::text::TextConfig,
    /// `[dataset.cdc]`: slot and publication of a `mode = "cdc"` dataset.
    #[serde(default)]
    pub cdc: crate::source::postgres::cdc::CdcConfig,
}

impl DatasetConfig {
    /// When this dataset is polled (the config was validated, so a bad `schedule` cannot occur;
    /// it would fall back to `poll_interval`).
    pub fn poll_schedule(&self) -> crate::schedule::PollSchedule {
        use crate::schedule::{CronSchedule, PollSchedule};
        match self.schedule.as_deref().map(CronSchedule::parse) {
            Some(Ok(c)) => PollSchedule::Cron(Box::new(c)),
            _ => PollSchedule::Every(self.poll_interval),
        }
    }
}

fn default_max_changes() -> u64 {
    DEFAULT_MAX_CHANGES
}
fn default_batch_max_changes() -> usize {
    DEFAULT_BATCH_MAX_CHANGES
}
fn default_batch_max_bytes() -> usize {
    DEFAULT_BATCH_MAX_BYTES
}
fn default_linger() -> Duration {
    DEFAULT_LINGER
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_heartbeat_interval() -> Duration {
    DEFAULT_HEARTBEAT_INTERVAL
}
fn default_keep_alive() -> Duration {
    DEFAULT_KEEP_ALIVE
}
fn default_ack_timeout() -> Duration {
    DEFAULT_ACK_TIMEOUT
}
fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin} has {} problem(s):\n{}", problems.len(), fields::list(problems))]
    Invalid { origin: String, problems: Vec<FieldProblem> },
    #[error("config {origin}: hub.token_file {path}: {source}")]
    TokenFile { origin: String, path: PathBuf, source: std::io::Error },
    #[error("config {origin}: hub.signing_key {path}: {problem}")]
    SigningKey { origin: String, path: PathBuf, problem: String },
}

impl ConfigError {
    /// The bad fields, when the error is a validation error.
    pub fn problems(&self) -> &[FieldProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

impl AgentConfig {
    /// Reads, parses, validates and resolves the configuration file at `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let config = AgentConfig::from_toml_str(&text, &base, &path.display().to_string())?;
        if config.hub.token.is_some() {
            warn_if_readable_by_others(path, "config file with hub.token inline");
        }
        for (file, what) in [(&config.hub.token_file, "hub.token_file"), (&config.hub.signing_key, "hub.signing_key")] {
            if let Some(file) = file {
                warn_if_readable_by_others(file, what);
            }
        }
        Ok(config)
    }

    /// Parses and validates `text`; relative paths are resolved against `base_dir`, and `origin`
    /// names the source in error messages.
    pub fn from_toml_str(text: &str, base_dir: &Path, origin: &str) -> Result<AgentConfig, ConfigError> {
        let mut config: AgentConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        config.origin = origin.to_string();
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { origin: origin.to_string(), problems });
        }
        config.resolve_paths(base_dir);
        config.datasets.iter_mut().for_each(|d| d.cdc.resolve_names(&config.agent.id, &d.name));
        Ok(config)
    }

    /// Every problem with the configuration, each naming its field; empty when it is usable.
    pub fn validate(&self) -> Vec<FieldProblem> {
        let mut p = Vec::new();
        let mut bad = |field: &str, problem: String| p.push(FieldProblem { field: field.to_string(), problem });

        if self.agent.id.trim().is_empty() {
            bad("agent.id", "must not be empty".into());
        }
        if self.agent.data_dir.as_os_str().is_empty() {
            bad("agent.data_dir", "must not be empty".into());
        }
        match (self.hub.transport, self.hub.url.split_once("://")) {
            (TransportKind::Https, Some(("https", rest))) if !rest.is_empty() => {}
            (TransportKind::Https, Some(("http", rest))) if !rest.is_empty() => {
                if !self.hub.insecure_dev {
                    bad(
                        "hub.url",
                        "http:// is refused; use https:// (or set hub.insecure_dev = true for development)".into(),
                    );
                }
            }
            (TransportKind::Https, _) => bad("hub.url", format!("{:?} is not an https:// URL", self.hub.url)),
            (TransportKind::Mqtt, _) => {
                if let Err(problem) = crate::forward::mqtt::BrokerAddr::parse(&self.hub.url) {
                    bad("hub.url", problem);
                }
                if self.hub.insecure_dev {
                    bad("hub.insecure_dev", "not available with transport = \"mqtt\" (MQTT always uses TLS)".into());
                }
            }
        }
        // Over HTTPS a client certificate (issued at enrollment) goes with the signing key.
        let mqtt_only = [("hub.client_key", self.hub.client_key.is_some())];
        if self.hub.transport == TransportKind::Mqtt {
            if self.hub.ca_cert.is_none() {
                bad(
                    "hub.ca_cert",
                    "required with transport = \"mqtt\" (the CA that signed the broker's certificate)".into(),
                );
            }
            let key = self.hub.client_key.is_some() || self.hub.signing_key.is_some();
            if self.hub.client_key.is_some() && self.hub.client_cert.is_none() {
                bad("hub.client_cert", "client_key is set: give client_cert too (or neither)".into());
            } else if self.hub.client_cert.is_some() && !key {
                bad(
                    "hub.client_cert",
                    "needs client_key (a broker-issued certificate) or signing_key (the hub-issued one)".into(),
                );
            }
            if self.hub.keep_alive < Duration::from_secs(5) {
                bad("hub.keep_alive", "must be at least 5s".into());
            }
            if self.hub.ack_timeout.is_zero() {
                bad("hub.ack_timeout", "must be greater than zero".into());
            }
        } else {
            if self.hub.client_cert.is_some() && self.hub.signing_key.is_none() {
                bad("hub.client_cert", "over HTTPS it needs hub.signing_key (the certificate's key)".into());
            }
            for (field, set) in mqtt_only {
                if set {
                    bad(field, "only used with transport = \"mqtt\"".into());
                }
            }
        }
        match (&self.hub.token, &self.hub.token_file) {
            (Some(_), Some(_)) => bad("hub.token", "give either token or token_file, not both".into()),
            (None, None) => bad("hub.token", "missing: give token or token_file".into()),
            (Some(t), None) if t.trim().is_empty() => bad("hub.token", "must not be empty".into()),
            _ => {}
        }
        if self.hub.request_timeout.is_zero() {
            bad("hub.request_timeout", "must be greater than zero".into());
        }
        if self.hub.heartbeat_interval.is_zero() {
            bad("hub.heartbeat_interval", "must be greater than zero".into());
        }
        if self.outbox.max_changes == 0 {
            bad("outbox.max_changes", "must be at least 1".into());
        }
        if self.forward.batch_max_changes == 0 {
            bad("forward.batch_max_changes", "must be at least 1".into());
        }
        if self.forward.batch_max_bytes < 1024 {
            bad("forward.batch_max_bytes", "must be at least 1024".into());
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&self.forward.max_in_flight) {
            bad("forward.max_in_flight", format!("must be between 1 and {MAX_IN_FLIGHT_LIMIT}"));
        }
        if self.datasets.is_empty() {
            bad("dataset", "no [[dataset]] configured; the agent would have nothing to do".into());
        }
        for (i, d) in self.datasets.iter().enumerate() {
            let f = |name: &str| format!("dataset[{i}].{name}");
            if let Err(e) = kho_shared::ident::check_dataset_name(&d.name) {
                bad(&f("name"), e.to_string());
            }
            if self.datasets[..i].iter().any(|o| o.name == d.name) {
                bad(&f("name"), format!("dataset {:?} is configured twice", d.name));
            }
            match (&d.table, &d.query) {
                (Some(_), _) if !d.source.is_database() => {
                    bad(&f("table"), "only for database sources (sqlite, postgres, mysql, odbc)".into())
                }
                (None, Some(_)) if !d.source.is_database() => {
                    bad(&f("query"), "only for database sources (sqlite, postgres, mysql, odbc)".into())
                }
                (None, None) if !d.source.is_database() => {}
                (Some(_), Some(_)) => bad(&f("table"), "give either table or query, not both".into()),
                (None, None) => bad(&f("table"), "missing: give table or query".into()),
                (Some(t), None) if t.trim().is_empty() => bad(&f("table"), "must not be empty".into()),
                (None, Some(q)) if q.trim().is_empty() => bad(&f("query"), "must not be empty".into()),
                _ => {}
            }
            if d.key.is_empty() {
                bad(&f("key"), "must name at least one primary-key column".into());
            }
            if d.key.iter().any(|k| k.trim().is_empty()) {
                bad(&f("key"), "key column names must not be empty".into());
            }
            let folder = matches!(d.source, SourceConfig::Folder(_));
            match (d.mode, &d.cursor_column) {
                // A folder in cursor mode upserts every row of each new file (see source::folder).
                (Mode::Cursor, None) if folder => {}
                (Mode::Cursor, Some(_)) if folder => bad(
                    &f("cursor_column"),
                    "not used for folder sources: in cursor mode every row of each new file is upserted".into(),
                ),
                (Mode::Cursor, None) => bad(&f("cursor_column"), "required when mode = \"cursor\"".into()),
                (Mode::Cursor, Some(c)) if c.trim().is_empty() => bad(&f("cursor_column"), "must not be empty".into()),
                (Mode::Snapshot | Mode::Cdc, Some(_)) => {
                    bad(&f("cursor_column"), "only allowed when mode = \"cursor\"".into())
                }
                _ => {}
            }
            if let Some(Err(e)) = d.schedule.as_deref().map(crate::schedule::CronSchedule::parse) {
                bad(&f("schedule"), e);
            }
            if d.poll_interval.is_zero() {
                bad(&f("poll_interval"), "must be greater than zero".into());
            }
            let cdc = crate::source::postgres::cdc::validate(d, i);
            for (field, problem) in d.text.validate(&f("text")).into_iter().chain(cdc) {
                bad(&field, problem);
            }
            match &d.source {
                SourceConfig::Sqlite { path } if path.as_os_str().is_empty() => {
                    bad(&f("source.path"), "must not be empty".into())
                }
                SourceConfig::Sqlite { .. } => {}
                SourceConfig::Postgres(r) => {
                    for (field, problem) in r.validate(crate::source::remote::RemoteKind::Postgres, &f("source")) {
                        bad(&field, problem);
                    }
                }
                SourceConfig::Mysql(r) => {
                    for (field, problem) in r.validate(crate::source::remote::RemoteKind::Mysql, &f("source")) {
                        bad(&field, problem);
                    }
                }
                SourceConfig::Folder(c) => {
                    for (field, problem) in c.validate(&f("source")) {
                        bad(&field, problem);
                    }
                }
                SourceConfig::Rest(c) => {
                    for (field, problem) in c.validate(d.mode, &f("source")) {
                        bad(&field, problem);
                    }
                }
                SourceConfig::Odbc(c) => {
                    for (field, problem) in c.validate(&f("source")) {
                        bad(&field, problem);
                    }
                }
            }
        }
        p
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.agent.data_dir);
        if let Some(p) = self.hub.token_file.as_mut() {
            resolve(p);
        }
        for p in [&mut self.hub.ca_cert, &mut self.hub.client_cert, &mut self.hub.client_key, &mut self.hub.signing_key]
            .into_iter()
            .flatten()
        {
            resolve(p);
        }
        for d in &mut self.datasets {
            match &mut d.source {
                SourceConfig::Sqlite { path } => resolve(path),
                SourceConfig::Postgres(r) | SourceConfig::Mysql(r) => {
                    r.password_file.iter_mut().chain(r.ssl_root_cert.iter_mut()).for_each(resolve);
                }
                SourceConfig::Folder(c) => resolve(&mut c.path),
                SourceConfig::Rest(c) => {
                    if let Some(a) = c.auth.as_mut() {
                        a.secret_file.iter_mut().for_each(resolve);
                    }
                }
                SourceConfig::Odbc(c) => c.password_file.iter_mut().for_each(resolve),
            }
        }
    }

    /// The outbox database file.
    pub fn outbox_path(&self) -> PathBuf {
        self.agent.data_dir.join(crate::outbox::OUTBOX_FILE)
    }

    /// The batch signer, when `hub.signing_key` is configured (read once at start).
    pub fn signer(&self) -> Result<Option<kho_shared::signing::Signer>, ConfigError> {
        let Some(path) = &self.hub.signing_key else { return Ok(None) };
        let bad =
            |problem: String| ConfigError::SigningKey { origin: self.origin.clone(), path: path.clone(), problem };
        let pem = std::fs::read(path).map_err(|e| bad(format!("{e} (run `kho-agent enroll` first)")))?;
        let der = crate::enroll::pem_to_pkcs8(&pem).map_err(bad)?;
        kho_shared::signing::Signer::from_pkcs8(&self.agent.id, &der).map(Some).map_err(|e| bad(e.to_string()))
    }

    /// The bearer token, read from `token_file` when configured (trailing whitespace trimmed).
    pub fn bearer_token(&self) -> Result<String, ConfigError> {
        if let Some(t) = &self.hub.token {
            return Ok(t.clone());
        }
        let path = self.hub.token_file.clone().unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::TokenFile {
            origin: self.origin.clone(),
            path: path.clone(),
            source,
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidData, "file is empty");
            return Err(ConfigError::TokenFile { origin: self.origin.clone(), path, source });
        }
        Ok(token)
    }
}

/// Warns (and returns true) when `path` holds a secret and other users may read it. A missing
/// file is not reported here (using it fails with its own error).
pub fn warn_if_readable_by_others(path: &Path, what: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return false };
    let mode = meta.permissions().mode();
    let exposed = mode & 0o077 != 0;
    if exposed {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{:o}", mode & 0o777),
            "{what} holds a secret but is readable by other users; run chmod 600"
        );
    }
    exposed
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
