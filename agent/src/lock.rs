//! One agent per data directory: `run` and `sync --once` hold an exclusive advisory lock on
//! `<data_dir>/agent.lock` (flock) for as long as they live, so a second instance started by
//! mistake (a service plus a manual run, two services) stops with a clear error instead of
//! capturing the same rows twice. The kernel releases the lock when the process dies, even on
//! kill -9, so a crash never leaves a stale lock behind. The file holds the owner's pid for the
//! error message only.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another kho-agent{} is already running with data directory {dir}; stop it first \
         (only one agent may use an outbox)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held while the process runs; dropping it releases the lock.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

impl AgentLock {
    /// Takes the lock of `data_dir` (created if needed) without waiting.
    pub fn acquire(data_dir: &Path) -> Result<AgentLock, LockError> {
        let path = data_dir.join("agent.lock");
        let io = |source: std::io::Error| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _unreadable = file.read_to_string(&mut text);
                return Err(LockError::Held { dir: data_dir.to_path_buf(), pid: text.trim().parse().ok() });
            }
            return Err(io(e.into()));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(AgentLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = AgentLock::acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        match AgentLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        AgentLock::acquire(dir.path()).unwrap_or_else(|e| panic!("released on drop: {e}"));
    }
}
