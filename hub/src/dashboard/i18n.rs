//! The dashboard's two languages (pure): Vietnamese by default, English on request. Texts are
//! written in pairs where they are used (`lang.tr("Đúng hạn", "On time")`), so a page reads in
//! both languages at once and no key can go missing.

use kho_shared::freshness::Status;
use kho_shared::freshness::readiness::{Staleness, StalenessUnit};
use kho_shared::schedule::Cadence;

/// Cookie that remembers the chosen language.
pub const LANG_COOKIE: &str = "kho_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Vi,
    En,
}

impl Lang {
    /// `vi` or `en`; anything else is `None`.
    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// The other language (the switch offers it).
    pub fn other(self) -> Lang {
        match self {
            Lang::Vi => Lang::En,
            Lang::En => Lang::Vi,
        }
    }

    pub fn tr(self, vi: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }

    pub fn status(self, s: Status) -> &'static str {
        match s {
            Status::OnTime => self.tr("Đúng hạn", "On time"),
            Status::Due => self.tr("Đến hạn", "Due"),
            Status::Overdue => self.tr("Quá hạn", "Overdue"),
            Status::NeverReceived => self.tr("Chưa nhận", "Never received"),
        }
    }

    /// `2 ngày` / `2 days`.
    pub fn staleness(self, s: &Staleness) -> String {
        match self {
            Lang::En => s.to_string(),
            Lang::Vi => {
                let unit = match s.unit {
                    StalenessUnit::Hour => "giờ",
                    StalenessUnit::Day => "ngày",
                    StalenessUnit::Week => "tuần",
                    StalenessUnit::Month => "tháng",
                    StalenessUnit::Quarter => "quý",
                    StalenessUnit::Year => "năm",
                };
                format!("{} {unit}", s.count)
            }
        }
    }

    pub fn cadence(self, c: &Cadence) -> String {
        match c {
            Cadence::Daily => self.tr("Hằng ngày", "Daily").into(),
            Cadence::Weekly => self.tr("Hằng tuần", "Weekly").into(),
            Cadence::Monthly => self.tr("Hằng tháng", "Monthly").into(),
            Cadence::Quarterly => self.tr("Hằng quý", "Quarterly").into(),
            Cadence::Yearly => self.tr("Hằng năm", "Yearly").into(),
            Cadence::Every(d) => format!("{} {}", self.tr("Mỗi", "Every"), humantime::format_duration(*d)),
        }
    }
}

/// Formats a timestamp in Asia/Ho_Chi_Minh (`2026-04-05 17:00`), or `—`.
pub fn local_time(t: Option<jiff::Timestamp>) -> String {
    let Some(t) = t else { return "—".into() };
    match jiff::tz::TimeZone::get("Asia/Ho_Chi_Minh") {
        Ok(tz) => t.to_zoned(tz).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_is_the_default_and_english_the_switch() {
        assert_eq!(Lang::default(), Lang::Vi);
        assert_eq!(Lang::default().status(Status::Overdue), "Quá hạn");
        assert_eq!(Lang::En.status(Status::Overdue), "Overdue");
        assert_eq!(Lang::parse("en").map(Lang::other), Some(Lang::Vi));
        assert_eq!(Lang::parse("fr"), None);
        assert_eq!(Lang::Vi.cadence(&Cadence::Monthly), "Hằng tháng");
        let two_days: Staleness = "2 days".parse().expect("staleness");
        assert_eq!((Lang::Vi.staleness(&two_days), Lang::En.staleness(&two_days)), ("2 ngày".into(), "2 days".into()));
    }

    #[test]
    fn times_show_in_the_provinces_zone() {
        let t: jiff::Timestamp = "2026-04-05T10:00:00Z".parse().expect("ts");
        assert_eq!(local_time(Some(t)), "2026-04-05 17:00");
        assert_eq!(local_time(None), "—");
    }
}
