//! Wire protocol v1 over MQTT: topics, the message envelope, and the hub's acknowledgement.
//!
//! Over HTTPS the agent's credential, the body's digest and its content encoding travel in
//! headers. MQTT 3.1.1 has no headers, so every agent message is an [`Envelope`]:
//!
//! ```text
//! "KHO1"  u32 big-endian N  N bytes of JSON EnvelopeHeader  body (the bytes HTTPS would POST)
//! ```
//!
//! `{"kind":"batch","token":"…","sha256":"<hex of body>","encoding":"zstd"}` precedes a batch body
//! (exactly the zstd body of the HTTPS protocol); `{"kind":"heartbeat","token":"…"}` precedes a
//! heartbeat's JSON. The header is small and bounded ([`MAX_HEADER_BYTES`]) and is parsed before
//! the body is touched, so a forged message costs the hub a JSON parse of at most 4 KiB.
//!
//! Topics (one tree per agent, so a broker ACL `pattern readwrite kho/v1/%u/#` confines each agent
//! to its own): agents publish to [`batches_topic`] and [`heartbeat_topic`] and subscribe to
//! [`ack_topic`], where the hub publishes one [`AckMessage`] per batch it processed, correlated by
//! the batch body's sha256 (a resent batch has the same digest, so an ack of any copy counts).
//! The topic is only routing: the hub authenticates the envelope's token and requires it to belong
//! to the agent named in the topic *and* in the batch.

use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorReply, PROTOCOL_VERSION};

/// First bytes of every envelope (format version 1).
pub const ENVELOPE_MAGIC: &[u8; 4] = b"KHO1";
/// Largest envelope header: a token, a digest and a few names fit in far less.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Root of every Kho topic.
pub const TOPIC_ROOT: &str = "kho/v1";

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Batch,
    Heartbeat,
}

/// What HTTPS carries in headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeHeader {
    pub kind: Kind,
    /// The agent's bearer token (its proof of identity).
    pub token: String,
    /// Lowercase hex sha256 of the body as sent; required for batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Content encoding of the body; `zstd` for batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Enrolled agents: the batch signature (hex; see [`crate::signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A decoded envelope: the header and a borrowed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub header: EnvelopeHeader,
    pub body: &'a [u8],
}

/// Why an envelope cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a Kho v1 MQTT envelope (missing KHO1 prefix)")]
    Magic,
    #[error("envelope truncated: needs {needed} bytes, has {have}")]
    Truncated { needed: usize, have: usize },
    #[error("envelope header of {0} bytes exceeds the limit of {MAX_HEADER_BYTES}")]
    HeaderTooLarge(usize),
    #[error("envelope header is not valid: {0}")]
    Header(String),
}

/// Builds an envelope: magic, header length, header JSON, body.
pub fn encode_envelope(header: &EnvelopeHeader, body: &[u8]) -> Vec<u8> {
    // Serialising a struct of strings cannot fail.
    let json = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + json.len() + body.len());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    out
}

/// Splits an envelope into its header and body, refusing anything malformed or oversized.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if bytes.len() < 8 {
        if !ENVELOPE_MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(EnvelopeError::Magic);
        }
        return Err(EnvelopeError::Truncated { needed: 8, have: bytes.len() });
    }
    if &bytes[..4] != ENVELOPE_MAGIC {
        return Err(EnvelopeError::Magic);
    }
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(EnvelopeError::HeaderTooLarge(len));
    }
    let end = 8 + len;
    if bytes.len() < end {
        return Err(EnvelopeError::Truncated { needed: end, have: bytes.len() });
    }
    let header: EnvelopeHeader =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| EnvelopeError::Header(e.to_string()))?;
    Ok(Envelope { header, body: &bytes[end..] })
}

/// Where an agent publishes its batches.
pub fn batches_topic(agent: &str) -> String {
    format!("{TOPIC_ROOT}/{agent}/batches")
}

/// Where an agent publishes its heartbeats.
pub fn heartbeat_topic(agent: &str) -> String {
    format!("{TOPIC_ROOT}/{agent}/heartbeat")
}

/// Where the hub publishes an agent's acknowledgements.
pub fn ack_topic(agent: &str) -> String {
    format!("{TOPIC_ROOT}/{agent}/ack")
}

/// The hub's shared-subscription filters for a group: batches and heartbeats of every agent.
/// An empty group means plain subscriptions (a single hub, or a broker without `$share`).
pub fn hub_filters(group: &str) -> [String; 2] {
    let share = if group.is_empty() { String::new() } else { format!("$share/{group}/") };
    [format!("{share}{TOPIC_ROOT}/+/batches"), format!("{share}{TOPIC_ROOT}/+/heartbeat")]
}

/// The agent id and message kind of an incoming topic, if it is an agent's batches or heartbeat
/// topic. The id is whatever one level the topic holds; it is routing, not identity.
pub fn parse_agent_topic(topic: &str) -> Option<(&str, Kind)> {
    let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
    let (agent, leaf) = rest.split_once('/')?;
    if agent.is_empty() || agent.contains(['+', '#']) {
        return None;
    }
    match leaf {
        "batches" => Some((agent, Kind::Batch)),
        "heartbeat" => Some((agent, Kind::Heartbeat)),
        _ => None,
    }
}

/// The hub's answer to one batch, published on [`ack_topic`]: either `applied_through` or
/// `error` (which for a sequence gap holds `expected_seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessage {
    pub v: u32,
    /// The sha256 of the batch body this answers (the correlation id).
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_through: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
    /// As in [`crate::protocol::Ack`]: rows held in quarantine, rows released (optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<crate::protocol::QuarantinedRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<crate::protocol::RowRef>,
}

