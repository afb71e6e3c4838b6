//! The SQLite warehouse through the [`Warehouse`] trait, as the applier drives it.

use kho_shared::protocol::{Change, Column, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::json;

use super::*;

const NOW: &str = "2025-01-01T00:00:00.000Z";

fn schema(key: &str, extra: &[&str]) -> DatasetSchema {
    let mut columns =
        vec![Column { name: "id".into(), ty: ColumnType::Int }, Column { name: "ten".into(), ty: ColumnType::Text }];
    columns.extend(extra.iter().map(|c| Column { name: c.to_string(), ty: ColumnType::Decimal }));
    DatasetSchema { privacy: Default::default(), dataset: "ho_so".into(), key: vec![key.into()], columns }
}

fn upsert(seq: u64, id: i64, ten: &str) -> Change {
    Change {
        seq,
        dataset: "ho_so".into(),
        op: Op::Upsert,
        key: None,
        row: json!({"id": id, "ten": ten}).as_object().cloned(),
    }
}

fn delete(seq: u64, id: i64) -> Change {
    Change { seq, dataset: "ho_so".into(), op: Op::Delete, key: json!({"id": id}).as_object().cloned(), row: None }
}

#[test]
fn upsert_soft_delete_and_undelete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = SqliteWarehouse::open(&dir.path().join("w.sqlite")).expect("open");
    let s = schema("id", &[]);
    wh.begin().expect("begin");
    wh.prepare_dataset(&s, NOW).expect("prepare");
    let changes = [
        upsert(1, 1, "Lò Văn Hùng"),
        upsert(2, 2, "Cầm Thị Mai"),
        delete(3, 1),
        delete(4, 99),
        upsert(5, 2, "Cầm Thị Mai (sửa)"),
    ];
    let stats = wh.apply_changes("a", std::slice::from_ref(&s), &changes, NOW).expect("apply");
    assert_eq!(stats, ApplyStats { upserts: 3, deletes: 2 });
    wh.set_applied_seq("a", 5, NOW).expect("ledger");
    wh.commit().expect("commit");
    assert_eq!(wh.applied_seq("a").expect("ledger"), 5);
    assert_eq!(count_rows(&wh.conn, "ho_so").expect("count"), (1, 1));
    let (ten, seq): (String, i64) = wh
        .conn
        .query_row("SELECT ten, _kho_seq FROM ho_so WHERE id = 2", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("row");
    assert_eq!((ten.as_str(), seq), ("Cầm Thị Mai (sửa)", 5));

    wh.begin().expect("begin");
    wh.apply_changes("a", std::slice::from_ref(&s), &[upsert(6, 1, "Lò Văn Hùng")], NOW).expect("undelete");
    wh.commit().expect("commit");
    assert_eq!(count_rows(&wh.conn, "ho_so").expect("count"), (2, 0));
}

#[test]
fn rolled_back_schema_changes_are_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = SqliteWarehouse::open(&dir.path().join("w.sqlite")).expect("open");
    wh.begin().expect("begin");
    wh.prepare_dataset(&schema("id", &[]), NOW).expect("create");
    wh.commit().expect("commit");

    wh.begin().expect("begin");
    wh.savepoint().expect("savepoint");
    wh.prepare_dataset(&schema("id", &["so_tien"]), NOW).expect("alter");
    wh.rollback_to_savepoint().expect("rollback");
    wh.commit().expect("commit");
    assert_eq!(wh.tables["ho_so"].columns.len(), 2, "catalogue reloaded after the rollback");
    let n: i64 = wh
        .conn
        .query_row("SELECT count(*) FROM pragma_table_info('ho_so') WHERE name = 'so_tien'", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(n, 0);

    wh.begin().expect("begin");
    let err = wh.prepare_dataset(&schema("ten", &[]), NOW).expect_err("key change");
    assert!(matches!(err, WarehouseError::SchemaConflict { .. }) && !err.is_transient());
    wh.rollback();
}

#[test]
fn reopening_keeps_catalogue_and_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.sqlite");
    {
        let mut wh = SqliteWarehouse::open(&path).expect("open");
        wh.begin().expect("begin");
        wh.prepare_dataset(&schema("id", &["so_tien"]), NOW).expect("create");
        wh.set_applied_seq("a", 42, NOW).expect("ledger");
        wh.commit().expect("commit");
    }
    let mut wh = SqliteWarehouse::open(&path).expect("reopen");
    assert_eq!(wh.applied_seq("a").expect("ledger"), 42);
    assert_eq!(wh.tables["ho_so"].columns.len(), 3);
    let status = SqliteReader::open(&path).expect("reader");
    let s = crate::warehouse::WarehouseReader::status(&status).expect("status");
    assert_eq!(s.datasets[0].dataset, "ho_so");
    assert_eq!(s.agents[0].applied_through, 42);
}

