//! The forwarder: sends the outbox's changes to the hub, in sequence order, and deletes them only
//! when the hub acknowledges them.
//!
//! Loop: read up to `batch_max_changes` / `batch_max_bytes` changes starting at
//! `acked_through + 1`; if the batch would be partial, linger once for more; assemble the batch
//! (pre-encoded change payloads + the current schema of each dataset touched), compress, send it
//! through a [`Transport`], and act on the answer:
//!
//! - applied through `n` → [`Outbox::ack`]`(n)` deletes `≤ n` (the only deletion path);
//! - sequence gap, hub expects `E` with `acked_through ≤ E-1 < next_seq` → the hub already has
//!   `≤ E-1`: ack through `E-1` and continue from `E`;
//! - sequence gap with `E` outside that range → the hub lost data or this agent's outbox was reset:
//!   ERROR (operator action) and retry with backoff, deleting nothing;
//! - any other failure → retry with capped exponential backoff and jitter, forever; WARN when a
//!   retry may help by itself, ERROR when an operator must act (401/403/400/413/422).
//!
//! One batch is in flight at a time, so acks arrive in order and `acked_through` only grows.
//! The ack transaction runs on a blocking thread and is awaited to completion even during
//! shutdown; cancellation only interrupts waiting and sending.

pub mod https;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kho_shared::backoff::Backoff;
use kho_shared::codec::{self, BatchHeader, EncodedBody};
use kho_shared::protocol::{ErrorCode, Heartbeat};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ForwardSection;
use crate::outbox::{Outbox, OutboxError, Pending, now_ms};

/// How long the forwarder sleeps with nothing to send before it looks again even without a
/// capture notification (a safety net; notifications normally wake it at once).
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// The hub's answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every change up to `through` is applied.
    Applied { through: u64 },
    /// The hub expects the next batch to start at `expected`.
    Gap { expected: u64 },
}

/// Why a request to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot set up the hub client: {0}")]
    Setup(String),
    #[error("hub unreachable: {0}")]
    Network(String),
    #[error("hub refused the request (HTTP {status}{}): {message}", code.map(|c| format!(", {c:?}")).unwrap_or_default())]
    Rejected { status: u16, code: Option<ErrorCode>, message: String },
    #[error("hub sent an unexpected response (HTTP {status}): {message}")]
    BadResponse { status: u16, message: String },
}

impl TransportError {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Setup(_) => false,
            TransportError::Network(_) | TransportError::BadResponse { .. } => true,
            TransportError::Rejected { status, code, .. } => match code {
                Some(c) => c.is_transient(),
                None => *status >= 500 || *status == 408 || *status == 429,
            },
        }
    }
}

/// A way to reach the hub. HTTPS today; MQTT is another implementation.
pub trait Transport: Send + Sync + 'static {
    /// Sends an encoded batch and returns the hub's verdict.
    fn send_batch(&self, body: &EncodedBody) -> impl Future<Output = Result<Delivery, TransportError>> + Send;
    /// Sends a heartbeat.
    fn send_heartbeat(&self, heartbeat: &Heartbeat) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Why the forwarder stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("outbox task failed: {0}")]
    Join(String),
}

/// Sends the outbox to the hub.
pub struct Forwarder<T: Transport> {
    outbox: Arc<Mutex<Outbox>>,
    transport: Arc<T>,
    config: ForwardSection,
    agent: String,
    notify: Arc<Notify>,
    backoff: Backoff,
}

/// Runs blocking outbox work off the async runtime.
async fn blocking<R: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    f: impl FnOnce(&mut Outbox) -> Result<R, OutboxError> + Send + 'static,
) -> Result<R, ForwardError> {
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || {
        let mut guard = outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    })
    .await
    .map_err(|e| ForwardError::Join(e.to_string()))?
    .map_err(ForwardError::from)
}

/// What to do after an answer.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Ack through this sequence, then continue at once.
    Ack(u64),
    /// Wait (backoff) and retry.
    Retry,
}

/// Decides what a gap reply means given the outbox's counters (pure).
fn on_gap(expected: u64, acked_through: u64, next_seq: u64) -> Result<Next, String> {
    let have_through = next_seq.saturating_sub(1);
    if expected == 0 {
        return Err("hub expects sequence 0, which is never used".into());
    }
    let through = expected - 1;
    if through == acked_through {
        Err(format!(
            "hub expects seq {expected}, where this batch should have started: the outbox is missing changes \
             (run `kho-agent check`; operator action needed)"
        ))
    } else if through < acked_through {
        Err(format!(
            "hub expects seq {expected} but this outbox was already acknowledged through {acked_through} and \
             no longer holds it: the hub lost data or was reset (operator action needed)"
        ))
    } else if through > have_through {
        Err(format!(
            "hub expects seq {expected} but this agent has only captured through {have_through}: the agent's \
             outbox was reset or belongs to another agent id (operator action needed)"
        ))
    } else {
        Ok(Next::Ack(through))
    }
}

