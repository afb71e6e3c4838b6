//! Change data capture from PostgreSQL logical replication (`mode = "cdc"`).
//!
//! One poll of a CDC dataset runs until shutdown (or an error), streaming:
//!
//! 1. **Setup.** An SQL session makes sure the publication covers the table. The outbox's
//!    `cdc_state` says where the dataset stands.
//! 2. **Initial snapshot** (no stored position). A leftover slot (from an interrupted snapshot) is
//!    dropped; the replication session creates the slot with `EXPORT_SNAPSHOT`, and the table is
//!    read with the ordinary snapshot pass inside `SET TRANSACTION SNAPSHOT` — exactly the rows
//!    as of the slot's consistent point. The pass's last chunk stores that point as the position,
//!    so a crash during the snapshot simply starts it again (unchanged rows are skipped by hash).
//! 3. **Resume** (stored position). The slot must exist and not be past the stored position;
//!    otherwise the dataset stops with [`CdcError::SlotGone`] / [`CdcError::PositionUnavailable`],
//!    which name the recovery command. Never a silent re-read.
//! 4. **Stream.** Transactions arrive in commit order. Their row messages are written to capture
//!    chunks; a chunk commits with the end LSN of the last complete transaction in it (or, for a
//!    transaction larger than a chunk, its commit LSN and how many of its rows are stored). Only
//!    after that commit is the position confirmed to the server. On replay, transactions whose
//!    commit LSN is below the stored position are skipped, and the partly stored one resumes after
//!    its stored rows: no duplicate effect.
//! 5. **Idle.** A keepalive with nothing pending stores and confirms the server's position, so the
//!    slot advances (and WAL is recycled) on a database whose other tables are busy.

mod apply;
pub mod ops;

use std::time::{Duration, Instant};

use self::apply::Table;
use super::{Capture, DetectError, PollReport};
use crate::config::SourceConfig;
use crate::outbox::now_ms;
use crate::source::Source;
use crate::source::decoded::Decoded;
use crate::source::postgres::PgSource;
use crate::source::postgres::cdc::admin::Admin;
use crate::source::postgres::cdc::pgoutput::{self, Message};
use crate::source::postgres::cdc::session::{Event, PG_EPOCH_UNIX_MICROS, Session};
use crate::source::postgres::cdc::{CdcError, recovery_command};
use crate::source::remote::RemoteSourceConfig;
use crate::source::text::Origin;

/// How long an open chunk waits for more events before it commits.
const IDLE_FLUSH: Duration = Duration::from_millis(10);
/// Oldest an open chunk may get before it commits even while events keep coming.
const MAX_CHUNK_AGE: Duration = Duration::from_millis(200);
/// How long the loop waits for an event when nothing is pending (cancellation is checked between).
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// With `sync --once`: how long a quiet stream means "caught up".
const QUIET_DONE: Duration = Duration::from_secs(2);
/// How often lag and "caught up" are recorded.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// The transaction being received.
struct Tx {
    commit_lsn: u64,
    commit_time_micros: i64,
    /// Already stored entirely (commit LSN below the stored position).
    skip: bool,
    /// Row messages of this transaction already stored by an earlier run.
    skip_first: u64,
    /// Row messages seen so far.
    seen: u64,
}

struct Stream<'a> {
    cap: &'a mut Capture,
    session: Session,
    admin: Admin,
    dataset: String,
    slot: String,
    /// End LSN of the last transaction whose changes are all committed to the outbox.
    stored: u64,
    /// A transaction stored in part: (commit LSN, rows stored).
    partial: Option<(u64, u64)>,
    /// Position the open chunk will store when it commits between transactions.
    pending_lsn: Option<u64>,
    /// Commit time of the oldest transaction with changes in the open chunk (for the lag).
    pending_since_micros: Option<i64>,
    /// `(schema, table)` of the dataset's table: Relation messages of other tables (a shared
    /// publication) are ignored, and so are their rows.
    target: (String, String),
    table: Option<Table>,
    tx: Option<Tx>,
    chunk_opened: Instant,
    last_report: Instant,
    /// `sync --once`: the server's WAL position when streaming began; the poll returns once the
    /// stored position reaches it or the stream has been quiet for [`QUIET_DONE`].
    until: Option<u64>,
    last_event: Instant,
    report: PollReport,
}

