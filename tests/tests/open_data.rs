//! The open-data API end to end: a real `kho-hub` (SQLite and PostgreSQL warehouses) fed by a
//! real `kho-agent`, read over HTTPS as a CKAN harvester would. Checks the responses against
//! CKAN's documented shapes (`{help, success, result}`, `{help, success: false, error: {__type}}`,
//! `datastore_search` → `{fields, records, total, limit, offset, _links}`), the downloads against
//! the source row by row, and that a dataset the catalogue does not mark open never appears.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, DatasetSpec, HubProc, wait_for};
use kho_tests::source::SourceDb;
use serde_json::{Value, json};

const HIDDEN: &str = "ho_so_mat";

const CATALOG: &str = "[[department]]\ncode = \"so_y_te\"\nname = \"Sở Y tế\"\n\
    contact = { name = \"Văn phòng Sở\", email = \"vp@syt.example\" }\n\n\
    [[dataset]]\nid = \"ho_so\"\ntitle = \"Hồ sơ thủ tục hành chính\"\ndepartment = \"so_y_te\"\n\
    cadence = \"daily\"\nupdate_kind = \"sync\"\nopen_data = true\nlicence = \"CC-BY-4.0\"\n\n\
    [[dataset]]\nid = \"ho_so_mat\"\ntitle = \"Hồ sơ nội bộ\"\ndepartment = \"so_y_te\"\n\
    cadence = \"daily\"\nupdate_kind = \"sync\"\n";

fn ho_so(name: &str) -> DatasetSpec {
    DatasetSpec { name: name.into(), table: "ho_so".into(), key: vec!["id".into()], cursor: None }
}

/// One HTTP exchange: status, headers, body.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    ca: Vec<u8>,
}

impl Client {
    fn new(hub: &HubProc) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ca = std::fs::read(hub.ca_path()).unwrap();
        let http =
            reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()]).build().unwrap();
        Client { rt, http, base: hub.url(), ca }
    }

    /// A client with a connection of its own (HTTP/2 would multiplex every request on one
    /// connection, whose shared flow-control window the slow downloads fill).
    fn separate(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca).unwrap();
        reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
    }

    fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        self.rt.block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap().to_vec();
            Reply { status, headers, body }
        })
    }

    fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    }

    /// Logs in to the dashboard through its form; returns the session cookie (`name=value`).
    fn login(&self, name: &str, password: &str) -> String {
        let form = self.get("/ui/login");
        let cookie = |r: &Reply, name: &str| -> String {
            let c = r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).find(|c| c.starts_with(name));
            c.expect("cookie").split(';').next().unwrap().to_string()
        };
        let login_cookie = cookie(&form, "kho_login_csrf=");
        let token = login_cookie.split_once('=').unwrap().1.to_string();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let body = format!("name={name}&password={password}&csrf={token}");
        let req = http
            .post(format!("{}/ui/login", self.base))
            .header("cookie", login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let r = self.send(req);
        assert_eq!(r.status, 303, "login: {}", r.text());
        cookie(&r, "kho_session=")
    }

    /// A CKAN action that must succeed: checks the envelope and returns `result`.
    fn action(&self, path: &str) -> Value {
        let r = self.get(&format!("/api/3/action/{path}"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let doc = r.json();
        assert_eq!(doc["success"], true, "{doc}");
        let action = path.split('?').next().unwrap();
        assert!(doc["help"].as_str().is_some_and(|h| h.ends_with(&format!("help_show?name={action}"))), "{doc}");
        assert!(!r.text().contains(HIDDEN), "{path} mentions the non-open dataset: {}", r.text());
        doc["result"].clone()
    }

    /// A CKAN action that must fail with `status` and error `__type`; returns the error.
    fn refused(&self, path: &str, status: u16, kind: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let doc = r.json();
        assert_eq!(doc["success"], false, "{doc}");
        assert!(doc["help"].is_string(), "{doc}");
        assert_eq!(doc["error"]["__type"], kind, "{doc}");
        doc
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

/// Source rows by id: `(ma_ho_so, ghi_chu)`.
fn source_rows(src: &SourceDb) -> BTreeMap<i64, (String, String)> {
    let conn = rusqlite::Connection::open(&src.path).unwrap();
    let mut stmt = conn.prepare("SELECT id, ma_ho_so, ghi_chu FROM ho_so").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))).unwrap().map(Result::unwrap).collect()
}

