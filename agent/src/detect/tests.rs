#![allow(clippy::unwrap_used)]

//! Change detection against real SQLite source files and a real outbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kho_shared::protocol::{Change, Op};
use rusqlite::{Connection, params};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::SourceConfig;
use crate::outbox::Pending;

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    outbox: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.sqlite");
        let outbox = dir.path().join("data").join("outbox.sqlite");
        let c = Connection::open(&src).unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, amount REAL, updated_at TEXT, flag BOOLEAN, data BLOB);",
        )
        .unwrap();
        Fixture { _dir: dir, src, outbox }
    }

    fn conn(&self) -> Connection {
        Connection::open(&self.src).unwrap()
    }

    fn insert(&self, id: i64, name: &str, updated_at: Option<&str>) {
        self.conn()
            .execute(
                "INSERT INTO t (id, name, amount, updated_at, flag, data) VALUES (?1, ?2, 1.5, ?3, 1, x'00ff')",
                params![id, name, updated_at],
            )
            .unwrap();
    }

    fn exec(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }

    fn config(&self, mode: Mode, cursor: Option<&str>) -> DatasetConfig {
        DatasetConfig {
            name: "t".into(),
            table: Some("t".into()),
            query: None,
            key: vec!["id".into()],
            mode,
            cursor_column: cursor.map(Into::into),
            poll_interval: std::time::Duration::from_secs(1),
            schedule: None,
            source: SourceConfig::Sqlite { path: self.src.clone() },
            text: Default::default(),
            cdc: Default::default(),
        }
    }

    fn capture_with(
        &self,
        config: DatasetConfig,
        max: u64,
        chunk: usize,
        on_commit: Box<dyn FnMut() + Send>,
        cancel: CancellationToken,
    ) -> Capture {
        let outbox = Outbox::open(&self.outbox).unwrap();
        Capture::new(config, outbox, max, cancel, on_commit).unwrap().with_chunk_limits(chunk, chunk * 10)
    }

    fn capture(&self, mode: Mode, cursor: Option<&str>, chunk: usize) -> Capture {
        self.capture_with(self.config(mode, cursor), u64::MAX, chunk, Box::new(|| {}), CancellationToken::new())
    }
}

/// Reads and acknowledges every pending change.
pub(super) fn take(path: &Path) -> Vec<Change> {
    let mut o = Outbox::open(path).unwrap();
    let meta = o.meta().unwrap();
    let mut p = Pending::default();
    o.read_pending(meta.acked_through + 1, usize::MAX >> 1, usize::MAX >> 1, &mut p).unwrap();
    let changes: Vec<Change> = p.payloads().map(|b| serde_json::from_slice(b).unwrap()).collect();
    if let Some(last) = changes.last() {
        o.ack(last.seq, 0).unwrap();
    }
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    let want: Vec<u64> = (meta.acked_through + 1..meta.next_seq).collect();
    assert_eq!(seqs, want, "pending changes are exactly the unacknowledged sequence numbers");
    changes
}

fn ids(changes: &[Change]) -> Vec<i64> {
    changes.iter().map(|c| c.key_source().and_then(|m| m["id"].as_i64()).unwrap()).collect()
}

#[test]
fn cursor_mode_captures_inserts_and_updates_once() {
    let f = Fixture::new();
    for i in 1..=10 {
        f.insert(i, &format!("Hồ sơ {i}"), Some(&format!("2026-01-01T00:00:{i:02}.000Z")));
    }
    let mut cap = f.capture(Mode::Cursor, Some("updated_at"), 4);
    let r = cap.poll().unwrap();
    assert_eq!((r.rows_read, r.changes), (10, 10));
    let c = take(&f.outbox);
    assert_eq!(ids(&c), (1..=10).collect::<Vec<_>>());
    let row = c[0].row.as_ref().unwrap();
    assert_eq!(
        json!(row),
        json!({"id": 1, "name": "Hồ sơ 1", "amount": 1.5, "updated_at": "2026-01-01T00:00:01.000Z", "flag": true, "data": "AP8="})
    );
    assert_eq!(c[0].op, Op::Upsert);

    assert_eq!(cap.poll().unwrap().changes, 0, "unchanged rows produce nothing");
    assert!(take(&f.outbox).is_empty());

    f.exec("UPDATE t SET name = 'Đã sửa', updated_at = '2026-01-01T00:01:00.000Z' WHERE id IN (3, 7)");
    f.insert(11, "mới", Some("2026-01-01T00:02:00.000Z"));
    cap.poll().unwrap();
    assert_eq!(ids(&take(&f.outbox)), [3, 7, 11]);
    let state = cap.outbox().dataset_state("t").unwrap().unwrap();
    assert_eq!(state.cursor.as_deref(), Some("2026-01-01T00:02:00.000Z"));
    assert!(state.last_ok_poll_at_ms.is_some());
    assert_eq!(state.captured_through_seq, 13);
}

