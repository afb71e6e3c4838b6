//! HTTPS hardening (issue 7), through the real hub: `[tls] require_client_cert = true` refuses
//! enrolled agents that do not present their hub-issued certificate (enrollment excepted, config
//! agents unaffected), and `limits.max_connections` is enforced at accept time (raw TLS
//! connections beyond it are closed before the handshake; a freed slot is reusable).

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kho_shared::codec;
use kho_tests::procs::{AgentSpec, HubProc, free_port};
use kho_tests::security::*;

fn started(dir: &std::path::Path, agents: &[AgentSpec], tls_extra: &str, extra: &str) -> HubProc {
    let mut hub =
        HubProc::configure_with(dir, free_port(), agents, "kind = \"sqlite\"\npath = \"warehouse.sqlite\"\n", extra);
    let config = dir.join("hub.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("self_signed = true\n", &format!("self_signed = true\n{tls_extra}"), 1))
        .unwrap();
    hub.spawn();
    hub
}

#[test]
fn require_client_cert_refuses_enrolled_agents_without_their_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = AgentSpec { id: "so-cu".into(), token: "legacy-token-123".into(), datasets: vec!["ho_so".into()] };
    let hub = started(&tmp.path().join("hub"), std::slice::from_ref(&legacy), "require_client_cert = true\n", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let a = "so-y-te";
    let (key, key_pem) = new_key_pem(a);
    let token = add_agent(&hub, a, "ho_so", "1h");
    // Enrollment needs no certificate (the agent has none yet).
    let (status, enrolled) = rt.block_on(enroll(&http, &hub, a, &token, &key));
    assert_eq!(status, 200, "{enrolled}");
    let access = enrolled["access_token"].as_str().unwrap().to_string();
    let cert = enrolled["client_cert"].as_str().unwrap().to_string();

    // Without its certificate: refused, nothing applied.
    let body = codec::encode(&batch(a, "ho_so", 1, 3)).unwrap();
    let refused = rt.block_on(Post::signed(&access, &body, &key).send(&http, &hub));
    assert_refused(refused, 401, "unauthorized", "must present its client certificate");
    let whoami = |client: &reqwest::Client, token: &str| {
        let req = client.get(format!("{}/v1/whoami", hub.url())).bearer_auth(token.to_string());
        rt.block_on(async move { reply(req.send().await.unwrap()).await })
    };
    assert_refused(whoami(&http, &access), 401, "unauthorized", "must present its client certificate");
    assert_eq!(hub.ledger(a), 0);

    // With it: accepted.
    let mtls = client_with_cert(&hub, &cert, &key_pem);
    let ok = rt.block_on(Post::signed(&access, &body, &key).send(&mtls, &hub));
    assert_eq!((ok.0, ok.1["applied_through"].as_u64()), (200, Some(3)), "{ok:?}");
    assert_eq!(hub.ledger(a), 3);
    // A config agent has no certificate and is not affected.
    assert_eq!(whoami(&http, &legacy.token).0, 200);
    let audit = audit_rows(&hub);
    assert!(audit.iter().any(|(k, _, d)| k == "refused" && d.contains("must present its client certificate")));
}

/// A TLS client trusting the hub's CA.
fn tls_config(hub: &HubProc) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(hub.ca_path()).unwrap().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Opens a raw TLS connection and completes the handshake (no HTTP request).
fn handshake(
    hub: &HubProc,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut sock = TcpStream::connect(("127.0.0.1", hub.port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

#[test]
fn max_connections_closes_connections_over_the_limit_at_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = started(&tmp.path().join("hub"), &[], "", "\n[limits]\nmax_connections = 3\n");
    let config = tls_config(&hub);
    // The hub's own readiness probe (a bare TCP connect) may still hold a slot for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.len() < 3 {
        match handshake(&hub, &config) {
            Ok(s) => held.push(s),
            Err(e) => {
                assert!(Instant::now() < deadline, "only {} connections admitted: {e}", held.len());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    for _ in 0..3 {
        let over = handshake(&hub, &config);
        assert!(over.is_err(), "a connection over limits.max_connections was admitted");
    }
    // A slot freed is a slot reusable.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        match handshake(&hub, &config) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "the freed slot was never reusable: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(handshake(&hub, &config).is_err(), "still at the limit");
    drop((held, again));
    // All released: ordinary HTTPS works again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = client(&hub);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = rt.block_on(async { http.get(format!("{}/metrics", hub.url())).send().await.map(|r| r.status()) });
        match status {
            Ok(s) if s.is_success() => break,
            other => assert!(Instant::now() < deadline, "HTTPS after releasing: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
