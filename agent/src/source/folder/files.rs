//! Which files of the folder are candidates: temporary names skipped, the glob pattern, size
//! and modification time, content sha256.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::source::SourceError;

use super::*;

/// Whether `name` is a temporary or hidden file another program may still be writing.
pub fn is_temp_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || name.starts_with('~')
        || [".tmp", ".part", ".crdownload", ".partial", ".swp", "~"].iter().any(|s| lower.ends_with(s))
}

/// Glob match of a file name: `*` any run, `?` one character; case-insensitive for ASCII.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A candidate file in the drop folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedFile {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: SystemTime,
}

impl DroppedFile {
    /// Whether the file's modification time is at least `settle` old (the stateless test).
    pub fn settled_at(&self, now: SystemTime, settle: Duration) -> bool {
        now.duration_since(self.mtime).is_ok_and(|age| age >= settle)
    }

    /// Size and mtime, to notice a change.
    pub fn stamp(&self) -> (u64, SystemTime) {
        (self.size, self.mtime)
    }
}

/// Files in the folder matching the pattern, temporary names excluded, oldest first (mtime, then
/// name).
pub fn list_files(dataset: &str, config: &FolderSourceConfig) -> Result<Vec<DroppedFile>, SourceError> {
    let io = |source| SourceError::Io { dataset: dataset.to_string(), path: config.path.clone(), source };
    if !config.path.is_dir() {
        return Err(SourceError::Missing { dataset: dataset.to_string(), path: config.path.clone() });
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&config.path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) || !glob_match(&config.pattern, name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.push(DroppedFile { path: entry.path(), size: meta.len(), mtime: meta.modified().map_err(io)? });
    }
    out.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// The sha256 of a file's content.
pub fn file_sha256(dataset: &str, path: &Path) -> Result<[u8; 32], SourceError> {
    let io = |source| SourceError::Io { dataset: dataset.to_string(), path: path.to_path_buf(), source };
    let mut f = File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}
