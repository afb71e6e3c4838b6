//! Heartbeats: every `hub.heartbeat_interval`, tell the hub this agent is alive and where each
//! dataset's capture stands, even when nothing changed.
//!
//! The hub uses this to tell "agent down" from "no new data" (two separate statuses). A failed
//! heartbeat is never fatal: it is logged (debug, then warn after repeated failures) and the next
//! one is tried on schedule.

use std::sync::Arc;
use std::time::Duration;

use kho_shared::protocol::{DatasetReport, Heartbeat, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::forward::Transport;
use crate::outbox::{Outbox, OutboxError, OutboxStatus, now_ms};

/// Consecutive failures after which a failing heartbeat is logged as a warning.
const WARN_AFTER_FAILURES: u32 = 3;

/// Builds a heartbeat from the outbox's status for the configured datasets (pure).
pub fn build(agent: &str, datasets: &[String], status: &OutboxStatus, now_ms: i64) -> Heartbeat {
    let reports = datasets
        .iter()
        .map(|name| match status.datasets.iter().find(|d| &d.dataset == name) {
            Some(d) => DatasetReport {
                dataset: name.clone(),
                last_ok_poll_at_ms: d.last_ok_poll_at_ms,
                captured_through_seq: d.captured_through_seq,
                last_error: d.last_error.clone(),
                null_cursor_rows: d.null_cursor_rows,
                cdc: d.cdc.as_ref().map(|c| kho_shared::protocol::CdcReport {
                    slot: c.slot.clone(),
                    lsn: c.lsn.clone(),
                    lag_bytes: c.lag_bytes,
                    lag_seconds: c.lag_seconds,
                }),
            },
            None => DatasetReport {
                dataset: name.clone(),
                last_ok_poll_at_ms: None,
                captured_through_seq: 0,
                last_error: None,
                null_cursor_rows: 0,
                cdc: None,
            },
        })
        .collect();
    Heartbeat {
        v: PROTOCOL_VERSION,
        agent: agent.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        sent_at_ms: now_ms,
        outbox_depth: status.depth,
        acked_through: status.acked_through,
        datasets: reports,
    }
}

/// Sends heartbeats until `cancel` fires.
pub async fn run<T: Transport>(
    outbox: Outbox,
    transport: Arc<T>,
    agent: String,
    datasets: Vec<String>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let outbox = Arc::new(std::sync::Mutex::new(outbox));
    let mut failures: u32 = 0;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let ob = Arc::clone(&outbox);
        let status = tokio::task::spawn_blocking(move || -> Result<OutboxStatus, OutboxError> {
            ob.lock().unwrap_or_else(|p| p.into_inner()).status()
        })
        .await;
        let status = match status {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "heartbeat skipped: cannot read the outbox status");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat skipped: status task failed");
                continue;
            }
        };
        let hb = build(&agent, &datasets, &status, now_ms());
        let sent = tokio::select! {
            _ = cancel.cancelled() => return,
            r = transport.send_heartbeat(&hb) => r,
        };
        match sent {
            Ok(()) => {
                if failures >= WARN_AFTER_FAILURES {
                    tracing::info!("heartbeats reach the hub again");
                }
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == WARN_AFTER_FAILURES {
                    tracing::warn!(failures, error = %e, "heartbeats are failing");
                } else {
                    tracing::debug!(failures, error = %e, "heartbeat failed");
                }
            }
        }
    }
}
