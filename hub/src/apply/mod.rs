//! The single writer: every batch and heartbeat goes through one thread that owns the
//! warehouse's write connection.
//!
//! Invariants:
//! - **Exactly once** (architecture invariant 3). Per agent the ledger holds `L`, the highest applied
//!   sequence, and is written in the same transaction as the rows. [`plan`] decides from `L` alone:
//!   a batch ending at or below `L` is acknowledged with `L` and applies nothing; a batch that
//!   overlaps `L` (the agent re-batched after a lost ack) applies only its changes above `L`; a
//!   batch starting past `L + 1` is refused with the expected sequence.
//! - **Per-agent order** (invariant 4): one thread applies all of an agent's jobs, in queue order
//!   (an agent is always routed to the same writer), and an agent's batches are queued in the order
//!   they arrived ([`ApplierHandle::apply`]; an agent over HTTPS sends its next batch while the
//!   previous one is applied). SQLite has exactly one writer; PostgreSQL has `warehouse.writers`, each
//!   with its own connection, so different agents' batches are applied in parallel. The
//!   exactly-once rule ([`plan`]) is the same either way: it reads the agent's ledger inside the
//!   writer's transaction.
//! - **Several hub instances**: a group first locks its agents' ledger rows ([`Warehouse::lock_group`])
//!   and writes the per-dataset metadata rows (last change, freshness evidence) only after its last
//!   job ([`Warehouse::finish_group`]), so groups of different agents overlap their work.
//! - **Group commit**: the thread drains what is waiting (up to [`MAX_GROUP_JOBS`] jobs or
//!   [`MAX_GROUP_CHANGES`] changes) into one transaction. Each job runs inside its own savepoint and
//!   reads the ledger inside the transaction, so a later job of the same agent sees the earlier
//!   one's ledger update, and one job's failure (a schema conflict) rolls back only that job.
//!   Replies go out only after `COMMIT` returned: nothing is acknowledged that is not durable.
//! - **Bounded**: the queue holds [`QUEUE_CAPACITY`] jobs; when it is full, handlers wait (and time
//!   out with 503), so memory stays bounded under any load.
//! - **Idle is small**: once no batch has arrived for [`IDLE_RELEASE_AFTER`], the writer's page
//!   cache (sized for bulk loads) is handed back; heartbeats alone do not keep it.
//! - **Freshness evidence with the data**: the batch's last-change time, the maximum of each
//!   dataset's catalogue `freshness_field` among the batch's rows (computed here, never by a table
//!   scan), and the confirmation of pending syncs are written in the batch's own savepoint. The
//!   evaluator's status transitions go through this same thread, as the warehouse's only writer.

pub(crate) mod activity;
mod context;
mod locks;
mod order;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kho_shared::protocol::{Batch, Change, Heartbeat};
use tokio::sync::{mpsc, oneshot};

pub use activity::{activity, business_date, business_day};
pub use order::{Arrival, ORDER_WAIT};

use crate::warehouse::{AgentTransition, StoredTransition, Warehouse, WarehouseError};

/// Jobs waiting for the writer. Each holds a decoded batch (up to `max_decoded_bytes` of JSON), so
/// this bounds the hub's memory as much as it bounds latency.
pub const QUEUE_CAPACITY: usize = 32;
/// Smallest queue per writer when several share [`QUEUE_CAPACITY`].
pub const MIN_QUEUE_CAPACITY: usize = 4;
/// Most jobs committed in one transaction: enough to amortise the fsync across many agents.
pub const MAX_GROUP_JOBS: usize = 64;
/// Stop adding jobs to a group past this many changes, so one commit stays a few seconds at most.
pub const MAX_GROUP_CHANGES: usize = 200_000;
/// Quiet time after the last batch before the writer releases its page cache: long enough that a
/// sync in progress never pays for re-reading pages, short enough that a hub between syncs is small.
pub const IDLE_RELEASE_AFTER: Duration = Duration::from_secs(3);

