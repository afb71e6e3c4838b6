//! Schema evolution, soft deletes and the status API, through the real HTTP interface.

mod common;

use common::*;
use kho_shared::protocol::{Batch, Column, DatasetReport, HEARTBEAT_PATH, Heartbeat};
use kho_shared::types::ColumnType;
use serde_json::json;

fn batch(first: u64, schema: kho_shared::protocol::DatasetSchema, changes: Vec<kho_shared::protocol::Change>) -> Batch {
    Batch {
        v: 1,
        agent: "so-y-te-01".into(),
        first_seq: first,
        last_seq: first + changes.len() as u64 - 1,
        created_at_ms: 0,
        schemas: vec![schema],
        changes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_columns_are_added_and_key_changes_refused() {
    let hub = TestHub::start(false).await;
    assert_eq!(hub.post(TOKEN_A, &ho_so_batch("so-y-te-01", 1, 2)).await.0, 200);

    let mut wider = ho_so_schema();
    wider.columns.push(Column { name: "ghi_chu".into(), ty: ColumnType::Text });
    let b = batch(3, wider, vec![upsert(3, "ho_so", json!({"id": 3, "ghi_chu": "Bổ sung hồ sơ"}))]);
    let (status, body) = hub.post(TOKEN_A, &b).await;
    assert_eq!(status, 200, "{body}");
    let (note, old_note, trang_thai): (String, Option<String>, Option<String>) = hub
        .warehouse()
        .query_row(
            "SELECT (SELECT ghi_chu FROM ho_so WHERE id = 3), (SELECT ghi_chu FROM ho_so WHERE id = 1), \
             (SELECT trang_thai FROM ho_so WHERE id = 3)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    assert_eq!((note.as_str(), old_note, trang_thai), ("Bổ sung hồ sơ", None, None), "absent columns are NULL");

    let mut rekeyed = ho_so_schema();
    rekeyed.key = vec!["trang_thai".into()];
    let b = batch(4, rekeyed, vec![upsert(4, "ho_so", json!({"id": 4, "trang_thai": "x"}))]);
    let (status, body) = hub.post(TOKEN_A, &b).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("schema_conflict")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("primary key")), "{body}");
    assert_eq!(hub.ledger("so-y-te-01"), 3, "nothing of the refused batch was written");
    assert_eq!(hub.rows("ho_so"), Some((3, 0)));

    // Another dataset of the same agent is unaffected.
    let mut thuoc = ho_so_schema();
    thuoc.dataset = "thuoc".into();
    let b = batch(4, thuoc, vec![upsert(4, "thuoc", json!({"id": 1, "trang_thai": "Còn hàng"}))]);
    assert_eq!(hub.post(TOKEN_A, &b).await.0, 200);
    assert_eq!(hub.rows("thuoc"), Some((1, 0)));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_soft_and_advance_the_ledger() {
    let hub = TestHub::start(false).await;
    assert_eq!(hub.post(TOKEN_A, &ho_so_batch("so-y-te-01", 1, 3)).await.0, 200);
    let b =
        batch(4, ho_so_schema(), vec![delete(4, "ho_so", json!({"id": 2})), delete(5, "ho_so", json!({"id": 404}))]);
    let (status, body) = hub.post(TOKEN_A, &b).await;
    assert_eq!((status, &body), (200, &json!({"applied_through": 5})));
    assert_eq!(hub.rows("ho_so"), Some((2, 1)));
    let (deleted, seq, kept): (i64, i64, String) = hub
        .warehouse()
        .query_row("SELECT _kho_deleted, _kho_seq, trang_thai FROM ho_so WHERE id = 2", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("row");
    assert_eq!((deleted, seq, kept.as_str()), (1, 4, "Đã tiếp nhận"), "values kept on soft delete");
    let b = batch(6, ho_so_schema(), vec![upsert(6, "ho_so", json!({"id": 2, "trang_thai": "Đang xử lý"}))]);
    assert_eq!(hub.post(TOKEN_A, &b).await.0, 200);
    assert_eq!(hub.rows("ho_so"), Some((3, 0)), "an upsert revives a deleted row");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_rows_and_last_contact_after_a_heartbeat() {
    let hub = TestHub::start(false).await;
    assert_eq!(hub.post(TOKEN_A, &ho_so_batch("so-y-te-01", 1, 4)).await.0, 200);
    let b = batch(5, ho_so_schema(), vec![delete(5, "ho_so", json!({"id": 1}))]);
    assert_eq!(hub.post(TOKEN_A, &b).await.0, 200);

    let hb = Heartbeat {
        v: 1,
        agent: "so-y-te-01".into(),
        version: "0.1.0".into(),
        sent_at_ms: 1_735_689_600_000,
        outbox_depth: 7,
        acked_through: 5,
        datasets: vec![DatasetReport {
            dataset: "ho_so".into(),
            last_ok_poll_at_ms: Some(1_735_689_600_000),
            captured_through_seq: 5,
            last_error: None,
            null_cursor_rows: 0,
            cdc: None,
        }],
    };
    let url = format!("{}{HEARTBEAT_PATH}", hub.base);
    let resp = hub
        .client
        .post(&url)
        .bearer_auth(TOKEN_A)
        .body(serde_json::to_vec(&hb).expect("json"))
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = hub
        .client
        .post(&url)
        .bearer_auth(TOKEN_B)
        .body(serde_json::to_vec(&hb).expect("json"))
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(resp.status().as_u16(), 403, "a heartbeat for another agent");
    let resp = hub.client.post(&url).bearer_auth(TOKEN_A).body("{").send().await.expect("heartbeat");
    assert_eq!(resp.status().as_u16(), 400);

    let status = hub.get_json("/api/v1/status").await;
    let ds = &status["datasets"][0];
    assert_eq!(ds["dataset"], "ho_so");
    assert_eq!((ds["rows"].as_u64(), ds["deleted_rows"].as_u64()), (Some(3), Some(1)));
    assert_eq!(ds["last_seq"], 5);
    assert_eq!(ds["last_agent"], "so-y-te-01");
    assert_eq!(ds["last_ok_poll_at"], "2025-01-01T00:00:00.000Z");
    assert!(ds["last_contact_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{ds}");
    assert_eq!(ds["columns"][0], json!({"name": "id", "type": "int"}));
    let agent = status["agents"].as_array().and_then(|a| a.iter().find(|a| a["id"] == "so-y-te-01")).expect("agent");
    assert_eq!(agent["applied_through"], 5);
    assert_eq!(agent["outbox_depth"], 7);
    assert_eq!(agent["version"], "0.1.0");
    assert!(agent["last_seen_at"].is_string());
    assert!(status["generated_at"].is_string());
    let idle = status["agents"].as_array().and_then(|a| a.iter().find(|a| a["id"] == "so-tai-chinh")).expect("idle");
    assert!(idle["last_seen_at"].is_null());
    hub.stop().await;
}
