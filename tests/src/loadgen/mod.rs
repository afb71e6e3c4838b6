//! `kho-loadgen`'s engine: N simulated agents (up to several thousand, one tokio task each)
//! sending realistic datasets ([`datasets`]) over HTTPS or MQTT with real credentials (`[[agent]]`
//! bearer tokens it writes into the hub config with [`hub_agents_toml`]), and a report of
//! throughput, ack latency percentiles and errors. [`verify`] checks a PostgreSQL warehouse holds
//! exactly what was sent. Used by the `kho-loadgen` binary and by tests/tests/scale_out.rs.

pub mod agent;
pub mod datasets;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kho_agent::config::HubSection;
use kho_agent::forward::https::HttpsTransport;
use kho_agent::forward::mqtt::MqttTransport;
use serde_json::json;

pub use agent::Outcome;
pub use datasets::Ownership;
use datasets::Shape;

/// One simulated agent's identity.
#[derive(Debug, Clone)]
pub struct SimAgent {
    pub id: String,
    pub token: String,
    pub shape: &'static Shape,
    /// The dataset it writes (of `shape`): its own, or shared ([`Ownership`]).
    pub dataset: String,
    pub mqtt: bool,
}

/// `n` agents named `<prefix>-<i>`, each writing its own dataset; the first `mqtt` of them use
/// MQTT. Tokens are derived from the id, so a generated hub config and a later run agree without
/// sharing a file.
pub fn agents(prefix: &str, n: usize, mqtt: usize) -> Vec<SimAgent> {
    agents_with(prefix, n, mqtt, Ownership::Own)
}

/// [`agents`], choosing whether they own their datasets or share five.
pub fn agents_with(prefix: &str, n: usize, mqtt: usize, ownership: Ownership) -> Vec<SimAgent> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i:05}");
            let token = format!("lg-{}", &kho_shared::codec::sha256_hex(format!("kho-loadgen {id}").as_bytes())[..40]);
            let shape = datasets::shape_of(i);
            let dataset = datasets::dataset_name(shape, &id, ownership);
            SimAgent { id, token, shape, dataset, mqtt: i < mqtt }
        })
        .collect()
}

/// The `[[agent]]` entries of the hub config for `agents`.
pub fn hub_agents_toml(agents: &[SimAgent]) -> String {
    let mut out = String::new();
    for a in agents {
        out.push_str(&format!(
            "\n[[agent]]\nid = \"{}\"\ntoken = \"{}\"\ndatasets = [\"{}\"]\n",
            a.id, a.token, a.dataset
        ));
    }
    out
}

/// A hub instance to send HTTPS batches to, with the CA its certificate chains to.
#[derive(Debug, Clone)]
pub struct HubTarget {
    pub url: String,
    pub ca: PathBuf,
}

/// The MQTT broker and where each agent's client certificate is (`<pki>/<id>.pem`, `.key`).
#[derive(Debug, Clone)]
pub struct BrokerTarget {
    pub url: String,
    pub ca: PathBuf,
    pub pki: PathBuf,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Load {
    pub hubs: Vec<HubTarget>,
    pub broker: Option<BrokerTarget>,
    /// Changes each agent sends in all.
    pub changes: u64,
    /// Changes per batch.
    pub batch: u64,
    /// Time between an agent's batches (0 = back to back).
    pub interval: Duration,
    /// Give up after this long.
    pub deadline: Duration,
    /// MQTT agents resend a batch whose ack has not come within this.
    pub mqtt_ack_timeout: Duration,
    /// Time between an agent's heartbeats (the agent's default is 10 s); `None`: none.
    pub heartbeat: Option<Duration>,
}

/// The run's numbers.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub agents: usize,
    pub changes_sent: u64,
    pub changes_acked: u64,
    pub seconds: f64,
    pub batches_acked: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub gaps: u64,
    /// Heartbeats stored by the hub, and heartbeats that failed (not counted in `errors`).
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
    /// Per agent: id and acknowledged-through sequence.
    pub acked: Vec<(String, u64)>,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
}

