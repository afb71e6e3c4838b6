//! `kho-agent sync --once`: one pass now, forwarded until acknowledged, then exit — with the real
//! binaries. Also: it refuses to run beside a running agent (one agent per data directory), names
//! unknown datasets, and when the hub is unreachable it gives up after `--timeout` with the
//! captured changes kept in the outbox, which the next run delivers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::compare::ho_so_diff;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::source::SourceDb;

fn ho_so() -> DatasetSpec {
    DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None }
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn sync_once_delivers_everything_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 3_000).unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let opts = AgentOptions::default();
    let source = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let mut agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &ho_so().toml(&source, &opts),
        &opts,
    );

    let out = agent.command(&["sync", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dataset ho_so: 3000 row(s) read, 3000 change(s) (0 delete(s))"), "{stdout}");
    assert!(stdout.contains("0 still waiting for the hub"), "{stdout}");
    assert!(ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap().is_empty(), "warehouse equals source on exit");

    // A second sync sends only what changed (snapshot diff), including deletes.
    src.update([1, 2, 3], "Đã trả kết quả").unwrap();
    src.delete([10, 11]).unwrap();
    let out = agent.command(&["sync", "--once", "ho_so"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 change(s) (2 delete(s))"), "{}", text(&out));
    assert!(ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap().is_empty());

    let out = agent.command(&["sync", "--once", "khong_co"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no dataset named khong_co") && text(&out).contains("configured: ho_so"),
        "{}",
        text(&out)
    );

    // Beside a running agent: refused, nothing captured twice.
    agent.spawn();
    wait_for(
        Duration::from_secs(30),
        "the agent to start",
        || agent.log_tail(),
        || std::fs::read_to_string(agent.dir.join("agent.log")).unwrap_or_default().contains("agent starting"),
    );
    let out = agent.command(&["sync", "--once"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("another kho-agent") && text(&out).contains("already running"), "{}", text(&out));
    assert!(agent.stop(), "the running agent stops cleanly");
}

#[test]
fn sync_once_with_the_hub_down_keeps_changes_for_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 500).unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let mut hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    assert!(hub.stop(), "stopped cleanly");
    let opts = AgentOptions::default();
    let source = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let mut agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &ho_so().toml(&source, &opts),
        &opts,
    );
    // The hub is down (its CA exists from its first start; nothing listens).
    let out = agent.command(&["sync", "--once", "--timeout", "2s"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("500 change(s) captured") && stdout.contains("500 still waiting for the hub"), "{stdout}");
    assert!(stdout.contains("safe in the outbox"), "{stdout}");

    hub.spawn();
    agent.spawn();
    wait_for(
        Duration::from_secs(60),
        "the queued changes to arrive",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || ho_so_diff(&src.path, &hub.warehouse(), "ho_so").is_ok_and(|d| d.is_empty()),
    );
    assert_eq!(hub.ledger("so-y-te-01"), 500, "captured once: the run found nothing new to add");
}
