#![allow(clippy::unwrap_used)]

//! The forwarder against a scripted in-process hub (plain HTTP, `insecure_dev`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kho_shared::protocol::{Column, DatasetSchema, ErrorReply, Op};
use kho_shared::types::ColumnType;

use super::https::HttpsTransport;
use super::*;
use crate::config::{HubSection, Mode};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reply {
    Fail500,
    Gap(u64),
    Unauthorized,
}

#[derive(Default)]
struct Hub {
    script: VecDeque<Reply>,
    ledger: u64,
    /// (first_seq, last_seq) of every batch received.
    batches: Vec<(u64, u64)>,
    applied: Vec<u64>,
    heartbeats: usize,
    /// Each batch request waits this long before it is handled (to overlap requests).
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

type Shared = Arc<Mutex<Hub>>;

async fn batches(State(hub): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["content-type"], kho_shared::protocol::BATCH_CONTENT_TYPE);
    assert_eq!(headers["content-encoding"], "zstd");
    let digest = headers[kho_shared::protocol::DIGEST_HEADER].to_str().unwrap().to_string();
    let delay = {
        let mut h = hub.lock().unwrap();
        h.in_flight += 1;
        h.max_in_flight = h.max_in_flight.max(h.in_flight);
        h.delay
    };
    tokio::time::sleep(delay).await;
    hub.lock().unwrap().in_flight -= 1;
    let batch = codec::decode(&body, &digest, 64 << 20).unwrap();
    batch.validate().unwrap();
    let mut hub = hub.lock().unwrap();
    hub.batches.push((batch.first_seq, batch.last_seq));
    let err = |status: StatusCode, reply: ErrorReply| (status, serde_json::to_string(&reply).unwrap());
    match hub.script.pop_front() {
        Some(Reply::Fail500) => {
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorReply { code: ErrorCode::Internal, message: "boom".into(), expected_seq: None },
            );
        }
        Some(Reply::Unauthorized) => {
            return err(
                StatusCode::UNAUTHORIZED,
                ErrorReply { code: ErrorCode::Unauthorized, message: "who?".into(), expected_seq: None },
            );
        }
        Some(Reply::Gap(e)) => {
            // The hub "already has" everything before e.
            hub.ledger = hub.ledger.max(e - 1);
            let applied: Vec<u64> = (1..e).filter(|s| !hub.applied.contains(s)).collect();
            hub.applied.extend(applied);
            return err(
                StatusCode::CONFLICT,
                ErrorReply { code: ErrorCode::SequenceGap, message: "gap".into(), expected_seq: Some(e) },
            );
        }
        None => {}
    }
    if batch.first_seq > hub.ledger + 1 {
        let e = hub.ledger + 1;
        return err(
            StatusCode::CONFLICT,
            ErrorReply { code: ErrorCode::SequenceGap, message: "gap".into(), expected_seq: Some(e) },
        );
    }
    for c in &batch.changes {
        if c.seq > hub.ledger {
            hub.applied.push(c.seq);
        }
    }
    hub.ledger = hub.ledger.max(batch.last_seq);
    (StatusCode::OK, format!("{{\"applied_through\":{}}}", hub.ledger))
}

async fn heartbeat(State(hub): State<Shared>, body: Bytes) -> StatusCode {
    let hb: Heartbeat = serde_json::from_slice(&body).unwrap();
    assert_eq!(hb.agent, "a1");
    hub.lock().unwrap().heartbeats += 1;
    StatusCode::OK
}

