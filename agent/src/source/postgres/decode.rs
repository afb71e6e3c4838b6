//! PostgreSQL binary-format values → portable cells (pure).
//!
//! Columns are fetched in PostgreSQL's binary format and decoded here by hand, so nothing passes
//! through a lossy intermediate: `numeric` is rebuilt digit by digit into exact text (never an
//! f64), timestamps keep their microseconds, `timestamptz` is written in UTC with `Z`. Types
//! without a decoder here are selected as `::text` by the source and arrive as text.

use ::postgres::types::{FromSql, Type};
use kho_shared::types::ColumnType;

use crate::source::row::{RowBuf, civil_from_days, write_date, write_unix_micros};

/// How one column is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Bytea,
    Date,
    Timestamp,
    Timestamptz,
    Json,
    Jsonb,
    Uuid,
    /// Any other type: selected as `col::text`, read as text.
    AsText,
}

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400 * 1_000_000;

impl PgKind {
    pub fn of(t: &Type) -> PgKind {
        match *t {
            Type::BOOL => PgKind::Bool,
            Type::INT2 => PgKind::Int2,
            Type::INT4 => PgKind::Int4,
            Type::INT8 => PgKind::Int8,
            Type::FLOAT4 => PgKind::Float4,
            Type::FLOAT8 => PgKind::Float8,
            Type::NUMERIC => PgKind::Numeric,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => PgKind::Text,
            Type::BYTEA => PgKind::Bytea,
            Type::DATE => PgKind::Date,
            Type::TIMESTAMP => PgKind::Timestamp,
            Type::TIMESTAMPTZ => PgKind::Timestamptz,
            Type::JSON => PgKind::Json,
            Type::JSONB => PgKind::Jsonb,
            Type::UUID => PgKind::Uuid,
            _ => PgKind::AsText,
        }
    }

    pub fn portable(self) -> ColumnType {
        match self {
            PgKind::Bool => ColumnType::Bool,
            PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => ColumnType::Int,
            PgKind::Float4 | PgKind::Float8 => ColumnType::Float,
            PgKind::Numeric => ColumnType::Decimal,
            PgKind::Bytea => ColumnType::Bytes,
            PgKind::Date => ColumnType::Date,
            PgKind::Timestamp | PgKind::Timestamptz => ColumnType::Timestamp,
            PgKind::Json | PgKind::Jsonb => ColumnType::Json,
            PgKind::Text | PgKind::Uuid | PgKind::AsText => ColumnType::Text,
        }
    }
}

/// A column's raw bytes in whatever format the server sent (binary here), or `None` for NULL.
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into().map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

/// Decodes one binary value of `kind` into `out`.
pub fn decode(kind: PgKind, raw: Option<&[u8]>, out: &mut RowBuf) -> Result<(), String> {
    let Some(raw) = raw else {
        out.push_null();
        return Ok(());
    };
    match kind {
        PgKind::Bool => out.push_int(i64::from(fixed::<1>(raw)?[0] != 0)),
        PgKind::Int2 => out.push_int(i64::from(i16::from_be_bytes(fixed(raw)?))),
        PgKind::Int4 => out.push_int(i64::from(i32::from_be_bytes(fixed(raw)?))),
        PgKind::Int8 => out.push_int(i64::from_be_bytes(fixed(raw)?)),
        PgKind::Float4 => out.push_real(f32_as_shown(f32::from_be_bytes(fixed(raw)?))),
        PgKind::Float8 => out.push_real(f64::from_be_bytes(fixed(raw)?)),
        PgKind::Numeric => {
            let mut err = None;
            out.push_text_with(|o| err = write_numeric(o, raw).err());
            if let Some(e) = err {
                return Err(e);
            }
        }
        PgKind::Text | PgKind::Json | PgKind::AsText => out.push_text(raw),
        PgKind::Jsonb => match raw.split_first() {
            Some((1, json)) => out.push_text(json),
            _ => return Err("unknown jsonb format version".into()),
        },
        PgKind::Bytea => out.push_blob(raw),
        PgKind::Date => {
            let days = i32::from_be_bytes(fixed(raw)?);
            match days {
                i32::MAX => out.push_text(b"infinity"),
                i32::MIN => out.push_text(b"-infinity"),
                _ => {
                    let (y, m, d) = civil_from_days(i64::from(days) + PG_EPOCH_DAYS);
                    out.push_text_with(|o| write_date(o, y, m, d));
                }
            }
        }
        PgKind::Timestamp | PgKind::Timestamptz => {
            let micros = i64::from_be_bytes(fixed(raw)?);
            match micros {
                i64::MAX => out.push_text(b"infinity"),
                i64::MIN => out.push_text(b"-infinity"),
                _ => {
                    let utc = kind == PgKind::Timestamptz;
                    out.push_text_with(|o| write_unix_micros(o, micros.saturating_add(PG_EPOCH_MICROS), utc));
                }
            }
        }
        PgKind::Uuid => {
            let b: [u8; 16] = fixed(raw)?;
            out.push_text_with(|o| {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        o.push(b'-');
                    }
                    o.extend_from_slice(hex::encode([*byte]).as_bytes());
                }
            });
        }
    }
    Ok(())
}

