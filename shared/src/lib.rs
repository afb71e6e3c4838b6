//! Kho's shared vocabulary: what crosses the wire between an agent and the hub, and the pure logic
//! both sides must agree on.
//!
//! This crate is **pure** (architecture invariant 6): no sockets, no files, no async runtime, no
//! clock. Anything time-dependent takes the current time as an argument. That keeps every rule in
//! here unit-testable and identical on both ends of the connection.
//!
//! - [`protocol`]: the v1 batch, change, schema, acknowledgement, error and heartbeat types.
//! - [`codec`]: batch body encoding (JSON → zstd), digest, and bounded decoding.
//! - [`mqtt`]: the MQTT topics, message envelope (what HTTPS carries in headers) and ack message.
//! - [`signing`]: Ed25519 batch signatures (what is signed, verification, the agent's signer).
//! - [`pseudonym`]: versioned pseudonymisation keys and HMAC-SHA256 tokens (personal data).
//! - [`hash`]: canonical row and key hashes used by snapshot diffing.
//! - [`types`]: the portable column type set and its mapping from SQL declared types.
//! - [`fields`]: configuration problems named by field, shared by both programs.
//! - [`ident`]: the rules for dataset and column names, which become warehouse identifiers.
//! - [`backoff`]: capped exponential backoff with jitter (the random draw is an argument).
//! - [`schedule`]: cadences, calendar periods in Asia/Ho_Chi_Minh, deadlines and grace.
//! - [`freshness`]: per-dataset freshness status, history of transitions, department scorecards
//!   and scenario readiness, all with the clock passed in.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod codec;
pub mod fields;
pub mod freshness;
pub mod hash;
pub mod ident;
pub mod mqtt;
pub mod protocol;
pub mod pseudonym;
pub mod schedule;
pub mod signing;
pub mod types;
