//! Two hub instances on one PostgreSQL warehouse and one Mosquitto (issue 11): 50 simulated
//! agents (`kho_tests::loadgen`; 25 over MQTT through the shared subscription, 25 over HTTPS
//! alternating between the instances as a round-robin balancer would), kill -9 of the leading
//! instance mid-load. The warehouse must then hold exactly what the agents sent (0 lost, 0
//! duplicated, every ledger at its agent's last sequence), the leadership must move to the
//! survivor (status API and `kho_hub_leader`), and an alert the first leader sent must not be sent
//! again by the second.

use std::time::Duration;

use kho_tests::loadgen::{self, BrokerTarget, HubTarget, Load, verify};
use kho_tests::mosquitto::Broker;
use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{HubProc, free_port, wait_for};
use kho_tests::security::client;
use kho_tests::webhook::Receiver;

const CHANGES: u64 = 150;

async fn leader_flags(hub: &HubProc) -> Option<(bool, String)> {
    let http = client(hub);
    let body = http.get(format!("{}/api/v1/status", hub.url())).send().await.ok()?.bytes().await.ok()?;
    let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let metrics = http.get(format!("{}/metrics", hub.url())).send().await.ok()?.text().await.ok()?;
    let gauge = metrics.lines().find(|l| l.starts_with("kho_hub_leader ")).unwrap_or("").to_string();
    Some((status["leader"].as_bool()?, gauge))
}

fn applied_total(pg: &mut PgWarehouse) -> i64 {
    pg.count("SELECT coalesce(sum(applied_seq), 0)::bigint FROM kho.ledger")
}

