//! Sources: where a dataset's rows come from.
//!
//! A [`Source`] discovers a dataset's columns and streams its rows, one borrowed row at a time, to
//! a visitor; it never holds a table in memory and never writes to the department's database.
//! Sources are blocking (database drivers are) and run on a blocking thread, never on the async
//! runtime. Implementations: [`sqlite`] (a file), [`postgres`] and [`mysql`] (network servers,
//! settings in [`remote`], rows decoded into a reused [`row::RowBuf`]), [`odbc`] (any database
//! with an ODBC driver), [`folder`] (CSV/XLSX files dropped into a folder) and [`rest`] (a JSON
//! HTTP API), chosen by [`open`] from the dataset's
//! config; [`values`] types the untyped values of files and JSON, [`formats`] reads local date
//! and number formats. [`text`] decodes legacy Vietnamese encodings and normalises text to NFC;
//! database and API sources get it through the [`decoded`] wrapper, folders apply it themselves.
//!
//! PostgreSQL and MySQL read each scan inside one read-only REPEATABLE READ transaction (a consistent
//! snapshot) and stream it (a PostgreSQL portal fetched in bounded pages; MySQL's row-by-row
//! result), so memory does not grow with the table.

pub mod decoded;
pub mod folder;
pub mod formats;
pub mod mysql;
pub mod odbc;
pub mod postgres;
pub mod remote;
pub mod rest;
pub mod row;
pub mod sqlite;
pub mod text;
pub mod values;

use std::ops::ControlFlow;
use std::path::PathBuf;

use kho_shared::protocol::{Column, DatasetSchema};

use crate::config::{DatasetConfig, SourceConfig};
use text::Origin;

/// One value of a row as the source stores it, borrowed from the driver's buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    /// Text bytes as stored (normally UTF-8).
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// A stored cursor position, with the exact type and value the source returned, so it can be
/// bound back without losing precision.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorValue {
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl CursorValue {
    /// The owned form of a non-null cell.
    pub fn from_cell(cell: Cell<'_>) -> Option<CursorValue> {
        match cell {
            Cell::Null => None,
            Cell::Int(i) => Some(CursorValue::Int(i)),
            Cell::Real(f) => Some(CursorValue::Real(f)),
            Cell::Text(t) => Some(CursorValue::Text(String::from_utf8_lossy(t).into_owned())),
            Cell::Blob(b) => Some(CursorValue::Blob(b.to_vec())),
        }
    }

    /// Whether `cell` is the same value, without allocating.
    pub fn matches(&self, cell: Cell<'_>) -> bool {
        match (self, cell) {
            (CursorValue::Int(a), Cell::Int(b)) => *a == b,
            (CursorValue::Real(a), Cell::Real(b)) => *a == b,
            // SQLite compares integers and reals numerically.
            (CursorValue::Int(a), Cell::Real(b)) => (*a as f64) == b,
            (CursorValue::Real(a), Cell::Int(b)) => *a == (b as f64),
            (CursorValue::Text(a), Cell::Text(b)) => a.as_bytes() == b,
            (CursorValue::Blob(a), Cell::Blob(b)) => a.as_slice() == b,
            _ => false,
        }
    }

    /// Human-readable form for status output.
    pub fn display(&self) -> String {
        match self {
            CursorValue::Int(i) => i.to_string(),
            CursorValue::Real(f) => format!("{f:?}"),
            CursorValue::Text(t) => t.clone(),
            CursorValue::Blob(b) => format!("x'{}'", hex::encode(b)),
        }
    }
}

/// Access to one row while it is being visited.
pub trait RowView {
    /// The value of column `idx` (schema order).
    fn cell(&self, idx: usize) -> Result<Cell<'_>, SourceError>;
}

/// Which rows a scan returns.
#[derive(Debug, Clone, Copy)]
pub enum ScanRange<'a> {
    /// Every row, in key order where the source can do that cheaply (snapshot mode). The order
    /// only affects speed, never correctness.
    KeyOrder,
    /// Rows whose cursor column is not NULL and ≥ `from` (all non-NULL rows without `from`), in
    /// cursor order.
    CursorFrom { column: &'a str, from: Option<&'a CursorValue> },
}

