//! What an applier group locks before its first batch (several hub instances, issue 11): the
//! ledger rows of its batches' agents, sorted and without duplicates, so every writer of every
//! instance takes them in one global order ([`crate::warehouse::Warehouse::lock_group`]). The
//! per-dataset metadata rows are not locked here: they are written at the end of the group
//! ([`crate::warehouse::Warehouse::finish_group`]), so groups do not hold them while applying.

use super::Job;

/// The agents of `group`'s batches, sorted (bytewise, as PostgreSQL's `C` collation), without
/// duplicates. Pure.
pub(super) fn lock_set(group: &[Job]) -> Vec<&str> {
    let mut agents: Vec<&str> = group
        .iter()
        .filter_map(|job| match job {
            Job::Batch { batch, .. } => Some(batch.agent.as_str()),
            Job::Heartbeat { .. } | Job::Records { .. } => None,
        })
        .collect();
    agents.sort_unstable();
    agents.dedup();
    agents
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use kho_shared::protocol::{Batch, DatasetSchema};

    use super::*;

    fn job(agent: &str, datasets: &[&str]) -> Job {
        let schemas = datasets
            .iter()
            .map(|d| DatasetSchema {
                dataset: d.to_string(),
                key: vec!["id".into()],
                columns: vec![],
                privacy: Default::default(),
            })
            .collect();
        let batch =
            Batch { v: 1, agent: agent.into(), first_seq: 1, last_seq: 1, created_at_ms: 0, schemas, changes: vec![] };
        let (reply, _) = tokio::sync::oneshot::channel();
        Job::Batch { batch: Box::new(batch), digest: String::new(), queued: Instant::now(), reply }
    }

    #[test]
    fn the_lock_set_is_sorted_without_duplicates() {
        let group = [job("xa-b", &["tiem_chung", "ho_so"]), job("xa-a", &["ho_so"]), job("xa-b", &["b_dataset"])];
        assert_eq!(lock_set(&group), ["xa-a", "xa-b"]);
        assert!(lock_set(&[]).is_empty());
    }
}
