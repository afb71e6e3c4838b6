//! Personal data at the hub (issue 14).
//!
//! - **Keys.** `[privacy] key_file` names the province's pseudonymisation key file: one
//!   `v<version>:<secret>` per line, the highest version current
//!   ([`kho_shared::pseudonym::parse_keys`]). It is read at each use, so adding a line rotates the
//!   key without a restart: enrolling agents receive the current key, enrolled ones fetch it
//!   (`GET /v1/pseudonym-key`, `kho-agent fetch-key`). The secret is never logged.
//! - **Catalogue of classes.** Each batch's schemas carry the agent's declarations (class and
//!   action per column, [`ColumnPrivacy`]). The applier records them in the warehouse's metadata
//!   (`privacy.columns:<dataset>`, in the batch's transaction) and in the in-memory [`Index`]
//!   every API reads.
//! - **Publication and reads.** The open-data API refuses a dataset holding a `personal` or
//!   `sensitive` column the agent kept raw ([`Index::exposed`]); reading the rows of a dataset
//!   with any `sensitive` column through the hub's APIs is written to the audit log
//!   ([`AuditSink`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kho_shared::protocol::{ColumnPrivacy, DatasetSchema};
use kho_shared::pseudonym::PseudonymKey;
use serde::Deserialize;

use crate::warehouse::{Warehouse, WarehouseError, WarehouseReader};

/// Warehouse metadata key prefix of a dataset's declarations.
pub const META_PREFIX: &str = "privacy.columns:";

/// `[privacy]` of the hub config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// The province's pseudonymisation keys (mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl PrivacySection {
    /// The problem with `key_file`, if any (the message never quotes a secret).
    pub fn validate(&self) -> Option<String> {
        let path = self.key_file.as_ref()?;
        current_key(path).err()
    }
}

/// The current (highest-version) key of the key file at `path`.
pub fn current_key(path: &Path) -> Result<PseudonymKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys = kho_shared::pseudonym::parse_keys(&text).map_err(|(line, e)| match line {
        0 => format!("{}: {e}", path.display()),
        n => format!("{} line {n}: {e}", path.display()),
    })?;
    keys.into_iter().last().ok_or_else(|| format!("{}: no key", path.display()))
}

/// Declarations by dataset, shared by the applier (writes) and the APIs (reads).
#[derive(Debug, Clone, Default)]
pub struct Index(Arc<RwLock<BTreeMap<String, BTreeMap<String, ColumnPrivacy>>>>);

impl Index {
    /// The declarations of `dataset` (empty when none were received).
    pub fn columns(&self, dataset: &str) -> BTreeMap<String, ColumnPrivacy> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(dataset).cloned().unwrap_or_default()
    }

    /// Columns of `dataset` whose personal or sensitive values reach the hub raw.
    pub fn exposed(&self, dataset: &str) -> Vec<String> {
        self.columns(dataset).into_iter().filter(|(_, c)| c.exposes_personal_data()).map(|(n, _)| n).collect()
    }

    /// Whether `dataset` holds a `sensitive` column (in any form).
    pub fn is_sensitive(&self, dataset: &str) -> bool {
        self.columns(dataset).values().any(|c| c.class == "sensitive" && c.action != "drop")
    }

    /// The classes a dataset holds (columns the agent dropped excluded), sorted, deduplicated.
    pub fn classes(&self, dataset: &str) -> Vec<(String, Vec<String>)> {
        let mut by_class: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, c) in self.columns(dataset) {
            if c.action != "drop" {
                by_class.entry(c.class.clone()).or_default().push(format!("{name} ({})", c.action));
            }
        }
        by_class.into_iter().collect()
    }

    fn set(&self, dataset: &str, columns: BTreeMap<String, ColumnPrivacy>) -> bool {
        let mut map = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(dataset) == Some(&columns) {
            return false;
        }
        map.insert(dataset.to_string(), columns);
        true
    }

    /// Loads the recorded declarations of `datasets` (at start).
    pub fn load(&self, reader: &dyn WarehouseReader, datasets: &[String]) -> Result<(), WarehouseError> {
        for d in datasets {
            if let Some(text) = reader.meta(&format!("{META_PREFIX}{d}"))? {
                match serde_json::from_str(&text) {
                    Ok(columns) => {
                        self.set(d, columns);
                    }
                    Err(e) => tracing::error!(dataset = %d, error = %e, "stored personal-data declarations unreadable"),
                }
            }
        }
        Ok(())
    }
}

