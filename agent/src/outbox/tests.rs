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
    capture(&mut o, 5);
    assert!(o.verify().unwrap().problems.is_empty());
    rusqlite::Connection::open(&path).unwrap().execute("DELETE FROM changes WHERE seq = 3", []).unwrap();
    let report = Outbox::open_read_only(&path).unwrap().verify().unwrap();
    assert!(report.problems.iter().any(|p| p.contains("gaps")), "{:?}", report.problems);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever mix of captures, acks, rollbacks and reopens: held changes are exactly
    /// acked_through+1 ..= next_seq-1, and sequence numbers are never reused.
    #[test]
    fn seq_and_ack_invariants(ops in prop::collection::vec((0u8..4, 0usize..7), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTBOX_FILE);
        let mut o = Outbox::open(&path).unwrap();
        let mut issued: Vec<u64> = Vec::new();
        for (op, n) in ops {
            match op {
                0 => issued.extend(capture(&mut o, n)),
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
                _ => { drop(o); o = Outbox::open(&path).unwrap(); }
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