/// A dataset's rows.
pub trait Source: Send {
    /// Reads the column list and types, and checks that `key` and `cursor` columns exist.
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError>;

    /// Streams the rows of `range`, columns in `schema` order, to `visit` until it breaks.
    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError>;

    /// Number of rows whose `column` is NULL.
    fn count_null(&mut self, column: &str) -> Result<u64, SourceError>;

    /// What exactly is being read, for `check` (a folder names its file); None for databases.
    fn describe(&self) -> Option<String> {
        None
    }
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("dataset {dataset}: source file {path} does not exist")]
    Missing { dataset: String, path: PathBuf },
    #[error("dataset {dataset}: cannot open source {path} read-only: {source}")]
    Open { dataset: String, path: PathBuf, source: rusqlite::Error },
    #[error("dataset {dataset}: source {what} not found in {path}")]
    NoSuchRelation { dataset: String, what: String, path: PathBuf },
    #[error("dataset {dataset}: {role} column {column:?} is not a column of the source (columns: {available})")]
    MissingColumn { dataset: String, role: &'static str, column: String, available: String },
    #[error("dataset {dataset}: unusable schema: {problem}")]
    Schema { dataset: String, problem: String },
    #[error("dataset {dataset}: reading {path}: {source}")]
    Read { dataset: String, path: PathBuf, source: rusqlite::Error },
    #[error("dataset {dataset}: cannot connect to {server}: {source}")]
    Connect { dataset: String, server: String, source: remote::RemoteError },
    #[error("dataset {dataset}: reading {server}: {source}")]
    Query { dataset: String, server: String, source: remote::RemoteError },
    #[error("dataset {dataset}: {problem}")]
    Credential { dataset: String, problem: String },
    /// A dropped file that cannot be read as a whole (bad row, bad encoding, bad key): the file is
    /// refused and nothing of it is applied.
    #[error("dataset {dataset}: file {path} refused: {problem}")]
    File { dataset: String, path: PathBuf, problem: String },
    #[error("dataset {dataset}: reading {path}: {source}")]
    Io { dataset: String, path: PathBuf, source: std::io::Error },
    /// An HTTP API that failed or answered something that is not the expected JSON.
    #[error("dataset {dataset}: {url}: {problem}")]
    Http { dataset: String, url: String, problem: String, transient: bool },
    /// An ODBC driver's error (connection lost, SQL refused, value too long).
    #[error("dataset {dataset}: {server}: {problem}")]
    Odbc { dataset: String, server: String, problem: String, transient: bool },
}

