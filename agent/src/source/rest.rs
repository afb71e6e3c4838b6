//! A JSON REST API as a source.
//!
//! Config: `url`, `headers`, `auth` (bearer / basic / API-key header; the secret from
//! `secret_env` or `secret_file`), `records` (a JSON pointer to the records array; empty = the body
//! is the array), `pagination` (`page`, `offset`, `next_link`, `cursor`, or none), `max_pages`,
//! `rate_limit` (requests per second), `retries`, `max_retry_wait`, `timeout`, `cursor_param`
//! and `types` (declared column types).
//!
//! Design:
//! - **Blocking client.** The [`Source`] trait is blocking and capture runs on a blocking thread,
//!   so `reqwest::blocking` fits without a second async runtime of our own (the PostgreSQL and
//!   MySQL sources are blocking too).
//! - **One listing per poll, held in memory.** A poll fetches every page (bounded by `max_pages`)
//!   before anything is emitted: the columns are the union of the records' keys (sorted by name,
//!   so the schema does not depend on the API's key order), nested objects and arrays are `json`,
//!   and a listing that is cut short (more than `max_pages`, an error on page 7) emits nothing —
//!   a partial listing would turn unseen records into deletes. Department APIs list thousands of
//!   records, not millions; memory is about twice the JSON size.
//! - **Exact values.** Numbers are kept as the exact text the API sent (`serde_json`'s
//!   `RawValue`): integers become `int`, others `decimal` — never through f64.
//! - **Modes.** `snapshot`: the full listing is diffed against stored row hashes (records gone
//!   from the listing become deletes). `cursor`: `cursor_column` names a field of the records
//!   (e.g. `updated_at`); with `cursor_param` (e.g. `updated_since`) the stored cursor value is
//!   sent as that query parameter so the API returns only changed records; either way records are
//!   filtered (≥ the stored value) and sorted by the cursor on the agent, so an API that ignores
//!   the parameter or returns records unordered is still captured correctly.
//! - **Failure.** 429 and 5xx answers and network errors are retried `retries` times with
//!   exponential backoff, honouring `Retry-After` (seconds) up to `max_retry_wait`. An answer that
//!   is not JSON (an HTML login or error page), or has no records array at `records`, fails the
//!   poll with an error naming the dataset and URL; other datasets keep running and the outbox is
//!   untouched.
//! - **Secrets** are read when the source is opened, held in sensitive header values (reqwest
//!   never prints them), and never appear in `Debug` output, logs or error messages.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::row::RowBuf;
use super::values::{self, Class, Infer};
use super::{Cell, CursorValue, RowView, ScanRange, Source, SourceError};
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
struct Secret(String);

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
    fn header(&self) -> Result<(HeaderName, HeaderValue), String> {
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

/// Unescapes one RFC 6901 pointer segment.
fn pointer_segments(ptr: &str) -> impl Iterator<Item = String> + '_ {
    ptr.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// The value at JSON pointer `ptr` inside `root`, without parsing numbers (pure).
pub fn raw_pointer<'a>(root: &'a RawValue, ptr: &str) -> Option<&'a RawValue> {
    let mut cur = root;
    if ptr.is_empty() {
        return Some(cur);
    }
    for seg in pointer_segments(ptr) {
        let text = cur.get().trim_start();
        cur = if text.starts_with('{') {
            let map: BTreeMap<String, &RawValue> = serde_json::from_str(cur.get()).ok()?;
            map.get(&seg).copied()?
        } else if text.starts_with('[') {
            let list: Vec<&RawValue> = serde_json::from_str(cur.get()).ok()?;
            list.get(seg.parse::<usize>().ok()?).copied()?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// A string or number at `ptr` as text; None when absent, null or empty.
fn raw_text(root: &RawValue, ptr: &str) -> Option<String> {
    let v = raw_pointer(root, ptr)?;
    let t = v.get().trim();
    if t == "null" {
        return None;
    }
    let s = if t.starts_with('"') { serde_json::from_str::<String>(t).ok()? } else { t.to_string() };
    (!s.is_empty()).then_some(s)
}

/// The `rel="next"` URL of an HTTP `Link` header (pure).
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().to_ascii_lowercase().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| url.to_string())
    })
}

