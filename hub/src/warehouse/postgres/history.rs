//! The change history: every applied change, append-only, so consumers can see what changed when
//! (`SELECT * FROM kho.change_log WHERE dataset = 'ho_so' AND applied_at > …`).
//!
//! ## Stored per batch, read per change
//! `kho.change_log(dataset, key, op, row, agent, seq, applied_at)` is a **view**: one row per
//! change, `key` and `row` as `jsonb` (`row` is NULL for a delete), `op` `upsert` or `delete`. It
//! expands `kho.change_batches(dataset, agent, first_seq, last_seq, applied_at, changes)`, where
//! each applied batch writes, per dataset, **one row per [`ROW_CHANGES`] changes** whose
//! `changes` is the JSON array of them (`[{"seq": 7, "op": "upsert", "key": {"id": 7}, "row":
//! {…}}, …]`) as `text`,
//! lz4-compressed where the server has lz4. `text` rather than `json`: PostgreSQL validates a
//! `json` value on the way in, which cost a tenth of the server's time during a large sync, and
//! the hub wrote the text itself with serde (a hub that stored `json` converts the column once
//! at start).
//!
//! Why not one `jsonb` row per change: that log cost PostgreSQL more than loading the rows into
//! the dataset table itself (probe, 100k changes: 780 ms as per-change `jsonb` rows, 270 ms as
//! per-batch `json`; a raw `COPY` of the same rows into their table 390 ms), and it was the
//! larger part of an initial sync (docs/PERFORMANCE.md). Per batch, the history is also ~7×
//! smaller on disk. Reading pays instead: a query through the view parses the batches it
//! touches; `applied_at` (BRIN-indexed on the batch rows) narrows that first.
//!
//! Rows are written in the batch's own transaction, so the history holds exactly the committed
//! changes — including every intermediate change of a key, which the dataset table does not keep.
//! Batches older than `warehouse.history_retention` are deleted by [`prune`].

use std::time::Duration;

use kho_shared::protocol::{Change, DatasetSchema, Op};
use postgres::Client;
use serde_json::{Map, Value};

use super::db;
use super::values::json_text;
use crate::warehouse::WarehouseError;

/// The history's tables and view; run at start under the DDL lock. An older hub's
/// `kho.change_log` *table* (one jsonb row per change) is moved into `kho.change_batches`.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS kho.change_batches (
    dataset text NOT NULL,
    agent text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    applied_at timestamptz NOT NULL,
    changes text NOT NULL
);
CREATE INDEX IF NOT EXISTS change_batches_by_time ON kho.change_batches USING brin (applied_at);
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'kho' AND c.relname = 'change_log' AND c.relkind = 'r') THEN
        INSERT INTO kho.change_batches (dataset, agent, first_seq, last_seq, applied_at, changes)
        SELECT dataset, agent, seq, seq, applied_at, json_build_array(CASE WHEN row IS NULL
            THEN json_build_object('seq', seq, 'op', op, 'key', key)
            ELSE json_build_object('seq', seq, 'op', op, 'key', key, 'row', row) END)::text
        FROM kho.change_log;
        DROP TABLE kho.change_log;
    END IF;
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'kho.change_batches'::regclass
               AND attname = 'changes' AND atttypid = 'json'::regtype) THEN
        DROP VIEW IF EXISTS kho.change_log;
        ALTER TABLE kho.change_batches ALTER COLUMN changes TYPE text;
    END IF;
END $$;
DO $$
BEGIN
    EXECUTE 'ALTER TABLE kho.change_batches ALTER COLUMN changes SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    NULL; -- a server built without lz4 compresses with pglz
END $$;
CREATE OR REPLACE VIEW kho.change_log AS
SELECT b.dataset, (c->'key')::jsonb AS key, c->>'op' AS op, (c->'row')::jsonb AS row, b.agent,
       (c->>'seq')::bigint AS seq, b.applied_at
FROM kho.change_batches b, json_array_elements(b.changes::json) c;
"#;

/// Most changes one `kho.change_batches` row holds. A batch of 20,000 changes written as one
/// row of several megabytes cost PostgreSQL more per byte (each step of receiving, checking and
/// compressing it allocates and copies a buffer that size) than rows of about 300 KB.
pub(super) const ROW_CHANGES: usize = 1000;

