//! Wire protocol v1: what an agent sends and what the hub answers.
//!
//! A [`Batch`] carries a contiguous run of one agent's changes, `first_seq..=last_seq`, one
//! [`Change`] per sequence number with no gaps, plus the schema of every dataset it touches.
//! Sequence numbers are per agent and never reused; the hub's ledger remembers the highest one it
//! applied, which is what makes re-sending harmless (architecture invariant 3).
//!
//! Over HTTPS a batch is `POST`ed to [`BATCHES_PATH`] as the zstd-compressed JSON encoding made by
//! [`crate::codec`], with the hex sha256 of the body in [`DIGEST_HEADER`] and the agent's
//! credential as a bearer token. The hub answers `200` with an [`Ack`] or an error status with an
//! [`ErrorReply`]. A batch that starts past the hub's next expected sequence is refused with
//! [`ErrorCode::SequenceGap`] and `expected_seq`, so the agent resends from there.
//! Over MQTT the same body travels in an envelope and the answer on the agent's ack topic; see
//! [`crate::mqtt`].
//!
//! Row values are JSON values whose meaning is fixed by the column's portable type
//! ([`crate::types`]). An upsert carries the full row (its key is read from the row's key
//! columns); a delete carries only the key.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ident::{self, IdentError};
use crate::types::ColumnType;

/// Version carried in every batch and heartbeat; the hub refuses versions it does not know.
pub const PROTOCOL_VERSION: u32 = 1;
/// Where agents `POST` batches.
pub const BATCHES_PATH: &str = "/v1/batches";
/// Where agents `POST` heartbeats.
pub const HEARTBEAT_PATH: &str = "/v1/heartbeat";
/// `GET`: who the hub takes the bearer token for, and what it may write ([`WhoAmI`]).
pub const WHOAMI_PATH: &str = "/v1/whoami";
/// Header holding the lowercase hex sha256 of the request body as sent (compressed).
pub const DIGEST_HEADER: &str = "x-kho-content-sha256";
/// Content type of an encoded batch body.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.kho.batch.v1+json";
/// Content encoding of an encoded batch body.
pub const BATCH_CONTENT_ENCODING: &str = "zstd";
/// `POST` [`EnrollRequest`] (no bearer token: the one-time enrollment token is the credential).
pub const ENROLL_PATH: &str = "/v1/enroll";
/// `POST` [`RotateKeyRequest`] (bearer token of the enrolled agent).
pub const ROTATE_KEY_PATH: &str = "/v1/rotate-key";

/// One agent's contiguous run of changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub v: u32,
    pub agent: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// When the agent assembled the batch, Unix milliseconds (agent clock; informational).
    pub created_at_ms: i64,
    pub schemas: Vec<DatasetSchema>,
    pub changes: Vec<Change>,
}

/// The shape of one dataset as the agent currently reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSchema {
    pub dataset: String,
    /// Primary-key column names, in key order.
    pub key: Vec<String>,
    pub columns: Vec<Column>,
}

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// What happened to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Upsert,
    Delete,
}

/// One captured change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub seq: u64,
    pub dataset: String,
    pub op: Op,
    /// Key columns → values; present on deletes (upserts carry the key inside `row`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Map<String, Value>>,
    /// Column → value; the full row on upserts, absent on deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<Map<String, Value>>,
}

impl Change {
    /// The map that holds this change's key columns: the row for upserts, the key for deletes.
    pub fn key_source(&self) -> Option<&Map<String, Value>> {
        match self.op {
            Op::Upsert => self.row.as_ref(),
            Op::Delete => self.key.as_ref(),
        }
    }
}

/// The hub's answer to an accepted batch: every change up to and including `applied_through` is
/// durably applied, and the agent may delete it from its outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub applied_through: u64,
    /// Rows of this batch the hub held in quarantine instead of loading them (a `reject`
    /// data-quality rule). Absent when none, so older agents and hubs understand each other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<QuarantinedRow>,
    /// Rows that left quarantine with this batch (they came in clean, or were deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<RowRef>,
}

impl Ack {
    pub fn applied(applied_through: u64) -> Ack {
        Ack { applied_through, quarantined: Vec::new(), released: Vec::new() }
    }
}

/// A row held back by the hub's data-quality rules, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedRow {
    pub dataset: String,
    /// The row's key as JSON text (`{"id":9}`).
    pub key: String,
    /// The broken rules with the offending values (`pattern:so_cccd="12"`).
    pub reason: String,
}

/// A row of a dataset, by key (JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRef {
    pub dataset: String,
    pub key: String,
}

