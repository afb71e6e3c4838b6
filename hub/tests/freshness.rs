//! Catalogue, freshness, scorecard, readiness, metrics and alerts through the real HTTP interface
//! of an in-process hub whose clock the test moves.

mod common;

use common::fresh::{CATALOG, FreshHub, FreshOptions, Receiver, local};
use common::*;
use kho_shared::protocol::{Batch, Column, DatasetReport, DatasetSchema};
use kho_shared::types::ColumnType;
use serde_json::json;

fn ho_so(first: u64, last: u64) -> Batch {
    ho_so_batch("so-y-te-01", first, last)
}

fn ngan_sach(seq: u64, ky: &str) -> Batch {
    let schema = DatasetSchema {
        dataset: "ngan_sach".into(),
        key: vec!["id".into()],
        columns: vec![
            Column { name: "id".into(), ty: ColumnType::Int },
            Column { name: "ky_bao_cao".into(), ty: ColumnType::Text },
        ],
    };
    let changes = vec![upsert(seq, "ngan_sach", json!({"id": seq, "ky_bao_cao": ky}))];
    Batch {
        v: 1,
        agent: "so-tai-chinh".into(),
        first_seq: seq,
        last_seq: seq,
        created_at_ms: 0,
        schemas: vec![schema],
        changes,
    }
}