/// One `kho.change_batches` row: a dataset's changes `first..=last` of one batch, as JSON text.
#[derive(Debug, Default)]
pub(super) struct HistoryRows {
    datasets: Vec<String>,
    firsts: Vec<i64>,
    lasts: Vec<i64>,
    texts: Vec<String>,
}

/// Encodes the history rows of a batch; from [`encode`].
pub(super) fn encode_all(schemas: &[DatasetSchema], changes: &[Change]) -> HistoryRows {
    let mut rows = HistoryRows::default();
    for schema in schemas {
        for (text, first, last) in encode(schema, changes) {
            rows.datasets.push(schema.dataset.clone());
            rows.firsts.push(i64::try_from(first).unwrap_or(i64::MAX));
            rows.lasts.push(i64::try_from(last).unwrap_or(i64::MAX));
            rows.texts.push(text);
        }
    }
    rows
}

/// Appends a batch's history rows (applied by `agent` at `now`), in one statement.
pub(super) fn append(client: &mut Client, agent: &str, rows: &HistoryRows, now: &str) -> Result<(), WarehouseError> {
    if rows.texts.is_empty() {
        return Ok(());
    }
    // A custom plan would fold the parameters into constants, copying the batch's text at plan
    // time; the generic plan reads it where it arrived. `SET LOCAL` ends with the transaction.
    client.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan").map_err(db("plan history"))?;
    client
        .execute(
            "INSERT INTO kho.change_batches (dataset, agent, first_seq, last_seq, applied_at, changes) \
             SELECT d, $1, f, l, $2::text::timestamptz, c FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::text[]) \
             AS r(d, f, l, c)",
            &[&agent, &now, &rows.datasets, &rows.firsts, &rows.lasts, &rows.texts],
        )
        .map_err(db("write kho.change_batches"))?;
    Ok(())
}

/// The JSON arrays of `schema`'s dataset's changes, [`ROW_CHANGES`] at most each, with the first
/// and last sequence of each; empty if the batch has none. Pure.
pub(super) fn encode(schema: &DatasetSchema, changes: &[Change]) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut mine = changes.iter().filter(|c| c.dataset == schema.dataset).peekable();
    while mine.peek().is_some() {
        // About a row's JSON per change: grown once or twice, not copied at every doubling.
        let mut text = String::with_capacity(2 + ROW_CHANGES.min(changes.len()) * 320);
        text.push('[');
        let (mut first, mut last) = (None, 0);
        for c in mine.by_ref().take(ROW_CHANGES) {
            first.get_or_insert(c.seq);
            last = c.seq;
            if text.len() > 1 {
                text.push(',');
            }
            push_change(&mut text, schema, c);
        }
        text.push(']');
        if let Some(first) = first {
            out.push((text, first, last));
        }
    }
    out
}

/// Appends one change's history element to `text`.
fn push_change(text: &mut String, schema: &DatasetSchema, c: &Change) {
    let key = match c.op {
        Op::Delete => c.key.clone().map(Value::Object).unwrap_or(Value::Null),
        Op::Upsert => {
            let mut map = Map::new();
            for k in &schema.key {
                map.insert(k.clone(), c.row.as_ref().and_then(|r| r.get(k)).cloned().unwrap_or(Value::Null));
            }
            Value::Object(map)
        }
    };
    let op = match c.op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
    };
    std::fmt::Write::write_fmt(text, format_args!("{{\"seq\":{},\"op\":\"{op}\",\"key\":", c.seq)).ok();
    text.push_str(&json_text(&key));
    if let (Op::Upsert, Some(row)) = (&c.op, &c.row) {
        text.push_str(",\"row\":");
        let plain = serde_json::to_string(row).unwrap_or_default();
        // jsonb (the view's type) refuses NUL characters: replace them, as the tables do.
        if plain.contains("\\u0000") {
            text.push_str(&json_text(&Value::Object(row.clone())));
        } else {
            text.push_str(&plain);
        }
    }
    text.push('}');
}

