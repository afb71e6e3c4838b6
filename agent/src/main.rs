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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kho-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn check(config: &AgentConfig) -> anyhow::Result<ExitCode> {
    let mut problems = 0;
    println!("config {}: ok ({} dataset(s))", config.origin, config.datasets.len());
    match config.bearer_token() {
        Ok(token) => {
            kho_agent::forward::https::install_crypto_provider();
            let client = match config.hub.transport {
                kho_agent::config::TransportKind::Https => {
                    kho_agent::forward::https::HttpsTransport::new(&config.hub, &token).map(drop)
                }
                kho_agent::config::TransportKind::Mqtt => {
                    kho_agent::forward::mqtt::MqttTransport::setup(&config.hub).map(drop)
                }
            };
            if let Err(e) = client {
                println!("hub client: PROBLEM: {e}");
                problems += 1;
            } else {
                println!("hub client: ok ({})", config.hub.url);
            }
        }
        Err(e) => {
            println!("hub token: PROBLEM: {e}");
            problems += 1;
        }
    }
    for d in &config.datasets {
        match detect::discover(d) {
            Ok(schema) => {
                println!("dataset {} ({}): ok, key [{}]", d.name, d.mode.as_str(), schema.key.join(", "));
                for c in &schema.columns {
                    println!("  {:<32} {}", c.name, c.ty.as_str());
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
