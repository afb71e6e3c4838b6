//! PostgreSQL source over TLS (`sslmode = "require"`), with the server certificate verified.
//!
//! The local PostgreSQL serves TLS with Debian's self-signed "snakeoil" certificate (CN and SAN
//! `localhost`). Pinning it as `ssl_root_cert` and connecting to `localhost` must sync; connecting
//! to `127.0.0.1` (a name the certificate does not carry) must be refused with a clear error, which
//! proves the handshake happens and is verified rather than merely encrypted.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::remote::{Kind, RemoteDb, warehouse_rows};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[test]
fn postgres_over_verified_tls_syncs_and_a_wrong_name_is_refused() {
    assert!(
        Path::new(SNAKEOIL).is_file(),
        "{SNAKEOIL} is missing: the local PostgreSQL must serve TLS with Debian's snakeoil certificate (package ssl-cert)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut db = RemoteDb::create(Kind::Postgres);
    db.insert_range(1, 500);
    let a = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("t-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into(), "sai_ten".into()],
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let opts = AgentOptions::default();
    let tls = |url: &str| {
        format!("kind = \"postgres\"\nurl = \"{url}\"\nsslmode = \"require\"\nssl_root_cert = \"{SNAKEOIL}\"\n")
    };
    let by_name = db.url.replace("127.0.0.1", "localhost");
    let ds =
        |name: &str| DatasetSpec { name: name.into(), table: db.table.clone(), key: vec!["id".into()], cursor: None };
    let toml = format!("{}{}", ds("ho_so").toml(&tls(&by_name), &opts), ds("sai_ten").toml(&tls(&db.url), &opts));
    let agent = AgentProc::configure(&tmp.path().join("agent"), &a, &hub.url(), &hub.ca_path(), &toml, &opts);

    let out = agent.command(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the wrong name is a problem: {stdout}");
    assert!(stdout.contains("dataset ho_so (snapshot): ok"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("dataset sai_ten")).unwrap_or_default();
    assert!(line.contains("PROBLEM") && line.contains("TLS") && line.contains("not valid for name"), "{stdout}");

    let mut agent = agent;
    agent.spawn();
    let want = db.rows();
    wait_for(
        Duration::from_secs(60),
        "the TLS source to reach the warehouse",
        || agent.log_tail(),
        || warehouse_rows(&hub.warehouse(), "ho_so", true).is_ok_and(|got| got == want),
    );
    assert!(agent.stop());
}
