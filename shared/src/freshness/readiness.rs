//! Operational-scenario readiness: can the IOC trust a scenario's inputs right now?
//!
//! A scenario (kịch bản điều hành) lists input datasets, each with a maximum allowed staleness
//! ([`Staleness`]: `"1 day"`, `"1 week"`, `"1 month"`, `"1 quarter"`, `"1 year"`, `"6h"`). The
//! scenario is `ready` when no input blocks, else `blocked` with every blocking input and why, first
//! matching reason wins:
//!
//! 1. `not_in_catalogue`: the input names no known dataset (a catalogue error, shown rather than hidden);
//! 2. `never_received`;
//! 3. `overdue`: the owning department missed a deadline, whatever the staleness allows;
//! 4. `stale`: the data was last known current (latest change or confirmed sync, as in
//!    [`super::Freshness::age_s`]) before `now - max_staleness`, subtracted on the Sơn La calendar
//!    (one month before 31 March is 28 or 29 February).
//!
//! Staleness is a dbt-style `error_after` on the data's age, so it should be at least the cadence
//! plus the deadline's offset: a monthly report due on day 5 and last sent on 3 March is 1 month old
//! on 3 April, before April's report is due. The hub adds departments and contacts to the blockers.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use super::{Freshness, Status};
use crate::schedule::{PROVINCE_OFFSET, ScheduleError, out_of_range};

/// Unit of a [`Staleness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StalenessUnit {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// A calendar amount of time, written `"<n> <unit>"` (`"1 month"`, `"2 weeks"`, `"6h"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Staleness {
    pub count: u16,
    pub unit: StalenessUnit,
}

/// Why a staleness string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a staleness such as \"1 day\", \"2 weeks\", \"1 month\", \"1 quarter\" or \"6h\"")]
pub struct StalenessError(String);

impl FromStr for Staleness {
    type Err = StalenessError;

    fn from_str(s: &str) -> Result<Staleness, StalenessError> {
        let bad = || StalenessError(s.to_string());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let count: u16 = t[..split].parse().map_err(|_| bad())?;
        let unit = match t[split..].trim().to_ascii_lowercase().as_str() {
            "h" | "hour" | "hours" => StalenessUnit::Hour,
            "d" | "day" | "days" => StalenessUnit::Day,
            "w" | "week" | "weeks" => StalenessUnit::Week,
            "mo" | "month" | "months" => StalenessUnit::Month,
            "q" | "quarter" | "quarters" => StalenessUnit::Quarter,
            "y" | "year" | "years" => StalenessUnit::Year,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(Staleness { count, unit })
    }
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            StalenessUnit::Hour => "hour",
            StalenessUnit::Day => "day",
            StalenessUnit::Week => "week",
            StalenessUnit::Month => "month",
            StalenessUnit::Quarter => "quarter",
            StalenessUnit::Year => "year",
        };
        write!(f, "{} {unit}{}", self.count, if self.count == 1 { "" } else { "s" })
    }
}

impl Serialize for Staleness {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Staleness {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Staleness, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Staleness {
    fn span(self) -> Span {
        let n = i64::from(self.count);
        match self.unit {
            StalenessUnit::Hour => n.hours(),
            StalenessUnit::Day => n.days(),
            StalenessUnit::Week => n.weeks(),
            StalenessUnit::Month => n.months(),
            StalenessUnit::Quarter => (3 * n).months(),
            StalenessUnit::Year => n.years(),
        }
    }

    /// The oldest instant still fresh at `now`: `now` minus this amount on the Sơn La calendar.
    pub fn cutoff(self, now: Timestamp) -> Result<Timestamp, ScheduleError> {
        let local = now.to_zoned(TimeZone::fixed(PROVINCE_OFFSET));
        local.checked_sub(self.span()).map(|z| z.timestamp()).map_err(|_| out_of_range(now))
    }
}

/// One input of a scenario (catalogue: `inputs = [{ dataset = "ho_so_tthc", max_staleness = "1 day" }]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioInput {
    pub dataset: String,
    pub max_staleness: Staleness,
}

/// Whether a scenario can be trusted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    Ready,
    Blocked,
}

