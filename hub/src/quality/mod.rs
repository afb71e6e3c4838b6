//! Data-quality rules (quy tắc chất lượng dữ liệu) declared per dataset in the catalogue, and
//! their checking.
//!
//! A dataset lists its rules as `[[dataset.rule]]` entries (format in
//! `deploy/examples/catalog.toml`): `check` names the kind, `column` the column it applies to,
//! `policy` what happens to a violating row (`warn`: loaded and recorded; `reject`: held back).
//! [`validate_rules`] names every bad field (`dataset[x].rule[2].pattern`); [`eval`] checks one
//! batch's changes with no I/O (each row against the row rules; `unique` among the batch's rows;
//! `reference` through a [`eval::Lookup`] the caller supplies).

pub mod eval;
pub mod ingest;
pub mod periodic;
#[cfg(test)]
mod periodic_tests;
pub mod share;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::config::FieldProblem;
use kho_shared::ident::{check_column_name, check_dataset_name};

/// The kinds of rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The column has a value (not missing, not null, not blank text).
    NotNull,
    /// No two rows share the column's value.
    Unique,
    /// A number or date within `min` / `max` (inclusive; `"today"` for a date bound).
    Range,
    /// Text matching the whole of `pattern` (a regular expression).
    Pattern,
    /// One of `values` (a code list).
    AllowedValues,
    /// A value present in `column` of dataset `dataset` (`ref_column`, default the same name).
    Reference,
    /// Between `min_rows` and `max_rows` rows per `period` (by the dataset's `freshness_field`).
    RowCount,
    /// One sync changing more than `max_percent` % of the dataset's rows is flagged.
    MaxChangeShare,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::NotNull => "not_null",
            Check::Unique => "unique",
            Check::Range => "range",
            Check::Pattern => "pattern",
            Check::AllowedValues => "allowed_values",
            Check::Reference => "reference",
            Check::RowCount => "row_count",
            Check::MaxChangeShare => "max_change_share",
        }
    }

    /// Whether the rule applies to a column (every kind except the dataset-level ones).
    pub fn needs_column(self) -> bool {
        !matches!(self, Check::RowCount | Check::MaxChangeShare)
    }
}

/// What happens to a row that breaks a rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Loaded; the violation is recorded.
    #[default]
    Warn,
    /// Not loaded: held in quarantine with the reason.
    Reject,
}

/// A `range` bound: a number, a date (`"2020-01-01"`), or `"today"` (the day the batch is applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Int(i64),
    Float(f64),
    Text(String),
}

/// The period a `row_count` rule counts rows over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
    Quarter,
    Year,
}

/// One rule as written in the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub check: Check,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Bound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Bound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_percent: Option<f64>,
}

impl Rule {
    /// The rule's name in results, metrics and the violations table: `check` or `check:column`.
    pub fn id(&self) -> String {
        match &self.column {
            Some(c) => format!("{}:{c}", self.check.name()),
            None => self.check.name().to_string(),
        }
    }
}

/// A `range` bound as a number or a date; `Today` is resolved when a batch is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Number(f64),
    Date(jiff::civil::Date),
    Today,
}

/// Reads a bound; `Err` says why it is not one.
pub fn limit(bound: &Bound) -> Result<Limit, String> {
    match bound {
        Bound::Int(i) => Ok(Limit::Number(*i as f64)),
        Bound::Float(f) if f.is_finite() => Ok(Limit::Number(*f)),
        Bound::Float(_) => Err("must be a finite number".into()),
        Bound::Text(t) if t.trim().eq_ignore_ascii_case("today") => Ok(Limit::Today),
        Bound::Text(t) => t
            .trim()
            .parse::<jiff::civil::Date>()
            .map(Limit::Date)
            .map_err(|_| format!("{t:?} is neither a number, a date (YYYY-MM-DD) nor \"today\"")),
    }
}

