//! Row-by-row comparison of a source table and its warehouse table.
//!
//! Both sides are read with every column cast to text (NULL stays NULL), so an integer in the
//! source and the same integer in the warehouse compare equal whatever storage class each used,
//! while any real difference in any column shows. Each row's checksum is the sha256 of its values;
//! the table checksum folds the row checksums in key order.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

/// A table's rows: key (as text) → row checksum.
pub type Rows = BTreeMap<String, [u8; 32]>;

/// Reads `columns` of `table` from a SQLite file, keyed by `key`, optionally filtered.
pub fn read_rows(db: &Path, table: &str, key: &str, columns: &[&str], filter: &str) -> rusqlite::Result<Rows> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let cols: Vec<String> = columns.iter().map(|c| format!("CAST(\"{c}\" AS TEXT)")).collect();
    let sql = format!("SELECT CAST(\"{key}\" AS TEXT), {} FROM \"{table}\" {filter}", cols.join(", "));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Rows::new();
    while let Some(row) = rows.next()? {
        let k: String = row.get(0)?;
        let mut h = Sha256::new();
        for i in 0..columns.len() {
            match row.get::<_, Option<String>>(i + 1)? {
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

/// Columns of the sample `ho_so` table.
pub const HO_SO_COLUMNS: &[&str] = &[
    "id",
    "ma_ho_so",
    "linh_vuc",
    "don_vi",
    "trang_thai",
    "ngay_nhan",
    "ngay_hen_tra",
    "so_tien",
    "ghi_chu",
    "updated_at",
];

/// Differences between two row sets, with a few examples of each kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub missing: usize,
    pub extra: usize,
    pub different: usize,
    pub examples: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

/// Compares `want` (source) with `got` (warehouse).
pub fn diff(want: &Rows, got: &Rows) -> Diff {
    let mut d = Diff::default();
    for (k, h) in want {
        match got.get(k) {
            None => {
                d.missing += 1;
                if d.examples.len() < 5 {
                    d.examples.push(format!("missing key {k}"));
                }
            }
            Some(g) if g != h => {
                d.different += 1;
                if d.examples.len() < 5 {
                    d.examples.push(format!("different row at key {k}"));
                }
            }
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        d.extra += 1;
        if d.examples.len() < 5 {
            d.examples.push(format!("extra key {k}"));
        }
    }
    d
}

/// Compares the sample `ho_so` table in a source database with the live rows of warehouse table
/// `dataset`. A warehouse that has not created the table yet reads as empty.
pub fn ho_so_diff(source: &Path, warehouse: &Path, dataset: &str) -> rusqlite::Result<Diff> {
    let want = read_rows(source, "ho_so", "id", HO_SO_COLUMNS, "")?;
    let got = match read_rows(warehouse, dataset, "id", HO_SO_COLUMNS, "WHERE _kho_deleted = 0") {
        Ok(rows) => rows,
        Err(e) if e.to_string().contains("no such table") => Rows::new(),
        Err(e) => return Err(e),
    };
    Ok(diff(&want, &got))
}

/// Sequence numbers stamped on the warehouse rows of `dataset`: (row count, distinct seqs, max seq).
/// Every change touches exactly one row, so distinct rows must carry distinct sequences.
pub fn seq_stats(warehouse: &Path, dataset: &str) -> rusqlite::Result<(u64, u64, u64)> {
    let conn = Connection::open_with_flags(warehouse, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.query_row(
        &format!("SELECT count(*), count(DISTINCT _kho_seq), coalesce(max(_kho_seq), 0) FROM \"{dataset}\""),
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
    )
}