/// A float4 as the f64 with the same shortest decimal form (0.1f32 → 0.1, not 0.10000000149…), so
/// JSON shows what the database shows and the value binds back to the same float4.
pub fn f32_as_shown(f: f32) -> f64 {
    if f.is_finite() { f.to_string().parse().unwrap_or(f64::from(f)) } else { f64::from(f) }
}

/// Writes a binary `numeric` as exact decimal text (as PostgreSQL's own output function does).
pub fn write_numeric(out: &mut Vec<u8>, raw: &[u8]) -> Result<(), String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value is truncated".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = i64::from(word(3)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => {
            out.extend_from_slice(b"NaN");
            return Ok(());
        }
        0xD000 => {
            out.extend_from_slice(b"Infinity");
            return Ok(());
        }
        0xF000 => {
            out.extend_from_slice(b"-Infinity");
            return Ok(());
        }
        other => return Err(format!("unknown numeric sign {other:#x}")),
    }
    let digits = (0..ndigits).map(|i| word(4 + i)).collect::<Result<Vec<u16>, String>>()?;
    let digit = |i: i64| -> u16 { if i >= 0 { digits.get(i as usize).copied().unwrap_or(0) } else { 0 } };
    if sign == 0x4000 {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            let s = if i == 0 { d.to_string() } else { format!("{d:04}") };
            out.extend_from_slice(s.as_bytes());
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let start = out.len();
        let mut i = weight + 1;
        while ((out.len() - start) as i64) < dscale {
            out.extend_from_slice(format!("{:04}", digit(i)).as_bytes());
            i += 1;
        }
        out.truncate(start + dscale as usize);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::{Cell, RowView};

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> String {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        let mut out = Vec::new();
        write_numeric(&mut out, &raw).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numerics_are_exact_text() {
        assert_eq!(numeric(0, 0, 0, 0, &[]), "0");
        assert_eq!(numeric(0, 0, 0, 2, &[]), "0.00");
        assert_eq!(numeric(2, 0, 0, 2, &[12, 3400]), "12.34");
        assert_eq!(numeric(2, 0, 0x4000, 2, &[12, 3400]), "-12.34");
        // 12345678901234567890.123456789
        assert_eq!(
            numeric(8, 4, 0, 9, &[1234, 5678, 9012, 3456, 7890, 1234, 5678, 9000]),
            "12345678901234567890.123456789"
        );
        // 0.00001234
        assert_eq!(numeric(1, -2, 0, 8, &[1234]), "0.00001234");
        // 10000 (weight 1, one digit group, trailing zero groups omitted)
        assert_eq!(numeric(1, 1, 0, 0, &[1]), "10000");
        assert_eq!(numeric(0, 0, 0xC000, 0, &[]), "NaN");
        assert_eq!(numeric(0, 0, 0xF000, 0, &[]), "-Infinity");
    }

    #[test]
    fn binary_values_decode_to_portable_cells() {
        let mut r = RowBuf::default();
        decode(PgKind::Int2, Some(&(-2i16).to_be_bytes()), &mut r).unwrap();
        decode(PgKind::Float4, Some(&0.1f32.to_be_bytes()), &mut r).unwrap();
        decode(PgKind::Date, Some(&0i32.to_be_bytes()), &mut r).unwrap();
        decode(PgKind::Timestamptz, Some(&1i64.to_be_bytes()), &mut r).unwrap();
        decode(PgKind::Timestamp, Some(&i64::MAX.to_be_bytes()), &mut r).unwrap();
        decode(PgKind::Jsonb, Some(b"\x01{\"a\":1}"), &mut r).unwrap();
        decode(PgKind::Uuid, Some(&[0xab; 16]), &mut r).unwrap();
        decode(PgKind::Text, None, &mut r).unwrap();
        assert_eq!(r.cell(0).unwrap(), Cell::Int(-2));
        assert_eq!(r.cell(1).unwrap(), Cell::Real(0.1));
        assert_eq!(r.cell(2).unwrap(), Cell::Text(b"2000-01-01"));
        assert_eq!(r.cell(3).unwrap(), Cell::Text(b"2000-01-01T00:00:00.000001Z"));
        assert_eq!(r.cell(4).unwrap(), Cell::Text(b"infinity"));
        assert_eq!(r.cell(5).unwrap(), Cell::Text(b"{\"a\":1}"));
        assert_eq!(r.cell(6).unwrap(), Cell::Text(b"abababab-abab-abab-abab-abababababab"));
        assert_eq!(r.cell(7).unwrap(), Cell::Null);
        assert!(decode(PgKind::Int4, Some(&[1, 2]), &mut r).is_err());
    }
}
