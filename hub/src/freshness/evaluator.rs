//! The evaluator loop: every `evaluate_interval`, judge every catalogue dataset and act on it.
//!
//! One pass: read the evidence (warehouse reader, blocking pool) → [`super::build`] at the
//! injected clock's `now` → record new status transitions through the applier (the warehouse's
//! single writer) → publish the snapshot for the API → update metrics → queue alerts. A failed
//! pass is logged and the previous snapshot stays; the next tick tries again.
//!
//! The same pass records agent liveness transitions (offline ↔ online) and, once a day at
//! `alerts.digest_at`, queues each department's digest; the transitions, the agent transitions
//! and the digest's "sent on" date are written in one job, so they are stored together.
//!
//! **Several hub instances** ([`crate::leader`]): only the leader records transitions and sends
//! alerts and digests. A follower evaluates each pass for its own API and dashboard, reading the
//! history the leader recorded, and keeps its alert state in step without sending; when it becomes
//! leader it reloads the history before it records anything, so nothing is recorded or sent twice.
//!
//! At start the recorded transitions (dataset and agent) and the last digest date are read back,
//! so a restart neither loses history, nor records a duplicate transition, nor sends a digest twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kho_shared::freshness::history::Transition;
use tokio_util::sync::CancellationToken;

use super::alerting::{Alert, AlertState};
use super::{ConfiguredAgents, SnapshotCell, build, digest, new_agent_transitions, new_transitions};
use crate::alerts::AlertSender;
use crate::apply::{ApplierHandle, Records};
use crate::catalog::CatalogHandle;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::warehouse::{AgentTransition, WarehouseError, WarehouseReader};

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("could not record transitions: {0}")]
    Record(#[from] crate::apply::ApplyError),
    #[error("reader task failed: {0}")]
    Task(String),
}

/// Everything one evaluator needs.
pub struct Evaluator {
    pub reader: Arc<dyn WarehouseReader>,
    pub applier: ApplierHandle,
    pub catalog: CatalogHandle,
    pub clock: Arc<dyn Clock>,
    pub configured: ConfiguredAgents,
    pub offline_after: Duration,
    pub snapshot: SnapshotCell,
    pub metrics: Arc<Metrics>,
    pub alerts: AlertSender,
    /// Local time of the daily digest; `None` = no digest.
    pub digest_at: Option<jiff::civil::Time>,
    /// Whether this instance does the once-only work (always, unless several instances share the
    /// warehouse).
    pub leadership: crate::leader::Leadership,
    /// Leadership as of the previous pass.
    led: bool,
    transitions: HashMap<String, Vec<Transition>>,
    agent_history: HashMap<String, Vec<AgentTransition>>,
    last_digest: Option<jiff::civil::Date>,
    alert_state: AlertState,
}

impl Evaluator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reader: Arc<dyn WarehouseReader>,
        applier: ApplierHandle,
        catalog: CatalogHandle,
        clock: Arc<dyn Clock>,
        configured: ConfiguredAgents,
        offline_after: Duration,
        snapshot: SnapshotCell,
        metrics: Arc<Metrics>,
        alerts: AlertSender,
    ) -> Evaluator {
        Evaluator {
            reader,
            applier,
            catalog,
            clock,
            configured,
            offline_after,
            snapshot,
            metrics,
            alerts,
            digest_at: None,
            leadership: crate::leader::Leadership::fixed(true),
            led: false,
            transitions: HashMap::new(),
            agent_history: HashMap::new(),
            last_digest: None,
            alert_state: AlertState::default(),
        }
    }

    /// Reads back recorded history; call once before the first pass.
    pub async fn load_history(&mut self) -> Result<(), EvaluateError> {
        let reader = Arc::clone(&self.reader);
        let (stored, agents, sent_on) = tokio::task::spawn_blocking(move || {
            Ok::<_, WarehouseError>((
                reader.transitions()?,
                reader.agent_transitions()?,
                reader.meta(digest::SENT_ON_KEY)?,
            ))
        })
        .await
        .map_err(|e| EvaluateError::Task(e.to_string()))??;
        self.transitions.clear();
        for t in stored {
            self.transitions.entry(t.dataset).or_default().push(t.transition);
        }
        self.agent_history.clear();
        for t in agents {
            self.agent_history.entry(t.agent.clone()).or_default().push(t);
        }
        self.last_digest = sent_on.and_then(|d| d.parse().ok());
        Ok(())
    }

    /// One evaluation pass.
    pub async fn pass(&mut self) -> Result<(), EvaluateError> {
        let leader = self.leadership.is_leader();
        if !leader || !self.led {
            // A follower shows what the leader recorded; a new leader starts from it.
            self.load_history().await?;
        }
        self.led = leader;
        let reader = Arc::clone(&self.reader);
        let evidence = tokio::task::spawn_blocking(move || reader.evidence())
            .await
            .map_err(|e| EvaluateError::Task(e.to_string()))??;
        let now = self.clock.now();
        let catalog = self.catalog.get();
        let mut snapshot =
            build(now, catalog, &evidence, &self.configured, self.offline_after, self.transitions.clone());
        snapshot.agent_history = self.agent_history.clone();
        let mut records = Records {
            transitions: new_transitions(&snapshot),
            agent_transitions: new_agent_transitions(&snapshot, self.offline_after),
            meta: Vec::new(),
        };
        let digest_day = self.digest_at.filter(|_| leader).and_then(|at| digest::due(now, at, self.last_digest));
        if let Some(day) = digest_day {
            records.meta.push((digest::SENT_ON_KEY.to_string(), day.to_string()));
        }
        if leader && !records.is_empty() {
            self.applier.record(records.clone()).await?;
            for t in records.transitions {
                tracing::info!(dataset = %t.dataset, status = t.transition.status.as_str(), period = %t.transition.period.label, "freshness transition");
                self.transitions.entry(t.dataset).or_default().push(t.transition);
            }
            for t in records.agent_transitions {
                tracing::info!(agent = %t.agent, online = t.online, at = %t.at, "agent liveness transition");
                self.agent_history.entry(t.agent.clone()).or_default().push(t);
            }
            snapshot.transitions = self.transitions.clone();
            snapshot.agent_history = self.agent_history.clone();
        }
        for alert in self.alert_state.observe(&snapshot) {
            if leader {
                self.alerts.send(alert);
            }
        }
        if let Some(day) = digest_day {
            // Recorded as sent above: a crash from here loses today's digest rather than
            // sending it twice (the next alert or tomorrow's digest shows the same state).
            self.last_digest = Some(day);
            for d in digest::department_digests(&snapshot, day) {
                self.alerts.send(Alert::digest(d));
            }
        }
        self.metrics.set_freshness(&snapshot);
        self.snapshot.set(snapshot);
        Ok(())
    }

    /// Runs passes every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.pass().await {
                tracing::error!(error = %e, "freshness evaluation failed; keeping the previous snapshot");
            }
        }
        tracing::info!("freshness evaluator stopped");
    }
}
