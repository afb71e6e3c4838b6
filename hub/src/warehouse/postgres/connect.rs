//! Opening connections to the PostgreSQL warehouse, with TLS through rustls when the URL says
//! `sslmode=require`; the server certificate is then verified against `warehouse.ssl_root_cert`
//! or the platform's roots — stricter than libpq's `require`. Any other mode (`prefer`, the
//! default, and `disable`) connects in plain text: an unverified "maybe TLS" would only give a
//! false sense of security, so a hub that needs TLS must say so.

use std::path::PathBuf;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, NoTls};

use crate::warehouse::WarehouseError;

/// How long connecting may take; the applier reports the failure and the agent retries.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of one warehouse is opened with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub ssl_root_cert: Option<PathBuf>,
    /// How long `kho.change_log` keeps a change.
    pub history_retention: Duration,
    /// Schema of datasets the catalogue does not assign to a department.
    pub unassigned_schema: String,
}

/// Opens one connection, session time zone UTC (all `_kho_*_at` values are UTC).
pub fn connect(settings: &Settings, role: &str) -> Result<Client, WarehouseError> {
    let err = |e: postgres::Error| WarehouseError::database(format!("connect ({role})"), e);
    let mut config: postgres::Config = settings.url.parse().map_err(err)?;
    config.application_name(&format!("kho-hub {role}"));
    config.connect_timeout(CONNECT_TIMEOUT);
    let unreachable =
        |e: postgres::Error| WarehouseError::Unreachable { context: format!("connect ({role})"), source: Box::new(e) };
    let mut client = match config.get_ssl_mode() {
        SslMode::Require => config.connect(tls_connector(settings)?).map_err(unreachable)?,
        _ => config.connect(NoTls).map_err(unreachable)?,
    };
    client.batch_execute("SET TIME ZONE 'UTC'; SET client_min_messages = warning").map_err(err)?;
    Ok(client)
}

fn tls_connector(settings: &Settings) -> Result<tokio_postgres_rustls::MakeRustlsConnect, WarehouseError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let tls_err = |problem: String| WarehouseError::database("TLS setup", std::io::Error::other(problem));
    let config = match &settings.ssl_root_cert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_err(format!("ssl_root_cert {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| tls_err(format!("ssl_root_cert {}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| tls_err(format!("ssl_root_cert {}: {e}", path.display())))?;
            }
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier().map_err(|e| tls_err(e.to_string()))?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
