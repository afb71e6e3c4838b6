//! Per-dataset capture state, status snapshots and the integrity check of the outbox.
//!
//! Everything here is small bookkeeping beside the change log: which schema and cursor each
//! dataset is at, when it last polled (successfully or not), and the numbers `kho-agent status`
//! and the heartbeat report. Schema and state updates outside a capture chunk are single
//! statements, atomic on their own.

use kho_shared::protocol::DatasetSchema;
use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Meta, Outbox, OutboxError};
use crate::config::Mode;
use crate::source::CursorValue;

/// One dataset's capture state as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetState {
    pub dataset: String,
    pub mode: String,
    pub cursor_column: Option<String>,
    /// The cursor position, human-readable (the exact value is kept in the outbox).
    pub cursor: Option<String>,
    #[serde(skip)]
    pub cursor_value: Option<CursorValue>,
    pub last_poll_at_ms: Option<i64>,
    pub last_ok_poll_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub captured_through_seq: u64,
    pub null_cursor_rows: u64,
    /// Replication slot, position and lag of a `mode = "cdc"` dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdc: Option<super::cdc::CdcStatus>,
}

/// The outbox as `status` and the heartbeat see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStatus {
    pub depth: u64,
    pub next_seq: u64,
    pub acked_through: u64,
    pub last_ack_at_ms: Option<i64>,
    pub oldest_pending_seq: Option<u64>,
    pub oldest_pending_captured_at_ms: Option<i64>,
    pub datasets: Vec<DatasetState>,
}

/// Result of [`Outbox::verify`]; `problems` is empty when the outbox is sound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub changes: u64,
    pub problems: Vec<String>,
}

