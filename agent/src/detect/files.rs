//! Capture from a drop folder: choosing files, remembering them, and the per-file passes.
//!
//! Which files a poll reads (see [`crate::source::folder`] for the semantics):
//! - a file is a candidate once its size and mtime were observed unchanged for `settle`
//!   (observations live in [`FolderState`], across polls of this process; a restarted agent
//!   waits one settle period again);
//! - `snapshot`: only the newest file counts (if it is not settled yet, the poll waits for it); it
//!   is diffed by the ordinary [`super::snapshot`] pass; a newest file older than the last applied
//!   one (the newer file was moved away) is ignored, so the warehouse never rolls back;
//! - `cursor`: every settled file not yet processed, oldest first; each one's rows are all
//!   upserted ([`delta_pass`]); a refused file stops the walk;
//! - a file's content hash already `done` is skipped; one `refused` returns the remembered error
//!   without reading the file again;
//! - validation failures (bad row, bad key, missing key column) refuse the content; I/O errors do
//!   not (the poll is simply retried);
//! - a file is marked `done` in its last chunk, and only if its size and mtime are still those it
//!   had when opened (otherwise it changed while being read and is read again).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use kho_shared::protocol::{DatasetSchema, Op};

use super::encode::RowEncoder;
use super::{Capture, DetectError, PollReport};
use crate::config::Mode;
use crate::outbox::{FileStatus, now_ms};
use crate::source::folder::{self, DroppedFile, FolderSource, FolderSourceConfig};
use crate::source::{ScanRange, Source, SourceError};

type Stamp = (u64, SystemTime);

/// Per-dataset folder bookkeeping kept by the capture between polls.
#[derive(Debug, Default)]
pub struct FolderState {
    /// When each file was first seen with its current size and mtime.
    observed: HashMap<PathBuf, (Stamp, Instant)>,
    /// Content hashes by size and mtime, so unchanged files are not hashed on every poll.
    hashes: HashMap<PathBuf, (Stamp, [u8; 32])>,
}

/// The file a pass is capturing.
#[derive(Debug, Clone)]
pub struct PendingFile {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub stamp: Stamp,
}

impl FolderState {
    /// Whether `f` has kept its size and mtime for `settle`; records a first observation.
    fn settled(&mut self, f: &DroppedFile, settle: std::time::Duration, now: Instant) -> bool {
        match self.observed.get(&f.path) {
            Some((stamp, since)) if *stamp == f.stamp() => now.duration_since(*since) >= settle,
            _ => {
                self.observed.insert(f.path.clone(), (f.stamp(), now));
                settle.is_zero()
            }
        }
    }

    fn forget_missing(&mut self, files: &[DroppedFile]) {
        self.observed.retain(|p, _| files.iter().any(|f| &f.path == p));
        self.hashes.retain(|p, _| files.iter().any(|f| &f.path == p));
    }
}

fn mtime_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The content hash of `f`, from the cache when its size and mtime did not change.
fn hash_of(cap: &mut Capture, f: &DroppedFile) -> Result<[u8; 32], DetectError> {
    if let Some((stamp, h)) = cap.folder.hashes.get(&f.path)
        && *stamp == f.stamp()
    {
        return Ok(*h);
    }
    let h = folder::file_sha256(&cap.config.name, &f.path)?;
    cap.folder.hashes.insert(f.path.clone(), (f.stamp(), h));
    Ok(h)
}

