//! One batch's changes to one dataset, into the dataset's table: the bulk path.
//!
//! The last change per key is picked in Rust (a key changed several times in one batch counts
//! once, as its last change; an upsert then a delete of one key lands soft-deleted with the
//! upsert's values). Those rows reach the table one of two ways, with the same result:
//!
//! - **Staging** (any batch): the rows are `COPY`ed into a temporary table, then one
//!   `INSERT … SELECT … ON CONFLICT (key) DO UPDATE` ([`table::upsert_sql`]) merges them, and one
//!   `UPDATE` soft-deletes the keys of deletes that carry no values ([`table::delete_sql`]).
//! - **Direct** (a load of new rows): when every picked change is an upsert, the rows are `COPY`ed
//!   straight into the dataset table inside a savepoint. If any key is already in the table, the
//!   primary key stops the `COPY` (`unique_violation`), the savepoint is rolled back — nothing of
//!   the attempt remains — and the staging path runs. An initial load is all new keys, so it
//!   skips the staging table and the merge: about half of PostgreSQL's work per row
//!   (docs/PERFORMANCE.md). A dataset whose attempt failed is not tried directly again for the
//!   next [`DIRECT_RETRY_AFTER`] batches, so an update-heavy dataset wastes at most one `COPY` in
//!   that many.
//!
//! Both paths write PostgreSQL's binary `COPY` format (text for a table an operator altered,
//! [`copy_data`]) and check every cell with
//! [`values::check`] first, so the stored values, the metadata columns and `_kho_invalid` are
//! identical whichever path ran.

use std::collections::HashMap;
use std::io::Write as _;

use kho_shared::protocol::{Change, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::{Map, Value};

use super::copy_data::{self, CopyData, Format};
use super::table::{self, TableInfo};
use super::{COPY_CHUNK, PostgresWarehouse, db, deferred, values};
use crate::warehouse::{WarehouseError, quote_ident};

/// Batches of a dataset applied through staging after a failed direct attempt, before the next try.
pub const DIRECT_RETRY_AFTER: u32 = 16;

/// Whether a dataset's next all-upsert batch is tried directly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectPath {
    /// Batches still to apply through staging before trying again.
    skip: u32,
    /// The current batch's rows of the dataset all went in by the direct `COPY`: keys new to the
    /// table, so none has a violation recorded unless it is quarantined ([`super::quality::record`]).
    pub loaded_new: bool,
}

impl DirectPath {
    /// Whether to try the direct path now (and count one batch of the back-off).
    pub fn try_now(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// A direct attempt met an existing key.
    pub fn missed(&mut self) {
        self.skip = DIRECT_RETRY_AFTER;
    }
}

/// One row to write: the change it comes from, where its values come from, whether it is deleted.
struct Pick<'a> {
    change: &'a Change,
    values: Option<&'a Map<String, Value>>,
    deleted: bool,
}

/// The rows of one dataset's batch, ready to encode.
struct Picked<'a> {
    columns: Vec<&'a str>,
    types: Vec<ColumnType>,
    rows: Vec<Pick<'a>>,
    /// Rows carrying values (upserts, and deletes after an upsert in the batch).
    with_values: usize,
    /// No row is a delete: the direct path may write them.
    all_upserts: bool,
}

impl PostgresWarehouse {
    /// Writes each dataset's changes (`by_dataset`: indices into `changes`) into its table.
    pub(super) fn write_datasets(
        &mut self,
        agent: &str,
        schemas: &[DatasetSchema],
        changes: &[Change],
        by_dataset: &[(&str, Vec<usize>)],
        now: &str,
    ) -> Result<(), WarehouseError> {
        for (dataset, picked) in by_dataset {
            let Some(schema) = schemas.iter().find(|s| s.dataset == *dataset) else {
                // Batch::validate guarantees a schema; keep going safely if it ever did not.
                return Err(WarehouseError::SchemaConflict {
                    dataset: dataset.to_string(),
                    problem: "no schema in batch".into(),
                });
            };
            if let Err(e) = self.apply_dataset(agent, schema, changes, picked, now) {
                if let WarehouseError::SchemaConflict { problem, .. } = &e {
                    self.note_conflict(dataset, problem);
                }
                return Err(e);
            }
            let seq = i64::try_from(picked.last().map_or(0, |&i| changes[i].seq)).unwrap_or(i64::MAX);
            let (dataset, at, agent) = (dataset.to_string(), now.to_string(), agent.to_string());
            self.notes.push(deferred::Op::LastChange { dataset, at, seq, agent });
        }
        Ok(())
    }

