//! `[limits]`: what one request, one batch and one agent may cost the hub (see the security
//! model in `docs/ARCHITECTURE.md`).

use std::time::Duration;

use serde::Deserialize;

use super::byte_size;

/// Agents send batches of a few MB; 16 MiB leaves room for wide rows without letting one request
/// pin much memory.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 << 20;
/// JSON rows compress about 8×; 128 MiB accepts any honest 16 MiB body and stops zip bombs.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 128 << 20;
/// Long enough for a slow provincial link to upload 16 MiB and for the applier to commit it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A province has a few hundred agents; more concurrent requests than that is a retry storm.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
/// Five times the agent's default batch (20,000 changes): room for a configured larger batch,
/// while one request can never make the applier hold millions of rows in one transaction.
pub const DEFAULT_MAX_BATCH_CHANGES: usize = 100_000;
/// An agent sends one batch at a time (the next only after the ack) plus a heartbeat every few
/// seconds; 50 requests per second per agent is above an honest catch-up of small batches and
/// stops one agent (or a stolen token) from crowding out the province.
pub const DEFAULT_AGENT_REQUESTS_PER_SECOND: u32 = 50;
/// Short bursts above the rate: a catch-up after an outage sends batches back to back.
pub const DEFAULT_AGENT_BURST: u32 = 100;
/// A province has a few hundred agents, each holding one keep-alive connection; 512 leaves room
/// under the usual 1024 open files (the warehouse, logs and the MQTT link need descriptors too).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// A client must send its request line and headers this fast (slowloris); the body is bounded by
/// `request_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default = "default_max_body", deserialize_with = "byte_size")]
    pub max_body_bytes: u64,
    #[serde(default = "default_max_decoded", deserialize_with = "byte_size")]
    pub max_decoded_bytes: u64,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Most changes one batch may carry (413 `too_large` beyond).
    #[serde(default = "default_max_batch_changes")]
    pub max_batch_changes: usize,
    /// Sustained requests per second one agent may make (429 `rate_limited` beyond).
    #[serde(default = "default_agent_rate")]
    pub agent_requests_per_second: u32,
    /// Requests one agent may make at once above the sustained rate.
    #[serde(default = "default_agent_burst")]
    pub agent_burst: u32,
    /// How long a client may take to send its request headers before the connection is closed.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open client connections at once; one more is closed at accept, before any TLS work.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_batch_changes: DEFAULT_MAX_BATCH_CHANGES,
            agent_requests_per_second: DEFAULT_AGENT_REQUESTS_PER_SECOND,
            agent_burst: DEFAULT_AGENT_BURST,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl LimitsSection {
    /// Every problem of this section, each with its field name.
    pub(super) fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        let l = self;
        if l.max_body_bytes == 0 {
            bad("limits.max_body_bytes", "must be greater than 0".into());
        }
        if l.max_decoded_bytes < l.max_body_bytes {
            bad("limits.max_decoded_bytes", "must be at least limits.max_body_bytes".into());
        }
        if usize::try_from(l.max_decoded_bytes).is_err() {
            bad("limits.max_decoded_bytes", "too large for this machine".into());
        }
        if l.request_timeout.is_zero() {
            bad("limits.request_timeout", "must be greater than 0".into());
        }
        if l.max_concurrent_requests == 0 {
            bad("limits.max_concurrent_requests", "must be at least 1".into());
        }
        if l.max_batch_changes == 0 {
            bad("limits.max_batch_changes", "must be at least 1".into());
        }
        if l.agent_requests_per_second == 0 {
            bad("limits.agent_requests_per_second", "must be at least 1".into());
        }
        if l.agent_burst == 0 {
            bad("limits.agent_burst", "must be at least 1".into());
        }
        if l.header_read_timeout.is_zero() {
            bad("limits.header_read_timeout", "must be greater than 0".into());
        }
        if l.max_connections == 0 {
            bad("limits.max_connections", "must be at least 1".into());
        }
    }
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_decoded() -> u64 {
    DEFAULT_MAX_DECODED_BYTES
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_max_concurrent() -> usize {
    DEFAULT_MAX_CONCURRENT_REQUESTS
}
fn default_max_batch_changes() -> usize {
    DEFAULT_MAX_BATCH_CHANGES
}
fn default_agent_rate() -> u32 {
    DEFAULT_AGENT_REQUESTS_PER_SECOND
}
fn default_agent_burst() -> u32 {
    DEFAULT_AGENT_BURST
}
fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
