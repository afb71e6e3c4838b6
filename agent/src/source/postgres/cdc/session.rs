//! The replication session: the `pgwire-replication` client driven from capture's blocking
//! thread.
//!
//! The client is async; it runs on a private one-worker tokio runtime owned by the session, so its
//! worker keeps answering the server's keepalives even while capture is busy committing a chunk,
//! and nothing here touches the agent's own runtime. The client reports to the server only the
//! position given to [`Session::confirm`] (its "applied LSN"), and capture calls that only with
//! positions already committed to the outbox.

use std::time::Duration;

use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent};

use super::CdcError;
use super::pgoutput::SESSION_OPTIONS;
use crate::source::remote::{RemoteSourceConfig, SslMode};

/// How often the client sends a standby status update while positions advance.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How long setup steps (connect, create slot, start) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the stream delivers, reduced to what capture needs.
#[derive(Debug)]
pub enum Event {
    /// A source transaction begins; `final_lsn` is its commit record's position.
    Begin { final_lsn: u64, commit_time_micros: i64 },
    /// One pgoutput message of the open transaction (or a Relation message).
    Data(Vec<u8>),
    /// The transaction committed; `end_lsn` is the position after its commit record.
    Commit { lsn: u64, end_lsn: u64, commit_time_micros: i64 },
    /// The server's heartbeat: everything before `wal_end` has been sent.
    KeepAlive { wal_end: u64 },
}

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// One replication connection.
pub struct Session {
    rt: tokio::runtime::Runtime,
    client: ReplicationClient,
    dataset: String,
    server: String,
}

