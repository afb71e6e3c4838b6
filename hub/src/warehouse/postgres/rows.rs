//! Live rows of a dataset table for the open-data API (see [`crate::warehouse::rows`]): a new
//! connection per read, one `REPEATABLE READ READ ONLY` transaction, and a portal fetched
//! [`ROW_CHUNK`] rows at a time, so neither the server nor the hub ever buffers the whole table.
//! Every cell is selected as text (bytes as base64) and turned back into its wire form here.

use kho_shared::protocol::Column;
use kho_shared::types::ColumnType;
use serde_json::Value;

use super::{Settings, connect, db, table};
use crate::warehouse::rows::{ROW_CHUNK, RecentChange, RowChunk, RowQuery, like_pattern};
use crate::warehouse::{WarehouseError, quote_ident};

/// Reads `dataset`'s live rows; `false` if the warehouse has no table for it.
pub fn read_live(
    settings: &Settings,
    dataset: &str,
    query: &RowQuery,
    emit: &mut dyn FnMut(RowChunk) -> bool,
) -> Result<bool, WarehouseError> {
    let mut client = connect::connect(settings, "open data")?;
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db("read rows"))?;
    let found = tx
        .query_opt(
            "SELECT schema_name, key_json::text, columns_json::text FROM kho.datasets WHERE dataset = $1",
            &[&dataset],
        )
        .map_err(db(format!("read rows of {dataset}")))?;
    let Some(found) = found else { return Ok(false) };
    let schema_name: String = found.get(0);
    let key: Vec<String> = serde_json::from_str(found.get::<_, &str>(1)).unwrap_or_default();
    let columns: Vec<Column> = serde_json::from_str(found.get::<_, &str>(2)).unwrap_or_default();
    let qualified = table::qualified(&schema_name, dataset);
    let pattern = query.q.as_deref().filter(|q| !q.is_empty()).map(like_pattern);
    let filter = filter_sql(&columns, pattern.is_some());
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = match &pattern {
        Some(p) => vec![p],
        None => vec![],
    };
    let total = if query.with_total {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {qualified} WHERE {filter}"), &params)
            .map_err(db(format!("count rows of {dataset}")))?
            .get(0);
        Some(n.max(0) as u64)
    } else {
        None
    };
    if !emit(RowChunk::Header { columns: columns.clone(), total }) {
        return Ok(true);
    }
    let cells: Vec<String> = columns.iter().map(select_cell).collect();
    // Qualified by the table alias: an unqualified name would sort by the same-named text output
    // column (`"id"::text` is named `id`), i.e. 1, 10, 100, 2, ….
    let order: Vec<String> = key.iter().map(|k| format!("t.{}", quote_ident(k))).collect();
    let mut sql = format!(
        "SELECT {} FROM {qualified} AS t WHERE {filter} ORDER BY {} OFFSET {}",
        if cells.is_empty() { "NULL".to_string() } else { cells.join(", ") },
        if order.is_empty() { "t.ctid".to_string() } else { order.join(", ") },
        query.offset
    );
    if let Some(limit) = query.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let portal = tx.bind(sql.as_str(), &params).map_err(db(format!("read rows of {dataset}")))?;
    loop {
        let rows = tx.query_portal(&portal, ROW_CHUNK as i32).map_err(db(format!("read rows of {dataset}")))?;
        if rows.is_empty() {
            break;
        }
        let done = rows.len() < ROW_CHUNK;
        let chunk =
            rows.iter().map(|r| columns.iter().enumerate().map(|(i, c)| from_text(c.ty, r.get(i))).collect()).collect();
        if !emit(RowChunk::Rows(chunk)) || done {
            break;
        }
    }
    drop(portal);
    tx.commit().map_err(db("read rows"))?;
    Ok(true)
}

