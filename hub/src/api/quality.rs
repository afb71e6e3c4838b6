//! `GET /api/v1/quality[?department=code][&dataset=id]`: per catalogue dataset with rules, the
//! share of its live rows passing each rule, the open violations and the newest ones with their
//! row keys; with `dataset=`, that dataset only and its history per period (newest first).
//!
//! A violation is *open* while the row it was found on stays as it was: the row's next write
//! (a fix at the source) replaces its violations, a delete removes them. The document is built by
//! the pure [`build`] from the catalogue, the warehouse's row counts and its violation records.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use kho_shared::protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, CatalogHandle};
use crate::error::ApiError;
use crate::quality::{Check, Policy};
use crate::warehouse::{
    QualityData, QualityPeriod, StoredQuarantine, StoredViolation, WarehouseReader, WarehouseStatus,
};

/// Newest violations listed per dataset.
pub const LATEST_PER_DATASET: usize = 20;

#[derive(Clone)]
pub struct QualityApi {
    pub reader: Arc<dyn WarehouseReader>,
    pub catalog: CatalogHandle,
}

#[derive(Debug, Clone, Serialize)]
pub struct QualityDocument {
    pub generated_at: String,
    pub datasets: Vec<DatasetQuality>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetQuality {
    pub dataset: String,
    pub department: String,
    /// Live rows in the warehouse.
    pub rows: u64,
    /// Rows held in quarantine by `reject` rules (not in `rows`).
    pub quarantined: u64,
    /// The lowest passing share among the row rules (1.0 when every row passes every rule);
    /// `null` before any row arrived.
    pub score: Option<f64>,
    pub rules: Vec<RuleQuality>,
    /// Newest open violations first (at most [`LATEST_PER_DATASET`]).
    pub latest: Vec<StoredViolation>,
    /// Newest quarantined rows first, with the reason and the row as sent.
    pub latest_quarantined: Vec<StoredQuarantine>,
    /// Per period of the dataset's schedule, newest first: the score and open violations per
    /// rule as last measured in that period (only with `?dataset=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<QualityPeriod>>,
}

/// Periods of history listed with `?dataset=`.
pub const HISTORY_PERIODS: usize = 24;

#[derive(Debug, Clone, Serialize)]
pub struct RuleQuality {
    pub rule: String,
    pub check: Check,
    pub column: Option<String>,
    pub policy: Policy,
    /// Rows currently breaking the rule.
    pub violations: u64,
    /// Share of rows passing among the live and the quarantined ones (`null` for dataset-level
    /// rules, and before any row arrived).
    pub passing_share: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct QualityQuery {
    pub department: Option<String>,
    pub dataset: Option<String>,
}

/// The quality document. Pure.
pub fn build(
    generated_at: String,
    catalog: &Catalog,
    status: &WarehouseStatus,
    data: &QualityData,
    department: Option<&str>,
) -> QualityDocument {
    let rows: HashMap<&str, u64> = status.datasets.iter().map(|d| (d.dataset.as_str(), d.rows)).collect();
    let open: HashMap<(&str, &str), u64> = data.open.iter().map(|(d, r, n)| ((d.as_str(), r.as_str()), *n)).collect();
    let mut datasets = Vec::new();
    for d in catalog.datasets.iter().filter(|d| !d.rules.is_empty()) {
        if department.is_some_and(|code| code != d.department) {
            continue;
        }
        let live = rows.get(d.id.as_str()).copied().unwrap_or(0);
        let held = data.quarantined.iter().find(|(ds, _)| ds == &d.id).map_or(0, |(_, n)| *n);
        let known = live + held;
        let rules: Vec<RuleQuality> = d
            .rules
            .iter()
            .map(|r| {
                let id = r.id();
                let violations = open.get(&(d.id.as_str(), id.as_str())).copied().unwrap_or(0);
                let passing_share = (r.check.needs_column() && known > 0)
                    .then(|| known.saturating_sub(violations) as f64 / known as f64);
                RuleQuality {
                    rule: id,
                    check: r.check,
                    column: r.column.clone(),
                    policy: r.policy,
                    violations,
                    passing_share,
                }
            })
            .collect();
        let score = rules.iter().filter_map(|r| r.passing_share).reduce(f64::min).or((known > 0).then_some(1.0));
        // Violations of a rule no longer in the catalogue are not shown (they stay stored until the
        // row is written again, and count for nothing: the counts above go by declared rules).
        let latest = data
            .latest
            .iter()
            .filter(|v| v.dataset == d.id && rules.iter().any(|r| r.rule == v.rule))
            .cloned()
            .collect();
        let latest_quarantined = data.latest_quarantined.iter().filter(|q| q.dataset == d.id).cloned().collect();
        datasets.push(DatasetQuality {
            dataset: d.id.clone(),
            department: d.department.clone(),
            rows: live,
            quarantined: held,
            score,
            rules,
            latest,
            latest_quarantined,
            history: None,
        });
    }
    QualityDocument { generated_at, datasets }
}

pub(super) async fn get_quality(
    State(api): State<QualityApi>,
    Query(query): Query<QualityQuery>,
) -> Result<Json<QualityDocument>, ApiError> {
    let catalog = api.catalog.get();
    if let Some(code) = &query.department
        && catalog.department(code).is_none()
    {
        return Err(ApiError::new(ErrorCode::Malformed, format!("department {code:?} is not in the catalogue")));
    }
    if let Some(id) = &query.dataset
        && catalog.dataset(id).is_none_or(|d| d.rules.is_empty())
    {
        return Err(ApiError::new(
            ErrorCode::Malformed,
            format!("dataset {id:?} has no quality rules in the catalogue"),
        ));
    }
    let reader = Arc::clone(&api.reader);
    let one = query.dataset.clone();
    let (status, data, history) = tokio::task::spawn_blocking(move || {
        let history = match &one {
            Some(id) => Some(reader.quality_history(id, HISTORY_PERIODS)?),
            None => None,
        };
        Ok::<_, crate::warehouse::WarehouseError>((reader.status()?, reader.quality(LATEST_PER_DATASET)?, history))
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("quality task failed: {e}")))?
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let mut doc = build(crate::apply::now_rfc3339(), &catalog, &status, &data, query.department.as_deref());
    if let Some(id) = &query.dataset {
        doc.datasets.retain(|d| &d.dataset == id);
        for d in &mut doc.datasets {
            d.history = history.clone();
        }
    }
    Ok(Json(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::StoredViolation;

    const CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[dataset]]
id = "ho_so"
title = "Hồ sơ"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"

[[dataset.rule]]
check = "not_null"
column = "ma"
"#;

    fn violation(rule: &str) -> StoredViolation {
        StoredViolation {
            dataset: "ho_so".into(),
            rule: rule.into(),
            column: Some("x".into()),
            key: "{\"id\":1}".into(),
            value: None,
            seq: 1,
            at: "2026-12-03T00:00:00Z".into(),
        }
    }

    #[test]
    fn violations_of_a_rule_removed_from_the_catalogue_are_not_listed() {
        let catalog = Catalog::from_toml_str(CATALOG, "test").expect("catalogue");
        let data = QualityData {
            open: vec![("ho_so".into(), "not_null:ma".into(), 1), ("ho_so".into(), "unique:so".into(), 5)],
            latest: vec![violation("not_null:ma"), violation("unique:so")],
            ..QualityData::default()
        };
        let doc = build("now".into(), &catalog, &WarehouseStatus::default(), &data, None);
        let ho_so = &doc.datasets[0];
        let listed: Vec<&str> = ho_so.latest.iter().map(|v| v.rule.as_str()).collect();
        assert_eq!(listed, ["not_null:ma"]);
        assert_eq!(
            ho_so.rules.iter().map(|r| (r.rule.as_str(), r.violations)).collect::<Vec<_>>(),
            [("not_null:ma", 1)]
        );
    }
}