/// Runs a CDC dataset until shutdown: initial snapshot if needed, then streaming.
pub fn run(cap: &mut Capture) -> Result<PollReport, DetectError> {
    let dataset = cap.config.name.clone();
    let SourceConfig::Postgres(remote) = &cap.config.source else {
        return Err(CdcError::Setup {
            dataset,
            server: String::new(),
            problem: "mode = \"cdc\" needs a PostgreSQL source".into(),
        }
        .into());
    };
    let remote = remote.clone();
    let table = cap.config.table.clone().unwrap_or_default();
    let slot = cap.config.cdc.slot_name("kho", &dataset);
    let publication = cap.config.cdc.publication_name("kho", &dataset);
    let mut admin = Admin::connect(&dataset, &remote)?;
    admin.ensure_publication(&publication, &table, cap.config.cdc.create_publication)?;
    let target = admin.resolve_table(&table)?.ok_or_else(|| CdcError::Setup {
        dataset: dataset.clone(),
        server: admin.server().to_string(),
        problem: format!("table {table} does not exist"),
    })?;
    let pos = cap.outbox.cdc_position(&dataset).map_err(|e| cap.outbox_err(e))?;
    let mut report = PollReport::default();
    let (session, stored) = match pos.lsn {
        None => {
            let Some((session, point, r)) = initial_snapshot(cap, &mut admin, &remote, &table, &slot, &publication)?
            else {
                return Ok(PollReport { interrupted: true, ..PollReport::default() });
            };
            report = r;
            (session, point)
        }
        Some(lsn) => (resume(cap, &mut admin, &remote, &slot, &publication, lsn)?, lsn),
    };
    let until = if cap.until_caught_up { Some(admin.current_lsn()?) } else { None };
    let mut s = Stream {
        cap,
        session,
        admin,
        dataset,
        slot,
        stored,
        partial: pos.partial.filter(|_| pos.lsn == Some(stored)),
        pending_lsn: None,
        pending_since_micros: None,
        target,
        table: None,
        tx: None,
        chunk_opened: Instant::now(),
        last_report: Instant::now().checked_sub(REPORT_EVERY).unwrap_or_else(Instant::now),
        until,
        last_event: Instant::now(),
        report,
    };
    tracing::info!(dataset = %s.dataset, slot = %s.slot, position = %crate::outbox::cdc::lsn_text(stored), "streaming changes");
    let result = s.run();
    let Stream { session, report, .. } = s;
    session.close();
    result.map(|()| report)
}

/// Creates the slot and captures the table as of its consistent point. `None`: shutdown came
/// first (the slot is dropped and recreated next time).
fn initial_snapshot(
    cap: &mut Capture,
    admin: &mut Admin,
    remote: &RemoteSourceConfig,
    table: &str,
    slot: &str,
    publication: &str,
) -> Result<Option<(Session, u64, PollReport)>, DetectError> {
    let dataset = cap.config.name.clone();
    if admin.slot(slot)?.is_some() {
        tracing::warn!(dataset = %dataset, slot, "dropping replication slot left by an unfinished initial snapshot");
        admin.drop_slot(slot)?;
    }
    let mut session = Session::connect(&dataset, remote, slot, publication, 0)?;
    let (point, snapshot) = session.create_slot(slot)?;
    tracing::info!(dataset = %dataset, slot, consistent_point = %crate::outbox::cdc::lsn_text(point),
        "replication slot created; reading the initial snapshot");
    let mut pg = PgSource::open(&dataset, remote, Some(table), None)?;
    pg.use_snapshot(&snapshot);
    let mut source: Box<dyn Source> = if cap.config.text.is_identity() {
        Box::new(pg)
    } else {
        Box::new(Decoded::new(Box::new(pg), cap.config.text.clone(), Origin::Unicode))
    };
    let schema = source.discover(&cap.config.key, None)?;
    let schema_changed = cap.outbox.record_schema(&schema).map_err(|e| cap.outbox_err(e))?;
    cap.cdc_start = Some((slot.to_string(), point));
    let result = super::snapshot::pass(cap, source.as_mut(), &schema);
    cap.cdc_start = None;
    let mut report = result?;
    report.schema_changed = schema_changed;
    drop(source);
    if report.interrupted {
        session.close();
        return Ok(None);
    }
    tracing::info!(dataset = %dataset, rows = report.rows_read, changes = report.changes, "initial snapshot captured");
    session.start()?;
    session.confirm(point);
    Ok(Some((session, point, report)))
}

