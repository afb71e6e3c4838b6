#![allow(clippy::unwrap_used)]

//! Outbox invariants: gapless sequences across reopen, deletion only by ack, atomic chunks.

use kho_shared::protocol::{Change, Op};
use proptest::prelude::*;

use super::*;

fn capture(o: &mut Outbox, n: usize) -> Vec<u64> {
    o.begin_chunk(now_ms()).unwrap();
    let seqs =
        (0..n).map(|i| o.push_change("ho_so", Op::Upsert, format!("{{\"id\":{i}}}").as_bytes()).unwrap()).collect();
    o.commit_chunk().unwrap();
    seqs
}

fn held(o: &Outbox) -> Vec<u64> {
    let mut p = Pending::default();
    let m = o.meta().unwrap();
    o.read_pending(m.acked_through + 1, usize::MAX >> 1, usize::MAX >> 1, &mut p).unwrap();
    p.payloads().map(|b| serde_json::from_slice::<Change>(b).unwrap().seq).collect()
}

#[test]
fn sequences_are_gapless_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join(OUTBOX_FILE);
    let mut o = Outbox::open(&path).unwrap();
    o.prepare_dataset("ho_so", crate::config::Mode::Snapshot, None).unwrap();
    assert_eq!(capture(&mut o, 3), [1, 2, 3]);
    drop(o);
    let mut o = Outbox::open(&path).unwrap();
    assert_eq!(capture(&mut o, 2), [4, 5]);
    assert_eq!(held(&o), [1, 2, 3, 4, 5]);
    let mut p = Pending::default();
    o.read_pending(1, 10, 1 << 20, &mut p).unwrap();
    let c: Change = serde_json::from_slice(p.payloads().next().unwrap()).unwrap();
    assert_eq!((c.seq, c.dataset.as_str(), c.op), (1, "ho_so", Op::Upsert));
    assert_eq!(c.row.unwrap()["id"], 0);
}

#[test]
fn an_uncommitted_chunk_vanishes_and_its_sequences_are_reused_by_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUTBOX_FILE);
    let mut o = Outbox::open(&path).unwrap();
    capture(&mut o, 2);
    o.begin_chunk(0).unwrap();
    o.push_change("ho_so", Op::Upsert, b"{\"id\":99}").unwrap();
    drop(o); // "crash" before commit
    let mut o = Outbox::open(&path).unwrap();
    assert_eq!(held(&o), [1, 2]);
    assert_eq!(capture(&mut o, 1), [3], "the rolled-back chunk never existed, so 3 is next");
    let problems = o.verify().unwrap().problems;
    assert!(problems.iter().all(|p| p.contains("no schema stored")), "{problems:?}");
}

#[test]
fn ack_deletes_only_up_to_n() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(&dir.path().join(OUTBOX_FILE)).unwrap();
    capture(&mut o, 10);
    assert_eq!(o.ack(4, 1234).unwrap(), 4);
    assert_eq!(held(&o), [5, 6, 7, 8, 9, 10]);
    let m = o.meta().unwrap();
    assert_eq!((m.acked_through, m.last_ack_at_ms, m.depth()), (4, Some(1234), 6));
    assert_eq!(o.ack(2, 0).unwrap(), 0, "an older ack changes nothing");
    assert_eq!(o.meta().unwrap().acked_through, 4);
    assert_eq!(o.oldest_seq().unwrap(), Some(5));
}

#[test]
fn read_pending_respects_count_and_byte_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(&dir.path().join(OUTBOX_FILE)).unwrap();
    capture(&mut o, 10);
    let mut p = Pending::default();
    o.read_pending(3, 4, 1 << 20, &mut p).unwrap();
    assert_eq!((p.first_seq, p.last_seq, p.len()), (3, 6, 4));
    o.read_pending(1, 100, 1, &mut p).unwrap();
    assert_eq!(p.len(), 1, "at least one change even if it alone exceeds the byte bound");
    assert_eq!(p.datasets, ["ho_so"]);
}

