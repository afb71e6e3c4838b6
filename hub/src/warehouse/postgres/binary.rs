//! PostgreSQL's binary `COPY` format (`COPY … FROM STDIN WITH (FORMAT binary)`). Pure.
//!
//! The rows of a batch reach their table in this form rather than as text: the server then reads
//! each field as the bytes of its type (`int8recv`, `date_recv`, …) instead of parsing dates,
//! timestamps and numerics from text. On the 1M-row bench table that took the server's `COPY` from
//! 5.0–5.4 s to 3.0–3.1 s (docs/PERFORMANCE.md). Every cell has been checked first
//! ([`values::check`]), so a field is always one the server accepts.
//!
//! Layout: a header, then per row a 16-bit field count and per field a 32-bit length (-1 for
//! NULL) and that many bytes, then a trailer of -1. All integers are big-endian.

use super::values::{self, Cell};

/// Signature, flags (no OIDs), header extension length (none).
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of the data: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Starts a row of `fields` fields.
pub fn row(out: &mut Vec<u8>, fields: usize) {
    // A table has at most 1,600 columns.
    out.extend_from_slice(&i16::try_from(fields).unwrap_or(i16::MAX).to_be_bytes());
}

/// A NULL field.
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

/// A field whose bytes `write` appends; its length is filled in after.
pub fn field(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    // A field is far below 2 GiB: a batch's decoded size is bounded by the hub's limits.
    let len = i32::try_from(out.len() - at - 4).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A `bigint` field.
pub fn int8(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
}

/// A `boolean` field.
pub fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(&1i32.to_be_bytes());
    out.push(u8::from(b));
}

/// A `timestamptz` field of `micros` since 2000-01-01T00:00:00Z ([`values::pg_micros`]).
pub fn timestamp(out: &mut Vec<u8>, micros: i64) {
    int8(out, micros);
}

/// A `text` field (NUL, which PostgreSQL text cannot hold, becomes U+FFFD).
pub fn text(out: &mut Vec<u8>, s: &str) {
    field(out, |out| text_bytes(out, s));
}

/// A `jsonb` field: version 1, then the JSON text (NUL-free, [`values::json_text`]).
pub fn jsonb(out: &mut Vec<u8>, json: &str) {
    field(out, |out| {
        out.push(1);
        out.extend_from_slice(json.as_bytes());
    });
}

fn text_bytes(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes.contains(&0) {
        out.extend_from_slice(bytes);
        return;
    }
    for part in bytes.split(|&b| b == 0).enumerate() {
        if part.0 > 0 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
        out.extend_from_slice(part.1);
    }
}

/// A checked cell as a field of its column's type ([`values::pg_type`]).
pub fn cell(out: &mut Vec<u8>, cell: &Cell) {
    match cell {
        Cell::Bool(b) => boolean(out, *b),
        Cell::Int(n) => int8(out, *n),
        Cell::Float(f) => {
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Cell::Decimal(_, num) => field(out, |out| num.write_binary(out)),
        Cell::Text(s) => text(out, s),
        Cell::Json(s) => jsonb(out, s),
        Cell::Bytes(b) => field(out, |out| out.extend_from_slice(b)),
        Cell::Date(d) => {
            // Checked against PostgreSQL's range, which is well inside i32.
            let days = i32::try_from(values::pg_days(*d)).unwrap_or(i32::MIN);
            out.extend_from_slice(&4i32.to_be_bytes());
            out.extend_from_slice(&days.to_be_bytes());
        }
        Cell::Timestamp(ts) => timestamp(out, values::pg_micros(*ts)),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn one(c: Cell) -> Vec<u8> {
        let mut out = Vec::new();
        cell(&mut out, &c);
        out
    }

    #[test]
    fn fields_are_length_then_big_endian_bytes() {
        assert_eq!(one(Cell::Int(-2)), [0, 0, 0, 8, 255, 255, 255, 255, 255, 255, 255, 254]);
        assert_eq!(one(Cell::Bool(true)), [0, 0, 0, 1, 1]);
        assert_eq!(one(Cell::Float(1.0)), [0, 0, 0, 8, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(one(Cell::Text(Cow::Borrowed("Sở"))), [0, 0, 0, 4, b'S', 0xe1, 0xbb, 0x9f]);
        assert_eq!(one(Cell::Text(Cow::Borrowed("a\0b\0"))), b"\0\0\0\x08a\xef\xbf\xbdb\xef\xbf\xbd");
        assert_eq!(one(Cell::Json("{}".into())), [0, 0, 0, 3, 1, b'{', b'}']);
        assert_eq!(one(Cell::Bytes(vec![1, 2])), [0, 0, 0, 2, 1, 2]);
        let date = |s: &str| one(Cell::Date(s.parse().expect("date")));
        assert_eq!(date("2000-01-01"), [0, 0, 0, 4, 0, 0, 0, 0]);
        assert_eq!(date("2000-01-02"), [0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(date("1999-12-31"), [0, 0, 0, 4, 255, 255, 255, 255]);
        let ts = one(Cell::Timestamp("2000-01-01T00:00:01Z".parse().expect("ts")));
        assert_eq!(ts, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        let mut out = Vec::new();
        null(&mut out);
        row(&mut out, 3);
        assert_eq!(out, [255, 255, 255, 255, 0, 3]);
    }

    #[test]
    fn days_match_the_calendar() {
        let days = |s: &str| values::pg_days(s.parse().expect("date"));
        assert_eq!(days("2026-02-01"), 9528);
        assert_eq!(days("2000-03-01"), 60, "2000 is a leap year");
        assert_eq!(days("1970-01-01"), -10_957);
        assert_eq!(days("1900-03-01"), -36_465, "1900 is not");
        assert_eq!(days("-004713-11-24"), -2_451_545, "PostgreSQL's first date (4714 BC)");
    }
}
