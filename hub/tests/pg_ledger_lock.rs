//! Several hub instances on one PostgreSQL warehouse (issue 11): each instance's applier locks the
//! ledger rows of its group's agents, so two instances never apply one agent's batches at once or
//! twice, and a batch `n+1` that reaches one instance while `n` is in flight on another is applied
//! after `n` or refused as a gap — never applied over a hole.
//!
//! Each "instance" is a real applier pool ([`kho_hub::apply::spawn_pool`]) with its own
//! connections to the same database (a fresh `kho_t_<random>` on 127.0.0.1:5432, dropped after).
//! "Batch `n` in flight elsewhere" is a third connection holding the agent's ledger row in an open
//! transaction, exactly what another instance's group does between its lock and its COMMIT.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kho_hub::apply::{self, ApplierContext, ApplierHandle, ApplyError};
use kho_hub::catalog::{Catalog, CatalogHandle};
use kho_hub::warehouse::postgres::{self, DepartmentOf};
use kho_shared::protocol::{Batch, Change, Column, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::json;

use common::pg::TestDb;

/// One hub instance's applier: `writers` connections of its own to the shared database.
async fn instance(db: &TestDb, writers: usize) -> ApplierHandle {
    let settings = db.settings();
    let departments: DepartmentOf = Arc::new(|_: &str| None);
    let (warehouses, _reader) =
        tokio::task::spawn_blocking(move || postgres::open(settings, writers, departments).expect("open warehouse"))
            .await
            .expect("open task");
    let ctx = ApplierContext {
        metrics: Arc::default(),
        clock: Arc::new(kho_hub::clock::SystemClock),
        catalog: CatalogHandle::new(Catalog::default()),
        privacy: Default::default(),
    };
    let (handle, _thread) = apply::spawn_pool(warehouses, ctx).expect("applier");
    handle
}

fn schema() -> DatasetSchema {
    DatasetSchema {
        privacy: Default::default(),
        dataset: "ho_so_tthc".into(),
        key: vec!["ma".into()],
        columns: vec![
            Column { name: "ma".into(), ty: ColumnType::Text },
            Column { name: "so".into(), ty: ColumnType::Int },
        ],
    }
}

/// `agent`'s batch of changes `first..=last`; change `s` upserts key `<agent>-<s>`.
fn batch(agent: &str, first: u64, last: u64) -> Batch {
    let changes = (first..=last)
        .map(|seq| Change {
            seq,
            dataset: "ho_so_tthc".into(),
            op: Op::Upsert,
            key: None,
            row: json!({"ma": format!("{agent}-{seq}"), "so": seq}).as_object().cloned(),
        })
        .collect();
    Batch {
        v: 1,
        agent: agent.into(),
        first_seq: first,
        last_seq: last,
        created_at_ms: 0,
        schemas: vec![schema()],
        changes,
    }
}

async fn send(h: &ApplierHandle, b: Batch) -> Result<apply::Applied, ApplyError> {
    let arrival = h.arrive(&b.agent);
    h.apply(b, "0".repeat(64), arrival).await
}

fn ledger(c: &mut ::postgres::Client, agent: &str) -> i64 {
    c.query_opt("SELECT applied_seq FROM kho.ledger WHERE agent = $1", &[&agent])
        .expect("ledger")
        .map_or(0, |r| r.get(0))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

// Synchronous tests with their own runtime: the PostgreSQL client used to play "the other
// instance" blocks, which it may not do on an async worker.
#[test]
fn a_batch_waits_for_its_predecessor_in_flight_on_another_instance() {
    let db = TestDb::new();
    let rt = runtime();
    let (a, b) = rt.block_on(async { (instance(&db, 1).await, instance(&db, 2).await) });
    rt.block_on(send(&a, batch("xa-muong-la", 1, 3))).expect("first batch");

    // Batch 4..6 is "in flight" on instance A: its group holds the ledger row, not yet committed.
    let mut other = db.client();
    let mut tx = other.transaction().expect("begin");
    tx.query("SELECT applied_seq FROM kho.ledger WHERE agent = 'xa-muong-la' FOR UPDATE", &[]).expect("lock");

    // Batch 7..9 reaches instance B meanwhile: it must wait, not refuse at once and not apply.
    let waiting = rt.spawn({
        let b = b.clone();
        async move { send(&b, batch("xa-muong-la", 7, 9)).await }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!waiting.is_finished(), "instance B answered while A held the agent's ledger row");

    // A commits batch 4..6 (its ledger; its rows do not matter here), which releases the row.
    tx.execute("UPDATE kho.ledger SET applied_seq = 6 WHERE agent = 'xa-muong-la'", &[]).expect("ledger");
    tx.commit().expect("commit");
    let applied = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), waiting).await });
    let applied = applied.expect("B answers").expect("task").expect("B applies 7..9 right after 4..6");
    assert_eq!((applied.applied_through, applied.changes, applied.duplicate), (9, 3, false));
    assert_eq!(ledger(&mut db.client(), "xa-muong-la"), 9);

    // The same again, but A's group fails (rolled back): B must wait, then refuse, not apply.
    let mut tx = other.transaction().expect("begin");
    tx.query("SELECT applied_seq FROM kho.ledger WHERE agent = 'xa-muong-la' FOR UPDATE", &[]).expect("lock");
    let waiting = rt.spawn({
        let b = b.clone();
        async move { send(&b, batch("xa-muong-la", 13, 15)).await }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!waiting.is_finished(), "instance B answered while A held the agent's ledger row");
    tx.rollback().expect("rollback");
    let refused = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), waiting).await });
    let refused = refused.expect("B answers").expect("task");
    assert!(matches!(refused, Err(ApplyError::Gap { expected: 10 })), "B must refuse 13..15 as a gap: {refused:?}");
    assert_eq!(ledger(&mut db.client(), "xa-muong-la"), 9);
}

#[test]
fn two_instances_racing_on_the_same_batches_apply_each_change_once() {
    let db = TestDb::new();
    let rt = runtime();
    let (a, b) = rt.block_on(async { (instance(&db, 2).await, instance(&db, 2).await) });
    let agents: Vec<String> = (0..12).map(|i| format!("xa-{i:02}")).collect();
    // Every batch is delivered to both instances at once (a resend through a load balancer), in
    // order per agent; each answer must be an apply or a duplicate, and the ledger must end at 40.
    let mut tasks = Vec::new();
    for agent in agents.clone() {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(rt.spawn(async move {
            let mut applied_changes = 0;
            for k in 0..10u64 {
                let (first, last) = (k * 4 + 1, k * 4 + 4);
                let (ra, rb) = tokio::join!(send(&a, batch(&agent, first, last)), send(&b, batch(&agent, first, last)));
                for r in [ra, rb] {
                    let r = r.unwrap_or_else(|e| panic!("{agent} {first}..{last}: {e}"));
                    assert_eq!(r.applied_through, last);
                    applied_changes += r.changes;
                }
            }
            applied_changes
        }));
    }
    for t in tasks {
        assert_eq!(rt.block_on(t).expect("agent task"), 40, "each change applied exactly once across both instances");
    }
    let mut c = db.client();
    for agent in &agents {
        assert_eq!(ledger(&mut c, agent), 40);
    }
    let rows: i64 = c.query_one("SELECT count(*) FROM public.ho_so_tthc", &[]).expect("rows").get(0);
    assert_eq!(rows, 12 * 40);
    let logged: i64 = c.query_one("SELECT count(*) FROM kho.change_log", &[]).expect("log").get(0);
    assert_eq!(logged, 12 * 40, "the change log holds each change once");
}
