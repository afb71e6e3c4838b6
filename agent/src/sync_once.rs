//! `kho-agent sync --once [dataset…]`: one capture pass of the chosen datasets now, forwarded
//! until the hub has acknowledged every change in the outbox, then one heartbeat (so the hub
//! records the confirmed sync), then exit. For a department IT admin's first sync, or a manual
//! catch-up outside the configured schedule.
//!
//! It is the same machinery as `run` — [`Capture`] into the outbox, the [`Forwarder`] deleting only
//! acknowledged changes — so every guarantee holds: interrupting it (Ctrl-C, a timeout, a dead
//! hub) loses nothing; what was captured stays in the outbox for the next `run` or `sync`. It holds
//! the data directory's [`AgentLock`], so it refuses to run beside a running agent service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, TransportKind};
use crate::detect::{Capture, PollReport};
use crate::forward::Forwarder;
use crate::forward::Transport;
use crate::forward::https::HttpsTransport;
use crate::forward::mqtt::MqttTransport;
use crate::lock::AgentLock;
use crate::outbox::{Outbox, now_ms};
use crate::{AgentError, heartbeat};

/// How often progress is read from the outbox.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Where a sync stands, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    /// Changes captured by this sync so far.
    pub captured: u64,
    /// Changes in the outbox not yet acknowledged (this sync's and any left from before).
    pub pending: u64,
    /// Datasets whose capture pass is still running.
    pub capturing: usize,
}

/// How a sync ended.
#[derive(Debug)]
pub struct SyncSummary {
    /// Per dataset: its pass's report, or why the pass failed.
    pub datasets: Vec<(String, Result<PollReport, String>)>,
    /// Changes captured by this sync.
    pub captured: u64,
    /// Changes still in the outbox (0 when the hub acknowledged everything).
    pub pending: u64,
    pub elapsed: Duration,
    /// The timeout or a shutdown request ended the wait before the outbox drained.
    pub stopped_early: bool,
}

/// Runs one pass of `selected` (all datasets when empty) and forwards until the outbox is empty,
/// `timeout` passes or `shutdown` fires. Returns an error only if it cannot start.
pub async fn sync_once(
    config: AgentConfig,
    selected: &[String],
    timeout: Duration,
    progress: impl FnMut(&SyncProgress) + Send,
    shutdown: CancellationToken,
) -> Result<SyncSummary, AgentError> {
    let unknown: Vec<String> =
        selected.iter().filter(|s| !config.datasets.iter().any(|d| &d.name == *s)).cloned().collect();
    if !unknown.is_empty() {
        let known = config.datasets.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(AgentError::UnknownDatasets { unknown, known });
    }
    let _lock = AgentLock::acquire(&config.agent.data_dir)?;
    let token = config.bearer_token()?;
    let signer = config.signer()?;
    match config.hub.transport {
        TransportKind::Https => {
            let transport = Arc::new(HttpsTransport::new(&config.hub, &token)?.with_signer(signer));
            sync_once_with(config, transport, selected, timeout, progress, shutdown).await
        }
        TransportKind::Mqtt => {
            crate::forward::https::install_crypto_provider();
            let transport = Arc::new(MqttTransport::new(&config.hub, &config.agent.id, &token)?.with_signer(signer));
            sync_once_with(config, transport, selected, timeout, progress, shutdown).await
        }
    }
}

