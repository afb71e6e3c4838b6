//! Any database with an ODBC driver (SQL Server, Oracle, DB2, Access, …) as a source, through
//! unixODBC and the `odbc-api` crate, so a department's system works without a Kho release.
//!
//! Config: `dsn` (a data source from `odbc.ini`) or `connection_string`
//! (`Driver={PostgreSQL Unicode};Server=…;Database=…;`), `user`, `password_env`/`password_file`
//! (never in the config file), `max_value_bytes`. The dataset's `table` or `query` is read, in
//! either change-detection mode.
//!
//! Invariants:
//! - **Bounded memory.** Rows are fetched with a block cursor into column buffers allocated once
//!   per scan: [`BATCH_BYTES`] bytes at most, `max_value_bytes` per text or binary value. A value
//!   longer than its buffer is an error naming the column, never silently truncated. (A driver
//!   may still cache the whole result on its side: psqlODBC does unless `UseDeclareFetch=1`.)
//! - **Portable types.** Integer types → `int`, BIT → `bool`, DECIMAL/NUMERIC → `decimal` (the
//!   driver's exact digits), REAL/FLOAT/DOUBLE → `float`, DATE → `date`, TIMESTAMP → `timestamp`
//!   (ISO 8601, microseconds), binary → `bytes`, everything else → `text`, fetched as UTF-16 so
//!   no client code page can mangle it.
//! - **Cursor mode** reads `WHERE c IS NOT NULL AND c >= ? ORDER BY c`, binding the stored cursor
//!   as the column's own ODBC type (integer, double, DATE, TIMESTAMP or text), so it compares in
//!   the source's type and precision.
//! - **Read-only by use:** only SELECT statements are sent; give the agent a read-only account.
//!   Each scan is one statement at the driver's default isolation.

use std::ops::ControlFlow;
use std::path::PathBuf;

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use odbc_api::buffers::{BufferDesc, ColumnarDynBuffer};
use odbc_api::{Connection, ConnectionOptions, Cursor, DataType, IntoParameter, ResultSetMetadata};
use serde::Deserialize;

use super::row::{RowBuf, write_date, write_time};
use super::{CursorValue, ScanRange, Source, SourceError};

/// Largest text or binary value when the config does not say: generous for remarks and
/// addresses, small enough that a batch of rows stays within a few MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 * 1024;
/// Column buffer budget of one fetched block; the number of rows per block follows from it.
pub const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Most rows per block: larger blocks gain little once round trips are amortised.
pub const MAX_BATCH_ROWS: usize = 1_000;

fn default_max_value_bytes() -> usize {
    DEFAULT_MAX_VALUE_BYTES
}

/// `[dataset.source]` for `kind = "odbc"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdbcSourceConfig {
    #[serde(default)]
    pub dsn: Option<String>,
    #[serde(default)]
    pub connection_string: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

impl OdbcSourceConfig {
    /// Problems as `(field, problem)`; `field` prefixes the names.
    pub fn validate(&self, field: &str) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let f = |name: &str| format!("{field}.{name}");
        match (&self.dsn, &self.connection_string) {
            (Some(_), Some(_)) => p.push((f("dsn"), "give either dsn or connection_string, not both".into())),
            (None, None) => p.push((f("dsn"), "missing: give dsn or connection_string".into())),
            (Some(d), None) if d.trim().is_empty() => p.push((f("dsn"), "must not be empty".into())),
            (None, Some(c)) if c.trim().is_empty() => p.push((f("connection_string"), "must not be empty".into())),
            (None, Some(c)) if c.to_ascii_lowercase().split(';').any(|kv| kv.trim_start().starts_with("pwd=")) => p
                .push((
                    f("connection_string"),
                    "must not contain a password (PWD=…; it would be logged); use password_env or password_file".into(),
                )),
            _ => {}
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            p.push((f("password_env"), "give either password_env or password_file, not both".into()));
        }
        if self.max_value_bytes < 256 {
            p.push((f("max_value_bytes"), "must be at least 256".into()));
        }
        p
    }

    fn password(&self) -> Result<Option<String>, String> {
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| format!("password_env: environment variable {var} is not set (or not UTF-8)"));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("password_file {}: {e}", path.display()))?;
            return Ok(Some(text.lines().next().unwrap_or("").trim_end().to_string()));
        }
        Ok(None)
    }

    /// What errors name: the DSN, or the connection string (which holds no password).
    pub fn server(&self) -> String {
        match (&self.dsn, &self.connection_string) {
            (Some(d), _) => format!("ODBC DSN {d}"),
            (_, Some(c)) => format!("ODBC {c}"),
            _ => "ODBC".into(),
        }
    }
}

