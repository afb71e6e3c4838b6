//! Status transitions, and what they say about each past period: on time, late (by how much), missed.
//!
//! The hub stores a [`Transition`] whenever a dataset's evaluated status or judged period changes
//! ([`transition`] decides). From that log alone, [`outcome`] answers "how many days late was the
//! Department of Finance's quarterly report in Q2":
//!
//! - period `Q` was **satisfied** at the first transition to `on_time` whose judged period starts at
//!   or after `Q` (satisfaction is monotonic, see [`super`]: data that makes a later period on time
//!   covers every earlier one);
//! - satisfied by `deadline + grace` → `on_time` (lateness within grace is still reported in
//!   `late_by_s`); satisfied later → `late`; never satisfied and past `deadline + grace` → `missed`
//!   (late so far, still counting); otherwise `pending`;
//! - a period that ended before the log begins is `not_tracked`: Kho was not watching it, so it
//!   counts neither for nor against the department.
//!
//! Lateness is measured from the deadline, not from the end of grace; `days_late` rounds up, so a
//! report due by the end of 15 July that arrives on the morning of 18 July is 3 days late.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Freshness, Status, seconds_between};
use crate::schedule::{Period, Schedule, ScheduleError};

/// One change of a dataset's evaluated status or judged period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Timestamp,
    pub status: Status,
    pub period: Period,
}

/// The transition to record after evaluating `current`, if anything changed since `previous`.
pub fn transition(previous: Option<&Freshness>, current: &Freshness) -> Option<Transition> {
    let changed = previous.is_none_or(|p| p.status != current.status || p.period != current.period);
    changed.then(|| Transition { at: current.snapshotted_at, status: current.status, period: current.period.clone() })
}

/// How a period's data turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    OnTime,
    Late,
    Missed,
    Pending,
    NotTracked,
}

/// One period's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodOutcome {
    pub period: Period,
    pub deadline: Timestamp,
    pub overdue_after: Timestamp,
    pub satisfied_at: Option<Timestamp>,
    pub verdict: Verdict,
    /// Seconds past the deadline when satisfied (or until now, when missed); `None` if not late.
    pub late_by_s: Option<i64>,
}

impl PeriodOutcome {
    /// Whole days late, rounded up; 0 when not late.
    pub fn days_late(&self) -> i64 {
        self.late_by_s.map_or(0, |s| (s + 86_399).div_euclid(86_400))
    }
}

/// The outcome of `period` at `now`, from a dataset's transitions (in any order).
pub fn outcome(
    schedule: &Schedule,
    period: &Period,
    transitions: &[Transition],
    now: Timestamp,
) -> Result<PeriodOutcome, ScheduleError> {
    let deadline = schedule.due(period)?;
    let overdue_after = schedule.overdue_after(period)?;
    let satisfied_at = transitions
        .iter()
        .filter(|t| t.status == Status::OnTime && t.period.start >= period.start && t.at <= now)
        .map(|t| t.at)
        .min();
    let tracked_from = transitions.iter().map(|t| t.at).min();
    let late = |until: Timestamp| Some(seconds_between(deadline, until)).filter(|s| *s > 0);
    let (verdict, late_by_s) = match (tracked_from, satisfied_at) {
        (None, _) => (Verdict::NotTracked, None),
        (Some(from), _) if from >= period.end => (Verdict::NotTracked, None),
        (_, Some(at)) if at <= overdue_after => (Verdict::OnTime, late(at)),
        (_, Some(at)) => (Verdict::Late, late(at)),
        (_, None) if now >= overdue_after => (Verdict::Missed, late(now)),
        (_, None) => (Verdict::Pending, None),
    };
    Ok(PeriodOutcome { period: period.clone(), deadline, overdue_after, satisfied_at, verdict, late_by_s })
}

