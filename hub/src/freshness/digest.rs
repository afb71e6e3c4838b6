//! The daily digest: once a day, at a configured local time, one message per department that
//! says where its datasets stand — how many are on time, which need attention (overdue, due,
//! never received) with their deadlines, and which of its agents are out of contact.
//!
//! Alerts say "something changed"; the digest says "this is the state", so a department that
//! missed or ignored an alert is reminded every morning until the data arrives (LESSONS: alerts
//! nobody reads are no better than none). Pure: a snapshot and a clock reading in, digests out.
//!
//! **Once a day, even across restarts.** [`due`] decides from the local date of the last digest
//! sent (kept in the warehouse's bookkeeping table under [`SENT_ON_KEY`]): the first evaluation at
//! or after `digest_at` on a day sends it, a hub that was down at `digest_at` sends it when it
//! comes back that day, and a restart after sending does not send it again.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kho_shared::freshness::Status;
use kho_shared::freshness::scorecard::{self, CurrentScore};
use kho_shared::schedule::{TZ_NAME, local_date, local_instant};
use serde::Serialize;

use super::Snapshot;
use crate::catalog::Department;

/// Bookkeeping key holding the local date (`YYYY-MM-DD`) of the last digest sent.
pub const SENT_ON_KEY: &str = "digest_sent_on";

/// The local date whose digest is due at `now`, if any: `digest_at` has passed today (in the
/// province's time zone) and today's digest has not been sent.
pub fn due(now: Timestamp, digest_at: Time, last_sent: Option<Date>) -> Option<Date> {
    let today = local_date(now);
    let send_from = local_instant(today, digest_at).ok()?;
    (now >= send_from && last_sent.is_none_or(|d| d < today)).then_some(today)
}

/// One dataset that needs the department's attention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestItem {
    pub dataset: String,
    pub title: String,
    pub status: Status,
    pub period: String,
    pub deadline: Timestamp,
    /// Whole days past the deadline, when overdue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_overdue: Option<i64>,
    pub agent_offline: bool,
}

/// One department's digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepartmentDigest {
    pub department: Department,
    /// The local date the digest is for.
    pub date: Date,
    pub time_zone: &'static str,
    pub evaluated_at: Timestamp,
    pub current: CurrentScore,
    /// Overdue first (most days late first), then never received, then due (nearest deadline first).
    pub attention: Vec<DigestItem>,
    /// The department's agents that are out of contact.
    pub agents_offline: Vec<String>,
}

impl DepartmentDigest {
    /// A one-line summary, e.g. "Sở Y tế: 3/5 datasets on time, 1 overdue, 1 due".
    pub fn summary(&self) -> String {
        let c = &self.current;
        let mut text = format!("{}: {}/{} datasets on time", self.department.name, c.on_time, c.datasets);
        for (n, what) in [(c.overdue, "overdue"), (c.never_received, "never received"), (c.due, "due")] {
            if n > 0 {
                text.push_str(&format!(", {n} {what}"));
            }
        }
        if !self.agents_offline.is_empty() {
            text.push_str(&format!(", agents offline: {}", self.agents_offline.join(", ")));
        }
        text
    }
}

fn rank(item: &DigestItem) -> (u8, i64) {
    match item.status {
        Status::Overdue => (0, -item.days_overdue.unwrap_or(0)),
        Status::NeverReceived => (1, 0),
        _ => (2, item.deadline.as_second()),
    }
}

/// The digest of every catalogue department that owns at least one dataset, in catalogue order.
pub fn department_digests(s: &Snapshot, date: Date) -> Vec<DepartmentDigest> {
    let Some(now) = s.evaluated_at else {
        return Vec::new();
    };
    s.catalog
        .departments
        .iter()
        .filter_map(|dept| {
            let mine: Vec<_> = s.datasets.iter().filter(|d| d.department == dept.code).collect();
            if mine.is_empty() {
                return None;
            }
            let current = scorecard::current(mine.iter().filter_map(|d| d.freshness.as_ref()));
            let mut attention: Vec<DigestItem> = mine
                .iter()
                .filter_map(|d| {
                    let f = d.freshness.as_ref()?;
                    (f.status != Status::OnTime).then(|| DigestItem {
                        dataset: d.dataset.clone(),
                        title: d.title.clone(),
                        status: f.status,
                        period: f.period.label.clone(),
                        deadline: f.deadline,
                        days_overdue: f.overdue_by_s.map(|s| s / 86_400),
                        agent_offline: f.agent_offline,
                    })
                })
                .collect();
            attention.sort_by_key(rank);
            let agents_offline = s
                .agents
                .iter()
                .filter(|a| a.offline && a.datasets.iter().any(|id| mine.iter().any(|d| &d.dataset == id)))
                .map(|a| a.agent.clone())
                .collect();
            Some(DepartmentDigest {
                department: dept.clone(),
                date,
                time_zone: TZ_NAME,
                evaluated_at: now,
                current,
                attention,
                agents_offline,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn at(h: i8, m: i8) -> Time {
        Time::new(h, m, 0, 0).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn due_once_per_local_day_after_the_time() {
        let seven_thirty = at(7, 30);
        // 00:29 UTC = 07:29 in Sơn La: not yet.
        assert_eq!(due(t("2026-03-10T00:29:59Z"), seven_thirty, None), None);
        // 00:30 UTC = 07:30 local: due for the 10th.
        let day = jiff::civil::date(2026, 3, 10);
        assert_eq!(due(t("2026-03-10T00:30:00Z"), seven_thirty, None), Some(day));
        // Already sent today: not again, even late in the evening.
        assert_eq!(due(t("2026-03-10T15:00:00Z"), seven_thirty, Some(day)), None);
        // 17:00 UTC on the 10th is already the 11th at 00:00 local, before 07:30: nothing yet.
        assert_eq!(due(t("2026-03-10T17:00:00Z"), seven_thirty, Some(day)), None);
        // A hub that was down at 07:30 sends when it comes back that day.
        assert_eq!(due(t("2026-03-11T03:00:00Z"), seven_thirty, Some(day)), Some(jiff::civil::date(2026, 3, 11)));
    }

    #[test]
    fn due_uses_the_local_date_across_the_utc_boundary() {
        // 23:00 local on 31 Dec is 16:00 UTC; a digest at 23:00 is for the 31st, and the one at
        // 00:15 local on 1 Jan (17:15 UTC on 31 Dec) is already for the new year.
        let dec31 = jiff::civil::date(2026, 12, 31);
        assert_eq!(due(t("2026-12-31T16:00:00Z"), at(23, 0), None), Some(dec31));
        assert_eq!(due(t("2026-12-31T17:15:00Z"), at(0, 15), Some(dec31)), Some(jiff::civil::date(2027, 1, 1)));
    }
}
