//! Typing of untyped values (pure): CSV and XLSX cells and JSON scalars arrive as text or loosely
//! typed values, and this module decides each column's portable type and converts values to
//! [`super::Cell`]s.
//!
//! Inference is conservative: a column is `int` only if every non-empty value is a plain integer
//! that fits i64 without a leading zero (`007` is an identifier and stays text); `decimal` if every
//! value is an integer or a plain decimal (`-12.50`), kept exactly as written (never through f64);
//! `date` if every value is `YYYY-MM-DD`; `timestamp` if every value is an ISO 8601 date-time (or a
//! date); `bool` only for values that were booleans in the source (XLSX, JSON); anything else is
//! `text`, which holds every value losslessly. A column with no values at all is `text`. Declared
//! types (`types = { col = "decimal" }` in the config) replace inference for their columns; a value
//! that does not fit a declared type is an error naming it, never a silent NULL.

use kho_shared::types::ColumnType;

use super::row::RowBuf;

/// What one non-empty value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Int,
    Decimal,
    Date,
    Timestamp,
    Bool,
    /// A JSON object or array.
    Json,
    Text,
}

/// Classifies a text value (CSV field, XLSX string, JSON string).
pub fn classify_text(s: &str) -> Class {
    if is_int(s) {
        Class::Int
    } else if is_decimal(s) {
        Class::Decimal
    } else if is_iso_date(s) {
        Class::Date
    } else if is_iso_timestamp(s) {
        Class::Timestamp
    } else {
        Class::Text
    }
}

/// A plain integer that fits i64, without a leading zero or `+`.
pub fn is_int(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s.parse::<i64>().is_ok()
}

/// `-?D+.D+` where the integer part has no leading zero (except `0.x`).
pub fn is_decimal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let Some((int, frac)) = body.split_once('.') else {
        return false;
    };
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

fn valid_ymd(y: i64, m: u32, d: u32) -> bool {
    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None }
}

