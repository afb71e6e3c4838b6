//! The API's answers, assembled from a [`Snapshot`] with the pure rules of
//! [`kho_shared::freshness`]: department scorecards (with each dataset's last periods, so "how many
//! days late was Q2" is one lookup) and scenario readiness with the blockers' owners and contacts.

use jiff::Timestamp;
use kho_shared::freshness::history::{self, PeriodOutcome};
use kho_shared::freshness::readiness::{self, Blocker, ReadinessState};
use kho_shared::freshness::scorecard::{self, CurrentScore, DatasetRecord, HistoryScore, SCORECARD_PERIODS};
use kho_shared::freshness::{Freshness, Status};
use serde::Serialize;

use super::Snapshot;
use crate::catalog::{Contact, Department};

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no {kind} {id:?} in the catalogue")]
    NotFound { kind: &'static str, id: String },
    #[error("the freshness evaluator has not run yet")]
    NotEvaluated,
    #[error("{0}")]
    Schedule(#[from] kho_shared::schedule::ScheduleError),
}

/// One dataset's part of a scorecard.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetScore {
    pub dataset: String,
    pub title: String,
    pub status: Option<Status>,
    /// Its last [`SCORECARD_PERIODS`] ended periods, oldest first, with lateness in days.
    pub periods: Vec<PeriodScore>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodScore {
    #[serde(flatten)]
    pub outcome: PeriodOutcome,
    pub days_late: i64,
}

/// `GET /api/v1/departments/{code}/scorecard`.
#[derive(Debug, Clone, Serialize)]
pub struct DepartmentScorecard {
    pub department: Department,
    pub evaluated_at: Timestamp,
    pub current: CurrentScore,
    pub last_periods: HistoryScore,
    pub datasets: Vec<DatasetScore>,
}

/// A department's scorecard.
pub fn department_scorecard(s: &Snapshot, code: &str) -> Result<DepartmentScorecard, ViewError> {
    let department =
        s.catalog.department(code).ok_or_else(|| ViewError::NotFound { kind: "department", id: code.into() })?;
    let now = s.evaluated_at.ok_or(ViewError::NotEvaluated)?;
    let empty = Vec::new();
    let mine: Vec<_> = s.datasets.iter().filter(|d| d.department == code).collect();
    let mut records = Vec::new();
    let mut datasets = Vec::new();
    for d in &mine {
        let transitions = s.transitions.get(&d.dataset).unwrap_or(&empty);
        let periods = history::outcomes(&d.schedule, transitions, now, SCORECARD_PERIODS)?;
        datasets.push(DatasetScore {
            dataset: d.dataset.clone(),
            title: d.title.clone(),
            status: d.freshness.as_ref().map(|f| f.status),
            periods: periods.into_iter().map(|o| PeriodScore { days_late: o.days_late(), outcome: o }).collect(),
        });
        if let Some(current) = &d.freshness {
            records.push(DatasetRecord { schedule: &d.schedule, current, transitions });
        }
    }
    let card = scorecard::scorecard(now, &records)?;
    Ok(DepartmentScorecard {
        department: department.clone(),
        evaluated_at: now,
        current: card.current,
        last_periods: card.last_periods,
        datasets,
    })
}

/// A blocking input with who to call about it.
#[derive(Debug, Clone, Serialize)]
pub struct BlockerView {
    #[serde(flatten)]
    pub blocker: Blocker,
    pub title: Option<String>,
    pub department: Option<String>,
    pub department_name: Option<String>,
    pub contact: Option<Contact>,
}

/// `GET /api/v1/scenarios/{id}/readiness`.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReadiness {
    pub scenario: String,
    pub title: String,
    pub office: String,
    pub state: ReadinessState,
    pub evaluated_at: Timestamp,
    pub inputs: usize,
    pub blocking: Vec<BlockerView>,
}

/// A scenario's readiness.
pub fn scenario_readiness(s: &Snapshot, id: &str) -> Result<ScenarioReadiness, ViewError> {
    let scenario = s.catalog.scenario(id).ok_or_else(|| ViewError::NotFound { kind: "scenario", id: id.into() })?;
    let now = s.evaluated_at.ok_or(ViewError::NotEvaluated)?;
    let lookup = |dataset: &str| -> Option<&Freshness> { s.dataset(dataset)?.freshness.as_ref() };
    let r = readiness::readiness(now, &scenario.inputs, lookup)?;
    let blocking = r
        .blocking
        .into_iter()
        .map(|b| {
            let d = s.catalog.dataset(&b.dataset);
            let dept = d.and_then(|d| s.catalog.department(&d.department));
            BlockerView {
                title: d.map(|d| d.title.clone()),
                department: d.map(|d| d.department.clone()),
                department_name: dept.map(|d| d.name.clone()),
                contact: dept.map(|d| d.contact.clone()),
                blocker: b,
            }
        })
        .collect();
    Ok(ScenarioReadiness {
        scenario: scenario.id.clone(),
        title: scenario.title.clone(),
        office: scenario.office.clone(),
        state: r.state,
        evaluated_at: now,
        inputs: scenario.inputs.len(),
        blocking,
    })
}