impl Session {
    /// Connects and authenticates a replication session for `slot`/`publication`, gated: nothing
    /// streams until [`Session::start`]. `start_lsn` is the stored position (0 before the initial
    /// snapshot); it is also what the client reports as confirmed until [`Session::confirm`].
    pub fn connect(
        dataset: &str,
        remote: &RemoteSourceConfig,
        slot: &str,
        publication: &str,
        start_lsn: u64,
    ) -> Result<Session, CdcError> {
        let setup = |server: &str, problem: String| CdcError::Setup {
            dataset: dataset.to_string(),
            server: server.to_string(),
            problem,
        };
        let pg: ::postgres::Config = remote.url.parse().map_err(|e| setup("PostgreSQL", format!("bad url: {e}")))?;
        let host = match pg.get_hosts().first() {
            Some(::postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(::postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let database = pg.get_dbname().unwrap_or("postgres").to_string();
        let server = format!("postgres {host}:{port}/{database}");
        if remote.sslmode == SslMode::Require {
            return Err(setup(
                &server,
                "TLS is not yet supported on the replication connection of mode = \"cdc\"".into(),
            ));
        }
        let user = pg.get_user().unwrap_or("postgres").to_string();
        let password = remote.password().map_err(|p| setup(&server, p))?.unwrap_or_default();
        let config = ReplicationConfig::new(host, user, password, database, slot, publication)
            .with_port(port)
            .with_start_lsn(Lsn::from_u64(start_lsn))
            .with_ack_lsn(Lsn::from_u64(start_lsn))
            .with_status_interval(STATUS_INTERVAL)
            .with_wakeup_interval(STATUS_INTERVAL)
            .with_buffer_size(4096)
            .with_options(SESSION_OPTIONS)
            .with_application_name(format!("kho-agent {dataset}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kho-cdc")
            .enable_all()
            .build()
            .map_err(|e| setup(&server, format!("cannot start the replication runtime: {e}")))?;
        let client = rt
            .block_on(async { tokio::time::timeout(SETUP_TIMEOUT, ReplicationClient::connect_gated(config)).await })
            .map_err(|_| setup(&server, "connecting timed out".into()))?
            .map_err(|e| setup(&server, format!("cannot open a replication connection: {e}")))?;
        Ok(Session { rt, client, dataset: dataset.to_string(), server })
    }

    fn setup_err(&self, problem: String) -> CdcError {
        CdcError::Setup { dataset: self.dataset.clone(), server: self.server.clone(), problem }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Creates the logical slot `slot` (pgoutput) and exports its starting snapshot. Returns the
    /// slot's consistent point and the snapshot's name; the snapshot stays importable until the
    /// next command on this session ([`Session::start`]).
    pub fn create_slot(&mut self, slot: &str) -> Result<(u64, String), CdcError> {
        let sql = format!("CREATE_REPLICATION_SLOT \"{slot}\" LOGICAL pgoutput EXPORT_SNAPSHOT");
        let client = &mut self.client;
        let rows = self
            .rt
            .block_on(async { tokio::time::timeout(SETUP_TIMEOUT, client.simple_query(&sql)).await })
            .map_err(|_| self.setup_err("creating the replication slot timed out".into()))?
            .map_err(|e| self.setup_err(format!("cannot create replication slot {slot:?}: {e}")))?;
        let row = rows.first().ok_or_else(|| self.setup_err("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let text = |i: usize| row.get(i).and_then(|v| v.as_ref()).map(|b| String::from_utf8_lossy(b).into_owned());
        let point = text(1)
            .and_then(|p| Lsn::parse(&p).ok())
            .ok_or_else(|| self.setup_err("CREATE_REPLICATION_SLOT returned no consistent point".into()))?;
        let snapshot = text(2).ok_or_else(|| self.setup_err("CREATE_REPLICATION_SLOT exported no snapshot".into()))?;
        if snapshot.is_empty() || !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(self.setup_err(format!("unexpected snapshot name {snapshot:?}")));
        }
        Ok((point.as_u64(), snapshot))
    }

    /// Sends START_REPLICATION and waits until the server accepted it.
    pub fn start(&mut self) -> Result<(), CdcError> {
        let client = &mut self.client;
        let result = self.rt.block_on(async {
            tokio::time::timeout(SETUP_TIMEOUT, async {
                client.start().await?;
                client.wait_started().await
            })
            .await
        });
        match result {
            Err(_) => Err(self.setup_err("starting replication timed out".into())),
            Ok(Err(e)) => Err(self.stream_err(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    fn stream_err(&self, e: PgWireError) -> CdcError {
        CdcError::Stream {
            dataset: self.dataset.clone(),
            server: self.server.clone(),
            transient: e.is_transient(),
            problem: e.to_string(),
        }
    }

    /// The next event, or `None` if nothing arrived within `wait`.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Event>, CdcError> {
        loop {
            let client = &mut self.client;
            let got = self.rt.block_on(async { tokio::time::timeout(wait, client.recv()).await });
            let ev = match got {
                Err(_) => return Ok(None),
                Ok(Err(e)) => return Err(self.stream_err(e)),
                Ok(Ok(None)) => {
                    return Err(CdcError::Stream {
                        dataset: self.dataset.clone(),
                        server: self.server.clone(),
                        problem: "the server ended the replication stream".into(),
                        transient: true,
                    });
                }
                Ok(Ok(Some(ev))) => ev,
            };
            return Ok(Some(match ev {
                ReplicationEvent::Begin { final_lsn, commit_time_micros, .. } => {
                    Event::Begin { final_lsn: final_lsn.as_u64(), commit_time_micros }
                }
                ReplicationEvent::XLogData { data, .. } => Event::Data(data.to_vec()),
                ReplicationEvent::Commit { lsn, end_lsn, commit_time_micros } => {
                    Event::Commit { lsn: lsn.as_u64(), end_lsn: end_lsn.as_u64(), commit_time_micros }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => Event::KeepAlive { wal_end: wal_end.as_u64() },
                // Logical messages and stop markers carry nothing to capture.
                _ => continue,
            }));
        }
    }

    /// Reports `lsn` to the server as flushed (sent within [`STATUS_INTERVAL`]). Only positions
    /// committed to the outbox may be given here.
    pub fn confirm(&self, lsn: u64) {
        self.client.update_applied_lsn(Lsn::from_u64(lsn));
    }

    /// Ends the stream (CopyDone) and stops the runtime.
    pub fn close(mut self) {
        let client = &mut self.client;
        let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await });
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}
