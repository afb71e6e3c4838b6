//! MQTT transport: batches and heartbeats published to the agent's topics on a broker over TLS,
//! answered by the hub's own acknowledgement on the agent's ack topic.
//!
//! A PUBACK only means the broker has the message, so it is never treated as delivery.
//! [`MqttTransport::send_batch`] publishes the batch (QoS 1, inside an [`envelope`]) and then
//! waits for the [`AckMessage`] whose `sha256` is the batch body's digest; only that answer turns
//! into a [`Delivery`], and only a `Delivery` lets the forwarder delete anything. With no answer
//! within `hub.ack_timeout` the send fails as transient and the forwarder re-sends the same batch
//! after its backoff; the hub deduplicates by sequence, so a copy that did arrive is harmless.
//! Awaiting the correlated ack keeps the forwarder's one-batch-in-flight design unchanged.
//!
//! A connection task owns rumqttc's event loop. It reconnects with capped exponential backoff,
//! subscribes to the ack topic after every connect (sessions are clean: nothing is assumed to
//! survive a broker restart), and reports "ready" only once that subscription is granted, so a
//! batch is never published while its ack could not be received. Acks travel to the sender over a
//! bounded channel ([`ACK_QUEUE`]); acks for earlier copies or batches are skipped by digest.
//!
//! [`envelope`]: kho_shared::mqtt

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use kho_shared::backoff::Backoff;
use kho_shared::codec::EncodedBody;
use kho_shared::mqtt::{self, AckMessage, EnvelopeHeader, Kind};
use kho_shared::protocol::{BATCH_CONTENT_ENCODING, ErrorCode, Heartbeat};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport as MqttTls};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use super::{Delivery, Transport, TransportError};
use crate::config::HubSection;

/// Port of `mqtts://` URLs that do not name one (IANA's secure-MQTT port).
pub const DEFAULT_MQTTS_PORT: u16 = 8883;
/// Acks waiting for the sender. One batch is in flight, so more than a few means stale copies.
const ACK_QUEUE: usize = 16;
/// rumqttc's request queue: one batch, its re-send, heartbeats and subscribes.
const REQUEST_QUEUE: usize = 16;
/// Largest MQTT packet either way: the hub's default body limit (16 MiB) plus the envelope.
const MAX_PACKET: usize = (16 << 20) + 8192;
/// Largest ack message accepted from the broker.
const MAX_INCOMING: usize = 64 * 1024;

/// A broker address from an `mqtts://host[:port]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

