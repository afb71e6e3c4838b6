//! A SQLite database file as a source.
//!
//! Invariant: Kho never writes to a department's database. The file is opened with
//! `SQLITE_OPEN_READ_ONLY` and `PRAGMA query_only = 1`, so even a bug could not change it. Column
//! types come from `PRAGMA table_info` for a table and from the statement's declared types for a
//! query (expressions have none and read as text). Rows are streamed from a prepared statement.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kho_shared::protocol::{Column, DatasetSchema};
use kho_shared::types::ColumnType;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::{Cell, CursorValue, RowView, ScanRange, Source, SourceError, quote_ident};

/// How long a read waits for a department application's write lock before the poll fails
/// (and is retried next interval).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Page cache per source connection (KiB, as SQLite's negative cache_size): rows are streamed,
/// so a small cache keeps the agent's memory flat.
const CACHE_KIB: i64 = 2048;

/// A dataset read from a SQLite table or query.
pub struct SqliteSource {
    dataset: String,
    path: PathBuf,
    /// `"table"` or `(query) AS q`: what follows FROM.
    from: String,
    /// Set for a table source (discovery reads its table_info).
    table: Option<String>,
    conn: Connection,
}

impl SqliteSource {
    /// Opens `path` read-only.
    pub fn open(
        dataset: &str,
        path: &Path,
        table: Option<&str>,
        query: Option<&str>,
    ) -> Result<SqliteSource, SourceError> {
        if !path.exists() {
            return Err(SourceError::Missing { dataset: dataset.to_string(), path: path.to_path_buf() });
        }
        let open_err = |source| SourceError::Open { dataset: dataset.to_string(), path: path.to_path_buf(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.execute_batch(&format!("PRAGMA query_only = 1; PRAGMA cache_size = -{CACHE_KIB};")).map_err(open_err)?;
        let from = match (table, query) {
            (Some(t), _) => quote_ident(t),
            (None, Some(q)) => format!("({}) AS q", q.trim().trim_end_matches(';')),
            (None, None) => String::new(),
        };
        Ok(SqliteSource {
            dataset: dataset.to_string(),
            path: path.to_path_buf(),
            from,
            table: table.map(str::to_string),
            conn,
        })
    }

    fn read_err(&self, source: rusqlite::Error) -> SourceError {
        SourceError::Read { dataset: self.dataset.clone(), path: self.path.clone(), source }
    }

    fn columns(&self) -> Result<Vec<Column>, SourceError> {
        let mut cols = Vec::new();
        if let Some(table) = &self.table {
            let mut stmt =
                self.conn.prepare("SELECT name, type FROM pragma_table_info(?1)").map_err(|e| self.read_err(e))?;
            let mut rows = stmt.query([table]).map_err(|e| self.read_err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.read_err(e))? {
                let name: String = row.get(0).map_err(|e| self.read_err(e))?;
                let decl: Option<String> = row.get(1).map_err(|e| self.read_err(e))?;
                cols.push(Column { name, ty: ColumnType::from_sql_decl(decl.as_deref().unwrap_or("")) });
            }
            if cols.is_empty() {
                return Err(SourceError::NoSuchRelation {
                    dataset: self.dataset.clone(),
                    what: format!("table {table:?}"),
                    path: self.path.clone(),
                });
            }
        } else {
            let stmt = self.conn.prepare(&format!("SELECT * FROM {}", self.from)).map_err(|e| self.read_err(e))?;
            for c in stmt.columns() {
                cols.push(Column {
                    name: c.name().to_string(),
                    ty: ColumnType::from_sql_decl(c.decl_type().unwrap_or("")),
                });
            }
        }
        Ok(cols)
    }
}

impl Source for SqliteSource {
    fn discover(&mut self, key: &[String], cursor: Option<&str>) -> Result<DatasetSchema, SourceError> {
        let columns = self.columns()?;
        super::check_schema(&self.dataset, columns, key, cursor)
    }

    fn scan(
        &mut self,
        schema: &DatasetSchema,
        range: ScanRange<'_>,
        visit: &mut dyn FnMut(&dyn RowView) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        let cols: Vec<String> = schema.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let mut sql = format!("SELECT {} FROM {}", cols.join(", "), self.from);
        let mut param: Option<Value> = None;
        if let ScanRange::KeyOrder = range {
            let key: Vec<String> = schema.key.iter().map(|k| quote_ident(k)).collect();
            sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
        }
        if let ScanRange::CursorFrom { column, from } = range {
            let c = quote_ident(column);
            sql.push_str(&format!(" WHERE {c} IS NOT NULL"));
            if let Some(v) = from {
                sql.push_str(&format!(" AND {c} >= ?1"));
                param = Some(match v {
                    CursorValue::Int(i) => Value::Integer(*i),
                    CursorValue::Real(f) => Value::Real(*f),
                    CursorValue::Text(t) => Value::Text(t.clone()),
                    CursorValue::Blob(b) => Value::Blob(b.clone()),
                });
            }
            sql.push_str(&format!(" ORDER BY {c}"));
        }
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.read_err(e))?;
        let mut rows = match &param {
            Some(p) => stmt.query([p]),
            None => stmt.query([]),
        }
        .map_err(|e| SourceError::Read {
            dataset: self.dataset.clone(),
            path: self.path.clone(),
            source: e,
        })?;
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => {
                    return Err(SourceError::Read {
                        dataset: self.dataset.clone(),
                        path: self.path.clone(),
                        source: e,
                    });
                }
            };
            let view = SqliteRow { row, dataset: &self.dataset, path: &self.path };
            if visit(&view).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn count_null(&mut self, column: &str) -> Result<u64, SourceError> {
        let sql = format!("SELECT count(*) FROM {} WHERE {} IS NULL", self.from, quote_ident(column));
        let n: i64 = self.conn.query_row(&sql, [], |r| r.get(0)).map_err(|e| self.read_err(e))?;
        Ok(n.max(0) as u64)
    }
}

struct SqliteRow<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    dataset: &'r str,
    path: &'r Path,
}

impl RowView for SqliteRow<'_, '_> {
    fn cell(&self, idx: usize) -> Result<Cell<'_>, SourceError> {
        let v = self.row.get_ref(idx).map_err(|source| SourceError::Read {
            dataset: self.dataset.to_string(),
            path: self.path.to_path_buf(),
            source,
        })?;
        Ok(match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => Cell::Text(t),
            ValueRef::Blob(b) => Cell::Blob(b),
        })
    }
}
