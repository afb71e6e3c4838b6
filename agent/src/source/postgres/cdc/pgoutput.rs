//! The `pgoutput` logical-decoding protocol, version 1: row messages → typed values (pure).
//!
//! The replication client ([`pgwire_replication`]) frames the stream and already turns the
//! Begin and Commit messages into events; every other message reaches [`parse`] as the raw bytes
//! of one XLogData payload. Messages borrow their column values from that payload, so decoding a
//! row allocates only its value list. Values arrive in text format (the session pins `DateStyle`,
//! `TimeZone`, `bytea_output` and `extra_float_digits`) and [`text_value`] turns each into the same
//! cell the snapshot's binary decoder produces for that type, so a row reads the same whether it
//! came from the initial snapshot or from the stream.

use crate::source::postgres::decode::{PgKind, f32_as_shown};
use crate::source::row::RowBuf;

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the table's replica identity (its primary key unless changed).
    pub is_key: bool,
}

/// A table's current shape, sent before its first change in a session and after every DDL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelColumn>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    /// A TOASTed value the update did not change: its bytes are not in the WAL record.
    Unchanged,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// A decoded message (Begin and Commit are handled by the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Value<'a>>,
    },
    /// `old` is the old key (`K`) or whole old row (`O`, replica identity full) when the update
    /// changed the key or the table logs full rows; `None` otherwise.
    Update {
        relation: u32,
        old: Option<Vec<Value<'a>>>,
        new: Vec<Value<'a>>,
    },
    /// `old` holds the replica-identity columns (others are NULL) or the whole row.
    Delete {
        relation: u32,
        old: Vec<Value<'a>>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Type, Origin, logical messages and anything newer: nothing to capture.
    Other(u8),
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgOutputError {
    #[error("pgoutput message {tag:?} is truncated (wanted {wanted} more bytes at offset {at})")]
    Truncated { tag: char, at: usize, wanted: usize },
    #[error("pgoutput message {tag:?}: {problem}")]
    Bad { tag: char, problem: String },
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    tag: char,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PgOutputError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(PgOutputError::Truncated {
            tag: self.tag,
            at: self.at,
            wanted: n,
        })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PgOutputError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PgOutputError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PgOutputError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String, PgOutputError> {
        let rest = &self.buf[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PgOutputError::Bad { tag: self.tag, problem: "string without its terminating NUL".into() })?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }
    fn bad(&self, problem: String) -> PgOutputError {
        PgOutputError::Bad { tag: self.tag, problem }
    }

    fn tuple(&mut self) -> Result<Vec<Value<'a>>, PgOutputError> {
        let n = self.u16()? as usize;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Value::Text(self.take(len)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Value::Binary(self.take(len)?)
                }
                other => return Err(self.bad(format!("unknown tuple value kind {:?}", other as char))),
            });
        }
        Ok(values)
    }

    /// A `N` (new tuple) marker followed by the tuple.
    fn new_tuple(&mut self) -> Result<Vec<Value<'a>>, PgOutputError> {
        match self.u8()? {
            b'N' => self.tuple(),
            other => Err(self.bad(format!("expected new tuple 'N', got {:?}", other as char))),
        }
    }
}

/// Decodes one pgoutput message.
pub fn parse(data: &[u8]) -> Result<Message<'_>, PgOutputError> {
    let Some((&tag, _)) = data.split_first() else {
        return Err(PgOutputError::Bad { tag: '?', problem: "empty message".into() });
    };
    let mut r = Reader { buf: data, at: 1, tag: tag as char };
    Ok(match tag {
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.u16()? as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let type_modifier = r.u32()? as i32;
                columns.push(RelColumn { name, type_oid, type_modifier, is_key: flags & 1 == 1 });
            }
            Message::Relation(Relation { oid, namespace, name, replica_identity, columns })
        }
        b'I' => {
            let relation = r.u32()?;
            Message::Insert { relation, new: r.new_tuple()? }
        }
        b'U' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    Message::Update { relation, old: Some(old), new: r.new_tuple()? }
                }
                b'N' => Message::Update { relation, old: None, new: r.tuple()? },
                other => return Err(r.bad(format!("unexpected tuple marker {:?}", other as char))),
            }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                other => return Err(r.bad(format!("unexpected tuple marker {:?}", other as char))),
            }
        }
        b'T' => {
            let n = r.u32()? as usize;
            let _options = r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    })
}

