//! The PostgreSQL warehouse: a province's shared warehouse, queried directly by analysts and the
//! IOC. Selected by `[warehouse] kind = "postgres"`, `url = "postgres://…"`.
//!
//! ## Layout
//! - **One schema per department**: a dataset's table lives in the schema named by its
//!   catalogue department's code (`so_y_te."ho_so"`). A dataset the catalogue does not know (or
//!   no catalogue at all) goes to `warehouse.unassigned_schema` (default `public`). The schema is
//!   chosen when the table is created and recorded in `kho.datasets.schema_name`; moving a dataset
//!   to another department in the catalogue later does not move its table (an operator does that
//!   with `ALTER TABLE … SET SCHEMA` and an update of that row), so queries never break silently.
//! - **One table per dataset**: the source's columns typed from the portable set
//!   ([`values::pg_type`]), `PRIMARY KEY` from the dataset's key, then `_kho_agent`, `_kho_seq`,
//!   `_kho_applied_at` (timestamptz), `_kho_deleted` (deletes are soft; the values stay) and
//!   `_kho_invalid` (jsonb: cells that did not fit their column, as sent; see [`values`]).
//! - **`kho` schema** for hub metadata: `ledger(agent, applied_seq, updated_at)` — the
//!   exactly-once record; `datasets(dataset, schema_name, key_json, columns_json, created_at,
//!   last_change_at, last_seq, last_agent)` — the catalogue tables are created from, with each
//!   column's *stored* type; `agents` (latest heartbeats); `observations`, `freshness_history`,
//!   `agent_history` and `meta` ([`freshness`]); and the view `change_log(dataset, key, op, row,
//!   agent, seq, applied_at)` — every applied change, append-only, stored per batch in
//!   `change_batches` and pruned after `warehouse.history_retention` ([`history`]).
//!
//! ## Bulk path
//! Per batch and dataset: the last change per key is picked in Rust (a key changed several times
//! in one batch counts once, as its last change) and those rows are `COPY`ed (text format, every
//! cell checked by [`values`]) — straight into the table when they are all new keys, otherwise
//! through a temporary staging table and one `INSERT … SELECT … ON CONFLICT (key) DO UPDATE`
//! ([`merge`]). Every change (not only the last per key) also goes to the history ([`history`]).
//!
//! ## Exactly once and crash story
//! The applier's group is one PostgreSQL transaction (`BEGIN` … `COMMIT`), each batch in a
//! `SAVEPOINT`; the ledger row is written in it with the rows, the change log and the evidence.
//! The hub acknowledges only after `COMMIT` returned, so after a kill -9 of the hub (or a crash
//! of PostgreSQL) the database holds exactly the committed groups and the ledger says which
//! batches they were. A broken connection fails the group (the agents retry) and the next group
//! reconnects.
//!
//! ## Concurrency
//! Several hub instances may share one warehouse: each group first locks its agents' ledger rows
//! ([`ledger`]), so one agent's batches are never applied by two transactions at once; the
//! per-dataset metadata rows every batch updates are written at the end of the group, in one row
//! order ([`deferred`]), so groups overlap their `COPY`s and never deadlock on those rows.
//! Several writers ([`crate::apply::spawn_pool`]), each with its own connection, apply the batches
//! of different agents in parallel; one agent always goes to the same writer. DDL is serialised
//! across writers by a transaction-scoped advisory lock and by locking the dataset's
//! `kho.datasets` row, after which the writer re-reads the row, so a writer never acts on another's
//! stale catalogue.

mod binary;
mod checks;
pub mod connect;
mod copy_data;
mod deferred;
mod freshness;
mod history;
mod ledger;
mod merge;
mod numeric;
mod quality;
mod reader;
mod rows;
mod schema;
mod table;
mod values;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kho_shared::protocol::{Change, DatasetSchema, Heartbeat, Op, QuarantinedRow};
use postgres::{Client, GenericClient};

pub use connect::Settings;
pub use reader::PostgresReader;
use table::TableInfo;

