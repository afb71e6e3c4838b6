//! The read-only side of the PostgreSQL warehouse: status and freshness questions on a
//! connection of their own, each in one `REPEATABLE READ READ ONLY` transaction so counts,
//! catalogue and ledger come from the same snapshot. Callers run these on the blocking pool (the
//! synchronous client must never run on an async worker).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kho_shared::protocol::DatasetReport;
use postgres::{Client, Transaction};

use super::{Conflicts, Settings, connect, db, rfc3339, table};
use crate::warehouse::rows::{RecentChange, RowChunk, RowQuery};
use crate::warehouse::{
    AgentStatus, AgentTransition, DatasetStatus, Evidence, StoredTransition, WarehouseError, WarehouseReader,
    WarehouseStatus,
};

/// Status reader over its own connection (reopened if it breaks).
pub struct PostgresReader {
    settings: Arc<Settings>,
    client: Mutex<Option<Client>>,
    conflicts: Conflicts,
}

impl PostgresReader {
    pub fn open(settings: Arc<Settings>, conflicts: Conflicts) -> Result<PostgresReader, WarehouseError> {
        let client = connect::connect(&settings, "reader")?;
        Ok(PostgresReader { settings, client: Mutex::new(Some(client)), conflicts })
    }

    /// The conflict board this reader shows, to share with writers opened later.
    pub fn conflicts(&self) -> Conflicts {
        Arc::clone(&self.conflicts)
    }

    /// Runs `f` in a read-only snapshot transaction. A connection found broken (before, or by
    /// this very query) is reopened and `f` tried once more: reads are safe to repeat.
    fn read<T>(&self, f: impl Fn(&mut Transaction<'_>) -> Result<T, WarehouseError>) -> Result<T, WarehouseError> {
        let mut slot = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut retried = false;
        loop {
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = Some(connect::connect(&self.settings, "reader")?);
            }
            let Some(client) = slot.as_mut() else {
                return Err(WarehouseError::database("reader", std::io::Error::other("no connection")));
            };
            match read_once(client, &f) {
                Err(_) if !retried && client.is_closed() => retried = true,
                other => return other,
            }
        }
    }
}

fn read_once<T>(
    client: &mut Client,
    f: &impl Fn(&mut Transaction<'_>) -> Result<T, WarehouseError>,
) -> Result<T, WarehouseError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db("read transaction"))?;
    let out = f(&mut tx)?;
    tx.commit().map_err(db("read transaction"))?;
    Ok(out)
}

impl Drop for PostgresReader {
    /// The synchronous client blocks on its own runtime when it closes, which must not happen on
    /// an async worker (the last handle may be dropped there at shutdown): close it on a thread.
    fn drop(&mut self) {
        let slot = self.client.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = slot.take()
            && let Ok(closer) =
                std::thread::Builder::new().name("kho-pg-reader-close".into()).spawn(move || drop(client))
        {
            let _ = closer.join();
        }
    }
}

impl WarehouseReader for PostgresReader {
    fn read_live(
        &self,
        dataset: &str,
        query: &RowQuery,
        emit: &mut dyn FnMut(RowChunk) -> bool,
    ) -> Result<bool, WarehouseError> {
        super::rows::read_live(&self.settings, dataset, query, emit)
    }

    fn recent_changes(&self, dataset: &str, limit: usize) -> Result<Vec<RecentChange>, WarehouseError> {
        self.read(|tx| super::rows::recent_changes(tx, dataset, limit))
    }

    fn quality(&self, latest: usize) -> Result<crate::warehouse::QualityData, WarehouseError> {
        self.read(|tx| super::quality::read(tx, latest))
    }

    fn quality_history(
        &self,
        dataset: &str,
        limit: usize,
    ) -> Result<Vec<crate::warehouse::QualityPeriod>, WarehouseError> {
        self.read(|tx| super::checks::read_history(tx, dataset, limit))
    }

    fn evidence(&self) -> Result<Evidence, WarehouseError> {
        self.read(|tx| super::freshness::read_evidence(tx))
    }

    fn transitions(&self) -> Result<Vec<StoredTransition>, WarehouseError> {
        self.read(|tx| super::freshness::read_transitions(tx))
    }

    fn agent_transitions(&self) -> Result<Vec<AgentTransition>, WarehouseError> {
        self.read(|tx| super::freshness::read_agent_transitions(tx))
    }

    fn meta(&self, key: &str) -> Result<Option<String>, WarehouseError> {
        self.read(|tx| super::freshness::read_meta(tx, key))
    }

    fn status(&self) -> Result<WarehouseStatus, WarehouseError> {
        let conflicts = self.conflicts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        self.read(|tx| {
            let sql = format!(
                "SELECT dataset, schema_name, key_json::text, columns_json::text, {}, {}, last_seq, last_agent \
                 FROM kho.datasets ORDER BY dataset",
                rfc3339("created_at"),
                rfc3339("last_change_at")
            );
            let mut datasets = Vec::new();
            for row in tx.query(&sql, &[]).map_err(db("status"))? {
                let dataset: String = row.get(0);
                let schema_name: String = row.get(1);
                let counts = tx
                    .query_one(
                        &format!(
                            "SELECT count(*) FILTER (WHERE NOT \"_kho_deleted\"), count(*) FILTER (WHERE \"_kho_deleted\") \
                             FROM {}",
                            table::qualified(&schema_name, &dataset)
                        ),
                        &[],
                    )
                    .map_err(db(format!("count {dataset}")))?;
                let key_json: String = row.get(2);
                let columns_json: String = row.get(3);
                datasets.push(DatasetStatus {
                    rows: counts.get::<_, i64>(0).max(0) as u64,
                    deleted_rows: counts.get::<_, i64>(1).max(0) as u64,
                    key: serde_json::from_str(&key_json).unwrap_or_default(),
                    columns: serde_json::from_str(&columns_json).unwrap_or_default(),
                    created_at: row.get(4),
                    last_change_at: row.get(5),
                    last_seq: row.get::<_, Option<i64>>(6).map(|s| s.max(0) as u64),
                    last_agent: row.get(7),
                    schema_error: conflicts.get(&dataset).cloned(),
                    dataset,
                });
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
            let sql = format!("SELECT agent, applied_seq, {} FROM kho.ledger", rfc3339("updated_at"));
            for row in tx.query(&sql, &[]).map_err(db("status"))? {
                let id: String = row.get(0);
                let a = agents.entry(id.clone()).or_insert_with(|| blank(&id));
                a.applied_through = row.get::<_, i64>(1).max(0) as u64;
                a.applied_at = row.get(2);
            }
            let sql = format!(
                "SELECT agent, {}, version, outbox_depth, acked_through, report_json::text FROM kho.agents",
                rfc3339("last_seen_at")
            );
            for row in tx.query(&sql, &[]).map_err(db("status"))? {
                let id: String = row.get(0);
                let a = agents.entry(id.clone()).or_insert_with(|| blank(&id));
                a.last_seen_at = row.get(1);
                a.version = row.get(2);
                a.outbox_depth = row.get::<_, Option<i64>>(3).map(|d| d.max(0) as u64);
                a.acked_through = row.get::<_, Option<i64>>(4).map(|d| d.max(0) as u64);
                let report: Option<String> = row.get(5);
                a.report = report.and_then(|r| serde_json::from_str::<Vec<DatasetReport>>(&r).ok());
            }
            Ok(WarehouseStatus { datasets, agents: agents.into_values().collect() })
        })
    }
}
