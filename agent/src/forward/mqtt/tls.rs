//! TLS for MQTT connections: a rustls client configuration (ring provider) that trusts exactly the
//! configured CA and, when configured, presents a client certificate.
//!
//! Server verification is always on: there is no option to skip it. The hub's MQTT client uses
//! the same builder, so both ends of the broker are set up alike.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Reads every certificate of a PEM file; `field` names the config field in errors.
fn read_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{field} {}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{field} {}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{field} {}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// Builds the client configuration. `ca` is required (MQTT brokers are the deployment's own, with
/// their own CA); `client` is `(cert, key)` PEM paths. Errors name the field and file.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    fields: (&str, &str, &str),
) -> Result<Arc<ClientConfig>, String> {
    let (ca_field, cert_field, key_field) = fields;
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca, ca_field)? {
        roots.add(cert).map_err(|e| format!("{ca_field} {}: unusable CA certificate: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let chain = read_certs(cert, cert_field)?;
            let pem = std::fs::read(key).map_err(|e| format!("{key_field} {}: {e}", key.display()))?;
            let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| format!("{key_field} {}: not a PEM private key: {e}", key.display()))?
                .ok_or_else(|| format!("{key_field} {}: no private key in the file", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("{cert_field}/{key_field}: certificate and key do not fit together: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
