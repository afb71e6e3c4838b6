//! The periodic pass's plan (pure), and the pass and `max_change_share` syncs on a real SQLite
//! warehouse in a temporary directory.

use kho_shared::protocol::{Change, Column, DatasetReport, DatasetSchema, Heartbeat, Op};
use kho_shared::types::ColumnType;
use serde_json::json;

use super::ingest::Tally;
use super::periodic::{Work, plan, run};
use super::share::Syncs;
use crate::catalog::Catalog;
use crate::warehouse::sqlite::SqliteWarehouse;
use crate::warehouse::{FullCheck, Warehouse};

const NOW: &str = "2026-03-15T00:00:00.000Z";

fn catalog(extra: &str) -> Catalog {
    let text = format!(
        "[[department]]\ncode='y_te'\nname='Sở Y tế'\ncontact={{name='VP', phone='0212 385 0010'}}\n\
         [[dataset]]\nid='don_vi'\ntitle='Đơn vị'\ndepartment='y_te'\ncadence='monthly'\nupdate_kind='sync'\n\
         [[dataset]]\nid='ho_so'\ntitle='Hồ sơ'\ndepartment='y_te'\ncadence='monthly'\nupdate_kind='sync'\n{extra}"
    );
    Catalog::from_toml_str(&text, "test").expect("catalogue")
}

fn rules() -> &'static str {
    "[[dataset.rule]]\ncheck='unique'\ncolumn='ma'\n\
     [[dataset.rule]]\ncheck='reference'\ncolumn='dv'\ndataset='don_vi'\nref_column='ten'\n\
     [[dataset.rule]]\ncheck='row_count'\nperiod='month'\nmin_rows=3\n\
     [[dataset.rule]]\ncheck='max_change_share'\nmax_percent=50.0\n"
}

#[test]
fn the_plan_has_a_full_check_per_unique_and_reference_rule_and_a_count_of_the_last_closed_period() {
    let now: jiff::Timestamp = NOW.parse().expect("now");
    let work = plan(&catalog(rules()), now);
    assert_eq!(work.datasets.len(), 1);
    let d = &work.datasets[0];
    assert_eq!(d.dataset, "ho_so");
    assert_eq!(d.full[0], ("unique:ma".into(), "ma".into(), FullCheck::Unique { column: "ma".into() }));
    assert!(
        matches!(&d.full[1].2, FullCheck::Reference { dataset, ref_column, .. } if dataset == "don_vi" && ref_column == "ten")
    );
    let c = &d.counts[0];
    assert_eq!((c.label.as_str(), c.column.as_deref(), c.min_rows), ("2026-02", None, Some(3)));
    // No freshness_field: counted by arrival time, February in Sơn La (UTC+7).
    assert_eq!((c.start.as_str(), c.end.as_str()), ("2026-01-31T17:00:00.000Z", "2026-02-28T17:00:00.000Z"));

    let with_field = catalog(rules()).datasets.into_iter().map(|mut d| {
        d.freshness_field = Some("ngay".into());
        d
    });
    let cat = Catalog { datasets: with_field.collect(), ..catalog("") };
    let c = &plan(&cat, now).datasets[0].counts[0];
    assert_eq!((c.start.as_str(), c.end.as_str(), c.column.as_deref()), ("2026-02-01", "2026-03-01", Some("ngay")));
    assert!(plan(&catalog(""), now).datasets.is_empty(), "no rules, no work");
}

fn schema(dataset: &str, cols: &[&str]) -> DatasetSchema {
    let mut columns = vec![Column { name: "id".into(), ty: ColumnType::Int }];
    columns.extend(cols.iter().map(|c| Column { name: c.to_string(), ty: ColumnType::Text }));
    DatasetSchema { dataset: dataset.into(), key: vec!["id".into()], columns, privacy: Default::default() }
}

fn up(seq: u64, dataset: &str, row: serde_json::Value) -> Change {
    Change { seq, dataset: dataset.into(), op: Op::Upsert, key: None, row: row.as_object().cloned() }
}

fn del(seq: u64, dataset: &str, id: i64) -> Change {
    Change { seq, dataset: dataset.into(), op: Op::Delete, key: json!({"id": id}).as_object().cloned(), row: None }
}

fn open_violations(path: &std::path::Path, rule: &str) -> Vec<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut stmt =
        conn.prepare("SELECT key, value FROM _kho_quality_violations WHERE rule = ?1 ORDER BY key").expect("prepare");
    stmt.query_map([rule], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").map(|r| r.expect("row")).collect()
}

