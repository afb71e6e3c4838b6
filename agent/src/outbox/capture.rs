//! Capture chunks: the one write transaction that holds a group of changes together with the
//! source position that produced them.
//!
//! Invariant (architecture invariant 1): between [`Outbox::begin_chunk`] and
//! [`Outbox::commit_chunk`] everything — change rows, their sequence numbers, the new cursor, the
//! boundary rows, snapshot hashes and the "seen" marks — lives in one `BEGIN IMMEDIATE`
//! transaction. If the process dies, or the chunk fails (disk full), or the `Outbox` is dropped
//! before the commit, all of it disappears together and the next poll reads the same source rows
//! again. Sequence numbers come from `meta.next_seq` read inside the transaction, so they are
//! gapless and never reused.
//!
//! Changes are stored in blocks ([`Block`]): a run of up to [`BLOCK_CHANGES`] changes of one
//! dataset (at most about [`BLOCK_BYTES`]) is one row of `change_blocks`, so a million-row sync
//! writes, reads back and deletes a few thousand rows instead of a million.

use std::io::Write;

use kho_shared::hash::{KeyHash, RowHash};
use kho_shared::protocol::Op;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};

use super::{Outbox, OutboxError};
use crate::source::CursorValue;

/// A stored snapshot row missing from the current pass: `(canonical key, key object JSON)`.
pub type UnseenRow = (Vec<u8>, Vec<u8>);

/// State of an open chunk.
#[derive(Debug)]
pub(crate) struct ChunkState {
    /// Released when the chunk is committed, rolled back or dropped.
    _pass: super::gate::Pass,
    next_seq: u64,
    changes: usize,
    /// Approximate bytes the chunk adds to the database (change payloads, snapshot hashes).
    bytes: usize,
    captured_at_ms: i64,
    block: Block,
}

/// Most changes one `change_blocks` row holds.
pub(crate) const BLOCK_CHANGES: usize = 1024;
/// A block is closed once its payload reaches this many bytes.
pub(crate) const BLOCK_BYTES: usize = 256 * 1024;
/// Bytes a stored change costs beyond its payload (its length in the block's `lens`).
const CHANGE_OVERHEAD: usize = 4;

/// The block being filled: consecutive changes of one dataset, written as one `change_blocks`
/// row when it is full, when the next change is of another dataset, or when the chunk commits.
#[derive(Debug, Default)]
struct Block {
    dataset: String,
    first_seq: u64,
    /// Each change's payload length, `u32` little-endian.
    lens: Vec<u8>,
    /// The changes' JSON, concatenated.
    payload: Vec<u8>,
}

impl Block {
    fn len(&self) -> usize {
        self.lens.len() / 4
    }

    fn is_full_for(&self, dataset: &str) -> bool {
        self.len() > 0 && (self.dataset != dataset || self.len() >= BLOCK_CHANGES || self.payload.len() >= BLOCK_BYTES)
    }

    /// Inserts the block (inside the open chunk's transaction) and empties it.
    fn flush(&mut self, conn: &rusqlite::Connection, captured_at_ms: i64) -> rusqlite::Result<()> {
        if self.len() == 0 {
            return Ok(());
        }
        let last_seq = self.first_seq + self.len() as u64 - 1;
        conn.prepare_cached(
            "INSERT INTO change_blocks (first_seq, last_seq, dataset, captured_at_ms, lens, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            self.first_seq as i64,
            last_seq as i64,
            self.dataset,
            captured_at_ms,
            self.lens,
            self.payload
        ])?;
        self.lens.clear();
        self.payload.clear();
        Ok(())
    }
}

/// Per-row bytes a stored snapshot hash costs beyond its contents (row header, b-tree cell,
/// dataset column), for the chunk's byte estimate.
const ROW_OVERHEAD: usize = 48;

