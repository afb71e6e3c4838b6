//! Reading and storing the pseudonymisation key (the only I/O of [`crate::privacy`]).
//!
//! The key is read at the start of every poll, so a key rotated while the agent runs (a new file
//! from `kho-agent fetch-key`, or an edited one) is used from the next pass on, never halfway
//! through one. The secret never appears in an error message or a log line.

use std::path::Path;

use kho_shared::pseudonym::PseudonymKey;

use super::config::{Columns, KeySource};

/// The key a dataset needs now: `Ok(None)` when it pseudonymises nothing; an error (without the
/// secret) when it does and the key cannot be read.
pub fn load_for(columns: &Columns) -> Result<Option<PseudonymKey>, String> {
    if !columns.pseudonymises() {
        return Ok(None);
    }
    match &columns.key_source {
        None => Err("no key configured (privacy.key_file, privacy.key_env or an enrolled hub.signing_key)".into()),
        Some(source) => load(source).map(Some),
    }
}

/// Reads the key at `source`.
pub fn load(source: &KeySource) -> Result<PseudonymKey, String> {
    match source {
        KeySource::Env(var) => {
            let text = std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?;
            PseudonymKey::parse(&text).map_err(|e| format!("environment variable {var}: {e}"))
        }
        KeySource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "{}: {e} (run `kho-agent enroll` or `kho-agent fetch-key`, or set privacy.key_file)",
                    path.display()
                )
            })?;
            // A file may list several versions; the last (highest) one is current.
            let keys = kho_shared::pseudonym::parse_keys(&text)
                .map_err(|(line, e)| format!("{} line {line}: {e}", path.display()))?;
            keys.into_iter().last().ok_or_else(|| format!("{}: no key", path.display()))
        }
    }
}

/// Where `kho-agent enroll` / `fetch-key` store the key: the configured file, else beside the
/// signing key; `None` when the key comes from an environment variable.
pub fn store_path(config: &crate::config::AgentConfig) -> Option<std::path::PathBuf> {
    match config.privacy.key_source(config.hub.signing_key.as_deref())? {
        KeySource::File(p) => Some(p),
        KeySource::Env(_) => None,
    }
}

/// Writes `key` to `path` (0600, atomically).
pub fn store(path: &Path, key: &PseudonymKey) -> Result<(), std::io::Error> {
    crate::enroll::write_private_file(path, format!("{}\n", key.expose()).as_bytes())
}
