//! The periodic quality pass: what the ingest check cannot judge batch by batch.
//!
//! Every `freshness.quality_interval` the loop ([`run_loop`]):
//! 1. plans the pass from the catalogue and the clock ([`plan`], pure): per dataset, one
//!    set-based full check per `unique` / `reference` rule and one count per `row_count` rule
//!    (its latest *closed* period, rows by the dataset's `freshness_field`, or by arrival time
//!    when it has none);
//! 2. has the applier (the warehouse's single writer) run it in one transaction ([`run`]): each
//!    check's findings become the rule's open violations, so a `reference` violation closes when
//!    the referenced value arrives later, and opens when the referenced row is deleted;
//! 3. reads the results back, publishes them for the scorecard and the dashboard
//!    ([`QualityCell`]) and the metrics, and stores each dataset's quality in its current
//!    schedule period ([`history_rows`], pure): the last value written in a period is the value
//!    at its close.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use kho_shared::schedule::{Cadence, local_date};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::eval::row_count_problem;
use super::{Check, Period};
use crate::api::quality::{LATEST_PER_DATASET, QualityDocument};
use crate::apply::{ApplierHandle, Records};
use crate::catalog::{Catalog, CatalogHandle};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::warehouse::{Found, FullCheck, QualityPeriod, Warehouse, WarehouseError, WarehouseReader};

/// One `row_count` rule's count over one closed period.
#[derive(Debug, Clone, PartialEq)]
pub struct CountCheck {
    /// `None`: by arrival time (`_kho_applied_at`).
    pub column: Option<String>,
    pub label: String,
    pub start: String,
    pub end: String,
    pub min_rows: Option<u64>,
    pub max_rows: Option<u64>,
}

/// One dataset's part of a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetWork {
    pub dataset: String,
    /// `(rule id, column, check)`.
    pub full: Vec<(String, String, FullCheck)>,
    pub counts: Vec<CountCheck>,
}

/// What one pass asks of the writer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Work {
    /// Now, RFC 3339 (the `at` of the violations it opens).
    pub at: String,
    pub datasets: Vec<DatasetWork>,
}

fn cadence(p: Period) -> Cadence {
    match p {
        Period::Day => Cadence::Daily,
        Period::Month => Cadence::Monthly,
        Period::Quarter => Cadence::Quarterly,
        Period::Year => Cadence::Yearly,
    }
}

/// The pass's work at `now`. Pure.
pub fn plan(catalog: &Catalog, now: Timestamp) -> Work {
    let mut datasets = Vec::new();
    for d in catalog.datasets.iter().filter(|d| !d.rules.is_empty()) {
        let mut work = DatasetWork { dataset: d.id.clone(), full: Vec::new(), counts: Vec::new() };
        for r in &d.rules {
            match (r.check, &r.column) {
                (Check::Unique, Some(column)) => {
                    work.full.push((r.id(), column.clone(), FullCheck::Unique { column: column.clone() }))
                }
                (Check::Reference, Some(column)) => work.full.push((
                    r.id(),
                    column.clone(),
                    FullCheck::Reference {
                        column: column.clone(),
                        dataset: r.dataset.clone().unwrap_or_default(),
                        ref_column: r.ref_column.clone().unwrap_or_else(|| column.clone()),
                    },
                )),
                (Check::RowCount, _) => {
                    let Some(period) = r.period else { continue };
                    let c = cadence(period);
                    let Ok(closed) = c.period_containing(now).and_then(|p| c.prev(&p)) else { continue };
                    let column = d.freshness_field.clone();
                    let (start, end) = match column {
                        Some(_) => (local_date(closed.start).to_string(), local_date(closed.end).to_string()),
                        None => (format!("{:.3}", closed.start), format!("{:.3}", closed.end)),
                    };
                    work.counts.push(CountCheck {
                        column,
                        label: closed.label,
                        start,
                        end,
                        min_rows: r.min_rows,
                        max_rows: r.max_rows,
                    });
                }
                _ => {}
            }
        }
        if !work.full.is_empty() || !work.counts.is_empty() {
            datasets.push(work);
        }
    }
    Work { at: format!("{:.3}", now), datasets }
}

/// The key a dataset-level violation is recorded under (never a row's key: `_kho_` names are
/// reserved for the hub).
pub fn dataset_key(name: &str, value: &str) -> String {
    json!({ name: value }).to_string()
}

