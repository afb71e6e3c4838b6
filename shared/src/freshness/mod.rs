//! Is a dataset's data current? The freshness rules, with the clock passed in.
//!
//! [`evaluate`]`(now, rule, observations)` judges one dataset against its [`Schedule`] and returns a
//! [`Freshness`] shaped like dbt's source-freshness result (`max_loaded_at`, `snapshotted_at`, an
//! age, a status) with HDX's ladder adapted to deadlines:
//!
//! - `never_received`: the hub has never received anything for the dataset;
//! - `on_time`: the most recently ended period is satisfied;
//! - `due`: some ended period is unsatisfied, but its deadline plus grace has not passed;
//! - `overdue`: an ended period is unsatisfied past its deadline plus grace.
//!
//! **What satisfies a period** `[start, end)` (all criteria that apply must hold):
//! - `update_kind = "change"`: a change was applied at or after `end`, i.e. in the period's reporting
//!   window. Reports for a period arrive after it closes (January's figures in early February), so a
//!   change *during* a period is evidence for the one before it, not for the one still running;
//! - `update_kind = "sync"`: a confirmed read of the source (or an applied change) at or after `end`:
//!   a read after the period closed has seen all of its data, even if nothing changed. Continuously
//!   captured sources (a one-stop-shop database) should use `sync`, or quiet weekends turn overdue;
//! - with a `freshness_field`: the maximum business date (e.g. the report month) is on or after the
//!   period's first local day — this tells a late re-export of January from February's report.
//!
//! Evidence later than `now` (a skewed clock) counts as `now`. Each criterion is monotonic (evidence
//! that satisfies a period satisfies every earlier one), so the unsatisfied periods are always a
//! suffix of time and the evaluator finds the oldest one in O(1): the status reports that period, so
//! a dataset two months behind shows the older, overdue month rather than the current, merely due
//! one.
//!
//! **Agent liveness is separate** (LESSONS: "active device that sends no data"): `agent_offline` is
//! true when the agent has not been in contact (heartbeat, sync or batch) within its offline
//! threshold, or was never seen. An agent that checks in and finds nothing new is online, and a
//! `sync` dataset stays `on_time` through it.
//!
//! Submodules: [`history`] (status transitions and per-period lateness), [`scorecard`] (department
//! shares on time) and [`readiness`] (operational-scenario inputs).

pub mod history;
pub mod readiness;
pub mod scorecard;

use std::time::Duration;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::schedule::{Period, Schedule, ScheduleError, end_of_day};

/// What counts as an update (catalogue `update_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    /// New or changed rows are expected every period.
    Change,
    /// A confirmed fresh read of the source suffices, even if nothing changed.
    Sync,
}

/// The catalogue's freshness rule for one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRule {
    pub schedule: Schedule,
    pub update_kind: UpdateKind,
    /// Date column whose maximum must reach each period; its value arrives in
    /// [`Observations::max_business_date`].
    pub freshness_field: Option<String>,
}

/// What the hub knows about a dataset and its agent at evaluation time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    /// First time the hub received anything (a change or a sync) for the dataset.
    pub first_received_at: Option<Timestamp>,
    /// When the last change to the dataset was applied (dbt's `max_loaded_at`).
    pub last_change_at: Option<Timestamp>,
    /// When the agent last confirmed a complete fresh read of the source.
    pub last_sync_at: Option<Timestamp>,
    /// Maximum of the dataset's `freshness_field`, when it has one.
    pub max_business_date: Option<Date>,
    /// Last contact of any kind from the dataset's agent.
    pub agent_last_seen_at: Option<Timestamp>,
    /// How long without contact before the agent counts as offline.
    pub agent_offline_after: Duration,
}

/// A dataset's data status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    OnTime,
    Due,
    Overdue,
    NeverReceived,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::OnTime => "on_time",
            Status::Due => "due",
            Status::Overdue => "overdue",
            Status::NeverReceived => "never_received",
        }
    }
}

