//! Canonical row and key hashes for snapshot diffing.
//!
//! A row's canonical encoding is the JSON object of its columns in the dataset's column order, with
//! values in the portable encoding of [`crate::types`] — exactly the bytes the agent puts on the
//! wire. Its sha256 is the row hash: two reads of an unchanged row give the same hash, and any change
//! to any column changes it. A key's canonical encoding is the JSON array of its key values in key
//! order; the first 16 bytes of its sha256 identify the row in the agent's snapshot table (a
//! collision among 2^128 values is not a practical concern; the full key is stored beside it).

use sha2::{Digest, Sha256};

/// sha256 of a row's canonical encoding.
pub type RowHash = [u8; 32];
/// Truncated sha256 of a key's canonical encoding.
pub type KeyHash = [u8; 16];

/// Hash of a row's canonical JSON encoding.
pub fn row_hash(canonical_row: &[u8]) -> RowHash {
    Sha256::digest(canonical_row).into()
}

/// Hash of a key's canonical JSON encoding.
pub fn key_hash(canonical_key: &[u8]) -> KeyHash {
    let full = Sha256::digest(canonical_key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_sensitive() {
        let a = row_hash(r#"{"id":1,"ten":"Lò Văn Hùng"}"#.as_bytes());
        assert_eq!(a, row_hash(r#"{"id":1,"ten":"Lò Văn Hùng"}"#.as_bytes()));
        assert_ne!(a, row_hash(r#"{"id":1,"ten":"Lò Văn Hưng"}"#.as_bytes()));
        assert_eq!(hex::encode(key_hash(b"[1]")), hex::encode(&Sha256::digest(b"[1]")[..16]));
    }
}
