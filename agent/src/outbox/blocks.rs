//! Reading the `change_blocks` table: pending changes for a batch, the integrity check's view of
//! the sequence, and the move from schema version 1 (one `changes` row per change).

use rusqlite::{Transaction, params};

use super::{Outbox, OutboxError, Pending, sql_err};

/// The payload lengths stored in a block's `lens` column, or `None` if the column is not a
/// whole number of `u32`s.
fn lengths(lens: &[u8]) -> Option<impl Iterator<Item = usize> + '_> {
    lens.len()
        .is_multiple_of(4)
        .then(|| lens.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize))
}

/// What is wrong with one block's shape, if anything: `lens` must hold one length per change of
/// `first..=last`, and the lengths must add up to the payload.
pub(super) fn block_problem(first: u64, last: u64, lens: &[u8], payload_len: usize) -> Option<String> {
    let Some(lengths) = lengths(lens) else {
        return Some(format!("block at seq {first}: its length column is {} bytes, not a multiple of 4", lens.len()));
    };
    let (count, total) = lengths.fold((0u64, 0usize), |(n, t), l| (n + 1, t.saturating_add(l)));
    if last < first || count != last - first + 1 {
        return Some(format!("block at seq {first}: holds {count} changes for seq {first}..={last}"));
    }
    (total != payload_len)
        .then(|| format!("block at seq {first}: lengths add up to {total} bytes, but the payload has {payload_len}"))
}

impl Outbox {
    /// Reads up to `max_changes` contiguous changes starting at `from_seq`, stopping before the
    /// total payload would exceed `max_bytes` (at least one change is always read). Stops early at
    /// a gap in the sequence or a malformed block (which [`Outbox::verify`] reports).
    pub fn read_pending(
        &self,
        from_seq: u64,
        max_changes: usize,
        max_bytes: usize,
        out: &mut Pending,
    ) -> Result<(), OutboxError> {
        out.first_seq = from_seq;
        out.last_seq = from_seq.saturating_sub(1);
        out.datasets.clear();
        out.bytes.clear();
        out.ends.clear();
        let err = |context| move |e| sql_err(&self.path, context, e);
        // Blocks are stored in sequence order, so the one holding `from_seq` is the last block
        // starting at or before it; later blocks follow by `first_seq`.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT first_seq, last_seq, dataset, lens, payload FROM change_blocks
                 WHERE first_seq >= (SELECT coalesce(max(first_seq), 0) FROM change_blocks WHERE first_seq <= ?1)
                   AND last_seq >= ?1
                 ORDER BY first_seq",
            )
            .map_err(err("prepare read"))?;
        let mut rows = stmt.query([from_seq as i64]).map_err(err("read changes"))?;
        while let Some(row) = rows.next().map_err(err("read changes"))? {
            let first = row.get::<_, i64>(0).map_err(err("read seq"))? as u64;
            let last = row.get::<_, i64>(1).map_err(err("read seq"))? as u64;
            let lens = row.get_ref(3).and_then(|v| Ok(v.as_bytes()?)).map_err(err("read lengths"))?;
            let payload = row.get_ref(4).and_then(|v| Ok(v.as_bytes()?)).map_err(err("read payload"))?;
            if block_problem(first, last, lens, payload.len()).is_some() {
                break;
            }
            let Some(lengths) = lengths(lens) else { break };
            let dataset = row.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(err("read dataset"))?;
            let mut start = 0;
            for (seq, len) in (first..=last).zip(lengths) {
                let change = &payload[start..start + len];
                start += len;
                if seq < from_seq {
                    continue;
                }
                if out.is_empty() {
                    out.first_seq = seq;
                } else if seq != out.last_seq + 1
                    || out.len() >= max_changes
                    || out.bytes.len() + change.len() > max_bytes
                {
                    return Ok(());
                }
                if !out.datasets.iter().any(|d| d == dataset) {
                    out.datasets.push(dataset.to_string());
                }
                out.bytes.extend_from_slice(change);
                out.ends.push(out.bytes.len());
                out.last_seq = seq;
            }
            if out.len() >= max_changes {
                break;
            }
        }
        Ok(())
    }

    /// Sequence of the oldest change still held, if any.
    pub fn oldest_seq(&self) -> Result<Option<u64>, OutboxError> {
        let acked = self.meta()?.acked_through;
        self.conn
            .query_row(
                "SELECT max(min(first_seq), ?1 + 1) FROM change_blocks WHERE last_seq > ?1",
                [acked as i64],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|s| s as u64))
            .map_err(|e| self.err("read oldest change", e))
    }
}

/// Moves a version-1 outbox's `changes` rows (one per change) into blocks of one change each,
/// and drops the old table. Does nothing if there is no such table (a new or already moved
/// outbox). Runs inside the transaction that sets the schema version.
pub(super) fn migrate_v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let exists: bool =
        tx.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'changes'", [], |r| {
            r.get(0)
        })?;
    if !exists {
        return Ok(());
    }
    {
        let mut read = tx.prepare("SELECT seq, dataset, captured_at_ms, payload FROM changes ORDER BY seq")?;
        let mut insert = tx.prepare(
            "INSERT INTO change_blocks (first_seq, last_seq, dataset, captured_at_ms, lens, payload)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut rows = read.query([])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let dataset: String = row.get(1)?;
            let captured_at: i64 = row.get(2)?;
            let payload: Vec<u8> = row.get(3)?;
            let len = u32::try_from(payload.len())
                .map_err(|_| rusqlite::Error::ToSqlConversionFailure("change over 4 GiB".into()))?;
            insert.execute(params![seq, dataset, captured_at, len.to_le_bytes().as_slice(), payload])?;
        }
    }
    tx.execute_batch("DROP TABLE changes")
}
