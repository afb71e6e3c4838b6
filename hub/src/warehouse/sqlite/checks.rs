//! The periodic quality pass in the SQLite warehouse: set-based full checks of `unique` /
//! `reference` rules, replacing a rule's open violations with what a check found, row counts per
//! period, and the per-period history (`_kho_quality_history`).
//!
//! A full check is one query per rule: an anti-join (`reference`) or a self-join (`unique`) over
//! the index the ingest lookups already use (`_kho_q_<dataset>__<column>`), never a probe per row.

use std::collections::{HashMap, HashSet};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde_json::{Map, Value};

use super::db;
use super::quality::ensure_index;
use super::table::TableInfo;
use crate::warehouse::{Found, FullCheck, QualityPeriod, WarehouseError, quote_ident};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _kho_quality_history (
    dataset TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL,
    rows INTEGER NOT NULL,
    quarantined INTEGER NOT NULL,
    score REAL,
    rules_json TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (dataset, period)
);
";

/// A stored value as JSON, as a batch would have carried it.
fn json_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => Value::Null,
    }
}

/// Live rows of `dataset` (0 without a table).
pub(super) fn live_rows(conn: &Connection, table: Option<&TableInfo>, dataset: &str) -> Result<u64, WarehouseError> {
    if table.is_none() {
        return Ok(0);
    }
    let sql = format!("SELECT count(*) FROM {} WHERE \"_kho_deleted\" = 0", quote_ident(dataset));
    let n: i64 = conn.query_row(&sql, [], |r| r.get(0)).map_err(db(format!("count {dataset}")))?;
    Ok(n.max(0) as u64)
}

/// The live rows of `dataset` breaking `check`.
pub(super) fn full_check(
    conn: &Connection,
    indexed: &mut HashSet<(String, String)>,
    tables: &HashMap<String, TableInfo>,
    dataset: &str,
    check: &FullCheck,
) -> Result<Vec<Found>, WarehouseError> {
    let Some(table) = tables.get(dataset) else { return Ok(Vec::new()) };
    let has = |t: &TableInfo, c: &str| t.columns.iter().any(|x| x.name == c);
    let (column, condition) = match check {
        FullCheck::Unique { column } => {
            if !has(table, column) {
                return Ok(Vec::new());
            }
            ensure_index(conn, indexed, dataset, column)?;
            let c = quote_ident(column);
            let same_key: Vec<String> =
                table.key.iter().map(|k| format!("o.{q} IS t.{q}", q = quote_ident(k))).collect();
            let cond = format!(
                "EXISTS (SELECT 1 FROM {d} o WHERE o.{c} = t.{c} AND o.\"_kho_deleted\" = 0 AND NOT ({same}) \
                 AND (o.\"_kho_seq\" < t.\"_kho_seq\" OR (o.\"_kho_seq\" = t.\"_kho_seq\" \
                 AND coalesce(o.\"_kho_agent\", '') < coalesce(t.\"_kho_agent\", ''))))",
                d = quote_ident(dataset),
                same = same_key.join(" AND ")
            );
            (column, cond)
        }
        FullCheck::Reference { column, dataset: other, ref_column } => {
            if !has(table, column) {
                return Ok(Vec::new());
            }
            let cond = match tables.get(other).filter(|t| has(t, ref_column)) {
                // No such table or column (yet): every value misses, as at ingest.
                None => "1".to_string(),
                Some(_) => {
                    ensure_index(conn, indexed, other, ref_column)?;
                    format!(
                        "NOT EXISTS (SELECT 1 FROM {} r WHERE r.{} = t.{} AND r.\"_kho_deleted\" = 0)",
                        quote_ident(other),
                        quote_ident(ref_column),
                        quote_ident(column)
                    )
                }
            };
            (column, cond)
        }
    };
    let c = quote_ident(column);
    let keys: Vec<String> = table.key.iter().map(|k| format!("t.{}", quote_ident(k))).collect();
    let sql = format!(
        "SELECT {keys}, CAST(t.{c} AS TEXT), t.\"_kho_seq\" FROM {d} t WHERE t.\"_kho_deleted\" = 0 \
         AND t.{c} IS NOT NULL AND trim(CAST(t.{c} AS TEXT)) <> '' AND {condition}",
        keys = keys.join(", "),
        d = quote_ident(dataset),
    );
    let n = table.key.len();
    let mut stmt = conn.prepare(&sql).map_err(db(format!("full check of {dataset}")))?;
    let rows = stmt
        .query_map([], |r| {
            let mut key = Map::new();
            for (i, k) in table.key.iter().enumerate() {
                key.insert(k.clone(), json_of(r.get_ref(i)?));
            }
            Ok(Found {
                key: Value::Object(key).to_string(),
                value: r.get(n)?,
                seq: r.get::<_, Option<i64>>(n + 1)?.unwrap_or(0).max(0) as u64,
            })
        })
        .map_err(db(format!("full check of {dataset}")))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db(format!("full check of {dataset}")))
}

