//! Helpers for the security tests: play an operator (`kho-hub agent add`), an agent (keys,
//! enrollment, signed batches) and an attacker (every part of a request may be wrong), and read
//! back what the warehouse and the audit log hold.

#![allow(clippy::unwrap_used)]

use kho_shared::codec::EncodedBody;
use kho_shared::protocol::{BATCH_CONTENT_TYPE, Batch, Change, Column, DIGEST_HEADER, DatasetSchema, Op};
use kho_shared::signing::{SIGNATURE_HEADER, Signer};
use kho_shared::types::ColumnType;
use serde_json::{Value, json};

use crate::procs::HubProc;

/// `kho-hub agent add`; returns the enrollment token it printed.
pub fn add_agent(hub: &HubProc, id: &str, datasets: &str, expires: &str) -> String {
    let out =
        hub.command(&["agent", "add", id, "--department", "so_y_te", "--datasets", datasets, "--expires", expires]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "agent add failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().find(|l| l.starts_with("kho-enroll-")).unwrap_or_else(|| panic!("no token in {stdout}")).to_string()
}

/// A fresh Ed25519 key for `agent` (what `kho-agent enroll` generates).
pub fn new_key(agent: &str) -> Signer {
    new_key_pem(agent).0
}

/// A fresh key and its private key as PEM (for a TLS client identity).
pub fn new_key_pem(agent: &str) -> (Signer, String) {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
    let pem = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519).unwrap().serialize_pem();
    (Signer::from_pkcs8(agent, pkcs8.as_ref()).unwrap(), pem)
}

/// A client presenting `cert_pem` with `key_pem` (and trusting the hub's CA).
pub fn client_with_cert(hub: &HubProc, cert_pem: &str, key_pem: &str) -> reqwest::Client {
    let identity = reqwest::Identity::from_pem(format!("{cert_pem}{key_pem}").as_bytes()).unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(hub.ca_path()).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).identity(identity).build().unwrap()
}

pub fn client(hub: &HubProc) -> reqwest::Client {
    hub.client()
}

pub async fn reply(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&body)})))
}

pub async fn enroll(http: &reqwest::Client, hub: &HubProc, agent: &str, token: &str, key: &Signer) -> (u16, Value) {
    let body = json!({"v": 1, "agent": agent, "token": token, "public_key": key.public_key_hex(), "version": "test"});
    let req = http.post(format!("{}/v1/enroll", hub.url())).header("content-type", "application/json");
    reply(req.body(body.to_string()).send().await.unwrap()).await
}

/// One batch request, every part of which a case may get wrong.
pub struct Post<'a> {
    pub token: &'a str,
    pub body: Vec<u8>,
    pub digest: String,
    pub signature: Option<String>,
    pub content_type: &'a str,
}

impl<'a> Post<'a> {
    pub fn signed(token: &'a str, encoded: &EncodedBody, key: &Signer) -> Post<'a> {
        Post {
            token,
            body: encoded.body.to_vec(),
            digest: encoded.digest_hex.clone(),
            signature: Some(key.sign(&encoded.digest_hex).unwrap()),
            content_type: BATCH_CONTENT_TYPE,
        }
    }

    pub async fn send(self, http: &reqwest::Client, hub: &HubProc) -> (u16, Value) {
        let mut req = http
            .post(format!("{}/v1/batches", hub.url()))
            .bearer_auth(self.token)
            .header("content-type", self.content_type)
            .header("content-encoding", "zstd")
            .header(DIGEST_HEADER, &self.digest)
            .body(self.body);
        if let Some(sig) = &self.signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        reply(req.send().await.unwrap()).await
    }
}

pub fn batch(agent: &str, dataset: &str, first: u64, last: u64) -> Batch {
    Batch {
        v: 1,
        agent: agent.into(),
        first_seq: first,
        last_seq: last,
        created_at_ms: 0,
        schemas: vec![DatasetSchema {
            privacy: Default::default(),
            dataset: dataset.into(),
            key: vec!["id".into()],
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::Int },
                Column { name: "trang_thai".into(), ty: ColumnType::Text },
            ],
        }],
        changes: (first..=last)
            .map(|seq| Change {
                seq,
                dataset: dataset.into(),
                op: Op::Upsert,
                key: None,
                row: Some(json!({"id": seq, "trang_thai": "Đã tiếp nhận"}).as_object().unwrap().clone()),
            })
            .collect(),
    }
}

