//! The hub's read-only HTTP surface for people and monitoring: `GET /api/v1/status` (JSON),
//! the catalogue and freshness endpoints of [`freshness`] (JSON), `GET /api/v1/quality` ([`quality`]), `GET /metrics` (Prometheus
//! text) and `GET /healthz`; the open-data API of [`opendata`] (CKAN subset and downloads). The
//! whole surface is described in `docs/openapi.yaml`.
//!
//! Nothing here writes, and nothing here shares the writer's connection: status reads go through
//! the warehouse's read-only connection on the blocking pool.

pub mod freshness;
pub mod opendata;
pub mod quality;
pub mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Path of the status document.
pub const STATUS_PATH: &str = "/api/v1/status";

/// The read-only routes.
pub fn routes(
    status: Arc<status::StatusService>,
    fresh: freshness::FreshnessApi,
    quality: quality::QualityApi,
    metrics: Arc<Metrics>,
) -> Router {
    let fresh_routes = Router::new()
        .route("/api/v1/catalog", get(freshness::get_catalog))
        .route("/api/v1/freshness", get(freshness::get_freshness))
        .route("/api/v1/departments/{code}/scorecard", get(freshness::get_scorecard))
        .route("/api/v1/scenarios/{id}/readiness", get(freshness::get_readiness))
        .route("/api/v1/agents/{id}/liveness", get(freshness::get_agent_liveness))
        .with_state(fresh);
    Router::new()
        .merge(fresh_routes)
        .route("/api/v1/quality", get(quality::get_quality).with_state(quality))
        .route(STATUS_PATH, get(status::get_status).with_state(status))
        .route("/metrics", get(get_metrics).with_state(metrics))
        .route("/healthz", get(|| async { "ok" }))
}

async fn get_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render())
}
