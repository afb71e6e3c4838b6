//! One simulated agent: sends its changes `1..=total` in batches through the agent's own
//! transports (`kho_agent::forward::{https, mqtt}`: the real wire protocol, bearer token, digest,
//! zstd, MQTT envelope and ack topic), with the agent's rules for answers: up to `window` batches
//! in flight (HTTPS 2, MQTT 1), answers taken in order, a gap or a failure restarts after the last
//! acknowledged change. An HTTPS agent alternates its batches over the hub URLs it is given, as a
//! round-robin load balancer would, and like a balancer's health check it leaves out for
//! [`DOWN_FOR`] an instance it could not connect to. Beside its batches it sends a heartbeat
//! every [`Plan::heartbeat`], as a real agent does, reporting a poll that captured everything sent
//! so far (so the hub confirms it at once or keeps it pending until the ledger gets there).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kho_agent::forward::https::HttpsTransport;
use kho_agent::forward::mqtt::MqttTransport;
use kho_agent::forward::{Delivery, Transport, TransportError};
use kho_shared::codec::{self, EncodedBody};
use kho_shared::protocol::{Batch, DatasetReport, Heartbeat};
use tokio::task::JoinHandle;

use super::datasets::{self, Shape};

/// How long an HTTPS agent leaves out a hub instance it could not reach.
pub const DOWN_FOR: Duration = Duration::from_secs(5);

/// How a simulated agent reaches the hub.
#[derive(Clone)]
pub enum Link {
    /// One transport per hub URL; batch `k` goes to `urls[k % len]`.
    Https(Vec<Arc<HttpsTransport>>),
    Mqtt(Arc<MqttTransport>),
}

impl Link {
    fn window(&self) -> usize {
        match self {
            Link::Https(_) => 2,
            Link::Mqtt(_) => 1,
        }
    }

    fn targets(&self) -> usize {
        match self {
            Link::Https(ts) => ts.len(),
            Link::Mqtt(_) => 1,
        }
    }

    async fn heartbeat(&self, target: usize, heartbeat: &Heartbeat) -> Result<(), TransportError> {
        match self {
            Link::Https(ts) => ts[target % ts.len()].send_heartbeat(heartbeat).await,
            Link::Mqtt(t) => t.send_heartbeat(heartbeat).await,
        }
    }

    fn send(&self, target: usize, body: Arc<EncodedBody>) -> JoinHandle<Result<Delivery, TransportError>> {
        match self {
            Link::Https(ts) => {
                let t = Arc::clone(&ts[target % ts.len()]);
                tokio::spawn(async move { t.send_batch(&body).await })
            }
            Link::Mqtt(t) => {
                let t = Arc::clone(t);
                tokio::spawn(async move { t.send_batch(&body).await })
            }
        }
    }
}

/// What one simulated agent does.
pub struct Plan {
    pub id: String,
    pub shape: &'static Shape,
    /// The dataset it writes (of `shape`).
    pub dataset: String,
    /// Time between heartbeats; `None`: none.
    pub heartbeat: Option<Duration>,
    /// Changes to send in all (sequences `1..=total`).
    pub total: u64,
    /// Changes per batch.
    pub batch: u64,
    /// Time between the starts of two batches (0 = as fast as answers come).
    pub interval: Duration,
    /// Delay before the first batch (spreads the agents' cadences).
    pub offset: Duration,
}

/// One agent's outcome.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub acked_through: u64,
    /// Send-to-ack time of every acknowledged batch, in milliseconds.
    pub latencies_ms: Vec<f64>,
    pub errors: u64,
    /// Gap replies (a batch that overtook its predecessor, e.g. across two hub instances).
    pub gaps: u64,
    pub last_error: Option<String>,
    /// Heartbeats the hub stored, and heartbeats that failed.
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
}

/// What the batch loop shares with the heartbeat task.
#[derive(Default)]
struct Shared {
    acked: AtomicU64,
    captured: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
}

