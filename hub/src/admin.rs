//! `kho-hub agent add|list|revoke` and `kho-hub audit verify`: the operator's side of the agent
//! registry ([`crate::registry`]). Each command opens the warehouse named by the hub config, does
//! one thing, appends what it did to the audit log, and returns the text to print. A running hub
//! sees the change on its next request (revocation is immediate).

use std::time::Duration;

use crate::audit::{self, Entry, Kind};
use crate::config::HubConfig;
use crate::registry::{self, AgentStore, NewAgent, RegistryError};

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Invalid(String),
    #[error("the audit log is broken: {0}")]
    Broken(#[from] audit::ChainError),
}

/// `kho-hub agent add`.
#[derive(Debug, Clone)]
pub struct AddAgent {
    pub id: String,
    pub department: String,
    pub datasets: Vec<String>,
    pub expires_in: Duration,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Validates and registers an agent; returns the one-time enrollment token and its expiry.
pub fn add(config: &HubConfig, store: &mut dyn AgentStore, add: &AddAgent) -> Result<(String, i64), AdminError> {
    let mut problems = Vec::new();
    if let Err(e) = crate::config::check_agent_id(&add.id) {
        problems.push(format!("agent id: {e}"));
    }
    if config.agents.iter().any(|a| a.id == add.id) {
        problems.push(format!("agent {} is declared in the hub config; remove it there first", add.id));
    }
    if add.department.trim().is_empty() {
        problems.push("--department must not be empty".into());
    }
    if add.datasets.is_empty() {
        problems.push("--datasets: give at least one dataset".into());
    }
    for d in &add.datasets {
        if let Err(e) = kho_shared::ident::check_dataset_name(d) {
            problems.push(format!("--datasets {d:?}: {e}"));
        }
    }
    if add.expires_in.is_zero() || add.expires_in > registry::MAX_TOKEN_TTL {
        problems
            .push(format!("--expires must be between 1s and {}", humantime::format_duration(registry::MAX_TOKEN_TTL)));
    }
    if !problems.is_empty() {
        return Err(AdminError::Invalid(problems.join("; ")));
    }
    let token = registry::new_token("kho-enroll")?;
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(add.expires_in.as_millis()).unwrap_or(i64::MAX));
    let agent = NewAgent {
        id: add.id.clone(),
        department: add.department.clone(),
        datasets: add.datasets.clone(),
        token_sha256: registry::token_sha256(&token),
        token_expires_at_ms: expires,
    };
    store.add(&agent, now)?;
    store.append_audit(&Entry {
        at_ms: now,
        kind: Kind::AgentAdded,
        agent: Some(add.id.clone()),
        detail: serde_json::json!({"department": add.department, "datasets": add.datasets, "token_expires_at_ms": expires}),
    })?;
    Ok((token, expires))
}

/// Revokes an agent; returns what to print.
pub fn revoke(config: &HubConfig, store: &mut dyn AgentStore, id: &str) -> Result<String, AdminError> {
    if config.agents.iter().any(|a| a.id == id) {
        return Err(AdminError::Invalid(format!(
            "agent {id} is declared in the hub config (token in the file): remove its [[agent]] section and restart the hub"
        )));
    }
    let now = now_ms();
    if !store.revoke(id, now)? {
        return Ok(format!("agent {id} was already revoked\n"));
    }
    store.append_audit(&Entry {
        at_ms: now,
        kind: Kind::Revoked,
        agent: Some(id.to_string()),
        detail: serde_json::json!({}),
    })?;
    Ok(format!("agent {id} revoked: its requests are refused from now on (HTTPS and MQTT)\n"))
}

fn millis(ms: Option<i64>) -> String {
    let at = ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok());
    at.and_then(|t| t.round(jiff::Unit::Second).ok()).map_or_else(|| "-".into(), |t| t.to_string())
}

/// The fleet table (registry agents and config agents).
pub fn list(config: &HubConfig, store: &mut dyn AgentStore) -> Result<String, AdminError> {
    let agents = store.list()?;
    let mut out = format!(
        "{:<24} {:<16} {:<9} {:<24} {:<10} {:<9} {:<24} {:>8}  {:<24} {}\n",
        "AGENT",
        "DEPARTMENT",
        "STATE",
        "ENROLLED",
        "VERSION",
        "TRANSPORT",
        "LAST SEEN",
        "BACKLOG",
        "DATASETS",
        "LAST ERROR"
    );
    for a in &agents {
        let state = match a.state() {
            registry::AgentState::Pending => "pending",
            registry::AgentState::Enrolled => "enrolled",
            registry::AgentState::Revoked => "revoked",
        };
        out.push_str(&format!(
            "{:<24} {:<16} {:<9} {:<24} {:<10} {:<9} {:<24} {:>8}  {:<24} {}\n",
            a.id,
            a.department,
            state,
            millis(a.enrolled_at_ms),
            a.version.as_deref().unwrap_or("-"),
            a.transport.as_deref().unwrap_or("-"),
            a.last_seen_at.as_deref().unwrap_or("-"),
            a.outbox_depth.map_or_else(|| "-".into(), |d| d.to_string()),
            a.datasets.join(","),
            a.last_error.as_deref().unwrap_or("-")
        ));
    }
    for a in &config.agents {
        out.push_str(&format!(
            "{:<24} {:<16} {:<9} {:<24} {:<10} {:<9} {:<24} {:>8}  {:<24} {}\n",
            a.id,
            "-",
            "config",
            "-",
            "-",
            "-",
            "-",
            "-",
            a.datasets.join(","),
            "-"
        ));
    }
    Ok(out)
}

/// Verifies the audit chain; returns the head to record elsewhere.
pub fn verify_audit(store: &mut dyn AgentStore) -> Result<String, AdminError> {
    let rows = store.audit_log()?;
    let head = audit::verify(&rows)?;
    Ok(format!("audit log intact: {} entries, head sha256 {}\n", head.count, head.sha256))
}
