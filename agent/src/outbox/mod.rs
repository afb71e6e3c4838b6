//! The outbox: a durable, bounded queue of captured changes between detection and the hub.
//!
//! ## On disk
//! One SQLite file, [`OUTBOX_FILE`] in the agent's `data_dir`, in WAL mode with
//! `synchronous = FULL` (a commit is on disk before the call returns). Tables:
//!
//! - `meta` (one row): `next_seq` (the next sequence number to allocate), `acked_through` (the
//!   highest sequence the hub acknowledged), `last_ack_at_ms`.
//! - `change_blocks(first_seq, last_seq, dataset, captured_at_ms, lens, payload)`: captured
//!   changes, one row per block of consecutive changes of one dataset (up to
//!   [`capture::BLOCK_CHANGES`]). `payload` concatenates each change's JSON encoding of a
//!   [`kho_shared::protocol::Change`] including its `seq`, so the forwarder builds a batch by
//!   concatenation; `lens` holds each change's length (`u32` little-endian). One row per change
//!   cost a third of the agent's CPU on a large sync: every change was inserted, read back and
//!   deleted as its own row, and each delete rewrote its page into the WAL. Schema version 1
//!   had that `changes(seq, …)` table; opening such an outbox moves its rows into blocks.
//! - `datasets(name, mode, cursor_column, schema_json, cursor_value, last_poll_at_ms,
//!   last_ok_poll_at_ms, last_error, captured_through_seq, null_cursor_rows)`: per-dataset capture
//!   state. `cursor_value` has no declared type, so it keeps the exact SQLite value (integer, real
//!   or text) the source returned.
//! - `cursor_boundary(dataset, key_hash, row_hash)`: rows whose cursor equals the stored cursor
//!   value, used to skip them when the next `>=` read returns them again.
//! - `snapshot_rows(dataset, key, row_hash, key_json)`: the last captured hash of every row of a
//!   snapshot dataset, by its canonical key (the JSON array whose sha256 is the key hash), and its
//!   key object (to emit deletes). Keyed by the canonical key rather than its hash because a
//!   snapshot reads the source in key order: inserts then land next to each other in the B-tree
//!   instead of dirtying a random page per row (4× faster on a million-row first load).
//! - `source_files(dataset, sha256, file, status, error, at_ms, file_mtime_ms)`: files of a drop-folder dataset
//!   by content hash: `done` (written in the same transaction as the file's last chunk, so a file
//!   is applied exactly once) or `refused` (with the reason, reported until the file changes).
//!
//! ## A change's life
//! **Captured**: inserted in one transaction together with the new cursor, boundary rows or
//! snapshot hashes ([`capture`]), with a sequence number taken from `meta.next_seq` inside that
//! transaction, so sequences are gapless and never reused, even across crashes. **In flight**:
//! read (never removed) by the forwarder and sent, possibly several times. **Acknowledged**: the
//! hub answered `applied_through ≥ seq`. **Deleted**: [`Outbox::ack`] deletes every block whose
//! changes are all `≤ applied_through` and stores `acked_through` in one transaction; a block
//! acknowledged only in part stays until the rest of it is, and reads skip its acknowledged
//! head. Nothing else deletes changes.
//!
//! ## Crash story
//! After kill -9, SQLite's WAL recovery leaves exactly the committed transactions: a capture
//! chunk is either entirely present (changes and the source position that produced them) or
//! entirely absent (and the source position was not advanced, so the next poll reads the same
//! rows again). An ack is either complete or not done (and the hub dedups the resend). No
//! recovery code is needed beyond opening the file; [`Outbox::verify`] checks the invariants.
//!
//! ## Bound
//! `max_changes` bounds the number of unacknowledged changes. Capture checks the depth before
//! each chunk and waits while the outbox is full (logging an ERROR); it may overshoot the bound by
//! at most one chunk. Nothing is ever dropped. On disk, capture also pauses while little space
//! is left, and a 512 KiB reserve file beside the outbox keeps an ack possible on a disk filled
//! to the last byte ([`reserve`]).

mod blocks;
pub mod capture;
pub mod cdc;
pub use quarantine::Quarantined;
mod files;
mod gate;
mod quarantine;
pub mod reserve;
mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use files::FileStatus;
pub use state::{DatasetState, OutboxStatus, VerifyReport};

