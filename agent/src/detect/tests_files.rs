#![allow(clippy::unwrap_used)]

//! Drop-folder capture against real files and a real outbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kho_shared::protocol::Op;
use tokio_util::sync::CancellationToken;

use super::tests::take;
use super::*;
use crate::config::SourceConfig;
use crate::source::folder::FolderSourceConfig;

struct Folder {
    _dir: tempfile::TempDir,
    drop: PathBuf,
    outbox: PathBuf,
    /// Each written file is one minute newer than the previous one.
    clock: std::cell::Cell<u64>,
}

impl Folder {
    fn new() -> Folder {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        std::fs::create_dir_all(&drop).unwrap();
        let outbox = dir.path().join("data").join("outbox.sqlite");
        Folder { _dir: dir, drop, outbox, clock: std::cell::Cell::new(0) }
    }

    fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.drop.join(name);
        std::fs::write(&p, content).unwrap();
        self.clock.set(self.clock.get() + 60);
        let t = SystemTime::now() - Duration::from_secs(100_000) + Duration::from_secs(self.clock.get());
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        p
    }

    fn capture(&self, mode: Mode, settle: Duration) -> Capture {
        let config = DatasetConfig {
            name: "ho_so".into(),
            table: None,
            query: None,
            key: vec!["ma".into()],
            mode,
            cursor_column: None,
            poll_interval: Duration::from_secs(1),
            schedule: None,
            source: SourceConfig::Folder(FolderSourceConfig {
                path: self.drop.clone(),
                pattern: "*.csv".into(),
                sheet: None,
                delimiter: None,
                settle,
                types: BTreeMap::new(),
                formats: BTreeMap::new(),
            }),
            text: Default::default(),
            cdc: Default::default(),
        };
        let outbox = Outbox::open(&self.outbox).unwrap();
        Capture::new(config, outbox, u64::MAX, CancellationToken::new(), Box::new(|| {}))
            .unwrap()
            .with_chunk_limits(2, 20)
    }
}

fn summary(path: &Path) -> Vec<String> {
    take(path)
        .iter()
        .map(|c| match c.op {
            Op::Upsert => {
                let r = c.row.as_ref().unwrap();
                format!("+{}={}", r["ma"], r["ten"].as_str().unwrap_or("null"))
            }
            Op::Delete => format!("-{}", c.key.as_ref().unwrap()["ma"]),
        })
        .collect()
}

#[test]
fn snapshot_files_are_diffed_and_read_once() {
    let f = Folder::new();
    f.write("a.csv", "ma,ten\n1,Hồ sơ một\n2,Hai\n3,Ba\n".as_bytes());
    let mut cap = f.capture(Mode::Snapshot, Duration::ZERO);
    let r = cap.poll().unwrap();
    assert_eq!((r.rows_read, r.changes), (3, 3));
    assert_eq!(summary(&f.outbox), ["+1=Hồ sơ một", "+2=Hai", "+3=Ba"]);
    assert_eq!(cap.poll().unwrap().rows_read, 0, "a processed file is not read again");

    f.write("b.csv", "\u{feff}ma,ten\n1,Hồ sơ một\n2,Hai (sửa)\n4,Bốn\n".as_bytes());
    let r = cap.poll().unwrap();
    assert_eq!((r.changes, r.deletes), (3, 1));
    assert_eq!(summary(&f.outbox), ["+2=Hai (sửa)", "+4=Bốn", "-3"]);

    // The same content dropped again under another name: remembered by hash.
    f.write("c.csv", "\u{feff}ma,ten\n1,Hồ sơ một\n2,Hai (sửa)\n4,Bốn\n".as_bytes());
    assert_eq!(cap.poll().unwrap().rows_read, 0);
    // A temporary name is never read.
    f.write("d.csv.tmp", b"ma,ten\n9,x\n");
    f.write(".e.csv", b"ma,ten\n9,x\n");
    assert_eq!(cap.poll().unwrap().rows_read, 0);
    assert!(summary(&f.outbox).is_empty());

    // The newer files archived away: an older, never-applied file is not the current state.
    f.write("a2.csv", b"ma,ten\n1,cu\n");
    let t = SystemTime::now() - Duration::from_secs(200_000);
    std::fs::File::options().write(true).open(f.drop.join("a2.csv")).unwrap().set_modified(t).unwrap();
    for n in ["a.csv", "b.csv", "c.csv"] {
        std::fs::remove_file(f.drop.join(n)).unwrap();
    }
    assert_eq!(cap.poll().unwrap().rows_read, 0);
    assert!(summary(&f.outbox).is_empty(), "the warehouse is not rolled back");
}