/// One dataset's freshness at `snapshotted_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    pub status: Status,
    /// The agent is out of contact; reported beside, never instead of, the data status.
    pub agent_offline: bool,
    /// The period being judged: the oldest unsatisfied one, or the last ended one when on time.
    pub period: Period,
    /// When `period`'s data is (or was) due.
    pub deadline: Timestamp,
    /// `deadline` plus grace: when an unsatisfied `period` turns overdue.
    pub overdue_after: Timestamp,
    /// The evaluation time (dbt's `snapshotted_at`).
    pub snapshotted_at: Timestamp,
    /// Last change applied (dbt's `max_loaded_at`).
    pub max_loaded_at: Option<Timestamp>,
    pub last_sync_at: Option<Timestamp>,
    pub max_business_date: Option<Date>,
    pub agent_last_seen_at: Option<Timestamp>,
    /// Seconds since the data was last known current (latest of change and sync); dbt's age.
    pub age_s: Option<i64>,
    /// Seconds past `deadline`, when `overdue`.
    pub overdue_by_s: Option<i64>,
}

/// Judges one dataset at `now`.
pub fn evaluate(now: Timestamp, rule: &DatasetRule, obs: &Observations) -> Result<Freshness, ScheduleError> {
    let sched = &rule.schedule;
    let current = sched.period_containing(now)?;
    let last_ended = sched.cadence.prev(&current)?;
    let judge = |status: Status, period: Period| -> Result<Freshness, ScheduleError> {
        let deadline = sched.due(&period)?;
        let overdue_after = sched.overdue_after(&period)?;
        let known_current = obs.last_change_at.max(obs.last_sync_at);
        Ok(Freshness {
            status,
            agent_offline: agent_offline(now, obs),
            period,
            deadline,
            overdue_after,
            snapshotted_at: now,
            max_loaded_at: obs.last_change_at,
            last_sync_at: obs.last_sync_at,
            max_business_date: obs.max_business_date,
            agent_last_seen_at: obs.agent_last_seen_at,
            age_s: known_current.map(|t| seconds_between(t, now)),
            overdue_by_s: (status == Status::Overdue).then(|| seconds_between(deadline, now)),
        })
    };
    let Some(first_received) = obs.first_received_at else {
        return judge(Status::NeverReceived, last_ended);
    };
    // Received but no criterion has evidence yet: periods are owed from the first receipt on.
    let oldest = match oldest_unsatisfied(now, rule, obs)? {
        Some(p) => p,
        None => sched.period_containing(first_received)?,
    };
    if oldest.start >= last_ended.end {
        return judge(Status::OnTime, last_ended);
    }
    if now >= sched.overdue_after(&oldest)? { judge(Status::Overdue, oldest) } else { judge(Status::Due, oldest) }
}

/// Whether the agent is out of contact at `now` (never seen counts as offline).
pub fn agent_offline(now: Timestamp, obs: &Observations) -> bool {
    let limit = SignedDuration::try_from(obs.agent_offline_after).unwrap_or(SignedDuration::MAX);
    obs.agent_last_seen_at.is_none_or(|seen| now.duration_since(seen) > limit)
}

/// The oldest period not satisfied by the evidence, or `None` when some criterion has no evidence.
fn oldest_unsatisfied(now: Timestamp, rule: &DatasetRule, obs: &Observations) -> Result<Option<Period>, ScheduleError> {
    let cadence = rule.schedule.cadence;
    // A period needs every criterion, so the oldest unsatisfied is the earliest across criteria.
    let mut oldest: Option<Period> = None;
    let mut require = |p: Period| {
        if oldest.as_ref().is_none_or(|o| p.start < o.start) {
            oldest = Some(p);
        }
    };
    // Satisfied iff end <= evidence: the first unsatisfied period is the one containing it.
    let evidence = match rule.update_kind {
        UpdateKind::Change => obs.last_change_at,
        UpdateKind::Sync => obs.last_sync_at.max(obs.last_change_at),
    };
    let Some(evidence) = evidence else { return Ok(None) };
    require(cadence.period_containing(evidence.min(now))?);
    if rule.freshness_field.is_some() {
        // Satisfied iff the period's first local day <= max date, i.e. start < end of that day.
        let Some(date) = obs.max_business_date else { return Ok(None) };
        let last_instant = end_of_day(date)?.checked_sub(SignedDuration::from_nanos(1));
        let last_instant = last_instant.map_err(|_| crate::schedule::out_of_range(date))?;
        require(cadence.next(&cadence.period_containing(last_instant.min(now))?)?);
    }
    Ok(oldest)
}