/// File name of the outbox inside `data_dir`.
pub const OUTBOX_FILE: &str = "outbox.sqlite";
/// How long a writer waits for another connection's write transaction (capture chunks and acks
/// take turns; each is short).
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes the WAL file is truncated to after a checkpoint resets it: a WAL that grew during a
/// large sync gives its disk space back, so the database file can grow into it on a tight disk.
const WAL_SIZE_LIMIT: u64 = 1 << 20;
/// Changes deleted per transaction when an ack has to be written in steps on a full disk.
const ACK_STEP_CHANGES: u64 = 512;

/// Schema version stored in `PRAGMA user_version` (1: one `changes` row per change; 2: blocks).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq INTEGER NOT NULL,
    acked_through INTEGER NOT NULL,
    last_ack_at_ms INTEGER
);
INSERT OR IGNORE INTO meta (id, next_seq, acked_through, last_ack_at_ms) VALUES (1, 1, 0, NULL);
CREATE TABLE IF NOT EXISTS change_blocks (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    captured_at_ms INTEGER NOT NULL,
    lens BLOB NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    cursor_column TEXT,
    schema_json TEXT,
    cursor_value,
    last_poll_at_ms INTEGER,
    last_ok_poll_at_ms INTEGER,
    last_error TEXT,
    captured_through_seq INTEGER NOT NULL DEFAULT 0,
    null_cursor_rows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cursor_boundary (
    dataset TEXT NOT NULL,
    key_hash BLOB NOT NULL,
    row_hash BLOB NOT NULL,
    PRIMARY KEY (dataset, key_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot_rows (
    dataset TEXT NOT NULL,
    key BLOB NOT NULL,
    row_hash BLOB NOT NULL,
    key_json BLOB NOT NULL,
    PRIMARY KEY (dataset, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS source_files (
    dataset TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    file TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    at_ms INTEGER NOT NULL,
    file_mtime_ms INTEGER,
    PRIMARY KEY (dataset, sha256)
) WITHOUT ROWID;
";

/// Why the outbox could not do something.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: cannot create directory: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("outbox {path} does not exist (has the agent run yet?)")]
    Missing { path: PathBuf },
    #[error(
        "outbox {path}: disk full; the write was rolled back whole and will be retried (nothing is lost): {source}"
    )]
    DiskFull { path: PathBuf, source: rusqlite::Error },
    #[error("cannot read the free space under {path}: {source}")]
    Space { path: PathBuf, source: std::io::Error },
    #[error("outbox {path}: {context}: {source}")]
    Sqlite { path: PathBuf, context: &'static str, source: rusqlite::Error },
    #[error("outbox {path}: dataset {dataset}: stored schema is unreadable: {source}")]
    BadSchema { path: PathBuf, dataset: String, source: serde_json::Error },
    #[error("outbox {path} was written by a newer agent (schema version {found}, this agent knows {SCHEMA_VERSION})")]
    NewerSchema { path: PathBuf, found: i64 },
    #[error(
        "outbox {path} was written by an older agent (schema version {found}); the agent upgrades it when it \
         starts (nothing is lost): start the agent once, then ask again"
    )]
    OlderSchema { path: PathBuf, found: i64 },
}

impl OutboxError {
    /// Whether retrying later may succeed (disk full, locked) rather than needing an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            OutboxError::DiskFull { .. } => true,
            OutboxError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The counters in `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub next_seq: u64,
    pub acked_through: u64,
    pub last_ack_at_ms: Option<i64>,
}

impl Meta {
    /// Changes captured and not yet acknowledged.
    pub fn depth(&self) -> u64 {
        self.next_seq.saturating_sub(1).saturating_sub(self.acked_through)
    }
}

/// A run of pending changes read for one batch.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Datasets touched, in first-seen order.
    pub datasets: Vec<String>,
    /// Concatenated payloads; `ends[i]` is the end offset of change `i`.
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each change's JSON, in sequence order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.bytes[start..end];
            start = end;
            s
        })
    }
}

/// A connection to the outbox. Capture, forwarder and heartbeat each hold their own.
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    capture: Option<capture::ChunkState>,
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path` for reading and writing.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| OutboxError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let conn = Connection::open(path).map_err(|e| sql_err(path, "open", e))?;
        let out = Outbox { conn, path: path.to_path_buf(), capture: None };
        out.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| out.err("set busy timeout", e))?;
        out.conn
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
            ))
            .map_err(|e| out.err("configure", e))?;
        let version: i64 =
            out.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| out.err("read version", e))?;
        if version > SCHEMA_VERSION {
            return Err(OutboxError::NewerSchema { path: path.to_path_buf(), found: version });
        }
        // One transaction, so a concurrent `status` sees either no schema or all of it.
        let tx = rusqlite::Transaction::new_unchecked(&out.conn, rusqlite::TransactionBehavior::Immediate)
            .and_then(|tx| {
                tx.execute_batch(&format!("{SCHEMA} {}", cdc::CDC_SCHEMA))?;
                blocks::migrate_v1(&tx)?;
                tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))?;
                Ok(tx)
            })
            .map_err(|e| out.err("create tables", e))?;
        tx.commit().map_err(|e| out.err("create tables", e))?;
        if reserve::missing(path) > 0 {
            let _pass = gate::enter_ack();
            out.restore_reserve();
        }
        Ok(out)
    }

    /// Opens an existing outbox read-only (status and check; works while the agent runs).
    pub fn open_read_only(path: &Path) -> Result<Outbox, OutboxError> {
        if !path.exists() {
            return Err(OutboxError::Missing { path: path.to_path_buf() });
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| sql_err(path, "open read-only", e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_err(path, "set busy timeout", e))?;
        // The agent may have created the file a moment ago and not yet its tables (or it is a
        // stray empty file): either way there is no outbox to report on yet.
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| sql_err(path, "read version", e))?;
        if version == 0 {
            return Err(OutboxError::Missing { path: path.to_path_buf() });
        }
        // Read-only, this connection cannot move an older outbox into the current tables.
        if version < SCHEMA_VERSION {
            return Err(OutboxError::OlderSchema { path: path.to_path_buf(), found: version });
        }
        if version > SCHEMA_VERSION {
            return Err(OutboxError::NewerSchema { path: path.to_path_buf(), found: version });
        }
        Ok(Outbox { conn, path: path.to_path_buf(), capture: None })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, context: &'static str, e: rusqlite::Error) -> OutboxError {
        sql_err(&self.path, context, e)
    }

    /// The counters.
    pub fn meta(&self) -> Result<Meta, OutboxError> {
        self.conn
            .query_row("SELECT next_seq, acked_through, last_ack_at_ms FROM meta WHERE id = 1", [], |r| {
                Ok(Meta {
                    next_seq: r.get::<_, i64>(0)? as u64,
                    acked_through: r.get::<_, i64>(1)? as u64,
                    last_ack_at_ms: r.get(2)?,
                })
            })
            .map_err(|e| self.err("read meta", e))
    }

    /// Changes captured and not yet acknowledged.
    pub fn depth(&self) -> Result<u64, OutboxError> {
        Ok(self.meta()?.depth())
    }

    /// Deletes every change with `seq ≤ applied_through` and records the ack, in one transaction.
    /// Returns the number of changes acknowledged. An ack at or below `acked_through` changes
    /// nothing.
    ///
    /// On a disk so full that this delete cannot be written, the disk reserve is released and the
    /// changes are deleted in steps ([`Outbox::ack_in_steps`]): an ack must always be possible,
    /// or the space it would free is never freed. See [`reserve`].
    pub fn ack(&mut self, applied_through: u64, now_ms: i64) -> Result<u64, OutboxError> {
        let _pass = gate::enter_ack();
        let deleted = match self.ack_once(applied_through, now_ms) {
            Err(OutboxError::DiskFull { .. }) => {
                let freed = reserve::release(&self.path);
                tracing::warn!(
                    outbox = %self.path.display(),
                    released_bytes = freed,
                    "outbox disk full while deleting acknowledged changes; released the disk reserve, deleting in steps"
                );
                self.ack_in_steps(applied_through, now_ms)?
            }
            other => other?,
        };
        if reserve::missing(&self.path) > 0 {
            self.restore_reserve();
        }
        Ok(deleted)
    }

    /// Deleting rewrites pages into the WAL (each block's b-tree page, the free-list pages its
    /// overflow pages join), which a disk filled to the last byte may not have room for. Deletes
    /// in steps instead, the WAL checkpointed and truncated after each, so it never holds more
    /// than one step; a step that still does not fit is halved, down to a single change (a step
    /// that ends inside a block only moves `acked_through`; the block goes with a later step).
    fn ack_in_steps(&mut self, applied_through: u64, now_ms: i64) -> Result<u64, OutboxError> {
        let mut step = ACK_STEP_CHANGES;
        let mut deleted = 0;
        loop {
            let acked = self.meta()?.acked_through;
            if acked >= applied_through {
                return Ok(deleted);
            }
            let _ = self.truncate_wal();
            match self.ack_once(applied_through.min(acked + step), now_ms) {
                Ok(n) => deleted += n,
                Err(OutboxError::DiskFull { .. }) if step > 1 => step /= 2,
                Err(e) => return Err(e),
            }
        }
    }

    fn ack_once(&mut self, applied_through: u64, now_ms: i64) -> Result<u64, OutboxError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, "begin ack", e))?;
        let acked: i64 = tx
            .query_row("SELECT acked_through FROM meta WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| sql_err(&path, "read meta", e))?;
        if applied_through as i64 <= acked {
            return Ok(0);
        }
        tx.execute("DELETE FROM change_blocks WHERE first_seq <= ?1 AND last_seq <= ?1", [applied_through as i64])
            .map_err(|e| sql_err(&path, "delete acknowledged changes", e))?;
        tx.execute(
            "UPDATE meta SET acked_through = ?1, last_ack_at_ms = ?2 WHERE id = 1",
            params![applied_through as i64, now_ms],
        )
        .map_err(|e| sql_err(&path, "record ack", e))?;
        tx.commit().map_err(|e| sql_err(&path, "commit ack", e))?;
        Ok(applied_through - acked as u64)
    }

    /// Checkpoints the whole WAL into the database and truncates the WAL file to zero bytes,
    /// giving its space back to the file system.
    fn truncate_wal(&self) -> Result<(), OutboxError> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(|e| self.err("checkpoint", e))
    }

    /// Writes the disk reserve back if the file system has room for it (after truncating the
    /// WAL, whose bytes are otherwise held until the next reset). Best effort: a reserve that
    /// cannot be written yet is tried again after the next ack.
    fn restore_reserve(&self) {
        let Ok(free) = self.fs_free() else { return };
        let free = if free < reserve::RESERVE_BYTES * 2 && self.truncate_wal().is_ok() {
            self.fs_free().unwrap_or(free)
        } else {
            free
        };
        match reserve::restore(&self.path, free) {
            Ok(true) => tracing::info!(outbox = %self.path.display(), "outbox disk reserve written back"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(outbox = %self.path.display(), error = %e, "cannot write the outbox disk reserve yet")
            }
        }
    }

    /// Free bytes on the outbox's file system, for this process.
    fn fs_free(&self) -> Result<u64, OutboxError> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let vfs =
            rustix::fs::statvfs(dir).map_err(|e| OutboxError::Space { path: dir.to_path_buf(), source: e.into() })?;
        Ok(vfs.f_bavail.saturating_mul(vfs.f_frsize))
    }

    /// Bytes the outbox can still grow by: free space on its file system (for this process)
    /// plus the database's free pages, which new rows reuse without growing the file, less what
    /// the disk reserve lacks (that room is owed to the reserve, see [`reserve`]).
    pub fn space(&self) -> Result<u64, OutboxError> {
        let fs_free = self.fs_free()?;
        let pages: (i64, i64) = self
            .conn
            .query_row("SELECT freelist_count, page_size FROM pragma_freelist_count(), pragma_page_size()", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err("read free pages", e))?;
        let free_pages = u64::try_from(pages.0.saturating_mul(pages.1)).unwrap_or(0);
        Ok(fs_free.saturating_add(free_pages).saturating_sub(reserve::missing(&self.path)))
    }

    /// Copies committed WAL pages into the database without waiting for readers. On a tight
    /// disk this keeps the WAL from holding several chunks at once (each must later fit in the
    /// database file too).
    pub fn checkpoint(&self) -> Result<(), OutboxError> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(|e| self.err("checkpoint", e))
    }

    /// Hands the connection's page cache back to the allocator. Called when a burst of work is
    /// over (the outbox drained, a poll finished), so an idle agent does not keep a cache sized
    /// for a million-row sync.
    pub fn release_memory(&self) -> Result<(), OutboxError> {
        self.conn.execute_batch("PRAGMA shrink_memory").map_err(|e| self.err("release cache memory", e))
    }

    pub(crate) fn dataset_schema_json(&self, dataset: &str) -> Result<Option<String>, OutboxError> {
        self.conn
            .query_row("SELECT schema_json FROM datasets WHERE name = ?1", [dataset], |r| r.get::<_, Option<String>>(0))
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err("read schema", e))
    }
}

pub(crate) fn sql_err(path: &Path, context: &'static str, e: rusqlite::Error) -> OutboxError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        OutboxError::DiskFull { path: path.to_path_buf(), source: e }
    } else {
        OutboxError::Sqlite { path: path.to_path_buf(), context, source: e }
    }
}

#[cfg(test)]
mod tests;
