//! Mutual TLS over MQTT with the certificate the hub issues at enrollment (issue 7): Mosquitto
//! trusts the hub's agent CA (`cafile` = its own CA for the hub's connection + the agent CA),
//! requires a client certificate, takes its CN as the user name and applies a per-agent ACL
//! (`pattern readwrite kho/v1/%u/#`). The enrolled agent needs no broker-issued certificate; a
//! certificate from another CA is refused by the broker; an agent cannot publish on another
//! agent's topics. Real Mosquitto, hub and agent.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kho_tests::compare::ho_so_diff;
use kho_tests::mosquitto::{Broker, HUB_IDENTITY};
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::security::{add_agent, client, enroll, new_key_pem};
use kho_tests::source::SourceDb;
use rumqttc::{Event, Packet, QoS};

const A: &str = "so-y-te-mtls";
const B: &str = "so-tai-chinh-mtls";

/// Drives `conn` until `want` matches an incoming packet (panics after 20 s).
fn until(conn: &mut rumqttc::Connection, what: &str, mut want: impl FnMut(&Packet) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("no {what} in time"));
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(p))) if want(&p) => return,
            Ok(Err(e)) => panic!("connection failed while waiting for {what}: {e}"),
            _ => {}
        }
    }
}

/// Messages on the observed topics for `quiet` after the last one, as `(topic, payload)`.
fn drain(conn: &mut rumqttc::Connection, quiet: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let Ok(event) = conn.recv_timeout(quiet) {
        if let Ok(Event::Incoming(Packet::Publish(p))) = event {
            got.push((p.topic.clone(), String::from_utf8_lossy(&p.payload).to_string()));
        }
    }
    got
}

fn publish(identity: &str, broker: &Broker, cert: &Path, key: &Path, messages: &[(String, &str)]) {
    let (client, mut conn) = broker.client_with(identity, cert, key);
    until(&mut conn, &format!("CONNACK for {identity}"), |p| matches!(p, Packet::ConnAck(_)));
    for (topic, payload) in messages {
        client.publish(topic.clone(), QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).unwrap();
        until(&mut conn, "PUBACK", |p| matches!(p, Packet::PubAck(_)));
    }
    client.disconnect().unwrap();
    // Polled until the DISCONNECT is out (polling on would reconnect).
    while let Ok(Ok(event)) = conn.recv_timeout(Duration::from_secs(2)) {
        if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
            break;
        }
    }
}

/// Connections the broker accepted for user `identity` so far.
fn accepted(broker: &Broker, identity: &str) -> usize {
    let log = std::fs::read_to_string(broker.dir.join("mosquitto.log")).unwrap();
    log.lines().filter(|l| l.contains("New client connected") && l.contains(&format!("u'{identity}'"))).count()
}

