//! A PostgreSQL source database of its own for a change-data-capture test: created empty on the
//! local server, and dropped — with every replication slot in it, since a leftover slot holds WAL
//! on the shared server forever — when the guard drops.
//!
//! The server must run with `wal_level = logical` (`.ci/run` sets it).

use std::time::Duration;

/// The admin URL of the local server (`KHO_TEST_PG_ADMIN_URL`).
fn admin_url() -> String {
    std::env::var("KHO_TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A uniquely named database; dropped with its slots and publications.
pub struct CdcDb {
    pub name: String,
    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub url: String,
}

impl CdcDb {
    pub fn create() -> CdcDb {
        let admin = admin_url();
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("the PostgreSQL test server at {admin} is required (.ci/run starts it): {e}"));
        let level: String = c.query_one("SHOW wal_level", &[]).expect("read wal_level").get(0);
        assert_eq!(level, "logical", "the CDC tests need wal_level = logical on {admin} (.ci/run sets it)");
        let name = format!("kho_cdc_{}_{}", std::process::id(), fastrand::u32(..));
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the source database");
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("admin URL {admin} has no database part"),
        };
        CdcDb { name, url }
    }

    /// A new connection to the database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    /// Names of the replication slots in this database.
    pub fn slots(&self) -> Vec<String> {
        let mut c = postgres::Client::connect(&admin_url(), postgres::NoTls).expect("connect");
        c.query("SELECT slot_name::text FROM pg_replication_slots WHERE database = $1", &[&self.name])
            .expect("read slots")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Drops `slot` even while an agent streams from it (its walsender is terminated first).
    pub fn drop_slot_underneath(&self, slot: &str) {
        let mut c = postgres::Client::connect(&admin_url(), postgres::NoTls).expect("connect");
        for _ in 0..100 {
            let _ = c.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            );
            if c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("could not drop slot {slot}");
    }
}

impl Drop for CdcDb {
    fn drop(&mut self) {
        let Ok(mut c) = postgres::Client::connect(&admin_url(), postgres::NoTls) else { return };
        for _ in 0..50 {
            let _ = c.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL",
                &[&self.name],
            );
            let _ = c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active",
                &[&self.name],
            );
            let left: i64 = c
                .query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&self.name])
                .map(|r| r.get(0))
                .unwrap_or(0);
            if left == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}