impl AckMessage {
    pub fn applied(sha256: &str, ack: crate::protocol::Ack) -> AckMessage {
        AckMessage {
            v: PROTOCOL_VERSION,
            sha256: sha256.to_string(),
            applied_through: Some(ack.applied_through),
            error: None,
            quarantined: ack.quarantined,
            released: ack.released,
        }
    }

    pub fn refused(sha256: &str, error: ErrorReply) -> AckMessage {
        AckMessage {
            v: PROTOCOL_VERSION,
            sha256: sha256.to_string(),
            applied_through: None,
            error: Some(error),
            quarantined: Vec::new(),
            released: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn batch_header() -> EnvelopeHeader {
        EnvelopeHeader {
            kind: Kind::Batch,
            token: "tok-a".into(),
            sha256: Some("ab".repeat(32)),
            encoding: Some("zstd".into()),
            signature: None,
        }
    }

    #[test]
    fn envelope_round_trips() {
        let body = b"\x28\xb5\x2f\xfd binary zstd body \x00\xff";
        let bytes = encode_envelope(&batch_header(), body);
        assert_eq!(&bytes[..4], ENVELOPE_MAGIC);
        let env = decode_envelope(&bytes).expect("decodes");
        assert_eq!(env.header, batch_header());
        assert_eq!(env.body, body);

        let hb =
            EnvelopeHeader { kind: Kind::Heartbeat, token: "t".into(), sha256: None, encoding: None, signature: None };
        let bytes = encode_envelope(&hb, b"{}");
        let env = decode_envelope(&bytes).expect("decodes");
        assert_eq!(env.header, hb);
        assert_eq!(env.body, b"{}");
        // An empty body is a valid envelope; the ingest path refuses it as a batch.
        assert!(decode_envelope(&encode_envelope(&hb, b"")).expect("decodes").body.is_empty());
    }

    #[test]
    fn bad_envelopes_are_refused_with_a_reason() {
        assert_eq!(decode_envelope(b""), Err(EnvelopeError::Truncated { needed: 8, have: 0 }));
        assert_eq!(decode_envelope(b"KHO1\x00"), Err(EnvelopeError::Truncated { needed: 8, have: 5 }));
        assert_eq!(decode_envelope(b"{\"v\":1}"), Err(EnvelopeError::Magic));
        assert_eq!(decode_envelope(b"KHO2\x00\x00\x00\x02{}"), Err(EnvelopeError::Magic));
        let huge = [&ENVELOPE_MAGIC[..], &(1u32 << 20).to_be_bytes()[..]].concat();
        assert_eq!(decode_envelope(&huge), Err(EnvelopeError::HeaderTooLarge(1 << 20)));
        let short = [&ENVELOPE_MAGIC[..], &10u32.to_be_bytes()[..], b"{}"].concat();
        assert_eq!(decode_envelope(&short), Err(EnvelopeError::Truncated { needed: 18, have: 10 }));
        let not_json = [&ENVELOPE_MAGIC[..], &3u32.to_be_bytes()[..], b"abc"].concat();
        assert!(matches!(decode_envelope(&not_json), Err(EnvelopeError::Header(_))));
        let unknown = br#"{"kind":"batch","token":"t","extra":1}"#;
        let bytes = [&ENVELOPE_MAGIC[..], &(unknown.len() as u32).to_be_bytes()[..], unknown].concat();
        assert!(matches!(decode_envelope(&bytes), Err(EnvelopeError::Header(_))));
        let no_token = br#"{"kind":"batch"}"#;
        let bytes = [&ENVELOPE_MAGIC[..], &(no_token.len() as u32).to_be_bytes()[..], no_token].concat();
        assert!(matches!(decode_envelope(&bytes), Err(EnvelopeError::Header(_))));
    }

    #[test]
    fn topics_name_the_agent_and_kind() {
        assert_eq!(batches_topic("so-y-te-01"), "kho/v1/so-y-te-01/batches");
        assert_eq!(heartbeat_topic("a"), "kho/v1/a/heartbeat");
        assert_eq!(ack_topic("a"), "kho/v1/a/ack");
        assert_eq!(hub_filters("g")[0], "$share/g/kho/v1/+/batches");
        assert_eq!(hub_filters("")[1], "kho/v1/+/heartbeat", "no group: a plain subscription");
        assert_eq!(parse_agent_topic("kho/v1/so-y-te-01/batches"), Some(("so-y-te-01", Kind::Batch)));
        assert_eq!(parse_agent_topic("kho/v1/a/heartbeat"), Some(("a", Kind::Heartbeat)));
        for bad in ["kho/v1/a/ack", "kho/v1//batches", "kho/v2/a/batches", "kho/v1/a", "kho/v1/a/batches/x", "x"] {
            assert_eq!(parse_agent_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn ack_messages_round_trip() {
        let ok = AckMessage::applied("d1", crate::protocol::Ack::applied(42));
        let text = serde_json::to_string(&ok).expect("json");
        assert_eq!(text, r#"{"v":1,"sha256":"d1","applied_through":42}"#);
        assert_eq!(serde_json::from_str::<AckMessage>(&text).expect("parse"), ok);
        let gap = AckMessage::refused(
            "d2",
            ErrorReply { code: ErrorCode::SequenceGap, message: "gap".into(), expected_seq: Some(7) },
        );
        let back: AckMessage = serde_json::from_str(&serde_json::to_string(&gap).expect("json")).expect("parse");
        assert_eq!(back, gap);
    }
}
