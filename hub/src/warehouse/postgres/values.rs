//! JSON row values → checked [`Cell`]s of the column's stored type, and their `COPY` text form
//! (the binary form is [`super::binary`]).
//!
//! Pure. Every cell is checked here, in Rust, against the type of the warehouse column, so a
//! `COPY` never fails on a value: one bad cell would otherwise fail the whole transaction, the
//! agent would retry forever, and a department's outbox would stall over one odd cell. A value
//! that does not fit (a string in an `int` column, bad base64 in a `bytes` column) becomes NULL in
//! its column and is kept, exactly as sent, in the row's `_kho_invalid` jsonb (`{"column": value}`),
//! so nothing is lost and analysts can see what the source sent.
//!
//! Interpretation rules:
//! - `timestamp` with an offset (`…Z`, `…+07:00`) is that instant; without one (`2026-02-01
//!   08:00:00`, as most department databases write local time) it is taken at
//!   [`NAIVE_TIMESTAMP_OFFSET`] (Vietnam, no daylight saving); a bare date is midnight there.
//! - `decimal` keeps the source's digits (never an f64 round trip, [`Numeric`]); `float` accepts
//!   `NaN`, `Infinity`, `-Infinity`.
//! - what PostgreSQL cannot store is refused like any misfit: a numeric beyond its scale or weight
//!   limits, a date or timestamp before 4714 BC.
//! - text cannot hold NUL in PostgreSQL: a NUL character becomes U+FFFD (text, json columns and the
//!   change log alike).

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use kho_shared::types::ColumnType;
use serde_json::Value;

pub use super::numeric::Numeric;

/// The offset of timestamps written without one: Asia/Ho_Chi_Minh, which has no daylight saving.
pub const NAIVE_TIMESTAMP_OFFSET: jiff::tz::Offset = jiff::tz::Offset::constant(7);

/// PostgreSQL type of a warehouse column.
pub fn pg_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "boolean",
        ColumnType::Int => "bigint",
        ColumnType::Float => "double precision",
        ColumnType::Decimal => "numeric",
        ColumnType::Text => "text",
        ColumnType::Bytes => "bytea",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::Json => "jsonb",
    }
}

/// A value checked against its column's type: what the cell will hold. Both the binary `COPY`
/// ([`super::binary`]) and the text form ([`write_cell`], for keys) are written from it, so they
/// accept and refuse exactly the same values.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Bool(bool),
    Int(i64),
    /// Including NaN and ±infinity.
    Float(f64),
    /// The source's digits, and the same number in PostgreSQL's binary form.
    Decimal(Cow<'a, str>, Numeric),
    /// May hold NUL, which every writer turns into U+FFFD.
    Text(Cow<'a, str>),
    Bytes(Vec<u8>),
    Date(jiff::civil::Date),
    Timestamp(jiff::Timestamp),
    /// JSON text without NUL ([`json_text`]).
    Json(String),
}

/// `value` as a cell of a column of type `ty`; `None` when it does not fit (or PostgreSQL could
/// not store it: a date before 4714 BC, a numeric beyond its limits).
pub fn check(ty: ColumnType, value: &Value) -> Option<Cell<'_>> {
    Some(match (ty, value) {
        (ColumnType::Int, Value::Number(n)) => Cell::Int(n.as_i64()?),
        (ColumnType::Int, Value::String(s)) => Cell::Int(s.trim().parse::<i64>().ok()?),
        (ColumnType::Float, Value::Number(n)) => Cell::Float(n.as_f64()?),
        (ColumnType::Float, Value::String(s)) => Cell::Float(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => s.trim().parse::<f64>().ok()?,
        }),
        (ColumnType::Decimal, Value::Number(n)) => {
            let text = n.to_string();
            let num = Numeric::parse(&text)?;
            Cell::Decimal(Cow::Owned(text), num)
        }
        (ColumnType::Decimal, Value::String(s)) => {
            let s = s.trim();
            Cell::Decimal(Cow::Borrowed(s), Numeric::parse(s)?)
        }
        (ColumnType::Bool, Value::Bool(b)) => Cell::Bool(*b),
        (ColumnType::Bool, Value::Number(n)) => match n.as_i64()? {
            0 => Cell::Bool(false),
            1 => Cell::Bool(true),
            _ => return None,
        },
        (ColumnType::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "y" | "yes" => Cell::Bool(true),
            "f" | "false" | "0" | "n" | "no" => Cell::Bool(false),
            _ => return None,
        },
        (ColumnType::Text, Value::String(s)) => Cell::Text(Cow::Borrowed(s)),
        (ColumnType::Text, v) => Cell::Text(Cow::Owned(json_text(v))),
        (ColumnType::Json, v) => Cell::Json(json_text(v)),
        (ColumnType::Bytes, Value::String(s)) => Cell::Bytes(base64::engine::general_purpose::STANDARD.decode(s).ok()?),
        (ColumnType::Date, Value::String(s)) => {
            let date = s.trim().parse::<jiff::civil::Date>().ok()?;
            (pg_days(date) >= PG_MIN_DAYS).then_some(Cell::Date(date))?
        }
        (ColumnType::Timestamp, Value::String(s)) => {
            let ts = parse_timestamp(s.trim())?;
            (pg_micros(ts) >= PG_MIN_MICROS).then_some(Cell::Timestamp(ts))?
        }
        _ => return None,
    })
}

