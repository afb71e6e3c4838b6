#![allow(clippy::unwrap_used)]

//! Change detection against the real PostgreSQL and MariaDB servers of this machine (and CI's):
//! every scenario runs on both, on a uniquely named table dropped afterwards, and checks the
//! captured changes exactly by decoding the outbox payloads. A missing server fails the test
//! loudly; nothing is skipped. URLs: `KHO_TEST_PG_URL`, `KHO_TEST_MYSQL_URL` (defaults below).

use std::sync::atomic::{AtomicU32, Ordering};

use kho_shared::protocol::{Change, Op};
use mysql::prelude::Queryable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::tests::take;
use super::*;
use crate::config::SourceConfig;
use crate::source::remote::{RemoteKind, RemoteSourceConfig, SslMode};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn url(kind: RemoteKind) -> String {
    match kind {
        RemoteKind::Postgres => std::env::var("KHO_TEST_PG_URL").unwrap_or_else(|_| PG_URL.into()),
        RemoteKind::Mysql => std::env::var("KHO_TEST_MYSQL_URL").unwrap_or_else(|_| MYSQL_URL.into()),
    }
}

enum Conn {
    Pg(Box<postgres::Client>),
    My(Box<mysql::Conn>),
}

/// A test server connection and a unique table name on it (dropped at the end).
struct Db {
    kind: RemoteKind,
    conn: Conn,
    table: String,
}

impl Db {
    fn connect(kind: RemoteKind) -> Db {
        static N: AtomicU32 = AtomicU32::new(0);
        let u = url(kind);
        let conn = match kind {
            RemoteKind::Postgres => {
                Conn::Pg(Box::new(postgres::Client::connect(&u, postgres::NoTls).unwrap_or_else(|e| {
                    panic!("the PostgreSQL test server at {u} is required (.ci/run starts it): {e}")
                })))
            }
            RemoteKind::Mysql => {
                Conn::My(Box::new(mysql::Conn::new(mysql::Opts::from_url(&u).unwrap()).unwrap_or_else(|e| {
                    panic!("the MariaDB/MySQL test server at {u} is required (.ci/run starts it): {e}")
                })))
            }
        };
        let table = format!("kho_t_{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst), fastrand::u32(..));
        Db { kind, conn, table }
    }

    /// Runs statements separated by `;\n`, with `{t}` replaced by the table name.
    fn exec(&mut self, sql: &str) {
        for stmt in sql.replace("{t}", &self.table).split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            let r = match &mut self.conn {
                Conn::Pg(c) => c.batch_execute(stmt).map_err(|e| e.to_string()),
                Conn::My(c) => c.query_drop(stmt).map_err(|e| e.to_string()),
            };
            if let Err(e) = r {
                panic!("{stmt}: {e}");
            }
        }
    }

    /// PostgreSQL or MySQL spelling.
    fn pick<'a>(&self, pg: &'a str, my: &'a str) -> &'a str {
        match self.kind {
            RemoteKind::Postgres => pg,
            RemoteKind::Mysql => my,
        }
    }

    fn remote(&self) -> RemoteSourceConfig {
        RemoteSourceConfig {
            url: url(self.kind),
            password_env: None,
            password_file: None,
            sslmode: SslMode::Disable,
            ssl_root_cert: None,
        }
    }

    fn source(&self, remote: RemoteSourceConfig) -> SourceConfig {
        match self.kind {
            RemoteKind::Postgres => SourceConfig::Postgres(remote),
            RemoteKind::Mysql => SourceConfig::Mysql(remote),
        }
    }

