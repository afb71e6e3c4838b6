//! The per-column transforms applied to every captured row before it reaches the outbox (pure).
//!
//! A [`Plan`] maps a source's schema to what leaves the agent: dropped columns are gone, the
//! others are written by their [`Op`] into the canonical row encoding
//! ([`crate::detect::encode::RowEncoder`]). A value a transform cannot read (a `generalise` to
//! year of a text that is not a date, say) becomes `null`, never the raw value.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use kho_shared::protocol::{Column, ColumnPrivacy, DatasetSchema};
use kho_shared::pseudonym::PseudonymKey;
use kho_shared::types::ColumnType;

use super::config::{Action, Columns, Generalise};
use crate::source::Cell;

/// What happens to one output column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Keep,
    Pseudonymise,
    Year,
    Month,
    /// Keep the last N comma-separated parts.
    Address(usize),
    /// Increasing bucket bounds.
    Range(Vec<f64>),
    /// Keep the last N characters.
    Mask(usize),
}

/// Why a plan cannot be made for a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "dataset {dataset}: column[{column}] is declared under [dataset.columns] but the source has no such \
         column (it has: {available})"
    )]
    UnknownColumn { dataset: String, column: String, available: String },
    #[error("dataset {dataset}: pseudonymise needs the province's key, which is not available: {problem}")]
    NoKey { dataset: String, problem: String },
}

/// How a source's rows become what the agent sends.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The schema that is recorded and sent (dropped columns removed, transformed types,
    /// the declarations in `privacy`).
    pub schema: DatasetSchema,
    /// For each output column, its index in the source's schema.
    pub src: Vec<usize>,
    pub ops: Vec<Op>,
    pub key: Option<PseudonymKey>,
}

impl Plan {
    /// A plan that sends every column unchanged.
    pub fn identity(schema: &DatasetSchema) -> Plan {
        Plan {
            schema: schema.clone(),
            src: (0..schema.columns.len()).collect(),
            ops: vec![Op::Keep; schema.columns.len()],
            key: None,
        }
    }

    /// The plan of `columns` for a source with schema `source`; `key` is needed only when a
    /// column is pseudonymised.
    pub fn new(
        columns: &Columns,
        source: &DatasetSchema,
        key: Result<Option<PseudonymKey>, String>,
    ) -> Result<Plan, PlanError> {
        for name in columns.policies.keys() {
            if !source.columns.iter().any(|c| &c.name == name) {
                return Err(PlanError::UnknownColumn {
                    dataset: source.dataset.clone(),
                    column: name.clone(),
                    available: source.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                });
            }
        }
        let key = if columns.pseudonymises() {
            match key {
                Ok(Some(k)) => Some(k),
                Ok(None) => {
                    return Err(PlanError::NoKey { dataset: source.dataset.clone(), problem: "no key source".into() });
                }
                Err(problem) => return Err(PlanError::NoKey { dataset: source.dataset.clone(), problem }),
            }
        } else {
            None
        };
        let mut plan = Plan {
            schema: DatasetSchema {
                dataset: source.dataset.clone(),
                key: source.key.clone(),
                columns: Vec::new(),
                privacy: BTreeMap::new(),
            },
            src: Vec::new(),
            ops: Vec::new(),
            key,
        };
        for (i, c) in source.columns.iter().enumerate() {
            let Some(p) = columns.policies.get(&c.name) else {
                plan.push(i, c.clone(), Op::Keep);
                continue;
            };
            plan.schema.privacy.insert(
                c.name.clone(),
                ColumnPrivacy { class: p.class.as_str().into(), action: p.action.as_str().into() },
            );
            let op = match (p.action, p.to) {
                (Action::Drop, _) => continue,
                (Action::Keep, _) => Op::Keep,
                (Action::Pseudonymise, _) => Op::Pseudonymise,
                (Action::Mask, _) => Op::Mask(p.keep_last.unwrap_or(0)),
                (Action::Generalise, Some(Generalise::Year)) => Op::Year,
                (Action::Generalise, Some(Generalise::Month)) => Op::Month,
                (Action::Generalise, Some(Generalise::Address)) => Op::Address(p.parts.unwrap_or(1)),
                (Action::Generalise, Some(Generalise::Range)) => Op::Range(p.bounds.clone().unwrap_or_default()),
                // Validation requires `to`; without it nothing of the value is sent.
                (Action::Generalise, None) => continue,
            };
            let ty = output_type(&op, c.ty);
            plan.push(i, Column { name: c.name.clone(), ty }, op);
        }
        Ok(plan)
    }

    fn push(&mut self, src: usize, column: Column, op: Op) {
        self.schema.columns.push(column);
        self.src.push(src);
        self.ops.push(op);
    }

    /// Whether the plan changes nothing (the encoder's fast path).
    pub fn is_identity(&self) -> bool {
        self.ops.iter().all(|o| *o == Op::Keep) && self.src.iter().enumerate().all(|(i, &s)| i == s)
    }
}

/// The type a transformed column is sent as.
pub fn output_type(op: &Op, source: ColumnType) -> ColumnType {
    match op {
        Op::Keep => source,
        Op::Year => ColumnType::Int,
        Op::Pseudonymise | Op::Month | Op::Address(_) | Op::Range(_) | Op::Mask(_) => ColumnType::Text,
    }
}