impl Report {
    pub fn changes_per_second(&self) -> f64 {
        self.changes_acked as f64 / self.seconds.max(1e-9)
    }

    pub fn print(&self, label: &str) {
        println!(
            "{label}: {} agents, {}/{} changes acknowledged in {:.1} s = {:.0} changes/s; {} batches, ack latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} errors, {} gap replies; {} heartbeats ({} failed)",
            self.agents,
            self.changes_acked,
            self.changes_sent,
            self.seconds,
            self.changes_per_second(),
            self.batches_acked,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.errors,
            self.gaps,
            self.heartbeats,
            self.heartbeat_errors
        );
        for e in &self.error_samples {
            println!("  error: {e}");
        }
    }
}

/// Percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() * p).div_ceil(100)).saturating_sub(1).min(sorted.len() - 1)]
}

fn link(a: &SimAgent, load: &Load) -> Result<agent::Link, String> {
    if a.mqtt {
        let b = load.broker.as_ref().ok_or("MQTT agents need a broker")?;
        let hub: HubSection = serde_json::from_value(json!({
            "transport": "mqtt", "url": b.url, "token": a.token, "ca_cert": b.ca,
            "client_cert": b.pki.join(format!("{}.pem", a.id)), "client_key": b.pki.join(format!("{}.key", a.id)),
            "keep_alive": "10s", "ack_timeout": format!("{}ms", load.mqtt_ack_timeout.as_millis()),
        }))
        .map_err(|e| e.to_string())?;
        let t = MqttTransport::new(&hub, &a.id, &a.token).map_err(|e| e.to_string())?;
        return Ok(agent::Link::Mqtt(Arc::new(t)));
    }
    let mut ts = Vec::new();
    for h in &load.hubs {
        let hub: HubSection =
            serde_json::from_value(json!({"url": h.url, "token": a.token, "ca_cert": h.ca, "request_timeout": "60s"}))
                .map_err(|e| e.to_string())?;
        ts.push(Arc::new(HttpsTransport::new(&hub, &a.token).map_err(|e| e.to_string())?));
    }
    if ts.is_empty() {
        return Err("HTTPS agents need at least one hub".into());
    }
    Ok(agent::Link::Https(ts))
}

/// Runs every agent at once and gathers the report.
pub async fn run(agents: &[SimAgent], load: &Load) -> Result<Report, String> {
    let started = Instant::now();
    let deadline = started + load.deadline;
    let mut tasks = Vec::with_capacity(agents.len());
    for (i, a) in agents.iter().enumerate() {
        let link = link(a, load)?;
        // Cadences are spread over one interval so the agents do not all fire together.
        let offset = if agents.is_empty() { Duration::ZERO } else { load.interval * i as u32 / agents.len() as u32 };
        let plan = agent::Plan {
            id: a.id.clone(),
            shape: a.shape,
            dataset: a.dataset.clone(),
            heartbeat: load.heartbeat,
            total: load.changes,
            batch: load.batch.max(1),
            interval: load.interval,
            offset,
        };
        tasks.push(tokio::spawn(agent::run(plan, link, deadline)));
    }
    let mut report =
        Report { agents: agents.len(), changes_sent: load.changes * agents.len() as u64, ..Report::default() };
    let mut latencies = Vec::new();
    for (a, t) in agents.iter().zip(tasks) {
        let out = t.await.map_err(|e| format!("agent {} task: {e}", a.id))?;
        report.changes_acked += out.acked_through;
        report.errors += out.errors;
        report.gaps += out.gaps;
        report.heartbeats += out.heartbeats;
        report.heartbeat_errors += out.heartbeat_errors;
        report.batches_acked += out.latencies_ms.len();
        latencies.extend_from_slice(&out.latencies_ms);
        if let Some(e) = out.last_error
            && report.error_samples.len() < 5
            && !report.error_samples.contains(&e)
        {
            report.error_samples.push(e);
        }
        report.acked.push((a.id.clone(), out.acked_through));
    }
    report.seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&latencies, 50);
    report.p99_ms = percentile(&latencies, 99);
    report.max_ms = latencies.last().copied().unwrap_or(0.0);
    Ok(report)
}
