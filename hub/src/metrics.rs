//! Counters for every notable ingest event, rendered in the Prometheus text format at `/metrics`.
//!
//! Counters are plain atomics bumped where the event happens (handlers for refusals, the applier
//! after a commit), so reading them never takes a lock on the data path. The per-agent gauge and
//! the per-code refusals sit behind small mutexes: they change once per batch, not per row. The
//! freshness gauges are rendered by the evaluator once per pass and served as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use kho_shared::protocol::ErrorCode;

/// All of the hub's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    batches_accepted: AtomicU64,
    batches_duplicate: AtomicU64,
    changes_applied: AtomicU64,
    bytes_received: AtomicU64,
    heartbeats: AtomicU64,
    apply_latency_micros_sum: AtomicU64,
    apply_latency_count: AtomicU64,
    commit_groups: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    applied_seq: Mutex<BTreeMap<String, u64>>,
    catalog_reloads: AtomicU64,
    catalog_reload_failures: AtomicU64,
    alerts_sent: AtomicU64,
    alerts_failed: AtomicU64,
    alerts_dropped: AtomicU64,
    mqtt_messages: AtomicU64,
    mqtt_connection_failures: AtomicU64,
    open_data_requests: AtomicU64,
    open_data_refused: AtomicU64,
    open_data_rows: AtomicU64,
    dashboard_logins: AtomicU64,
    dashboard_login_failures: AtomicU64,
    /// 1 while this instance holds the leader lock ([`crate::leader`]).
    leader: AtomicU64,
    /// Per-dataset and per-agent freshness gauges, rendered by the evaluator after each pass.
    freshness: Mutex<String>,
    /// Data-quality counts from committed batches ([`Metrics::quality`]).
    quality: Mutex<crate::quality::ingest::Tally>,
}

fn code_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::BadSignature => "bad_signature",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::DigestMismatch => "digest_mismatch",
        ErrorCode::Malformed => "malformed",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::SequenceGap => "sequence_gap",
        ErrorCode::SchemaConflict => "schema_conflict",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
    }
}

