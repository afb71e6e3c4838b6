//! The PostgreSQL warehouse through the `Warehouse` / `WarehouseReader` traits, as the applier
//! drives them, against the real server at 127.0.0.1:5432 (trust auth, user `postgres`). Each test
//! creates its own database `kho_t_<random>` and drops it afterwards, so tests run in parallel with
//! anyone else's. A missing server fails the tests loudly.

mod common;

use std::time::Duration;

use kho_hub::warehouse::postgres;
use kho_hub::warehouse::{ApplyStats, DatasetActivity, Warehouse, WarehouseError, WarehouseReader};
use kho_shared::protocol::{Change, DatasetSchema};
use kho_shared::types::ColumnType;
use serde_json::{Value, json};

use common::pg::{NOW, TestDb, apply, apply_at, col, delete, departments, ho_so, open, upsert};

#[test]
fn upserts_deletes_and_last_change_per_key_win() {
    let db = TestDb::new();
    let (mut wh, reader) = open(&db);
    let s = ho_so(&[]);
    let changes = [
        upsert("ho_so", 1, json!({"id": 1, "ten": "Lò Văn Hùng"})),
        upsert("ho_so", 2, json!({"id": 2, "ten": "Cầm Thị Mai"})),
        delete("ho_so", 3, json!({"id": 1})),
        delete("ho_so", 4, json!({"id": 99})),
        upsert("ho_so", 5, json!({"id": 2, "ten": "Cầm Thị Mai (sửa)"})),
        upsert("ho_so", 6, json!({"id": 3, "ten": "a"})),
        upsert("ho_so", 7, json!({"id": 3, "ten": "b"})),
        delete("ho_so", 8, json!({"id": 3})),
        upsert("ho_so", 9, json!({"id": 3, "ten": "c\tcó tab\nvà dòng mới \\"})),
    ];
    let stats = apply(&mut wh, "a", std::slice::from_ref(&s), &changes).expect("apply");
    assert_eq!(stats, ApplyStats { upserts: 6, deletes: 3 });
    assert_eq!(wh.applied_seq("a").expect("ledger"), 9);
    let mut c = db.client();
    let rows: Vec<(i64, String, bool, i64)> = c
        .query("SELECT id, ten, _kho_deleted, _kho_seq FROM so_y_te.ho_so ORDER BY id", &[])
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, "Lò Văn Hùng".into(), true, 3),
            (2, "Cầm Thị Mai (sửa)".into(), false, 5),
            (3, "c\tcó tab\nvà dòng mới \\".into(), false, 9),
        ]
    );
    // Every change is in the history, including the intermediate ones the table does not keep.
    let log: Vec<(String, String, Option<String>, i64)> = c
        .query("SELECT key::text, op, row->>'ten', seq FROM kho.change_log ORDER BY seq", &[])
        .expect("log")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(log.len(), 9);
    assert_eq!(log[2], ("{\"id\": 1}".into(), "delete".into(), None, 3));
    assert_eq!(log[6], ("{\"id\": 3}".into(), "upsert".into(), Some("b".into()), 7));

    // Undelete, then status through the reader.
    apply(&mut wh, "a", std::slice::from_ref(&s), &[upsert("ho_so", 10, json!({"id": 1, "ten": "x"}))])
        .expect("undelete");
    let status = reader.status().expect("status");
    assert_eq!(status.datasets.len(), 1);
    assert_eq!((status.datasets[0].rows, status.datasets[0].deleted_rows), (3, 0));
    assert_eq!(status.datasets[0].last_seq, Some(10));
    assert_eq!(status.agents[0].applied_through, 10);
    assert_eq!(status.agents[0].applied_at.as_deref(), Some(NOW));
}

