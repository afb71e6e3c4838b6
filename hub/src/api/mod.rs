//! The hub's read-only HTTP surface for people and monitoring: `GET /api/v1/status` (JSON),
//! `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! Nothing here writes, and nothing here shares the writer's connection: status reads go through
//! the warehouse's read-only connection on the blocking pool.

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
pub fn routes(status: Arc<status::StatusService>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(STATUS_PATH, get(status::get_status).with_state(status))
        .route("/metrics", get(get_metrics).with_state(metrics))
        .route("/healthz", get(|| async { "ok" }))
}

async fn get_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render())
}
