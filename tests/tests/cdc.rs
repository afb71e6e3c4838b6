//! Change data capture from PostgreSQL logical replication (issue 10), end to end: a real
//! PostgreSQL source (its own database per test, so slots and publications never collide; the
//! database and its slots are dropped at the end), the real `kho-agent` in `mode = "cdc"` and the
//! real `kho-hub`. The warehouse is compared row by row with the source, and the number of
//! changes the agent captured is compared with the exact number of source row changes, so a
//! replayed transaction would show up as a duplicate.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::cdc_db::CdcDb;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, wait_for};
use kho_tests::remote::{Kind, RemoteDb, TextRows, warehouse_rows};
use kho_tests::warehouse_text_rows;

const CONVERGE: Duration = Duration::from_secs(90);

fn spec(datasets: &[&str]) -> AgentSpec {
    AgentSpec {
        id: format!("cdc-{}", fastrand::u32(..)),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: datasets.iter().map(|d| d.to_string()).collect(),
    }
}

fn dataset_toml(name: &str, table: &str, url: &str) -> String {
    format!(
        "\n[[dataset]]\nname = \"{name}\"\ntable = \"{table}\"\nkey = [\"id\"]\nmode = \"cdc\"\npoll_interval = \"1s\"\n\
         [dataset.source]\nkind = \"postgres\"\nurl = \"{url}\"\n"
    )
}

/// Waits until the warehouse's live rows of `dataset` equal the source table.
fn wait_equal(db: &mut RemoteDb, hub: &HubProc, agent: &AgentProc, dataset: &str) {
    let want = db.rows();
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        CONVERGE,
        &format!("warehouse table {dataset} to equal the source table {}", db.table),
        || format!("{}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || {
            let got: TextRows = match warehouse_rows(&hub.warehouse(), dataset, true) {
                Ok(rows) => rows,
                Err(e) => {
                    *last.borrow_mut() = format!("warehouse not readable yet: {e}");
                    return false;
                }
            };
            if got != want {
                let example = want.iter().find(|(k, v)| got.get(k) != Some(v)).map(|(k, v)| (k, v, got.get(k)));
                let extra = got.keys().find(|k| !want.contains_key(k));
                *last.borrow_mut() = format!(
                    "source {} rows, warehouse {} rows; first difference: {example:?}; extra key: {extra:?}",
                    want.len(),
                    got.len()
                );
            }
            got == want
        },
    );
}

/// Changes the agent captured so far (`next_seq - 1` of its outbox).
fn captured(agent: &AgentProc) -> u64 {
    agent.status()["outbox"]["next_seq"].as_u64().unwrap() - 1
}

const KIEU: &str = "CREATE TABLE kieu (id int PRIMARY KEY, b bool, f4 real, f8 double precision, n numeric(12,3), \
    d date, ts timestamp(6), tz timestamptz, j jsonb, u uuid, by bytea, iv interval, t text, vc varchar(20))";
const KIEU_VALUES: &str = "true, 1.1, 0.30000000000000004, -12.500, '2026-01-31', '2026-01-31 12:34:56.5', \
    '2026-01-31 19:34:56.000001+07', '{\"a\": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', \
    '1 day 02:00:00', 'Hồ sơ — tiếng Việt', NULL";
const KIEU_COLUMNS: &[&str] = &["id", "b", "f4", "f8", "n", "d", "ts", "tz", "j", "u", "by", "iv", "t", "vc"];

