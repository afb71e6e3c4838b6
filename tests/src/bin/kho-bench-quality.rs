//! Data-quality benchmark: the same N-row initial sync (default 1,000,000 dossiers plus the unit
//! list) by a real `kho-agent` into a real `kho-hub`, once with a catalogue without rules and once
//! with 10 rules on the dossiers (two `not_null`, `unique`, `pattern`, `allowed_values`, two
//! `range`, a `reference` to the unit list, `row_count`, `max_change_share`), in the same run.
//!
//! Prints both wall times and throughputs, the ratio (with rules / without; the aim is < 1.20),
//! peak RSS of hub and agent, and the violations the rules found. `--warehouse postgres` uses a
//! fresh PostgreSQL database per run (the tests' server). Run it with `tests/bench-quality.sh`.

use std::path::Path;
use std::time::{Duration, Instant};

use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, cpu_seconds, rss_kib, wait_for};
use kho_tests::source::SourceDb;

const CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[dataset]]
id = "don_vi"
title = "Danh mục đơn vị"
department = "so_y_te"
cadence = "monthly"
update_kind = "sync"

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"
"#;

const RULES: &str = r#"
[[dataset.rule]]
check = "not_null"
column = "ma_ho_so"

[[dataset.rule]]
check = "not_null"
column = "ghi_chu"

[[dataset.rule]]
check = "unique"
column = "ma_ho_so"

[[dataset.rule]]
check = "pattern"
column = "ma_ho_so"
pattern = '000\.00\.[0-9]{2}\.H52-[0-9]{6}-[0-9]{7}'

[[dataset.rule]]
check = "allowed_values"
column = "trang_thai"
values = ["Đã tiếp nhận", "Đang xử lý", "Đã trả kết quả", "Quá hạn"]

[[dataset.rule]]
check = "range"
column = "so_tien"
min = 0

[[dataset.rule]]
check = "range"
column = "ngay_nhan"
min = "2020-01-01"
max = "today"

[[dataset.rule]]
check = "reference"
column = "don_vi"
dataset = "don_vi"
ref_column = "ten"

[[dataset.rule]]
check = "row_count"
period = "month"
min_rows = 1

[[dataset.rule]]
check = "max_change_share"
max_percent = 50.0
"#;

/// Units in the sample source (`SourceDb::create`).
const UNITS: u64 = 5;

struct Run {
    seconds: f64,
    hub_cpu: f64,
    peak_hub: u64,
    peak_agent: u64,
    violations: i64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: u64 = arg(&args, "--rows").map_or(Ok(1_000_000), |v| v.parse())?;
    let batch: u64 = arg(&args, "--batch").map_or(Ok(20_000), |v| v.parse())?;
    let postgres = match arg(&args, "--warehouse").unwrap_or("sqlite") {
        "sqlite" => false,
        "postgres" => true,
        other => anyhow::bail!("--warehouse must be sqlite or postgres, not {other:?}"),
    };
    let keep = tempfile::Builder::new().prefix("kho-bench-quality-").tempdir()?;
    let dir = keep.path();
    let kind = if postgres { "PostgreSQL" } else { "SQLite" };
    println!("kho-bench-quality: {rows} rows, batches of {batch}, {kind} warehouse, working in {}", dir.display());
    let t = Instant::now();
    let src = SourceDb::create(&dir.join("so_y_te.sqlite"), rows)?;
    println!("generated source in {:.2} s", t.elapsed().as_secs_f64());

    let plain = sync(dir, "plain", CATALOG, &src, rows, batch, postgres)?;
    let rules = sync(dir, "rules", &format!("{CATALOG}{RULES}"), &src, rows, batch, postgres)?;
    for (name, r) in [("no rules", &plain), ("10 rules", &rules)] {
        println!(
            "{name:<9} {:.2} s, {:.0} rows/s, peak RSS hub {:.1} MiB, agent {:.1} MiB, open violations {}",
            r.seconds,
            rows as f64 / r.seconds,
            r.peak_hub as f64 / 1024.0,
            r.peak_agent as f64 / 1024.0,
            r.violations
        );
    }
    println!(
        "ratio     time with rules / without: {:.3} (throughput {:.1}% lower; aim < 20%)",
        rules.seconds / plain.seconds,
        100.0 * (1.0 - plain.seconds / rules.seconds)
    );
    // On a shared, loaded machine the hub's CPU time is the steadier signal of what rules cost.
    println!(
        "ratio     hub CPU with rules / without: {:.3} ({:.1} s / {:.1} s)",
        rules.hub_cpu / plain.hub_cpu.max(f64::EPSILON),
        rules.hub_cpu,
        plain.hub_cpu
    );
    Ok(())
}

