//! The catalogue in force, and the task that reloads it without a restart.
//!
//! [`CatalogHandle`] holds an `Arc<Catalog>` behind a lock that is only held to clone or swap the
//! `Arc`, so readers (ingest permission checks, the evaluator, the API) never wait on a reload.
//! [`watch`] reloads when told to (SIGHUP, forwarded by `main` through a `Notify`) and when the
//! file's modification time or size changes (checked every `reload_interval`). A change is loaded
//! only once the file has looked the same on two consecutive checks, so an editor caught halfway
//! through a non-atomic write is not read. A new file that does not parse or validate — or that is
//! empty while the catalogue in force is not, the usual sign of a truncated write — is logged at
//! ERROR with every problem, counted in `kho_hub_catalog_reload_failures_total`, and the old
//! catalogue stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Catalog, CatalogError};
use crate::metrics::Metrics;

/// The catalogue in force; cheap to clone and share.
#[derive(Clone, Default)]
pub struct CatalogHandle {
    current: Arc<RwLock<Arc<Catalog>>>,
}

impl CatalogHandle {
    pub fn new(catalog: Catalog) -> CatalogHandle {
        CatalogHandle { current: Arc::new(RwLock::new(Arc::new(catalog))) }
    }

    /// The catalogue now; later reloads do not change the returned value.
    pub fn get(&self) -> Arc<Catalog> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, catalog: Catalog) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
    }
}

/// What identifies a version of the file without reading it.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Logs (once, as one line) catalogue agents the hub config does not know: they grant nothing.
pub fn warn_unknown_agents(catalog: &Catalog, configured: &[String]) {
    let mut unknown: Vec<&str> = catalog
        .datasets
        .iter()
        .flat_map(|d| d.agents.iter())
        .filter(|a| !configured.contains(a))
        .map(String::as_str)
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        tracing::warn!(agents = ?unknown, "catalogue names agents that are not in the hub config; they have no token and grant nothing");
    }
}

/// The reload loop's settings.
pub struct Watch {
    pub handle: CatalogHandle,
    pub path: PathBuf,
    pub interval: Duration,
    /// Notified on SIGHUP.
    pub trigger: Arc<Notify>,
    pub configured_agents: Vec<String>,
    pub metrics: Arc<Metrics>,
}

/// Reloads the catalogue on demand and on file changes until `shutdown`.
pub async fn watch(w: Watch, shutdown: CancellationToken) {
    let mut seen = fingerprint(&w.path);
    let mut settling = seen;
    let mut tick = tokio::time::interval(w.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = w.trigger.notified() => true,
            _ = tick.tick() => false,
        };
        let now = fingerprint(&w.path);
        if !forced && (now == seen || now != settling) {
            settling = now;
            continue;
        }
        seen = now;
        settling = now;
        let path = w.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Catalog::load(&path)).await;
        let loaded = match loaded {
            Ok(result) => result,
            Err(e) => Err(CatalogError::Parse { origin: w.path.display().to_string(), message: e.to_string() }),
        };
        let emptied = |c: &Catalog| {
            let old = w.handle.get();
            c.datasets.is_empty()
                && c.departments.is_empty()
                && !(old.datasets.is_empty() && old.departments.is_empty())
        };
        let loaded = match loaded {
            Ok(c) if emptied(&c) => Err(CatalogError::Parse {
                origin: w.path.display().to_string(),
                message: "the new file is empty (truncated?) while the catalogue in force is not".into(),
            }),
            other => other,
        };
        match loaded {
            Ok(catalog) => {
                warn_unknown_agents(&catalog, &w.configured_agents);
                tracing::info!(
                    path = %w.path.display(), departments = catalog.departments.len(),
                    datasets = catalog.datasets.len(), scenarios = catalog.scenarios.len(), forced,
                    "catalogue reloaded"
                );
                w.handle.set(catalog);
                w.metrics.catalog_reload(true);
            }
            Err(e) => {
                tracing::error!(path = %w.path.display(), error = %e, "new catalogue REFUSED; the previous catalogue stays in force");
                w.metrics.catalog_reload(false);
            }
        }
    }
}
