//! `GET /api/v1/status`: what the warehouse holds and when each agent was last heard from.
//!
//! Two clocks per dataset, never merged (LESSONS: liveness and timeliness are separate): the last
//! time data *changed* (`last_change_at`, `last_seq`, `last_agent`) and the last time an agent
//! that may write it was in *contact* (`last_contact_at`: heartbeat or applied batch) together
//! with the last *successful poll* its agent reported (`last_ok_poll_at`) — a poll that found
//! nothing new still proves the dataset is current.
//!
//! The document is assembled by the pure [`build`] from the warehouse's status and the configured
//! agents; configured agents that never called appear with empty fields.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kho_shared::protocol::{Column, DatasetReport, ErrorCode};
use serde::Serialize;

use crate::error::ApiError;
use crate::warehouse::{AgentStatus, WarehouseReader, WarehouseStatus};

/// The status document.
#[derive(Debug, Clone, Serialize)]
pub struct StatusDocument {
    pub generated_at: String,
    /// Whether this hub instance is the leader (records freshness, sends alerts; issue 11).
    pub leader: bool,
    pub datasets: Vec<DatasetView>,
    pub agents: Vec<AgentView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetView {
    pub dataset: String,
    pub rows: u64,
    pub deleted_rows: u64,
    pub key: Vec<String>,
    pub columns: Vec<Column>,
    pub created_at: String,
    pub last_change_at: Option<String>,
    pub last_seq: Option<u64>,
    pub last_agent: Option<String>,
    pub last_contact_at: Option<String>,
    pub last_ok_poll_at: Option<String>,
    /// Why the dataset's latest batch was refused (schema conflict), until one is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    /// False for an agent that wrote data but is no longer in the config.
    pub configured: bool,
    pub applied_through: u64,
    pub last_applied_at: Option<String>,
    pub last_seen_at: Option<String>,
    pub version: Option<String>,
    pub outbox_depth: Option<u64>,
    pub acked_through: Option<u64>,
    /// Datasets the agent may write.
    pub datasets: Vec<String>,
    /// Its last heartbeat's per-dataset report.
    pub report: Vec<DatasetReport>,
}

/// Serves the status document.
pub struct StatusService {
    pub reader: Arc<dyn WarehouseReader>,
    /// Configured agents and the datasets each may write.
    pub agents: Vec<(String, Vec<String>)>,
    pub leadership: crate::leader::Leadership,
}

pub(super) async fn get_status(State(service): State<Arc<StatusService>>) -> Result<Json<StatusDocument>, ApiError> {
    let reader = Arc::clone(&service.reader);
    let status = tokio::task::spawn_blocking(move || reader.status())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("status task failed: {e}")))?
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let mut doc = build(crate::apply::now_rfc3339(), status, &service.agents);
    doc.leader = service.leadership.is_leader();
    Ok(Json(doc))
}

/// Latest of two RFC 3339 UTC timestamps in the hub's fixed format (they order as strings).
fn latest(a: Option<String>, b: Option<&String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) if b.as_str() > a.as_str() => Some(b.clone()),
        (Some(a), _) => Some(a),
        (None, b) => b.cloned(),
    }
}

fn ms_to_rfc3339(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms).ok().map(|t| format!("{t:.3}"))
}

/// Assembles the document. Pure.
pub fn build(generated_at: String, status: WarehouseStatus, configured: &[(String, Vec<String>)]) -> StatusDocument {
    let mut agents: Vec<AgentView> = Vec::new();
    let view = |a: Option<&AgentStatus>, id: &str, datasets: Vec<String>, configured: bool| AgentView {
        id: id.to_string(),
        configured,
        applied_through: a.map_or(0, |a| a.applied_through),
        last_applied_at: a.and_then(|a| a.applied_at.clone()),
        last_seen_at: a.and_then(|a| a.last_seen_at.clone()),
        version: a.and_then(|a| a.version.clone()),
        outbox_depth: a.and_then(|a| a.outbox_depth),
        acked_through: a.and_then(|a| a.acked_through),
        datasets,
        report: a.and_then(|a| a.report.clone()).unwrap_or_default(),
    };
    for (id, datasets) in configured {
        let known = status.agents.iter().find(|a| &a.id == id);
        agents.push(view(known, id, datasets.clone(), true));
    }
    for a in &status.agents {
        if !configured.iter().any(|(id, _)| id == &a.id) {
            agents.push(view(Some(a), &a.id, Vec::new(), false));
        }
    }
    let datasets = status
        .datasets
        .into_iter()
        .map(|d| {
            let writers = agents
                .iter()
                .filter(|a| a.datasets.contains(&d.dataset) || d.last_agent.as_deref() == Some(a.id.as_str()));
            let mut last_contact_at = None;
            let mut last_ok_poll_ms: Option<i64> = None;
            for a in writers {
                last_contact_at = latest(latest(last_contact_at, a.last_seen_at.as_ref()), a.last_applied_at.as_ref());
                for r in a.report.iter().filter(|r| r.dataset == d.dataset) {
                    last_ok_poll_ms = last_ok_poll_ms.max(r.last_ok_poll_at_ms);
                }
            }
            DatasetView {
                last_ok_poll_at: last_ok_poll_ms.and_then(ms_to_rfc3339),
                last_contact_at,
                dataset: d.dataset,
                rows: d.rows,
                deleted_rows: d.deleted_rows,
                key: d.key,
                columns: d.columns,
                created_at: d.created_at,
                last_change_at: d.last_change_at,
                last_seq: d.last_seq,
                schema_error: d.schema_error,
                last_agent: d.last_agent,
            }
        })
        .collect();
    StatusDocument { generated_at, leader: true, datasets, agents }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::DatasetStatus;

    #[test]
    fn contact_and_poll_times_come_from_the_writing_agents() {
        let status = WarehouseStatus {
            datasets: vec![DatasetStatus {
                dataset: "ho_so".into(),
                rows: 3,
                deleted_rows: 1,
                key: vec!["id".into()],
                columns: vec![],
                created_at: "2025-01-01T00:00:00.000Z".into(),
                last_change_at: Some("2025-01-01T00:00:01.000Z".into()),
                last_seq: Some(4),
                last_agent: Some("a".into()),
                schema_error: Some("column \"x\" changed type from int to bool".into()),
            }],
            agents: vec![AgentStatus {
                id: "a".into(),
                applied_through: 4,
                applied_at: Some("2025-01-01T00:00:01.000Z".into()),
                last_seen_at: Some("2025-01-01T00:00:05.000Z".into()),
                version: Some("0.1.0".into()),
                outbox_depth: Some(0),
                acked_through: Some(4),
                report: Some(vec![DatasetReport {
                    dataset: "ho_so".into(),
                    last_ok_poll_at_ms: Some(1_735_689_604_000),
                    captured_through_seq: 4,
                    last_error: None,
                    null_cursor_rows: 0,
                    cdc: None,
                }]),
            }],
        };
        let configured = vec![("a".to_string(), vec!["ho_so".to_string()]), ("b".to_string(), vec![])];
        let doc = build("now".into(), status, &configured);
        let d = &doc.datasets[0];
        assert_eq!(d.last_contact_at.as_deref(), Some("2025-01-01T00:00:05.000Z"));
        assert!(d.schema_error.as_deref().is_some_and(|e| e.contains("int to bool")), "conflicts reach the API");
        assert_eq!(d.last_ok_poll_at.as_deref(), Some("2025-01-01T00:00:04.000Z"));
        assert_eq!(doc.agents.len(), 2);
        assert!(doc.agents[1].last_seen_at.is_none() && doc.agents[1].configured);
    }
}
