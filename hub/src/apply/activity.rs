//! Freshness evidence computed from a batch's rows (never by a table scan): per dataset, the
//! largest business date among its upserts' `freshness_field`.

use kho_shared::protocol::{Change, Op};

use crate::warehouse::DatasetActivity;

/// Per dataset touched by `changes`: the largest business date among its upserted rows'
/// `freshness_field` (deletes never lower it: the evidence only moves forward). Pure.
pub fn activity<'a>(changes: &[Change], field_of: impl Fn(&str) -> Option<&'a str>) -> Vec<DatasetActivity> {
    let mut out: Vec<DatasetActivity> = Vec::new();
    for c in changes {
        let pos = match out.iter().position(|a| a.dataset == c.dataset) {
            Some(i) => i,
            None => {
                out.push(DatasetActivity { dataset: c.dataset.clone(), max_business_date: None });
                out.len() - 1
            }
        };
        let Some(field) = field_of(&c.dataset) else {
            continue;
        };
        if c.op != Op::Upsert {
            continue;
        }
        let date = c.row.as_ref().and_then(|r| r.get(field)).and_then(business_date);
        let entry = &mut out[pos].max_business_date;
        if date.is_some() && date > *entry {
            *entry = date;
        }
    }
    out
}

/// A `freshness_field` value as a `YYYY-MM-DD` date: a date or timestamp (`2026-02-01`,
/// `2026-02-01T08:00:00Z`), a month (`2026-02` → its first day) or a year (`2026` → 1 January).
pub fn business_date(value: &serde_json::Value) -> Option<String> {
    let found = match value {
        serde_json::Value::String(s) => business_day(s.trim()),
        serde_json::Value::Number(n) => business_day(&n.as_i64()?.to_string()),
        _ => None,
    }?;
    Some(found.to_string())
}

/// [`business_date`] of text, as a date: what `range` rules compare, with no allocation for a
/// plain `YYYY-MM-DD…` value.
pub fn business_day(text: &str) -> Option<jiff::civil::Date> {
    let date = |s: &str| s.parse::<jiff::civil::Date>().ok();
    text.get(..10)
        .and_then(date)
        .or_else(|| text.get(..7).and_then(|m| date(&format!("{m}-01"))))
        .or_else(|| text.get(..4).filter(|_| text.len() == 4).and_then(|y| date(&format!("{y}-01-01"))))
}

/// The month (`YYYY-MM`) and year (`YYYY`) spellings of a [`business_date`] whose date — the
/// month's or the year's first day — falls in `[start, end)` (`YYYY-MM-DD` dates): with the
/// full dates in that range, the `freshness_field` values a period's `row_count` counts. (A text
/// comparison alone puts `2026-02` before `2026-02-01`, in January.) At most 100 years' worth.
pub fn short_business_dates(start: &str, end: &str) -> Vec<String> {
    let (Ok(start), Ok(end)) = (start.parse::<jiff::civil::Date>(), end.parse::<jiff::civil::Date>()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut month = start.first_of_month();
    for _ in 0..1200 {
        if month >= end {
            break;
        }
        if month >= start {
            out.push(format!("{:04}-{:02}", month.year(), month.month()));
            if month.month() == 1 {
                out.push(format!("{:04}", month.year()));
            }
        }
        let Ok(next) = month.checked_add(jiff::Span::new().months(1)) else { break };
        month = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_spellings_belong_to_the_period_holding_their_first_day() {
        assert_eq!(short_business_dates("2026-02-01", "2026-03-01"), ["2026-02"]);
        assert_eq!(short_business_dates("2026-01-01", "2027-01-01").len(), 13, "12 months and the year");
        assert!(short_business_dates("2026-01-01", "2027-01-01").contains(&"2026".to_string()));
        assert_eq!(short_business_dates("2026-01-01", "2026-04-01"), ["2026-01", "2026", "2026-02", "2026-03"]);
        // A week holding no first of a month has none; one holding 1 March has March.
        assert!(short_business_dates("2026-02-09", "2026-02-16").is_empty());
        assert_eq!(short_business_dates("2026-02-23", "2026-03-02"), ["2026-03"]);
        assert!(short_business_dates("bad", "2026-03-02").is_empty());
    }

    #[test]
    fn business_dates_from_dates_months_and_years() {
        use serde_json::json;
        assert_eq!(business_date(&json!("2026-02-01")).as_deref(), Some("2026-02-01"));
        assert_eq!(business_date(&json!("2026-02-14T08:00:00Z")).as_deref(), Some("2026-02-14"));
        assert_eq!(business_date(&json!("2026-02")).as_deref(), Some("2026-02-01"));
        assert_eq!(business_date(&json!(2025)).as_deref(), Some("2025-01-01"));
        assert_eq!(business_date(&json!("tháng 2")), None);
        assert_eq!(business_date(&json!(null)), None);
        let up = |seq, d: &str, v: serde_json::Value| Change {
            seq,
            dataset: d.into(),
            op: Op::Upsert,
            key: None,
            row: json!({"ky": v}).as_object().cloned(),
        };
        let changes = [
            up(1, "a", json!("2026-01")),
            up(2, "a", json!("2026-03")),
            up(3, "a", json!("2026-02")),
            up(4, "b", json!("2026-05")),
        ];
        let got = activity(&changes, |d| (d == "a").then_some("ky"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].max_business_date.as_deref(), Some("2026-03-01"));
        assert_eq!(got[1].max_business_date, None, "b has no freshness_field");
    }
}