#[test]
fn inserts_updates_deletes_rollbacks_and_add_column_stream_in_commit_order() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = CdcDb::create();
    let mut db = RemoteDb::create_at(Kind::Postgres, pg.url.clone());
    db.insert_range(1, 500);
    let mut c = pg.client();
    c.batch_execute(KIEU).unwrap();
    c.batch_execute(&format!("INSERT INTO kieu VALUES (1, {KIEU_VALUES})")).unwrap();

    let a = spec(&["ho_so", "kieu"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let toml = dataset_toml("ho_so", &db.table, &pg.url) + &dataset_toml("kieu", "kieu", &pg.url);
    let mut agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );

    // The initial snapshot.
    wait_equal(&mut db, &hub, &agent, "ho_so");

    // The same values streamed decode exactly as the snapshot read them.
    c.batch_execute(&format!("INSERT INTO kieu VALUES (2, {KIEU_VALUES})")).unwrap();
    let mut rows = Default::default();
    wait_for(
        CONVERGE,
        "both kieu rows in the warehouse",
        || agent.log_tail(),
        || {
            rows = warehouse_text_rows(&hub.warehouse(), "kieu", KIEU_COLUMNS).unwrap_or_default();
            rows.len() == 2
        },
    );
    let (one, two) = (&rows["1"], &rows["2"]);
    assert_eq!(one[1..], two[1..], "snapshot row {one:?} and streamed row {two:?} differ");
    // The warehouse's typed forms (a few spelled out; the rest must merely agree).
    assert_eq!(one[12].as_deref(), Some("Hồ sơ — tiếng Việt"), "{one:?}");
    assert_eq!(one[13], None, "{one:?}");
    assert_eq!(one[7].as_deref(), Some("2026-01-31T12:34:56.000001Z"), "{one:?}");
    assert_eq!(one[6].as_deref(), Some("2026-01-31T12:34:56.500000"), "{one:?}");

    // Inserts, updates, deletes, key changes, a rolled-back transaction, then ADD COLUMN.
    db.insert_range(501, 600);
    db.update(1..=50, "Đã sửa");
    db.exec("DELETE FROM {t} WHERE id BETWEEN 100 AND 150");
    db.exec("UPDATE {t} SET id = id + 10000 WHERE id BETWEEN 200 AND 209");
    db.exec("BEGIN; INSERT INTO {t} VALUES (777777, 'bị huỷ', 1, now()); UPDATE {t} SET ten = 'bị huỷ' WHERE id = 300; ROLLBACK");
    db.exec("ALTER TABLE {t} ADD COLUMN ghi_chu text");
    db.exec("UPDATE {t} SET ghi_chu = 'cột mới ' || id WHERE id <= 20");
    db.exec("INSERT INTO {t} VALUES (700, 'Sau khi thêm cột', 7.00, '2026-03-01 00:00:00', 'có ghi chú')");
    wait_equal(&mut db, &hub, &agent, "ho_so");

    let all = warehouse_rows(&hub.warehouse(), "ho_so", false).unwrap();
    assert!(!all.contains_key(&777_777), "a rolled-back insert reached the warehouse");
    assert!(all.values().all(|r| r.0.as_deref() != Some("bị huỷ")), "a rolled-back update reached the warehouse");
    let notes = warehouse_text_rows(&hub.warehouse(), "ho_so", &["id", "ghi_chu"]).unwrap();
    assert_eq!(notes["7"][1].as_deref(), Some("cột mới 7"));
    assert_eq!(notes["700"][1].as_deref(), Some("có ghi chú"));
    assert_eq!(notes["21"][1], None);

    // Exactly one captured change per source row change: 500 + 1 snapshot rows, 1 kieu insert,
    // 100 inserts, 50 updates, 51 deletes, 10 key changes (delete + upsert), 20 updates, 1 insert.
    let want = 500 + 1 + 1 + 100 + 50 + 51 + 20 + 20 + 1;
    wait_for(CONVERGE, "the captured count", || agent.log_tail(), || captured(&agent) >= want);
    assert_eq!(captured(&agent), want, "changes captured");

    // Status shows the slot, its position and lag; check verifies the prerequisites.
    let st = agent.dataset_status("ho_so");
    assert_eq!(st["mode"], "cdc");
    assert!(st["cdc"]["lsn"].as_str().is_some_and(|l| l.contains('/')), "{st}");
    assert_eq!(st["cdc"]["slot"], format!("kho_{}_ho_so", a.id.replace('-', "_")));
    wait_for(
        Duration::from_secs(30),
        "slot lag in status",
        || agent.status().to_string(),
        || agent.dataset_status("ho_so")["cdc"]["lag_bytes"].is_u64(),
    );
    // The hub keeps the lag from the agent's heartbeats and shows it in its status API.
    wait_for(
        Duration::from_secs(30),
        "the slot in the hub's status",
        || hub.status().to_string(),
        || {
            hub.status()["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .filter(|x| x["id"] == a.id.as_str())
                    .flat_map(|x| x["report"].as_array().cloned().unwrap_or_default())
                    .any(|r| r["dataset"] == "ho_so" && r["cdc"]["lag_bytes"].is_u64() && r["cdc"]["lsn"].is_string())
            })
        },
    );
    let out = agent.command(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cdc: ok: wal_level = logical"), "{text}");
    assert!(text.contains("has the REPLICATION privilege"), "{text}");
    assert!(!text.contains("PROBLEM: cdc"), "{text}");

    // Writes to a table outside the publication: the slot still advances past them (keepalive
    // positions are stored and confirmed), so the server can recycle that WAL.
    c.batch_execute("CREATE TABLE khac (id int PRIMARY KEY, v text); INSERT INTO khac SELECT g, 'x' FROM generate_series(1, 5000) g")
        .unwrap();
    let target: String = c.query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get(0);
    let slot = format!("kho_{}_ho_so", a.id.replace('-', "_"));
    wait_for(
        Duration::from_secs(60),
        "the idle slot to advance past unrelated writes",
        || agent.log_tail(),
        || {
            c.query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
                &[&target, &slot],
            )
            .is_ok_and(|r| r.get::<_, bool>(0))
        },
    );
    assert_eq!(captured(&agent), want, "writes outside the publication were captured");
    assert!(agent.stop(), "agent did not stop cleanly");
    drop(c);
}

