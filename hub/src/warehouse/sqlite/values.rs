//! JSON row values → SQLite values, by the column's portable type.
//!
//! The conversion never refuses a value: one that does not fit its declared type (a string in an
//! `int` column, bad base64 in a `bytes` column) is stored as given, because SQLite's type
//! affinity can hold it and refusing would stall the agent's whole outbox over one odd cell.
//! Text is borrowed from the decoded batch, so a row is bound without copying its strings.

use base64::Engine as _;
use kho_shared::types::ColumnType;
use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, Value as SqlOwned, ValueRef};
use serde_json::Value;

/// SQLite declared type for a portable type. Booleans are stored 0/1, decimals as exact text.
pub fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int | ColumnType::Bool => "INTEGER",
        ColumnType::Float => "REAL",
        ColumnType::Bytes => "BLOB",
        ColumnType::Decimal | ColumnType::Text | ColumnType::Date | ColumnType::Timestamp | ColumnType::Json => "TEXT",
    }
}

/// One value ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    OwnedText(String),
    Blob(Vec<u8>),
}

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Bind::Null => ToSqlOutput::Owned(SqlOwned::Null),
            Bind::Int(i) => ToSqlOutput::Owned(SqlOwned::Integer(*i)),
            Bind::Real(f) => ToSqlOutput::Owned(SqlOwned::Real(*f)),
            Bind::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Bind::OwnedText(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Bind::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Converts `value` for a column of type `ty`. `None` (column absent from the row) is NULL.
pub fn to_bind(ty: ColumnType, value: Option<&Value>) -> Bind<'_> {
    let Some(value) = value else { return Bind::Null };
    match (ty, value) {
        (_, Value::Null) => Bind::Null,
        (ColumnType::Json, v) => Bind::OwnedText(v.to_string()),
        (ColumnType::Bool, Value::Bool(b)) => Bind::Int(i64::from(*b)),
        (ColumnType::Float, Value::Number(n)) => n.as_f64().map_or(Bind::OwnedText(n.to_string()), Bind::Real),
        (ColumnType::Float, Value::String(s)) => match s.as_str() {
            "Infinity" => Bind::Real(f64::INFINITY),
            "-Infinity" => Bind::Real(f64::NEG_INFINITY),
            // SQLite stores NaN as NULL anyway; saying so here keeps that visible.
            "NaN" => Bind::Null,
            _ => Bind::Text(s),
        },
        // Decimals stay exact: the number's own digits, never an f64 round trip.
        (ColumnType::Decimal, Value::Number(n)) => Bind::OwnedText(n.to_string()),
        (ColumnType::Bytes, Value::String(s)) => {
            base64::engine::general_purpose::STANDARD.decode(s).map_or(Bind::Text(s), Bind::Blob)
        }
        (_, v) => as_given(v),
    }
}

/// The natural SQLite value of any JSON value.
fn as_given(value: &Value) -> Bind<'_> {
    match value {
        Value::Null => Bind::Null,
        Value::Bool(b) => Bind::Int(i64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bind::Int(i),
            // u64 above i64::MAX: keep the exact digits.
            (None, _) if n.is_u64() => Bind::OwnedText(n.to_string()),
            (None, Some(f)) => Bind::Real(f),
            (None, None) => Bind::OwnedText(n.to_string()),
        },
        Value::String(s) => Bind::Text(s),
        Value::Array(_) | Value::Object(_) => Bind::OwnedText(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;
    use serde_json::json;

    #[test]
    fn values_follow_their_column_type() {
        let cases: Vec<(ColumnType, Value, Bind<'static>)> = vec![
            (Int, json!(42), Bind::Int(42)),
            (Int, json!("not a number"), Bind::OwnedText(String::new())),
            (Bool, json!(true), Bind::Int(1)),
            (Float, json!(1.5), Bind::Real(1.5)),
            (Float, json!("Infinity"), Bind::Real(f64::INFINITY)),
            (Decimal, json!("12345678901234567890.12"), Bind::OwnedText(String::new())),
            (Decimal, json!(12.5), Bind::OwnedText("12.5".into())),
            (Bytes, json!("AQID"), Bind::Blob(vec![1, 2, 3])),
            (Json, json!({"a": [1]}), Bind::OwnedText("{\"a\":[1]}".into())),
            (Text, json!(null), Bind::Null),
            (Int, json!(u64::MAX), Bind::OwnedText(u64::MAX.to_string())),
        ];
        for (ty, value, want) in cases {
            let got = to_bind(ty, Some(&value));
            match (&got, &want) {
                // Borrowed text compares by content.
                (Bind::Text(s), Bind::OwnedText(w)) if w.is_empty() => assert_eq!(Some(*s), value.as_str()),
                _ => assert_eq!(got, want, "{ty:?} {value}"),
            }
        }
        assert_eq!(to_bind(Text, None), Bind::Null);
        assert_eq!(to_bind(Bytes, Some(&json!("%%%"))), Bind::Text("%%%"));
    }
}