/// Runs `work` on the writer, inside the caller's transaction.
pub fn run(wh: &mut dyn Warehouse, work: &Work) -> Result<(), WarehouseError> {
    for d in &work.datasets {
        for (rule, column, check) in &d.full {
            let found = wh.full_check(&d.dataset, check)?;
            let (opened, closed) = wh.replace_violations(&d.dataset, rule, Some(column), &found, &work.at)?;
            if opened + closed > 0 {
                tracing::info!(dataset = %d.dataset, rule, opened, closed, open = found.len(), "full quality check");
            }
        }
        // Only the latest closed period's verdict stays open; earlier ones are in the history.
        let mut found = Vec::new();
        for c in &d.counts {
            let n = wh.rows_in_period(&d.dataset, c.column.as_deref(), &c.start, &c.end)?;
            if let Some(problem) = row_count_problem(n, c.min_rows, c.max_rows) {
                let value = format!("{}: {problem}", c.label);
                found.push(Found { key: dataset_key("_kho_period", &c.label), value: Some(value), seq: 0 });
            }
        }
        if !d.counts.is_empty() {
            wh.replace_violations(&d.dataset, Check::RowCount.name(), None, &found, &work.at)?;
        }
    }
    Ok(())
}

/// Each dataset's quality as of `doc`, labelled with its schedule's current period. Pure.
pub fn history_rows(catalog: &Catalog, doc: &QualityDocument, now: Timestamp) -> Vec<QualityPeriod> {
    let mut out = Vec::new();
    for d in &doc.datasets {
        let Some(entry) = catalog.dataset(&d.dataset) else { continue };
        let Ok(period) = entry.cadence.period_containing(now) else { continue };
        let rules: BTreeMap<String, u64> = d.rules.iter().map(|r| (r.rule.clone(), r.violations)).collect();
        out.push(QualityPeriod {
            dataset: d.dataset.clone(),
            period: period.label,
            period_start: format!("{:.3}", period.start),
            period_end: format!("{:.3}", period.end),
            rows: d.rows,
            quarantined: d.quarantined,
            score: d.score,
            rules,
            at: format!("{:.3}", now),
        });
    }
    out
}

/// The latest quality document, for the scorecard and the dashboard (`None` before the first pass).
#[derive(Clone, Default)]
pub struct QualityCell {
    inner: Arc<RwLock<Option<Arc<QualityDocument>>>>,
}

impl QualityCell {
    pub fn get(&self) -> Option<Arc<QualityDocument>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, doc: QualityDocument) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(doc));
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("the applier refused the pass: {0}")]
    Apply(#[from] crate::apply::ApplyError),
    #[error("reader task failed: {0}")]
    Task(String),
}

/// What the loop needs.
#[derive(Clone)]
pub struct Checker {
    pub reader: Arc<dyn WarehouseReader>,
    pub applier: ApplierHandle,
    pub catalog: CatalogHandle,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub cell: QualityCell,
    /// Only the leader writes (full checks, history); every instance reads and publishes.
    pub leadership: crate::leader::Leadership,
}

impl Checker {
    /// One pass: checks, then the read-back, the published document and the history.
    pub async fn pass(&self) -> Result<(), PassError> {
        let catalog = self.catalog.get();
        let now = self.clock.now();
        let leader = self.leadership.is_leader();
        let work = plan(&catalog, now);
        if leader && !work.datasets.is_empty() {
            self.applier.record(Records { quality: Some(Arc::new(work)), ..Records::default() }).await?;
        }
        let reader = Arc::clone(&self.reader);
        let (status, data) = tokio::task::spawn_blocking(move || {
            Ok::<_, WarehouseError>((reader.status()?, reader.quality(LATEST_PER_DATASET)?))
        })
        .await
        .map_err(|e| PassError::Task(e.to_string()))??;
        let doc = crate::api::quality::build(format!("{now:.3}"), &catalog, &status, &data, None);
        let history = history_rows(&catalog, &doc, now);
        if leader && !history.is_empty() {
            self.applier.record(Records { quality_history: history, ..Records::default() }).await?;
        }
        self.metrics.set_quality(&doc);
        self.cell.set(doc);
        Ok(())
    }

    /// Runs passes every `interval` until `shutdown` (the first at once).
    pub async fn run_loop(self, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.pass().await {
                tracing::error!(error = %e, "quality pass failed; the next one tries again");
            }
        }
        tracing::info!("quality checker stopped");
    }
}