/// Seconds of a `Retry-After` header (delta-seconds form; an HTTP date falls back to backoff).
pub fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Exponential backoff before retry `attempt` (0-based): 0.5 s, 1 s, 2 s, … capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << attempt.min(6))).min(Duration::from_secs(30))
}

/// Walks the pages of a listing (pure: URLs in, URLs out).
#[derive(Debug)]
pub struct Pager {
    pagination: Pagination,
    base: Url,
    page: u64,
    offset: u64,
}

impl Pager {
    /// `base` already carries the configured query and the cursor parameter.
    pub fn new(pagination: Pagination, base: Url) -> Pager {
        let page = match &pagination {
            Pagination::Page { first, .. } => *first,
            _ => 0,
        };
        Pager { pagination, base, page, offset: 0 }
    }

    fn with(&self, params: &[(&str, String)]) -> Url {
        let mut u = self.base.clone();
        {
            let drop: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| !drop.contains(&k.as_ref()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut q = u.query_pairs_mut();
            q.clear();
            for (k, v) in &kept {
                q.append_pair(k, v);
            }
            for (k, v) in params {
                q.append_pair(k, v);
            }
        }
        if u.query() == Some("") {
            u.set_query(None);
        }
        u
    }

    /// The first page's URL.
    pub fn first(&self) -> Url {
        match &self.pagination {
            Pagination::Page { param, size_param, size, .. } => {
                let mut ps = vec![(param.as_str(), self.page.to_string())];
                if let (Some(sp), Some(s)) = (size_param, size) {
                    ps.push((sp.as_str(), s.to_string()));
                }
                self.with(&ps)
            }
            Pagination::Offset { offset_param, limit_param, limit } => {
                self.with(&[(offset_param.as_str(), "0".into()), (limit_param.as_str(), limit.to_string())])
            }
            _ => self.base.clone(),
        }
    }

    /// The next page's URL after `current` returned `records` records, `body` and `link`
    /// (the Link header); None when the listing is complete.
    pub fn next(&mut self, current: &Url, records: usize, body: &RawValue, link: Option<&str>) -> Option<Url> {
        match self.pagination.clone() {
            Pagination::None => None,
            Pagination::Page { param, size_param, size, .. } => {
                if records == 0 || size.is_some_and(|s| (records as u64) < s) {
                    return None;
                }
                self.page += 1;
                let mut ps = vec![(param.as_str(), self.page.to_string())];
                if let (Some(sp), Some(s)) = (&size_param, size) {
                    ps.push((sp.as_str(), s.to_string()));
                }
                Some(self.with(&ps))
            }
            Pagination::Offset { offset_param, limit_param, limit } => {
                if (records as u64) < limit {
                    return None;
                }
                self.offset += records as u64;
                Some(self.with(&[
                    (offset_param.as_str(), self.offset.to_string()),
                    (limit_param.as_str(), limit.to_string()),
                ]))
            }
            Pagination::NextLink { pointer } => {
                let next = match pointer {
                    Some(ptr) => raw_text(body, &ptr),
                    None => link.and_then(link_next),
                }?;
                current.join(&next).ok()
            }
            Pagination::Cursor { pointer, param } => {
                let token = raw_text(body, &pointer)?;
                if records == 0 {
                    return None;
                }
                Some(self.with(&[(param.as_str(), token)]))
            }
        }
    }
}

/// One record: field name → exact JSON text.
type Record = BTreeMap<String, Box<RawValue>>;

/// Classifies one JSON value; None for null.
fn classify_raw(raw: &RawValue) -> Option<Class> {
    let t = raw.get().trim();
    match t.as_bytes().first()? {
        b'n' => None,
        b't' | b'f' => Some(Class::Bool),
        b'{' | b'[' => Some(Class::Json),
        b'"' => Some(
            serde_json::from_str::<String>(t)
                .map(|s| if s.is_empty() { Class::Text } else { values::classify_text(&s) })
                .unwrap_or(Class::Text),
        ),
        _ if values::is_int(t) => Some(Class::Int),
        _ if values::is_decimal(t) => Some(Class::Decimal),
        _ => Some(Class::Text),
    }
}

/// Appends `raw` as a value of `ty` (pure).
fn push_raw(out: &mut RowBuf, ty: ColumnType, raw: Option<&RawValue>) -> Result<(), String> {
    let Some(raw) = raw else {
        out.push_null();
        return Ok(());
    };
    let t = raw.get().trim();
    if t == "null" {
        out.push_null();
        return Ok(());
    }
    if ty == ColumnType::Json {
        out.push_text(t.as_bytes());
        return Ok(());
    }
    match t.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(t).map_err(|e| e.to_string())?;
            if ty == ColumnType::Text {
                out.push_text(s.as_bytes());
                Ok(())
            } else {
                values::push_typed(out, ty, &s)
            }
        }
        Some(b't' | b'f') if ty == ColumnType::Bool => {
            out.push_int(i64::from(t == "true"));
            Ok(())
        }
        Some(b'{' | b'[') if ty != ColumnType::Text => {
            Err(format!("an object or array where {} was expected", ty.as_str()))
        }
        _ if ty == ColumnType::Text => {
            out.push_text(t.as_bytes());
            Ok(())
        }
        _ => values::push_typed(out, ty, t),
    }
}

