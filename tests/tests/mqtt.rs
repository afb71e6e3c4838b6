//! MQTT over TLS end to end: real `kho-hub`, `kho-agent` and Mosquitto processes, each broker with
//! its own generated CA, client certificates and per-agent ACL (see `kho_tests::mosquitto`).
//!
//! Delivery is only counted when the hub's own ack arrives (a PUBACK is not enough), so killing
//! the broker or the hub mid-sync must end with the warehouse equal to the source: 0 rows lost,
//! 0 changes applied twice, ledger equal to the agent's acknowledged sequence.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_shared::codec;
use kho_shared::mqtt::{self, AckMessage, EnvelopeHeader, Kind};
use kho_shared::protocol::{Batch, Change, Column, DatasetSchema, ErrorCode, Op, PROTOCOL_VERSION};
use kho_shared::types::ColumnType;
use kho_tests::compare::{Diff, ho_so_diff, seq_stats};
use kho_tests::cut_proxy::CutProxy;
use kho_tests::mosquitto::{Broker, HUB_IDENTITY};
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::source::SourceDb;
use rumqttc::{Event, Packet, QoS};

fn spec(id: &str) -> AgentSpec {
    AgentSpec { id: id.into(), token: format!("token-{id}-{}", fastrand::u64(..)), datasets: vec!["ho_so".into()] }
}

fn ho_so(cursor: Option<&str>) -> DatasetSpec {
    DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: cursor.map(Into::into) }
}

fn mqtt_opts(broker: &Broker, id: &str, batch: u64) -> AgentOptions {
    AgentOptions {
        batch_max_changes: batch,
        poll_interval: "300ms",
        hub_extra: broker.agent_hub_toml(id, "3s"),
        ..AgentOptions::default()
    }
}

fn start_agent(
    tmp: &std::path::Path,
    broker: &Broker,
    a: &AgentSpec,
    src: &SourceDb,
    ds: DatasetSpec,
    batch: u64,
) -> AgentProc {
    AgentProc::start(
        &tmp.join("agent"),
        a,
        &broker.url(),
        &broker.ca_path(),
        &src.path,
        &[ds],
        &mqtt_opts(broker, &a.id, batch),
    )
}

/// Waits until the warehouse equals the source, the outbox is empty, and the ledger and the
/// agent's acknowledged sequence agree with no change applied twice.
fn verify(src: &SourceDb, hub: &HubProc, agent: &AgentProc, broker: &Broker, agent_id: &str, within: Duration) {
    let last = std::cell::RefCell::new(Diff::default());
    wait_for(
        within,
        "the warehouse to equal the source over MQTT",
        || format!("last diff: {:?}\n{}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail(), broker.log_tail()),
        || {
            let d = ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap_or_else(|e| Diff {
                missing: 1,
                examples: vec![e.to_string()],
                ..Diff::default()
            });
            let done = d.is_empty();
            *last.borrow_mut() = d;
            done
        },
    );
    wait_for(
        Duration::from_secs(30),
        "the outbox to drain",
        || agent.log_tail(),
        || agent.status()["outbox"]["depth"].as_u64() == Some(0),
    );
    let acked = agent.status()["outbox"]["acked_through"].as_u64().expect("acked_through");
    assert_eq!(hub.ledger(agent_id), acked, "hub ledger and agent's acked sequence agree");
    let (rows, distinct, max) = seq_stats(&hub.warehouse(), "ho_so").unwrap();
    assert_eq!(rows, distinct, "two warehouse rows carry the same change sequence");
    assert!(max <= acked, "a row carries sequence {max} beyond the acked {acked}");
}

#[test]
fn mqtt_sync_converges_through_inserts_updates_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = spec("so-y-te-mqtt");
    let broker = Broker::start(&tmp.path().join("broker"), &[&a.id]);
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 3_000).unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), std::slice::from_ref(&a), &broker.hub_toml());
    let agent = start_agent(tmp.path(), &broker, &a, &src, ho_so(None), 1_000);
    verify(&src, &hub, &agent, &broker, &a.id, Duration::from_secs(60));

    src.insert_range(3_001, 3_100).unwrap();
    src.update((1..=3_000).step_by(37), "Đã trả kết quả").unwrap();
    src.delete([3, 4, 2_999, 3_000]).unwrap();
    verify(&src, &hub, &agent, &broker, &a.id, Duration::from_secs(60));
    let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
    let deleted: i64 = conn.query_row("SELECT count(*) FROM ho_so WHERE _kho_deleted = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(deleted, 4, "deletes arrive as soft deletes");
    // Heartbeats travel over MQTT too: the hub records the agent's liveness.
    let seen: i64 =
        conn.query_row("SELECT count(*) FROM _kho_agents WHERE agent = ?1", [&a.id], |r| r.get(0)).unwrap_or(0);
    assert_eq!(seen, 1, "the hub recorded a heartbeat from the agent\n{}", hub.log_tail());
}

