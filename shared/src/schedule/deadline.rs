//! Deadlines: when a period's data is due, inside the period that follows it.
//!
//! A [`Deadline`] names a local date (and optionally a time) in the period *after* the one being
//! reported, in one of these forms (TOML):
//!
//! | form | cadences | meaning (for the period just ended) |
//! |---|---|---|
//! | `{}` (or no `deadline`) | all | the instant the period ends |
//! | `{ time = "08:00" }` | calendar | on the first day of the next period at 08:00 ("08:00 next day") |
//! | `{ days_after = 15 }` | calendar | by the end of the 15th day after the period ends |
//! | `{ day = 5, time = "17:00" }` | monthly, quarterly | day 5 of the next month (of the first month after the quarter) at 17:00 |
//! | `{ weekday = "monday", time = "10:00" }` | weekly | Monday of the next week at 10:00 |
//! | `{ month = 1, day = 31 }` | yearly | 31 January of the next year |
//!
//! A date without a `time` means the *end* of that date (the next local midnight). Times are quoted
//! `"HH:MM"` strings (an unquoted TOML time is refused).
//!
//! **Clamping.** `day` is accepted from 1 to 31 and clamped to the month's last day: `day = 31` is
//! "the last day of the month" (30 April, 28 or 29 February), and a yearly `{ month = 2, day = 29 }`
//! is 28 February in common years. Regulations write "by the end of the month" this way, and
//! rejecting 31 would force an awkward `days_after` instead. Days that exist in no month (0, 32) and
//! impossible combinations are rejected by [`Schedule::validate`], which names every bad field.
//!
//! Every form keeps the deadline inside the following period (`days_after` is bounded by the shortest
//! period of the cadence), so the data for period *n* is always due before period *n + 2* begins.
//! [`Schedule::grace`] is extra tolerance after the deadline before a dataset counts as overdue.

use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{
    Cadence, MAX_INTERVAL, MIN_INTERVAL, Period, ScheduleError, add_days, end_of_day, local_date, local_instant,
    out_of_range,
};

/// Longest accepted grace period.
pub const MAX_GRACE: Duration = Duration::from_secs(366 * 86_400);

/// A bad field in a schedule, by its catalogue name (`deadline.day`, `cadence.every`, `grace`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError { field, message: message.into() }
    }
}

/// Day of the week in a weekly deadline, lowercase English in TOML (`"monday"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineWeekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<DeadlineWeekday> for Weekday {
    fn from(w: DeadlineWeekday) -> Weekday {
        match w {
            DeadlineWeekday::Monday => Weekday::Monday,
            DeadlineWeekday::Tuesday => Weekday::Tuesday,
            DeadlineWeekday::Wednesday => Weekday::Wednesday,
            DeadlineWeekday::Thursday => Weekday::Thursday,
            DeadlineWeekday::Friday => Weekday::Friday,
            DeadlineWeekday::Saturday => Weekday::Saturday,
            DeadlineWeekday::Sunday => Weekday::Sunday,
        }
    }
}

/// When a period's data is due, relative to the following period (see the module table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    /// Month of the following year (yearly only), 1–12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u8>,
    /// Day of the month (monthly, quarterly, yearly with `month`), 1–31, clamped to the month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u8>,
    /// Day of the following ISO week (weekly only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<DeadlineWeekday>,
    /// The Nth day after the period ends (1 = the first day of the next period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_after: Option<u16>,
    /// Local time on the deadline date; absent = the end of that date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// A dataset's cadence, deadline and grace: everything needed to say when data is due.
///
/// TOML (fields of a catalogue dataset entry):
/// ```toml
/// cadence = "monthly"
/// deadline = { day = 5, time = "17:00" }
/// grace = "1day"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cadence: Cadence,
    #[serde(default)]
    pub deadline: Deadline,
    /// Tolerance after the deadline before the dataset is `overdue` (humantime, default 0).
    #[serde(default, with = "humantime_serde")]
    pub grace: Duration,
}