/// Reloads the recorded declarations every `interval` until `cancel`: with several hub instances
/// on one PostgreSQL warehouse, another instance may have applied the batch that carried them.
pub async fn refresh(
    index: Index,
    reader: Arc<dyn WarehouseReader>,
    catalog: crate::catalog::CatalogHandle,
    interval: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (index, reader) = (index.clone(), Arc::clone(&reader));
        let datasets: Vec<String> = catalog.get().datasets.iter().map(|d| d.id.clone()).collect();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut datasets = datasets;
            datasets.extend(reader.status()?.datasets.into_iter().map(|d| d.dataset));
            index.load(reader.as_ref(), &datasets)
        })
        .await;
        if !matches!(loaded, Ok(Ok(()))) {
            tracing::warn!("cannot reload the recorded personal-data declarations; retrying later");
        }
    }
}

/// Records the declarations a batch's schemas carry (in the batch's transaction) when they differ
/// from what the index holds. Schemas without declarations (older agents) change nothing.
pub fn record(wh: &mut dyn Warehouse, index: &Index, schemas: &[DatasetSchema]) -> Result<(), WarehouseError> {
    for s in schemas.iter().filter(|s| !s.privacy.is_empty()) {
        if index.set(&s.dataset, s.privacy.clone()) {
            let text = serde_json::to_string(&s.privacy).unwrap_or_default();
            wh.set_meta(&format!("{META_PREFIX}{}", s.dataset), &text)?;
            tracing::info!(dataset = %s.dataset, columns = s.privacy.len(), "personal-data declarations recorded");
        }
    }
    Ok(())
}

/// Appends `sensitive_read` entries to the audit log (on the blocking pool; a failure is logged
/// at ERROR and does not refuse the read).
#[derive(Clone)]
pub struct AuditSink {
    pub store: crate::ingest::gate::SharedStore,
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl AuditSink {
    /// Records that `who` read rows of `dataset` through `route`.
    pub async fn sensitive_read(&self, dataset: &str, route: &str, who: &str) {
        let entry = crate::audit::Entry {
            at_ms: self.clock.now().as_millisecond(),
            kind: crate::audit::Kind::SensitiveRead,
            agent: None,
            detail: serde_json::json!({"dataset": dataset, "route": route, "by": who}),
        };
        let store = Arc::clone(&self.store);
        let done = tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.append_audit(&entry).map(drop)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(dataset, error = %e, "cannot append a sensitive read to the audit log"),
            Err(e) => tracing::error!(dataset, error = %e, "audit task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn col(class: &str, action: &str) -> ColumnPrivacy {
        ColumnPrivacy { class: class.into(), action: action.into() }
    }

    #[test]
    fn the_index_tells_exposed_and_sensitive_datasets() {
        let index = Index::default();
        let cols = BTreeMap::from([
            ("so_cccd".to_string(), col("personal", "pseudonymise")),
            ("ho_ten".to_string(), col("personal", "keep")),
            ("benh_an".to_string(), col("sensitive", "generalise")),
            ("ghi_chu".to_string(), col("sensitive", "drop")),
            ("xa".to_string(), col("public", "keep")),
        ]);
        assert!(index.set("cong_dan", cols.clone()));
        assert!(!index.set("cong_dan", cols), "unchanged declarations are not rewritten");
        assert_eq!(index.exposed("cong_dan"), vec!["ho_ten".to_string()]);
        assert!(index.is_sensitive("cong_dan"));
        let classes = index.classes("cong_dan");
        assert_eq!(classes.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["personal", "public", "sensitive"]);
        assert_eq!(classes[2].1, vec!["benh_an (generalise)".to_string()]);
        assert!(index.exposed("other").is_empty());
        assert!(!index.is_sensitive("other"));
    }

    #[test]
    fn key_files_name_the_bad_line_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "v1:0123456789abcdef0123456789abcdef\nv2:tooshortsecret\n").unwrap();
        let e = current_key(&path).unwrap_err();
        assert!(e.contains("line 2") && !e.contains("tooshortsecret"), "{e}");
        std::fs::write(&path, "v1:0123456789abcdef0123456789abcdef\nv2:0123456789abcdef0123456789abcdeX\n").unwrap();
        assert_eq!(current_key(&path).map(|k| k.version()), Ok(2));
    }
}
