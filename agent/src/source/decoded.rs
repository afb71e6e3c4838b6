//! A database or API source whose text values pass through [`super::text::convert`]: each
//! text (and JSON) column decoded from its declared encoding and normalised to NFC, as the
//! dataset's `[dataset.text]` says.
//!
//! The wrapper sits between any [`Source`] and capture, so every database source gets the same
//! treatment. Rows whose text needs no change (the usual case: UTF-8 already in NFC) are handed
//! on untouched; only a row with a changed value is copied into a reused [`RowBuf`]. The cursor
//! column is never rewritten: its value is bound back into the source's own query, so it must stay
//! exactly as the source returned it. Text that is not valid UTF-8 in a UTF-8 column is passed on
//! as it was (the encoder reports it), never altered silently.

use std::ops::ControlFlow;

use kho_shared::protocol::DatasetSchema;
use kho_shared::types::ColumnType;

use super::row::RowBuf;
use super::text::{self, Encoding, Origin, TextConfig};
use super::{Cell, RowView, ScanRange, Source, SourceError};

/// A source whose text is decoded and normalised.
pub struct Decoded {
    inner: Box<dyn Source>,
    text: TextConfig,
    origin: Origin,
    cursor: Option<String>,
    row: RowBuf,
    replaced: Vec<Option<String>>,
}

impl Decoded {
    /// Wraps `inner`, whose text arrives as `origin` says.
    pub fn new(inner: Box<dyn Source>, text: TextConfig, origin: Origin) -> Decoded {
        Decoded { inner, text, origin, cursor: None, row: RowBuf::default(), replaced: Vec::new() }
    }
}

impl Source for Decoded {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        self.cursor = cursor.map(str::to_string);
        self.inner.discover(key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        let plan: Vec<Option<Encoding>> = schema
            .columns
            .iter()
            .map(|c| {
                let texty = matches!(c.ty, ColumnType::Text | ColumnType::Json);
                (texty && self.cursor.as_deref() != Some(c.name.as_str())).then(|| self.text.encoding_of(&c.name))
            })
            .collect();
        let (origin, nfc) = (self.origin, self.text.nfc);
        let mut row = std::mem::take(&mut self.row);
        let mut replaced = std::mem::take(&mut self.replaced);
        replaced.resize(plan.len(), None);
        let mut failure: Option<SourceError> = None;
        let result = self.inner.scan(schema, range, &mut |r| {
            let mut changed = false;
            for (i, enc) in plan.iter().enumerate() {
                replaced[i] = None;
                let Some(enc) = enc else { continue };
                let cell = match r.cell(i) {
                    Ok(c) => c,
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                };
                if let Cell::Text(bytes) = cell
                    && let Ok(std::borrow::Cow::Owned(s)) = text::convert(*enc, origin, nfc, bytes)
                {
                    replaced[i] = Some(s);
                    changed = true;
                }
            }
            if !changed {
                return visit(r);
            }
            row.clear();
            for (i, new) in replaced.iter().enumerate() {
                match (new, r.cell(i)) {
                    (Some(s), _) => row.push_text(s.as_bytes()),
                    (None, Ok(Cell::Null)) => row.push_null(),
                    (None, Ok(Cell::Int(v))) => row.push_int(v),
                    (None, Ok(Cell::Real(v))) => row.push_real(v),
                    (None, Ok(Cell::Text(t))) => row.push_text(t),
                    (None, Ok(Cell::Blob(b))) => row.push_blob(b),
                    (None, Err(e)) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
            }
            visit(&row)
        });
        self.row = row;
        self.replaced = replaced;
        result?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn count_null(&mut self, column: &str) -> Result<u64, SourceError> {
        self.inner.count_null(column)
    }

    fn describe(&self) -> Option<String> {
        self.inner.describe()
    }
}
