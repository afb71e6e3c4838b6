//! `[dataset.source]` of a REST dataset: URL, headers, authentication, records pointer,
//! pagination, limits — with validation naming the bad field, and secrets read at open time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kho_shared::types::ColumnType;
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::Mode;

/// `[dataset.source]` for `kind = "rest"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestSourceConfig {
    pub url: String,
    /// Extra request headers (not secrets: those go in `auth`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<RestAuth>,
    /// JSON pointer (RFC 6901) to the records array; empty when the body is the array.
    #[serde(default)]
    pub records: String,
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Requests per second at most; unlimited when absent.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The longest `Retry-After` (or backoff) waited inside one poll; longer waits fail the poll,
    /// which is retried at the next interval.
    #[serde(default = "default_max_retry_wait", with = "humantime_serde")]
    pub max_retry_wait: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Cursor mode: query parameter that receives the stored cursor value.
    #[serde(default)]
    pub cursor_param: Option<String>,
    #[serde(default)]
    pub types: BTreeMap<String, ColumnType>,
}

impl Eq for RestSourceConfig {}

fn default_max_pages() -> u32 {
    1000
}
fn default_retries() -> u32 {
    5
}
fn default_max_retry_wait() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How an API's credential is sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestAuth {
    pub kind: AuthKind,
    /// `basic` only.
    #[serde(default)]
    pub username: Option<String>,
    /// `api_key` only: the header carrying the key (e.g. `X-API-Key`).
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Bearer,
    Basic,
    ApiKey,
}

/// How the next page is requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request returns everything.
    #[default]
    None,
    /// `?page=1`, `?page=2`, … until a page has no records (or fewer than `size`).
    Page {
        #[serde(default = "default_page_param")]
        param: String,
        #[serde(default = "default_first_page")]
        first: u64,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, … until a page has fewer than `limit`.
    Offset {
        #[serde(default = "default_offset_param")]
        offset_param: String,
        #[serde(default = "default_limit_param")]
        limit_param: String,
        limit: u64,
    },
    /// The next page's URL is at the JSON pointer `pointer`, or in the `Link: <…>; rel="next"`
    /// header when `pointer` is absent; no next URL ends the listing.
    NextLink {
        #[serde(default)]
        pointer: Option<String>,
    },
    /// The next page token is at the JSON pointer `pointer` and is sent as `param`; no token ends
    /// the listing.
    Cursor { pointer: String, param: String },
}

fn default_page_param() -> String {
    "page".into()
}
fn default_first_page() -> u64 {
    1
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}

impl RestSourceConfig {
    /// Problems as `(field, problem)`; `field` prefixes the names.
    pub fn validate(&self, mode: Mode, field: &str) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let f = |name: &str| format!("{field}.{name}");
        match Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if !u.password().unwrap_or("").is_empty() {
                    p.push((f("url"), "must not contain a password; use auth".into()));
                }
            }
            Ok(_) => p.push((f("url"), "must be an http:// or https:// URL".into())),
            Err(e) => p.push((f("url"), format!("{:?} is not a URL: {e}", self.url))),
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
                p.push((f(&format!("headers.{name}")), "not a valid HTTP header".into()));
            }
        }
        if !self.records.is_empty() && !self.records.starts_with('/') {
            p.push((
                f("records"),
                "must be a JSON pointer such as \"/data/items\" (or empty for a top-level array)".into(),
            ));
        }
        match &self.pagination {
            Pagination::Offset { limit: 0, .. } => p.push((f("pagination.limit"), "must be at least 1".into())),
            Pagination::Page { size: Some(0), .. } => p.push((f("pagination.size"), "must be at least 1".into())),
            Pagination::NextLink { pointer: Some(ptr) } | Pagination::Cursor { pointer: ptr, .. }
                if !ptr.starts_with('/') =>
            {
                p.push((f("pagination.pointer"), "must be a JSON pointer such as \"/next\"".into()))
            }
            _ => {}
        }
        if self.max_pages == 0 {
            p.push((f("max_pages"), "must be at least 1".into()));
        }
        if let Some(r) = self.rate_limit
            && !(r > 0.0 && r.is_finite())
        {
            p.push((f("rate_limit"), "must be a positive number of requests per second".into()));
        }
        if self.timeout.is_zero() {
            p.push((f("timeout"), "must be greater than zero".into()));
        }
        if self.cursor_param.is_some() && mode != Mode::Cursor {
            p.push((f("cursor_param"), "only used when mode = \"cursor\"".into()));
        }
        if let Some(a) = &self.auth {
            match (&a.secret_env, &a.secret_file) {
                (Some(_), Some(_)) => {
                    p.push((f("auth.secret_env"), "give either secret_env or secret_file, not both".into()))
                }
                (None, None) => p.push((f("auth.secret_env"), "missing: give secret_env or secret_file".into())),
                _ => {}
            }
            match a.kind {
                AuthKind::Basic if a.username.as_deref().is_none_or(str::is_empty) => {
                    p.push((f("auth.username"), "required for kind = \"basic\"".into()))
                }
                AuthKind::ApiKey
                    if a.header.as_deref().is_none_or(|h| HeaderName::from_bytes(h.as_bytes()).is_err()) =>
                {
                    p.push((
                        f("auth.header"),
                        "required for kind = \"api_key\": the header name, e.g. \"X-API-Key\"".into(),
                    ))
                }
                _ => {}
            }
        }
        p
    }
}

/// A secret whose Debug output never shows it.
pub(super) struct Secret(pub(super) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl RestAuth {
    fn secret(&self) -> Result<Secret, String> {
        if let Some(var) = &self.secret_env {
            return std::env::var(var)
                .map(Secret)
                .map_err(|_| format!("auth.secret_env: environment variable {var} is not set (or not UTF-8)"));
        }
        let path = self.secret_file.clone().unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("auth.secret_file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim_end().to_string();
        if line.is_empty() {
            return Err(format!("auth.secret_file {}: file is empty", path.display()));
        }
        Ok(Secret(line))
    }

    /// The header carrying the credential (marked sensitive).
    pub(super) fn header(&self) -> Result<(HeaderName, HeaderValue), String> {
        use base64::Engine;
        let secret = self.secret()?;
        let (name, value) = match self.kind {
            AuthKind::Bearer => (reqwest::header::AUTHORIZATION, format!("Bearer {}", secret.0)),
            AuthKind::Basic => {
                let user = self.username.clone().unwrap_or_default();
                let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", secret.0));
                (reqwest::header::AUTHORIZATION, format!("Basic {enc}"))
            }
            AuthKind::ApiKey => {
                let h = self.header.clone().unwrap_or_default();
                let name = HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("auth.header {h:?} is not a header name"))?;
                (name, secret.0.clone())
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "auth: the secret contains characters not allowed in an HTTP header".to_string())?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}
