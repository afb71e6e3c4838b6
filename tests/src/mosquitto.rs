//! A real Mosquitto broker for MQTT end-to-end tests: its own process on a free loopback port,
//! with a freshly generated CA, a server certificate for 127.0.0.1, and one client certificate
//! per identity (CN = agent id, or the hub's identity).
//!
//! The broker requires a client certificate (`require_certificate true`), takes the CN as the
//! user name (`use_identity_as_username true`), and enforces an ACL that lets each agent read and
//! write only `kho/v1/<its id>/#`, while the hub's identity may use all of `kho/v1/#`. Persistence
//! is off, so a restart (after [`Broker::kill9`]) starts with no sessions — the harshest case.
//! The binary is `/usr/sbin/mosquitto` (override with `KHO_MOSQUITTO`); a missing binary fails
//! the test loudly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::procs::{free_port, tail, wait_for};

/// The hub's identity at the broker (certificate CN and ACL user).
pub const HUB_IDENTITY: &str = "kho-hub";

/// A running (or killed) Mosquitto with its PKI.
pub struct Broker {
    pub dir: PathBuf,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn mosquitto_bin() -> PathBuf {
    let path = std::env::var_os("KHO_MOSQUITTO").map_or_else(|| PathBuf::from("/usr/sbin/mosquitto"), PathBuf::from);
    assert!(path.exists(), "{} not found: the MQTT tests need Mosquitto (apt-get install mosquitto)", path.display());
    path
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Kho test MQTT CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Issues a certificate signed by the CA into `<pki>/<name>.pem` and `<name>.key`.
fn issue(
    pki: &Path,
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(sans).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let cert = params.signed_by(&key, issuer).expect("sign");
    write(&pki.join(format!("{name}.pem")), &cert.pem());
    write(&pki.join(format!("{name}.key")), &key.serialize_pem());
}

impl Broker {
    /// Generates the PKI for the hub and `agents`, writes the config and ACL, starts the broker
    /// and waits until it accepts TCP connections.
    pub fn start(dir: &Path, agents: &[&str]) -> Broker {
        let pki = dir.join("pki");
        fs::create_dir_all(&pki).expect("pki dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params().self_signed(&ca_key).expect("CA");
        write(&pki.join("ca.pem"), &ca.pem());
        // The CAs whose client certificates the broker accepts: its own, plus any added by
        // [`Broker::trust_client_ca`] (e.g. the hub's agent CA).
        write(&pki.join("clients-ca.pem"), &ca.pem());
        let issuer = Issuer::new(ca_params(), ca_key);
        issue(
            &pki,
            &issuer,
            "server",
            "127.0.0.1",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        for id in agents.iter().copied().chain([HUB_IDENTITY]) {
            issue(&pki, &issuer, id, id, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        }
        // Patterns first: they apply to every user. The hub's user may use every agent's topics
        // (the shared-subscription form is listed too, for brokers that check it verbatim).
        write(
            &dir.join("acl"),
            &format!(
                "pattern readwrite kho/v1/%u/#\n\nuser {HUB_IDENTITY}\ntopic readwrite kho/v1/#\ntopic read $share/+/kho/v1/#\n"
            ),
        );
        let port = free_port();
        let config = dir.join("mosquitto.conf");
        write(
            &config,
            &format!(
                "per_listener_settings false\nuser root\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\nallow_anonymous false\nacl_file {acl}\n\nlistener {port} 127.0.0.1\ncafile {pki}/clients-ca.pem\ncertfile {pki}/server.pem\nkeyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n",
                acl = dir.join("acl").display(),
                pki = pki.display(),
            ),
        );
        let mut broker = Broker { dir: dir.to_path_buf(), port, config, log: dir.join("mosquitto.log"), child: None };
        broker.spawn();
        broker
    }

    /// Starts the broker (again, on the same port) and waits until it listens.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("broker log");
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            Duration::from_secs(20),
            "mosquitto to listen",
            || self.log_tail(),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// Makes the broker also accept client certificates issued by the CA in `ca_pem` (the hub's
    /// agent CA: `<data_dir>/tls/agents-ca.pem`), then restarts it so the listener reads it.
    pub fn trust_client_ca(&mut self, ca_pem: &Path) {
        let pki = self.dir.join("pki");
        let own = fs::read_to_string(pki.join("ca.pem")).expect("broker CA");
        let extra = fs::read_to_string(ca_pem).unwrap_or_else(|e| panic!("read {}: {e}", ca_pem.display()));
        write(&pki.join("clients-ca.pem"), &format!("{own}{extra}"));
        self.kill9();
        self.spawn();
    }

    /// A client certificate for `cn` from a CA the broker does not trust, as `(cert, key)` paths.
    pub fn foreign_identity(&self, cn: &str) -> (PathBuf, PathBuf) {
        let pki = self.dir.join("foreign");
        fs::create_dir_all(&pki).expect("foreign pki dir");
        let issuer = Issuer::new(ca_params(), KeyPair::generate().expect("CA key"));
        issue(&pki, &issuer, cn, cn, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth);
        (pki.join(format!("{cn}.pem")), pki.join(format!("{cn}.key")))
    }

    /// SIGKILL: every connection drops, every session and queued message is gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("pki").join("ca.pem")
    }
    pub fn cert(&self, identity: &str) -> PathBuf {
        self.dir.join("pki").join(format!("{identity}.pem"))
    }
    pub fn key(&self, identity: &str) -> PathBuf {
        self.dir.join("pki").join(format!("{identity}.key"))
    }
    pub fn log_tail(&self) -> String {
        format!("--- mosquitto log ({}) ---\n{}", self.log.display(), tail(&self.log, 30))
    }

    /// The `[hub]` lines that switch an agent to this broker with its own certificate (the URL
    /// and CA are passed as the agent's hub URL and CA).
    pub fn agent_hub_toml(&self, identity: &str, ack_timeout: &str) -> String {
        format!(
            "transport = \"mqtt\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nkeep_alive = \"5s\"\nack_timeout = \"{ack_timeout}\"\n",
            self.cert(identity).display(),
            self.key(identity).display(),
        )
    }

    /// The hub's `[mqtt]` section for this broker.
    pub fn hub_toml(&self) -> String {
        format!(
            "\n[mqtt]\nurl = \"{}\"\nca_cert = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nclient_id = \"kho-hub-{}\"\nkeep_alive = \"5s\"\n",
            self.url(),
            self.ca_path().display(),
            self.cert(HUB_IDENTITY).display(),
            self.key(HUB_IDENTITY).display(),
            fastrand::u32(..),
        )
    }

    /// A synchronous MQTT client connected as `identity` (for tests that play an agent or an
    /// attacker). The caller drives the returned connection.
    pub fn client(&self, identity: &str) -> (rumqttc::Client, rumqttc::Connection) {
        self.client_with(identity, &self.cert(identity), &self.key(identity))
    }

    /// Like [`Broker::client`], presenting the certificate and key in the given PEM files.
    pub fn client_with(&self, identity: &str, cert: &Path, key: &Path) -> (rumqttc::Client, rumqttc::Connection) {
        let pem = |p: PathBuf| fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut pem(self.ca_path()).as_slice()) {
            roots.add(c.expect("CA pem")).expect("CA cert");
        }
        let chain: Vec<_> =
            rustls_pemfile::certs(&mut pem(cert.to_path_buf()).as_slice()).map(|c| c.expect("cert")).collect();
        let key = rustls_pemfile::private_key(&mut pem(key.to_path_buf()).as_slice()).expect("key pem").expect("a key");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client auth");
        let mut options =
            rumqttc::MqttOptions::new(format!("test-{identity}-{}", fastrand::u32(..)), "127.0.0.1", self.port);
        options
            .set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))))
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        rumqttc::Client::new(options, 16)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}
