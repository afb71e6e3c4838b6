//! A PostgreSQL table, view or query as a source.
//!
//! The synchronous `postgres` client is used because the [`Source`] trait is blocking and capture
//! already runs on a blocking thread; it drives `tokio-postgres` on a private current-thread
//! runtime, so nothing here touches the agent's async runtime.
//!
//! - **Read-only, consistent:** every scan runs in one `REPEATABLE READ READ ONLY` transaction,
//!   so a snapshot pass sees one instant of the table even while the department keeps writing.
//! - **Streamed:** the scan is bound to a portal (a server-side cursor) and fetched
//!   [`FETCH_ROWS`] rows at a time; memory does not depend on the table size.
//! - **Exact types:** values arrive in binary format and are decoded by [`decode`]; a cursor value
//!   is bound back as text and cast in SQL to the column's own type, so a `timestamp(6)` or
//!   `numeric` cursor compares exactly.
//! - TLS with `sslmode = "require"` uses rustls (ring) and verifies the server's certificate.

pub mod cdc;
pub mod decode;

use std::ops::ControlFlow;
use std::time::Duration;

use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, IsolationLevel, NoTls};
use kho_shared::protocol::{Column, DatasetSchema};

use self::decode::{PgKind, Raw};
use super::remote::{RemoteError, RemoteSourceConfig, SslMode};
use super::row::RowBuf;
use super::{ScanRange, Source, SourceError, cursor_text, quote_ident, table_parts};

/// Rows fetched from the portal per round trip: enough to hide latency, few enough that even
/// rows of a few kilobytes keep a page well under 10 MB.
pub const FETCH_ROWS: i32 = 1_000;
/// How long connecting may take before the poll fails and is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A dataset read from PostgreSQL.
pub struct PgSource {
    dataset: String,
    /// `host:port/database`, for messages (never the password).
    server: String,
    /// What follows FROM: a quoted (schema-qualified) table or a parenthesised query.
    from: String,
    client: Client,
    /// Discovered columns: name and type.
    columns: Vec<(String, Type)>,
    /// An exported snapshot (a new replication slot's) that scans read at.
    snapshot: Option<String>,
}