/// The hub's answer to `GET /v1/whoami`: the agent the token belongs to, the datasets it may
/// write (hub config ∪ catalogue grants, sorted) and the hub's ledger position for it, so
/// `kho-agent check` can show a misconfiguration before any data moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub agent: String,
    pub datasets: Vec<String>,
    pub hub_version: String,
}

/// `POST /v1/enroll`: an agent presents its one-time enrollment token and the public half of the
/// key pair it generated (the private half never leaves the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub v: u32,
    /// The agent id the operator configured (must be the one the token was issued for).
    pub agent: String,
    pub token: String,
    /// Ed25519 public key, lowercase hex (32 bytes).
    pub public_key: String,
    /// Agent software version.
    pub version: String,
}

/// The hub's answer to a successful enrollment: the agent's identity and its access token (the
/// bearer credential from now on; the hub keeps only its sha256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollReply {
    pub agent: String,
    pub department: String,
    pub datasets: Vec<String>,
    pub access_token: String,
    /// A client certificate (PEM) for the agent's public key, signed by the hub's agent CA
    /// (CN = agent id), for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
}

/// `POST /v1/rotate-key`: an enrolled agent replaces its public key. Both signatures are over
/// [`crate::signing::rotation_message`]: the old key's proves the request comes from the agent,
/// the new key's proves it holds the new private key. Re-sending after a lost answer is accepted
/// (the hub already holds `new_public_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    pub v: u32,
    pub new_public_key: String,
    pub old_key_signature: String,
    pub new_key_signature: String,
}

/// Machine-readable reason for a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing or wrong credential, revoked agent, or an unusable enrollment token (HTTP 401).
    Unauthorized,
    /// The batch signature is missing or does not verify against the agent's public key (401).
    BadSignature,
    /// The agent may not write a dataset in the batch, or the batch names another agent (403).
    Forbidden,
    /// The body's sha256 does not match the digest header (400).
    DigestMismatch,
    /// The body could not be decompressed or parsed, or breaks a protocol rule (400).
    Malformed,
    /// The body, compressed or decompressed, exceeds the hub's limit (413).
    TooLarge,
    /// The protocol version is not supported (400).
    UnsupportedVersion,
    /// The batch starts past the next expected sequence; resend from `expected_seq` (409).
    SequenceGap,
    /// The batch conflicts with the warehouse's table for a dataset, e.g. a changed key (422).
    SchemaConflict,
    /// The agent sends faster than the hub's per-agent rate allows; retry later (429).
    RateLimited,
    /// The hub could not apply the batch right now; retry later (503).
    Unavailable,
    /// A hub bug or storage failure; retry later (500).
    Internal,
}

impl ErrorCode {
    /// Whether resending the same request later can succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited)
    }
}

/// Body of every refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    /// With [`ErrorCode::SequenceGap`]: the sequence the hub expects next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

/// An agent's periodic report of liveness and per-dataset capture state. Sent even when nothing
/// changed, so the hub can tell "agent down" from "no new data".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub v: u32,
    pub agent: String,
    /// Agent software version.
    pub version: String,
    pub sent_at_ms: i64,
    /// Changes captured but not yet acknowledged.
    pub outbox_depth: u64,
    /// Highest sequence the hub has acknowledged to this agent.
    pub acked_through: u64,
    pub datasets: Vec<DatasetReport>,
}

/// One dataset's capture state in a [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetReport {
    pub dataset: String,
    /// Last time a poll of the source completed successfully (even if it found nothing new).
    pub last_ok_poll_at_ms: Option<i64>,
    /// Every change of that poll has a sequence ≤ this; once the hub's ledger reaches it, the
    /// warehouse reflects the source as of `last_ok_poll_at_ms`.
    pub captured_through_seq: u64,
    /// Last poll error, if the last poll failed.
    pub last_error: Option<String>,
    /// Rows whose cursor column is NULL: cursor mode cannot sync them (reported, never hidden).
    #[serde(default)]
    pub null_cursor_rows: u64,
    /// Replication state of a `mode = "cdc"` dataset (absent for other modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<CdcReport>,
}

/// A CDC dataset's replication slot as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcReport {
    pub slot: String,
    /// Position stored in the agent's outbox (`X/Y`); none before the initial snapshot.
    pub lsn: Option<String>,
    /// WAL the slot holds back on the source server, in bytes.
    pub lag_bytes: Option<u64>,
    /// Age of the oldest source change received but not yet in the outbox, in seconds.
    pub lag_seconds: Option<f64>,
}