/// A load of new rows is `COPY`ed straight into the table; a batch that meets a key already in
/// the table (even one soft-deleted) is rolled back to its savepoint and merged through staging
/// instead. Both give the same rows, metadata and misfit cells.
#[test]
fn new_rows_load_directly_and_existing_keys_fall_back_to_the_merge() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let s = ho_so(&[col("so", ColumnType::Int)]);
    let load: Vec<Change> =
        (1..=1000).map(|i| upsert("ho_so", i, json!({"id": i, "ten": format!("hồ sơ {i}"), "so": i}))).collect();
    apply(&mut wh, "a", std::slice::from_ref(&s), &load).expect("load");
    // All upserts, 999 new keys and one that exists (key 500), plus a misfit cell: the primary key
    // stops the direct COPY, nothing of it stays, the merge applies all of it.
    let mut mixed: Vec<Change> =
        (1001..=1999).map(|i| upsert("ho_so", i, json!({"id": i + 1000, "ten": "mới", "so": i}))).collect();
    mixed.insert(400, upsert("ho_so", 1401, json!({"id": 500, "ten": "sửa", "so": "không phải số"})));
    for (n, c) in mixed.iter_mut().enumerate() {
        c.seq = 1001 + n as u64;
    }
    apply(&mut wh, "a", std::slice::from_ref(&s), &mixed).expect("mixed");
    // Delete one row, then a load that brings it back to life with new keys around it.
    apply(&mut wh, "a", std::slice::from_ref(&s), &[delete("ho_so", 2001, json!({"id": 7}))]).expect("delete");
    let revive = [
        upsert("ho_so", 2002, json!({"id": 7, "ten": "lại", "so": 7})),
        upsert("ho_so", 2003, json!({"id": 5000, "ten": "x", "so": 1})),
    ];
    apply(&mut wh, "a", std::slice::from_ref(&s), &revive).expect("revive");
    let mut c = db.client();
    let count: i64 = c.query_one("SELECT count(*) FROM so_y_te.ho_so", &[]).expect("count").get(0);
    assert_eq!(count, 1000 + 999 + 1);
    let dup: i64 = c
        .query_one("SELECT count(*) FROM (SELECT id FROM so_y_te.ho_so GROUP BY id HAVING count(*) > 1) d", &[])
        .expect("dup")
        .get(0);
    assert_eq!(dup, 0);
    let mut row = |id: i64| -> (String, Option<i64>, i64, bool, Option<String>, String) {
        let r = c
            .query_one(
                "SELECT ten, so, _kho_seq, _kho_deleted, _kho_invalid::text, _kho_agent FROM so_y_te.ho_so WHERE id = $1",
                &[&id],
            )
            .expect("row");
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
    };
    assert_eq!(row(1), ("hồ sơ 1".into(), Some(1), 1, false, None, "a".into()));
    assert_eq!(row(500), ("sửa".into(), None, 1401, false, Some("{\"so\": \"không phải số\"}".into()), "a".into()));
    assert_eq!(row(2999), ("mới".into(), Some(1999), 2000, false, None, "a".into()));
    assert_eq!(row(7), ("lại".into(), Some(7), 2002, false, None, "a".into()));
    assert_eq!(wh.applied_seq("a").expect("ledger"), 2003);
    let logged: i64 = c.query_one("SELECT count(*) FROM kho.change_log", &[]).expect("log").get(0);
    assert_eq!(logged, 2003, "every change is in the history whichever path loaded it");
}

