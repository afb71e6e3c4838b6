//! Harness for Kho's end-to-end tests and benchmarks: real `kho-hub` and `kho-agent` processes,
//! a generated department database, and row-by-row comparison of source and warehouse.
//!
//! The binaries are the ones cargo built for this workspace (`cargo test --workspace` builds them,
//! because the agent and hub crates have integration tests of their own). Each process gets its
//! own temporary directory and log file; on failure the tests print the logs' tails.

#![forbid(unsafe_code)]

pub mod cdc_db;
pub mod compare;
pub mod cut_proxy;
pub mod loadgen;
pub mod mosquitto;
pub mod pgwh;
pub mod procs;
pub mod remote;
pub mod security;
pub mod source;
pub mod webdriver;
pub mod webhook;

use std::path::PathBuf;

/// Path of a workspace binary built in the same profile as the running test or bench.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> or target/<profile>/<bench-binary>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo test --workspace` or `cargo build --bins`)",
        path.display()
    );
    path
}

/// A warehouse table's live rows as `key column value → [column values as text]` (NULL as None),
/// for comparing with what a file or an API served.
pub fn warehouse_text_rows(
    warehouse: &std::path::Path,
    table: &str,
    columns: &[&str],
) -> rusqlite::Result<std::collections::BTreeMap<String, Vec<Option<String>>>> {
    use rusqlite::types::ValueRef;
    let conn = rusqlite::Connection::open_with_flags(warehouse, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let cols: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let mut stmt = conn.prepare(&format!("SELECT {} FROM \"{table}\" WHERE _kho_deleted = 0", cols.join(", ")))?;
    let mut rows = stmt.query([])?;
    let mut out = std::collections::BTreeMap::new();
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            vals.push(match r.get_ref(i)? {
                ValueRef::Null => None,
                ValueRef::Integer(v) => Some(v.to_string()),
                ValueRef::Real(v) => Some(v.to_string()),
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Some(format!("x'{}'", hex::encode(b))),
            });
        }
        out.insert(vals[0].clone().unwrap_or_default(), vals);
    }
    Ok(out)
}
