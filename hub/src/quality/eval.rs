//! Checking one batch's changes against a dataset's rules. Pure: no I/O, no clock (the caller
//! passes today's date), and whatever the warehouse must answer (`reference`, `unique` against
//! rows already loaded) goes through [`Lookup`], so every rule is unit-tested with a map.
//!
//! Incremental by construction: only the batch's upserted rows are looked at, each once. What
//! the warehouse must answer is asked once per rule and batch ([`Lookup::existing`], the batch's
//! distinct values at once), not once per row: on a large sync the per-row probes, not the rules
//! themselves, were the cost (issue 12's benchmark). Only a `unique` value the warehouse already
//! holds needs a second, exact question (held by *another* row?), e.g. when a row is updated.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use kho_shared::protocol::{Change, Op};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Check, Limit, Policy, Rule, compile_pattern, limit};

/// What the warehouse answers while a batch is checked (inside the batch's transaction).
pub trait Lookup {
    /// Whether `dataset.column` holds `value` in a live row.
    fn exists(&mut self, dataset: &str, column: &str, value: &str) -> bool;
    /// Whether a live row of `dataset` other than the one with key `key` holds `value` in `column`.
    fn taken_by_other(&mut self, dataset: &str, column: &str, value: &str, key: &Map<String, Value>) -> bool;
    /// For each of `values`, whether `dataset.column` holds it in a live row ([`Lookup::exists`]
    /// for a whole batch): a warehouse answers with one set-based query instead of a probe per
    /// value. Must agree with `exists` and with `taken_by_other` (a value held by another row exists).
    fn existing(&mut self, dataset: &str, column: &str, values: &[&str]) -> Vec<bool> {
        values.iter().map(|v| self.exists(dataset, column, v)).collect()
    }
}

/// A lookup that knows nothing (every reference misses, every value is free): for datasets
/// without `reference`/`unique` rules and for tests.
pub struct NoLookup;

impl Lookup for NoLookup {
    fn exists(&mut self, _: &str, _: &str, _: &str) -> bool {
        false
    }
    fn taken_by_other(&mut self, _: &str, _: &str, _: &str, _: &Map<String, Value>) -> bool {
        false
    }
}

/// One broken rule on one row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// [`Rule::id`]: `check:column`.
    pub rule: String,
    pub column: Option<String>,
    /// The offending value as text (`None` when missing).
    pub value: Option<String>,
    pub policy: Policy,
}

/// The verdict on one change of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct RowVerdict {
    /// Index of the change in the slice checked.
    pub index: usize,
    pub seq: u64,
    /// The row's key as JSON text (`{"ma_ho_so":"HS-1"}`), as stored with violations.
    pub key: String,
    pub delete: bool,
    pub failures: Vec<Failure>,
}

impl RowVerdict {
    /// Whether a `reject` rule holds this row back.
    pub fn rejected(&self) -> bool {
        self.failures.iter().any(|f| f.policy == Policy::Reject)
    }

    /// The reasons, for the quarantine table and the ack: `pattern:so_cccd="12"; not_null:ten`.
    pub fn reason(&self) -> String {
        let one = |f: &Failure| match &f.value {
            Some(v) => format!("{}={v:?}", f.rule),
            None => f.rule.clone(),
        };
        self.failures.iter().map(one).collect::<Vec<_>>().join("; ")
    }
}

enum Kind {
    NotNull,
    Unique,
    Range { min: Option<Limit>, max: Option<Limit> },
    Pattern(regex::Regex),
    Allowed(HashSet<String>),
    Reference { dataset: String, column: String },
}

struct Compiled {
    id: String,
    column: String,
    policy: Policy,
    kind: Kind,
}

/// A dataset's row rules, compiled once (regular expressions, code lists).
pub struct Checker {
    dataset: String,
    rules: Vec<Compiled>,
}