/// A fresh hub (with `catalog`) and agent; waits until every change is applied.
fn sync(
    dir: &Path,
    name: &str,
    catalog: &str,
    src: &SourceDb,
    rows: u64,
    batch: u64,
    postgres: bool,
) -> anyhow::Result<Run> {
    let hub_dir = dir.join(format!("hub-{name}"));
    std::fs::create_dir_all(&hub_dir)?;
    std::fs::write(hub_dir.join("catalog.toml"), catalog)?;
    let spec =
        AgentSpec { id: "bench".into(), token: "bench-token".into(), datasets: vec!["ho_so".into(), "don_vi".into()] };
    let mut pg = postgres.then(PgWarehouse::create);
    let warehouse = match &pg {
        Some(pg) => pg.hub_toml(2),
        None => "kind = \"sqlite\"\npath = \"warehouse.sqlite\"\n".to_string(),
    };
    let extra = "\n[catalog]\npath = \"catalog.toml\"\n";
    let mut hub = HubProc::configure_with(
        &hub_dir,
        kho_tests::procs::free_port(),
        std::slice::from_ref(&spec),
        &warehouse,
        extra,
    );
    hub.spawn();
    let datasets = [
        DatasetSpec { name: "don_vi".into(), table: "don_vi".into(), key: vec!["ma".into()], cursor: None },
        DatasetSpec {
            name: "ho_so".into(),
            table: "ho_so".into(),
            key: vec!["id".into()],
            cursor: Some("updated_at".into()),
        },
    ];
    let opts = AgentOptions { batch_max_changes: batch, poll_interval: "1s", ..AgentOptions::default() };
    let agent_dir = dir.join(format!("agent-{name}"));
    // The unit list is in the warehouse before the dossiers, as in a province (it is loaded long
    // before). Synced in one run, the two polls race and the dossiers captured before the units
    // break the `reference` rule until the periodic pass (25–70k extra violations in a 200k run),
    // so the work measured would depend on that race.
    {
        let units = AgentProc::start(&agent_dir, &spec, &hub.url(), &hub.ca_path(), &src.path, &datasets[..1], &opts);
        wait_for(Duration::from_secs(60), "the unit list", || units.log_tail(), || applied(&mut pg, &hub) >= UNITS);
    }
    // Both timed runs start from a fresh checkpoint: a million rows write about a GB of WAL, and a
    // checkpoint the first run's WAL triggers would otherwise land in the second run (its full-page
    // images are paid by whichever run is writing then).
    if let Some(pg) = pg.as_mut() {
        pg.client().batch_execute("CHECKPOINT")?;
    }
    let t = Instant::now();
    let agent = AgentProc::start(&agent_dir, &spec, &hub.url(), &hub.ca_path(), &src.path, &datasets, &opts);
    let (hub_pid, agent_pid) = (hub.pid().unwrap_or(0), agent.pid().unwrap_or(0));
    let mut peak = (0u64, 0u64);
    wait_for(
        Duration::from_secs(3_600),
        "the initial sync",
        || agent.log_tail(),
        || {
            if let (Some(h), Some(a)) = (rss_kib(hub_pid), rss_kib(agent_pid)) {
                peak = (peak.0.max(h.1), peak.1.max(a.1));
            }
            applied(&mut pg, &hub) >= rows + UNITS
        },
    );
    let seconds = t.elapsed().as_secs_f64();
    let (hub_cpu, agent_cpu) = (cpu_seconds(hub_pid).unwrap_or(0.0), cpu_seconds(agent_pid).unwrap_or(0.0));
    println!("{name:<9} synced in {seconds:.2} s (CPU hub {hub_cpu:.1} s, agent {agent_cpu:.1} s)");
    let per_rule = match pg.as_mut() {
        Some(pg) => pg.counts("SELECT rule, count(*) FROM kho.quality_violations GROUP BY rule ORDER BY rule"),
        None => {
            let conn = rusqlite::Connection::open(hub.warehouse())?;
            let mut stmt =
                conn.prepare("SELECT rule, count(*) FROM _kho_quality_violations GROUP BY rule ORDER BY rule")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<(String, i64)>, _>>()?
        }
    };
    // Per rule, so a warehouse that judges differently from the other stands out.
    if !per_rule.is_empty() {
        let list: Vec<String> = per_rule.iter().map(|(rule, n)| format!("{rule} {n}")).collect();
        println!("{name:<9} violations by rule: {}", list.join(", "));
    }
    let violations = per_rule.iter().map(|(_, n)| n).sum();
    drop(agent);
    drop(hub);
    Ok(Run { seconds, hub_cpu, peak_hub: peak.0, peak_agent: peak.1, violations })
}

/// The bench agent's applied sequence, from whichever warehouse the hub writes.
fn applied(pg: &mut Option<PgWarehouse>, hub: &HubProc) -> u64 {
    match pg.as_mut() {
        Some(pg) => pg.count("SELECT coalesce(max(applied_seq), 0) FROM kho.ledger WHERE agent = 'bench'") as u64,
        None => hub.ledger("bench"),
    }
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}