/// Appends the COPY text form of `value` for a column of type `ty` (`\N` for NULL or absent).
/// Returns `false`, having appended `\N`, when the value does not fit the type ([`check`]).
pub fn write_cell(out: &mut String, ty: ColumnType, value: Option<&Value>) -> bool {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        out.push_str("\\N");
        return true;
    };
    match check(ty, value) {
        Some(cell) => {
            write_text(out, &cell);
            true
        }
        None => {
            out.push_str("\\N");
            false
        }
    }
}

/// The COPY text form of a checked cell.
pub fn write_text(out: &mut String, cell: &Cell) {
    match cell {
        Cell::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Cell::Int(n) => {
            write!(out, "{n}").ok();
        }
        Cell::Float(f) => write_float(out, *f),
        Cell::Decimal(text, _) => out.push_str(text),
        Cell::Text(s) => escape_into(out, s),
        Cell::Json(s) => escape_into(out, s),
        // `\\x…`: the COPY escape for one backslash, then bytea's hex form.
        Cell::Bytes(b) => {
            out.push_str("\\\\x");
            out.push_str(&hex::encode(b));
        }
        Cell::Date(d) => {
            write!(out, "{d}").ok();
        }
        Cell::Timestamp(ts) => {
            write!(out, "{ts}").ok();
        }
    }
}

/// PostgreSQL's epoch, 2000-01-01, in days since the Unix epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
/// The first date PostgreSQL stores (4714-11-24 BC), in days since its epoch.
const PG_MIN_DAYS: i64 = -2_451_545;
/// The first instant PostgreSQL stores, in microseconds since its epoch.
const PG_MIN_MICROS: i64 = PG_MIN_DAYS * 86_400_000_000;

/// Days from 2000-01-01 to `date` (proleptic Gregorian; `days_from_civil` of H. Hinnant).
pub fn pg_days(date: jiff::civil::Date) -> i64 {
    let (y, m, d) = (i64::from(date.year()), i64::from(date.month()), i64::from(date.day()));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - PG_EPOCH_DAYS
}

/// Microseconds from 2000-01-01T00:00:00Z to `ts`.
pub fn pg_micros(ts: jiff::Timestamp) -> i64 {
    ts.as_microsecond() - PG_EPOCH_DAYS * 86_400_000_000
}

fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // Debug is the shortest text that reads back as the same f64, with an exponent when long.
        write!(out, "{f:?}").ok();
    }
}

/// An instant from RFC 3339 / ISO 8601 text; without an offset, at [`NAIVE_TIMESTAMP_OFFSET`].
pub fn parse_timestamp(s: &str) -> Option<jiff::Timestamp> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let civil = s
        .parse::<jiff::civil::DateTime>()
        .ok()
        .or_else(|| s.parse::<jiff::civil::Date>().ok().map(|d| d.to_datetime(jiff::civil::Time::midnight())))?;
    NAIVE_TIMESTAMP_OFFSET.to_timestamp(civil).ok()
}

/// JSON text of a value with NUL characters replaced (jsonb refuses `\u0000`).
pub fn json_text(value: &Value) -> String {
    let text = value.to_string();
    if text.contains("\\u0000") { strip_nul(value).to_string() } else { text }
}

fn strip_nul(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.iter().map(strip_nul).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.replace('\0', "\u{FFFD}"), strip_nul(v))).collect())
        }
        other => other.clone(),
    }
}

