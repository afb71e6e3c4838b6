//! The data of one `COPY … FROM STDIN`: rows of checked cells, in binary form ([`binary`]) or,
//! for a table an operator has altered, in text form. Pure.
//!
//! Binary is the normal case and the fast one (docs/ARCHITECTURE.md, *Why binary `COPY`*). But a
//! binary field must be exactly its column's type: after an operator changes a column Kho created
//! (`bigint` to `integer`, `timestamptz` to `timestamp`, …) the server would refuse the `bigint`'s
//! eight bytes, or read a `timestamptz`'s microseconds as local time. Text goes through the
//! column's own input function, as any client's `COPY` would, so such a table keeps loading; the
//! writer picks the form per batch by reading the table's column types ([`Format`]).

use super::binary;
use super::values::{self, Cell};

/// How a dataset's rows are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    Text,
}

impl Format {
    /// The `COPY` options for this form.
    pub fn options(self) -> &'static str {
        match self {
            Format::Binary => " WITH (FORMAT binary)",
            Format::Text => "",
        }
    }
}

/// `COPY` data being written.
pub struct CopyData {
    format: Format,
    buf: Vec<u8>,
    /// Fields written in the current row (text form: where the tabs go).
    fields: usize,
    /// Where the current row's field count goes (binary form), filled in when it ends.
    row_start: usize,
    scratch: String,
}

impl CopyData {
    pub fn new(format: Format, capacity: usize) -> CopyData {
        let mut buf = Vec::with_capacity(capacity);
        if format == Format::Binary {
            buf.extend_from_slice(binary::HEADER);
        }
        CopyData { format, buf, fields: 0, row_start: 0, scratch: String::new() }
    }

    /// Starts a row.
    pub fn row(&mut self) {
        self.fields = 0;
        self.row_start = self.buf.len();
        if self.format == Format::Binary {
            binary::row(&mut self.buf, 0);
        }
    }

    /// Ends the current row: in binary, its field count is the fields written since [`Self::row`].
    pub fn end_row(&mut self) {
        match self.format {
            Format::Binary => {
                let mut count = Vec::with_capacity(2);
                binary::row(&mut count, self.fields);
                self.buf[self.row_start..self.row_start + 2].copy_from_slice(&count);
            }
            Format::Text => self.buf.push(b'\n'),
        }
    }

    /// Before a field: the tab between text fields.
    fn next_field(&mut self) {
        if self.format == Format::Text && self.fields > 0 {
            self.buf.push(b'\t');
        }
        self.fields += 1;
    }

    /// Appends text (escaped for the text form) as the current field.
    fn put_text(&mut self, write: impl FnOnce(&mut String)) {
        self.scratch.clear();
        write(&mut self.scratch);
        self.buf.extend_from_slice(self.scratch.as_bytes());
    }

    pub fn null(&mut self) {
        self.next_field();
        match self.format {
            Format::Binary => binary::null(&mut self.buf),
            Format::Text => self.buf.extend_from_slice(b"\\N"),
        }
    }

    pub fn cell(&mut self, cell: &Cell) {
        self.next_field();
        match self.format {
            Format::Binary => binary::cell(&mut self.buf, cell),
            Format::Text => self.put_text(|s| values::write_text(s, cell)),
        }
    }

    pub fn int8(&mut self, n: i64) {
        self.cell(&Cell::Int(n));
    }

    pub fn boolean(&mut self, b: bool) {
        self.cell(&Cell::Bool(b));
    }

    pub fn text(&mut self, s: &str) {
        self.cell(&Cell::Text(s.into()));
    }

    /// A `timestamptz` field: `micros` since 2000-01-01 in binary, `rfc3339` in text.
    pub fn timestamp(&mut self, micros: i64, rfc3339: &str) {
        self.next_field();
        match self.format {
            Format::Binary => binary::timestamp(&mut self.buf, micros),
            Format::Text => self.put_text(|s| values::escape_into(s, rfc3339)),
        }
    }

    /// A `jsonb` field of NUL-free JSON text ([`values::json_text`]).
    pub fn jsonb(&mut self, json: &str) {
        self.next_field();
        match self.format {
            Format::Binary => binary::jsonb(&mut self.buf, json),
            Format::Text => self.put_text(|s| values::escape_into(s, json)),
        }
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the bytes written so far (they have been sent).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Ends the data.
    pub fn finish(&mut self) {
        if self.format == Format::Binary {
            self.buf.extend_from_slice(binary::TRAILER);
        }
    }
}

/// The type `format_type()` names for a column Kho created with the type of `ty`.
pub fn format_type_name(ty: kho_shared::types::ColumnType) -> &'static str {
    match values::pg_type(ty) {
        "timestamptz" => "timestamp with time zone",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_row(format: Format) -> Vec<u8> {
        let mut d = CopyData::new(format, 64);
        d.row();
        d.int8(7);
        d.text("a\tb");
        d.null();
        d.boolean(true);
        d.jsonb("{\"k\":\"x\\ny\"}");
        d.end_row();
        d.finish();
        d.bytes().to_vec()
    }

    #[test]
    fn text_rows_are_tab_separated_and_escaped() {
        assert_eq!(String::from_utf8(one_row(Format::Text)).expect("utf-8"), "7\ta\\tb\t\\N\tt\t{\"k\":\"x\\\\ny\"}\n");
    }

    #[test]
    fn binary_rows_have_header_count_fields_and_trailer() {
        let data = one_row(Format::Binary);
        assert!(data.starts_with(binary::HEADER));
        let body = &data[binary::HEADER.len()..];
        assert_eq!(&body[..2], &[0, 5]);
        assert_eq!(&body[2..14], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert!(data.ends_with(binary::TRAILER));
    }
}