impl BrokerAddr {
    /// Parses `mqtts://host[:port]` (IPv6 hosts in brackets). Plain `mqtt://` is refused: TLS is
    /// always on.
    pub fn parse(url: &str) -> Result<BrokerAddr, String> {
        let rest = match url.split_once("://") {
            Some(("mqtts", rest)) => rest.trim_end_matches('/'),
            Some(("mqtt", _)) => return Err(format!("{url:?}: plain mqtt:// is refused; use mqtts:// (TLS)")),
            _ => return Err(format!("{url:?} is not an mqtts:// URL")),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(format!("{url:?}: expected mqtts://host[:port] with no path, query or user"));
        }
        let port = match port {
            None => DEFAULT_MQTTS_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        Ok(BrokerAddr { host: host.to_string(), port })
    }
}

/// Maps the hub's ack message to the forwarder's verdict (pure).
pub fn delivery(ack: &AckMessage) -> Result<Delivery, TransportError> {
    match (&ack.applied_through, &ack.error) {
        (Some(through), None) => Ok(Delivery::Applied {
            through: *through,
            quality: super::AckQuality { quarantined: ack.quarantined.clone(), released: ack.released.clone() },
        }),
        (None, Some(e)) => match (e.code, e.expected_seq) {
            (ErrorCode::SequenceGap, Some(expected)) => Ok(Delivery::Gap { expected }),
            (code, _) => Err(TransportError::Refused { code, message: e.message.clone() }),
        },
        _ => Err(TransportError::BadResponse {
            status: 0,
            message: "hub ack has neither applied_through nor error (or both)".into(),
        }),
    }
}

/// The hub through an MQTT broker.
pub struct MqttTransport {
    client: AsyncClient,
    batches_topic: String,
    heartbeat_topic: String,
    token: String,
    /// Signs each batch's digest (enrolled agents).
    signer: Option<kho_shared::signing::Signer>,
    ack_timeout: Duration,
    ready: watch::Receiver<bool>,
    acks: Mutex<mpsc::Receiver<AckMessage>>,
    /// Stops the connection task when the transport is dropped.
    _stop: DropGuard,
}

impl MqttTransport {
    /// Builds the TLS client and starts the connection task (which connects in the background).
    pub fn new(hub: &HubSection, agent: &str, token: &str) -> Result<MqttTransport, TransportError> {
        let (addr, tls) = MqttTransport::setup(hub)?;
        let mut options = MqttOptions::new(agent, addr.host.clone(), addr.port);
        options
            .set_transport(MqttTls::Tls(TlsConfiguration::Rustls(tls)))
            .set_keep_alive(hub.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING, MAX_PACKET)
            .set_request_channel_capacity(REQUEST_QUEUE);
        let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let (ready_tx, ready_rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let conn = Connection {
            client: client.clone(),
            ack_topic: mqtt::ack_topic(agent),
            acks: ack_tx,
            ready: ready_tx,
            backoff: Backoff::default(),
        };
        let span = tracing::info_span!("mqtt", broker = %format!("{}:{}", addr.host, addr.port));
        tokio::spawn(conn.run(eventloop, stop.clone()).instrument(span));
        Ok(MqttTransport {
            client,
            batches_topic: mqtt::batches_topic(agent),
            heartbeat_topic: mqtt::heartbeat_topic(agent),
            token: token.to_string(),
            signer: None,
            ack_timeout: hub.ack_timeout,
            ready: ready_rx,
            acks: Mutex::new(ack_rx),
            _stop: stop.drop_guard(),
        })
    }

    /// Signs every batch with `signer` (an enrolled agent's key).
    pub fn with_signer(mut self, signer: Option<kho_shared::signing::Signer>) -> MqttTransport {
        self.signer = signer;
        self
    }

    /// Checks the broker URL and reads the CA and client certificate (no connection is made):
    /// what `kho-agent check` verifies, and the first step of [`MqttTransport::new`].
    pub fn setup(hub: &HubSection) -> Result<(BrokerAddr, Arc<rustls::ClientConfig>), TransportError> {
        let addr = BrokerAddr::parse(&hub.url).map_err(TransportError::Setup)?;
        let ca = hub
            .ca_cert
            .as_deref()
            .ok_or_else(|| TransportError::Setup("hub.ca_cert is required with transport = \"mqtt\"".into()))?;
        // A broker-issued certificate comes with its own key; the hub-issued one (written by
        // `kho-agent enroll`) is for the agent's signing key.
        let key = hub.client_key.as_deref().or(hub.signing_key.as_deref());
        let client_auth = hub.client_cert.as_deref().zip(key);
        let tls = tls::client_config(ca, client_auth, ("hub.ca_cert", "hub.client_cert", "hub.client_key"))
            .map_err(TransportError::Setup)?;
        Ok((addr, tls))
    }

    /// Waits until connected and subscribed, at most until `deadline`.
    async fn until_ready(&self, deadline: Instant) -> Result<(), TransportError> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout_at(deadline, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(TransportError::Network("MQTT connection task stopped".into())),
            Err(_) => Err(TransportError::Network("not connected to the MQTT broker".into())),
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, deadline: Instant) -> Result<(), TransportError> {
        match tokio::time::timeout_at(deadline, self.client.publish(topic, QoS::AtLeastOnce, false, payload)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Network(format!("MQTT publish: {e}"))),
            Err(_) => Err(TransportError::Network("MQTT client queue stayed full".into())),
        }
    }
}

impl Transport for MqttTransport {
    async fn send_batch(&self, body: &EncodedBody) -> Result<Delivery, TransportError> {
        let deadline = Instant::now() + self.ack_timeout;
        self.until_ready(deadline).await?;
        let signature = match &self.signer {
            Some(signer) => Some(signer.sign(&body.digest_hex).map_err(|e| TransportError::Setup(e.to_string()))?),
            None => None,
        };
        let header = EnvelopeHeader {
            kind: Kind::Batch,
            token: self.token.clone(),
            sha256: Some(body.digest_hex.clone()),
            encoding: Some(BATCH_CONTENT_ENCODING.to_string()),
            signature,
        };
        // One sender at a time (the forwarder has one batch in flight); acks for other batches
        // and earlier copies wait here and are skipped by digest.
        let mut acks = self.acks.lock().await;
        self.publish(&self.batches_topic, mqtt::encode_envelope(&header, &body.body), deadline).await?;
        // Sessions are clean, so an ack cannot survive a lost connection: stop waiting then and
        // let the forwarder re-send as soon as the connection is back.
        let mut ready = self.ready.clone();
        loop {
            let received = tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, acks.recv()) => r,
                _ = ready.wait_for(|r| !*r) => {
                    return Err(TransportError::Network("MQTT connection lost before the hub's acknowledgement".into()));
                }
            };
            match received {
                Err(_) => {
                    return Err(TransportError::Network(format!(
                        "no acknowledgement from the hub within {}",
                        humantime::format_duration(self.ack_timeout)
                    )));
                }
                Ok(None) => return Err(TransportError::Network("MQTT connection task stopped".into())),
                Ok(Some(ack)) if ack.sha256 == body.digest_hex => return delivery(&ack),
                Ok(Some(stale)) => tracing::debug!(sha256 = %stale.sha256, "ack for another batch skipped"),
            }
        }
    }

    async fn send_heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), TransportError> {
        let deadline = Instant::now() + self.ack_timeout;
        self.until_ready(deadline).await?;
        let body = serde_json::to_vec(heartbeat).map_err(|e| TransportError::Setup(e.to_string()))?;
        let header = EnvelopeHeader {
            kind: Kind::Heartbeat,
            token: self.token.clone(),
            sha256: None,
            encoding: None,
            signature: None,
        };
        self.publish(&self.heartbeat_topic, mqtt::encode_envelope(&header, &body), deadline).await
    }
}