/// A batch for `agent` with one upsert at sequence 1, enveloped with `token`.
fn forged_batch(agent_in_batch: &str, token: &str) -> (String, Vec<u8>) {
    let batch = Batch {
        v: PROTOCOL_VERSION,
        agent: agent_in_batch.into(),
        first_seq: 1,
        last_seq: 1,
        created_at_ms: 0,
        schemas: vec![DatasetSchema {
            privacy: Default::default(),
            dataset: "ho_so".into(),
            key: vec!["id".into()],
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::Int },
                Column { name: "ma_ho_so".into(), ty: ColumnType::Text },
            ],
        }],
        changes: vec![Change {
            seq: 1,
            dataset: "ho_so".into(),
            op: Op::Upsert,
            key: None,
            row: Some(serde_json::from_str(r#"{"id":1,"ma_ho_so":"GIA-MAO"}"#).unwrap()),
        }],
    };
    let body = codec::encode(&batch).unwrap();
    let header = EnvelopeHeader {
        kind: Kind::Batch,
        token: token.into(),
        sha256: Some(body.digest_hex.clone()),
        encoding: Some("zstd".into()),
        signature: None,
    };
    (body.digest_hex.clone(), mqtt::encode_envelope(&header, &body.body))
}

/// Drives `conn` until `want` accepts an event; panics after `within`.
fn until(conn: &mut rumqttc::Connection, within: Duration, what: &str, mut want: impl FnMut(&Event) -> bool) {
    let deadline = std::time::Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match conn.recv_timeout(left) {
            Ok(Ok(e)) if want(&e) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("MQTT connection failed while waiting for {what}: {e}"),
            Err(_) => break,
        }
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn broker_acl_keeps_agent_b_off_agent_a_topics() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("broker"), &["agent-a", "agent-b"]);
    // A watcher with the hub's identity sees every agent's batches.
    let (watch, mut watch_conn) = broker.client(HUB_IDENTITY);
    watch.subscribe("kho/v1/#", QoS::AtLeastOnce).unwrap();
    until(&mut watch_conn, Duration::from_secs(20), "the watcher's SUBACK", |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    });

    let (b, mut b_conn) = broker.client("agent-b");
    until(&mut b_conn, Duration::from_secs(20), "B's CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_))));
    b.publish(mqtt::batches_topic("agent-a"), QoS::AtLeastOnce, false, b"intrusion".to_vec()).unwrap();
    // B's own topic afterwards: the broker handles one client's messages in order, so once this
    // marker reaches the watcher, the intrusion has been decided.
    b.publish(mqtt::batches_topic("agent-b"), QoS::AtLeastOnce, false, b"marker".to_vec()).unwrap();
    std::thread::spawn(move || for _ in b_conn.iter() {});

    let mut seen = Vec::new();
    until(&mut watch_conn, Duration::from_secs(20), "B's marker", |e| {
        if let Event::Incoming(Packet::Publish(p)) = e {
            seen.push((p.topic.clone(), p.payload.to_vec()));
            return p.payload.as_ref() == b"marker";
        }
        false
    });
    assert_eq!(
        seen,
        vec![(mqtt::batches_topic("agent-b"), b"marker".to_vec())],
        "only B's own topic got through\n{}",
        broker.log_tail()
    );

    // Nor may B read A's acks: Mosquitto grants the subscription but never delivers them. The
    // hub's identity publishes to A's ack topic, then a marker to B's; B must see only the marker.
    let (b2, mut b2_conn) = broker.client("agent-b");
    b2.subscribe(mqtt::ack_topic("agent-a"), QoS::AtLeastOnce).unwrap();
    b2.subscribe(mqtt::ack_topic("agent-b"), QoS::AtLeastOnce).unwrap();
    let mut subacks = 0;
    until(&mut b2_conn, Duration::from_secs(20), "B's SUBACKs", |e| {
        subacks += usize::from(matches!(e, Event::Incoming(Packet::SubAck(_))));
        subacks == 2
    });
    watch.publish(mqtt::ack_topic("agent-a"), QoS::AtLeastOnce, false, b"secret".to_vec()).unwrap();
    watch.publish(mqtt::ack_topic("agent-b"), QoS::AtLeastOnce, false, b"marker".to_vec()).unwrap();
    std::thread::spawn(move || for _ in watch_conn.iter() {});
    let mut got = Vec::new();
    until(&mut b2_conn, Duration::from_secs(20), "the marker on B's ack topic", |e| {
        if let Event::Incoming(Packet::Publish(p)) = e {
            got.push(p.payload.to_vec());
            return p.payload.as_ref() == b"marker";
        }
        false
    });
    assert_eq!(got, vec![b"marker".to_vec()], "B received A's ack\n{}", broker.log_tail());
}