/// Why a decoded batch breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    #[error("batch has no changes")]
    Empty,
    #[error("batch claims sequences {first}..={last} but carries {count} changes")]
    SequenceSpan { first: u64, last: u64, count: usize },
    #[error("change #{index} has sequence {got}, expected {want} (sequences must be contiguous)")]
    SequenceOrder { index: usize, got: u64, want: u64 },
    #[error("dataset name: {0}")]
    DatasetName(IdentError),
    #[error("dataset {dataset}: column name: {source}")]
    ColumnName { dataset: String, source: IdentError },
    #[error("dataset {0}: schema given twice")]
    DuplicateSchema(String),
    #[error("dataset {dataset}: {problem}")]
    BadSchema { dataset: String, problem: String },
    #[error("change seq {seq}: dataset {dataset} has no schema in the batch")]
    MissingSchema { seq: u64, dataset: String },
    #[error("change seq {seq}: {problem}")]
    BadChange { seq: u64, problem: String },
}

impl Batch {
    /// Checks every structural rule of the protocol; a batch that passes can be applied without
    /// further shape checks. Does not check permissions or the ledger.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.v != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(self.v));
        }
        if self.changes.is_empty() {
            return Err(ProtocolError::Empty);
        }
        let span_ok = self.last_seq >= self.first_seq
            && (self.last_seq - self.first_seq) as u128 + 1 == self.changes.len() as u128;
        if !span_ok {
            return Err(ProtocolError::SequenceSpan {
                first: self.first_seq,
                last: self.last_seq,
                count: self.changes.len(),
            });
        }
        for schema in &self.schemas {
            schema.validate()?;
        }
        for (i, s) in self.schemas.iter().enumerate() {
            if self.schemas[..i].iter().any(|o| o.dataset == s.dataset) {
                return Err(ProtocolError::DuplicateSchema(s.dataset.clone()));
            }
        }
        for (index, change) in self.changes.iter().enumerate() {
            let want = self.first_seq + index as u64;
            if change.seq != want {
                return Err(ProtocolError::SequenceOrder { index, got: change.seq, want });
            }
            let schema = self
                .schema(&change.dataset)
                .ok_or_else(|| ProtocolError::MissingSchema { seq: change.seq, dataset: change.dataset.clone() })?;
            schema.check_change(change)?;
        }
        Ok(())
    }

    /// The schema the batch carries for `dataset`.
    pub fn schema(&self, dataset: &str) -> Option<&DatasetSchema> {
        self.schemas.iter().find(|s| s.dataset == dataset)
    }

    /// The distinct datasets the batch writes, in first-seen order.
    pub fn datasets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for c in &self.changes {
            if !out.contains(&c.dataset.as_str()) {
                out.push(&c.dataset);
            }
        }
        out
    }
}