/// Writes `cell` transformed by `op` as a JSON value (`ty` is the source column's type;
/// `scratch` is a reused buffer). `op` is never [`Op::Keep`] here.
pub fn write(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    op: &Op,
    key: Option<&PseudonymKey>,
    ty: ColumnType,
    cell: Cell<'_>,
) {
    if cell == Cell::Null {
        out.extend_from_slice(b"null");
        return;
    }
    scratch.clear();
    match op {
        Op::Keep => crate::detect::encode::write_value(out, ty, cell),
        Op::Pseudonymise => match key {
            Some(key) => {
                text_form(cell, scratch);
                // A token is `v<digits>:<hex>`: nothing to escape.
                out.push(b'"');
                key.write_token(scratch.trim_ascii(), out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        },
        Op::Year | Op::Month => match civil_date(ty, cell) {
            Some((y, _)) if *op == Op::Year => {
                write!(out, "{y}").ok();
            }
            Some((y, m)) => {
                write!(out, "\"{y:04}-{m:02}\"").ok();
            }
            None => out.extend_from_slice(b"null"),
        },
        Op::Address(parts) => {
            text_form(cell, scratch);
            let text = String::from_utf8_lossy(scratch);
            let all: Vec<&str> = text.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
            let kept = all[all.len().saturating_sub(*parts)..].join(", ");
            json_str(out, kept.as_bytes());
        }
        Op::Range(bounds) => match number(cell) {
            Some(x) => json_str(out, range_label(bounds, x).as_bytes()),
            None => out.extend_from_slice(b"null"),
        },
        Op::Mask(keep) => {
            text_form(cell, scratch);
            let text = String::from_utf8_lossy(scratch);
            let text = text.trim();
            let n = text.chars().count();
            // A value no longer than what would stay visible is hidden entirely.
            let shown = if n > *keep { *keep } else { 0 };
            let tail = text.char_indices().nth(n - shown).map_or("", |(i, _)| &text[i..]);
            // `"<tail>"`, then the stars inserted after the opening quote (no allocation).
            let start = out.len() + 1;
            serde_json::to_writer(&mut *out, tail).ok();
            out.splice(start..start, std::iter::repeat_n(b'*', n - shown));
        }
    }
}

fn json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    serde_json::to_writer(&mut *out, String::from_utf8_lossy(bytes).as_ref()).ok();
}

/// The value as text, the same whatever the source's type (`12` and `"12"` give the same token).
fn text_form(cell: Cell<'_>, out: &mut Vec<u8>) {
    match cell {
        Cell::Null => {}
        Cell::Int(i) => {
            write!(out, "{i}").ok();
        }
        Cell::Real(f) => {
            write!(out, "{f}").ok();
        }
        Cell::Text(t) => out.extend_from_slice(t),
        Cell::Blob(b) => out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes()),
    }
}

/// A number from an integer, a real or a decimal text.
fn number(cell: Cell<'_>) -> Option<f64> {
    match cell {
        Cell::Int(i) => Some(i as f64),
        Cell::Real(f) if f.is_finite() => Some(f),
        Cell::Text(t) => std::str::from_utf8(t).ok()?.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// The bucket label of `x`: `<b0`, `[b_i,b_i+1)` or `>=b_last`.
pub fn range_label(bounds: &[f64], x: f64) -> String {
    match bounds.iter().position(|&b| x < b) {
        Some(0) => format!("<{}", bounds[0]),
        Some(i) => format!("[{},{})", bounds[i - 1], bounds[i]),
        None => format!(">={}", bounds.last().copied().unwrap_or(0.0)),
    }
}

/// (year, month) of a date or timestamp: ISO text (`1990-05-12…`), Vietnamese `dd/mm/yyyy`, or
/// Unix seconds for integer timestamp/date columns.
pub fn civil_date(ty: ColumnType, cell: Cell<'_>) -> Option<(i64, u32)> {
    match cell {
        Cell::Int(secs) if matches!(ty, ColumnType::Timestamp | ColumnType::Date) => {
            let (y, m, _) = crate::source::row::civil_from_days(secs.div_euclid(86_400));
            Some((y, m))
        }
        Cell::Text(t) => {
            let s = std::str::from_utf8(t).ok()?.trim();
            let iso = |s: &str| -> Option<(i64, u32)> {
                let mut it = s.splitn(3, '-');
                let y = it.next()?;
                let m = it.next()?.get(..2)?;
                (y.len() == 4).then_some(())?;
                Some((y.parse().ok()?, m.parse().ok().filter(|m| (1..=12).contains(m))?))
            };
            let vn = |s: &str| -> Option<(i64, u32)> {
                let mut it = s.split('/');
                let (_d, m, y) = (it.next()?, it.next()?, it.next()?);
                let y = y.get(..4)?;
                Some((y.parse().ok()?, m.parse().ok().filter(|m| (1..=12).contains(m))?))
            };
            iso(s).or_else(|| vn(s))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "transform_tests.rs"]
mod tests;
