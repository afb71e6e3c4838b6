//! `kho-loadgen`: simulates N agents (up to several thousand) against real hub instances, over
//! HTTPS or MQTT, with the real wire protocol and real `[[agent]]` tokens, and reports throughput,
//! ack latency percentiles and errors (engine: `kho_tests::loadgen`).
//!
//! ```text
//! kho-loadgen agents-toml --agents 1000 [--mqtt 500] [--prefix lg]      # [[agent]] entries for hub.toml
//! kho-loadgen run --agents 1000 --hub https://h1:8443=ca1.pem [--hub https://h2:8443=ca2.pem]
//!                 [--mqtt 500 --broker mqtts://b:8883 --broker-ca ca.pem --broker-pki dir]
//!                 [--changes 200 --batch 20 --interval-ms 1000 --deadline-s 300 --heartbeat-s 10]
//!                 [--shared-datasets]
//!                 [--verify-pg postgres://…/warehouse [--schema public]]
//! kho-loadgen bench --agents 1000 [--hubs 2] [--mqtt 0] [--changes 200 --batch 20 --interval-ms 0]
//!                   [--heartbeat-s 10] [--shared-datasets]
//! ```
//!
//! Each agent writes its own dataset (`ho_so_tthc_lg_00042`: in the province every dataset has
//! one owning agent); `--shared-datasets` makes all agents of a shape share one (`ho_so_tthc`),
//! the contention case. Agents send a heartbeat every `--heartbeat-s` (the agent's default, 10 s;
//! 0: none).
//!
//! `bench` sets everything up itself: a fresh PostgreSQL database, one or two `kho-hub` processes
//! on it (the HTTPS agents alternate between them), optionally a Mosquitto; then it runs the load,
//! verifies the warehouse (0 lost, 0 duplicated) and prints changes/s, ack latency, peak hub RSS
//! and the CPU time PostgreSQL spent (from /proc). Run it with `tests/bench-scale.sh`.

use std::time::Duration;

use kho_tests::loadgen::{self, BrokerTarget, HubTarget, Load, verify};
use kho_tests::mosquitto::Broker;
use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{HubProc, cpu_seconds, free_port, rss_kib};

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match arg(args, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name} {v:?}: {e}")),
    }
}

