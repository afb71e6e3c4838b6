//! Dataset tables in PostgreSQL: DDL, the schema-evolution decision, and the bulk-merge SQL.
//! Pure: every function returns SQL text or a decision; the caller runs it.
//!
//! Every identifier goes through [`quote_ident`]; values never appear in SQL text (they travel by
//! `COPY` or as bind parameters), so neither a dataset, a column name nor a value can inject SQL.
//!
//! ## Schema evolution ([`plan_evolution`])
//! Column names are compared exactly (PostgreSQL quoted identifiers are case-sensitive).
//! - a column the table lacks → `ADD COLUMN`, nullable (old rows read NULL);
//! - a column the batch no longer sends → kept; updates leave its values alone, new rows get NULL;
//! - a column whose portable type changed:
//!   - the stored type already holds the new values ([`holds`]: `numeric` or `double precision`
//!     hold `int`, `numeric` holds `float`, `timestamptz` holds `date`, `text` holds anything) →
//!     nothing changes (the column never narrows);
//!   - a wider type holds both ([`widen`]: `int` → `numeric` / `double precision`, `float` →
//!     `numeric`, `date` → `timestamptz`, scalars and `json` → `text`) → `ALTER COLUMN … TYPE`;
//!   - otherwise (e.g. `text` → `int` is fine, but `int` → `bool` or `bytes` → `text` is not) →
//!     [`crate::warehouse::WarehouseError::SchemaConflict`] for that dataset only;
//! - a different primary key → conflict, as in SQLite.

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;

use super::values::pg_type;
use crate::warehouse::quote_ident;

/// Metadata columns of every dataset table, after the source's columns.
pub const META_COLUMNS: &str = "\"_kho_agent\" text NOT NULL, \"_kho_seq\" bigint NOT NULL, \
     \"_kho_applied_at\" timestamptz NOT NULL, \"_kho_deleted\" boolean NOT NULL DEFAULT false, \
     \"_kho_invalid\" jsonb";

/// What the warehouse knows about one dataset's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The PostgreSQL schema (the department) the table lives in.
    pub schema: String,
    pub key: Vec<String>,
    /// Columns with their *stored* types (never narrower than any type a batch declared).
    pub columns: Vec<Column>,
}

impl TableInfo {
    /// `"schema"."dataset"`.
    pub fn qualified(&self, dataset: &str) -> String {
        qualified(&self.schema, dataset)
    }

    /// Stored type of `column`, if the table has it.
    pub fn column_type(&self, column: &str) -> Option<ColumnType> {
        self.columns.iter().find(|c| c.name == column).map(|c| c.ty)
    }
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// Whether a column stored as `stored` can hold values declared `incoming` without change.
pub fn holds(stored: ColumnType, incoming: ColumnType) -> bool {
    use ColumnType::*;
    stored == incoming
        || stored == Text
        || matches!((stored, incoming), (Decimal | Float, Int) | (Decimal, Float) | (Timestamp, Date))
}

/// The type to widen a `stored` column to so it holds `incoming` values too, if any.
pub fn widen(stored: ColumnType, incoming: ColumnType) -> Option<ColumnType> {
    use ColumnType::*;
    match (stored, incoming) {
        (Int, Decimal | Float) | (Float, Decimal) => Some(incoming),
        (Date, Timestamp) => Some(Timestamp),
        (Int | Float | Decimal | Bool | Date | Timestamp | Json, Text) => Some(Text),
        _ => None,
    }
}

/// What to do to an existing table for a batch's schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evolution {
    pub add: Vec<Column>,
    /// Columns to widen, with their new type.
    pub widen: Vec<Column>,
    /// The catalogue's new column list, when anything changed.
    pub columns: Option<Vec<Column>>,
}

/// Decides how `table` must change to accept rows of `schema`, or why it cannot.
pub fn plan_evolution(table: &TableInfo, schema: &DatasetSchema) -> Result<Evolution, String> {
    if table.key != schema.key {
        return Err(format!(
            "primary key changed from ({}) to ({}); the warehouse table keeps its key, so this dataset's \
             batches are refused until an operator migrates or renames the table",
            table.key.join(", "),
            schema.key.join(", ")
        ));
    }
    let mut merged = table.columns.clone();
    let mut ev = Evolution::default();
    for col in &schema.columns {
        match merged.iter_mut().find(|c| c.name == col.name) {
            Some(existing) if holds(existing.ty, col.ty) => {}
            Some(existing) => match widen(existing.ty, col.ty) {
                Some(ty) => {
                    existing.ty = ty;
                    ev.widen.push(Column { name: col.name.clone(), ty });
                }
                None => {
                    return Err(format!(
                        "column {:?} changed type from {} to {}, which the warehouse column cannot hold; \
                         this dataset's batches are refused until an operator changes the column",
                        col.name,
                        existing.ty.as_str(),
                        col.ty.as_str()
                    ));
                }
            },
            None => {
                ev.add.push(col.clone());
                merged.push(col.clone());
            }
        }
    }
    if !ev.add.is_empty() || !ev.widen.is_empty() {
        ev.columns = Some(merged);
    }
    Ok(ev)
}