/// [`sync_once`] over an already built transport (the caller holds the agent lock).
async fn sync_once_with<T: Transport>(
    config: AgentConfig,
    transport: Arc<T>,
    selected: &[String],
    timeout: Duration,
    mut progress: impl FnMut(&SyncProgress) + Send,
    shutdown: CancellationToken,
) -> Result<SyncSummary, AgentError> {
    let path = config.outbox_path();
    let (forward_outbox, watch_outbox, start) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || -> Result<_, crate::outbox::OutboxError> {
            let forward = Outbox::open(&path)?;
            let watch = Outbox::open(&path)?;
            let meta = watch.meta()?;
            Ok((forward, watch, meta))
        })
        .await
        .map_err(|e| AgentError::Join(e.to_string()))??
    };
    let started = Instant::now();
    let notify = Arc::new(Notify::new());
    let forwarder = Forwarder::new(
        forward_outbox,
        Arc::clone(&transport),
        config.forward.clone(),
        config.agent.id.clone(),
        Arc::clone(&notify),
    );
    let forward_cancel = shutdown.child_token();
    let forward_task = tokio::spawn(forwarder.run(forward_cancel.clone()));

    let chosen: Vec<_> =
        config.datasets.iter().filter(|d| selected.is_empty() || selected.contains(&d.name)).cloned().collect();
    let mut captures = tokio::task::JoinSet::new();
    for d in chosen {
        let (path, n, cancel, max) =
            (path.clone(), Arc::clone(&notify), shutdown.child_token(), config.outbox.max_changes);
        captures.spawn_blocking(move || {
            let name = d.name.clone();
            let result = Outbox::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|outbox| {
                    Capture::new(d, outbox, max, cancel, Box::new(move || n.notify_one()))
                        .map(Capture::until_caught_up)
                        .map_err(|e| e.to_string())
                })
                .and_then(|mut cap| cap.poll().map_err(|e| e.to_string()));
            (name, result)
        });
    }

    let watch = Arc::new(std::sync::Mutex::new(watch_outbox));
    let read_meta = || {
        let watch = Arc::clone(&watch);
        async move {
            tokio::task::spawn_blocking(move || watch.lock().unwrap_or_else(|p| p.into_inner()).meta())
                .await
                .map_err(|e| AgentError::Join(e.to_string()))?
                .map_err(AgentError::from)
        }
    };
    let mut reports = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stopped_early = false;
    loop {
        while let Some(joined) = captures.try_join_next() {
            reports.push(joined.map_err(|e| AgentError::Join(e.to_string()))?);
        }
        let meta = read_meta().await?;
        let p = SyncProgress {
            captured: meta.next_seq.saturating_sub(start.next_seq),
            pending: meta.depth(),
            capturing: captures.len(),
        };
        progress(&p);
        if captures.is_empty() && p.pending == 0 {
            break;
        }
        if forward_task.is_finished() {
            // The forwarder only stops on its own when the outbox cannot be read.
            stopped_early = true;
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => { stopped_early = true; break; }
            _ = tokio::time::sleep_until(deadline) => { stopped_early = true; break; }
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
    }
    // Captures interrupted by shutdown stop at their next chunk; wait for them to commit.
    while let Some(joined) = captures.join_next().await {
        reports.push(joined.map_err(|e| AgentError::Join(e.to_string()))?);
    }
    forward_cancel.cancel();
    match forward_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "forwarder stopped: the outbox cannot be read; changes stay queued"),
        Err(e) => tracing::error!(error = %e, "forwarder task failed"),
    }

    // Tell the hub this sync happened (its confirmed-sync evidence), unless the hub is unreachable.
    let names: Vec<String> = config.datasets.iter().map(|d| d.name.clone()).collect();
    let status = {
        let watch = Arc::clone(&watch);
        tokio::task::spawn_blocking(move || watch.lock().unwrap_or_else(|p| p.into_inner()).status())
            .await
            .map_err(|e| AgentError::Join(e.to_string()))??
    };
    let hb = heartbeat::build(&config.agent.id, &names, &status, now_ms());
    if let Err(e) = transport.send_heartbeat(&hb).await {
        tracing::warn!(error = %e, "final heartbeat failed; the hub learns of this sync at the next one");
    }
    let meta = read_meta().await?;
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(SyncSummary {
        datasets: reports,
        captured: meta.next_seq.saturating_sub(start.next_seq),
        pending: meta.depth(),
        elapsed: started.elapsed(),
        stopped_early,
    })
}
