//! What the writer threads need besides the warehouse.

use std::sync::Arc;

use crate::catalog::CatalogHandle;
use crate::clock::Clock;
use crate::metrics::Metrics;

/// What the writer thread needs besides the warehouse.
#[derive(Clone)]
pub struct ApplierContext {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// For each dataset's `freshness_field`.
    pub catalog: CatalogHandle,
    /// Personal-data declarations the batches carry (issue 14).
    pub privacy: crate::privacy::Index,
}