/// How one column is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Int,
    Float,
    Bit,
    Date,
    Timestamp,
    /// Narrow text of at most this many bytes: decimal digits, and text from drivers whose wide
    /// (UTF-16) conversion is unreliable (see [`OdbcSource::open`]).
    Ascii(usize),
    /// UTF-16 text of at most this many code units.
    Wide(usize),
    Binary(usize),
}

impl Fetch {
    fn of(dt: DataType, max_bytes: usize, narrow_text: bool) -> (Fetch, ColumnType) {
        let cap = |len: Option<std::num::NonZeroUsize>, max: usize| len.map_or(max, |l| l.get().min(max)).max(1);
        let wide = |len: Option<std::num::NonZeroUsize>| {
            if narrow_text {
                // Up to 4 UTF-8 bytes per character.
                Fetch::Ascii(cap(
                    len.and_then(|l| l.checked_mul(std::num::NonZeroUsize::MIN.saturating_add(3))),
                    max_bytes,
                ))
            } else {
                Fetch::Wide(cap(len, max_bytes / 2))
            }
        };
        match dt {
            DataType::TinyInt | DataType::SmallInt | DataType::Integer | DataType::BigInt => {
                (Fetch::Int, ColumnType::Int)
            }
            DataType::Bit => (Fetch::Bit, ColumnType::Bool),
            DataType::Real | DataType::Float { .. } | DataType::Double => (Fetch::Float, ColumnType::Float),
            DataType::Decimal { precision, .. } | DataType::Numeric { precision, .. } => {
                // Sign, point and digits; a driver reporting no precision gets room for any.
                (Fetch::Ascii(if precision == 0 { 100 } else { precision + 3 }), ColumnType::Decimal)
            }
            DataType::Date => (Fetch::Date, ColumnType::Date),
            DataType::Timestamp { .. } => (Fetch::Timestamp, ColumnType::Timestamp),
            DataType::Binary { length } | DataType::Varbinary { length } | DataType::LongVarbinary { length } => {
                (Fetch::Binary(cap(length, max_bytes)), ColumnType::Bytes)
            }
            DataType::Char { length }
            | DataType::WChar { length }
            | DataType::Varchar { length }
            | DataType::WVarchar { length }
            | DataType::LongVarchar { length }
            | DataType::WLongVarchar { length } => (wide(length), ColumnType::Text),
            // TIME, intervals, GUIDs, XML and driver-specific types: their text form.
            _ => (wide(None), ColumnType::Text),
        }
    }

    fn desc(self) -> BufferDesc {
        match self {
            Fetch::Int => BufferDesc::I64 { nullable: true },
            Fetch::Float => BufferDesc::F64 { nullable: true },
            Fetch::Bit => BufferDesc::Bit { nullable: true },
            Fetch::Date => BufferDesc::Date { nullable: true },
            Fetch::Timestamp => BufferDesc::Timestamp { nullable: true },
            Fetch::Ascii(n) => BufferDesc::Text { max_str_len: n },
            Fetch::Wide(n) => BufferDesc::WText { max_str_len: n },
            Fetch::Binary(n) => BufferDesc::Binary { max_bytes: n },
        }
    }
}

/// A table or query read through ODBC.
pub struct OdbcSource {
    dataset: String,
    server: String,
    conn: Connection<'static>,
    /// `"schema"."table"` or `(query) kho_q`.
    relation: String,
    quote: char,
    max_value_bytes: usize,
    /// Fetch text as UTF-8 bytes instead of UTF-16.
    narrow_text: bool,
    /// What `check` shows: the database product and any advice about the driver.
    description: String,
    fetch: Vec<Fetch>,
    row: RowBuf,
}

