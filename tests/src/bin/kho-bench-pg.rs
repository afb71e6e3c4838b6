//! Initial-sync benchmark into PostgreSQL: a generated N-row department table (default
//! 1,000,000) synced by a real `kho-agent` into a real `kho-hub` with `[warehouse] kind =
//! "postgres"`, against the physical baseline of `psql \copy` of the same rows from a CSV file
//! into an equivalent table (same column types, same primary key), in the same run and server.
//!
//! Prints both wall times, rows/s, Kho's throughput as a share of the raw COPY's, and peak RSS of
//! the hub and the agent. Run it with `tests/bench-pg.sh` (release build). The server is the
//! tests' (`KHO_TEST_PG_ADMIN_URL`, default 127.0.0.1:5432, user postgres); each run uses fresh
//! databases, dropped at the end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, cpu_seconds, rss_kib, wait_for};
use kho_tests::source::SourceDb;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(1_000_000), |v| v.parse())?;
    let batch: u64 = arg(&args, "--batch").map_or(Ok(20_000), |v| v.parse())?;
    let writers: usize = arg(&args, "--writers").map_or(Ok(4), |v| v.parse())?;
    let keep = tempfile::Builder::new().prefix("kho-bench-pg-").tempdir()?;
    let dir = keep.path();
    println!(
        "kho-bench-pg: {rows} rows, batches of {batch} changes, {writers} writer(s), working in {}",
        dir.display()
    );

    let t = Instant::now();
    let src = SourceDb::create(&dir.join("so_y_te.sqlite"), rows)?;
    println!("generated source in {:.2} s", t.elapsed().as_secs_f64());

    let mut base_db = PgWarehouse::create();
    let baseline = baseline_copy(&src.path, &dir.join("ho_so.csv"), &mut base_db)?;
    println!("baseline  psql \\copy from CSV:        {:.2} s ({:.0} rows/s)", baseline, rows as f64 / baseline);
    drop(base_db);

    let mut pg = PgWarehouse::create();
    let spec = AgentSpec { id: "bench".into(), token: "bench-token".into(), datasets: vec!["ho_so".into()] };
    let hub = HubProc::start_with_warehouse(&dir.join("hub"), std::slice::from_ref(&spec), &pg.hub_toml(writers));
    let ds = DatasetSpec {
        name: "ho_so".into(),
        table: "ho_so".into(),
        key: vec!["id".into()],
        cursor: Some("updated_at".into()),
    };
    let opts = AgentOptions { batch_max_changes: batch, poll_interval: "1s", ..AgentOptions::default() };
    let t = Instant::now();
    let agent = AgentProc::start(&dir.join("agent"), &spec, &hub.url(), &hub.ca_path(), &src.path, &[ds], &opts);
    let (hub_pid, agent_pid) = (hub.pid().unwrap_or(0), agent.pid().unwrap_or(0));
    let backends_before = backend_cpu(&mut pg);
    let mut peak = (0u64, 0u64);
    wait_for(
        Duration::from_secs(1_800),
        "the initial sync",
        || agent.log_tail(),
        || {
            if let (Some(h), Some(a)) = (rss_kib(hub_pid), rss_kib(agent_pid)) {
                peak = (peak.0.max(h.1), peak.1.max(a.1));
            }
            pg.ledger("bench") >= rows
        },
    );
    let sync = t.elapsed().as_secs_f64();
    let (hub_cpu, agent_cpu) = (cpu_seconds(hub_pid).unwrap_or(0.0), cpu_seconds(agent_pid).unwrap_or(0.0));
    let backends = backend_cpu(&mut pg) - backends_before;
    let loaded = pg.count("SELECT count(*) FROM public.ho_so");
    anyhow::ensure!(loaded as u64 == rows, "warehouse holds {loaded} rows, expected {rows}");
    println!(
        "kho       agent → HTTPS → hub → PG:    {:.2} s ({:.0} rows/s) = {:.0}% of the raw COPY throughput",
        sync,
        rows as f64 / sync,
        100.0 * baseline / sync
    );
    println!(
        "CPU       hub {hub_cpu:.2} s, agent {agent_cpu:.2} s, the hub's PostgreSQL backends {backends:.2} s during the sync"
    );
    println!("peak RSS  hub {:.1} MiB, agent {:.1} MiB", peak.0 as f64 / 1024.0, peak.1 as f64 / 1024.0);
    // Batches' time from entering the apply queue to commit, summed: above 100 % of the wall time
    // the next batch was always waiting while one was applied (two in flight); below, the writer
    // sometimes waited for the next batch to arrive and be decoded.
    let metrics = Command::new("curl")
        .args(["-sk", &format!("{}/metrics", hub.url())])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let busy = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kho_hub_apply_latency_seconds_sum "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    if let Some(busy) = busy {
        println!(
            "queue     batches queued + applying {busy:.2} s summed, {:.0}% of the sync's wall time",
            100.0 * busy / sync
        );
    }
    let logged = pg.count("SELECT count(*) FROM kho.change_log");
    println!("change log rows {logged} (every change, in the same transactions)");
    if args.iter().any(|a| a == "--keep") {
        println!("kept {}", keep.keep().display());
    }
    Ok(())
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// Writes the source rows as CSV (not timed), creates the equivalent table and times `psql \copy`.
fn baseline_copy(src: &Path, csv: &Path, db: &mut PgWarehouse) -> anyhow::Result<f64> {
    {
        let conn = rusqlite::Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(csv)?);
        let mut stmt = conn.prepare(
            "SELECT id, ma_ho_so, linh_vuc, don_vi, trang_thai, ngay_nhan, ngay_hen_tra, so_tien, ghi_chu, updated_at FROM ho_so",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let mut fields = Vec::with_capacity(10);
            for i in 0..10 {
                let v: Option<String> = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                    rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                    rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                    rusqlite::types::ValueRef::Blob(_) => None,
                };
                fields.push(v.map_or(String::new(), |v| format!("\"{}\"", v.replace('"', "\"\""))));
            }
            use std::io::Write as _;
            writeln!(out, "{}", fields.join(","))?;
        }
    }
    db.client().batch_execute(
        "CREATE TABLE ho_so (id bigint PRIMARY KEY, ma_ho_so text, linh_vuc text, don_vi text, trang_thai text, \
         ngay_nhan date, ngay_hen_tra date, so_tien numeric, ghi_chu text, updated_at text)",
    )?;
    let t = Instant::now();
    let status = Command::new("psql")
        .arg(db.url())
        .arg("-q")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(format!("\\copy ho_so FROM '{}' WITH (FORMAT csv)", csv.display()))
        .status()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "psql \\copy failed");
    let n = db.count("SELECT count(*) FROM ho_so");
    anyhow::ensure!(n > 0, "baseline loaded no rows");
    Ok(secs)
}

/// CPU seconds used so far by the PostgreSQL backends serving the warehouse's database (the
/// hub's connections), other than this one.
fn backend_cpu(pg: &mut PgWarehouse) -> f64 {
    let pids = pg.counts(
        "SELECT pid::text, 0::bigint FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    pids.iter().filter_map(|(pid, _)| pid.parse().ok().and_then(cpu_seconds)).sum()
}