#[test]
fn forged_batches_on_agent_a_topic_are_refused_and_nothing_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (spec("agent-a"), spec("agent-b"));
    let broker = Broker::start(&tmp.path().join("broker"), &[&a.id, &b.id]);
    let hub = HubProc::start_with(&tmp.path().join("hub"), &[a.clone(), b.clone()], &broker.hub_toml());

    // Whoever holds A's certificate can reach A's topics; the hub must still check the payload.
    let (client, mut conn) = broker.client(&a.id);
    client.subscribe(mqtt::ack_topic(&a.id), QoS::AtLeastOnce).unwrap();
    until(&mut conn, Duration::from_secs(20), "the SUBACK", |e| matches!(e, Event::Incoming(Packet::SubAck(_))));
    let cases = [
        ("an unknown token", forged_batch(&a.id, "not-a-token"), ErrorCode::Unauthorized),
        ("B's token on A's topic", forged_batch(&b.id, &b.token), ErrorCode::Forbidden),
        ("A's token, batch naming B", forged_batch(&b.id, &a.token), ErrorCode::Forbidden),
    ];
    for (what, (digest, payload), code) in cases {
        // The hub's subscription may still be settling after start: re-publish until it answers.
        let mut answer = None;
        for _ in 0..10 {
            client.publish(mqtt::batches_topic(&a.id), QoS::AtLeastOnce, false, payload.clone()).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while answer.is_none() {
                let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { break };
                if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = conn.recv_timeout(left) {
                    let ack: AckMessage = serde_json::from_slice(&p.payload).unwrap();
                    if ack.sha256 == digest {
                        answer = Some(ack);
                    }
                }
            }
            if answer.is_some() {
                break;
            }
        }
        let ack = answer.unwrap_or_else(|| panic!("no verdict for {what}\n{}", hub.log_tail()));
        assert_eq!(ack.applied_through, None, "{what} was applied");
        assert_eq!(ack.error.map(|e| e.code), Some(code), "{what}");
    }
    assert_eq!(hub.ledger(&a.id), 0, "nothing applied for A");
    assert_eq!(hub.ledger(&b.id), 0, "nothing applied for B");
    let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'ho_so'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 0, "no warehouse table was even created");
}

