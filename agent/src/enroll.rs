//! `kho-agent enroll`: the agent's first contact with a hub that registered it
//! (`kho-hub agent add`).
//!
//! The agent generates an Ed25519 key pair here (ring, from the OS random source), sends only the
//! public half with the one-time enrollment token to `POST /v1/enroll`, and receives its access
//! token. The private key goes to `hub.signing_key` and the access token to `hub.token_file`,
//! both written atomically with mode 0600 and only after the hub accepted the enrollment — a
//! refused or failed attempt leaves existing files untouched. From then on every batch is signed
//! ([`kho_shared::signing`]).
//!
//! `kho-agent rotate-key` replaces the key pair: it takes the agent lock (the service must be
//! stopped, so nothing signs with a key that is being replaced), keeps the new private key in
//! `<signing_key>.new` (0600) until the hub has accepted it — proven by signatures of both the
//! current and the new key — and then renames it over `signing_key`. Interrupted at any point, it
//! is simply run again: the pending key is reused and the hub accepts a repeat. The outbox is not
//! touched, so buffered changes are sent, signed with the new key, when the service starts again.
//!
//! The enrollment answer also carries the province's pseudonymisation key when the hub has one
//! (issue 14): it is stored (0600) in `pseudonym.key` beside the signing key, or in
//! `privacy.key_file`. `kho-agent fetch-key` fetches the current key again after the hub rotated
//! it; capture reads the key at each poll, so the running agent uses it from its next pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use kho_shared::protocol::{
    ENROLL_PATH, EnrollReply, EnrollRequest, ErrorReply, PROTOCOL_VERSION, ROTATE_KEY_PATH, RotateKeyRequest,
};
use ring::signature::KeyPair;

use crate::config::AgentConfig;

const PEM_LABEL: &str = "PRIVATE KEY";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach the hub at {url}: {message}")]
    Network { url: String, message: String },
    #[error("the hub refused the enrollment ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

/// What `kho-agent enroll` was given on the command line.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// Base URL of the hub (default: `hub.url` when the transport is HTTPS).
    pub hub_url: Option<String>,
    pub token: String,
    /// CA to trust for the hub (default: `hub.ca_cert`).
    pub ca_cert: Option<PathBuf>,
}

/// Enrolls this agent; returns the hub's answer (with the access token already stored).
pub async fn enroll(config: &AgentConfig, options: &EnrollOptions) -> Result<EnrollReply, EnrollError> {
    let key_path = config.hub.signing_key.clone().ok_or_else(|| {
        EnrollError::Setup("hub.signing_key is not set: name the file that will hold this agent's private key".into())
    })?;
    let token_path = config.hub.token_file.clone().ok_or_else(|| {
        EnrollError::Setup("hub.token_file is not set: name the file that will hold the access token".into())
    })?;
    let url = hub_url(config, options)?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| EnrollError::Setup("cannot generate a key pair (OS random source failed)".into()))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| EnrollError::Setup(format!("generated key unusable: {e}")))?;
    let request = EnrollRequest {
        v: PROTOCOL_VERSION,
        agent: config.agent.id.clone(),
        token: options.token.trim().to_string(),
        public_key: hex::encode(pair.public_key().as_ref()),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let reply: EnrollReply =
        post(&url, ENROLL_PATH, None, options.ca_cert.as_ref().or(config.hub.ca_cert.as_ref()), &request).await?;
    if reply.agent != config.agent.id {
        return Err(EnrollError::Setup(format!(
            "the hub enrolled agent {:?} but this config is agent {:?}",
            reply.agent, config.agent.id
        )));
    }
    write_private(&key_path, pkcs8_to_pem(pkcs8.as_ref()).as_bytes())?;
    write_private(&token_path, format!("{}\n", reply.access_token).as_bytes())?;
    if let (Some(path), Some(pem)) = (issued_cert_path(config), &reply.client_cert) {
        write_private(path, pem.as_bytes())?;
    }
    if let Some(key) = &reply.pseudonym_key {
        store_pseudonym_key(config, key)?;
    }
    Ok(reply)
}

