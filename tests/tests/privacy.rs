//! Personal data protection at the edge (issue 14), end to end: real `kho-agent`s and a real
//! `kho-hub` (SQLite warehouse) on synthetic citizens — names, 12-digit citizen IDs, phones, dates
//! of birth, addresses, incomes and a health column.
//!
//! Proves that no raw value of a protected column is in the warehouse, the outbox (database, WAL)
//! or any log; that the same ID from two agents (two departments) yields the same token;
//! that generalisation and masking are exact; that `check` flags undeclared personal data; that
//! the open-data API refuses a dataset with personal columns kept and audits reads of sensitive
//! ones; and that the key comes through enrollment and rotates into distinguishable versions.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kho_shared::pseudonym::PseudonymKey;
use kho_tests::pgwh::PgWarehouse;
use kho_tests::procs::{AgentOptions, AgentProc, AgentSpec, HubProc, wait_for};
use kho_tests::security::{ENROLLED_HTTPS, add_agent, audit_rows, dashboard_login, hash_password};
use serde_json::Value;

const KEY_V1: &str = "v1:5f0c2a9e7d41b38c6e20f9a1d47b8c35e2a90f6b";
const KEY_V2: &str = "v2:c81d3e5f7a9b2c4d6e8f0a1b3c5d7e9f1a2b3c4d";
const TIMEOUT: Duration = Duration::from_secs(90);
const FAMILY: [&str; 6] = ["Nguyễn", "Trần", "Lò", "Phạm", "Hoàng", "Cầm"];
const GIVEN: [&str; 6] = ["Văn An", "Thị Bình", "Văn Chiến", "Thị Dung", "Minh Đức", "Thị Hoa"];

/// One synthetic citizen.
#[derive(Debug, Clone)]
struct Citizen {
    cccd: String,
    name: String,
    phone: String,
    born: String,
    address: String,
    income: i64,
    diagnosis: String,
}

fn citizens(n: usize) -> Vec<Citizen> {
    (0..n)
        .map(|i| {
            let cccd = format!("0{:02}{}{:08}", 14 + i % 3, 1 + i % 2, fastrand::u32(0..100_000_000));
            Citizen {
                cccd,
                name: format!("{} {}", FAMILY[i % FAMILY.len()], GIVEN[(i / 2) % GIVEN.len()]),
                phone: format!("09{:08}", fastrand::u32(0..100_000_000)),
                born: format!("{}-{:02}-{:02}", 1950 + i % 50, 1 + i % 12, 1 + i % 28),
                address: format!("Số {}, Bản Mòng {i}, Xã Hua La, Thành phố Sơn La, Sơn La", 10 + i),
                income: 1_000_000 + (i as i64) * 731_000,
                diagnosis: format!("Viêm gan B giai đoạn {}", i % 4 + 1),
            }
        })
        .collect()
}

/// A department's source database: `cong_dan` (civil registry) and `kham_benh` (health visits).
fn source(path: &Path, people: &[Citizen]) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE cong_dan (so_cccd TEXT PRIMARY KEY, ho_ten TEXT, so_dien_thoai TEXT, ngay_sinh DATE,
           dia_chi TEXT, thu_nhap INTEGER, xa TEXT);
         CREATE TABLE kham_benh (ma_luot INTEGER PRIMARY KEY, so_cccd TEXT, ngay_kham DATE, chan_doan TEXT);",
    )
    .unwrap();
    for (i, c) in people.iter().enumerate() {
        conn.execute(
            "INSERT INTO cong_dan VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'Hua La')",
            rusqlite::params![c.cccd, c.name, c.phone, c.born, c.address, c.income],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO kham_benh VALUES (?1, ?2, '2026-11-02', ?3)",
            rusqlite::params![i as i64 + 1, c.cccd, c.diagnosis],
        )
        .unwrap();
    }
}

