//! Webhook delivery of freshness alerts: a bounded queue and one sender task.
//!
//! The evaluator hands alerts over with [`AlertSender::send`], which never waits: when the queue
//! ([`crate::config::AlertsSection::queue_capacity`]) is full the new alert is dropped, logged at
//! ERROR and counted (`kho_hub_alerts_dropped_total`). The sender task POSTs each alert as JSON,
//! in order, and retries a failed delivery (connection error or non-2xx) with capped exponential
//! backoff and jitter until it succeeds or the hub stops. Alerts still queued at shutdown are
//! logged and lost: they describe state that the next evaluation after restart shows again.
//! Ingest never touches this path.

use std::sync::Arc;
use std::time::Duration;

use kho_shared::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AlertsSection;
use crate::freshness::alerting::{Alert, AlertKind};
use crate::metrics::Metrics;

/// First retry after 1 s; the cap comes from the config.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Why alerting could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
    #[error("alerts.ca_cert: cannot read {path}: {source}")]
    Ca { path: std::path::PathBuf, source: std::io::Error },
}

/// Hands alerts to the sender task; a no-op when no webhook is configured.
#[derive(Clone)]
pub struct AlertSender {
    tx: Option<mpsc::Sender<Alert>>,
    metrics: Arc<Metrics>,
}

impl AlertSender {
    pub fn disabled(metrics: Arc<Metrics>) -> AlertSender {
        AlertSender { tx: None, metrics }
    }

    /// Queues `alert` without waiting.
    pub fn send(&self, alert: Alert) {
        if alert.kind == AlertKind::DepartmentDigest {
            tracing::info!(department = ?alert.department, summary = %alert.summary, "daily digest");
        } else {
            tracing::warn!(kind = ?alert.kind, dataset = ?alert.dataset, agent = ?alert.agent, summary = %alert.summary, "freshness alert");
        }
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(alert) {
            self.metrics.alert_dropped();
            tracing::error!(error = %e, "alert queue full or closed: alert DROPPED (is the webhook receiver down?)");
        }
    }
}

/// Starts the sender task when a webhook is configured.
pub fn spawn(
    config: &AlertsSection,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(AlertSender, Option<tokio::task::JoinHandle<()>>), AlertError> {
    let Some(url) = config.webhook_url.clone() else {
        return Ok((AlertSender::disabled(metrics), None));
    };
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder().timeout(config.timeout);
    if let Some(path) = &config.ca_cert {
        let pem = std::fs::read(path).map_err(|source| AlertError::Ca { path: path.clone(), source })?;
        let cert =
            reqwest::Certificate::from_pem(&pem).map_err(|e| AlertError::Client(format!("alerts.ca_cert: {e}")))?;
        builder = builder.tls_certs_only([cert]);
    }
    let client = builder.build().map_err(|e| AlertError::Client(e.to_string()))?;
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let backoff = Backoff { initial: FIRST_RETRY, max: config.max_backoff.max(FIRST_RETRY) };
    let span = tracing::info_span!("alerts", url = %url);
    let task = tokio::spawn(deliver(rx, client, url, backoff, Arc::clone(&metrics), shutdown).instrument(span));
    Ok((AlertSender { tx: Some(tx), metrics }, Some(task)))
}

async fn deliver(
    mut rx: mpsc::Receiver<Alert>,
    client: reqwest::Client,
    url: String,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let alert: Alert = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = rx.recv() => match next { Some(a) => a, None => break },
        };
        let body = match serde_json::to_vec(&alert) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode alert; skipped");
                continue;
            }
        };
        let mut attempt = 0u32;
        loop {
            let request = client.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json");
            let result = request.body(body.clone()).send().await;
            let failure = match result {
                Ok(resp) if resp.status().is_success() => None,
                Ok(resp) => Some(format!("receiver answered {}", resp.status())),
                Err(e) => Some(e.to_string()),
            };
            let Some(why) = failure else {
                metrics.alert_sent();
                tracing::info!(kind = ?alert.kind, "alert delivered");
                break;
            };
            metrics.alert_failed();
            let delay = backoff.delay(attempt, fastrand::f64());
            attempt = attempt.saturating_add(1);
            tracing::warn!(kind = ?alert.kind, attempt, retry_in = ?delay, error = %why, "alert delivery failed; will retry");
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tracing::warn!(queued = rx.len() + 1, "stopping with undelivered alerts");
                    return;
                }
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
    if !rx.is_empty() {
        tracing::warn!(queued = rx.len(), "stopping with undelivered alerts");
    }
}