#[test]
fn verify_reports_a_missing_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUTBOX_FILE);
    let mut o = Outbox::open(&path).unwrap();
    o.prepare_dataset("ho_so", crate::config::Mode::Snapshot, None).unwrap();
    o.record_schema(&kho_shared::protocol::DatasetSchema {
        privacy: Default::default(),
        dataset: "ho_so".into(),
        key: vec!["id".into()],
        columns: vec![kho_shared::protocol::Column { name: "id".into(), ty: kho_shared::types::ColumnType::Int }],
    })
    .unwrap();
    capture(&mut o, 2);
    capture(&mut o, 1);
    capture(&mut o, 2);
    assert!(o.verify().unwrap().problems.is_empty());
    rusqlite::Connection::open(&path).unwrap().execute("DELETE FROM change_blocks WHERE first_seq = 3", []).unwrap();
    let report = Outbox::open_read_only(&path).unwrap().verify().unwrap();
    assert!(report.problems.iter().any(|p| p.contains("gaps")), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("holds 4 changes but meta says 5")), "{:?}", report.problems);
    let mut p = Pending::default();
    o.read_pending(1, 100, 1 << 20, &mut p).unwrap();
    assert_eq!((p.first_seq, p.last_seq), (1, 2), "a read stops at the gap");
}

#[test]
fn verify_reports_a_block_whose_lengths_do_not_match_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUTBOX_FILE);
    let mut o = Outbox::open(&path).unwrap();
    capture(&mut o, 3);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute("UPDATE change_blocks SET lens = substr(lens, 1, 8)", []).unwrap();
    let problems = o.verify().unwrap().problems;
    assert!(problems.iter().any(|p| p.contains("holds 2 changes for seq 1..=3")), "{problems:?}");
    db.execute("UPDATE change_blocks SET lens = x'0100000001000000010000'", []).unwrap();
    let problems = o.verify().unwrap().problems;
    assert!(problems.iter().any(|p| p.contains("not a multiple of 4")), "{problems:?}");
    let mut p = Pending::default();
    o.read_pending(1, 100, 1 << 20, &mut p).unwrap();
    assert!(p.is_empty(), "a malformed block is not sent");
}

/// A large chunk is stored as several blocks; reads and acks cross block boundaries, and a
/// block acknowledged in part is read from its first unacknowledged change.
#[test]
fn changes_span_blocks_and_partial_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUTBOX_FILE);
    let mut o = Outbox::open(&path).unwrap();
    let n = 2 * capture::BLOCK_CHANGES + 100;
    capture(&mut o, n);
    let blocks = || -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM change_blocks", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(blocks(), 3);
    let mut p = Pending::default();
    o.read_pending(1000, 100, 1 << 20, &mut p).unwrap();
    assert_eq!((p.first_seq, p.last_seq, p.len()), (1000, 1099, 100), "a read crosses a block boundary");
    let seqs: Vec<u64> = p.payloads().map(|b| serde_json::from_slice::<Change>(b).unwrap().seq).collect();
    assert_eq!(seqs, (1000..1100).collect::<Vec<_>>());
    assert_eq!(o.ack(1500, 0).unwrap(), 1500);
    assert_eq!(blocks(), 2, "the first block is gone, the second is acknowledged in part");
    assert_eq!(o.oldest_seq().unwrap(), Some(1501));
    assert_eq!(o.status().unwrap().oldest_pending_seq, Some(1501));
    assert_eq!(held(&o), (1501..=n as u64).collect::<Vec<_>>());
    assert!(o.verify().unwrap().problems.iter().all(|p| p.contains("no schema stored")));
    drop(o);
    let mut o = Outbox::open(&path).unwrap();
    assert_eq!(o.ack(n as u64, 0).unwrap(), n as u64 - 1500);
    assert_eq!(blocks(), 0);
    assert_eq!(o.oldest_seq().unwrap(), None);
}

/// A block holds one dataset: a chunk alternating between two datasets stores a block per run,
/// and a read lists each dataset once, in first-seen order.
#[test]
fn a_chunk_of_two_datasets_keeps_each_change_with_its_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(&dir.path().join(OUTBOX_FILE)).unwrap();
    o.begin_chunk(0).unwrap();
    for (i, d) in ["b", "b", "a", "b", "a", "a"].iter().enumerate() {
        o.push_change(d, Op::Upsert, format!("{{\"id\":{i}}}").as_bytes()).unwrap();
    }
    o.commit_chunk().unwrap();
    let mut p = Pending::default();
    o.read_pending(1, 100, 1 << 20, &mut p).unwrap();
    assert_eq!(p.datasets, ["b", "a"]);
    let got: Vec<(u64, String)> =
        p.payloads().map(|b| serde_json::from_slice::<Change>(b).unwrap()).map(|c| (c.seq, c.dataset)).collect();
    let want: Vec<(u64, String)> =
        [(1, "b"), (2, "b"), (3, "a"), (4, "b"), (5, "a"), (6, "a")].iter().map(|(s, d)| (*s, d.to_string())).collect();
    assert_eq!(got, want);
}