/// `kho-agent fetch-key`: fetches the hub's current pseudonymisation key and stores it; returns
/// its version (never the secret).
pub async fn fetch_key(config: &AgentConfig, options: &EnrollOptions) -> Result<u32, EnrollError> {
    let url = hub_url(config, options)?;
    let token = config.bearer_token()?;
    let ca = options.ca_cert.as_ref().or(config.hub.ca_cert.as_ref());
    let reply: kho_shared::protocol::PseudonymKeyReply =
        get(&url, kho_shared::protocol::PSEUDONYM_KEY_PATH, &token, ca).await?;
    store_pseudonym_key(config, &reply.key)
}

/// Checks and stores a key text from the hub where capture reads it; returns its version.
fn store_pseudonym_key(config: &AgentConfig, text: &str) -> Result<u32, EnrollError> {
    let key = kho_shared::pseudonym::PseudonymKey::parse(text)
        .map_err(|e| EnrollError::Setup(format!("the hub sent an unusable pseudonymisation key: {e}")))?;
    let path = crate::privacy::key::store_path(config).ok_or_else(|| {
        EnrollError::Setup(
            "privacy.key_env is set: put the key in that environment variable yourself (it is not stored)".into(),
        )
    })?;
    crate::privacy::key::store(&path, &key).map_err(|source| EnrollError::Write { path: path.clone(), source })?;
    Ok(key.version())
}

/// Replaces this agent's key pair (see the module comment); returns the new public key (hex).
pub async fn rotate_key(config: &AgentConfig, options: &EnrollOptions) -> Result<String, EnrollError> {
    let _lock = crate::lock::AgentLock::acquire(&config.agent.data_dir)?;
    let key_path = config
        .hub
        .signing_key
        .clone()
        .ok_or_else(|| EnrollError::Setup("hub.signing_key is not set: this agent has no key to rotate".into()))?;
    let current = config.signer()?.ok_or_else(|| EnrollError::Setup("no current signing key".into()))?;
    let pending_path = PathBuf::from(format!("{}.new", key_path.display()));
    let pending_der = match std::fs::read(&pending_path) {
        Ok(pem) => pem_to_pkcs8(&pem).map_err(|e| EnrollError::Setup(format!("{}: {e}", pending_path.display())))?,
        Err(_) => {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| EnrollError::Setup("cannot generate a key pair (OS random source failed)".into()))?;
            write_private(&pending_path, pkcs8_to_pem(pkcs8.as_ref()).as_bytes())?;
            pkcs8.as_ref().to_vec()
        }
    };
    let next = kho_shared::signing::Signer::from_pkcs8(&config.agent.id, &pending_der)
        .map_err(|e| EnrollError::Setup(format!("{}: {e}", pending_path.display())))?;
    let new_public_key = next.public_key_hex();
    let request = RotateKeyRequest {
        v: PROTOCOL_VERSION,
        old_key_signature: current.sign_rotation(&new_public_key),
        new_key_signature: next.sign_rotation(&new_public_key),
        new_public_key: new_public_key.clone(),
    };
    let url = hub_url(config, options)?;
    let token = config.bearer_token()?;
    let ca = options.ca_cert.as_ref().or(config.hub.ca_cert.as_ref());
    let reply: serde_json::Value = post(&url, ROTATE_KEY_PATH, Some(&token), ca, &request).await?;
    std::fs::rename(&pending_path, &key_path)
        .map_err(|source| EnrollError::Write { path: key_path.clone(), source })?;
    // The client certificate names the key, so it is replaced with it.
    if let (Some(path), Some(pem)) = (issued_cert_path(config), reply["client_cert"].as_str()) {
        write_private(path, pem.as_bytes())?;
    }
    Ok(new_public_key)
}

/// Where the certificate the hub issues goes: `hub.client_cert` — unless `hub.client_key` is set
/// (MQTT with the broker's own PKI: that certificate is the broker's and never replaced).
fn issued_cert_path(config: &AgentConfig) -> Option<&PathBuf> {
    match config.hub.client_key {
        Some(_) => None,
        None => config.hub.client_cert.as_ref(),
    }
}

