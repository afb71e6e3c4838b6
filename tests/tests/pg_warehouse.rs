//! End to end into PostgreSQL: real `kho-agent` and `kho-hub` processes, the hub configured with
//! `[warehouse] kind = "postgres"` on a fresh database per test (see `kho_tests::pgwh`), and
//! row-by-row comparison of the SQLite source with the PostgreSQL table. Covers initial sync,
//! updates, deletes, a new column, hostile column names, kill -9 of the hub mid-load, and two
//! agents writing different datasets at the same time.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::compare::Diff;
use kho_tests::cut_proxy::CutProxy;
use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, free_port, wait_for};
use kho_tests::source::SourceDb;

const CONVERGE: Duration = Duration::from_secs(90);

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

fn wait_converged(pg: &mut PgWarehouse, src: &SourceDb, hub: &HubProc, agent: &AgentProc, dataset: &str) {
    wait_converged_in(pg, "public", src, hub, agent, dataset);
}

fn wait_converged_in(
    pg: &mut PgWarehouse,
    schema: &str,
    src: &SourceDb,
    hub: &HubProc,
    agent: &AgentProc,
    dataset: &str,
) {
    let last = std::cell::RefCell::new(Diff::default());
    wait_for(
        CONVERGE,
        &format!("PostgreSQL table {dataset} to equal the source"),
        || format!("last diff: {:?}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || {
            let d = pg.ho_so_diff(&src.path, schema, dataset);
            let done = d.is_empty();
            *last.borrow_mut() = d;
            done
        },
    );
}

/// A real agent in `dir/agent` syncing the source's `ho_so` table in cursor mode.
fn start_cursor_agent(
    dir: &std::path::Path,
    a: &AgentSpec,
    hub: &HubProc,
    src: &SourceDb,
    opts: &AgentOptions,
) -> AgentProc {
    AgentProc::start(
        &dir.join("agent"),
        a,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so", Some("updated_at"))],
        opts,
    )
}

#[test]
fn snapshot_sync_updates_deletes_new_and_hostile_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgWarehouse::create();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 2_000).unwrap();
    let a = spec("so-y-te-01", &["ho_so"]);
    let hub = HubProc::start_with_warehouse(&tmp.path().join("hub"), std::slice::from_ref(&a), &pg.hub_toml(2));
    let agent = AgentProc::start(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so", None)],
        &AgentOptions::default(),
    );
    wait_converged(&mut pg, &src, &hub, &agent, "ho_so");

    src.insert_range(2_001, 2_050).unwrap();
    src.update((1..=2_000).step_by(97), "Đã trả kết quả").unwrap();
    src.delete([5, 6, 7, 1_999]).unwrap();
    wait_converged(&mut pg, &src, &hub, &agent, "ho_so");
    assert_eq!(pg.count("SELECT count(*) FROM public.ho_so WHERE _kho_deleted"), 4, "deletes are soft");
    let (rows, distinct, max) = pg.seq_stats("public", "ho_so");
    assert_eq!(rows, distinct, "two rows carry the same change sequence");
    assert_eq!(max, pg.ledger("so-y-te-01"), "ledger and newest applied change agree");
    assert!(pg.count("SELECT count(*) FROM kho.change_log WHERE dataset = 'ho_so'") >= 2_000 + 50 + 21 + 4);

    // A new column, and columns whose names would break unquoted SQL: quotes, a semicolon,
    // Vietnamese letters and spaces.
    src.execute(
        "ALTER TABLE ho_so ADD COLUMN so_dien_thoai TEXT;
         ALTER TABLE ho_so ADD COLUMN \"Họ và tên người nộp\" TEXT;
         ALTER TABLE ho_so ADD COLUMN \"x\"\"; DROP TABLE kho.ledger; --\" TEXT;
         UPDATE ho_so SET so_dien_thoai = '0212 385 ' || printf('%04d', id),
                          \"Họ và tên người nộp\" = 'Lường Thị Én',
                          \"x\"\"; DROP TABLE kho.ledger; --\" = 'vô hại'
           WHERE id % 100 = 0;",
    )
    .unwrap();
    wait_for(
        CONVERGE,
        "the new columns and their values in PostgreSQL",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || {
            pg.client()
            .query_one(
                "SELECT count(*) FROM public.ho_so WHERE so_dien_thoai LIKE '0212 385 %' AND \"Họ và tên người nộp\" = 'Lường Thị Én' \
                 AND \"x\"\"; DROP TABLE kho.ledger; --\" = 'vô hại' AND NOT _kho_deleted",
                &[],
            )
            .is_ok_and(|r| r.get::<_, i64>(0) == 20)
        },
    );
    wait_converged(&mut pg, &src, &hub, &agent, "ho_so");
    assert_eq!(pg.count("SELECT count(*) FROM kho.ledger"), 1, "the ledger is still there");
    let mut hub = hub;
    assert!(hub.stop(), "the hub stops cleanly on SIGTERM\n{}", hub.log_tail());
}

