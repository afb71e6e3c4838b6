//! The README's first command, `kho-hub demo`, run as the real binary: it generates the sample
//! department database, starts a hub and an agent, the table reaches the warehouse, a row edited
//! in the sample database follows within seconds, and SIGTERM stops both cleanly.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn warehouse_value(warehouse: &std::path::Path, sql: &str) -> Option<String> {
    let conn = rusqlite::Connection::open_with_flags(warehouse, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row(sql, [], |r| r.get::<_, rusqlite::types::Value>(0)).ok().map(|v| format!("{v:?}"))
}

fn wait(what: &str, log: &std::path::Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

#[test]
fn demo_syncs_the_sample_table_follows_an_edit_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tmp.path().join("kho-demo");
    let log = tmp.path().join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kho-hub"))
        .args(["demo", "--rows", "300", "--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let warehouse = dir.join("hub-data/warehouse.sqlite");
    wait("the sample table in the warehouse", &log, || {
        warehouse_value(&warehouse, "SELECT count(*) FROM ho_so").as_deref() == Some("Integer(300)")
    });

    let source = rusqlite::Connection::open(dir.join("so_y_te.sqlite")).unwrap();
    source
        .execute(
            "UPDATE ho_so SET trang_thai = 'Đã trả kết quả (demo)', updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id = 7",
            [],
        )
        .unwrap();
    wait("the edited row in the warehouse", &log, || {
        warehouse_value(&warehouse, "SELECT trang_thai FROM ho_so WHERE id = 7").as_deref()
            == Some("Text(\"Đã trả kết quả (demo)\")")
    });

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exit: {status}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}