fn apply(wh: &mut SqliteWarehouse, schema: &DatasetSchema, changes: &[Change]) {
    wh.begin().expect("begin");
    wh.prepare_dataset(schema, NOW).expect("prepare");
    wh.apply_changes("a", std::slice::from_ref(schema), changes, NOW).expect("apply");
    wh.commit().expect("commit");
}

fn pass(wh: &mut SqliteWarehouse, work: &Work) {
    wh.begin().expect("begin");
    run(wh, work).expect("pass");
    wh.commit().expect("commit");
}

#[test]
fn the_full_check_opens_and_closes_reference_and_unique_violations_and_counts_periods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.sqlite");
    let mut wh = SqliteWarehouse::open(&path).expect("open");
    let ho_so = schema("ho_so", &["ma", "dv"]);
    let don_vi = schema("don_vi", &["ten"]);
    apply(&mut wh, &don_vi, &[up(1, "don_vi", json!({"id": 1, "ten": "BV A"}))]);
    apply(
        &mut wh,
        &ho_so,
        &[
            up(2, "ho_so", json!({"id": 1, "ma": "X", "dv": "BV A"})),
            up(3, "ho_so", json!({"id": 2, "ma": "X", "dv": "BV B"})),
            up(4, "ho_so", json!({"id": 3, "ma": "Y", "dv": " "})),
        ],
    );
    let now: jiff::Timestamp = NOW.parse().expect("now");
    let work = plan(&catalog(rules()), now);
    pass(&mut wh, &work);
    assert_eq!(
        open_violations(&path, "reference:dv"),
        [(r#"{"id":2}"#.into(), Some("BV B".into()))],
        "BV B is unknown; blank is not checked"
    );
    assert_eq!(open_violations(&path, "unique:ma"), [(r#"{"id":2}"#.into(), Some("X".into()))], "the later holder");
    let counted = open_violations(&path, "row_count");
    assert_eq!(counted.len(), 1, "nothing arrived in February: {counted:?}");
    assert_eq!(counted[0].0, r#"{"_kho_period":"2026-02"}"#);

    // The referenced unit arrives late; the other X is deleted: both violations close.
    apply(&mut wh, &don_vi, &[up(5, "don_vi", json!({"id": 2, "ten": "BV B"}))]);
    apply(&mut wh, &ho_so, &[del(6, "ho_so", 1)]);
    pass(&mut wh, &work);
    assert!(open_violations(&path, "reference:dv").is_empty());
    assert!(open_violations(&path, "unique:ma").is_empty(), "the remaining X is alone");

    // A referenced row deleted opens the violation again.
    apply(&mut wh, &don_vi, &[del(7, "don_vi", 2)]);
    pass(&mut wh, &work);
    assert_eq!(open_violations(&path, "reference:dv").len(), 1);
}

fn heartbeat(captured: u64) -> Heartbeat {
    Heartbeat {
        v: 1,
        agent: "a".into(),
        version: "t".into(),
        sent_at_ms: 0,
        outbox_depth: 0,
        acked_through: captured,
        datasets: vec![DatasetReport {
            dataset: "ho_so".into(),
            last_ok_poll_at_ms: Some(0),
            captured_through_seq: captured,
            last_error: None,
            null_cursor_rows: 0,
            cdc: None,
        }],
    }
}

#[test]
fn a_sync_changing_more_than_its_share_is_flagged_until_a_sync_within_it_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.sqlite");
    let mut wh = SqliteWarehouse::open(&path).expect("open");
    let cat = catalog(rules());
    let ho_so = schema("ho_so", &["ma", "dv"]);
    let mut syncs = Syncs::default();
    let mut tally = Tally::default();
    let batch = |wh: &mut SqliteWarehouse, syncs: &mut Syncs, tally: &mut Tally, changes: &[Change]| {
        wh.begin().expect("begin");
        wh.prepare_dataset(&ho_so, NOW).expect("prepare");
        syncs.add(wh, &cat, "a", changes, NOW, tally).expect("count");
        wh.apply_changes("a", std::slice::from_ref(&ho_so), changes, NOW).expect("apply");
        wh.commit().expect("commit");
    };
    let close = |wh: &mut SqliteWarehouse, syncs: &mut Syncs, captured: u64| {
        wh.begin().expect("begin");
        syncs.close(wh, &heartbeat(captured), captured, NOW).expect("close");
        wh.commit().expect("commit");
    };
    // A first load of 10 rows is never flagged.
    let first: Vec<Change> = (1..=10).map(|i| up(i, "ho_so", json!({"id": i, "ma": format!("M{i}")}))).collect();
    batch(&mut wh, &mut syncs, &mut tally, &first);
    close(&mut wh, &mut syncs, 10);
    assert!(open_violations(&path, "max_change_share").is_empty());
    // A sync of two batches changing 6 of 10 rows (60 % > 50 %): flagged once it passes the limit.
    batch(&mut wh, &mut syncs, &mut tally, &[up(11, "ho_so", json!({"id": 1, "ma": "N1"})), del(12, "ho_so", 2)]);
    assert!(open_violations(&path, "max_change_share").is_empty(), "20 % so far");
    close(&mut wh, &mut syncs, 9);
    assert!(!syncs.is_empty(), "a heartbeat about an earlier capture does not end the sync");
    let more: Vec<Change> = (3..=6).map(|i| up(10 + i, "ho_so", json!({"id": i, "ma": format!("N{i}")}))).collect();
    batch(&mut wh, &mut syncs, &mut tally, &more);
    let flagged = open_violations(&path, "max_change_share");
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].0, r#"{"_kho_sync":"a"}"#);
    assert!(flagged[0].1.as_deref().is_some_and(|v| v.starts_with("60.0% of 10 rows")), "{flagged:?}");
    assert_eq!(tally.violations.values().sum::<u64>(), 1, "counted once per sync");
    close(&mut wh, &mut syncs, 16);
    assert_eq!(open_violations(&path, "max_change_share").len(), 1, "the flag outlives its sync");
    // The next sync stays within the limit: its close clears the flag.
    batch(&mut wh, &mut syncs, &mut tally, &[up(17, "ho_so", json!({"id": 7, "ma": "Z"}))]);
    close(&mut wh, &mut syncs, 17);
    assert!(open_violations(&path, "max_change_share").is_empty());
    assert!(syncs.is_empty());
}

fn document() -> crate::api::quality::QualityDocument {
    use crate::api::quality::{DatasetQuality, QualityDocument, RuleQuality};
    use crate::quality::{Check, Policy};
    let rule = |rule: &str, check, violations, passing_share| RuleQuality {
        rule: rule.into(),
        check,
        column: None,
        policy: Policy::Warn,
        violations,
        passing_share,
    };
    let dataset = |id: &str, score, rules| DatasetQuality {
        dataset: id.into(),
        department: "y_te".into(),
        rows: 10,
        quarantined: 1,
        score,
        rules,
        latest: vec![],
        latest_quarantined: vec![],
        history: None,
    };
    QualityDocument {
        generated_at: NOW.into(),
        datasets: vec![
            dataset(
                "ho_so",
                Some(0.8),
                vec![rule("unique:ma", Check::Unique, 2, Some(0.8)), rule("row_count", Check::RowCount, 1, None)],
            ),
            dataset("don_vi", Some(1.0), vec![rule("not_null:ten", Check::NotNull, 0, Some(1.0))]),
        ],
    }
}

#[test]
fn history_rows_are_labelled_with_each_datasets_schedule_period() {
    let now: jiff::Timestamp = NOW.parse().expect("now");
    let mut cat = catalog(rules());
    cat.datasets[0].cadence = kho_shared::schedule::Cadence::Quarterly;
    let rows = super::periodic::history_rows(&cat, &document(), now);
    let ho_so = rows.iter().find(|r| r.dataset == "ho_so").expect("ho_so");
    assert_eq!((ho_so.period.as_str(), ho_so.score, ho_so.rows, ho_so.quarantined), ("2026-03", Some(0.8), 10, 1));
    assert_eq!(ho_so.rules.get("unique:ma"), Some(&2));
    assert_eq!(ho_so.rules.get("row_count"), Some(&1));
    assert_eq!(
        (ho_so.period_start.as_str(), ho_so.period_end.as_str()),
        ("2026-02-28T17:00:00.000Z", "2026-03-31T17:00:00.000Z")
    );
    let don_vi = rows.iter().find(|r| r.dataset == "don_vi").expect("don_vi");
    assert_eq!(don_vi.period, "2026-Q1", "don_vi is quarterly here");
}

#[test]
fn the_department_quality_column_averages_its_datasets() {
    let q = crate::freshness::views::department_quality(&document(), "y_te");
    assert_eq!(q.score, Some(0.9));
    assert_eq!(q.lowest, Some(0.8));
    assert_eq!((q.datasets_with_rules, q.open_violations, q.quarantined), (2, 3, 2));
    let none = crate::freshness::views::department_quality(&document(), "khac");
    assert_eq!((none.score, none.datasets_with_rules), (None, 0));
}

/// `row_count` counts a period's rows by the `freshness_field`: full dates and timestamps by
/// range, a month (`2026-02`) or a year (`2026`, text or number) by its first day — as text
/// `2026-02` sorts before `2026-02-01`, which counted it in January.
#[test]
fn rows_per_period_count_months_and_years_in_the_period_of_their_first_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wh = SqliteWarehouse::open(&dir.path().join("w.sqlite")).expect("open");
    let mut s = schema("bao_cao", &["ky"]);
    s.columns.push(Column { name: "nam".into(), ty: ColumnType::Int });
    let kys = ["2026-01-15", "2026-02", "2026-02-01", "2026", "2026-03-01T08:00:00Z", "tháng 2", "2026-02-20"];
    let mut changes: Vec<Change> = kys
        .iter()
        .enumerate()
        .map(|(i, k)| up(i as u64 + 1, "bao_cao", json!({"id": i, "ky": k, "nam": 2026})))
        .collect();
    changes.push(up(8, "bao_cao", json!({"id": 10, "ky": "2025-12", "nam": 2025})));
    changes.push(del(9, "bao_cao", 6));
    apply(&mut wh, &s, &changes);
    let mut count = |column, start, end| wh.rows_in_period("bao_cao", Some(column), start, end).expect("count");
    assert_eq!(count("ky", "2026-02-01", "2026-03-01"), 2, "2026-02 and 2026-02-01 (2026-02-20 is deleted)");
    assert_eq!(count("ky", "2026-01-01", "2026-04-01"), 5, "the quarter, with the year 2026");
    assert_eq!(count("ky", "2025-12-01", "2026-01-01"), 1);
    assert_eq!(count("nam", "2026-01-01", "2027-01-01"), 6, "a number year (one row is deleted)");
    assert_eq!(count("nam", "2025-01-01", "2026-01-01"), 1);
    assert_eq!(count("nam", "2026-02-01", "2026-03-01"), 0);
}

/// The open syncs are stored with the batches that count them: a hub restarted in the middle of
/// a sync (a fresh `Syncs`, the warehouse reopened) goes on counting it, and flags it.
#[test]
fn a_sync_in_progress_is_counted_across_a_hub_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.sqlite");
    let cat = catalog(rules());
    let ho_so = schema("ho_so", &["ma", "dv"]);
    let mut tally = Tally::default();
    let batch = |wh: &mut SqliteWarehouse, syncs: &mut Syncs, tally: &mut Tally, changes: &[Change]| {
        wh.begin().expect("begin");
        wh.prepare_dataset(&ho_so, NOW).expect("prepare");
        syncs.add(wh, &cat, "a", changes, NOW, tally).expect("count");
        wh.apply_changes("a", std::slice::from_ref(&ho_so), changes, NOW).expect("apply");
        wh.commit().expect("commit");
    };
    {
        let mut wh = SqliteWarehouse::open(&path).expect("open");
        let mut syncs = Syncs::default();
        let first: Vec<Change> = (1..=10).map(|i| up(i, "ho_so", json!({"id": i, "ma": format!("M{i}")}))).collect();
        batch(&mut wh, &mut syncs, &mut tally, &first);
        wh.begin().expect("begin");
        syncs.close(&mut wh, &heartbeat(10), 10, NOW).expect("close");
        wh.commit().expect("commit");
        // A sync's first batch: 3 of 10 rows.
        let some: Vec<Change> = (1..=3).map(|i| up(10 + i, "ho_so", json!({"id": i, "ma": format!("N{i}")}))).collect();
        batch(&mut wh, &mut syncs, &mut tally, &some);
    }
    // Restarted: 3 more rows make 6 of the 10 the sync started from (60 % > 50 %).
    let mut wh = SqliteWarehouse::open(&path).expect("reopen");
    let mut syncs = Syncs::default();
    wh.begin().expect("begin");
    assert!(syncs.watching(&mut wh, &cat, "a").expect("read"), "the sync is still open");
    wh.commit().expect("commit");
    let more: Vec<Change> = (4..=6).map(|i| up(10 + i, "ho_so", json!({"id": i, "ma": format!("N{i}")}))).collect();
    batch(&mut wh, &mut syncs, &mut tally, &more);
    let flagged = open_violations(&path, "max_change_share");
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(
        flagged[0].1.as_deref().is_some_and(|v| v.starts_with("60.0% of 10 rows changed by one sync (from seq 11)")),
        "{flagged:?}"
    );
    // Its close is stored too: after another restart nothing is open.
    wh.begin().expect("begin");
    syncs.close(&mut wh, &heartbeat(16), 16, NOW).expect("close");
    wh.commit().expect("commit");
    drop(wh);
    let mut wh = SqliteWarehouse::open(&path).expect("reopen");
    wh.begin().expect("begin");
    assert!(!Syncs::default().watching(&mut wh, &cat, "a").expect("read"));
    wh.commit().expect("commit");
}
