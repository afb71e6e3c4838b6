//! The periodic quality pass in the PostgreSQL warehouse (same design as SQLite's, see
//! `warehouse::sqlite::checks`): set-based full checks over the `(column::text)` expression
//! indexes the ingest lookups use, replacing a rule's open violations, row counts per period and
//! `kho.quality_history`.

use std::collections::{HashMap, HashSet};

use postgres::{Client, GenericClient};
use serde_json::{Map, Value};

use super::quality::ensure_index;
use super::table::TableInfo;
use super::{db, rfc3339};
use crate::warehouse::{Found, FullCheck, QualityPeriod, WarehouseError, quote_ident};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kho.quality_history (
    dataset text NOT NULL,
    period text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    rows bigint NOT NULL,
    quarantined bigint NOT NULL,
    score double precision,
    rules_json jsonb NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (dataset, period)
);
";

impl super::PostgresWarehouse {
    /// Re-reads the catalogue (once per transaction and dataset) when `dataset` or its `column`
    /// is unknown to this writer: another writer may have created or widened it since (a
    /// `reference` rule looks into a dataset another agent, on another writer, loads).
    pub(super) fn know(&mut self, dataset: &str, column: Option<&str>) -> Result<(), WarehouseError> {
        let known = self.tables.get(dataset).is_some_and(|t| column.is_none_or(|c| t.column_type(c).is_some()));
        if !known && self.refreshed.insert(dataset.to_string()) {
            self.reload_catalogue()?;
        }
        Ok(())
    }

    /// [`crate::warehouse::Warehouse::values_exist`]: a batch's lookups in a few queries.
    pub(super) fn values_existing(
        &mut self,
        dataset: &str,
        column: &str,
        values: &[&str],
    ) -> Result<Vec<bool>, WarehouseError> {
        self.know(dataset, Some(column))?;
        let table = self.tables.get(dataset);
        super::quality::existing(&mut self.client, &mut self.quality_indexed, table, dataset, column, values)
    }

    pub(super) fn count_live(&mut self, dataset: &str) -> Result<u64, WarehouseError> {
        self.know(dataset, None)?;
        live_rows(&mut self.client, self.tables.get(dataset), dataset)
    }

    pub(super) fn run_full_check(&mut self, dataset: &str, check: &FullCheck) -> Result<Vec<Found>, WarehouseError> {
        match check {
            FullCheck::Reference { dataset: other, ref_column, column } => {
                self.know(dataset, Some(column))?;
                self.know(other, Some(ref_column))?;
            }
            FullCheck::Unique { column } => self.know(dataset, Some(column))?,
        }
        full_check(&mut self.client, &mut self.quality_indexed, &self.tables, dataset, check)
    }

    pub(super) fn count_in_period(
        &mut self,
        dataset: &str,
        column: Option<&str>,
        start: &str,
        end: &str,
    ) -> Result<u64, WarehouseError> {
        self.know(dataset, column)?;
        let table = self.tables.get(dataset);
        rows_in_period(&mut self.client, &mut self.quality_indexed, table, dataset, column, start, end)
    }
}

pub(super) fn live_rows(client: &mut Client, table: Option<&TableInfo>, dataset: &str) -> Result<u64, WarehouseError> {
    let Some(table) = table else { return Ok(0) };
    let sql = format!("SELECT count(*) FROM {} WHERE NOT \"_kho_deleted\"", table.qualified(dataset));
    let n: i64 = client.query_one(&sql, &[]).map_err(db(format!("count {dataset}")))?.get(0);
    Ok(n.max(0) as u64)
}