/// Connects to the server named by `remote`; returns the client and `host:port/database`.
pub(crate) fn connect(dataset: &str, remote: &RemoteSourceConfig) -> Result<(Client, String), SourceError> {
    let mut config: ::postgres::Config = remote.url.parse().map_err(|e| SourceError::Connect {
        dataset: dataset.to_string(),
        server: "PostgreSQL (bad url)".into(),
        source: RemoteError::Postgres(e),
    })?;
    let server = server_name(&config);
    let connect_err = |source| SourceError::Connect { dataset: dataset.to_string(), server: server.clone(), source };
    if let Some(pw) =
        remote.password().map_err(|problem| SourceError::Credential { dataset: dataset.to_string(), problem })?
    {
        config.password(pw);
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("kho-agent");
    let client = match remote.sslmode {
        SslMode::Disable => config.ssl_mode(::postgres::config::SslMode::Disable).connect(NoTls),
        SslMode::Require => {
            let tls = tls_connector(remote).map_err(connect_err)?;
            config.ssl_mode(::postgres::config::SslMode::Require).connect(tls)
        }
    }
    .map_err(|e| connect_err(RemoteError::Postgres(e)))?;
    Ok((client, server))
}

impl PgSource {
    /// Connects to the server named by `remote`.
    pub fn open(
        dataset: &str,
        remote: &RemoteSourceConfig,
        table: Option<&str>,
        query: Option<&str>,
    ) -> Result<PgSource, SourceError> {
        let (client, server) = connect(dataset, remote)?;
        let from = match (table, query) {
            (Some(t), _) => table_parts(t).into_iter().map(quote_ident).collect::<Vec<_>>().join("."),
            (None, Some(q)) => format!("({})", q.trim().trim_end_matches(';')),
            (None, None) => String::new(),
        };
        Ok(PgSource { dataset: dataset.to_string(), server, from, client, columns: Vec::new(), snapshot: None })
    }

    /// Makes every later scan read at the exported snapshot `name` (the consistent point of a
    /// new replication slot), which its exporting session must still hold open.
    pub fn use_snapshot(&mut self, name: &str) {
        self.snapshot = Some(name.to_string());
    }

    fn query_err(&self, e: impl Into<RemoteError>) -> SourceError {
        SourceError::Query { dataset: self.dataset.clone(), server: self.server.clone(), source: e.into() }
    }

    fn discover_columns(&mut self) -> Result<(), SourceError> {
        let stmt = self.client.prepare(&format!("SELECT * FROM {} AS q", self.from)).map_err(|e| self.query_err(e))?;
        self.columns = stmt.columns().iter().map(|c| (c.name().to_string(), c.type_().clone())).collect();
        Ok(())
    }

    /// The discovered type of `column`.
    fn type_of(&self, column: &str) -> Result<&Type, SourceError> {
        self.columns.iter().find(|(n, _)| n == column).map(|(_, t)| t).ok_or_else(|| SourceError::MissingColumn {
            dataset: self.dataset.clone(),
            role: "scanned",
            column: column.to_string(),
            available: self.columns.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// `host:port/database` of a connection config.
fn server_name(c: &::postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(::postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("postgres {host}:{port}/{}", c.get_dbname().unwrap_or(""))
}

fn tls_connector(remote: &RemoteSourceConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, RemoteError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    crate::forward::https::install_crypto_provider();
    let config = match &remote.ssl_root_cert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| RemoteError::Tls(format!("ssl_root_cert {}: {e}", path.display())))?
            {
                let cert = cert.map_err(|e| RemoteError::Tls(format!("ssl_root_cert {}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| RemoteError::Tls(format!("ssl_root_cert {}: {e}", path.display())))?;
            }
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier().map_err(|e| RemoteError::Tls(e.to_string()))?
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Source for PgSource {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        self.discover_columns()?;
        let columns: Vec<Column> =
            self.columns.iter().map(|(name, t)| Column { name: name.clone(), ty: PgKind::of(t).portable() }).collect();
        super::check_schema(&self.dataset, columns, key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn super::RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        if self.columns.is_empty() {
            self.discover_columns()?;
        }
        let mut kinds = Vec::with_capacity(schema.columns.len());
        let mut select = Vec::with_capacity(schema.columns.len());
        for c in &schema.columns {
            let kind = PgKind::of(self.type_of(&c.name)?);
            let q = quote_ident(&c.name);
            select.push(if kind == PgKind::AsText { format!("q.{q}::text AS {q}") } else { format!("q.{q}") });
            kinds.push(kind);
        }
        let mut sql = format!("SELECT {} FROM {} AS q", select.join(", "), self.from);
        let mut param: Option<String> = None;
        match range {
            ScanRange::KeyOrder => {
                let key: Vec<String> = schema.key.iter().map(|k| format!("q.{}", quote_ident(k))).collect();
                sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
            }
            ScanRange::CursorFrom { column, from } => {
                let c = format!("q.{}", quote_ident(column));
                sql.push_str(&format!(" WHERE {c} IS NOT NULL"));
                if let Some(v) = from {
                    let t = self.type_of(column)?;
                    let ty = format!("{}.{}", quote_ident(t.schema()), quote_ident(t.name()));
                    sql.push_str(&format!(" AND {c} >= CAST($1::text AS {ty})"));
                    param = Some(cursor_text(v));
                }
                sql.push_str(&format!(" ORDER BY {c}"));
            }
        }
        let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        let (dataset, server) = (self.dataset.clone(), self.server.clone());
        let err = |e: RemoteError| SourceError::Query { dataset: dataset.clone(), server: server.clone(), source: e };
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| err(e.into()))?;
        if let Some(name) = &self.snapshot {
            // Snapshot names are hex digits and dashes (checked where they are received).
            tx.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{name}'")).map_err(|e| err(e.into()))?;
        }
        let params: Vec<&(dyn ToSql + Sync)> = param.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let portal = tx.bind(sql.as_str(), &params).map_err(|e| err(e.into()))?;
        let mut buf = RowBuf::default();
        'pages: loop {
            let rows = tx.query_portal(&portal, FETCH_ROWS).map_err(|e| err(e.into()))?;
            for row in &rows {
                buf.clear();
                for (i, kind) in kinds.iter().enumerate() {
                    let raw: Raw<'_> = row.try_get(i).map_err(|e| err(e.into()))?;
                    decode::decode(*kind, raw.0, &mut buf)
                        .map_err(|problem| err(RemoteError::Decode { column: names[i].to_string(), problem }))?;
                }
                if visit(&buf).is_break() {
                    break 'pages;
                }
            }
            if rows.len() < FETCH_ROWS as usize {
                break;
            }
        }
        drop(portal);
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    fn count_null(&mut self, column: &str) -> Result<u64, SourceError> {
        let sql = format!("SELECT count(*) FROM {} AS q WHERE q.{} IS NULL", self.from, quote_ident(column));
        let row = self.client.query_one(sql.as_str(), &[]).map_err(|e| self.query_err(e))?;
        let n: i64 = row.try_get(0).map_err(|e| self.query_err(e))?;
        Ok(n.max(0) as u64)
    }
}