impl Checker {
    /// Compiles the row rules of `dataset` (dataset-level rules are checked elsewhere). The rules
    /// were validated with the catalogue; one that still fails to compile is skipped.
    pub fn new(dataset: &str, rules: &[Rule]) -> Checker {
        let mut out = Vec::new();
        for r in rules {
            let Some(column) = r.column.clone() else { continue };
            let kind = match r.check {
                Check::NotNull => Kind::NotNull,
                Check::Unique => Kind::Unique,
                Check::Range => Kind::Range {
                    min: r.min.as_ref().and_then(|b| limit(b).ok()),
                    max: r.max.as_ref().and_then(|b| limit(b).ok()),
                },
                Check::Pattern => match r.pattern.as_deref().map(compile_pattern) {
                    Some(Ok(re)) => Kind::Pattern(re),
                    _ => continue,
                },
                Check::AllowedValues => Kind::Allowed(r.values.iter().cloned().collect()),
                Check::Reference => Kind::Reference {
                    dataset: r.dataset.clone().unwrap_or_default(),
                    column: r.ref_column.clone().unwrap_or_else(|| column.clone()),
                },
                Check::RowCount | Check::MaxChangeShare => continue,
            };
            out.push(Compiled { id: r.id(), column, policy: r.policy, kind });
        }
        Checker { dataset: dataset.to_string(), rules: out }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The ids of the row rules, for scores (rules with no violation still count).
    pub fn rule_ids(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.id.clone()).collect()
    }

    /// Checks this dataset's changes among `changes` (a batch, in order). `key_columns` is the
    /// dataset's key; `today` resolves `"today"` bounds. Deletes get a verdict with no failures
    /// (their recorded violations are cleared). Other datasets' upserts in the batch count as
    /// existing for `reference` rules.
    pub fn check(
        &self,
        changes: &[Change],
        key_columns: &[String],
        today: jiff::civil::Date,
        lookup: &mut dyn Lookup,
    ) -> Vec<RowVerdict> {
        let mine: Vec<(usize, &Change, &Map<String, Value>)> = changes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.dataset == self.dataset)
            .filter_map(|(i, c)| Some((i, c, c.key_source()?)))
            .collect();
        let in_batch = self.referenced_in_batch(changes);
        let known = self.known_values(&mine, &in_batch, lookup);
        let mut verdicts: Vec<RowVerdict> = Vec::with_capacity(mine.len());
        // `unique` within the batch, per rule: value → index (in `verdicts`) of the first row holding it.
        let mut seen: Vec<HashMap<Cow<'_, str>, usize>> = self.rules.iter().map(|_| HashMap::new()).collect();
        // The key columns in the order a JSON object keeps them, so each row's key text is
        // written directly, as `Value::Object(key map).to_string()` would, without a map per row.
        let key_template: Map<String, Value> = key_columns.iter().map(|k| (k.clone(), Value::Null)).collect();
        let key_order: Vec<&String> = key_template.keys().collect();
        let key_map = |source: &Map<String, Value>| -> Map<String, Value> {
            key_columns.iter().map(|k| (k.clone(), source.get(k).cloned().unwrap_or(Value::Null))).collect()
        };
        for &(index, c, source) in &mine {
            let key = key_text(&key_order, source);
            let mut failures = Vec::new();
            if c.op == Op::Upsert {
                for (i, rule) in self.rules.iter().enumerate() {
                    let value = source.get(&rule.column).and_then(text);
                    let broken = match (&rule.kind, &value) {
                        (Kind::NotNull, v) => v.is_none(),
                        (_, None) => false,
                        (Kind::Unique, Some(v)) => match seen[i].get(v.as_ref()) {
                            Some(&first) => verdicts[first].key != key,
                            None => {
                                seen[i].insert(v.clone(), verdicts.len());
                                // A value no live row holds is free; one that is held may be this row's own.
                                known[i].contains(v.as_ref())
                                    && lookup.taken_by_other(&self.dataset, &rule.column, v, &key_map(source))
                            }
                        },
                        (Kind::Range { min, max }, Some(v)) => !in_range(v, *min, *max, today),
                        (Kind::Pattern(re), Some(v)) => !re.is_match(v),
                        (Kind::Allowed(values), Some(v)) => !values.contains(v.as_ref()),
                        (Kind::Reference { dataset, column }, Some(v)) => {
                            !in_batch.contains(&(dataset.as_str(), column.as_str(), v.as_ref()))
                                && !known[i].contains(v.as_ref())
                        }
                    };
                    if broken {
                        failures.push(Failure {
                            rule: rule.id.clone(),
                            column: Some(rule.column.clone()),
                            value: value.map(Cow::into_owned),
                            policy: rule.policy,
                        });
                    }
                }
            }
            verdicts.push(RowVerdict { index, seq: c.seq, key, delete: c.op == Op::Delete, failures });
        }
        verdicts
    }

    /// Per rule, the values of the batch's upserts that the warehouse already holds where the
    /// rule looks (`unique`: this dataset's column; `reference`: the referenced column, except
    /// values the batch itself provides): one [`Lookup::existing`] per rule, each distinct value
    /// once. Other rules get an empty set.
    fn known_values<'a>(
        &self,
        mine: &[(usize, &'a Change, &'a Map<String, Value>)],
        in_batch: &HashSet<(&str, &str, &str)>,
        lookup: &mut dyn Lookup,
    ) -> Vec<HashSet<Cow<'a, str>>> {
        let mut out = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let (dataset, column, reference) = match &rule.kind {
                Kind::Unique => (self.dataset.as_str(), rule.column.as_str(), false),
                Kind::Reference { dataset, column } => (dataset.as_str(), column.as_str(), true),
                _ => {
                    out.push(HashSet::new());
                    continue;
                }
            };
            let mut wanted: HashSet<Cow<'a, str>> = HashSet::new();
            for (_, _, row) in mine.iter().filter(|(_, c, _)| c.op == Op::Upsert) {
                let Some(v) = row.get(&rule.column).and_then(text) else { continue };
                if !(reference && in_batch.contains(&(dataset, column, v.as_ref()))) {
                    wanted.insert(v);
                }
            }
            let wanted: Vec<Cow<'a, str>> = wanted.into_iter().collect();
            let found = if wanted.is_empty() {
                Vec::new()
            } else {
                let values: Vec<&str> = wanted.iter().map(AsRef::as_ref).collect();
                lookup.existing(dataset, column, &values)
            };
            out.push(wanted.into_iter().zip(found).filter_map(|(v, held)| held.then_some(v)).collect());
        }
        out
    }

    /// `(dataset, column, value)` of the batch's upserts that `reference` rules point at.
    fn referenced_in_batch<'a>(&'a self, changes: &'a [Change]) -> HashSet<(&'a str, &'a str, &'a str)> {
        let mut out = HashSet::new();
        for rule in &self.rules {
            let Kind::Reference { dataset, column } = &rule.kind else { continue };
            for c in changes.iter().filter(|c| &c.dataset == dataset && c.op == Op::Upsert) {
                if let Some(Value::String(v)) = c.row.as_ref().and_then(|r| r.get(column)) {
                    out.insert((dataset.as_str(), column.as_str(), v.as_str()));
                }
            }
        }
        out
    }
}

