//! Snapshot mode: read every row, compare with the stored row hashes, emit what differs.
//!
//! Rows are read in key order. For each row, the stored hash for its canonical key (outbox table
//! `snapshot_rows`) is looked up: a new
//! or different row is emitted as an upsert and its hash stored in the same chunk; an unchanged
//! row produces nothing. Keys seen in the pass go to a TEMP table (on disk when large, so memory
//! stays flat for a ten-million-row table). Only after a complete pass are stored keys that were
//! not seen emitted as deletes (key only) and forgotten. A pass cut short by a crash or shutdown
//! is safe: committed chunks have their hashes stored, so the next pass finds those rows
//! unchanged, and no delete is ever computed from a partial pass.

use std::ops::ControlFlow;

use kho_shared::protocol::{DatasetSchema, Op};

use super::encode::RowEncoder;
use super::{Capture, DetectError, PollReport};
use crate::source::{RowView, ScanRange, Source};

/// Runs one snapshot pass over `source`.
/// `schema` is the source's; rows are encoded through `plan` (personal data, issue 14), so the
/// stored row hashes and keys are those of the transformed rows.
pub fn pass(
    cap: &mut Capture,
    source: &mut dyn Source,
    schema: &DatasetSchema,
    plan: &crate::privacy::Plan,
) -> Result<PollReport, DetectError> {
    let dataset = cap.config.name.clone();
    let mut report = PollReport::default();
    cap.outbox.seen_reset().map_err(|e| cap.outbox_err(e))?;
    if !cap.begin_chunk()? {
        report.interrupted = true;
        return Ok(report);
    }
    let mut enc = RowEncoder::with_plan(schema, plan);
    let mut rows_in_chunk = 0usize;
    let mut failure = None;
    source.scan(schema, ScanRange::KeyOrder, &mut |row| match step(
        cap,
        &dataset,
        &mut enc,
        row,
        &mut rows_in_chunk,
        &mut report,
    ) {
        Ok(true) => ControlFlow::Continue(()),
        Ok(false) => {
            report.interrupted = true;
            ControlFlow::Break(())
        }
        Err(e) => {
            failure = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if report.interrupted {
        return Ok(report);
    }
    if report.unaddressable_rows > 0 {
        tracing::warn!(
            dataset = %dataset,
            rows = report.unaddressable_rows,
            "rows with a NULL or repeated key were skipped (check the dataset's key columns)"
        );
    }

    // Deletes: stored keys the complete pass did not see, in key order, chunk by chunk.
    let mut after: Vec<u8> = Vec::new();
    loop {
        let gone = cap.outbox.snapshot_unseen(&dataset, &after, cap.chunk_changes).map_err(|e| cap.outbox_err(e))?;
        if gone.is_empty() {
            break;
        }
        for (key, key_json) in &gone {
            cap.outbox.push_change(&dataset, Op::Delete, key_json).map_err(|e| cap.outbox_err(e))?;
            cap.outbox.snapshot_remove(&dataset, key).map_err(|e| cap.outbox_err(e))?;
            report.changes += 1;
            report.deletes += 1;
        }
        if let Some((key, _)) = gone.last() {
            after.clone_from(key);
        }
        cap.commit_chunk()?;
        if cap.cancelled() || !cap.begin_chunk()? {
            report.interrupted = true;
            return Ok(report);
        }
    }
    cap.mark_file_done()?;
    cap.commit_chunk()?;
    Ok(report)
}

/// Handles one row; returns false when the pass must stop (shutdown).
fn step(
    cap: &mut Capture,
    dataset: &str,
    enc: &mut RowEncoder,
    row: &dyn RowView,
    rows_in_chunk: &mut usize,
    report: &mut PollReport,
) -> Result<bool, DetectError> {
    report.rows_read += 1;
    *rows_in_chunk += 1;
    enc.encode(row)?;
    if enc.key_has_null() || !cap.outbox.seen_insert(enc.key_array()).map_err(|e| cap.outbox_err(e))? {
        report.unaddressable_rows += 1;
    } else {
        let rh = enc.row_hash();
        let key = enc.key_array();
        if cap.outbox.snapshot_get(dataset, key).map_err(|e| cap.outbox_err(e))? != Some(rh) {
            cap.outbox.push_change(dataset, Op::Upsert, enc.row()).map_err(|e| cap.outbox_err(e))?;
            cap.outbox.snapshot_put(dataset, key, &rh, enc.key_object()).map_err(|e| cap.outbox_err(e))?;
            report.changes += 1;
        }
    }
    if cap.chunk_full(*rows_in_chunk) {
        cap.commit_chunk()?;
        *rows_in_chunk = 0;
        if cap.cancelled() || !cap.begin_chunk()? {
            return Ok(false);
        }
    }
    Ok(true)
}
