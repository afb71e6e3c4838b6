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

mod config;
mod paging;

pub use config::*;
pub use paging::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::value::RawValue;

use super::row::RowBuf;
use super::values::{self, Class, Infer};
use super::{Cell, CursorValue, RowView, ScanRange, Source, SourceError};

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
mod tests;
