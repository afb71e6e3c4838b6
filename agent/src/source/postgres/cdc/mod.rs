//! PostgreSQL change data capture through logical replication (`mode = "cdc"`, issue 10).
//!
//! - [`config`]: `[dataset.cdc]` (slot and publication names).
//! - [`pgoutput`]: the pure decoder of pgoutput row messages and their text values.
//! - [`admin`]: an ordinary SQL session for the publication, the slot's state and lag, and the
//!   prerequisites `kho-agent check` verifies.
//! - [`session`]: the replication session (the `pgwire-replication` client on a small private
//!   runtime): creates the slot with an exported snapshot, streams, confirms positions.
//!
//! The capture loop that ties these to the outbox is [`crate::detect::cdc`].

pub mod admin;
pub mod config;
pub mod pgoutput;
pub mod session;

pub use config::CdcConfig;

use crate::config::{DatasetConfig, Mode, SourceConfig};

/// The command that recovers a dataset whose replication position is lost.
pub fn recovery_command(dataset: &str) -> String {
    format!("kho-agent resnapshot {dataset}")
}

/// Why change data capture cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error(
        "dataset {dataset}: replication slot {slot:?} no longer exists on {server} although changes were \
         streamed from it (stored position {lsn}); changes since then cannot be read from the WAL any more. \
         Capture of this dataset is STOPPED. Recover with `{}` (takes a new consistent snapshot, then streams)",
        recovery_command(dataset)
    )]
    SlotGone { dataset: String, slot: String, server: String, lsn: String },
    #[error(
        "dataset {dataset}: replication slot {slot:?} on {server} cannot resume from the stored position {lsn}: \
         {reason}. Capture of this dataset is STOPPED. Recover with `{}`",
        recovery_command(dataset)
    )]
    PositionUnavailable { dataset: String, slot: String, server: String, lsn: String, reason: String },
    #[error("dataset {dataset}: {server}: {problem}")]
    Setup { dataset: String, server: String, problem: String },
    #[error("dataset {dataset}: replication stream from {server}: {problem}")]
    Stream { dataset: String, server: String, problem: String, transient: bool },
    #[error("dataset {dataset}: {problem}")]
    Decode { dataset: String, problem: String },
}

impl CdcError {
    /// Whether retrying later may succeed without an operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, CdcError::Stream { transient: true, .. })
    }
}

/// Problems with a dataset's CDC settings as `(field, problem)`; `i` is its index in the config.
pub fn validate(d: &DatasetConfig, i: usize) -> Vec<(String, String)> {
    let f = |name: &str| format!("dataset[{i}].{name}");
    let mut p = Vec::new();
    if d.mode != Mode::Cdc {
        if d.cdc != CdcConfig::default() {
            p.push((f("cdc"), "only used with mode = \"cdc\"".to_string()));
        }
        return p;
    }
    match &d.source {
        SourceConfig::Postgres(r) if r.sslmode == crate::source::remote::SslMode::Require => p.push((
            f("source.sslmode"),
            "TLS is not yet supported on the replication connection of mode = \"cdc\" (use it on the database \
             host or a trusted LAN)"
                .to_string(),
        )),
        SourceConfig::Postgres(_) => {}
        _ => p.push((f("mode"), "\"cdc\" needs a PostgreSQL source (kind = \"postgres\")".to_string())),
    }
    if d.query.is_some() {
        p.push((f("query"), "mode = \"cdc\" streams a table: give table, not query".to_string()));
    }
    if d.schedule.is_some() {
        p.push((f("schedule"), "not used with mode = \"cdc\" (changes stream continuously)".to_string()));
    }
    p.extend(d.cdc.validate(&f("cdc")));
    p
}
