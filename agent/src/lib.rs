//! Kho's department agent: reads local sources, detects changes, keeps them in a durable outbox,
//! and forwards them to the provincial hub until the hub acknowledges them.
//!
//! One change's path, by module: [`source`] (read the department's database, read-only) →
//! [`detect`] (cursor or snapshot change detection, scheduled by [`scheduler`]) → [`outbox`]
//! (durable, bounded, gapless per-agent sequence) → [`forward`] (batch, compress, send over a
//! [`forward::Transport`]; delete only on the hub's ack). [`heartbeat`] reports liveness and
//! per-dataset capture state; [`status`] reads the outbox for operators; [`sync_once`] runs one
//! pass now and forwards it (`kho-agent sync --once`); [`lock`] keeps one agent per data directory;
//! [`enroll`] is the first contact with a hub (key pair, one-time token → access token);
//! [`privacy`] classifies, pseudonymises and minimises personal data before it reaches the outbox.
//!
//! Invariants: capture is atomic (changes and the source position commit together); nothing
//! leaves the outbox unacknowledged; memory is bounded (streamed reads, bounded chunks, one batch
//! in flight); blocking SQLite work never runs on the async runtime; shutdown never abandons a
//! commit.

#![forbid(unsafe_code)]

pub mod config;
pub mod detect;
pub mod enroll;
pub mod forward;
pub mod heartbeat;
pub mod lock;
pub mod outbox;
pub mod privacy;
pub mod schedule;
pub mod scheduler;
pub mod source;
pub mod status;
pub mod sync_once;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::{AgentConfig, ConfigError};

use config::TransportKind;
use forward::https::HttpsTransport;
use forward::mqtt::MqttTransport;
use forward::{Forwarder, Transport, TransportError};
use outbox::{Outbox, OutboxError};

/// How long shutdown waits for capture chunks, acks and in-flight requests to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("no dataset named {} in the config (configured: {known})", unknown.join(", "))]
    UnknownDatasets { unknown: Vec<String>, known: String },
    #[error("startup task failed: {0}")]
    Join(String),
}

/// How long a dataset's poll loop (after a panic) or the forwarder (after an outbox failure)
/// waits before it is restarted.
const RESTART_AFTER_PANIC: Duration = Duration::from_secs(5);

/// Runs one dataset's poll loop, restarting it if it panics: a bug or an unexpected failure in one
/// dataset must never leave it silently unpolled while the agent looks alive.
async fn supervise_capture(
    dataset: config::DatasetConfig,
    outbox: std::path::PathBuf,
    max_changes: u64,
    notify: Arc<Notify>,
    cancel: CancellationToken,
) {
    let name = dataset.name.clone();
    loop {
        let span = tracing::info_span!("capture", dataset = %name);
        let task = scheduler::run(dataset.clone(), outbox.clone(), max_changes, Arc::clone(&notify), cancel.clone());
        match tokio::spawn(task.instrument(span)).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                tracing::error!(dataset = %name, error = %e, restart_in = ?RESTART_AFTER_PANIC, "capture loop panicked; restarting it");
            }
            Err(e) => {
                tracing::error!(dataset = %name, error = %e, "capture loop was cancelled");
                return;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RESTART_AFTER_PANIC) => {}
        }
    }
}

/// Runs the forwarder, restarting it (on a freshly opened outbox) when an outbox failure stopped
/// it — a full disk during an ack's delete, a damaged read: the changes stay queued on disk, and
/// the agent must go on sending once the cause is gone rather than stay up without forwarding.
async fn supervise_forwarder<T: Transport>(
    first: Outbox,
    path: std::path::PathBuf,
    transport: Arc<T>,
    config: config::ForwardSection,
    agent: String,
    notify: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut outbox = Some(first);
    loop {
        let opened = match outbox.take() {
            Some(o) => Ok(o),
            None => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Outbox::open(&path).map_err(|e| e.to_string()))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match opened {
            Ok(o) => {
                let forwarder =
                    Forwarder::new(o, Arc::clone(&transport), config.clone(), agent.clone(), Arc::clone(&notify));
                match forwarder.run(cancel.clone()).await {
                    Ok(()) => return,
                    Err(e) => tracing::error!(
                        error = %e,
                        restart_in = ?RESTART_AFTER_PANIC,
                        "forwarder stopped on an outbox failure; changes stay queued on disk; restarting it"
                    ),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?RESTART_AFTER_PANIC, "cannot reopen the outbox for the forwarder")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RESTART_AFTER_PANIC) => {}
        }
    }
}

/// Runs the agent until `shutdown` is cancelled. Returns an error only if it cannot start.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let _lock = lock::AgentLock::acquire(&config.agent.data_dir)?;
    let token = config.bearer_token()?;
    let signer = config.signer()?;
    match config.hub.transport {
        TransportKind::Https => {
            let transport = Arc::new(HttpsTransport::new(&config.hub, &token)?.with_signer(signer));
            run_with(config, transport, shutdown).await
        }
        TransportKind::Mqtt => {
            forward::https::install_crypto_provider();
            let transport = Arc::new(MqttTransport::new(&config.hub, &config.agent.id, &token)?.with_signer(signer));
            run_with(config, transport, shutdown).await
        }
    }
}

/// Runs the agent over an already built transport until `shutdown` is cancelled.
pub async fn run_with<T: Transport>(
    config: AgentConfig,
    transport: Arc<T>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let path = config.outbox_path();
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || -> Result<_, OutboxError> {
            let forward = Outbox::open(&path)?;
            let heartbeat = Outbox::open(&path)?;
            let meta = forward.meta()?;
            Ok((forward, heartbeat, meta))
        })
        .await
        .map_err(|e| AgentError::Join(e.to_string()))??
    };
    let (forward_outbox, heartbeat_outbox, meta) = opened;
    tracing::info!(
        agent = %config.agent.id,
        transport = ?config.hub.transport,
        outbox = %path.display(),
        pending = meta.depth(),
        acked_through = meta.acked_through,
        datasets = config.datasets.len(),
        "agent starting"
    );

    let notify = Arc::new(Notify::new());
    let tracker = TaskTracker::new();
    for d in &config.datasets {
        tracker.spawn(supervise_capture(
            d.clone(),
            path.clone(),
            config.outbox.max_changes,
            Arc::clone(&notify),
            shutdown.child_token(),
        ));
    }
    let forward_cancel = shutdown.child_token();
    let agent_id = config.agent.id.clone();
    tracker.spawn(
        supervise_forwarder(
            forward_outbox,
            path.clone(),
            Arc::clone(&transport),
            config.forward.clone(),
            config.agent.id.clone(),
            Arc::clone(&notify),
            forward_cancel,
        )
        .instrument(tracing::info_span!("forward", agent = %agent_id)),
    );
    tracker.spawn(
        heartbeat::run(
            heartbeat_outbox,
            Arc::clone(&transport),
            config.agent.id.clone(),
            config.datasets.iter().map(|d| d.name.clone()).collect(),
            config.hub.heartbeat_interval,
            shutdown.child_token(),
        )
        .instrument(tracing::info_span!("heartbeat")),
    );
    tracker.close();

    shutdown.cancelled().await;
    tracing::info!("shutdown requested; finishing in-flight work");
    match tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await {
        Ok(()) => tracing::info!("agent stopped cleanly"),
        Err(_) => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "agent stopped before all tasks finished; committed data is safe and uncommitted chunks are re-read on restart"
        ),
    }
    Ok(())
}