/// Why an input blocks its scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    NotInCatalogue,
    NeverReceived,
    Overdue,
    Stale,
}

/// One blocking input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub dataset: String,
    pub reason: BlockReason,
    pub status: Option<Status>,
    pub max_staleness: Staleness,
    pub age_s: Option<i64>,
    pub agent_offline: bool,
}

/// A scenario's readiness at `evaluated_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub state: ReadinessState,
    pub evaluated_at: Timestamp,
    pub blocking: Vec<Blocker>,
}

/// Judges a scenario's inputs at `now`; `freshness` looks up a dataset's current evaluation.
pub fn readiness<'a>(
    now: Timestamp,
    inputs: &[ScenarioInput],
    freshness: impl Fn(&str) -> Option<&'a Freshness>,
) -> Result<Readiness, ScheduleError> {
    let mut blocking = Vec::new();
    for input in inputs {
        let f = freshness(&input.dataset);
        let reason = match f {
            None => Some(BlockReason::NotInCatalogue),
            Some(f) if f.status == Status::NeverReceived => Some(BlockReason::NeverReceived),
            Some(f) if f.status == Status::Overdue => Some(BlockReason::Overdue),
            Some(f) => {
                let cutoff = input.max_staleness.cutoff(now)?;
                let known_current = f.max_loaded_at.max(f.last_sync_at);
                known_current.is_none_or(|t| t < cutoff).then_some(BlockReason::Stale)
            }
        };
        if let Some(reason) = reason {
            blocking.push(Blocker {
                dataset: input.dataset.clone(),
                reason,
                status: f.map(|f| f.status),
                max_staleness: input.max_staleness,
                age_s: f.and_then(|f| f.age_s),
                agent_offline: f.is_some_and(|f| f.agent_offline),
            });
        }
    }
    let state = if blocking.is_empty() { ReadinessState::Ready } else { ReadinessState::Blocked };
    Ok(Readiness { state, evaluated_at: now, blocking })
}