    /// Writes one dataset's changes (indices into `changes`, in order) into its table.
    pub(super) fn apply_dataset(
        &mut self,
        agent: &str,
        schema: &DatasetSchema,
        changes: &[Change],
        picked: &[usize],
        now: &str,
    ) -> Result<(), WarehouseError> {
        let dataset = schema.dataset.as_str();
        let Some(info) = self.tables.get(dataset).cloned() else {
            return Err(WarehouseError::SchemaConflict {
                dataset: dataset.to_string(),
                problem: "the dataset's table was not prepared".into(),
            });
        };
        let rows = pick(schema, &info, changes, picked)?;
        let qualified = info.qualified(dataset);
        let format = self.copy_format(dataset, &info)?;
        if rows.all_upserts && self.direct.entry(dataset.to_string()).or_default().try_now() {
            self.exec("SAVEPOINT kho_direct", "savepoint")?;
            match self.copy_direct(&qualified, format, &rows, agent, now) {
                Ok(()) => {
                    self.direct.entry(dataset.to_string()).or_default().loaded_new = true;
                    return self.exec("RELEASE SAVEPOINT kho_direct", "release savepoint");
                }
                Err(e) => {
                    // Usually a key already in the table; anything else the staging path reports again.
                    tracing::debug!(dataset, error = %e, "direct load refused; merging through staging");
                    self.exec(
                        "ROLLBACK TO SAVEPOINT kho_direct; RELEASE SAVEPOINT kho_direct",
                        "rollback to savepoint",
                    )?;
                    self.direct.entry(dataset.to_string()).or_default().missed();
                }
            }
        }
        self.merge_staged(&qualified, format, &info, &schema.key, &rows, agent, now)
    }

    /// `COPY` straight into the dataset table; fails on the first key already there.
    fn copy_direct(
        &mut self,
        qualified: &str,
        format: Format,
        rows: &Picked,
        agent: &str,
        now: &str,
    ) -> Result<(), WarehouseError> {
        let mut cols: Vec<String> = rows.columns.iter().map(|c| quote_ident(c)).collect();
        cols.extend(["\"_kho_agent\"", "\"_kho_seq\"", "\"_kho_applied_at\"", "\"_kho_deleted\""].map(String::from));
        let sql = format!("COPY {qualified} ({}, \"_kho_invalid\") FROM STDIN{}", cols.join(", "), format.options());
        let applied_at = applied_micros(now)?;
        self.copy_rows(&sql, format, "direct copy", rows, |data, pick| {
            data.text(agent);
            data.int8(seq(pick));
            data.timestamp(applied_at, now);
            data.boolean(false);
        })
    }

    /// The staging path: `COPY` into a temporary table, then merge and soft-delete from it.
    #[allow(clippy::too_many_arguments)]
    fn merge_staged(
        &mut self,
        qualified: &str,
        format: Format,
        info: &TableInfo,
        key: &[String],
        rows: &Picked,
        agent: &str,
        now: &str,
    ) -> Result<(), WarehouseError> {
        self.stages += 1;
        let stage = format!("kho_stage_{}", self.stages);
        self.exec(&table::create_stage_sql(&stage, info, &rows.columns), "create staging table")?;
        let sql = table::copy_stage_sql(&stage, &rows.columns, format.options());
        self.copy_rows(&sql, format, "copy to staging", rows, |data, pick| {
            data.int8(seq(pick));
            data.boolean(pick.deleted);
            data.boolean(pick.values.is_some());
        })?;
        if rows.with_values > 0 {
            let sql = table::upsert_sql(qualified, &stage, key, &rows.columns);
            self.client.execute(&sql, &[&agent, &now]).map_err(db(format!("merge into {qualified}")))?;
        }
        if rows.with_values < rows.rows.len() {
            let sql = table::delete_sql(qualified, &stage, key);
            self.client.execute(&sql, &[&agent, &now]).map_err(db(format!("soft-delete in {qualified}")))?;
        }
        self.exec(&format!("DROP TABLE {stage}"), "drop staging table")
    }

