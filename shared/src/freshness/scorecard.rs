//! A department's scorecard: the share of its datasets on time now, and over its last periods.
//!
//! - **Now**: counts by status over the department's current [`Freshness`] values. The share on time
//!   is `on_time / (on_time + overdue + never_received)`: a `due` dataset has not missed anything
//!   yet, so it counts neither way; a department with nothing decided has no share (`None`).
//! - **Last periods**: each dataset's last [`SCORECARD_PERIODS`] ended periods, in its own cadence
//!   (12 days of a daily dataset, 12 quarters of a quarterly one), judged by [`history::outcome`].
//!   The share is `on_time / (on_time + late + missed)`; `pending` and `not_tracked` periods are
//!   left out. Every dataset-period weighs the same.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::history::{self, Transition, Verdict};
use super::{Freshness, Status};
use crate::schedule::{Schedule, ScheduleError};

/// How many past periods the historical score covers.
pub const SCORECARD_PERIODS: usize = 12;

/// Status counts over a department's datasets now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurrentScore {
    pub datasets: usize,
    pub on_time: usize,
    pub due: usize,
    pub overdue: usize,
    pub never_received: usize,
    pub share_on_time: Option<f64>,
}

/// Verdict counts over past periods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryScore {
    pub periods: usize,
    pub on_time: usize,
    pub late: usize,
    pub missed: usize,
    pub pending: usize,
    pub not_tracked: usize,
    pub share_on_time: Option<f64>,
}

/// A department's scorecard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    pub evaluated_at: Timestamp,
    pub current: CurrentScore,
    pub last_periods: HistoryScore,
}

/// One dataset's inputs to its department's scorecard.
#[derive(Debug, Clone, Copy)]
pub struct DatasetRecord<'a> {
    pub schedule: &'a Schedule,
    pub current: &'a Freshness,
    pub transitions: &'a [Transition],
}

fn share(good: usize, decided: usize) -> Option<f64> {
    // Counts are far below 2^52, so the conversions are exact.
    (decided > 0).then(|| good as f64 / decided as f64)
}

/// Counts and share on time over current freshness values.
pub fn current<'a>(items: impl IntoIterator<Item = &'a Freshness>) -> CurrentScore {
    let mut s = CurrentScore::default();
    for f in items {
        s.datasets += 1;
        match f.status {
            Status::OnTime => s.on_time += 1,
            Status::Due => s.due += 1,
            Status::Overdue => s.overdue += 1,
            Status::NeverReceived => s.never_received += 1,
        }
    }
    s.share_on_time = share(s.on_time, s.on_time + s.overdue + s.never_received);
    s
}

/// Counts and share on time over period outcomes.
pub fn past<'a>(outcomes: impl IntoIterator<Item = &'a history::PeriodOutcome>) -> HistoryScore {
    let mut s = HistoryScore::default();
    for o in outcomes {
        s.periods += 1;
        match o.verdict {
            Verdict::OnTime => s.on_time += 1,
            Verdict::Late => s.late += 1,
            Verdict::Missed => s.missed += 1,
            Verdict::Pending => s.pending += 1,
            Verdict::NotTracked => s.not_tracked += 1,
        }
    }
    s.share_on_time = share(s.on_time, s.on_time + s.late + s.missed);
    s
}