/// The newest `limit` writes to `dataset`, in the reader's transaction.
pub fn recent_changes(
    tx: &mut postgres::Transaction<'_>,
    dataset: &str,
    limit: usize,
) -> Result<Vec<RecentChange>, WarehouseError> {
    let ctx = || format!("recent changes of {dataset}");
    let found = tx
        .query_opt("SELECT schema_name, key_json::text FROM kho.datasets WHERE dataset = $1", &[&dataset])
        .map_err(db(ctx()))?;
    let Some(found) = found else { return Ok(Vec::new()) };
    let schema_name: String = found.get(0);
    let key: Vec<String> = serde_json::from_str(found.get::<_, &str>(1)).unwrap_or_default();
    let cols: String = key.iter().map(|k| format!("t.{}::text, ", quote_ident(k))).collect();
    let sql = format!(
        "SELECT {cols}t.\"_kho_deleted\", {}, t.\"_kho_agent\", t.\"_kho_seq\" FROM {} AS t \
         ORDER BY t.\"_kho_applied_at\" DESC, t.\"_kho_seq\" DESC LIMIT {limit}",
        super::rfc3339("t.\"_kho_applied_at\""),
        table::qualified(&schema_name, dataset)
    );
    let n = key.len();
    Ok(tx
        .query(&sql, &[])
        .map_err(db(ctx()))?
        .iter()
        .map(|r| RecentChange {
            key: (0..n).map(|i| from_text(ColumnType::Text, r.get(i))).collect(),
            deleted: r.get(n),
            applied_at: r.get(n + 1),
            agent: r.get(n + 2),
            seq: r.get(n + 3),
        })
        .collect())
}

fn filter_sql(columns: &[Column], with_pattern: bool) -> String {
    let live = "NOT \"_kho_deleted\"".to_string();
    if !with_pattern {
        return live;
    }
    if columns.is_empty() {
        return format!("{live} AND false");
    }
    let any: Vec<String> =
        columns.iter().map(|c| format!("{}::text ILIKE $1 ESCAPE '\\'", quote_ident(&c.name))).collect();
    format!("{live} AND ({})", any.join(" OR "))
}

/// The select-list item that gives a column's value as text in (nearly) its wire form.
fn select_cell(c: &Column) -> String {
    let q = quote_ident(&c.name);
    match c.ty {
        ColumnType::Bytes => format!("translate(encode({q}, 'base64'), E'\\n', '')"),
        ColumnType::Timestamp => super::rfc3339(&q),
        _ => format!("{q}::text"),
    }
}

/// A cell's text (see [`select_cell`]) back in its wire form ([`kho_shared::types`]).
fn from_text(ty: ColumnType, text: Option<String>) -> Value {
    let Some(text) = text else { return Value::Null };
    match ty {
        ColumnType::Bool => Value::Bool(text == "true" || text == "t"),
        ColumnType::Int => text.parse::<i64>().map_or(Value::String(text), Value::from),
        ColumnType::Float => match text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(text),
        },
        ColumnType::Json => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cells_come_back_in_wire_form() {
        assert_eq!(from_text(ColumnType::Bool, Some("true".into())), Value::Bool(true));
        assert_eq!(from_text(ColumnType::Int, Some("-3".into())), Value::from(-3));
        assert_eq!(from_text(ColumnType::Float, Some("Infinity".into())), Value::from("Infinity"));
        assert_eq!(from_text(ColumnType::Float, Some("1.5".into())), Value::from(1.5));
        assert_eq!(from_text(ColumnType::Decimal, Some("1.50".into())), Value::from("1.50"));
        assert_eq!(from_text(ColumnType::Json, Some("[1]".into())), serde_json::json!([1]));
        assert_eq!(from_text(ColumnType::Text, None), Value::Null);
    }

    #[test]
    fn deleted_rows_are_filtered_and_queries_search_every_column() {
        let cols = vec![Column { name: "ten".into(), ty: ColumnType::Text }];
        assert_eq!(filter_sql(&cols, false), "NOT \"_kho_deleted\"");
        assert_eq!(filter_sql(&cols, true), "NOT \"_kho_deleted\" AND (\"ten\"::text ILIKE $1 ESCAPE '\\')");
    }
}