fn cursor_from(v: ValueRef<'_>) -> Option<CursorValue> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(CursorValue::Int(i)),
        ValueRef::Real(f) => Some(CursorValue::Real(f)),
        ValueRef::Text(t) => Some(CursorValue::Text(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Blob(b) => Some(CursorValue::Blob(b.to_vec())),
    }
}

const STATE_COLUMNS: &str = "name, mode, cursor_column, cursor_value, last_poll_at_ms, last_ok_poll_at_ms, \
     last_error, captured_through_seq, null_cursor_rows";

fn state_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DatasetState> {
    let cursor_value = cursor_from(r.get_ref(3)?);
    Ok(DatasetState {
        dataset: r.get(0)?,
        mode: r.get(1)?,
        cursor_column: r.get(2)?,
        cursor: cursor_value.as_ref().map(CursorValue::display),
        cursor_value,
        last_poll_at_ms: r.get(4)?,
        last_ok_poll_at_ms: r.get(5)?,
        last_error: r.get(6)?,
        captured_through_seq: r.get::<_, i64>(7)?.max(0) as u64,
        null_cursor_rows: r.get::<_, i64>(8)?.max(0) as u64,
        cdc: None,
    })
}

impl Outbox {
    /// Makes sure `dataset` has a state row for `mode`/`cursor_column`. If either changed since the
    /// last run, the stored cursor, boundary rows and snapshot hashes are discarded (the next poll
    /// re-reads everything; the hub's upserts make that harmless).
    pub fn prepare_dataset(
        &mut self,
        dataset: &str,
        mode: Mode,
        cursor_column: Option<&str>,
    ) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let e = |context, err| super::sql_err(&path, context, err);
        let tx = self.conn.transaction().map_err(|err| e("begin", err))?;
        let stored: Option<(String, Option<String>)> = tx
            .query_row("SELECT mode, cursor_column FROM datasets WHERE name = ?1", [dataset], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|err| e("read dataset state", err))?;
        let want = (mode.as_str().to_string(), cursor_column.map(str::to_string));
        match stored {
            Some(s) if s == want => return Ok(()),
            Some(_) => {
                tracing::warn!(
                    dataset,
                    mode = mode.as_str(),
                    "capture mode or cursor column changed; re-reading the dataset from scratch"
                );
                tx.execute(
                    "UPDATE datasets SET mode = ?2, cursor_column = ?3, cursor_value = NULL WHERE name = ?1",
                    params![dataset, want.0, want.1],
                )
                .map_err(|err| e("reset dataset state", err))?;
                tx.execute("DELETE FROM cursor_boundary WHERE dataset = ?1", [dataset])
                    .map_err(|err| e("reset boundary", err))?;
                tx.execute("DELETE FROM snapshot_rows WHERE dataset = ?1", [dataset])
                    .map_err(|err| e("reset snapshot", err))?;
                tx.execute("DELETE FROM source_files WHERE dataset = ?1", [dataset])
                    .map_err(|err| e("reset processed files", err))?;
            }
            None => {
                tx.execute(
                    "INSERT INTO datasets (name, mode, cursor_column) VALUES (?1, ?2, ?3)",
                    params![dataset, want.0, want.1],
                )
                .map_err(|err| e("create dataset state", err))?;
            }
        }
        tx.commit().map_err(|err| e("commit dataset state", err))
    }

    /// Stores the schema the source currently has, if it differs. Returns whether it changed.
    pub fn record_schema(&self, schema: &DatasetSchema) -> Result<bool, OutboxError> {
        let json = serde_json::to_string(schema).map_err(|source| OutboxError::BadSchema {
            path: self.path.clone(),
            dataset: schema.dataset.clone(),
            source,
        })?;
        if self.dataset_schema_json(&schema.dataset)?.as_deref() == Some(json.as_str()) {
            return Ok(false);
        }
        self.conn
            .execute("UPDATE datasets SET schema_json = ?2 WHERE name = ?1", params![schema.dataset, json])
            .map_err(|e| self.err("store schema", e))?;
        Ok(true)
    }

    /// The stored schema of each of `datasets`.
    pub fn schemas(&self, datasets: &[String]) -> Result<Vec<DatasetSchema>, OutboxError> {
        let mut out = Vec::with_capacity(datasets.len());
        for d in datasets {
            let json = self.dataset_schema_json(d)?.ok_or_else(|| OutboxError::BadSchema {
                path: self.path.clone(),
                dataset: d.clone(),
                source: serde::de::Error::custom("no schema stored for a dataset with pending changes"),
            })?;
            let schema = serde_json::from_str(&json).map_err(|source| OutboxError::BadSchema {
                path: self.path.clone(),
                dataset: d.clone(),
                source,
            })?;
            out.push(schema);
        }
        Ok(out)
    }

    /// The stored state of `dataset`.
    pub fn dataset_state(&self, dataset: &str) -> Result<Option<DatasetState>, OutboxError> {
        self.conn
            .query_row(&format!("SELECT {STATE_COLUMNS} FROM datasets WHERE name = ?1"), [dataset], state_from_row)
            .optional()
            .map_err(|e| self.err("read dataset state", e))
    }

    /// Records a failed poll.
    pub fn record_poll_error(&self, dataset: &str, now_ms: i64, error: &str) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE datasets SET last_poll_at_ms = ?2, last_error = ?3 WHERE name = ?1",
                params![dataset, now_ms, error],
            )
            .map_err(|e| self.err("record poll error", e))?;
        Ok(())
    }

    /// Records a complete poll: every change it found has a sequence ≤ the current `next_seq - 1`.
    pub fn record_poll_ok(&self, dataset: &str, now_ms: i64, null_cursor_rows: u64) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE datasets SET last_poll_at_ms = ?2, last_ok_poll_at_ms = ?2, last_error = NULL,
                    null_cursor_rows = ?3,
                    captured_through_seq = (SELECT next_seq - 1 FROM meta WHERE id = 1)
                 WHERE name = ?1",
                params![dataset, now_ms, null_cursor_rows as i64],
            )
            .map_err(|e| self.err("record poll", e))?;
        Ok(())
    }

    /// Counters and every dataset's state.
    pub fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let Meta { next_seq, acked_through, last_ack_at_ms } = self.meta()?;
        let oldest: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT max(first_seq, ?1 + 1), captured_at_ms FROM change_blocks
                 WHERE last_seq > ?1 ORDER BY first_seq LIMIT 1",
                [acked_through as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err("read oldest change", e))?;
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {STATE_COLUMNS} FROM datasets ORDER BY name"))
            .map_err(|e| self.err("read datasets", e))?;
        let mut datasets = stmt
            .query_map([], state_from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err("read datasets", e))?;
        for d in datasets.iter_mut().filter(|d| d.mode == Mode::Cdc.as_str()) {
            d.cdc = self.cdc_status(&d.dataset)?;
        }
        let meta = Meta { next_seq, acked_through, last_ack_at_ms };
        Ok(OutboxStatus {
            depth: meta.depth(),
            next_seq,
            acked_through,
            last_ack_at_ms,
            oldest_pending_seq: oldest.map(|o| o.0 as u64),
            oldest_pending_captured_at_ms: oldest.map(|o| o.1),
            datasets,
        })
    }

    /// Integrity check: SQLite's own page check, then the sequence invariants (held changes are
    /// exactly `acked_through+1 ..= next_seq-1`, with no gaps), then that every dataset with
    /// pending changes has a readable schema.
    pub fn verify(&self) -> Result<VerifyReport, OutboxError> {
        let mut problems = Vec::new();
        let mut stmt = self.conn.prepare("PRAGMA integrity_check").map_err(|e| self.err("integrity check", e))?;
        let lines = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err("integrity check", e))?;
        if lines != ["ok"] {
            problems.extend(lines.into_iter().take(20).map(|l| format!("integrity_check: {l}")));
        }
        let meta = self.meta()?;
        let mut count = 0u64;
        let mut pending: Vec<String> = Vec::new();
        let mut next = None::<u64>;
        let mut stmt = self
            .conn
            .prepare("SELECT first_seq, last_seq, dataset, lens, length(payload) FROM change_blocks ORDER BY first_seq")
            .map_err(|e| self.err("read change blocks", e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err("read change blocks", e))?;
        while let Some(row) = rows.next().map_err(|e| self.err("read change blocks", e))? {
            let block = (|| -> rusqlite::Result<_> {
                Ok((
                    row.get::<_, i64>(0)? as u64,
                    row.get::<_, i64>(1)? as u64,
                    row.get::<_, String>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, i64>(4)? as usize,
                ))
            })()
            .map_err(|e| self.err("read change blocks", e))?;
            let (first, last, dataset, lens, payload_len) = block;
            if let Some(problem) = super::blocks::block_problem(first, last, &lens, payload_len) {
                problems.push(problem);
            }
            match next {
                None if first > meta.acked_through + 1 || last <= meta.acked_through => problems.push(format!(
                    "oldest change block holds seq {first}..={last}, expected one holding {}",
                    meta.acked_through + 1
                )),
                Some(want) if first != want => {
                    problems.push(format!("sequence has gaps: seq {want} is followed by block {first}..={last}"))
                }
                _ => {}
            }
            count += (last + 1).saturating_sub(first.max(meta.acked_through + 1));
            next = Some(last + 1);
            if !pending.contains(&dataset) {
                pending.push(dataset);
            }
        }
        if let Some(next) = next
            && next != meta.next_seq
        {
            problems.push(format!("newest change is seq {}, but next_seq is {}", next - 1, meta.next_seq));
        }
        if count != meta.depth() {
            problems.push(format!(
                "holds {count} changes but meta says {} (acked_through {}, next_seq {})",
                meta.depth(),
                meta.acked_through,
                meta.next_seq
            ));
        }
        for d in pending {
            if let Err(e) = self.schemas(std::slice::from_ref(&d)) {
                problems.push(e.to_string());
            }
        }
        Ok(VerifyReport { changes: count, problems })
    }
}
