//! The hub's agent CA: issues each enrolled agent a client certificate (rcgen) for its own
//! Ed25519 public key, and is the CA the HTTPS listener verifies client certificates against.
//!
//! Files under `<data_dir>/tls/` (next to the server CA of [`crate::tls`], which it does not
//! share: a leaked agent certificate must never look like a server):
//!
//! | file                 | content                          | mode |
//! |----------------------|----------------------------------|------|
//! | `agents-ca.pem`      | the agent CA certificate          | 0644 |
//! | `agents-ca-key.pem`  | its private key                   | 0600 |
//!
//! A certificate names the agent in its CN and is valid for [`CLIENT_CERT_DAYS`]. The hub signs
//! the agent's *public* key (the same key that signs batches), so no private key ever travels.
//! Client certificates are optional on the listener (config agents and enrollment have none), but a
//! certificate that does not chain to this CA is refused in the TLS handshake.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};

use crate::tls::{TlsError, write_atomic};

/// How long an agent's client certificate is valid; re-enrollment or rotation issues a new one.
pub const CLIENT_CERT_DAYS: i64 = 397;
const CA_COMMON_NAME: &str = "Kho hub agent CA";

/// An agent's raw Ed25519 public key, as rcgen wants it for the certificate's subject.
struct Ed25519Public<'a>(&'a [u8]);

impl PublicKeyData for Ed25519Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// The loaded agent CA.
pub struct AgentCa {
    issuer: Issuer<'static, KeyPair>,
    pub ca_path: PathBuf,
}

impl AgentCa {
    /// Creates or reuses the agent CA in `tls_dir`.
    pub fn ensure(tls_dir: &Path) -> Result<AgentCa, TlsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        fs::create_dir_all(tls_dir).map_err(io(tls_dir))?;
        let ca_path = tls_dir.join("agents-ca.pem");
        let key_path = tls_dir.join("agents-ca-key.pem");
        let key = if ca_path.is_file() && key_path.is_file() {
            let pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
            KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem { path: key_path.clone(), problem: e.to_string() })?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&ca_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(ca = %ca_path.display(), "generated the agent CA (client certificates)");
            key
        };
        Ok(AgentCa { issuer: Issuer::new(ca_params(), key), ca_path })
    }

    /// A client certificate (PEM) for `agent`'s Ed25519 `public_key`.
    pub fn issue(&self, agent: &str, public_key: &[u8]) -> Result<String, rcgen::Error> {
        let subject = Ed25519Public(public_key);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let until = today.checked_add(jiff::Span::new().days(CLIENT_CERT_DAYS)).unwrap_or(today);
        let ymd = |d: jiff::civil::Date| rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8);
        params.not_before = ymd(today);
        params.not_after = ymd(until);
        Ok(params.signed_by(&subject, &self.issuer)?.pem())
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}
