//! Which hub instance does the work that must happen once (issue 11).
//!
//! Several hub instances may share one PostgreSQL warehouse. Applying batches is safe on all of
//! them (the ledger lock, [`crate::warehouse::Warehouse::lock_group`]), but recording freshness
//! transitions, sending alerts and digests, and pruning the change history must run on exactly one.
//! That instance is the **leader**: the one whose dedicated session holds
//! `pg_try_advisory_lock(`[`LEADER_LOCK`]`)`. Every instance tries every [`ATTEMPT_EVERY`]; the
//! leader instead checks that its session is still alive. PostgreSQL releases a session lock when
//! the session ends, so when the leader dies (kill -9, lost network: the server notices the closed
//! socket) another instance takes the lock at its next attempt. A leader whose session fails steps
//! down at once, before it reconnects and competes again.
//!
//! There is no protocol of our own: the database is the only shared state. The evaluator reads the
//! flag at each pass; when it becomes leader it reloads the recorded history first
//! ([`crate::freshness::evaluator`]), so it neither records a transition twice nor re-sends an
//! alert or a digest the previous leader sent.
//!
//! With the SQLite warehouse there is one instance, which is always the leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::warehouse::WarehouseError;
use crate::warehouse::postgres::{Settings, connect};

/// Session advisory-lock key of the leader: "kholead" in ASCII (distinct from the DDL lock).
pub const LEADER_LOCK: i64 = 0x006b_686f_6c65_6164;
/// How often a follower tries to take the lock, and the leader checks its session.
pub const ATTEMPT_EVERY: Duration = Duration::from_secs(3);

/// Whether this instance is the leader, shared by everything that must run once.
#[derive(Debug, Clone)]
pub struct Leadership {
    flag: Arc<AtomicBool>,
}

impl Leadership {
    /// A flag that stays as given (SQLite: `true`; tests).
    pub fn fixed(leader: bool) -> Leadership {
        Leadership { flag: Arc::new(AtomicBool::new(leader)) }
    }

    pub fn is_leader(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn set(&self, leader: bool) {
        self.flag.store(leader, Ordering::Release);
    }
}

/// The competition for [`LEADER_LOCK`] on a session of its own.
pub struct Election {
    settings: Arc<Settings>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    /// The session that holds (or tries for) the lock; `None` until connected or after a failure.
    session: Option<postgres::Client>,
}

impl Election {
    /// Starts as a follower; call [`Election::attempt`] (or [`Election::run`]) to compete.
    pub fn new(settings: Arc<Settings>, leadership: Leadership, metrics: Arc<Metrics>) -> Election {
        leadership.set(false);
        metrics.set_leader(false);
        Election { settings, leadership, metrics, session: None }
    }

    /// One attempt: take the lock (follower) or check the session (leader). Logs changes.
    pub async fn attempt(&mut self) {
        let held = self.leadership.is_leader();
        let (settings, session) = (Arc::clone(&self.settings), self.session.take());
        // The synchronous client drives its own small runtime: off the async workers.
        let outcome = tokio::task::spawn_blocking(move || try_lead(&settings, session, held)).await;
        let leader = match outcome {
            Ok((session, Ok(leader))) => {
                self.session = session;
                leader
            }
            Ok((session, Err(e))) => {
                drop_off_runtime(session);
                if held {
                    tracing::error!(error = %e, "lost the leader's database session; stepping down");
                } else {
                    tracing::debug!(error = %e, "cannot compete for leadership now; will retry");
                }
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "leader election task failed");
                false
            }
        };
        if leader != held {
            if leader {
                tracing::info!("this hub instance is now the leader (freshness records, alerts, digests, retention)");
            } else {
                tracing::warn!("this hub instance is no longer the leader");
            }
        }
        self.leadership.set(leader);
        self.metrics.set_leader(leader);
    }

    /// Competes every `every` until `cancel`; then closes the session, which frees the lock.
    pub async fn run(mut self, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            self.attempt().await;
        }
        self.leadership.set(false);
        self.metrics.set_leader(false);
        let session = self.session.take();
        let _ = tokio::task::spawn_blocking(move || drop(session)).await;
        tracing::info!("leader election stopped");
    }
}

/// Dropping the synchronous client shuts its runtime down, which may not happen on an async worker.
fn drop_off_runtime(session: Option<postgres::Client>) {
    if let Some(session) = session {
        std::thread::spawn(move || drop(session));
    }
}

/// Takes or checks the lock on `session` (a new one if there is none or it broke). Returns the
/// session and whether this instance leads, or the session (if any) and why it failed.
fn try_lead(
    settings: &Settings,
    session: Option<postgres::Client>,
    held: bool,
) -> (Option<postgres::Client>, Result<bool, WarehouseError>) {
    let (mut session, fresh) = match session {
        Some(s) if !s.is_closed() => (s, false),
        _ => match connect::connect(settings, "leader election") {
            Ok(s) => (s, true),
            Err(e) => return (None, Err(e)),
        },
    };
    // A new session holds nothing, whatever we held before on the old one.
    let result = if held && !fresh {
        session.simple_query("SELECT 1").map(|_| true)
    } else {
        session.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK]).map(|row| row.get::<_, bool>(0))
    };
    match result {
        Ok(leader) => (Some(session), Ok(leader)),
        Err(e) => (Some(session), Err(WarehouseError::database("leader lock", e))),
    }
}
