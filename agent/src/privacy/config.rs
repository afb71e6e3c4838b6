//! Personal-data declarations of the agent's config (issue 14): per dataset column a class and an
//! action, and where the pseudonymisation key comes from. Parsing and validation only (pure).
//!
//! ```toml
//! [privacy]                       # optional: where the key is (default: beside hub.signing_key)
//! key_file = "/var/lib/kho-agent/keys/pseudonym.key"   # or key_env = "KHO_PSEUDONYM_KEY"
//!
//! [dataset.columns.so_cccd]
//! class = "personal"
//! action = "pseudonymise"
//! [dataset.columns.ngay_sinh]
//! class = "personal"
//! action = "generalise"
//! to = "year"                     # year | month | address (keep `parts`) | range (`bounds`)
//! [dataset.columns.so_dien_thoai]
//! class = "personal"
//! action = "mask"
//! keep_last = 3
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{AgentConfig, DatasetConfig, Mode};

/// File name of the key `kho-agent enroll` stores beside `hub.signing_key`.
pub const KEY_FILE_NAME: &str = "pseudonym.key";

/// How personal a column is (Decree 13/2023/ND-CP: basic vs sensitive personal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Public,
    Internal,
    Personal,
    Sensitive,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Public => "public",
            Class::Internal => "internal",
            Class::Personal => "personal",
            Class::Sensitive => "sensitive",
        }
    }
}

/// What the agent does to a column before a change reaches the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Keep,
    Drop,
    Pseudonymise,
    Generalise,
    Mask,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::Pseudonymise => "pseudonymise",
            Action::Generalise => "generalise",
            Action::Mask => "mask",
        }
    }
}

/// What `generalise` reduces a value to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generalise {
    /// A date or timestamp → its year (an integer).
    Year,
    /// A date or timestamp → `YYYY-MM`.
    Month,
    /// A comma-separated address → its last `parts` parts (commune, district, province).
    Address,
    /// A number → the range of `bounds` it falls in (`[1000000,5000000)`).
    Range,
}

/// One column's declaration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnPolicy {
    pub class: Class,
    #[serde(default)]
    pub action: Action,
    /// `generalise`: what to.
    #[serde(default)]
    pub to: Option<Generalise>,
    /// `generalise` with `to = "address"`: how many trailing comma-separated parts to keep.
    #[serde(default)]
    pub parts: Option<usize>,
    /// `generalise` with `to = "range"`: increasing bucket bounds.
    #[serde(default)]
    pub bounds: Option<Vec<f64>>,
    /// `mask`: how many trailing characters stay visible (the rest become `*`).
    #[serde(default)]
    pub keep_last: Option<usize>,
}

/// Where the pseudonymisation key is read from (resolved from the config, see [`attach`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

/// `[dataset.columns]`: declarations by column name, plus the key source the whole config
/// resolved (not part of the TOML).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Columns {
    pub policies: BTreeMap<String, ColumnPolicy>,
    #[serde(skip)]
    pub key_source: Option<KeySource>,
}

impl Columns {
    /// Whether some column needs the key.
    pub fn pseudonymises(&self) -> bool {
        self.policies.values().any(|p| p.action == Action::Pseudonymise)
    }
}

/// `[privacy]`: where the key is when it is not the enrolled default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// A file holding `v<version>:<secret>` (mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// An environment variable holding `v<version>:<secret>`.
    #[serde(default)]
    pub key_env: Option<String>,
}

impl PrivacySection {
    /// The key's location for `config`: `key_env`, else `key_file`, else `pseudonym.key` beside
    /// `hub.signing_key` (where `kho-agent enroll` writes it).
    pub fn key_source(&self, signing_key: Option<&Path>) -> Option<KeySource> {
        if let Some(var) = &self.key_env {
            return Some(KeySource::Env(var.clone()));
        }
        if let Some(file) = &self.key_file {
            return Some(KeySource::File(file.clone()));
        }
        signing_key.map(|k| KeySource::File(k.with_file_name(KEY_FILE_NAME)))
    }
}

