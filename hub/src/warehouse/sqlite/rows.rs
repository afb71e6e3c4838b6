//! Live rows of a dataset table for the open-data API (see [`crate::warehouse::rows`]): a fresh
//! read-only connection per read, one read transaction (WAL: a snapshot that never blocks the
//! writer; a long download only delays checkpointing past its snapshot).

use std::path::Path;

use base64::Engine as _;
use kho_shared::protocol::Column;
use kho_shared::types::ColumnType;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::Value;

use super::db;
use crate::warehouse::rows::{ROW_CHUNK, RecentChange, RowChunk, RowQuery, like_pattern};
use crate::warehouse::{WarehouseError, quote_ident};

/// Reads `dataset`'s live rows from the warehouse file at `path`; `false` if it has no table.
pub fn read_live(
    path: &Path,
    dataset: &str,
    query: &RowQuery,
    emit: &mut dyn FnMut(RowChunk) -> bool,
) -> Result<bool, WarehouseError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db(format!("open {} read-only", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db("busy_timeout"))?;
    let tx = conn.unchecked_transaction().map_err(db("read rows"))?;
    let found: Option<(String, String)> = tx
        .query_row("SELECT key_json, columns_json FROM _kho_datasets WHERE dataset = ?1", [dataset], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(db(format!("read rows of {dataset}")))?;
    let Some((key_json, columns_json)) = found else { return Ok(false) };
    let key: Vec<String> = serde_json::from_str(&key_json).unwrap_or_default();
    let columns: Vec<Column> = serde_json::from_str(&columns_json).unwrap_or_default();
    let (filter, pattern) = filter_sql(&columns, query.q.as_deref());
    let table = quote_ident(dataset);
    let total = if query.with_total {
        let sql = format!("SELECT count(*) FROM {table} WHERE {filter}");
        let n: i64 = match &pattern {
            Some(p) => tx.query_row(&sql, [p], |r| r.get(0)),
            None => tx.query_row(&sql, [], |r| r.get(0)),
        }
        .map_err(db(format!("count rows of {dataset}")))?;
        Some(n.max(0) as u64)
    } else {
        None
    };
    if !emit(RowChunk::Header { columns: columns.clone(), total }) {
        return Ok(true);
    }
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let order: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let limit = query.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {} FROM {table} WHERE {filter} ORDER BY {} LIMIT {limit} OFFSET {offset}",
        if names.is_empty() { "NULL".to_string() } else { names.join(", ") },
        if order.is_empty() { "rowid".to_string() } else { order.join(", ") },
    );
    let mut stmt = tx.prepare(&sql).map_err(db(format!("read rows of {dataset}")))?;
    let mut rows = match &pattern {
        Some(p) => stmt.query([p]),
        None => stmt.query([]),
    }
    .map_err(db(format!("read rows of {dataset}")))?;
    let mut chunk = Vec::with_capacity(ROW_CHUNK);
    while let Some(row) = rows.next().map_err(db(format!("read rows of {dataset}")))? {
        let mut values = Vec::with_capacity(columns.len());
        for (i, col) in columns.iter().enumerate() {
            values.push(to_json(col.ty, row.get_ref(i).map_err(db(format!("read rows of {dataset}")))?));
        }
        chunk.push(values);
        if chunk.len() == ROW_CHUNK
            && !emit(RowChunk::Rows(std::mem::replace(&mut chunk, Vec::with_capacity(ROW_CHUNK))))
        {
            return Ok(true);
        }
    }
    if !chunk.is_empty() {
        emit(RowChunk::Rows(chunk));
    }
    Ok(true)
}

