//! Data quality beyond one batch (issue 12), end to end through real agents and a real hub, on
//! the SQLite and the PostgreSQL warehouse:
//! - a `reference` rule across two datasets of two agents: the referenced unit arrives after the
//!   dossiers, and the periodic full check closes the violation without any dossier being
//!   re-sent; deleting the unit opens it again;
//! - `row_count` per period (the latest closed month, by the `freshness_field`);
//! - `max_change_share`: a sync changing half of the rows is flagged (API and metrics), and a
//!   later sync within the limit clears the flag;
//! - history per period (`/api/v1/quality?dataset=`), the department scorecard's quality column,
//!   and the dashboard (quality per dataset on the board, violations with example keys on the
//!   dataset page for operators, without keys on the public view).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::source::SourceDb;
use serde_json::Value;

const CATALOG: &str = r#"
[[department]]
code = "so_y_te"
name = "Sở Y tế"
contact = { name = "Văn phòng Sở", phone = "0212 385 0010" }

[[department]]
code = "so_noi_vu"
name = "Sở Nội vụ"
contact = { name = "Văn phòng Sở", phone = "0212 385 0020" }

[[dataset]]
id = "don_vi"
title = "Danh mục đơn vị"
department = "so_noi_vu"
cadence = "monthly"
update_kind = "sync"

[[dataset]]
id = "ho_so"
title = "Hồ sơ thủ tục hành chính"
department = "so_y_te"
cadence = "daily"
update_kind = "sync"
freshness_field = "updated_at"

[[dataset.rule]]
check = "reference"
column = "don_vi"
dataset = "don_vi"
ref_column = "ten"

[[dataset.rule]]
check = "row_count"
period = "month"
min_rows = 1

[[dataset.rule]]
check = "max_change_share"
max_percent = 25.0
"#;

const MISSING_UNIT: &str = "Trạm Y tế xã Chiềng Sinh";
const WAIT: Duration = Duration::from_secs(60);

struct Web {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Web {
    fn new(hub: &HubProc) -> Web {
        let http = hub.client();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Web { rt, http, base: hub.url() }
    }

    /// Status, `Set-Cookie` values and body.
    fn send(&self, path: &str, cookie: &str, form: Option<&str>) -> (u16, Vec<String>, String) {
        self.rt.block_on(async {
            let url = format!("{}{path}", self.base);
            let mut req = if form.is_some() { self.http.post(url) } else { self.http.get(url) };
            if !cookie.is_empty() {
                req = req.header("cookie", cookie);
            }
            if let Some(f) = form {
                req = req.header("content-type", "application/x-www-form-urlencoded").body(f.to_string());
            }
            let resp = req.send().await.unwrap();
            let cookies =
                resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
            (resp.status().as_u16(), cookies, resp.text().await.unwrap())
        })
    }

    fn get(&self, path: &str) -> String {
        let (status, _, body) = self.send(path, "", None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path)).unwrap()
    }

    /// Logs in as operator `ioc` and returns the session cookie.
    fn login(&self) -> String {
        let (_, cookies, page) = self.send("/ui/login", "", None);
        let login = cookies.iter().find(|c| c.starts_with("kho_login_csrf=")).unwrap();
        let login = login.split(';').next().unwrap().to_string();
        let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
        let token = page[at..].split('"').next().unwrap();
        let form = format!("name=ioc&password=b%C3%AD+m%E1%BA%ADt&csrf={token}");
        let (status, cookies, body) = self.send("/ui/login", &login, Some(&form));
        assert_eq!(status, 303, "{body}");
        let session = cookies.iter().find(|c| c.starts_with("kho_session=")).unwrap();
        session.split(';').next().unwrap().to_string()
    }
}