/// Resolves the key source into every dataset (after paths were resolved).
pub fn attach(config: &mut AgentConfig) {
    let source = config.privacy.key_source(config.hub.signing_key.as_deref());
    for d in &mut config.datasets {
        d.columns.key_source = source.clone();
    }
}

/// Every problem with the privacy settings, each naming its field
/// (`dataset[ho_so].column[so_cccd].action`).
pub fn validate(config: &AgentConfig) -> Vec<kho_shared::fields::FieldProblem> {
    let mut p = Vec::new();
    let mut bad = |field: String, problem: &str| p.push(kho_shared::fields::FieldProblem::new(field, problem));
    let s = &config.privacy;
    if s.key_file.is_some() && s.key_env.is_some() {
        bad("privacy.key_file".into(), "give either key_file or key_env, not both");
    }
    if s.key_file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
        bad("privacy.key_file".into(), "must not be empty");
    }
    if s.key_env.as_ref().is_some_and(|v| v.trim().is_empty()) {
        bad("privacy.key_env".into(), "must not be empty");
    }
    let has_key = s.key_source(config.hub.signing_key.as_deref()).is_some();
    for d in &config.datasets {
        for (problem_field, problem) in validate_dataset(d, has_key) {
            bad(problem_field, &problem);
        }
    }
    p
}

/// The problems of one dataset's `columns`.
fn validate_dataset(d: &DatasetConfig, has_key: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, c) in &d.columns.policies {
        let f = |field: &str| format!("dataset[{}].column[{name}].{field}", d.name);
        let mut bad = |field: &str, problem: String| out.push((f(field), problem));
        let is_key = d.key.iter().any(|k| k == name);
        let is_cursor = d.mode == Mode::Cursor && d.cursor_column.as_deref() == Some(name.as_str());
        match c.action {
            Action::Keep => {}
            Action::Pseudonymise if !has_key => bad(
                "action",
                "pseudonymise needs the province's key: enroll the agent (the key is stored beside \
                 hub.signing_key), or set privacy.key_file or privacy.key_env"
                    .into(),
            ),
            Action::Pseudonymise if is_cursor => {
                bad("action", "the cursor column must be kept (capture compares its raw values)".into())
            }
            Action::Pseudonymise => {}
            a if is_key => bad(
                "action",
                format!(
                    "{} on a key column would make rows impossible to update or delete; use pseudonymise \
                     (the token becomes the key) or keep",
                    a.as_str()
                ),
            ),
            a if is_cursor => bad(
                "action",
                format!("{} on the cursor column is refused (capture compares its raw values)", a.as_str()),
            ),
            _ => {}
        }
        match (c.action, c.to) {
            (Action::Generalise, None) => bad("to", "generalise needs `to` = year, month, address or range".into()),
            (Action::Generalise, Some(_)) => {}
            (_, Some(_)) => bad("to", "only used with action = \"generalise\"".into()),
            _ => {}
        }
        let address = c.action == Action::Generalise && c.to == Some(Generalise::Address);
        match c.parts {
            None if address => bad("parts", "required with to = \"address\" (e.g. 2: district, province)".into()),
            Some(0) if address => bad("parts", "must be at least 1".into()),
            Some(_) if !address => bad("parts", "only used with to = \"address\"".into()),
            _ => {}
        }
        let range = c.action == Action::Generalise && c.to == Some(Generalise::Range);
        match &c.bounds {
            None if range => bad("bounds", "required with to = \"range\" (e.g. [0, 1000000, 5000000])".into()),
            Some(b) if range && b.is_empty() => bad("bounds", "must hold at least one bound".into()),
            Some(b) if range && (b.iter().any(|x| !x.is_finite()) || b.windows(2).any(|w| w[0] >= w[1])) => {
                bad("bounds", "must be finite numbers in increasing order".into())
            }
            Some(_) if !range => bad("bounds", "only used with to = \"range\"".into()),
            _ => {}
        }
        match c.keep_last {
            None if c.action == Action::Mask => bad("keep_last", "required with action = \"mask\" (e.g. 3)".into()),
            Some(_) if c.action != Action::Mask => bad("keep_last", "only used with action = \"mask\"".into()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
