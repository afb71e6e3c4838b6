//! `kho-agent`: parses arguments, loads the config, sets up logging and signals, then hands over
//! to the library (`run`, `status`, `check`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kho_agent::{AgentConfig, detect, outbox::Outbox, status};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// jemalloc hands freed memory back to the OS (background purging, options in
/// `.cargo/config.toml`). With glibc's malloc, what a large sync freed stayed resident in
/// per-thread arenas: 34–38 MiB idle after a 1M-row sync instead of 13 MiB. `unprefixed_malloc`
/// makes SQLite and zstd use it too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kho department agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Path of the agent's TOML configuration.
    #[arg(long, short, global = true, default_value = "agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Capture and forward until SIGINT/SIGTERM.
    Run,
    /// Show the outbox and each dataset's capture state (safe while the agent runs).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config, open each source and show its schema, verify the outbox.
    Check,
    /// Enroll with the hub: generate this agent's key pair (private key to `hub.signing_key`, mode
    /// 0600, never sent), present the one-time token from `kho-hub agent add`, and store the
    /// access token the hub returns in `hub.token_file`.
    Enroll {
        /// The one-time enrollment token.
        #[arg(long)]
        token: String,
        /// The hub's HTTPS base URL (default: `hub.url`; required with the MQTT transport).
        #[arg(long)]
        hub: Option<String>,
        /// CA certificate to trust for the hub (default: `hub.ca_cert`).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Replace this agent's key pair (stop the service first; buffered changes are kept and sent
    /// with the new key). If interrupted, run it again.
    RotateKey {
        /// The hub's HTTPS base URL (default: `hub.url`; required with the MQTT transport).
        #[arg(long)]
        hub: Option<String>,
        /// CA certificate to trust for the hub (default: `hub.ca_cert`).
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Recover a `mode = "cdc"` dataset whose replication slot or position is lost: forget its
    /// position and drop its slot (stop the agent first); the next `run` takes a new consistent
    /// snapshot — upserting changed rows, deleting vanished ones — and streams from there.
    Resnapshot {
        /// The dataset.
        dataset: String,
    },
    /// Capture the datasets once now (all, or those named) and forward until the hub has
    /// acknowledged everything; for a first sync or a catch-up. Refuses to run beside `run`.
    Sync {
        /// One pass, then exit (the only mode; required so the command says what it does).
        #[arg(long, required = true)]
        once: bool,
        /// Give up waiting for the hub after this long (what was captured stays queued).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Datasets to sync (default: all).
        datasets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A log line that cannot be written (stderr redirected to a file on a full disk) is dropped:
    // tracing-subscriber's default reports it with `eprintln!`, which panics on the same full
    // disk and killed the task that logged — a dataset then silently stopped being polled.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .init();
    let config = match AgentConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kho-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run => run(config),
        Command::Status { json } => show_status(&config, json),
        Command::Check => check(&config),
        Command::Enroll { token, hub, ca } => {
            enroll(&config, kho_agent::enroll::EnrollOptions { hub_url: hub, token, ca_cert: ca })
        }
        Command::RotateKey { hub, ca } => {
            let options = kho_agent::enroll::EnrollOptions { hub_url: hub, token: String::new(), ca_cert: ca };
            rotate_key(&config, options)
        }
        Command::Sync { once: _, timeout, datasets } => sync(config, &datasets, timeout),
        Command::Resnapshot { dataset } => resnapshot(&config, &dataset),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kho-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn enroll(config: &AgentConfig, options: kho_agent::enroll::EnrollOptions) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let reply = runtime.block_on(kho_agent::enroll::enroll(config, &options))?;
    println!(
        "enrolled as {} (department {}); may write: {}\nprivate key: {}\naccess token: {}",
        reply.agent,
        reply.department,
        reply.datasets.join(", "),
        config.hub.signing_key.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        config.hub.token_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}

fn rotate_key(config: &AgentConfig, options: kho_agent::enroll::EnrollOptions) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let public_key = runtime.block_on(kho_agent::enroll::rotate_key(config, &options))?;
    println!("key rotated; the hub now verifies batches of {} with public key {public_key}", config.agent.id);
    Ok(ExitCode::SUCCESS)
}

fn run(config: AgentConfig) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        kho_agent::run(config, shutdown).await.context("agent failed")?;
        Ok(ExitCode::SUCCESS)
    })
}

