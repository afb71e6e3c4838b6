//! `max_change_share`: a *sync* that changes more than `max_percent` % of a dataset's live rows is
//! flagged before anyone trusts it.
//!
//! A sync is what one agent captured of one dataset in one poll, as the hub can tell: it opens
//! with the first batch carrying the dataset's changes (the dataset's live rows are counted then,
//! once — never per batch) and closes when the agent's heartbeat reports a capture that covers
//! it (`captured_through_seq` at or past the sync's first sequence) and the ledger has applied
//! that capture. Each batch adds its changes of the dataset; the share is changes ÷ rows before
//! the sync. A first load (no rows before) is never flagged.
//!
//! A flagged sync is an open violation of the dataset's `max_change_share` rule, keyed
//! `{"_kho_sync":"<agent>"}`, recorded in the batch's transaction and counted in
//! `kho_hub_quality_violations_total`. It stays open until a later sync of the same agent closes
//! within the limit. The open syncs live in the writer thread's memory and, per agent, in the
//! warehouse's meta table (`quality.open_syncs.<agent>`, written in the batch's or heartbeat's
//! transaction): after a hub restart the sync in progress goes on counting from where it was.

use std::collections::{BTreeMap, HashMap, HashSet};

use kho_shared::protocol::{Change, Heartbeat};

use super::eval::{Failure, RowVerdict, change_share_exceeded};
use super::ingest::Tally;
use super::periodic::dataset_key;
use super::{Check, Policy};
use crate::catalog::Catalog;
use crate::warehouse::{Warehouse, WarehouseError};

/// One sync in progress.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SyncTally {
    pub first_seq: u64,
    pub rows_before: u64,
    pub changed: u64,
    pub flagged: bool,
}

/// The open syncs of one writer, per (agent, dataset).
#[derive(Debug, Clone, Default)]
pub struct Syncs {
    open: HashMap<(String, String), SyncTally>,
    /// Agents whose stored open syncs have been read since the hub started.
    loaded: HashSet<String>,
}

fn meta_key(agent: &str) -> String {
    format!("quality.open_syncs.{agent}")
}

fn limit_of(catalog: &Catalog, dataset: &str) -> Option<f64> {
    let d = catalog.dataset(dataset)?;
    d.rules.iter().find(|r| r.check == Check::MaxChangeShare).and_then(|r| r.max_percent)
}

fn verdict(agent: &str, seq: u64, failure: Option<String>) -> RowVerdict {
    RowVerdict {
        index: 0,
        seq,
        key: dataset_key("_kho_sync", agent),
        delete: false,
        failures: failure
            .map(|value| Failure {
                rule: Check::MaxChangeShare.name().to_string(),
                column: None,
                value: Some(value),
                policy: Policy::Warn,
            })
            .into_iter()
            .collect(),
    }
}

impl Syncs {
    /// Counts a batch's changes (about to be applied) into `agent`'s syncs, before they are
    /// applied (a new sync counts the rows it starts from), and flags a sync past its limit.
    pub fn add(
        &mut self,
        wh: &mut dyn Warehouse,
        catalog: &Catalog,
        agent: &str,
        changes: &[Change],
        now: &str,
        tally: &mut Tally,
    ) -> Result<(), WarehouseError> {
        let mut per_dataset: Vec<(&str, u64, u64)> = Vec::new();
        for c in changes {
            match per_dataset.iter_mut().find(|(d, _, _)| *d == c.dataset) {
                Some(entry) => entry.1 += 1,
                None => per_dataset.push((c.dataset.as_str(), 1, c.seq)),
            }
        }
        per_dataset.retain(|(dataset, _, _)| limit_of(catalog, dataset).is_some());
        if per_dataset.is_empty() {
            return Ok(());
        }
        self.load(wh, agent)?;
        for (dataset, n, first_seq) in per_dataset {
            let Some(max_percent) = limit_of(catalog, dataset) else { continue };
            let key = (agent.to_string(), dataset.to_string());
            if !self.open.contains_key(&key) {
                let rows_before = wh.live_rows(dataset)?;
                self.open.insert(key.clone(), SyncTally { first_seq, rows_before, changed: 0, flagged: false });
            }
            let Some(sync) = self.open.get_mut(&key) else { continue };
            sync.changed += n;
            if let Some(share) = change_share_exceeded(sync.changed, sync.rows_before, max_percent) {
                let text = format!(
                    "{share:.1}% of {} rows changed by one sync (from seq {}), more than {max_percent}%",
                    sync.rows_before, sync.first_seq
                );
                wh.record_quality(dataset, &[&verdict(agent, sync.first_seq, Some(text))], now)?;
                if !sync.flagged {
                    sync.flagged = true;
                    let rule = Check::MaxChangeShare.name().to_string();
                    *tally.violations.entry((dataset.to_string(), rule, Policy::Warn)).or_default() += 1;
                    tracing::warn!(
                        dataset,
                        agent,
                        share,
                        max_percent,
                        "a sync changed more of the dataset than its rule allows"
                    );
                }
            }
        }
        self.save(wh, agent)
    }