/// The error of an ODBC call; connection-level SQLSTATEs (class 08) and timeouts may pass.
fn odbc_err(dataset: &str, server: &str, e: odbc_api::Error) -> SourceError {
    let transient = match &e {
        odbc_api::Error::Diagnostics { record, .. } => {
            let state = record.state.as_str();
            state.starts_with("08") || state == "HYT00" || state == "HYT01" || state == "40001"
        }
        _ => false,
    };
    SourceError::Odbc { dataset: dataset.to_string(), server: server.to_string(), problem: e.to_string(), transient }
}

impl OdbcSource {
    /// Connects and remembers what to read (`table` or `query`).
    pub fn open(
        dataset: &str,
        config: &OdbcSourceConfig,
        table: Option<&str>,
        query: Option<&str>,
    ) -> Result<OdbcSource, SourceError> {
        let server = config.server();
        let err = |e| odbc_err(dataset, &server, e);
        let password =
            config.password().map_err(|problem| SourceError::Credential { dataset: dataset.to_string(), problem })?;
        let env = odbc_api::environment().map_err(err)?;
        let conn = match (&config.dsn, &config.connection_string) {
            (Some(dsn), _) => env.connect(
                dsn,
                config.user.as_deref().unwrap_or(""),
                password.as_deref().unwrap_or(""),
                ConnectionOptions::default(),
            ),
            (None, cs) => {
                let mut cs = cs.clone().unwrap_or_default();
                if !cs.trim_end().ends_with(';') && !cs.is_empty() {
                    cs.push(';');
                }
                if let Some(u) = &config.user {
                    cs.push_str(&format!("UID={};", odbc_api::escape_attribute_value(u)));
                }
                if let Some(p) = &password {
                    cs.push_str(&format!("PWD={};", odbc_api::escape_attribute_value(p)));
                }
                env.connect_with_connection_string(&cs, ConnectionOptions::default())
            }
        }
        .map_err(|e| {
            let mut e = err(e);
            if let SourceError::Odbc { transient, .. } = &mut e {
                *transient = true;
            }
            e
        })?;
        let quote = conn.identifier_quote_char().ok().flatten().filter(|c| !c.is_whitespace()).unwrap_or('"');
        // MariaDB Connector/ODBC 3.1 drops the last character of some multi-byte values when it
        // converts to UTF-16 into a block cursor (seen in the end-to-end test); its UTF-8 (with
        // the connection's utf8mb4 character set) is exact, so text is fetched narrow there.
        let dbms = conn.database_management_system_name().unwrap_or_default().to_ascii_lowercase();
        let narrow_text = dbms.contains("mariadb") || dbms.contains("mysql");
        let cs = config.connection_string.as_deref().unwrap_or("").to_ascii_lowercase().replace(' ', "");
        let advice = if dbms.contains("postgres") && !cs.contains("usedeclarefetch=1") {
            " — add UseDeclareFetch=1 to the connection string (or the DSN), else psqlODBC holds whole results in memory"
        } else if narrow_text {
            " — the native kind = \"mysql\" source streams; MariaDB Connector/ODBC holds whole results in memory"
        } else {
            ""
        };
        let description = format!("{} through {server}{advice}", if dbms.is_empty() { "database" } else { &dbms });
        let relation = match (table, query) {
            (Some(t), _) => super::table_parts(t).iter().map(|p| quote_with(p, quote)).collect::<Vec<_>>().join("."),
            (None, Some(q)) => format!("({}) kho_q", q.trim().trim_end_matches(';')),
            (None, None) => {
                return Err(SourceError::Schema { dataset: dataset.to_string(), problem: "no table or query".into() });
            }
        };
        Ok(OdbcSource {
            dataset: dataset.to_string(),
            server,
            conn,
            relation,
            quote,
            max_value_bytes: config.max_value_bytes,
            narrow_text,
            description,
            fetch: Vec::new(),
            row: RowBuf::default(),
        })
    }

