//! `kho-hub`: parses arguments, loads the config, sets up logging and signals (SIGINT/SIGTERM
//! stop, SIGHUP reloads the catalogue), then hands over to [`kho_hub::run_with`] (or
//! [`kho_hub::demo::run`], or [`kho_hub::cli`] for `status`).

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
    /// Check the config file (and the catalogue it names) and exit.
    Check,
    /// Show every catalogue dataset's freshness, fetched from a running hub's API.
    Status {
        /// Base URL of the hub (default: from the config's `hub.listen`).
        #[arg(long)]
        url: Option<String>,
        /// CA certificate to trust (default: `<data_dir>/tls/ca.pem` when it exists).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Only this department's datasets.
        #[arg(long)]
        department: Option<String>,
        /// Colour: auto (when stdout is a terminal), always or never.
        #[arg(long, default_value = "auto")]
        color: ColorChoice,
    },
    /// Read a password on stdin and print its argon2 hash for `[[dashboard.operator]]`.
    HashPassword,
    /// Manage enrolled agents (stored in the warehouse; a running hub sees changes at once).
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
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

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Register an agent and print its one-time enrollment token.
    Add {
        /// Agent id (`[a-z0-9][a-z0-9_-]*`).
        id: String,
        /// The department's code (e.g. so_y_te).
        #[arg(long)]
        department: String,
        /// Datasets the agent may write (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        datasets: Vec<String>,
        /// How long the enrollment token stays valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
    /// Show every agent: registry state, department, version, last contact, outbox backlog.
    List,
    /// Revoke an agent: its requests are refused from now on, over HTTPS and MQTT.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain; prints the head (entry count and hash) to record elsewhere.
    Verify,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
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
        let config = kho_hub::HubConfig::load(&cli.config)?;
        let catalog = kho_hub::load_catalog(&config)?;
        println!(
            "{}: ok ({} departments, {} datasets, {} scenarios in the catalogue)",
            cli.config.display(),
            catalog.departments.len(),
            catalog.datasets.len(),
            catalog.scenarios.len()
        );
        return Ok(());
    }
    if let Command::HashPassword = command {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password).context("cannot read the password from stdin")?;
        let password = password.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!password.is_empty(), "the password is empty");
        let hash = kho_hub::dashboard::auth::hash_password(password)
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
        println!("{hash}");
        return Ok(());
    }
    let command = match command {
        Command::Agent { command } => return agent_command(&cli.config, command),
        Command::Audit { command: AuditCommand::Verify } => {
            let config = kho_hub::HubConfig::load(&cli.config)?;
            let mut store = kho_hub::registry::open(&config.warehouse)?;
            print!("{}", kho_hub::admin::verify_audit(store.as_mut())?);
            return Ok(());
        }
        other => other,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if let Command::Status { url, ca, department, color } = command {
        return runtime.block_on(status(&cli.config, url, ca, department, color));
    }
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let hooks = kho_hub::Hooks::default();
        tokio::spawn(reload_on_sighup(std::sync::Arc::clone(&hooks.reload_catalog)));
        match command {
            Command::Demo { dir, rows, port, live, fresh } => {
                let opts = kho_hub::demo::DemoOptions { dir, rows, port, live, fresh };
                kho_hub::demo::run(opts, shutdown).await?;
            }
            Command::Run
            | Command::Check
            | Command::HashPassword
            | Command::Status { .. }
            | Command::Agent { .. }
            | Command::Audit { .. } => {
                let mut config = kho_hub::HubConfig::load(&cli.config)?;
                config.hub.insecure_dev_http |= cli.insecure_dev_http;
                kho_hub::run_with(config, hooks, shutdown).await?;
            }
        }
        Ok(())
    })
}

/// `kho-hub agent …`: blocking, outside any async runtime (the PostgreSQL client runs its own).
fn agent_command(config_path: &std::path::Path, command: AgentCommand) -> anyhow::Result<()> {
    let config = kho_hub::HubConfig::load(config_path)?;
    let mut store = kho_hub::registry::open(&config.warehouse)?;
    match command {
        AgentCommand::Add { id, department, datasets, expires } => {
            let add = kho_hub::admin::AddAgent { id: id.clone(), department, datasets, expires_in: expires };
            let (token, expires_at) = kho_hub::admin::add(&config, store.as_mut(), &add)?;
            let expires_at = jiff::Timestamp::from_millisecond(expires_at).map(|t| t.to_string()).unwrap_or_default();
            println!("agent {id} added; enrollment token (works once, expires {expires_at}):\n{token}");
            println!("on the agent: kho-agent --config agent.toml enroll --token <token>");
        }
        AgentCommand::List => print!("{}", kho_hub::admin::list(&config, store.as_mut())?),
        AgentCommand::Revoke { id } => print!("{}", kho_hub::admin::revoke(&config, store.as_mut(), &id)?),
    }
    Ok(())
}

async fn status(
    config_path: &std::path::Path,
    url: Option<String>,
    ca: Option<PathBuf>,
    department: Option<String>,
    color: ColorChoice,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let (url, ca) = match url {
        Some(url) => (url, ca),
        None => {
            let config =
                kho_hub::HubConfig::load(config_path).context("no --url given, and the config cannot be read")?;
            let scheme = if config.hub.insecure_dev_http { "http" } else { "https" };
            let default_ca = config.hub.data_dir.join("tls/ca.pem");
            (format!("{scheme}://{}", config.hub.listen), ca.or(default_ca.exists().then_some(default_ca)))
        }
    };
    let query = department.map(|d| format!("?department={d}")).unwrap_or_default();
    let freshness = kho_hub::cli::fetch(&url, &format!("/api/v1/freshness{query}"), ca.as_deref()).await?;
    let catalog = kho_hub::cli::fetch(&url, "/api/v1/catalog", ca.as_deref()).await?;
    let colour = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal(),
    };
    print!("{}", kho_hub::cli::render(&freshness, &catalog, colour));
    Ok(())
}

async fn reload_on_sighup(reload: std::sync::Arc<tokio::sync::Notify>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the catalogue still reloads when its file changes");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading the catalogue");
        reload.notify_one();
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // An unwritable log line (full disk) is dropped rather than reported with a panicking
    // `eprintln!` (see the agent's main).
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false).init();
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
