//! The ledger lock that makes several hub instances safe on one warehouse (issue 11).
//!
//! Each applier group locks the ledger rows of the agents it carries before applying anything:
//! `INSERT … ON CONFLICT DO NOTHING` creates a missing row (and waits for another transaction that
//! is inserting the same agent), then `SELECT … FOR UPDATE` locks the rows. Both go through the
//! agents in sorted order, so two instances never wait for each other in a cycle over ledger rows;
//! and they come before any table or catalogue row is touched, so a transaction that holds a
//! dataset's catalogue row never waits for a ledger row. Then the group's datasets' rows in
//! `kho.datasets` and `kho.observations`, which every batch updates, are locked the same way (a
//! dataset that has no row yet is created under the DDL lock later), so two groups touching the
//! same datasets in different batch orders wait for each other instead of deadlocking.
//!
//! Once the lock is granted (in READ COMMITTED, after the holder committed or rolled back), the
//! applier's [`super::PostgresWarehouse::applied_seq`] reads the committed value: a batch `n+1`
//! that reached this instance while `n` was being applied elsewhere sees `n` applied and goes on,
//! or, if `n` failed or never arrived, gets the usual gap refusal and its agent resends.

use postgres::Client;

use super::db;
use crate::warehouse::WarehouseError;

/// Creates the missing ledger rows of `agents` at 0 and locks them until the transaction ends.
/// `agents` must be sorted and without duplicates.
pub(super) fn lock(client: &mut Client, agents: &[&str], now: &str) -> Result<(), WarehouseError> {
    debug_assert!(agents.windows(2).all(|w| w[0] < w[1]), "locks must be taken in order");
    if !agents.is_empty() {
        let agents: Vec<&str> = agents.to_vec();
        client
            .execute(
                "INSERT INTO kho.ledger (agent, applied_seq, updated_at) \
                 SELECT a, 0, $2::text::timestamptz FROM unnest($1::text[]) WITH ORDINALITY AS t(a, i) ORDER BY i \
                 ON CONFLICT (agent) DO NOTHING",
                &[&agents, &now],
            )
            .map_err(db("create ledger rows"))?;
        client
            .query(
                "SELECT agent FROM kho.ledger WHERE agent = ANY($1::text[]) ORDER BY agent COLLATE \"C\" FOR UPDATE",
                &[&agents],
            )
            .map_err(db("lock ledger rows"))?;
    }
    Ok(())
}
