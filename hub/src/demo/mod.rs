//! `kho-hub demo`: a hub and a real agent in one process, pushing a sample Department of Health
//! database into a fresh warehouse — the first thing a newcomer runs.
//!
//! Layout of the demo directory (default `./kho-demo/`), reused on every run:
//!
//! | path              | what                                                             |
//! |-------------------|------------------------------------------------------------------|
//! | `so_y_te.sqlite`  | the sample source database (regenerated only with `--fresh`)     |
//! | `agent.token`     | the shared bearer token (0600), created once                     |
//! | `hub.toml`        | the hub's config (rewritten each run: the port may change)       |
//! | `catalog.toml`    | the example Sơn La catalogue plus the demo dataset `ho_so`       |
//! | `agent.toml`      | the agent's config, pinning `hub-data/tls/ca.pem`                |
//! | `hub-data/`       | the hub's data dir: `warehouse.sqlite`, `tls/`, `listen.addr`    |
//! | `agent-data/`     | the agent's data dir: its outbox                                 |
//!
//! The hub starts first (it creates the CA the agent pins); both share the caller's shutdown
//! token, so Ctrl-C stops both, each finishing its in-flight commit.

pub mod sample;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, HubConfig};
use crate::error::HubError;

/// The demo's catalogue: the example Sơn La catalogue plus `ho_so`, owned by Sở Y tế and written
/// by the demo agent (a continuously captured one-stop-shop database, so `sync` counts).
const DEMO_CATALOG_EXTRA: &str = "
# ── Added by `kho-hub demo`: the sample database the demo agent reads ──────────
[[dataset]]
id = \"ho_so\"
title = \"Hồ sơ tiếp nhận tại Sở Y tế (dữ liệu mẫu)\"
department = \"so_y_te\"
agents = [\"so-y-te-01\"]
cadence = \"daily\"
deadline = { time = \"08:00\" }
update_kind = \"sync\"
";

/// Agent id used by the demo.
pub const DEMO_AGENT: &str = "so-y-te-01";
/// How often the simulated clerk changes a row with `--live`.
const CLERK_INTERVAL: Duration = Duration::from_secs(3);
/// How long to wait for the hub to bind before giving up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of the demo command.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub rows: u64,
    pub port: u16,
    pub live: bool,
    pub fresh: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("sample database {path}: {source}")]
    Sample { path: PathBuf, source: rusqlite::Error },
    #[error("hub config")]
    HubConfig(#[from] ConfigError),
    #[error("hub failed")]
    Hub(#[from] HubError),
    #[error("agent: {0}")]
    Agent(String),
    #[error("the hub did not start listening within {0:?}")]
    Startup(Duration),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError {
    let path = path.to_path_buf();
    move |source| DemoError::Io { path, source }
}

/// Runs the demo until `shutdown` is cancelled.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let dir = &opts.dir;
    if opts.fresh {
        for name in ["so_y_te.sqlite", "so_y_te.sqlite-wal", "so_y_te.sqlite-shm", "hub-data", "agent-data"] {
            let p = dir.join(name);
            let removed = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(io(&p)(e));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    let db = dir.join("so_y_te.sqlite");
    if !db.exists() {
        let (path, rows) = (db.clone(), opts.rows);
        tracing::info!(rows, path = %db.display(), "generating the sample Sở Y tế database");
        tokio::task::spawn_blocking(move || sample::generate(&path, rows))
            .await
            .map_err(|e| DemoError::Agent(format!("sample generator panicked: {e}")))?
            .map_err(|source| DemoError::Sample { path: db.clone(), source })?;
    }
    write_configs(&dir, opts.port)?;

    let hub_config = HubConfig::load(&dir.join("hub.toml"))?;
    let hub_data = hub_config.hub.data_dir.clone();
    let warehouse = hub_config.warehouse.path.clone();
    let mut hub = tokio::spawn(crate::run(hub_config, shutdown.clone()));
    let addr = tokio::select! {
        addr = wait_for_listen_addr(&hub_data) => addr.ok_or(DemoError::Startup(STARTUP_TIMEOUT))?,
        ended = &mut hub => {
            return match ended {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(DemoError::Startup(STARTUP_TIMEOUT)),
            };
        }
    };

    let agent_config =
        kho_agent::config::AgentConfig::load(&dir.join("agent.toml")).map_err(|e| DemoError::Agent(e.to_string()))?;
    let agent = tokio::spawn(kho_agent::run(agent_config, shutdown.clone()));
    print_banner(&addr, &warehouse, &db, opts.live);

    let clerk = opts.live.then(|| tokio::spawn(clerk(db.clone(), shutdown.clone())));
    let mut agent = agent;
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        ended = &mut hub => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DemoError::Hub(e)),
            Err(e) => Err(DemoError::Agent(format!("hub task failed: {e}"))),
        },
        ended = &mut agent => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DemoError::Agent(e.to_string())),
            Err(e) => Err(DemoError::Agent(format!("agent task failed: {e}"))),
        },
    };
    shutdown.cancel();
    if let Some(c) = clerk {
        let _ = c.await;
    }
    if !hub.is_finished()
        && let Ok(Err(e)) = hub.await
    {
        tracing::error!(error = %e, "hub stopped with an error");
    }
    if !agent.is_finished()
        && let Ok(Err(e)) = agent.await
    {
        tracing::error!(error = %e, "agent stopped with an error");
    }
    result
}

