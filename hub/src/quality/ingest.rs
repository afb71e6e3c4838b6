//! The applier's quality step: checks a batch's changes against the catalogue's rules inside the
//! batch's transaction, then records the verdicts there too, so the rows and what is known about
//! their quality are committed (or rolled back) together.

use std::collections::BTreeMap;

use kho_shared::protocol::{Change, DatasetSchema, QuarantinedRow, RowRef};
use serde_json::{Map, Value};

use super::Policy;
use super::eval::{Checker, Lookup, RowVerdict};
use crate::catalog::Catalog;
use crate::warehouse::{HeldRow, Warehouse, WarehouseError};

/// What one batch's checks found, for the metrics (counted once the batch is committed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Rows checked per dataset.
    pub checked: BTreeMap<String, u64>,
    /// Violations per (dataset, rule, policy).
    pub violations: BTreeMap<(String, String, Policy), u64>,
    /// Rows held in quarantine per dataset.
    pub quarantined: BTreeMap<String, u64>,
}

/// A dataset's verdicts in one batch.
pub struct Checked {
    pub dataset: String,
    pub verdicts: Vec<RowVerdict>,
    /// Whether any of the dataset's rules rejects (then its rows may enter or leave quarantine).
    pub rejects: bool,
}

/// Most quarantined rows listed in one ack (the warehouse holds them all).
pub const MAX_ACK_ROWS: usize = 1000;

/// Whether a `reject` rule of one of `schemas`' datasets may have held rows in quarantine.
pub fn may_hold(catalog: &Catalog, schemas: &[DatasetSchema]) -> bool {
    schemas
        .iter()
        .filter_map(|s| catalog.dataset(&s.dataset))
        .any(|d| d.rules.iter().any(|r| r.policy == Policy::Reject))
}

/// Indexes (into the checked changes) of the rows a `reject` rule holds back.
pub fn rejected(checked: &[Checked]) -> std::collections::HashSet<usize> {
    checked.iter().flat_map(|c| c.verdicts.iter().filter(|v| v.rejected()).map(|v| v.index)).collect()
}

/// Puts the rejected rows in quarantine and releases the clean ones that were there. Returns
/// what the ack tells the agent (at most [`MAX_ACK_ROWS`] quarantined rows).
pub fn hold(
    wh: &mut dyn Warehouse,
    agent: &str,
    checked: &[Checked],
    changes: &[Change],
    now: &str,
) -> Result<(Vec<QuarantinedRow>, Vec<RowRef>), WarehouseError> {
    let (mut quarantined, mut released) = (Vec::new(), Vec::new());
    for c in checked.iter().filter(|c| c.rejects) {
        let last = c.last_per_key();
        let held: Vec<HeldRow<'_>> = last
            .iter()
            .filter(|v| v.rejected())
            .map(|v| HeldRow { key: &v.key, seq: v.seq, reason: v.reason(), row: changes[v.index].row.as_ref() })
            .collect();
        let clean: Vec<&str> = last.iter().filter(|v| !v.rejected()).map(|v| v.key.as_str()).collect();
        for key in wh.quarantine(&c.dataset, agent, &held, &clean, now)? {
            released.push(RowRef { dataset: c.dataset.clone(), key });
        }
        for h in held {
            if quarantined.len() < MAX_ACK_ROWS {
                quarantined.push(QuarantinedRow {
                    dataset: c.dataset.clone(),
                    key: h.key.to_string(),
                    reason: h.reason,
                });
            }
        }
    }
    released.truncate(MAX_ACK_ROWS);
    Ok((quarantined, released))
}

/// The warehouse as a [`Lookup`]; the first failure is kept and fails the batch afterwards.
struct WarehouseLookup<'a> {
    wh: &'a mut dyn Warehouse,
    error: Option<WarehouseError>,
}

impl Checked {
    /// The last verdict of each key (a row written twice in one batch counts as its last write),
    /// in batch order: what the violation and quarantine records must end up reflecting.
    pub fn last_per_key(&self) -> Vec<&RowVerdict> {
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, v) in self.verdicts.iter().enumerate() {
            last.insert(v.key.as_str(), i);
        }
        self.verdicts.iter().enumerate().filter(|(i, v)| last.get(v.key.as_str()) == Some(i)).map(|(_, v)| v).collect()
    }
}

impl WarehouseLookup<'_> {
    fn keep(&mut self, r: Result<bool, WarehouseError>) -> bool {
        r.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            false
        })
    }
}

impl Lookup for WarehouseLookup<'_> {
    fn exists(&mut self, dataset: &str, column: &str, value: &str) -> bool {
        let r = self.wh.value_exists(dataset, column, value);
        self.keep(r)
    }
    fn taken_by_other(&mut self, dataset: &str, column: &str, value: &str, key: &Map<String, Value>) -> bool {
        let r = self.wh.value_taken(dataset, column, value, key);
        self.keep(r)
    }
    fn existing(&mut self, dataset: &str, column: &str, values: &[&str]) -> Vec<bool> {
        self.wh.values_exist(dataset, column, values).unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            vec![false; values.len()]
        })
    }
}

/// Checks `changes` (about to be applied) of every dataset that has rules. Lookups see the
/// warehouse as it was before this batch plus the batch's own upserts.
pub fn check(
    wh: &mut dyn Warehouse,
    catalog: &Catalog,
    schemas: &[DatasetSchema],
    changes: &[Change],
    today: jiff::civil::Date,
) -> Result<Vec<Checked>, WarehouseError> {
    let mut out = Vec::new();
    for schema in schemas {
        let Some(entry) = catalog.dataset(&schema.dataset).filter(|d| !d.rules.is_empty()) else { continue };
        if !changes.iter().any(|c| c.dataset == schema.dataset) {
            continue;
        }
        let checker = Checker::new(&schema.dataset, &entry.rules);
        if checker.is_empty() {
            continue;
        }
        let mut lookup = WarehouseLookup { wh: &mut *wh, error: None };
        let verdicts = checker.check(changes, &schema.key, today, &mut lookup);
        if let Some(e) = lookup.error {
            return Err(e);
        }
        let rejects = entry.rules.iter().any(|r| r.policy == Policy::Reject);
        out.push(Checked { dataset: schema.dataset.clone(), verdicts, rejects });
    }
    Ok(out)
}

/// Records the verdicts (replacing each row's earlier violations) and counts them into `tally`.
pub fn record(wh: &mut dyn Warehouse, checked: &[Checked], now: &str, tally: &mut Tally) -> Result<(), WarehouseError> {
    for c in checked {
        wh.record_quality(&c.dataset, &c.last_per_key(), now)?;
        *tally.checked.entry(c.dataset.clone()).or_default() += c.verdicts.iter().filter(|v| !v.delete).count() as u64;
        for f in c.verdicts.iter().flat_map(|v| &v.failures) {
            *tally.violations.entry((c.dataset.clone(), f.rule.clone(), f.policy)).or_default() += 1;
        }
        let held = c.verdicts.iter().filter(|v| v.rejected()).count() as u64;
        if held > 0 {
            *tally.quarantined.entry(c.dataset.clone()).or_default() += held;
        }
    }
    Ok(())
}