/// One poll of a folder dataset.
pub fn poll(cap: &mut Capture, config: &FolderSourceConfig) -> Result<PollReport, DetectError> {
    let files = folder::list_files(&cap.config.name, config)?;
    cap.folder.forget_missing(&files);
    let now = Instant::now();
    let mut report = PollReport::default();
    match cap.config.mode {
        Mode::Snapshot | Mode::Cdc => {
            let Some(newest) = files.last() else {
                return Ok(report);
            };
            if !cap.folder.settled(newest, config.settle, now) {
                tracing::debug!(dataset = %cap.config.name, file = %newest.path.display(), "newest file not settled yet");
                return Ok(report);
            }
            let newest = newest.clone();
            // A file older than one already applied is never the current state (e.g. the newer
            // file was archived away): applying it would roll the warehouse back.
            let applied = cap.outbox.newest_done_mtime(&cap.config.name).map_err(|e| cap.outbox_err(e))?;
            if applied.is_some_and(|m| mtime_ms(newest.mtime) < m) {
                tracing::debug!(dataset = %cap.config.name, file = %newest.path.display(), "newest file is older than the last applied one; ignored");
                return Ok(report);
            }
            if let Some(r) = capture_file(cap, config, &newest)? {
                report = r;
            }
        }
        Mode::Cursor => {
            for f in &files {
                if !cap.folder.settled(f, config.settle, now) {
                    // Keep file order: later files wait for this one.
                    break;
                }
                if let Some(r) = capture_file(cap, config, f)? {
                    report.rows_read += r.rows_read;
                    report.changes += r.changes;
                    report.schema_changed |= r.schema_changed;
                    if r.interrupted {
                        report.interrupted = true;
                        break;
                    }
                }
                if cap.cancelled() {
                    report.interrupted = true;
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Captures one settled file unless its content was processed; None when it was.
fn capture_file(
    cap: &mut Capture,
    config: &FolderSourceConfig,
    f: &DroppedFile,
) -> Result<Option<PollReport>, DetectError> {
    let dataset = cap.config.name.clone();
    let sha = hash_of(cap, f)?;
    match cap.outbox.file_status(&dataset, &sha).map_err(|e| cap.outbox_err(e))? {
        Some(FileStatus::Done) => return Ok(None),
        Some(FileStatus::Refused(problem)) => {
            return Err(SourceError::File {
                dataset,
                path: f.path.clone(),
                problem: format!("(unchanged since refused) {problem}"),
            }
            .into());
        }
        None => {}
    }
    let mut src = FolderSource::open(&dataset, config, &cap.config.text, &f.path)?;
    let schema = match src.discover(&cap.config.key, None) {
        Ok(s) => s,
        Err(e @ (SourceError::File { .. } | SourceError::MissingColumn { .. } | SourceError::Schema { .. })) => {
            let problem = match &e {
                SourceError::File { problem, .. } => problem.clone(),
                other => other.to_string(),
            };
            tracing::error!(dataset = %dataset, file = %f.path.display(), problem = %problem, "file refused; nothing of it was applied; it is read again when it changes");
            cap.outbox
                .file_refused(&dataset, &sha, &file_name(&f.path), &problem, now_ms())
                .map_err(|e| cap.outbox_err(e))?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let schema_changed = cap.outbox.record_schema(&schema).map_err(|e| cap.outbox_err(e))?;
    tracing::info!(dataset = %dataset, file = %f.path.display(), "reading dropped file");
    cap.file_done = Some(PendingFile { path: f.path.clone(), sha256: sha, stamp: f.stamp() });
    let result = match cap.config.mode {
        Mode::Snapshot | Mode::Cdc => super::snapshot::pass(cap, &mut src, &schema),
        Mode::Cursor => delta_pass(cap, &mut src, &schema),
    };
    cap.file_done = None;
    let mut report = result?;
    report.schema_changed = schema_changed;
    Ok(Some(report))
}

/// Marks the pending file processed in the open chunk, if it did not change while being read.
pub(crate) fn mark_done(cap: &mut Capture, f: &PendingFile) -> Result<(), DetectError> {
    let meta = std::fs::metadata(&f.path).map_err(|source| SourceError::Io {
        dataset: cap.config.name.clone(),
        path: f.path.clone(),
        source,
    })?;
    let stamp = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
    if stamp != f.stamp {
        tracing::warn!(dataset = %cap.config.name, file = %f.path.display(), "file changed while it was read; it will be read again");
        return Ok(());
    }
    cap.outbox
        .file_done(&cap.config.name, &f.sha256, &file_name(&f.path), now_ms(), mtime_ms(f.stamp.1))
        .map_err(|e| cap.outbox_err(e))
}

/// Cursor mode for files: every row of the file is an upsert (the file was validated whole, so
/// keys are present and unique).
pub fn delta_pass(
    cap: &mut Capture,
    source: &mut dyn Source,
    schema: &DatasetSchema,
) -> Result<PollReport, DetectError> {
    let dataset = cap.config.name.clone();
    let mut report = PollReport::default();
    if !cap.begin_chunk()? {
        report.interrupted = true;
        return Ok(report);
    }
    let mut enc = RowEncoder::new(schema);
    let mut rows_in_chunk = 0usize;
    let mut failure: Option<DetectError> = None;
    source.scan(schema, ScanRange::KeyOrder, &mut |row| {
        let step = (|| -> Result<bool, DetectError> {
            report.rows_read += 1;
            rows_in_chunk += 1;
            enc.encode(row)?;
            cap.outbox.push_change(&dataset, Op::Upsert, enc.row()).map_err(|e| cap.outbox_err(e))?;
            report.changes += 1;
            if cap.outbox.chunk_changes() >= cap.chunk_changes || rows_in_chunk >= cap.chunk_rows {
                cap.commit_chunk()?;
                rows_in_chunk = 0;
                if cap.cancelled() || !cap.begin_chunk()? {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        match step {
            Ok(true) => std::ops::ControlFlow::Continue(()),
            Ok(false) => {
                report.interrupted = true;
                std::ops::ControlFlow::Break(())
            }
            Err(e) => {
                failure = Some(e);
                std::ops::ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if report.interrupted {
        return Ok(report);
    }
    cap.mark_file_done()?;
    cap.commit_chunk()?;
    Ok(report)
}