#[test]
fn portable_types_land_typed_and_misfits_are_kept() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let s = DatasetSchema {
        privacy: Default::default(),
        dataset: "do_luong".into(),
        key: vec!["ma".into(), "ngay".into()],
        columns: vec![
            col("ma", ColumnType::Text),
            col("ngay", ColumnType::Date),
            col("so_tien", ColumnType::Decimal),
            col("ti_le", ColumnType::Float),
            col("dat", ColumnType::Bool),
            col("luc", ColumnType::Timestamp),
            col("chi_tiet", ColumnType::Json),
            col("anh", ColumnType::Bytes),
            col("dem", ColumnType::Int),
        ],
    };
    let good = json!({"ma": "A", "ngay": "2026-02-01", "so_tien": "12345678901234567890.123456789", "ti_le": "NaN",
        "dat": true, "luc": "2026-02-01 08:00:00", "chi_tiet": {"a": [1, "hai"]}, "anh": "AQID", "dem": 9007199254740993i64});
    let odd = json!({"ma": "B", "ngay": "2026-02-01", "so_tien": "mười", "ti_le": 0.5, "dat": "có",
        "luc": "hôm qua", "chi_tiet": null, "anh": "%%%", "dem": "bảy"});
    apply(&mut wh, "a", std::slice::from_ref(&s), &[upsert("do_luong", 1, good), upsert("do_luong", 2, odd)])
        .expect("apply");
    let mut c = db.client();
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'do_luong' ORDER BY ordinal_position",
            &[],
        )
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want = [
        "text",
        "date",
        "numeric",
        "double precision",
        "boolean",
        "timestamp with time zone",
        "jsonb",
        "bytea",
        "bigint",
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(types[i].1, *w, "{:?}", types[i]);
    }
    let r = c
        .query_one(
            "SELECT so_tien::text, ti_le::text, dat, luc = '2026-02-01T01:00:00Z'::timestamptz, chi_tiet->'a'->>1, \
             anh, dem, _kho_invalid::text FROM do_luong WHERE ma = 'A'",
            &[],
        )
        .expect("A");
    assert_eq!(r.get::<_, String>(0), "12345678901234567890.123456789", "decimals stay exact");
    assert_eq!(r.get::<_, String>(1), "NaN");
    assert!(r.get::<_, bool>(2));
    assert!(r.get::<_, bool>(3), "a timestamp without offset is Vietnam time");
    assert_eq!(r.get::<_, String>(4), "hai");
    assert_eq!(r.get::<_, Vec<u8>>(5), vec![1, 2, 3]);
    assert_eq!(r.get::<_, i64>(6), 9007199254740993);
    assert_eq!(r.get::<_, Option<String>>(7), None);
    let r = c
        .query_one("SELECT so_tien IS NULL AND dat IS NULL AND luc IS NULL AND anh IS NULL AND dem IS NULL, _kho_invalid::text FROM do_luong WHERE ma = 'B'", &[])
        .expect("B");
    assert!(r.get::<_, bool>(0), "misfits are NULL in their typed columns");
    let invalid: Value = serde_json::from_str(&r.get::<_, String>(1)).expect("json");
    assert_eq!(
        invalid,
        json!({"so_tien": "mười", "dat": "có", "luc": "hôm qua", "anh": "%%%", "dem": "bảy"}),
        "and kept as sent"
    );

    // A key that cannot be stored refuses the batch, clearly, and writes nothing.
    let err =
        apply(&mut wh, "a", std::slice::from_ref(&s), &[upsert("do_luong", 3, json!({"ma": "C", "ngay": "không rõ"}))])
            .expect_err("bad key");
    assert!(
        matches!(&err, WarehouseError::SchemaConflict { problem, .. } if problem.contains("change 3: key column \"ngay\"")),
        "{err}"
    );
    assert_eq!(wh.applied_seq("a").expect("ledger"), 2, "the refused batch left the ledger alone");
}

