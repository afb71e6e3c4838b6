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
use crate::warehouse::AgentTransition;

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
    /// Its data-quality score (lowest passing share among its row rules) as of the last
    /// periodic quality pass; `null` without rules, rows or a pass.
    pub quality: Option<f64>,
    /// Open violations of its rules (rows, periods and syncs) as of that pass.
    pub quality_violations: Option<u64>,
}

/// The department's quality column: over its datasets that have rules.
#[derive(Debug, Clone, Serialize)]
pub struct DepartmentQuality {
    /// Mean of its datasets' scores (`null` before any has rows).
    pub score: Option<f64>,
    /// Its lowest dataset score.
    pub lowest: Option<f64>,
    pub datasets_with_rules: usize,
    pub open_violations: u64,
    pub quarantined: u64,
    /// When the periodic quality pass measured it.
    pub measured_at: String,
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
    /// `null` before the first periodic quality pass.
    pub quality: Option<DepartmentQuality>,
}

/// A department's quality from the latest quality document. Pure.
pub fn department_quality(doc: &crate::api::quality::QualityDocument, code: &str) -> DepartmentQuality {
    let mine: Vec<_> = doc.datasets.iter().filter(|d| d.department == code).collect();
    let scores: Vec<f64> = mine.iter().filter_map(|d| d.score).collect();
    DepartmentQuality {
        score: (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        lowest: scores.iter().copied().reduce(f64::min),
        datasets_with_rules: mine.len(),
        open_violations: mine.iter().flat_map(|d| &d.rules).map(|r| r.violations).sum(),
        quarantined: mine.iter().map(|d| d.quarantined).sum(),
        measured_at: doc.generated_at.clone(),
    }
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
        let quality = s.quality.as_ref().and_then(|q| q.datasets.iter().find(|x| x.dataset == d.dataset));
        datasets.push(DatasetScore {
            quality: quality.and_then(|q| q.score),
            quality_violations: quality.map(|q| q.rules.iter().map(|r| r.violations).sum()),
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
        quality: s.quality.as_ref().map(|q| department_quality(q, code)),
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

/// How far back [`agent_liveness`] measures availability.
pub const AVAILABILITY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

/// A time an agent was out of contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfflinePeriod {
    pub from: Timestamp,
    /// `None` while it is still offline.
    pub to: Option<Timestamp>,
    pub seconds: i64,
}

/// `GET /api/v1/agents/{id}/liveness`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentLivenessView {
    pub agent: String,
    pub configured: bool,
    pub offline: bool,
    pub last_seen_at: Option<Timestamp>,
    pub datasets: Vec<String>,
    pub evaluated_at: Timestamp,
    /// Start of the availability window (the last 30 days, or since the agent was first seen).
    pub window_start: Option<Timestamp>,
    /// Share of the window the agent was in contact; `None` before it was ever seen.
    pub availability: Option<f64>,
    /// Offline periods overlapping the window, oldest first.
    pub offline_periods: Vec<OfflinePeriod>,
    /// Every recorded liveness transition, oldest first.
    pub transitions: Vec<AgentTransition>,
}

/// Offline periods and the share of time online between `from` and `now`, from the transitions
/// (oldest first). Time before the first transition is not counted. Pure.
pub fn availability(
    transitions: &[AgentTransition],
    from: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, Option<f64>, Vec<OfflinePeriod>) {
    let Some(first) = transitions.first() else {
        return (None, None, Vec::new());
    };
    let start = from.max(first.at).min(now);
    let mut online_s = 0i64;
    let mut periods = Vec::new();
    for (i, t) in transitions.iter().enumerate() {
        let end = transitions.get(i + 1).map_or(now, |n| n.at).min(now);
        let (a, b) = (t.at.max(start), end);
        if b <= a {
            continue;
        }
        let seconds = b.duration_since(a).as_secs();
        if t.online {
            online_s += seconds;
        } else {
            let still = i + 1 == transitions.len();
            periods.push(OfflinePeriod { from: t.at, to: (!still).then_some(end), seconds });
        }
    }
    let total = now.duration_since(start).as_secs();
    // Seconds in a 30-day window are far below 2^52, so the conversions are exact.
    let share = (total > 0).then(|| online_s as f64 / total as f64);
    (Some(start), share, periods)
}

/// An agent's liveness with its history and availability over [`AVAILABILITY_WINDOW`].
pub fn agent_liveness(s: &Snapshot, id: &str) -> Result<AgentLivenessView, ViewError> {
    let now = s.evaluated_at.ok_or(ViewError::NotEvaluated)?;
    let agent =
        s.agents.iter().find(|a| a.agent == id).ok_or_else(|| ViewError::NotFound { kind: "agent", id: id.into() })?;
    let transitions = s.agent_history.get(id).cloned().unwrap_or_default();
    let from = now.checked_sub(AVAILABILITY_WINDOW).unwrap_or(now);
    let (window_start, availability, offline_periods) = availability(&transitions, from, now);
    Ok(AgentLivenessView {
        agent: agent.agent.clone(),
        configured: agent.configured,
        offline: agent.offline,
        last_seen_at: agent.last_seen_at,
        datasets: agent.datasets.clone(),
        evaluated_at: now,
        window_start,
        availability,
        offline_periods,
        transitions,
    })
}

#[cfg(test)]
mod availability_tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn tr(at: &str, online: bool) -> AgentTransition {
        AgentTransition { agent: "a".into(), at: t(at), online, last_seen_at: None }
    }

    #[test]
    fn never_seen_has_no_availability() {
        assert_eq!(availability(&[], t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z")), (None, None, vec![]));
    }

    #[test]
    fn counts_online_share_and_offline_periods_inside_the_window() {
        let history = [
            tr("2026-02-01T00:00:00Z", true),
            // Offline for 6 h before the window and 6 h inside it.
            tr("2026-02-28T18:00:00Z", false),
            tr("2026-03-01T06:00:00Z", true),
            // Offline for the last 12 h, still offline.
            tr("2026-03-02T12:00:00Z", false),
        ];
        let (start, share, periods) = availability(&history, t("2026-03-01T00:00:00Z"), t("2026-03-03T00:00:00Z"));
        assert_eq!(start, Some(t("2026-03-01T00:00:00Z")));
        // 48 h window: online 06:00 on the 1st to 12:00 on the 2nd = 30 h.
        assert_eq!(share, Some(30.0 / 48.0));
        assert_eq!(periods.len(), 2);
        assert_eq!(
            periods[0],
            OfflinePeriod { from: t("2026-02-28T18:00:00Z"), to: Some(t("2026-03-01T06:00:00Z")), seconds: 6 * 3600 }
        );
        assert_eq!(periods[1], OfflinePeriod { from: t("2026-03-02T12:00:00Z"), to: None, seconds: 12 * 3600 });
    }

    #[test]
    fn window_starts_at_first_sighting_for_a_new_agent() {
        let history = [tr("2026-03-02T00:00:00Z", true)];
        let (start, share, periods) = availability(&history, t("2026-02-01T00:00:00Z"), t("2026-03-03T00:00:00Z"));
        assert_eq!(start, Some(t("2026-03-02T00:00:00Z")));
        assert_eq!(share, Some(1.0));
        assert!(periods.is_empty());
    }
}