fn report(dataset: &str, poll_at: jiff::Timestamp, captured_through_seq: u64) -> DatasetReport {
    DatasetReport {
        dataset: dataset.into(),
        last_ok_poll_at_ms: Some(poll_at.as_millisecond()),
        captured_through_seq,
        last_error: None,
        null_cursor_rows: 0,
        cdc: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_catalogue_freshness_and_errors() {
    let hub = FreshHub::start(CATALOG, None, local("2026-01-20T10:00:00")).await;
    let cat = hub.json("/api/v1/catalog").await;
    assert_eq!(cat["departments"].as_array().map(Vec::len), Some(3));
    assert_eq!(cat["datasets"][0]["title"], "Hồ sơ thủ tục hành chính");
    assert_eq!(cat["scenarios"][0]["inputs"][0]["max_staleness"], "2 months");

    let v = hub.json("/api/v1/freshness").await;
    assert_eq!(v["datasets"][0]["status"], "never_received");
    assert_eq!(v["datasets"][0]["agents"], json!(["so-y-te-01"]), "catalogue grant");

    // The catalogue grants ho_so to so-y-te-01 (its config grants nothing): accepted.
    assert_eq!(hub.post(TOKEN_A, &ho_so(1, 2)).await.0, 200);
    let mut other = ho_so(3, 3);
    other.schemas[0].dataset = "thuoc".into();
    other.changes[0].dataset = "thuoc".into();
    assert_eq!(hub.post(TOKEN_A, &other).await.0, 403, "neither config nor catalogue grants thuoc");

    // A poll reported before the ledger holds its changes is confirmed only when they arrive.
    let poll = local("2026-01-20T09:00:00");
    hub.heartbeat(TOKEN_B, "so-tai-chinh", vec![report("ngan_sach", poll, 1), report("ho_so", poll, 0)]).await;
    hub.at(local("2026-01-20T10:00:01")).await;
    assert!(hub.dataset("ngan_sach").await["last_sync_at"].is_null(), "pending until seq 1 is applied");
    assert!(hub.dataset("ho_so").await["last_sync_at"].is_null(), "so-tai-chinh may not vouch for ho_so");
    assert_eq!(hub.post(TOKEN_B, &ngan_sach(1, "2025-12")).await.0, 200);
    hub.at(local("2026-01-20T10:00:02")).await;
    let ns = hub.dataset("ngan_sach").await;
    assert_eq!(ns["last_sync_at"], "2026-01-20T02:00:00Z", "{ns}");
    assert_eq!(ns["max_business_date"], "2025-12-01", "freshness_field maximum from the batch");
    assert_eq!(ns["status"], "on_time");
    assert_eq!(ns["agent_offline"], false);

    let v = hub.json("/api/v1/freshness?department=so_tai_chinh").await;
    assert_eq!(v["datasets"].as_array().map(Vec::len), Some(1));
    let v = hub.json("/api/v1/freshness?status=on_time").await;
    assert_eq!(v["datasets"].as_array().map(Vec::len), Some(2));
    let (status, body) = hub.get("/api/v1/freshness?status=late").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    for path in
        ["/api/v1/freshness?department=nope", "/api/v1/departments/nope/scorecard", "/api/v1/scenarios/nope/readiness"]
    {
        let (status, body) = hub.get(path).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("nope")), "{body}");
    }

    let card = hub.json("/api/v1/departments/so_y_te/scorecard").await;
    assert_eq!(card["department"]["contact"]["email"], "so_y_te@sonla.example");
    assert_eq!(card["current"]["on_time"], 1);
    assert_eq!(card["datasets"][0]["periods"].as_array().map(Vec::len), Some(12));

    let metrics =
        hub.client.get(format!("{}/metrics", hub.base)).send().await.expect("metrics").text().await.expect("text");
    for line in [
        "kho_hub_dataset_status{dataset=\"ho_so\",department=\"so_y_te\",status=\"on_time\"} 1",
        "kho_hub_dataset_status{dataset=\"ho_so\",department=\"so_y_te\",status=\"overdue\"} 0",
        "kho_hub_dataset_staleness_seconds{dataset=\"ho_so\",department=\"so_y_te\"} 2",
        "kho_hub_agent_offline{agent=\"so-tai-chinh\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(metrics.contains("kho_hub_agent_last_seen_timestamp_seconds{agent=\"so-y-te-01\"}"), "{metrics}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_data_on_time_then_overdue_then_recovered() {
    let receiver = Receiver::start(1).await; // the first delivery fails: alerts are retried
    let hub = FreshHub::start(CATALOG, Some(&receiver.url), local("2026-01-20T10:00:00")).await;

    // January: data arrives; February 3: January's report, on time.
    assert_eq!(hub.post(TOKEN_A, &ho_so(1, 2)).await.0, 200);
    hub.at(local("2026-01-20T10:00:01")).await;
    assert_eq!(hub.dataset("ho_so").await["status"], "on_time");
    hub.clock.set(local("2026-02-03T10:00:00"));
    assert_eq!(hub.post(TOKEN_A, &ho_so(3, 3)).await.0, 200);
    hub.at(local("2026-02-03T10:00:01")).await;
    let d = hub.dataset("ho_so").await;
    assert_eq!((d["status"].as_str(), d["period"]["label"].as_str()), (Some("on_time"), Some("2026-01")));
    assert_eq!(hub.json("/api/v1/scenarios/kb_y_te/readiness").await["state"], "ready");

    // The department stops sending; its agent still checks in. 4 March: February's report is due.
    hub.clock.set(local("2026-03-04T10:00:00"));
    hub.heartbeat(TOKEN_A, "so-y-te-01", vec![]).await;
    hub.at(local("2026-03-04T10:00:01")).await;
    assert_eq!(hub.dataset("ho_so").await["status"], "due");
    // 6 March: past 5 March 17:00, overdue; the scenario is blocked and names who to call.
    hub.clock.set(local("2026-03-06T09:00:00"));
    hub.heartbeat(TOKEN_A, "so-y-te-01", vec![]).await;
    hub.at(local("2026-03-06T09:00:01")).await;
    let d = hub.dataset("ho_so").await;
    assert_eq!((d["status"].as_str(), d["agent_offline"].as_bool()), (Some("overdue"), Some(false)), "{d}");
    let alert = receiver.wait_for("dataset_overdue", "ho_so").await;
    assert_eq!(alert["period"], "2026-02");
    assert_eq!(alert["contact"]["phone"], "0212 385 0008");
    assert!(*receiver.calls.lock().expect("calls") >= 2, "the failed first delivery was retried");
    let r = hub.json("/api/v1/scenarios/kb_y_te/readiness").await;
    assert_eq!(r["state"], "blocked", "{r}");
    let b = &r["blocking"][0];
    assert_eq!((b["dataset"].as_str(), b["reason"].as_str()), (Some("ho_so"), Some("overdue")));
    assert_eq!(
        (b["department"].as_str(), b["contact"]["email"].as_str()),
        (Some("so_y_te"), Some("so_y_te@sonla.example"))
    );
    let overdue = hub.json("/api/v1/freshness?status=overdue").await;
    assert_eq!(overdue["datasets"][0]["dataset"], "ho_so");

    // 7 March noon: the late report arrives. Everything recovers; February was 2 days late.
    hub.clock.set(local("2026-03-07T12:00:00"));
    assert_eq!(hub.post(TOKEN_A, &ho_so(4, 4)).await.0, 200);
    hub.at(local("2026-03-07T12:00:01")).await;
    assert_eq!(hub.dataset("ho_so").await["status"], "on_time");
    receiver.wait_for("dataset_recovered", "ho_so").await;
    assert_eq!(hub.json("/api/v1/scenarios/kb_y_te/readiness").await["state"], "ready");
    let card = hub.json("/api/v1/departments/so_y_te/scorecard").await;
    let periods = card["datasets"][0]["periods"].as_array().expect("periods");
    let feb = periods.iter().find(|p| p["period"]["label"] == "2026-02").expect("february");
    assert_eq!((feb["verdict"].as_str(), feb["days_late"].as_i64()), (Some("late"), Some(2)), "{feb}");
    let jan = periods.iter().find(|p| p["period"]["label"] == "2026-01").expect("january");
    assert_eq!(jan["verdict"], "on_time");
    assert_eq!((card["last_periods"]["on_time"].as_u64(), card["last_periods"]["late"].as_u64()), (Some(1), Some(1)));

    // The agent goes silent: one agent alert; March's report turns overdue while it is offline,
    // and that dataset alert is held back.
    hub.at(local("2026-03-20T12:00:00")).await;
    let a = receiver.wait_for("agent_offline", "so-y-te-01").await;
    assert_eq!(a["datasets"], json!(["ho_so"]));
    hub.at(local("2026-04-06T09:00:00")).await;
    let d = hub.dataset("ho_so").await;
    assert_eq!((d["status"].as_str(), d["agent_offline"].as_bool()), (Some("overdue"), Some(true)));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let overdue_alerts = receiver.kinds().iter().filter(|k| k.as_str() == "dataset_overdue:ho_so").count();
    assert_eq!(overdue_alerts, 1, "suppressed while the agent is offline: {:?}", receiver.kinds());
    // It comes back with the data: agent recovered, dataset on time, no dataset alert owed.
    hub.clock.set(local("2026-04-07T08:00:00"));
    assert_eq!(hub.post(TOKEN_A, &ho_so(5, 5)).await.0, 200);
    hub.at(local("2026-04-07T08:00:01")).await;
    receiver.wait_for("agent_recovered", "so-y-te-01").await;
    assert_eq!(hub.dataset("ho_so").await["status"], "on_time");

    // History survives in the warehouse.
    let conn = rusqlite::Connection::open(hub.dir.path().join("data/warehouse.sqlite")).expect("open");
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM _kho_freshness_history WHERE dataset = 'ho_so' AND status = 'overdue'",
            [],
            |r| r.get(0),
        )
        .expect("history");
    assert_eq!(n, 2, "February and March overdue transitions");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_reloads_and_a_bad_file_keeps_the_old_one() {
    let hub = FreshHub::start(CATALOG, None, local("2026-01-20T10:00:00")).await;
    let count = |v: &serde_json::Value| v["datasets"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&hub.json("/api/v1/catalog").await), 2);

    let grown = format!(
        "{CATALOG}\n[[dataset]]\nid = \"tiem_chung\"\ntitle = \"Tiêm chủng\"\ndepartment = \"so_y_te\"\n\
         cadence = \"weekly\"\ndeadline = {{ weekday = \"monday\", time = \"10:00\" }}\nupdate_kind = \"sync\"\n"
    );
    std::fs::write(hub.catalog_path(), &grown).expect("write");
    let mut reloaded = false;
    for _ in 0..200 {
        if count(&hub.json("/api/v1/catalog").await) == 3 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(reloaded, "the changed file was not picked up");
    hub.at(local("2026-01-20T10:00:01")).await;
    assert_eq!(hub.dataset("tiem_chung").await["status"], "never_received");

    // A file with a bad deadline and a dangling reference is refused; the last good one stays.
    let bad = grown
        .replace("day = 5, time = \"17:00\" }\nupdate_kind = \"change\"", "day = 40 }\nupdate_kind = \"change\"")
        .replace(
            "max_staleness = \"2 months\"",
            "max_staleness = \"2 months\" }, { dataset = \"ghost\", max_staleness = \"1 day\"",
        );
    assert_ne!(bad, grown);
    std::fs::write(hub.catalog_path(), &bad).expect("write");
    let mut refused = false;
    for _ in 0..200 {
        let m = hub.client.get(format!("{}/metrics", hub.base)).send().await.expect("m").text().await.expect("t");
        let failures = m.lines().find_map(|l| l.strip_prefix("kho_hub_catalog_reload_failures_total "));
        if failures.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 1) {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "the bad file was not noticed");
    let cat = hub.json("/api/v1/catalog").await;
    assert_eq!(count(&cat), 3);
    assert_eq!(cat["datasets"][0]["deadline"]["day"], 5, "old catalogue still in force");
    let problems = kho_hub::catalog::Catalog::from_toml_str(&bad, "bad").expect_err("bad").to_string();
    assert!(
        problems.contains("dataset[ho_so].deadline.day") && problems.contains("scenario[kb_y_te].inputs[1].dataset"),
        "{problems}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_prints_the_table_from_a_running_hub() {
    let hub = FreshHub::start(CATALOG, None, local("2026-03-06T09:00:00")).await;
    assert_eq!(hub.post(TOKEN_A, &ho_so(1, 1)).await.0, 200);
    hub.at(local("2026-03-06T09:00:01")).await;
    let url = hub.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kho-hub"))
            .args(["status", "--url", &url, "--color", "never"])
            .output()
            .expect("run kho-hub status")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains('\x1b'), "plain when not asked for colour: {text}");
    assert!(text.contains("so_y_te — Sở Y tế") && text.contains("so_tai_chinh — Sở Tài chính"), "{text}");
    let row = text.lines().find(|l| l.trim_start().starts_with("ho_so")).expect("ho_so row");
    for cell in ["on_time", "online", "monthly", "2026-02", "2026-03-05 17:00", "2026-03-06 09:00"] {
        assert!(row.contains(cell), "{cell} missing in {row:?}");
    }
    let row = text.lines().find(|l| l.trim_start().starts_with("ngan_sach")).expect("ngan_sach row");
    assert!(row.contains("never_received") && row.contains("offline"), "{row:?}");
    hub.stop().await;
}

#[test]
fn check_validates_the_example_catalogue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/catalog.toml");
    std::fs::copy(example, dir.path().join("catalog.toml")).expect("copy");
    let hub_toml = dir.path().join("hub.toml");
    std::fs::write(&hub_toml, "[hub]\ndata_dir = \"data\"\n[catalog]\npath = \"catalog.toml\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kho-hub"))
        .arg("--config")
        .arg(&hub_toml)
        .arg("check")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("9 departments, 17 datasets, 5 scenarios"), "{stdout}");
    std::fs::write(dir.path().join("catalog.toml"), "[[dataset]]\nid = \"x\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kho-hub"))
        .arg("--config")
        .arg(&hub_toml)
        .arg("check")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("catalog.toml"));
}

