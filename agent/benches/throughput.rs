//! Agent benchmarks: `cargo bench -p kho-agent` (release profile; add a name to run one).
//!
//! - `end_to_end`: throughput and memory of the real binary, N source rows → a minimal
//!   in-process hub that acks everything (`KHO_BENCH_ROWS` sets N, default 1,000,000;
//!   `KHO_BENCH_MODE` = cursor | snapshot).
//! - `capture_only`: capture alone, no forwarding, to separate detection cost from transport
//!   cost (`KHO_BENCH_ROWS`, default 300,000).
//!
//! For the whole system (real hub, HTTPS, warehouse) see `tests/bench.sh`.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

async fn batches(State(ledger): State<Arc<AtomicU64>>, headers: HeaderMap, body: Bytes) -> String {
    let digest = headers[kho_shared::protocol::DIGEST_HEADER].to_str().unwrap().to_string();
    let batch = kho_shared::codec::decode(&body, &digest, 64 << 20).unwrap();
    ledger.fetch_max(batch.last_seq, Ordering::SeqCst);
    format!("{{\"applied_through\":{}}}", batch.last_seq)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument selects benchmarks by name.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let selected = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if selected("end_to_end") {
        end_to_end();
    }
    if selected("capture_only") {
        capture_only();
    }
}

fn end_to_end() {
    let rows: u64 = std::env::var("KHO_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mode = std::env::var("KHO_BENCH_MODE").unwrap_or_else(|_| "cursor".into());
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.sqlite");
    let conn = rusqlite::Connection::open(&src).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE ho_so (id INTEGER PRIMARY KEY, ma_ho_so TEXT NOT NULL, linh_vuc TEXT, don_vi TEXT,
            trang_thai TEXT, ngay_nhan DATE, so_tien NUMERIC, ghi_chu TEXT, updated_at TEXT NOT NULL);
         CREATE INDEX ho_so_updated_at ON ho_so(updated_at);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut stmt = tx.prepare("INSERT INTO ho_so VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)").unwrap();
        for id in 1..=rows {
            stmt.execute(rusqlite::params![
                id as i64,
                format!("000.00.{:02}.H52-260101-{id:07}", id % 17),
                "Cấp giấy phép hoạt động khám bệnh, chữa bệnh",
                "Trung tâm Y tế huyện Mộc Châu",
                "Đang xử lý",
                "2026-03-04",
                ((id % 500) * 10_000) as i64,
                format!("Hồ sơ số {id} — công dân nộp trực tuyến, đã kiểm tra đủ thành phần “hợp lệ”"),
                format!("2026-01-01T00:00:00.{id:09}Z"),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);

    let ledger = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route(kho_shared::protocol::BATCHES_PATH, post(batches))
        .route(kho_shared::protocol::HEARTBEAT_PATH, post(|| async { "" }))
        .with_state(Arc::clone(&ledger));
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cursor = if mode == "cursor" { "cursor_column = \"updated_at\"\n" } else { "" };
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"bench\"\ndata_dir = \"data\"\n[hub]\nurl = \"{url}\"\ntoken = \"t\"\ninsecure_dev = true\n\
             [[dataset]]\nname = \"ho_so\"\ntable = \"ho_so\"\nkey = [\"id\"]\nmode = \"{mode}\"\n{cursor}poll_interval = \"1s\"\n\
             [dataset.source]\nkind = \"sqlite\"\npath = \"src.sqlite\"\n"
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kho-agent"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut peak = 0;
    while ledger.load(Ordering::SeqCst) < rows {
        assert!(Instant::now() < deadline, "timed out at {} of {rows}", ledger.load(Ordering::SeqCst));
        peak = peak.max(rss_kib(pid, "VmHWM:"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    peak = peak.max(rss_kib(pid, "VmHWM:"));
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_kib(pid, "VmRSS:");
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let status = child.wait().unwrap();
    println!(
        "{mode}: {rows} rows in {:.2} s = {:.0} rows/s; peak RSS {} MiB; RSS after drain {} MiB; exit {status}",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        peak / 1024,
        idle / 1024
    );
    assert!(status.success());
}

/// Capture alone (no forwarding), to separate detection cost from transport cost.
fn capture_only() {
    use kho_agent::config::{DatasetConfig, Mode, SourceConfig};
    use kho_agent::detect::Capture;
    use kho_agent::outbox::Outbox;
    let rows: i64 = std::env::var("KHO_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.sqlite");
    let conn = rusqlite::Connection::open(&src).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, ten TEXT, updated_at TEXT);").unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for id in 1..=rows {
        tx.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            rusqlite::params![
                id,
                format!("Hồ sơ số {id} — công dân nộp trực tuyến, đã kiểm tra đủ thành phần “hợp lệ”"),
                format!("2026-01-01T00:00:00.{id:09}Z")
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    for mode in [Mode::Cursor, Mode::Snapshot] {
        let config = DatasetConfig {
            name: "t".into(),
            table: Some("t".into()),
            query: None,
            key: vec!["id".into()],
            mode,
            cursor_column: (mode == Mode::Cursor).then(|| "updated_at".into()),
            poll_interval: Duration::from_secs(1),
            schedule: None,
            source: SourceConfig::Sqlite { path: src.clone() },
            text: Default::default(),
            cdc: Default::default(),
        };
        let outbox = Outbox::open(&dir.path().join(format!("{mode:?}.sqlite"))).unwrap();
        let mut cap = Capture::new(config, outbox, u64::MAX, Default::default(), Box::new(|| {})).unwrap();
        let start = Instant::now();
        let r = cap.poll().unwrap();
        let first = start.elapsed();
        let start = Instant::now();
        cap.poll().unwrap();
        println!(
            "{mode:?}: first poll {} rows {:.0} rows/s; idle poll {:?}",
            r.changes,
            rows as f64 / first.as_secs_f64(),
            start.elapsed()
        );
    }
}
