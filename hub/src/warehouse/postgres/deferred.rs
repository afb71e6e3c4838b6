//! Per-dataset metadata writes, deferred to the end of the applier's group (issue 11).
//!
//! Every batch used to update its dataset's row in `kho.datasets` (last change) and in
//! `kho.observations` (freshness evidence) as soon as it was applied, so those row locks were held
//! from the first batch of a group until its `COMMIT`: every writer of every hub instance that
//! touched the same dataset waited for the whole group of the other, `COPY`s included. Now the
//! writer only notes what it would write ([`Op`]); [`Deferred::flush`] writes it all just before
//! `COMMIT`: it first takes every row it needs in one global order (the `kho.datasets` rows, then
//! the `kho.observations` rows, each sorted by name in the `C` collation, creating the missing
//! observation rows in that order too), then writes. Row locks are therefore held only between the
//! flush and the commit, and two groups can no longer deadlock on them, whatever order their
//! batches came in or whether they create a dataset's rows at the same moment.
//!
//! Exactness is unchanged: the values written are those the batches and heartbeats decided inside
//! the transaction (the ledger is still read where it was), in the same order per row; only the
//! moment of writing moves, within the same transaction. Nothing in the writer reads these rows
//! back before the commit (readers use their own connections and see committed data only). A
//! batch rolled back to its savepoint drops the notes it made ([`Deferred::savepoint`]).

use std::collections::{BTreeMap, BTreeSet};

use postgres::Client;

use super::db;
use crate::warehouse::WarehouseError;

/// One deferred write. Timestamps are RFC 3339 text, as everywhere in the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    /// `kho.datasets`: the dataset's last applied change (the last note of a group wins).
    LastChange { dataset: String, at: String, seq: i64, agent: String },
    /// `kho.observations`: a batch changed the dataset's rows (`first` seen at `at` if new).
    Activity { dataset: String, at: String, max_business_date: Option<String> },
    /// `kho.observations`: a heartbeat's poll is confirmed (the ledger already held it).
    Synced { dataset: String, seen: String, poll_at: String },
    /// `kho.observations`: a heartbeat's poll waits for the ledger to reach `seq`.
    Pending { dataset: String, seen: String, poll_at: String, seq: i64, agent: String },
    /// `agent`'s ledger reached `applied`: its pending polls up to it are confirmed.
    Promote { agent: String, applied: i64 },
}

/// The notes of the current transaction.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    ops: Vec<Op>,
    /// How many notes the current savepoint started with.
    mark: usize,
}

/// What a flush does, worked out from the notes alone (pure, so it is tested without a database).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// `kho.datasets` rows to update, sorted: (at, seq, agent) of the last note.
    pub catalogue: BTreeMap<String, (String, i64, String)>,
    /// `kho.observations` rows that must exist, sorted, with the time to create them at.
    pub observed: BTreeMap<String, String>,
    /// Activity per dataset, sorted: the latest `at` and the greatest business date.
    pub activity: BTreeMap<String, (String, Option<String>)>,
    /// Sync notes and promotions, in the order they were made (they depend on each other).
    pub syncs: Vec<Op>,
    /// Agents whose pending polls may be promoted: their rows are locked too.
    pub promoting: BTreeSet<String>,
}

impl Deferred {
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Forgets everything (a new transaction, or a rollback).
    pub fn clear(&mut self) {
        self.ops.clear();
        self.mark = 0;
    }

    pub fn savepoint(&mut self) {
        self.mark = self.ops.len();
    }

    pub fn rollback_to_savepoint(&mut self) {
        self.ops.truncate(self.mark);
    }

    /// Groups the notes by row. Activity and sync notes touch different columns of an observation
    /// row (`last_change_at`, `max_business_date` vs `last_sync_at`, `pending_*`), and both kinds only
    /// move values forward, so activity may be merged per dataset while syncs keep their order.
    pub fn plan(&self) -> Plan {
        fn observe(plan: &mut Plan, dataset: &str, at: &str) {
            plan.observed.entry(dataset.to_string()).or_insert_with(|| at.to_string());
        }
        let mut plan = Plan::default();
        for op in &self.ops {
            match op {
                Op::LastChange { dataset, at, seq, agent } => {
                    plan.catalogue.insert(dataset.clone(), (at.clone(), *seq, agent.clone()));
                }
                Op::Activity { dataset, at, max_business_date } => {
                    observe(&mut plan, dataset, at);
                    let entry = plan.activity.entry(dataset.clone()).or_insert_with(|| (at.clone(), None));
                    // RFC 3339 UTC with milliseconds and ISO dates both order as text.
                    if *at > entry.0 {
                        entry.0 = at.clone();
                    }
                    if max_business_date.as_ref() > entry.1.as_ref() {
                        entry.1 = max_business_date.clone();
                    }
                }
                Op::Synced { dataset, seen, .. } | Op::Pending { dataset, seen, .. } => {
                    observe(&mut plan, dataset, seen);
                    plan.syncs.push(op.clone());
                }
                Op::Promote { agent, .. } => {
                    plan.promoting.insert(agent.clone());
                    plan.syncs.push(op.clone());
                }
            }
        }
        plan
    }

