//! End to end from JSON REST APIs: a real local HTTP server (axum) serves paginated JSON in each
//! pagination style (page number, offset, Link header, cursor token), one endpoint answers 429
//! with Retry-After and then 500 before recovering, one answers an HTML page; the real
//! `kho-agent` reads them (snapshot and cursor mode, bearer and API-key auth from secret files),
//! the real `kho-hub` applies the changes, and the warehouse must equal the served records after
//! inserts, updates and deletes.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, wait_for};
use kho_tests::warehouse_text_rows;

const CONVERGE: Duration = Duration::from_secs(60);
const TOKEN: &str = "s3cr3t-bi-mat-42";
const API_KEY: &str = "khoa-api-42";

#[derive(Clone)]
struct Rec {
    ma: u32,
    ten: String,
    so_tien: String,
    xa: String,
    updated_at: String,
}

impl Rec {
    fn new(ma: u32, version: u32) -> Rec {
        Rec {
            ma,
            ten: format!("Hộ kinh doanh số {ma} – bản {version}"),
            so_tien: format!("{}.{:02}", ma * 1000, ma % 100),
            xa: if ma.is_multiple_of(2) { "Chiềng Sinh".into() } else { "Mường Bú".into() },
            updated_at: format!("2026-01-{:02}T08:00:{:02}Z", version, ma % 60),
        }
    }

    fn json(&self) -> String {
        format!(
            r#"{{"ma":{},"ten":{},"so_tien":{},"chi_tiet":{{"xa":{}}},"updated_at":{}}}"#,
            self.ma,
            serde_json::to_string(&self.ten).unwrap(),
            self.so_tien,
            serde_json::to_string(&self.xa).unwrap(),
            serde_json::to_string(&self.updated_at).unwrap()
        )
    }