const ROWS: u64 = 100_000;

#[test]
fn broker_killed_and_restarted_mid_100k_sync_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = spec("broker-crash");
    let mut broker = Broker::start(&tmp.path().join("broker"), &[&a.id]);
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), ROWS).unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), std::slice::from_ref(&a), &broker.hub_toml());
    let agent = start_agent(tmp.path(), &broker, &a, &src, ho_so(Some("updated_at")), 2_000);
    wait_for(Duration::from_secs(60), "the sync to be under way", || agent.log_tail(), || hub.ledger(&a.id) >= 10_000);
    let mut mid_sync = 0;
    for round in 0..2u64 {
        if hub.ledger(&a.id) < ROWS {
            mid_sync += 1;
        }
        broker.kill9();
        src.insert_range(ROWS + 1 + round * 100, ROWS + 100 + round * 100).unwrap();
        src.update((1 + round..ROWS).step_by(7_001), "Đang xử lý").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        broker.spawn();
        std::thread::sleep(Duration::from_millis(1_500));
    }
    assert!(mid_sync >= 1, "the broker should die during the initial sync");
    verify(&src, &hub, &agent, &broker, &a.id, Duration::from_secs(90));
}

#[test]
fn hub_killed_and_restarted_while_the_agent_publishes_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = spec("hub-crash");
    let broker = Broker::start(&tmp.path().join("broker"), &[&a.id]);
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), ROWS).unwrap();
    let mut hub = HubProc::start_with(&tmp.path().join("hub"), std::slice::from_ref(&a), &broker.hub_toml());
    let agent = start_agent(tmp.path(), &broker, &a, &src, ho_so(Some("updated_at")), 2_000);
    wait_for(Duration::from_secs(60), "the sync to be under way", || agent.log_tail(), || hub.ledger(&a.id) >= 10_000);
    let mut mid_sync = 0;
    for round in 0..2u64 {
        if hub.ledger(&a.id) < ROWS {
            mid_sync += 1;
        }
        hub.kill9();
        // The agent keeps capturing and publishing into a broker nobody consumes from.
        src.insert_range(ROWS + 1 + round * 100, ROWS + 100 + round * 100).unwrap();
        src.update((1 + round..ROWS).step_by(5_003), "Đã trả kết quả").unwrap();
        std::thread::sleep(Duration::from_millis(800));
        hub.spawn();
        std::thread::sleep(Duration::from_millis(1_500));
    }
    assert!(mid_sync >= 1, "the hub should die during the initial sync");
    verify(&src, &hub, &agent, &broker, &a.id, Duration::from_secs(90));
}

#[test]
fn a_broker_puback_deletes_nothing_only_the_hub_ack_does() {
    let tmp = tempfile::tempdir().unwrap();
    let a = spec("puback-only");
    let broker = Broker::start(&tmp.path().join("broker"), &[&a.id]);
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 5_000).unwrap();
    // A plain subscriber with the hub's identity: the broker accepts (PUBACKs) and delivers the
    // batches, but nobody answers on the ack topic.
    let (watch, mut watch_conn) = broker.client(HUB_IDENTITY);
    watch.subscribe(mqtt::batches_topic(&a.id), QoS::AtLeastOnce).unwrap();
    until(&mut watch_conn, Duration::from_secs(20), "the watcher's SUBACK", |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    });
    let agent = start_agent(tmp.path(), &broker, &a, &src, ho_so(None), 1_000);
    let mut copies = 0;
    until(&mut watch_conn, Duration::from_secs(30), "the same batch published twice", |e| {
        if let Event::Incoming(Packet::Publish(p)) = e {
            let env = mqtt::decode_envelope(&p.payload).unwrap();
            assert_eq!(env.header.token, a.token);
            copies += 1;
        }
        // A second copy means the first one's ack timeout passed after its PUBACK.
        copies >= 2
    });
    let status = agent.status();
    assert_eq!(status["outbox"]["acked_through"].as_u64(), Some(0), "PUBACK alone deleted changes: {status}");
    assert_eq!(status["outbox"]["depth"].as_u64(), Some(5_000));
    drop(watch);

    // The hub comes up: its acks, and only they, drain the outbox.
    let hub = HubProc::start_with(&tmp.path().join("hub"), std::slice::from_ref(&a), &broker.hub_toml());
    verify(&src, &hub, &agent, &broker, &a.id, Duration::from_secs(60));
}

