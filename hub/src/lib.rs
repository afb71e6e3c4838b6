//! Kho hub: authenticates department agents, applies their batches exactly once into the
//! provincial warehouse, and reports what it holds.
//!
//! A change record's path through this crate, by module:
//! [`ingest::https`] (HTTP request, token, body limit) or [`ingest::mqtt`] (broker message,
//! envelope token, ack topic) → [`ingest`] (digest, bounded decode,
//! protocol and permission checks) → [`apply`] (the single writer: ledger decision and rows in one
//! transaction) → [`warehouse`] (SQLite tables, ledger, freshness evidence) → [`freshness`] (the
//! periodic evaluator: statuses, history, alerts via [`alerts`]) → [`api`] (status, catalogue,
//! freshness, scorecards, readiness, metrics, and the CKAN-compatible open-data API) and
//! [`dashboard`] (the operators' HTML views). [`catalog`] is the dataset catalogue (reloadable);
//! [`config`], [`clock`] and [`tls`] set the stage; [`demo`] runs a hub and a real agent side by
//! side; [`cli`] is `kho-hub status`; [`registry`] holds enrolled agents and the [`audit`] log,
//! managed by [`admin`] (`kho-hub agent …`, `kho-hub audit verify`).
//!
//! [`run`] is the whole service: it validates the config and the catalogue, prepares TLS and the
//! warehouse, evaluates freshness once, binds the listener (writing the bound address to
//! `<data_dir>/listen.addr`), serves until the shutdown token is cancelled, stops the evaluator,
//! catalogue watcher and alert sender, then lets the applier commit everything already queued
//! before returning. [`run_with`] does the same with an injected [`clock::Clock`] and reload
//! trigger (tests move time; `main` forwards SIGHUP).

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent_ca;
pub mod alerts;
pub mod api;
pub mod apply;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn_limit;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod freshness;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod privacy;
pub mod quality;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod tls;
pub mod warehouse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::HubConfig;
pub use error::HubError;

/// File in the data directory that holds the bound `ip:port` while the hub runs (useful with
/// `listen = "…:0"`).
pub const LISTEN_ADDR_FILE: &str = "listen.addr";

/// Path of the listen-address file for a data directory.
pub fn listen_addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join(LISTEN_ADDR_FILE)
}

/// What the embedding program (or a test) injects into the hub.
#[derive(Clone)]
pub struct Hooks {
    /// The clock every timestamp and freshness judgement uses.
    pub clock: Arc<dyn clock::Clock>,
    /// Notify to reload the catalogue now (`main` forwards SIGHUP here).
    pub reload_catalog: Arc<Notify>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { clock: Arc::new(clock::SystemClock), reload_catalog: Arc::new(Notify::new()) }
    }
}

/// Runs the hub until `shutdown` is cancelled.
pub async fn run(config: HubConfig, shutdown: CancellationToken) -> Result<(), HubError> {
    run_with(config, Hooks::default(), shutdown).await
}

/// Loads the configured catalogue, or an empty one when none is configured.
pub fn load_catalog(config: &HubConfig) -> Result<catalog::Catalog, catalog::CatalogError> {
    match &config.catalog.path {
        Some(path) => catalog::Catalog::load(path),
        None => Ok(catalog::Catalog::default()),
    }
}

