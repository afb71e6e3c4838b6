//! The optional `[mqtt]` section: ingest from an MQTT broker besides HTTPS.
//!
//! ```toml
//! [mqtt]
//! url = "mqtts://broker.vnpt.vn:8883"
//! ca_cert = "mqtt/ca.pem"          # CA of the broker's certificate (required: TLS is always on)
//! client_cert = "mqtt/hub.pem"     # the hub's identity at the broker (optional)
//! client_key = "mqtt/hub.key"
//! client_id = "kho-hub-1"          # unique per hub instance (default: kho-hub-<host name>)
//! share_group = "kho-hub"          # $share/<group>/kho/v1/+/batches: instances share the load
//!                                  # ("" = plain subscription: one hub instance only)
//! max_in_flight = 8                # batches being checked/applied at once; more wait at the broker
//! keep_alive = "30s"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Batches decoded and applied at once: the applier is one thread, so a few keep it busy while
/// the next ones decode; more would only hold memory (up to one body each).
pub const DEFAULT_MQTT_MAX_IN_FLIGHT: usize = 8;
/// Same keep-alive as the agents'.
pub const DEFAULT_MQTT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The shared-subscription group every hub instance joins by default.
pub const DEFAULT_SHARE_GROUP: &str = "kho-hub";
/// Client id when none is configured and the host name cannot be read. The default is
/// `kho-hub-<host name>`, so instances on different hosts never take each other's session (the
/// broker drops the older connection of a repeated client id); two instances on one host must
/// each set their own.
pub const DEFAULT_CLIENT_ID: &str = "kho-hub";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    pub url: String,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default = "default_share_group")]
    pub share_group: String,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}

fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    client_id_for_host(host.trim())
}

/// `kho-hub-<host>`, keeping the characters brokers accept everywhere, at most 64 characters.
fn client_id_for_host(host: &str) -> String {
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
    if host.is_empty() {
        return DEFAULT_CLIENT_ID.to_string();
    }
    let mut id = format!("{DEFAULT_CLIENT_ID}-{host}");
    id.truncate(64);
    id
}
fn default_share_group() -> String {
    DEFAULT_SHARE_GROUP.to_string()
}
fn default_max_in_flight() -> usize {
    DEFAULT_MQTT_MAX_IN_FLIGHT
}
fn default_keep_alive() -> Duration {
    DEFAULT_MQTT_KEEP_ALIVE
}

impl MqttSection {
    pub(super) fn resolve_paths(&mut self, base: &std::path::Path) {
        for p in [&mut self.ca_cert, &mut self.client_cert, &mut self.client_key].into_iter().flatten() {
            *p = base.join(&*p);
        }
    }

    pub(super) fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if let Err(why) = kho_agent::forward::mqtt::BrokerAddr::parse(&self.url) {
            bad("mqtt.url", why);
        }
        match &self.ca_cert {
            None => bad("mqtt.ca_cert", "required: the CA that signed the broker's certificate".into()),
            Some(p) if !p.is_file() => bad("mqtt.ca_cert", format!("{} does not exist or is not a file", p.display())),
            Some(_) => {}
        }
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => {
                for (field, p) in [("mqtt.client_cert", c), ("mqtt.client_key", k)] {
                    if !p.is_file() {
                        bad(field, format!("{} does not exist or is not a file", p.display()));
                    }
                }
            }
            (None, None) => {}
            _ => bad("mqtt.client_cert", "give both client_cert and client_key, or neither".into()),
        }
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            bad("mqtt.client_id", "must be 1 to 64 characters".into());
        }
        if self.share_group.contains(['/', '+', '#', '$']) {
            bad("mqtt.share_group", format!("{:?} must not contain /, +, # or $", self.share_group));
        }
        if self.max_in_flight == 0 {
            bad("mqtt.max_in_flight", "must be at least 1".into());
        }
        if self.keep_alive < Duration::from_secs(5) {
            bad("mqtt.keep_alive", "must be at least 5s".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_client_id_names_the_host_so_instances_on_two_hosts_differ() {
        assert_eq!(client_id_for_host("hub-a.vnpt.vn"), "kho-hub-hub-a.vnpt.vn");
        assert_ne!(client_id_for_host("hub-a"), client_id_for_host("hub-b"));
        assert_eq!(client_id_for_host(""), DEFAULT_CLIENT_ID);
        assert_eq!(client_id_for_host("máy chủ/#+"), "kho-hub-mych");
        assert_eq!(client_id_for_host(&"x".repeat(100)).len(), 64);
        assert!(default_client_id().starts_with(DEFAULT_CLIENT_ID));
    }
}
