//! Real `kho-hub` and `kho-agent` processes for end-to-end tests: config files, start, kill -9,
//! restart, and waiting for conditions with a deadline.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bin_path;

/// A free loopback port (bound then released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Polls `check` every 50 ms until it returns true; panics with `what` and `context()` after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, context: impl Fn() -> String, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}\n{}", context());
}

/// Resident set size (`VmRSS`) and its peak (`VmHWM`) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An agent the hub knows.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub id: String,
    pub token: String,
    pub datasets: Vec<String>,
}

/// A running (or killed) hub process with its own data directory.
pub struct HubProc {
    pub dir: PathBuf,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// The `[warehouse]` body of the embedded default.
const SQLITE_WAREHOUSE: &str = "kind = \"sqlite\"\npath = \"warehouse.sqlite\"\n";

impl HubProc {
    /// Writes `hub.toml` in `dir` for `agents` on a fixed free port, starts the hub, waits until it listens.
    pub fn start(dir: &Path, agents: &[AgentSpec]) -> HubProc {
        HubProc::start_with(dir, agents, "")
    }

    /// Like [`HubProc::start`], with `extra` TOML appended to the config (e.g. an `[mqtt]` section).
    pub fn start_with(dir: &Path, agents: &[AgentSpec], extra: &str) -> HubProc {
        let mut hub = HubProc::configure_with(dir, free_port(), agents, SQLITE_WAREHOUSE, extra);
        hub.spawn();
        hub
    }

    /// Like [`HubProc::start`], with the given `[warehouse]` section body (e.g. PostgreSQL's,
    /// from `crate::pgwh::PgWarehouse::hub_toml`).
    pub fn start_with_warehouse(dir: &Path, agents: &[AgentSpec], warehouse_toml: &str) -> HubProc {
        let mut hub = HubProc::configure_with(dir, free_port(), agents, warehouse_toml, "");
        hub.spawn();
        hub
    }

    /// Writes the config without starting the process (for "hub down" tests).
    pub fn configure(dir: &Path, port: u16, agents: &[AgentSpec]) -> HubProc {
        HubProc::configure_with(dir, port, agents, SQLITE_WAREHOUSE, "")
    }

    /// Writes the config — the given `[warehouse]` section body, then `extra` TOML appended (e.g.
    /// an `[mqtt]` section) — without starting the process.
    pub fn configure_with(dir: &Path, port: u16, agents: &[AgentSpec], warehouse_toml: &str, extra: &str) -> HubProc {
        fs::create_dir_all(dir).expect("hub dir");
        let mut toml = format!(
            "[hub]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\n[tls]\nself_signed = true\n\n[warehouse]\n{warehouse_toml}"
        );
        for a in agents {
            let ds: Vec<String> = a.datasets.iter().map(|d| format!("\"{d}\"")).collect();
            toml.push_str(&format!(
                "\n[[agent]]\nid = \"{}\"\ntoken = \"{}\"\ndatasets = [{}]\n",
                a.id,
                a.token,
                ds.join(", ")
            ));
        }
        toml.push_str(extra);
        let config = dir.join("hub.toml");
        fs::write(&config, toml).expect("write hub.toml");
        HubProc { dir: dir.to_path_buf(), port, config, log: dir.join("hub.log"), child: None, starts: 0 }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn warehouse(&self) -> PathBuf {
        self.data_dir().join("warehouse.sqlite")
    }
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir().join("tls").join("ca.pem")
    }
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn log_tail(&self) -> String {
        format!("--- hub log ({}) ---\n{}", self.log.display(), tail(&self.log, 40))
    }

