//! The forwarder: sends the outbox's changes to the hub, in sequence order, and deletes them only
//! when the hub acknowledges them.
//!
//! Loop: read up to `batch_max_changes` / `batch_max_bytes` changes starting after the last
//! acknowledged one; if the batch would be partial, linger once for more; assemble the batch
//! (pre-encoded change payloads + the current schema of each dataset touched) and compress it in
//! one streamed pass, send it through a [`Transport`], and act on the answer:
//!
//! - applied through `n` → [`Outbox::ack`]`(n)` deletes `≤ n` (the only deletion path);
//! - sequence gap, hub expects `E` with `acked_through ≤ E-1 < next_seq` → the hub already has
//!   `≤ E-1`: ack through `E-1` and continue from `E`;
//! - sequence gap with `E` outside that range → the hub lost data or this agent's outbox was reset:
//!   ERROR (operator action) and retry with backoff, deleting nothing;
//! - any other failure → retry with capped exponential backoff and jitter, forever; WARN when a
//!   retry may help by itself, ERROR when an operator must act (401/403/400/413/422).
//!
//! Over HTTPS up to `forward.max_in_flight` batches (default 2) travel at once, so the hub applies
//! batch `k` while `k+1` crosses the network and is decoded; over MQTT one at a time. Answers are
//! taken in sequence order, so `acked_through` only grows; a failed batch stops the ones behind it
//! and sending starts again after the last ack (the hub queues an agent's batches in arrival order
//! and its ledger refuses any that still come early; such a stale gap reply is resent at once).
//! While batches travel, the next one is read, assembled and compressed on a blocking thread (a
//! read-ahead of exactly one batch, discarded if an answer moves the start), and acks are written by a separate task that
//! coalesces the ones that arrive while it is busy, so neither the next send nor capture waits for
//! a delete's fsync. Deleting after the next send has started is safe: until the delete commits,
//! a restart resends those changes and the hub acknowledges them as duplicates. The last ack is
//! always written before [`Forwarder::run`] returns, even during shutdown; cancellation only
//! interrupts waiting, reading ahead and sending. When the outbox drains, the connection's page
//! cache is released, so an idle agent does not keep memory sized for a large sync.

pub mod https;
pub mod mqtt;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kho_shared::backoff::Backoff;
use kho_shared::codec::{self, BatchHeader, CodecError, EncodedBody};
use kho_shared::protocol::{ErrorCode, Heartbeat};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ForwardSection;
use crate::outbox::{Outbox, OutboxError, Pending, now_ms};

/// How long the forwarder sleeps with nothing to send before it looks again even without a
/// capture notification (a safety net; notifications normally wake it at once).
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// The hub's answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every change up to `through` is applied (`quality`: rows the hub held in quarantine
    /// instead, and rows that left it).
    Applied { through: u64, quality: AckQuality },
    /// The hub expects the next batch to start at `expected`.
    Gap { expected: u64 },
}

/// What an ack says about the hub's quarantine (its `reject` data-quality rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckQuality {
    pub quarantined: Vec<kho_shared::protocol::QuarantinedRow>,
    pub released: Vec<kho_shared::protocol::RowRef>,
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
    #[error("hub refused the batch ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("hub sent an unexpected response (HTTP {status}): {message}")]
    BadResponse { status: u16, message: String },
}

impl TransportError {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Setup(_) => false,
            TransportError::Network(_) | TransportError::BadResponse { .. } => true,
            TransportError::Refused { code, .. } => code.is_transient(),
            TransportError::Rejected { status, code, .. } => match code {
                Some(c) => c.is_transient(),
                None => *status >= 500 || *status == 408 || *status == 429,
            },
        }
    }
}

/// A way to reach the hub: [`https::HttpsTransport`] or [`mqtt::MqttTransport`].
pub trait Transport: Send + Sync + 'static {
    /// Sends an encoded batch and returns the hub's verdict.
    fn send_batch(&self, body: &EncodedBody) -> impl Future<Output = Result<Delivery, TransportError>> + Send;
    /// Sends a heartbeat.
    fn send_heartbeat(&self, heartbeat: &Heartbeat) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Most batches this transport can usefully have in flight at once.
    fn max_in_flight(&self) -> usize {
        1
    }
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
    agent: Arc<str>,
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
    /// Resend at once (the answer was stale, not a failure).
    Resend,
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

