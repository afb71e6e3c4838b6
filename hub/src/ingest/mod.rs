//! Ingest: from an authenticated request body to the applier's answer, independent of the
//! transport that carried it ([`https`] or [`mqtt`]).
//!
//! The checks run in this order, and a batch that fails any of them writes nothing:
//! 0. an enrolled agent's signature over the declared digest verifies against its stored public
//!    key (`bad_signature`; see [`gate`]);
//! 1. the body's sha256 matches the declared digest (`digest_mismatch`);
//! 2. it decompresses within `max_decoded_bytes` (`too_large`) into a v1 batch (`malformed`);
//! 3. the batch names the authenticated agent (`forbidden`);
//! 4. it follows the protocol's structural rules (`malformed` / `unsupported_version`);
//! 5. the agent may write every dataset in it (`forbidden`);
//! 6. the applier checks the ledger and applies it in one transaction (`sequence_gap`,
//!    `schema_conflict`).
//!
//! Every refusal (except ordinary flow: gaps, overload) is appended to the audit log by the gate;
//! every applied batch by the applier, in the same transaction as its rows and ledger.
//!
//! Decoding (zstd + JSON parse of up to `max_decoded_bytes`) is CPU work and runs on the blocking
//! pool, never on the async workers.

pub mod gate;
pub mod https;
pub mod mqtt;

use std::sync::Arc;

use axum::body::Bytes;
use kho_shared::codec::{self, CodecError};
use kho_shared::protocol::{Ack, Batch, ErrorCode, Heartbeat, PROTOCOL_VERSION, ProtocolError};

use crate::apply::ApplierHandle;
use crate::auth::AgentIdentity;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Largest heartbeat body: a report for a few hundred datasets fits in far less.
pub const MAX_HEARTBEAT_BYTES: usize = 1 << 20;

/// Shared state of the ingest path.
pub struct Ingest {
    /// Authentication (config agents, then the registry), enrollment and audit.
    pub gate: gate::Gate,
    /// Adds catalogue write grants to the registry's (see [`crate::catalog`]'s merge rule).
    pub catalog: crate::catalog::CatalogHandle,
    pub applier: ApplierHandle,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub max_decoded_bytes: usize,
    /// Most changes one batch may carry.
    pub max_batch_changes: usize,
    /// `[tls] require_client_cert`: enrolled agents must present their hub-issued certificate.
    pub require_client_cert: bool,
    /// Per-agent request rate.
    pub rate: crate::ratelimit::RateLimiter,
    /// Which transport each agent last used, for the dashboard's fleet page.
    pub transports: TransportBoard,
}

/// The transport (`https` or `mqtt`) each agent last authenticated on. In memory only: after a
/// restart an agent's transport shows again with its next heartbeat.
#[derive(Debug, Clone, Default)]
pub struct TransportBoard(Arc<std::sync::Mutex<std::collections::HashMap<String, &'static str>>>);

impl TransportBoard {
    pub fn note(&self, agent: &str, transport: &'static str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(agent) != Some(&transport) {
            map.insert(agent.to_string(), transport);
        }
    }

    pub fn get(&self, agent: &str) -> Option<&'static str> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(agent).copied()
    }
}

