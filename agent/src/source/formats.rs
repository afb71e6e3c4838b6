//! Local value formats of CSV/XLSX columns (pure): how a department's export writes dates and
//! numbers, declared per column as `formats = { ngay = "%d/%m/%Y", so_tien = "vi" }` next to the
//! column's declared type.
//!
//! - A date pattern (strftime-style, `%d/%m/%Y`, `%d/%m/%Y %H:%M`, `%d-%m-%y`) for a `date` or
//!   `timestamp` column; the value must match it whole (jiff's `strtime`).
//! - `"excel"`: an Excel serial day number (days since 1899-12-30, fraction = time of day), as
//!   exports from spreadsheets often write dates; for `date` or `timestamp` columns.
//! - `"vi"` (also written `"1.234.567,89"`): Vietnamese numbers, `.` between thousands and `,`
//!   before decimals; `"en"` (`"1,234,567.89"`) the other way round; for `int`, `decimal` and
//!   `float` columns. Thousands groups must be complete (`1.23,5` is refused, not guessed).
//!
//! A value that does not fit is an error naming the value and the expected form; the folder
//! source reports it with its line and column and refuses the whole file.

use kho_shared::types::ColumnType;

use super::row::RowBuf;
use super::values;

/// A declared column format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueFormat {
    /// A strftime-style date or date-time pattern.
    Date(String),
    /// Excel serial day numbers.
    ExcelSerial,
    /// Grouped numbers: thousands separator, decimal separator.
    Number { thousands: char, decimal: char },
}

impl ValueFormat {
    /// Parses a config spelling and checks it suits a column of type `ty`.
    pub fn parse(spec: &str, ty: Option<ColumnType>) -> Result<ValueFormat, String> {
        let f = match spec.trim() {
            "excel" => ValueFormat::ExcelSerial,
            "vi" | "1.234.567,89" => ValueFormat::Number { thousands: '.', decimal: ',' },
            "en" | "1,234,567.89" => ValueFormat::Number { thousands: ',', decimal: '.' },
            p if p.contains('%') => {
                let probe = jiff::civil::date(2026, 12, 31).at(23, 59, 58, 0);
                let shown =
                    jiff::fmt::strtime::format(p, probe).map_err(|e| format!("{p:?} is not a date pattern: {e}"))?;
                let back = jiff::fmt::strtime::parse(p, &shown).and_then(|t| t.to_date());
                if back.ok() != Some(probe.date()) {
                    return Err(format!("{p:?} must contain a day, a month and a year (e.g. \"%d/%m/%Y\")"));
                }
                ValueFormat::Date(p.to_string())
            }
            other => {
                return Err(format!(
                    "{other:?} is not a format: use a date pattern such as \"%d/%m/%Y\", \"excel\", \"vi\" or \"en\""
                ));
            }
        };
        let fits = matches!(
            (&f, ty),
            (ValueFormat::Date(_) | ValueFormat::ExcelSerial, Some(ColumnType::Date | ColumnType::Timestamp))
                | (ValueFormat::Number { .. }, Some(ColumnType::Int | ColumnType::Decimal | ColumnType::Float))
        );
        if !fits {
            let need = match f {
                ValueFormat::Number { .. } => "int, decimal or float",
                _ => "date or timestamp",
            };
            return Err(format!("needs the column's type declared in `types` as {need}"));
        }
        Ok(f)
    }
}

/// Appends the non-empty value `s`, written in `format`, as a value of `ty`.
pub fn push_formatted(out: &mut RowBuf, ty: ColumnType, format: &ValueFormat, s: &str) -> Result<(), String> {
    let t = s.trim();
    match format {
        ValueFormat::Date(pattern) => {
            let tm = jiff::fmt::strtime::parse(pattern, t)
                .map_err(|_| format!("{s:?} does not match the date format {pattern:?}"))?;
            let date = tm.to_date().map_err(|e| format!("{s:?} is not a real date ({pattern:?}): {e}"))?;
            match ty {
                ColumnType::Date => out.push_text(date.to_string().as_bytes()),
                _ => {
                    let dt = tm.to_datetime().unwrap_or_else(|_| date.at(0, 0, 0, 0));
                    out.push_text(dt.strftime("%Y-%m-%dT%H:%M:%S%.f").to_string().as_bytes());
                }
            }
        }
        ValueFormat::ExcelSerial => {
            // An XLSX date cell was already turned into ISO form by the reader.
            if values::is_iso_date(t) || values::is_iso_timestamp(t) {
                return values::push_typed(out, ty, t);
            }
            let serial: f64 = t.parse().map_err(|_| format!("{s:?} is not an Excel serial date"))?;
            let iso =
                values::excel_serial_to_iso(serial).ok_or_else(|| format!("{s:?} is out of the Excel date range"))?;
            match ty {
                ColumnType::Date if iso.len() != 10 => {
                    return Err(format!("{s:?} has a time of day; declare the column as timestamp"));
                }
                ColumnType::Timestamp if iso.len() == 10 => out.push_text(format!("{iso}T00:00:00").as_bytes()),
                _ => out.push_text(iso.as_bytes()),
            }
        }
        ValueFormat::Number { thousands, decimal } => {
            let plain = ungroup(t, *thousands, *decimal)
                .ok_or_else(|| format!("{s:?} is not a number written as 1{thousands}234{thousands}567{decimal}89"))?;
            if ty == ColumnType::Int && plain.contains('.') {
                return Err(format!("{s:?} is not an integer"));
            }
            values::push_typed(out, ty, &plain)?;
        }
    }
    Ok(())
}