/// Makes `found` the open violations of `rule` in `dataset`; `(opened, closed)`. Violations of
/// quarantined rows are left alone: those rows are not live, so no full check sees them.
pub(super) fn replace_violations(
    conn: &Connection,
    dataset: &str,
    rule: &str,
    column: Option<&str>,
    found: &[Found],
    now: &str,
) -> Result<(u64, u64), WarehouseError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT key FROM _kho_quality_violations v WHERE dataset = ?1 AND rule = ?2 AND NOT EXISTS \
             (SELECT 1 FROM _kho_quarantine q WHERE q.dataset = v.dataset AND q.key = v.key)",
        )
        .map_err(db("read violations"))?;
    let open: HashSet<String> = stmt
        .query_map(params![dataset, rule], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(db("read violations"))?;
    let now_found: HashSet<&str> = found.iter().map(|f| f.key.as_str()).collect();
    let mut close = conn
        .prepare_cached("DELETE FROM _kho_quality_violations WHERE dataset = ?1 AND rule = ?2 AND key = ?3")
        .map_err(db("close violations"))?;
    let mut closed = 0;
    for key in open.iter().filter(|k| !now_found.contains(k.as_str())) {
        closed += close.execute(params![dataset, rule, key]).map_err(db("close violations"))? as u64;
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO _kho_quality_violations (dataset, key, rule, column_name, value, seq, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db("record violations"))?;
    let mut opened = 0;
    for f in found {
        if !open.contains(&f.key) {
            insert
                .execute(params![dataset, f.key, rule, column, f.value, f.seq as i64, now])
                .map_err(db("record violations"))?;
            opened += 1;
        } else if column.is_none() {
            // A dataset-level rule: the value (e.g. "0 rows, fewer than 1") may have changed.
            insert
                .execute(params![dataset, f.key, rule, column, f.value, f.seq as i64, now])
                .map_err(db("record violations"))?;
        }
    }
    Ok((opened, closed))
}

/// Live rows of `dataset` in `[start, end)` by `column` (text dates compare as text) or by
/// `_kho_applied_at`.
pub(super) fn rows_in_period(
    conn: &Connection,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: Option<&str>,
    start: &str,
    end: &str,
) -> Result<u64, WarehouseError> {
    let Some(table) = table else { return Ok(0) };
    let (column, short) = match column {
        Some(c) if !table.columns.iter().any(|x| x.name == c) => return Ok(0),
        Some(c) => (c, crate::apply::activity::short_business_dates(start, end)),
        None => ("_kho_applied_at", Vec::new()),
    };
    ensure_index(conn, indexed, dataset, column)?;
    let c = quote_ident(column);
    // Full dates and timestamps by range; a month or a year (`2026-02`, `2026` as text or number)
    // by its spelling, since as text it sorts before its own first day.
    let sql = format!(
        "SELECT count(*) FROM {} WHERE (({c} >= ?1 AND {c} < ?2 AND length({c}) >= 10) \
         OR {c} IN (SELECT value FROM json_each(?3))) AND \"_kho_deleted\" = 0",
        quote_ident(dataset)
    );
    let short = serde_json::to_string(&short).unwrap_or_else(|_| "[]".into());
    let n: i64 = conn
        .query_row(&sql, params![start, end, short], |r| r.get(0))
        .map_err(db(format!("count {dataset} per period")))?;
    Ok(n.max(0) as u64)
}

pub(super) fn record_history(conn: &Connection, rows: &[QualityPeriod]) -> Result<(), WarehouseError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO _kho_quality_history \
             (dataset, period, period_start, period_end, rows, quarantined, score, rules_json, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(db("write quality history"))?;
    for p in rows {
        let rules = serde_json::to_string(&p.rules).unwrap_or_else(|_| "{}".into());
        stmt.execute(params![
            p.dataset,
            p.period,
            p.period_start,
            p.period_end,
            p.rows as i64,
            p.quarantined as i64,
            p.score,
            rules,
            p.at
        ])
        .map_err(db("write quality history"))?;
    }
    Ok(())
}

pub(super) fn read_history(
    conn: &Connection,
    dataset: &str,
    limit: usize,
) -> Result<Vec<QualityPeriod>, WarehouseError> {
    let mut stmt = conn
        .prepare(
            "SELECT dataset, period, period_start, period_end, rows, quarantined, score, rules_json, at \
             FROM _kho_quality_history WHERE dataset = ?1 ORDER BY period_start DESC LIMIT ?2",
        )
        .map_err(db("read quality history"))?;
    let rows = stmt
        .query_map(params![dataset, limit as i64], |r| {
            let rules: String = r.get(7)?;
            Ok(QualityPeriod {
                dataset: r.get(0)?,
                period: r.get(1)?,
                period_start: r.get(2)?,
                period_end: r.get(3)?,
                rows: r.get::<_, i64>(4)?.max(0) as u64,
                quarantined: r.get::<_, i64>(5)?.max(0) as u64,
                score: r.get(6)?,
                rules: serde_json::from_str(&rules).unwrap_or_default(),
                at: r.get(8)?,
            })
        })
        .map_err(db("read quality history"))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(db("read quality history"))
}
