//! Enrollment, signed batches, revocation and the audit log, through the real `kho-hub` and
//! `kho-agent` binaries over HTTPS — and the bad-input matrix of issue 7: every refusal is the
//! exact code and reason expected, and the warehouse is unchanged after each one.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Duration;

use kho_shared::codec;
use kho_shared::protocol::{BATCH_CONTENT_TYPE, DIGEST_HEADER};
use kho_shared::signing::SIGNATURE_HEADER;
use kho_tests::compare::ho_so_diff;
use kho_tests::procs::{AgentOptions, HubProc, wait_for};
use kho_tests::security::*;
use kho_tests::source::SourceDb;
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn enrolled_agent_syncs_signed_batches_revoke_stops_it_and_audit_verify_catches_an_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 500).unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"), &[]);
    let token = add_agent(&hub, "so-y-te-01", "ho_so", "1h");

    let mut agent = configure_enrolled_agent(
        &tmp.path().join("agent"),
        "so-y-te-01",
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        ENROLLED_HTTPS.into(),
        AgentOptions::default().poll_interval,
    );

    let out = agent.command(&["enroll", "--token", &token]);
    assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
    let key_path = agent.dir.join("secrets/agent.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(agent.dir.join("secrets/access.token")).unwrap().permissions().mode() & 0o777, 0o600);
    // The hub issued a client certificate for the agent's key (mutual TLS from now on).
    let cert = std::fs::read_to_string(agent.dir.join("secrets/agent.crt")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    // The hub holds only the public key: the private key's bytes appear nowhere in the warehouse.
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let registry: String = rusqlite::Connection::open(hub.warehouse())
        .unwrap()
        .query_row(
            "SELECT public_key || enroll_token_sha256 || access_token_sha256 FROM _kho_agent_registry",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let secret_line = pem.lines().nth(1).unwrap();
    assert!(!registry.contains(secret_line) && !registry.contains(&token), "secrets stored by the hub");

    // A token works once, even for the right agent.
    let again = agent.command(&["enroll", "--token", &token]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("enrollment token already used"), "{again:?}");

    agent.spawn();
    let converged = || ho_so_diff(&src.path, &hub.warehouse(), "ho_so").is_ok_and(|d| d.is_empty());
    wait_for(
        CONVERGE,
        "signed batches to sync the table",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        converged,
    );
    let list = hub.command(&["agent", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        list.lines().any(|l| l.starts_with("so-y-te-01")
            && l.contains("enrolled")
            && l.contains("so_y_te")
            && l.contains(" https ")),
        "{list}"
    );

    // Revoke: the very next batch is refused and nothing more is applied.
    let out = hub.command(&["agent", "revoke", "so-y-te-01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger = hub.ledger("so-y-te-01");
    src.insert_range(501, 600).unwrap();
    let log = agent.dir.join("agent.log");
    wait_for(
        CONVERGE,
        "the agent to be told it is revoked",
        || agent.log_tail(),
        || std::fs::read_to_string(&log).unwrap_or_default().contains("agent so-y-te-01 is revoked"),
    );
    assert_eq!(hub.ledger("so-y-te-01"), ledger);
    assert!(!ho_so_diff(&src.path, &hub.warehouse(), "ho_so").unwrap().is_empty());
    agent.stop();

    // No secret ever reached a log: not the enrollment token, the access token or the private key.
    let access = std::fs::read_to_string(agent.dir.join("secrets/access.token")).unwrap().trim().to_string();
    for log in [hub.dir.join("hub.log"), agent.dir.join("agent.log")] {
        let text = std::fs::read_to_string(&log).unwrap();
        for secret in [token.as_str(), access.as_str(), secret_line] {
            assert!(!text.contains(secret), "{} contains a secret", log.display());
        }
    }

    // The audit log tells the story, and verifies.
    let kinds: Vec<String> = audit_rows(&hub).into_iter().map(|(k, _, _)| k).collect();
    for kind in ["agent_added", "enrolled", "batch_applied", "revoked", "refused"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} entry in {kinds:?}");
    }
    let refused = audit_rows(&hub).into_iter().find(|(k, _, d)| k == "refused" && d.contains("is revoked"));
    assert!(refused.is_some(), "the revoked agent's refusal is audited");
    let verify = hub.command(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("audit log intact"));

    // Edit one applied-batch entry (claim fewer rows): caught.
    let conn = rusqlite::Connection::open(hub.warehouse()).unwrap();
    let seq: i64 =
        conn.query_row("SELECT min(seq) FROM _kho_audit WHERE kind = 'batch_applied'", [], |r| r.get(0)).unwrap();
    conn.execute("UPDATE _kho_audit SET detail = replace(detail, '\"rows\":', '\"rows\":1') WHERE seq = ?1", [seq])
        .unwrap();
    let verify = hub.command(&["audit", "verify"]);
    assert!(!verify.status.success());
    let stderr = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(stderr.contains(&format!("audit entry {seq}: content does not match its hash")), "{stderr}");

    // Deleting a row (after restoring nothing) is caught too.
    conn.execute("DELETE FROM _kho_audit WHERE seq = ?1", [seq + 1]).unwrap();
    let verify = hub.command(&["audit", "verify"]);
    assert!(!verify.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_matrix_each_refusal_is_exact_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = "\n[limits]\nmax_body_bytes = \"64 KiB\"\nmax_decoded_bytes = \"1 MiB\"\nmax_batch_changes = 10\n";
    let hub = tokio::task::block_in_place(|| HubProc::start_with(&tmp.path().join("hub"), &[], limits));
    let http = client(&hub);
    let (a, b) = ("agent-a", "agent-b");
    let ((key_a, pem_a), (key_b, pem_b)) = (new_key_pem(a), new_key_pem(b));
    let token_a = add_agent(&hub, a, "ho_so", "1h");
    let token_b = add_agent(&hub, b, "thuoc", "1h");
    let expiring = add_agent(&hub, "agent-c", "ho_so", "1s");

    // Enrollment: expired, unknown, wrong agent, then success, then reuse.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_refused(
        enroll(&http, &hub, "agent-c", &expiring, &new_key("agent-c")).await,
        401,
        "unauthorized",
        "enrollment token expired",
    );
    assert_refused(
        enroll(&http, &hub, a, "kho-enroll-nope", &key_a).await,
        401,
        "unauthorized",
        "unknown enrollment token",
    );
    assert_refused(enroll(&http, &hub, b, &token_a, &key_b).await, 401, "unauthorized", "issued for another agent");
    let (status, enrolled) = enroll(&http, &hub, a, &token_a, &key_a).await;
    assert_eq!(status, 200, "{enrolled}");
    let access_a = enrolled["access_token"].as_str().unwrap().to_string();
    assert_refused(
        enroll(&http, &hub, a, &token_a, &key_a).await,
        401,
        "unauthorized",
        "enrollment token already used",
    );
    let (status, enrolled_b) = enroll(&http, &hub, b, &token_b, &key_b).await;
    assert_eq!(status, 200);
    let access_b = enrolled_b["access_token"].as_str().unwrap().to_string();
    let (cert_a, cert_b) = (enrolled["client_cert"].as_str().unwrap(), enrolled_b["client_cert"].as_str().unwrap());
    // The issued certificate works for its own agent (mutual TLS) …
    let whoami = |client: &reqwest::Client, token: &str| {
        let req = client.get(format!("{}/v1/whoami", hub.url())).bearer_auth(token.to_string());
        async move { reply(req.send().await.unwrap()).await }
    };
    assert_eq!(whoami(&client_with_cert(&hub, cert_a, &pem_a), &access_a).await.0, 200);
    // … but B's certificate (and B's key) with A's token is refused.
    let mixed = whoami(&client_with_cert(&hub, cert_b, &pem_b), &access_a).await;
    assert_refused(mixed, 403, "forbidden", "the client certificate was not issued to agent agent-a");

    // A first good batch, so "unchanged" means something.
    let first = codec::encode(&batch(a, "ho_so", 1, 3)).unwrap();
    let ok = Post::signed(&access_a, &first, &key_a).send(&http, &hub).await;
    assert_eq!((ok.0, ok.1["applied_through"].as_u64()), (200, Some(3)), "{ok:?}");
    let before = warehouse_state(&hub, a);
    assert_eq!(before.0.len(), 3);

    let next = codec::encode(&batch(a, "ho_so", 4, 5)).unwrap();
    let mut cases: Vec<(&str, Post<'_>, u16, &str, &str)> = Vec::new();

    let mut p = Post::signed(&access_a, &next, &key_a);
    p.signature = None;
    cases.push(("missing signature", p, 401, "bad_signature", "signature missing"));

    let mut p = Post::signed(&access_a, &next, &key_a);
    p.signature = Some("ab".repeat(64));
    cases.push(("wrong signature", p, 401, "bad_signature", "does not verify against agent agent-a"));

    let mut p = Post::signed(&access_a, &next, &key_a);
    p.signature = Some(key_b.sign(&next.digest_hex).unwrap());
    cases.push(("signature by another agent's key", p, 401, "bad_signature", "does not verify"));

    // B's properly signed batch replayed on A's channel (A's token).
    let for_b = codec::encode(&batch(b, "thuoc", 1, 1)).unwrap();
    let mut p = Post::signed(&access_a, &for_b, &key_b);
    p.signature = Some(key_b.sign(&for_b.digest_hex).unwrap());
    cases.push(("batch signed for B on A's channel", p, 401, "bad_signature", "does not verify"));

    let mut p = Post::signed(&access_a, &next, &key_a);
    let last = p.body.len() - 2;
    p.body[last] ^= 0x55;
    cases.push(("tampered body, original digest", p, 400, "digest_mismatch", "does not match the declared digest"));

    let mut p = Post::signed(&access_a, &next, &key_a);
    p.body[10] ^= 0x01;
    p.digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&p.body));
    cases.push(("tampered body, recomputed digest", p, 401, "bad_signature", "does not verify"));

    let not_allowed = codec::encode(&batch(a, "thuoc", 4, 4)).unwrap();
    cases.push((
        "dataset not allowed",
        Post::signed(&access_a, &not_allowed, &key_a),
        403,
        "forbidden",
        "may not write dataset thuoc",
    ));

    let bomb = zstd::encode_all(std::io::repeat(b' ').take(64 << 20), 19).unwrap();
    assert!(bomb.len() < 64 * 1024, "the bomb must pass the body limit: {}", bomb.len());
    let bomb = raw_body(bomb);
    cases.push(("decompression bomb", Post::signed(&access_a, &bomb, &key_a), 413, "too_large", "exceeds"));

    let mut big = batch(a, "ho_so", 4, 4);
    big.changes[0].row.as_mut().unwrap().insert("trang_thai".into(), json!(random_text(200_000)));
    let big = codec::encode(&big).unwrap();
    cases.push(("oversized body", Post::signed(&access_a, &big, &key_a), 413, "too_large", "exceeds the limit"));

    let many = codec::encode(&batch(a, "ho_so", 4, 14)).unwrap();
    let p = Post::signed(&access_a, &many, &key_a);
    cases.push(("too many rows in one batch", p, 413, "too_large", "batch has 11 changes; the limit is 10"));

    let junk = zstd::encode_all(&b"{\"v\":1,\"agent\":\"agent-a\", not json"[..], 3).unwrap();
    let junk = raw_body(junk);
    cases.push((
        "malformed JSON",
        Post::signed(&access_a, &junk, &key_a),
        400,
        "malformed",
        "body is not a valid v1 batch",
    ));

    let mut p = Post::signed(&access_a, &next, &key_a);
    p.content_type = "application/json";
    cases.push(("wrong content type", p, 400, "malformed", "content-type must be"));

    cases.push((
        "unknown token",
        Post::signed("kho-access-forged", &next, &key_a),
        401,
        "unauthorized",
        "unknown bearer token",
    ));

    for (name, post, status, code, reason) in cases {
        let got = post.send(&http, &hub).await;
        assert_eq!(got.0, status, "{name}: {got:?}");
        assert_eq!(got.1["code"].as_str(), Some(code), "{name}: {got:?}");
        let message = got.1["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{name}: expected {reason:?} in {message:?}");
        assert_eq!(warehouse_state(&hub, a), before, "{name} changed the warehouse");
    }

    // A captured batch re-sent later is harmless: acknowledged, nothing applied again.
    let replay = Post::signed(&access_a, &first, &key_a).send(&http, &hub).await;
    assert_eq!((replay.0, replay.1["applied_through"].as_u64()), (200, Some(3)));
    assert_eq!(warehouse_state(&hub, a), before, "replay changed the warehouse");

    // Plain TCP (no TLS) to the TLS port: no HTTP answer, nothing applied.
    let port = hub.port;
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).to_string()
    })
    .await
    .unwrap();
    assert!(!plain.contains("HTTP/1.1 200"), "plain TCP got an HTTP answer: {plain:?}");
    assert_eq!(warehouse_state(&hub, a), before);

    // A client certificate from another CA: refused in the TLS handshake.
    let foreign = {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, a);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes()).unwrap();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(hub.ca_path()).unwrap()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).identity(identity).build().unwrap()
    };
    let sent = foreign
        .post(format!("{}/v1/batches", hub.url()))
        .bearer_auth(&access_a)
        .header("content-type", BATCH_CONTENT_TYPE)
        .header("content-encoding", "zstd")
        .header(DIGEST_HEADER, &next.digest_hex)
        .header(SIGNATURE_HEADER, key_a.sign(&next.digest_hex).unwrap())
        .body(next.body.clone())
        .send()
        .await;
    assert!(sent.is_err(), "a certificate from another CA was accepted: {:?}", sent.map(|r| r.status()));
    assert_eq!(warehouse_state(&hub, a), before);

    // Revoked: refused at once, on the next request.
    let out = hub.command(&["agent", "revoke", a]);
    assert!(out.status.success());
    assert_refused(
        Post::signed(&access_a, &next, &key_a).send(&http, &hub).await,
        401,
        "unauthorized",
        "agent agent-a is revoked",
    );
    assert_eq!(warehouse_state(&hub, a), before);
    // B was untouched by all of this and still works.
    let ok_b = Post::signed(&access_b, &for_b, &key_b).send(&http, &hub).await;
    assert_eq!(ok_b.0, 200, "{ok_b:?}");

    // Every refusal was audited with its reason; the chain is intact.
    let audit = audit_rows(&hub);
    let refused = audit.iter().filter(|(k, _, _)| k == "refused").count();
    assert!(refused >= 18, "{refused} refusals audited: {audit:?}");
    assert!(audit.iter().any(|(k, a, d)| k == "refused" && a.as_deref() == Some("agent-c") && d.contains("expired")));
    let verify = hub.command(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

#[test]
fn postgres_warehouse_holds_the_registry_and_the_audit_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pg = kho_tests::pgwh::PgWarehouse::create();
    let mut hub = HubProc::start_with_warehouse(&tmp.path().join("hub"), &[], &pg.hub_toml(2));
    // The PostgreSQL client runs its own runtime, so this test is synchronous and drives HTTP here.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let a = "so-y-te-pg";
    let key = new_key(a);
    let token = add_agent(&hub, a, "ho_so", "1h");
    let (status, enrolled) = rt.block_on(enroll(&http, &hub, a, &token, &key));
    assert_eq!(status, 200, "{enrolled}");
    let access = enrolled["access_token"].as_str().unwrap().to_string();
    assert_refused(
        rt.block_on(enroll(&http, &hub, a, &token, &key)),
        401,
        "unauthorized",
        "enrollment token already used",
    );

    let encoded = codec::encode(&batch(a, "ho_so", 1, 4)).unwrap();
    let ok = rt.block_on(Post::signed(&access, &encoded, &key).send(&http, &hub));
    assert_eq!((ok.0, ok.1["applied_through"].as_u64()), (200, Some(4)), "{ok:?}");
    assert_eq!(pg.ledger(a), 4);
    let next = codec::encode(&batch(a, "ho_so", 5, 5)).unwrap();
    let mut unsigned = Post::signed(&access, &next, &key);
    unsigned.signature = None;
    assert_refused(rt.block_on(unsigned.send(&http, &hub)), 401, "bad_signature", "signature missing");

    let list = String::from_utf8_lossy(&hub.command(&["agent", "list"]).stdout).to_string();
    assert!(list.lines().any(|l| l.starts_with(a) && l.contains("enrolled")), "{list}");
    assert!(hub.command(&["agent", "revoke", a]).status.success());
    let revoked = rt.block_on(Post::signed(&access, &next, &key).send(&http, &hub));
    assert_refused(revoked, 401, "unauthorized", "is revoked");
    assert_eq!(pg.ledger(a), 4);

    let kinds = pg.count("SELECT count(DISTINCT kind) FROM kho.audit");
    assert_eq!(kinds, 5, "agent_added, enrolled, batch_applied, refused, revoked");
    let verify = hub.command(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let edited = pg.count(
        "WITH u AS (UPDATE kho.audit SET agent = 'someone-else' WHERE seq = 2 RETURNING 1) SELECT count(*) FROM u",
    );
    assert_eq!(edited, 1);
    let verify = hub.command(&["audit", "verify"]);
    assert!(!verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stderr).contains("audit entry 2: content does not match its hash"));
    // The registry's PostgreSQL connection closes off the async workers: a clean stop.
    assert!(hub.stop(), "the hub stops cleanly\n{}", hub.log_tail());
}
