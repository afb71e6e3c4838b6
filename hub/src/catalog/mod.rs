//! The dataset catalogue (danh mục dữ liệu): which departments exist and whom to call, which
//! datasets each owes the warehouse and when, and which operational scenarios depend on them.
//!
//! The catalogue is a TOML file named by the hub config (`[catalog] path = "catalog.toml"`); the
//! full format is in `deploy/examples/catalog.toml`. Parsing refuses unknown fields; [`validate`]
//! then reports every bad field by entry and name (`dataset[ho_so_tthc].deadline.day`) and checks
//! references (dataset → department, scenario → office and input datasets). A [`Catalog`] is
//! immutable once built: [`reload`] swaps a whole new one in (SIGHUP or a changed file), and a bad
//! new file leaves the old one in force.
//!
//! **Write permission merge rule.** An agent may write a dataset when the hub config lists the
//! dataset under that agent (`[[agent]] datasets`) **or** the catalogue lists the agent under the
//! dataset (`[[dataset]] agents`). The catalogue only adds permissions; removing a dataset from
//! the catalogue never revokes what the hub config grants. Tokens always come from the hub config,
//! so a catalogue naming an agent the config does not know grants nothing (a warning is logged).

pub mod reload;
mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kho_shared::freshness::readiness::ScenarioInput;
use kho_shared::freshness::{DatasetRule, UpdateKind};
use kho_shared::schedule::{Cadence, Deadline, Schedule};
use serde::{Deserialize, Serialize};

pub use crate::config::FieldProblem;
pub use reload::CatalogHandle;
pub use validate::validate;

/// A department's contact for data updates (trách nhiệm cập nhật).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A department (sở, ban, ngành) or office.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    pub code: String,
    pub name: String,
    pub contact: Contact,
}

/// One dataset the warehouse expects, with its owner and schedule.
///
/// The schedule's fields (`cadence`, `deadline`, `grace`) sit flat in the entry; see
/// [`kho_shared::schedule`] for their forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub id: String,
    /// Vietnamese title, as the regulation's catalogue names it.
    pub title: String,
    /// Owning department's code.
    pub department: String,
    /// Agents allowed to write it (added to the hub config's grants).
    #[serde(default)]
    pub agents: Vec<String>,
    pub cadence: Cadence,
    #[serde(default)]
    pub deadline: Deadline,
    #[serde(default, with = "humantime_serde")]
    pub grace: Duration,
    pub update_kind: UpdateKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_field: Option<String>,
    #[serde(default)]
    pub open_data: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// Data-quality rules (`[[dataset.rule]]`), see [`crate::quality`].
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::quality::Rule>,
}

impl Dataset {
    pub fn schedule(&self) -> Schedule {
        Schedule { cadence: self.cadence, deadline: self.deadline, grace: self.grace }
    }

    pub fn rule(&self) -> DatasetRule {
        DatasetRule {
            schedule: self.schedule(),
            update_kind: self.update_kind,
            freshness_field: self.freshness_field.clone(),
        }
    }
}

/// An operational scenario (kịch bản điều hành) and the data it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    /// Code of the owning office (a department entry).
    pub office: String,
    pub inputs: Vec<ScenarioInput>,
}

/// The whole catalogue, as written in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default, rename = "department")]
    pub departments: Vec<Department>,
    #[serde(default, rename = "dataset")]
    pub datasets: Vec<Dataset>,
    #[serde(default, rename = "scenario")]
    pub scenarios: Vec<Scenario>,
}

/// Why a catalogue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalogue {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("catalogue {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("catalogue {origin} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid { origin: String, problems: Vec<FieldProblem> },
}

fn list(problems: &[FieldProblem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

impl Catalog {
    /// Reads, parses and validates the catalogue file at `path`.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CatalogError::Read { path: path.to_path_buf(), source })?;
        Catalog::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates catalogue text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text)
            .map_err(|e| CatalogError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        let problems = validate(&catalog);
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(CatalogError::Invalid { origin: origin.to_string(), problems })
        }
    }

    pub fn department(&self, code: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.code == code)
    }

    pub fn dataset(&self, id: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.id == id)
    }

    pub fn scenario(&self, id: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.id == id)
    }

    /// Whether the catalogue grants `agent` the right to write `dataset` (see the merge rule).
    pub fn allows(&self, agent: &str, dataset: &str) -> bool {
        self.dataset(dataset).is_some_and(|d| d.agents.iter().any(|a| a == agent))
    }

    /// The `freshness_field` of every dataset that has one, for the applier.
    pub fn freshness_fields(&self) -> HashMap<String, String> {
        self.datasets.iter().filter_map(|d| Some((d.id.clone(), d.freshness_field.clone()?))).collect()
    }
}

#[cfg(test)]
mod tests;
