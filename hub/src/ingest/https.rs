//! The HTTPS transport for ingest: `POST /v1/batches`, `POST /v1/heartbeat`, `GET /v1/whoami`
//! (who the token belongs to, for `kho-agent check`) and `POST /v1/enroll` (an agent's one-time
//! enrollment: token + public key → access token) and `GET /v1/pseudonym-key` (the province's
//! current pseudonymisation key, for an authenticated agent: `kho-agent fetch-key`).
//!
//! The token is checked before the body is read, so an unknown caller cannot make the hub buffer
//! anything. Bodies are read with a hard byte limit (a declared `content-length` over the limit is
//! refused before reading; a chunked body is cut off at the limit), so one request holds at most
//! `max_body_bytes` of memory.

use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use kho_shared::protocol::{
    Ack, BATCH_CONTENT_ENCODING, BATCH_CONTENT_TYPE, BATCHES_PATH, DIGEST_HEADER, ENROLL_PATH, EnrollReply,
    EnrollRequest, ErrorCode, HEARTBEAT_PATH, PSEUDONYM_KEY_PATH, PseudonymKeyReply, ROTATE_KEY_PATH, RotateKeyRequest,
    WHOAMI_PATH, WhoAmI,
};
use kho_shared::signing::SIGNATURE_HEADER;

use tracing::Instrument;

use super::{Ingest, MAX_HEARTBEAT_BYTES};
use crate::error::ApiError;

/// The ingest routes.
pub fn routes(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route(BATCHES_PATH, post(post_batch))
        .route(HEARTBEAT_PATH, post(post_heartbeat))
        .route(WHOAMI_PATH, axum::routing::get(get_whoami))
        .route(ENROLL_PATH, post(post_enroll))
        .route(ROTATE_KEY_PATH, post(post_rotate_key))
        .route(PSEUDONYM_KEY_PATH, axum::routing::get(get_pseudonym_key))
        .with_state(ingest)
}

/// The current pseudonymisation key for an authenticated agent (404 when the hub has none).
async fn get_pseudonym_key(
    State(ingest): State<Arc<Ingest>>,
    tls: Tls,
    headers: HeaderMap,
) -> Result<Json<PseudonymKeyReply>, ApiError> {
    let result = async {
        let agent = ingest.authenticate(header_str(&headers, header::AUTHORIZATION)).await?;
        check_peer(&ingest, &tls, &agent)?;
        ingest.admit(&agent)?;
        match ingest.gate.pseudonym_key()? {
            Some(key) => {
                tracing::info!(agent = %agent.id, "pseudonymisation key handed out");
                Ok(PseudonymKeyReply { key })
            }
            None => {
                Err(ApiError::new(ErrorCode::Forbidden, "this hub has no pseudonymisation key ([privacy] key_file)"))
            }
        }
    }
    .await;
    result.map(Json).map_err(|e: ApiError| {
        ingest.metrics.refused(e.code());
        e.log()
    })
}

fn header_str(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Largest enrollment request: a token, a public key and a few names.
const MAX_ENROLL_BYTES: usize = 16 * 1024;

/// What the TLS layer saw of the client (axum-server puts it on every request).
type Tls = Option<axum::Extension<Arc<axum_server::tls::TlsInfo>>>;

/// With a client certificate, it must belong to the authenticated agent; without one, an
/// enrolled agent is refused when `[tls] require_client_cert` is set (config agents have none).
fn check_peer(ingest: &Ingest, tls: &Tls, agent: &crate::auth::AgentIdentity) -> Result<(), ApiError> {
    match tls.as_ref().and_then(|t| t.peer_certificates.first()) {
        Some(leaf) => super::gate::check_client_certificate(agent, leaf),
        None if ingest.require_client_cert && agent.public_key.is_some() => Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!("agent {} must present its client certificate (tls.require_client_cert)", agent.id),
        )),
        None => Ok(()),
    }
}