/// The declarations of `cong_dan` (agent A, civil registry).
const CONG_DAN: &str = r#"
[[dataset]]
name = "cong_dan"
table = "cong_dan"
key = ["so_cccd"]
mode = "snapshot"
poll_interval = "300ms"
[dataset.columns.so_cccd]
class = "personal"
action = "pseudonymise"
[dataset.columns.ho_ten]
class = "personal"
action = "drop"
[dataset.columns.so_dien_thoai]
class = "personal"
action = "mask"
keep_last = 3
[dataset.columns.ngay_sinh]
class = "personal"
action = "generalise"
to = "year"
[dataset.columns.dia_chi]
class = "personal"
action = "generalise"
to = "address"
parts = 2
[dataset.columns.thu_nhap]
class = "personal"
action = "generalise"
to = "range"
bounds = [0, 5000000, 10000000, 20000000]
[dataset.columns.xa]
class = "public"
"#;

/// `lien_he` (agent A): names kept raw — the open-data API must refuse it.
const LIEN_HE: &str = r#"
[[dataset]]
name = "lien_he"
query = "SELECT so_cccd, ho_ten FROM cong_dan"
key = ["so_cccd"]
mode = "snapshot"
poll_interval = "300ms"
[dataset.columns.so_cccd]
class = "personal"
action = "pseudonymise"
[dataset.columns.ho_ten]
class = "personal"
action = "keep"
"#;

/// `kham_benh` (agent B, health): the diagnosis is sensitive, pseudonymised.
const KHAM_BENH: &str = r#"
[[dataset]]
name = "kham_benh"
table = "kham_benh"
key = ["ma_luot"]
mode = "snapshot"
poll_interval = "300ms"
[dataset.columns.so_cccd]
class = "personal"
action = "pseudonymise"
[dataset.columns.chan_doan]
class = "sensitive"
action = "pseudonymise"
"#;

const CATALOG: &str = "[[department]]\ncode = \"so_y_te\"\nname = \"Sở Y tế\"\n\
    contact = { name = \"Văn phòng Sở\", email = \"vp@syt.example\" }\n\n\
    [[dataset]]\nid = \"cong_dan\"\ntitle = \"Công dân\"\ndepartment = \"so_y_te\"\ncadence = \"daily\"\n\
    update_kind = \"sync\"\nopen_data = true\nlicence = \"CC-BY-4.0\"\n\n\
    [[dataset]]\nid = \"lien_he\"\ntitle = \"Liên hệ\"\ndepartment = \"so_y_te\"\ncadence = \"daily\"\n\
    update_kind = \"sync\"\nopen_data = true\nlicence = \"CC-BY-4.0\"\n\n\
    [[dataset]]\nid = \"kham_benh\"\ntitle = \"Khám bệnh\"\ndepartment = \"so_y_te\"\ncadence = \"daily\"\n\
    update_kind = \"sync\"\nopen_data = true\nlicence = \"CC-BY-4.0\"\n";

fn write_key(path: &Path, text: &str) {
    std::fs::write(path, format!("{text}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn rows(db: &Path, sql: &str) -> Vec<Vec<Value>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = match conn.prepare(sql) {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(v) => Value::from(v),
                    rusqlite::types::ValueRef::Real(v) => Value::from(v),
                    rusqlite::types::ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                    rusqlite::types::ValueRef::Blob(_) => Value::from("<blob>"),
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn live_count(hub: &HubProc, table: &str) -> usize {
    rows(&hub.warehouse(), &format!("SELECT count(*) FROM {table} WHERE _kho_deleted = 0"))
        .first()
        .and_then(|r| r[0].as_u64())
        .unwrap_or(0) as usize
}

/// Every file of a SQLite database: the file, its WAL and shared memory.
fn database_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

/// Fails if any of `needles` occurs in the bytes of any of `files`.
fn assert_absent(files: &[PathBuf], needles: &[String]) {
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        for n in needles {
            let found = bytes.windows(n.len()).any(|w| w == n.as_bytes());
            assert!(!found, "raw protected value {n:?} found in {}", f.display());
        }
    }
}

fn contains(files: &[PathBuf], needle: &str) -> bool {
    files.iter().any(|f| std::fs::read(f).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()))
}

fn http(hub: &HubProc) -> (tokio::runtime::Runtime, reqwest::Client) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    (rt, hub.client())
}

