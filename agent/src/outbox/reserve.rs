//! The outbox's disk reserve: a file of [`RESERVE_BYTES`] beside the outbox that exists only to be
//! deleted when the disk is full.
//!
//! Deleting acknowledged changes is itself a write (SQLite appends the changed pages to the WAL),
//! so on a disk filled to the last byte the ack that would free space fails, capture stays paused,
//! and the agent sends the same batch forever. Capture pauses well before the disk is full, but it
//! cannot see every byte in advance (WAL growth, checkpoints, other files on the same disk). The
//! reserve breaks that cycle: an ack that fails with "disk full" releases the reserve and is
//! retried (in steps, see `Outbox::ack`), and the reserve is written back once the disk has room again. Capture counts a missing
//! reserve as used space, so it does not fill the room the reserve must get back.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Size of the reserve: enough for the WAL frames of any ack (a few interior, free-list and
/// partial leaf pages) many times over, small next to any real disk.
pub const RESERVE_BYTES: u64 = 512 * 1024;
/// File name of the reserve, beside the outbox file.
pub const RESERVE_FILE: &str = "outbox.reserve";
/// Free space that must remain after the reserve is written back.
const RESTORE_MARGIN: u64 = 256 * 1024;

/// The reserve file for the outbox at `outbox`.
pub fn path(outbox: &Path) -> PathBuf {
    outbox.with_file_name(RESERVE_FILE)
}

/// Bytes the reserve lacks (0 when it is whole).
pub fn missing(outbox: &Path) -> u64 {
    let have = std::fs::metadata(path(outbox)).map(|m| m.len()).unwrap_or(0);
    RESERVE_BYTES.saturating_sub(have)
}

/// Writes the reserve back if it lacks bytes and `fs_free` leaves room for it plus a margin.
/// Returns whether the reserve is whole afterwards. The bytes are really written (not a sparse
/// file), so the space is held; a write that fails leaves no partial file behind.
pub fn restore(outbox: &Path, fs_free: u64) -> std::io::Result<bool> {
    let lacking = missing(outbox);
    if lacking == 0 {
        return Ok(true);
    }
    if fs_free < lacking + RESTORE_MARGIN {
        return Ok(false);
    }
    let file = path(outbox);
    let written = (|| {
        let mut f = std::fs::File::create(&file)?;
        let block = vec![0u8; 64 * 1024];
        let mut left = RESERVE_BYTES;
        while left > 0 {
            let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    match written {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = std::fs::remove_file(&file);
            Err(e)
        }
    }
}

/// Deletes the reserve, returning the bytes it held (0 if it was already gone).
pub fn release(outbox: &Path) -> u64 {
    let file = path(outbox);
    let had = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(&file) {
        Ok(()) => had,
        Err(_) => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn restore_writes_the_whole_reserve_only_when_there_is_room_and_release_gives_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox.sqlite");
        assert_eq!(missing(&outbox), RESERVE_BYTES);
        assert!(!restore(&outbox, RESERVE_BYTES).unwrap(), "no margin left: not written");
        assert!(!path(&outbox).exists());
        assert!(restore(&outbox, RESERVE_BYTES + RESTORE_MARGIN).unwrap());
        assert_eq!(missing(&outbox), 0);
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path(&outbox)).unwrap());
        assert!(blocks * 512 >= RESERVE_BYTES, "the reserve holds real blocks, not a sparse file");
        assert!(restore(&outbox, 0).unwrap(), "whole already: nothing to write");
        assert_eq!(release(&outbox), RESERVE_BYTES);
        assert_eq!(release(&outbox), 0, "already released");
        assert_eq!(missing(&outbox), RESERVE_BYTES);
    }
}
