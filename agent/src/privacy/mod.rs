//! Personal data protection at the edge (issue 14): minimise before anything leaves the
//! department.
//!
//! Per dataset column the config declares a class (`public`, `internal`, `personal`,
//! `sensitive`) and an action ([`config`]). Capture turns the source's schema into a
//! [`transform::Plan`] at every poll and the row encoder applies it to every row, so the outbox —
//! its changes, its snapshot row hashes and keys, its cursor boundary hashes — only ever holds
//! transformed values: a dropped column is gone, a pseudonymised one is a versioned HMAC token
//! ([`kho_shared::pseudonym`]), a generalised or masked one its reduced form. Row hashes are
//! computed over the transformed row because (1) the raw values must not be stored in the agent's
//! state either, and an unsalted hash of a 12-digit ID is reversible by enumeration, and (2) a
//! change that does not alter what the hub receives (a new birthday in the same year) need not be
//! sent. The key is read at each poll ([`key`]); `check` looks for undeclared personal data
//! ([`scan`]).

pub mod config;
pub mod key;
pub mod scan;
pub mod transform;

pub use config::{Action, Class, ColumnPolicy, Columns, KeySource, PrivacySection};
pub use transform::{Plan, PlanError};

/// The plan for one poll of a dataset: reads the key (if a column needs it) and maps the source's
/// schema.
pub fn plan_for(columns: &Columns, source: &kho_shared::protocol::DatasetSchema) -> Result<Plan, PlanError> {
    if columns.policies.is_empty() {
        return Ok(Plan::identity(source));
    }
    Plan::new(columns, source, key::load_for(columns))
}