fn get(rt: &tokio::runtime::Runtime, http: &reqwest::Client, url: String) -> (u16, String) {
    rt.block_on(async {
        let r = http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn protected_values_never_leave_the_agent_and_tokens_join_across_departments() {
    let tmp = tempfile::tempdir().unwrap();
    let people = citizens(40);
    let src = tmp.path().join("so_y_te.sqlite");
    source(&src, &people);

    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("catalog.toml"), CATALOG).unwrap();
    write_key(&hub_dir.join("pseudonym.keys"), KEY_V1);
    let a = AgentSpec { id: "dan-cu".into(), token: "tok-dan-cu".into(), datasets: vec!["cong_dan".into()] };
    let b =
        AgentSpec { id: "y-te".into(), token: "tok-y-te".into(), datasets: vec!["kham_benh".into(), "lien_he".into()] };
    let extra = format!(
        "\n[catalog]\npath = \"catalog.toml\"\n\n[privacy]\nkey_file = \"pseudonym.keys\"\n\n[freshness]\nevaluate_interval = \"200ms\"\n\n[dashboard]\npublic_view = true\n[[dashboard.operator]]\nname = \"ioc\"\npassword_hash = \"{}\"\n",
        hash_password("mk")
    );
    let hub = HubProc::start_with(&hub_dir, &[a.clone(), b.clone()], &extra);

    // Two departments, each with the province key in a file (not enrolled: the file option).
    let opts = AgentOptions::default();
    let dir_a = tmp.path().join("agent-a");
    std::fs::create_dir_all(&dir_a).unwrap();
    write_key(&dir_a.join("pseudonym.key"), KEY_V1);
    let privacy = "\n[privacy]\nkey_file = \"pseudonym.key\"\n";
    let src_toml = format!("[dataset.source]\nkind = \"sqlite\"\npath = \"{}\"\n", src.display());
    let with_source = |ds: &str| format!("{ds}{src_toml}");
    let toml_a = format!("{privacy}{}", with_source(CONG_DAN));
    let mut agent_a = AgentProc::start_with(&dir_a, &a, &hub.url(), &hub.ca_path(), &toml_a, &opts);
    let dir_b = tmp.path().join("agent-b");
    std::fs::create_dir_all(&dir_b).unwrap();
    write_key(&dir_b.join("pseudonym.key"), KEY_V1);
    let toml_b = format!("{privacy}{}{}", with_source(KHAM_BENH), with_source(LIEN_HE));
    let mut agent_b = AgentProc::start_with(&dir_b, &b, &hub.url(), &hub.ca_path(), &toml_b, &opts);

    let logs = || format!("{}\n{}\n{}", hub.log_tail(), agent_a.log_tail(), agent_b.log_tail());
    wait_for(TIMEOUT, "every citizen in the warehouse", logs, || {
        live_count(&hub, "cong_dan") == people.len()
            && live_count(&hub, "lien_he") == people.len()
            && live_count(&hub, "kham_benh") == people.len()
    });

    // Generalisation and masking are exact; dropped columns never reach the hub.
    let key = PseudonymKey::parse(KEY_V1).unwrap();
    let wh = hub.warehouse();
    let got = rows(&wh, "SELECT so_cccd, so_dien_thoai, ngay_sinh, dia_chi, thu_nhap, xa FROM cong_dan");
    assert_eq!(got.len(), people.len());
    for c in &people {
        let token = key.token(&c.cccd);
        let row = got.iter().find(|r| r[0] == token.as_str()).unwrap_or_else(|| panic!("{token} missing"));
        assert_eq!(row[1], Value::from(format!("*******{}", &c.phone[7..])), "{c:?}");
        assert_eq!(row[2].as_i64(), Some(c.born[..4].parse::<i64>().unwrap()), "{c:?}");
        assert_eq!(row[3], Value::from("Thành phố Sơn La, Sơn La"), "{c:?}");
        let bucket = match c.income {
            x if x < 5_000_000 => "[0,5000000)",
            x if x < 10_000_000 => "[5000000,10000000)",
            x if x < 20_000_000 => "[10000000,20000000)",
            _ => ">=20000000",
        };
        assert_eq!(row[4], Value::from(bucket), "{c:?}");
        assert_eq!(row[5], Value::from("Hua La"));
    }
    let columns: Vec<String> =
        rows(&wh, "SELECT name FROM pragma_table_info('cong_dan')").into_iter().map(|r| r[0].to_string()).collect();
    assert!(!columns.iter().any(|c| c.contains("ho_ten")), "dropped column created: {columns:?}");

    // The same ID from two departments is the same token: the datasets join.
    let joined = rows(
        &wh,
        "SELECT count(*) FROM cong_dan c JOIN kham_benh k ON k.so_cccd = c.so_cccd \
         WHERE c._kho_deleted = 0 AND k._kho_deleted = 0",
    );
    assert_eq!(joined[0][0].as_u64(), Some(people.len() as u64));
    let diag = rows(&wh, "SELECT chan_doan FROM kham_benh");
    assert!(diag.iter().all(|r| r[0].as_str().is_some_and(|t| t.starts_with("v1:"))), "{diag:?}");

    // No raw protected value anywhere: warehouse, both outboxes (database and WAL), all logs.
    let mut raw: Vec<String> = Vec::new();
    for c in &people {
        raw.extend([c.cccd.clone(), c.phone.clone(), c.born.clone(), c.address.clone(), c.diagnosis.clone()]);
        raw.push(format!("\"thu_nhap\":{}", c.income));
    }
    let wh_files = database_files(&wh);
    let outbox_files: Vec<PathBuf> = [&agent_a, &agent_b].iter().flat_map(|a| database_files(&a.outbox())).collect();
    assert_absent(&wh_files, &raw);
    assert_absent(&outbox_files, &raw);
    // Names: dropped by agent A (cong_dan); agent B's lien_he keeps them on purpose (and is
    // refused publication below), so only agent A's outbox is searched for them.
    assert_absent(&database_files(&agent_a.outbox()), &people.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
    assert!(contains(&database_files(&agent_b.outbox()), &people[0].name) || contains(&wh_files, &people[0].name));
    // The searches can find what is there: the tokens are in the warehouse and in the outbox (the
    // snapshot state keeps each row's key).
    assert!(contains(&wh_files, &key.token(&people[0].cccd)), "positive control failed (warehouse)");
    assert!(
        contains(&database_files(&agent_a.outbox()), &key.token(&people[0].cccd)),
        "positive control failed (outbox)"
    );
    let secrets = [KEY_V1[3..].to_string()];
    let log_files: Vec<PathBuf> =
        [hub_dir.join("hub.log"), dir_a.join("agent.log"), dir_b.join("agent.log")].into_iter().collect();
    assert_absent(&log_files, &secrets);
    assert_absent(&log_files, &people.iter().map(|c| c.cccd.clone()).collect::<Vec<_>>());

    // The hub recorded the classes; the open-data API refuses lien_he (names kept), lists only
    // the others, and audits reads of kham_benh (a sensitive column, pseudonymised).
    let (rt, client) = http(&hub);
    let base = hub.url();
    let (status, body) = get(&rt, &client, format!("{base}/api/3/action/package_show?id=lien_he"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ho_ten") && body.contains("personal data"), "{body}");
    let (status, body) = get(&rt, &client, format!("{base}/opendata/lien_he.csv"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(&rt, &client, format!("{base}/api/3/action/package_list"));
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = list["result"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(ids.contains(&"cong_dan") && ids.contains(&"kham_benh") && !ids.contains(&"lien_he"), "{ids:?}");
    let before = audit_rows(&hub).iter().filter(|r| r.0 == "sensitive_read").count();
    assert_eq!(before, 0);
    let (status, body) =
        get(&rt, &client, format!("{base}/api/3/action/datastore_search?resource_id=kham_benh-json&limit=5"));
    assert_eq!(status, 200, "{body}");
    let (status, _) =
        get(&rt, &client, format!("{base}/api/3/action/datastore_search?resource_id=cong_dan-json&limit=5"));
    assert_eq!(status, 200);
    let audited: Vec<_> = audit_rows(&hub).into_iter().filter(|r| r.0 == "sensitive_read").collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].2.contains("kham_benh") && audited[0].2.contains("datastore_search"), "{audited:?}");
    // The dashboard's dataset page shows the classes the dataset holds.
    let page = |id: &str| get(&rt, &client, format!("{base}/ui/datasets/{id}"));
    wait_for(TIMEOUT, "the dataset page", || hub.log_tail(), || page("kham_benh").0 == 200);
    let (_, html) = page("kham_benh");
    assert!(
        html.contains("data-classes=\"personal sensitive\"") && html.contains("chan_doan (pseudonymise)"),
        "{html}"
    );
    let (_, html) = page("cong_dan");
    assert!(html.contains("data-classes=\"personal public\"") && !html.contains("ho_ten ("), "{html}");
    // Public view: no rows shown, nothing audited. An operator's view shows recent changes: audited
    // for the sensitive dataset only.
    assert_eq!(audit_rows(&hub).iter().filter(|r| r.0 == "sensitive_read").count(), 1);
    let session = rt.block_on(dashboard_login(&hub, "ioc", "mk"));
    let as_operator = |id: &str| {
        let req = client.get(format!("{base}/ui/datasets/{id}")).header("cookie", &session);
        rt.block_on(async { req.send().await.unwrap().text().await.unwrap() })
    };
    let html = as_operator("kham_benh");
    assert!(html.contains("Thay đổi gần đây"), "the operator sees recent changes: {html}");
    assert!(as_operator("cong_dan").contains("Thay đổi gần đây"));
    let audited: Vec<_> = audit_rows(&hub).into_iter().filter(|r| r.0 == "sensitive_read").collect();
    assert!(audited.iter().all(|r| r.2.contains("kham_benh")), "{audited:?}");
    let by_operator: Vec<_> =
        audited.iter().filter(|r| r.2.contains("operator:ioc") && r.2.contains("dashboard")).collect();
    assert_eq!(by_operator.len(), 1, "{audited:?}");
    assert_eq!(audited.len(), 2, "{audited:?}");
    let meta = rows(&wh, "SELECT value FROM _kho_meta WHERE key = 'privacy.columns:kham_benh'");
    assert!(meta.first().is_some_and(|r| r[0].as_str().unwrap_or("").contains("sensitive")), "{meta:?}");

    // `check` flags undeclared personal data: the same table read without declarations.
    let dir_c = tmp.path().join("agent-c");
    std::fs::create_dir_all(&dir_c).unwrap();
    let undeclared = format!(
        "\n[[dataset]]\nname = \"cong_dan\"\ntable = \"cong_dan\"\nkey = [\"so_cccd\"]\nmode = \"snapshot\"\n\
         [dataset.columns.ho_ten]\nclass = \"public\"\n{src_toml}"
    );
    let agent_c = AgentProc::configure(&dir_c, &a, &hub.url(), &hub.ca_path(), &undeclared, &opts);
    let out = agent_c.command(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("column \"so_cccd\" looks like 12-digit citizen ID numbers") && text.contains("has no class"),
        "{text}"
    );
    assert!(text.contains("column \"so_dien_thoai\" looks like phone numbers"), "{text}");
    assert!(
        text.contains("column \"ho_ten\" looks like Vietnamese full names") && text.contains("is declared public"),
        "{text}"
    );
    // The declared config gets no such warning, and shows its plan.
    let out = agent_a.command(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("looks like"), "{text}");
    assert!(
        text.contains("personal data: so_cccd: personal → pseudonymise") && text.contains("pseudonymisation key: v1"),
        "{text}"
    );
    assert!(!text.contains(&KEY_V1[3..]), "check printed the secret");

    assert!(agent_a.stop() && agent_b.stop());
}

#[test]
fn the_key_comes_with_enrollment_and_rotates_into_a_new_version() {
    let tmp = tempfile::tempdir().unwrap();
    let people = citizens(12);
    let src = tmp.path().join("dan_cu.sqlite");
    source(&src, &people);
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    let keys = hub_dir.join("pseudonym.keys");
    write_key(&keys, KEY_V1);
    let hub = HubProc::start_with(&hub_dir, &[], "\n[privacy]\nkey_file = \"pseudonym.keys\"\n");
    let token = add_agent(&hub, "dan-cu", "cong_dan", "1h");

    let spec = AgentSpec { id: "dan-cu".into(), token: String::new(), datasets: vec!["cong_dan".into()] };
    let opts = AgentOptions { hub_extra: ENROLLED_HTTPS.into(), ..AgentOptions::default() };
    let src_toml = format!("[dataset.source]\nkind = \"sqlite\"\npath = \"{}\"\n", src.display());
    let mut agent = AgentProc::configure(
        &tmp.path().join("agent"),
        &spec,
        &hub.url(),
        &hub.ca_path(),
        &format!("{CONG_DAN}{src_toml}"),
        &opts,
    );
    let out = agent.command(&["enroll", "--token", &token]);
    assert!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&KEY_V1[3..]), "enroll printed the secret");
    // Stored beside the signing key, private.
    let stored = agent.dir.join("secrets/pseudonym.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&stored).unwrap().trim(), KEY_V1);

    agent.spawn();
    let tokens = |prefix: &str| -> usize {
        rows(&hub.warehouse(), "SELECT so_cccd FROM cong_dan WHERE _kho_deleted = 0")
            .iter()
            .filter(|r| r[0].as_str().is_some_and(|t| t.starts_with(prefix)))
            .count()
    };
    wait_for(
        TIMEOUT,
        "v1 tokens",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || tokens("v1:") == people.len(),
    );

    // Rotation: the hub gets a new version; the running agent fetches it and re-keys its rows.
    std::fs::write(&keys, format!("{KEY_V1}\n{KEY_V2}\n")).unwrap();
    let out = agent.command(&["fetch-key"]);
    assert!(out.status.success(), "fetch-key: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("v2"), "{out:?}");
    wait_for(
        TIMEOUT,
        "v2 tokens",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || tokens("v2:") == people.len() && tokens("v1:") == 0,
    );
    let (k1, k2) = (PseudonymKey::parse(KEY_V1).unwrap(), PseudonymKey::parse(KEY_V2).unwrap());
    let live: Vec<String> = rows(&hub.warehouse(), "SELECT so_cccd FROM cong_dan WHERE _kho_deleted = 0")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    for c in &people {
        assert!(live.contains(&k2.token(&c.cccd)));
        assert_ne!(k1.token(&c.cccd)[3..], k2.token(&c.cccd)[3..]);
    }
    let logs = [hub_dir.join("hub.log"), agent.dir.join("agent.log")];
    assert_absent(&logs, &[KEY_V1[3..].to_string(), KEY_V2[3..].to_string()]);
    assert!(agent.stop());
}

/// PostgreSQL warehouse: tokens land as text, the declarations are recorded in the warehouse and
/// still refuse publication after a hub restart with no agent sending (loaded at start).
#[test]
fn postgres_warehouse_keeps_the_declarations_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let people = citizens(10);
    let src = tmp.path().join("dan_cu.sqlite");
    source(&src, &people);
    let pg = PgWarehouse::create();
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::write(hub_dir.join("catalog.toml"), CATALOG).unwrap();
    let spec =
        AgentSpec { id: "y-te".into(), token: "tok-y-te".into(), datasets: vec!["cong_dan".into(), "lien_he".into()] };
    let extra = "\n[catalog]\npath = \"catalog.toml\"\n";
    let mut hub =
        HubProc::start_with_warehouse(&hub_dir, std::slice::from_ref(&spec), &format!("{}{extra}", pg.hub_toml(1)));
    let dir = tmp.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    write_key(&dir.join("pseudonym.key"), KEY_V1);
    let src_toml = format!("[dataset.source]\nkind = \"sqlite\"\npath = \"{}\"\n", src.display());
    let toml = format!("\n[privacy]\nkey_file = \"pseudonym.key\"\n{CONG_DAN}{src_toml}{LIEN_HE}{src_toml}");
    let mut agent = AgentProc::start_with(&dir, &spec, &hub.url(), &hub.ca_path(), &toml, &AgentOptions::default());
    let mut pg = pg;
    wait_for(
        TIMEOUT,
        "both datasets in PostgreSQL",
        || format!("{}\n{}", hub.log_tail(), agent.log_tail()),
        || {
            pg.ledger("y-te") > 0
                && pg.count("SELECT count(*) FROM pg_tables WHERE tablename IN ('cong_dan', 'lien_he')") == 2
                && pg.count("SELECT count(*) FROM so_y_te.cong_dan WHERE so_cccd LIKE 'v1:%'") == people.len() as i64
                && pg.count("SELECT count(*) FROM so_y_te.lien_he") == people.len() as i64
        },
    );
    let key = PseudonymKey::parse(KEY_V1).unwrap();
    let sql = format!("SELECT count(*) FROM so_y_te.cong_dan WHERE so_cccd = '{}'", key.token(&people[3].cccd));
    assert_eq!(pg.count(&sql), 1);
    assert!(agent.stop());
    assert!(hub.stop());
    hub.spawn();
    let (rt, client) = http(&hub);
    let (status, body) = get(&rt, &client, format!("{}/api/3/action/package_show?id=lien_he", hub.url()));
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(&rt, &client, format!("{}/api/3/action/package_show?id=cong_dan", hub.url()));
    assert_eq!(status, 200, "{body}");
}

/// CDC (PostgreSQL logical replication): the initial snapshot and the streamed inserts, updates
/// and deletes all go through the plan; deletes of a pseudonymised key carry its token.
#[test]
fn cdc_streams_only_transformed_values() {
    let tmp = tempfile::tempdir().unwrap();
    let people = citizens(8);
    let pg = kho_tests::cdc_db::CdcDb::create();
    let mut c = pg.client();
    c.batch_execute("CREATE TABLE cong_dan (so_cccd text PRIMARY KEY, ho_ten text, so_dien_thoai text)").unwrap();
    let insert = |c: &mut postgres::Client, p: &Citizen| {
        c.execute("INSERT INTO cong_dan VALUES ($1, $2, $3)", &[&p.cccd, &p.name, &p.phone]).unwrap();
    };
    for p in &people[..5] {
        insert(&mut c, p);
    }
    let spec = AgentSpec { id: "dan-cu-cdc".into(), token: "tok-cdc".into(), datasets: vec!["cong_dan".into()] };
    let hub = HubProc::start(&tmp.path().join("hub"), std::slice::from_ref(&spec));
    let dir = tmp.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    write_key(&dir.join("pseudonym.key"), KEY_V1);
    let toml = format!(
        "\n[privacy]\nkey_file = \"pseudonym.key\"\n\n[[dataset]]\nname = \"cong_dan\"\ntable = \"cong_dan\"\n\
         key = [\"so_cccd\"]\nmode = \"cdc\"\npoll_interval = \"1s\"\n[dataset.source]\nkind = \"postgres\"\nurl = \"{}\"\n\
         [dataset.columns.so_cccd]\nclass = \"personal\"\naction = \"pseudonymise\"\n\
         [dataset.columns.ho_ten]\nclass = \"personal\"\naction = \"drop\"\n\
         [dataset.columns.so_dien_thoai]\nclass = \"personal\"\naction = \"mask\"\nkeep_last = 3\n",
        pg.url
    );
    let mut agent = AgentProc::start_with(&dir, &spec, &hub.url(), &hub.ca_path(), &toml, &AgentOptions::default());
    let logs = || format!("{}\n{}", hub.log_tail(), agent.log_tail());
    wait_for(TIMEOUT, "the initial snapshot", logs, || live_count(&hub, "cong_dan") == 5);
    // Streamed: three inserts, an update of a phone, a delete.
    for p in &people[5..] {
        insert(&mut c, p);
    }
    c.execute("UPDATE cong_dan SET so_dien_thoai = '0987654321' WHERE so_cccd = $1", &[&people[0].cccd]).unwrap();
    c.execute("DELETE FROM cong_dan WHERE so_cccd = $1", &[&people[1].cccd]).unwrap();
    let key = PseudonymKey::parse(KEY_V1).unwrap();
    let phone_of = |cccd: &str| -> Option<Value> {
        let sql =
            format!("SELECT so_dien_thoai FROM cong_dan WHERE _kho_deleted = 0 AND so_cccd = '{}'", key.token(cccd));
        rows(&hub.warehouse(), &sql).first().map(|r| r[0].clone())
    };
    wait_for(TIMEOUT, "the streamed changes", logs, || {
        live_count(&hub, "cong_dan") == 7 && phone_of(&people[0].cccd) == Some(Value::from("*******321"))
    });
    assert_eq!(phone_of(&people[1].cccd), None, "the delete addressed the token");
    assert_eq!(phone_of(&people[7].cccd), Some(Value::from(format!("*******{}", &people[7].phone[7..]))));
    let mut raw: Vec<String> = people.iter().flat_map(|p| [p.cccd.clone(), p.name.clone(), p.phone.clone()]).collect();
    raw.push("0987654321".into());
    assert_absent(&database_files(&hub.warehouse()), &raw);
    assert_absent(&database_files(&agent.outbox()), &raw);
    assert!(agent.stop());
}