/// Everything over HTTPS with private CAs: the hub's API (self-signed), the webhook receiver (its
/// own CA, trusted through `alerts.ca_cert`) and `kho-hub status --ca`. Along the way: the daily
/// digest per department at 07:30 local, once a day even across a restart, and the agent
/// liveness history with its offline period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_digest_liveness_history_and_status_cli() {
    let receiver_tls = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start_tls(0, receiver_tls.path()).await;
    let options = FreshOptions {
        webhook: Some(receiver.url.clone()),
        webhook_ca: Some(receiver_tls.path().join("ca.pem")),
        digest_at: Some("07:30".into()),
        https: true,
    };
    let hub = FreshHub::start_with(CATALOG, options, local("2026-03-06T07:00:00")).await;
    assert!(hub.base.starts_with("https://"));
    assert_eq!(hub.post(TOKEN_A, &ho_so(1, 2)).await.0, 200);
    hub.at(local("2026-03-06T07:29:59")).await;
    let digests = |r: &Receiver| r.kinds().iter().filter(|k| k.starts_with("department_digest")).count();
    assert_eq!(digests(&receiver), 0, "not before 07:30");

    // 07:30 local: one digest per department with datasets, over HTTPS to the private-CA receiver.
    hub.at(local("2026-03-06T07:30:00")).await;
    let tc = wait_digest(&receiver, "so_tai_chinh", 1).await;
    assert_eq!(tc["contact"]["email"], "so_tai_chinh@sonla.example");
    assert_eq!(tc["digest"]["date"], "2026-03-06");
    assert_eq!(tc["digest"]["time_zone"], "Asia/Ho_Chi_Minh");
    assert_eq!(tc["digest"]["current"]["never_received"], 1);
    assert_eq!(tc["digest"]["attention"][0]["dataset"], "ngan_sach");
    assert_eq!(tc["digest"]["attention"][0]["status"], "never_received");
    assert_eq!(tc["digest"]["agents_offline"], json!(["so-tai-chinh"]), "never connected");
    let yt = wait_digest(&receiver, "so_y_te", 1).await;
    assert_eq!(yt["digest"]["current"]["on_time"], 1, "{yt}");
    assert_eq!(yt["summary"], "Sở Y tế: 1/1 datasets on time");
    assert_eq!(digests(&receiver), 2, "vp_ubnd owns no dataset: no digest");

    // The agent goes quiet for more than agent_offline_after (3 days) and comes back.
    hub.at(local("2026-03-09T12:00:00")).await;
    receiver.wait_for("agent_offline", "so-y-te-01").await;
    hub.clock.set(local("2026-03-10T09:00:00"));
    hub.heartbeat(TOKEN_A, "so-y-te-01", vec![]).await;
    hub.at(local("2026-03-10T09:00:01")).await;
    receiver.wait_for("agent_recovered", "so-y-te-01").await;
    // The 9th's and the 10th's digests were sent at the first pass after their 07:30.
    wait_digest(&receiver, "so_y_te", 3).await;
    let live = hub.json("/api/v1/agents/so-y-te-01/liveness").await;
    let times: Vec<(bool, &str)> = live["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| (t["online"].as_bool().unwrap_or_default(), t["at"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        times,
        [(true, "2026-03-06T00:00:00Z"), (false, "2026-03-09T00:00:00Z"), (true, "2026-03-10T02:00:00Z")],
        "seen at 07:00 local, offline 3 days later, back at 09:00 on the 10th: {live}"
    );
    assert_eq!(live["offline_periods"][0]["seconds"], 26 * 3600);
    let share = live["availability"].as_f64().expect("availability");
    assert!(share > 0.7 && share < 0.75, "74 h of 100 h online: {share}");
    let (status, body) = hub.get("/api/v1/agents/nope/liveness").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");

    // A restart after today's digest neither re-sends it nor re-records liveness.
    hub.clock.set(local("2026-03-10T10:00:00"));
    let before = digests(&receiver);
    let hub = hub.restart().await;
    hub.at(local("2026-03-10T10:00:01")).await;
    hub.at(local("2026-03-10T10:00:02")).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(digests(&receiver), before, "today's digest was already sent: {:?}", receiver.kinds());
    let live = hub.json("/api/v1/agents/so-y-te-01/liveness").await;
    assert_eq!(live["transitions"].as_array().map(Vec::len), Some(3), "{live}");

    // `kho-hub status` over HTTPS: trusts the hub's CA with --ca, refuses without it.
    let url = hub.base.clone();
    let ca = hub.dir.path().join("data/tls/ca.pem");
    let (ok, refused) = tokio::task::spawn_blocking(move || {
        let run = |extra: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_kho-hub"))
                .args(["status", "--url", &url, "--color", "never"])
                .args(extra)
                .output()
                .expect("run kho-hub status")
        };
        (run(&["--ca", ca.to_str().expect("utf-8 path")]), run(&[]))
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}\n{}", String::from_utf8_lossy(&ok.stderr));
    assert!(text.lines().any(|l| l.trim_start().starts_with("ho_so") && l.contains("online")), "{text}");
    assert!(!refused.status.success(), "an untrusted certificate must be refused");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&hub.base), "the error names the URL: {err}");
    hub.stop().await;
}

/// Waits for the `n`th digest of `department` and returns it.
async fn wait_digest(receiver: &Receiver, department: &str, n: usize) -> serde_json::Value {
    for _ in 0..400 {
        let got: Vec<serde_json::Value> = receiver
            .received
            .lock()
            .expect("received")
            .iter()
            .filter(|a| a["kind"] == "department_digest" && a["department"] == department)
            .cloned()
            .collect();
        if got.len() >= n {
            return got[n - 1].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no digest {n} for {department}; got {:?}", receiver.kinds());
}
