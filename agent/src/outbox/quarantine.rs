//! Rows the hub held in quarantine (its `reject` data-quality rules), as its acks reported them,
//! so `kho-agent status` can show the department which rows to fix. A row leaves the list when
//! an ack reports it released (it came in clean, or was deleted at the source).

use kho_shared::protocol::{QuarantinedRow, RowRef};
use rusqlite::params;
use serde::Serialize;

use super::{Outbox, OutboxError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS quarantine (
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (dataset, key)
);
";

/// One row held by the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub dataset: String,
    pub key: String,
    pub reason: String,
    pub at_ms: i64,
}

/// Most rows `status` lists.
pub const STATUS_LIMIT: usize = 200;

impl Outbox {
    /// Records what an ack said about quarantine.
    pub fn record_quarantine(
        &mut self,
        held: &[QuarantinedRow],
        released: &[RowRef],
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        self.conn.execute_batch(SCHEMA).map_err(|e| self.err("create quarantine table", e))?;
        let tx = self.conn.transaction().map_err(|e| super::sql_err(&self.path, "begin quarantine", e))?;
        for r in released {
            tx.execute("DELETE FROM quarantine WHERE dataset = ?1 AND key = ?2", params![r.dataset, r.key])
                .map_err(|e| super::sql_err(&self.path, "release quarantined row", e))?;
        }
        for h in held {
            tx.execute(
                "INSERT OR REPLACE INTO quarantine (dataset, key, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![h.dataset, h.key, h.reason, now_ms],
            )
            .map_err(|e| super::sql_err(&self.path, "record quarantined row", e))?;
        }
        tx.commit().map_err(|e| super::sql_err(&self.path, "commit quarantine", e))
    }

    /// The rows the hub holds, newest first (at most [`STATUS_LIMIT`]), and how many in all.
    pub fn quarantined(&self) -> Result<(Vec<Quarantined>, u64), OutboxError> {
        let exists: bool = self
            .conn
            .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = 'quarantine'", [], |r| r.get(0))
            .map_err(|e| self.err("read quarantine", e))?;
        if !exists {
            return Ok((Vec::new(), 0));
        }
        let total: i64 = self
            .conn
            .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
            .map_err(|e| self.err("read quarantine", e))?;
        let mut stmt = self
            .conn
            .prepare("SELECT dataset, key, reason, at_ms FROM quarantine ORDER BY at_ms DESC, dataset, key LIMIT ?1")
            .map_err(|e| self.err("read quarantine", e))?;
        let rows = stmt
            .query_map([STATUS_LIMIT as i64], |r| {
                Ok(Quarantined { dataset: r.get(0)?, key: r.get(1)?, reason: r.get(2)?, at_ms: r.get(3)? })
            })
            .map_err(|e| self.err("read quarantine", e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.err("read quarantine", e))?);
        }
        Ok((out, total.max(0) as u64))
    }
}