impl<T: Transport> Forwarder<T> {
    pub fn new(outbox: Outbox, transport: Arc<T>, config: ForwardSection, agent: String, notify: Arc<Notify>) -> Self {
        Forwarder { outbox: Arc::new(Mutex::new(outbox)), transport, config, agent, notify, backoff: Backoff::default() }
    }

    /// Overrides the retry schedule (tests use short delays).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Forwards until `cancel` fires. Only outbox failures stop it.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ForwardError> {
        let mut attempt: u32 = 0;
        let mut pending = Pending::default();
        let max_changes = self.config.batch_max_changes;
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let meta = blocking(&self.outbox, |o| o.meta()).await?;
            let depth = meta.depth();
            if depth == 0 {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep(IDLE_RECHECK) => {}
                }
                continue;
            }
            if (depth as usize) < max_changes && attempt == 0 && !self.config.linger.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.config.linger) => {}
                }
            }
            let from = meta.acked_through + 1;
            let max_bytes = self.config.batch_max_bytes;
            let (p, schemas) = blocking(&self.outbox, move |o| {
                o.read_pending(from, max_changes, max_bytes, &mut pending)?;
                let schemas = o.schemas(&pending.datasets)?;
                Ok((pending, schemas))
            })
            .await?;
            pending = p;
            if pending.is_empty() {
                continue;
            }
            if pending.first_seq != from {
                tracing::error!(
                    expected = from,
                    found = pending.first_seq,
                    "outbox is missing changes before the oldest one it holds; run `kho-agent check`"
                );
            }
            let header = BatchHeader {
                agent: &self.agent,
                first_seq: pending.first_seq,
                last_seq: pending.last_seq,
                created_at_ms: now_ms(),
                schemas: &schemas,
            };
            let json = codec::assemble(&header, pending.payloads());
            let body = match codec::compress(&json) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "could not compress a batch");
                    attempt = self.wait_retry(attempt, &cancel).await;
                    continue;
                }
            };
            drop(json);
            let (first, last) = (pending.first_seq, pending.last_seq);
            let result = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = self.transport.send_batch(&body) => r,
            };
            let next = match result {
                Ok(Delivery::Applied { through }) if through >= first => {
                    if through > last {
                        tracing::warn!(through, last_seq = last, "hub acknowledged more than the batch carried; acking the batch only");
                    }
                    Next::Ack(through.min(last))
                }
                Ok(Delivery::Applied { through }) => {
                    tracing::warn!(through, first_seq = first, "hub acknowledged less than the batch; resending");
                    Next::Retry
                }
                Ok(Delivery::Gap { expected }) => match on_gap(expected, meta.acked_through, meta.next_seq) {
                    Ok(next) => {
                        tracing::info!(expected, "hub already has earlier changes; continuing from its expected sequence");
                        next
                    }
                    Err(problem) => {
                        tracing::error!(expected, acked_through = meta.acked_through, "{problem}");
                        Next::Retry
                    }
                },
                Err(e) if e.is_transient() => {
                    tracing::warn!(first_seq = first, last_seq = last, attempt, error = %e, "batch not delivered; will retry");
                    Next::Retry
                }
                Err(e) => {
                    tracing::error!(first_seq = first, last_seq = last, attempt, error = %e, "hub refused the batch; operator action needed, will keep retrying");
                    Next::Retry
                }
            };
            match next {
                Next::Ack(through) => {
                    // Not cancellable: the ack's transaction always runs to completion.
                    let deleted = blocking(&self.outbox, move |o| o.ack(through, now_ms())).await?;
                    tracing::debug!(through, deleted, "acknowledged");
                    attempt = 0;
                }
                Next::Retry => attempt = self.wait_retry(attempt, &cancel).await,
            }
        }
    }

    async fn wait_retry(&self, attempt: u32, cancel: &CancellationToken) -> u32 {
        let delay = self.backoff.delay(attempt, fastrand::f64());
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
        attempt.saturating_add(1)
    }
}

#[cfg(test)]
mod tests;