/// An outbox written by an agent before blocks (schema version 1, one `changes` row per change)
/// is moved into blocks when opened: nothing pending is lost, and sequences continue.
#[test]
fn a_version_1_outbox_is_moved_into_blocks_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUTBOX_FILE);
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), next_seq INTEGER NOT NULL,
                 acked_through INTEGER NOT NULL, last_ack_at_ms INTEGER);
             INSERT INTO meta VALUES (1, 8, 4, 77);
             CREATE TABLE changes (seq INTEGER PRIMARY KEY, dataset TEXT NOT NULL,
                 captured_at_ms INTEGER NOT NULL, payload BLOB NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for seq in 5..8 {
            let payload = format!(r#"{{"seq":{seq},"dataset":"ho_so","op":"upsert","row":{{"id":{seq}}}}}"#);
            db.execute(
                "INSERT INTO changes VALUES (?1, 'ho_so', ?2, ?3)",
                params![seq, 1000 + seq, payload.as_bytes()],
            )
            .unwrap();
        }
    }
    let err = Outbox::open_read_only(&path).err().expect("read-only cannot upgrade");
    assert!(err.to_string().contains("older agent (schema version 1)"), "{err}");
    let mut o = Outbox::open(&path).unwrap();
    assert_eq!(held(&o), [5, 6, 7]);
    let status = o.status().unwrap();
    assert_eq!(
        (status.depth, status.oldest_pending_seq, status.oldest_pending_captured_at_ms),
        (3, Some(5), Some(1005))
    );
    assert_eq!(capture(&mut o, 2), [8, 9]);
    assert!(o.verify().unwrap().problems.iter().all(|p| p.contains("no schema stored")));
    let db = rusqlite::Connection::open(&path).unwrap();
    let old: i64 = db.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'changes'", [], |r| r.get(0)).unwrap();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((old, version), (0, SCHEMA_VERSION));
    drop(o);
    assert_eq!(held(&Outbox::open(&path).unwrap()), [5, 6, 7, 8, 9], "opening again changes nothing");
    assert_eq!(held(&Outbox::open_read_only(&path).unwrap()), [5, 6, 7, 8, 9], "status reads it once upgraded");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever mix of captures, acks, rollbacks and reopens: held changes are exactly
    /// acked_through+1 ..= next_seq-1, and sequence numbers are never reused.
    #[test]
    fn seq_and_ack_invariants(ops in prop::collection::vec((0u8..5, 0usize..7), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTBOX_FILE);
        let mut o = Outbox::open(&path).unwrap();
        let mut issued: Vec<u64> = Vec::new();
        for (op, n) in ops {
            match op {
                0 => issued.extend(capture(&mut o, n)),
                4 => {
                    o.begin_chunk(0).unwrap();
                    for i in 0..n { issued.push(o.push_change(["a", "b"][i % 2], Op::Delete, b"{\"id\":1}").unwrap()); }
                    o.commit_chunk().unwrap();
                }
                1 => {
                    let m = o.meta().unwrap();
                    let target = m.acked_through + (n as u64).min(m.depth());
                    o.ack(target, 0).unwrap();
                }
                2 => {
                    o.begin_chunk(0).unwrap();
                    for _ in 0..n { o.push_change("d", Op::Delete, b"{\"id\":1}").unwrap(); }
                    o.rollback_chunk();
                }
                3 => { drop(o); o = Outbox::open(&path).unwrap(); }
                _ => unreachable!(),
            }
            let m = o.meta().unwrap();
            let want: Vec<u64> = (m.acked_through + 1..m.next_seq).collect();
            prop_assert_eq!(held(&o), want);
        }
        let want: Vec<u64> = (1..=issued.len() as u64).collect();
        prop_assert_eq!(issued, want, "sequences are 1, 2, 3, ... with no gap or reuse");
        let problems = o.verify().unwrap().problems;
        prop_assert!(problems.iter().all(|p| p.contains("no schema stored")), "{:?}", problems);
    }
}
