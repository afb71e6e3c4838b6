//! Where applied data lives, behind two narrow traits so the rest of the hub never knows which
//! database it talks to.
//!
//! - [`Warehouse`] is the single writer. The applier ([`crate::apply`]) drives it: `begin`, then
//!   per batch a savepoint, the ledger read, the rows, the ledger write, then one `commit` for the
//!   group. Everything between `begin` and `commit` is one database transaction, which is what
//!   makes apply atomic and idempotent (architecture invariant 3).
//! - [`WarehouseReader`] answers status questions from a separate read-only connection, so a slow
//!   status page never holds up the writer, and streams a dataset's live rows for the open-data
//!   API ([`rows`]) on a connection of its own.
//!
//! Every warehouse keeps, besides one table per dataset, the same metadata tables:
//! the ledger (agent → highest applied sequence), the dataset catalogue (key, columns, last
//! change), the agents' last heartbeats, freshness evidence, dataset status history, agent
//! liveness history and a small key-value table of hub bookkeeping.
//! Implementations: [`sqlite`] (embedded default, exactly one writer) and [`postgres`] (a
//! province's shared warehouse, several writers — one connection each — for different agents).

pub mod postgres;
pub mod rows;
pub mod sqlite;

use kho_shared::protocol::{Change, DatasetSchema, Heartbeat};
use serde::Serialize;

