//! Reading a dataset's current rows out of the warehouse, for the open-data API.
//!
//! [`WarehouseReader::read_live`](super::WarehouseReader::read_live) runs on a blocking thread
//! and on a connection of its own (a download may take minutes and must not hold up status
//! pages or the evaluator), inside one read-only transaction so the count and the rows come from
//! the same commit. It hands rows out in chunks of at most [`ROW_CHUNK`] through a callback, so
//! memory stays bounded however large the table; the callback returns `false` to stop early (the
//! client went away).
//!
//! Only live rows are read (`_kho_deleted` false), in key order, and only the dataset's own
//! columns: the `_kho_*` bookkeeping columns never leave the warehouse. Values come back in the
//! wire form of [`kho_shared::types`] (bools as booleans, bytes as base64, …).

use kho_shared::protocol::Column;
use serde_json::Value;

/// Rows per chunk handed to the callback.
pub const ROW_CHUNK: usize = 500;

/// Which live rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowQuery {
    /// Keep only rows where some column's text contains this (case-insensitive for ASCII in
    /// SQLite, for all of Unicode in PostgreSQL).
    pub q: Option<String>,
    pub offset: u64,
    /// At most this many rows; `None` for all.
    pub limit: Option<u64>,
    /// Also count the matching rows (ignoring offset and limit).
    pub with_total: bool,
}

/// What [`WarehouseReader::read_live`](super::WarehouseReader::read_live) hands out: first one
/// header, then row chunks (each row's values in `columns` order).
#[derive(Debug, Clone, PartialEq)]
pub enum RowChunk {
    Header { columns: Vec<Column>, total: Option<u64> },
    Rows(Vec<Vec<Value>>),
}

/// Rows shown as a dataset's recent changes.
pub const RECENT_CHANGES: usize = 10;

/// One of a dataset's most recently written rows (dashboard: "recent changes"). Only the last
/// change of each key is kept in the table, so this is the newest write per key, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentChange {
    /// The key columns' values, in key order.
    pub key: Vec<Value>,
    pub deleted: bool,
    pub applied_at: Option<String>,
    pub agent: Option<String>,
    pub seq: Option<i64>,
}

/// The `LIKE` pattern for a free-text query: `%q%` with `\`, `%` and `_` escaped (use with
/// `ESCAPE '\'`).
pub fn like_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for ch in q.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like_pattern("Sơn La"), "%Sơn La%");
        assert_eq!(super::like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