#[cfg(test)]
mod tests {
    use super::super::{DatasetRule, Observations, UpdateKind, evaluate};
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn staleness_parses_and_prints() {
        for (text, shown) in
            [("1 month", "1 month"), ("2weeks", "2 weeks"), ("6h", "6 hours"), ("1 Quarter", "1 quarter")]
        {
            let s: Staleness = text.parse().expect(text);
            assert_eq!(s.to_string(), shown);
            assert_eq!(shown.parse::<Staleness>().expect("reparse"), s);
        }
        for bad in ["", "month", "0 days", "1 fortnight", "-1 day", "1.5 days", "99999 days"] {
            assert!(bad.parse::<Staleness>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn staleness_cutoff_is_calendar_based() {
        let month: Staleness = "1 month".parse().expect("month");
        let cut = |s: Staleness, t: &str| s.cutoff(ts(t)).expect("cutoff");
        assert_eq!(cut(month, "2026-03-31T10:00:00+07:00"), ts("2026-02-28T10:00:00+07:00"));
        assert_eq!(cut(month, "2028-03-31T10:00:00+07:00"), ts("2028-02-29T10:00:00+07:00"));
        // 31 March 17:30 UTC is 1 April in Sơn La: one month earlier is 1 March, not 28 February.
        assert_eq!(cut(month, "2026-03-31T17:30:00Z"), ts("2026-02-28T17:30:00Z"));
        let quarter: Staleness = "1 quarter".parse().expect("quarter");
        assert_eq!(cut(quarter, "2026-05-31T00:00:00+07:00"), ts("2026-02-28T00:00:00+07:00"));
        let year: Staleness = "1 year".parse().expect("year");
        assert_eq!(cut(year, "2029-02-28T00:00:00+07:00"), ts("2028-02-28T00:00:00+07:00"));
    }

    #[test]
    fn scenario_blocks_on_each_reason() {
        let now = ts("2026-04-20T12:00:00+07:00");
        let rule = |cadence: &str, kind| DatasetRule {
            schedule: toml::from_str(cadence).expect("schedule"),
            update_kind: kind,
            freshness_field: None,
        };
        let daily = rule("cadence = \"daily\"\ndeadline = { time = \"08:00\" }", UpdateKind::Sync);
        let monthly = rule("cadence = \"monthly\"\ndeadline = { day = 5, time = \"17:00\" }", UpdateKind::Change);
        let seen = |t: &str| Observations {
            first_received_at: Some(ts("2025-01-01T00:00:00Z")),
            last_sync_at: Some(ts(t)),
            last_change_at: Some(ts(t)),
            agent_last_seen_at: Some(ts(t)),
            agent_offline_after: std::time::Duration::from_secs(3600),
            ..Observations::default()
        };
        let fresh_daily = evaluate(now, &daily, &seen("2026-04-20T11:30:00+07:00")).expect("eval");
        let fresh_monthly = evaluate(now, &monthly, &seen("2026-04-04T09:00:00+07:00")).expect("eval");
        let late_monthly = evaluate(now, &monthly, &seen("2026-03-04T09:00:00+07:00")).expect("eval");
        let never = evaluate(now, &monthly, &Observations::default()).expect("eval");
        assert_eq!(late_monthly.status, Status::Overdue);
        let table = [
            ("ho_so_tthc", &fresh_daily),
            ("thu_chi_ngan_sach", &fresh_monthly),
            ("luot_khach_du_lich", &late_monthly),
            ("dien_tich_gieo_trong", &never),
        ];
        let lookup = |id: &str| table.iter().find(|(d, _)| *d == id).map(|(_, f)| *f);
        let input = |dataset: &str, max: &str| ScenarioInput {
            dataset: dataset.into(),
            max_staleness: max.parse().expect("staleness"),
        };
        let ok = readiness(now, &[input("ho_so_tthc", "1 day"), input("thu_chi_ngan_sach", "1 month")], lookup)
            .expect("readiness");
        assert_eq!((ok.state, ok.blocking.len()), (ReadinessState::Ready, 0));
        let inputs = [
            input("ho_so_tthc", "1h"),
            input("thu_chi_ngan_sach", "1 week"),
            input("luot_khach_du_lich", "1 year"),
            input("dien_tich_gieo_trong", "1 month"),
            input("giai_ngan", "1 week"),
        ];
        let r = readiness(now, &inputs, lookup).expect("readiness");
        assert_eq!(r.state, ReadinessState::Blocked);
        let got: Vec<_> = r.blocking.iter().map(|b| (b.dataset.as_str(), b.reason)).collect();
        assert_eq!(
            got,
            [
                ("thu_chi_ngan_sach", BlockReason::Stale),
                ("luot_khach_du_lich", BlockReason::Overdue),
                ("dien_tich_gieo_trong", BlockReason::NeverReceived),
                ("giai_ngan", BlockReason::NotInCatalogue),
            ]
        );
        assert!(r.blocking[1].agent_offline, "the monthly agent was last seen on 4 March");
        let json = serde_json::to_value(&r.blocking[0]).expect("json");
        assert_eq!(json["max_staleness"], "1 week");
        assert_eq!(json["reason"], "stale");
    }

    #[test]
    fn scenario_inputs_from_toml() {
        #[derive(Deserialize)]
        struct Scenario {
            inputs: Vec<ScenarioInput>,
        }
        let text = r#"inputs = [
            { dataset = "chi_so_cds", max_staleness = "1 quarter" },
            { dataset = "dvc_truc_tuyen", max_staleness = "1 month" },
        ]"#;
        let s: Scenario = toml::from_str(text).expect("toml");
        assert_eq!(s.inputs[0].max_staleness, Staleness { count: 1, unit: StalenessUnit::Quarter });
        assert!(toml::from_str::<Scenario>("inputs = [{ dataset = \"x\", max_staleness = \"soon\" }]").is_err());
    }
}
