//! Ingest through the real HTTP interface: ledger semantics, authentication, permissions and
//! every way a body can be bad. Each refused request must leave the warehouse untouched.

mod common;

use common::*;
use kho_shared::codec;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_over_https_is_applied_once_and_acked_again() {
    let hub = TestHub::start(true).await;
    let batch = ho_so_batch("so-y-te-01", 1, 10);
    let (status, body) = hub.post(TOKEN_A, &batch).await;
    assert_eq!((status, &body), (200, &json!({"applied_through": 10})));
    assert_eq!(hub.rows("ho_so"), Some((10, 0)));
    let applied_at: String =
        hub.warehouse().query_row("SELECT _kho_applied_at FROM ho_so WHERE id = 3", [], |r| r.get(0)).expect("row");

    // Same batch again (a lost ack): same answer, nothing re-applied.
    let (status, body) = hub.post(TOKEN_A, &batch).await;
    assert_eq!((status, &body), (200, &json!({"applied_through": 10})));
    let (seq, again): (i64, String) = hub
        .warehouse()
        .query_row("SELECT _kho_seq, _kho_applied_at FROM ho_so WHERE id = 3", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("row");
    assert_eq!((seq, again), (3, applied_at));
    let (decimal, deleted): (String, i64) = hub
        .warehouse()
        .query_row("SELECT so_tien, _kho_deleted FROM ho_so WHERE id = 3", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("row");
    assert_eq!((decimal.as_str(), deleted), ("1500000.50", 0), "decimals are stored exactly");

    let metrics = hub.client.get(format!("{}/metrics", hub.base)).send().await.expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(text.contains("kho_hub_batches_accepted_total 1"), "{text}");
    assert!(text.contains("kho_hub_batches_duplicate_total 1"), "{text}");
    assert!(text.contains("kho_hub_changes_applied_total 10"), "{text}");
    assert!(text.contains("kho_hub_agent_applied_seq{agent=\"so-y-te-01\"} 10"), "{text}");
    let health = hub.client.get(format!("{}/healthz", hub.base)).send().await.expect("healthz");
    assert_eq!(health.text().await.expect("ok"), "ok");
    hub.stop().await;
}

/// The ack of a batch whose rows a `reject` rule held lists them; if that ack is lost, the
/// resent batch's ack (a duplicate) lists them again, or `kho-agent status` would never show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_batch_is_acked_with_its_quarantined_rows_again() {
    let catalog = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"

[[dataset.rule]]
check = "allowed_values"
column = "trang_thai"
values = ["Đã tiếp nhận"]
policy = "reject"
"#;
    let hub = TestHub::start_with_catalog(catalog).await;
    let mut batch = ho_so_batch("so-y-te-01", 1, 5);
    for seq in [2, 4] {
        batch.changes[seq - 1].row.as_mut().expect("row").insert("trang_thai".into(), json!("?"));
    }
    let held = json!([
        {"dataset": "ho_so", "key": "{\"id\":2}", "reason": "allowed_values:trang_thai=\"?\""},
        {"dataset": "ho_so", "key": "{\"id\":4}", "reason": "allowed_values:trang_thai=\"?\""},
    ]);
    let (status, first) = hub.post(TOKEN_A, &batch).await;
    assert_eq!((status, &first["applied_through"], &first["quarantined"]), (200, &json!(5), &held), "{first}");
    assert_eq!(hub.rows("ho_so"), Some((3, 0)), "the clean rows are loaded");
    let (status, again) = hub.post(TOKEN_A, &batch).await;
    assert_eq!((status, &again["applied_through"], &again["quarantined"]), (200, &json!(5), &held), "{again}");
    assert_eq!(hub.rows("ho_so"), Some((3, 0)));

    // Held again by a later batch: that batch's ack reports it, not a resend of the first.
    let mut later = ho_so_batch("so-y-te-01", 6, 6);
    later.changes[0].row = json!({"id": 2, "trang_thai": "??", "so_tien": "1"}).as_object().cloned();
    let (status, body) = hub.post(TOKEN_A, &later).await;
    assert_eq!((status, body["quarantined"][0]["key"].as_str()), (200, Some("{\"id\":2}")), "{body}");
    let (_, again) = hub.post(TOKEN_A, &batch).await;
    assert_eq!(again["quarantined"], json!([held[1]]), "{again}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_applies_only_the_new_part_and_gaps_are_refused() {
    let hub = TestHub::start(false).await;
    assert_eq!(hub.post(TOKEN_A, &ho_so_batch("so-y-te-01", 1, 5)).await.0, 200);

    // The agent re-batched 3..=8 after losing the ack for 1..=5.
    let mut overlap = ho_so_batch("so-y-te-01", 3, 8);
    for c in &mut overlap.changes {
        if let Some(row) = c.row.as_mut() {
            row.insert("trang_thai".into(), json!("Đang xử lý"));
        }
    }
    let (status, body) = hub.post(TOKEN_A, &overlap).await;
    assert_eq!((status, &body), (200, &json!({"applied_through": 8})));
    let changed: i64 = hub
        .warehouse()
        .query_row("SELECT count(*) FROM ho_so WHERE trang_thai = 'Đang xử lý'", [], |r| r.get(0))
        .expect("count");
    assert_eq!(changed, 3, "only seq 6..=8 applied");
    assert_eq!(hub.rows("ho_so"), Some((8, 0)));

    let (status, body) = hub.post(TOKEN_A, &ho_so_batch("so-y-te-01", 11, 12)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "sequence_gap");
    assert_eq!(body["expected_seq"], 9);
    assert_eq!(hub.ledger("so-y-te-01"), 8);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_permissions_are_enforced() {
    let hub = TestHub::start(false).await;
    let batch = ho_so_batch("so-y-te-01", 1, 2);
    let encoded = codec::encode(&batch).expect("encode");

    let (status, body) = hub.post_raw(None, encoded.body.clone(), Some(&encoded.digest_hex)).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = hub.post_raw(Some("wrong-token"), encoded.body.clone(), Some(&encoded.digest_hex)).await;
    assert_eq!(status, 401);

    // Token of another agent: the batch names so-y-te-01.
    let (status, body) = hub.post(TOKEN_B, &batch).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    // A dataset the agent may not write, mixed with one it may: nothing at all is written.
    let mut mixed = ho_so_batch("so-y-te-01", 1, 2);
    let mut schema = ho_so_schema();
    schema.dataset = "ngan_sach".into();
    mixed.schemas.push(schema);
    mixed.changes[1] = upsert(2, "ngan_sach", json!({"id": 1, "trang_thai": "x"}));
    let (status, body) = hub.post(TOKEN_A, &mixed).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("ngan_sach")), "{body}");
    assert_eq!(hub.rows("ho_so"), None, "no table was even created");
    assert_eq!(hub.ledger("so-y-te-01"), 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_and_write_nothing() {
    let hub = TestHub::start(false).await;
    let batch = ho_so_batch("so-y-te-01", 1, 3);
    let encoded = codec::encode(&batch).expect("encode");

    // Digest missing or not matching the body.
    let (status, body) = hub.post_raw(Some(TOKEN_A), encoded.body.clone(), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("digest_mismatch")));
    let mut tampered = encoded.body.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let (status, body) = hub.post_raw(Some(TOKEN_A), tampered, Some(&encoded.digest_hex)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("digest_mismatch")));

    // Garbage, truncated zstd, valid zstd of invalid JSON, JSON that breaks the protocol.
    let garbage = b"this is not zstd at all".to_vec();
    let truncated = encoded.body[..encoded.body.len() / 2].to_vec();
    let not_json = codec::compress(b"{\"v\":1,\"agent\":").expect("compress").body;
    let mut broken = batch.clone();
    broken.last_seq = 7;
    let broken = codec::encode(&broken).expect("encode").body;
    for body in [garbage, truncated, not_json, broken] {
        let digest = codec::sha256_hex(&body);
        let (status, reply) = hub.post_raw(Some(TOKEN_A), body, Some(&digest)).await;
        assert_eq!((status, reply["code"].as_str()), (400, Some("malformed")), "{reply}");
    }
    let mut v2 = batch.clone();
    v2.v = 2;
    let (status, reply) = hub.post(TOKEN_A, &v2).await;
    assert_eq!((status, reply["code"].as_str()), (400, Some("unsupported_version")));

    // Over the compressed limit: random bytes do not compress.
    let mut rng = fastrand::Rng::with_seed(7);
    let big: Vec<u8> = (0..MAX_BODY + 1).map(|_| rng.u8(..)).collect();
    let digest = codec::sha256_hex(&big);
    let (status, reply) = hub.post_raw(Some(TOKEN_A), big, Some(&digest)).await;
    assert_eq!((status, reply["code"].as_str()), (413, Some("too_large")));

    // A small body that decompresses past the decoded limit.
    let bomb = codec::compress(&vec![b' '; MAX_DECODED * 4]).expect("bomb");
    assert!(bomb.body.len() < MAX_BODY);
    let (status, reply) = hub.post_raw(Some(TOKEN_A), bomb.body, Some(&bomb.digest_hex)).await;
    assert_eq!((status, reply["code"].as_str()), (413, Some("too_large")));

    // Not declared as zstd.
    let resp = hub
        .client
        .post(format!("{}/v1/batches", hub.base))
        .bearer_auth(TOKEN_A)
        .header("content-type", kho_shared::protocol::BATCH_CONTENT_TYPE)
        .header(kho_shared::protocol::DIGEST_HEADER, &encoded.digest_hex)
        .body(encoded.body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);

    assert_eq!(hub.rows("ho_so"), None);
    assert_eq!(hub.ledger("so-y-te-01"), 0);
    // After all that, the real batch still goes through.
    assert_eq!(hub.post(TOKEN_A, &batch).await.0, 200);
    assert_eq!(hub.rows("ho_so"), Some((3, 0)));
    hub.stop().await;
}
