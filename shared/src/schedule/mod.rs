//! Reporting cadences and the calendar periods they cut time into.
//!
//! A dataset's [`Cadence`] (`daily`, `weekly`, `monthly`, `quarterly`, `yearly`, or `every` a fixed
//! interval) divides time into [`Period`]s; the data *for* a period is due by a [`Deadline`] that lies
//! in the period after it ([`Schedule::due`]).
//!
//! **Time zone.** All calendar periods are cut in the province's local time, Asia/Ho_Chi_Minh. Vietnam
//! has used UTC+7 without daylight saving since 1975, so this module uses the fixed offset
//! [`PROVINCE_OFFSET`] (`+07:00`) rather than a time-zone database: nothing is read from
//! `/usr/share/zoneinfo`, no bundled tzdb is needed, and a minimal container computes the same
//! periods as a developer laptop. (A test checks the offset against the system tzdb when present.)
//! Should the zone ever change, this constant and its test are the one place to touch.
//!
//! **Invariants** (property-tested below):
//! - a period contains the instant it was computed from: `start <= t < end`;
//! - periods tile time: `next(p).start == p.end` and `prev(p).end == p.start`, no gaps or overlaps;
//! - calendar periods start at local midnight, months/quarters/years on day 1, weeks on Monday (ISO
//!   8601), and are computed with calendar arithmetic — a month is never "30 days";
//! - interval periods are anchored at 1970-01-01 00:00 local time, so `every = "6h"` periods start at
//!   00:00, 06:00, 12:00 and 18:00 in Sơn La.
//!
//! Every function is pure and total: instants outside jiff's supported range (years -9999..=9999)
//! give [`ScheduleError::OutOfRange`], never a panic.

mod deadline;

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

pub use deadline::{Deadline, DeadlineWeekday, FieldError, Schedule};

/// The province's UTC offset (Asia/Ho_Chi_Minh: UTC+7, no daylight saving since 1975).
pub const PROVINCE_OFFSET: Offset = Offset::constant(7);
/// The IANA name of the province's time zone, for documents that show local times.
pub const TZ_NAME: &str = "Asia/Ho_Chi_Minh";

/// Shortest accepted `every` interval: finer periods would make every brief pause a missed period.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Longest accepted `every` interval; longer cadences are calendar cadences (`yearly`).
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

/// How often a dataset is expected to be updated.
///
/// TOML: `cadence = "monthly"` or `cadence = { every = "6h" }` (humantime durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    Daily,
    /// ISO weeks, Monday 00:00 to the next Monday 00:00.
    Weekly,
    Monthly,
    /// Calendar quarters: January, April, July, October.
    Quarterly,
    /// Calendar years.
    Yearly,
    /// Fixed-length periods anchored at 1970-01-01 00:00 local time.
    Every(#[serde(with = "humantime_serde")] Duration),
}

/// One reporting period: `[start, end)`, with a human label (`2026-04-01`, `2026-W14`, `2026-04`,
/// `2026-Q2`, `2026`, or the local start `2026-04-01T06:00` for intervals).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
    pub label: String,
}