/// The newest `limit` writes to `dataset`, on the reader's connection.
pub fn recent_changes(conn: &Connection, dataset: &str, limit: usize) -> Result<Vec<RecentChange>, WarehouseError> {
    let key_json: Option<String> = conn
        .query_row("SELECT key_json FROM _kho_datasets WHERE dataset = ?1", [dataset], |r| r.get(0))
        .optional()
        .map_err(db(format!("recent changes of {dataset}")))?;
    let Some(key_json) = key_json else { return Ok(Vec::new()) };
    let key: Vec<String> = serde_json::from_str(&key_json).unwrap_or_default();
    let cols: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let sql = format!(
        "SELECT {}\"_kho_deleted\", \"_kho_applied_at\", \"_kho_agent\", \"_kho_seq\" FROM {} \
         ORDER BY \"_kho_applied_at\" DESC, \"_kho_seq\" DESC LIMIT {limit}",
        cols.iter().map(|c| format!("{c}, ")).collect::<String>(),
        quote_ident(dataset)
    );
    let ctx = || format!("recent changes of {dataset}");
    let mut stmt = conn.prepare(&sql).map_err(db(ctx()))?;
    let mut rows = stmt.query([]).map_err(db(ctx()))?;
    let mut out = Vec::new();
    let n = key.len();
    while let Some(r) = rows.next().map_err(db(ctx()))? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(to_json(ColumnType::Text, r.get_ref(i).map_err(db(ctx()))?));
        }
        out.push(RecentChange {
            key: values,
            deleted: r.get::<_, i64>(n).map_err(db(ctx()))? != 0,
            applied_at: r.get(n + 1).map_err(db(ctx()))?,
            agent: r.get(n + 2).map_err(db(ctx()))?,
            seq: r.get(n + 3).map_err(db(ctx()))?,
        });
    }
    Ok(out)
}

/// The `WHERE` condition for live rows matching `q`, and the bound pattern (`?1`) if any.
fn filter_sql(columns: &[Column], q: Option<&str>) -> (String, Option<String>) {
    let live = "\"_kho_deleted\" = 0".to_string();
    match q.filter(|q| !q.is_empty()) {
        Some(q) if !columns.is_empty() => {
            let any: Vec<String> =
                columns.iter().map(|c| format!("CAST({} AS TEXT) LIKE ?1 ESCAPE '\\'", quote_ident(&c.name))).collect();
            (format!("{live} AND ({})", any.join(" OR ")), Some(like_pattern(q)))
        }
        Some(_) => (format!("{live} AND 0"), None),
        None => (live, None),
    }
}

/// A stored value back in its wire form ([`kho_shared::types`]).
fn to_json(ty: ColumnType, v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if ty == ColumnType::Bool => Value::Bool(i != 0),
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) if f.is_nan() => Value::from("NaN"),
        ValueRef::Real(f) if f.is_infinite() => Value::from(if f > 0.0 { "Infinity" } else { "-Infinity" }),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            if ty == ColumnType::Json {
                serde_json::from_str(&s).unwrap_or_else(|_| Value::String(s.into_owned()))
            } else {
                Value::String(s.into_owned())
            }
        }
        ValueRef::Blob(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_in_wire_form() {
        assert_eq!(to_json(ColumnType::Bool, ValueRef::Integer(1)), Value::Bool(true));
        assert_eq!(to_json(ColumnType::Int, ValueRef::Integer(7)), Value::from(7));
        assert_eq!(to_json(ColumnType::Float, ValueRef::Real(f64::INFINITY)), Value::from("Infinity"));
        assert_eq!(to_json(ColumnType::Json, ValueRef::Text(b"{\"a\":1}")), serde_json::json!({"a": 1}));
        assert_eq!(to_json(ColumnType::Text, ValueRef::Text("Sơn La".as_bytes())), Value::from("Sơn La"));
        assert_eq!(to_json(ColumnType::Bytes, ValueRef::Blob(b"hi")), Value::from("aGk="));
    }

    #[test]
    fn a_query_searches_every_column_of_live_rows() {
        let cols = vec![
            Column { name: "id".into(), ty: ColumnType::Int },
            Column { name: "ten".into(), ty: ColumnType::Text },
        ];
        assert_eq!(filter_sql(&cols, None), ("\"_kho_deleted\" = 0".into(), None));
        let (sql, p) = filter_sql(&cols, Some("La"));
        assert!(sql.starts_with("\"_kho_deleted\" = 0 AND (CAST(\"id\" AS TEXT) LIKE ?1"), "{sql}");
        assert_eq!(p.as_deref(), Some("%La%"));
    }
}