impl DatasetSchema {
    /// Checks names, that the key is non-empty and made of declared columns, and no duplicates.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        ident::check_dataset_name(&self.dataset).map_err(ProtocolError::DatasetName)?;
        let bad = |problem: String| ProtocolError::BadSchema { dataset: self.dataset.clone(), problem };
        if self.columns.is_empty() {
            return Err(bad("no columns".into()));
        }
        for (i, c) in self.columns.iter().enumerate() {
            ident::check_column_name(&c.name)
                .map_err(|source| ProtocolError::ColumnName { dataset: self.dataset.clone(), source })?;
            if self.columns[..i].iter().any(|o| o.name.eq_ignore_ascii_case(&c.name)) {
                return Err(bad(format!("column {:?} declared twice", c.name)));
            }
        }
        if self.key.is_empty() {
            return Err(bad("no primary-key column".into()));
        }
        for k in &self.key {
            if !self.columns.iter().any(|c| &c.name == k) {
                return Err(bad(format!("key column {k:?} is not a declared column")));
            }
        }
        Ok(())
    }

    /// The declared type of `column`.
    pub fn column_type(&self, column: &str) -> Option<ColumnType> {
        self.columns.iter().find(|c| c.name == column).map(|c| c.ty)
    }

    fn check_change(&self, change: &Change) -> Result<(), ProtocolError> {
        let bad = |problem: String| ProtocolError::BadChange { seq: change.seq, problem };
        match change.op {
            Op::Upsert => {
                let row = change.row.as_ref().ok_or_else(|| bad("upsert without a row".into()))?;
                if let Some(col) = row.keys().find(|k| self.column_type(k).is_none()) {
                    return Err(bad(format!("row has column {col:?} not in the schema of {}", self.dataset)));
                }
            }
            Op::Delete => {
                if change.row.is_some() {
                    return Err(bad("delete carries a row".into()));
                }
                let key = change.key.as_ref().ok_or_else(|| bad("delete without a key".into()))?;
                if let Some(col) = key.keys().find(|k| !self.key.contains(k)) {
                    return Err(bad(format!("key has column {col:?} that is not a key column")));
                }
            }
        }
        let source = change.key_source().ok_or_else(|| bad("no key".into()))?;
        for k in &self.key {
            match source.get(k) {
                None | Some(Value::Null) => return Err(bad(format!("key column {k:?} is missing or null"))),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DatasetSchema {
        DatasetSchema {
            dataset: "ho_so".into(),
            key: vec!["id".into()],
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::Int },
                Column { name: "ten".into(), ty: ColumnType::Text },
            ],
        }
    }

    #[test]
    fn acks_without_quarantine_look_as_before() {
        assert_eq!(serde_json::to_string(&Ack::applied(7)).expect("json"), r#"{"applied_through":7}"#);
        let old: Ack = serde_json::from_str(r#"{"applied_through":7}"#).expect("an old ack");
        assert_eq!(old, Ack::applied(7));
        let new: Ack = serde_json::from_str(
            r#"{"applied_through":7,"quarantined":[{"dataset":"d","key":"{\"id\":1}","reason":"r"}]}"#,
        )
        .expect("a new ack");
        assert_eq!(new.quarantined[0].key, r#"{"id":1}"#);
    }

    fn upsert(seq: u64, id: i64) -> Change {
        let row = json!({"id": id, "ten": "Nguyễn Văn A"});
        Change { seq, dataset: "ho_so".into(), op: Op::Upsert, key: None, row: row.as_object().cloned() }
    }

    fn batch(changes: Vec<Change>) -> Batch {
        Batch {
            v: PROTOCOL_VERSION,
            agent: "a1".into(),
            first_seq: changes.first().map_or(1, |c| c.seq),
            last_seq: changes.last().map_or(0, |c| c.seq),
            created_at_ms: 0,
            schemas: vec![schema()],
            changes,
        }
    }

    #[test]
    fn valid_batch_passes() {
        let mut del = upsert(3, 1);
        del.op = Op::Delete;
        del.row = None;
        del.key = json!({"id": 1}).as_object().cloned();
        let b = batch(vec![upsert(1, 1), upsert(2, 2), del]);
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(b.datasets(), vec!["ho_so"]);
    }

    #[test]
    fn gaps_and_spans_are_refused() {
        let mut b = batch(vec![upsert(1, 1), upsert(3, 2)]);
        b.last_seq = 2;
        assert!(matches!(b.validate(), Err(ProtocolError::SequenceOrder { index: 1, got: 3, want: 2 })));
        let mut b = batch(vec![upsert(1, 1)]);
        b.last_seq = 5;
        assert!(matches!(b.validate(), Err(ProtocolError::SequenceSpan { .. })));
        let mut b = batch(vec![upsert(1, 1)]);
        b.first_seq = u64::MAX;
        b.last_seq = 0;
        assert!(matches!(b.validate(), Err(ProtocolError::SequenceSpan { .. })));
        assert_eq!(batch(vec![]).validate(), Err(ProtocolError::Empty));
    }

    #[test]
    fn bad_shapes_are_refused() {
        let mut b = batch(vec![upsert(1, 1)]);
        b.v = 2;
        assert_eq!(b.validate(), Err(ProtocolError::UnsupportedVersion(2)));

        let mut b = batch(vec![upsert(1, 1)]);
        b.changes[0].row.as_mut().map(|r| r.insert("khac".into(), json!(1)));
        assert!(matches!(b.validate(), Err(ProtocolError::BadChange { .. })));

        let mut b = batch(vec![upsert(1, 1)]);
        b.changes[0].row.as_mut().map(|r| r.insert("id".into(), Value::Null));
        assert!(matches!(b.validate(), Err(ProtocolError::BadChange { .. })));

        let mut b = batch(vec![upsert(1, 1)]);
        b.schemas[0].dataset = "x; drop table y".into();
        assert!(matches!(b.validate(), Err(ProtocolError::DatasetName(_))));

        let mut b = batch(vec![upsert(1, 1)]);
        b.changes[0].dataset = "khac".into();
        assert!(matches!(b.validate(), Err(ProtocolError::MissingSchema { .. })));

        let mut b = batch(vec![upsert(1, 1)]);
        b.schemas[0].key = vec!["nope".into()];
        assert!(matches!(b.validate(), Err(ProtocolError::BadSchema { .. })));

        let mut b = batch(vec![upsert(1, 1)]);
        b.schemas.push(schema());
        assert!(matches!(b.validate(), Err(ProtocolError::DuplicateSchema(_))));
    }
}
