//! The hub's TOML configuration: what to listen on, where to keep data, which agents exist and
//! what each may write.
//!
//! Loading is two steps. Parsing ([`HubConfig::from_toml_str`]) refuses unknown fields, fills
//! defaults from the named constants below and resolves relative paths against the config
//! file's directory (`hub.data_dir`) or the data directory (`warehouse.path`). Validation
//! ([`HubConfig::validate`], called by both loaders) then reports *every* bad field by name in one
//! error, before any port is bound or any file written — an operator fixes the file once, not
//! once per run.
//!
//! ```toml
//! [hub]
//! listen = "127.0.0.1:8443"
//! data_dir = "/var/lib/kho-hub"
//! insecure_dev_http = false
//!
//! [tls]
//! self_signed = true
//! self_signed_names = ["hub.sonla.vnpt.vn"]
//!
//! [limits]
//! max_body_bytes = "16 MiB"
//! max_decoded_bytes = "128 MiB"
//! request_timeout = "60s"
//! max_concurrent_requests = 256
//! max_batch_changes = 100000
//! agent_requests_per_second = 50
//! agent_burst = 100
//! header_read_timeout = "10s"
//!
//! [warehouse]
//! kind = "sqlite"
//! path = "warehouse.sqlite"
//! # or, for a province's shared warehouse:
//! # kind = "postgres"
//! # url = "postgres://kho@db.sonla.vnpt.vn/kho?sslmode=require"
//! # history_retention = "90d"
//! # writers = 4
//!
//! [[agent]]
//! id = "so-y-te-01"
//! token_file = "tokens/so-y-te-01"
//! datasets = ["ho_so"]
//! ```
//!
//! The `[catalog]`, `[freshness]` and `[alerts]` sections are described in `config/freshness.rs`,
//! the optional `[mqtt]` section in `config/mqtt.rs`, `[limits]` in `config/limits.rs`. An agent's `datasets` are merged with the catalogue's grants:
//! see [`crate::catalog`].

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod dashboard;
mod freshness;
mod limits;
mod mqtt;
pub use dashboard::*;
pub use freshness::*;
pub use limits::*;
pub use mqtt::*;

/// Loopback only: a hub is reachable from the network only when the operator says so.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// FHS location for a service's mutable state.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kho-hub";
/// The embedded warehouse file, relative to the data directory.
pub const DEFAULT_WAREHOUSE_PATH: &str = "warehouse.sqlite";
/// How long the PostgreSQL warehouse keeps `kho.change_log` rows: a quarter covers the
/// quarterly reporting cycle, after which the dataset tables themselves are the record.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Parallel PostgreSQL writers (one connection each; an agent always goes to the same one). The
/// hub machine has few cores and PostgreSQL does most of the work; 4 keeps a slow agent from
/// holding up the others without flooding the server with connections.
pub const DEFAULT_PG_WRITERS: usize = 4;
/// Upper bound for `warehouse.writers`: each is a PostgreSQL connection and a thread.
pub const MAX_PG_WRITERS: usize = 64;
/// Schema for datasets that the catalogue does not assign to a department (see
/// `warehouse/postgres`): PostgreSQL's default, so analysts find them without a search_path.
pub const DEFAULT_UNASSIGNED_SCHEMA: &str = "public";
/// Longest agent id; agent ids appear in logs, metrics labels and certificate CNs.
pub const MAX_AGENT_ID_LEN: usize = 63;