#[test]
fn cursor_boundary_rows_are_deduplicated_across_chunks_and_polls() {
    let f = Fixture::new();
    for i in 1..=23 {
        f.insert(i, "same", Some("2026-01-01T00:00:00Z"));
    }
    let mut cap = f.capture(Mode::Cursor, Some("updated_at"), 5);
    assert_eq!(cap.poll().unwrap().changes, 23);
    assert_eq!(take(&f.outbox).len(), 23);
    assert_eq!(cap.poll().unwrap().changes, 0, "rows at the stored cursor value are not re-sent");

    f.insert(24, "late writer, same timestamp", Some("2026-01-01T00:00:00Z"));
    f.exec("UPDATE t SET name = 'changed, same timestamp' WHERE id = 5");
    cap.poll().unwrap();
    let mut got = ids(&take(&f.outbox));
    got.sort();
    assert_eq!(got, [5, 24]);
    assert_eq!(cap.poll().unwrap().changes, 0);

    f.insert(25, "later", Some("2026-01-01T00:00:01Z"));
    cap.poll().unwrap();
    assert_eq!(ids(&take(&f.outbox)), [25]);
    assert_eq!(cap.poll().unwrap().changes, 0);
}

#[test]
fn null_cursor_rows_are_counted_and_reported() {
    let f = Fixture::new();
    f.insert(1, "a", Some("2026-01-01"));
    f.insert(2, "b", None);
    f.insert(3, "c", None);
    let mut cap = f.capture(Mode::Cursor, Some("updated_at"), 100);
    let r = cap.poll().unwrap();
    assert_eq!((r.changes, r.null_cursor_rows), (1, 2));
    assert_eq!(cap.outbox().dataset_state("t").unwrap().unwrap().null_cursor_rows, 2);
}

#[test]
fn real_and_text_cursors_keep_full_precision() {
    let f = Fixture::new();
    f.exec(
        "CREATE TABLE r (id INTEGER PRIMARY KEY, v REAL);
         INSERT INTO r VALUES (1, 1.0), (2, 1.0000000000000002);",
    );
    let mut config = f.config(Mode::Cursor, Some("v"));
    config.table = Some("r".into());
    let mut cap = f.capture_with(config, u64::MAX, 100, Box::new(|| {}), CancellationToken::new());
    assert_eq!(cap.poll().unwrap().changes, 2);
    let state = cap.outbox().dataset_state("t").unwrap().unwrap();
    assert_eq!(state.cursor_value, Some(crate::source::CursorValue::Real(1.0000000000000002)));
    assert_eq!(cap.poll().unwrap().changes, 0);
    f.exec("INSERT INTO r VALUES (3, 1.0000000000000004)");
    assert_eq!(cap.poll().unwrap().changes, 1);
    take(&f.outbox);

    let g = Fixture::new();
    g.insert(1, "a", Some("2026-01-01T00:00:00.000001Z"));
    g.insert(2, "b", Some("2026-01-01T00:00:00.000002Z"));
    let mut cap = g.capture(Mode::Cursor, Some("updated_at"), 100);
    assert_eq!(cap.poll().unwrap().changes, 2);
    assert_eq!(cap.poll().unwrap().changes, 0, "a truncated cursor would re-read row 1");
    g.insert(3, "c", Some("2026-01-01T00:00:00.000002Z"));
    g.insert(4, "d", Some("2026-01-01T00:00:00.000003Z"));
    assert_eq!(cap.poll().unwrap().changes, 2);
    assert_eq!(
        cap.outbox().dataset_state("t").unwrap().unwrap().cursor.as_deref(),
        Some("2026-01-01T00:00:00.000003Z")
    );
    assert_eq!(cap.poll().unwrap().changes, 0);
}