#[test]
fn schema_evolves_widens_or_refuses_only_that_dataset() {
    let db = TestDb::new();
    let (mut wh, reader) = open(&db);
    let other = DatasetSchema {
        privacy: Default::default(),
        dataset: "khac".into(),
        key: vec!["id".into()],
        columns: vec![col("id", ColumnType::Int)],
    };
    apply(
        &mut wh,
        "a",
        &[ho_so(&[col("so", ColumnType::Int)])],
        &[upsert("ho_so", 1, json!({"id": 1, "ten": "x", "so": 5}))],
    )
    .expect("create");
    // New column, and `so` widened int → decimal.
    let wider = ho_so(&[col("so", ColumnType::Decimal), col("ghi_chu", ColumnType::Text)]);
    apply(
        &mut wh,
        "a",
        std::slice::from_ref(&wider),
        &[upsert("ho_so", 2, json!({"id": 2, "ten": "y", "so": "1.25", "ghi_chu": "mới"}))],
    )
    .expect("evolve");
    let mut c = db.client();
    let r = c.query_one("SELECT so::text, ghi_chu FROM so_y_te.ho_so WHERE id = 2", &[]).expect("row");
    assert_eq!((r.get::<_, String>(0), r.get::<_, String>(1)), ("1.25".into(), "mới".into()));
    let r = c.query_one("SELECT so::text, ghi_chu FROM so_y_te.ho_so WHERE id = 1", &[]).expect("old row");
    assert_eq!((r.get::<_, String>(0), r.get::<_, Option<String>>(1)), ("5".into(), None));
    // A narrower declaration later is held by the wider column.
    apply(
        &mut wh,
        "a",
        &[ho_so(&[col("so", ColumnType::Int)])],
        &[upsert("ho_so", 3, json!({"id": 3, "ten": "z", "so": 7}))],
    )
    .expect("narrower is fine");

    // int → bool cannot be held: that batch is refused, and the status says why.
    wh.begin().expect("begin");
    wh.savepoint().expect("sp");
    let err = wh.prepare_dataset(&ho_so(&[col("so", ColumnType::Bool)]), NOW).expect_err("conflict");
    assert!(matches!(err, WarehouseError::SchemaConflict { .. }) && !err.is_transient());
    wh.rollback_to_savepoint().expect("rollback");
    // Another dataset in the same transaction is unaffected.
    wh.savepoint().expect("sp");
    wh.prepare_dataset(&other, NOW).expect("other");
    wh.apply_changes("b", std::slice::from_ref(&other), &[upsert("khac", 1, json!({"id": 1}))], NOW)
        .expect("other rows");
    wh.release_savepoint().expect("release");
    wh.commit().expect("commit");
    let status = reader.status().expect("status");
    let ho = status.datasets.iter().find(|d| d.dataset == "ho_so").expect("ho_so");
    assert!(ho.schema_error.as_deref().is_some_and(|e| e.contains("from decimal to bool")), "{:?}", ho.schema_error);
    let khac = status.datasets.iter().find(|d| d.dataset == "khac").expect("khac");
    assert_eq!((khac.rows, khac.schema_error.as_deref()), (1, None));
    // The conflict clears once the dataset's schema is accepted again.
    apply(&mut wh, "a", std::slice::from_ref(&wider), &[upsert("ho_so", 4, json!({"id": 4, "ten": "w"}))])
        .expect("ok again");
    let status = reader.status().expect("status");
    assert_eq!(status.datasets.iter().find(|d| d.dataset == "ho_so").and_then(|d| d.schema_error.clone()), None);

    // A key change is refused as well.
    let rekeyed = DatasetSchema { privacy: Default::default(), key: vec!["ten".into()], ..ho_so(&[]) };
    assert!(apply(&mut wh, "a", &[rekeyed], &[upsert("ho_so", 5, json!({"id": 5, "ten": "v"}))]).is_err());
}

#[test]
fn hostile_identifiers_are_data() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let hostile = "mã\"; DROP TABLE kho.ledger; --";
    let s = DatasetSchema {
        privacy: Default::default(),
        dataset: "ho_so".into(),
        key: vec![hostile.into()],
        columns: vec![
            col(hostile, ColumnType::Text),
            col("Họ và tên", ColumnType::Text),
            col("a;b'c", ColumnType::Int),
        ],
    };
    let row = json!({hostile: "K1", "Họ và tên": "Quàng Văn Ún", "a;b'c": 3});
    apply(&mut wh, "a", std::slice::from_ref(&s), &[upsert("ho_so", 1, row)]).expect("apply");
    apply(&mut wh, "a", std::slice::from_ref(&s), &[delete("ho_so", 2, json!({hostile: "K1"}))]).expect("delete");
    let mut c = db.client();
    let r = c
        .query_one(
            &format!(
                "SELECT \"Họ và tên\", \"a;b'c\", _kho_deleted FROM so_y_te.ho_so WHERE {} = 'K1'",
                kho_hub::warehouse::quote_ident(hostile)
            ),
            &[],
        )
        .expect("row");
    assert_eq!((r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, bool>(2)), ("Quàng Văn Ún".into(), 3, true));
    let n: i64 = c.query_one("SELECT count(*) FROM kho.ledger", &[]).expect("ledger survives").get(0);
    assert_eq!(n, 1);
}