/// Session settings that fix the text form of values in the stream (passed as the replication
/// connection's `options`), so [`text_value`] can read them.
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=1 -c IntervalStyle=postgres";

/// Decodes the text form of one value of `kind` into `out`, producing exactly the cell the
/// snapshot's binary decoder ([`crate::source::postgres::decode::decode`]) produces for the same
/// value.
pub fn text_value(kind: PgKind, text: &[u8], out: &mut RowBuf) -> Result<(), String> {
    let s = || std::str::from_utf8(text).map_err(|e| format!("value is not UTF-8: {e}"));
    match kind {
        PgKind::Bool => match text {
            b"t" => out.push_int(1),
            b"f" => out.push_int(0),
            _ => return Err(format!("not a boolean: {:?}", String::from_utf8_lossy(text))),
        },
        PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => {
            out.push_int(s()?.parse::<i64>().map_err(|e| format!("not an integer: {e}"))?)
        }
        PgKind::Float4 => out.push_real(f32_as_shown(parse_float(s()?)? as f32)),
        PgKind::Float8 => out.push_real(parse_float(s()?)?),
        PgKind::Numeric | PgKind::Text | PgKind::Json | PgKind::Jsonb | PgKind::Uuid | PgKind::AsText => {
            out.push_text(text)
        }
        PgKind::Bytea => match text.strip_prefix(b"\\x") {
            Some(h) => out.push_blob(&hex::decode(h).map_err(|e| format!("bad bytea hex: {e}"))?),
            None => return Err("bytea is not in hex format".into()),
        },
        PgKind::Date => out.push_text_with(|o| write_iso_date(o, text)),
        PgKind::Timestamp | PgKind::Timestamptz => {
            let mut err = None;
            out.push_text_with(|o| err = write_iso_timestamp(o, text, kind == PgKind::Timestamptz).err());
            if let Some(e) = err {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn parse_float(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|e| format!("not a number: {s:?}: {e}"))
}

/// `YYYY-MM-DD` passes through; a BC date (`0044-03-15 BC`) becomes ISO's expanded year
/// (`-0043-03-15`, astronomical numbering) as the binary decoder writes it.
fn write_iso_date(out: &mut Vec<u8>, text: &[u8]) {
    let bc = text.strip_suffix(b" BC").and_then(|d| {
        let mut parts = std::str::from_utf8(d).ok()?.splitn(3, '-');
        let y: i64 = parts.next()?.parse().ok()?;
        Some((y, parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?))
    });
    match bc {
        Some((y, m, d)) => crate::source::row::write_date(out, 1 - y, m, d),
        None => out.extend_from_slice(text),
    }
}

/// `2026-01-31 12:34:56.5[+00]` → `2026-01-31T12:34:56.500000[Z]`: the fraction padded to six
/// digits when present and not zero, `Z` for `timestamptz` (the session's TimeZone is UTC).
fn write_iso_timestamp(out: &mut Vec<u8>, text: &[u8], utc: bool) -> Result<(), String> {
    if text == b"infinity" || text == b"-infinity" {
        out.extend_from_slice(text);
        return Ok(());
    }
    let bad = || format!("not an ISO timestamp: {:?}", String::from_utf8_lossy(text));
    let (body, bc) = match text.strip_suffix(b" BC") {
        Some(b) => (b, true),
        None => (text, false),
    };
    let body = if utc {
        // The offset is +00 (TimeZone=UTC); anything else means the session setting was lost.
        body.strip_suffix(b"+00").ok_or_else(bad)?
    } else {
        body
    };
    let space = body.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    let (date, time) = (&body[..space], &body[space + 1..]);
    if bc {
        let mut d = date.to_vec();
        d.extend_from_slice(b" BC");
        write_iso_date(out, &d);
    } else {
        out.extend_from_slice(date);
    }
    out.push(b'T');
    match time.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let frac = &time[dot + 1..];
            if frac.len() > 6 || !frac.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            out.extend_from_slice(&time[..dot]);
            if frac.iter().any(|&b| b != b'0') {
                out.push(b'.');
                out.extend_from_slice(frac);
                out.extend(std::iter::repeat_n(b'0', 6 - frac.len()));
            }
        }
        None => out.extend_from_slice(time),
    }
    if utc {
        out.push(b'Z');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::source::postgres::decode::decode;
    use crate::source::{Cell, RowView};

    /// A Relation message for `CREATE TABLE public.ho_so (id int PRIMARY KEY, ten text)`, laid out
    /// as the protocol documentation describes it (the integration tests cover real server output).
    const RELATION: &[u8] = b"R\x00\x00\x40\x01public\x00ho_so\x00d\x00\x02\
\x01id\x00\x00\x00\x00\x17\xff\xff\xff\xff\
\x00ten\x00\x00\x00\x00\x19\xff\xff\xff\xff";

    #[test]
    fn relation_messages_carry_columns_types_and_key() {
        let Message::Relation(r) = parse(RELATION).unwrap() else { panic!("not a relation") };
        assert_eq!(r.oid, 0x4001);
        assert_eq!((r.namespace.as_str(), r.name.as_str(), r.replica_identity), ("public", "ho_so", b'd'));
        assert_eq!(r.columns.len(), 2);
        assert_eq!((r.columns[0].name.as_str(), r.columns[0].type_oid, r.columns[0].is_key), ("id", 23, true));
        assert_eq!((r.columns[1].name.as_str(), r.columns[1].type_oid, r.columns[1].is_key), ("ten", 25, false));
        assert_eq!(r.columns[1].type_modifier, -1);
    }

    #[test]
    fn inserts_updates_deletes_and_truncates() {
        let insert = b"I\x00\x00\x40\x01N\x00\x03t\x00\x00\x00\x0242nu";
        assert_eq!(
            parse(insert).unwrap(),
            Message::Insert { relation: 0x4001, new: vec![Value::Text(b"42"), Value::Null, Value::Unchanged] }
        );
        let update_key = b"U\x00\x00\x40\x01K\x00\x01t\x00\x00\x00\x011N\x00\x01t\x00\x00\x00\x012";
        assert_eq!(
            parse(update_key).unwrap(),
            Message::Update { relation: 0x4001, old: Some(vec![Value::Text(b"1")]), new: vec![Value::Text(b"2")] }
        );
        let update = b"U\x00\x00\x40\x01N\x00\x01b\x00\x00\x00\x02\x00\x07";
        assert_eq!(
            parse(update).unwrap(),
            Message::Update { relation: 0x4001, old: None, new: vec![Value::Binary(b"\x00\x07")] }
        );
        let delete = b"D\x00\x00\x40\x01K\x00\x02t\x00\x00\x00\x017n";
        assert_eq!(
            parse(delete).unwrap(),
            Message::Delete { relation: 0x4001, old: vec![Value::Text(b"7"), Value::Null] }
        );
        let truncate = b"T\x00\x00\x00\x02\x00\x00\x00\x40\x01\x00\x00\x40\x02";
        assert_eq!(parse(truncate).unwrap(), Message::Truncate { relations: vec![0x4001, 0x4002] });
        assert_eq!(parse(b"Y\x00\x00\x00\x01pg\x00t\x00").unwrap(), Message::Other(b'Y'));
    }

    #[test]
    fn damaged_messages_are_errors_not_panics() {
        assert!(matches!(
            parse(b"I\x00\x00\x40\x01N\x00\x01t\x00\x00\x00\x09ab"),
            Err(PgOutputError::Truncated { .. })
        ));
        assert!(matches!(parse(b"I\x00\x00\x40\x01X"), Err(PgOutputError::Bad { .. })));
        assert!(matches!(parse(b"R\x00\x00\x40\x01public"), Err(PgOutputError::Bad { .. })));
        assert!(parse(b"").is_err());
        for n in 0..RELATION.len() {
            assert!(parse(&RELATION[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    fn text_cell(kind: PgKind, text: &str) -> String {
        let mut b = RowBuf::default();
        text_value(kind, text.as_bytes(), &mut b).unwrap();
        show(&b)
    }

    fn binary_cell(kind: PgKind, raw: &[u8]) -> String {
        let mut b = RowBuf::default();
        decode(kind, Some(raw), &mut b).unwrap();
        show(&b)
    }

    fn show(b: &RowBuf) -> String {
        match b.cell(0).unwrap() {
            Cell::Null => "null".into(),
            Cell::Int(i) => format!("int {i}"),
            Cell::Real(f) => format!("real {f:?}"),
            Cell::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
            Cell::Blob(x) => format!("blob {}", hex::encode(x)),
        }
    }

    #[test]
    fn text_values_decode_like_the_binary_snapshot() {
        // Each pair: the text form PostgreSQL sends (with SESSION_OPTIONS) and the binary form.
        assert_eq!(text_cell(PgKind::Bool, "t"), binary_cell(PgKind::Bool, &[1]));
        assert_eq!(text_cell(PgKind::Bool, "f"), binary_cell(PgKind::Bool, &[0]));
        assert_eq!(text_cell(PgKind::Int4, "-42"), binary_cell(PgKind::Int4, &(-42i32).to_be_bytes()));
        assert_eq!(
            text_cell(PgKind::Int8, "9007199254740993"),
            binary_cell(PgKind::Int8, &9_007_199_254_740_993i64.to_be_bytes())
        );
        assert_eq!(text_cell(PgKind::Float4, "1.1"), binary_cell(PgKind::Float4, &1.1f32.to_be_bytes()));
        assert_eq!(
            text_cell(PgKind::Float8, "0.30000000000000004"),
            binary_cell(PgKind::Float8, &(0.1f64 + 0.2).to_be_bytes())
        );
        assert_eq!(
            text_cell(PgKind::Float8, "-Infinity"),
            binary_cell(PgKind::Float8, &f64::NEG_INFINITY.to_be_bytes())
        );
        assert_eq!(text_cell(PgKind::Bytea, "\\x00ff10"), binary_cell(PgKind::Bytea, &[0, 255, 16]));
        // 2026-01-31 = 9527 days after 2000-01-01.
        assert_eq!(text_cell(PgKind::Date, "2026-01-31"), binary_cell(PgKind::Date, &9527i32.to_be_bytes()));
        let micros: i64 = 9527 * 86_400_000_000 + 12 * 3_600_000_000 + 34 * 60_000_000 + 56_500_000;
        assert_eq!(
            text_cell(PgKind::Timestamp, "2026-01-31 12:34:56.5"),
            binary_cell(PgKind::Timestamp, &micros.to_be_bytes())
        );
        assert_eq!(
            text_cell(PgKind::Timestamptz, "2026-01-31 12:34:56.5+00"),
            binary_cell(PgKind::Timestamptz, &micros.to_be_bytes())
        );
        let whole: i64 = 9527 * 86_400_000_000;
        assert_eq!(
            text_cell(PgKind::Timestamp, "2026-01-31 00:00:00"),
            binary_cell(PgKind::Timestamp, &whole.to_be_bytes())
        );
        assert_eq!(text_cell(PgKind::Timestamp, "infinity"), binary_cell(PgKind::Timestamp, &i64::MAX.to_be_bytes()));
        // 0044-03-15 BC is astronomical year -43.
        assert_eq!(text_cell(PgKind::Date, "0044-03-15 BC"), "text -0043-03-15");
        assert_eq!(text_cell(PgKind::Date, "0001-01-01 BC"), binary_cell(PgKind::Date, &(-730_485i32).to_be_bytes()));
        assert_eq!(text_cell(PgKind::Numeric, "-12.500"), "text -12.500");
    }

    #[test]
    fn malformed_text_values_are_errors() {
        let mut b = RowBuf::default();
        assert!(text_value(PgKind::Int4, b"x", &mut b).is_err());
        assert!(text_value(PgKind::Bool, b"yes", &mut b).is_err());
        assert!(text_value(PgKind::Bytea, b"abc", &mut b).is_err());
        assert!(text_value(PgKind::Timestamptz, b"2026-01-31 12:00:00+07", &mut b).is_err());
        assert!(text_value(PgKind::Timestamp, b"2026-01-31T12:00", &mut b).is_err());
    }
}
