//! Freshness evidence and status history in the SQLite warehouse, written by the single writer.
//!
//! ## Tables
//! - `_kho_observations(dataset PRIMARY KEY, first_received_at, last_change_at, last_sync_at,
//!   max_business_date, pending_sync_at, pending_sync_seq, pending_agent)`: the two clocks per
//!   dataset (LESSONS: last change *and* last confirmed sync) and the maximum `freshness_field`
//!   seen. Times are RFC 3339 UTC with milliseconds (they order as strings); the business date is
//!   `YYYY-MM-DD`. Every value only moves forward (`max`), so a replayed batch changes nothing.
//! - `_kho_freshness_history(id, dataset, at, status, period_label, period_start, period_end)`:
//!   one row per status transition, appended by the evaluator; the basis of per-period lateness.
//! - `_kho_agent_history(id, agent, at, online, last_seen_at)`: one row per agent liveness
//!   transition (offline ↔ online), appended by the evaluator; the basis of agent availability.
//! - `_kho_meta(key PRIMARY KEY, value)`: hub bookkeeping such as the last daily digest's date.
//!
//! ## Confirmed sync
//! A heartbeat reports, per dataset, the last successful poll and `captured_through_seq`. The
//! poll is *confirmed* only once the ledger reaches that sequence (the warehouse then reflects the
//! source as of the poll). If the ledger already has it, `last_sync_at` moves at once; otherwise
//! the poll waits in `pending_sync_*` and the batch that moves the ledger past it promotes it, in
//! the same transaction as the batch.
//!
//! ## Crash story
//! Everything here is written inside the applier's transaction, with the batch it describes, so
//! after a kill -9 the evidence matches exactly the rows that were committed.

use kho_shared::freshness::history::Transition;
use kho_shared::protocol::DatasetReport;
use kho_shared::schedule::Period;
use rusqlite::{Connection, params};

use super::db;
use crate::warehouse::{AgentTransition, DatasetActivity, DatasetEvidence, Evidence, StoredTransition, WarehouseError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _kho_observations (
    dataset TEXT PRIMARY KEY,
    first_received_at TEXT NOT NULL,
    last_change_at TEXT,
    last_sync_at TEXT,
    max_business_date TEXT,
    pending_sync_at TEXT,
    pending_sync_seq INTEGER,
    pending_agent TEXT
);
CREATE TABLE IF NOT EXISTS _kho_freshness_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    at TEXT NOT NULL,
    status TEXT NOT NULL,
    period_label TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS _kho_freshness_history_by_dataset ON _kho_freshness_history (dataset, at);
CREATE TABLE IF NOT EXISTS _kho_agent_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    at TEXT NOT NULL,
    online INTEGER NOT NULL,
    last_seen_at TEXT
);
CREATE TABLE IF NOT EXISTS _kho_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Makes sure a dataset has an observations row (first receipt = `now`).
fn ensure_row(conn: &Connection, dataset: &str, now: &str) -> Result<(), WarehouseError> {
    conn.prepare_cached(
        "INSERT INTO _kho_observations (dataset, first_received_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![dataset, now]))
    .map_err(db("write observations"))?;
    Ok(())
}

/// Records what a batch changed: last change time and the largest business date per dataset.
pub(super) fn record_activity(
    conn: &Connection,
    activity: &[DatasetActivity],
    now: &str,
) -> Result<(), WarehouseError> {
    for a in activity {
        ensure_row(conn, &a.dataset, now)?;
        conn.prepare_cached(
            "UPDATE _kho_observations SET last_change_at = max(coalesce(last_change_at, ''), ?2), \
             max_business_date = CASE WHEN ?3 IS NULL THEN max_business_date \
                 ELSE max(coalesce(max_business_date, ''), ?3) END WHERE dataset = ?1",
        )
        .and_then(|mut s| s.execute(params![a.dataset, now, a.max_business_date]))
        .map_err(db("write observations"))?;
    }
    Ok(())
}

/// Stores the sync evidence of a heartbeat whose agent's ledger is at `applied`.
pub(super) fn record_syncs(
    conn: &Connection,
    agent: &str,
    applied: u64,
    reports: &[DatasetReport],
    now: &str,
) -> Result<(), WarehouseError> {
    for r in reports {
        let Some(at) = r.last_ok_poll_at_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) else {
            continue;
        };
        let at = format!("{at:.3}");
        ensure_row(conn, &r.dataset, now)?;
        let sql = if r.captured_through_seq <= applied {
            "UPDATE _kho_observations SET last_sync_at = max(coalesce(last_sync_at, ''), ?2) WHERE dataset = ?1"
        } else {
            "UPDATE _kho_observations SET pending_sync_at = ?2, pending_sync_seq = ?3, pending_agent = ?4 WHERE dataset = ?1"
        };
        let seq = i64::try_from(r.captured_through_seq).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(sql).map_err(db("write sync"))?;
        if r.captured_through_seq <= applied {
            stmt.execute(params![r.dataset, at]).map_err(db("write sync"))?;
        } else {
            stmt.execute(params![r.dataset, at, seq, agent]).map_err(db("write sync"))?;
        }
    }
    Ok(())
}