/// `CREATE TABLE` for a new dataset in `schema_name`.
pub fn create_table_sql(schema_name: &str, schema: &DatasetSchema) -> String {
    let cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let not_null = if schema.key.contains(&c.name) { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote_ident(&c.name), pg_type(c.ty))
        })
        .collect();
    format!(
        "CREATE TABLE {} ({}, {META_COLUMNS}, PRIMARY KEY ({}))",
        qualified(schema_name, &schema.dataset),
        cols.join(", "),
        key_list(&schema.key)
    )
}

/// `ALTER TABLE … ADD COLUMN` (nullable) and `ALTER COLUMN … TYPE` statements for `ev`.
pub fn evolution_sql(table: &str, ev: &Evolution) -> Vec<String> {
    let add =
        ev.add.iter().map(|c| format!("ALTER TABLE {table} ADD COLUMN {} {}", quote_ident(&c.name), pg_type(c.ty)));
    let widen = ev.widen.iter().map(|c| {
        let (q, ty) = (quote_ident(&c.name), pg_type(c.ty));
        format!("ALTER TABLE {table} ALTER COLUMN {q} TYPE {ty} USING {q}::{ty}")
    });
    add.chain(widen).collect()
}

fn key_list(key: &[String]) -> String {
    key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ")
}

/// The staging table of one batch's changes to one dataset: the batch's columns with the
/// warehouse's stored types (so `COPY` checks nothing the encoder did not), plus the change's
/// sequence, whether it is a delete, whether it carries the row's values (an upsert, or a delete
/// after an upsert of the same key in the batch) or only the key, and the row's refused cells.
/// Dropped at commit.
pub fn create_stage_sql(stage: &str, table: &TableInfo, columns: &[&str]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(c), pg_type(table.column_type(c).unwrap_or(ColumnType::Text))))
        .collect();
    format!(
        "CREATE TEMP TABLE {stage} ({}, \"_kho_seq\" bigint, \"_kho_deleted\" boolean, \"_kho_has_row\" boolean, \
         \"_kho_invalid\" jsonb) \
         ON COMMIT DROP",
        cols.join(", ")
    )
}

/// `COPY` into the staging table.
pub fn copy_stage_sql(stage: &str, columns: &[&str], options: &str) -> String {
    let mut cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    cols.extend(["\"_kho_seq\"", "\"_kho_deleted\"", "\"_kho_has_row\"", "\"_kho_invalid\""].map(String::from));
    format!("COPY {stage} ({}) FROM STDIN{options}", cols.join(", "))
}

/// Merges the staging table's rows with values (one change per key, the last) into the dataset
/// table: `INSERT … SELECT … ON CONFLICT (key) DO UPDATE` — an upsert brings a soft-deleted row
/// back to life, an upsert-then-delete within the batch lands soft-deleted with its values.
/// Parameters: `$1` agent, `$2` applied-at (RFC 3339).
pub fn upsert_sql(qualified_table: &str, stage: &str, key: &[String], columns: &[&str]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let mut sets: Vec<String> = columns
        .iter()
        .filter(|c| !key.iter().any(|k| k == *c))
        .map(|c| {
            let q = quote_ident(c);
            format!("{q} = EXCLUDED.{q}")
        })
        .collect();
    sets.extend(
        ["\"_kho_agent\"", "\"_kho_seq\"", "\"_kho_applied_at\"", "\"_kho_deleted\"", "\"_kho_invalid\""]
            .iter()
            .map(|q| format!("{q} = EXCLUDED.{q}")),
    );
    format!(
        "INSERT INTO {qualified_table} AS t ({cols}, \"_kho_agent\", \"_kho_seq\", \"_kho_applied_at\", \
         \"_kho_deleted\", \"_kho_invalid\") \
         SELECT {cols}, $1::text, \"_kho_seq\", $2::text::timestamptz, \"_kho_deleted\", \"_kho_invalid\" FROM {stage} \
         WHERE \"_kho_has_row\" ON CONFLICT ({keys}) DO UPDATE SET {sets}",
        cols = names.join(", "),
        keys = key_list(key),
        sets = sets.join(", "),
    )
}

