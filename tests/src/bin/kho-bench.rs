//! Initial-sync benchmark: a generated N-row department table (default 1,000,000) synced by a real
//! `kho-agent` into a real `kho-hub` with the embedded SQLite warehouse, against a baseline that
//! copies the same rows between two SQLite files with one `INSERT … SELECT` (the fastest a local
//! SQLite-to-SQLite copy gets, with no network, encoding or bookkeeping).
//!
//! Prints wall times, rows/s, the ratio to the baseline, peak and idle RSS of both processes, and
//! the latency from a source update to the warehouse. Run it with `tests/bench.sh` (release build).
//!
//! `--transport mqtt` runs the HTTPS sync and then the same sync through a local Mosquitto over
//! TLS (fresh hub and agent each), prints the MQTT/HTTPS time ratio, and measures the latency over
//! MQTT; `--samples N` sets the number of latency samples (default 20).

use std::path::Path;
use std::time::{Duration, Instant};

use kho_tests::mosquitto::Broker;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, cpu_seconds, rss_kib, wait_for};
use kho_tests::source::SourceDb;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(1_000_000), |v| v.parse())?;
    let batch: u64 = arg(&args, "--batch").map_or(Ok(20_000), |v| v.parse())?;
    let poll: &'static str = if args.iter().any(|a| a == "--fast-poll") { "100ms" } else { "1s" };
    let keep = tempfile::Builder::new().prefix("kho-bench-").tempdir()?;
    let dir = keep.path();
    println!("kho-bench: {rows} rows, batches of {batch} changes, working in {}", dir.display());

    let t = Instant::now();
    let mut src = SourceDb::create(&dir.join("so_y_te.sqlite"), rows)?;
    println!("generated source in {:.2} s", t.elapsed().as_secs_f64());

    let baseline = baseline_copy(&src.path, &dir.join("baseline.sqlite"))?;
    println!("baseline  SQLite INSERT…SELECT copy: {:.2} s ({:.0} rows/s)", baseline, rows as f64 / baseline);

    let transport = arg(&args, "--transport").unwrap_or("https");
    let (https, mqtt) = match transport {
        "https" => (true, false),
        "mqtt" => (true, true),
        other => anyhow::bail!("--transport must be https or mqtt (mqtt also runs https for the ratio), not {other:?}"),
    };
    let spec = AgentSpec { id: "bench".into(), token: "bench-token".into(), datasets: vec!["ho_so".into()] };
    let broker = if mqtt { Some(Broker::start(&dir.join("broker"), &[&spec.id])) } else { None };
    let mut https_time = None;
    let mut last = None;
    if https {
        let run = sync(dir, "https", &spec, &src, batch, poll, rows, baseline, None)?;
        https_time = Some(run.seconds);
        last = Some(run);
    }
    if let Some(broker) = &broker {
        drop(last.take());
        let run = sync(dir, "mqtt", &spec, &src, batch, poll, rows, baseline, Some(broker))?;
        if let Some(h) = https_time {
            println!("ratio     MQTT / HTTPS initial sync time: {:.2}", run.seconds / h);
        }
        last = Some(run);
    }
    let Some(run) = last else { anyhow::bail!("nothing ran") };
    let (hub, agent) = (&run.hub, &run.agent);
    let (hub_pid, agent_pid) = (hub.pid().unwrap_or(0), agent.pid().unwrap_or(0));

    std::thread::sleep(Duration::from_secs(15));
    let idle_agent = rss_kib(agent_pid).map_or(0, |r| r.0);
    let idle_hub = rss_kib(hub_pid).map_or(0, |r| r.0);
    println!(
        "idle RSS  hub {:.1} MiB, agent {:.1} MiB (15 s after the sync)",
        idle_hub as f64 / 1024.0,
        idle_agent as f64 / 1024.0
    );

    let mut lat = Vec::new();
    let conn = rusqlite::Connection::open_with_flags(hub.warehouse(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let samples: u64 = arg(&args, "--samples").map_or(Ok(20), |v| v.parse())?;
    for i in 0..samples {
        let id = 1 + i * 997 % rows;
        let marker = format!("bench-{i}");
        let t = Instant::now();
        src.update([id], &marker)?;
        loop {
            let got: Option<String> =
                conn.query_row("SELECT trang_thai FROM ho_so WHERE id = ?1", [id as i64], |r| r.get(0)).ok();
            if got.as_deref() == Some(marker.as_str()) {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("update of row {id} did not reach the warehouse in 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..300)));
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: usize| lat[((lat.len() * p).div_ceil(100)).saturating_sub(1).min(lat.len() - 1)];
    println!(
        "latency   source update → warehouse over {} (poll every {poll}, {} samples): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        run.transport.to_uppercase(),
        lat.len(),
        pct(50),
        pct(95),
        pct(99),
        lat[lat.len() - 1]
    );
    Ok(())
}

/// A finished initial sync whose processes are still running.
struct Run {
    transport: &'static str,
    seconds: f64,
    // Field order is drop order: the agent stops before its hub.
    agent: AgentProc,
    hub: HubProc,
}

/// Starts a fresh hub and agent over `transport` and waits for the initial sync; prints its numbers.
#[allow(clippy::too_many_arguments)]
fn sync(
    dir: &Path,
    transport: &'static str,
    spec: &AgentSpec,
    src: &SourceDb,
    batch: u64,
    poll: &'static str,
    rows: u64,
    baseline: f64,
    broker: Option<&Broker>,
) -> anyhow::Result<Run> {
    let hub_extra = broker.map(Broker::hub_toml).unwrap_or_default();
    let hub = HubProc::start_with(&dir.join(format!("hub-{transport}")), std::slice::from_ref(spec), &hub_extra);
    let ds = DatasetSpec {
        name: "ho_so".into(),
        table: "ho_so".into(),
        key: vec!["id".into()],
        cursor: Some("updated_at".into()),
    };
    let mut opts = AgentOptions { batch_max_changes: batch, poll_interval: poll, ..AgentOptions::default() };
    let (url, ca) = match broker {
        Some(b) => {
            opts.hub_extra = b.agent_hub_toml(&spec.id, "30s");
            (b.url(), b.ca_path())
        }
        None => (hub.url(), hub.ca_path()),
    };
    let t = Instant::now();
    let agent = AgentProc::start(&dir.join(format!("agent-{transport}")), spec, &url, &ca, &src.path, &[ds], &opts);
    let (hub_pid, agent_pid) = (hub.pid().unwrap_or(0), agent.pid().unwrap_or(0));
    let mut peak = (0u64, 0u64);
    wait_for(
        Duration::from_secs(1_800),
        "the initial sync",
        || agent.log_tail(),
        || {
            if let (Some(h), Some(a)) = (rss_kib(hub_pid), rss_kib(agent_pid)) {
                peak = (peak.0.max(h.1), peak.1.max(a.1));
            }
            hub.ledger("bench") >= rows
        },
    );
    let seconds = t.elapsed().as_secs_f64();
    let (hub_cpu, agent_cpu) = (cpu_seconds(hub_pid).unwrap_or(0.0), cpu_seconds(agent_pid).unwrap_or(0.0));
    println!(
        "kho       initial sync over {:<5}:     {:.2} s ({:.0} rows/s) = {:.1}x the baseline time",
        transport.to_uppercase(),
        seconds,
        rows as f64 / seconds,
        seconds / baseline
    );
    println!(
        "CPU       hub {hub_cpu:.2} s, agent {agent_cpu:.2} s during the sync ({:.0}% of the 2 cores' {:.1} s)",
        100.0 * (hub_cpu + agent_cpu) / (2.0 * seconds),
        2.0 * seconds
    );
    println!("peak RSS  hub {:.1} MiB, agent {:.1} MiB", peak.0 as f64 / 1024.0, peak.1 as f64 / 1024.0);
    Ok(Run { transport, seconds, agent, hub })
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

/// Copies the source table into a fresh SQLite file with the same schema; returns seconds.
fn baseline_copy(src: &Path, dst: &Path) -> rusqlite::Result<f64> {
    let conn = rusqlite::Connection::open(dst)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
    conn.execute("ATTACH DATABASE ?1 AS src", [src.to_string_lossy()])?;
    let t = Instant::now();
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE ho_so (
            id INTEGER PRIMARY KEY, ma_ho_so TEXT NOT NULL, linh_vuc TEXT, don_vi TEXT,
            trang_thai TEXT, ngay_nhan DATE, ngay_hen_tra DATE, so_tien NUMERIC, ghi_chu TEXT,
            updated_at TEXT NOT NULL);
         INSERT INTO ho_so SELECT * FROM src.ho_so;
         COMMIT;",
    )?;
    Ok(t.elapsed().as_secs_f64())
}
