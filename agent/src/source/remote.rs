//! Settings and errors shared by the network database sources (PostgreSQL, MySQL/MariaDB).
//!
//! Invariant: a password never appears in the config's `url`, in a log line or in an error
//! message. It comes from `password_env` (an environment variable) or `password_file` (first line,
//! trailing whitespace trimmed) and is handed straight to the driver; servers are named in messages
//! as `host:port/database` only.

use std::path::PathBuf;

use serde::Deserialize;

/// `[dataset.source]` for `kind = "postgres"` and `kind = "mysql"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSourceConfig {
    /// `postgres://user@host:5432/db` or `mysql://user@host:3306/db`, without a password.
    pub url: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub sslmode: SslMode,
    /// With `sslmode = "require"`: trust only this CA (PEM) instead of the platform's roots.
    #[serde(default)]
    pub ssl_root_cert: Option<PathBuf>,
}

/// Whether the connection is encrypted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP: for a database on the agent's own machine or a trusted LAN.
    #[default]
    Disable,
    /// TLS is required and the server certificate is verified (against `ssl_root_cert` or the
    /// platform's roots) — stricter than libpq's `require`, which does not verify.
    Require,
}

/// Which driver reads a remote source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    Postgres,
    Mysql,
}

impl RemoteSourceConfig {
    /// Problems with these settings as `(field suffix, problem)`; `field` prefixes the names.
    pub fn validate(&self, kind: RemoteKind, field: &str) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let f = |name: &str| format!("{field}.{name}");
        if self.url.trim().is_empty() {
            p.push((f("url"), "must not be empty".to_string()));
        } else {
            match kind {
                RemoteKind::Postgres => match self.url.parse::<postgres::Config>() {
                    Err(e) => p.push((f("url"), format!("not a PostgreSQL connection URL: {e}"))),
                    Ok(c) if c.get_password().is_some() => p.push((f("url"), PASSWORD_IN_URL.to_string())),
                    Ok(_) => {}
                },
                RemoteKind::Mysql => match mysql::Opts::from_url(&self.url) {
                    Err(e) => p.push((f("url"), format!("not a MySQL connection URL: {e}"))),
                    Ok(o) if o.get_pass().is_some() => p.push((f("url"), PASSWORD_IN_URL.to_string())),
                    Ok(_) => {}
                },
            }
        }
        match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => {
                p.push((f("password_env"), "give either password_env or password_file, not both".into()))
            }
            (Some(v), None) if v.trim().is_empty() => p.push((f("password_env"), "must not be empty".into())),
            (None, Some(path)) if path.as_os_str().is_empty() => {
                p.push((f("password_file"), "must not be empty".into()))
            }
            _ => {}
        }
        if self.ssl_root_cert.is_some() && self.sslmode != SslMode::Require {
            p.push((f("ssl_root_cert"), "only used with sslmode = \"require\"".into()));
        }
        p
    }

    /// The password from `password_env` / `password_file`, if one is configured.
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(format!("password_env: environment variable {var} is not set (or not UTF-8)")),
            };
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("password_file {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or("").trim_end().to_string();
            return Ok(Some(line));
        }
        Ok(None)
    }
}

const PASSWORD_IN_URL: &str = "must not contain a password (it would be logged); use password_env or password_file";

/// A network database driver's error.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error(transparent)]
    Mysql(#[from] mysql::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot decode column {column:?}: {problem}")]
    Decode { column: String, problem: String },
}

/// A PostgreSQL error with the server's own message (tokio-postgres's Display says only "db
/// error") or, for client-side failures, the chain of causes.
fn pg_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            m.push_str(&format!(" ({detail})"));
        }
        return m;
    }
    let mut m = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !m.contains(&text) {
            m.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    m
}

impl RemoteError {
    /// Whether retrying later may help without an operator: a network failure, a server
    /// restarting or overloaded, a lock or serialization conflict. Authentication failures,
    /// missing tables and SQL errors need someone to act.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Postgres(e) => match e.code() {
                None => true,
                Some(code) => {
                    let c = code.code();
                    ["08", "40", "53", "57"].iter().any(|class| c.starts_with(class)) || c == "55P03"
                }
            },
            RemoteError::Mysql(e) => match e {
                mysql::Error::IoError(_) | mysql::Error::DriverError(_) => true,
                mysql::Error::MySqlError(m) => matches!(m.code, 1040 | 1053 | 1205 | 1213 | 2006 | 2013),
                _ => false,
            },
            RemoteError::Tls(_) | RemoteError::Decode { .. } => false,
        }
    }
}
