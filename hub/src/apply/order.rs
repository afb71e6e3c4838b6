//! The order in which an agent's batches enter the apply queue: the order they arrived in.
//!
//! An agent may have two batches in flight (the next travels while the hub applies the previous),
//! and the later one may finish decoding first. A batch takes its place in its agent's line when it
//! arrives ([`Lines::arrive`]) and is queued only once the batches of the same agent that arrived
//! before it are queued or refused ([`Arrival::turn`], bounded by [`ORDER_WAIT`] in
//! [`super::ApplierHandle::apply`]). This only saves needless gap replies: correctness stays with
//! the ledger ([`super::plan`]), which refuses a batch that still comes early.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Longest a batch waits for its agent's earlier-arrived batches to be queued.
pub const ORDER_WAIT: Duration = Duration::from_secs(2);

/// Every agent's line of batches between arrival and queue.
#[derive(Clone, Default)]
pub struct Lines {
    line: Arc<Mutex<Line>>,
}

#[derive(Default)]
struct Line {
    next: u64,
    waiting: HashMap<String, Queue>,
}

/// One agent's batches between arrival and queue, and the wakeup of that agent's waiters only:
/// with thousands of agents, waking every waiting request on every departure (one shared
/// `Notify`) made each departure cost as much as all the agents' lines together.
struct Queue {
    ids: Vec<u64>,
    moved: Arc<Notify>,
}

impl Lines {
    /// Takes `agent`'s place in line for a batch that has just arrived.
    pub fn arrive(&self, agent: &str) -> Arrival {
        let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        line.next += 1;
        let id = line.next;
        let queue = line
            .waiting
            .entry(agent.to_string())
            .or_insert_with(|| Queue { ids: Vec::with_capacity(2), moved: Arc::new(Notify::new()) });
        queue.ids.push(id);
        Arrival { agent: agent.to_string(), id, lines: self.clone() }
    }

    /// Whether `arrival` is first of its agent's line, and the agent's wakeup if it is not.
    fn first(&self, arrival: &Arrival) -> Option<Arc<Notify>> {
        let line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        let queue = line.waiting.get(&arrival.agent)?;
        let first = queue.ids.first().copied()?;
        (first < arrival.id).then(|| Arc::clone(&queue.moved))
    }
}

/// One batch's place in its agent's line; dropping it (queued or refused) gives the place up.
pub struct Arrival {
    agent: String,
    id: u64,
    lines: Lines,
}

impl Arrival {
    /// Returns once no batch of the same agent that arrived earlier is still waiting.
    pub async fn turn(&self) {
        // The agent's queue holds this arrival, so its `Notify` stays the same while we wait.
        while let Some(moved) = self.lines.first(self) {
            let notified = moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A departure between the check and `enable` would otherwise be missed.
            if self.lines.first(self).is_none() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        let mut line = self.lines.line.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = line.waiting.get_mut(&self.agent) else { return };
        queue.ids.retain(|&id| id != self.id);
        if queue.ids.is_empty() {
            line.waiting.remove(&self.agent);
        } else {
            queue.moved.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_agents_batches_queue_in_arrival_order() {
        let lines = Lines::default();
        let quick = Duration::from_millis(50);
        let first = lines.arrive("so-y-te");
        let second = lines.arrive("so-y-te");
        let other = lines.arrive("so-tai-chinh");
        // Another agent's batch and the agent's first one never wait.
        assert!(tokio::time::timeout(quick, other.turn()).await.is_ok());
        assert!(tokio::time::timeout(quick, first.turn()).await.is_ok());
        // The second waits while the first is still being decoded, and goes once it is queued
        // (or refused: either way its `Arrival` is dropped).
        assert!(tokio::time::timeout(quick, second.turn()).await.is_err(), "second overtook first");
        let waiter = tokio::spawn(async move {
            second.turn().await;
            second
        });
        tokio::time::sleep(quick).await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("second's turn").expect("task");
        drop((second, other));
        assert!(lines.line.lock().expect("line").waiting.is_empty(), "nothing left behind");
    }
}