impl Period {
    /// Whether `t` lies in `[start, end)`.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Why a schedule computation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule breaks a rule that [`Schedule::validate`] reports; validate before computing.
    #[error("invalid schedule: {0}")]
    Invalid(#[from] FieldError),
    /// The computation left jiff's supported range (years -9999..=9999).
    #[error("{0} is outside the supported calendar range")]
    OutOfRange(String),
}

pub(crate) fn out_of_range(what: impl std::fmt::Display) -> ScheduleError {
    ScheduleError::OutOfRange(what.to_string())
}

/// The local (Sơn La) calendar date of an instant.
pub fn local_date(t: Timestamp) -> Date {
    PROVINCE_OFFSET.to_datetime(t).date()
}

/// The instant of a local date and time.
pub fn local_instant(date: Date, time: Time) -> Result<Timestamp, ScheduleError> {
    let dt = DateTime::from_parts(date, time);
    PROVINCE_OFFSET.to_timestamp(dt).map_err(|_| out_of_range(dt))
}

/// The instant a local date starts (00:00 in Sơn La).
pub fn start_of_day(date: Date) -> Result<Timestamp, ScheduleError> {
    local_instant(date, Time::midnight())
}

/// The first instant after a local date (00:00 the next day).
pub fn end_of_day(date: Date) -> Result<Timestamp, ScheduleError> {
    start_of_day(date.tomorrow().map_err(|_| out_of_range(date))?)
}

/// `date` plus `days` calendar days.
pub(crate) fn add_days(date: Date, days: i64) -> Result<Date, ScheduleError> {
    date.checked_add(days.days()).map_err(|_| out_of_range(date))
}

impl Cadence {
    /// Canonical name, as in TOML (`every` for intervals).
    pub fn name(self) -> &'static str {
        match self {
            Cadence::Daily => "daily",
            Cadence::Weekly => "weekly",
            Cadence::Monthly => "monthly",
            Cadence::Quarterly => "quarterly",
            Cadence::Yearly => "yearly",
            Cadence::Every(_) => "every",
        }
    }

    /// Fewest days any period of this calendar cadence has (February, a January–March quarter, a
    /// common year); `None` for intervals. Bounds `deadline.days_after`.
    pub fn min_days(self) -> Option<u16> {
        match self {
            Cadence::Daily => Some(1),
            Cadence::Weekly => Some(7),
            Cadence::Monthly => Some(28),
            Cadence::Quarterly => Some(90),
            Cadence::Yearly => Some(365),
            Cadence::Every(_) => None,
        }
    }

    /// The period containing `t`.
    pub fn period_containing(self, t: Timestamp) -> Result<Period, ScheduleError> {
        let date = local_date(t);
        let (start, end, label) = match self {
            Cadence::Daily => (date, add_days(date, 1)?, date.to_string()),
            Cadence::Weekly => {
                let start = add_days(date, -i64::from(date.weekday().to_monday_zero_offset()))?;
                let week = date.iso_week_date();
                (start, add_days(start, 7)?, format!("{:04}-W{:02}", week.year(), week.week()))
            }
            Cadence::Monthly => {
                let start = date.first_of_month();
                let label = format!("{:04}-{:02}", date.year(), date.month());
                (start, add_months(start, 1)?, label)
            }
            Cadence::Quarterly => {
                let q = (date.month() - 1) / 3;
                let start = Date::new(date.year(), q * 3 + 1, 1).map_err(|_| out_of_range(date))?;
                (start, add_months(start, 3)?, format!("{:04}-Q{}", date.year(), q + 1))
            }
            Cadence::Yearly => {
                let start = Date::new(date.year(), 1, 1).map_err(|_| out_of_range(date))?;
                let end = start.checked_add(1.year()).map_err(|_| out_of_range(date))?;
                (start, end, format!("{:04}", date.year()))
            }
            Cadence::Every(interval) => return interval_period(interval, t),
        };
        Ok(Period { start: start_of_day(start)?, end: start_of_day(end)?, label })
    }

    /// The period right after `p`.
    pub fn next(self, p: &Period) -> Result<Period, ScheduleError> {
        self.period_containing(p.end)
    }

    /// The period right before `p`.
    pub fn prev(self, p: &Period) -> Result<Period, ScheduleError> {
        let before = p.start.checked_sub(SignedDuration::from_nanos(1)).map_err(|_| out_of_range(p.start))?;
        self.period_containing(before)
    }

    /// The last `n` periods that have ended by `now`, oldest first.
    pub fn closed_periods(self, now: Timestamp, n: usize) -> Result<Vec<Period>, ScheduleError> {
        let mut out = Vec::with_capacity(n);
        let mut p = self.period_containing(now)?;
        for _ in 0..n {
            p = self.prev(&p)?;
            out.push(p.clone());
        }
        out.reverse();
        Ok(out)
    }
}