    /// Locks the rows in one global order and writes the notes; then forgets them. Runs inside
    /// the group's transaction, just before `COMMIT`.
    pub fn flush(&mut self, c: &mut Client) -> Result<(), WarehouseError> {
        if self.is_empty() {
            return Ok(());
        }
        let plan = self.plan();
        self.clear();
        // Rows a promotion may update: the agents' pending polls, as committed now. A poll a
        // concurrent heartbeat of the same agent leaves pending meanwhile is updated unordered;
        // at worst PostgreSQL reports a deadlock and the group is retried.
        let mut observations: BTreeSet<String> = plan.observed.keys().cloned().collect();
        if !plan.promoting.is_empty() {
            let agents: Vec<&str> = plan.promoting.iter().map(String::as_str).collect();
            let rows = c
                .query("SELECT dataset FROM kho.observations WHERE pending_agent = ANY($1::text[])", &[&agents])
                .map_err(db("read pending syncs"))?;
            observations.extend(rows.into_iter().map(|r| r.get::<_, String>(0)));
        }
        if !plan.catalogue.is_empty() {
            let names: Vec<&str> = plan.catalogue.keys().map(String::as_str).collect();
            lock(c, "kho.datasets", &names)?;
        }
        if !plan.observed.is_empty() {
            let (names, ats): (Vec<&str>, Vec<&str>) =
                plan.observed.iter().map(|(d, a)| (d.as_str(), a.as_str())).unzip();
            c.execute(
                "INSERT INTO kho.observations (dataset, first_received_at) \
                 SELECT d, at::timestamptz FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(d, at, i) \
                 ORDER BY i ON CONFLICT DO NOTHING",
                &[&names, &ats],
            )
            .map_err(db("write observations"))?;
        }
        if !observations.is_empty() {
            let names: Vec<&str> = observations.iter().map(String::as_str).collect();
            lock(c, "kho.observations", &names)?;
        }
        write_catalogue(c, &plan.catalogue)?;
        write_activity(c, &plan.activity)?;
        for op in &plan.syncs {
            write_sync(c, op)?;
        }
        Ok(())
    }
}

/// Locks the rows of `table` named `names` (sorted), in that order.
fn lock(c: &mut Client, table: &str, names: &[&str]) -> Result<(), WarehouseError> {
    let sql = format!(
        "SELECT dataset FROM {table} WHERE dataset = ANY($1::text[]) ORDER BY dataset COLLATE \"C\" FOR UPDATE"
    );
    c.query(&sql, &[&names]).map_err(db(format!("lock {table} rows")))?;
    Ok(())
}

fn write_catalogue(c: &mut Client, rows: &BTreeMap<String, (String, i64, String)>) -> Result<(), WarehouseError> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = rows.keys().map(String::as_str).collect();
    let ats: Vec<&str> = rows.values().map(|v| v.0.as_str()).collect();
    let seqs: Vec<i64> = rows.values().map(|v| v.1).collect();
    let agents: Vec<&str> = rows.values().map(|v| v.2.as_str()).collect();
    c.execute(
        "UPDATE kho.datasets d SET last_change_at = u.at::timestamptz, last_seq = u.seq, last_agent = u.agent \
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) AS u(dataset, at, seq, agent) \
         WHERE d.dataset = u.dataset",
        &[&names, &ats, &seqs, &agents],
    )
    .map_err(db("write catalogue"))?;
    Ok(())
}