/// What the ledger says to do with a batch `first..=last` when `applied` is the ledger's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Everything is already applied: acknowledge `applied` again.
    Duplicate,
    /// Apply the changes from index `skip` on (those with a sequence above the ledger).
    Apply { skip: usize },
    /// The batch starts past the next expected sequence.
    Gap { expected: u64 },
}

/// The ledger decision. Pure: the whole exactly-once rule is here.
pub fn plan(applied: u64, first: u64, last: u64) -> Plan {
    if last <= applied {
        Plan::Duplicate
    } else if first > applied.saturating_add(1) {
        Plan::Gap { expected: applied + 1 }
    } else {
        Plan::Apply { skip: (applied + 1).saturating_sub(first) as usize }
    }
}

/// A batch's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied_through: u64,
    /// Changes written by this batch (0 for a duplicate).
    pub changes: u64,
    pub duplicate: bool,
    /// Rows held in quarantine by `reject` quality rules instead of being loaded.
    pub quarantined: Vec<kho_shared::protocol::QuarantinedRow>,
    /// Rows that left quarantine with this batch.
    pub released: Vec<kho_shared::protocol::RowRef>,
}

/// Why a job was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("sequence gap: expected {expected}")]
    Gap { expected: u64 },
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// The group's transaction failed as a whole; nothing of it was written.
    #[error("warehouse transaction failed: {0}")]
    Transaction(String),
    #[error("the applier has stopped")]
    Stopped,
}

enum Job {
    /// `digest`: the sha256 of the body as sent, recorded in the batch's audit entry.
    Batch {
        batch: Box<Batch>,
        digest: String,
        queued: Instant,
        reply: oneshot::Sender<Result<Applied, ApplyError>>,
    },
    /// `transport`: what the heartbeat came over (`https`, `mqtt`), shown in `kho-hub agent list`.
    Heartbeat {
        heartbeat: Heartbeat,
        transport: &'static str,
        reply: oneshot::Sender<Result<(), ApplyError>>,
    },
    Records {
        records: Records,
        reply: oneshot::Sender<Result<(), ApplyError>>,
    },
}

/// What the periodic evaluators write: dataset status transitions, agent liveness transitions
/// and bookkeeping values (freshness), a quality pass and quality history (quality), all in one
/// savepoint so they are stored together or not at all.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub transitions: Vec<StoredTransition>,
    pub agent_transitions: Vec<AgentTransition>,
    pub meta: Vec<(String, String)>,
    /// The periodic quality checks ([`crate::quality::periodic`]).
    pub quality: Option<Arc<crate::quality::periodic::Work>>,
    pub quality_history: Vec<crate::warehouse::QualityPeriod>,
}

impl Records {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        let quality = self.quality.as_ref().map_or(0, |w| w.datasets.len());
        self.transitions.len() + self.agent_transitions.len() + self.meta.len() + quality + self.quality_history.len()
    }

    fn write(&self, wh: &mut dyn Warehouse) -> Result<(), WarehouseError> {
        wh.record_transitions(&self.transitions)?;
        wh.record_agent_transitions(&self.agent_transitions)?;
        for (key, value) in &self.meta {
            wh.set_meta(key, value)?;
        }
        if let Some(work) = &self.quality {
            crate::quality::periodic::run(wh, work)?;
        }
        wh.record_quality_history(&self.quality_history)
    }
}

impl Job {
    fn changes(&self) -> usize {
        match self {
            Job::Batch { batch, .. } => batch.changes.len(),
            Job::Heartbeat { .. } => 1,
            Job::Records { records, .. } => records.len(),
        }
    }
}

/// The async side's handle to the writer threads. Cloning is cheap; the threads stop once every
/// handle is dropped and their queues are empty.
#[derive(Clone)]
pub struct ApplierHandle {
    /// One queue per writer thread; [`ApplierHandle::queue_of`] picks an agent's.
    queues: Arc<[mpsc::Sender<Job>]>,
    /// Batches received and not yet queued, per agent, in arrival order ([`order`]).
    lines: order::Lines,
}

