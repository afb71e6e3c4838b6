//! Change detection: turns a source's current rows into changes in the outbox.
//!
//! One [`Capture`] per dataset owns its own outbox connection and runs one poll at a time on a
//! blocking thread. A poll opens the source, discovers its schema (recording a changed schema),
//! then runs a [`cursor`] or [`snapshot`] pass. Invariants:
//!
//! - **Capture is atomic.** Changes are written in chunks; each chunk is one outbox transaction
//!   that also holds the new cursor / boundary rows / snapshot hashes. A crash or error loses at
//!   most the open chunk, and then the source position was not advanced either.
//! - **Bounded memory.** Rows are streamed and encoded into reused buffers; a chunk is bounded by
//!   [`CHUNK_CHANGES`] changes and [`CHUNK_ROWS`] rows read.
//! - **Bounded outbox.** Before each chunk, capture waits while the outbox holds `max_changes`
//!   or more unacknowledged changes, with an ERROR log; nothing is dropped.
//! - **Shutdown never races a commit.** Cancellation is checked only between chunks.

pub mod cdc;
pub mod cursor;
pub mod encode;
pub mod files;
pub mod profile;
pub mod snapshot;

use std::time::Duration;

use kho_shared::protocol::DatasetSchema;
use tokio_util::sync::CancellationToken;

use crate::config::{DatasetConfig, Mode, SourceConfig};
use crate::outbox::{Outbox, OutboxError, now_ms};
use crate::source::{self, Source, SourceError};

/// Changes per capture transaction (both modes): big enough that commit cost (one fsync) is
/// amortised, small enough that a chunk commits in tens of milliseconds.
pub const CHUNK_CHANGES: usize = 5_000;
/// Rows read per capture transaction even when few of them changed, so the outbox write lock is
/// never held for long and cancellation is noticed promptly.
pub const CHUNK_ROWS: usize = 50_000;
/// Smallest chunk the disk-full fallback shrinks to.
pub const MIN_CHUNK_CHANGES: usize = 50;
/// Below this much free space a chunk is not started: capture waits (nothing is dropped).
pub const MIN_FREE_SPACE: u64 = 256 * 1024;
/// Below this much free space each chunk is checkpointed into the database as soon as it commits.
pub const TIGHT_SPACE: u64 = 256 * 1024 * 1024;

/// The byte budget of a chunk when the outbox can grow by `space` bytes, or `None` when capture
/// must wait. A chunk's pages are written twice before the WAL gives its space back — into the
/// WAL at commit, then into the database file at checkpoint — and the WAL is only truncated
/// afterwards, so a chunk gets a quarter of the free space. Without this bound a large chunk on
/// a small disk commits into the WAL but can never be checkpointed, and then nothing, not even
/// the forwarder's deletes, can write again. Pure.
pub fn chunk_budget(space: u64) -> Option<usize> {
    (space >= MIN_FREE_SPACE).then(|| usize::try_from(space / 4).unwrap_or(usize::MAX))
}
/// How often a capture paused on a full outbox re-checks it.
const FULL_RECHECK: Duration = Duration::from_millis(250);

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("dataset {dataset}: {source}")]
    Outbox { dataset: String, source: Box<OutboxError> },
    #[error(transparent)]
    Cdc(#[from] crate::source::postgres::cdc::CdcError),
}

impl DetectError {
    /// Whether the outbox's disk is full (the chunk was rolled back; the poll is retried).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, DetectError::Outbox { source, .. } if matches!(**source, OutboxError::DiskFull { .. }))
    }

    /// Whether the next poll may succeed without an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            DetectError::Source(e) => e.is_transient(),
            DetectError::Outbox { source, .. } => source.is_transient(),
            DetectError::Cdc(e) => e.is_transient(),
        }
    }
}

/// What a poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub rows_read: u64,
    pub changes: u64,
    pub deletes: u64,
    pub null_cursor_rows: u64,
    /// Rows skipped because a key column is NULL or the key repeats within the pass.
    pub unaddressable_rows: u64,
    /// Shutdown interrupted the pass (all committed chunks stand; the rest is read next time).
    pub interrupted: bool,
    pub schema_changed: bool,
}

/// Capture for one dataset.
pub struct Capture {
    pub(crate) config: DatasetConfig,
    pub(crate) outbox: Outbox,
    pub(crate) max_changes: u64,
    pub(crate) cancel: CancellationToken,
    pub(crate) on_commit: Box<dyn FnMut() + Send>,
    pub(crate) chunk_changes: usize,
    pub(crate) chunk_rows: usize,
    /// Byte budget of the open chunk, from the outbox's free space (see [`chunk_budget`]).
    pub(crate) chunk_bytes: usize,
    /// Halved after each disk-full failure, back to [`CHUNK_CHANGES`] (or the configured bound)
    /// after successes: a fallback when the byte estimate is off.
    chunk_changes_limit: usize,
    /// Free space was short when the chunk began: checkpoint after committing it.
    tight: bool,
    full_logged: bool,
    /// Drop-folder bookkeeping kept across polls (settle observations, hash cache).
    pub(crate) folder: files::FolderState,
    /// The file whose changes the running pass captures: marked processed in its last chunk.
    pub(crate) file_done: Option<files::PendingFile>,
    disk_logged: bool,
    /// A CDC initial snapshot's slot and consistent point: stored in the pass's last chunk.
    pub(crate) cdc_start: Option<(String, u64)>,
    /// A CDC poll returns once caught up with the server (`sync --once`) instead of streaming on.
    pub(crate) until_caught_up: bool,
}

