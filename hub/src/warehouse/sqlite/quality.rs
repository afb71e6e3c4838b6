//! Data-quality records in the SQLite warehouse.
//!
//! `_kho_quality_violations(dataset, rule, key, column_name, value, seq, at)` holds the *open*
//! violations: one row per (dataset, rule, row key). A row's violations are replaced each time
//! the row is written (in the batch's own transaction), so a row fixed at the source clears its
//! violations with the next sync, and a deleted row takes its violations with it.
//!
//! `reference` and `unique` lookups probe the dataset table through an index on the looked-up
//! column, created the first time a rule needs it (`_kho_q_<dataset>__<column>`).

use std::collections::HashSet;

use kho_shared::protocol::QuarantinedRow;
use kho_shared::types::ColumnType;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::db;
use super::table::TableInfo;
use super::values::{Bind, to_bind};
use crate::quality::eval::RowVerdict;
use crate::warehouse::{HeldRow, QualityData, StoredQuarantine, StoredViolation, WarehouseError, quote_ident};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _kho_quality_violations (
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    rule TEXT NOT NULL,
    column_name TEXT,
    value TEXT,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (dataset, key, rule)
);
CREATE INDEX IF NOT EXISTS _kho_quality_violations_by_seq ON _kho_quality_violations (dataset, seq);
CREATE TABLE IF NOT EXISTS _kho_quarantine (
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    agent TEXT NOT NULL,
    reason TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    row_json TEXT,
    PRIMARY KEY (dataset, key)
);
CREATE INDEX IF NOT EXISTS _kho_quarantine_by_agent ON _kho_quarantine (agent, seq);
";

/// Holds and releases rows (see `Warehouse::quarantine`).
pub(super) fn quarantine(
    conn: &Connection,
    dataset: &str,
    agent: &str,
    held: &[HeldRow<'_>],
    clean: &[&str],
    now: &str,
) -> Result<Vec<String>, WarehouseError> {
    let mut hold = conn
        .prepare_cached(
            "INSERT INTO _kho_quarantine (dataset, key, agent, reason, seq, at, row_json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (dataset, key) DO UPDATE SET agent = excluded.agent, \
             reason = excluded.reason, seq = excluded.seq, at = excluded.at, row_json = excluded.row_json",
        )
        .map_err(db("quarantine rows"))?;
    for h in held {
        let row = h.row.map(|r| Value::Object(r.clone()).to_string());
        hold.execute(params![dataset, h.key, agent, h.reason, h.seq as i64, now, row])
            .map_err(db("quarantine rows"))?;
    }
    let mut release = conn
        .prepare_cached("DELETE FROM _kho_quarantine WHERE dataset = ?1 AND key = ?2")
        .map_err(db("release quarantined rows"))?;
    let mut released = Vec::new();
    let any: bool = conn
        .prepare_cached("SELECT count(*) > 0 FROM (SELECT 1 FROM _kho_quarantine WHERE dataset = ?1 LIMIT 1)")
        .and_then(|mut s| s.query_row([dataset], |r| r.get(0)))
        .map_err(db("read quarantine"))?;
    for key in clean.iter().filter(|_| any) {
        if release.execute(params![dataset, key]).map_err(db("release quarantined rows"))? > 0 {
            released.push(key.to_string());
        }
    }
    Ok(released)
}

/// See `Warehouse::quarantined_from`.
pub(super) fn quarantined_from(
    conn: &Connection,
    agent: &str,
    first: u64,
    last: u64,
    limit: usize,
) -> Result<Vec<QuarantinedRow>, WarehouseError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT dataset, key, reason FROM _kho_quarantine WHERE agent = ?1 AND seq BETWEEN ?2 AND ?3 \
             ORDER BY seq, dataset, key LIMIT ?4",
        )
        .map_err(db("read quarantine"))?;
    let (first, last) = (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
    let rows = stmt
        .query_map(params![agent, first, last, limit as i64], |r| {
            Ok(QuarantinedRow { dataset: r.get(0)?, key: r.get(1)?, reason: r.get(2)? })
        })
        .map_err(db("read quarantine"))?;
    rows.collect::<Result<_, _>>().map_err(db("read quarantine"))
}

