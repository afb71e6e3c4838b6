//! CDC benchmark: change → warehouse latency and the highest sustained change rate of
//! `mode = "cdc"` (issue 10), with the real `kho-agent` streaming from the local PostgreSQL
//! (wal_level = logical) into a real `kho-hub` (SQLite warehouse).
//!
//! A writer thread inserts rows into its own database at a fixed rate, in transactions of
//! `rate / 100` rows (100 commits per second), recording when each commit returned. A reader polls
//! the warehouse every 10 ms for the highest id applied; a row's latency is the first time the
//! reader saw it minus its commit time (so it includes up to 10 ms of polling granularity).
//!
//! 1. `--rate` changes/s (default 1,000) for `--seconds` (default 30): latency p50 / p99 / max.
//! 2. Rates doubling from 1,000: the highest at which, after 10 s of load, the warehouse caught
//!    up within 2 s of the writer stopping (the agent kept up); and as the baseline in the same
//!    run, the rate PostgreSQL itself committed when the writer was asked for more than it
//!    could do.
//!
//! Prints the numbers and the agent's and hub's peak RSS. Run with `tests/bench-cdc.sh`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kho_tests::cdc_db::CdcDb;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, rss_kib, wait_for};

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// Commit times of the writer's batches: (last id of the batch, when its commit returned).
type Commits = Vec<(i64, Instant)>;

/// Inserts `rate` rows/s from id `first` for `secs`; returns the commit log.
fn write_load(db: &CdcDb, first: i64, rate: u64, secs: u64) -> Commits {
    let mut c = db.client();
    let per_tx = (rate / 100).max(1) as i64;
    let tick = Duration::from_millis(10);
    let start = Instant::now();
    let mut commits = Vec::new();
    let mut next = first;
    let total = (rate * secs) as i64;
    let mut n = 0i64;
    while n < total {
        let due = start + tick * (n / per_tx) as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let last = next + per_tx - 1;
        c.batch_execute(&format!(
            "INSERT INTO lat SELECT g, 'Hồ sơ tiếp nhận số ' || g, g * 1.25, clock_timestamp() FROM generate_series({next}, {last}) g"
        ))
        .expect("insert");
        commits.push((last, Instant::now()));
        next = last + 1;
        n += per_tx;
    }
    commits
}

