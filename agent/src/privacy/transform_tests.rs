#![allow(clippy::unwrap_used)]
use super::*;
use crate::detect::encode::RowEncoder;
use crate::privacy::config::ColumnPolicy;
use crate::source::{RowView, SourceError};
use kho_shared::protocol::Column;

const SECRET: &str = "v1:0123456789abcdef0123456789abcdef";

fn one(op: Op, ty: ColumnType, cell: Cell<'_>) -> String {
    let key = PseudonymKey::parse(SECRET).unwrap();
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    write(&mut out, &mut scratch, &op, Some(&key), ty, cell);
    String::from_utf8(out).unwrap()
}

#[test]
fn generalisation_and_masking_are_exact() {
    assert_eq!(one(Op::Year, ColumnType::Date, Cell::Text(b"1990-05-12")), "1990");
    assert_eq!(one(Op::Year, ColumnType::Text, Cell::Text(b"12/05/1987")), "1987");
    assert_eq!(one(Op::Year, ColumnType::Timestamp, Cell::Text(b"2001-02-03T04:05:06Z")), "2001");
    assert_eq!(one(Op::Year, ColumnType::Timestamp, Cell::Int(0)), "1970");
    assert_eq!(one(Op::Month, ColumnType::Date, Cell::Text(b"1990-05-12")), "\"1990-05\"");
    assert_eq!(one(Op::Year, ColumnType::Text, Cell::Text(b"not a date")), "null", "unreadable → null, never raw");
    let addr = "Số 12, Bản Mòng, Xã Hua La, Thành phố Sơn La, Sơn La";
    assert_eq!(one(Op::Address(2), ColumnType::Text, Cell::Text(addr.as_bytes())), "\"Thành phố Sơn La, Sơn La\"");
    assert_eq!(one(Op::Address(9), ColumnType::Text, Cell::Text("Sơn La".as_bytes())), "\"Sơn La\"");
    let bounds = vec![0.0, 1_000_000.0, 5_000_000.0];
    assert_eq!(one(Op::Range(bounds.clone()), ColumnType::Int, Cell::Int(2_500_000)), "\"[1000000,5000000)\"");
    assert_eq!(one(Op::Range(bounds.clone()), ColumnType::Decimal, Cell::Text(b"999999.5")), "\"[0,1000000)\"");
    assert_eq!(one(Op::Range(bounds.clone()), ColumnType::Int, Cell::Int(5_000_000)), "\">=5000000\"");
    assert_eq!(one(Op::Range(bounds), ColumnType::Int, Cell::Int(-1)), "\"<0\"");
    assert_eq!(one(Op::Mask(3), ColumnType::Text, Cell::Text(b"0912345678")), "\"*******678\"");
    assert_eq!(one(Op::Mask(3), ColumnType::Text, Cell::Text(b"678")), "\"***\"", "too short: hidden entirely");
    assert_eq!(one(Op::Mask(3), ColumnType::Text, Cell::Null), "null");
}

#[test]
fn tokens_do_not_depend_on_the_source_type() {
    let key = PseudonymKey::parse(SECRET).unwrap();
    let text = one(Op::Pseudonymise, ColumnType::Text, Cell::Text(b" 001090012345 "));
    assert_eq!(text, format!("\"{}\"", key.token("001090012345")));
    assert_eq!(one(Op::Pseudonymise, ColumnType::Int, Cell::Int(42)), format!("\"{}\"", key.token("42")));
    assert_eq!(one(Op::Pseudonymise, ColumnType::Text, Cell::Null), "null");
}

struct Row(Vec<Cell<'static>>);
impl RowView for Row {
    fn cell(&self, idx: usize) -> Result<Cell<'_>, SourceError> {
        Ok(self.0[idx])
    }
}

fn policy(class: &str, action: &str, extra: &str) -> ColumnPolicy {
    toml::from_str(&format!("class = \"{class}\"\naction = \"{action}\"\n{extra}")).unwrap()
}

#[test]
fn a_plan_drops_transforms_and_keys_rows_by_token() {
    let source = DatasetSchema {
        dataset: "cong_dan".into(),
        key: vec!["so_cccd".into()],
        columns: vec![
            Column { name: "so_cccd".into(), ty: ColumnType::Text },
            Column { name: "ho_ten".into(), ty: ColumnType::Text },
            Column { name: "ngay_sinh".into(), ty: ColumnType::Date },
            Column { name: "benh_an".into(), ty: ColumnType::Text },
            Column { name: "xa".into(), ty: ColumnType::Text },
        ],
        privacy: BTreeMap::new(),
    };
    let mut columns = Columns::default();
    columns.policies.insert("so_cccd".into(), policy("personal", "pseudonymise", ""));
    columns.policies.insert("ho_ten".into(), policy("personal", "drop", ""));
    columns.policies.insert("ngay_sinh".into(), policy("personal", "generalise", "to = \"year\""));
    columns.policies.insert("benh_an".into(), policy("sensitive", "drop", ""));
    let key = PseudonymKey::parse(SECRET).unwrap();
    let plan = Plan::new(&columns, &source, Ok(Some(key.clone()))).unwrap();
    let names: Vec<&str> = plan.schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["so_cccd", "ngay_sinh", "xa"]);
    assert_eq!(plan.schema.columns[1].ty, ColumnType::Int);
    assert_eq!(plan.schema.privacy.len(), 4, "dropped columns are still declared to the hub");
    assert_eq!(plan.schema.privacy["benh_an"].class, "sensitive");
    assert_eq!(plan.schema.privacy["benh_an"].action, "drop");
    plan.schema.validate().unwrap();

    let mut enc = RowEncoder::with_plan(&source, &plan);
    let row = Row(vec![
        Cell::Text(b"001090012345"),
        Cell::Text("Nguyễn Văn An".as_bytes()),
        Cell::Text(b"1990-05-12"),
        Cell::Text("viêm gan B".as_bytes()),
        Cell::Text("Chiềng Cơi".as_bytes()),
    ]);
    enc.encode(&row).unwrap();
    let token = key.token("001090012345");
    let out = String::from_utf8(enc.row().to_vec()).unwrap();
    assert_eq!(out, format!(r#"{{"so_cccd":"{token}","ngay_sinh":1990,"xa":"Chiềng Cơi"}}"#));
    assert_eq!(String::from_utf8(enc.key_object().to_vec()).unwrap(), format!(r#"{{"so_cccd":"{token}"}}"#));
    for raw in ["001090012345", "Nguyễn", "1990-05-12", "viêm gan"] {
        assert!(!out.contains(raw) && !String::from_utf8_lossy(enc.key_array()).contains(raw), "{raw} leaked");
    }

    // Errors name the dataset and column, and never need the secret.
    columns.policies.insert("khong_co".into(), policy("public", "keep", ""));
    assert!(matches!(Plan::new(&columns, &source, Ok(None)), Err(PlanError::UnknownColumn { .. })));
    columns.policies.remove("khong_co");
    let err = Plan::new(&columns, &source, Err("KHO_KEY is not set".into())).unwrap_err();
    assert!(err.to_string().contains("KHO_KEY is not set"), "{err}");
}
