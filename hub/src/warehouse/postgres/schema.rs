//! The `kho` schema's metadata tables (ledger, catalogue, agents, freshness evidence),
//! created at start under the DDL lock; additions to older warehouses are `ADD COLUMN IF NOT EXISTS`.
//! And the writer's cache of the catalogue rows (`kho.datasets`) as table shapes.

use kho_shared::protocol::Column;
use postgres::Client;

use super::table::TableInfo;
use super::{DDL_LOCK, db};
use crate::warehouse::WarehouseError;

pub(super) const METADATA: &str = "
CREATE SCHEMA IF NOT EXISTS kho;
CREATE TABLE IF NOT EXISTS kho.ledger (
    agent text PRIMARY KEY,
    applied_seq bigint NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS kho.datasets (
    dataset text PRIMARY KEY,
    schema_name text NOT NULL,
    key_json jsonb NOT NULL,
    columns_json jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    last_change_at timestamptz,
    last_seq bigint,
    last_agent text
);
CREATE TABLE IF NOT EXISTS kho.agents (
    agent text PRIMARY KEY,
    last_seen_at timestamptz NOT NULL,
    version text,
    outbox_depth bigint,
    acked_through bigint,
    report_json jsonb
);
ALTER TABLE kho.agents ADD COLUMN IF NOT EXISTS transport text;
CREATE TABLE IF NOT EXISTS kho.observations (
    dataset text PRIMARY KEY,
    first_received_at timestamptz NOT NULL,
    last_change_at timestamptz,
    last_sync_at timestamptz,
    max_business_date date,
    pending_sync_at timestamptz,
    pending_sync_seq bigint,
    pending_agent text
);
CREATE TABLE IF NOT EXISTS kho.freshness_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset text NOT NULL,
    at timestamptz NOT NULL,
    status text NOT NULL,
    period_label text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS freshness_history_by_dataset ON kho.freshness_history (dataset, at);
CREATE TABLE IF NOT EXISTS kho.agent_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent text NOT NULL,
    at timestamptz NOT NULL,
    online boolean NOT NULL,
    last_seen_at timestamptz
);
CREATE TABLE IF NOT EXISTS kho.meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
";

pub(super) fn parse_table(
    schema: String,
    key_json: String,
    columns_json: String,
) -> Result<TableInfo, serde_json::Error> {
    let key: Vec<String> = serde_json::from_str(&key_json)?;
    let columns: Vec<Column> = serde_json::from_str(&columns_json)?;
    Ok(TableInfo { schema, key, columns })
}

pub(super) fn create_metadata(client: &mut Client) -> Result<(), WarehouseError> {
    let mut tx = client.transaction().map_err(db("create metadata tables"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK]).map_err(db("DDL lock"))?;
    tx.batch_execute(METADATA).map_err(db("create metadata tables"))?;
    tx.batch_execute(super::history::SCHEMA).map_err(db("create the change history"))?;
    tx.batch_execute(super::quality::SCHEMA).map_err(db("create the quality tables"))?;
    tx.batch_execute(super::checks::SCHEMA).map_err(db("create the quality tables"))?;
    tx.batch_execute(crate::registry::postgres::AUDIT_SCHEMA).map_err(db("create the audit table"))?;
    tx.commit().map_err(db("create metadata tables"))
}

impl super::PostgresWarehouse {
    pub(super) fn reload_catalogue(&mut self) -> Result<(), WarehouseError> {
        let rows = self
            .client
            .query("SELECT dataset, schema_name, key_json::text, columns_json::text FROM kho.datasets", &[])
            .map_err(db("read catalogue"))?;
        let mut tables = std::collections::HashMap::new();
        for row in rows {
            let dataset: String = row.get(0);
            match parse_table(row.get(1), row.get(2), row.get(3)) {
                Ok(info) => {
                    tables.insert(dataset, info);
                }
                // A hand-edited catalogue row: refuse that dataset's batches rather than guess.
                Err(e) => {
                    tracing::error!(dataset, error = %e, "unreadable kho.datasets row; its batches will fail")
                }
            }
        }
        self.tables = tables;
        Ok(())
    }

    /// Re-reads one dataset's catalogue row, locking it until the transaction ends (so two
    /// writers never evolve the same table from different views).
    pub(super) fn lock_table(&mut self, dataset: &str) -> Result<Option<TableInfo>, WarehouseError> {
        let row = self
            .client
            .query_opt(
                "SELECT schema_name, key_json::text, columns_json::text FROM kho.datasets WHERE dataset = $1 FOR UPDATE",
                &[&dataset],
            )
            .map_err(db("read catalogue"))?;
        let Some(row) = row else { return Ok(None) };
        let info = parse_table(row.get(0), row.get(1), row.get(2)).map_err(|e| WarehouseError::SchemaConflict {
            dataset: dataset.to_string(),
            problem: format!("unreadable kho.datasets row: {e}"),
        })?;
        self.tables.insert(dataset.to_string(), info.clone());
        Ok(Some(info))
    }
}