impl Metrics {
    pub fn bytes_received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Relaxed);
    }

    pub fn refused(&self, code: ErrorCode) {
        let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(code_label(code)).or_default() += 1;
    }

    pub fn heartbeat(&self) {
        self.heartbeats.fetch_add(1, Relaxed);
    }

    /// A batch was committed (`changes` > 0) or recognised as already applied.
    pub fn batch_done(&self, agent: &str, applied_through: u64, changes: u64, duplicate: bool, latency: Duration) {
        if duplicate {
            self.batches_duplicate.fetch_add(1, Relaxed);
        } else {
            self.batches_accepted.fetch_add(1, Relaxed);
        }
        self.changes_applied.fetch_add(changes, Relaxed);
        self.apply_latency_micros_sum.fetch_add(latency.as_micros().min(u64::MAX as u128) as u64, Relaxed);
        self.apply_latency_count.fetch_add(1, Relaxed);
        let mut map = self.applied_seq.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(agent.to_string(), applied_through);
    }

    pub fn commit_group(&self) {
        self.commit_groups.fetch_add(1, Relaxed);
    }

    pub fn catalog_reload(&self, ok: bool) {
        let c = if ok { &self.catalog_reloads } else { &self.catalog_reload_failures };
        c.fetch_add(1, Relaxed);
    }

    pub fn alert_sent(&self) {
        self.alerts_sent.fetch_add(1, Relaxed);
    }

    pub fn alert_failed(&self) {
        self.alerts_failed.fetch_add(1, Relaxed);
    }

    pub fn alert_dropped(&self) {
        self.alerts_dropped.fetch_add(1, Relaxed);
    }

    pub fn mqtt_message(&self) {
        self.mqtt_messages.fetch_add(1, Relaxed);
    }

    pub fn mqtt_connection_failed(&self) {
        self.mqtt_connection_failures.fetch_add(1, Relaxed);
    }

    /// An open-data API request or download answered (`ok`) or refused (4xx/5xx).
    pub fn open_data_request(&self, ok: bool) {
        let c = if ok { &self.open_data_requests } else { &self.open_data_refused };
        c.fetch_add(1, Relaxed);
    }

    /// Rows served by `datastore_search` or a download.
    pub fn open_data_rows(&self, n: usize) {
        self.open_data_rows.fetch_add(n as u64, Relaxed);
    }

    pub fn dashboard_login(&self, ok: bool) {
        let c = if ok { &self.dashboard_logins } else { &self.dashboard_login_failures };
        c.fetch_add(1, Relaxed);
    }

    /// Adds a committed batch's quality checks.
    pub fn quality(&self, tally: &crate::quality::ingest::Tally) {
        if tally.checked.is_empty() {
            return;
        }
        let mut total = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        for (dataset, n) in &tally.checked {
            *total.checked.entry(dataset.clone()).or_default() += n;
        }
        for (k, n) in &tally.violations {
            *total.violations.entry(k.clone()).or_default() += n;
        }
        for (dataset, n) in &tally.quarantined {
            *total.quarantined.entry(dataset.clone()).or_default() += n;
        }
    }

    /// Whether this instance leads ([`crate::leader`]): the `kho_hub_leader` gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(u64::from(leader), Relaxed);
    }

    /// Replaces the freshness gauges with those of `s`.
    pub fn set_freshness(&self, s: &crate::freshness::Snapshot) {
        let text = freshness_gauges(s);
        *self.freshness.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            "kho_hub_batches_accepted_total",
            "Batches applied (fully or their new part).",
            self.batches_accepted.load(Relaxed),
        );
        counter(
            "kho_hub_batches_duplicate_total",
            "Batches already applied, acknowledged again.",
            self.batches_duplicate.load(Relaxed),
        );
        counter(
            "kho_hub_changes_applied_total",
            "Changes written to the warehouse.",
            self.changes_applied.load(Relaxed),
        );
        counter(
            "kho_hub_bytes_received_total",
            "Request body bytes received (compressed).",
            self.bytes_received.load(Relaxed),
        );
        counter("kho_hub_heartbeats_total", "Heartbeats stored.", self.heartbeats.load(Relaxed));
        counter(
            "kho_hub_commit_groups_total",
            "Warehouse transactions committed by the applier.",
            self.commit_groups.load(Relaxed),
        );
        counter(
            "kho_hub_catalog_reloads_total",
            "Catalogue files loaded after start.",
            self.catalog_reloads.load(Relaxed),
        );
        counter(
            "kho_hub_catalog_reload_failures_total",
            "New catalogue files refused (the old one stayed).",
            self.catalog_reload_failures.load(Relaxed),
        );
        counter("kho_hub_alerts_sent_total", "Alerts delivered to the webhook.", self.alerts_sent.load(Relaxed));
        counter(
            "kho_hub_alerts_failed_total",
            "Webhook delivery attempts that failed (retried).",
            self.alerts_failed.load(Relaxed),
        );
        counter(
            "kho_hub_alerts_dropped_total",
            "Alerts dropped because the alert queue was full.",
            self.alerts_dropped.load(Relaxed),
        );
        counter(
            "kho_hub_mqtt_messages_total",
            "Messages received from the MQTT broker (batches and heartbeats).",
            self.mqtt_messages.load(Relaxed),
        );
        counter(
            "kho_hub_mqtt_connection_failures_total",
            "MQTT connection attempts or connections that failed (retried).",
            self.mqtt_connection_failures.load(Relaxed),
        );
        counter(
            "kho_hub_open_data_requests_total",
            "Open-data API requests and downloads answered.",
            self.open_data_requests.load(Relaxed),
        );
        counter(
            "kho_hub_open_data_refused_total",
            "Open-data API requests refused (not found, invalid, busy, failed).",
            self.open_data_refused.load(Relaxed),
        );
        counter(
            "kho_hub_open_data_rows_total",
            "Rows served by datastore_search and downloads.",
            self.open_data_rows.load(Relaxed),
        );
        counter(
            "kho_hub_dashboard_logins_total",
            "Operator logins to the dashboard.",
            self.dashboard_logins.load(Relaxed),
        );
        counter(
            "kho_hub_dashboard_login_failures_total",
            "Refused dashboard logins (wrong name, password or form token).",
            self.dashboard_login_failures.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP kho_hub_leader 1 if this instance does the once-only work (freshness records, alerts, retention)."
        );
        let _ = writeln!(out, "# TYPE kho_hub_leader gauge\nkho_hub_leader {}", self.leader.load(Relaxed));
        let _ = writeln!(out, "# HELP kho_hub_batches_refused_total Requests refused, by error code.");
        let _ = writeln!(out, "# TYPE kho_hub_batches_refused_total counter");
        for (code, n) in self.refused.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "kho_hub_batches_refused_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP kho_hub_agent_applied_seq Highest sequence applied per agent.");
        let _ = writeln!(out, "# TYPE kho_hub_agent_applied_seq gauge");
        for (agent, seq) in self.applied_seq.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "kho_hub_agent_applied_seq{{agent=\"{}\"}} {seq}", escape_label(agent));
        }
        let sum = self.apply_latency_micros_sum.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP kho_hub_apply_latency_seconds Time from a batch entering the apply queue to its commit."
        );
        let _ = writeln!(out, "# TYPE kho_hub_apply_latency_seconds summary");
        let _ = writeln!(out, "kho_hub_apply_latency_seconds_sum {sum}");
        let _ = writeln!(out, "kho_hub_apply_latency_seconds_count {}", self.apply_latency_count.load(Relaxed));
        {
            let q = self.quality.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(
                out,
                "# HELP kho_hub_quality_rows_checked_total Rows checked against data-quality rules, per dataset."
            );
            let _ = writeln!(out, "# TYPE kho_hub_quality_rows_checked_total counter");
            for (dataset, n) in &q.checked {
                let _ =
                    writeln!(out, "kho_hub_quality_rows_checked_total{{dataset=\"{}\"}} {n}", escape_label(dataset));
            }
            let _ = writeln!(
                out,
                "# HELP kho_hub_quality_violations_total Rule violations found at ingest, per dataset, rule and policy."
            );
            let _ = writeln!(out, "# TYPE kho_hub_quality_violations_total counter");
            for ((dataset, rule, policy), n) in &q.violations {
                let policy = match policy {
                    crate::quality::Policy::Warn => "warn",
                    crate::quality::Policy::Reject => "reject",
                };
                let (dataset, rule) = (escape_label(dataset), escape_label(rule));
                let _ = writeln!(
                    out,
                    "kho_hub_quality_violations_total{{dataset=\"{dataset}\",rule=\"{rule}\",policy=\"{policy}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP kho_hub_quality_quarantined_total Rows held in quarantine by reject rules, per dataset."
            );
            let _ = writeln!(out, "# TYPE kho_hub_quality_quarantined_total counter");
            for (dataset, n) in &q.quarantined {
                let _ = writeln!(out, "kho_hub_quality_quarantined_total{{dataset=\"{}\"}} {n}", escape_label(dataset));
            }
        }
        out.push_str(&self.freshness.lock().unwrap_or_else(|p| p.into_inner()));
        out
    }
}