/// The whole configuration, with paths resolved and tokens read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    #[serde(default)]
    pub hub: HubSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub warehouse: WarehouseSection,
    #[serde(default, rename = "agent")]
    pub agents: Vec<AgentSection>,
    #[serde(default)]
    pub catalog: CatalogSection,
    #[serde(default)]
    pub freshness: FreshnessSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    /// The operator dashboard's logins (see `config/dashboard.rs`).
    #[serde(default)]
    pub dashboard: DashboardSection,
    /// Ingest from an MQTT broker too (see `config/mqtt.rs`).
    #[serde(default)]
    pub mqtt: Option<MqttSection>,
    /// The province's pseudonymisation keys (see `privacy.rs`, issue 14).
    #[serde(default)]
    pub privacy: crate::privacy::PrivacySection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Serve plain HTTP: for development on one machine only.
    #[serde(default)]
    pub insecure_dev_http: bool,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection { listen: default_listen(), data_dir: default_data_dir(), insecure_dev_http: false }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Generate a local CA and server certificate under `<data_dir>/tls/`.
    #[serde(default)]
    pub self_signed: bool,
    /// Extra DNS names or IP addresses for the self-signed certificate.
    #[serde(default)]
    pub self_signed_names: Vec<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Enrolled agents must present the client certificate the hub's agent CA issued them
    /// (enrollment excepted: an agent has none yet). Config agents (`[[agent]]` tokens) have none
    /// and are not affected.
    #[serde(default)]
    pub require_client_cert: bool,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            self_signed: true,
            self_signed_names: Vec::new(),
            cert: None,
            key: None,
            require_client_cert: false,
        }
    }
}

/// Which warehouse backend stores the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarehouseKind {
    /// One embedded file (`path`): the default, nothing to install.
    Sqlite,
    /// A PostgreSQL database (`url`): a province's shared warehouse.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseSection {
    #[serde(default = "default_warehouse_kind")]
    pub kind: WarehouseKind,
    /// SQLite only: the file, relative to `hub.data_dir`.
    #[serde(default = "default_warehouse_path")]
    pub path: PathBuf,
    /// PostgreSQL only: a libpq-style URL or key=value string. `sslmode=require` uses TLS through
    /// rustls, verifying the server against `ssl_root_cert` or the platform roots; otherwise plain.
    pub url: Option<String>,
    /// PostgreSQL only: a CA (PEM) to trust instead of the platform's roots.
    pub ssl_root_cert: Option<PathBuf>,
    /// PostgreSQL only: how long `kho.change_log` keeps each applied change.
    #[serde(default = "default_history_retention", with = "humantime_serde")]
    pub history_retention: Duration,
    /// PostgreSQL only: parallel writers (SQLite always has exactly one).
    #[serde(default = "default_pg_writers")]
    pub writers: usize,
    /// PostgreSQL only: schema of datasets the catalogue does not assign to a department.
    #[serde(default = "default_unassigned_schema")]
    pub unassigned_schema: String,
}

impl Default for WarehouseSection {
    fn default() -> Self {
        WarehouseSection {
            kind: WarehouseKind::Sqlite,
            path: PathBuf::from(DEFAULT_WAREHOUSE_PATH),
            url: None,
            ssl_root_cert: None,
            history_retention: DEFAULT_HISTORY_RETENTION,
            writers: DEFAULT_PG_WRITERS,
            unassigned_schema: DEFAULT_UNASSIGNED_SCHEMA.to_string(),
        }
    }
}

impl WarehouseSection {
    /// Every problem of this section, each with its field name (`warehouse.url`, …).
    fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        let pg_only = "only used with kind = \"postgres\"";
        match self.kind {
            WarehouseKind::Sqlite => {
                if self.path.as_os_str().is_empty() {
                    bad("warehouse.path", "must not be empty".into());
                }
                if self.url.is_some() {
                    bad("warehouse.url", pg_only.into());
                }
                if self.ssl_root_cert.is_some() {
                    bad("warehouse.ssl_root_cert", pg_only.into());
                }
            }
            WarehouseKind::Postgres => {
                match self.url.as_deref() {
                    None => bad("warehouse.url", "missing: kind = \"postgres\" needs a connection URL".into()),
                    // The parser's message never contains the password; the URL is not echoed.
                    Some(url) => match url.parse::<postgres::Config>() {
                        Err(e) => bad("warehouse.url", format!("not a PostgreSQL connection URL: {e}")),
                        Ok(c) if c.get_dbname().is_none() => {
                            bad("warehouse.url", "names no database (postgres://user@host/DATABASE)".into())
                        }
                        Ok(_) => {}
                    },
                }
                if let Some(ca) = &self.ssl_root_cert
                    && !ca.is_file()
                {
                    bad("warehouse.ssl_root_cert", format!("{} does not exist or is not a file", ca.display()));
                }
                if self.history_retention.is_zero() {
                    bad("warehouse.history_retention", "must be greater than 0 (e.g. \"90d\")".into());
                }
                if self.writers == 0 || self.writers > MAX_PG_WRITERS {
                    bad("warehouse.writers", format!("must be between 1 and {MAX_PG_WRITERS}"));
                }
                if let Err(e) = kho_shared::ident::check_dataset_name(&self.unassigned_schema) {
                    bad("warehouse.unassigned_schema", e.to_string());
                }
            }
        }
    }
}

