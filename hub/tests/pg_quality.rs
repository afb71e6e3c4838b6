//! The PostgreSQL warehouse's quality records through the `Warehouse` trait, as the applier drives
//! them, on the real server (a fresh database per test, see `common::pg`): which earlier
//! violations a batch clears, and which quarantined rows a resent batch's ack lists again.

mod common;

use common::pg::{NOW, TestDb, apply, open};
use kho_hub::quality::Policy;
use kho_hub::quality::eval::{Failure, RowVerdict};
use kho_hub::warehouse::{HeldRow, Warehouse};
use kho_shared::protocol::{Change, Column, DatasetSchema, Op, QuarantinedRow};
use kho_shared::types::ColumnType;
use serde_json::json;

fn schema() -> DatasetSchema {
    let columns =
        vec![Column { name: "id".into(), ty: ColumnType::Int }, Column { name: "ten".into(), ty: ColumnType::Text }];
    DatasetSchema { privacy: Default::default(), dataset: "ho_so".into(), key: vec!["id".into()], columns }
}

fn upsert(seq: u64, id: u64) -> Change {
    let row = json!({"id": id, "ten": format!("hồ sơ {id}")});
    Change { seq, dataset: "ho_so".into(), op: Op::Upsert, key: None, row: row.as_object().cloned() }
}

/// `id`'s verdict: broken `rules` (none: clean).
fn verdict(seq: u64, id: u64, rules: &[&str]) -> RowVerdict {
    let failures = rules
        .iter()
        .map(|r| Failure { rule: r.to_string(), column: Some("ten".into()), value: None, policy: Policy::Warn })
        .collect();
    RowVerdict { index: 0, seq, key: format!("{{\"id\":{id}}}"), delete: false, failures }
}

/// A batch applied and its verdicts recorded in one transaction, as `apply_batch` does.
fn load(wh: &mut dyn Warehouse, changes: &[Change], verdicts: &[RowVerdict]) {
    wh.begin().expect("begin");
    wh.savepoint().expect("savepoint");
    wh.prepare_dataset(&schema(), NOW).expect("prepare");
    wh.apply_changes("a", &[schema()], changes, NOW).expect("apply");
    let refs: Vec<&RowVerdict> = verdicts.iter().collect();
    wh.record_quality("ho_so", &refs, NOW).expect("record");
    wh.release_savepoint().expect("release");
    wh.commit().expect("commit");
}

fn open_violations(db: &TestDb) -> Vec<(String, String)> {
    let rows = db.client().query("SELECT key, rule FROM kho.quality_violations ORDER BY key, rule", &[]).expect("read");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, r)| (k.to_string(), r.to_string())).collect()
}