    /// Starts the process (again) and waits until it accepts connections.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "hub already running");
        let addr_file = self.data_dir().join("listen.addr");
        let _ = fs::remove_file(&addr_file);
        self.child = Some(spawn_run("kho-hub", &self.config, &self.log));
        self.starts += 1;
        let port = self.port;
        wait_for(
            Duration::from_secs(30),
            "hub to listen",
            || self.log_tail(),
            || addr_file.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn stop(&mut self) -> bool {
        self.child.take().is_none_or(terminate)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `kho-hub --config <config> <args>` to completion (e.g. `agent add …`).
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_path("kho-hub")).arg("--config").arg(&self.config).args(args).output().expect("run kho-hub")
    }

    /// An HTTPS client that trusts only this hub's CA and does not follow redirects (a test sees
    /// the hub's own answer).
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&fs::read(self.ca_path()).expect("hub CA")).expect("CA PEM");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// `GET /api/v1/status` of the running hub, parsed.
    pub fn status(&self) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let client = self.client();
            let resp = client.get(format!("{}/api/v1/status", self.url())).send().await.expect("GET /api/v1/status");
            assert!(resp.status().is_success(), "GET /api/v1/status: {}", resp.status());
            serde_json::from_slice(&resp.bytes().await.expect("status body")).expect("status is JSON")
        })
    }

    /// Highest sequence applied for `agent`, from the warehouse ledger (0 if none yet).
    pub fn ledger(&self, agent: &str) -> u64 {
        let Ok(conn) =
            rusqlite::Connection::open_with_flags(self.warehouse(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        else {
            return 0;
        };
        let _ = conn.busy_timeout(Duration::from_secs(5));
        conn.query_row("SELECT applied_seq FROM _kho_ledger WHERE agent = ?1", [agent], |r| r.get::<_, i64>(0))
            .map(|v| v as u64)
            .unwrap_or(0)
    }
}

impl Drop for HubProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `<binary> --config <config> run` with its output appended to `log`.
fn spawn_run(binary: &str, config: &Path, log: &Path) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(log).expect("process log");
    Command::new(bin_path(binary))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {binary}: {e}"))
}

/// SIGKILL, no chance to clean up.
fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn terminate(mut c: Child) -> bool {
    let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = c.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    false
}

/// How one dataset is read.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    pub name: String,
    pub table: String,
    pub key: Vec<String>,
    /// `Some(column)` for cursor mode, `None` for snapshot mode.
    pub cursor: Option<String>,
}

impl DatasetSpec {
    /// The `[[dataset]]` section reading `table` from the source described by `source_toml` (the
    /// body of `[dataset.source]`, e.g. `kind = "postgres"\nurl = "..."`).
    pub fn toml(&self, source_toml: &str, opts: &AgentOptions) -> String {
        let key: Vec<String> = self.key.iter().map(|k| format!("\"{k}\"")).collect();
        let mode = match &self.cursor {
            Some(c) => format!("mode = \"cursor\"\ncursor_column = \"{c}\""),
            None => "mode = \"snapshot\"".to_string(),
        };
        format!(
            "\n[[dataset]]\nname = \"{}\"\ntable = \"{}\"\nkey = [{}]\n{mode}\npoll_interval = \"{}\"\n[dataset.source]\n{source_toml}",
            self.name,
            self.table,
            key.join(", "),
            opts.poll_interval,
        )
    }
}

/// Agent settings the tests vary.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub batch_max_changes: u64,
    pub poll_interval: &'static str,
    pub max_outbox: u64,
    /// Extra lines for the `[hub]` section (e.g. `transport = "mqtt"` and its certificate).
    pub hub_extra: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            batch_max_changes: 20_000,
            poll_interval: "200ms",
            max_outbox: 5_000_000,
            hub_extra: String::new(),
        }
    }
}