/// Checks the slot can resume from `lsn` and starts streaming from there.
fn resume(
    cap: &mut Capture,
    admin: &mut Admin,
    remote: &RemoteSourceConfig,
    slot: &str,
    publication: &str,
    lsn: u64,
) -> Result<Session, DetectError> {
    let dataset = cap.config.name.clone();
    let text = crate::outbox::cdc::lsn_text(lsn);
    let server = admin.server().to_string();
    let unavailable = |reason: String| CdcError::PositionUnavailable {
        dataset: dataset.clone(),
        slot: slot.to_string(),
        server: server.clone(),
        lsn: text.clone(),
        reason,
    };
    let gone = || CdcError::SlotGone {
        dataset: dataset.clone(),
        slot: slot.to_string(),
        server: server.clone(),
        lsn: text.clone(),
    };
    match admin.slot(slot)? {
        None => return Err(gone().into()),
        Some(info) if info.wal_status.as_deref() == Some("lost") => {
            return Err(unavailable(
                "the server already removed WAL the slot needed (wal_status = lost; see max_slot_wal_keep_size)".into(),
            )
            .into());
        }
        Some(info) if info.confirmed_flush.is_some_and(|c| c > lsn) => {
            return Err(unavailable(format!(
                "the slot was advanced to {} by something other than this agent's outbox",
                crate::outbox::cdc::lsn_text(info.confirmed_flush.unwrap_or_default())
            ))
            .into());
        }
        Some(info) if info.plugin.as_deref() != Some("pgoutput") => {
            return Err(unavailable(format!("the slot uses plugin {:?}, not pgoutput", info.plugin)).into());
        }
        Some(_) => {}
    }
    let mut session = Session::connect(&dataset, remote, slot, publication, lsn)?;
    match session.start() {
        Ok(()) => Ok(session),
        Err(CdcError::Stream { problem, .. }) if problem.contains("does not exist") => Err(gone().into()),
        Err(CdcError::Stream { dataset, server, problem, .. }) if problem.contains("is active for PID") => {
            // A previous session (a killed agent's) still holds the slot until the server notices.
            Err(CdcError::Stream { dataset, server, problem, transient: true }.into())
        }
        Err(e) => Err(e.into()),
    }
}

