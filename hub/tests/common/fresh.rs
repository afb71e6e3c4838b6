//! A hub with a catalogue, an injected [`ManualClock`] and a fast evaluator, plus a real local
//! webhook receiver; helpers to move the clock and wait for the evaluator to catch up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kho_hub::clock::ManualClock;
use kho_shared::protocol::{DatasetReport, HEARTBEAT_PATH, Heartbeat};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{TOKEN_A, TOKEN_B};

pub const CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0008", email = "so_y_te@sonla.example" }

[[department]]
code = "so_tai_chinh"
name = "Sở Tài chính"
contact = { name = "Văn phòng Sở", email = "so_tai_chinh@sonla.example" }

[[department]]
code = "vp_ubnd"
name = "Văn phòng UBND tỉnh"
contact = { name = "Phòng Tổ chức - Hành chính - Quản trị", phone = "0212 385 0001" }

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
agents = ["so-y-te-01"]
cadence = "monthly"
deadline = { day = 5, time = "17:00" }
update_kind = "change"

[[dataset]]
id = "ngan_sach"
title = "Thu, chi ngân sách"
department = "so_tai_chinh"
cadence = "monthly"
deadline = { day = 5, time = "17:00" }
update_kind = "sync"
freshness_field = "ky_bao_cao"

[[scenario]]
id = "kb_y_te"
title = "Y tế cộng đồng"
office = "vp_ubnd"
inputs = [{ dataset = "ho_so", max_staleness = "2 months" }]
"#;

/// Local Sơn La time → instant.
pub fn local(s: &str) -> Timestamp {
    format!("{s}+07:00").parse().expect("local time")
}

/// A webhook receiver that answers 503 to its first `fail_first` calls.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Value>>>,
    pub calls: Arc<Mutex<u32>>,
}

impl Receiver {
    pub async fn start(fail_first: u32) -> Receiver {
        Receiver::serve(fail_first, None).await
    }

    /// The same receiver over HTTPS, with a certificate from a fresh local CA under `tls_dir`
    /// (`<tls_dir>/ca.pem` is what the hub must trust).
    pub async fn start_tls(fail_first: u32, tls_dir: &std::path::Path) -> Receiver {
        kho_hub::tls::install_crypto_provider();
        let paths = kho_hub::tls::ensure_self_signed(tls_dir, &[]).expect("receiver certificate");
        let config = kho_hub::tls::server_config(&paths.cert, &paths.key).expect("receiver TLS config");
        Receiver::serve(fail_first, Some(config)).await
    }