/// A row's key as JSON text: `{"col":value,…}` over `order` (missing columns as `null`),
/// byte for byte what serialising the key's `Map` writes.
fn key_text(order: &[&String], source: &Map<String, Value>) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(32);
    out.push(b'{');
    for (i, k) in order.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string or a JSON value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, source.get(*k).unwrap_or(&Value::Null));
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

/// A value as text; `None` for missing, null and blank text. Borrowed for text values (the
/// common case: no allocation per rule and row).
pub fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        other => Some(Cow::Owned(other.to_string())),
    }
}

fn in_range(value: &str, min: Option<Limit>, max: Option<Limit>, today: jiff::civil::Date) -> bool {
    let numeric = matches!(min.or(max), Some(Limit::Number(_)));
    if numeric {
        let Ok(n) = value.trim().parse::<f64>() else { return false };
        let above = |l: Option<Limit>| !matches!(l, Some(Limit::Number(m)) if n < m);
        let below = |l: Option<Limit>| !matches!(l, Some(Limit::Number(m)) if n > m);
        return above(min) && below(max);
    }
    let Some(date) = crate::apply::business_day(value.trim()) else {
        return false;
    };
    let resolve = |l: Option<Limit>| match l {
        Some(Limit::Date(d)) => Some(d),
        Some(Limit::Today) => Some(today),
        _ => None,
    };
    resolve(min).is_none_or(|m| date >= m) && resolve(max).is_none_or(|m| date <= m)
}

/// A `max_change_share` rule on a batch that changed `changed` rows of a dataset that had
/// `rows_before` live rows: the share in percent when it is over `max_percent`. A first load
/// (no rows before) is never flagged.
pub fn change_share_exceeded(changed: u64, rows_before: u64, max_percent: f64) -> Option<f64> {
    if rows_before == 0 {
        return None;
    }
    let share = changed as f64 * 100.0 / rows_before as f64;
    (share > max_percent).then_some(share)
}

/// A `row_count` rule on `count` rows in one period: why it fails, if it does.
pub fn row_count_problem(count: u64, min_rows: Option<u64>, max_rows: Option<u64>) -> Option<String> {
    match (min_rows, max_rows) {
        (Some(lo), _) if count < lo => Some(format!("{count} rows, fewer than {lo}")),
        (_, Some(hi)) if count > hi => Some(format!("{count} rows, more than {hi}")),
        _ => None,
    }
}