/// A capture whose shutdown token fires right after its first committed chunk: the process
/// "dies" between chunks.
fn capture_dying_after_first_chunk(f: &Fixture, mode: Mode, cursor: Option<&str>) -> Capture {
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    f.capture_with(f.config(mode, cursor), u64::MAX, 5, Box::new(move || c2.cancel()), cancel)
}

#[test]
fn cursor_crash_between_chunks_loses_and_duplicates_nothing() {
    let f = Fixture::new();
    for i in 1..=20 {
        f.insert(i, "x", Some(if i <= 12 { "2026-01-01" } else { "2026-01-02" }));
    }
    let mut cap = capture_dying_after_first_chunk(&f, Mode::Cursor, Some("updated_at"));
    let r = cap.poll().unwrap();
    assert!(r.interrupted);
    assert_eq!(r.changes, 5);
    drop(cap);
    let mut cap = f.capture(Mode::Cursor, Some("updated_at"), 5);
    assert_eq!(cap.poll().unwrap().changes, 15);
    let mut got = ids(&take(&f.outbox));
    got.sort();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
}

#[test]
fn snapshot_mode_finds_inserts_updates_and_deletes() {
    let f = Fixture::new();
    for i in 1..=12 {
        f.insert(i, "x", None);
    }
    let mut cap = f.capture(Mode::Snapshot, None, 5);
    assert_eq!(cap.poll().unwrap().changes, 12);
    assert_eq!(take(&f.outbox).len(), 12);
    assert_eq!(cap.poll().unwrap().changes, 0, "unchanged rows produce nothing");

    f.exec("UPDATE t SET name = 'y' WHERE id IN (2, 4); DELETE FROM t WHERE id IN (1, 5, 6, 7, 8, 9, 10);");
    f.insert(13, "new", None);
    let r = cap.poll().unwrap();
    assert_eq!((r.changes, r.deletes), (10, 7));
    let c = take(&f.outbox);
    let upserts: Vec<i64> = ids(&c.iter().filter(|c| c.op == Op::Upsert).cloned().collect::<Vec<_>>());
    let mut deletes: Vec<i64> = ids(&c.iter().filter(|c| c.op == Op::Delete).cloned().collect::<Vec<_>>());
    deletes.sort();
    assert_eq!(upserts, [2, 4, 13]);
    assert_eq!(deletes, [1, 5, 6, 7, 8, 9, 10]);
    let d = c.iter().find(|c| c.op == Op::Delete).unwrap();
    assert!(d.row.is_none() && d.key.as_ref().unwrap().len() == 1);
    assert_eq!(cap.poll().unwrap().changes, 0);
}

#[test]
fn snapshot_crash_mid_pass_is_safe() {
    let f = Fixture::new();
    for i in 1..=20 {
        f.insert(i, "x", None);
    }
    let mut cap = capture_dying_after_first_chunk(&f, Mode::Snapshot, None);
    let r = cap.poll().unwrap();
    assert!(r.interrupted);
    assert_eq!((r.changes, r.deletes), (5, 0));
    drop(cap);
    f.exec("DELETE FROM t WHERE id > 15");
    let mut cap = f.capture(Mode::Snapshot, None, 5);
    let r = cap.poll().unwrap();
    // Rows 1..=15 exist; the first pass captured 5 of them; 16..=20 were never captured, so no
    // delete is owed for them.
    assert_eq!((r.changes, r.deletes), (10, 0));
    let mut got = ids(&take(&f.outbox));
    got.sort();
    assert_eq!(got, (1..=15).collect::<Vec<_>>());
}

#[test]
fn schema_changes_are_recorded_and_rows_resent_in_snapshot_mode() {
    let f = Fixture::new();
    f.insert(1, "x", None);
    let mut cap = f.capture(Mode::Snapshot, None, 5);
    cap.poll().unwrap();
    take(&f.outbox);
    f.exec("ALTER TABLE t ADD COLUMN ghi_chu TEXT");
    let r = cap.poll().unwrap();
    assert!(r.schema_changed);
    assert_eq!(r.changes, 1);
    let schemas = cap.outbox().schemas(&["t".to_string()]).unwrap();
    assert!(schemas[0].columns.iter().any(|c| c.name == "ghi_chu"));
    let c = take(&f.outbox);
    assert!(c[0].row.as_ref().unwrap().contains_key("ghi_chu"));
}