    /// Whether `agent` has syncs open (read from the warehouse the first time the agent is asked
    /// about since the hub started); only then does its heartbeat need [`Syncs::close`].
    pub fn watching(&mut self, wh: &mut dyn Warehouse, catalog: &Catalog, agent: &str) -> Result<bool, WarehouseError> {
        let any_rule = catalog.datasets.iter().any(|d| d.rules.iter().any(|r| r.check == Check::MaxChangeShare));
        if !any_rule && self.open.is_empty() {
            return Ok(false);
        }
        self.load(wh, agent)?;
        Ok(self.open.keys().any(|(a, _)| a == agent))
    }

    /// Reads `agent`'s stored open syncs once per hub start. An unreadable record is logged
    /// and dropped: its syncs count afresh from the next batch, as before they were stored.
    fn load(&mut self, wh: &mut dyn Warehouse, agent: &str) -> Result<(), WarehouseError> {
        if !self.loaded.insert(agent.to_string()) {
            return Ok(());
        }
        let Some(text) = wh.meta(&meta_key(agent))? else { return Ok(()) };
        match serde_json::from_str::<BTreeMap<String, SyncTally>>(&text) {
            Ok(stored) => {
                for (dataset, sync) in stored {
                    self.open.entry((agent.to_string(), dataset)).or_insert(sync);
                }
            }
            Err(e) => tracing::warn!(agent, error = %e, "unreadable stored open syncs; counting afresh"),
        }
        Ok(())
    }

    /// Stores `agent`'s open syncs (in the current transaction).
    fn save(&self, wh: &mut dyn Warehouse, agent: &str) -> Result<(), WarehouseError> {
        let mine: BTreeMap<&str, &SyncTally> =
            self.open.iter().filter(|((a, _), _)| a == agent).map(|((_, d), s)| (d.as_str(), s)).collect();
        let text = serde_json::to_string(&mine).unwrap_or_else(|_| "{}".into());
        wh.set_meta(&meta_key(agent), &text)
    }

    /// Closes the syncs `heartbeat` reports as captured and applied (`applied`: the agent's
    /// ledger); one that stayed within its limit clears the agent's earlier flag.
    pub fn close(
        &mut self,
        wh: &mut dyn Warehouse,
        heartbeat: &Heartbeat,
        applied: u64,
        now: &str,
    ) -> Result<(), WarehouseError> {
        self.load(wh, &heartbeat.agent)?;
        let before = self.open.len();
        for report in &heartbeat.datasets {
            let key = (heartbeat.agent.clone(), report.dataset.clone());
            let Some(sync) = self.open.get(&key) else { continue };
            let covered = report.captured_through_seq >= sync.first_seq && report.captured_through_seq <= applied;
            if !covered {
                continue;
            }
            if !sync.flagged {
                wh.record_quality(&report.dataset, &[&verdict(&heartbeat.agent, sync.first_seq, None)], now)?;
            }
            self.open.remove(&key);
        }
        if self.open.len() == before {
            return Ok(());
        }
        self.save(wh, &heartbeat.agent)
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}
