//! How a dataset's changes are detected (`mode` in `[[dataset]]`).

use serde::Deserialize;

/// How changes are detected in a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Rows whose cursor column is ≥ the last value seen.
    Cursor,
    /// Full read compared with stored row hashes (also finds deletes).
    Snapshot,
    /// PostgreSQL logical replication ([`crate::source::postgres::cdc`]).
    Cdc,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cursor => "cursor",
            Mode::Snapshot => "snapshot",
            Mode::Cdc => "cdc",
        }
    }
}