fn hash32(v: Vec<u8>) -> Option<RowHash> {
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

impl Outbox {
    /// Starts a chunk (takes the outbox write lock). A chunk still open is rolled back first.
    pub fn begin_chunk(&mut self, now_ms: i64) -> Result<(), OutboxError> {
        if self.capture.is_some() {
            self.rollback_chunk();
        }
        let pass = super::gate::enter_capture();
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| self.err("begin chunk", e))?;
        let next_seq = match self.meta() {
            Ok(m) => m.next_seq,
            Err(e) => {
                self.rollback_chunk();
                return Err(e);
            }
        };
        self.capture = Some(ChunkState {
            _pass: pass,
            next_seq,
            changes: 0,
            bytes: 0,
            captured_at_ms: now_ms,
            block: Block::default(),
        });
        Ok(())
    }

    /// Whether a chunk is open.
    pub fn in_chunk(&self) -> bool {
        self.capture.is_some()
    }

    /// Changes added to the open chunk so far.
    pub fn chunk_changes(&self) -> usize {
        self.capture.as_ref().map_or(0, |c| c.changes)
    }

    /// Approximate bytes the open chunk adds to the outbox so far.
    pub fn chunk_bytes(&self) -> usize {
        self.capture.as_ref().map_or(0, |c| c.bytes)
    }

    /// Appends a change to the open chunk; `body` is the row object (upsert) or key object
    /// (delete), already JSON. Returns its sequence number.
    pub fn push_change(&mut self, dataset: &str, op: Op, body: &[u8]) -> Result<u64, OutboxError> {
        let Outbox { conn, path, capture } = self;
        let Some(chunk) = capture.as_mut() else {
            return Err(super::sql_err(path, "add change", rusqlite::Error::InvalidQuery));
        };
        let seq = chunk.next_seq;
        let block = &mut chunk.block;
        if block.is_full_for(dataset) {
            block.flush(conn, chunk.captured_at_ms).map_err(|e| super::sql_err(path, "insert changes", e))?;
        }
        if block.len() == 0 {
            block.dataset.clear();
            block.dataset.push_str(dataset);
            block.first_seq = seq;
        }
        let p = &mut block.payload;
        let start = p.len();
        p.extend_from_slice(b"{\"seq\":");
        // Writing into a Vec cannot fail.
        write!(p, "{seq}").ok();
        p.extend_from_slice(b",\"dataset\":");
        // Writing a &str into a Vec cannot fail.
        serde_json::to_writer(&mut *p, dataset).ok();
        p.extend_from_slice(match op {
            Op::Upsert => b",\"op\":\"upsert\",\"row\":".as_slice(),
            Op::Delete => b",\"op\":\"delete\",\"key\":".as_slice(),
        });
        p.extend_from_slice(body);
        p.push(b'}');
        let len = p.len() - start;
        let Ok(len32) = u32::try_from(len) else {
            p.truncate(start);
            return Err(super::sql_err(
                path,
                "add change",
                rusqlite::Error::ToSqlConversionFailure("change over 4 GiB".into()),
            ));
        };
        block.lens.extend_from_slice(&len32.to_le_bytes());
        chunk.next_seq += 1;
        chunk.changes += 1;
        chunk.bytes += len + CHANGE_OVERHEAD;
        Ok(seq)
    }

    /// Commits the open chunk (sequence counter included). Nothing happens without an open chunk.
    pub fn commit_chunk(&mut self) -> Result<(), OutboxError> {
        let Some(mut chunk) = self.capture.take() else { return Ok(()) };
        // A chunk without changes leaves the counter alone, so an idle poll writes nothing.
        let result = if chunk.changes > 0 {
            chunk.block.flush(&self.conn, chunk.captured_at_ms).and_then(|_| {
                self.conn.execute("UPDATE meta SET next_seq = ?1 WHERE id = 1", [chunk.next_seq as i64]).map(|_| ())
            })
        } else {
            Ok(())
        }
        .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = result {
            let err = self.err("commit chunk", e);
            self.capture = Some(chunk);
            self.rollback_chunk();
            return Err(err);
        }
        Ok(())
    }

    /// Abandons the open chunk: none of its changes or positions are kept.
    pub fn rollback_chunk(&mut self) {
        // The gate is released only after the rollback (when `_chunk` drops).
        let _chunk = self.capture.take();
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(outbox = %self.path.display(), error = %e, "rollback of a capture chunk failed");
        }
    }

    /// Stores the cursor position (in the open chunk).
    pub fn set_cursor(&self, dataset: &str, cursor: Option<&CursorValue>) -> Result<(), OutboxError> {
        let v = match cursor {
            None => Value::Null,
            Some(CursorValue::Int(i)) => Value::Integer(*i),
            Some(CursorValue::Real(f)) => Value::Real(*f),
            Some(CursorValue::Text(t)) => Value::Text(t.clone()),
            Some(CursorValue::Blob(b)) => Value::Blob(b.clone()),
        };
        self.conn
            .prepare_cached("UPDATE datasets SET cursor_value = ?2 WHERE name = ?1")
            .and_then(|mut s| s.execute(params![dataset, v]))
            .map_err(|e| self.err("store cursor", e))?;
        Ok(())
    }

    /// The row hash stored for a boundary row.
    pub fn boundary_get(&self, dataset: &str, key: &KeyHash) -> Result<Option<RowHash>, OutboxError> {
        self.conn
            .prepare_cached("SELECT row_hash FROM cursor_boundary WHERE dataset = ?1 AND key_hash = ?2")
            .and_then(|mut s| s.query_row(params![dataset, key.as_slice()], |r| r.get::<_, Vec<u8>>(0)).optional())
            .map(|v| v.and_then(hash32))
            .map_err(|e| self.err("read boundary", e))
    }

    /// Forgets every boundary row of `dataset` (the cursor moved to a new value).
    pub fn boundary_clear(&self, dataset: &str) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached("DELETE FROM cursor_boundary WHERE dataset = ?1")
            .and_then(|mut s| s.execute([dataset]))
            .map_err(|e| self.err("clear boundary", e))?;
        Ok(())
    }

    /// Remembers a row at the current cursor value.
    pub fn boundary_put(&self, dataset: &str, key: &KeyHash, row: &RowHash) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO cursor_boundary (dataset, key_hash, row_hash) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![dataset, key.as_slice(), row.as_slice()]))
            .map_err(|e| self.err("store boundary", e))?;
        Ok(())
    }

    /// The row hash last captured for a snapshot row, by canonical key.
    pub fn snapshot_get(&self, dataset: &str, key: &[u8]) -> Result<Option<RowHash>, OutboxError> {
        self.conn
            .prepare_cached("SELECT row_hash FROM snapshot_rows WHERE dataset = ?1 AND key = ?2")
            .and_then(|mut s| s.query_row(params![dataset, key], |r| r.get::<_, Vec<u8>>(0)).optional())
            .map(|v| v.and_then(hash32))
            .map_err(|e| self.err("read snapshot hash", e))
    }

    /// Stores a snapshot row's new hash and its key.
    pub fn snapshot_put(
        &mut self,
        dataset: &str,
        key: &[u8],
        row: &RowHash,
        key_json: &[u8],
    ) -> Result<(), OutboxError> {
        if let Some(chunk) = self.capture.as_mut() {
            chunk.bytes += key.len() + row.len() + key_json.len() + ROW_OVERHEAD;
        }
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO snapshot_rows (dataset, key, row_hash, key_json) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![dataset, key, row.as_slice(), key_json]))
            .map_err(|e| self.err("store snapshot hash", e))?;
        Ok(())
    }

    /// Forgets a deleted snapshot row.
    pub fn snapshot_remove(&self, dataset: &str, key: &[u8]) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached("DELETE FROM snapshot_rows WHERE dataset = ?1 AND key = ?2")
            .and_then(|mut s| s.execute(params![dataset, key]))
            .map_err(|e| self.err("remove snapshot hash", e))?;
        Ok(())
    }

    /// Starts a snapshot pass: an empty TEMP table of the keys seen so far (on disk when large,
    /// so memory stays bounded whatever the table size).
    pub fn seen_reset(&self) -> Result<(), OutboxError> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS seen (key BLOB PRIMARY KEY) WITHOUT ROWID; DELETE FROM temp.seen;",
            )
            .map_err(|e| self.err("reset seen keys", e))
    }

    /// Marks a key as seen in this pass; false if it was already seen (a duplicate key).
    pub fn seen_insert(&self, key: &[u8]) -> Result<bool, OutboxError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO temp.seen (key) VALUES (?1)")
            .and_then(|mut s| s.execute([key]))
            .map(|n| n == 1)
            .map_err(|e| self.err("mark key seen", e))
    }

    /// Up to `limit` stored snapshot rows not seen in this pass, with key > `after`, in key
    /// order: `(key, key_json)`. An empty `after` starts from the first.
    pub fn snapshot_unseen(&self, dataset: &str, after: &[u8], limit: usize) -> Result<Vec<UnseenRow>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.key, s.key_json FROM snapshot_rows s
                 WHERE s.dataset = ?1 AND s.key > ?2
                   AND NOT EXISTS (SELECT 1 FROM temp.seen t WHERE t.key = s.key)
                 ORDER BY s.key LIMIT ?3",
            )
            .map_err(|e| self.err("find deleted rows", e))?;
        stmt.query_map(params![dataset, after, limit as i64], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| self.err("find deleted rows", e))
    }
}