#[test]
fn savepoint_rollback_forgets_schema_and_rows() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    apply(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 1, json!({"id": 1, "ten": "x"}))]).expect("create");
    wh.begin().expect("begin");
    wh.savepoint().expect("sp");
    wh.prepare_dataset(&ho_so(&[col("moi", ColumnType::Text)]), NOW).expect("alter");
    wh.apply_changes(
        "a",
        &[ho_so(&[col("moi", ColumnType::Text)])],
        &[upsert("ho_so", 2, json!({"id": 2, "ten": "y", "moi": "m"}))],
        NOW,
    )
    .expect("rows");
    wh.set_applied_seq("a", 2, NOW).expect("ledger");
    wh.rollback_to_savepoint().expect("rollback");
    wh.commit().expect("commit");
    assert_eq!(wh.applied_seq("a").expect("ledger"), 1);
    let mut c = db.client();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'ho_so' AND column_name = 'moi'",
            &[],
        )
        .expect("columns")
        .get(0);
    assert_eq!(n, 0, "the added column was rolled back");
    // And the writer forgot it too: the column is added again when it comes back.
    apply(
        &mut wh,
        "a",
        &[ho_so(&[col("moi", ColumnType::Text)])],
        &[upsert("ho_so", 2, json!({"id": 2, "ten": "y", "moi": "m"}))],
    )
    .expect("again");
    let n: i64 = c.query_one("SELECT count(*) FROM so_y_te.ho_so", &[]).expect("rows").get(0);
    assert_eq!(n, 2);
    let n: i64 = c.query_one("SELECT count(*) FROM kho.change_log", &[]).expect("log").get(0);
    assert_eq!(n, 2, "the rolled-back change left no history");
}

#[test]
fn foreign_tables_are_not_taken_over_and_history_is_pruned() {
    let db = TestDb::new();
    let (mut wh, reader) = open(&db);
    let mut c = db.client();
    c.batch_execute("CREATE TABLE public.cua_nguoi_khac (x int)").expect("foreign table");
    let foreign = DatasetSchema {
        privacy: Default::default(),
        dataset: "cua_nguoi_khac".into(),
        key: vec!["id".into()],
        columns: vec![col("id", ColumnType::Int)],
    };
    let err = apply(&mut wh, "a", &[foreign], &[upsert("cua_nguoi_khac", 1, json!({"id": 1}))]).expect_err("foreign");
    assert!(err.to_string().contains("was not created by Kho"), "{err}");

    let old = format!("{:.3}", jiff::Timestamp::now() - jiff::SignedDuration::from_hours(91 * 24));
    let recent = format!("{:.3}", jiff::Timestamp::now() - jiff::SignedDuration::from_hours(89 * 24));
    apply_at(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 1, json!({"id": 1, "ten": "x"}))], &old).expect("old");
    apply_at(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 2, json!({"id": 1, "ten": "y"}))], &recent)
        .expect("recent");
    assert_eq!(wh.prune_history().expect("prune"), 1, "only the change older than 90 days goes");
    let seqs: Vec<i64> =
        c.query("SELECT seq FROM kho.change_log", &[]).expect("log").iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, vec![2]);

    // Freshness evidence and transitions round-trip through the reader.
    wh.begin().expect("begin");
    wh.record_activity(
        &[DatasetActivity { dataset: "ho_so".into(), max_business_date: Some("2026-01-31".into()) }],
        NOW,
    )
    .expect("activity");
    wh.commit().expect("commit");
    let ev = reader.evidence().expect("evidence");
    let d = &ev.datasets["ho_so"];
    assert_eq!(d.last_change_at.map(|t| t.to_string()), Some("2026-02-01T08:00:00Z".into()));
    assert_eq!(d.max_business_date.map(|t| t.to_string()), Some("2026-01-31".into()));
    assert!(ev.agents_last_seen.contains_key("a"));
    assert!(reader.transitions().expect("transitions").is_empty());

    // Agent liveness history and hub bookkeeping round-trip too.
    let at: jiff::Timestamp = "2026-02-01T09:00:00Z".parse().expect("ts");
    let went = kho_hub::warehouse::AgentTransition { agent: "a".into(), at, online: false, last_seen_at: Some(at) };
    wh.begin().expect("begin");
    wh.record_agent_transitions(std::slice::from_ref(&went)).expect("agent history");
    wh.set_meta("digest_date", "2026-02-01").expect("meta");
    wh.set_meta("digest_date", "2026-02-02").expect("meta again");
    wh.commit().expect("commit");
    assert_eq!(reader.agent_transitions().expect("agent history"), vec![went]);
    assert_eq!(reader.meta("digest_date").expect("meta").as_deref(), Some("2026-02-02"));
    assert_eq!(reader.meta("nothing").expect("meta"), None);
}

