//! Download encoders (pure): row chunks in, bytes out, so a download is written as it is read.
//!
//! - CSV: RFC 4180 through the `csv` crate, a header of column names, NULL as an empty field,
//!   JSON values as compact JSON text; optionally a UTF-8 byte order mark (`?bom=true`) so that
//!   Excel shows Vietnamese text correctly.
//! - JSON: the shape of CKAN's datastore dump, `{"fields": [{id, type}], "records": [{…}, …]}`,
//!   one record per line.

use kho_shared::protocol::Column;
use serde_json::Value;

use super::ckan::{Format, fields};
use crate::warehouse::rows::RowChunk;

/// Turns row chunks into the bytes of one download.
pub struct Encoder {
    format: Format,
    bom: bool,
    columns: Vec<Column>,
    started: bool,
    first_record: bool,
}

impl Encoder {
    pub fn new(format: Format, bom: bool) -> Encoder {
        Encoder { format, bom, columns: Vec::new(), started: false, first_record: true }
    }

    /// The bytes for one chunk.
    pub fn chunk(&mut self, chunk: RowChunk) -> Vec<u8> {
        match chunk {
            RowChunk::Header { columns, .. } => {
                self.columns = columns;
                self.start()
            }
            RowChunk::Rows(rows) => match self.format {
                Format::Csv => self.csv_rows(&rows),
                Format::Json => self.json_rows(&rows),
            },
        }
    }

    /// The closing bytes (and the opening ones, if no header ever came: a dataset with no table).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = if self.started { Vec::new() } else { self.start() };
        if self.format == Format::Json {
            out.extend_from_slice(b"\n]}\n");
        }
        out
    }

    fn start(&mut self) -> Vec<u8> {
        self.started = true;
        match self.format {
            Format::Csv => {
                let mut out = if self.bom { "\u{feff}".as_bytes().to_vec() } else { Vec::new() };
                if !self.columns.is_empty() {
                    out.extend(csv_record(self.columns.iter().map(|c| c.name.clone())));
                }
                out
            }
            Format::Json => format!("{{\"fields\": {},\n\"records\": [", fields(&self.columns)).into_bytes(),
        }
    }

    fn csv_rows(&self, rows: &[Vec<Value>]) -> Vec<u8> {
        let mut out = Vec::new();
        for row in rows {
            out.extend(csv_record(row.iter().map(csv_field)));
        }
        out
    }

    fn json_rows(&mut self, rows: &[Vec<Value>]) -> Vec<u8> {
        let mut out = Vec::new();
        for row in rows {
            out.extend_from_slice(if self.first_record { b"\n" } else { b",\n" });
            self.first_record = false;
            let record: serde_json::Map<String, Value> =
                self.columns.iter().zip(row).map(|(c, v)| (c.name.clone(), v.clone())).collect();
            out.extend(Value::Object(record).to_string().into_bytes());
        }
        out
    }
}

fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_record(fields: impl Iterator<Item = String>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = w.write_record(fields.collect::<Vec<_>>());
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use kho_shared::types::ColumnType;
    use serde_json::json;

    use super::*;

    fn header() -> RowChunk {
        RowChunk::Header {
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::Int },
                Column { name: "ten".into(), ty: ColumnType::Text },
                Column { name: "ok".into(), ty: ColumnType::Bool },
            ],
            total: None,
        }
    }

    fn rows() -> RowChunk {
        RowChunk::Rows(vec![
            vec![json!(1), json!("Sở Y tế, \"Sơn La\""), json!(true)],
            vec![json!(2), Value::Null, json!(false)],
        ])
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut e = Encoder::new(Format::Csv, false);
        let mut out = e.chunk(header());
        out.extend(e.chunk(rows()));
        out.extend(e.finish());
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "id,ten,ok\r\n1,\"Sở Y tế, \"\"Sơn La\"\"\",true\r\n2,,false\r\n"
        );
        let mut bom = Encoder::new(Format::Csv, true);
        assert!(bom.chunk(header()).starts_with("\u{feff}id,".as_bytes()));
    }

    #[test]
    fn json_is_a_datastore_dump_even_when_split_or_empty() {
        let mut e = Encoder::new(Format::Json, false);
        let mut out = e.chunk(header());
        out.extend(e.chunk(rows()));
        out.extend(e.chunk(rows()));
        out.extend(e.finish());
        let doc: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(doc["fields"][1], json!({"id": "ten", "type": "text"}));
        assert_eq!(doc["records"].as_array().map(Vec::len), Some(4));
        assert_eq!(doc["records"][1], json!({"id": 2, "ten": null, "ok": false}));
        let mut empty = Encoder::new(Format::Json, false);
        let doc: Value = serde_json::from_slice(&empty.finish()).expect("valid JSON");
        assert_eq!(doc, json!({"fields": [], "records": []}));
    }
}
