//! When a dataset is polled: every `poll_interval`, or at the times of a cron-like `schedule` in
//! the province's time zone (Asia/Ho_Chi_Minh, UTC+7 all year), e.g. `schedule = "0 2 * * *"` —
//! every day at 02:00, when the department's database is idle.
//!
//! The dialect is standard five-field cron (`minute hour day-of-month month day-of-week`, with
//! `*`, lists, ranges and steps) plus `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//! Days of the week must be written as names (`mon-fri`): numbers mean different days in
//! different cron dialects (0 or 1 for Sunday), and a silent one-day shift is the worst kind of
//! schedule bug. Parsing and "next time" are pure and unit-tested; the scheduler only sleeps.

use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

/// The province's offset (no daylight saving in Vietnam since 1975).
const PROVINCE: Offset = Offset::constant(7);

/// A dataset's poll schedule.
#[derive(Debug, Clone)]
pub enum PollSchedule {
    /// Poll, then wait this long, then poll again.
    Every(Duration),
    /// Poll at the cron schedule's times.
    Cron(Box<CronSchedule>),
}

/// A parsed cron-like schedule with the text it came from.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    schedule: jiff_cron::Schedule,
}

impl CronSchedule {
    /// Parses the dialect described in the module docs; the error says what is wrong.
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let trimmed = text.trim();
        let expression = if trimmed.starts_with('@') {
            trimmed.to_ascii_lowercase()
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(format!(
                    "{text:?} has {} field(s); expected 5 (minute hour day-of-month month day-of-week), \
                     e.g. \"0 2 * * *\" for every day at 02:00",
                    fields.len()
                ));
            }
            if fields[4].chars().any(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "{text:?}: write days of the week as names (mon, tue, …, sun; e.g. \"mon-fri\"), \
                     not numbers — cron dialects disagree on which number is Sunday"
                ));
            }
            format!("0 {}", fields.join(" "))
        };
        let schedule = jiff_cron::Schedule::from_str(&expression).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(CronSchedule { text: trimmed.to_string(), schedule })
    }

    /// The first scheduled time strictly after `t`, in the province's time zone.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(TimeZone::fixed(PROVINCE));
        self.schedule.after(zoned).next().map(|z| z.timestamp())
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl PollSchedule {
    /// How long to wait after a poll that ended at `now`.
    pub fn wait_after(&self, now: Timestamp) -> Duration {
        match self {
            PollSchedule::Every(d) => *d,
            PollSchedule::Cron(c) => c.wait_until_next(now),
        }
    }

    /// How long to wait before the first poll: none for an interval (catch up at start), until
    /// the first scheduled time for a cron schedule (the department chose when its database is
    /// read; `kho-agent sync --once` reads it now).
    pub fn wait_before_first(&self, now: Timestamp) -> Duration {
        match self {
            PollSchedule::Every(_) => Duration::ZERO,
            PollSchedule::Cron(c) => c.wait_until_next(now),
        }
    }
}

impl CronSchedule {
    fn wait_until_next(&self, now: Timestamp) -> Duration {
        // A schedule with no future time (a past year) waits a day and asks again.
        self.next_after(now)
            .and_then(|next| Duration::try_from(next.duration_since(now)).ok())
            .unwrap_or(Duration::from_secs(86_400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn cron(s: &str) -> CronSchedule {
        CronSchedule::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn daily_at_two_is_two_in_the_morning_in_son_la() {
        let c = cron("0 2 * * *");
        // 18:30 UTC on 31 Jan = 01:30 on 1 Feb in Sơn La: the next 02:00 local is 30 minutes away.
        assert_eq!(c.next_after(t("2026-01-31T18:30:00Z")), Some(t("2026-01-31T19:00:00Z")));
        // Exactly at 02:00 local: strictly after, so tomorrow.
        assert_eq!(c.next_after(t("2026-01-31T19:00:00Z")), Some(t("2026-02-01T19:00:00Z")));
        let wait = PollSchedule::Cron(Box::new(c)).wait_after(t("2026-01-31T18:30:00Z"));
        assert_eq!(wait, Duration::from_secs(1800));
    }

    #[test]
    fn weekdays_by_name_steps_and_shorthands() {
        // Friday 27 Feb 2026, 17:10 local → Monday 2 March 08:00 local.
        let c = cron("0 8 * * mon-fri");
        assert_eq!(c.next_after(t("2026-02-27T10:10:00Z")), Some(t("2026-03-02T01:00:00Z")));
        let c = cron("*/15 * * * *");
        assert_eq!(c.next_after(t("2026-02-27T10:10:00Z")), Some(t("2026-02-27T10:15:00Z")));
        // Month end in a leap year: "on the 29th" skips to the next month that has one.
        let c = cron("30 6 29 * *");
        assert_eq!(c.next_after(t("2028-02-01T00:00:00Z")), Some(t("2028-02-28T23:30:00Z")));
        assert_eq!(c.next_after(t("2027-02-01T00:00:00Z")), Some(t("2027-03-28T23:30:00Z")));
        let c = cron("@daily");
        assert_eq!(c.next_after(t("2026-02-27T10:10:00Z")), Some(t("2026-02-27T17:00:00Z")), "midnight local");
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn bad_schedules_say_what_is_wrong() {
        let e = CronSchedule::parse("0 2 * *").map(|_| ()).unwrap_err();
        assert!(e.contains("expected 5"), "{e}");
        let e = CronSchedule::parse("0 2 * * 1").map(|_| ()).unwrap_err();
        assert!(e.contains("names"), "{e}");
        let e = CronSchedule::parse("0 25 * * *").map(|_| ()).unwrap_err();
        assert!(e.contains("\"0 25 * * *\""), "{e}");
        assert!(CronSchedule::parse("every day").is_err());
    }

    #[test]
    fn intervals_poll_at_once_cron_waits() {
        let now = t("2026-01-31T18:30:00Z");
        assert_eq!(PollSchedule::Every(Duration::from_secs(10)).wait_before_first(now), Duration::ZERO);
        assert_eq!(PollSchedule::Every(Duration::from_secs(10)).wait_after(now), Duration::from_secs(10));
        assert_eq!(PollSchedule::Cron(Box::new(cron("0 2 * * *"))).wait_before_first(now), Duration::from_secs(1800));
    }
}
