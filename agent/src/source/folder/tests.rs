#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

#[test]
fn temp_names_are_ignored_and_globs_match() {
    for n in ["~$bao_cao.xlsx", ".ho_so.csv", "ho_so.csv.tmp", "ho_so.csv.part", "x.crdownload"] {
        assert!(is_temp_name(n), "{n}");
    }
    assert!(!is_temp_name("ho_so_2026.csv"));
    assert!(glob_match("*.csv", "ho_so.CSV"));
    assert!(glob_match("ho_so_*.xlsx", "ho_so_2026-01.xlsx"));
    assert!(glob_match("a?c.csv", "abc.csv"));
    assert!(!glob_match("*.csv", "ho_so.csv.tmp"));
    assert!(!glob_match("ho_so_*.csv", "khac.csv"));
    assert!(glob_match("*", "x"));
}

fn cfg(dir: &Path, pattern: &str) -> FolderSourceConfig {
    FolderSourceConfig {
        path: dir.to_path_buf(),
        pattern: pattern.into(),
        sheet: None,
        delimiter: None,
        settle: Duration::ZERO,
        types: BTreeMap::new(),
        formats: BTreeMap::new(),
    }
}

fn read_all(src: &mut FolderSource, key: &[&str]) -> Result<(DatasetSchema, Vec<String>), SourceError> {
    let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
    let schema = src.discover(&key, None)?;
    let mut enc = crate::detect::encode::RowEncoder::new(&schema);
    let mut rows = Vec::new();
    src.scan(&schema, ScanRange::KeyOrder, &mut |r| {
        enc.encode(r).unwrap();
        rows.push(String::from_utf8(enc.row().to_vec()).unwrap());
        ControlFlow::Continue(())
    })?;
    Ok((schema, rows))
}

#[test]
fn csv_with_bom_is_typed_and_kept_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    std::fs::write(&p, "\u{feff}ma,ten,so_tien,ngay,ma_xa\n1,Nguyễn Văn Ánh,1234.50,2026-01-05,007\n2,\"Lò Thị Hồng, Sơn La\",,2026-02-01,012\n").unwrap();
    let c = cfg(dir.path(), "*.csv");
    let mut src = FolderSource::open("d", &c, &TextConfig::default(), &p).unwrap();
    let (schema, rows) = read_all(&mut src, &["ma"]).unwrap();
    let types: Vec<&str> = schema.columns.iter().map(|c| c.ty.as_str()).collect();
    assert_eq!(types, ["int", "text", "decimal", "date", "text"]);
    assert_eq!(schema.columns[0].name, "ma", "the BOM is not part of the first name");
    assert_eq!(rows[0], r#"{"ma":1,"ten":"Nguyễn Văn Ánh","so_tien":"1234.50","ngay":"2026-01-05","ma_xa":"007"}"#);
    assert_eq!(rows[1], r#"{"ma":2,"ten":"Lò Thị Hồng, Sơn La","so_tien":null,"ngay":"2026-02-01","ma_xa":"012"}"#);
}

#[test]
fn malformed_files_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), "*.csv");
    let cases: [(&[u8], &str); 5] = [
        (b"ma,ten\n1,a\n2,b,c\n", "line 3: 3 fields"),
        (b"ma,ten\n1,a\n2,\xff\xfe\n", "line 3, column \"ten\": text is not UTF-8"),
        (b"ma,ten\n1,a\n1,b\n", "line 3: duplicate key [1]"),
        (b"ma,ten\n1,a\n,b\n", "line 3: key column \"ma\" is empty"),
        (b"ma,ma\n1,a\n", "appears twice"),
    ];
    for (i, (content, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&p, content).unwrap();
        let mut src = FolderSource::open("ds", &c, &TextConfig::default(), &p).unwrap();
        let err = read_all(&mut src, &["ma"]).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("dataset ds") && err.contains(&format!("bad{i}.csv")), "{err}");
    }
}

#[test]
fn declared_types_override_inference() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    std::fs::write(&p, "ma;ngay;so\n007;05/01/2026;12\n").unwrap();
    let mut c = cfg(dir.path(), "*.csv");
    c.delimiter = Some(';');
    c.types.insert("ngay".into(), ColumnType::Date);
    c.types.insert("so".into(), ColumnType::Decimal);
    let mut src = FolderSource::open("d", &c, &TextConfig::default(), &p).unwrap();
    let (_, rows) = read_all(&mut src, &["ma"]).unwrap();
    assert_eq!(rows[0], r#"{"ma":"007","ngay":"2026-01-05","so":"12"}"#);
}

#[test]
fn xlsx_cells_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.xlsx");
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    for (i, h) in ["ma", "ten", "so_tien", "ngay", "dung"].iter().enumerate() {
        ws.write_string(0, i as u16, *h).unwrap();
    }
    let fmt = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd");
    ws.write_number(1, 0, 1.0).unwrap();
    ws.write_string(1, 1, "Điện Biên Phủ").unwrap();
    ws.write_number(1, 2, 1234.5).unwrap();
    let d = rust_xlsxwriter::ExcelDateTime::from_ymd(2026, 1, 5).unwrap();
    ws.write_datetime_with_format(1, 3, &d, &fmt).unwrap();
    ws.write_boolean(1, 4, true).unwrap();
    wb.save(&p).unwrap();
    let c = cfg(dir.path(), "*.xlsx");
    let mut src = FolderSource::open("d", &c, &TextConfig::default(), &p).unwrap();
    let (schema, rows) = read_all(&mut src, &["ma"]).unwrap();
    let types: Vec<&str> = schema.columns.iter().map(|c| c.ty.as_str()).collect();
    assert_eq!(types, ["int", "text", "decimal", "date", "bool"]);
    assert_eq!(rows[0], r#"{"ma":1,"ten":"Điện Biên Phủ","so_tien":"1234.5","ngay":"2026-01-05","dung":true}"#);
}