/// Replaces the recorded violations of each row in `verdicts`. While the dataset has no row
/// violation recorded (e.g. during a clean initial load) the per-row clearing is skipped; the
/// dataset-level records (keys `{"_kho_…`: a period's row count, a sync's change share) do not
/// count, so they never slow a load down, and their own verdicts always clear.
pub(super) fn record(
    conn: &Connection,
    dataset: &str,
    verdicts: &[&RowVerdict],
    now: &str,
) -> Result<(), WarehouseError> {
    let any: bool = conn
        .prepare_cached(
            "SELECT count(*) > 0 FROM (SELECT 1 FROM _kho_quality_violations WHERE dataset = ?1 \
             AND key NOT LIKE '{\"\\_kho\\_%' ESCAPE '\\' LIMIT 1)",
        )
        .and_then(|mut s| s.query_row([dataset], |r| r.get(0)))
        .map_err(db("read violations"))?;
    let mut clear = conn
        .prepare_cached(
            "DELETE FROM _kho_quality_violations WHERE dataset = ?1 AND key IN (SELECT value FROM json_each(?2))",
        )
        .map_err(db("clear violations"))?;
    let mut insert = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO _kho_quality_violations (dataset, key, rule, column_name, value, seq, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db("record violations"))?;
    let to_clear: Vec<&str> = verdicts
        .iter()
        .map(|v| v.key.as_str())
        .filter(|k| any || k.starts_with(crate::warehouse::DATASET_LEVEL))
        .collect();
    let to_clear = with_violations(conn, dataset, to_clear)?;
    // One statement for the whole batch: the keys go in as a JSON array and SQLite probes the
    // primary key for each, instead of one DELETE per row.
    for chunk in to_clear.chunks(KEYS_PER_STATEMENT) {
        let keys = serde_json::to_string(chunk).map_err(|e| WarehouseError::database("encode a JSON array", e))?;
        clear.execute(params![dataset, keys]).map_err(db("clear violations"))?;
    }
    for v in verdicts {
        for f in &v.failures {
            insert
                .execute(params![dataset, v.key, f.rule, f.column, f.value, v.seq as i64, now])
                .map_err(db("record violations"))?;
        }
    }
    Ok(())
}

/// How many open violations of a dataset, per key of a batch, are still read in one pass.
const SCAN_PER_KEY: usize = 4;

/// The keys among `keys` that have open violations in `dataset`, found by reading the dataset's
/// violation keys in index order when there are at most [`SCAN_PER_KEY`] per key (a sequential
/// read costs a fraction of a primary-key probe per key, and most rows of a batch have nothing to
/// clear); otherwise `keys` unchanged, for the probing `DELETE` to sort out.
fn with_violations<'a>(conn: &Connection, dataset: &str, keys: Vec<&'a str>) -> Result<Vec<&'a str>, WarehouseError> {
    if keys.is_empty() {
        return Ok(keys);
    }
    let limit = keys.len().saturating_mul(SCAN_PER_KEY);
    let wanted: HashSet<&str> = keys.iter().copied().collect();
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT key FROM _kho_quality_violations WHERE dataset = ?1 LIMIT ?2")
        .map_err(db("read violations"))?;
    let mut rows = stmt.query(params![dataset, (limit + 1) as i64]).map_err(db("read violations"))?;
    let (mut read, mut found) = (0, HashSet::new());
    while let Some(row) = rows.next().map_err(db("read violations"))? {
        read += 1;
        if read > limit {
            return Ok(keys);
        }
        if let Some(key) = row.get_ref(0).ok().and_then(|v| v.as_str().ok())
            && let Some(k) = wanted.get(key)
        {
            found.insert(*k);
        }
    }
    Ok(keys.into_iter().filter(|k| found.contains(k)).collect())
}

/// Most values or keys sent to SQLite in one JSON array (bounds the statement's memory).
const KEYS_PER_STATEMENT: usize = 10_000;

/// Creates the index a lookup on `dataset.column` uses, once per connection.
pub(super) fn ensure_index(
    conn: &Connection,
    indexed: &mut HashSet<(String, String)>,
    dataset: &str,
    column: &str,
) -> Result<(), WarehouseError> {
    if indexed.contains(&(dataset.to_string(), column.to_string())) {
        return Ok(());
    }
    let name = quote_ident(&format!("_kho_q_{dataset}__{column}"));
    conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {name} ON {} ({})",
        quote_ident(dataset),
        quote_ident(column)
    ))
    .map_err(db(format!("index {dataset}.{column} for quality rules")))?;
    indexed.insert((dataset.to_string(), column.to_string()));
    Ok(())
}

/// The value bound as the column's type, so an `INTEGER` column finds `7` given `"7"`.
fn bind_for(table: &TableInfo, column: &str, value: &str) -> Bind<'static> {
    let ty = table.columns.iter().find(|c| c.name == column).map_or(ColumnType::Text, |c| c.ty);
    match ty {
        ColumnType::Int | ColumnType::Bool => value.parse().map_or(Bind::OwnedText(value.to_string()), Bind::Int),
        ColumnType::Float => value.parse().map_or(Bind::OwnedText(value.to_string()), Bind::Real),
        _ => Bind::OwnedText(value.to_string()),
    }
}