/// Soft-deletes the rows of the staging table's key-only deletes in one `UPDATE` (a key never
/// seen is a no-op). Run only when there are such deletes: joined against an unanalysed
/// staging table, the planner may scan the whole dataset table. Parameters as [`upsert_sql`].
pub fn delete_sql(qualified_table: &str, stage: &str, key: &[String]) -> String {
    let key_match: Vec<String> = key.iter().map(|k| format!("t.{0} = s.{0}", quote_ident(k))).collect();
    format!(
        "UPDATE {qualified_table} AS t SET \"_kho_deleted\" = true, \"_kho_agent\" = $1::text, \
         \"_kho_seq\" = s.\"_kho_seq\", \"_kho_applied_at\" = $2::text::timestamptz \
         FROM {stage} AS s WHERE NOT s.\"_kho_has_row\" AND {matches}",
        matches = key_match.join(" AND "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column { name: name.into(), ty }
    }

    fn table(cols: Vec<Column>) -> TableInfo {
        TableInfo { schema: "so_y_te".into(), key: vec!["id".into()], columns: cols }
    }

    fn schema(key: &[&str], cols: Vec<Column>) -> DatasetSchema {
        DatasetSchema {
            privacy: Default::default(),
            dataset: "ho_so".into(),
            key: key.iter().map(|k| k.to_string()).collect(),
            columns: cols,
        }
    }

    #[test]
    fn evolution_adds_widens_and_refuses() {
        let t = table(vec![col("id", Int), col("ten", Text), col("so", Int), col("ngay", Date)]);
        assert_eq!(plan_evolution(&t, &schema(&["id"], t.columns.clone())), Ok(Evolution::default()));
        // Narrower declarations are held by the stored column: nothing to do.
        let narrower = schema(&["id"], vec![col("id", Int), col("ten", Int)]);
        assert_eq!(plan_evolution(&t, &narrower), Ok(Evolution::default()));
        let wider = schema(&["id"], vec![col("id", Int), col("so", Decimal), col("ngay", Timestamp), col("moi", Json)]);
        let ev = plan_evolution(&t, &wider).expect("wider");
        assert_eq!(ev.add, vec![col("moi", Json)]);
        assert_eq!(ev.widen, vec![col("so", Decimal), col("ngay", Timestamp)]);
        assert_eq!(ev.columns.as_ref().map(Vec::len), Some(5));
        let sql = evolution_sql("\"so_y_te\".\"ho_so\"", &ev);
        assert_eq!(sql[0], "ALTER TABLE \"so_y_te\".\"ho_so\" ADD COLUMN \"moi\" jsonb");
        assert_eq!(sql[1], "ALTER TABLE \"so_y_te\".\"ho_so\" ALTER COLUMN \"so\" TYPE numeric USING \"so\"::numeric");
        let bad = schema(&["id"], vec![col("id", Int), col("so", Bool)]);
        assert!(plan_evolution(&t, &bad).expect_err("int → bool").contains("changed type from int to bool"));
        let rekeyed = schema(&["ten"], t.columns.clone());
        assert!(plan_evolution(&t, &rekeyed).expect_err("key").contains("primary key changed"));
        // Exact names: "Ten" is another column than "ten" in PostgreSQL.
        let cased = schema(&["id"], vec![col("id", Int), col("Ten", Text)]);
        assert_eq!(plan_evolution(&t, &cased).expect("cased").add, vec![col("Ten", Text)]);
    }

    #[test]
    fn widening_is_only_ever_wider() {
        let all = [Bool, Int, Float, Decimal, Text, Bytes, Date, Timestamp, Json];
        for a in all {
            assert!(holds(a, a) && holds(Text, a));
            for b in all {
                if let Some(w) = widen(a, b) {
                    assert!(holds(w, a) && holds(w, b), "{a:?} + {b:?} → {w:?} must hold both");
                    assert!(!holds(a, b), "{a:?} already holds {b:?}");
                }
            }
        }
    }

    #[test]
    fn hostile_names_stay_inside_quotes() {
        let s = DatasetSchema {
            privacy: Default::default(),
            dataset: "ho_so".into(),
            key: vec!["mã\"; DROP TABLE x; --".into()],
            columns: vec![col("mã\"; DROP TABLE x; --", Text), col("Họ tên", Text)],
        };
        let create = create_table_sql("so \"y\" te", &s);
        assert!(create.starts_with("CREATE TABLE \"so \"\"y\"\" te\".\"ho_so\" (\"mã\"\"; DROP TABLE x; --\" text NOT NULL, \"Họ tên\" text, "), "{create}");
        assert!(create.ends_with("PRIMARY KEY (\"mã\"\"; DROP TABLE x; --\"))"), "{create}");
        let cols: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        let merge = upsert_sql("\"s\".\"ho_so\"", "kho_stage_1", &s.key, &cols);
        assert!(
            merge.contains("ON CONFLICT (\"mã\"\"; DROP TABLE x; --\") DO UPDATE SET \"Họ tên\" = EXCLUDED.\"Họ tên\""),
            "{merge}"
        );
        let delete = delete_sql("\"s\".\"ho_so\"", "kho_stage_1", &s.key);
        assert!(delete.contains("t.\"mã\"\"; DROP TABLE x; --\" = s.\"mã\"\"; DROP TABLE x; --\""), "{delete}");
    }
}