/// Starts a hub (with `warehouse_toml`, or the embedded SQLite one) and an agent syncing the
/// source into an open and a non-open dataset, and waits until both hold the source's live rows
/// and the evaluator has seen the data.
fn synced(tmp: &std::path::Path, warehouse_toml: Option<String>) -> (SourceDb, HubProc, AgentProc, Client) {
    let mut src = SourceDb::create(&tmp.join("so_y_te.sqlite"), 300).unwrap();
    src.delete([5, 6, 7]).unwrap();
    let spec = AgentSpec {
        id: "so-y-te-01".into(),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into(), HIDDEN.into()],
    };
    let hub_dir = tmp.join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("catalog.toml"), CATALOG).unwrap();
    let extra = "\n[catalog]\npath = \"catalog.toml\"\nreload_interval = \"100ms\"\n\n[freshness]\nevaluate_interval = \"200ms\"\n\n[dashboard]\npublic_view = true\n";
    let extra = format!("{extra}[[dashboard.operator]]\nname = \"ioc\"\npassword_hash = \"{}\"\n", hash_password("mk"));
    let extra = extra.as_str();
    let hub = match warehouse_toml {
        Some(wh) => HubProc::start_with_warehouse(&hub_dir, std::slice::from_ref(&spec), &format!("{wh}{extra}")),
        None => HubProc::start_with(&hub_dir, std::slice::from_ref(&spec), extra),
    };
    // Rows deleted after the first sync must be soft-deleted in the warehouse, not just absent.
    let agent = AgentProc::start(
        &tmp.join("agent"),
        &spec,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so"), ho_so(HIDDEN)],
        &AgentOptions::default(),
    );
    let client = Client::new(&hub);
    let live = |c: &Client| -> Option<u64> {
        let r = c.get("/api/v1/status");
        let doc = r.json();
        let ds = doc["datasets"].as_array()?;
        let of = |name: &str| ds.iter().find(|d| d["dataset"] == name).and_then(|d| d["rows"].as_u64());
        // Both must hold the count: the two datasets are captured and applied independently.
        let (a, b) = (of("ho_so")?, of(HIDDEN)?);
        (a == b).then_some(a)
    };
    wait_for(
        Duration::from_secs(60),
        "both datasets synced",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || live(&client) == Some(297),
    );
    src.delete([10, 11]).unwrap();
    wait_for(Duration::from_secs(60), "deletes synced", || hub.log_tail(), || live(&client) == Some(295));
    wait_for(
        Duration::from_secs(30),
        "the evaluator to see the data",
        || hub.log_tail(),
        || client.action("package_show?id=ho_so")["metadata_modified"].is_string(),
    );
    (src, hub, agent, client)
}