fn hash_password(password: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new(kho_tests::bin_path("kho-hub"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
}

fn sync(agent: &AgentProc, dataset: &str) {
    let out = agent.command(&["sync", "--once", dataset]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn ho_so(web: &Web) -> Value {
    let doc = web.json("/api/v1/quality?dataset=ho_so");
    assert_eq!(doc["datasets"].as_array().unwrap().len(), 1, "{doc}");
    doc["datasets"][0].clone()
}

fn violations(q: &Value, rule: &str) -> u64 {
    let rules = q["rules"].as_array().unwrap();
    rules.iter().find(|r| r["rule"] == rule).unwrap_or_else(|| panic!("{rule}: {q}"))["violations"].as_u64().unwrap()
}

fn until(web: &Web, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(WAIT, what, || ho_so(web).to_string(), || check(&ho_so(web)));
    ho_so(web)
}

#[test]
fn periodic_checks_history_and_scorecard_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(tmp.path(), "kind = \"sqlite\"\npath = \"warehouse.sqlite\"\n");
}

#[test]
fn periodic_checks_history_and_scorecard_on_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = kho_tests::pgwh::PgWarehouse::create();
    scenario(tmp.path(), &pg.hub_toml(2));
}

fn scenario(tmp: &std::path::Path, warehouse: &str) {
    let health = SourceDb::create(&tmp.join("so_y_te.sqlite"), 12).unwrap();
    let home = SourceDb::create(&tmp.join("so_noi_vu.sqlite"), 0).unwrap();
    health.execute(&format!("UPDATE ho_so SET don_vi = '{MISSING_UNIT}' WHERE id IN (2, 7)")).unwrap();
    let token = || format!("t-{}", fastrand::u64(..));
    let a = AgentSpec { id: "so-y-te-01".into(), token: token(), datasets: vec!["ho_so".into()] };
    let b = AgentSpec { id: "so-noi-vu-01".into(), token: token(), datasets: vec!["don_vi".into()] };
    let dir = tmp.join("hub");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("catalog.toml"), CATALOG).unwrap();
    let extra = format!(
        "\n[catalog]\npath = \"catalog.toml\"\n\n[freshness]\nevaluate_interval = \"300ms\"\nquality_interval = \"500ms\"\n\n\
         [dashboard]\npublic_view = true\n[[dashboard.operator]]\nname = \"ioc\"\npassword_hash = \"{}\"\n",
        hash_password("bí mật")
    );
    let mut hub =
        HubProc::configure_with(&dir, kho_tests::procs::free_port(), &[a.clone(), b.clone()], warehouse, &extra);
    hub.spawn();
    let web = Web::new(&hub);
    let opts = AgentOptions::default();
    let sqlite = |db: &SourceDb| format!("kind = \"sqlite\"\npath = \"{}\"\n", db.path.display());
    let spec = |name: &str, key: &str| DatasetSpec {
        name: name.into(),
        table: name.into(),
        key: vec![key.into()],
        cursor: None,
    };
    let units = spec("don_vi", "ma").toml(&sqlite(&home), &opts);
    let agent_b = AgentProc::configure(&tmp.join("b"), &b, &hub.url(), &hub.ca_path(), &units, &opts);
    let dossiers = spec("ho_so", "id").toml(&sqlite(&health), &opts);
    let agent_a = AgentProc::configure(&tmp.join("a"), &a, &hub.url(), &hub.ca_path(), &dossiers, &opts);

    // The dossiers arrive before the unit list knows their unit: two violations at ingest.
    sync(&agent_b, "don_vi");
    sync(&agent_a, "ho_so");
    let q = ho_so(&web);
    assert_eq!(violations(&q, "reference:don_vi"), 2, "{q}");
    assert_eq!(violations(&q, "max_change_share"), 0, "a first load is never flagged");

    // Every row's updated_at is in January 2026: the last closed month has none.
    let q = until(&web, "a row_count violation for the last closed month", |q| violations(q, "row_count") == 1);
    let counted = q["latest"].as_array().unwrap().iter().find(|v| v["rule"] == "row_count").unwrap().clone();
    let key: Value = serde_json::from_str(counted["key"].as_str().unwrap()).unwrap();
    let month = key["_kho_period"].as_str().unwrap().to_string();
    assert!(counted["value"].as_str().unwrap().contains("0 rows, fewer than 1"), "{counted}");

    // The unit arrives from the other department's agent: the periodic full check closes both
    // violations although no dossier was written again.
    home.execute(&format!("INSERT INTO don_vi VALUES ('DV50', '{MISSING_UNIT}', 'Sơn La')")).unwrap();
    sync(&agent_b, "don_vi");
    until(&web, "the late unit to clear the reference violations", |q| violations(q, "reference:don_vi") == 0);

    // Two dossiers dated in the last closed month (2 of 12 rows changed: within 25 %).
    health.execute(&format!("UPDATE ho_so SET updated_at = '{month}-15T03:00:00.000Z' WHERE id IN (3, 4)")).unwrap();
    sync(&agent_a, "ho_so");
    assert_eq!(violations(&ho_so(&web), "max_change_share"), 0);
    until(&web, "the month's rows to satisfy row_count", |q| violations(q, "row_count") == 0);

    // A sync rewriting half of the dossiers is flagged as it is applied.
    health
        .execute("UPDATE ho_so SET trang_thai = 'Đang xử lý', ghi_chu = 'nhập lại' WHERE id BETWEEN 5 AND 10")
        .unwrap();
    sync(&agent_a, "ho_so");
    let q = ho_so(&web);
    assert_eq!(violations(&q, "max_change_share"), 1, "{q}");
    let flag = q["latest"].as_array().unwrap().iter().find(|v| v["rule"] == "max_change_share").unwrap().clone();
    assert_eq!(flag["key"], r#"{"_kho_sync":"so-y-te-01"}"#);
    assert!(flag["value"].as_str().unwrap().starts_with("50.0% of 12 rows"), "{flag}");
    let metrics = web.get("/metrics");
    assert!(
        metrics.contains(
            "kho_hub_quality_violations_total{dataset=\"ho_so\",rule=\"max_change_share\",policy=\"warn\"} 1"
        ),
        "{metrics}"
    );

    // History: the dataset's current period carries the flag once a pass has measured it.
    let q = until(&web, "the history to show the flagged sync", |q| {
        q["history"].as_array().is_some_and(|h| h.first().is_some_and(|p| p["rules"]["max_change_share"] == 1))
    });
    let period = &q["history"][0];
    assert_eq!(period["rules"]["reference:don_vi"], 0, "{period}");
    assert_eq!(period["rows"], 12);
    assert!(period["period_start"].as_str().unwrap() < period["period_end"].as_str().unwrap());

    // The scorecard's quality column and the metrics gauge.
    wait_for(
        WAIT,
        "the scorecard's quality column",
        || web.get("/api/v1/departments/so_y_te/scorecard"),
        || {
            let card = web.json("/api/v1/departments/so_y_te/scorecard");
            card["quality"]["open_violations"] == 1
        },
    );
    let card = web.json("/api/v1/departments/so_y_te/scorecard");
    assert_eq!(card["quality"]["datasets_with_rules"], 1, "{card}");
    assert_eq!(card["quality"]["score"].as_f64(), Some(1.0), "row rules all pass: {card}");
    let row = card["datasets"].as_array().unwrap().iter().find(|d| d["dataset"] == "ho_so").unwrap();
    assert_eq!((row["quality"].as_f64(), row["quality_violations"].as_u64()), (Some(1.0), Some(1)), "{row}");
    assert!(
        web.get("/metrics").contains("kho_hub_quality_open_violations{dataset=\"ho_so\",rule=\"max_change_share\"} 1")
    );

    // A later sync within the limit clears the flag.
    health.execute("UPDATE ho_so SET ghi_chu = 'đã rà soát' WHERE id = 11").unwrap();
    sync(&agent_a, "ho_so");
    assert_eq!(violations(&ho_so(&web), "max_change_share"), 0);

    // The referenced unit is deleted: the next full check opens the violations again.
    home.execute(&format!("DELETE FROM don_vi WHERE ten = '{MISSING_UNIT}'")).unwrap();
    sync(&agent_b, "don_vi");
    until(&web, "the deleted unit to reopen the reference violations", |q| violations(q, "reference:don_vi") == 2);

    // The dashboard: a quality figure per dataset on the board; on the dataset page the rules
    // with their violations, and example keys for operators only.
    wait_for(
        WAIT,
        "the dashboard to show the reopened violations",
        || web.get("/ui/datasets/ho_so"),
        || {
            let page = web.get("/ui/datasets/ho_so");
            page.contains("data-rule=\"reference:don_vi\"><td>reference</td><td>don_vi</td><td>cảnh báo</td><td>2</td>")
        },
    );
    let public = web.get("/ui/datasets/ho_so");
    assert!(!public.contains("{&quot;id&quot;:2}"), "no keys on the public view");
    let session = web.login();
    let (status, _, page) = web.send("/ui/datasets/ho_so?lang=en", &session, None);
    assert_eq!(status, 200);
    assert!(page.contains("Data quality"), "{page}");
    assert!(page.contains(&format!("{{&quot;id&quot;:2}} ({MISSING_UNIT})")), "{page}");
    let board = web.get("/ui");
    assert!(board.contains("<td class=\"quality\">83.3%</td>"), "10 of 12 dossiers pass the reference rule: {board}");
}
