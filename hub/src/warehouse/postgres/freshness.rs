//! Freshness evidence and status history in the PostgreSQL warehouse — the same rules as the
//! SQLite one (see `warehouse/sqlite/freshness.rs`): two clocks per dataset, pending syncs
//! confirmed only when the ledger reaches them, every value only moving forward (`greatest`
//! ignores NULL), all written in the applier's transaction with the batch it describes — at the
//! end of the group, in one row order ([`super::deferred`]).
//!
//! Tables: `kho.observations`, `kho.freshness_history`, `kho.agent_history` (agent liveness
//! transitions) and `kho.meta` (hub bookkeeping, e.g. the last daily digest's date); see
//! [`super::schema::METADATA`].

use kho_shared::freshness::history::Transition;
use kho_shared::protocol::DatasetReport;
use kho_shared::schedule::Period;
use postgres::GenericClient;

use super::deferred::{Deferred, Op};
use super::{db, rfc3339};
use crate::warehouse::{AgentTransition, DatasetActivity, DatasetEvidence, Evidence, StoredTransition, WarehouseError};

/// Notes what a batch changed, per dataset; written at the end of the group ([`Deferred`]).
pub(super) fn record_activity(notes: &mut Deferred, activity: &[DatasetActivity], now: &str) {
    for a in activity {
        notes.push(Op::Activity {
            dataset: a.dataset.clone(),
            at: now.to_string(),
            max_business_date: a.max_business_date.clone(),
        });
    }
}

/// Notes a heartbeat's sync evidence: confirmed at once when the ledger (`applied`, read in this
/// transaction) already holds the poll, else pending until it does.
pub(super) fn record_syncs(notes: &mut Deferred, agent: &str, applied: u64, reports: &[DatasetReport], now: &str) {
    for r in reports {
        let Some(at) = r.last_ok_poll_at_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) else {
            continue;
        };
        let (dataset, seen, poll_at) = (r.dataset.clone(), now.to_string(), format!("{at:.3}"));
        notes.push(if r.captured_through_seq <= applied {
            Op::Synced { dataset, seen, poll_at }
        } else {
            let seq = i64::try_from(r.captured_through_seq).unwrap_or(i64::MAX);
            Op::Pending { dataset, seen, poll_at, seq, agent: agent.to_string() }
        });
    }
}

/// Notes that `agent`'s ledger reached `applied`, confirming its pending polls up to it.
pub(super) fn promote_syncs(notes: &mut Deferred, agent: &str, applied: u64) {
    notes.push(Op::Promote { agent: agent.to_string(), applied: i64::try_from(applied).unwrap_or(i64::MAX) });
}

pub(super) fn record_transitions(c: &mut impl GenericClient, rows: &[StoredTransition]) -> Result<(), WarehouseError> {
    let stmt = c
        .prepare(
            "INSERT INTO kho.freshness_history (dataset, at, status, period_label, period_start, period_end) \
             VALUES ($1, $2::text::timestamptz, $3, $4, $5::text::timestamptz, $6::text::timestamptz)",
        )
        .map_err(db("write history"))?;
    for t in rows {
        let p = &t.transition.period;
        let (at, start, end) = (format!("{:.3}", t.transition.at), format!("{:.3}", p.start), format!("{:.3}", p.end));
        c.execute(&stmt, &[&t.dataset, &at, &t.transition.status.as_str(), &p.label, &start, &end])
            .map_err(db("write history"))?;
    }
    Ok(())
}

fn ts(text: Option<String>) -> Option<jiff::Timestamp> {
    text.and_then(|t| t.parse().ok())
}

