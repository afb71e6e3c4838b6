//! A MySQL or MariaDB table, view or query as a source.
//!
//! The synchronous `mysql` client fits the blocking [`Source`] trait (capture runs on a blocking
//! thread). The session is set up for exact, portable values: `utf8mb4` (Vietnamese text byte for
//! byte), `time_zone = '+00:00'` (a `TIMESTAMP` reads as UTC and is written with `Z`; `DATETIME`
//! has no zone and none is added).
//!
//! - **Consistent:** each scan runs in `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at
//!   REPEATABLE READ.
//! - **Streamed:** rows are read from the socket one at a time (the prepared statement's result is
//!   not buffered), so memory does not grow with the table. The server aborts a result the client
//!   stops reading for `net_write_timeout`; it is raised to [`NET_WRITE_TIMEOUT_S`] so a capture
//!   paused by a full outbox is not cut off at once (if it is, the poll fails and is retried, and
//!   committed chunks stand). Stopping a scan early reads the rest of the result off the socket.
//! - **Exact types:** values come through the binary protocol; `DECIMAL` arrives as its exact
//!   digits; a cursor value is bound back and `CAST` to the column's type (`DATETIME(6)`,
//!   `DECIMAL(65,s)`, `DATE`), so microseconds and decimals compare exactly.
//! - `TINYINT(1)` stays an integer (it can hold 2..127); `BIT(1)` is a boolean. MariaDB's `JSON` is
//!   a `LONGTEXT` alias and reads as text.

use std::ops::ControlFlow;
use std::time::Duration;

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use mysql::consts::{ColumnFlags, ColumnType as My};
use mysql::prelude::Queryable;
use mysql::{AccessMode, Conn, IsolationLevel, Opts, OptsBuilder, Params, SslOpts, TxOpts, Value};

use super::remote::{RemoteError, RemoteSourceConfig, SslMode};
use super::row::{RowBuf, write_date, write_time};
use super::{CursorValue, RowView, ScanRange, Source, SourceError, table_parts};

/// How long connecting may take before the poll fails and is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds the server waits for the agent to read more of a result (see the module doc).
pub const NET_WRITE_TIMEOUT_S: u32 = 3600;
/// MySQL's character set number for binary strings (BLOB, BINARY, VARBINARY).
const BINARY_CHARSET: u16 = 63;

/// How one column is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    /// BIGINT UNSIGNED: may exceed i64, so it travels as an exact decimal.
    UnsignedBig,
    Float,
    Decimal,
    Text,
    Bytes,
    Date,
    Datetime,
    Timestamp,
    Json,
}

impl Kind {
    fn of(c: &mysql::Column) -> Kind {
        let binary = c.character_set() == BINARY_CHARSET;
        match c.column_type() {
            My::MYSQL_TYPE_TINY
            | My::MYSQL_TYPE_SHORT
            | My::MYSQL_TYPE_INT24
            | My::MYSQL_TYPE_LONG
            | My::MYSQL_TYPE_YEAR => Kind::Int,
            My::MYSQL_TYPE_LONGLONG if c.flags().contains(ColumnFlags::UNSIGNED_FLAG) => Kind::UnsignedBig,
            My::MYSQL_TYPE_LONGLONG => Kind::Int,
            My::MYSQL_TYPE_DECIMAL | My::MYSQL_TYPE_NEWDECIMAL => Kind::Decimal,
            My::MYSQL_TYPE_FLOAT | My::MYSQL_TYPE_DOUBLE => Kind::Float,
            My::MYSQL_TYPE_BIT if c.column_length() == 1 => Kind::Bool,
            My::MYSQL_TYPE_BIT | My::MYSQL_TYPE_GEOMETRY => Kind::Bytes,
            My::MYSQL_TYPE_DATE | My::MYSQL_TYPE_NEWDATE => Kind::Date,
            My::MYSQL_TYPE_DATETIME | My::MYSQL_TYPE_DATETIME2 => Kind::Datetime,
            My::MYSQL_TYPE_TIMESTAMP | My::MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp,
            My::MYSQL_TYPE_JSON => Kind::Json,
            My::MYSQL_TYPE_VARCHAR
            | My::MYSQL_TYPE_VAR_STRING
            | My::MYSQL_TYPE_STRING
            | My::MYSQL_TYPE_TINY_BLOB
            | My::MYSQL_TYPE_MEDIUM_BLOB
            | My::MYSQL_TYPE_LONG_BLOB
            | My::MYSQL_TYPE_BLOB
                if binary =>
            {
                Kind::Bytes
            }
            _ => Kind::Text,
        }
    }