fn write_activity(c: &mut Client, rows: &BTreeMap<String, (String, Option<String>)>) -> Result<(), WarehouseError> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = rows.keys().map(String::as_str).collect();
    let ats: Vec<&str> = rows.values().map(|v| v.0.as_str()).collect();
    let dates: Vec<Option<&str>> = rows.values().map(|v| v.1.as_deref()).collect();
    c.execute(
        "UPDATE kho.observations o SET last_change_at = greatest(o.last_change_at, u.at::timestamptz), \
         max_business_date = greatest(o.max_business_date, u.day::date) \
         FROM unnest($1::text[], $2::text[], $3::text[]) AS u(dataset, at, day) WHERE o.dataset = u.dataset",
        &[&names, &ats, &dates],
    )
    .map_err(db("write observations"))?;
    Ok(())
}

fn write_sync(c: &mut Client, op: &Op) -> Result<(), WarehouseError> {
    match op {
        Op::Synced { dataset, poll_at, .. } => c.execute(
            "UPDATE kho.observations SET last_sync_at = greatest(last_sync_at, $2::text::timestamptz) WHERE dataset = $1",
            &[dataset, poll_at],
        ),
        Op::Pending { dataset, poll_at, seq, agent, .. } => c.execute(
            "UPDATE kho.observations SET pending_sync_at = $2::text::timestamptz, pending_sync_seq = $3, \
             pending_agent = $4 WHERE dataset = $1",
            &[dataset, poll_at, seq, agent],
        ),
        Op::Promote { agent, applied } => c.execute(
            "UPDATE kho.observations SET last_sync_at = greatest(last_sync_at, pending_sync_at), \
             pending_sync_at = NULL, pending_sync_seq = NULL, pending_agent = NULL \
             WHERE pending_agent = $1 AND pending_sync_seq <= $2",
            &[agent, applied],
        ),
        Op::LastChange { .. } | Op::Activity { .. } => return Ok(()),
    }
    .map_err(db("write sync"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(dataset: &str, at: &str, day: Option<&str>) -> Op {
        Op::Activity { dataset: dataset.into(), at: at.into(), max_business_date: day.map(Into::into) }
    }

    #[test]
    fn the_plan_merges_rows_in_name_order_and_keeps_sync_order() {
        let mut d = Deferred::default();
        let (t1, t2) = ("2026-12-03T10:00:00.000Z", "2026-12-03T10:00:01.000Z");
        d.push(Op::LastChange { dataset: "z_ds".into(), at: t1.into(), seq: 5, agent: "a".into() });
        d.push(activity("z_ds", t1, Some("2026-11-30")));
        d.push(Op::Pending { dataset: "b_ds".into(), seen: t2.into(), poll_at: t1.into(), seq: 9, agent: "a".into() });
        d.push(Op::LastChange { dataset: "a_ds".into(), at: t1.into(), seq: 3, agent: "b".into() });
        d.push(Op::LastChange { dataset: "z_ds".into(), at: t2.into(), seq: 8, agent: "a".into() });
        d.push(activity("z_ds", t2, Some("2026-11-02")));
        d.push(activity("a_ds", t2, None));
        d.push(Op::Promote { agent: "a".into(), applied: 9 });
        let plan = d.plan();
        assert_eq!(plan.catalogue.keys().collect::<Vec<_>>(), ["a_ds", "z_ds"]);
        assert_eq!(plan.catalogue["z_ds"], (t2.to_string(), 8, "a".to_string()), "the last note wins");
        assert_eq!(plan.activity["z_ds"], (t2.to_string(), Some("2026-11-30".to_string())), "maxima");
        assert_eq!(plan.activity["a_ds"], (t2.to_string(), None));
        // Observation rows are created at the first time they were noted, in name order.
        let observed: Vec<_> = plan.observed.iter().map(|(d, a)| (d.as_str(), a.as_str())).collect();
        assert_eq!(observed, [("a_ds", t2), ("b_ds", t2), ("z_ds", t1)]);
        assert!(matches!(plan.syncs.as_slice(), [Op::Pending { .. }, Op::Promote { .. }]), "{:?}", plan.syncs);
        assert_eq!(plan.promoting.iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_rolled_back_batch_leaves_no_notes() {
        let mut d = Deferred::default();
        let t = "2026-12-03T10:00:00.000Z";
        d.savepoint();
        d.push(activity("kept", t, None));
        d.savepoint();
        d.push(activity("dropped", t, None));
        d.push(Op::Promote { agent: "x".into(), applied: 1 });
        d.rollback_to_savepoint();
        let plan = d.plan();
        assert_eq!(plan.activity.keys().collect::<Vec<_>>(), ["kept"]);
        assert!(plan.syncs.is_empty() && plan.promoting.is_empty());
        d.clear();
        assert!(d.is_empty() && d.plan() == Plan::default());
    }
}