/// One agent allowed to push.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub id: String,
    /// The bearer token inline; after loading, also holds the contents of `token_file`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Datasets this agent may write; anything else is refused with 403.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Set when `token` was read from `token_file` (so validating again does not see both).
    #[serde(skip)]
    pub token_from_file: bool,
}

impl fmt::Debug for AgentSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSection")
            .field("id", &self.id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("datasets", &self.datasets)
            .finish()
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_warehouse_kind() -> WarehouseKind {
    WarehouseKind::Sqlite
}
fn default_warehouse_path() -> PathBuf {
    PathBuf::from(DEFAULT_WAREHOUSE_PATH)
}
fn default_history_retention() -> Duration {
    DEFAULT_HISTORY_RETENTION
}
fn default_pg_writers() -> usize {
    DEFAULT_PG_WRITERS
}
fn default_unassigned_schema() -> String {
    DEFAULT_UNASSIGNED_SCHEMA.to_string()
}

/// A size given as a number of bytes or a string such as `"16 MiB"`.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(n),
        Raw::Text(s) => parse_byte_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses `"1048576"`, `"512 KiB"`, `"16MiB"`, `"1 GB"` (decimal and binary units).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like \"16 MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))
}

pub use kho_shared::fields::FieldProblem;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config {origin} has {} problem(s):\n{}", problems.len(), kho_shared::fields::list(problems))]
    Invalid { origin: String, problems: Vec<FieldProblem> },
}

