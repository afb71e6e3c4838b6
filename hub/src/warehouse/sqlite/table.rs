//! Dataset tables: the DDL for a new dataset, the decision what a batch's schema means for an
//! existing table, and the upsert / soft-delete statements.
//!
//! Schema evolution rules (pure, see [`plan_evolution`]):
//! - a column the table lacks → `ALTER TABLE … ADD COLUMN` (nullable, so old rows read NULL);
//! - a column the batch no longer sends → kept; its values stay, new rows get NULL;
//! - a column whose portable type changed → the catalogue records the new type; stored values are
//!   kept as they are (SQLite's affinity holds both);
//! - a different primary key → refused ([`crate::warehouse::WarehouseError::SchemaConflict`]):
//!   rows keyed one way cannot be matched with rows keyed another, so only a person can decide.
//!
//! Column names are compared case-insensitively, as SQLite does.
//!
//! A single integer key column is declared `INT`, not `INTEGER`: `INTEGER PRIMARY KEY` would make
//! it SQLite's rowid, which rejects a non-integer value with "datatype mismatch" — and the
//! warehouse stores values as given instead of refusing a batch.

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;

use super::values::sql_type;
use crate::warehouse::quote_ident;

/// What the warehouse knows about one dataset's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub key: Vec<String>,
    pub columns: Vec<Column>,
}

/// What to do to an existing table for a batch's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evolution {
    pub add: Vec<Column>,
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
    let mut add = Vec::new();
    let mut changed = false;
    for col in &schema.columns {
        match merged.iter_mut().find(|c| c.name.eq_ignore_ascii_case(&col.name)) {
            Some(existing) if existing.ty != col.ty => {
                existing.ty = col.ty;
                changed = true;
            }
            Some(_) => {}
            None => {
                add.push(col.clone());
                merged.push(col.clone());
                changed = true;
            }
        }
    }
    Ok(Evolution { add, columns: changed.then_some(merged) })
}

fn declared_type(schema_key: &[String], col: &Column) -> &'static str {
    if schema_key.len() == 1 && schema_key[0] == col.name && col.ty == ColumnType::Int {
        "INT"
    } else {
        sql_type(col.ty)
    }
}

/// `CREATE TABLE` for a new dataset.
pub fn create_table_sql(schema: &DatasetSchema) -> String {
    let mut cols: Vec<String> =
        schema.columns.iter().map(|c| format!("{} {}", quote_ident(&c.name), declared_type(&schema.key, c))).collect();
    cols.push("\"_kho_agent\" TEXT".into());
    cols.push("\"_kho_seq\" INTEGER".into());
    cols.push("\"_kho_applied_at\" TEXT".into());
    cols.push("\"_kho_deleted\" INTEGER NOT NULL DEFAULT 0".into());
    let key: Vec<String> = schema.key.iter().map(|k| quote_ident(k)).collect();
    format!("CREATE TABLE {} ({}, PRIMARY KEY ({}))", quote_ident(&schema.dataset), cols.join(", "), key.join(", "))
}

/// `ALTER TABLE … ADD COLUMN` for one new, nullable column.
pub fn add_column_sql(dataset: &str, col: &Column) -> String {
    format!("ALTER TABLE {} ADD COLUMN {} {}", quote_ident(dataset), quote_ident(&col.name), sql_type(col.ty))
}

/// Upsert of one row with the batch schema's columns (parameters 1..=n in schema order), then
/// agent, seq and applied-at. A soft-deleted row comes back to life.
pub fn upsert_sql(schema: &DatasetSchema) -> String {
    let names: Vec<String> = schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let n = names.len();
    let params: Vec<String> = (1..=n + 3).map(|i| format!("?{i}")).collect();
    let key: Vec<String> = schema.key.iter().map(|k| quote_ident(k)).collect();
    let mut sets: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.key.contains(&c.name))
        .map(|c| {
            let q = quote_ident(&c.name);
            format!("{q} = excluded.{q}")
        })
        .collect();
    sets.extend(
        ["\"_kho_agent\"", "\"_kho_seq\"", "\"_kho_applied_at\""].iter().map(|q| format!("{q} = excluded.{q}")),
    );
    sets.push("\"_kho_deleted\" = 0".into());
    format!(
        "INSERT INTO {} ({}, \"_kho_agent\", \"_kho_seq\", \"_kho_applied_at\", \"_kho_deleted\") VALUES ({}, 0) \
         ON CONFLICT ({}) DO UPDATE SET {}",
        quote_ident(&schema.dataset),
        names.join(", "),
        params.join(", "),
        key.join(", "),
        sets.join(", ")
    )
}

/// Soft delete by key: parameters agent, seq, applied-at, then the key values in key order.
/// A key never seen matches no row, which is the intended no-op.
pub fn soft_delete_sql(schema: &DatasetSchema) -> String {
    let cond: Vec<String> =
        schema.key.iter().enumerate().map(|(i, k)| format!("{} = ?{}", quote_ident(k), i + 4)).collect();
    format!(
        "UPDATE {} SET \"_kho_deleted\" = 1, \"_kho_agent\" = ?1, \"_kho_seq\" = ?2, \"_kho_applied_at\" = ?3 WHERE {}",
        quote_ident(&schema.dataset),
        cond.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column { name: name.into(), ty }
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
    fn new_columns_are_added_and_key_changes_refused() {
        let table = TableInfo {
            key: vec!["id".into()],
            columns: vec![col("id", ColumnType::Int), col("ten", ColumnType::Text)],
        };
        let same = plan_evolution(&table, &schema(&["id"], table.columns.clone())).expect("same");
        assert_eq!(same, Evolution { add: vec![], columns: None });
        let wider = schema(
            &["id"],
            vec![col("id", ColumnType::Int), col("TEN", ColumnType::Text), col("x", ColumnType::Float)],
        );
        let ev = plan_evolution(&table, &wider).expect("wider");
        assert_eq!(ev.add, vec![col("x", ColumnType::Float)]);
        assert_eq!(ev.columns.map(|c| c.len()), Some(3));
        let narrower = schema(&["id"], vec![col("id", ColumnType::Int)]);
        assert_eq!(plan_evolution(&table, &narrower).expect("narrower").columns, None);
        let rekeyed = schema(&["ten"], table.columns.clone());
        assert!(plan_evolution(&table, &rekeyed).expect_err("key").contains("primary key changed"));
    }

    #[test]
    fn statements_quote_every_identifier() {
        let s = schema(&["id"], vec![col("id", ColumnType::Int), col("ghi_chu", ColumnType::Text)]);
        assert_eq!(
            create_table_sql(&s),
            "CREATE TABLE \"ho_so\" (\"id\" INT, \"ghi_chu\" TEXT, \"_kho_agent\" TEXT, \"_kho_seq\" INTEGER, \
             \"_kho_applied_at\" TEXT, \"_kho_deleted\" INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (\"id\"))"
        );
        let up = upsert_sql(&s);
        assert!(up.contains("VALUES (?1, ?2, ?3, ?4, ?5, 0)"), "{up}");
        assert!(up.contains("\"ghi_chu\" = excluded.\"ghi_chu\""), "{up}");
        assert!(!up.contains("\"id\" = excluded"), "{up}");
        assert!(soft_delete_sql(&s).ends_with("WHERE \"id\" = ?4"));
    }
}