pub(super) fn full_check(
    client: &mut Client,
    indexed: &mut HashSet<(String, String)>,
    tables: &HashMap<String, TableInfo>,
    dataset: &str,
    check: &FullCheck,
) -> Result<Vec<Found>, WarehouseError> {
    let Some(table) = tables.get(dataset) else { return Ok(Vec::new()) };
    let (column, condition) = match check {
        FullCheck::Unique { column } => {
            if table.column_type(column).is_none() {
                return Ok(Vec::new());
            }
            ensure_index(client, indexed, table, dataset, column)?;
            let c = quote_ident(column);
            let same_key: Vec<String> =
                table.key.iter().map(|k| format!("o.{q} IS NOT DISTINCT FROM t.{q}", q = quote_ident(k))).collect();
            let cond = format!(
                "EXISTS (SELECT 1 FROM {d} o WHERE o.{c}::text = t.{c}::text AND NOT o.\"_kho_deleted\" \
                 AND NOT ({same}) AND (o.\"_kho_seq\", o.\"_kho_agent\") < (t.\"_kho_seq\", t.\"_kho_agent\"))",
                d = table.qualified(dataset),
                same = same_key.join(" AND ")
            );
            (column, cond)
        }
        FullCheck::Reference { column, dataset: other, ref_column } => {
            if table.column_type(column).is_none() {
                return Ok(Vec::new());
            }
            let cond = match tables.get(other).filter(|t| t.column_type(ref_column).is_some()) {
                None => "true".to_string(),
                Some(target) => {
                    ensure_index(client, indexed, target, other, ref_column)?;
                    format!(
                        "NOT EXISTS (SELECT 1 FROM {} r WHERE r.{}::text = t.{}::text AND NOT r.\"_kho_deleted\")",
                        target.qualified(other),
                        quote_ident(ref_column),
                        quote_ident(column)
                    )
                }
            };
            (column, cond)
        }
    };
    let c = quote_ident(column);
    let keys: Vec<String> = table.key.iter().map(|k| format!("to_jsonb(t.{})::text", quote_ident(k))).collect();
    let sql = format!(
        "SELECT {keys}, t.{c}::text, t.\"_kho_seq\" FROM {d} t WHERE NOT t.\"_kho_deleted\" \
         AND t.{c} IS NOT NULL AND btrim(t.{c}::text) <> '' AND {condition}",
        keys = keys.join(", "),
        d = table.qualified(dataset),
    );
    let n = table.key.len();
    let rows = client.query(&sql, &[]).map_err(db(format!("full check of {dataset}")))?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut key = Map::new();
            for (i, k) in table.key.iter().enumerate() {
                let text: Option<String> = r.get(i);
                key.insert(k.clone(), text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null));
            }
            Found { key: Value::Object(key).to_string(), value: r.get(n), seq: r.get::<_, i64>(n + 1).max(0) as u64 }
        })
        .collect())
}