/// Whether a live row of `dataset` holds `value` in `column` (`false` for an unknown table or column).
pub(super) fn exists(
    conn: &Connection,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: &str,
    value: &str,
) -> Result<bool, WarehouseError> {
    let Some(table) = table.filter(|t| t.columns.iter().any(|c| c.name == column)) else { return Ok(false) };
    ensure_index(conn, indexed, dataset, column)?;
    let sql = format!(
        "SELECT 1 FROM {} WHERE {} = ?1 AND \"_kho_deleted\" = 0 LIMIT 1",
        quote_ident(dataset),
        quote_ident(column)
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db("quality lookup"))?;
    let found =
        stmt.query_row([bind_for(table, column, value)], |_| Ok(())).optional().map_err(db("quality lookup"))?;
    Ok(found.is_some())
}

/// For each of `values`, whether a live row of `dataset` holds it in `column`: [`exists`] for a
/// whole batch, as one query per [`KEYS_PER_STATEMENT`] values. The values go in as a JSON array
/// of the types [`bind_for`] would bind (integers for an integer column), and are compared with
/// `=` against the column exactly as a bound value is, through the same index. A `REAL` column
/// (rarely a lookup target) is asked value by value: a float need not survive the JSON round trip.
pub(super) fn existing(
    conn: &Connection,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: &str,
    values: &[&str],
) -> Result<Vec<bool>, WarehouseError> {
    let Some(table) = table.filter(|t| t.columns.iter().any(|c| c.name == column)) else {
        return Ok(vec![false; values.len()]);
    };
    let ty = table.columns.iter().find(|c| c.name == column).map_or(ColumnType::Text, |c| c.ty);
    if ty == ColumnType::Float {
        return values.iter().map(|v| exists(conn, indexed, Some(table), dataset, column, v)).collect();
    }
    ensure_index(conn, indexed, dataset, column)?;
    let sql = format!(
        "SELECT j.key FROM json_each(?1) j WHERE EXISTS (SELECT 1 FROM {} t WHERE t.{} = j.value \
         AND t.\"_kho_deleted\" = 0)",
        quote_ident(dataset),
        quote_ident(column)
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db("quality lookup"))?;
    let mut out = vec![false; values.len()];
    for (n, chunk) in values.chunks(KEYS_PER_STATEMENT).enumerate() {
        let typed: Vec<Value> = chunk
            .iter()
            .map(|v| match bind_for(table, column, v) {
                Bind::Int(i) => Value::from(i),
                _ => Value::from(*v),
            })
            .collect();
        let array = serde_json::to_string(&typed).map_err(|e| WarehouseError::database("encode a JSON array", e))?;
        let found = stmt.query_map([array], |r| r.get::<_, i64>(0)).map_err(db("quality lookup"))?;
        for i in found {
            let i = i.map_err(db("quality lookup"))?;
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(n * KEYS_PER_STATEMENT + i)) {
                *slot = true;
            }
        }
    }
    Ok(out)
}