impl Capture {
    /// A capture writing to `outbox`; `on_commit` runs after every committed chunk (it wakes the
    /// forwarder); `cancel` interrupts a pass between chunks.
    pub fn new(
        config: DatasetConfig,
        outbox: Outbox,
        max_changes: u64,
        cancel: CancellationToken,
        on_commit: Box<dyn FnMut() + Send>,
    ) -> Result<Capture, DetectError> {
        let mut c = Capture {
            config,
            outbox,
            max_changes,
            cancel,
            on_commit,
            chunk_changes: CHUNK_CHANGES,
            chunk_rows: CHUNK_ROWS,
            chunk_bytes: usize::MAX,
            chunk_changes_limit: CHUNK_CHANGES,
            tight: false,
            full_logged: false,
            folder: files::FolderState::default(),
            file_done: None,
            disk_logged: false,
            cdc_start: None,
            until_caught_up: false,
        };
        c.outbox
            .prepare_dataset(&c.config.name, c.config.mode, c.config.cursor_column.as_deref())
            .map_err(|e| c.outbox_err(e))?;
        Ok(c)
    }

    /// Makes a CDC poll return once it has caught up with the server's WAL position at its start
    /// (or the stream was quiet for a while), for `sync --once`; other modes are unaffected.
    pub fn until_caught_up(mut self) -> Capture {
        self.until_caught_up = true;
        self
    }

    /// Overrides the chunk bounds (tests use tiny chunks).
    pub fn with_chunk_limits(mut self, changes: usize, rows: usize) -> Capture {
        self.chunk_changes = changes.max(1);
        self.chunk_changes_limit = self.chunk_changes;
        self.chunk_rows = rows.max(1);
        self
    }

    pub fn dataset(&self) -> &str {
        &self.config.name
    }