pub(super) fn replace_violations(
    client: &mut Client,
    dataset: &str,
    rule: &str,
    column: Option<&str>,
    found: &[Found],
    now: &str,
) -> Result<(u64, u64), WarehouseError> {
    let open: HashSet<String> = client
        .query(
            "SELECT key FROM kho.quality_violations v WHERE dataset = $1 AND rule = $2 AND NOT EXISTS \
             (SELECT 1 FROM kho.quarantine q WHERE q.dataset = v.dataset AND q.key = v.key)",
            &[&dataset, &rule],
        )
        .map_err(db("read violations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let now_found: HashSet<&str> = found.iter().map(|f| f.key.as_str()).collect();
    let close = client
        .prepare("DELETE FROM kho.quality_violations WHERE dataset = $1 AND rule = $2 AND key = $3")
        .map_err(db("close violations"))?;
    let mut closed = 0;
    for key in open.iter().filter(|k| !now_found.contains(k.as_str())) {
        closed += client.execute(&close, &[&dataset, &rule, key]).map_err(db("close violations"))?;
    }
    let insert = client
        .prepare(
            "INSERT INTO kho.quality_violations (dataset, key, rule, column_name, value, seq, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::timestamptz) ON CONFLICT (dataset, key, rule) DO UPDATE \
             SET column_name = excluded.column_name, value = excluded.value, seq = excluded.seq, at = excluded.at",
        )
        .map_err(db("record violations"))?;
    let mut opened = 0;
    for f in found {
        let new = !open.contains(&f.key);
        // A dataset-level rule's value (e.g. "0 rows, fewer than 1") may change while it stays open.
        if new || column.is_none() {
            let seq = f.seq as i64;
            client
                .execute(&insert, &[&dataset, &f.key, &rule, &column, &f.value, &seq, &now])
                .map_err(db("record violations"))?;
            opened += u64::from(new);
        }
    }
    Ok((opened, closed))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn rows_in_period(
    client: &mut Client,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: Option<&str>,
    start: &str,
    end: &str,
) -> Result<u64, WarehouseError> {
    let Some(table) = table else { return Ok(0) };
    let mut short = Vec::new();
    let sql = match column {
        Some(c) if table.column_type(c).is_none() => return Ok(0),
        Some(c) => {
            // Text comparison over the `(column::text)` index: dates, timestamps and text dates
            // all start with YYYY-MM-DD; a month or a year (`2026-02`, `2026`) by its spelling,
            // since as text it sorts before its own first day.
            ensure_index(client, indexed, table, dataset, c)?;
            short = crate::apply::activity::short_business_dates(start, end);
            let c = quote_ident(c);
            format!(
                "SELECT count(*) FROM {} WHERE (({c}::text >= $1 AND {c}::text < $2 AND length({c}::text) >= 10) \
                 OR {c}::text = ANY($3::text[])) AND NOT \"_kho_deleted\"",
                table.qualified(dataset)
            )
        }
        None => format!(
            "SELECT count(*) FROM {} WHERE \"_kho_applied_at\" >= $1::text::timestamptz \
             AND \"_kho_applied_at\" < $2::text::timestamptz AND NOT \"_kho_deleted\"",
            table.qualified(dataset)
        ),
    };
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&start, &end];
    if column.is_some() {
        params.push(&short);
    }
    let n: i64 = client.query_one(&sql, &params).map_err(db(format!("count {dataset} per period")))?.get(0);
    Ok(n.max(0) as u64)
}

pub(super) fn record_history(client: &mut Client, rows: &[QualityPeriod]) -> Result<(), WarehouseError> {
    let stmt = client
        .prepare(
            "INSERT INTO kho.quality_history \
             (dataset, period, period_start, period_end, rows, quarantined, score, rules_json, at) \
             VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz, $5, $6, $7, $8::text::jsonb, \
             $9::text::timestamptz) ON CONFLICT (dataset, period) DO UPDATE SET period_start = excluded.period_start, \
             period_end = excluded.period_end, rows = excluded.rows, quarantined = excluded.quarantined, \
             score = excluded.score, rules_json = excluded.rules_json, at = excluded.at",
        )
        .map_err(db("write quality history"))?;
    for p in rows {
        let rules = serde_json::to_string(&p.rules).unwrap_or_else(|_| "{}".into());
        let (n, q) = (p.rows as i64, p.quarantined as i64);
        client
            .execute(&stmt, &[&p.dataset, &p.period, &p.period_start, &p.period_end, &n, &q, &p.score, &rules, &p.at])
            .map_err(db("write quality history"))?;
    }
    Ok(())
}

pub(super) fn read_history(
    tx: &mut impl GenericClient,
    dataset: &str,
    limit: usize,
) -> Result<Vec<QualityPeriod>, WarehouseError> {
    let sql = format!(
        "SELECT dataset, period, {}, {}, rows, quarantined, score, rules_json::text, {} FROM kho.quality_history \
         WHERE dataset = $1 ORDER BY period_start DESC LIMIT $2",
        rfc3339("period_start"),
        rfc3339("period_end"),
        rfc3339("at")
    );
    let rows = tx.query(&sql, &[&dataset, &(limit as i64)]).map_err(db("read quality history"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let rules: String = r.get(7);
            QualityPeriod {
                dataset: r.get(0),
                period: r.get(1),
                period_start: r.get(2),
                period_end: r.get(3),
                rows: r.get::<_, i64>(4).max(0) as u64,
                quarantined: r.get::<_, i64>(5).max(0) as u64,
                score: r.get(6),
                rules: serde_json::from_str(&rules).unwrap_or_default(),
                at: r.get(8),
            }
        })
        .collect())
}