/// A running (or killed) agent process with its own data directory.
pub struct AgentProc {
    pub dir: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl AgentProc {
    /// Writes `agent.toml` in `dir` reading `source` and starts the agent.
    pub fn start(
        dir: &Path,
        spec: &AgentSpec,
        hub_url: &str,
        ca: &Path,
        source: &Path,
        datasets: &[DatasetSpec],
        opts: &AgentOptions,
    ) -> AgentProc {
        let source_toml = format!("kind = \"sqlite\"\npath = \"{}\"\n", source.display());
        let toml: String = datasets.iter().map(|d| d.toml(&source_toml, opts)).collect();
        AgentProc::start_with(dir, spec, hub_url, ca, &toml, opts)
    }

    /// Writes `agent.toml` in `dir` with the given `[[dataset]]` sections (any source kind; see
    /// [`DatasetSpec::toml`]) and starts the agent.
    pub fn start_with(
        dir: &Path,
        spec: &AgentSpec,
        hub_url: &str,
        ca: &Path,
        datasets_toml: &str,
        opts: &AgentOptions,
    ) -> AgentProc {
        let mut agent = AgentProc::configure(dir, spec, hub_url, ca, datasets_toml, opts);
        agent.spawn();
        agent
    }

    /// Writes `agent.toml` in `dir` like [`AgentProc::start_with`] without starting the agent.
    pub fn configure(
        dir: &Path,
        spec: &AgentSpec,
        hub_url: &str,
        ca: &Path,
        datasets_toml: &str,
        opts: &AgentOptions,
    ) -> AgentProc {
        fs::create_dir_all(dir).expect("agent dir");
        // An empty token: the agent is enrolled, and `hub_extra` names its token_file and signing_key.
        let token = if spec.token.is_empty() { String::new() } else { format!("token = \"{}\"\n", spec.token) };
        let mut toml = format!(
            "[agent]\nid = \"{}\"\ndata_dir = \"data\"\n\n[hub]\nurl = \"{hub_url}\"\n{token}ca_cert = \"{}\"\nrequest_timeout = \"10s\"\nheartbeat_interval = \"1s\"\n{}\n[outbox]\nmax_changes = {}\n\n[forward]\nbatch_max_changes = {}\nlinger = \"50ms\"\n",
            spec.id,
            ca.display(),
            opts.hub_extra,
            opts.max_outbox,
            opts.batch_max_changes,
        );
        toml.push_str(datasets_toml);
        let config = dir.join("agent.toml");
        fs::write(&config, toml).expect("write agent.toml");
        AgentProc { dir: dir.to_path_buf(), config, log: dir.join("agent.log"), child: None }
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.child = Some(spawn_run("kho-agent", &self.config, &self.log));
    }

    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    pub fn stop(&mut self) -> bool {
        self.child.take().is_none_or(terminate)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_tail(&self) -> String {
        format!("--- agent log ({}) ---\n{}", self.log.display(), tail(&self.log, 40))
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.join("data").join("outbox.sqlite")
    }

    /// Runs `kho-agent --config <config> <args>` to completion.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin_path("kho-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run kho-agent")
    }

    /// `kho-agent status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(bin_path("kho-agent"))
            .arg("--config")
            .arg(&self.config)
            .arg("status")
            .arg("--json")
            .output()
            .expect("run kho-agent status");
        assert!(out.status.success(), "kho-agent status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// One dataset's entry in `status --json` (`Null` if the agent has none for it).
    pub fn dataset_status(&self, dataset: &str) -> serde_json::Value {
        let s = self.status();
        s["datasets"].as_array().and_then(|ds| ds.iter().find(|d| d["dataset"] == dataset).cloned()).unwrap_or_default()
    }

    /// Waits (up to `timeout`) until `dataset` reports an error, and returns it. Datasets are
    /// polled independently, so a failing one may report after the others have converged.
    pub fn wait_dataset_error(&self, dataset: &str, timeout: Duration) -> String {
        let error = || self.dataset_status(dataset)["last_error"].as_str().unwrap_or_default().to_string();
        wait_for(
            timeout,
            &format!("an error for dataset {dataset} in the agent status"),
            || self.log_tail(),
            || !error().is_empty(),
        );
        error()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