/// Freshness gauges: staleness and status per dataset, last contact per agent.
fn freshness_gauges(s: &crate::freshness::Snapshot) -> String {
    use kho_shared::freshness::Status;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kho_hub_dataset_staleness_seconds Seconds since the dataset was last known current (latest change or confirmed sync)."
    );
    let _ = writeln!(out, "# TYPE kho_hub_dataset_staleness_seconds gauge");
    for d in &s.datasets {
        if let Some(age) = d.freshness.as_ref().and_then(|f| f.age_s) {
            let _ = writeln!(
                out,
                "kho_hub_dataset_staleness_seconds{{dataset=\"{}\",department=\"{}\"}} {age}",
                escape_label(&d.dataset),
                escape_label(&d.department)
            );
        }
    }
    let _ =
        writeln!(out, "# HELP kho_hub_dataset_status 1 for the dataset's current freshness status, 0 for the others.");
    let _ = writeln!(out, "# TYPE kho_hub_dataset_status gauge");
    for d in &s.datasets {
        let Some(f) = &d.freshness else { continue };
        for st in [Status::OnTime, Status::Due, Status::Overdue, Status::NeverReceived] {
            let _ = writeln!(
                out,
                "kho_hub_dataset_status{{dataset=\"{}\",department=\"{}\",status=\"{}\"}} {}",
                escape_label(&d.dataset),
                escape_label(&d.department),
                st.as_str(),
                u8::from(f.status == st)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kho_hub_agent_last_seen_timestamp_seconds Unix time of the agent's last heartbeat or applied batch."
    );
    let _ = writeln!(out, "# TYPE kho_hub_agent_last_seen_timestamp_seconds gauge");
    for a in &s.agents {
        if let Some(t) = a.last_seen_at {
            let _ = writeln!(
                out,
                "kho_hub_agent_last_seen_timestamp_seconds{{agent=\"{}\"}} {}",
                escape_label(&a.agent),
                t.as_second()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kho_hub_agent_offline 1 when the agent is out of contact longer than agent_offline_after."
    );
    let _ = writeln!(out, "# TYPE kho_hub_agent_offline gauge");
    for a in &s.agents {
        let _ = writeln!(out, "kho_hub_agent_offline{{agent=\"{}\"}} {}", escape_label(&a.agent), u8::from(a.offline));
    }
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labels() {
        let m = Metrics::default();
        m.refused(ErrorCode::SequenceGap);
        m.batch_done("so-y-te-01", 42, 10, false, Duration::from_millis(5));
        let text = m.render();
        assert!(text.contains("kho_hub_batches_refused_total{code=\"sequence_gap\"} 1"), "{text}");
        assert!(text.contains("kho_hub_agent_applied_seq{agent=\"so-y-te-01\"} 42"), "{text}");
        assert!(text.contains("kho_hub_changes_applied_total 10"), "{text}");
        assert!(text.contains("kho_hub_apply_latency_seconds_count 1"), "{text}");
    }
}