/// A batch read, assembled and compressed, ready to send (and to resend unchanged).
struct Prepared {
    first_seq: u64,
    last_seq: u64,
    body: EncodedBody,
}

/// The outcome of preparing the batch that starts at a given sequence.
enum Ready {
    Batch(Prepared),
    /// Nothing captured at or after that sequence yet.
    Empty,
    /// The batch could not be compressed (never expected); retried after a backoff.
    Unencodable(CodecError),
}

/// A batch sent and not yet answered. Its send runs as a task of its own, so the next batch can
/// go before this one's answer.
struct InFlight {
    batch: Arc<Prepared>,
    /// What was acknowledged when it was sent (see the stale-gap rule in `judge`).
    acked_at_send: u64,
    task: JoinHandle<Result<Delivery, TransportError>>,
}

/// What woke the sending loop.
enum Event {
    /// The oldest batch in flight was answered.
    Answer(Result<Delivery, TransportError>),
    /// The read-ahead finished.
    Ready(Result<Result<(Ready, Pending), ForwardError>, tokio::task::JoinError>),
}

/// The answer to the oldest batch in flight (pending forever when none is).
async fn oldest_answer(flight: &mut VecDeque<InFlight>) -> Result<Delivery, TransportError> {
    match flight.front_mut() {
        Some(f) => {
            (&mut f.task).await.unwrap_or_else(|e| Err(TransportError::Network(format!("send task stopped: {e}"))))
        }
        None => std::future::pending().await,
    }
}

/// The read-ahead's result (pending forever when none runs).
async fn next_ready(
    ahead: &mut Option<ReadAhead>,
) -> Result<Result<(Ready, Pending), ForwardError>, tokio::task::JoinError> {
    match ahead.as_mut() {
        Some(a) => (&mut a.task).await,
        None => std::future::pending().await,
    }
}

/// Stops every send in flight. The hub may still apply what it already received; the ledger
/// makes the resend of those changes a harmless duplicate.
fn abort_all(flight: &mut VecDeque<InFlight>) {
    for f in flight.drain(..) {
        f.task.abort();
    }
}

/// A batch being prepared in the background while the previous one is in flight. The task hands
/// back the read buffer with its result, so a burst reuses one buffer rather than allocating (and
/// leaving the allocator to purge) megabytes per batch.
struct ReadAhead {
    from: u64,
    task: JoinHandle<Result<(Ready, Pending), ForwardError>>,
}

/// Reads, assembles and compresses the batch starting at `from` (blocking; one outbox read).
fn prepare_now(
    o: &mut Outbox,
    from: u64,
    max_changes: usize,
    max_bytes: usize,
    agent: &str,
    pending: &mut Pending,
) -> Result<Ready, OutboxError> {
    o.read_pending(from, max_changes, max_bytes, pending)?;
    if pending.is_empty() {
        return Ok(Ready::Empty);
    }
    if pending.first_seq != from {
        tracing::error!(
            expected = from,
            found = pending.first_seq,
            "outbox is missing changes before the oldest one it holds; run `kho-agent check`"
        );
    }
    let schemas = o.schemas(&pending.datasets)?;
    let header = BatchHeader {
        agent,
        first_seq: pending.first_seq,
        last_seq: pending.last_seq,
        created_at_ms: now_ms(),
        schemas: &schemas,
    };
    Ok(match codec::assemble_compressed(&header, pending.payloads()) {
        Ok(body) => Ready::Batch(Prepared { first_seq: pending.first_seq, last_seq: pending.last_seq, body }),
        Err(e) => Ready::Unencodable(e),
    })
}

/// Persists acknowledgements: deletes through the latest value published on `acks`, one
/// transaction at a time. Acks that arrive while one is being written are coalesced into the next,
/// so a slow disk never holds up sending. When the forwarder drops its sender, the last value is
/// still written before this returns: an ack the hub gave is not forgotten at shutdown.
async fn persist_acks(outbox: Arc<Mutex<Outbox>>, mut acks: watch::Receiver<u64>) -> Result<(), ForwardError> {
    let mut written = *acks.borrow_and_update();
    loop {
        let open = acks.changed().await.is_ok();
        let through = *acks.borrow_and_update();
        if through > written {
            let deleted = blocking(&outbox, move |o| o.ack(through, now_ms())).await?;
            tracing::debug!(through, deleted, "acknowledged changes deleted");
            written = through;
        }
        if !open {
            return Ok(());
        }
    }
}

