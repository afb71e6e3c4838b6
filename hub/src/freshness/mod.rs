//! Freshness in the hub: the catalogue's datasets judged against the warehouse's evidence.
//!
//! The rules themselves are pure and live in [`kho_shared::freshness`]; this module only gathers
//! their inputs and keeps their outputs:
//! - [`build`] (pure) turns the catalogue, the stored [`Evidence`] and a clock reading into a
//!   [`Snapshot`]: one [`DatasetView`] per catalogue dataset and one [`AgentLiveness`] per agent;
//! - [`evaluator`] runs `build` every `evaluate_interval`, records status transitions in
//!   `_kho_freshness_history` through the applier, updates metrics and raises alerts;
//! - [`views`] (pure) answers the API's scorecard and readiness questions from a snapshot;
//! - [`alerting`] (pure) decides which webhook alerts a new snapshot calls for;
//! - [`digest`] (pure) builds each department's daily digest and decides when it is due.
//!
//! Agent liveness is history too: [`new_agent_transitions`] (pure) turns each pass's liveness
//! into offline/online transitions, recorded in the warehouse, from which
//! [`views::agent_liveness`] computes availability.
//!
//! **Which agents serve a dataset**: those the catalogue lists under it plus those whose hub
//! config `datasets` include it (the permission merge rule, [`crate::catalog`]). The dataset's
//! `agent_last_seen_at` is the latest contact of any of them.

pub mod alerting;
pub mod digest;
pub mod evaluator;
pub mod views;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use kho_shared::freshness::history::Transition;
use kho_shared::freshness::{Freshness, Observations, UpdateKind, evaluate};
use kho_shared::schedule::Schedule;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::warehouse::{AgentTransition, Evidence};

/// One catalogue dataset with its current freshness.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetView {
    pub dataset: String,
    pub title: String,
    pub department: String,
    pub schedule: Schedule,
    pub update_kind: UpdateKind,
    /// Agents that may write it (catalogue ∪ hub config).
    pub agents: Vec<String>,
    pub first_received_at: Option<Timestamp>,
    #[serde(flatten)]
    pub freshness: Option<Freshness>,
    /// Set when the schedule could not be evaluated (a date out of range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One agent's liveness.
#[derive(Debug, Clone, Serialize)]
pub struct AgentLiveness {
    pub agent: String,
    pub last_seen_at: Option<Timestamp>,
    pub offline: bool,
    /// Not in the hub config: it has no token and can send nothing.
    pub configured: bool,
    pub datasets: Vec<String>,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub evaluated_at: Option<Timestamp>,
    pub catalog: Arc<Catalog>,
    pub datasets: Vec<DatasetView>,
    pub agents: Vec<AgentLiveness>,
    /// Every recorded transition, per dataset, oldest first.
    pub transitions: HashMap<String, Vec<Transition>>,
    /// Every recorded liveness transition, per agent, oldest first.
    pub agent_history: HashMap<String, Vec<AgentTransition>>,
    /// The latest periodic quality pass (`None` before the first).
    pub quality: Option<Arc<crate::api::quality::QualityDocument>>,
}

impl Snapshot {
    pub fn dataset(&self, id: &str) -> Option<&DatasetView> {
        self.datasets.iter().find(|d| d.dataset == id)
    }
}

/// The latest snapshot, shared by the evaluator (writer) and the API and metrics (readers).
#[derive(Clone, Default)]
pub struct SnapshotCell {
    inner: Arc<RwLock<Arc<Snapshot>>>,
}

