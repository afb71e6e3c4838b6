//! The change history: every applied change, append-only, so consumers can see what changed when
//! (`SELECT * FROM kho.change_log WHERE dataset = 'ho_so' AND applied_at > …`).
//!
//! ## Stored per batch, read per change
//! `kho.change_log(dataset, key, op, row, agent, seq, applied_at)` is a **view**: one row per
//! change, `key` and `row` as `jsonb` (`row` is NULL for a delete), `op` `upsert` or `delete`. It
//! expands `kho.change_batches(dataset, agent, first_seq, last_seq, applied_at, changes)`, where
//! each applied batch writes **one row per dataset** whose `changes` is the JSON array of its
//! changes (`[{"seq": 7, "op": "upsert", "key": {"id": 7}, "row": {…}}, …]`), lz4-compressed
//! where the server has lz4.
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
    changes json NOT NULL
);
CREATE INDEX IF NOT EXISTS change_batches_by_time ON kho.change_batches USING brin (applied_at);
DO $$
BEGIN
    EXECUTE 'ALTER TABLE kho.change_batches ALTER COLUMN changes SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    NULL; -- a server built without lz4 compresses with pglz
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'kho' AND c.relname = 'change_log' AND c.relkind = 'r') THEN
        INSERT INTO kho.change_batches (dataset, agent, first_seq, last_seq, applied_at, changes)
        SELECT dataset, agent, seq, seq, applied_at, json_build_array(CASE WHEN row IS NULL
            THEN json_build_object('seq', seq, 'op', op, 'key', key)
            ELSE json_build_object('seq', seq, 'op', op, 'key', key, 'row', row) END)
        FROM kho.change_log;
        DROP TABLE kho.change_log;
    END IF;
END $$;
CREATE OR REPLACE VIEW kho.change_log AS
SELECT b.dataset, (c->'key')::jsonb AS key, c->>'op' AS op, (c->'row')::jsonb AS row, b.agent,
       (c->>'seq')::bigint AS seq, b.applied_at
FROM kho.change_batches b, json_array_elements(b.changes) c;
"#;

/// Appends `changes` (applied by `agent` at `now`) to the history: one row per dataset.
pub(super) fn append(
    client: &mut Client,
    agent: &str,
    schemas: &[DatasetSchema],
    changes: &[Change],
    now: &str,
) -> Result<(), WarehouseError> {
    for schema in schemas {
        let Some((text, first, last)) = encode(schema, changes) else { continue };
        let (first, last) = (i64::try_from(first).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
        client
            .execute(
                "INSERT INTO kho.change_batches (dataset, agent, first_seq, last_seq, applied_at, changes) \
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::json)",
                &[&schema.dataset, &agent, &first, &last, &now, &text],
            )
            .map_err(db("write kho.change_batches"))?;
    }
    Ok(())
}

/// The JSON array of `schema`'s dataset's changes, with the first and last sequence; `None` if
/// the batch has none. Pure.
pub(super) fn encode(schema: &DatasetSchema, changes: &[Change]) -> Option<(String, u64, u64)> {
    // About a row's JSON per change: grown once or twice, not copied at every doubling.
    let mut text = String::with_capacity(1 + changes.len() * 320);
    text.push('[');
    let (mut first, mut last) = (None, 0);
    for c in changes.iter().filter(|c| c.dataset == schema.dataset) {
        first.get_or_insert(c.seq);
        last = c.seq;
        if text.len() > 1 {
            text.push(',');
        }
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
        std::fmt::Write::write_fmt(&mut text, format_args!("{{\"seq\":{},\"op\":\"{op}\",\"key\":", c.seq)).ok();
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
    text.push(']');
    first.map(|first| (text, first, last))
}

/// Deletes history batches applied more than `retention` ago; returns how many changes went.
pub(super) fn prune(client: &mut Client, retention: Duration) -> Result<u64, WarehouseError> {
    let seconds = retention.as_secs_f64();
    let row = client
        .query_one(
            "WITH gone AS (DELETE FROM kho.change_batches WHERE applied_at < now() - make_interval(secs => $1) \
             RETURNING json_array_length(changes) AS n) SELECT coalesce(sum(n), 0)::bigint FROM gone",
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

    #[test]
    fn encodes_each_change_of_the_dataset_in_order() {
        let schema = DatasetSchema {
            privacy: Default::default(),
            dataset: "ho_so".into(),
            key: vec!["id".into()],
            columns: vec![Column { name: "id".into(), ty: ColumnType::Int }],
        };
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
        let (text, first, last) = encode(&schema, &changes).expect("changes");
        assert_eq!((first, last), (5, 6));
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            parsed,
            json!([
                {"seq": 5, "op": "upsert", "key": {"id": 7}, "row": {"id": 7, "ten": "a\u{FFFD}b"}},
                {"seq": 6, "op": "delete", "key": {"id": 7}},
            ])
        );
        assert!(
            encode(&DatasetSchema { privacy: Default::default(), dataset: "none".into(), ..schema }, &changes)
                .is_none()
        );
    }
}
