//! The PostgreSQL change history (`kho.change_log`, a view over `kho.change_batches`) against the
//! real server at 127.0.0.1:5432: what the view reads back for every kind of change, and the
//! history written by older hubs. Each test uses its own database.

mod common;

use kho_shared::protocol::DatasetSchema;
use kho_shared::types::ColumnType;
use serde_json::json;

use common::pg::{TestDb, apply, col, delete, ho_so, open, upsert};

/// `(key, op, row, seq)` of every change in the history, in sequence order, as jsonb text.
fn log(c: &mut ::postgres::Client) -> Vec<(String, String, Option<String>, i64)> {
    c.query("SELECT key::text, op, row::text, seq FROM kho.change_log ORDER BY seq", &[])
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// The view gives back the same key, op and row as the agent sent, for full rows, rows missing a
/// column or holding one the schema lacks, composite keys, deletes, intermediate changes of a
/// key, text with a NUL character, and rows of two datasets in one batch.
#[test]
fn the_change_log_reads_back_every_kind_of_change() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let mut c = db.client();
    let do_luong = DatasetSchema {
        privacy: Default::default(),
        dataset: "do_luong".into(),
        key: vec!["ma".into(), "ngay".into()],
        columns: vec![col("ma", ColumnType::Text), col("ngay", ColumnType::Date), col("gia_tri", ColumnType::Float)],
    };
    let schemas = [ho_so(&[col("so", ColumnType::Int)]), do_luong];
    let changes = [
        upsert("ho_so", 1, json!({"id": 1, "ten": "Nguyễn \"A\"", "so": null})),
        upsert("do_luong", 2, json!({"ma": "M1", "ngay": "2026-02-01", "gia_tri": 1.5})),
        upsert("ho_so", 3, json!({"id": 1, "ten": "a\u{0}b", "so": 7})),
        upsert("ho_so", 4, json!({"id": 2, "ten": "thiếu cột"})),
        upsert("ho_so", 5, json!({"id": 3, "ten": "x", "so": 1, "la": true})),
        delete("ho_so", 6, json!({"id": 1})),
        delete("do_luong", 7, json!({"ma": "M1", "ngay": "2026-02-01"})),
    ];
    apply(&mut wh, "a", &schemas, &changes).expect("apply");
    let up = |key: &str, row: &str, seq| (key.to_string(), "upsert".to_string(), Some(row.to_string()), seq);
    let del = |key: &str, seq| (key.to_string(), "delete".to_string(), None, seq);
    assert_eq!(
        log(&mut c),
        vec![
            up(r#"{"id": 1}"#, r#"{"id": 1, "so": null, "ten": "Nguyễn \"A\""}"#, 1),
            up(r#"{"ma": "M1", "ngay": "2026-02-01"}"#, r#"{"ma": "M1", "ngay": "2026-02-01", "gia_tri": 1.5}"#, 2),
            up(r#"{"id": 1}"#, r#"{"id": 1, "so": 7, "ten": "a�b"}"#, 3),
            up(r#"{"id": 2}"#, r#"{"id": 2, "ten": "thiếu cột"}"#, 4),
            up(r#"{"id": 3}"#, r#"{"id": 3, "la": true, "so": 1, "ten": "x"}"#, 5),
            del(r#"{"id": 1}"#, 6),
            del(r#"{"ma": "M1", "ngay": "2026-02-01"}"#, 7),
        ]
    );
}

/// A warehouse written by an older hub kept one jsonb row per change in a `kho.change_log`
/// table; opening it moves that history into `kho.change_batches`, readable through the view.
#[test]
fn an_older_per_change_history_is_migrated_into_the_view() {
    let db = TestDb::new();
    let mut c = db.client();
    c.batch_execute(
        "CREATE SCHEMA kho; CREATE TABLE kho.change_log (dataset text NOT NULL, key jsonb NOT NULL, op text NOT NULL, \
         row jsonb, agent text NOT NULL, seq bigint NOT NULL, applied_at timestamptz NOT NULL); \
         INSERT INTO kho.change_log VALUES \
         ('ho_so', '{\"id\": 1}', 'upsert', '{\"id\": 1, \"ten\": \"cũ\", \"so\": null}', 'a', 1, now() - interval '2 days'), \
         ('ho_so', '{\"id\": 1}', 'delete', NULL, 'a', 2, now() - interval '1 day')",
    )
    .expect("old history");
    let (mut wh, _reader) = open(&db);
    apply(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 3, json!({"id": 2, "ten": "mới"}))]).expect("apply");
    let log: Vec<(String, String, Option<String>, String, i64)> = c
        .query("SELECT key::text, op, row::text, agent, seq FROM kho.change_log ORDER BY seq", &[])
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        log,
        vec![
            (
                "{\"id\": 1}".into(),
                "upsert".into(),
                Some("{\"id\": 1, \"so\": null, \"ten\": \"cũ\"}".into()),
                "a".into(),
                1
            ),
            ("{\"id\": 1}".into(), "delete".into(), None, "a".into(), 2),
            ("{\"id\": 2}".into(), "upsert".into(), Some("{\"id\": 2, \"ten\": \"mới\"}".into()), "a".into(), 3),
        ]
    );
    let kind: String = c
        .query_one("SELECT relkind::text FROM pg_class WHERE oid = 'kho.change_log'::regclass", &[])
        .expect("kind")
        .get(0);
    assert_eq!(kind, "v", "the old table is gone, the view took its name");
}

/// A warehouse written by a hub that stored each batch's history as `json` (validated by the
/// server on every insert) has the column converted to `text` at start; old and new batches read
/// the same through the view, and pruning still counts the changes it removes.
#[test]
fn a_json_history_column_is_converted_to_text() {
    let db = TestDb::new();
    let mut c = db.client();
    c.batch_execute(
        "CREATE SCHEMA kho; CREATE TABLE kho.change_batches (dataset text NOT NULL, agent text NOT NULL, \
         first_seq bigint NOT NULL, last_seq bigint NOT NULL, applied_at timestamptz NOT NULL, changes json NOT NULL); \
         CREATE VIEW kho.change_log AS SELECT b.dataset, (c->'key')::jsonb AS key, c->>'op' AS op, \
         (c->'row')::jsonb AS row, b.agent, (c->>'seq')::bigint AS seq, b.applied_at \
         FROM kho.change_batches b, json_array_elements(b.changes) c; \
         INSERT INTO kho.change_batches VALUES ('ho_so', 'a', 1, 2, now() - interval '1 day', \
         '[{\"seq\":1,\"op\":\"upsert\",\"key\":{\"id\":1},\"row\":{\"id\":1,\"ten\":\"cũ\"}}, \
           {\"seq\":2,\"op\":\"delete\",\"key\":{\"id\":1}}]')",
    )
    .expect("old history");
    let (mut wh, _reader) = open(&db);
    apply(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 3, json!({"id": 2, "ten": "mới"}))]).expect("apply");
    let ty: String = c
        .query_one(
            "SELECT atttypid::regtype::text FROM pg_attribute \
             WHERE attrelid = 'kho.change_batches'::regclass AND attname = 'changes'",
            &[],
        )
        .expect("type")
        .get(0);
    assert_eq!(ty, "text");
    let log: Vec<(String, String, i64)> = c
        .query("SELECT key::text, op, seq FROM kho.change_log ORDER BY seq", &[])
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want = [("{\"id\": 1}", "upsert", 1), ("{\"id\": 1}", "delete", 2), ("{\"id\": 2}", "upsert", 3)];
    assert_eq!(log, want.map(|(k, o, s)| (k.to_string(), o.to_string(), s)).to_vec());
    c.batch_execute(
        "INSERT INTO kho.change_batches VALUES ('ho_so', 'a', 0, 0, now() - interval '400 days', \
         '[{\"seq\":0,\"op\":\"delete\",\"key\":{\"id\":0}}, {\"seq\":0,\"op\":\"delete\",\"key\":{\"id\":0}}]')",
    )
    .expect("old text row");
    // The 400-day-old row (2 changes) and the batch applied at the tests' fixed date (1 change).
    assert_eq!(wh.prune_history().expect("prune"), 3, "pruning counts the changes of the text rows it removes");
    drop(wh);
    let (_wh, _reader) = open(&db);
    let n: i64 = c.query_one("SELECT count(*) FROM kho.change_log", &[]).expect("log").get(0);
    assert_eq!(n, 2, "opening again keeps the converted history");
}
