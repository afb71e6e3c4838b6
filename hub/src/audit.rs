//! The audit log's hash chain (pure): what an entry is, how its hash is computed, and how a
//! stored log is verified.
//!
//! Every entry stores the sha256 of the previous entry (`prev_sha256`; the first one stores
//! [`GENESIS`]) and its own `sha256`, computed over its sequence number, that previous hash, its
//! time, kind, agent and detail text exactly as stored. Editing any field of a row changes its
//! hash; fixing that hash breaks the next row's `prev_sha256`; deleting a row leaves a gap in
//! the sequence and a broken link. Only the *last* entry can be removed without a trace inside
//! the log itself, which is why `kho-hub audit verify` prints the head (count and hash): an
//! operator who records it elsewhere (a ticket, a daily report) pins everything before it.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `prev_sha256` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as the log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kho-hub agent add`: an enrollment token was issued.
    AgentAdded,
    /// An agent enrolled with its public key.
    Enrolled,
    /// `kho-hub agent revoke`.
    Revoked,
    /// `kho-agent rotate-key`: the agent replaced its public key.
    KeyRotated,
    /// A request was refused (detail: code and reason).
    Refused,
    /// A batch was applied (detail: dataset(s), seq range, rows, digest).
    BatchApplied,
    /// Rows of a dataset holding `sensitive` columns were read through an API (issue 14;
    /// detail: dataset, route, by whom).
    SensitiveRead,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AgentAdded => "agent_added",
            Kind::Enrolled => "enrolled",
            Kind::Revoked => "revoked",
            Kind::KeyRotated => "key_rotated",
            Kind::Refused => "refused",
            Kind::BatchApplied => "batch_applied",
            Kind::SensitiveRead => "sensitive_read",
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at_ms: i64,
    pub kind: Kind,
    pub agent: Option<String>,
    /// JSON object with the details; stored as this exact text.
    pub detail: serde_json::Value,
}

impl Entry {
    /// The entry of a batch that applied `rows` changes (`digest`: sha256 of the body as sent).
    pub fn batch_applied(
        batch: &kho_shared::protocol::Batch,
        digest: &str,
        rows: u64,
        applied_through: u64,
        at_ms: i64,
    ) -> Entry {
        let mut datasets: Vec<&str> = batch.datasets();
        datasets.sort_unstable();
        datasets.dedup();
        Entry {
            at_ms,
            kind: Kind::BatchApplied,
            agent: Some(batch.agent.clone()),
            detail: serde_json::json!({
                "datasets": datasets, "first_seq": batch.first_seq, "last_seq": batch.last_seq,
                "rows": rows, "applied_through": applied_through, "sha256": digest,
            }),
        }
    }
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    pub seq: i64,
    pub at_ms: i64,
    pub kind: String,
    pub agent: Option<String>,
    pub detail: String,
    pub prev_sha256: String,
    pub sha256: String,
}

impl Stored {
    /// The row for `entry` appended after `prev` (`None`: the first entry).
    pub fn chain(entry: &Entry, prev: Option<(i64, &str)>) -> Stored {
        let (seq, prev_sha256) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let detail = entry.detail.to_string();
        let mut row = Stored {
            seq,
            at_ms: entry.at_ms,
            kind: entry.kind.as_str().to_string(),
            agent: entry.agent.clone(),
            detail,
            prev_sha256,
            sha256: String::new(),
        };
        row.sha256 = row.compute_hash();
        row
    }

    /// The hash this row should carry, from its other fields.
    pub fn compute_hash(&self) -> String {
        // A JSON array is an unambiguous encoding of the fields (no separator can be forged).
        let canonical = serde_json::json!([self.seq, self.prev_sha256, self.at_ms, self.kind, self.agent, self.detail]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// A verified log: how many entries and the hash of the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub count: u64,
    pub sha256: String,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit entry {seq}: expected sequence {expected} (an entry was deleted or inserted)")]
    Gap { seq: i64, expected: i64 },
    #[error("audit entry {seq}: previous-hash link broken (the entry before it was edited or deleted)")]
    Link { seq: i64 },
    #[error("audit entry {seq}: content does not match its hash (the entry was edited)")]
    Content { seq: i64 },
}

/// Checks a whole log, given in sequence order.
pub fn verify(rows: &[Stored]) -> Result<Head, ChainError> {
    let mut prev = GENESIS.to_string();
    for (i, row) in rows.iter().enumerate() {
        let expected = i as i64 + 1;
        if row.seq != expected {
            return Err(ChainError::Gap { seq: row.seq, expected });
        }
        if row.prev_sha256 != prev {
            return Err(ChainError::Link { seq: row.seq });
        }
        if row.compute_hash() != row.sha256 {
            return Err(ChainError::Content { seq: row.seq });
        }
        prev = row.sha256.clone();
    }
    Ok(Head { count: rows.len() as u64, sha256: prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: i64) -> Vec<Stored> {
        let mut rows: Vec<Stored> = Vec::new();
        for i in 0..n {
            let entry = Entry {
                at_ms: 1000 + i,
                kind: Kind::BatchApplied,
                agent: Some("a".into()),
                detail: serde_json::json!({"first_seq": i, "rows": 3}),
            };
            let prev = rows.last().map(|r| (r.seq, r.sha256.as_str()));
            let row = Stored::chain(&entry, prev);
            rows.push(row);
        }
        rows
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_or_deletion_is_caught() {
        let rows = log(5);
        let head = verify(&rows).expect("intact");
        assert_eq!(head.count, 5);
        assert_eq!(head.sha256, rows[4].sha256);

        let mut edited = rows.clone();
        edited[2].detail = r#"{"first_seq":2,"rows":300}"#.into();
        assert_eq!(verify(&edited), Err(ChainError::Content { seq: 3 }));

        // Re-hashing the edited row breaks the next link.
        edited[2].sha256 = edited[2].compute_hash();
        assert_eq!(verify(&edited), Err(ChainError::Link { seq: 4 }));

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted), Err(ChainError::Gap { seq: 3, expected: 2 }));

        let mut renumbered = deleted;
        for (i, r) in renumbered.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
            r.sha256 = r.compute_hash();
        }
        assert_eq!(verify(&renumbered), Err(ChainError::Link { seq: 2 }));
        assert_eq!(verify(&[]), Ok(Head { count: 0, sha256: GENESIS.into() }));
    }
}