/// Promotes pending polls of `agent` that the ledger (now at `applied`) has caught up with.
pub(super) fn promote_syncs(conn: &Connection, agent: &str, applied: u64) -> Result<(), WarehouseError> {
    let applied = i64::try_from(applied).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "UPDATE _kho_observations SET last_sync_at = max(coalesce(last_sync_at, ''), pending_sync_at), \
         pending_sync_at = NULL, pending_sync_seq = NULL, pending_agent = NULL \
         WHERE pending_agent = ?1 AND pending_sync_seq <= ?2",
    )
    .and_then(|mut s| s.execute(params![agent, applied]))
    .map_err(db("promote sync"))?;
    Ok(())
}

/// Appends status transitions.
pub(super) fn record_transitions(conn: &Connection, rows: &[StoredTransition]) -> Result<(), WarehouseError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO _kho_freshness_history (dataset, at, status, period_label, period_start, period_end) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(db("write history"))?;
    for t in rows {
        let p = &t.transition.period;
        stmt.execute(params![
            t.dataset,
            format!("{:.3}", t.transition.at),
            t.transition.status.as_str(),
            p.label,
            format!("{:.3}", p.start),
            format!("{:.3}", p.end)
        ])
        .map_err(db("write history"))?;
    }
    Ok(())
}

/// Appends agent liveness transitions.
pub(super) fn record_agent_transitions(conn: &Connection, rows: &[AgentTransition]) -> Result<(), WarehouseError> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO _kho_agent_history (agent, at, online, last_seen_at) VALUES (?1, ?2, ?3, ?4)")
        .map_err(db("write agent history"))?;
    for t in rows {
        let seen = t.last_seen_at.map(|s| format!("{s:.3}"));
        stmt.execute(params![t.agent, format!("{:.3}", t.at), t.online, seen]).map_err(db("write agent history"))?;
    }
    Ok(())
}

/// Every agent liveness transition, oldest first.
pub(super) fn read_agent_transitions(conn: &Connection) -> Result<Vec<AgentTransition>, WarehouseError> {
    let mut stmt = conn
        .prepare_cached("SELECT agent, at, online, last_seen_at FROM _kho_agent_history ORDER BY id")
        .map_err(db("read agent history"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, Option<String>>(3)?))
        })
        .map_err(db("read agent history"))?;
    let mut out = Vec::new();
    for row in rows {
        let (agent, at, online, seen) = row.map_err(db("read agent history"))?;
        match at.parse() {
            Ok(at) => out.push(AgentTransition { agent, at, online, last_seen_at: ts(seen) }),
            Err(_) => tracing::error!(agent, at, "unreadable _kho_agent_history row skipped"),
        }
    }
    Ok(out)
}

/// Sets a bookkeeping value.
pub(super) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), WarehouseError> {
    conn.prepare_cached(
        "INSERT INTO _kho_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(params![key, value]))
    .map_err(db("write meta"))?;
    Ok(())
}

/// Reads a bookkeeping value.
pub(super) fn read_meta(conn: &Connection, key: &str) -> Result<Option<String>, WarehouseError> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT value FROM _kho_meta WHERE key = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
        .map_err(db("read meta"))
}

fn ts(text: Option<String>) -> Option<jiff::Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// Everything the evaluator needs, from one read transaction.
pub(super) fn read_evidence(conn: &Connection) -> Result<Evidence, WarehouseError> {
    let mut ev = Evidence::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT dataset, first_received_at, last_change_at, last_sync_at, max_business_date FROM _kho_observations",
        )
        .map_err(db("read observations"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(db("read observations"))?;
    for row in rows {
        let (dataset, first, change, sync, date) = row.map_err(db("read observations"))?;
        let evidence = DatasetEvidence {
            first_received_at: ts(first),
            last_change_at: ts(change),
            last_sync_at: ts(sync),
            max_business_date: date.and_then(|d| d.parse().ok()),
        };
        ev.datasets.insert(dataset, evidence);
    }
    // Last contact: a heartbeat or an applied batch, whichever is later.
    let mut stmt = conn
        .prepare_cached(
            "SELECT agent, max(at) FROM (SELECT agent, last_seen_at AS at FROM _kho_agents \
             UNION ALL SELECT agent, updated_at AS at FROM _kho_ledger) GROUP BY agent",
        )
        .map_err(db("read agents"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
        .map_err(db("read agents"))?;
    for row in rows {
        let (agent, at) = row.map_err(db("read agents"))?;
        if let Some(at) = ts(at) {
            ev.agents_last_seen.insert(agent, at);
        }
    }
    Ok(ev)
}

/// Every stored transition, oldest first.
pub(super) fn read_transitions(conn: &Connection) -> Result<Vec<StoredTransition>, WarehouseError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT dataset, at, status, period_label, period_start, period_end FROM _kho_freshness_history ORDER BY id",
        )
        .map_err(db("read history"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(db("read history"))?;
    let mut out = Vec::new();
    for row in rows {
        let (dataset, at, status, label, start, end) = row.map_err(db("read history"))?;
        let status = serde_json::from_value(serde_json::Value::String(status));
        match (at.parse(), status, start.parse(), end.parse()) {
            (Ok(at), Ok(status), Ok(start), Ok(end)) => out.push(StoredTransition {
                dataset,
                transition: Transition { at, status, period: Period { start, end, label } },
            }),
            _ => tracing::error!(dataset, at, "unreadable _kho_freshness_history row skipped"),
        }
    }
    Ok(out)
}