#[test]
fn sync_once_and_check_work_over_mqtt() {
    let tmp = tempfile::tempdir().unwrap();
    let a = spec("sync-once-mqtt");
    let broker = Broker::start(&tmp.path().join("broker"), &[&a.id]);
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 2_000).unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), std::slice::from_ref(&a), &broker.hub_toml());
    let opts = mqtt_opts(&broker, &a.id, 500);
    let source = format!("kind = \"sqlite\"\npath = \"{}\"\n", src.path.display());
    let agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &a,
        &broker.url(),
        &broker.ca_path(),
        &ho_so(None).toml(&source, &opts),
        &opts,
    );
    let text = |out: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let out = agent.command(&["check"]);
    assert!(text(&out).contains("hub client: ok (MQTT broker mqtts://127.0.0.1:"), "{}", text(&out));

    let out = agent.command(&["sync", "--once", "--timeout", "60s"]);
    assert!(out.status.success(), "{}\n{}", text(&out), hub.log_tail());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 still waiting for the hub"), "{}", text(&out));
    assert!(ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap().is_empty(), "warehouse equals source on exit");
    assert_eq!(hub.ledger(&a.id), 2_000);
}

#[test]
fn network_cuts_between_agent_and_broker_mid_100k_sync_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = spec("net-cut");
    let broker = Broker::start(&tmp.path().join("broker"), &[&a.id]);
    let proxy = CutProxy::start(broker.port);
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), ROWS).unwrap();
    let hub = HubProc::start_with(&tmp.path().join("hub"), std::slice::from_ref(&a), &broker.hub_toml());
    // The agent reaches the broker only through the proxy (the certificate names 127.0.0.1).
    let url = format!("mqtts://127.0.0.1:{}", proxy.port);
    let agent = AgentProc::start(
        &tmp.path().join("agent"),
        &a,
        &url,
        &broker.ca_path(),
        &src.path,
        &[ho_so(Some("updated_at"))],
        &mqtt_opts(&broker, &a.id, 2_000),
    );
    wait_for(Duration::from_secs(60), "the sync to be under way", || agent.log_tail(), || hub.ledger(&a.id) >= 10_000);
    let mut cuts = 0;
    for round in 0..3u64 {
        // Cut only once the agent is connected again: a batch acknowledged just after the previous
        // cut can advance the ledger before the agent has reconnected.
        wait_for(
            Duration::from_secs(30),
            "the agent to reconnect through the proxy",
            || agent.log_tail(),
            || proxy.connections() >= 1,
        );
        let before = hub.ledger(&a.id);
        cuts += proxy.cut();
        src.insert_range(ROWS + 1 + round * 100, ROWS + 100 + round * 100).unwrap();
        // Progress resumes after each cut before the next one.
        wait_for(Duration::from_secs(30), "progress after the cut", || agent.log_tail(), || hub.ledger(&a.id) > before);
    }
    assert!(cuts >= 3, "each cut should have dropped the agent's connection (cut {cuts})");
    verify(&src, &hub, &agent, &broker, &a.id, Duration::from_secs(90));
}
