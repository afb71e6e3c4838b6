//! Hub apply throughput: `cargo bench -p kho-hub` (release profile). An initial sync of many
//! rows, sent as an agent sends them (`KHO_BENCH_BATCH` changes per batch, default 20,000 like the
//! agent's default, one batch at a time). `KHO_BENCH_ROWS` sets the row count, default 1,000,000.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;
use kho_shared::protocol::{Batch, Column, DatasetSchema};
use kho_shared::types::ColumnType;
use serde_json::json;

fn schema() -> DatasetSchema {
    let col = |name: &str, ty| Column { name: name.into(), ty };
    DatasetSchema {
        privacy: Default::default(),
        dataset: "ho_so".into(),
        key: vec!["id".into()],
        columns: vec![
            col("id", ColumnType::Int),
            col("ma_ho_so", ColumnType::Text),
            col("linh_vuc", ColumnType::Text),
            col("don_vi", ColumnType::Text),
            col("trang_thai", ColumnType::Text),
            col("ngay_nhan", ColumnType::Date),
            col("ngay_hen_tra", ColumnType::Date),
            col("so_tien", ColumnType::Decimal),
            col("ghi_chu", ColumnType::Text),
            col("updated_at", ColumnType::Timestamp),
        ],
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(initial_sync_throughput());
}

async fn initial_sync_throughput() {
    let rows: u64 = std::env::var("KHO_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let batch_size: u64 = std::env::var("KHO_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let hub = TestHub::start_with(false, 16 << 20, 128 << 20).await;
    let mut encode_time = std::time::Duration::ZERO;
    let start = Instant::now();
    let mut first = 1;
    while first <= rows {
        let last = (first + batch_size - 1).min(rows);
        let t = Instant::now();
        let changes = (first..=last)
            .map(|id| {
                upsert(
                    id,
                    "ho_so",
                    json!({
                        "id": id, "ma_ho_so": format!("000.00.17.H52-240312-{id:06}"),
                        "linh_vuc": "Cấp giấy phép hoạt động khám bệnh, chữa bệnh",
                        "don_vi": "Trung tâm Y tế huyện Mộc Châu", "trang_thai": "Đang xử lý",
                        "ngay_nhan": "2024-03-12", "ngay_hen_tra": "2024-03-27", "so_tien": "1500000",
                        "ghi_chu": "Hồ sơ nộp trực tuyến qua Cổng Dịch vụ công quốc gia",
                        "updated_at": "2024-03-12T08:15:30.123Z"
                    }),
                )
            })
            .collect();
        let batch = Batch {
            v: 1,
            agent: "so-y-te-01".into(),
            first_seq: first,
            last_seq: last,
            created_at_ms: 0,
            schemas: vec![schema()],
            changes,
        };
        let encoded = kho_shared::codec::encode(&batch).expect("encode");
        encode_time += t.elapsed();
        let (status, body) = hub.post_raw(Some(TOKEN_A), encoded.body, Some(&encoded.digest_hex)).await;
        assert_eq!(status, 200, "{body}");
        first = last + 1;
    }
    let total = start.elapsed();
    let hub_time = total - encode_time;
    println!(
        "{rows} rows: {:.2?} total, {:.2?} in the hub (excluding client-side encoding) → {:.0} rows/s",
        total,
        hub_time,
        rows as f64 / hub_time.as_secs_f64()
    );
    let metrics = hub.client.get(format!("{}/metrics", hub.base)).send().await.expect("metrics");
    let text = metrics.text().await.expect("text");
    for line in text.lines().filter(|l| l.starts_with("kho_hub_apply_latency")) {
        println!("{line}");
    }
    assert_eq!(hub.rows("ho_so"), Some((rows as i64, 0)));
    hub.stop().await;
}
