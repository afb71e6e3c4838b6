//! Operator commands for CDC datasets: what `kho-agent check` verifies and `kho-agent
//! resnapshot`.

use crate::config::{AgentConfig, DatasetConfig, Mode, SourceConfig};
use crate::lock::{AgentLock, LockError};
use crate::outbox::{Outbox, OutboxError};
use crate::source::SourceError;
use crate::source::postgres::cdc::CdcError;
use crate::source::postgres::cdc::admin::{Admin, Finding};

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no dataset named {0} in the config")]
    UnknownDataset(String),
    #[error("dataset {0} is not a mode = \"cdc\" dataset")]
    NotCdc(String),
    #[error("{0}; stop the agent first (resnapshot changes its capture state)")]
    Running(#[from] LockError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cdc(#[from] CdcError),
}

/// The CDC prerequisites of `d` on its server (wal_level, privilege, slots, replica identity,
/// publication), each with the exact fix for the DBA.
pub fn check(d: &DatasetConfig) -> Result<Vec<Finding>, OpsError> {
    let SourceConfig::Postgres(remote) = &d.source else {
        return Err(OpsError::NotCdc(d.name.clone()));
    };
    let mut admin = Admin::connect(&d.name, remote)?;
    let table = d.table.clone().unwrap_or_default();
    Ok(admin.check(&table, &d.cdc.publication_name("kho", &d.name), d.cdc.create_publication)?)
}

/// `kho-agent resnapshot <dataset>`: forgets the dataset's replication position and drops its
/// slot, so the next `run` takes a new consistent snapshot (compared with the rows already sent:
/// changed rows are upserted, vanished rows deleted) and streams from there. Returns a summary.
pub fn resnapshot(config: &AgentConfig, dataset: &str) -> Result<String, OpsError> {
    let d =
        config.datasets.iter().find(|d| d.name == dataset).ok_or_else(|| OpsError::UnknownDataset(dataset.into()))?;
    if d.mode != Mode::Cdc {
        return Err(OpsError::NotCdc(dataset.into()));
    }
    let SourceConfig::Postgres(remote) = &d.source else {
        return Err(OpsError::NotCdc(dataset.into()));
    };
    let _lock = AgentLock::acquire(&config.agent.data_dir)?;
    let outbox = Outbox::open(&config.outbox_path())?;
    let had = outbox.cdc_reset(dataset)?;
    let slot = d.cdc.slot_name("kho", dataset);
    let dropped = match Admin::connect(dataset, remote).map_err(OpsError::from).and_then(|mut a| {
        let exists = a.slot(&slot)?.is_some();
        if exists {
            a.drop_slot(&slot)?;
        }
        Ok(exists)
    }) {
        Ok(true) => format!("replication slot {slot} dropped"),
        Ok(false) => format!("replication slot {slot} did not exist"),
        Err(e) => format!("replication slot {slot} not dropped now ({e}); the agent drops it when it starts"),
    };
    Ok(format!(
        "dataset {dataset}: {}; {dropped}. The next `kho-agent run` takes a new consistent snapshot and streams from there.",
        if had { "replication position forgotten" } else { "no replication position was stored" }
    ))
}