#[test]
fn large_transaction_survives_kill9_of_agent_and_hub_without_loss_or_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = CdcDb::create();
    let mut db = RemoteDb::create_at(Kind::Postgres, pg.url.clone());
    db.insert_range(1, 1_000);
    let a = spec(&["ho_so"]);
    let mut hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    // A small outbox bound: with the hub down, capture stops inside the large transaction.
    let opts = AgentOptions { max_outbox: 20_000, ..AgentOptions::default() };
    let toml = dataset_toml("ho_so", &db.table, &pg.url);
    let mut agent = AgentProc::start_with(&tmp.path().join("agent"), &a, &hub.url(), &hub.ca_path(), &toml, &opts);
    wait_equal(&mut db, &hub, &agent, "ho_so");

    hub.kill9();
    db.exec(
        "INSERT INTO {t} SELECT g, 'Giao dịch lớn ' || g, g * 1.5, '2026-02-01'::timestamp + g * interval '1 ms' \
         FROM generate_series(100001, 200000) g",
    );
    db.update(1..=10, "Sau giao dịch lớn");
    // Capture is now inside the 100,000-row transaction, its first chunks stored.
    wait_for(
        CONVERGE,
        "capture to fill the outbox inside the large transaction",
        || agent.log_tail(),
        || captured(&agent) >= 1_000 + 15_000,
    );
    agent.kill9();
    assert!(captured(&agent) < 1_000 + 100_000, "the whole transaction was captured before the kill");
    agent.spawn();
    db.exec("DELETE FROM {t} WHERE id BETWEEN 11 AND 15");
    std::thread::sleep(Duration::from_secs(2));
    hub.spawn();
    wait_equal(&mut db, &hub, &agent, "ho_so");
    let want = 1_000 + 100_000 + 10 + 5;
    wait_for(CONVERGE, "the captured count", || agent.log_tail(), || captured(&agent) >= want);
    assert_eq!(captured(&agent), want, "changes captured (a replayed part of the transaction would be counted twice)");

    // kill -9 of the hub while the agent streams: nothing lost, nothing applied twice.
    db.update(20..=40, "Trước khi hub chết");
    hub.kill9();
    db.update(41..=60, "Khi hub chết");
    hub.spawn();
    wait_equal(&mut db, &hub, &agent, "ho_so");
    assert_eq!(captured(&agent), want + 41);
    assert!(agent.stop());
}