// A synchronous test with its own runtime: the PostgreSQL checks use the blocking client.
#[test]
fn two_hubs_one_killed_mid_load_lose_nothing_and_alert_once() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let flags = |hub: &HubProc| rt.block_on(leader_flags(hub));
    let keep = tempfile::tempdir().expect("tempdir");
    let dir = keep.path();
    let mut pg = PgWarehouse::create();
    let canary = loadgen::agents("canary", 1, 0);
    let sims = loadgen::agents("xa", 50, 25);
    let mqtt_ids: Vec<&str> = sims.iter().filter(|a| a.mqtt).map(|a| a.id.as_str()).collect();
    let broker = Broker::start(&dir.join("broker"), &mqtt_ids);
    let receiver = rt.block_on(Receiver::start());

    let mut common = loadgen::hub_agents_toml(&canary);
    common.push_str(&loadgen::hub_agents_toml(&sims));
    common.push_str(&format!(
        "\n[freshness]\nevaluate_interval = \"300ms\"\nagent_offline_after = \"4s\"\n\n[alerts]\nwebhook_url = \"{}\"\nmax_backoff = \"1s\"\n",
        receiver.url
    ));
    let mut hub_a = HubProc::configure_with(
        &dir.join("a"),
        free_port(),
        &[],
        &pg.hub_toml(2),
        &format!("{common}{}", broker.hub_toml()),
    );
    hub_a.spawn();
    wait_for(
        Duration::from_secs(30),
        "hub A to lead",
        || hub_a.log_tail(),
        || flags(&hub_a).is_some_and(|(l, g)| l && g == "kho_hub_leader 1"),
    );
    let mut hub_b = HubProc::configure_with(
        &dir.join("b"),
        free_port(),
        &[],
        &pg.hub_toml(2),
        &format!("{common}{}", broker.hub_toml()),
    );
    hub_b.spawn();
    let b_flags = flags(&hub_b).expect("hub B answers");
    assert_eq!(b_flags, (false, "kho_hub_leader 0".to_string()), "only one instance leads");

    let context = |a: &HubProc, b: &HubProc| {
        format!("{}\n{}\n{}\nalerts: {:?}", a.log_tail(), b.log_tail(), broker.log_tail(), receiver.kinds())
    };
    let targets =
        vec![HubTarget { url: hub_a.url(), ca: hub_a.ca_path() }, HubTarget { url: hub_b.url(), ca: hub_b.ca_path() }];
    let load = Load {
        hubs: targets,
        broker: Some(BrokerTarget { url: broker.url(), ca: broker.ca_path(), pki: broker.dir.join("pki") }),
        changes: CHANGES,
        batch: 5,
        interval: Duration::from_millis(100),
        deadline: Duration::from_secs(90),
        mqtt_ack_timeout: Duration::from_secs(3),
        // Heartbeats too, so their sync evidence crosses the instances and the kill as well.
        heartbeat: Some(Duration::from_secs(2)),
    };

    // A canary agent sends a little and falls silent: the leader (A) reports it offline, once.
    let small = Load { changes: 10, batch: 5, ..load.clone() };
    let report = rt.block_on(loadgen::run(&canary, &small)).expect("canary run");
    assert_eq!(report.changes_acked, 10, "{:?}\n{}", report.error_samples, context(&hub_a, &hub_b));
    wait_for(
        Duration::from_secs(60),
        "A's agent_offline alert for the canary",
        || context(&hub_a, &hub_b),
        || receiver.count("agent_offline", &canary[0].id) >= 1,
    );

    // The load: 50 agents; hub A (the leader) is killed once a quarter of it is applied.
    let run = rt.spawn({
        let (sims, load) = (sims.clone(), load.clone());
        async move { loadgen::run(&sims, &load).await }
    });
    let total = (CHANGES * sims.len() as u64) as i64;
    wait_for(
        Duration::from_secs(60),
        "a quarter of the load to be applied",
        || context(&hub_a, &hub_b),
        || applied_total(&mut pg) >= total / 4,
    );
    assert!(applied_total(&mut pg) < total, "the load finished before the kill; nothing was tested");
    hub_a.kill9();

    // The survivor takes the lead.
    wait_for(
        Duration::from_secs(30),
        "hub B to take the lead",
        || context(&hub_a, &hub_b),
        || flags(&hub_b).is_some_and(|(l, g)| l && g == "kho_hub_leader 1"),
    );

    let report = rt.block_on(run).expect("load task").expect("load run");
    report.print("scale_out");
    assert_eq!(
        report.changes_acked,
        report.changes_sent,
        "every change acknowledged: {:?}\n{}",
        report.error_samples,
        context(&hub_a, &hub_b)
    );

    // The warehouse holds exactly what was sent.
    let expect: Vec<verify::Expect<'_>> = canary
        .iter()
        .map(|a| verify::Expect { agent: &a.id, shape: a.shape, dataset: &a.dataset, sent: 10 })
        .chain(sims.iter().map(|a| verify::Expect { agent: &a.id, shape: a.shape, dataset: &a.dataset, sent: CHANGES }))
        .collect();
    let verdict = verify::check(&pg.url(), "public", &expect).expect("verify");
    assert!(verdict.is_exact(), "warehouse differs from what was sent: {verdict:?}");
    assert_eq!(verdict.changes_expected, 10 + CHANGES * 50);

    // Once the load is over the agents fall silent: B (now the leader) reports them offline.
    // Meanwhile it has evaluated many times with the canary still offline: its alert is not repeated.
    wait_for(
        Duration::from_secs(60),
        "B's agent_offline alerts for the simulated agents",
        || context(&hub_a, &hub_b),
        || sims.iter().all(|a| receiver.count("agent_offline", &a.id) >= 1),
    );
    assert_eq!(
        receiver.count("agent_offline", &canary[0].id),
        1,
        "the canary's alert was sent twice\n{}",
        context(&hub_a, &hub_b)
    );
    // No agent was reported offline twice in a row (each repeat needs a recovery in between).
    for a in canary.iter().chain(&sims) {
        let mut offline = false;
        for k in receiver.kinds() {
            if k == format!("agent_offline:{}", a.id) {
                assert!(!offline, "agent_offline for {} sent twice\n{}", a.id, context(&hub_a, &hub_b));
                offline = true;
            } else if k == format!("agent_recovered:{}", a.id) {
                offline = false;
            }
        }
    }
}
