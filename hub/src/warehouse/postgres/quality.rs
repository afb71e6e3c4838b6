//! Data-quality records in the PostgreSQL warehouse: `kho.quality_violations`, the open
//! violations per (dataset, row key, rule), replaced whenever the row is written (same design as
//! SQLite's, see `warehouse::sqlite::quality`). Lookups compare the column as text through an
//! expression index `(column::text)` created the first time a rule needs it.

use std::borrow::Cow;
use std::collections::HashSet;

use postgres::{Client, GenericClient};
use serde_json::{Map, Value};

use super::table::TableInfo;
use super::{DDL_LOCK, db, rfc3339};
use kho_shared::protocol::QuarantinedRow;

use crate::quality::eval::{Failure, RowVerdict};
use crate::warehouse::{HeldRow, QualityData, StoredQuarantine, StoredViolation, WarehouseError, quote_ident};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kho.quality_violations (
    dataset text NOT NULL,
    key text NOT NULL,
    rule text NOT NULL,
    column_name text,
    value text,
    seq bigint NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (dataset, key, rule)
);
CREATE INDEX IF NOT EXISTS quality_violations_by_seq ON kho.quality_violations (dataset, seq);
CREATE TABLE IF NOT EXISTS kho.quarantine (
    dataset text NOT NULL,
    key text NOT NULL,
    agent text NOT NULL,
    reason text NOT NULL,
    seq bigint NOT NULL,
    at timestamptz NOT NULL,
    row_json jsonb,
    PRIMARY KEY (dataset, key)
);
CREATE INDEX IF NOT EXISTS quarantine_by_agent ON kho.quarantine (agent, seq);
";

