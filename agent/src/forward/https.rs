//! HTTPS transport: batches and heartbeats as `POST`s to the hub, with a bearer token.
//!
//! TLS is rustls with the ring provider (installed once as the process default). With
//! `hub.ca_cert` the client trusts only that CA (pinning to the deployment's own CA); without it,
//! the platform's trust store. `http://` is possible only with `insecure_dev`, checked by config
//! validation. The token is held in a sensitive header value and never logged.

use std::time::Duration;

use kho_shared::codec::EncodedBody;
use kho_shared::protocol::{
    Ack, BATCH_CONTENT_ENCODING, BATCH_CONTENT_TYPE, BATCHES_PATH, DIGEST_HEADER, ErrorCode, ErrorReply,
    HEARTBEAT_PATH, Heartbeat, WHOAMI_PATH, WhoAmI,
};
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};

use super::{Delivery, Transport, TransportError};
use crate::config::HubSection;

/// Connection attempts give up sooner than whole requests: an unreachable hub should turn into a
/// retry quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error body kept for a log message.
const MAX_ERROR_BODY: usize = 2048;

/// Installs ring as rustls's process-wide crypto provider (once; later calls are no-ops).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The hub over HTTPS.
pub struct HttpsTransport {
    client: reqwest::Client,
    batches_url: String,
    heartbeat_url: String,
    whoami_url: String,
    auth: HeaderValue,
    /// Signs each batch's digest (enrolled agents).
    signer: Option<std::sync::Arc<kho_shared::signing::Signer>>,
}

impl HttpsTransport {
    /// Builds the client: TLS roots, timeouts, credential.
    pub fn new(hub: &HubSection, token: &str) -> Result<HttpsTransport, TransportError> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(hub.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(hub.request_timeout))
            .user_agent(concat!("kho-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &hub.ca_cert {
            let pem =
                std::fs::read(ca).map_err(|e| TransportError::Setup(format!("hub.ca_cert {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                TransportError::Setup(format!("hub.ca_cert {}: not a PEM certificate: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(TransportError::Setup(format!("hub.ca_cert {}: no certificate in the file", ca.display())));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&hub.client_cert, hub.client_key.as_ref().or(hub.signing_key.as_ref())) {
            // Mutual TLS with the certificate the hub issued at enrollment (a missing file means
            // the agent is not enrolled yet: the token check will say so).
            if let (Ok(mut pem), Ok(key_pem)) = (std::fs::read(cert), std::fs::read(key)) {
                pem.extend_from_slice(&key_pem);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| TransportError::Setup(format!("hub.client_cert {}: {e}", cert.display())))?;
                builder = builder.identity(identity);
            }
        }
        if hub.url.starts_with("http://") {
            tracing::warn!(url = %hub.url, "hub.insecure_dev: sending data and the token over plain HTTP (development only)");
        }
        let client = builder.build().map_err(|e| TransportError::Setup(e.to_string()))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TransportError::Setup("hub token contains characters not allowed in an HTTP header".into()))?;
        auth.set_sensitive(true);
        let base = hub.url.trim_end_matches('/');
        Ok(HttpsTransport {
            client,
            batches_url: format!("{base}{BATCHES_PATH}"),
            heartbeat_url: format!("{base}{HEARTBEAT_PATH}"),
            whoami_url: format!("{base}{WHOAMI_PATH}"),
            auth,
            signer: None,
        })
    }

    /// Signs every batch with `signer` (an enrolled agent's key).
    pub fn with_signer(mut self, signer: Option<kho_shared::signing::Signer>) -> HttpsTransport {
        self.signer = signer.map(std::sync::Arc::new);
        self
    }

    /// Asks the hub who it takes this agent's token for and what it may write (`check`).
    pub async fn whoami(&self) -> Result<WhoAmI, TransportError> {
        let resp =
            self.client.get(&self.whoami_url).header(AUTHORIZATION, self.auth.clone()).send().await.map_err(network)?;
        let status = resp.status();
        if status.is_success() {
            let bytes = resp.bytes().await.map_err(network)?;
            return serde_json::from_slice(&bytes).map_err(|e| TransportError::BadResponse {
                status: status.as_u16(),
                message: format!("not a whoami answer (is this a Kho hub?): {e}"),
            });
        }
        let (status, reply, message) = refusal(resp).await?;
        Err(rejected(status, reply, message))
    }
}

fn network(e: reqwest::Error) -> TransportError {
    // reqwest's error never includes headers, so the token cannot leak through it.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    TransportError::Network(msg)
}

/// Reads a refusal's body: the structured reply when there is one.
async fn refusal(resp: reqwest::Response) -> Result<(u16, Option<ErrorReply>, String), TransportError> {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(network)?;
    Ok(match serde_json::from_slice::<ErrorReply>(&body) {
        Ok(reply) => {
            let message = reply.message.clone();
            (status, Some(reply), message)
        }
        Err(_) => (status, None, String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).into_owned()),
    })
}

fn rejected(status: u16, reply: Option<ErrorReply>, message: String) -> TransportError {
    TransportError::Rejected { status, code: reply.map(|r| r.code), message }
}

impl Transport for HttpsTransport {
    /// Each batch in flight takes its own connection from the client's pool.
    fn max_in_flight(&self) -> usize {
        crate::config::MAX_IN_FLIGHT_LIMIT
    }

    async fn send_batch(&self, body: &EncodedBody) -> Result<Delivery, TransportError> {
        let mut request = self.client.post(&self.batches_url);
        if let Some(signer) = &self.signer {
            let signature = signer.sign(&body.digest_hex).map_err(|e| TransportError::Setup(e.to_string()))?;
            request = request.header(kho_shared::signing::SIGNATURE_HEADER, signature);
        }
        let resp = request
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .header(CONTENT_ENCODING, BATCH_CONTENT_ENCODING)
            .header(DIGEST_HEADER, &body.digest_hex)
            .body(body.body.clone())
            .send()
            .await
            .map_err(network)?;
        let status = resp.status();
        if status.is_success() {
            let bytes = resp.bytes().await.map_err(network)?;
            let ack: Ack = serde_json::from_slice(&bytes).map_err(|e| TransportError::BadResponse {
                status: status.as_u16(),
                message: format!("not an ack: {e}"),
            })?;
            let quality = super::AckQuality { quarantined: ack.quarantined, released: ack.released };
            return Ok(Delivery::Applied { through: ack.applied_through, quality });
        }
        let (status, reply, message) = refusal(resp).await?;
        if let Some(ErrorReply { code: ErrorCode::SequenceGap, expected_seq: Some(expected), .. }) = reply {
            return Ok(Delivery::Gap { expected });
        }
        Err(rejected(status, reply, message))
    }

    async fn send_heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), TransportError> {
        let body = serde_json::to_vec(heartbeat).map_err(|e| TransportError::Setup(e.to_string()))?;
        let resp = self
            .client
            .post(&self.heartbeat_url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(network)?;
        if resp.status().is_success() {
            return Ok(());
        }
        let (status, reply, message) = refusal(resp).await?;
        Err(rejected(status, reply, message))
    }
}