/// Compiles `pattern` so that it must match the whole value.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// Every problem in a dataset's rules. `at` is the dataset's path (`dataset[x]`); `dataset_exists`
/// answers for `reference` targets.
pub fn validate_rules(at: &str, rules: &[Rule], dataset_exists: &dyn Fn(&str) -> bool) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    let mut bad = |field: String, problem: String| out.push(FieldProblem { field, problem });
    let mut seen = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{at}.rule[{i}]");
        let name = r.check.name();
        match (&r.column, r.check.needs_column()) {
            (None, true) => bad(format!("{at}.column"), format!("a {name} rule needs the column it checks")),
            (Some(_), false) => bad(format!("{at}.column"), format!("a {name} rule applies to the whole dataset")),
            (Some(c), true) => {
                if let Err(e) = check_column_name(c) {
                    bad(format!("{at}.column"), e.to_string());
                }
            }
            (None, false) => {}
        }
        if !seen.insert(r.id()) {
            bad(format!("{at}.check"), format!("rule {} appears more than once", r.id()));
        }
        let unexpected = |field: &str, given: bool, out: &mut dyn FnMut(String, String)| {
            if given {
                out(format!("{at}.{field}"), format!("does not apply to a {name} rule"));
            }
        };
        let c = r.check;
        unexpected("min", r.min.is_some() && c != Check::Range, &mut bad);
        unexpected("max", r.max.is_some() && c != Check::Range, &mut bad);
        unexpected("pattern", r.pattern.is_some() && c != Check::Pattern, &mut bad);
        unexpected("values", !r.values.is_empty() && c != Check::AllowedValues, &mut bad);
        unexpected("dataset", r.dataset.is_some() && c != Check::Reference, &mut bad);
        unexpected("ref_column", r.ref_column.is_some() && c != Check::Reference, &mut bad);
        unexpected("period", r.period.is_some() && c != Check::RowCount, &mut bad);
        unexpected("min_rows", r.min_rows.is_some() && c != Check::RowCount, &mut bad);
        unexpected("max_rows", r.max_rows.is_some() && c != Check::RowCount, &mut bad);
        unexpected("max_percent", r.max_percent.is_some() && c != Check::MaxChangeShare, &mut bad);
        match c {
            Check::NotNull | Check::Unique => {}
            Check::Range => {
                if r.min.is_none() && r.max.is_none() {
                    bad(format!("{at}.min"), "a range rule needs min, max or both".into());
                }
                let limits: Vec<_> = [("min", &r.min), ("max", &r.max)]
                    .into_iter()
                    .filter_map(|(f, b)| Some((f, limit(b.as_ref()?))))
                    .collect();
                for (field, l) in &limits {
                    if let Err(why) = l {
                        bad(format!("{at}.{field}"), why.clone());
                    }
                }
                if let [(_, Ok(lo)), (_, Ok(hi))] = limits.as_slice() {
                    let kinds_differ = matches!(lo, Limit::Number(_)) != matches!(hi, Limit::Number(_));
                    if kinds_differ {
                        bad(format!("{at}.max"), "min and max must both be numbers or both be dates".into());
                    } else if let (Limit::Number(a), Limit::Number(b)) = (lo, hi)
                        && a > b
                    {
                        bad(format!("{at}.max"), format!("{b} is below min {a}"));
                    } else if let (Limit::Date(a), Limit::Date(b)) = (lo, hi)
                        && a > b
                    {
                        bad(format!("{at}.max"), format!("{b} is before min {a}"));
                    }
                }
            }
            Check::Pattern => match &r.pattern {
                None => bad(format!("{at}.pattern"), "a pattern rule needs a pattern (a regular expression)".into()),
                Some(p) => {
                    if let Err(e) = compile_pattern(p) {
                        bad(format!("{at}.pattern"), format!("not a valid regular expression: {e}"));
                    }
                }
            },
            Check::AllowedValues => {
                if r.values.is_empty() {
                    bad(format!("{at}.values"), "an allowed_values rule needs a non-empty list of values".into());
                }
            }
            Check::Reference => match &r.dataset {
                None => bad(format!("{at}.dataset"), "a reference rule needs the dataset it refers to".into()),
                Some(d) => {
                    if check_dataset_name(d).is_err() || !dataset_exists(d) {
                        bad(format!("{at}.dataset"), format!("{d:?} is not a dataset in this catalogue"));
                    }
                    if let Some(rc) = &r.ref_column
                        && let Err(e) = check_column_name(rc)
                    {
                        bad(format!("{at}.ref_column"), e.to_string());
                    }
                }
            },
            Check::RowCount => {
                if r.period.is_none() {
                    bad(format!("{at}.period"), "a row_count rule needs a period (day, month, quarter, year)".into());
                }
                match (r.min_rows, r.max_rows) {
                    (None, None) => {
                        bad(format!("{at}.min_rows"), "a row_count rule needs min_rows, max_rows or both".into())
                    }
                    (Some(lo), Some(hi)) if lo > hi => {
                        bad(format!("{at}.max_rows"), format!("{hi} is below min_rows {lo}"))
                    }
                    _ => {}
                }
            }
            Check::MaxChangeShare => match r.max_percent {
                None => bad(format!("{at}.max_percent"), "a max_change_share rule needs max_percent (0 to 100)".into()),
                Some(p) if !(0.0..=100.0).contains(&p) => {
                    bad(format!("{at}.max_percent"), format!("{p} is not a percentage from 0 to 100"));
                }
                Some(_) => {}
            },
        }
        if r.policy == Policy::Reject && matches!(c, Check::RowCount | Check::MaxChangeShare) {
            bad(format!("{at}.policy"), format!("a {name} rule judges the dataset, not a row: only warn applies"));
        }
    }
    out
}