#[test]
fn a_malformed_file_is_refused_whole_until_it_changes() {
    let f = Folder::new();
    f.write("a.csv", b"ma,ten\n1,a\n2,b\n");
    let mut cap = f.capture(Mode::Snapshot, Duration::ZERO);
    cap.poll().unwrap();
    assert_eq!(summary(&f.outbox).len(), 2);

    // Rows before the bad line must not be applied, and no delete may come from a bad file.
    f.write("b.csv", b"ma,ten\n1,A\n2,B\n3,c,extra\n");
    let e = cap.poll().unwrap_err().to_string();
    assert!(e.contains("dataset ho_so") && e.contains("b.csv") && e.contains("line 4: 3 fields"), "{e}");
    let e = cap.poll().unwrap_err().to_string();
    assert!(e.contains("unchanged since refused"), "{e}");
    assert!(summary(&f.outbox).is_empty(), "nothing of a refused file is applied");
    let state = cap.outbox().dataset_state("ho_so").unwrap().unwrap();
    assert!(state.last_error.unwrap().contains("line 4"));

    // Fixed (new content, new hash): read.
    f.write("b.csv", b"ma,ten\n1,A\n2,B\n3,c\n");
    cap.poll().unwrap();
    assert_eq!(summary(&f.outbox), ["+1=A", "+2=B", "+3=c"]);
}

#[test]
fn an_unsettled_file_waits() {
    let f = Folder::new();
    let p = f.write("a.csv", b"ma,ten\n1,a\n");
    let mut cap = f.capture(Mode::Snapshot, Duration::from_secs(3600));
    assert_eq!(cap.poll().unwrap().rows_read, 0, "first sight only starts the settle clock");
    // Still growing: the clock restarts.
    std::fs::write(&p, b"ma,ten\n1,a\n2,b\n").unwrap();
    assert_eq!(cap.poll().unwrap().rows_read, 0);
    assert!(summary(&f.outbox).is_empty());
}

#[test]
fn cursor_mode_upserts_every_new_file_in_order() {
    let f = Folder::new();
    f.write("1.csv", b"ma,ten\n1,a\n2,b\n");
    f.write("2.csv", b"ma,ten\n2,B\n3,c\n");
    let mut cap = f.capture(Mode::Cursor, Duration::ZERO);
    let r = cap.poll().unwrap();
    assert_eq!(r.changes, 4);
    assert_eq!(summary(&f.outbox), ["+1=a", "+2=b", "+2=B", "+3=c"]);
    assert_eq!(cap.poll().unwrap().changes, 0);

    // A refused file stops the walk: the later file waits for it.
    f.write("3.csv", b"ma,ten\n4,d\n4,dd\n");
    f.write("4.csv", b"ma,ten\n5,e\n");
    let e = cap.poll().unwrap_err().to_string();
    assert!(e.contains("duplicate key [4]"), "{e}");
    assert!(summary(&f.outbox).is_empty());
    std::fs::remove_file(f.drop.join("3.csv")).unwrap();
    cap.poll().unwrap();
    assert_eq!(summary(&f.outbox), ["+5=e"]);
}
