//! Department databases on the real PostgreSQL and MariaDB servers: a uniquely named `ho_so`
//! table with Vietnamese text, `numeric(18,2)` and a microsecond `timestamp(6)`, and its rows in
//! the canonical text form the warehouse stores, for row-by-row comparison.
//!
//! The servers are required: connecting panics with a clear message when one is missing
//! (`.ci/run` starts them). URLs: `KHO_TEST_PG_URL`, `KHO_TEST_MYSQL_URL`.

use std::collections::BTreeMap;
use std::path::Path;

use mysql::prelude::Queryable;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Mysql,
}

/// A row as text: (ten, so_tien, sua_luc) by id.
pub type TextRows = BTreeMap<i64, (Option<String>, Option<String>, Option<String>)>;

enum Conn {
    Pg(Box<postgres::Client>),
    My(Box<mysql::Conn>),
}

/// A connection and the unique table it owns (dropped with it).
pub struct RemoteDb {
    pub kind: Kind,
    pub url: String,
    pub table: String,
    conn: Conn,
    clock: u64,
}

const TEN: &[&str] = &["Nguyễn Văn Ánh", "Trần Thị Bích Ngọc", "Lò Văn Mạnh", "Đỗ Thị Hương", "Cầm Bá Thước"];

impl RemoteDb {
    /// Connects and creates an empty `ho_so` table with a unique name.
    pub fn create(kind: Kind) -> RemoteDb {
        let url = match kind {
            Kind::Postgres => {
                std::env::var("KHO_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
            }
            Kind::Mysql => {
                std::env::var("KHO_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
            }
        };
        RemoteDb::create_at(kind, url)
    }

    /// Like [`RemoteDb::create`], in the database at `url` (e.g. a [`crate::cdc_db::CdcDb`]).
    pub fn create_at(kind: Kind, url: String) -> RemoteDb {
        let conn = match kind {
            Kind::Postgres => {
                Conn::Pg(Box::new(postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
                    panic!("the PostgreSQL test server at {url} is required (.ci/run starts it): {e}")
                })))
            }
            Kind::Mysql => Conn::My(Box::new(
                mysql::Opts::from_url(&url).map_err(mysql::Error::from).and_then(mysql::Conn::new).unwrap_or_else(
                    |e| panic!("the MariaDB test server at {url} is required (.ci/run starts it): {e}"),
                ),
            )),
        };
        let table = format!("kho_e2e_{}_{}", std::process::id(), fastrand::u32(..));
        let mut db = RemoteDb { kind, url, table, conn, clock: 0 };
        let ddl = match kind {
            Kind::Postgres => {
                "CREATE TABLE {t} (id int PRIMARY KEY, ten varchar(200), so_tien numeric(18,2), sua_luc timestamp(6))"
            }
            Kind::Mysql => {
                "CREATE TABLE {t} (id INT PRIMARY KEY, ten VARCHAR(200), so_tien DECIMAL(18,2), sua_luc DATETIME(6)) CHARACTER SET utf8mb4"
            }
        };
        db.exec(ddl);
        db
    }

    /// Runs one statement; `{t}` is the table.
    pub fn exec(&mut self, sql: &str) {
        let sql = sql.replace("{t}", &self.table);
        let r = match &mut self.conn {
            Conn::Pg(c) => c.batch_execute(&sql).map_err(|e| e.to_string()),
            Conn::My(c) => c.query_drop(&sql).map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            panic!("{sql}: {e}");
        }
    }

    /// The next distinct `sua_luc`: one millisecond and 7 µs per tick, so microseconds matter.
    fn stamp(&mut self) -> String {
        self.clock += 1;
        let us = self.clock * 1_007;
        let s = us / 1_000_000;
        format!(
            "2026-01-{:02} {:02}:{:02}:{:02}.{:06}",
            1 + s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60,
            us % 1_000_000
        )
    }

    /// Inserts ids `from..=to` in batches.
    pub fn insert_range(&mut self, from: i64, to: i64) {
        let ids: Vec<i64> = (from..=to).collect();
        for chunk in ids.chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| {
                    let ten = TEN[*i as usize % TEN.len()];
                    let stamp = self.stamp();
                    let amount = if i % 10 == 0 { "NULL".to_string() } else { format!("{}.{:02}", i * 1_000, i % 100) };
                    format!("({i}, '{ten} — hồ sơ số {i}', {amount}, '{stamp}')")
                })
                .collect();
            self.exec(&format!("INSERT INTO {{t}} VALUES {}", values.join(", ")));
        }
    }

    /// Updates each of `ids` with a new name, amount and a later `sua_luc`.
    pub fn update(&mut self, ids: impl IntoIterator<Item = i64>, ten: &str) {
        for id in ids {
            let stamp = self.stamp();
            self.exec(&format!(
                "UPDATE {{t}} SET ten = '{ten}', so_tien = so_tien + 1, sua_luc = '{stamp}' WHERE id = {id}"
            ));
        }
    }

    /// The table's rows in the warehouse's text form.
    pub fn rows(&mut self) -> TextRows {
        let mut out = TextRows::new();
        match &mut self.conn {
            Conn::Pg(c) => {
                let sql = format!(
                    "SELECT id::int8, ten, so_tien::text, to_char(sua_luc, 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM {}",
                    self.table
                );
                for r in c.query(sql.as_str(), &[]).expect("read source rows") {
                    let ts: Option<String> = r.get(3);
                    out.insert(r.get(0), (r.get(1), r.get(2), ts.map(trim_micros)));
                }
            }
            Conn::My(c) => {
                let sql = format!(
                    "SELECT id, ten, CAST(so_tien AS CHAR), DATE_FORMAT(sua_luc, '%Y-%m-%dT%H:%i:%s.%f') FROM {}",
                    self.table
                );
                type Row = (i64, Option<String>, Option<String>, Option<String>);
                let rows: Vec<Row> = c.query(sql).expect("read source rows");
                for (id, ten, so_tien, ts) in rows {
                    out.insert(id, (ten, so_tien, ts.map(trim_micros)));
                }
            }
        }
        out
    }
}

/// Kho writes the fraction only when it is not zero.
fn trim_micros(ts: String) -> String {
    ts.strip_suffix(".000000").map(str::to_string).unwrap_or(ts)
}

impl Drop for RemoteDb {
    fn drop(&mut self) {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table);
        let _ = match &mut self.conn {
            Conn::Pg(c) => c.batch_execute(&sql).map_err(|e| e.to_string()),
            Conn::My(c) => c.query_drop(&sql).map_err(|e| e.to_string()),
        };
    }
}

/// A warehouse table's live rows (or all rows, deleted ones too) in the same text form.
pub fn warehouse_rows(warehouse: &Path, table: &str, live_only: bool) -> rusqlite::Result<TextRows> {
    let conn = rusqlite::Connection::open_with_flags(warehouse, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let filter = if live_only { "WHERE _kho_deleted = 0" } else { "" };
    let mut stmt = conn.prepare(&format!("SELECT id, ten, so_tien, sua_luc FROM \"{table}\" {filter}"))?;
    let mut rows = stmt.query([])?;
    let mut out = TextRows::new();
    while let Some(r) = rows.next()? {
        out.insert(r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?));
    }
    Ok(out)
}