/// A batch of new keys (loaded by the direct `COPY`) clears nothing of the rows it did not
/// write, records its own failures, and a later update of a broken row clears it.
#[test]
fn new_keys_record_their_failures_and_an_update_clears_the_old_ones() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    load(
        &mut wh,
        &[upsert(1, 1), upsert(2, 2), upsert(3, 3)],
        &[verdict(1, 1, &[]), verdict(2, 2, &["r"]), verdict(3, 3, &[])],
    );
    load(&mut wh, &[upsert(4, 4), upsert(5, 5)], &[verdict(4, 4, &["r", "s"]), verdict(5, 5, &[])]);
    assert_eq!(open_violations(&db), pairs(&[(r#"{"id":2}"#, "r"), (r#"{"id":4}"#, "r"), (r#"{"id":4}"#, "s")]));
    // Row 2 fixed and row 4 now breaking only `s`: existing keys, so the staging merge runs and
    // their earlier failures are replaced.
    load(&mut wh, &[upsert(6, 2), upsert(7, 4)], &[verdict(6, 2, &[]), verdict(7, 4, &["s"])]);
    assert_eq!(open_violations(&db), pairs(&[(r#"{"id":4}"#, "s")]));
}

/// A batch resent after a lost ack is a duplicate; its ack lists again the rows it had put in
/// quarantine — those still held from that batch, not ones a later batch held again.
#[test]
fn quarantined_rows_are_found_by_agent_and_sequence_range() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    apply(&mut wh, "a", &[schema()], &[upsert(1, 1)]).expect("table");
    let row = json!({"id": 9}).as_object().cloned();
    let held = |key, seq| HeldRow { key, seq, reason: format!("r at {seq}"), row: row.as_ref() };
    wh.begin().expect("begin");
    wh.quarantine("ho_so", "a", &[held(r#"{"id":3}"#, 3), held(r#"{"id":7}"#, 7)], &[], NOW).expect("hold a");
    wh.quarantine("ho_so", "b", &[held(r#"{"id":5}"#, 5)], &[], NOW).expect("hold b");
    wh.commit().expect("commit");
    let keys = |rows: Vec<QuarantinedRow>| rows.into_iter().map(|r| (r.key, r.reason)).collect::<Vec<_>>();
    let found = keys(wh.quarantined_from("a", 1, 10, 100).expect("read"));
    assert_eq!(found, pairs(&[(r#"{"id":3}"#, "r at 3"), (r#"{"id":7}"#, "r at 7")]));
    assert_eq!(keys(wh.quarantined_from("a", 4, 7, 100).expect("read")), pairs(&[(r#"{"id":7}"#, "r at 7")]));
    assert_eq!(keys(wh.quarantined_from("a", 1, 10, 1).expect("read")).len(), 1, "the limit holds");
    assert!(wh.quarantined_from("a", 8, 10, 100).expect("read").is_empty());
    // Row 3 held again by a later batch (seq 12): no longer the first batch's to report.
    wh.begin().expect("begin");
    wh.quarantine("ho_so", "a", &[held(r#"{"id":3}"#, 12)], &[], NOW).expect("hold again");
    wh.commit().expect("commit");
    assert_eq!(keys(wh.quarantined_from("a", 1, 10, 100).expect("read")), pairs(&[(r#"{"id":7}"#, "r at 7")]));
}

/// `row_count` counts a period's rows by the `freshness_field`: full dates and timestamps by
/// range, a month (`2026-02`) or a year (`2026`, text or number) by its first day — as text
/// `2026-02` sorts before `2026-02-01`, which counted it in January.
#[test]
fn rows_per_period_count_months_and_years_in_the_period_of_their_first_day() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let mut s = schema();
    s.dataset = "bao_cao".into();
    s.columns.push(Column { name: "ky".into(), ty: ColumnType::Text });
    s.columns.push(Column { name: "nam".into(), ty: ColumnType::Int });
    let kys = ["2026-01-15", "2026-02", "2026-02-01", "2026", "2026-03-01T08:00:00Z", "tháng 2", "2026-02-20"];
    let row = |id: usize, ky: &str, nam: i64| json!({"id": id, "ky": ky, "nam": nam}).as_object().cloned();
    let mut changes: Vec<Change> = kys
        .iter()
        .enumerate()
        .map(|(i, k)| Change {
            seq: i as u64 + 1,
            dataset: "bao_cao".into(),
            op: Op::Upsert,
            key: None,
            row: row(i, k, 2026),
        })
        .collect();
    changes.push(Change {
        seq: 8,
        dataset: "bao_cao".into(),
        op: Op::Upsert,
        key: None,
        row: row(10, "2025-12", 2025),
    });
    let gone = json!({"id": 6}).as_object().cloned();
    changes.push(Change { seq: 9, dataset: "bao_cao".into(), op: Op::Delete, key: gone, row: None });
    apply(&mut wh, "a", &[s], &changes).expect("apply");
    let mut count = |column, start, end| wh.rows_in_period("bao_cao", Some(column), start, end).expect("count");
    assert_eq!(count("ky", "2026-02-01", "2026-03-01"), 2, "2026-02 and 2026-02-01 (2026-02-20 is deleted)");
    assert_eq!(count("ky", "2026-01-01", "2026-04-01"), 5, "the quarter, with the year 2026");
    assert_eq!(count("ky", "2025-12-01", "2026-01-01"), 1);
    assert_eq!(count("nam", "2026-01-01", "2027-01-01"), 6, "a number year (one row is deleted)");
    assert_eq!(count("nam", "2025-01-01", "2026-01-01"), 1);
    assert_eq!(count("nam", "2026-02-01", "2026-03-01"), 0);
}