/// What a refusal must leave untouched: every row of `ho_so` and the ledger.
pub fn warehouse_state(hub: &HubProc, agent: &str) -> (Vec<(i64, String, i64)>, u64) {
    let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
    let rows = conn
        .prepare("SELECT id, trang_thai, _kho_seq FROM ho_so ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .unwrap_or_default();
    (rows, hub.ledger(agent))
}

pub fn audit_rows(hub: &HubProc) -> Vec<(String, Option<String>, String)> {
    let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
    let mut stmt = conn.prepare("SELECT kind, agent, detail FROM _kho_audit ORDER BY seq").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

pub fn assert_refused(got: (u16, Value), status: u16, code: &str, reason: &str) {
    assert_eq!(got.0, status, "{got:?}");
    assert_eq!(got.1["code"].as_str(), Some(code), "{got:?}");
    let message = got.1["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "expected {reason:?} in {message:?}");
}

/// A body sent as is (not produced by the codec), with its true digest.
pub fn raw_body(body: Vec<u8>) -> EncodedBody {
    EncodedBody { digest_hex: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)), raw_len: body.len(), body }
}

pub fn random_text(n: usize) -> String {
    (0..n).map(|_| fastrand::alphanumeric()).collect()
}

/// An agent in `dir` that syncs the SQLite `ho_so` table at `source` (snapshot mode) and keeps its
/// credentials under `secrets/`, where `kho-agent enroll` writes them. `url` and `ca`: where its
/// batches go (the hub, or an MQTT broker); `hub_extra`: its `[hub]` lines besides `url` and
/// `ca_cert` (credential paths, transport, certificates). Configured, not started.
pub fn configure_enrolled_agent(
    dir: &std::path::Path,
    id: &str,
    url: &str,
    ca: &std::path::Path,
    source: &std::path::Path,
    hub_extra: String,
    poll_interval: &'static str,
) -> crate::procs::AgentProc {
    use crate::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec};
    let spec = AgentSpec { id: id.into(), token: String::new(), datasets: vec!["ho_so".into()] };
    let opts = AgentOptions { poll_interval, hub_extra, ..AgentOptions::default() };
    let ds = DatasetSpec { name: "ho_so".into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None };
    let source_toml = format!("kind = \"sqlite\"\npath = \"{}\"\n", source.display());
    AgentProc::configure(dir, &spec, url, ca, &ds.toml(&source_toml, &opts), &opts)
}

/// The `[hub]` credential lines of an enrolled HTTPS agent (token, signing key, hub-issued certificate).
pub const ENROLLED_HTTPS: &str =
    "token_file = \"secrets/access.token\"\nsigning_key = \"secrets/agent.key\"\nclient_cert = \"secrets/agent.crt\"\n";

/// `kho-hub hash-password`: the argon2 hash of `password` for a `[[dashboard.operator]]`.
pub fn hash_password(password: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(crate::bin_path("kho-hub"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
}

/// Logs in to `hub`'s dashboard through its form; returns the session cookie (`name=value`).
pub async fn dashboard_login(hub: &HubProc, name: &str, password: &str) -> String {
    let http = hub.client();
    let cookie = |r: &reqwest::Response, prefix: &str| -> String {
        let all = r.headers().get_all("set-cookie");
        let c = all.iter().map(|v| v.to_str().unwrap()).find(|c| c.starts_with(prefix)).expect("cookie");
        c.split(';').next().unwrap().to_string()
    };
    let form = http.get(format!("{}/ui/login", hub.url())).send().await.unwrap();
    let login_cookie = cookie(&form, "kho_login_csrf=");
    let csrf = login_cookie.split_once('=').unwrap().1.to_string();
    let r = http
        .post(format!("{}/ui/login", hub.url()))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name={name}&password={password}&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "dashboard login refused");
    cookie(&r, "kho_session=")
}