    /// The outbox connection (tests inspect it).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(crate) fn outbox_err(&self, source: OutboxError) -> DetectError {
        DetectError::Outbox { dataset: self.config.name.clone(), source: Box::new(source) }
    }

    /// Runs one poll. Records success (with `captured_through_seq`) or the error in the outbox's
    /// dataset state; errors are also returned for logging.
    pub fn poll(&mut self) -> Result<PollReport, DetectError> {
        let result = self.poll_inner();
        self.outbox.rollback_chunk();
        match &result {
            Err(e) if e.is_disk_full() => {
                self.chunk_changes = (self.chunk_changes / 2).max(MIN_CHUNK_CHANGES.min(self.chunk_changes_limit));
                // Whatever the WAL holds that the database file can take, move it now.
                if let Err(e) = self.outbox.checkpoint() {
                    tracing::debug!(dataset = %self.config.name, error = %e, "checkpoint after a full disk failed");
                }
            }
            Ok(_) => self.chunk_changes = self.chunk_changes.saturating_mul(2).min(self.chunk_changes_limit),
            Err(_) => {}
        }
        if result.as_ref().is_ok_and(|r| r.changes > 0)
            && let Err(e) = self.outbox.release_memory()
        {
            tracing::debug!(dataset = %self.config.name, error = %e, "could not release the outbox cache");
        }
        let now = now_ms();
        match &result {
            Ok(report) if !report.interrupted => {
                if let Err(e) = self.outbox.record_poll_ok(&self.config.name, now, report.null_cursor_rows) {
                    return Err(self.outbox_err(e));
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Err(rec) = self.outbox.record_poll_error(&self.config.name, now, &e.to_string()) {
                    tracing::warn!(dataset = %self.config.name, error = %rec, "could not record the poll error in the outbox");
                }
            }
        }
        result
    }

    fn poll_inner(&mut self) -> Result<PollReport, DetectError> {
        if let SourceConfig::Folder(folder) = &self.config.source {
            let folder = folder.clone();
            return files::poll(self, &folder);
        }
        if self.config.mode == Mode::Cdc {
            return cdc::run(self);
        }
        let since = match self.config.mode {
            Mode::Cursor => self
                .outbox
                .dataset_state(&self.config.name)
                .map_err(|e| self.outbox_err(e))?
                .and_then(|s| s.cursor_value),
            Mode::Snapshot | Mode::Cdc => None,
        };
        let mut source = source::open(&self.config, since.as_ref())?;
        let schema = source.discover(&self.config.key, self.config.cursor_column.as_deref())?;
        let schema_changed = self.outbox.record_schema(&schema).map_err(|e| self.outbox_err(e))?;
        if schema_changed {
            tracing::info!(dataset = %self.config.name, columns = schema.columns.len(), "source schema recorded");
        }
        let mut report = match self.config.mode {
            Mode::Cursor => cursor::pass(self, source.as_mut(), &schema)?,
            Mode::Snapshot | Mode::Cdc => snapshot::pass(self, source.as_mut(), &schema)?,
        };
        report.schema_changed = schema_changed;
        Ok(report)
    }

    /// Whether the open chunk has reached one of its bounds and must be committed.
    pub(crate) fn chunk_full(&self, rows_in_chunk: usize) -> bool {
        self.outbox.chunk_changes() >= self.chunk_changes
            || rows_in_chunk >= self.chunk_rows
            || self.outbox.chunk_bytes() >= self.chunk_bytes
    }

    /// Opens a chunk, first waiting while the outbox is full (by count, or by disk space).
    /// Returns false if shutdown was requested while waiting.
    pub(crate) fn begin_chunk(&mut self) -> Result<bool, DetectError> {
        if !self.wait_for_room()? {
            return Ok(false);
        }
        loop {
            let space = self.outbox.space().map_err(|e| self.outbox_err(e))?;
            if let Some(budget) = chunk_budget(space) {
                if self.disk_logged {
                    tracing::info!(dataset = %self.config.name, free_bytes = space, "outbox disk has room again; capture resumed");
                    self.disk_logged = false;
                }
                self.chunk_bytes = budget;
                self.tight = space < TIGHT_SPACE;
                break;
            }
            if !self.disk_logged {
                tracing::error!(
                    dataset = %self.config.name,
                    free_bytes = space,
                    "outbox disk is nearly full: capture is paused until acknowledged changes free space \
                     or an operator frees disk (nothing is dropped)"
                );
                self.disk_logged = true;
            }
            if self.cancel.is_cancelled() {
                return Ok(false);
            }
            std::thread::sleep(FULL_RECHECK);
        }
        self.outbox.begin_chunk(now_ms()).map_err(|e| self.outbox_err(e))?;
        Ok(true)
    }

    /// Waits while the outbox holds `max_changes`. Returns false on shutdown.
    fn wait_for_room(&mut self) -> Result<bool, DetectError> {
        loop {
            let depth = self.outbox.depth().map_err(|e| self.outbox_err(e))?;
            if depth < self.max_changes {
                if self.full_logged {
                    tracing::info!(dataset = %self.config.name, depth, "outbox has room again; capture resumed");
                    self.full_logged = false;
                }
                break;
            }
            if !self.full_logged {
                tracing::error!(
                    dataset = %self.config.name,
                    depth,
                    max_changes = self.max_changes,
                    "outbox is full: capture is paused until the hub acknowledges changes (nothing is dropped)"
                );
                self.full_logged = true;
            }
            if self.cancel.is_cancelled() {
                return Ok(false);
            }
            std::thread::sleep(FULL_RECHECK);
        }
        Ok(true)
    }

    /// Before a pass's final commit: marks the file being captured (if any) as processed, or
    /// stores a CDC initial snapshot's starting position, in the same transaction as its last
    /// changes.
    pub(crate) fn mark_file_done(&mut self) -> Result<(), DetectError> {
        if let Some(f) = self.file_done.take() {
            files::mark_done(self, &f)?;
        }
        if let Some((slot, lsn)) = self.cdc_start.take() {
            self.outbox.cdc_store(&self.config.name, &slot, lsn, None).map_err(|e| self.outbox_err(e))?;
        }
        Ok(())
    }

    /// Commits the open chunk and wakes the forwarder if it held changes.
    pub(crate) fn commit_chunk(&mut self) -> Result<(), DetectError> {
        let had_changes = self.outbox.chunk_changes() > 0;
        self.outbox.commit_chunk().map_err(|e| self.outbox_err(e))?;
        if self.tight
            && had_changes
            && let Err(e) = self.outbox.checkpoint()
        {
            tracing::debug!(dataset = %self.config.name, error = %e, "checkpoint on a tight disk failed");
        }
        if had_changes {
            (self.on_commit)();
        }
        Ok(())
    }

    /// Whether shutdown was requested (checked only between chunks).
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Checks that a dataset's source opens and returns its discovered schema.
pub fn discover(config: &DatasetConfig) -> Result<DatasetSchema, SourceError> {
    let mut source: Box<dyn Source> = source::open(config, None)?;
    source.discover(&config.key, config.cursor_column.as_deref())
}

/// Like [`discover`], plus what exactly was read (a folder names its file) for `check`.
pub fn discover_described(config: &DatasetConfig) -> Result<(DatasetSchema, Option<String>), SourceError> {
    let mut source: Box<dyn Source> = source::open(config, None)?;
    let schema = source.discover(&config.key, config.cursor_column.as_deref())?;
    Ok((schema, source.describe()))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_remote;
