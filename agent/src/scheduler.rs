//! The poll loop: one task per dataset that runs a [`Capture`] poll on a blocking thread every
//! `poll_interval`, or at the times of its cron-like `schedule` ([`crate::schedule`]).
//!
//! A failed poll (missing source file, locked database, disk full) is logged, recorded in the
//! outbox's dataset state, and retried at the next interval; other datasets are unaffected. A
//! poll that is running when shutdown starts is allowed to finish its current chunk (it checks
//! for cancellation only between chunks) and is then awaited, so a commit is never abandoned.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::DatasetConfig;
use crate::detect::Capture;
use crate::outbox::Outbox;

/// Polls one dataset until `cancel` fires.
pub async fn run(
    config: DatasetConfig,
    outbox_path: PathBuf,
    max_changes: u64,
    notify: Arc<Notify>,
    cancel: CancellationToken,
) {
    let dataset = config.name.clone();
    let schedule = config.poll_schedule();
    let mut capture: Option<Capture> = None;
    let mut last_failed = false;
    let first_wait = schedule.wait_before_first(jiff::Timestamp::now());
    if !first_wait.is_zero() {
        tracing::info!(dataset = %dataset, schedule = ?config.schedule, first_poll_in = ?first_wait, "waiting for the first scheduled poll");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(first_wait) => {}
        }
    }
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let taken = capture.take();
        let (cfg, path, token, n) = (config.clone(), outbox_path.clone(), cancel.clone(), Arc::clone(&notify));
        let joined = tokio::task::spawn_blocking(move || {
            let mut cap = match taken {
                Some(c) => c,
                None => {
                    let outbox = Outbox::open(&path).map_err(|e| e.to_string())?;
                    Capture::new(cfg, outbox, max_changes, token, Box::new(move || n.notify_one()))
                        .map_err(|e| e.to_string())?
                }
            };
            let result = cap.poll();
            Ok::<_, String>((cap, result))
        })
        .await;
        match joined {
            Ok(Ok((cap, result))) => {
                capture = Some(cap);
                match result {
                    Ok(r) => {
                        if r.changes > 0 || r.schema_changed || last_failed {
                            tracing::info!(
                                dataset = %dataset,
                                rows_read = r.rows_read,
                                changes = r.changes,
                                deletes = r.deletes,
                                interrupted = r.interrupted,
                                "poll complete"
                            );
                        } else {
                            tracing::debug!(dataset = %dataset, rows_read = r.rows_read, "poll complete, no changes");
                        }
                        last_failed = false;
                    }
                    Err(e) if e.is_disk_full() => {
                        tracing::error!(dataset = %dataset, error = %e, "outbox disk is full: nothing was lost, the poll will be retried; free disk space");
                        last_failed = true;
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(dataset = %dataset, error = %e, "poll failed; will retry next interval");
                        last_failed = true;
                    }
                    Err(e) => {
                        tracing::error!(dataset = %dataset, error = %e, "poll failed; operator action needed, will retry next interval");
                        last_failed = true;
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::error!(dataset = %dataset, error = %e, "cannot start capture; will retry next interval");
                last_failed = true;
            }
            Err(e) => {
                tracing::error!(dataset = %dataset, error = %e, "capture thread failed; restarting it next interval");
                last_failed = true;
            }
        }
        let wait = schedule.wait_after(jiff::Timestamp::now());
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::debug!(dataset = %dataset, "capture stopped");
}
