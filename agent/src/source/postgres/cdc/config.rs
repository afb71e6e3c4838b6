//! `[dataset.cdc]`: the publication and replication slot of a `mode = "cdc"` dataset.
//!
//! Both names default to ones derived from the agent and the dataset (`kho_<agent>_<dataset>`,
//! lower-cased, other characters replaced by `_`, at most 63 bytes — PostgreSQL's identifier
//! limit), so two agents or two datasets never share a slot. A DBA who prefers to create the
//! publication themselves names it here and sets `create_publication = false`.

use serde::Deserialize;

/// PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// `[dataset.cdc]` settings (all optional).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcConfig {
    /// Replication slot name; default `kho_<agent>_<dataset>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication name; default `kho_<agent>_<dataset>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Whether the agent may create the publication (needs ownership of the table); when false the
    /// DBA creates it and `kho-agent check` verifies it covers the table.
    #[serde(default = "yes")]
    pub create_publication: bool,
}

fn yes() -> bool {
    true
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig { slot: None, publication: None, create_publication: true }
    }
}

/// `kho_<agent>_<dataset>` as a slot/publication name: `[a-z0-9_]`, at most 63 bytes.
pub fn derived_name(agent: &str, dataset: &str) -> String {
    let mut s: String = format!("kho_{agent}_{dataset}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    s.truncate(MAX_NAME);
    s
}

/// Whether `name` is usable as a slot name (PostgreSQL allows only `[a-z0-9_]` there).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl CdcConfig {
    /// Fills in the derived names (after parsing, when the agent id is known).
    pub fn resolve_names(&mut self, agent: &str, dataset: &str) {
        self.slot.get_or_insert_with(|| derived_name(agent, dataset));
        self.publication.get_or_insert_with(|| derived_name(agent, dataset));
    }

    /// The slot name for this dataset.
    pub fn slot_name(&self, agent: &str, dataset: &str) -> String {
        self.slot.clone().unwrap_or_else(|| derived_name(agent, dataset))
    }

    /// The publication name for this dataset.
    pub fn publication_name(&self, agent: &str, dataset: &str) -> String {
        self.publication.clone().unwrap_or_else(|| derived_name(agent, dataset))
    }

    /// Problems as `(field, problem)`; `field` prefixes the names (`dataset[0].cdc`).
    pub fn validate(&self, field: &str) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (name, value) in [("slot", &self.slot), ("publication", &self.publication)] {
            if let Some(v) = value
                && !valid_name(v)
            {
                p.push((
                    format!("{field}.{name}"),
                    format!("{v:?} must be 1 to {MAX_NAME} characters of a-z, 0-9 and _"),
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_safely() {
        assert_eq!(derived_name("so-y-te", "Ho.So"), "kho_so_y_te_ho_so");
        assert_eq!(derived_name(&"a".repeat(100), "d").len(), MAX_NAME);
        let c = CdcConfig::default();
        assert!(c.create_publication, "the agent creates its publication unless told not to");
        assert_eq!(c.slot_name("x", "y"), "kho_x_y");
        let c = CdcConfig { slot: Some("mine".into()), ..CdcConfig::default() };
        assert_eq!(c.slot_name("x", "y"), "mine");
        assert_eq!(c.publication_name("x", "y"), "kho_x_y");
    }

    #[test]
    fn bad_names_name_the_field() {
        let c = CdcConfig { slot: Some("Bad-Name".into()), publication: Some(String::new()), create_publication: true };
        let p = c.validate("dataset[0].cdc");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "dataset[0].cdc.slot");
        assert_eq!(p[1].0, "dataset[0].cdc.publication");
        assert!(CdcConfig::default().validate("d").is_empty());
    }
}