    fn config(&self, mode: Mode, cursor: Option<&str>) -> DatasetConfig {
        DatasetConfig {
            name: "t".into(),
            table: Some(self.table.clone()),
            query: None,
            key: vec!["id".into()],
            mode,
            cursor_column: cursor.map(Into::into),
            poll_interval: std::time::Duration::from_secs(1),
            schedule: None,
            source: self.source(self.remote()),
            text: Default::default(),
            cdc: Default::default(),
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table);
        let _ = match &mut self.conn {
            Conn::Pg(c) => c.batch_execute(&sql).map_err(|e| e.to_string()),
            Conn::My(c) => c.query_drop(&sql).map_err(|e| e.to_string()),
        };
    }
}

struct Outboxes {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn outbox() -> Outboxes {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    Outboxes { _dir: dir, path }
}

fn capture(o: &Outboxes, config: DatasetConfig, chunk: usize) -> Capture {
    let outbox = Outbox::open(&o.path).unwrap();
    Capture::new(config, outbox, u64::MAX, CancellationToken::new(), Box::new(|| {}))
        .unwrap()
        .with_chunk_limits(chunk, chunk * 10)
}

fn upserts(changes: &[Change]) -> Vec<Value> {
    changes.iter().filter(|c| c.op == Op::Upsert).map(|c| json!(c.row)).collect()
}

fn delete_ids(changes: &[Change]) -> Vec<i64> {
    changes.iter().filter(|c| c.op == Op::Delete).map(|c| c.key.as_ref().unwrap()["id"].as_i64().unwrap()).collect()
}

fn snapshot_scenario(kind: RemoteKind) {
    let mut db = Db::connect(kind);
    let ddl = db.pick(
        "CREATE TABLE {t} (id int PRIMARY KEY, ten text, so_tien numeric(18,2), cap_nhat timestamp(6), tep bytea, ghi_chu varchar(50))",
        "CREATE TABLE {t} (id INT PRIMARY KEY, ten TEXT, so_tien DECIMAL(18,2), cap_nhat DATETIME(6), tep BLOB, ghi_chu VARCHAR(50)) CHARACTER SET utf8mb4",
    );
    db.exec(ddl);
    let bytes = db.pick("'\\x00ff10'::bytea", "X'00ff10'").to_string();
    db.exec(&format!(
        "INSERT INTO {{t}} VALUES (1, 'Nguyễn Văn Ánh — Sở Y tế Sơn La', 1234567890123456.78, '2026-01-02 03:04:05.123456', {bytes}, NULL);
         INSERT INTO {{t}} VALUES (2, 'Trần Thị Bích Ngọc', -0.05, '2026-01-02 03:04:05', NULL, 'ghi chú');
         INSERT INTO {{t}} VALUES (3, NULL, NULL, NULL, NULL, NULL)"
    ));
    let o = outbox();
    let mut cap = capture(&o, db.config(Mode::Snapshot, None), 2);
    let r = cap.poll().unwrap();
    assert_eq!((r.rows_read, r.changes, r.deletes), (3, 3, 0));
    let schema = &cap.outbox().schemas(&["t".to_string()]).unwrap()[0];
    let types: Vec<&str> = schema.columns.iter().map(|c| c.ty.as_str()).collect();
    assert_eq!(types, ["int", "text", "decimal", "timestamp", "bytes", "text"]);
    let row1 = json!({"id": 1, "ten": "Nguyễn Văn Ánh — Sở Y tế Sơn La", "so_tien": "1234567890123456.78",
        "cap_nhat": "2026-01-02T03:04:05.123456", "tep": "AP8Q", "ghi_chu": null});
    let row3 = json!({"id": 3, "ten": null, "so_tien": null, "cap_nhat": null, "tep": null, "ghi_chu": null});
    assert_eq!(
        upserts(&take(&o.path)),
        [
            row1.clone(),
            json!({"id": 2, "ten": "Trần Thị Bích Ngọc", "so_tien": "-0.05", "cap_nhat": "2026-01-02T03:04:05", "tep": null, "ghi_chu": "ghi chú"}),
            row3
        ]
    );
    assert_eq!(cap.poll().unwrap().changes, 0, "an unchanged table produces nothing");

    db.exec(
        "UPDATE {t} SET so_tien = 10.10, ten = 'Đã cập nhật' WHERE id = 2;
         DELETE FROM {t} WHERE id = 3;
         INSERT INTO {t} VALUES (4, 'Mới', 0, '1999-12-31 23:59:59.999999', NULL, NULL)",
    );
    let r = cap.poll().unwrap();
    assert_eq!((r.changes, r.deletes), (3, 1));
    let c = take(&o.path);
    assert_eq!(
        upserts(&c),
        [
            json!({"id": 2, "ten": "Đã cập nhật", "so_tien": "10.10", "cap_nhat": "2026-01-02T03:04:05", "tep": null, "ghi_chu": "ghi chú"}),
            json!({"id": 4, "ten": "Mới", "so_tien": "0.00", "cap_nhat": "1999-12-31T23:59:59.999999", "tep": null, "ghi_chu": null}),
        ]
    );
    assert_eq!(delete_ids(&c), [3]);

    db.exec("ALTER TABLE {t} ADD COLUMN so_dien_thoai varchar(20)");
    let r = cap.poll().unwrap();
    assert!(r.schema_changed);
    assert_eq!(r.changes, 3, "every row is re-sent with the new column");
    let c = upserts(&take(&o.path));
    let mut want = row1;
    want["so_dien_thoai"] = Value::Null;
    assert_eq!(c[0], want);
}

fn cursor_scenario(kind: RemoteKind, column_type: &str) {
    let mut db = Db::connect(kind);
    db.exec(&format!("CREATE TABLE {{t}} (id int PRIMARY KEY, ten varchar(100), sua_luc {column_type} NULL)"));
    let stamp = "2026-03-04 05:06:07.654321";
    let values: Vec<String> = (1..=30).map(|i| format!("({i}, 'Hồ sơ {i}', '{stamp}')")).collect();
    db.exec(&format!("INSERT INTO {{t}} VALUES {}", values.join(", ")));
    db.exec("INSERT INTO {t} VALUES (99, 'chưa có thời điểm', NULL)");
    let o = outbox();
    let mut cap = capture(&o, db.config(Mode::Cursor, Some("sua_luc")), 7);
    let r = cap.poll().unwrap();
    assert_eq!((r.changes, r.null_cursor_rows), (30, 1));
    let c = take(&o.path);
    assert_eq!(c.len(), 30);
    let utc = column_type.contains("tz") || column_type.starts_with("TIMESTAMP");
    let want_stamp = format!("2026-03-04T05:06:07.654321{}", if utc { "Z" } else { "" });
    assert_eq!(json!(c[0].row.as_ref().unwrap()["sua_luc"]), json!(want_stamp));
    assert_eq!(cap.outbox().dataset_state("t").unwrap().unwrap().cursor.as_deref(), Some(want_stamp.as_str()));
    assert_eq!(cap.poll().unwrap().changes, 0, "rows at the stored cursor value are not re-sent");

    db.exec(&format!("INSERT INTO {{t}} VALUES (31, 'cùng thời điểm', '{stamp}')"));
    db.exec("UPDATE {t} SET ten = 'đổi, cùng thời điểm' WHERE id = 5");
    assert_eq!(cap.poll().unwrap().changes, 2);
    let mut ids: Vec<i64> = take(&o.path).iter().map(|c| c.row.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, [5, 31]);
    assert_eq!(cap.poll().unwrap().changes, 0);

    // One microsecond later: the cursor must keep it, or rows at .654321 would be re-read.
    db.exec("INSERT INTO {t} VALUES (32, 'sau 1 µs', '2026-03-04 05:06:07.654322')");
    assert_eq!(cap.poll().unwrap().changes, 1);
    let want_stamp = want_stamp.replace("654321", "654322");
    assert_eq!(cap.outbox().dataset_state("t").unwrap().unwrap().cursor.as_deref(), Some(want_stamp.as_str()));
    assert_eq!(take(&o.path).len(), 1);
    assert_eq!(cap.poll().unwrap().changes, 0, "a truncated cursor would re-read 31 rows");
}

/// Runs `config` once and returns the error the poll recorded.
fn failing_poll(config: DatasetConfig) -> (DetectError, String) {
    let o = outbox();
    let mut cap = capture(&o, config, 5);
    let e = cap.poll().unwrap_err();
    let recorded = cap.outbox().dataset_state("t").unwrap().unwrap().last_error.unwrap();
    assert_eq!(recorded, e.to_string());
    assert!(recorded.contains("dataset t"), "{recorded}");
    (e, recorded)
}

fn error_scenario(kind: RemoteKind) {
    let db = Db::connect(kind);
    // Missing table: the server's message, naming the table; an operator must act.
    let (e, msg) = failing_poll(db.config(Mode::Snapshot, None));
    assert!(!e.is_transient(), "{msg}");
    assert!(msg.contains(&db.table), "{msg}");

    // Unreachable server: transient, retried.
    let mut config = db.config(Mode::Snapshot, None);
    let mut remote = db.remote();
    remote.url = db.pick("postgres://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test").into();
    config.source = db.source(remote);
    let (e, msg) = failing_poll(config);
    assert!(e.is_transient(), "{msg}");
    assert!(msg.contains("cannot connect to") && msg.contains("127.0.0.1:1"), "{msg}");

    // A query error.
    let mut config = db.config(Mode::Snapshot, None);
    config.table = None;
    config.query = Some("SELECT khong_co_cot AS id FROM khong_co_bang_nay".into());
    let (e, msg) = failing_poll(config);
    assert!(!e.is_transient(), "{msg}");

    // A password variable that is not set.
    let mut config = db.config(Mode::Snapshot, None);
    let mut remote = db.remote();
    remote.password_env = Some("KHO_TEST_PASSWORD_THAT_IS_NOT_SET".into());
    config.source = db.source(remote);
    let (_, msg) = failing_poll(config);
    assert!(msg.contains("KHO_TEST_PASSWORD_THAT_IS_NOT_SET"), "{msg}");
}

#[test]
fn postgres_snapshot_captures_types_updates_deletes_and_new_columns() {
    snapshot_scenario(RemoteKind::Postgres);
}

#[test]
fn mysql_snapshot_captures_types_updates_deletes_and_new_columns() {
    snapshot_scenario(RemoteKind::Mysql);
}

#[test]
fn postgres_cursor_keeps_microseconds_and_dedups_shared_values() {
    cursor_scenario(RemoteKind::Postgres, "timestamp(6)");
    cursor_scenario(RemoteKind::Postgres, "timestamptz");
}

#[test]
fn mysql_cursor_keeps_microseconds_and_dedups_shared_values() {
    cursor_scenario(RemoteKind::Mysql, "DATETIME(6)");
    cursor_scenario(RemoteKind::Mysql, "TIMESTAMP(6)");
}

#[test]
fn postgres_errors_name_the_dataset_and_are_recorded() {
    error_scenario(RemoteKind::Postgres);
}

#[test]
fn mysql_errors_name_the_dataset_and_are_recorded() {
    error_scenario(RemoteKind::Mysql);
    // A wrong password (from password_file): refused, not transient, and never echoed.
    let db = Db::connect(RemoteKind::Mysql);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mat_khau");
    std::fs::write(&pw, "sai-mat-khau-123\n").unwrap();
    let mut config = db.config(Mode::Snapshot, None);
    let mut remote = db.remote();
    remote.password_file = Some(pw);
    config.source = db.source(remote);
    let (e, msg) = failing_poll(config);
    assert!(!e.is_transient(), "{msg}");
    assert!(msg.contains("Access denied"), "{msg}");
    assert!(!msg.contains("sai-mat-khau-123"), "the password leaked into the error: {msg}");
}