/// The hub's HTTPS base URL: `--hub`, else `hub.url` when the transport is HTTPS.
fn hub_url(config: &AgentConfig, options: &EnrollOptions) -> Result<String, EnrollError> {
    let url = match (&options.hub_url, config.hub.transport) {
        (Some(url), _) => url.clone(),
        (None, crate::config::TransportKind::Https) => config.hub.url.clone(),
        (None, crate::config::TransportKind::Mqtt) => {
            return Err(EnrollError::Setup("transport is MQTT: give the hub's HTTPS address with --hub".into()));
        }
    };
    let plain_allowed = config.hub.insecure_dev && url.starts_with("http://");
    if !(url.starts_with("https://") || plain_allowed) {
        return Err(EnrollError::Setup(format!("--hub {url:?} must be an https:// URL")));
    }
    Ok(url)
}

async fn get<T: serde::de::DeserializeOwned>(
    url: &str,
    path: &str,
    bearer: &str,
    ca: Option<&PathBuf>,
) -> Result<T, EnrollError> {
    request(url, path, Some(bearer), ca, None::<&()>).await
}

async fn post<T: serde::de::DeserializeOwned>(
    url: &str,
    path: &str,
    bearer: Option<&str>,
    ca: Option<&PathBuf>,
    body: &impl serde::Serialize,
) -> Result<T, EnrollError> {
    request(url, path, bearer, ca, Some(body)).await
}

async fn request<T: serde::de::DeserializeOwned>(
    url: &str,
    path: &str,
    bearer: Option<&str>,
    ca: Option<&PathBuf>,
    request: Option<&impl serde::Serialize>,
) -> Result<T, EnrollError> {
    crate::forward::https::install_crypto_provider();
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| EnrollError::Setup(format!("CA {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| EnrollError::Setup(format!("CA {}: not a PEM certificate: {e}", ca.display())))?;
        builder = builder.tls_certs_only(certs);
    }
    let client = builder.build().map_err(|e| EnrollError::Setup(e.to_string()))?;
    let endpoint = format!("{}{path}", url.trim_end_matches('/'));
    let network = |e: reqwest::Error| {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        EnrollError::Network { url: url.to_string(), message }
    };
    let mut req = match request {
        Some(request) => {
            let body = serde_json::to_vec(request).map_err(|e| EnrollError::Setup(e.to_string()))?;
            client.post(&endpoint).header(reqwest::header::CONTENT_TYPE, "application/json").body(body)
        }
        None => client.get(&endpoint),
    };
    if let Some(token) = bearer {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| EnrollError::Setup("the access token has characters not allowed in a header".into()))?;
        value.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    let resp = req.send().await.map_err(network)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(network)?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&body)
            .map_err(|e| EnrollError::Refused { status, message: format!("not a Kho hub answer: {e}") });
    }
    let message = match serde_json::from_slice::<ErrorReply>(&body) {
        Ok(reply) => reply.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    };
    Err(EnrollError::Refused { status, message })
}

/// Writes `bytes` to `path` with mode 0600, atomically (temporary file, fsync, rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EnrollError> {
    write_private_file(path, bytes).map_err(|source| EnrollError::Write { path: path.to_path_buf(), source })
}

/// Writes `bytes` to `path` with mode 0600, atomically (temporary file, fsync, rename).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes).and_then(|()| file.sync_all())?;
    std::fs::rename(&tmp, path)
}

fn pkcs8_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

/// The PKCS#8 DER inside a `PRIVATE KEY` PEM file.
pub fn pem_to_pkcs8(pem: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_string())?;
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = text.find(&begin).ok_or_else(|| format!("no {begin} line"))? + begin.len();
    let stop = text[start..].find(&end).ok_or_else(|| format!("no {end} line"))? + start;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_files_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/agent.key");
        write_private(&path, pkcs8_to_pem(pkcs8.as_ref()).as_bytes()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let der = pem_to_pkcs8(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(der, pkcs8.as_ref());
        let signer = kho_shared::signing::Signer::from_pkcs8("a", &der).unwrap();
        let digest = "00".repeat(32);
        let sig = signer.sign(&digest).unwrap();
        let pk = hex::decode(signer.public_key_hex()).unwrap();
        assert!(kho_shared::signing::verify(&pk, "a", &digest, Some(&sig)).is_ok());
        assert!(pem_to_pkcs8(b"garbage").is_err());
    }
}