async fn post_batch(
    State(ingest): State<Arc<Ingest>>,
    tls: Tls,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Ack>, ApiError> {
    let span = tracing::info_span!("batch", agent = tracing::field::Empty);
    let mut agent = None;
    let result = handle_batch(&ingest, &tls, &headers, body, &mut agent).instrument(span.clone()).await;
    match result {
        Ok(ack) => Ok(Json(ack)),
        Err(e) => {
            ingest.metrics.refused(e.code());
            ingest.gate.audit_refusal(agent.as_deref(), "https", &e).await;
            Err(span.in_scope(|| e.log()))
        }
    }
}

async fn handle_batch(
    ingest: &Ingest,
    tls: &Tls,
    headers: &HeaderMap,
    body: Body,
    agent_id: &mut Option<String>,
) -> Result<Ack, ApiError> {
    let agent = ingest.authenticate(header_str(headers, header::AUTHORIZATION)).await?;
    tracing::Span::current().record("agent", agent.id.as_str());
    *agent_id = Some(agent.id.clone());
    check_peer(ingest, tls, &agent)?;
    ingest.admit(&agent)?;
    let content_type = header_str(headers, header::CONTENT_TYPE).unwrap_or("");
    if !content_type.trim().eq_ignore_ascii_case(BATCH_CONTENT_TYPE) {
        return Err(ApiError::new(
            ErrorCode::Malformed,
            format!("content-type must be {BATCH_CONTENT_TYPE}, got {content_type:?}"),
        ));
    }
    ingest.transports.note(&agent.id, "https");
    let encoding = header_str(headers, header::CONTENT_ENCODING).unwrap_or("");
    if !encoding.trim().eq_ignore_ascii_case(BATCH_CONTENT_ENCODING) {
        return Err(ApiError::new(
            ErrorCode::Malformed,
            format!("content-encoding must be {BATCH_CONTENT_ENCODING}, got {encoding:?}"),
        ));
    }
    let bytes = read_bounded(headers, body, ingest.max_body_bytes).await?;
    ingest.metrics.bytes_received(bytes.len());
    ingest.batch(&agent, bytes, header_str(headers, DIGEST_HEADER), header_str(headers, SIGNATURE_HEADER)).await
}

async fn post_rotate_key(
    State(ingest): State<Arc<Ingest>>,
    tls: Tls,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let span = tracing::info_span!("rotate_key", agent = tracing::field::Empty);
    let mut agent_id = None;
    let result = async {
        let agent = ingest.authenticate(header_str(&headers, header::AUTHORIZATION)).await?;
        tracing::Span::current().record("agent", agent.id.as_str());
        agent_id = Some(agent.id.clone());
        check_peer(&ingest, &tls, &agent)?;
        ingest.admit(&agent)?;
        let bytes = read_bounded(&headers, body, MAX_ENROLL_BYTES).await?;
        let request: RotateKeyRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::Malformed, format!("key rotation request is not valid JSON: {e}")))?;
        ingest.gate.rotate_key(&agent, request).await
    }
    .instrument(span.clone())
    .await;
    match result {
        Ok(client_cert) => Ok(Json(serde_json::json!({"ok": true, "client_cert": client_cert}))),
        Err(e) => {
            ingest.metrics.refused(e.code());
            ingest.gate.audit_refusal(agent_id.as_deref(), "https/rotate-key", &e).await;
            Err(span.in_scope(|| e.log()))
        }
    }
}

async fn post_enroll(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EnrollReply>, ApiError> {
    let span = tracing::info_span!("enroll", agent = tracing::field::Empty);
    let mut claimed = None;
    let result = async {
        let bytes = read_bounded(&headers, body, MAX_ENROLL_BYTES).await?;
        let request: EnrollRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::Malformed, format!("enrollment request is not valid JSON: {e}")))?;
        tracing::Span::current().record("agent", request.agent.as_str());
        claimed = Some(request.agent.clone());
        ingest.gate.enroll(request).await
    }
    .instrument(span.clone())
    .await;
    match result {
        Ok(reply) => Ok(Json(reply)),
        Err(e) => {
            ingest.metrics.refused(e.code());
            ingest.gate.audit_refusal(claimed.as_deref(), "https/enroll", &e).await;
            Err(span.in_scope(|| e.log()))
        }
    }
}

async fn get_whoami(State(ingest): State<Arc<Ingest>>, tls: Tls, headers: HeaderMap) -> Result<Json<WhoAmI>, ApiError> {
    let result = async {
        let agent = ingest.authenticate(header_str(&headers, header::AUTHORIZATION)).await?;
        check_peer(&ingest, &tls, &agent)?;
        ingest.admit(&agent)?;
        Ok(ingest.whoami(&agent))
    }
    .await;
    result.map(Json).map_err(|e: ApiError| {
        ingest.metrics.refused(e.code());
        e.log()
    })
}

async fn post_heartbeat(
    State(ingest): State<Arc<Ingest>>,
    tls: Tls,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let span = tracing::info_span!("heartbeat", agent = tracing::field::Empty);
    let result = async {
        let agent = ingest.authenticate(header_str(&headers, header::AUTHORIZATION)).await?;
        tracing::Span::current().record("agent", agent.id.as_str());
        check_peer(&ingest, &tls, &agent)?;
        ingest.admit(&agent)?;
        ingest.transports.note(&agent.id, "https");
        let bytes = read_bounded(&headers, body, MAX_HEARTBEAT_BYTES).await?;
        ingest.metrics.bytes_received(bytes.len());
        ingest.heartbeat(&agent, &bytes, "https").await
    }
    .instrument(span.clone())
    .await;
    result.map(|()| Json(serde_json::json!({"ok": true}))).map_err(|e| {
        ingest.metrics.refused(e.code());
        span.in_scope(|| e.log())
    })
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_bounded(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(ErrorCode::TooLarge, format!("request body exceeds the limit of {limit} bytes"));
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let capacity = declared.map_or(64 * 1024, |n| n as usize);
    let mut buf: Vec<u8> = Vec::with_capacity(capacity);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| ApiError::new(ErrorCode::Malformed, format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}
