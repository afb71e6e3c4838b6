//! The `kho-agent` binary: bad configs fail loudly with the field named; `check` and `status`
//! work against a real source and outbox.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kho-agent");

fn write_config(dir: &Path, dataset_extra: &str) -> std::path::PathBuf {
    let src = dir.join("so_y_te.sqlite");
    let conn = rusqlite::Connection::open(&src).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS ho_so (id INTEGER PRIMARY KEY, ten TEXT, updated_at TEXT);
         INSERT OR IGNORE INTO ho_so VALUES (1, 'Hồ sơ', '2026-01-01');",
    )
    .unwrap();
    let text = format!(
        "[agent]\nid = \"so-y-te-01\"\ndata_dir = \"data\"\n\n[hub]\nurl = \"https://127.0.0.1:1\"\ntoken = \"secret-token\"\n\n\
         [[dataset]]\nname = \"ho_so\"\ntable = \"ho_so\"\nkey = [\"id\"]\nmode = \"cursor\"\n{dataset_extra}\n\
         [dataset.source]\nkind = \"sqlite\"\npath = \"so_y_te.sqlite\"\n"
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_config_exits_non_zero_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = Command::new(BIN).arg("--config").arg(&config).arg("run").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dataset[0].cursor_column"), "stderr: {stderr}");
    assert!(stderr.contains("agent.toml"), "stderr: {stderr}");
    assert!(!stderr.contains("secret-token"), "the token is never printed");
}

#[test]
fn missing_config_file_is_named() {
    let out = Command::new(BIN).args(["--config", "/nonexistent/kho.toml", "check"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kho.toml"));
}

#[test]
fn check_shows_the_schema_reports_an_unreachable_hub_and_status_reads_an_empty_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "cursor_column = \"updated_at\"");
    let out = Command::new(BIN).arg("--config").arg(&config).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Nothing listens on port 1: the hub is a problem, the source is still checked.
    assert!(!out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("hub https://127.0.0.1:1: PROBLEM: hub unreachable"), "{stdout}");
    assert!(stdout.contains("updated_at") && stdout.contains("text"), "{stdout}");
    assert!(stdout.contains("1 problem(s)"), "{stdout}");

    let out = Command::new(BIN).arg("--config").arg(&config).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outbox"]["depth"], 0);
    assert_eq!(v["datasets"][0]["dataset"], "ho_so");
}

#[test]
fn check_fails_on_a_missing_cursor_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "cursor_column = \"sua_luc\"");
    let out = Command::new(BIN).arg("--config").arg(&config).arg("check").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sua_luc"));
}
