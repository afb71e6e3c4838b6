//! Crash safety (architecture invariants 1–3): kill -9 the agent, and separately the hub, again
//! and again while they sync a 100,000-row table; after the last restart the warehouse must equal
//! the source row by row — 0 rows lost, 0 applied twice, ledger equal to the agent's last sequence.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::compare::{Diff, ho_so_diff, seq_stats};
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::source::SourceDb;

const ROWS: u64 = 100_000;
const KILLS: usize = 6;

fn setup(tmp: &std::path::Path, id: &str, cursor: Option<&str>) -> (SourceDb, AgentSpec, DatasetSpec) {
    let src = SourceDb::create(&tmp.join("so_y_te.sqlite"), ROWS).unwrap();
    let spec = AgentSpec { id: id.into(), token: format!("t-{}", fastrand::u64(..)), datasets: vec!["ho_so".into()] };
    let ds = DatasetSpec {
        name: "ho_so".into(),
        table: "ho_so".into(),
        key: vec!["id".into()],
        cursor: cursor.map(Into::into),
    };
    (src, spec, ds)
}

fn opts() -> AgentOptions {
    AgentOptions { batch_max_changes: 1_000, poll_interval: "300ms", ..AgentOptions::default() }
}

fn kill_pause() -> Duration {
    Duration::from_millis(fastrand::u64(250..1_200))
}

fn verify(src: &SourceDb, hub: &HubProc, agent: &AgentProc, agent_id: &str) {
    let last = std::cell::RefCell::new(Diff::default());
    wait_for(
        Duration::from_secs(180),
        "the warehouse to equal the source after the crashes",
        || format!("last diff: {:?}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || {
            let d = ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap_or_else(|e| Diff {
                missing: 1,
                examples: vec![e.to_string()],
                ..Diff::default()
            });
            let done = d.is_empty();
            *last.borrow_mut() = d;
            done
        },
    );
    // Nothing left behind: the outbox drains, and the ledger matches the newest change.
    wait_for(
        Duration::from_secs(60),
        "the outbox to drain",
        || agent.log_tail(),
        || agent.status()["outbox"]["depth"].as_u64() == Some(0),
    );
    let status = agent.status();
    let acked = status["outbox"]["acked_through"].as_u64().expect("acked_through");
    assert_eq!(hub.ledger(agent_id), acked, "hub ledger and agent's acked sequence agree");
    let (rows, distinct, max) = seq_stats(&hub.warehouse(), "ho_so").unwrap();
    assert_eq!(rows, distinct, "two warehouse rows carry the same change sequence");
    assert!(max <= acked, "a row carries sequence {max} beyond the acked {acked}");
}

#[test]
fn agent_killed_repeatedly_during_a_100k_snapshot_sync_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut src, spec, ds) = setup(tmp.path(), "crash-agent", None);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&spec));
    let mut agent =
        AgentProc::start(&tmp.path().join("agent"), &spec, &hub.url(), &hub.ca_path(), &src.path, &[ds], &opts());
    let mut killed_mid_sync = 0;
    for round in 0..KILLS {
        std::thread::sleep(kill_pause());
        if hub.ledger("crash-agent") < ROWS {
            killed_mid_sync += 1;
        }
        agent.kill9();
        // The source keeps changing while the agent is down: updates, inserts and hard deletes.
        let base = ROWS + 1 + round as u64 * 100;
        src.insert_range(base, base + 99).unwrap();
        src.update((1 + round as u64..ROWS).step_by(5_003), "Đang xử lý").unwrap();
        src.delete((10 + round as u64..ROWS).step_by(9_001)).unwrap();
        agent.spawn();
    }
    assert!(killed_mid_sync >= 2, "kills should land during the initial sync (got {killed_mid_sync})");
    verify(&src, &hub, &agent, "crash-agent");
}

#[test]
fn hub_killed_repeatedly_during_a_100k_cursor_sync_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut src, spec, ds) = setup(tmp.path(), "crash-hub", Some("updated_at"));
    let mut hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&spec));
    let agent =
        AgentProc::start(&tmp.path().join("agent"), &spec, &hub.url(), &hub.ca_path(), &src.path, &[ds], &opts());
    let mut killed_mid_sync = 0;
    for round in 0..KILLS {
        std::thread::sleep(kill_pause());
        if hub.ledger("crash-hub") < ROWS {
            killed_mid_sync += 1;
        }
        hub.kill9();
        let base = ROWS + 1 + round as u64 * 100;
        src.insert_range(base, base + 99).unwrap();
        src.update((1 + round as u64..ROWS).step_by(4_001), "Đã trả kết quả").unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..500)));
        hub.spawn();
    }
    assert!(killed_mid_sync >= 2, "kills should land during the initial sync (got {killed_mid_sync})");
    verify(&src, &hub, &agent, "crash-hub");
}
