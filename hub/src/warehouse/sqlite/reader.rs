//! The read-only side of the SQLite warehouse: status queries on their own connection.
//!
//! In WAL mode readers see the last committed state and never block the writer, so a status page
//! counting a million rows does not delay any agent's acknowledgement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kho_shared::protocol::DatasetReport;
use rusqlite::{Connection, OpenFlags};

use super::{count_rows, db};
use crate::warehouse::rows::{RecentChange, RowChunk, RowQuery};
use crate::warehouse::{
    AgentStatus, AgentTransition, DatasetStatus, Evidence, StoredTransition, WarehouseError, WarehouseReader,
    WarehouseStatus,
};

/// Status reader over a read-only connection.
pub struct SqliteReader {
    conn: Mutex<Connection>,
    /// Open-data reads open their own connection on this file.
    path: PathBuf,
}

impl SqliteReader {
    /// Opens the warehouse file read-only; the writer must have created it.
    pub fn open(path: &Path) -> Result<SqliteReader, WarehouseError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn =
            Connection::open_with_flags(path, flags).map_err(db(format!("open {} read-only", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db("busy_timeout"))?;
        Ok(SqliteReader { conn: Mutex::new(conn), path: path.to_path_buf() })
    }
}

impl WarehouseReader for SqliteReader {
    fn read_live(
        &self,
        dataset: &str,
        query: &RowQuery,
        emit: &mut dyn FnMut(RowChunk) -> bool,
    ) -> Result<bool, WarehouseError> {
        super::rows::read_live(&self.path, dataset, query, emit)
    }

    fn recent_changes(&self, dataset: &str, limit: usize) -> Result<Vec<RecentChange>, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        super::rows::recent_changes(&conn, dataset, limit)
    }

    fn quality(&self, latest: usize) -> Result<crate::warehouse::QualityData, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.unchecked_transaction().map_err(db("quality"))?;
        let data = super::quality::read(&tx, latest)?;
        tx.finish().map_err(db("quality"))?;
        Ok(data)
    }

    fn quality_history(
        &self,
        dataset: &str,
        limit: usize,
    ) -> Result<Vec<crate::warehouse::QualityPeriod>, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        super::checks::read_history(&conn, dataset, limit)
    }

    fn evidence(&self) -> Result<Evidence, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.unchecked_transaction().map_err(db("evidence"))?;
        let ev = super::freshness::read_evidence(&tx)?;
        tx.finish().map_err(db("evidence"))?;
        Ok(ev)
    }

    fn transitions(&self) -> Result<Vec<StoredTransition>, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        super::freshness::read_transitions(&conn)
    }

    fn agent_transitions(&self) -> Result<Vec<AgentTransition>, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        super::freshness::read_agent_transitions(&conn)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        super::freshness::read_meta(&conn, key)
    }

    fn status(&self) -> Result<WarehouseStatus, WarehouseError> {
        let conn = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One read transaction: counts and catalogue are from the same commit.
        let tx = conn.unchecked_transaction().map_err(db("status"))?;
        let mut datasets = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT dataset, key_json, columns_json, created_at, last_change_at, last_seq, last_agent \
                     FROM _kho_datasets ORDER BY dataset",
                )
                .map_err(db("status"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(db("status"))?;
            for row in rows {
                let (dataset, key_json, columns_json, created_at, last_change_at, last_seq, last_agent) =
                    row.map_err(db("status"))?;
                let (rows, deleted_rows) = count_rows(&tx, &dataset).map_err(db(format!("count {dataset}")))?;
                datasets.push(DatasetStatus {
                    rows,
                    deleted_rows,
                    key: serde_json::from_str(&key_json).unwrap_or_default(),
                    columns: serde_json::from_str(&columns_json).unwrap_or_default(),
                    created_at,
                    last_change_at,
                    last_seq: last_seq.map(|s| s.max(0) as u64),
                    last_agent,
                    schema_error: None,
                    dataset,
                });
            }
        }
        let mut agents: BTreeMap<String, AgentStatus> = BTreeMap::new();
        let blank = |id: &str| AgentStatus {
            id: id.to_string(),
            applied_through: 0,
            applied_at: None,
            last_seen_at: None,
            version: None,
            outbox_depth: None,
            acked_through: None,
            report: None,
        };
        {
            let mut stmt =
                tx.prepare_cached("SELECT agent, applied_seq, updated_at FROM _kho_ledger").map_err(db("status"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
                .map_err(db("status"))?;
            for row in rows {
                let (id, seq, at) = row.map_err(db("status"))?;
                let a = agents.entry(id.clone()).or_insert_with(|| blank(&id));
                a.applied_through = seq.max(0) as u64;
                a.applied_at = Some(at);
            }
            let mut stmt = tx
                .prepare_cached(
                    "SELECT agent, last_seen_at, version, outbox_depth, acked_through, report_json FROM _kho_agents",
                )
                .map_err(db("status"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })
                .map_err(db("status"))?;
            for row in rows {
                let (id, seen, version, depth, acked, report) = row.map_err(db("status"))?;
                let a = agents.entry(id.clone()).or_insert_with(|| blank(&id));
                a.last_seen_at = Some(seen);
                a.version = version;
                a.outbox_depth = depth.map(|d| d.max(0) as u64);
                a.acked_through = acked.map(|d| d.max(0) as u64);
                a.report = report.and_then(|r| serde_json::from_str::<Vec<DatasetReport>>(&r).ok());
            }
        }
        tx.finish().map_err(db("status"))?;
        Ok(WarehouseStatus { datasets, agents: agents.into_values().collect() })
    }
}
