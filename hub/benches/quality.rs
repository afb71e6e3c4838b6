//! Where the hub's time goes with data-quality rules: `cargo bench -p kho-hub --bench quality`.
//!
//! The end-to-end benchmark (`tests/bench-quality.sh`) measures a whole sync through agent and
//! HTTPS; this one drives the applier's steps directly on two SQLite warehouses — one whose
//! catalogue has no rules, one with the same 10 rules — and times each step per row (checking,
//! applying, recording the verdicts, committing). Each batch goes to both warehouses one after
//! the other, so the machine's noise (other builds on a shared box) hits both alike and the ratio
//! stays honest. `KHO_BENCH_ROWS` (default 200,000) and `KHO_BENCH_BATCH` (default 20,000) set
//! the sizes; the data is the end-to-end benchmark's (~7 % of rows dated after today).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kho_hub::catalog::Catalog;
use kho_hub::quality::ingest::{self, Tally};
use kho_hub::warehouse::Warehouse;
use kho_hub::warehouse::sqlite::SqliteWarehouse;
use kho_shared::protocol::{Change, Column, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::{Map, Value, json};

const CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[dataset]]
id = "don_vi"
title = "Danh mục đơn vị"
department = "so_y_te"
cadence = "monthly"
update_kind = "sync"

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"
"#;

/// The end-to-end benchmark's 10 rules (the two dataset-level ones cost nothing per row).
const RULES: &str = r#"
[[dataset.rule]]
check = "not_null"
column = "ma_ho_so"
[[dataset.rule]]
check = "not_null"
column = "ghi_chu"
[[dataset.rule]]
check = "unique"
column = "ma_ho_so"
[[dataset.rule]]
check = "pattern"
column = "ma_ho_so"
pattern = '000\.00\.[0-9]{2}\.H52-[0-9]{6}-[0-9]{7}'
[[dataset.rule]]
check = "allowed_values"
column = "trang_thai"
values = ["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"]
[[dataset.rule]]
check = "range"
column = "so_tien"
min = 0
[[dataset.rule]]
check = "range"
column = "ngay_nhan"
min = "2020-01-01"
max = "today"
[[dataset.rule]]
check = "reference"
column = "don_vi"
dataset = "don_vi"
ref_column = "ten"
[[dataset.rule]]
check = "row_count"
period = "month"
min_rows = 1
[[dataset.rule]]
check = "max_change_share"
max_percent = 50.0
"#;

const DON_VI: &[&str] = &[
    "Bệnh viện Đa khoa tỉnh Sơn La",
    "Trung tâm Y tế huyện Mộc Châu",
    "Trung tâm Y tế thành phố Sơn La",
    "Trung tâm Y tế huyện Mường La",
    "Chi cục An toàn vệ sinh thực phẩm",
];
const TRANG_THAI: &[&str] = &["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"];
const AGENT: &str = "bench";

fn schema(dataset: &str, key: &str, columns: &[(&str, ColumnType)]) -> DatasetSchema {
    DatasetSchema {
        privacy: Default::default(),
        dataset: dataset.into(),
        key: vec![key.into()],
        columns: columns.iter().map(|(name, ty)| Column { name: (*name).into(), ty: *ty }).collect(),
    }
}

fn upsert(seq: u64, dataset: &str, row: Value) -> Change {
    let row: Option<Map<String, Value>> = row.as_object().cloned();
    Change { seq, dataset: dataset.into(), op: Op::Upsert, key: None, row }
}

/// A dossier as the agent sends the sample source's row `id` (tests/src/source.rs).
fn dossier(seq: u64, id: u64) -> Change {
    let i = id as usize;
    upsert(
        seq,
        "ho_so",
        json!({
            "id": id, "ma_ho_so": format!("000.00.{:02}.H52-260101-{id:07}", i % 17),
            "linh_vuc": "Cấp giấy phép hoạt động khám bệnh, chữa bệnh",
            "don_vi": DON_VI[(i / 3) % DON_VI.len()], "trang_thai": TRANG_THAI[(i / 7) % TRANG_THAI.len()],
            "ngay_nhan": format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            "ngay_hen_tra": format!("2026-{:02}-{:02}", 1 + (i + 1) % 12, 1 + (i + 9) % 28),
            "so_tien": ((i % 500) * 10_000).to_string(),
            "ghi_chu": format!("Hồ sơ số {id} — công dân nộp trực tuyến, đã kiểm tra đủ thành phần “hợp lệ”"),
            "updated_at": format!("2026-01-01T00:00:00.{:03}Z", i % 1000),
        }),
    )
}

/// Time per step, summed over the batches.
#[derive(Default)]
struct Steps {
    check: Duration,
    apply: Duration,
    record: Duration,
    commit: Duration,
}

impl Steps {
    fn total(&self) -> Duration {
        self.check + self.apply + self.record + self.commit
    }
}