fn add_months(date: Date, months: i64) -> Result<Date, ScheduleError> {
    date.checked_add(months.months()).map_err(|_| out_of_range(date))
}

/// Interval periods: `anchor + k * interval` for integer `k`, anchor = 1970-01-01 00:00 local.
fn interval_period(interval: Duration, t: Timestamp) -> Result<Period, ScheduleError> {
    if interval < MIN_INTERVAL {
        return Err(FieldError::new("cadence.every", "must be at least 1 minute").into());
    }
    let step = i128::try_from(interval.as_nanos()).map_err(|_| out_of_range(format!("{interval:?}")))?;
    let anchor = -i128::from(PROVINCE_OFFSET.seconds()) * 1_000_000_000;
    let k = (t.as_nanosecond() - anchor).div_euclid(step);
    let start_ns = anchor + k * step;
    let start = Timestamp::from_nanosecond(start_ns).map_err(|_| out_of_range(t))?;
    let end = Timestamp::from_nanosecond(start_ns + step).map_err(|_| out_of_range(t))?;
    let local = PROVINCE_OFFSET.to_datetime(start);
    let label = local.strftime("%Y-%m-%dT%H:%M").to_string();
    Ok(Period { start, end, label })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn period(c: Cadence, t: &str) -> Period {
        c.period_containing(ts(t)).expect("period")
    }

    fn local(p: &Period) -> (String, String) {
        let f = |t: Timestamp| PROVINCE_OFFSET.to_datetime(t).strftime("%Y-%m-%d %H:%M").to_string();
        (f(p.start), f(p.end))
    }

    #[test]
    fn fixed_offset_matches_the_system_tzdb_where_available() {
        // The offset is a documented choice; this cross-checks it whenever a tzdb is installed.
        let Ok(tz) = jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh") else { return };
        for t in ["1976-01-01T00:00Z", "2000-02-29T12:00Z", "2026-03-31T17:30Z", "2030-07-01T00:00Z"] {
            assert_eq!(tz.to_offset(ts(t)), PROVINCE_OFFSET, "{t}");
        }
    }

    #[test]
    fn utc_evening_is_already_tomorrow_in_son_la() {
        // 17:30 UTC on 31 March is 00:30 on 1 April in Sơn La: a new day, month and quarter.
        let t = "2026-03-31T17:30:00Z";
        assert_eq!(period(Cadence::Daily, t).label, "2026-04-01");
        assert_eq!(period(Cadence::Monthly, t).label, "2026-04");
        assert_eq!(period(Cadence::Quarterly, t).label, "2026-Q2");
        let t = "2026-03-31T16:59:59Z";
        assert_eq!(period(Cadence::Daily, t).label, "2026-03-31");
        assert_eq!(period(Cadence::Monthly, t).label, "2026-03");
        assert_eq!(period(Cadence::Quarterly, t).label, "2026-Q1");
        // Year end: 31 Dec 17:00 UTC is New Year in Sơn La.
        assert_eq!(period(Cadence::Yearly, "2026-12-31T17:00:00Z").label, "2027");
        assert_eq!(period(Cadence::Yearly, "2026-12-31T16:59:59Z").label, "2026");
    }

    #[test]
    fn daily_periods_start_at_local_midnight() {
        let p = period(Cadence::Daily, "2028-02-29T05:00:00Z");
        assert_eq!(p.label, "2028-02-29");
        assert_eq!(p.start, ts("2028-02-28T17:00:00Z"));
        assert_eq!(p.end, ts("2028-02-29T17:00:00Z"));
        assert_eq!(Cadence::Daily.next(&p).expect("next").label, "2028-03-01");
        let p = period(Cadence::Daily, "2027-03-01T00:00:00+07:00");
        assert_eq!(Cadence::Daily.prev(&p).expect("prev").label, "2027-02-28");
    }

    #[test]
    fn weekly_periods_are_iso_weeks_from_monday() {
        // Thursday 1 January 2026 belongs to ISO week 2026-W01, which started Monday 29 December.
        let p = period(Cadence::Weekly, "2026-01-01T12:00:00+07:00");
        assert_eq!(p.label, "2026-W01");
        assert_eq!(local(&p), ("2025-12-29 00:00".into(), "2026-01-05 00:00".into()));
        // Sunday 3 January 2027 is in 2026-W53 (2026 has 53 ISO weeks).
        assert_eq!(period(Cadence::Weekly, "2027-01-03T23:59:00+07:00").label, "2026-W53");
        assert_eq!(period(Cadence::Weekly, "2027-01-04T00:00:00+07:00").label, "2027-W01");
        // Sunday 23:30 UTC is Monday 06:30 in Sơn La: the next week.
        assert_eq!(period(Cadence::Weekly, "2026-04-05T16:59:59Z").label, "2026-W14");
        assert_eq!(period(Cadence::Weekly, "2026-04-05T17:00:00Z").label, "2026-W15");
        let p = period(Cadence::Weekly, "2026-04-08T00:00:00Z");
        assert_eq!(local(&Cadence::Weekly.prev(&p).expect("prev")).0, "2026-03-30 00:00");
    }

    #[test]
    fn monthly_periods_follow_the_calendar() {
        let cases = [
            ("2026-01-31T12:00:00+07:00", "2026-01", "2026-01-01 00:00", "2026-02-01 00:00"),
            ("2026-02-28T23:59:59+07:00", "2026-02", "2026-02-01 00:00", "2026-03-01 00:00"),
            ("2028-02-29T23:00:00+07:00", "2028-02", "2028-02-01 00:00", "2028-03-01 00:00"),
            ("2026-04-30T08:00:00+07:00", "2026-04", "2026-04-01 00:00", "2026-05-01 00:00"),
            ("2026-12-31T23:59:59+07:00", "2026-12", "2026-12-01 00:00", "2027-01-01 00:00"),
        ];
        for (t, label, start, end) in cases {
            let p = period(Cadence::Monthly, t);
            assert_eq!((p.label.as_str(), local(&p)), (label, (start.into(), end.into())), "{t}");
        }
        let march = period(Cadence::Monthly, "2028-03-31T10:00:00+07:00");
        assert_eq!(Cadence::Monthly.prev(&march).expect("prev").label, "2028-02");
        assert_eq!(Cadence::Monthly.next(&march).expect("next").label, "2028-04");
    }

    #[test]
    fn quarterly_and_yearly_periods() {
        let cases = [
            ("2026-01-01T00:00:00+07:00", "2026-Q1", "2026-01-01 00:00", "2026-04-01 00:00"),
            ("2026-06-30T23:59:59+07:00", "2026-Q2", "2026-04-01 00:00", "2026-07-01 00:00"),
            ("2026-09-30T17:00:00Z", "2026-Q4", "2026-10-01 00:00", "2027-01-01 00:00"),
        ];
        for (t, label, start, end) in cases {
            let p = period(Cadence::Quarterly, t);
            assert_eq!((p.label.as_str(), local(&p)), (label, (start.into(), end.into())), "{t}");
        }
        let q4 = period(Cadence::Quarterly, "2026-11-15T00:00:00Z");
        assert_eq!(Cadence::Quarterly.next(&q4).expect("next").label, "2027-Q1");
        let y = period(Cadence::Yearly, "2028-02-29T00:00:00+07:00");
        assert_eq!((y.label.as_str(), local(&y).0.as_str()), ("2028", "2028-01-01 00:00"));
        assert_eq!(y.end.duration_since(y.start).as_secs(), 366 * 86_400);
    }

    #[test]
    fn interval_periods_align_with_local_midnight() {
        let six = Cadence::Every(Duration::from_secs(6 * 3600));
        let p = period(six, "2026-03-31T17:30:00Z");
        assert_eq!(p.label, "2026-04-01T00:00");
        assert_eq!(local(&p), ("2026-04-01 00:00".into(), "2026-04-01 06:00".into()));
        let p = period(six, "1960-01-01T05:00:00+07:00");
        assert_eq!(p.label, "1960-01-01T00:00");
        assert!(matches!(
            Cadence::Every(Duration::from_secs(10)).period_containing(ts("2026-01-01T00:00Z")),
            Err(ScheduleError::Invalid(_))
        ));
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let last = Timestamp::MAX;
        for c in [Cadence::Daily, Cadence::Weekly, Cadence::Monthly, Cadence::Quarterly, Cadence::Yearly] {
            assert!(matches!(c.period_containing(last), Err(ScheduleError::OutOfRange(_))), "{c:?}");
            let first = c.period_containing(Timestamp::MIN);
            if let Ok(p) = first {
                assert!(c.prev(&p).is_err(), "{c:?}");
            }
        }
    }

    #[test]
    fn closed_periods_are_the_last_n_that_ended() {
        let ps = Cadence::Monthly.closed_periods(ts("2026-03-10T00:00:00Z"), 3).expect("periods");
        let labels: Vec<_> = ps.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2025-12", "2026-01", "2026-02"]);
    }

    #[test]
    fn cadence_toml_shapes() {
        #[derive(Deserialize, Serialize)]
        struct D {
            cadence: Cadence,
        }
        let d: D = toml::from_str(r#"cadence = "monthly""#).expect("monthly");
        assert_eq!(d.cadence, Cadence::Monthly);
        let d: D = toml::from_str(r#"cadence = { every = "6h" }"#).expect("every");
        assert_eq!(d.cadence, Cadence::Every(Duration::from_secs(21_600)));
        assert_eq!(toml::to_string(&d).expect("ser").trim(), "[cadence]\nevery = \"6h\"");
        assert!(toml::from_str::<D>(r#"cadence = "fortnightly""#).is_err());
        let j: D = serde_json::from_str(r#"{"cadence":"quarterly"}"#).expect("json");
        assert_eq!(j.cadence, Cadence::Quarterly);
    }

    fn any_cadence() -> impl Strategy<Value = Cadence> {
        prop_oneof![
            Just(Cadence::Daily),
            Just(Cadence::Weekly),
            Just(Cadence::Monthly),
            Just(Cadence::Quarterly),
            Just(Cadence::Yearly),
            (60u64..40 * 86_400).prop_map(|s| Cadence::Every(Duration::from_secs(s))),
        ]
    }

    /// Instants between 1900 and 2200.
    fn any_instant() -> impl Strategy<Value = Timestamp> {
        (-2_208_988_800i64..7_258_118_400).prop_map(|s| Timestamp::from_second(s).expect("in range"))
    }

    proptest! {
        #[test]
        fn periods_contain_their_instant_and_tile(c in any_cadence(), t in any_instant()) {
            let p = c.period_containing(t).expect("period");
            prop_assert!(p.contains(t), "{p:?} does not contain {t}");
            let next = c.next(&p).expect("next");
            let prev = c.prev(&p).expect("prev");
            prop_assert_eq!(next.start, p.end);
            prop_assert_eq!(prev.end, p.start);
            prop_assert_eq!(c.prev(&next).expect("prev of next"), p.clone());
            prop_assert_eq!(c.period_containing(p.start).expect("at start"), p.clone());
            if !matches!(c, Cadence::Every(_)) {
                prop_assert_eq!(PROVINCE_OFFSET.to_datetime(p.start).time(), Time::midnight());
                let days = (p.end.as_second() - p.start.as_second()) / 86_400;
                prop_assert!(days >= i64::from(c.min_days().unwrap_or(0)));
            }
        }
    }
}
