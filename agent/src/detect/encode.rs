//! Canonical row and key encoding (pure).
//!
//! A row's canonical encoding is the JSON object of its columns in schema order, with values in
//! the portable encoding of [`kho_shared::types`]; it is both what goes on the wire and what is
//! hashed, so "the row hash changed" means exactly "the hub would receive different data". A key's
//! canonical encoding is the JSON array of its key values in key order. The encoder reuses its
//! buffers from row to row, so streaming a table allocates nothing per row.
//!
//! An encoder built [`RowEncoder::with_plan`] applies the dataset's personal-data plan
//! ([`crate::privacy`]) while encoding: the row, its key and both hashes are those of the
//! transformed values, so no raw value of a protected column is ever written anywhere.

use std::io::Write;

use base64::Engine;
use kho_shared::hash::{self, KeyHash, RowHash};
use kho_shared::protocol::DatasetSchema;
use kho_shared::types::ColumnType;

use crate::source::{Cell, RowView, SourceError};

/// Encodes rows of one schema.
#[derive(Debug)]
pub struct RowEncoder {
    types: Vec<ColumnType>,
    /// `"name":` for each column, pre-encoded.
    names: Vec<Vec<u8>>,
    /// Schema index of each key column, in key order.
    key_idx: Vec<usize>,
    spans: Vec<(usize, usize)>,
    row: Vec<u8>,
    key_array: Vec<u8>,
    key_object: Vec<u8>,
    /// Personal-data plan: source index and transform of each output column; `None` when every
    /// column is sent as read.
    plan: Option<Box<PlanState>>,
}

#[derive(Debug)]
struct PlanState {
    src: Vec<usize>,
    ops: Vec<crate::privacy::transform::Op>,
    source_types: Vec<ColumnType>,
    key: Option<kho_shared::pseudonym::PseudonymKey>,
    scratch: Vec<u8>,
}

impl RowEncoder {
    /// An encoder for `schema` (whose key columns are known to exist).
    pub fn new(schema: &DatasetSchema) -> RowEncoder {
        let names = schema
            .columns
            .iter()
            .map(|c| {
                let mut v = serde_json::to_vec(&c.name).unwrap_or_default();
                v.push(b':');
                v
            })
            .collect();
        let key_idx = schema.key.iter().filter_map(|k| schema.columns.iter().position(|c| &c.name == k)).collect();
        RowEncoder {
            types: schema.columns.iter().map(|c| c.ty).collect(),
            names,
            key_idx,
            spans: Vec::with_capacity(schema.columns.len()),
            row: Vec::with_capacity(1024),
            key_array: Vec::with_capacity(64),
            key_object: Vec::with_capacity(64),
            plan: None,
        }
    }

    /// An encoder that writes rows of `source` (the source's schema) transformed by `plan`
    /// (its names, types and key are the plan's output schema).
    pub fn with_plan(source: &DatasetSchema, plan: &crate::privacy::Plan) -> RowEncoder {
        let mut enc = RowEncoder::new(&plan.schema);
        if !plan.is_identity() {
            enc.plan = Some(Box::new(PlanState {
                src: plan.src.clone(),
                ops: plan.ops.clone(),
                source_types: source.columns.iter().map(|c| c.ty).collect(),
                key: plan.key.clone(),
                scratch: Vec::new(),
            }));
        }
        enc
    }

    /// Encodes `row`; the results stay available until the next call.
    pub fn encode(&mut self, row: &dyn RowView) -> Result<(), SourceError> {
        self.row.clear();
        self.spans.clear();
        self.row.push(b'{');
        for (i, ty) in self.types.iter().enumerate() {
            if i > 0 {
                self.row.push(b',');
            }
            self.row.extend_from_slice(&self.names[i]);
            let start = self.row.len();
            match self.plan.as_deref_mut() {
                None => write_value(&mut self.row, *ty, row.cell(i)?),
                Some(p) => {
                    let (src, op) = (p.src[i], &p.ops[i]);
                    let cell = row.cell(src)?;
                    if *op == crate::privacy::transform::Op::Keep {
                        write_value(&mut self.row, *ty, cell);
                    } else {
                        let source_ty = p.source_types[src];
                        crate::privacy::transform::write(
                            &mut self.row,
                            &mut p.scratch,
                            op,
                            p.key.as_ref(),
                            source_ty,
                            cell,
                        );
                    }
                }
            }
            self.spans.push((start, self.row.len()));
        }
        self.row.push(b'}');

        self.key_array.clear();
        self.key_object.clear();
        self.key_array.push(b'[');
        self.key_object.push(b'{');
        for (n, &i) in self.key_idx.iter().enumerate() {
            if n > 0 {
                self.key_array.push(b',');
                self.key_object.push(b',');
            }
            let (s, e) = self.spans[i];
            self.key_array.extend_from_slice(&self.row[s..e]);
            self.key_object.extend_from_slice(&self.names[i]);
            self.key_object.extend_from_slice(&self.row[s..e]);
        }
        self.key_array.push(b']');
        self.key_object.push(b'}');
        Ok(())
    }

    /// The canonical row: a JSON object in schema order.
    pub fn row(&self) -> &[u8] {
        &self.row
    }

    /// The canonical key: a JSON array of the key values in key order.
    pub fn key_array(&self) -> &[u8] {
        &self.key_array
    }

    /// The key as a JSON object (what a delete carries).
    pub fn key_object(&self) -> &[u8] {
        &self.key_object
    }

