//! Cell values through the PostgreSQL warehouse's binary `COPY`, against PostgreSQL's own text
//! input: every value the hub stores must equal what the server makes of the same value written
//! as text (`'…'::numeric`, `'…'::date`, …), on the direct path (new keys) and on the staging
//! path (existing keys), and every value the server could not store must land as NULL with the
//! value kept in `_kho_invalid`. Real server at 127.0.0.1:5432, a database per test.

mod common;

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use serde_json::{Value, json};

use common::pg::{TestDb, apply, col, open, upsert};

/// (column type, value sent, PostgreSQL text input of what must be stored; `None`: refused).
fn cases() -> Vec<(ColumnType, Value, Option<&'static str>)> {
    use ColumnType::*;
    vec![
        (Decimal, json!("12345678901234567890.123456789"), Some("12345678901234567890.123456789")),
        (Decimal, json!("1.50"), Some("1.50")),
        (Decimal, json!(" -1.5E+3 "), Some("-1.5E+3")),
        (Decimal, json!("0.00012"), Some("0.00012")),
        (Decimal, json!("1e-20"), Some("1e-20")),
        (Decimal, json!("-0.000"), Some("-0.000")),
        (Decimal, json!("100000000"), Some("100000000")),
        (Decimal, json!(".5"), Some(".5")),
        (Decimal, json!(12.5), Some("12.5")),
        (Decimal, json!(1e300), Some("1e300")),
        (Decimal, json!(-9007199254740993i64), Some("-9007199254740993")),
        (Decimal, json!("NaN"), Some("NaN")),
        (Decimal, json!("Infinity"), Some("Infinity")),
        (Decimal, json!("-Infinity"), Some("-Infinity")),
        (Decimal, json!("1e-16384"), None),
        (Decimal, json!("1e131072"), None),
        (Decimal, json!("12,5"), None),
        (Int, json!(i64::MIN), Some("-9223372036854775808")),
        (Int, json!(i64::MAX), Some("9223372036854775807")),
        (Int, json!(" 7 "), Some("7")),
        (Int, json!(u64::MAX), None),
        (Float, json!(1.5), Some("1.5")),
        (Float, json!(-0.1), Some("-0.1")),
        (Float, json!(1e300), Some("1e300")),
        (Float, json!("NaN"), Some("NaN")),
        (Float, json!("-Infinity"), Some("-Infinity")),
        (Float, json!("2.5e-310"), Some("2.5e-310")),
        (Bool, json!(true), Some("true")),
        (Bool, json!("no"), Some("false")),
        (Text, json!("Sở Y tế\tSơn La\\n\r\n“hợp lệ”"), Some("Sở Y tế\tSơn La\\n\r\n“hợp lệ”")),
        (Text, json!("a\u{0}b"), Some("a\u{FFFD}b")),
        (Text, json!(""), Some("")),
        (Text, json!(12), Some("12")),
        (Bytes, json!("AAEC/w=="), Some("\\x000102ff")),
        (Bytes, json!(""), Some("\\x")),
        (Date, json!("2026-02-01"), Some("2026-02-01")),
        (Date, json!("1999-12-31"), Some("1999-12-31")),
        (Date, json!("0001-01-01"), Some("0001-01-01")),
        (Date, json!("-004713-11-24"), Some("4714-11-24 BC")),
        (Date, json!("-004713-11-23"), None),
        (Date, json!("2026-02-30"), None),
        (Timestamp, json!("2026-02-01T08:00:00Z"), Some("2026-02-01 08:00:00+00")),
        (Timestamp, json!("2026-02-01 08:00:00"), Some("2026-02-01 08:00:00+07")),
        (Timestamp, json!("2026-02-01"), Some("2026-02-01 00:00:00+07")),
        (Timestamp, json!("1960-06-01T00:00:00.123456-03:30"), Some("1960-06-01 00:00:00.123456-03:30")),
        (Timestamp, json!("9999-12-01T23:59:59.999999Z"), Some("9999-12-01 23:59:59.999999+00")),
        (Timestamp, json!("-009999-01-01T00:00:00Z"), None),
        (
            Json,
            json!({"a": [1, "x\ny", null], "đ": {"k\u{0}": 1.5}}),
            Some(r#"{"a": [1, "x\ny", null], "đ": {"k\ufffd": 1.5}}"#),
        ),
        (Json, json!("chuỗi"), Some(r#""chuỗi""#)),
    ]
}

/// One row per case: `id`, then a column per type, the case's value in its type's column.
fn schema() -> DatasetSchema {
    let mut columns: Vec<Column> = vec![col("id", ColumnType::Int)];
    columns.extend(TYPES.iter().map(|&(ty, _)| col(&column(ty), ty)));
    DatasetSchema { privacy: Default::default(), dataset: "gia_tri".into(), key: vec!["id".into()], columns }
}

fn column(ty: ColumnType) -> String {
    format!("v_{}", ty.as_str())
}

#[test]
fn every_value_reads_back_as_postgresql_would_parse_it() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let s = schema();
    let cases = cases();
    let rows = |first_seq: u64| -> Vec<_> {
        cases
            .iter()
            .enumerate()
            .map(|(i, (ty, v, _))| upsert("gia_tri", first_seq + i as u64, json!({"id": i, column(*ty): v})))
            .collect()
    };
    // New keys: the direct COPY. The same keys again: the staging table and the merge.
    for (path, first_seq) in [("direct", 1), ("staging", 1_000)] {
        apply(&mut wh, "a", std::slice::from_ref(&s), &rows(first_seq)).expect("apply");
        let mut c = db.client();
        for (i, (ty, sent, want)) in cases.iter().enumerate() {
            let (col, pg) = (column(*ty), pg_type(*ty));
            let r = c
                .query_one(
                    &format!(
                        "SELECT {col} IS NOT DISTINCT FROM $1::text::{pg}, {col}::text, $1::text::{pg}::text, \
                         (_kho_invalid -> '{col}')::text, _kho_seq FROM gia_tri WHERE id = $2"
                    ),
                    &[&want, &(i as i64)],
                )
                .unwrap_or_else(|e| panic!("{path} {ty:?} {sent}: {e}"));
            let (same, got, expected): (bool, Option<String>, Option<String>) = (r.get(0), r.get(1), r.get(2));
            assert!(same, "{path} {ty:?} {sent}: stored {got:?}, PostgreSQL reads the text as {expected:?}");
            assert_eq!(got, expected, "{path} {ty:?} {sent}: same text form too (scale, zone, spacing)");
            let invalid: Option<Value> = r.get::<_, Option<String>>(3).map(|t| serde_json::from_str(&t).expect("json"));
            match want {
                Some(_) => assert_eq!(invalid, None, "{path} {ty:?} {sent}: stored, not refused"),
                None => assert_eq!(invalid.as_ref(), Some(sent), "{path} {ty:?}: refused, kept as sent"),
            }
            assert_eq!(r.get::<_, i64>(4), (first_seq + i as u64) as i64, "{path}: the row was written");
        }
    }
}

/// Each portable type and its warehouse column type, as the hub creates it.
const TYPES: [(ColumnType, &str); 9] = [
    (ColumnType::Bool, "boolean"),
    (ColumnType::Int, "bigint"),
    (ColumnType::Float, "double precision"),
    (ColumnType::Decimal, "numeric"),
    (ColumnType::Text, "text"),
    (ColumnType::Bytes, "bytea"),
    (ColumnType::Date, "date"),
    (ColumnType::Timestamp, "timestamptz"),
    (ColumnType::Json, "jsonb"),
];

fn pg_type(ty: ColumnType) -> &'static str {
    TYPES.iter().find(|t| t.0 == ty).map_or("text", |t| t.1)
}

#[test]
fn a_table_altered_by_hand_keeps_loading_by_text_copy() {
    let db = TestDb::new();
    let (mut wh, _reader) = open(&db);
    let s = schema();
    apply(&mut wh, "a", std::slice::from_ref(&s), &[upsert("gia_tri", 1, json!({"id": 1, "v_int": 1}))])
        .expect("apply");
    // An operator narrows and retypes columns Kho created; the binary forms no longer fit them.
    db.client()
        .batch_execute(
            "ALTER TABLE gia_tri ALTER v_int TYPE numeric, ALTER v_timestamp TYPE timestamp, \
             ALTER v_text TYPE varchar(50), ALTER v_decimal TYPE numeric(20, 2)",
        )
        .expect("alter");
    let batch = |seq: u64, n: i64| {
        vec![
            upsert("gia_tri", seq, json!({"id": 2, "v_int": n, "v_decimal": "1.005"})),
            upsert("gia_tri", seq + 1, json!({"id": 3, "v_timestamp": "2026-02-01 08:00:00", "v_text": "Sở Y tế"})),
        ]
    };
    // New keys (the direct path), from the writer that had loaded the table before the change.
    apply(&mut wh, "a", std::slice::from_ref(&s), &batch(2, 42)).expect("insert");
    let read = |c: &mut ::postgres::Client| -> String {
        c.query_one("SELECT v_int::text FROM gia_tri WHERE id = 2", &[]).expect("read").get(0)
    };
    // A bigint's eight bytes would read as a numeric 0 with 42 decimals, without any error.
    assert_eq!(read(&mut db.client()), "42");
    // Existing keys: the staging path, in text form too.
    apply(&mut wh, "a", std::slice::from_ref(&s), &batch(4, 43)).expect("update");
    let r = db
        .client()
        .query_one(
            "SELECT v_decimal::text, (SELECT v_timestamp = '2026-02-01 01:00:00'::timestamp FROM gia_tri \
             WHERE id = 3), (SELECT v_text::text FROM gia_tri WHERE id = 3), _kho_seq FROM gia_tri WHERE id = 2",
            &[],
        )
        .expect("read");
    assert_eq!(read(&mut db.client()), "43");
    assert_eq!(r.get::<_, String>(0), "1.01", "the column's own rounding applies");
    assert!(r.get::<_, bool>(1), "a column without zone holds the UTC time (PostgreSQL ignores the zone of the text)");
    assert_eq!(r.get::<_, String>(2), "Sở Y tế");
    assert_eq!(r.get::<_, i64>(3), 4);
    // A new writer (a restarted hub) reads the altered table before its first batch.
    let (mut fresh, _r) = open(&db);
    apply(&mut fresh, "a", std::slice::from_ref(&s), &[upsert("gia_tri", 6, json!({"id": 5, "v_int": 5}))])
        .expect("a fresh writer loads the altered table at once");
}
