//! Drop-folder benchmark: the same generated N-row table (default 200,000) synced by a real
//! `kho-agent` into a real `kho-hub` twice — first read from the SQLite file (the baseline, snapshot
//! mode), then exported as a UTF-8 CSV dropped into a folder (snapshot mode) — and then a second
//! CSV with 1 % of the rows changed (snapshot diff). Prints wall times, rows/s, the CSV/SQLite
//! ratio, and the agent's peak RSS for each run.
//!
//! `cargo run -p kho-tests --bin kho-bench-files [--release] -- --rows 200000` (build the agent and
//! hub binaries in the same profile first: `cargo build --bins`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, rss_kib, wait_for};
use kho_tests::source::SourceDb;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(200_000), |v| v.parse())?;
    let keep = tempfile::Builder::new().prefix("kho-bench-files-").tempdir()?;
    let dir = keep.path();
    println!("kho-bench-files: {rows} rows, working in {}", dir.display());
    let src = SourceDb::create(&dir.join("so_y_te.sqlite"), rows)?;
    let drop = dir.join("drop");
    std::fs::create_dir_all(&drop)?;
    let t = Instant::now();
    export_csv(&src.path, &drop.join("ho_so_1.csv"), None)?;
    println!(
        "exported CSV ({:.1} MiB) in {:.2} s",
        std::fs::metadata(drop.join("ho_so_1.csv"))?.len() as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let opts = AgentOptions { poll_interval: "100ms", ..AgentOptions::default() };
    // Baseline: the SQLite source.
    let spec = AgentSpec { id: "bench-sqlite".into(), token: "bench-token".into(), datasets: vec!["ho_so".into()] };
    let (secs, peak) = {
        let hub = HubProc::start(&dir.join("hub1"), std::slice::from_ref(&spec));
        let ds = DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None };
        let t = Instant::now();
        let agent = AgentProc::start(&dir.join("agent1"), &spec, &hub.url(), &hub.ca_path(), &src.path, &[ds], &opts);
        measure(&hub, &agent, "bench-sqlite", rows, t)
    };
    println!(
        "baseline  SQLite source, snapshot:  {secs:.2} s ({:.0} rows/s), agent peak RSS {:.1} MiB",
        rows as f64 / secs,
        peak as f64 / 1024.0
    );

    let spec2 = AgentSpec { id: "bench-csv".into(), token: "bench-token".into(), datasets: vec!["ho_so".into()] };
    let hub = HubProc::start(&dir.join("hub2"), std::slice::from_ref(&spec2));
    let toml = format!(
        "\n[[dataset]]\nname = \"ho_so\"\nkey = [\"id\"]\nmode = \"snapshot\"\npoll_interval = \"100ms\"\n[dataset.source]\nkind = \"folder\"\npath = \"{}\"\npattern = \"ho_so_*.csv\"\nsettle = \"0s\"\n",
        drop.display()
    );
    let t = Instant::now();
    let agent = AgentProc::start_with(&dir.join("agent2"), &spec2, &hub.url(), &hub.ca_path(), &toml, &opts);
    let (csv_secs, csv_peak) = measure(&hub, &agent, "bench-csv", rows, t);
    println!(
        "folder    CSV file, snapshot:         {csv_secs:.2} s ({:.0} rows/s) = {:.2}x the SQLite source time, agent peak RSS {:.1} MiB",
        rows as f64 / csv_secs,
        csv_secs / secs,
        csv_peak as f64 / 1024.0
    );

    // A second file with 1 % of the rows changed: the snapshot diff.
    let changed = rows / 100;
    export_csv(&src.path, &drop.join("ho_so_2.csv.part"), Some(100))?;
    let t = Instant::now();
    std::fs::rename(drop.join("ho_so_2.csv.part"), drop.join("ho_so_2.csv"))?;
    let (diff_secs, diff_peak) = measure(&hub, &agent, "bench-csv", rows + changed, t);
    println!(
        "folder    second CSV, 1 % changed:   {diff_secs:.2} s ({:.0} rows/s read), agent peak RSS {:.1} MiB",
        rows as f64 / diff_secs,
        diff_peak as f64 / 1024.0
    );
    Ok(())
}

/// Waits until the hub's ledger for `agent_id` reaches `seq`; returns seconds since `t` and the
/// agent's peak RSS (KiB).
fn measure(hub: &HubProc, agent: &AgentProc, agent_id: &str, seq: u64, t: Instant) -> (f64, u64) {
    let pid = agent.pid().unwrap_or(0);
    let mut peak = 0;
    wait_for(
        Duration::from_secs(1_800),
        "the sync",
        || agent.log_tail(),
        || {
            if let Some(r) = rss_kib(pid) {
                peak = peak.max(r.1);
            }
            hub.ledger(agent_id) >= seq
        },
    );
    (t.elapsed().as_secs_f64(), peak)
}

/// Writes `ho_so` as a UTF-8 CSV with a BOM; with `change_every`, every n-th row's `ghi_chu` is
/// changed.
fn export_csv(db: &Path, out: &Path, change_every: Option<i64>) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT * FROM ho_so ORDER BY id")?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    w.write_all("\u{feff}".as_bytes())?;
    writeln!(w, "{}", names.join(","))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let mut fields = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let v = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => String::new(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                    let mut s = String::from_utf8_lossy(t).into_owned();
                    if name == "ghi_chu" && change_every.is_some_and(|n| id % n == 0) {
                        s.push_str(" (đã sửa)");
                    }
                    format!("\"{}\"", s.replace('"', "\"\""))
                }
            };
            fields.push(v);
        }
        writeln!(w, "{}", fields.join(","))?;
    }
    w.flush()?;
    Ok(())
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}
