//! The embedded SQLite warehouse: one file, one writer connection on the applier thread, one
//! read-only connection for status.
//!
//! ## Tables
//! - one table per dataset, named by the dataset: the source's columns (types from
//!   [`values::sql_type`]), `PRIMARY KEY` on the key columns, plus `_kho_agent` (who wrote the row
//!   last), `_kho_seq` (that change's sequence), `_kho_applied_at` (RFC 3339 UTC) and
//!   `_kho_deleted` (0/1; deletes are soft, the row's values are kept);
//! - `_kho_ledger(agent PRIMARY KEY, applied_seq, updated_at)`: the highest sequence applied per
//!   agent — the exactly-once record;
//! - `_kho_datasets(dataset PRIMARY KEY, key_json, columns_json, created_at, last_change_at,
//!   last_seq, last_agent)`: the catalogue the hub creates tables from and checks batches against;
//! - `_kho_agents(agent PRIMARY KEY, last_seen_at, version, outbox_depth, acked_through,
//!   report_json)`: each agent's latest heartbeat;
//! - `_kho_observations`, `_kho_freshness_history`, `_kho_agent_history` and `_kho_meta`:
//!   freshness evidence, dataset and agent transitions, hub bookkeeping (see [`freshness`]).
//!
//! ## Crash story
//! WAL journal with `synchronous = FULL`: `COMMIT` returns only after the WAL is on disk. Rows,
//! catalogue and ledger of a batch are written in the same transaction, and the hub acknowledges
//! only after `COMMIT` returned. After a kill -9 the file holds exactly the committed groups; an
//! agent whose batch was lost resends it, and the ledger tells the hub which part is new. Nothing is
//! acknowledged that is not on disk, and nothing on disk is applied twice.

mod checks;
mod freshness;
mod quality;
mod reader;
mod rows;
mod table;
mod values;

use std::collections::HashMap;
use std::path::Path;

use kho_shared::protocol::{Change, DatasetSchema, Heartbeat, Op, QuarantinedRow};
use rusqlite::{Connection, OptionalExtension, params};

pub use reader::SqliteReader;
use table::TableInfo;

use super::{AgentTransition, ApplyStats, DatasetActivity, StoredTransition, Warehouse, WarehouseError};
use crate::warehouse::quote_ident;

/// Prepared statements kept per connection: a few per dataset (upsert, delete) plus the
/// metadata statements; 256 covers a province's datasets with room to spare.
const STATEMENT_CACHE_CAPACITY: usize = 256;
/// Page cache of the writer, in KiB (negative = KiB for SQLite): big enough to keep a large
/// table's upper b-tree levels hot, small enough to keep the hub's memory modest.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// How long a statement waits for a lock held by another process (e.g. an operator's sqlite3
/// shell) before failing the transaction, which the agent then retries.
const BUSY_TIMEOUT_MS: u64 = 5_000;

const METADATA_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _kho_ledger (
    agent TEXT PRIMARY KEY,
    applied_seq INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _kho_datasets (
    dataset TEXT PRIMARY KEY,
    key_json TEXT NOT NULL,
    columns_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_change_at TEXT,
    last_seq INTEGER,
    last_agent TEXT
);
CREATE TABLE IF NOT EXISTS _kho_agents (
    agent TEXT PRIMARY KEY,
    last_seen_at TEXT NOT NULL,
    version TEXT,
    outbox_depth INTEGER,
    acked_through INTEGER,
    report_json TEXT
);
";

/// Adds `_kho_agents.transport` to a warehouse made before it existed (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`). Also used by the agent registry, which may open the file first.
pub fn add_transport_column(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('_kho_agents') WHERE name = 'transport'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE _kho_agents ADD COLUMN transport TEXT")?;
    }
    Ok(())
}

/// The writer side of the SQLite warehouse.
pub struct SqliteWarehouse {
    conn: Connection,
    /// The catalogue as of the current transaction; reloaded whenever work is rolled back.
    tables: HashMap<String, TableInfo>,
    /// Columns indexed for quality lookups on this connection.
    quality_indexed: std::collections::HashSet<(String, String)>,
}