/// Strict `YYYY-MM-DD` naming a real day.
pub fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    match (num::<i64>(&s[0..4]), num::<u32>(&s[5..7]), num::<u32>(&s[8..10])) {
        (Some(y), Some(m), Some(d)) => valid_ymd(y, m, d),
        _ => false,
    }
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.f+]][Z|±HH:MM]`.
pub fn is_iso_timestamp(s: &str) -> bool {
    if s.len() < 16 || !s.is_char_boundary(10) || !is_iso_date(&s[..10]) {
        return false;
    }
    let rest = &s[10..];
    let Some(rest) = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' ')) else {
        return false;
    };
    let (time, zone) = match rest.find(['Z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let zone_ok = zone.is_empty()
        || zone == "Z"
        || (zone.len() == 6
            && zone.as_bytes()[3] == b':'
            && num::<u32>(&zone[1..3]).is_some()
            && num::<u32>(&zone[4..6]).is_some());
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let hms_ok = (parts.len() == 2 || parts.len() == 3)
        && parts.iter().all(|p| p.len() == 2 && num::<u32>(p).is_some())
        && num::<u32>(parts[0]).is_some_and(|h| h < 24)
        && num::<u32>(parts[1]).is_some_and(|m| m < 60)
        && parts.get(2).is_none_or(|s| num::<u32>(s).is_some_and(|s| s < 61));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) && parts.len() == 3);
    zone_ok && hms_ok && frac_ok
}

/// Per-column inference state: which classes have been seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Infer {
    seen: u8,
}

const fn bit(c: Class) -> u8 {
    match c {
        Class::Int => 1,
        Class::Decimal => 2,
        Class::Date => 4,
        Class::Timestamp => 8,
        Class::Bool => 16,
        Class::Json => 32,
        Class::Text => 64,
    }
}

impl Infer {
    pub fn observe(&mut self, c: Class) {
        self.seen |= bit(c);
    }

    /// The narrowest portable type that holds every value seen.
    pub fn column_type(&self) -> ColumnType {
        let s = self.seen;
        let only = |mask: u8| s != 0 && s & !mask == 0;
        if only(bit(Class::Int)) {
            ColumnType::Int
        } else if only(bit(Class::Int) | bit(Class::Decimal)) {
            ColumnType::Decimal
        } else if only(bit(Class::Date)) {
            ColumnType::Date
        } else if only(bit(Class::Date) | bit(Class::Timestamp)) {
            ColumnType::Timestamp
        } else if only(bit(Class::Bool)) {
            ColumnType::Bool
        } else if s & bit(Class::Json) != 0 {
            // Objects mixed with scalars: json holds every value as it was.
            ColumnType::Json
        } else {
            ColumnType::Text
        }
    }
}

/// `DD/MM/YYYY` (the Vietnamese convention) as `YYYY-MM-DD`, if `s` is one and names a real day.
pub fn vn_date_to_iso(s: &str) -> Option<String> {
    let mut it = s.split('/');
    let (d, m, y) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || d.is_empty() || d.len() > 2 || m.is_empty() || m.len() > 2 || y.len() != 4 {
        return None;
    }
    let (d, m, y) = (num::<u32>(d)?, num::<u32>(m)?, num::<i64>(y)?);
    valid_ymd(y, m, d).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// Parses a boolean spelling (`true/false`, `1/0`, `yes/no`, `có/không`), case-insensitively.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "có" | "x" => Some(true),
        "false" | "0" | "no" | "n" | "không" => Some(false),
        _ => None,
    }
}

/// Appends the non-empty text value `s` to `out` as a value of `ty`, or says why it does not fit.
pub fn push_typed(out: &mut RowBuf, ty: ColumnType, s: &str) -> Result<(), String> {
    match ty {
        ColumnType::Int => match s.trim().parse::<i64>() {
            Ok(i) => out.push_int(i),
            Err(_) => return Err(format!("{s:?} is not an integer")),
        },
        ColumnType::Decimal => {
            let t = s.trim();
            let t = t.strip_prefix('+').unwrap_or(t);
            let body = t.strip_prefix('-').unwrap_or(t);
            let ok = !body.is_empty()
                && body.bytes().filter(|b| *b == b'.').count() <= 1
                && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && body.bytes().any(|b| b.is_ascii_digit());
            if !ok {
                return Err(format!("{s:?} is not a decimal number"));
            }
            out.push_text(t.as_bytes());
        }
        ColumnType::Float => match s.trim().parse::<f64>() {
            Ok(f) => out.push_real(f),
            Err(_) => return Err(format!("{s:?} is not a number")),
        },
        ColumnType::Bool => match parse_bool(s) {
            Some(b) => out.push_int(i64::from(b)),
            None => return Err(format!("{s:?} is not a boolean (true/false, 1/0, yes/no)")),
        },
        ColumnType::Date => {
            let t = s.trim();
            if is_iso_date(t) {
                out.push_text(t.as_bytes());
            } else if let Some(iso) = vn_date_to_iso(t) {
                out.push_text(iso.as_bytes());
            } else {
                return Err(format!("{s:?} is not a date (YYYY-MM-DD or DD/MM/YYYY)"));
            }
        }
        ColumnType::Timestamp => {
            let t = s.trim();
            if is_iso_date(t) || is_iso_timestamp(t) {
                out.push_text(t.as_bytes());
            } else {
                return Err(format!("{s:?} is not an ISO 8601 date-time"));
            }
        }
        ColumnType::Json | ColumnType::Text => out.push_text(s.as_bytes()),
        ColumnType::Bytes => out.push_text(s.as_bytes()),
    }
    Ok(())
}

/// An Excel serial date-time (days since 1899-12-30, fraction = time of day) as ISO 8601: a date
/// when the fraction is zero, else a timestamp without zone rounded to the millisecond.
pub fn excel_serial_to_iso(serial: f64) -> Option<String> {
    if !serial.is_finite() || !(-693_594.0..=2_958_466.0).contains(&serial) {
        return None;
    }
    let ms_total = (serial * 86_400_000.0).round() as i64;
    let days = ms_total.div_euclid(86_400_000);
    let ms = ms_total.rem_euclid(86_400_000);
    // 1899-12-30 is 25,569 days before 1970-01-01.
    let (y, m, d) = super::row::civil_from_days(days - 25_569);
    let mut out = Vec::with_capacity(24);
    super::row::write_date(&mut out, y, m, d);
    if ms != 0 {
        let secs = (ms / 1000) as u32;
        super::row::write_time(&mut out, secs / 3600, secs / 60 % 60, secs % 60, 0);
        let frac = ms % 1000;
        if frac != 0 {
            out.extend_from_slice(format!(".{frac:03}").as_bytes());
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::{Cell, RowView};

    fn infer(values: &[&str]) -> ColumnType {
        let mut i = Infer::default();
        for v in values {
            i.observe(classify_text(v));
        }
        i.column_type()
    }

    #[test]
    fn inference_is_conservative() {
        assert_eq!(infer(&["1", "-20", "300"]), ColumnType::Int);
        assert_eq!(infer(&["1", "007"]), ColumnType::Text, "leading zeros are identifiers");
        assert_eq!(infer(&["1", "2.50"]), ColumnType::Decimal);
        assert_eq!(infer(&["99999999999999999999"]), ColumnType::Text, "does not fit i64 and is not a decimal");
        assert_eq!(infer(&["2026-02-28", "2024-02-29"]), ColumnType::Date);
        assert_eq!(infer(&["2026-02-30"]), ColumnType::Text);
        assert_eq!(infer(&["2026-01-01", "2026-01-01T08:30:00+07:00"]), ColumnType::Timestamp);
        assert_eq!(infer(&["2026-01-01 08:30:00.123"]), ColumnType::Timestamp);
        assert_eq!(infer(&["1.5e3"]), ColumnType::Text);
        assert_eq!(infer(&["Sơn La"]), ColumnType::Text);
        assert_eq!(infer(&[]), ColumnType::Text);
        assert_eq!(infer(&["12/01/2026"]), ColumnType::Text, "DD/MM/YYYY is ambiguous unless declared");
    }

    #[test]
    fn declared_types_convert_or_name_the_bad_value() {
        let mut r = RowBuf::default();
        push_typed(&mut r, ColumnType::Decimal, "123456789012345678901234.000001").unwrap();
        push_typed(&mut r, ColumnType::Date, "05/01/2026").unwrap();
        push_typed(&mut r, ColumnType::Bool, "Có").unwrap();
        push_typed(&mut r, ColumnType::Int, "007").unwrap();
        assert_eq!(r.cell(0).unwrap(), Cell::Text(b"123456789012345678901234.000001"));
        assert_eq!(r.cell(1).unwrap(), Cell::Text(b"2026-01-05"));
        assert_eq!(r.cell(2).unwrap(), Cell::Int(1));
        assert_eq!(r.cell(3).unwrap(), Cell::Int(7));
        assert!(push_typed(&mut r, ColumnType::Int, "12a").unwrap_err().contains("\"12a\""));
        assert!(push_typed(&mut r, ColumnType::Date, "31/02/2026").is_err());
        assert!(push_typed(&mut r, ColumnType::Decimal, "1.2.3").is_err());
    }

    #[test]
    fn excel_serials_become_iso_dates() {
        assert_eq!(excel_serial_to_iso(46_023.0).unwrap(), "2026-01-01");
        assert_eq!(excel_serial_to_iso(46_023.5).unwrap(), "2026-01-01T12:00:00");
        assert_eq!(excel_serial_to_iso(25_569.0).unwrap(), "1970-01-01");
        assert!(excel_serial_to_iso(f64::NAN).is_none());
    }
}