impl Schedule {
    /// Every rule the schedule breaks, each naming its field; `Ok` when the schedule is usable.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let d = &self.deadline;
        let c = self.cadence;
        let mut not_with = |field: &'static str, set: bool, what: &str| {
            if set {
                errs.push(FieldError::new(field, format!("not allowed with {what}")));
            }
        };
        match c {
            Cadence::Every(interval) => {
                let what = "an interval cadence (use grace for slack)";
                not_with("deadline.month", d.month.is_some(), what);
                not_with("deadline.day", d.day.is_some(), what);
                not_with("deadline.weekday", d.weekday.is_some(), what);
                not_with("deadline.days_after", d.days_after.is_some(), what);
                not_with("deadline.time", d.time.is_some(), what);
                if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
                    errs.push(FieldError::new("cadence.every", "must be between 1 minute and 366 days"));
                }
            }
            Cadence::Daily => {
                not_with("deadline.day", d.day.is_some(), "a daily cadence (use days_after or time)");
                not_with("deadline.weekday", d.weekday.is_some(), "a daily cadence");
                not_with("deadline.month", d.month.is_some(), "a daily cadence");
            }
            Cadence::Weekly => {
                not_with("deadline.day", d.day.is_some(), "a weekly cadence (use weekday or days_after)");
                not_with("deadline.month", d.month.is_some(), "a weekly cadence");
            }
            Cadence::Monthly | Cadence::Quarterly => {
                let what = format!("a {} cadence", c.name());
                not_with("deadline.weekday", d.weekday.is_some(), &what);
                not_with("deadline.month", d.month.is_some(), &format!("{what} (day counts in the next month)"));
            }
            Cadence::Yearly => {
                not_with("deadline.weekday", d.weekday.is_some(), "a yearly cadence");
                if d.day.is_some() && d.month.is_none() {
                    errs.push(FieldError::new("deadline.month", "is required with deadline.day for a yearly cadence"));
                }
                if d.month.is_some() && d.day.is_none() {
                    errs.push(FieldError::new("deadline.day", "is required with deadline.month"));
                }
            }
        }
        if let Some(day) = d.day.filter(|day| !(1..=31).contains(day)) {
            errs.push(FieldError::new("deadline.day", format!("{day} is not a day of a month (1-31)")));
        }
        if let Some(month) = d.month.filter(|month| !(1..=12).contains(month)) {
            errs.push(FieldError::new("deadline.month", format!("{month} is not a month (1-12)")));
        }
        if let (Some(n), Some(max)) = (d.days_after, c.min_days()) {
            if d.day.is_some() || d.weekday.is_some() {
                errs.push(FieldError::new(
                    "deadline.days_after",
                    "cannot be combined with deadline.day or deadline.weekday",
                ));
            } else if !(1..=max).contains(&n) {
                errs.push(FieldError::new(
                    "deadline.days_after",
                    format!(
                        "{n} must be between 1 and {max} so the deadline stays inside the next {} period",
                        c.name()
                    ),
                ));
            }
        }
        if self.grace > MAX_GRACE {
            errs.push(FieldError::new("grace", "must be at most 366 days"));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The period containing `t` (see [`Cadence::period_containing`]).
    pub fn period_containing(&self, t: Timestamp) -> Result<Period, ScheduleError> {
        self.cadence.period_containing(t)
    }

    /// The instant `period`'s data is due.
    pub fn due(&self, period: &Period) -> Result<Timestamp, ScheduleError> {
        if let Some(e) = self.validate().err().and_then(|errs| errs.into_iter().next()) {
            return Err(e.into());
        }
        let d = &self.deadline;
        // The following period's first local day: calendar periods end at local midnight.
        let first = local_date(period.end);
        let date = match (d.month, d.day, d.weekday, d.days_after) {
            (None, None, None, None) => match d.time {
                None => return Ok(period.end),
                Some(_) => first,
            },
            (_, _, Some(w), _) => add_days(first, i64::from(Weekday::from(w).to_monday_zero_offset()))?,
            (_, _, _, Some(n)) => add_days(first, i64::from(n) - 1)?,
            (month, Some(day), _, _) => {
                let month = month.map_or(first.month(), |m| m as i8);
                clamped_date(first.year(), month, day)?
            }
            (Some(_), None, _, _) => {
                return Err(FieldError::new("deadline.day", "is required with deadline.month").into());
            }
        };
        match d.time {
            Some(time) => local_instant(date, time),
            None => end_of_day(date),
        }
    }

    /// The instant `period` turns overdue if still unsatisfied: its deadline plus grace.
    pub fn overdue_after(&self, period: &Period) -> Result<Timestamp, ScheduleError> {
        let due = self.due(period)?;
        let grace = SignedDuration::try_from(self.grace).map_err(|_| out_of_range("grace"))?;
        due.checked_add(grace).map_err(|_| out_of_range(due))
    }
}