impl<T: Transport> Forwarder<T> {
    pub fn new(outbox: Outbox, transport: Arc<T>, config: ForwardSection, agent: String, notify: Arc<Notify>) -> Self {
        Forwarder {
            outbox: Arc::new(Mutex::new(outbox)),
            transport,
            config,
            agent: agent.into(),
            notify,
            backoff: Backoff::default(),
        }
    }

    /// Overrides the retry schedule (tests use short delays).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts preparing the batch that begins at `from` in the background. When fewer than a
    /// full batch are waiting it first lingers once, so a trickle of changes travels in one batch.
    fn read_ahead(&self, from: u64, mut pending: Pending) -> ReadAhead {
        let outbox = Arc::clone(&self.outbox);
        let (max_changes, max_bytes, linger) =
            (self.config.batch_max_changes, self.config.batch_max_bytes, self.config.linger);
        let agent = Arc::clone(&self.agent);
        let task = tokio::spawn(async move {
            let waiting = blocking(&outbox, |o| o.meta()).await?.next_seq.saturating_sub(from);
            if waiting == 0 {
                return Ok((Ready::Empty, pending));
            }
            if (waiting as usize) < max_changes && !linger.is_zero() {
                tokio::time::sleep(linger).await;
            }
            blocking(&outbox, move |o| {
                let ready = prepare_now(o, from, max_changes, max_bytes, &agent, &mut pending)?;
                Ok((ready, pending))
            })
            .await
        });
        ReadAhead { from, task }
    }