#[test]
fn hub_killed_repeatedly_during_a_100k_load_loses_and_duplicates_nothing() {
    const ROWS: u64 = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgWarehouse::create();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), ROWS).unwrap();
    let a = spec("crash-hub", &["ho_so"]);
    let mut hub = HubProc::start_with_warehouse(&tmp.path().join("hub"), std::slice::from_ref(&a), &pg.hub_toml(2));
    let opts = AgentOptions { batch_max_changes: 1_000, poll_interval: "300ms", ..AgentOptions::default() };
    let agent = start_cursor_agent(tmp.path(), &a, &hub, &src, &opts);
    let mut killed_mid_load = 0;
    for round in 0..5u64 {
        std::thread::sleep(Duration::from_millis(fastrand::u64(300..1_200)));
        if pg.ledger("crash-hub") < ROWS {
            killed_mid_load += 1;
        }
        hub.kill9();
        let base = ROWS + 1 + round * 100;
        src.insert_range(base, base + 99).unwrap();
        src.update((1 + round..ROWS).step_by(4_001), "Đã trả kết quả").unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..500)));
        hub.spawn();
    }
    assert!(killed_mid_load >= 2, "kills should land during the load (got {killed_mid_load})");
    wait_converged(&mut pg, &src, &hub, &agent, "ho_so");
    wait_for(
        Duration::from_secs(60),
        "the outbox to drain",
        || agent.log_tail(),
        || agent.status()["outbox"]["depth"].as_u64() == Some(0),
    );
    let acked = agent.status()["outbox"]["acked_through"].as_u64().expect("acked_through");
    assert_eq!(pg.ledger("crash-hub"), acked, "hub ledger and agent's acked sequence agree");
    let (rows, distinct, max) = pg.seq_stats("public", "ho_so");
    assert_eq!(rows, src.count().unwrap(), "0 lost, 0 duplicated");
    assert_eq!(rows, distinct, "two warehouse rows carry the same change sequence");
    assert!(max <= acked, "a row carries sequence {max} beyond the acked {acked}");
    // The change log holds each applied change exactly once, even across the kills.
    let dup =
        pg.count("SELECT count(*) FROM (SELECT agent, seq FROM kho.change_log GROUP BY 1, 2 HAVING count(*) > 1) d");
    assert_eq!(dup, 0, "a change was logged twice");
    assert_eq!(pg.count("SELECT count(*) FROM kho.change_log") as u64, acked, "every change logged once");
}

/// Two agents at once through separate writer connections; the dataset the catalogue assigns to
/// a department lands in that department's schema, the other in `public`.
#[test]
fn two_agents_write_different_datasets_concurrently() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgWarehouse::create();
    let mut src_a = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 20_000).unwrap();
    let mut src_b = SourceDb::create(&tmp.path().join("so_tai_chinh.sqlite"), 15_000).unwrap();
    let (a, b) = (spec("so-y-te", &["ho_so_yte"]), spec("so-tai-chinh", &["ho_so_tc"]));
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(
        hub_dir.join("catalog.toml"),
        "[[department]]\ncode = \"so_y_te\"\nname = \"Sở Y tế\"\ncontact = { name = \"Văn phòng Sở\", phone = \"0212 385 0010\" }\n\n\
         [[dataset]]\nid = \"ho_so_yte\"\ntitle = \"Hồ sơ y tế\"\ndepartment = \"so_y_te\"\ncadence = \"daily\"\n\
         update_kind = \"sync\"\n",
    )
    .unwrap();
    let warehouse = format!("{}\n[catalog]\npath = \"catalog.toml\"\n", pg.hub_toml(4));
    let hub = HubProc::start_with_warehouse(&hub_dir, &[a.clone(), b.clone()], &warehouse);
    let opts = AgentOptions { batch_max_changes: 2_000, ..AgentOptions::default() };
    let agent_a = AgentProc::start(
        &tmp.path().join("a"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &src_a.path,
        &[ho_so("ho_so_yte", None)],
        &opts,
    );
    let agent_b = AgentProc::start(
        &tmp.path().join("b"),
        &b,
        &hub.url(),
        &hub.ca_path(),
        &src_b.path,
        &[ho_so("ho_so_tc", Some("updated_at"))],
        &opts,
    );
    src_a.update((1..=20_000).step_by(13), "Quá hạn").unwrap();
    src_b.insert_range(15_001, 15_500).unwrap();
    wait_converged_in(&mut pg, "so_y_te", &src_a, &hub, &agent_a, "ho_so_yte");
    wait_converged_in(&mut pg, "public", &src_b, &hub, &agent_b, "ho_so_tc");
    assert_eq!(pg.seq_stats("so_y_te", "ho_so_yte").0, 20_000);
    assert_eq!(pg.seq_stats("public", "ho_so_tc").0, 15_500);
    let agents = pg.count(
        "SELECT count(DISTINCT _kho_agent) FROM (SELECT _kho_agent FROM so_y_te.ho_so_yte UNION ALL \
         SELECT _kho_agent FROM public.ho_so_tc) u",
    );
    assert_eq!(agents, 2);
    assert_eq!(
        pg.count("SELECT count(*) FROM kho.datasets WHERE dataset = 'ho_so_yte' AND schema_name = 'so_y_te'"),
        1
    );
}

/// A hub started before its PostgreSQL is reachable waits for it (logging why) instead of
/// exiting, then serves as usual once the server answers.
#[test]
fn the_hub_waits_for_an_unreachable_warehouse_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = PgWarehouse::create();
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 300).unwrap();
    let a = spec("so-y-te-01", &["ho_so"]);
    // The warehouse URL points at a port nobody listens on yet.
    let pg_port = free_port();
    let url = pg.url().replace(":5432/", &format!(":{pg_port}/"));
    assert_ne!(url, pg.url(), "the test database must be on port 5432: {}", pg.url());
    let toml = format!("kind = \"postgres\"\nurl = \"{url}\"\nwriters = 2\n");
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        CutProxy::start_on(pg_port, 5432)
    });
    let hub = HubProc::start_with_warehouse(&tmp.path().join("hub"), std::slice::from_ref(&a), &toml);
    let _proxy = opener.join().unwrap();
    let log = hub.log_tail();
    assert!(log.contains("cannot reach the warehouse"), "the hub says why it waits:\n{log}");
    let agent = start_cursor_agent(tmp.path(), &a, &hub, &src, &AgentOptions::default());
    wait_converged(&mut pg, &src, &hub, &agent, "ho_so");
}
