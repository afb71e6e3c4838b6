//! Catalogue validation: every problem at once, each named `kind[id].field`.

use std::collections::HashSet;

use kho_shared::ident::{check_column_name, check_dataset_name};

use super::{Catalog, FieldProblem};
use crate::config::check_agent_id;

/// Longest department or scenario code; they appear in URLs and metric labels.
const MAX_CODE_LEN: usize = 63;

fn check_code(code: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if code.is_empty() || code.len() > MAX_CODE_LEN {
        return Err(format!("must be 1 to {MAX_CODE_LEN} characters"));
    }
    if !code.chars().next().is_some_and(|c| c.is_ascii_lowercase()) || !code.chars().all(ok_char) {
        return Err(format!("{code:?} must use only a-z, 0-9 and _ and start with a letter"));
    }
    Ok(())
}

/// Every problem in `catalog`; empty means usable.
pub fn validate(catalog: &Catalog) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    let mut bad = |field: String, problem: String| out.push(FieldProblem { field, problem });

    let mut codes = HashSet::new();
    for (i, d) in catalog.departments.iter().enumerate() {
        let at = if d.code.is_empty() { format!("department[{i}]") } else { format!("department[{}]", d.code) };
        if let Err(why) = check_code(&d.code) {
            bad(format!("{at}.code"), why);
        }
        if !codes.insert(d.code.as_str()) {
            bad(format!("{at}.code"), "appears more than once".into());
        }
        if d.name.trim().is_empty() {
            bad(format!("{at}.name"), "must not be empty".into());
        }
        if d.contact.name.trim().is_empty() {
            bad(format!("{at}.contact.name"), "must not be empty".into());
        }
        if d.contact.phone.is_none() && d.contact.email.is_none() {
            bad(format!("{at}.contact"), "give a phone or an email (or both)".into());
        }
        if let Some(email) = d.contact.email.as_deref().filter(|e| !e.contains('@') || e.contains(' ')) {
            bad(format!("{at}.contact.email"), format!("{email:?} is not an email address"));
        }
    }

    let mut ids = HashSet::new();
    for (i, d) in catalog.datasets.iter().enumerate() {
        let at = if d.id.is_empty() { format!("dataset[{i}]") } else { format!("dataset[{}]", d.id) };
        if let Err(e) = check_dataset_name(&d.id) {
            bad(format!("{at}.id"), e.to_string());
        }
        if !ids.insert(d.id.as_str()) {
            bad(format!("{at}.id"), "appears more than once".into());
        }
        if d.title.trim().is_empty() {
            bad(format!("{at}.title"), "must not be empty".into());
        }
        if catalog.department(&d.department).is_none() {
            bad(format!("{at}.department"), format!("{:?} is not a department in this catalogue", d.department));
        }
        for (j, agent) in d.agents.iter().enumerate() {
            if let Err(why) = check_agent_id(agent) {
                bad(format!("{at}.agents[{j}]"), why);
            }
        }
        if let Err(errs) = d.schedule().validate() {
            for e in errs {
                bad(format!("{at}.{}", e.field), e.message);
            }
        }
        if let Some(field) = &d.freshness_field
            && let Err(e) = check_column_name(field)
        {
            bad(format!("{at}.freshness_field"), e.to_string());
        }
        if d.open_data && d.licence.as_deref().is_none_or(|l| l.trim().is_empty()) {
            bad(format!("{at}.licence"), "open_data = true needs a licence (e.g. \"CC-BY-4.0\")".into());
        }
        for p in crate::quality::validate_rules(&at, &d.rules, &|id| catalog.dataset(id).is_some()) {
            bad(p.field, p.problem);
        }
    }

    let mut scenarios = HashSet::new();
    for (i, s) in catalog.scenarios.iter().enumerate() {
        let at = if s.id.is_empty() { format!("scenario[{i}]") } else { format!("scenario[{}]", s.id) };
        if let Err(why) = check_code(&s.id) {
            bad(format!("{at}.id"), why);
        }
        if !scenarios.insert(s.id.as_str()) {
            bad(format!("{at}.id"), "appears more than once".into());
        }
        if s.title.trim().is_empty() {
            bad(format!("{at}.title"), "must not be empty".into());
        }
        if catalog.department(&s.office).is_none() {
            bad(format!("{at}.office"), format!("{:?} is not a department in this catalogue", s.office));
        }
        if s.inputs.is_empty() {
            bad(format!("{at}.inputs"), "a scenario needs at least one input dataset".into());
        }
        let mut seen = HashSet::new();
        for (j, input) in s.inputs.iter().enumerate() {
            if catalog.dataset(&input.dataset).is_none() {
                bad(
                    format!("{at}.inputs[{j}].dataset"),
                    format!("{:?} is not a dataset in this catalogue", input.dataset),
                );
            }
            if !seen.insert(input.dataset.as_str()) {
                bad(format!("{at}.inputs[{j}].dataset"), format!("{:?} is listed twice", input.dataset));
            }
        }
    }
    out
}