impl SnapshotCell {
    pub fn get(&self) -> Arc<Snapshot> {
        Arc::clone(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set(&self, s: Snapshot) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}

/// Configured agents and the datasets the hub config grants each.
pub type ConfiguredAgents = Vec<(String, Vec<String>)>;

/// Judges every catalogue dataset at `now`. Pure.
pub fn build(
    now: Timestamp,
    catalog: Arc<Catalog>,
    evidence: &Evidence,
    configured: &ConfiguredAgents,
    offline_after: Duration,
    transitions: HashMap<String, Vec<Transition>>,
) -> Snapshot {
    let mut agent_datasets: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (agent, datasets) in configured {
        agent_datasets.entry(agent.clone()).or_default().extend(datasets.iter().cloned());
    }
    for d in &catalog.datasets {
        for a in &d.agents {
            agent_datasets.entry(a.clone()).or_default().insert(d.id.clone());
        }
    }
    let offline_limit = jiff::SignedDuration::try_from(offline_after).unwrap_or(jiff::SignedDuration::MAX);
    let mut agents: Vec<AgentLiveness> = agent_datasets
        .iter()
        .map(|(agent, datasets)| {
            let last_seen_at = evidence.agents_last_seen.get(agent).copied();
            AgentLiveness {
                agent: agent.clone(),
                last_seen_at,
                offline: last_seen_at.is_none_or(|t| now.duration_since(t) > offline_limit),
                configured: configured.iter().any(|(id, _)| id == agent),
                datasets: datasets.iter().cloned().collect(),
            }
        })
        .collect();
    agents.sort_by(|a, b| a.agent.cmp(&b.agent));

    let datasets = catalog
        .datasets
        .iter()
        .map(|d| {
            let writers: Vec<String> =
                agents.iter().filter(|a| a.datasets.contains(&d.id)).map(|a| a.agent.clone()).collect();
            let ev = evidence.datasets.get(&d.id).cloned().unwrap_or_default();
            let obs = Observations {
                first_received_at: ev.first_received_at,
                last_change_at: ev.last_change_at,
                last_sync_at: ev.last_sync_at,
                max_business_date: ev.max_business_date,
                agent_last_seen_at: writers.iter().filter_map(|a| evidence.agents_last_seen.get(a).copied()).max(),
                agent_offline_after: offline_after,
            };
            let (freshness, error) = match evaluate(now, &d.rule(), &obs) {
                Ok(f) => (Some(f), None),
                Err(e) => {
                    tracing::error!(dataset = %d.id, error = %e, "cannot evaluate freshness");
                    (None, Some(e.to_string()))
                }
            };
            DatasetView {
                dataset: d.id.clone(),
                title: d.title.clone(),
                department: d.department.clone(),
                schedule: d.schedule(),
                update_kind: d.update_kind,
                agents: writers,
                first_received_at: ev.first_received_at,
                freshness,
                error,
            }
        })
        .collect();
    Snapshot {
        evaluated_at: Some(now),
        catalog,
        datasets,
        agents,
        transitions,
        agent_history: HashMap::new(),
        quality: None,
    }
}

/// The agent liveness transitions `snapshot` records relative to `snapshot.agent_history`.
///
/// An agent enters the history the first time it is seen; after that a row is added whenever
/// it goes out of contact or comes back. Times are when the change happened, not when the
/// evaluator noticed it: going offline at `last_seen_at + offline_after`, coming back at the
/// contact that brought it back (`last_seen_at`). Agents never seen have no history (they are
/// "never connected", not "offline"). Pure.
pub fn new_agent_transitions(snapshot: &Snapshot, offline_after: Duration) -> Vec<AgentTransition> {
    let Some(now) = snapshot.evaluated_at else {
        return Vec::new();
    };
    let after = jiff::SignedDuration::try_from(offline_after).unwrap_or(jiff::SignedDuration::MAX);
    snapshot
        .agents
        .iter()
        .filter_map(|a| {
            let seen = a.last_seen_at?;
            let online = !a.offline;
            let last = snapshot.agent_history.get(&a.agent).and_then(|h| h.last());
            if last.is_some_and(|l| l.online == online) {
                return None;
            }
            let at = if online { seen } else { seen.checked_add(after).unwrap_or(now).min(now) };
            // Never before the previous row: clocks and late heartbeats must not reorder history.
            let at = last.map_or(at, |l| at.max(l.at));
            Some(AgentTransition { agent: a.agent.clone(), at, online, last_seen_at: Some(seen) })
        })
        .collect()
}

/// The transitions `snapshot` records relative to the last recorded ones (status or judged
/// period changed, per [`kho_shared::freshness::history::transition`]).
pub fn new_transitions(snapshot: &Snapshot) -> Vec<crate::warehouse::StoredTransition> {
    snapshot
        .datasets
        .iter()
        .filter_map(|d| {
            let f = d.freshness.as_ref()?;
            let t = kho_shared::freshness::history::transition(None, f)?;
            let last = snapshot.transitions.get(&d.dataset).and_then(|ts| ts.last());
            let changed = last.is_none_or(|l| l.status != t.status || l.period != t.period);
            changed.then(|| crate::warehouse::StoredTransition { dataset: d.dataset.clone(), transition: t })
        })
        .collect()
}
