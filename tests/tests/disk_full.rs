//! A full disk under the agent's outbox: capture stops with a clear error, nothing is lost, and
//! capture resumes by itself once the forwarder has drained the outbox — the agent must not wedge.
//!
//! The agent's data directory is a 3 MiB tmpfs (mounting needs root, which CI has; the test fails
//! loudly otherwise rather than skipping). The source holds far more than 3 MiB of changes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kho_tests::compare::{Diff, ho_so_diff, seq_stats};
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::source::SourceDb;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output();
        let out = out.expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs for the disk-full test (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_outbox_disk_pauses_capture_and_recovers_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 60_000).unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let agent_dir = tmp.path().join("agent");
    let _disk = Tmpfs::mount(&agent_dir.join("data"), "3m");
    let dataset = DatasetSpec {
        name: "ho_so".into(),
        table: "ho_so".into(),
        key: vec!["id".into()],
        cursor: Some("updated_at".into()),
    };
    let agent =
        AgentProc::start(&agent_dir, &a, &hub.url(), &hub.ca_path(), &src.path, &[dataset], &AgentOptions::default());
    let last = std::cell::RefCell::new(Diff::default());
    wait_for(
        Duration::from_secs(120),
        "the warehouse to equal the source despite the 3 MiB outbox disk",
        || format!("last diff: {:?}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || {
            let d = ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap_or_else(|e| Diff {
                examples: vec![e.to_string()],
                missing: 1,
                ..Diff::default()
            });
            let done = d.is_empty();
            *last.borrow_mut() = d;
            done
        },
    );
    // The limit was really hit (60,000 changes are ~25 MB of outbox), reported, and survived.
    let log = std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default();
    assert!(log.contains("outbox disk is nearly full"), "the full disk was not reported: {}", agent.log_tail());
    assert!(log.contains("outbox disk has room again"), "capture did not resume by itself: {}", agent.log_tail());
    let (rows, distinct, _) = seq_stats(&hub.warehouse(), "ho_so").unwrap();
    assert_eq!((rows, distinct), (60_000, 60_000), "every row once, no change applied twice");
    let mut agent = agent;
    assert!(agent.is_running(), "the agent must keep running on a full disk");
}

/// The agent's log and outbox share one disk that is full at start: log lines that cannot be
/// written are dropped (reporting them used to panic inside the poll loop, after which the dataset
/// was never polled again), capture waits, and once space is freed the data arrives complete.
#[test]
fn full_disk_under_the_log_too_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 20_000).unwrap();
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let agent_dir = tmp.path().join("agent");
    let _disk = Tmpfs::mount(&agent_dir, "48m");
    // Fill the disk to its last ~200 KiB: the agent starts, but its log and outbox soon cannot grow.
    let filler = agent_dir.join("filler");
    std::fs::write(&filler, vec![b'x'; 48 * 1024 * 1024 - 200 * 1024]).unwrap();
    let dataset = DatasetSpec {
        name: "ho_so".into(),
        table: "ho_so".into(),
        key: vec!["id".into()],
        cursor: Some("updated_at".into()),
    };
    let opts = AgentOptions { poll_interval: "50ms", ..AgentOptions::default() };
    let mut agent = AgentProc::start(&agent_dir, &a, &hub.url(), &hub.ca_path(), &src.path, &[dataset], &opts);
    // Let it run on the full disk for a while, then free the space: capture must resume.
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.is_running(), "the agent must survive a full disk under its log");
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        Duration::from_secs(120),
        "the warehouse to equal the source after the full disk",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || ho_so_diff(&src.path, &hub.warehouse(), "ho_so").is_ok_and(|d| d.is_empty()),
    );
    assert!(agent.is_running(), "the agent must survive a full disk under its log");
}

/// The livelock CI once hit: the disk filled to the last byte while changes were in flight, so the
/// ack's own delete could not be written, nothing was freed, and the agent resent the same batch
/// for ever. The outbox's disk reserve makes that ack possible: it is released, the ack deletes
/// the changes, and the reserve is written back once there is room.
#[test]
fn an_ack_on_a_disk_full_to_the_last_byte_frees_space() {
    use kho_agent::outbox::{OUTBOX_FILE, Outbox, now_ms, reserve};
    use kho_shared::protocol::Op;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let _disk = Tmpfs::mount(&dir, "4m");
    let path = dir.join(OUTBOX_FILE);
    let mut outbox = Outbox::open(&path).unwrap();
    assert_eq!(reserve::missing(&path), 0, "the reserve is written when the outbox is opened");
    outbox.prepare_dataset("ho_so", kho_agent::config::Mode::Snapshot, None).unwrap();
    let body = format!("{{\"id\":1,\"ghi_chu\":\"{}\"}}", "x".repeat(300));
    let mut last = 0;
    for _ in 0..4 {
        outbox.begin_chunk(now_ms()).unwrap();
        for _ in 0..500 {
            last = outbox.push_change("ho_so", Op::Upsert, body.as_bytes()).unwrap();
        }
        outbox.commit_chunk().unwrap();
        outbox.checkpoint().unwrap(); // as capture does on a tight disk
    }
    // Fill whatever is left, to the last byte.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[b'x'; 4096]).is_ok() {}
        while f.write_all(b"x").is_ok() {}
    }
    let deleted = outbox.ack(last, now_ms()).expect("an ack on a full disk must succeed");
    assert_eq!(deleted, last, "every acknowledged change deleted");
    assert_eq!(outbox.depth().unwrap(), 0);
    assert!(outbox.space().unwrap() > 0, "the deleted changes are room for capture again");
    // With the filler gone there is room: the reserve, if the ack spent it, is written back.
    std::fs::remove_file(&filler).unwrap();
    outbox.begin_chunk(now_ms()).unwrap();
    let seq = outbox.push_change("ho_so", Op::Upsert, body.as_bytes()).unwrap();
    outbox.commit_chunk().unwrap();
    outbox.ack(seq, now_ms()).unwrap();
    assert_eq!(reserve::missing(&path), 0, "the reserve is written back once the disk has room");
}