/// `year-month-day`, with `day` clamped to the month's last day (31 → 30 April, 29 → 28 February).
fn clamped_date(year: i16, month: i8, day: u8) -> Result<Date, ScheduleError> {
    let first = Date::new(year, month, 1).map_err(|_| out_of_range(format!("{year}-{month}")))?;
    let day = (day.clamp(1, 31) as i8).min(first.days_in_month());
    Date::new(year, month, day).map_err(|_| out_of_range(format!("{year}-{month}-{day}")))
}

#[cfg(test)]
mod tests {
    use super::super::PROVINCE_OFFSET;
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn schedule(toml_text: &str) -> Schedule {
        let s: Schedule = toml::from_str(toml_text).expect("schedule parses");
        s.validate().expect("schedule is valid");
        s
    }

    /// Local due time of the period containing local instant `t` (given with its +07:00 offset).
    fn due_local(s: &Schedule, t: &str) -> String {
        let p = s.period_containing(ts(t)).expect("period");
        let due = s.due(&p).expect("due");
        PROVINCE_OFFSET.to_datetime(due).strftime("%Y-%m-%d %H:%M").to_string()
    }

    #[test]
    fn demo_catalogue_deadlines() {
        let daily = schedule("cadence = \"daily\"\ndeadline = { time = \"08:00\" }");
        assert_eq!(due_local(&daily, "2026-03-31T23:00:00+07:00"), "2026-04-01 08:00");
        assert_eq!(due_local(&daily, "2028-02-28T10:00:00+07:00"), "2028-02-29 08:00");
        assert_eq!(due_local(&daily, "2026-12-31T10:00:00+07:00"), "2027-01-01 08:00");
        let weekly = schedule("cadence = \"weekly\"\ndeadline = { weekday = \"monday\", time = \"10:00\" }");
        assert_eq!(due_local(&weekly, "2026-12-30T10:00:00+07:00"), "2027-01-04 10:00");
        assert_eq!(due_local(&weekly, "2027-01-03T23:59:00+07:00"), "2027-01-04 10:00");
        let monthly = schedule("cadence = \"monthly\"\ndeadline = { day = 5, time = \"17:00\" }");
        assert_eq!(due_local(&monthly, "2026-01-31T10:00:00+07:00"), "2026-02-05 17:00");
        assert_eq!(due_local(&monthly, "2026-12-01T10:00:00+07:00"), "2027-01-05 17:00");
        let quarterly = schedule("cadence = \"quarterly\"\ndeadline = { days_after = 15 }");
        assert_eq!(due_local(&quarterly, "2026-05-10T10:00:00+07:00"), "2026-07-16 00:00");
        assert_eq!(due_local(&quarterly, "2026-11-10T10:00:00+07:00"), "2027-01-16 00:00");
        let yearly = schedule("cadence = \"yearly\"\ndeadline = { month = 1, day = 31 }");
        assert_eq!(due_local(&yearly, "2026-06-01T00:00:00+07:00"), "2027-02-01 00:00");
        let school = schedule("cadence = \"yearly\"\ndeadline = { month = 9, day = 30, time = \"17:00\" }");
        assert_eq!(due_local(&school, "2026-06-01T00:00:00+07:00"), "2027-09-30 17:00");
    }

    #[test]
    fn day_31_is_clamped_to_the_month_end() {
        let s = schedule("cadence = \"monthly\"\ndeadline = { day = 31 }");
        assert_eq!(due_local(&s, "2026-01-15T00:00:00+07:00"), "2026-03-01 00:00"); // 28 Feb, end of day
        assert_eq!(due_local(&s, "2028-01-15T00:00:00+07:00"), "2028-03-01 00:00"); // 29 Feb 2028
        assert_eq!(due_local(&s, "2026-03-15T00:00:00+07:00"), "2026-05-01 00:00"); // 30 April
        assert_eq!(due_local(&s, "2026-04-15T00:00:00+07:00"), "2026-06-01 00:00"); // 31 May
        let s = schedule("cadence = \"monthly\"\ndeadline = { day = 30, time = \"17:00\" }");
        assert_eq!(due_local(&s, "2027-01-31T23:59:00+07:00"), "2027-02-28 17:00");
        assert_eq!(due_local(&s, "2028-01-31T23:59:00+07:00"), "2028-02-29 17:00");
        let feb29 = schedule("cadence = \"yearly\"\ndeadline = { month = 2, day = 29 }");
        assert_eq!(due_local(&feb29, "2026-07-01T00:00:00+07:00"), "2027-03-01 00:00"); // 28 Feb 2027
        assert_eq!(due_local(&feb29, "2027-07-01T00:00:00+07:00"), "2028-03-01 00:00"); // 29 Feb 2028
        let q = schedule("cadence = \"quarterly\"\ndeadline = { day = 31, time = \"12:00\" }");
        assert_eq!(due_local(&q, "2026-02-01T00:00:00+07:00"), "2026-04-30 12:00");
        assert_eq!(due_local(&q, "2026-08-01T00:00:00+07:00"), "2026-10-31 12:00");
    }

