//! End to end through ODBC (issue 13): the real `kho-agent` reads the department table on the
//! real PostgreSQL and MariaDB servers through Debian's ODBC drivers (`odbc-postgresql`,
//! `odbc-mariadb`, over unixODBC), in snapshot and cursor mode, and the warehouse is compared row
//! by row with the source — decimals exact, timestamps to the microsecond, Vietnamese text intact —
//! after the first sync and again after the agent was killed (-9), the source changed and the
//! agent restarted. The drivers are required: `.ci/run` installs them.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::remote::{Kind, RemoteDb, TextRows, warehouse_rows};

const CONVERGE: Duration = Duration::from_secs(90);

fn wait_equal(db: &mut RemoteDb, hub: &HubProc, agent: &AgentProc, dataset: &str, live_only: bool) {
    let want = db.rows();
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        CONVERGE,
        &format!("warehouse table {dataset} to equal the source table {}", db.table),
        || format!("{}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || {
            let got: TextRows = match warehouse_rows(&hub.warehouse(), dataset, live_only) {
                Ok(rows) => rows,
                Err(e) => {
                    *last.borrow_mut() = format!("warehouse not readable yet: {e}");
                    return false;
                }
            };
            let equal = if live_only { got == want } else { want.iter().all(|(k, v)| got.get(k) == Some(v)) };
            if !equal {
                let example = want.iter().find(|(k, v)| got.get(k) != Some(v)).map(|(k, v)| (k, v, got.get(k)));
                *last.borrow_mut() =
                    format!("source {} rows, warehouse {} rows; first difference: {example:?}", want.len(), got.len());
            }
            equal
        },
    );
}

fn run(kind: Kind) {
    let driver = match kind {
        Kind::Postgres => "PostgreSQL Unicode",
        Kind::Mysql => "MariaDB Unicode",
    };
    let installed = std::fs::read_to_string("/etc/odbcinst.ini").unwrap_or_default();
    assert!(
        installed.contains(&format!("[{driver}]")),
        "the ODBC driver {driver:?} is required (.ci/run installs odbc-postgresql and odbc-mariadb)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut db = RemoteDb::create(kind);
    db.insert_range(1, 2_000);
    let a = AgentSpec {
        id: "so-tai-nguyen".into(),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: vec!["odbc_snap".into(), "odbc_cur".into(), "odbc_query".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let opts = AgentOptions::default();
    let source = match kind {
        Kind::Postgres => {
            "kind = \"odbc\"\nconnection_string = \"Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;UseDeclareFetch=1\"\nuser = \"postgres\"\n"
        }
        Kind::Mysql => {
            "kind = \"odbc\"\nconnection_string = \"Driver={MariaDB Unicode};Server=127.0.0.1;Port=3306;Database=test;CHARSET=utf8mb4\"\nuser = \"root\"\n"
        }
    };
    let ds = |name: &str, cursor: Option<&str>| DatasetSpec {
        name: name.into(),
        table: db.table.clone(),
        key: vec!["id".into()],
        cursor: cursor.map(Into::into),
    };
    let toml: String =
        [ds("odbc_snap", None), ds("odbc_cur", Some("sua_luc"))].iter().map(|d| d.toml(source, &opts)).collect();
    // A query instead of a table, in cursor mode.
    let toml = format!(
        "{toml}\n[[dataset]]\nname = \"odbc_query\"\nquery = \"SELECT id, ten, so_tien, sua_luc FROM {}\"\n\
         key = [\"id\"]\nmode = \"cursor\"\ncursor_column = \"sua_luc\"\npoll_interval = \"200ms\"\n[dataset.source]\n{source}",
        db.table
    );
    let mut agent = AgentProc::start_with(&tmp.path().join("agent"), &a, &hub.url(), &hub.ca_path(), &toml, &opts);
    wait_equal(&mut db, &hub, &agent, "odbc_snap", true);
    wait_equal(&mut db, &hub, &agent, "odbc_cur", false);
    wait_equal(&mut db, &hub, &agent, "odbc_query", false);

    agent.kill9();
    db.update((1..=2_000).step_by(37), "Đã trả kết quả — cập nhật qua ODBC");
    db.insert_range(2_001, 2_040);
    db.exec("DELETE FROM {t} WHERE id IN (3, 4, 1999)");
    agent.spawn();
    wait_equal(&mut db, &hub, &agent, "odbc_snap", true);
    wait_equal(&mut db, &hub, &agent, "odbc_cur", false);
    wait_equal(&mut db, &hub, &agent, "odbc_query", false);
    let all = warehouse_rows(&hub.warehouse(), "odbc_snap", false).unwrap();
    let live = warehouse_rows(&hub.warehouse(), "odbc_snap", true).unwrap();
    assert_eq!((all.len(), live.len()), (2_040, 2_037), "deletes are soft deletes");

    // `check` sees the ODBC source's columns and portable types.
    let out = std::process::Command::new(kho_tests::bin_path("kho-agent"))
        .arg("--config")
        .arg(&agent.config)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("so_tien") && text.contains("decimal") && text.contains("timestamp"), "{text}");
    assert!(text.contains("rows: 2037, key unique and never NULL"), "{text}");
    assert!(text.contains("source: ") && text.contains("through ODBC"), "{text}");
    // Advice about drivers that hold whole results in memory: not needed with UseDeclareFetch=1.
    assert_eq!(text.contains("holds whole results"), kind == Kind::Mysql, "{text}");
    assert!(agent.stop(), "agent did not stop cleanly\n{}", agent.log_tail());
}

#[test]
fn postgres_through_odbc_reaches_the_warehouse_intact_through_restart() {
    run(Kind::Postgres);
}

#[test]
fn mariadb_through_odbc_reaches_the_warehouse_intact_through_restart() {
    run(Kind::Mysql);
}