impl ApplierHandle {
    /// The queue of `agent`'s writer: always the same one, so one agent's batches are applied in
    /// order by one thread (invariant 4) while different agents' go in parallel.
    fn queue_of(&self, agent: &str) -> &mpsc::Sender<Job> {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() has fixed keys: the same agent maps to the same writer all run long.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        agent.hash(&mut h);
        &self.queues[(h.finish() % self.queues.len() as u64) as usize]
    }

    /// Takes `agent`'s place in line for a batch that has just arrived, before it is decoded.
    /// Hand it to [`ApplierHandle::apply`]; dropping it (a refused batch) gives the place up.
    pub fn arrive(&self, agent: &str) -> Arrival {
        self.lines.arrive(agent)
    }

    /// Queues a validated, authorised batch and waits until it is committed (or refused).
    ///
    /// An agent may have two batches in flight (the next travels while the hub applies the
    /// previous), and the later one may finish decoding first. So a batch is queued only once the
    /// batches of the same agent that arrived before it are queued or refused (waiting at most
    /// [`ORDER_WAIT`]). This only saves needless gap replies: correctness stays with the ledger
    /// ([`plan`]), which refuses a batch that still comes early, and the agent resends it.
    ///
    /// A batch that applies changes gets its `batch_applied` audit entry (with `digest`, the
    /// sha256 of the body as sent) in the same transaction as its rows and ledger.
    pub async fn apply(&self, batch: Batch, digest: String, arrival: Arrival) -> Result<Applied, ApplyError> {
        let (reply, rx) = oneshot::channel();
        let queue = self.queue_of(&batch.agent).clone();
        let _ = tokio::time::timeout(ORDER_WAIT, arrival.turn()).await;
        let job = Job::Batch { batch: Box::new(batch), digest, queued: Instant::now(), reply };
        queue.send(job).await.map_err(|_| ApplyError::Stopped)?;
        drop(arrival);
        rx.await.map_err(|_| ApplyError::Stopped)?
    }

    /// Queues a heartbeat and waits until it is stored (by the agent's writer, after its batches).
    pub async fn heartbeat(&self, heartbeat: Heartbeat, transport: &'static str) -> Result<(), ApplyError> {
        let (reply, rx) = oneshot::channel();
        let queue = self.queue_of(&heartbeat.agent).clone();
        queue.send(Job::Heartbeat { heartbeat, transport, reply }).await.map_err(|_| ApplyError::Stopped)?;
        rx.await.map_err(|_| ApplyError::Stopped)?
    }

    /// Queues the evaluator's records and waits until they are stored.
    pub async fn record(&self, records: Records) -> Result<(), ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.queues[0].send(Job::Records { records, reply }).await.map_err(|_| ApplyError::Stopped)?;
        rx.await.map_err(|_| ApplyError::Stopped)?
    }
}

pub use context::ApplierContext;

/// Starts the writer thread. Join the returned handle after dropping every [`ApplierHandle`] to
/// be sure the last commit finished.
pub fn spawn(
    warehouse: Box<dyn Warehouse>,
    ctx: ApplierContext,
) -> std::io::Result<(ApplierHandle, std::thread::JoinHandle<()>)> {
    spawn_pool(vec![warehouse], ctx)
}