impl Stream<'_> {
    fn run(&mut self) -> Result<(), DetectError> {
        loop {
            if self.cap.cancelled() && self.tx.is_none() {
                self.flush()?;
                self.report.interrupted = true;
                return Ok(());
            }
            if let Some(target) = self.until
                && self.tx.is_none()
                && (self.stored >= target || self.last_event.elapsed() >= QUIET_DONE)
            {
                self.flush()?;
                return Ok(());
            }
            let wait = if self.cap.outbox.in_chunk() { IDLE_FLUSH } else { IDLE_WAIT };
            let event = self.session.recv(wait)?;
            if event.is_some() {
                self.last_event = Instant::now();
            }
            match event {
                None => {
                    if self.tx.is_none() {
                        self.flush()?;
                    }
                }
                Some(Event::Begin { final_lsn, commit_time_micros }) => {
                    let skip_first = match self.partial {
                        Some((commit, n)) if commit == final_lsn => n,
                        _ => 0,
                    };
                    self.tx = Some(Tx {
                        commit_lsn: final_lsn,
                        commit_time_micros,
                        skip: final_lsn < self.stored,
                        skip_first,
                        seen: 0,
                    });
                }
                Some(Event::Data(data)) => {
                    if !self.data(&data)? {
                        return Ok(());
                    }
                }
                Some(Event::Commit { lsn, end_lsn, .. }) => {
                    let tx = self.tx.take();
                    if tx.as_ref().is_some_and(|t| t.skip) || end_lsn <= self.stored {
                        continue;
                    }
                    if !self.cap.outbox.in_chunk() && !self.open_chunk()? {
                        return Ok(());
                    }
                    debug_assert!(tx.as_ref().is_none_or(|t| t.commit_lsn == lsn));
                    self.pending_lsn = Some(end_lsn);
                    self.partial = None;
                    if self.cap.chunk_full(0) || self.chunk_opened.elapsed() >= MAX_CHUNK_AGE {
                        self.flush()?;
                    }
                }
                Some(Event::KeepAlive { wal_end }) => {
                    if self.tx.is_none()
                        && self.partial.is_none()
                        && !self.cap.outbox.in_chunk()
                        && wal_end > self.stored
                    {
                        // Nothing pending: every transaction before wal_end has been received.
                        self.cap
                            .outbox
                            .cdc_store(&self.dataset, &self.slot, wal_end, None)
                            .map_err(|e| self.cap.outbox_err(e))?;
                        self.stored = wal_end;
                        self.session.confirm(wal_end);
                    }
                }
            }
            self.maybe_report()?;
        }
    }

    /// Opens a chunk (waiting while the outbox is full). False on shutdown.
    fn open_chunk(&mut self) -> Result<bool, DetectError> {
        if !self.cap.begin_chunk()? {
            self.report.interrupted = true;
            return Ok(false);
        }
        self.chunk_opened = Instant::now();
        Ok(true)
    }

    /// Handles one pgoutput message. False on shutdown.
    fn data(&mut self, data: &[u8]) -> Result<bool, DetectError> {
        let msg = pgoutput::parse(data)
            .map_err(|e| CdcError::Decode { dataset: self.dataset.clone(), problem: e.to_string() })?;
        let row = match msg {
            Message::Relation(rel) => {
                if (rel.namespace.as_str(), rel.name.as_str()) != (self.target.0.as_str(), self.target.1.as_str()) {
                    return Ok(true);
                }
                let table = Table::new(&self.dataset, &self.cap.config.key, &self.cap.config.text, rel)?;
                if self.cap.outbox.record_schema(&table.schema).map_err(|e| self.cap.outbox_err(e))? {
                    tracing::info!(dataset = %self.dataset, columns = table.schema.columns.len(), "source schema changed in the stream");
                    self.report.schema_changed = true;
                }
                self.table = Some(table);
                return Ok(true);
            }
            Message::Truncate { relations } => {
                if !self.table.as_ref().is_some_and(|t| relations.contains(&t.relation.oid)) {
                    return Ok(true);
                }
                return Err(CdcError::Decode {
                    dataset: self.dataset.clone(),
                    problem: format!(
                        "the table was TRUNCATEd (transaction committing at {}); a truncate cannot be replayed row by \
                         row, so capture is STOPPED. Recover with `{}`",
                        crate::outbox::cdc::lsn_text(self.tx.as_ref().map_or(0, |t| t.commit_lsn)),
                        recovery_command(&self.dataset)
                    ),
                }
                .into());
            }
            Message::Other(_) => return Ok(true),
            row => row,
        };
        let Some(tx) = self.tx.as_mut() else {
            return Err(CdcError::Decode {
                dataset: self.dataset.clone(),
                problem: "row change outside a transaction".into(),
            }
            .into());
        };
        if tx.skip {
            return Ok(true);
        }
        tx.seen += 1;
        let relation = match &row {
            Message::Insert { relation, .. } | Message::Update { relation, .. } | Message::Delete { relation, .. } => {
                *relation
            }
            _ => 0,
        };
        if tx.seen <= tx.skip_first || self.table.as_ref().is_none_or(|t| t.relation.oid != relation) {
            return Ok(true);
        }
        let commit_time = tx.commit_time_micros;
        if !self.cap.outbox.in_chunk() && !self.open_chunk()? {
            return Ok(false);
        }
        self.pending_since_micros.get_or_insert(commit_time);
        let Some(table) = self.table.as_mut() else {
            return Err(CdcError::Decode {
                dataset: self.dataset.clone(),
                problem: "row change before its Relation message".into(),
            }
            .into());
        };
        let dataset = self.dataset.as_str();
        let (changes, deletes) = match row {
            Message::Insert { new, .. } => (table.insert(self.cap, dataset, &new)?, 0),
            Message::Update { old, new, .. } => table.update(self.cap, dataset, old.as_deref(), &new)?,
            Message::Delete { old, .. } => (table.delete_row(self.cap, dataset, &old)?, 1),
            _ => (0, 0),
        };
        self.report.rows_read += 1;
        self.report.changes += changes;
        self.report.deletes += deletes;
        if self.cap.chunk_full(0) {
            // A transaction larger than a chunk: store how far into it we are.
            let (commit, seen) = self.tx.as_ref().map_or((0, 0), |t| (t.commit_lsn, t.seen));
            self.partial = Some((commit, seen));
            self.commit(self.partial)?;
        }
        Ok(true)
    }

    /// Commits the open chunk with the position of its last complete transaction, then confirms
    /// that position to the server.
    fn flush(&mut self) -> Result<(), DetectError> {
        if !self.cap.outbox.in_chunk() {
            return Ok(());
        }
        self.commit(None)
    }

    /// Commits the open chunk with the end of its last complete transaction and `partial` (the
    /// part of the current transaction in it), then confirms that end to the server.
    fn commit(&mut self, partial: Option<(u64, u64)>) -> Result<(), DetectError> {
        let lsn = self.pending_lsn.unwrap_or(self.stored);
        self.cap.outbox.cdc_store(&self.dataset, &self.slot, lsn, partial).map_err(|e| self.cap.outbox_err(e))?;
        self.cap.commit_chunk()?;
        self.stored = lsn;
        self.pending_lsn = None;
        self.pending_since_micros = None;
        self.session.confirm(lsn);
        Ok(())
    }

    /// Every few seconds, outside a chunk: records the lag and that capture is live.
    fn maybe_report(&mut self) -> Result<(), DetectError> {
        if self.cap.outbox.in_chunk() || self.last_report.elapsed() < REPORT_EVERY {
            return Ok(());
        }
        self.last_report = Instant::now();
        let lag_bytes = match self.admin.lag_bytes(&self.slot) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(dataset = %self.dataset, error = %e, "cannot read the slot lag");
                None
            }
        };
        let now = now_ms();
        let lag_ms = match (&self.tx, self.pending_since_micros) {
            (Some(t), _) if !t.skip => commit_age_ms(t.commit_time_micros, now),
            (_, Some(since)) => commit_age_ms(since, now),
            _ => 0,
        };
        let ob = &self.cap.outbox;
        ob.cdc_record_lag(&self.dataset, lag_bytes, lag_ms, now).map_err(|e| self.cap.outbox_err(e))?;
        if self.tx.is_none() {
            ob.record_poll_ok(&self.dataset, now, 0).map_err(|e| self.cap.outbox_err(e))?;
        }
        Ok(())
    }
}

/// Milliseconds from a commit time (µs since 2000-01-01) to `now_ms`.
fn commit_age_ms(commit_micros: i64, now_ms: i64) -> u64 {
    let commit_ms = (commit_micros + PG_EPOCH_UNIX_MICROS) / 1000;
    u64::try_from(now_ms - commit_ms).unwrap_or(0)
}