/// Sends a heartbeat every `every` (the first after one period), alternating over the targets.
async fn heartbeats(plan_id: String, dataset: String, total: u64, every: Duration, link: Link, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for target in 0.. {
        tick.tick().await;
        let acked = shared.acked.load(Ordering::Relaxed);
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now_ms = i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX);
        let heartbeat = Heartbeat {
            v: kho_shared::protocol::PROTOCOL_VERSION,
            agent: plan_id.clone(),
            version: "kho-loadgen".into(),
            sent_at_ms: now_ms,
            outbox_depth: total.saturating_sub(acked),
            acked_through: acked,
            datasets: vec![DatasetReport {
                dataset: dataset.clone(),
                last_ok_poll_at_ms: Some(now_ms),
                captured_through_seq: shared.captured.load(Ordering::Relaxed),
                last_error: None,
                null_cursor_rows: 0,
                cdc: None,
            }],
        };
        let counter = match link.heartbeat(target, &heartbeat).await {
            Ok(()) => &shared.sent,
            Err(_) => &shared.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct InFlight {
    target: usize,
    first: u64,
    last: u64,
    sent: Instant,
    task: JoinHandle<Result<Delivery, TransportError>>,
}

fn encode(plan: &Plan, first: u64, last: u64) -> Result<EncodedBody, String> {
    let batch = Batch {
        v: kho_shared::protocol::PROTOCOL_VERSION,
        agent: plan.id.clone(),
        first_seq: first,
        last_seq: last,
        created_at_ms: 0,
        schemas: vec![datasets::schema(plan.shape, &plan.dataset)],
        changes: (first..=last).map(|s| datasets::change(plan.shape, &plan.dataset, &plan.id, s)).collect(),
    };
    codec::encode(&batch).map_err(|e| e.to_string())
}

fn abort_all(flight: &mut VecDeque<InFlight>) {
    for f in flight.drain(..) {
        f.task.abort();
    }
}

/// Runs `plan` over `link` until every change is acknowledged or `deadline` passes.
pub async fn run(plan: Plan, link: Link, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    let window = link.window();
    let start = Instant::now() + plan.offset;
    let mut flight: VecDeque<InFlight> = VecDeque::new();
    let (mut next_from, mut turn, mut sent_batches) = (1u64, 0usize, 0u32);
    let mut failures: u32 = 0;
    // Per target: left out until this instant (the balancer's health check).
    let mut down: Vec<Option<Instant>> = vec![None; link.targets()];
    let shared = Arc::new(Shared::default());
    let beat = plan.heartbeat.filter(|d| !d.is_zero()).map(|every| {
        let (id, dataset, link, shared) = (plan.id.clone(), plan.dataset.clone(), link.clone(), Arc::clone(&shared));
        tokio::spawn(heartbeats(id, dataset, plan.total, every, link, shared))
    });
    while out.acked_through < plan.total && Instant::now() < deadline {
        let due = start + plan.interval * sent_batches;
        let can_send = flight.len() < window && next_from <= plan.total;
        if can_send && Instant::now() >= due {
            let last = (next_from + plan.batch - 1).min(plan.total);
            match encode(&plan, next_from, last) {
                Ok(body) => {
                    let now = Instant::now();
                    let n = down.len();
                    let target = (0..n)
                        .map(|k| (turn + k) % n)
                        .find(|&t| down[t].is_none_or(|until| until <= now))
                        .unwrap_or(turn % n);
                    let task = link.send(target, Arc::new(body));
                    flight.push_back(InFlight { target, first: next_from, last, sent: now, task });
                    turn += 1;
                    sent_batches += 1;
                    next_from = last + 1;
                    shared.captured.fetch_max(last, Ordering::Relaxed);
                }
                Err(e) => {
                    out.errors += 1;
                    out.last_error = Some(e);
                    break;
                }
            }
            continue;
        }
        let wake = if can_send { due } else { deadline };
        let Some(front) = flight.front_mut() else {
            tokio::time::sleep_until(wake.into()).await;
            continue;
        };
        let answer = tokio::select! {
            a = &mut front.task => a,
            _ = tokio::time::sleep_until(wake.into()) => continue,
        };
        let Some(done) = flight.pop_front() else { continue };
        let restart = match answer.map_err(|e| TransportError::Network(e.to_string())).and_then(|r| r) {
            Ok(Delivery::Applied { through, .. }) if through >= done.first => {
                out.latencies_ms.push(done.sent.elapsed().as_secs_f64() * 1000.0);
                out.acked_through = out.acked_through.max(through.min(done.last));
                shared.acked.store(out.acked_through, Ordering::Relaxed);
                failures = 0;
                // The batches behind it must start right after what is acknowledged.
                flight.front().is_some_and(|f| f.first != out.acked_through + 1)
                    || (flight.is_empty() && next_from != out.acked_through + 1)
            }
            Ok(Delivery::Gap { expected }) => {
                out.gaps += 1;
                if expected > out.acked_through + 1 && expected <= next_from {
                    // The hub already holds more than we knew (an ack was lost): go on from there.
                    out.acked_through = expected - 1;
                }
                true
            }
            Ok(Delivery::Applied { through, .. }) => {
                out.errors += 1;
                out.last_error = Some(format!("acked {through} for a batch starting at {}", done.first));
                true
            }
            Err(e) => {
                if matches!(e, TransportError::Network(_)) {
                    down[done.target] = Some(Instant::now() + DOWN_FOR);
                }
                out.errors += 1;
                out.last_error = Some(e.to_string());
                failures += 1;
                let pause = Duration::from_millis(100 * u64::from(failures.min(30)));
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                true
            }
        };
        if restart {
            abort_all(&mut flight);
            next_from = out.acked_through + 1;
        }
    }
    abort_all(&mut flight);
    if let Some(beat) = beat {
        beat.abort();
    }
    out.heartbeats = shared.sent.load(Ordering::Relaxed);
    out.heartbeat_errors = shared.failed.load(Ordering::Relaxed);
    out
}
