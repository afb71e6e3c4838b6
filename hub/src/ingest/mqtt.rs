//! The MQTT transport for ingest: batches and heartbeats from a broker, answered on each agent's
//! ack topic.
//!
//! The hub joins the shared subscriptions `$share/<group>/kho/v1/+/batches` and `…/+/heartbeat`
//! (several hub instances in one group share the load). Each message is an envelope
//! ([`kho_shared::mqtt`]) carrying what HTTPS carries in headers. Authentication never trusts the
//! topic: the envelope's token must belong to a configured or enrolled (unrevoked) agent, that agent must be the one the
//! topic names, and [`Ingest::batch`] then requires the batch itself to name the same agent —
//! followed by the same digest, decoding, permission and ledger checks as HTTPS. The verdict
//! (applied through `n`, or the refusal with `expected_seq` for a gap) is published QoS 1 to
//! `kho/v1/<agent>/ack`, correlated by the body's sha256. Messages that cannot be correlated (no
//! readable envelope) are logged and counted, and get no answer.
//!
//! Backpressure: acks to the broker are manual and sent only after the verdict is published, and
//! at most `max_in_flight` messages are processed at once. Messages read while all permits are
//! taken wait in the hub, up to [`MAX_WAITING`]; only then does the event loop stop reading, so
//! further messages wait at the broker (whose own in-flight window stops sending to a client that
//! does not acknowledge). The event loop keeps being polled while handlers run: it is what sends
//! the verdicts and acks they queue and answers the broker's keep-alive. (It used to stop at the
//! first message without a permit; a burst the client had already read — e.g. the load of a killed
//! instance moving to this one — then filled the request channel with verdicts nobody sent, the
//! handlers waited for room forever, and the broker dropped the hub for a missed keep-alive: found
//! by the issue-11 kill test once its agents sent heartbeats.) A message lost with a hub crash is
//! simply not answered; the agent re-sends it after its ack timeout and the ledger makes that
//! harmless.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use kho_agent::forward::mqtt::{BrokerAddr, tls};
use kho_shared::backoff::Backoff;
use kho_shared::mqtt::{self, AckMessage, Kind};
use kho_shared::protocol::{BATCH_CONTENT_ENCODING, ErrorCode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Ingest, MAX_HEARTBEAT_BYTES};
use crate::config::MqttSection;
use crate::error::ApiError;

/// Largest packet the hub publishes (an ack message).
const MAX_OUTGOING: usize = 64 * 1024;
/// Envelope header room on top of the body limit.
const ENVELOPE_ROOM: usize = mqtt::MAX_HEADER_BYTES + 8;
/// Messages read from the broker that may wait for a permit before the event loop stops reading.
pub const MAX_WAITING: usize = 64;
/// How long shutdown keeps the connection open so in-flight verdicts reach the broker.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Why the MQTT ingest could not start.
#[derive(Debug, thiserror::Error)]
#[error("mqtt: {0}")]
pub struct MqttSetupError(String);

/// A configured, not yet connected MQTT ingest.
pub struct MqttIngest {
    options: MqttOptions,
    filters: [String; 2],
    max_in_flight: usize,
}

impl MqttIngest {
    /// Builds the TLS client options from a validated section.
    pub fn new(config: &MqttSection, max_body_bytes: usize) -> Result<MqttIngest, MqttSetupError> {
        let addr = BrokerAddr::parse(&config.url).map_err(MqttSetupError)?;
        let ca = config.ca_cert.as_deref().ok_or_else(|| MqttSetupError("mqtt.ca_cert is required".into()))?;
        let client = config.client_cert.as_deref().zip(config.client_key.as_deref());
        let tls = tls::client_config(ca, client, ("mqtt.ca_cert", "mqtt.client_cert", "mqtt.client_key"))
            .map_err(MqttSetupError)?;
        let mut options = MqttOptions::new(config.client_id.clone(), addr.host, addr.port);
        // Each message queues at most two requests (its verdict and its PUBACK). The event loop
        // stops reading once MAX_WAITING messages wait, and may then not drain the channel until a
        // handler finishes, so the channel must hold the requests of every message in the hub:
        // otherwise a handler could wait for room the loop never makes.
        let queue = (config.max_in_flight + MAX_WAITING) * 2 + 16;
        options
            .set_transport(Transport::Tls(TlsConfiguration::Rustls(tls)))
            .set_keep_alive(config.keep_alive)
            .set_clean_session(true)
            .set_manual_acks(true)
            .set_max_packet_size(max_body_bytes.saturating_add(ENVELOPE_ROOM), MAX_OUTGOING)
            .set_request_channel_capacity(queue);
        Ok(MqttIngest { options, filters: mqtt::hub_filters(&config.share_group), max_in_flight: config.max_in_flight })
    }