    #[test]
    fn other_forms() {
        let end = schedule("cadence = \"monthly\"");
        assert_eq!(due_local(&end, "2026-04-30T23:59:59+07:00"), "2026-05-01 00:00");
        let first = schedule("cadence = \"monthly\"\ndeadline = { time = \"09:30\" }");
        assert_eq!(due_local(&first, "2026-04-02T00:00:00+07:00"), "2026-05-01 09:30");
        let daily = schedule("cadence = \"daily\"\ndeadline = { days_after = 1 }");
        assert_eq!(due_local(&daily, "2026-03-31T17:30:00Z"), "2026-04-03 00:00");
        let weekly = schedule("cadence = \"weekly\"\ndeadline = { days_after = 7 }");
        assert_eq!(due_local(&weekly, "2026-04-01T00:00:00+07:00"), "2026-04-13 00:00");
        let sunday = schedule("cadence = \"weekly\"\ndeadline = { weekday = \"sunday\" }");
        assert_eq!(due_local(&sunday, "2026-04-01T00:00:00+07:00"), "2026-04-13 00:00");
        let feb = schedule("cadence = \"monthly\"\ndeadline = { days_after = 28 }");
        assert_eq!(due_local(&feb, "2027-01-10T00:00:00+07:00"), "2027-03-01 00:00");
        let year = schedule("cadence = \"yearly\"\ndeadline = { days_after = 365, time = \"08:00\" }");
        assert_eq!(due_local(&year, "2027-06-01T00:00:00+07:00"), "2028-12-30 08:00");
        let every = schedule("cadence = { every = \"6h\" }\ngrace = \"30m\"");
        let p = every.period_containing(ts("2026-04-01T07:00:00+07:00")).expect("period");
        assert_eq!(every.due(&p).expect("due"), p.end);
        assert_eq!(every.overdue_after(&p).expect("od"), ts("2026-04-01T12:30:00+07:00"));
    }

    #[test]
    fn grace_extends_the_deadline() {
        let s = schedule("cadence = \"monthly\"\ndeadline = { day = 5, time = \"17:00\" }\ngrace = \"2days\"");
        let p = s.period_containing(ts("2026-03-10T00:00:00Z")).expect("period");
        assert_eq!(s.overdue_after(&p).expect("od"), ts("2026-04-07T17:00:00+07:00"));
    }

