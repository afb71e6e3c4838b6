//! TLS for the agent-facing listener: a real certificate from the operator, or a local CA and
//! server certificate generated once with rcgen.
//!
//! Self-signed layout under `<data_dir>/tls/`:
//!
//! | file            | content                                                   | mode |
//! |-----------------|-----------------------------------------------------------|------|
//! | `ca.pem`        | the local CA certificate; agents pin it (`ca_file`)        | 0644 |
//! | `ca-key.pem`    | the CA's private key, kept to re-issue the server cert     | 0600 |
//! | `hub-cert.pem`  | the server certificate, signed by the CA                  | 0644 |
//! | `hub-key.pem`   | the server's private key                                  | 0600 |
//! | `hub-names.txt` | the subject alternative names `hub-cert.pem` was made for | 0644 |
//!
//! Files are reused on every start so agents keep trusting the same CA. When the configured names
//! change, only the server certificate is re-issued (same CA, so no agent needs a new pin). Every
//! file is written to a temporary name and renamed, so a crash leaves either the old or the new
//! file, never half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Names every self-signed certificate covers, so local agents and curl work out of the box.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Subject CN of the generated CA; also how the issuer is rebuilt from the saved key.
const CA_COMMON_NAME: &str = "Kho hub local CA";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("TLS file {path}: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the self-signed material lives.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes ring the process-wide rustls provider (reqwest and the agent in the demo rely on a
/// default). Safe to call more than once; a provider installed earlier by the embedder wins.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Creates or reuses the local CA and the server certificate for `extra_names`.
pub fn ensure_self_signed(tls_dir: &Path, extra_names: &[String]) -> Result<SelfSigned, TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    fs::create_dir_all(tls_dir).map_err(io(tls_dir))?;
    let paths =
        SelfSigned { ca: tls_dir.join("ca.pem"), cert: tls_dir.join("hub-cert.pem"), key: tls_dir.join("hub-key.pem") };
    let ca_key_path = tls_dir.join("ca-key.pem");
    let names_path = tls_dir.join("hub-names.txt");

    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let names_text = names.join("\n") + "\n";

    let ca_key = if paths.ca.is_file() && ca_key_path.is_file() {
        let pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
        KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem { path: ca_key_path.clone(), problem: e.to_string() })?
    } else {
        let key = KeyPair::generate()?;
        let ca_cert = ca_params().self_signed(&key)?;
        write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&paths.ca, ca_cert.pem().as_bytes(), 0o644)?;
        // A new CA invalidates any server certificate signed by an old one.
        let _stale = fs::remove_file(&names_path);
        tracing::info!(ca = %paths.ca.display(), "generated a local CA; agents must pin this file");
        key
    };

    let current = fs::read_to_string(&names_path).unwrap_or_default();
    if current != names_text || !paths.cert.is_file() || !paths.key.is_file() {
        let issuer = Issuer::new(ca_params(), &ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.clone())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kho-hub");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &issuer)?;
        write_atomic(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&paths.cert, cert.pem().as_bytes(), 0o644)?;
        write_atomic(&names_path, names_text.as_bytes(), 0o644)?;
        tracing::info!(cert = %paths.cert.display(), names = ?names, "issued the hub's server certificate");
    }
    Ok(paths)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// A rustls server config (ring provider, HTTP/2 and HTTP/1.1 via ALPN) from PEM files, with no
/// client certificates.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_clients(cert_path, key_path, None)
}

/// Like [`server_config`]; with `client_ca`, clients *may* present a certificate, and one that
/// does not chain to that CA fails the handshake (see [`crate::agent_ca`]).
pub fn server_config_with_clients(
    cert_path: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem { path, problem: e.to_string() }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(pem_err(cert_path))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(cert_path))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: cert_path.to_path_buf(), problem: "no certificate in file".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem_err(key_path))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let mut config = match client_ca {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(pem_err(ca))? {
                roots.add(cert.map_err(pem_err(ca))?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Pem { path: ca.to_path_buf(), problem: e.to_string() })?;
            builder.with_client_cert_verifier(verifier).with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `bytes` to `path` through a temporary file and a rename, with `mode` from the start
/// (a private key is never readable by others, not even briefly).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let io = |source| TlsError::Io { path: path.to_path_buf(), source };
    let _stale = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_reused_and_reissued_only_when_names_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_self_signed(dir.path(), &[]).expect("generate");
        let ca1 = fs::read(&first.ca).expect("ca");
        let cert1 = fs::read(&first.cert).expect("cert");
        ensure_self_signed(dir.path(), &[]).expect("reuse");
        assert_eq!(fs::read(&first.cert).expect("cert"), cert1, "unchanged names reuse the cert");
        ensure_self_signed(dir.path(), &["hub.example.vn".to_string()]).expect("reissue");
        assert_ne!(fs::read(&first.cert).expect("cert"), cert1, "new name re-issues the cert");
        assert_eq!(fs::read(&first.ca).expect("ca"), ca1, "the CA stays");
        let mode = fs::metadata(&first.key).expect("key").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        server_config(&first.cert, &first.key).expect("usable");
    }
}