impl SourceError {
    /// Whether the next poll may succeed without anyone changing the configuration (a locked or
    /// temporarily missing file); schema problems need an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Missing { .. }
            | SourceError::Open { .. }
            | SourceError::Read { .. }
            | SourceError::Io { .. } => true,
            SourceError::Http { transient, .. } | SourceError::Odbc { transient, .. } => *transient,
            SourceError::Connect { source, .. } | SourceError::Query { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// Opens the source a dataset's config names. `since` is the stored cursor of a cursor-mode
/// dataset: an HTTP API is asked only for records changed since then (database sources bind it in
/// [`Source::scan`] instead). A folder opens its newest stable file (what `check` inspects;
/// capture picks files itself, see [`folder`]).
pub fn open(dataset: &DatasetConfig, since: Option<&CursorValue>) -> Result<Box<dyn Source>, SourceError> {
    let (inner, origin): (Box<dyn Source>, Origin) = match &dataset.source {
        SourceConfig::Sqlite { path } => (
            Box::new(sqlite::SqliteSource::open(
                &dataset.name,
                path,
                dataset.table.as_deref(),
                dataset.query.as_deref(),
            )?),
            Origin::Bytes,
        ),
        SourceConfig::Postgres(remote) => (
            Box::new(postgres::PgSource::open(
                &dataset.name,
                remote,
                dataset.table.as_deref(),
                dataset.query.as_deref(),
            )?),
            Origin::Unicode,
        ),
        SourceConfig::Mysql(remote) => (
            Box::new(mysql::MysqlSource::open(
                &dataset.name,
                remote,
                dataset.table.as_deref(),
                dataset.query.as_deref(),
            )?),
            Origin::Unicode,
        ),
        SourceConfig::Folder(folder) => {
            let files = folder::list_files(&dataset.name, folder)?;
            let now = std::time::SystemTime::now();
            let newest = files.into_iter().rev().find(|f| f.settled_at(now, folder.settle)).ok_or_else(|| {
                SourceError::Missing { dataset: dataset.name.clone(), path: folder.path.join(&folder.pattern) }
            })?;
            // A folder decodes its files itself (headers and typing need the decoded text).
            return Ok(Box::new(folder::FolderSource::open(&dataset.name, folder, &dataset.text, &newest.path)?));
        }
        SourceConfig::Rest(rest) => (Box::new(rest::RestSource::open(&dataset.name, rest, since)?), Origin::Unicode),
        SourceConfig::Odbc(odbc) => (
            Box::new(odbc::OdbcSource::open(&dataset.name, odbc, dataset.table.as_deref(), dataset.query.as_deref())?),
            Origin::Unicode,
        ),
    };
    if dataset.text.is_identity() {
        Ok(inner)
    } else {
        Ok(Box::new(decoded::Decoded::new(inner, dataset.text.clone(), origin)))
    }
}

/// The text a cursor value is bound back as, for sources that cast it to the column's own type in
/// SQL (so a timestamp, numeric or float cursor compares exactly, in the source's type).
pub fn cursor_text(v: &CursorValue) -> String {
    match v {
        CursorValue::Int(i) => i.to_string(),
        CursorValue::Real(f) if f.is_nan() => "NaN".to_string(),
        CursorValue::Real(f) if f.is_infinite() => if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_string(),
        // Debug prints the shortest digits that parse back to the same f64.
        CursorValue::Real(f) => format!("{f:?}"),
        CursorValue::Text(t) => t.clone(),
        CursorValue::Blob(b) => format!("\\x{}", hex::encode(b)),
    }
}

/// Splits an optionally schema-qualified table name (`schema.table`) into its parts.
pub fn table_parts(table: &str) -> Vec<&str> {
    match table.split_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() => vec![schema, name],
        _ => vec![table],
    }
}

/// Checks that the `key` and `cursor` columns are among `columns` and builds the schema.
pub(crate) fn check_schema(
    dataset: &str,
    columns: Vec<Column>,
    key: &[String],
    cursor: Option<&str>,
) -> Result<DatasetSchema, SourceError> {
    let available = || columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let missing = |role: &'static str, column: &str| SourceError::MissingColumn {
        dataset: dataset.to_string(),
        role,
        column: column.to_string(),
        available: available(),
    };
    if let Some(k) = key.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
        return Err(missing("key", k));
    }
    if let Some(c) = cursor
        && !columns.iter().any(|col| col.name == c)
    {
        return Err(missing("cursor", c));
    }
    let schema =
        DatasetSchema { privacy: Default::default(), dataset: dataset.to_string(), key: key.to_vec(), columns };
    schema.validate().map_err(|e| SourceError::Schema { dataset: dataset.to_string(), problem: e.to_string() })?;
    Ok(schema)
}

/// Double-quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("ho_so"), "\"ho_so\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn cursor_values_match_cells_exactly() {
        assert!(CursorValue::Real(0.1 + 0.2).matches(Cell::Real(0.1 + 0.2)));
        assert!(!CursorValue::Real(0.3).matches(Cell::Real(0.1 + 0.2)));
        assert!(CursorValue::Int(3).matches(Cell::Real(3.0)));
        assert!(
            CursorValue::Text("2026-01-01T00:00:00.123456Z".into()).matches(Cell::Text(b"2026-01-01T00:00:00.123456Z"))
        );
        assert!(!CursorValue::Text("1".into()).matches(Cell::Int(1)));
    }
}

#[cfg(test)]
mod tests_local;