pub(super) fn read_evidence(c: &mut impl GenericClient) -> Result<Evidence, WarehouseError> {
    let mut ev = Evidence::default();
    let sql = format!(
        "SELECT dataset, {}, {}, {}, max_business_date::text FROM kho.observations",
        rfc3339("first_received_at"),
        rfc3339("last_change_at"),
        rfc3339("last_sync_at")
    );
    for row in c.query(&sql, &[]).map_err(db("read observations"))? {
        let dataset: String = row.get(0);
        let date: Option<String> = row.get(4);
        ev.datasets.insert(
            dataset,
            DatasetEvidence {
                first_received_at: ts(row.get(1)),
                last_change_at: ts(row.get(2)),
                last_sync_at: ts(row.get(3)),
                max_business_date: date.and_then(|d| d.parse().ok()),
            },
        );
    }
    let sql = format!(
        "SELECT agent, {} FROM (SELECT agent, max(at) AS at FROM (SELECT agent, last_seen_at AS at FROM kho.agents \
         UNION ALL SELECT agent, updated_at FROM kho.ledger) u GROUP BY agent) m",
        rfc3339("at")
    );
    for row in c.query(&sql, &[]).map_err(db("read agents"))? {
        if let Some(at) = ts(row.get(1)) {
            ev.agents_last_seen.insert(row.get(0), at);
        }
    }
    Ok(ev)
}

pub(super) fn read_transitions(c: &mut impl GenericClient) -> Result<Vec<StoredTransition>, WarehouseError> {
    let sql = format!(
        "SELECT dataset, {}, status, period_label, {}, {} FROM kho.freshness_history ORDER BY id",
        rfc3339("at"),
        rfc3339("period_start"),
        rfc3339("period_end")
    );
    let mut out = Vec::new();
    for row in c.query(&sql, &[]).map_err(db("read history"))? {
        let (dataset, at, status, label, start, end): (String, String, String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        let status = serde_json::from_value(serde_json::Value::String(status));
        match (at.parse(), status, start.parse(), end.parse()) {
            (Ok(at), Ok(status), Ok(start), Ok(end)) => out.push(StoredTransition {
                dataset,
                transition: Transition { at, status, period: Period { start, end, label } },
            }),
            _ => tracing::error!(dataset, at, "unreadable kho.freshness_history row skipped"),
        }
    }
    Ok(out)
}

pub(super) fn record_agent_transitions(
    c: &mut impl GenericClient,
    rows: &[AgentTransition],
) -> Result<(), WarehouseError> {
    let stmt = c
        .prepare(
            "INSERT INTO kho.agent_history (agent, at, online, last_seen_at) \
             VALUES ($1, $2::text::timestamptz, $3, $4::text::timestamptz)",
        )
        .map_err(db("write agent history"))?;
    for t in rows {
        let (at, seen) = (format!("{:.3}", t.at), t.last_seen_at.map(|s| format!("{s:.3}")));
        c.execute(&stmt, &[&t.agent, &at, &t.online, &seen]).map_err(db("write agent history"))?;
    }
    Ok(())
}

pub(super) fn read_agent_transitions(c: &mut impl GenericClient) -> Result<Vec<AgentTransition>, WarehouseError> {
    let sql = format!(
        "SELECT agent, {}, online, {} FROM kho.agent_history ORDER BY id",
        rfc3339("at"),
        rfc3339("last_seen_at")
    );
    let mut out = Vec::new();
    for row in c.query(&sql, &[]).map_err(db("read agent history"))? {
        let (agent, at): (String, String) = (row.get(0), row.get(1));
        match at.parse() {
            Ok(at) => out.push(AgentTransition { agent, at, online: row.get(2), last_seen_at: ts(row.get(3)) }),
            Err(_) => tracing::error!(agent, at, "unreadable kho.agent_history row skipped"),
        }
    }
    Ok(out)
}

pub(super) fn set_meta(c: &mut impl GenericClient, key: &str, value: &str) -> Result<(), WarehouseError> {
    c.execute(
        "INSERT INTO kho.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&key, &value],
    )
    .map_err(db("write meta"))?;
    Ok(())
}

pub(super) fn read_meta(c: &mut impl GenericClient, key: &str) -> Result<Option<String>, WarehouseError> {
    let row = c.query_opt("SELECT value FROM kho.meta WHERE key = $1", &[&key]).map_err(db("read meta"))?;
    Ok(row.map(|r| r.get(0)))
}