impl HubConfig {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<HubConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let config = HubConfig::from_toml_str(&text, &base, &path.display().to_string())?;
        let inline = config.agents.iter().any(|a| a.token.is_some() && !a.token_from_file)
            || config.warehouse.url.as_deref().is_some_and(url_has_password);
        if inline {
            kho_agent::config::warn_if_readable_by_others(path, "config file with agent tokens or a password inline");
        }
        for file in config.agents.iter().filter_map(|a| a.token_file.as_deref()) {
            kho_agent::config::warn_if_readable_by_others(file, "agent token_file");
        }
        Ok(config)
    }

    /// Parses and validates config text; relative paths are taken relative to `base_dir`, and
    /// `origin` names the text in errors (usually the file path).
    pub fn from_toml_str(text: &str, base_dir: &Path, origin: &str) -> Result<HubConfig, ConfigError> {
        let mut config: HubConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        config.resolve_paths(base_dir);
        let mut problems = Vec::new();
        config.read_token_files(&mut problems);
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { origin: origin.to_string(), problems })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.hub.data_dir = base.join(&self.hub.data_dir);
        self.warehouse.path = self.hub.data_dir.join(&self.warehouse.path);
        let paths = [
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.catalog.path,
            &mut self.alerts.ca_cert,
            &mut self.warehouse.ssl_root_cert,
            &mut self.privacy.key_file,
        ];
        for p in paths.into_iter().flatten() {
            *p = base.join(&*p);
        }
        if let Some(m) = self.mqtt.as_mut() {
            m.resolve_paths(base);
        }
        for agent in &mut self.agents {
            if let Some(p) = agent.token_file.as_mut() {
                *p = base.join(&*p);
            }
        }
    }

    fn read_token_files(&mut self, problems: &mut Vec<FieldProblem>) {
        for (i, agent) in self.agents.iter_mut().enumerate() {
            let (Some(path), None) = (&agent.token_file, &agent.token) else { continue };
            match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => {
                    agent.token = Some(text.trim().to_string());
                    agent.token_from_file = true;
                }
                Ok(_) => {
                    problems.push(problem(format!("agent[{i}].token_file"), format!("{} is empty", path.display())))
                }
                Err(e) => problems
                    .push(problem(format!("agent[{i}].token_file"), format!("cannot read {}: {e}", path.display()))),
            }
        }
    }

    /// The listen address (valid after [`HubConfig::validate`] found no problem).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.hub.listen.parse().ok()
    }

    /// Every problem with the configuration, each naming its field. Empty means usable.
    pub fn validate(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, why: String| out.push(problem(field.to_string(), why));
        if self.hub.listen.parse::<SocketAddr>().is_err() {
            bad("hub.listen", format!("{:?} is not an address like \"127.0.0.1:8443\"", self.hub.listen));
        }
        if self.hub.data_dir.as_os_str().is_empty() {
            bad("hub.data_dir", "must not be empty".into());
        }
        let tls = &self.tls;
        match (tls.self_signed, &tls.cert, &tls.key) {
            (true, None, None) => {}
            (true, _, _) => bad("tls", "set either self_signed = true or cert + key, not both".into()),
            (false, Some(cert), Some(key)) => {
                for (field, path) in [("tls.cert", cert), ("tls.key", key)] {
                    if !path.is_file() {
                        bad(field, format!("{} does not exist or is not a file", path.display()));
                    }
                }
            }
            (false, None, None) => bad("tls", "set self_signed = true, or both cert and key".into()),
            (false, Some(_), None) => bad("tls.key", "cert is set but key is missing".into()),
            (false, None, Some(_)) => bad("tls.cert", "key is set but cert is missing".into()),
        }
        if tls.require_client_cert && self.hub.insecure_dev_http {
            bad("tls.require_client_cert", "needs TLS: not available with hub.insecure_dev_http".into());
        }
        freshness::validate(&self.catalog, &self.freshness, &self.alerts, &mut |f, why| bad(f, why));
        for (i, name) in tls.self_signed_names.iter().enumerate() {
            if !valid_host_name(name) {
                bad(&format!("tls.self_signed_names[{i}]"), format!("{name:?} is not a DNS name or IP address"));
            }
        }
        self.limits.validate(&mut bad);
        self.warehouse.validate(&mut bad);
        self.dashboard.validate(&mut |f, why| bad(f, why));
        if let Some(m) = &self.mqtt {
            m.validate(&mut |f, why| bad(f, why));
        }
        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            if let Err(why) = check_agent_id(&a.id) {
                bad(&format!("agent[{i}].id"), why);
            }
            if !ids.insert(a.id.as_str()) {
                bad(&format!("agent[{i}].id"), format!("agent id {:?} appears more than once", a.id));
            }
            match (&a.token, &a.token_file) {
                (Some(_), Some(_)) if !a.token_from_file => {
                    bad(&format!("agent[{i}].token"), "set token or token_file, not both".into())
                }
                (None, None) => bad(&format!("agent[{i}].token"), "missing: set token or token_file".into()),
                (Some(t), _) if t.trim().is_empty() => bad(&format!("agent[{i}].token"), "must not be empty".into()),
                (Some(t), _) if !tokens.insert(t.as_str()) => {
                    bad(&format!("agent[{i}].token"), "the same token is given to another agent".into())
                }
                _ => {}
            }
            for (j, d) in a.datasets.iter().enumerate() {
                if let Err(e) = kho_shared::ident::check_dataset_name(d) {
                    bad(&format!("agent[{i}].datasets[{j}]"), e.to_string());
                }
            }
        }
        if let Some(why) = self.privacy.validate() {
            bad("privacy.key_file", why);
        }
        out
    }
}

fn problem(field: String, problem: String) -> FieldProblem {
    FieldProblem { field, problem }
}

/// Agent ids: `[a-z0-9][a-z0-9_-]*`, at most [`MAX_AGENT_ID_LEN`] bytes. They end up in metric
/// labels, log fields and (later) certificate CNs, so the alphabet is kept boring.
pub fn check_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_AGENT_ID_LEN {
        return Err(format!("{id:?} is longer than {MAX_AGENT_ID_LEN} bytes"));
    }
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok || !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(format!("{id:?} must use only a-z, 0-9, - and _ and start with a letter or digit"));
    }
    Ok(())
}

/// Whether a PostgreSQL URL or key=value string carries a password.
fn url_has_password(url: &str) -> bool {
    url.parse::<postgres::Config>().is_ok_and(|c| c.get_password().is_some())
}

fn valid_host_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        })
}

#[cfg(test)]
mod tests;