/// Longest wait between attempts to reach the warehouse at start.
const WAREHOUSE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens the warehouse, waiting for it while its server is unreachable (a hub started with or
/// before its PostgreSQL must not give up: agents keep their batches meanwhile). `None` when
/// `shutdown` fires first. Any other failure (a bad certificate file, …) is returned at once.
async fn open_warehouse(
    config: &config::WarehouseSection,
    department_of: warehouse::postgres::DepartmentOf,
    shutdown: &CancellationToken,
) -> Result<Option<warehouse::Opened>, HubError> {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        // Opening may block (PostgreSQL connects with its own small runtime): off the async workers.
        let (warehouse_config, department_of) = (config.clone(), Arc::clone(&department_of));
        let opened = tokio::task::spawn_blocking(move || warehouse::open(&warehouse_config, department_of))
            .await
            .map_err(|e| HubError::Thread(std::io::Error::other(e.to_string())))?;
        match opened {
            Ok(opened) => return Ok(Some(opened)),
            Err(e @ warehouse::WarehouseError::Unreachable { .. }) => {
                tracing::error!(error = %e, retry_in = ?delay, "cannot reach the warehouse; the hub waits for it before accepting batches");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(WAREHOUSE_RETRY_MAX);
    }
}

/// Pending connections the listener queues before the hub accepts them (the kernel caps it at
/// `net.core.somaxconn`). The standard library's 128 overflowed when thousands of agents connected
/// at once (issue 11's 5,000-agent load test: connect timeouts while the hub idled).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listener with [`LISTEN_BACKLOG`] (address reuse as `std::net::TcpListener::bind` has).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Runs the hub with injected hooks until `shutdown` is cancelled.
pub async fn run_with(config: HubConfig, hooks: Hooks, shutdown: CancellationToken) -> Result<(), HubError> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(config::ConfigError::Invalid { origin: "hub config".into(), problems }.into());
    }
    let configured: freshness::ConfiguredAgents =
        config.agents.iter().map(|a| (a.id.clone(), a.datasets.clone())).collect();
    let configured_ids: Vec<String> = configured.iter().map(|(id, _)| id.clone()).collect();
    let loaded = load_catalog(&config)?;
    catalog::reload::warn_unknown_agents(&loaded, &configured_ids);
    tracing::info!(datasets = loaded.datasets.len(), scenarios = loaded.scenarios.len(), "catalogue loaded");
    let catalog = catalog::CatalogHandle::new(loaded);
    tls::install_crypto_provider();
    let data_dir = config.hub.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| HubError::Io { path: data_dir.clone(), source })?;
    let addr_file = listen_addr_file(&data_dir);
    let _stale = std::fs::remove_file(&addr_file);

    let agent_ca = Arc::new(agent_ca::AgentCa::ensure(&data_dir.join("tls"))?);
    let client_ca = Some(agent_ca.ca_path.as_path());
    let tls_config = if config.hub.insecure_dev_http {
        tracing::warn!(
            "insecure_dev_http: serving PLAIN HTTP; tokens and data cross the network unencrypted. Development only!"
        );
        None
    } else if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        Some(tls::server_config_with_clients(cert, key, client_ca)?)
    } else {
        let paths = tls::ensure_self_signed(&data_dir.join("tls"), &config.tls.self_signed_names)?;
        Some(tls::server_config_with_clients(&paths.cert, &paths.key, client_ca)?)
    };

    let department_of: warehouse::postgres::DepartmentOf = {
        let catalog = catalog.clone();
        Arc::new(move |dataset: &str| catalog.get().dataset(dataset).map(|d| d.department.clone()))
    };
    let Some((mut writers, reader)) = open_warehouse(&config.warehouse, department_of, &shutdown).await? else {
        return Ok(());
    };
    let metrics = Arc::new(metrics::Metrics::default());
    // Personal-data declarations (issue 14): what the warehouse recorded, then each batch's.
    let privacy_index = privacy::Index::default();
    {
        let (reader, index) = (Arc::clone(&reader), privacy_index.clone());
        let mut datasets: Vec<String> = catalog.get().datasets.iter().map(|d| d.id.clone()).collect();
        let loaded = tokio::task::spawn_blocking(move || {
            datasets.extend(reader.status()?.datasets.into_iter().map(|d| d.dataset));
            index.load(reader.as_ref(), &datasets)
        })
        .await;
        if !matches!(loaded, Ok(Ok(()))) {
            tracing::error!(
                "cannot read the recorded personal-data declarations; they are recorded again from the next batches"
            );
        }
    }
    // Once-only work (freshness records, alerts, digests, retention) runs on the leader: with
    // PostgreSQL, the instance holding the leader lock; with SQLite, this one.
    let (leadership, election) = match config.warehouse.kind {
        config::WarehouseKind::Postgres => {
            let leadership = leader::Leadership::fixed(false);
            let settings = Arc::new(warehouse::postgres_settings(&config.warehouse));
            let mut election = leader::Election::new(settings, leadership.clone(), Arc::clone(&metrics));
            election.attempt().await;
            (leadership, Some(election))
        }
        config::WarehouseKind::Sqlite => {
            metrics.set_leader(true);
            (leader::Leadership::fixed(true), None)
        }
    };
    for writer in &mut writers {
        writer.set_leadership(leadership.clone());
    }
    let ctx = apply::ApplierContext {
        metrics: Arc::clone(&metrics),
        clock: Arc::clone(&hooks.clock),
        catalog: catalog.clone(),
        privacy: privacy_index.clone(),
    };
    let (applier, applier_thread) = apply::spawn_pool(writers, ctx).map_err(HubError::Thread)?;

    // Background tasks stop on `tasks` (cancelled with the hub, or when serving fails).
    let tasks = shutdown.child_token();
    let tracker = TaskTracker::new();
    if config.warehouse.kind == config::WarehouseKind::Postgres {
        // Other instances record declarations too (issue 11): pick them up.
        let (index, reader, catalog) = (privacy_index.clone(), Arc::clone(&reader), catalog.clone());
        let every = config.freshness.evaluate_interval;
        tracker.spawn(privacy::refresh(index, reader, catalog, every, tasks.clone()));
    }
    let (alert_sender, alert_task) = alerts::spawn(&config.alerts, Arc::clone(&metrics), tasks.clone())?;
    let snapshot = freshness::SnapshotCell::default();
    let mut evaluator = freshness::evaluator::Evaluator::new(
        Arc::clone(&reader),
        applier.clone(),
        catalog.clone(),
        Arc::clone(&hooks.clock),
        configured.clone(),
        config.freshness.agent_offline_after,
        snapshot.clone(),
        Arc::clone(&metrics),
        alert_sender,
    );
    evaluator.digest_at = config.alerts.digest_time();
    evaluator.leadership = leadership.clone();
    if let Some(election) = election {
        tracker.spawn(election.run(leader::ATTEMPT_EVERY, tasks.clone()).instrument(tracing::info_span!("leader")));
    }
    let quality_cell = quality::periodic::QualityCell::default();
    evaluator.quality = quality_cell.clone();
    if let Err(e) = evaluator.load_history().await {
        tracing::error!(error = %e, "cannot read the freshness history; transitions may repeat");
    }
    if let Err(e) = evaluator.pass().await {
        tracing::error!(error = %e, "first freshness evaluation failed");
    }
    let interval = config.freshness.evaluate_interval;
    tracker.spawn(evaluator.run(interval, tasks.clone()).instrument(tracing::info_span!("evaluator")));
    let checker = quality::periodic::Checker {
        reader: Arc::clone(&reader),
        applier: applier.clone(),
        catalog: catalog.clone(),
        clock: Arc::clone(&hooks.clock),
        metrics: Arc::clone(&metrics),
        cell: quality_cell,
        leadership: leadership.clone(),
    };
    let quality_interval = config.freshness.quality_interval;
    tracker.spawn(checker.run_loop(quality_interval, tasks.clone()).instrument(tracing::info_span!("quality")));
    if let Some(path) = config.catalog.path.clone() {
        let watch = catalog::reload::Watch {
            handle: catalog.clone(),
            path,
            interval: config.catalog.reload_interval,
            trigger: Arc::clone(&hooks.reload_catalog),
            configured_agents: configured_ids,
            metrics: Arc::clone(&metrics),
        };
        tracker.spawn(catalog::reload::watch(watch, tasks.clone()).instrument(tracing::info_span!("catalog_watch")));
    }
    if let Some(task) = alert_task {
        tracker.spawn(async move {
            let _ = task.await;
        });
    }
    tracker.close();

    let warehouse_config = config.warehouse.clone();
    let store = tokio::task::spawn_blocking(move || registry::open(&warehouse_config))
        .await
        .map_err(|e| HubError::Thread(std::io::Error::other(e.to_string())))??;
    let limits = &config.limits;
    let ingest = Arc::new(ingest::Ingest {
        catalog: catalog.clone(),
        gate: ingest::gate::Gate {
            config_agents: auth::AgentRegistry::new(&config.agents),
            store: Arc::new(std::sync::Mutex::new(store)),
            clock: Arc::clone(&hooks.clock),
            agent_ca,
            refusal_budget: ingest::gate::refusal_budget(),
            pseudonym_keys: config.privacy.key_file.clone(),
        },
        applier,
        metrics: Arc::clone(&metrics),
        max_body_bytes: usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX),
        max_decoded_bytes: usize::try_from(limits.max_decoded_bytes).unwrap_or(usize::MAX),
        transports: ingest::TransportBoard::default(),
        max_batch_changes: limits.max_batch_changes,
        require_client_cert: config.tls.require_client_cert,
        rate: ratelimit::RateLimiter::new(limits.agent_requests_per_second, limits.agent_burst),
    });
    if let Some(section) = &config.mqtt {
        let mqtt = ingest::mqtt::MqttIngest::new(section, ingest.max_body_bytes)?;
        let span = tracing::info_span!("mqtt_ingest", broker = %section.url);
        tracker.spawn(mqtt.run(Arc::clone(&ingest), tasks.clone()).instrument(span));
    }
    let status = Arc::new(api::status::StatusService {
        reader,
        agents: config.agents.iter().map(|a| (a.id.clone(), a.datasets.clone())).collect(),
        leadership,
    });
    let request_limits = Arc::new(server::RequestLimits {
        permits: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests)),
        timeout: limits.request_timeout,
    });
    let scheme = if tls_config.is_some() { "https" } else { "http" };
    let audit_sink = privacy::AuditSink { store: Arc::clone(&ingest.gate.store), clock: Arc::clone(&hooks.clock) };
    let mut open_data = api::opendata::OpenData::new(
        Arc::clone(&status.reader),
        catalog.clone(),
        snapshot.clone(),
        scheme,
        Arc::clone(&metrics),
    );
    open_data.privacy = Some((privacy_index.clone(), audit_sink.clone()));
    let dashboard = dashboard::Dashboard {
        snapshot: snapshot.clone(),
        catalog: catalog.clone(),
        reader: Arc::clone(&status.reader),
        auth: Arc::new(dashboard::auth::Auth::new(&config.dashboard, tls_config.is_some())),
        metrics: Arc::clone(&metrics),
        transports: ingest.transports.clone(),
        privacy: Some((privacy_index, audit_sink)),
    };
    let quality_api = api::quality::QualityApi { reader: Arc::clone(&status.reader), catalog: catalog.clone() };
    let fresh_api = api::freshness::FreshnessApi { snapshot, catalog };
    let routes = ingest::https::routes(Arc::clone(&ingest))
        .merge(api::routes(status, fresh_api, quality_api, Arc::clone(&metrics)))
        .merge(api::opendata::routes(open_data))
        .merge(dashboard::routes(dashboard));
    let router = server::router(routes, request_limits);
    drop(ingest);

    let served = async {
        let addr: SocketAddr = config.listen_addr().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
        let listener = bind(addr).map_err(|source| HubError::Bind { addr: addr.to_string(), source })?;
        let local = listener.local_addr().map_err(|source| HubError::Bind { addr: addr.to_string(), source })?;
        tls::write_atomic(&addr_file, format!("{local}\n").as_bytes(), 0o644).map_err(|e| match e {
            tls::TlsError::Io { path, source } => HubError::Io { path, source },
            other => HubError::Tls(other),
        })?;
        let scheme = if tls_config.is_some() { "https" } else { "http" };
        tracing::info!(addr = %local, url = %format!("{scheme}://{local}"), data_dir = %data_dir.display(), "hub listening");
        let conns = conn_limit::LimitAcceptor::new(limits.max_connections);
        server::serve(listener, tls_config, router, limits.header_read_timeout, conns, shutdown.child_token()).await
    }
    .await;

    // The evaluator and the MQTT ingest hold the last ApplierHandles besides the router's: stop
    // them first.
    tasks.cancel();
    tracker.wait().await;
    // Every ApplierHandle is gone; the applier now commits what is queued and stops.
    let joined = tokio::task::spawn_blocking(move || applier_thread.join()).await;
    let clean = matches!(joined, Ok(Ok(())));
    let _gone = std::fs::remove_file(&addr_file);
    match (&served, clean) {
        (Ok(()), true) => tracing::info!("hub stopped cleanly"),
        (Ok(()), false) => tracing::error!("hub stopped, but the applier thread panicked"),
        (Err(e), _) => tracing::error!(error = %e, "hub stopped with an error"),
    }
    served
}