pub(super) fn quarantine(
    client: &mut Client,
    dataset: &str,
    agent: &str,
    held: &[HeldRow<'_>],
    clean: &[&str],
    now: &str,
) -> Result<Vec<String>, WarehouseError> {
    let hold = client
        .prepare(
            "INSERT INTO kho.quarantine (dataset, key, agent, reason, seq, at, row_json) \
             VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7::text::jsonb) ON CONFLICT (dataset, key) DO UPDATE \
             SET agent = excluded.agent, reason = excluded.reason, seq = excluded.seq, at = excluded.at, \
             row_json = excluded.row_json",
        )
        .map_err(db("quarantine rows"))?;
    for h in held {
        let row = h.row.map(|r| Value::Object(r.clone()).to_string());
        let seq = h.seq as i64;
        client
            .execute(&hold, &[&dataset, &h.key, &agent, &h.reason, &seq, &now, &row])
            .map_err(db("quarantine rows"))?;
    }
    // Clean keys leave quarantine in one statement per VALUES_PER_QUERY (a join probing the
    // primary key, as the violations are cleared), not a round trip per clean row.
    let release = client
        .prepare(
            "DELETE FROM kho.quarantine q USING unnest($2::text[]) AS u(k) \
             WHERE q.dataset = $1 AND q.key = u.k RETURNING q.key",
        )
        .map_err(db("release quarantined rows"))?;
    let mut released = Vec::new();
    if quarantined_any(client, dataset)? {
        let mut gone = HashSet::new();
        for chunk in clean.chunks(VALUES_PER_QUERY) {
            for row in client.query(&release, &[&dataset, &chunk]).map_err(db("release quarantined rows"))? {
                gone.insert(row.get::<_, String>(0));
            }
        }
        // In the batch's order, as before.
        released.extend(clean.iter().filter(|k| gone.remove(**k)).map(|k| k.to_string()));
    }
    Ok(released)
}

/// See `Warehouse::quarantined_from`.
pub(super) fn quarantined_from(
    client: &mut Client,
    agent: &str,
    first: u64,
    last: u64,
    limit: usize,
) -> Result<Vec<QuarantinedRow>, WarehouseError> {
    let (first, last) = (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
    let rows = client
        .query(
            "SELECT dataset, key, reason FROM kho.quarantine WHERE agent = $1 AND seq BETWEEN $2 AND $3 \
             ORDER BY seq, dataset, key LIMIT $4",
            &[&agent, &first, &last, &(limit as i64)],
        )
        .map_err(db("read quarantine"))?;
    Ok(rows.iter().map(|r| QuarantinedRow { dataset: r.get(0), key: r.get(1), reason: r.get(2) }).collect())
}

/// Whether `dataset` has rows in quarantine.
fn quarantined_any(client: &mut Client, dataset: &str) -> Result<bool, WarehouseError> {
    let row = client
        .query_opt("SELECT 1 FROM kho.quarantine WHERE dataset = $1 LIMIT 1", &[&dataset])
        .map_err(db("read quarantine"))?;
    Ok(row.is_some())
}

/// Replaces the violations of `verdicts`' keys with theirs. `loaded_new`: the batch's rows of
/// `dataset` all went in by the direct `COPY` ([`super::merge`]), so they are keys the table did
/// not hold.
pub(super) fn record(
    client: &mut Client,
    dataset: &str,
    verdicts: &[&RowVerdict],
    now: &str,
    loaded_new: bool,
) -> Result<(), WarehouseError> {
    let clear = client
        // A join with the keys rather than `key = ANY($2)`: the prepared statement's generic plan
        // for `ANY` scanned the dataset's violations once per statement and compared each with
        // every key (half of a 200k-row sync's time once a dataset had 14k violations); the join
        // probes the primary key once per key.
        .prepare(
            "DELETE FROM kho.quality_violations q USING unnest($2::text[]) AS u(k) \
             WHERE q.dataset = $1 AND q.key = u.k",
        )
        .map_err(db("clear violations"))?;
    let insert = client
        .prepare(
            "INSERT INTO kho.quality_violations (dataset, key, rule, column_name, value, seq, at) \
             SELECT $1, k, r, c, v, s, $7::text::timestamptz \
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[]) AS t(k, r, c, v, s) \
             ON CONFLICT (dataset, key, rule) DO UPDATE \
             SET column_name = excluded.column_name, value = excluded.value, seq = excluded.seq, at = excluded.at",
        )
        .map_err(db("record violations"))?;
    // While the dataset has no row violation recorded (a clean initial load) nothing needs
    // clearing; dataset-level records (`{"_kho_…` keys) do not count and always clear themselves.
    let any = client
        .query_opt(
            "SELECT 1 FROM kho.quality_violations WHERE dataset = $1 AND key NOT LIKE '{\"\\_kho\\_%' LIMIT 1",
            &[&dataset],
        )
        .map_err(db("read violations"))?
        .is_some();
    // Violations are recorded only for keys in the table or in quarantine (a rejected row), so a
    // key the direct `COPY` just inserted has none unless the dataset holds quarantined rows:
    // an initial sync clears nothing (this `DELETE` was a sixth of a 1M-row sync with rules, one
    // fruitless primary-key probe per row). Rejected rows and deletes were not loaded: cleared.
    let fresh = |v: &RowVerdict| loaded_new && !v.delete && !v.rejected();
    let skip_fresh = any && loaded_new && !quarantined_any(client, dataset)?;
    // A batch's keys in a few statements, not a round trip per row.
    let to_clear: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.key.starts_with(crate::warehouse::DATASET_LEVEL) || (any && !(skip_fresh && fresh(v))))
        .map(|v| v.key.as_str())
        .collect();
    for chunk in to_clear.chunks(VALUES_PER_QUERY) {
        client.execute(&clear, &[&dataset, &chunk]).map_err(db("clear violations"))?;
    }
    // A batch's violations in one statement per VALUES_PER_QUERY (they were a round trip each:
    // 14,286 for a 200k-row sync breaking one rule in 7 % of rows). One statement may not upsert
    // a row twice, so a key written twice in the batch keeps its last verdict per rule — what the
    // upserts one by one left.
    for chunk in last_per_key_and_rule(verdicts).chunks(VALUES_PER_QUERY) {
        let keys: Vec<&str> = chunk.iter().map(|(v, _)| v.key.as_str()).collect();
        let rules: Vec<&str> = chunk.iter().map(|(_, f)| f.rule.as_str()).collect();
        let columns: Vec<Option<&str>> = chunk.iter().map(|(_, f)| f.column.as_deref()).collect();
        let values: Vec<Option<&str>> = chunk.iter().map(|(_, f)| f.value.as_deref()).collect();
        let seqs: Vec<i64> = chunk.iter().map(|(v, _)| v.seq as i64).collect();
        client
            .execute(&insert, &[&dataset, &keys, &rules, &columns, &values, &seqs, &now])
            .map_err(db("record violations"))?;
    }
    Ok(())
}

/// Every failure of `verdicts`, in order, except those a later verdict on the same key repeats
/// for the same rule.
fn last_per_key_and_rule<'a>(verdicts: &[&'a RowVerdict]) -> Vec<(&'a RowVerdict, &'a Failure)> {
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut out: Vec<_> = verdicts
        .iter()
        .rev()
        .flat_map(|v| v.failures.iter().rev().map(move |f| (*v, f)))
        .filter(|(v, f)| seen.insert((v.key.as_str(), f.rule.as_str())))
        .collect();
    out.reverse();
    out
}

