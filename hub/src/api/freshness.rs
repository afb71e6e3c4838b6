//! The catalogue and freshness API (JSON, read-only; documented in `docs/openapi.yaml`):
//!
//! - `GET /api/v1/catalog`: departments, datasets and scenarios in force;
//! - `GET /api/v1/freshness?department=&status=`: every catalogue dataset's freshness and every
//!   agent's liveness, as of the evaluator's last pass (`evaluated_at`);
//! - `GET /api/v1/departments/{code}/scorecard`;
//! - `GET /api/v1/scenarios/{id}/readiness`;
//! - `GET /api/v1/agents/{id}/liveness`: last contact, offline periods and availability over the
//!   last 30 days, from the recorded liveness transitions.
//!
//! Answers come from the evaluator's latest [`Snapshot`](crate::freshness::Snapshot), so they are
//! consistent with the recorded history and cost no database read. Unknown ids are 404 and bad
//! filters 400, with a JSON body `{"code": "...", "message": "..."}`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kho_shared::freshness::Status;
use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogHandle, Dataset, Department, Scenario};
use crate::freshness::views::{self, ViewError};
use crate::freshness::{AgentLiveness, DatasetView, SnapshotCell};

/// State of the freshness routes.
#[derive(Clone)]
pub struct FreshnessApi {
    pub snapshot: SnapshotCell,
    pub catalog: CatalogHandle,
}

/// A refused read-API request.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("{0}")]
    BadRequest(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            QueryError::View(ViewError::NotFound { .. }) => (StatusCode::NOT_FOUND, "not_found"),
            QueryError::View(ViewError::NotEvaluated) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            QueryError::View(ViewError::Schedule(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            QueryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "freshness API request failed");
        }
        (status, Json(ErrorBody { code, message: self.to_string() })).into_response()
    }
}

#[derive(Serialize)]
pub struct CatalogDocument {
    pub departments: Vec<Department>,
    pub datasets: Vec<Dataset>,
    pub scenarios: Vec<Scenario>,
}

pub(super) async fn get_catalog(State(api): State<FreshnessApi>) -> Json<CatalogDocument> {
    let c = api.catalog.get();
    Json(CatalogDocument {
        departments: c.departments.clone(),
        datasets: c.datasets.clone(),
        scenarios: c.scenarios.clone(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessQuery {
    pub department: Option<String>,
    pub status: Option<String>,
}

#[derive(Serialize)]
pub struct FreshnessDocument {
    pub evaluated_at: Option<jiff::Timestamp>,
    pub datasets: Vec<DatasetView>,
    pub agents: Vec<AgentLiveness>,
}

pub(super) async fn get_freshness(
    State(api): State<FreshnessApi>,
    Query(q): Query<FreshnessQuery>,
) -> Result<Json<FreshnessDocument>, QueryError> {
    let s = api.snapshot.get();
    if let Some(code) = &q.department
        && s.catalog.department(code).is_none()
    {
        return Err(ViewError::NotFound { kind: "department", id: code.clone() }.into());
    }
    let status: Option<Status> = match &q.status {
        None => None,
        Some(text) => Some(serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
            QueryError::BadRequest(format!("status {text:?} is not one of on_time, due, overdue, never_received"))
        })?),
    };
    let datasets = s
        .datasets
        .iter()
        .filter(|d| q.department.as_ref().is_none_or(|code| &d.department == code))
        .filter(|d| status.is_none_or(|st| d.freshness.as_ref().is_some_and(|f| f.status == st)))
        .cloned()
        .collect();
    Ok(Json(FreshnessDocument { evaluated_at: s.evaluated_at, datasets, agents: s.agents.clone() }))
}

pub(super) async fn get_scorecard(
    State(api): State<FreshnessApi>,
    Path(code): Path<String>,
) -> Result<Json<views::DepartmentScorecard>, QueryError> {
    Ok(Json(views::department_scorecard(&api.snapshot.get(), &code)?))
}

pub(super) async fn get_readiness(
    State(api): State<FreshnessApi>,
    Path(id): Path<String>,
) -> Result<Json<views::ScenarioReadiness>, QueryError> {
    Ok(Json(views::scenario_readiness(&api.snapshot.get(), &id)?))
}

pub(super) async fn get_agent_liveness(
    State(api): State<FreshnessApi>,
    Path(id): Path<String>,
) -> Result<Json<views::AgentLivenessView>, QueryError> {
    Ok(Json(views::agent_liveness(&api.snapshot.get(), &id)?))
}
