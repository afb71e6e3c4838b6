//! Which alerts a new snapshot calls for. Pure: takes snapshots, returns [`Alert`]s.
//!
//! - `dataset_overdue` when a dataset is `overdue` and has not been alerted yet — **unless its
//!   agent is offline**: then the one `agent_offline` alert speaks for all of the agent's datasets
//!   (LESSONS: no alarm storms), and the dataset alert follows only if the agent comes back and
//!   the data is still overdue;
//! - `dataset_recovered` when an alerted dataset is no longer overdue;
//! - `agent_offline` when an agent that has been seen at least once goes out of contact, listing
//!   its datasets; `agent_recovered` when it is back.
//!
//! - `department_digest` is not decided here but in [`super::digest`]; it travels the same way.
//!
//! The first snapshot after start only primes the state: a restarted hub does not re-send alerts
//! for conditions that already held.

use std::collections::HashSet;

use jiff::Timestamp;
use kho_shared::freshness::Status;
use serde::Serialize;

use super::Snapshot;
use super::digest::DepartmentDigest;
use crate::catalog::Contact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    DatasetOverdue,
    DatasetRecovered,
    AgentOffline,
    AgentRecovered,
    /// The daily digest of one department ([`super::digest`]).
    DepartmentDigest,
}

/// The webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub at: Timestamp,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Box<DepartmentDigest>>,
}

impl Alert {
    fn new(kind: AlertKind, at: Timestamp, summary: String) -> Alert {
        Alert {
            kind,
            at,
            summary,
            dataset: None,
            title: None,
            department: None,
            contact: None,
            status: None,
            period: None,
            deadline: None,
            agent: None,
            last_seen_at: None,
            datasets: Vec::new(),
            digest: None,
        }
    }

    /// The webhook message carrying a department's daily digest.
    pub fn digest(digest: DepartmentDigest) -> Alert {
        let mut alert = Alert::new(AlertKind::DepartmentDigest, digest.evaluated_at, digest.summary());
        alert.department = Some(digest.department.code.clone());
        alert.contact = Some(digest.department.contact.clone());
        alert.datasets = digest.attention.iter().map(|i| i.dataset.clone()).collect();
        alert.digest = Some(Box::new(digest));
        alert
    }
}

/// What has been alerted so far.
#[derive(Debug, Default)]
pub struct AlertState {
    primed: bool,
    overdue: HashSet<String>,
    offline: HashSet<String>,
    /// Dataset alerts held back because the dataset's agent was offline.
    pub suppressed: u64,
}

impl AlertState {
    /// The alerts `s` calls for, updating what has been alerted.
    pub fn observe(&mut self, s: &Snapshot) -> Vec<Alert> {
        let Some(now) = s.evaluated_at else {
            return Vec::new();
        };
        let first = !self.primed;
        self.primed = true;
        let mut out = Vec::new();
        for a in &s.agents {
            if a.offline && a.last_seen_at.is_some() && self.offline.insert(a.agent.clone()) {
                let mut alert = Alert::new(
                    AlertKind::AgentOffline,
                    now,
                    format!("agent {} is offline (its datasets' alerts are held back)", a.agent),
                );
                alert.agent = Some(a.agent.clone());
                alert.last_seen_at = a.last_seen_at;
                alert.datasets = a.datasets.clone();
                out.push(alert);
            } else if !a.offline && self.offline.remove(&a.agent) {
                let mut alert = Alert::new(AlertKind::AgentRecovered, now, format!("agent {} is back online", a.agent));
                alert.agent = Some(a.agent.clone());
                alert.last_seen_at = a.last_seen_at;
                alert.datasets = a.datasets.clone();
                out.push(alert);
            }
        }
        for d in &s.datasets {
            let Some(f) = &d.freshness else { continue };
            let dataset_alert = |kind, summary| {
                let mut alert = Alert::new(kind, now, summary);
                let dept = s.catalog.department(&d.department);
                alert.dataset = Some(d.dataset.clone());
                alert.title = Some(d.title.clone());
                alert.department = Some(d.department.clone());
                alert.contact = dept.map(|d| d.contact.clone());
                alert.status = Some(f.status);
                alert.period = Some(f.period.label.clone());
                alert.deadline = Some(f.deadline);
                alert
            };
            if f.status == Status::Overdue && !self.overdue.contains(&d.dataset) {
                if f.agent_offline && !first {
                    self.suppressed += 1;
                    continue;
                }
                self.overdue.insert(d.dataset.clone());
                let summary = format!("{} ({}) is overdue for {}", d.title, d.dataset, f.period.label);
                out.push(dataset_alert(AlertKind::DatasetOverdue, summary));
            } else if f.status != Status::Overdue && self.overdue.remove(&d.dataset) {
                let summary = format!("{} ({}) is {} again", d.title, d.dataset, f.status.as_str());
                out.push(dataset_alert(AlertKind::DatasetRecovered, summary));
            }
        }
        if first {
            out.clear();
        }
        out
    }
}
