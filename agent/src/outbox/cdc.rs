//! Change-data-capture position of `mode = "cdc"` datasets (table `cdc_state`).
//!
//! `lsn` is the end LSN of the last source transaction whose changes are all in the outbox (or a
//! keepalive position with nothing pending before it); the agent confirms to the server only
//! positions stored here, in the same transaction as the changes. A source transaction too large
//! for one capture chunk is stored across several: `partial_lsn` is its commit LSN and
//! `partial_changes` how many of its row messages are already stored, so a replay after a crash
//! skips exactly those. `lsn` NULL means "no consistent snapshot yet": the next run takes one.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Outbox, OutboxError};

pub(crate) const CDC_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cdc_state (
    dataset TEXT PRIMARY KEY,
    slot TEXT NOT NULL,
    lsn INTEGER,
    partial_lsn INTEGER,
    partial_changes INTEGER NOT NULL DEFAULT 0,
    lag_bytes INTEGER,
    lag_ms INTEGER,
    updated_at_ms INTEGER
);
";

/// Stored replication position of one dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CdcPosition {
    /// End LSN of the last fully stored source transaction; `None` before the initial snapshot.
    pub lsn: Option<u64>,
    /// A partly stored transaction: (commit LSN, row messages stored).
    pub partial: Option<(u64, u64)>,
}

/// What `status` and the heartbeat show for a CDC dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CdcStatus {
    pub slot: String,
    /// The stored position as PostgreSQL writes it (`16/B374D848`).
    pub lsn: Option<String>,
    /// WAL the slot holds back on the server: current WAL position minus the confirmed position.
    pub lag_bytes: Option<u64>,
    /// Age of the oldest source change received but not yet in the outbox (0 when caught up).
    pub lag_seconds: Option<f64>,
    pub updated_at_ms: Option<i64>,
}

/// `X/Y` text form of an LSN.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Outbox {
    /// The stored position of `dataset` (default when it never streamed).
    pub fn cdc_position(&self, dataset: &str) -> Result<CdcPosition, OutboxError> {
        let row: Option<(Option<i64>, Option<i64>, i64)> = self
            .conn
            .query_row("SELECT lsn, partial_lsn, partial_changes FROM cdc_state WHERE dataset = ?1", [dataset], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.err("read cdc position", e))?;
        Ok(match row {
            None => CdcPosition::default(),
            Some((lsn, partial, n)) => {
                CdcPosition { lsn: lsn.map(|l| l as u64), partial: partial.map(|p| (p as u64, n.max(0) as u64)) }
            }
        })
    }

    /// Stores the position (inside the open chunk when there is one, so it commits with the
    /// changes). `partial` is the transaction stored in part, if any.
    pub fn cdc_store(
        &self,
        dataset: &str,
        slot: &str,
        lsn: u64,
        partial: Option<(u64, u64)>,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "INSERT INTO cdc_state (dataset, slot, lsn, partial_lsn, partial_changes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (dataset) DO UPDATE SET slot = ?2, lsn = ?3, partial_lsn = ?4, partial_changes = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    dataset,
                    slot,
                    to_i64(lsn),
                    partial.map(|p| to_i64(p.0)),
                    to_i64(partial.map_or(0, |p| p.1))
                ])
            })
            .map_err(|e| self.err("store cdc position", e))?;
        Ok(())
    }

    /// Records the lag figures of a streaming dataset.
    pub fn cdc_record_lag(
        &self,
        dataset: &str,
        lag_bytes: Option<u64>,
        lag_ms: u64,
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        self.conn
            .prepare_cached(
                "UPDATE cdc_state SET lag_bytes = coalesce(?2, lag_bytes), lag_ms = ?3, updated_at_ms = ?4 WHERE dataset = ?1",
            )
            .and_then(|mut s| s.execute(params![dataset, lag_bytes.map(to_i64), to_i64(lag_ms), now_ms]))
            .map_err(|e| self.err("record cdc lag", e))?;
        Ok(())
    }

    /// Forgets the position of `dataset` (`kho-agent resnapshot`): the next run drops the slot,
    /// takes a new consistent snapshot — compared with the stored row hashes, which streaming
    /// keeps current, so it upserts what differs and deletes what is gone — and streams from
    /// there. Returns whether the dataset had a position.
    pub fn cdc_reset(&self, dataset: &str) -> Result<bool, OutboxError> {
        let n = self
            .conn
            .execute(
                "UPDATE cdc_state SET lsn = NULL, partial_lsn = NULL, partial_changes = 0 WHERE dataset = ?1",
                [dataset],
            )
            .map_err(|e| self.err("reset cdc position", e))?;
        self.conn
            .execute("UPDATE datasets SET last_error = NULL WHERE name = ?1", [dataset])
            .map_err(|e| self.err("clear dataset error", e))?;
        Ok(n > 0)
    }

    /// Status of a CDC dataset, if it has state.
    pub fn cdc_status(&self, dataset: &str) -> Result<Option<CdcStatus>, OutboxError> {
        self.conn
            .query_row(
                "SELECT slot, lsn, lag_bytes, lag_ms, updated_at_ms FROM cdc_state WHERE dataset = ?1",
                [dataset],
                |r| {
                    Ok(CdcStatus {
                        slot: r.get(0)?,
                        lsn: r.get::<_, Option<i64>>(1)?.map(|l| lsn_text(l as u64)),
                        lag_bytes: r.get::<_, Option<i64>>(2)?.map(|b| b.max(0) as u64),
                        lag_seconds: r.get::<_, Option<i64>>(3)?.map(|ms| ms.max(0) as f64 / 1000.0),
                        updated_at_ms: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err("read cdc status", e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn positions_round_trip_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
        assert_eq!(ob.cdc_position("d").unwrap(), CdcPosition::default());
        ob.cdc_store("d", "s", 0x16_B374_D848, Some((0x16_B374_F000, 5000))).unwrap();
        let p = ob.cdc_position("d").unwrap();
        assert_eq!(p.lsn, Some(0x16_B374_D848));
        assert_eq!(p.partial, Some((0x16_B374_F000, 5000)));
        ob.cdc_record_lag("d", Some(1234), 1500, 7).unwrap();
        let s = ob.cdc_status("d").unwrap().unwrap();
        assert_eq!(s.lsn.as_deref(), Some("16/B374D848"));
        assert_eq!((s.lag_bytes, s.lag_seconds), (Some(1234), Some(1.5)));
        assert!(ob.cdc_reset("d").unwrap());
        assert_eq!(ob.cdc_position("d").unwrap(), CdcPosition::default());
        assert!(!ob.cdc_reset("other").unwrap());
    }
}