fn load(args: &[String], hubs: Vec<HubTarget>, broker: Option<BrokerTarget>) -> anyhow::Result<Load> {
    Ok(Load {
        hubs,
        broker,
        changes: num(args, "--changes", 200)?,
        batch: num(args, "--batch", 20)?,
        interval: Duration::from_millis(num(args, "--interval-ms", 1000)?),
        deadline: Duration::from_secs(num(args, "--deadline-s", 600)?),
        mqtt_ack_timeout: Duration::from_secs(num(args, "--mqtt-ack-timeout-s", 30)?),
        heartbeat: Some(Duration::from_secs(num(args, "--heartbeat-s", 10)?)).filter(|d| !d.is_zero()),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let agents = num(&args, "--agents", 100usize)?;
    let mqtt = num(&args, "--mqtt", 0usize)?;
    let prefix = arg(&args, "--prefix").unwrap_or("lg");
    let ownership = if args.iter().any(|a| a == "--shared-datasets") {
        loadgen::Ownership::Shared
    } else {
        loadgen::Ownership::Own
    };
    let sims = loadgen::agents_with(prefix, agents, mqtt, ownership);
    match args.get(1).map(String::as_str) {
        Some("agents-toml") => {
            print!("{}", loadgen::hub_agents_toml(&sims));
            Ok(())
        }
        Some("run") => run(&args, &sims),
        Some("bench") => bench(&args, &sims),
        _ => anyhow::bail!("usage: kho-loadgen agents-toml|run|bench [options] (see the source's header)"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(args: &[String], sims: &[loadgen::SimAgent]) -> anyhow::Result<()> {
    let mut hubs = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a == "--hub" {
            let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("--hub needs URL=CA"))?;
            let (url, ca) = v.split_once('=').ok_or_else(|| anyhow::anyhow!("--hub {v:?}: expected URL=CA.pem"))?;
            hubs.push(HubTarget { url: url.into(), ca: ca.into() });
        }
    }
    let broker = match arg(args, "--broker") {
        Some(url) => Some(BrokerTarget {
            url: url.into(),
            ca: arg(args, "--broker-ca").ok_or_else(|| anyhow::anyhow!("--broker needs --broker-ca"))?.into(),
            pki: arg(args, "--broker-pki").ok_or_else(|| anyhow::anyhow!("--broker needs --broker-pki"))?.into(),
        }),
        None => None,
    };
    let load = load(args, hubs, broker)?;
    let report = runtime()?.block_on(loadgen::run(sims, &load)).map_err(anyhow::Error::msg)?;
    report.print("load");
    if let Some(url) = arg(args, "--verify-pg") {
        let schema = arg(args, "--schema").unwrap_or("public");
        check(url, schema, sims, &report)?;
    }
    Ok(())
}

fn check(url: &str, schema: &str, sims: &[loadgen::SimAgent], report: &loadgen::Report) -> anyhow::Result<()> {
    let expect: Vec<verify::Expect<'_>> = sims
        .iter()
        .zip(&report.acked)
        .map(|(a, (_, acked))| verify::Expect { agent: &a.id, shape: a.shape, dataset: &a.dataset, sent: *acked })
        .collect();
    let v = verify::check(url, schema, &expect)?;
    println!(
        "verify: {} agents, {} acknowledged changes: {} lost, {} duplicated, {} ledger mismatches",
        v.agents,
        v.changes_expected,
        v.lost,
        v.duplicated,
        v.ledger_mismatches.len()
    );
    for m in v.ledger_mismatches.iter().take(5) {
        println!("  ledger: {m}");
    }
    anyhow::ensure!(v.is_exact(), "the warehouse does not hold exactly what was acknowledged");
    Ok(())
}

fn ownership_shared(sims: &[loadgen::SimAgent]) -> bool {
    sims.first().is_some_and(|a| a.dataset == a.shape.dataset)
}

/// CPU seconds used so far by the PostgreSQL processes: the backends serving `db`, and all.
fn postgres_cpu(db: &str) -> (f64, f64) {
    let (mut ours, mut all) = (0.0, 0.0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "postgres" {
            continue;
        }
        let cpu = cpu_seconds(pid).unwrap_or(0.0);
        all += cpu;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(db) {
            ours += cpu;
        }
    }
    (ours, all)
}

fn bench(args: &[String], sims: &[loadgen::SimAgent]) -> anyhow::Result<()> {
    let n_hubs = num(args, "--hubs", 1usize)?.clamp(1, 4);
    let writers = num(args, "--writers", 2usize)?;
    let keep = tempfile::Builder::new().prefix("kho-loadgen-").tempdir()?;
    let dir = keep.path();
    let pg = PgWarehouse::create();
    let mqtt_ids: Vec<&str> = sims.iter().filter(|a| a.mqtt).map(|a| a.id.as_str()).collect();
    let broker = if mqtt_ids.is_empty() { None } else { Some(Broker::start(&dir.join("broker"), &mqtt_ids)) };
    let mut extra = loadgen::hub_agents_toml(sims);
    extra.push_str("\n[limits]\nmax_connections = 20000\nmax_concurrent_requests = 4096\n");
    let mut hubs = Vec::new();
    for i in 0..n_hubs {
        let mut toml = extra.clone();
        if let Some(b) = &broker {
            toml.push_str(&b.hub_toml());
        }
        let mut hub =
            HubProc::configure_with(&dir.join(format!("hub{i}")), free_port(), &[], &pg.hub_toml(writers), &toml);
        hub.spawn();
        hubs.push(hub);
    }
    let targets = hubs.iter().map(|h| HubTarget { url: h.url(), ca: h.ca_path() }).collect();
    let broker_target = broker.as_ref().map(|b| BrokerTarget { url: b.url(), ca: b.ca_path(), pki: b.dir.join("pki") });
    let load = load(args, targets, broker_target)?;
    println!(
        "kho-loadgen bench: {} agents ({} MQTT, {}), {} hub instance(s) with {writers} writers each, one PostgreSQL database; {} changes per agent in batches of {}, interval {:?}, heartbeat {:?}",
        sims.len(),
        mqtt_ids.len(),
        if ownership_shared(sims) { "sharing 5 datasets" } else { "one dataset each" },
        n_hubs,
        load.changes,
        load.batch,
        load.interval,
        load.heartbeat
    );
    let cpu_before = postgres_cpu(&pg.name);
    let hub_cpu_before: f64 = hubs.iter().filter_map(|h| h.pid().and_then(cpu_seconds)).sum();
    let report = runtime()?.block_on(loadgen::run(sims, &load)).map_err(anyhow::Error::msg)?;
    let cpu_after = postgres_cpu(&pg.name);
    let hub_cpu_after: f64 = hubs.iter().filter_map(|h| h.pid().and_then(cpu_seconds)).sum();
    report.print(&format!("{n_hubs} hub(s)"));
    for (i, h) in hubs.iter().enumerate() {
        if let Some((rss, peak)) = h.pid().and_then(rss_kib) {
            println!("hub{i} RSS {:.1} MiB, peak {:.1} MiB", rss as f64 / 1024.0, peak as f64 / 1024.0);
        }
    }
    let secs = report.seconds.max(1e-9);
    println!(
        "CPU during the load: hubs {:.1} s ({:.0}% of one core); PostgreSQL backends of this database {:.1} s ({:.0}%), all postgres processes {:.1} s ({:.0}%)",
        hub_cpu_after - hub_cpu_before,
        100.0 * (hub_cpu_after - hub_cpu_before) / secs,
        cpu_after.0 - cpu_before.0,
        100.0 * (cpu_after.0 - cpu_before.0) / secs,
        cpu_after.1 - cpu_before.1,
        100.0 * (cpu_after.1 - cpu_before.1) / secs,
    );
    check(&pg.url(), "public", sims, &report)?;
    drop(hubs);
    drop(broker);
    Ok(())
}