fn check_open_data(src: &SourceDb, hub: &HubProc, client: &Client) {
    let want = source_rows(src);
    assert_eq!(want.len(), 295);

    // package_list / package_show / package_search: only the open dataset.
    assert_eq!(client.action("package_list"), json!(["ho_so"]));
    let p = client.action("package_show?id=ho_so");
    assert_eq!(p["name"], "ho_so");
    assert_eq!(p["title"], "Hồ sơ thủ tục hành chính");
    assert_eq!(p["license_id"], "CC-BY-4.0");
    assert_eq!(p["organization"]["title"], "Sở Y tế");
    assert_eq!(p["num_resources"], 2);
    let daily = "http://publications.europa.eu/resource/authority/frequency/DAILY";
    assert!(p["extras"].as_array().unwrap().contains(&json!({"key": "accrualPeriodicity", "value": daily})), "{p}");
    let modified = p["metadata_modified"].as_str().unwrap();
    assert!(modified.starts_with("20") && !modified.ends_with('Z'), "CKAN's naive UTC form: {modified}");
    let csv_url = p["resources"][0]["url"].as_str().unwrap();
    assert_eq!(csv_url, format!("{}/opendata/ho_so.csv", hub.url()));
    assert_eq!(p["resources"][0]["last_modified"], modified);
    let found = client.action("package_search?q=th%E1%BB%A7%20t%E1%BB%A5c"); // "thủ tục"
    assert_eq!(found["count"], 1);
    assert_eq!(found["results"][0]["name"], "ho_so");
    assert_eq!(
        client.action("package_search?q=n%E1%BB%99i%20b%E1%BB%99")["count"],
        0,
        "the hidden title is not searchable"
    );
    assert_eq!(client.action("package_search")["count"], 1);

    let res = client.action("resource_show?id=ho_so-json");
    assert_eq!((res["format"].as_str(), res["package_id"].as_str()), (Some("JSON"), Some("ho_so")));
    assert_eq!(client.action("organization_list"), json!(["so_y_te"]));
    assert_eq!(client.action("organization_list?all_fields=true")[0]["title"], "Sở Y tế");

    // The non-open dataset: the same 404 as one that does not exist, everywhere.
    client.refused(&format!("/api/3/action/resource_show?id={HIDDEN}-csv"), 404, "Not Found Error");
    let hidden = client.refused(&format!("/api/3/action/package_show?id={HIDDEN}"), 404, "Not Found Error");
    let missing = client.refused("/api/3/action/package_show?id=khong_co", 404, "Not Found Error");
    assert_eq!(hidden["error"], missing["error"]);
    let hidden =
        client.refused(&format!("/api/3/action/datastore_search?resource_id={HIDDEN}-csv"), 404, "Not Found Error");
    let missing = client.refused("/api/3/action/datastore_search?resource_id=khong_co-csv", 404, "Not Found Error");
    assert_eq!(hidden["error"], missing["error"]);
    for file in [format!("{HIDDEN}.csv"), format!("{HIDDEN}.json")] {
        let r = client.get(&format!("/opendata/{file}"));
        assert_eq!(r.status, 404, "{file}");
        assert!(!r.text().contains("Hồ sơ số"), "no row of {file} leaks");
    }

    // datastore_search: paging in key order, total, fields without _kho_ columns, search.
    let page = client.action("datastore_search?resource_id=ho_so-csv&limit=10&offset=5");
    for key in ["resource_id", "fields", "records", "total", "limit", "offset", "_links"] {
        assert!(page.get(key).is_some(), "datastore_search lacks {key}: {page}");
    }
    assert_eq!(page["total"], 295);
    assert_eq!((page["limit"].as_u64(), page["offset"].as_u64()), (Some(10), Some(5)));
    let ids: Vec<i64> = page["records"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = want.keys().copied().skip(5).take(10).collect();
    assert_eq!(ids, expected);
    let fields: Vec<&str> = page["fields"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "id",
            "ma_ho_so",
            "linh_vuc",
            "don_vi",
            "trang_thai",
            "ngay_nhan",
            "ngay_hen_tra",
            "so_tien",
            "ghi_chu",
            "updated_at"
        ]
    );
    assert_eq!(page["fields"][0]["type"], "int8");
    let first = &page["records"][0];
    assert_eq!(first["ghi_chu"].as_str(), Some(want[&expected[0]].1.as_str()));
    let hit = client.action("datastore_search?resource_id=ho_so-json&q=260101-0000123");
    assert_eq!(hit["total"], 1);
    assert_eq!(hit["records"][0]["id"], 123);
    let gone = client.action("datastore_search?resource_id=ho_so-csv&q=260101-0000010");
    assert_eq!(gone["total"], 0, "a deleted row is not searchable");
    // POST with a JSON body, as ckanapi sends it.
    let r = client.post("/api/3/action/datastore_search", &json!({"resource_id": "ho_so-csv", "limit": 3}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["records"].as_array().map(Vec::len), Some(3));

    // Bad input: clear CKAN errors.
    let bad = client.refused("/api/3/action/datastore_search?resource_id=ho_so-csv&limit=abc", 409, "Validation Error");
    assert!(bad["error"]["limit"].is_array(), "{bad}");
    let bad = client.refused("/api/3/action/package_show?id=ho_so&fq=x", 409, "Validation Error");
    assert!(bad["error"]["fq"][0].as_str().unwrap().contains("not expected"), "{bad}");
    client.refused("/api/3/action/package_show", 409, "Validation Error");
    let r = client.get("/api/3/action/package_delete?id=ho_so");
    assert_eq!((r.status, r.json()["success"].clone()), (400, json!(false)));

    // CSV download: every live row, as in the source, no internal columns.
    let r = client.get("/opendata/ho_so.csv");
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(r.headers.contains_key("last-modified"));
    let mut reader = csv::Reader::from_reader(r.body.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(header, fields);
    let mut got = BTreeMap::new();
    for rec in reader.records() {
        let rec = rec.unwrap();
        got.insert(rec[0].parse::<i64>().unwrap(), (rec[1].to_string(), rec[8].to_string()));
    }
    assert_eq!(got, want, "the CSV download equals the source's live rows");

    // JSON download: CKAN's dump shape, the same rows.
    let r = client.get("/opendata/ho_so.json");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["fields"], page["fields"]);
    let records = doc["records"].as_array().unwrap();
    assert_eq!(records.len(), 295);
    assert!(records.iter().all(|r| r.as_object().unwrap().keys().all(|k| !k.starts_with("_kho_"))));
    assert_eq!(&records[5], first);

    // Served rows and requests are counted.
    let metrics = client.get("/metrics").text();
    let rows: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kho_hub_open_data_rows_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rows >= 2 * 295, "both downloads counted: {rows}");
    assert!(metrics.contains("kho_hub_open_data_refused_total "), "{metrics}");

    // The dashboard's dataset page lists the newest writes first, the two deletes, for operators
    // only: the public view shows no key values.
    let public = client.get("/ui/datasets/ho_so?lang=en");
    assert_eq!(public.status, 200);
    assert!(!public.text().contains("Recent changes"), "no recent changes in the public view");
    let session = client.login("ioc", "mk");
    let r =
        client.send(client.http.get(format!("{}/ui/datasets/ho_so?lang=en", client.base)).header("cookie", session));
    assert_eq!(r.status, 200);
    let page = r.text();
    let recent = &page[page.find("<table class=\"recent\">").expect("recent changes table")..];
    let rows: Vec<&str> = recent.split("<tr>").skip(2).take(3).collect();
    assert!(rows[0].contains("Deleted") && rows[1].contains("Deleted") && rows[2].contains("Upserted"), "{recent}");
    assert!(rows[0].contains("<td>11</td>") || rows[0].contains("<td>10</td>"), "{recent}");
}