pub(super) fn ensure_index(
    client: &mut Client,
    indexed: &mut HashSet<(String, String)>,
    table: &TableInfo,
    dataset: &str,
    column: &str,
) -> Result<(), WarehouseError> {
    if indexed.contains(&(dataset.to_string(), column.to_string())) {
        return Ok(());
    }
    // Index names are per schema and at most 63 bytes: a short hash keeps them unique.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{dataset}.{column}").as_bytes()));
    let name = quote_ident(&format!("kho_q_{}", &digest[..16]));
    client.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK]).map_err(db("DDL lock"))?;
    client
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {} (({}::text))",
            table.qualified(dataset),
            quote_ident(column)
        ))
        .map_err(db(format!("index {dataset}.{column} for quality rules")))?;
    indexed.insert((dataset.to_string(), column.to_string()));
    Ok(())
}

/// Most values or keys in one array parameter: small enough that the planner keeps probing the
/// index per value rather than hashing a scan of the whole table.
const VALUES_PER_QUERY: usize = 1_000;

/// For each of `values`, whether a live row of `dataset` holds it in `column`, compared as text
/// (like the `(column::text)` index): one query per [`VALUES_PER_QUERY`] values of a batch
/// instead of a round trip per row.
pub(super) fn existing(
    client: &mut Client,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: &str,
    values: &[&str],
) -> Result<Vec<bool>, WarehouseError> {
    let mut out = vec![false; values.len()];
    let Some(table) = table.filter(|t| t.column_type(column).is_some()) else { return Ok(out) };
    ensure_index(client, indexed, table, dataset, column)?;
    let sql = format!(
        "SELECT u.i FROM unnest($1::text[]) WITH ORDINALITY AS u(v, i) WHERE EXISTS \
         (SELECT 1 FROM {} t WHERE t.{}::text = u.v AND NOT t.\"_kho_deleted\")",
        table.qualified(dataset),
        quote_ident(column)
    );
    let stmt = client.prepare(&sql).map_err(db("quality lookup"))?;
    for (n, chunk) in values.chunks(VALUES_PER_QUERY).enumerate() {
        for row in client.query(&stmt, &[&chunk]).map_err(db("quality lookup"))? {
            let i: i64 = row.get(0);
            let at = usize::try_from(i - 1).ok().map(|i| n * VALUES_PER_QUERY + i);
            if let Some(slot) = at.and_then(|i| out.get_mut(i)) {
                *slot = true;
            }
        }
    }
    Ok(out)
}

pub(super) fn taken_by_other(
    client: &mut Client,
    indexed: &mut HashSet<(String, String)>,
    table: Option<&TableInfo>,
    dataset: &str,
    column: &str,
    value: &str,
    key: &Map<String, Value>,
) -> Result<bool, WarehouseError> {
    let Some(table) = table.filter(|t| t.column_type(column).is_some()) else { return Ok(false) };
    ensure_index(client, indexed, table, dataset, column)?;
    let texts: Vec<Option<String>> =
        table.key.iter().map(|k| key.get(k).and_then(crate::quality::eval::text).map(Cow::into_owned)).collect();
    let same_key: Vec<String> = table
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{}::text IS NOT DISTINCT FROM ${}", quote_ident(k), i + 2))
        .collect();
    let sql = format!(
        "SELECT 1 FROM {} WHERE {}::text = $1 AND NOT \"_kho_deleted\" AND NOT ({}) LIMIT 1",
        table.qualified(dataset),
        quote_ident(column),
        same_key.join(" AND ")
    );
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&value];
    for t in &texts {
        params.push(t);
    }
    Ok(client.query_opt(&sql, &params).map_err(db("quality lookup"))?.is_some())
}