#[test]
fn dropped_slot_stops_the_dataset_loudly_and_resnapshot_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = CdcDb::create();
    let mut db = RemoteDb::create_at(Kind::Postgres, pg.url.clone());
    db.insert_range(1, 300);
    let a = spec(&["ho_so"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let toml = dataset_toml("ho_so", &db.table, &pg.url);
    let mut agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );
    wait_equal(&mut db, &hub, &agent, "ho_so");
    // Streamed changes keep the row hashes the re-snapshot compares with current.
    db.insert_range(400, 409);
    db.update(100..=104, "Đã sửa khi đang stream");
    wait_equal(&mut db, &hub, &agent, "ho_so");
    let slot = format!("kho_{}_ho_so", a.id.replace('-', "_"));
    assert_eq!(pg.slots(), vec![slot.clone()]);
    let before = captured(&agent);

    pg.drop_slot_underneath(&slot);
    // Changes the lost slot would have carried: the warehouse must not silently miss them...
    db.exec("DELETE FROM {t} WHERE id <= 10");
    db.update(50..=59, "Khi mất slot");
    db.insert_range(301, 320);
    let mut error = String::new();
    wait_for(
        CONVERGE,
        "the dataset to stop with a clear error",
        || agent.log_tail(),
        || {
            error = agent.dataset_status("ho_so")["last_error"].as_str().unwrap_or_default().to_string();
            error.contains("no longer exists")
        },
    );
    assert!(
        error.contains(&slot) && error.contains("STOPPED") && error.contains("kho-agent resnapshot ho_so"),
        "{error}"
    );
    // ...nor re-read them behind the operator's back.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(captured(&agent), before, "changes were captured without a slot");
    assert!(pg.slots().is_empty(), "the agent recreated the slot by itself");

    // The documented recovery.
    let refused = agent.command(&["resnapshot", "ho_so"]);
    assert!(!refused.status.success(), "resnapshot ran beside the running agent");
    assert!(agent.stop());
    let out = agent.command(&["resnapshot", "ho_so"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    agent.spawn();
    wait_equal(&mut db, &hub, &agent, "ho_so");
    // The new snapshot sent only what differed: 10 deletes, 10 updates, 20 inserts (not the rows
    // streamed before the slot was lost).
    wait_for(CONVERGE, "the captured count", || agent.log_tail(), || captured(&agent) >= before + 40);
    assert_eq!(captured(&agent), before + 40);
    db.update(60..=61, "Sau khi phục hồi");
    wait_equal(&mut db, &hub, &agent, "ho_so");
    assert!(agent.stop());
}

#[test]
fn check_prints_exactly_what_the_dba_must_change() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = CdcDb::create();
    let mut c = pg.client();
    c.batch_execute("CREATE TABLE ho_so (id int PRIMARY KEY, ten text); CREATE TABLE nhat_ky (ma int, ghi text)")
        .unwrap();
    // A login without the REPLICATION privilege (roles are cluster-wide: unique name, dropped below).
    let role = format!("kho_cdc_doc_{}", fastrand::u32(..));
    c.batch_execute(&format!("CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        .unwrap();
    let url = pg.url.replacen("postgres@", &format!("{role}@"), 1);
    let a = spec(&["ho_so", "nhat_ky"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    // nhat_ky has no primary key; ho_so's publication is to be made by the DBA.
    let toml = dataset_toml("ho_so", "ho_so", &url).replace(
        "[dataset.source]",
        "[dataset.cdc]\npublication = \"kho_ho_so\"\ncreate_publication = false\n[dataset.source]",
    ) + &dataset_toml("nhat_ky", "nhat_ky", &url).replace("key = [\"id\"]", "key = [\"ma\"]");
    let agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );
    let out = agent.command(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = c.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
    assert!(!out.status.success(), "check passed with missing prerequisites:\n{text}");
    assert!(text.contains("cdc: ok: wal_level = logical"), "{text}");
    assert!(
        text.contains(&format!("PROBLEM: cdc: role {role} has the REPLICATION privilege; the DBA must run: ALTER ROLE \"{role}\" WITH REPLICATION;")),
        "{text}"
    );
    assert!(
        text.contains("the DBA must run: CREATE PUBLICATION \"kho_ho_so\" FOR TABLE \"public\".\"ho_so\";"),
        "{text}"
    );
    assert!(text.contains("the DBA must run: ALTER TABLE \"public\".\"nhat_ky\" REPLICA IDENTITY FULL;"), "{text}");
    assert!(pg.slots().is_empty(), "check created a slot");
}

#[test]
fn sync_once_takes_the_snapshot_then_the_changes_since_and_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = CdcDb::create();
    let mut db = RemoteDb::create_at(Kind::Postgres, pg.url.clone());
    db.insert_range(1, 200);
    let a = spec(&["ho_so"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let toml = dataset_toml("ho_so", &db.table, &pg.url);
    let agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );
    let sync = || {
        let out = agent.command(&["sync", "--once", "--timeout", "60s"]);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sync();
    assert_eq!(warehouse_rows(&hub.warehouse(), "ho_so", true).unwrap(), db.rows());
    // Between runs the slot keeps the changes; the next sync streams exactly those.
    db.update(1..=5, "Sửa giữa hai lần đồng bộ");
    db.exec("DELETE FROM {t} WHERE id > 190");
    sync();
    assert_eq!(warehouse_rows(&hub.warehouse(), "ho_so", true).unwrap(), db.rows());
    assert_eq!(captured(&agent), 200 + 5 + 10);
}

#[test]
fn type_changes_mid_stream_reach_the_warehouse_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = CdcDb::create();
    let mut c = pg.client();
    c.batch_execute(
        "CREATE TABLE rong (id int PRIMARY KEY, so int, ma varchar(8)); \
         INSERT INTO rong SELECT g, g * 1000, 'm' || g FROM generate_series(1, 50) g",
    )
    .unwrap();
    let a = spec(&["rong"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let toml = dataset_toml("rong", "rong", &pg.url);
    let mut agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );
    let columns = ["id", "so", "ma"];
    let source = |c: &mut postgres::Client| -> std::collections::BTreeMap<String, Vec<Option<String>>> {
        c.query("SELECT id::text, so::text, ma::text FROM rong", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), (0..3).map(|i| r.get::<_, Option<String>>(i)).collect()))
            .collect()
    };
    let wait_same = |c: &mut postgres::Client, what: &str| {
        let want = source(c);
        let got = std::cell::RefCell::new(Default::default());
        wait_for(
            CONVERGE,
            what,
            || format!("want {want:?}\ngot {:?}\n{}\n{}", got.borrow(), hub.log_tail(), agent.log_tail()),
            || {
                *got.borrow_mut() = warehouse_text_rows(&hub.warehouse(), "rong", &columns).unwrap_or_default();
                *got.borrow() == want
            },
        );
    };
    wait_same(&mut c, "the snapshot in the warehouse");
    // Streamed before the change, so the agent has the old relation (int4, varchar(8)) cached.
    c.batch_execute("UPDATE rong SET ma = 'truoc' WHERE id <= 5").unwrap();
    wait_same(&mut c, "the change before the type change");

    // The type changes while the agent streams, then values only the new types can hold: beyond
    // 32 bits, beyond f64's exact integers (2^53 + 1), i64's bounds, text longer than varchar(8).
    c.batch_execute("ALTER TABLE rong ALTER COLUMN so TYPE bigint, ALTER COLUMN ma TYPE text").unwrap();
    c.batch_execute("ALTER TABLE rong ALTER COLUMN id TYPE bigint").unwrap();
    c.batch_execute(
        "INSERT INTO rong VALUES (3000000000, 9007199254740993, 'một chuỗi dài hơn tám ký tự'), \
         (9223372036854775807, -9223372036854775808, 'i64 lớn nhất'), \
         (-2147483649, 2147483648, NULL); \
         UPDATE rong SET so = so * 10000000, ma = ma || ' — đã nới rộng kiểu' WHERE id BETWEEN 1 AND 10; \
         DELETE FROM rong WHERE id = 50",
    )
    .unwrap();
    wait_same(&mut c, "the rows with widened types in the warehouse");

    // Stored as 64-bit integers (not reals or text), exactly, in integer warehouse columns.
    let conn =
        rusqlite::Connection::open_with_flags(hub.warehouse(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let (id, so, kinds): (i64, i64, String) = conn
        .query_row(
            "SELECT id, so, typeof(id) || ' ' || typeof(so) FROM rong WHERE id = 3000000000 AND _kho_deleted = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((id, so, kinds.as_str()), (3_000_000_000, 9_007_199_254_740_993, "integer integer"));
    let so: i64 = conn.query_row("SELECT so FROM rong WHERE id = 9223372036854775807", [], |r| r.get(0)).unwrap();
    assert_eq!(so, i64::MIN);
    let declared: Vec<(String, String)> = conn
        .prepare("SELECT name, type FROM pragma_table_info('rong') WHERE name IN ('id', 'so', 'ma') ORDER BY cid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        declared,
        [("id", "INT"), ("so", "INTEGER"), ("ma", "TEXT")].map(|(n, t)| (n.to_string(), t.to_string())),
        "warehouse columns"
    );
    // The catalogue's portable types: `int` is already 64-bit and `text` unbounded, so bigint and
    // text need no ALTER in the SQLite warehouse (the PostgreSQL warehouse's column is `bigint`).
    let catalogue: String =
        conn.query_row("SELECT columns_json FROM _kho_datasets WHERE dataset = 'rong'", [], |r| r.get(0)).unwrap();
    let catalogue: serde_json::Value = serde_json::from_str(&catalogue).unwrap();
    assert_eq!(
        catalogue,
        serde_json::json!([{"name": "id", "type": "int"}, {"name": "so", "type": "int"}, {"name": "ma", "type": "text"}])
    );
    // 50 snapshot rows, 5 updates, 3 inserts, 10 updates, 1 delete: a relation re-sent after the
    // type change replays nothing.
    let want = 50 + 5 + 3 + 10 + 1;
    wait_for(CONVERGE, "the captured count", || agent.log_tail(), || captured(&agent) >= want);
    assert_eq!(captured(&agent), want, "changes captured");
    assert!(agent.stop(), "agent did not stop cleanly");
    drop(c);
}
