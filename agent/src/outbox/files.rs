//! Processed files of drop-folder datasets, by content sha256 (table `source_files`).
//!
//! Invariant: a `done` row is written inside the capture chunk that holds the file's last changes
//! ([`Outbox::file_done`] is called with the chunk open), so "the file's changes are in the outbox"
//! and "the file is marked processed" commit together or not at all. A `refused` row is written on
//! its own (no changes accompany it) and is replaced by `done` if the same content is later
//! accepted (e.g. after the key configuration was fixed and the dataset reset).

use rusqlite::{OptionalExtension, params};

use super::{Outbox, OutboxError};

/// What the outbox remembers about a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    Done,
    Refused(String),
}

impl Outbox {
    /// The remembered status of content `sha256` for `dataset`.
    pub fn file_status(&self, dataset: &str, sha256: &[u8; 32]) -> Result<Option<FileStatus>, OutboxError> {
        self.conn
            .prepare_cached("SELECT status, error FROM source_files WHERE dataset = ?1 AND sha256 = ?2")
            .and_then(|mut s| {
                s.query_row(params![dataset, sha256.as_slice()], |r| {
                    let status: String = r.get(0)?;
                    let error: Option<String> = r.get(1)?;
                    Ok(if status == "done" { FileStatus::Done } else { FileStatus::Refused(error.unwrap_or_default()) })
                })
                .optional()
            })
            .map_err(|e| self.err("read processed file", e))
    }

    /// Marks content as applied (with its file's mtime); call with the file's last chunk open.
    pub fn file_done(
        &self,
        dataset: &str,
        sha256: &[u8; 32],
        file: &str,
        now_ms: i64,
        file_mtime_ms: i64,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO source_files (dataset, sha256, file, status, error, at_ms, file_mtime_ms)
                 VALUES (?1, ?2, ?3, 'done', NULL, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![dataset, sha256.as_slice(), file, now_ms, file_mtime_ms]))
            .map_err(|e| self.err("mark file processed", e))?;
        Ok(())
    }

    /// The modification time of the newest file applied for `dataset`, if any.
    pub fn newest_done_mtime(&self, dataset: &str) -> Result<Option<i64>, OutboxError> {
        self.conn
            .prepare_cached("SELECT max(file_mtime_ms) FROM source_files WHERE dataset = ?1 AND status = 'done'")
            .and_then(|mut s| s.query_row([dataset], |r| r.get::<_, Option<i64>>(0)))
            .map_err(|e| self.err("read newest processed file", e))
    }

    /// Remembers that content was refused, and why (outside any chunk).
    pub fn file_refused(
        &self,
        dataset: &str,
        sha256: &[u8; 32],
        file: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO source_files (dataset, sha256, file, status, error, at_ms)
                 VALUES (?1, ?2, ?3, 'refused', ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![dataset, sha256.as_slice(), file, error, now_ms]))
            .map_err(|e| self.err("mark file refused", e))?;
        Ok(())
    }
}
