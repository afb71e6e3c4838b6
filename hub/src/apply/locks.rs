//! What an applier group locks before its first batch (several hub instances, issue 11): the
//! ledger rows of its batches' agents and the metadata rows of every dataset its batches and
//! heartbeats touch, each list sorted and without duplicates, so every writer of every instance
//! takes them in one global order ([`crate::warehouse::Warehouse::lock_group`]).

use super::Job;

/// The agents and the datasets of `group`, sorted, without duplicates. Pure.
pub(super) fn lock_sets(group: &[Job]) -> (Vec<&str>, Vec<&str>) {
    let (mut agents, mut datasets) = (Vec::new(), Vec::new());
    for job in group {
        match job {
            Job::Batch { batch, .. } => {
                agents.push(batch.agent.as_str());
                datasets.extend(batch.schemas.iter().map(|s| s.dataset.as_str()));
            }
            Job::Heartbeat { heartbeat, .. } => datasets.extend(heartbeat.datasets.iter().map(|d| d.dataset.as_str())),
            Job::Records { .. } => {}
        }
    }
    for v in [&mut agents, &mut datasets] {
        v.sort_unstable();
        v.dedup();
    }
    (agents, datasets)
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
    fn lock_sets_are_sorted_without_duplicates() {
        let group = [job("xa-b", &["tiem_chung", "ho_so"]), job("xa-a", &["ho_so"]), job("xa-b", &["b_dataset"])];
        let (agents, datasets) = lock_sets(&group);
        assert_eq!(agents, ["xa-a", "xa-b"]);
        assert_eq!(datasets, ["b_dataset", "ho_so", "tiem_chung"]);
        assert_eq!(lock_sets(&[]), (vec![], vec![]));
    }
}