    fn errors(toml_text: &str) -> Vec<String> {
        let s: Schedule = toml::from_str(toml_text).expect("parses");
        s.validate().err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn validation_names_every_bad_field() {
        let e = errors("cadence = \"monthly\"\ndeadline = { day = 32, weekday = \"monday\", month = 1 }");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("deadline.day: 32")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("deadline.weekday:")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("deadline.month:")), "{e:?}");
        assert_eq!(errors("cadence = \"monthly\"\ndeadline = { day = 0 }").len(), 1);
        assert_eq!(errors("cadence = \"monthly\"\ndeadline = { days_after = 29 }").len(), 1);
        assert_eq!(errors("cadence = \"quarterly\"\ndeadline = { days_after = 91 }").len(), 1);
        assert!(errors("cadence = \"quarterly\"\ndeadline = { days_after = 90 }").is_empty());
        assert_eq!(errors("cadence = \"daily\"\ndeadline = { days_after = 2 }").len(), 1);
        assert_eq!(errors("cadence = \"daily\"\ndeadline = { day = 1 }").len(), 1);
        assert_eq!(errors("cadence = \"weekly\"\ndeadline = { day = 1 }").len(), 1);
        assert_eq!(errors("cadence = \"weekly\"\ndeadline = { weekday = \"monday\", days_after = 2 }").len(), 1);
        assert_eq!(
            errors("cadence = \"yearly\"\ndeadline = { day = 31 }"),
            ["deadline.month: is required with deadline.day for a yearly cadence"]
        );
        assert_eq!(errors("cadence = \"yearly\"\ndeadline = { month = 13, day = 1 }").len(), 1);
        assert_eq!(errors("cadence = \"yearly\"\ndeadline = { month = 9 }").len(), 1);
        assert_eq!(
            errors("cadence = { every = \"6h\" }\ndeadline = { time = \"08:00\" }"),
            ["deadline.time: not allowed with an interval cadence (use grace for slack)"]
        );
        assert_eq!(errors("cadence = { every = \"5s\" }"), ["cadence.every: must be between 1 minute and 366 days"]);
        assert_eq!(errors("cadence = \"daily\"\ngrace = \"400days\""), ["grace: must be at most 366 days"]);
        // An invalid schedule computes nothing rather than guessing.
        let s: Schedule = toml::from_str("cadence = \"monthly\"\ndeadline = { day = 40 }").expect("parses");
        let p = s.period_containing(ts("2026-01-01T00:00:00Z")).expect("period");
        assert!(matches!(s.due(&p), Err(ScheduleError::Invalid(FieldError { field: "deadline.day", .. }))));
    }

    #[test]
    fn malformed_toml_is_refused() {
        for bad in [
            "cadence = \"monthly\"\ndeadline = { day = -1 }",
            "cadence = \"monthly\"\ndeadline = { day = 5, hour = 17 }",
            "cadence = \"monthly\"\ndeadline = { time = \"25:00\" }",
            "cadence = \"monthly\"\ndeadline = { time = 17:00:00 }",
            "cadence = \"weekly\"\ndeadline = { weekday = \"thu\" }",
            "cadence = \"daily\"\ngrace = \"soon\"",
            "cadence = \"daily\"\ncolour = \"red\"",
        ] {
            assert!(toml::from_str::<Schedule>(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn schedule_round_trips_through_toml_and_json() {
        let s = schedule("cadence = \"weekly\"\ndeadline = { weekday = \"monday\", time = \"10:00\" }\ngrace = \"2h\"");
        let back: Schedule = toml::from_str(&toml::to_string(&s).expect("toml")).expect("reparse");
        assert_eq!(back, s);
        let back: Schedule = serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("reparse");
        assert_eq!(back, s);
    }

    proptest::proptest! {
        #[test]
        fn due_is_after_the_period_and_before_the_next_ends(
            secs in -2_208_988_800i64..7_258_118_400,
            which in 0usize..8,
            day in 1u8..=31,
            month in 1u8..=12,
            hour in 0i8..24,
        ) {
            let time = Some(Time::constant(hour, 0, 0, 0));
            let d = Deadline::default();
            let (cadence, deadline) = match which {
                0 => (Cadence::Daily, Deadline { time, ..d }),
                1 => (Cadence::Weekly, Deadline { weekday: Some(DeadlineWeekday::Sunday), time, ..d }),
                2 => (Cadence::Monthly, Deadline { day: Some(day), time, ..d }),
                3 => (Cadence::Quarterly, Deadline { day: Some(day), ..d }),
                4 => (Cadence::Quarterly, Deadline { days_after: Some(u16::from(day) * 2), ..d }),
                5 => (Cadence::Yearly, Deadline { month: Some(month), day: Some(day), time, ..d }),
                6 => (Cadence::Monthly, Deadline { days_after: Some(u16::from(day.min(28))), ..d }),
                _ => (Cadence::Every(Duration::from_secs(3600)), d),
            };
            let s = Schedule { cadence, deadline, grace: Duration::ZERO };
            proptest::prop_assert!(s.validate().is_ok());
            let p = s.period_containing(Timestamp::from_second(secs).expect("ts")).expect("period");
            let due = s.due(&p).expect("due");
            let next = s.cadence.next(&p).expect("next");
            proptest::prop_assert!(due >= p.end, "{due} before the end of {p:?}");
            proptest::prop_assert!(due <= next.end, "{due} after the end of {next:?}");
        }
    }
}