/// `1.234.567,89` → `1234567.89` (with `.` and `,`), or None when the grouping is not regular.
pub fn ungroup(s: &str, thousands: char, decimal: char) -> Option<String> {
    let (sign, body) = match s.strip_prefix('-') {
        Some(b) => ("-", b),
        None => ("", s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = match body.split_once(decimal) {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let groups: Vec<&str> = int.split(thousands).collect();
    let digits = |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    let grouped_ok = groups.iter().all(|g| digits(g))
        && (groups.len() == 1 || (groups[0].len() <= 3 && groups[1..].iter().all(|g| g.len() == 3)));
    if !grouped_ok || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    let mut out = format!("{sign}{}", groups.concat());
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::{Cell, RowView};

    fn one(ty: ColumnType, spec: &str, s: &str) -> Result<String, String> {
        let f = ValueFormat::parse(spec, Some(ty))?;
        let mut r = RowBuf::default();
        push_formatted(&mut r, ty, &f, s)?;
        Ok(match r.cell(0).unwrap() {
            Cell::Text(t) => String::from_utf8(t.to_vec()).unwrap(),
            Cell::Int(i) => i.to_string(),
            Cell::Real(f) => format!("{f:?}"),
            other => format!("{other:?}"),
        })
    }

    #[test]
    fn vietnamese_dates_and_numbers() {
        assert_eq!(one(ColumnType::Date, "%d/%m/%Y", "05/01/2026").unwrap(), "2026-01-05");
        assert_eq!(one(ColumnType::Date, "%d/%m/%Y", "5/1/2026").unwrap(), "2026-01-05");
        assert_eq!(one(ColumnType::Timestamp, "%d/%m/%Y %H:%M", "31/12/2025 17:45").unwrap(), "2025-12-31T17:45:00");
        assert_eq!(one(ColumnType::Timestamp, "%d/%m/%Y", "31/12/2025").unwrap(), "2025-12-31T00:00:00");
        assert_eq!(one(ColumnType::Decimal, "vi", "1.234.567,89").unwrap(), "1234567.89");
        assert_eq!(one(ColumnType::Decimal, "vi", "-0,5").unwrap(), "-0.5");
        assert_eq!(one(ColumnType::Int, "1.234.567,89", "12.000").unwrap(), "12000");
        assert_eq!(one(ColumnType::Float, "en", "1,234.5").unwrap(), "1234.5");
        assert_eq!(one(ColumnType::Date, "excel", "46023").unwrap(), "2026-01-01");
        assert_eq!(one(ColumnType::Timestamp, "excel", "46023.75").unwrap(), "2026-01-01T18:00:00");
        assert_eq!(one(ColumnType::Date, "excel", "2026-01-01").unwrap(), "2026-01-01");
    }

    #[test]
    fn values_that_do_not_fit_are_named() {
        for (ty, spec, bad) in [
            (ColumnType::Date, "%d/%m/%Y", "2026-01-05"),
            (ColumnType::Date, "%d/%m/%Y", "31/02/2026"),
            (ColumnType::Decimal, "vi", "1,234.50"),
            (ColumnType::Decimal, "vi", "1.23,5"),
            (ColumnType::Int, "vi", "12,5"),
            (ColumnType::Date, "excel", "46023.5"),
            (ColumnType::Date, "excel", "hôm qua"),
        ] {
            let e = one(ty, spec, bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(ValueFormat::parse("%d/%m", Some(ColumnType::Date)).unwrap_err().contains("year"));
        assert!(ValueFormat::parse("vi", Some(ColumnType::Date)).unwrap_err().contains("int, decimal or float"));
        assert!(ValueFormat::parse("%d/%m/%Y", None).unwrap_err().contains("types"));
        assert!(ValueFormat::parse("dd/mm/yyyy", Some(ColumnType::Date)).is_err());
    }
}
