//! A fresh PostgreSQL database per test on the real server at 127.0.0.1:5432 (trust auth, user
//! `postgres`), dropped with its connections afterwards, and the warehouse driven as the applier
//! drives it.

use std::sync::Arc;
use std::time::Duration;

use kho_hub::warehouse::postgres::{self, DepartmentOf, PostgresWarehouse, Settings};
use kho_hub::warehouse::{ApplyStats, Warehouse, WarehouseError};
use kho_shared::protocol::{Change, Column, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::Value;

pub const NOW: &str = "2026-02-01T08:00:00.000Z";
const ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A fresh database, dropped (with its connections) when the test ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!("kho_t_{:016x}", fastrand::u64(..));
        let mut admin = ::postgres::Client::connect(ADMIN_URL, ::postgres::NoTls)
            .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, trust) is required for these tests");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        TestDb { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn settings(&self) -> Settings {
        Settings {
            url: self.url(),
            ssl_root_cert: None,
            history_retention: Duration::from_secs(90 * 24 * 3600),
            unassigned_schema: "public".into(),
        }
    }

    pub fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url(), ::postgres::NoTls).expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(ADMIN_URL, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

pub fn departments() -> DepartmentOf {
    Arc::new(|d: &str| (d == "ho_so").then(|| "so_y_te".to_string()))
}

pub fn open(db: &TestDb) -> (PostgresWarehouse, postgres::PostgresReader) {
    let (mut writers, reader) = postgres::open(db.settings(), 1, departments()).expect("open");
    drop(writers.pop());
    let conflicts = reader.conflicts();
    let wh = PostgresWarehouse::open(Arc::new(db.settings()), departments(), conflicts, true).expect("writer");
    let reader = Arc::try_unwrap(reader).unwrap_or_else(|_| panic!("reader shared"));
    (wh, reader)
}

/// One batch as the applier runs it: savepoint, prepare, apply, ledger.
pub fn apply(
    wh: &mut PostgresWarehouse,
    agent: &str,
    schemas: &[DatasetSchema],
    changes: &[Change],
) -> Result<ApplyStats, WarehouseError> {
    apply_at(wh, agent, schemas, changes, NOW)
}

pub fn apply_at(
    wh: &mut PostgresWarehouse,
    agent: &str,
    schemas: &[DatasetSchema],
    changes: &[Change],
    now: &str,
) -> Result<ApplyStats, WarehouseError> {
    wh.begin()?;
    wh.savepoint()?;
    let result = (|| {
        for s in schemas {
            wh.prepare_dataset(s, now)?;
        }
        let stats = wh.apply_changes(agent, schemas, changes, now)?;
        wh.set_applied_seq(agent, changes.last().map_or(0, |c| c.seq), now)?;
        Ok(stats)
    })();
    match &result {
        Ok(_) => wh.release_savepoint()?,
        Err(_) => wh.rollback_to_savepoint()?,
    }
    wh.commit()?;
    result
}

pub fn col(name: &str, ty: ColumnType) -> Column {
    Column { name: name.into(), ty }
}

/// `ho_so(id int, ten text, …extra)`, keyed by `id`.
pub fn ho_so(extra: &[Column]) -> DatasetSchema {
    let mut columns = vec![col("id", ColumnType::Int), col("ten", ColumnType::Text)];
    columns.extend_from_slice(extra);
    DatasetSchema { privacy: Default::default(), dataset: "ho_so".into(), key: vec!["id".into()], columns }
}

pub fn upsert(dataset: &str, seq: u64, row: Value) -> Change {
    Change { seq, dataset: dataset.into(), op: Op::Upsert, key: None, row: row.as_object().cloned() }
}

pub fn delete(dataset: &str, seq: u64, key: Value) -> Change {
    Change { seq, dataset: dataset.into(), op: Op::Delete, key: key.as_object().cloned(), row: None }
}