fn sync(config: AgentConfig, datasets: &[String], timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let show = |p: &kho_agent::sync_once::SyncProgress| {
            let phase = if p.capturing > 0 { format!("reading {} dataset(s)", p.capturing) } else { "sending".into() };
            bar.set_message(format!("{phase}: {} change(s) captured, {} waiting for the hub", p.captured, p.pending));
            bar.tick();
        };
        let summary = kho_agent::sync_once::sync_once(config, datasets, timeout, show, shutdown).await;
        bar.finish_and_clear();
        summary
    })?;
    let mut failed = 0;
    for (name, result) in &summary.datasets {
        match result {
            Ok(r) => println!(
                "dataset {name}: {} row(s) read, {} change(s) ({} delete(s)){}",
                r.rows_read,
                r.changes,
                r.deletes,
                if r.interrupted { ", interrupted" } else { "" }
            ),
            Err(e) => {
                failed += 1;
                println!("dataset {name}: FAILED: {e}");
            }
        }
    }
    println!(
        "{} change(s) captured in {:.1} s; {} still waiting for the hub",
        summary.captured,
        summary.elapsed.as_secs_f64(),
        summary.pending
    );
    if summary.pending > 0 {
        println!("the waiting changes are safe in the outbox and are sent by the next `run` or `sync`");
    }
    Ok(if failed > 0 || summary.pending > 0 || summary.stopped_early { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}

fn show_status(config: &AgentConfig, json: bool) -> anyhow::Result<ExitCode> {
    let report = status::report(config).context("reading the outbox")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("encoding status")?);
    } else {
        print!("{}", status::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the hub who it takes the token for and what it may write; prints one line per finding
/// and returns the number of problems.
fn check_hub(config: &AgentConfig) -> usize {
    let token = match config.bearer_token() {
        Ok(t) => t,
        Err(e) => {
            println!("hub token: PROBLEM: {e}");
            return 1;
        }
    };
    if config.hub.transport == kho_agent::config::TransportKind::Mqtt {
        // Over MQTT the hub answers only batches; the first batch's ack proves the token.
        return match kho_agent::forward::mqtt::MqttTransport::setup(&config.hub) {
            Ok(_) => {
                println!("hub client: ok (MQTT broker {}; CA and client certificate read)", config.hub.url);
                0
            }
            Err(e) => {
                println!("hub client: PROBLEM: {e}");
                1
            }
        };
    }
    let transport = match kho_agent::forward::https::HttpsTransport::new(&config.hub, &token) {
        Ok(t) => t,
        Err(e) => {
            println!("hub client: PROBLEM: {e}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            println!("hub {}: PROBLEM: cannot start the async runtime: {e}", config.hub.url);
            return 1;
        }
    };
    let me = match runtime.block_on(transport.whoami()) {
        Ok(me) => me,
        Err(e) => {
            println!("hub {}: PROBLEM: {e}", config.hub.url);
            return 1;
        }
    };
    println!("hub {}: reachable, token accepted for agent {} (hub {})", config.hub.url, me.agent, me.hub_version);
    let mut problems = 0;
    if me.agent != config.agent.id {
        println!("agent.id: PROBLEM: the token belongs to agent {:?} but agent.id is {:?}", me.agent, config.agent.id);
        problems += 1;
    }
    for d in &config.datasets {
        if !me.datasets.contains(&d.name) {
            println!(
                "dataset {}: PROBLEM: the hub does not let agent {} write it (allowed: {}); ask the hub operator \
                 to grant it in the catalogue or hub config",
                d.name,
                me.agent,
                if me.datasets.is_empty() { "none".to_string() } else { me.datasets.join(", ") }
            );
            problems += 1;
        }
    }
    problems
}

/// Prints a warning for each text column whose values look mis-decoded (not counted as a
/// problem: the data still syncs, but it will not join with correctly written text).
fn warn_misdecoded(d: &kho_agent::config::DatasetConfig, p: &detect::profile::Profile) {
    for (column, v) in &p.misdecoded {
        println!(
            "dataset {}: WARNING: column {column:?}: {} of {} sampled non-ASCII values look like {} \
             (e.g. {:?} should read {:?}); {}",
            d.name,
            v.count,
            v.sampled,
            v.misread.describe(),
            v.example.0,
            v.example.1,
            v.misread.advice()
        );
    }
}

/// Counts a dataset's rows and checks that its key identifies them; returns the problems found.
fn check_rows(d: &kho_agent::config::DatasetConfig) -> usize {
    let profile = detect::profile::profile(d);
    if let Ok(p) = &profile {
        warn_misdecoded(d, p);
    }
    match profile {
        Ok(p) if p.key_is_valid() => {
            println!("  rows: {}, key unique and never NULL", p.rows);
            0
        }
        Ok(p) => {
            println!("  rows: {}", p.rows);
            let mut problems = 0;
            if p.duplicate_keys > 0 {
                println!(
                    "dataset {}: PROBLEM: key [{}] is not unique: {} row(s) repeat an earlier key, e.g. {}; \
                     such rows are skipped, not merged — fix the key in the config or the data",
                    d.name,
                    d.key.join(", "),
                    p.duplicate_keys,
                    p.duplicate_examples.join(", ")
                );
                problems += 1;
            }
            if p.null_keys > 0 {
                println!(
                    "dataset {}: PROBLEM: {} row(s) have a NULL in key [{}] and cannot be tracked",
                    d.name,
                    p.null_keys,
                    d.key.join(", ")
                );
                problems += 1;
            }
            problems
        }
        Err(e) => {
            println!("dataset {}: PROBLEM: cannot read its rows: {e}", d.name);
            1
        }
    }
}

fn resnapshot(config: &AgentConfig, dataset: &str) -> anyhow::Result<ExitCode> {
    println!("{}", detect::cdc::ops::resnapshot(config, dataset)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints the CDC prerequisites of `d` and what the DBA must change; returns the problems found.
fn check_cdc(d: &kho_agent::config::DatasetConfig) -> usize {
    match detect::cdc::ops::check(d) {
        Ok(findings) => {
            for f in &findings {
                match &f.fix {
                    None => println!("  cdc: ok: {}", f.what),
                    Some(fix) => println!("dataset {}: PROBLEM: cdc: {}; the DBA must run: {fix}", d.name, f.what),
                }
            }
            findings.iter().filter(|f| !f.ok).count()
        }
        Err(e) => {
            println!("dataset {}: PROBLEM: cdc: {e}", d.name);
            1
        }
    }
}

fn check(config: &AgentConfig) -> anyhow::Result<ExitCode> {
    let mut problems = 0;
    println!("config {}: ok ({} dataset(s))", config.origin, config.datasets.len());
    problems += check_hub(config);
    for d in &config.datasets {
        match detect::discover_described(d) {
            Ok((schema, what)) => {
                println!("dataset {} ({}): ok, key [{}]", d.name, d.mode.as_str(), schema.key.join(", "));
                if let Some(what) = what {
                    println!("  source: {what}");
                }
                for c in &schema.columns {
                    println!("  {:<32} {}", c.name, c.ty.as_str());
                }
                problems += check_rows(d);
                if d.mode == kho_agent::config::Mode::Cdc {
                    problems += check_cdc(d);
                }
            }
            Err(e) => {
                println!("dataset {}: PROBLEM: {e}", d.name);
                problems += 1;
            }
        }
    }
    let path = config.outbox_path();
    if path.exists() {
        match Outbox::open_read_only(&path).and_then(|o| o.verify()) {
            Ok(report) if report.problems.is_empty() => {
                println!("outbox {}: ok ({} pending change(s))", path.display(), report.changes);
            }
            Ok(report) => {
                for p in &report.problems {
                    println!("outbox {}: PROBLEM: {p}", path.display());
                }
                problems += report.problems.len();
            }
            Err(e) => {
                println!("outbox: PROBLEM: {e}");
                problems += 1;
            }
        }
    } else {
        println!("outbox {}: not created yet", path.display());
    }
    if problems > 0 {
        println!("{problems} problem(s)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