/// Whether a live row of `dataset` other than the one keyed `key` holds `value` in `column`.
pub(super) fn taken_by_other(
    conn: &Connection,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: &str,
    value: &str,
    key: &Map<String, Value>,
) -> Result<bool, WarehouseError> {
    let Some(table) = table.filter(|t| t.columns.iter().any(|c| c.name == column)) else { return Ok(false) };
    ensure_index(conn, indexed, dataset, column)?;
    let same_key: Vec<String> =
        table.key.iter().enumerate().map(|(i, k)| format!("{} IS ?{}", quote_ident(k), i + 2)).collect();
    let sql = format!(
        "SELECT 1 FROM {} WHERE {} = ?1 AND \"_kho_deleted\" = 0 AND NOT ({}) LIMIT 1",
        quote_ident(dataset),
        quote_ident(column),
        same_key.join(" AND ")
    );
    let mut binds = vec![bind_for(table, column, value)];
    for k in &table.key {
        let ty = table.columns.iter().find(|c| &c.name == k).map_or(ColumnType::Text, |c| c.ty);
        binds.push(match to_bind(ty, key.get(k)) {
            Bind::Text(s) => Bind::OwnedText(s.to_string()),
            Bind::Null => Bind::Null,
            Bind::Int(i) => Bind::Int(i),
            Bind::Real(f) => Bind::Real(f),
            Bind::OwnedText(s) => Bind::OwnedText(s),
            Bind::Blob(b) => Bind::Blob(b),
        });
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(db("quality lookup"))?;
    let found = stmt
        .query_row(rusqlite::params_from_iter(binds.iter()), |_| Ok(()))
        .optional()
        .map_err(db("quality lookup"))?;
    Ok(found.is_some())
}

/// Open violations per (dataset, rule) and the latest `latest` violations of each dataset.
pub(super) fn read(conn: &Connection, latest: usize) -> Result<QualityData, WarehouseError> {
    let mut out = QualityData::default();
    let mut stmt = conn
        .prepare("SELECT dataset, rule, count(*) FROM _kho_quality_violations GROUP BY dataset, rule ORDER BY 1, 2")
        .map_err(db("read violations"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?.max(0) as u64)))
        .map_err(db("read violations"))?;
    for row in rows {
        out.open.push(row.map_err(db("read violations"))?);
    }
    let mut stmt = conn
        .prepare(
            "SELECT dataset, rule, column_name, key, value, seq, at FROM (SELECT *, row_number() OVER \
             (PARTITION BY dataset ORDER BY seq DESC, rule) AS n FROM _kho_quality_violations) WHERE n <= ?1 \
             ORDER BY dataset, seq DESC, rule",
        )
        .map_err(db("read violations"))?;
    let rows = stmt
        .query_map([latest as i64], |r| {
            Ok(StoredViolation {
                dataset: r.get(0)?,
                rule: r.get(1)?,
                column: r.get(2)?,
                key: r.get(3)?,
                value: r.get(4)?,
                seq: r.get::<_, i64>(5)?.max(0) as u64,
                at: r.get(6)?,
            })
        })
        .map_err(db("read violations"))?;
    for row in rows {
        out.latest.push(row.map_err(db("read violations"))?);
    }
    let mut stmt = conn
        .prepare("SELECT dataset, count(*) FROM _kho_quarantine GROUP BY dataset ORDER BY 1")
        .map_err(db("read quarantine"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))
        .map_err(db("read quarantine"))?;
    for row in rows {
        out.quarantined.push(row.map_err(db("read quarantine"))?);
    }
    let mut stmt = conn
        .prepare(
            "SELECT dataset, key, agent, reason, seq, at, row_json FROM (SELECT *, row_number() OVER \
             (PARTITION BY dataset ORDER BY seq DESC) AS n FROM _kho_quarantine) WHERE n <= ?1 \
             ORDER BY dataset, seq DESC",
        )
        .map_err(db("read quarantine"))?;
    let rows = stmt
        .query_map([latest as i64], |r| {
            Ok(StoredQuarantine {
                dataset: r.get(0)?,
                key: r.get(1)?,
                agent: r.get(2)?,
                reason: r.get(3)?,
                seq: r.get::<_, i64>(4)?.max(0) as u64,
                at: r.get(5)?,
                row: r.get(6)?,
                older_version_live: false,
            })
        })
        .map_err(db("read quarantine"))?;
    for row in rows {
        let mut q = row.map_err(db("read quarantine"))?;
        q.older_version_live = live_version(conn, &q.dataset, &q.key)?;
        out.latest_quarantined.push(q);
    }
    Ok(out)
}

/// Whether `dataset`'s table holds a live row keyed `key` (JSON text): one primary-key probe.
fn live_version(conn: &Connection, dataset: &str, key: &str) -> Result<bool, WarehouseError> {
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else { return Ok(false) };
    let exists: bool = conn
        .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1", [dataset], |r| r.get(0))
        .map_err(db("read quarantine"))?;
    if !exists || key.is_empty() {
        return Ok(false);
    }
    let cond: Vec<String> = key.keys().enumerate().map(|(i, k)| format!("{} = ?{}", quote_ident(k), i + 1)).collect();
    let sql = format!("SELECT 1 FROM {} WHERE {} AND \"_kho_deleted\" = 0", quote_ident(dataset), cond.join(" AND "));
    let binds: Vec<rusqlite::types::Value> = key
        .values()
        .map(|v| match v {
            Value::Number(n) => n.as_i64().map_or_else(
                || rusqlite::types::Value::Real(n.as_f64().unwrap_or_default()),
                rusqlite::types::Value::Integer,
            ),
            Value::String(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Null => rusqlite::types::Value::Null,
            other => rusqlite::types::Value::Text(other.to_string()),
        })
        .collect();
    // A key naming a column the table lacks is not a live row.
    let found = conn.query_row(&sql, rusqlite::params_from_iter(binds), |_| Ok(())).optional();
    Ok(matches!(found, Ok(Some(()))))
}
