//! The `kho` schema's metadata tables (ledger, catalogue, agents, freshness evidence),
//! created at start under the DDL lock; additions to older warehouses are `ADD COLUMN IF NOT EXISTS`.

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