/// Whole seconds from `a` to `b` (negative when `b` is earlier).
pub(crate) fn seconds_between(a: Timestamp, b: Timestamp) -> i64 {
    b.duration_since(a).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn rule(schedule: &str, update_kind: UpdateKind) -> DatasetRule {
        let schedule: Schedule = toml::from_str(schedule).expect("schedule");
        DatasetRule { schedule, update_kind, freshness_field: None }
    }

    fn monthly() -> DatasetRule {
        rule("cadence = \"monthly\"\ndeadline = { day = 5, time = \"17:00\" }", UpdateKind::Change)
    }

    /// A dataset received long ago whose last change was at `change`.
    fn changed(change: &str) -> Observations {
        Observations {
            first_received_at: Some(ts("2020-01-01T00:00:00Z")),
            last_change_at: Some(ts(change)),
            agent_last_seen_at: Some(ts(change)),
            agent_offline_after: Duration::from_secs(86_400 * 365 * 20),
            ..Observations::default()
        }
    }

    fn check(rule: &DatasetRule, now: &str, obs: &Observations) -> (Status, String) {
        let f = evaluate(ts(now), rule, obs).expect("evaluate");
        (f.status, f.period.label)
    }

    #[test]
    fn monthly_report_through_its_deadline() {
        let r = monthly();
        let feb = changed("2026-03-03T10:00:00+07:00"); // February's report, sent 3 March
        let jan = changed("2026-02-03T10:00:00+07:00");
        assert_eq!(check(&r, "2026-03-10T00:00:00+07:00", &feb), (Status::OnTime, "2026-02".into()));
        assert_eq!(check(&r, "2026-03-02T00:00:00+07:00", &jan), (Status::Due, "2026-02".into()));
        assert_eq!(check(&r, "2026-03-05T16:59:59+07:00", &jan), (Status::Due, "2026-02".into()));
        assert_eq!(check(&r, "2026-03-05T17:00:00+07:00", &jan), (Status::Overdue, "2026-02".into()));
        // Two months behind: the older month is the one reported, overdue since 5 March.
        let f = evaluate(ts("2026-04-02T17:00:00+07:00"), &r, &jan).expect("evaluate");
        assert_eq!((f.status, f.period.label.as_str()), (Status::Overdue, "2026-02"));
        assert_eq!(f.deadline, ts("2026-03-05T17:00:00+07:00"));
        assert_eq!(f.overdue_by_s, Some(28 * 86_400));
        assert_eq!(
            f.age_s,
            Some(ts("2026-04-02T17:00:00+07:00").as_second() - ts("2026-02-03T10:00:00+07:00").as_second())
        );
    }

    #[test]
    fn month_ends_and_leap_february() {
        let r = rule("cadence = \"monthly\"\ndeadline = { day = 31 }", UpdateKind::Change);
        // January's report is due by the end of February: 28th in 2027, 29th in 2028.
        let jan27 = changed("2027-01-31T10:00:00+07:00");
        assert_eq!(check(&r, "2027-02-28T23:59:59+07:00", &jan27).0, Status::Due);
        assert_eq!(check(&r, "2027-03-01T00:00:00+07:00", &jan27).0, Status::Overdue);
        let jan28 = changed("2028-01-31T10:00:00+07:00");
        assert_eq!(check(&r, "2028-02-29T23:59:59+07:00", &jan28).0, Status::Due);
        assert_eq!(check(&r, "2028-03-01T00:00:00+07:00", &jan28).0, Status::Overdue);
        let mar = changed("2026-04-30T23:00:00+07:00"); // March's report on 30 April
        assert_eq!(check(&r, "2026-05-01T00:00:00+07:00", &mar), (Status::Due, "2026-04".into()));
    }

    #[test]
    fn utc_plus_seven_day_boundary() {
        let r = rule("cadence = \"daily\"\ndeadline = { time = \"08:00\" }", UpdateKind::Change);
        let now = "2026-04-01T19:00:00Z"; // 2 April 02:00 in Sơn La
        // 31 March 17:30 UTC is 00:30 on 1 April locally: after 31 March closed.
        assert_eq!(check(&r, now, &changed("2026-03-31T17:30:00Z")), (Status::Due, "2026-04-01".into()));
        assert_eq!(check(&r, now, &changed("2026-04-01T17:30:00Z")), (Status::OnTime, "2026-04-01".into()));
        // 16:30 UTC is 23:30 on 31 March: 31 March had not closed, so its report is overdue.
        assert_eq!(check(&r, now, &changed("2026-03-31T16:30:00Z")), (Status::Overdue, "2026-03-31".into()));
    }

    #[test]
    fn quarter_and_year_ends() {
        let q = rule("cadence = \"quarterly\"\ndeadline = { days_after = 15 }", UpdateKind::Change);
        let q1 = changed("2026-04-14T09:00:00+07:00");
        assert_eq!(check(&q, "2026-07-15T23:59:59+07:00", &q1), (Status::Due, "2026-Q2".into()));
        assert_eq!(check(&q, "2026-07-16T00:00:00+07:00", &q1), (Status::Overdue, "2026-Q2".into()));
        let q3 = changed("2026-10-02T09:00:00+07:00");
        assert_eq!(check(&q, "2026-12-31T17:00:00Z", &q3), (Status::Due, "2026-Q4".into()));
        let y = rule("cadence = \"yearly\"\ndeadline = { month = 1, day = 31 }", UpdateKind::Change);
        let y2025 = changed("2026-01-20T09:00:00+07:00");
        assert_eq!(check(&y, "2026-12-31T16:59:59Z", &y2025), (Status::OnTime, "2025".into()));
        assert_eq!(check(&y, "2026-12-31T17:00:00Z", &y2025), (Status::Due, "2026".into()));
        assert_eq!(check(&y, "2027-01-31T17:00:00Z", &y2025), (Status::Overdue, "2026".into()));
    }

    #[test]
    fn weekly_iso_boundary() {
        let w = rule("cadence = \"weekly\"\ndeadline = { weekday = \"monday\", time = \"10:00\" }", UpdateKind::Change);
        // Week 2026-W53 ends Sunday 3 January 2027; its report is due Monday 4 January 10:00.
        let w52 = changed("2026-12-28T09:00:00+07:00");
        assert_eq!(check(&w, "2027-01-04T09:59:00+07:00", &w52), (Status::Due, "2026-W53".into()));
        assert_eq!(check(&w, "2027-01-04T10:00:00+07:00", &w52), (Status::Overdue, "2026-W53".into()));
        let w53 = changed("2027-01-04T08:00:00+07:00");
        assert_eq!(check(&w, "2027-01-04T10:00:00+07:00", &w53), (Status::OnTime, "2026-W53".into()));
    }

    #[test]
    fn sync_counts_a_read_that_found_nothing_new() {
        let r = rule("cadence = \"daily\"\ndeadline = { time = \"08:00\" }\ngrace = \"1h\"", UpdateKind::Sync);
        let obs = |sync: &str, seen: &str| Observations {
            first_received_at: Some(ts("2026-01-01T00:00:00Z")),
            last_change_at: Some(ts("2026-03-01T10:00:00+07:00")), // nothing new for a month
            last_sync_at: Some(ts(sync)),
            agent_last_seen_at: Some(ts(seen)),
            agent_offline_after: Duration::from_secs(15 * 60),
            ..Observations::default()
        };
        let quiet = obs("2026-04-01T00:05:00+07:00", "2026-04-01T09:55:00+07:00");
        let f = evaluate(ts("2026-04-01T10:00:00+07:00"), &r, &quiet).expect("evaluate");
        assert_eq!((f.status, f.agent_offline), (Status::OnTime, false));
        assert_eq!(f.max_loaded_at, Some(ts("2026-03-01T10:00:00+07:00")));
        assert_eq!(
            f.age_s,
            Some(ts("2026-04-01T10:00:00+07:00").as_second() - ts("2026-04-01T00:05:00+07:00").as_second())
        );
        // Last read before midnight, agent silent since: due within grace, then overdue, and offline.
        let down = obs("2026-03-31T23:50:00+07:00", "2026-03-31T23:50:00+07:00");
        let f = evaluate(ts("2026-04-01T08:30:00+07:00"), &r, &down).expect("evaluate");
        assert_eq!((f.status, f.agent_offline, f.overdue_after), (Status::Due, true, ts("2026-04-01T09:00:00+07:00")));
        let f = evaluate(ts("2026-04-01T09:00:00+07:00"), &r, &down).expect("evaluate");
        assert_eq!((f.status, f.overdue_by_s), (Status::Overdue, Some(3600)));
        // The same quiet month judged as `change`: overdue although the agent is online.
        let as_change = DatasetRule { update_kind: UpdateKind::Change, ..r.clone() };
        let f = evaluate(ts("2026-04-01T10:00:00+07:00"), &as_change, &quiet).expect("evaluate");
        assert_eq!((f.status, f.agent_offline, f.period.label.as_str()), (Status::Overdue, false, "2026-03-01"));
    }

    #[test]
    fn freshness_field_tells_a_late_export_from_a_new_report() {
        let r = DatasetRule { freshness_field: Some("report_month".into()), ..monthly() };
        let now = "2026-03-10T00:00:00+07:00";
        let with_date = |date: Option<&str>| Observations {
            max_business_date: date.map(|d| d.parse().expect("date")),
            ..changed("2026-03-02T10:00:00+07:00")
        };
        // A change on 2 March, but the newest report month is still January: February is overdue.
        assert_eq!(check(&r, now, &with_date(Some("2026-01-01"))), (Status::Overdue, "2026-02".into()));
        assert_eq!(check(&r, now, &with_date(Some("2026-02-01"))), (Status::OnTime, "2026-02".into()));
        assert_eq!(check(&r, now, &with_date(Some("2030-01-01"))), (Status::OnTime, "2026-02".into()));
        // No business date yet: owed from the first receipt (long ago), so overdue.
        assert_eq!(check(&r, now, &with_date(None)).0, Status::Overdue);
    }

    #[test]
    fn never_received_and_first_receipt() {
        let r = monthly();
        let f = evaluate(ts("2026-03-10T00:00:00+07:00"), &r, &Observations::default()).expect("evaluate");
        assert_eq!((f.status, f.agent_offline, f.period.label.as_str()), (Status::NeverReceived, true, "2026-02"));
        assert_eq!((f.age_s, f.overdue_by_s), (None, None));
        // First contact on 12 March with a sync only: nothing owed for February; March is.
        let synced = Observations {
            first_received_at: Some(ts("2026-03-12T00:00:00+07:00")),
            last_sync_at: Some(ts("2026-03-12T00:00:00+07:00")),
            ..Observations::default()
        };
        assert_eq!(check(&r, "2026-03-20T00:00:00+07:00", &synced), (Status::OnTime, "2026-02".into()));
        assert_eq!(check(&r, "2026-04-06T00:00:00+07:00", &synced), (Status::Overdue, "2026-03".into()));
    }

    #[test]
    fn interval_cadence_and_future_evidence() {
        let r = rule("cadence = { every = \"6h\" }\ngrace = \"30m\"", UpdateKind::Sync);
        let obs = |sync: &str| Observations {
            first_received_at: Some(ts("2026-01-01T00:00:00Z")),
            last_sync_at: Some(ts(sync)),
            ..Observations::default()
        };
        let now = "2026-04-01T12:20:00+07:00";
        assert_eq!(check(&r, now, &obs("2026-04-01T12:01:00+07:00")), (Status::OnTime, "2026-04-01T06:00".into()));
        assert_eq!(check(&r, now, &obs("2026-04-01T11:59:00+07:00")), (Status::Due, "2026-04-01T06:00".into()));
        assert_eq!(check(&r, "2026-04-01T12:30:00+07:00", &obs("2026-04-01T11:59:00+07:00")).0, Status::Overdue);
        // A clock ahead by a year satisfies nothing beyond now.
        assert_eq!(check(&r, now, &obs("2027-04-01T00:00:00+07:00")).0, Status::OnTime);
    }

    #[test]
    fn freshness_serialises_in_dbt_shape() {
        let f = evaluate(ts("2026-03-10T00:00:00+07:00"), &monthly(), &changed("2026-03-03T10:00:00+07:00"))
            .expect("evaluate");
        let v = serde_json::to_value(&f).expect("json");
        assert_eq!(v["status"], "on_time");
        assert_eq!(v["max_loaded_at"], "2026-03-03T03:00:00Z");
        assert_eq!(v["snapshotted_at"], "2026-03-09T17:00:00Z");
        assert_eq!(v["period"]["label"], "2026-02");
        assert_eq!(serde_json::from_value::<Freshness>(v).expect("round trip"), f);
    }

    proptest::proptest! {
        #[test]
        fn status_agrees_with_the_judged_deadline(
            now in 1_600_000_000i64..2_000_000_000,
            change_ago in 0i64..400 * 86_400,
            sync_ago in 0i64..400 * 86_400,
            which in 0usize..5,
            sync in proptest::bool::ANY,
        ) {
            let schedules = [
                "cadence = \"daily\"\ndeadline = { time = \"08:00\" }",
                "cadence = \"weekly\"\ndeadline = { weekday = \"monday\", time = \"10:00\" }",
                "cadence = \"monthly\"\ndeadline = { day = 31 }\ngrace = \"1day\"",
                "cadence = \"quarterly\"\ndeadline = { days_after = 15 }",
                "cadence = \"yearly\"\ndeadline = { month = 2, day = 29 }",
            ];
            let kind = if sync { UpdateKind::Sync } else { UpdateKind::Change };
            let r = rule(schedules[which], kind);
            let now = Timestamp::from_second(now).expect("now");
            let ago = |s: i64| now.checked_sub(SignedDuration::from_secs(s)).expect("ago");
            let obs = Observations {
                first_received_at: Some(ago(500 * 86_400)),
                last_change_at: Some(ago(change_ago)),
                last_sync_at: Some(ago(sync_ago)),
                ..Observations::default()
            };
            let f = evaluate(now, &r, &obs).expect("evaluate");
            proptest::prop_assert!(f.period.end <= now, "judged an unfinished period");
            proptest::prop_assert!(f.deadline >= f.period.end && f.overdue_after >= f.deadline);
            match f.status {
                Status::Overdue => proptest::prop_assert!(now >= f.overdue_after),
                Status::Due => proptest::prop_assert!(now < f.overdue_after),
                Status::OnTime => {
                    let next = r.schedule.cadence.next(&f.period).expect("next");
                    proptest::prop_assert!(next.contains(now));
                }
                Status::NeverReceived => proptest::prop_assert!(false, "received"),
            }
        }
    }
}
