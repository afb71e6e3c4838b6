//! End to end: real `kho-hub` and `kho-agent` processes over HTTPS on loopback, a generated
//! department database, and row-by-row comparison of source and warehouse.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::compare::{Diff, ho_so_diff, seq_stats};
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, free_port, wait_for};
use kho_tests::source::SourceDb;

const CONVERGE: Duration = Duration::from_secs(60);

fn spec(id: &str, datasets: &[&str]) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        token: format!("token-{id}-{}", fastrand::u64(..)),
        datasets: datasets.iter().map(|d| d.to_string()).collect(),
    }
}

fn ho_so(name: &str, cursor: Option<&str>) -> DatasetSpec {
    DatasetSpec { name: name.into(), table: "ho_so".into(), key: vec!["id".into()], cursor: cursor.map(Into::into) }
}

fn wait_converged(src: &SourceDb, hub: &HubProc, agent: &AgentProc, dataset: &str) {
    let last = std::cell::RefCell::new(Diff::default());
    wait_for(
        CONVERGE,
        &format!("warehouse table {dataset} to equal the source"),
        || format!("last diff: {:?}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || {
            let d = ho_so_diff(&src.path, &hub.warehouse(), dataset).unwrap_or_else(|e| Diff {
                examples: vec![e.to_string()],
                missing: 1,
                ..Diff::default()
            });
            let done = d.is_empty();
            *last.borrow_mut() = d;
            done
        },
    );
}

#[test]
fn snapshot_mode_converges_through_inserts_updates_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 2_000).unwrap();
    let a = spec("so-y-te-01", &["ho_so"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let agent = AgentProc::start(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so", None)],
        &AgentOptions::default(),
    );
    wait_converged(&src, &hub, &agent, "ho_so");

    src.insert_range(2_001, 2_050).unwrap();
    src.update((1..=2_000).step_by(97), "Đã trả kết quả").unwrap();
    src.delete([5, 6, 7, 1_999, 2_050]).unwrap();
    wait_converged(&src, &hub, &agent, "ho_so");

    // Deleted rows stay in the warehouse as soft deletes. 2050 was inserted and deleted by the
    // statements above: usually between two polls, so the warehouse never saw it — but a poll may
    // fall between them (a loaded machine), and then it is there, soft-deleted too.
    let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
    let deleted: i64 = conn.query_row("SELECT count(*) FROM ho_so WHERE _kho_deleted = 1", [], |r| r.get(0)).unwrap();
    let seen_2050: i64 = conn.query_row("SELECT count(*) FROM ho_so WHERE id = 2050", [], |r| r.get(0)).unwrap();
    assert_eq!(deleted, 4 + seen_2050, "rows 5, 6, 7, 1999 (and 2050 if a poll saw it) are soft-deleted");
    let (rows, distinct, max) = seq_stats(&hub.warehouse(), "ho_so").unwrap();
    assert_eq!(rows, distinct, "two rows carry the same change sequence");
    assert_eq!(max, hub.ledger("so-y-te-01"), "ledger and newest applied change agree");

    // A new source column becomes a new warehouse column, with its values.
    src.execute(
        "ALTER TABLE ho_so ADD COLUMN so_dien_thoai TEXT;
         UPDATE ho_so SET so_dien_thoai = '0212 385 ' || printf('%04d', id) WHERE id % 100 = 0;",
    )
    .unwrap();
    wait_for(
        Duration::from_secs(60),
        "the new column and its values in the warehouse",
        || agent.log_tail(),
        || {
            conn.query_row(
                "SELECT count(*) FROM ho_so WHERE so_dien_thoai LIKE '0212 385 %' AND _kho_deleted = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .is_ok_and(|n| n == 20)
        },
    );
    wait_converged(&src, &hub, &agent, "ho_so");
}

#[test]
fn cursor_mode_converges_and_status_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 3_000).unwrap();
    let a = spec("so-y-te-02", &["ho_so"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let mut agent = AgentProc::start(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so", Some("updated_at"))],
        &AgentOptions::default(),
    );
    wait_converged(&src, &hub, &agent, "ho_so");
    for round in 0..3 {
        src.insert_range(3_001 + round * 10, 3_010 + round * 10).unwrap();
        src.update((1..=3_000).skip(round as usize).step_by(211), "Quá hạn").unwrap();
        wait_converged(&src, &hub, &agent, "ho_so");
    }
    let status = hub.status();
    let ds = status["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "ho_so").cloned().unwrap();
    assert_eq!(ds["rows"], 3_030, "status: {status}");
    assert!(ds["last_change_at"].is_string() && ds["last_contact_at"].is_string(), "status: {status}");
    assert!(agent.stop(), "the agent exits cleanly on SIGTERM\n{}", agent.log_tail());
}

#[test]
fn agent_buffers_while_the_hub_is_down_then_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 500).unwrap();
    let a = spec("so-y-te-03", &["ho_so"]);
    // Hub configured and started once so its CA exists, then stopped.
    let mut hub = HubProc::configure(&tmp.path().join("hub"), free_port(), std::slice::from_ref(&a));
    hub.spawn();
    assert!(hub.stop(), "hub stops cleanly on SIGTERM\n{}", hub.log_tail());

    let agent = AgentProc::start(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so", Some("updated_at"))],
        &AgentOptions::default(),
    );
    src.insert_range(501, 700).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the outbox to hold all 700 changes",
        || agent.log_tail(),
        || outbox_depth(&agent) == 700,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(outbox_depth(&agent), 700, "nothing leaves the outbox without the hub's ack");

    hub.spawn();
    wait_converged(&src, &hub, &agent, "ho_so");
    wait_for(Duration::from_secs(30), "the outbox to drain", || agent.log_tail(), || outbox_depth(&agent) == 0);
    assert_eq!(hub.ledger("so-y-te-03"), 700);
}

/// Changes waiting in the agent's outbox, as `kho-agent status --json` reports them.
pub fn outbox_depth(agent: &AgentProc) -> u64 {
    agent.status()["outbox"]["depth"].as_u64().expect("status has outbox.depth")
}

#[test]
fn missing_source_file_is_reported_and_retried_until_it_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let src_path = tmp.path().join("so_y_te.sqlite");
    let a = spec("so-y-te-04", &["ho_so"]);
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let mut agent = AgentProc::start(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &src_path,
        &[ho_so("ho_so", Some("updated_at"))],
        &AgentOptions::default(),
    );
    let path_shown = src_path.display().to_string();
    wait_for(
        Duration::from_secs(30),
        "status to name the missing source file",
        || agent.log_tail(),
        || agent.status()["datasets"][0]["last_error"].as_str().is_some_and(|e| e.contains(&path_shown)),
    );
    assert!(agent.is_running(), "the agent keeps running without its source\n{}", agent.log_tail());

    let src = SourceDb::create(&src_path, 300).unwrap();
    wait_converged(&src, &hub, &agent, "ho_so");
    wait_for(
        Duration::from_secs(30),
        "the error to clear",
        || agent.log_tail(),
        || agent.status()["datasets"][0]["last_error"].is_null(),
    );
}