    /// Consumes messages until `cancel`; then lets in-flight ones finish (within [`DRAIN_GRACE`]).
    pub async fn run(self, ingest: Arc<Ingest>, cancel: CancellationToken) {
        let queue = self.options.request_channel_capacity();
        let (client, mut eventloop) = AsyncClient::new(self.options, queue);
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let handlers = TaskTracker::new();
        let backoff = Backoff::default();
        let mut failures: u32 = 0;
        let mut waiting: VecDeque<Publish> = VecDeque::new();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                // The oldest waiting message takes the next free permit.
                permit = Arc::clone(&permits).acquire_owned(), if !waiting.is_empty() => {
                    let (Ok(permit), Some(publish)) = (permit, waiting.pop_front()) else { break };
                    spawn_handler(&handlers, &ingest, &client, publish, permit);
                    continue;
                }
                e = eventloop.poll(), if waiting.len() < MAX_WAITING => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(filters = ?self.filters, "connected to the MQTT broker; subscribing");
                    let subs = self.filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.try_subscribe_many(subs) {
                        tracing::warn!(error = %e, "cannot queue the subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    failures = 0;
                    if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                        tracing::error!("the broker refused a subscription (check its ACL for the hub's identity)");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    ingest.metrics.mqtt_message();
                    match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) if waiting.is_empty() => spawn_handler(&handlers, &ingest, &client, publish, permit),
                        _ => waiting.push_back(publish),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    ingest.metrics.mqtt_connection_failed();
                    // The session is clean: those messages' acks would name packets of the old
                    // connection. Their agents re-send them after their ack timeout.
                    if !waiting.is_empty() {
                        tracing::info!(
                            messages = waiting.len(),
                            "dropping unprocessed MQTT messages of the lost connection"
                        );
                        waiting.clear();
                    }
                    let delay = backoff.delay(failures, fastrand::f64());
                    if failures >= 3 {
                        tracing::warn!(error = %e, failures, retry_in = ?delay, "MQTT connection failed");
                    } else {
                        tracing::info!(error = %e, retry_in = ?delay, "MQTT connection lost; reconnecting");
                    }
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // Keep the connection serviced while in-flight messages publish their verdicts.
        handlers.close();
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            loop {
                tokio::select! {
                    _ = handlers.wait() => return,
                    e = eventloop.poll() => if e.is_err() { tokio::time::sleep(Duration::from_millis(100)).await },
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("stopping MQTT ingest with messages in flight; their agents will re-send them");
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
        tracing::info!("MQTT ingest stopped");
    }
}

/// Processes `publish` in a task of its own, holding `permit` until it is answered.
fn spawn_handler(
    handlers: &TaskTracker,
    ingest: &Arc<Ingest>,
    client: &AsyncClient,
    publish: Publish,
    permit: OwnedSemaphorePermit,
) {
    let (ingest, client) = (Arc::clone(ingest), client.clone());
    let span = tracing::info_span!("mqtt_message", topic = %publish.topic, agent = tracing::field::Empty);
    handlers.spawn(
        async move {
            handle(&ingest, &client, publish).await;
            drop(permit);
        }
        .instrument(span),
    );
}

/// Processes one message, publishes the verdict when it can be correlated, then acknowledges the
/// message to the broker.
async fn handle(ingest: &Ingest, client: &AsyncClient, publish: Publish) {
    let reply = process(ingest, &publish).await;
    if let Some((agent, ack)) = reply {
        match serde_json::to_vec(&ack) {
            Ok(payload) => {
                if let Err(e) = client.publish(mqtt::ack_topic(&agent), QoS::AtLeastOnce, false, payload).await {
                    tracing::warn!(error = %e, "cannot queue the verdict; the agent will re-send");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a verdict"),
        }
    }
    if let Err(e) = client.ack(&publish).await {
        tracing::debug!(error = %e, "cannot queue the PUBACK");
    }
}

/// Checks and applies one message. Returns the topic's agent and the verdict to publish, when
/// the message is a batch whose digest is known.
async fn process(ingest: &Ingest, publish: &Publish) -> Option<(String, AckMessage)> {
    let refuse = |e: ApiError| {
        ingest.metrics.refused(e.code());
        e.log()
    };
    let Some((topic_agent, kind)) = mqtt::parse_agent_topic(&publish.topic) else {
        refuse(ApiError::new(ErrorCode::Malformed, "message on a topic that is not an agent's batches or heartbeat"));
        return None;
    };
    let envelope = match mqtt::decode_envelope(&publish.payload) {
        Ok(e) => e,
        Err(e) => {
            refuse(ApiError::new(ErrorCode::Malformed, e.to_string()));
            return None;
        }
    };
    let header = envelope.header;
    let body = publish.payload.slice(publish.payload.len() - envelope.body.len()..);
    ingest.metrics.bytes_received(publish.payload.len());
    let checked = authenticate(ingest, topic_agent, kind, &header).await.and_then(|agent| {
        ingest.admit(&agent)?;
        Ok(agent)
    });
    if let Ok(agent) = &checked {
        ingest.transports.note(&agent.id, "mqtt");
    }
    match kind {
        Kind::Heartbeat => {
            let result = match checked {
                Ok(agent) if body.len() > MAX_HEARTBEAT_BYTES => {
                    Err(ApiError::new(ErrorCode::TooLarge, format!("heartbeat from {} too large", agent.id)))
                }
                Ok(agent) => ingest.heartbeat(&agent, &body, "mqtt").await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                ingest.gate.audit_refusal(Some(topic_agent), "mqtt", &e).await;
                refuse(e);
            }
            None
        }
        Kind::Batch => {
            let digest = header.sha256.clone().unwrap_or_default();
            let result = match checked {
                Ok(agent) => {
                    tracing::Span::current().record("agent", agent.id.as_str());
                    if body.len() > ingest.max_body_bytes {
                        Err(ApiError::new(
                            ErrorCode::TooLarge,
                            format!("batch body exceeds the limit of {} bytes", ingest.max_body_bytes),
                        ))
                    } else {
                        let signature = header.signature.as_deref();
                        ingest.batch(&agent, Bytes::clone(&body), header.sha256.as_deref(), signature).await
                    }
                }
                Err(e) => Err(e),
            };
            let ack = match result {
                Ok(ack) => AckMessage::applied(&digest, ack),
                Err(e) => {
                    ingest.gate.audit_refusal(Some(topic_agent), "mqtt", &e).await;
                    AckMessage::refused(&digest, refuse(e).reply)
                }
            };
            Some((topic_agent.to_string(), ack))
        }
    }
}

/// The agent that holds the envelope's token, if it is the agent the topic names and the
/// envelope is what the topic says it is.
async fn authenticate(
    ingest: &Ingest,
    topic_agent: &str,
    kind: Kind,
    header: &mqtt::EnvelopeHeader,
) -> Result<crate::auth::AgentIdentity, ApiError> {
    let agent = ingest.gate.authenticate(&header.token).await.map_err(|e| match e.code() {
        ErrorCode::Unauthorized => {
            ApiError::new(ErrorCode::Unauthorized, format!("{} on {topic_agent}'s topic", e.reply.message))
        }
        _ => e,
    })?;
    if agent.id != topic_agent {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the token belongs to {:?} but the topic names {topic_agent:?}", agent.id),
        ));
    }
    if header.kind != kind {
        return Err(ApiError::new(ErrorCode::Malformed, format!("{:?} envelope on a {kind:?} topic", header.kind)));
    }
    if kind == Kind::Batch {
        let encoding = header.encoding.as_deref().unwrap_or("");
        if !encoding.eq_ignore_ascii_case(BATCH_CONTENT_ENCODING) {
            return Err(ApiError::new(
                ErrorCode::Malformed,
                format!("encoding must be {BATCH_CONTENT_ENCODING}, got {encoding:?}"),
            ));
        }
    }
    Ok(agent)
}