#[test]
fn reopening_keeps_catalogue_and_ledger_and_config_names_bad_fields() {
    let db = TestDb::new();
    {
        let (mut wh, _reader) = open(&db);
        apply(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 42, json!({"id": 1, "ten": "x"}))]).expect("apply");
    }
    let (mut wh, _reader) = open(&db);
    assert_eq!(wh.applied_seq("a").expect("ledger"), 42);
    // Reopened, the writer knows the table: the same schema needs no DDL.
    apply(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 43, json!({"id": 2, "ten": "y"}))]).expect("apply");

    let text = "[hub]\ndata_dir = \"d\"\n[warehouse]\nkind = \"postgres\"\nurl = \"postgres://h/db?sslmode=bogus\"\nwriters = 0\n";
    let err = kho_hub::HubConfig::from_toml_str(text, std::path::Path::new("/tmp"), "hub.toml").expect_err("invalid");
    let msg = err.to_string();
    assert!(msg.contains("warehouse.url") && msg.contains("warehouse.writers"), "{msg}");
    let text = "[hub]\ndata_dir = \"d\"\n[warehouse]\nkind = \"postgres\"\n";
    let msg = kho_hub::HubConfig::from_toml_str(text, std::path::Path::new("/tmp"), "hub.toml")
        .expect_err("no url")
        .to_string();
    assert!(msg.contains("warehouse.url") && msg.contains("missing"), "{msg}");
    let text = "[hub]\ndata_dir = \"d\"\n[warehouse]\nurl = \"postgres://h/db\"\n";
    let msg = kho_hub::HubConfig::from_toml_str(text, std::path::Path::new("/tmp"), "hub.toml")
        .expect_err("sqlite + url")
        .to_string();
    assert!(msg.contains("warehouse.url") && msg.contains("only used with kind"), "{msg}");
}

/// `sslmode=require` means TLS through rustls with the server verified: the test server's
/// certificate (Debian's snakeoil, for `localhost` only) is refused when reached as 127.0.0.1,
/// and accepted for `localhost` with it as the configured `ssl_root_cert`.
#[test]
fn sslmode_require_verifies_the_server() {
    const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.url = format!("postgres://postgres@127.0.0.1:5432/{}?sslmode=require", db.name);
    settings.ssl_root_cert = Some(SNAKEOIL.into());
    let err = match postgres::open(settings.clone(), 1, departments()) {
        Ok(_) => panic!("an unverifiable server certificate was accepted"),
        Err(e) => e,
    };
    assert!(format!("{err:?}").contains("Certificate"), "{err:?}");
    assert!(err.is_transient(), "a connection failure is retried, not fatal to the data");
    settings.url = format!("postgres://postgres@localhost:5432/{}?sslmode=require", db.name);
    let (mut writers, reader) = postgres::open(settings, 1, departments()).expect("TLS with the pinned CA");
    let ssl: bool = {
        let wh = writers.pop().expect("writer");
        drop(wh);
        let mut c = db.client();
        c.query_one("SELECT bool_or(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE datname = current_database() AND application_name = 'kho-hub reader'", &[])
            .expect("pg_stat_ssl")
            .get(0)
    };
    assert!(ssl, "the reader's connection uses TLS");
    drop(reader);
}

/// A lost connection (PostgreSQL restarted, a DBA killed the session) fails the group it hits —
/// transient, so the agents retry — and the next group reconnects; nothing is half-applied.
#[test]
fn a_lost_connection_fails_one_group_then_reconnects() {
    let db = TestDb::new();
    let (mut wh, reader) = open(&db);
    apply(&mut wh, "a", &[ho_so(&[])], &[upsert("ho_so", 1, json!({"id": 1, "ten": "x"}))]).expect("apply");
    let mut c = db.client();
    let killed: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name IN ('kho-hub writer', 'kho-hub reader')",
            &[],
        )
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 2);
    std::thread::sleep(Duration::from_millis(200));
    let second = [upsert("ho_so", 2, json!({"id": 2, "ten": "y"}))];
    let first_try = apply(&mut wh, "a", &[ho_so(&[])], &second);
    if let Err(e) = &first_try {
        assert!(e.is_transient(), "{e}");
        wh.rollback();
        apply(&mut wh, "a", &[ho_so(&[])], &second).expect("the retry reconnects");
    }
    assert_eq!(wh.applied_seq("a").expect("ledger"), 2);
    let status = reader.status().expect("the reader reconnects too");
    assert_eq!(status.datasets[0].rows, 2);
}
