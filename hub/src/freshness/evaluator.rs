//! The evaluator loop: every `evaluate_interval`, judge every catalogue dataset and act on it.
//!
//! One pass: read the evidence (warehouse reader, blocking pool) → [`super::build`] at the
//! injected clock's `now` → record new status transitions through the applier (the warehouse's
//! single writer) → publish the snapshot for the API → update metrics → queue alerts. A failed
//! pass is logged and the previous snapshot stays; the next tick tries again.
//!
//! At start the recorded transitions are read back, so a restart neither loses history nor records
//! a duplicate transition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kho_shared::freshness::history::Transition;
use tokio_util::sync::CancellationToken;

use super::alerting::AlertState;
use super::{ConfiguredAgents, SnapshotCell, build, new_transitions};
use crate::alerts::AlertSender;
use crate::apply::ApplierHandle;
use crate::catalog::CatalogHandle;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::warehouse::{WarehouseError, WarehouseReader};

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
    transitions: HashMap<String, Vec<Transition>>,
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
            transitions: HashMap::new(),
            alert_state: AlertState::default(),
        }
    }

    /// Reads back recorded history; call once before the first pass.
    pub async fn load_history(&mut self) -> Result<(), EvaluateError> {
        let reader = Arc::clone(&self.reader);
        let stored = tokio::task::spawn_blocking(move || reader.transitions())
            .await
            .map_err(|e| EvaluateError::Task(e.to_string()))??;
        self.transitions.clear();
        for t in stored {
            self.transitions.entry(t.dataset).or_default().push(t.transition);
        }
        Ok(())
    }

    /// One evaluation pass.
    pub async fn pass(&mut self) -> Result<(), EvaluateError> {
        let reader = Arc::clone(&self.reader);
        let evidence = tokio::task::spawn_blocking(move || reader.evidence())
            .await
            .map_err(|e| EvaluateError::Task(e.to_string()))??;
        let now = self.clock.now();
        let catalog = self.catalog.get();
        let mut snapshot =
            build(now, catalog, &evidence, &self.configured, self.offline_after, self.transitions.clone());
        let fresh = new_transitions(&snapshot);
        if !fresh.is_empty() {
            self.applier.transitions(fresh.clone()).await?;
            for t in fresh {
                tracing::info!(dataset = %t.dataset, status = t.transition.status.as_str(), period = %t.transition.period.label, "freshness transition");
                self.transitions.entry(t.dataset).or_default().push(t.transition);
            }
            snapshot.transitions = self.transitions.clone();
        }
        for alert in self.alert_state.observe(&snapshot) {
            self.alerts.send(alert);
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