use super::{AgentTransition, ApplyStats, DatasetActivity, StoredTransition, Warehouse, WarehouseError};
use crate::quality::eval::RowVerdict;

/// The catalogue's department for a dataset, if it has one.
pub type DepartmentOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Schema conflicts seen by the writers, per dataset, shown by the status API until that
/// dataset's schema is accepted again. In memory: the refused batch is resent, so after a restart
/// the conflict is found (and shown) again at once.
pub type Conflicts = Arc<Mutex<HashMap<String, String>>>;

/// Advisory-lock key that serialises DDL (metadata tables, new schemas and tables) across writers
/// and hubs: "kho" in ASCII.
pub const DDL_LOCK: i64 = 0x6b_68_6f;
/// How often the first writer prunes `kho.change_log`.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// COPY data is streamed to the server in pieces of about this size.
const COPY_CHUNK: usize = 1 << 20;
/// Batches with at least this many changes encode their history on a second thread.
const PARALLEL_HISTORY_CHANGES: usize = 2000;

pub(super) fn db(context: impl Into<String>) -> impl FnOnce(postgres::Error) -> WarehouseError {
    let context = context.into();
    move |source| WarehouseError::database(context, source)
}

/// SQL that renders a timestamptz column as RFC 3339 UTC with milliseconds (the hub's format).
pub(super) fn rfc3339(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// One writer of the PostgreSQL warehouse (there may be several, one per applier thread).
pub struct PostgresWarehouse {
    client: Client,
    settings: Arc<Settings>,
    department_of: DepartmentOf,
    conflicts: Conflicts,
    /// The catalogue as of the current transaction; reloaded whenever work is rolled back.
    tables: HashMap<String, TableInfo>,
    /// Names the staging tables of one transaction.
    stages: u64,
    /// Per dataset, whether its batches are tried with a direct `COPY` first ([`merge`]).
    direct: HashMap<String, merge::DirectPath>,
    /// Datasets whose table was found altered by hand (logged once per writer, [`merge`]).
    altered_tables: std::collections::HashSet<String>,
    /// Set on the one writer that prunes the change log, with the time it last did.
    pruned_at: Option<Option<Instant>>,
    /// Pruning happens only while this instance leads (`None`: always).
    leadership: Option<crate::leader::Leadership>,
    /// Between `BEGIN` and `COMMIT`/`ROLLBACK`, so a rollback is only sent when one is open.
    in_transaction: bool,
    /// Columns indexed for quality lookups (the indexes outlive the connection).
    quality_indexed: std::collections::HashSet<(String, String)>,
    /// Datasets whose catalogue row was re-read in this transaction for a quality lookup.
    refreshed: std::collections::HashSet<String>,
    /// Metadata writes of this transaction, made just before `COMMIT` ([`deferred`]).
    notes: deferred::Deferred,
}

impl PostgresWarehouse {
    /// Connects, creates the metadata tables if needed and reads the catalogue. `prunes`: this
    /// writer also prunes the change log (exactly one writer of a hub should).
    pub fn open(
        settings: Arc<Settings>,
        department_of: DepartmentOf,
        conflicts: Conflicts,
        prunes: bool,
    ) -> Result<PostgresWarehouse, WarehouseError> {
        let mut client = connect::connect(&settings, "writer")?;
        schema::create_metadata(&mut client)?;
        let mut wh = PostgresWarehouse {
            client,
            settings,
            department_of,
            conflicts,
            tables: HashMap::new(),
            stages: 0,
            direct: HashMap::new(),
            altered_tables: Default::default(),
            pruned_at: prunes.then_some(None),
            leadership: None,
            in_transaction: false,
            quality_indexed: Default::default(),
            refreshed: Default::default(),
            notes: Default::default(),
        };
        wh.reload_catalogue()?;
        Ok(wh)
    }

    fn exec(&mut self, sql: &str, context: &str) -> Result<(), WarehouseError> {
        self.client.batch_execute(sql).map_err(db(context))
    }

    fn note_conflict(&self, dataset: &str, problem: &str) {
        let mut board = self.conflicts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        board.insert(dataset.to_string(), problem.to_string());
    }

    fn clear_conflict(&self, dataset: &str) {
        let mut board = self.conflicts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        board.remove(dataset);
    }

    fn create_dataset(&mut self, schema: &DatasetSchema, now: &str) -> Result<(), WarehouseError> {
        let dataset = schema.dataset.as_str();
        let conflict = |problem: String| WarehouseError::SchemaConflict { dataset: dataset.to_string(), problem };
        self.client.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK]).map_err(db("DDL lock"))?;
        // Another writer may have created it while this one waited for the lock.
        if self.lock_table(dataset)?.is_some() {
            return self.evolve_dataset(schema);
        }
        let department = (self.department_of)(dataset);
        let schema_name = department.unwrap_or_else(|| self.settings.unassigned_schema.clone());
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table::qualified(&schema_name, dataset)])
            .map_err(db("check table"))?
            .get(0);
        if exists {
            return Err(conflict(format!(
                "a table {schema_name}.{dataset} exists but was not created by Kho; rename it or assign the \
                 dataset to another department"
            )));
        }
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; {}",
            crate::warehouse::quote_ident(&schema_name),
            table::create_table_sql(&schema_name, schema)
        );
        self.exec(&ddl, &format!("create table {schema_name}.{dataset}"))?;
        let key_json = serde_json::to_string(&schema.key).unwrap_or_default();
        let columns_json = serde_json::to_string(&schema.columns).unwrap_or_default();
        self.client
            .execute(
                "INSERT INTO kho.datasets (dataset, schema_name, key_json, columns_json, created_at) \
                 VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5::text::timestamptz)",
                &[&dataset, &schema_name, &key_json, &columns_json, &now],
            )
            .map_err(db("write catalogue"))?;
        tracing::info!(dataset, schema = %schema_name, columns = schema.columns.len(), "created warehouse table");
        self.tables.insert(
            dataset.to_string(),
            TableInfo { schema: schema_name, key: schema.key.clone(), columns: schema.columns.clone() },
        );
        Ok(())
    }

    fn evolve_dataset(&mut self, schema: &DatasetSchema) -> Result<(), WarehouseError> {
        let dataset = schema.dataset.as_str();
        let conflict = |problem: String| WarehouseError::SchemaConflict { dataset: dataset.to_string(), problem };
        let Some(info) = self.tables.get(dataset) else {
            return Err(conflict("dataset vanished from kho.datasets".into()));
        };
        let evolution = table::plan_evolution(info, schema).map_err(conflict)?;
        let Some(columns) = evolution.columns.clone() else {
            return Ok(());
        };
        let qualified = info.qualified(dataset);
        for sql in table::evolution_sql(&qualified, &evolution) {
            self.exec(&sql, &format!("alter table {qualified}"))?;
        }
        for c in &evolution.add {
            tracing::info!(dataset, column = %c.name, ty = c.ty.as_str(), "added warehouse column");
        }
        for c in &evolution.widen {
            tracing::info!(dataset, column = %c.name, ty = c.ty.as_str(), "widened warehouse column");
        }
        let columns_json = serde_json::to_string(&columns).unwrap_or_default();
        self.client
            .execute(
                "UPDATE kho.datasets SET columns_json = $2::text::jsonb WHERE dataset = $1",
                &[&dataset, &columns_json],
            )
            .map_err(db("write catalogue"))?;
        if let Some(t) = self.tables.get_mut(dataset) {
            t.columns = columns;
        }
        Ok(())
    }
}