pub(super) fn read(tx: &mut impl GenericClient, latest: usize) -> Result<QualityData, WarehouseError> {
    let mut out = QualityData::default();
    let rows = tx
        .query("SELECT dataset, rule, count(*) FROM kho.quality_violations GROUP BY dataset, rule ORDER BY 1, 2", &[])
        .map_err(db("read violations"))?;
    for r in rows {
        out.open.push((r.get(0), r.get(1), r.get::<_, i64>(2).max(0) as u64));
    }
    let sql = format!(
        "SELECT dataset, rule, column_name, key, value, seq, {} FROM (SELECT *, row_number() OVER \
         (PARTITION BY dataset ORDER BY seq DESC, rule) AS n FROM kho.quality_violations) v WHERE n <= $1 \
         ORDER BY dataset, seq DESC, rule",
        rfc3339("at")
    );
    let rows = tx.query(&sql, &[&(latest as i64)]).map_err(db("read violations"))?;
    for r in rows {
        out.latest.push(StoredViolation {
            dataset: r.get(0),
            rule: r.get(1),
            column: r.get(2),
            key: r.get(3),
            value: r.get(4),
            seq: r.get::<_, i64>(5).max(0) as u64,
            at: r.get(6),
        });
    }
    let rows = tx
        .query("SELECT dataset, count(*) FROM kho.quarantine GROUP BY dataset ORDER BY 1", &[])
        .map_err(db("read quarantine"))?;
    for r in rows {
        out.quarantined.push((r.get(0), r.get::<_, i64>(1).max(0) as u64));
    }
    let sql = format!(
        "SELECT dataset, key, agent, reason, seq, {}, row_json::text FROM (SELECT *, row_number() OVER \
         (PARTITION BY dataset ORDER BY seq DESC) AS n FROM kho.quarantine) q WHERE n <= $1 ORDER BY dataset, seq DESC",
        rfc3339("at")
    );
    for r in tx.query(&sql, &[&(latest as i64)]).map_err(db("read quarantine"))? {
        out.latest_quarantined.push(StoredQuarantine {
            dataset: r.get(0),
            key: r.get(1),
            agent: r.get(2),
            reason: r.get(3),
            seq: r.get::<_, i64>(4).max(0) as u64,
            at: r.get(5),
            row: r.get(6),
            older_version_live: false,
        });
    }
    for q in &mut out.latest_quarantined {
        q.older_version_live = live_version(tx, &q.dataset, &q.key)?;
    }
    Ok(out)
}

/// Whether `dataset`'s table holds a live row keyed `key` (JSON text): one primary-key probe.
fn live_version(tx: &mut impl GenericClient, dataset: &str, key: &str) -> Result<bool, WarehouseError> {
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else { return Ok(false) };
    let schema = tx
        .query_opt("SELECT schema_name FROM kho.datasets WHERE dataset = $1", &[&dataset])
        .map_err(db("read quarantine"))?;
    let Some(schema) = schema.map(|r| r.get::<_, String>(0)) else { return Ok(false) };
    if key.is_empty() {
        return Ok(false);
    }
    let cond: Vec<String> =
        key.keys().enumerate().map(|(i, k)| format!("{}::text = ${}", quote_ident(k), i + 1)).collect();
    let sql = format!(
        "SELECT 1 FROM {} WHERE {} AND NOT \"_kho_deleted\"",
        super::table::qualified(&schema, dataset),
        cond.join(" AND ")
    );
    let texts: Vec<Option<String>> = key.values().map(|v| crate::quality::eval::text(v).map(Cow::into_owned)).collect();
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        texts.iter().map(|t| t as &(dyn postgres::types::ToSql + Sync)).collect();
    // In the reader's read-only transaction: a failed probe (a key column the table lacks) must
    // not abort it, hence the savepoint.
    let mut sp = tx.transaction().map_err(db("read quarantine"))?;
    let found = sp.query_opt(&sql, &params).map(|r| r.is_some()).unwrap_or(false);
    sp.rollback().map_err(db("read quarantine"))?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::Policy;

    fn verdict(seq: u64, key: &str, rules: &[&str]) -> RowVerdict {
        let failures = rules
            .iter()
            .map(|r| Failure { rule: r.to_string(), column: None, value: Some(seq.to_string()), policy: Policy::Warn })
            .collect();
        RowVerdict { index: seq as usize, seq, key: key.into(), delete: false, failures }
    }

    /// One upsert statement may not touch a row twice: a key written twice in a batch keeps, per
    /// rule, the verdict of its last write — as the upserts one by one did — and nothing else.
    #[test]
    fn a_key_written_twice_keeps_its_last_failure_per_rule_in_batch_order() {
        let v = [
            verdict(1, "a", &["range:x", "pattern:y"]),
            verdict(2, "b", &["range:x"]),
            verdict(3, "a", &["range:x"]),
            verdict(4, "c", &[]),
        ];
        let refs: Vec<&RowVerdict> = v.iter().collect();
        let kept: Vec<(u64, &str, &str)> =
            last_per_key_and_rule(&refs).iter().map(|(v, f)| (v.seq, v.key.as_str(), f.rule.as_str())).collect();
        assert_eq!(kept, [(1, "a", "pattern:y"), (2, "b", "range:x"), (3, "a", "range:x")]);
    }
}