#[test]
fn batch_lookups_agree_with_single_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = SqliteWarehouse::open(&dir.path().join("w.sqlite")).expect("open");
    let s = schema("id", &[]);
    wh.begin().expect("begin");
    wh.prepare_dataset(&s, NOW).expect("prepare");
    let changes = [upsert(1, 5, "Mai"), upsert(2, 6, "Hùng \"A\""), delete(3, 6), upsert(4, 7, "7")];
    wh.apply_changes("a", std::slice::from_ref(&s), &changes, NOW).expect("apply");
    for column in ["id", "ten", "khong_co"] {
        let values = ["5", "6", "7", "Mai", "Hùng \"A\"", "x", "05", " 5"];
        let batch = wh.values_exist("ho_so", column, &values).expect("batch lookup");
        let single: Vec<bool> = values.iter().map(|v| wh.value_exists("ho_so", column, v).expect("lookup")).collect();
        assert_eq!(batch, single, "{column}");
    }
    assert_eq!(wh.values_exist("ho_so", "id", &["5", "6", "7"]).expect("lookup"), [true, false, true]);
    assert_eq!(wh.values_exist("khong_co", "id", &["5"]).expect("lookup"), [false]);
    wh.commit().expect("commit");
}

#[test]
fn recording_a_batch_clears_exactly_its_rows_earlier_violations() {
    use crate::quality::Policy;
    use crate::quality::eval::{Failure, RowVerdict};
    let verdict = |key: &str, failing: bool| RowVerdict {
        index: 0,
        seq: 1,
        key: key.into(),
        delete: false,
        failures: if failing {
            vec![Failure { rule: "not_null:ten".into(), column: Some("ten".into()), value: None, policy: Policy::Warn }]
        } else {
            vec![]
        },
    };
    let open = |wh: &SqliteWarehouse| -> Vec<String> {
        let mut stmt = wh.conn.prepare("SELECT key FROM _kho_quality_violations ORDER BY key").expect("prepare");
        stmt.query_map([], |r| r.get(0)).expect("query").collect::<Result<_, _>>().expect("rows")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = SqliteWarehouse::open(&dir.path().join("w.sqlite")).expect("open");
    wh.begin().expect("begin");
    let keys: Vec<String> = (0..12).map(|i| format!("{{\"id\":{i:02}}}")).collect();
    let all: Vec<RowVerdict> = keys.iter().map(|k| verdict(k, true)).collect();
    wh.record_quality("ho_so", &all.iter().collect::<Vec<_>>(), NOW).expect("record");
    assert_eq!(open(&wh).len(), 12);
    // Few keys in the batch, many open violations: the clearing falls back to probing.
    let (fixed, again) = (verdict(&keys[0], false), verdict(&keys[1], true));
    wh.record_quality("ho_so", &[&fixed, &again], NOW).expect("record");
    assert_eq!(open(&wh), keys[1..].to_vec());
    // A batch as large as the open violations: read in one pass.
    let batch: Vec<RowVerdict> =
        keys.iter().enumerate().map(|(i, k)| verdict(k, i % 3 == 0)).chain([verdict("{\"id\":99}", false)]).collect();
    wh.record_quality("ho_so", &batch.iter().collect::<Vec<_>>(), NOW).expect("record");
    let expected: Vec<String> = keys.iter().step_by(3).cloned().collect();
    assert_eq!(open(&wh), expected);
    wh.commit().expect("commit");
}