fn write_configs(dir: &Path, port: u16) -> Result<(), DemoError> {
    let token_path = dir.join("agent.token");
    if !token_path.exists() {
        let mut rng = fastrand::Rng::new();
        let token: String = (0..32).map(|_| format!("{:02x}", rng.u8(..))).collect();
        crate::tls::write_atomic(&token_path, token.as_bytes(), 0o600)
            .map_err(|e| DemoError::Agent(format!("cannot write {}: {e}", token_path.display())))?;
    }
    let hub = format!(
        "# Written by `kho-hub demo`; rewritten on every run.\n\
         [hub]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"hub-data\"\n\n\
         [tls]\nself_signed = true\n\n\
         [warehouse]\nkind = \"sqlite\"\npath = \"warehouse.sqlite\"\n\n\
         [catalog]\npath = \"catalog.toml\"\n\n\
         [freshness]\nevaluate_interval = \"2s\"\n\n\
         # Loopback only: the dashboard's read-only view needs no login here.\n\
         [dashboard]\npublic_view = true\n\n\
         [[agent]]\nid = \"{DEMO_AGENT}\"\ntoken_file = \"agent.token\"\ndatasets = [\"ho_so\"]\n"
    );
    let agent = format!(
        "# Written by `kho-hub demo`; rewritten on every run.\n\
         [agent]\nid = \"{DEMO_AGENT}\"\ndata_dir = \"agent-data\"\n\n\
         [hub]\nurl = \"https://127.0.0.1:{port}\"\ntoken_file = \"agent.token\"\nca_cert = \"hub-data/tls/ca.pem\"\n\
         heartbeat_interval = \"2s\"\n\n\
         [[dataset]]\nname = \"ho_so\"\ntable = \"ho_so\"\nkey = [\"id\"]\nmode = \"cursor\"\n\
         cursor_column = \"updated_at\"\npoll_interval = \"1s\"\n\
         source = {{ kind = \"sqlite\", path = \"so_y_te.sqlite\" }}\n"
    );
    let catalog = format!(
        "# Written by `kho-hub demo`; rewritten on every run.\n{}{DEMO_CATALOG_EXTRA}",
        include_str!("../../../deploy/examples/catalog.toml")
    );
    for (name, text) in [("hub.toml", hub), ("agent.toml", agent), ("catalog.toml", catalog)] {
        let path = dir.join(name);
        crate::tls::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|e| DemoError::Agent(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

async fn wait_for_listen_addr(data_dir: &Path) -> Option<String> {
    let file = crate::listen_addr_file(data_dir);
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(text) = tokio::fs::read_to_string(&file).await
            && !text.trim().is_empty()
        {
            return Some(text.trim().to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn print_banner(addr: &str, warehouse: &Path, db: &Path, live: bool) {
    let clerk = if live { "\n  A simulated clerk changes a row every few seconds (--live).\n" } else { "" };
    println!(
        "\n\
         Kho demo is running: a hub and the agent of Sở Y tế (Department of Health) in one process.\n\n\
         \x20 Dashboard:  https://{addr}/ui   (read-only view; accept the self-signed certificate)\n\
         \x20 Open data:  curl -k https://{addr}/api/3/action/package_list\n\
         \x20 Status:     curl -k https://{addr}/api/v1/status\n\
         \x20 Freshness:  kho-hub status --url https://{addr} --ca {ca}\n\
         \x20 Metrics:    curl -k https://{addr}/metrics\n\
         \x20 Warehouse:  {warehouse}\n\
         \x20 Sample DB:  {db}\n\n\
         \x20 Change a row in the department's database and watch it arrive within ~2 s:\n\n\
         \x20   sqlite3 {db} \"UPDATE ho_so SET trang_thai='Đã trả kết quả', updated_at=strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE id=1\"\n\
         \x20   sqlite3 {warehouse} \"SELECT id, trang_thai, _kho_seq, _kho_applied_at FROM ho_so WHERE id=1\"\n\
         {clerk}\n\
         \x20 Press Ctrl-C to stop both.\n",
        warehouse = warehouse.display(),
        db = db.display(),
        ca = warehouse.parent().unwrap_or(Path::new(".")).join("tls/ca.pem").display(),
    );
}

async fn clerk(db: PathBuf, shutdown: CancellationToken) {
    let mut rng = fastrand::Rng::new();
    let mut tick = tokio::time::interval(CLERK_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let path = db.clone();
        let mut step_rng = rng.fork();
        let done = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            sample::clerk_step(&conn, &mut step_rng)
        })
        .await;
        match done {
            Ok(Ok(action)) => tracing::info!(?action, "clerk changed the sample database"),
            Ok(Err(e)) => tracing::warn!(error = %e, "clerk could not change the sample database"),
            Err(e) => tracing::warn!(error = %e, "clerk task failed"),
        }
    }
}
