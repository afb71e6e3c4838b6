//! `kho-agent status`: what the outbox says, read without disturbing a running agent.
//!
//! Opens the outbox read-only (SQLite WAL lets it read while the agent writes) and reports the
//! queue (depth, oldest pending change and its age, acknowledgements) and each configured
//! dataset's capture state. A missing outbox (the agent never ran) reads as empty.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::AgentConfig;
use crate::outbox::{DatasetState, Outbox, OutboxError, OutboxStatus, Quarantined, now_ms};

/// The queue part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct QueueReport {
    pub path: String,
    pub exists: bool,
    pub depth: u64,
    pub next_seq: u64,
    pub acked_through: u64,
    pub last_ack_at_ms: Option<i64>,
    pub oldest_pending_seq: Option<u64>,
    pub oldest_pending_age_s: Option<f64>,
}

/// The whole report (`status --json` prints this).
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub agent: String,
    pub outbox: QueueReport,
    pub datasets: Vec<DatasetState>,
    /// Rows the hub holds in quarantine (its `reject` quality rules), newest first.
    pub quarantined: Vec<Quarantined>,
    /// How many in all (the list stops at a few hundred).
    pub quarantined_total: u64,
}

/// Reads the status of the agent configured by `config`.
pub fn report(config: &AgentConfig) -> Result<StatusReport, OutboxError> {
    let path = config.outbox_path();
    let mut quarantine = (Vec::new(), 0);
    let (exists, status) = match Outbox::open_read_only(&path) {
        Ok(o) => {
            quarantine = o.quarantined()?;
            (true, o.status()?)
        }
        Err(OutboxError::Missing { .. }) => (
            false,
            OutboxStatus {
                depth: 0,
                next_seq: 1,
                acked_through: 0,
                last_ack_at_ms: None,
                oldest_pending_seq: None,
                oldest_pending_captured_at_ms: None,
                datasets: Vec::new(),
            },
        ),
        Err(e) => return Err(e),
    };
    let now = now_ms();
    let datasets = config
        .datasets
        .iter()
        .map(|d| {
            status.datasets.iter().find(|s| s.dataset == d.name).cloned().unwrap_or_else(|| DatasetState {
                dataset: d.name.clone(),
                mode: d.mode.as_str().to_string(),
                cursor_column: d.cursor_column.clone(),
                cursor: None,
                cursor_value: None,
                last_poll_at_ms: None,
                last_ok_poll_at_ms: None,
                last_error: None,
                captured_through_seq: 0,
                null_cursor_rows: 0,
                cdc: None,
            })
        })
        .collect();
    Ok(StatusReport {
        agent: config.agent.id.clone(),
        outbox: QueueReport {
            path: path.display().to_string(),
            exists,
            depth: status.depth,
            next_seq: status.next_seq,
            acked_through: status.acked_through,
            last_ack_at_ms: status.last_ack_at_ms,
            oldest_pending_seq: status.oldest_pending_seq,
            oldest_pending_age_s: status.oldest_pending_captured_at_ms.map(|t| (now - t).max(0) as f64 / 1000.0),
        },
        datasets,
        quarantined: quarantine.0,
        quarantined_total: quarantine.1,
    })
}

fn when(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        None => "never".into(),
    }
}

/// Human-readable rendering.
pub fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let q = &r.outbox;
    // Writing into a String cannot fail.
    let _ = writeln!(s, "agent {}", r.agent);
    let _ = writeln!(s, "outbox {}{}", q.path, if q.exists { "" } else { " (not created yet)" });
    let _ = writeln!(s, "  pending changes:  {}", q.depth);
    match (q.oldest_pending_seq, q.oldest_pending_age_s) {
        (Some(seq), Some(age)) => {
            let _ = writeln!(s, "  oldest pending:   seq {seq}, captured {age:.1} s ago");
        }
        _ => {
            let _ = writeln!(s, "  oldest pending:   none");
        }
    }
    let _ = writeln!(s, "  acked through:    {}", q.acked_through);
    let _ = writeln!(s, "  last ack:         {}", when(q.last_ack_at_ms));
    for d in &r.datasets {
        let _ = writeln!(s, "dataset {} ({})", d.dataset, d.mode);
        if d.last_poll_at_ms.is_none() {
            let _ = writeln!(s, "  not polled yet");
            continue;
        }
        let _ = writeln!(s, "  last poll:        {}", when(d.last_poll_at_ms));
        let _ = writeln!(s, "  last good poll:   {}", when(d.last_ok_poll_at_ms));
        let _ = writeln!(s, "  captured through: seq {}", d.captured_through_seq);
        if let Some(c) = &d.cursor {
            let _ = writeln!(s, "  cursor:           {c}");
        }
        if d.null_cursor_rows > 0 {
            let _ = writeln!(s, "  NULL cursor rows: {} (not captured)", d.null_cursor_rows);
        }
        if let Some(c) = &d.cdc {
            let at = c.lsn.as_deref().unwrap_or("(initial snapshot not finished)");
            let _ = writeln!(s, "  cdc slot:         {} at {at}", c.slot);
            let bytes = c.lag_bytes.map_or("?".to_string(), |b| b.to_string());
            let secs = c.lag_seconds.map_or("?".to_string(), |t| format!("{t:.1}"));
            let at = when(c.updated_at_ms);
            let _ = writeln!(s, "  slot lag:         {bytes} bytes of WAL, {secs} s behind ({at})");
        }
        if let Some(e) = &d.last_error {
            let _ = writeln!(s, "  last error:       {e}");
        }
    }
    if r.quarantined_total > 0 {
        let _ = writeln!(s, "held in quarantine by the hub: {} row(s) (fix them at the source)", r.quarantined_total);
        for q in &r.quarantined {
            let _ = writeln!(s, "  {} {}: {}", q.dataset, q.key, q.reason);
        }
    }
    s
}
