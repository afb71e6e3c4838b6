//! A decoded row owned by a network source, and the pure text forms of dates and timestamps.
//!
//! Network drivers hand out values in their own representations (PostgreSQL's binary format,
//! MySQL's typed values). A source decodes each row into one [`RowBuf`] — a reused byte arena plus
//! one [`Slot`] per column — so a table of any size streams through the same few buffers, and
//! [`RowView::cell`] can lend `Cell`s that borrow from it.
//!
//! Dates and timestamps are written in ISO 8601 (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.ffffff][Z]`):
//! the fraction is printed with all six digits whenever it is not zero, so microseconds survive
//! and a cursor value written here binds back to exactly the same instant.

use std::io::Write;

use super::{Cell, RowView, SourceError};

/// One decoded value; text and bytes live in the row's arena.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Null,
    Int(i64),
    Real(f64),
    Text(usize, usize),
    Blob(usize, usize),
}

/// A reusable decoded row.
#[derive(Debug, Default)]
pub struct RowBuf {
    arena: Vec<u8>,
    slots: Vec<Slot>,
}

impl RowBuf {
    /// Forgets the previous row, keeping the allocations.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.slots.clear();
    }

    pub fn push_null(&mut self) {
        self.slots.push(Slot::Null);
    }

    pub fn push_int(&mut self, v: i64) {
        self.slots.push(Slot::Int(v));
    }

    pub fn push_real(&mut self, v: f64) {
        self.slots.push(Slot::Real(v));
    }

    pub fn push_text(&mut self, bytes: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.slots.push(Slot::Text(start, self.arena.len()));
    }

    pub fn push_blob(&mut self, bytes: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.slots.push(Slot::Blob(start, self.arena.len()));
    }

    /// Pushes a text value written by `write` straight into the arena (no temporary string).
    pub fn push_text_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.arena.len();
        write(&mut self.arena);
        self.slots.push(Slot::Text(start, self.arena.len()));
    }
}

impl RowView for RowBuf {
    fn cell(&self, idx: usize) -> Result<Cell<'_>, SourceError> {
        Ok(match self.slots.get(idx).copied().unwrap_or(Slot::Null) {
            Slot::Null => Cell::Null,
            Slot::Int(i) => Cell::Int(i),
            Slot::Real(f) => Cell::Real(f),
            Slot::Text(s, e) => Cell::Text(&self.arena[s..e]),
            Slot::Blob(s, e) => Cell::Blob(&self.arena[s..e]),
        })
    }
}

/// Civil date (year, month, day) of `days` since 1970-01-01 (proleptic Gregorian; any i64 range
/// a database can hold). Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes `YYYY-MM-DD` (years outside 0..=9999 get a sign, as ISO 8601's expanded form).
pub fn write_date(out: &mut Vec<u8>, y: i64, m: u32, d: u32) {
    if (0..=9999).contains(&y) {
        write!(out, "{y:04}-{m:02}-{d:02}").ok();
    } else {
        write!(out, "{y:+05}-{m:02}-{d:02}").ok();
    }
}

/// Writes `THH:MM:SS`, then `.ffffff` when `micros` is not zero.
pub fn write_time(out: &mut Vec<u8>, h: u32, mi: u32, s: u32, micros: u32) {
    write!(out, "T{h:02}:{mi:02}:{s:02}").ok();
    if micros != 0 {
        write!(out, ".{micros:06}").ok();
    }
}

/// Writes the timestamp `micros` microseconds after 1970-01-01T00:00:00, with `Z` when `utc`.
pub fn write_unix_micros(out: &mut Vec<u8>, micros: i64, utc: bool) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (y, m, d) = civil_from_days(days);
    write_date(out, y, m, d);
    write_time(out, sod / 3600, sod / 60 % 60, sod % 60, frac);
    if utc {
        out.push(b'Z');
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ts(micros: i64, utc: bool) -> String {
        let mut v = Vec::new();
        write_unix_micros(&mut v, micros, utc);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn civil_dates_and_timestamps() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(ts(0, true), "1970-01-01T00:00:00Z");
        assert_eq!(ts(1_767_225_600_123_456, false), "2026-01-01T00:00:00.123456");
        assert_eq!(ts(1_767_225_600_000_001, true), "2026-01-01T00:00:00.000001Z");
        assert_eq!(ts(-1, false), "1969-12-31T23:59:59.999999");
        let mut v = Vec::new();
        write_date(&mut v, -44, 3, 15);
        assert_eq!(v, b"-0044-03-15");
    }

    #[test]
    fn rows_lend_cells_from_their_arena() {
        let mut r = RowBuf::default();
        r.push_int(7);
        r.push_text("Hồ sơ".as_bytes());
        r.push_null();
        r.push_blob(&[0, 255]);
        r.push_text_with(|o| o.extend_from_slice(b"2026-01-01"));
        r.push_real(1.5);
        assert_eq!(r.cell(0).unwrap(), Cell::Int(7));
        assert_eq!(r.cell(1).unwrap(), Cell::Text("Hồ sơ".as_bytes()));
        assert_eq!(r.cell(2).unwrap(), Cell::Null);
        assert_eq!(r.cell(3).unwrap(), Cell::Blob(&[0, 255]));
        assert_eq!(r.cell(4).unwrap(), Cell::Text(b"2026-01-01"));
        assert_eq!(r.cell(5).unwrap(), Cell::Real(1.5));
        r.clear();
        assert_eq!(r.cell(0).unwrap(), Cell::Null);
    }
}
