//! Data-quality rules (issue 12) end to end: a real agent reads a department database whose rows
//! break the catalogue's rules, a real hub (SQLite warehouse) loads them (policy `warn`), records
//! each violation with the row's key, serves the score and the violations at `/api/v1/quality`
//! and counts them in `/metrics`; fixing the rows at the source clears the violations.

#![allow(clippy::unwrap_used)]

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc};
use kho_tests::source::SourceDb;
use serde_json::Value;

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

[[dataset.rule]]
check = "not_null"
column = "ghi_chu"

[[dataset.rule]]
check = "unique"
column = "ma_ho_so"

[[dataset.rule]]
check = "range"
column = "so_tien"
min = 0

[[dataset.rule]]
check = "range"
column = "updated_at"
min = "2020-01-01"
max = "today"

[[dataset.rule]]
check = "pattern"
column = "ma_ho_so"
pattern = '000\.00\.[0-9]{2}\.H52-[0-9]{6}-[0-9]{7}'

[[dataset.rule]]
check = "allowed_values"
column = "trang_thai"
values = ["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"]

[[dataset.rule]]
check = "reference"
column = "don_vi"
dataset = "don_vi"
ref_column = "ten"
"#;

fn get(hub: &HubProc, path: &str) -> String {
    let http = hub.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = http.get(format!("{}{path}", hub.url())).send().await.unwrap();
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.text().await.unwrap()
    })
}

fn quality(hub: &HubProc) -> Value {
    let doc: Value = serde_json::from_str(&get(hub, "/api/v1/quality")).unwrap();
    let datasets = doc["datasets"].as_array().unwrap();
    assert_eq!(datasets.len(), 1, "only datasets with rules: {doc}");
    datasets[0].clone()
}