/// Appends `s` escaped for COPY text format (backslash, newline, carriage return, tab), NUL → U+FFFD.
///
/// One pass over the bytes, copying the runs between special characters whole: every character
/// escaped is ASCII, so a byte equal to one is never inside a multi-byte character and the slices
/// fall on character boundaries. (Scanning `s.contains([…])` by `char` first, then again to
/// escape, was ~12 % of the PostgreSQL applier's CPU on a large load.)
pub fn escape_into(out: &mut String, s: &str) {
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0 => "\u{FFFD}",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;
    use serde_json::json;

    #[test]
    fn escape_into_escapes_only_the_copy_specials() {
        let esc = |s: &str| {
            let mut out = String::from("x");
            escape_into(&mut out, s);
            out
        };
        assert_eq!(esc(""), "x");
        assert_eq!(esc("Nguyễn Văn Ánh"), "xNguyễn Văn Ánh");
        assert_eq!(esc("a\\b\nc\rd\te"), "xa\\\\b\\nc\\rd\\te");
        assert_eq!(esc("\\ễ\tữ\n"), "x\\\\ễ\\tữ\\n", "specials next to multi-byte letters");
        assert_eq!(esc("\0đ\0"), "x\u{FFFD}đ\u{FFFD}");
        assert_eq!(esc("\n\n"), "x\\n\\n");
    }

    fn cell(ty: ColumnType, v: Value) -> Option<String> {
        let mut out = String::new();
        write_cell(&mut out, ty, Some(&v)).then_some(out)
    }

    #[test]
    fn values_follow_their_column_type() {
        let ok = [
            (Int, json!(42), "42"),
            (Int, json!(" 7 "), "7"),
            (Float, json!(1.5), "1.5"),
            (Float, json!("Infinity"), "Infinity"),
            (Float, json!(1e300), "1e300"),
            (Decimal, json!("12345678901234567890.123456789"), "12345678901234567890.123456789"),
            (Decimal, json!(12.5), "12.5"),
            (Decimal, json!("-1.5E+3"), "-1.5E+3"),
            (Bool, json!(true), "t"),
            (Bool, json!(0), "f"),
            (Bool, json!("yes"), "t"),
            (Text, json!("Sở Y tế\tSơn La\\n"), "Sở Y tế\\tSơn La\\\\n"),
            (Text, json!(12), "12"),
            (Text, json!("a\0b"), "a\u{FFFD}b"),
            (Bytes, json!("AQID"), "\\\\x010203"),
            (Date, json!("2026-02-01"), "2026-02-01"),
            (Timestamp, json!("2026-02-01T08:00:00Z"), "2026-02-01T08:00:00Z"),
            (Timestamp, json!("2026-02-01 08:00:00"), "2026-02-01T01:00:00Z"),
            (Timestamp, json!("2026-02-01"), "2026-01-31T17:00:00Z"),
            (Json, json!({"a": [1, "x\ny"]}), "{\"a\":[1,\"x\\\\ny\"]}"),
        ];
        for (ty, v, want) in ok {
            assert_eq!(cell(ty, v.clone()).as_deref(), Some(want), "{ty:?} {v}");
        }
        let bad = [
            (Int, json!("not a number")),
            (Int, json!(1.5)),
            (Int, json!(u64::MAX)),
            (Int, json!(true)),
            (Float, json!("abc")),
            (Decimal, json!("1.2.3")),
            (Decimal, json!("12abc")),
            (Decimal, json!("")),
            (Bool, json!(2)),
            (Bytes, json!("%%%")),
            (Date, json!("tháng 2")),
            (Date, json!("2026-02-30")),
            (Timestamp, json!("yesterday")),
            (Timestamp, json!(1700000000)),
        ];
        for (ty, v) in bad {
            assert_eq!(cell(ty, v.clone()), None, "{ty:?} {v} accepted");
            let mut out = String::from("x\t");
            assert!(!write_cell(&mut out, ty, Some(&v)));
            assert_eq!(out, "x\t\\N", "a refused value leaves exactly a NULL");
        }
        let mut out = String::new();
        assert!(write_cell(&mut out, Text, None) && write_cell(&mut out, Int, Some(&Value::Null)));
        assert_eq!(out, "\\N\\N");
    }

    #[test]
    fn nul_never_reaches_jsonb() {
        assert_eq!(json_text(&json!({"k\u{0}": ["a\u{0}"]})), "{\"k\u{FFFD}\":[\"a\u{FFFD}\"]}");
        assert_eq!(json_text(&json!({"k": 1})), "{\"k\":1}");
    }
}
