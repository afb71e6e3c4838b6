//! Row messages → outbox changes for one CDC dataset.
//!
//! A [`Table`] is built from the latest Relation message: column types, the dataset's schema and
//! where the key columns sit. Each insert or update becomes an upsert of the full new row, each
//! delete a delete of its key, an update that changed the key both. The snapshot row hashes
//! (`snapshot_rows`) are kept current in the same chunk, so a later `resnapshot` compares against
//! what the warehouse really holds and can delete rows that vanished while the stream was lost.

use ::postgres::types::Type;
use kho_shared::protocol::{Column, DatasetSchema, Op};
use kho_shared::types::ColumnType;

use super::super::encode::RowEncoder;
use super::super::{Capture, DetectError};
use crate::source::postgres::cdc::CdcError;
use crate::source::postgres::cdc::pgoutput::{Relation, Value, text_value};
use crate::source::postgres::decode::PgKind;
use crate::source::row::RowBuf;
use crate::source::text::{Encoding, Origin, TextConfig, convert};

/// The table as the stream currently describes it.
pub struct Table {
    pub relation: Relation,
    pub kinds: Vec<PgKind>,
    pub schema: DatasetSchema,
    enc: RowEncoder,
    buf: RowBuf,
    old_key: Vec<u8>,
    /// Per column: the `[dataset.text]` encoding of a text / JSON column (`None`: not text).
    text_plan: Vec<Option<Encoding>>,
    nfc: bool,
}

impl Table {
    /// The table of `relation` for `dataset` with key columns `key`; text is decoded and
    /// normalised as `text` says, like the snapshot's [`crate::source::decoded::Decoded`].
    pub fn new(dataset: &str, key: &[String], text: &TextConfig, relation: Relation) -> Result<Table, DetectError> {
        let kinds: Vec<PgKind> = relation
            .columns
            .iter()
            .map(|c| Type::from_oid(c.type_oid).map_or(PgKind::AsText, |t| PgKind::of(&t)))
            .collect();
        let columns = relation
            .columns
            .iter()
            .zip(&kinds)
            .map(|(c, k)| Column { name: c.name.clone(), ty: k.portable() })
            .collect();
        let schema = crate::source::check_schema(dataset, columns, key, None)?;
        let enc = RowEncoder::new(&schema);
        let text_plan = schema
            .columns
            .iter()
            .map(|c| matches!(c.ty, ColumnType::Text | ColumnType::Json).then(|| text.encoding_of(&c.name)))
            .collect();
        Ok(Table {
            relation,
            kinds,
            schema,
            enc,
            buf: RowBuf::default(),
            old_key: Vec::new(),
            text_plan,
            nfc: text.nfc,
        })
    }

    /// Decodes `values` (falling back to `old` for unchanged TOASTed columns) into the row buffer.
    fn decode(&mut self, dataset: &str, values: &[Value<'_>], old: Option<&[Value<'_>]>) -> Result<(), CdcError> {
        let bad = |problem: String| CdcError::Decode { dataset: dataset.to_string(), problem };
        if values.len() != self.kinds.len() {
            return Err(bad(format!(
                "a row has {} values but table {} has {} columns",
                values.len(),
                self.relation.name,
                self.kinds.len()
            )));
        }
        self.buf.clear();
        for (i, v) in values.iter().enumerate() {
            let v = match (v, old.and_then(|o| o.get(i))) {
                (Value::Unchanged, Some(prev @ Value::Text(_))) => prev,
                (Value::Unchanged, _) => {
                    return Err(bad(format!(
                        "column {} of {}.{} kept a large (TOASTed) value the WAL does not repeat; run \
                         ALTER TABLE {}.{} REPLICA IDENTITY FULL so updates carry it, then `{}`",
                        self.relation.columns[i].name,
                        self.relation.namespace,
                        self.relation.name,
                        self.relation.namespace,
                        self.relation.name,
                        crate::source::postgres::cdc::recovery_command(dataset)
                    )));
                }
                (v, _) => v,
            };
            match v {
                Value::Null => self.buf.push_null(),
                Value::Text(t) => match self.text_plan[i].map(|enc| convert(enc, Origin::Unicode, self.nfc, t)) {
                    Some(Ok(s)) => self.buf.push_text(s.as_bytes()),
                    // Not UTF-8 in a UTF-8 column: passed on as it is (the encoder reports it).
                    Some(Err(_)) => self.buf.push_text(t),
                    None => text_value(self.kinds[i], t, &mut self.buf)
                        .map_err(|p| bad(format!("column {}: {p}", self.relation.columns[i].name)))?,
                },
                Value::Binary(_) | Value::Unchanged => {
                    return Err(bad(format!("column {}: unexpected value format", self.relation.columns[i].name)));
                }
            }
        }
        self.enc.encode(&self.buf).map_err(|e| bad(e.to_string()))?;
        if self.enc.key_has_null() {
            return Err(bad(format!(
                "a row of {}.{} has a NULL key column; the dataset key ({}) must be the table's primary key / \
                 replica identity (or set REPLICA IDENTITY FULL)",
                self.relation.namespace,
                self.relation.name,
                self.schema.key.join(", ")
            )));
        }
        Ok(())
    }

