//! Freshness with the real `kho-agent` process: the agent syncs a department table into an
//! in-process hub (HTTPS, self-signed CA) whose clock the test moves through a month. The agent's
//! own heartbeats keep it "online" while its data goes overdue; its own batch brings the dataset
//! back; killing it makes it "offline"; restarting it brings it back. The webhook receiver is a
//! real local HTTP server.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TOKEN_A;
use common::fresh::{CATALOG, FreshHub, FreshOptions, Receiver, local};

/// The `kho-agent` binary next to this package's `kho-hub` (a workspace build builds both).
fn agent_binary() -> PathBuf {
    let hub = Path::new(env!("CARGO_BIN_EXE_kho-hub"));
    let agent = hub.with_file_name("kho-agent");
    assert!(agent.is_file(), "{} is missing: build the workspace (`cargo test --workspace` does)", agent.display());
    agent
}

struct Agent {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn start(dir: &Path, hub: &FreshHub, source: &Path) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("agent.toml");
        let ca = hub.dir.path().join("data/tls/ca.pem");
        std::fs::write(
            &config,
            format!(
                "[agent]\nid = \"so-y-te-01\"\ndata_dir = \"data\"\n\
                 [hub]\nurl = \"{}\"\ntoken = \"{TOKEN_A}\"\nca_cert = \"{}\"\nheartbeat_interval = \"100ms\"\n\
                 [forward]\nlinger = \"20ms\"\n\
                 [[dataset]]\nname = \"ho_so\"\ntable = \"ho_so\"\nkey = [\"id\"]\nmode = \"snapshot\"\npoll_interval = \"100ms\"\n\
                 [dataset.source]\nkind = \"sqlite\"\npath = \"{}\"\n",
                hub.base.replace("127.0.0.1", "localhost"),
                ca.display(),
                source.display()
            ),
        )
        .unwrap();
        let mut a = Agent { config, log: dir.join("agent.log"), child: None };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(agent_binary())
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn source(path: &Path, rows: std::ops::RangeInclusive<i64>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS ho_so (id INTEGER PRIMARY KEY, trang_thai TEXT NOT NULL)").unwrap();
    for id in rows {
        conn.execute("INSERT INTO ho_so VALUES (?1, 'Đã tiếp nhận')", [id]).unwrap();
    }
}

/// Polls `check` (async) until it holds, for up to 30 s.
async fn until<F, Fut>(what: &str, agent: &Agent, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1_200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}\n{}", agent.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_on_time_overdue_recovered_offline_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let options = FreshOptions { webhook: Some(receiver.url.clone()), https: true, ..FreshOptions::default() };
    let hub = FreshHub::start_with(CATALOG, options, local("2026-02-03T10:00:00")).await;
    let src = tmp.path().join("so_y_te.sqlite");
    source(&src, 1..=200);
    let mut agent = Agent::start(&tmp.path().join("agent"), &hub, &src);

    // 3 February: the agent's initial sync is January's report, on time.
    until("the initial sync to be on time", &agent, || async {
        hub.at(local("2026-02-03T10:00:00")).await;
        hub.dataset("ho_so").await["status"] == "on_time"
    })
    .await;
    assert_eq!(hub.dataset("ho_so").await["period"]["label"], "2026-01");

    // 6 March: nothing new in the source, but the agent keeps checking in — overdue, not offline.
    // (The clock jumps a month at once, so the hub first sees a month without contact: one
    // offline/online pair in the history and alerts, until the next heartbeat arrives.)
    hub.clock.set(local("2026-03-06T09:00:00"));
    until("the dataset to turn overdue with the agent online", &agent, || async {
        hub.at(local("2026-03-06T09:00:00")).await;
        let d = hub.dataset("ho_so").await;
        d["status"] == "overdue" && d["agent_offline"] == false && d["agent_last_seen_at"] == "2026-03-06T02:00:00Z"
    })
    .await;
    let alert = receiver.wait_for("dataset_overdue", "ho_so").await;
    assert_eq!(alert["period"], "2026-02");
    assert_eq!(hub.json("/api/v1/scenarios/kb_y_te/readiness").await["state"], "blocked");

    // The department enters February's dossiers; the agent's next poll sends them.
    source(&src, 201..=260);
    receiver.wait_for("dataset_recovered", "ho_so").await;
    assert_eq!(hub.dataset("ho_so").await["status"], "on_time");
    assert_eq!(hub.json("/api/v1/scenarios/kb_y_te/readiness").await["state"], "ready");
    let card = hub.json("/api/v1/departments/so_y_te/scorecard").await;
    let feb =
        card["datasets"][0]["periods"].as_array().unwrap().iter().find(|p| p["period"]["label"] == "2026-02").cloned();
    assert_eq!(feb.map(|p| p["verdict"].clone()), Some("late".into()), "{card}");

    // The agent dies. Four days later (offline after 3) the hub says so, once.
    let offline_alerts = receiver.kinds().iter().filter(|k| k.as_str() == "agent_offline:so-y-te-01").count();
    agent.kill9();
    hub.at(local("2026-03-10T09:00:00")).await;
    let alert = receiver.wait_for_nth("agent_offline", "so-y-te-01", offline_alerts + 1).await;
    assert_eq!(alert["datasets"], serde_json::json!(["ho_so"]));
    assert_eq!(alert["last_seen_at"], "2026-03-06T02:00:00Z");
    assert_eq!(hub.dataset("ho_so").await["agent_offline"], true);

    // Restarted, its first heartbeat brings it back; the liveness history shows the outage.
    agent.spawn();
    receiver.wait_for_nth("agent_recovered", "so-y-te-01", offline_alerts + 1).await;
    let live = hub.json("/api/v1/agents/so-y-te-01/liveness").await;
    assert_eq!(live["offline"], false, "{live}");
    let last = live["offline_periods"].as_array().and_then(|p| p.last().cloned()).unwrap();
    assert_eq!(last["from"], "2026-03-09T02:00:00Z", "3 days after the last contact: {live}");
    assert_eq!(last["to"], "2026-03-10T02:00:00Z", "back at the restart: {live}");
    hub.stop().await;
}