/// Polls the warehouse's highest id every 10 ms until `stop`; returns (id, first seen).
fn watch(warehouse: std::path::PathBuf, stop: Arc<AtomicBool>) -> Vec<(i64, Instant)> {
    let mut seen = Vec::new();
    let mut conn = None;
    let mut last = 0i64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = rusqlite::Connection::open_with_flags(&warehouse, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok();
        }
        if let Some(c) = &conn
            && let Ok(Some(max)) = c.query_row("SELECT max(id) FROM lat", [], |r| r.get::<_, Option<i64>>(0))
            && max > last
        {
            seen.push((max, Instant::now()));
            last = max;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// Latencies (ms) of every commit: first time the warehouse showed an id ≥ its last id.
fn latencies(commits: &Commits, seen: &[(i64, Instant)]) -> Vec<f64> {
    let mut out = Vec::with_capacity(commits.len());
    let mut j = 0;
    for (id, at) in commits {
        while j < seen.len() && seen[j].0 < *id {
            j += 1;
        }
        if let Some((_, t)) = seen.get(j) {
            out.push(t.saturating_duration_since(*at).as_secs_f64() * 1000.0);
        }
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = arg(&args, "--rate").map_or(Ok(1_000), str::parse)?;
    let secs: u64 = arg(&args, "--seconds").map_or(Ok(30), str::parse)?;
    let max_rate: u64 = arg(&args, "--max-rate").map_or(Ok(32_000), str::parse)?;

    let db = CdcDb::create();
    db.client()
        .batch_execute("CREATE TABLE lat (id bigint PRIMARY KEY, ten text, so_tien numeric(18,2), luc timestamptz)")?;
    let keep = tempfile::Builder::new().prefix("kho-bench-cdc-").tempdir()?;
    let dir = keep.path();
    let spec = AgentSpec { id: "bench-cdc".into(), token: "bench-token".into(), datasets: vec!["lat".into()] };
    let hub = HubProc::start(&dir.join("hub"), std::slice::from_ref(&spec));
    let toml = format!(
        "\n[[dataset]]\nname = \"lat\"\ntable = \"lat\"\nkey = [\"id\"]\nmode = \"cdc\"\npoll_interval = \"1s\"\n\
         [dataset.source]\nkind = \"postgres\"\nurl = \"{}\"\n",
        db.url
    );
    let opts = AgentOptions::default();
    let agent = AgentProc::start_with(&dir.join("agent"), &spec, &hub.url(), &hub.ca_path(), &toml, &opts);
    // Streaming has begun once the slot exists and a first row went through.
    db.client().batch_execute("INSERT INTO lat VALUES (0, 'khởi động', 0, now())")?;
    wait_for(
        Duration::from_secs(120),
        "the first row in the warehouse",
        || agent.log_tail(),
        || {
            rusqlite::Connection::open(hub.warehouse())
                .and_then(|c| c.query_row("SELECT count(*) FROM lat", [], |r| r.get::<_, i64>(0)))
                .is_ok_and(|n| n > 0)
        },
    );
    let pids = (hub.pid().unwrap_or(0), agent.pid().unwrap_or(0));
    let peak = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(h), Some(a)) = (rss_kib(pids.0), rss_kib(pids.1)) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (p.0.max(h.1), p.1.max(a.1));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // 1. Latency under a steady load.
    let run = |first: i64, rate: u64, secs: u64| -> (Commits, Vec<(i64, Instant)>, f64) {
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (w, s) = (hub.warehouse(), Arc::clone(&stop));
            std::thread::spawn(move || watch(w, s))
        };
        let t = Instant::now();
        let commits = write_load(&db, first, rate, secs);
        let wrote = t.elapsed().as_secs_f64();
        let last = commits.last().map_or(first, |c| c.0);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let done = rusqlite::Connection::open(hub.warehouse())
                .and_then(|c| c.query_row("SELECT coalesce(max(id), 0) FROM lat", [], |r| r.get::<_, i64>(0)))
                .is_ok_and(|m| m >= last);
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(30));
        stop.store(true, Ordering::Relaxed);
        let seen = reader.join().unwrap_or_default();
        (commits, seen, wrote)
    };
    let (commits, seen, wrote) = run(1, rate, secs);
    let mut lat = latencies(&commits, &seen);
    lat.sort_by(f64::total_cmp);
    let written = commits.last().map_or(0, |c| c.0);
    println!(
        "steady load: {written} rows in {} transactions over {wrote:.1} s ({:.0} changes/s asked {rate})",
        commits.len(),
        written as f64 / wrote
    );
    println!(
        "latency change → warehouse: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} commits measured)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len()
    );

    // 2. Highest sustained rate.
    let mut first = written + 1;
    let mut best = 0u64;
    let mut r = 1_000u64;
    while r <= max_rate {
        let (commits, seen, wrote) = run(first, r, 10);
        let n = commits.last().map_or(first, |c| c.0) - first + 1;
        let achieved = n as f64 / wrote;
        let end = commits.last().map(|c| c.1);
        let caught = match (end, seen.last()) {
            (Some(end), Some(s)) => s.1.saturating_duration_since(end).as_secs_f64(),
            _ => f64::NAN,
        };
        let mut lat = latencies(&commits, &seen);
        lat.sort_by(f64::total_cmp);
        println!(
            "rate {r:>6}/s asked: PostgreSQL committed {achieved:.0}/s, warehouse caught up {caught:.2} s after the \
             writer stopped, p50 {:.0} ms, p99 {:.0} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        first += n;
        if caught <= 2.0 {
            best = achieved as u64;
        }
        if caught > 2.0 || achieved < r as f64 * 0.9 {
            println!(
                "max sustained: {best} changes/s kept up with (baseline: PostgreSQL alone committed {achieved:.0}/s in this step; \
                 ratio {:.2})",
                best as f64 / achieved
            );
            break;
        }
        r *= 2;
    }
    sampling.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let p = *peak.lock().unwrap_or_else(|e| e.into_inner());
    println!("peak RSS  agent {:.1} MiB, hub {:.1} MiB", p.1 as f64 / 1024.0, p.0 as f64 / 1024.0);
    drop(agent);
    drop(hub);
    Ok(())
}
