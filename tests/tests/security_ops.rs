//! Operating an enrolled fleet safely: per-agent request rate and slow clients (limits), key
//! rotation without losing buffered changes, and the warning about secrets readable by others.
//! Real `kho-hub` and `kho-agent` binaries over HTTPS.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Duration;

use kho_shared::codec;
use kho_shared::signing::Signer;
use kho_tests::compare::ho_so_diff;
use kho_tests::procs::{AgentOptions, AgentSpec, HubProc, wait_for};
use kho_tests::security::*;
use kho_tests::source::SourceDb;

const CONVERGE: Duration = Duration::from_secs(60);

#[test]
fn per_agent_rate_limit_and_slow_clients_time_out() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = "\n[limits]\nagent_requests_per_second = 1\nagent_burst = 3\nheader_read_timeout = \"1s\"\n";
    let hub = HubProc::start_with(&tmp.path().join("hub"), &[], limits);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let key = new_key("busy");
    let token = add_agent(&hub, "busy", "ho_so", "1h");
    let (status, enrolled) = rt.block_on(enroll(&http, &hub, "busy", &token, &key));
    assert_eq!(status, 200);
    let access = enrolled["access_token"].as_str().unwrap().to_string();
    let whoami = || {
        let req = http.get(format!("{}/v1/whoami", hub.url())).bearer_auth(&access);
        rt.block_on(async { reply(req.send().await.unwrap()).await })
    };
    for _ in 0..3 {
        assert_eq!(whoami().0, 200);
    }
    assert_refused(whoami(), 429, "rate_limited", "exceeds its request rate");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(whoami().0, 200, "the bucket refills");

    // Slowloris: TLS up, then headers trickle in too slowly; the hub closes the connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(hub.ca_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        std::sync::Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let sock = std::net::TcpStream::connect(("127.0.0.1", hub.port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"POST /v1/batches HTTP/1.1\r\nHost: hub\r\n").unwrap();
    tls.flush().unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "the slow client was not cut off ({waited:?})");
    assert!(waited >= Duration::from_millis(800), "cut off before the header timeout ({waited:?})");
    assert!(!String::from_utf8_lossy(&buf).contains(" 200 "), "{}", String::from_utf8_lossy(&buf));
}

#[test]
fn key_rotation_keeps_buffered_changes_and_retires_the_old_key() {
    // The agent uses mutual TLS too: its certificate must follow the key.
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let tmp = tempfile::tempdir().unwrap();
    let mut src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), 200).unwrap();
    let mut hub = HubProc::start(&tmp.path().join("hub"), &[]);
    let id = "so-y-te-rot";
    let token = add_agent(&hub, id, "ho_so", "1h");
    let mut agent = configure_enrolled_agent(
        &tmp.path().join("agent"),
        id,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        ENROLLED_HTTPS.into(),
        AgentOptions::default().poll_interval,
    );
    assert!(agent.command(&["enroll", "--token", &token]).status.success());
    agent.spawn();
    let src_path = src.path.clone();
    let converged = |hub: &HubProc| ho_so_diff(&src_path, &hub.warehouse(), "ho_so").is_ok_and(|d| d.is_empty());
    wait_for(CONVERGE, "the first sync", || agent.log_tail(), || converged(&hub));

    // Changes captured while the hub is away wait in the outbox.
    assert!(hub.stop());
    src.insert_range(201, 300).unwrap();
    wait_for(
        CONVERGE,
        "100 changes buffered",
        || agent.log_tail(),
        || agent.status()["outbox"]["depth"].as_u64().is_some_and(|d| d >= 100),
    );
    assert!(agent.stop());
    let key_path = agent.dir.join("secrets/agent.key");
    let old_pem = std::fs::read(&key_path).unwrap();
    let old_cert = std::fs::read(agent.dir.join("secrets/agent.crt")).unwrap();

    // The hub is down: rotation fails, keeps the pending key and leaves the current one in place.
    let failed = agent.command(&["rotate-key"]);
    assert!(!failed.status.success());
    let pending = agent.dir.join("secrets/agent.key.new");
    assert!(pending.exists());
    assert_eq!(std::fs::read(&key_path).unwrap(), old_pem);

    // Run again with the hub back: the same pending key is accepted and installed.
    hub.spawn();
    let pending_pem = std::fs::read(&pending).unwrap();
    let out = agent.command(&["rotate-key"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!pending.exists());
    assert_eq!(std::fs::read(&key_path).unwrap(), pending_pem);
    assert_ne!(std::fs::read(agent.dir.join("secrets/agent.crt")).unwrap(), old_cert, "certificate re-issued");

    // The old key is retired: a batch it signs is refused.
    let der = PrivatePkcs8KeyDer::from_pem_slice(&old_pem).unwrap();
    let old_key = Signer::from_pkcs8(id, der.secret_pkcs8_der()).unwrap();
    let access = std::fs::read_to_string(agent.dir.join("secrets/access.token")).unwrap().trim().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let encoded = codec::encode(&batch(id, "ho_so", 1, 1)).unwrap();
    let refused = rt.block_on(Post::signed(&access, &encoded, &old_key).send(&http, &hub));
    assert_refused(refused, 401, "bad_signature", "does not verify");

    // The buffered changes arrive, signed with the new key.
    agent.spawn();
    wait_for(
        CONVERGE,
        "the buffered changes",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || converged(&hub),
    );
    assert!(audit_rows(&hub).iter().any(|(k, a, _)| k == "key_rotated" && a.as_deref() == Some(id)));
}

#[test]
fn a_config_with_inline_tokens_readable_by_others_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let spec =
        AgentSpec { id: "so-y-te-cfg".into(), token: "inline-secret-token".into(), datasets: vec!["ho_so".into()] };
    let hub = HubProc::start(&tmp.path().join("hub"), &[spec]);
    use std::os::unix::fs::PermissionsExt;
    let config = tmp.path().join("hub/hub.toml");
    assert_ne!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o077, 0, "written world-readable");
    let log = std::fs::read_to_string(tmp.path().join("hub/hub.log")).unwrap();
    assert!(log.contains("readable by other users"), "{log}");
    assert!(!log.contains("inline-secret-token"), "the token itself is never logged");
    drop(hub);
    // chmod 600: no warning.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(kho_tests::bin_path("kho-hub"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by other users"));
}
