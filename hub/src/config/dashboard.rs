//! The `[dashboard]` section: who may log in to the operator dashboard, and whether the public
//! may see a read-only view without logging in.
//!
//! ```toml
//! [dashboard]
//! public_view = false          # true: the freshness and scenario boards without login
//! session_ttl = "12h"          # a login lasts this long
//! [[dashboard.operator]]
//! name = "vnpt-ioc"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$…"   # `kho-hub hash-password`
//! ```
//!
//! Passwords are never in the file, only their argon2 PHC hashes. With no operator and
//! `public_view = false` the dashboard shows only its login page, which says so.

use std::time::Duration;

use serde::Deserialize;

/// A working day and a half: an IOC shift logs in once.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSection {
    #[serde(default)]
    pub public_view: bool,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    #[serde(default, rename = "operator")]
    pub operators: Vec<Operator>,
}

impl Default for DashboardSection {
    fn default() -> Self {
        DashboardSection { public_view: false, session_ttl: DEFAULT_SESSION_TTL, operators: Vec::new() }
    }
}

fn default_ttl() -> Duration {
    DEFAULT_SESSION_TTL
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: String,
    /// Argon2 hash in PHC string form (`$argon2id$…`).
    pub password_hash: String,
}

impl DashboardSection {
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if self.session_ttl < Duration::from_secs(60) {
            bad("dashboard.session_ttl", "must be at least 1 minute".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, op) in self.operators.iter().enumerate() {
            if op.name.trim().is_empty() {
                bad(&format!("dashboard.operator[{i}].name"), "must not be empty".into());
            } else if !names.insert(op.name.as_str()) {
                bad(&format!("dashboard.operator[{i}].name"), format!("{:?} appears more than once", op.name));
            }
            match argon2::PasswordHash::new(&op.password_hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                Ok(h) => bad(
                    &format!("dashboard.operator[{i}].password_hash"),
                    format!("is a {} hash; only argon2 is accepted", h.algorithm),
                ),
                Err(e) => bad(
                    &format!("dashboard.operator[{i}].password_hash"),
                    format!("not an argon2 PHC string ($argon2id$…; make one with `kho-hub hash-password`): {e}"),
                ),
            }
        }
    }
}