impl Warehouse for PostgresWarehouse {
    fn begin(&mut self) -> Result<(), WarehouseError> {
        self.refreshed.clear();
        if self.client.is_closed() {
            tracing::warn!("warehouse connection lost; reconnecting");
            self.client = connect::connect(&self.settings, "writer")?;
            self.reload_catalogue()?;
        }
        if let Some(pruned_at) = self.pruned_at
            && self.leadership.as_ref().is_none_or(crate::leader::Leadership::is_leader)
            && pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY)
        {
            self.pruned_at = Some(Some(Instant::now()));
            match history::prune(&mut self.client, self.settings.history_retention) {
                Ok(n) if n > 0 => tracing::info!(rows = n, "pruned kho.change_log"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune kho.change_log; will retry later")
                }
            }
        }
        self.stages = 0;
        self.notes.clear();
        self.direct.values_mut().for_each(|d| d.loaded_new = false);
        self.exec("BEGIN", "begin")?;
        self.in_transaction = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), WarehouseError> {
        let result = self.finish_group().and_then(|()| self.exec("COMMIT", "commit"));
        self.in_transaction = false;
        if result.is_err() {
            // Forget what this transaction taught the catalogue cache.
            self.rollback();
        }
        result
    }

    fn rollback(&mut self) {
        // After a failed COMMIT the server has already ended the transaction.
        if self.in_transaction
            && !self.client.is_closed()
            && let Err(e) = self.client.batch_execute("ROLLBACK")
        {
            tracing::error!(error = %e, "rollback failed");
        }
        self.in_transaction = false;
        self.notes.clear();
        if !self.client.is_closed()
            && let Err(e) = self.reload_catalogue()
        {
            tracing::error!(error = %e, "could not reload the catalogue after a rollback");
        }
    }

    fn savepoint(&mut self) -> Result<(), WarehouseError> {
        self.notes.savepoint();
        self.direct.values_mut().for_each(|d| d.loaded_new = false);
        self.exec("SAVEPOINT kho_batch", "savepoint")
    }

    fn release_savepoint(&mut self) -> Result<(), WarehouseError> {
        self.exec("RELEASE SAVEPOINT kho_batch", "release savepoint")
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), WarehouseError> {
        self.notes.rollback_to_savepoint();
        self.exec("ROLLBACK TO SAVEPOINT kho_batch; RELEASE SAVEPOINT kho_batch", "rollback to savepoint")?;
        self.reload_catalogue()
    }

    fn set_leadership(&mut self, leadership: crate::leader::Leadership) {
        self.leadership = Some(leadership);
    }

    fn lock_group(&mut self, agents: &[&str], now: &str) -> Result<(), WarehouseError> {
        ledger::lock(&mut self.client, agents, now)
    }

    fn finish_group(&mut self) -> Result<(), WarehouseError> {
        self.notes.flush(&mut self.client)
    }

    fn applied_seq(&mut self, agent: &str) -> Result<u64, WarehouseError> {
        let row = self
            .client
            .query_opt("SELECT applied_seq FROM kho.ledger WHERE agent = $1", &[&agent])
            .map_err(db("read ledger"))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }

    fn set_applied_seq(&mut self, agent: &str, seq: u64, now: &str) -> Result<(), WarehouseError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.client
            .execute(
                "INSERT INTO kho.ledger (agent, applied_seq, updated_at) VALUES ($1, $2, $3::text::timestamptz) \
                 ON CONFLICT (agent) DO UPDATE SET applied_seq = EXCLUDED.applied_seq, updated_at = EXCLUDED.updated_at",
                &[&agent, &seq, &now],
            )
            .map_err(db("write ledger"))?;
        Ok(())
    }

    fn prepare_dataset(&mut self, schema: &DatasetSchema, now: &str) -> Result<(), WarehouseError> {
        let dataset = schema.dataset.as_str();
        let result = match self.tables.get(dataset) {
            None => self.create_dataset(schema, now),
            Some(info) => match table::plan_evolution(info, schema) {
                Ok(ev) if ev.columns.is_none() => Ok(()),
                // A change is needed: decide again on the locked, current catalogue row.
                _ => match self.lock_table(dataset)? {
                    Some(_) => self.evolve_dataset(schema),
                    None => self.create_dataset(schema, now),
                },
            },
        };
        match &result {
            Ok(()) => self.clear_conflict(dataset),
            Err(WarehouseError::SchemaConflict { problem, .. }) => self.note_conflict(dataset, problem),
            Err(_) => {}
        }
        result
    }

    fn apply_changes(
        &mut self,
        agent: &str,
        schemas: &[DatasetSchema],
        changes: &[Change],
        now: &str,
    ) -> Result<ApplyStats, WarehouseError> {
        let mut stats = ApplyStats::default();
        // Datasets in order of first appearance, each with its changes' indices in order.
        let mut by_dataset: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            match c.op {
                Op::Upsert => stats.upserts += 1,
                Op::Delete => stats.deletes += 1,
            }
            match by_dataset.iter_mut().find(|(d, _)| *d == c.dataset) {
                Some((_, v)) => v.push(i),
                None => by_dataset.push((c.dataset.as_str(), vec![i])),
            }
        }
        // The history's text is encoded on a second thread while the rows are written: neither
        // depends on the other, and the batch's transaction otherwise waits for both in turn.
        let history = std::thread::scope(|scope| {
            let encoding = (changes.len() >= PARALLEL_HISTORY_CHANGES)
                .then(|| scope.spawn(|| history::encode_all(schemas, changes)));
            let written = self.write_datasets(agent, schemas, changes, &by_dataset, now);
            // Joined whatever `written` says, so a panic of the encoder (a bug) is not re-raised
            // when the scope ends; it is encoded again here instead, where a panic is reported.
            let rows = match encoding.map(|h| h.join()) {
                Some(Ok(rows)) => rows,
                _ => history::encode_all(schemas, changes),
            };
            written.map(|()| rows)
        })?;
        history::append(&mut self.client, agent, &history, now)?;
        Ok(stats)
    }

    fn record_heartbeat(&mut self, hb: &Heartbeat, transport: &str, now: &str) -> Result<(), WarehouseError> {
        let report = serde_json::to_value(&hb.datasets).map(|v| values::json_text(&v)).unwrap_or_default();
        let depth = i64::try_from(hb.outbox_depth).unwrap_or(i64::MAX);
        let acked = i64::try_from(hb.acked_through).unwrap_or(i64::MAX);
        self.client
            .execute(
                "INSERT INTO kho.agents (agent, last_seen_at, version, outbox_depth, acked_through, report_json, transport) \
                 VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6::text::jsonb, $7) ON CONFLICT (agent) DO UPDATE SET \
                 last_seen_at = EXCLUDED.last_seen_at, version = EXCLUDED.version, outbox_depth = EXCLUDED.outbox_depth, \
                 acked_through = EXCLUDED.acked_through, report_json = EXCLUDED.report_json, transport = EXCLUDED.transport",
                &[&hb.agent, &now, &hb.version, &depth, &acked, &report, &transport],
            )
            .map_err(db("write heartbeat"))?;
        let applied = self.applied_seq(&hb.agent)?;
        freshness::record_syncs(&mut self.notes, &hb.agent, applied, &hb.datasets, now);
        Ok(())
    }

    fn record_activity(&mut self, activity: &[DatasetActivity], now: &str) -> Result<(), WarehouseError> {
        freshness::record_activity(&mut self.notes, activity, now);
        Ok(())
    }

    fn promote_syncs(&mut self, agent: &str, applied: u64) -> Result<(), WarehouseError> {
        freshness::promote_syncs(&mut self.notes, agent, applied);
        Ok(())
    }

    fn record_transitions(&mut self, rows: &[StoredTransition]) -> Result<(), WarehouseError> {
        freshness::record_transitions(&mut self.client, rows)
    }

    fn record_agent_transitions(&mut self, rows: &[AgentTransition]) -> Result<(), WarehouseError> {
        freshness::record_agent_transitions(&mut self.client, rows)
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), WarehouseError> {
        freshness::set_meta(&mut self.client, key, value)
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, WarehouseError> {
        freshness::read_meta(&mut self.client, key)
    }

    fn record_quality(&mut self, dataset: &str, verdicts: &[&RowVerdict], now: &str) -> Result<(), WarehouseError> {
        let loaded_new = self.direct.get(dataset).is_some_and(|d| d.loaded_new);
        quality::record(&mut self.client, dataset, verdicts, now, loaded_new)
    }

    fn quarantine(
        &mut self,
        dataset: &str,
        agent: &str,
        held: &[super::HeldRow<'_>],
        clean: &[&str],
        now: &str,
    ) -> Result<Vec<String>, WarehouseError> {
        quality::quarantine(&mut self.client, dataset, agent, held, clean, now)
    }

    fn quarantined_from(
        &mut self,
        agent: &str,
        first: u64,
        last: u64,
        limit: usize,
    ) -> Result<Vec<QuarantinedRow>, WarehouseError> {
        quality::quarantined_from(&mut self.client, agent, first, last, limit)
    }

    fn value_exists(&mut self, dataset: &str, column: &str, value: &str) -> Result<bool, WarehouseError> {
        Ok(self.values_existing(dataset, column, &[value])?.contains(&true))
    }

    fn values_exist(&mut self, dataset: &str, column: &str, values: &[&str]) -> Result<Vec<bool>, WarehouseError> {
        self.values_existing(dataset, column, values)
    }

    fn value_taken(
        &mut self,
        dataset: &str,
        column: &str,
        value: &str,
        key: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, WarehouseError> {
        let table = self.tables.get(dataset);
        quality::taken_by_other(&mut self.client, &mut self.quality_indexed, table, dataset, column, value, key)
    }

    fn live_rows(&mut self, dataset: &str) -> Result<u64, WarehouseError> {
        self.count_live(dataset)
    }

    fn full_check(&mut self, dataset: &str, check: &super::FullCheck) -> Result<Vec<super::Found>, WarehouseError> {
        self.run_full_check(dataset, check)
    }

    fn replace_violations(
        &mut self,
        dataset: &str,
        rule: &str,
        column: Option<&str>,
        found: &[super::Found],
        now: &str,
    ) -> Result<(u64, u64), WarehouseError> {
        checks::replace_violations(&mut self.client, dataset, rule, column, found, now)
    }

    fn rows_in_period(&mut self, ds: &str, col: Option<&str>, start: &str, end: &str) -> Result<u64, WarehouseError> {
        self.count_in_period(ds, col, start, end)
    }
    fn record_quality_history(&mut self, rows: &[super::QualityPeriod]) -> Result<(), WarehouseError> {
        checks::record_history(&mut self.client, rows)
    }

    fn append_audit(&mut self, entry: &crate::audit::Entry) -> Result<(), WarehouseError> {
        crate::registry::postgres::append_audit_in(&mut self.client, entry)
            .map(drop)
            .map_err(db("append to the audit log"))
    }
}

impl PostgresWarehouse {
    /// Deletes change-log rows older than the retention now (the writer also does this every
    /// [`PRUNE_EVERY`]); returns how many. Outside any transaction.
    pub fn prune_history(&mut self) -> Result<u64, WarehouseError> {
        history::prune(&mut self.client, self.settings.history_retention)
    }

    /// The connection, for tests and tools that inspect the warehouse.
    pub fn client(&mut self) -> &mut impl GenericClient {
        &mut self.client
    }
}

/// A PostgreSQL warehouse's writers and its status reader.
pub type Opened = (Vec<Box<dyn Warehouse>>, Arc<PostgresReader>);

/// Opens `writers` writers (the first prunes the change log) and one status reader.
pub fn open(settings: Settings, writers: usize, department_of: DepartmentOf) -> Result<Opened, WarehouseError> {
    let settings = Arc::new(settings);
    let conflicts: Conflicts = Arc::default();
    let mut out: Vec<Box<dyn Warehouse>> = Vec::with_capacity(writers);
    for i in 0..writers.max(1) {
        let wh =
            PostgresWarehouse::open(Arc::clone(&settings), Arc::clone(&department_of), Arc::clone(&conflicts), i == 0)?;
        out.push(Box::new(wh));
    }
    let reader = PostgresReader::open(settings, conflicts)?;
    Ok((out, Arc::new(reader)))
}