fn closing_hides_at_once(hub: &HubProc, client: &Client) {
    let closed = CATALOG.replace("open_data = true\nlicence = \"CC-BY-4.0\"\n", "");
    std::fs::write(hub.dir.join("catalog.toml"), closed).unwrap();
    wait_for(
        Duration::from_secs(20),
        "the catalogue reload to close ho_so",
        || hub.log_tail(),
        || client.get("/api/3/action/package_show?id=ho_so").status == 404,
    );
    assert_eq!(client.action("package_list"), json!([]));
    assert_eq!(client.action("organization_list"), json!([]));
    assert_eq!(client.get("/opendata/ho_so.csv").status, 404);
}

#[test]
fn open_data_api_serves_open_datasets_from_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, hub, _agent, client) = synced(tmp.path(), None);
    check_open_data(&src, &hub, &client);
    closing_hides_at_once(&hub, &client);
}

#[test]
fn open_data_api_serves_open_datasets_from_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgWarehouse::create();
    let (src, hub, _agent, client) = synced(tmp.path(), Some(pg.hub_toml(1)));
    check_open_data(&src, &hub, &client);
}

/// Downloads stream: slow clients hold their reads (and the hub's memory stays bounded by the
/// channel, not the table), at most `OPEN_DATA_READS` (4) run at once and a fifth is told to retry
/// (503), and clients that go away free their reads for the next one, which gets every row.
#[test]
fn slow_and_vanishing_download_clients_hold_bounded_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = 60_000;
    let src = SourceDb::create(&tmp.path().join("so_y_te.sqlite"), rows).unwrap();
    let spec = AgentSpec {
        id: "so-y-te-02".into(),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: vec!["ho_so".into()],
    };
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("catalog.toml"), CATALOG).unwrap();
    let hub = HubProc::start_with(&hub_dir, std::slice::from_ref(&spec), "\n[catalog]\npath = \"catalog.toml\"\n");
    let _agent = AgentProc::start(
        &tmp.path().join("agent"),
        &spec,
        &hub.url(),
        &hub.ca_path(),
        &src.path,
        &[ho_so("ho_so")],
        &AgentOptions::default(),
    );
    let client = Client::new(&hub);
    wait_for(
        Duration::from_secs(120),
        "the table synced",
        || hub.log_tail(),
        || client.action("datastore_search?resource_id=ho_so-csv&limit=1")["total"] == rows,
    );
    let rss_before = kho_tests::procs::rss_kib(hub.pid().unwrap()).unwrap().0;
    let url = format!("{}/opendata/ho_so.csv", hub.url());
    client.rt.block_on(async {
        let mut slow = Vec::new();
        for _ in 0..4 {
            let mut resp = client.separate().get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(resp.chunk().await.unwrap().is_some(), "the first bytes arrive at once");
            slow.push(resp);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = client.separate().get(&url).send().await.unwrap();
        assert_eq!(busy.status(), 503, "four slow clients hold every read");
        let body: Value = serde_json::from_slice(&busy.bytes().await.unwrap()).unwrap();
        assert_eq!(body["success"], false);
        let rss_slow = kho_tests::procs::rss_kib(hub.pid().unwrap()).unwrap().0;
        eprintln!("hub RSS before downloads {rss_before} KiB, with four stalled downloads {rss_slow} KiB");
        // Four unread 15 MB downloads: the hub holds each one's channel, not its table.
        assert!(rss_slow < rss_before + 40 * 1024, "hub RSS {rss_before} KiB → {rss_slow} KiB");
        drop(slow);
        let mut full = None;
        for _ in 0..100 {
            let resp = client.separate().get(&url).send().await.unwrap();
            if resp.status() == 200 {
                full = Some(resp.bytes().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let full = full.expect("reads are freed once the slow clients go away");
        let lines = full.iter().filter(|b| **b == b'\n').count();
        assert!(lines > rows as usize, "header plus every row: {lines} lines");
        let mut reader = csv::Reader::from_reader(full.as_ref());
        assert_eq!(reader.records().count() as u64, rows);
    });
}

/// An open dataset the hub has not received yet: listed, with no modification time, no rows, and
/// downloads that are empty but well formed.
#[test]
fn an_open_dataset_not_yet_received_is_listed_and_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("catalog.toml"), CATALOG).unwrap();
    let hub = HubProc::start_with(&hub_dir, &[], "\n[catalog]\npath = \"catalog.toml\"\n");
    let client = Client::new(&hub);
    assert_eq!(client.action("package_list"), json!(["ho_so"]));
    let p = client.action("package_show?id=ho_so");
    assert!(p["metadata_modified"].is_null() && p["metadata_created"].is_null(), "{p}");
    let page = client.action("datastore_search?resource_id=ho_so-csv");
    assert_eq!(
        (page["total"].clone(), page["records"].clone(), page["fields"].clone()),
        (json!(0), json!([]), json!([]))
    );
    let csv = client.get("/opendata/ho_so.csv");
    assert_eq!((csv.status, csv.body.len()), (200, 0));
    let doc = client.get("/opendata/ho_so.json");
    assert_eq!((doc.status, doc.json()), (200, json!({"fields": [], "records": []})));
}