async fn start_hub(script: Vec<Reply>) -> (Shared, String) {
    let hub: Shared = Arc::new(Mutex::new(Hub { script: script.into(), ..Hub::default() }));
    let app = Router::new()
        .route(kho_shared::protocol::BATCHES_PATH, post(batches))
        .route(kho_shared::protocol::HEARTBEAT_PATH, post(heartbeat))
        .with_state(Arc::clone(&hub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hub, url)
}

fn hub_section(url: &str) -> HubSection {
    HubSection {
        url: url.into(),
        token: Some("t0ken".into()),
        token_file: None,
        ca_cert: None,
        insecure_dev: true,
        request_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(50),
        transport: crate::config::TransportKind::Https,
        client_cert: None,
        client_key: None,
        signing_key: None,
        keep_alive: crate::config::DEFAULT_KEEP_ALIVE,
        ack_timeout: crate::config::DEFAULT_ACK_TIMEOUT,
    }
}

fn outbox_with(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("outbox.sqlite");
    let mut o = Outbox::open(&path).unwrap();
    o.prepare_dataset("ho_so", Mode::Snapshot, None).unwrap();
    o.record_schema(&DatasetSchema {
        privacy: Default::default(),
        dataset: "ho_so".into(),
        key: vec!["id".into()],
        columns: vec![Column { name: "id".into(), ty: ColumnType::Int }],
    })
    .unwrap();
    o.begin_chunk(0).unwrap();
    for i in 0..n {
        o.push_change("ho_so", Op::Upsert, format!("{{\"id\":{i}}}").as_bytes()).unwrap();
    }
    o.commit_chunk().unwrap();
    path
}

/// A forwarder with one batch in flight, so scripted replies meet batches in a known order.
fn forwarder(path: &std::path::Path, url: &str, batch: usize) -> Forwarder<HttpsTransport> {
    forwarder_with_window(path, url, batch, 1)
}

fn forwarder_with_window(path: &std::path::Path, url: &str, batch: usize, window: usize) -> Forwarder<HttpsTransport> {
    let transport = Arc::new(HttpsTransport::new(&hub_section(url), "t0ken").unwrap());
    let config = ForwardSection {
        batch_max_changes: batch,
        batch_max_bytes: 1 << 20,
        linger: Duration::from_millis(5),
        max_in_flight: window,
    };
    Forwarder::new(Outbox::open(path).unwrap(), transport, config, "a1".into(), Arc::new(Notify::new()))
        .with_backoff(Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(40) })
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn depth(path: &std::path::Path) -> u64 {
    Outbox::open_read_only(path).unwrap().depth().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = outbox_with(dir.path(), 25);
    let (hub, url) = start_hub(vec![Reply::Fail500; 4]).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(forwarder(&path, &url, 10).run(cancel.clone()));
    wait_until("the outbox to drain", || depth(&path) == 0).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    let hub = hub.lock().unwrap();
    assert_eq!(hub.applied, (1..=25).collect::<Vec<_>>(), "every change applied once, in order");
    assert_eq!(hub.batches.len(), 4 + 3, "four refused attempts, then three batches");
    assert!(hub.batches[..5].iter().all(|b| *b == (1, 10)), "the refused batch is resent unchanged");
    let m = Outbox::open_read_only(&path).unwrap().meta().unwrap();
    assert_eq!((m.acked_through, m.next_seq), (25, 26));
}

/// Forwards `n` changes in batches of 10 with `window` in flight to a hub that takes 30 ms per
/// request and answers by `script`; returns (changes applied in order, most requests at once).
async fn forward_through_slow_hub(n: usize, script: Vec<Reply>, window: usize) -> (Vec<u64>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = outbox_with(dir.path(), n);
    let (hub, url) = start_hub(script).await;
    hub.lock().unwrap().delay = Duration::from_millis(30);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(forwarder_with_window(&path, &url, 10, window).run(cancel.clone()));
    wait_until("the outbox to drain", || depth(&path) == 0).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    let hub = hub.lock().unwrap();
    (hub.applied.clone(), hub.max_in_flight)
}

/// Two batches travel at once: the hub has the next batch before it answers the previous one.
/// Replies that come back out of order (gaps for a batch that overtook its predecessor) and
/// failures in the middle of the window still end with every change applied once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_in_flight_and_every_change_once_in_order() {
    let (applied, most) = forward_through_slow_hub(95, vec![], 2).await;
    assert_eq!(applied, (1..=95).collect::<Vec<_>>(), "every change once, in order");
    assert_eq!(most, 2, "two batches travelled at once");
    for script in [vec![Reply::Fail500, Reply::Fail500], [Reply::Fail500, Reply::Gap(1)].repeat(3)] {
        let (applied, most) = forward_through_slow_hub(95, script.clone(), 2).await;
        assert_eq!(applied, (1..=95).collect::<Vec<_>>(), "script {script:?}: every change once, in order");
        // After a failure the agent abandons the batch behind it, which the hub may still be
        // handling when the resend arrives: then more than two.
        assert!(most >= 2, "script {script:?}: two batches travelled at once");
    }
    let (applied, most) = forward_through_slow_hub(35, vec![], 1).await;
    assert_eq!((applied.len(), most), (35, 1), "one in flight means one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gap_acks_what_the_hub_has_and_resends_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = outbox_with(dir.path(), 20);
    let (hub, url) = start_hub(vec![Reply::Gap(8)]).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(forwarder(&path, &url, 10).run(cancel.clone()));
    wait_until("the outbox to drain", || depth(&path) == 0).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    let hub = hub.lock().unwrap();
    assert_eq!(hub.batches[0], (1, 10));
    assert_eq!(hub.batches[1], (8, 17), "resent from the hub's expected sequence");
    assert_eq!(hub.applied, (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_deleted_without_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    let path = outbox_with(dir.path(), 5);
    let (hub, url) =
        start_hub([Reply::Fail500, Reply::Unauthorized, Reply::Gap(1), Reply::Fail500, Reply::Unauthorized].repeat(20))
            .await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(forwarder(&path, &url, 10).run(cancel.clone()));
    wait_until("several attempts", || hub.lock().unwrap().batches.len() >= 6).await;
    assert_eq!(depth(&path), 5);
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(Outbox::open_read_only(&path).unwrap().meta().unwrap().acked_through, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = outbox_with(dir.path(), 1);
    let (hub, url) = start_hub(vec![]).await;
    let transport = Arc::new(HttpsTransport::new(&hub_section(&url), "t0ken").unwrap());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(crate::heartbeat::run(
        Outbox::open(&path).unwrap(),
        transport,
        "a1".into(),
        vec!["ho_so".into()],
        Duration::from_millis(20),
        cancel.clone(),
    ));
    wait_until("two heartbeats", || hub.lock().unwrap().heartbeats >= 2).await;
    cancel.cancel();
    task.await.unwrap();
}

#[test]
fn gap_decisions() {
    assert_eq!(on_gap(8, 0, 21), Ok(Next::Ack(7)));
    assert_eq!(on_gap(21, 0, 21), Ok(Next::Ack(20)));
    assert!(on_gap(1, 0, 21).is_err(), "hub expects where we already start: outbox is missing changes");
    assert!(on_gap(3, 5, 21).unwrap_err().contains("lost data"));
    assert!(on_gap(30, 0, 21).unwrap_err().contains("reset"));
    assert!(on_gap(0, 0, 21).is_err());
}

#[test]
fn transient_errors() {
    assert!(TransportError::Network("x".into()).is_transient());
    let r = |status, code| TransportError::Rejected { status, code, message: String::new() };
    assert!(r(503, Some(ErrorCode::Unavailable)).is_transient());
    assert!(!r(401, Some(ErrorCode::Unauthorized)).is_transient());
    assert!(!r(413, None).is_transient());
    assert!(r(502, None).is_transient());
}