/// Why the warehouse refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The batch does not fit the dataset's existing table (e.g. a changed primary key). Only
    /// that batch is refused; resending it unchanged cannot succeed.
    #[error("dataset {dataset}: {problem}")]
    SchemaConflict { dataset: String, problem: String },
    /// The database failed; the transaction was rolled back and a retry may succeed. `source` is
    /// the backend's own error (rusqlite, postgres), kept whole for its detail and chain.
    #[error("warehouse {context}: {source}")]
    Database { context: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("warehouse file {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// The warehouse server could not be reached (down, refusing, unknown host, wrong
    /// credentials); nothing was done. The hub waits for it at start and retries later batches.
    #[error("warehouse unreachable ({context}): {source}")]
    Unreachable { context: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl WarehouseError {
    /// A backend failure during `context` (what the warehouse was doing: "write ledger", …).
    pub fn database(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> WarehouseError {
        WarehouseError::Database { context: context.into(), source: Box::new(source) }
    }

    /// Whether the same request can succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        !matches!(self, WarehouseError::SchemaConflict { .. })
    }
}

/// What applying a run of changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub upserts: u64,
    pub deletes: u64,
}

/// The single writer's view of a warehouse. All methods run on the applier thread.
pub trait Warehouse: Send {
    /// Starts the transaction that the following calls run in.
    fn begin(&mut self) -> Result<(), WarehouseError>;
    /// Makes everything since [`Warehouse::begin`] durable.
    fn commit(&mut self) -> Result<(), WarehouseError>;
    /// Abandons everything since [`Warehouse::begin`]. Must leave the warehouse usable.
    fn rollback(&mut self);
    /// Marks a point inside the transaction that one batch's failure can return to.
    fn savepoint(&mut self) -> Result<(), WarehouseError>;
    /// Keeps the work since the last savepoint.
    fn release_savepoint(&mut self) -> Result<(), WarehouseError>;
    /// Undoes the work since the last savepoint (and forgets any schema learned since).
    fn rollback_to_savepoint(&mut self) -> Result<(), WarehouseError>;

    /// Locks the ledger rows of `agents` (sorted, without duplicates; missing ones are created at 0
    /// first) until the transaction ends: no other hub instance or writer applies these agents'
    /// batches meanwhile. Waits while another transaction holds one. Called once per group,
    /// before any batch. SQLite: one process writes the file; nothing to do.
    fn lock_group(&mut self, _agents: &[&str], _now: &str) -> Result<(), WarehouseError> {
        Ok(())
    }
    /// Writes what the group deferred (PostgreSQL: the per-dataset metadata rows every batch
    /// updates, in one global row order, so concurrent groups hold those locks only until their
    /// `COMMIT`). Called once per group, after its last job; `commit` also does it.
    fn finish_group(&mut self) -> Result<(), WarehouseError> {
        Ok(())
    }
    /// The highest sequence applied for `agent` (0 if none), as of this transaction.
    fn applied_seq(&mut self, agent: &str) -> Result<u64, WarehouseError>;
    /// Records that `agent`'s changes up to `seq` are applied.
    fn set_applied_seq(&mut self, agent: &str, seq: u64, now: &str) -> Result<(), WarehouseError>;
    /// Creates or widens the dataset's table for `schema`; refuses incompatible changes.
    fn prepare_dataset(&mut self, schema: &DatasetSchema, now: &str) -> Result<(), WarehouseError>;
    /// Applies changes of one agent (all of whose datasets were prepared) in order.
    fn apply_changes(
        &mut self,
        agent: &str,
        schemas: &[DatasetSchema],
        changes: &[Change],
        now: &str,
    ) -> Result<ApplyStats, WarehouseError>;
    /// Stores an agent's latest heartbeat and the sync evidence of its dataset reports (confirmed
    /// at once if the ledger already holds `captured_through_seq`, else kept pending).
    fn record_heartbeat(&mut self, heartbeat: &Heartbeat, transport: &str, now: &str) -> Result<(), WarehouseError>;
    /// Records what an applied batch changed, per dataset (freshness evidence).
    fn record_activity(&mut self, activity: &[DatasetActivity], now: &str) -> Result<(), WarehouseError>;
    /// Confirms `agent`'s pending polls now that its ledger reached `applied`.
    fn promote_syncs(&mut self, agent: &str, applied: u64) -> Result<(), WarehouseError>;
    /// Appends freshness status transitions.
    fn record_transitions(&mut self, rows: &[StoredTransition]) -> Result<(), WarehouseError>;
    /// Appends agent liveness transitions (online ↔ offline).
    fn record_agent_transitions(&mut self, rows: &[AgentTransition]) -> Result<(), WarehouseError>;
    /// Sets a hub bookkeeping value (e.g. the date of the last daily digest), so it survives a
    /// restart and is shared by every hub instance using this warehouse.
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), WarehouseError>;
    /// A bookkeeping value written by [`Warehouse::set_meta`], read inside the open transaction.
    fn meta(&mut self, key: &str) -> Result<Option<String>, WarehouseError>;
    /// Replaces the recorded quality violations of each row a batch wrote to `dataset` (empty
    /// failures clear them), in the batch's transaction.
    fn record_quality(
        &mut self,
        dataset: &str,
        verdicts: &[&crate::quality::eval::RowVerdict],
        now: &str,
    ) -> Result<(), WarehouseError>;
    /// Holds `held` rows of `dataset` in quarantine (replacing an earlier held version of the
    /// same key) and releases the rows keyed `clean` (they came in clean or were deleted).
    /// Returns the keys that were in quarantine and left it.
    fn quarantine(
        &mut self,
        dataset: &str,
        agent: &str,
        held: &[HeldRow<'_>],
        clean: &[&str],
        now: &str,
    ) -> Result<Vec<String>, WarehouseError>;
    /// The rows `agent` wrote with sequences `first_seq..=last_seq` that are in quarantine now
    /// (at most `limit`, in sequence order): what a duplicate batch's ack says again, since the
    /// first ack may be the one that was lost.
    fn quarantined_from(
        &mut self,
        agent: &str,
        first_seq: u64,
        last_seq: u64,
        limit: usize,
    ) -> Result<Vec<kho_shared::protocol::QuarantinedRow>, WarehouseError>;
    /// Whether a live row of `dataset` holds `value` in `column` (a `reference` rule); an indexed
    /// probe, never a scan. `false` when the table or column does not exist (yet).
    fn value_exists(&mut self, dataset: &str, column: &str, value: &str) -> Result<bool, WarehouseError>;
    /// For each of `values`, [`Warehouse::value_exists`]: a batch's lookups at once, so a backend
    /// can answer with one set-based query instead of one probe per row. The default asks value
    /// by value.
    fn values_exist(&mut self, dataset: &str, column: &str, values: &[&str]) -> Result<Vec<bool>, WarehouseError> {
        values.iter().map(|v| self.value_exists(dataset, column, v)).collect()
    }
    /// Whether a live row of `dataset` other than the one keyed `key` holds `value` in `column`
    /// (a `unique` rule); an indexed probe.
    fn value_taken(
        &mut self,
        dataset: &str,
        column: &str,
        value: &str,
        key: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, WarehouseError>;
    /// Live rows of `dataset` (0 without a table): a count, run once per sync for
    /// `max_change_share`, never per batch.
    fn live_rows(&mut self, dataset: &str) -> Result<u64, WarehouseError>;
    /// The live rows of `dataset` breaking a `unique` / `reference` rule, found by one set-based
    /// query over indexed columns (the periodic full check).
    fn full_check(&mut self, dataset: &str, check: &FullCheck) -> Result<Vec<Found>, WarehouseError>;
    /// Makes `found` the open violations of rule `rule` in `dataset`: the ones no longer found
    /// close, new ones open. Returns `(opened, closed)`.
    fn replace_violations(
        &mut self,
        dataset: &str,
        rule: &str,
        column: Option<&str>,
        found: &[Found],
        now: &str,
    ) -> Result<(u64, u64), WarehouseError>;
    /// Live rows of `dataset` in `[start, end)`: by `column`'s value (`YYYY-MM-DD` bounds, a
    /// business date) or, with no column, by the time they were applied (RFC 3339 bounds).
    fn rows_in_period(
        &mut self,
        dataset: &str,
        column: Option<&str>,
        start: &str,
        end: &str,
    ) -> Result<u64, WarehouseError>;
    /// Stores each dataset's quality in its current period (replacing the period's earlier value).
    fn record_quality_history(&mut self, rows: &[QualityPeriod]) -> Result<(), WarehouseError>;
    /// Appends an audit entry inside the open transaction, so it commits (or not) with the data
    /// it records. Serialised against every other appender of the same log (hash chain).
    fn append_audit(&mut self, entry: &crate::audit::Entry) -> Result<(), WarehouseError>;
    /// Shares whether this instance is the leader ([`crate::leader`]): a writer that also does
    /// maintenance (PostgreSQL's change-history pruning) does it only while leading.
    fn set_leadership(&mut self, _leadership: crate::leader::Leadership) {}
    /// Gives back memory kept only to make the next batch faster (page caches), outside any
    /// transaction. The applier calls it when batches have stopped arriving for a while.
    fn release_memory(&mut self) {}
}

/// Read-only questions, answered from a connection separate from the writer's.
pub trait WarehouseReader: Send + Sync {
    fn status(&self) -> Result<WarehouseStatus, WarehouseError>;
    /// Freshness evidence per dataset and agents' last contact.
    fn evidence(&self) -> Result<Evidence, WarehouseError>;
    /// Every recorded status transition, oldest first.
    fn transitions(&self) -> Result<Vec<StoredTransition>, WarehouseError>;
    /// Every recorded agent liveness transition, oldest first.
    fn agent_transitions(&self) -> Result<Vec<AgentTransition>, WarehouseError>;
    /// A bookkeeping value set by [`Warehouse::set_meta`].
    fn meta(&self, key: &str) -> Result<Option<String>, WarehouseError>;
    /// Streams a dataset's live rows to `emit` (see [`rows`]): blocking, on its own connection.
    /// Returns `false`, having emitted nothing, when the warehouse has no table for `dataset`.
    fn read_live(
        &self,
        dataset: &str,
        query: &rows::RowQuery,
        emit: &mut dyn FnMut(rows::RowChunk) -> bool,
    ) -> Result<bool, WarehouseError>;
    /// The last `limit` rows written to `dataset` (upserted or deleted), newest first; empty when
    /// it has no table. Scans the table (no index on the write time): for a page view, not a loop.
    fn recent_changes(&self, dataset: &str, limit: usize) -> Result<Vec<rows::RecentChange>, WarehouseError>;
    /// Open quality violations per dataset and rule, and each dataset's `latest` newest ones.
    fn quality(&self, latest: usize) -> Result<QualityData, WarehouseError>;
    /// `dataset`'s quality per period, newest first, at most `limit` periods.
    fn quality_history(&self, dataset: &str, limit: usize) -> Result<Vec<QualityPeriod>, WarehouseError>;
}

/// How the keys of dataset-level quality records start (`{"_kho_period":…}` of `row_count`,
/// `{"_kho_sync":…}` of `max_change_share`); a row's key never does (`_kho_` names are the hub's).
pub const DATASET_LEVEL: &str = "{\"_kho_";

/// A set-based check of one rule over a dataset's live rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullCheck {
    /// Rows holding a (non-blank) value that a live row written earlier also holds: every holder
    /// but the first, as the check at ingest flags the later writer.
    Unique { column: String },
    /// Rows whose (non-blank) value no live row of `dataset.ref_column` holds.
    Reference { column: String, dataset: String, ref_column: String },
}

/// A row a full check found breaking a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The row's key as JSON text, as the ingest check writes it.
    pub key: String,
    pub value: Option<String>,
    /// The row's last write.
    pub seq: u64,
}

/// One dataset's quality in one period of its schedule, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityPeriod {
    pub dataset: String,
    /// The period's label (`2026-11`, `2026-Q4`, …) and bounds (RFC 3339).
    pub period: String,
    pub period_start: String,
    pub period_end: String,
    pub rows: u64,
    pub quarantined: u64,
    pub score: Option<f64>,
    /// Open violations per rule id.
    pub rules: std::collections::BTreeMap<String, u64>,
    /// When it was last measured (the value holds from then to the period's end).
    pub at: String,
}

