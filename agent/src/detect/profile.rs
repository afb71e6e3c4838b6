//! `kho-agent check`'s look at a dataset's rows: how many there are and whether the declared key
//! really identifies them. A key that repeats or is NULL cannot be tracked (snapshot mode skips
//! such rows and says so); an administrator must see that before the first sync, not after.
//!
//! One streamed pass through the same [`Source`](crate::source::Source) and [`RowEncoder`] that
//! capture uses, so what `check` counts is exactly what capture would see. Distinct keys are
//! counted in a private temporary SQLite database on disk (not in memory), so memory stays flat
//! whatever the table's size. Text columns are sampled for mojibake (legacy Vietnamese text
//! decoded with the wrong encoding, [`crate::source::text::mojibake`]) after the dataset's own
//! decoding, so a warning means the configured encoding is still wrong. They are also sampled for
//! shapes of personal data ([`crate::privacy::scan`]) — on the raw values, before any transform,
//! and reported only to the operator at the console.

use std::ops::ControlFlow;

use rusqlite::Connection;

use super::encode::RowEncoder;
use crate::config::DatasetConfig;
use crate::source::text::mojibake::{ColumnSample, Verdict};
use crate::source::{self, Cell, ScanRange, SourceError};
use kho_shared::types::ColumnType;

/// Key examples kept for the report.
const EXAMPLES: usize = 3;

/// What a pass over a dataset found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub rows: u64,
    /// Rows with a NULL in a key column.
    pub null_keys: u64,
    /// Rows whose key an earlier row already had.
    pub duplicate_keys: u64,
    /// A few repeated keys, as JSON objects.
    pub duplicate_examples: Vec<String>,
    /// Text columns whose values look mis-decoded, with what they look like.
    pub misdecoded: Vec<(String, Verdict)>,
    /// Text columns that look like personal data: (column, shape, matching values, sampled).
    pub personal: Vec<(String, crate::privacy::scan::Kind, u64, u64)>,
}

impl Profile {
    pub fn key_is_valid(&self) -> bool {
        self.null_keys == 0 && self.duplicate_keys == 0
    }
}

/// Why the pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("dataset {dataset}: temporary key table: {source}")]
    Scratch { dataset: String, source: rusqlite::Error },
}

/// Reads every row of the dataset once and counts rows, NULL keys and repeated keys.
pub fn profile(config: &DatasetConfig) -> Result<Profile, ProfileError> {
    let scratch = |source| ProfileError::Scratch { dataset: config.name.clone(), source };
    // An empty path is a private temporary database on disk, deleted when closed.
    let keys = Connection::open("").map_err(scratch)?;
    keys.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; CREATE TABLE k (h BLOB PRIMARY KEY) WITHOUT ROWID;",
    )
    .map_err(scratch)?;
    let mut insert = keys.prepare("INSERT OR IGNORE INTO k (h) VALUES (?1)").map_err(scratch)?;
    let mut source = source::open(config, None)?;
    let schema = source.discover(&config.key, config.cursor_column.as_deref())?;
    let mut enc = RowEncoder::new(&schema);
    let mut p = Profile::default();
    let texts: Vec<usize> =
        schema.columns.iter().enumerate().filter(|(_, c)| c.ty == ColumnType::Text).map(|(i, _)| i).collect();
    let mut samples: Vec<ColumnSample> = texts.iter().map(|_| ColumnSample::default()).collect();
    let mut scans: Vec<crate::privacy::scan::ColumnScan> = texts.iter().map(|_| Default::default()).collect();
    let mut failure: Option<ProfileError> = None;
    keys.execute_batch("BEGIN").map_err(scratch)?;
    source.scan(&schema, ScanRange::KeyOrder, &mut |row| {
        let step = (|| -> Result<(), ProfileError> {
            enc.encode(row)?;
            p.rows += 1;
            for ((sample, scan), &i) in samples.iter_mut().zip(scans.iter_mut()).zip(&texts) {
                if let Cell::Text(t) = row.cell(i)? {
                    sample.observe_bytes(t);
                    scan.observe(&String::from_utf8_lossy(t));
                }
            }
            if enc.key_has_null() {
                p.null_keys += 1;
            } else if insert.execute([enc.key_hash().as_slice()]).map_err(scratch)? == 0 {
                p.duplicate_keys += 1;
                if p.duplicate_examples.len() < EXAMPLES {
                    p.duplicate_examples.push(String::from_utf8_lossy(enc.key_object()).into_owned());
                }
            }
            Ok(())
        })();
        match step {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    for (sample, &i) in samples.iter().zip(&texts) {
        if let Some(v) = sample.verdict() {
            p.misdecoded.push((schema.columns[i].name.clone(), v));
        }
    }
    for (scan, &i) in scans.iter().zip(&texts) {
        if let Some((kind, n)) = scan.verdict() {
            p.personal.push((schema.columns[i].name.clone(), kind, n, scan.sampled));
        }
    }
    Ok(p)
}
