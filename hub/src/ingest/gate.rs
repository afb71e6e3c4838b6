//! The gate: who is calling (config agents, then the registry), enrollment, batch signatures and
//! the audit trail of every decision.
//!
//! Authentication order: a token declared in the hub config (constant-time, in memory), then the
//! registry by the token's sha256 — read on every request, so `kho-hub agent revoke` is effective
//! on the next request over HTTPS and MQTT alike. Registry agents carry a public key and every
//! batch of theirs must be signed ([`kho_shared::signing`]); config agents have no key and keep
//! working as before.
//!
//! The registry and the audit log are blocking database calls on one connection; they run on the
//! blocking pool. An audit append that fails is logged at ERROR (the operator must look); the
//! refusal it records is answered either way. Applied batches are not audited here: the applier
//! writes their entry in the batch's own transaction ([`crate::apply`]).

use std::sync::{Arc, Mutex};

use kho_shared::protocol::{EnrollReply, EnrollRequest, ErrorCode, PROTOCOL_VERSION, RotateKeyRequest};

use crate::audit::{Entry, Kind};
use crate::auth::{AgentIdentity, AgentRegistry, bearer};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::registry::{self, AgentStore, EnrollRefusal, RegisteredAgent, RegistryError};

/// Refusals audited per second, all callers together: beyond it (a flood of forged requests) they
/// are still refused and counted in the metrics, but not each written to the audit log, so an
/// attacker cannot fill the disk through it. A fixed key keeps the limiter's memory constant.
const AUDITED_REFUSALS_PER_SECOND: u32 = 50;
const AUDITED_REFUSALS_BURST: u32 = 200;

/// The registry store, shared by the request handlers.
pub type SharedStore = Arc<Mutex<Box<dyn AgentStore>>>;

/// Authentication, enrollment and audit.
pub struct Gate {
    pub config_agents: AgentRegistry,
    pub store: SharedStore,
    pub clock: Arc<dyn Clock>,
    /// Issues each enrolled agent its client certificate.
    pub agent_ca: Arc<crate::agent_ca::AgentCa>,
    /// Bounds how many refusals per second reach the audit log.
    pub refusal_budget: crate::ratelimit::RateLimiter,
    /// The province's pseudonymisation key file (`[privacy] key_file`), read at each use.
    pub pseudonym_keys: Option<std::path::PathBuf>,
}

/// The refusal budget a hub starts with.
pub fn refusal_budget() -> crate::ratelimit::RateLimiter {
    crate::ratelimit::RateLimiter::new(AUDITED_REFUSALS_PER_SECOND, AUDITED_REFUSALS_BURST)
}