    /// Streams `rows` through `COPY … FROM STDIN` (`sql`) in `format`: each row's cells, then
    /// the fields `write_tail` writes, then the row's refused cells (`_kho_invalid`).
    fn copy_rows(
        &mut self,
        sql: &str,
        format: Format,
        context: &str,
        rows: &Picked,
        write_tail: impl Fn(&mut CopyData, &Pick),
    ) -> Result<(), WarehouseError> {
        let io = |e: std::io::Error| WarehouseError::database(context.to_string(), e);
        let mut writer = self.client.copy_in(sql).map_err(db(context))?;
        let mut data = CopyData::new(format, COPY_CHUNK + 4096);
        let mut invalid = Map::new();
        for pick in &rows.rows {
            invalid.clear();
            data.row();
            for (col, ty) in rows.columns.iter().zip(&rows.types) {
                let value = match pick.values {
                    Some(row) => row.get(*col),
                    None => pick.change.key.as_ref().and_then(|k| k.get(*col)),
                };
                match value.filter(|v| !v.is_null()).map(|v| (v, values::check(*ty, v))) {
                    Some((_, Some(cell))) => data.cell(&cell),
                    Some((v, None)) => {
                        data.null();
                        invalid.insert((*col).to_string(), v.clone());
                    }
                    None => data.null(),
                }
            }
            write_tail(&mut data, pick);
            if invalid.is_empty() {
                data.null();
            } else {
                data.jsonb(&values::json_text(&Value::Object(invalid.clone())));
            }
            data.end_row();
            if data.bytes().len() >= COPY_CHUNK {
                writer.write_all(data.bytes()).map_err(io)?;
                data.clear();
            }
        }
        data.finish();
        writer.write_all(data.bytes()).map_err(io)?;
        writer.finish().map_err(db(context))?;
        Ok(())
    }

    /// How `dataset`'s rows are encoded: binary while its table's columns have exactly the types
    /// Kho gave them, else text ([`copy_data`]). Asked for every batch, in one round trip that
    /// also takes the lock the `COPY` would, so the columns cannot change before it runs: binary
    /// fields in a column of another type can be read as wrong values rather than refused.
    fn copy_format(&mut self, dataset: &str, info: &TableInfo) -> Result<Format, WarehouseError> {
        let qualified = info.qualified(dataset);
        let sql = format!(
            "LOCK TABLE {qualified} IN ROW EXCLUSIVE MODE; \
             SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = '{}'::regclass AND attnum > 0 AND NOT attisdropped",
            qualified.replace('\'', "''")
        );
        let actual: HashMap<String, String> = self
            .client
            .simple_query(&sql)
            .map_err(db(format!("read the columns of {dataset}")))?
            .iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some((r.get(0)?.to_string(), r.get(1)?.to_string())),
                _ => None,
            })
            .collect();
        let expected = info.columns.iter().map(|c| (c.name.as_str(), copy_data::format_type_name(c.ty))).chain([
            ("_kho_agent", "text"),
            ("_kho_seq", "bigint"),
            ("_kho_applied_at", "timestamp with time zone"),
            ("_kho_deleted", "boolean"),
            ("_kho_invalid", "jsonb"),
        ]);
        let altered: Vec<String> = expected
            .filter_map(|(name, ty)| actual.get(name).filter(|a| *a != ty).map(|a| format!("{name} is {a}, not {ty}")))
            .collect();
        if altered.is_empty() {
            return Ok(Format::Binary);
        }
        if self.altered_tables.insert(dataset.to_string()) {
            tracing::warn!(dataset, altered = %altered.join(", "), "table altered by hand; loading it by text COPY");
        }
        Ok(Format::Text)
    }
}