    /// Whether any key column is NULL (such a row cannot be addressed by the hub).
    pub fn key_has_null(&self) -> bool {
        self.key_idx.iter().any(|&i| {
            let (s, e) = self.spans[i];
            &self.row[s..e] == b"null"
        })
    }

    pub fn row_hash(&self) -> RowHash {
        hash::row_hash(&self.row)
    }

    pub fn key_hash(&self) -> KeyHash {
        hash::key_hash(&self.key_array)
    }
}

/// Writes one value in the portable JSON encoding of column type `ty`.
pub fn write_value(out: &mut Vec<u8>, ty: ColumnType, cell: Cell<'_>) {
    // Writes into a Vec cannot fail; the `.ok()`s below only discard an impossible io::Error.
    match cell {
        Cell::Null => out.extend_from_slice(b"null"),
        Cell::Int(i) => match ty {
            ColumnType::Bool => out.extend_from_slice(if i != 0 { b"true" } else { b"false" }),
            ColumnType::Decimal => {
                write!(out, "\"{i}\"").ok();
            }
            _ => {
                write!(out, "{i}").ok();
            }
        },
        Cell::Real(f) => {
            if f.is_nan() {
                out.extend_from_slice(b"\"NaN\"");
            } else if f.is_infinite() {
                out.extend_from_slice(if f > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" });
            } else if ty == ColumnType::Decimal {
                // Decimals travel as exact digit strings; Display prints the shortest round-trip
                // digits without an exponent.
                write!(out, "\"{f}\"").ok();
            } else {
                serde_json::to_writer(&mut *out, &f).ok();
            }
        }
        Cell::Text(t) => {
            // Validate (fast, usually) and only fall back to the lossy copy for broken bytes.
            let s = match std::str::from_utf8(t) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(t),
            };
            if ty == ColumnType::Json && serde_json::from_str::<serde::de::IgnoredAny>(&s).is_ok() {
                out.extend_from_slice(s.as_bytes());
            } else {
                serde_json::to_writer(&mut *out, s.as_ref()).ok();
            }
        }
        Cell::Blob(b) => {
            out.push(b'"');
            let start = out.len();
            let len = base64::encoded_len(b.len(), true).unwrap_or(0);
            out.resize(start + len, 0);
            let written = base64::engine::general_purpose::STANDARD.encode_slice(b, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kho_shared::protocol::Column;

    fn enc(ty: ColumnType, cell: Cell<'_>) -> String {
        let mut v = Vec::new();
        write_value(&mut v, ty, cell);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn values_follow_the_portable_encoding() {
        assert_eq!(enc(ColumnType::Int, Cell::Int(-42)), "-42");
        assert_eq!(enc(ColumnType::Bool, Cell::Int(1)), "true");
        assert_eq!(enc(ColumnType::Bool, Cell::Int(0)), "false");
        assert_eq!(enc(ColumnType::Timestamp, Cell::Int(1_700_000_000)), "1700000000");
        assert_eq!(enc(ColumnType::Float, Cell::Real(0.1)), "0.1");
        assert_eq!(enc(ColumnType::Float, Cell::Real(f64::NAN)), "\"NaN\"");
        assert_eq!(enc(ColumnType::Float, Cell::Real(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(enc(ColumnType::Decimal, Cell::Int(50_000)), "\"50000\"");
        assert_eq!(enc(ColumnType::Decimal, Cell::Real(12.5)), "\"12.5\"");
        assert_eq!(enc(ColumnType::Text, Cell::Text("Hồ sơ \"A\"\n".as_bytes())), "\"Hồ sơ \\\"A\\\"\\n\"");
        assert_eq!(enc(ColumnType::Bytes, Cell::Blob(&[0, 1, 2, 255])), "\"AAEC/w==\"");
        assert_eq!(enc(ColumnType::Json, Cell::Text(br#"{"a":[1,2]}"#)), r#"{"a":[1,2]}"#);
        assert_eq!(enc(ColumnType::Json, Cell::Text(b"not json")), "\"not json\"");
        assert_eq!(enc(ColumnType::Text, Cell::Null), "null");
    }

    struct Row(Vec<Cell<'static>>);
    impl RowView for Row {
        fn cell(&self, idx: usize) -> Result<Cell<'_>, SourceError> {
            Ok(self.0[idx])
        }
    }

    #[test]
    fn rows_and_keys_are_canonical() {
        let schema = DatasetSchema {
            privacy: Default::default(),
            dataset: "d".into(),
            key: vec!["b".into(), "a".into()],
            columns: vec![
                Column { name: "a".into(), ty: ColumnType::Int },
                Column { name: "b".into(), ty: ColumnType::Text },
                Column { name: "c".into(), ty: ColumnType::Float },
            ],
        };
        let mut e = RowEncoder::new(&schema);
        e.encode(&Row(vec![Cell::Int(7), Cell::Text(b"x"), Cell::Null])).unwrap();
        assert_eq!(std::str::from_utf8(e.row()).unwrap(), r#"{"a":7,"b":"x","c":null}"#);
        assert_eq!(std::str::from_utf8(e.key_object()).unwrap(), r#"{"b":"x","a":7}"#);
        assert_eq!(e.key_hash(), hash::key_hash(br#"["x",7]"#));
        assert_eq!(e.row_hash(), hash::row_hash(br#"{"a":7,"b":"x","c":null}"#));
        assert!(!e.key_has_null());
        let parsed: serde_json::Value = serde_json::from_slice(e.row()).unwrap();
        assert_eq!(parsed["a"], 7);
    }
}
