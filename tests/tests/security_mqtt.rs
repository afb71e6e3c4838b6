//! Enrolled agents over MQTT: the batch signature travels in the envelope, so whoever holds an
//! agent's broker certificate *and* its access token still cannot write without its private key;
//! and `kho-hub agent revoke` is effective on MQTT at once. Real Mosquitto, hub and agent.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_shared::codec;
use kho_shared::mqtt::{self, AckMessage, EnvelopeHeader, Kind};
use kho_shared::protocol::{Batch, Change, Column, DatasetSchema, ErrorCode, Op};
use kho_shared::signing::Signer;
use kho_shared::types::ColumnType;
use kho_tests::compare::ho_so_diff;
use kho_tests::mosquitto::Broker;
use kho_tests::procs::{HubProc, wait_for};
use kho_tests::security::configure_enrolled_agent;
use kho_tests::source::SourceDb;
use rumqttc::{Event, Packet, QoS};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;

const ID: &str = "so-y-te-mqtt";

fn batch(seq: u64) -> Batch {
    Batch {
        v: 1,
        agent: ID.into(),
        first_seq: seq,
        last_seq: seq,
        created_at_ms: 0,
        schemas: vec![DatasetSchema {
            privacy: Default::default(),
            dataset: "ho_so".into(),
            key: vec!["id".into()],
            columns: vec![Column { name: "id".into(), ty: ColumnType::Int }],
        }],
        changes: vec![Change {
            seq,
            dataset: "ho_so".into(),
            op: Op::Upsert,
            key: None,
            row: Some(serde_json::json!({"id": 1_000_000}).as_object().unwrap().clone()),
        }],
    }
}

/// Publishes `payload` on the agent's batches topic until the hub's verdict for `digest` arrives.
fn verdict(client: &rumqttc::Client, conn: &mut rumqttc::Connection, payload: Vec<u8>, digest: &str) -> AckMessage {
    for _ in 0..10 {
        client.publish(mqtt::batches_topic(ID), QoS::AtLeastOnce, false, payload.clone()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = conn.recv_timeout(left) {
                let ack: AckMessage = serde_json::from_slice(&p.payload).unwrap();
                if ack.sha256 == digest {
                    return ack;
                }
            }
        }
    }
    panic!("no verdict for {digest}");
}

fn envelope(token: &str, seq: u64, signer: Option<&Signer>) -> (String, Vec<u8>) {
    let body = codec::encode(&batch(seq)).unwrap();
    let header = EnvelopeHeader {
        kind: Kind::Batch,
        token: token.into(),
        sha256: Some(body.digest_hex.clone()),
        encoding: Some("zstd".into()),
        signature: signer.map(|s| s.sign(&body.digest_hex).unwrap()),
    };
    (body.digest_hex.clone(), mqtt::encode_envelope(&header, &body.body))
}

#[test]
fn enrolled_agent_over_mqtt_signs_its_batches_and_revoke_is_immediate() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("broker"), &[ID]);
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 300).unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), &[], &broker.hub_toml());
    let out = hub.command(&["agent", "add", ID, "--department", "so_y_te", "--datasets", "ho_so"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let token = stdout.lines().find(|l| l.starts_with("kho-enroll-")).unwrap().to_string();

    let hub_extra = format!(
        "{}token_file = \"secrets/access.token\"\nsigning_key = \"secrets/agent.key\"\n",
        broker.agent_hub_toml(ID, "3s")
    );
    let mut agent = configure_enrolled_agent(
        &tmp.path().join("agent"),
        ID,
        &broker.url(),
        &broker.ca_path(),
        &src.path,
        hub_extra,
        "300ms",
    );
    // MQTT agents enroll over the hub's HTTPS address.
    let ca = hub.ca_path();
    let out = agent.command(&["enroll", "--token", &token, "--hub", &hub.url(), "--ca", ca.to_str().unwrap()]);
    assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
    agent.spawn();
    wait_for(
        Duration::from_secs(60),
        "signed MQTT batches to sync the table",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || ho_so_diff(&src.path, &hub.warehouse(), "ho_so").is_ok_and(|d| d.is_empty()),
    );
    // The fleet list says which transport the agent's heartbeats come over.
    wait_for(
        Duration::from_secs(20),
        "`agent list` to show the agent on MQTT",
        || hub.log_tail(),
        || {
            let list = String::from_utf8_lossy(&hub.command(&["agent", "list"]).stdout).to_string();
            list.lines().any(|l| l.starts_with(ID) && l.contains(" mqtt "))
        },
    );
    assert!(agent.stop());
    let ledger = hub.ledger(ID);

    // An attacker with the agent's broker certificate and access token, but not its private key.
    let access = std::fs::read_to_string(agent.dir.join("secrets/access.token")).unwrap().trim().to_string();
    let der = PrivatePkcs8KeyDer::from_pem_file(agent.dir.join("secrets/agent.key")).unwrap();
    let real_key = Signer::from_pkcs8(ID, der.secret_pkcs8_der()).unwrap();
    let other = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let forged_key = Signer::from_pkcs8(ID, other.as_ref()).unwrap();
    let (client, mut conn) = broker.client(ID);
    client.subscribe(mqtt::ack_topic(ID), QoS::AtLeastOnce).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now()).expect("the SUBACK in time");
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) = conn.recv_timeout(left) {
            break;
        }
    }

    let next = ledger + 1;
    for (what, signer) in [("no signature", None), ("another key's signature", Some(&forged_key))] {
        let (digest, payload) = envelope(&access, next, signer);
        let ack = verdict(&client, &mut conn, payload, &digest);
        assert_eq!(ack.error.map(|e| e.code), Some(ErrorCode::BadSignature), "{what}");
    }
    assert_eq!(hub.ledger(ID), ledger, "nothing applied");

    // The real key works (proves the refusals above were about the signature) …
    let (digest, payload) = envelope(&access, next, Some(&real_key));
    assert_eq!(verdict(&client, &mut conn, payload, &digest).applied_through, Some(next));
    // … until the agent is revoked: the very next message is refused.
    let out = hub.command(&["agent", "revoke", ID]);
    assert!(out.status.success());
    let (digest, payload) = envelope(&access, next + 1, Some(&real_key));
    let ack = verdict(&client, &mut conn, payload, &digest);
    let error = ack.error.unwrap();
    assert_eq!(error.code, ErrorCode::Unauthorized);
    assert!(error.message.contains("is revoked"), "{}", error.message);
    assert_eq!(hub.ledger(ID), next, "nothing applied after revoke");
    let verify = hub.command(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}