    /// Forwards until `cancel` fires. Only outbox failures stop it. Acknowledged changes are
    /// deleted before this returns.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ForwardError> {
        let acked = blocking(&self.outbox, |o| o.meta()).await?.acked_through;
        let (acks, ack_rx) = watch::channel(acked);
        let persister = tokio::spawn(persist_acks(Arc::clone(&self.outbox), ack_rx));
        let sent = self.send_loop(acked, &acks, &persister, &cancel).await;
        drop(acks);
        // Not cancellable: the last ack's transaction always runs to completion.
        let persisted = persister.await.map_err(|e| ForwardError::Join(e.to_string())).and_then(|r| r);
        sent.and(persisted)
    }

    /// The sending loop. Up to `max_in_flight` batches travel at once (HTTPS; one over MQTT), in
    /// sequence order, and their answers are taken in that order; the next batch is read,
    /// assembled and compressed while they travel, and acks are persisted by [`persist_acks`].
    async fn send_loop(
        &self,
        mut acked: u64,
        acks: &watch::Sender<u64>,
        persister: &JoinHandle<Result<(), ForwardError>>,
        cancel: &CancellationToken,
    ) -> Result<(), ForwardError> {
        let window = self.config.max_in_flight.clamp(1, self.transport.max_in_flight().max(1));
        let mut attempt: u32 = 0;
        let mut flight: VecDeque<InFlight> = VecDeque::new();
        // Where the next batch to send starts.
        let mut next_from = acked + 1;
        let mut ahead: Option<ReadAhead> = None;
        // The read buffer while no read-ahead holds it; dropped when the outbox drains.
        let mut spare: Option<Pending> = None;
        let mut released = false;
        // The outbox had nothing past `next_from`: wait for an answer before looking again.
        let mut drained = false;
        loop {
            if cancel.is_cancelled() || persister.is_finished() {
                break;
            }
            let want = flight.len() < window && !drained;
            if want && ahead.as_ref().is_none_or(|a| a.from != next_from) {
                if let Some(stale) = ahead.take() {
                    stale.task.abort();
                }
                ahead = Some(self.read_ahead(next_from, spare.take().unwrap_or_default()));
            }
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                r = oldest_answer(&mut flight) => Event::Answer(r),
                r = next_ready(&mut ahead), if want => Event::Ready(r),
            };
            match event {
                Event::Ready(ready) => {
                    ahead = None;
                    let (ready, buffer) = ready.map_err(|e| ForwardError::Join(e.to_string()))??;
                    spare = Some(buffer);
                    match ready {
                        Ready::Batch(b) => {
                            released = false;
                            next_from = b.last_seq + 1;
                            flight.push_back(self.send(b, acked));
                        }
                        Ready::Empty if !flight.is_empty() => drained = true,
                        Ready::Empty => {
                            if !released {
                                // The burst is over: give back what it grew.
                                spare = None;
                                blocking(&self.outbox, |o| o.release_memory()).await?;
                                released = true;
                            }
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = self.notify.notified() => {}
                                _ = tokio::time::sleep(IDLE_RECHECK) => {}
                            }
                        }
                        Ready::Unencodable(e) => {
                            tracing::error!(error = %e, "could not compress a batch");
                            attempt = self.wait_retry(attempt, cancel).await;
                        }
                    }
                }
                Event::Answer(result) => {
                    drained = false;
                    let Some(sent) = flight.pop_front() else { continue };
                    match self.judge(&sent, result, acked, attempt).await? {
                        Next::Ack(through) => {
                            acked = acked.max(through);
                            acks.send_replace(acked);
                            tracing::debug!(first_seq = sent.batch.first_seq, through, "batch acknowledged");
                            attempt = 0;
                            // The batches behind it must start right after what is acknowledged.
                            let expected = acked + 1;
                            if flight.front().map_or(next_from, |f| f.batch.first_seq) != expected {
                                abort_all(&mut flight);
                                next_from = expected;
                            }
                        }
                        next @ (Next::Retry | Next::Resend) => {
                            // Whatever was sent after it depends on it: start again after the ack.
                            abort_all(&mut flight);
                            next_from = acked + 1;
                            if next == Next::Retry {
                                attempt = self.wait_retry(attempt, cancel).await;
                            }
                        }
                    }
                }
            }
        }
        abort_all(&mut flight);
        if let Some(a) = ahead {
            a.task.abort();
        }
        Ok(())
    }

    /// Starts sending `batch` in its own task.
    fn send(&self, batch: Prepared, acked: u64) -> InFlight {
        let batch = Arc::new(batch);
        let (transport, body) = (Arc::clone(&self.transport), Arc::clone(&batch));
        let task = tokio::spawn(async move { transport.send_batch(&body.body).await });
        InFlight { batch, acked_at_send: acked, task }
    }

    /// What the hub's answer to `sent` means, `acked` being what is acknowledged so far.
    async fn judge(
        &self,
        sent: &InFlight,
        result: Result<Delivery, TransportError>,
        acked: u64,
        attempt: u32,
    ) -> Result<Next, ForwardError> {
        let (first, last) = (sent.batch.first_seq, sent.batch.last_seq);
        Ok(match result {
            Ok(Delivery::Applied { through, quality }) if through >= first => {
                if through > last {
                    tracing::warn!(
                        through,
                        last_seq = last,
                        "hub acknowledged more than the batch carried; acking the batch only"
                    );
                }
                if !quality.quarantined.is_empty() || !quality.released.is_empty() {
                    for q in &quality.quarantined {
                        tracing::warn!(dataset = %q.dataset, key = %q.key, reason = %q.reason, "the hub held a row in quarantine; fix it at the source");
                    }
                    let AckQuality { quarantined, released } = quality;
                    blocking(&self.outbox, move |o| o.record_quarantine(&quarantined, &released, now_ms())).await?;
                }
                Next::Ack(through.min(last))
            }
            Ok(Delivery::Applied { through, .. }) => {
                tracing::warn!(through, first_seq = first, "hub acknowledged less than the batch; resending");
                Next::Retry
            }
            // Sent while an earlier batch was still unanswered, and that one has been acknowledged
            // since: the hub answered before it applied the earlier one. Resend at once.
            Ok(Delivery::Gap { expected }) if expected <= acked && acked > sent.acked_at_send => {
                tracing::debug!(expected, acked_through = acked, "batch overtook its predecessor; resending");
                Next::Resend
            }
            Ok(Delivery::Gap { expected }) => {
                let next_seq = blocking(&self.outbox, |o| o.meta()).await?.next_seq;
                match on_gap(expected, acked, next_seq) {
                    Ok(next) => {
                        tracing::info!(
                            expected,
                            "hub already has earlier changes; continuing from its expected sequence"
                        );
                        next
                    }
                    Err(problem) => {
                        tracing::error!(expected, acked_through = acked, "{problem}");
                        Next::Retry
                    }
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(first_seq = first, last_seq = last, attempt, error = %e, "batch not delivered; will retry");
                Next::Retry
            }
            Err(e) => {
                tracing::error!(first_seq = first, last_seq = last, attempt, error = %e, "hub refused the batch; operator action needed, will keep retrying");
                Next::Retry
            }
        })
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