    fn err(&self, e: odbc_api::Error) -> SourceError {
        odbc_err(&self.dataset, &self.server, e)
    }

    fn quote(&self, name: &str) -> String {
        quote_with(name, self.quote)
    }
}

/// Quotes an identifier with the driver's quote character, doubling embedded ones.
fn quote_with(name: &str, q: char) -> String {
    let doubled: String = name.chars().flat_map(|c| if c == q { vec![c, c] } else { vec![c] }).collect();
    format!("{q}{doubled}{q}")
}

/// The stored cursor as the parameter that compares with `fetch`-typed column.
enum Param {
    Int(i64),
    Float(f64),
    Date(odbc_api::sys::Date),
    Timestamp(odbc_api::sys::Timestamp),
    Text(String),
}

fn cursor_param(fetch: Fetch, v: &CursorValue) -> Param {
    let text = super::cursor_text(v);
    match (fetch, v) {
        (Fetch::Int, CursorValue::Int(i)) => Param::Int(*i),
        (Fetch::Float, CursorValue::Real(f)) => Param::Float(*f),
        (Fetch::Date, CursorValue::Text(t)) => match parse_date(t) {
            Some((year, month, day)) => Param::Date(odbc_api::sys::Date { year, month, day }),
            None => Param::Text(text),
        },
        (Fetch::Timestamp, CursorValue::Text(t)) => match parse_timestamp(t) {
            Some(ts) => Param::Timestamp(ts),
            None => Param::Text(text),
        },
        _ => Param::Text(text),
    }
}

