//! Cursor mode: read rows whose cursor column is ≥ the last value captured.
//!
//! `>=` rather than `>` because rows sharing the last value may not all have been read (a crash
//! between chunks, or rows written later with the same timestamp). Rows at the stored value are
//! de-duplicated through the outbox's `cursor_boundary` table: a row at that value whose
//! (key hash, row hash) is already there was captured before and is skipped; any other is emitted.
//! The cursor is stored with the exact type and value the source returned (no precision lost).
//! Rows whose cursor is NULL cannot be ordered; they are counted on every poll and reported
//! (log, status, heartbeat), never silently ignored.

use std::ops::ControlFlow;

use kho_shared::hash::{KeyHash, RowHash};
use kho_shared::protocol::{DatasetSchema, Op};

use super::encode::RowEncoder;
use super::{Capture, DetectError, PollReport};
use crate::source::{Cell, CursorValue, RowView, ScanRange, Source, SourceError};

/// Position bookkeeping between chunk commits.
struct Position {
    /// The value the stored `cursor_boundary` rows belong to.
    stored: Option<CursorValue>,
    /// The cursor of the last row processed.
    current: Option<CursorValue>,
    /// Boundary rows at `current` not yet written (at most one chunk's changes).
    pending: Vec<(KeyHash, RowHash)>,
    /// The row still held by the encoder was emitted and belongs in `pending`, but is not hashed
    /// yet: most rows are the only one at their cursor value, and the next row's new value drops
    /// them from `pending`, so they are hashed only if they are still there at a commit or a row
    /// with the same value follows.
    unhashed: bool,
    /// `current` differs from `stored`: the boundary table must be cleared at the next commit.
    reset: bool,
    /// `current` changed since the last commit.
    dirty: bool,
    rows_in_chunk: usize,
}

/// Runs one cursor pass over `source`.
/// `schema` is the source's; rows are encoded through `plan` (personal data, issue 14).
pub fn pass(
    cap: &mut Capture,
    source: &mut dyn Source,
    schema: &DatasetSchema,
    plan: &crate::privacy::Plan,
) -> Result<PollReport, DetectError> {
    let dataset = cap.config.name.clone();
    let column = cap.config.cursor_column.clone().unwrap_or_default();
    let cursor_idx =
        schema.columns.iter().position(|c| c.name == column).ok_or_else(|| SourceError::MissingColumn {
            dataset: dataset.clone(),
            role: "cursor",
            column: column.clone(),
            available: String::new(),
        })?;
    let stored = cap.outbox.dataset_state(&dataset).map_err(|e| cap.outbox_err(e))?.and_then(|s| s.cursor_value);

    let mut report = PollReport { null_cursor_rows: source.count_null(&column)?, ..PollReport::default() };
    if report.null_cursor_rows > 0 {
        tracing::warn!(
            dataset = %dataset,
            cursor_column = %column,
            rows = report.null_cursor_rows,
            "rows with a NULL cursor cannot be captured in cursor mode (use snapshot mode or fill the column)"
        );
    }
    if !cap.begin_chunk()? {
        report.interrupted = true;
        return Ok(report);
    }
    let from = stored.clone();
    let mut pos = Position {
        stored,
        current: from.clone(),
        pending: Vec::new(),
        unhashed: false,
        reset: false,
        dirty: false,
        rows_in_chunk: 0,
    };
    let mut enc = RowEncoder::with_plan(schema, plan);
    let mut failure = None;
    let range = ScanRange::CursorFrom { column: &column, from: from.as_ref() };
    source.scan(
        schema,
        range,
        &mut |row| match step(cap, &dataset, &mut pos, &mut enc, row, cursor_idx, &mut report) {
            Ok(true) => ControlFlow::Continue(()),
            Ok(false) => {
                report.interrupted = true;
                ControlFlow::Break(())
            }
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    if cap.outbox.in_chunk() {
        settle(&mut pos, &enc);
        flush(cap, &dataset, &mut pos)?;
        cap.commit_chunk()?;
    }
    if report.unaddressable_rows > 0 {
        tracing::warn!(dataset = %dataset, rows = report.unaddressable_rows, "rows with a NULL key column were skipped");
    }
    Ok(report)
}

/// Handles one row; returns false when the pass must stop (shutdown).
fn step(
    cap: &mut Capture,
    dataset: &str,
    pos: &mut Position,
    enc: &mut RowEncoder,
    row: &dyn RowView,
    cursor_idx: usize,
    report: &mut PollReport,
) -> Result<bool, DetectError> {
    report.rows_read += 1;
    pos.rows_in_chunk += 1;
    let cell = row.cell(cursor_idx)?;
    if cell == Cell::Null {
        return Ok(true);
    }
    let at_stored = pos.stored.as_ref().is_some_and(|s| s.matches(cell));
    if !at_stored && !pos.current.as_ref().is_some_and(|c| c.matches(cell)) {
        pos.current = CursorValue::from_cell(cell);
        pos.pending.clear();
        pos.unhashed = false;
        pos.reset = true;
        pos.dirty = true;
    } else {
        // The previous row shares this row's cursor value: it stays a boundary row.
        settle(pos, enc);
    }
    enc.encode(row)?;
    if enc.key_has_null() {
        report.unaddressable_rows += 1;
    } else if at_stored {
        let (kh, rh) = (enc.key_hash(), enc.row_hash());
        let unchanged = cap.outbox.boundary_get(dataset, &kh).map_err(|e| cap.outbox_err(e))? == Some(rh);
        if !unchanged {
            cap.outbox.push_change(dataset, Op::Upsert, enc.row()).map_err(|e| cap.outbox_err(e))?;
            report.changes += 1;
            pos.pending.push((kh, rh));
        }
    } else {
        cap.outbox.push_change(dataset, Op::Upsert, enc.row()).map_err(|e| cap.outbox_err(e))?;
        report.changes += 1;
        pos.unhashed = true;
    }
    if cap.chunk_full(pos.rows_in_chunk) {
        settle(pos, enc);
        flush(cap, dataset, pos)?;
        cap.commit_chunk()?;
        pos.rows_in_chunk = 0;
        if cap.cancelled() || !cap.begin_chunk()? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Hashes the encoder's row into `pending` if it was left unhashed (see [`Position::unhashed`]).
fn settle(pos: &mut Position, enc: &RowEncoder) {
    if pos.unhashed {
        pos.pending.push((enc.key_hash(), enc.row_hash()));
        pos.unhashed = false;
    }
}

/// Writes the position into the open chunk: boundary rows and cursor value.
fn flush(cap: &Capture, dataset: &str, pos: &mut Position) -> Result<(), DetectError> {
    let o = &cap.outbox;
    if pos.reset {
        o.boundary_clear(dataset).map_err(|e| cap.outbox_err(e))?;
        pos.stored = pos.current.clone();
        pos.reset = false;
    }
    for (kh, rh) in pos.pending.drain(..) {
        o.boundary_put(dataset, &kh, &rh).map_err(|e| cap.outbox_err(e))?;
    }
    if pos.dirty {
        o.set_cursor(dataset, pos.current.as_ref()).map_err(|e| cap.outbox_err(e))?;
        pos.dirty = false;
    }
    Ok(())
}