    async fn serve(fail_first: u32, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        use axum::http::StatusCode;
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let calls: Arc<Mutex<u32>> = Arc::default();
        let (r, c) = (Arc::clone(&received), Arc::clone(&calls));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (r, c) = (Arc::clone(&r), Arc::clone(&c));
                async move {
                    let n = {
                        let mut calls = c.lock().expect("calls");
                        *calls += 1;
                        *calls
                    };
                    if n <= fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v: Value = serde_json::from_slice(&body).expect("alert JSON");
                    r.lock().expect("received").push(v);
                    StatusCode::OK
                }
            }),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let scheme = match tls {
            None => {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::spawn(async move { axum::serve(listener, app).await });
                "http"
            }
            Some(config) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
                let server = axum_server::tls_rustls::from_tcp_rustls(listener, config).expect("tls listener");
                tokio::spawn(async move { server.serve(app.into_make_service()).await });
                "https"
            }
        };
        Receiver { url: format!("{scheme}://localhost:{}/hook", addr.port()), received, calls }
    }

    pub fn kinds(&self) -> Vec<String> {
        let got = self.received.lock().expect("received");
        got.iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    a["kind"].as_str().unwrap_or("?"),
                    a["dataset"].as_str().or(a["agent"].as_str()).unwrap_or("?")
                )
            })
            .collect()
    }

    /// Waits until `n` alerts of `kind` about `subject` arrived; returns the `n`th.
    pub async fn wait_for_nth(&self, kind: &str, subject: &str, n: usize) -> Value {
        for _ in 0..400 {
            let found: Vec<Value> = self
                .received
                .lock()
                .expect("received")
                .iter()
                .filter(|a| a["kind"] == kind && (a["dataset"] == subject || a["agent"] == subject))
                .cloned()
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {kind} alert number {n} for {subject}; got {:?}", self.kinds());
    }

    /// Waits until an alert of `kind` about `subject` arrived.
    pub async fn wait_for(&self, kind: &str, subject: &str) -> Value {
        for _ in 0..400 {
            let found = self
                .received
                .lock()
                .expect("received")
                .iter()
                .find(|a| a["kind"] == kind && (a["dataset"] == subject || a["agent"] == subject))
                .cloned();
            if let Some(a) = found {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {kind} alert for {subject}; got {:?}", self.kinds());
    }
}

/// How a [`FreshHub`] is set up.
#[derive(Debug, Clone, Default)]
pub struct FreshOptions {
    pub webhook: Option<String>,
    /// CA the hub trusts for an `https` webhook (`alerts.ca_cert`).
    pub webhook_ca: Option<PathBuf>,
    /// `alerts.digest_at`.
    pub digest_at: Option<String>,
    /// Serve the API over HTTPS with the hub's self-signed CA instead of plain HTTP.
    pub https: bool,
}

pub struct FreshHub {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    options: FreshOptions,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kho_hub::HubError>>,
}

impl FreshHub {
    pub async fn start(catalog: &str, webhook: Option<&str>, start: Timestamp) -> FreshHub {
        let options = FreshOptions { webhook: webhook.map(str::to_string), ..FreshOptions::default() };
        FreshHub::start_with(catalog, options, start).await
    }

    pub async fn start_with(catalog: &str, options: FreshOptions, start: Timestamp) -> FreshHub {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("catalog.toml"), catalog).expect("catalog");
        FreshHub::launch(dir, options, Arc::new(ManualClock::new(start))).await
    }

    /// Stops the hub and starts it again on the same data directory and clock.
    pub async fn restart(self) -> FreshHub {
        let FreshHub { dir, clock, options, shutdown, task, .. } = self;
        shutdown.cancel();
        task.await.expect("hub task").expect("hub stopped cleanly");
        let _gone = std::fs::remove_file(kho_hub::listen_addr_file(&dir.path().join("data")));
        FreshHub::launch(dir, options, clock).await
    }

    async fn launch(dir: tempfile::TempDir, options: FreshOptions, clock: Arc<ManualClock>) -> FreshHub {
        let mut alerts = String::new();
        if let Some(u) = &options.webhook {
            alerts = format!("[alerts]\nwebhook_url = \"{u}\"\nmax_backoff = \"1s\"\n");
            if let Some(ca) = &options.webhook_ca {
                alerts.push_str(&format!("ca_cert = \"{}\"\n", ca.display()));
            }
            if let Some(at) = &options.digest_at {
                alerts.push_str(&format!("digest_at = \"{at}\"\n"));
            }
        }
        let text = format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\ninsecure_dev_http = {}\n\
             [catalog]\npath = \"catalog.toml\"\nreload_interval = \"20ms\"\n\
             [freshness]\nevaluate_interval = \"20ms\"\nagent_offline_after = \"3days\"\n{alerts}\
             [[agent]]\nid = \"so-y-te-01\"\ntoken = \"{TOKEN_A}\"\ndatasets = []\n\
             [[agent]]\nid = \"so-tai-chinh\"\ntoken = \"{TOKEN_B}\"\ndatasets = [\"ngan_sach\"]\n",
            !options.https
        );
        let config = kho_hub::HubConfig::from_toml_str(&text, dir.path(), "test").expect("config");
        let hooks = kho_hub::Hooks { clock: clock.clone(), ..kho_hub::Hooks::default() };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kho_hub::run_with(config, hooks, shutdown.clone()));
        let addr_file = kho_hub::listen_addr_file(&dir.path().join("data"));
        let mut addr = String::new();
        for _ in 0..400 {
            if let Ok(t) = std::fs::read_to_string(&addr_file) {
                addr = t.trim().to_string();
                break;
            }
            assert!(!task.is_finished(), "hub stopped during startup");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(!addr.is_empty(), "hub did not start");
        let (base, client) = if options.https {
            kho_hub::tls::install_crypto_provider();
            let pem = std::fs::read(dir.path().join("data/tls/ca.pem")).expect("hub CA");
            let ca = reqwest::Certificate::from_pem(&pem).expect("CA pem");
            (format!("https://{addr}"), reqwest::Client::builder().tls_certs_only([ca]).build().expect("client"))
        } else {
            (format!("http://{addr}"), reqwest::Client::new())
        };
        FreshHub { dir, base, client, clock, options, shutdown, task }
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.dir.path().join("catalog.toml")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.expect("get");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("text");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn json(&self, path: &str) -> Value {
        let (status, v) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Moves the clock to `t` and waits until the evaluator has judged at `t`.
    pub async fn at(&self, t: Timestamp) {
        self.clock.set(t);
        for _ in 0..400 {
            let v = self.json("/api/v1/freshness").await;
            if v["evaluated_at"].as_str().and_then(|s| s.parse::<Timestamp>().ok()) == Some(t) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the evaluator did not run at {t}");
    }

    /// The freshness entry of one dataset.
    pub async fn dataset(&self, id: &str) -> Value {
        let v = self.json("/api/v1/freshness").await;
        v["datasets"].as_array().and_then(|d| d.iter().find(|d| d["dataset"] == id)).cloned().expect("dataset")
    }

    pub async fn heartbeat(&self, token: &str, agent: &str, reports: Vec<DatasetReport>) {
        let hb = Heartbeat {
            v: 1,
            agent: agent.into(),
            version: "test".into(),
            sent_at_ms: self.clock_ms(),
            outbox_depth: 0,
            acked_through: 0,
            datasets: reports,
        };
        let url = format!("{}{HEARTBEAT_PATH}", self.base);
        let resp = self
            .client
            .post(url)
            .bearer_auth(token)
            .body(serde_json::to_vec(&hb).expect("json"))
            .send()
            .await
            .expect("hb");
        assert_eq!(resp.status().as_u16(), 200);
    }

    pub fn clock_ms(&self) -> i64 {
        use kho_hub::clock::Clock;
        self.clock.now().as_millisecond()
    }

    pub async fn post(&self, token: &str, batch: &kho_shared::protocol::Batch) -> (u16, Value) {
        let enc = kho_shared::codec::encode(batch).expect("encode");
        let resp = self
            .client
            .post(format!("{}{}", self.base, kho_shared::protocol::BATCHES_PATH))
            .bearer_auth(token)
            .header("content-encoding", "zstd")
            .header("content-type", kho_shared::protocol::BATCH_CONTENT_TYPE)
            .header(kho_shared::protocol::DIGEST_HEADER, enc.digest_hex)
            .body(enc.body)
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        (status, serde_json::from_str(&resp.text().await.expect("text")).unwrap_or(Value::Null))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("hub task").expect("hub stopped cleanly");
    }
}
