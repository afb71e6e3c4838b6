//! A hub started in-process on port 0 with a temporary data directory, and helpers to build and
//! send batches the way an agent does.

#![allow(dead_code)]

pub mod fresh;
pub mod pg;

use std::path::PathBuf;
use std::time::Duration;

use kho_shared::codec::{self, EncodedBody};
use kho_shared::protocol::{BATCHES_PATH, Batch, Change, Column, DIGEST_HEADER, DatasetSchema, Op};
use kho_shared::types::ColumnType;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const TOKEN_A: &str = "token-of-so-y-te-01";
pub const TOKEN_B: &str = "token-of-so-tai-chinh";
/// Small limits so the size tests stay fast.
pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_DECODED: usize = 1024 * 1024;

pub struct TestHub {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kho_hub::HubError>>,
}

impl TestHub {
    /// Starts a hub; `tls` chooses HTTPS with the generated CA, else plain HTTP.
    pub async fn start(tls: bool) -> TestHub {
        TestHub::start_with(tls, MAX_BODY, MAX_DECODED).await
    }

    /// Starts a hub with the given body limits.
    pub async fn start_with(tls: bool, max_body: usize, max_decoded: usize) -> TestHub {
        TestHub::start_full(tls, max_body, max_decoded, None).await
    }

    /// Starts a hub whose catalogue is `catalog` (TOML, written to `catalog.toml`).
    pub async fn start_with_catalog(catalog: &str) -> TestHub {
        TestHub::start_full(true, MAX_BODY, MAX_DECODED, Some(catalog)).await
    }

    async fn start_full(tls: bool, max_body: usize, max_decoded: usize, catalog: Option<&str>) -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut catalog_section = String::new();
        if let Some(text) = catalog {
            std::fs::write(dir.path().join("catalog.toml"), text).expect("catalog");
            catalog_section = "[catalog]\npath = \"catalog.toml\"\n".into();
        }
        let text = format!(
            r#"
            [hub]
            listen = "127.0.0.1:0"
            data_dir = "data"
            insecure_dev_http = {insecure}
            [limits]
            max_body_bytes = {max_body}
            max_decoded_bytes = {max_decoded}
            request_timeout = "20s"
            [[agent]]
            id = "so-y-te-01"
            token = "{TOKEN_A}"
            datasets = ["ho_so", "thuoc"]
            [[agent]]
            id = "so-tai-chinh"
            token = "{TOKEN_B}"
            datasets = ["ngan_sach"]
            {catalog_section}
            "#,
            insecure = !tls
        );
        let config = kho_hub::HubConfig::from_toml_str(&text, dir.path(), "test").expect("config");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kho_hub::run(config, shutdown.clone()));
        let addr_file = kho_hub::listen_addr_file(&dir.path().join("data"));
        let mut addr = String::new();
        for _ in 0..200 {
            if let Ok(t) = std::fs::read_to_string(&addr_file) {
                addr = t.trim().to_string();
                break;
            }
            if task.is_finished() {
                panic!("hub stopped during startup: {:?}", task.await);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!addr.is_empty(), "hub did not write {}", addr_file.display());
        let client = if tls {
            kho_hub::tls::install_crypto_provider();
            let pem = std::fs::read(dir.path().join("data/tls/ca.pem")).expect("ca.pem");
            let ca = reqwest::Certificate::from_pem(&pem).expect("ca");
            reqwest::Client::builder().tls_certs_only([ca]).build().expect("client")
        } else {
            reqwest::Client::new()
        };
        let port = addr.rsplit(':').next().expect("port");
        let base = if tls { format!("https://localhost:{port}") } else { format!("http://{addr}") };
        TestHub { dir, base, client, shutdown, task }
    }

    pub fn warehouse_path(&self) -> PathBuf {
        self.dir.path().join("data/warehouse.sqlite")
    }

    pub fn warehouse(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.warehouse_path()).expect("open warehouse")
    }

    /// `(live, deleted)` rows of a dataset, or None if it has no table.
    pub fn rows(&self, dataset: &str) -> Option<(i64, i64)> {
        self.warehouse()
            .query_row(
                &format!(
                    "SELECT coalesce(sum(_kho_deleted = 0), 0), coalesce(sum(_kho_deleted), 0) FROM \"{dataset}\""
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    }

    pub fn ledger(&self, agent: &str) -> i64 {
        self.warehouse()
            .query_row("SELECT applied_seq FROM _kho_ledger WHERE agent = ?1", [agent], |r| r.get(0))
            .unwrap_or(0)
    }

    /// Sends an encoded body with the given token and digest.
    pub async fn post_raw(&self, token: Option<&str>, body: Vec<u8>, digest: Option<&str>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{BATCHES_PATH}", self.base))
            .header("content-encoding", "zstd")
            .header("content-type", kho_shared::protocol::BATCH_CONTENT_TYPE)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(d) = digest {
            req = req.header(DIGEST_HEADER, d);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn post(&self, token: &str, batch: &Batch) -> (u16, Value) {
        let EncodedBody { body, digest_hex, .. } = codec::encode(batch).expect("encode");
        self.post_raw(Some(token), body, Some(&digest_hex)).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.expect("get");
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        serde_json::from_str(&resp.text().await.expect("text")).expect("json")
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = self.task.await.expect("hub task");
        result.expect("hub stopped cleanly");
    }
}

pub fn ho_so_schema() -> DatasetSchema {
    DatasetSchema {
        privacy: Default::default(),
        dataset: "ho_so".into(),
        key: vec!["id".into()],
        columns: vec![
            Column { name: "id".into(), ty: ColumnType::Int },
            Column { name: "trang_thai".into(), ty: ColumnType::Text },
            Column { name: "so_tien".into(), ty: ColumnType::Decimal },
        ],
    }
}

pub fn upsert(seq: u64, dataset: &str, row: Value) -> Change {
    Change { seq, dataset: dataset.into(), op: Op::Upsert, key: None, row: row.as_object().cloned() }
}

pub fn delete(seq: u64, dataset: &str, key: Value) -> Change {
    Change { seq, dataset: dataset.into(), op: Op::Delete, key: key.as_object().cloned(), row: None }
}

/// A batch of `ho_so` upserts with ids equal to their sequence numbers.
pub fn ho_so_batch(agent: &str, first: u64, last: u64) -> Batch {
    let changes = (first..=last)
        .map(|seq| upsert(seq, "ho_so", json!({"id": seq, "trang_thai": "Đã tiếp nhận", "so_tien": "1500000.50"})))
        .collect();
    Batch {
        v: 1,
        agent: agent.into(),
        first_seq: first,
        last_seq: last,
        created_at_ms: 0,
        schemas: vec![ho_so_schema()],
        changes,
    }
}