fn db(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> WarehouseError {
    let context = context.into();
    move |source| WarehouseError::database(context, source)
}

impl SqliteWarehouse {
    /// Opens (creating if needed) the warehouse file and its metadata tables.
    pub fn open(path: &Path) -> Result<SqliteWarehouse, WarehouseError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WarehouseError::Io { path: dir.to_path_buf(), source })?;
        }
        let conn = Connection::open(path).map_err(db(format!("open {}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(db("busy_timeout"))?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -{WRITER_CACHE_KIB}; \
             PRAGMA temp_store = MEMORY;"
        ))
        .map_err(db("pragmas"))?;
        conn.execute_batch(METADATA_SCHEMA).map_err(db("create metadata tables"))?;
        add_transport_column(&conn).map_err(db("add _kho_agents.transport"))?;
        conn.execute_batch(freshness::SCHEMA).map_err(db("create freshness tables"))?;
        conn.execute_batch(quality::SCHEMA).map_err(db("create quality tables"))?;
        conn.execute_batch(checks::SCHEMA).map_err(db("create quality tables"))?;
        conn.execute_batch(crate::registry::sqlite::AUDIT_SCHEMA).map_err(db("create the audit table"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let mut wh = SqliteWarehouse { conn, tables: HashMap::new(), quality_indexed: Default::default() };
        wh.reload_catalogue()?;
        Ok(wh)
    }

    fn reload_catalogue(&mut self) -> Result<(), WarehouseError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT dataset, key_json, columns_json FROM _kho_datasets")
            .map_err(db("read catalogue"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(db("read catalogue"))?;
        let mut tables = HashMap::new();
        for row in rows {
            let (dataset, key_json, columns_json) = row.map_err(db("read catalogue"))?;
            let parsed =
                serde_json::from_str(&key_json).and_then(|key| Ok((key, serde_json::from_str(&columns_json)?)));
            match parsed {
                Ok((key, columns)) => {
                    tables.insert(dataset, TableInfo { key, columns });
                }
                // A hand-edited catalogue row: refuse that dataset's batches rather than guess.
                Err(e) => {
                    tracing::error!(dataset, error = %e, "unreadable _kho_datasets row; its batches will fail")
                }
            }
        }
        drop(stmt);
        self.tables = tables;
        Ok(())
    }

    fn exec(&self, sql: &str, context: &str) -> Result<(), WarehouseError> {
        self.conn.execute_batch(sql).map_err(db(context))
    }
}

impl Warehouse for SqliteWarehouse {
    fn begin(&mut self) -> Result<(), WarehouseError> {
        self.exec("BEGIN IMMEDIATE", "begin")
    }

    fn commit(&mut self) -> Result<(), WarehouseError> {
        let result = self.exec("COMMIT", "commit");
        if result.is_err() {
            self.rollback();
        }
        result
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback failed");
        }
        if let Err(e) = self.reload_catalogue() {
            tracing::error!(error = %e, "could not reload the catalogue after a rollback");
        }
    }

    fn savepoint(&mut self) -> Result<(), WarehouseError> {
        self.exec("SAVEPOINT kho_batch", "savepoint")
    }

    fn release_savepoint(&mut self) -> Result<(), WarehouseError> {
        self.exec("RELEASE kho_batch", "release savepoint")
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), WarehouseError> {
        self.exec("ROLLBACK TO kho_batch; RELEASE kho_batch", "rollback to savepoint")?;
        self.reload_catalogue()
    }

    fn applied_seq(&mut self, agent: &str) -> Result<u64, WarehouseError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT applied_seq FROM _kho_ledger WHERE agent = ?1")
            .map_err(db("read ledger"))?;
        let seq: Option<i64> = stmt.query_row([agent], |r| r.get(0)).optional().map_err(db("read ledger"))?;
        Ok(seq.map_or(0, |s| s.max(0) as u64))
    }

    fn set_applied_seq(&mut self, agent: &str, seq: u64, now: &str) -> Result<(), WarehouseError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO _kho_ledger (agent, applied_seq, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (agent) DO UPDATE SET applied_seq = excluded.applied_seq, updated_at = excluded.updated_at",
            )
            .map_err(db("write ledger"))?;
        stmt.execute(params![agent, seq as i64, now]).map_err(db("write ledger"))?;
        Ok(())
    }

    fn prepare_dataset(&mut self, schema: &DatasetSchema, now: &str) -> Result<(), WarehouseError> {
        let dataset = schema.dataset.as_str();
        let conflict = |problem: String| WarehouseError::SchemaConflict { dataset: dataset.to_string(), problem };
        let Some(table) = self.tables.get(dataset) else {
            let exists: bool = self
                .conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE lower(name) = lower(?1)", [dataset], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(db("check table"))?
                > 0;
            if exists {
                return Err(conflict("a table or index with this name exists but was not created by Kho".into()));
            }
            self.exec(&table::create_table_sql(schema), &format!("create table {dataset}"))?;
            let key_json = serde_json::to_string(&schema.key).unwrap_or_default();
            let columns_json = serde_json::to_string(&schema.columns).unwrap_or_default();
            self.conn
                .execute(
                    "INSERT INTO _kho_datasets (dataset, key_json, columns_json, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![dataset, key_json, columns_json, now],
                )
                .map_err(db("write catalogue"))?;
            tracing::info!(dataset, columns = schema.columns.len(), "created warehouse table");
            self.tables
                .insert(dataset.to_string(), TableInfo { key: schema.key.clone(), columns: schema.columns.clone() });
            return Ok(());
        };
        let evolution = table::plan_evolution(table, schema).map_err(conflict)?;
        let Some(columns) = evolution.columns else {
            return Ok(());
        };
        for col in &evolution.add {
            self.exec(&table::add_column_sql(dataset, col), &format!("add column {dataset}.{}", col.name))?;
            tracing::info!(dataset, column = %col.name, ty = col.ty.as_str(), "added warehouse column");
        }
        let columns_json = serde_json::to_string(&columns).unwrap_or_default();
        self.conn
            .execute("UPDATE _kho_datasets SET columns_json = ?2 WHERE dataset = ?1", params![dataset, columns_json])
            .map_err(db("write catalogue"))?;
        if let Some(t) = self.tables.get_mut(dataset) {
            t.columns = columns;
        }
        Ok(())
    }

    fn apply_changes(
        &mut self,
        agent: &str,
        schemas: &[DatasetSchema],
        changes: &[Change],
        now: &str,
    ) -> Result<ApplyStats, WarehouseError> {
        let mut stats = ApplyStats::default();
        let mut last_seq: HashMap<&str, u64> = HashMap::new();
        let mut binds = Vec::new();
        // Changes come in runs of one dataset and op; each run uses one cached statement.
        let mut start = 0;
        while start < changes.len() {
            let (dataset, op) = (changes[start].dataset.as_str(), changes[start].op);
            let end = changes[start..]
                .iter()
                .position(|c| c.dataset != dataset || c.op != op)
                .map_or(changes.len(), |n| start + n);
            let run = &changes[start..end];
            start = end;
            let Some(schema) = schemas.iter().find(|s| s.dataset == dataset) else {
                // Batch::validate guarantees a schema; keep going safely if it ever did not.
                return Err(WarehouseError::SchemaConflict {
                    dataset: dataset.into(),
                    problem: "no schema in batch".into(),
                });
            };
            let sql = match op {
                Op::Upsert => table::upsert_sql(schema),
                Op::Delete => table::soft_delete_sql(schema),
            };
            let context = || format!("apply {op:?} to {dataset}");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| db(context())(e))?;
            for change in run {
                binds.clear();
                let seq = change.seq as i64;
                match op {
                    Op::Upsert => {
                        let row = change.row.as_ref();
                        for col in &schema.columns {
                            binds.push(values::to_bind(col.ty, row.and_then(|r| r.get(&col.name))));
                        }
                        binds.push(values::Bind::Text(agent));
                        binds.push(values::Bind::Int(seq));
                        binds.push(values::Bind::Text(now));
                        stats.upserts += 1;
                    }
                    Op::Delete => {
                        binds.push(values::Bind::Text(agent));
                        binds.push(values::Bind::Int(seq));
                        binds.push(values::Bind::Text(now));
                        let key = change.key.as_ref();
                        for k in &schema.key {
                            let ty = schema.column_type(k).unwrap_or(kho_shared::types::ColumnType::Text);
                            binds.push(values::to_bind(ty, key.and_then(|m| m.get(k))));
                        }
                        stats.deletes += 1;
                    }
                }
                for (i, b) in binds.iter().enumerate() {
                    stmt.raw_bind_parameter(i + 1, b).map_err(|e| db(context())(e))?;
                }
                stmt.raw_execute().map_err(|e| db(context())(e))?;
                last_seq.insert(dataset, change.seq);
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE _kho_datasets SET last_change_at = ?2, last_seq = ?3, last_agent = ?4 WHERE dataset = ?1",
            )
            .map_err(db("write catalogue"))?;
        for (dataset, seq) in last_seq {
            stmt.execute(params![dataset, now, seq as i64, agent]).map_err(db("write catalogue"))?;
        }
        Ok(stats)
    }

    fn record_heartbeat(&mut self, hb: &Heartbeat, transport: &str, now: &str) -> Result<(), WarehouseError> {
        let report = serde_json::to_string(&hb.datasets).unwrap_or_default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO _kho_agents (agent, last_seen_at, version, outbox_depth, acked_through, report_json, transport) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (agent) DO UPDATE SET last_seen_at = excluded.last_seen_at, \
                 version = excluded.version, outbox_depth = excluded.outbox_depth, \
                 acked_through = excluded.acked_through, report_json = excluded.report_json, transport = excluded.transport",
            )
            .map_err(db("write heartbeat"))?;
        stmt.execute(params![
            hb.agent,
            now,
            hb.version,
            hb.outbox_depth as i64,
            hb.acked_through as i64,
            report,
            transport
        ])
        .map_err(db("write heartbeat"))?;
        drop(stmt);
        let applied = self.applied_seq(&hb.agent)?;
        freshness::record_syncs(&self.conn, &hb.agent, applied, &hb.datasets, now)
    }

    fn record_activity(&mut self, activity: &[DatasetActivity], now: &str) -> Result<(), WarehouseError> {
        freshness::record_activity(&self.conn, activity, now)
    }

    fn promote_syncs(&mut self, agent: &str, applied: u64) -> Result<(), WarehouseError> {
        freshness::promote_syncs(&self.conn, agent, applied)
    }

    fn record_agent_transitions(&mut self, rows: &[AgentTransition]) -> Result<(), WarehouseError> {
        freshness::record_agent_transitions(&self.conn, rows)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), WarehouseError> {
        freshness::set_meta(&self.conn, key, value)
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, WarehouseError> {
        freshness::read_meta(&self.conn, key)
    }

    fn append_audit(&mut self, entry: &crate::audit::Entry) -> Result<(), WarehouseError> {
        crate::registry::sqlite::append_audit_in(&self.conn, entry).map(drop).map_err(db("append to the audit log"))
    }

    fn record_transitions(&mut self, rows: &[StoredTransition]) -> Result<(), WarehouseError> {
        freshness::record_transitions(&self.conn, rows)
    }

    fn record_quality(
        &mut self,
        dataset: &str,
        verdicts: &[&crate::quality::eval::RowVerdict],
        now: &str,
    ) -> Result<(), WarehouseError> {
        quality::record(&self.conn, dataset, verdicts, now)
    }

    fn quarantine(
        &mut self,
        dataset: &str,
        agent: &str,
        held: &[super::HeldRow<'_>],
        clean: &[&str],
        now: &str,
    ) -> Result<Vec<String>, WarehouseError> {
        quality::quarantine(&self.conn, dataset, agent, held, clean, now)
    }

    fn quarantined_from(
        &mut self,
        agent: &str,
        first: u64,
        last: u64,
        limit: usize,
    ) -> Result<Vec<QuarantinedRow>, WarehouseError> {
        quality::quarantined_from(&self.conn, agent, first, last, limit)
    }

    fn value_exists(&mut self, dataset: &str, column: &str, value: &str) -> Result<bool, WarehouseError> {
        quality::exists(&self.conn, &mut self.quality_indexed, self.tables.get(dataset), dataset, column, value)
    }

    fn values_exist(&mut self, dataset: &str, column: &str, values: &[&str]) -> Result<Vec<bool>, WarehouseError> {
        quality::existing(&self.conn, &mut self.quality_indexed, self.tables.get(dataset), dataset, column, values)
    }

    fn value_taken(
        &mut self,
        dataset: &str,
        column: &str,
        value: &str,
        key: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, WarehouseError> {
        let table = self.tables.get(dataset);
        quality::taken_by_other(&self.conn, &mut self.quality_indexed, table, dataset, column, value, key)
    }

    fn live_rows(&mut self, dataset: &str) -> Result<u64, WarehouseError> {
        checks::live_rows(&self.conn, self.tables.get(dataset), dataset)
    }

    fn full_check(&mut self, dataset: &str, check: &super::FullCheck) -> Result<Vec<super::Found>, WarehouseError> {
        checks::full_check(&self.conn, &mut self.quality_indexed, &self.tables, dataset, check)
    }

    fn replace_violations(
        &mut self,
        dataset: &str,
        rule: &str,
        column: Option<&str>,
        found: &[super::Found],
        now: &str,
    ) -> Result<(u64, u64), WarehouseError> {
        checks::replace_violations(&self.conn, dataset, rule, column, found, now)
    }

    fn rows_in_period(
        &mut self,
        dataset: &str,
        column: Option<&str>,
        start: &str,
        end: &str,
    ) -> Result<u64, WarehouseError> {
        let table = self.tables.get(dataset);
        checks::rows_in_period(&self.conn, &mut self.quality_indexed, table, dataset, column, start, end)
    }

    fn record_quality_history(&mut self, rows: &[super::QualityPeriod]) -> Result<(), WarehouseError> {
        checks::record_history(&self.conn, rows)
    }

    fn release_memory(&mut self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory") {
            tracing::debug!(error = %e, "could not release the writer's page cache");
        }
    }
}

/// Rows of a dataset table by state, for tests and tools: `(live, deleted)`.
pub fn count_rows(conn: &Connection, dataset: &str) -> rusqlite::Result<(u64, u64)> {
    conn.query_row(
        &format!(
            "SELECT coalesce(sum(\"_kho_deleted\" = 0), 0), coalesce(sum(\"_kho_deleted\" <> 0), 0) FROM {}",
            quote_ident(dataset)
        ),
        [],
        |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64)),
    )
}

#[cfg(test)]
mod tests;