/// Deletes history batches applied more than `retention` ago; returns how many changes went.
pub(super) fn prune(client: &mut Client, retention: Duration) -> Result<u64, WarehouseError> {
    let seconds = retention.as_secs_f64();
    let row = client
        .query_one(
            "WITH gone AS (DELETE FROM kho.change_batches WHERE applied_at < now() - make_interval(secs => $1) \
             RETURNING json_array_length(changes::json) AS n) SELECT coalesce(sum(n), 0)::bigint FROM gone",
            &[&seconds],
        )
        .map_err(db("prune kho.change_batches"))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use kho_shared::protocol::Column;
    use kho_shared::types::ColumnType;
    use serde_json::json;

    use super::*;

    fn ho_so() -> DatasetSchema {
        DatasetSchema {
            privacy: Default::default(),
            dataset: "ho_so".into(),
            key: vec!["id".into()],
            columns: vec![Column { name: "id".into(), ty: ColumnType::Int }],
        }
    }

    #[test]
    fn encodes_each_change_of_the_dataset_in_order() {
        let schema = ho_so();
        let up = |seq, dataset: &str, row: Value| Change {
            seq,
            dataset: dataset.into(),
            op: Op::Upsert,
            key: None,
            row: row.as_object().cloned(),
        };
        let changes = [
            up(4, "khac", json!({"id": 1})),
            up(5, "ho_so", json!({"id": 7, "ten": "a\u{0}b"})),
            Change {
                seq: 6,
                dataset: "ho_so".into(),
                op: Op::Delete,
                key: json!({"id": 7}).as_object().cloned(),
                row: None,
            },
        ];
        let encoded = encode(&schema, &changes);
        assert_eq!(encoded.len(), 1);
        let (text, first, last) = &encoded[0];
        assert_eq!((*first, *last), (5, 6));
        let parsed: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(
            parsed,
            json!([
                {"seq": 5, "op": "upsert", "key": {"id": 7}, "row": {"id": 7, "ten": "a\u{FFFD}b"}},
                {"seq": 6, "op": "delete", "key": {"id": 7}},
            ])
        );
        assert!(
            encode(&DatasetSchema { privacy: Default::default(), dataset: "none".into(), ..schema }, &changes)
                .is_empty()
        );
    }

    /// A large batch is split into rows of [`ROW_CHANGES`] changes of its dataset, in order, with
    /// each row's own sequence range; other datasets' changes do not count towards a row.
    #[test]
    fn a_large_batch_is_split_into_rows() {
        let schema = ho_so();
        let n = 2 * ROW_CHANGES as u64 + 5;
        let changes: Vec<Change> = (1..=n + 10)
            .map(|seq| Change {
                seq,
                dataset: if seq % 7 == 0 && seq <= 70 { "khac" } else { "ho_so" }.into(),
                op: Op::Upsert,
                key: None,
                row: json!({"id": seq}).as_object().cloned(),
            })
            .collect();
        let encoded = encode(&schema, &changes);
        let mine: Vec<u64> = changes.iter().filter(|c| c.dataset == "ho_so").map(|c| c.seq).collect();
        let sizes: Vec<usize> =
            encoded.iter().map(|(text, _, _)| serde_json::from_str::<Vec<Value>>(text).expect("JSON").len()).collect();
        assert_eq!(sizes, [ROW_CHANGES, ROW_CHANGES, mine.len() - 2 * ROW_CHANGES]);
        let seqs: Vec<u64> = encoded
            .iter()
            .flat_map(|(text, first, last)| {
                let seqs: Vec<u64> = serde_json::from_str::<Vec<Value>>(text)
                    .expect("JSON")
                    .iter()
                    .map(|v| v["seq"].as_u64().expect("seq"))
                    .collect();
                assert_eq!((seqs[0], seqs[seqs.len() - 1]), (*first, *last));
                seqs
            })
            .collect();
        assert_eq!(seqs, mine);
        let rows = encode_all(std::slice::from_ref(&schema), &changes);
        assert_eq!((rows.texts.len(), rows.firsts[1], rows.lasts[2]), (3, encoded[1].1 as i64, encoded[2].2 as i64));
    }
}