impl Gate {
    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Runs `f` on the store, on the blocking pool.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn AgentStore) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = Arc::clone(&self.store);
        let joined = tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(guard.as_mut())
        })
        .await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "agent registry failed");
                Err(ApiError::new(ErrorCode::Unavailable, "the agent registry is unavailable; retry later"))
            }
            Err(e) => Err(ApiError::new(ErrorCode::Internal, format!("registry task failed: {e}"))),
        }
    }

    /// The agent behind an `Authorization` header value.
    pub async fn authenticate_header(&self, header: Option<&str>) -> Result<AgentIdentity, ApiError> {
        match bearer(header) {
            Some(token) => self.authenticate(token).await,
            None => Err(ApiError::new(ErrorCode::Unauthorized, "missing or unknown bearer token")),
        }
    }

    /// The agent holding `token`: a config agent, or an enrolled, unrevoked registry agent.
    pub async fn authenticate(&self, token: &str) -> Result<AgentIdentity, ApiError> {
        if let Some(agent) = self.config_agents.authenticate(token) {
            return Ok(agent.clone());
        }
        let hash = registry::token_sha256(token);
        let found = self.with_store(move |s| s.by_access_token(&hash)).await?;
        identity_of(found)
    }

    /// Enrolls an agent: checks the one-time token, stores the public key, issues the access token.
    pub async fn enroll(&self, request: EnrollRequest) -> Result<EnrollReply, ApiError> {
        if request.v != PROTOCOL_VERSION {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!("enrollment version {} (this hub speaks {PROTOCOL_VERSION})", request.v),
            ));
        }
        let refuse = |r: EnrollRefusal| ApiError::new(ErrorCode::Unauthorized, r.to_string());
        let public_key = registry::parse_public_key(&request.public_key).map_err(refuse)?;
        let now = self.now_ms();
        let hash = registry::token_sha256(&request.token);
        let found = self.with_store(move |s| s.by_enroll_token(&hash)).await?;
        registry::check_enrollment(found.as_ref(), &request.agent, now).map_err(refuse)?;
        let Some(agent) = found else { return Err(refuse(EnrollRefusal::UnknownToken)) };
        let access_token = registry::new_token("kho-access")
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot create an access token: {e}")))?;
        let (id, key_hex, access_hash) =
            (agent.id.clone(), hex::encode(&public_key), registry::token_sha256(&access_token));
        let done = self.with_store(move |s| s.complete_enrollment(&id, &key_hex, &access_hash, now)).await?;
        if !done {
            // Another request used the token between our read and our write.
            return Err(refuse(EnrollRefusal::AlreadyUsed));
        }
        tracing::info!(agent = %agent.id, department = %agent.department, version = %request.version, "agent enrolled");
        self.audit(Entry {
            at_ms: now,
            kind: Kind::Enrolled,
            agent: Some(agent.id.clone()),
            detail: serde_json::json!({"public_key": hex::encode(&public_key), "version": request.version}),
        })
        .await;
        let client_cert = match self.agent_ca.issue(&agent.id, &public_key) {
            Ok(pem) => Some(pem),
            Err(e) => {
                tracing::error!(agent = %agent.id, error = %e, "cannot issue the agent's client certificate");
                None
            }
        };
        let pseudonym_key = self.pseudonym_key().ok().flatten();
        Ok(EnrollReply {
            agent: agent.id,
            department: agent.department,
            datasets: agent.datasets,
            access_token,
            client_cert,
            pseudonym_key,
        })
    }

    /// The current pseudonymisation key's text, `None` when the hub has no key file. The secret
    /// is never logged; a broken file is (without it).
    pub fn pseudonym_key(&self) -> Result<Option<String>, ApiError> {
        let Some(path) = &self.pseudonym_keys else { return Ok(None) };
        match crate::privacy::current_key(path) {
            Ok(key) => Ok(Some(key.expose())),
            Err(e) => {
                tracing::error!(problem = %e, "cannot read the pseudonymisation key file");
                Err(ApiError::new(ErrorCode::Unavailable, "the hub's pseudonymisation key is unavailable; retry later"))
            }
        }
    }

    /// Replaces an enrolled agent's public key (`kho-agent rotate-key`). Idempotent: a retry after
    /// a lost answer finds the new key already stored and succeeds.
    /// Returns the client certificate issued for the new key.
    pub async fn rotate_key(
        &self,
        agent: &AgentIdentity,
        request: RotateKeyRequest,
    ) -> Result<Option<String>, ApiError> {
        use kho_shared::signing::verify_rotation;
        let bad = |why: String| ApiError::new(ErrorCode::BadSignature, why);
        if request.v != PROTOCOL_VERSION {
            return Err(ApiError::new(ErrorCode::UnsupportedVersion, format!("key rotation version {}", request.v)));
        }
        let Some(old_key) = agent.public_key.clone() else {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("agent {} has no key to rotate (config agent)", agent.id),
            ));
        };
        let new_key = registry::parse_public_key(&request.new_public_key)
            .map_err(|e| ApiError::new(ErrorCode::Malformed, e.to_string()))?;
        verify_rotation(&new_key, &agent.id, &request.new_public_key, &request.new_key_signature)
            .map_err(|e| bad(format!("new key's proof: {e}")))?;
        let issue = |key: &[u8]| match self.agent_ca.issue(&agent.id, key) {
            Ok(pem) => Some(pem),
            Err(e) => {
                tracing::error!(agent = %agent.id, error = %e, "cannot issue the agent's client certificate");
                None
            }
        };
        if new_key == old_key {
            return Ok(issue(&new_key)); // a retry whose first attempt succeeded
        }
        verify_rotation(&old_key, &agent.id, &request.new_public_key, &request.old_key_signature)
            .map_err(|e| bad(format!("current key's proof: {e}")))?;
        let (id, old_hex, new_hex) = (agent.id.clone(), hex::encode(&old_key), hex::encode(&new_key));
        let swapped = self.with_store(move |s| s.rotate_key(&id, &old_hex, &new_hex)).await?;
        if !swapped {
            return Err(ApiError::new(ErrorCode::Unauthorized, "the key changed or the agent was revoked meanwhile"));
        }
        tracing::info!(agent = %agent.id, "agent rotated its key");
        self.audit(Entry {
            at_ms: self.now_ms(),
            kind: Kind::KeyRotated,
            agent: Some(agent.id.clone()),
            detail: serde_json::json!({"old_public_key": hex::encode(&old_key), "public_key": hex::encode(&new_key)}),
        })
        .await;
        Ok(issue(&new_key))
    }

    /// Appends an audit entry; a failure is logged, never returned.
    pub async fn audit(&self, entry: Entry) {
        let kind = entry.kind;
        if let Err(e) = self.with_store(move |s| s.append_audit(&entry).map(drop)).await {
            tracing::error!(kind = kind.as_str(), error = %e.reply.message, "cannot append to the audit log");
        }
    }

    /// Audits a refused request (`agent`: who it claimed or proved to be, when known).
    pub async fn audit_refusal(&self, agent: Option<&str>, transport: &str, refusal: &ApiError) {
        if !audited(refusal.code()) {
            return;
        }
        if !self.refusal_budget.allow("refusals", self.now_ms()) {
            tracing::debug!("refusal not audited: over the audit budget (flood)");
            return;
        }
        self.audit(Entry {
            at_ms: self.now_ms(),
            kind: Kind::Refused,
            agent: agent.map(str::to_string),
            detail: serde_json::json!({
                "transport": transport,
                "code": refusal.code(),
                "reason": refusal.reply.message,
            }),
        })
        .await;
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Binds a verified client certificate (`leaf_der`, already chained to the agent CA by the TLS
/// layer) to the agent the token names: the certificate must carry that agent's enrolled public
/// key. The agent CA only issues certificates for enrolled keys, so this is the same as "the
/// certificate was issued to this agent"; a config agent (no key) may not present one.
pub fn check_client_certificate(agent: &AgentIdentity, leaf_der: &[u8]) -> Result<(), ApiError> {
    let forbidden =
        || ApiError::new(ErrorCode::Forbidden, format!("the client certificate was not issued to agent {}", agent.id));
    let key = agent.public_key.as_deref().ok_or_else(forbidden)?;
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(key);
    if leaf_der.windows(spki.len()).any(|w| w == spki.as_slice()) { Ok(()) } else { Err(forbidden()) }
}

/// Refusals worth an audit entry: security and integrity decisions. Sequence gaps are ordinary
/// protocol flow and overload refusals say nothing about the caller.
fn audited(code: ErrorCode) -> bool {
    !matches!(code, ErrorCode::SequenceGap | ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited)
}

fn identity_of(found: Option<RegisteredAgent>) -> Result<AgentIdentity, ApiError> {
    let unknown = || ApiError::new(ErrorCode::Unauthorized, "missing or unknown bearer token");
    let agent = found.ok_or_else(unknown)?;
    if agent.revoked_at_ms.is_some() {
        return Err(ApiError::new(ErrorCode::Unauthorized, format!("agent {} is revoked", agent.id)));
    }
    let key = agent.public_key.as_deref().and_then(|k| hex::decode(k).ok()).ok_or_else(unknown)?;
    Ok(AgentIdentity::enrolled(&agent.id, &agent.datasets, key))
}