    fn text_row(&self) -> Vec<Option<String>> {
        vec![
            Some(self.ma.to_string()),
            Some(self.ten.clone()),
            Some(self.so_tien.clone()),
            Some(format!(r#"{{"xa":{}}}"#, serde_json::to_string(&self.xa).unwrap())),
            Some(self.updated_at.clone()),
        ]
    }
}

#[derive(Clone, Default)]
struct Api {
    records: Arc<Mutex<Vec<Rec>>>,
    flaky_hits: Arc<Mutex<Vec<Instant>>>,
}

impl Api {
    fn all(&self) -> Vec<Rec> {
        self.records.lock().unwrap().clone()
    }
    fn list(recs: &[Rec]) -> String {
        let items: Vec<String> = recs.iter().map(Rec::json).collect();
        format!("[{}]", items.join(","))
    }
}

type Params = Query<HashMap<String, String>>;

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn num(q: &HashMap<String, String>, k: &str, default: usize) -> usize {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn page(State(api): State<Api>, h: HeaderMap, Query(q): Params) -> Response {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (p, size) = (num(&q, "page", 1), num(&q, "size", 10));
    let all = api.all();
    let chunk: Vec<Rec> = all.into_iter().skip((p.max(1) - 1) * size).take(size).collect();
    json(format!(r#"{{"data":{{"items":{},"page":{p}}}}}"#, Api::list(&chunk)))
}

async fn offset(State(api): State<Api>, h: HeaderMap, Query(q): Params) -> Response {
    if h.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let (o, l) = (num(&q, "offset", 0), num(&q, "limit", 10));
    let chunk: Vec<Rec> = api.all().into_iter().skip(o).take(l).collect();
    json(format!(r#"{{"items":{},"total":0}}"#, Api::list(&chunk)))
}

async fn link(State(api): State<Api>, h: HeaderMap, Query(q): Params) -> Response {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let p = num(&q, "p", 0);
    let all = api.all();
    let chunk: Vec<Rec> = all.iter().skip(p * 9).take(9).cloned().collect();
    let mut resp = json(Api::list(&chunk));
    if (p + 1) * 9 < all.len() {
        let next = format!("</link?p={}>; rel=\"next\", </link?p=0>; rel=\"first\"", p + 1);
        resp.headers_mut().insert(header::LINK, next.parse().unwrap());
    }
    resp
}

async fn cursor(State(api): State<Api>, h: HeaderMap, Query(q): Params) -> Response {
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let since = q.get("updated_since").cloned().unwrap_or_default();
    let start = num(&q, "cursor", 0);
    let matching: Vec<Rec> = api.all().into_iter().filter(|r| r.updated_at >= since).collect();
    let chunk: Vec<Rec> = matching.iter().skip(start).take(8).cloned().collect();
    let next = if start + 8 < matching.len() { format!("\"{}\"", start + 8) } else { "null".into() };
    json(format!(r#"{{"records":{},"next":{next}}}"#, Api::list(&chunk)))
}

async fn flaky(State(api): State<Api>, h: HeaderMap, q: Params) -> Response {
    let hit = {
        let mut hits = api.flaky_hits.lock().unwrap();
        hits.push(Instant::now());
        hits.len()
    };
    match hit {
        1 => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "chậm lại").into_response(),
        2 => (StatusCode::INTERNAL_SERVER_ERROR, "lỗi máy chủ").into_response(),
        _ => page(State(api), h, q).await,
    }
}

async fn broken() -> Response {
    json(r#"{"items": [{"ma": 1, "ten": "cắt ngang"#.to_string())
}

async fn html() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], "<!doctype html><html><body>Đăng nhập</body></html>")
        .into_response()
}

fn serve(api: Api) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/page", get(page))
        .route("/offset", get(offset))
        .route("/link", get(link))
        .route("/cursor", get(cursor))
        .route("/flaky", get(flaky))
        .route("/html", get(html))
        .route("/broken", get(broken))
        .with_state(api);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

fn dataset(name: &str, mode: &str, source: &str) -> String {
    let mode =
        if mode == "cursor" { "mode = \"cursor\"\ncursor_column = \"updated_at\"" } else { "mode = \"snapshot\"" };
    format!(
        "\n[[dataset]]\nname = \"{name}\"\nkey = [\"ma\"]\n{mode}\npoll_interval = \"300ms\"\n[dataset.source]\nkind = \"rest\"\n{source}"
    )
}

const COLS: [&str; 5] = ["ma", "ten", "so_tien", "chi_tiet", "updated_at"];

fn wait_api(hub: &HubProc, agent: &AgentProc, table: &str, want: &BTreeMap<String, Vec<Option<String>>>, exact: bool) {
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        CONVERGE,
        &format!("warehouse table {table} to equal the API's records"),
        || format!("{}\n{}\n{}", last.borrow(), hub.log_tail(), agent.log_tail()),
        || match warehouse_text_rows(&hub.warehouse(), table, &COLS) {
            Ok(got) => {
                let ok = if exact { &got == want } else { want.iter().all(|(k, v)| got.get(k) == Some(v)) };
                if !ok {
                    let ex = want.iter().find(|(k, v)| got.get(*k) != Some(v));
                    *last.borrow_mut() = format!(
                        "want {} rows, got {}; first difference {ex:?} vs {:?}",
                        want.len(),
                        got.len(),
                        ex.map(|(k, _)| got.get(k))
                    );
                }
                ok
            }
            Err(e) => {
                *last.borrow_mut() = format!("warehouse not readable yet: {e}");
                false
            }
        },
    );
}

#[test]
fn rest_apis_converge_in_every_pagination_style_and_survive_bad_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::default();
    *api.records.lock().unwrap() = (1..=40).map(|i| Rec::new(i, 1)).collect();
    let port = serve(api.clone());
    let base = format!("http://127.0.0.1:{port}");
    let token_file = tmp.path().join("token.txt");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let key_file = tmp.path().join("api_key.txt");
    std::fs::write(&key_file, API_KEY).unwrap();
    let bearer = format!("[dataset.source.auth]\nkind = \"bearer\"\nsecret_file = \"{}\"\n", token_file.display());

    let toml = [
        dataset(
            "r_page",
            "snapshot",
            &format!("url = \"{base}/page\"\nrecords = \"/data/items\"\n[dataset.source.pagination]\nstyle = \"page\"\nsize_param = \"size\"\nsize = 7\n{bearer}"),
        ),
        dataset(
            "r_offset",
            "snapshot",
            &format!(
                "url = \"{base}/offset\"\nrecords = \"/items\"\nrate_limit = 50.0\n[dataset.source.pagination]\nstyle = \"offset\"\nlimit = 6\n[dataset.source.auth]\nkind = \"api_key\"\nheader = \"X-API-Key\"\nsecret_file = \"{}\"\n",
                key_file.display()
            ),
        ),
        dataset("r_link", "snapshot", &format!("url = \"{base}/link\"\n[dataset.source.pagination]\nstyle = \"next_link\"\n{bearer}")),
        dataset(
            "r_cursor",
            "cursor",
            &format!("url = \"{base}/cursor\"\nrecords = \"/records\"\ncursor_param = \"updated_since\"\n[dataset.source.pagination]\nstyle = \"cursor\"\npointer = \"/next\"\nparam = \"cursor\"\n{bearer}"),
        ),
        dataset(
            "r_flaky",
            "snapshot",
            &format!("url = \"{base}/flaky\"\nrecords = \"/data/items\"\n[dataset.source.pagination]\nstyle = \"page\"\nsize_param = \"size\"\nsize = 10\n{bearer}"),
        ),
        dataset("r_html", "snapshot", &format!("url = \"{base}/html\"\n")),
        dataset("r_broken", "snapshot", &format!("url = \"{base}/broken\"\nrecords = \"/items\"\n")),
    ]
    .concat();
    let names = ["r_page", "r_offset", "r_link", "r_cursor", "r_flaky", "r_html", "r_broken"];
    let a = AgentSpec {
        id: "so-cong-thuong".into(),
        token: format!("token-{}", fastrand::u64(..)),
        datasets: names.iter().map(|s| s.to_string()).collect(),
    };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&a));
    let agent = AgentProc::start_with(
        &tmp.path().join("agent"),
        &a,
        &hub.url(),
        &hub.ca_path(),
        &toml,
        &AgentOptions::default(),
    );

    let want = |api: &Api| -> BTreeMap<String, Vec<Option<String>>> {
        api.all().iter().map(|r| (r.ma.to_string(), r.text_row())).collect()
    };
    let v1 = want(&api);
    for t in &names[..5] {
        wait_api(&hub, &agent, t, &v1, true);
    }
    // 429 with Retry-After: 1 was honoured (the retry came a second later), then a 500, then data.
    let hits = api.flaky_hits.lock().unwrap().clone();
    assert!(hits.len() >= 3, "{} requests", hits.len());
    assert!(hits[1] - hits[0] >= Duration::from_millis(950), "Retry-After honoured: {:?}", hits[1] - hits[0]);
    // The HTML answer is a clear error naming dataset and URL; nothing of it reached the hub.
    let err = agent.wait_dataset_error("r_html", CONVERGE);
    assert!(err.contains("dataset r_html") && err.contains("/html") && err.contains("HTML"), "{err}");
    let err = agent.wait_dataset_error("r_broken", CONVERGE);
    assert!(err.contains("dataset r_broken") && err.contains("/broken") && err.contains("not valid JSON"), "{err}");
    let log = std::fs::read_to_string(agent.dir.join("agent.log")).unwrap_or_default();
    assert!(!log.contains(TOKEN) && !log.contains(API_KEY), "a secret reached the log");

    // Updates, deletes, inserts.
    {
        let mut recs = api.records.lock().unwrap();
        recs.retain(|r| r.ma % 9 != 0);
        for r in recs.iter_mut().filter(|r| r.ma % 5 == 0) {
            *r = Rec::new(r.ma, 2);
        }
        recs.extend((41..=45).map(|i| Rec::new(i, 3)));
    }
    let v2 = want(&api);
    for t in ["r_page", "r_offset", "r_link", "r_flaky"] {
        wait_api(&hub, &agent, t, &v2, true);
    }
    // Cursor mode cannot see deletes; every served record must be there and current.
    wait_api(&hub, &agent, "r_cursor", &v2, false);
    let cur = agent.dataset_status("r_cursor");
    assert_eq!(cur["cursor"].as_str(), Some("2026-01-03T08:00:45Z"), "{cur}");
}
