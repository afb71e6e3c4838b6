//! The hub's agent registry: agents added by an operator (`kho-hub agent add`), their one-time
//! enrollment tokens, the public keys they enrolled with, their access tokens and revocations —
//! and the audit log ([`crate::audit`]) of what they did. Both live in the warehouse database
//! (SQLite file or PostgreSQL schema `kho`), so every hub instance and the `kho-hub agent` /
//! `kho-hub audit` commands see the same state; a revocation takes effect on the next request,
//! over HTTPS and MQTT alike, because authentication reads the registry (not a cached copy).
//!
//! Secrets are never stored: enrollment and access tokens are kept as their sha256 (hex), and
//! only the agent's *public* key is known to the hub. A token is high-entropy random (32 bytes
//! from the OS), so looking it up by its hash leaks nothing through timing.
//!
//! Agents declared in the hub config (`[[agent]]` with a token) keep working unchanged; they are
//! authenticated first ([`crate::auth::AgentRegistry`]) and are not stored here.
//!
//! Implementations of [`AgentStore`]: [`sqlite`] (tables `_kho_agent_registry`, `_kho_audit`) and
//! [`postgres`] (`kho.agent_registry`, `kho.audit`). All calls block; the hub runs them on the
//! blocking pool.

pub mod postgres;
pub mod sqlite;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::audit;
use crate::config::{WarehouseKind, WarehouseSection};

/// Longest enrollment token life an operator may ask for: an unused token is a standing secret.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// Default enrollment token life: long enough to reach a department's IT staff the same day.
pub const DEFAULT_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Why the registry failed or refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("agent {0} is already enrolled; revoke it first to issue a new enrollment token")]
    AlreadyEnrolled(String),
    #[error("agent {0} is not in the registry")]
    Unknown(String),
    #[error("registry {context}: {source}")]
    Database { context: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl RegistryError {
    pub fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> RegistryError {
        RegistryError::Database { context: context.into(), source: Box::new(source) }
    }
}

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Added; its enrollment token has not been used yet.
    Pending,
    Enrolled,
    Revoked,
}

/// One registered agent (and, from [`AgentStore::list`], what its last heartbeat said).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegisteredAgent {
    pub id: String,
    pub department: String,
    pub datasets: Vec<String>,
    pub added_at_ms: i64,
    pub token_expires_at_ms: i64,
    pub enrolled_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// Ed25519 public key, hex.
    pub public_key: Option<String>,
    pub last_seen_at: Option<String>,
    pub version: Option<String>,
    pub outbox_depth: Option<i64>,
    /// The first per-dataset capture error of the last heartbeat (`dataset: error`).
    pub last_error: Option<String>,
}

impl RegisteredAgent {
    pub fn state(&self) -> AgentState {
        match (self.revoked_at_ms, self.enrolled_at_ms) {
            (Some(_), _) => AgentState::Revoked,
            (None, Some(_)) => AgentState::Enrolled,
            (None, None) => AgentState::Pending,
        }
    }
}

/// What `kho-hub agent add` registers.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub id: String,
    pub department: String,
    pub datasets: Vec<String>,
    /// sha256 (hex) of the enrollment token.
    pub token_sha256: String,
    pub token_expires_at_ms: i64,
}

/// The registry and audit storage. Every method is one short transaction.
pub trait AgentStore: Send {
    /// Registers (or re-issues the token of) a pending or revoked agent; refuses an enrolled one.
    fn add(&mut self, agent: &NewAgent, now_ms: i64) -> Result<(), RegistryError>;
    /// The agent whose enrollment token has this sha256.
    fn by_enroll_token(&mut self, token_sha256: &str) -> Result<Option<RegisteredAgent>, RegistryError>;
    /// Marks `id` enrolled with `public_key` (hex) and access token hash, if it is still pending:
    /// false when another request enrolled it first (a token works once, even under a race).
    fn complete_enrollment(
        &mut self,
        id: &str,
        public_key: &str,
        access_sha256: &str,
        now_ms: i64,
    ) -> Result<bool, RegistryError>;
    /// The agent whose access token has this sha256 (revoked ones included, so the refusal can say so).
    fn by_access_token(&mut self, access_sha256: &str) -> Result<Option<RegisteredAgent>, RegistryError>;
    /// Every registered agent with its last heartbeat, by id.
    fn list(&mut self) -> Result<Vec<RegisteredAgent>, RegistryError>;
    /// Replaces `id`'s public key `old` (hex) by `new` if it is still `old` and the agent is not
    /// revoked (compare-and-swap); false otherwise.
    fn rotate_key(&mut self, id: &str, old: &str, new: &str) -> Result<bool, RegistryError>;
    /// Revokes `id` (its access and enrollment tokens stop working); false if already revoked.
    fn revoke(&mut self, id: &str, now_ms: i64) -> Result<bool, RegistryError>;
    /// Appends an audit entry after the current last one, atomically.
    fn append_audit(&mut self, entry: &audit::Entry) -> Result<audit::Stored, RegistryError>;
    /// The whole audit log in sequence order.
    fn audit_log(&mut self) -> Result<Vec<audit::Stored>, RegistryError>;
}