    fn portable(self) -> ColumnType {
        match self {
            Kind::Bool => ColumnType::Bool,
            Kind::Int => ColumnType::Int,
            Kind::UnsignedBig | Kind::Decimal => ColumnType::Decimal,
            Kind::Float => ColumnType::Float,
            Kind::Text => ColumnType::Text,
            Kind::Bytes => ColumnType::Bytes,
            Kind::Date => ColumnType::Date,
            Kind::Datetime | Kind::Timestamp => ColumnType::Timestamp,
            Kind::Json => ColumnType::Json,
        }
    }
}

/// A discovered column.
#[derive(Debug, Clone)]
struct MyColumn {
    name: String,
    kind: Kind,
    /// Digits after the point (DECIMAL), clamped to MySQL's maximum of 30.
    scale: u8,
}

/// A dataset read from MySQL or MariaDB.
pub struct MysqlSource {
    dataset: String,
    /// `host:port/database`, for messages (never the password).
    server: String,
    /// What follows FROM: a quoted (schema-qualified) table or a parenthesised query.
    from: String,
    conn: Conn,
    columns: Vec<MyColumn>,
}

/// Backquotes a MySQL identifier, doubling embedded backquotes.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl MysqlSource {
    /// Connects to the server named by `remote`.
    pub fn open(
        dataset: &str,
        remote: &RemoteSourceConfig,
        table: Option<&str>,
        query: Option<&str>,
    ) -> Result<MysqlSource, SourceError> {
        let bad_url = |e: mysql::UrlError| SourceError::Connect {
            dataset: dataset.to_string(),
            server: "MySQL (bad url)".into(),
            source: RemoteError::Mysql(e.into()),
        };
        let opts = Opts::from_url(&remote.url).map_err(bad_url)?;
        let server =
            format!("mysql {}:{}/{}", opts.get_ip_or_hostname(), opts.get_tcp_port(), opts.get_db_name().unwrap_or(""));
        let mut builder = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
            .stmt_cache_size(Some(0))
            .init(vec![
                "SET NAMES utf8mb4".to_string(),
                "SET time_zone = '+00:00'".to_string(),
                format!("SET SESSION net_write_timeout = {NET_WRITE_TIMEOUT_S}"),
            ]);
        if let Some(pw) =
            remote.password().map_err(|problem| SourceError::Credential { dataset: dataset.to_string(), problem })?
        {
            builder = builder.pass(Some(pw));
        }
        if remote.sslmode == SslMode::Require {
            crate::forward::https::install_crypto_provider();
            builder = builder.ssl_opts(SslOpts::default().with_root_cert_path(remote.ssl_root_cert.clone()));
        }
        let conn = Conn::new(builder).map_err(|e| SourceError::Connect {
            dataset: dataset.to_string(),
            server: server.clone(),
            source: RemoteError::Mysql(e),
        })?;
        let from = match (table, query) {
            (Some(t), _) => table_parts(t).into_iter().map(quote_ident).collect::<Vec<_>>().join("."),
            (None, Some(q)) => format!("({})", q.trim().trim_end_matches(';')),
            (None, None) => String::new(),
        };
        Ok(MysqlSource { dataset: dataset.to_string(), server, from, conn, columns: Vec::new() })
    }

    fn query_err(&self, e: impl Into<RemoteError>) -> SourceError {
        SourceError::Query { dataset: self.dataset.clone(), server: self.server.clone(), source: e.into() }
    }

    fn discover_columns(&mut self) -> Result<(), SourceError> {
        let sql = format!("SELECT * FROM {} AS q", self.from);
        let stmt = self.conn.prep(&sql).map_err(|e| self.query_err(e))?;
        self.columns = stmt
            .columns()
            .iter()
            .map(|c| MyColumn { name: c.name_str().into_owned(), kind: Kind::of(c), scale: c.decimals().min(30) })
            .collect();
        self.conn.close(stmt).map_err(|e| self.query_err(e))?;
        Ok(())
    }

    fn column(&self, name: &str) -> Result<&MyColumn, SourceError> {
        self.columns.iter().find(|c| c.name == name).ok_or_else(|| SourceError::MissingColumn {
            dataset: self.dataset.clone(),
            role: "scanned",
            column: name.to_string(),
            available: self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

impl Source for MysqlSource {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        self.discover_columns()?;
        let columns = self.columns.iter().map(|c| Column { name: c.name.clone(), ty: c.kind.portable() }).collect();
        super::check_schema(&self.dataset, columns, key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        if self.columns.is_empty() {
            self.discover_columns()?;
        }
        let kinds =
            schema.columns.iter().map(|c| Ok(self.column(&c.name)?.kind)).collect::<Result<Vec<_>, SourceError>>()?;
        let select: Vec<String> = schema.columns.iter().map(|c| format!("q.{}", quote_ident(&c.name))).collect();
        let mut sql = format!("SELECT {} FROM {} AS q", select.join(", "), self.from);
        let mut params = Params::Empty;
        match range {
            ScanRange::KeyOrder => {
                let key: Vec<String> = schema.key.iter().map(|k| format!("q.{}", quote_ident(k))).collect();
                sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
            }
            ScanRange::CursorFrom { column, from } => {
                let c = format!("q.{}", quote_ident(column));
                sql.push_str(&format!(" WHERE {c} IS NOT NULL"));
                if let Some(v) = from {
                    let col = self.column(column)?;
                    let (expr, value) = cursor_bind(col, v);
                    sql.push_str(&format!(" AND {c} >= {expr}"));
                    params = Params::Positional(vec![value]);
                }
                sql.push_str(&format!(" ORDER BY {c}"));
            }
        }
        let (dataset, server) = (self.dataset.clone(), self.server.clone());
        let err = |e: RemoteError| SourceError::Query { dataset: dataset.clone(), server: server.clone(), source: e };
        let opts = TxOpts::default()
            .set_with_consistent_snapshot(true)
            .set_isolation_level(Some(IsolationLevel::RepeatableRead))
            .set_access_mode(Some(AccessMode::ReadOnly));
        let mut tx = self.conn.start_transaction(opts).map_err(|e| err(e.into()))?;
        let mut buf = RowBuf::default();
        {
            let result = tx.exec_iter(sql.as_str(), params).map_err(|e| err(e.into()))?;
            for row in result {
                let row = row.map_err(|e| err(e.into()))?;
                buf.clear();
                for (i, kind) in kinds.iter().enumerate() {
                    decode(*kind, row.as_ref(i).unwrap_or(&Value::NULL), &mut buf);
                }
                if visit(&buf).is_break() {
                    break;
                }
            }
        }
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    fn count_null(&mut self, column: &str) -> Result<u64, SourceError> {
        let sql = format!("SELECT count(*) FROM {} AS q WHERE q.{} IS NULL", self.from, quote_ident(column));
        let n: Option<u64> = self.conn.query_first(sql).map_err(|e| self.query_err(e))?;
        Ok(n.unwrap_or(0))
    }
}

/// The SQL expression and value a stored cursor is compared with: cast to the column's own type.
fn cursor_bind(col: &MyColumn, v: &CursorValue) -> (String, Value) {
    let value = match v {
        CursorValue::Int(i) => Value::Int(*i),
        CursorValue::Real(f) => Value::Double(*f),
        CursorValue::Blob(b) => Value::Bytes(b.clone()),
        // A TIMESTAMP reads as UTC with `Z`; the session time zone is UTC, so the instant is the
        // same without it (MySQL does not parse the suffix).
        CursorValue::Text(t) => Value::Bytes(t.strip_suffix('Z').unwrap_or(t).as_bytes().to_vec()),
    };
    let expr = match col.kind {
        Kind::Date => "CAST(? AS DATE)".to_string(),
        Kind::Datetime | Kind::Timestamp => "CAST(? AS DATETIME(6))".to_string(),
        Kind::Decimal => format!("CAST(? AS DECIMAL(65,{}))", col.scale),
        Kind::UnsignedBig => "CAST(? AS UNSIGNED)".to_string(),
        _ => "?".to_string(),
    };
    (expr, value)
}

/// Decodes one binary-protocol value of `kind` into `out`.
fn decode(kind: Kind, v: &Value, out: &mut RowBuf) {
    match v {
        Value::NULL => out.push_null(),
        Value::Int(i) if kind == Kind::Decimal || kind == Kind::UnsignedBig => out.push_text(i.to_string().as_bytes()),
        Value::Int(i) => out.push_int(*i),
        Value::UInt(u) => match i64::try_from(*u) {
            Ok(i) if kind != Kind::UnsignedBig && kind != Kind::Decimal => out.push_int(i),
            _ => out.push_text(u.to_string().as_bytes()),
        },
        Value::Float(f) => out.push_real(super::postgres::decode::f32_as_shown(*f)),
        Value::Double(d) => out.push_real(*d),
        Value::Bytes(b) => match kind {
            Kind::Bytes => out.push_blob(b),
            Kind::Bool => out.push_int(i64::from(b.iter().any(|x| *x != 0))),
            _ => out.push_text(b),
        },
        Value::Date(y, m, d, h, mi, s, us) => out.push_text_with(|o| {
            write_date(o, i64::from(*y), u32::from(*m), u32::from(*d));
            if kind != Kind::Date {
                write_time(o, u32::from(*h), u32::from(*mi), u32::from(*s), *us);
                if kind == Kind::Timestamp {
                    o.push(b'Z');
                }
            }
        }),
        Value::Time(neg, days, h, mi, s, us) => out.push_text_with(|o| {
            let hours = days * 24 + u32::from(*h);
            let sign = if *neg { "-" } else { "" };
            o.extend_from_slice(format!("{sign}{hours:02}:{mi:02}:{s:02}").as_bytes());
            if *us != 0 {
                o.extend_from_slice(format!(".{us:06}").as_bytes());
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::Cell;

    #[test]
    fn values_decode_to_portable_cells() {
        let mut r = RowBuf::default();
        decode(Kind::Datetime, &Value::Date(2026, 1, 2, 3, 4, 5, 6), &mut r);
        decode(Kind::Timestamp, &Value::Date(2026, 1, 2, 3, 4, 5, 0), &mut r);
        decode(Kind::Date, &Value::Date(2026, 1, 2, 0, 0, 0, 0), &mut r);
        decode(Kind::UnsignedBig, &Value::UInt(u64::MAX), &mut r);
        decode(Kind::Decimal, &Value::Bytes(b"-12.50".to_vec()), &mut r);
        decode(Kind::Text, &Value::Time(true, 1, 2, 3, 4, 5), &mut r);
        decode(Kind::Bool, &Value::Bytes(vec![1]), &mut r);
        decode(Kind::Float, &Value::Float(0.1), &mut r);
        assert_eq!(r.cell(0).unwrap(), Cell::Text(b"2026-01-02T03:04:05.000006"));
        assert_eq!(r.cell(1).unwrap(), Cell::Text(b"2026-01-02T03:04:05Z"));
        assert_eq!(r.cell(2).unwrap(), Cell::Text(b"2026-01-02"));
        assert_eq!(r.cell(3).unwrap(), Cell::Text(b"18446744073709551615"));
        assert_eq!(r.cell(4).unwrap(), Cell::Text(b"-12.50"));
        assert_eq!(r.cell(5).unwrap(), Cell::Text(b"-26:03:04.000005"));
        assert_eq!(r.cell(6).unwrap(), Cell::Int(1));
        assert_eq!(r.cell(7).unwrap(), Cell::Real(0.1));
    }

    #[test]
    fn identifiers_are_backquoted() {
        assert_eq!(quote_ident("ho_so"), "`ho_so`");
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