/// An HTTP JSON API listing.
pub struct RestSource {
    dataset: String,
    config: RestSourceConfig,
    since: Option<CursorValue>,
    /// Column names of the fetched rows (schema order).
    columns: Vec<String>,
    client: reqwest::blocking::Client,
    /// The fetched listing, typed (after `discover`).
    rows: Vec<RowBuf>,
    last_request: Option<Instant>,
}

impl RestSource {
    /// Builds the client (reading the secret); nothing is fetched yet.
    pub fn open(
        dataset: &str,
        config: &RestSourceConfig,
        since: Option<&CursorValue>,
    ) -> Result<RestSource, SourceError> {
        crate::forward::https::install_crypto_provider();
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                headers.insert(k, v);
            }
        }
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(a) = &config.auth {
            let (k, v) =
                a.header().map_err(|problem| SourceError::Credential { dataset: dataset.to_string(), problem })?;
            headers.insert(k, v);
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .default_headers(headers)
            .user_agent(concat!("kho-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Http {
                dataset: dataset.to_string(),
                url: config.url.clone(),
                problem: format!("cannot build the HTTP client: {e}"),
                transient: false,
            })?;
        Ok(RestSource {
            dataset: dataset.to_string(),
            config: config.clone(),
            since: since.cloned(),
            columns: Vec::new(),
            client,
            rows: Vec::new(),
            last_request: None,
        })
    }

    fn http_err(&self, url: &Url, problem: String, transient: bool) -> SourceError {
        SourceError::Http { dataset: self.dataset.clone(), url: url.to_string(), problem, transient }
    }

    /// The first URL: configured URL plus `cursor_param` when there is a stored cursor.
    fn base_url(&self) -> Result<Url, SourceError> {
        let mut u = Url::parse(&self.config.url).map_err(|e| SourceError::Http {
            dataset: self.dataset.clone(),
            url: self.config.url.clone(),
            problem: format!("not a URL: {e}"),
            transient: false,
        })?;
        if let (Some(param), Some(since)) = (&self.config.cursor_param, &self.since) {
            u.query_pairs_mut().append_pair(param, &super::cursor_text(since));
        }
        Ok(u)
    }

    /// One GET with rate limiting and retries; returns the body and the Link header.
    fn get(&mut self, url: &Url) -> Result<(String, Option<String>), SourceError> {
        let mut attempt = 0;
        loop {
            if let (Some(rate), Some(last)) = (self.config.rate_limit, self.last_request) {
                let gap = Duration::from_secs_f64(1.0 / rate);
                if let Some(wait) = gap.checked_sub(last.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            self.last_request = Some(Instant::now());
            // Only retryable failures get past this match.
            let (problem, wait) = match self.client.get(url.clone()).send() {
                Err(e) => (format!("request failed: {}", error_chain(&e)), None),
                Ok(resp) => {
                    let status = resp.status();
                    let header =
                        |name| resp.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_string);
                    let ctype = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
                    let link = header(reqwest::header::LINK);
                    let wait = header(reqwest::header::RETRY_AFTER).as_deref().and_then(retry_after);
                    if status.is_success() {
                        let body = resp
                            .text()
                            .map_err(|e| self.http_err(url, format!("reading the body: {}", error_chain(&e)), true))?;
                        if ctype.contains("html") || body.trim_start().starts_with('<') {
                            return Err(self.http_err(
                                url,
                                format!(
                                    "answered HTML, not JSON (content-type {ctype:?}; a login or error page?): {}",
                                    snippet(&body)
                                ),
                                false,
                            ));
                        }
                        return Ok((body, link));
                    }
                    let body = resp.text().unwrap_or_default();
                    let problem = format!("HTTP {status}: {}", snippet(&body));
                    let retry = status.as_u16() == 429 || status.is_server_error();
                    if !retry {
                        return Err(self.http_err(url, problem, false));
                    }
                    (problem, wait)
                }
            };
            if attempt >= self.config.retries {
                return Err(self.http_err(url, format!("{problem} (gave up after {} attempt(s))", attempt + 1), true));
            }
            let wait = wait.unwrap_or_else(|| backoff(attempt));
            if wait > self.config.max_retry_wait {
                return Err(self.http_err(
                    url,
                    format!(
                        "{problem}; the server asks to wait {wait:?}, longer than max_retry_wait; retrying next poll"
                    ),
                    true,
                ));
            }
            tracing::warn!(dataset = %self.dataset, url = %url, attempt = attempt + 1, wait = ?wait, problem = %problem, "API request failed; retrying");
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// Fetches every page: the records, in listing order.
    fn fetch(&mut self) -> Result<Vec<Record>, SourceError> {
        let mut pager = Pager::new(self.config.pagination.clone(), self.base_url()?);
        let mut url = pager.first();
        let mut out = Vec::new();
        let mut seen_urls = BTreeSet::new();
        for _ in 0..self.config.max_pages {
            seen_urls.insert(url.to_string());
            let (body, link) = self.get(&url)?;
            let root: &RawValue = serde_json::from_str(&body).map_err(|e| {
                self.http_err(&url, format!("answer is not valid JSON ({e}): {}", snippet(&body)), false)
            })?;
            let list = raw_pointer(root, &self.config.records).ok_or_else(|| {
                self.http_err(
                    &url,
                    format!("no records at JSON pointer {:?}: {}", self.config.records, snippet(&body)),
                    false,
                )
            })?;
            let list: Vec<Record> = serde_json::from_str(list.get()).map_err(|e| {
                self.http_err(
                    &url,
                    format!("the value at {:?} is not an array of objects: {e}", self.config.records),
                    false,
                )
            })?;
            let n = list.len();
            out.extend(list);
            match pager.next(&url, n, root, link.as_deref()) {
                None => return Ok(out),
                Some(next) if seen_urls.contains(next.as_str()) => {
                    return Err(self.http_err(&next, "pagination loops back to a page already read".into(), false));
                }
                Some(next) => url = next,
            }
        }
        Err(self.http_err(
            &url,
            format!(
                "more than max_pages = {} pages; raise max_pages (nothing was captured from a partial listing)",
                self.config.max_pages
            ),
            false,
        ))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut s = e.source();
    while let Some(c) = s {
        let t = c.to_string();
        if !m.contains(&t) {
            m.push_str(": ");
            m.push_str(&t);
        }
        s = c.source();
    }
    m
}

/// The start of a body, on one line, for an error message.
fn snippet(body: &str) -> String {
    let one: String = body.chars().take(160).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.chars().count() > 160 { format!("{one}…") } else { one }
}

/// Orders a cell against a cursor value: integers numerically, everything else as text.
fn cmp_cursor(cell: Cell<'_>, v: &CursorValue) -> std::cmp::Ordering {
    match (cell, v) {
        (Cell::Int(a), CursorValue::Int(b)) => a.cmp(b),
        (Cell::Text(a), CursorValue::Text(b)) => a.cmp(b.as_bytes()),
        (c, v) => match CursorValue::from_cell(c) {
            Some(cv) => super::cursor_text(&cv).cmp(&super::cursor_text(v)),
            None => std::cmp::Ordering::Less,
        },
    }
}

fn cmp_cells(a: Cell<'_>, b: Cell<'_>) -> std::cmp::Ordering {
    match CursorValue::from_cell(b) {
        Some(v) => cmp_cursor(a, &v),
        None => std::cmp::Ordering::Greater,
    }
}

impl Source for RestSource {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        let records = self.fetch()?;
        let names: BTreeSet<&str> = records.iter().flat_map(|r| r.keys().map(String::as_str)).collect();
        let mut columns = Vec::with_capacity(names.len());
        for name in &names {
            let ty = match self.config.types.get(*name) {
                Some(t) => *t,
                None => {
                    let mut inf = Infer::default();
                    for c in records.iter().filter_map(|r| r.get(*name)).filter_map(|v| classify_raw(v)) {
                        inf.observe(c);
                    }
                    inf.column_type()
                }
            };
            columns.push(Column { name: (*name).to_string(), ty });
        }
        let url = self.config.url.clone();
        let mut rows = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let mut row = RowBuf::default();
            for c in &columns {
                push_raw(&mut row, c.ty, r.get(&c.name).map(|b| &**b)).map_err(|e| SourceError::Http {
                    dataset: self.dataset.clone(),
                    url: url.clone(),
                    problem: format!("record {} field {:?}: {e}", i + 1, c.name),
                    transient: false,
                })?;
            }
            rows.push(row);
        }
        self.rows = rows;
        self.columns = columns.iter().map(|c| c.name.clone()).collect();
        if records.is_empty() {
            // No record to learn columns from: the declared key and cursor columns stand in, so an
            // empty listing is a valid (empty) state rather than a schema error.
            let mut cols: Vec<Column> = Vec::new();
            for k in key.iter().map(String::as_str).chain(cursor) {
                if !cols.iter().any(|c| c.name == k) {
                    cols.push(Column {
                        name: k.to_string(),
                        ty: self.config.types.get(k).copied().unwrap_or(ColumnType::Text),
                    });
                }
            }
            return super::check_schema(&self.dataset, cols, key, cursor);
        }
        super::check_schema(&self.dataset, columns, key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        match range {
            ScanRange::KeyOrder => {
                for row in &self.rows {
                    if visit(row).is_break() {
                        break;
                    }
                }
            }
            ScanRange::CursorFrom { column, from } => {
                let idx = schema.columns.iter().position(|c| c.name == column).unwrap_or(usize::MAX);
                fn at(r: &RowBuf, idx: usize) -> Cell<'_> {
                    r.cell(idx).unwrap_or(Cell::Null)
                }
                let mut picked: Vec<&RowBuf> = self
                    .rows
                    .iter()
                    .filter(|r| at(r, idx) != Cell::Null && from.is_none_or(|f| cmp_cursor(at(r, idx), f).is_ge()))
                    .collect();
                picked.sort_by(|a, b| cmp_cells(at(a, idx), at(b, idx)));
                for row in picked {
                    if visit(row).is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn count_null(&mut self, column: &str) -> Result<u64, SourceError> {
        let Some(idx) = self.columns.iter().position(|c| c == column) else {
            return Ok(0);
        };
        Ok(self.rows.iter().filter(|r| r.cell(idx).is_ok_and(|c| c == Cell::Null)).count() as u64)
    }

    fn describe(&self) -> Option<String> {
        Some(format!("{} record(s) from {}", self.rows.len(), self.config.url))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn pointers_find_records_without_touching_numbers() {
        let body = raw(r#"{"data":{"items":[{"so_tien":12345678901234567890.123456789}]},"next":"/p?page=2"}"#);
        let items = raw_pointer(&body, "/data/items").unwrap();
        let list: Vec<Record> = serde_json::from_str(items.get()).unwrap();
        assert_eq!(list[0]["so_tien"].get(), "12345678901234567890.123456789");
        assert_eq!(raw_text(&body, "/next").unwrap(), "/p?page=2");
        assert!(raw_pointer(&body, "/nope").is_none());
        assert_eq!(raw_pointer(&raw("[1,2]"), "/1").unwrap().get(), "2");
    }

    #[test]
    fn link_headers_and_retry_after() {
        let h = r#"<https://api.example/x?page=1>; rel="prev", <https://api.example/x?page=3>; rel="next""#;
        assert_eq!(link_next(h).unwrap(), "https://api.example/x?page=3");
        assert!(link_next(r#"<a>; rel="last""#).is_none());
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }

    #[test]
    fn pagers_walk_each_style() {
        let base = Url::parse("http://h/api?x=1").unwrap();
        let empty = raw("{}");
        let mut p = Pager::new(
            Pagination::Page { param: "page".into(), first: 1, size_param: Some("size".into()), size: Some(2) },
            base.clone(),
        );
        let u1 = p.first();
        assert_eq!(u1.as_str(), "http://h/api?x=1&page=1&size=2");
        let u2 = p.next(&u1, 2, &empty, None).unwrap();
        assert_eq!(u2.as_str(), "http://h/api?x=1&page=2&size=2");
        assert!(p.next(&u2, 1, &empty, None).is_none(), "a short page ends the listing");

        let mut p = Pager::new(
            Pagination::Offset { offset_param: "offset".into(), limit_param: "limit".into(), limit: 2 },
            base.clone(),
        );
        let u1 = p.first();
        assert_eq!(u1.as_str(), "http://h/api?x=1&offset=0&limit=2");
        assert_eq!(p.next(&u1, 2, &empty, None).unwrap().as_str(), "http://h/api?x=1&offset=2&limit=2");
        assert!(p.next(&u1, 0, &empty, None).is_none());

        let mut p = Pager::new(Pagination::NextLink { pointer: Some("/links/next".into()) }, base.clone());
        let body = raw(r#"{"links":{"next":"/api?after=9"}}"#);
        assert_eq!(p.next(&base, 5, &body, None).unwrap().as_str(), "http://h/api?after=9");
        assert!(p.next(&base, 5, &raw(r#"{"links":{"next":null}}"#), None).is_none());
        let mut p = Pager::new(Pagination::NextLink { pointer: None }, base.clone());
        assert_eq!(
            p.next(&base, 5, &empty, Some("<http://h/api?p=2>; rel=\"next\"")).unwrap().as_str(),
            "http://h/api?p=2"
        );

        let mut p =
            Pager::new(Pagination::Cursor { pointer: "/meta/next".into(), param: "cursor".into() }, base.clone());
        let body = raw(r#"{"meta":{"next":"abc"}}"#);
        assert_eq!(p.next(&base, 5, &body, None).unwrap().as_str(), "http://h/api?x=1&cursor=abc");
        assert!(p.next(&base, 5, &raw(r#"{"meta":{}}"#), None).is_none());
    }

    #[test]
    fn json_values_are_typed_exactly() {
        let vals = ["1", "2.50", "\"Bản đồ\"", "true", "{\"a\":1}", "null"];
        let classes: Vec<Option<Class>> = vals.iter().map(|v| classify_raw(&raw(v))).collect();
        assert_eq!(
            classes,
            [Some(Class::Int), Some(Class::Decimal), Some(Class::Text), Some(Class::Bool), Some(Class::Json), None]
        );
        let mut r = RowBuf::default();
        push_raw(&mut r, ColumnType::Decimal, Some(&raw("12345678901234567890.10"))).unwrap();
        push_raw(&mut r, ColumnType::Json, Some(&raw("{\"a\": [1, 2]}"))).unwrap();
        push_raw(&mut r, ColumnType::Text, Some(&raw("\"Sơn La\""))).unwrap();
        push_raw(&mut r, ColumnType::Bool, Some(&raw("false"))).unwrap();
        push_raw(&mut r, ColumnType::Int, None).unwrap();
        assert_eq!(r.cell(0).unwrap(), Cell::Text(b"12345678901234567890.10"));
        assert_eq!(r.cell(1).unwrap(), Cell::Text(b"{\"a\": [1, 2]}"));
        assert_eq!(r.cell(2).unwrap(), Cell::Text("Sơn La".as_bytes()));
        assert_eq!(r.cell(3).unwrap(), Cell::Int(0));
        assert_eq!(r.cell(4).unwrap(), Cell::Null);
        assert!(push_raw(&mut r, ColumnType::Int, Some(&raw("\"abc\""))).is_err());
    }

    #[test]
    fn cursor_scans_filter_and_sort_on_the_agent() {
        let config = RestSourceConfig {
            url: "http://127.0.0.1:9/x".into(),
            headers: BTreeMap::new(),
            auth: None,
            records: String::new(),
            pagination: Pagination::None,
            max_pages: 1,
            rate_limit: None,
            retries: 0,
            max_retry_wait: Duration::ZERO,
            timeout: Duration::from_secs(1),
            cursor_param: None,
            types: BTreeMap::new(),
        };
        let mut src = RestSource::open("d", &config, None).unwrap();
        // An API that ignores updated_since and returns records unordered.
        for (id, at) in [(1, "2026-01-03"), (2, "2026-01-01"), (3, "2026-01-02"), (4, "2026-01-05")] {
            let mut r = RowBuf::default();
            r.push_int(id);
            r.push_text(at.as_bytes());
            src.rows.push(r);
        }
        src.columns = vec!["id".into(), "updated_at".into()];
        let schema = DatasetSchema {
            dataset: "d".into(),
            key: vec!["id".into()],
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::Int },
                Column { name: "updated_at".into(), ty: ColumnType::Date },
            ],
        };
        let from = CursorValue::Text("2026-01-02".into());
        let mut seen = Vec::new();
        src.scan(&schema, ScanRange::CursorFrom { column: "updated_at", from: Some(&from) }, &mut |r| {
            if let Ok(Cell::Int(i)) = r.cell(0) {
                seen.push(i);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, [3, 1, 4], "rows >= the stored cursor, in cursor order");
        assert_eq!(src.count_null("updated_at").unwrap(), 0);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        let auth = RestAuth {
            kind: AuthKind::Bearer,
            username: None,
            header: None,
            secret_env: Some("KHO_TEST_REST_SECRET_UNSET_123".into()),
            secret_file: None,
        };
        let err = auth.header().unwrap_err();
        assert!(err.contains("KHO_TEST_REST_SECRET_UNSET_123"));
    }
}