/// A department's scorecard at `now` over its datasets.
pub fn scorecard(now: Timestamp, datasets: &[DatasetRecord<'_>]) -> Result<Scorecard, ScheduleError> {
    let mut outcomes = Vec::new();
    for d in datasets {
        outcomes.extend(history::outcomes(d.schedule, d.transitions, now, SCORECARD_PERIODS)?);
    }
    Ok(Scorecard {
        evaluated_at: now,
        current: current(datasets.iter().map(|d| d.current)),
        last_periods: past(&outcomes),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{DatasetRule, Observations, UpdateKind, evaluate};
    use super::*;
    use crate::freshness::history::transition;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn rule(toml_text: &str, kind: UpdateKind) -> DatasetRule {
        DatasetRule { schedule: toml::from_str(toml_text).expect("schedule"), update_kind: kind, freshness_field: None }
    }

    #[test]
    fn current_share_ignores_datasets_not_yet_due() {
        let now = ts("2026-04-03T12:00:00+07:00");
        let monthly = rule("cadence = \"monthly\"\ndeadline = { day = 5, time = \"17:00\" }", UpdateKind::Change);
        let eval = |obs: Observations| evaluate(now, &monthly, &obs).expect("evaluate");
        let received = Some(ts("2025-01-01T00:00:00Z"));
        let on_time = eval(Observations {
            first_received_at: received,
            last_change_at: Some(ts("2026-04-02T09:00:00+07:00")),
            ..Observations::default()
        });
        let due = eval(Observations {
            first_received_at: received,
            last_change_at: Some(ts("2026-03-02T09:00:00+07:00")),
            ..Observations::default()
        });
        let overdue = eval(Observations {
            first_received_at: received,
            last_change_at: Some(ts("2026-02-02T09:00:00+07:00")),
            ..Observations::default()
        });
        let never = eval(Observations::default());
        let s = current([&on_time, &due, &overdue, &never]);
        assert_eq!((s.datasets, s.on_time, s.due, s.overdue, s.never_received), (4, 1, 1, 1, 1));
        assert_eq!(s.share_on_time, Some(1.0 / 3.0));
        assert_eq!(current([&due]).share_on_time, None);
        assert_eq!(current([]).datasets, 0);
    }

    #[test]
    fn department_over_twelve_periods() {
        // A weekly dataset reported every Monday at 09:00 except two Mondays, and a sync dataset
        // whose agent confirms every hour. Simulated hourly for 14 weeks, ending Monday 12:00.
        let weekly =
            rule("cadence = \"weekly\"\ndeadline = { weekday = \"monday\", time = \"10:00\" }", UpdateKind::Change);
        let daily = rule("cadence = \"daily\"\ndeadline = { time = \"08:00\" }", UpdateKind::Sync);
        let start = ts("2026-01-05T00:00:00+07:00"); // a Monday
        let mut now = start;
        let end = start.checked_add(jiff::SignedDuration::from_hours(14 * 7 * 24 + 12)).expect("end");
        let (mut w_last, mut d_last) = (None::<Freshness>, None::<Freshness>);
        let (mut w_log, mut d_log) = (Vec::new(), Vec::new());
        let mut w_change = None;
        let skipped = ["2026-W05", "2026-W10"];
        while now < end {
            let local = crate::schedule::PROVINCE_OFFSET.to_datetime(now);
            let week = weekly.schedule.period_containing(now).expect("week").label;
            if local.weekday() == jiff::civil::Weekday::Monday && local.hour() == 9 && !skipped.contains(&week.as_str())
            {
                w_change = Some(now);
            }
            let obs = Observations {
                first_received_at: Some(start),
                last_change_at: w_change,
                agent_last_seen_at: Some(now),
                ..Observations::default()
            };
            let w = evaluate(now, &weekly, &obs).expect("weekly");
            w_log.extend(transition(w_last.as_ref(), &w));
            w_last = Some(w);
            let obs =
                Observations { first_received_at: Some(start), last_sync_at: Some(now), ..Observations::default() };
            let d = evaluate(now, &daily, &obs).expect("daily");
            d_log.extend(transition(d_last.as_ref(), &d));
            d_last = Some(d);
            now = now.checked_add(jiff::SignedDuration::from_hours(1)).expect("step");
        }
        let (w, d) = (w_last.expect("weekly"), d_last.expect("daily"));
        let card = scorecard(
            now,
            &[
                DatasetRecord { schedule: &weekly.schedule, current: &w, transitions: &w_log },
                DatasetRecord { schedule: &daily.schedule, current: &d, transitions: &d_log },
            ],
        )
        .expect("scorecard");
        assert_eq!((card.current.on_time, card.current.datasets), (2, 2));
        let h = &card.last_periods;
        // Weekly W04..W15: the reports for W04 and W09 (due the Mondays that were skipped) came a
        // week late; daily: 12 days on time.
        assert_eq!((h.periods, h.on_time, h.late, h.missed), (24, 22, 2, 0), "{h:?}");
        assert_eq!(h.share_on_time, Some(22.0 / 24.0));
    }
}
