//! Vietnamese encodings, NFC and local formats through the real sources (files and SQLite).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use kho_shared::types::ColumnType;

use super::folder::{FolderSource, FolderSourceConfig};
use super::text::{Encoding, TextConfig, encode};
use super::{ScanRange, Source, SourceError};
use crate::config::{DatasetConfig, Mode, SourceConfig};

fn folder_cfg(dir: &Path, pattern: &str) -> FolderSourceConfig {
    FolderSourceConfig {
        path: dir.to_path_buf(),
        pattern: pattern.into(),
        sheet: None,
        delimiter: Some(';'),
        settle: Duration::ZERO,
        types: BTreeMap::new(),
        formats: BTreeMap::new(),
    }
}

/// Every row as the JSON capture would send.
fn rows(src: &mut dyn Source, key: &[&str]) -> Result<Vec<String>, SourceError> {
    let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
    let schema = src.discover(&key, None)?;
    let mut enc = crate::detect::encode::RowEncoder::new(&schema);
    let mut out = Vec::new();
    src.scan(&schema, ScanRange::KeyOrder, &mut |r| {
        enc.encode(r).unwrap();
        out.push(String::from_utf8(enc.row().to_vec()).unwrap());
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[test]
fn a_tcvn3_export_with_local_formats_reads_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    let mut bytes = encode(Encoding::Tcvn3, "ma;tên;ngày;lúc;số tiền;số lượng;ngày excel\n").unwrap();
    bytes.extend(
        encode(Encoding::Tcvn3, "1;Lò Thị Hồng;05/01/2026;31/12/2025 17:45;1.234.567,89;12.000;46023\n").unwrap(),
    );
    bytes.extend(encode(Encoding::Tcvn3, "2;ĐIỆN BIÊN;5/1/2026;01/01/2026 00:00;-0,5;7;46024\n").unwrap());
    std::fs::write(&p, bytes).unwrap();
    let mut c = folder_cfg(dir.path(), "*.csv");
    for (col, ty, f) in [
        ("ngày", ColumnType::Date, "%d/%m/%Y"),
        ("lúc", ColumnType::Timestamp, "%d/%m/%Y %H:%M"),
        ("số tiền", ColumnType::Decimal, "vi"),
        ("số lượng", ColumnType::Int, "1.234.567,89"),
        ("ngày excel", ColumnType::Date, "excel"),
    ] {
        c.types.insert(col.into(), ty);
        c.formats.insert(col.into(), f.into());
    }
    assert!(c.validate("s").is_empty(), "{:?}", c.validate("s"));
    let text = TextConfig { encoding: Encoding::Tcvn3, ..TextConfig::default() };
    let mut src = FolderSource::open("d", &c, &text, &p).unwrap();
    assert_eq!(
        rows(&mut src, &["ma"]).unwrap(),
        [
            r#"{"ma":1,"tên":"Lò Thị Hồng","ngày":"2026-01-05","lúc":"2025-12-31T17:45:00","số tiền":"1234567.89","số lượng":12000,"ngày excel":"2026-01-01"}"#,
            r#"{"ma":2,"tên":"ĐIỆN BIÊN","ngày":"2026-01-05","lúc":"2026-01-01T00:00:00","số tiền":"-0.5","số lượng":7,"ngày excel":"2026-01-02"}"#,
        ]
    );
    // Read as UTF-8, the same file is refused with the encoding it reads as.
    let mut src = FolderSource::open("d", &c, &TextConfig::default(), &p).unwrap();
    let err = rows(&mut src, &["ma"]).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("tcvn3"), "{err}");
}

#[test]
fn per_column_encodings_and_nfc() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    // A UTF-8 file (names typed decomposed) with one column pasted from a VNI-era program.
    let mut bytes = "ma;ten;ten_cu\n1;So\u{31b}n La;".as_bytes().to_vec();
    bytes.extend(encode(Encoding::Vni, "Mường Thanh").unwrap());
    bytes.push(b'\n');
    std::fs::write(&p, &bytes).unwrap();
    let c = folder_cfg(dir.path(), "*.csv");
    let mut text = TextConfig::default();
    text.columns.insert("ten_cu".into(), Encoding::Vni);
    let mut src = FolderSource::open("d", &c, &text, &p).unwrap();
    assert_eq!(rows(&mut src, &["ma"]).unwrap(), [r#"{"ma":1,"ten":"Sơn La","ten_cu":"Mường Thanh"}"#]);
    // NFC off: the decomposed name is kept as written.
    let text = TextConfig { nfc: false, ..text };
    let mut src = FolderSource::open("d", &c, &text, &p).unwrap();
    assert!(rows(&mut src, &["ma"]).unwrap()[0].contains("So\u{31b}n La"));
}

#[test]
fn a_value_that_does_not_parse_refuses_the_file_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    std::fs::write(&p, "ma;ngay;so\n1;05/01/2026;1.000,5\n2;31/02/2026;2,5\n3;01/03/2026;1,234.5\n").unwrap();
    let mut c = folder_cfg(dir.path(), "*.csv");
    c.types.insert("ngay".into(), ColumnType::Date);
    c.formats.insert("ngay".into(), "%d/%m/%Y".into());
    c.types.insert("so".into(), ColumnType::Decimal);
    c.formats.insert("so".into(), "vi".into());
    let mut src = FolderSource::open("d", &c, &TextConfig::default(), &p).unwrap();
    let err = rows(&mut src, &["ma"]).unwrap_err().to_string();
    assert!(err.contains("line 3, column \"ngay\"") && err.contains("31/02/2026"), "{err}");
    // A format without its declared type is a config error naming the field.
    let mut c = folder_cfg(dir.path(), "*.csv");
    c.formats.insert("ngay".into(), "%d/%m/%Y".into());
    assert_eq!(c.validate("dataset[0].source")[0].0, "dataset[0].source.formats.ngay");
}

#[test]
fn xlsx_strings_from_legacy_fonts_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.xlsx");
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.write_string(0, 0, "ma").unwrap();
    ws.write_string(0, 1, "ten").unwrap();
    ws.write_string(0, 2, "ngay").unwrap();
    ws.write_number(1, 0, 1.0).unwrap();
    // Typed with a .VnTime font: Excel holds the TCVN3 bytes as Windows-1252 characters.
    ws.write_string(1, 1, "S¬n La").unwrap();
    ws.write_number(1, 2, 46023.0).unwrap();
    wb.save(&p).unwrap();
    let mut c = folder_cfg(dir.path(), "*.xlsx");
    c.delimiter = None;
    c.types.insert("ngay".into(), ColumnType::Date);
    c.formats.insert("ngay".into(), "excel".into());
    let text = TextConfig { encoding: Encoding::Tcvn3, ..TextConfig::default() };
    let mut src = FolderSource::open("d", &c, &text, &p).unwrap();
    assert_eq!(rows(&mut src, &["ma"]).unwrap(), [r#"{"ma":1,"ten":"Sơn La","ngay":"2026-01-01"}"#]);
}

#[test]
fn database_text_is_decoded_per_column_and_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, ten TEXT, ten_cu TEXT, sua TEXT)").unwrap();
    let legacy = encode(Encoding::Tcvn3, "Điện Biên Phủ").unwrap();
    conn.execute(
        "INSERT INTO t VALUES (1, ?1, CAST(?2 AS TEXT), 'Lu\u{306}c')",
        rusqlite::params!["Ho\u{302}\u{300} so\u{31b}", legacy],
    )
    .unwrap();
    drop(conn);
    let mut d = DatasetConfig {
        name: "t".into(),
        table: Some("t".into()),
        query: None,
        key: vec!["id".into()],
        mode: Mode::Cursor,
        cursor_column: Some("sua".into()),
        poll_interval: Duration::from_secs(1),
        schedule: None,
        source: SourceConfig::Sqlite { path: db },
        text: TextConfig::default(),
        cdc: Default::default(),
    };
    d.text.columns.insert("ten_cu".into(), Encoding::Tcvn3);
    let mut src = super::open(&d, None).unwrap();
    let schema = src.discover(&d.key, Some("sua")).unwrap();
    let mut enc = crate::detect::encode::RowEncoder::new(&schema);
    let mut got = Vec::new();
    src.scan(&schema, ScanRange::KeyOrder, &mut |r| {
        enc.encode(r).unwrap();
        got.push(String::from_utf8(enc.row().to_vec()).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    // The cursor column is bound back into the source's query, so it is never rewritten.
    assert_eq!(got, [format!(r#"{{"id":1,"ten":"Hồ sơ","ten_cu":"Điện Biên Phủ","sua":"Lu{}c"}}"#, '\u{306}')]);
}