impl Ingest {
    /// The agent behind an `Authorization` header value, or 401.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<AgentIdentity, ApiError> {
        self.gate.authenticate_header(authorization).await
    }

    /// Counts one request against `agent`'s rate, or 429.
    pub fn admit(&self, agent: &AgentIdentity) -> Result<(), ApiError> {
        if self.rate.allow(&agent.id, self.gate.clock.now().as_millisecond()) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("agent {} exceeds its request rate; retry later", agent.id),
            ))
        }
    }

    /// Checks, decodes and applies one batch body from `agent`; `signature` is required (and
    /// checked before anything is decompressed) when the agent enrolled with a key.
    pub async fn batch(
        &self,
        agent: &AgentIdentity,
        body: Bytes,
        digest: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Ack, ApiError> {
        let digest = digest
            .map(str::to_string)
            .ok_or_else(|| ApiError::new(ErrorCode::DigestMismatch, "missing x-kho-content-sha256 header"))?;
        if let Some(key) = &agent.public_key {
            kho_shared::signing::verify(key, &agent.id, &digest, signature)
                .map_err(|e| ApiError::new(ErrorCode::BadSignature, e.to_string()))?;
        }
        // Its place in the agent's line, before the (possibly slow) decode.
        let arrival = self.applier.arrive(&agent.id);
        let max_decoded = self.max_decoded_bytes;
        let digest_hex = digest.clone();
        let decoded = tokio::task::spawn_blocking(move || -> Result<Batch, ApiError> {
            let batch = codec::decode(&body, &digest, max_decoded).map_err(codec_error)?;
            Ok(batch)
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("decoder task failed: {e}")))?;
        let batch = decoded?;
        if batch.changes.len() > self.max_batch_changes {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("batch has {} changes; the limit is {}", batch.changes.len(), self.max_batch_changes),
            ));
        }
        if batch.agent != agent.id {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("batch names agent {:?} but the token belongs to {:?}", batch.agent, agent.id),
            ));
        }
        batch.validate().map_err(protocol_error)?;
        let datasets = batch.datasets().into_iter().chain(batch.schemas.iter().map(|s| s.dataset.as_str()));
        let catalog = self.catalog.get();
        for dataset in datasets {
            if !agent.may_write(dataset) && !catalog.allows(&agent.id, dataset) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!("agent {} may not write dataset {dataset}", agent.id),
                ));
            }
        }
        let (first_seq, last_seq, changes) = (batch.first_seq, batch.last_seq, batch.changes.len());
        // The audit entry is written by the applier, in the batch's own transaction.
        let applied = self.applier.apply(batch, digest_hex, arrival).await?;
        tracing::info!(
            agent = %agent.id, first_seq, last_seq, changes, applied = applied.changes,
            duplicate = applied.duplicate, "batch acknowledged"
        );
        if !applied.quarantined.is_empty() {
            tracing::warn!(
                agent = %agent.id,
                rows = applied.quarantined.len(),
                "rows held in quarantine by reject quality rules (the rest of the batch is loaded)"
            );
        }
        Ok(Ack {
            applied_through: applied.applied_through,
            quarantined: applied.quarantined,
            released: applied.released,
        })
    }

    /// Who `agent` is to this hub and what it may write (hub config ∪ catalogue).
    pub fn whoami(&self, agent: &AgentIdentity) -> kho_shared::protocol::WhoAmI {
        let catalog = self.catalog.get();
        let mut datasets: Vec<String> = agent
            .datasets()
            .map(str::to_string)
            .chain(catalog.datasets.iter().filter(|d| d.agents.contains(&agent.id)).map(|d| d.id.clone()))
            .collect();
        datasets.sort();
        datasets.dedup();
        kho_shared::protocol::WhoAmI {
            agent: agent.id.clone(),
            datasets,
            hub_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Parses and stores a heartbeat from `agent`.
    pub async fn heartbeat(&self, agent: &AgentIdentity, body: &[u8], transport: &'static str) -> Result<(), ApiError> {
        let mut hb: Heartbeat = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(ErrorCode::Malformed, format!("heartbeat is not valid JSON: {e}")))?;
        if hb.v != PROTOCOL_VERSION {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!("heartbeat version {} (this hub speaks {PROTOCOL_VERSION})", hb.v),
            ));
        }
        if hb.agent != agent.id {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("heartbeat names agent {:?} but the token belongs to {:?}", hb.agent, agent.id),
            ));
        }
        // A report only counts as sync evidence for datasets the agent may write.
        let catalog = self.catalog.get();
        hb.datasets.retain(|r| {
            let allowed = agent.may_write(&r.dataset) || catalog.allows(&agent.id, &r.dataset);
            if !allowed {
                tracing::warn!(agent = %agent.id, dataset = %r.dataset, "heartbeat reports a dataset the agent may not write; ignored");
            }
            allowed
        });
        tracing::debug!(agent = %agent.id, outbox_depth = hb.outbox_depth, "heartbeat");
        self.applier.heartbeat(hb, transport).await?;
        Ok(())
    }
}

fn codec_error(e: CodecError) -> ApiError {
    let code = match &e {
        CodecError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
        CodecError::TooLarge { .. } => ErrorCode::TooLarge,
        CodecError::Decompress(_) | CodecError::Json(_) | CodecError::Compress(_) => ErrorCode::Malformed,
    };
    ApiError::new(code, e.to_string())
}

fn protocol_error(e: ProtocolError) -> ApiError {
    let code = match e {
        ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        _ => ErrorCode::Malformed,
    };
    ApiError::new(code, e.to_string())
}