/// A row a `reject` rule keeps out of its dataset's table.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldRow<'a> {
    /// The row's key as JSON text.
    pub key: &'a str,
    pub seq: u64,
    pub reason: String,
    pub row: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// A row in quarantine as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredQuarantine {
    pub dataset: String,
    pub key: String,
    pub agent: String,
    pub reason: String,
    pub seq: u64,
    pub at: String,
    /// The row as sent (JSON text).
    pub row: Option<String>,
    /// The table still holds an earlier, live version of this row (loaded before the rejected
    /// version arrived). It stays live — the rejected version is not trusted and the earlier one
    /// is not thrown away — until a clean version replaces it or the source deletes the row;
    /// until then this marks it as superseded by the version in quarantine.
    pub older_version_live: bool,
}

/// One open quality violation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredViolation {
    pub dataset: String,
    pub rule: String,
    pub column: Option<String>,
    /// The row's key as JSON text.
    pub key: String,
    pub value: Option<String>,
    pub seq: u64,
    pub at: String,
}

/// What [`WarehouseReader::quality`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QualityData {
    /// `(dataset, rule, rows violating it)`.
    pub open: Vec<(String, String, u64)>,
    pub latest: Vec<StoredViolation>,
    /// `(dataset, rows in quarantine)`.
    pub quarantined: Vec<(String, u64)>,
    /// Each dataset's newest quarantined rows (as many as `latest`).
    pub latest_quarantined: Vec<StoredQuarantine>,
}