#[test]
fn enrolled_agents_use_the_hub_issued_certificate_at_the_broker_which_enforces_identity_and_acl() {
    let tmp = tempfile::tempdir().unwrap();
    // The broker issues a certificate to the hub only: agents get theirs from the hub.
    let mut broker = Broker::start(&tmp.path().join("broker"), &[]);
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 200).unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), &[], &broker.hub_toml());
    broker.trust_client_ca(&hub.data_dir().join("tls").join("agents-ca.pem"));
    let token_a = add_agent(&hub, A, "ho_so", "1h");
    let token_b = add_agent(&hub, B, "thuoc", "1h");

    // Agent A: `kho-agent enroll` writes the hub-issued certificate to hub.client_cert (no
    // client_key: the certificate goes with the signing key), and the agent syncs over MQTT.
    let spec = AgentSpec { id: A.into(), token: String::new(), datasets: vec!["ho_so".into()] };
    let opts = AgentOptions {
        poll_interval: "300ms",
        hub_extra: "transport = \"mqtt\"\nclient_cert = \"secrets/agent.pem\"\nkeep_alive = \"5s\"\n\
                    ack_timeout = \"3s\"\ntoken_file = \"secrets/access.token\"\nsigning_key = \"secrets/agent.key\"\n"
            .into(),
        ..AgentOptions::default()
    };
    let ds = DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None };
    let source_toml = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let mut agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &spec,
        &broker.url(),
        &broker.ca_path(),
        &ds.toml(&source_toml, &opts),
        &opts,
    );
    let ca = hub.ca_path();
    let out = agent.command(&["enroll", "--token", &token_a, "--hub", &hub.url(), "--ca", ca.to_str().unwrap()]);
    assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
    let (cert_a, key_a) = (agent.dir.join("secrets/agent.pem"), agent.dir.join("secrets/agent.key"));
    assert!(std::fs::read_to_string(&cert_a).unwrap().contains("BEGIN CERTIFICATE"), "enroll wrote the certificate");
    agent.spawn();
    wait_for(
        Duration::from_secs(60),
        "the agent to sync over MQTT with its hub-issued certificate",
        || format!("{}\n{}\n{}", hub.log_tail(), agent.log_tail(), broker.log_tail()),
        || ho_so_diff(&src.path, &hub.warehouse(), "ho_so").is_ok_and(|d| d.is_empty()),
    );
    assert!(agent.stop());

    // Agent B enrolls too (its own key and certificate).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key_b, key_b_pem) = new_key_pem(B);
    let (status, enrolled) = rt.block_on(enroll(&client(&hub), &hub, B, &token_b, &key_b));
    assert_eq!(status, 200, "{enrolled}");
    let (cert_b, key_b_path) = (tmp.path().join("b.pem"), tmp.path().join("b.key"));
    std::fs::write(&cert_b, enrolled["client_cert"].as_str().unwrap()).unwrap();
    std::fs::write(&key_b_path, key_b_pem).unwrap();

    // The ACL: an observer with the hub's identity watches both agents' topics. B's message on
    // A's topic never arrives; B's on its own and A's on its own do.
    let (observer, mut watch) = broker.client(HUB_IDENTITY);
    until(&mut watch, "the observer's CONNACK", |p| matches!(p, Packet::ConnAck(_)));
    for id in [A, B] {
        observer.subscribe(format!("kho/v1/{id}/probe"), QoS::AtLeastOnce).unwrap();
        until(&mut watch, "SUBACK", |p| matches!(p, Packet::SubAck(_)));
    }
    let (on_a, on_b) = (format!("kho/v1/{A}/probe"), format!("kho/v1/{B}/probe"));
    publish(B, &broker, &cert_b, &key_b_path, &[(on_a.clone(), "B on A's topic"), (on_b.clone(), "B on its own")]);
    publish(A, &broker, &cert_a, &key_a, &[(on_a.clone(), "A on its own")]);
    let mut seen = drain(&mut watch, Duration::from_secs(2));
    seen.sort();
    let mut expected = vec![(on_a, "A on its own".to_string()), (on_b, "B on its own".to_string())];
    expected.sort();
    assert_eq!(seen, expected, "B's message on A's topic must not be delivered");

    // A certificate from another CA — even one naming agent A — is refused by the broker.
    // (Its CA even has the same name as the broker's: only the signature tells them apart.)
    let before = accepted(&broker, A);
    let (foreign_cert, foreign_key) = broker.foreign_identity(A);
    let (_c, mut conn) = broker.client_with(A, &foreign_cert, &foreign_key);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let left = deadline.checked_duration_since(Instant::now()).expect("neither accepted nor refused in time");
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => panic!("a foreign certificate was accepted: {ack:?}"),
            Ok(Err(e)) => break e.to_string(),
            _ => {}
        }
    };
    // The broker ends the TLS handshake with an alert (it does not log it at this log level).
    assert!(refused.contains("alert"), "refused by the broker's TLS, not something else: {refused}");
    assert_eq!(accepted(&broker, A), before, "{}", broker.log_tail());
}