    fn upsert(&mut self, cap: &mut Capture, dataset: &str) -> Result<(), DetectError> {
        let rh = self.enc.row_hash();
        cap.outbox.push_change(dataset, Op::Upsert, self.enc.row()).map_err(|e| cap.outbox_err(e))?;
        cap.outbox
            .snapshot_put(dataset, self.enc.key_array(), &rh, self.enc.key_object())
            .map_err(|e| cap.outbox_err(e))?;
        Ok(())
    }

    fn delete(&mut self, cap: &mut Capture, dataset: &str) -> Result<(), DetectError> {
        cap.outbox.push_change(dataset, Op::Delete, self.enc.key_object()).map_err(|e| cap.outbox_err(e))?;
        cap.outbox.snapshot_remove(dataset, self.enc.key_array()).map_err(|e| cap.outbox_err(e))?;
        Ok(())
    }

    /// Applies an insert. Returns the number of changes written.
    pub fn insert(&mut self, cap: &mut Capture, dataset: &str, new: &[Value<'_>]) -> Result<u64, DetectError> {
        self.decode(dataset, new, None)?;
        self.upsert(cap, dataset)?;
        Ok(1)
    }

    /// Applies an update (a delete of the old key first when the key changed).
    pub fn update(
        &mut self,
        cap: &mut Capture,
        dataset: &str,
        old: Option<&[Value<'_>]>,
        new: &[Value<'_>],
    ) -> Result<(u64, u64), DetectError> {
        let mut deletes = 0;
        if let Some(old) = old {
            // The old key (or whole old row): emitted as a delete only if the key differs.
            self.decode_key_only(dataset, old)?;
            self.old_key.clear();
            self.old_key.extend_from_slice(self.enc.key_array());
            self.decode(dataset, new, Some(old))?;
            if self.enc.key_array() != self.old_key.as_slice() {
                self.decode_key_only(dataset, old)?;
                self.delete(cap, dataset)?;
                deletes = 1;
                self.decode(dataset, new, Some(old))?;
            }
        } else {
            self.decode(dataset, new, None)?;
        }
        self.upsert(cap, dataset)?;
        Ok((1 + deletes, deletes))
    }

    /// Applies a delete.
    pub fn delete_row(&mut self, cap: &mut Capture, dataset: &str, old: &[Value<'_>]) -> Result<u64, DetectError> {
        self.decode_key_only(dataset, old)?;
        self.delete(cap, dataset)?;
        Ok(1)
    }

    /// Decodes an old-key tuple: non-key columns may be NULL (replica identity default) or
    /// unchanged markers; only the key matters.
    fn decode_key_only(&mut self, dataset: &str, old: &[Value<'_>]) -> Result<(), CdcError> {
        let cleaned: Vec<Value<'_>> =
            old.iter().map(|v| if matches!(v, Value::Unchanged) { Value::Null } else { *v }).collect();
        self.decode(dataset, &cleaned, None)
    }
}