/// Outcomes of the last `n` periods that have ended by `now`, oldest first.
pub fn outcomes(
    schedule: &Schedule,
    transitions: &[Transition],
    now: Timestamp,
    n: usize,
) -> Result<Vec<PeriodOutcome>, ScheduleError> {
    let periods = schedule.cadence.closed_periods(now, n)?;
    periods.iter().map(|p| outcome(schedule, p, transitions, now)).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{DatasetRule, Observations, UpdateKind, evaluate};
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn quarterly() -> Schedule {
        toml::from_str("cadence = \"quarterly\"\ndeadline = { days_after = 15 }\ngrace = \"2days\"").expect("schedule")
    }

    /// Replays a dataset's life through `evaluate`, recording transitions like the hub does.
    /// `changes` are the instants data arrived; the hub re-evaluates every `step_h` hours.
    fn replay(schedule: &Schedule, from: &str, to: &str, changes: &[&str], step_h: i64) -> Vec<Transition> {
        let rule = DatasetRule { schedule: schedule.clone(), update_kind: UpdateKind::Change, freshness_field: None };
        let changes: Vec<Timestamp> = changes.iter().map(|c| ts(c)).collect();
        let (mut now, end) = (ts(from), ts(to));
        let (mut last, mut log): (Option<Freshness>, Vec<Transition>) = (None, Vec::new());
        while now <= end {
            let arrived: Vec<_> = changes.iter().copied().filter(|c| *c <= now).collect();
            let obs = Observations {
                first_received_at: arrived.first().copied().or(Some(ts(from))),
                last_change_at: arrived.last().copied(),
                agent_last_seen_at: Some(now),
                ..Observations::default()
            };
            let f = evaluate(now, &rule, &obs).expect("evaluate");
            log.extend(transition(last.as_ref(), &f));
            last = Some(f);
            now = now.checked_add(jiff::SignedDuration::from_hours(step_h)).expect("step");
        }
        log
    }

    #[test]
    fn days_late_per_quarter() {
        let s = quarterly();
        // Q1 report on 10 April (on time), Q2 report on the morning of 18 July (due by end of
        // 15 July, 2 days' grace), Q3 report never sent.
        let log = replay(
            &s,
            "2026-01-01T00:00:00+07:00",
            "2026-11-30T00:00:00+07:00",
            &["2026-04-10T09:00:00+07:00", "2026-07-18T09:00:00+07:00"],
            1,
        );
        let now = ts("2026-11-30T00:00:00+07:00");
        let q = |t: &str| s.period_containing(ts(t)).expect("period");
        let q1 = outcome(&s, &q("2026-02-01T00:00:00Z"), &log, now).expect("q1");
        assert_eq!((q1.verdict, q1.days_late()), (Verdict::OnTime, 0));
        let q2 = outcome(&s, &q("2026-05-01T00:00:00Z"), &log, now).expect("q2");
        assert_eq!(q2.verdict, Verdict::Late);
        assert_eq!(q2.satisfied_at, Some(ts("2026-07-18T09:00:00+07:00")));
        assert_eq!(q2.days_late(), 3);
        assert_eq!(q2.late_by_s, Some(2 * 86_400 + 9 * 3600));
        let q3 = outcome(&s, &q("2026-08-01T00:00:00Z"), &log, now).expect("q3");
        assert_eq!(q3.verdict, Verdict::Missed);
        assert_eq!(q3.days_late(), 45); // 16 Oct 00:00 → 30 Nov 00:00
        let all = outcomes(&s, &log, now, 4).expect("outcomes");
        let verdicts: Vec<_> = all.iter().map(|o| o.verdict).collect();
        // Q4 2025 ended as tracking began.
        assert_eq!(verdicts, [Verdict::NotTracked, Verdict::OnTime, Verdict::Late, Verdict::Missed]);
    }

    #[test]
    fn lateness_within_grace_is_on_time_but_reported() {
        let s = quarterly();
        let log =
            replay(&s, "2026-06-01T00:00:00+07:00", "2026-08-01T00:00:00+07:00", &["2026-07-16T12:00:00+07:00"], 1);
        let q2 =
            outcome(&s, &s.period_containing(ts("2026-05-01T00:00:00Z")).expect("p"), &log, ts("2026-08-01T00:00:00Z"))
                .expect("q2");
        assert_eq!((q2.verdict, q2.days_late()), (Verdict::OnTime, 1));
    }

    #[test]
    fn one_arrival_satisfies_every_earlier_period() {
        let monthly: Schedule =
            toml::from_str("cadence = \"monthly\"\ndeadline = { day = 5, time = \"17:00\" }").expect("schedule");
        // Nothing from February to April, then a catch-up upload on 20 May.
        let log = replay(
            &monthly,
            "2026-01-20T00:00:00+07:00",
            "2026-06-10T00:00:00+07:00",
            &["2026-02-03T10:00:00+07:00", "2026-05-20T10:00:00+07:00"],
            6,
        );
        let now = ts("2026-06-10T00:00:00+07:00");
        let all = outcomes(&monthly, &log, now, 5).expect("outcomes");
        let got: Vec<_> = all.iter().map(|o| (o.period.label.as_str(), o.verdict, o.days_late())).collect();
        assert_eq!(
            got,
            [
                ("2026-01", Verdict::OnTime, 0),
                // Due 5 March 17:00; the catch-up was seen at the 12:00 evaluation on 20 May.
                ("2026-02", Verdict::Late, 76),
                ("2026-03", Verdict::Late, 45),
                ("2026-04", Verdict::Late, 15),
                // May's report (due 5 June 17:00) has not come: missed, late so far.
                ("2026-05", Verdict::Missed, 5),
            ]
        );
    }

    #[test]
    fn transitions_are_recorded_only_on_change() {
        let s = quarterly();
        let log = replay(&s, "2026-03-01T00:00:00+07:00", "2026-04-30T00:00:00+07:00", &[], 24);
        let got: Vec<_> = log.iter().map(|t| (t.status, t.period.label.as_str())).collect();
        assert_eq!(got, [(Status::OnTime, "2025-Q4"), (Status::Due, "2026-Q1"), (Status::Overdue, "2026-Q1")]);
        assert_eq!(log[2].at, ts("2026-04-18T00:00:00+07:00"));
    }
}