#[test]
fn missing_source_is_recorded_and_retried() {
    let f = Fixture::new();
    let mut config = f.config(Mode::Snapshot, None);
    let missing = f.src.with_file_name("later.sqlite");
    config.source = SourceConfig::Sqlite { path: missing.clone() };
    let mut cap = f.capture_with(config, u64::MAX, 5, Box::new(|| {}), CancellationToken::new());
    let e = cap.poll().unwrap_err();
    assert!(e.is_transient());
    assert!(e.to_string().contains("later.sqlite"), "{e}");
    let state = cap.outbox().dataset_state("t").unwrap().unwrap();
    assert!(state.last_error.unwrap().contains("does not exist"));
    assert!(state.last_ok_poll_at_ms.is_none());
    std::fs::copy(&f.src, &missing).unwrap();
    cap.poll().unwrap();
    assert!(cap.outbox().dataset_state("t").unwrap().unwrap().last_error.is_none());
}

#[test]
fn missing_key_or_cursor_column_is_named() {
    let f = Fixture::new();
    let mut config = f.config(Mode::Cursor, Some("sua_luc"));
    let e = discover(&config).unwrap_err();
    assert!(e.to_string().contains("cursor column \"sua_luc\""), "{e}");
    config.cursor_column = Some("updated_at".into());
    config.key = vec!["ma".into()];
    let e = discover(&config).unwrap_err();
    assert!(e.to_string().contains("key column \"ma\""), "{e}");
}

#[test]
fn source_is_never_written() {
    let f = Fixture::new();
    f.insert(1, "x", Some("a"));
    let before = std::fs::read(&f.src).unwrap();
    let mut cap = f.capture(Mode::Snapshot, None, 5);
    cap.poll().unwrap();
    assert_eq!(std::fs::read(&f.src).unwrap(), before);
}

#[test]
fn query_sources_work() {
    let f = Fixture::new();
    f.insert(1, "x", Some("a"));
    let mut config = f.config(Mode::Snapshot, None);
    config.table = None;
    config.query = Some("SELECT id, upper(name) AS ten, amount FROM t;".into());
    let schema = discover(&config).unwrap();
    let types: Vec<&str> = schema.columns.iter().map(|c| c.ty.as_str()).collect();
    assert_eq!(types, ["int", "text", "float"]);
    let mut cap = f.capture_with(config, u64::MAX, 5, Box::new(|| {}), CancellationToken::new());
    cap.poll().unwrap();
    assert_eq!(json!(take(&f.outbox)[0].row), json!({"id": 1, "ten": "X", "amount": 1.5}));
}

#[test]
fn full_outbox_pauses_capture_until_acknowledged() {
    let f = Fixture::new();
    for i in 1..=12 {
        f.insert(i, "x", None);
    }
    let commits = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&commits);
    let mut cap = f.capture_with(
        f.config(Mode::Snapshot, None),
        5,
        5,
        Box::new(move || {
            c2.fetch_add(1, Ordering::SeqCst);
        }),
        CancellationToken::new(),
    );
    let worker = std::thread::spawn(move || cap.poll().unwrap());
    let wait_depth = |want: u64| {
        let o = Outbox::open(&f.outbox).unwrap();
        for _ in 0..200 {
            if o.depth().unwrap() == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("outbox never reached depth {want}");
    };
    wait_depth(5);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(commits.load(Ordering::SeqCst), 1, "capture paused while the outbox is full");
    assert!(!worker.is_finished());
    assert_eq!(take(&f.outbox).len(), 5);
    wait_depth(5);
    assert_eq!(take(&f.outbox).len(), 5);
    let report = worker.join().unwrap();
    assert_eq!(report.changes, 12);
    assert_eq!(take(&f.outbox).len(), 2);
}

#[test]
fn chunk_budget_is_a_quarter_of_the_space_and_waits_below_the_minimum() {
    use super::{MIN_FREE_SPACE, chunk_budget};
    assert_eq!(chunk_budget(MIN_FREE_SPACE - 1), None, "too little room: wait");
    assert_eq!(chunk_budget(MIN_FREE_SPACE), Some((MIN_FREE_SPACE / 4) as usize));
    assert_eq!(chunk_budget(3 << 20), Some(3 << 18), "3 MiB free: 768 KiB chunks");
}