/// What one applied batch changed in one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetActivity {
    pub dataset: String,
    /// Largest `freshness_field` value among the batch's upserts, as `YYYY-MM-DD`.
    pub max_business_date: Option<String>,
}

/// A dataset's freshness evidence as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetEvidence {
    pub first_received_at: Option<jiff::Timestamp>,
    pub last_change_at: Option<jiff::Timestamp>,
    pub last_sync_at: Option<jiff::Timestamp>,
    pub max_business_date: Option<jiff::civil::Date>,
}

/// All freshness evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub datasets: std::collections::HashMap<String, DatasetEvidence>,
    /// Latest heartbeat or applied batch per agent.
    pub agents_last_seen: std::collections::HashMap<String, jiff::Timestamp>,
}

/// One recorded status transition of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransition {
    pub dataset: String,
    pub transition: kho_shared::freshness::history::Transition,
}

/// One recorded change of an agent's liveness: it went out of contact (`online = false`) or came
/// back. `last_seen_at` is its last contact as known at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentTransition {
    pub agent: String,
    pub at: jiff::Timestamp,
    pub online: bool,
    pub last_seen_at: Option<jiff::Timestamp>,
}

/// Everything the status API shows that the warehouse knows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WarehouseStatus {
    pub datasets: Vec<DatasetStatus>,
    pub agents: Vec<AgentStatus>,
}

/// One dataset's row counts and last change.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub dataset: String,
    pub rows: u64,
    pub deleted_rows: u64,
    pub key: Vec<String>,
    pub columns: Vec<kho_shared::protocol::Column>,
    pub created_at: String,
    pub last_change_at: Option<String>,
    pub last_seq: Option<u64>,
    pub last_agent: Option<String>,
    /// Why this dataset's latest batch was refused (a schema conflict), until one is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_error: Option<String>,
}

/// One agent's ledger position and last heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub id: String,
    pub applied_through: u64,
    pub applied_at: Option<String>,
    pub last_seen_at: Option<String>,
    pub version: Option<String>,
    pub outbox_depth: Option<u64>,
    pub acked_through: Option<u64>,
    pub report: Option<Vec<kho_shared::protocol::DatasetReport>>,
}

/// Quotes an identifier for SQL: wrapped in double quotes, inner quotes doubled. Names are also
/// restricted by [`kho_shared::ident`]; quoting is the second wall.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A warehouse's writers (one per applier thread; an agent always goes to the same one) and its
/// status reader.
pub type Opened = (Vec<Box<dyn Warehouse>>, std::sync::Arc<dyn WarehouseReader>);

/// Opens the configured warehouse: its writers and its status reader. `department_of` names a
/// dataset's department from the catalogue (PostgreSQL puts its table in that schema).
pub fn open(
    config: &crate::config::WarehouseSection,
    department_of: postgres::DepartmentOf,
) -> Result<Opened, WarehouseError> {
    match config.kind {
        crate::config::WarehouseKind::Sqlite => {
            let writer = sqlite::SqliteWarehouse::open(&config.path)?;
            let reader = sqlite::SqliteReader::open(&config.path)?;
            Ok((vec![Box::new(writer)], std::sync::Arc::new(reader)))
        }
        crate::config::WarehouseKind::Postgres => {
            let (writers, reader) = postgres::open(postgres_settings(config), config.writers, department_of)?;
            Ok((writers, reader))
        }
    }
}

/// The connection settings of a PostgreSQL warehouse section (also used by the leader election).
pub fn postgres_settings(config: &crate::config::WarehouseSection) -> postgres::Settings {
    postgres::Settings {
        url: config.url.clone().unwrap_or_default(),
        ssl_root_cert: config.ssl_root_cert.clone(),
        history_retention: config.history_retention,
        unassigned_schema: config.unassigned_schema.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("ho_so"), "\"ho_so\"");
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