/// The connection task's state.
struct Connection {
    client: AsyncClient,
    ack_topic: String,
    acks: mpsc::Sender<AckMessage>,
    ready: watch::Sender<bool>,
    backoff: Backoff,
}

impl Connection {
    /// Drives the event loop until `stop`: reconnects with backoff, resubscribes, routes acks.
    async fn run(self, mut eventloop: EventLoop, stop: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("connected to the MQTT broker; subscribing to acks");
                    if let Err(e) = self.client.try_subscribe(self.ack_topic.as_str(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "cannot queue the ack subscription");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let granted = ack.return_codes.iter().all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if granted {
                        failures = 0;
                        self.ready.send_replace(true);
                    } else {
                        tracing::error!(topic = %self.ack_topic, "the broker refused the ack subscription (check its ACL); retrying");
                        let _ = self.client.try_subscribe(self.ack_topic.as_str(), QoS::AtLeastOnce);
                        tokio::time::sleep(self.backoff.delay(failures, fastrand::f64())).await;
                        failures = failures.saturating_add(1);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == self.ack_topic => {
                    match serde_json::from_slice::<AckMessage>(&p.payload) {
                        Ok(ack) => {
                            if self.acks.try_send(ack).is_err() {
                                tracing::debug!("ack queue full; a re-send will fetch the answer again");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable message on the ack topic ignored"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.ready.send_replace(false);
                    let delay = self.backoff.delay(failures, fastrand::f64());
                    if failures >= 3 {
                        tracing::warn!(error = %e, failures, retry_in = ?delay, "MQTT connection failed");
                    } else {
                        tracing::info!(error = %e, retry_in = ?delay, "MQTT connection lost; reconnecting");
                    }
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.ready.send_replace(false);
        let _ = self.client.try_disconnect();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kho_shared::protocol::ErrorReply;

    #[test]
    fn broker_urls() {
        let p = |u: &str| BrokerAddr::parse(u);
        assert_eq!(p("mqtts://broker.vnpt.vn"), Ok(BrokerAddr { host: "broker.vnpt.vn".into(), port: 8883 }));
        assert_eq!(p("mqtts://127.0.0.1:18883/"), Ok(BrokerAddr { host: "127.0.0.1".into(), port: 18883 }));
        assert_eq!(p("mqtts://[::1]:9"), Ok(BrokerAddr { host: "::1".into(), port: 9 }));
        for bad in ["mqtt://h:1883", "https://h", "mqtts://", "mqtts://h:0", "mqtts://h:x", "mqtts://h/path", "h:1"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p("mqtt://h").unwrap_err().contains("mqtts://"));
    }

    #[test]
    fn acks_map_to_deliveries() {
        assert_eq!(
            delivery(&AckMessage::applied("d", kho_shared::protocol::Ack::applied(9))).ok(),
            Some(Delivery::Applied { through: 9, quality: Default::default() })
        );
        let gap = ErrorReply { code: ErrorCode::SequenceGap, message: "gap".into(), expected_seq: Some(4) };
        assert_eq!(delivery(&AckMessage::refused("d", gap)).ok(), Some(Delivery::Gap { expected: 4 }));
        let denied = ErrorReply { code: ErrorCode::Forbidden, message: "no".into(), expected_seq: None };
        let err = delivery(&AckMessage::refused("d", denied)).unwrap_err();
        assert!(!err.is_transient());
        let busy = ErrorReply { code: ErrorCode::Unavailable, message: "later".into(), expected_seq: None };
        assert!(delivery(&AckMessage::refused("d", busy)).unwrap_err().is_transient());
        let empty = AckMessage {
            v: 1,
            sha256: "d".into(),
            applied_through: None,
            error: None,
            quarantined: vec![],
            released: vec![],
        };
        assert!(delivery(&empty).unwrap_err().is_transient());
    }

    #[test]
    fn quarantine_news_travels_with_the_ack() {
        use kho_shared::protocol::{Ack, QuarantinedRow, RowRef};
        let held = QuarantinedRow { dataset: "ho_so".into(), key: r#"{"id":3}"#.into(), reason: "pattern:ma".into() };
        let freed = RowRef { dataset: "ho_so".into(), key: r#"{"id":1}"#.into() };
        let ack = Ack { applied_through: 9, quarantined: vec![held.clone()], released: vec![freed.clone()] };
        let quality = crate::forward::AckQuality { quarantined: vec![held], released: vec![freed] };
        assert_eq!(delivery(&AckMessage::applied("d", ack)).ok(), Some(Delivery::Applied { through: 9, quality }));
    }
}