/// `(violations, passing_share)` of `rule` in a dataset's quality entry.
fn rule(entry: &Value, rule: &str) -> (u64, f64) {
    let r = entry["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("{rule}: {entry}"));
    (r["violations"].as_u64().unwrap(), r["passing_share"].as_f64().unwrap())
}

fn sync(agent: &AgentProc, dataset: &str) {
    let out = agent.command(&["sync", "--once", dataset]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn warn_rules_record_violations_with_keys_and_a_fix_clears_them() {
    let tmp = tempfile::tempdir().unwrap();
    let warehouse = "kind = \"sqlite\"\npath = \"warehouse.sqlite\"\n";
    warn_scenario(tmp.path(), warehouse, &mut |hub| {
        let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        (
            count("SELECT count(*) FROM ho_so"),
            count("SELECT count(*) FROM _kho_quality_violations WHERE dataset = 'ho_so'"),
        )
    });
}

#[test]
fn warn_rules_on_the_postgresql_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = kho_tests::pgwh::PgWarehouse::create();
    let warehouse = pg.hub_toml(2);
    warn_scenario(tmp.path(), &warehouse, &mut |_| {
        (
            pg.count("SELECT count(*) FROM so_y_te.ho_so"),
            pg.count("SELECT count(*) FROM kho.quality_violations WHERE dataset = 'ho_so'"),
        )
    });
}

/// `loaded_and_stored`: rows in the warehouse's `ho_so` table and its stored violations.
fn warn_scenario(tmp: &std::path::Path, warehouse: &str, loaded_and_stored: &mut dyn FnMut(&HubProc) -> (i64, i64)) {
    let mut src = SourceDb::create(&tmp.join("so_y_te.sqlite"), 40).unwrap();
    // Five rows each break one rule; row 9 breaks two.
    src.execute(
        "UPDATE ho_so SET ghi_chu = NULL WHERE id = 2;
         UPDATE ho_so SET ma_ho_so = (SELECT ma_ho_so FROM ho_so WHERE id = 5) WHERE id = 6;
         UPDATE ho_so SET so_tien = -5 WHERE id = 7;
         UPDATE ho_so SET updated_at = '2099-01-01T00:00:00.000Z' WHERE id = 8;
         UPDATE ho_so SET ma_ho_so = 'HS-9', trang_thai = 'Lung tung' WHERE id = 9;
         UPDATE ho_so SET don_vi = 'Phòng khám không có thật' WHERE id = 10;",
    )
    .unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into(), "don_vi".into()],
    };
    let dir = tmp.join("hub");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("catalog.toml"), CATALOG).unwrap();
    let catalog = "\n[catalog]\npath = \"catalog.toml\"\n";
    let mut hub =
        HubProc::configure_with(&dir, kho_tests::procs::free_port(), std::slice::from_ref(&a), warehouse, catalog);
    hub.spawn();
    let opts = AgentOptions::default();
    let source = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let spec = |name: &str, key: &str| DatasetSpec {
        name: name.into(),
        table: name.into(),
        key: vec![key.into()],
        cursor: None,
    };
    let datasets = format!("{}{}", spec("don_vi", "ma").toml(&source, &opts), spec("ho_so", "id").toml(&source, &opts));
    let agent = AgentProc::configure(&tmp.join("agent"), &a, &hub.url(), &hub.ca_path(), &datasets, &opts);
    sync(&agent, "don_vi");
    sync(&agent, "ho_so");

    // Policy warn: every row is loaded; the violations are in a table analysts can query,
    // written in the batch's transaction.
    assert_eq!(loaded_and_stored(&hub), (40, 7));

    let q = quality(&hub);
    assert_eq!(q["dataset"], "ho_so");
    assert_eq!(q["rows"], 40);
    assert_eq!(rule(&q, "not_null:ghi_chu"), (1, 39.0 / 40.0));
    assert_eq!(rule(&q, "unique:ma_ho_so"), (1, 39.0 / 40.0));
    assert_eq!(rule(&q, "range:so_tien"), (1, 39.0 / 40.0));
    assert_eq!(rule(&q, "range:updated_at"), (1, 39.0 / 40.0), "a date in the future");
    assert_eq!(rule(&q, "pattern:ma_ho_so"), (1, 39.0 / 40.0));
    assert_eq!(rule(&q, "allowed_values:trang_thai"), (1, 39.0 / 40.0));
    assert_eq!(rule(&q, "reference:don_vi"), (1, 39.0 / 40.0), "the other 39 units are in don_vi");
    assert_eq!(q["score"].as_f64(), Some(39.0 / 40.0));
    let latest = q["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 7, "{q}");
    let of = |rule: &str| latest.iter().find(|v| v["rule"] == rule).unwrap_or_else(|| panic!("{rule}: {q}"));
    assert_eq!(of("allowed_values:trang_thai")["key"], r#"{"id":9}"#);
    assert_eq!(of("allowed_values:trang_thai")["value"], "Lung tung");
    assert_eq!(of("pattern:ma_ho_so")["key"], r#"{"id":9}"#);
    assert_eq!(of("not_null:ghi_chu")["key"], r#"{"id":2}"#);
    assert_eq!(of("not_null:ghi_chu")["value"], Value::Null);
    assert_eq!(of("unique:ma_ho_so")["key"], r#"{"id":6}"#, "the second holder of the value");
    assert_eq!(of("range:so_tien")["value"], "-5");
    assert_eq!(of("reference:don_vi")["key"], r#"{"id":10}"#);

    let metrics = get(&hub, "/metrics");
    assert!(metrics.contains("kho_hub_quality_rows_checked_total{dataset=\"ho_so\"} 40"), "{metrics}");
    assert!(
        metrics.contains(
            "kho_hub_quality_violations_total{dataset=\"ho_so\",rule=\"pattern:ma_ho_so\",policy=\"warn\"} 1"
        ),
        "{metrics}"
    );

    // The department fixes four rows at the source; the next sync clears their violations.
    src.execute(
        "UPDATE ho_so SET ghi_chu = 'bổ sung' WHERE id = 2;
         UPDATE ho_so SET so_tien = 5 WHERE id = 7;
         UPDATE ho_so SET ma_ho_so = '000.00.09.H52-260101-0000009', trang_thai = 'Quá hạn' WHERE id = 9;
         INSERT INTO don_vi VALUES ('DV99', 'Phòng khám không có thật', 'Sơn La');",
    )
    .unwrap();
    sync(&agent, "don_vi");
    sync(&agent, "ho_so");
    let q = quality(&hub);
    assert_eq!(rule(&q, "not_null:ghi_chu"), (0, 1.0));
    assert_eq!(rule(&q, "range:so_tien"), (0, 1.0));
    assert_eq!(rule(&q, "pattern:ma_ho_so"), (0, 1.0));
    assert_eq!(rule(&q, "allowed_values:trang_thai"), (0, 1.0));
    assert_eq!(rule(&q, "unique:ma_ho_so"), (1, 39.0 / 40.0), "row 6 was not touched");
    assert_eq!(rule(&q, "range:updated_at"), (1, 39.0 / 40.0));
    // Row 10 did not change, so it is not re-checked at ingest: the reference stays open until
    // the row is written again or the periodic full check runs (default every 5 minutes, not in
    // this test; see quality_periodic.rs).
    assert_eq!(rule(&q, "reference:don_vi"), (1, 39.0 / 40.0));

    // A deleted row takes its violations with it.
    src.delete([6, 8]).unwrap();
    sync(&agent, "ho_so");
    let q = quality(&hub);
    assert_eq!(rule(&q, "unique:ma_ho_so").0, 0);
    assert_eq!(rule(&q, "range:updated_at").0, 0);
    assert_eq!(q["rows"], 38);
}

#[test]
fn a_catalogue_with_a_bad_rule_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = CATALOG.replace(r#"pattern = '000\.00"#, r#"pattern = '(000\.00"#);
    std::fs::write(dir.join("catalog.toml"), bad).unwrap();
    let hub = HubProc::configure_with(
        &dir,
        kho_tests::procs::free_port(),
        &[],
        "kind = \"sqlite\"\npath = \"w.sqlite\"\n",
        "\n[catalog]\npath = \"catalog.toml\"\n",
    );
    let out = std::process::Command::new(kho_tests::bin_path("kho-hub"))
        .arg("--config")
        .arg(dir.join("hub.toml"))
        .arg("check")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("dataset[ho_so].rule[4].pattern"), "{text}");
    drop(hub);
}

const REJECT_CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"

[[dataset.rule]]
check = "pattern"
column = "ma_ho_so"
pattern = '000\.00\.[0-9]{2}\.H52-[0-9]{6}-[0-9]{7}'
policy = "reject"

[[dataset.rule]]
check = "allowed_values"
column = "trang_thai"
values = ["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"]
"#;

#[test]
fn reject_rules_quarantine_rows_the_agent_shows_them_and_a_fix_releases_them() {
    let tmp = tempfile::tempdir().unwrap();
    let warehouse = "kind = \"sqlite\"\npath = \"warehouse.sqlite\"\n";
    reject_scenario(tmp.path(), warehouse, &mut |hub, sql| {
        let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
        let sql = sql.replace("kho.quarantine", "_kho_quarantine").replace("so_y_te.", "");
        conn.query_row(&sql, [], |r| r.get(0)).unwrap()
    });
}

#[test]
fn reject_rules_on_the_postgresql_warehouse() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = kho_tests::pgwh::PgWarehouse::create();
    let warehouse = pg.hub_toml(2);
    reject_scenario(tmp.path(), &warehouse, &mut |_, sql| pg.client().query_one(sql, &[]).unwrap().get::<_, String>(0));
}

/// `text`: one text value from the warehouse, by a PostgreSQL-spelled query (`kho.quarantine`,
/// `so_y_te.ho_so`).
fn reject_scenario(tmp: &std::path::Path, warehouse: &str, text: &mut dyn FnMut(&HubProc, &str) -> String) {
    let src = SourceDb::create(&tmp.join("so_y_te.sqlite"), 20).unwrap();
    src.execute(
        "UPDATE ho_so SET ma_ho_so = 'HS-3' WHERE id = 3;
         UPDATE ho_so SET ma_ho_so = 'HS-5', trang_thai = 'Lung tung' WHERE id = 5;
         UPDATE ho_so SET trang_thai = 'Lung tung' WHERE id = 4;",
    )
    .unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let dir = tmp.join("hub");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("catalog.toml"), REJECT_CATALOG).unwrap();
    let catalog = "\n[catalog]\npath = \"catalog.toml\"\n";
    let mut hub =
        HubProc::configure_with(&dir, kho_tests::procs::free_port(), std::slice::from_ref(&a), warehouse, catalog);
    hub.spawn();
    let opts = AgentOptions::default();
    let source = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let ho_so = DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None };
    let agent =
        AgentProc::configure(&tmp.join("agent"), &a, &hub.url(), &hub.ca_path(), &ho_so.toml(&source, &opts), &opts);
    sync(&agent, "ho_so");

    // The rejected rows stay out of the table; the rest of the batch (row 4 only warns) is loaded.
    let count = |text: &mut dyn FnMut(&HubProc, &str) -> String, hub: &HubProc, filter: &str| {
        text(hub, &format!("SELECT CAST(count(*) AS TEXT) FROM so_y_te.ho_so WHERE NOT _kho_deleted{filter}"))
    };
    assert_eq!(count(text, &hub, ""), "18");
    assert_eq!(count(text, &hub, " AND id IN (3, 5)"), "0");
    assert_eq!(count(text, &hub, " AND id = 4"), "1");
    let held = text(
        &hub,
        "SELECT key || '|' || reason || '|' || CAST(row_json AS TEXT) FROM kho.quarantine \
         WHERE dataset = 'ho_so' AND key = '{\"id\":5}'",
    );
    let mut parts = held.splitn(3, '|');
    assert_eq!(parts.next(), Some(r#"{"id":5}"#));
    assert_eq!(parts.next(), Some(r#"pattern:ma_ho_so="HS-5"; allowed_values:trang_thai="Lung tung""#));
    assert!(parts.next().is_some_and(|row| row.contains("HS-5")), "the row is kept as sent: {held}");

    let q = quality(&hub);
    assert_eq!((q["rows"].as_u64(), q["quarantined"].as_u64()), (Some(18), Some(2)));
    assert_eq!(rule(&q, "pattern:ma_ho_so"), (2, 18.0 / 20.0));
    assert_eq!(rule(&q, "allowed_values:trang_thai"), (2, 18.0 / 20.0));
    let held: Vec<&str> =
        q["latest_quarantined"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(held, [r#"{"id":5}"#, r#"{"id":3}"#]);
    assert!(get(&hub, "/metrics").contains("kho_hub_quality_quarantined_total{dataset=\"ho_so\"} 2"));

    // The ack told the agent; `kho-agent status` shows the department which rows to fix.
    let status = agent.status();
    assert_eq!(status["quarantined_total"], 2, "{status}");
    let keys: Vec<&str> =
        status["quarantined"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&r#"{"id":3}"#) && keys.contains(&r#"{"id":5}"#), "{status}");
    let shown = agent.command(&["status"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("held in quarantine by the hub: 2 row(s)"), "{shown}");
    assert!(shown.contains(r#"ho_so {"id":3}: pattern:ma_ho_so="HS-3""#), "{shown}");

    // Fixed at the source: the row flows in on the next sync and leaves quarantine (row 5 is
    // fixed only for its rejecting rule: loaded, with its warning).
    src.execute(
        "UPDATE ho_so SET ma_ho_so = '000.00.03.H52-260101-0000003' WHERE id = 3;
         UPDATE ho_so SET ma_ho_so = '000.00.05.H52-260101-0000005' WHERE id = 5;",
    )
    .unwrap();
    sync(&agent, "ho_so");
    assert_eq!(count(text, &hub, ""), "20");
    assert_eq!(text(&hub, "SELECT CAST(count(*) AS TEXT) FROM kho.quarantine"), "0");
    let q = quality(&hub);
    assert_eq!(q["quarantined"], 0);
    assert_eq!(rule(&q, "pattern:ma_ho_so"), (0, 1.0));
    assert_eq!(rule(&q, "allowed_values:trang_thai"), (2, 18.0 / 20.0));
    let status = agent.status();
    assert_eq!(status["quarantined_total"], 0, "{status}");
}

const TWO_AGENT_CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[department]]
code = "so_noi_vu"
name = "Sở Nội vụ"
contact = { name = "Văn phòng Sở", phone = "0212 385 0020" }

[[dataset]]
id = "don_vi"
title = "Danh mục đơn vị"
department = "so_noi_vu"
cadence = "monthly"
update_kind = "sync"

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"

[[dataset.rule]]
check = "reference"
column = "don_vi"
dataset = "don_vi"
ref_column = "ten"
policy = "reject"
"#;

/// The unit list comes from another department's agent; a dossier naming a unit that list does
/// not (yet) hold is held back, and flows in once the unit exists and the dossier is re-sent.
#[test]
fn a_reference_rule_across_datasets_of_two_agents() {
    let tmp = tempfile::tempdir().unwrap();
    let health = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 12).unwrap();
    let home = SourceDb::create(&tmp.path().join("so_noi_vu.sqlite"), 0).unwrap();
    health.execute("UPDATE ho_so SET don_vi = 'Trạm Y tế xã Chiềng Sinh' WHERE id IN (2, 7)").unwrap();
    let token = || format!("t-{}", fastrand::u64(..));
    let a = AgentSpec { id: "so-y-te-01".into(), token: token(), datasets: vec!["ho_so".into()] };
    let b = AgentSpec { id: "so-noi-vu-01".into(), token: token(), datasets: vec!["don_vi".into()] };
    let dir = tmp.path().join("hub");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("catalog.toml"), TWO_AGENT_CATALOG).unwrap();
    let hub = HubProc::start_with(&dir, &[a.clone(), b.clone()], "\n[catalog]\npath = \"catalog.toml\"\n");
    let opts = AgentOptions::default();
    let sqlite = |db: &SourceDb| format!("kind = \"sqlite\"\npath = \"{}\"\n", db.path.display());
    let spec = |name: &str, key: &str| DatasetSpec {
        name: name.into(),
        table: name.into(),
        key: vec![key.into()],
        cursor: None,
    };
    let units = spec("don_vi", "ma").toml(&sqlite(&home), &opts);
    let agent_b = AgentProc::configure(&tmp.path().join("b"), &b, &hub.url(), &hub.ca_path(), &units, &opts);
    let dossiers = spec("ho_so", "id").toml(&sqlite(&health), &opts);
    let agent_a = AgentProc::configure(&tmp.path().join("a"), &a, &hub.url(), &hub.ca_path(), &dossiers, &opts);
    sync(&agent_b, "don_vi");
    sync(&agent_a, "ho_so");

    let q = quality(&hub);
    assert_eq!((q["rows"].as_u64(), q["quarantined"].as_u64()), (Some(10), Some(2)), "{q}");
    assert_eq!(agent_a.status()["quarantined_total"], 2);

    // The Home Affairs department adds the commune health station; the dossiers are re-sent
    // (touched at the source) and now pass.
    home.execute("INSERT INTO don_vi VALUES ('DV50', 'Trạm Y tế xã Chiềng Sinh', 'Sơn La')").unwrap();
    sync(&agent_b, "don_vi");
    health.execute("UPDATE ho_so SET ghi_chu = 'gửi lại' WHERE id IN (2, 7)").unwrap();
    sync(&agent_a, "ho_so");
    let q = quality(&hub);
    assert_eq!((q["rows"].as_u64(), q["quarantined"].as_u64()), (Some(12), Some(0)), "{q}");
    assert_eq!(rule(&q, "reference:don_vi"), (0, 1.0));
    assert_eq!(agent_a.status()["quarantined_total"], 0);
}