struct Side {
    wh: SqliteWarehouse,
    catalog: Catalog,
    steps: Steps,
    tally: Tally,
}

impl Side {
    fn open(dir: &std::path::Path, name: &str, catalog: &str) -> Side {
        let wh = SqliteWarehouse::open(&dir.join(format!("{name}.sqlite"))).unwrap();
        let catalog = Catalog::from_toml_str(catalog, name).unwrap();
        Side { wh, catalog, steps: Steps::default(), tally: Tally::default() }
    }

    /// One batch, as `apply_batch` runs it for a batch without rejected rows.
    fn apply(&mut self, schemas: &[DatasetSchema], changes: &[Change], last_seq: u64) {
        let now = "2026-12-03T12:00:00.000Z";
        let today: jiff::civil::Date = "2026-12-03".parse().unwrap();
        let t = Instant::now();
        self.wh.begin().unwrap();
        for s in schemas {
            self.wh.prepare_dataset(s, now).unwrap();
        }
        let checked = ingest::check(&mut self.wh, &self.catalog, schemas, changes, today).unwrap();
        assert!(ingest::rejected(&checked).is_empty(), "the bench's rules only warn");
        let t1 = Instant::now();
        self.wh.apply_changes(AGENT, schemas, changes, now).unwrap();
        let t2 = Instant::now();
        ingest::record(&mut self.wh, &checked, now, &mut self.tally).unwrap();
        self.wh.set_applied_seq(AGENT, last_seq, now).unwrap();
        let t3 = Instant::now();
        self.wh.commit().unwrap();
        let t4 = Instant::now();
        self.steps.check += t1 - t;
        self.steps.apply += t2 - t1;
        self.steps.record += t3 - t2;
        self.steps.commit += t4 - t3;
    }
}

fn main() {
    let rows: u64 = std::env::var("KHO_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let batch: u64 = std::env::var("KHO_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let mut plain = Side::open(dir.path(), "plain", CATALOG);
    let mut rules = Side::open(
        dir.path(),
        "rules",
        &CATALOG.replace(
            "cadence = \"daily\"\nupdate_kind = \"sync\"\n",
            &format!("cadence = \"daily\"\nupdate_kind = \"sync\"\n{RULES}"),
        ),
    );
    assert!(rules.catalog.dataset("ho_so").is_some_and(|d| d.rules.len() == 10), "rules attached to ho_so");

    let units = schema("don_vi", "ma", &[("ma", ColumnType::Text), ("ten", ColumnType::Text)]);
    let unit_changes: Vec<Change> = DON_VI
        .iter()
        .enumerate()
        .map(|(i, ten)| upsert(i as u64 + 1, "don_vi", json!({"ma": format!("DV{i:02}"), "ten": ten})))
        .collect();
    let base = DON_VI.len() as u64;
    for side in [&mut plain, &mut rules] {
        side.apply(std::slice::from_ref(&units), &unit_changes, base);
        side.steps = Steps::default();
    }
    use ColumnType::{Date, Decimal, Int, Text, Timestamp};
    let dossiers = schema(
        "ho_so",
        "id",
        &[
            ("id", Int),
            ("ma_ho_so", Text),
            ("linh_vuc", Text),
            ("don_vi", Text),
            ("trang_thai", Text),
            ("ngay_nhan", Date),
            ("ngay_hen_tra", Date),
            ("so_tien", Decimal),
            ("ghi_chu", Text),
            ("updated_at", Timestamp),
        ],
    );
    println!("kho-hub quality bench: {rows} rows in batches of {batch}, SQLite, each batch to both warehouses");
    let mut first = 1;
    while first <= rows {
        let last = (first + batch - 1).min(rows);
        let changes: Vec<Change> = (first..=last).map(|id| dossier(base + id, id)).collect();
        let schemas = std::slice::from_ref(&dossiers);
        plain.apply(schemas, &changes, base + last);
        rules.apply(schemas, &changes, base + last);
        first = last + 1;
    }
    let per_row = |d: Duration| d.as_secs_f64() * 1e6 / rows as f64;
    for (name, side) in [("no rules", &plain), ("10 rules", &rules)] {
        let s = &side.steps;
        println!(
            "{name:<9} total {:.2} s = {:.2} µs/row: check {:.2}, apply {:.2}, record {:.2}, commit {:.2} µs/row",
            s.total().as_secs_f64(),
            per_row(s.total()),
            per_row(s.check),
            per_row(s.apply),
            per_row(s.record),
            per_row(s.commit)
        );
    }
    let violations: u64 = rules.tally.violations.values().sum();
    println!(
        "ratio     10 rules / no rules: {:.3} (violations recorded: {violations})",
        rules.steps.total().as_secs_f64() / plain.steps.total().as_secs_f64()
    );
}