/// Opens the registry in the configured warehouse (creating its tables if needed).
pub fn open(config: &WarehouseSection) -> Result<Box<dyn AgentStore>, RegistryError> {
    match config.kind {
        WarehouseKind::Sqlite => Ok(Box::new(sqlite::SqliteAgentStore::open(&config.path)?)),
        WarehouseKind::Postgres => {
            let settings = crate::warehouse::postgres::Settings {
                url: config.url.clone().unwrap_or_default(),
                ssl_root_cert: config.ssl_root_cert.clone(),
                history_retention: config.history_retention,
                unassigned_schema: config.unassigned_schema.clone(),
            };
            Ok(Box::new(postgres::PostgresAgentStore::open(&settings)?))
        }
    }
}

/// sha256 of a token, hex (what the registry stores).
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A fresh random token with a readable prefix (`kho-enroll-…`, `kho-access-…`).
pub fn new_token(prefix: &str) -> Result<String, RegistryError> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RegistryError::database("random token", std::io::Error::other("the OS random source failed")))?;
    Ok(format!("{prefix}-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// Why an enrollment is refused (each reason is audited and answered as 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("unknown enrollment token")]
    UnknownToken,
    #[error("enrollment token expired")]
    Expired,
    #[error("enrollment token already used")]
    AlreadyUsed,
    #[error("agent {0} is revoked")]
    Revoked(String),
    #[error("the enrollment token was issued for another agent, not {0:?}")]
    WrongAgent(String),
    #[error("public key is not {} bytes of hex", kho_shared::signing::PUBLIC_KEY_LEN)]
    BadKey,
}

/// Whether `found` (the agent holding the presented token) may enroll as `claimed` at `now_ms`.
pub fn check_enrollment(found: Option<&RegisteredAgent>, claimed: &str, now_ms: i64) -> Result<(), EnrollRefusal> {
    let agent = found.ok_or(EnrollRefusal::UnknownToken)?;
    if agent.revoked_at_ms.is_some() {
        return Err(EnrollRefusal::Revoked(agent.id.clone()));
    }
    if agent.enrolled_at_ms.is_some() {
        return Err(EnrollRefusal::AlreadyUsed);
    }
    if now_ms >= agent.token_expires_at_ms {
        return Err(EnrollRefusal::Expired);
    }
    if agent.id != claimed {
        return Err(EnrollRefusal::WrongAgent(claimed.to_string()));
    }
    Ok(())
}

/// The first capture error in a heartbeat's dataset reports (stored JSON), as `dataset: error`.
pub fn first_error(report_json: Option<&str>) -> Option<String> {
    let reports: Vec<kho_shared::protocol::DatasetReport> = serde_json::from_str(report_json?).ok()?;
    reports.into_iter().find_map(|r| r.last_error.map(|e| format!("{}: {e}", r.dataset)))
}

/// Decodes a hex Ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Result<Vec<u8>, EnrollRefusal> {
    match hex::decode(hex_key.trim()) {
        Ok(k) if k.len() == kho_shared::signing::PUBLIC_KEY_LEN => Ok(k),
        _ => Err(EnrollRefusal::BadKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expires: i64) -> RegisteredAgent {
        RegisteredAgent {
            id: "a".into(),
            department: "so_y_te".into(),
            datasets: vec!["ho_so".into()],
            added_at_ms: 0,
            token_expires_at_ms: expires,
            enrolled_at_ms: None,
            revoked_at_ms: None,
            public_key: None,
            last_seen_at: None,
            version: None,
            outbox_depth: None,
            last_error: None,
        }
    }

    #[test]
    fn enrollment_rules() {
        let a = pending(1000);
        assert_eq!(check_enrollment(Some(&a), "a", 999), Ok(()));
        assert_eq!(check_enrollment(Some(&a), "a", 1000), Err(EnrollRefusal::Expired));
        assert_eq!(check_enrollment(Some(&a), "b", 10), Err(EnrollRefusal::WrongAgent("b".into())));
        assert_eq!(check_enrollment(None, "a", 10), Err(EnrollRefusal::UnknownToken));
        let used = RegisteredAgent { enrolled_at_ms: Some(5), ..a.clone() };
        assert_eq!(check_enrollment(Some(&used), "a", 10), Err(EnrollRefusal::AlreadyUsed));
        assert_eq!(used.state(), AgentState::Enrolled);
        let revoked = RegisteredAgent { revoked_at_ms: Some(6), ..used };
        assert_eq!(check_enrollment(Some(&revoked), "a", 10), Err(EnrollRefusal::Revoked("a".into())));
        assert_eq!(revoked.state(), AgentState::Revoked);
        assert_eq!(parse_public_key(&"ab".repeat(32)).map(|k| k.len()), Ok(32));
        assert_eq!(parse_public_key("abc"), Err(EnrollRefusal::BadKey));
    }

    #[test]
    fn the_first_capture_error_is_shown() {
        let json = r#"[{"dataset":"a","last_ok_poll_at_ms":1,"captured_through_seq":0,"last_error":null},
                       {"dataset":"b","last_ok_poll_at_ms":null,"captured_through_seq":0,"last_error":"no such table"}]"#;
        assert_eq!(first_error(Some(json)).as_deref(), Some("b: no such table"));
        assert_eq!(first_error(Some("[]")), None);
        assert_eq!(first_error(None), None);
    }

    #[test]
    fn tokens_are_random_and_stored_as_hashes() {
        let t1 = new_token("kho-enroll").expect("token");
        let t2 = new_token("kho-enroll").expect("token");
        assert!(t1.starts_with("kho-enroll-") && t1.len() > 40 && t1 != t2);
        assert_eq!(token_sha256(&t1).len(), 64);
        assert_ne!(token_sha256(&t1), token_sha256(&t2));
    }
}
