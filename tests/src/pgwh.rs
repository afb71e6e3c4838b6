//! A PostgreSQL warehouse for end-to-end tests: a fresh database `kho_t_<random>` on the real
//! server (127.0.0.1:5432, trust, user `postgres`; override with `KHO_TEST_PG_ADMIN_URL`), dropped
//! with its connections when the value is dropped, and readers that compare its tables with a
//! SQLite source in the same checksum form as [`crate::compare`].

use sha2::{Digest, Sha256};

use crate::compare::{Diff, HO_SO_COLUMNS, Rows, diff, read_rows};

/// libpq key=value string of the server's maintenance database.
fn admin_url() -> String {
    std::env::var("KHO_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// One test's warehouse database.
pub struct PgWarehouse {
    pub name: String,
    client: postgres::Client,
}

impl PgWarehouse {
    /// Creates the database; panics with a clear message when the server is missing.
    pub fn create() -> PgWarehouse {
        let name = format!("kho_t_{:016x}", fastrand::u64(..));
        let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap_or_else(|e| {
            panic!("PostgreSQL (KHO_TEST_PG_ADMIN_URL or 127.0.0.1:5432, user postgres) is required: {e}")
        });
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        let client =
            postgres::Client::connect(&Self::url_of(&name), postgres::NoTls).expect("connect to the test database");
        PgWarehouse { name, client }
    }

    fn url_of(name: &str) -> String {
        let mut config: postgres::Config = admin_url().parse().expect("admin url");
        config.dbname(name);
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres");
        format!("postgres://{user}@{host}:{port}/{name}")
    }

    /// The hub's `warehouse.url`.
    pub fn url(&self) -> String {
        Self::url_of(&self.name)
    }

    /// The hub's `[warehouse]` section body for this database.
    pub fn hub_toml(&self, writers: usize) -> String {
        format!("kind = \"postgres\"\nurl = \"{}\"\nwriters = {writers}\n", self.url())
    }

    /// Highest sequence applied for `agent` (0 if none yet or no ledger yet).
    pub fn ledger(&mut self, agent: &str) -> u64 {
        self.client
            .query_opt("SELECT applied_seq FROM kho.ledger WHERE agent = $1", &[&agent])
            .ok()
            .flatten()
            .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64)
    }

    /// Runs a query returning (text, bigint) rows, e.g. counts per group.
    pub fn counts(&mut self, sql: &str) -> Vec<(String, i64)> {
        let rows = self.client.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// Runs a query returning one bigint.
    pub fn count(&mut self, sql: &str) -> i64 {
        self.client.query_one(sql, &[]).map(|r| r.get::<_, i64>(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of `schema.table` (every column cast to text), keyed by `key`, in the form of
    /// [`read_rows`]. A table not created yet reads as empty.
    pub fn rows(
        &mut self,
        schema: &str,
        table: &str,
        key: &str,
        columns: &[&str],
        filter: &str,
    ) -> Result<Rows, postgres::Error> {
        let q = |n: &str| format!("\"{}\"", n.replace('"', "\"\""));
        let exists: bool = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{}.{}", q(schema), q(table))])?
            .get(0);
        if !exists {
            return Ok(Rows::new());
        }
        let cols: Vec<String> = columns.iter().map(|c| format!("{}::text", q(c))).collect();
        let sql = format!("SELECT {}::text, {} FROM {}.{} {filter}", q(key), cols.join(", "), q(schema), q(table));
        let mut out = Rows::new();
        for row in self.client.query(&sql, &[])? {
            let k: String = row.get(0);
            let mut h = Sha256::new();
            for i in 0..columns.len() {
                match row.get::<_, Option<String>>(i + 1) {
                    None => h.update(b"\x00N"),
                    Some(v) => {
                        h.update(b"\x01");
                        h.update((v.len() as u64).to_le_bytes());
                        h.update(v.as_bytes());
                    }
                }
            }
            out.insert(k, h.finalize().into());
        }
        Ok(out)
    }

    /// Compares the sample `ho_so` table of a SQLite source with the live rows of `schema.dataset`.
    pub fn ho_so_diff(&mut self, source: &std::path::Path, schema: &str, dataset: &str) -> Diff {
        let want = match read_rows(source, "ho_so", "id", HO_SO_COLUMNS, "") {
            Ok(rows) => rows,
            Err(e) => {
                return Diff { missing: 1, examples: vec![e.to_string()], ..Diff::default() };
            }
        };
        match self.rows(schema, dataset, "id", HO_SO_COLUMNS, "WHERE NOT _kho_deleted") {
            Ok(got) => diff(&want, &got),
            Err(e) => Diff { missing: 1, examples: vec![e.to_string()], ..Diff::default() },
        }
    }

    /// (rows, distinct `_kho_seq`, max `_kho_seq`) of `schema.dataset`.
    pub fn seq_stats(&mut self, schema: &str, dataset: &str) -> (u64, u64, u64) {
        let row = self
            .client
            .query_one(
                &format!("SELECT count(*), count(DISTINCT _kho_seq), coalesce(max(_kho_seq), 0) FROM \"{schema}\".\"{dataset}\""),
                &[],
            )
            .expect("seq stats");
        (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64)
    }

    /// The connection, for test-specific checks.
    pub fn client(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

impl Drop for PgWarehouse {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}