/// A change's sequence as a `bigint` (the protocol keeps sequences below 2^63).
fn seq(pick: &Pick) -> i64 {
    i64::try_from(pick.change.seq).unwrap_or(i64::MAX)
}

/// The hub's `now` (RFC 3339) as a binary `timestamptz`.
fn applied_micros(now: &str) -> Result<i64, WarehouseError> {
    values::parse_timestamp(now).map(values::pg_micros).ok_or_else(|| {
        let bad = std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unreadable time {now:?}"));
        WarehouseError::database("read the hub's clock", bad)
    })
}

/// Picks the last change per key of one dataset's changes, checking every key.
fn pick<'a>(
    schema: &'a DatasetSchema,
    info: &TableInfo,
    changes: &'a [Change],
    picked: &[usize],
) -> Result<Picked<'a>, WarehouseError> {
    let dataset = schema.dataset.as_str();
    let columns: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    let types: Vec<ColumnType> = columns.iter().map(|c| info.column_type(c).unwrap_or(ColumnType::Text)).collect();
    let key_pos: Vec<usize> =
        schema.key.iter().map(|k| columns.iter().position(|c| c == k).unwrap_or(usize::MAX)).collect();

    // Encode each change's key cells once: equal text, equal key.
    let mut key_text: Vec<String> = Vec::with_capacity(picked.len());
    for &i in picked {
        let c = &changes[i];
        let source = match c.op {
            Op::Upsert => c.row.as_ref(),
            Op::Delete => c.key.as_ref(),
        };
        let mut text = String::new();
        for (n, &p) in key_pos.iter().enumerate() {
            let value = source.and_then(|m| m.get(&schema.key[n])).filter(|v| !v.is_null());
            let ty = types.get(p).copied().unwrap_or(ColumnType::Text);
            if value.is_none() || !values::write_cell(&mut text, ty, value) {
                return Err(WarehouseError::SchemaConflict {
                    dataset: dataset.to_string(),
                    problem: format!(
                        "change {}: key column {:?} is missing, null or not a valid {}; an operator must fix the \
                         source row",
                        c.seq,
                        schema.key[n],
                        ty.as_str()
                    ),
                });
            }
            text.push('\t');
        }
        key_text.push(text);
    }
    // The last change per key, and the last upsert per key.
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(picked.len());
    let mut last_upsert: HashMap<&str, usize> = HashMap::new();
    for (n, text) in key_text.iter().enumerate() {
        last.insert(text.as_str(), n);
        if changes[picked[n]].op == Op::Upsert {
            last_upsert.insert(text.as_str(), n);
        }
    }
    let mut rows = Vec::with_capacity(last.len());
    let mut with_values = 0;
    for (n, &i) in picked.iter().enumerate() {
        let key = key_text[n].as_str();
        if last.get(key) != Some(&n) {
            continue;
        }
        let change = &changes[i];
        // Where the row's values come from: this upsert, or the batch's last upsert before this
        // delete, or (a delete of an older row) only the key.
        let values = match change.op {
            Op::Upsert => change.row.as_ref(),
            Op::Delete => last_upsert.get(key).and_then(|&u| changes[picked[u]].row.as_ref()),
        };
        if values.is_some() {
            with_values += 1;
        }
        rows.push(Pick { change, values, deleted: change.op == Op::Delete });
    }
    // A delete after an upsert carries values but must land soft-deleted: only staging does that.
    let all_upserts = rows.iter().all(|r| !r.deleted);
    Ok(Picked { columns, types, rows, with_values, all_upserts })
}