/// Starts one writer thread per warehouse writer (SQLite: one; PostgreSQL: `warehouse.writers`).
/// The queues share [`QUEUE_CAPACITY`] between them, so more writers do not mean more memory.
/// The returned thread finishes when every writer has; it panics if one of them did.
pub fn spawn_pool(
    warehouses: Vec<Box<dyn Warehouse>>,
    ctx: ApplierContext,
) -> std::io::Result<(ApplierHandle, std::thread::JoinHandle<()>)> {
    let n = warehouses.len().max(1);
    let capacity = (QUEUE_CAPACITY / n).max(MIN_QUEUE_CAPACITY);
    // Without a runtime (never the case in the hub) the idle release is simply skipped.
    let runtime = tokio::runtime::Handle::try_current().ok();
    let mut queues = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for (i, warehouse) in warehouses.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(capacity);
        let (ctx, runtime) = (ctx.clone(), runtime.clone());
        let name = if n == 1 { "kho-applier".to_string() } else { format!("kho-applier-{i}") };
        threads.push(std::thread::Builder::new().name(name).spawn(move || {
            let span = tracing::info_span!("applier", writer = i);
            let _entered = span.enter();
            run(warehouse, rx, &ctx, runtime.as_ref());
        })?);
        queues.push(tx);
    }
    let joiner = std::thread::Builder::new().name("kho-applier-join".into()).spawn(move || {
        // Join all first, then pass the first panic on, so the hub reports an unclean stop.
        let results: Vec<_> = threads.into_iter().map(std::thread::JoinHandle::join).collect();
        if let Some(Err(panic)) = results.into_iter().find(Result::is_err) {
            std::panic::resume_unwind(panic);
        }
    })?;
    let handle = ApplierHandle { queues: queues.into(), lines: order::Lines::default() };
    Ok((handle, joiner))
}

/// Waits for the next job. While the cache holds a burst's pages (`last_batch` is set), waits at
/// most until [`IDLE_RELEASE_AFTER`] has passed since that batch, then releases the cache.
fn next_job(
    warehouse: &mut dyn Warehouse,
    rx: &mut mpsc::Receiver<Job>,
    runtime: Option<&tokio::runtime::Handle>,
    last_batch: &mut Option<Instant>,
) -> Option<Job> {
    loop {
        let (Some(rt), Some(at)) = (runtime, *last_batch) else {
            return rx.blocking_recv();
        };
        let left = IDLE_RELEASE_AFTER.saturating_sub(at.elapsed());
        // The timer must be created inside the runtime's context, hence the async block.
        match rt.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
            Ok(job) => return job,
            Err(_quiet) => {
                warehouse.release_memory();
                tracing::debug!("no batch for a while; warehouse cache released");
                *last_batch = None;
            }
        }
    }
}