fn parse_date(s: &str) -> Option<(i16, u16, u16)> {
    let d = s.get(..10)?;
    Some((d.get(0..4)?.parse().ok()?, d.get(5..7)?.parse().ok()?, d.get(8..10)?.parse().ok()?))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` as written by [`write_time`].
fn parse_timestamp(s: &str) -> Option<odbc_api::sys::Timestamp> {
    let (year, month, day) = parse_date(s)?;
    let t = s.get(11..)?;
    let micros: u32 = match t.get(8..) {
        Some(f) if f.starts_with('.') => format!("{:0<6}", &f[1..]).get(..6)?.parse().ok()?,
        _ => 0,
    };
    Some(odbc_api::sys::Timestamp {
        year,
        month,
        day,
        hour: t.get(0..2)?.parse().ok()?,
        minute: t.get(3..5)?.parse().ok()?,
        second: t.get(6..8)?.parse().ok()?,
        fraction: micros * 1000,
    })
}

/// Writes one fetched value into `row`.
fn push_cell(row: &mut RowBuf, fetch: Fetch, col: odbc_api::buffers::AnyColumnBufferSlice<'_>, r: usize) {
    match fetch {
        Fetch::Int => match col.as_nullable_slice::<i64>().and_then(|s| s.get(r).copied()) {
            Some(v) => row.push_int(v),
            None => row.push_null(),
        },
        Fetch::Float => match col.as_nullable_slice::<f64>().and_then(|s| s.get(r).copied()) {
            Some(v) => row.push_real(v),
            None => row.push_null(),
        },
        Fetch::Bit => match col.as_nullable_slice::<odbc_api::Bit>().and_then(|s| s.get(r).copied()) {
            Some(v) => row.push_int(i64::from(v.as_bool())),
            None => row.push_null(),
        },
        Fetch::Date => match col.as_nullable_slice::<odbc_api::sys::Date>().and_then(|s| s.get(r).copied()) {
            Some(d) => row.push_text_with(|o| write_date(o, i64::from(d.year), u32::from(d.month), u32::from(d.day))),
            None => row.push_null(),
        },
        Fetch::Timestamp => match col.as_nullable_slice::<odbc_api::sys::Timestamp>().and_then(|s| s.get(r).copied()) {
            Some(t) => row.push_text_with(|o| {
                write_date(o, i64::from(t.year), u32::from(t.month), u32::from(t.day));
                write_time(o, u32::from(t.hour), u32::from(t.minute), u32::from(t.second), t.fraction / 1000);
            }),
            None => row.push_null(),
        },
        Fetch::Ascii(_) => match col.as_text().and_then(|s| s.get(r)) {
            Some(b) => row.push_text(b),
            None => row.push_null(),
        },
        Fetch::Wide(_) => match col.as_wide_text().and_then(|s| s.get(r)) {
            Some(w) => row.push_text(String::from_utf16_lossy(w).as_bytes()),
            None => row.push_null(),
        },
        Fetch::Binary(_) => match col.as_binary().and_then(|s| s.get(r)) {
            Some(b) => row.push_blob(b),
            None => row.push_null(),
        },
    }
}

impl Source for OdbcSource {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        let sql = format!("SELECT * FROM {} WHERE 1 = 0", self.relation);
        let mut stmt = self.conn.execute(&sql, (), None).map_err(|e| self.err(e))?.ok_or_else(|| {
            SourceError::Schema { dataset: self.dataset.clone(), problem: "the statement returns no result set".into() }
        })?;
        let n = stmt.num_result_cols().map_err(|e| odbc_err(&self.dataset, &self.server, e))?;
        let mut columns = Vec::new();
        let mut fetch = Vec::new();
        for i in 1..=u16::try_from(n).unwrap_or(0) {
            let name = stmt.col_name(i).map_err(|e| odbc_err(&self.dataset, &self.server, e))?;
            let dt = stmt.col_data_type(i).map_err(|e| odbc_err(&self.dataset, &self.server, e))?;
            let (f, ty) = Fetch::of(dt, self.max_value_bytes, self.narrow_text);
            columns.push(Column { name, ty });
            fetch.push(f);
        }
        drop(stmt);
        self.fetch = fetch;
        super::check_schema(&self.dataset, columns, key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn super::RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        if self.fetch.len() != schema.columns.len() {
            self.discover(&schema.key, None)?;
        }
        let cols: Vec<String> = schema.columns.iter().map(|c| self.quote(&c.name)).collect();
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), self.relation);
        let mut param = None;
        if let ScanRange::CursorFrom { column, from } = range {
            let c = self.quote(column);
            sql.push_str(&format!(" WHERE {c} IS NOT NULL"));
            if let Some(v) = from {
                let idx = schema.columns.iter().position(|col| col.name == column).unwrap_or(0);
                param = Some(cursor_param(self.fetch.get(idx).copied().unwrap_or(Fetch::Wide(0)), v));
                sql.push_str(&format!(" AND {c} >= ?"));
            }
            sql.push_str(&format!(" ORDER BY {c}"));
        }
        let fetch = self.fetch.clone();
        let row_bytes: usize = fetch.iter().map(|f| f.desc().bytes_per_row()).sum::<usize>().max(1);
        let batch_rows = (BATCH_BYTES / row_bytes).clamp(1, MAX_BATCH_ROWS);
        let (dataset, server) = (self.dataset.clone(), self.server.clone());
        let err = |e| odbc_err(&dataset, &server, e);
        let cursor = match param {
            None => self.conn.execute(&sql, (), None),
            Some(Param::Int(v)) => self.conn.execute(&sql, &v.into_parameter(), None),
            Some(Param::Float(v)) => self.conn.execute(&sql, &v.into_parameter(), None),
            Some(Param::Date(v)) => self.conn.execute(&sql, &v, None),
            Some(Param::Timestamp(value)) => {
                // Microsecond precision: what Kho's timestamps carry.
                let p = odbc_api::parameter::WithDataType { value, data_type: DataType::Timestamp { precision: 6 } };
                self.conn.execute(&sql, &p, None)
            }
            Some(Param::Text(v)) => self.conn.execute(&sql, &v.as_str().into_parameter(), None),
        }
        .map_err(err)?;
        let Some(cursor) = cursor else { return Ok(()) };
        let buffer = ColumnarDynBuffer::from_descs(batch_rows, fetch.iter().map(|f| f.desc()));
        let mut block = cursor.bind_buffer(buffer).map_err(err)?;
        let mut row = std::mem::take(&mut self.row);
        let outcome = (|| {
            // Truncation is an error: a value longer than its buffer never arrives cut short.
            while let Some(batch) = block.fetch_with_truncation_check(true).map_err(|e| {
                let mut e = err(e);
                if let SourceError::Odbc { problem, .. } = &mut e {
                    problem.push_str(&format!(
                        " (a value is longer than its buffer: raise max_value_bytes, now {})",
                        self.max_value_bytes
                    ));
                }
                e
            })? {
                for r in 0..batch.num_rows() {
                    row.clear();
                    for (i, f) in fetch.iter().enumerate() {
                        push_cell(&mut row, *f, batch.column(i), r);
                    }
                    if visit(&row).is_break() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })();
        self.row = row;
        outcome
    }

    fn count_null(&mut self, column: &str) -> Result<u64, SourceError> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {} IS NULL", self.relation, self.quote(column));
        let mut cursor = self.conn.execute(&sql, (), None).map_err(|e| self.err(e))?.ok_or_else(|| {
            SourceError::Schema { dataset: self.dataset.clone(), problem: "COUNT(*) returned no result set".into() }
        })?;
        let mut text = Vec::new();
        if let Some(mut r) = cursor.next_row().map_err(|e| odbc_err(&self.dataset, &self.server, e))? {
            r.get_text(1, &mut text).map_err(|e| odbc_err(&self.dataset, &self.server, e))?;
        }
        Ok(std::str::from_utf8(&text).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0))
    }

    fn describe(&self) -> Option<String> {
        Some(self.description.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursor_values_bind_in_the_column_type() {
        let ts = parse_timestamp("2026-01-05T10:20:30.000123").unwrap();
        assert_eq!(
            (ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.fraction),
            (2026, 1, 5, 10, 20, 30, 123_000)
        );
        assert_eq!(parse_timestamp("2026-01-05T10:20:30").unwrap().fraction, 0);
        assert!(matches!(cursor_param(Fetch::Date, &CursorValue::Text("2026-01-05".into())), Param::Date(_)));
        assert!(matches!(cursor_param(Fetch::Int, &CursorValue::Int(3)), Param::Int(3)));
        assert!(matches!(cursor_param(Fetch::Wide(10), &CursorValue::Text("x".into())), Param::Text(_)));
        assert_eq!(quote_with("a`b", '`'), "`a``b`");
        assert_eq!(quote_with("ho_so", '"'), "\"ho_so\"");
    }

    #[test]
    fn types_map_to_the_portable_set() {
        assert_eq!(Fetch::of(DataType::BigInt, 1024, false).1, ColumnType::Int);
        assert_eq!(
            Fetch::of(DataType::Numeric { precision: 18, scale: 2 }, 1024, false),
            (Fetch::Ascii(21), ColumnType::Decimal)
        );
        assert_eq!(Fetch::of(DataType::Timestamp { precision: 6 }, 1024, false).1, ColumnType::Timestamp);
        assert_eq!(
            Fetch::of(DataType::WLongVarchar { length: None }, 1024, false),
            (Fetch::Wide(512), ColumnType::Text)
        );
        let len = std::num::NonZeroUsize::new(200);
        assert_eq!(Fetch::of(DataType::WVarchar { length: len }, 1024, true), (Fetch::Ascii(800), ColumnType::Text));
        assert_eq!(Fetch::of(DataType::Time { precision: 0 }, 1024, false).1, ColumnType::Text);
    }

    #[test]
    fn config_needs_one_target_and_no_inline_password() {
        let c = |dsn: Option<&str>, cs: Option<&str>| OdbcSourceConfig {
            dsn: dsn.map(Into::into),
            connection_string: cs.map(Into::into),
            user: None,
            password_env: None,
            password_file: None,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        };
        assert!(c(Some("so_y_te"), None).validate("s").is_empty());
        assert_eq!(c(None, None).validate("s")[0].0, "s.dsn");
        assert_eq!(c(Some("a"), Some("b")).validate("s")[0].0, "s.dsn");
        assert!(c(None, Some("Driver={X};Server=h;PWD=secret")).validate("s")[0].1.contains("password"));
    }
}
