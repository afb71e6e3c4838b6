//! Kho hub: authenticates department agents, applies their batches exactly once into the
//! provincial warehouse, and reports what it holds.
//!
//! A change record's path through this crate, by module:
//! [`ingest::https`] (HTTP request, token, body limit) → [`ingest`] (digest, bounded decode,
//! protocol and permission checks) → [`apply`] (the single writer: ledger decision and rows in one
//! transaction) → [`warehouse`] (SQLite tables, ledger, catalogue) → [`api`] (status, metrics).
//! [`config`] and [`tls`] set the stage; [`demo`] runs a hub and a real agent side by side.
//!
//! [`run`] is the whole service: it validates the config, prepares TLS and the warehouse, binds the
//! listener (writing the bound address to `<data_dir>/listen.addr`), serves until the shutdown
//! token is cancelled, then lets the applier commit everything already queued before returning.

#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod warehouse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::HubConfig;
pub use error::HubError;

/// File in the data directory that holds the bound `ip:port` while the hub runs (useful with
/// `listen = "…:0"`).
pub const LISTEN_ADDR_FILE: &str = "listen.addr";

/// Path of the listen-address file for a data directory.
pub fn listen_addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join(LISTEN_ADDR_FILE)
}

/// Runs the hub until `shutdown` is cancelled.
pub async fn run(config: HubConfig, shutdown: CancellationToken) -> Result<(), HubError> {
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(config::ConfigError::Invalid { origin: "hub config".into(), problems }.into());
    }
    tls::install_crypto_provider();
    let data_dir = config.hub.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| HubError::Io { path: data_dir.clone(), source })?;
    let addr_file = listen_addr_file(&data_dir);
    let _stale = std::fs::remove_file(&addr_file);

    let tls_config = if config.hub.insecure_dev_http {
        tracing::warn!("insecure_dev_http: serving PLAIN HTTP; tokens and data cross the network unencrypted. Development only!");
        None
    } else if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        Some(tls::server_config(cert, key)?)
    } else {
        let paths = tls::ensure_self_signed(&data_dir.join("tls"), &config.tls.self_signed_names)?;
        Some(tls::server_config(&paths.cert, &paths.key)?)
    };

    let (writer, reader) = warehouse::open(&config.warehouse)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let (applier, applier_thread) = apply::spawn(writer, Arc::clone(&metrics)).map_err(HubError::Thread)?;
    let limits = &config.limits;
    let ingest = Arc::new(ingest::Ingest {
        registry: auth::AgentRegistry::new(&config.agents),
        applier,
        metrics: Arc::clone(&metrics),
        max_body_bytes: usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX),
        max_decoded_bytes: usize::try_from(limits.max_decoded_bytes).unwrap_or(usize::MAX),
    });
    let status = Arc::new(api::status::StatusService {
        reader,
        agents: config.agents.iter().map(|a| (a.id.clone(), a.datasets.clone())).collect(),
    });
    let request_limits = Arc::new(server::RequestLimits {
        permits: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests)),
        timeout: limits.request_timeout,
    });
    let routes = ingest::https::routes(Arc::clone(&ingest)).merge(api::routes(status, Arc::clone(&metrics)));
    let router = server::router(routes, request_limits);
    drop(ingest);

    let served = async {
        let addr: SocketAddr = config.listen_addr().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
        let listener =
            std::net::TcpListener::bind(addr).map_err(|source| HubError::Bind { addr: addr.to_string(), source })?;
        let local = listener.local_addr().map_err(|source| HubError::Bind { addr: addr.to_string(), source })?;
        tls::write_atomic(&addr_file, format!("{local}\n").as_bytes(), 0o644).map_err(|e| match e {
            tls::TlsError::Io { path, source } => HubError::Io { path, source },
            other => HubError::Tls(other),
        })?;
        let scheme = if tls_config.is_some() { "https" } else { "http" };
        tracing::info!(addr = %local, url = %format!("{scheme}://{local}"), data_dir = %data_dir.display(), "hub listening");
        server::serve(listener, tls_config, router, shutdown.child_token()).await
    }
    .await;

    // Every ApplierHandle went with the router; the applier now commits what is queued and stops.
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