fn run(
    mut warehouse: Box<dyn Warehouse>,
    mut rx: mpsc::Receiver<Job>,
    ctx: &ApplierContext,
    runtime: Option<&tokio::runtime::Handle>,
) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP_JOBS);
    let mut last_batch: Option<Instant> = None;
    let mut syncs = crate::quality::share::Syncs::default();
    while let Some(first) = next_job(warehouse.as_mut(), &mut rx, runtime, &mut last_batch) {
        let mut changes = first.changes();
        group.push(first);
        while group.len() < MAX_GROUP_JOBS && changes < MAX_GROUP_CHANGES {
            match rx.try_recv() {
                Ok(job) => {
                    changes += job.changes();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        if group.iter().any(|job| matches!(job, Job::Batch { .. })) {
            last_batch = Some(Instant::now());
        }
        commit_group(warehouse.as_mut(), &mut group, ctx, &mut syncs);
    }
    tracing::info!("applier stopped: queue closed and drained");
}

enum Outcome {
    Batch(Result<Applied, ApplyError>),
    Heartbeat(Result<(), ApplyError>),
}

/// `syncs`: the open syncs of `max_change_share` rules; a job that fails leaves them as they were.
fn commit_group(
    wh: &mut dyn Warehouse,
    group: &mut Vec<Job>,
    ctx: &ApplierContext,
    syncs: &mut crate::quality::share::Syncs,
) {
    let metrics = &ctx.metrics;
    let now = ctx.clock.now_rfc3339();
    let catalog = ctx.catalog.get();
    let today = kho_shared::schedule::local_date(ctx.clock.now());
    let mut tallies: Vec<crate::quality::ingest::Tally> = group.iter().map(|_| Default::default()).collect();
    let at_ms = ctx.clock.now().as_millisecond();
    let syncs_before = syncs.clone();
    let result = (|| -> Result<Vec<Outcome>, WarehouseError> {
        wh.begin()?;
        // Other hub instances may share the warehouse: lock the agents' ledger rows, in order.
        wh.lock_group(&locks::lock_set(group), &now)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut audit = Vec::new();
        for (job, tally) in group.iter().zip(tallies.iter_mut()) {
            wh.savepoint()?;
            let job_syncs = syncs.clone();
            let outcome = match job {
                Job::Batch { batch, digest, .. } => {
                    let result = apply_batch(wh, batch, &now, today, &catalog, tally, syncs);
                    if let Ok(applied) = &result
                        && !applied.duplicate
                    {
                        crate::privacy::record(wh, &ctx.privacy, &batch.schemas)?;
                        let (rows, through) = (applied.changes, applied.applied_through);
                        audit.push(crate::audit::Entry::batch_applied(batch, digest, rows, through, at_ms));
                    }
                    Outcome::Batch(result)
                }
                Job::Heartbeat { heartbeat, transport, .. } => {
                    let mut stored = || -> Result<(), WarehouseError> {
                        wh.record_heartbeat(heartbeat, transport, &now)?;
                        if syncs.watching(wh, &catalog, &heartbeat.agent)? {
                            let applied = wh.applied_seq(&heartbeat.agent)?;
                            syncs.close(wh, heartbeat, applied, &now)?;
                        }
                        Ok(())
                    };
                    Outcome::Heartbeat(stored().map_err(ApplyError::from))
                }
                Job::Records { records, .. } => Outcome::Heartbeat(records.write(wh).map_err(ApplyError::from)),
            };
            let failed = matches!(&outcome, Outcome::Batch(Err(_)) | Outcome::Heartbeat(Err(_)));
            if failed {
                *syncs = job_syncs;
                wh.rollback_to_savepoint()?;
            } else {
                wh.release_savepoint()?;
            }
            outcomes.push(outcome);
        }
        // The per-dataset metadata rows, in one order, so they are locked only from here on.
        wh.finish_group()?;
        // Last, so the chain's lock (PostgreSQL: shared by every writer) is held only until COMMIT.
        // An entry that cannot be written fails the whole group: nothing is applied unaudited.
        for entry in &audit {
            wh.append_audit(entry)?;
        }
        wh.commit()?;
        Ok(outcomes)
    })();
    let outcomes = match result {
        Ok(outcomes) => {
            metrics.commit_group();
            outcomes
        }
        Err(e) => {
            // Logged once here; each waiting request answers 503/500 without logging again.
            tracing::error!(error = %e, jobs = group.len(), "warehouse transaction failed; the agents will retry");
            wh.rollback();
            *syncs = syncs_before;
            let msg = e.to_string();
            group
                .iter()
                .map(|job| {
                    let err = || ApplyError::Transaction(msg.clone());
                    match job {
                        Job::Batch { .. } => Outcome::Batch(Err(err())),
                        Job::Heartbeat { .. } | Job::Records { .. } => Outcome::Heartbeat(Err(err())),
                    }
                })
                .collect()
        }
    };
    for ((job, outcome), tally) in group.drain(..).zip(outcomes).zip(tallies) {
        match (job, outcome) {
            (Job::Batch { batch, queued, reply, .. }, Outcome::Batch(result)) => {
                if let Ok(a) = &result {
                    metrics.batch_done(&batch.agent, a.applied_through, a.changes, a.duplicate, queued.elapsed());
                    metrics.quality(&tally);
                }
                // The requester may have timed out; the batch is applied either way and the
                // agent's retry will be acknowledged as a duplicate.
                let _gone = reply.send(result);
            }
            (Job::Heartbeat { reply, .. }, Outcome::Heartbeat(result)) => {
                if result.is_ok() {
                    metrics.heartbeat();
                }
                let _gone = reply.send(result);
            }
            (Job::Records { reply, .. }, Outcome::Heartbeat(result)) => {
                let _gone = reply.send(result);
            }
            // Outcomes are built from the jobs in order, so kinds always match.
            _ => {}
        }
    }
}

fn apply_batch(
    wh: &mut dyn Warehouse,
    batch: &Batch,
    now: &str,
    today: jiff::civil::Date,
    catalog: &crate::catalog::Catalog,
    tally: &mut crate::quality::ingest::Tally,
    syncs: &mut crate::quality::share::Syncs,
) -> Result<Applied, ApplyError> {
    let agent = batch.agent.as_str();
    let applied = wh.applied_seq(agent)?;
    match plan(applied, batch.first_seq, batch.last_seq) {
        Plan::Duplicate => {
            tracing::info!(
                agent,
                first_seq = batch.first_seq,
                last_seq = batch.last_seq,
                applied,
                "duplicate batch acknowledged again"
            );
            // The first ack may be the one that was lost: say again which of its rows are held.
            let quarantined = if crate::quality::ingest::may_hold(catalog, &batch.schemas) {
                wh.quarantined_from(agent, batch.first_seq, batch.last_seq, crate::quality::ingest::MAX_ACK_ROWS)?
            } else {
                Vec::new()
            };
            Ok(Applied { applied_through: applied, changes: 0, duplicate: true, quarantined, released: vec![] })
        }
        Plan::Gap { expected } => Err(ApplyError::Gap { expected }),
        Plan::Apply { skip } => {
            let changes = &batch.changes[skip..];
            for schema in &batch.schemas {
                if changes.iter().any(|c| c.dataset == schema.dataset) {
                    wh.prepare_dataset(schema, now)?;
                }
            }
            let checked = crate::quality::ingest::check(wh, catalog, &batch.schemas, changes, today)?;
            let rejected = crate::quality::ingest::rejected(&checked);
            // Rows a `reject` rule holds back are not loaded; the rest of the batch is.
            let loaded: std::borrow::Cow<'_, [Change]> = if rejected.is_empty() {
                std::borrow::Cow::Borrowed(changes)
            } else {
                let keep = changes.iter().enumerate().filter(|(i, _)| !rejected.contains(i)).map(|(_, c)| c.clone());
                std::borrow::Cow::Owned(keep.collect())
            };
            // Counted before the rows are applied: a new sync starts from the rows before it.
            syncs.add(wh, catalog, agent, &loaded, now, tally)?;
            if !loaded.is_empty() {
                wh.apply_changes(agent, &batch.schemas, &loaded, now)?;
            }
            crate::quality::ingest::record(wh, &checked, now, tally)?;
            let (quarantined, released) = crate::quality::ingest::hold(wh, agent, &checked, changes, now)?;
            wh.record_activity(&activity(&loaded, |d| catalog.dataset(d)?.freshness_field.as_deref()), now)?;
            wh.set_applied_seq(agent, batch.last_seq, now)?;
            wh.promote_syncs(agent, batch.last_seq)?;
            tracing::debug!(
                agent,
                first_seq = batch.first_seq,
                last_seq = batch.last_seq,
                skipped = skip,
                "batch applied"
            );
            Ok(Applied {
                applied_through: batch.last_seq,
                changes: loaded.len() as u64,
                duplicate: false,
                quarantined,
                released,
            })
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds, the format of every `_kho_*_at` column.
pub fn now_rfc3339() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_plan_covers_every_case() {
        assert_eq!(plan(0, 1, 10), Plan::Apply { skip: 0 });
        assert_eq!(plan(10, 11, 20), Plan::Apply { skip: 0 });
        assert_eq!(plan(10, 1, 10), Plan::Duplicate);
        assert_eq!(plan(10, 5, 8), Plan::Duplicate);
        assert_eq!(plan(10, 6, 15), Plan::Apply { skip: 5 });
        assert_eq!(plan(10, 10, 11), Plan::Apply { skip: 1 });
        assert_eq!(plan(10, 12, 20), Plan::Gap { expected: 11 });
        assert_eq!(plan(0, 2, 3), Plan::Gap { expected: 1 });
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.len() == "2024-01-01T00:00:00.000Z".len(), "{t}");
    }
}
