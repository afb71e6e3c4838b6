//! `kho-hub`: parses arguments, loads the config, sets up logging and signals, then hands over to
//! [`kho_hub::run`] (or [`kho_hub::demo::run`]).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// jemalloc hands freed memory back to the OS (background purging of dirty pages); glibc's malloc
/// keeps what a large batch's decoding freed in per-thread arenas, so an idle hub stayed at its
/// peak. `unprefixed_malloc` makes SQLite and zstd use it too.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kho hub: receives department agents' changes and applies them exactly once into the warehouse.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short, global = true, default_value = "/etc/kho/hub.toml")]
    config: PathBuf,
    /// Serve plain HTTP instead of HTTPS (development only).
    #[arg(long, global = true)]
    insecure_dev_http: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Run,
    /// Check the config file and exit.
    Check,
    /// Run a hub and a real agent on a generated sample database.
    Demo {
        /// Directory for the sample database, configs and data.
        #[arg(long, default_value = "kho-demo")]
        dir: PathBuf,
        /// Rows in the sample database (when it is generated).
        #[arg(long, default_value_t = 5000)]
        rows: u64,
        /// Port of the hub.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// Simulate a clerk changing a row every few seconds.
        #[arg(long)]
        live: bool,
        /// Regenerate the sample database and wipe hub and agent data.
        #[arg(long)]
        fresh: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kho-hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Check = command {
        kho_hub::HubConfig::load(&cli.config)?;
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match command {
            Command::Demo { dir, rows, port, live, fresh } => {
                let opts = kho_hub::demo::DemoOptions { dir, rows, port, live, fresh };
                kho_hub::demo::run(opts, shutdown).await?;
            }
            Command::Run | Command::Check => {
                let mut config = kho_hub::HubConfig::load(&cli.config)?;
                config.hub.insecure_dev_http |= cli.insecure_dev_http;
                kho_hub::run(config, shutdown).await?;
            }
        }
        Ok(())
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the hub");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; stopping"),
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
    }
    shutdown.cancel();
}
